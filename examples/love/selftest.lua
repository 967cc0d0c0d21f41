-- selftest.lua: the example's test mode (`love examples/love --test`, or KH_LOVE_TEST=1), run
-- headless by ctest love/example under xvfb-run. A coroutine resumed once per frame, after that
-- frame's manager:poll(0): a cell moves the ship through move() and the ship has moved; a cell
-- spins (`while True: pass`) for a second and is interrupted, and one runs a long numeric loop,
-- while the frames go on and are measured (the figures are printed, never asserted); the keys'
-- other cells (orbit, scatter) run too. Exits 0 when every check holds, 1 otherwise; a watchdog
-- thread ends the process with 1 if the run never finishes.
local T = {}

local failures = {}
local watchdog -- { thread, channel }

local function now() return love.timer.getTime() end

-- Ends the run: prints the verdict, stops the watchdog, quits LÖVE with 0 or 1.
local function finish()
  local status = #failures == 0 and 0 or 1
  for _, f in ipairs(failures) do io.stderr:write("FAIL: ", f, "\n") end
  print(("kernelhost love test: %s"):format(status == 0 and "ok" or "FAILED"))
  io.stdout:flush()
  if watchdog then
    watchdog.channel:push("done")
    watchdog.thread:wait()
  end
  love.event.quit(status)
end

local function check(ok, what, ...)
  if not ok then failures[#failures + 1] = what:format(...) end
  return ok
end

-- The watchdog: a thread that waits `secs` for the word "done" and otherwise ends the whole
-- process at once (_exit: not a clean quit, which a stuck main thread could not do). An error
-- exits 1 too (conf.lua's love.errorhandler), instead of LÖVE's error screen.
function T.arm(secs)
  local code = [[
    require("love.thread")
    local channel, secs = ...
    if channel:demand(secs) == nil then
      io.stderr:write(("kernelhost love test: watchdog: no verdict after %d s\n"):format(secs))
      io.stderr:flush()
      local ffi = require("ffi")
      ffi.cdef("void _exit(int status);")
      ffi.C._exit(1)
    end
  ]]
  watchdog = { thread = love.thread.newThread(code), channel = love.thread.newChannel() }
  watchdog.thread:start(watchdog.channel, secs)
end

-- Frames go by until cond() holds, or fails the run after `secs` (seconds of frames).
local function wait_until(cond, what, secs)
  local deadline = now() + (secs or 30)
  while not cond() do
    if now() > deadline then error("timed out waiting for " .. what, 0) end
    coroutine.yield()
  end
end

-- Runs cell `name` and waits for its reply; returns the reply (or nil, msg, code).
local function run(game, name, code)
  local done, r, msg, ecode
  local cell = assert(game.run(name, function(...) done, r, msg, ecode = true, ... end, code))
  wait_until(function() return done end, "the reply of cell " .. name, 60)
  return r, msg, ecode, cell
end

local function ms(s) return s * 1000 end

-- One line of figures for a window of frames: the frame interval (what the player sees: 16.7 ms
-- at 60 fps) as p50 and worst, the worst frame's own work (events, update, draw, present) and the
-- worst manager:poll(0), kernelhost's share of a frame.
local function report(game, label, w)
  print(("%-32s %4d frames; frame interval p50 %5.1f ms, worst %5.1f ms; worst work %5.1f ms; " ..
         "worst poll(0) %.3f ms"):format(label, w.frames, ms(game.percentile(w, 0.5)),
         ms(w.interval), ms(w.work), ms(w.poll)))
end

local function scenario(game)
  local out = {}
  game.manager:on_kernel_event(game.kernel.id, "stream", function(d) out[#out + 1] = d.text end)

  -- Idle: frames with nothing running in Python, the baseline.
  wait_until(function() return game.cell == nil end, "the prelude cell")
  local idle = game.measure()
  local t = now()
  wait_until(function() return now() - t >= 1 end, "a second of idle frames")
  report(game, "idle (no cell running)", idle)

  -- A cell moves the ship through move(), one step per frame, and the ship has moved.
  local ship = game.entity(1)
  local x0, y0, calls0, frames0 = ship.x, ship.y, game.calls.move, game.frames
  local r, msg = run(game, "move")
  if check(r ~= nil, "the move cell failed: %s", tostring(msg)) then
    check(r.status == "ok", "the move cell raised: %s", r.error and r.error.evalue or "?")
    check(r.result and r.result.data["text/plain"] == "(40, -20)",
          "the cell saw the ship move by %s", r.result and r.result.data["text/plain"] or "nil")
  end
  check(ship.x == x0 + 40 and ship.y == y0 - 20, "the ship is at (%s, %s), not (%s, %s)",
        ship.x, ship.y, x0 + 40, y0 - 20)
  check(game.calls.move - calls0 == 11, "%d move() calls, not 11", game.calls.move - calls0)
  -- Each move is answered on a later frame than the one it was asked in.
  check(game.frames - frames0 >= 10, "10 moves answered within %d frames",
        game.frames - frames0)
  local text = table.concat(out)
  check(text:find("ship moved from (160, 250) to (200, 230)", 1, true) ~= nil,
        "the cell printed %q", text)
  check(text:find("refused: no entity 99", 1, true) ~= nil, "no refusal printed: %q", text)
  print(("move: the ship moved from (%g, %g) to (%g, %g) in %d frames"):format(
    x0, y0, ship.x, ship.y, game.frames - frames0))

  -- A cell spins for a second while the frames go on; then it is interrupted.
  local spin = game.measure()
  local done
  local cell = assert(game.run("spin", function(reply) done = { reply } end))
  wait_until(function() return cell.running end, "the spin cell to start")
  local rock = game.entity(2)
  local rx, frames1 = rock.x, game.frames
  t = now()
  wait_until(function() return now() - t >= 1 end, "a second of spinning")
  check(done == nil, "the spin cell ended by itself")
  check(game.frames - frames1 >= 2 and rock.x ~= rx,
        "the scene did not move while the cell spun (%d frames)", game.frames - frames1)
  -- The figures are those of that second: the screenshot's frame (a PNG encoded in the frame)
  -- and the interrupt come after it.
  game.window = nil
  report(game, "while a cell spins (1 s)", spin)
  local shot = os.getenv("KH_LOVE_SCREENSHOT")
  local shot_done
  if shot and shot ~= "" then
    love.graphics.captureScreenshot(function(image)
      local f = io.open(shot, "wb")
      shot_done = f ~= nil and f:write(image:encode("png"):getString()) ~= nil
      if f then f:close() end
    end)
    wait_until(function() return shot_done ~= nil end, "the screenshot")
    check(shot_done, "cannot write the screenshot to %s", shot)
  end
  assert(game.kernel:interrupt())
  wait_until(function() return done ~= nil end, "the interrupted spin cell's reply")
  r = done[1]
  check(r ~= nil and r.status == "error" and r.error.ename == "KeyboardInterrupt",
        "the spin cell did not end with KeyboardInterrupt")

  -- A long numeric loop in pure Python, then a host call from it.
  local numeric = game.measure()
  local moon = game.entity(3)
  r, msg = run(game, "numeric")
  check(r ~= nil and r.status == "ok", "the numeric cell failed: %s",
        tostring(r and r.error and r.error.evalue or msg))
  check(moon.vx == 0 and moon.vy == -60, "steer() did not set the moon's velocity")
  report(game, "while a cell runs a numeric loop", numeric)
  for l in table.concat(out):gmatch("numeric loop[^\n]*") do print(l) end

  -- The other cells of the keys: orbit (120 steps round a circle: the ship ends where it began)
  -- and scatter (steer() on every other entity).
  local sx, sy = ship.x, ship.y
  r, msg = run(game, "orbit")
  check(r ~= nil and r.status == "ok", "the orbit cell failed: %s", tostring(msg))
  check(math.abs(ship.x - sx) < 1e-6 and math.abs(ship.y - sy) < 1e-6,
        "the orbit left the ship at (%s, %s), not (%s, %s)", ship.x, ship.y, sx, sy)
  r, msg = run(game, "scatter")
  check(r ~= nil and r.status == "ok" and
        r.result.data["text/plain"] == "['rock', 'moon', 'comet']",
        "the scatter cell failed: %s",
        tostring(r and r.result and r.result.data["text/plain"] or msg))

end

-- Returns the per-frame hook main.lua calls after each poll(0).
function T.start(game)
  local co = coroutine.create(function()
    local ok, err = pcall(scenario, game)
    if not ok then failures[#failures + 1] = tostring(err) end
    finish()
  end)
  return function()
    if coroutine.status(co) == "dead" then return end
    local ok, err = coroutine.resume(co)
    if not ok then
      failures[#failures + 1] = tostring(err)
      finish()
    end
  end
end

return T

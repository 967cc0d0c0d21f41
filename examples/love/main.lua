-- main.lua: a LÖVE 11 game (LuaJIT) whose scene a Python cell drives through host functions.
-- The game exposes to a worker kernel entities(), move(id, dx, dy) (async: queued, applied and
-- answered on the next frame) and steer(id, vx, vy); every frame calls manager:poll(0) once, so a
-- cell computing (or spinning) in its own process never holds a frame up. Keys run cells; the
-- HUD shows the frame times. `love examples/love --test` (or KH_LOVE_TEST=1) runs selftest.lua
-- instead: it checks that a cell moved an entity, measures the frames while cells spin, and
-- quits with status 0 or 1.
local W, H = 800, 500
local FRAME = 1 / 60 -- the frame rate main's love.run keeps where vsync does not pace frames

local game = {
  scene = {
    { id = 1, name = "ship", x = 160, y = 250, vx = 0, vy = 0, r = 14, color = { .35, .8, 1 } },
    { id = 2, name = "rock", x = 420, y = 140, vx = 60, vy = 35, r = 22, color = { .7, .6, .5 } },
    { id = 3, name = "moon", x = 600, y = 330, vx = -45, vy = 50, r = 10, color = { .9, .9, .7 } },
    { id = 4, name = "comet", x = 300, y = 420, vx = 90, vy = -20, r = 6, color = { 1, .5, .3 } },
  },
  moves = {},      -- move() calls asked since the last frame, answered on the next one
  calls = { entities = 0, move = 0, steer = 0 },
  log = {},        -- the last lines of output, drawn at the bottom
  cell = nil,      -- the running cell: { name, started, exec_id }
  frames = 0,
  graph = {},      -- the last 240 frame intervals (ms), drawn as a graph
  window = nil,    -- frame figures since game.measure() was called
}

-- --- the module and its worker -------------------------------------------------------------

-- kernelhost.so for LuaJIT: from package.cpath (LUA_CPATH, or a luarocks tree after
-- `luarocks --lua-version=5.1 make`, which installs kernelhost-worker beside the module), else
-- this repository's build tree (cmake-build/luajit/, or $KH_BUILD/luajit/).
local function load_kernelhost()
  local path = package.searchpath("kernelhost", package.cpath)
  local root = love.filesystem.getSource():match("^(.*)/examples/love/?$")
  local build = os.getenv("KH_BUILD") or (root and root .. "/cmake-build")
  if not path and build then
    path = package.searchpath("kernelhost", build .. "/luajit/?.so")
  end
  if not path then
    error("kernelhost.so (LuaJIT) not found: build it (make build) or install it with " ..
          "`luarocks --lua-version=5.1 make` and put it on LUA_CPATH", 0)
  end
  local open = assert(package.loadlib(path, "luaopen_kernelhost"))
  local kernelhost = open()
  package.loaded.kernelhost = kernelhost
  -- The module finds its worker through KH_WORKER_PATH or beside itself (where the rock puts
  -- it); the build tree keeps it one level up, so the example says where.
  local function exists(p)
    local f = io.open(p)
    if f then f:close() end
    return f ~= nil
  end
  local opts = {}
  local beside = path:gsub("[^/]*$", "") .. "kernelhost-worker"
  local up = path:gsub("[^/]*/[^/]*$", "") .. "kernelhost-worker"
  if not os.getenv("KH_WORKER_PATH") and not exists(beside) and exists(up) then
    opts.worker_path = up
  end
  return kernelhost, opts, path
end

local function say(line)
  for l in tostring(line):gmatch("[^\n]+") do
    game.log[#game.log + 1] = l
    if #game.log > 7 then table.remove(game.log, 1) end
  end
end
game.say = say

-- --- host functions ------------------------------------------------------------------------

local function entity(id)
  for _, e in ipairs(game.scene) do if e.id == id then return e end end
end
game.entity = entity

-- What Python sees of an entity: a fresh table of plain values.
local function view(e)
  return { id = e.id, name = e.name, x = e.x, y = e.y, vx = e.vx, vy = e.vy }
end

local function number(v) return type(v) == "number" and v == v and v ~= 1 / 0 and v ~= -1 / 0 end

local function expose(kernel)
  assert(kernel:expose("entities", function()
    game.calls.entities = game.calls.entities + 1
    local out = {}
    for i, e in ipairs(game.scene) do out[i] = view(e) end
    return out
  end))
  -- Async: the cell waits until the game applied the move on its next frame.
  assert(kernel:expose("move", function(call, id, dx, dy)
    game.calls.move = game.calls.move + 1
    if not entity(id) then
      call:error(("no entity %s"):format(tostring(id)))
    elseif not (number(dx) and number(dy)) then
      call:error("move(id, dx, dy) takes numbers")
    else
      game.moves[#game.moves + 1] = { call = call, id = id, dx = dx, dy = dy }
    end
  end, { async = true }))
  assert(kernel:expose("steer", function(id, vx, vy)
    game.calls.steer = game.calls.steer + 1
    local e = entity(id)
    if not e then error(("no entity %s"):format(tostring(id)), 0) end
    if not (number(vx) and number(vy)) then error("steer(id, vx, vy) takes numbers", 0) end
    e.vx, e.vy = vx, vy
    return view(e)
  end))
end

-- --- cells ---------------------------------------------------------------------------------

local CELLS = {
  { key = "1", name = "move", code = [[
ship = next(e for e in h.entities() if e["name"] == "ship")
start = (ship["x"], ship["y"])
for _ in range(10):
    ship = h.move(ship["id"], 4, -2)        # answered on the game's next frame
print("ship moved from", start, "to", (ship["x"], ship["y"]))
try:
    h.move(99, 1, 1)
except kernelhost.HostError as e:
    print("refused:", e)
(ship["x"] - start[0], ship["y"] - start[1])]] },
  { key = "2", name = "orbit", code = [[
import math
for i in range(120):                        # one step a frame: two seconds at 60 fps
    a = i * math.pi / 60
    h.move(1, 4 * math.cos(a), 4 * math.sin(a))
"orbit done"]] },
  { key = "3", name = "numeric", code = [[
import time
t = time.perf_counter()
s = 0
for i in range(10_000_000):                 # pure Python: a second or so of one core
    s = (s + i * i) % 1_000_003
h.steer(3, 0, -60)
print(f"numeric loop: {time.perf_counter() - t:.2f} s, s = {s}; the moon now heads up")
s]] },
  { key = "4", name = "spin", code = "while True:  # press i to interrupt\n    pass" },
  { key = "5", name = "scatter", code = [==[
import random
[h.steer(e["id"], random.uniform(-120, 120), random.uniform(-120, 120))["name"]
 for e in h.entities() if e["name"] != "ship"]]==] },
}
game.cells = {}
for _, c in ipairs(CELLS) do game.cells[c.name] = c end

-- Submits cell `name` (or code given); fn(reply, msg, code) gets the reply as submit gives it.
function game.run(name, fn, code)
  local src = code or game.cells[name].code
  local cell = { name = name, started = love.timer.getTime() }
  local id, msg, ecode = game.kernel:submit(src, function(r, m, c)
    if game.cell == cell then game.cell = nil end
    local took = love.timer.getTime() - cell.started
    if not r then
      say(("[%s] failed: %s"):format(name, m))
    elseif r.status == "ok" then
      local out = r.result and r.result.data["text/plain"]
      say(("[%s] %.2f s%s"):format(name, took, out and (" -> " .. out) or ""))
    else
      say(("[%s] %s: %s"):format(name, r.error.ename, r.error.evalue))
    end
    if fn then fn(r, m, c) end
  end)
  if not id then
    say(("[%s] not submitted: %s (%s)"):format(name, msg, ecode))
    return nil, msg, ecode
  end
  cell.exec_id = id
  game.cell = cell
  return cell
end

-- --- frame figures -------------------------------------------------------------------------

-- Starts a window of frame figures: frames, worst interval, worst work, worst poll(0).
function game.measure()
  game.window = { frames = 0, interval = 0, work = 0, poll = 0, intervals = {} }
  return game.window
end

-- The p-th fraction (nearest rank) of window w's frame intervals, in seconds.
function game.percentile(w, p)
  local s = {}
  for i, v in ipairs(w.intervals) do s[i] = v end
  table.sort(s)
  return s[math.max(1, math.ceil(#s * p))] or 0
end

local function record(work, interval, poll)
  game.frames = game.frames + 1
  game.graph[#game.graph + 1] = interval * 1000
  if #game.graph > 240 then table.remove(game.graph, 1) end
  local w = game.window
  if w then
    w.frames = w.frames + 1
    w.intervals[w.frames] = interval
    if interval > w.interval then w.interval = interval end
    if work > w.work then w.work = work end
    if poll > w.poll then w.poll = poll end
  end
end

-- --- LÖVE callbacks ------------------------------------------------------------------------

function love.load(args)
  love.graphics.setBackgroundColor(0.06, 0.07, 0.1)
  game.font = love.graphics.newFont(13)
  love.graphics.setFont(game.font)
  local test = os.getenv("KH_LOVE_TEST") == "1"
  for _, a in ipairs(args or {}) do if a == "--test" then test = true end end
  local selftest
  if test then
    -- The watchdog first: nothing below (a blocking create_kernel included) can hang the run.
    selftest = require("selftest")
    selftest.arm(tonumber(os.getenv("KH_LOVE_WATCHDOG") or "") or 90)
  end
  local kernelhost, opts, path = load_kernelhost()
  game.kernelhost = kernelhost
  game.manager = assert(kernelhost.KernelManager.new(opts))
  local t0 = love.timer.getTime()
  local id = assert(game.manager:create_kernel{ mode = "worker" })
  game.kernel = game.manager:get_kernel(id)
  say(("kernelhost %s (%s), %s; worker kernel %s ready in %.0f ms"):format(
    tostring(kernelhost.version), jit and jit.version or _VERSION,
    path:match("[^/]*/[^/]*$"), id:sub(1, 8), (love.timer.getTime() - t0) * 1000))
  game.manager:on_kernel_event(id, "stream", function(d) say(d.text) end)
  game.manager:on_kernel_event(id, "status", function(d)
    if game.cell and d.execution_id == game.cell.exec_id and d.execution_state == "busy" then
      game.cell.running = true
    end
  end)
  game.manager:on_kernel_event(id, "error", function(msg)
    io.stderr:write(tostring(msg), "\n")
    say(msg)
  end)
  expose(game.kernel)
  game.run("prelude", nil, "import kernelhost\nh = kernelhost.host")
  if selftest then game.test = selftest.start(game) end
end

function love.update(dt)
  -- The moves Python asked for during the last frame: apply them, then answer.
  local asked = game.moves
  game.moves = {}
  for _, m in ipairs(asked) do
    local e = entity(m.id)
    e.x, e.y = e.x + m.dx, e.y + m.dy
    m.call:return_(view(e))
  end
  for _, e in ipairs(game.scene) do
    e.x, e.y = e.x + e.vx * dt, e.y + e.vy * dt
    if (e.x < e.r and e.vx < 0) or (e.x > W - e.r and e.vx > 0) then e.vx = -e.vx end
    if (e.y < e.r and e.vy < 0) or (e.y > H - 90 - e.r and e.vy > 0) then e.vy = -e.vy end
  end
  -- Once a frame: events, results and host calls that arrived meanwhile. Never blocks.
  local t = love.timer.getTime()
  game.manager:poll(0)
  game.poll_time = love.timer.getTime() - t
  if game.test then game.test(dt) end
end

function love.keypressed(key)
  if key == "escape" then return love.event.quit(0) end
  if key == "i" and game.cell then return game.kernel:interrupt() end
  for _, c in ipairs(CELLS) do
    if key == c.key and not game.test then
      game.measure()
      game.run(c.name)
    end
  end
end

function love.quit()
  if game.manager then game.manager:close() end
  return false
end

local function draw_graph(x, y, w, h)
  love.graphics.setColor(1, 1, 1, 0.12)
  love.graphics.rectangle("fill", x, y, w, h)
  local scale = h / 40 -- 40 ms full height
  love.graphics.setColor(1, 0.85, 0.3, 0.8)
  local n = #game.graph
  for i = 1, n do
    local v = math.min(game.graph[i], 40)
    love.graphics.line(x + w - (n - i), y + h, x + w - (n - i), y + h - v * scale)
  end
  love.graphics.setColor(0.4, 1, 0.4, 0.8)
  love.graphics.line(x, y + h - FRAME * 1000 * scale, x + w, y + h - FRAME * 1000 * scale)
  love.graphics.print("16.7 ms", x + 2, y + h - FRAME * 1000 * scale - 15)
end

function love.draw()
  for _, e in ipairs(game.scene) do
    love.graphics.setColor(e.color)
    love.graphics.circle("fill", e.x, e.y, e.r)
    love.graphics.setColor(1, 1, 1, 0.7)
    love.graphics.print(e.name, e.x + e.r + 3, e.y - 7)
  end
  love.graphics.setColor(1, 1, 1, 0.15)
  love.graphics.line(0, H - 90, W, H - 90)
  love.graphics.setColor(1, 1, 1)
  local state = "python: idle"
  if game.cell then
    state = ("python: %s cell '%s', %.1f s"):format(game.cell.running and "running" or "queued",
      game.cell.name, love.timer.getTime() - game.cell.started)
  end
  love.graphics.print(state, 10, 8)
  love.graphics.setColor(1, 1, 1, 0.6)
  love.graphics.print("keys: 1 move  2 orbit  3 numeric  4 spin  5 scatter  i interrupt  esc quit",
    10, 26)
  local w = game.window
  local g = game.graph
  love.graphics.setColor(1, 1, 1)
  love.graphics.print(("frame %.1f ms   poll(0) %.3f ms"):format(g[#g] or 0,
    (game.poll_time or 0) * 1000), W - 250, 8)
  if w then
    love.graphics.print(("worst since the cell began: %.1f ms"):format(w.interval * 1000),
      W - 250, 26)
  end
  draw_graph(W - 250, 46, 240, 60)
  love.graphics.setColor(0.8, 0.9, 1)
  for i, l in ipairs(game.log) do love.graphics.print(l, 10, H - 88 + (i - 1) * 12.5) end
end

-- LÖVE 11's own love.run, with the frame figures taken and a 60 fps cap where vsync does not
-- pace frames (vsync off, or a display without vblank such as Xvfb): a game's frame rate.
function love.run()
  if love.load then love.load(love.arg.parseGameArguments(arg), arg) end
  love.timer.step()
  local next_frame = love.timer.getTime()
  return function()
    local t0 = love.timer.getTime()
    love.event.pump()
    for name, a, b, c, d, e, f in love.event.poll() do
      if name == "quit" then
        if not love.quit or not love.quit() then return a or 0 end
      end
      love.handlers[name](a, b, c, d, e, f)
    end
    local dt = love.timer.step()
    if love.update then love.update(dt) end
    if love.graphics and love.graphics.isActive() then
      love.graphics.origin()
      love.graphics.clear(love.graphics.getBackgroundColor())
      if love.draw then love.draw() end
      love.graphics.present()
    end
    record(love.timer.getTime() - t0, dt, game.poll_time or 0)
    next_frame = math.max(next_frame + FRAME, love.timer.getTime())
    love.timer.sleep(next_frame - love.timer.getTime())
  end
end

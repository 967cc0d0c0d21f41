-- game_loop.lua: a game-loop style host. Cells are submitted without blocking; each frame calls
-- manager:poll(0) once, which delivers whatever events and results have arrived. A real host
-- that sleeps between frames can instead wait on manager:fd() (readable when there is work)
-- for at most manager:timeout() ms. Run: lua5.4 examples/lua/game_loop.lua
local kernelhost = require("kernelhost")

local manager <close> = assert(kernelhost.KernelManager.new())
local id = assert(manager:create_kernel{ mode = kernelhost.KernelMode.MAIN_THREAD })
local kernel = manager:get_kernel(id)

local console = {}
manager:on_kernel_event(id, kernelhost.KernelEvents.STREAM, function(d)
  console[#console + 1] = d.text
end)
manager:on_kernel_event(id, "error", function(msg) io.stderr:write(msg, "\n") end)

local jobs = {
  "import time\nfor i in range(3):\n    print('tick', i, flush=True)\n    time.sleep(0.02)",
  "sum(i * i for i in range(10**6))",
  "raise RuntimeError('a script error never stops the game')",
  "'done'",
}
local pending = 0
for n, code in ipairs(jobs) do
  pending = pending + 1
  kernel:submit(code, { stop_on_error = false }, function(r, msg)
    pending = pending - 1
    if not r then
      print(("job %d failed: %s"):format(n, msg))
    elseif r.status == "ok" then
      print(("job %d -> %s"):format(n, r.result and r.result.data["text/plain"] or "(no value)"))
    else
      print(("job %d raised %s: %s"):format(n, r.error.ename, r.error.evalue))
    end
  end)
end

local frame = 0
local t0 = kernelhost.hrtime()
while pending > 0 do
  frame = frame + 1
  -- update(); render() would go here: the loop never waits on Python
  local n = manager:poll(0)
  if #console > 0 then
    io.write(("[frame %d] %s"):format(frame, table.concat(console)))
    console = {}
  end
  if n == 0 then
    -- idle frame: a real game sleeps until its next frame; here we wait on the fd for up to a
    -- 16 ms frame (any readiness wakes us early), which is what poll(16) does
    manager:poll(16)
  end
end
print(("%d frames in %.0f ms"):format(frame, (kernelhost.hrtime() - t0) / 1e6))

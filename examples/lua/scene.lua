-- scene.lua: a cell drives a tiny game scene through host functions. The game exposes
-- entities() (answered at once) and move(id, dx, dy) (async: queued, answered on the next frame,
-- after the game applied it). The cell is submitted without blocking; each frame polls once.
-- Run: lua5.4 examples/lua/scene.lua, or luajit examples/lua/scene.lua (with the LuaJIT module,
-- cmake-build/luajit/, on LUA_CPATH): written for both, so it closes the manager itself rather
-- than with Lua 5.4's <close>.
local kernelhost = require("kernelhost")

local manager = assert(kernelhost.KernelManager.new())
local id = assert(manager:create_kernel{ mode = kernelhost.KernelMode.MAIN_THREAD })
local kernel = manager:get_kernel(id)
manager:on_kernel_event(id, kernelhost.KernelEvents.STREAM, function(d) io.write(d.text) end)

local scene = { { id = 1, name = "ship", x = 0, y = 0 }, { id = 2, name = "rock", x = 5, y = 5 } }
local moves = {} -- calls waiting for the next frame

kernel:expose("entities", function() return scene end)
kernel:expose("move", function(call, eid, dx, dy)
  moves[#moves + 1] = { call = call, id = eid, dx = dx, dy = dy }
end, { async = true })

local done = false
kernel:submit([[
import kernelhost
for e in kernelhost.host.entities():
    print(f"{e['name']} at ({e['x']}, {e['y']})")
for _ in range(3):
    ship = kernelhost.host.move(1, 1.5, 0.5)
print("ship now at", (ship['x'], ship['y']))
try:
    kernelhost.host.move(99, 0, 0)
except kernelhost.HostError as e:
    print("refused:", e)
]], function(r, msg)
  done = true
  if not r then print("the cell failed: " .. msg) end
  if r and r.status == "error" then print(r.error.ename .. ": " .. r.error.evalue) end
end)

local frame = 0
while not done do
  frame = frame + 1
  -- the game's update: apply the moves asked during the last frame, then answer them
  local asked = moves
  moves = {}
  for _, m in ipairs(asked) do
    local e = scene[m.id]
    if e == nil then
      m.call:error(("no entity %d"):format(m.id))
    else
      e.x, e.y = e.x + m.dx, e.y + m.dy
      m.call:return_(e)
    end
  end
  manager:poll(16) -- one frame: events, results and host calls that arrived meanwhile
end
print(("%d frames; ship at (%g, %g)"):format(frame, scene[1].x, scene[1].y))
manager:close()

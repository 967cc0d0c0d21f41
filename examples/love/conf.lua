-- conf.lua: the LÖVE 11 window of the kernelhost example. No sound (the scene has none, and a
-- headless run under xvfb-run has no audio device either).
-- The test mode (`love examples/love --test`, or KH_LOVE_TEST=1, selftest.lua) must end with a
-- status, never wait on LÖVE's error screen for a key: set here, before main.lua is even read,
-- an error anywhere prints its traceback and exits 1.
local test = os.getenv("KH_LOVE_TEST") == "1"
for _, a in ipairs(arg or {}) do if a == "--test" then test = true end end
if test then
  io.stdout:setvbuf("line")
  love.errorhandler = function(msg)
    io.stderr:write("kernelhost love test: error: ", debug.traceback(tostring(msg), 2), "\n")
    io.stderr:flush()
    return function() return 1 end
  end
end

function love.conf(t)
  t.identity = "kernelhost-example"
  t.version = "11.4"
  t.window.title = "kernelhost: a Python cell drives the scene"
  t.window.width = 800
  t.window.height = 500
  t.window.vsync = 1 -- where the display paces frames; main.lua's love.run caps at 60 otherwise
  t.modules.audio = false
  t.modules.sound = false
  t.modules.joystick = false
  t.modules.physics = false
  t.modules.video = false
end

-- hello.lua: the plain script. Run: lua5.4 examples/lua/hello.lua (with the module installed by
-- luarocks, or LUA_CPATH=<build>/lua/?.so).
local kernelhost = require("kernelhost")

local manager <close> = assert(kernelhost.KernelManager.new())
local id = assert(manager:create_kernel{ mode = kernelhost.KernelMode.MAIN_THREAD })
manager:on_kernel_event(id, kernelhost.KernelEvents.STREAM, function(data) io.write(data.text) end)
manager:on_kernel_event(id, kernelhost.KernelEvents.DISPLAY_DATA, function(data)
  local png = data.data["image/png"]
  print(png and ("[figure: %d bytes of base64 PNG]"):format(#png) or data.data["text/plain"])
end)

local kernel = manager:get_kernel(id)
local r = kernel:execute("print('hi from Python'); 6 * 7")
print("result:", r.status, r.execution_count, r.result.data["text/plain"])

r = kernel:execute("import numpy as np\nnp.linspace(0, 1, 5).tolist()")
print("numpy:", r.result.data["text/plain"])

kernel:execute("import matplotlib.pyplot as plt\nplt.plot([1, 4, 9]); plt.show()")

r = kernel:execute("1 / 0")
print("error:", r.status, r.error.ename, r.error.evalue)

local ok, msg, code = kernel:execute("x = '\255'")
print("bad input:", ok, code, msg)

manager:destroy_kernel(id)

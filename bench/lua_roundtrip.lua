-- lua_roundtrip.lua: execute("1+1") round trip from Lua, p50/p99 over <runs> (default 10000).
-- Usage (bench/run.py calls it): lua5.4 bench/lua_roundtrip.lua [main_thread|worker|host] [runs]
-- ("host": a main_thread kernel whose cells run on this thread, kernel option thread = "host")
-- with LUA_CPATH pointing at <build>/lua/?.so; or luajit with <build>/luajit/?.so (the same
-- script: it is plain Lua 5.1). Prints one JSON line.
local kernelhost = require("kernelhost")

local mode = arg[1] or "main_thread"
local runs = tonumber(arg[2] or "10000")
local manager = assert(kernelhost.KernelManager.new())
local opts = mode == "host" and { mode = "main_thread", thread = "host" } or { mode = mode }
local id, msg, code = manager:create_kernel(opts)
if not id then
  io.stderr:write(("create_kernel: %s: %s\n"):format(code, msg))
  os.exit(1)
end
local kernel = manager:get_kernel(id)
for _ = 1, math.min(1000, runs) do assert(kernel:execute("1+1")) end -- warm up
local samples = {}
local now = kernelhost.hrtime
for i = 1, runs do
  local t0 = now()
  local r = kernel:execute("1+1")
  samples[i] = now() - t0
  if not r or r.status ~= "ok" then
    io.stderr:write("execute failed\n")
    os.exit(1)
  end
end
manager:close()
table.sort(samples)
local function pct(p) return samples[math.max(1, math.ceil(#samples * p))] / 1000 end
print(("{\"execute_p50_us\": %.1f, \"execute_p99_us\": %.1f, \"runs\": %d, \"mode\": \"%s\"}")
  :format(pct(0.50), pct(0.99), runs, mode))

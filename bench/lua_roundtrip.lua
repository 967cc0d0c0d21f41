-- lua_roundtrip.lua: execute("1+1") round trip from Lua, p50/p99 over <runs> (default 10000).
-- Usage (bench/run.py calls it): lua5.4 bench/lua_roundtrip.lua [main_thread|worker|host] [runs]
-- [hostcall] ("host": a main_thread kernel whose cells run on this thread, kernel option
-- thread = "host") with LUA_CPATH pointing at <build>/lua/?.so; or luajit with
-- <build>/luajit/?.so (the same script: it is plain Lua 5.1). Prints one JSON line.
-- With "hostcall" it also times, in the same run and kernel, a host call round trip: Python
-- calling kernelhost.host.noop(), a Lua function that returns nothing, timed in the cell around
-- each call (Python -> loop thread -> Lua -> Python), <runs> calls in one cell.
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
table.sort(samples)
local function pct(p) return samples[math.max(1, math.ceil(#samples * p))] / 1000 end
local extra = ""
if arg[3] == "hostcall" then
  assert(kernel:expose("noop", function() end))
  -- The same nearest-rank percentiles as above, computed where the samples are taken.
  local cell = table.concat({
    "import kernelhost, math, time",
    "_noop, _now, _s = kernelhost.host.noop, time.perf_counter_ns, []",
    "for _ in range(%d): _noop()",
    "for _ in range(%d):",
    "    _t = _now(); _noop(); _s.append(_now() - _t)",
    "_s.sort()",
    "'%%.1f %%.1f' %% tuple(_s[max(0, math.ceil(len(_s) * p) - 1)] / 1000 for p in (0.5, 0.99))",
  }, "\n"):format(math.min(1000, runs), runs)
  local r = kernel:execute(cell)
  if not r or r.status ~= "ok" then
    io.stderr:write("hostcall cell failed: " .. (r and r.error and r.error.evalue or "?") .. "\n")
    os.exit(1)
  end
  local p50, p99 = r.result.data["text/plain"]:match("'([%d.]+) ([%d.]+)'")
  extra = (", \"hostcall_p50_us\": %s, \"hostcall_p99_us\": %s"):format(p50, p99)
end
manager:close()
print(("{\"execute_p50_us\": %.1f, \"execute_p99_us\": %.1f%s, \"runs\": %d, \"mode\": \"%s\"}")
  :format(pct(0.50), pct(0.99), extra, runs, mode))

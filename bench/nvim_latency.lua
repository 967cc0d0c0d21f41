-- nvim_latency.lua: the Neovim plugin's end-to-end latency, from :KernelhostRun on a `1+1`
-- line to "Out[n]: 2" in the output buffer: the moment Neovim changes that buffer, taken in
-- nvim_buf_attach's on_lines, so the figure holds the command, the submit, the kernel, the
-- module's loop driven from vim.loop (poll on manager:fd(), a scheduled drain) and the render.
-- p50/p99 over KH_BENCH_RUNS runs (default 300) after 20 warm-up runs, in KH_BENCH_MODE
-- (worker, the plugin's default, or main_thread). Prints one JSON line. bench/run.py runs it:
--   KH_BENCH_MODE=worker LUA_CPATH='<build>/luajit/?.so;;' KH_WORKER_PATH=<build>/kernelhost-worker \
--     nvim --headless -u NORC -i NONE -n --cmd 'set rtp^=editors/nvim' -c 'luafile bench/nvim_latency.lua'
local api, uv = vim.api, vim.loop
local mode = os.getenv("KH_BENCH_MODE") or "worker"
local runs = tonumber(os.getenv("KH_BENCH_RUNS") or "") or 300

local function quit(code, line)
  io.stdout:write(line, "\n")
  io.stdout:flush()
  vim.cmd("cquit " .. code)
end

local ok, err = pcall(function()
  local kh = require("kernelhost").setup({ kernel = { mode = mode }, virtual_lines = 0 })
  vim.cmd("enew")
  local buf = api.nvim_get_current_buf()
  api.nvim_buf_set_lines(buf, 0, -1, false, { "1+1" })
  local s = assert(kh.start(buf), "no kernel")
  local t1
  api.nvim_buf_attach(s.out.buf, false, {
    on_lines = function(_, b, _, first, _, last)
      if t1 then return end
      for _, l in ipairs(api.nvim_buf_get_lines(b, first, last, false)) do
        if l:match("^Out%[%d+%]: 2$") then t1 = uv.hrtime() end
      end
    end,
  })
  local samples = {}
  for i = 1, runs + 20 do
    t1 = nil
    local t0 = uv.hrtime()
    vim.cmd("KernelhostRun")
    if not vim.wait(10000, function() return t1 ~= nil end, 50) then error("no result in 10 s") end
    if i > 20 then samples[#samples + 1] = (t1 - t0) / 1e3 end
    -- the output buffer would grow by two lines a run: keep it small
    vim.wait(10000, function() return s.pending == 0 end, 50)
    if i % 50 == 0 then s.out:set(0, -1, {}) end
  end
  kh.shutdown()
  table.sort(samples)
  local function pct(p) return samples[math.max(1, math.ceil(#samples * p))] end
  quit(0, ('{"execute_p50_us": %.1f, "execute_p99_us": %.1f, "runs": %d, "mode": "%s"}')
    :format(pct(0.5), pct(0.99), #samples, mode))
end)
if not ok then quit(1, "nvim_latency: " .. tostring(err)) end

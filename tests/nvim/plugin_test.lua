-- plugin_test.lua: the Neovim plugin (editors/nvim) tested headless, the way a user drives it:
-- commands on a Python buffer with `# %%` cells, output read back from the output split.
-- Run by ctest nvim/plugin (tests/nvim/CMakeLists.txt):
--   nvim --headless -u NORC -i NONE -n --cmd 'set rtp^=editors/nvim' -c 'luafile <this>'
-- with LUA_CPATH finding kernelhost.so (the LuaJIT build) and KH_WORKER_PATH the worker. Every
-- step waits for what it expects to appear (vim.wait returns as soon as it holds: it is the
-- event loop turning, not a sleep); a step that never happens fails with the output buffer's
-- text, and a watchdog ends the process if the editor itself stops turning.
local api = vim.api
local uv = vim.loop

local STEP_MS = tonumber(os.getenv("KH_NVIM_STEP_MS") or "") or 60000
local passed, step = 0, "start-up"

local function finish(code, msg)
  io.stdout:write(msg, "\n")
  io.stdout:flush()
  vim.cmd("cquit " .. code)
end

-- The watchdog runs in libuv's callback, not on the main loop: it fires even if that is stuck.
local watchdog = uv.new_timer()
watchdog:start(5 * STEP_MS, 0, function()
  io.stderr:write(("not ok: watchdog: the editor stopped in step '%s'\n"):format(step))
  os.exit(3)
end)

local kh, S -- the plugin; the first buffer's session

local function out_text(s) return (s or S).out:text() end

local function fail(msg)
  error({ failed = msg }, 0)
end

local function check(cond, msg)
  if not cond then fail(msg) end
end

local function wait_for(what, cond)
  local ok = vim.wait(STEP_MS, function()
    local good, r = pcall(cond)
    return good and r
  end, 200)
  if not ok then fail("never happened: " .. what) end
end

local function has(text, s) return out_text(s):find(text, 1, true) ~= nil end

-- A whole line of output (the echo of a cell's code never is: it starts with In [n]: or ...:).
local function has_line(text, s)
  for _, l in ipairs(api.nvim_buf_get_lines((s or S).out.buf, 0, -1, false)) do
    if l == text then return true end
  end
  return false
end

local function run_step(name, fn)
  step = name
  fn()
  passed = passed + 1
  io.stdout:write("ok ", passed, " - ", name, "\n")
end

local tmp

-- Messages the plugin gives (vim.notify): recorded, and an error among them fails the run.
local notes = {}
vim.notify = function(msg, level)
  notes[#notes + 1] = { msg = msg, level = level or vim.log.levels.INFO }
end

local function main()
vim.opt.shortmess:append("c") -- no "match 1 of 5" on stdout
kh = require("kernelhost")
tmp = vim.fn.tempname()
vim.fn.mkdir(tmp, "p")
kh.setup({ output = { image_dir = tmp .. "/images" } })

local source = {
  "# %%",                                              -- 1
  "print('hello from kernelhost')",                    -- 2
  "# %%",                                              -- 3
  "1/0",                                               -- 4
  "# %%",                                              -- 5
  "import time",                                       -- 6
  "print('sleeping', flush=True)",                     -- 7
  "time.sleep(300)",                                   -- 8
  "# %%",                                              -- 9
  "6 * 7",                                             -- 10
  "# %%",                                              -- 11
  "box = {'alpha': 1}",                                -- 12
  "import os",                                         -- 13
  "os.pa",                                             -- 14
  "# %% [markdown]",                                   -- 15
  "Some prose, never run.",                            -- 16
  "# %%",                                              -- 17
  "import zlib, struct",                               -- 18
  "def chunk(t, d): return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d))",
  "ihdr = struct.pack('>IIBBBBB', 3, 2, 8, 2, 0, 0, 0)",
  "rows = b'\\x00' + b'\\xff\\x00\\x00' * 3 + b'\\x00' + b'\\x00\\x00\\xff' * 3",
  "png = b'\\x89PNG\\r\\n\\x1a\\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(rows)) + chunk(b'IEND', b'')",
  "display({'image/png': png, 'text/plain': '<3x2 image>'}, raw=True)",
}

vim.cmd("edit " .. vim.fn.fnameescape(tmp .. "/cells.py"))
local buf = api.nvim_get_current_buf()
api.nvim_buf_set_lines(buf, 0, -1, false, source)

local function cursor(row, col) api.nvim_win_set_cursor(0, { row, col or 0 }) end

local function out_lines(s)
  return api.nvim_buf_get_lines((s or S).out.buf, 0, -1, false)
end

run_step("start_worker_kernel", function()
  vim.cmd("KernelhostStart")
  S = kh.session(buf)
  check(S ~= nil, "no session after :KernelhostStart")
  check(S.kernel.mode == "worker", "the default mode is worker, got " .. tostring(S.kernel.mode))
  check(vim.bo.omnifunc == "v:lua.require'kernelhost'.omnifunc", "omnifunc not set: " .. vim.bo.omnifunc)
  check(kh.status(buf) == "idle", "status " .. tostring(kh.status(buf)))
end)

run_step("run_cell_that_prints", function()
  cursor(2)
  vim.cmd("KernelhostRun")
  wait_for("the printed line", function() return has_line("hello from kernelhost") end)
  wait_for("the reply", function() return S.pending == 0 end)
  local l = out_lines()
  check(l[1]:match("^%[kernel %x+ started %(worker mode%)%]$"), "first line: " .. l[1])
  check(l[2] == "In [1]: print('hello from kernelhost')", "echo: " .. tostring(l[2]))
  check(l[3] == "hello from kernelhost", "output: " .. tostring(l[3]))
  check(#l == 3, "lines: " .. #l)
  -- the output split is open in this tab page
  check(#S.out:windows() == 1, "the output split is not shown")
end)

run_step("run_cell_that_raises", function()
  cursor(4)
  vim.cmd("KernelhostRun")
  wait_for("the error", function() return has("ZeroDivisionError: division by zero") end)
  wait_for("the reply", function() return S.pending == 0 end)
  check(has("In [2]: 1/0"), "the cell's echo")
  check(has("Traceback (most recent call last):"), "the traceback")
  -- its last lines under the cell, as virtual lines
  local marks = api.nvim_buf_get_extmarks(buf, require("kernelhost.output").ns, { 3, 0 }, { 3, -1 },
                                          { details = true })
  check(#marks == 1, "virtual lines under the cell: " .. #marks)
  local virt = marks[1][4].virt_lines
  check(virt and virt[#virt][1][1]:find("ZeroDivisionError", 1, true), "virtual lines: " ..
        vim.inspect(virt))
end)

run_step("interrupt_sleeping_cell", function()
  cursor(6)
  vim.cmd("KernelhostRun")
  wait_for("the cell to start", function() return has_line("sleeping") end)
  check(kh.status(buf) == "busy", "status while it sleeps: " .. tostring(kh.status(buf)))
  vim.cmd("KernelhostInterrupt")
  wait_for("KeyboardInterrupt", function() return has_line("KeyboardInterrupt") end)
  wait_for("the reply", function() return S.pending == 0 end)
  -- interrupted inside the cell (in time.sleep, or still returning from the print whose output
  -- said it started): the traceback goes through the cell's code
  check(has('File "<cell-3>", line '), "the traceback of the interrupted cell")
  check(kh.status(buf) == "idle", "status after: " .. tostring(kh.status(buf)))
end)

run_step("run_cell_result", function()
  cursor(10)
  vim.cmd("KernelhostRun cell")
  wait_for("Out[4]: 42", function() return has("Out[4]: 42") end)
  check(has("In [4]: 6 * 7"), "the echo numbered 4")
end)

run_step("run_line_and_range", function()
  cursor(12)
  vim.cmd("KernelhostRun line")
  wait_for("In [5]", function() return has("In [5]: box = {'alpha': 1}") end)
  vim.cmd("12,13KernelhostRun")
  wait_for("In [6]", function() return has("In [6]: box = {'alpha': 1}\n   ...: import os") end)
  wait_for("the replies", function() return S.pending == 0 end)
  -- a markdown cell runs nothing
  cursor(16)
  local before = #out_lines()
  check(kh.run({ args = "", range = 0 }) == nil, "a markdown cell ran")
  check(#out_lines() == before, "a markdown cell changed the output")
  check(notes[#notes] and notes[#notes].msg:find("markdown", 1, true), "no message about it")
  -- the output buffer never gets a kernel of its own
  check(kh.start(S.out.buf) == nil and kh.session(S.out.buf) == nil, "the output buffer started one")
  check(table.remove(notes).msg:find("output buffer", 1, true), "no warning about it")
end)

run_step("image_saved_and_linked", function()
  cursor(18)
  vim.cmd("KernelhostRun")
  wait_for("the image line", function() return has("[image/png 3x2] ") end)
  local path = out_text():match("%[image/png 3x2%] (%S+)")
  check(path and path:sub(1, #tmp) == tmp, "image path " .. tostring(path))
  local fh = io.open(path, "rb")
  check(fh ~= nil, "image file missing: " .. path)
  local bytes = fh:read("*a")
  fh:close()
  check(bytes:sub(1, 8) == "\137PNG\r\n\26\n", "not a PNG")
end)

run_step("complete_from_kernel", function()
  -- the omnifunc itself: findstart gives the byte column where "pa" starts
  cursor(14, 5)
  local col = kh.omnifunc(1, "")
  check(col == 3, "findstart " .. tostring(col))
  local items = kh.omnifunc(0, "pa")
  local words = {}
  for _, it in ipairs(items) do words[it.word] = true end
  check(words.path and words.pardir, "matches: " .. vim.inspect(items))
  -- and through Neovim's completion (CTRL-X CTRL-O), which inserts the first match
  cursor(14, 4)
  api.nvim_feedkeys(api.nvim_replace_termcodes("A<C-x><C-o><Esc>", true, false, true), "xt", false)
  local line = api.nvim_buf_get_lines(buf, 13, 14, false)[1]
  check(words[line:sub(4)] and line ~= "os.pa", "completed line: " .. line)
  api.nvim_buf_set_lines(buf, 13, 14, false, { "os.pa" })
end)

run_step("restart_kernel", function()
  vim.cmd("KernelhostRestart")
  wait_for("the restart", function() return has("[kernel restarted]") end)
  cursor(10)
  vim.cmd("KernelhostRun")
  wait_for("Out[1]: 42 after the restart", function() return has("Out[1]: 42") end)
end)

run_step("no_polling_when_idle", function()
  wait_for("the reply", function() return S.pending == 0 end)
  local st = kh._state
  check(st.driver.drains > 0, "the driver never drained")
  -- nothing due in the module's loop: no timer is armed, only the descriptor is watched
  check(st.manager:timeout() == -1, "the module has a timer due: " .. st.manager:timeout())
  check(not st.driver:timer_active(), "a timer is armed while idle")
  check(st.driver.poll:is_active(), "the descriptor is not watched")
end)

run_step("main_thread_kernel_in_nvim", function()
  vim.cmd("new")
  local b2 = api.nvim_get_current_buf()
  api.nvim_buf_set_lines(b2, 0, -1, false, { "import threading; print('in-process', threading.current_thread().name != 'MainThread')" })
  vim.cmd("KernelhostStart main_thread")
  local s2 = kh.session(b2)
  check(s2 and s2.kernel.mode == "main_thread", "main_thread session")
  vim.cmd("KernelhostRun")
  wait_for("the main_thread output", function() return has_line("in-process True", s2) end)
  vim.cmd("KernelhostStop")
  wait_for("the stop", function() return has("[kernel stopped]", s2) end)
  vim.cmd("bwipeout!")
end)

run_step("stop_kernel", function()
  api.nvim_set_current_buf(buf)
  local id = S.id
  vim.cmd("KernelhostStop")
  check(kh.session(buf) == nil, "the session is still there")
  wait_for("the stop", function() return has("[kernel stopped]") end)
  local list = kh._state.manager:list_kernels()
  for _, k in ipairs(list) do check(k.id ~= id, "the kernel is still listed") end
  check(vim.bo.omnifunc == "", "omnifunc still set")
  for _, n in ipairs(notes) do
    check(n.level < vim.log.levels.WARN, "the plugin reported: " .. tostring(n.msg))
  end
end)

run_step("module_symbols_do_not_clash", function()
  -- the module exports only its own names: none is also exported by Neovim (which exports
  -- khash's kh_* functions and LuaJIT's API); it links the same libuv.so.1 Neovim does
  local function exported(path)
    local out = vim.fn.systemlist({ "nm", "-D", "--defined-only", path })
    check(vim.v.shell_error == 0, "nm " .. path)
    local names = {}
    for _, l in ipairs(out) do
      local n = l:match("^%x+ %a (%S+)$")
      if n then names[n] = true end
    end
    return names
  end
  local mod = require("kernelhost.native").path
  local ours, nvim = exported(mod), exported(vim.v.progpath)
  check(ours.luaopen_kernelhost, "luaopen_kernelhost not exported")
  for n in pairs(ours) do
    check(n == "luaopen_kernelhost" or n:match("^kh_"), "exports a foreign name: " .. n)
    check(not nvim[n], "Neovim exports " .. n .. " too")
  end
end)

end

-- Any failure, a check's or an error's, ends the run at once with what the output showed.
local ok, err = xpcall(main, function(e)
  if type(e) == "table" and e.failed then return e.failed end
  return debug.traceback(tostring(e), 2)
end)
local text = S and S.out:valid() and out_text() or "(no output buffer)"
pcall(function() kh.shutdown() end)
if tmp then vim.fn.delete(tmp, "rf") end
watchdog:stop()
if not ok then
  finish(1, ("not ok: %s: %s\n--- output buffer ---\n%s\n---"):format(step, tostring(err), text))
end
finish(0, ("1..%d\nall %d steps passed"):format(passed, passed))

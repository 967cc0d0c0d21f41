-- kernelhost (Neovim plugin): Python kernels for buffers, through the kernelhost C module
-- (kernelhost.so, built for LuaJIT). One kernel per buffer, in worker mode by default; cells
-- run without blocking the editor, their output streams into an output split (output.lua) and
-- under the cell as virtual lines, and completion is an omnifunc backed by kernel:complete.
-- The module's loop is driven from Neovim's own (driver.lua): no polling timer.
--
--   require("kernelhost").setup({ kernel = { mode = "worker" }, manager = {}, ... })
--   :KernelhostStart [mode]   :KernelhostRun [line|cell]   :'<,'>KernelhostRun
--   :KernelhostInterrupt      :KernelhostRestart           :KernelhostStop
local api = vim.api
local native = require("kernelhost.native")
local Driver = require("kernelhost.driver")
local Output = require("kernelhost.output")
local cells = require("kernelhost.cells")

local M = {}

local defaults = {
  module = nil,                  -- path of kernelhost.so (default: package.cpath, then 'rtp')
  manager = {},                  -- KernelManager.new options (worker_path, pool, ...)
  kernel = { mode = "worker" },  -- create_kernel options for every buffer's kernel
  execute = {},                  -- kernel:submit options for every cell (stop_on_error, ...)
  cell_marker = cells.marker,    -- Lua pattern of a cell marker line
  auto_start = true,             -- :KernelhostRun starts the buffer's kernel when it has none
  omnifunc = true,               -- set 'omnifunc' of a buffer whose kernel starts
  virtual_lines = 6,             -- output lines shown under a cell (0: none)
  output = {
    split = "botright 12split",  -- how the output split opens
    open = true,                 -- open it when a cell runs
    follow = true,               -- keep its cursor on the newest output
    image_dir = nil,             -- where images go (default: stdpath("cache")/kernelhost)
  },
  on_image = nil,                -- function(path, mime, session): e.g. hand it to an image plugin
}

M.config = vim.deepcopy(defaults)

local state = {
  kh = nil,       -- the C module
  manager = nil,
  driver = nil,
  sessions = {},  -- source buffer -> session
  queue = {},     -- what callbacks delivered, rendered by the next drain: {session, kind, ...}
}
M._state = state -- the tests read it

function M.setup(opts)
  M.config = vim.tbl_deep_extend("force", vim.deepcopy(defaults), opts or {})
  -- the module's options are the user's as given, never merged into the defaults (a kernel
  -- given { mode = "main_thread" } means that, and lists must not merge index by index)
  for _, k in ipairs({ "kernel", "manager", "execute" }) do
    if opts and opts[k] then M.config[k] = vim.deepcopy(opts[k]) end
  end
  return M
end

local function notify(msg, level)
  vim.notify("kernelhost: " .. msg, level or vim.log.levels.INFO)
end

local function bufnr(buf)
  if buf == nil or buf == 0 then return api.nvim_get_current_buf() end
  return buf
end

-- --- rendering: what the callbacks queued, drawn on the main loop ---------------------------

local function set_virtual_lines(s, exec)
  local n = M.config.virtual_lines or 0
  if n <= 0 or not exec.source or not api.nvim_buf_is_valid(s.buf) then return end
  local lines = s.out:exec_lines(exec)
  local virt = {}
  local from = math.max(1, #lines - n + 1)
  for i = from, #lines do virt[#virt + 1] = { { "│ " .. lines[i], exec.hl or "KernelhostVirtual" } } end
  if #virt == 0 then return end
  local row = exec.source.last - 1
  if row >= api.nvim_buf_line_count(s.buf) then row = api.nvim_buf_line_count(s.buf) - 1 end
  exec.vmark = api.nvim_buf_set_extmark(s.buf, Output.ns, row, 0, {
    id = exec.vmark, virt_lines = virt,
  })
end

local function exec_of(s, eid)
  if eid == nil or eid == "" then return nil end
  return s.execs[eid]
end

-- The echo of a cell goes in when its first event arrives (its "busy"): queued cells then show
-- in the order they ran, each followed by its own output.
local function started(s, exec)
  if exec.started then return end
  exec.started = true
  s.out.last_exec = exec
  s.out:header(exec)
end

local render = {}

function render.event(s, e)
  local d = e.data or {}
  local exec = exec_of(s, d.execution_id)
  if e.type == "status" then
    local st = d.execution_state
    if exec and st == "busy" then
      s.running = exec
      started(s, exec)
    elseif st == "dead" then
      local why = type(d.reason) == "table" and d.reason.message or nil
      s.status = "dead"
      s.out:note("kernel died" .. (why and (": " .. tostring(why)) or ""))
    elseif st == "restarting" and not s.restarting then
      s.out:note("kernel restarting")
    end
    if st ~= "busy" or exec then s.status = st end
    return
  end
  if not exec then
    if e.type == "stream" then s.out:stream("kernel:" .. tostring(d.name), d.text or "") end
    return
  end
  started(s, exec)
  if exec.clear_wait and e.type ~= "clear_output" then
    s.out:clear(exec)
    exec.clear_wait = nil
  end
  if e.type == "stream" then
    s.out:stream(exec.id .. ":" .. tostring(d.name), d.text or "",
                 d.name == "stderr" and "KernelhostStderr" or nil)
  elseif e.type == "execute_result" then
    exec.count = d.execution_count or exec.count
    s.out:numbered(exec, exec.count)
    s.saved = s.out:bundle(exec, d.data or {}, ("Out[%s]: "):format(tostring(exec.count or "*")))
  elseif e.type == "display_data" or e.type == "update_display_data" then
    s.saved = s.out:bundle(exec, d.data or {})
  elseif e.type == "execute_error" then
    exec.hl = "KernelhostError"
    s.out:error(d)
  elseif e.type == "clear_output" then
    if d.wait then exec.clear_wait = true else s.out:clear(exec) end
  elseif e.type == "input_request" then
    s.input = { exec = exec, prompt = d.prompt or "", password = d.password }
  end
  if s.saved and M.config.on_image then
    for _, img in ipairs(s.saved) do pcall(M.config.on_image, img.path, img.mime, s) end
  end
  s.saved = nil
  exec.touched = true
end

-- The reply of a cell (kernel:submit's callback): r, or nil, msg, code when it failed.
function render.reply(s, exec, r, msg, code)
  started(s, exec)
  if r then
    exec.count = r.execution_count or exec.count
    s.out:numbered(exec, exec.count)
    if r.status == "aborted" then s.out:note("aborted: an earlier cell failed") end
    if r.status == "error" and exec.hl == nil then exec.hl = "KernelhostError" end
  else
    exec.hl = "KernelhostError"
    s.out:note(("not run: %s (%s)"):format(tostring(msg), tostring(code)))
  end
  exec.last_row = s.out:line_count()
  exec.done = true
  exec.reply = r or { status = "failed", message = msg, code = code }
  if s.running == exec then s.running = nil end
  s.pending = s.pending - 1
  exec.touched = true
end

function render.note(s, text)
  s.out:note(text)
end

-- A restart's completion: drawn in order after the "restarting" status it caused (which the
-- plugin's own note already announced), so the flag clears only here.
function render.restarted(s, text)
  s.restarting = nil
  s.out:note(text)
end

local function ask_input(s)
  local req = s.input
  s.input = nil
  vim.schedule(function()
    if not s.kernel then return end
    local ok, value = pcall(req.password and vim.fn.inputsecret or vim.fn.input, req.prompt)
    s.kernel:input_reply(ok and value or "")
    if state.driver then state.driver:arm() end
  end)
end

local function on_drain()
  local q = state.queue
  if #q == 0 then return end
  state.queue = {}
  local touched = {}
  for _, item in ipairs(q) do
    local s = item[1]
    if s.out:valid() then
      render[item[2]](s, item[3], item[4], item[5], item[6])
      touched[s] = true
    end
  end
  for s in pairs(touched) do
    for _, exec in pairs(s.execs) do
      if exec.touched then
        exec.touched = nil
        set_virtual_lines(s, exec)
        if exec.done then s.execs[exec.id] = nil end
      end
    end
    s.out:follow()
    if s.input then ask_input(s) end
  end
end

-- Callbacks only queue: they may run inside a blocking call (kernel:complete from the
-- omnifunc, under Neovim's textlock), where no buffer may change. The drain draws.
local function queue(...)
  state.queue[#state.queue + 1] = { ... }
  if state.driver then state.driver:wake() end
end

-- --- the manager -----------------------------------------------------------------------------

local function queue_error(text)
  vim.schedule(function() notify(tostring(text), vim.log.levels.ERROR) end)
end

local function manager()
  if state.manager then return state.manager end
  local kh, err = native.load(M.config.module)
  if not kh then return nil, err end
  state.kh = kh
  local m, msg, code = kh.KernelManager.new(next(M.config.manager or {}) and M.config.manager or nil)
  if not m then return nil, ("KernelManager.new: %s (%s)"):format(tostring(msg), tostring(code)) end
  m:on_kernel_event(nil, "error", function(text) queue_error(text) end)
  state.manager = m
  state.driver = Driver.new(m, on_drain)
  return m
end

-- Closes every kernel and the manager (VimLeavePre does it; :KernelhostStop only one kernel).
function M.shutdown()
  for b, s in pairs(state.sessions) do
    state.sessions[b] = nil
    s.kernel = nil
  end
  if state.driver then state.driver:close() end
  if state.manager then state.manager:close() end
  state.driver, state.manager = nil, nil
  state.queue = {}
end

-- --- sessions: a buffer's kernel -------------------------------------------------------------

function M.session(buf)
  return state.sessions[bufnr(buf)]
end

-- The kernel state of a buffer: "idle", "busy", "starting", "restarting", "dead", or nil.
function M.status(buf)
  local s = M.session(buf)
  return s and s.status or nil
end

-- Starts the kernel of buf (0: the current buffer). opts: create_kernel options over the
-- configured ones (mode = "main_thread" | "worker"). Blocks while the kernel starts (a worker:
-- some 30 ms; the first main_thread kernel starts Python in Neovim's process: some 40 ms).
function M.start(buf, opts)
  buf = bufnr(buf)
  if state.sessions[buf] then return state.sessions[buf] end
  if api.nvim_buf_get_option(buf, "filetype") == "kernelhost" then
    notify("this is an output buffer: run cells from their source buffer", vim.log.levels.WARN)
    return nil, "an output buffer"
  end
  local m, err = manager()
  if not m then
    notify(err, vim.log.levels.ERROR)
    return nil, err
  end
  local kopts = vim.tbl_extend("force", {}, M.config.kernel or {}, opts or {})
  local id, msg, code = m:create_kernel(kopts)
  state.driver:arm()
  if not id then
    local text = ("cannot start a kernel: %s (%s)"):format(tostring(msg), tostring(code))
    notify(text, vim.log.levels.ERROR)
    return nil, text
  end
  local name = api.nvim_buf_get_name(buf)
  name = name ~= "" and vim.fn.fnamemodify(name, ":t") or ("buffer " .. buf)
  local s = {
    buf = buf, id = id, kernel = m:get_kernel(id), mode = kopts.mode, status = "idle",
    execs = {}, pending = 0,
    out = Output.new(name, vim.tbl_extend("force", {}, M.config.output or {})),
  }
  s.sub = m:on_kernel_event(id, "*", function(e) queue(s, "event", e) end)
  state.sessions[buf] = s
  s.out:note(("kernel %s started (%s mode)"):format(id:sub(1, 8), tostring(kopts.mode or "worker")))
  if M.config.omnifunc then
    api.nvim_buf_set_option(buf, "omnifunc", "v:lua.require'kernelhost'.omnifunc")
  end
  return s
end

-- Runs code in buf's kernel; source = {first, last}: the rows it came from (for the virtual
-- lines). Returns the execution id.
function M.execute(buf, code, source)
  buf = bufnr(buf)
  local s = state.sessions[buf]
  if not s and M.config.auto_start then s = M.start(buf) end
  if not s then return nil, "no kernel for this buffer (:KernelhostStart)" end
  if M.config.output.open ~= false then s.out:show() end
  if source and M.config.virtual_lines and M.config.virtual_lines > 0 then
    -- the cell's earlier output under it goes: the new run's takes its place
    for _, mk in ipairs(api.nvim_buf_get_extmarks(buf, Output.ns, { source.first - 1, 0 },
                                                  { source.last - 1, -1 }, {})) do
      api.nvim_buf_del_extmark(buf, Output.ns, mk[1])
    end
  end
  local exec = { code = code, source = source, kernel_short = s.id:sub(1, 8) }
  local eid, msg, ecode = s.kernel:submit(code, M.config.execute or {}, function(r, m2, c2)
    queue(s, "reply", exec, r, m2, c2)
  end)
  state.driver:arm()
  if not eid then
    s.out:note(("not run: %s (%s)"):format(tostring(msg), tostring(ecode)))
    return nil, msg, ecode
  end
  exec.id = eid
  s.execs[eid] = exec
  s.pending = s.pending + 1
  return eid
end

-- :KernelhostRun: a range runs its lines; "line" the cursor's line; "cell" (and, in a buffer
-- with markers, no argument) the `# %%` cell under the cursor; no argument and no markers: the
-- cursor's line.
function M.run(o)
  o = o or {}
  local buf = api.nvim_get_current_buf()
  local first, last
  local what = o.args ~= "" and o.args or nil
  if o.range and o.range > 0 then
    first, last = o.line1, o.line2
  else
    local row = api.nvim_win_get_cursor(0)[1]
    if what == nil then
      what = cells.has_markers(buf, M.config.cell_marker) and "cell" or "line"
    end
    if what == "cell" then
      local c = cells.cell_at(buf, row, M.config.cell_marker)
      if c.markdown then
        notify("a markdown cell: nothing to run")
        return nil
      end
      first, last = c.first, c.last
    elseif what == "line" then
      first, last = row, row
    else
      notify("unknown argument " .. what .. " (line or cell)", vim.log.levels.ERROR)
      return nil
    end
  end
  local code = cells.code(buf, first, last)
  if code:match("^%s*$") then return nil end
  local eid, msg, code2 = M.execute(buf, code, { first = first, last = last })
  if not eid and msg then notify(tostring(msg) .. (code2 and (" (" .. code2 .. ")") or ""),
                                 vim.log.levels.ERROR) end
  return eid
end

local function need(buf)
  local s = state.sessions[bufnr(buf)]
  if not s then notify("no kernel for this buffer (:KernelhostStart)", vim.log.levels.WARN) end
  return s
end

function M.interrupt(buf)
  local s = need(buf)
  if not s then return nil end
  local ok, msg, code = s.kernel:interrupt()
  state.driver:arm()
  if not ok then notify(("interrupt: %s (%s)"):format(tostring(msg), tostring(code))) end
  return ok
end

-- Restarts the buffer's kernel (a fresh namespace); does not block.
function M.restart(buf)
  local s = need(buf)
  if not s then return nil end
  s.restarting = true
  s.out:note("restarting kernel")
  local ok, msg, code = s.kernel:restart(function(done, m2, c2)
    queue(s, "restarted", done and "kernel restarted" or
                     ("restart failed: %s (%s)"):format(tostring(m2), tostring(c2)))
  end)
  state.driver:arm()
  if not ok then
    s.restarting = nil
    notify(("restart: %s (%s)"):format(tostring(msg), tostring(code)), vim.log.levels.ERROR)
  end
  return ok
end

-- Stops the buffer's kernel (its output buffer stays); does not block.
function M.stop(buf)
  buf = bufnr(buf)
  local s = need(buf)
  if not s then return nil end
  state.sessions[buf] = nil
  state.manager:off_kernel_event(s.sub)
  local ok, msg, code = state.manager:destroy_kernel(s.id, function(done, m2, c2)
    queue(s, "note", done and "kernel stopped" or
                     ("stop failed: %s (%s)"):format(tostring(m2), tostring(c2)))
  end)
  state.driver:arm()
  s.kernel = nil
  if api.nvim_buf_is_valid(buf) and M.config.omnifunc and
     api.nvim_buf_get_option(buf, "omnifunc") == "v:lua.require'kernelhost'.omnifunc" then
    api.nvim_buf_set_option(buf, "omnifunc", "")
  end
  if not ok then notify(("stop: %s (%s)"):format(tostring(msg), tostring(code))) end
  return ok
end

-- --- completion ------------------------------------------------------------------------------

-- The code around the cursor that a completion sees: the cell (or the whole buffer), and the
-- cursor's offset in it in Unicode code points (what kernel:complete counts).
local function completion_context(buf)
  local row, col = unpack(api.nvim_win_get_cursor(0))
  local first, last = 1, api.nvim_buf_line_count(buf)
  if cells.has_markers(buf, M.config.cell_marker) then
    local c = cells.cell_at(buf, row, M.config.cell_marker)
    if row >= c.first and row <= c.last then first, last = c.first, c.last end
  end
  local lines = api.nvim_buf_get_lines(buf, first - 1, last, false)
  local pos = 0
  for i = 1, row - first do pos = pos + vim.fn.strchars(lines[i]) + 1 end
  local line = lines[row - first + 1] or ""
  pos = pos + vim.fn.strchars(line:sub(1, col))
  return table.concat(lines, "\n"), pos, line
end

-- 'omnifunc' (set by :KernelhostStart): matches from the kernel's live namespace (jedi).
function M.omnifunc(findstart, base)
  local buf = api.nvim_get_current_buf()
  local s = state.sessions[buf]
  if findstart == 1 then
    if not s then return -3 end
    local code, pos, line = completion_context(buf)
    local r = s.kernel:complete(code, pos)
    state.driver:arm()
    if not r or r.status ~= "ok" then
      s.completion = nil
      return -3
    end
    -- cursor_start counts code points from the start of code: back to a byte column of line
    local line_start = pos - vim.fn.strchars(line:sub(1, api.nvim_win_get_cursor(0)[2]))
    local start = r.cursor_start - line_start
    if start < 0 then
      s.completion = nil
      return -3
    end
    s.completion = r
    return vim.fn.byteidx(line, start)
  end
  local r = s and s.completion
  if not r then return {} end
  local types = {}
  local meta = r.metadata and r.metadata._jupyter_types_experimental
  if type(meta) == "table" then
    for _, t in ipairs(meta) do types[t.text] = t end
  end
  local items = {}
  for _, word in ipairs(r.matches or {}) do
    if base == nil or base == "" or word:sub(1, #base) == base then
      local t = types[word]
      items[#items + 1] = {
        word = word,
        menu = t and t.type or nil,
        info = t and t.signature ~= "" and t.signature or nil,
        icase = 0,
        dup = 0,
      }
    end
  end
  return items
end

return M

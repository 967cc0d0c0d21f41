-- kernelhost/output.lua: the output split of a kernel, a scratch buffer that grows as events
-- arrive, in the shape of a Jupyter console:
--
--   In [1]: print("hello")
--   hello
--   In [2]: 6 * 7
--   Out[2]: 42
--
-- Owns the buffer and how each kind of event looks in it (streams merged into their last line
-- while it is unfinished, tracebacks, results, images saved to files and linked, notes about
-- the kernel). The session (init.lua) says which cell an event belongs to; every change here
-- runs on Neovim's main loop (the driver's drain), never in a libuv callback.
local api = vim.api

local O = {}
O.__index = O

O.ns = api.nvim_create_namespace("kernelhost")

local function strip_ansi(s)
  return (s:gsub("\27%[[%d;?]*[A-Za-z]", ""))
end

-- What a terminal would show of a line with carriage returns (a progress bar): its last
-- non-empty segment.
local function after_cr(s)
  if not s:find("\r", 1, true) then return s end
  local last = ""
  for seg in (s .. "\r"):gmatch("([^\r]*)\r") do
    if seg ~= "" then last = seg end
  end
  return last
end

local function split_lines(text)
  return vim.split(text, "\n", true)
end

-- name: shown in the buffer name (kernelhost://<name>); opts: the plugin's output options.
function O.new(name, opts)
  local self = setmetatable({ opts = opts or {}, tail = nil, images = 0 }, O)
  local buf = api.nvim_create_buf(false, true)
  self.buf = buf
  local bufname = "kernelhost://" .. name
  if not pcall(api.nvim_buf_set_name, buf, bufname) then
    pcall(api.nvim_buf_set_name, buf, bufname .. " (" .. buf .. ")")
  end
  api.nvim_buf_set_option(buf, "buftype", "nofile")
  api.nvim_buf_set_option(buf, "bufhidden", "hide")
  api.nvim_buf_set_option(buf, "swapfile", false)
  api.nvim_buf_set_option(buf, "filetype", "kernelhost")
  api.nvim_buf_set_option(buf, "modifiable", false)
  self.empty = true -- the buffer still holds only the one empty line it was created with
  return self
end

function O:valid()
  return api.nvim_buf_is_valid(self.buf)
end

-- The windows of the current tab page that show the buffer.
function O:windows()
  local out = {}
  for _, w in ipairs(api.nvim_tabpage_list_wins(0)) do
    if api.nvim_win_get_buf(w) == self.buf then out[#out + 1] = w end
  end
  return out
end

-- Shows the buffer in a split (opts.split: an Ex command, "botright 12split" by default) when
-- the current tab page does not show it yet; the cursor stays where it was.
function O:show()
  if not self:valid() or #self:windows() > 0 then return end
  local from = api.nvim_get_current_win()
  vim.cmd(self.opts.split or "botright 12split")
  local win = api.nvim_get_current_win()
  api.nvim_win_set_buf(win, self.buf)
  api.nvim_win_set_option(win, "number", false)
  api.nvim_win_set_option(win, "wrap", true)
  if api.nvim_win_is_valid(from) then api.nvim_set_current_win(from) end
  self:follow()
end

function O:line_count()
  return api.nvim_buf_line_count(self.buf)
end

-- Replaces rows [first, last) (0-based, end-exclusive) with lines.
function O:set(first, last, lines)
  api.nvim_buf_set_option(self.buf, "modifiable", true)
  api.nvim_buf_set_lines(self.buf, first, last, false, lines)
  api.nvim_buf_set_option(self.buf, "modifiable", false)
end

-- Appends lines (highlighted with hl when given); returns the 0-based row of the first.
function O:append(lines, hl)
  if not self:valid() or #lines == 0 then return nil end
  local row
  if self.empty then
    row = 0
    self:set(0, -1, lines)
    self.empty = false
  else
    row = self:line_count()
    self:set(row, row, lines)
  end
  if hl then
    for i = 0, #lines - 1 do api.nvim_buf_add_highlight(self.buf, O.ns, hl, row + i, 0, -1) end
  end
  self.tail = nil
  return row
end

-- Stream text of one stream (key: exec id and stream name): a chunk that does not end its line
-- leaves it open, and the next chunk of the same stream continues it.
function O:stream(key, text, hl)
  if not self:valid() then return end
  text = strip_ansi(text):gsub("\r\n", "\n")
  local parts = split_lines(text)
  local open = parts[#parts] ~= ""
  if not open then parts[#parts] = nil end
  if #parts == 0 then return end
  local first = 1
  if self.tail == key and not self.empty then
    local row = self:line_count() - 1
    local last = api.nvim_buf_get_lines(self.buf, row, row + 1, false)[1] or ""
    self:set(row, row + 1, { after_cr(last .. parts[1]) })
    if hl then api.nvim_buf_add_highlight(self.buf, O.ns, hl, row, 0, -1) end
    first = 2
  end
  local rest = {}
  for i = first, #parts do rest[#rest + 1] = after_cr(parts[i]) end
  self:append(rest, hl)
  self.tail = open and key or nil
end

-- Moves the cursor of every window showing the buffer to its end, so the newest output shows.
function O:follow()
  if self.opts.follow == false or not self:valid() then return end
  local n = self:line_count()
  for _, w in ipairs(self:windows()) do api.nvim_win_set_cursor(w, { n, 0 }) end
end

-- The buffer's text (the tests and the latency script read it).
function O:text()
  if not self:valid() then return "" end
  return table.concat(api.nvim_buf_get_lines(self.buf, 0, -1, false), "\n")
end

-- --- how a cell's events look ------------------------------------------------------------------

-- The echo of a cell's code, "In [*]:" until its execution count is known. Returns the row.
function O:header(exec)
  local code = split_lines(exec.code)
  local lines = { "In [*]: " .. code[1] }
  for i = 2, #code do lines[#lines + 1] = "   ...: " .. code[i] end
  local row = self:append(lines, "KernelhostIn")
  if row then exec.mark = api.nvim_buf_set_extmark(self.buf, O.ns, row, 0, {}) end
  exec.first_row = self:line_count()
  return row
end

-- Puts the execution count into the cell's "In [*]:".
function O:numbered(exec, count)
  if not exec.mark or not self:valid() or count == nil then return end
  local pos = api.nvim_buf_get_extmark_by_id(self.buf, O.ns, exec.mark, {})
  if not pos or pos[1] == nil then return end
  local line = api.nvim_buf_get_lines(self.buf, pos[1], pos[1] + 1, false)[1]
  if line and line:sub(1, 7) == "In [*]:" then
    self:set(pos[1], pos[1] + 1, { ("In [%s]:"):format(tostring(count)) .. line:sub(8) })
    api.nvim_buf_add_highlight(self.buf, O.ns, "KernelhostIn", pos[1], 0, -1)
  end
end

local function text_lines(s)
  local out = {}
  for _, l in ipairs(split_lines(strip_ansi(s):gsub("\r\n", "\n"))) do out[#out + 1] = after_cr(l) end
  if #out > 1 and out[#out] == "" then out[#out] = nil end
  return out
end

local image_ext = {
  ["image/png"] = "png", ["image/jpeg"] = "jpg", ["image/gif"] = "gif", ["image/webp"] = "webp",
  ["image/svg+xml"] = "svg", ["application/pdf"] = "pdf",
}

-- Width and height of a PNG, from its IHDR chunk.
local function png_size(bytes)
  if #bytes < 24 or bytes:sub(1, 8) ~= "\137PNG\r\n\26\n" then return nil end
  local function u32(i)
    local a, b, c, d = bytes:byte(i, i + 3)
    return ((a * 256 + b) * 256 + c) * 256 + d
  end
  return u32(17), u32(21)
end

-- Saves a binary value (image/png arrives as a Lua string of its bytes) and returns the path.
function O:save(exec, mime, bytes)
  local dir = self.opts.image_dir or (vim.fn.stdpath("cache") .. "/kernelhost")
  vim.fn.mkdir(dir, "p")
  self.images = self.images + 1
  local path = ("%s/%s-%d-%d.%s"):format(dir, exec.kernel_short or "kernel", vim.fn.getpid(),
                                         self.images, image_ext[mime] or "bin")
  local fh = assert(io.open(path, "wb"))
  fh:write(bytes)
  fh:close()
  return path
end

-- A MIME bundle (display_data, execute_result): images to files, else its text/plain.
-- prefix: "Out[n]: " for a result. Returns the paths of the images saved.
function O:bundle(exec, data, prefix)
  local saved = {}
  local shown = false
  for mime, _ in pairs(image_ext) do
    local v = data[mime]
    if type(v) == "string" then
      local path = self:save(exec, mime, v)
      local w, h = nil, nil
      if mime == "image/png" then w, h = png_size(v) end
      local size = w and (" %dx%d"):format(w, h) or ""
      self:append({ ("%s[%s%s] %s"):format(prefix or "", mime, size, path) }, "KernelhostImage")
      saved[#saved + 1] = { path = path, mime = mime }
      shown = true
    end
  end
  if not shown then
    local text = data["text/plain"]
    if type(text) == "string" then
      local lines = text_lines(text)
      lines[1] = (prefix or "") .. lines[1]
      self:append(lines, prefix and "KernelhostOut" or nil)
    else
      local kinds = {}
      for mime, _ in pairs(data) do
        if type(mime) == "string" and mime:find("/", 1, true) then kinds[#kinds + 1] = mime end
      end
      table.sort(kinds)
      self:append({ (prefix or "") .. "[" .. table.concat(kinds, ", ") .. "]" }, "KernelhostNote")
    end
  end
  return saved
end

function O:error(data)
  local lines = {}
  for _, l in ipairs(data.traceback or {}) do
    for _, x in ipairs(text_lines(l)) do lines[#lines + 1] = x end
  end
  if #lines == 0 then lines = { ("%s: %s"):format(data.ename or "Error", data.evalue or "") } end
  self:append(lines, "KernelhostError")
end

function O:note(text)
  self:append({ "[" .. text .. "]" }, "KernelhostNote")
end

-- Clears the output of exec when it is the last thing in the buffer (clear_output).
function O:clear(exec)
  if exec.first_row and self.last_exec == exec and exec.first_row <= self:line_count() then
    self:set(exec.first_row, -1, {})
    self.tail = nil
  end
end

-- The rows of exec's output so far (after its echo), for the virtual lines under its cell.
function O:exec_lines(exec)
  if not exec.first_row or not self:valid() then return {} end
  local last = exec.last_row or self:line_count()
  return api.nvim_buf_get_lines(self.buf, exec.first_row, last, false)
end

return O

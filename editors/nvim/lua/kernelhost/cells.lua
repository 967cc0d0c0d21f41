-- kernelhost/cells.lua: what a run command sends: the current line, a range of lines, or the
-- `# %%` cell under the cursor (the percent format of Jupytext, VS Code, Spyder). Rows are
-- 1-based and inclusive, as in Ex ranges.
local C = {}

-- Lua pattern of a cell marker line ("# %%", "#%%", "# %% [markdown]", "# %% title").
C.marker = "^%s*#%s*%%%%"

local function lines(buf, first, last)
  return vim.api.nvim_buf_get_lines(buf, first - 1, last, false)
end

function C.is_marker(line, pattern)
  return line:find(pattern or C.marker) ~= nil
end

-- True when the buffer has at least one marker line.
function C.has_markers(buf, pattern)
  for _, l in ipairs(lines(buf, 1, -1)) do
    if C.is_marker(l, pattern) then return true end
  end
  return false
end

-- The cell around row: {first, last, markdown}, the rows of its code (its marker line excluded),
-- markdown true for a "# %% [markdown]" cell. On a marker line, the cell that marker starts;
-- without markers, the whole buffer.
function C.cell_at(buf, row, pattern)
  local all = lines(buf, 1, -1)
  local first, header = 1, nil
  for r = math.min(row, #all), 1, -1 do
    if C.is_marker(all[r], pattern) then
      first, header = r + 1, all[r]
      break
    end
  end
  local last = #all
  for r = math.max(row + 1, first), #all do
    if C.is_marker(all[r], pattern) then
      last = r - 1
      break
    end
  end
  return {
    first = first,
    last = math.max(first - 1, last),
    markdown = header ~= nil and header:find("%[markdown%]") ~= nil,
  }
end

-- The code of rows first..last, one string (trailing blank lines dropped: they would only add
-- an empty line to the echo of the cell).
function C.code(buf, first, last)
  local l = lines(buf, first, last)
  while #l > 0 and l[#l]:match("^%s*$") do l[#l] = nil end
  return table.concat(l, "\n")
end

return C

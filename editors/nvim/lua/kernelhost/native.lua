-- kernelhost/native.lua: finds and opens the C module kernelhost.so. The plugin itself answers
-- require("kernelhost") (Neovim's runtimepath loader comes before package.cpath), so the
-- module is opened by path through package.loadlib, under its own luaopen_ name.
local N = {}

local loaded -- the module table, once opened

-- Where the module is: the configured path, else kernelhost.so on package.cpath (LUA_CPATH, or
-- a luarocks tree: `luarocks --lua-version=5.1 make`), else lua/kernelhost.so on 'runtimepath'.
function N.find(path)
  if path and path ~= "" then return path end
  local found = package.searchpath("kernelhost", package.cpath)
  if found then return found end
  return vim.api.nvim_get_runtime_file("lua/kernelhost.so", false)[1]
end

-- The module table, or nil and a message saying what was tried.
function N.load(path)
  if loaded then return loaded end
  local where = N.find(path)
  if not where then
    return nil, "kernelhost.so not found (package.cpath: " .. package.cpath .. "); install it " ..
                "with `luarocks --lua-version=5.1 make`, or set setup{ module = '/path/to/kernelhost.so' }"
  end
  local open, err = package.loadlib(where, "luaopen_kernelhost")
  if not open then return nil, ("cannot load %s: %s"):format(where, tostring(err)) end
  loaded = open()
  N.path = where
  return loaded
end

return N

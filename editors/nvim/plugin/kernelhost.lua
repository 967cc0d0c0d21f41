-- plugin/kernelhost.lua: the commands of the kernelhost plugin (lua/kernelhost/init.lua does the
-- work, loaded at the first command) and its highlight groups. Neovim 0.7 or newer.
if vim.g.loaded_kernelhost then return end
vim.g.loaded_kernelhost = 1

local function kh() return require("kernelhost") end
local cmd = vim.api.nvim_create_user_command

cmd("KernelhostStart", function(o)
  kh().start(0, o.args ~= "" and { mode = o.args } or nil)
end, {
  nargs = "?",
  complete = function() return { "worker", "main_thread" } end,
  desc = "Start a Python kernel for this buffer (worker mode unless told)",
})
cmd("KernelhostRun", function(o) kh().run(o) end, {
  nargs = "?",
  range = true,
  complete = function() return { "line", "cell" } end,
  desc = "Run the range, the # %% cell under the cursor, or the current line",
})
cmd("KernelhostInterrupt", function() kh().interrupt(0) end, { desc = "Interrupt the running cell" })
cmd("KernelhostRestart", function() kh().restart(0) end, { desc = "Restart this buffer's kernel" })
cmd("KernelhostStop", function() kh().stop(0) end, { desc = "Stop this buffer's kernel" })

for name, link in pairs({
  KernelhostIn = "Identifier", KernelhostOut = "Special", KernelhostError = "ErrorMsg",
  KernelhostStderr = "WarningMsg", KernelhostNote = "Comment", KernelhostImage = "Directory",
  KernelhostVirtual = "Comment",
}) do
  vim.api.nvim_set_hl(0, name, { link = link, default = true })
end

local group = vim.api.nvim_create_augroup("kernelhost", { clear = true })
vim.api.nvim_create_autocmd("BufWipeout", {
  group = group,
  callback = function(a)
    if package.loaded["kernelhost"] and kh().session(a.buf) then kh().stop(a.buf) end
  end,
})
vim.api.nvim_create_autocmd("VimLeavePre", {
  group = group,
  callback = function()
    if package.loaded["kernelhost"] then kh().shutdown() end
  end,
})

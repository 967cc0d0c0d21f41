-- errors_spec.lua: options the core refuses, options a mode cannot honour, and the error
-- names every failure carries.
local kernelhost = require("kernelhost")
local H = require("helpers")

describe("errors", function()
  local f
  before_each(function() f = H.fixture() end)
  after_each(function() H.close(f) end)

  it("kernel_bad_options", function()
    local cases = {
      { mode = "bogus" },
      { mode = 42 },
      { max_execution_time = "soon" },
      { maxExecutionTime = -1 },
      { namespace = "" },
      { no_such_option = true },
      { filesystem = "yes" },
    }
    for _, o in ipairs(cases) do
      local opts = o.mode ~= nil and o or H.opts(o)
      local id, msg, code = f.m:create_kernel(opts)
      assert.is_nil(id)
      assert.are.equal("string", type(msg))
      assert.are.equal("KH_EOPTION", code)
    end
    assert.are.same({}, f.m:list_kernels())
    -- manager options too
    local m, msg, code = kernelhost.KernelManager.new({ max_code_bytes = "big" })
    assert.is_nil(m)
    assert.are.equal("string", type(msg))
    assert.are.equal("KH_EOPTION", code)
    assert.are.equal("KH_EOPTION", select(3, kernelhost.KernelManager.new({ nope = 1 })))
    -- values that cannot become JSON, and execute options of the wrong type, are misuse
    assert.has_error(function() f.m:create_kernel({ mode = print }) end)
    assert.has_error(function() f.m:create_kernel("main_thread") end)
    local _, k = H.create(f)
    assert.has_error(function() k:execute("1", { silent = "yes" }) end)
    assert.has_error(function() k:execute("1", { timeout = -5 }) end)
    assert.has_error(function() k:execute("1", { sielnt = true }) end)
    assert.has_error(function() k:execute(nil) end)
    assert.has_error(function() k:submit("1") end) -- no callback
  end)

  it("kernel_mode_option_unsupported", function()
    -- options only a worker can honour fail in main_thread, naming the option
    local cases = {
      { "env", { env = { KEY = "v" } } },
      { "permissions", { permissions = { read = { "/tmp" } } } },
      { "cwd", { cwd = "/tmp" } },
      { "mountPoint", { filesystem = { enabled = true, root = "/tmp", mount_point = "/home" } } },
    }
    for _, c in ipairs(cases) do
      local o = c[2]
      o.mode = kernelhost.KernelMode.MAIN_THREAD
      local id, msg, code = f.m:create_kernel(o)
      assert.is_nil(id)
      assert.are.equal("KH_ENOTSUP", code)
      assert.is_truthy(msg:find(c[1], 1, true), msg)
    end
    assert.are.same({}, f.m:list_kernels())
  end)

  it("error_names", function()
    -- every KH_E* code is exported, with its number
    local n = 0
    for name, code in pairs(kernelhost.errors) do
      n = n + 1
      assert.is_truthy(name:match("^KH_E%u+$"))
      assert.are.equal("number", type(code))
      assert.is_true(code < -30000)
      assert.are.equal("string", type(kernelhost.strerror(code)))
    end
    assert.are.equal(15, n) -- KH_ERRNO_MAP in kernelhost.h
    -- runtime failures return nil, message, name; the name is one of those
    local id, k = H.create(f)
    local failures = {
      { f.m:get_kernel("nope") },
      { k:execute("\0") },
      { f.m:create_kernel(H.opts({ mode = "nope" })) },
      { f.m:create_kernel(H.opts({ id = id })) },
    }
    for _, res in ipairs(failures) do
      assert.is_nil(res[1])
      assert.are.equal("string", type(res[2]))
      assert.is_true(#res[2] > 0)
      assert.is_not_nil(kernelhost.errors[res[3]], tostring(res[3]))
    end
    assert.are.same({ "KH_ENOTFOUND", "KH_EENCODING", "KH_EOPTION", "KH_EEXIST" },
                    { failures[1][3], failures[2][3], failures[3][3], failures[4][3] })
  end)
end)

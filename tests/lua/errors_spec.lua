-- errors_spec.lua: the error names every failure carries, and misuse, which raises a Lua error
-- (luaL_argerror) instead of returning nil, message, code. Options the core refuses are data:
-- tests/cases/options.json.
local kernelhost = require("kernelhost")
local H = require("helpers")

describe("errors", function()
  local f
  before_each(function() f = H.fixture() end)
  after_each(function() H.close(f) end)

  it("api_misuse_refused", function()
    -- values that cannot become JSON, and options that are not a table, are misuse
    assert.has_error(function() f.m:create_kernel({ mode = print }) end)
    assert.has_error(function() f.m:create_kernel("main_thread") end)
    -- (C's kh_manager_new with no loop -> KH_EINVAL has no Lua form: the binding brings its own
    -- loop; the Lua misuse is manager options that are not a table)
    assert.has_error(function() kernelhost.KernelManager.new("maxCodeBytes") end)
    -- execute options of the wrong type or name, no code, no callback
    local _, k = H.create(f)
    assert.has_error(function() k:execute("1", { silent = "yes" }) end)
    assert.has_error(function() k:execute("1", { allow_stdin = 0 }) end)
    assert.has_error(function() k:execute("1", { allowStdin = false }) end)
    assert.has_error(function() k:execute("1", { timeout = -5 }) end)
    assert.has_error(function() k:execute("1", { sielnt = true }) end)
    assert.has_error(function() k:execute(nil) end)
    assert.has_error(function() k:submit("1") end)
    -- misuse leaves nothing behind: the kernel is the only one, and it works
    assert.are.equal(1, #f.m:list_kernels())
    assert.are.equal("ok", H.exec(k, "1").status)
  end)

  it("options_nan_infinity", function()
    -- JSON has no NaN or infinity: such a number is a bad option value (KH_EOPTION naming it),
    -- never an option taken as not given (max_execution_time = 1/0 is not "no limit")
    for _, v in ipairs({ 1 / 0, -1 / 0, 0 / 0 }) do
      local id, msg, code = f.m:create_kernel(H.opts({ max_execution_time = v }))
      assert.is_nil(id)
      assert.are.equal("KH_EOPTION", code)
      assert.is_truthy(msg:find("max_execution_time", 1, true))
    end
    local id, msg, code = f.m:create_kernel(H.opts({ limits = { memory_bytes = 1 / 0 } }))
    assert.is_nil(id)
    assert.are.equal("KH_EOPTION", code)
    assert.is_truthy(msg:find("limits.memory_bytes", 1, true))
    local m2
    m2, msg, code = kernelhost.KernelManager.new({ interruptGraceMs = 0 / 0 })
    assert.is_nil(m2)
    assert.are.equal("KH_EOPTION", code)
    assert.is_truthy(msg:find("interruptGraceMs", 1, true))
    assert.are.equal(0, #f.m:list_kernels())
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
    assert.are.equal(17, n) -- KH_ERRNO_MAP in kernelhost.h
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

-- comm_spec.lua: what a case file cannot hold about comms in Lua: the host's bad input as Lua
-- can spell it (misuse raises; what the core refuses returns nil, msg, code) and the comm object
-- itself (fields, one object per comm, callbacks). The rest is data: tests/cases/comm.json.
local kernelhost = require("kernelhost")
local H = require("helpers")

describe("comm", function()
  local f
  before_each(function() f = H.fixture() end)
  after_each(function() H.close(f) end)

  local function busy_count()
    local n = 0
    for _, e in ipairs(H.statuses(f, "busy")) do
      if e.execution_id ~= "" then n = n + 1 end
    end
    return n
  end

  it("comm_bad_input", function()
    local id, k = H.create(f)
    -- misuse raises: a target that is no string, data or options of the wrong type, unknown
    -- options, values JSON cannot hold
    assert.has_error(function() k:open_comm(nil) end)
    assert.has_error(function() k:open_comm({}) end)
    assert.has_error(function() k:open_comm("t", 5) end)
    assert.has_error(function() k:open_comm("t", "data") end)
    assert.has_error(function() k:open_comm("t", {}, { bogus = 1 }) end)
    assert.has_error(function() k:open_comm("t", {}, { comm_id = 5 }) end)
    assert.has_error(function() k:open_comm("t", {}, { metadata = "m" }) end)
    assert.has_error(function() k:open_comm("t", { f = print }) end)
    assert.has_error(function() k:open_comm("t", { s = "\xff" }) end)
    assert.has_error(function() k:open_comm("\xff") end)
    assert.has_error(function() k:comm(nil) end)
    assert.has_error(function() k:comm("c"):send(7) end)
    assert.has_error(function() k:comm("c"):close({}, { comm_id = "other" }) end)
    assert.has_error(function() k:comm("c"):on_msg(7) end)
    assert.has_error(function() k.comm("not a kernel", "c") end)
    assert.has_error(function() k:open_comm("t", {}, { buffers = "bytes" }) end)
    assert.has_error(function() k:open_comm("t", {}, { buffers = { 1, 2 } }) end)
    local many = {}
    for i = 1, 65 do many[i] = "x" end
    assert.has_error(function() k:comm("c"):send({}, { buffers = many }) end)
    -- what the core refuses comes back as nil, msg, code: data that is an array, an empty comm
    -- id, a comm that is not open, an id open already
    local function refused(code, ok, msg, got)
      assert.is_nil(ok)
      assert.are.equal(code, got)
      assert.is_string(msg)
    end
    refused("KH_EINVAL", k:open_comm("t", { 1, 2 }))
    refused("KH_EINVAL", k:open_comm("t", {}, { comm_id = "" }))
    refused("KH_EINVAL", k:open_comm("t", {}, { comm_id = ("x"):rep(300) }))
    refused("KH_ECLOSED", k:comm("never"):send({ a = 1 }))
    refused("KH_ECLOSED", k:comm("never"):close())
    H.exec(k, "import comm\npy = comm.create_comm(target_name='x', comm_id='py1')")
    refused("KH_EINVAL", k:open_comm("t", nil, { comm_id = "py1" }))
    -- nothing was queued by any of them: the cell above is the kernel's only request
    assert.are.equal(1, busy_count())
    -- a kernel that is gone, a manager that is closed
    assert(f.m:destroy_kernel(id))
    refused("KH_ENOTFOUND", k:open_comm("t"))
    refused("KH_ENOTFOUND", k:comm("py1"):send())
    local m2 = assert(kernelhost.KernelManager.new())
    local id2 = assert(m2:create_kernel(H.opts()))
    local k2 = m2:get_kernel(id2)
    local c2 = k2:comm("c")
    assert(m2:close())
    refused("KH_ECLOSED", k2:open_comm("t"))
    refused("KH_ECLOSED", c2:send())
  end)

  it("comm_object_fields", function()
    -- open_comm gives an object with the comm's id (generated like Python's uuid4().hex when
    -- not given), its target and kernel; kernel:comm(id) gives that same object while the comm
    -- is open, and a new one once it closed
    local _, k = H.create(f)
    H.exec(k, "import comm\ncomm.get_comm_manager().register_target('t', lambda c, m: None)")
    local c = assert(k:open_comm("t"))
    assert.is_truthy(c.comm_id:match("^%x+$"))
    assert.are.equal(32, #c.comm_id)
    assert.are.equal("t", c.target_name)
    assert.are.equal(k, c.kernel)
    assert.are.equal(c, k:comm(c.comm_id))
    assert.is_truthy(tostring(c):find(c.comm_id, 1, true))
    local named = assert(k:open_comm("t", { a = 1 }, { comm_id = "mine", metadata = { m = 1 } }))
    assert.are.equal("mine", named.comm_id)
    assert.are.equal(named, k:comm("mine"))
    assert.are.equal(named, named:on_msg(function() end))
    assert.are.equal(named, named:on_close(nil))
    assert(named:close())
    local again = k:comm("mine")
    assert.are_not.equal(named, again)
    assert.is_nil(again.target_name)
    local ok, _, code = again:send()
    assert.is_nil(ok)
    assert.are.equal("KH_ECLOSED", code)
  end)

  it("lua_comm_callback_error_reported", function()
    -- an error raised in a comm callback is caught and goes to the "error" handlers, as in
    -- every Lua callback; the comm keeps its callbacks and the next message reaches them
    local _, k = H.create(f)
    H.exec(k, table.concat({
      "import comm",
      "def opener(c, msg):",
      "    c.on_msg(lambda m: c.send(m['content']['data']))",
      "comm.get_comm_manager().register_target('echo', opener)",
    }, "\n"))
    local errors, got = {}, {}
    f.m:on_kernel_event(nil, "error", function(err, info) errors[#errors + 1] = info.event end)
    local c = assert(k:open_comm("echo"))
    c:on_msg(function(d)
      got[#got + 1] = d.data.n
      if d.data.n == 1 then error("callback failed") end
    end)
    assert(c:send({ n = 1 }))
    assert(c:send({ n = 2 }))
    H.wait(f, function() return #got == 2 end, "both echoes")
    assert.are.same({ 1, 2 }, got)
    assert.are.same({ "comm_msg" }, errors)
  end)
end)

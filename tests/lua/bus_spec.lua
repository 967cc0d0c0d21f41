-- bus_spec.lua: subscriptions from Lua: filters by kernel and type, unsubscribing inside a
-- callback. (Busy/idle bracketing is data: tests/cases/status.json.)
local kernelhost = require("kernelhost")
local H = require("helpers")
local E = kernelhost.KernelEvents

describe("bus", function()
  local f
  before_each(function() f = H.fixture() end)
  after_each(function() H.close(f) end)

  it("bus_subscribe_filters", function()
    local a, ka = H.create(f)
    local b, kb = H.create(f)
    local a_stream, a_all, b_result, any_status = {}, {}, {}, {}
    f.m:on_kernel_event(a, E.STREAM, function(d) a_stream[#a_stream + 1] = d end)
    f.m:on_kernel_event(a, E.ALL, function(e) a_all[#a_all + 1] = e end)
    f.m:on_kernel_event(b, E.EXECUTE_RESULT, function(d) b_result[#b_result + 1] = d end)
    f.m:on_kernel_event(nil, E.STATUS, function(d) any_status[#any_status + 1] = d end)
    local ra = H.exec(ka, "print('a'); 1")
    local rb = H.exec(kb, "print('b'); 2")
    assert.are.equal(1, #a_stream)
    assert.are.equal("a\n", a_stream[1].text)
    assert.are.equal(a, a_stream[1].kernel_id)
    assert.are.equal(ra.execution_id, a_stream[1].execution_id)
    assert.are.equal(4, #a_all) -- busy, stream, execute_result, idle: kernel a only
    for _, e in ipairs(a_all) do
      assert.are.equal(a, e.kernel_id)
      assert.are.equal(a, e.data.kernel_id)
    end
    assert.are.same({ "status", "stream", "execute_result", "status" },
                    { a_all[1].type, a_all[2].type, a_all[3].type, a_all[4].type })
    assert.are.equal(1, #b_result)
    assert.are.equal("2", b_result[1].data["text/plain"])
    assert.are.equal(rb.execution_id, b_result[1].execution_id)
    assert.are.equal(4, #any_status) -- busy + idle for each kernel
    -- unknown event names are misuse
    assert.has_error(function() f.m:on_kernel_event(a, "bogus", function() end) end)
  end)

  it("bus_unsubscribe_in_callback", function()
    local _, k = H.create(f)
    local calls, later, sub = 0, 0, nil
    sub = f.m:on_kernel_event(nil, E.STREAM, function()
      calls = calls + 1
      assert(f.m:off_kernel_event(sub))
    end)
    f.m:on_kernel_event(nil, E.STREAM, function() later = later + 1 end)
    local r = H.exec(k, "import sys\nprint('1'); sys.stdout.flush()\nprint('2', file=sys.stderr)")
    assert.are.equal(2, H.count(f, "stream", r.execution_id))
    assert.are.equal(1, calls)
    assert.are.equal(2, later) -- the other subscriber still sees everything
    local ok, _, code = f.m:off_kernel_event(sub)
    assert.is_nil(ok)
    assert.are.equal("KH_ENOTFOUND", code)
  end)

end)

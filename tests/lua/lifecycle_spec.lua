-- lifecycle_spec.lua: what needs code about a kernel's life, from Lua: destroy and close with
-- work in flight, ids, listing, namespaces, inactivity timeouts, and calls made from inside
-- callbacks. Restart, interrupts and the request queue are data: tests/cases/.
local kernelhost = require("kernelhost")
local H = require("helpers")
local statuses = H.statuses

describe("lifecycle", function()
  local f
  before_each(function() f = H.fixture() end)
  after_each(function() H.close(f) end)

  it("kernel_destroy_cancels", function()
    local id, k = H.create(f)
    local eid, running = H.start(f, k, "while True: pass")
    local _, queued = H.submit(k, "1")
    assert.are.equal(1, H.count(f, "status", eid)) -- busy
    assert.is_true(f.m:destroy_kernel(id))
    assert.is_true(running.done and queued.done)
    assert.are.equal(1, running.calls)
    assert.are.equal("KH_ECANCELED", running.code)
    assert.are.equal("KH_ECANCELED", queued.code)
    assert.are.equal("string", type(running.msg))
    assert.are.same({}, f.m:list_kernels())
    local r, _, code = k:execute("1")
    assert.is_nil(r)
    assert.are.equal("KH_ENOTFOUND", code)
  end)

  it("kernel_destroy_twice", function()
    local id = H.create(f)
    assert.is_true(f.m:destroy_kernel(id))
    local ok, msg, code = f.m:destroy_kernel(id)
    assert.is_nil(ok)
    assert.are.equal("string", type(msg))
    assert.are.equal("KH_ENOTFOUND", code)
  end)

  it("kernel_unknown_id", function()
    H.create(f)
    local k, msg, code = f.m:get_kernel("no-such-kernel")
    assert.is_nil(k)
    assert.are.equal("string", type(msg))
    assert.are.equal("KH_ENOTFOUND", code)
    assert.are.equal("KH_ENOTFOUND", select(3, f.m:destroy_kernel("no-such-kernel")))
    -- a kernel object outlives its kernel: its calls then fail the same way
    local id, kk = H.create(f)
    assert(f.m:destroy_kernel(id))
    assert.are.equal("KH_ENOTFOUND", select(3, kk:execute("1")))
    assert.are.equal("KH_ENOTFOUND", select(3, kk:submit("1", function() end)))
    assert.are.equal("KH_ENOTFOUND", select(3, kk:interrupt()))
    assert.are.equal("KH_ENOTFOUND", select(3, kk:restart()))
    assert.are.equal("KH_ENOTFOUND", select(3, kk:input_reply("x")))
  end)

  it("kernel_ids", function()
    local id, k = H.create(f, { id = "my-kernel.1" })
    assert.are.equal("my-kernel.1", id)
    assert.are.equal("my-kernel.1", k.id)
    assert.are.equal(H.mode(), k.mode)
    assert.are.equal(k, f.m:get_kernel(id)) -- one object per kernel
    local dup, _, code = f.m:create_kernel(H.opts({ id = "my-kernel.1" }))
    assert.is_nil(dup)
    assert.are.equal("KH_EEXIST", code)
    assert.are.equal("KH_EOPTION", select(3, f.m:create_kernel(H.opts({ id = "bad id/" }))))
    local a = H.create(f)
    local b = H.create(f)
    assert.are_not.equal(a, b)
    assert.is_true(#a > 0 and #b > 0)
  end)

  it("manager_list_namespace", function()
    local a = H.create(f, { namespace = "ws1" })
    local b = H.create(f, { namespace = "ws2" })
    local c = H.create(f)
    local all = f.m:list_kernels()
    assert.are.equal(3, #all)
    local ws1 = f.m:list_kernels("ws1")
    assert.are.equal(1, #ws1)
    local e = ws1[1]
    assert.are.equal(a, e.id)
    assert.are.equal(H.mode(), e.mode)
    assert.are.equal("ws1", e.namespace)
    assert.are.equal("idle", e.status)
    assert.are.equal("number", type(e.created))
    assert.are.equal(b, f.m:list_kernels("ws2")[1].id)
    assert.are.equal(c, f.m:list_kernels("default")[1].id)
    assert.are.same({}, f.m:list_kernels("nope"))
    -- one kernel's details, with its options
    local info = f.m:kernel_info(b)
    assert.are.equal(b, info.id)
    assert.are.equal("ws2", info.options.namespace)
    assert.are.equal(H.mode(), info.mode)
    local none, msg, code = f.m:kernel_info("nope")
    assert.is_nil(none)
    assert.are.equal("KH_ENOTFOUND", code)
  end)

  it("manager_destroy_all", function()
    H.create(f, { namespace = "ws1" })
    H.create(f, { namespace = "ws1" })
    local keep = H.create(f, { namespace = "ws2" })
    assert.are.equal(2, f.m:destroy_all("ws1"))
    local left = f.m:list_kernels()
    assert.are.equal(1, #left)
    assert.are.equal(keep, left[1].id)
    assert.are.equal(0, f.m:destroy_all("ws1"))
    H.create(f)
    assert.are.equal(2, f.m:destroy_all())
    assert.are.same({}, f.m:list_kernels())
  end)

  it("manager_close_cancels", function()
    local _, k = H.create(f)
    local _, k2 = H.create(f)
    local _, running = H.start(f, k, "while True: pass")
    local _, queued = H.submit(k, "1")
    local _, other = H.start(f, k2, "import time\ntime.sleep(60)")
    assert.is_true(f.m:close())
    for _, st in ipairs({ running, queued, other }) do
      assert.are.equal(1, st.calls)
      assert.is_nil(st.result)
      assert.are.equal("KH_ECANCELED", st.code)
    end
    assert.are.equal("KH_ECLOSED", select(3, f.m:list_kernels()))
    assert.are.equal("KH_ECLOSED", select(3, f.m:create_kernel(H.opts())))
    assert.are.equal("KH_ECLOSED", select(3, k:execute("1")))
    assert.is_true(f.m:close()) -- closing twice is harmless
  end)
  it("kernel_inactivity_timeout", function()
    local id, k = H.create(f, { inactivityTimeout = 50 })
    assert.are.equal("ok", H.exec(k, "1").status)
    -- an idle kernel is destroyed: it reports dead with the reason, then disappears
    H.wait(f, function() return #statuses(f, "dead", "") > 0 end, "the dead status")
    local dead = statuses(f, "dead", "")
    assert.are.equal(1, #dead)
    assert.are.equal(id, dead[1].kernel_id)
    assert.are.equal("inactivityTimeout", dead[1].data.reason.message)
    H.wait(f, function() return #f.m:list_kernels() == 0 end, "the kernel to go")
    f.m:run() -- nothing pending is left either
    local eid, msg, code = k:submit("1", function() error("never called") end)
    assert.is_nil(eid)
    assert.are.equal("string", type(msg))
    assert.are.equal("KH_ENOTFOUND", code)
    assert.are.equal("KH_ENOTFOUND", select(3, f.m:get_kernel(id)))
  end)

  it("kernel_inactivity_dead_is_final", function()
    -- the listener is there before the kernel: its 50 ms may run out before create returns
    local id, k = "inactivity-dead-final", nil
    local tried
    -- from the listener of the "dead" status, the kernel is already on its way out
    f.m:on_kernel_event(id, "status", function(d)
      if d.execution_state == "dead" then
        tried = { k:submit("1", function() error("never called") end) }
      end
    end)
    assert.are.equal(id, H.create(f, { id = id, inactivityTimeout = 50 }))
    k = f.m:get_kernel(id)
    H.wait(f, function() return tried ~= nil end, "the dead status")
    assert.is_nil(tried[1])
    assert.are.equal("KH_ECLOSED", tried[3])
    assert.is_nil(f.m:kernel_info(id))
  end)

  it("kernel_destroy_callback_sees_it_gone", function()
    -- The C test runs execute inside the destroy's completion callback. Lua has no such
    -- callback: destroy_kernel blocks until the destroy completed, and then the kernel is gone.
    local id, k = H.create(f)
    assert.is_true(f.m:destroy_kernel(id))
    local r, msg, code = k:execute("1")
    assert.is_nil(r)
    assert.are.equal("string", type(msg))
    assert.are.equal("KH_ENOTFOUND", code)
    assert.are.equal("KH_ENOTFOUND", select(3, k:interrupt()))
    assert.are.equal("KH_ENOTFOUND", select(3, f.m:get_kernel(id)))
    -- a destroy started inside a callback (where it cannot block) completes by the time the
    -- loop has nothing pending, and the kernel is gone the same way
    local id2, k2 = H.create(f)
    local inner
    local _, st = H.submit(k2, "1")
    f.m:on_kernel_event(id2, kernelhost.KernelEvents.EXECUTE_RESULT, function()
      inner = { f.m:destroy_kernel(id2) }
    end)
    H.wait(f, function() return st.done end, "the reply")
    assert.are.same({ true }, inner)
    f.m:run()
    assert.are.same({}, f.m:list_kernels())
    assert.are.equal("KH_ENOTFOUND", select(3, k2:execute("1")))
  end)

  it("kernel_restart_from_callback", function()
    local _, k = H.create(f)
    H.exec(k, "y = 1")
    -- Re-enter from inside a reply callback: start a new cell, then ask for a restart. Lua's
    -- restart blocks, and blocking calls are refused inside callbacks (KH_EBUSY); there is no
    -- non-blocking restart in the Lua API. So the callback submits, the restart is refused,
    -- and the host restarts right after the callback returned.
    local inner, first, b = {}, nil, nil
    assert(k:submit("2", function(r, msg, code)
      first = { result = r, msg = msg, code = code }
      local _, bst = H.submit(k, "while True: pass")
      b = bst
      inner.submit = bst.id
      inner.restart = { k:restart() }
    end))
    H.wait(f, function() return first ~= nil end, "the first reply")
    assert.are.equal("2", first.result.result.data["text/plain"])
    assert.are.equal("string", type(inner.submit))
    assert.is_nil(inner.restart[1])
    assert.are.equal("string", type(inner.restart[2]))
    assert.are.equal("KH_EBUSY", inner.restart[3])
    -- the cell submitted from the callback is queued or running; the restart cancels it and
    -- returns only once the kernel is back
    assert.is_false(b.done)
    H.wait(f, function() return H.count(f, "status", b.id) > 0 end, "the new cell to be busy")
    assert.are.equal("busy", H.events(f, "status", b.id)[1].data.execution_state)
    assert.is_true(k:restart())
    assert.is_true(b.done)
    assert.is_nil(b.result)
    assert.are.equal("KH_ECANCELED", b.code)
    -- the kernel is fresh and runs cells again
    assert.are.equal("False", H.exec(k, "'y' in globals()").result.data["text/plain"])
  end)
end)

-- lifecycle_spec.lua: the request queue, stop_on_error, restart, destroy, ids, listing,
-- namespaces and manager close, from Lua.
local H = require("helpers")

describe("lifecycle", function()
  local f
  before_each(function() f = H.fixture() end)
  after_each(function() H.close(f) end)

  it("kernel_queue_fifo", function()
    local _, k = H.create(f)
    local order, results = {}, {}
    for i = 1, 5 do
      assert(k:submit("seen = globals().get('seen', []) + [" .. i .. "]\nseen", function(r)
        order[#order + 1] = i
        results[i] = r
      end))
    end
    assert.are.same({}, order) -- submit never completes synchronously
    H.wait(f, function() return #order == 5 end, "five completions")
    assert.are.same({ 1, 2, 3, 4, 5 }, order)
    for i = 1, 5 do
      assert.are.equal(i, results[i].execution_count)
      local seen = {}
      for j = 1, i do seen[j] = tostring(j) end
      assert.are.equal("[" .. table.concat(seen, ", ") .. "]", results[i].result.data["text/plain"])
    end
  end)

  it("kernel_stop_on_error", function()
    local _, k = H.create(f)
    local _, s1 = H.submit(k, "raise ValueError('boom')")
    local _, s2 = H.submit(k, "ran = True")
    local _, s3 = H.submit(k, "ran = True")
    H.wait(f, function() return s3.done end, "third request")
    assert.are.equal("error", s1.result.status)
    assert.are.equal("ValueError", s1.result.error.ename)
    assert.are.equal("aborted", s2.result.status)
    assert.are.equal("aborted", s3.result.status)
    assert.are.equal("NameError", H.exec(k, "ran").error.ename)
    -- with stop_on_error = false the queue goes on
    _, s1 = H.submit(k, "raise ValueError('boom')", { stop_on_error = false })
    _, s2 = H.submit(k, "ran = True\nran")
    H.wait(f, function() return s2.done end, "second request")
    assert.are.equal("error", s1.result.status)
    assert.are.equal("ok", s2.result.status)
    assert.are.equal("True", s2.result.result.data["text/plain"])
  end)

  it("kernel_restart", function()
    local id, k = H.create(f)
    H.exec(k, "x = 1")
    assert.are.equal(2, H.exec(k, "x").execution_count)
    local _, queued = H.submit(k, "import time\nwhile True:\n    time.sleep(0.01)")
    local _, after = H.submit(k, "1")
    assert.is_true(k:restart())
    assert.is_true(queued.done and after.done)
    assert.is_nil(queued.result)
    assert.are.equal("KH_ECANCELED", queued.code)
    assert.are.equal("KH_ECANCELED", after.code)
    local r = H.exec(k, "x")
    assert.are.equal("NameError", r.error.ename) -- a fresh namespace
    assert.are.equal(1, r.execution_count)       -- and counter
    assert.are.equal(id, k.id)                   -- the same id
    local states = {}
    for _, e in ipairs(H.events(f, "status", "")) do
      states[#states + 1] = e.data.execution_state
    end
    assert.are.same({ "starting", "idle", "restarting", "starting", "idle" }, states)
  end)

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
end)

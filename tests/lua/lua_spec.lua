-- lua_spec.lua: what only the Lua binding does: event order during blocking calls, errors in
-- callbacks, fd/timeout embedding, submit completing in poll(), callback wrapper, __gc and
-- __close, misuse raising.
local kernelhost = require("kernelhost")
local khtest = require("khtest")
local H = require("helpers")
local E = kernelhost.KernelEvents

describe("lua host", function()
  local f
  before_each(function() f = H.fixture() end)
  after_each(function() H.close(f) end)

  it("lua_events_in_order_during_execute", function()
    local _, k = H.create(f)
    local seen = {}
    f.m:on_kernel_event(k.id, E.ALL, function(e) seen[#seen + 1] = e end)
    local r = H.exec(k, table.concat({
      "import sys",
      "for i in range(5):",
      "    print(i); sys.stdout.flush()",
      "    display(i)",
      "7",
    }, "\n"))
    -- every event reached the callback before execute returned, in the order of outputs
    assert.are.equal(#r.outputs, #seen)
    assert.is_true(#seen >= 13) -- busy, 5 x (stream, display), result, idle
    for i, o in ipairs(r.outputs) do
      assert.are.equal(o.type, seen[i].type)
      assert.are.same(o.data, seen[i].data)
    end
    local text = {}
    for _, e in ipairs(seen) do
      if e.type == "stream" then text[#text + 1] = e.data.text end
      if e.type == "display_data" then text[#text + 1] = "<" .. e.data.data["text/plain"] .. ">" end
    end
    assert.are.equal("0\n<0>1\n<1>2\n<2>3\n<3>4\n<4>", table.concat(text))
  end)

  it("lua_callback_error_does_not_lose_events", function()
    local _, k = H.create(f)
    local errors, got = {}, {}
    f.m:on_kernel_event(nil, "error", function(msg, info) errors[#errors + 1] = { msg, info } end)
    f.m:on_kernel_event(k.id, E.STREAM, function(d)
      got[#got + 1] = d.text
      if #got == 1 then error("callback failed on purpose") end
    end)
    local r = H.exec(k, "import sys\nfor i in range(3):\n    print(i); sys.stdout.flush()")
    assert.are.equal("ok", r.status)
    assert.are.same({ "0\n", "1\n", "2\n" }, got)
    assert.are.equal(1, #errors)
    assert.is_truthy(errors[1][1]:find("callback failed on purpose", 1, true))
    assert.is_truthy(errors[1][1]:find("traceback", 1, true))
    assert.are.equal(k.id, errors[1][2].kernel_id)
    assert.are.equal(r.execution_id, errors[1][2].execution_id)
    assert.are.equal("stream", errors[1][2].event)
    -- a submit callback that fails is reported the same way; later ones still run
    local after = false
    assert(k:submit("1", function() error({ "not a string" }) end))
    assert(k:submit("2", function() after = true end))
    H.wait(f, function() return after end, "the second submit")
    assert.are.equal(2, #errors)
    assert.are.equal("submit", errors[2][2].event)
  end)

  it("lua_fd_readable_on_completion", function()
    local _, k = H.create(f)
    local fd = f.m:fd()
    assert.are.equal("number", type(fd))
    assert.is_true(fd >= 0)
    f.m:poll(0)
    assert.are.equal(-1, f.m:timeout()) -- idle: no timer to wake up for
    assert.is_false(khtest.readable(fd, 0)) -- nothing to do, nothing readable
    local done
    assert(k:submit("import time\ntime.sleep(0.05)\n1 + 1", function(r) done = r end))
    -- drive the manager the way an embedding host does: wait on the fd, then poll(0)
    local wakeups = 0
    while not done do
      local t = f.m:timeout() -- a due timer (worker mode has some) also needs a poll(0)
      local ready = khtest.readable(fd, t < 0 and 60000 or t)
      assert.is_true(ready or t >= 0, "the fd never became readable")
      if ready then wakeups = wakeups + 1 end
      f.m:poll(0)
    end
    assert.is_true(wakeups >= 1)
    assert.are.equal("2", done.result.data["text/plain"])
  end)

  it("lua_submit_completes_in_poll", function()
    local _, k = H.create(f)
    local results = {}
    local eid = k:submit("21 * 2", function(r) results[#results + 1] = r end)
    assert.are.equal("string", type(eid))
    assert.are.equal(0, #results) -- never synchronous
    local total = 0
    while #results == 0 do total = total + f.m:poll(1000) end
    assert.is_true(total >= 1)
    assert.are.equal(1, #results)
    assert.are.equal(eid, results[1].execution_id)
    assert.are.equal("42", results[1].result.data["text/plain"])
    -- run() drives everything pending to completion
    for i = 1, 3 do k:submit(tostring(i), function(r) results[#results + 1] = r end) end
    assert.is_true(f.m:run() >= 3)
    assert.are.equal(4, #results)
    assert.are.equal(0, f.m:poll(0))
  end)

  it("lua_close_on_gc_and_close", function()
    -- __close: a to-be-closed manager closes at the end of its scope, cancelling its work
    local outer, st
    do
      local m <close> = assert(kernelhost.KernelManager.new())
      local g = { m = m, events = {} }
      m:on_kernel_event(nil, E.ALL, function(e) g.events[#g.events + 1] = e end)
      local id = assert(m:create_kernel(H.opts()))
      st = select(2, H.start(g, m:get_kernel(id), "while True: pass"))
      outer = m
    end
    assert.are.equal("KH_ECLOSED", select(3, outer:list_kernels()))
    assert.are.equal("KH_ECANCELED", st.code)
    -- a kernel object's __close destroys its kernel
    local kid
    do
      local k <close> = select(2, H.create(f))
      kid = k.id
    end
    assert.are.equal("KH_ENOTFOUND", select(3, f.m:get_kernel(kid)))
    -- __gc: an unreachable manager (with a kernel and a request in flight) is collected and
    -- closes; its callbacks are dropped, not called
    local weak = setmetatable({}, { __mode = "k" })
    local called = false
    do
      -- the recorder refers to its manager only through g: callbacks do not pin a manager
      local g = { m = assert(kernelhost.KernelManager.new()), events = {} }
      g.m:on_kernel_event(nil, E.ALL, function(e) g.events[#g.events + 1] = e end)
      local id = assert(g.m:create_kernel(H.opts()))
      local k = g.m:get_kernel(id)
      H.start(g, k, "import time\ntime.sleep(300)")
      k:submit("1", function() called = true end)
      weak[g.m] = true
    end
    collectgarbage()
    collectgarbage()
    assert.is_nil(next(weak))
    assert.is_false(called)
    -- and the process goes on
    local _, k = H.create(f)
    assert.are.equal("ok", H.exec(k, "1").status)
  end)

  it("lua_callback_wrapper", function()
    local _, k = H.create(f)
    local wrapped = 0
    kernelhost.set_callback_wrapper(function(fn, ...)
      wrapped = wrapped + 1
      return fn(...)
    end)
    local n = 0
    f.m:on_kernel_event(k.id, E.STREAM, function() n = n + 1 end)
    local done
    k:submit("print('x')", function(r) done = r end)
    H.wait(f, function() return done end)
    kernelhost.set_callback_wrapper(nil)
    assert.are.equal(1, n)
    assert.is_true(wrapped >= 3) -- the recorder, the stream callback and the submit callback
    local before = wrapped
    H.exec(k, "1")
    assert.are.equal(before, wrapped)
  end)

  it("lua_blocking_inside_callback_refused", function()
    local _, k = H.create(f)
    local inner
    f.m:on_kernel_event(k.id, E.EXECUTE_RESULT, function()
      if inner then return end
      inner = { k:execute("2") }
      inner.poll = { f.m:poll(0) }
      inner.submit = k:submit("3", function() end) -- non-blocking calls are fine
    end)
    H.exec(k, "1")
    assert.is_nil(inner[1])
    assert.are.equal("KH_EBUSY", inner[3])
    assert.are.equal("KH_EBUSY", inner.poll[3])
    assert.are.equal("string", type(inner.submit))
    f.m:run()
  end)

  it("lua_values_convert", function()
    local _, k = H.create(f)
    local r = H.exec(k, "import json\n{'n': None, 'l': [1, 2.5, 'x'], 'e': [], 'b': True}")
    assert.are.equal("ok", r.status)
    local d
    f.m:on_kernel_event(k.id, E.DISPLAY_DATA, function(x) d = x end)
    H.exec(k, "display({'a': [1, None]}, raw=False, metadata={'m': None})")
    assert.are.equal(kernelhost.null, d.metadata.m)
    assert.are.equal("table", type(kernelhost.KernelMode))
    assert.are.equal("main_thread", kernelhost.KernelMode.MAIN_THREAD)
    assert.are.equal("worker", kernelhost.KernelMode.WORKER)
    assert.are.equal("*", E.ALL)
    assert.are.equal("update_display_data", E.UPDATE_DISPLAY_DATA)
  end)
end)

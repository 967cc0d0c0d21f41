-- lua_spec.lua: what only the Lua binding does: event order during blocking calls, errors in
-- callbacks, fd/timeout embedding, submit completing in poll(), callback wrapper, __gc and
-- __close (close54.lua: Lua 5.4 only), misuse raising.
local kernelhost = require("kernelhost")
local khtest = require("khtest")
local H = require("helpers")
local P = require("proc")
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

  if _VERSION == "Lua 5.4" then
    it("lua_close_on_scope_exit", function()
      -- __close of a manager (closes it, cancelling its work) and of a kernel object (destroys
      -- its kernel): close54.lua, in the syntax only 5.4 parses
      require("close54")(f, assert)
    end)
  else
    -- `<close>` is Lua 5.4 syntax: a 5.1 host (LuaJIT) has manager:close(), kernel:destroy()
    -- and __gc instead, which lua_close_on_gc_and_close checks on every version.
    pending("lua_close_on_scope_exit needs Lua 5.4's <close>")
  end

  it("lua_close_on_gc_and_close", function()
    -- manager:close() cancels the work in flight and makes the manager refuse further calls
    do
      local g = H.fixture()
      local _, k = H.create(g)
      local st = select(2, H.start(g, k, "while True: pass"))
      assert(g.m:close())
      assert.are.equal("KH_ECLOSED", select(3, g.m:list_kernels()))
      assert.are.equal("KH_ECANCELED", st.code)
    end
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

  it("lua_host_process_untouched", function()
    -- The module is a guest in its host (Neovim, LÖVE): loading it, a main_thread kernel and a
    -- worker kernel leave the process's signal mask, ignored signals and caught signals as they
    -- were, but for SIGPIPE, which the core ignores when the host left it at its default (as
    -- CPython and Node do: a write to a worker that just died must fail, not kill the host), and
    -- two that are not the module's: SIGCHLD, which libuv catches while it has a
    -- child to reap (the worker; the host's libuv does the same for its own children, and Neovim
    -- and the module share Debian's libuv), and glibc's reserved signals 32 and 33, whose
    -- handler glibc installs when the process starts its first thread (a main_thread kernel's).
    -- Read from /proc/self/status in a child host, before require() and after each kernel ran.
    local kv, out = P.run_child({}, [[
      local function masks(tag)
        local fh = io.open("/proc/self/status")
        local s = fh:read("a")
        fh:close()
        for _, n in ipairs({ "SigBlk", "SigIgn", "SigCgt" }) do
          io.write(tag, n, "=", s:match(n .. ":%s*(%x+)"), "\n")
        end
      end
      masks("before_")
      local kernelhost = require("kernelhost")
      local m = assert(kernelhost.KernelManager.new())
      for _, mode in ipairs({ "main_thread", "worker" }) do
        local id = assert(m:create_kernel({ mode = mode }))
        local r = assert(m:get_kernel(id):execute("import signal\nsignal.getsignal(signal.SIGINT)"))
        io.write(mode, "_status=", r.status, "\n")
        masks(mode .. "_")
      end
      m:close()
      masks("closed_")
      io.write("done=yes\n")
    ]])
    assert.are.equal("yes", kv.done, out)
    assert.are.equal("ok", kv.main_thread_status)
    assert.are.equal("ok", kv.worker_status)
    -- a mask is 16 hex digits, signal n at bit n - 1
    local function without(hex, signals)
      local d = {}
      for i = 1, #hex do d[i] = tonumber(hex:sub(i, i), 16) end
      for _, n in ipairs(signals) do
        local i, v = #hex - math.floor((n - 1) / 4), 2 ^ ((n - 1) % 4)
        if math.floor(d[i] / v) % 2 == 1 then d[i] = d[i] - v end
      end
      for i = 1, #d do d[i] = ("%x"):format(d[i]) end
      return table.concat(d)
    end
    for _, n in ipairs({ "SigBlk", "SigIgn", "SigCgt" }) do
      local skip = n == "SigIgn" and { 13, 17, 32, 33 } or { 17, 32, 33 }
      local before = without(kv["before_" .. n], skip)
      assert.are.equal(16, #kv["before_" .. n])
      for _, tag in ipairs({ "main_thread_", "worker_", "closed_" }) do
        assert.are.equal(before, without(kv[tag .. n], skip), n .. " " .. tag)
      end
    end
    -- SIGPIPE (13) is ignored once a manager exists (it may have been before: an ignored signal
    -- is inherited, and busted's own managers ignored it in the parent of this child).
    local function bit(hex, sig) return without(hex, { sig }) ~= hex end
    assert.is_true(bit(kv.main_thread_SigIgn, 13))
  end)

  it("lua_values_big_integers", function()
    -- JSON integers beyond 2^53: exact integers on Lua 5.4; on Lua 5.1 (LuaJIT), whose numbers
    -- are doubles, the strings of their digits: never a silently rounded number
    local _, k = H.create(f)
    local d
    f.m:on_kernel_event(k.id, E.DISPLAY_DATA, function(x) d = x end)
    assert.are.equal("ok", H.exec(k, "display({'text/plain': 'x'}, raw=True, metadata={" ..
      "'small': 7, 'edge': 2**53, 'nedge': -2**53, 'big': 2**53 + 1, 'neg': -(2**62 + 1)})").status)
    local m = d.metadata
    assert.are.equal(7, m.small)
    assert.are.equal(2 ^ 53, m.edge) -- still exact as a double: a number on every version
    assert.are.equal(-(2 ^ 53), m.nedge)
    assert.are.equal("9007199254740993", tostring(m.big))
    assert.are.equal("-4611686018427387905", tostring(m.neg))
    if math.type then
      assert.are.equal("integer", math.type(m.big))
      assert.are.equal("integer", math.type(m.neg))
    else
      assert.are.equal("string", type(m.big))
      assert.are.equal("string", type(m.neg))
      assert.are.equal("number", type(m.edge))
    end
  end)
end)

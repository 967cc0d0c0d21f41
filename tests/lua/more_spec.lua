-- more_spec.lua: core behaviours ported from tests/c (test_api.c, test_execute.c,
-- test_lifecycle.c): manager options, write() semantics, repeated cells, idle interrupts,
-- inactivity timeouts, destroy with a swallowed interrupt, and re-entry from a callback.
-- Like the other specs these run in H.mode() (KH_TEST_MODE).
local kernelhost = require("kernelhost")
local H = require("helpers")

-- "name:text" of every stream event of exec_id, concatenated (tests/c/test_execute.c).
local function named_stream_text(f, exec_id)
  local parts = {}
  for _, e in ipairs(H.events(f, "stream", exec_id)) do
    parts[#parts + 1] = e.data.name .. ":" .. e.data.text
  end
  return table.concat(parts)
end

-- The kernel-level status events (execution id "") with this execution_state.
local function statuses(f, state, exec_id)
  local out = {}
  for _, e in ipairs(H.events(f, "status", exec_id)) do
    if e.data.execution_state == state then out[#out + 1] = e end
  end
  return out
end

describe("more", function()
  local f
  before_each(function() f = H.fixture() end)
  after_each(function() H.close(f) end)

  it("kernel_host_thread", function()
    -- thread "host": the cell runs on the host's thread, inside the blocking call
    local id, k = H.create(f, { mode = "main_thread", thread = "host" })
    local r = H.exec(k, "print('a')\nx = 2\nx * 21")
    assert.are.equal("ok", r.status)
    assert.are.equal("42", r.result.data["text/plain"])
    assert.are.equal("busy", r.outputs[1].data.execution_state)
    assert.are.equal("stream", r.outputs[2].type)
    assert.are.equal("a\n", H.stream_text(f, r.outputs[2].data.execution_id, "stdout"))
    assert.are.equal("3", H.exec(k, "x + 1").result.data["text/plain"])
    -- nothing can answer input() while the host thread runs the cell
    assert.are.equal("RuntimeError", H.exec(k, "input('? ')").error.ename)
    -- what needs a kernel thread is refused
    local none, msg, code = k:execute("1", { timeout = 100 })
    assert.is_nil(none)
    assert.are.equal("KH_ENOTSUP", code)
    none, msg, code = f.m:create_kernel{ mode = "worker", thread = "host" }
    assert.is_nil(none)
    assert.are.equal("KH_ENOTSUP", code)
    none, msg, code = f.m:create_kernel{ mode = "main_thread", thread = "host",
                                         max_execution_time = 100 }
    assert.are.equal("KH_ENOTSUP", code)
    none, msg, code = f.m:create_kernel{ mode = "main_thread", thread = "fast" }
    assert.are.equal("KH_EOPTION", code)
    -- restart gives a fresh namespace
    assert.is_true(k:restart())
    r = H.exec(k, "'x' in globals()")
    assert.are.equal("False", r.result.data["text/plain"])
    assert.are.equal(1, r.execution_count)
    assert.is_true(f.m:destroy_kernel(id))
  end)

  it("manager_bad_options", function()
    -- a known option of the wrong type: refused, and the message names it
    local m, msg, code = kernelhost.KernelManager.new({ maxCodeBytes = "big" })
    assert.is_nil(m)
    assert.are.equal("KH_EOPTION", code)
    assert.is_truthy(msg:find("maxCodeBytes", 1, true), msg)
    -- an unknown option
    m, msg, code = kernelhost.KernelManager.new({ bogus = 1 })
    assert.is_nil(m)
    assert.are.equal("string", type(msg))
    assert.are.equal("KH_EOPTION", code)
    -- kh_manager_new(&m, NULL, NULL) -> KH_EINVAL has no Lua form (the binding always brings
    -- its own loop); the Lua misuse is an options value that is not a table: it raises
    assert.has_error(function() kernelhost.KernelManager.new("maxCodeBytes") end)
    -- a failed new() leaves nothing behind: a good one still works
    local g = H.fixture({ maxCodeBytes = 1024 })
    local _, k = H.create(g)
    assert.are.equal("ok", H.exec(k, "1").status)
    H.close(g)
  end)

  it("stream_write_semantics", function()
    local _, k = H.create(f)
    local r = H.exec(k, table.concat({
      "import sys",
      "n = sys.stdout.write('abc')",
      "sys.stdout.write('')",
      "print('', n)",
      "try:\n    sys.stdout.write(b'x')\nexcept TypeError as e:\n    print('TypeError')",
      "sys.stdout.flush(); sys.stderr.writelines(['e1', 'e2\\n'])",
      "print(sys.stdout.isatty(), sys.stdout.encoding)",
    }, "\n") .. "\n")
    assert.are.equal("ok", r.status, r.error and r.error.evalue)
    assert.are.equal("stdout:abc 3\nTypeError\nstderr:e1e2\nstdout:False utf-8\n",
                     named_stream_text(f, r.execution_id))
  end)

  it("kernel_repeated_cell", function()
    local _, k = H.create(f)
    -- the same source again and again: each run is its own cell, with its own traceback name
    for i = 1, 3 do
      local r = H.exec(k, "n = globals().get('n', 0) + 1\n1 / (n - n)")
      assert.are.equal("error", r.status)
      assert.are.equal("ZeroDivisionError", r.error.ename)
      local frame = r.error.traceback[2]
      assert.are.equal("string", type(frame))
      assert.is_truthy(frame:find("<cell-" .. i .. ">", 1, true), frame)
    end
    assert.are.equal("3", H.exec(k, "n").result.data["text/plain"])
  end)

  it("kernel_interrupt_idle", function()
    local _, k = H.create(f)
    assert.is_true(k:interrupt()) -- nothing runs: a no-op, as in Jupyter
    local r = H.exec(k, "1")
    assert.are.equal("ok", r.status)
    assert.are.equal("1", r.result.data["text/plain"])
    assert.are.equal(0, #statuses(f, "restarting", "")) -- and nothing was restarted
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
    local id, k = H.create(f, { inactivityTimeout = 50 })
    local tried
    -- from the listener of the "dead" status, the kernel is already on its way out
    f.m:on_kernel_event(id, "status", function(d)
      if d.execution_state == "dead" then
        tried = { k:submit("1", function() error("never called") end) }
      end
    end)
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

  it("kernel_destroy_swallowed_interrupt", function()
    local g = H.fixture({ interruptGraceMs = 100 })
    local id, k = H.create(g)
    -- the cell swallows the first KeyboardInterrupt; destroy keeps interrupting until it ends
    local _, st = H.start(g, k, table.concat({
      "import time",
      "n = 0",
      "while n < 2:",
      "    try:",
      "        time.sleep(100)",
      "    except KeyboardInterrupt:",
      "        n += 1",
    }, "\n"))
    assert.is_true(g.m:destroy_kernel(id))
    assert.is_true(st.done)
    assert.are.equal(1, st.calls)
    assert.is_nil(st.result)
    assert.are.equal("KH_ECANCELED", st.code)
    assert.are.same({}, g.m:list_kernels())
    H.close(g)
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

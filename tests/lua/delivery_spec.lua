-- delivery_spec.lua: when callbacks run, from Lua (tests/c's delivery_* tests): never inside the
-- non-blocking call that caused them, and a request retried from the callback of one that
-- failed (after a timeout, a crash with auto_restart, a restart) runs. Blocking calls pump
-- events by design, so the calls under test here are the non-blocking ones: submit,
-- kernel:restart(fn) and manager:destroy_kernel(id, fn). Each sets flag.returned right after it
-- returns; every callback records whether the flag was already set.
local kernelhost = require("kernelhost")
local H = require("helpers")

-- Submits "1+1" from wherever it is called (a callback); the state fills in when it completes,
-- or at once when submit itself fails (then its callback must never run: calls stays 0).
local function retry(k)
  local st = { calls = 0 }
  local eid, msg, code = k:submit("1+1", function(r, m, c)
    st.calls = st.calls + 1
    st.done, st.result, st.msg, st.code = true, r, m, c
  end)
  if not eid then st.refused, st.done, st.msg, st.code = true, true, msg, code end
  return st
end

-- Submits code; when its callback runs, it records the outcome, whether flag.returned was
-- already set, and a retry of "1+1" submitted from inside it.
local function submit_then_retry(k, code, flag, opts)
  local st = { calls = 0 }
  local eid, msg, err = k:submit(code, opts, function(r, m, c)
    st.calls = st.calls + 1
    st.result, st.msg, st.code = r, m, c
    st.after_return = flag.returned
    st.retry = retry(k)
  end)
  assert(eid, ("submit(%s): %s: %s"):format(code, tostring(err), tostring(msg)))
  st.id = eid
  return st
end

-- As submit_then_retry, and waits until the cell runs (its first statement prints a marker).
local function start_then_retry(f, k, code, flag)
  local st = submit_then_retry(k, "print('<started>', flush=True)\n" .. code, flag)
  H.wait(f, function()
    return H.stream_text(f, st.id, "stdout"):find("<started>", 1, true) ~= nil
  end, "the cell to start")
  return st
end

local function wait_retry(f, st)
  H.wait(f, function() return st.retry ~= nil and st.retry.done end, "the retry")
end

local function assert_retry_ran(st)
  local r = st.retry
  assert.is_nil(r.refused, r.msg)
  assert(r.result, ("the retry failed: %s: %s"):format(tostring(r.code), tostring(r.msg)))
  assert.are.equal(1, r.calls)
  assert.are.equal("ok", r.result.status)
  assert.are.equal("2", r.result.result.data["text/plain"])
end

-- Starts a running and a queued request on k, then stop(cb): a restart or destroy whose
-- callback runs once it is done. Checks that both requests were canceled exactly once, after
-- stop() returned, before the completion; returns their states.
local function cancel_two(f, k, stop)
  local flag, done = {}, nil
  local running = start_then_retry(f, k, "while True: pass", flag)
  local queued = submit_then_retry(k, "1", flag)
  assert.is_true(stop(function(ok, msg, code)
    done = { ok = ok, msg = msg, code = code, cancels_seen = running.calls + queued.calls }
  end))
  flag.returned = true
  H.wait(f, function() return done ~= nil end, "the completion")
  assert.is_true(done.ok, done.msg)
  assert.are.equal(2, done.cancels_seen) -- in the order they happened
  for _, st in ipairs({ running, queued }) do
    assert.are.equal(1, st.calls)
    assert.is_true(st.after_return)
    assert.is_nil(st.result)
    assert.are.equal("KH_ECANCELED", st.code)
  end
  return running, queued
end

describe("delivery", function()
  local f
  before_each(function() f = H.fixture() end)
  after_each(function() H.close(f) end)

  it("delivery_retry_after_timeout", function()
    -- A short grace: in worker mode the cell ignores SIGINT, so the timeout's interrupt never
    -- lands and the worker is killed and restarted (KH_EKERNELDEAD); in main_thread mode the
    -- interrupt lands (a KeyboardInterrupt reply). Either way the retry must run.
    local g = H.fixture({ interrupt_grace_ms = 100 })
    local _, k = H.create(g)
    local slow = H.mode() == "worker"
        and "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(100)"
        or "import time\ntime.sleep(100)"
    local st = submit_then_retry(k, slow, {}, { timeout = 100 })
    wait_retry(g, st)
    assert.are.equal(1, st.calls)
    if H.mode() == "worker" then
      assert.is_nil(st.result)
      assert.are.equal("KH_EKERNELDEAD", st.code)
    else
      assert.are.equal("error", st.result.status)
      assert.are.equal("KeyboardInterrupt", st.result.error.ename)
    end
    assert_retry_ran(st)
    H.close(g)
  end)

  it("delivery_retry_after_crash_autorestart", function()
    -- Worker mode whatever KH_TEST_MODE says: only a worker can crash and come back.
    local id = assert(f.m:create_kernel({ mode = "worker", auto_restart = true }))
    local k = f.m:get_kernel(id)
    for _, crash in ipairs({ "import os\nos._exit(3)", "import ctypes\nctypes.string_at(0)" }) do
      local st = submit_then_retry(k, crash, {})
      wait_retry(f, st)
      assert.are.equal(1, st.calls)
      assert.is_nil(st.result)
      assert.are.equal("KH_EKERNELDEAD", st.code)
      assert_retry_ran(st)
    end
  end)

  it("delivery_retry_after_restart", function()
    local _, k = H.create(f)
    local running, queued = cancel_two(f, k, function(cb) return k:restart(cb) end)
    for _, st in ipairs({ running, queued }) do
      wait_retry(f, st)
      assert_retry_ran(st)
    end
  end)

  it("delivery_callbacks_after_destroy", function()
    local id, k = H.create(f)
    local running, queued = cancel_two(f, k, function(cb) return f.m:destroy_kernel(id, cb) end)
    for _, st in ipairs({ running, queued }) do
      -- a retry on a kernel being destroyed is refused by submit itself, callback never runs
      assert.is_true(st.retry.refused)
      -- still closing: the core releases a kernel only behind the deliveries queued before
      assert.are.equal("KH_ECLOSED", st.retry.code)
      assert.are.equal(0, st.retry.calls)
    end
    assert.are.same({}, f.m:list_kernels())
    -- a destroy that fails at once never calls its callback
    local calls = 0
    local ok, msg, code = f.m:destroy_kernel(id, function() calls = calls + 1 end)
    assert.is_nil(ok)
    assert.are.equal("string", type(msg))
    assert.are.equal("KH_ENOTFOUND", code)
    f.m:run()
    assert.are.equal(0, calls)

    -- Inside a callback, destroy_kernel(id) without a callback only starts: its cancellations
    -- too arrive after it returned, not nested in the callback that called it.
    local id2, k2 = H.create(f)
    local flag2 = {}
    local running2 = submit_then_retry(k2, "print('<started>', flush=True)\nwhile True: pass", flag2)
    local inner
    f.m:on_kernel_event(id2, kernelhost.KernelEvents.STREAM, function(d)
      if inner == nil and d.execution_id == running2.id and d.text:find("<started>", 1, true) then
        inner = { f.m:destroy_kernel(id2) }
        flag2.returned = true
      end
    end)
    H.wait(f, function() return running2.calls == 1 end, "the canceled cell")
    assert.are.same({ true }, inner)
    assert.is_true(running2.after_return)
    assert.are.equal("KH_ECANCELED", running2.code)
    f.m:run()
    assert.are.same({}, f.m:list_kernels())
  end)

  it("delivery_busy_not_inside_execute", function()
    local id, k = H.create(f)
    -- returned[eid]: submit() of that request has returned (its id is known only then).
    local returned, busy = {}, {}
    f.m:on_kernel_event(id, kernelhost.KernelEvents.STATUS, function(d)
      if d.execution_state == "busy" then
        busy[#busy + 1] = { id = d.execution_id, after_return = returned[d.execution_id] == true }
      end
    end)
    local eid = H.submit(k, "1")
    returned[eid] = true
    H.wait(f, function() return #busy == 1 end, "the busy status")
    assert.are.equal(eid, busy[1].id)
    -- From inside a reply callback too, where the kernel is idle and starts the request at
    -- once: its busy status waits until the callback's submit() returned.
    local inner = {}
    local eid2 = assert(k:submit("2", function()
      inner.id = assert(k:submit("3", function() inner.done = true end))
      returned[inner.id] = true
    end))
    returned[eid2] = true
    H.wait(f, function() return inner.done end, "the request submitted from a callback")
    assert.are.equal(3, #busy)
    assert.are.equal(inner.id, busy[3].id)
    for _, b in ipairs(busy) do assert.is_true(b.after_return, b.id) end
  end)
end)

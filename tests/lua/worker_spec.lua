-- worker_spec.lua: worker-only behaviour from Lua that needs code (tests/c/test_worker.c):
-- interrupts that land in the same process, kill escalation, auto restart, no orphans,
-- create/destroy hygiene, limits, env/cwd, restart, the pool and a missing worker. Deaths and
-- fd-level output are data: tests/cases/worker.json. These specs choose worker mode themselves,
-- whatever KH_TEST_MODE says.
--
-- The Lua binding has no kernel:info() (the C tests read pid and pooled from kh_kernel_info;
-- Node has kernel.info()). Here the worker's pid comes from the kernel itself (os.getpid()
-- in a cell that stores no history), and "pooled" from whether that pid was already a child
-- of this process before create_kernel was called.
local kernelhost = require("kernelhost")
local H = require("helpers")
local P = require("proc")

local wopts, wcreate = H.worker_opts, H.create_worker

-- The worker's pid, asked of the kernel; the cell leaves no name and no history behind.
local function kernel_pid(k)
  local r = H.exec(k, "__import__('os').getpid()", { store_history = false })
  assert.are.equal("ok", r.status)
  local pid = tonumber(r.result.data["text/plain"])
  assert.is_true(pid ~= nil and pid > 0)
  return pid
end

local status_events = H.statuses

local function count_status(f, state, exec_id) return #status_events(f, state, exec_id) end

local function wait_status_n(f, state, n)
  H.wait(f, function() return count_status(f, state) >= n end,
         ("%d %s statuses"):format(n, state))
end

describe("worker", function()
  local f
  before_each(function() f = H.fixture() end)
  after_each(function() H.close(f) end)

  it("worker_interrupt_sleep", function()
    local _, k = wcreate(f)
    local pid = kernel_pid(k)
    -- The marker comes from a second thread once the cell's frame is on its sleep line, so
    -- the interrupt cannot land in the marker's own print (a print that says "sleeping" would
    -- also put "sleep" into the traceback, whatever was interrupted).
    local eid, st = H.submit(k, table.concat({
      "import sys, threading, time",
      "me = threading.get_ident()",
      "def announce():",
      "    while True:",
      "        fr = sys._current_frames().get(me)",
      "        if fr is not None and fr.f_code.co_filename.startswith('<cell-') and fr.f_lineno == 10:",
      "            break",
      "        time.sleep(0.001)",
      "    print('<in-call>', flush=True)",
      "threading.Thread(target=announce, daemon=True).start(); time.sleep(100)",
    }, "\n"))
    H.wait(f, function() return H.stream_text(f, eid, "stdout"):find("<in-call>", 1, true) end,
           "the cell to sleep")
    assert.is_true(k:interrupt())
    H.wait(f, function() return st.done end, "the interrupted reply")
    assert(st.result, st.msg)
    assert.are.equal("error", st.result.status)
    assert.are.equal("KeyboardInterrupt", st.result.error.ename)
    -- the innermost cell frame is the sleep
    local tb, at = st.result.error.traceback, nil
    for i, line in ipairs(tb) do
      if line:find('File "<cell-', 1, true) then at = i end
    end
    assert.is_not_nil(at, table.concat(tb, "\n"))
    assert.is_truthy((tb[at + 1] or ""):find("time.sleep(100)", 1, true), table.concat(tb, "\n"))
    -- the same process carries on
    assert.are.equal("'still here'", H.exec(k, "'still here'").result.data["text/plain"])
    assert.are.equal(pid, kernel_pid(k))
    assert.are.equal(0, count_status(f, "restarting"))
  end)

  it("worker_kill_escalation", function()
    local g = H.fixture({ interruptGraceMs = 300 })
    local _, k = wcreate(g)
    local pid = kernel_pid(k)
    -- interrupt once the cell ignores SIGINT
    local _, st = H.start(g, k, "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n" ..
                                "print('ignoring', flush=True)\nwhile True:\n    pass")
    H.wait(g, function() return H.stream_text(g, st.id, "stdout"):find("ignoring", 1, true) end,
           "SIGINT to be ignored")
    assert.is_true(k:interrupt())
    H.wait(g, function() return st.done end, "the reply")
    assert.is_nil(st.result)
    assert.are.equal("KH_EKERNELDEAD", st.code)
    local e = status_events(g, "restarting")[1]
    assert.is_not_nil(e)
    assert.are.equal(st.id, e.execution_id)
    assert.are.equal("interrupt_timeout", e.data.reason.cause)
    wait_status_n(g, "idle", 2) -- created, restarted
    local r = H.exec(k, "1 + 1")
    assert.are.equal("2", r.result.data["text/plain"])
    assert.are.equal(1, r.execution_count)
    assert.are_not.equal(pid, kernel_pid(k))
    P.wait_pid_gone(g, pid, "the killed worker")
    H.close(g)
  end)

  it("worker_auto_restart", function()
    local _, k = wcreate(f, { autoRestart = true, env = { KH_AUTO = "yes" } })
    local pid = kernel_pid(k)
    local _, st = H.submit(k, "import os\nos._exit(3)")
    H.wait(f, function() return st.done end, "the reply")
    assert.is_nil(st.result)
    assert.are.equal("KH_EKERNELDEAD", st.code)
    assert.are.equal(1, count_status(f, "dead", st.id))
    assert.are.equal(1, count_status(f, "restarting"))
    wait_status_n(f, "idle", 2)
    local r = H.exec(k, "import os\nos.environ['KH_AUTO']")
    assert.are.equal("'yes'", r.result.data["text/plain"])
    assert.are_not.equal(pid, kernel_pid(k))
  end)

  -- A child host runs a kernel and is SIGKILLed: its worker must exit too.
  it("worker_no_orphan_after_host_sigkill", function()
    local path = P.script([[
      local kernelhost = require("kernelhost")
      local m = assert(kernelhost.KernelManager.new())
      local id = assert(m:create_kernel({ mode = "worker" }))
      local r = assert(m:get_kernel(id):execute("__import__('os').getpid()"))
      local me = io.open("/proc/self/stat"):read("l"):match("^(%d+)")
      io.write("host=", me, "\nworker=", r.result.data["text/plain"], "\n")
      io.flush()
      while true do m:poll(60000) end -- until killed
    ]])
    local child = assert(P.popen("exec " .. P.LUA .. " " .. P.quote(path)))
    local host = tonumber((child:read("l") or ""):match("^host=(%d+)$"))
    local worker = tonumber((child:read("l") or ""):match("^worker=(%d+)$"))
    assert.is_not_nil(host)
    assert.is_not_nil(worker)
    assert.is_true(P.alive(worker))
    assert.is_true(P.execute("kill -9 " .. host))
    local ok, how, sig = child:close() -- waits for the host
    os.remove(path)
    assert.is_nil(ok)
    assert.are.equal("signal", how)
    assert.are.equal(9, sig)
    P.wait_pid_gone(f, worker, "the orphaned worker")
  end)

  it("worker_create_destroy_cycles", function()
    local CYCLES = 200
    -- Destroying a kernel while it starts: from inside its "starting" status callback (a
    -- blocking create_kernel cannot be interrupted otherwise), where destroy only starts.
    local cancel_next, cancelled = false, nil
    f.m:on_kernel_event(nil, kernelhost.KernelEvents.STATUS, function(d)
      if cancel_next and d.execution_state == "starting" then
        cancel_next = false
        cancelled = { f.m:destroy_kernel(d.kernel_id) }
      end
    end)
    -- One cycle first, so that lazily created state is in the baseline.
    local id = wcreate(f)
    assert.is_true(f.m:destroy_kernel(id))
    collectgarbage()
    local fds, threads = P.fd_list(), P.thread_count()
    local _, children = P.children()
    local rss
    for i = 0, CYCLES - 1 do
      if i % 10 == 0 then
        local kid, k = wcreate(f)
        assert.are.equal("2", H.exec(k, "1 + 1").result.data["text/plain"])
        assert.is_true(f.m:destroy_kernel(kid))
      else
        -- destroyed while starting: the create fails with KH_ECANCELED
        cancel_next, cancelled = true, nil
        local kid, msg, code = f.m:create_kernel(wopts())
        assert.is_nil(kid)
        assert.are.equal("string", type(msg))
        assert.are.equal("KH_ECANCELED", code)
        assert.are.same({ true }, cancelled)
      end
      f.events = {} -- keep the fixture's event log bounded
      if i == CYCLES / 10 then
        collectgarbage()
        rss = P.rss_kb()
      end
    end
    f.m:run()
    -- every worker reaped: run the loop (where the exits are seen) until the children are back
    -- to the baseline; leaked children keep this waiting until the watchdog fails the spec
    P.wait_until(f, function() return select(2, P.children()) <= children end, "workers reaped")
    collectgarbage()
    assert.are.same(fds, P.fd_list())
    assert.are.equal(threads, P.thread_count())
    assert.are.equal(children, select(2, P.children()))
    assert.are.same({}, f.m:list_kernels())
    -- memory: flat after warm-up, within allocator noise
    assert.is_true(P.rss_kb() - rss < 8192, ("RSS grew %d kB"):format(P.rss_kb() - rss))
  end)

  it("worker_max_execution_time", function()
    local g = H.fixture({ interruptGraceMs = 300 })
    local _, k = wcreate(g, { maxExecutionTime = 200 })
    local pid = kernel_pid(k)
    -- an interrupt that lands: KeyboardInterrupt, same process
    local r = H.exec(k, "import time\ntime.sleep(100)")
    assert.are.equal("error", r.status)
    assert.are.equal("KeyboardInterrupt", r.error.ename)
    assert.are.equal(pid, kernel_pid(k))
    -- one that does not: killed and restarted, with a status saying so
    local idle = count_status(g, "idle")
    local _, st = H.submit(k, "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n" ..
                              "while True:\n    pass")
    H.wait(g, function() return st.done end, "the reply")
    assert.is_nil(st.result)
    assert.are.equal("KH_EKERNELDEAD", st.code)
    assert.are.equal(1, count_status(g, "restarting", st.id))
    wait_status_n(g, "idle", idle + 1)
    assert.are.equal("'alive'", H.exec(k, "'alive'").result.data["text/plain"])
    assert.are_not.equal(pid, kernel_pid(k))
    H.close(g)
  end)

  it("worker_inactivity_timeout", function()
    local id, k = wcreate(f, { inactivityTimeout = 300 })
    local pid = kernel_pid(k)
    -- busy for longer than the timeout: never destroyed while busy
    assert.are.equal("'done'", H.exec(k, "import time\ntime.sleep(0.6)\n'done'")
                                 .result.data["text/plain"])
    H.wait(f, function() return #f.m:list_kernels() == 0 end, "the idle kernel to go")
    assert.are.equal("KH_ENOTFOUND", select(3, f.m:get_kernel(id)))
    -- and its process is gone (reaped on the loop)
    P.wait_pid_gone(f, pid, "the timed-out worker")
  end)

  it("worker_env_and_cwd", function()
    local _, k = wcreate(f, { env = { KH_TEST_VAR = "v1" }, cwd = "/tmp" })
    local r = H.exec(k, "import os\nos.system('echo $KH_TEST_VAR')\n" ..
                        "(os.environ['KH_TEST_VAR'], os.getcwd())")
    assert.are.equal("('v1', '/tmp')", r.result.data["text/plain"])
    assert.are.equal("v1\n", H.stream_text(f, r.execution_id))
    -- the host's own environment is untouched
    assert.is_nil(os.getenv("KH_TEST_VAR"))
    -- a cwd that does not exist fails creation with a clear error
    local id, msg, code = f.m:create_kernel(wopts({ cwd = "/nonexistent/kh" }))
    assert.is_nil(id)
    assert.are.equal("string", type(msg))
    assert.are.equal("KH_EWORKER", code)
    assert.are.equal(1, #f.m:list_kernels())
  end)

  it("worker_restart_fresh_process", function()
    local _, k = wcreate(f, { env = { KH_TEST_VAR = "v2" } })
    local pid = kernel_pid(k)
    H.exec(k, "x = 1")
    assert.is_true(k:restart())
    local r = H.exec(k, "import os\n('x' in dir(), os.environ['KH_TEST_VAR'])")
    assert.are.equal("(False, 'v2')", r.result.data["text/plain"])
    assert.are.equal(1, r.execution_count)
    assert.are_not.equal(pid, kernel_pid(k))
    P.wait_pid_gone(f, pid, "the old worker")
  end)

  it("worker_pool_claim", function()
    local g = H.fixture({ pool = { size = 1 } })
    -- A pooled worker serves any option set: env and cwd are applied when it is claimed.
    local before = P.children()
    local _, a = wcreate(g, { env = { KH_POOL = "a" }, cwd = "/tmp" })
    local pa = kernel_pid(a)
    assert.is_true(before[pa] == true, "kernel a is not the pooled worker")
    assert.are.equal("('a', '/tmp')",
                     H.exec(a, "import os\n(os.environ['KH_POOL'], os.getcwd())")
                       .result.data["text/plain"])
    -- Loader variables need a fresh process.
    before = P.children()
    local _, b = wcreate(g, { env = { LD_KH_TEST = "1" } })
    assert.is_nil(before[kernel_pid(b)], "kernel b came from the pool")
    assert.are.equal("'1'", H.exec(b, "import os\nos.environ['LD_KH_TEST']")
                              .result.data["text/plain"])
    -- The pool was refilled after the first claim.
    before = P.children()
    local _, c = wcreate(g)
    local pc = kernel_pid(c)
    assert.is_true(before[pc] == true, "kernel c is not a pooled worker")
    assert.are_not.equal(pa, pc)
    local r = H.exec(c, "import os\nos.environ.get('KH_POOL')")
    assert.are.equal("ok", r.status)
    assert.is_nil(r.result) -- None: nothing leaked from kernel a
    H.close(g)
  end)

  it("worker_missing_executable", function()
    for _, path in ipairs({ "/nonexistent/kernelhost-worker", "/bin/false" }) do
      local g = H.fixture({ workerPath = path })
      local id, msg, code = g.m:create_kernel(wopts())
      assert.is_nil(id)
      assert.are.equal("string", type(msg))
      assert.are.equal("KH_EWORKER", code, path)
      assert.are.same({}, g.m:list_kernels())
      H.close(g)
    end
    -- KH_WORKER_PATH is honoured too: Lua cannot setenv, so a child host runs with it.
    local kv, out = P.run_child({ KH_WORKER_PATH = "/nonexistent/kh-worker-env" }, [[
      local kernelhost = require("kernelhost")
      local m = assert(kernelhost.KernelManager.new())
      local id, msg, code = m:create_kernel({ mode = "worker" })
      print("id=" .. tostring(id))
      print("code=" .. tostring(code))
      print("count=" .. #m:list_kernels())
      m:close()
    ]])
    assert.are.equal("nil", kv.id, out)
    assert.are.equal("KH_EWORKER", kv.code, out)
    assert.are.equal("0", kv.count, out)
  end)
end)

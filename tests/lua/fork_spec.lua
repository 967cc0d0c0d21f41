-- fork_spec.lua: the fork server from Lua (tests/c/test_fork.c): manager option pool.mode
-- "fork", manager:pool_ready(), kernels forked from the template (kernel_info origin "fork"),
-- a preload that fails, a template that dies, and a manager with no pool. Worker mode always,
-- whatever KH_TEST_MODE says; what only the core's processes do is C's (tests/layer_names.txt).
local H = require("helpers")
local P = require("proc")

-- The parent pid and the process group of pid, from /proc.
local function ppid_pgrp(pid)
  local s = assert(P.read_file("/proc/" .. pid .. "/stat"), "no process " .. pid)
  local ppid, pgrp = s:match("%) %S (%d+) (%d+)")
  return tonumber(ppid), tonumber(pgrp)
end

local function info(f, id) return assert(f.m:kernel_info(id)) end

local function kpid(f, id)
  local pid = info(f, id).pid
  assert.is_true(type(pid) == "number" and pid > 0)
  return pid
end

-- The pool's info once it is ready; fails the spec otherwise.
local function pool_ready_ok(f)
  local pi, msg, code = f.m:pool_ready()
  assert(pi, ("pool not ready: %s: %s"):format(tostring(code), tostring(msg)))
  assert.are.equal("ready", pi.state)
  return pi
end

-- The text/plain result of a cell.
local function eval(k, code)
  local r = H.exec(k, code)
  assert(r.result and r.result.data and r.result.data["text/plain"],
         ("no result for %s: %s"):format(code, tostring(r.error and r.error.evalue)))
  return r.result.data["text/plain"]
end

local function create(f)
  local id, k = H.create_worker(f)
  return id, k
end

describe("fork", function()
  local f
  after_each(function() H.close(f) end)

  it("fork_kernel_from_template", function()
    f = H.fixture({ pool = { mode = "fork", preload = { "json", "email.mime.text" } } })
    local pi = pool_ready_ok(f)
    local tpid = pi.pid
    assert.is_true(type(tpid) == "number" and tpid > 0)
    assert.are.equal("fork", pi.mode)
    local a, ka = create(f)
    local b, kb = create(f)
    assert.are.equal("fork", info(f, a).origin)
    assert.are.equal("fork", info(f, b).origin)
    -- The host's children (CLONE_PARENT), not the template's; each in its own process group.
    local pa = kpid(f, a)
    local ppid, pgrp = ppid_pgrp(pa)
    assert.are.equal(P.self_pid(), ppid)
    assert.are.equal(pa, pgrp)
    assert.is_true(pa ~= kpid(f, b) and pa ~= tpid)
    -- The preload is imported already; the kernels are separate processes.
    assert.are.equal("True", eval(ka, "import sys\n'email.mime.text' in sys.modules"))
    assert.are.equal("42", eval(ka, "x = 41\nx + 1"))
    assert.are.equal("False", eval(kb, "'x' in globals()"))
    assert.are.equal("True", eval(kb, "import os\nos.getpid() != os.getppid()"))
    local eid, st = H.submit(ka, "import time\nprint('sleeping', flush=True)\ntime.sleep(100)")
    H.wait(f, function() return H.stream_text(f, eid, "stdout"):find("sleeping", 1, true) end,
           "the cell to sleep")
    assert.is_true(ka:interrupt())
    H.wait(f, function() return st.done end, "the interrupted cell")
    assert.are.equal("KeyboardInterrupt", st.result.error.ename)
    assert.are.equal("41", eval(ka, "x"))
  end)

  it("fork_restart_from_template", function()
    f = H.fixture({ pool = { mode = "fork", size = 0 } })
    pool_ready_ok(f)
    local a, k = create(f)
    assert.are.equal("fork", info(f, a).origin)
    local before = kpid(f, a)
    assert.are.equal("1", eval(k, "y = 1\ny"))
    assert(k:restart())
    assert.are.equal("fork", info(f, a).origin)
    local after = kpid(f, a)
    assert.are_not.equal(before, after)
    assert.are.equal(P.self_pid(), (ppid_pgrp(after)))
    assert.are.equal("False", eval(k, "'y' in globals()"))
  end)

  it("fork_preload_error_names_module", function()
    f = H.fixture({ pool = { mode = "fork", preload = { "json", "kh_no_such_module" } } })
    local pi, msg, code = f.m:pool_ready()
    assert.is_nil(pi)
    assert.are.equal("KH_EOPTION", code)
    assert.is_truthy(msg:find("kh_no_such_module", 1, true))
    -- Kernels on this manager fail with the same error, at creation.
    local id, cmsg, ccode = f.m:create_kernel(H.worker_opts())
    assert.is_nil(id)
    assert.are.equal("KH_EOPTION", ccode)
    assert.is_truthy(cmsg:find("kh_no_such_module", 1, true))
  end)

  it("fork_template_death_restarts", function()
    f = H.fixture({ pool = { mode = "fork", size = 0 } })
    local tpid = pool_ready_ok(f).pid
    local a, ka = create(f)
    assert.are.equal("fork", info(f, a).origin)
    P.sh("kill -KILL " .. tpid)
    -- The kernel made by the dead template lives on (it is the host's child).
    assert.are.equal("2", eval(ka, "1 + 1"))
    -- Meanwhile kernels start cold or from the restarted template; then it is back.
    local _, kb = create(f)
    assert.are.equal("4", eval(kb, "2 + 2"))
    local pi, msg, code = f.m:pool_ready()
    assert(pi, ("pool_ready: %s: %s"):format(tostring(code), tostring(msg)))
    assert.are.equal("ready", pi.state)
    assert.is_true(pi.restarts >= 1)
    assert.is_truthy(pi.last_exit:find("SIGKILL", 1, true))
    assert.are_not.equal(tpid, pi.pid)
    local c, kc = create(f)
    assert.are.equal("fork", info(f, c).origin)
    assert.are.equal("6", eval(kc, "3 + 3"))
  end)

  it("fork_pool_ready_no_pool", function()
    for _, opts in ipairs({ {}, { pool = { size = 0 } } }) do
      f = H.fixture(opts)
      local pi, msg, code = f.m:pool_ready()
      assert.is_nil(pi)
      assert.are.equal("KH_ENOTSUP", code)
      assert.is_truthy(msg:find("pool", 1, true))
      -- The manager works on: its kernels start cold.
      local a, k = create(f)
      assert.are.equal("cold", info(f, a).origin)
      assert.are.equal("2", eval(k, "1 + 1"))
      H.close(f)
      f = nil
    end
  end)

  it("fork_pools_coexist", function()
    -- A fork server and a warm pool in one host process, one per manager.
    f = H.fixture({ pool = { mode = "fork", size = 1 } })
    local g = H.fixture({ pool = { size = 1 } })
    pool_ready_ok(f)
    local gi = assert(g.m:pool_ready())
    assert.are.equal("spawn", gi.mode)
    local a, ka = create(f)
    local b, kb = H.create_worker(g)
    assert.are.equal("fork", info(f, a).origin)
    assert.are.equal("warm", info(g, b).origin)
    assert.are.equal("21", eval(ka, "x = 20\nx + 1"))
    assert.are.equal("31", eval(kb, "x = 30\nx + 1"))
    H.close(g)
  end)
end)

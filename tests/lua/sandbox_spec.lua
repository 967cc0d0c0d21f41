-- sandbox_spec.lua: the worker sandbox end to end from Lua (tests/c/test_sandbox.c): kernels
-- created with permissions / filesystem / limits / sandbox, then real attempts to break each
-- grant from inside the kernel, through Python and through ctypes calling libc directly (which
-- only the OS layers can stop). Worker mode always, whatever KH_TEST_MODE says. Options that
-- are refused before any worker starts are data: tests/cases/options.json.
--
-- The C tests also read kh_kernel_info (sandbox.mode, sandbox.layers.*, sandbox.missing,
-- sandbox.runtime_read, pooled). The Lua binding has no kernel:info(), so those facts are
-- checked through their effects instead: libc calls refused (Landlock, seccomp), NoNewPrivs
-- in /proc/self/status, and whether the worker was a child of this host before the claim.
local H = require("helpers")
local P = require("proc")

local sopts, screate = H.worker_opts, H.create_worker

-- A scratch tree: secret.txt, r/data.txt (readable), w/ (writable), root/ (a filesystem root
-- holding hello.txt); mnt/ws is where the sandbox mounts root.
local function tree()
  local t = { dir = P.mkdtemp("kh-sbx-") }
  t.secret, t.r, t.w = t.dir .. "/secret.txt", t.dir .. "/r", t.dir .. "/w"
  t.root, t.mp = t.dir .. "/root", t.dir .. "/mnt/ws"
  P.write_file(t.secret, "TOP-SECRET")
  P.sh("mkdir " .. P.quote(t.r) .. " " .. P.quote(t.w) .. " " .. P.quote(t.root))
  P.write_file(t.r .. "/data.txt", "readable")
  P.write_file(t.root .. "/hello.txt", "hello from root")
  return t
end

local function pyq(s) return "'" .. s:gsub("\\", "\\\\"):gsub("'", "\\'") .. "'" end

-- Runs code that must succeed (status ok); returns the reply.
local function exec_ok(k, code)
  local r = H.exec(k, code)
  assert(r.status == "ok", ("cell failed: %s: %s\n--- code:\n%s"):format(
    r.error and r.error.ename, r.error and r.error.evalue, code))
  return r
end

-- Runs code that must end in exception ename, reported as an execute_error event too.
local function exec_error(f, k, code, ename)
  local r = H.exec(k, code)
  assert.are.equal("error", r.status)
  assert.are.equal(ename, r.error.ename, r.error.evalue)
  local ev = H.events(f, "execute_error", r.execution_id)
  assert.are.equal(1, #ev)
  assert.are.equal(ename, ev[1].data.ename)
  return r
end

-- Everything the cell wrote to a stream, from the reply's outputs.
local function reply_stream_text(r)
  local parts = {}
  for _, o in ipairs(r.outputs) do
    if o.type == "stream" and o.data.text then parts[#parts + 1] = o.data.text end
  end
  return table.concat(parts)
end

local function count_char(s, c) return select(2, s:gsub(c, "")) end

-- The attacks on reading: Python's open (audit hook: PermissionError), and libc's open through
-- ctypes, which only the OS layer (Landlock) can stop.
local read_attack = table.concat({
  "import ctypes, errno",
  "libc = ctypes.CDLL(None, use_errno=True)",
  "assert open(R + '/data.txt').read() == 'readable'",
  "fd = libc.open(SECRET.encode(), 0)",
  "assert fd == -1 and ctypes.get_errno() in (errno.EACCES, errno.EPERM), (fd, ctypes.get_errno())",
  "open(SECRET).read()",
}, "\n") .. "\n"

local function read_denied_in(f, k, t)
  exec_error(f, k, "R = " .. pyq(t.r) .. "\nSECRET = " .. pyq(t.secret) .. "\n" .. read_attack,
             "PermissionError")
end

-- no_new_privs, as the kernel's own process sees it.
local function no_new_privs(k)
  local r = exec_ok(k, "[l.split()[1] for l in open('/proc/self/status') " ..
                       "if l.startswith('NoNewPrivs:')][0]")
  return r.result.data["text/plain"]
end

describe("sandbox", function()
  local f, t
  before_each(function() f = H.fixture() end)
  after_each(function()
    H.close(f)
    if t then P.rmtree(t.dir) end
    t = nil
  end)

  it("sandbox_read_denied", function()
    t = tree()
    local _, k = screate(f, { permissions = { read = { t.r } } })
    read_denied_in(f, k, t)
    -- layers in force, seen from inside (C reads them from the kernel's info)
    assert.are.equal("'1'", no_new_privs(k))
  end)

  it("sandbox_write_denied", function()
    t = tree()
    local _, k = screate(f, { permissions = { read = { t.dir }, write = { t.w } } })
    -- allowed: a write inside the grant lands on the host
    exec_ok(k, "open(" .. pyq(t.w .. "/ok.txt") .. ", 'w').write('written')")
    assert.are.equal("written", P.read_file(t.w .. "/ok.txt"))
    -- denied: readable but not writable (the secret), a new file beside it, via libc too
    exec_error(f, k, table.concat({
      "import ctypes, errno, os",
      "libc = ctypes.CDLL(None, use_errno=True)",
      "assert open(" .. pyq(t.secret) .. ").read() == 'TOP-SECRET'",
      "fd = libc.open(" .. pyq(t.dir .. "/new.txt") .. ".encode(), os.O_WRONLY | os.O_CREAT, 0o644)",
      "assert fd == -1 and ctypes.get_errno() in (errno.EACCES, errno.EPERM), fd",
      "fd = libc.open(" .. pyq(t.secret) .. ".encode(), os.O_WRONLY | os.O_TRUNC)",
      "assert fd == -1 and ctypes.get_errno() in (errno.EACCES, errno.EPERM), fd",
      "open(" .. pyq(t.dir .. "/new.txt") .. ", 'w')",
    }, "\n") .. "\n", "PermissionError")
    assert.is_nil(P.read_file(t.dir .. "/new.txt"))
    assert.are.equal("TOP-SECRET", P.read_file(t.secret))
  end)

  it("sandbox_mount_visible", function()
    t = tree()
    local _, k = screate(f, { filesystem = { root = t.root, mountPoint = t.mp }, permissions = {} })
    -- the kernel starts at the mount point, sees root's files there, and writes land in root
    local r = exec_ok(k, table.concat({
      "import os",
      "assert os.getcwd() == " .. pyq(t.mp) .. ", os.getcwd()",
      "assert open('hello.txt').read() == 'hello from root'",
      "open('made-inside.txt', 'w').write('from the kernel')",
      "os.mkdir('sub')",
      "sorted(os.listdir('.'))",
    }, "\n"))
    assert.are.equal("['hello.txt', 'made-inside.txt', 'sub']", r.result.data["text/plain"])
    assert.are.equal("from the kernel", P.read_file(t.root .. "/made-inside.txt"))
    -- the mount is the worker's own: the host's mount point stays an empty directory
    assert.is_nil(P.read_file(t.mp .. "/hello.txt"))
    -- nothing outside the mount: the host tree around it, and /etc
    exec_error(f, k, "open(" .. pyq(t.secret) .. ").read()", "PermissionError")
    exec_error(f, k, table.concat({
      "import ctypes, errno",
      "libc = ctypes.CDLL(None, use_errno=True)",
      "fd = libc.open(b'/etc/passwd', 0)",
      "assert fd == -1 and ctypes.get_errno() in (errno.EACCES, errno.EPERM), fd",
      "open('../../root/hello.txt').read()",
    }, "\n") .. "\n", "PermissionError")
  end)

  it("sandbox_net_denied", function()
    -- Two loopback listeners, held by an unconfined main_thread kernel of this host (its
    -- sockets queue the sandboxed kernel's connects in their backlog).
    local lk = f.m:get_kernel(assert(f.m:create_kernel({ mode = "main_thread" })))
    local lr = exec_ok(lk, table.concat({
      "import socket",
      "_kh_listeners = []",
      "for _ in range(2):",
      "    s = socket.socket()",
      "    s.bind(('127.0.0.1', 0))",
      "    s.listen(16)",
      "    _kh_listeners.append(s)",
      "' '.join(str(s.getsockname()[1]) for s in _kh_listeners)",
    }, "\n"))
    local pa, pb = lr.result.data["text/plain"]:match("^'(%d+) (%d+)'$")
    assert.is_not_nil(pa)
    assert.is_not_nil(pb)
    local _, k = screate(f, { permissions = { net = { "127.0.0.1:" .. pa } } })
    -- allowed: the listed port
    exec_ok(k, "import socket\ns = socket.create_connection(('127.0.0.1', " .. pa .. "))\ns.close()")
    -- denied: another port on the same host, by libc's connect (Landlock) and by Python
    exec_error(f, k, table.concat({
      "import ctypes, errno, socket, struct",
      "libc = ctypes.CDLL(None, use_errno=True)",
      "s = socket.socket()",
      "addr = struct.pack('=H', socket.AF_INET) + struct.pack('!H', " .. pb .. ") + " ..
        "socket.inet_aton('127.0.0.1') + bytes(8)",
      "rc = libc.connect(s.fileno(), addr, len(addr))",
      "assert rc == -1 and ctypes.get_errno() in (errno.EACCES, errno.EPERM), (rc, " ..
        "ctypes.get_errno())",
      "s.close()",
      "socket.create_connection(('127.0.0.1', " .. pb .. "))",
    }, "\n") .. "\n", "PermissionError")
    -- unix sockets reach whatever listens at a path: refused unless net is true (seccomp)
    exec_error(f, k, table.concat({
      "import ctypes, errno, socket",
      "libc = ctypes.CDLL(None, use_errno=True)",
      "fd = libc.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0)",
      "assert fd == -1 and ctypes.get_errno() in (errno.EACCES, errno.EPERM), fd",
      "socket.socket(socket.AF_UNIX).connect('/run/whatever.sock')",
    }, "\n") .. "\n", "PermissionError")
  end)

  it("sandbox_run_denied", function()
    local _, k = screate(f, { permissions = { run = false } })
    -- libc's execve (seccomp: EPERM), then Python's subprocess, os.system and os.execv
    exec_error(f, k, table.concat({
      "import ctypes, errno, os",
      "libc = ctypes.CDLL(None, use_errno=True)",
      "argv = (ctypes.c_char_p * 2)(b'/bin/true', None)",
      "rc = libc.execve(b'/bin/true', argv, None)",
      "assert rc == -1 and ctypes.get_errno() in (errno.EPERM, errno.EACCES), rc",
      "import subprocess",
      "subprocess.run(['/bin/true'])",
    }, "\n") .. "\n", "PermissionError")
    exec_error(f, k, "import os\nos.system('true')", "PermissionError")
    exec_error(f, k, "import os\nos.execv('/bin/true', ['true'])", "PermissionError")
    assert.are.equal("ok", H.exec(k, "1").status) -- the kernel is still there
  end)

  it("sandbox_env_filtered", function()
    -- The host's environment must hold the variables; Lua cannot setenv, so a child host
    -- runs with them and reports what its sandboxed kernel saw.
    local code = table.concat({
      "import ctypes, os",
      "libc = ctypes.CDLL(None)",
      "libc.getenv.restype = ctypes.c_char_p",
      "assert libc.getenv(b'KH_TEST_SECRET') is None",
      "assert b's3cret-value' not in open('/proc/self/environ', 'rb').read()",
      "(os.environ.get('KH_TEST_SECRET'), os.environ.get('KH_TEST_GRANTED'),",
      " os.environ.get('KH_OWN'), libc.getenv(b'KH_OWN'))",
    }, "\n")
    local kv, out = P.run_child({ KH_TEST_SECRET = "s3cret-value",
                                  KH_TEST_GRANTED = "granted-value" }, [[
      local kernelhost = require("kernelhost")
      local m = assert(kernelhost.KernelManager.new())
      assert(os.getenv("KH_TEST_SECRET") == "s3cret-value")
      local id = assert(m:create_kernel({ mode = "worker",
        permissions = { env = { "KH_TEST_GRANTED" } }, env = { KH_OWN = "own-value" } }))
      local r = assert(m:get_kernel(id):execute(]] .. ("%q"):format(code) .. [[))
      print("status=" .. r.status)
      print("error=" .. tostring(r.error and (r.error.ename .. ": " .. r.error.evalue)))
      print("result=" .. tostring(r.result and r.result.data["text/plain"]))
      m:close()
    ]])
    assert.are.equal("ok", kv.status, out)
    assert.are.equal("(None, 'granted-value', 'own-value', b'own-value')", kv.result, out)
    assert.is_nil(os.getenv("KH_TEST_SECRET")) -- this host never had them
  end)

  it("sandbox_memory_limit", function()
    local _, k = screate(f, { limits = { memoryBytes = 1073741824 } })
    exec_error(f, k, "x = bytearray(4 << 30)", "MemoryError")
    -- the kernel survives its MemoryError
    assert.are.equal("1048576", exec_ok(k, "len(bytearray(1 << 20))").result.data["text/plain"])
  end)

  it("sandbox_max_output", function()
    local _, k = screate(f, { limits = { maxOutputBytes = 1000 } })
    -- print() (the runtime's streams) and fd 1 (os.write, C code, subprocesses) are both cut
    local text = reply_stream_text(exec_ok(k, table.concat({
      "import os",
      "print('Q' * 5000)",
      "print('Q' * 5000)",
      "os.write(1, b'J' * 5000)",
      "os.write(1, b'J' * 5000)",
    }, "\n") .. "\n"))
    assert.is_truthy(text:find("output truncated after 1000", 1, true), text)
    assert.is_true(count_char(text, "Q") <= 1000)
    assert.is_true(count_char(text, "Q") >= 900)
    assert.is_true(count_char(text, "J") <= 1000)
    assert.is_true(count_char(text, "J") >= 900)
    -- the limit is per cell: the next cell's output comes out whole
    text = reply_stream_text(exec_ok(k, "print('Z' * 500)"))
    assert.are.equal(500, count_char(text, "Z"))
    assert.is_nil(text:find("truncated", 1, true))
    -- output the worker does not cut (display_data here) is bounded by the host itself:
    -- 4 x maxOutputBytes + 64 KiB of events per cell, then one marker, and the reply comes
    local r = exec_ok(k, "for i in range(300):\n    display('d' * 1000)\n")
    assert.is_truthy(reply_stream_text(r):find("output cut by the host", 1, true))
    assert.is_true(#r.outputs < 100, #r.outputs)
  end)

  it("sandbox_pool_claim", function()
    t = tree()
    local g = H.fixture({ pool = { size = 1 } })
    -- a warm worker claimed for a sandboxed kernel gets the sandbox exactly like a cold one
    local before = P.children()
    local _, a = screate(g, { permissions = { read = { t.r } } })
    local apid = tonumber(exec_ok(a, "__import__('os').getpid()").result.data["text/plain"])
    assert.is_true(before[apid] == true, "kernel a was not pooled")
    read_denied_in(g, a, t)
    assert.are.equal("'1'", no_new_privs(a))
    -- the refilled pool serves an unconfined kernel next: nothing carried over
    before = P.children()
    local _, b = screate(g)
    local bpid = tonumber(exec_ok(b, "__import__('os').getpid()").result.data["text/plain"])
    assert.is_true(before[bpid] == true, "kernel b was not pooled")
    assert.are.equal("'TOP-SECRET'",
                     exec_ok(b, "open(" .. pyq(t.secret) .. ").read()").result.data["text/plain"])
    assert.are.equal("'0'", no_new_privs(b))
    H.close(g)
  end)

  it("sandbox_restart_confined", function()
    t = tree()
    local _, k = screate(f, { permissions = { read = { t.r } } })
    assert.is_true(k:restart())
    read_denied_in(f, k, t)
  end)

  it("sandbox_interrupt_works", function()
    local _, k = screate(f, { permissions = {}, limits = { cpuSeconds = 60 } })
    local _, st = H.start(f, k, "import time\ntime.sleep(100)")
    assert.is_true(k:interrupt())
    H.wait(f, function() return st.done end, "the interrupted reply")
    assert(st.result, st.msg)
    assert.are.equal("error", st.result.status)
    assert.are.equal("KeyboardInterrupt", st.result.error.ename)
    assert.are.equal("ok", H.exec(k, "1").status)
  end)

  it("sandbox_strict_refuses", function()
    -- The probe reads KH_SANDBOX_PRETEND_MISSING once per process, before the first sandboxed
    -- kernel: a child host runs with it.
    t = tree()
    local kv, out = P.run_child({ KH_SANDBOX_PRETEND_MISSING = "landlock" }, [[
      local kernelhost = require("kernelhost")
      local m = assert(kernelhost.KernelManager.new())
      -- strict (the default): creation fails, naming what is missing; no kernel
      local id, msg, code = m:create_kernel({ mode = "worker", permissions = {} })
      print("strict_id=" .. tostring(id))
      print("strict_code=" .. tostring(code))
      print("strict_msg=" .. tostring(msg):gsub("\n", " "))
      print("strict_count=" .. #m:list_kernels())
      -- best-effort runs with what is there
      id, msg, code = m:create_kernel({ mode = "worker", sandbox = "best-effort",
                                        permissions = { read = { ]] .. ("%q"):format(t.r) .. [[ } } })
      print("be_code=" .. tostring(code))
      local k = assert(m:get_kernel(id))
      local function run(src)
        local r = assert(k:execute(src))
        return r.status == "ok" and r.result.data["text/plain"] or r.error.ename
      end
      -- Python's layer is there: open() of an ungranted file is refused
      print("be_open=" .. run("open(" .. ]] .. ("%q"):format(pyq(t.secret)) .. [[ .. ").read()"))
      -- the OS layer it pretends is missing is not applied: libc's open goes through
      print("be_libc=" .. run("import ctypes\nctypes.CDLL(None).open(" .. ]] ..
        ("%q"):format(pyq(t.secret)) .. [[ .. ".encode(), 0) >= 0"))
      m:close()
    ]])
    assert.are.equal("nil", kv.strict_id, out)
    assert.are.equal("KH_ENOTSUP", kv.strict_code, out)
    assert.is_truthy((kv.strict_msg or ""):find("Landlock", 1, true), out)
    assert.are.equal("0", kv.strict_count, out)
    assert.are.equal("nil", kv.be_code, out)
    assert.are.equal("PermissionError", kv.be_open, out)
    assert.are.equal("True", kv.be_libc, out)
  end)

end)

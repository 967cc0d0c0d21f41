# cases.py: real attempts to break a worker kernel's sandbox, each asserting denial, and the
# allowed cases still working. Each `def sandbox_<name>(t)` is one ctest test security/<name>.
# usage: python3 cases.py SANDBOX_RUNNER NAME     (or --list)
# The attack code runs inside the sandbox (sandbox_runner: options -> plan -> fork -> apply ->
# Python); it raises AssertionError when a denial fails, so exit 0 means every attempt was denied.

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

PRELUDE = r'''
import ctypes, errno, os, sys
libc = ctypes.CDLL("libc.so.6", use_errno=True)
# EXDEV: Landlock's answer to a link or rename that would move a file into more rights.
DENIED = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENETUNREACH, errno.EXDEV)
def denied(fn, *a, **k):
    """fn(*a) must fail as a denial (PermissionError, or the OS's EACCES/EPERM/EROFS)."""
    try:
        fn(*a, **k)
    except OSError as e:
        if isinstance(e, PermissionError) or e.errno in DENIED:
            return e
        name = getattr(fn, "__name__", fn)
        raise AssertionError(f"{name}{a!r} failed, but not as a denial: {e!r}")
    raise AssertionError(f"{getattr(fn, '__name__', fn)}{a!r} was not denied")
def c_denied(rc, what):
    """A libc call made through ctypes must return -1 with a denial errno."""
    e = ctypes.get_errno()
    assert rc == -1 and e in DENIED, f"{what}: rc={rc} errno={e} ({os.strerror(e)}), not denied"
    return e
'''


class T:
    def __init__(self, runner):
        self.runner = runner
        self.tmp = tempfile.mkdtemp(prefix="kh-sec-")
        self.secret = os.path.join(self.tmp, "secret.txt")
        with open(self.secret, "w") as f:
            f.write("TOP-SECRET")
        self.outside = os.path.join(self.tmp, "outside")
        os.mkdir(self.outside)
        self.rdir = self.mk("r", {"data.txt": "readable"})
        self.wdir = self.mk("w", {})
        self.root = self.mk("root", {"hello.txt": "hello from root"})
        self.mp = os.path.join(self.tmp, "mnt", "ws")  # created by the sandbox
        self.listeners = []

    def mk(self, name, files):
        d = os.path.join(self.tmp, name)
        os.mkdir(d)
        for k, v in files.items():
            with open(os.path.join(d, k), "w") as f:
                f.write(v)
        return d

    def listener(self):
        """A loopback TCP listener; connects complete through the backlog, no accept needed."""
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        self.listeners.append(s)
        return s.getsockname()[1]

    def perms(self, **kw):
        p = {"read": [self.rdir], "write": [self.wdir]}
        p.update(kw)
        return p

    def run(self, opts, code, hooks=True, expect=0, stdin=None, env=None, wait=True):
        import json
        args = [self.runner] + ([] if hooks else ["--no-hooks"]) + [json.dumps(opts),
                                                                      PRELUDE + code]
        p = subprocess.Popen(args, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env, cwd=self.tmp)
        if not wait:
            return p
        out, err = p.communicate()
        self.check(p, out, err, expect)
        return out, err

    def check(self, p, out, err, expect):
        sys.stdout.write(out)
        sys.stderr.write(err)
        if expect is not None and p.returncode != expect:
            raise AssertionError(f"sandbox_runner exited {p.returncode}, expected {expect}")

    def close(self):
        for s in self.listeners:
            s.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


# --- files: reading and writing outside the allowed paths ------------------------------------

def sandbox_read_outside_open_denied(t):
    t.run({"permissions": t.perms()}, f'''
e = denied(open, {t.secret!r})
assert {t.secret!r} in str(e), e          # the hook names the path
denied(open, "/etc/shadow"); denied(open, "/root/.bashrc")
assert open({t.rdir!r} + "/data.txt").read() == "readable"
''')


def sandbox_read_outside_os_denied(t):
    t.run({"permissions": t.perms()}, f'''
denied(os.open, {t.secret!r}, os.O_RDONLY)
denied(os.listdir, {t.outside!r})
denied(os.scandir, "/etc")
denied(os.listdir, "/")
assert os.listdir({t.rdir!r}) == ["data.txt"]
''')


def sandbox_read_outside_pathlib_denied(t):
    t.run({"permissions": t.perms()}, f'''
import pathlib
denied(pathlib.Path({t.secret!r}).read_text)
denied(lambda: list(pathlib.Path({t.outside!r}).iterdir()))
assert pathlib.Path({t.rdir!r}, "data.txt").read_text() == "readable"
''')


def sandbox_read_outside_ctypes_denied(t):
    code = f'''
c_denied(libc.open({t.secret.encode()!r}, os.O_RDONLY), "libc open(secret)")
c_denied(libc.open(b"/etc/shadow", os.O_RDONLY), "libc open(/etc/shadow)")
fd = libc.open({(t.rdir + "/data.txt").encode()!r}, os.O_RDONLY)
assert fd >= 0, "an allowed read failed"
'''
    t.run({"permissions": t.perms()}, code)
    t.run({"permissions": t.perms()}, code, hooks=False)


def sandbox_read_outside_subprocess_denied(t):
    t.run({"permissions": t.perms(run=True)}, f'''
import subprocess
r = subprocess.run(["cat", {t.secret!r}], capture_output=True)
assert r.returncode != 0 and b"SECRET" not in r.stdout, r
assert b"Permission denied" in r.stderr, r.stderr
r = subprocess.run(["cat", {t.rdir!r} + "/data.txt"], capture_output=True)
assert r.returncode == 0 and r.stdout == b"readable", r
''')


def sandbox_read_outside_os_layer_alone(t):
    # Without the audit hooks, the kernel itself refuses (Landlock), with plain EACCES.
    t.run({"permissions": t.perms()}, f'''
import pathlib
e = denied(open, {t.secret!r}); assert e.errno == errno.EACCES, e
denied(os.listdir, {t.outside!r}); denied(pathlib.Path("/etc/shadow").read_bytes)
''', hooks=False)


def sandbox_write_outside_denied(t):
    target = os.path.join(t.outside, "pwned")
    for hooks in (True, False):
        t.run({"permissions": t.perms(read=[t.rdir, t.outside], run=True)}, f'''
import pathlib, shutil, subprocess
T = {target!r}
denied(open, T, "w"); denied(open, {t.secret!r}, "a"); denied(open, {t.rdir!r} + "/data.txt", "r+")
denied(os.open, T, os.O_WRONLY | os.O_CREAT)
denied(os.mkdir, T); denied(os.remove, {t.secret!r}); denied(os.rename, {t.secret!r}, T)
denied(os.symlink, "/etc/passwd", T); denied(os.truncate, {t.secret!r}, 0)
denied(pathlib.Path(T).write_text, "x"); denied(pathlib.Path(T).touch)
denied(shutil.copyfile, {t.rdir!r} + "/data.txt", T)
c_denied(libc.open(T.encode(), os.O_WRONLY | os.O_CREAT, 0o644), "libc open(O_CREAT)")
r = subprocess.run(["sh", "-c", f"echo x > {{T}}; touch {{T}}2; cp /etc/hostname {{T}}3"],
                   capture_output=True)
assert r.returncode != 0, r
# allowed: the write grant
with open({t.wdir!r} + "/ok.txt", "w") as f:
    f.write("written")
os.mkdir({t.wdir!r} + "/sub"); os.rename({t.wdir!r} + "/ok.txt", {t.wdir!r} + "/sub/ok.txt")
''', hooks=hooks)
        assert os.listdir(t.outside) == [], os.listdir(t.outside)
        assert open(t.secret).read() == "TOP-SECRET"
        assert open(os.path.join(t.wdir, "sub", "ok.txt")).read() == "written"
        shutil.rmtree(os.path.join(t.wdir, "sub"))


def sandbox_allowed_read_write_work(t):
    t.run({"permissions": t.perms()}, f'''
assert open({t.rdir!r} + "/data.txt").read() == "readable"
with open({t.wdir!r} + "/out.txt", "w") as f:
    f.write("done")
assert open({t.wdir!r} + "/out.txt").read() == "done"   # a write grant includes reading
assert os.listdir({t.wdir!r}) == ["out.txt"]
denied(open, {t.rdir!r} + "/new.txt", "w")              # a read grant does not allow writes
import json, decimal, sqlite3, ssl, email.mime.text      # the stdlib stays importable
''')
    assert open(os.path.join(t.wdir, "out.txt")).read() == "done"


def sandbox_escape_tricks_denied(t):
    # Other ways around the file rules: /proc/self/root, hard links, rlimits, a nested user
    # namespace to regain capabilities, and reopening through /proc/self/fd.
    t.run({"permissions": t.perms(), "limits": {"memoryBytes": 1 << 31}}, f'''
import resource
denied(open, "/proc/self/root" + {t.secret!r})
denied(open, "/proc/self/root/etc/shadow")
denied(os.link, {t.secret!r}, {t.wdir!r} + "/hardlink")
c_denied(libc.link({t.secret.encode()!r}, {(t.wdir + "/hardlink").encode()!r}), "libc link")
try:
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    raise AssertionError("the memory limit was raised")
except ValueError:
    pass
CLONE_NEWUSER, CLONE_NEWNS = 0x10000000, 0x00020000
if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) == 0:   # allowed, but gives nothing:
    c_denied(libc.mount(b"/", {t.wdir.encode()!r}, None, 4096 | 16384, None), "nested bind mount")
    c_denied(libc.open({t.secret.encode()!r}, os.O_RDONLY), "open after unshare")
fd = os.open({t.rdir!r}, os.O_RDONLY)
denied(open, "/proc/self/fd/%d/../secret.txt" % fd)
''')
    assert not os.path.exists(os.path.join(t.wdir, "hardlink"))


def sandbox_unix_socket_denied(t):
    path = os.path.join(t.outside, "host.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(4)
    t.listeners.append(srv)
    for hooks in (True, False):
        t.run({"permissions": t.perms(read=[t.rdir, t.outside], net=["127.0.0.1:1"])}, f'''
import socket, struct
denied(lambda: socket.socket(socket.AF_UNIX).connect({path!r}))
c_denied(libc.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0), "libc socket(AF_UNIX)")
a, b = socket.socketpair(); a.send(b"x"); assert b.recv(1) == b"x"   # still fine
''', hooks=hooks)
    # net: true leaves Unix sockets alone
    t.run({"permissions": t.perms(read=[t.rdir, t.outside], write=[t.outside], net=True)}, f'''
import socket
socket.socket(socket.AF_UNIX).connect({path!r})
''')


# --- mounts --------------------------------------------------------------------------------

def sandbox_mount_visible_and_writes_land_in_root(t):
    assert not os.path.exists(t.mp)
    for perms in (None, t.perms()):
        opts = {"filesystem": {"enabled": True, "root": t.root, "mountPoint": t.mp}}
        if perms:
            opts["permissions"] = perms
        t.run(opts, f'''
assert os.getcwd() == {t.mp!r}, os.getcwd()              # the kernel starts at the mount
assert open("hello.txt").read() == "hello from root"
with open({t.mp!r} + "/written.txt", "w") as f:
    f.write("from the sandbox")
os.mkdir("made")
''')
        assert open(os.path.join(t.root, "written.txt")).read() == "from the sandbox"
        assert os.path.isdir(os.path.join(t.root, "made"))
        os.rmdir(os.path.join(t.root, "made"))
        assert os.listdir(t.mp) == [], "the bind mount leaked into the host's mount namespace"


def sandbox_mount_read_only(t):
    ro_root = t.mk("roroot", {"f.txt": "ro"})
    for perms in (None, t.perms()):
        opts = {"filesystem": {"root": ro_root, "mountPoint": t.mp, "readOnly": True}}
        if perms:
            opts["permissions"] = perms
        t.run(opts, f'''
MS_REMOUNT, MS_BIND, MS_RDONLY = 32, 4096, 1
assert open("f.txt").read() == "ro"
denied(open, "f.txt", "a"); denied(open, "new.txt", "w"); denied(os.remove, "f.txt")
c_denied(libc.open(b"{t.mp}/new.txt", os.O_WRONLY | os.O_CREAT, 0o644), "libc create in ro mount")
# the host path of root is read-only too
denied(open, {ro_root!r} + "/new.txt", "w")
# and the mount cannot be made writable again, nor removed
c_denied(libc.mount(None, b"{t.mp}", None, MS_REMOUNT | MS_BIND, None), "remount rw")
c_denied(libc.umount2(b"{t.mp}", 2), "umount")
''')
        assert os.listdir(ro_root) == ["f.txt"]


def sandbox_mount_symlink_escape_denied(t):
    os.symlink(t.secret, os.path.join(t.root, "escape"))
    os.symlink("/", os.path.join(t.root, "rootlink"))
    os.symlink(t.outside, os.path.join(t.root, "outlink"))
    for hooks in (True, False):
        t.run({"filesystem": {"root": t.root, "mountPoint": t.mp}, "permissions": t.perms()}, f'''
denied(open, "escape"); denied(open, {t.mp!r} + "/escape")
denied(open, "rootlink/etc/shadow"); denied(os.listdir, "rootlink/etc")
denied(open, "outlink/pwned", "w")
c_denied(libc.open(b"escape", os.O_RDONLY), "libc open via symlink")
c_denied(libc.open(b"outlink/pwned", os.O_WRONLY | os.O_CREAT, 0o644), "libc create via symlink")
# a symlink made inside the mount does not help either
os.symlink({t.secret!r}, "mine")
denied(open, "mine")
os.remove("mine")
''', hooks=hooks)
    assert os.listdir(t.outside) == []


def sandbox_mount_dotdot_escape_denied(t):
    rel = os.path.relpath(t.secret, t.mp)  # ../../secret.txt from the mount point
    for hooks in (True, False):
        t.run({"filesystem": {"root": t.root, "mountPoint": t.mp}, "permissions": t.perms()}, f'''
denied(open, {rel!r}); denied(open, {t.mp!r} + "/" + {rel!r})
denied(open, "../../../../../../etc/shadow"); denied(os.listdir, "..")
denied(open, "../escaped.txt", "w")
c_denied(libc.open({rel.encode()!r}, os.O_RDONLY), "libc open ..")
os.chdir("/")
denied(open, {t.mp[1:]!r} + "/../../secret.txt")
''', hooks=hooks)
    assert not os.path.exists(os.path.join(os.path.dirname(t.mp), "escaped.txt"))


def sandbox_two_mounts_isolated(t):
    a_root = t.mk("a", {"a.txt": "A"})
    b_root = t.mk("b", {"b.txt": "B"})
    perms = lambda r: {"read": [], "write": []}
    # A starts, writes, says "ready" and waits on stdin while B looks around: both mounts exist
    # at the same mount point at the same time.
    a = t.run({"filesystem": {"root": a_root, "mountPoint": t.mp}, "permissions": perms(a_root)},
              f'''
assert sorted(os.listdir(".")) == ["a.txt"], os.listdir(".")
open("a-new.txt", "w").write("A2")
print("ready", flush=True)
sys.stdin.readline()
assert sorted(os.listdir({t.mp!r})) == ["a-new.txt", "a.txt"], os.listdir({t.mp!r})
denied(os.listdir, {b_root!r}); denied(open, {b_root!r} + "/b.txt")
''', stdin=True, wait=False)
    assert a.stdout.readline() == "ready\n"
    t.run({"filesystem": {"root": b_root, "mountPoint": t.mp}, "permissions": perms(b_root)}, f'''
assert sorted(os.listdir({t.mp!r})) == ["b.txt"], os.listdir({t.mp!r})
open("b-new.txt", "w").write("B2")
denied(os.listdir, {a_root!r}); denied(open, {a_root!r} + "/a-new.txt")
''')
    out, err = a.communicate("go\n")
    t.check(a, out, err, 0)
    assert sorted(os.listdir(a_root)) == ["a-new.txt", "a.txt"]
    assert sorted(os.listdir(b_root)) == ["b-new.txt", "b.txt"]


# --- network -------------------------------------------------------------------------------

def sandbox_net_socket_unlisted_port_denied(t):
    bad, good = t.listener(), t.listener()
    for hooks in (True, False):
        t.run({"permissions": t.perms(net=[f"127.0.0.1:{good}"])}, f'''
import socket
e = denied(socket.create_connection, ("127.0.0.1", {bad}))
if {hooks}: assert "127.0.0.1:{bad}" in str(e), e
s = socket.socket(); e = denied(s.connect, ("127.0.0.1", {bad})); s.close()
s6 = socket.socket(socket.AF_INET6); denied(s6.connect, ("::1", {bad})); s6.close()
socket.create_connection(("127.0.0.1", {good})).close()    # the listed port works
if {hooks}: denied(socket.create_server, ("127.0.0.1", {bad}))   # (taken anyway: hook only)
''', hooks=hooks)


def sandbox_net_urllib_unlisted_port_denied(t):
    bad, good = t.listener(), t.listener()
    t.run({"permissions": t.perms(net=[f"127.0.0.1:{good}"])}, f'''
import urllib.request, urllib.error
try:
    urllib.request.urlopen("http://127.0.0.1:{bad}/", timeout=30)
    raise AssertionError("urlopen was not denied")
except urllib.error.URLError as e:
    assert isinstance(e.reason, PermissionError), repr(e.reason)
''')


def sandbox_net_ctypes_connect_denied(t):
    bad, good = t.listener(), t.listener()
    code = f'''
import socket, struct
def sockaddr(port):
    return struct.pack("=HH4s8x", socket.AF_INET, socket.htons(port), socket.inet_aton("127.0.0.1"))
fd = libc.socket(socket.AF_INET, socket.SOCK_STREAM, 0); assert fd >= 0
a = sockaddr({bad})
c_denied(libc.connect(fd, a, len(a)), "libc connect to an unlisted port")
fd2 = libc.socket(socket.AF_INET, socket.SOCK_STREAM, 0)
a = sockaddr({good})
assert libc.connect(fd2, a, len(a)) == 0, os.strerror(ctypes.get_errno())
fd3 = libc.socket(socket.AF_INET, socket.SOCK_STREAM, 0)
a = sockaddr(0)
c_denied(libc.bind(fd3, a, len(a)), "libc bind to an unlisted port")
'''
    t.run({"permissions": t.perms(net=[f"127.0.0.1:{good}"])}, code)
    t.run({"permissions": t.perms(net=[f"127.0.0.1:{good}"])}, code, hooks=False)


def sandbox_net_false_no_network(t):
    port = t.listener()
    for hooks in (True, False):
        t.run({"permissions": t.perms(net=False)}, f'''
import socket, struct
denied(socket.create_connection, ("127.0.0.1", {port}))
fd = libc.socket(socket.AF_INET, socket.SOCK_STREAM, 0)
a = struct.pack("=HH4s8x", socket.AF_INET, socket.htons({port}), socket.inet_aton("127.0.0.1"))
c_denied(libc.connect(fd, a, len(a)), "libc connect with net=false")
if {hooks}: denied(socket.getaddrinfo, "localhost", 80)
''', hooks=hooks)


def sandbox_net_hostnames_checked(t):
    good, bad = t.listener(), t.listener()
    t.run({"permissions": t.perms(net=[f"localhost:{good}"])}, f'''
import socket
socket.create_connection(("localhost", {good})).close()   # a name, resolved by the hook too
socket.create_connection(("127.0.0.1", {good})).close()   # its address
e = denied(socket.getaddrinfo, "example.com", 443); assert "example.com:443" in str(e), e
denied(socket.create_connection, ("localhost", {bad}))
denied(socket.gethostbyname, "example.com")
''')


# --- processes -----------------------------------------------------------------------------

def sandbox_run_false_exec_denied(t):
    marker = os.path.join(t.wdir, "ran")
    for hooks in (True, False):
        t.run({"permissions": t.perms(run=False)}, f'''
import subprocess
M = {marker!r}
denied(subprocess.run, ["touch", M]); denied(subprocess.run, "touch " + M, shell=True)
r = os.system("touch " + M) if not {hooks} else None
if {hooks}: denied(os.system, "touch " + M)
denied(os.posix_spawn, "/usr/bin/touch", ["touch", M], os.environ)
pid = os.fork()
if pid == 0:
    try:
        os.execv("/usr/bin/touch", ["touch", M])
    except PermissionError:
        os._exit(7)
    os._exit(0)
assert os.waitpid(pid, 0)[1] >> 8 == 7
argv = (ctypes.c_char_p * 3)(b"touch", M.encode(), None)
c_denied(libc.execve(b"/usr/bin/touch", argv, None), "libc execve")
c_denied(libc.execve(b"/bin/sh", (ctypes.c_char_p * 2)(b"sh", None), None), "libc execve sh")
# fileless: a memfd holding the dynamic loader, run with fexecve (execveat)
mfd = os.memfd_create("x")
os.write(mfd, open("/lib64/ld-linux-x86-64.so.2", "rb").read())
NOENV = (ctypes.c_char_p * 1)(None)
c_denied(libc.fexecve(mfd, (ctypes.c_char_p * 2)(b"ld", None), NOENV), "libc fexecve(memfd)")
LD_ARGV = (ctypes.c_char_p * 3)(b"ld", b"/usr/bin/true", None)
c_denied(libc.execve(b"/lib64/ld-linux-x86-64.so.2", LD_ARGV, NOENV), "execve ld.so")
''', hooks=hooks)
        assert not os.path.exists(marker)


def sandbox_run_true_subprocess_works(t):
    t.run({"permissions": t.perms(run=True)}, '''
import subprocess
assert subprocess.run(["echo", "hi"], capture_output=True).stdout == b"hi\\n"
assert os.system("true") == 0
''')


def sandbox_signal_host_denied(t):
    # The host (here the runner's parent) is outside the sandbox: no signals, no ptrace.
    t.run({"permissions": t.perms()}, '''
denied(os.kill, os.getppid(), 0)
denied(os.kill, 1, 0)
PTRACE_ATTACH = 16
c_denied(libc.ptrace(PTRACE_ATTACH, os.getppid(), None, None), "ptrace the host")
denied(open, "/proc/%d/environ" % os.getppid())
denied(open, "/proc/1/mem")
''')


# --- environment ---------------------------------------------------------------------------

def sandbox_env_not_granted_hidden(t):
    env = dict(os.environ, KH_TEST_SECRET="hunter2-secret", KH_TEST_GRANTED="granted-value")
    t.run({"permissions": t.perms(env=["KH_TEST_GRANTED"]), "env": {"KH_SET": "set-value"}}, '''
assert "KH_TEST_SECRET" not in os.environ and os.getenv("KH_TEST_SECRET") is None
libc.getenv.restype = ctypes.c_char_p
assert libc.getenv(b"KH_TEST_SECRET") is None
assert b"hunter2" not in open("/proc/self/environ", "rb").read()
assert os.environ["KH_TEST_GRANTED"] == "granted-value"
assert libc.getenv(b"KH_TEST_GRANTED") == b"granted-value"
assert os.environ["KH_SET"] == "set-value" and libc.getenv(b"KH_SET") == b"set-value"
assert "PATH" not in os.environ          # not granted: Deno's model
''', env=env)
    # env: true passes everything
    t.run({"permissions": t.perms(env=True)}, '''
assert os.environ["KH_TEST_SECRET"] == "hunter2-secret"
''', env=env)


# --- limits --------------------------------------------------------------------------------

def sandbox_memory_limit(t):
    t.run({"limits": {"memoryBytes": 1 << 30}}, '''
try:
    b = bytearray(4 << 30)
    raise AssertionError("4 GiB allocated under a 1 GiB limit")
except MemoryError:
    pass
b = bytearray(64 << 20)   # the kernel goes on
''')


def sandbox_fork_bomb_limited(t):
    t.run({"limits": {"maxProcesses": 20}, "permissions": t.perms()}, '''
r, w = os.pipe()
kids = []
try:
    for i in range(200):
        pid = os.fork()
        if pid == 0:
            os.close(w)
            os.read(r, 1)       # block until the parent closes the pipe
            os._exit(0)
        kids.append(pid)
    raise AssertionError("200 processes under maxProcesses=20")
except BlockingIOError:
    pass
finally:
    os.close(w)
    for pid in kids:
        os.waitpid(pid, 0)
assert len(kids) < 20, len(kids)
''')


def sandbox_cpu_limit_kills(t):
    t.run({"limits": {"cpuSeconds": 1}}, '''
while True:
    pass
''', expect=128 + signal.SIGXCPU)


# --- the Python layer alone ----------------------------------------------------------------

def sandbox_hooks_alone_name_what_is_denied(t):
    # _kh_sandbox in a plain /usr/bin/python3, no OS layer: the messages name the path and the
    # host:port, and allowed operations pass.
    import json
    port = t.listener()
    plan = {"confine": True, "read": [t.rdir], "write": [t.wdir], "runtime_read": ["/usr/lib"],
            "runtime_read_write": ["/dev/null"], "runtime_exec": [], "run": False,
            "net": ["127.0.0.1:1"], "env": ["KEEP"], "set_env": {"SET": "1"}}
    code = PRELUDE + f'''
import json, socket, subprocess, _kh_sandbox
_kh_sandbox.install(json.loads({json.dumps(plan)!r}))
e = denied(open, {t.secret!r}); assert e.filename == {t.secret!r} and "permissions.read" in str(e)
e = denied(open, {t.rdir!r} + "/x", "w"); assert "permissions.write" in str(e), e
e = denied(socket.create_connection, ("127.0.0.1", {port}))
assert "127.0.0.1:{port}" in str(e) and "permissions.net" in str(e), e
e = denied(subprocess.run, ["true"]); assert "permissions.run" in str(e), e
assert "DROP" not in os.environ and os.environ["KEEP"] == "k" and os.environ["SET"] == "1"
assert open({t.rdir!r} + "/data.txt").read() == "readable"
open({t.wdir!r} + "/y", "w").close()
try:
    _kh_sandbox.install({{}})
    raise AssertionError("installed twice")
except RuntimeError:
    pass
'''
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                   "..", "..", "core", "python"),
               KEEP="k", DROP="d")
    r = subprocess.run(["/usr/bin/python3", "-c", code], capture_output=True, text=True, env=env)
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    assert r.returncode == 0, r.returncode


# --- strict and best-effort ----------------------------------------------------------------

def sandbox_strict_refuses_missing_layers(t):
    env = dict(os.environ, KH_SANDBOX_PRETEND_MISSING="landlock")
    out, err = t.run({"permissions": t.perms()}, "raise SystemExit(9)", expect=4, env=env)
    assert "KH_ENOTSUP" in err and "Landlock" in err, err
    env["KH_SANDBOX_PRETEND_MISSING"] = "userns"
    out, err = t.run({"filesystem": {"root": t.root, "mountPoint": t.mp}}, "raise SystemExit(9)",
                     expect=4, env=env)
    assert "KH_ENOTSUP" in err and "mount" in err, err
    env["KH_SANDBOX_PRETEND_MISSING"] = "pids"
    out, err = t.run({"limits": {"maxProcesses": 5}}, "raise SystemExit(9)", expect=4, env=env)
    assert "KH_ENOTSUP" in err and "pids cgroup" in err, err


def sandbox_best_effort_reports_layers(t):
    env = dict(os.environ, KH_SANDBOX_PRETEND_MISSING="landlocknet", KH_RUNNER_REPORT="1")
    port = t.listener()
    out, err = t.run({"sandbox": "best-effort", "permissions": t.perms(net=["127.0.0.1:1"])}, f'''
import socket
denied(socket.create_connection, ("127.0.0.1", {port}))   # the hook still says no
denied(open, {t.secret!r})                                # Landlock files still on
''', env=env)
    assert '"landlock_net":false' in err and '"landlock":true' in err, err


def sandbox_apply_refuses_threads(t):
    # A thread started before the sandbox would stay outside it (Landlock and seccomp bind the
    # calling thread): apply refuses, and the kernel never runs.
    import json
    r = subprocess.run([t.runner, "--thread", json.dumps({"permissions": t.perms()}),
                        "raise SystemExit(0)"], capture_output=True, text=True)
    assert r.returncode == 71 and "KH_EINVAL" in r.stderr and "single-threaded" in r.stderr, r


def sandbox_bad_options_rejected(t):
    # The options parser refuses these (the runner's exit 3) before any plan is made; a root
    # that is not a directory is the plan's to refuse (exit 4), since only the system knows.
    for perms in ({"read": ["relative/path"]}, {"net": ["host:99999"]}):
        out, err = t.run({"permissions": perms}, "pass", expect=3)
        assert "KH_EOPTION" in err, err
    out, err = t.run({"filesystem": {"root": t.root, "mountPoint": "/"}}, "pass", expect=3)
    assert "KH_EOPTION" in err, err
    out, err = t.run({"filesystem": {"root": t.root + "/nonexistent"}}, "pass", expect=4)
    assert "KH_EOPTION" in err, err


def main():
    names = [n for n in globals() if n.startswith("sandbox_")]
    if sys.argv[1:] == ["--list"]:
        print("\n".join(names))
        return 0
    runner, name = sys.argv[1], sys.argv[2]
    t = T(os.path.abspath(runner))
    try:
        globals()[name](t)
    finally:
        t.close()
    print(f"ok {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

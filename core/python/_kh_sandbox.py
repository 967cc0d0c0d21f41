# _kh_sandbox: the Python layer of a worker kernel's sandbox. Audit hooks turn what the
# permissions deny into clean PermissionErrors naming the path or host:port. The operating system
# (Landlock, namespaces, seccomp: sandbox-apply.c) is what enforces; this layer only explains, and
# checks host names, which the OS cannot.

import errno
import ipaddress
import os
import sys
import threading

_installed = None
_tls = threading.local()

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _norm(path, follow=True):
    """An absolute, symlink-free form of path, or None for what is not a path (an fd). With
    follow false, the last component is kept as is (remove, rename: they act on the link)."""
    if isinstance(path, int) or path is None:
        return None
    try:
        path = os.fsdecode(path)
    except TypeError:
        return None
    if path.startswith("\0"):  # abstract Unix socket
        return None
    path = os.path.abspath(path)
    if not follow:
        head, tail = os.path.split(path)
        return os.path.join(os.path.realpath(head), tail) if tail else os.path.realpath(path)
    return os.path.realpath(path)


def _under(path, prefixes):
    for p in prefixes:
        if path == p or path.startswith(p if p.endswith("/") else p + "/"):
            return True
    return False


def _realpath(path):
    """os.path.realpath(path), from the C library where it can answer (a kernel opening with a
    sandbox resolves a score of paths on its critical path)."""
    try:
        import _kernelhost
        r = _kernelhost.realpath(path)
    except (ImportError, AttributeError):
        r = None
    return r if r is not None else os.path.realpath(path)


class Policy:
    def __init__(self, plan):
        real = lambda ps: tuple(_realpath(p) for p in ps)
        self.read = real(list(plan.get("read", ())) + list(plan.get("runtime_read", ()))
                         + list(plan.get("runtime_read_write", ())))
        self.write = real(list(plan.get("write", ())) + list(plan.get("runtime_read_write", ())))
        self.read += self.write  # a write grant includes reading
        self.run = bool(plan.get("run", False))
        if self.run:
            self.read += real(plan.get("runtime_exec", ()))
        net = plan.get("net", False)
        self.net_all = net is True
        self.net = []  # (host, port or None)
        if isinstance(net, list):
            for e in net:
                self.net.append(_parse_net(e))
        self._resolved = {}

    # --- files -------------------------------------------------------------------------------

    def check_path(self, path, write=False, read=True, follow=True):
        p = _norm(path, follow)
        if p is None:
            return
        if write and not _under(p, self.write):
            _deny_path("write", path, "permissions.write")
        if read and not _under(p, self.read):
            _deny_path("read", path, "permissions.read")

    # --- network -----------------------------------------------------------------------------

    def _ips_of(self, host):
        ips = self._resolved.get(host)
        if ips is None:
            import socket
            try:
                ips = {ai[4][0] for ai in socket.getaddrinfo(host, None)}
            except OSError:
                ips = set()
            self._resolved[host] = ips
        return ips

    def net_allowed(self, host, port):
        """host:port matches an entry by name or literal address, or is an address that a
        listed name resolves to. port None (a look-up): any entry for the host will do."""
        if self.net_all:
            return True
        host = (host or "").strip("[]").lower()
        entries = [h for h, p in self.net if p is None or port is None or p == port]
        if host in entries:
            return True
        return _is_ip(host) and any(not _is_ip(h) and host in self._ips_of(h) for h in entries)

    def bind_allowed(self, host, port):
        """Listening: the port must be listed (for any host), as the OS layer checks."""
        return self.net_all or any(p is None or p == port for _, p in self.net)

    def check_net(self, host, port, bind=False):
        if not (self.bind_allowed(host, port) if bind else self.net_allowed(host, port)):
            where = f"{host}:{port}" if port is not None else f"{host}"
            raise PermissionError(errno.EACCES, f"network access to {where} denied by the "
                                  "kernel's sandbox (not in permissions.net)")


def _is_ip(s):
    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        return False


def _parse_net(e):
    if e.startswith("["):
        host, _, rest = e[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else None
    elif e.count(":") == 1:
        host, _, port = e.partition(":")
        port = int(port)
    else:
        host, port = e, None
    return host.lower(), port


def _deny_path(kind, path, option):
    shown = os.fsdecode(path) if not isinstance(path, int) else str(path)
    raise PermissionError(errno.EACCES, f"{kind} access denied by the kernel's sandbox (not in "
                          f"{option})", shown)


def _deny_run(what):
    raise PermissionError(errno.EPERM, f"running programs is denied by the kernel's sandbox "
                          f"(permissions.run is false): {what}")


def _addr_host_port(address):
    if isinstance(address, tuple) and len(address) >= 2 and isinstance(address[1], int):
        h = address[0]
        if isinstance(h, bytes):
            h = h.decode("idna", "replace")
        return h, address[1]
    return None


def _make_hook(pol):
    def open_(args):
        path, mode, flags = args
        if isinstance(mode, str) and mode:
            write = any(c in mode for c in "wax+")
            read = "r" in mode or "+" in mode
        else:
            flags = flags or 0
            write = bool(flags & _WRITE_FLAGS)
            read = (flags & os.O_ACCMODE) in (os.O_RDONLY, os.O_RDWR)
        pol.check_path(path, write=write, read=read)

    def read1(args):
        pol.check_path(args[0])

    def write1(args):
        pol.check_path(args[0], write=True, read=False)

    def unlink(args):  # acts on the name itself, not what a symlink points to
        pol.check_path(args[0], write=True, read=False, follow=False)

    def write2(args):
        pol.check_path(args[0], write=True, read=False, follow=False)
        pol.check_path(args[1], write=True, read=False, follow=False)

    def link(args):  # os.link(src, dst): dst is created, and src becomes reachable there
        pol.check_path(args[0], follow=False)
        pol.check_path(args[1], write=True, read=False, follow=False)

    def symlink(args):  # os.symlink(src, dst): only dst is touched
        pol.check_path(args[1], write=True, read=False, follow=False)

    def copy(args):  # shutil.copyfile(src, dst)
        pol.check_path(args[0])
        pol.check_path(args[1], write=True, read=False)

    def sock_addr(args, bind=False):
        address = args[1]
        hp = _addr_host_port(address)
        if hp is not None:
            pol.check_net(*hp, bind=bind)
        elif isinstance(address, (str, bytes)):
            # AF_UNIX reaches whatever listens at any path the process can name (the OS layer,
            # seccomp, refuses to create such sockets unless net is true).
            raise PermissionError(errno.EACCES, "Unix sockets are denied by the kernel's "
                                  "sandbox (permissions.net is not true)", os.fsdecode(address))

    def getaddrinfo(args):
        host, port = args[0], args[1]
        if isinstance(host, bytes):
            host = host.decode("idna", "replace")
        if isinstance(port, str):
            try:
                port = int(port)
            except ValueError:
                import socket
                try:
                    port = socket.getservbyname(port)
                except OSError:
                    port = None
        if host is None:
            return
        pol.check_net(host, port)

    def byname(args):
        host = args[0]
        if isinstance(host, bytes):
            host = host.decode("idna", "replace")
        pol.check_net(host, None)

    def run_(args):
        if not pol.run:
            _deny_run(args[0] if args else "")

    table = {
        "open": open_,
        "os.listdir": read1, "os.scandir": read1, "os.listxattr": read1,
        "os.getxattr": read1, "glob.glob": None,
        "os.remove": unlink, "os.rmdir": unlink, "os.mkdir": unlink, "os.chmod": write1,
        "os.chown": write1, "os.utime": write1, "os.truncate": write1, "os.setxattr": write1,
        "os.removexattr": write1, "os.chflags": write1, "os.lchflags": write1,
        "os.mkfifo": unlink, "os.mknod": unlink, "shutil.rmtree": unlink,
        "os.rename": write2, "os.link": link, "os.symlink": symlink, "shutil.copyfile": copy,
        "shutil.copymode": copy, "shutil.copystat": copy, "shutil.copytree": copy,
        "shutil.move": write2,
        "socket.connect": sock_addr, "socket.bind": lambda args: sock_addr(args, True), "socket.sendto": sock_addr,
        "socket.sendmsg": sock_addr, "socket.getaddrinfo": getaddrinfo,
        "socket.gethostbyname": byname, "socket.gethostbyname_ex": byname,
        "socket.gethostbyaddr": byname,
        "subprocess.Popen": run_, "os.system": run_, "os.exec": run_, "os.posix_spawn": run_,
        "os.spawn": run_, "os.startfile": run_, "pty.spawn": run_,
    }
    table = {k: v for k, v in table.items() if v is not None}
    if pol.run:
        for k in ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
                  "os.startfile", "pty.spawn"):
            del table[k]
    if pol.net_all:
        for k in [k for k in table if k.startswith("socket.")]:
            del table[k]
    get = table.get

    def hook(event, args):
        fn = get(event)
        if fn is None or getattr(_tls, "busy", False):
            return
        _tls.busy = True  # our own look-ups (realpath, getaddrinfo) are not checked
        try:
            fn(args)
        finally:
            _tls.busy = False

    return hook


def _sync_environ(plan, environ=None):
    """The process environment was already filtered in C; make os.environ (or `environ`, for
    _kh_worker.rehearse) agree. Its mapping is trimmed directly where it can be (os._Environ
    keeps the encoded pairs in _data): unsetenv again for each name the C layer already removed
    is most of the cost otherwise."""
    if environ is None:
        environ = os.environ
    grant = plan.get("env", False)
    if grant is not True:
        keep = set(grant or ())
        data = getattr(environ, "_data", None)
        if isinstance(data, dict):
            keep_b = {os.fsencode(k) for k in keep}  # _data's keys are bytes on POSIX
            for k in [k for k in data if k not in keep_b]:
                del data[k]
        else:
            for k in [k for k in environ if k not in keep]:
                del environ[k]
    environ.update(plan.get("set_env") or {})


def install(plan):
    """Installs the sandbox's Python layer for `plan` (the dict kh__sandbox_plan() made). Call
    once, after the OS layer is applied and before user code runs. Audit hooks cannot be
    removed; a second call is refused."""
    global _installed
    if _installed is not None:
        raise RuntimeError("the kernelhost sandbox is already installed")
    if not plan.get("confine"):
        _installed = False
        return None
    _sync_environ(plan)
    pol = Policy(plan)
    sys.addaudithook(_make_hook(pol))
    _installed = pol
    return pol

#!/usr/bin/python3
"""tests/remote/gateway.py: a Jupyter Server on loopback for the remote-kernel tests, driven
through stdin.

Started by a test (C, busted, mocha) with Debian's /usr/bin/python3. It runs Debian's
jupyter_server 1.23 on 127.0.0.1 (a free port, a token, an ipykernel kernelspec "python3" that
runs /usr/bin/python3, every Jupyter directory private to this run) and, in front of it, a TCP
proxy that the test can cut. It prints one JSON line:

    {"url": "http://127.0.0.1:<proxy port>", "server_url": "http://127.0.0.1:<port>",
     "token": "...", "pid": <server pid>}

With --kernelhost-jupyter PATH it also serves kernelspec "kernelhost", installed by that
kernelhost-jupyter (`install`), so a remote kernel can be a kernelhost kernel.

Then it answers each command line on stdin with one JSON line ({"ok": true, ...} or
{"ok": false, "error": "..."}):

    cut            closes every connection through the proxy (WebSockets included), as a
                   network drop would: {"ok": true, "cut": <connections closed>}
    kill           SIGKILLs the server and the kernels it started (a crash of the machine)
    start          starts the server again on the same port; answers once it serves
    kernels        the server's GET /api/kernels, asked directly: {"ok": true, "kernels": [...]}
    delete <id>    DELETE /api/kernels/<id> directly (a kernel culled on the server)
    posts          the JSON bodies of every POST /api/kernels that came through the proxy, in
                   order: {"ok": true, "posts": [...]} (what Enterprise Gateway would read, env
                   included; Jupyter Server itself ignores env)

End of input (the test exited or closed the pipe) stops everything and removes the files.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

PY = "/usr/bin/python3"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proxy:
    """Relays 127.0.0.1:<port> to the server; cut() drops every relayed connection."""

    def __init__(self, target_port):
        self.target = target_port
        self.lock = threading.Lock()
        self.conns = []
        self.sent = []  # what clients sent, per connection (the first 256 KiB of each)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                c.close()  # the server is down: the client sees a refused/reset connection
                continue
            for s in (c, u):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            log = bytearray()
            with self.lock:
                self.conns.append((c, u))
                self.sent.append(log)
            threading.Thread(target=self.pump, args=(c, u, log), daemon=True).start()
            threading.Thread(target=self.pump, args=(u, c, None), daemon=True).start()

    def pump(self, a, b, log):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                if log is not None and len(log) < 262144:
                    log += data
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def posts(self):
        """The bodies of the POST /api/kernels requests in the clients' bytes (HTTP/1.1 with
        Content-Length, as libcurl sends them): the test's own view of what went out."""
        out = []
        with self.lock:
            logs = [bytes(l) for l in self.sent]
        for log in logs:
            pos = 0
            while True:
                i = log.find(b"POST ", pos)
                if i < 0:
                    break
                head_end = log.find(b"\r\n\r\n", i)
                if head_end < 0:
                    break
                head = log[i:head_end].decode("latin-1")
                pos = head_end + 4
                length = 0
                for h in head.split("\r\n")[1:]:
                    k, _, v = h.partition(":")
                    if k.strip().lower() == "content-length":
                        length = int(v.strip())
                body = log[pos:pos + length]
                pos += length
                if head.split(" ")[1].split("?")[0].rstrip("/").endswith("/api/kernels"):
                    out.append(json.loads(body) if body else None)
        return out

    def cut(self):
        with self.lock:
            conns, self.conns = self.conns, []
        for pair in conns:
            for s in pair:
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
        return len(conns)


class Server:
    def __init__(self, kernelhost_jupyter=None):
        self.dir = tempfile.mkdtemp(prefix="kh-gateway-")
        self.port = free_port()
        self.token = "kh-test-" + os.urandom(12).hex()
        spec = os.path.join(self.dir, "data", "kernels", "python3")
        os.makedirs(spec)
        with open(os.path.join(spec, "kernel.json"), "w") as f:
            json.dump({"argv": [PY, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                       "display_name": "Python 3 (ipykernel)", "language": "python",
                       "metadata": {"debugger": False}}, f)
        os.makedirs(os.path.join(self.dir, "root"))
        paths = [os.path.join(self.dir, "data")]
        if kernelhost_jupyter:
            prefix = os.path.join(self.dir, "kh")
            subprocess.run([kernelhost_jupyter, "install", "--prefix", prefix, "--name", "kernelhost"],
                           check=True, stdout=subprocess.DEVNULL)
            paths.append(os.path.join(prefix, "share", "jupyter"))
        self.env = dict(os.environ)
        self.env.update({"JUPYTER_CONFIG_DIR": os.path.join(self.dir, "config"),
                         "JUPYTER_DATA_DIR": os.path.join(self.dir, "data"),
                         "JUPYTER_RUNTIME_DIR": os.path.join(self.dir, "runtime"),
                         "JUPYTER_PATH": os.pathsep.join(paths),
                         "JUPYTER_PLATFORM_DIRS": "1", "IPYTHONDIR": os.path.join(self.dir, "ipython"),
                         "PYDEVD_DISABLE_FILE_VALIDATION": "1"})
        self.env.pop("JUPYTER_GATEWAY_URL", None)
        self.proc = None

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def request(self, method, path):
        req = urllib.request.Request(self.url(path), method=method,
                                     headers={"Authorization": "token " + self.token})
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
        return json.loads(body) if body else None

    def start(self):
        self.log = open(os.path.join(self.dir, "server.log"), "ab")
        self.proc = subprocess.Popen(
            [PY, "-m", "jupyter_server", "--no-browser", "--ip=127.0.0.1", "--allow-root",
             "--port=%d" % self.port, "--port-retries=0",
             "--ServerApp.token=" + self.token, "--ServerApp.password=",
             "--ServerApp.root_dir=" + os.path.join(self.dir, "root"),
             "--ServerApp.disable_check_xsrf=True",
             "--MappingKernelManager.kernel_info_timeout=30",
             "--KernelSpecManager.ensure_native_kernel=False"],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                with open(os.path.join(self.dir, "server.log"), errors="replace") as f:
                    tail = f.read()[-2000:]
                raise RuntimeError("jupyter server exited with %s: %s" % (self.proc.returncode, tail))
            try:
                self.request("GET", "/api/status")
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("jupyter server did not answer within 60 s")
                time.sleep(0.05)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the kernels are in its session
            except ProcessLookupError:
                pass
            self.proc.wait()
        # ipykernels start their own sessions? No: they stay in the server's process group,
        # except those that a kernel manager moved; sweep what still runs from this directory.
        subprocess.run(["pkill", "-9", "-f", self.dir], check=False)

    def close(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def main():
    kj = None
    if len(sys.argv) == 3 and sys.argv[1] == "--kernelhost-jupyter":
        kj = sys.argv[2]
    elif len(sys.argv) != 1:
        sys.exit("usage: gateway.py [--kernelhost-jupyter PATH]")
    srv = Server(kj)
    try:
        srv.start()
        proxy = Proxy(srv.port)
        print(json.dumps({"url": "http://127.0.0.1:%d" % proxy.port,
                          "server_url": srv.url(""), "token": srv.token, "pid": srv.proc.pid}),
              flush=True)
        for line in sys.stdin:
            cmd = line.split()
            if not cmd:
                continue
            try:
                if cmd[0] == "cut":
                    out = {"ok": True, "cut": proxy.cut()}
                elif cmd[0] == "kill":
                    srv.kill()
                    out = {"ok": True}
                elif cmd[0] == "start":
                    srv.start()
                    out = {"ok": True, "pid": srv.proc.pid}
                elif cmd[0] == "posts":
                    out = {"ok": True, "posts": proxy.posts()}
                elif cmd[0] == "kernels":
                    out = {"ok": True, "kernels": srv.request("GET", "/api/kernels")}
                elif cmd[0] == "delete" and len(cmd) == 2:
                    srv.request("DELETE", "/api/kernels/" + cmd[1])
                    out = {"ok": True}
                else:
                    out = {"ok": False, "error": "unknown command %r" % line.strip()}
            except Exception as e:  # reported to the test, which fails with it
                out = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
            print(json.dumps(out), flush=True)
    finally:
        srv.close()


if __name__ == "__main__":
    main()

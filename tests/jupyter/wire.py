# wire.py: the harness of the Jupyter wire-protocol suite (tests/jupyter): the kernelspec under
# test, a private home for every Jupyter and IPython file, kernels started through jupyter_client,
# and helpers that wait for the messages of one request (with timeouts, never sleeps).
"""Harness for tests/jupyter.

The kernelspec under test is $KH_JUPYTER_KERNEL (default "kernelhost-test"); "python3" is
Debian's ipykernel, the reference every test must also pass against. Messages are received
through jupyter_client's Session, which checks every signature: a message the kernel signed
wrongly fails the test that receives it.
"""
import base64
import os
import re
import shutil
import time
import unittest
from queue import Empty

KERNEL_NAME = os.environ.get("KH_JUPYTER_KERNEL", "kernelhost-test")
# How long one wait for one message may take, in seconds. Generous: it bounds a wait for an
# event that must come, so a failure shows up as a timeout, never as a flaky pass.
TIMEOUT = float(os.environ.get("KH_JUPYTER_TIMEOUT", "30"))

DELIM = b"<IDS|MSG>"  # between a message's identities (or IOPub topic) and its signature
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def strip_ansi(text):
    return ANSI.sub("", text)


def isolate(home):
    """Points every directory Jupyter, IPython and matplotlib write to into `home`, so that no
    test reads or writes the real home: HOME, the XDG dirs, IPYTHONDIR, the Jupyter runtime,
    data and config dirs. MPLCONFIGDIR (matplotlib's font cache, slow to build) and JUPYTER_PATH
    (where kernelspecs are found) are kept when the caller set them."""
    dirs = {
        "HOME": home,
        "XDG_CACHE_HOME": os.path.join(home, ".cache"),
        "XDG_CONFIG_HOME": os.path.join(home, ".config"),
        "XDG_DATA_HOME": os.path.join(home, ".local", "share"),
        "XDG_RUNTIME_DIR": os.path.join(home, "run"),
        "IPYTHONDIR": os.path.join(home, ".ipython"),
        "JUPYTER_CONFIG_DIR": os.path.join(home, ".jupyter"),
        "JUPYTER_DATA_DIR": os.path.join(home, ".local", "share", "jupyter"),
        "JUPYTER_RUNTIME_DIR": os.path.join(home, "runtime"),
    }
    for var, path in dirs.items():
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.environ[var] = path
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(home, ".config", "matplotlib"))
    # The ipykernel reference: IPython records a cell's output in its history only with
    # HistoryManager.db_log_output, off by default; kernelhost's history_reply has the output
    # (kernelhost.h, kh_kernel_history). Turned on here, in the private IPYTHONDIR, so that both
    # kernels answer a history_request with output=True the same way.
    profile = os.path.join(dirs["IPYTHONDIR"], "profile_default")
    os.makedirs(profile, exist_ok=True)
    with open(os.path.join(profile, "ipython_kernel_config.py"), "w", encoding="utf-8") as fh:
        fh.write("c.HistoryManager.db_log_output = True\n")
    # ipykernel's debugger warns on stderr about frozen modules at every start; only noise here.
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    # matplotlib must pick each kernel's own backend (ipykernel's inline one, kernelhost's).
    os.environ.pop("MPLBACKEND", None)


# --- kernels -----------------------------------------------------------------------------


class Kernel:
    """One kernel started from a kernelspec through jupyter_client's KernelManager, with a
    BlockingKernelClient whose channels are started and ready (kernel_info answered)."""

    def __init__(self, name=None, spec_manager=None):
        from jupyter_client import KernelManager

        self._args = (name, spec_manager)
        # Set when a wait for a message ran out: the kernel may be stuck in that request, and
        # KernelTestCase then gives the next test a new kernel.
        self.timed_out = False
        self.km = KernelManager(kernel_name=name or KERNEL_NAME,
                                kernel_spec_manager=spec_manager or spec_manager_for())
        self.km.start_kernel()
        self.proc = self.km.provisioner.process  # the Popen of the kernel's process
        self._stash = {}
        self._contexts = []  # the clients' zmq contexts, ours to destroy
        self.kc = self.connect()
        self.info = self.request("kernel_info_request")["content"]

    def connect(self, new_session=False):
        """A client of the kernel whose channels are ready; new_session gives it its own
        session id (another front end), else it shares the manager's."""
        kw = {}
        if new_session:
            from jupyter_client.session import Session

            s = self.km.session
            kw["session"] = Session(key=s.key, signature_scheme=s.signature_scheme)
        ctx = monitored_context()
        self._contexts.append(ctx)
        kc = self.km.client(context=ctx, **kw)
        kc.start_channels()
        try:
            ctx.wait_connected()
            ready(kc)
        except BaseException:
            kc.stop_channels()
            raise
        return kc

    @property
    def is_ipykernel(self):
        """True for the reference kernel: tests say explicitly where kernelhost differs."""
        return self.info.get("implementation") == "ipython"

    def close(self):
        """Stops the clients and shuts the kernel down, if it still runs, as jupyter_client
        does (it escalates to SIGTERM and SIGKILL when the kernel does not exit)."""
        self.kc.stop_channels()
        if self.km.has_kernel:
            self.km.shutdown_kernel(now=False)
        else:
            self.km.cleanup_resources()
        for ctx in self._contexts:
            ctx.destroy(linger=0)

    # --- messages of one request ---------------------------------------------------------

    def send(self, channel, msg_type, content=None, **extra):
        """Sends a request on `channel` ("shell", "control", "stdin"); returns its msg_id."""
        msg = self.kc.session.msg(msg_type, content or {})
        msg.update(extra)
        getattr(self.kc, channel + "_channel").send(msg)
        return msg["header"]["msg_id"]

    def _next(self, channel, msg_id, deadline, what):
        """The next message of `channel` whose parent is `msg_id`. Messages of other parents
        are kept for the wait that asks for them (a test may collect a later request's
        messages first), so that no message is lost by waiting for another."""
        stash = self._stash.setdefault(channel, {})
        kept = stash.get(msg_id)
        if kept:
            return kept.pop(0)
        get = getattr(self.kc, "get_%s_msg" % channel)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.timed_out = True
                raise AssertionError("%s of %s: nothing more on %s after %ss"
                                     % (what, msg_id, channel, TIMEOUT))
            try:
                msg = get(timeout=left)
            except Empty:
                continue
            parent = msg["parent_header"].get("msg_id")
            if parent == msg_id:
                return msg
            stash.setdefault(parent, []).append(msg)

    def reply(self, msg_id, channel="shell"):
        """The reply to request `msg_id` on `channel`."""
        return self._next(channel, msg_id, time.monotonic() + TIMEOUT, "reply")

    def iopub(self, msg_id, until_idle=True, count=None):
        """The IOPub messages whose parent is `msg_id`, in order, up to and including the status
        idle (or `count` messages). Messages without a parent (iopub_welcome) or of other
        parents (another client's cells) are kept aside, not returned."""
        deadline = time.monotonic() + TIMEOUT
        out = []
        while True:
            try:
                out.append(self._next("iopub", msg_id, deadline, "IOPub"))
            except AssertionError as e:
                raise AssertionError("%s (got %s)" % (e, types(out))) from None
            if count is not None and len(out) >= count:
                return out
            if until_idle and is_idle(out[-1]):
                return out

    def stdin(self, msg_id):
        """The next stdin message (input_request) whose parent is `msg_id`."""
        return self._next("stdin", msg_id, time.monotonic() + TIMEOUT, "stdin")

    def request(self, msg_type, content=None, channel="shell"):
        """Sends a request and returns its reply, after the IOPub busy..idle that brackets it on
        shell (control requests are not bracketed by every kernel: not waited for)."""
        msg_id = self.send(channel, msg_type, content)
        reply = self.reply(msg_id, channel)
        if channel == "shell":
            self.iopub(msg_id)
        return reply

    def send_execute(self, code, **kw):
        """Sends an execute_request with every field of its content (kw overrides the
        defaults); returns its msg_id."""
        content = {"code": code, "silent": False, "store_history": True,
                   "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}
        content.update(kw)
        return self.send("shell", "execute_request", content)

    def execute(self, code, **kw):
        """Runs `code`; returns (execute_reply, [IOPub messages of the request up to idle])."""
        msg_id = self.send_execute(code, **kw)
        reply = self.reply(msg_id)
        return reply, self.iopub(msg_id)

    def ok(self, code, **kw):
        """Runs `code`, which must succeed; returns (reply content, IOPub messages)."""
        reply, msgs = self.execute(code, **kw)
        c = reply["content"]
        if c["status"] != "ok":
            raise AssertionError("%r failed: %s: %s\n%s" % (
                code, c.get("ename"), c.get("evalue"),
                strip_ansi("\n".join(c.get("traceback", [])))))
        return c, msgs

    def value(self, expr):
        """The text/plain of `expr` evaluated in the kernel."""
        _, msgs = self.ok(expr)
        results = [m for m in msgs if m["msg_type"] == "execute_result"]
        if len(results) != 1:
            raise AssertionError("%r gave %d execute_result" % (expr, len(results)))
        return results[0]["content"]["data"]["text/plain"]

    def listener(self):
        """A Session with the connection's key for messages read from sockets of a test's own
        (jupyter_client's Session refuses a signature it has seen: the kernel client's own one
        has seen every IOPub message already)."""
        from jupyter_client.session import Session

        s = self.km.session
        return Session(key=s.key, signature_scheme=s.signature_scheme)

    def descendants(self):
        """The kernel process and every process below it, as psutil.Process objects."""
        import psutil

        root = psutil.Process(self.proc.pid)
        return [root] + root.children(recursive=True)


def monitored_context():
    """A context for a kernel client (jupyter_client wants a zmq.asyncio.Context) that
    watches the sockets the client creates in it, so that its wait_connected() can wait until
    each has completed its handshake with the kernel."""
    import zmq
    import zmq.asyncio
    from zmq.utils.monitor import recv_monitor_message

    class Context(zmq.asyncio.Context):
        monitors = None  # declared here: pyzmq takes unknown attributes for socket options

        def socket(self, socket_type, **kw):
            sock = super().socket(socket_type, **kw)
            # shell, control, stdin and IOPub; not the heartbeat's REQ (its thread remakes it
            # at will) nor the monitors' own PAIR sockets.
            if socket_type in (zmq.DEALER, zmq.SUB):
                mon = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
                # A blocking view of the monitor socket, to wait on it outside asyncio.
                self.monitors.append((sock, mon, zmq.Socket.shadow(mon.underlying)))
            return sock

        def wait_connected(self):
            """A client's sockets retry their connection every 100 ms until the kernel has
            bound its ports. A fast kernel answers shell and IOPub before stdin has retried,
            and a ROUTER drops what it sends to a peer it does not know yet: the first
            input_request would be lost. So every socket waits for its handshake."""
            deadline = time.monotonic() + TIMEOUT
            for sock, mon, view in self.monitors:
                if not view.poll(max(0.0, deadline - time.monotonic()) * 1000):
                    raise AssertionError("a socket of type %s never connected" % sock.type)
                recv_monitor_message(view)
                sock.disable_monitor()
                mon.close(0)
            self.monitors = []

    ctx = Context()
    ctx.monitors = []
    return ctx


def ready(kc):
    """Waits until the kernel answers kernel_info on shell and its IOPub reaches kc, as
    jupyter_client's wait_for_ready does, without its fixed 0.2 s waits on IOPub (they are a
    fifth of a test's time here). The busy/idle of a kernel_info that the kernel published
    before kc's subscription reached it is lost: then another kernel_info is sent."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        msg_id = kc.kernel_info()
        while True:
            try:
                msg = kc.get_shell_msg(timeout=max(0.0, deadline - time.monotonic()))
            except Empty:
                raise AssertionError("no kernel_info_reply within %ss" % TIMEOUT) from None
            if msg["parent_header"].get("msg_id") == msg_id:
                break
        # Once the reply is here, the idle was published too: it arrives within moments if
        # the subscription was in place, or never.
        patience = time.monotonic() + 1.0
        while time.monotonic() < patience:
            try:
                msg = kc.get_iopub_msg(timeout=max(0.0, patience - time.monotonic()))
            except Empty:
                break
            if msg["parent_header"].get("msg_id") == msg_id and is_idle(msg):
                return
    raise AssertionError("IOPub never answered within %ss" % TIMEOUT)


def is_idle(msg):
    return msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle"


def merge_streams(msgs):
    """msgs with each run of consecutive stream messages of one name merged into the first
    (its text the run's text): how a kernel cuts a stream into messages is its own timing
    (ipykernel may send print('out')'s "out" and "\n" apart), what a front end shows is not."""
    out = []
    for m in msgs:
        prev = out[-1] if out else None
        if (m["msg_type"] == "stream" and prev is not None and prev["msg_type"] == "stream"
                and prev["content"]["name"] == m["content"]["name"]):
            out[-1] = dict(prev, content=dict(prev["content"],
                                              text=prev["content"]["text"] + m["content"]["text"]))
        else:
            out.append(m)
    return out


def types(msgs):
    """The message types of msgs, a run of one stream's messages counting once."""
    return [m["msg_type"] for m in merge_streams(msgs)]


def outputs(msgs):
    """The IOPub messages of a cell that are outputs (no status, no execute_input)."""
    return [m for m in msgs if m["msg_type"] not in ("status", "execute_input")]


def stream_text(msgs, name):
    return "".join(m["content"]["text"] for m in msgs
                   if m["msg_type"] == "stream" and m["content"]["name"] == name)


def b64decode(text):
    """A binary MIME value from JSON: base64 text, as the protocol carries it (line breaks
    allowed: ipykernel's are 76 characters a line, as base64.encodebytes writes them)."""
    return base64.b64decode("".join(text.split()), validate=True)


def spec_manager_for(kernel_dirs=None):
    """The KernelSpecManager of the tests: jupyter_client's, finding kernelspecs in
    `kernel_dirs` (default: Jupyter's path, JUPYTER_PATH first), without what costs a quarter
    of a second at every start: importing IPython for ~/.ipython/kernels (in the private home,
    empty) and ipykernel to offer a "python3" (Debian installs that kernelspec)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_core.paths import jupyter_path

    return KernelSpecManager(ensure_native_kernel=False,
                             kernel_dirs=kernel_dirs or jupyter_path("kernels"))


def signal_kernelspec(name, where):
    """A copy of kernelspec `name` in `where` (a directory) whose interrupt_mode is "signal";
    returns (the copy's name, a KernelSpecManager that finds it)."""
    import json

    spec = spec_manager_for().get_kernel_spec(name)
    copy = name + "-signal"
    dest = os.path.join(where, "kernels", copy)
    shutil.copytree(spec.resource_dir, dest)
    path = os.path.join(dest, "kernel.json")
    with open(path, encoding="utf-8") as fh:
        doc = json.load(fh)
    doc["interrupt_mode"] = "signal"
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh)
    return copy, spec_manager_for([os.path.join(where, "kernels")])


class KernelTestCase(unittest.TestCase):
    """One kernel per test class, started once (setUpClass) and shut down at the end; tests of
    the class share it and do not depend on each other's order."""

    kernel = None

    @classmethod
    def setUpClass(cls):
        cls.kernel = Kernel()

    @classmethod
    def tearDownClass(cls):
        if cls.kernel is not None:
            cls.kernel.close()
            cls.kernel = None

    def raw(self, channel):
        """A socket of the test's own on `channel` ("shell", "control", "iopub" subscribed to
        every topic, "hb"), connected as a client's would be, closed at the end of the test."""
        sock = getattr(self.kernel.km, "connect_" + channel)()
        self.addCleanup(sock.close, 0)
        return sock

    def assert_signed(self, frames):
        """Asserts that a message as received (its frames) is signed as the protocol says:
        after the identities (or topic) and the delimiter, the hex HMAC-SHA256 with the
        connection's key over header, parent header, metadata and content. Returns the index
        of the delimiter."""
        import hashlib
        import hmac

        i = frames.index(DELIM)
        self.assertEqual(self.kernel.km.session.signature_scheme, "hmac-sha256")
        want = hmac.new(self.kernel.km.session.key, b"".join(frames[i + 2:i + 6]),
                        hashlib.sha256).hexdigest()
        self.assertEqual(frames[i + 1].decode(), want)
        return i

    def setUp(self):
        # A test that timed out may have left the kernel stuck in its request: the tests after
        # it get a new kernel, so that one failure is reported once, not by every later test.
        k = type(self).kernel
        if k is not None and k.timed_out:
            k.close()
            type(self).kernel = Kernel(*k._args)

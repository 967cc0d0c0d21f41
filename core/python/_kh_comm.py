# _kh_comm: Jupyter comms inside a kernel (issue 13). The `comm` package's API (comm.create_comm,
# comm.get_comm_manager, register_target, on_msg, on_close, send, close) routed through
# kernelhost: each kernel has its own CommManager (main_thread kernels share one interpreter),
# a comm sends through the kernel it belongs to, and what it sends is an event of the running
# request, ordered with that request's other output. Messages from the host arrive as requests
# of the kernel's queue (Kernel.comm in _kh_runtime), handled here on the kernel's own thread.
# Imported only when a kernel first uses comms, and even then the `comm` package itself (33 ms:
# traitlets, logging and uuid behind it) only once the user's code imports it: a host's comm_open
# to a kernel whose code never imported comm does not pay for it.

import os
import sys

import _kh_streams


class _Base:
    """Stands for comm.base_comm.BaseComm until the package is imported (adopt_bases)."""


class _ManagerBase:
    """Stands for comm.base_comm.CommManager likewise."""


def adopt_bases():
    """Once `comm` is imported, its classes become the bases of ours, so that isinstance()
    checks of libraries hold; every method is ours either way."""
    base = sys.modules.get("comm.base_comm")
    if base is None:
        return
    if Comm.__bases__ == (_Base,):
        Comm.__bases__ = (base.BaseComm,)
    if CommManager.__bases__ == (_ManagerBase,):
        CommManager.__bases__ = (base.CommManager,)


def _new_id():
    """A comm id like uuid.uuid4().hex (32 hex digits), without uuid's import."""
    return os.urandom(16).hex()


def current_kernel():
    """The kernel of the calling thread: the one whose cell (or thread a cell started) runs it,
    in a worker the process's one kernel whatever thread asks; None in a host thread."""
    ctx = _kh_streams.current()
    if ctx is not None:
        return ctx.kernel
    worker = sys.modules.get("_kh_worker")
    return getattr(worker, "_kernel", None)


def manager_of(kernel):
    """The kernel's CommManager, made the first time it is needed."""
    m = kernel.comm_manager
    if m is None:
        m = kernel.comm_manager = CommManager(kernel)
    return m


def get_comm_manager():
    """comm.get_comm_manager(): the calling kernel's manager (None outside every kernel, which
    makes comm's own code say "Comms cannot be opened without a comm_manager.")."""
    k = current_kernel()
    return manager_of(k) if k is not None else None


def create_comm(*args, **kwargs):
    """comm.create_comm(target_name=..., data=..., metadata=..., buffers=..., comm_id=...): a
    Comm of the calling kernel, opened at once (a comm_open event) unless primary=False."""
    return Comm(*args, **kwargs)


def report(what):
    """Writes `what` and the exception being handled to stderr, which is the running request's
    stderr stream: a handler's failure is output of the message that ran it (ipykernel logs it
    the same way), never the end of the kernel."""
    import traceback
    sys.stderr.write("%s\n%s" % (what, traceback.format_exc()))


def _emit(kernel, msg_type, content, buffers):
    """One comm event of `kernel`, attributed to the request the calling thread runs for it (or
    that the kernel runs, for a thread a cell started), after the output it already printed.
    Buffers (bytes-like) go beside the JSON as bytes (kh_buffer_t at "/buffers/N", null in the
    content), or with the kernel option binary "base64" as base64 strings, as Jupyter's JSON
    messages carry them."""
    pairs = None
    if buffers:
        views = [memoryview(b).cast("B") for b in buffers]  # TypeError for what is no buffer
        if kernel.binary == "bytes":
            content["buffers"] = [None] * len(views)
            pairs = [("/buffers/%d" % i, v) for i, v in enumerate(views)]
        else:
            import base64
            content["buffers"] = [base64.b64encode(v).decode("ascii") for v in views]
    kernel.out.flush()
    ctx = _kh_streams.current()
    exec_id = ctx.exec_id if ctx is not None and ctx.kernel is kernel else kernel.active_exec
    kernel.emit(exec_id, msg_type, content, pairs)


class Comm(_Base):
    """A comm of one kernel, with comm.base_comm.BaseComm's interface."""

    def __init__(self, target_name="comm", data=None, metadata=None, buffers=None, comm_id=None,
                 primary=True, target_module=None, topic=None, _open_data=None,
                 _close_data=None, kernel=None, **kwargs):
        if kwargs:  # BaseComm hands them to object.__init__, which refuses them too
            raise TypeError("unexpected keyword arguments: %s" % ", ".join(sorted(kwargs)))
        self.kernel = kernel if kernel is not None else current_kernel()
        if self.kernel is None:
            raise RuntimeError("Comms cannot be opened without a comm_manager.")
        self.comm_id = comm_id if comm_id else _new_id()
        self.primary = primary
        self.target_name = target_name
        self.target_module = target_module
        self.topic = topic if topic else ("comm-%s" % self.comm_id).encode("ascii")
        self._open_data = _open_data if _open_data else {}
        self._close_data = _close_data if _close_data else {}
        self._msg_callback = None
        self._close_callback = None
        self._closed = True
        self._manager = None  # the manager it is registered with
        if self.primary:
            self.open(data=data, metadata=metadata, buffers=buffers)
        else:
            self._closed = False

    def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
        manager = self._manager if self._manager is not None else self.kernel.comm_manager
        if manager is None or manager is not self.kernel.comm_manager:
            return  # the kernel restarted since: the host's side of this comm is gone
        content = {"comm_id": self.comm_id, "data": {} if data is None else data}
        for k, v in keys.items():
            if v is not None:
                content[k] = v
        content["metadata"] = {} if metadata is None else metadata
        _emit(self.kernel, msg_type, content, buffers)

    def __del__(self):
        try:
            self.close(deleting=True)
        except Exception:  # at interpreter exit, or a kernel already gone
            pass

    def open(self, data=None, metadata=None, buffers=None):
        if data is None:
            data = self._open_data
        manager = manager_of(self.kernel)
        manager.register_comm(self)
        try:
            self.publish_msg("comm_open", data=data, metadata=metadata, buffers=buffers,
                             target_name=self.target_name, target_module=self.target_module)
            self._closed = False
        except Exception:
            manager.unregister_comm(self)
            raise

    def close(self, data=None, metadata=None, buffers=None, deleting=False):
        if self._closed:
            return
        self._closed = True
        if data is None:
            data = self._close_data
        self.publish_msg("comm_close", data=data, metadata=metadata, buffers=buffers)
        if not deleting and self._manager is not None:
            self._manager.comms.pop(self.comm_id, None)

    def send(self, data=None, metadata=None, buffers=None):
        self.publish_msg("comm_msg", data=data, metadata=metadata, buffers=buffers)

    def on_close(self, callback):
        self._close_callback = callback

    def on_msg(self, callback):
        self._msg_callback = callback

    def handle_close(self, msg):
        if self._close_callback:
            self._close_callback(msg)

    def handle_msg(self, msg):
        if self._msg_callback:
            # IPython's pre/post_execute events around the callback, as ipykernel fires them,
            # when the kernel has an IPython shell (without one, IPython is not imported).
            shell = self.kernel.ipython
            if shell is not None:
                shell.events.trigger("pre_execute")
            self._msg_callback(msg)
            if shell is not None:
                shell.events.trigger("post_execute")


class CommManager(_ManagerBase):
    """One kernel's comms and targets, with comm.base_comm.CommManager's interface; the three
    handlers take Jupyter's messages as ipykernel's do, (stream, ident, msg)."""

    def __init__(self, kernel=None):
        self.kernel = kernel
        self.comms = {}
        self.targets = {}

    def register_target(self, target_name, f):
        if isinstance(f, str):
            import importlib
            module, _, name = f.rpartition(".")
            f = getattr(importlib.import_module(module), name)
        self.targets[target_name] = f

    def unregister_target(self, target_name, f):
        return self.targets.pop(target_name)

    def register_comm(self, comm):
        self.comms[comm.comm_id] = comm
        comm._manager = self
        return comm.comm_id

    def unregister_comm(self, comm):
        return self.comms.pop(comm.comm_id)

    def get_comm(self, comm_id):
        return self.comms.get(comm_id)

    def forget(self):
        """The kernel restarted or closed: its comms end without a message (the host forgets
        them too), and nothing they still send is heard."""
        for comm in list(self.comms.values()):
            comm._closed = True
        self.comms.clear()
        self.targets.clear()

    def comm_open(self, stream, ident, msg):
        content = msg["content"]
        comm_id = content["comm_id"]
        target_name = content["target_name"]
        f = self.targets.get(target_name)
        comm = Comm(comm_id=comm_id, primary=False, target_name=target_name, kernel=self.kernel)
        self.register_comm(comm)
        if f is not None:
            try:
                f(comm, msg)
                return
            except Exception:
                report("Exception opening comm with target: %s" % target_name)
        # An unknown target, or its opener raised: the host's comm is closed again, as
        # ipykernel does.
        try:
            comm.close()
        except Exception:
            report("Could not close comm %s after its comm_open failed" % comm_id)

    def comm_msg(self, stream, ident, msg):
        comm_id = msg["content"]["comm_id"]
        comm = self.comms.get(comm_id)
        if comm is None:  # closed meanwhile, or never opened: dropped, as ipykernel does
            return
        try:
            comm.handle_msg(msg)
        except Exception:
            report("Exception in comm_msg for %s" % comm_id)

    def comm_close(self, stream, ident, msg):
        comm_id = msg["content"]["comm_id"]
        comm = self.comms.pop(comm_id, None)
        if comm is None:
            return
        comm._closed = True
        try:
            comm.handle_close(msg)
        except Exception:
            report("Exception in comm_close for %s" % comm_id)


_session = _new_id()
adopt_bases()


def handle(kernel, exec_id, msg_type, content_json, buffers=None):
    """Hands one message from the host to the kernel's manager, as ipykernel's shell would: the
    handlers get Jupyter's message dict (header, content, metadata, buffers as memoryviews)."""
    import json
    content = json.loads(content_json)
    metadata = content.pop("metadata", None)
    content.pop("buffers", None)
    header = {"msg_id": exec_id, "msg_type": msg_type, "username": "kernelhost",
              "session": _session, "date": "", "version": "5.3"}
    msg = {"header": header, "msg_id": exec_id, "msg_type": msg_type, "parent_header": {},
           "metadata": metadata if metadata is not None else {}, "content": content,
           "buffers": [memoryview(b) for b in buffers] if buffers else []}
    getattr(manager_of(kernel), msg_type)(None, None, msg)

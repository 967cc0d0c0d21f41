# _kh_streams: stdout/stderr capture for kernels. Writes are routed by thread to the kernel
# and request that own the thread, batched, and flushed on size, on a short timer, before any
# display event and at the end of a cell, never reordered.

import io
import threading
import time

# Flush when a batch reaches this many characters, or this long after its first write.
FLUSH_CHARS = 64 * 1024
FLUSH_INTERVAL = 0.02

_tls = threading.local()


def current():
    """The (kernel, exec_id) context of this thread, or None outside any kernel."""
    return getattr(_tls, "ctx", None)


def set_current(ctx):
    _tls.ctx = ctx


class Context:
    __slots__ = ("kernel", "exec_id", "out")

    def __init__(self, kernel, exec_id):
        self.kernel = kernel
        self.exec_id = exec_id
        self.out = kernel.out


class _Flusher:
    """One daemon thread that flushes batches whose timer ran out."""

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._due = {}
        self._thread = None

    def schedule(self, buf, deadline):
        with self._cond:
            if buf in self._due:
                return
            self._due[buf] = deadline
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="kernelhost-flusher",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    def cancel(self, buf):
        with self._cond:
            self._due.pop(buf, None)

    def _run(self):
        set_current(None)  # the flusher belongs to no kernel
        while True:
            with self._cond:
                while not self._due:
                    self._cond.wait()
                now = time.monotonic()
                ready = [b for b, d in self._due.items() if d <= now]
                if not ready:
                    self._cond.wait(min(self._due.values()) - now)
                    continue
                for b in ready:
                    del self._due[b]
            for b in ready:
                try:
                    b.flush()
                except Exception:
                    pass


flusher = _Flusher()


class OutBuffer:
    """A kernel's pending stream output: one batch of one stream for one request."""

    def __init__(self, emit):
        self._emit = emit
        self._lock = threading.Lock()
        self._parts = []
        self._size = 0
        self._name = None
        self._exec_id = None
        self.limit = None      # maxOutputBytes per cell, or None
        self.written = 0       # characters delivered for the current cell
        self.truncated = False
        self._scheduled = False  # a timed flush is pending

    def write(self, name, exec_id, text):
        lock = self._lock
        lock.acquire()
        try:
            if self._parts and (name != self._name or exec_id != self._exec_id):
                self._flush_locked()
            self._name = name
            self._exec_id = exec_id
            self._parts.append(text)
            self._size += len(text)
            if self._size >= FLUSH_CHARS:
                self._flush_locked()
                return
            if self._scheduled:
                return
            self._scheduled = True
        finally:
            lock.release()
        flusher.schedule(self, time.monotonic() + FLUSH_INTERVAL)

    def flush(self):
        with self._lock:
            self._flush_locked()

    def _flush_locked(self):
        self._scheduled = False
        if not self._parts:
            return
        text = "".join(self._parts)
        self._parts = []
        self._size = 0
        if self.limit is not None:
            if self.truncated:
                return
            room = self.limit - self.written
            if len(text) > room:
                text = text[:max(room, 0)] + (
                    "\n[kernelhost: output truncated after %d characters (maxOutputBytes)]\n"
                    % self.limit)
                self.truncated = True
        self.written += len(text)
        self._emit(self._exec_id, "stream", {"name": self._name, "text": text})

    def start_cell(self):
        with self._lock:
            self.written = 0
            self.truncated = False


try:
    import _kernelhost
    _COutBuffer = _kernelhost.OutBuffer
    _CWriter = _kernelhost.Writer
except (ImportError, AttributeError):
    _COutBuffer = _CWriter = None


def _schedule(buf):
    flusher.schedule(buf, time.monotonic() + FLUSH_INTERVAL)


def new_out_buffer(emit):
    """A kernel's OutBuffer: the C one (py-stream.c) when built in, else the Python one."""
    if _COutBuffer is not None:
        return _COutBuffer(emit, _schedule)
    return OutBuffer(emit)


class RoutedStream(io.TextIOBase):
    """Installed as sys.stdout / sys.stderr: sends each write to the kernel that owns the
    writing thread; threads outside every kernel write to the original stream."""

    def __init__(self, name, fallback):
        super().__init__()
        self.name = name
        self._fallback = fallback
        if _CWriter is not None:
            # The same routing as write() below, in C: print() is the hot path of a kernel.
            self.write = _CWriter(name, fallback, _tls)

    @property
    def encoding(self):
        return "utf-8"

    @property
    def errors(self):
        return "replace"

    def writable(self):
        return True

    def isatty(self):
        return False

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError("write() argument must be str, not %s" % type(s).__name__)
        ctx = getattr(_tls, "ctx", None)
        if ctx is None:
            fb = self._fallback
            if fb is not None:
                return fb.write(s)
            return len(s)
        if s:
            ctx.out.write(self.name, ctx.exec_id, s)
        return len(s)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        ctx = getattr(_tls, "ctx", None)
        if ctx is None:
            if self._fallback is not None:
                self._fallback.flush()
            return
        ctx.out.flush()

    def fileno(self):
        raise io.UnsupportedOperation("kernel streams have no file descriptor")

    def close(self):
        # Closing the kernel's stream must not close anything the host owns.
        pass

    @property
    def closed(self):
        return False

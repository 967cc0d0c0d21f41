# _kh_streams: stdout/stderr capture for kernels. Writes are routed by thread to the kernel
# and request that own the thread, batched, and flushed on size, on a short timer, before any
# display event and at the end of a cell, never reordered.

import io
import threading
import time

import _kernelhost

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
    """A kernel's own thread while it runs request exec_id; allow_stdin False: that request's
    input() raises StdinNotImplementedError (Jupyter's allow_stdin, _kh_runtime.raw_input)."""
    __slots__ = ("kernel", "exec_id", "out", "allow_stdin")

    def __init__(self, kernel, exec_id, allow_stdin=True):
        self.kernel = kernel
        self.exec_id = exec_id
        self.out = kernel.out
        self.allow_stdin = allow_stdin


class ThreadContext:
    """The context of a thread a cell started: its output goes to the request its kernel runs
    when it writes (between cells, to the kernel's own events), the rule ipykernel 6 follows and
    the only one fd-level output (a worker's os.write(1, ...)) can follow too. Its input()
    follows the allow_stdin of the cell that started it (or of the thread that did), whichever
    request runs when it asks: a front end that said it cannot answer is never asked."""
    __slots__ = ("kernel", "out", "allow_stdin")

    def __init__(self, kernel, allow_stdin=True):
        self.kernel = kernel
        self.out = kernel.out
        self.allow_stdin = allow_stdin

    @property
    def exec_id(self):
        return self.kernel.active_exec


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


def _schedule(buf):
    flusher.schedule(buf, time.monotonic() + FLUSH_INTERVAL)


def new_out_buffer(emit):
    """A kernel's pending stream output (_kernelhost.OutBuffer, core/src/py-stream.c): one batch
    of one stream for one request, flushed on size, by the timer, before displays and at the end
    of a cell, cut at its `limit` (maxOutputBytes)."""
    return _kernelhost.OutBuffer(emit, _schedule)


class RoutedStream(io.TextIOBase):
    """Installed as sys.stdout / sys.stderr: sends each write to the kernel that owns the
    writing thread; threads outside every kernel write to the original stream."""

    def __init__(self, name, fallback):
        super().__init__()
        self.name = name
        self._fallback = fallback
        # write() is _kernelhost.Writer (C): print() is the hot path of a kernel. It routes each
        # write to the kernel that owns the thread, or to `fallback` outside every kernel.
        self.write = _kernelhost.Writer(name, fallback, _tls)

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

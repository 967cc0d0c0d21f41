# _kh_worker: the Python side of the kernelhost-worker process (core/worker/main.c), never
# imported in the host: its SIGINT handler and the opening of its one kernel. Everything here
# runs on the worker's main thread, where CPython runs signal handlers.

# _signal, not signal: the same functions without signal.py's enum classes, which cost every
# worker ~1.5 ms and the memory of the enum module at start (measured with -X importtime).
import _signal
import os
import sys

import _kernelhost
import _kh_runtime


_kernel = None  # this process's one kernel, once opened


def _kh_sigint(signum, frame):
    # Tells main.c that the interrupt landed (it re-sends SIGINT until this runs: a signal that
    # arrives just before a blocking call starts is otherwise only seen when the call returns).
    _kernelhost.note_interrupt()
    # Between the phases of a request (the runtime's bookkeeping) the interrupt is owed to the
    # next phase instead of raised where it would escape the runtime (py-gate.c).
    if _kernel is not None and not _kernel.gate.signal():
        return
    raise KeyboardInterrupt


def install_sigint():
    """Installs the handler whatever SIGINT's inherited disposition was. CPython installs its own
    handler only when SIGINT is not ignored at start-up, and a worker spawned from a background
    job inherits it ignored; py-start.c has reset it to the default before this runs."""
    _signal.signal(_signal.SIGINT, _kh_sigint)


def _after_fork_in_child():
    """In a child that a cell forked with os.fork(): main.c has closed the protocol in it
    (see the top of core/worker/main.c). What it prints goes straight to fds 1 and 2, which
    the worker captures, so the child's output reaches the host as the running cell's streams;
    its kernel gets a fresh output buffer and flusher, since the worker's threads (and any lock
    they held at the fork) did not come along."""
    import io
    import _kh_streams

    def fd_stream(fd):
        return io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), encoding="utf-8",
                                errors="replace", line_buffering=True)

    sys.stdout = fd_stream(1)
    sys.stderr = fd_stream(2)
    _kh_streams.flusher = _kh_streams._Flusher()
    k = _kernel
    if k is not None:
        out = _kh_streams.new_out_buffer(k.emit)
        out.limit = k.out.limit
        k.out = out
        ctx = _kh_streams.current()
        if ctx is not None and ctx.kernel is k:
            ctx.out = out


class _ScratchEnviron:
    """What _kh_sandbox._sync_environ touches of os.environ, for rehearse()."""

    def __init__(self):
        self._data = {b"KH_REHEARSAL_A": b"1", b"KH_REHEARSAL_B": b"2"}

    def update(self, pairs):
        self._data.update((os.fsencode(k), os.fsencode(v)) for k, v in pairs.items())


def rehearse():
    """What opening a sandboxed kernel and its first cell will run (parsing the plan, building
    the sandbox's policy and audit hook, syncing an environment, compiling and running code), on
    throwaway data: nothing is kept, installed or changed. The fork server's template runs it
    until the interpreter has specialised that code (main.c's tmpl_preload): its children
    inherit it specialised rather than each rewriting (and so copying) those pages as a kernel
    opens."""
    import json
    import _kh_sandbox

    if "matplotlib.pyplot" in sys.modules:
        # Every kernel's opening imports it then (Kernel.reset closes its figures), and with it
        # the Agg backend's extension: a few MB each, were it not loaded before the fork.
        import _kh_mpl  # noqa: F401
    plan = json.loads('{"confine": true, "read": ["/tmp"], "write": [], "runtime_read": '
                      '["/usr/lib", "/usr/share", "/etc/python3"], "runtime_read_write": '
                      '["/dev/null"], "net": false, "env": ["HOME"], "set_env": {"A": "1"}}')
    pol = _kh_sandbox.Policy(plan)
    _kh_sandbox._make_hook(pol)
    _kh_sandbox._sync_environ(plan, _ScratchEnviron())
    exec(compile("_ = [1 + 1]", "<kernelhost rehearsal>", "exec"), {})


def open_kernel(kernel_id, env_json, cwd, max_output, figure_formats=None):
    """Applies the kernel's options that live inside this process and returns its runtime Kernel.
    Called when the host opens the kernel, which for a pooled worker is long after start-up, so
    nothing here may be needed before then."""
    env = {}
    if env_json:  # json only when needed: every idle worker would pay for it
        import json

        env = json.loads(env_json)
    if env:
        os.environ.update(env)
        # The interpreter ignores the host's PYTHON* variables (py-start.c); a kernel's own
        # PYTHONPATH is honoured deliberately, as the documentation says. It can only be applied
        # here: the interpreter was started before the kernel's options were known.
        extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        sys.path[1:1] = [p for p in extra if p not in sys.path]
    if cwd:
        os.chdir(cwd)
    global _kernel
    k = _kh_runtime.Kernel(None, kernel_id, True)
    k.out.limit = max_output
    k.figure_formats_option = figure_formats  # read by _kh_mpl, as in main_thread (py-host.c)
    _kernel = k
    os.register_at_fork(after_in_child=_after_fork_in_child)
    return k

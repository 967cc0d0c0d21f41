# _kh_runtime: the code that runs inside every kernel, main_thread and worker alike. It runs
# cells with IPython's semantics (last expression displayed, `_`, `;`, top-level await),
# captures output, turns exceptions into execute_error events, and talks to the C core only
# through the builtin module _kernelhost (emit, Gate).

# _ast, not ast: the compiler's node classes and flags without ast.py's import cost.
import _ast as ast
import builtins
import sys
import threading
import time
import types

import _kernelhost
import _kh_display
import _kh_streams

_CELL_PREFIX = "<cell-"
# Cell sources, for tracebacks and inspect: handed to linecache once something imports it
# (traceback, inspect), so a kernel does not pay for linecache/tokenize/re at start.
_cell_sources = {}
_cell_synced = 0


def _sync_linecache():
    global _cell_synced
    lc = sys.modules.get("linecache")
    if lc is None or _cell_synced == len(_cell_sources):
        return
    for name, entry in _cell_sources.items():
        lc.cache.setdefault(name, entry)
    _cell_synced = len(_cell_sources)
# inspect.CO_COROUTINE, without importing inspect (and asyncio only when a cell awaits): both
# are slow to import, and every worker pays for the runtime's imports at start.
_CO_COROUTINE = 0x80
# Every CO_FUTURE_* flag (__future__'s compiler_flag values): the future features a cell turned
# on stay on for the kernel's later cells, as IPython's compiler keeps them.
_CO_FUTURE_MASK = 0x1FE0000
_code_cache = {}
_initialized = False
_orig_sleep = time.sleep
_orig_input = builtins.input


def _noop():
    pass


def _encode_default(obj):
    raise TypeError("Object of type %s is not JSON serializable" % type(obj).__name__)


# Events whose "data" is a MIME bundle (Kernel.emit splits its binary values off).
_BUNDLE_EVENTS = frozenset(("display_data", "update_display_data", "execute_result"))


def _make_encoder():
    """One C encoder from _json, made once (json.dumps builds a new one for every call, ~2.5 us,
    and importing json costs every worker its import time and memory)."""
    try:
        from _json import make_encoder, encode_basestring
    except ImportError:
        import json
        return json.JSONEncoder(ensure_ascii=False, allow_nan=False,
                                separators=(",", ":")).encode
    it = make_encoder({}, _encode_default, encode_basestring, None, ":", ",", False, False, False)
    return lambda obj: "".join(it(obj, 0))


_encode = _make_encoder()


def _finite(v):
    """NaN and infinities have no JSON form: they become null (as JSON.stringify does)."""
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def _dumps(obj):
    """obj as UTF-8 JSON bytes; ValueError when it has no JSON form even after _jsonable (a
    payload nested deeper than Python's recursion limit lets the encoder go): the event that
    carries it then fails as the cell's error instead of reaching the host as something else."""
    global _encode
    try:
        s = _encode(obj)
    except (TypeError, ValueError, RecursionError):
        # The encoder's circular-reference markers may be left dirty: start a fresh one.
        _encode = _make_encoder()
        import json
        try:
            s = json.dumps(_finite(_kh_display._jsonable(obj)), ensure_ascii=False,
                           allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError, RecursionError) as exc:
            raise ValueError("the output cannot be encoded as JSON: %s" % exc) from None
    # Lone surrogates (from surrogateescape'd bytes) would make invalid UTF-8: replace them.
    return s.encode("utf-8", "replace")


def _kernel_of_this_thread():
    """The kernel whose own thread this is (not a thread a cell started), or None."""
    ctx = _kh_streams.current()
    if ctx is None:
        return None
    k = ctx.kernel
    return k if k.thread_ident == threading.get_ident() else None


def _sleep(secs):
    """time.sleep that an interrupt wakes on a kernel's own thread (main_thread kernels run on
    threads, where signals cannot break a sleep)."""
    k = _kernel_of_this_thread()
    if k is None or k.signals_work:
        return _orig_sleep(secs)
    if secs < 0:
        raise ValueError("sleep length must be non-negative")
    k.wake.clear()
    if k.wake.wait(secs):
        # Woken by an interrupt: the KeyboardInterrupt lands at the next bytecode boundary.
        k.wake.clear()
        _orig_sleep(0)


def _get_ipython():
    """builtins.get_ipython (issue 11): the IPython shell of the kernel that asks, made the
    first time it is asked for (_kh_ipython); None without IPython or outside every kernel."""
    ctx = _kh_streams.current()
    if ctx is None:
        return None
    shell = ctx.kernel.ipython
    if shell is None:
        import _kh_ipython
        shell = _kh_ipython.shell_for(ctx.kernel)
    return shell


def _ipython_source(kernel, code, error):
    """Python source for a cell that is not valid Python (issue 11): IPython's translation of
    its magics, shell escapes and help (_kh_ipython), or `error` again."""
    import _kh_ipython
    return _kh_ipython.transform(kernel, code, error)


def _input(prompt=""):
    ctx = _kh_streams.current()
    if ctx is None:
        return _orig_input(prompt)
    return ctx.kernel.raw_input(str(prompt), False)


def _getpass(prompt="Password: ", stream=None):
    ctx = _kh_streams.current()
    if ctx is None:
        return _orig_getpass(prompt, stream)
    return ctx.kernel.raw_input(str(prompt), True)


_orig_getpass = None


class StdinNotImplementedError(NotImplementedError):
    """input() (getpass, a sys.stdin read) in a cell whose request said allow_stdin false: the
    front end cannot answer input requests. Raised only where IPython, whose class of this name
    ipykernel raises, cannot be imported; `kernelhost.StdinNotImplementedError` is the class
    raised either way."""
    __module__ = "kernelhost"


_stdin_error_class = None


def stdin_error():
    """The class input() raises without allow_stdin: IPython.core.error's, as ipykernel's
    kernels raise it (so `except StdinNotImplementedError` written for IPython catches it), or
    the runtime's own. Looked up once per process, at the first need: importing IPython costs
    ~0.3 s, which no kernel should pay at start."""
    global _stdin_error_class
    if _stdin_error_class is None:
        try:
            import _kh_ipython
            with _kh_ipython._Home():
                from IPython.core.error import StdinNotImplementedError as cls
        except Exception:  # ImportError, or a broken or sandboxed install
            cls = StdinNotImplementedError
        _stdin_error_class = cls
    return _stdin_error_class


class _RoutedStdin:
    """sys.stdin: reads in a kernel become input requests; closing it (as exit() does) is
    harmless."""

    def __init__(self, fallback):
        self._fallback = fallback

    def readline(self, size=-1):
        ctx = _kh_streams.current()
        if ctx is None:
            return self._fallback.readline(size) if self._fallback else ""
        return ctx.kernel.raw_input("", False) + "\n"

    def read(self, size=-1):
        return self.readline()

    def close(self):
        pass

    closed = False

    def isatty(self):
        return False

    def fileno(self):
        if self._fallback is not None:
            return self._fallback.fileno()
        raise OSError("no stdin")

    encoding = "utf-8"


def _patch_threading():
    orig_start = threading.Thread.start
    orig_bootstrap = threading.Thread._bootstrap_inner

    def start(self):
        ctx = _kh_streams.current()
        self._kh_ctx = (_kh_streams.ThreadContext(ctx.kernel, ctx.allow_stdin)
                        if ctx is not None else None)
        return orig_start(self)

    def _bootstrap_inner(self):
        ctx = getattr(self, "_kh_ctx", None)
        if ctx is not None:
            _kh_streams.set_current(ctx)
        return orig_bootstrap(self)

    threading.Thread.start = start
    threading.Thread._bootstrap_inner = _bootstrap_inner


def _patch_getpass(module):
    global _orig_getpass
    _orig_getpass = module.getpass
    module.getpass = _getpass


def _use_kernelhost_backend(module):
    try:
        module.use("module://_kh_mpl")
    except Exception:
        pass


def _linecache_imported(module):
    # A cell's source reaches linecache only once something imports it (a warning being shown,
    # traceback, inspect): without this the first cell's warnings would lack their source line.
    global _cell_synced
    _cell_synced = 0
    _sync_linecache()


def _asyncio_imported(module):
    """Gives each kernel thread an event loop of its own, as a Jupyter kernel's thread has one:
    asyncio.get_event_loop() in a cell returns the kernel's loop (the one top-level await runs
    on) instead of raising "There is no current event loop in thread" on a main_thread kernel's
    thread. Threads outside every kernel keep asyncio's default policy."""
    base = type(module.get_event_loop_policy())

    class _KernelPolicy(base):
        def get_event_loop(self):
            k = _kernel_of_this_thread()
            if k is not None:
                return k.event_loop()
            return super().get_event_loop()

        def set_event_loop(self, loop):
            k = _kernel_of_this_thread()
            if k is not None:
                k.loop = loop
            super().set_event_loop(loop)

    module.set_event_loop_policy(_KernelPolicy())


def _comm_imported(module):
    """The `comm` package's two hooks (as ipykernel replaces them) route through kernelhost:
    comm.create_comm() makes a comm of the calling kernel, comm.get_comm_manager() returns that
    kernel's manager (main_thread kernels share the interpreter, not their comms). _kh_comm is
    imported at the first call: it imports comm.base_comm, which may be what is running now."""
    def create_comm(*args, **kwargs):
        import _kh_comm
        return _kh_comm.create_comm(*args, **kwargs)

    def get_comm_manager():
        import _kh_comm
        return _kh_comm.get_comm_manager()

    module.create_comm = create_comm
    module.get_comm_manager = get_comm_manager
    if "_kh_comm" in sys.modules:  # comms were used before the package was imported
        sys.modules["_kh_comm"].adopt_bases()


# Modules kernelhost adjusts right after their first import, without importing them eagerly.
_POST_IMPORT = {"matplotlib": _use_kernelhost_backend, "getpass": _patch_getpass,
                "linecache": _linecache_imported, "asyncio": _asyncio_imported,
                "comm": _comm_imported}


def _install_post_import_hooks():
    """Runs _POST_IMPORT's function on a module as soon as it is first imported."""
    import importlib.machinery

    class _Loader:
        def __init__(self, inner, after):
            self.inner = inner
            self.after = after

        def create_module(self, spec):
            return self.inner.create_module(spec)

        def exec_module(self, module):
            self.inner.exec_module(module)
            self.after(module)

    class _Finder:
        def find_spec(self, fullname, path, target=None):
            after = _POST_IMPORT.get(fullname)
            if after is None:
                return None
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader, after)
            return spec

    sys.meta_path.insert(0, _Finder())
    for name, after in _POST_IMPORT.items():  # already imported (by site, by the host)
        if name in sys.modules:
            after(sys.modules[name])


def init(signals_work=False):
    """Process-wide set-up, once: routed streams, input, sleep, threads, display hooks."""
    global _initialized
    if _initialized:
        return
    _initialized = True
    sys.stdout = _kh_streams.RoutedStream("stdout", sys.__stdout__)
    sys.stderr = _kh_streams.RoutedStream("stderr", sys.__stderr__)
    sys.stdin = _RoutedStdin(sys.__stdin__)
    builtins.input = _input
    # IPython keeps display() in builtins, so it survives globals().clear() and reaches code
    # that runs outside the cell's namespace.
    builtins.display = _kh_display.display
    builtins.get_ipython = _get_ipython  # issue 11: IPython's get_ipython() in every kernel
    if not signals_work:
        time.sleep = _sleep
    _patch_threading()
    _install_post_import_hooks()
    _kh_display.install_ipython_hooks()
    if "" not in sys.path:
        sys.path.insert(0, "")


class Kernel:
    """One kernel's Python side: namespace, counter, output routing, interrupt state."""

    def __init__(self, sink, kernel_id, signals_work=False, host_thread=False):
        self.sink = sink
        self.kernel_id = kernel_id
        # On the host's own thread nothing can answer an input request while the cell runs.
        self.host_thread = host_thread
        self.signals_work = signals_work  # True in a worker: SIGINT interrupts directly
        self.out = _kh_streams.new_out_buffer(self.emit)
        self.thread_ident = threading.get_ident()
        self.wake = threading.Event()
        # When interrupts may land in this thread: only inside gate.call(), which runs every
        # phase of a request that runs user code (py-gate.c), so none lands in bookkeeping.
        self.gate = _kernelhost.Gate()
        self.loop = None
        self._input_cond = threading.Condition()
        self._input_value = None
        self._input_waiting = False
        self._serial = 0
        self.active_exec = ""       # the request whose cell is running now, "" between cells
        self.future_flags = 0       # __future__ features turned on by earlier cells
        # A worker holds one kernel: its namespace is the process's own __main__, so pickle and
        # multiprocessing find cell-defined classes and functions. Kernels sharing one
        # interpreter each get a module named __main__ of their own, which is sys.modules's
        # __main__ while one of their cells runs (execute()).
        if signals_work:
            self.module = sys.modules["__main__"]
            self.cell_suffix = ">"
        else:
            self.module = types.ModuleType("__main__")
            # Kernels sharing one interpreter share linecache: their cells' names must differ.
            self.cell_suffix = ":%s>" % kernel_id
        self._host_main = sys.modules.get("__main__")
        self.ipython = None  # this kernel's IPython shell, once a cell needed it (_kh_ipython)
        self.comm_manager = None  # this kernel's comms and targets, once used (_kh_comm)
        # The kernel option binary: "bytes" (kh_buffer_t beside the JSON) or "base64"; set by
        # the host after the Kernel is made (py-host.c, the worker's do_open).
        self.binary = "bytes"
        self.reset()
        _kh_streams.set_current(_kh_streams.Context(self, ""))

    # -- plumbing ---------------------------------------------------------------------------

    def emit(self, exec_id, kind, payload, buffers=None):
        """Sends one event. The MIME bundle of a display or result goes through split_binary:
        binary values travel beside the JSON (or as base64, with the kernel option binary)."""
        if kind in _BUNDLE_EVENTS:
            data = payload.get("data")
            if data:
                bufs = []
                split = _kh_display.split_binary(data, "/data", bufs, self.binary)
                if split is not data:
                    payload = dict(payload, data=split)
                if bufs:
                    buffers = bufs if buffers is None else list(buffers) + bufs
        _kernelhost.emit(self.sink, exec_id or "", kind, _dumps(payload), buffers)

    def reset(self):
        self.execution_count = 0
        if self.ipython is not None:  # issue 11: a new namespace gets a new shell when asked
            import _kh_ipython
            _kh_ipython.release(self)
        self.future_flags = 0
        if self.comm_manager is not None:  # a new session has no comms (the host forgets them)
            self.comm_manager.forget()
            self.comm_manager = None
        self.ns = self.module.__dict__
        self.ns.clear()
        self.ns.update({
            "__name__": "__main__",
            "__builtins__": builtins,
            "__doc__": None,
            "__loader__": None,
            "__spec__": None,
            "__package__": None,
            "display": _kh_display.display,
            "update_display": _kh_display.update_display,
            "clear_output": _kh_display.clear_output,
        })
        # [_kh_mpl] What _kh_mpl.configure() chose (%config InlineBackend...) ends with the
        # session: the kernel option figure_formats (figure_formats_option) applies again.
        self.figure_formats = None
        self.print_figure_kwargs = None
        if "matplotlib.pyplot" in sys.modules:
            try:
                import _kh_mpl
                _kh_mpl.close_figures(self)
            except Exception:
                pass
        if self.loop is not None:
            try:
                self.loop.close()
            except Exception:
                pass
            self.loop = None

    def close(self):
        self.out.flush()
        _kh_streams.flusher.cancel(self.out)
        self.reset()
        if sys.modules.get("__main__") is self.module and self.module is not self._host_main:
            sys.modules["__main__"] = self._host_main

    # -- calls from other threads (with the GIL) --------------------------------------------

    def interrupt(self, exec_id=None):
        """Raises KeyboardInterrupt in cell exec_id (the running one when None), in whichever
        phase it is (the cell, its result's formatting, figures), and wakes what it waits in:
        a sleep, an input request, an asyncio loop's selector. A cell that the host started but
        this thread has not begun yet is interrupted as soon as it begins; a cell that already
        ended is left alone (the gate decides, py-gate.c)."""
        if not self.gate.interrupt(exec_id):
            return False
        self.wake.set()
        with self._input_cond:
            self._input_cond.notify_all()
        # The exception lands at the kernel thread's next bytecode; a loop blocked in its
        # selector (await asyncio.sleep(5)) runs none until it wakes: wake it now.
        loop = self.loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(_noop)
            except Exception:  # closed, or not running: nothing to wake
                pass
        return True

    def input_reply(self, value):
        with self._input_cond:
            if not self._input_waiting:
                return False
            self._input_value = value
            self._input_cond.notify_all()
            return True

    # -- input --------------------------------------------------------------------------------

    def raw_input(self, prompt, password):
        ctx = _kh_streams.current()
        if ctx is not None and not ctx.allow_stdin:
            # ipykernel's words, and IPython's class when there is one (_stdin_error).
            raise stdin_error()("%s was called, but this frontend does not support input "
                                "requests." % ("getpass" if password else "raw_input"))
        if self.host_thread:
            raise RuntimeError("input() is not available in a kernel that runs its cells on the "
                               "host thread (kernel option thread = \"host\")")
        self.out.flush()
        with self._input_cond:
            self._input_value = None
            self._input_waiting = True
            self.wake.clear()
            try:
                self.emit(ctx.exec_id if ctx else "", "input_request",
                          {"prompt": prompt, "password": bool(password)})
                while self._input_value is None:
                    self._input_cond.wait()
                    if self.wake.is_set():
                        self.wake.clear()
                        raise KeyboardInterrupt("interrupted while waiting for input")
                return self._input_value
            finally:
                self._input_waiting = False

    # -- execution ----------------------------------------------------------------------------

    def event_loop(self):
        """The kernel's asyncio loop (top-level await runs on it), made when first needed."""
        if self.loop is None or self.loop.is_closed():
            import asyncio
            self.loop = asyncio.new_event_loop()
        return self.loop

    def _run_code(self, code):
        value = eval(code, self.ns)
        if code.co_flags & _CO_COROUTINE:
            value = self.event_loop().run_until_complete(value)
        return value

    @staticmethod
    def _suppressed(code, node):
        """True when the source after the trailing expression starts with ';'."""
        lines = code.splitlines()
        if node.end_lineno is None or node.end_lineno > len(lines):
            return False
        rest = lines[node.end_lineno - 1].encode("utf-8")[node.end_col_offset:].decode(
            "utf-8", "replace")
        rest = "\n".join([rest] + lines[node.end_lineno:])
        for line in rest.splitlines():
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            return s.startswith(";")
        return False

    def _compile(self, code, filename, want_value):
        """Returns (tuple of body code objects, last-expression code or None), compiled with
        the future features earlier cells turned on (and adds the ones this cell turns on)."""
        flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT | self.future_flags
        tree = compile(code, filename, "exec", ast.PyCF_ONLY_AST | flags, dont_inherit=True)
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = tree.body.pop()
            if not want_value or Kernel._suppressed(code, last):
                tree.body.append(last)
                last = None
        body = ()
        if tree.body:
            try:
                body = (compile(tree, filename, "exec", flags, dont_inherit=True),)
            except SyntaxError as exc:
                # IPython runs a cell statement by statement, so `from __future__ import ...`
                # after other statements is accepted there: do the same when, and only when, the
                # whole cell is refused for that reason.
                if "from __future__" not in str(exc.msg):
                    raise
                body = []
                for node in tree.body:
                    co = compile(ast.Module([node], []), filename, "exec", flags,
                                 dont_inherit=True)
                    flags |= co.co_flags & _CO_FUTURE_MASK
                    body.append(co)
                body = tuple(body)
            flags |= body[-1].co_flags & _CO_FUTURE_MASK
        expr = None
        if last is not None:
            expr = compile(ast.Expression(last.value), filename, "eval", flags,
                           dont_inherit=True)
        self.future_flags = flags & _CO_FUTURE_MASK
        return body, expr

    def _run_cell(self, code, filename, want_value):
        # Hosts often send the same small cell again and again: reuse its code objects,
        # renamed to this cell's filename (only when they hold no nested code objects, whose
        # filenames would still name the old cell).
        key = (code, want_value, self.future_flags)
        hit = _code_cache.get(key)
        if hit is not None:
            body, expr, self.future_flags = hit
            if len(body) == 1:  # the usual cases (one body, or none: `1+1`) without a
                body = (body[0].replace(co_filename=filename),)  # generator's cost
            elif body:
                body = tuple(co.replace(co_filename=filename) for co in body)
            if expr is not None:
                expr = expr.replace(co_filename=filename)
        else:
            translated = False
            try:
                body, expr = self._compile(code, filename, want_value)
            except SyntaxError as exc:  # issue 11: IPython syntax
                body, expr = self._compile(_ipython_source(self, code, exc), filename,
                                           want_value)
                # IPython's translation depends on the namespace (automagic yields to a name
                # the user defined): translated cells are never reused.
                translated = True
            if not translated and len(code) <= 512 and not any(
                    isinstance(c, types.CodeType)
                    for co in body + (expr,) if co is not None for c in co.co_consts):
                if len(_code_cache) >= 256:
                    _code_cache.clear()
                _code_cache[key] = (body, expr, self.future_flags)
        awaited = False
        for co in body:
            awaited |= bool(co.co_flags & _CO_COROUTINE)
            self._run_code(co)
        if expr is not None:
            if awaited and not expr.co_flags & _CO_COROUTINE:
                # IPython runs a cell that awaits as one coroutine: its last expression, too,
                # sees the running loop.
                return True, self.event_loop().run_until_complete(self._eval_async(expr))
            return True, self._run_code(expr)
        return False, None

    async def _eval_async(self, code):
        return eval(code, self.ns)

    def _show_result(self, exec_id, count, value, store_history):
        """The execute_result of a cell's last expression (user code: its formatters run)."""
        data, metadata = _kh_display.format(value)
        if store_history:
            ns = self.ns
            ns["___"] = ns.get("__")
            ns["__"] = ns.get("_")
            ns["_"] = value
        if not data:  # the value displayed itself (_ipython_display_): no execute_result
            return None
        self.out.flush()
        result = {"execution_count": count, "data": data, "metadata": metadata}
        self.emit(exec_id, "execute_result", result)
        return {"data": data, "metadata": metadata}

    def _report_error(self, exec_id, error):
        """Emits the execute_error of `error` and returns it. Formatting runs user code (the
        exception's __str__): an interrupt or a BaseException raised there is reported instead,
        and after a few of those, a bare error naming the type."""
        for _attempt in range(3):
            try:
                err = self.gate.call(self._format_error, error)
                break
            except BaseException as exc:
                error = exc
        else:
            err = {"ename": type(error).__name__, "evalue": "", "traceback": []}
        del error
        self.out.flush()
        self.emit(exec_id, "execute_error", err)
        return err

    def _format_error(self, exc):
        # str() first, and only Exception caught: an interrupt of a __str__ that never returns
        # must escape (traceback's own str() call swallows every exception, KeyboardInterrupt
        # included, and would leave the cell spinning in the next one).
        try:
            evalue = str(exc)
        except Exception:
            evalue = "<exception str() failed>"
        tb = exc.__traceback__
        while tb is not None and not tb.tb_frame.f_code.co_filename.startswith(_CELL_PREFIX):
            tb = tb.tb_next
        try:
            import traceback
            _sync_linecache()
            if tb is None:
                text = "".join(traceback.format_exception_only(type(exc), exc))
                if not isinstance(exc, SyntaxError):
                    text = "Traceback (most recent call last):\n" + text
            else:
                text = "".join(traceback.format_exception(type(exc), exc, tb))
        except Exception:
            text = "%s: <traceback unavailable>" % type(exc).__name__
        return {"ename": type(exc).__name__, "evalue": evalue,
                "traceback": text.rstrip("\n").split("\n")}

    def comm(self, exec_id, msg_type, content, buffers=None):
        """Handles one comm message from the host (comm_open, comm_msg or comm_close, its
        content as JSON text, checked by the core) with this kernel's comm manager, as a request
        of its own: interrupts land in the handlers, and what they print, display or send
        carries exec_id. A handler's exception (KeyboardInterrupt and SystemExit included) is
        written to stderr with its traceback and ends nothing else. Returns the reply bytes."""
        gate = self.gate
        gate.begin(exec_id)
        _kh_streams.set_current(_kh_streams.Context(self, exec_id))
        self.out.start_cell()
        self.active_exec = exec_id
        if sys.modules.get("__main__") is not self.module:
            sys.modules["__main__"] = self.module
        self.wake.clear()
        try:
            import _kh_comm
            gate.call(_kh_comm.handle, self, exec_id, msg_type, content, buffers)
        except BaseException:
            try:
                import traceback
                sys.stderr.write("Exception in %s\n%s" % (msg_type, traceback.format_exc()))
            except Exception:
                pass
        self.out.flush()
        self.active_exec = ""
        return gate.end(b'{"status":"ok"}')

    def execute(self, exec_id, code, silent=False, store_history=True, allow_stdin=True):
        """Runs one cell; returns the reply (status, execution_count, result?, error?) as UTF-8
        JSON bytes. Events go out through emit() as the cell runs. allow_stdin False: the
        cell's input() raises StdinNotImplementedError instead of asking (raw_input)."""
        gate = self.gate
        gate.begin(exec_id)  # first: an interrupt from here on is this cell's
        if silent:
            store_history = False
        ctx = _kh_streams.Context(self, exec_id, bool(allow_stdin))
        _kh_streams.set_current(ctx)
        self.out.start_cell()
        self.active_exec = exec_id
        if sys.modules.get("__main__") is not self.module:
            sys.modules["__main__"] = self.module
        # An empty or blank cell does not count, as in IPython (its reply carries the count
        # of the last cell that did).
        counted = store_history and code and not code.isspace()
        if counted:
            self.execution_count += 1
        count = self.execution_count
        self._serial += 1
        filename = ("%s%d%s" % (_CELL_PREFIX, count, self.cell_suffix) if counted
                    else "%sx%d%s" % (_CELL_PREFIX, self._serial, self.cell_suffix))
        entry = (len(code), None, code.splitlines(True), filename)
        lc = sys.modules.get("linecache")
        if lc is not None:
            _sync_linecache()  # earlier cells, if linecache was imported since
        _cell_sources[filename] = entry
        if lc is not None:
            global _cell_synced
            lc.cache[filename] = entry
            # In sync: the next cell must not walk every past cell again (it did, which made
            # each cell cost O(cells so far) once anything had imported linecache).
            _cell_synced = len(_cell_sources)

        error = None
        has_value, value = False, None
        self.wake.clear()
        # Every phase that runs user code goes through gate.call(), where interrupts land at
        # once; between phases they wait for the next one (py-gate.c). BaseException: a
        # SystemExit or KeyboardInterrupt ends the cell, never the kernel.
        try:
            if self.ipython is not None:  # issue 11: IPython's pre-cell events
                import _kh_ipython
                gate.call(_kh_ipython.pre_cell, self, code, silent, store_history, count)
            has_value, value = gate.call(self._run_cell, code, filename, not silent)
        except BaseException as exc:
            error = exc
        reply = {"status": "ok", "execution_count": count}
        if error is None and has_value and value is not None:
            try:
                result = gate.call(self._show_result, exec_id, count, value, store_history)
                if result is not None:
                    reply["result"] = result
            except BaseException as exc:  # from a formatter: __repr__ raising SystemExit
                error = exc
        cell_error = error  # for IPython's post_run_cell (issue 11)
        if error is not None:
            reply["status"] = "error"
            reply["error"] = self._report_error(exec_id, error)
            del error
        if "matplotlib.pyplot" in sys.modules:
            try:
                import _kh_mpl
                gate.call(_kh_mpl.flush_figures, self)
            except Exception:
                import traceback
                sys.stderr.write("kernelhost: showing figures failed:\n" + traceback.format_exc())
            except BaseException as exc:  # interrupted while rendering
                if reply["status"] == "ok":
                    reply["status"] = "error"
                    reply["error"] = self._report_error(exec_id, exc)
        if self.ipython is not None:  # issue 11: IPython's post-cell events, Out[], _N
            import _kh_ipython
            try:
                gate.call(_kh_ipython.post_cell, self, code, silent, store_history, count,
                          cell_error, has_value, value)
            except BaseException as exc:  # interrupted in a post_run_cell callback
                if reply["status"] == "ok":
                    reply["status"] = "error"
                    reply["error"] = self._report_error(exec_id, exc)
        del cell_error
        self.out.flush()
        bufs = []
        result = reply.get("result")
        if result is not None and result.get("data"):
            split = _kh_display.split_binary(result["data"], "/result/data", bufs, self.binary)
            if split is not result["data"]:
                reply["result"] = dict(result, data=split)
        try:
            out = _dumps(reply)
        except ValueError:  # a result its event could carry and the reply, one level deeper, not
            reply.pop("result", None)
            bufs = []
            out = _dumps(reply)
        self.active_exec = ""
        # The last step: after end() nothing can be interrupted (it drops what is still owed).
        # A reply with binary values is (json, buffers) (kh__py_reply_parts).
        return gate.end((out, bufs) if bufs else out)

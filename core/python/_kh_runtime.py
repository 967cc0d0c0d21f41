# _kh_runtime: the code that runs inside every kernel, main_thread and worker alike. It runs
# cells with IPython's semantics (last expression displayed, `_`, `;`, top-level await),
# captures output, turns exceptions into execute_error events, and talks to the C core only
# through the builtin module _kernelhost (emit, async_raise, clear_async_exc).

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
_code_cache = {}
_initialized = False
_orig_sleep = time.sleep
_orig_input = builtins.input


def _encode_default(obj):
    raise TypeError("Object of type %s is not JSON serializable" % type(obj).__name__)


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
        except (TypeError, ValueError, RecursionError):
            s = json.dumps({"error": "unencodable payload"})
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
        self._kh_ctx = _kh_streams.current()
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


# Modules kernelhost adjusts right after their first import, without importing them eagerly.
_POST_IMPORT = {"matplotlib": _use_kernelhost_backend, "getpass": _patch_getpass}


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
        self.running = False
        self.loop = None
        self._input_cond = threading.Condition()
        self._input_value = None
        self._input_waiting = False
        self._serial = 0
        self._current_exec = None   # the cell this kernel's thread is running or last began
        self._done_exec = None      # the last cell that ended
        self._pending_interrupt = None
        self.ipython = None  # this kernel's IPython shell, once a cell needed it (_kh_ipython)
        self.reset()
        _kh_streams.set_current(_kh_streams.Context(self, ""))

    # -- plumbing ---------------------------------------------------------------------------

    def emit(self, exec_id, kind, payload):
        _kernelhost.emit(self.sink, exec_id or "", kind, _dumps(payload))

    def reset(self):
        self.execution_count = 0
        if self.ipython is not None:  # issue 11: a new namespace gets a new shell when asked
            import _kh_ipython
            _kh_ipython.release(self)
        self.ns = {
            "__name__": "__main__",
            "__builtins__": builtins,
            "__doc__": None,
            "display": _kh_display.display,
            "update_display": _kh_display.update_display,
            "clear_output": _kh_display.clear_output,
        }
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

    # -- calls from other threads (with the GIL) --------------------------------------------

    def interrupt(self, exec_id=None):
        """Raises KeyboardInterrupt in cell exec_id (the running one when None) and wakes a
        sleep or input wait. A cell that the host started but this thread has not begun yet
        is interrupted as soon as it begins; a cell that already ended is left alone."""
        if exec_id is not None and exec_id != self._current_exec:
            if exec_id != self._done_exec:
                self._pending_interrupt = exec_id
            return False
        if not self.running:
            if exec_id is not None and exec_id != self._done_exec:
                self._pending_interrupt = exec_id
            return False
        self.wake.set()
        with self._input_cond:
            self._input_cond.notify_all()
        _kernelhost.async_raise(self.thread_ident, KeyboardInterrupt)
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
        if self.host_thread:
            raise RuntimeError("input() is not available in a kernel that runs its cells on the "
                               "host thread (kernel option thread = \"host\")")
        ctx = _kh_streams.current()
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

    def _run_code(self, code):
        value = eval(code, self.ns)
        if code.co_flags & _CO_COROUTINE:
            import asyncio
            if self.loop is None:
                self.loop = asyncio.new_event_loop()
                asyncio.set_event_loop(self.loop)
            value = self.loop.run_until_complete(value)
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

    @staticmethod
    def _compile(code, filename, want_value):
        """Returns (body code or None, last-expression code or None)."""
        flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        tree = compile(code, filename, "exec", ast.PyCF_ONLY_AST | flags, dont_inherit=True)
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = tree.body.pop()
            if not want_value or Kernel._suppressed(code, last):
                tree.body.append(last)
                last = None
        body = compile(tree, filename, "exec", flags, dont_inherit=True) if tree.body else None
        expr = None
        if last is not None:
            expr = compile(ast.Expression(last.value), filename, "eval", flags,
                           dont_inherit=True)
        return body, expr

    def _run_cell(self, code, filename, want_value):
        # Hosts often send the same small cell again and again: reuse its code objects,
        # renamed to this cell's filename (only when they hold no nested code objects, whose
        # filenames would still name the old cell).
        key = (code, want_value)
        hit = _code_cache.get(key)
        if hit is not None:
            body, expr = hit
            if body is not None:
                body = body.replace(co_filename=filename)
            if expr is not None:
                expr = expr.replace(co_filename=filename)
        else:
            try:
                body, expr = self._compile(code, filename, want_value)
            except SyntaxError as exc:  # issue 11: IPython syntax
                body, expr = self._compile(_ipython_source(self, code, exc), filename,
                                           want_value)
            if len(code) <= 512 and not any(
                    isinstance(c, types.CodeType)
                    for co in (body, expr) if co is not None for c in co.co_consts):
                if len(_code_cache) >= 256:
                    _code_cache.clear()
                _code_cache[key] = (body, expr)
        if body is not None:
            self._run_code(body)
        if expr is not None:
            return True, self._run_code(expr)
        return False, None

    def _format_error(self, exc):
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
        try:
            evalue = str(exc)
        except Exception:
            evalue = "<exception str() failed>"
        return {"ename": type(exc).__name__, "evalue": evalue,
                "traceback": text.rstrip("\n").split("\n")}

    def execute(self, exec_id, code, silent=False, store_history=True):
        """Runs one cell; returns the reply (status, execution_count, result?, error?) as UTF-8
        JSON bytes. Events go out through emit() as the cell runs."""
        if silent:
            store_history = False
        ctx = _kh_streams.Context(self, exec_id)
        _kh_streams.set_current(ctx)
        self.out.start_cell()
        if store_history:
            self.execution_count += 1
        count = self.execution_count
        self._serial += 1
        filename = ("%s%d>" % (_CELL_PREFIX, count) if store_history
                    else "%sx%d>" % (_CELL_PREFIX, self._serial))
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
        try:
            self._current_exec = exec_id
            self.running = True
            try:
                if self._pending_interrupt == exec_id:
                    self._pending_interrupt = None
                    raise KeyboardInterrupt()
                if self.ipython is not None:  # issue 11: IPython's pre-cell events
                    import _kh_ipython
                    _kh_ipython.pre_cell(self, code, silent, store_history, count)
                has_value, value = self._run_cell(code, filename, not silent)
            finally:
                self.running = False
        except BaseException as exc:  # SystemExit and KeyboardInterrupt end the cell only
            error = exc
        # An interrupt raised as the cell ended may still be pending: collect it here.
        while True:
            try:
                self.running = False
                _kernelhost.clear_async_exc()
                break
            except KeyboardInterrupt as exc:
                if error is None:
                    error = exc

        self._done_exec = exec_id
        if self._pending_interrupt == exec_id:
            self._pending_interrupt = None
        reply = {"status": "ok", "execution_count": count}
        cell_error = error  # for IPython's post_run_cell (issue 11)
        if error is not None:
            err = self._format_error(error)
            del error
            self.out.flush()
            self.emit(exec_id, "execute_error", err)
            reply["status"] = "error"
            reply["error"] = err
        if reply["status"] == "ok" and has_value and value is not None:
            ns = self.ns
            if store_history:
                ns["___"] = ns.get("__")
                ns["__"] = ns.get("_")
                ns["_"] = value
            data, metadata = _kh_display.format(value)
            if data:  # empty: the value displayed itself (_ipython_display_)
                self.out.flush()
                result = {"execution_count": count, "data": data, "metadata": metadata}
                self.emit(exec_id, "execute_result", result)
                reply["result"] = {"data": data, "metadata": metadata}
        try:
            if "matplotlib.pyplot" in sys.modules:
                import _kh_mpl
                _kh_mpl.flush_figures(self)
        except Exception:
            import traceback
            sys.stderr.write("kernelhost: showing figures failed:\n" + traceback.format_exc())
        if self.ipython is not None:  # issue 11: IPython's post-cell events, Out[], _N
            import _kh_ipython
            _kh_ipython.post_cell(self, code, silent, store_history, count, cell_error,
                                  has_value, value)
        del cell_error
        self.out.flush()
        return _dumps(reply)

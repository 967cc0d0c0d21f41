# _kh_ipython: IPython inside kernelhost kernels, imported only when a cell needs it (IPython
# syntax, get_ipython(), a result that needs IPython's pretty printer is _kh_display's business).
# It owns each kernel's InteractiveShell: made on first use, bound to the kernel's namespace and
# to kernelhost's events (display publisher, display hook, pager, tracebacks), and the bridge the
# runtime calls around cells (IPython syntax, pre/post events, formatting through the shell).
# Runs on a kernel's own thread, or on threads its cells started, with the GIL.
#
# One shell per kernel, never InteractiveShell.instance(). Main_thread kernels share one
# interpreter, and a singleton would give every kernel the same namespace; each kernel gets its
# own `KernelShell(user_ns=kernel.ns)` instead (the first one pays IPython's import, ~0.3-0.6 s;
# each later one ~30 ms and a few MB). IPython's own get_ipython() is replaced (by
# _kh_display's import hook) with current_shell(), which answers with the shell of the kernel
# whose thread asks. Limits in main_thread mode, since these are per interpreter: IPython code that
# calls InteractiveShell.instance() directly gets no kernel's shell (display() and get_ipython(),
# the common callers, are kernelhost's); builtins `__IPYTHON__` and `display` are set for all
# kernels once any shell exists (IPython's init_builtins); `%matplotlib`, `%config
# InlineBackend` and `%load_ext` act on modules every kernel shares; a cwd change by `%cd` is the
# process's.

import os
import sys
import threading

import _kh_display
import _kh_streams

# Whether IPython can be imported: None until first asked, then True or the ImportError.
_ipython_error = None
_create_lock = threading.Lock()
_shell_class = None
_transformer = None


class _Home:
    """A sandboxed worker has no HOME (its environment is filtered) and cannot look the user
    up, and IPython (and jedi, which it imports) fail without a home directory: while IPython
    is imported and a shell made, HOME is "/" if it was unset; it is unset again after."""

    def __enter__(self):
        self.set = "HOME" not in os.environ
        if self.set:
            os.environ["HOME"] = "/"

    def __exit__(self, *exc):
        if self.set:
            os.environ.pop("HOME", None)
        return False


def _import_error():
    """None when IPython is importable, else the ImportError (asked once per process)."""
    global _ipython_error
    if _ipython_error is None:
        try:
            with _Home():
                import IPython.core.interactiveshell  # noqa: F401
            _ipython_error = True
        except ImportError as exc:
            _ipython_error = exc
    return None if _ipython_error is True else _ipython_error


# -- the sandbox --------------------------------------------------------------------------------

def _check_run(cmd):
    """Shell escapes and %pip start programs: a kernel sandboxed with permissions.run false
    refuses them before anything is spawned, with the sandbox's own message (its audit hook
    would catch subprocess, but not the pty fork that IPython's `!cmd` uses)."""
    sandbox = sys.modules.get("_kh_sandbox")
    policy = getattr(sandbox, "_installed", None)
    if policy and not policy.run:
        sandbox._deny_run(cmd)


# -- the shell ----------------------------------------------------------------------------------

def _make_shell_class():
    global _shell_class
    if _shell_class is not None:
        return _shell_class
    from IPython.core.builtin_trap import BuiltinTrap
    from IPython.core.displayhook import DisplayHook
    from IPython.core.displaypub import DisplayPublisher
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets import Bool, Dict, List, TraitError, Type, Unicode, observe, validate
    from traitlets.config import Configurable

    class _KeepBuiltins(BuiltinTrap):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    class KernelDisplayPublisher(DisplayPublisher):
        """get_ipython().display_pub: display data of the current request."""

        def publish(self, data, metadata=None, source=None, *, transient=None, update=False,
                    **kwargs):
            _kh_display.publish_display_data(data, metadata, transient=transient, update=update)

        def clear_output(self, wait=False):
            _kh_display.clear_output(wait)

    class KernelDisplayHook(DisplayHook):
        """The shell's display hook: results of shell.run_cell() called from a cell become
        execute_result events of the current request (the kernel shows its own cells'
        results itself, through format())."""

        def start_displayhook(self):
            pass

        def write_output_prompt(self):
            pass

        def write_format_data(self, format_dict, md_dict=None):
            ctx = _kh_streams.current()
            if ctx is None:
                return super().write_format_data(format_dict, md_dict)
            ctx.kernel.out.flush()
            ctx.kernel.emit(ctx.exec_id, "execute_result", {
                "execution_count": self.shell.execution_count,
                "data": _kh_display.encode_bundle(format_dict),
                "metadata": md_dict or {}})

        def finish_displayhook(self):
            pass

    class InlineBackend(Configurable):
        """`%config InlineBackend.figure_formats = [...]` (the class name is what %config
        matches): hands the formats to kernelhost's matplotlib backend, which renders figures
        (matplotlib_inline's formatters are not installed, so a figure is never sent twice)."""

        figure_formats = List(Unicode(), ["png"]).tag(config=True)
        figure_format = Unicode("").tag(config=True)
        print_figure_kwargs = Dict().tag(config=True)
        rc = Dict().tag(config=True)
        close_figures = Bool(True).tag(config=True)

        @observe("figure_format")
        def _one_format(self, change):
            if change["new"]:
                self.figure_formats = [change["new"]]

        @validate("figure_formats")
        def _formats(self, proposal):
            # A validator, not an observer: an unknown format is refused before the trait
            # changes, so `%config InlineBackend.figure_formats` never shows formats that are
            # not in use (matplotlib_inline's observer keeps the bad value).
            import _kh_mpl
            try:
                _kh_mpl.configure(figure_formats=list(proposal["value"]))
            except ValueError as exc:
                raise TraitError(str(exc)) from None
            return proposal["value"]

    class KernelShell(InteractiveShell):
        """IPython's shell with kernelhost's I/O: displays, results, pager and tracebacks are
        events of the current request; programs obey the kernel's sandbox."""

        displayhook_class = Type(KernelDisplayHook)
        display_pub_class = Type(KernelDisplayPublisher)

        def init_sys_modules(self):
            # The runtime decides what sys.modules["__main__"] is (several kernels may share
            # one interpreter): the shell must not replace it.
            pass

        def init_builtins(self):
            super().init_builtins()
            # IPython adds exit/quit/get_ipython to builtins around each of its own cells; the
            # kernel's builtins already have get_ipython and keep Python's exit (SystemExit
            # ends the cell), and swapping builtins would race between main_thread kernels.
            self.builtin_trap = _KeepBuiltins(shell=self)

        def enable_gui(self, gui=None):
            if gui not in (None, "inline"):
                raise UsageError("kernelhost kernels have no GUI event loop: %r is not "
                                 "supported (figures are shown inline)" % gui)

        def enable_matplotlib(self, gui=None):
            """`%matplotlib [inline]`: kernelhost's own inline backend (module://_kh_mpl)
            rather than matplotlib_inline's; other non-GUI backends as IPython does."""
            from IPython.core import pylabtools as pt
            gui, backend = pt.find_gui_and_backend(gui, self.pylab_gui_select)
            if gui in (None, "inline") or backend in ("module://matplotlib_inline.backend_inline",
                                                       "module://_kh_mpl"):
                gui, backend = "inline", "module://_kh_mpl"
            else:
                self.enable_gui(gui)
            pt.activate_matplotlib(backend)
            self.magics_manager.registry["ExecutionMagics"].default_runner = \
                pt.mpl_runner(self.safe_execfile)
            return gui, backend

        def _showtraceback(self, etype, evalue, stb):
            # Tracebacks IPython shows without failing the cell (a failing %run script, an
            # event callback or a formatter that raised) go to the request's stderr, as
            # kernelhost shows a formatter's traceback; ipykernel sends them as `error`
            # outputs. A cell's own exception is still its execute_error.
            sys.stderr.write(self.InteractiveTB.stb2text(stb) + "\n")

        def system_piped(self, cmd):
            _check_run(cmd)
            if cmd.rstrip().endswith("&"):
                raise OSError("Background processes not supported.")
            from IPython.utils.process import system
            # depth=1: `{name}` expands from the frame that ran the shell escape, as in IPython.
            self.user_ns["_exit_code"] = system(self.var_expand(cmd, depth=1))

        system = system_piped

        def system_raw(self, cmd):
            _check_run(cmd)
            return super().system_raw(cmd)

        def getoutput(self, cmd, split=True, depth=0):
            _check_run(cmd)
            return super().getoutput(cmd, split, depth + 1)

    KernelShell.InlineBackend = InlineBackend
    _shell_class = KernelShell
    return KernelShell


def _profile_dirs():
    """(ipython_dir, profile_dir) for a new shell: IPython's usual ~/.ipython/profile_default
    (what ipykernel uses), or, where that cannot be written (a sandboxed worker), a profile
    that creates nothing on disk."""
    import warnings

    from IPython.core.profiledir import ProfileDir
    from IPython.paths import get_ipython_dir
    try:
        with warnings.catch_warnings():
            # IPython warns, then makes a temporary directory, when ~/.ipython cannot be
            # written: a kernel then makes nothing on disk instead.
            warnings.simplefilter("error")
            ipython_dir = get_ipython_dir()
        return ipython_dir, ProfileDir.create_profile_dir_by_name(ipython_dir, "default")
    except Exception:  # OSError, ProfileDirError, the warning: not writable
        pass
    from traitlets import observe

    class _DisklessProfileDir(ProfileDir):
        @observe("location")
        def _location_changed(self, change):
            new = change["new"]
            for name in ("security", "log", "startup", "pid", "static"):
                setattr(self, name + "_dir", os.path.join(new, name))

        def _mkdir(self, path, mode=None):
            return False

        def check_startup_dir(self, change=None):
            pass

    # "/" exists everywhere, so nothing is created for it; the profile's location never is.
    return "/", _DisklessProfileDir(location="/kernelhost-ipython-profile")


def _new_shell(kernel):
    cls = _make_shell_class()
    from traitlets.config import Config
    config = Config()
    # History lives in memory: In/Out/%history work for the kernel's life without an sqlite
    # file shared by every kernel (and no saving thread).
    config.HistoryManager.hist_file = ":memory:"
    # Plain text: kernelhost's tracebacks and the pager text carry no ANSI colours.
    config.InteractiveShell.colors = "NoColor"
    config.InteractiveShell.warn_venv = False
    ipython_dir, profile_dir = _profile_dirs()
    main = sys.modules.get("__main__")
    user_module = main if getattr(main, "__dict__", None) is kernel.ns else None
    kwargs = {"user_module": user_module} if user_module is not None else {"user_ns": kernel.ns}
    import IPython.core.interactiveshell as ish
    db_class = ish.PickleShareDB
    if not os.access(profile_dir.location, os.W_OK):
        ish.PickleShareDB = _MemoryDB  # %store keeps its values in memory only
    try:
        shell = cls(ipython_dir=ipython_dir, profile_dir=profile_dir, config=config, **kwargs)
    finally:
        ish.PickleShareDB = db_class
    import atexit
    # IPython would clear the namespace at exit and keep the shell (and every object of the
    # kernel) alive until then (so would %%script's clean-up of background processes, which
    # kernelhost's kernels do not start: `&` is refused); the kernel's life is the shell's.
    atexit.unregister(shell.atexit_operations)
    script_magics = shell.magics_manager.registry.get("ScriptMagics")
    if script_magics is not None:
        atexit.unregister(script_magics.kill_bg_processes)
    for name in ("exit", "quit"):  # Python's own exit(): SystemExit ends the cell
        if kernel.ns.get(name) is shell.exiter:
            del kernel.ns[name]
        shell.user_ns_hidden.pop(name, None)
    shell.configurables.append(cls.InlineBackend(parent=shell))
    shell.set_hook("show_in_pager", _show_in_pager, 99)
    shell.execution_count = kernel.execution_count
    shell._kh_plain = _plain_snapshot(shell)
    return shell



class _MemoryDB(dict):
    """PickleShareDB's interface in memory, for a profile that cannot be written."""

    def __init__(self, root=None):
        super().__init__()

    def hset(self, hashroot, key, value):
        self[hashroot + "/" + key] = value

    def hget(self, hashroot, key, default=None):
        return self.get(hashroot + "/" + key, default)

    def keys(self, globpat=None):
        import fnmatch
        return [k for k in super().keys() if globpat is None or fnmatch.fnmatch(k, globpat)]


def _show_in_pager(shell, data, start=0, screen_lines=0, pager_cmd=None):
    """`obj?`, `%pdoc`, `%psource`...: Jupyter's front ends show IPython's pager text in a
    pager (ipykernel's `page` payload); a kernelhost kernel has no payloads, so the text is a
    display_data of the request (text/plain, plus text/html when IPython made it)."""
    if not isinstance(data, dict):
        data = {"text/plain": data}
    if start:
        data = dict(data)
        data["text/plain"] = "\n".join(data.get("text/plain", "").split("\n")[start:])
    _kh_display.publish_display_data(data, {})


def shell_for(kernel):
    """The kernel's shell, made on first use; None without IPython. Creation is serialized
    (main_thread kernels may ask at once) and published only once complete, so an interrupt
    during it leaves no half-made shell behind."""
    shell = kernel.ipython
    if shell is not None:
        return shell
    if _import_error() is not None:
        return None
    with _create_lock:
        if kernel.ipython is None:
            ns = kernel.ns
            before = dict(ns)
            try:
                with _Home():
                    kernel.ipython = _new_shell(kernel)
            except BaseException:
                # The half-made shell put itself into the namespace (get_ipython, In, Out...):
                # take it out again, so that nothing reaches it.
                for name in [n for n in ns if n not in before]:
                    del ns[name]
                ns.update(before)
                raise
    return kernel.ipython


def current_shell():
    """IPython's get_ipython(), as every kernel sees it: the shell of the kernel whose thread
    (or whose cell's thread) asks, made on first use; None outside every kernel."""
    ctx = _kh_streams.current()
    if ctx is None:
        return None
    return shell_for(ctx.kernel)


def release(kernel):
    """Forgets the kernel's shell (restart, close): the next get_ipython() makes a new one."""
    shell, kernel.ipython = kernel.ipython, None
    if shell is not None:
        try:
            shell.history_manager.end_session()
        except Exception:
            pass


# -- IPython syntax -----------------------------------------------------------------------------

_ESCAPE_HINT = None


def _looks_like_ipython(code):
    """Whether a cell that does not compile uses IPython syntax (magics, shell escapes, help),
    so that, without IPython, the error can say what is missing."""
    global _ESCAPE_HINT
    if _ESCAPE_HINT is None:
        import re
        _ESCAPE_HINT = re.compile(r"^\s*(%%?[A-Za-z_]|!|\?)|(=\s*[%!][A-Za-z_!])|\?\??\s*$",
                                  re.M)
    return _ESCAPE_HINT.search(code) is not None


def transform(kernel, code, error):
    """Python source for a cell that raised `error` (a SyntaxError) when compiled: IPython's
    input transformations (magics, shell escapes, help; and, once the kernel has a shell, its
    dynamic ones such as automagic). Raises `error` when nothing changes, and a SyntaxError
    saying IPython is needed when the cell uses IPython syntax and IPython is missing."""
    global _transformer
    missing = _import_error()
    if missing is not None:
        if _looks_like_ipython(code):
            exc = SyntaxError("IPython syntax (magics, !shell escapes, obj?) needs IPython, "
                              "which this kernel cannot import (%s)" % missing,
                              (error.filename, error.lineno, error.offset, error.text))
            raise exc from None
        raise error
    shell = kernel.ipython
    if shell is not None:
        new = shell.transform_cell(code)
    else:
        if _transformer is None:
            from IPython.core.inputtransformer2 import TransformerManager
            _transformer = TransformerManager()
        new = _transformer.transform_cell(code)
        if new.strip() == code.strip() and "\n" not in code.strip():
            # One line that IPython did not change may still be an automagic (`cd /tmp`,
            # `pip install x`): that needs the shell's magics and namespace.
            shell = shell_for(kernel)
            new = shell.transform_cell(code)
    if new.strip() == code.strip():
        raise error
    return new


# -- cells ----------------------------------------------------------------------------------

def pre_cell(kernel, code, silent, store_history, count):
    """IPython's pre_execute / pre_run_cell events and input history, for a kernel that has a
    shell (the runtime calls this only then)."""
    from IPython.core.interactiveshell import ExecutionInfo, ExecutionResult
    shell = kernel.ipython
    if shell.execution_count != count:  # a traitlet: setting it costs, reading it less
        shell.execution_count = count
    info = ExecutionInfo(code, store_history, silent, True, None)
    kernel._ipython_result = ExecutionResult(info)
    if store_history:
        hm = shell.history_manager
        # In[n] is cell n: cells that ran before the shell existed are empty entries.
        for hist in (hm.input_hist_parsed, hm.input_hist_raw):
            hist.extend([""] * (count - len(hist)))
        hm.store_inputs(count, code, code)
        if len(hm.db_input_cache) >= 100:
            # No saving thread writes an in-memory history out: do it here, so its cache does
            # not grow with every cell.
            hm.writeout_cache()
    shell.events.trigger("pre_execute")
    if not silent:
        shell.events.trigger("pre_run_cell", info)


def post_cell(kernel, code, silent, store_history, count, error, has_value, value):
    """IPython's post_execute / post_run_cell events, Out[] and _N, after the cell's result and
    figures went out (the order ipykernel gives)."""
    from IPython.core.interactiveshell import ExecutionInfo, ExecutionResult
    shell = kernel.ipython
    result = getattr(kernel, "_ipython_result", None)
    kernel._ipython_result = None
    if result is None:  # the shell was made by this cell
        result = ExecutionResult(ExecutionInfo(code, store_history, silent, True, None))
    result.execution_count = count if store_history else None
    result.error_in_exec = error
    if has_value and error is None:
        result.result = value
        if store_history and value is not None:
            shell.history_manager.output_hist[count] = value
            kernel.ns["_%d" % count] = value
    shell.last_execution_succeeded = error is None
    shell.last_execution_result = result
    if store_history and shell.execution_count != count + 1:
        shell.execution_count = count + 1
    try:
        shell.events.trigger("post_execute")
        if not silent:
            shell.events.trigger("post_run_cell", result)
    except BaseException:  # the cell has ended: what escapes IPython's own catch is reported
        import traceback
        sys.stderr.write("kernelhost: IPython post-cell event:\n" + traceback.format_exc())


# -- formatting ---------------------------------------------------------------------------------

def _plain_snapshot(shell):
    """What the shell's formatters hold when it is made, so format() can tell that nothing was
    registered since for a plain type (an int, a short list) and skip IPython's formatter
    (~150 us a result) for the same text."""
    df = shell.display_formatter
    formatters = list(df.formatters.values()) + [df.ipython_display_formatter,
                                                  df.mimebundle_formatter]
    return [(f, dict(f.type_printers), dict(f.deferred_printers)) for f in formatters]


def _unchanged_for(shell, cls):
    ptf = shell.display_formatter.formatters.get("text/plain")
    if ptf is None or not ptf.enabled or not ptf.pprint or ptf.float_format != "%r" \
            or ptf.max_width != 79 or ptf.max_seq_length != 1000 or ptf.verbose:
        return False
    mro = cls.__mro__
    for f, types_, deferred in shell._kh_plain:
        tp = f.type_printers
        dp = f.deferred_printers
        for c in mro:
            if tp.get(c) is not types_.get(c):
                return False
            if dp:
                key = (c.__module__, c.__name__)
                if dp.get(key) is not deferred.get(key):
                    return False
    return True


def format(shell, obj, include=None, exclude=None):
    """(data, metadata) for obj through the shell's DisplayFormatter, which holds every
    formatter registered through get_ipython() (sympy's init_printing, for_type(...))."""
    if include is None and exclude is None and type(obj) in _kh_display._PLAIN_TYPES \
            and _unchanged_for(shell, type(obj)):
        return {"text/plain": _kh_display._text_plain(obj, shell)}, {}
    data, md = shell.display_formatter.format(obj, include=include, exclude=exclude)
    return _kh_display.encode_bundle(data), md or {}


def pretty_text(shell, obj):
    """text/plain of obj from the shell's PlainTextFormatter (None if it gave nothing)."""
    return shell.display_formatter.formatters["text/plain"](obj)

# _kh_display: IPython's display protocol, with or without IPython. Formats objects into MIME
# bundles (_ipython_display_, _repr_mimebundle_, _repr_html_, ..., text/plain unless excluded)
# and provides display(), update_display() and clear_output(), which emit Jupyter events for the
# current kernel. Once a kernel has an IPython shell (_kh_ipython), its DisplayFormatter formats
# (with every formatter registered through it); before, this module's own formatter does, with
# text/plain from IPython's pretty printer when IPython is installed (imported only for objects
# whose repr may differ from it) and repr() without IPython.

import sys

import _kh_streams

# (mime type, method name, binary?) in IPython's order of precedence.
_REPR_METHODS = (
    ("text/html", "_repr_html_", False),
    ("text/markdown", "_repr_markdown_", False),
    ("image/svg+xml", "_repr_svg_", False),
    ("image/png", "_repr_png_", True),
    ("image/jpeg", "_repr_jpeg_", True),
    ("text/latex", "_repr_latex_", False),
    ("application/json", "_repr_json_", False),
    ("application/javascript", "_repr_javascript_", False),
    ("application/pdf", "_repr_pdf_", True),
)


def _new_id():
    import uuid
    return uuid.uuid4().hex


def _report_formatter_error(obj, where):
    """A formatter that raises is contained: its traceback goes to the cell's stderr."""
    sys.stderr.write("kernelhost: %s of %s object raised:\n%s" % (
        where, type(obj).__name__, __import__("traceback").format_exc()))


def _encode_value(mime, value):
    # Binary values stay bytes up to the kernel's emit(), which sends them as its `binary`
    # option says (split_binary).
    if isinstance(value, (bytes, bytearray, memoryview)):
        return value if type(value) is bytes else bytes(value)
    if mime == "application/json" or mime.endswith("+json"):
        return _jsonable(value)
    if isinstance(value, str):
        return value
    return str(value)


def _jsonable(value):
    import json
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError):
        return json.loads(json.dumps(value, default=repr))


def encode_bundle(data):
    """A MIME bundle with JSON-ready values, binary ones as bytes (see split_binary)."""
    return {mime: _encode_value(mime, value) for mime, value in data.items()}


# MIME types whose values are binary: Jupyter sends them as base64 strings, so a str value of
# one of these (IPython's Image gives base64 text) is decoded when the kernel sends bytes.
_BINARY_MIMES = frozenset(("image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp",
                           "image/tiff", "application/pdf"))


def is_binary_mime(mime):
    return mime in _BINARY_MIMES or mime.startswith(("audio/", "video/"))


def pointer_token(key):
    """key as one step of a JSON Pointer (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def split_binary(bundle, prefix, bufs, binary):
    """The bundle as the kernel sends it. binary "bytes": each binary value becomes null, and
    (prefix + "/" + its MIME type as a JSON Pointer step, bytes) is appended to bufs (the
    host gets kh_buffer_t / Buffer / a Lua string). binary "base64": bytes become base64
    strings, as Jupyter's messages carry them. The bundle is copied only when it changes."""
    out = None
    for mime, value in bundle.items():
        tv = type(value)
        if tv is str:
            if binary != "bytes" or not is_binary_mime(mime):
                continue
            import binascii
            try:
                raw = binascii.a2b_base64(value)
            except (binascii.Error, ValueError):
                continue  # not base64 after all: sent as the text it is
        elif tv is bytes or tv is bytearray or tv is memoryview:
            raw = value
        else:
            continue
        if out is None:
            out = dict(bundle)
        if binary == "bytes":
            bufs.append((prefix + "/" + pointer_token(mime), raw))
            out[mime] = None
        else:
            import base64
            out[mime] = base64.b64encode(raw).decode("ascii")
    return bundle if out is None else out


# Types whose repr() is what IPython's pretty printer prints, whatever the value: for them (and
# for short lists, tuples and dicts of them) text/plain needs no IPython. Sets are not here:
# pretty sorts their items.
_SCALAR_TYPES = frozenset((int, float, complex, str, bytes, bool, type(None)))
_CONTAINER_TYPES = frozenset((list, tuple, dict))
# IPython's PlainTextFormatter: lines wrap at 79 columns, sequences are cut after 1000 items.
_PRETTY_WIDTH = 79


def _simple(x, depth):
    t = type(x)
    if t in _SCALAR_TYPES:
        return True
    if depth == 0 or t not in _CONTAINER_TYPES or len(x) > _PRETTY_WIDTH // 3:
        return False
    if t is dict:
        return all(_simple(k, depth - 1) and _simple(v, depth - 1) for k, v in x.items())
    return all(_simple(y, depth - 1) for y in x)


def _repr_if_pretty(obj):
    """repr(obj) when it is certainly what IPython's pretty printer prints, else None: a scalar,
    or a list, tuple or dict of scalars (one level of such containers inside) whose repr fits on
    one 79-column line, so the printer has nothing to wrap."""
    if type(obj) in _SCALAR_TYPES:
        return repr(obj)
    if not _simple(obj, 2):
        return None
    text = repr(obj)
    return text if len(text) <= _PRETTY_WIDTH else None


# IPython.lib.pretty.pretty once imported; False when IPython cannot be imported.
_pretty = None


def _pretty_printer():
    global _pretty
    if _pretty is None:
        try:
            from IPython.lib.pretty import pretty
            _pretty = pretty
        except ImportError:
            _pretty = False
    return _pretty


def _text_plain(obj, shell=None):
    """text/plain as IPython prints it (its pretty printer: `int` for type(1), long containers
    one item a line), repr() without IPython; a repr that raises is contained."""
    try:
        text = _repr_if_pretty(obj)
        if text is not None:
            return text
        if shell is not None:
            import _kh_ipython
            text = _kh_ipython.pretty_text(shell, obj)
            if text is not None:
                return text
        pretty = _pretty_printer()
        if pretty:
            return pretty(obj, max_width=_PRETTY_WIDTH, max_seq_length=1000)
        return repr(obj)
    except Exception:
        _report_formatter_error(obj, "__repr__")
        return "<%s object>" % type(obj).__name__


def _shell():
    """The current kernel's IPython shell, None when it has none (yet)."""
    ctx = _kh_streams.current()
    return getattr(ctx.kernel, "ipython", None) if ctx is not None else None


def _wanted(mime, include, exclude):
    if include is not None and mime not in include:
        return False
    if exclude is not None and mime in exclude:
        return False
    return True


# Exact types that have nothing but a repr: no need to look for _repr_*_ methods.
_PLAIN_TYPES = frozenset((int, float, complex, str, bytes, bool, list, tuple, dict, set,
                          frozenset, range, type(None)))


def format(obj, include=None, exclude=None):
    """Returns (data, metadata) for obj, following IPython's display formatter. Empty data
    means the object displayed itself (_ipython_display_): nothing more is to be sent."""
    # The hot path first: a plain value in a kernel without a shell (1+1) is its repr.
    if type(obj) in _PLAIN_TYPES and include is None and exclude is None and _shell() is None:
        return {"text/plain": _text_plain(obj)}, {}
    # kernelhost's own formatters for objects IPython knows nothing of belong here, ahead of
    # both paths below.
    # [_kh_mpl] A matplotlib Figure is rendered as Jupyter's inline backend renders it. The
    # sys.modules lookup keeps matplotlib out of kernels that never import it.
    mfig = sys.modules.get("matplotlib.figure")
    if mfig is not None and isinstance(obj, mfig.Figure):
        import _kh_mpl
        return _kh_mpl.figure_bundle(obj, include=include, exclude=exclude)
    shell = _shell()
    if shell is not None:
        import _kh_ipython
        return _kh_ipython.format(shell, obj, include, exclude)
    if type(obj) in _PLAIN_TYPES and include is None and exclude is None:
        return {"text/plain": _text_plain(obj)}, {}  # plain, with a shell being released
    if not isinstance(obj, type):
        method = getattr(type(obj), "_ipython_display_", None)
        if method is not None and callable(method):
            obj._ipython_display_()
            return {}, {}
    data = {}
    metadata = {}
    method = getattr(type(obj), "_repr_mimebundle_", None)
    if method is not None and not isinstance(obj, type):
        try:
            bundle = obj._repr_mimebundle_(include=include, exclude=exclude)
        except Exception:
            _report_formatter_error(obj, "_repr_mimebundle_")
            bundle = None
        if isinstance(bundle, tuple) and len(bundle) == 2:
            bundle, md = bundle
            if isinstance(md, dict):
                metadata.update(md)
        if isinstance(bundle, dict):
            for mime, value in bundle.items():
                if _wanted(mime, include, exclude):
                    try:
                        data[mime] = _encode_value(mime, value)
                    except Exception:  # no JSON form (nested too deeply): contained
                        _report_formatter_error(obj, "_repr_mimebundle_")
    if not isinstance(obj, type):
        for mime, name, _binary in _REPR_METHODS:
            if mime in data or not _wanted(mime, include, exclude):
                continue
            method = getattr(obj, name, None)
            if method is None or not callable(method):
                continue
            try:
                value = method()
            except Exception:
                _report_formatter_error(obj, name)
                continue
            if value is None:
                continue
            if isinstance(value, tuple) and len(value) == 2:
                value, md = value
                if isinstance(md, dict):
                    metadata[mime] = md
            try:
                data[mime] = _encode_value(mime, value)
            except Exception:  # no JSON form (nested too deeply): contained like a raise
                _report_formatter_error(obj, name)
                metadata.pop(mime, None)
    if "text/plain" not in data and _wanted("text/plain", include, exclude):
        data["text/plain"] = _text_plain(obj)
    return data, metadata


class DisplayHandle:
    """What display(..., display_id=...) returns, as in IPython."""

    def __init__(self, display_id=None):
        self.display_id = display_id if display_id is not None else _new_id()

    def __repr__(self):
        return "<DisplayHandle display_id=%s>" % self.display_id

    def display(self, obj, **kwargs):
        display(obj, display_id=self.display_id, **kwargs)

    def update(self, obj, **kwargs):
        display(obj, display_id=self.display_id, update=True, **kwargs)


def _publish(msg_type, content):
    ctx = _kh_streams.current()
    if ctx is None:
        # Outside every kernel: behave like plain Python.
        if msg_type != "clear_output":
            print(content.get("data", {}).get("text/plain", ""))
        return
    ctx.kernel.out.flush()
    ctx.kernel.emit(ctx.exec_id, msg_type, content)


def publish_display_data(data, metadata=None, source=None, *, transient=None, update=False,
                         **kwargs):
    _publish("update_display_data" if update else "display_data", {
        "data": encode_bundle(data), "metadata": metadata or {}, "transient": transient or {}})


def display(*objs, include=None, exclude=None, metadata=None, transient=None, display_id=None,
            raw=False, clear=False, update=False, **kwargs):
    """Displays objects as display_data events (IPython's signature)."""
    if clear:
        clear_output(wait=True)
    if display_id is True:
        display_id = _new_id()
    if update and display_id is None:
        raise TypeError("display_id required for update_display")
    transient = dict(transient or {})
    if display_id is not None:
        transient["display_id"] = str(display_id)
    for obj in objs:
        if raw:
            # IPython's raw=True: obj is the bundle itself, sent exactly as given.
            data, md = dict(obj), {}
        else:
            data, md = format(obj, include=include, exclude=exclude)
            if not data:
                continue  # displayed itself (_ipython_display_), or nothing was wanted
        if metadata:
            md = dict(md)
            md.update(metadata)
        publish_display_data(data, md, transient=transient, update=update)
    if display_id is not None:
        return DisplayHandle(display_id)
    return None


def update_display(obj, *, display_id, **kwargs):
    kwargs["update"] = True
    display(obj, display_id=display_id, **kwargs)


def clear_output(wait=False):
    _publish("clear_output", {"wait": bool(wait)})


class _Rich:
    """Base of the small HTML/Markdown/... wrappers kernels get without IPython."""

    _mime = "text/plain"

    def __init__(self, data=None, url=None, filename=None, metadata=None):
        if data is None and filename is not None:
            mode = "rb" if self._binary else "r"
            with open(filename, mode) as f:
                data = f.read()
        self.data = data
        self.url = url
        self.metadata = metadata

    _binary = False

    def _repr_mimebundle_(self, include=None, exclude=None):
        value = self.data
        bundle = {self._mime: value, "text/plain": "<%s object>" % type(self).__name__}
        return bundle, ({self._mime: self.metadata} if self.metadata else {})


class HTML(_Rich):
    _mime = "text/html"


class Markdown(_Rich):
    _mime = "text/markdown"


class Latex(_Rich):
    _mime = "text/latex"


class SVG(_Rich):
    _mime = "image/svg+xml"


class JSON(_Rich):
    _mime = "application/json"


class Image(_Rich):
    _binary = True

    def __init__(self, data=None, url=None, filename=None, format=None, metadata=None, **kw):
        super().__init__(data, url, filename, metadata)
        fmt = (format or (filename or "").rsplit(".", 1)[-1] or "png").lower()
        self._mime = "image/jpeg" if fmt in ("jpg", "jpeg") else "image/" + fmt


def _patch_display(module):
    for name, fn in (("display", display), ("update_display", update_display),
                     ("clear_output", clear_output),
                     ("publish_display_data", publish_display_data)):
        if hasattr(module, name):
            setattr(module, name, fn)


def _patch_getipython(module):
    # IPython's get_ipython() answers with the asking kernel's own shell (_kh_ipython), not
    # InteractiveShell's singleton: main_thread kernels share one interpreter.
    import _kh_ipython
    module.get_ipython = _kh_ipython.current_shell


def install_ipython_hooks():
    """Makes IPython.display's functions reach kernelhost's events, and IPython's get_ipython()
    return the kernel's shell, once IPython is imported, without importing IPython eagerly."""
    import importlib.machinery

    targets = {"IPython.core.display_functions": _patch_display,
               "IPython.core.display": _patch_display,
               "IPython.core.getipython": _patch_getipython}

    # Plain classes: importing importlib.abc costs ~15 ms at every kernel start.
    class _Loader:
        def __init__(self, inner):
            self.inner = inner

        def create_module(self, spec):
            return self.inner.create_module(spec)

        def exec_module(self, module):
            self.inner.exec_module(module)
            targets[module.__spec__.name](module)

    class _Finder:
        def find_spec(self, fullname, path, target=None):
            if fullname not in targets:
                return None
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader)
            return spec

    sys.meta_path.insert(0, _Finder())

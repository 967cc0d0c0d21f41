# _kh_interact: the Python side of the editor requests (complete, inspect, is_complete,
# kernel_info), Jupyter's reply shapes. handle() is called by the interact thread
# (core/src/py-interact.c), never by the thread that runs the kernel's cells: it runs while a cell
# runs, so it only reads the kernel's namespace and never changes execution_count, `_`, the
# history or sys.modules["__main__"]. Cursor positions are in Unicode code points (Jupyter 5.2+),
# which is how Python indexes a str; the core has checked them against the code already.

import json
import re
import sys

_MISSING = object()
_jedi = None  # the jedi module once imported, False when it is not installed


def _get_jedi():
    global _jedi
    if _jedi is None:
        try:
            import jedi
            _jedi = jedi
        except Exception:
            _jedi = False
    return _jedi


_jedi_found = None  # whether jedi is installed (asked once, without importing it)


def _has_jedi():
    """Whether jedi is installed, without importing it (that costs about 0.2 s)."""
    global _jedi_found
    if _jedi_found is None:
        import importlib.util
        try:
            _jedi_found = importlib.util.find_spec("jedi") is not None
        except Exception:
            _jedi_found = False
    return _jedi_found and _jedi is not False


def _line_col(code, pos):
    """jedi's (1-based line, 0-based column in code points) for a code-point offset."""
    before = code[:pos]
    line = before.count("\n") + 1
    return line, pos - (before.rfind("\n") + 1)


# -- complete -------------------------------------------------------------------------------

def _signature(c):
    try:
        sigs = c.get_signatures()
        if sigs:
            s = sigs[0].to_string()
            i = s.find("(")
            return s[i:] if i >= 0 else s
    except Exception:
        pass
    return ""


def _complete_jedi(jedi, ns, code, pos):
    line, col = _line_col(code, pos)
    comps = jedi.Interpreter(code, [ns]).complete(line, col)
    if pos > 0 and code[pos - 1] == ".":
        # Right after a dot, private names are left out until an underscore is typed, as
        # IPython's completer does (omit__names, 2 by default): `obj.` lists what a user wants,
        # not thirty dunders, and their signatures are not worked out for nothing.
        comps = [c for c in comps if not c.name.startswith("_")]
    matches, types, seen = [], [], set()
    start = pos
    # Signatures cost a jedi inference each: only for short lists, as a console shows them.
    want_sig = len(comps) <= 30
    for c in comps:
        n = c.get_completion_prefix_length()
        text = c.name_with_symbols
        s = pos - n
        if text in seen:
            continue
        seen.add(text)
        start = min(start, s)
        matches.append(text)
        types.append({"start": s, "end": pos, "text": text, "type": c.type,
                      "signature": _signature(c) if want_sig and c.type == "function" else ""})
    # Every match replaces [start, pos): one with a shorter prefix gets the difference added.
    if any(t["start"] != start for t in types):
        for i, t in enumerate(types):
            if t["start"] != start:
                t["text"] = code[start:t["start"]] + t["text"]
                matches[i] = t["text"]
                t["start"] = start
    return {"matches": matches, "cursor_start": start, "cursor_end": pos,
            "metadata": {"_jupyter_types_experimental": types}}


# -- complete: the fast paths ---------------------------------------------------------------
#
# jedi costs a millisecond or more per call even for `obj.` (it parses the code and builds its
# inference state each time). The two cases editors ask for most are answered here without it,
# with the answers jedi's Interpreter gives for them: attributes of a chain of plain names of
# live objects (`box.`, `np.linalg.no`), and top-level module names after `import`/`from`.
# Anything else (calls, subscripts, strings, keyword arguments, names the code itself binds)
# returns None and goes to jedi.

_IDENT = r"[^\W\d]\w*"
# The chain before the cursor: NAME(.NAME)*.PREFIX, spaces not allowed around the dots (jedi
# allows them, but they are rare and the check below would get complicated).
_CHAIN = re.compile(r"(?<![\w.])(%s(?:\.%s)*)\.(\w*)$" % (_IDENT, _IDENT))


def _prefix_match(name, prefix):
    """jedi's match: case-insensitive by default, case-sensitive once IPython's completer is
    imported (it sets jedi.settings.case_insensitive_completion to False)."""
    settings = sys.modules.get("jedi.settings")
    if settings is None or settings.case_insensitive_completion:
        return name.lower().startswith(prefix.lower())
    return name.startswith(prefix)


def _in_string_or_comment(line):
    """Whether the end of `line` (one line, no triple quotes in the code) is inside a string
    literal or a comment."""
    quote = None
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            return True
        i += 1
    return quote is not None


def _api_type(obj):
    """jedi's type name for a live object (jedi.inference.compiled.access.get_api_type)."""
    import inspect
    if inspect.isclass(obj):
        return "class"
    if inspect.ismodule(obj):
        return "module"
    if (inspect.isbuiltin(obj) or inspect.ismethod(obj) or inspect.ismethoddescriptor(obj)
            or inspect.isfunction(obj)):
        return "function"
    return "instance"


_SAFE_DESCRIPTORS = None


def _member(obj, name):
    """The value of obj.name when reading it runs no user code jedi would not run, else
    _MISSING. Functions, slots and C getsets are read (jedi's ALLOWED_DESCRIPTOR_ACCESS);
    properties and other descriptors with __get__ are not executed: the type of such a
    match is given as "instance" (jedi's Interpreter does execute them; the value of a
    property is almost always an instance)."""
    global _SAFE_DESCRIPTORS
    import inspect
    import types
    if _SAFE_DESCRIPTORS is None:
        _SAFE_DESCRIPTORS = (types.FunctionType, types.GetSetDescriptorType,
                             types.MemberDescriptorType, types.MethodDescriptorType,
                             types.WrapperDescriptorType, types.ClassMethodDescriptorType,
                             staticmethod, classmethod)
    if type(obj) is types.ModuleType:
        # A module's attributes are its dict's values (or its __getattr__'s, which jedi calls).
        d = obj.__dict__
        if name in d:
            return d[name]
    else:
        try:
            static = inspect.getattr_static(obj, name)
        except Exception:
            static = _MISSING
        if static is not _MISSING:
            from_class = inspect.getattr_static(obj if isinstance(obj, type) else type(obj),
                                                name, _MISSING) is static
            if (from_class and hasattr(type(static), "__get__")
                    and not isinstance(static, _SAFE_DESCRIPTORS)):
                return _MISSING
    import warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return getattr(obj, name)
    except Exception:
        return None  # jedi types a failing attribute as None's: an instance


def _chain_object(ns, parts):
    """The live object a chain of names denotes, or _MISSING when jedi must judge it."""
    obj = ns.get(parts[0], _MISSING)
    for p in parts[1:]:
        if obj is _MISSING or not _plain_holder(obj):
            return _MISSING
        obj = _member(obj, p)
    return obj if obj is not _MISSING and _plain_holder(obj) else _MISSING


def _plain_holder(obj):
    """Whether jedi completes obj's attributes from dir(obj) alone, as the fast path does.
    Not for classes (jedi adds the names of typeshed's `type` stub to theirs), functions and
    methods (jedi then looks the attribute up in the source tree), dicts, lists and tuples
    (jedi gives their methods typeshed's signatures)."""
    import inspect
    return not (isinstance(obj, (type, dict, list, tuple)) or inspect.isroutine(obj))


def _fast_signature(func):
    """The signature jedi shows for a live function (its BuiltinSignature.to_string, from
    inspect.signature, or from the docstring when there is none), without the name."""
    import inspect
    from inspect import Parameter
    from jedi.inference.compiled.value import _parse_function_doc
    doc = inspect.getdoc(func) or ""
    try:
        try:
            sig_params = list(inspect.signature(func).parameters.values())
        except (RuntimeError, TypeError):
            raise ValueError
    except ValueError:
        params_str, ret = _parse_function_doc(doc)
        tokens = params_str.split(",") if params_str else []
        if inspect.ismethoddescriptor(func):
            tokens.insert(0, "self")
        params = []
        for p in tokens:
            name, _, default = p.strip().partition("=")
            params.append((Parameter.POSITIONAL_ONLY, name + ("=" + default if default else "")))
    else:
        ret = _parse_function_doc(doc)[1]
        params = []
        for p in sig_params:
            s = {Parameter.VAR_POSITIONAL: "*", Parameter.VAR_KEYWORD: "**"}.get(p.kind, "")
            s += p.name
            if p.annotation is not p.empty:
                s += ": " + inspect.formatannotation(p.annotation)
            if p.default is not p.empty:
                s += "=" + repr(p.default)
            params.append((p.kind, s))
    out, positional, kw_only = [], False, False
    for kind, s in params:
        positional |= kind == Parameter.POSITIONAL_ONLY
        if positional and kind != Parameter.POSITIONAL_ONLY:
            out.append("/")
            positional = False
        if kind == Parameter.VAR_POSITIONAL:
            kw_only = True
        elif kind == Parameter.KEYWORD_ONLY and not kw_only:
            out.append("*")
            kw_only = True
        out.append(s)
    if positional:
        out.append("/")
    return "(" + ", ".join(out) + ")" + (" -> " + ret if ret else "")


_IMPORT_HEAD = re.compile(r"(?:^|;)\s*(?:import|from)\b")


def _complete_fast_attr(ns, code, pos):
    """The reply for NAME(.NAME)*.PREFIX on live objects, or None for jedi to answer."""
    import keyword
    before = code[:pos]
    if "'''" in before or '"""' in before or "import *" in code:
        return None
    start_of_line = before.rfind("\n") + 1
    if start_of_line and before[:start_of_line - 1].endswith("\\"):
        return None
    line = before[start_of_line:]
    if code[pos:pos + 1].isidentifier():
        return None  # the cursor is inside a word: jedi's
    m = _CHAIN.search(line)
    if m is None:
        return None
    head = line[:m.start()]
    if (head.rstrip().endswith(".") or _IMPORT_HEAD.search(head)
            or _in_string_or_comment(head)):
        return None
    parts, prefix = m.group(1).split("."), m.group(2)
    if any(keyword.iskeyword(p) for p in parts) or keyword.iskeyword(prefix):
        return None
    # A name the code itself binds or uses elsewhere (an assignment, a parameter, a loop
    # variable...) is jedi's to infer: the live value may not be what the code means.
    if len(re.findall(r"(?<![\w.])%s(?!\w)" % re.escape(parts[0]), code)) != 1:
        return None
    obj = _chain_object(ns, parts)
    if obj is _MISSING:
        return None
    try:
        names = dir(obj)
    except Exception:
        return None
    if prefix:
        names = [n for n in names if isinstance(n, str) and _prefix_match(n, prefix)]
    else:
        names = [n for n in names if isinstance(n, str) and not n.startswith("_")]
    names.sort(key=lambda x: (x.startswith("__"), x.startswith("_"), x.lower()))
    # With no match jedi's reply replaces nothing: cursor_start is the cursor.
    start = pos - len(prefix) if names else pos
    want_sig = len(names) <= 30
    types = []
    for n in names:
        value = _member(obj, n)
        t = "instance" if value is _MISSING else _api_type(value)
        sig = ""
        if want_sig and t == "function":
            try:
                sig = _fast_signature(value)
            except Exception:
                sig = ""
        types.append({"start": start, "end": pos, "text": n, "type": t, "signature": sig})
    return {"matches": names, "cursor_start": start, "cursor_end": pos,
            "metadata": {"_jupyter_types_experimental": types}}


# -- complete: the module-name cache ---------------------------------------------------------

_IMPORT_LINE = re.compile(r"^[ \t]*(?:import|from)[ \t]+(%s|)$" % _IDENT)
_modules = {"key": None, "names": ()}


def _module_names_in(path):
    """Top-level module names in one sys.path entry, by jedi's rules (its _iter_module_names):
    every directory whose name is an identifier (a namespace package at least), every module
    file and stub."""
    import inspect
    import os
    try:
        entries = [(e.name, e.is_dir()) for e in os.scandir(path)]
    except OSError:
        try:
            import zipfile
            with zipfile.ZipFile(path) as z:
                tops = {n.split("/", 1)[0]: "/" in n for n in z.namelist()}
            entries = list(tops.items())
        except Exception:
            return
    for name, is_dir in entries:
        if is_dir:
            if name != "__pycache__" and name.isidentifier():
                yield name
        else:
            mod = name[:-4] if name.endswith(".pyi") else inspect.getmodulename(name)
            if mod and "." not in mod and mod != "__init__":
                yield mod


def _top_level_modules():
    """Top-level module names (built-in ones, those on sys.path and in the current directory,
    which jedi adds as the project's), cached per process: the cache is rebuilt when sys.path
    or the directory changes, or the mtime of one of those directories does (creating or
    removing a module file changes its directory's mtime)."""
    import os
    cwd = os.getcwd()
    paths = [p or cwd for p in sys.path]
    if cwd not in paths:
        paths.insert(0, cwd)
    stamps = []
    for d in paths:
        try:
            stamps.append(os.stat(d).st_mtime_ns)
        except OSError:
            stamps.append(None)
    key = (tuple(paths), tuple(stamps))
    if _modules["key"] != key:
        import time
        names = set(sys.builtin_module_names)
        for d in paths:
            names.update(_module_names_in(d))
        _modules["names"] = tuple(sorted(names))
        # A directory changed within the filesystem's timestamp granularity of the listing
        # may change again without its mtime moving (git's "racy" entries): such a listing is
        # used once and not trusted for the next request.
        recent = time.time_ns() - 2 * 10**9
        _modules["key"] = None if any(t is not None and t >= recent for t in stamps) else key
    return _modules["names"]


def _complete_fast_import(code, pos):
    """The reply for `import PREFIX` / `from PREFIX` on the cursor's line, or None."""
    before = code[:pos]
    start_of_line = before.rfind("\n") + 1
    m = _IMPORT_LINE.match(before, start_of_line)
    if m is None or code[pos:pos + 1].strip():
        return None  # the cursor is inside a word: jedi's
    prefix = m.group(1)
    names = [n for n in _top_level_modules() if _prefix_match(n, prefix)]
    names.sort(key=lambda x: (x.startswith("__"), x.startswith("_"), x.lower()))
    start = pos - len(prefix) if names else pos
    types = [{"start": start, "end": pos, "text": n, "type": "module", "signature": ""}
             for n in names]
    return {"matches": names, "cursor_start": start, "cursor_end": pos,
            "metadata": {"_jupyter_types_experimental": types}}


_TOKEN = re.compile(r"[\w.]*$")


def _complete_rl(ns, code, pos):
    import rlcompleter
    token = _TOKEN.search(code[:pos]).group()
    comp = rlcompleter.Completer(ns)
    matches, i = [], 0
    while i < 1000:
        m = comp.complete(token, i)
        if m is None:
            break
        if m not in matches:
            matches.append(m)
        i += 1
    start = pos - len(token)
    types = [{"start": start, "end": pos, "text": m,
              "type": "function" if m.endswith("(") else "instance", "signature": ""}
             for m in matches]
    return {"matches": matches, "cursor_start": start, "cursor_end": pos,
            "metadata": {"_jupyter_types_experimental": types}}


def complete(kernel, content):
    code = content["code"]
    pos = content["cursor_pos"]
    # The fast paths give jedi's answers, so they stand in for jedi only where it is installed
    # (without it, rlcompleter's answers are the kernel's); they do not import it.
    reply = None
    if _has_jedi():
        reply = _complete_fast_import(code, pos) or _complete_fast_attr(kernel.ns, code, pos)
    if reply is None:
        jedi = _get_jedi()
        if jedi:
            reply = _complete_jedi(jedi, kernel.ns, code, pos)
        else:
            reply = _complete_rl(kernel.ns, code, pos)
    reply["status"] = "ok"
    return reply


# -- inspect --------------------------------------------------------------------------------

_NAME = re.compile(r"[^\W\d]\w*(?:\s*\.\s*[^\W\d]\w*)*")


def _name_at(code, pos):
    """The dotted name under the cursor; else the callable whose call the cursor is in."""
    for m in _NAME.finditer(code):
        if m.start() <= pos <= m.end():
            # The name up to the end of the dotted part the cursor is in (IPython's
            # token_at_cursor does the same): `os.pa|th.join` inspects os.path.
            end = code.find(".", pos)
            text = m.group() if end < 0 or end >= m.end() else code[m.start():end]
            return re.sub(r"\s+", "", text)
    depth = 0
    for i in range(pos - 1, -1, -1):
        ch = code[i]
        if ch in ")]}":
            depth += 1
        elif ch in "([{":
            if depth == 0:
                if ch != "(":
                    return None
                m = re.search(r"[^\W\d]\w*(?:\.[^\W\d]\w*)*\s*$", code[:i])
                return m.group().strip() if m else None
            depth -= 1
    return None



def _lookup(ns, name):
    import builtins
    parts = name.split(".")
    obj = ns.get(parts[0], _MISSING)
    if obj is _MISSING:
        obj = getattr(builtins, parts[0], _MISSING)
    for p in parts[1:]:
        if obj is _MISSING:
            break
        try:
            obj = getattr(obj, p)
        except Exception:
            obj = _MISSING
    return obj


def _describe(obj, name, detail):
    import inspect
    fields = []
    try:
        sig = str(inspect.signature(obj)) if callable(obj) else None
    except (TypeError, ValueError):
        sig = None
    if sig is not None:
        fields.append(("Signature", name + sig))
    if not (inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj)):
        try:
            text = repr(obj)
        except Exception:
            text = "<repr failed>"
        if len(text) > 2000:
            text = text[:2000] + "..."
        fields.append(("String form", text))
    doc = inspect.getdoc(obj)
    source = None
    if detail >= 1:
        try:
            # Cells' sources reach linecache only once it is imported (_kh_runtime).
            import _kh_runtime
            _kh_runtime._sync_linecache()
            source = inspect.getsource(obj)
        except Exception:
            source = None
    if source is not None:
        fields.append(("Source", source.rstrip("\n")))
    elif doc:
        fields.append(("Docstring", doc))
    else:
        fields.append(("Docstring", "<no docstring>"))
    try:
        f = inspect.getsourcefile(obj) or inspect.getfile(obj)
    except Exception:
        f = None
    if f:
        fields.append(("File", f))
    fields.append(("Type", type(obj).__name__))
    plain = "\n".join("%s:%s%s" % (k, "\n" if "\n" in v else " " * max(1, 11 - len(k)), v)
                      for k, v in fields)
    md = []
    for k, v in fields:
        if k in ("Source", "Signature"):
            md.append("**%s:**\n```python\n%s\n```" % (k, v))
        elif k == "Docstring":
            md.append("**%s:**\n\n%s" % (k, v))
        else:
            md.append("**%s:** `%s`" % (k, v))
    return {"text/plain": plain, "text/markdown": "\n\n".join(md)}


def inspect_(kernel, content):
    code, pos, detail = content["code"], content["cursor_pos"], content.get("detail_level", 0)
    name = _name_at(code, pos)
    obj = _lookup(kernel.ns, name) if name else _MISSING
    if obj is _MISSING:
        return {"status": "ok", "found": False, "data": {}, "metadata": {}}
    return {"status": "ok", "found": True, "data": _describe(obj, name, detail), "metadata": {}}


# -- is_complete ----------------------------------------------------------------------------

# A line that only IPython understands: a magic, a shell escape, a help request.
_IPY_LINE = re.compile(r"^\s*(%|!|\?)|\?\s*$")


def _indent_of(line):
    return len(line) - len(line.lstrip(" \t"))


def is_complete(kernel, content):
    code = content["code"]
    lines = code.splitlines()
    if any(_IPY_LINE.search(l) for l in lines):
        # IPython syntax is judged by IPython's own transformer, imported only for such code;
        # without IPython the kernel cannot tell.
        try:
            from IPython.core.inputtransformer2 import TransformerManager
        except Exception:
            return {"status": "unknown"}
        status, indent = TransformerManager().check_complete(code)
        reply = {"status": status}
        if status == "incomplete":
            reply["indent"] = " " * (indent or 0)
        return reply
    import codeop
    import warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ok = codeop.compile_command(code, "<input>", "exec")
    except (SyntaxError, OverflowError, ValueError, TypeError):
        return {"status": "invalid"}
    except (RecursionError, MemoryError):
        # The compiler gave up (a too deeply nested expression): the kernel cannot tell.
        return {"status": "unknown"}
    last = next((l for l in reversed(lines) if l.strip()), "")
    if ok is not None and not code.rstrip(" \t").endswith("\\"):
        # IPython's rule: a block whose last line is indented, with no newline after it, may
        # go on: Enter adds a line at that indent (ipykernel answers so).
        if len(lines) > 1 and not code.endswith("\n") and _indent_of(lines[-1]) > 0:
            return {"status": "incomplete", "indent": " " * _indent_of(lines[-1])}
        return {"status": "complete"}
    indent = _indent_of(last) + (4 if last.rstrip().endswith(":") else 0)
    return {"status": "incomplete", "indent": " " * indent}


# -- kernel_info ----------------------------------------------------------------------------

def kernel_info(kernel, content):
    version = "%d.%d.%d" % sys.version_info[:3]  # platform.python_version(), without its import
    return {
        "status": "ok",
        "protocol_version": "5.3",
        "implementation": "kernelhost",
        "implementation_version": content.get("implementation_version", ""),
        "language_info": {
            "name": "python",
            "version": version,
            "mimetype": "text/x-python",
            "file_extension": ".py",
            "pygments_lexer": "ipython3",
            "codemirror_mode": {"name": "ipython", "version": 3},
            "nbconvert_exporter": "python",
        },
        "banner": "Python %s (kernelhost %s)\n" % (sys.version.split("\n")[0],
                                                    content.get("implementation_version", "")),
        "help_links": [
            {"text": "Python Reference", "url": "https://docs.python.org/%d.%d" %
             sys.version_info[:2]},
        ],
        "debugger": False,
    }


_OPS = {"complete": complete, "inspect": inspect_, "is_complete": is_complete,
        "kernel_info": kernel_info}


def handle(kernel, op, content_json):
    """Serves one request: returns the reply content as UTF-8 JSON bytes. Exceptions propagate
    to the caller (py-interact.c), which reports them as KH_EPYTHON."""
    content = json.loads(content_json)
    reply = _OPS[op](kernel, content)
    return json.dumps(reply, ensure_ascii=False, default=repr).encode("utf-8", "surrogatepass")

# _kh_interact: the Python side of the editor requests (complete, inspect, is_complete,
# kernel_info), Jupyter's reply shapes. handle() is called by the interact thread
# (core/src/py-interact.c), never by the thread that runs the kernel's cells: it runs while a cell
# runs, so it only reads the kernel's namespace and never changes execution_count, `_`, the
# history or sys.modules["__main__"]. Cursor positions are in Unicode code points (Jupyter 5.2+),
# which is how Python indexes a str; the core has checked them against the code already.

import json
import re
import sys

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


_MISSING = object()


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
    if ok is not None and not code.rstrip(" \t").endswith("\\"):
        return {"status": "complete"}
    last = next((l for l in reversed(lines) if l.strip()), "")
    indent = _indent_of(last) + (4 if last.rstrip().endswith(":") else 0)
    return {"status": "incomplete", "indent": " " * indent}


# -- kernel_info ----------------------------------------------------------------------------

def kernel_info(kernel, content):
    import platform
    version = platform.python_version()
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

#!/usr/bin/python3
"""compare.py: runs real notebooks cell by cell in ipykernel and in kernelhost and says, per
notebook and per kernelhost mode, how many cells give the same outputs as ipykernel.

Run with Debian's interpreter (the one kernelhost embeds, and whose ipykernel is the reference):

    /usr/bin/python3 tests/notebooks/compare.py [--modes main_thread,worker] [NOTEBOOK ...]
    make nbcompare

Every code cell of a notebook runs in a fresh ipykernel (jupyter_client, Debian's
python3-ipykernel) and in a fresh kernelhost kernel (tests/notebooks/run_kernelhost.js, the Node
binding), each in its own temporary copy of the notebook's directory. Outputs are then compared
the way a reader compares two rendered notebooks:

- execution counts, tracebacks, metadata and the order between stdout and stderr are ignored;
  stream text is merged per stream name; an error is its ename and evalue;
- memory addresses (0x...), timing figures (%timeit, %time), the run's directory and temporary
  paths, cell file names in SyntaxError messages and pandas Styler's random table ids are masked;
- images (image/png, image/jpeg, image/gif, image/svg+xml) are compared by MIME type and pixel
  size, not bytes; every other MIME type by its (masked) text;
- clear_output and update_display_data are applied as a front end applies them, so what is
  compared is what a reader would see.

The output is Markdown: a table of matched and differing cells per notebook and mode, the
categories of the differences, then each differing cell with its first source line and the first
lines of the difference (`-` ipykernel, `+` kernelhost). `--json FILE` saves both sides' raw and
normalised outputs. `--check` is the smoke test's mode: exit 1 unless every cell matches, except
cells tagged `kh-differs` in their metadata, which must differ (so a tool that stopped seeing
differences fails too). Exit status 77 when ipykernel or the kernelhost addon is missing (ctest
counts it as skipped).
"""

import argparse
import base64
import difflib
import json
import os
import queue
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SKIP = 77

# The notebooks `make nbcompare` runs (see tests/notebooks/README.md for where each comes from).
NOTEBOOKS = [
    "nbsphinx/code-cells.ipynb",
    "sympy/Sylvester_resultant.ipynb",
    "sympy/fresnel_integrals.ipynb",
    "notebook/running_code.ipynb",
    "notebook/importing_notebooks.ipynb",
    "pandas/style.ipynb",
]

IMAGE_MIMES = ("image/png", "image/jpeg", "image/gif", "image/svg+xml")
# What the classic notebook (6.x, OutputArea.display_order) renders of a bundle: the first of
# these it has. "As shown" compares only that one.
DISPLAY_ORDER = ("application/javascript", "text/html", "text/markdown", "text/latex",
                 "image/svg+xml", "image/png", "image/jpeg", "application/pdf", "text/plain")


def skip(why):
    print(f"SKIP: {why}")
    sys.exit(SKIP)


# --- running --------------------------------------------------------------------------------

def run_ipykernel(cells, cwd, timeout):
    """Runs the cells in a fresh ipykernel (Debian's python3) and returns one record per cell:
    {"status", "outputs": [nbformat-like output dicts]}."""
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    # A kernelspec of our own, so the kernel is /usr/bin/python3 whatever `python3` on PATH is.
    specdir = tempfile.mkdtemp(prefix="khnb-spec-")
    os.makedirs(os.path.join(specdir, "khnb"))
    with open(os.path.join(specdir, "khnb", "kernel.json"), "w") as f:
        json.dump({"argv": ["/usr/bin/python3", "-m", "ipykernel_launcher", "-f",
                            "{connection_file}"], "display_name": "khnb", "language": "python"}, f)
    km = KernelManager(kernel_name="khnb",
                       kernel_spec_manager=KernelSpecManager(kernel_dirs=[specdir]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    # ipykernel's debugger warns on stderr about frozen modules at start; not a cell's output.
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    km.start_kernel(cwd=cwd, env=env)
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=120)
    results = []
    try:
        for code in cells:
            results.append(_ipykernel_cell(km, kc, code, timeout))
            if results[-1]["status"] == "dead":
                kc.stop_channels()
                km.restart_kernel(now=True)
                kc = km.client()
                kc.start_channels()
                kc.wait_for_ready(timeout=120)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        shutil.rmtree(specdir, ignore_errors=True)
    return results


def _ipykernel_cell(km, kc, code, timeout):
    msg_id = kc.execute(code, allow_stdin=False, stop_on_error=False)
    outputs = []
    deadline = time.monotonic() + timeout
    interrupted = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            if interrupted or not km.is_alive():
                return {"status": "dead", "outputs": outputs}
            km.interrupt_kernel()
            interrupted = True
            deadline = time.monotonic() + 10
            continue
        try:
            msg = kc.get_iopub_msg(timeout=min(left, 1.0))
        except queue.Empty:
            if not km.is_alive():
                return {"status": "dead", "outputs": outputs}
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "status" and content["execution_state"] == "idle":
            break
        out = output(kind, content)
        if out:
            outputs.append(out)
    status = "ok"
    try:
        reply = kc.get_shell_msg(timeout=10)
        status = reply["content"].get("status", "ok")
    except queue.Empty:
        status = "noreply"
    if interrupted:
        status = "timeout"
    return {"status": status, "outputs": outputs}


def output(kind, content):
    """One Jupyter message (or kernelhost event, which has the same fields) as the output dict
    both sides are normalised from; None for what is not an output."""
    if kind == "stream":
        return {"output_type": "stream", "name": content["name"], "text": content["text"]}
    if kind in ("display_data", "update_display_data", "execute_result"):
        out = {"output_type": kind, "data": content.get("data", {})}
        display_id = (content.get("transient") or {}).get("display_id")
        if display_id:
            out["display_id"] = display_id
        return out
    if kind == "error":
        return {"output_type": "error", "ename": content["ename"], "evalue": content["evalue"]}
    if kind == "clear_output":
        return {"output_type": "clear_output", "wait": content.get("wait", False)}
    return None


def run_kernelhost(cells, cwd, mode, timeout):
    """Runs the cells in a fresh kernelhost kernel through the Node binding; same records as
    run_ipykernel."""
    node = shutil.which("node")
    with tempfile.TemporaryDirectory(prefix="khnb-job-") as tmp:
        job, out = os.path.join(tmp, "job.json"), os.path.join(tmp, "out.json")
        with open(job, "w") as f:
            json.dump({"mode": mode, "cwd": cwd, "timeout_ms": int(timeout * 1000),
                       "cells": cells}, f)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        proc = subprocess.run([node, os.path.join(HERE, "run_kernelhost.js"), job, out],
                              env=env, cwd=cwd, capture_output=True, text=True,
                              timeout=timeout * (len(cells) + 2) + 60)
        if proc.returncode != 0 or not os.path.exists(out):
            raise RuntimeError(f"run_kernelhost.js ({mode}) failed with {proc.returncode}:\n"
                               f"{proc.stderr[-3000:]}")
        with open(out) as f:
            raw = json.load(f)
    results = []
    for cell in raw["cells"]:
        outputs = []
        for ev in cell["outputs"]:
            out = output("error" if ev["type"] == "execute_error" else ev["type"], ev["data"])
            if out:
                outputs.append(out)
        if cell["status"] in ("failed", "dead") and cell.get("error"):
            outputs.append({"output_type": "error", "ename": cell["error"]["ename"],
                            "evalue": cell["error"]["evalue"]})
        results.append({"status": cell["status"], "outputs": outputs})
    return results


# --- normalising ----------------------------------------------------------------------------

def image_size(mime, value):
    """Pixel size "WxH" of an image output (SVG: its width/height attributes), or "?"."""
    try:
        if mime == "image/svg+xml":
            head = value if isinstance(value, str) else "".join(value)
            m = re.search(r"<svg\b[^>]*>", head, re.S)
            if not m:
                return "?"
            w = re.search(r'\bwidth="([^"]+)"', m.group(0))
            h = re.search(r'\bheight="([^"]+)"', m.group(0))
            return f"{w.group(1) if w else '?'}x{h.group(1) if h else '?'}"
        raw = base64.b64decode(value if isinstance(value, str) else "".join(value))
        if mime == "image/png" and raw[:8] == b"\x89PNG\r\n\x1a\n":
            w, h = struct.unpack(">II", raw[16:24])
            return f"{w}x{h}"
        if mime == "image/gif" and raw[:3] == b"GIF":
            w, h = struct.unpack("<HH", raw[6:10])
            return f"{w}x{h}"
        if mime == "image/jpeg" and raw[:2] == b"\xff\xd8":
            i = 2
            while i + 9 < len(raw):
                if raw[i] != 0xFF:
                    i += 1
                    continue
                marker, length = raw[i + 1], struct.unpack(">H", raw[i + 2:i + 4])[0]
                if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                    h, w = struct.unpack(">HH", raw[i + 5:i + 9])
                    return f"{w}x{h}"
                i += 2 + length
    except Exception:  # a malformed image is a difference of its own, shown as "?"
        pass
    return "?"


def masker(cwd):
    real = os.path.realpath(cwd)
    subs = [
        (re.compile(re.escape(real)), "<CWD>"),
        (re.compile(re.escape(cwd)), "<CWD>"),
        (re.compile(r"/tmp/(?:tmp|khnb-)[\w.-]+"), "<TMP>"),
        # A cell's file name, in warnings and messages: "/tmp/ipykernel_<pid>/<hash>.py" in
        # ipykernel, "<cell-N>" in a kernelhost worker, "<cell-N:KERNEL_ID>" in a main_thread
        # kernel (kernels sharing one interpreter need names of their own).
        (re.compile(r"/tmp/ipykernel_\d+/\d+\.py"), "<cell>"),
        (re.compile(r"<cell-\d+(?::[^>\s]+)?>"), "<cell>"),
        (re.compile(r"0x[0-9a-fA-F]{4,16}"), "0x…"),
        # %timeit, %time and friends: every duration, and %timeit's loop counts.
        (re.compile(r"\d+(?:[.,]\d+)?\s*(?:ns|µs|us|ms|s|min)\b"), "<T>"),
        (re.compile(r"\d[\d,]* loops? each"), "<N> loops each"),
        (re.compile(r"\d+ runs?\b"), "<N> runs"),
        # A SyntaxError names the cell's file: "<cell-3>" in kernelhost, "1234.py" in ipykernel.
        (re.compile(r"\((?:<[^>()]+>|\d+\.py|[\w./-]*\.py), line (\d+)\)"), r"(<cell>, line \1)"),
        # pandas Styler: a random uuid per table, in every id and CSS selector of its HTML.
        (re.compile(r"\bT_[0-9a-f]{5}(?=[_ \"#.,:{])"), "T_<id>"),
    ]

    def mask(text):
        if not isinstance(text, str):
            text = "".join(text) if isinstance(text, list) else json.dumps(text, sort_keys=True)
        for rx, rep in subs:
            text = rx.sub(rep, text)
        return text
    return mask


def rendered(results, cwd, shown_only=False):
    """What a reader sees per cell, after clear_output and update_display_data, masked
    (shown_only: of each bundle only the MIME type a front end renders)."""
    mask = masker(cwd)
    cells = [[] for _ in results]
    by_display_id = {}
    for ci, cell in enumerate(results):
        pending_clear = False
        for out in cell["outputs"]:
            kind = out["output_type"]
            if kind == "clear_output":
                if out.get("wait"):
                    pending_clear = True
                else:
                    cells[ci].clear()
                continue
            if kind == "update_display_data":
                for target in by_display_id.get(out.get("display_id"), []):
                    target["data"] = out["data"]
                continue
            if pending_clear:
                cells[ci].clear()
                pending_clear = False
            shown = dict(out)
            cells[ci].append(shown)
            if out.get("display_id"):
                by_display_id.setdefault(out["display_id"], []).append(shown)
        if cell["status"] in ("timeout", "dead", "noreply", "aborted"):
            cells[ci].append({"output_type": "error", "ename": f"<{cell['status']}>",
                              "evalue": ""})
    return [normal_form(c, mask, shown_only) for c in cells]


def normal_form(outputs, mask, shown_only=False):
    """One cell's outputs as comparable lines: stdout, stderr, then each other output in order."""
    streams = {}
    rest = []
    for out in outputs:
        kind = out["output_type"]
        if kind == "stream":
            streams[out["name"]] = streams.get(out["name"], "") + out["text"]
        elif kind == "error":
            rest.append(["error", mask(f"{out['ename']}: {out['evalue']}")])
        else:
            item = [kind]
            mimes = sorted(out["data"])
            if shown_only:
                mimes = [m for m in DISPLAY_ORDER if m in out["data"]][:1] or mimes
            for mime in mimes:
                value = out["data"][mime]
                if mime in IMAGE_MIMES:
                    item.append(f"{mime}: {image_size(mime, value)}")
                else:
                    text = mask(value).rstrip("\n")
                    item.append(f"{mime}: " + text.replace("\n", "\n    "))
            rest.append(item)
    lines = []
    for name in sorted(streams):
        text = mask(streams[name])
        # A reader does not see a carriage-return overwrite, nor trailing blank space.
        text = "\n".join(line.rsplit("\r", 1)[-1].rstrip() for line in text.split("\n"))
        lines.append(f"{name}: " + text.rstrip("\n").replace("\n", "\n    "))
    for item in rest:
        lines.append(item[0])
        lines.extend("  " + x for x in item[1:])
    return "\n".join(lines).split("\n") if lines else []


# --- comparing ------------------------------------------------------------------------------

def categories(ref, kh, source):
    """Short labels for how one cell differs (a cell can have several)."""
    def parse(lines):
        out = {"streams": {}, "items": []}
        cur = None
        for line in lines:
            if line.startswith("stdout:") or line.startswith("stderr:"):
                cur = ("stream", line[:6])
                out["streams"][line[:6]] = [line]
            elif not line.startswith(" "):
                cur = ("item", len(out["items"]))
                out["items"].append([line])
            elif cur and cur[0] == "stream":
                out["streams"][cur[1]].append(line)
            elif cur:
                out["items"][cur[1]].append(line)
        return out

    r, k = parse(ref), parse(kh)
    cats = set()
    for name in ("stdout", "stderr"):
        if r["streams"].get(name) != k["streams"].get(name):
            cats.add(f"{name} differs")
    rerr = [i[1].strip() for i in r["items"] if i[0] == "error"]
    kerr = [i[1].strip() for i in k["items"] if i[0] == "error"]
    kename = [e.split(":", 1)[0] for e in kerr]
    rename = [e.split(":", 1)[0] for e in rerr]
    if "SyntaxError" in kename and "SyntaxError" not in rename:
        cats.add("SyntaxError in kernelhost (IPython syntax)")
    elif any("get_ipython" in e for e in kerr) and not rerr:
        cats.add("get_ipython missing in kernelhost")
    elif kerr and not rerr:
        cats.add(f"error only in kernelhost ({', '.join(sorted(set(kename)))})")
    elif rerr and not kerr:
        cats.add(f"error only in ipykernel ({', '.join(sorted(set(rename)))})")
    elif rerr != kerr:
        cats.add("errors differ")
    if rerr or kerr:
        return sorted(cats)
    rkinds = [i[0] for i in r["items"]]
    kkinds = [i[0] for i in k["items"]]
    if rkinds != kkinds:
        cats.add(f"outputs differ ({'+'.join(rkinds) or 'none'} vs {'+'.join(kkinds) or 'none'})")
        return sorted(cats)
    for ri, ki in zip(r["items"], k["items"]):
        rm = {x.strip().split(":", 1)[0]: x for x in ri[1:] if not x.startswith("    ")}
        km = {x.strip().split(":", 1)[0]: x for x in ki[1:] if not x.startswith("    ")}
        if set(rm) != set(km):
            plus, minus = sorted(set(km) - set(rm)), sorted(set(rm) - set(km))
            cats.add("MIME types differ (" + ", ".join(
                [f"+{m}" for m in plus] + [f"-{m}" for m in minus]) + ")")
        if ri != ki:
            rtext, ktext = mime_texts(ri), mime_texts(ki)
            for mime in sorted(set(rtext) & set(ktext)):
                if rtext[mime] != ktext[mime]:
                    cats.add("image size differs" if mime in IMAGE_MIMES else f"{mime} differs")
    return sorted(cats) or ["differs"]


def mime_texts(item):
    texts, cur = {}, None
    for line in item[1:]:
        if not line.startswith("    "):
            cur = line.strip().split(":", 1)[0]
            texts[cur] = [line]
        elif cur:
            texts[cur].append(line)
    return texts


def ipython_syntax(source):
    """True when a cell is not plain Python (magics, shell escapes, `obj?`)."""
    try:
        compile(source, "<cell>", "exec", flags=0x2000)  # PyCF_ALLOW_TOP_LEVEL_AWAIT
        return False
    except SyntaxError:
        return True


def first_line(source):
    for line in source.split("\n"):
        if line.strip():
            return line.strip()[:70]
    return "(empty)"


# --- main -----------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", help=f"default: {', '.join(NOTEBOOKS)}")
    ap.add_argument("--modes", default="main_thread,worker")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per cell")
    ap.add_argument("--ref-runs", type=int, default=2,
                    help="ipykernel runs; a cell whose outputs differ between them (random data, "
                         "clocks) is 'unstable' and left out of the counts (default 2)")
    ap.add_argument("--diff-lines", type=int, default=6, help="difference lines shown per cell")
    ap.add_argument("--json", help="write every cell's raw and normalised outputs here")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 unless all cells match except those tagged kh-differs")
    args = ap.parse_args()

    try:
        import jupyter_client  # noqa: F401
        import nbformat
        import ipykernel  # noqa: F401
    except ImportError as e:
        skip(f"{e.name} is not installed (Debian: python3-ipykernel python3-jupyter-client "
             "python3-nbformat)")
    if not shutil.which("node"):
        skip("node is not on PATH")
    if not any(os.path.exists(os.path.join(ROOT, "bindings-node", "build", d, "kernelhost.node"))
               for d in ("Release", "Debug")):
        skip("the kernelhost Node addon is not built (run `npm install` in the repository)")

    modes = [m for m in args.modes.split(",") if m]
    paths = args.notebooks or [os.path.join(HERE, p) for p in NOTEBOOKS]
    report = {"modes": modes, "notebooks": []}
    failures = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        code_cells = [c for c in nb.cells if c.cell_type == "code"]
        sources = [c.source for c in code_cells]
        tagged = [("kh-differs" in c.get("metadata", {}).get("tags", [])) for c in code_cells]
        name = os.path.abspath(path)
        if name.startswith(HERE + os.sep):
            name = os.path.relpath(name, HERE)
        entry = {"notebook": name, "cells": len(sources), "modes": {}, "ipykernel": []}
        print(f"running {name} ({len(sources)} code cells): ipykernel", end="", file=sys.stderr,
              flush=True)
        refs = []
        for run in range(max(1, args.ref_runs)):
            t0 = time.monotonic()
            with scratch_copy(path) as cwd:
                raw = run_ipykernel(sources, cwd, args.timeout)
                refs.append((rendered(raw, cwd), rendered(raw, cwd, shown_only=True)))
            entry["ipykernel"].append({"raw": raw, "normal": refs[-1][0],
                                       "s": time.monotonic() - t0})
        ref, ref_shown = refs[0]
        unstable = [any(r[0][i] != ref[i] for r in refs[1:]) for i in range(len(sources))]
        entry["unstable"] = [i for i, u in enumerate(unstable) if u]
        for mode in modes:
            print(f", kernelhost {mode}", end="", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            with scratch_copy(path) as cwd:
                kh_raw = run_kernelhost(sources, cwd, mode, args.timeout)
                kh, kh_shown = rendered(kh_raw, cwd), rendered(kh_raw, cwd, shown_only=True)
            cells = []
            for i, src in enumerate(sources):
                same = ref[i] == kh[i]
                cell = {"index": i, "match": same, "match_shown": ref_shown[i] == kh_shown[i],
                        "unstable": unstable[i], "ipython_syntax": ipython_syntax(src),
                        "source": first_line(src), "normal": kh[i], "raw": kh_raw[i]}
                if not same:
                    cell["categories"] = categories(ref[i], kh[i], src)
                    cell["diff"] = [d for d in difflib.unified_diff(ref[i], kh[i], n=0,
                                                                    lineterm="")
                                    if not d.startswith(("---", "+++", "@@"))]
                if args.check and (unstable[i] or same == tagged[i]):
                    why = ("differs between ipykernel runs" if unstable[i] else
                           "matches but is tagged kh-differs" if same else "differs")
                    failures.append(f"{name} [{mode}] cell {i + 1} {why}: {first_line(src)}")
                cells.append(cell)
            entry["modes"][mode] = {"cells": cells, "s": time.monotonic() - t0}
        print("", file=sys.stderr)
        report["notebooks"].append(entry)

    print_report(report, args.diff_lines)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    if args.check:
        for f in failures:
            print(f"FAIL: {f}")
        if failures:
            return 1
        print("OK: every cell matched ipykernel, and every cell tagged kh-differs differed")
    return 0


class scratch_copy:
    """A temporary copy of a notebook's directory (cells may write files next to it)."""

    def __init__(self, path):
        self.src = os.path.dirname(os.path.abspath(path))

    def __enter__(self):
        self.tmp = tempfile.mkdtemp(prefix="khnb-run-")
        dst = os.path.join(self.tmp, "nb")
        shutil.copytree(self.src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        return dst

    def __exit__(self, *exc):
        shutil.rmtree(self.tmp, ignore_errors=True)




def print_report(report, diff_lines):
    """The Markdown report: counts per notebook and mode, categories, then each difference."""
    modes = report["modes"]
    print("| notebook | cells | unstable | " + " | ".join(
        f"{m}: matched | differing | matched as shown | plain-Python cells matched"
        for m in modes) + " |")
    print("|" + "---|" * (3 + 4 * len(modes)))
    totals = {m: [0, 0, 0, 0, 0] for m in modes}
    ncells = nunstable = 0
    for nb in report["notebooks"]:
        row = [nb["notebook"], str(nb["cells"]), str(len(nb["unstable"]))]
        ncells += nb["cells"]
        nunstable += len(nb["unstable"])
        for m in modes:
            cells = [c for c in nb["modes"][m]["cells"] if not c["unstable"]]
            matched = sum(c["match"] for c in cells)
            shown = sum(c["match_shown"] for c in cells)
            plain = [c for c in cells if not c["ipython_syntax"]]
            pmatched = sum(c["match"] for c in plain)
            for j, v in enumerate((matched, len(cells) - matched, shown, pmatched, len(plain))):
                totals[m][j] += v
            row += [str(matched), str(len(cells) - matched), str(shown),
                    f"{pmatched}/{len(plain)}"]
        print("| " + " | ".join(row) + " |")
    row = ["**total**", str(ncells), str(nunstable)]
    compared = max(1, ncells - nunstable)
    for m in modes:
        matched, differing, shown, pmatched, plain = totals[m]
        row += [f"**{matched}** ({100.0 * matched / compared:.0f}%)", str(differing),
                f"{shown} ({100.0 * shown / compared:.0f}%)",
                f"{pmatched}/{plain} ({100.0 * pmatched / max(1, plain):.0f}%)"]
    print("| " + " | ".join(row) + " |")
    print("\nmatched: every output the same, every MIME type of each (masked as the README says);"
          " as shown: only the MIME type a notebook front end renders of each bundle; unstable:"
          " cells whose outputs differ between two ipykernel runs, not counted.")

    print("\n### Categories of differences (cells; a cell can be in several)\n")
    print("| category | " + " | ".join(modes) + " |")
    print("|---|" + "---|" * len(modes))
    counts = {}
    for nb in report["notebooks"]:
        for m in modes:
            for c in nb["modes"][m]["cells"]:
                if c["unstable"]:
                    continue
                for cat in c.get("categories", []):
                    counts.setdefault(cat, {}).setdefault(m, 0)
                    counts[cat][m] += 1
    for cat in sorted(counts, key=lambda k: (-sum(counts[k].values()), k)):
        print(f"| {cat} | " + " | ".join(str(counts[cat].get(m, 0)) for m in modes) + " |")

    print("\n### Differing cells (`-` ipykernel, `+` kernelhost)")
    for nb in report["notebooks"]:
        if nb["unstable"]:
            print(f"\n{nb['notebook']}: unstable in ipykernel, not compared: cells "
                  + ", ".join(str(i + 1) for i in nb["unstable"]))
        for m in modes:
            cells = [c for c in nb["modes"][m]["cells"] if not c["match"] and not c["unstable"]]
            if not cells:
                continue
            print(f"\n#### {nb['notebook']} [{m}]\n")
            print("```")
            for c in cells:
                print(f"cell {c['index'] + 1}: {c['source']}   [{'; '.join(c['categories'])}]")
                for line in c["diff"][:diff_lines]:
                    print("    " + line[:150])
                if len(c["diff"]) > diff_lines:
                    print(f"    ... ({len(c['diff']) - diff_lines} more lines)")
            print("```")


if __name__ == "__main__":
    sys.exit(main())

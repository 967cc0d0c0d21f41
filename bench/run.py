# run.py: `make bench`. Runs every metric for kernelhost (bench/kh_bench.c, the Lua and Node
# round-trip scripts) and for ipykernel (bench/ipykernel_bench.py) in one run, prints the table
# side by side with the ratio, and writes bench/results/latest.json.
#
# A metric whose piece is not built yet (worker mode, the warm pool, the Lua module, the Node
# addon) prints "not available: <why>" and never a number; it starts working once the piece is
# there. Environment: KH_BUILD (build dir, default build), BENCH_QUICK=1 (few runs, a smoke
# test), BENCH_ONLY=id,id (a subset of rows, by id prefix), KH_BENCH (the kh_bench binary).

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.path.abspath(os.environ.get("KH_BUILD", os.path.join(ROOT, "build")))
QUICK = os.environ.get("BENCH_QUICK") == "1"
ONLY = [s for s in os.environ.get("BENCH_ONLY", "").split(",") if s]
SYS_PY = "/usr/bin/python3"  # Debian's python3 with python3-ipykernel, never the pyenv one
KH_BENCH = os.environ.get("KH_BENCH", "")


def n(full, quick):
    return quick if QUICK else full


# --- running one side of a metric ------------------------------------------------------------

def run_json(cmd, timeout, env=None, cwd=ROOT):
    """Runs cmd; returns the last JSON object it printed, or {"skip": why}."""
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"skip": "timed out after %d s: %s" % (timeout, " ".join(cmd))}
    except OSError as e:
        return {"skip": "cannot run %s: %s" % (cmd[0], e)}
    found = None
    for line in p.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                found = json.loads(line)
            except ValueError:
                pass
    if found is None:
        err = (p.stderr.strip().splitlines() or p.stdout.strip().splitlines() or ["no output"])
        interp = os.path.basename(cmd[0]) in ("node", "lua5.4", "lua", "luajit")
        what = cmd[1] if len(cmd) > 1 and interp else cmd[0]
        return {"skip": "%s exited %d: %s" % (os.path.basename(what), p.returncode,
                                              err[-1][:200])}
    return found


def kh(metric, mode, runs, extra=None, timeout=300):
    cmd = [KH_BENCH, metric, mode, str(runs)] + ([str(extra)] if extra is not None else [])
    return run_json(cmd, timeout)


# Issue 17: the fork server. A manager pool option for kh_bench (KH_BENCH_POOL) and members
# added to each kernel's options (KH_BENCH_KOPTS).
FORK = {"mode": "fork", "size": 2}
FORK_DATA = {"mode": "fork", "size": 2, "preload": ["numpy", "pandas", "matplotlib.pyplot"]}
SANDBOX_DIR = "/tmp/kh_bench_sandbox"
# Every layer: cgroup (as root), user + mount + network namespaces with a bind mount, rlimits,
# the environment filter, no_new_privs, Landlock (files and TCP) and seccomp.
FULL_SANDBOX = (',"permissions":{"read":["%s"],"write":["%s/ws"],"net":false,"run":false},'
                '"filesystem":{"root":"%s/ws","mountPoint":"%s/mnt"},'
                '"limits":{"memoryBytes":4294967296,"cpuSeconds":600,"maxProcesses":64,'
                '"maxOutputBytes":10000000}' % ((SANDBOX_DIR,) * 4))


# The same without limits.maxProcesses: as root that limit is a pids cgroup, and moving a process
# into a cgroup waits for an RCU grace period here (cgroup v1: 5-25 ms).
SANDBOX_NO_CGROUP = FULL_SANDBOX.replace(',"maxProcesses":64', '')


def khp(pool, metric, mode, runs, extra=None, kopts=None, timeout=400):
    """kh() with the manager's pool option `pool` (a dict, or None for the metric's own) and
    kernel options added."""
    env = dict(os.environ)
    if pool is not None:
        env["KH_BENCH_POOL"] = json.dumps(pool)
    if kopts:
        os.makedirs(os.path.join(SANDBOX_DIR, "ws"), exist_ok=True)
        env["KH_BENCH_KOPTS"] = kopts
    cmd = [KH_BENCH, metric, mode, str(runs)] + ([str(extra)] if extra is not None else [])
    return run_json(cmd, timeout, env=env)


def inner_of(r):
    """The import statement alone, timed inside the cell (the import metric's inner_us)."""
    if "skip" in r:
        return r
    return {"unit": "us", "samples": r.get("inner_us", [])}


def wall_of(r):
    """How long all of a burst took (the burst metric's wall_ms), as one sample."""
    if "skip" in r:
        return r
    return {"unit": "us", "samples": [r["wall_ms"] * 1e3]}


def ipy(metric, runs, extra=None, timeout=300):
    cmd = [SYS_PY, os.path.join(HERE, "ipykernel_bench.py"), metric, str(runs)]
    if extra is not None:
        cmd.append(str(extra))
    return run_json(cmd, timeout)


# Issue 15: the last "start" result of each kernel, whose first_samples the wire.first rows
# show (the same runs as wire.start's).
_jb_starts = {}


def jb(metric, kernel, runs):
    """bench/jupyter_bench.py: `kernel` (ipykernel, worker, main_thread) through jupyter_client;
    kernelhost's kernelspecs from <build>/kernelhost-jupyter (a skip until it is built)."""
    env = dict(os.environ, KH_BUILD=BUILD)
    r = run_json([SYS_PY, os.path.join(HERE, "jupyter_bench.py"), metric, kernel, str(runs)],
                 600, env=env)
    if metric == "start":
        _jb_starts[kernel] = r
    return r


def jb_first(kernel, runs):
    """The raw start → first kernel_info_reply times of the wire.start runs of `kernel` (run
    now if that row was not)."""
    r = _jb_starts.get(kernel) or jb("start", kernel, runs)
    if "skip" in r:
        return r
    return {"unit": r["unit"], "samples": r.get("first_samples", [])}


# Issue 16: one bench/remote_bench.js run gives both clients' figures of both remote.* rows
# (kernelhost's Node binding and @jupyterlab/services, alternating against one Jupyter Server).
_remote_run = None


def remote(side, metric):
    """`metric` ("start" or "execute") of `side` ("kernelhost" or "services") from the one
    remote_bench.js run of this bench run (made on first use)."""
    global _remote_run
    if _remote_run is None:
        node = shutil.which("node")
        if node is None:
            _remote_run = {"skip": "node not installed"}
        elif not os.path.isdir(os.path.join(ROOT, "node_modules", "@jupyterlab", "services")):
            _remote_run = {"skip": "@jupyterlab/services not installed (npm install)"}
        else:
            _remote_run = run_json([node, os.path.join(HERE, "remote_bench.js"), str(n(10, 2)),
                                    str(n(500, 50)), "--json"], 900,
                                   env=dict(os.environ, KH_BUILD=BUILD))
    r = _remote_run
    if "skip" in r:
        return r
    r = r.get(side) or {"skip": "remote_bench.js printed no %s figures" % side}
    return r if "skip" in r else r[metric]


def remote_other():
    """The name of the client in the remote rows' second column, once known."""
    v = (_remote_run or {}).get("services", {}).get("version")
    return "@jupyterlab/services" + (" " + v if v else "")


def script_roundtrip(lang, mode, runs, extra=()):
    """The Lua / Node round-trip scripts the bindings' authors drop in bench/. Expected: args
    [mode] [runs], one JSON line with execute_p50_us/execute_p99_us or raw "samples"."""
    if lang in ("lua", "luajit"):
        # The same script and the same C source under two ABIs: Lua 5.4 (<build>/lua/) and
        # LuaJIT 2.1 (<build>/luajit/, the Lua that Neovim and LÖVE embed).
        script = os.path.join(HERE, "lua_roundtrip.lua")
        if lang == "lua":
            lua = shutil.which("lua5.4") or shutil.which("lua")
        else:
            lua = shutil.which("luajit")
            if lua is None:
                return {"skip": "luajit not installed"}
        if not os.path.exists(script):
            return {"skip": "bench/lua_roundtrip.lua not present yet (Lua binding)"}
        mod = os.path.join(BUILD, lang, "kernelhost.so")
        if not os.path.exists(mod):
            return {"skip": "Lua module not built (%s missing)" % os.path.relpath(mod, ROOT)}
        env = dict(os.environ)
        cpath = os.path.join(BUILD, lang, "?.so") + ";;"
        env["LUA_CPATH"] = env["LUA_CPATH_5_4"] = cpath
        cmd = [lua, script, mode, str(runs)] + list(extra)
    else:
        script = os.path.join(HERE, "node_roundtrip.js")
        if not os.path.exists(script):
            return {"skip": "bench/node_roundtrip.js not present yet (Node binding)"}
        node = shutil.which("node")
        if node is None:
            return {"skip": "node not installed"}
        env = dict(os.environ)
        cmd = ["node", script, mode, str(runs)] + list(extra) + ["--json"]
    env["KH_BUILD"] = BUILD
    # The Lua module links the core statically and lives in <build>/lua/, where the core's
    # default lookup ("next to libkernelhost") finds no kernelhost-worker: point at the build's.
    worker = os.path.join(BUILD, "kernelhost-worker")
    if "KH_WORKER_PATH" not in env and os.path.exists(worker):
        env["KH_WORKER_PATH"] = worker
    r = run_json(cmd, 300, env=env)
    if "skip" in r:
        return r
    # A script without a mode argument measures main_thread: never file that under worker.
    ran = r.get("mode", "main_thread")
    if ran != mode:
        return {"skip": "%s measures %s mode only (no mode argument)"
                        % (os.path.basename(script), ran)}
    if "samples" in r:
        return r
    if "hostcall" in extra:
        if "hostcall_p50_us" not in r:
            return {"skip": "no host call figures in the script's output: %s" % json.dumps(r)[:200]}
        # The host call's round trip, with the same run's execute round trip beside it.
        ex50 = r.get("execute_p50_us", r.get("p50_us"))
        ex99 = r.get("execute_p99_us", r.get("p99_us"))
        return {"unit": "us", "summary": {"p50": r["hostcall_p50_us"], "p99": r["hostcall_p99_us"],
                                         "n": r.get("runs")},
                "execute_same_run": {"p50_us": ex50, "p99_us": ex99}}
    for p50, p99 in (("execute_p50_us", "execute_p99_us"), ("p50_us", "p99_us")):
        if p50 in r:
            return {"unit": "us", "summary": {"p50": r[p50], "p99": r.get(p99),
                                             "n": r.get("runs")}}
    return {"skip": "could not read the script's output: %s" % json.dumps(r)[:200]}


def nvim_roundtrip(mode, runs):
    """bench/nvim_latency.lua in headless Neovim: :KernelhostRun `1+1` to "Out[n]: 2" in the
    plugin's output buffer (editors/nvim), with the LuaJIT module."""
    nvim = shutil.which("nvim")
    if nvim is None:
        return {"skip": "nvim not installed"}
    mod = os.path.join(BUILD, "luajit", "kernelhost.so")
    if not os.path.exists(mod):
        return {"skip": "LuaJIT module not built (%s missing)" % os.path.relpath(mod, ROOT)}
    env = dict(os.environ)
    env["LUA_CPATH"] = os.path.join(BUILD, "luajit", "?.so") + ";;"
    env["KH_BENCH_MODE"], env["KH_BENCH_RUNS"] = mode, str(runs)
    worker = os.path.join(BUILD, "kernelhost-worker")
    if "KH_WORKER_PATH" not in env and os.path.exists(worker):
        env["KH_WORKER_PATH"] = worker
    cmd = [nvim, "--headless", "-u", "NORC", "-i", "NONE", "-n",
           "--cmd", "set rtp^=" + os.path.join(ROOT, "editors", "nvim"),
           "-c", "luafile " + os.path.join(HERE, "nvim_latency.lua")]
    r = run_json(cmd, 300, env=env)
    if "skip" in r:
        return r
    return {"unit": "us", "summary": {"p50": r["execute_p50_us"], "p99": r.get("execute_p99_us"),
                                     "n": r.get("runs")}}


def c_worker_roundtrip(runs):
    """The worker author's own C bench (built by core/worker/CMakeLists.txt), as a cross-check."""
    exe = os.path.join(BUILD, "c_worker_roundtrip")
    if not os.path.exists(exe):
        return {"skip": "c_worker_roundtrip not built (%s missing)" % os.path.relpath(exe, ROOT)}
    r = run_json([exe, str(runs), "5"], 300)
    if "skip" in r:
        return r
    rt = r.get("roundtrip_1p1_us") or {}
    if "p50" not in rt:
        return {"skip": "could not read c_worker_roundtrip's output: %s" % json.dumps(r)[:200]}
    return {"unit": "us", "summary": {"p50": rt["p50"], "p99": rt.get("p99"), "n": rt.get("runs")},
            "other": r}


# --- statistics and formatting ----------------------------------------------------------------

def pct(sorted_vals, q):
    """Nearest-rank percentile."""
    if not sorted_vals:
        return None
    i = max(0, min(len(sorted_vals) - 1, int(round(q / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[i]


TO_US = {"us": 1.0, "ms": 1e3, "s": 1e6}


def summarize(r, pick=None):
    """-> {"p50_us", "p99_us", "n"} for times; {"kib"} for memory; {"skip"}."""
    if r is None:
        return {"skip": "not run"}
    if "skip" in r:
        return {"skip": r["skip"]}
    if pick is not None:
        v = pick(r)
        if v is None or v < 0:
            return {"skip": "value missing in %s" % json.dumps(r)[:160]}
        return {"kib": v}
    scale = TO_US.get(r.get("unit", "us"), 1.0)
    if "summary" in r:
        s = r["summary"]
        return {"p50_us": s["p50"] * scale,
                "p99_us": s["p99"] * scale if s.get("p99") is not None else None,
                "n": s.get("n")}
    vals = sorted(v * scale for v in r.get("samples", []))
    if not vals:
        return {"skip": "no samples"}
    return {"p50_us": pct(vals, 50), "p90_us": pct(vals, 90), "p99_us": pct(vals, 99),
            "n": len(vals)}


def fmt_time(us):
    if us is None:
        return "-"
    if us < 1000:
        return "%.1f µs" % us if us < 100 else "%.0f µs" % us
    if us < 1e6:
        return "%.2f ms" % (us / 1e3) if us < 1e4 else "%.1f ms" % (us / 1e3)
    return "%.2f s" % (us / 1e6)


def fmt_mem(kib):
    if kib < 1000:
        return "%.0f kB" % (kib * 1.024)
    return "%.1f MB" % (kib * 1024 / 1e6)


def cell(s, tail=99):
    if "skip" in s:
        return "not available"
    if "kib" in s:
        return fmt_mem(s["kib"])
    return "%s / %s" % (fmt_time(s["p50_us"]), fmt_time(s.get("p%d_us" % tail)))


def value(s):
    if "skip" in s:
        return None
    return s["kib"] if "kib" in s else s["p50_us"]


# --- the plan ----------------------------------------------------------------------------------

class Row:
    def __init__(self, rid, label, target, target_val, kh_fn, ipy_key, kh_pick=None,
                 ipy_pick=None, min_ratio=None, target_of=None, tail=99, other=None):
        self.rid, self.label, self.target, self.target_val = rid, label, target, target_val
        # The percentile shown after the p50 (99, or 90 where a row says "[p50 / p90]").
        self.tail = tail
        if tail != 99:
            self.label += " [p50 / p%d]" % tail
        self.kh_fn, self.ipy_key, self.kh_pick, self.ipy_pick = kh_fn, ipy_key, kh_pick, ipy_pick
        # A target on the ratio too (ipykernel's p50 ÷ kernelhost's): met needs both.
        self.min_ratio = min_ratio
        # A target read from the result itself (the same run's execute round trip), in µs.
        self.target_of = target_of
        # What the second column measures when it is not ipykernel through jupyter_client: a
        # function giving its name once the row has run (printed under the table).
        self.other = other


def rows():
    mb = lambda x: x * 1e6 / 1024  # noqa: E731  target MB -> KiB
    R = []
    R.append(Row("start.main", "create → ready, main_thread (CPython up)", "≤ 1 ms", 1e3,
                 lambda: kh("create", "main_thread", n(200, 20)), "create"))
    R.append(Row("start.first", "first main_thread kernel (starts CPython)", "-", None,
                 lambda: first_of(kh_cache("start.main")), "create"))
    R.append(Row("start.worker", "create → ready, worker, cold", "≤ 30 ms", 30e3,
                 lambda: kh("create", "worker", n(30, 3)), "create"))
    R.append(Row("start.pool", "create → ready, worker, warm pool", "≤ 2 ms", 2e3,
                 lambda: kh("pool", "worker", n(15, 3), 2), "create"))
    # Issue 17: the fork server beside today's cold start and warm pool, same run.
    R.append(Row("start.fork", "create → ready, worker, fork server (2 forked, waiting)",
                 "≤ 3 ms", 3e3, lambda: khp(FORK, "pool", "worker", n(30, 3)), "create"))
    R.append(Row("start.fork.demand", "create → ready, worker, fork server (size 0: forked "
                 "on demand)", "≤ 3 ms", 3e3,
                 lambda: khp({"mode": "fork", "size": 0}, "pool", "worker", n(30, 3)), "create"))
    R.append(Row("start.fork.sandbox", "create → ready, worker, fork server, full sandbox",
                 "≤ 3 ms", 3e3,
                 lambda: khp(FORK, "pool", "worker", n(30, 3), kopts=FULL_SANDBOX), "create"))
    R.append(Row("start.fork.sandbox.nocg", "create → ready, worker, fork server, full sandbox "
                 "but maxProcesses (no pids cgroup)", "-", None,
                 lambda: khp(FORK, "pool", "worker", n(30, 3), kopts=SANDBOX_NO_CGROUP),
                 "create"))
    R.append(Row("start.pool.sandbox", "create → ready, worker, warm pool, full sandbox", "-",
                 None, lambda: khp({"size": 2}, "pool", "worker", n(15, 3), kopts=FULL_SANDBOX),
                 "create"))
    R.append(Row("start.worker.sandbox", "create → ready, worker, cold, full sandbox", "-", None,
                 lambda: khp(None, "create", "worker", n(15, 3), kopts=FULL_SANDBOX), "create"))
    R.append(Row("restart.fork", "restart → ready, worker, fork server", "≤ 5 ms", 5e3,
                 lambda: khp(FORK, "restart", "worker", n(30, 3)), "restart"))
    R.append(Row("import.fork.cell", "first cell `import pandas` → reply, new kernel, fork "
                 "server with pandas preloaded", "-", None,
                 lambda: khp({"mode": "fork", "size": 2, "preload": ["pandas"]}, "import",
                             "worker", n(15, 3), "pandas"), "import"))
    R.append(Row("import.fork.stmt", "the same `import pandas` statement alone (timed in the "
                 "cell)", "≤ 1 ms", 1e3, lambda: inner_of(kh_cache("import.fork.cell")),
                 "import_inner"))
    R.append(Row("import.fork.none", "first `import pandas` statement, fork server without "
                 "preload", "-", None,
                 lambda: inner_of(khp(FORK, "import", "worker", n(5, 2), "pandas")),
                 "import_inner"))
    R.append(Row("import.worker.none", "first `import pandas` statement, cold worker", "-", None,
                 lambda: inner_of(khp(None, "import", "worker", n(5, 2), "pandas")),
                 "import_inner"))
    R.append(Row("exec.c.main", "execute 1+1, main_thread, C", "p50 ≤ 25 µs", 25,
                 lambda: kh("execute", "main_thread", n(10000, 1000)), "execute"))
    R.append(Row("hostcall.c.main", "host call round trip (no-op function), main_thread, C",
                 "p50 ≤ execute 1+1", lambda: p50_of("exec.c.main"),
                 lambda: kh("hostcall", "main_thread", n(10000, 1000)), "hostcall"))
    R.append(Row("exec.lua.main", "execute 1+1, main_thread, Lua", "p50 ≤ 25 µs", 25,
                 lambda: script_roundtrip("lua", "main_thread", n(10000, 1000)), "execute"))
    R.append(Row("exec.luajit.main", "execute 1+1, main_thread, LuaJIT", "p50 ≤ 25 µs", 25,
                 lambda: script_roundtrip("luajit", "main_thread", n(10000, 1000)), "execute"))
    R.append(Row("exec.node.main", "execute 1+1, main_thread, Node", "p50 ≤ 25 µs", 25,
                 lambda: script_roundtrip("node", "main_thread", n(10000, 1000)), "execute"))
    R.append(Row("exec.c.host", "execute 1+1, main_thread thread=host, C", "p50 ≤ 25 µs", 25,
                 lambda: kh("execute", "host", n(10000, 1000)), "execute"))
    R.append(Row("hostcall.c.host", "host call round trip (no-op function), main_thread "
                 "thread=host, C", "p50 ≤ execute 1+1", lambda: p50_of("exec.c.host"),
                 lambda: kh("hostcall", "host", n(10000, 1000)), "hostcall"))
    R.append(Row("exec.lua.host", "execute 1+1, main_thread thread=host, Lua", "p50 ≤ 25 µs",
                 25, lambda: script_roundtrip("lua", "host", n(10000, 1000)), "execute"))
    R.append(Row("exec.node.host", "execute 1+1, main_thread thread=host, Node", "p50 ≤ 25 µs",
                 25, lambda: script_roundtrip("node", "host", n(10000, 1000)), "execute"))
    R.append(Row("exec.c.worker", "execute 1+1, worker, C", "p50 ≤ 100 µs", 100,
                 lambda: kh("execute", "worker", n(5000, 500)), "execute"))
    R.append(Row("hostcall.c.worker", "host call round trip (no-op function), worker, C",
                 "p50 ≤ execute 1+1", lambda: p50_of("exec.c.worker"),
                 lambda: kh("hostcall", "worker", n(5000, 500)), "hostcall"))
    R.append(Row("exec.c.worker.x", "execute 1+1, worker, C (c_worker_roundtrip)",
                 "p50 ≤ 100 µs", 100, lambda: c_worker_roundtrip(n(10000, 1000)), "execute"))
    R.append(Row("exec.lua.worker", "execute 1+1, worker, Lua", "p50 ≤ 100 µs", 100,
                 lambda: script_roundtrip("lua", "worker", n(5000, 500)), "execute"))
    R.append(Row("exec.luajit.worker", "execute 1+1, worker, LuaJIT", "p50 ≤ 100 µs", 100,
                 lambda: script_roundtrip("luajit", "worker", n(5000, 500)), "execute"))
    R.append(Row("exec.node.worker", "execute 1+1, worker, Node", "p50 ≤ 100 µs", 100,
                 lambda: script_roundtrip("node", "worker", n(5000, 500)), "execute"))
    # Issue 14: the Neovim plugin, end to end: the command, the kernel, the module's loop driven
    # from vim.loop, the output buffer changed.
    for mode, short in (("worker", "worker"), ("main_thread", "main")):
        R.append(Row("exec.nvim." + short, ":KernelhostRun 1+1 → Out in the buffer, Neovim, %s"
                     % mode, "-", None, lambda mode=mode: nvim_roundtrip(mode, n(300, 30)),
                     "execute"))
    # Host functions (issue 13): Python -> host -> Python, a no-op, timed inside the cell around
    # each call, beside the same binding's execute 1+1 in the same run and kernel.
    for lang, who in (("lua", "Lua"), ("luajit", "LuaJIT"), ("node", "Node")):
        for mode, short, what in (("main_thread", "main", "main_thread"),
                                  ("host", "host", "main_thread thread=host"),
                                  ("worker", "worker", "worker")):
            R.append(Row("hostcall.%s.%s" % (lang, short),
                         "host call round trip (no-op function), %s, %s" % (what, who),
                         "p50 ≤ execute 1+1 (same run)", None,
                         lambda lang=lang, mode=mode: script_roundtrip(
                             lang, mode, n(5000 if mode == "worker" else 10000, 500),
                             ("hostcall",)),
                         "hostcall", target_of=lambda r: (r.get("execute_same_run") or {})
                         .get("p50_us")))
    # IPython (issue 11): the first magic of a kernel pays for IPython's import (once per
    # process) and the kernel's shell; plain cells after it go through the shell's formatter.
    R.append(Row("ipython.next.main", "first magic (%time 1), later main_thread kernel "
                 "(its shell only)", "-", None, lambda: kh("first_magic", "main_thread",
                                                             n(10, 2)), "first_magic"))
    R.append(Row("ipython.first.main", "first magic (%time 1), first main_thread kernel "
                 "(imports IPython)", "-", None,
                 lambda: first_of(kh_cache("ipython.next.main")), "first_magic"))
    R.append(Row("ipython.first.worker", "first magic (%time 1), worker, cold", "-", None,
                 lambda: kh("first_magic", "worker", n(5, 2)), "first_magic"))
    R.append(Row("exec.c.main.shell", "execute 1+1 after %time 1, main_thread, C",
                 "p50 ≤ 25 µs", 25, lambda: kh("execute_shell", "main_thread", n(10000, 1000)),
                 "execute_shell"))
    R.append(Row("exec.c.worker.shell", "execute 1+1 after %time 1, worker, C", "p50 ≤ 100 µs",
                 100, lambda: kh("execute_shell", "worker", n(5000, 500)), "execute_shell"))
    for mode, short in (("main_thread", "main"), ("worker", "worker")):
        R.append(Row("stream." + short, "100k printed lines → host, %s" % mode, "≤ 60 ms", 60e3,
                     lambda mode=mode: kh("stream", mode, n(15, 2)), "stream"))
    for mode, short in (("main_thread", "main"), ("worker", "worker")):
        R.append(Row("display." + short, "1 MB display_data → host, %s" % mode, "≤ 5 ms", 5e3,
                     lambda mode=mode: kh("display", mode, n(50, 3)), "display"))
    # Issue 13: binary values beside the JSON. The seed's stack moves 1 MB from Pyodide to JS
    # in-process in ~1.0 ms (its own figure, not measured here).
    for mode, short, target in (("main_thread", "main", 1e3), ("worker", "worker", 2e3)):
        R.append(Row("display_png." + short, "1 MB PNG display_data → host as bytes, %s" % mode,
                     "p50 ≤ %d ms" % (target / 1e3), target,
                     lambda mode=mode: kh("display_png", mode, n(50, 3)), "display_png"))
        R.append(Row("display_png64." + short,
                     "1 MB PNG display_data → host as base64 (binary: \"base64\"), %s" % mode,
                     "-", None, lambda mode=mode: kh("display_png", mode, n(50, 3), "base64"),
                     "display_png"))
    for kind, what in (("busy", "while True: pass"), ("sleep", "time.sleep(100)")):
        for mode, short in (("main_thread", "main"), ("worker", "worker")):
            R.append(Row("interrupt.%s.%s" % (kind, short),
                         "interrupt `%s`, %s" % (what, mode), "≤ 2 ms", 2e3,
                         lambda kind=kind, mode=mode: kh("interrupt", mode, n(30, 3), kind),
                         "interrupt_" + kind))
    R.append(Row("restart.main", "restart → ready, main_thread", "-", None,
                 lambda: kh("restart", "main_thread", n(50, 5)), "restart"))
    R.append(Row("restart.worker", "restart → ready, worker", "≤ 30 ms", 30e3,
                 lambda: kh("restart", "worker", n(30, 3)), "restart"))
    # Editor requests (issue 12), timed to their answer; a kernel's first request is not a
    # sample (the first completion imports jedi: the interact.first rows).
    # The target: each at least 10× faster than ipykernel's, completion p50 < 5 ms.
    for kind, what, target, tval in (
            ("complete_attr", "complete `box.` (a live object's attributes)",
             "≥ 10×, p50 < 5 ms", 5e3),
            ("complete_import", "complete `import nu`", "≥ 10×, p50 < 5 ms", 5e3),
            ("inspect", "inspect `len`, detail 0", "≥ 10×", None),
            ("is_complete", "is_complete `for i in x:`", "≥ 10×", None)):
        for mode, short in (("main_thread", "main"), ("worker", "worker")):
            R.append(Row("interact.%s.%s" % (kind, short), "%s, %s" % (what, mode), target, tval,
                         lambda kind=kind, mode=mode: kh(kind, mode, n(500, 50)), kind,
                         min_ratio=10))
    R.append(Row("interact.first.main", "first completion, first main_thread kernel (imports "
                 "jedi)", "-", None, lambda: first_of(kh("complete_first", "main_thread",
                                                         n(5, 2))), "complete_first"))
    R.append(Row("interact.first.worker", "first completion, worker kernel (imports jedi)", "-",
                 None, lambda: kh("complete_first", "worker", n(5, 2)), "complete_first"))
    # Comms (issue 13): a comm_msg from the host, echoed by the Python handler as a comm_msg,
    # timed to the echo's arrival; ipykernel's peer is the same through jupyter_client.
    for mode, short in (("main_thread", "main"), ("worker", "worker")):
        R.append(Row("comm." + short, "comm round trip (comm_msg → handler → comm_msg), %s, C"
                     % mode, "-", None, lambda mode=mode: kh("comm", mode, n(2000, 200)),
                     "comm"))
    # Jupyter's wire protocol (issue 15): kernelhost-jupyter's kernelspecs beside ipykernel's,
    # both started and driven by the same jupyter_client code (jupyter_bench.py). wait_for_ready
    # ends at least 0.2 s after the first kernel_info_reply (it waits for iopub to be quiet that
    # long): the first reply is the kernel's start, the issue's ≤ 50 ms.
    for mode, short in (("worker", "worker"), ("main_thread", "main")):
        R.append(Row("wire.start." + short, "kernelspec start → wait_for_ready returns "
                     "(jupyter_client), %s" % mode, "-", None,
                     lambda mode=mode: jb("start", mode, n(15, 3)), "wire_start", tail=90))
        R.append(Row("wire.first." + short, "kernelspec start → first kernel_info_reply "
                     "(jupyter_client), %s" % mode, "≤ 50 ms", 50e3,
                     lambda mode=mode: jb_first(mode, n(15, 3)), "wire_first", tail=90))
        R.append(Row("wire.exec." + short, "execute 1+1 through the wire (jupyter_client "
                     "execute → reply + idle), %s" % mode, "-", None,
                     lambda mode=mode: jb("execute", mode, n(1000, 100)), "wire_execute",
                     tail=90))
    # Remote kernels (issue 16): a kernel of a Jupyter Server on loopback (tests/remote/gateway.py:
    # Debian's jupyter_server 1.23, an ipykernel kernelspec) through kernelhost's Node binding,
    # and through @jupyterlab/services (JupyterLab's own client) in the second column: the same
    # server and kernels, only the client differs. Target: kernelhost at least as fast.
    R.append(Row("remote.start", "create → ready, remote kernel on a loopback Jupyter Server, "
                 "Node (2nd column: @jupyterlab/services)", "≥ 1× the other client", None,
                 lambda: remote("kernelhost", "start"), "remote_start", min_ratio=1, tail=90,
                 other=remote_other))
    R.append(Row("remote.exec", "execute 1+1, remote kernel on a loopback Jupyter Server, "
                 "Node (2nd column: @jupyterlab/services)", "≥ 1× the other client", None,
                 lambda: remote("kernelhost", "execute"), "remote_execute", min_ratio=1,
                 tail=90, other=remote_other))
    R.append(Row("rss.worker.1", "RSS, one idle worker kernel", "≤ 12 MB", mb(12),
                 lambda: kh_rss_worker(), "rss",
                 kh_pick=lambda r: r.get("kernel_rss_kib"),
                 ipy_pick=lambda r: r.get("kernel_rss_kib")))
    R.append(Row("rss.worker.50", "RSS, 50 idle worker kernels together", "≤ 600 MB", mb(600),
                 lambda: kh_cache("rss.worker.1"), "rss",
                 kh_pick=lambda r: r.get("all_rss_kib") if r.get("count") == 50 else None,
                 ipy_pick=lambda r: r.get("all_rss_kib")))
    R.append(Row("rss.worker.50.pss", "PSS, 50 idle worker kernels together", "-", None,
                 lambda: kh_cache("rss.worker.1"), "rss",
                 kh_pick=lambda r: r.get("all_pss_kib"),
                 ipy_pick=lambda r: r.get("all_pss_kib")))
    # Issue 17: memory of fork-server kernels. PSS totals count the template's share; the
    # second column is ipykernel's 50 idle kernels (nothing imported) where a figure is given.
    for count, target, tval in ((10, "-", None), (50, "≤ 150 MB", mb(150)), (200, "-", None)):
        R.append(Row("rss.fork.%d.pss" % count, "PSS, %d idle fork-server kernels together "
                     "(+ template)" % count, target, tval,
                     (lambda c=count: khp(FORK, "rss", "worker", 1, n(c, 5), timeout=900)),
                     "rss" if count == 50 else "none",
                     kh_pick=lambda r: r.get("total_pss_kib"),
                     ipy_pick=lambda r: r.get("all_pss_kib")))
    R.append(Row("rss.fork.50.uss", "USS (private memory) per idle fork-server kernel, of 50",
                 "≤ 3 MB", mb(3), lambda: kh_cache("rss.fork.50.pss"), "none",
                 kh_pick=lambda r: r.get("per_kernel_uss_kib")))
    R.append(Row("rss.fork.50.data.pss", "PSS, 50 idle fork-server kernels, numpy + pandas + "
                 "matplotlib.pyplot preloaded (+ template)", "≤ 250 MB", mb(250),
                 lambda: khp(FORK_DATA, "rss", "worker", 1, n(50, 5), timeout=900), "rss",
                 kh_pick=lambda r: r.get("total_pss_kib"),
                 ipy_pick=lambda r: r.get("all_pss_kib")))
    R.append(Row("rss.worker.10.pss", "PSS, 10 idle cold worker kernels together", "-", None,
                 lambda: khp(None, "rss", "worker", 1, n(10, 5)), "none",
                 kh_pick=lambda r: r.get("all_pss_kib")))
    R.append(Row("burst.fork.200", "200 kernels created at once, fork server: submit → ready", "-", None,
                 lambda: khp(FORK, "burst", "worker", 1, n(200, 20), timeout=900), "none",
                 tail=90))
    R.append(Row("burst.fork.200.all", "the same 200: all ready", "-", None,
                 lambda: wall_of(kh_cache("burst.fork.200")), "none"))
    R.append(Row("burst.worker.200.all", "200 cold worker kernels created at once: all ready",
                 "-", None,
                 lambda: wall_of(khp(None, "burst", "worker", 1, n(200, 20), timeout=900)),
                 "none"))
    R.append(Row("rss.main.per", "host RSS growth per extra main_thread kernel", "-", None,
                 lambda: kh("rss", "main_thread", 1, n(50, 5)), "rss",
                 kh_pick=lambda r: r.get("per_extra_kernel_kib"),
                 ipy_pick=lambda r: r.get("kernel_rss_kib")))
    R.append(Row("rss.main.first", "host RSS growth, first main_thread kernel (CPython)",
                 "-", None, lambda: kh_cache("rss.main.per"), "rss",
                 kh_pick=lambda r: r["host_after_first_kib"] - r["host_before_kib"],
                 ipy_pick=lambda r: r.get("kernel_rss_kib")))
    return R


_kh_results = {}
ROUNDS = 1 if QUICK else 3


def median_round(results):
    """The round whose p50 is the median of the rounds' p50s (a skip if any round skipped),
    with every round's p50 and p99 kept beside it."""
    skips = [r for r in results if "skip" in r]
    if skips:
        return skips[0]
    summ = [summarize(r) for r in results]
    order = sorted(range(len(results)), key=lambda i: summ[i]["p50_us"])
    chosen = dict(results[order[len(order) // 2]])
    chosen["rounds"] = [{"p50_us": round(x["p50_us"], 2),
                         "p99_us": round(x["p99_us"], 2) if x["p99_us"] else None} for x in summ]
    return chosen



def kh_cache(rid):
    return _kh_results.get(rid, {"skip": "not run"})


def p50_of(rid):
    """The p50 (µs) kernelhost measured for row rid in this run, or None: a target that is
    another row's figure (a host call against the execute round trip of its mode)."""
    s = summarize(_kh_results.get(rid))
    return s.get("p50_us")


def first_of(r):
    if "skip" in r:
        return r
    return {"unit": "us", "samples": [r["first_us"]]}


def kh_rss_worker():
    return kh("rss", "worker", 1, n(50, 5), timeout=400)


_ipy_raw = {}  # ipykernel's raw results of this run, by IPY_PLAN key


def ipy_raw_of(key):
    """ipykernel's result for `key` in this run (run now if no row needed it yet)."""
    if key not in _ipy_raw:
        _ipy_raw[key] = IPY_PLAN[key]()
    return _ipy_raw[key]


IPY_PLAN = {
    "create": lambda: ipy("create", n(15, 2)),
    "execute": lambda: ipy("execute", n(600, 100)),
    "first_magic": lambda: ipy("first_magic", n(5, 2)),
    "execute_shell": lambda: ipy("execute_shell", n(600, 100)),
    "stream": lambda: ipy("stream", n(15, 2)),
    "display": lambda: ipy("display", n(50, 3)),
    "display_png": lambda: ipy("display_png", n(30, 3)),
    "interrupt_busy": lambda: ipy("interrupt", n(30, 3), "busy"),
    "interrupt_sleep": lambda: ipy("interrupt", n(30, 3), "sleep"),
    "restart": lambda: ipy("restart", n(15, 2)),
    "rss": lambda: ipy("rss", 1, n(50, 5), timeout=400),
    "complete_attr": lambda: ipy("complete_attr", n(300, 30)),
    "complete_import": lambda: ipy("complete_import", n(300, 30)),
    "inspect": lambda: ipy("inspect", n(300, 30)),
    "is_complete": lambda: ipy("is_complete", n(300, 30)),
    "complete_first": lambda: ipy("complete_first", n(5, 2)),
    # ipykernel has no host functions: a call into the program that runs the kernel.
    "hostcall": lambda: {"skip": "ipykernel has no host functions"},
    "comm": lambda: ipy("comm", n(600, 100)),
    "import": lambda: ipy("import", n(5, 2), "pandas"),
    "import_inner": lambda: inner_of(ipy_raw_of("import")),
    # What ipykernel is not run for: 200 at once on 2 vCPUs (ipykernel_bench.m_rss says why
    # even 50 start one after another), and figures it has no counterpart of.
    "none": lambda: {"skip": "no ipykernel counterpart run"},
    "wire_start": lambda: jb("start", "ipykernel", n(15, 3)),
    "wire_first": lambda: jb_first("ipykernel", n(15, 3)),
    "wire_execute": lambda: jb("execute", "ipykernel", n(1000, 100)),
    "remote_start": lambda: remote("services", "start"),
    "remote_execute": lambda: remote("services", "execute"),
}


def compact(r):
    """A raw result with long sample lists replaced by their distribution."""
    r = dict(r)
    v = r.get("samples")
    if v and len(v) > 50:
        v = sorted(v)
        r["samples"] = {"n": len(v), "min": v[0], "p10": pct(v, 10), "p50": pct(v, 50),
                        "p90": pct(v, 90), "p99": pct(v, 99), "max": v[-1]}
    return r


# --- machine -------------------------------------------------------------------------------------

def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = "%.0f GB" % (int(f.readline().split()[1]) / 1e6)
    except OSError:
        pass
    def ver(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
        except Exception:
            return "?"
    osname = "?"
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    osname = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(), "cpu": cpu, "memory": mem, "os": osname,
        "kernel": platform.release(),
        "python": ver([SYS_PY, "-c", "import sys; print(sys.version.split()[0])"]),
        "ipykernel": ver([SYS_PY, "-c", "import ipykernel, jupyter_client as j; "
                          "print(ipykernel.__version__, j.__version__)"]),
        "libuv": ver(["pkg-config", "--modversion", "libuv"]),
        "loadavg_start": os.getloadavg()[0],
    }


# --- main ------------------------------------------------------------------------------------------

def main():
    global KH_BENCH
    if not KH_BENCH:
        for c in (os.path.join(BUILD, "bench", "kh_bench"), os.path.join(BUILD, "kh_bench")):
            if os.path.exists(c):
                KH_BENCH = c
                break
    if not KH_BENCH or not os.path.exists(KH_BENCH):
        sys.exit("run.py: kh_bench not found (build it: bench/run.sh does)")
    t_start = time.time()
    mach = machine()
    print("kernelhost vs ipykernel — %s, %d vCPU, %s, %s, Python %s, ipykernel/jupyter_client %s"
          % (mach["cpu"], mach["cpus"], mach["memory"], mach["os"], mach["python"],
             mach["ipykernel"]), flush=True)
    plan = [r for r in rows() if not ONLY or any(r.rid.startswith(o) for o in ONLY)]
    ipy_raw = _ipy_raw
    out_rows = []
    # Each ipykernel metric runs right after the first kernelhost row that needs it, so the two
    # sides of a ratio are measured close together in time.
    for row in plan:
        t0 = time.time()
        if row.rid.startswith(("exec.", "hostcall.", "wire.exec.")) and ROUNDS > 1:
            # Round trips: ROUNDS rounds per side, alternating kernelhost and ipykernel, and the
            # round with the median p50 reported, so one burst of load on this shared machine
            # moves neither side's figure much.
            need_ipy = row.ipy_key not in ipy_raw
            kh_rounds, ipy_rounds = [], []
            for _ in range(ROUNDS):
                kh_rounds.append(row.kh_fn())
                if need_ipy:
                    ipy_rounds.append(IPY_PLAN[row.ipy_key]())
            r = median_round(kh_rounds)
            if need_ipy:
                ipy_raw[row.ipy_key] = median_round(ipy_rounds)
        else:
            r = row.kh_fn()
        _kh_results[row.rid] = r
        if row.ipy_key not in ipy_raw:
            ipy_raw[row.ipy_key] = IPY_PLAN[row.ipy_key]()
        khs = summarize(r, row.kh_pick)
        ips = summarize(ipy_raw[row.ipy_key], row.ipy_pick)
        kv, iv = value(khs), value(ips)
        ratio = iv / kv if kv and iv else None
        met = None
        target_val = row.target_val() if callable(row.target_val) else row.target_val
        label = row.label
        if row.target_of is not None and "skip" not in r:
            target_val = row.target_of(r)
            same = r.get("execute_same_run") or {}
            if same.get("p50_us") is not None:
                label += " [execute 1+1, same run: %s / %s]" % (fmt_time(same["p50_us"]),
                                                               fmt_time(same.get("p99_us")))
        if target_val is not None and kv is not None:
            met = kv <= target_val
        if row.min_ratio is not None and ratio is not None:
            met = (met is not False) and ratio >= row.min_ratio
        other = row.other() if row.other else None
        out_rows.append({"id": row.rid, "label": label, "target": row.target, "tail": row.tail,
                         "kernelhost": khs, "ipykernel": ips, "ratio": ratio, "met": met,
                         **({"other": other} if other else {}),
                         "seconds": round(time.time() - t0, 1),
                         "loadavg": round(os.getloadavg()[0], 2)})
        print("  .. %-18s %-24s %-24s (%.0f s)" % (row.rid, cell(khs, row.tail),
                                                   cell(ips, row.tail), time.time() - t0),
              flush=True)

    # The table.
    head = ("metric", "kernelhost p50 / p99", "ipykernel p50 / p99", "ipykernel ÷ kh",  # or p90
            "target", "met")
    lines = []
    for o in out_rows:
        lines.append((o["label"], cell(o["kernelhost"], o["tail"]),
                      cell(o["ipykernel"], o["tail"]),
                      ("%.0f×" % o["ratio"] if o["ratio"] >= 10 else "%.1f×" % o["ratio"])
                      if o["ratio"] else "-",
                      o["target"], {True: "yes", False: "NO", None: "-"}[o["met"]]))
    widths = [max(len(x[i]) for x in lines + [head]) for i in range(len(head))]
    print()
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for x in lines:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(x, widths)) + " |")
    print()
    others = sorted({(o["id"].split(".")[0], o["other"]) for o in out_rows if o.get("other")})
    for prefix, other in others:
        print("%s.* rows: the ipykernel column is %s (driving the same ipykernel kernels)"
              % (prefix, other))
    skipped = [(o["label"], side, o[side]["skip"]) for o in out_rows
               for side in ("kernelhost", "ipykernel") if "skip" in o[side]]
    for label, side, why in skipped:
        print("%s, %s: not available: %s" % (label, side, why))
    if _remote_run and "server" in _remote_run:
        mach["remote_server"] = _remote_run["server"]
    mach["loadavg_end"] = os.getloadavg()[0]
    dur = time.time() - t_start
    print("\n%d rows in %.0f s; load average %.2f at start, %.2f at end; n = samples per side "
          "in latest.json. p99 of fewer than 100 samples is their maximum."
          % (len(out_rows), dur, mach["loadavg_start"], mach["loadavg_end"]))
    res_dir = os.path.join(HERE, "results")
    os.makedirs(res_dir, exist_ok=True)
    doc = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)),
           "seconds": round(dur, 1), "quick": QUICK, "machine": mach, "rows": out_rows,
           "raw": {"kernelhost": {k: compact(v) for k, v in _kh_results.items()},
                   "ipykernel": {k: compact(v) for k, v in ipy_raw.items()}}}
    for name in ("latest.json", time.strftime("run-%Y%m%dT%H%M%SZ.json", time.gmtime(t_start))):
        with open(os.path.join(res_dir, name), "w") as f:
            json.dump(doc, f, indent=1)
    print("wrote bench/results/latest.json")


if __name__ == "__main__":
    main()

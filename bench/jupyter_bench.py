# jupyter_bench.py: Jupyter's wire protocol in `make bench` (issue 15): kernelhost-jupyter's
# kernelspecs and ipykernel's, started and driven by the same jupyter_client code, so the two
# columns of a row differ only in the kernel. One metric per run, raw samples out as one JSON
# line, as ipykernel_bench.py does (whose helpers it uses). Run with Debian's /usr/bin/python3.
#
# Usage: jupyter_bench.py <metric> <kernel> [runs]
#   metric: start    KernelManager(kernel_name=...).start_kernel() + client.start_channels() +
#                    wait_for_ready(), cold, `runs` kernels one after another: "samples" (ms);
#                    "first_samples" (ms) is the same runs' raw time from start_kernel() to
#                    the first kernel_info_reply the client got (wait_for_ready goes on after
#                    it: it waits for an iopub message, then until iopub is quiet for 0.2 s)
#           execute  `1+1` through the wire, `runs` times after a warm-up: jupyter_client's
#                    execute() to both the execute_reply and the request's idle status (µs)
#   kernel: ipykernel    Debian's kernelspec python3 (/usr/bin/python3 -m ipykernel_launcher)
#           worker       kernelhost-jupyter, a worker kernel (its default)
#           main_thread  kernelhost-jupyter --options '{"mode":"main_thread"}'
# The kernelhost kernelspecs are installed for the run into a temporary prefix
# (`kernelhost-jupyter install --prefix DIR`, found through JUPYTER_PATH) and removed after.
# The executable is $KH_JUPYTER, else $KH_BUILD/kernelhost-jupyter; when it is missing the
# metric is a skip that says so, never a number.

import json
import os
import shutil
import subprocess
import sys
import tempfile

from ipykernel_bench import TIMEOUT, drain, now_ns, out, run_cell, stop, time_cells

from jupyter_client.manager import KernelManager

HERE = os.path.dirname(os.path.abspath(__file__))
KERNEL_OPTIONS = {"worker": None, "main_thread": '{"mode":"main_thread"}'}


def skip(metric, kernel, why):
    print(json.dumps({"metric": metric, "mode": kernel, "skip": why}), flush=True)


def executable():
    build = os.environ.get("KH_BUILD") or os.path.join(os.path.dirname(HERE), "build")
    return os.environ.get("KH_JUPYTER") or os.path.join(build, "kernelhost-jupyter")


def kernelspec(kernel, prefix):
    """The kernel name for `kernel`, installing kernelhost's spec under prefix; (name, None) or
    (None, why it cannot run)."""
    if kernel == "ipykernel":
        return "python3", None
    if kernel not in KERNEL_OPTIONS:
        return None, "unknown kernel %r (ipykernel, worker, main_thread)" % kernel
    exe = executable()
    if not os.access(exe, os.X_OK):
        return None, "kernelhost-jupyter not built (%s missing)" % exe
    name = "kh-bench-" + kernel.replace("_", "-")
    cmd = [exe, "install", "--prefix", prefix, "--name", name]
    if KERNEL_OPTIONS[kernel]:
        cmd += ["--options", KERNEL_OPTIONS[kernel]]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    if p.returncode != 0:
        err = (p.stderr.strip().splitlines() or ["no output"])[-1]
        return None, "kernelhost-jupyter install exited %d: %s" % (p.returncode, err[:200])
    data = os.path.join(prefix, "share", "jupyter")
    if not os.path.exists(os.path.join(data, "kernels", name, "kernel.json")):
        return None, "kernelhost-jupyter install wrote no %s/kernels/%s/kernel.json" % (data, name)
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        [data] + [p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p])
    return name, None


def start(name):
    """One cold start: (km, kc, ns to wait_for_ready's return, ns to the first kernel_info_reply
    or None), both from before KernelManager(...)."""
    t0 = now_ns()
    km = KernelManager(kernel_name=name)
    km.start_kernel()
    kc = km.client()
    first = []
    shell = kc.shell_channel
    get_msg = shell.get_msg

    async def timed_get_msg(*args, **kwargs):
        # wait_for_ready's own reads of the shell channel: the time its first kernel_info_reply
        # came out of the socket (the channel returns as soon as one is ready).
        msg = await get_msg(*args, **kwargs)
        if not first and msg["msg_type"] == "kernel_info_reply":
            first.append(now_ns())
        return msg

    shell.get_msg = timed_get_msg
    kc.start_channels()
    kc.wait_for_ready(timeout=TIMEOUT)
    t_ready = now_ns()
    shell.get_msg = get_msg
    return km, kc, t_ready - t0, (first[0] - t0) if first else None


def m_start(kernel, name, runs):
    ready, first = [], []
    for _ in range(runs):
        km, kc, t_ready, t_first = start(name)
        stop(km, kc)
        if t_first is None:
            return skip("start", kernel, "wait_for_ready returned without a kernel_info_reply")
        ready.append(t_ready / 1e6)
        first.append(t_first / 1e6)
    out("start", "ms", ready, mode=kernel, first_samples=[round(x, 3) for x in first])


def m_execute(kernel, name, runs):
    km, kc, _, _ = start(name)
    drain(kc)
    reply = run_cell(kc, "1+1")
    if reply["content"].get("status") != "ok":
        stop(km, kc)
        return skip("execute", kernel, "1+1 replied %r" % reply["content"].get("status"))
    samples = time_cells(kc, "1+1", runs)
    stop(km, kc)
    out("execute", "us", samples, mode=kernel)


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: jupyter_bench.py start|execute ipykernel|worker|main_thread [runs]")
    metric, kernel = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    prefix = tempfile.mkdtemp(prefix="kh-jupyter-bench-")
    try:
        name, why = kernelspec(kernel, prefix)
        if why:
            return skip(metric, kernel, why)
        if metric == "start":
            m_start(kernel, name, runs)
        elif metric == "execute":
            m_execute(kernel, name, runs)
        else:
            sys.exit("jupyter_bench: unknown metric %r" % metric)
    except Exception as e:  # a measurement that broke is reported, never invented
        skip(metric, kernel, "run failed: %s: %s" % (type(e).__name__, e))
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


if __name__ == "__main__":
    main()

# ipykernel_bench.py: the ipykernel side of `make bench`, driven through jupyter_client the way a
# Jupyter host drives it. Same metrics and the same cells as kh_bench.c; one metric per run, raw
# samples out as one JSON line. Run with Debian's /usr/bin/python3 (python3-ipykernel,
# python3-jupyter-client).
#
# Usage: ipykernel_bench.py <metric> [runs] [extra]
#   create | execute | stream | display | interrupt (extra busy|sleep) | restart | rss (extra N)
#   complete_attr | complete_import | inspect | is_complete | complete_first (issue 12)
#   comm (issue 13): a comm_msg to a comm the kernel registered -> its handler's comm_msg back

import json
import os
import sys
import time

os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # quiet debugpy at kernel start

from jupyter_client.manager import KernelManager  # noqa: E402

now_ns = time.perf_counter_ns
TIMEOUT = 60


def out(metric, unit, samples, **extra):
    d = {"metric": metric, "mode": "ipykernel", "unit": unit}
    d.update(extra)
    d["samples"] = [round(s, 3) for s in samples]
    print(json.dumps(d), flush=True)


def skip(metric, why):
    print(json.dumps({"metric": metric, "mode": "ipykernel", "skip": why}), flush=True)


def start():
    """Starts a kernel; returns (km, kc, microseconds from start_kernel to kernel_info reply)."""
    km = KernelManager(kernel_name="python3")
    t0 = now_ns()
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=TIMEOUT)
    us = (now_ns() - t0) / 1e3
    drain(kc)
    return km, kc, us


def stop(km, kc):
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def drain(kc):
    while True:
        try:
            kc.get_iopub_msg(timeout=0.05)
        except Exception:
            return


def pid_of(km):
    p = getattr(km, "provisioner", None)
    proc = getattr(p, "process", None) if p is not None else None
    if proc is None:
        proc = getattr(km, "kernel", None)
    return proc.pid


def proc_kib(pid, fname, key):
    try:
        with open("/proc/%d/%s" % (pid, fname)) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def run_cell(kc, code, on_iopub=None):
    """Executes code; returns when both the execute_reply and the request's idle status have
    arrived. on_iopub(msg, t_ns) sees each of the request's iopub messages."""
    msg_id = kc.execute(code)
    got_reply = got_idle = False
    reply = None
    while not (got_reply and got_idle):
        if not got_idle:
            msg = kc.get_iopub_msg(timeout=TIMEOUT)
            t = now_ns()
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if on_iopub is not None:
                on_iopub(msg, t)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                got_idle = True
        else:
            reply = kc.get_shell_msg(timeout=TIMEOUT)
            if reply["parent_header"].get("msg_id") == msg_id:
                got_reply = True
    return reply


def time_cells(kc, code, runs):
    """Microseconds of each of `runs` round trips of code (run_cell), after min(runs // 10,
    100) that warm up and are not kept."""
    warm = min(runs // 10, 100)
    samples = []
    for i in range(warm + runs):
        t0 = now_ns()
        run_cell(kc, code)
        if i >= warm:
            samples.append((now_ns() - t0) / 1e3)
    return samples


def m_create(runs):
    samples = []
    for _ in range(runs):
        km, kc, us = start()
        samples.append(us)
        stop(km, kc)
    out("create", "us", samples)


def m_execute(runs, metric="execute", prelude=None):
    """"1+1" round trips; execute_shell runs "%time 1" first (ipykernel always has its shell,
    so it is the same figure: kernelhost's side makes its shell there)."""
    km, kc, _ = start()
    if prelude:
        run_cell(kc, prelude)
    samples = time_cells(kc, "1+1", runs)
    stop(km, kc)
    out(metric, "us", samples)


def m_first_magic(runs):
    """"%time 1" as a fresh kernel's first cell (its shell exists from the start)."""
    samples = []
    for _ in range(runs):
        km, kc, _ = start()
        t0 = now_ns()
        run_cell(kc, "%time 1")
        samples.append((now_ns() - t0) / 1e3)
        stop(km, kc)
    out("first_magic", "us", samples)


def m_stream(runs):
    km, kc, _ = start()
    samples = []
    for i in range(runs + 1):
        state = {"lines": 0, "done": 0}

        def on(msg, t):
            if msg["msg_type"] == "stream":
                state["lines"] += msg["content"]["text"].count("\n")
                if state["lines"] >= 100000 and not state["done"]:
                    state["done"] = t

        t0 = now_ns()
        run_cell(kc, "for i in range(100000): print(i)", on)
        if state["lines"] != 100000:
            stop(km, kc)
            return skip("stream", "expected 100000 lines, got %d" % state["lines"])
        if i > 0:
            samples.append((state["done"] - t0) / 1e6)
    stop(km, kc)
    out("stream", "ms", samples)


def display_run(metric, runs, setup, cell, mime, missing):
    """Times cell (which displays 1 MiB of mime) until the client holds its display_data."""
    km, kc, _ = start()
    run_cell(kc, setup)
    samples = []
    for i in range(runs + 1):
        state = {"t": 0}

        def on(msg, t):
            if msg["msg_type"] == "display_data" and not state["t"]:
                if len(msg["content"]["data"].get(mime, "")) >= (1 << 20):
                    state["t"] = t

        t0 = now_ns()
        run_cell(kc, cell, on)
        if not state["t"]:
            stop(km, kc)
            return skip(metric, missing)
        if i > 0:
            samples.append((state["t"] - t0) / 1e6)
    stop(km, kc)
    out(metric, "ms", samples)


def m_display_png(runs):
    """The same 1 MiB PNG as kh_bench display_png: ipykernel sends it base64 in JSON, which
    jupyter_client decodes."""
    display_run("display_png", runs,
                "import os\n"
                "class _KhBenchPng:\n"
                "    data = b'\\x89PNG\\r\\n\\x1a\\n' + os.urandom((1 << 20) - 8)\n"
                "    def _repr_png_(self): return self.data\n"
                "    def __repr__(self): return 'png'\n"
                "_kh_bench_png = _KhBenchPng()",
                "display(_kh_bench_png)", "image/png", "no 1 MiB PNG display_data arrived")


def m_display(runs):
    display_run("display", runs, "_kh_bench_payload = 'x' * (1 << 20)",
                "display({'text/plain': _kh_bench_payload}, raw=True)", "text/plain",
                "no 1 MiB display_data arrived")


def m_interrupt(runs, kind):
    metric = "interrupt_" + kind
    code = ("import time\nprint('go', flush=True)\ntime.sleep(100)" if kind == "sleep"
            else "print('go', flush=True)\nwhile True: pass")
    km, kc, _ = start()
    samples = []
    missed = 0
    while len(samples) < runs:
        msg_id = kc.execute(code)
        t0 = 0
        t_err = 0
        while True:
            msg = kc.get_iopub_msg(timeout=TIMEOUT)
            t = now_ns()
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            mt = msg["msg_type"]
            if mt == "stream" and "go" in msg["content"]["text"] and not t0:
                time.sleep(0.005)  # let the cell get into its loop / sleep
                t0 = now_ns()
                km.interrupt_kernel()
            elif mt == "error" and not t_err:
                if msg["content"]["ename"] != "KeyboardInterrupt":
                    stop(km, kc)
                    return skip(metric, "error was %s" % msg["content"]["ename"])
                t_err = t
            elif mt == "status" and msg["content"]["execution_state"] == "idle":
                break
        while kc.get_shell_msg(timeout=TIMEOUT)["parent_header"].get("msg_id") != msg_id:
            pass
        if not t_err:
            # The interrupt landed outside the cell (ipykernel swallowed it): counted, not timed.
            missed += 1
            if missed > runs:
                stop(km, kc)
                return skip(metric, "no KeyboardInterrupt error event in %d tries" % missed)
            continue
        samples.append((t_err - t0) / 1e3)
    stop(km, kc)
    out(metric, "us", samples, missed=missed)


def m_restart(runs):
    km, kc, _ = start()
    samples = []
    for _ in range(runs):
        run_cell(kc, "x = 1")
        t0 = now_ns()
        # now=True kills and respawns at once: ipykernel's fastest restart (jupyter_server's
        # default, now=False, first waits for a graceful shutdown and takes ~0.5 s longer).
        km.restart_kernel(now=True)
        kc.wait_for_ready(timeout=TIMEOUT)
        samples.append((now_ns() - t0) / 1e3)
        drain(kc)
    stop(km, kc)
    out("restart", "us", samples)


# -- editor requests (issue 12): the same requests as kh_bench.c, through the client's own
# complete()/inspect()/is_complete() calls, timed from the call to its shell reply.

BOX_CELL = ("class Box:\n    def method(self, a, b=1):\n        return a\nbox = Box()\n"
            "box.live_value = 42\nbox.name = 'kernelhost'")


def editor_request(kc, metric):
    """One request; returns (microseconds to its reply, the reply content)."""
    t0 = now_ns()
    if metric in ("complete_attr", "complete_first"):
        msg_id = kc.complete("box.", 4)
    elif metric == "complete_import":
        msg_id = kc.complete("import nu", 9)
    elif metric == "inspect":
        msg_id = kc.inspect("len", 3, 0)
    else:
        msg_id = kc.is_complete("for i in x:")
    while True:
        reply = kc.get_shell_msg(timeout=TIMEOUT)
        if reply["parent_header"].get("msg_id") == msg_id:
            return (now_ns() - t0) / 1e3, reply["content"]


def check_reply(metric, content):
    """What a reply must hold for its time to count (a failed request measures nothing)."""
    if content.get("status") != "ok" and metric != "is_complete":
        return "reply status %r" % content.get("status")
    if metric in ("complete_attr", "complete_first") and "live_value" not in content["matches"]:
        return "box. did not complete live_value: %r" % content["matches"][:10]
    if metric == "complete_import" and "numbers" not in content["matches"]:
        return "import nu did not complete numbers: %r" % content["matches"][:10]
    if metric == "inspect" and not content.get("found"):
        return "len was not found"
    if metric == "is_complete" and content.get("status") != "incomplete":
        return "is_complete said %r" % content.get("status")
    return None


def m_interact(metric, runs):
    km, kc, _ = start()
    run_cell(kc, BOX_CELL)
    first, content = editor_request(kc, metric)
    why = check_reply(metric, content)
    if why:
        stop(km, kc)
        return skip(metric, why)
    warm = min(runs // 10, 50)
    samples = []
    for i in range(warm + runs):
        us, _ = editor_request(kc, metric)
        if i >= warm:
            samples.append(us)
    stop(km, kc)
    out(metric, "us", samples, first_us=round(first))


def m_complete_first(runs):
    """A fresh kernel's first completion (IPython imports jedi when its shell starts)."""
    samples = []
    for _ in range(runs):
        km, kc, _ = start()
        run_cell(kc, BOX_CELL)
        us, content = editor_request(kc, "complete_first")
        stop(km, kc)
        why = check_reply("complete_first", content)
        if why:
            return skip("complete_first", why)
        samples.append(us)
    out("complete_first", "us", samples)


# -- comms (issue 13): the client sends comm_msg on a comm whose target the kernel registered;
# the handler sends the data back as a comm_msg; timed from the send to that message's arrival
# (each round trip then waits for the kernel's idle, as kh_bench.c's does).

COMM_CELL = ("def _kh_bench_open(comm, msg):\n"
             "    comm.on_msg(lambda m: comm.send(m['content']['data']))\n"
             "get_ipython().kernel.comm_manager.register_target('kh_bench', _kh_bench_open)")


def shell_send(kc, msg_type, content):
    msg = kc.session.msg(msg_type, content)
    kc.shell_channel.send(msg)
    return msg["header"]["msg_id"]


def wait_comm(kc, msg_id, comm_id):
    """Waits for the request's idle; returns when the comm_msg for comm_id arrived (ns), or 0."""
    t_msg = 0
    while True:
        msg = kc.get_iopub_msg(timeout=TIMEOUT)
        t = now_ns()
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        mt = msg["msg_type"]
        if mt == "comm_msg" and msg["content"].get("comm_id") == comm_id and not t_msg:
            t_msg = t
        elif mt == "status" and msg["content"]["execution_state"] == "idle":
            return t_msg


def m_comm(runs):
    import uuid
    km, kc, _ = start()
    run_cell(kc, COMM_CELL)
    comm_id = uuid.uuid4().hex
    wait_comm(kc, shell_send(kc, "comm_open", {"comm_id": comm_id, "target_name": "kh_bench",
                                               "data": {}}), comm_id)
    warm = min(runs // 10, 100)
    samples = []
    for i in range(warm + runs):
        t0 = now_ns()
        t = wait_comm(kc, shell_send(kc, "comm_msg", {"comm_id": comm_id, "data": {"n": i}}),
                      comm_id)
        if not t:
            stop(km, kc)
            return skip("comm", "no comm_msg came back (is the target registered?)")
        if i >= warm:
            samples.append((t - t0) / 1e3)
    stop(km, kc)
    out("comm", "us", samples)


def m_import(runs, module):
    """The first import of `module` in a new kernel: the cell's round trip (samples) and the
    import statement alone, timed in the cell (inner_us), as kh_bench's import metric."""
    code = ("import time as _kh_t\n_kh_a = _kh_t.perf_counter_ns()\nimport %s\n"
            "(_kh_t.perf_counter_ns() - _kh_a) // 1000" % module)
    samples, inner = [], []
    for _ in range(runs):
        km, kc, _ = start()
        got = []

        def on(msg, t):
            if msg["msg_type"] == "execute_result":
                got.append(int(msg["content"]["data"]["text/plain"]))

        t0 = now_ns()
        run_cell(kc, code, on)
        samples.append((now_ns() - t0) / 1e3)
        stop(km, kc)
        if not got:
            return skip("import", "no result from the import cell")
        inner.append(got[0])
    out("import", "us", samples, module=module, inner_us=inner)


def m_rss(count):
    # One idle kernel, then `count` idle kernels together (started at once, as a host would).
    # Started one after another, each waited for: 50 ipykernels started at once on 2 vCPUs
    # sometimes die before their first reply (seen here), which measures nothing.
    kms = []
    kcs = []
    try:
        for _ in range(count):
            km = KernelManager(kernel_name="python3")
            km.start_kernel()
            kms.append(km)
            kc = km.client()
            kc.start_channels()
            kc.wait_for_ready(timeout=TIMEOUT * 3)
            kcs.append(kc)
        for kc in kcs:
            kc.execute("1+1", reply=True, timeout=TIMEOUT)  # the shell reply is enough here
        time.sleep(0.5)
        pids = [pid_of(km) for km in kms]
        rss = [proc_kib(p, "status", "VmRSS:") for p in pids]
        pss = [proc_kib(p, "smaps_rollup", "Pss:") for p in pids]
        out("rss", "kib", [], count=count, kernel_rss_kib=rss[0], kernel_pss_kib=pss[0],
            all_rss_kib=sum(rss), all_pss_kib=sum(pss),
            median_rss_kib=sorted(rss)[len(rss) // 2])
        for kc in kcs:
            kc.stop_channels()
    finally:
        for km in kms:
            try:
                km.shutdown_kernel(now=True)
            except Exception:
                pass


def main():
    metric = sys.argv[1] if len(sys.argv) > 1 else "execute"
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    extra = sys.argv[3] if len(sys.argv) > 3 else None
    try:
        if metric == "create":
            m_create(runs)
        elif metric == "execute":
            m_execute(runs)
        elif metric == "first_magic":
            m_first_magic(runs)
        elif metric == "execute_shell":
            m_execute(runs, metric, "%time 1")
        elif metric == "stream":
            m_stream(runs)
        elif metric == "display":
            m_display(runs)
        elif metric == "display_png":
            m_display_png(runs)
        elif metric == "interrupt":
            m_interrupt(runs, extra or "busy")
        elif metric == "restart":
            m_restart(runs)
        elif metric == "rss":
            m_rss(int(extra) if extra else runs)
        elif metric in ("complete_attr", "complete_import", "inspect", "is_complete"):
            m_interact(metric, runs)
        elif metric == "complete_first":
            m_complete_first(runs)
        elif metric == "comm":
            m_comm(runs)
        elif metric == "import":
            m_import(runs, extra or "pandas")
        else:
            sys.exit("ipykernel_bench: unknown metric %r" % metric)
    except Exception as e:  # a measurement that broke is reported, never invented
        skip(metric if metric != "interrupt" else "interrupt_" + (extra or "busy"),
             "ipykernel run failed: %s: %s" % (type(e).__name__, e))


if __name__ == "__main__":
    main()

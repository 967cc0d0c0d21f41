#!/usr/bin/python3
"""attach_client.py: the wire side of the jupyter_attach_* tests of every layer (tests/c,
tests/lua, tests/node): a real jupyter_client that attaches to a kernel a live host serves
(kh_jupyter_serve, manager:serve_jupyter, manager.serveJupyter) while that host keeps running.

    /usr/bin/python3 attach_client.py CONNECTION_FILE [--shutdown]

Loads a BlockingKernelClient from the connection file, as `jupyter console --existing` does,
waits for kernel_info and checks, each on the wire:
  - a cell runs: busy, execute_input, its stdout on iopub under the request's parent header,
    idle, and an execute_reply "ok";
  - a completion sees a name that cell defined (the host's kernel's own namespace);
  - a sleeping cell is interrupted by an interrupt_request on the control channel: an
    interrupt_reply, then its execute_reply with status "error" and KeyboardInterrupt;
With --shutdown it only waits for kernel_info and then sends a shutdown_request (restart
false), which must get its shutdown_reply.
Prints one JSON object on stdout (the summary, keys sorted) and exits 0 when every check held,
1 when one did not ("failures" names them). The cell prints WIRE_MARKER, which the hosts look
for among their own events of the kernel. Timeouts are guards, never waits: every wait ends on
the message it waits for.
"""
import json
import sys
import time
from queue import Empty

from jupyter_client import BlockingKernelClient

GUARD = 60.0  # seconds: a wait that lasts longer has failed
WIRE_MARKER = "wire-marker"
CELL = "wire_value = 6 * 7\nprint('%s', wire_value)" % WIRE_MARKER
SLEEPER = "import time\nprint('wire-sleeping', flush=True)\ntime.sleep(120)"

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
    return cond


def reply_to(channel_get, msg_id):
    """The reply with this parent msg_id on a channel (other replies are skipped)."""
    deadline = time.monotonic() + GUARD
    while True:
        msg = channel_get(timeout=max(0.1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") == msg_id:
            return msg


def iopub_until_idle(kc, msg_id, on_msg=None):
    """Every iopub message whose parent is msg_id, up to and including its idle status."""
    got = []
    deadline = time.monotonic() + GUARD
    while True:
        msg = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        got.append(msg)
        if on_msg is not None:
            on_msg(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return got


def stdout_of(msgs):
    return "".join(m["content"]["text"] for m in msgs
                   if m["msg_type"] == "stream" and m["content"]["name"] == "stdout")


def session(kc, summary):
    """A cell, a completion and an interrupt, each checked on the wire."""
    # A cell: its output on iopub, with the request as parent, between busy and idle.
    msg_id = kc.execute(CELL)
    msgs = iopub_until_idle(kc, msg_id)
    reply = reply_to(kc.get_shell_msg, msg_id)["content"]
    types = [m["msg_type"] for m in msgs]
    summary["execute"] = {"status": reply["status"],
                          "execution_count": reply.get("execution_count"),
                          "stdout": stdout_of(msgs), "iopub": types}
    check(reply["status"] == "ok", "execute_reply status ok")
    check(stdout_of(msgs) == "%s 42\n" % WIRE_MARKER, "the cell's stdout on iopub")
    check(types[0] == "status" and msgs[0]["content"]["execution_state"] == "busy",
          "busy first")
    check("execute_input" in types and "stream" in types and
          types.index("execute_input") < types.index("stream"),
          "execute_input before the stream")

    # A completion of a name that cell defined.
    code = "wire_va"
    cid = kc.complete(code, len(code))
    comp = reply_to(kc.get_shell_msg, cid)["content"]
    summary["complete"] = {"status": comp.get("status"), "matches": comp.get("matches"),
                           "cursor_start": comp.get("cursor_start"),
                           "cursor_end": comp.get("cursor_end")}
    check(comp.get("status") == "ok" and "wire_value" in comp.get("matches", []),
          "complete_reply has wire_value")

    # A sleeping cell, interrupted by message once its first line has printed.
    sid = kc.execute(SLEEPER)
    sent = {}

    def interrupt_when_sleeping(msg):
        if (not sent and msg["msg_type"] == "stream" and
                "wire-sleeping" in msg["content"]["text"]):
            req = kc.session.msg("interrupt_request", {})
            kc.control_channel.send(req)
            sent["id"] = req["header"]["msg_id"]

    msgs = iopub_until_idle(kc, sid, interrupt_when_sleeping)
    ireply = reply_to(kc.get_control_msg, sent["id"]) if sent else None
    sreply = reply_to(kc.get_shell_msg, sid)["content"]
    errors = [m["content"] for m in msgs if m["msg_type"] == "error"]
    summary["interrupt"] = {
        "sent": bool(sent),
        "interrupt_reply": ireply["msg_type"] if ireply else None,
        "interrupt_status": ireply["content"].get("status") if ireply else None,
        "status": sreply["status"], "ename": sreply.get("ename"),
        "iopub_error": errors[0]["ename"] if errors else None}
    check(bool(sent), "the sleeping cell printed")
    check(ireply is not None and ireply["msg_type"] == "interrupt_reply" and
          ireply["content"].get("status") == "ok", "interrupt_reply ok")
    check(sreply["status"] == "error" and sreply.get("ename") == "KeyboardInterrupt",
          "the sleeping cell's reply is a KeyboardInterrupt")
    check(bool(errors) and errors[0]["ename"] == "KeyboardInterrupt",
          "a KeyboardInterrupt error on iopub")


def shutdown(kc, summary):
    """A shutdown_request that must be answered (the server then stops)."""
    req = kc.session.msg("shutdown_request", {"restart": False})
    kc.control_channel.send(req)
    sd = reply_to(kc.get_control_msg, req["header"]["msg_id"])
    summary["shutdown"] = {"reply": sd["msg_type"], "restart": sd["content"].get("restart")}
    check(sd["msg_type"] == "shutdown_reply" and sd["content"].get("restart") is False,
          "shutdown_reply")


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    summary = {}
    kc = BlockingKernelClient()
    kc.load_connection_file(argv[1])
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=GUARD)
        info_id = kc.kernel_info()
        info = reply_to(kc.get_shell_msg, info_id)["content"]
        summary["kernel_info"] = {"status": info.get("status"),
                                  "implementation": info.get("implementation"),
                                  "language": info.get("language_info", {}).get("name")}
        check(info.get("status") == "ok", "kernel_info_reply status ok")
        if "--shutdown" in argv[2:]:
            shutdown(kc, summary)
        else:
            session(kc, summary)
    except (Empty, RuntimeError) as err:  # a guard ran out, or the kernel never answered
        failures.append("no answer: %s: %s" % (type(err).__name__, err))
    finally:
        kc.stop_channels()
    summary["failures"] = failures
    print(json.dumps(summary, sort_keys=True))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

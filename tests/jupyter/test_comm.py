# test_comm.py: comms both ways with binary buffers (comm_open, comm_msg, comm_close),
# comm_info_request with and without a target_name filter, a comm opened to a target the kernel
# does not know.
import ast
import json
import uuid

import wire
from wire import types

# Kernel-side setup, run once. kernelhost (and ipykernel from 6.18 on) implement the `comm`
# package's API: comm.get_comm_manager().register_target(...) and comm.create_comm(...). Debian's
# ipykernel 6.17 predates that: the comm package is installed but not wired into it (create_comm
# is still the package's placeholder), so for it the same two calls go to the kernel's own
# comm manager and ipykernel.comm.Comm. The test code below them is the same for both kernels.
SETUP = r"""
import comm as _kh_comm
if _kh_comm.create_comm is getattr(_kh_comm, "_create_comm", None):
    from ipykernel.comm import Comm as kh_create_comm
    kh_comm_manager = get_ipython().kernel.comm_manager
else:
    kh_create_comm = _kh_comm.create_comm
    kh_comm_manager = _kh_comm.get_comm_manager()

kh_events = []  # what the kernel's callbacks saw, buffers as hex

def kh_hex(msg):
    return [bytes(b).hex() for b in (msg.get("buffers") or [])]

def kh_echo_target(c, open_msg):
    kh_events.append(["open", c.comm_id, open_msg["content"]["data"], kh_hex(open_msg)])
    def on_msg(msg):
        kh_events.append(["msg", c.comm_id, msg["content"]["data"], kh_hex(msg)])
        c.send({"echo": msg["content"]["data"]},
               buffers=[bytes(b)[::-1] for b in (msg.get("buffers") or [])])
    def on_close(msg):
        kh_events.append(["close", c.comm_id, msg["content"]["data"]])
    c.on_msg(on_msg)
    c.on_close(on_close)

kh_comm_manager.register_target("kh.test.echo", kh_echo_target)
"""


class Comm(wire.KernelTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.kernel.ok(SETUP)

    def events(self, comm_id):
        """What the kernel's callbacks saw of comm `comm_id`."""
        text = self.kernel.value("__import__('json').dumps([e for e in kh_events if e[1] == %r])"
                                 % comm_id)
        return json.loads(ast.literal_eval(text))  # text/plain of a str is its repr

    def send_comm(self, msg_type, content, buffers=()):
        """Sends a comm message on shell; returns the IOPub messages of its busy..idle."""
        k = self.kernel
        msg = k.kc.session.msg(msg_type, content)
        msg["buffers"] = list(buffers)
        k.kc.shell_channel.send(msg)
        return k.iopub(msg["header"]["msg_id"])

    def jupyter_comm_from_client(self):
        comm_id = uuid.uuid4().hex
        msgs = self.send_comm("comm_open", {"comm_id": comm_id, "target_name": "kh.test.echo",
                                            "data": {"hello": 1}}, [b"\x00\x01\x02"])
        self.assertEqual(types(msgs), ["status", "status"])
        # comm_msg with two buffers: the kernel's callback answers on IOPub, its parent being
        # the client's comm_msg, with the buffers reversed.
        msgs = self.send_comm("comm_msg", {"comm_id": comm_id, "data": {"n": 2}},
                              [b"abc", b"\xff\x00"])
        echo = [m for m in msgs if m["msg_type"] == "comm_msg"]
        self.assertEqual(len(echo), 1)
        self.assertEqual(echo[0]["content"]["comm_id"], comm_id)
        self.assertEqual(echo[0]["content"]["data"], {"echo": {"n": 2}})
        self.assertEqual([bytes(b) for b in echo[0]["buffers"]], [b"cba", b"\x00\xff"])
        self.send_comm("comm_close", {"comm_id": comm_id, "data": {"bye": True}})
        self.assertEqual(self.events(comm_id), [
            ["open", comm_id, {"hello": 1}, ["000102"]],
            ["msg", comm_id, {"n": 2}, ["616263", "ff00"]],
            ["close", comm_id, {"bye": True}],
        ])
        comms = self.kernel.request("comm_info_request", {})["content"]["comms"]
        self.assertNotIn(comm_id, comms)

    def jupyter_comm_from_kernel(self):
        k = self.kernel
        _, msgs = k.ok(
            "kh_c = kh_create_comm(target_name='kh.test.fromkernel', data={'a': 1},\n"
            "                      buffers=[b'\\x00xyz'])\n"
            "kh_c.on_msg(lambda msg: kh_events.append(\n"
            "    ['msg', kh_c.comm_id, msg['content']['data'], kh_hex(msg)]))\n"
            "kh_c.send({'b': 2}, buffers=[b'\\x01', b'\\x02\\x03'])\n")
        self.assertEqual(types(wire.outputs(msgs)), ["comm_open", "comm_msg"])
        opened, sent = wire.outputs(msgs)
        comm_id = opened["content"]["comm_id"]
        self.assertEqual(opened["content"]["target_name"], "kh.test.fromkernel")
        self.assertEqual(opened["content"]["data"], {"a": 1})
        self.assertEqual([bytes(b) for b in opened["buffers"]], [b"\x00xyz"])
        self.assertEqual(sent["content"], {"comm_id": comm_id, "data": {"b": 2}})
        self.assertEqual([bytes(b) for b in sent["buffers"]], [b"\x01", b"\x02\x03"])
        # The client answers on the kernel's comm.
        self.send_comm("comm_msg", {"comm_id": comm_id, "data": {"reply": 3}}, [b"\xfe"])
        self.assertEqual(self.events(comm_id), [["msg", comm_id, {"reply": 3}, ["fe"]]])
        # comm_info lists it (the filter is the next test's), then the kernel closes it.
        comms = k.request("comm_info_request", {})["content"]["comms"]
        self.assertEqual(comms[comm_id], {"target_name": "kh.test.fromkernel"})
        _, msgs = k.ok("kh_c.close({'bye': 4})")
        closed = [m for m in msgs if m["msg_type"] == "comm_close"]
        self.assertEqual(len(closed), 1)
        self.assertEqual(closed[0]["content"], {"comm_id": comm_id, "data": {"bye": 4}})
        comms = k.request("comm_info_request", {})["content"]["comms"]
        self.assertNotIn(comm_id, comms)

    def jupyter_comm_info_target_filter(self):
        k = self.kernel
        a = uuid.uuid4().hex
        self.send_comm("comm_open", {"comm_id": a, "target_name": "kh.test.echo", "data": {}})
        _, msgs = k.ok("kh_f = kh_create_comm(target_name='kh.test.other', data={})")
        b = wire.outputs(msgs)[0]["content"]["comm_id"]
        try:
            every = k.request("comm_info_request", {})
            self.assertEqual(every["msg_type"], "comm_info_reply")
            self.assertEqual(every["content"]["status"], "ok")
            self.assertEqual(every["content"]["comms"][a], {"target_name": "kh.test.echo"})
            self.assertEqual(every["content"]["comms"][b], {"target_name": "kh.test.other"})
            only = k.request("comm_info_request", {"target_name": "kh.test.other"})["content"]
            self.assertEqual(only["comms"], {b: {"target_name": "kh.test.other"}})
            none = k.request("comm_info_request", {"target_name": "kh.test.nosuch"})["content"]
            self.assertEqual(none["comms"], {})
        finally:
            self.send_comm("comm_close", {"comm_id": a, "data": {}})
            k.ok("kh_f.close()")

    def jupyter_comm_open_unknown_target_closes(self):
        # The protocol: a comm_open for a target the kernel does not know is answered at once
        # by a comm_close, so that both sides agree the comm does not exist.
        comm_id = uuid.uuid4().hex
        msgs = self.send_comm("comm_open", {"comm_id": comm_id, "target_name": "kh.test.nosuch",
                                            "data": {}})
        closed = [m for m in msgs if m["msg_type"] == "comm_close"]
        self.assertEqual(len(closed), 1)
        self.assertEqual(closed[0]["content"]["comm_id"], comm_id)
        comms = self.kernel.request("comm_info_request", {})["content"]["comms"]
        self.assertNotIn(comm_id, comms)

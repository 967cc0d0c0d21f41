# test_info.py: kernel_info_reply, the busy/idle bracket of every shell request, requests on
# control (also while shell is busy), a second client seeing the first one's outputs.
import wire
from wire import types


class Info(wire.KernelTestCase):

    def jupyter_kernel_info_reply(self):
        k = self.kernel
        msg_id = k.send("shell", "kernel_info_request")
        reply = k.reply(msg_id)
        self.assertEqual(reply["msg_type"], "kernel_info_reply")
        c = reply["content"]
        self.assertEqual(c["status"], "ok")
        self.assertEqual(c["protocol_version"], "5.3")
        self.assertIsInstance(c["implementation"], str)
        self.assertIsInstance(c["implementation_version"], str)
        self.assertIsInstance(c["banner"], str)
        li = c["language_info"]
        self.assertEqual(li["name"], "python")
        self.assertRegex(li["version"], r"^3\.\d+\.\d+")
        self.assertEqual(li["mimetype"], "text/x-python")
        self.assertEqual(li["file_extension"], ".py")
        for link in c.get("help_links", []):
            self.assertEqual(set(link), {"text", "url"})
        # The reply's session and the kernel's own header fields.
        self.assertEqual(reply["header"]["version"], "5.3")
        self.assertEqual(reply["parent_header"]["session"], k.kc.session.session)

    def jupyter_status_brackets_every_request(self):
        # Every shell request, whatever its type, is bracketed on IOPub by busy and idle with
        # the request as parent, and answered by <type>_reply with the request as parent.
        k = self.kernel
        requests = [
            ("kernel_info_request", {}),
            ("complete_request", {"code": "import o", "cursor_pos": 8}),
            ("inspect_request", {"code": "len", "cursor_pos": 3, "detail_level": 0}),
            ("is_complete_request", {"code": "x = 1"}),
            ("history_request", {"hist_access_type": "tail", "n": 1, "output": False,
                                 "raw": True}),
            ("comm_info_request", {}),
            ("execute_request", {"code": "1", "silent": False, "store_history": True,
                                 "user_expressions": {}, "allow_stdin": False,
                                 "stop_on_error": True}),
        ]
        for msg_type, content in requests:
            with self.subTest(msg_type):
                msg_id = k.send("shell", msg_type, content)
                reply = k.reply(msg_id)
                self.assertEqual(reply["msg_type"], msg_type.replace("_request", "_reply"))
                if msg_type != "is_complete_request":  # its status is the verdict
                    self.assertEqual(reply["content"]["status"], "ok")
                msgs = k.iopub(msg_id)
                self.assertEqual(msgs[0]["msg_type"], "status")
                self.assertEqual(msgs[0]["content"]["execution_state"], "busy")
                self.assertTrue(wire.is_idle(msgs[-1]))
                states = [m["content"]["execution_state"] for m in msgs
                          if m["msg_type"] == "status"]
                self.assertEqual(states, ["busy", "idle"])

    def jupyter_control_kernel_info(self):
        k = self.kernel
        reply = k.request("kernel_info_request", channel="control")
        self.assertEqual(reply["msg_type"], "kernel_info_reply")
        self.assertEqual(reply["content"]["status"], "ok")
        self.assertEqual(reply["content"]["language_info"]["name"], "python")

    def jupyter_control_while_shell_busy(self):
        # Control is served while a cell runs (here a cell blocked in input()): that is what
        # interrupt_request and shutdown_request rely on.
        k = self.kernel
        msg_id = k.send_execute("kh_answer = input('wait: ')", allow_stdin=True)
        self.assertEqual(k.stdin(msg_id)["msg_type"], "input_request")
        reply = k.request("kernel_info_request", channel="control")
        self.assertEqual(reply["content"]["status"], "ok")
        k.kc.input("done")
        self.assertEqual(k.reply(msg_id)["content"]["status"], "ok")
        k.iopub(msg_id)
        self.assertEqual(k.value("kh_answer"), "'done'")

    def jupyter_two_clients_share_iopub(self):
        # A second client (as `jupyter console --existing` attaching) sees the cells of the
        # first on IOPub, with the first client's request as parent.
        k = self.kernel
        kc2 = k.connect(new_session=True)
        try:
            msg_id = k.send_execute("print('shared')")
            k.reply(msg_id)
            k.iopub(msg_id)
            seen = []
            while not (seen and wire.is_idle(seen[-1])):
                m = kc2.get_iopub_msg(timeout=wire.TIMEOUT)
                if m["parent_header"].get("msg_id") == msg_id:
                    seen.append(m)
            self.assertEqual(types(seen), ["status", "execute_input", "stream", "status"])
            self.assertEqual(wire.stream_text(seen, "stdout"), "shared\n")
            self.assertEqual(seen[0]["parent_header"]["session"], k.kc.session.session)
            # The second client's own request is answered to it, not to the first.
            msg2 = kc2.kernel_info()
            r = kc2.get_shell_msg(timeout=wire.TIMEOUT)
            while r["parent_header"].get("msg_id") != msg2:
                r = kc2.get_shell_msg(timeout=wire.TIMEOUT)
            self.assertEqual(r["msg_type"], "kernel_info_reply")
        finally:
            kc2.stop_channels()

# test_stdin.py: input_request on the stdin channel when allow_stdin, answered by input_reply;
# the password flag; StdinNotImplementedError without allow_stdin.
import wire


class Stdin(wire.KernelTestCase):

    def jupyter_stdin_input_request(self):
        k = self.kernel
        msg_id = k.send_execute("kh_name = input('name? ')\nprint('hello', kh_name)",
                                allow_stdin=True)
        req = k.stdin(msg_id)
        self.assertEqual(req["msg_type"], "input_request")
        self.assertEqual(req["content"], {"prompt": "name? ", "password": False})
        self.assertEqual(req["parent_header"]["msg_type"], "execute_request")
        # jupyter_client's input() sends input_reply without a parent header, as jupyter
        # console does: the kernel must take it as the answer to its pending request.
        k.kc.input("kh")
        self.assertEqual(k.reply(msg_id)["content"]["status"], "ok")
        self.assertEqual(wire.stream_text(k.iopub(msg_id), "stdout"), "hello kh\n")

    def jupyter_stdin_password(self):
        k = self.kernel
        msg_id = k.send_execute("import getpass\nkh_pw = getpass.getpass('pw: ')",
                                allow_stdin=True)
        req = k.stdin(msg_id)
        self.assertEqual(req["content"], {"prompt": "pw: ", "password": True})
        # This time the reply names the input_request as its parent, as JupyterLab does.
        msg = k.kc.session.msg("input_reply", {"value": "s3cret"}, parent=req)
        k.kc.stdin_channel.send(msg)
        self.assertEqual(k.reply(msg_id)["content"]["status"], "ok")
        k.iopub(msg_id)
        self.assertEqual(k.value("kh_pw"), "'s3cret'")

    def jupyter_stdin_several_inputs(self):
        k = self.kernel
        msg_id = k.send_execute("kh_ab = [input('a'), input('b')]", allow_stdin=True)
        for prompt, answer in (("a", "1"), ("b", "2")):
            self.assertEqual(k.stdin(msg_id)["content"]["prompt"], prompt)
            k.kc.input(answer)
        self.assertEqual(k.reply(msg_id)["content"]["status"], "ok")
        k.iopub(msg_id)
        self.assertEqual(k.value("kh_ab"), "['1', '2']")

    def jupyter_stdin_not_allowed(self):
        k = self.kernel
        reply, msgs = k.execute("input('never? ')", allow_stdin=False, stop_on_error=False)
        c = reply["content"]
        self.assertEqual(c["status"], "error")
        self.assertEqual(c["ename"], "StdinNotImplementedError")
        self.assertIn("error", wire.types(msgs))
        # Nothing was asked on stdin: the next request that reads stdin gets its own prompt.
        msg_id = k.send_execute("input('next? ')", allow_stdin=True)
        self.assertEqual(k.stdin(msg_id)["content"]["prompt"], "next? ")
        k.kc.input("")
        self.assertEqual(k.reply(msg_id)["content"]["status"], "ok")
        k.iopub(msg_id)

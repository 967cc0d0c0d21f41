# test_execute.py: execute_request and what it publishes: the IOPub order, execute_reply,
# streams, results, display_data with binary MIME types, errors, stop_on_error and aborted
# requests, silent and store_history.
import wire
from wire import outputs, stream_text, types

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Execute(wire.KernelTestCase):

    def counter(self):
        """The execution count the next stored cell will get."""
        c, _ = self.kernel.ok("pass")
        return c["execution_count"] + 1

    def one_display(self, msgs):
        """The one display_data among a cell's messages."""
        shown = [m for m in msgs if m["msg_type"] == "display_data"]
        self.assertEqual(len(shown), 1)
        return shown[0]

    def jupyter_execute_iopub_order(self):
        # Several cells in a row, the first ones of a fresh kernel among them: each one's
        # execute_input, execute_result and execute_reply carry the same execution_count.
        k = self.kernel
        counts = []
        for i in range(5):
            code = "print('out')\n6 * %d" % i
            msg_id = k.send_execute(code)
            reply = k.reply(msg_id)
            msgs = wire.merge_streams(k.iopub(msg_id))
            self.assertEqual(types(msgs),
                             ["status", "execute_input", "stream", "execute_result", "status"])
            self.assertEqual(msgs[2]["content"], {"name": "stdout", "text": "out\n"})
            self.assertEqual([m["content"]["execution_state"] for m in (msgs[0], msgs[-1])],
                             ["busy", "idle"])
            self.assertEqual(msgs[1]["content"]["code"], code)
            n = reply["content"]["execution_count"]
            self.assertEqual((msgs[1]["content"]["execution_count"],
                              msgs[3]["content"]["execution_count"]), (n, n),
                             "execute_input, execute_result of cell %d" % i)
            for m in msgs:
                self.assertEqual(m["parent_header"]["msg_id"], msg_id)
                self.assertEqual(m["parent_header"]["msg_type"], "execute_request")
            counts.append(n)
        self.assertEqual(counts, list(range(counts[0], counts[0] + 5)))

    def jupyter_execute_reply_ok(self):
        k = self.kernel
        c1, _ = k.ok("kh_a = 1")
        c2, _ = k.ok("kh_a += 1")
        self.assertEqual(c1["status"], "ok")
        self.assertIsInstance(c1["execution_count"], int)
        self.assertEqual(c2["execution_count"], c1["execution_count"] + 1)
        self.assertEqual(c2["user_expressions"], {})
        self.assertIsInstance(c2.get("payload", []), list)

    def jupyter_execute_error(self):
        k = self.kernel
        n = self.counter()
        reply, msgs = k.execute("print('before')\nraise ValueError('boom')", stop_on_error=False)
        c = reply["content"]
        self.assertEqual(c["status"], "error")
        self.assertEqual(c["ename"], "ValueError")
        self.assertEqual(c["evalue"], "boom")
        self.assertIsInstance(c["traceback"], list)
        self.assertTrue(all(isinstance(line, str) for line in c["traceback"]))
        self.assertIn("ValueError", wire.strip_ansi("\n".join(c["traceback"])))
        # A failed cell counts, as in IPython.
        self.assertEqual(c["execution_count"], n)
        self.assertEqual(types(outputs(msgs)), ["stream", "error"])
        err = msgs[-2]["content"]
        self.assertEqual((err["ename"], err["evalue"]), ("ValueError", "boom"))
        self.assertEqual(err["traceback"], c["traceback"])
        self.assertEqual(self.counter(), n + 2)  # the error cell, then counter()'s own cell

    def jupyter_execute_syntax_error(self):
        reply, msgs = self.kernel.execute("1 +* 2", stop_on_error=False)
        c = reply["content"]
        self.assertEqual((c["status"], c["ename"]), ("error", "SyntaxError"))
        self.assertEqual(types(outputs(msgs)), ["error"])

    def jupyter_execute_stream_stdout_stderr(self):
        _, msgs = self.kernel.ok(
            "import sys\nprint('one')\nprint('two', file=sys.stderr)\nprint('three')")
        self.assertEqual({m["msg_type"] for m in outputs(msgs)}, {"stream"})
        self.assertEqual(stream_text(msgs, "stdout"), "one\nthree\n")
        self.assertEqual(stream_text(msgs, "stderr"), "two\n")

    def jupyter_execute_result(self):
        _, msgs = self.kernel.ok("{'a': 6 * 7}")
        res = [m for m in msgs if m["msg_type"] == "execute_result"]
        self.assertEqual(len(res), 1)
        c = res[0]["content"]
        self.assertEqual(c["data"], {"text/plain": "{'a': 42}"})
        self.assertIsInstance(c["metadata"], dict)
        self.assertEqual(c["execution_count"], msgs[1]["content"]["execution_count"])

    def jupyter_execute_no_result_for_none(self):
        _, msgs = self.kernel.ok("None")
        self.assertEqual(outputs(msgs), [])

    def jupyter_execute_display_data(self):
        # display() of an object with _repr_png_ and _repr_html_: image/png travels as base64
        # text in the JSON content and decodes to the exact bytes; text/plain is always there.
        _, msgs = self.kernel.ok(
            "class KhRich:\n"
            "    def _repr_png_(self): return b'\\x89PNG\\r\\n\\x1a\\nkh-bytes\\x00\\xff'\n"
            "    def _repr_html_(self): return '<b>kh</b>'\n"
            "    def __repr__(self): return 'KhRich()'\n"
            "from IPython.display import display\n"
            "display(KhRich())\n")
        shown = self.one_display(msgs)
        data = shown["content"]["data"]
        self.assertEqual(set(data), {"image/png", "text/html", "text/plain"})
        self.assertEqual(wire.b64decode(data["image/png"]), PNG_MAGIC + b"kh-bytes\x00\xff")
        self.assertEqual(data["text/html"], "<b>kh</b>")
        self.assertEqual(data["text/plain"], "KhRich()")
        self.assertIsInstance(shown["content"]["metadata"], dict)
        self.assertEqual(shown["parent_header"]["msg_type"], "execute_request")

    def jupyter_execute_display_matplotlib_png(self):
        _, msgs = self.kernel.ok(
            "import matplotlib.pyplot as plt\n"
            "plt.plot([1, 3, 2])\n"
            "plt.show()\n")
        data = self.one_display(msgs)["content"]["data"]
        self.assertIn("image/png", data)
        self.assertIn("text/plain", data)
        self.assertTrue(wire.b64decode(data["image/png"]).startswith(PNG_MAGIC))

    def jupyter_execute_outputs_in_order(self):
        # stdout written before a display is published before it (streams are flushed first).
        _, msgs = self.kernel.ok(
            "from IPython.display import display, HTML\n"
            "print('a')\ndisplay(HTML('<i>b</i>'))\nprint('c')\n'd'")
        outs = wire.merge_streams(outputs(msgs))
        self.assertEqual(types(outs), ["stream", "display_data", "stream", "execute_result"])
        self.assertEqual([m["content"].get("text") for m in outs], ["a\n", None, "c\n", None])

    def _queued_behind_error(self, stop_on_error):
        """Runs a failing cell that first blocks in input(), queues two cells behind it while
        it is blocked, then lets it fail. Returns the replies of the two queued cells."""
        k = self.kernel
        first = k.send_execute("input('go? ')\nraise ValueError('first')", allow_stdin=True,
                               stop_on_error=stop_on_error)
        self.assertEqual(k.stdin(first)["msg_type"], "input_request")
        queued = [k.send_execute("kh_after_error = %s" % stop_on_error),
                  k.send_execute("2 + 2")]
        # The queued requests were sent before this control round trip started; once it is
        # answered they are in the kernel's shell queue (nothing in the protocol acknowledges a
        # queued request; this is the closest a client can get without waiting on a clock).
        k.request("kernel_info_request", channel="control")
        k.kc.input("go")
        self.assertEqual(k.reply(first)["content"]["ename"], "ValueError")
        k.iopub(first)
        return [k.reply(q) for q in queued], queued

    def jupyter_execute_stop_on_error_aborts(self):
        k = self.kernel
        k.ok("kh_after_error = 'unset'")
        n = self.counter()
        replies, _ = self._queued_behind_error(True)
        self.assertEqual([r["content"]["status"] for r in replies], ["aborted", "aborted"])
        self.assertEqual([r["msg_type"] for r in replies], ["execute_reply", "execute_reply"])
        # Debian's ipykernel 6.17 also aborts an execute_request that arrives right after the
        # last aborted reply: its abort window closes on a callback of its event loop that a
        # request already readable on the socket overtakes. A kernel_info_request on shell is
        # never aborted and is answered only after that callback; kernelhost does not need it.
        k.request("kernel_info_request")
        # The aborted cells did not run and did not count.
        self.assertEqual(k.value("kh_after_error"), "'unset'")
        self.assertEqual(self.counter(), n + 3)  # the failed cell, value(), counter()

    def jupyter_execute_stop_on_error_false_runs_queue(self):
        k = self.kernel
        k.ok("kh_after_error = 'unset'")
        replies, queued = self._queued_behind_error(False)
        self.assertEqual([r["content"]["status"] for r in replies], ["ok", "ok"])
        self.assertEqual(k.value("kh_after_error"), "False")
        results = [m for m in k.iopub(queued[1]) if m["msg_type"] == "execute_result"]
        self.assertEqual(results[0]["content"]["data"]["text/plain"], "4")

    def jupyter_execute_silent(self):
        # silent: no execute_input, no execute_result, the counter does not move.
        k = self.kernel
        n = self.counter()
        reply, msgs = k.execute("kh_silent = 6 * 7\nkh_silent", silent=True)
        self.assertEqual(reply["content"]["status"], "ok")
        self.assertNotIn("execute_input", types(msgs))
        self.assertNotIn("execute_result", types(msgs))
        self.assertEqual(types(msgs)[0], "status")
        self.assertTrue(wire.is_idle(msgs[-1]))
        self.assertEqual(self.counter(), n + 1)
        self.assertEqual(k.value("kh_silent"), "42")

    def jupyter_execute_store_history_false(self):
        # store_history False: the cell runs and shows its result, but does not count and does
        # not enter the history.
        k = self.kernel
        n = self.counter()
        reply, msgs = k.execute("'kh-unstored'", store_history=False)
        self.assertEqual(reply["content"]["status"], "ok")
        res = [m for m in msgs if m["msg_type"] == "execute_result"]
        self.assertEqual(res[0]["content"]["data"]["text/plain"], "'kh-unstored'")
        self.assertEqual(self.counter(), n + 1)
        hist = k.request("history_request", {"hist_access_type": "tail", "n": 5,
                                             "output": False, "raw": True})
        self.assertNotIn("'kh-unstored'", [h[2] for h in hist["content"]["history"]])

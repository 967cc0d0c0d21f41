# test_introspection.py: what a console asks while its user types: complete_request (cursor
# positions in code points), inspect_request, is_complete_request, history_request.
import wire


class Introspection(wire.KernelTestCase):

    def complete(self, code, cursor_pos=None):
        if cursor_pos is None:
            cursor_pos = len(code)
        reply = self.kernel.request("complete_request", {"code": code, "cursor_pos": cursor_pos})
        self.assertEqual(reply["msg_type"], "complete_reply")
        c = reply["content"]
        self.assertEqual(c["status"], "ok")
        self.assertIsInstance(c["metadata"], dict)
        self.assertLessEqual(0, c["cursor_start"])
        self.assertLessEqual(c["cursor_start"], c["cursor_end"])
        self.assertEqual(c["cursor_end"], cursor_pos)
        return c

    def completed(self, code, c):
        """The texts the matches would give when put in place of code[cursor_start:cursor_end]
        (Python's str indexes code points, as the protocol counts the cursor)."""
        return [code[:c["cursor_start"]] + m + code[c["cursor_end"]:] for m in c["matches"]]

    def jupyter_complete_reply(self):
        code = "import os\nos.pa"
        c = self.complete(code)
        # ipykernel answers "path" from cursor_start 13, another kernel could answer "os.path"
        # from 10: what is compared is the text a front end makes of a match.
        self.assertIn("import os\nos.path", self.completed(code, c))
        self.assertTrue(all(t.startswith("import os\nos.") for t in self.completed(code, c)))

    def jupyter_complete_live_namespace(self):
        self.kernel.ok("kh_completion_target_value = 1")
        code = "kh_completion_target_v"
        self.assertIn("kh_completion_target_value", self.completed(code, self.complete(code)))

    def jupyter_complete_cursor_unicode(self):
        # Cursor positions count Unicode code points (protocol 5.2+): two characters outside
        # the BMP (two UTF-16 units, four UTF-8 bytes each) before the cursor.
        code = "# \U0001F600\U0001F600\nimport os\nos.pa"
        c = self.complete(code)
        self.assertIn(code[c["cursor_start"]:c["cursor_end"]], ("pa", "os.pa"))
        self.assertIn("# \U0001F600\U0001F600\nimport os\nos.path", self.completed(code, c))

    def jupyter_complete_cursor_mid_code(self):
        code = "import os\nos.pa\nx = 1"
        pos = code.index("\nx")
        c = self.complete(code, pos)
        self.assertIn("import os\nos.path\nx = 1", self.completed(code, c))

    def inspect(self, code, cursor_pos=None, detail_level=0):
        if cursor_pos is None:
            cursor_pos = len(code)
        reply = self.kernel.request("inspect_request", {"code": code, "cursor_pos": cursor_pos,
                                                        "detail_level": detail_level})
        self.assertEqual(reply["msg_type"], "inspect_reply")
        c = reply["content"]
        self.assertEqual(c["status"], "ok")
        self.assertIsInstance(c["metadata"], dict)
        return c

    def jupyter_inspect_found(self):
        c = self.inspect("len")
        self.assertIs(c["found"], True)
        self.assertIn("Return the number of items", wire.strip_ansi(c["data"]["text/plain"]))

    def jupyter_inspect_cursor_inside_call(self):
        self.kernel.ok("def kh_documented(a, b=2):\n    'kh docstring here'\n    return a")
        code = "kh_documented(1, "
        c = self.inspect(code)
        self.assertIs(c["found"], True)
        self.assertIn("kh docstring here", wire.strip_ansi(c["data"]["text/plain"]))

    def jupyter_inspect_not_found(self):
        c = self.inspect("kh_no_such_name_anywhere")
        self.assertIs(c["found"], False)
        self.assertEqual(c["data"], {})

    def is_complete(self, code):
        reply = self.kernel.request("is_complete_request", {"code": code})
        self.assertEqual(reply["msg_type"], "is_complete_reply")
        return reply["content"]

    def jupyter_is_complete(self):
        self.assertEqual(self.is_complete("x = 1")["status"], "complete")
        self.assertEqual(self.is_complete("def f():\n    return 1\n")["status"], "complete")

    def jupyter_is_complete_incomplete_indent(self):
        self.assertEqual(self.is_complete("for i in range(3):"),
                         {"status": "incomplete", "indent": "    "})
        self.assertEqual(self.is_complete("if 1:\n  pass"),
                         {"status": "incomplete", "indent": "  "})
        self.assertEqual(self.is_complete("x = (1,"), {"status": "incomplete", "indent": ""})

    def jupyter_is_complete_invalid(self):
        self.assertEqual(self.is_complete("1 +* 2")["status"], "invalid")
        self.assertEqual(self.is_complete(")")["status"], "invalid")

    def jupyter_history_tail(self):
        k = self.kernel
        cells = ["kh_h = 6 * 7", "kh_h", "print('kh history')"]
        counts = [k.ok(code)[0]["execution_count"] for code in cells]
        reply = k.request("history_request", {"hist_access_type": "tail", "n": 3,
                                              "output": False, "raw": True})
        self.assertEqual(reply["msg_type"], "history_reply")
        c = reply["content"]
        self.assertEqual(c["status"], "ok")
        hist = c["history"]
        self.assertEqual([h[2] for h in hist], cells)
        self.assertEqual([h[1] for h in hist], counts)
        session = hist[0][0]
        self.assertIsInstance(session, int)
        self.assertTrue(all(h[0] == session for h in hist))

    def jupyter_history_tail_with_output(self):
        # output=True: each entry is [session, line, [input, output]], the output being the
        # cell's execute_result as text/plain, null for a cell without one. (ipykernel needs
        # HistoryManager.db_log_output for this, which wire.isolate sets for it.)
        k = self.kernel
        cells = ["kh_o = 6 * 7", "kh_o", "print('kh output')"]
        counts = [k.ok(code)[0]["execution_count"] for code in cells]
        reply = k.request("history_request", {"hist_access_type": "tail", "n": 3,
                                              "output": True, "raw": True})
        hist = reply["content"]["history"]
        self.assertEqual([h[1] for h in hist], counts)
        self.assertEqual([h[2] for h in hist],
                         [["kh_o = 6 * 7", None], ["kh_o", "42"], ["print('kh output')", None]])

# test_signature.py: HMAC-SHA256 signatures. A message signed with another key, not signed at
# all, or changed after signing is dropped unexecuted and unanswered, on shell and on control,
# and the kernel keeps working; the kernel signs what it sends.
import hashlib
import hmac
import json

import zmq
from jupyter_client.session import Session

import wire

DELIM = b"<IDS|MSG>"


class Signature(wire.KernelTestCase):

    def raw(self, channel):
        """A socket of our own on `channel`, connected as a client's would be."""
        sock = getattr(self.kernel.km, "connect_" + channel)()
        self.addCleanup(sock.close, 0)
        return sock

    def recv(self, sock):
        """The next message on a raw socket, its signature checked by the right key."""
        if not sock.poll(wire.TIMEOUT * 1000):
            raise AssertionError("no message within %ss" % wire.TIMEOUT)
        _, msg = self.kernel.listener().recv(sock, mode=zmq.NOBLOCK)
        return msg

    def frames(self, msg_type, content, how):
        """The frames of a request signed `how`: "forged" (another key), "unsigned" (an empty
        signature) or "tampered" (signed, then its content changed)."""
        good = self.kernel.kc.session
        if how == "forged":
            s = Session(key=b"kh-not-the-kernel-key", signature_scheme=good.signature_scheme)
        elif how == "unsigned":
            s = Session(key=b"", signature_scheme=good.signature_scheme)
        else:
            s = good
        frames = s.serialize(s.msg(msg_type, content))
        if how == "tampered":
            frames[-1] = json.dumps(dict(content, code=content["code"] + "  # changed")).encode()
        return frames

    def dropped_on_shell(self, how):
        k = self.kernel
        k.ok("kh_bad = 'absent'")
        sock = self.raw("shell")
        code = "kh_bad = %r" % how
        sock.send_multipart(self.frames("execute_request", {
            "code": code, "silent": False, "store_history": True, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True}, how))
        # A genuine request on the same connection: a kernel reads one connection in order, so
        # the first reply on this socket tells whether the bad one was answered.
        genuine = k.kc.session.msg("execute_request", {
            "code": "kh_bad", "silent": False, "store_history": True, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True})
        k.kc.session.send(sock, genuine)
        reply = self.recv(sock)
        self.assertEqual(reply["parent_header"]["msg_id"], genuine["header"]["msg_id"])
        self.assertEqual(reply["content"]["status"], "ok")
        msgs = k.iopub(genuine["header"]["msg_id"])
        result = [m for m in msgs if m["msg_type"] == "execute_result"]
        self.assertEqual(result[0]["content"]["data"]["text/plain"], "'absent'")
        self.assertEqual(k.value("1 + 1"), "2")

    def jupyter_signature_forged_ignored(self):
        self.dropped_on_shell("forged")

    def jupyter_signature_unsigned_ignored(self):
        self.dropped_on_shell("unsigned")

    def jupyter_signature_tampered_ignored(self):
        self.dropped_on_shell("tampered")

    def jupyter_signature_forged_control_ignored(self):
        # A forged shutdown_request on control does not shut the kernel down.
        k = self.kernel
        sock = self.raw("control")
        sock.send_multipart(self.frames("shutdown_request", {"restart": False}, "forged"))
        genuine = k.kc.session.msg("kernel_info_request", {})
        k.kc.session.send(sock, genuine)
        reply = self.recv(sock)
        self.assertEqual(reply["parent_header"]["msg_id"], genuine["header"]["msg_id"])
        self.assertEqual(reply["msg_type"], "kernel_info_reply")
        self.assertTrue(k.km.is_alive())
        self.assertEqual(k.value("1 + 1"), "2")

    def jupyter_signature_replies_signed(self):
        # The reply's signature is HMAC-SHA256 with the connection's key over header, parent
        # header, metadata and content, as hex.
        k = self.kernel
        sock = self.raw("shell")
        msg = k.kc.session.msg("kernel_info_request", {})
        k.kc.session.send(sock, msg)
        self.assertTrue(sock.poll(wire.TIMEOUT * 1000))
        frames = sock.recv_multipart()
        i = frames.index(DELIM)
        sig, parts = frames[i + 1], frames[i + 2:i + 6]
        self.assertEqual(k.km.session.signature_scheme, "hmac-sha256")
        want = hmac.new(k.km.session.key, b"".join(parts), hashlib.sha256).hexdigest()
        self.assertEqual(sig.decode(), want)
        self.assertEqual(json.loads(parts[1])["msg_id"], msg["header"]["msg_id"])
        k.iopub(msg["header"]["msg_id"])

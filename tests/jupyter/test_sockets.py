# test_sockets.py: the heartbeat (echo, also while a cell runs), a late IOPub subscriber with
# the iopub_welcome of JEP 65 (XPUB) when the kernel sends one, IOPub messages' signatures.
import wire


class Sockets(wire.KernelTestCase):

    def ping(self, payload):
        sock = self.raw("hb")
        sock.send(payload)
        self.assertTrue(sock.poll(wire.TIMEOUT * 1000), "no heartbeat echo")
        return sock.recv()

    def jupyter_heartbeat_echo(self):
        k = self.kernel
        self.assertTrue(k.km.is_alive())
        self.assertEqual(self.ping(b"kh-ping \x00\xff"), b"kh-ping \x00\xff")
        # jupyter_client's own heartbeat channel, started with the client's channels.
        self.assertTrue(k.kc.hb_channel.is_alive())
        self.assertTrue(k.kc.is_alive())

    def jupyter_heartbeat_while_busy(self):
        # The heartbeat answers while a cell runs (here blocked in input()): a busy kernel is
        # not a dead one.
        k = self.kernel
        msg_id = k.send_execute("input('hb? ')", allow_stdin=True)
        k.stdin(msg_id)
        self.assertEqual(self.ping(b"busy-ping"), b"busy-ping")
        k.kc.input("")
        self.assertEqual(k.reply(msg_id)["content"]["status"], "ok")
        k.iopub(msg_id)

    def subscriber(self):
        """A new IOPub subscriber and the messages it got once its subscription is known to
        work: it has seen the status of one of our requests. Returns (socket, messages seen)."""
        k = self.kernel
        sub = self.raw("iopub")  # subscribed to every topic (b"")
        seen = []
        for _ in range(50):
            msg_id = k.send("shell", "kernel_info_request")
            k.reply(msg_id)
            k.iopub(msg_id)
            # The kernel has published busy/idle for msg_id; the subscriber has them queued
            # once its subscription reached the kernel (a PUB drops messages for subscribers it
            # does not know yet, an XPUB as well, until the subscription arrives).
            while sub.poll(0 if seen else 200):
                seen.append(self.decode(sub.recv_multipart()))
            if msg_id in [m["parent_header"].get("msg_id") for m in seen]:
                return sub, seen
        raise AssertionError("the subscriber never got a message")

    def decode(self, frames):
        if not hasattr(self, "session"):
            self.session = self.kernel.listener()
        _, msg = self.session.feed_identities(frames)
        return self.session.deserialize(msg)  # checks the signature

    def jupyter_iopub_welcome(self):
        # JEP 65: an XPUB IOPub socket greets each new subscription with iopub_welcome
        # ({subscription}, no parent header). A kernel with a plain PUB (Debian's ipykernel
        # 6.17) sends none; either way, the subscriber then receives every message.
        sub, msgs = self.subscriber()
        welcome = [m for m in msgs if m["msg_type"] == "iopub_welcome"]
        for m in welcome:
            self.assertEqual(m["content"], {"subscription": ""})
            self.assertEqual(m["parent_header"], {})
        # The protocol does not say the welcome comes first: an XPUB registers a subscription
        # inside libzmq before the kernel reads it and answers, and what it publishes in
        # between reaches the new subscriber already. kernelhost applies each subscription and
        # sends its welcome before it publishes anything else (ZMQ_EVENTS before each send).
        if welcome and not self.kernel.is_ipykernel:
            self.assertEqual(msgs[0]["msg_type"], "iopub_welcome")
        # A cell run after the subscription is seen whole by the late subscriber.
        k = self.kernel
        msg_id = k.send_execute("print('late')")
        k.reply(msg_id)
        k.iopub(msg_id)
        got = []
        while not (got and wire.is_idle(got[-1])):
            self.assertTrue(sub.poll(wire.TIMEOUT * 1000))
            m = self.decode(sub.recv_multipart())
            if m["parent_header"].get("msg_id") == msg_id:
                got.append(m)
        self.assertEqual(wire.types(got), ["status", "execute_input", "stream", "status"])

    def jupyter_iopub_signed(self):
        # Every IOPub message: its topic (if any), the delimiter, an HMAC-SHA256 signature
        # with the connection's key over the four JSON frames.
        k = self.kernel
        sub, _ = self.subscriber()
        msg_id = k.send_execute("print('signed')")
        k.reply(msg_id)
        k.iopub(msg_id)
        n = 0
        while True:
            self.assertTrue(sub.poll(wire.TIMEOUT * 1000))
            frames = sub.recv_multipart()
            self.assert_signed(frames)
            m = self.decode(frames)
            if m["parent_header"].get("msg_id") == msg_id:
                n += 1
                if wire.is_idle(m):
                    break
        self.assertEqual(n, 4)

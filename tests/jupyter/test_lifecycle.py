# test_lifecycle.py: restart (km.restart_kernel(): a new process, new state, the counter from 1)
# and shutdown (shutdown_request on control answered by shutdown_reply; km.shutdown_kernel():
# the process exits by itself, with status 0, leaving no process behind). Each test has its own
# kernel, since each ends it.
import unittest

import psutil

import wire


class Lifecycle(unittest.TestCase):

    def setUp(self):
        self.kernel = wire.Kernel()
        self.addCleanup(self.close)

    def close(self):
        if self.kernel.km.has_kernel:
            self.kernel.close()
        else:
            self.kernel.kc.stop_channels()
            self.kernel.km.cleanup_resources()

    def assert_all_gone(self, procs):
        """Every process of `procs` (the kernel and what it started) has exited; none is left
        running, not even reparented."""
        _, alive = psutil.wait_procs(procs, timeout=wire.TIMEOUT)
        self.assertEqual([(p.pid, p.name()) for p in alive], [])

    def jupyter_restart_new_state(self):
        k = self.kernel
        k.ok("kh_before = 1")
        self.assertGreaterEqual(k.ok("kh_before += 1")[0]["execution_count"], 2)
        old = k.descendants()
        k.km.restart_kernel(now=False)
        self.assert_all_gone(old)
        self.assertNotEqual(k.km.provisioner.process.pid, old[0].pid)
        k.kc.wait_for_ready(timeout=wire.TIMEOUT)
        reply, msgs = k.execute("kh_before", stop_on_error=False)
        self.assertEqual(reply["content"]["ename"], "NameError")
        self.assertEqual(reply["content"]["execution_count"], 1)
        self.assertEqual(k.ok("1 + 1")[0]["execution_count"], 2)

    def jupyter_shutdown_reply(self):
        k = self.kernel
        procs = k.descendants()
        msg_id = k.send("control", "shutdown_request", {"restart": False})
        reply = k.reply(msg_id, "control")
        self.assertEqual(reply["msg_type"], "shutdown_reply")
        self.assertEqual(reply["content"]["status"], "ok")
        self.assertIs(reply["content"]["restart"], False)
        # The kernel exits by itself after its reply.
        self.assertEqual(k.proc.wait(timeout=wire.TIMEOUT), 0)
        self.assert_all_gone(procs)

    def jupyter_shutdown_kernel_manager(self):
        # jupyter_client's own clean shutdown (an interrupt first, then shutdown_request on
        # control, then up to shutdown_wait_time for the process to exit before SIGTERM).
        from jupyter_client.manager import _ShutdownStatus

        k = self.kernel
        procs = k.descendants()
        k.ok("kh_x = 1")
        k.km.shutdown_kernel(now=False)
        self.assertEqual(k.proc.returncode, 0)
        # jupyter_client did not have to terminate or kill it.
        self.assertEqual(k.km._shutdown_status, _ShutdownStatus.ShutdownRequest)
        self.assertFalse(k.km.is_alive())
        self.assert_all_gone(procs)

# test_interrupt.py: interrupting a running cell by interrupt_request on control (what
# interrupt_mode "message" makes jupyter_client send) and by SIGINT (km.interrupt_kernel() with
# a kernelspec whose interrupt_mode is "signal"); the kernel keeps its state either way.
import shutil
import tempfile

import wire

SLEEPER = "import time\nprint('sleeping', flush=True)\ntime.sleep(60)\nkh_woke = True"


class Sleeper(wire.KernelTestCase):
    """Helpers of the two classes below; no tests of its own."""

    def start_sleeper(self):
        """Starts a cell that sleeps 60 s; returns once it is inside the cell (its first
        output arrived)."""
        k = self.kernel
        k.ok("kh_kept = 'state'\nkh_woke = False")
        msg_id = k.send_execute(SLEEPER, stop_on_error=False)
        msgs = k.iopub(msg_id, until_idle=False, count=3)
        self.assertEqual(wire.types(msgs), ["status", "execute_input", "stream"])
        return msg_id

    def assert_interrupted(self, msg_id):
        k = self.kernel
        c = k.reply(msg_id)["content"]
        self.assertEqual((c["status"], c["ename"]), ("error", "KeyboardInterrupt"))
        msgs = k.iopub(msg_id)
        errors = [m["content"] for m in msgs if m["msg_type"] == "error"]
        self.assertEqual([e["ename"] for e in errors], ["KeyboardInterrupt"])
        # The kernel is still the same one, and the interrupt does not leak into the next cell.
        self.assertEqual(k.value("(kh_kept, kh_woke)"), "('state', False)")


class Interrupt(Sleeper):

    def assert_reply_ok(self, reply):
        # The protocol's interrupt_reply is {status: "ok"}. Debian's ipykernel 6.17 differs
        # from it, not kernelhost: it echoes the request's content ({}) as the reply's.
        if self.kernel.is_ipykernel:
            self.assertEqual(reply["content"], {})
        else:
            self.assertEqual(reply["content"], {"status": "ok"})

    def jupyter_interrupt_request_control(self):
        k = self.kernel
        msg_id = self.start_sleeper()
        irq = k.send("control", "interrupt_request")
        reply = k.reply(irq, "control")
        self.assertEqual(reply["msg_type"], "interrupt_reply")
        self.assert_reply_ok(reply)
        self.assert_interrupted(msg_id)

    def jupyter_interrupt_kernel_manager(self):
        # km.interrupt_kernel() does what the kernelspec's interrupt_mode says: kernelhost's
        # kernelspec says "message"; Debian's ipykernel kernelspec says nothing, i.e. "signal".
        k = self.kernel
        if not k.is_ipykernel:
            self.assertEqual(k.km.kernel_spec.interrupt_mode, "message")
        msg_id = self.start_sleeper()
        k.km.interrupt_kernel()
        self.assert_interrupted(msg_id)

    def jupyter_interrupt_idle_harmless(self):
        # An interrupt while nothing runs is answered and changes nothing.
        k = self.kernel
        k.ok("kh_idle = 1")
        irq = k.send("control", "interrupt_request")
        self.assert_reply_ok(k.reply(irq, "control"))
        self.assertEqual(k.value("kh_idle + 1"), "2")
        self.assertEqual(k.value("'still fine'"), "'still fine'")


class InterruptSignal(Sleeper):
    """A kernel started from a copy of the kernelspec under test with interrupt_mode "signal":
    km.interrupt_kernel() sends SIGINT to the kernel's process group."""

    @classmethod
    def setUpClass(cls):
        cls.where = tempfile.mkdtemp(prefix="khj-spec-")
        name, ksm = wire.signal_kernelspec(wire.KERNEL_NAME, cls.where)
        cls.kernel = wire.Kernel(name, spec_manager=ksm)

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.where, ignore_errors=True)

    def jupyter_interrupt_signal(self):
        k = self.kernel
        self.assertEqual(k.km.kernel_spec.interrupt_mode, "signal")
        msg_id = self.start_sleeper()
        k.km.interrupt_kernel()
        self.assert_interrupted(msg_id)
        # A second interrupt works as well as the first.
        msg_id = self.start_sleeper()
        k.km.interrupt_kernel()
        self.assert_interrupted(msg_id)

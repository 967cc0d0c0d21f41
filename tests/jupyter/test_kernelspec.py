# test_kernelspec.py: the kernelspec under test is one jupyter_client can start, and the kernel
# it starts runs the mode the kernelspec asked for (ctest passes the expected mode as
# $KH_JUPYTER_MODE: "worker" or "main_thread").
import os
import unittest

import wire


class KernelSpec(unittest.TestCase):

    def jupyter_kernelspec_install(self):
        from jupyter_client.kernelspec import KernelSpecManager

        spec = KernelSpecManager().get_kernel_spec(wire.KERNEL_NAME)
        self.assertEqual(spec.language, "python")
        self.assertTrue(spec.display_name)
        self.assertTrue(os.access(spec.argv[0], os.X_OK), spec.argv[0])
        i = spec.argv.index("{connection_file}")
        self.assertEqual(spec.argv[i - 1], "-f")
        if wire.KERNEL_NAME.startswith("kernelhost"):
            # kernelhost's kernelspec asks for interrupt_request messages; Debian's ipykernel
            # kernelspec leaves interrupt_mode at its default, "signal".
            self.assertEqual(spec.interrupt_mode, "message")
            self.assertEqual(os.path.basename(spec.argv[0]), "kernelhost-jupyter")

    def jupyter_kernelspec_runs_mode(self):
        # Where the cells' Python runs: in the kernel's own process (main_thread, and
        # ipykernel), or in a kernelhost-worker process below it (worker).
        k = wire.Kernel()
        try:
            pid = int(k.value("__import__('os').getpid()"))
            mode = "main_thread" if pid == k.proc.pid else "worker"
            if k.is_ipykernel:
                self.assertEqual(mode, "main_thread")
            want = os.environ.get("KH_JUPYTER_MODE")
            if want:
                self.assertEqual(mode, want)
            if mode == "worker":
                self.assertIn(pid, [p.pid for p in k.descendants()])
        finally:
            k.close()

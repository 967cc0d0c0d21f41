# test_kernelspec.py: the kernelspec under test is one jupyter_client can start, and the kernel
# it starts runs the mode the kernelspec asked for (ctest passes the expected mode as
# $KH_JUPYTER_MODE: "worker" or "main_thread").
import os
import unittest

import wire


class KernelSpec(unittest.TestCase):

    def jupyter_kernelspec_install(self):
        spec = wire.spec_manager_for().get_kernel_spec(wire.KERNEL_NAME)
        self.assertEqual(spec.language, "python")
        self.assertTrue(spec.display_name)
        self.assertTrue(os.access(spec.argv[0], os.X_OK), spec.argv[0])
        i = spec.argv.index("{connection_file}")
        self.assertEqual(spec.argv[i - 1], "-f")
        if wire.KERNEL_NAME.startswith("kernelhost"):
            # kernelhost's kernelspec asks for interrupt_request messages; Debian's ipykernel
            # kernelspec leaves interrupt_mode at its default, "signal".
            self.assertEqual(spec.interrupt_mode, "message")
            self.assertTrue(os.path.basename(spec.argv[0]).startswith("kernelhost-jupyter"))

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

    def jupyter_kernelspec_options_from_request(self):
        # A gateway passes a kernel's create request on as KERNEL_* variables (Enterprise
        # Gateway does): kernelhost-jupyter takes permissions, filesystem, limits, sandbox and
        # cwd for this kernel from KERNEL_KERNELHOST_OPTIONS, which its kernelspec names.
        if not wire.KERNEL_NAME.startswith("kernelhost"):
            self.skipTest("kernelhost-jupyter's own variable: the reference kernel has none")
        if os.environ.get("KH_JUPYTER_MODE") != "worker":
            self.skipTest("permissions and cwd are worker-mode options")
        spec = wire.spec_manager_for().get_kernel_spec(wire.KERNEL_NAME)
        self.assertEqual(spec.metadata["kernelhost"]["options_env"], "KERNEL_KERNELHOST_OPTIONS")
        os.environ["KERNEL_KERNELHOST_OPTIONS"] = (
            '{"permissions": {"read": ["/tmp"], "write": ["/tmp"]}, "cwd": "/tmp"}')
        try:
            k = wire.Kernel()
        finally:
            del os.environ["KERNEL_KERNELHOST_OPTIONS"]
        try:
            self.assertEqual(k.value("__import__('os').getcwd()"), "'/tmp'")
            k.ok("try:\n    open('/etc/hostname').read(); r = 0\n"
                 "except PermissionError:\n    r = 1")
            self.assertEqual(k.value("r"), "1")
        finally:
            k.close()

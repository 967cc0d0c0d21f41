#!/usr/bin/python3
"""run.py: runs the Jupyter wire-protocol suite (tests/jupyter/test_*.py) against a kernelspec.

    /usr/bin/python3 tests/jupyter/run.py                       # every test, $KH_JUPYTER_KERNEL
    /usr/bin/python3 tests/jupyter/run.py --kernel python3      # against ipykernel, the reference
    /usr/bin/python3 tests/jupyter/run.py jupyter_execute_iopub_order test_comm
    /usr/bin/python3 tests/jupyter/run.py --list

Names are test names (jupyter_<behaviour>) or module names (test_<area>); tests of one module
share one kernel. Every Jupyter, IPython and matplotlib file goes to a private home (--home, or
$KH_JUPYTER_HOME, else a temporary directory removed at exit): the real home is never touched.
Exit status: 0 when every test passed, 1 when one failed, 77 (ctest's skip) when Debian's
jupyter_client, pyzmq or psutil is missing.
"""
import argparse
import glob
import importlib
import os
import shutil
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PREFIX = "jupyter_"


def modules():
    return sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(HERE, "test_*.py")))


def collect(names):
    """A suite of the named tests (all when names is empty), grouped by class so that each class
    starts its kernel once."""
    loader = unittest.TestLoader()
    loader.testMethodPrefix = PREFIX
    wanted = set(names)
    suite = unittest.TestSuite()
    found = set()
    for mod_name in modules():
        mod = importlib.import_module(mod_name)
        for test in iterate(loader.loadTestsFromModule(mod)):
            name = test.id().rsplit(".", 1)[-1]
            if not wanted or name in wanted or mod_name in wanted:
                suite.addTest(test)
                found.add(name)
                found.add(mod_name)
    missing = wanted - found
    if missing:
        sys.exit("run.py: no such test: %s" % ", ".join(sorted(missing)))
    return suite


def iterate(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from iterate(t)
        else:
            yield t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kernel", help="kernelspec name (default $KH_JUPYTER_KERNEL or "
                    "kernelhost-test)")
    ap.add_argument("--home", help="private home for Jupyter/IPython files")
    ap.add_argument("--timeout", type=float, help="seconds one wait for a message may take")
    ap.add_argument("--list", action="store_true", help="print the test names and exit")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("names", nargs="*")
    args = ap.parse_args()

    try:
        import jupyter_client  # noqa: F401
        import psutil  # noqa: F401
        import zmq  # noqa: F401
    except ImportError as e:
        print("run.py: skipped, %s (Debian: python3-jupyter-client python3-zmq python3-psutil)"
              % e)
        return 77

    if args.kernel:
        os.environ["KH_JUPYTER_KERNEL"] = args.kernel
    if args.timeout:
        os.environ["KH_JUPYTER_TIMEOUT"] = str(args.timeout)
    home = args.home or os.environ.get("KH_JUPYTER_HOME")
    tmp = None
    if not home:
        tmp = home = tempfile.mkdtemp(prefix="kh-jupyter-home-")
    sys.path.insert(0, HERE)
    import wire

    wire.KERNEL_NAME = os.environ.get("KH_JUPYTER_KERNEL", wire.KERNEL_NAME)
    wire.TIMEOUT = float(os.environ.get("KH_JUPYTER_TIMEOUT", wire.TIMEOUT))
    wire.isolate(os.path.abspath(home))
    try:
        suite = collect(args.names)
        if args.list:
            for t in iterate(suite):
                print(t.id().rsplit(".", 1)[-1])
            return 0
        print("run.py: kernelspec %s, %d tests" % (wire.KERNEL_NAME, suite.countTestCases()),
              flush=True)
        result = unittest.TextTestRunner(verbosity=2 if args.verbose else 1).run(suite)
        return 0 if result.wasSuccessful() else 1
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

# _kh_importer: serves the embedded runtime modules (core/python/*.py, compiled into the binaries
# and exposed as the dict _kernelhost.sources) to the import system, so that no loose files have
# to be found next to the library. Runs once per process, in the thread that starts Python.
#
# Bootstrap: this module cannot be imported through the finder it defines. py-start.c compiles
# its embedded source directly, runs it as the module "_kh_importer" (already in sys.modules),
# and calls install(), which puts the finder on sys.meta_path and gives this module the
# same spec and loader as every module the finder serves afterwards (so tracebacks through it
# show its source like any other's).

import sys
from importlib.machinery import ModuleSpec

import _kernelhost

# The file name tracebacks show; there is no such file, linecache asks get_source() instead.
ORIGIN = "<kernelhost>/{}.py"


class EmbeddedFinder:
    """Finder and loader in one for the modules in _kernelhost.sources."""

    def find_spec(self, name, path, target=None):
        if name in _kernelhost.sources:
            return ModuleSpec(name, self, origin=ORIGIN.format(name))
        return None

    def create_module(self, spec):
        return None  # the default module object

    def exec_module(self, module):
        # Compiled at every start, since there is no file to cache bytecode beside. Measured on
        # these 2-vCPU machines: ~10 ms for the four modules every kernel imports, most of it
        # _kh_runtime (a build-time marshal of the code objects would save it).
        name = module.__spec__.name
        exec(compile(_kernelhost.sources[name], module.__spec__.origin, "exec"), module.__dict__)

    def get_source(self, name):
        return _kernelhost.sources.get(name)


def install():
    """Puts the finder ahead of the path-based finders (an embedded module wins over a file of
    the same name on sys.path) and adopts this module, which py-start.c ran by hand."""
    finder = EmbeddedFinder()
    sys.meta_path.insert(0, finder)
    me = sys.modules[__name__]
    me.__spec__ = finder.find_spec(__name__, None)
    me.__loader__ = finder

"""Calls into the program that hosts this kernel.

The host exposes functions to each of its kernels by name (kh_kernel_expose in C,
kernel:expose(name, fn) in Lua, kernel.expose(name, fn) in Node). From a cell:

    import kernelhost
    kernelhost.host.move(3, 1.5, 2)        # or kernelhost.call("move", 3, 1.5, 2)
    dir(kernelhost.host)                   # the names this kernel may call

A call waits for the host's answer and returns it; an interrupt stops the wait at once
(KeyboardInterrupt). Arguments and answers are None, bool, int (within 64 bits), float
(finite), str, bytes, list, tuple and dict (str keys): anything else raises TypeError before
the call leaves the kernel. A host function that fails raises HostError with the host's
message, as does a name the host has not exposed to this kernel. Nothing else of the host can
be reached from here.

kernelhost.StdinNotImplementedError is what input() raises in a cell that its request ran with
allow_stdin false (a front end that cannot answer input requests): IPython's class of that
name when IPython is installed, as in ipykernel, else the runtime's own (a NotImplementedError).
"""

import threading

import _kernelhost
import _kh_streams
import _kh_values

__all__ = ["call", "host", "HostError"]


class HostError(Exception):
    """The host function failed (str(error) is the host's message), the name is not exposed to
    this kernel, or the call was canceled (the kernel is restarting or being destroyed)."""


def _kernel():
    ctx = _kh_streams.current()
    if ctx is None:
        return None
    return ctx.kernel


def call(name, *args):
    """Calls the host function `name` with the positional arguments `args` and returns its
    answer. Raises HostError (the host's message; an unknown name), TypeError (a value with no
    host form), KeyboardInterrupt (the kernel was interrupted while it waited)."""
    if type(name) is not str:
        raise TypeError("the host function's name must be a str, not %s" % type(name).__name__)
    k = _kernel()
    if k is None:
        raise HostError("kernelhost.call(%r): this thread belongs to no kernel" % name)
    if not _kernelhost.host_exposed(k.sink, name):
        raise HostError("no host function named %r is exposed to this kernel" % name)
    payload, buffers = _kh_values.encode(args)
    # What the cell printed before the call reaches the host before the call does.
    k.out.flush()
    r = _kernelhost.hostcall(k.sink, k.gate, threading.get_ident() == k.thread_ident,
                             k.host_thread, name, payload, buffers)
    if r is None:  # withdrawn meanwhile
        raise HostError("no host function named %r is exposed to this kernel" % name)
    kind, text, bufs = r
    if kind == 0:
        return _kh_values.decode(text, bufs)
    raise HostError(text)


class _Host:
    """kernelhost.host.NAME(*args) calls the host function NAME; dir() lists what is exposed."""

    __slots__ = ()

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        k = _kernel()
        if k is None or not _kernelhost.host_exposed(k.sink, name):
            raise AttributeError("no host function named %r is exposed to this kernel" % name)

        def host_function(*args, **kwargs):
            if kwargs:
                raise TypeError("host function %r takes positional arguments only (got %s=)" %
                                (name, next(iter(kwargs))))
            return call(name, *args)

        host_function.__name__ = host_function.__qualname__ = name
        host_function.__doc__ = "The host function %r (kernelhost.call(%r, *args))." % (name, name)
        return host_function

    def __dir__(self):
        k = _kernel()
        return sorted(_kernelhost.host_names(k.sink)) if k is not None else []

    def __repr__(self):
        return "<kernelhost.host: %s>" % (", ".join(self.__dir__()) or "nothing exposed")


host = _Host()


def __getattr__(name):
    # Looked up when first asked for: finding IPython's class imports IPython (~0.3 s).
    if name == "StdinNotImplementedError":
        import _kh_runtime
        return _kh_runtime.stdin_error()
    raise AttributeError("module 'kernelhost' has no attribute %r" % name)

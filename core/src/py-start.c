/* py-start.c: starts the embedded interpreter, once per process, for both of its users: the host
 * library (py-host.c's service thread, for main_thread kernels) and kernelhost-worker (its main
 * thread). Owns the interpreter's configuration and the bootstrap of the embedded runtime.
 * Thread: the one thread that calls kh__py_start(); it holds the GIL when the call succeeds. */
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>

#include "py-internal.h"

#if defined(__SANITIZE_ADDRESS__)
#define KH_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KH_ASAN 1
#endif
#endif

/* Node and Lua load native modules RTLD_LOCAL, and so libkernelhost and the libpython it needs:
 * C extensions (numpy's _multiarray_umath) then fail on undefined Py* symbols. Reopening the
 * library that defines them with RTLD_GLOBAL fixes that for the life of the process (the handle
 * is deliberately kept). In the worker executable libpython is already global: a no-op. */
static void promote_libpython(void) {
  Dl_info info;
  if (dladdr((void *)&Py_InitializeFromConfig, &info) && info.dli_fname != NULL)
    (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
}

/* A worker's signals start as a Python program's would, whatever it inherited. A worker spawned
 * from a background job (or by CI, without a terminal) inherits SIGINT as ignored, and CPython
 * then leaves it so: such a worker could never be interrupted. So SIGINT goes back to its
 * default, the mask is emptied (libuv empties it when it spawns; another launcher may not), and
 * _kh_worker.install_sigint() later installs the runtime's handler explicitly, so that does not
 * depend on what CPython decided at start-up either. SIGPIPE is ignored, as CPython would: a
 * frame written to a host that is gone fails with EPIPE, and the worker then exits on its own. */
static void reset_signals(void) {
  struct sigaction sa;
  sigset_t none;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = SIG_DFL;
  sigaction(SIGINT, &sa, NULL);
  sa.sa_handler = SIG_IGN;
  sigaction(SIGPIPE, &sa, NULL);
  sigemptyset(&none);
  pthread_sigmask(SIG_SETMASK, &none, NULL); /* still the only thread */
}

static PyStatus preinit(void) {
  PyPreConfig pre;
  PyPreConfig_InitIsolatedConfig(&pre);
  /* Kernels speak UTF-8 whatever the host's locale: the protocol and every binding do. */
  pre.utf8_mode = 1;
#ifdef KH_ASAN
  /* PYTHONMALLOC=malloc, which the isolated config would not read: CPython's own allocator hides
   * errors from AddressSanitizer and leaves LeakSanitizer blind to its arenas. */
  pre.allocator = PYMEM_ALLOCATOR_MALLOC;
#endif
  return Py_PreInitialize(&pre);
}

/* Which PYTHON* variables are honoured: none of the process's environment. The host's
 * environment belongs to the host application (Node, Lua, an editor), and a PYTHONHOME,
 * PYTHONPATH or PYTHONSTARTUP set for some other Python would break or silently change every
 * kernel; a worker inherits that environment, so it is ignored there too. What a kernel may set
 * on purpose is its own `env.PYTHONPATH`, applied by _kh_worker.open_kernel() (a pooled worker
 * starts before its kernel's options exist). Isolation also turns off user site-packages; `site`
 * itself still runs, or Debian's dist-packages (numpy, matplotlib, pandas) would not be found. */
static PyStatus init(kh__py_role_t role) {
  PyConfig config;
  PyStatus st;
  PyConfig_InitIsolatedConfig(&config);
  config.site_import = 1;
  config.write_bytecode = 0; /* the runtime's own directories may be read-only (sandbox) */
  config.parse_argv = 0;
  /* The host's signals belong to the host: its interpreter installs no handler (and could not
   * run one, off the main thread). A worker exists to be interrupted by SIGINT. */
  config.install_signal_handlers = role == KH__PY_WORKER;
  /* A worker's fds 1 and 2 are captured pipes: unbuffered, so what C code and Python write there
   * keeps its order. The host keeps buffering; its sys.stdout is routed per kernel anyway. */
  config.buffered_stdio = role != KH__PY_WORKER;
#ifdef KH_PYTHON_EXECUTABLE
  /* Debian's CPython locates its stdlib and dist-packages from here, whatever the host binary. */
  st = PyConfig_SetBytesString(&config, &config.program_name, KH_PYTHON_EXECUTABLE);
  if (!PyStatus_Exception(st)) st = Py_InitializeFromConfig(&config);
#else
  st = Py_InitializeFromConfig(&config);
#endif
  PyConfig_Clear(&config);
  return st;
}

/* The finder that serves the embedded modules (_kh_importer) cannot be imported through itself:
 * its embedded source is compiled here and run as a module registered in sys.modules, then its
 * install() puts the finder on sys.meta_path and adopts the module. Needs the GIL. */
static int load_importer(void) {
  const kh__source_t *s;
  PyObject *code, *mod, *r; /* code and r new, mod borrowed from sys.modules */
  for (s = kh__runtime_sources; s->name && strcmp(s->name, "_kh_importer") != 0; s++) {
  }
  if (s->name == NULL) {
    PyErr_SetString(PyExc_ImportError, "_kh_importer is not embedded (core/sources.txt)");
    return -1;
  }
  /* The file name is the one _kh_importer.ORIGIN gives every module it serves. */
  code = Py_CompileString(s->source, "<kernelhost>/_kh_importer.py", Py_file_input);
  if (code == NULL) return -1;
  mod = PyImport_AddModule("_kh_importer");
  if (mod == NULL ||
      PyDict_SetItemString(PyModule_GetDict(mod), "__builtins__", PyEval_GetBuiltins()) < 0) {
    Py_DECREF(code);
    return -1;
  }
  r = PyEval_EvalCode(code, PyModule_GetDict(mod), PyModule_GetDict(mod));
  Py_DECREF(code);
  if (r == NULL) return -1;
  Py_DECREF(r);
  r = PyObject_CallMethod(mod, "install", NULL);
  Py_XDECREF(r);
  return r == NULL ? -1 : 0;
}

/* Imports name and calls its function fn with one argument (or none when arg is NULL). */
static int call_module(const char *name, const char *fn, PyObject *arg) {
  PyObject *mod = PyImport_ImportModule(name), *r = NULL; /* both new */
  if (mod != NULL)
    r = arg != NULL ? PyObject_CallMethod(mod, fn, "O", arg) : PyObject_CallMethod(mod, fn, NULL);
  Py_XDECREF(mod);
  Py_XDECREF(r);
  return r == NULL ? -1 : 0;
}

int kh__py_start(const kh__py_start_t *how, char *errmsg) {
  int worker = how->role == KH__PY_WORKER;
  PyStatus st;
  promote_libpython(); /* before anything can import a C extension */
  if (worker) reset_signals();
  st = preinit();
  if (PyStatus_Exception(st)) {
    kh__set_err(errmsg, "Python pre-initialisation failed: %s", st.err_msg ? st.err_msg : "?");
    return KH_EPYTHON;
  }
  if (PyImport_AppendInittab("_kernelhost", kh__py_init_module) < 0) {
    kh__set_err(errmsg, "cannot register the _kernelhost module");
    return KH_EPYTHON;
  }
  kh__py_emit_hook = how->emit;
  kh__py_interrupt_hook = how->interrupt_landed;
  kh__py_hostcall_hook = how->hostcall;
  st = init(how->role);
  if (PyStatus_Exception(st)) {
    kh__set_err(errmsg, "Python initialisation failed: %s", st.err_msg ? st.err_msg : "?");
    return KH_EPYTHON;
  }
  /* The runtime's process-wide set-up (routed streams, input, threads, display hooks); in a
   * worker, signals work, so time.sleep is left alone and the SIGINT handler goes in. */
  if (load_importer() < 0 || call_module("_kh_runtime", "init", worker ? Py_True : Py_False) < 0 ||
      (worker && call_module("_kh_worker", "install_sigint", NULL) < 0)) {
    char buf[KH__ERRMSG_MAX - 64];
    kh__py_describe_error(buf, sizeof(buf));
    kh__set_err(errmsg, "loading the kernelhost runtime failed: %s", buf);
    PyEval_SaveThread(); /* nothing will run Python now; leave no thread waiting for the GIL */
    return KH_EPYTHON;
  }
  return 0;
}

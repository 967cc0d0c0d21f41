/* py-module.c: the builtin module _kernelhost through which the Python runtime reaches C
 * (emit, async_raise, clear_async_exc), the loader of the embedded runtime sources, and the
 * interpreter configuration shared by the host library and the worker. */
#include <dlfcn.h>
#include <string.h>

#include "py-internal.h"

kh__py_emit_fn kh__py_emit_hook;
void (*kh__py_interrupt_hook)(void);

static int type_from_name(const char *name) {
  int t = kh_event_type_from_name(name);
  return t > 0 ? t : -1;
}

static PyObject *py_emit(PyObject *self, PyObject *args) {
  PyObject *sink;
  const char *exec_id, *kind;
  Py_buffer payload;
  int type, rc;
  (void)self;
  if (!PyArg_ParseTuple(args, "Ossy*:emit", &sink, &exec_id, &kind, &payload)) return NULL;
  type = type_from_name(kind);
  if (type < 0) {
    PyBuffer_Release(&payload);
    return PyErr_Format(PyExc_ValueError, "unknown event type %s", kind);
  }
  rc = kh__py_emit_hook ? kh__py_emit_hook(sink, exec_id, type, payload.buf, (size_t)payload.len)
                        : 0;
  PyBuffer_Release(&payload);
  if (rc == KH_ENOMEM) return PyErr_NoMemory();
  return PyBool_FromLong(rc == 0);
}

static PyObject *py_async_raise(PyObject *self, PyObject *args) {
  unsigned long ident;
  PyObject *exc;
  (void)self;
  if (!PyArg_ParseTuple(args, "kO:async_raise", &ident, &exc)) return NULL;
  return PyLong_FromLong(PyThreadState_SetAsyncExc(ident, exc));
}

static PyObject *py_clear_async_exc(PyObject *self, PyObject *noargs) {
  (void)self;
  (void)noargs;
  PyThreadState_SetAsyncExc(PyThread_get_thread_ident(), NULL);
  Py_RETURN_NONE;
}

static PyObject *py_note_interrupt(PyObject *self, PyObject *noargs) {
  (void)self;
  (void)noargs;
  if (kh__py_interrupt_hook != NULL) kh__py_interrupt_hook();
  Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"note_interrupt", py_note_interrupt, METH_NOARGS, "the SIGINT handler ran (workers)"},
    {"emit", py_emit, METH_VARARGS, "emit(sink, exec_id, type, payload_json_bytes)"},
    {"async_raise", py_async_raise, METH_VARARGS, "async_raise(thread_ident, exc_type)"},
    {"clear_async_exc", py_clear_async_exc, METH_NOARGS, "drop this thread's pending async exc"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT,
                                        "_kernelhost",
                                        "kernelhost's bridge between the runtime and C.",
                                        -1,
                                        methods,
                                        NULL,
                                        NULL,
                                        NULL,
                                        NULL};

PyObject *kh__py_init_module(void) {
  PyObject *m = PyModule_Create(&module_def);
  PyObject *sources = NULL;
  const kh__source_t *s;
  if (m == NULL) return NULL;
  sources = PyDict_New();
  if (sources == NULL) goto fail;
  for (s = kh__runtime_sources; s->name; s++) {
    PyObject *text = PyUnicode_DecodeUTF8(s->source, (Py_ssize_t)s->len, "strict");
    if (text == NULL || PyDict_SetItemString(sources, s->name, text) < 0) {
      Py_XDECREF(text);
      goto fail;
    }
    Py_DECREF(text);
  }
  if (PyModule_AddObject(m, "sources", sources) < 0) goto fail;
  sources = NULL; /* the module owns it now */
  if (kh__py_stream_add_types(m) < 0) goto fail;
  return m;
fail:
  Py_XDECREF(sources);
  Py_DECREF(m);
  return NULL;
}

/* A meta-path finder serving the embedded runtime modules, so no loose files are needed. */
static const char bootstrap[] =
    "import sys, importlib.machinery, _kernelhost\n"
    "class _KhEmbedded:\n"
    "    def find_spec(self, name, path, target=None):\n"
    "        if name in _kernelhost.sources:\n"
    "            return importlib.machinery.ModuleSpec(name, self,\n"
    "                origin='<kernelhost>/' + name + '.py')\n"
    "        return None\n"
    "    def create_module(self, spec):\n"
    "        return None\n"
    "    def exec_module(self, module):\n"
    "        name = module.__spec__.name\n"
    "        code = compile(_kernelhost.sources[name], module.__spec__.origin, 'exec')\n"
    "        exec(code, module.__dict__)\n"
    "    def get_source(self, name):\n"
    "        return _kernelhost.sources.get(name)\n"
    "sys.meta_path.insert(0, _KhEmbedded())\n";

int kh__py_load_runtime(int signals_work) {
  PyObject *globals, *r, *mod;
  globals = PyDict_New();
  if (globals == NULL) return -1;
  if (PyDict_SetItemString(globals, "__builtins__", PyEval_GetBuiltins()) < 0) {
    Py_DECREF(globals);
    return -1;
  }
  r = PyRun_String(bootstrap, Py_file_input, globals, globals);
  Py_DECREF(globals);
  if (r == NULL) return -1;
  Py_DECREF(r);
  mod = PyImport_ImportModule("_kh_runtime");
  if (mod == NULL) return -1;
  r = PyObject_CallMethod(mod, "init", "O", signals_work ? Py_True : Py_False);
  Py_DECREF(mod);
  if (r == NULL) return -1;
  Py_DECREF(r);
  return 0;
}

void kh__py_describe_error(char *buf, size_t n) {
  PyObject *type, *value, *tb, *s = NULL;
  const char *text = NULL;
  PyErr_Fetch(&type, &value, &tb);
  PyErr_NormalizeException(&type, &value, &tb);
  if (value != NULL) s = PyObject_Str(value);
  if (s != NULL) text = PyUnicode_AsUTF8(s);
  if (text == NULL) PyErr_Clear();
  snprintf(buf, n, "%s: %s", type ? ((PyTypeObject *)type)->tp_name : "error",
           text ? text : "(no message)");
  Py_XDECREF(s);
  Py_XDECREF(type);
  Py_XDECREF(value);
  Py_XDECREF(tb);
}

char *kh__py_error_reply(const char *ename, const char *evalue, size_t *out_len) {
  json_t *o = json_pack("{s:s, s:i, s:{s:s, s:s, s:[s]}}", "status", "error", "execution_count", 0,
                        "error", "ename", ename, "evalue", evalue, "traceback", evalue);
  char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  if (s && out_len) *out_len = strlen(s);
  return s;
}

void kh__py_promote_libpython(void) {
  Dl_info info;
  if (dladdr((void *)&Py_InitializeFromConfig, &info) && info.dli_fname != NULL) {
    /* The handle is deliberately kept: libpython stays global for the process's life. */
    (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
  }
}

PyStatus kh__py_config(PyConfig *config) {
  PyStatus st;
  /* Isolated: PYTHONPATH, PYTHONHOME, PYTHONSTARTUP... of the host do not leak in, no signal
   * handlers are installed in the host, and user site-packages are off. `site` still runs, so
   * Debian's dist-packages (numpy, matplotlib, pandas) are found. */
  PyConfig_InitIsolatedConfig(config);
  config->site_import = 1;
  config->install_signal_handlers = 0;
  config->write_bytecode = 0;
  config->parse_argv = 0;
  config->buffered_stdio = 1;
#ifdef KH_PYTHON_EXECUTABLE
  st = PyConfig_SetBytesString(config, &config->program_name, KH_PYTHON_EXECUTABLE);
  if (PyStatus_Exception(st)) return st;
#endif
  st = PyStatus_Ok();
  return st;
}

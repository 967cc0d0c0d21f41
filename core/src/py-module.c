/* py-module.c: the builtin module _kernelhost through which the Python runtime reaches C (emit,
 * note_interrupt, realpath, the Gate of interrupts (py-gate.c), the stream types (py-stream.c) and the
 * embedded sources that _kh_importer serves), and the error helpers the py-*.c files share.
 * Thread: any thread holding the GIL. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "py-internal.h"

kh__py_emit_fn kh__py_emit_hook;
void (*kh__py_interrupt_hook)(void);

/* The deepest nesting an event payload may have: the host parses events and replies with
 * jansson (and checks worker frames against the same JSON_PARSER_MAX_DEPTH, frame.c), and a
 * reply or a worker's frame wraps the payload in up to three more levels. Python nests that deep
 * only when a cell raised sys.setrecursionlimit; past it, the host could not read the event
 * (a worker would be killed for a bad frame), so emit() refuses it with a ValueError instead,
 * which the cell reports as its error. */
#define PAYLOAD_MAX_DEPTH (JSON_PARSER_MAX_DEPTH - 8)

/* 1 when the JSON text p[0..n) nests deeper than max. Strings are skipped with memchr (a
 * base64 image is one long string), so the scan costs little beside the encoding. */
static int nests_deeper(const char *p, size_t n, size_t max) {
  const char *end = p + n;
  size_t depth = 0;
  while (p < end) {
    char c = *p++;
    if (c == '"') {
      for (;;) {
        const char *q = memchr(p, '"', (size_t)(end - p));
        const char *b = q;
        if (q == NULL) return 0;
        while (b > p && b[-1] == '\\') b--; /* an even run of backslashes ends the string */
        p = q + 1;
        if (((q - b) & 1) == 0) break;
      }
    } else if (c == '[' || c == '{') {
      if (++depth > max) return 1;
    } else if (c == ']' || c == '}') {
      depth--;
    }
  }
  return 0;
}

/* The runtime names events by their Jupyter message type; the C side carries the number. */
static int type_from_name(const char *name) {
  int t = kh_event_type_from_name(name);
  return t > 0 ? t : -1;
}

/* Reads emit()'s `buffers` (and a reply's, py-host.c and the worker): None, or a sequence of (path, bytes-like) pairs. Fills views[] (at
 * most KH__FRAME_BUFS_MAX) with pointers into the objects, which stay alive in `held` (a
 * list) and are released by the caller. Returns the count, or -1 with a Python error set. */
Py_ssize_t kh__py_read_buffers(PyObject *seq, kh_buffer_t *views, Py_buffer *held) {
  PyObject *fast;
  Py_ssize_t i, n;
  if (seq == NULL || seq == Py_None) return 0;
  fast = PySequence_Fast(seq, "emit() buffers must be a sequence of (path, bytes) pairs");
  if (fast == NULL) return -1;
  n = PySequence_Fast_GET_SIZE(fast);
  if (n > KH__FRAME_BUFS_MAX) {
    Py_DECREF(fast);
    PyErr_Format(PyExc_ValueError, "an event carries at most %d binary values, not %zd",
                 KH__FRAME_BUFS_MAX, n);
    return -1;
  }
  for (i = 0; i < n; i++) {
    PyObject *pair = PySequence_Fast_GET_ITEM(fast, i), *path;
    if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 ||
        !PyUnicode_Check(path = PyTuple_GET_ITEM(pair, 0))) {
      PyErr_SetString(PyExc_TypeError, "emit() buffers must be (str path, bytes) pairs");
      goto fail;
    }
    if ((views[i].path = PyUnicode_AsUTF8(path)) == NULL) goto fail;
    if (PyObject_GetBuffer(PyTuple_GET_ITEM(pair, 1), &held[i], PyBUF_CONTIG_RO) != 0) goto fail;
    views[i].data = held[i].buf;
    views[i].len = (size_t)held[i].len;
  }
  Py_DECREF(fast); /* the pairs' items stay alive: the caller's sequence holds them */
  return n;
fail:
  while (i-- > 0) PyBuffer_Release(&held[i]);
  Py_DECREF(fast);
  return -1;
}

Py_ssize_t kh__py_reply_parts(PyObject *r, const char **data, size_t *len, kh_buffer_t *views,
                              Py_buffer *held) {
  PyObject *bufs = NULL;
  Py_ssize_t nb;
  if (r != NULL && PyTuple_Check(r) && PyTuple_GET_SIZE(r) == 2) {
    bufs = PyTuple_GET_ITEM(r, 1);
    r = PyTuple_GET_ITEM(r, 0);
  }
  if (r == NULL || !PyBytes_Check(r)) return -1;
  if ((nb = kh__py_read_buffers(bufs, views, held)) < 0) {
    PyErr_Clear();
    return -1;
  }
  *data = PyBytes_AS_STRING(r);
  *len = (size_t)PyBytes_GET_SIZE(r);
  return nb;
}

/* emit(sink, exec_id, type, payload, buffers=None): payload is the event's JSON, already encoded
 * by the runtime (bytes), so it crosses into C without a second encoding; buffers are its binary
 * values as (JSON Pointer, bytes) pairs, null in the payload (kh_buffer_t). Returns False when
 * the event was not delivered (the kernel's sink has closed: a thread the cell left running
 * outlived its kernel); raises ValueError for a payload nested too deeply (PAYLOAD_MAX_DEPTH),
 * MemoryError when memory ran out. */
static PyObject *py_emit(PyObject *self, PyObject *args) {
  PyObject *sink_obj, *bufs_obj = Py_None;
  kh__sink_t *sink = NULL;
  const char *exec_id, *kind;
  Py_buffer payload;
  kh_buffer_t views[KH__FRAME_BUFS_MAX];
  Py_buffer held[KH__FRAME_BUFS_MAX];
  Py_ssize_t nb, i;
  int type, rc;
  (void)self;
  if (!PyArg_ParseTuple(args, "Ossy*|O:emit", &sink_obj, &exec_id, &kind, &payload, &bufs_obj))
    return NULL;
  type = type_from_name(kind);
  if (type < 0) {
    PyBuffer_Release(&payload);
    return PyErr_Format(PyExc_ValueError, "unknown event type %s", kind);
  }
  if (nests_deeper(payload.buf, (size_t)payload.len, PAYLOAD_MAX_DEPTH)) {
    PyBuffer_Release(&payload);
    return PyErr_Format(PyExc_ValueError,
                        "%s payload nests deeper than %d levels, the most kernelhost carries", kind,
                        PAYLOAD_MAX_DEPTH);
  }
  if ((nb = kh__py_read_buffers(bufs_obj, views, held)) < 0) {
    PyBuffer_Release(&payload);
    return NULL;
  }
  /* A host kernel's sink travels as a capsule made by py-host.c; a worker's Kernel has None. */
  if (sink_obj != Py_None && (sink = PyCapsule_GetPointer(sink_obj, "kernelhost.sink")) == NULL) {
    PyErr_Clear();
    rc = KH_EINVAL;
  } else {
    rc = kh__py_emit_hook ? kh__py_emit_hook(sink, exec_id, type, payload.buf,
                                             (size_t)payload.len, views, (size_t)nb)
                          : 0;
  }
  for (i = 0; i < nb; i++) PyBuffer_Release(&held[i]);
  PyBuffer_Release(&payload);
  if (rc == KH_ENOMEM) return PyErr_NoMemory();
  return PyBool_FromLong(rc == 0);
}

static PyObject *py_note_interrupt(PyObject *self, PyObject *noargs) {
  (void)self;
  (void)noargs;
  if (kh__py_interrupt_hook != NULL) kh__py_interrupt_hook();
  Py_RETURN_NONE;
}

/* realpath(path) -> str, or None when the C library cannot resolve it (a component missing,
 * too long): the caller then takes os.path.realpath's answer, which also resolves a path whose
 * tail does not exist. The sandbox's policy resolves a score of paths while a kernel opens,
 * and posixpath's pure-Python walk costs ~15 us a path against ~2 us here. */
static PyObject *py_realpath(PyObject *self, PyObject *arg) {
  PyObject *bytes = NULL, *out;
  char buf[PATH_MAX];
  (void)self;
  if (!PyUnicode_FSConverter(arg, &bytes)) return NULL;
  if (realpath(PyBytes_AS_STRING(bytes), buf) == NULL) {
    Py_DECREF(bytes);
    Py_RETURN_NONE;
  }
  Py_DECREF(bytes);
  out = PyUnicode_DecodeFSDefault(buf);
  return out;
}

static PyMethodDef methods[] = {
    {"note_interrupt", py_note_interrupt, METH_NOARGS, "the SIGINT handler ran (workers)"},
    {"realpath", py_realpath, METH_O, "realpath(path): the C library's, or None"},
    {"emit", py_emit, METH_VARARGS, "emit(sink, exec_id, type, payload_json_bytes, buffers=None)"},
    {NULL, NULL, 0, NULL}};

/* Single-phase initialisation (m_size -1): the module lives as long as the one interpreter,
 * which is never finalised, and it is never loaded into a sub-interpreter. */
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
  /* The embedded runtime as {module name: source text}, for _kh_importer: decoded once here
   * (about 50 KB in all) so that the finder stays plain Python. */
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
  if (kh__py_stream_add_types(m) < 0 || kh__py_gate_add_type(m) < 0 ||
      kh__py_hostcall_add_functions(m) < 0)
    goto fail;
  return m;
fail:
  Py_XDECREF(sources);
  Py_DECREF(m);
  return NULL;
}

/* "Type: message", for error texts that end up in KH_EPYTHON messages and fallback replies,
 * which have no room for a traceback. */
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

PyObject *kh__py_strings(const json_t *array) {
  PyObject *t;
  size_t i;
  if (array == NULL) return Py_NewRef(Py_None);
  t = PyTuple_New((Py_ssize_t)json_array_size(array));
  for (i = 0; t != NULL && i < json_array_size(array); i++) {
    const json_t *e = json_array_get(array, i);
    PyObject *s = json_is_string(e)
                      ? PyUnicode_DecodeUTF8(json_string_value(e),
                                             (Py_ssize_t)json_string_length(e), "strict")
                      : PyErr_Format(PyExc_TypeError, "not a string");
    if (s == NULL)
      Py_CLEAR(t);
    else
      PyTuple_SET_ITEM(t, (Py_ssize_t)i, s);
  }
  return t;
}

/* The same reply shape the runtime gives a failed cell, for failures outside it (the runtime
 * itself raised, or returned no reply), so hosts need no second case. */
char *kh__py_error_reply(const char *ename, const char *evalue, size_t *out_len) {
  json_t *o = json_pack("{s:s, s:i, s:{s:s, s:s, s:[s]}}", "status", "error", "execution_count", 0,
                        "error", "ename", ename, "evalue", evalue, "traceback", evalue);
  char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  if (s && out_len) *out_len = strlen(s);
  return s;
}

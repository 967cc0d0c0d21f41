/* py-stream.c: the hot path of stdout/stderr capture, in C: _kernelhost.OutBuffer (a kernel's
 * pending stream batch) and _kernelhost.Writer (the write() of the routed sys.stdout/stderr,
 * core/python/_kh_streams.py): one batch of one stream for one request, flushed on size, by the
 * timer, before displays and at cell end, never reordered, cut at maxOutputBytes.
 * Thread: any thread that holds the GIL: kernel threads, threads a cell starts, and
 * _kh_streams' flusher thread; each OutBuffer's own lock orders them. */
#include "py-internal.h"

#include <structmember.h>

/* Flush a batch once it holds this many characters (the same figure as
 * _kh_streams.FLUSH_CHARS); smaller batches wait for the timer (FLUSH_INTERVAL there). Batching
 * is what made 100,000 printed lines cost ~55 ms instead of ~180 ms (bench/README.md). */
#define FLUSH_CHARS (64 * 1024)

typedef struct {
  PyObject_HEAD PyObject *emit; /* callable(exec_id, "stream", {"name", "text"}) */
  PyObject *schedule;           /* callable(buffer): arm the timed flush */
  /* Guards every field below. Held across the emit of a batch, so that a flush by the timer
   * thread and a write by the kernel thread can never swap two batches' order. */
  PyThread_type_lock lock;
  PyObject *parts; /* list of str */
  Py_ssize_t size;
  PyObject *name;    /* str or NULL */
  PyObject *exec_id; /* str or NULL */
  int scheduled;
  PyObject *limit;    /* None or int: maxOutputBytes (characters) per cell */
  Py_ssize_t written; /* characters emitted this cell; reset by start_cell() */
  int truncated;      /* this cell hit the limit: its marker is out, the rest is dropped */
} outbuf_t;

static PyTypeObject outbuf_type;

static void outbuf_lock(outbuf_t *b) {
  if (!PyThread_acquire_lock(b->lock, NOWAIT_LOCK)) {
    /* Never wait for the lock while holding the GIL: its holder may need the GIL to finish. */
    Py_BEGIN_ALLOW_THREADS PyThread_acquire_lock(b->lock, WAIT_LOCK);
    Py_END_ALLOW_THREADS
  }
}

static int same_str(PyObject *a, PyObject *b) {
  if (a == b) return 1;
  if (a == NULL || b == NULL) return 0;
  return PyUnicode_Compare(a, b) == 0;
}

/* Emits the batch (lock held). Returns 0, or -1 with a Python error set. */
static int outbuf_flush_locked(outbuf_t *b) {
  PyObject *text = NULL, *empty = NULL, *payload = NULL, *r = NULL;
  Py_ssize_t n;
  int rc = -1;
  b->scheduled = 0;
  if (PyList_GET_SIZE(b->parts) == 0) return 0;
  /* Parts are joined only at flush: one allocation per batch instead of one per write. */
  empty = PyUnicode_New(0, 0);
  if (empty == NULL) return -1;
  text = PyUnicode_Join(empty, b->parts);
  Py_DECREF(empty);
  if (text == NULL) return -1;
  if (PyList_SetSlice(b->parts, 0, PyList_GET_SIZE(b->parts), NULL) < 0) goto done;
  b->size = 0;
  if (b->limit != Py_None) {
    Py_ssize_t limit = PyLong_AsSsize_t(b->limit), room;
    if (limit == -1 && PyErr_Occurred()) goto done;
    if (b->truncated) {
      rc = 0;
      goto done;
    }
    room = limit - b->written;
    n = PyUnicode_GET_LENGTH(text);
    if (n > room) {
      PyObject *head = PyUnicode_Substring(text, 0, room > 0 ? room : 0);
      PyObject *cut;
      if (head == NULL) goto done;
      cut = PyUnicode_FromFormat(
          "%U\n[kernelhost: output truncated after %zd characters (maxOutputBytes)]\n", head,
          limit);
      Py_DECREF(head);
      if (cut == NULL) goto done;
      Py_SETREF(text, cut);
      b->truncated = 1;
    }
  }
  b->written += PyUnicode_GET_LENGTH(text);
  payload = Py_BuildValue("{s:O, s:O}", "name", b->name ? b->name : Py_None, "text", text);
  if (payload == NULL) goto done;
  r = PyObject_CallFunction(b->emit, "OsO", b->exec_id ? b->exec_id : Py_None, "stream", payload);
  if (r == NULL) goto done;
  rc = 0;
done:
  Py_XDECREF(r);
  Py_XDECREF(payload);
  Py_XDECREF(text);
  return rc;
}

/* The write path shared by OutBuffer.write and Writer.__call__. Steals nothing. */
static int outbuf_write(outbuf_t *b, PyObject *name, PyObject *exec_id, PyObject *text) {
  int schedule = 0, rc = 0;
  outbuf_lock(b);
  /* A batch holds one stream of one request: a write to the other stream, or for another
   * request, flushes first, which keeps stdout/stderr interleaving and attribution exact. */
  if (PyList_GET_SIZE(b->parts) > 0 && (!same_str(name, b->name) || !same_str(exec_id, b->exec_id)))
    rc = outbuf_flush_locked(b);
  if (rc == 0) {
    Py_INCREF(name);
    Py_XSETREF(b->name, name);
    Py_INCREF(exec_id);
    Py_XSETREF(b->exec_id, exec_id);
    if (PyList_Append(b->parts, text) < 0) {
      rc = -1;
    } else {
      b->size += PyUnicode_GET_LENGTH(text);
      if (b->size >= FLUSH_CHARS) {
        rc = outbuf_flush_locked(b);
      } else if (!b->scheduled) {
        b->scheduled = 1;
        schedule = 1;
      }
    }
  }
  PyThread_release_lock(b->lock);
  /* The timer is armed after the lock is released: the flusher's own lock is then never taken
   * inside this one, so the two locks have no order to get wrong. */
  if (rc == 0 && schedule && b->schedule != NULL && b->schedule != Py_None) {
    PyObject *r = PyObject_CallOneArg(b->schedule, (PyObject *)b);
    if (r == NULL) return -1;
    Py_DECREF(r);
  }
  return rc;
}

static int outbuf_init(outbuf_t *b, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"emit", "schedule", NULL};
  PyObject *emit, *schedule = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O:OutBuffer", kwlist, &emit, &schedule)) return -1;
  if (b->lock == NULL && (b->lock = PyThread_allocate_lock()) == NULL) {
    PyErr_NoMemory();
    return -1;
  }
  if (b->parts == NULL && (b->parts = PyList_New(0)) == NULL) return -1;
  Py_INCREF(emit);
  Py_XSETREF(b->emit, emit);
  Py_INCREF(schedule);
  Py_XSETREF(b->schedule, schedule);
  if (b->limit == NULL) {
    Py_INCREF(Py_None);
    b->limit = Py_None;
  }
  return 0;
}

static int outbuf_traverse(outbuf_t *b, visitproc visit, void *arg) {
  Py_VISIT(b->emit);
  Py_VISIT(b->schedule);
  Py_VISIT(b->parts);
  Py_VISIT(b->name);
  Py_VISIT(b->exec_id);
  Py_VISIT(b->limit);
  return 0;
}

static int outbuf_clear(outbuf_t *b) {
  Py_CLEAR(b->emit);
  Py_CLEAR(b->schedule);
  Py_CLEAR(b->parts);
  Py_CLEAR(b->name);
  Py_CLEAR(b->exec_id);
  Py_CLEAR(b->limit);
  return 0;
}

static void outbuf_dealloc(outbuf_t *b) {
  PyObject_GC_UnTrack(b);
  outbuf_clear(b);
  if (b->lock) PyThread_free_lock(b->lock);
  Py_TYPE(b)->tp_free((PyObject *)b);
}

static PyObject *outbuf_write_m(outbuf_t *b, PyObject *args) {
  PyObject *name, *exec_id, *text;
  if (!PyArg_ParseTuple(args, "UOU:write", &name, &exec_id, &text)) return NULL;
  if (outbuf_write(b, name, exec_id, text) < 0) return NULL;
  Py_RETURN_NONE;
}

static PyObject *outbuf_flush_m(outbuf_t *b, PyObject *noargs) {
  int rc;
  outbuf_lock(b);
  rc = outbuf_flush_locked(b);
  PyThread_release_lock(b->lock);
  if (rc < 0) return NULL;
  Py_RETURN_NONE;
}

static PyObject *outbuf_start_cell(outbuf_t *b, PyObject *noargs) {
  outbuf_lock(b);
  b->written = 0;
  b->truncated = 0;
  PyThread_release_lock(b->lock);
  Py_RETURN_NONE;
}

static PyMethodDef outbuf_methods[] = {
    {"write", (PyCFunction)outbuf_write_m, METH_VARARGS, "write(name, exec_id, text)"},
    {"flush", (PyCFunction)outbuf_flush_m, METH_NOARGS, "emit the pending batch"},
    {"start_cell", (PyCFunction)outbuf_start_cell, METH_NOARGS, "reset the per-cell limit"},
    {NULL, NULL, 0, NULL}};

static PyMemberDef outbuf_members[] = {
    {"limit", T_OBJECT_EX, offsetof(outbuf_t, limit), 0, "maxOutputBytes per cell, or None"},
    {"written", T_PYSSIZET, offsetof(outbuf_t, written), READONLY, "characters this cell"},
    {"truncated", T_INT, offsetof(outbuf_t, truncated), READONLY, "cut at the limit"},
    {NULL, 0, 0, 0, NULL}};

static PyTypeObject outbuf_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_kernelhost.OutBuffer",
    .tp_basicsize = sizeof(outbuf_t),
    .tp_dealloc = (destructor)outbuf_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A kernel's pending stream output (see _kh_streams.OutBuffer).",
    .tp_traverse = (traverseproc)outbuf_traverse,
    .tp_clear = (inquiry)outbuf_clear,
    .tp_methods = outbuf_methods,
    .tp_members = outbuf_members,
    .tp_init = (initproc)outbuf_init,
    .tp_new = PyType_GenericNew,
};

/* --- Writer: sys.stdout.write / sys.stderr.write -------------------------------------------- */

typedef struct {
  PyObject_HEAD PyObject *name; /* "stdout" / "stderr" */
  PyObject *fallback;           /* the stream for threads outside every kernel, or None */
  PyObject *tls;                /* _kh_streams._tls (a threading.local) */
} writer_t;

/* Interned once: writer_call looks these up on every write. */
static PyObject *str_ctx, *str_out, *str_exec_id, *str_write;

/* write(s): the thread's kernel context lives in a threading.local (_kh_streams._tls), so output
 * follows the thread that wrote it, whatever sys.stdout a cell sees. A thread outside every
 * kernel (the service thread, one a C extension started) writes to the fallback stream. */
static PyObject *writer_call(writer_t *w, PyObject *args, PyObject *kw) {
  PyObject *s, *ctx, *out = NULL, *exec_id = NULL, *r = NULL;
  Py_ssize_t n;
  if (kw != NULL && PyDict_GET_SIZE(kw) > 0) {
    PyErr_SetString(PyExc_TypeError, "write() takes no keyword arguments");
    return NULL;
  }
  if (!PyArg_ParseTuple(args, "O:write", &s)) return NULL;
  if (!PyUnicode_Check(s))
    return PyErr_Format(PyExc_TypeError, "write() argument must be str, not %s",
                        Py_TYPE(s)->tp_name);
  n = PyUnicode_GET_LENGTH(s);
  ctx = PyObject_GetAttr(w->tls, str_ctx);
  if (ctx == NULL) {
    if (!PyErr_ExceptionMatches(PyExc_AttributeError)) return NULL;
    PyErr_Clear();
  }
  if (ctx == NULL || ctx == Py_None) {
    Py_XDECREF(ctx);
    if (w->fallback == Py_None) return PyLong_FromSsize_t(n);
    return PyObject_CallMethodOneArg(w->fallback, str_write, s);
  }
  if (n == 0) { /* print() writes "" for end=""; it must not arm a timer or split a batch */
    Py_DECREF(ctx);
    return PyLong_FromSsize_t(0);
  }
  out = PyObject_GetAttr(ctx, str_out);
  exec_id = out ? PyObject_GetAttr(ctx, str_exec_id) : NULL;
  Py_DECREF(ctx);
  if (out == NULL || exec_id == NULL) goto done;
  /* The C OutBuffer is called directly; any other object with write(name, exec_id, text) works
   * too, through Python (the runtime always makes an OutBuffer today). */
  if (Py_IS_TYPE(out, &outbuf_type)) {
    if (outbuf_write((outbuf_t *)out, w->name, exec_id, s) == 0) r = PyLong_FromSsize_t(n);
  } else {
    PyObject *x = PyObject_CallMethod(out, "write", "OOO", w->name, exec_id, s);
    if (x != NULL) {
      Py_DECREF(x);
      r = PyLong_FromSsize_t(n);
    }
  }
done:
  Py_XDECREF(out);
  Py_XDECREF(exec_id);
  return r;
}

static int writer_init(writer_t *w, PyObject *args, PyObject *kw) {
  PyObject *name, *fallback, *tls;
  if (!PyArg_ParseTuple(args, "UOO:Writer", &name, &fallback, &tls)) return -1;
  Py_INCREF(name);
  Py_XSETREF(w->name, name);
  Py_INCREF(fallback);
  Py_XSETREF(w->fallback, fallback);
  Py_INCREF(tls);
  Py_XSETREF(w->tls, tls);
  return 0;
}

static int writer_traverse(writer_t *w, visitproc visit, void *arg) {
  Py_VISIT(w->name);
  Py_VISIT(w->fallback);
  Py_VISIT(w->tls);
  return 0;
}

static int writer_clear(writer_t *w) {
  Py_CLEAR(w->name);
  Py_CLEAR(w->fallback);
  Py_CLEAR(w->tls);
  return 0;
}

static void writer_dealloc(writer_t *w) {
  PyObject_GC_UnTrack(w);
  writer_clear(w);
  Py_TYPE(w)->tp_free((PyObject *)w);
}

static PyTypeObject writer_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_kernelhost.Writer",
    .tp_basicsize = sizeof(writer_t),
    .tp_dealloc = (destructor)writer_dealloc,
    .tp_call = (ternaryfunc)writer_call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Writer(name, fallback, tls): write() of a routed stream.",
    .tp_traverse = (traverseproc)writer_traverse,
    .tp_clear = (inquiry)writer_clear,
    .tp_init = (initproc)writer_init,
    .tp_new = PyType_GenericNew,
};

int kh__py_stream_add_types(PyObject *module) {
  if (str_ctx == NULL) {
    str_ctx = PyUnicode_InternFromString("ctx");
    str_out = PyUnicode_InternFromString("out");
    str_exec_id = PyUnicode_InternFromString("exec_id");
    str_write = PyUnicode_InternFromString("write");
    if (!str_ctx || !str_out || !str_exec_id || !str_write) return -1;
  }
  if (PyType_Ready(&outbuf_type) < 0 || PyType_Ready(&writer_type) < 0) return -1;
  Py_INCREF(&outbuf_type);
  if (PyModule_AddObject(module, "OutBuffer", (PyObject *)&outbuf_type) < 0) {
    Py_DECREF(&outbuf_type);
    return -1;
  }
  Py_INCREF(&writer_type);
  if (PyModule_AddObject(module, "Writer", (PyObject *)&writer_type) < 0) {
    Py_DECREF(&writer_type);
    return -1;
  }
  return 0;
}

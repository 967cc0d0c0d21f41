/* py-hostcall.c: host functions seen from Python: _kernelhost.host_names(), host_exposed() and
 * hostcall(), behind the runtime module kernelhost (core/python/kernelhost.py). A main_thread
 * kernel posts the call to the loop through its sink and waits for the answer with the GIL
 * released (hostcall.c answers it, the Gate's interrupt ends the wait, py-gate.c); a thread:
 * "host" kernel runs the host function at once, on the loop thread that runs its cell; a worker
 * hands the call to main.c (kh__py_start_t.hostcall), which sends it over the protocol.
 * Thread: any thread holding the GIL; a worker's names are set by its command thread. */
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "py-internal.h"

int (*kh__py_hostcall_hook)(int cell, const char *name, const char *args, size_t len,
                            const kh_buffer_t *buffers, size_t nbuffers, int *state, char **text,
                            size_t *text_len, kh_buffer_t **out_buffers, size_t *out_nbuffers);

/* A worker's names (its one kernel's, from "expose"), in the sink's format (internal.h). */
static uv_once_t names_once = UV_ONCE_INIT;
static uv_mutex_t names_mu;
static char *worker_names; /* guarded by names_mu */

static void names_init(void) {
  uv_mutex_init(&names_mu);
}

void kh__py_set_host_names(const json_t *names) {
  kh__strbuf_t sb = {0};
  size_t i;
  json_t *v;
  json_array_foreach(names, i, v) {
    if (json_is_string(v)) kh__sb_append(&sb, json_string_value(v), json_string_length(v) + 1);
  }
  if (sb.len > 0) kh__sb_append(&sb, "", 1);
  uv_once(&names_once, names_init);
  uv_mutex_lock(&names_mu);
  free(worker_names);
  worker_names = sb.len > 0 ? kh__sb_take(&sb) : NULL;
  uv_mutex_unlock(&names_mu);
  kh__sb_free(&sb);
}

/* The names of the kernel `sink_obj` stands for (a capsule in the host, None in a worker), as an
 * owned copy, NULL when none; -1 when sink_obj is neither (a Python exception is set). */
static int copy_names(PyObject *sink_obj, char **out, size_t *len) {
  *out = NULL;
  *len = 0;
  if (sink_obj == Py_None) {
    const char *p;
    uv_once(&names_once, names_init);
    uv_mutex_lock(&names_mu);
    if (worker_names != NULL) {
      for (p = worker_names; *p; p += strlen(p) + 1) {
      }
      *len = (size_t)(p - worker_names) + 1;
      *out = kh__memdup(worker_names, *len);
    }
    uv_mutex_unlock(&names_mu);
  } else {
    kh__sink_t *sink = PyCapsule_GetPointer(sink_obj, "kernelhost.sink");
    if (sink == NULL) return -1;
    *out = kh__sink_copy_names(sink, len);
  }
  return 0;
}

static int has_name(PyObject *sink_obj, const char *name) {
  char *names;
  const char *p;
  size_t len;
  int found = 0;
  if (sink_obj != Py_None) {
    kh__sink_t *sink = PyCapsule_GetPointer(sink_obj, "kernelhost.sink");
    return sink == NULL ? -1 : kh__sink_has_name(sink, name);
  }
  if (copy_names(sink_obj, &names, &len) < 0) return -1;
  for (p = names; p != NULL && *p && !found; p += strlen(p) + 1) found = strcmp(p, name) == 0;
  free(names);
  return found;
}

/* host_names(sink) -> tuple of the exposed names, in the order they were exposed. */
static PyObject *py_host_names(PyObject *self, PyObject *sink_obj) {
  char *names;
  const char *p;
  size_t len;
  PyObject *list, *t;
  (void)self;
  if (copy_names(sink_obj, &names, &len) < 0) return NULL;
  if ((list = PyList_New(0)) == NULL) {
    free(names);
    return NULL;
  }
  for (p = names; p != NULL && *p; p += strlen(p) + 1) {
    PyObject *s = PyUnicode_FromString(p);
    if (s == NULL || PyList_Append(list, s) < 0) {
      Py_XDECREF(s);
      Py_DECREF(list);
      free(names);
      return NULL;
    }
    Py_DECREF(s);
  }
  free(names);
  t = PyList_AsTuple(list);
  Py_DECREF(list);
  return t;
}

/* host_exposed(sink, name) -> bool */
static PyObject *py_host_exposed(PyObject *self, PyObject *args) {
  PyObject *sink_obj;
  const char *name;
  int r;
  (void)self;
  if (!PyArg_ParseTuple(args, "Os:host_exposed", &sink_obj, &name)) return NULL;
  if ((r = has_name(sink_obj, name)) < 0) return NULL;
  return PyBool_FromLong(r);
}

/* The (kind, text, buffers) tuple hostcall() returns: kind 0 the value's JSON, 1 the host's
 * error, 2 a cancellation (restart, destroy, close), each with its text. */
static PyObject *result(int state, const char *text, size_t len, const kh_buffer_t *b, size_t n) {
  PyObject *bufs = PyList_New((Py_ssize_t)n), *s, *r;
  size_t i;
  int kind = state == KH__HC_ANSWERED ? 0 : state == KH__HC_FAILED ? 1 : 2;
  if (bufs == NULL) return NULL;
  for (i = 0; i < n; i++) {
    PyObject *item =
        Py_BuildValue("(sy#)", b[i].path, (const char *)b[i].data, (Py_ssize_t)b[i].len);
    if (item == NULL) {
      Py_DECREF(bufs);
      return NULL;
    }
    PyList_SET_ITEM(bufs, (Py_ssize_t)i, item);
  }
  /* The host's error text is cleaned to UTF-8 (hostcall.c); "replace" keeps any slip harmless. */
  s = PyUnicode_DecodeUTF8(text ? text : "", text ? (Py_ssize_t)len : 0, "replace");
  if (s == NULL) {
    Py_DECREF(bufs);
    return NULL;
  }
  r = Py_BuildValue("(iNN)", kind, s, bufs);
  return r;
}

/* Copies the (path, bytes) pairs of `list` into *out (owned copies). -1 with an exception. */
static int take_buffers(PyObject *list, kh_buffer_t **out, size_t *n) {
  Py_ssize_t i, len;
  kh_buffer_t *b;
  *out = NULL;
  *n = 0;
  if (!PyList_Check(list)) {
    PyErr_SetString(PyExc_TypeError, "buffers must be a list of (path, bytes)");
    return -1;
  }
  len = PyList_GET_SIZE(list);
  if (len == 0) return 0;
  if ((b = calloc((size_t)len, sizeof(*b))) == NULL) {
    PyErr_NoMemory();
    return -1;
  }
  for (i = 0; i < len; i++) {
    PyObject *item = PyList_GET_ITEM(list, i);
    const char *path;
    Py_buffer data;
    if (!PyArg_ParseTuple(item, "sy*:buffer", &path, &data)) {
      kh__buffers_free(b, (size_t)i);
      return -1;
    }
    b[i].path = kh__strdup(path);
    b[i].data = malloc((size_t)data.len + 1);
    b[i].len = (size_t)data.len;
    if (b[i].data != NULL) memcpy((void *)b[i].data, data.buf, (size_t)data.len);
    PyBuffer_Release(&data);
    if (b[i].path == NULL || b[i].data == NULL) {
      kh__buffers_free(b, (size_t)i + 1);
      PyErr_NoMemory();
      return -1;
    }
  }
  *out = b;
  *n = (size_t)len;
  return 0;
}

/* The worker's way: main.c sends "call" and waits for "result" (or SIGINT). */
static PyObject *worker_call(int cell, const char *name, Py_buffer *payload, PyObject *bufs) {
  kh_buffer_t *b = NULL, *ob = NULL;
  size_t nb = 0, onb = 0, tlen = 0;
  char *text = NULL;
  int state = 0, rc;
  PyObject *r;
  if (kh__py_hostcall_hook == NULL) {
    PyErr_SetString(PyExc_RuntimeError, "this process has no host to call");
    return NULL;
  }
  if (take_buffers(bufs, &b, &nb) < 0) return NULL;
  rc = kh__py_hostcall_hook(cell, name, payload->buf, (size_t)payload->len, b, nb, &state, &text,
                            &tlen, &ob, &onb);
  kh__buffers_free(b, nb);
  if (rc < 0) return NULL;
  r = result(state, text, tlen, ob, onb);
  free(text);
  kh__buffers_free(ob, onb);
  return r;
}

/* How long a waiting thread spins before it sleeps. The loop's answer to a quick host function
 * comes back within a few tens of microseconds; a thread asleep in a condition variable then
 * takes as long again to wake (measured here: a no-op call, 78 us p50 sleeping at once against
 * the 1+1 execute round trip's 24 us). Spinning, without the GIL, covers that answer; a host
 * function that takes longer costs this much CPU once per call, then the thread sleeps. */
#define SPIN_NS 100000

static uint64_t now_ns(void) {
  return uv_hrtime();
}

static int settled(kh__hcwait_t *w) {
  return atomic_load(&w->state) != KH__HC_WAITING || atomic_load(&w->interrupted);
}

/* Waits, GIL released, until w is settled or interrupted. The spin yields the CPU at each turn:
 * on a loaded machine the loop thread that will answer may be queued on this very CPU, and a
 * spin that kept it would only delay the answer it waits for (a pause-only spin measured a
 * steady 110 us, its whole budget and a wake-up, under load). */
static void wait_answer(kh__hcwait_t *w) {
  uint64_t until = now_ns() + SPIN_NS;
  while (!settled(w) && now_ns() < until) sched_yield();
  uv_mutex_lock(&w->mu);
  while (!settled(w)) uv_cond_wait(&w->cv, &w->mu);
  uv_mutex_unlock(&w->mu);
}

/* hostcall(sink, gate, cell, host_thread, name, payload, buffers) -> (kind, text, buffers), or
 * None when `name` is not exposed (nothing crossed); raises KeyboardInterrupt when the wait was
 * interrupted. payload: the JSON array of the arguments (UTF-8 bytes); buffers: [(path,
 * bytes)], their binary values. cell: the caller is the kernel's own thread (gate's). */
static PyObject *py_hostcall(PyObject *self, PyObject *args) {
  PyObject *sink_obj, *gate, *bufs, *r = NULL;
  int cell, host_thread, exposed, state, registered = 0, interrupted;
  const char *name;
  Py_buffer payload;
  kh__sink_t *sink;
  kh__hcreq_t *req;
  kh__hcwait_t *w;
  (void)self;
  if (!PyArg_ParseTuple(args, "OOppsy*O:hostcall", &sink_obj, &gate, &cell, &host_thread, &name,
                        &payload, &bufs))
    return NULL;
  if ((exposed = has_name(sink_obj, name)) <= 0 || strlen(name) > KH__HOSTFN_NAME_MAX) {
    PyBuffer_Release(&payload);
    if (exposed < 0) return NULL;
    Py_RETURN_NONE;
  }
  /* An interrupt already on its way to this cell lands now, before anything crosses. */
  if (cell && gate != Py_None && kh__py_gate_wait_begin(gate, NULL) < 0) {
    PyBuffer_Release(&payload);
    PyErr_SetNone(PyExc_KeyboardInterrupt);
    return NULL;
  }
  if (sink_obj == Py_None) {
    r = worker_call(cell, name, &payload, bufs);
    PyBuffer_Release(&payload);
    return r;
  }
  sink = PyCapsule_GetPointer(sink_obj, "kernelhost.sink");
  req = sink ? calloc(1, sizeof(*req)) : NULL;
  w = req ? kh__hcwait_new() : NULL;
  if (req == NULL || w == NULL) {
    free(req);
    PyBuffer_Release(&payload);
    return sink ? PyErr_NoMemory() : NULL;
  }
  snprintf(req->name, sizeof(req->name), "%s", name);
  req->cell = cell;
  req->wait = w;
  kh__hcwait_ref(w); /* one for the request, one for this thread */
  req->args = malloc((size_t)payload.len + 1);
  if (req->args != NULL) {
    memcpy(req->args, payload.buf, (size_t)payload.len);
    req->args[payload.len] = '\0';
    req->args_len = (size_t)payload.len;
  }
  PyBuffer_Release(&payload);
  if (req->args == NULL || take_buffers(bufs, &req->buffers, &req->nbuffers) < 0) {
    if (!PyErr_Occurred()) PyErr_NoMemory();
    kh__hcreq_free(req);
    kh__hcwait_unref(w);
    return NULL;
  }
  if (host_thread && cell) {
    /* On the loop thread, inside the cell: the host function runs now, without the GIL (it may
     * run cells of other kernels), and answers before it returns. Other threads of such a kernel
     * wait for the loop like any main_thread kernel's. */
    PyThreadState *ts = PyEval_SaveThread();
    kh__hostcall_sync(sink, req);
    PyEval_RestoreThread(ts);
  } else {
    if (kh__sink_post_owned(sink, kh__hostcall_on_post, req, kh__hcreq_drop) != 0) {
      kh__hcreq_free(req); /* settles w: the kernel is gone */
    } else if (cell && gate != Py_None) {
      registered = kh__py_gate_wait_begin(gate, w) == 0;
    }
    Py_BEGIN_ALLOW_THREADS wait_answer(w);
    Py_END_ALLOW_THREADS
  }
  if (registered) kh__py_gate_wait_end(gate);
  uv_mutex_lock(&w->mu); /* orders the reads of text and buffers after the settle */
  state = atomic_load(&w->state);
  interrupted = atomic_load(&w->interrupted);
  uv_mutex_unlock(&w->mu);
  /* The answer, if it came too, is dropped: the interrupt wins, as it would have a moment
   * later at the next bytecode. */
  if (interrupted) {
    PyErr_SetNone(PyExc_KeyboardInterrupt);
  } else {
    r = result(state, w->text, w->len, w->buffers, w->nbuffers);
  }
  kh__hcwait_unref(w);
  return r;
}

static PyMethodDef methods[] = {
    {"host_names", py_host_names, METH_O, "host_names(sink) -> the exposed names"},
    {"host_exposed", py_host_exposed, METH_VARARGS, "host_exposed(sink, name) -> bool"},
    {"hostcall", py_hostcall, METH_VARARGS,
     "hostcall(sink, gate, cell, host_thread, name, payload, buffers) -> (kind, text, buffers)"},
    {NULL, NULL, 0, NULL}};

int kh__py_hostcall_add_functions(PyObject *module) {
  return PyModule_AddFunctions(module, methods);
}

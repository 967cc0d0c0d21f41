/* py-host.c: CPython inside the host process (main_thread kernels). One service thread starts
 * the interpreter, once per process, and then performs interrupts and input replies with the
 * GIL; each kernel thread has its own thread state and runtime Kernel object. The loop thread
 * never touches Python: it only queues service requests (post_service), under `mu`. */
#include <stdlib.h>
#include <string.h>

#include "py-internal.h"

/* One kernel's Python side. Freed when refs reaches 0: one reference belongs to the kernel
 * thread (dropped by kh__py_kernel_close) and one to each queued service request, so a request
 * that outlives the kernel finds rt NULL instead of freed memory. */
struct kh__pyk_s {
  atomic_int refs;
  PyThreadState *ts; /* kernel thread only */
  PyObject *rt;      /* guarded by the GIL; NULL once closed */
};

typedef enum { SVC_INTERRUPT = 1, SVC_INPUT } svc_kind_t;

typedef struct svc_s {
  struct svc_s *next;
  svc_kind_t kind;
  kh__pyk_t *pyk; /* a reference */
  char *value;    /* owned, NUL-terminated: an exec id, or an input reply (which may hold NULs) */
  size_t len;
} svc_t;

static uv_once_t once = UV_ONCE_INIT;
static uv_mutex_t mu;
static uv_cond_t cv;
static int state;                       /* guarded by mu: 0 starting, 1 up, -1 failed */
static char init_error[KH__ERRMSG_MAX]; /* written before state leaves 0 */
static svc_t *svc_head, *svc_tail;      /* guarded by mu */
static uv_thread_t service_tid;
static PyInterpreterState *interp; /* written before state becomes 1, read-only after */

static int host_emit(kh__sink_t *sink, const char *exec_id, int type, const char *data,
                     size_t len, const kh_buffer_t *bufs, size_t nbufs) {
  kh__bufs_t own = {0};
  size_t i;
  if (sink == NULL) return KH_EINVAL;
  /* The bytes are copied once, here: the host may keep the event's values past this call,
   * and a blob can be freed on the loop thread without the GIL. */
  for (i = 0; i < nbufs; i++) {
    if (kh__bufs_add_copy(&own, bufs[i].path, bufs[i].data, bufs[i].len) != 0) {
      kh__bufs_free(&own);
      return KH_ENOMEM;
    }
  }
  /* The sink's locks are never held by a thread that waits for the GIL, so taking them with
   * the GIL held cannot deadlock. */
  return kh__sink_post_bufs(sink, KH__MSG_EVENT, type, 0, exec_id, data, len, &own);
}

/* The interpreter is started here, on the service thread, rather than on the host's thread:
 * the host thread must never hold the GIL (DESIGN.md section 3), and this thread lives as long
 * as the process, so the main thread state it owns stays valid. */
static int start_python(void) {
  static const kh__py_start_t how = {KH__PY_HOST, host_emit, NULL};
  int rc = kh__py_start(&how, init_error);
  if (rc == 0) interp = PyInterpreterState_Main();
  return rc;
}

static void service_thread(void *arg) {
  PyThreadState *main_ts;
  int rc = start_python();
  (void)arg;
  /* kh__py_start() returns holding the GIL: give it up, or no kernel thread could ever run.
   * This thread keeps the main thread state and takes the GIL only to serve a request. */
  main_ts = rc == 0 ? PyEval_SaveThread() : NULL;
  uv_mutex_lock(&mu);
  state = rc == 0 ? 1 : -1;
  uv_cond_broadcast(&cv);
  uv_mutex_unlock(&mu);
  if (rc != 0) return;
  /* Serve interrupts and input replies for the life of the process. */
  for (;;) {
    svc_t *s;
    uv_mutex_lock(&mu);
    while (svc_head == NULL) uv_cond_wait(&cv, &mu);
    s = svc_head;
    svc_head = s->next;
    if (svc_head == NULL) svc_tail = NULL;
    uv_mutex_unlock(&mu);

    /* A cell spinning in bytecode holds the GIL for a whole switch interval (5 ms) before it
     * must let another thread in: shorten it while the service thread asks, so an interrupt
     * lands in well under a millisecond, then put the host's setting back. */
    {
      unsigned long interval = _PyEval_GetSwitchInterval();
      if (s->kind == SVC_INTERRUPT && interval > 100) _PyEval_SetSwitchInterval(100);
      PyEval_RestoreThread(main_ts);
      if (s->kind == SVC_INTERRUPT && interval > 100) _PyEval_SetSwitchInterval(interval);
    }
    if (s->pyk->rt != NULL) {
      PyObject *r =
          s->kind == SVC_INTERRUPT
              ? PyObject_CallMethod(s->pyk->rt, "interrupt", "s", s->value)
              : PyObject_CallMethod(s->pyk->rt, "input_reply", "s#", s->value, (Py_ssize_t)s->len);
      if (r == NULL) PyErr_Clear();
      Py_XDECREF(r);
    }
    PyEval_SaveThread();
    kh__pyk_unref(s->pyk);
    free(s->value);
    free(s);
  }
}

/* Runs once (uv_once) on the first main_thread kernel's thread: a host that only uses worker
 * kernels never pays for an interpreter. */
static void start_service(void) {
  uv_thread_options_t to;
  uv_mutex_init(&mu);
  uv_cond_init(&cv);
  /* This thread is Python's main thread (it runs site and the runtime's imports): give it the
   * stack a process's main thread has, which CPython's recursion limit assumes. */
  to.flags = UV_THREAD_HAS_STACK_SIZE;
  to.stack_size = 8u << 20;
  if (uv_thread_create_ex(&service_tid, &to, service_thread, NULL) != 0) {
    snprintf(init_error, sizeof(init_error), "cannot start the Python service thread");
    state = -1;
  }
}

static int wait_python(char *errmsg) {
  int s;
  uv_once(&once, start_service);
  uv_mutex_lock(&mu);
  while (state == 0) uv_cond_wait(&cv, &mu);
  s = state;
  uv_mutex_unlock(&mu);
  if (s < 0) {
    kh__set_err(errmsg, "%s", init_error);
    return KH_EPYTHON;
  }
  return 0;
}

/* The runtime Kernel holds its sink as a capsule with a sink reference of its own: events its
 * threads emit after the C side closed (a thread a cell left running) still find a live sink,
 * which drops them once closed. */
static void capsule_free(PyObject *cap) {
  kh__sink_t *s = PyCapsule_GetPointer(cap, "kernelhost.sink");
  if (s != NULL) kh__sink_unref(s);
}

int kh__py_kernel_open(kh__pyk_t **out, kh__sink_t *sink, const char *kernel_id, int host_thread,
                       const json_t *figure_formats, int binary_base64, char *errmsg) {
  kh__pyk_t *p;
  PyObject *mod = NULL, *cap = NULL, *ff = NULL;
  int rc;
  *out = NULL;
  if ((rc = wait_python(errmsg)) != 0) return rc;
  /* A thread state of this kernel thread's own, in the one shared interpreter: numpy cannot
   * run in sub-interpreters, so kernels are separated by namespace, not by interpreter. */
  p = calloc(1, sizeof(*p));
  if (p == NULL) return KH_ENOMEM;
  atomic_init(&p->refs, 1);
  p->ts = PyThreadState_New(interp);
  if (p->ts == NULL) {
    free(p);
    kh__set_err(errmsg, "cannot create a Python thread state");
    return KH_EPYTHON;
  }
  PyEval_RestoreThread(p->ts);
  kh__sink_ref(sink);
  cap = PyCapsule_New(sink, "kernelhost.sink", capsule_free);
  if (cap == NULL) {
    kh__sink_unref(sink);
    goto fail;
  }
  mod = PyImport_ImportModule("_kh_runtime");
  if (mod == NULL) goto fail;
  p->rt = PyObject_CallMethod(mod, "Kernel", "OsOO", cap, kernel_id, Py_False,
                              host_thread ? Py_True : Py_False);
  if (p->rt == NULL) goto fail;
  /* Options the runtime applies itself are attributes of its Kernel (as _kh_worker sets them
   * in a worker): _kh_mpl reads figure_formats_option when it renders a figure. */
  ff = kh__py_strings(figure_formats);
  if (ff == NULL || PyObject_SetAttrString(p->rt, "figure_formats_option", ff) != 0) goto fail;
  if (binary_base64) {
    PyObject *b = PyUnicode_FromString("base64");
    int bad = b == NULL || PyObject_SetAttrString(p->rt, "binary", b) != 0;
    Py_XDECREF(b);
    if (bad) goto fail;
  }
  Py_DECREF(ff);
  Py_DECREF(mod);
  Py_DECREF(cap);
  PyEval_SaveThread();
  *out = p;
  return 0;
fail : {
  char buf[KH__ERRMSG_MAX - 64];
  kh__py_describe_error(buf, sizeof(buf));
  kh__set_err(errmsg, "creating the kernel's Python runtime failed: %s", buf);
  Py_XDECREF(ff);
  Py_CLEAR(p->rt);
  Py_XDECREF(mod);
  Py_XDECREF(cap);
  PyThreadState_Clear(p->ts);
  PyThreadState_DeleteCurrent();
  free(p);
  return KH_EPYTHON;
}
}

/* The reply of a request the runtime ran (r: its result, NULL when it raised), copied out of
 * Python with its binary values (into bufs; a NULL bufs drops them); then the thread gives up
 * the GIL. Steals r. */
static char *request_reply(PyObject *r, size_t *out_len, kh__bufs_t *bufs) {
  char *out = NULL;
  kh_buffer_t views[KH__FRAME_BUFS_MAX];
  Py_buffer held[KH__FRAME_BUFS_MAX];
  const char *data;
  Py_ssize_t nb, i;
  /* The reply is JSON the runtime already encoded (bytes): copied out while the GIL is held,
   * since the loop thread that parses it must never touch a Python object. */
  if ((nb = kh__py_reply_parts(r, &data, out_len, views, held)) >= 0) {
    out = kh__memdup(data, *out_len);
    for (i = 0; i < nb; i++) {
      if (out != NULL && bufs != NULL &&
          kh__bufs_add_copy(bufs, views[i].path, views[i].data, views[i].len)) {
        free(out);
        out = NULL;
      }
      PyBuffer_Release(&held[i]);
    }
    if (out == NULL && bufs != NULL) kh__bufs_free(bufs);
  } else {
    char buf[KH__ERRMSG_MAX];
    if (r == NULL)
      kh__py_describe_error(buf, sizeof(buf));
    else
      snprintf(buf, sizeof(buf), "runtime returned no reply");
    out = kh__py_error_reply("KernelError", buf, out_len);
  }
  Py_XDECREF(r);
  /* An interrupt aimed at the request must not leak into the next one. */
  PyThreadState_SetAsyncExc(PyThread_get_thread_ident(), NULL);
  PyEval_SaveThread();
  return out;
}

char *kh__py_kernel_execute(kh__pyk_t *p, const char *exec_id, const char *code, size_t len,
                            int silent, int store_history, int allow_stdin, size_t *out_len,
                            kh__bufs_t *bufs) {
  PyObject *text, *r = NULL;
  PyEval_RestoreThread(p->ts);
  /* The core has checked the code is UTF-8 without NULs (KH_EENCODING), so this cannot fail
   * on the text; if it fails at all (memory), the reply says so like any runtime failure. */
  text = PyUnicode_DecodeUTF8(code, (Py_ssize_t)len, "strict");
  if (text != NULL) {
    r = PyObject_CallMethod(p->rt, "execute", "sOiii", exec_id, text, silent, store_history,
                            allow_stdin);
    Py_DECREF(text);
  }
  return request_reply(r, out_len, bufs);
}

char *kh__py_kernel_comm(kh__pyk_t *p, const char *exec_id, const char *msg_type,
                         const char *content, size_t len, const kh__bufs_t *bufs,
                         size_t *out_len) {
  PyObject *text, *list = NULL, *r = NULL;
  size_t i;
  PyEval_RestoreThread(p->ts);
  text = PyUnicode_DecodeUTF8(content, (Py_ssize_t)len, "strict");
  /* The buffers as bytes, in the order of their paths' indexes (comm.c sorted them). */
  list = PyList_New((Py_ssize_t)bufs->n);
  for (i = 0; list != NULL && i < bufs->n; i++) {
    const kh__blob_t *blob = bufs->v[i].blob;
    PyObject *b = PyBytes_FromStringAndSize(blob->data, (Py_ssize_t)blob->len);
    if (b == NULL)
      Py_CLEAR(list);
    else
      PyList_SET_ITEM(list, (Py_ssize_t)i, b);
  }
  if (text != NULL && list != NULL)
    r = PyObject_CallMethod(p->rt, "comm", "ssOO", exec_id, msg_type, text, list);
  Py_XDECREF(text);
  Py_XDECREF(list);
  return request_reply(r, out_len, NULL);
}

int kh__py_kernel_reset(kh__pyk_t *p, char *errmsg) {
  PyObject *r;
  int rc = 0;
  PyEval_RestoreThread(p->ts);
  r = PyObject_CallMethod(p->rt, "reset", NULL);
  if (r == NULL) {
    char buf[KH__ERRMSG_MAX - 64];
    kh__py_describe_error(buf, sizeof(buf));
    kh__set_err(errmsg, "reset failed: %s", buf);
    rc = KH_EPYTHON;
  }
  Py_XDECREF(r);
  PyEval_SaveThread();
  return rc;
}

void kh__py_kernel_close(kh__pyk_t *p) {
  PyObject *r;
  PyEval_RestoreThread(p->ts);
  r = PyObject_CallMethod(p->rt, "close", NULL);
  if (r == NULL) PyErr_Clear();
  Py_XDECREF(r);
  Py_CLEAR(p->rt);
  PyThreadState_SetAsyncExc(PyThread_get_thread_ident(), NULL);
  PyThreadState_Clear(p->ts);
  PyThreadState_DeleteCurrent();
  p->ts = NULL;
  kh__pyk_unref(p);
}

void kh__pyk_unref(kh__pyk_t *p) {
  if (atomic_fetch_sub(&p->refs, 1) == 1) free(p);
}

/* Thread: loop. The loop thread must never wait for the GIL (a cell may hold it for as long as
 * it likes), so interrupts and input replies go to the service thread, which may. A request
 * that cannot be allocated (out of memory) is dropped; a time limit interrupts again after each
 * grace period (kernel.c). */
static void post_service(kh__pyk_t *p, svc_kind_t kind, const char *value, size_t len) {
  svc_t *s = calloc(1, sizeof(*s));
  if (s == NULL) return;
  if (value != NULL && (s->value = malloc(len + 1)) == NULL) {
    free(s);
    return;
  }
  if (value != NULL) {
    memcpy(s->value, value, len);
    s->value[len] = '\0';
  }
  s->len = len;
  atomic_fetch_add(&p->refs, 1);
  s->kind = kind;
  s->pyk = p;
  uv_mutex_lock(&mu);
  if (svc_tail)
    svc_tail->next = s;
  else
    svc_head = s;
  svc_tail = s;
  uv_cond_broadcast(&cv);
  uv_mutex_unlock(&mu);
}

void kh__py_kernel_interrupt(kh__pyk_t *p, const char *exec_id) {
  post_service(p, SVC_INTERRUPT, exec_id, exec_id ? strlen(exec_id) : 0);
}

void kh__py_kernel_input_reply(kh__pyk_t *p, const char *value, size_t len) {
  post_service(p, SVC_INPUT, value, len);
}

/* --- editor requests (py-interact.c serves them on its own thread) ------------------------ */

typedef struct {
  kh__pyk_t *pyk; /* a reference: the job reads pyk->rt, NULL once the kernel closed */
  kh__sink_t *sink;
} interact_ctx_t;

static void interact_done(void *arg, const char *id, int status, const char *json, size_t len) {
  interact_ctx_t *c = arg;
  kh__sink_post(c->sink, KH__MSG_ANSWER, 0, status, id, json, json ? len : 0);
  kh__sink_unref(c->sink);
  kh__pyk_unref(c->pyk);
  free(c);
}

void kh__py_interact_cancel(kh_kernel_t *k, const char *id) {
  (void)k;
  kh__pyi_cancel(id);
}

int kh__py_kernel_interact(kh__pyk_t *p, kh__sink_t *sink, const char *id, const char *op,
                           const char *content, size_t len, uint64_t timeout_ms) {
  interact_ctx_t *c = calloc(1, sizeof(*c));
  int rc;
  if (c == NULL) return KH_ENOMEM;
  atomic_fetch_add(&p->refs, 1);
  kh__sink_ref(sink);
  c->pyk = p;
  c->sink = sink;
  rc = kh__pyi_submit(&p->rt, c, interact_done, id, op, content, len, timeout_ms);
  if (rc != 0) {
    kh__sink_unref(sink);
    kh__pyk_unref(p);
    free(c);
  }
  return rc;
}

/* py-interact.c: the interact thread, which serves editor requests (complete, inspect,
 * is_complete, kernel_info: core/python/_kh_interact.py) in whichever process runs the kernel's
 * Python: the host (main_thread kernels) and a kernelhost-worker alike. It is a thread of its
 * own, not a kernel's thread nor the loop thread, so that a request is answered while a cell
 * runs: CPython hands it the GIL at the cell's next switch interval (5 ms at most while the cell
 * runs bytecode; a cell that holds the GIL inside C code delays it until it lets go, and the
 * host's timer then answers UV_ETIMEDOUT). One thread per process serves every kernel of the
 * process in FIFO order; a watchdog thread bounds each request by its timeout, raising
 * KeyboardInterrupt in the interact thread (jedi on a huge namespace cannot hold it forever).
 * kh__pyi_cancel (a kernel's interrupt, restart or destroy) stops one request the same way: a
 * queued one is answered KH_ECANCELED without running, the running one is interrupted by the
 * watchdog, at once, and answered KH_ECANCELED.
 * Thread: any caller of kh__pyi_submit; the rest runs on the two threads it starts. */
#include <stdlib.h>
#include <string.h>

#include "py-internal.h"

typedef struct job_s {
  struct job_s *next;
  PyObject **rt; /* where the runtime Kernel is: read with the GIL, NULL once closed */
  void *ctx;
  kh__pyi_done_fn done;
  char id[KH__EXEC_ID_MAX];
  char op[32];
  char *content; /* owned, NUL-terminated JSON */
  uint64_t timeout_ms;
  int canceled; /* guarded by mu: kh__pyi_cancel asked before the job started */
} job_t;

static uv_once_t once = UV_ONCE_INIT;
static uv_mutex_t mu;
static uv_cond_t cv;                /* a job was queued */
static uv_cond_t wcv;               /* the watchdog's: a job started or ended */
static job_t *head, *tail;          /* guarded by mu */
static job_t *running;              /* guarded by mu: the job being served */
static uint64_t running_until;      /* guarded by mu: its deadline (uv_hrtime, ns) */
static int running_stop;            /* guarded by mu: why the watchdog must stop it: 0, or
                                     * UV_ETIMEDOUT (its deadline) or KH_ECANCELED */
static int running_raised;          /* guarded by mu: the watchdog raised in it */
static unsigned long serving_ident; /* the interact thread's Python thread id */
static int start_failed;
static uv_thread_t tid, wtid;

static char *run_job(job_t *j, int *status, size_t *len) {
  PyObject *mod = NULL, *arg = NULL, *r = NULL;
  char *out = NULL;
  *status = 0;
  if (*j->rt == NULL) {
    *status = KH_EKERNELDEAD;
    return NULL;
  }
  mod = PyImport_ImportModule("_kh_interact");
  arg = mod ? PyUnicode_FromString(j->content) : NULL;
  r = arg ? PyObject_CallMethod(mod, "handle", "OsO", *j->rt, j->op, arg) : NULL;
  if (r != NULL && PyBytes_Check(r)) {
    *len = (size_t)PyBytes_GET_SIZE(r);
    out = kh__memdup(PyBytes_AS_STRING(r), *len + 1);
    if (out == NULL) *status = KH_ENOMEM;
  } else {
    char buf[KH__ERRMSG_MAX - 64];
    int stop = 0;
    kh__py_describe_error(buf, sizeof(buf));
    uv_mutex_lock(&mu);
    if (running_raised) stop = running_stop;
    uv_mutex_unlock(&mu);
    *status = stop ? stop : KH_EPYTHON;
    if (stop == KH_ECANCELED) snprintf(buf, sizeof(buf), "canceled while it ran");
    out = kh__strdup(buf);
    *len = out ? strlen(out) : 0;
  }
  Py_XDECREF(r);
  Py_XDECREF(arg);
  Py_XDECREF(mod);
  return out;
}

static void interact_thread(void *arg) {
  PyGILState_STATE g;
  (void)arg;
  g = PyGILState_Ensure();
  serving_ident = PyThread_get_thread_ident();
  PyGILState_Release(g);
  for (;;) {
    job_t *j;
    char *out;
    size_t len = 0;
    int status;
    uv_mutex_lock(&mu);
    while (head == NULL) uv_cond_wait(&cv, &mu);
    j = head;
    head = j->next;
    if (head == NULL) tail = NULL;
    if (j->canceled) {
      /* Canceled while it waited: answered without Python. */
      static const char why[] = "canceled before it started";
      uv_mutex_unlock(&mu);
      j->done(j->ctx, j->id, KH_ECANCELED, why, sizeof(why) - 1);
      free(j->content);
      free(j);
      continue;
    }
    running = j;
    running_stop = 0;
    running_raised = 0;
    running_until = uv_hrtime() + j->timeout_ms * 1000000u;
    uv_cond_signal(&wcv);
    uv_mutex_unlock(&mu);

    g = PyGILState_Ensure();
    out = run_job(j, &status, &len);
    uv_mutex_lock(&mu);
    running = NULL;
    uv_cond_signal(&wcv);
    uv_mutex_unlock(&mu);
    /* An interrupt the watchdog raised just as the job ended must not hit the next one, nor
     * the import lock one left owned inside importlib keep every other thread from importing
     * (py-gate.c): a job never runs inside an import. */
    PyThreadState_SetAsyncExc(serving_ident, NULL);
    kh__py_release_import_lock();
    PyGILState_Release(g);

    j->done(j->ctx, j->id, status, out, len);
    free(out);
    free(j->content);
    free(j);
  }
}

/* Interrupts the interact thread when its job outlives its deadline or is canceled, and again
 * every 100 ms while it still runs: code that catches Exception broadly (jedi does) would
 * swallow one TimeoutError, so it raises KeyboardInterrupt, a BaseException, and repeats. It
 * takes the GIL only then, so that it never slows a cell down. */
static void watchdog_thread(void *arg) {
  (void)arg;
  uv_mutex_lock(&mu);
  for (;;) {
    uint64_t now;
    if (running == NULL) {
      uv_cond_wait(&wcv, &mu);
      continue;
    }
    now = uv_hrtime();
    if (now < running_until) {
      uv_cond_timedwait(&wcv, &mu, running_until - now);
      continue;
    }
    if (running_stop == 0) running_stop = UV_ETIMEDOUT;
    running_raised = 1;
    running_until = now + 100 * 1000000u;
    {
      job_t *j = running;
      PyGILState_STATE g;
      uv_mutex_unlock(&mu);
      g = PyGILState_Ensure();
      uv_mutex_lock(&mu);
      if (running == j) PyThreadState_SetAsyncExc(serving_ident, PyExc_KeyboardInterrupt);
      uv_mutex_unlock(&mu);
      PyGILState_Release(g);
      uv_mutex_lock(&mu);
    }
  }
}

static void start_threads(void) {
  uv_thread_options_t to;
  uv_mutex_init(&mu);
  uv_cond_init(&cv);
  uv_cond_init(&wcv);
  /* jedi recurses deeply: a full-size stack, as a kernel thread has. */
  to.flags = UV_THREAD_HAS_STACK_SIZE;
  to.stack_size = 16u << 20;
  if (uv_thread_create_ex(&tid, &to, interact_thread, NULL) != 0) {
    start_failed = 1;
    return;
  }
  to.stack_size = 256u << 10;
  if (uv_thread_create_ex(&wtid, &to, watchdog_thread, NULL) != 0) start_failed = 1;
}

int kh__pyi_submit(PyObject **rt, void *ctx, kh__pyi_done_fn done, const char *id, const char *op,
                   const char *content, size_t len, uint64_t timeout_ms) {
  job_t *j;
  uv_once(&once, start_threads);
  if (start_failed) return KH_EPYTHON;
  j = calloc(1, sizeof(*j));
  if (j == NULL || (j->content = kh__memdup(content, len + 1)) == NULL) {
    free(j);
    return KH_ENOMEM;
  }
  j->content[len] = '\0';
  j->rt = rt;
  j->ctx = ctx;
  j->done = done;
  snprintf(j->id, sizeof(j->id), "%s", id);
  snprintf(j->op, sizeof(j->op), "%s", op);
  j->timeout_ms = timeout_ms;
  uv_mutex_lock(&mu);
  if (tail)
    tail->next = j;
  else
    head = j;
  tail = j;
  uv_cond_signal(&cv);
  uv_mutex_unlock(&mu);
  return 0;
}

void kh__pyi_cancel(const char *id) {
  job_t *j;
  uv_once(&once, start_threads);
  if (start_failed) return;
  uv_mutex_lock(&mu);
  for (j = head; j != NULL; j = j->next)
    if (strcmp(j->id, id) == 0) j->canceled = 1;
  if (running != NULL && strcmp(running->id, id) == 0 && running_stop == 0) {
    /* The watchdog raises in it now (this thread never waits for the GIL). */
    running_stop = KH_ECANCELED;
    running_until = 0;
    uv_cond_signal(&wcv);
  }
  uv_mutex_unlock(&mu);
}

/* backend-host.c: main_thread kernels created with thread: "host", DESIGN.md section 3's fast
 * path for hosts that only make blocking calls (C, Lua game loops): each cell runs on the loop
 * thread itself, inside the call that starts it, so no thread is woken twice per request
 * (1+1 in ~12 us from C against ~25-90 us through a kernel thread, bench/). Thread: loop.
 *
 * Its events and reply still travel through the kernel's sink and the inbox, so every callback
 * runs from the loop as usual, never inside the call. While a cell runs the loop is blocked:
 * nothing can interrupt it (interrupt is a no-op between cells), and maxExecutionTime, execute
 * timeouts and input() are refused for such kernels (options.c, request.c, the runtime). One
 * kernel's cells always run on this one thread (thread-locals and asyncio depend on it).
 *
 * Host functions (hostcall.c) called by such a cell run at once, on this thread, inside the
 * cell (and so inside the API call that ran it: the one exception to the rule that no user
 * callback runs inside an API call), and must answer before they return. One may destroy or
 * restart its own kernel, or close the manager: the cell is on this thread's stack then, so
 * its Python state is closed only once the cell has returned (stop_after_cell). */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef struct {
  kh__pyk_t *py;       /* NULL once stopped, or when Python could not be opened */
  int in_cell;         /* a cell of this kernel is on the stack (a host function runs in it) */
  int stop_after_cell; /* stop() came from inside that cell: it finishes when the cell returns */
} host_t;

static void host_stopped(kh_kernel_t *k, void *arg);

static int post_status(kh_kernel_t *k, int kind, int rc, const char *errmsg) {
  return kh__sink_post(k->sink, kind, 0, rc, NULL, errmsg, errmsg ? strlen(errmsg) : 0);
}

static int host_start(kh_kernel_t *k) {
  host_t *h = calloc(1, sizeof(*h));
  char errmsg[KH__ERRMSG_MAX] = "";
  int rc;
  if (h == NULL) return KH_ENOMEM;
  k->backend = h;
  /* The first kernel of the process waits here for CPython to start (tens of ms, once). The
   * outcome is posted, so the create callback still runs from the loop. */
  rc = kh__py_kernel_open(&h->py, k->sink, k->id, 1, k->opts.figure_formats,
                          k->opts.binary_base64, errmsg);
  post_status(k, KH__MSG_READY, rc, errmsg);
  return 0;
}

static int host_execute(kh_kernel_t *k, kh__request_t *r) {
  host_t *h = k->backend;
  size_t n = 0;
  kh__bufs_t bufs = {0};
  char *reply;
  kh_kernel_t *prev;
  if (h->py == NULL || h->in_cell) return KH_ECLOSED;
  h->in_cell = 1;
  prev = kh__hostcall_host_enter(k);
  if (r->comm_type != NULL)
    reply = kh__py_kernel_comm(h->py, r->exec_id, r->comm_type, r->code, r->len, &r->comm_bufs,
                               &n);
  else
    reply = kh__py_kernel_execute(h->py, r->exec_id, r->code, r->len, r->silent,
                                  r->store_history, r->allow_stdin, &n, &bufs);
  kh__hostcall_host_leave(prev);
  h->in_cell = 0;
  if (reply != NULL) kh__sink_post_bufs(k->sink, KH__MSG_REPLY, 0, 0, r->exec_id, reply, n, &bufs);
  free(reply);
  if (h->stop_after_cell) { /* destroyed from inside the cell: now it can go */
    kh__py_kernel_close(h->py);
    h->py = NULL;
    kh__sink_post_call(k->sink, host_stopped, NULL);
    return 0;
  }
  return reply == NULL ? KH_ENOMEM : 0;
}

static int host_interrupt(kh_kernel_t *k) {
  (void)k; /* the loop can only call this between cells: there is nothing to interrupt */
  return 0;
}

static int host_input_reply(kh_kernel_t *k, const char *value, size_t len) {
  (void)value;
  (void)len;
  kh__set_err(k->m->errmsg, "kernel \"%s\" runs on the host thread: input() is refused there",
              k->id);
  return KH_ENOTSUP;
}

static int host_reset(kh_kernel_t *k) {
  host_t *h = k->backend;
  char errmsg[KH__ERRMSG_MAX] = "";
  int rc;
  /* kernel.c resets only once the running cell replied, and a host function cannot wait for that
   * reply: this cannot come from inside the cell. Refused if it ever did. */
  if (h->in_cell) return KH_EBUSY;
  rc = h->py ? kh__py_kernel_reset(h->py, errmsg) : KH_EPYTHON;
  post_status(k, KH__MSG_RESET, rc, errmsg);
  return 0;
}

/* Posted by host_stop: reached once every message the kernel posted before has been run. */
static void host_stopped(kh_kernel_t *k, void *arg) {
  (void)arg;
  free(k->backend);
  k->backend = NULL;
  kh__kernel_on_stopped(k);
}

static void host_stop(kh_kernel_t *k) {
  host_t *h = k->backend;
  if (h->in_cell) {
    h->stop_after_cell = 1; /* host_execute finishes the stop once the cell has returned */
    return;
  }
  if (h->py != NULL) {
    kh__py_kernel_close(h->py);
    h->py = NULL;
  }
  kh__sink_post_call(k->sink, host_stopped, NULL);
}

/* Served by the interact thread (py-interact.c) as for kernel threads: the loop thread itself
 * never runs them, and between cells it does not hold the GIL. */
static int host_interact(kh_kernel_t *k, const char *id, const char *op, const char *content,
                         size_t len, uint64_t timeout_ms) {
  host_t *h = k->backend;
  if (h->py == NULL) return KH_EKERNELDEAD;
  return kh__py_kernel_interact(h->py, k->sink, id, op, content, len, timeout_ms);
}

const kh__backend_t kh__host_backend = {
    .name = "host",
    .start = host_start,
    .execute = host_execute,
    .interrupt = host_interrupt,
    .input_reply = host_input_reply,
    .reset = host_reset,
    .stop = host_stop,
    .interact = host_interact,
    .interact_cancel = kh__py_interact_cancel,
    .index = KH__BACKEND_HOST,
};

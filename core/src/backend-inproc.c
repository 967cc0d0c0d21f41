/* backend-inproc.c: main_thread kernels: one kernel thread per kernel runs its Python; the
 * loop hands it work through a one-slot mailbox, and it answers through the kernel's sink. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef enum { CMD_EXEC = 1, CMD_RESET } cmd_kind_t;

typedef struct cmd_s {
  struct cmd_s *next;
  cmd_kind_t kind;
  char exec_id[KH__EXEC_ID_MAX];
  char *code; /* owned */
  size_t len;
  int silent;
  int store_history;
} cmd_t;

typedef struct {
  uv_thread_t tid;
  uv_mutex_t mu;
  uv_cond_t cv;
  cmd_t *head;        /* guarded by mu */
  cmd_t *tail;        /* guarded by mu */
  kh__pyk_t *py;      /* guarded by mu: set by the kernel thread while it has Python state */
  int exit_requested; /* guarded by mu */
  int host;           /* thread: "host": no kernel thread, cells run on the loop thread */
  kh__sink_t *sink;
  char id[KH__ID_MAX];
} inproc_t;

static void post_cmd(inproc_t *ip, cmd_t *c) {
  uv_mutex_lock(&ip->mu);
  if (ip->tail)
    ip->tail->next = c;
  else
    ip->head = c;
  ip->tail = c;
  uv_cond_signal(&ip->cv);
  uv_mutex_unlock(&ip->mu);
}

static void kernel_thread(void *arg) {
  inproc_t *ip = arg;
  kh__pyk_t *py = NULL;
  char errmsg[KH__ERRMSG_MAX] = "";
  int rc = kh__py_kernel_open(&py, ip->sink, ip->id, 0, errmsg);
  if (rc == 0) {
    uv_mutex_lock(&ip->mu);
    ip->py = py;
    uv_mutex_unlock(&ip->mu);
  }
  kh__sink_post(ip->sink, KH__MSG_READY, 0, rc, NULL, errmsg, strlen(errmsg));
  for (;;) {
    cmd_t *c;
    uv_mutex_lock(&ip->mu);
    while (ip->head == NULL && !ip->exit_requested) uv_cond_wait(&ip->cv, &ip->mu);
    c = ip->head;
    if (c == NULL) {
      ip->py = NULL; /* no more interrupts aimed at us */
      uv_mutex_unlock(&ip->mu);
      break;
    }
    ip->head = c->next;
    if (ip->head == NULL) ip->tail = NULL;
    uv_mutex_unlock(&ip->mu);

    if (c->kind == CMD_EXEC) {
      size_t n = 0;
      char *reply = py ? kh__py_kernel_execute(py, c->exec_id, c->code, c->len, c->silent,
                                               c->store_history, &n)
                       : NULL;
      if (reply == NULL) {
        static const char oom[] =
            "{\"status\":\"error\",\"execution_count\":0,\"error\":{"
            "\"ename\":\"MemoryError\",\"evalue\":\"no reply\","
            "\"traceback\":[]}}";
        kh__sink_post(ip->sink, KH__MSG_REPLY, 0, 0, c->exec_id, oom, sizeof(oom) - 1);
      } else {
        kh__sink_post(ip->sink, KH__MSG_REPLY, 0, 0, c->exec_id, reply, n);
        free(reply);
      }
    } else if (c->kind == CMD_RESET) {
      errmsg[0] = '\0';
      rc = py ? kh__py_kernel_reset(py, errmsg) : KH_EPYTHON;
      kh__sink_post(ip->sink, KH__MSG_RESET, 0, rc, NULL, errmsg, strlen(errmsg));
    }
    free(c->code);
    free(c);
  }
  if (py) kh__py_kernel_close(py);
  kh__sink_post(ip->sink, KH__MSG_EXITED, 0, 0, NULL, NULL, 0);
}

static int inproc_start(kh_kernel_t *k) {
  inproc_t *ip = calloc(1, sizeof(*ip));
  uv_thread_options_t to;
  int rc;
  if (ip == NULL) return KH_ENOMEM;
  if (uv_mutex_init(&ip->mu) != 0) {
    free(ip);
    return KH_ENOMEM;
  }
  if (uv_cond_init(&ip->cv) != 0) {
    uv_mutex_destroy(&ip->mu);
    free(ip);
    return KH_ENOMEM;
  }
  ip->sink = k->sink;
  kh__sink_ref(ip->sink);
  memcpy(ip->id, k->id, sizeof(ip->id));
  /* Python code recurses deeply (pandas, matplotlib): give the thread a full-size stack. */
  to.flags = UV_THREAD_HAS_STACK_SIZE;
  to.stack_size = 16u << 20;
  rc = uv_thread_create_ex(&ip->tid, &to, kernel_thread, ip);
  if (rc != 0) {
    kh__sink_unref(ip->sink);
    uv_cond_destroy(&ip->cv);
    uv_mutex_destroy(&ip->mu);
    free(ip);
    return rc;
  }
  k->backend = ip;
  return 0;
}

static int inproc_execute(kh_kernel_t *k, kh__request_t *r) {
  inproc_t *ip = k->backend;
  cmd_t *c = calloc(1, sizeof(*c));
  if (c == NULL) return KH_ENOMEM;
  c->kind = CMD_EXEC;
  memcpy(c->exec_id, r->exec_id, sizeof(c->exec_id));
  /* The request keeps its code for the caller's lifetime rules; the thread gets its own. */
  c->code = r->code;
  r->code = NULL;
  c->len = r->len;
  c->silent = r->silent;
  c->store_history = r->store_history;
  post_cmd(ip, c);
  return 0;
}

static int inproc_interrupt(kh_kernel_t *k) {
  inproc_t *ip = k->backend;
  uv_mutex_lock(&ip->mu);
  if (ip->py != NULL && k->running != NULL) kh__py_kernel_interrupt(ip->py, k->running->exec_id);
  uv_mutex_unlock(&ip->mu);
  return 0;
}

static int inproc_input_reply(kh_kernel_t *k, const char *value) {
  inproc_t *ip = k->backend;
  uv_mutex_lock(&ip->mu);
  if (ip->py != NULL) kh__py_kernel_input_reply(ip->py, value);
  uv_mutex_unlock(&ip->mu);
  return 0;
}

static int inproc_reset(kh_kernel_t *k) {
  inproc_t *ip = k->backend;
  cmd_t *c = calloc(1, sizeof(*c));
  if (c == NULL) return KH_ENOMEM;
  c->kind = CMD_RESET;
  post_cmd(ip, c);
  return 0;
}

static void inproc_stop(kh_kernel_t *k) {
  inproc_t *ip = k->backend;
  /* The thread finishes what it was given (the running cell was interrupted), then exits. */
  uv_mutex_lock(&ip->mu);
  ip->exit_requested = 1;
  uv_cond_signal(&ip->cv);
  uv_mutex_unlock(&ip->mu);
}

void kh__inproc_exited(kh_kernel_t *k) {
  inproc_t *ip = k->backend;
  if (ip == NULL) return;
  if (!ip->host) uv_thread_join(&ip->tid);
  while (ip->head) {
    cmd_t *c = ip->head;
    ip->head = c->next;
    free(c->code);
    free(c);
  }
  kh__sink_unref(ip->sink);
  uv_cond_destroy(&ip->cv);
  uv_mutex_destroy(&ip->mu);
  free(ip);
  k->backend = NULL;
  kh__kernel_on_stopped(k);
}

const kh__backend_ops_t kh__inproc_ops = {inproc_start,       inproc_execute, inproc_interrupt,
                                          inproc_input_reply, inproc_reset,   inproc_stop};

/* --- thread: "host" ----------------------------------------------------------------------- */

/* DESIGN.md section 3's fast path for hosts that only make blocking calls (C, Lua game loops):
 * the cell runs on the loop thread itself, inside the call that starts it, so no thread has to
 * be woken twice per request. Its events and reply still travel through the sink, so callbacks
 * run from the loop as usual, never inside the call. While a cell runs the loop is blocked:
 * nothing can interrupt it (interrupt is a no-op between cells), and maxExecutionTime, execute
 * timeouts and input() are refused for such kernels. One kernel's cells always run on this one
 * thread. */

static int host_post_status(kh_kernel_t *k, int kind, int rc, const char *errmsg) {
  return kh__sink_post(k->sink, kind, 0, rc, NULL, errmsg, errmsg ? strlen(errmsg) : 0);
}

static int host_start(kh_kernel_t *k) {
  inproc_t *ip = calloc(1, sizeof(*ip));
  char errmsg[KH__ERRMSG_MAX] = "";
  int rc;
  if (ip == NULL) return KH_ENOMEM;
  if (uv_mutex_init(&ip->mu) != 0) {
    free(ip);
    return KH_ENOMEM;
  }
  if (uv_cond_init(&ip->cv) != 0) {
    uv_mutex_destroy(&ip->mu);
    free(ip);
    return KH_ENOMEM;
  }
  ip->host = 1;
  ip->sink = k->sink;
  kh__sink_ref(ip->sink);
  memcpy(ip->id, k->id, sizeof(ip->id));
  k->backend = ip;
  /* The first kernel of the process waits here for CPython to start (tens of ms, once). */
  rc = kh__py_kernel_open(&ip->py, ip->sink, ip->id, 1, errmsg);
  host_post_status(k, KH__MSG_READY, rc, errmsg);
  return 0;
}

static int host_execute(kh_kernel_t *k, kh__request_t *r) {
  inproc_t *ip = k->backend;
  size_t n = 0;
  char *reply;
  if (ip->py == NULL) return KH_ECLOSED;
  reply = kh__py_kernel_execute(ip->py, r->exec_id, r->code, r->len, r->silent,
                                r->store_history, &n);
  if (reply == NULL) return KH_ENOMEM;
  kh__sink_post(k->sink, KH__MSG_REPLY, 0, 0, r->exec_id, reply, n);
  free(reply);
  return 0;
}

static int host_interrupt(kh_kernel_t *k) {
  (void)k; /* the loop can only call this between cells */
  return 0;
}

static int host_input_reply(kh_kernel_t *k, const char *value) {
  (void)k;
  (void)value;
  return KH_ENOTSUP;
}

static int host_reset(kh_kernel_t *k) {
  inproc_t *ip = k->backend;
  char errmsg[KH__ERRMSG_MAX] = "";
  int rc = ip->py ? kh__py_kernel_reset(ip->py, errmsg) : KH_EPYTHON;
  host_post_status(k, KH__MSG_RESET, rc, errmsg);
  return 0;
}

static void host_stop(kh_kernel_t *k) {
  inproc_t *ip = k->backend;
  if (ip->py != NULL) {
    kh__py_kernel_close(ip->py);
    ip->py = NULL;
  }
  kh__sink_post(k->sink, KH__MSG_EXITED, 0, 0, NULL, NULL, 0);
}

const kh__backend_ops_t kh__inproc_host_ops = {host_start,       host_execute, host_interrupt,
                                               host_input_reply, host_reset,   host_stop};


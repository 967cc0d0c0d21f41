/* backend-inproc.c: main_thread kernels on kernel threads: one thread per kernel runs its
 * Python (py-host.c); the loop hands it commands through a mutex-guarded list, and it answers
 * through the kernel's sink (events, replies, readiness), so everything it says reaches the
 * loop through the inbox in the order it said it. Thread: loop, except kernel_thread().
 *
 * A destroyed kernel's thread normally finishes its cell (interrupted by the destroy), exits,
 * and is joined. One that is still in its cell a grace period later (interruptGraceMs) is
 * stuck where no interrupt can reach it: in a C call that ignores asynchronous exceptions
 * (a second acquire() of a threading.Lock, select() or os.read() that nothing wakes) or in a
 * loop that swallows KeyboardInterrupt. A thread cannot be killed, so it is abandoned: detached
 * and left where it is, and the kernel is declared destroyed. Such a thread owns its inproc_t
 * from then on; if its cell ever ends, it closes its Python state and frees it, unheard. It
 * does not keep the process from exiting: it is detached (nobody joins it) and the interpreter
 * is never finalized (py-start.c), so exit() never waits for it. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef enum { CMD_EXEC = 1, CMD_RESET, CMD_COMM } cmd_kind_t;

typedef struct cmd_s {
  struct cmd_s *next;
  cmd_kind_t kind;
  char exec_id[KH__EXEC_ID_MAX];
  const char *comm_type; /* static (CMD_COMM) */
  char *code;            /* owned: the cell, or the comm message's content */
  kh__bufs_t bufs;       /* owned: the comm message's buffers (CMD_COMM) */
  size_t len;
  int silent;
  int store_history;
  int allow_stdin;
} cmd_t;

typedef struct {
  uv_thread_t tid;
  uv_mutex_t mu;
  uv_cond_t cv;
  cmd_t *head;        /* guarded by mu */
  cmd_t *tail;        /* guarded by mu */
  kh__pyk_t *py;      /* guarded by mu: set by the kernel thread while it has Python state */
  int exit_requested; /* guarded by mu */
  int exited;         /* guarded by mu: the thread is done; its last message is posted */
  int abandoned;      /* guarded by mu: the loop let go; the thread frees this when done */
  kh__sink_t *sink;   /* a reference of the thread's own: the kernel may release its one */
  char id[KH__ID_MAX];
  json_t *figure_formats; /* owned by the thread until it opened Python: the option's copy */
  int binary_base64;
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

static void inproc_exited(kh_kernel_t *k, void *arg);

/* Frees ip and everything it still holds (commands never run, the sink reference). */
static void inproc_free(inproc_t *ip) {
  while (ip->head) {
    cmd_t *c = ip->head;
    ip->head = c->next;
    free(c->code);
    kh__bufs_free(&c->bufs);
    free(c);
  }
  kh__sink_unref(ip->sink);
  uv_cond_destroy(&ip->cv);
  uv_mutex_destroy(&ip->mu);
  free(ip);
}

/* The kernel thread: opens its Python state (the first one waits for CPython to start), then
 * runs commands until told to exit. It never touches the kernel (loop-thread data): it has its
 * own copies of what it needs and talks back only through the sink, which outlives the kernel
 * if need be (threads a cell started may still print after a destroy). */
static void kernel_thread(void *arg) {
  inproc_t *ip = arg;
  kh__pyk_t *py = NULL;
  char errmsg[KH__ERRMSG_MAX] = "";
  int rc = kh__py_kernel_open(&py, ip->sink, ip->id, 0, ip->figure_formats, ip->binary_base64,
                              errmsg);
  json_decref(ip->figure_formats);
  ip->figure_formats = NULL;
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

    if (c->kind == CMD_EXEC || c->kind == CMD_COMM) {
      size_t n = 0;
      kh__bufs_t bufs = {0};
      char *reply = py == NULL ? NULL
                    : c->kind == CMD_EXEC
                        ? kh__py_kernel_execute(py, c->exec_id, c->code, c->len, c->silent,
                                                c->store_history, c->allow_stdin, &n, &bufs)
                        : kh__py_kernel_comm(py, c->exec_id, c->comm_type, c->code, c->len,
                                             &c->bufs, &n);
      if (reply == NULL) {
        static const char oom[] =
            "{\"status\":\"error\",\"execution_count\":0,\"error\":{"
            "\"ename\":\"MemoryError\",\"evalue\":\"no reply\","
            "\"traceback\":[]}}";
        kh__sink_post(ip->sink, KH__MSG_REPLY, 0, 0, c->exec_id, oom, sizeof(oom) - 1);
      } else {
        kh__sink_post_bufs(ip->sink, KH__MSG_REPLY, 0, 0, c->exec_id, reply, n, &bufs);
        free(reply);
      }
    } else if (c->kind == CMD_RESET) {
      errmsg[0] = '\0';
      rc = py ? kh__py_kernel_reset(py, errmsg) : KH_EPYTHON;
      kh__sink_post(ip->sink, KH__MSG_RESET, 0, rc, NULL, errmsg, strlen(errmsg));
    }
    free(c->code);
    kh__bufs_free(&c->bufs);
    free(c);
  }
  if (py) kh__py_kernel_close(py);
  uv_mutex_lock(&ip->mu);
  ip->exited = 1;
  rc = ip->abandoned;
  uv_mutex_unlock(&ip->mu);
  if (rc) {
    inproc_free(ip); /* abandoned (see the top of this file): nobody waits for us */
    return;
  }
  /* The loop joins the thread when this arrives, so its last words are this message. */
  kh__sink_post_call(ip->sink, inproc_exited, NULL);
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
  /* A copy of the thread's own: the loop may read the kernel's options meanwhile (info). */
  ip->figure_formats = json_deep_copy(k->opts.figure_formats); /* NULL stays NULL */
  ip->binary_base64 = k->opts.binary_base64;
  rc = k->opts.figure_formats != NULL && ip->figure_formats == NULL ? KH_ENOMEM : 0;
  /* Python code recurses deeply (pandas, matplotlib): give the thread a full-size stack. */
  to.flags = UV_THREAD_HAS_STACK_SIZE;
  to.stack_size = 16u << 20;
  if (rc == 0) rc = uv_thread_create_ex(&ip->tid, &to, kernel_thread, ip);
  if (rc != 0) {
    json_decref(ip->figure_formats);
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
  c->kind = r->comm_type != NULL ? CMD_COMM : CMD_EXEC;
  c->comm_type = r->comm_type;
  kh__bufs_move(&c->bufs, &r->comm_bufs);
  memcpy(c->exec_id, r->exec_id, sizeof(c->exec_id));
  /* The request keeps its code for the caller's lifetime rules; the thread gets its own. */
  c->code = r->code;
  r->code = NULL;
  c->len = r->len;
  c->silent = r->silent;
  c->store_history = r->store_history;
  c->allow_stdin = r->allow_stdin;
  post_cmd(ip, c);
  return 0;
}

/* Interrupts go through the Python service thread (py-host.c), not this kernel's thread, which
 * is busy running the cell; they name the cell, so one that arrives after the cell ended (or
 * before it began on the thread) cannot hit the next one. */
static int inproc_interrupt(kh_kernel_t *k) {
  inproc_t *ip = k->backend;
  uv_mutex_lock(&ip->mu);
  if (ip->py != NULL && k->running != NULL) kh__py_kernel_interrupt(ip->py, k->running->exec_id);
  uv_mutex_unlock(&ip->mu);
  return 0;
}

static int inproc_input_reply(kh_kernel_t *k, const char *value, size_t len) {
  inproc_t *ip = k->backend;
  uv_mutex_lock(&ip->mu);
  if (ip->py != NULL) kh__py_kernel_input_reply(ip->py, value, len);
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

/* The thread is never killed (a thread holding the GIL cannot be): the running cell was
 * interrupted by destroy, and if it has not ended a grace period later, inproc_abandon lets
 * go of it. */
static void inproc_stop(kh_kernel_t *k) {
  inproc_t *ip = k->backend;
  /* The thread finishes what it was given (the running cell was interrupted), then exits. */
  uv_mutex_lock(&ip->mu);
  ip->exit_requested = 1;
  uv_cond_signal(&ip->cv);
  uv_mutex_unlock(&ip->mu);
}

/* The kernel thread posted its last message: join it, then the kernel may go. */
static void inproc_exited(kh_kernel_t *k, void *arg) {
  inproc_t *ip = k->backend;
  (void)arg;
  if (ip == NULL) return;
  uv_thread_join(&ip->tid);
  inproc_free(ip);
  k->backend = NULL;
  kh__kernel_on_stopped(k);
}

static void inproc_abandoned(kh_kernel_t *k, void *arg) {
  (void)arg;
  kh__kernel_on_stopped(k);
}

/* The destroyed kernel's cell is stuck (see the top of this file): detach its thread and let
 * the destroy complete, unless the thread exited meanwhile (then inproc_exited joins it). */
static void inproc_abandon(kh_kernel_t *k) {
  inproc_t *ip = k->backend;
  int exited;
  if (ip == NULL) return;
  uv_mutex_lock(&ip->mu);
  exited = ip->exited;
  if (!exited) {
    ip->abandoned = 1;
    ip->py = NULL; /* the loop will not use it again */
  }
  uv_mutex_unlock(&ip->mu);
  if (exited) return;
  /* From here ip belongs to the thread: the loop never touches it again. */
  pthread_detach(ip->tid);
  k->backend = NULL;
  /* Posted: the upcall runs from the loop, behind what the kernel already said. */
  if (kh__sink_post_call(k->sink, inproc_abandoned, NULL) != 0) kh__kernel_on_stopped(k);
}

/* Editor requests go to the interact thread (py-interact.c), not to this kernel's thread, which
 * may be running a cell. */
static int inproc_interact(kh_kernel_t *k, const char *id, const char *op, const char *content,
                           size_t len, uint64_t timeout_ms) {
  inproc_t *ip = k->backend;
  int rc = KH_EKERNELDEAD;
  if (ip == NULL) return rc; /* abandoned: its thread is stuck in a cell */
  uv_mutex_lock(&ip->mu);
  if (ip->py != NULL)
    rc = kh__py_kernel_interact(ip->py, ip->sink, id, op, content, len, timeout_ms);
  uv_mutex_unlock(&ip->mu);
  return rc;
}

const kh__backend_t kh__inproc_backend = {
    .name = "inproc",
    .start = inproc_start,
    .execute = inproc_execute,
    .interrupt = inproc_interrupt,
    .input_reply = inproc_input_reply,
    .reset = inproc_reset,
    .stop = inproc_stop,
    .abandon = inproc_abandon,
    .interact = inproc_interact,
    .interact_cancel = kh__py_interact_cancel,
    .index = KH__BACKEND_INPROC,
};

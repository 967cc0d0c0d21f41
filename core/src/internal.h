/* internal.h: declarations shared between the core's source files (never installed). */
#ifndef KH_INTERNAL_H
#define KH_INTERNAL_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>
#include <uv.h>

#include "kernelhost.h"
#include "protocol.h"

/* A kernel is internal: the public API names kernels by their string id. */
typedef struct kh_kernel_s kh_kernel_t;

#define KH__ID_MAX 64      /* kernel id, including the NUL */
#define KH__EXEC_ID_MAX 40 /* execution id, including the NUL */
/* The worker protocol checks ids against these sizes (protocol.h): no id is ever cut short. */
_Static_assert(KH__ID_MAX == KH__P_KERNEL_ID_MAX + 1, "kernel id sizes");
_Static_assert(KH__EXEC_ID_MAX == KH__P_EXEC_ID_MAX + 1, "execution id sizes");
#define KH__ERRMSG_MAX 1024

/* --- small utilities (util.c) ------------------------------------------------------------ */

typedef struct {
  char *buf;
  size_t len;
  size_t cap;
  int oom;
} kh__strbuf_t;

void kh__sb_append(kh__strbuf_t *sb, const char *s, size_t n);
void kh__sb_puts(kh__strbuf_t *sb, const char *s);
char *kh__sb_take(kh__strbuf_t *sb); /* owned, NUL-terminated; NULL after an OOM */
void kh__sb_free(kh__strbuf_t *sb);

char *kh__strdup(const char *s);
void *kh__memdup(const void *p, size_t n);
/* A random UUID-4 string into out (at least 37 bytes). Thread: any. */
void kh__uuid(char *out);
double kh__now_ms(void); /* wall clock, ms since the epoch */
void kh__set_err(char *buf, const char *fmt, ...);

/* Validates code for execution: UTF-8, no NUL, at most max bytes. Fills errmsg. */
int kh__check_code(const char *code, size_t len, size_t max, char *errmsg);
/* 1 when the len bytes at s are valid UTF-8 (NUL bytes included), else 0. Thread: any. */
int kh__utf8_valid(const char *s, size_t len);
/* The length of the UTF-8 sequence at p (n bytes available): > 0 a valid one, 0 cut short but
 * possibly valid (more bytes may follow), < 0 invalid: minus the length of its maximal
 * ill-formed prefix (Unicode's "maximal subpart", one U+FFFD each, as Python's "replace" and
 * WHATWG decoders make). Thread: any. */
int kh__utf8_seq(const unsigned char *p, size_t n);

/* --- binary values beside JSON (util.c): the owned side of kh_buffer_t ---------------------
 * A blob is one refcounted allocation of bytes, shared by everything that hands the same bytes
 * out (the event and the reply's outputs list), so a 1 MB image is copied once on its way in
 * and never again. A buffer list pairs blobs with their JSON Pointer paths. Thread: any (the
 * count is atomic; a list has one owner at a time). */
typedef struct kh__blob_s {
  atomic_int refs;
  size_t len;
  char data[]; /* len bytes (+ a NUL, so text tools never run off the end) */
} kh__blob_t;

kh__blob_t *kh__blob_new(const void *data, size_t len); /* a copy; NULL when out of memory */
void kh__blob_ref(kh__blob_t *b);
void kh__blob_unref(kh__blob_t *b);

typedef struct {
  char *path; /* owned */
  kh__blob_t *blob;
} kh__buf_t;

typedef struct {
  kh__buf_t *v; /* owned */
  size_t n;
  size_t cap;
} kh__bufs_t;

/* Appends (prefix + path, blob) taking a new reference to blob. Returns 0 or KH_ENOMEM. */
int kh__bufs_add(kh__bufs_t *bs, const char *prefix, const char *path, kh__blob_t *blob);
/* Appends a copy of data. Returns 0 or KH_ENOMEM. */
int kh__bufs_add_copy(kh__bufs_t *bs, const char *path, const void *data, size_t len);
void kh__bufs_free(kh__bufs_t *bs); /* drops every reference; bs is empty (reusable) after */
/* Moves src's entries to dst (src empty after). */
void kh__bufs_move(kh__bufs_t *dst, kh__bufs_t *src);
/* Public views of bs for a callback: an array of bs->n kh_buffer_t (owned: free()), or NULL
 * when bs is empty or memory ran out (then *n is 0). */
kh_buffer_t *kh__bufs_view(const kh__bufs_t *bs, size_t *n);
/* Checks public buffers handed in by a host: paths are JSON Pointers to a null in doc (a parsed
 * JSON value), no path twice. Returns 0 or KH_EINVAL with errmsg. */
int kh__bufs_check(const json_t *doc, const kh_buffer_t *b, size_t n, char *errmsg);
/* The value at JSON Pointer `path` in doc (borrowed), or NULL. */
json_t *kh__json_pointer(const json_t *doc, const char *path);

/* --- options (options.c) ------------------------------------------------------------------
 * Parsed from one table of option specs per kind (the names, types, ranges and modes are listed
 * there). Keys are accepted in snake_case or camelCase; the normalised object `all` uses
 * snake_case, as every JSON the core hands out does. Thread: loop. */

typedef enum { KH__MODE_WORKER = 0, KH__MODE_MAIN_THREAD = 1, KH__MODE_REMOTE = 2 } kh__mode_t;

#define KH__NO_LIMIT UINT64_MAX /* an unsigned limit that was not given */

typedef struct {
  kh__mode_t mode;
  char id[KH__ID_MAX];       /* "" when not given */
  char *namespace_;          /* owned, never NULL ("default") */
  uint64_t max_execution_ms; /* 0: no limit */
  uint64_t inactivity_ms;    /* 0: no limit */
  int host_thread;           /* thread: "host": main_thread cells run on the loop thread */
  int auto_restart;          /* worker: a crashed worker is replaced by a new process */
  uint64_t max_output_bytes; /* limits.max_output_bytes per cell, or KH__NO_LIMIT */
  json_t *env;               /* borrowed from all: {name: value} to set, or NULL */
  const char *cwd;           /* borrowed from all: the worker's directory, or NULL */
  json_t *figure_formats;    /* borrowed from all: an array of figure format names, or NULL */
  int binary_base64;         /* binary: "base64": binary values as base64 strings in the JSON */
  const char *kernel_name;   /* remote, borrowed from all: the kernelspec, or NULL */
  const char *remote_id;     /* remote, borrowed from all: the kernel to attach to, or NULL */
  int shutdown;              /* remote: destroy shuts the remote kernel down (-1: not given) */
  json_t *all;               /* owned: the normalised options object (for workers and info) */
} kh__kernel_opts_t;

/* kh_jupyter_serve's options: `all` is the normalised object (owned), shutdown the index of
 * "stop", "destroy", "none". */
typedef struct {
  json_t *all;
  int shutdown;
} kh__jupyter_opts_t;
int kh__jupyter_opts_parse(kh__jupyter_opts_t *o, const char *text, char *errmsg);

typedef struct {
  size_t max_code_bytes;
  uint64_t interrupt_grace_ms;
  char *worker_path; /* owned or NULL */
  int pool_size;
  int pool_fork;         /* pool.mode "fork": a fork server (worker-pool.c) */
  json_t *pool_preload;  /* owned with pool_fork (an array of module names), else NULL */
  json_t *gateway; /* owned or NULL: the normalised gateway object (snake_case keys) */
} kh__manager_opts_t;

/* Both return 0, KH_EOPTION (a bad value, an unknown key: errmsg names the option's path as
 * the caller spelled it) or KH_ENOTSUP (an option the mode cannot honour), or KH_ENOMEM. On
 * failure nothing needs freeing. */
int kh__kernel_opts_parse(kh__kernel_opts_t *o, const char *json, char *errmsg);
void kh__kernel_opts_free(kh__kernel_opts_t *o);
int kh__manager_opts_parse(kh__manager_opts_t *o, const char *json, char *errmsg);
void kh__manager_opts_free(kh__manager_opts_t *o);
const char *kh__mode_name(kh__mode_t mode);
/* Splits one permissions.net entry: "host", "host:port", "[v6]" or "[v6]:port". Returns 0
 * (*port 0 when none is given) or -1 when it is malformed or the port is not 1..65535. */
int kh__net_grant_parse(const char *s, char *host, size_t hn, int *port);

/* --- references: "free when the last handle closes" (util.c) ------------------------------ */

/* What keeps an object's memory alive: its open libuv handles, and anything else that says so
 * with kh__refs_get(). The last kh__refs_put() calls `release`, which frees the object. One
 * scheme for every object that owns handles (kernels, worker processes, the pool, ...), so
 * the rule "handle memory stays valid until its close callback has run" is kept in one place.
 * Thread: loop. */
typedef struct kh__refs_s {
  int n; /* open handles + explicit references; the object is freed when it reaches 0 */
  void (*release)(struct kh__refs_s *r);
} kh__refs_t;

void kh__refs_init(kh__refs_t *r, void (*release)(kh__refs_t *r)); /* n = 0 */
void kh__refs_get(kh__refs_t *r);
void kh__refs_put(kh__refs_t *r);
/* Counts an initialised handle: call once per handle after its uv_*_init() succeeded. */
#define kh__refs_handle(r, h) kh__refs_get(r)
/* Closes `h` and drops one reference of `r` once its close callback has run. It takes over
 * h->data (no other callback of a closing handle runs, so nothing reads it any more). */
void kh__refs_close(kh__refs_t *r, uv_handle_t *h);

/* --- the inbox: the manager's one FIFO of work for the loop (inbox.c) ---------------------- */

/* Everything that reaches a user callback passes through the manager's inbox, a mutex-guarded
 * FIFO drained by one uv_async_t on the loop: events and replies that kernel threads post
 * (through their sink), and the deliveries the core itself defers (status events, replies,
 * cancellations, completions). Hence libuv's rule holds by construction: no user callback
 * runs inside the API call that caused it, and callbacks run in the order their causes
 * happened, whichever thread saw them. */

typedef void (*kh__call_fn)(kh_manager_t *m, void *arg);
typedef void (*kh__kernel_call_fn)(kh_kernel_t *k, void *arg);

typedef enum {
  KH__MSG_EVENT = 1, /* a kernel's event: type, exec_id, data = payload JSON */
  KH__MSG_READY,     /* the backend started: status, data = error message */
  KH__MSG_REPLY,     /* a request's reply: exec_id, data = reply JSON */
  KH__MSG_RESET,     /* a restart finished: status, data = error message */
  KH__MSG_KCALL,     /* kcall(kernel, arg) if the kernel still exists (backend-private news) */
  KH__MSG_CALL,      /* call(manager, arg): a delivery the loop deferred (serial 0) */
  KH__MSG_ANSWER     /* an editor request's answer: exec_id (its id), status, data (interact.c) */
} kh__msg_kind_t;

typedef struct kh__msg_s {
  struct kh__msg_s *next;
  uint64_t serial; /* the kernel's serial; 0 for KH__MSG_CALL */
  int kind;
  int type;
  int status;
  char exec_id[KH__EXEC_ID_MAX];
  size_t len;
  char *data; /* owned, NUL-terminated, may be NULL */
  kh__bufs_t bufs; /* owned: data's binary values (events, replies), usually empty */
  kh__call_fn call;
  kh__kernel_call_fn kcall;
  void *arg;
  /* Frees arg when the message never runs (its kernel left, the inbox is discarded); NULL when
   * arg needs no freeing. Set by kh__sink_post_owned(). */
  void (*drop)(void *arg);
} kh__msg_t;

typedef struct kh__inbox_s {
  uv_mutex_t mu;
  kh__msg_t *head; /* guarded by mu */
  kh__msg_t *tail; /* guarded by mu */
  uv_async_t *async;
} kh__inbox_t;

/* A refcounted handle a kernel's threads (and Python objects) post through. Once closed it
 * drops everything, so threads a cell started may outlive their kernel safely. */
typedef struct kh__sink_s {
  atomic_int refs; /* the kernel's own reference + one per thread or Python object holding it */
  uv_mutex_t mu;
  int closed;         /* guarded by mu */
  kh__inbox_t *inbox; /* guarded by mu: valid while !closed */
  uint64_t serial;
  /* The names of the host functions exposed to the kernel (hostcall.c), each NUL-terminated,
   * then one more NUL; NULL when none is: the only thing of the host a main_thread kernel's
   * Python can see (py-hostcall.c reads it through the kernel's capsule). Guarded by mu. */
  char *host_names;
} kh__sink_t;

kh__sink_t *kh__sink_new(kh__inbox_t *inbox, uint64_t serial);
void kh__sink_ref(kh__sink_t *s);   /* Thread: any */
void kh__sink_unref(kh__sink_t *s); /* Thread: any */
void kh__sink_close(kh__sink_t *s); /* Thread: loop */
/* Posts a message; copies exec_id and data. Returns 0, or KH_ECLOSED when dropped. Thread: any */
int kh__sink_post(kh__sink_t *s, int kind, int type, int status, const char *exec_id,
                  const char *data, size_t len);
/* The same with data's binary values, taken from bufs (empty after, whatever the result). */
int kh__sink_post_bufs(kh__sink_t *s, int kind, int type, int status, const char *exec_id,
                       const char *data, size_t len, kh__bufs_t *bufs);
/* Posts fn(kernel, arg), run from the loop if the kernel still exists then (else dropped: arg
 * must not need freeing). Thread: any. Returns 0, KH_ECLOSED or KH_ENOMEM. */
int kh__sink_post_call(kh__sink_t *s, kh__kernel_call_fn fn, void *arg);
/* The same with an argument the message owns: fn(kernel, arg) takes it over when it runs; when
 * the message never runs (the kernel left, the manager closed), drop(arg) frees it, on the loop
 * thread. On an error return (KH_ECLOSED, KH_ENOMEM) arg is still the caller's. Thread: any. */
int kh__sink_post_owned(kh__sink_t *s, kh__kernel_call_fn fn, void *arg, void (*drop)(void *));
/* The exposed names (hostcall.c's format above; copied, NULL for none): set by the loop, read by
 * a kernel's threads. has_name: 1 when `name` is one of them. copy_names: an owned copy of the
 * list (*len bytes), or NULL when none. Thread: any. */
int kh__sink_set_names(kh__sink_t *s, const char *names, size_t len);
int kh__sink_has_name(kh__sink_t *s, const char *name);
char *kh__sink_copy_names(kh__sink_t *s, size_t *len);
/* Queues fn(m, arg) behind everything already in the inbox. fn always runs exactly once: from
 * the drain, or when the manager's inbox is discarded at close (then it must free arg and
 * call nothing; it can tell by m->inbox_discarding). Returns 0 or KH_ENOMEM. Thread: loop. */
int kh__defer(kh_manager_t *m, kh__call_fn fn, void *arg);
/* Between hold and release, deliveries queued by the loop thread do not wake the loop; the
 * release does, once. For a wake-up that can wait until after a hand-off to another thread
 * (the busy status, queued before the cell is given to a kernel thread). Thread: loop. */
void kh__inbox_hold(kh_manager_t *m);
void kh__inbox_release(kh_manager_t *m);
/* The inbox's uv_async_t callback: runs every queued message, oldest first, including those
 * queued while it runs. Thread: loop. */
void kh__inbox_drain(kh_manager_t *m);
/* Whether nothing is queued: an upcall from a loop callback may then deliver at once and
 * still keep the order (nothing that happened before it waits in the queue). Thread: loop. */
int kh__inbox_empty(kh_manager_t *m);
/* Drops every queued message (manager close, after the last delivery). Thread: loop. */
void kh__inbox_discard(kh_manager_t *m);

/* --- requests and kernels (kernel.c, request.c) ------------------------------------------- */

typedef struct kh__request_s {
  struct kh__request_s *next;
  char exec_id[KH__EXEC_ID_MAX];
  char *code; /* owned */
  size_t len;
  int silent;
  int store_history;
  int stop_on_error;
  int allow_stdin; /* 0: input() raises StdinNotImplementedError (cells only) */
  uint64_t timeout_ms;
  kh_execute_cb cb; /* NULL once its completion is queued: a "zombie" still running */
  void *data;
  kh__strbuf_t outputs; /* ",{"type":..,"data":..}" pieces */
  size_t noutputs;      /* entries in outputs */
  kh__bufs_t output_bufs; /* their binary values, at "/outputs/N/data/..." */
  /* A comm message from the host (comm.c) instead of a cell: "comm_open", "comm_msg" or
   * "comm_close" (static), with its content's JSON in code and its buffers (paths
   * "/buffers/N") in comm_bufs. NULL for a cell. */
  const char *comm_type;
  kh__bufs_t comm_bufs;
} kh__request_t;

typedef struct kh__done_s {
  struct kh__done_s *next;
  kh_kernel_done_cb cb;
  void *data;
} kh__done_t;

/* The kernel's states; the diagram and the rules are at the top of kernel.c. */
typedef enum {
  KH__K_STARTING = 0,
  KH__K_IDLE,
  KH__K_BUSY,
  KH__K_RESTARTING,
  KH__K_DEAD,
  KH__K_CLOSING
} kh__kstate_t;

/* One backend: what runs a kernel's Python (a kernel thread, the host thread, a worker
 * process; next a remote gateway, a fork server). kernel.c and manager.c know kernels,
 * requests and the queue and reach a backend only through this table, so a new kernel kind
 * is one new file that fills it in and one line in backend.c.
 *
 * The rule for backends: an op never calls a kh__kernel_on_*() upcall before it returns (post
 * through the kernel's sink or wait for a loop callback). Upcalls run on the loop thread. */
typedef struct kh__backend_s {
  const char *name;
  /* Per-manager state (the worker pool): opened by kh_manager_new, closed first thing by
   * kh_manager_close. May be NULL. The state lives in m->backend_state[index]. */
  void (*manager_open)(kh_manager_t *m);
  void (*manager_close)(kh_manager_t *m);
  /* Last: every kernel has stopped and the manager's memory goes once the handles it closes
   * (kh__manager_close_handle) have closed. May be NULL. */
  void (*manager_free)(kh_manager_t *m);
  /* Checks the kernel's options for this backend, then starts it; later the backend calls
   * kh__kernel_on_ready() (never from inside start). An error return means nothing started
   * (errmsg may be in m->errmsg). */
  int (*start)(kh_kernel_t *k);
  /* Runs r (the kernel is idle); later kh__kernel_on_reply(). An error becomes the cell's
   * KernelError reply. */
  int (*execute)(kh_kernel_t *k, kh__request_t *r);
  /* Interrupts the running cell (k->running), escalating as the backend can. */
  int (*interrupt)(kh_kernel_t *k);
  /* value: len bytes of valid UTF-8, NULs included (checked by the core). */
  int (*input_reply)(kh_kernel_t *k, const char *value, size_t len);
  /* Fresh namespace and counter; later kh__kernel_on_reset(). */
  int (*reset)(kh_kernel_t *k);
  /* Stops for good; later kh__kernel_on_stopped() once nothing refers to k any more. */
  void (*stop)(kh_kernel_t *k);
  /* After stop: the running cell did not end within interruptGraceMs of the destroy's
   * interrupt (kernel.c's exec timer). Lets go of what still runs it, so the destroy
   * completes; later kh__kernel_on_stopped(). NULL for backends whose stop never waits for a
   * cell (a worker is killed at once). */
  void (*abandon)(kh_kernel_t *k);
  /* Serves editor request `id` (interact.c): op "complete", "inspect", "is_complete" or
   * "kernel_info" with its Jupyter content (JSON), on a thread that does not wait for the
   * running cell; later kh__kernel_on_answer(). NULL: the backend cannot (KH_ENOTSUP). */
  int (*interact)(kh_kernel_t *k, const char *id, const char *op, const char *content, size_t len,
                  uint64_t timeout_ms);
  /* Stops editor request `id`'s work, queued or running (interact.c has answered it already:
   * the kernel's late answer, if any, is dropped). Never waits. May be NULL. */
  void (*interact_cancel)(kh_kernel_t *k, const char *id);
  /* Adds backend facts (pid, pooled, sandbox) to a kernel's info object. May be NULL. */
  void (*info)(kh_kernel_t *k, json_t *info);
  /* Host functions (hostcall.c). expose: the set of exposed names changed (names: a JSON array
   * of strings, borrowed); a backend whose Python reads them from the kernel's sink (main_thread)
   * leaves it NULL. hostcall_answer: answers call `id` of the kernel's process with value
   * (borrowed) or, when value is NULL, with the error `message` (valid UTF-8); NULL for backends
   * whose calls wait on a kh__hcwait_t (main_thread). */
  void (*expose)(kh_kernel_t *k, const json_t *names);
  int (*hostcall_answer)(kh_kernel_t *k, int64_t id, const json_t *value, const char *message,
                         const kh_buffer_t *buffers, size_t nbuffers);
  /* 1: the kernel's Python cannot call back into this process (a gateway's kernel: Jupyter's
   * protocol has no way), so kh_kernel_expose refuses it with KH_ENOTSUP. */
  int no_host_functions;
  int index; /* position in backend.c's table (m->backend_state[index]) */
} kh__backend_t;

/* Every backend's slot in backend.c's table and in m->backend_state[]. */
enum {
  KH__BACKEND_INPROC = 0,
  KH__BACKEND_HOST,
  KH__BACKEND_WORKER,
  KH__BACKEND_REMOTE,
  KH__BACKEND_MAX
};

struct kh_kernel_s {
  kh_manager_t *m;
  kh_kernel_t *next; /* in m->kernels */
  char id[KH__ID_MAX];
  uint64_t serial; /* unique per manager: messages of a kernel that left find nobody */
  kh__kernel_opts_t opts;
  kh__kstate_t state;
  double created_ms;
  int execution_count;
  kh__request_t *queue_head; /* accepted, not yet given to the backend */
  kh__request_t *queue_tail;
  kh__request_t *running; /* given to the backend and not yet replied (maybe a zombie) */
  kh__sink_t *sink;       /* owned reference; NULL once released */
  const kh__backend_t *ops;
  void *backend;
  uv_timer_t exec_timer; /* maxExecutionTime / per-request timeout / interrupt re-tries */
  uv_timer_t idle_timer; /* inactivityTimeout */
  kh__refs_t refs;       /* the two timers: k is freed when both have closed */
  int restart_pending;   /* restart waits for the running cell to end */
  int create_pending;    /* kh_kernel_create's callback is owed (counted in m->pending) */
  kh_kernel_create_cb create_cb;
  void *create_data;
  kh__done_t *restart_waiters;
  kh__done_t *destroy_waiters;
  char dead_reason[256];
  struct kh__interact_s *interact; /* owned: editor requests in flight and the history */
  struct kh__hostfns_s *hostfns;   /* owned: exposed host functions and calls in flight, or NULL */
  json_t *comms; /* owned or NULL: the kernel's open comms, {id: target_name} (comm.c) */
};

const char *kh__kstate_name(kh__kstate_t s);

/* Upcalls from backends, on the loop thread (never from inside a backend op). */
void kh__kernel_on_ready(kh_kernel_t *k, int status, const char *errmsg);
/* bufs: the payload's binary values (may be NULL), taken (empty after the call). */
void kh__kernel_on_event(kh_kernel_t *k, int type, const char *exec_id, const char *json,
                         size_t len, kh__bufs_t *bufs);
void kh__kernel_on_reply(kh_kernel_t *k, const char *exec_id, const char *json, size_t len,
                         kh__bufs_t *bufs);
void kh__kernel_on_reset(kh_kernel_t *k, int status, const char *errmsg);
/* The running request exec_id will get no reply: it fails with status and msg. */
void kh__kernel_on_lost(kh_kernel_t *k, const char *exec_id, int status, const char *msg);
void kh__kernel_on_stopped(kh_kernel_t *k);
void kh__kernel_on_dead(kh_kernel_t *k, const char *reason_json);
/* The backend replaces the kernel's process on its own (an interrupt that did not land, or
 * autoRestart after a death): requests in flight fail with KH_EKERNELDEAD, new ones queue
 * until kh__kernel_on_reset() reports the fresh process. */
void kh__kernel_on_restarting(kh_kernel_t *k, const char *reason_json);
/* Runs one inbox message of kernel k. Thread: loop. */
void kh__kernel_dispatch_msg(kh_kernel_t *k, kh__msg_t *msg);

/* Editor requests and history (interact.c). Thread: loop. */
int kh__interact_open(kh_kernel_t *k);  /* kh_kernel_create: the history (and its file) */
void kh__interact_free(kh_kernel_t *k); /* the kernel's memory goes */
/* Fails every request in flight (interrupt, restart, destroy, death) and stops the kernel's
 * work on them: their answers will not come. */
void kh__interact_fail_all(kh_kernel_t *k, int status, const char *msg);
void kh__interact_new_session(kh_kernel_t *k); /* a restart succeeded */
/* Around a cell (request.c): the code as it is handed to the backend, and the reply's count:
 * a cell that advanced the counter with store_history is recorded. */
void kh__history_cell_started(kh_kernel_t *k, const kh__request_t *r);
void kh__history_cell_ended(kh_kernel_t *k, int prev_count, int count, const char *output);
void kh__kernel_on_answer(kh_kernel_t *k, const char *id, int status, const char *json, size_t len);

/* --- host functions (hostcall.c) -----------------------------------------------------------
 * kh_kernel_expose() keeps a kernel's table of host functions; a call arrives from the kernel's
 * Python (a main_thread kernel posts it through its sink, a worker sends "call"), runs the host
 * function on the loop, and its handle (kh_hostcall_t) carries the answer back: to the waiter
 * below (main_thread), or through the backend's hostcall_answer (worker). */

/* Bytes of an exposed name, without the NUL: the protocol's bound (protocol.h). */
#define KH__HOSTFN_NAME_MAX KH__P_HOSTFN_NAME_MAX
#define KH__HOSTCALLS_MAX 256 /* calls of one kernel in flight; more are answered with an error */

/* A thread of a main_thread kernel waiting for its host call's answer (py-hostcall.c waits on
 * it, GIL released). Settled once: by the answer, an error or a cancellation (the loop); the
 * Gate's interrupt (py-gate.c) sets `interrupted` instead, whatever else happened. */
enum { KH__HC_WAITING = 0, KH__HC_ANSWERED, KH__HC_FAILED, KH__HC_CANCELED };
typedef struct kh__hcwait_s {
  atomic_int refs; /* the waiting thread's, and the call's (message or handle) */
  uv_mutex_t mu;
  uv_cond_t cv;
  /* Written under mu; atomic so that the waiting thread can spin on them without it. */
  atomic_int state; /* KH__HC_* */
  atomic_int interrupted;
  char *text;           /* guarded by mu: owned: the value's JSON (ANSWERED) or the message */
  size_t len;           /* guarded by mu */
  kh_buffer_t *buffers; /* guarded by mu: owned copies (paths and data) of the value's */
  size_t nbuffers;      /* guarded by mu */
} kh__hcwait_t;

kh__hcwait_t *kh__hcwait_new(void); /* refs 1; NULL when out of memory. Thread: any */
void kh__hcwait_ref(kh__hcwait_t *w);
void kh__hcwait_unref(kh__hcwait_t *w);
/* Settles w (the first settle wins; later ones are ignored) and wakes its thread. text and the
 * buffers are copied; out of memory turns an answer into a failure. Thread: any. */
void kh__hcwait_settle(kh__hcwait_t *w, int state, const char *text, size_t len,
                       const kh_buffer_t *buffers, size_t nbuffers);
void kh__hcwait_interrupt(kh__hcwait_t *w); /* the Gate's (GIL held, never waits). Thread: any */
void kh__buffers_free(kh_buffer_t *b, size_t n); /* copies made by kh__buffers_copy */
/* Owned copies of n buffers (paths and data) in *out; 0 or KH_ENOMEM. n == 0: *out NULL. */
int kh__buffers_copy(const kh_buffer_t *b, size_t n, kh_buffer_t **out);

/* A call a main_thread kernel's Python posts to the loop (py-hostcall.c): everything owned. */
typedef struct {
  char name[KH__HOSTFN_NAME_MAX + 1];
  char *args; /* the JSON array of its arguments, NUL-terminated */
  size_t args_len;
  kh_buffer_t *buffers; /* owned copies */
  size_t nbuffers;
  int cell;           /* made by the kernel's own thread (the running cell): interrupts cancel it */
  kh__hcwait_t *wait; /* a reference */
} kh__hcreq_t;

void kh__hcreq_free(
    kh__hcreq_t *req); /* frees req, settling its waiter as canceled if still waiting */
/* Posted through the sink (kh__sink_post_owned, with kh__hcreq_drop): runs the call. */
void kh__hostcall_on_post(kh_kernel_t *k, void *req);
void kh__hcreq_drop(void *req);
/* A thread: "host" kernel's call, made on the loop thread inside its cell (py-hostcall.c, GIL
 * released): the host function runs now and must answer before it returns. The kernel is the one
 * whose cell backend-host.c is running on this thread (kh__hostcall_host_enter). Settles
 * req->wait and frees req. */
void kh__hostcall_sync(kh__sink_t *sink, kh__hcreq_t *req);
/* Around a thread: "host" kernel's cell: returns the kernel whose cell ran before (nested
 * cells: a host function may run a cell of another such kernel), to give back to leave. */
kh_kernel_t *kh__hostcall_host_enter(kh_kernel_t *k);
void kh__hostcall_host_leave(kh_kernel_t *prev);
/* A worker's "call" (backend-worker.c): id is the process's call id, args the JSON array. */
void kh__hostcall_from_worker(kh_kernel_t *k, int64_t id, const char *name, int cell,
                              const char *args, size_t len, const kh_buffer_t *buffers,
                              size_t nbuffers);
/* The exposed names as a JSON array (owned), NULL when none (or out of memory). */
json_t *kh__hostcall_names(kh_kernel_t *k);
/* Settling: an interrupt cancels the calls of the running cell's own thread (the Gate or SIGINT
 * ends their wait); restart, destroy and death cancel every call (main_thread waiters are woken
 * with the reason). Handles stay valid until answered, and answering them returns KH_ECANCELED. */
void kh__hostcall_cancel_cell(kh_kernel_t *k);
void kh__hostcall_cancel_all(kh_kernel_t *k, const char *why);
void kh__hostcall_free(kh_kernel_t *k); /* the kernel's memory goes */
/* Whether one of k's host functions is running now, on the loop's stack: requests that queue on
 * k are refused then (KH_EBUSY), since the cell they would queue behind waits for that very
 * function. Fills m->errmsg. */
int kh__hostcall_busy(kh_kernel_t *k);
/* Comms (comm.c). Thread: loop. A kernel's comm_open / comm_close event, before subscribers
 * see it: the comm is open or closed from then on. */
void kh__comm_event(kh_kernel_t *k, int type, const char *json, size_t len);
/* The kernel's Python side is gone or new (restart, death, destroy): no comm is open. */
void kh__comm_forget(kh_kernel_t *k);
/* kh_kernel_comm_send that also copies the message's execution id to exec_id_out (if not NULL,
 * KH__EXEC_ID_MAX bytes): the id of its busy and idle status and of its handler's output. */
int kh__comm_send(kh_manager_t *m, const char *kernel_id, const char *msg_type,
                  const char *content_json, size_t len, const kh_buffer_t *buffers,
                  size_t nbuffers, char *exec_id_out);

/* --- Jupyter's wire protocol (jupyter.c) ----------------------------------------------------
 * Servers are listed in their manager: a kernel's destroy stops its servers, and the manager's
 * close stops them all and waits for them to be gone (m->servers) before it finishes. The core
 * reaches jupyter.c only through these hooks, set by the first kh_jupyter_serve(): a program
 * that never serves (kernelhost-worker) links neither jupyter.c nor libzmq. */
typedef struct {
  void (*kernel_closing)(kh_manager_t *m, const char *kernel_id);
  void (*manager_close)(kh_manager_t *m);
  /* A request was handed to the backend (kh__kernel_pump): the moment its counter is known
   * (execute_input's), which its busy event, delivered later, can no longer tell. */
  void (*request_started)(kh_kernel_t *k, const char *exec_id);
} kh__jupyter_hooks_t;

/* Between kernel.c (the lifecycle) and request.c (the queue). */
void kh__kernel_emit_status(kh_kernel_t *k, const char *state, const char *exec_id,
                            const char *extra);
void kh__kernel_pump(kh_kernel_t *k);   /* starts the next request if the kernel is idle */
void kh__kernel_settle(kh_kernel_t *k); /* after a request ended: reset, pump or idle timer */
void kh__kernel_arm_exec_timer(kh_kernel_t *k, uint64_t ms);
void kh__request_fail(kh_kernel_t *k, kh__request_t *r, int status, const char *msg);
void kh__request_fail_queue(kh_kernel_t *k, int status, const char *msg);
void kh__request_free(kh__request_t *r);
/* Appends an accepted request (a cell, or a comm message: comm.c) to the kernel's FIFO, counts
 * its completion in m->pending and starts it if the kernel is idle. */
void kh__kernel_enqueue(kh_kernel_t *k, kh__request_t *r);
kh_kernel_t *kh__kernel_lookup(kh_manager_t *m, const char *kernel_id, int *rc);

/* --- manager and bus (manager.c, bus.c) --------------------------------------------------- */

typedef struct kh__sub_s {
  struct kh__sub_s *next;
  int64_t id;
  char *kernel_id; /* owned, or NULL for every kernel */
  int type;
  kh_event_cb cb;
  void *data;
  int removed;
} kh__sub_t;

struct kh_manager_s {
  uv_loop_t *loop;
  uv_async_t async; /* drains the inbox */
  kh__inbox_t inbox;
  kh__manager_opts_t opts;
  kh_kernel_t *kernels;
  kh__sub_t *subs;
  int64_t next_sub_id;
  uint64_t next_serial;
  int dispatch_depth; /* bus dispatches running: removed subscriptions are swept at 0 */
  int subs_dirty;
  int closing;
  int close_started; /* the close delivery is queued: the async handle closes after it */
  int inbox_discarding;
  int draining; /* kh__inbox_drain is running: loop-thread posts need no wake-up */
  int held;     /* kh__inbox_hold() depth: loop-thread posts wait for the release to wake */
  int ref_mode;
  /* Callbacks promised and not yet run: requests (queued, running, or their completion
   * queued), creations, restarts, destroys, destroy-alls. While > 0 the loop stays alive. */
  size_t pending;
  /* Kernels destroyed whose backend has not reported stopped: they still own threads or
   * processes, so the loop stays alive until they are released. */
  size_t destroying;
  kh_manager_close_cb close_cb;
  void *close_data;
  void *backend_state[KH__BACKEND_MAX]; /* per backend (kh__backend_t.index), e.g. the pool */
  /* hostcall.c: keeps the loop polling, without sleeping, for a moment after a host call (a
   * cell that calls its host usually calls again at once), unref'd: it keeps nothing alive. */
  uv_idle_t hc_idle;
  uint64_t hc_idle_until; /* uv_hrtime() when the window ends */
  int hc_idle_open;       /* hc_idle is initialised: the close closes it too */
  int handles_open;       /* handles the close waits for (the async, hc_idle) */
  void *keep; /* freed with the manager (kh__manager_keep) */
  struct kh_jupyter_s *servers; /* Jupyter wire servers (jupyter.c), until they have stopped */
  const kh__jupyter_hooks_t *jupyter; /* NULL until a server was started */
  char errmsg[KH__ERRMSG_MAX];
};

kh_kernel_t *kh__manager_find(kh_manager_t *m, const char *id);
kh_kernel_t *kh__manager_find_serial(kh_manager_t *m, uint64_t serial);
void kh__manager_update_ref(kh_manager_t *m);
/* For a backend's manager_free: closes h (its data becomes m); the manager's memory waits for
 * it. kh__manager_keep: p (malloc'd) is freed with the manager, after every such handle. */
void kh__manager_close_handle(kh_manager_t *m, uv_handle_t *h);
void kh__manager_keep(kh_manager_t *m, void *p);
/* Takes k out of the manager's list (before its destroy callbacks run, so they see it gone). */
void kh__manager_unlink(kh_manager_t *m, kh_kernel_t *k);
/* After a kernel left: finishes a pending manager close, or updates the loop reference. */
void kh__manager_kernel_gone(kh_manager_t *m);
void kh__bus_dispatch(kh_manager_t *m, const kh_event_t *ev);
void kh__bus_free_all(kh_manager_t *m);

/* Deliveries (delivery.c): each copies what it needs, queues itself with kh__defer() and runs
 * the user's callback from the drain. `counted`: the callback was counted in m->pending,
 * which drops just before it runs. Out of memory: the callback is lost (said in errmsg of
 * nothing: there is no one to tell), the count is still released. */
void kh__deliver_event(kh_manager_t *m, const char *kernel_id, int type, const char *exec_id,
                       const char *json, size_t len, const kh__bufs_t *bufs);
/* owned_json: rep->json's buffer, taken (freed after the callback); NULL copies rep->json.
 * bufs: its binary values (rep->buffers is ignored), taken; may be NULL. */
void kh__deliver_reply(kh_manager_t *m, kh_execute_cb cb, void *data, const kh_reply_t *rep,
                       int status, char *owned_json, kh__bufs_t *bufs);
void kh__deliver_done(kh_manager_t *m, kh_kernel_done_cb cb, void *data, const char *kernel_id,
                      int status, const char *errmsg);
void kh__deliver_create(kh_manager_t *m, kh_kernel_create_cb cb, void *data, const char *kernel_id,
                        int status, const char *errmsg);

/* --- backends (backend.c) ----------------------------------------------------------------- */

/* Which backend runs a kernel with these options: the one place that decides. */
const kh__backend_t *kh__backend_for(const kh__kernel_opts_t *o);
void kh__backends_manager_open(kh_manager_t *m);
void kh__backends_manager_close(kh_manager_t *m);
void kh__backends_manager_free(kh_manager_t *m);

extern const kh__backend_t kh__inproc_backend; /* main_thread (backend-inproc.c) */
extern const kh__backend_t kh__host_backend;   /* main_thread, thread: "host" (backend-host.c) */
extern const kh__backend_t kh__worker_backend; /* worker (backend-worker.c) */
/* remote (backend-remote.c; kernelhost-worker, which never reaches a gateway, links
 * core/worker/no-remote.c's instead, so libcurl and libwebsockets stay out of its start). */
extern const kh__backend_t kh__remote_backend;

/* --- Python, in-process (py-host.c); the only interface to files that include Python.h --- */

typedef struct kh__pyk_s kh__pyk_t;

/* Thread: kernel. Starts CPython once per process (blocking this thread until it is up), then
 * gives this thread a Python thread state and a runtime Kernel object. figure_formats
 * (borrowed, may be NULL) is the kernel option, an array of strings: a copy of this thread's
 * own, since the runtime reads it while the loop may read the kernel's options. */
int kh__py_kernel_open(kh__pyk_t **out, kh__sink_t *sink, const char *kernel_id, int host_thread,
                       const json_t *figure_formats, int binary_base64, char *errmsg);
/* Thread: kernel. Runs one cell (allow_stdin 0: its input() raises StdinNotImplementedError);
 * returns the reply JSON (owned, malloc) and its length, and its binary values in *bufs (empty
 * before). */
char *kh__py_kernel_execute(kh__pyk_t *p, const char *exec_id, const char *code, size_t len,
                            int silent, int store_history, int allow_stdin, size_t *out_len,
                            kh__bufs_t *bufs);
/* Thread: kernel. Hands a comm message from the host (content: its JSON, checked by comm.c; bufs:
 * its buffers, borrowed, at "/buffers/N") to the kernel's comm manager (_kh_comm); returns the
 * runtime's reply JSON as execute does (a comm message's reply has no binary values). */
char *kh__py_kernel_comm(kh__pyk_t *p, const char *exec_id, const char *msg_type,
                         const char *content, size_t len, const kh__bufs_t *bufs,
                         size_t *out_len);
int kh__py_kernel_reset(kh__pyk_t *p, char *errmsg);
void kh__py_kernel_close(kh__pyk_t *p); /* Thread: kernel. Frees p's Python side. */
/* Thread: any (loop). Asks the Python service thread to interrupt cell exec_id (which may not
 * have begun on the kernel thread yet). */
void kh__py_kernel_interrupt(kh__pyk_t *p, const char *exec_id);
void kh__py_kernel_input_reply(kh__pyk_t *p, const char *value, size_t len);
/* Thread: any (loop). Hands an editor request to the interact thread (py-interact.c); its
 * answer is posted through sink as KH__MSG_ANSWER. Returns 0 or KH_ENOMEM / KH_EPYTHON. */
int kh__py_kernel_interact(kh__pyk_t *p, kh__sink_t *sink, const char *id, const char *op,
                           const char *content, size_t len, uint64_t timeout_ms);
/* Thread: any (loop). The backends' interact_cancel: stops request id on the interact thread
 * (py-interact.c), which serves every kernel of the process, so k is not needed. */
void kh__py_interact_cancel(kh_kernel_t *k, const char *id);
void kh__pyk_unref(kh__pyk_t *p);

/* --- starting the embedded interpreter (py-start.c), for the host and the worker alike ------ */

/* Who starts Python. The host library (main_thread kernels) starts it on a service thread and
 * keeps its process's signals; kernelhost-worker starts it on its main thread, to be interrupted
 * by SIGINT. Everything else (isolated config, site, allocator, libpython) is the same. */
typedef enum { KH__PY_HOST, KH__PY_WORKER } kh__py_role_t;

/* How _kernelhost.emit() delivers a runtime event (bufs: its binary values, borrowed from
 * Python for the call): to the kernel's sink in the host (sink is the
 * one the runtime Kernel was given), to the protocol pipe in a worker (sink NULL). Called with
 * the GIL held; must not wait for anything that may need it. Returns 0 or a KH_E* code. */
typedef int (*kh__py_emit_fn)(kh__sink_t *sink, const char *exec_id, int type, const char *data,
                              size_t len, const kh_buffer_t *bufs, size_t nbufs);

typedef struct {
  kh__py_role_t role;
  kh__py_emit_fn emit;
  void (*interrupt_landed)(void); /* worker: its SIGINT handler ran (GIL held); host: NULL */
  /* worker: makes a host call over the protocol and waits for its answer (core/worker/main.c):
   * GIL held on entry and return (released while it waits). Returns 0 with *state (KH__HC_*),
   * *text (owned: the value's JSON or the message) and the value's buffers (owned copies), or
   * -1 with a Python exception set (KeyboardInterrupt). host: NULL (py-hostcall.c's own). */
  int (*hostcall)(int cell, const char *name, const char *args, size_t len,
                  const kh_buffer_t *buffers, size_t nbuffers, int *state, char **text,
                  size_t *text_len, kh_buffer_t **out_buffers, size_t *out_nbuffers);
} kh__py_start_t;

/* Starts CPython and the embedded runtime (_kh_runtime.init; in a worker also its SIGINT
 * handler). Once per process, on the thread that will own the main thread state. Returns 0 with
 * the GIL held by the caller, or KH_EPYTHON with errmsg (KH__ERRMSG_MAX) saying why. */
int kh__py_start(const kh__py_start_t *how, char *errmsg);

/* The embedded runtime sources (generated at build time: runtime_sources.c). */
typedef struct {
  const char *name;
  const char *source;
  size_t len;
} kh__source_t;
extern const kh__source_t kh__runtime_sources[];

/* --- frames: the worker protocol's framing (frame.c; the messages: protocol.h) ------------ */

/* Largest frame either side accepts (a frame carries one message: code, an event, a reply). */
#define KH__FRAME_MAX (256u << 20)
/* The length word of a binary frame (raw bytes, no JSON) has this bit set; a JSON frame's never
 * does (KH__FRAME_MAX is far below it). */
#define KH__FRAME_BINARY 0x80000000u
/* The most binary frames one message may carry. */
#define KH__FRAME_BUFS_MAX 64

/* An incremental decoder of frames: 4-byte big-endian length + one JSON object with a string
 * member "t". Survives arbitrary input: a malformed, oversized or (at EOF) truncated frame
 * gives KH_EPROTO and a message in err, and the decoder stays failed. Thread: any (one user). */
typedef struct {
  char *buf; /* owned */
  size_t len;
  size_t pos; /* start of the first undecoded byte */
  size_t cap;
  size_t max;
  int failed;
  char err[200];
  size_t last_off; /* the body of the frame kh__frame_dec_next() returned last */
  size_t last_len;
  size_t data_off; /* its "data" payload, when the header was split from it (else len 0) */
  size_t data_len;
  /* Binary attachments: a message with member "bufs" (an array of n JSON Pointer strings) is
   * followed by n binary frames, whose length word has KH__FRAME_BINARY set; the message is
   * handed out once all of them are in. Offsets are relative to the message's first byte. */
  json_t *pending;  /* the message waiting for its binary frames, owned */
  size_t pend_size; /* its frame's size, length word included */
  size_t nraw;      /* binary frames of the message kh__frame_dec_next() returned last */
  size_t raw_off[KH__FRAME_BUFS_MAX];
  size_t raw_len[KH__FRAME_BUFS_MAX];
} kh__frame_dec_t;

void kh__frame_dec_init(kh__frame_dec_t *d, size_t max); /* max 0: KH__FRAME_MAX */
void kh__frame_dec_free(kh__frame_dec_t *d);
/* Appends bytes (copied). Returns 0 or KH_EPROTO (failed already, or out of memory). */
int kh__frame_dec_feed(kh__frame_dec_t *d, const void *p, size_t n);
/* Takes the next whole frame: 1 and *out (owned), 0 when more bytes are needed, KH_EPROTO. */
int kh__frame_dec_next(kh__frame_dec_t *d, json_t **out);
/* The "data" payload (one JSON object, validated, not parsed) of the frame that
 * kh__frame_dec_next() returned last, when its header was split from it: the returned header
 * then has no "data" member. NULL otherwise. Writable; valid until the next feed. The byte after
 * it is the frame's closing brace, which the caller may overwrite with a NUL. */
char *kh__frame_dec_data(kh__frame_dec_t *d, size_t *len);
/* The raw body (JSON text) of the frame kh__frame_dec_next() returned last, writable, valid
 * until the next kh__frame_dec_feed(). */
char *kh__frame_dec_raw(kh__frame_dec_t *d, size_t *len);
/* The binary attachments of the frame kh__frame_dec_next() returned last (its "bufs" member
 * names their paths, in order): their count, and the bytes of attachment i (valid until the
 * next feed). */
size_t kh__frame_dec_nbufs(const kh__frame_dec_t *d);
const char *kh__frame_dec_buf(const kh__frame_dec_t *d, size_t i, size_t *len);
/* The stream ended: 0 if no partial frame is left, else KH_EPROTO ("truncated frame"). */
int kh__frame_dec_finish(kh__frame_dec_t *d);
/* Encodes obj as one frame (owned, malloc); NULL when out of memory or over KH__FRAME_MAX. */
char *kh__frame_encode(const json_t *obj, size_t *len_out);
void kh__frame_put_len(char *hdr, size_t n); /* writes the 4-byte length prefix */
/* Encodes obj with binary attachments: obj gains "bufs" (their paths), and each buffer follows
 * as a binary frame, all in one allocation (owned). nb 0 is kh__frame_encode(). NULL when out
 * of memory, over KH__FRAME_MAX or more than KH__FRAME_BUFS_MAX buffers. */
char *kh__frame_encode_bufs(const json_t *obj, const kh_buffer_t *b, size_t nb, size_t *len_out);

/* --- worker mode: processes (worker-proc.c), the pool (worker-pool.c), the backend
 * (backend-worker.c). Thread: loop, all of it. ------------------------------------------- */

typedef struct kh__wproc_s kh__wproc_t;

/* What a worker process tells whoever holds it: the pool while it is warm, then the kernel that
 * claimed it (the claim changes cbs and holder). */
typedef struct {
  /* A frame that passed every check (worker-proc.c). data/len: the JSON text of the payload of
   * "ev" and "reply" (borrowed, NUL-terminated), else NULL. The callee may kill w. */
  void (*frame)(void *holder, kh__wproc_t *w, kh__pmsg_t kind, json_t *msg, const char *data,
                size_t len);
  /* The process was reaped, after its last frames were read; never after kh__wproc_kill(). */
  void (*exited)(void *holder, kh__wproc_t *w);
  /* Its last handle closed: the process record is freed (before this is called). */
  void (*closed)(void *holder);
} kh__wproc_cbs_t;

/* Where a process is in the protocol (protocol.h's diagram), as far as the host has seen. */
typedef enum {
  KH__WP_SPAWNED = 0, /* waiting for "hello" */
  KH__WP_HELLO,       /* Python is up: waiting for "open" (a warm pooled worker) */
  KH__WP_OPENING,     /* "open" sent: waiting for "ready" */
  KH__WP_READY        /* serving requests */
} kh__wphase_t;

/* The execution ids a process remembers having been given (see was_given in worker-proc.c). */
#define KH__WPROC_RECENT 32
/* Editor requests a process may have in flight (interact.c refuses more with KH_EBUSY). */
#define KH__WPROC_ASKED 64

struct kh__wproc_s {
  kh__wproc_t *next; /* the holder's list (the pool's) */
  const kh__wproc_cbs_t *cbs;
  void *holder;
  int pid;
  kh__wphase_t phase;
  int exited;         /* reaped: exit_status and term_signal are set */
  int killed;         /* kh__wproc_kill(): its exit is no news */
  int failed;         /* a protocol error or "fatal": nothing more is read from it */
  int protocol_error; /* the death report's cause is "protocol_error" */
  int start_code;     /* never got a process, for this reason (KH_EOPTION: pool.preload) */
  int64_t exit_status;
  int term_signal;
  char why[300]; /* the "fatal" message or the protocol error, for the death report */
  json_t *plan;  /* owned: the sandbox plan it was opened with (cgroup cleanup), or NULL */
  const char *pids_cgroup; /* kh__sandbox_pids_cgroup() when it joined its group pre-forked */
  /* worker-proc.c's own: handles, the decoder and the request bookkeeping. */
  int adopted;    /* made by the fork server: watched by reap, not proc */
  int pidfd;      /* adopted: the process's pidfd (reap's), or -1 */
  uv_poll_t reap; /* adopted: readable once the process has exited */
  uv_process_t proc;
  uv_pipe_t to;    /* host -> worker (its fd 3) */
  uv_pipe_t from;  /* worker -> host (its fd 4) */
  kh__refs_t refs; /* the three handles (proc or reap): w is freed when the last has closed */
  kh__frame_dec_t dec;
  char inflight[KH__EXEC_ID_MAX]; /* the request sent and not yet replied to, or "" */
  char recent[KH__WPROC_RECENT][KH__EXEC_ID_MAX]; /* ids sent, a ring */
  unsigned nsent;                                 /* "exec" frames sent, ever */
  /* Editor requests sent ("interact") and not yet answered: an "answer" must name one. */
  char asked[KH__WPROC_ASKED][KH__EXEC_ID_MAX];
  int64_t last_call; /* the id of the last "call" it made: the next one must be greater */
  char rbuf[65536];
  /* The binary values of the frame being handed to the holder (its "bufs", at paths into its
   * "data"): the holder may take them (kh__bufs_move); what is left is freed after it. */
  kh__bufs_t bufs;
};

/* Finds the worker executable (workerPath, KH_WORKER_PATH, next to the library); fills errmsg. */
int kh__wproc_path(kh_manager_t *m, char *out, size_t n, char *errmsg);
/* Spawns a worker with the host's environment plus `env` (an object of strings, may be NULL).
 * Returns 0 and *out, or KH_ENOMEM / KH_EWORKER with errmsg. */
int kh__wproc_spawn(uv_loop_t *loop, const char *path, const json_t *env,
                    const kh__wproc_cbs_t *cbs, void *holder, kh__wproc_t **out, char *errmsg);
/* A record with no process yet, for one the fork server is making (worker-pool.c); then one of
 * kh__wproc_start (spawn it after all) or kh__wproc_adopt (the fork server's answer). A record
 * that never got a process is freed with kh__wproc_free_unstarted (its holder hears "closed",
 * as for any record). */
kh__wproc_t *kh__wproc_new(const kh__wproc_cbs_t *cbs, void *holder);
void kh__wproc_free_unstarted(kh__wproc_t *w);
/* Spawns the record's process (kh__wproc_spawn's work). On KH_EWORKER the record closes itself
 * (its holder hears "closed"); on KH_ENOMEM it is untouched. */
int kh__wproc_start(kh__wproc_t *w, uv_loop_t *loop, const char *path, const json_t *env,
                    char *errmsg);
/* Takes over a worker the fork server forked: pid (the host's child, by CLONE_PARENT) and the
 * two pipe ends pending on `ipc` (uv_accept'ed: command pipe, then frame pipe). 0: it is the
 * record's now (a failure after this point is reported as its death); KH_EWORKER: it could not
 * be watched, was killed, and the record closes itself. */
int kh__wproc_adopt(kh__wproc_t *w, uv_loop_t *loop, uv_pipe_t *ipc, int pid, char *errmsg);
/* Encodes msg (+ bufs) as one frame and writes it to s (a worker's or the fork server's pipe);
 * a failed write shows up later as the peer's death. 0, KH_ENOMEM, KH_ETOOBIG or a uv error. */
int kh__stream_send_frame(uv_stream_t *s, const json_t *msg, const kh_buffer_t *bufs, size_t nb);
/* Sends one message (a host -> worker one, in its phase: "open" once after "hello", the rest
 * once ready, one "exec" at a time). Returns 0, KH_EKERNELDEAD (gone, or not ready yet),
 * KH_EINVAL (out of the protocol's order or shape: a host bug), KH_ENOMEM, KH_ETOOBIG, or a
 * libuv error from the write. */
int kh__wproc_send(kh__wproc_t *w, const json_t *msg);
/* The same with binary attachments (protocol.h: msg gains "bufs", the frames follow). */
int kh__wproc_send_bufs(kh__wproc_t *w, const json_t *msg, const kh_buffer_t *bufs, size_t nb);
/* Kills the process (and its process group) on purpose: its exit is not reported. */
void kh__wproc_kill(kh__wproc_t *w);
/* A protocol error: kills the process, and reports its exit as a death for this reason. */
void kh__wproc_fail(kh__wproc_t *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The death report of a reaped process: reason JSON (for status "dead") and text. */
void kh__wproc_describe_exit(const kh__wproc_t *w, char *json, size_t n, char *text, size_t tn);

/* The manager's warm pool (worker-pool.c): worker-backend state in
 * m->backend_state[KH__BACKEND_WORKER], opened and closed by the worker backend's
 * manager_open and manager_close. */
void kh__wpool_open(kh_manager_t *m);  /* kh_manager_new: starts the pool */
void kh__wpool_close(kh_manager_t *m); /* kh_manager_close: kills pooled workers */
/* A pooled process for a kernel with this `env` (may be NULL), now held through cbs/holder (a
 * fork server's may still be on its way: phase KH__WP_SPAWNED until its "hello"); or NULL: spawn
 * one (no pool, none left, the fork server is restarting, or variables only a fresh process can
 * honour), or with *rc set, fail with errmsg (KH_EOPTION: a pool.preload module cannot be
 * imported). *origin: "fork", "warm" or "cold". The pool refills when the kernel calls
 * kh__wpool_refill, or 50 ms later. */
kh__wproc_t *kh__wpool_claim(kh_manager_t *m, const json_t *env, const kh__wproc_cbs_t *cbs,
                             void *holder, int *rc, char *errmsg, const char **origin);
/* A kernel got its process going, or failed to: the pool refills now, off its critical path. */
void kh__wpool_refill(kh_manager_t *m);

/* --- sandbox: OS-enforced permissions, mounts and limits for workers ---------------------
 * Three files, one concept each: sandbox-plan.c decides on the host what a kernel's options
 * ask and whether this system can enforce it (the plan's fields are listed at its top);
 * sandbox-apply.c is the worker confining itself to a plan; landlock.c holds Landlock's
 * system calls and rights. The Python layer (core/python/_kh_sandbox.py) reads the same plan. */

/* A kernel's sandbox plan: what to enforce, decided on the host from its options. */
typedef struct kh__sandbox_s kh__sandbox_t;

/* Host side, Thread: loop (createKernel, before spawning or claiming a worker). Turns the
 * normalised kernel options (k->opts.all, snake_case keys) into a plan and checks this system
 * can enforce it (Landlock ABI, user/mount/net namespaces, seccomp and a pids cgroup are probed
 * once per process). Returns 0 with *out = NULL when nothing is asked, 0 with *out (owned),
 * KH_EOPTION for a bad value, or KH_ENOTSUP with errmsg naming what is missing (sandbox
 * "strict", the default; "best-effort" records missing layers instead). A mount is never
 * faked: without a private mount namespace it fails in both modes. */
int kh__sandbox_new(kh__sandbox_t **out, const json_t *opts, char *errmsg);
void kh__sandbox_free(kh__sandbox_t *sb);
/* The plan (borrowed): send it to the worker as is; also the policy for _kh_sandbox.install. */
const json_t *kh__sandbox_plan(const kh__sandbox_t *sb);
/* Adds "sandbox": {mode, layers, missing, runtime_read, runtime_read_write} to a kernel's
 * info: what the host planned (backend-worker.c replaces the layers by what the worker
 * reports once it runs). */
void kh__sandbox_info(const kh__sandbox_t *sb, json_t *info);
/* Host side, after the worker `pid` was reaped: removes its pids cgroup, if it had one. */
void kh__sandbox_cleanup(const json_t *plan, int pid);
/* Host side: the pids cgroup directory workers make their groups in (root with a writable pids
 * controller), or NULL. Cached; cheap (no namespace probe). The fork server's pre-forked workers
 * join theirs ahead of need (worker-pool.c), so that a kernel with limits.maxProcesses does not
 * wait for the move (an RCU grace period: 5-25 ms here) when it is claimed. */
const char *kh__sandbox_pids_cgroup(void);
/* Removes the group of worker `pid` under `base` (empty once the worker was reaped). */
void kh__sandbox_cgroup_remove(const char *base, int pid);

/* Worker side: applies the plan to the calling process. It must be single-threaded (user
 * namespaces, Landlock and seccomp bind one thread and its future children only): call it
 * after Python is initialised and before any thread starts or user code runs. Then run
 * _kh_sandbox.install(plan) in Python. Returns 0 and *report (owned: {layers, missing}; may be
 * NULL to skip), or KH_ENOTSUP / KH_ENOMEM (KH_EINVAL when threads run) with errmsg: the
 * worker must then exit, never run the kernel unconfined. */
int kh__sandbox_apply(const json_t *plan, json_t **report, char *errmsg);
/* Worker side, as root, while nothing waits: makes an empty network namespace ahead of need
 * and keeps it (a descriptor above 10), the process staying in its own. kh__sandbox_apply
 * enters it for a plan without network (setns: microseconds) instead of unsharing one (0.5-1 ms
 * here: a fork server's pooled worker does this before its "hello"), and closes it either way.
 * A no-op when not root, or when it fails. */
void kh__sandbox_prepare_netns(void);
/* Worker side, in the fork server's template: builds the seccomp programs of every plan ahead
 * of need (libseccomp, exported as BPF), so that a forked kernel loads its own with one prctl
 * instead of generating it (~0.2 ms). A failure leaves kh__sandbox_apply building it itself. */
void kh__sandbox_precompile(void);
/* Closes that namespace if it is still kept (a kernel without a sandbox, or without a network
 * namespace): nothing of it outlives the kernel's opening. */
void kh__sandbox_release_netns(void);

/* Shared by the host's probe (which tries, in a child, what a worker will do) and the worker
 * (sandbox-apply.c). Both return 0 or -errno. Thread: any, but they act on the process. */
int kh__sandbox_write_file(const char *path, const char *text); /* one write(2): /proc, /sys */
int kh__sandbox_map_ids(uid_t uid, gid_t gid); /* in a new user namespace: map us to ourselves */

/* Landlock (landlock.c). Grants a path rule may carry, combined with |. */
enum {
  KH__LL_READ = 1 << 0,       /* read files, list directories */
  KH__LL_WRITE = 1 << 1,      /* create, write, truncate, remove and rename beneath */
  KH__LL_WRITE_FILE = 1 << 2, /* write to and truncate existing files only (/dev/null) */
  KH__LL_EXEC = 1 << 3        /* execute */
};

/* A ruleset being built: open, allow paths and ports, restrict (which also closes it). */
typedef struct {
  int fd;              /* the ruleset, -1 once closed */
  int abi;             /* the ABI it was made for */
  uint64_t handled_fs; /* the file rights it denies unless granted */
  int net;             /* it handles TCP bind/connect (ABI >= 4 and asked for) */
  int scoped;          /* abstract Unix sockets and signals are scoped (ABI >= 6, asked for) */
} kh__landlock_t;

/* The Landlock ABI this kernel offers, 0 when none (disabled or too old). Thread: any. */
int kh__landlock_abi(void);
/* Opens a ruleset for `abi` (at most what the kernel has) that denies every file right the
 * ABI knows, TCP bind/connect when tcp (ABI 4), and other domains' abstract Unix sockets and
 * signals when scope (ABI 6). Returns 0 or -errno (-EOPNOTSUPP when abi < 1). */
int kh__landlock_open(kh__landlock_t *ll, int abi, int tcp, int scope);
/* Grants `grant` (KH__LL_*) beneath path (a file gets only the rights files have). A path
 * that does not exist is skipped: nothing there to grant. Returns 0 or -errno. */
int kh__landlock_allow_path(kh__landlock_t *ll, const char *path, unsigned grant);
/* Allows TCP bind and connect on one port (a no-op when the ruleset does not handle TCP). */
int kh__landlock_allow_port(kh__landlock_t *ll, uint64_t port);
/* Confines the calling thread and its future children to the ruleset, then closes it.
 * Needs no_new_privs (or CAP_SYS_ADMIN). Returns 0 or -errno. */
int kh__landlock_restrict(kh__landlock_t *ll);
void kh__landlock_close(kh__landlock_t *ll);

#endif /* KH_INTERNAL_H */

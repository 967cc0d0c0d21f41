/* internal.h: declarations shared between the core's source files (never installed). */
#ifndef KH_INTERNAL_H
#define KH_INTERNAL_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "kernelhost.h"

#define KH__ID_MAX 64       /* kernel id, including the NUL */
#define KH__EXEC_ID_MAX 40  /* execution id, including the NUL */
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

/* --- options (options.c) ------------------------------------------------------------------ */

typedef enum { KH__MODE_WORKER = 0, KH__MODE_MAIN_THREAD = 1 } kh__mode_t;

typedef struct {
  kh__mode_t mode;
  char id[KH__ID_MAX];      /* "" when not given */
  char *namespace_;         /* owned, never NULL ("default") */
  uint64_t max_execution_ms;
  uint64_t inactivity_ms;
  int host_thread;          /* thread: "host": main_thread cells run on the loop thread */
  json_t *all;              /* owned: the normalised options object (for workers and info) */
} kh__kernel_opts_t;

typedef struct {
  size_t max_code_bytes;
  uint64_t interrupt_grace_ms;
  char *worker_path;        /* owned or NULL */
  int pool_size;
} kh__manager_opts_t;

int kh__kernel_opts_parse(kh__kernel_opts_t *o, const char *json, char *errmsg);
void kh__kernel_opts_free(kh__kernel_opts_t *o);
int kh__manager_opts_parse(kh__manager_opts_t *o, const char *json, char *errmsg);
void kh__manager_opts_free(kh__manager_opts_t *o);
const char *kh__mode_name(kh__mode_t mode);

/* --- sinks: where kernel threads post messages for the loop (sink.c) ---------------------- */

typedef enum {
  KH__MSG_EVENT = 1, /* type, exec_id, data = payload JSON */
  KH__MSG_READY,     /* status, data = error message */
  KH__MSG_REPLY,     /* exec_id, data = reply JSON */
  KH__MSG_RESET,     /* status, data = error message */
  KH__MSG_EXITED
} kh__msg_kind_t;

typedef struct kh__msg_s {
  struct kh__msg_s *next;
  uint64_t serial; /* kernel serial */
  int kind;
  int type;
  int status;
  char exec_id[KH__EXEC_ID_MAX];
  size_t len;
  char *data; /* owned, NUL-terminated, may be NULL */
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
  atomic_int refs;
  uv_mutex_t mu;
  int closed;          /* guarded by mu */
  kh__inbox_t *inbox;  /* guarded by mu: valid while !closed */
  uint64_t serial;
} kh__sink_t;

kh__sink_t *kh__sink_new(kh__inbox_t *inbox, uint64_t serial);
void kh__sink_ref(kh__sink_t *s);   /* Thread: any */
void kh__sink_unref(kh__sink_t *s); /* Thread: any */
void kh__sink_close(kh__sink_t *s); /* Thread: loop */
/* Posts a message; copies exec_id and data. Returns 0, or KH_ECLOSED when dropped. Thread: any */
int kh__sink_post(kh__sink_t *s, int kind, int type, int status, const char *exec_id,
                  const char *data, size_t len);
/* Takes every queued message (a list, oldest first). Thread: loop. */
kh__msg_t *kh__inbox_take(kh__inbox_t *in);
void kh__msg_free(kh__msg_t *msg);

/* --- requests and kernels (kernel.c) ------------------------------------------------------ */

typedef struct kh__request_s {
  struct kh__request_s *next;
  char exec_id[KH__EXEC_ID_MAX];
  char *code; /* owned */
  size_t len;
  int silent;
  int store_history;
  int stop_on_error;
  uint64_t timeout_ms;
  kh_execute_cb cb;
  void *data;
  kh__strbuf_t outputs; /* ",{"type":..,"data":..}" pieces */
} kh__request_t;

typedef struct kh__done_s {
  struct kh__done_s *next;
  kh_kernel_done_cb cb;
  void *data;
} kh__done_t;

typedef enum {
  KH__K_STARTING = 0,
  KH__K_IDLE,
  KH__K_BUSY,
  KH__K_RESTARTING,
  KH__K_DEAD,
  KH__K_CLOSING
} kh__kstate_t;

typedef struct kh__backend_ops_s {
  /* Starts the kernel; the backend later calls kh__kernel_on_ready(). */
  int (*start)(kh_kernel_t *k);
  /* Runs r (the kernel is idle); the backend later calls kh__kernel_on_reply(). */
  int (*execute)(kh_kernel_t *k, kh__request_t *r);
  int (*interrupt)(kh_kernel_t *k);
  int (*input_reply)(kh_kernel_t *k, const char *value);
  /* Fresh namespace and counter; later kh__kernel_on_reset(). */
  int (*reset)(kh_kernel_t *k);
  /* Stops for good; later kh__kernel_on_stopped() once nothing refers to k any more. */
  void (*stop)(kh_kernel_t *k);
} kh__backend_ops_t;

struct kh_kernel_s {
  kh_manager_t *m;
  kh_kernel_t *next; /* in m->kernels */
  char id[KH__ID_MAX];
  uint64_t serial;
  kh__kernel_opts_t opts;
  kh__kstate_t state;
  double created_ms;
  int execution_count;
  kh__request_t *queue_head;
  kh__request_t *queue_tail;
  kh__request_t *running;
  kh__sink_t *sink;
  const kh__backend_ops_t *ops;
  void *backend;
  uv_timer_t exec_timer;   /* maxExecutionTime / per-request timeout / interrupt re-tries */
  uv_timer_t idle_timer;   /* inactivityTimeout */
  int handles_open;
  int restart_pending;     /* restart waits for the running cell to end */
  kh_kernel_create_cb create_cb;
  void *create_data;
  kh__done_t *restart_waiters;
  kh__done_t *destroy_waiters;
  char dead_reason[256];
};

const char *kh__kstate_name(kh__kstate_t s);
/* Called by backends, on the loop thread. */
void kh__kernel_on_ready(kh_kernel_t *k, int status, const char *errmsg);
void kh__kernel_on_event(kh_kernel_t *k, int type, const char *exec_id, const char *json,
                         size_t len);
void kh__kernel_on_reply(kh_kernel_t *k, const char *exec_id, const char *json, size_t len);
void kh__kernel_on_reset(kh_kernel_t *k, int status, const char *errmsg);
void kh__kernel_on_stopped(kh_kernel_t *k);
void kh__kernel_on_dead(kh_kernel_t *k, const char *reason_json);
void kh__kernel_dispatch_msg(kh_kernel_t *k, kh__msg_t *msg);

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
  uv_async_t async;
  kh__inbox_t inbox;
  kh__manager_opts_t opts;
  kh_kernel_t *kernels;
  kh__sub_t *subs;
  int64_t next_sub_id;
  uint64_t next_serial;
  int dispatch_depth;
  int subs_dirty;
  int closing;
  int close_started; /* finish_close ran: the async handle is closing */
  int ref_mode;
  size_t pending;
  size_t destroying;
  kh_manager_close_cb close_cb;
  void *close_data;
  void *worker_pool; /* backend-worker.c: warm worker processes, or NULL */
  char errmsg[KH__ERRMSG_MAX];
};

kh_kernel_t *kh__manager_find(kh_manager_t *m, const char *id);
void kh__manager_update_ref(kh_manager_t *m);
/* Takes k out of the manager's list (before its destroy callbacks run, so they see it gone). */
void kh__manager_unlink(kh_manager_t *m, kh_kernel_t *k);
/* After a kernel left: finishes a pending manager close, or updates the loop reference. */
void kh__manager_kernel_gone(kh_manager_t *m);
void kh__bus_dispatch(kh_manager_t *m, const kh_event_t *ev);
void kh__bus_free_all(kh_manager_t *m);

/* --- backends ----------------------------------------------------------------------------- */

extern const kh__backend_ops_t kh__inproc_ops;
extern const kh__backend_ops_t kh__inproc_host_ops; /* thread: "host" (backend-inproc.c) */
extern const kh__backend_ops_t kh__worker_ops; /* backend-worker.c */
/* The in-process kernel thread has exited: join it, then kh__kernel_on_stopped(). */
void kh__inproc_exited(kh_kernel_t *k);

/* --- Python, in-process (py-host.c); the only interface to files that include Python.h --- */

typedef struct kh__pyk_s kh__pyk_t;

/* Thread: kernel. Starts CPython once per process (blocking this thread until it is up), then
 * gives this thread a Python thread state and a runtime Kernel object. */
int kh__py_kernel_open(kh__pyk_t **out, kh__sink_t *sink, const char *kernel_id, int host_thread,
                       char *errmsg);
/* Thread: kernel. Runs one cell; returns the reply JSON (owned, malloc) and its length. */
char *kh__py_kernel_execute(kh__pyk_t *p, const char *exec_id, const char *code, size_t len,
                            int silent, int store_history, size_t *out_len);
int kh__py_kernel_reset(kh__pyk_t *p, char *errmsg);
void kh__py_kernel_close(kh__pyk_t *p); /* Thread: kernel. Frees p's Python side. */
/* Thread: any (loop). Asks the Python service thread to interrupt cell exec_id (which may not
 * have begun on the kernel thread yet). */
void kh__py_kernel_interrupt(kh__pyk_t *p, const char *exec_id);
void kh__py_kernel_input_reply(kh__pyk_t *p, const char *value);
void kh__pyk_unref(kh__pyk_t *p);

/* --- starting the embedded interpreter (py-start.c), for the host and the worker alike ------ */

/* Who starts Python. The host library (main_thread kernels) starts it on a service thread and
 * keeps its process's signals; kernelhost-worker starts it on its main thread, to be interrupted
 * by SIGINT. Everything else (isolated config, site, allocator, libpython) is the same. */
typedef enum { KH__PY_HOST, KH__PY_WORKER } kh__py_role_t;

/* How _kernelhost.emit() delivers a runtime event: to the kernel's sink in the host (sink is the
 * one the runtime Kernel was given), to the protocol pipe in a worker (sink NULL). Called with
 * the GIL held; must not wait for anything that may need it. Returns 0 or a KH_E* code. */
typedef int (*kh__py_emit_fn)(kh__sink_t *sink, const char *exec_id, int type, const char *data,
                              size_t len);

typedef struct {
  kh__py_role_t role;
  kh__py_emit_fn emit;
  void (*interrupt_landed)(void); /* worker: its SIGINT handler ran (GIL held); host: NULL */
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

/* --- frames: the worker protocol (frame.c) and worker-mode hooks (backend-worker.c) ------- */

/* Largest frame either side accepts (a frame carries one message: code, an event, a reply). */
#define KH__FRAME_MAX (256u << 20)

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
/* The stream ended: 0 if no partial frame is left, else KH_EPROTO ("truncated frame"). */
int kh__frame_dec_finish(kh__frame_dec_t *d);
/* Encodes obj as one frame (owned, malloc); NULL when out of memory or over KH__FRAME_MAX. */
char *kh__frame_encode(const json_t *obj, size_t *len_out);
void kh__frame_put_len(char *hdr, size_t n); /* writes the 4-byte length prefix */

/* kernel.c, for backends that restart a process on their own (see kernel.c). */
void kh__kernel_on_restarting(kh_kernel_t *k, const char *reason_json);

/* The manager's warm pool of worker processes (m->worker_pool). Thread: loop. */
void kh__worker_manager_open(kh_manager_t *m);  /* kh_manager_new: starts the pool */
void kh__worker_manager_close(kh_manager_t *m); /* kh_manager_close: kills pooled workers */
/* Adds worker facts (pid, pooled) to a kernel's info object. */
void kh__worker_info(kh_kernel_t *k, json_t *info);

/* --- sandbox: OS-enforced permissions, mounts and limits for workers (sandbox.c) ---------- */

/* A kernel's sandbox plan: what to enforce, decided on the host from its options. */
typedef struct kh__sandbox_s kh__sandbox_t;

/* Host side, Thread: loop (createKernel, before spawning or claiming a worker). Turns the
 * normalised kernel options (k->opts.all) into a plan and checks this system can enforce it
 * (Landlock ABI, user/mount/net namespaces, seccomp and a pids cgroup are probed once per
 * process). Returns 0 with *out = NULL when nothing is asked, 0 with *out (owned), KH_EOPTION
 * for a bad value, or KH_ENOTSUP with errmsg naming what is missing (sandbox "strict", the
 * default; "best-effort" records missing layers instead). A mount is never faked. */
int kh__sandbox_new(kh__sandbox_t **out, const json_t *opts, char *errmsg);
void kh__sandbox_free(kh__sandbox_t *sb);
/* The plan (borrowed): send it to the worker as is; also the policy for _kh_sandbox.install. */
const json_t *kh__sandbox_plan(const kh__sandbox_t *sb);
/* Adds "sandbox": {mode, layers, missing, runtimeRead, runtimeReadWrite} to a kernel's info. */
void kh__sandbox_info(const kh__sandbox_t *sb, json_t *info);
/* Worker side: applies the plan to the calling process. It must be single-threaded (user
 * namespaces, Landlock and seccomp bind one thread and its future children only): call it
 * after Python is initialised and before any thread starts or user code runs. Then run
 * _kh_sandbox.install(plan) in Python. Returns 0 and *report (owned: {layers, missing}; may be
 * NULL to skip), or KH_ENOTSUP / KH_ENOMEM (KH_EINVAL when threads run) with errmsg: the
 * worker must then exit, never run the kernel unconfined. */
int kh__sandbox_apply(const json_t *plan, json_t **report, char *errmsg);
/* Host side, after the worker `pid` was reaped: removes its pids cgroup, if it had one. */
void kh__sandbox_cleanup(const json_t *plan, int pid);

#endif /* KH_INTERNAL_H */

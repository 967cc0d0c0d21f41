/* kernelhost.h: the public C API of libkernelhost, Jupyter-grade Python kernels for any
 * libuv host. One header, opaque handles, int status codes, callbacks on the loop thread.
 *
 * The rules every function keeps (libuv's):
 * - Thread: every function is called on the loop thread of the manager's loop unless its
 *   comment says "Thread: any".
 * - A function that takes a callback either returns an error, and the callback never runs, or
 *   returns 0, and the callback runs exactly once, from the loop, after the function returned:
 *   no user callback (event, reply, cancellation, completion) ever runs inside the API call
 *   that caused it. Callbacks run in the order their causes happened.
 * - Errors are 0 or a negative code (KH_E* below, or libuv's UV_E* passed through); the text
 *   of the last failure is kh_manager_errmsg(m).
 * - Inputs are borrowed for the call (the core copies what it keeps); callback arguments are
 *   borrowed for the callback; "owned" results are freed with kh_free().
 */
#ifndef KERNELHOST_H
#define KERNELHOST_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define KH_EXTERN __declspec(dllexport)
#elif defined(__GNUC__)
#define KH_EXTERN __attribute__((visibility("default")))
#else
#define KH_EXTERN
#endif

#define KH_VERSION_MAJOR 0
#define KH_VERSION_MINOR 1
#define KH_VERSION_PATCH 0

/* Error codes. Every fallible function returns 0 or a negative code: either one of libuv's
 * UV_E* codes passed through, or one of these, which live in a range disjoint from libuv's
 * (libuv's codes are all above -4100).
 */
#define KH_ERRNO_MAP(X)                                      \
  X(EINVAL, -30001, "invalid argument")                      \
  X(ENOTFOUND, -30002, "no such kernel")                     \
  X(ECLOSED, -30003, "handle is closed or closing")          \
  X(ECANCELED, -30004, "request canceled")                   \
  X(EKERNELDEAD, -30005, "kernel died")                      \
  X(ENOTSUP, -30006, "not supported")                        \
  X(EEXIST, -30008, "kernel id already in use")              \
  X(ENOMEM, -30009, "out of memory")                         \
  X(EPYTHON, -30010, "Python runtime failure")               \
  X(EENCODING, -30011, "invalid UTF-8 or NUL byte in input") \
  X(ETOOBIG, -30012, "input too large")                      \
  X(EOPTION, -30013, "invalid option")                       \
  X(EBUSY, -30014, "resource busy")                          \
  X(EPROTO, -30015, "protocol error")                        \
  X(EWORKER, -30016, "worker process failure")              \
  X(EREMOTE, -30017, "remote gateway failure")               \
  X(EAUTH, -30018, "gateway refused the credentials")

typedef enum {
#define KH_ERRNO_ENUM_(name, code, msg) KH_##name = (code),
  KH_ERRNO_MAP(KH_ERRNO_ENUM_)
#undef KH_ERRNO_ENUM_
      KH_ERRNO_LAST_ = -30000
} kh_errno_t;

/* Returns a static description of `err` (a KH_E* or UV_E* code). Thread: any. */
KH_EXTERN const char *kh_strerror(int err);
/* Returns the static name of `err`, e.g. "KH_ENOTFOUND" or "UV_ENOENT". Thread: any. */
KH_EXTERN const char *kh_err_name(int err);

/* Event types. Names are Jupyter's message types. */
typedef enum {
  KH_EVENT_STREAM = 1,
  KH_EVENT_DISPLAY_DATA,
  KH_EVENT_UPDATE_DISPLAY_DATA,
  KH_EVENT_EXECUTE_RESULT,
  KH_EVENT_EXECUTE_ERROR,
  KH_EVENT_CLEAR_OUTPUT,
  KH_EVENT_INPUT_REQUEST,
  KH_EVENT_STATUS,
  KH_EVENT_COMM_OPEN, /* Jupyter comms (see kh_kernel_comm_send) */
  KH_EVENT_COMM_MSG,
  KH_EVENT_COMM_CLOSE,
  KH_EVENT_TYPE_MAX_
} kh_event_type_t;

/* Pass as `type` to kh_subscribe() to receive every event. */
#define KH_EVENT_ALL 0

/* Returns the Jupyter name of `type` ("stream", ...), "*" for KH_EVENT_ALL, NULL if unknown. */
KH_EXTERN const char *kh_event_type_name(int type);
/* Returns the type for a name ("stream", "*" -> KH_EVENT_ALL), or a negative KH_EINVAL. */
KH_EXTERN int kh_event_type_from_name(const char *name);

typedef struct kh_manager_s kh_manager_t;

/* Bytes that travel beside a JSON document instead of inside it as base64: the value at `path`,
 * a JSON Pointer (RFC 6901: "/data/image~1png", "/buffers/0", "/2") into that document, where
 * the document holds null. Binary MIME values of outputs (image/png, image/jpeg,
 * application/pdf, ...), comm buffers and bytes passed to or from host functions travel so.
 * Borrowed for the callback that hands them out; copied by the functions that take them. */
typedef struct {
  const char *path;
  const void *data;
  size_t len;
} kh_buffer_t;

/* An event, as delivered to subscribers. Every field is borrowed for the callback. */
typedef struct {
  kh_event_type_t type;
  const char *type_name; /* "stream", ... */
  const char *kernel_id;
  const char *execution_id; /* "" when the event belongs to no request (e.g. "starting") */
  const char *json;         /* the payload, a JSON object in UTF-8, NUL-terminated */
  size_t json_len;
  /* The payload's binary values (kernel option binary "bytes", the default); with binary
   * "base64" they are base64 strings inside json, as Jupyter sends them, and nbuffers is 0. */
  const kh_buffer_t *buffers;
  size_t nbuffers;
} kh_event_t;

/* The outcome of an execute request. Borrowed for the callback. */
typedef struct {
  const char *kernel_id;
  const char *execution_id;
  const char *status; /* "ok", "error" or "aborted"; NULL when the request failed */
  int execution_count;
  /* The whole result as a JSON object:
   *   {"status", "execution_count", "result": {data, metadata}?,
   *    "error": {ename, evalue, traceback}?, "outputs": [{"type", "data"}, ...]}
   * NULL when the request failed (see the callback's status). */
  const char *json;
  size_t json_len;
  const char *errmsg; /* detail when the request failed, else NULL */
  /* The binary values of json's result and outputs (paths into json), as for events. */
  const kh_buffer_t *buffers;
  size_t nbuffers;
} kh_reply_t;

/* Callbacks. Each runs exactly once on the loop thread, unless the function that took it
 * returned an error, in which case it never runs. `status` is 0 or a negative code. */
typedef void (*kh_manager_close_cb)(kh_manager_t *m, void *data);
typedef void (*kh_kernel_create_cb)(kh_manager_t *m, const char *kernel_id, int status,
                                    const char *errmsg, void *data);
typedef void (*kh_kernel_done_cb)(kh_manager_t *m, const char *kernel_id, int status,
                                  const char *errmsg, void *data);
typedef void (*kh_execute_cb)(kh_manager_t *m, const kh_reply_t *reply, int status, void *data);
/* Runs once per matching event; may call any API function, including kh_unsubscribe(). */
typedef void (*kh_event_cb)(kh_manager_t *m, const kh_event_t *ev, void *data);

/* --- manager ---------------------------------------------------------------------------- */

/* Creates a manager on `loop` (borrowed; it must outlive the manager). The first call in a
 * process sets SIGPIPE to be ignored if its disposition is still the default, as CPython and
 * Node do: a write to a worker that just died then fails with EPIPE (its death is reported)
 * instead of killing the host. A handler the host installed is kept. `options_json` is NULL
 * or a JSON object (keys accept camelCase or snake_case):
 *   maxCodeBytes (int, default 4 MiB), interruptGraceMs (int, default 3000),
 *   workerPath (string),
 *   pool ({size, mode, preload}): worker processes made ahead of need. mode "spawn" (the
 *   default): `size` workers spawned and waiting (Python up). mode "fork": a fork server, one
 *   template process that starts Python, imports the runtime and `preload` (module names such
 *   as "pandas" or "matplotlib.pyplot") and forks a worker per kernel, `size` (default 1) kept
 *   forked and waiting. Every pooled worker applies its kernel's options (env, cwd, the whole
 *   sandbox) when it is claimed; a kernel whose env sets LD_*, MALLOC_* or GLIBC_TUNABLES is
 *   always spawned fresh. See kh_manager_pool_ready() for the fork server's start and faults.
 *   gateway ({url, token, headers, validateCert, kernelName, connectTimeout, requestTimeout,
 *   reconnectTimeout, pollInterval}): the Jupyter Server / Kernel Gateway / Enterprise Gateway that mode
 *   "remote" kernels run on. url: "http://host:port/base" or "https://..."; token: sent as
 *   "Authorization: token ..." and never shown in errors, info or logs; headers: {name: value}
 *   added to every request; validateCert (default true); kernelName: the kernelspec (default
 *   "python3"); connectTimeout / requestTimeout (ms, default 40000 / 42000, as jupyter's
 *   gateway client): TCP+TLS connect and a whole REST request; reconnectTimeout (ms, default
 *   30000): how long a dropped WebSocket is retried (with backoff) before the kernel is
 *   reported dead; pollInterval (ms, default 5000, 0: never): how often each remote kernel's
 *   existence is asked (GET /api/kernels/{id}), since a server keeps the channel of a kernel
 *   shut down or culled there open and silent. Keys not given come from
 *   KERNELHOST_GATEWAY_URL, KERNELHOST_GATEWAY_TOKEN, KERNELHOST_GATEWAY_KERNEL_NAME and
 *   KERNELHOST_GATEWAY_HEADERS (a JSON object) when set.
 * Returns 0 and sets *out, or KH_EOPTION / KH_EINVAL (text: kh_manager_errmsg(NULL)). Thread: loop.
 */
KH_EXTERN int kh_manager_new(kh_manager_t **out, uv_loop_t *loop, const char *options_json);

/* Closes the manager: stops accepting work, destroys every kernel (pending requests complete
 * with KH_ECANCELED, from the loop), closes its handles, then runs `cb` (may be NULL) after
 * every other callback. The memory is freed after `cb` returns. Returns 0, KH_EINVAL (m NULL)
 * or KH_ECLOSED (already closing). Thread: loop. */
KH_EXTERN int kh_manager_close(kh_manager_t *m, kh_manager_close_cb cb, void *data);

/* The one way to read an error's text: the detail of the last failure of a call on manager
 * `m`, or with `m` NULL, of the last failed kh_manager_new() on the calling thread. Borrowed
 * until the next call on `m` (on this thread). Never NULL; "" when there is nothing to say.
 * Thread: loop (with m NULL: any). */
KH_EXTERN const char *kh_manager_errmsg(const kh_manager_t *m);

/* Makes the manager's handles keep the loop alive only while requests or creations are in
 * flight (unref, the default) or always while kernels exist (ref). Cannot fail. */
KH_EXTERN void kh_manager_ref(kh_manager_t *m, int ref);

/* Number of kernels, and of callbacks promised and not yet run (requests queued or running,
 * creations, restarts, destroys) plus kernels still being torn down. Cannot fail. */
KH_EXTERN size_t kh_manager_kernel_count(const kh_manager_t *m);
KH_EXTERN size_t kh_manager_pending_count(const kh_manager_t *m);

/* Lists kernels as a JSON array of {id, mode, namespace, status, created, execution_count},
 * filtered by `namespace` unless it is NULL. Returns an owned string (free with kh_free()), or
 * NULL when m is NULL or out of memory. */
KH_EXTERN char *kh_manager_list(kh_manager_t *m, const char *namespace_);

/* Frees memory returned by kernelhost. Thread: any. */
KH_EXTERN void kh_free(void *p);

/* --- kernels ---------------------------------------------------------------------------- */

/* Creates a kernel. `options_json` is NULL or a JSON object (camelCase or snake_case keys):
 *   mode ("worker" | "main_thread" | "remote", default "worker"), id (string), namespace (string),
 *   maxExecutionTime (ms), inactivityTimeout (ms), filesystem ({enabled, root, mountPoint,
 *   readOnly}), env ({name: value}), cwd, permissions, limits, autoRestart, sandbox, thread,
 *   figureFormats, historyFile, binary ("bytes", the default: binary values of events and
 *   replies as kh_buffer_t beside the JSON; "base64": as base64 strings inside it, the shape
 *   of Jupyter's messages, for hosts that forward events to a Jupyter front end).
 * On success the id is copied to `id_out` (if not NULL, at least 64 bytes) at once, and `cb`
 * (may be NULL) runs when the kernel is ready (status 0), failed to start (KH_EWORKER,
 * KH_EPYTHON, KH_ENOTSUP: the system cannot enforce the sandbox) or was destroyed while
 * starting (KH_ECANCELED). Returns 0, KH_EINVAL, KH_ECLOSED (manager closing), KH_EOPTION (a
 * bad option, named in kh_manager_errmsg), KH_ENOTSUP (an option this mode or system cannot
 * honour), KH_EEXIST (id in use), KH_EWORKER (no usable worker executable) or KH_ENOMEM. */
KH_EXTERN int kh_kernel_create(kh_manager_t *m, const char *options_json, char *id_out,
                               size_t id_out_size, kh_kernel_create_cb cb, void *data);

/* Remote kernels (mode "remote", on the manager's gateway): options mode, id, namespace,
 * kernelName (the gateway's kernelspec, default the gateway's kernelName), env (sent in the
 * POST /api/kernels body: Enterprise Gateway reads KERNEL_* variables from it), remoteId (attach
 * to the gateway's running kernel with that id instead of starting one), shutdown (bool: destroy
 * shuts the remote kernel down; default true for a started kernel, false for an attached one),
 * maxExecutionTime, inactivityTimeout, historyFile, binary. thread, autoRestart and
 * figureFormats are refused at once (KH_ENOTSUP names them). permissions, filesystem, limits,
 * sandbox and cwd cannot be enforced from here: they go to a kernelhost kernelspec on the gateway
 * (its metadata.kernelhost.options_env names the KERNEL_* variable of the create request's env
 * that carries them; kernel info's remote.passed_options lists them), and any other kernelspec
 * refuses them: the callback gets KH_ENOTSUP naming the option and the kernelspec. Failures at
 * start: KH_EREMOTE (the gateway cannot be reached or answered badly: the message names the URL,
 * without the token, and the cause), KH_EAUTH (401/403), UV_ETIMEDOUT. Host functions
 * (kh_kernel_expose) are refused with KH_ENOTSUP. */

/* Attaches to the gateway's running kernel `remote_id`: kh_kernel_create() with mode "remote"
 * and remoteId set (options_json may add id, namespace, ...; the local id is remote_id unless
 * `id` is given). Same returns and callback as kh_kernel_create(). */
KH_EXTERN int kh_kernel_connect(kh_manager_t *m, const char *remote_id, const char *options_json,
                                char *id_out, size_t id_out_size, kh_kernel_create_cb cb,
                                void *data);

/* Asks the manager's gateway for `what`: "kernels" (GET /api/kernels: a JSON array of {id,
 * name, last_activity, execution_state, connections}) or "kernelspecs" (GET /api/kernelspecs:
 * {default, kernelspecs: {name: {name, spec, resources}}}). `cb` (kh_request_cb, kernel_id
 * NULL) gets status 0 and the server's JSON, or KH_EREMOTE, KH_EAUTH, UV_ETIMEDOUT or
 * KH_ECANCELED (manager close) with errmsg. Returns 0, KH_EINVAL (what unknown, cb NULL),
 * KH_ENOTSUP (the manager has no gateway), KH_ECLOSED or KH_ENOMEM. */
typedef void (*kh_request_cb)(kh_manager_t *m, const char *kernel_id, int status, const char *json,
                              size_t json_len, const char *errmsg, void *data);
KH_EXTERN int kh_gateway_list(kh_manager_t *m, const char *what, kh_request_cb cb, void *data);

/* Waits for the manager's pool to settle: `cb` (kh_request_cb, kernel_id NULL) runs once, from
 * the loop, with status 0 and the pool's info as JSON ({mode, size, waiting, and for a fork
 * server: preload, state "ready", pid, restarts, forked, last_exit}) once the fork server (if
 * any) is up and `size` processes are waiting for kernels, so that the next `size` creations
 * are warm; or with KH_EOPTION when a pool.preload module cannot be imported (errmsg names it;
 * kernels created on this manager then fail with the same error), KH_EWORKER when the fork
 * server cannot start or keeps dying, or pooled workers keep dying before they start (kernels
 * start cold), or KH_ECANCELED (manager close). A fork server that dies after starting is
 * started again (`restarts`, `last_exit` say so) and kernels created meanwhile start cold; call
 * again to wait for it. Returns 0, KH_EINVAL (cb NULL), KH_ENOTSUP (no pool), KH_ECLOSED or
 * KH_ENOMEM. */
KH_EXTERN int kh_manager_pool_ready(kh_manager_t *m, kh_request_cb cb, void *data);

/* Execute options: fill with kh_execute_options_init(), then change what you need. */
typedef struct {
  int silent;          /* 1: no execute_result, no history, counter unchanged (default 0) */
  int store_history;   /* 1: count the cell and set `_` (default 1; forced 0 when silent) */
  int stop_on_error;   /* 1: queued requests abort after an error (default 1) */
  uint64_t timeout_ms; /* interrupt the cell when it runs longer (default 0: no limit) */
  int allow_stdin;     /* 0: input() raises StdinNotImplementedError, no input_request event,
                          as Jupyter's allow_stdin false (default 1) */
} kh_execute_options_t;

/* Sets the defaults: silent 0, store_history 1, stop_on_error 1, timeout_ms 0, allow_stdin 1. */
KH_EXTERN void kh_execute_options_init(kh_execute_options_t *opts);

/* Queues `code` (UTF-8, `len` bytes) on kernel `kernel_id`. Requests on one kernel run one at a
 * time in FIFO order. `opts` may be NULL. On success the execution id is copied to `exec_id_out`
 * (if not NULL, at least 40 bytes). Returns 0, KH_EINVAL (cb NULL), KH_ENOTFOUND, KH_ECLOSED
 * (kernel being destroyed), KH_EKERNELDEAD, KH_EENCODING (invalid UTF-8 or a NUL byte),
 * KH_ETOOBIG (over maxCodeBytes), KH_ENOTSUP (a timeout on a thread: "host" kernel), KH_EBUSY
 * (called from inside one of this kernel's host functions, whose cell it would wait behind) or
 * KH_ENOMEM. `cb` gets status 0 and a reply whenever the code ran (even if Python raised:
 * reply->status is "error"; "aborted" when an earlier error stopped it), or KH_ECANCELED
 * (restart, destroy, close), KH_EKERNELDEAD (the kernel died or its process was replaced) or
 * KH_ENOMEM. */
KH_EXTERN int kh_kernel_execute(kh_manager_t *m, const char *kernel_id, const char *code,
                                size_t len, const kh_execute_options_t *opts, char *exec_id_out,
                                size_t exec_id_out_size, kh_execute_cb cb, void *data);

/* Raises KeyboardInterrupt in the running cell, if any (also inside time.sleep); a no-op
 * for cells when none runs. A worker that does not answer within interruptGraceMs is killed
 * and restarted. It also cancels the kernel's editor requests in flight (kh_kernel_complete
 * ...): their callbacks get KH_ECANCELED (from the loop, never inside this call) and their work
 * in the kernel is stopped. Returns 0, KH_EINVAL, KH_ENOTFOUND, KH_ECLOSED or
 * KH_EKERNELDEAD. */
KH_EXTERN int kh_kernel_interrupt(kh_manager_t *m, const char *kernel_id);

/* Answers the kernel's pending input_request with the `len` bytes at `value` (UTF-8, copied;
 * NUL bytes are part of the reply, which input() returns whole). Returns 0, KH_EINVAL (value
 * NULL, or no cell is running), KH_ENOTFOUND, KH_ECLOSED, KH_EKERNELDEAD (the worker is gone),
 * KH_ENOTSUP (a thread: "host" kernel, which refuses input()) or KH_EENCODING (not valid
 * UTF-8, in every mode). */
KH_EXTERN int kh_kernel_input_reply(kh_manager_t *m, const char *kernel_id, const char *value,
                                    size_t len);

/* Restarts the kernel: interrupts the running cell, cancels it and the queued requests
 * (KH_ECANCELED), and gives a fresh namespace and counter (a fresh process in worker mode)
 * with the same id and options. `cb` (may be NULL) runs when it is ready again (status 0), when
 * the restart failed (the kernel is then dead), or with KH_ECANCELED when the kernel is
 * destroyed first. A restart asked while one is under way joins it. Returns 0, KH_EINVAL,
 * KH_ENOTFOUND, KH_ECLOSED, KH_EBUSY (the kernel is still starting) or KH_ENOMEM. */
KH_EXTERN int kh_kernel_restart(kh_manager_t *m, const char *kernel_id, kh_kernel_done_cb cb,
                                void *data);

/* Destroys the kernel: pending requests complete with KH_ECANCELED, then `cb` (may be NULL)
 * runs with status 0 once the kernel's thread or process is gone and the id is free. Returns 0,
 * KH_EINVAL, KH_ENOTFOUND, KH_ECLOSED (a destroy is under way already) or KH_ENOMEM. */
KH_EXTERN int kh_kernel_destroy(kh_manager_t *m, const char *kernel_id, kh_kernel_done_cb cb,
                                void *data);

/* Destroys every kernel in `namespace_` (every kernel when NULL); `cb` (may be NULL) runs once
 * all are gone (also when there were none), with their count in `status` and kernel_id NULL.
 * Returns 0, KH_EINVAL, KH_ECLOSED (manager closing) or KH_ENOMEM. */
KH_EXTERN int kh_manager_destroy_all(kh_manager_t *m, const char *namespace_, kh_kernel_done_cb cb,
                                     void *data);

/* Returns 1 if the kernel exists (and is not being destroyed), else 0. Fills `mode_out` with
 * "worker"/"main_thread" when not NULL (static). Cannot fail. */
KH_EXTERN int kh_kernel_exists(kh_manager_t *m, const char *kernel_id, const char **mode_out);

/* Returns an owned JSON object describing the kernel ({id, mode, namespace, status, created,
 * execution_count, options, and from its backend pid?, pooled?, sandbox?}; snake_case keys like
 * every JSON the core hands out), or NULL if there is no such kernel (or out of memory). */
KH_EXTERN char *kh_kernel_info(kh_manager_t *m, const char *kernel_id);

/* --- editor requests: complete, inspect, is_complete, history, kernel_info ---------------
 * What a console asks while its user types. Each answers with the content of Jupyter's reply
 * (complete_reply, inspect_reply, is_complete_reply, history_reply, kernel_info_reply) as a
 * JSON object, through `cb`, from the loop, never inside the call. They do not wait behind a
 * running cell: complete, inspect, is_complete and kernel_info are served by a thread of the
 * kernel's process that takes the GIL between the cell's bytecodes (a cell that holds the GIL
 * inside C code delays them until it lets go or the timeout ends them); history is served by
 * the core itself. They never change execution_count, `_` or the history. Cursor positions are
 * in Unicode code points, as Jupyter's protocol (5.2+) counts them, from 0 to the number of code
 * points of `code`; -1 means the end of `code`.
 *
 * `timeout_ms` bounds the request (0: 10000 ms): then `cb` gets UV_ETIMEDOUT and the work is
 * stopped (KeyboardInterrupt raised in it). Each function returns 0, KH_EINVAL (cb NULL, a cursor
 * position out of range, a bad detail level or history request), KH_ENOTFOUND, KH_ECLOSED,
 * KH_EKERNELDEAD, KH_EBUSY (the kernel is starting or restarting), KH_EENCODING (invalid
 * UTF-8 or a NUL byte), KH_ETOOBIG or KH_ENOMEM. `cb` gets status 0 and the reply, or
 * UV_ETIMEDOUT, KH_EPYTHON (the runtime failed: errmsg says why), KH_ECANCELED (interrupt,
 * restart, destroy, close) or KH_EKERNELDEAD (the kernel died first). */

/* The answer to an editor request (kh_request_cb, declared above): json: the reply content
 * (status 0), else NULL; errmsg: the detail of a failure, else NULL. Both borrowed for the
 * callback. */

/* complete_reply: {status, matches, cursor_start, cursor_end, metadata:
 * {_jupyter_types_experimental: [{start, end, text, type, signature}]}}. jedi (with the
 * kernel's live namespace) when it is installed, else rlcompleter. */
KH_EXTERN int kh_kernel_complete(kh_manager_t *m, const char *kernel_id, const char *code,
                                 size_t len, int64_t cursor_pos, uint64_t timeout_ms,
                                 kh_request_cb cb, void *data);
/* inspect_reply: {status, found, data: {"text/plain", "text/markdown"}, metadata} for the name
 * under the cursor (or the callable whose call it is in); detail_level 0 or 1 (1 adds the
 * source, as IPython's obj??). */
KH_EXTERN int kh_kernel_inspect(kh_manager_t *m, const char *kernel_id, const char *code,
                                size_t len, int64_t cursor_pos, int detail_level,
                                uint64_t timeout_ms, kh_request_cb cb, void *data);
/* is_complete_reply: {status: "complete" | "incomplete" | "invalid" | "unknown", indent?}
 * (indent: the spaces to insert on the next line, with "incomplete"). */
KH_EXTERN int kh_kernel_is_complete(kh_manager_t *m, const char *kernel_id, const char *code,
                                    size_t len, uint64_t timeout_ms, kh_request_cb cb, void *data);
/* history_reply: {status, history: [[session, line, input], ...]} for a history_request's
 * content (JSON): {hist_access_type: "tail", n} | {"range", session, start, stop} |
 * {"search", pattern, n?, unique?}; with output: true each entry is [session, line, [input,
 * output]], output the text/plain of the cell's execute_result or null. Sessions count from 1 and a restart starts a new one;
 * "range" takes session 0 (or less) as the current one (or one before). The cells are those
 * that counted (store_history); with the kernel option historyFile they are appended to that
 * file and read back when a kernel is created with it, sessions continuing. */
KH_EXTERN int kh_kernel_history(kh_manager_t *m, const char *kernel_id, const char *request_json,
                                kh_request_cb cb, void *data);
/* kernel_info_reply: {status, protocol_version, implementation, implementation_version,
 * language_info: {name, version, mimetype, file_extension, pygments_lexer, codemirror_mode,
 * nbconvert_exporter}, banner, help_links, debugger}. */
KH_EXTERN int kh_kernel_kernel_info(kh_manager_t *m, const char *kernel_id, uint64_t timeout_ms,
                                    kh_request_cb cb, void *data);

/* --- host functions ----------------------------------------------------------------------
 * A kernel calls functions its host exposed to it, by name, from Python:
 * `import kernelhost; kernelhost.host.move(3, 1.5)` or `kernelhost.call("move", 3, 1.5)`. The
 * cell waits (interruptibly) for the answer, which the host gives through the call's handle
 * when it likes: inside the callback or from a later loop turn.
 *
 * - Per kernel, never global: each kernel sees only the names exposed to it (dir(kernelhost.host)),
 *   and a kernel with none has no bridge at all. Exposures outlive restarts of the kernel.
 * - Values are JSON: null, booleans, numbers (integers exact from -2^63 to 2^63-1), strings
 *   (NULs allowed), arrays, objects; bytes travel beside them as kh_buffer_t (the JSON holds a
 *   null at the buffer's path). Python raises TypeError for what has no such form (other
 *   objects, NaN, infinities, ints beyond 64 bits, cycles) before anything crosses.
 * - The host function runs on the loop thread, from the loop (never inside an API call), while
 *   the calling Python thread waits without holding the GIL; Python never runs on the host
 *   thread because of a call. A host error (kh_hostcall_error) raises kernelhost.HostError in
 *   the cell; a Python exception stays in the cell.
 * - While a kernel's host function runs, requests that would queue behind that kernel's cell
 *   (kh_kernel_execute on it) are refused with KH_EBUSY: the cell waits for that very function.
 *   Cells of other kernels are fine, and so is answering from their callbacks.
 * - kh_kernel_interrupt ends the wait of the running cell's call at once (KeyboardInterrupt);
 *   restart, destroy, the kernel's death and kh_manager_close end every call's wait (HostError
 *   in threads that still run). The host's handles of such calls stay valid until answered, and
 *   answering them returns KH_ECANCELED: a late answer is dropped, never delivered to another
 *   call. A call from another thread of the kernel (one a cell started) is not interrupted.
 * - thread: "host" kernels: their cells run on the loop thread, so a call from the cell runs its
 *   host function at once, on that thread, inside the cell and so inside the API call that ran
 *   it (the one exception to the rule above; the GIL is released meanwhile, and the function
 *   may run cells of other kernels). It must answer before it returns: one that does not makes
 *   the cell's call raise HostError, and its handle answers KH_ECANCELED. Interrupts cannot
 *   reach such a cell (as ever for those kernels).
 * - Cost: after a host call the core keeps the loop polling without sleeping for up to 100 us (an
 *   unref'd uv_idle handle: the loop's timeout is 0 meanwhile, and nothing is kept alive), and
 *   the waiting thread spins as long before it sleeps, so that a cell's next call costs no
 *   wake-up on either side. */

/* One call in flight. Answered exactly once, with kh_hostcall_return() or kh_hostcall_error(),
 * which free it; valid until then, even after its kernel was interrupted or destroyed. */
typedef struct kh_hostcall_s kh_hostcall_t;

/* A host function: runs on the loop thread, once per call. args_json is a JSON array of the
 * call's positional arguments (bytes arguments are buffers at "/N" paths). */
typedef void (*kh_hostcall_fn)(kh_manager_t *m, const char *kernel_id, const char *name,
                               const char *args_json, size_t args_len, const kh_buffer_t *buffers,
                               size_t nbuffers, kh_hostcall_t *call, void *data);

/* Exposes `fn` to kernel `kernel_id` as `name` (a Python identifier of ASCII letters, digits and
 * "_", not starting with a digit, at most 64 bytes), replacing an earlier one of that name
 * (calls in flight keep the function that got them); fn NULL withdraws it (0 if it was not
 * exposed). `data` is passed to fn. Only exposed names are callable; a kernel with none has no
 * bridge. Returns 0, KH_EINVAL (bad name), KH_ENOTFOUND, KH_ECLOSED, KH_ENOTSUP (a remote
 * kernel: it cannot call back into this process) or KH_ENOMEM. */
KH_EXTERN int kh_kernel_expose(kh_manager_t *m, const char *kernel_id, const char *name,
                               kh_hostcall_fn fn, void *data);
/* Answers `call` with a value: JSON (len bytes, UTF-8; any JSON value, "null" included) and its
 * binary values (copied). Frees call, except on KH_EINVAL. Returns 0, KH_ECANCELED (the kernel
 * stopped waiting: interrupt, restart, destroy, close; the value is dropped), KH_EINVAL (call or
 * json NULL, not JSON, an integer beyond 64 bits, or a buffer path that does not lead to a null;
 * the detail is in kh_manager_errmsg; the call is then still unanswered: answer it again, with
 * kh_hostcall_error for instance) or KH_ENOMEM. */
KH_EXTERN int kh_hostcall_return(kh_hostcall_t *call, const char *json, size_t len,
                                 const kh_buffer_t *buffers, size_t nbuffers);
/* Answers `call` with an error: Python raises kernelhost.HostError(message) (NULL: ""; bytes
 * that are not UTF-8 become U+FFFD). Frees call. Returns 0, KH_ECANCELED (as above), KH_ENOMEM,
 * or KH_EINVAL (call NULL). */
KH_EXTERN int kh_hostcall_error(kh_hostcall_t *call, const char *message);

/* --- comms ---------------------------------------------------------------------------------
 * Jupyter's comm protocol, both ways. In Python the `comm` package's API works in every kernel,
 * each kernel with comms and targets of its own (main_thread kernels share the interpreter, not
 * their comms): comm.create_comm(target_name=..., data=..., metadata=..., buffers=...,
 * comm_id=...), comm.get_comm_manager().register_target(name, fn(comm, msg)), and on a comm
 * send(), close(), on_msg(fn(msg)), on_close(fn(msg)). What a comm sends reaches the host as
 * events KH_EVENT_COMM_OPEN / _MSG / _CLOSE, events like any other: they carry the execution id
 * of the request whose code sent them (for a thread a cell started, the request its kernel runs
 * then), come in order with that request's other output, and are in its reply's `outputs`,
 * which hold every event of the request. Their payload is Jupyter's content with the message's
 * metadata beside it: {comm_id, target_name and target_module? (comm_open only), data, metadata,
 * buffers?}: the comm's buffers (bytes-like objects in Python) are kh_buffer_t at "/buffers/N",
 * null in the JSON, or with the kernel option binary "base64" base64 strings there, as Jupyter's
 * JSON messages carry them.
 *
 * kh_kernel_comm_send() is the host's side: msg_type "comm_open" | "comm_msg" | "comm_close" and
 * its content, a JSON object: comm_id (a string under 256 bytes, chosen by whoever opens the
 * comm), target_name (comm_open), data (an object; {} when absent), metadata? (an object: the
 * message's metadata); buffers (at most 64) at paths "/buffers/0" ... "/buffers/<nbuffers-1>",
 * each once, in any order, where the content's "buffers" holds nulls (the array is made when the
 * content has none), copied; Python gets them as msg["buffers"], memoryviews in that order. The
 * message is queued like an execute request (Jupyter's shell channel carries both): the kernel
 * handles it after the cells queued before it, one request at a time, between busy and idle status
 * events that carry an execution id of its own, which is also the id of whatever its handler
 * prints, displays or sends. It never changes execution_count, `_` or history, and a failed cell
 * before it does not abort it (ipykernel aborts execute requests only); interrupt and
 * maxExecutionTime reach its handler; restart and destroy drop it unhandled. The kernel handles it
 * as ipykernel does: comm_open calls the target registered under target_name with (comm, msg), and
 * an unknown target, or one that raises, closes the comm again (a comm_close event); comm_msg
 * calls the comm's on_msg callback, comm_close its on_close callback; msg is Jupyter's message
 * dict (header, content, metadata, buffers as memoryviews). A handler's exception is written to
 * stderr, with its traceback, as output of the message; the kernel carries on.
 *
 * The core knows which comms of a kernel are open, from both sides' comm_open and comm_close (the
 * kernel's as its events are delivered): comm_msg and comm_close on a comm that is not open (never
 * opened, closed by either side, or gone with a restart or a death) are refused with KH_ECLOSED,
 * and comm_open on an open id with KH_EINVAL. Returns 0, KH_EINVAL (an unknown msg_type; content
 * that is not a JSON object, lacks comm_id or target_name, or has data or metadata that are not
 * objects; buffer paths that are not "/buffers/0" ... in some order, a "buffers" member that does
 * not hold one null per buffer, more than 64), KH_ECLOSED, KH_ENOTFOUND, KH_EKERNELDEAD,
 * KH_EENCODING (content not UTF-8, or holding a NUL byte), KH_ETOOBIG (content over maxCodeBytes,
 * a buffer over 256 MiB) or KH_ENOMEM; on an error nothing was queued. Nothing answers a message
 * that was queued: as in Jupyter, the kernel's answers are comm events. */
KH_EXTERN int kh_kernel_comm_send(kh_manager_t *m, const char *kernel_id, const char *msg_type,
                                  const char *content_json, size_t len, const kh_buffer_t *buffers,
                                  size_t nbuffers);

/* --- Jupyter's wire protocol (jupyter.c) ---------------------------------------------------
 * Serves one kernel of this manager over Jupyter's ZeroMQ wire protocol (5.3): shell, control,
 * iopub, stdin and heartbeat sockets, messages signed and checked with HMAC-SHA256, so that
 * jupyter_client, `jupyter console --existing`, JupyterLab or nbclient can use the kernel while
 * the host keeps using it too (both see every event of the kernel; each front end sees the
 * host's cells as another client's, with a parent header of session "kernelhost-host"). The
 * server runs on the manager's loop (uv_poll on the sockets' ZMQ_FD): no thread of the host
 * is needed (libzmq has its own I/O thread). It is also what the `kernelhost-jupyter`
 * executable runs for a kernelspec.
 *
 * `options_json` is NULL or a JSON object (camelCase or snake_case keys):
 *   connection (object): the content of a connection file to serve, as jupyter_client writes it
 *     ({transport, ip, shell_port, iopub_port, stdin_port, control_port, hb_port, key,
 *     signature_scheme}); ports that are 0 or absent are chosen by the system;
 *   connectionFile (string): where to write the connection file (mode 0600, replaced
 *     atomically, removed when the server stops); default, unless `connection` is given:
 *     <Jupyter's runtime dir>/kernel-kh-<kernel id>.json, the runtime dir being
 *     $JUPYTER_RUNTIME_DIR, else $JUPYTER_DATA_DIR/runtime, else
 *     ($XDG_DATA_HOME or ~/.local/share)/jupyter/runtime;
 *   ip (default "127.0.0.1"), transport ("tcp", the default, or "ipc"), key (default 32 random
 *     hex digits from the OS; "" disables signing, as Jupyter allows), kernelName (written
 *     into the file, default "kernelhost");
 *   shutdown: what a client's shutdown_request does after its reply: "stop" (the default:
 *     restart: true restarts the kernel in place, otherwise the server stops and the kernel
 *     keeps running), "destroy" (as "stop", but the kernel is destroyed too) or "none" (only
 *     the KH_JUPYTER_SHUTDOWN note: the host decides).
 * Messages with a bad signature (or none, when a key is set) are dropped unexecuted and counted.
 *
 * `cb` (may be NULL) gets the server's notes on the loop, never inside an API call:
 * KH_JUPYTER_SHUTDOWN when a client asked for a shutdown (`restart` 0 or 1; the reply was sent
 * already), and KH_JUPYTER_STOPPED exactly once and last, when the server has stopped for any
 * reason (kh_jupyter_stop, its kernel destroyed, kh_manager_close, a shutdown); the handle is
 * freed when that callback returns. Returns 0 and sets *out, or KH_EINVAL (m, kernel_id or out
 * NULL), KH_ENOTFOUND, KH_ECLOSED, KH_EKERNELDEAD, KH_EOPTION (a bad option, named in
 * kh_manager_errmsg), KH_EEXIST (the kernel is being served already), a UV_E* code (a socket
 * could not be bound, UV_EADDRINUSE for instance, or the file not written: errmsg says why) or
 * KH_ENOMEM. Thread: loop. */
typedef struct kh_jupyter_s kh_jupyter_t;
typedef enum { KH_JUPYTER_SHUTDOWN = 1, KH_JUPYTER_STOPPED = 2 } kh_jupyter_note_t;
typedef void (*kh_jupyter_cb)(kh_jupyter_t *s, int note, int restart, void *data);

KH_EXTERN int kh_jupyter_serve(kh_manager_t *m, const char *kernel_id, const char *options_json,
                               kh_jupyter_cb cb, void *data, kh_jupyter_t **out);
/* Stops serving: closes the sockets, removes the connection file the server wrote, and sends
 * the KH_JUPYTER_STOPPED note from the loop. The kernel keeps running. Returns 0, KH_EINVAL (s
 * NULL) or KH_ECLOSED (stopping already). */
KH_EXTERN int kh_jupyter_stop(kh_jupyter_t *s);
/* The server, as an owned JSON object (free with kh_free()): {kernel_id, connection_file (or
 * null), connection: the connection file's content (key included), messages (accepted),
 * dropped (bad signatures and malformed messages), stopping}; NULL when out of memory. */
KH_EXTERN char *kh_jupyter_info(const kh_jupyter_t *s);

/* --- events ----------------------------------------------------------------------------- */

/* Subscribes `cb` to events of `type` (a kh_event_type_t or KH_EVENT_ALL) of kernel
 * `kernel_id` (copied; NULL = every kernel of this manager). The subscription stays until
 * kh_unsubscribe() or manager close. Returns 0 and the subscription's id (> 0, never reused by
 * this manager) in *sub_id_out (may be NULL), KH_EINVAL when `type` or `cb` is invalid,
 * KH_ECLOSED when the manager is closing, or KH_ENOMEM. Thread: loop. */
KH_EXTERN int kh_subscribe(kh_manager_t *m, const char *kernel_id, int type, kh_event_cb cb,
                           void *data, int64_t *sub_id_out);

/* Removes a subscription; its callback is not called again, even later in the dispatch that is
 * running. Safe inside a callback. Returns 0, KH_EINVAL (m NULL) or KH_ENOTFOUND (the id is
 * unknown or was removed already). */
KH_EXTERN int kh_unsubscribe(kh_manager_t *m, int64_t sub_id);

#ifdef __cplusplus
}
#endif
#endif /* KERNELHOST_H */

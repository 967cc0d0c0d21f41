/* worker-proc.c: one kernelhost-worker process seen from the host: finding the executable,
 * spawning it with its two protocol pipes and its environment, reading and checking every frame
 * it writes against the protocol (protocol.h), sending frames, killing and reaping it.
 * Everything here runs on the loop thread. Whoever holds a process (the pool, worker-pool.c,
 * then a kernel, backend-worker.c) hears of it through its callbacks.
 *
 * A worker is the sandbox's boundary and a cell can write to any descriptor of its own process,
 * the protocol pipe included: every frame is hostile until it has passed the decoder (frame.c:
 * exactly one JSON object), the message table (protocol.c: members and their types) and the
 * phase checks below (which message may come now, and which request it may name). Anything
 * else is a protocol error: that process is killed and its exit reported with the reason. */
#include <dlfcn.h>
#include <errno.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

extern char **environ;

static void proc_feed(kh__wproc_t *w, size_t n);

/* --- the worker executable ---------------------------------------------------------------- */

int kh__wproc_path(kh_manager_t *m, char *out, size_t n, char *errmsg) {
  const char *p = m->opts.worker_path;
  const char *how = "manager option workerPath";
  if (p == NULL || !*p) {
    p = getenv("KH_WORKER_PATH");
    how = "environment variable KH_WORKER_PATH";
  }
  if (p != NULL && *p) {
    snprintf(out, n, "%s", p);
  } else {
    /* Next to the library, or to the program or addon it is linked into: the build tree and
     * every package (rock, npm) put kernelhost-worker there. */
    Dl_info info;
    char dir[4096];
    how = "default location next to libkernelhost";
    if (!dladdr((void *)&kh_manager_new, &info) || info.dli_fname == NULL) {
      kh__set_err(errmsg,
                  "cannot locate kernelhost-worker: set the manager option workerPath "
                  "or KH_WORKER_PATH");
      return KH_EWORKER;
    }
    snprintf(dir, sizeof(dir), "%s", info.dli_fname);
    snprintf(out, n, "%s/kernelhost-worker", dirname(dir));
  }
  if (access(out, X_OK) != 0) {
    kh__set_err(errmsg,
                "worker executable \"%s\" (from the %s) is not usable: %s; build "
                "kernelhost-worker or set workerPath / KH_WORKER_PATH",
                out, how, strerror(errno));
    return KH_EWORKER;
  }
  return 0;
}

/* --- handles ------------------------------------------------------------------------------ */

/* w->refs counts the process handle and the two pipes (util.c's one scheme): w is freed when
 * the last one has closed, after which its holder hears of it (and counts its live processes
 * the same way). */
static void wproc_release(kh__refs_t *r) {
  kh__wproc_t *w = (kh__wproc_t *)((char *)r - offsetof(kh__wproc_t, refs));
  const kh__wproc_cbs_t *cbs = w->cbs;
  void *holder = w->holder;
  kh__frame_dec_free(&w->dec);
  json_decref(w->plan);
  if (w->pidfd >= 0) close(w->pidfd);
  free(w);
  if (cbs != NULL) cbs->closed(holder);
}

/* Closes the pipes now, and the process handle only once the process has been reaped (closing
 * it earlier would leave a zombie). */
static void close_pipes(kh__wproc_t *w) {
  kh__refs_close(&w->refs, (uv_handle_t *)&w->to);
  kh__refs_close(&w->refs, (uv_handle_t *)&w->from);
}

/* The handle that watches the process: libuv's for a spawned one, the pidfd's poll for one the
 * fork server made (which libuv did not spawn and so does not reap). */
static uv_handle_t *proc_handle(kh__wproc_t *w) {
  return w->adopted ? (uv_handle_t *)&w->reap : (uv_handle_t *)&w->proc;
}

/* SIGKILL to the whole process group: the worker leads its own, and takes whatever its cells
 * started (subprocesses, a fork bomb) down with it. The process itself too, in case it has not
 * made its group yet (a forked one does so first thing). */
static void kill_group(kh__wproc_t *w) {
  if (w->exited || w->pid <= 0) return;
  kill(-w->pid, SIGKILL);
  kill(w->pid, SIGKILL);
}

void kh__wproc_kill(kh__wproc_t *w) {
  w->killed = 1;
  /* A record the fork server is still making has no handles yet: it is killed when it arrives
   * (wproc_started), or freed if it never does (worker-pool.c). */
  if (w->to.loop == NULL) return;
  close_pipes(w);
  if (!w->exited) {
    kill_group(w);
    if (w->pid > 0) uv_ref(proc_handle(w)); /* keep the loop running until it is reaped */
  }
}

/* Ends a process that broke the protocol. Nothing more is read: the next frame could be the
 * attacker's too. The exit, when it is reaped, goes to the holder as a death with this reason;
 * `cause` marks it "protocol_error" (not for a frame cut short at EOF: a worker that crashed
 * while writing looks the same, and its signal tells more). */
static void fail_v(kh__wproc_t *w, int cause, const char *fmt, va_list ap) {
  char what[256];
  if (w->failed || w->killed) return;
  vsnprintf(what, sizeof(what), fmt, ap);
  snprintf(w->why, sizeof(w->why), "protocol error: %s", what);
  w->failed = 1;
  w->protocol_error = cause;
  kill_group(w);
  if (!uv_is_closing((uv_handle_t *)&w->from)) uv_read_stop((uv_stream_t *)&w->from);
}

void kh__wproc_fail(kh__wproc_t *w, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fail_v(w, 1, fmt, ap);
  va_end(ap);
}

static void fail_at_eof(kh__wproc_t *w, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fail_v(w, 0, fmt, ap);
  va_end(ap);
}

static void proc_exited(kh__wproc_t *w, int64_t status, int sig) {
  w->exited = 1;
  w->exit_status = status;
  w->term_signal = sig;
  /* Reaped: its pids cgroup (root with limits.max_processes) can go. */
  if (w->plan != NULL) kh__sandbox_cleanup(w->plan, w->pid);
  if (w->pids_cgroup != NULL) kh__sandbox_cgroup_remove(w->pids_cgroup, w->pid);
  /* The exit can be seen before the last frames are (a "fatal" message, the events of a cell
   * that called os._exit): read what is left in the pipe first. */
  if (!w->killed && !w->failed && !uv_is_closing((uv_handle_t *)&w->from)) {
    int fd;
    ssize_t n;
    if (uv_fileno((uv_handle_t *)&w->from, &fd) == 0) {
      while (!w->killed && !w->failed && (n = read(fd, w->rbuf, sizeof(w->rbuf))) > 0)
        proc_feed(w, (size_t)n);
    }
  }
  close_pipes(w);
  kh__refs_close(&w->refs, proc_handle(w));
  /* A process killed on purpose is no news to its holder. */
  if (!w->killed && w->cbs != NULL) w->cbs->exited(w->holder, w);
}

static void on_proc_exit(uv_process_t *p, int64_t status, int sig) {
  proc_exited(p->data, status, sig);
}

/* A forked worker's pidfd is readable once it has exited: the host, its parent, reaps it. */
static void on_reap(uv_poll_t *h, int status, int events) {
  kh__wproc_t *w = h->data;
  int st = 0;
  pid_t r;
  (void)status;
  (void)events;
  do r = waitpid(w->pid, &st, WNOHANG);
  while (r < 0 && errno == EINTR);
  if (r == 0) return; /* not yet */
  uv_poll_stop(h);
  if (r < 0) {
    /* Reaped by someone else (a host whose SIGCHLD is ignored): gone, cause unknown. */
    if (!w->why[0]) snprintf(w->why, sizeof(w->why), "its exit status was not available");
    proc_exited(w, -1, 0);
  } else {
    proc_exited(w, WIFEXITED(st) ? WEXITSTATUS(st) : 0, WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  }
}

/* --- sending ------------------------------------------------------------------------------ */

typedef struct {
  uv_write_t req;
  char *buf;
} wreq_t;

static void on_written(uv_write_t *req, int status) {
  wreq_t *r = (wreq_t *)req;
  (void)status; /* a failed write shows up as the peer's death */
  free(r->buf);
  free(r);
}

int kh__stream_send_frame(uv_stream_t *s, const json_t *msg, const kh_buffer_t *bufs, size_t nb) {
  wreq_t *r = calloc(1, sizeof(*r));
  uv_buf_t b;
  size_t n;
  int rc;
  if (r == NULL) return KH_ENOMEM;
  r->buf = kh__frame_encode_bufs(msg, bufs, nb, &n);
  if (r->buf == NULL) {
    free(r);
    return KH_ETOOBIG;
  }
  b = uv_buf_init(r->buf, (unsigned)n);
  rc = uv_write(&r->req, s, &b, 1, on_written);
  if (rc != 0) {
    free(r->buf);
    free(r);
  }
  return rc;
}

/* Remembers an execution id given to this process: events may name it from then on. */
static void remember(kh__wproc_t *w, const char *id) {
  snprintf(w->recent[w->nsent % KH__WPROC_RECENT], KH__EXEC_ID_MAX, "%s", id);
  w->nsent++;
}

/* The slot of editor request id among those in flight ("" finds a free one), or -1. */
static int asked_slot(const kh__wproc_t *w, const char *id) {
  int i;
  for (i = 0; i < KH__WPROC_ASKED; i++)
    if (strcmp(w->asked[i], id) == 0) return i;
  return -1;
}

int kh__wproc_send(kh__wproc_t *w, const json_t *msg) {
  return kh__wproc_send_bufs(w, msg, NULL, 0);
}

int kh__wproc_send_bufs(kh__wproc_t *w, const json_t *msg, const kh_buffer_t *bufs, size_t nb) {
  char why[160];
  kh__pmsg_t kind = kh__proto_check(msg, KH__P_TO_WORKER, 0, why, sizeof(why));
  const char *id = json_string_value(json_object_get(msg, "id"));
  int rc;
  if (w->killed || w->exited || w->failed || uv_is_closing((uv_handle_t *)&w->to))
    return KH_EKERNELDEAD;
  /* The host keeps to the protocol's order as it expects the worker to (protocol.h). */
  if (kind == KH__P_NONE) return KH_EINVAL;
  if (kind == KH__P_OPEN && w->phase != KH__WP_HELLO) return KH_EINVAL;
  if (kind != KH__P_OPEN && w->phase != KH__WP_READY) return KH_EKERNELDEAD;
  /* One request at a time: a cell or a comm message. */
  if ((kind == KH__P_EXEC || kind == KH__P_COMM) && w->inflight[0]) return KH_EINVAL;
  if (kind == KH__P_INTERACT && asked_slot(w, "") < 0) return KH_EBUSY;
  if ((rc = kh__stream_send_frame((uv_stream_t *)&w->to, msg, bufs, nb)) != 0) return rc;
  if (kind == KH__P_OPEN) w->phase = KH__WP_OPENING;
  if (kind == KH__P_INTERACT) snprintf(w->asked[asked_slot(w, "")], KH__EXEC_ID_MAX, "%s", id);
  if (kind == KH__P_EXEC || kind == KH__P_COMM) {
    snprintf(w->inflight, sizeof(w->inflight), "%s", id);
    remember(w, id);
  }
  return 0;
}

/* --- receiving ---------------------------------------------------------------------------- */

/* Whether id was given to this process in an "exec": 1 yes, 0 no, -1 cannot tell (it was given
 * more ids than it remembers). Threads a cell started write under its id after its reply, so
 * every id it was given stays valid; the last KH__WPROC_RECENT are remembered exactly. */
static int was_given(const kh__wproc_t *w, const char *id) {
  unsigned i, n = w->nsent < KH__WPROC_RECENT ? w->nsent : KH__WPROC_RECENT;
  for (i = 0; i < n; i++)
    if (strcmp(w->recent[i], id) == 0) return 1;
  return w->nsent > KH__WPROC_RECENT ? -1 : 0;
}

/* The phase checks (protocol.h's diagram) for a frame that has the right shape. Returns NULL
 * when it may come now, else what is wrong. May rewrite the frame's "id" (see "ev"). */
static const char *check_phase(kh__wproc_t *w, kh__pmsg_t kind, json_t *msg) {
  const char *id = json_string_value(json_object_get(msg, "id"));
  int type, given;
  switch (kind) {
    case KH__P_HELLO:
      if (w->phase != KH__WP_SPAWNED) return "a second \"hello\"";
      w->phase = KH__WP_HELLO;
      return NULL;
    case KH__P_READY:
      if (w->phase != KH__WP_OPENING) return "\"ready\" without \"open\"";
      w->phase = KH__WP_READY;
      return NULL;
    case KH__P_EV:
      /* Output of fds 1 and 2 may come while the kernel opens, under no request. */
      if (w->phase < KH__WP_OPENING) return "an event before \"open\"";
      type = kh_event_type_from_name(json_string_value(json_object_get(msg, "type")));
      if (type <= 0) return "an event of an unknown type";
      if (type == KH_EVENT_STATUS) return "a status event (only the host reports status)";
      if (id[0] == '\0' || strcmp(id, w->inflight) == 0) return NULL;
      given = was_given(w, id);
      if (given == 0) return "an event for a request this worker was never given";
      /* An id older than memory may be a real one or a forgery: it is delivered as output of
       * no request, so it can never be attributed to a request it does not belong to. */
      if (given < 0) json_object_set_new(msg, "id", json_string(""));
      return NULL;
    case KH__P_REPLY:
      if (w->phase != KH__WP_READY || strcmp(id, w->inflight) != 0)
        return "a reply for a request that is not running";
      w->inflight[0] = '\0';
      return NULL;
    case KH__P_ANSWER: {
      int slot = id[0] ? asked_slot(w, id) : -1;
      if (w->phase != KH__WP_READY || slot < 0)
        return "an answer for an editor request that is not in flight";
      w->asked[slot][0] = '\0';
      return NULL;
    }
    case KH__P_CALL: {
      /* Ids only grow: a repeated one (or one made up to match a call in flight) is refused
       * here, so the host can never answer one call twice or one call for another. */
      json_int_t cid = json_integer_value(json_object_get(msg, "id"));
      if (w->phase != KH__WP_READY) return "a host call before \"ready\"";
      if (cid < 1 || cid <= w->last_call) return "a host call whose id is not new";
      w->last_call = cid;
      return NULL;
    }
    case KH__P_FATAL:
      return NULL;
    default:
      return "a message that travels the other way";
  }
}

/* The JSON text of a frame's "data" object. The decoder hands payloads over as the validated
 * text they arrived as (frame.c): it is NUL-terminated in place, over the frame's closing
 * brace. A frame of another shape (which the worker never writes) is encoded again (owned:
 * *owned is set). */
static char *data_text(kh__wproc_t *w, json_t *msg, size_t *len, int *owned) {
  char *p = kh__frame_dec_data(&w->dec, len), *s;
  *owned = 0;
  if (p != NULL) {
    p[*len] = '\0';
    return p;
  }
  s = json_dumps(json_object_get(msg, "data"), JSON_COMPACT);
  *len = s ? strlen(s) : 0;
  *owned = s != NULL;
  return s;
}

/* The frame's binary attachments, copied into w->bufs once their paths are checked: each must
 * lead to a null in the frame's "data" (what the runtime leaves where the bytes belong), or in a
 * host call's "args", so that no consumer is handed a path into nothing. Returns 0, or -1 after
 * failing w. */
static int take_bufs(kh__wproc_t *w, json_t *msg, const char *data, size_t len) {
  kh_buffer_t views[KH__FRAME_BUFS_MAX];
  json_t *paths = json_object_get(msg, "bufs"), *doc;
  json_t *args = json_object_get(msg, "args");
  size_t i, n = kh__frame_dec_nbufs(&w->dec);
  char why[KH__ERRMSG_MAX];
  int rc;
  if (data == NULL && args == NULL) {
    kh__wproc_fail(w, "binary frames after a message that has no \"data\"");
    return -1;
  }
  for (i = 0; i < n; i++) {
    views[i].path = json_string_value(json_array_get(paths, i));
    views[i].data = kh__frame_dec_buf(&w->dec, i, &views[i].len);
  }
  doc = data != NULL ? json_loadb(data, len, 0, NULL) : json_incref(args);
  rc = doc == NULL ? KH_EINVAL : kh__bufs_check(doc, views, n, why);
  json_decref(doc);
  if (rc != 0) {
    kh__wproc_fail(w, "bad binary values: %s", doc == NULL ? "unreadable data" : why);
    return -1;
  }
  for (i = 0; i < n; i++) {
    if (kh__bufs_add_copy(&w->bufs, views[i].path, views[i].data, views[i].len) != 0) {
      kh__bufs_free(&w->bufs);
      kh__wproc_fail(w, "out of memory taking binary values");
      return -1;
    }
  }
  return 0;
}

/* One decoded frame: checked, then handed to the holder. */
static void proc_frame(kh__wproc_t *w, json_t *msg) {
  char why[200];
  int split = kh__frame_dec_data(&w->dec, &(size_t){0}) != NULL, owned = 0;
  kh__pmsg_t kind = kh__proto_check(msg, KH__P_TO_HOST, split, why, sizeof(why));
  const char *bad;
  char *data = NULL;
  size_t len = 0;
  if (kind == KH__P_NONE) {
    kh__wproc_fail(w, "%s", why);
    return;
  }
  if ((bad = check_phase(w, kind, msg)) != NULL) {
    kh__wproc_fail(w, "%s", bad);
    return;
  }
  if (kind == KH__P_FATAL) {
    /* The worker is about to exit and says why. It is killed all the same, so that a cell
     * that merely wrote such a frame cannot leave its kernel deaf to its own replies. */
    snprintf(w->why, sizeof(w->why), "%s", json_string_value(json_object_get(msg, "message")));
    w->failed = 1;
    kill_group(w);
    if (!uv_is_closing((uv_handle_t *)&w->from)) uv_read_stop((uv_stream_t *)&w->from);
    return;
  }
  if (kind == KH__P_EV || kind == KH__P_REPLY || kind == KH__P_ANSWER) {
    data = data_text(w, msg, &len, &owned);
    if (data == NULL) {
      kh__wproc_fail(w, "out of memory re-encoding a payload");
      return;
    }
  }
  if (kh__frame_dec_nbufs(&w->dec) > 0 && take_bufs(w, msg, data, len) != 0) {
    if (owned) free(data);
    return;
  }
  if (w->cbs != NULL) w->cbs->frame(w->holder, w, kind, msg, data, len);
  kh__bufs_free(&w->bufs);
  if (owned) free(data);
}

/* Decodes n bytes of w->rbuf and handles the frames, stopping once w is killed or failed (a
 * frame's callbacks may destroy the kernel; a bad frame ends the process). */
static void proc_feed(kh__wproc_t *w, size_t n) {
  json_t *msg;
  int rc = 0;
  if (kh__frame_dec_feed(&w->dec, w->rbuf, n) != 0) {
    kh__wproc_fail(w, "%s", w->dec.err);
    return;
  }
  while (!w->killed && !w->failed && (rc = kh__frame_dec_next(&w->dec, &msg)) == 1) {
    proc_frame(w, msg);
    json_decref(msg);
  }
  if (!w->killed && !w->failed && rc < 0) kh__wproc_fail(w, "%s", w->dec.err);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  kh__wproc_t *w = h->data;
  (void)hint;
  *buf = uv_buf_init(w->rbuf, sizeof(w->rbuf));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  kh__wproc_t *w = s->data;
  (void)buf;
  if (n > 0) {
    proc_feed(w, (size_t)n);
    return;
  }
  if (n == 0) return;
  /* The worker closed its end: it is exiting (the exit callback reports how), or user code
   * closed the protocol fd, which leaves the worker unusable. */
  uv_read_stop(s);
  if (n == UV_EOF && kh__frame_dec_finish(&w->dec) != 0) {
    fail_at_eof(w, "%s", w->dec.err);
  } else if (!w->exited) {
    if (!w->why[0]) snprintf(w->why, sizeof(w->why), "the worker closed its protocol pipe");
    kill_group(w);
  }
}

/* --- spawning ----------------------------------------------------------------------------- */

/* Host environment plus the kernel's `env` (validated strings: options.c), for a process
 * started for one kernel. Entries from environ are borrowed; the kernel's own are owned. */
static char **build_env(const json_t *env) {
  size_t n = 0, i = 0, extra = json_object_size(env);
  char **out, **e;
  const char *key;
  json_t *v;
  for (e = environ; *e; e++) n++;
  out = calloc(n + extra + 1, sizeof(*out));
  if (out == NULL) return NULL;
  for (e = environ; *e; e++) {
    const char *eq = strchr(*e, '=');
    if (eq && json_object_getn(env, *e, (size_t)(eq - *e)) != NULL) continue; /* overridden */
    out[i++] = *e;
  }
  json_object_foreach((json_t *)env, key, v) {
    size_t len = strlen(key) + json_string_length(v) + 2;
    char *s = malloc(len);
    if (s == NULL) break;
    snprintf(s, len, "%s=%s", key, json_string_value(v));
    out[i++] = s;
  }
  out[i] = NULL;
  return out;
}

static void free_env(char **env) {
  size_t i;
  char **e;
  if (env == NULL) return;
  for (i = 0; env[i]; i++) {
    int borrowed = 0;
    for (e = environ; *e && !borrowed; e++) borrowed = env[i] == *e;
    if (!borrowed) free(env[i]);
  }
  free(env);
}

kh__wproc_t *kh__wproc_new(const kh__wproc_cbs_t *cbs, void *holder) {
  kh__wproc_t *w = calloc(1, sizeof(*w));
  if (w == NULL) return NULL;
  kh__frame_dec_init(&w->dec, 0);
  kh__refs_init(&w->refs, wproc_release);
  w->pidfd = -1;
  w->cbs = cbs;
  w->holder = holder;
  return w;
}

void kh__wproc_free_unstarted(kh__wproc_t *w) {
  wproc_release(&w->refs); /* as if its last handle had closed: the holder hears "closed" */
}

/* The pipes are open and the process is watched: read its frames, and never let it keep the
 * loop alive by itself (the manager's requests do). */
static void wproc_started(kh__wproc_t *w) {
  uv_unref(proc_handle(w));
  uv_unref((uv_handle_t *)&w->to);
  uv_unref((uv_handle_t *)&w->from);
  uv_read_start((uv_stream_t *)&w->from, on_alloc, on_read);
  /* Killed while the fork server was still making it: it goes now. */
  if (w->killed) {
    w->killed = 0;
    kh__wproc_kill(w);
  }
}

static void init_pipes(kh__wproc_t *w, uv_loop_t *loop) {
  uv_pipe_init(loop, &w->to, 0);
  uv_pipe_init(loop, &w->from, 0);
  w->to.data = w->from.data = w->proc.data = w->reap.data = w;
  kh__refs_handle(&w->refs, &w->to);
  kh__refs_handle(&w->refs, &w->from);
}

int kh__wproc_start(kh__wproc_t *w, uv_loop_t *loop, const char *path, const json_t *env,
                    char *errmsg) {
  uv_process_options_t o;
  uv_stdio_container_t stdio[5];
  char ppid[32];
  char *args[4];
  char **envp = NULL;
  int rc;
  if (json_object_size(env) > 0 && (envp = build_env(env)) == NULL) return KH_ENOMEM;
  init_pipes(w, loop);
  kh__refs_handle(&w->refs, &w->proc);
  /* The worker checks that this is still its parent: a host that died before the worker's
   * prctl(PR_SET_PDEATHSIG) ran would leave it orphaned otherwise. */
  snprintf(ppid, sizeof(ppid), "%ld", (long)getpid());
  args[0] = (char *)path;
  args[1] = "--kernelhost-worker";
  args[2] = ppid;
  args[3] = NULL;
  memset(&o, 0, sizeof(o));
  memset(stdio, 0, sizeof(stdio));
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_IGNORE;
  stdio[2].flags = UV_INHERIT_FD; /* the worker's own fatal messages reach the host's stderr */
  stdio[2].data.fd = 2;
  stdio[3].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
  stdio[3].data.stream = (uv_stream_t *)&w->to;
  stdio[4].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[4].data.stream = (uv_stream_t *)&w->from;
  o.file = path;
  o.args = args;
  o.env = envp;
  o.stdio = stdio;
  o.stdio_count = 5;
  o.exit_cb = on_proc_exit;
  /* Its own session and process group: the host's terminal Ctrl-C is the host's business,
   * and killing the group takes a cell's subprocesses along. */
  o.flags = UV_PROCESS_DETACHED;
  rc = uv_spawn(loop, &w->proc, &o);
  free_env(envp);
  if (rc != 0) {
    kh__set_err(errmsg, "cannot start the worker \"%s\": %s", path, uv_strerror(rc));
    /* The record goes with its handles: the holder hears "closed" as for any process. */
    w->killed = 1;
    w->exited = 1;
    kh__refs_close(&w->refs, (uv_handle_t *)&w->to);
    kh__refs_close(&w->refs, (uv_handle_t *)&w->from);
    kh__refs_close(&w->refs, (uv_handle_t *)&w->proc);
    return KH_EWORKER;
  }
  w->pid = w->proc.pid;
  wproc_started(w);
  return 0;
}

int kh__wproc_spawn(uv_loop_t *loop, const char *path, const json_t *env,
                    const kh__wproc_cbs_t *cbs, void *holder, kh__wproc_t **out, char *errmsg) {
  kh__wproc_t *w = kh__wproc_new(NULL, NULL);
  int rc;
  if (w == NULL) return KH_ENOMEM;
  if ((rc = kh__wproc_start(w, loop, path, env, errmsg)) != 0) {
    if (rc == KH_ENOMEM) kh__wproc_free_unstarted(w);
    return rc;
  }
  w->cbs = cbs;
  w->holder = holder;
  *out = w;
  return 0;
}

int kh__wproc_adopt(kh__wproc_t *w, uv_loop_t *loop, uv_pipe_t *ipc, int pid, char *errmsg) {
  int rc, fd;
  w->adopted = 1;
  w->pid = pid;
  init_pipes(w, loop);
  /* The host is its parent (CLONE_PARENT) and has not reaped it: the pid cannot be reused
   * meanwhile, so its pidfd is that process's. */
  fd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (fd < 0 || uv_poll_init(loop, &w->reap, fd) != 0) {
    kh__set_err(errmsg, "cannot watch the forked worker %d: %s", pid, strerror(errno));
    if (fd >= 0) close(fd);
    kill(pid, SIGKILL);
    w->exited = w->killed = 1;
    close_pipes(w);
    return KH_EWORKER;
  }
  w->pidfd = fd;
  kh__refs_handle(&w->refs, &w->reap);
  uv_poll_start(&w->reap, UV_READABLE, on_reap);
  rc = uv_accept((uv_stream_t *)ipc, (uv_stream_t *)&w->to);
  if (rc == 0) rc = uv_accept((uv_stream_t *)ipc, (uv_stream_t *)&w->from);
  if (rc != 0) {
    /* Reported as its death, once it is reaped. */
    snprintf(w->why, sizeof(w->why), "the fork server's pipes did not arrive: %s",
             uv_strerror(rc));
    w->failed = 1;
    kill(pid, SIGKILL);
  }
  wproc_started(w);
  return 0;
}

/* --- death reports ------------------------------------------------------------------------ */

void kh__wproc_describe_exit(const kh__wproc_t *w, char *json, size_t n, char *text, size_t tn) {
  char signame[32] = "";
  json_t *o;
  char *s;
  if (w->term_signal) {
    /* Names, not numbers, travel: SIGSEGV reads the same on every platform. */
    static const struct {
      int n;
      const char *name;
    } names[] = {{SIGSEGV, "SIGSEGV"}, {SIGKILL, "SIGKILL"}, {SIGABRT, "SIGABRT"},
                 {SIGBUS, "SIGBUS"},   {SIGFPE, "SIGFPE"},   {SIGILL, "SIGILL"},
                 {SIGTERM, "SIGTERM"}, {SIGINT, "SIGINT"},   {SIGPIPE, "SIGPIPE"},
                 {SIGHUP, "SIGHUP"},   {SIGQUIT, "SIGQUIT"}, {SIGXCPU, "SIGXCPU"}};
    size_t i;
    snprintf(signame, sizeof(signame), "SIG%d", w->term_signal);
    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
      if (names[i].n == w->term_signal) snprintf(signame, sizeof(signame), "%s", names[i].name);
    /* A SIGKILL the host sent for a protocol error is not the OOM killer's. */
    snprintf(
        text, tn, "the worker process was killed by %s%s%s%s", signame,
        w->term_signal == SIGKILL && !w->failed ? " (out of memory, or killed from outside)" : "",
        w->why[0] ? ": " : "", w->why);
  } else {
    snprintf(text, tn, "the worker process exited with code %lld%s%s", (long long)w->exit_status,
             w->why[0] ? ": " : "", w->why);
  }
  o = w->term_signal ? json_pack("{s:n, s:s, s:i, s:i, s:s}", "exit_code", "signal", signame,
                                 "signal_number", w->term_signal, "pid", w->pid, "message", text)
                     : json_pack("{s:I, s:n, s:i, s:s}", "exit_code", (json_int_t)w->exit_status,
                                 "signal", "pid", w->pid, "message", text);
  if (o != NULL && w->protocol_error)
    json_object_set_new(o, "cause", json_string("protocol_error"));
  s = o ? json_dumps(o, JSON_COMPACT) : NULL;
  /* kernel.c quotes the reason inside a status event of bounded size: keep it short. */
  if (s != NULL && strlen(s) < 240)
    snprintf(json, n, "%s", s);
  else
    snprintf(json, n, "{\"exit_code\":null,\"signal\":%s%s%s%s}", signame[0] ? "\"" : "",
             signame[0] ? signame : "null", signame[0] ? "\"" : "",
             w->protocol_error ? ",\"cause\":\"protocol_error\"" : "");
  free(s);
  json_decref(o);
}

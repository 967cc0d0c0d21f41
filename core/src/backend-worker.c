/* backend-worker.c: worker-mode kernels: one kernelhost-worker process per kernel, spawned and
 * watched on the host's loop, spoken to in frames (frame.c) over two pipes; interrupt by
 * SIGINT with kill-and-restart escalation, death reports, autoRestart, the warm pool, and the
 * sandbox plan (sandbox.c) each process receives with its "open" message. */
#include <dlfcn.h>
#include <errno.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

extern char **environ;

#define AUTO_RESTART_LIMIT 5         /* restarts ... */
#define AUTO_RESTART_WINDOW_MS 60000 /* ... per this window, as jupyter_client's restarter */
#define POOL_MAX_FAILURES 3          /* pool workers dying before "hello": stop refilling */

typedef struct wproc_s wproc_t;
typedef struct pool_s pool_t;
typedef struct worker_s worker_t;

/* One worker process and its two pipes. Freed when all three handles have closed. */
struct wproc_s {
  wproc_t *next; /* in pool->procs */
  uv_process_t proc;
  uv_pipe_t to;   /* host -> worker (its fd 3) */
  uv_pipe_t from; /* worker -> host (its fd 4) */
  int handles;
  int pid;
  int hello; /* Python is up and the runtime imported */
  int exited;
  int killed; /* we killed it: its exit is no news */
  int64_t exit_status;
  int term_signal;
  char why[300]; /* a "fatal" frame or a protocol error, for the death report */
  kh__frame_dec_t dec;
  pool_t *pool;    /* owner while pooled */
  worker_t *owner; /* owner once claimed */
  json_t *plan;    /* owned: the sandbox plan it was opened with (cleanup after exit), or NULL */
  char rbuf[65536];
};

struct pool_s {
  uv_loop_t *loop;
  kh_manager_t *m; /* NULL once the manager closed: the pool then drains and frees itself */
  wproc_t *procs;
  int count;
  int failures;
  int live; /* processes not yet closed */
};

typedef enum { PH_START = 1, PH_RESET, PH_AUTO, PH_READY } phase_t;

/* A kernel's backend state. */
struct worker_s {
  kh_kernel_t *k;
  wproc_t *w; /* the current process, or NULL */
  phase_t phase;
  int pooled;
  int stopping;
  int live;         /* processes not yet closed, plus the grace timer while open */
  uv_timer_t grace; /* an interrupt that does not land within grace: kill and restart */
  char grace_id[KH__EXEC_ID_MAX];
  uint64_t restarts[AUTO_RESTART_LIMIT];
  int nrestarts;
  kh__sandbox_t *sandbox; /* owned: what every process of this kernel enforces, or NULL */
  json_t *applied;        /* owned: the worker's report ({layers, missing}) of the last open */
  /* The host's own bound on a cell's output (limits.maxOutputBytes): the worker cuts output
   * itself; this holds even when it does not (user code can reach the protocol pipe). */
  uint64_t out_cap;   /* bytes of output events per cell, 0 for no bound */
  uint64_t out_bytes; /* delivered so far for out_id */
  int out_cut;        /* out_id's output was cut */
  char out_id[KH__EXEC_ID_MAX];
};

static void proc_start_read(wproc_t *w);
static int spawn(worker_t *wk, pool_t *pool, const char *path, json_t *env, wproc_t **out,
                 char *errmsg);
static void worker_frame(worker_t *wk, wproc_t *w, json_t *msg);
static void worker_proc_exited(worker_t *wk, wproc_t *w);
static void pool_fill(pool_t *p);
static void worker_release(worker_t *wk);
static void proc_protocol_error(wproc_t *w, const char *what);
static void proc_feed(wproc_t *w, size_t n);

/* --- the worker executable ---------------------------------------------------------------- */

static int resolve_path(kh_manager_t *m, char *out, size_t n, char *errmsg) {
  const char *p = m->opts.worker_path;
  const char *how = "manager option workerPath";
  if (p == NULL || !*p) {
    p = getenv("KH_WORKER_PATH");
    how = "environment variable KH_WORKER_PATH";
  }
  if (p != NULL && *p) {
    snprintf(out, n, "%s", p);
  } else {
    /* Next to the library, or to the program or addon it is linked into. */
    Dl_info info;
    char dir[4096];
    how = "the default location next to libkernelhost";
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

/* --- processes ---------------------------------------------------------------------------- */

static void proc_free_if_done(wproc_t *w) {
  if (--w->handles > 0) return;
  kh__frame_dec_free(&w->dec);
  json_decref(w->plan);
  if (w->pool != NULL) {
    pool_t *p = w->pool;
    free(w);
    if (--p->live == 0 && p->m == NULL) free(p);
  } else if (w->owner != NULL) {
    worker_t *wk = w->owner;
    free(w);
    if (--wk->live == 0) worker_release(wk);
  } else {
    free(w);
  }
}

static void on_handle_closed(uv_handle_t *h) {
  proc_free_if_done(h->data);
}

/* Closes the pipes now, and the process handle once the process has been reaped (closing it
 * earlier would leave a zombie). */
static void proc_close_pipes(wproc_t *w) {
  if (!uv_is_closing((uv_handle_t *)&w->to)) uv_close((uv_handle_t *)&w->to, on_handle_closed);
  if (!uv_is_closing((uv_handle_t *)&w->from)) uv_close((uv_handle_t *)&w->from, on_handle_closed);
}

static void proc_kill(wproc_t *w) {
  w->killed = 1;
  proc_close_pipes(w);
  if (!w->exited) {
    /* The worker leads its own process group: take whatever its cells started with it. */
    if (w->pid > 0) kill(-w->pid, SIGKILL);
    uv_process_kill(&w->proc, SIGKILL);
    uv_ref((uv_handle_t *)&w->proc); /* keep the loop until it is reaped */
  }
}

static void on_proc_exit(uv_process_t *p, int64_t status, int sig) {
  wproc_t *w = p->data;
  w->exited = 1;
  w->exit_status = status;
  w->term_signal = sig;
  /* Reaped: its pids cgroup (root with limits.maxProcesses) can go. */
  if (w->plan != NULL) kh__sandbox_cleanup(w->plan, w->pid);
  /* The exit can be seen before the last frames are (a "fatal" message, the events of a
   * cell that called os._exit): read what is left in the pipe first. */
  if (!w->killed && !uv_is_closing((uv_handle_t *)&w->from)) {
    int fd;
    ssize_t n;
    if (uv_fileno((uv_handle_t *)&w->from, &fd) == 0) {
      while (!w->killed && (n = read(fd, w->rbuf, sizeof(w->rbuf))) > 0) proc_feed(w, (size_t)n);
    }
  }
  proc_close_pipes(w);
  uv_close((uv_handle_t *)&w->proc, on_handle_closed);
  if (w->pool != NULL) {
    pool_t *p = w->pool;
    wproc_t **pp;
    for (pp = &p->procs; *pp; pp = &(*pp)->next) {
      if (*pp == w) {
        *pp = w->next;
        p->count--;
        if (!w->hello) p->failures++;
        break;
      }
    }
    if (p->m != NULL) pool_fill(p);
  } else if (w->owner != NULL) {
    worker_proc_exited(w->owner, w);
  }
}

typedef struct {
  uv_write_t req;
  char *buf;
} wreq_t;

static void on_written(uv_write_t *req, int status) {
  wreq_t *r = (wreq_t *)req;
  (void)status; /* a failed write shows up as the worker's death */
  free(r->buf);
  free(r);
}

static int proc_send(wproc_t *w, json_t *msg) {
  wreq_t *r;
  uv_buf_t b;
  size_t n;
  int rc;
  if (w->killed || w->exited || uv_is_closing((uv_handle_t *)&w->to)) return KH_EKERNELDEAD;
  r = calloc(1, sizeof(*r));
  if (r == NULL) return KH_ENOMEM;
  r->buf = kh__frame_encode(msg, &n);
  if (r->buf == NULL) {
    free(r);
    return KH_ETOOBIG;
  }
  b = uv_buf_init(r->buf, (unsigned)n);
  rc = uv_write(&r->req, (uv_stream_t *)&w->to, &b, 1, on_written);
  if (rc != 0) {
    free(r->buf);
    free(r);
  }
  return rc;
}

/* The worker broke the protocol: it cannot be trusted with another frame. */
static void proc_protocol_error(wproc_t *w, const char *what) {
  snprintf(w->why, sizeof(w->why), "protocol error: %s", what);
  if (!w->exited) {
    if (w->pid > 0) kill(-w->pid, SIGKILL);
    uv_process_kill(&w->proc, SIGKILL);
  }
  if (!uv_is_closing((uv_handle_t *)&w->from)) uv_read_stop((uv_stream_t *)&w->from);
}

/* Decodes n bytes of w->rbuf and dispatches the frames, stopping once w is killed (a frame's
 * callbacks may destroy the kernel). */
static void proc_feed(wproc_t *w, size_t n) {
  json_t *msg;
  int rc = 0;
  if (kh__frame_dec_feed(&w->dec, w->rbuf, n) != 0) {
    proc_protocol_error(w, w->dec.err);
    return;
  }
  while (!w->killed && (rc = kh__frame_dec_next(&w->dec, &msg)) == 1) {
    const char *t = json_string_value(json_object_get(msg, "t"));
    if (strcmp(t, "hello") == 0) {
      w->hello = 1;
      if (w->pool) w->pool->failures = 0;
    }
    if (strcmp(t, "fatal") == 0) {
      const char *why = json_string_value(json_object_get(msg, "message"));
      snprintf(w->why, sizeof(w->why), "%s", why ? why : "fatal error");
    } else if (w->owner != NULL) {
      worker_frame(w->owner, w, msg);
    } else if (strcmp(t, "hello") != 0) {
      proc_protocol_error(w, "unexpected frame from a pooled worker");
    }
    json_decref(msg);
  }
  if (!w->killed && rc < 0) proc_protocol_error(w, w->dec.err);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  wproc_t *w = h->data;
  (void)hint;
  *buf = uv_buf_init(w->rbuf, sizeof(w->rbuf));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  wproc_t *w = s->data;
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
    proc_protocol_error(w, w->dec.err);
  } else if (!w->exited) {
    if (!w->why[0]) snprintf(w->why, sizeof(w->why), "the worker closed its protocol pipe");
    if (w->pid > 0) kill(-w->pid, SIGKILL);
    uv_process_kill(&w->proc, SIGKILL);
  }
}

static void proc_start_read(wproc_t *w) {
  uv_read_start((uv_stream_t *)&w->from, on_alloc, on_read);
}

/* Host environment plus the kernel's `env`, for a process started for one kernel. */
static char **build_env(json_t *env) {
  size_t n = 0, i = 0, extra = json_is_object(env) ? json_object_size(env) : 0;
  char **out, **e;
  const char *key;
  json_t *v;
  for (e = environ; *e; e++) n++;
  out = calloc(n + extra + 1, sizeof(*out));
  if (out == NULL) return NULL;
  for (e = environ; *e; e++) {
    const char *eq = strchr(*e, '=');
    int overridden = 0;
    if (eq && extra) {
      json_object_foreach(env, key, v) {
        if (strlen(key) == (size_t)(eq - *e) && strncmp(key, *e, (size_t)(eq - *e)) == 0)
          overridden = 1;
      }
    }
    if (!overridden) out[i++] = *e; /* borrowed from environ */
  }
  if (extra) {
    json_object_foreach(env, key, v) {
      size_t len = strlen(key) + json_string_length(v) + 2;
      char *s = malloc(len);
      if (s == NULL) break;
      snprintf(s, len, "%s=%s", key, json_string_value(v));
      out[i++] = s;
    }
  }
  out[i] = NULL;
  return out;
}

static void free_env(char **env, json_t *json_env) {
  size_t n = 0, i;
  char **e;
  if (env == NULL) return;
  for (e = environ; *e; e++) n++;
  /* Owned entries are the ones not in environ: the kernel's own variables. */
  for (i = 0; env[i]; i++) {
    size_t j;
    int borrowed = 0;
    for (j = 0; j < n && !borrowed; j++) borrowed = env[i] == environ[j];
    if (!borrowed) free(env[i]);
  }
  (void)json_env;
  free(env);
}

/* Spawns a worker for kernel wk or for the pool. On failure fills errmsg. */
static int spawn(worker_t *wk, pool_t *pool, const char *path, json_t *env, wproc_t **out,
                 char *errmsg) {
  uv_loop_t *loop = wk ? wk->k->m->loop : pool->loop;
  wproc_t *w = calloc(1, sizeof(*w));
  uv_process_options_t o;
  uv_stdio_container_t stdio[5];
  char ppid[32];
  char *args[4];
  char **envp = NULL;
  int rc;
  if (w == NULL) return KH_ENOMEM;
  if (env != NULL && (envp = build_env(env)) == NULL) {
    free(w);
    return KH_ENOMEM;
  }
  kh__frame_dec_init(&w->dec, 0);
  w->pool = pool;
  w->owner = wk;
  uv_pipe_init(loop, &w->to, 0);
  uv_pipe_init(loop, &w->from, 0);
  w->to.data = w->from.data = w->proc.data = w;
  w->handles = 3;
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
  free_env(envp, env);
  if (rc != 0) {
    kh__set_err(errmsg, "cannot start the worker \"%s\": %s", path, uv_strerror(rc));
    w->owner = NULL;
    w->pool = NULL;
    uv_close((uv_handle_t *)&w->to, on_handle_closed);
    uv_close((uv_handle_t *)&w->from, on_handle_closed);
    uv_close((uv_handle_t *)&w->proc, on_handle_closed);
    return KH_EWORKER;
  }
  w->pid = w->proc.pid;
  /* Workers never keep the host alive by themselves (the manager's requests do). */
  uv_unref((uv_handle_t *)&w->proc);
  uv_unref((uv_handle_t *)&w->to);
  uv_unref((uv_handle_t *)&w->from);
  proc_start_read(w);
  if (wk) wk->live++;
  if (pool) pool->live++;
  *out = w;
  return 0;
}

/* --- the warm pool ------------------------------------------------------------------------ */

static void pool_fill(pool_t *p) {
  char path[4096], err[KH__ERRMSG_MAX];
  while (p->m != NULL && p->count < p->m->opts.pool_size && p->failures < POOL_MAX_FAILURES) {
    wproc_t *w;
    if (resolve_path(p->m, path, sizeof(path), err) != 0 || spawn(NULL, p, path, NULL, &w, err))
      return; /* kernels will get the error at creation */
    w->next = p->procs;
    p->procs = w;
    p->count++;
  }
}

static void worker_manager_open(kh_manager_t *m) {
  pool_t *p;
  if (m->opts.pool_size <= 0) return;
  p = calloc(1, sizeof(*p));
  if (p == NULL) return; /* no pool: kernels start cold */
  p->loop = m->loop;
  p->m = m;
  m->backend_state[KH__BACKEND_WORKER] = p;
  pool_fill(p);
}

static void worker_manager_close(kh_manager_t *m) {
  pool_t *p = m->backend_state[KH__BACKEND_WORKER];
  wproc_t *w;
  if (p == NULL) return;
  m->backend_state[KH__BACKEND_WORKER] = NULL;
  p->m = NULL;
  while ((w = p->procs) != NULL) {
    p->procs = w->next;
    p->count--;
    proc_kill(w);
  }
  if (p->live == 0) free(p);
}

/* Options that only a process's start can apply: variables read by the dynamic loader and the
 * C library before main() (LD_PRELOAD, LD_LIBRARY_PATH, MALLOC_*, GLIBC_TUNABLES). */
static int needs_fresh_process(json_t *env) {
  json_t *v;
  const char *key;
  json_object_foreach(env, key, v) {
    if (strncmp(key, "LD_", 3) == 0 || strncmp(key, "MALLOC_", 7) == 0 ||
        strcmp(key, "GLIBC_TUNABLES") == 0)
      return 1;
  }
  return 0;
}

static wproc_t *pool_claim(kh_manager_t *m, worker_t *wk) {
  pool_t *p = m->backend_state[KH__BACKEND_WORKER];
  wproc_t *w, **pp, **best = NULL;
  if (p == NULL || p->procs == NULL || needs_fresh_process(wk->k->opts.env)) return NULL;
  /* Prefer a warm worker; one still starting is still ahead of a cold spawn. */
  for (pp = &p->procs; *pp; pp = &(*pp)->next)
    if (best == NULL || (*pp)->hello) best = pp;
  w = *best;
  *best = w->next;
  w->next = NULL;
  p->count--;
  p->live--;
  w->pool = NULL;
  w->owner = wk;
  wk->live++;
  pool_fill(p);
  return w;
}

/* --- a kernel's process ------------------------------------------------------------------- */

static int send_open(worker_t *wk) {
  kh_kernel_t *k = wk->k;
  json_t *msg = json_pack("{s:s, s:s}", "t", "open", "id", k->id);
  int rc;
  if (msg == NULL) return KH_ENOMEM;
  if (k->opts.env) json_object_set(msg, "env", k->opts.env);
  if (k->opts.cwd) json_object_set_new(msg, "cwd", json_string(k->opts.cwd));
  if (wk->sandbox != NULL) {
    /* The worker applies it before it starts a thread or runs user code (core/worker/main.c).
     * A pooled worker is still single-threaded, blocked reading this very message. */
    json_t *plan = (json_t *)kh__sandbox_plan(wk->sandbox);
    json_object_set(msg, "sandbox", plan);
    json_decref(wk->w->plan);
    wk->w->plan = json_incref(plan);
  }
  rc = proc_send(wk->w, msg);
  json_decref(msg);
  return rc;
}

/* Reports a failure to get a process up, in the phase's own way (always asynchronously). */
static void phase_failed(worker_t *wk, int status, const char *errmsg) {
  kh_kernel_t *k = wk->k;
  phase_t ph = wk->phase;
  wk->phase = 0;
  if (ph == PH_START)
    kh__kernel_on_ready(k, status, errmsg);
  else if (ph == PH_RESET || ph == PH_AUTO)
    kh__kernel_on_reset(k, status, errmsg);
}

/* Gets a process for the kernel: from the pool, or spawned. Errors are posted, so that they
 * reach the kernel after the call that asked (create, restart) has returned. */
static void get_process(worker_t *wk, phase_t phase) {
  kh_kernel_t *k = wk->k;
  char path[4096], err[KH__ERRMSG_MAX] = "";
  int rc;
  wk->phase = phase;
  wk->w = pool_claim(k->m, wk);
  wk->pooled = wk->w != NULL;
  if (wk->w != NULL) {
    if (wk->w->hello && (rc = send_open(wk)) != 0) proc_protocol_error(wk->w, kh_strerror(rc));
    return;
  }
  rc = resolve_path(k->m, path, sizeof(path), err);
  if (rc == 0) rc = spawn(wk, NULL, path, k->opts.env, &wk->w, err);
  if (rc != 0) {
    wk->w = NULL;
    kh__sink_post(k->sink, phase == PH_START ? KH__MSG_READY : KH__MSG_RESET, 0, rc, NULL, err,
                  strlen(err));
  }
}

static void describe_exit(wproc_t *w, char *json, size_t n, char *text, size_t tn) {
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
    snprintf(text, tn, "the worker process was killed by %s%s%s%s", signame,
             w->term_signal == SIGKILL ? " (out of memory, or killed from outside)" : "",
             w->why[0] ? ": " : "", w->why);
  } else {
    snprintf(text, tn, "the worker process exited with code %lld%s%s", (long long)w->exit_status,
             w->why[0] ? ": " : "", w->why);
  }
  o = w->term_signal ? json_pack("{s:n, s:s, s:i, s:i, s:s}", "exit_code", "signal", signame,
                                 "signal_number", w->term_signal, "pid", w->pid, "message", text)
                     : json_pack("{s:I, s:n, s:i, s:s}", "exit_code", (json_int_t)w->exit_status,
                                 "signal", "pid", w->pid, "message", text);
  s = o ? json_dumps(o, JSON_COMPACT) : NULL;
  /* kernel.c quotes the reason inside a status event of bounded size: keep it short. */
  if (s != NULL && strlen(s) < 240)
    snprintf(json, n, "%s", s);
  else
    snprintf(json, n, "{\"exit_code\":null,\"signal\":%s%s%s}", signame[0] ? "\"" : "",
             signame[0] ? signame : "null", signame[0] ? "\"" : "");
  free(s);
  json_decref(o);
}

static int auto_restart_allowed(worker_t *wk) {
  uint64_t now = uv_now(wk->k->m->loop);
  int i, recent = 0;
  if (!wk->k->opts.auto_restart) return 0;
  for (i = 0; i < wk->nrestarts; i++)
    if (now - wk->restarts[i] < AUTO_RESTART_WINDOW_MS) recent++;
  if (recent >= AUTO_RESTART_LIMIT) return 0;
  if (wk->nrestarts == AUTO_RESTART_LIMIT) {
    memmove(wk->restarts, wk->restarts + 1, sizeof(wk->restarts[0]) * (AUTO_RESTART_LIMIT - 1));
    wk->nrestarts--;
  }
  wk->restarts[wk->nrestarts++] = now;
  return 1;
}

/* Replaces the kernel's process by a fresh one (the old one is killed). */
static void replace_process(worker_t *wk, phase_t phase) {
  uv_timer_stop(&wk->grace);
  if (wk->w != NULL) {
    proc_kill(wk->w);
    wk->w = NULL;
  }
  get_process(wk, phase);
}

static void worker_proc_exited(worker_t *wk, wproc_t *w) {
  kh_kernel_t *k = wk->k;
  char reason[300], text[KH__ERRMSG_MAX];
  if (wk->stopping || w != wk->w || w->killed) return; /* expected */
  wk->w = NULL;
  uv_timer_stop(&wk->grace);
  describe_exit(w, reason, sizeof(reason), text, sizeof(text));
  if (wk->phase != PH_READY) {
    phase_failed(wk, KH_EWORKER, text);
    return;
  }
  kh__kernel_on_dead(k, reason);
  if (!wk->stopping && k->state == KH__K_DEAD && auto_restart_allowed(wk)) {
    kh__kernel_on_restarting(k, reason);
    if (!wk->stopping && k->state == KH__K_RESTARTING) get_process(wk, PH_AUTO);
  }
}

/* Whether an event of cell id may reach the kernel (and the reply's outputs) under the host's
 * bound. The worker cuts a cell's output at maxOutputBytes (characters of print(), bytes of
 * fd 1/2) with a marker; past 4x that plus 64 KiB of event JSON the host drops the rest of the
 * cell's output events itself, with one marker of its own. The cell's error still shows
 * within twice that bound, so the total the host keeps per cell stays bounded. */
static int output_allowed(worker_t *wk, int type, const char *id, size_t len) {
  kh_kernel_t *k = wk->k;
  char marker[160];
  if (wk->out_cap == 0 || type == KH_EVENT_STATUS) return 1;
  if (strcmp(id, wk->out_id) != 0) {
    snprintf(wk->out_id, sizeof(wk->out_id), "%s", id);
    wk->out_bytes = 0;
    wk->out_cut = 0;
  }
  wk->out_bytes += len;
  if (type == KH_EVENT_EXECUTE_ERROR) return wk->out_bytes <= 2 * wk->out_cap;
  if (wk->out_cut) return 0;
  if (wk->out_bytes <= wk->out_cap) return 1;
  wk->out_cut = 1;
  snprintf(marker, sizeof(marker),
           "{\"name\":\"stderr\",\"text\":\"\\n[kernelhost: output cut by the host after "
           "%llu bytes (limits.maxOutputBytes)]\\n\"}",
           (unsigned long long)(wk->out_bytes - len));
  kh__kernel_on_event(k, KH_EVENT_STREAM, id, marker, strlen(marker));
  return 0;
}

/* The JSON text of a frame's "data" object. The decoder hands payloads over as the validated
 * text they arrived as (frame.c): it is NUL-terminated in place, over the frame's closing
 * brace. A frame of another shape (which the worker never writes) is encoded again (owned). */
static char *data_text(wproc_t *w, json_t *msg, size_t *len) {
  char *p = kh__frame_dec_data(&w->dec, len), *s;
  if (p != NULL) {
    p[*len] = '\0';
    return p;
  }
  if (!json_is_object(json_object_get(msg, "data"))) return NULL;
  s = json_dumps(json_object_get(msg, "data"), JSON_COMPACT);
  *len = s ? strlen(s) : 0;
  return s;
}

static void worker_frame(worker_t *wk, wproc_t *w, json_t *msg) {
  kh_kernel_t *k = wk->k;
  const char *t = json_string_value(json_object_get(msg, "t"));
  if (wk->stopping || w != wk->w) return;
  if (strcmp(t, "hello") == 0) {
    int rc = send_open(wk);
    if (rc != 0) proc_protocol_error(w, kh_strerror(rc));
  } else if (strcmp(t, "ready") == 0) {
    const char *err = json_string_value(json_object_get(msg, "error"));
    json_t *applied = json_object_get(msg, "sandbox");
    phase_t ph = wk->phase;
    if (err != NULL) {
      char text[KH__ERRMSG_MAX];
      /* The worker could not confine itself (and exits): the system cannot enforce the plan. */
      int status =
          json_integer_value(json_object_get(msg, "code")) == KH_ENOTSUP ? KH_ENOTSUP : KH_EWORKER;
      snprintf(text, sizeof(text), "the worker could not open the kernel: %s", err);
      proc_kill(w);
      wk->w = NULL;
      phase_failed(wk, status, text);
      return;
    }
    json_decref(wk->applied);
    wk->applied = json_is_object(applied) ? json_incref(applied) : NULL;
    wk->phase = PH_READY;
    if (ph == PH_START)
      kh__kernel_on_ready(k, 0, NULL);
    else if (ph == PH_RESET || ph == PH_AUTO)
      kh__kernel_on_reset(k, 0, NULL);
  } else if (strcmp(t, "ev") == 0 || strcmp(t, "reply") == 0) {
    const char *id = json_string_value(json_object_get(msg, "id"));
    size_t slen = 0;
    char *s = data_text(w, msg, &slen);
    if (id == NULL || s == NULL) {
      if (s != NULL && !(s >= w->dec.buf && s < w->dec.buf + w->dec.len)) free(s);
      proc_protocol_error(w, "an event or reply without id or data");
      return;
    }
    if (t[0] == 'r') {
      if (strcmp(id, wk->grace_id) == 0) {
        uv_timer_stop(&wk->grace);
        wk->grace_id[0] = '\0';
      }
      kh__kernel_on_reply(k, id, s, slen);
    } else {
      int type = kh_event_type_from_name(json_string_value(json_object_get(msg, "type")));
      if (type > 0 && output_allowed(wk, type, id, slen)) kh__kernel_on_event(k, type, id, s, slen);
    }
    /* A slice of the decoder's buffer is not ours to free. */
    if (!(s >= w->dec.buf && s < w->dec.buf + w->dec.len)) free(s);
  } else {
    proc_protocol_error(w, "unknown frame type");
  }
}

/* --- interrupt escalation ----------------------------------------------------------------- */

static void on_grace(uv_timer_t *t) {
  worker_t *wk = t->data;
  kh_kernel_t *k = wk->k;
  char reason[300];
  if (wk->stopping || k->running == NULL || strcmp(k->running->exec_id, wk->grace_id) != 0) return;
  snprintf(reason, sizeof(reason),
           "{\"message\":\"the interrupt did not land within %llu ms: the worker was killed and "
           "is being restarted\",\"cause\":\"interrupt_timeout\",\"pid\":%d}",
           (unsigned long long)k->m->opts.interrupt_grace_ms, wk->w ? wk->w->pid : 0);
  wk->grace_id[0] = '\0';
  kh__kernel_on_restarting(k, reason);
  if (!wk->stopping && k->state == KH__K_RESTARTING) replace_process(wk, PH_AUTO);
}

static void worker_release(worker_t *wk) {
  kh_kernel_t *k = wk->k;
  k->backend = NULL;
  kh__sandbox_free(wk->sandbox);
  json_decref(wk->applied);
  free(wk);
  kh__kernel_on_stopped(k);
}

static void on_grace_closed(uv_handle_t *h) {
  worker_t *wk = h->data;
  if (--wk->live == 0) worker_release(wk);
}

/* --- backend ops -------------------------------------------------------------------------- */

static int worker_start(kh_kernel_t *k) {
  worker_t *wk;
  kh__sandbox_t *sb = NULL;
  /* Decided before any process is spawned or claimed: a system that cannot enforce what the
   * options ask fails createKernel here, naming what is missing (KH_ENOTSUP). */
  int rc = kh__sandbox_new(&sb, k->opts.all, k->m->errmsg);
  if (rc != 0) return rc;
  wk = calloc(1, sizeof(*wk));
  if (wk == NULL) {
    kh__sandbox_free(sb);
    return KH_ENOMEM;
  }
  wk->k = k;
  wk->sandbox = sb;
  if (k->opts.max_output_bytes != KH__NO_LIMIT)
    wk->out_cap = 4 * k->opts.max_output_bytes + 65536;
  uv_timer_init(k->m->loop, &wk->grace);
  uv_unref((uv_handle_t *)&wk->grace);
  wk->grace.data = wk;
  wk->live = 1; /* the timer */
  k->backend = wk;
  get_process(wk, PH_START);
  return 0;
}

static int worker_execute(kh_kernel_t *k, kh__request_t *r) {
  worker_t *wk = k->backend;
  json_t *msg;
  int rc;
  if (wk->w == NULL || wk->phase != PH_READY) return KH_EKERNELDEAD;
  msg = json_pack("{s:s, s:s, s:s%, s:b, s:b}", "t", "exec", "id", r->exec_id, "code", r->code,
                  r->len, "silent", r->silent, "store_history", r->store_history);
  if (msg == NULL) return KH_ENOMEM;
  rc = proc_send(wk->w, msg);
  json_decref(msg);
  return rc;
}

static int worker_interrupt(kh_kernel_t *k) {
  worker_t *wk = k->backend;
  json_t *msg;
  if (wk->w == NULL || wk->w->exited || wk->phase != PH_READY || k->running == NULL) return 0;
  /* The worker turns this into SIGINT on its main thread while (and only while) the cell runs:
   * a bare signal could not tell this cell from the one before. */
  msg = json_pack("{s:s, s:s}", "t", "interrupt", "id", k->running->exec_id);
  if (msg == NULL) return KH_ENOMEM;
  proc_send(wk->w, msg);
  json_decref(msg);
  if (strcmp(wk->grace_id, k->running->exec_id) != 0 || !uv_is_active((uv_handle_t *)&wk->grace)) {
    snprintf(wk->grace_id, sizeof(wk->grace_id), "%s", k->running->exec_id);
    uv_timer_start(&wk->grace, on_grace, k->m->opts.interrupt_grace_ms, 0);
  }
  return 0;
}

static int worker_input_reply(kh_kernel_t *k, const char *value) {
  worker_t *wk = k->backend;
  json_t *msg;
  int rc;
  if (wk->w == NULL || wk->phase != PH_READY) return KH_EKERNELDEAD;
  msg = json_pack("{s:s, s:s}", "t", "input", "value", value);
  if (msg == NULL) return KH_EENCODING;
  rc = proc_send(wk->w, msg);
  json_decref(msg);
  return rc;
}

/* Restart: a fresh process with the same id and options. */
static int worker_reset(kh_kernel_t *k) {
  replace_process(k->backend, PH_RESET);
  return 0;
}

static void worker_stop(kh_kernel_t *k) {
  worker_t *wk = k->backend;
  if (wk->stopping) return;
  wk->stopping = 1;
  if (wk->w != NULL) {
    proc_kill(wk->w);
    wk->w = NULL;
  }
  uv_close((uv_handle_t *)&wk->grace, on_grace_closed);
}

static void worker_info(kh_kernel_t *k, json_t *info) {
  worker_t *wk = k->backend;
  if (wk == NULL) return;
  if (wk->w != NULL) json_object_set_new(info, "pid", json_integer(wk->w->pid));
  json_object_set_new(info, "pooled", json_boolean(wk->pooled));
  if (wk->sandbox != NULL) {
    json_t *o, *missing;
    kh__sandbox_info(wk->sandbox, info);
    /* What the running worker reports as active beats what the host planned (best-effort may
     * lose a layer at apply time); its missing layers join the planned ones. */
    o = json_object_get(info, "sandbox");
    if (o != NULL && wk->applied != NULL && wk->w != NULL) {
      json_t *layers = json_object_get(wk->applied, "layers");
      missing = json_deep_copy(json_object_get(o, "missing"));
      if (json_is_object(layers)) json_object_set(o, "layers", layers);
      if (json_is_array(missing)) {
        json_array_extend(missing, json_object_get(wk->applied, "missing"));
        json_object_set(o, "missing", missing);
      }
      json_decref(missing);
    }
  }
}

const kh__backend_t kh__worker_backend = {
    .name = "worker",
    .manager_open = worker_manager_open,
    .manager_close = worker_manager_close,
    .start = worker_start,
    .execute = worker_execute,
    .interrupt = worker_interrupt,
    .input_reply = worker_input_reply,
    .reset = worker_reset,
    .stop = worker_stop,
    .info = worker_info,
    .index = KH__BACKEND_WORKER,
};

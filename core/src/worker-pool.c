/* worker-pool.c: the manager's pool of worker processes (manager option pool), claimed by
 * kernels at creation and restart and refilled. Two kinds:
 *
 *   mode "spawn" (the default): `size` workers spawned ahead of need, Python already up.
 *   mode "fork": a fork server. One template process (core/worker/main.c) starts Python,
 *     imports the runtime and pool.preload, and forks a worker per request (protocol.h's second
 *     diagram); `size` forked workers are kept waiting. A claim with none waiting asks the
 *     template for one and hands the kernel a record whose process is on its way.
 *
 * Either way a pooled worker serves any option set, because permissions, mounts, env and cwd
 * are applied when it is claimed (the "open" message). Worker-backend state, per manager.
 *
 * The template's faults: a preload that fails to import ends it with a "fatal" naming the
 * module; the pool then refuses claims with KH_EOPTION and that message, for good (the
 * options are wrong, not the machine). Any other death is reported in the pool's info and the
 * template is started again (at once, then with a growing delay while it keeps dying before
 * "hello"); claims meanwhile start cold, and records it was still making are spawned instead.
 * Thread: loop. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

#define POOL_MAX_FAILURES 3 /* pool workers dying before "hello": stop refilling */
#define TMPL_MAX_FAILURES 5 /* templates dying before "hello" in a row: give up (cold only) */
#define TMPL_DELAY_MS 100   /* the second restart's delay, doubled after each failure */
#define REFILL_MS 50        /* a claim's refill, if the kernel has not said it is up by then */

typedef enum {
  T_OFF = 0,   /* mode "spawn", or given up after TMPL_MAX_FAILURES */
  T_STARTING,  /* the first template is starting: claims wait for it */
  T_READY,     /* serving forks */
  T_RESTARTING, /* dead, a new one starting or waiting for its delay: claims start cold */
  T_FAILED     /* a preload failed: claims fail with KH_EOPTION */
} tstate_t;

typedef struct pool_s pool_t;

/* The template process: its handle, its socket (an IPC pipe: forked workers' pipe ends arrive
 * on it) and the frames it writes. Freed when both handles have closed. */
typedef struct {
  pool_t *p; /* its pool, kept alive by the template's reference; p->t != this: let go */
  uv_process_t proc;
  uv_pipe_t ctl;
  kh__refs_t refs;
  kh__frame_dec_t dec;
  int pid;
  int exited;
  int hello; /* said "hello": Python and the preload are up */
  char why[300]; /* its "fatal" message or protocol error, or "" */
  char rbuf[4096];
} tmpl_t;

/* A process the template is making: answered in order. */
typedef struct fork_req_s {
  struct fork_req_s *next;
  json_int_t seq;
  kh__wproc_t *w;
  int pooled;              /* for the pool, not a waiting kernel: it gets ready ahead of need */
  const char *pids_cgroup; /* pooled: its pids cgroup, joined ahead of need (root), or NULL */
} fork_req_t;

/* A kh_manager_pool_ready() waiting for the template to settle. */
typedef struct waiter_s {
  struct waiter_s *next;
  kh_request_cb cb;
  void *data;
} waiter_t;

struct pool_s {
  uv_loop_t *loop;
  kh_manager_t *m; /* NULL once the manager closed: the pool then drains and frees itself */
  kh__wproc_t *procs;
  int count;    /* processes in procs */
  int failures; /* in a row, before "hello": a broken worker is not respawned forever */
  /* The manager's reference (until kh__wpool_close) plus one per process the pool holds that
   * has not closed yet, one for the template while it has handles, and one for the timer
   * (util.c's scheme): the pool outlives the manager until its last killed worker is reaped. */
  kh__refs_t refs;
  /* mode "fork" */
  int fork;
  tstate_t state;
  tmpl_t *t;
  uv_timer_t timer; /* the template's restart delay, or a claim's refill (refill_due) */
  int refill_due;
  fork_req_t *reqs, **reqs_tail;
  json_int_t next_seq;
  int tfailures;  /* templates that died before "hello", in a row */
  int restarts;   /* templates started after the first */
  int forked;     /* workers the templates made */
  char last_exit[300]; /* how the last template died, or "" */
  char err[KH__ERRMSG_MAX]; /* T_FAILED's message */
  waiter_t *waiters;
};

static void pool_free(kh__refs_t *r) {
  free((char *)r - offsetof(pool_t, refs));
}

/* The pool hangs off its manager only as the worker backend's per-manager state. */
static pool_t *pool_of(kh_manager_t *m) {
  return m->backend_state[KH__BACKEND_WORKER];
}

static void pool_fill(pool_t *p);
static void tmpl_start(pool_t *p);
static void settle(pool_t *p);

/* A pooled process may say "hello" and nothing else until it is claimed (worker-proc.c refuses
 * every other message before "open"). */
static void pool_frame(void *holder, kh__wproc_t *w, kh__pmsg_t kind, json_t *msg, const char *data,
                       size_t len) {
  pool_t *p = holder;
  (void)w;
  (void)msg;
  (void)data;
  (void)len;
  if (kind == KH__P_HELLO) {
    p->failures = 0;
    settle(p);
  }
}

static void pool_exited(void *holder, kh__wproc_t *w) {
  pool_t *p = holder;
  kh__wproc_t **pp;
  for (pp = &p->procs; *pp; pp = &(*pp)->next) {
    if (*pp == w) {
      *pp = w->next;
      p->count--;
      if (w->phase == KH__WP_SPAWNED) p->failures++;
      break;
    }
  }
  if (p->m != NULL) {
    pool_fill(p);
    settle(p); /* a pool that stopped refilling is as full as it gets */
  }
}

static void pool_closed(void *holder) {
  pool_t *p = holder;
  kh__refs_put(&p->refs);
}

static const kh__wproc_cbs_t pool_cbs = {pool_frame, pool_exited, pool_closed};

/* --- the fork server's requests ----------------------------------------------------------- */

static int tmpl_send(tmpl_t *t, const fork_req_t *r);

/* Asks the template for a process, into record w (the pool's or a kernel's). The request goes
 * now if the template is up, else when it says "hello". A process the pool keeps waiting gets
 * ready ahead of need before it says "hello", off any kernel's path (as root: it joins its pids
 * cgroup and makes an empty network namespace, main.c's tmpl_child); one forked for a waiting
 * kernel does neither (most kernels need neither, and it would only move the cost). */
static int fork_request(pool_t *p, kh__wproc_t *w) {
  fork_req_t *r = calloc(1, sizeof(*r));
  if (r == NULL) return KH_ENOMEM;
  r->seq = ++p->next_seq;
  r->w = w;
  if ((r->pooled = w->holder == p)) w->pids_cgroup = r->pids_cgroup = kh__sandbox_pids_cgroup();
  *p->reqs_tail = r;
  p->reqs_tail = &r->next;
  if (p->state == T_READY && p->t != NULL && p->t->hello && tmpl_send(p->t, r) != 0) {
    /* The socket is failing: the template's death follows and takes this request along. */
  }
  return 0;
}

/* A record that will have no process: its holder hears of it as a death before "hello", with
 * code (kh__wproc_t's start_code) and the reason. A record kh__wproc_start gave up on has
 * handles closing already; any other is freed here. */
static void fail_unstarted(kh__wproc_t *w, int code, const char *err, const char *why) {
  int closing = code == KH_EWORKER;
  snprintf(w->why, sizeof(w->why), "%.150s%s%.140s", err, why ? ": " : "", why ? why : "");
  w->exited = 1;
  w->start_code = code;
  if (w->cbs != NULL) w->cbs->exited(w->holder, w);
  if (!closing) kh__wproc_free_unstarted(w);
}

/* A record the template will not make after all (it died, or answered with an error): a
 * kernel's is spawned instead, the pool's dropped; one its holder killed meanwhile is freed. */
static void fork_fallback(pool_t *p, kh__wproc_t *w, const char *why) {
  char path[4096], err[KH__ERRMSG_MAX];
  int rc;
  if (w->killed) {
    kh__wproc_free_unstarted(w);
    return;
  }
  if (w->holder == p) {
    kh__wproc_t **pp;
    for (pp = &p->procs; *pp; pp = &(*pp)->next) {
      if (*pp == w) {
        *pp = w->next;
        p->count--;
        break;
      }
    }
    kh__wproc_free_unstarted(w);
    p->failures++; /* refilled by the next template, or not at all (pool_fill) */
    settle(p);
    return;
  }
  if (p->state == T_FAILED) {
    fail_unstarted(w, KH_EOPTION, p->err, NULL);
    return;
  }
  if (p->m == NULL) {
    rc = KH_ECANCELED; /* as every callback the close finds waiting */
    snprintf(err, sizeof(err), "the manager was closed");
  } else {
    rc = kh__wproc_path(p->m, path, sizeof(path), err);
    if (rc == 0) rc = kh__wproc_start(w, p->loop, path, NULL, err);
  }
  if (rc == 0) return;
  fail_unstarted(w, rc, err, why);
}

/* Every request not answered yet, when the template is gone. */
static void fork_fail_all(pool_t *p, const char *why) {
  fork_req_t *r;
  while ((r = p->reqs) != NULL) {
    p->reqs = r->next;
    if (p->reqs == NULL) p->reqs_tail = &p->reqs;
    fork_fallback(p, r->w, why);
    free(r);
  }
}

/* --- the template process ----------------------------------------------------------------- */

static void tmpl_release(kh__refs_t *r) {
  tmpl_t *t = (tmpl_t *)((char *)r - offsetof(tmpl_t, refs));
  pool_t *p = t->p;
  kh__frame_dec_free(&t->dec);
  free(t);
  kh__refs_put(&p->refs);
}

static int tmpl_send(tmpl_t *t, const fork_req_t *r) {
  json_t *o = json_pack("{s:s, s:I}", "t", kh__proto_name(KH__P_FORK), "seq", r->seq);
  int rc;
  if (o != NULL && r->pooled) json_object_set_new(o, "pooled", json_true());
  if (o != NULL && r->pids_cgroup != NULL)
    json_object_set_new(o, "pids_cgroup", json_string(r->pids_cgroup));
  rc = o ? kh__stream_send_frame((uv_stream_t *)&t->ctl, o, NULL, 0) : KH_ENOMEM;
  json_decref(o);
  return rc;
}

/* Stops the template (on purpose, or because it broke its protocol) and lets it go. */
static void tmpl_kill(tmpl_t *t) {
  if (!t->exited && t->pid > 0) kill(t->pid, SIGKILL);
  if (!uv_is_closing((uv_handle_t *)&t->ctl)) kh__refs_close(&t->refs, (uv_handle_t *)&t->ctl);
  if (!t->exited) uv_ref((uv_handle_t *)&t->proc); /* reaped before the loop may end */
}

static void tmpl_broken(tmpl_t *t, const char *what) {
  if (!t->why[0]) snprintf(t->why, sizeof(t->why), "protocol error: %s", what);
  tmpl_kill(t);
}

/* One frame of the template's: "hello", "fatal" or "forked". */
static void tmpl_frame(tmpl_t *t, json_t *msg) {
  pool_t *p = t->p;
  char why[200];
  kh__pmsg_t kind = kh__proto_check(msg, KH__P_TO_HOST, 0, why, sizeof(why));
  fork_req_t *r;
  if (p->t != t) return;
  switch (kind) {
    case KH__P_HELLO:
      if (t->hello) {
        tmpl_broken(t, "a second \"hello\"");
        return;
      }
      t->hello = 1;
      p->state = T_READY;
      p->tfailures = 0;
      for (r = p->reqs; r != NULL; r = r->next) {
        if (tmpl_send(t, r) != 0) break; /* its death follows */
      }
      settle(p);
      pool_fill(p);
      return;
    case KH__P_FATAL: {
      const char *mod = json_string_value(json_object_get(msg, "module"));
      const char *text = json_string_value(json_object_get(msg, "message"));
      if (mod != NULL && !t->hello) {
        /* A preload module: the options are wrong, and a new template would fail the same. */
        snprintf(p->err, sizeof(p->err), "%s", text);
        p->state = T_FAILED;
      }
      snprintf(t->why, sizeof(t->why), "%s", text);
      tmpl_kill(t);
      return;
    }
    case KH__P_FORKED: {
      json_int_t seq = json_integer_value(json_object_get(msg, "seq"));
      json_t *pid = json_object_get(msg, "pid");
      char err[KH__ERRMSG_MAX];
      r = p->reqs;
      if (r == NULL || r->seq != seq || !t->hello) {
        tmpl_broken(t, "an answer to no request");
        return;
      }
      if (json_is_integer(pid) && uv_pipe_pending_count(&t->ctl) < 2) {
        tmpl_broken(t, "a forked worker without its pipes");
        return;
      }
      p->reqs = r->next;
      if (p->reqs == NULL) p->reqs_tail = &p->reqs;
      if (json_is_integer(pid) && json_integer_value(pid) > 1 &&
          json_integer_value(pid) < 0x7fffffff) {
        p->forked++;
        if (kh__wproc_adopt(r->w, p->loop, &t->ctl, (int)json_integer_value(pid), err) != 0 &&
            r->w->cbs != NULL) {
          snprintf(r->w->why, sizeof(r->w->why), "%.290s", err);
          r->w->cbs->exited(r->w->holder, r->w);
        }
      } else {
        const char *e = json_string_value(json_object_get(msg, "error"));
        snprintf(err, sizeof(err), "the fork server could not fork: %s", e ? e : "no reason");
        fork_fallback(p, r->w, err);
      }
      free(r);
      return;
    }
    default:
      tmpl_broken(t, kind == KH__P_NONE ? why : "a message that travels the other way");
      return;
  }
}

static void tmpl_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  tmpl_t *t = h->data;
  (void)hint;
  *buf = uv_buf_init(t->rbuf, sizeof(t->rbuf));
}

static void tmpl_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  tmpl_t *t = s->data;
  json_t *msg;
  int rc;
  (void)buf;
  if (n < 0) {
    uv_read_stop(s);
    if (!t->exited) kill(t->pid, SIGKILL); /* a template that closed its socket is done */
    return;
  }
  if (kh__frame_dec_feed(&t->dec, t->rbuf, (size_t)n) != 0) {
    tmpl_broken(t, t->dec.err);
    return;
  }
  while (!uv_is_closing((uv_handle_t *)&t->ctl) && (rc = kh__frame_dec_next(&t->dec, &msg)) == 1) {
    tmpl_frame(t, msg);
    json_decref(msg);
  }
}

/* The template has exited, whether or not it was reaped yet (WNOWAIT leaves that to libuv). */
static int tmpl_gone(const tmpl_t *t) {
  siginfo_t si;
  if (t->exited) return 1;
  memset(&si, 0, sizeof(si));
  if (waitid(P_PID, (id_t)t->pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0) return 1;
  return si.si_pid != 0;
}

static void tmpl_restart_cb(uv_timer_t *h) {
  pool_t *p = h->data;
  if (p->m != NULL && p->state == T_RESTARTING && p->t == NULL) tmpl_start(p);
  settle(p); /* tmpl_start may have given up */
}

static void tmpl_exit(uv_process_t *h, int64_t status, int sig) {
  tmpl_t *t = h->data;
  pool_t *p = t->p;
  int had_hello = t->hello;
  t->exited = 1;
  if (!uv_is_closing((uv_handle_t *)&t->ctl)) {
    /* Its last frames (a "fatal") may still be in the socket. */
    int fd;
    ssize_t n;
    if (uv_fileno((uv_handle_t *)&t->ctl, &fd) == 0) {
      while (!uv_is_closing((uv_handle_t *)&t->ctl) && (n = read(fd, t->rbuf, sizeof(t->rbuf))) > 0)
        tmpl_read((uv_stream_t *)&t->ctl, n, NULL);
    }
    if (!uv_is_closing((uv_handle_t *)&t->ctl))
      kh__refs_close(&t->refs, (uv_handle_t *)&t->ctl);
  }
  kh__refs_close(&t->refs, (uv_handle_t *)&t->proc);
  if (p->t != t) return;
  p->t = NULL;
  if (sig)
    snprintf(p->last_exit, sizeof(p->last_exit), "the fork server (pid %d) was killed by SIG%s%s%.200s",
             t->pid, sigabbrev_np(sig) ? sigabbrev_np(sig) : "?", t->why[0] ? ": " : "", t->why);
  else
    snprintf(p->last_exit, sizeof(p->last_exit), "the fork server (pid %d) exited with code %lld%s%.200s",
             t->pid, (long long)status, t->why[0] ? ": " : "", t->why);
  if (!had_hello) p->tfailures++;
  fork_fail_all(p, p->last_exit);
  if (p->m == NULL) return;
  if (p->state == T_FAILED) {
    settle(p);
    return;
  }
  if (p->tfailures >= TMPL_MAX_FAILURES) {
    p->state = T_OFF;
    snprintf(p->err, sizeof(p->err), "the fork server keeps dying (%s): kernels start cold",
             p->last_exit);
    settle(p);
    return;
  }
  p->state = T_RESTARTING;
  p->restarts++;
  p->refill_due = 0; /* the timer is the restart's now; the new template refills on "hello" */
  uv_timer_start(&p->timer, tmpl_restart_cb,
                 p->tfailures == 0 ? 0 : (uint64_t)TMPL_DELAY_MS << (p->tfailures - 1), 0);
}

static void tmpl_start(pool_t *p) {
  char path[4096], ppid[32], err[KH__ERRMSG_MAX];
  uv_process_options_t o;
  uv_stdio_container_t stdio[4];
  size_t i, n = json_array_size(p->m->opts.pool_preload);
  char **args;
  tmpl_t *t;
  int rc;
  if (kh__wproc_path(p->m, path, sizeof(path), err) != 0) {
    p->state = T_OFF; /* kernels get the same error when they spawn */
    snprintf(p->err, sizeof(p->err), "%s", err);
    return;
  }
  t = calloc(1, sizeof(*t));
  args = calloc(n + 4, sizeof(*args));
  if (t == NULL || args == NULL) {
    free(t);
    free(args);
    p->state = T_OFF;
    snprintf(p->err, sizeof(p->err), "out of memory starting the fork server");
    return;
  }
  snprintf(ppid, sizeof(ppid), "%ld", (long)getpid());
  args[0] = path;
  args[1] = "--kernelhost-template";
  args[2] = ppid;
  for (i = 0; i < n; i++) args[3 + i] = (char *)json_string_value(json_array_get(p->m->opts.pool_preload, i));
  t->p = p;
  kh__frame_dec_init(&t->dec, 0);
  kh__refs_init(&t->refs, tmpl_release);
  uv_pipe_init(p->loop, &t->ctl, 1);
  t->ctl.data = t->proc.data = t;
  kh__refs_handle(&t->refs, &t->ctl);
  kh__refs_handle(&t->refs, &t->proc);
  kh__refs_get(&p->refs); /* the template's */
  memset(&o, 0, sizeof(o));
  memset(stdio, 0, sizeof(stdio));
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_IGNORE;
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = 2;
  stdio[3].flags = UV_CREATE_PIPE | UV_READABLE_PIPE | UV_WRITABLE_PIPE;
  stdio[3].data.stream = (uv_stream_t *)&t->ctl;
  o.file = path;
  o.args = args;
  o.stdio = stdio;
  o.stdio_count = 4;
  o.exit_cb = tmpl_exit;
  o.flags = UV_PROCESS_DETACHED;
  rc = uv_spawn(p->loop, &t->proc, &o);
  free(args);
  if (rc != 0) {
    t->exited = 1;
    snprintf(p->err, sizeof(p->err), "cannot start the fork server \"%.800s\": %s", path,
             uv_strerror(rc));
    p->state = T_OFF;
    kh__refs_close(&t->refs, (uv_handle_t *)&t->ctl);
    kh__refs_close(&t->refs, (uv_handle_t *)&t->proc);
    return;
  }
  t->pid = t->proc.pid;
  p->t = t;
  uv_unref((uv_handle_t *)&t->proc);
  uv_unref((uv_handle_t *)&t->ctl);
  uv_read_start((uv_stream_t *)&t->ctl, tmpl_alloc, tmpl_read);
}

static void refill_cb(uv_timer_t *h) {
  pool_t *p = h->data;
  p->refill_due = 0;
  pool_fill(p);
}

/* --- kh_manager_pool_ready ---------------------------------------------------------------- */

static const char *const state_names[] = {"off", "starting", "ready", "restarting", "failed"};

/* Processes that said "hello" and wait for a kernel. */
static int waiting(const pool_t *p) {
  const kh__wproc_t *w;
  int n = 0;
  for (w = p->procs; w != NULL; w = w->next)
    if (w->phase == KH__WP_HELLO) n++;
  return n;
}

/* {mode, size, waiting, preload, state, pid, restarts, forked, last_exit, error}: what the pool
 * is doing, for kh_manager_pool_ready's answer. Owned. */
static json_t *pool_info(pool_t *p) {
  json_t *o;
  if (!p->fork)
    return json_pack("{s:s, s:i, s:i}", "mode", "spawn", "size", p->m ? p->m->opts.pool_size : 0,
                     "waiting", waiting(p));
  o = json_pack("{s:s, s:i, s:O, s:s, s:i, s:i, s:i}", "mode", "fork", "size",
                p->m ? p->m->opts.pool_size : 0, "preload",
                p->m ? p->m->opts.pool_preload : json_null(), "state", state_names[p->state],
                "restarts", p->restarts, "forked", p->forked, "waiting", waiting(p));
  if (o == NULL) return NULL;
  json_object_set_new(o, "pid", p->t && p->t->hello ? json_integer(p->t->pid) : json_null());
  json_object_set_new(o, "last_exit", p->last_exit[0] ? json_string(p->last_exit) : json_null());
  if (p->err[0]) json_object_set_new(o, "error", json_string(p->err));
  return o;
}

typedef struct {
  kh_request_cb cb;
  void *data;
  int status;
  char *json;
  char errmsg[KH__ERRMSG_MAX];
} answer_t;

static void run_answer(kh_manager_t *m, void *arg) {
  answer_t *a = arg;
  if (!m->inbox_discarding) {
    m->pending--;
    a->cb(m, NULL, a->status, a->status == 0 ? a->json : NULL,
          a->status == 0 && a->json ? strlen(a->json) : 0, a->status == 0 ? NULL : a->errmsg,
          a->data);
    kh__manager_update_ref(m);
  }
  free(a->json);
  free(a);
}

/* Answers the waiters once the pool has settled: the template up (or failed, or given up) and
 * `size` processes waiting for kernels (or the pool stopped refilling after failures); with
 * KH_ECANCELED when the manager closes. Each answer goes through the manager's inbox, so never
 * inside an API call. */
static void answer_waiters(pool_t *p, kh_manager_t *m, int cancel) {
  waiter_t *w;
  json_t *info;
  int status;
  if (p->waiters == NULL) return;
  if (!cancel && p->fork && (p->state == T_STARTING || p->state == T_RESTARTING)) return;
  /* A template that died before the loop saw it is not "ready": its exit (and the restart,
   * which answers) is on its way. */
  if (!cancel && p->fork && p->state == T_READY && p->t != NULL && tmpl_gone(p->t)) return;
  if (!cancel && (!p->fork || p->state == T_READY) && waiting(p) < m->opts.pool_size &&
      p->failures < POOL_MAX_FAILURES)
    return;
  info = pool_info(p);
  status = cancel                          ? KH_ECANCELED
           : p->state == T_FAILED          ? KH_EOPTION
           : p->fork && p->state == T_OFF  ? KH_EWORKER
           : waiting(p) < m->opts.pool_size ? KH_EWORKER
                                           : 0;
  if (status == KH_EWORKER && !p->err[0])
    snprintf(p->err, sizeof(p->err), "the pool's workers keep dying before they start: %d in a row",
             p->failures);
  while ((w = p->waiters) != NULL) {
    answer_t *a = calloc(1, sizeof(*a));
    p->waiters = w->next;
    if (a != NULL) {
      a->cb = w->cb;
      a->data = w->data;
      a->status = status;
      snprintf(a->errmsg, sizeof(a->errmsg), "%s", cancel ? "the manager was closed" : p->err);
      if (status == 0 && (a->json = info ? json_dumps(info, JSON_COMPACT) : NULL) == NULL) {
        a->status = KH_ENOMEM;
        snprintf(a->errmsg, sizeof(a->errmsg), "out of memory");
      }
    }
    if (a == NULL || kh__defer(m, run_answer, a) != 0) {
      m->pending--; /* lost: there is no one to tell */
      if (a != NULL) free(a->json);
      free(a);
    }
    free(w);
  }
  json_decref(info);
  kh__manager_update_ref(m);
}

static void settle(pool_t *p) {
  if (p->m != NULL) answer_waiters(p, p->m, 0);
}

int kh_manager_pool_ready(kh_manager_t *m, kh_request_cb cb, void *data) {
  pool_t *p;
  waiter_t *w;
  if (m == NULL) return KH_EINVAL;
  m->errmsg[0] = 0;
  if (cb == NULL) {
    kh__set_err(m->errmsg, "kh_manager_pool_ready needs a callback");
    return KH_EINVAL;
  }
  if (m->closing) {
    kh__set_err(m->errmsg, "the manager is closed");
    return KH_ECLOSED;
  }
  if ((p = pool_of(m)) == NULL) {
    kh__set_err(m->errmsg, "the manager has no pool (manager option pool: {size} or {mode: \"fork\"})");
    return KH_ENOTSUP;
  }
  if ((w = calloc(1, sizeof(*w))) == NULL) return KH_ENOMEM;
  w->cb = cb;
  w->data = data;
  w->next = p->waiters;
  p->waiters = w;
  m->pending++; /* keeps the loop alive until it is answered */
  kh__manager_update_ref(m);
  settle(p);
  return 0;
}

/* --- filling, opening, closing, claiming -------------------------------------------------- */

static void pool_fill(pool_t *p) {
  char path[4096], err[KH__ERRMSG_MAX];
  while (p->m != NULL && p->count < p->m->opts.pool_size && p->failures < POOL_MAX_FAILURES) {
    kh__wproc_t *w;
    if (p->fork) {
      if (p->state != T_READY && p->state != T_STARTING) return; /* cold until it is back */
      if ((w = kh__wproc_new(&pool_cbs, p)) == NULL) return;
      if (fork_request(p, w) != 0) {
        kh__wproc_free_unstarted(w);
        return;
      }
    } else if (kh__wproc_path(p->m, path, sizeof(path), err) != 0 ||
               kh__wproc_spawn(p->loop, path, NULL, &pool_cbs, p, &w, err) != 0) {
      /* Kernels will get the error at creation; the pool stops trying. */
      snprintf(p->err, sizeof(p->err), "%s", err);
      p->failures = POOL_MAX_FAILURES;
      return;
    }
    w->next = p->procs;
    p->procs = w;
    p->count++;
    kh__refs_get(&p->refs);
  }
}

void kh__wpool_open(kh_manager_t *m) {
  pool_t *p;
  if (m->opts.pool_size <= 0 && !m->opts.pool_fork) return;
  p = calloc(1, sizeof(*p));
  if (p == NULL) return; /* no pool: kernels start cold */
  p->loop = m->loop;
  p->m = m;
  p->fork = m->opts.pool_fork;
  p->reqs_tail = &p->reqs;
  kh__refs_init(&p->refs, pool_free);
  kh__refs_get(&p->refs); /* the manager's */
  uv_timer_init(m->loop, &p->timer);
  p->timer.data = p;
  uv_unref((uv_handle_t *)&p->timer);
  kh__refs_handle(&p->refs, &p->timer);
  m->backend_state[KH__BACKEND_WORKER] = p;
  if (p->fork) {
    p->state = T_STARTING;
    tmpl_start(p);
  }
  pool_fill(p);
}

void kh__wpool_close(kh_manager_t *m) {
  pool_t *p = pool_of(m);
  kh__wproc_t *w;
  if (p == NULL) return;
  m->backend_state[KH__BACKEND_WORKER] = NULL;
  answer_waiters(p, m, 1);
  p->m = NULL;
  while ((w = p->procs) != NULL) {
    p->procs = w->next;
    p->count--;
    if (w->pid == 0 && !w->exited) {
      /* Still being made: dropped when the template answers or dies. */
      w->killed = 1;
      continue;
    }
    kh__wproc_kill(w);
  }
  if (p->t != NULL) {
    tmpl_t *t = p->t;
    p->t = NULL;
    fork_fail_all(p, "the manager was closed");
    tmpl_kill(t);
  }
  kh__refs_close(&p->refs, (uv_handle_t *)&p->timer);
  kh__refs_put(&p->refs); /* the manager's */
}

/* Options that only a process's start can apply: variables read by the dynamic loader and the
 * C library before main() (LD_PRELOAD, LD_LIBRARY_PATH, MALLOC_*, GLIBC_TUNABLES). */
static int needs_fresh_process(const json_t *env) {
  json_t *v;
  const char *key;
  json_object_foreach((json_t *)env, key, v) {
    if (strncmp(key, "LD_", 3) == 0 || strncmp(key, "MALLOC_", 7) == 0 ||
        strcmp(key, "GLIBC_TUNABLES") == 0)
      return 1;
  }
  return 0;
}

kh__wproc_t *kh__wpool_claim(kh_manager_t *m, const json_t *env, const kh__wproc_cbs_t *cbs,
                             void *holder, int *rc, char *errmsg, const char **origin) {
  pool_t *p = pool_of(m);
  kh__wproc_t *w = NULL, **pp, **best = NULL;
  *rc = 0;
  *origin = "cold";
  if (p == NULL || needs_fresh_process(env)) return NULL;
  if (p->fork && p->state == T_FAILED) {
    kh__set_err(errmsg, "%s", p->err);
    *rc = KH_EOPTION;
    return NULL;
  }
  /* Prefer a warm worker; one still starting is still ahead of a cold spawn. */
  for (pp = &p->procs; *pp; pp = &(*pp)->next)
    if (best == NULL || (*pp)->phase == KH__WP_HELLO) best = pp;
  if (best != NULL) {
    w = *best;
    *best = w->next;
    w->next = NULL;
    p->count--;
    kh__refs_put(&p->refs); /* the new holder counts it from now on (the manager's ref stays) */
    w->cbs = cbs;
    w->holder = holder;
  } else if (p->fork && (p->state == T_READY || p->state == T_STARTING)) {
    /* None waiting: one made for this holder (while the first template starts, it waits). */
    if ((w = kh__wproc_new(cbs, holder)) != NULL && fork_request(p, w) != 0) {
      kh__wproc_free_unstarted(w);
      w = NULL;
    }
  }
  if (w != NULL) *origin = p->fork ? "fork" : "warm";
  /* The refill waits until this kernel is up (kh__wpool_refill): a spawn or a fork started now
   * would take the CPU from the very worker being opened (2 cores: 1-2 ms of a 2 ms start).
   * The timer refills anyway if the kernel never says. */
  if (!p->refill_due && !uv_is_active((uv_handle_t *)&p->timer)) {
    p->refill_due = 1;
    uv_timer_start(&p->timer, refill_cb, REFILL_MS, 0);
  }
  return w;
}

static void run_refill(kh_manager_t *m, void *arg) {
  pool_t *p = pool_of(m);
  (void)arg;
  if (p != NULL && !m->inbox_discarding) pool_fill(p);
}

void kh__wpool_refill(kh_manager_t *m) {
  pool_t *p = pool_of(m);
  if (p == NULL || !p->refill_due) return;
  p->refill_due = 0;
  uv_timer_stop(&p->timer);
  /* Behind the kernel's own news in the inbox: its callback runs first (a spawn blocks the loop
   * until the child has exec'd). */
  if (kh__defer(m, run_refill, NULL) != 0) pool_fill(p);
}

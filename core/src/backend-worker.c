/* backend-worker.c: worker-mode kernels, the ops table kernel.c drives: one kernelhost-worker
 * process per kernel (worker-proc.c), claimed from the warm pool (worker-pool.c) or spawned;
 * the kernel's phases (starting, restarting, ready), interrupts by the worker's SIGINT with
 * kill-and-restart escalation, death reports and auto_restart, the host's own bound on a cell's
 * output, and the sandbox plan (sandbox.c) each process receives with its "open" message.
 * Thread: loop (every op, timer and process callback). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define AUTO_RESTART_LIMIT 5         /* restarts ... */
#define AUTO_RESTART_WINDOW_MS 60000 /* ... per this window, as jupyter_client's restarter */

/* What the kernel is getting a process for; READY once one serves it. */
typedef enum { PH_NONE = 0, PH_START, PH_RESET, PH_AUTO, PH_READY } phase_t;

/* A kernel's backend state (k->backend). Freed when its last reference (wk->refs) goes after
 * stop. */
typedef struct {
  kh_kernel_t *k;
  kh__wproc_t *w; /* the current process, or NULL */
  phase_t phase;
  int pooled;
  const char *origin; /* where its process came from: "fork", "warm" or "cold" */
  int stopping;
  kh__refs_t refs;  /* processes held and not yet closed, plus the grace timer while open */
  uv_timer_t grace; /* an interrupt that does not land within grace: kill and restart */
  char grace_id[KH__EXEC_ID_MAX];
  uint64_t restarts[AUTO_RESTART_LIMIT];
  int nrestarts;
  kh__sandbox_t *sandbox; /* owned: what every process of this kernel enforces, or NULL */
  json_t *applied;        /* owned: the worker's report ({layers, missing}) of the last open */
  /* The host's own bound on a cell's output (limits.max_output_bytes): the worker cuts output
   * itself; this holds even when it does not (user code can reach the protocol pipe). */
  uint64_t out_cap;   /* bytes of output events per cell, 0 for no bound */
  uint64_t out_bytes; /* delivered since the last "exec", whatever id they name */
  int out_cut;        /* the rest of this cell's output is dropped */
} worker_t;

static const kh__wproc_cbs_t kernel_cbs;

/* --- getting a process -------------------------------------------------------------------- */

static int send_open(worker_t *wk) {
  kh_kernel_t *k = wk->k;
  json_t *msg = json_pack("{s:s, s:s}", "t", kh__proto_name(KH__P_OPEN), "id", k->id);
  int rc;
  if (msg == NULL) return KH_ENOMEM;
  if (k->opts.env) json_object_set(msg, "env", k->opts.env);
  if (k->opts.cwd) json_object_set_new(msg, "cwd", json_string(k->opts.cwd));
  if (k->opts.figure_formats) json_object_set(msg, "figure_formats", k->opts.figure_formats);
  if (k->opts.binary_base64) json_object_set_new(msg, "binary", json_string("base64"));
  if (wk->sandbox != NULL) {
    /* The worker applies it before it starts a thread or runs user code (core/worker/main.c).
     * A pooled worker is still single-threaded, blocked reading this very message. */
    json_t *plan = (json_t *)kh__sandbox_plan(wk->sandbox);
    json_object_set(msg, "sandbox", plan);
    json_decref(wk->w->plan);
    wk->w->plan = json_incref(plan);
  }
  rc = kh__wproc_send(wk->w, msg);
  json_decref(msg);
  return rc;
}

/* "expose": the names exposed now (names NULL: ask hostcall.c), when the process is ready. A
 * kernel that never exposed anything sends nothing: its worker has no bridge at all. */
static void send_expose(worker_t *wk, const json_t *names) {
  json_t *own = NULL, *msg;
  if (wk->w == NULL || wk->phase != PH_READY) return;
  if (names == NULL && (names = own = kh__hostcall_names(wk->k)) == NULL) return;
  msg = json_pack("{s:s, s:O}", "t", kh__proto_name(KH__P_EXPOSE), "names", names);
  if (msg != NULL && kh__wproc_send(wk->w, msg) != 0) {
    /* A process that cannot hear this is dying: its death report follows. */
  }
  json_decref(msg);
  json_decref(own);
}

/* Reports a failure to get a process up, in the phase's own way. Called from loop callbacks
 * only (a process's frame or exit), never inside an op. */
static void phase_failed(worker_t *wk, int status, const char *errmsg) {
  kh_kernel_t *k = wk->k;
  phase_t ph = wk->phase;
  wk->phase = PH_NONE;
  kh__wpool_refill(k->m);
  if (ph == PH_START)
    kh__kernel_on_ready(k, status, errmsg);
  else if (ph == PH_RESET || ph == PH_AUTO)
    kh__kernel_on_reset(k, status, errmsg);
}

/* The same from inside an op (create, restart): posted, so that it reaches the kernel after
 * the call that asked has returned. */
static void phase_failed_later(worker_t *wk, int status, const char *errmsg) {
  kh_kernel_t *k = wk->k;
  kh__sink_post(k->sink, wk->phase == PH_START ? KH__MSG_READY : KH__MSG_RESET, 0, status, NULL,
                errmsg, strlen(errmsg));
}

/* "open" could not be sent (out of memory, options the protocol refuses): this process will
 * not serve the kernel. `later`: inside an op, so the failure is posted. */
static void open_failed(worker_t *wk, int rc, int later) {
  char err[KH__ERRMSG_MAX];
  snprintf(err, sizeof(err), "cannot open the kernel in its worker: %s", kh_strerror(rc));
  kh__wproc_kill(wk->w);
  wk->w = NULL;
  if (later)
    phase_failed_later(wk, rc, err);
  else
    phase_failed(wk, rc, err);
}

/* Gets a process for the kernel: from the pool, or spawned. A warm one gets "open" at once,
 * a cold one when it says "hello" (on_frame). */
static void get_process(worker_t *wk, phase_t phase) {
  kh_kernel_t *k = wk->k;
  char path[4096], err[KH__ERRMSG_MAX] = "";
  int rc;
  wk->phase = phase;
  wk->w = kh__wpool_claim(k->m, k->opts.env, &kernel_cbs, wk, &rc, err, &wk->origin);
  wk->pooled = wk->w != NULL;
  if (rc != 0) {
    phase_failed_later(wk, rc, err);
    return;
  }
  if (wk->w != NULL) {
    kh__refs_get(&wk->refs);
    if (wk->w->phase == KH__WP_HELLO && (rc = send_open(wk)) != 0) open_failed(wk, rc, 1);
    return;
  }
  rc = kh__wproc_path(k->m, path, sizeof(path), err);
  if (rc == 0) rc = kh__wproc_spawn(k->m->loop, path, k->opts.env, &kernel_cbs, wk, &wk->w, err);
  if (rc != 0) {
    wk->w = NULL;
    phase_failed_later(wk, rc, err);
    return;
  }
  kh__refs_get(&wk->refs);
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
    kh__wproc_kill(wk->w);
    wk->w = NULL;
  }
  get_process(wk, phase);
}

/* --- what the process says ---------------------------------------------------------------- */

/* Whether an output event may reach the kernel (and the reply's outputs) under the host's
 * bound. The worker cuts a cell's output at max_output_bytes (characters of print(), bytes of
 * fd 1/2) with a marker; past 4x that plus 64 KiB of event JSON the host drops the rest of the
 * cell's output itself, with one marker of its own. Everything the process writes between two
 * "exec" frames counts, whatever request it names: an id that changes cannot reset the bound.
 * The cell's error still shows within twice that bound, so what the host keeps per cell stays
 * bounded. */
static int output_allowed(worker_t *wk, int type, const char *id, size_t len) {
  char marker[160];
  if (wk->out_cap == 0) return 1;
  wk->out_bytes += len;
  if (type == KH_EVENT_EXECUTE_ERROR) return wk->out_bytes <= 2 * wk->out_cap;
  if (wk->out_cut) return 0;
  if (wk->out_bytes <= wk->out_cap) return 1;
  wk->out_cut = 1;
  snprintf(marker, sizeof(marker),
           "{\"name\":\"stderr\",\"text\":\"\\n[kernelhost: output cut by the host after "
           "%llu bytes (limits.max_output_bytes)]\\n\"}",
           (unsigned long long)(wk->out_bytes - len));
  kh__kernel_on_event(wk->k, KH_EVENT_STREAM, id, marker, strlen(marker), NULL);
  return 0;
}

static void on_ready(worker_t *wk, kh__wproc_t *w, json_t *msg) {
  kh_kernel_t *k = wk->k;
  const char *err = json_string_value(json_object_get(msg, "error"));
  json_t *applied = json_object_get(msg, "sandbox");
  phase_t ph = wk->phase;
  if (err != NULL) {
    char text[KH__ERRMSG_MAX];
    /* The worker could not confine itself (and exits): the system cannot enforce the plan. */
    int status =
        json_integer_value(json_object_get(msg, "code")) == KH_ENOTSUP ? KH_ENOTSUP : KH_EWORKER;
    snprintf(text, sizeof(text), "the worker could not open the kernel: %s", err);
    kh__wproc_kill(w);
    wk->w = NULL;
    phase_failed(wk, status, text);
    return;
  }
  json_decref(wk->applied);
  wk->applied = json_is_object(applied) ? json_incref(applied) : NULL;
  wk->phase = PH_READY;
  send_expose(wk, NULL); /* a fresh process knows nothing of the host's functions yet */
  if (ph == PH_START)
    kh__kernel_on_ready(k, 0, NULL);
  else if (ph == PH_RESET || ph == PH_AUTO)
    kh__kernel_on_reset(k, 0, NULL);
  /* The pool waited for this kernel to be up; its refill queues behind the news just given. */
  kh__wpool_refill(k->m);
}

/* An editor request's answer (worker-proc.c checked it names one in flight). With a status,
 * its data is {message}. */
static void on_answer(worker_t *wk, const char *id, json_t *msg, const char *data, size_t len) {
  json_int_t status = json_integer_value(json_object_get(msg, "status"));
  if (status == 0) {
    kh__kernel_on_answer(wk->k, id, 0, data, len);
  } else {
    json_t *d = json_loadb(data, len, 0, NULL);
    const char *text = json_string_value(json_object_get(d, "message"));
    kh__kernel_on_answer(wk->k, id, status < INT32_MIN ? KH_EPYTHON : (int)status, text ? text : "",
                         text ? strlen(text) : 0);
    json_decref(d);
  }
}

static int worker_hostcall_answer(kh_kernel_t *k, int64_t id, const json_t *value,
                                  const char *message, const kh_buffer_t *buffers, size_t nbuffers);

static void on_frame(void *holder, kh__wproc_t *w, kh__pmsg_t kind, json_t *msg, const char *data,
                     size_t len) {
  worker_t *wk = holder;
  const char *id = json_string_value(json_object_get(msg, "id"));
  int rc, type;
  if (wk->stopping || w != wk->w) return;
  switch (kind) {
    case KH__P_HELLO:
      if ((rc = send_open(wk)) != 0) open_failed(wk, rc, 0);
      break;
    case KH__P_READY:
      on_ready(wk, w, msg);
      break;
    case KH__P_REPLY:
      /* worker-proc.c checked that it names the running request. */
      if (strcmp(id, wk->grace_id) == 0) {
        uv_timer_stop(&wk->grace);
        wk->grace_id[0] = '\0';
      }
      kh__kernel_on_reply(wk->k, id, data, len, &w->bufs);
      break;
    case KH__P_EV:
      /* The type is a known event other than status (worker-proc.c). */
      type = kh_event_type_from_name(json_string_value(json_object_get(msg, "type")));
      {
        /* Binary values count as they would in base64 (what the bound was made for). */
        size_t i, total = len;
        for (i = 0; i < w->bufs.n; i++) total += w->bufs.v[i].blob->len / 3 * 4 + 4;
        if (output_allowed(wk, type, id, total))
          kh__kernel_on_event(wk->k, type, id, data, len, &w->bufs);
      }
      break;
    case KH__P_ANSWER:
      on_answer(wk, id, msg, data, len);
      break;
    case KH__P_CALL: {
      /* worker-proc.c checked the id is new; the name is looked up in the kernel's table. */
      json_t *args = json_object_get(msg, "args");
      char *text = json_dumps(args, JSON_COMPACT);
      json_int_t cid = json_integer_value(json_object_get(msg, "id"));
      const char *name = json_string_value(json_object_get(msg, "name"));
      int cell = json_is_true(json_object_get(msg, "cell"));
      size_t nb = 0;
      kh_buffer_t *views = kh__bufs_view(&w->bufs, &nb); /* checked by worker-proc.c */
      if (text == NULL || (w->bufs.n > 0 && views == NULL)) {
        worker_hostcall_answer(wk->k, cid, NULL, "out of memory reading the host call", NULL, 0);
      } else {
        kh__hostcall_from_worker(wk->k, cid, name, cell, text, strlen(text), views, nb);
      }
      free(views);
      free(text);
      break;
    }
    default:
      break;
  }
}

static void on_exited(void *holder, kh__wproc_t *w) {
  worker_t *wk = holder;
  kh_kernel_t *k = wk->k;
  char reason[300], text[KH__ERRMSG_MAX];
  if (wk->stopping || w != wk->w) return; /* expected */
  wk->w = NULL;
  uv_timer_stop(&wk->grace);
  kh__wproc_describe_exit(w, reason, sizeof(reason), text, sizeof(text));
  if (wk->phase != PH_READY) {
    /* A record the fork server never made says why itself (a pool.preload that fails). */
    phase_failed(wk, w->start_code ? w->start_code : KH_EWORKER, w->start_code ? w->why : text);
    return;
  }
  kh__kernel_on_dead(k, reason);
  if (!wk->stopping && k->state == KH__K_DEAD && auto_restart_allowed(wk)) {
    kh__kernel_on_restarting(k, reason);
    if (!wk->stopping && k->state == KH__K_RESTARTING) get_process(wk, PH_AUTO);
  }
}

static void worker_release(kh__refs_t *r) {
  worker_t *wk = (worker_t *)((char *)r - offsetof(worker_t, refs));
  kh_kernel_t *k = wk->k;
  k->backend = NULL;
  kh__sandbox_free(wk->sandbox);
  json_decref(wk->applied);
  free(wk);
  kh__kernel_on_stopped(k);
}

/* One of the processes this kernel held has closed (util.c's scheme: each counted once). */
static void on_closed(void *holder) {
  worker_t *wk = holder;
  kh__refs_put(&wk->refs);
}

static const kh__wproc_cbs_t kernel_cbs = {on_frame, on_exited, on_closed};

/* --- interrupt escalation ----------------------------------------------------------------- */

/* One-shot: it never re-arms itself. With interruptGraceMs 0 it fires in the loop's next timer
 * pass (or the same one, when the interrupt came from kernel.c's timer): the kill and restart
 * happen at once unless the reply is already in, and nothing spins. */
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
  if (k->opts.max_output_bytes != KH__NO_LIMIT) wk->out_cap = 4 * k->opts.max_output_bytes + 65536;
  uv_timer_init(k->m->loop, &wk->grace);
  uv_unref((uv_handle_t *)&wk->grace);
  wk->grace.data = wk;
  kh__refs_init(&wk->refs, worker_release);
  kh__refs_handle(&wk->refs, &wk->grace);
  k->backend = wk;
  get_process(wk, PH_START);
  return 0;
}

static int worker_execute(kh_kernel_t *k, kh__request_t *r) {
  worker_t *wk = k->backend;
  json_t *msg;
  int rc;
  if (wk->w == NULL || wk->phase != PH_READY) return KH_EKERNELDEAD;
  if (r->comm_type != NULL) {
    /* comm.c encoded the content itself, so it parses; its buffers follow as binary frames. */
    json_t *content = json_loadb(r->code, r->len, 0, NULL);
    kh_buffer_t *views;
    size_t nb = 0;
    msg = content ? json_pack("{s:s, s:s, s:s, s:o}", "t", kh__proto_name(KH__P_COMM), "id",
                              r->exec_id, "msg_type", r->comm_type, "content", content)
                  : NULL;
    if (msg == NULL) return KH_ENOMEM;
    views = kh__bufs_view(&r->comm_bufs, &nb);
    rc = nb == r->comm_bufs.n ? kh__wproc_send_bufs(wk->w, msg, views, nb) : KH_ENOMEM;
    free(views);
  } else {
    msg = json_pack("{s:s, s:s, s:s%, s:b, s:b, s:b}", "t", kh__proto_name(KH__P_EXEC), "id",
                    r->exec_id, "code", r->code, r->len, "silent", r->silent, "store_history",
                    r->store_history, "allow_stdin", r->allow_stdin);
    if (msg == NULL) return KH_ENOMEM;
    rc = kh__wproc_send(wk->w, msg);
  }
  json_decref(msg);
  if (rc == 0) {
    wk->out_bytes = 0; /* a new cell: a new output bound */
    wk->out_cut = 0;
  }
  return rc;
}

static int worker_interrupt(kh_kernel_t *k) {
  worker_t *wk = k->backend;
  json_t *msg;
  if (wk->w == NULL || wk->w->exited || wk->phase != PH_READY || k->running == NULL) return 0;
  /* The worker turns this into SIGINT on its main thread while (and only while) the cell runs:
   * a bare signal could not tell this cell from the one before. */
  msg = json_pack("{s:s, s:s}", "t", kh__proto_name(KH__P_INTERRUPT), "id", k->running->exec_id);
  if (msg == NULL) return KH_ENOMEM;
  kh__wproc_send(wk->w, msg);
  json_decref(msg);
  /* Armed once per cell: repeated interrupts (kernel.c retries after each grace period) must
   * not push the deadline back. */
  if (strcmp(wk->grace_id, k->running->exec_id) != 0 || !uv_is_active((uv_handle_t *)&wk->grace)) {
    snprintf(wk->grace_id, sizeof(wk->grace_id), "%s", k->running->exec_id);
    uv_timer_start(&wk->grace, on_grace, k->m->opts.interrupt_grace_ms, 0);
  }
  return 0;
}

static int worker_input_reply(kh_kernel_t *k, const char *value, size_t len) {
  worker_t *wk = k->backend;
  json_t *msg;
  int rc;
  if (wk->w == NULL || wk->phase != PH_READY) return KH_EKERNELDEAD;
  msg = json_pack("{s:s, s:s%}", "t", kh__proto_name(KH__P_INPUT), "value", value, len);
  if (msg == NULL) return KH_EENCODING;
  rc = kh__wproc_send(wk->w, msg);
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
    kh__wproc_kill(wk->w);
    wk->w = NULL;
  }
  kh__refs_close(&wk->refs, (uv_handle_t *)&wk->grace);
}

static void worker_info(kh_kernel_t *k, json_t *info) {
  worker_t *wk = k->backend;
  if (wk == NULL) return;
  if (wk->w != NULL) json_object_set_new(info, "pid", json_integer(wk->w->pid));
  json_object_set_new(info, "pooled", json_boolean(wk->pooled));
  if (wk->origin != NULL) json_object_set_new(info, "origin", json_string(wk->origin));
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

/* An editor request: sent at once, whether a cell runs or not (the worker serves it on its
 * interact thread). */
static int worker_interact(kh_kernel_t *k, const char *id, const char *op, const char *content,
                           size_t len, uint64_t timeout_ms) {
  worker_t *wk = k->backend;
  json_t *msg, *c;
  int rc;
  if (wk->w == NULL || wk->phase != PH_READY) return KH_EKERNELDEAD;
  c = json_loadb(content, len, 0, NULL);
  msg = c ? json_pack("{s:s, s:s, s:s, s:O, s:I}", "t", kh__proto_name(KH__P_INTERACT), "id", id,
                      "op", op, "content", c, "timeout_ms", (json_int_t)timeout_ms)
          : NULL;
  json_decref(c);
  if (msg == NULL) return KH_ENOMEM;
  rc = kh__wproc_send(wk->w, msg);
  json_decref(msg);
  return rc;
}

/* Stops an editor request's work in the worker ("cancel"): the worker still answers it, and
 * that answer is dropped (interact.c no longer has the request). */
static void worker_interact_cancel(kh_kernel_t *k, const char *id) {
  worker_t *wk = k->backend;
  json_t *msg;
  if (wk == NULL || wk->w == NULL || wk->w->exited || wk->phase != PH_READY) return;
  msg = json_pack("{s:s, s:s}", "t", kh__proto_name(KH__P_CANCEL), "id", id);
  if (msg == NULL) return;
  kh__wproc_send(wk->w, msg);
  json_decref(msg);
}

/* --- host functions ----------------------------------------------------------------------- */

static void worker_expose(kh_kernel_t *k, const json_t *names) {
  worker_t *wk = k->backend;
  if (wk != NULL && !wk->stopping) send_expose(wk, names);
}

/* "result" for call `id` of the current process (a call of an earlier process was canceled when
 * it was replaced, so it never gets here), its binary values as binary frames after it. */
static int worker_hostcall_answer(kh_kernel_t *k, int64_t id, const json_t *value,
                                  const char *message, const kh_buffer_t *buffers,
                                  size_t nbuffers) {
  worker_t *wk = k->backend;
  json_t *msg;
  int rc;
  if (wk == NULL || wk->stopping || wk->w == NULL || wk->phase != PH_READY) return KH_EKERNELDEAD;
  if (nbuffers > KH__FRAME_BUFS_MAX) {
    message = "the host's answer has more binary values than a frame carries (64)";
    value = NULL;
  }
  msg = value != NULL ? json_pack("{s:s, s:I, s:O}", "t", kh__proto_name(KH__P_RESULT), "id",
                                  (json_int_t)id, "value", (json_t *)value)
                      : json_pack("{s:s, s:I, s:s}", "t", kh__proto_name(KH__P_RESULT), "id",
                                  (json_int_t)id, "error", message ? message : "");
  if (msg == NULL) return KH_ENOMEM;
  rc = kh__wproc_send_bufs(wk->w, msg, buffers, value != NULL ? nbuffers : 0);
  json_decref(msg);
  return rc;
}

/* The pool (worker-pool.c) is this backend's per-manager state. */
const kh__backend_t kh__worker_backend = {
    .name = "worker",
    .manager_open = kh__wpool_open,
    .manager_close = kh__wpool_close,
    .start = worker_start,
    .execute = worker_execute,
    .interrupt = worker_interrupt,
    .input_reply = worker_input_reply,
    .reset = worker_reset,
    .stop = worker_stop,
    .info = worker_info,
    .interact = worker_interact,
    .interact_cancel = worker_interact_cancel,
    .expose = worker_expose,
    .hostcall_answer = worker_hostcall_answer,
    .index = KH__BACKEND_WORKER,
};

/* kernel.c: a kernel's life on the loop thread: creation, the FIFO of execute requests, status
 * events, interrupts and timeouts, restart and destroy. Backends (in-process threads, worker
 * processes) run the Python and report back through the kh__kernel_on_* functions. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static void pump(kh_kernel_t *k);

const char *kh__kstate_name(kh__kstate_t s) {
  switch (s) {
    case KH__K_STARTING:
      return "starting";
    case KH__K_IDLE:
      return "idle";
    case KH__K_BUSY:
      return "busy";
    case KH__K_RESTARTING:
      return "restarting";
    case KH__K_DEAD:
      return "dead";
    case KH__K_CLOSING:
      return "closing";
  }
  return "unknown";
}

static const kh__backend_ops_t *backend_for(const kh__kernel_opts_t *o) {
  if (o->mode == KH__MODE_MAIN_THREAD)
    return o->host_thread ? &kh__inproc_host_ops : &kh__inproc_ops;
  return &kh__worker_ops;
}

/* --- events ------------------------------------------------------------------------------- */

void kh__kernel_on_event(kh_kernel_t *k, int type, const char *exec_id, const char *json,
                         size_t len) {
  kh__request_t *r = k->running;
  kh_event_t ev;
  const char *name = kh_event_type_name(type);
  if (name == NULL || type == KH_EVENT_ALL) return;
  if (exec_id == NULL) exec_id = "";
  if (r != NULL && r->cb != NULL && strcmp(r->exec_id, exec_id) == 0) {
    kh__strbuf_t *sb = &r->outputs;
    if (sb->len) kh__sb_append(sb, ",", 1);
    kh__sb_puts(sb, "{\"type\":\"");
    kh__sb_puts(sb, name);
    kh__sb_puts(sb, "\",\"data\":");
    kh__sb_append(sb, json, len);
    kh__sb_append(sb, "}", 1);
  }
  ev.type = (kh_event_type_t)type;
  ev.type_name = name;
  ev.kernel_id = k->id;
  ev.execution_id = exec_id;
  ev.json = json;
  ev.json_len = len;
  kh__bus_dispatch(k->m, &ev);
}

static void emit_status(kh_kernel_t *k, const char *state, const char *exec_id, const char *extra) {
  char buf[512];
  int n = snprintf(buf, sizeof(buf), "{\"execution_state\":\"%s\"%s%s}", state, extra ? "," : "",
                   extra ? extra : "");
  if (n < 0 || (size_t)n >= sizeof(buf)) return;
  kh__kernel_on_event(k, KH_EVENT_STATUS, exec_id, buf, (size_t)n);
}

/* --- completing requests ----------------------------------------------------------------- */

static void request_free(kh__request_t *r) {
  free(r->code);
  kh__sb_free(&r->outputs);
  free(r);
}

/* Completes r with an API failure (canceled, dead). r must be out of every list, or be the
 * running request, which stays as a zombie until the backend is done with it. */
static void request_fail(kh_kernel_t *k, kh__request_t *r, int status, const char *msg) {
  kh_reply_t rep;
  kh_execute_cb cb = r->cb;
  if (cb == NULL) return;
  r->cb = NULL;
  memset(&rep, 0, sizeof(rep));
  rep.kernel_id = k->id;
  rep.execution_id = r->exec_id;
  rep.errmsg = msg ? msg : kh_strerror(status);
  k->m->pending--;
  cb(k->m, &rep, status, r->data);
}

static void request_abort(kh_kernel_t *k, kh__request_t *r) {
  kh_reply_t rep;
  char json[128];
  kh_execute_cb cb = r->cb;
  r->cb = NULL;
  memset(&rep, 0, sizeof(rep));
  snprintf(json, sizeof(json), "{\"status\":\"aborted\",\"execution_count\":%d,\"outputs\":[]}",
           k->execution_count);
  rep.kernel_id = k->id;
  rep.execution_id = r->exec_id;
  rep.status = "aborted";
  rep.execution_count = k->execution_count;
  rep.json = json;
  rep.json_len = strlen(json);
  k->m->pending--;
  if (cb) cb(k->m, &rep, 0, r->data);
}

/* Takes the queue out of k, so callbacks that queue new requests do not disturb the walk. */
static void fail_queue(kh_kernel_t *k, int status, const char *msg) {
  kh__request_t *r = k->queue_head, *next;
  k->queue_head = k->queue_tail = NULL;
  for (; r; r = next) {
    next = r->next;
    request_fail(k, r, status, msg);
    request_free(r);
  }
}

/* --- timers ------------------------------------------------------------------------------- */

static void on_exec_timer(uv_timer_t *t) {
  kh_kernel_t *k = t->data;
  if (k->running == NULL) return;
  /* Over the time limit (or a restart/destroy waits): interrupt now, and again after each
   * grace period while the cell keeps running. */
  k->ops->interrupt(k);
  uv_timer_start(&k->exec_timer, on_exec_timer, k->m->opts.interrupt_grace_ms, 0);
}

static void on_idle_timer(uv_timer_t *t) {
  kh_kernel_t *k = t->data;
  if (k->state == KH__K_IDLE && k->running == NULL && k->queue_head == NULL) {
    /* Destroyed first, then reported: a listener of this "dead" event that tries to run a cell
     * gets KH_ECLOSED, never a kernel that came back. */
    if (kh_kernel_destroy(k->m, k->id, NULL, NULL) == 0)
      emit_status(k, "dead", "", "\"reason\":{\"message\":\"inactivityTimeout\"}");
  }
}

static void arm_idle(kh_kernel_t *k) {
  if (k->opts.inactivity_ms > 0 && k->state == KH__K_IDLE && k->queue_head == NULL)
    uv_timer_start(&k->idle_timer, on_idle_timer, k->opts.inactivity_ms, 0);
}

/* --- the request queue -------------------------------------------------------------------- */

static void pump(kh_kernel_t *k) {
  while (k->state == KH__K_IDLE && k->running == NULL && k->queue_head != NULL) {
    kh__request_t *r = k->queue_head;
    uint64_t limit = k->opts.max_execution_ms;
    k->queue_head = r->next;
    if (k->queue_head == NULL) k->queue_tail = NULL;
    r->next = NULL;
    k->running = r;
    k->state = KH__K_BUSY;
    uv_timer_stop(&k->idle_timer);
    emit_status(k, "busy", r->exec_id, NULL);
    if (k->running != r || k->state != KH__K_BUSY) return; /* a subscriber intervened */
    if (r->timeout_ms && (limit == 0 || r->timeout_ms < limit)) limit = r->timeout_ms;
    if (limit) uv_timer_start(&k->exec_timer, on_exec_timer, limit, 0);
    if (k->ops->execute(k, r) != 0) {
      /* The backend could not take it; report it as the cell's error, asynchronously. */
      static const char fail[] =
          "{\"status\":\"error\",\"execution_count\":0,\"error\":{"
          "\"ename\":\"KernelError\",\"evalue\":\"the kernel could not "
          "start the request\",\"traceback\":[]}}";
      kh__sink_post(k->sink, KH__MSG_REPLY, 0, 0, r->exec_id, fail, sizeof(fail) - 1);
    }
  }
}

static void do_reset(kh_kernel_t *k) {
  int rc;
  k->state = KH__K_RESTARTING;
  k->restart_pending = 0;
  rc = k->ops->reset(k);
  if (rc != 0) kh__kernel_on_reset(k, rc, kh_strerror(rc));
}

void kh__kernel_on_reply(kh_kernel_t *k, const char *exec_id, const char *json, size_t len) {
  kh__request_t *r = k->running;
  kh__request_t *to_abort = NULL;
  json_t *doc;
  const char *status = "error";
  int count = k->execution_count;
  kh__strbuf_t full = {0};
  kh_reply_t rep;
  kh_execute_cb cb;

  if (r == NULL || strcmp(r->exec_id, exec_id) != 0) return; /* stale */
  uv_timer_stop(&k->exec_timer);
  doc = json_loadb(json, len, 0, NULL);
  if (doc != NULL) {
    json_t *s = json_object_get(doc, "status");
    json_t *c = json_object_get(doc, "execution_count");
    if (json_is_string(s)) status = json_string_value(s);
    if (json_is_integer(c)) count = (int)json_integer_value(c);
  }
  if (strcmp(status, "ok") != 0 && strcmp(status, "error") != 0) status = "error";
  k->execution_count = count;

  cb = r->cb;
  if (cb != NULL) {
    if (k->state == KH__K_BUSY) k->state = KH__K_IDLE;
    emit_status(k, "idle", r->exec_id, NULL);
    if (strcmp(status, "error") == 0 && r->stop_on_error) {
      to_abort = k->queue_head;
      k->queue_head = k->queue_tail = NULL;
    }
    /* The reply is the runtime's object with the request's events appended as "outputs". */
    if (doc != NULL && len > 0 && json[len - 1] == '}') {
      kh__sb_append(&full, json, len - 1);
      kh__sb_puts(&full, len > 2 ? ",\"outputs\":[" : "\"outputs\":[");
    } else {
      char head[96];
      snprintf(head, sizeof(head), "{\"status\":\"%s\",\"execution_count\":%d,\"outputs\":[",
               status, count);
      kh__sb_puts(&full, head);
    }
    kh__sb_append(&full, r->outputs.buf ? r->outputs.buf : "", r->outputs.len);
    kh__sb_puts(&full, "]}");
    memset(&rep, 0, sizeof(rep));
    rep.kernel_id = k->id;
    rep.execution_id = r->exec_id;
    rep.status = status;
    rep.execution_count = count;
    rep.json = full.buf;
    rep.json_len = full.len;
    k->running = NULL;
    r->cb = NULL;
    k->m->pending--;
    if (full.oom) {
      rep.json = NULL;
      rep.errmsg = "out of memory building the reply";
      cb(k->m, &rep, KH_ENOMEM, r->data);
    } else {
      cb(k->m, &rep, 0, r->data);
    }
    kh__sb_free(&full);
  } else {
    /* A zombie: its caller was told already (restart or destroy canceled it). */
    k->running = NULL;
    if (k->state == KH__K_BUSY) k->state = KH__K_IDLE;
    if (k->state == KH__K_IDLE) emit_status(k, "idle", r->exec_id, NULL);
  }
  json_decref(doc);
  request_free(r);

  while (to_abort) {
    kh__request_t *next = to_abort->next;
    if (k->state == KH__K_CLOSING)
      request_fail(k, to_abort, KH_ECANCELED, NULL);
    else
      request_abort(k, to_abort);
    request_free(to_abort);
    to_abort = next;
  }
  /* The callbacks above may have re-entered the API (Node runs promise continuations inside
   * them): a new cell may be running and a restart may wait for it. Act only on what holds. */
  if (k->state == KH__K_CLOSING) return;
  if (k->restart_pending) {
    if (k->running == NULL) do_reset(k);
    return;
  }
  pump(k);
  arm_idle(k);
  kh__manager_update_ref(k->m);
}

/* --- creation ----------------------------------------------------------------------------- */

static void on_timer_closed(uv_handle_t *h) {
  kh_kernel_t *k = h->data;
  if (--k->handles_open == 0) {
    kh__kernel_opts_free(&k->opts);
    free(k);
  }
}

/* Unlinks k and frees it once its timers have closed. */
static void kernel_release(kh_kernel_t *k) {
  kh__done_t *w;
  kh_manager_t *m = k->m;
  if (k->sink != NULL) {
    kh__sink_close(k->sink);
    kh__sink_unref(k->sink);
    k->sink = NULL;
  }
  /* Gone from the manager before anyone hears of it: a destroy callback that executes on the
   * same id gets KH_ENOTFOUND. */
  kh__manager_unlink(m, k);
  uv_close((uv_handle_t *)&k->exec_timer, on_timer_closed);
  uv_close((uv_handle_t *)&k->idle_timer, on_timer_closed);
  while ((w = k->restart_waiters) != NULL) {
    k->restart_waiters = w->next;
    if (w->cb) w->cb(m, k->id, KH_ECANCELED, "kernel destroyed", w->data);
    free(w);
  }
  while ((w = k->destroy_waiters) != NULL) {
    k->destroy_waiters = w->next;
    if (w->cb) w->cb(m, k->id, 0, NULL, w->data);
    free(w);
  }
  kh__manager_kernel_gone(m);
}

int kh_kernel_create(kh_manager_t *m, const char *options_json, char *id_out, size_t id_out_size,
                     kh_kernel_create_cb cb, void *data) {
  kh_kernel_t *k, **tail;
  kh__kernel_opts_t opts;
  const kh__backend_ops_t *ops;
  int rc;

  if (m == NULL) return KH_EINVAL;
  m->errmsg[0] = '\0';
  if (m->closing) {
    kh__set_err(m->errmsg, "the manager is closed");
    return KH_ECLOSED;
  }
  if ((rc = kh__kernel_opts_parse(&opts, options_json, m->errmsg)) != 0) return rc;
  ops = backend_for(&opts);
  if (ops == NULL) {
    kh__set_err(m->errmsg, "mode \"%s\" is not available in this build", kh__mode_name(opts.mode));
    kh__kernel_opts_free(&opts);
    return KH_ENOTSUP;
  }
  if (opts.id[0] && kh__manager_find(m, opts.id) != NULL) {
    kh__set_err(m->errmsg, "kernel id \"%s\" is already in use", opts.id);
    kh__kernel_opts_free(&opts);
    return KH_EEXIST;
  }
  k = calloc(1, sizeof(*k));
  if (k == NULL) {
    kh__kernel_opts_free(&opts);
    return KH_ENOMEM;
  }
  k->m = m;
  k->opts = opts;
  if (opts.id[0])
    snprintf(k->id, sizeof(k->id), "%s", opts.id);
  else
    kh__uuid(k->id);
  k->serial = ++m->next_serial;
  k->created_ms = kh__now_ms();
  k->state = KH__K_STARTING;
  k->ops = ops;
  k->create_cb = cb;
  k->create_data = data;
  k->sink = kh__sink_new(&m->inbox, k->serial);
  if (k->sink == NULL) {
    kh__kernel_opts_free(&k->opts);
    free(k);
    return KH_ENOMEM;
  }
  uv_timer_init(m->loop, &k->exec_timer);
  uv_timer_init(m->loop, &k->idle_timer);
  k->exec_timer.data = k->idle_timer.data = k;
  uv_unref((uv_handle_t *)&k->exec_timer);
  uv_unref((uv_handle_t *)&k->idle_timer);
  k->handles_open = 2;
  for (tail = &m->kernels; *tail; tail = &(*tail)->next) {
  }
  *tail = k;
  m->pending++; /* the creation */
  kh__manager_update_ref(m);
  if ((rc = ops->start(k)) != 0) {
    m->pending--;
    k->create_cb = NULL;
    k->state = KH__K_CLOSING;
    if (!m->errmsg[0]) kh__set_err(m->errmsg, "starting the kernel failed: %s", kh_strerror(rc));
    kernel_release(k);
    return rc;
  }
  if (id_out != NULL && id_out_size > 0) snprintf(id_out, id_out_size, "%s", k->id);
  emit_status(k, "starting", "", NULL);
  return 0;
}

void kh__kernel_on_ready(kh_kernel_t *k, int status, const char *errmsg) {
  kh_kernel_create_cb cb = k->create_cb;
  void *data = k->create_data;
  kh_manager_t *m = k->m;
  char id[KH__ID_MAX];
  k->create_cb = NULL;
  memcpy(id, k->id, sizeof(id));
  if (k->state == KH__K_STARTING || k->state == KH__K_CLOSING) m->pending--;
  if (k->state == KH__K_CLOSING) {
    if (cb) cb(m, id, KH_ECANCELED, "kernel destroyed while starting", data);
    kh__manager_update_ref(m);
    return;
  }
  if (status != 0) {
    /* Never usable: report, then take it down. */
    k->state = KH__K_CLOSING;
    m->destroying++;
    kh__manager_update_ref(m);
    if (cb) cb(m, id, status, errmsg && *errmsg ? errmsg : kh_strerror(status), data);
    k->ops->stop(k);
    return;
  }
  if (k->state == KH__K_STARTING) k->state = KH__K_IDLE;
  emit_status(k, "idle", "", NULL);
  if (cb) cb(m, id, 0, NULL, data);
  if (k->state == KH__K_IDLE) {
    pump(k);
    arm_idle(k);
  }
  kh__manager_update_ref(m);
}

/* --- execute, interrupt, input ------------------------------------------------------------ */

static kh_kernel_t *lookup(kh_manager_t *m, const char *kernel_id, int *rc) {
  kh_kernel_t *k;
  if (m == NULL || kernel_id == NULL) {
    *rc = KH_EINVAL;
    return NULL;
  }
  m->errmsg[0] = '\0';
  k = kh__manager_find(m, kernel_id);
  if (k == NULL) {
    kh__set_err(m->errmsg, "no kernel with id \"%s\"", kernel_id);
    *rc = KH_ENOTFOUND;
    return NULL;
  }
  if (k->state == KH__K_CLOSING) {
    kh__set_err(m->errmsg, "kernel \"%s\" is being destroyed", kernel_id);
    *rc = KH_ECLOSED;
    return NULL;
  }
  *rc = 0;
  return k;
}

int kh_kernel_exists(kh_manager_t *m, const char *kernel_id, const char **mode_out) {
  kh_kernel_t *k;
  if (m == NULL || kernel_id == NULL) return 0;
  k = kh__manager_find(m, kernel_id);
  if (k == NULL || k->state == KH__K_CLOSING) return 0;
  if (mode_out) *mode_out = kh__mode_name(k->opts.mode);
  return 1;
}

int kh_kernel_execute(kh_manager_t *m, const char *kernel_id, const char *code, size_t len,
                      const kh_execute_options_t *opts, char *exec_id_out, size_t exec_id_out_size,
                      kh_execute_cb cb, void *data) {
  kh_kernel_t *k;
  kh__request_t *r;
  int rc;
  if (cb == NULL) return KH_EINVAL;
  if ((k = lookup(m, kernel_id, &rc)) == NULL) return rc;
  if (k->state == KH__K_DEAD) {
    kh__set_err(m->errmsg, "kernel \"%s\" is dead: %s", kernel_id, k->dead_reason);
    return KH_EKERNELDEAD;
  }
  if ((rc = kh__check_code(code, len, m->opts.max_code_bytes, m->errmsg)) != 0) return rc;
  if (opts != NULL && opts->timeout_ms > 0 && k->opts.host_thread) {
    kh__set_err(m->errmsg,
                "execute option 'timeout' needs a kernel thread: kernel \"%s\" runs its "
                "cells on the host thread (option 'thread' = \"host\")",
                kernel_id);
    return KH_ENOTSUP;
  }
  r = calloc(1, sizeof(*r));
  if (r == NULL || (r->code = kh__memdup(code, len)) == NULL) {
    free(r);
    return KH_ENOMEM;
  }
  r->len = len;
  kh__uuid(r->exec_id);
  r->silent = opts ? opts->silent != 0 : 0;
  r->store_history = (opts == NULL || opts->store_history < 0) ? 1 : opts->store_history != 0;
  r->stop_on_error = (opts == NULL || opts->stop_on_error < 0) ? 1 : opts->stop_on_error != 0;
  if (r->silent) r->store_history = 0;
  r->timeout_ms = opts ? opts->timeout_ms : 0;
  r->cb = cb;
  r->data = data;
  if (k->queue_tail)
    k->queue_tail->next = r;
  else
    k->queue_head = r;
  k->queue_tail = r;
  m->pending++;
  kh__manager_update_ref(m);
  if (exec_id_out != NULL && exec_id_out_size > 0)
    snprintf(exec_id_out, exec_id_out_size, "%s", r->exec_id);
  pump(k);
  return 0;
}

int kh_kernel_interrupt(kh_manager_t *m, const char *kernel_id) {
  kh_kernel_t *k;
  int rc;
  if ((k = lookup(m, kernel_id, &rc)) == NULL) return rc;
  if (k->state == KH__K_DEAD) return KH_EKERNELDEAD;
  if (k->running == NULL) return 0; /* nothing runs: as in Jupyter, a no-op */
  return k->ops->interrupt(k);
}

int kh_kernel_input_reply(kh_manager_t *m, const char *kernel_id, const char *value) {
  kh_kernel_t *k;
  int rc;
  if (value == NULL) return KH_EINVAL;
  if ((k = lookup(m, kernel_id, &rc)) == NULL) return rc;
  if (k->running == NULL) return KH_EINVAL;
  return k->ops->input_reply(k, value);
}

/* --- restart, destroy, death -------------------------------------------------------------- */

static int add_waiter(kh__done_t **list, kh_kernel_done_cb cb, void *data) {
  kh__done_t *w = calloc(1, sizeof(*w)), **tail;
  if (w == NULL) return KH_ENOMEM;
  w->cb = cb;
  w->data = data;
  for (tail = list; *tail; tail = &(*tail)->next) {
  }
  *tail = w;
  return 0;
}

int kh_kernel_restart(kh_manager_t *m, const char *kernel_id, kh_kernel_done_cb cb, void *data) {
  kh_kernel_t *k;
  int rc;
  if ((k = lookup(m, kernel_id, &rc)) == NULL) return rc;
  if (k->state == KH__K_STARTING) {
    kh__set_err(m->errmsg, "kernel \"%s\" is still starting", kernel_id);
    return KH_EBUSY;
  }
  if ((rc = add_waiter(&k->restart_waiters, cb, data)) != 0) return rc;
  m->pending++;
  kh__manager_update_ref(m);
  if (k->state == KH__K_RESTARTING || k->restart_pending) return 0; /* joins the restart */
  uv_timer_stop(&k->idle_timer);
  emit_status(k, "restarting", "", NULL);
  fail_queue(k, KH_ECANCELED, "canceled by restart");
  if (k->running != NULL) {
    request_fail(k, k->running, KH_ECANCELED, "canceled by restart");
    k->restart_pending = 1;
    k->state = KH__K_RESTARTING;
    k->ops->interrupt(k);
    uv_timer_start(&k->exec_timer, on_exec_timer, m->opts.interrupt_grace_ms, 0);
    return 0;
  }
  do_reset(k);
  return 0;
}

void kh__kernel_on_reset(kh_kernel_t *k, int status, const char *errmsg) {
  kh__done_t *w;
  kh_manager_t *m = k->m;
  if (k->state == KH__K_CLOSING) return;
  if (status == 0) {
    k->state = KH__K_IDLE;
    k->execution_count = 0;
    emit_status(k, "starting", "", NULL);
    emit_status(k, "idle", "", NULL);
  } else {
    char extra[300];
    k->state = KH__K_DEAD;
    snprintf(k->dead_reason, sizeof(k->dead_reason), "restart failed: %s",
             errmsg ? errmsg : kh_strerror(status));
    snprintf(extra, sizeof(extra), "\"reason\":{\"message\":\"restart failed\"}");
    emit_status(k, "dead", "", extra);
  }
  while (k->state != KH__K_CLOSING && (w = k->restart_waiters) != NULL) {
    k->restart_waiters = w->next;
    m->pending--;
    if (w->cb) w->cb(m, k->id, status, status ? errmsg : NULL, w->data);
    free(w);
  }
  if (k->state == KH__K_IDLE) {
    pump(k);
    arm_idle(k);
  }
  kh__manager_update_ref(m);
}

int kh_kernel_destroy(kh_manager_t *m, const char *kernel_id, kh_kernel_done_cb cb, void *data) {
  kh_kernel_t *k;
  kh__done_t *w;
  int rc;
  if ((k = lookup(m, kernel_id, &rc)) == NULL) return rc;
  if ((rc = add_waiter(&k->destroy_waiters, cb, data)) != 0) return rc;
  k->state = KH__K_CLOSING;
  m->destroying++;
  uv_timer_stop(&k->idle_timer);
  uv_timer_stop(&k->exec_timer);
  /* Pending restarts will not complete now. */
  while ((w = k->restart_waiters) != NULL) {
    k->restart_waiters = w->next;
    m->pending--;
    if (w->cb) w->cb(m, k->id, KH_ECANCELED, "kernel destroyed", w->data);
    free(w);
  }
  kh__manager_update_ref(m);
  fail_queue(k, KH_ECANCELED, "canceled: kernel destroyed");
  if (k->running != NULL) {
    request_fail(k, k->running, KH_ECANCELED, "canceled: kernel destroyed");
    k->ops->interrupt(k);
    /* A cell that swallows KeyboardInterrupt gets another after each grace period. */
    uv_timer_start(&k->exec_timer, on_exec_timer, m->opts.interrupt_grace_ms, 0);
  }
  k->ops->stop(k);
  return 0;
}

void kh__kernel_on_stopped(kh_kernel_t *k) {
  kh_manager_t *m = k->m;
  if (k->running != NULL) {
    request_fail(k, k->running, KH_ECANCELED, "canceled: kernel destroyed");
    request_free(k->running);
    k->running = NULL;
  }
  fail_queue(k, KH_ECANCELED, "canceled: kernel destroyed");
  if (k->create_cb) {
    kh_kernel_create_cb cb = k->create_cb;
    k->create_cb = NULL;
    m->pending--;
    cb(m, k->id, KH_ECANCELED, "kernel destroyed while starting", k->create_data);
  }
  m->destroying--;
  kernel_release(k);
}

void kh__kernel_on_dead(kh_kernel_t *k, const char *reason_json) {
  char extra[300];
  if (k->state == KH__K_CLOSING) return;
  k->state = KH__K_DEAD;
  uv_timer_stop(&k->exec_timer);
  uv_timer_stop(&k->idle_timer);
  snprintf(k->dead_reason, sizeof(k->dead_reason), "%s", reason_json ? reason_json : "{}");
  snprintf(extra, sizeof(extra), "\"reason\":%s", reason_json ? reason_json : "{}");
  emit_status(k, "dead", k->running ? k->running->exec_id : "", extra);
  if (k->running != NULL) {
    kh__request_t *r = k->running;
    k->running = NULL;
    request_fail(k, r, KH_EKERNELDEAD, "the kernel died while running this request");
    request_free(r);
  }
  fail_queue(k, KH_EKERNELDEAD, "the kernel died before running this request");
  kh__manager_update_ref(k->m);
}

/* The backend replaces the kernel's process on its own (an interrupt that did not land, or
 * autoRestart after a death): requests in flight fail with KH_EKERNELDEAD, new ones queue
 * until kh__kernel_on_reset() reports the fresh process. */
void kh__kernel_on_restarting(kh_kernel_t *k, const char *reason_json) {
  char extra[300];
  if (k->state == KH__K_CLOSING) return;
  k->state = KH__K_RESTARTING;
  k->restart_pending = 0; /* the backend's restart is the one under way */
  uv_timer_stop(&k->exec_timer);
  uv_timer_stop(&k->idle_timer);
  snprintf(extra, sizeof(extra), "\"reason\":%s", reason_json ? reason_json : "{}");
  emit_status(k, "restarting", k->running ? k->running->exec_id : "", extra);
  if (k->running != NULL) {
    kh__request_t *r = k->running;
    k->running = NULL;
    request_fail(k, r, KH_EKERNELDEAD, "the kernel was restarted while running this request");
    request_free(r);
  }
  fail_queue(k, KH_EKERNELDEAD, "the kernel was restarted before running this request");
  kh__manager_update_ref(k->m);
}

void kh__kernel_dispatch_msg(kh_kernel_t *k, kh__msg_t *msg) {
  switch (msg->kind) {
    case KH__MSG_EVENT:
      kh__kernel_on_event(k, msg->type, msg->exec_id, msg->data ? msg->data : "{}", msg->len);
      break;
    case KH__MSG_READY:
      kh__kernel_on_ready(k, msg->status, msg->data);
      break;
    case KH__MSG_REPLY:
      kh__kernel_on_reply(k, msg->exec_id, msg->data ? msg->data : "{}", msg->len);
      break;
    case KH__MSG_RESET:
      kh__kernel_on_reset(k, msg->status, msg->data);
      break;
    case KH__MSG_EXITED:
      kh__inproc_exited(k);
      break;
  }
}

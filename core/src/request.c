/* request.c: a kernel's execute requests on the loop thread: the FIFO queue, handing the next
 * request to the backend, the events of the running request, building its reply, aborts,
 * failures and cancellations. The lifecycle that moves the kernel between states is kernel.c's.
 *
 * A request is in exactly one place: the queue (accepted, not yet given to the backend),
 * k->running (given to the backend, no reply yet), or owned by its queued completion. A
 * running request whose caller was already answered (a restart or destroy canceled it) stays
 * in k->running as a "zombie" with cb == NULL until the backend's reply or stop releases it:
 * the backend still works on it, and its late events must not be mistaken for the next
 * request's. Every completion is queued through delivery.c, never called from here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* --- events ------------------------------------------------------------------------------- */

/* Appends an event to the running request's outputs when it is that request's; its binary
 * values are shared with the reply (a reference, not a copy), their paths moved under
 * "/outputs/N/data". */
static void record_output(kh_kernel_t *k, const char *name, const char *exec_id, const char *json,
                          size_t len, const kh__bufs_t *bufs) {
  kh__request_t *r = k->running;
  kh__strbuf_t *sb;
  /* A comm message has no reply to hold its events: its subscribers have seen them. */
  if (r == NULL || r->cb == NULL || r->comm_type != NULL || strcmp(r->exec_id, exec_id) != 0)
    return;
  if (bufs != NULL && bufs->n > 0) {
    char prefix[48];
    size_t i;
    snprintf(prefix, sizeof(prefix), "/outputs/%zu/data", r->noutputs);
    for (i = 0; i < bufs->n; i++)
      if (kh__bufs_add(&r->output_bufs, prefix, bufs->v[i].path, bufs->v[i].blob) != 0)
        r->outputs.oom = 1;
  }
  r->noutputs++;
  sb = &r->outputs;
  if (sb->len) kh__sb_append(sb, ",", 1);
  kh__sb_puts(sb, "{\"type\":\"");
  kh__sb_puts(sb, name);
  kh__sb_puts(sb, "\",\"data\":");
  kh__sb_append(sb, json, len);
  kh__sb_append(sb, "}", 1);
}

/* direct: the caller is the inbox drain running this very event (a kernel thread posted it),
 * so it can reach subscribers at once and still be in order. */
static void kernel_event(kh_kernel_t *k, int type, const char *exec_id, const char *json,
                         size_t len, kh__bufs_t *bufs, int direct) {
  kh_manager_t *m = k->m;
  const char *name = kh_event_type_name(type);
  if (name == NULL || type == KH_EVENT_ALL) {
    kh__bufs_free(bufs);
    return;
  }
  if (exec_id == NULL) exec_id = "";
  if (type == KH_EVENT_COMM_OPEN || type == KH_EVENT_COMM_CLOSE) kh__comm_event(k, type, json, len);
  record_output(k, name, exec_id, json, len, bufs);
  /* From a loop callback (a worker's pipe) an event may skip the queue only when nothing
   * that happened before it is still queued there. */
  if (direct || kh__inbox_empty(m)) {
    kh_event_t ev;
    ev.type = (kh_event_type_t)type;
    ev.type_name = name;
    ev.kernel_id = k->id;
    ev.execution_id = exec_id;
    ev.json = json;
    ev.json_len = len;
    ev.buffers = kh__bufs_view(bufs, &ev.nbuffers);
    if (ev.buffers == NULL && bufs != NULL && bufs->n > 0) {
      /* Out of memory for the views: the event cannot be shown whole, so it is not shown. */
    } else {
      kh__bus_dispatch(m, &ev);
    }
    free((void *)ev.buffers);
  } else {
    kh__deliver_event(m, k->id, type, exec_id, json, len, bufs);
  }
  kh__bufs_free(bufs);
}

void kh__kernel_on_event(kh_kernel_t *k, int type, const char *exec_id, const char *json,
                         size_t len, kh__bufs_t *bufs) {
  kernel_event(k, type, exec_id, json, len, bufs, 0);
}

/* Status events come from the core itself, often inside an API call: always queued. */
void kh__kernel_emit_status(kh_kernel_t *k, const char *state, const char *exec_id,
                            const char *extra) {
  char buf[512];
  int n = snprintf(buf, sizeof(buf), "{\"execution_state\":\"%s\"%s%s}", state, extra ? "," : "",
                   extra ? extra : "");
  if (n < 0 || (size_t)n >= sizeof(buf)) return;
  if (exec_id == NULL) exec_id = "";
  record_output(k, "status", exec_id, buf, (size_t)n, NULL);
  kh__deliver_event(k->m, k->id, KH_EVENT_STATUS, exec_id, buf, (size_t)n, NULL);
}

/* --- completing requests ------------------------------------------------------------------ */

void kh__request_free(kh__request_t *r) {
  free(r->code);
  kh__sb_free(&r->outputs);
  kh__bufs_free(&r->output_bufs);
  kh__bufs_free(&r->comm_bufs);
  free(r);
}

/* Completes r with an API failure (canceled, dead): the caller is answered now (queued), and
 * r itself is freed by whoever holds it (the queue walker, or the reply/stop of a zombie). */
void kh__request_fail(kh_kernel_t *k, kh__request_t *r, int status, const char *msg) {
  kh_reply_t rep;
  if (r->cb == NULL) return; /* answered already */
  memset(&rep, 0, sizeof(rep));
  rep.kernel_id = k->id;
  rep.execution_id = r->exec_id;
  rep.errmsg = msg ? msg : kh_strerror(status);
  kh__deliver_reply(k->m, r->cb, r->data, &rep, status, NULL, NULL);
  r->cb = NULL;
}

/* A request behind a failed one with stop_on_error: it never ran, so it has no events. */
static void request_abort(kh_kernel_t *k, kh__request_t *r) {
  kh_reply_t rep;
  char json[128];
  memset(&rep, 0, sizeof(rep));
  snprintf(json, sizeof(json), "{\"status\":\"aborted\",\"execution_count\":%d,\"outputs\":[]}",
           k->execution_count);
  rep.kernel_id = k->id;
  rep.execution_id = r->exec_id;
  rep.status = "aborted";
  rep.execution_count = k->execution_count;
  rep.json = json;
  rep.json_len = strlen(json);
  kh__deliver_reply(k->m, r->cb, r->data, &rep, 0, NULL, NULL);
  r->cb = NULL;
}

/* The queue is taken out of k first: nothing here calls out, but the invariant "a request is
 * in exactly one place" then holds at every step. */
void kh__request_fail_queue(kh_kernel_t *k, int status, const char *msg) {
  kh__request_t *r = k->queue_head, *next;
  k->queue_head = k->queue_tail = NULL;
  for (; r; r = next) {
    next = r->next;
    kh__request_fail(k, r, status, msg);
    kh__request_free(r);
  }
}

/* --- the queue ---------------------------------------------------------------------------- */

/* Hands the next request to the backend. The time limit is the smaller of the kernel's
 * maxExecutionTime and the request's own timeout, armed here rather than by the backend so that
 * every backend interrupts the same way; the busy status is queued before the backend sees the
 * request, so it precedes every event the cell can produce. */
void kh__kernel_pump(kh_kernel_t *k) {
  /* The loop's wake-up for the busy status is sent after the hand-off: the eventfd write then
   * overlaps the kernel thread's work instead of delaying its start (~2 us of 1+1). */
  kh__inbox_hold(k->m);
  while (k->state == KH__K_IDLE && k->running == NULL && k->queue_head != NULL) {
    kh__request_t *r = k->queue_head;
    uint64_t limit = k->opts.max_execution_ms;
    k->queue_head = r->next;
    if (k->queue_head == NULL) k->queue_tail = NULL;
    r->next = NULL;
    k->running = r;
    k->state = KH__K_BUSY;
    uv_timer_stop(&k->idle_timer);
    kh__kernel_emit_status(k, "busy", r->exec_id, NULL);
    if (k->m->jupyter != NULL) k->m->jupyter->request_started(k, r->exec_id);
    if (r->timeout_ms && (limit == 0 || r->timeout_ms < limit)) limit = r->timeout_ms;
    if (limit) kh__kernel_arm_exec_timer(k, limit);
    if (r->comm_type == NULL) kh__history_cell_started(k, r); /* before the backend takes code */
    if (k->ops->execute(k, r) != 0) {
      /* The backend could not take it: report it as the cell's error, from the loop. */
      static const char fail[] =
          "{\"status\":\"error\",\"execution_count\":0,\"error\":{"
          "\"ename\":\"KernelError\",\"evalue\":\"the kernel could not "
          "start the request\",\"traceback\":[]}}";
      kh__sink_post(k->sink, KH__MSG_REPLY, 0, 0, r->exec_id, fail, sizeof(fail) - 1);
    }
  }
  kh__inbox_release(k->m);
}

/* After a failed cell with stop_on_error: the cells queued behind it are aborted; comm
 * messages stay queued, in order (ipykernel aborts only execute requests: a widget's state
 * must not be lost to an unrelated error). */
static void abort_queue(kh_kernel_t *k) {
  kh__request_t *q = k->queue_head, *next;
  k->queue_head = k->queue_tail = NULL;
  for (; q; q = next) {
    next = q->next;
    if (q->comm_type != NULL) {
      q->next = NULL;
      if (k->queue_tail)
        k->queue_tail->next = q;
      else
        k->queue_head = q;
      k->queue_tail = q;
      continue;
    }
    request_abort(k, q);
    kh__request_free(q);
  }
}

/* The end of a comm message (comm.c): its idle status, and its internal completion, which
 * releases its count in m->pending. The runtime's reply says nothing a host needs (a handler's
 * exception was reported as stderr output), and the counter and history are left alone. */
static void comm_reply(kh_kernel_t *k, kh__request_t *r) {
  if (k->state == KH__K_BUSY) k->state = KH__K_IDLE;
  if (r->cb != NULL || k->state == KH__K_IDLE) kh__kernel_emit_status(k, "idle", r->exec_id, NULL);
  if (r->cb != NULL) {
    kh_reply_t rep;
    memset(&rep, 0, sizeof(rep));
    rep.kernel_id = k->id;
    rep.execution_id = r->exec_id;
    rep.status = "ok";
    kh__deliver_reply(k->m, r->cb, r->data, &rep, 0, NULL, NULL);
    r->cb = NULL;
  }
  k->running = NULL;
  kh__request_free(r);
  kh__kernel_settle(k);
}

/* The reply is the runtime's object with the request's events appended as "outputs". */
static void build_reply(kh__strbuf_t *full, const char *json, size_t len, int parsed,
                        const char *status, int count, const kh__request_t *r) {
  if (parsed && len > 0 && json[len - 1] == '}') {
    kh__sb_append(full, json, len - 1);
    kh__sb_puts(full, len > 2 ? ",\"outputs\":[" : "\"outputs\":[");
  } else {
    char head[96];
    snprintf(head, sizeof(head), "{\"status\":\"%s\",\"execution_count\":%d,\"outputs\":[", status,
             count);
    kh__sb_puts(full, head);
  }
  kh__sb_append(full, r->outputs.buf ? r->outputs.buf : "", r->outputs.len);
  kh__sb_puts(full, "]}");
  if (r->outputs.oom) full->oom = 1;
}

/* The backend's reply for the running request. The runtime's JSON is trusted for its shape
 * only after parsing (a worker's frames are hostile by assumption): status is "ok" or "error"
 * and nothing else, the counter comes from the reply when it is an integer. */
void kh__kernel_on_reply(kh_kernel_t *k, const char *exec_id, const char *json, size_t len,
                         kh__bufs_t *bufs) {
  kh__request_t *r = k->running;
  json_t *doc;
  const char *status = "error";
  int count = k->execution_count;

  if (r == NULL || strcmp(r->exec_id, exec_id) != 0) { /* stale */
    kh__bufs_free(bufs);
    return;
  }
  uv_timer_stop(&k->exec_timer);
  if (r->comm_type != NULL) {
    kh__bufs_free(bufs);
    comm_reply(k, r);
    return;
  }
  doc = json_loadb(json, len, 0, NULL);
  if (doc != NULL) {
    json_t *s = json_object_get(doc, "status");
    json_t *c = json_object_get(doc, "execution_count");
    if (json_is_string(s)) status = json_string_value(s);
    if (json_is_integer(c)) count = (int)json_integer_value(c);
  }
  if (strcmp(status, "ok") != 0 && strcmp(status, "error") != 0) status = "error";
  if (r->cb != NULL) {
    /* History keeps the execute_result's text/plain beside the input (history_request's
     * output: true). */
    json_t *plain =
        json_object_get(json_object_get(json_object_get(doc, "result"), "data"), "text/plain");
    kh__history_cell_ended(k, k->execution_count, count,
                           json_is_string(plain) ? json_string_value(plain) : NULL);
  }
  k->execution_count = count;
  if (k->state == KH__K_BUSY) k->state = KH__K_IDLE;

  if (r->cb != NULL) {
    kh__strbuf_t full = {0};
    kh_reply_t rep;
    /* idle belongs to the request (it is in its outputs) and reaches subscribers before the
     * reply reaches its callback, as Jupyter's iopub idle precedes nothing of the next cell. */
    kh__kernel_emit_status(k, "idle", r->exec_id, NULL);
    build_reply(&full, json, len, doc != NULL, status, count, r);
    memset(&rep, 0, sizeof(rep));
    rep.kernel_id = k->id;
    rep.execution_id = r->exec_id;
    rep.status = status;
    rep.execution_count = count;
    rep.json = full.buf;
    rep.json_len = full.len;
    if (full.oom) {
      rep.json = NULL;
      rep.status = NULL;
      rep.errmsg = "out of memory building the reply";
      kh__deliver_reply(k->m, r->cb, r->data, &rep, KH_ENOMEM, NULL, NULL);
      kh__sb_free(&full);
    } else {
      /* The runtime's own binary values (its "result") keep their paths; the outputs' follow. */
      kh__bufs_t all = {0};
      size_t i;
      int oom = 0;
      if (bufs != NULL) kh__bufs_move(&all, bufs);
      for (i = 0; i < r->output_bufs.n; i++)
        if (kh__bufs_add(&all, NULL, r->output_bufs.v[i].path, r->output_bufs.v[i].blob) != 0)
          oom = 1;
      if (oom) {
        kh__bufs_free(&all);
        rep.json = NULL;
        rep.status = NULL;
        rep.errmsg = "out of memory building the reply";
        kh__deliver_reply(k->m, r->cb, r->data, &rep, KH_ENOMEM, NULL, NULL);
        kh__sb_free(&full);
      } else {
        kh__deliver_reply(k->m, r->cb, r->data, &rep, 0, kh__sb_take(&full), &all);
      }
    }
    r->cb = NULL;
    if (strcmp(status, "error") == 0 && r->stop_on_error) abort_queue(k);
  } else if (k->state == KH__K_IDLE) {
    /* A zombie (restart or destroy answered its caller): the kernel is free again. */
    kh__kernel_emit_status(k, "idle", r->exec_id, NULL);
  }
  k->running = NULL;
  json_decref(doc);
  kh__bufs_free(bufs);
  kh__request_free(r);
  kh__kernel_settle(k);
}

/* The running request's reply can no longer come (a remote kernel's channel dropped with it):
 * its caller gets status, and the kernel is free for the next one. */
void kh__kernel_on_lost(kh_kernel_t *k, const char *exec_id, int status, const char *msg) {
  kh__request_t *r = k->running;
  if (r == NULL || strcmp(r->exec_id, exec_id) != 0) return;
  uv_timer_stop(&k->exec_timer);
  kh__request_fail(k, r, status, msg);
  if (k->state == KH__K_BUSY) k->state = KH__K_IDLE;
  kh__kernel_emit_status(k, "idle", r->exec_id, NULL);
  k->running = NULL;
  kh__request_free(r);
  kh__kernel_settle(k);
}

/* --- the API ------------------------------------------------------------------------------ */

kh_kernel_t *kh__kernel_lookup(kh_manager_t *m, const char *kernel_id, int *rc) {
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

void kh_execute_options_init(kh_execute_options_t *opts) {
  if (opts == NULL) return;
  memset(opts, 0, sizeof(*opts));
  opts->store_history = 1;
  opts->stop_on_error = 1;
  opts->allow_stdin = 1;
}

/* Everything that can be refused is refused before the request exists, so a failed call has
 * no side effect: no id handed out, no event, no callback (STYLE.md's rule for callbacks). */
int kh_kernel_execute(kh_manager_t *m, const char *kernel_id, const char *code, size_t len,
                      const kh_execute_options_t *opts, char *exec_id_out, size_t exec_id_out_size,
                      kh_execute_cb cb, void *data) {
  kh_kernel_t *k;
  kh__request_t *r;
  int rc;
  if (cb == NULL) return KH_EINVAL;
  if ((k = kh__kernel_lookup(m, kernel_id, &rc)) == NULL) return rc;
  if (k->state == KH__K_DEAD) {
    kh__set_err(m->errmsg, "kernel \"%s\" is dead: %s", kernel_id, k->dead_reason);
    return KH_EKERNELDEAD;
  }
  if (kh__hostcall_busy(k)) return KH_EBUSY;
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
  r->allow_stdin = (opts == NULL || opts->allow_stdin < 0) ? 1 : opts->allow_stdin != 0;
  /* Jupyter's rule: a silent cell never touches history (nor the counter, nor `_`). */
  if (r->silent) r->store_history = 0;
  r->timeout_ms = opts ? opts->timeout_ms : 0;
  r->cb = cb;
  r->data = data;
  if (exec_id_out != NULL && exec_id_out_size > 0)
    snprintf(exec_id_out, exec_id_out_size, "%s", r->exec_id);
  kh__kernel_enqueue(k, r);
  return 0;
}

void kh__kernel_enqueue(kh_kernel_t *k, kh__request_t *r) {
  kh_manager_t *m = k->m;
  if (k->queue_tail)
    k->queue_tail->next = r;
  else
    k->queue_head = r;
  k->queue_tail = r;
  m->pending++;
  kh__manager_update_ref(m);
  kh__kernel_pump(k);
}

int kh_kernel_interrupt(kh_manager_t *m, const char *kernel_id) {
  kh_kernel_t *k;
  int rc;
  if ((k = kh__kernel_lookup(m, kernel_id, &rc)) == NULL) return rc;
  if (k->state == KH__K_DEAD) return KH_EKERNELDEAD;
  /* An interrupt stops everything the kernel is doing for its host: the editor requests in
   * flight too (a console's Ctrl-C must not leave a completion stuck in jedi until its
   * timeout). They fail with KH_ECANCELED, as restart and destroy cancel them. */
  kh__interact_fail_all(k, KH_ECANCELED, "canceled by an interrupt");
  /* The running cell's host call, if it waits for one: its answer is dropped from now on. */
  kh__hostcall_cancel_cell(k);
  if (k->running == NULL) return 0; /* no cell runs: as in Jupyter, a no-op for cells */
  return k->ops->interrupt(k);
}

int kh_kernel_input_reply(kh_manager_t *m, const char *kernel_id, const char *value, size_t len) {
  kh_kernel_t *k;
  int rc;
  if (value == NULL) return KH_EINVAL;
  if ((k = kh__kernel_lookup(m, kernel_id, &rc)) == NULL) return rc;
  if (k->running == NULL) {
    kh__set_err(m->errmsg, "kernel \"%s\" is not running a cell that waits for input", kernel_id);
    return KH_EINVAL;
  }
  /* Checked here, for every backend: a Python str is Unicode (and a worker's frame could not
   * carry the bytes), so a reply that is not UTF-8 is refused, never dropped on the way. */
  if (!kh__utf8_valid(value, len)) {
    kh__set_err(m->errmsg, "the input reply is not valid UTF-8");
    return KH_EENCODING;
  }
  return k->ops->input_reply(k, value, len);
}

/* A message a backend posted through the kernel's sink (a kernel thread, or the loop itself
 * for news that must wait for the queue), run from the inbox's drain. */
void kh__kernel_dispatch_msg(kh_kernel_t *k, kh__msg_t *msg) {
  switch (msg->kind) {
    case KH__MSG_EVENT:
      kernel_event(k, msg->type, msg->exec_id, msg->data ? msg->data : "{}",
                   msg->data ? msg->len : 2, &msg->bufs, 1);
      break;
    case KH__MSG_READY:
      kh__kernel_on_ready(k, msg->status, msg->data);
      break;
    case KH__MSG_REPLY:
      kh__kernel_on_reply(k, msg->exec_id, msg->data ? msg->data : "{}", msg->data ? msg->len : 2,
                          &msg->bufs);
      break;
    case KH__MSG_RESET:
      kh__kernel_on_reset(k, msg->status, msg->data);
      break;
    case KH__MSG_KCALL:
      msg->kcall(k, msg->arg);
      break;
    case KH__MSG_ANSWER:
      kh__kernel_on_answer(k, msg->exec_id, msg->status, msg->data ? msg->data : "",
                           msg->data ? msg->len : 0);
      break;
  }
}

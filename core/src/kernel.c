/* kernel.c: a kernel's lifecycle on the loop thread: creation, readiness, restart, death,
 * destroy, the time limits and the inactivity timer. The request queue is request.c's; the
 * Python runs in a backend (backend.c picks it) that reports back through kh__kernel_on_*().
 *
 * States and what moves them (k->state; "q" is the request queue, "run" k->running):
 *
 *   create ──> STARTING ──on_ready(ok)──> IDLE <──────on_reply────── BUSY
 *                 │                        │ ──pump (q not empty)──>  │
 *                 │ on_ready(fail)         │ restart()                │ restart(): run is
 *                 v                        v                          │ canceled, interrupted;
 *              CLOSING               RESTARTING <─────────────────────┘ restart_pending until
 *                 ^                   │   ^   │                         its reply (or the
 *                 │         on_reset  │   │   │ on_reset(fail)          backend's own restart)
 *                 │         (ok)->IDLE│   │   v
 *                 │                       │  DEAD <──on_dead── IDLE, BUSY (process died)
 *                 │                       └──── on_restarting (autoRestart, interrupt timeout)
 *                 └──── destroy() from every state; on_stopped() then releases the kernel
 *
 * on_lost (a remote kernel's reply that can no longer come) ends BUSY like on_reply, the
 * request failing instead.
 *
 * Rules that hold in every state:
 * - Requests run one at a time, in FIFO order, only from IDLE (kh__kernel_pump).
 * - Every callback is delivered from the loop through the inbox (delivery.c), never inside
 *   the API call that caused it; state changes happen at once, their news is queued. So no
 *   function here has to re-check the state after "calling out": it never calls out.
 * - CLOSING is final: the kernel is invisible to lookups, and its memory lives until its two
 *   timers have closed (k->refs) after the backend reported stopped.
 * - Timers never re-arm themselves at 0 ms inside their own callback: libuv < 1.48 runs such
 *   a timer again in the same pass, forever (interruptGraceMs: 0 used to hang the host). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Interrupts re-sent to a cell that keeps running come at least this far apart. A grace of
 * 0 means "escalate at once" to a backend that can (a worker is killed); a kernel thread
 * cannot be killed, so it is re-interrupted, and 10 ms keeps that from costing the loop a
 * wake-up (and the Python service thread a request) per millisecond. */
#define REINTERRUPT_MIN_MS 10

const char *kh__kstate_name(kh__kstate_t s) {
  static const char *const names[] = {"starting", "idle", "busy", "restarting", "dead", "closing"};
  return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "unknown";
}

/* --- timers ------------------------------------------------------------------------------- */

static uint64_t reinterrupt_ms(const kh_kernel_t *k) {
  uint64_t g = k->m->opts.interrupt_grace_ms;
  return g < REINTERRUPT_MIN_MS ? REINTERRUPT_MIN_MS : g;
}

static void on_exec_timer(uv_timer_t *t) {
  kh_kernel_t *k = t->data;
  if (k->running == NULL) return;
  /* A destroy's interrupt did not end the cell within the grace period (it swallows
   * KeyboardInterrupt, or waits in C where none can land): the destroy does not wait for it
   * any longer, where the backend can let go of it. */
  if (k->state == KH__K_CLOSING && k->ops->abandon != NULL) {
    k->ops->abandon(k);
    return;
  }
  /* Over the time limit (or a restart/destroy waits): interrupt now, and again after each
   * grace period while the cell keeps running (a cell may swallow KeyboardInterrupt). As for
   * kh_kernel_interrupt, the cell's host call stops being waited for. */
  kh__hostcall_cancel_cell(k);
  k->ops->interrupt(k);
  uv_timer_start(&k->exec_timer, on_exec_timer, reinterrupt_ms(k), 0);
}

void kh__kernel_arm_exec_timer(kh_kernel_t *k, uint64_t ms) {
  uv_timer_start(&k->exec_timer, on_exec_timer, ms, 0);
}

static void on_idle_timer(uv_timer_t *t) {
  kh_kernel_t *k = t->data;
  if (k->state == KH__K_IDLE && k->running == NULL && k->queue_head == NULL) {
    /* Destroyed first, then reported: a listener of this "dead" event that tries to run a cell
     * gets KH_ECLOSED or KH_ENOTFOUND, never a kernel that came back. */
    if (kh_kernel_destroy(k->m, k->id, NULL, NULL) == 0)
      kh__kernel_emit_status(k, "dead", "", "\"reason\":{\"message\":\"inactivityTimeout\"}");
  }
}

static void arm_idle(kh_kernel_t *k) {
  if (k->opts.inactivity_ms > 0 && k->state == KH__K_IDLE && k->queue_head == NULL)
    uv_timer_start(&k->idle_timer, on_idle_timer, k->opts.inactivity_ms, 0);
}

static void do_reset(kh_kernel_t *k) {
  int rc;
  k->state = KH__K_RESTARTING;
  k->restart_pending = 0;
  rc = k->ops->reset(k);
  if (rc != 0) kh__kernel_on_reset(k, rc, kh_strerror(rc));
}

void kh__kernel_settle(kh_kernel_t *k) {
  if (k->state == KH__K_CLOSING) return;
  if (k->restart_pending) {
    if (k->running == NULL) do_reset(k);
    return;
  }
  kh__kernel_pump(k);
  arm_idle(k);
  kh__manager_update_ref(k->m);
}

/* --- creation and release ----------------------------------------------------------------- */

static void kernel_free(kh__refs_t *r) {
  kh_kernel_t *k = (kh_kernel_t *)((char *)r - offsetof(kh_kernel_t, refs));
  kh__interact_free(k);
  kh__hostcall_free(k);
  kh__comm_forget(k);
  kh__kernel_opts_free(&k->opts);
  free(k);
}

static void deliver_waiters(kh_kernel_t *k, kh__done_t **list, int status, const char *msg) {
  kh__done_t *w;
  while ((w = *list) != NULL) {
    *list = w->next;
    kh__deliver_done(k->m, w->cb, w->data, k->id, status, msg);
    free(w);
  }
}

/* Unlinks k, answers who waits for it, and frees it once its timers have closed. */
static void kernel_release(kh_kernel_t *k) {
  kh_manager_t *m = k->m;
  if (k->sink != NULL) {
    kh__sink_close(k->sink);
    kh__sink_unref(k->sink);
    k->sink = NULL;
  }
  /* Gone from the manager before anyone hears of it: a destroy callback that executes on the
   * same id gets KH_ENOTFOUND. */
  kh__manager_unlink(m, k);
  deliver_waiters(k, &k->restart_waiters, KH_ECANCELED, "kernel destroyed");
  deliver_waiters(k, &k->destroy_waiters, 0, NULL);
  kh__refs_close(&k->refs, (uv_handle_t *)&k->exec_timer);
  kh__refs_close(&k->refs, (uv_handle_t *)&k->idle_timer);
  kh__manager_kernel_gone(m);
}

static void release_deferred(kh_manager_t *m, void *arg) {
  kh_kernel_t *k = arg;
  m->destroying--;
  kernel_release(k);
}

int kh_kernel_create(kh_manager_t *m, const char *options_json, char *id_out, size_t id_out_size,
                     kh_kernel_create_cb cb, void *data) {
  kh_kernel_t *k, **tail;
  kh__kernel_opts_t opts;
  int rc;
  static const char starting[] = "{\"execution_state\":\"starting\"}";

  if (m == NULL) return KH_EINVAL;
  m->errmsg[0] = '\0';
  if (m->closing) {
    kh__set_err(m->errmsg, "the manager is closed");
    return KH_ECLOSED;
  }
  if ((rc = kh__kernel_opts_parse(&opts, options_json, m->errmsg)) != 0) return rc;
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
  k->ops = kh__backend_for(&k->opts);
  k->create_cb = cb;
  k->create_data = data;
  k->sink = kh__sink_new(&m->inbox, k->serial);
  if (k->sink == NULL || kh__interact_open(k) != 0) {
    if (k->sink != NULL) kh__sink_unref(k->sink);
    kh__kernel_opts_free(&k->opts);
    free(k);
    return KH_ENOMEM;
  }
  kh__refs_init(&k->refs, kernel_free);
  uv_timer_init(m->loop, &k->exec_timer);
  uv_timer_init(m->loop, &k->idle_timer);
  kh__refs_handle(&k->refs, &k->exec_timer);
  kh__refs_handle(&k->refs, &k->idle_timer);
  k->exec_timer.data = k->idle_timer.data = k;
  uv_unref((uv_handle_t *)&k->exec_timer);
  uv_unref((uv_handle_t *)&k->idle_timer);
  for (tail = &m->kernels; *tail; tail = &(*tail)->next) {
  }
  *tail = k;
  /* "starting" goes through the kernel's own sink, ahead of anything its backend may post
   * from a kernel thread, and is dropped with the kernel if the backend fails to start. */
  kh__sink_post(k->sink, KH__MSG_EVENT, KH_EVENT_STATUS, 0, "", starting, sizeof(starting) - 1);
  m->pending++; /* the creation's callback */
  k->create_pending = 1;
  kh__manager_update_ref(m);
  if ((rc = k->ops->start(k)) != 0) {
    m->pending--;
    k->create_pending = 0;
    k->state = KH__K_CLOSING;
    if (!m->errmsg[0]) kh__set_err(m->errmsg, "starting the kernel failed: %s", kh_strerror(rc));
    kernel_release(k);
    return rc;
  }
  if (id_out != NULL && id_out_size > 0) snprintf(id_out, id_out_size, "%s", k->id);
  return 0;
}

/* Answers kh_kernel_create's callback once (counted in m->pending even when it is NULL). */
static void finish_create(kh_kernel_t *k, int status, const char *errmsg) {
  if (!k->create_pending) return;
  k->create_pending = 0;
  kh__deliver_create(k->m, k->create_cb, k->create_data, k->id, status, errmsg);
}

void kh__kernel_on_ready(kh_kernel_t *k, int status, const char *errmsg) {
  kh_manager_t *m = k->m;
  if (!k->create_pending) return; /* not waiting for it */
  if (k->state == KH__K_CLOSING) {
    finish_create(k, KH_ECANCELED, "kernel destroyed while starting");
    kh__manager_update_ref(m);
    return;
  }
  if (status != 0) {
    /* Never usable: report, then take it down. */
    k->state = KH__K_CLOSING;
    m->destroying++;
    finish_create(k, status, errmsg && *errmsg ? errmsg : kh_strerror(status));
    k->ops->stop(k);
    kh__manager_update_ref(m);
    return;
  }
  k->state = KH__K_IDLE;
  kh__kernel_emit_status(k, "idle", "", NULL);
  finish_create(k, 0, NULL);
  kh__kernel_settle(k);
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
  if ((k = kh__kernel_lookup(m, kernel_id, &rc)) == NULL) return rc;
  if (k->state == KH__K_STARTING) {
    kh__set_err(m->errmsg, "kernel \"%s\" is still starting", kernel_id);
    return KH_EBUSY;
  }
  if ((rc = add_waiter(&k->restart_waiters, cb, data)) != 0) return rc;
  m->pending++;
  kh__manager_update_ref(m);
  if (k->state == KH__K_RESTARTING || k->restart_pending) return 0; /* joins the restart */
  uv_timer_stop(&k->idle_timer);
  kh__kernel_emit_status(k, "restarting", "", NULL);
  kh__comm_forget(k);
  kh__request_fail_queue(k, KH_ECANCELED, "canceled by restart");
  kh__interact_fail_all(k, KH_ECANCELED, "canceled by restart");
  kh__hostcall_cancel_all(k, "the kernel is restarting");
  if (k->running != NULL) {
    kh__request_fail(k, k->running, KH_ECANCELED, "canceled by restart");
    k->restart_pending = 1;
    k->state = KH__K_RESTARTING;
    k->ops->interrupt(k);
    kh__kernel_arm_exec_timer(k, m->opts.interrupt_grace_ms);
    return 0;
  }
  do_reset(k);
  return 0;
}

void kh__kernel_on_reset(kh_kernel_t *k, int status, const char *errmsg) {
  if (k->state == KH__K_CLOSING) return;
  if (status == 0) {
    k->state = KH__K_IDLE;
    k->execution_count = 0;
    kh__interact_new_session(k);
    kh__comm_forget(k); /* also what the old session's threads said meanwhile */
    kh__kernel_emit_status(k, "starting", "", NULL);
    kh__kernel_emit_status(k, "idle", "", NULL);
  } else {
    k->state = KH__K_DEAD;
    snprintf(k->dead_reason, sizeof(k->dead_reason), "restart failed: %s",
             errmsg ? errmsg : kh_strerror(status));
    kh__kernel_emit_status(k, "dead", "", "\"reason\":{\"message\":\"restart failed\"}");
  }
  deliver_waiters(k, &k->restart_waiters, status, status ? errmsg : NULL);
  kh__kernel_settle(k);
}

int kh_kernel_destroy(kh_manager_t *m, const char *kernel_id, kh_kernel_done_cb cb, void *data) {
  kh_kernel_t *k;
  int rc;
  if ((k = kh__kernel_lookup(m, kernel_id, &rc)) == NULL) return rc;
  if ((rc = add_waiter(&k->destroy_waiters, cb, data)) != 0) return rc;
  m->pending++; /* released when the waiter is answered, even without a callback */
  k->state = KH__K_CLOSING;
  m->destroying++;
  if (m->jupyter != NULL) m->jupyter->kernel_closing(m, k->id);
  uv_timer_stop(&k->idle_timer);
  uv_timer_stop(&k->exec_timer);
  /* Pending restarts will not complete now. */
  deliver_waiters(k, &k->restart_waiters, KH_ECANCELED, "kernel destroyed");
  kh__request_fail_queue(k, KH_ECANCELED, "canceled: kernel destroyed");
  kh__interact_fail_all(k, KH_ECANCELED, "canceled: kernel destroyed");
  kh__hostcall_cancel_all(k, "the kernel is being destroyed");
  if (k->running != NULL) {
    kh__request_fail(k, k->running, KH_ECANCELED, "canceled: kernel destroyed");
    k->ops->interrupt(k);
    /* A cell that swallows KeyboardInterrupt gets another after each grace period. */
    kh__kernel_arm_exec_timer(k, m->opts.interrupt_grace_ms);
  }
  kh__manager_update_ref(m);
  k->ops->stop(k);
  return 0;
}

void kh__kernel_on_stopped(kh_kernel_t *k) {
  kh_manager_t *m = k->m;
  if (k->running != NULL) {
    kh__request_fail(k, k->running, KH_ECANCELED, "canceled: kernel destroyed");
    kh__request_free(k->running);
    k->running = NULL;
  }
  kh__request_fail_queue(k, KH_ECANCELED, "canceled: kernel destroyed");
  kh__interact_fail_all(k, KH_ECANCELED, "canceled: kernel destroyed");
  kh__hostcall_cancel_all(k, "the kernel was destroyed");
  finish_create(k, KH_ECANCELED, "kernel destroyed while starting");
  /* Released from the queue, behind every delivery about k queued so far: a listener of k's
   * last events (the "dead" of an inactivity timeout) still finds it closing (KH_ECLOSED),
   * whichever thread happened to finish first. */
  if (kh__defer(m, release_deferred, k) != 0) release_deferred(m, k);
}

/* Fails what is running and queued with KH_EKERNELDEAD: the process that had them is gone. */
static void fail_in_flight(kh_kernel_t *k, const char *running_msg, const char *queued_msg) {
  if (k->running != NULL) {
    kh__request_t *r = k->running;
    k->running = NULL;
    kh__request_fail(k, r, KH_EKERNELDEAD, running_msg);
    kh__request_free(r);
  }
  kh__request_fail_queue(k, KH_EKERNELDEAD, queued_msg);
  kh__interact_fail_all(k, KH_EKERNELDEAD, "the kernel's process went away before it answered");
  kh__hostcall_cancel_all(k, "the kernel's process went away");
}

void kh__kernel_on_dead(kh_kernel_t *k, const char *reason_json) {
  char extra[300];
  if (k->state == KH__K_CLOSING) return;
  k->state = KH__K_DEAD;
  kh__comm_forget(k);
  uv_timer_stop(&k->exec_timer);
  uv_timer_stop(&k->idle_timer);
  snprintf(k->dead_reason, sizeof(k->dead_reason), "%s", reason_json ? reason_json : "{}");
  snprintf(extra, sizeof(extra), "\"reason\":%s", reason_json ? reason_json : "{}");
  kh__kernel_emit_status(k, "dead", k->running ? k->running->exec_id : "", extra);
  fail_in_flight(k, "the kernel died while running this request",
                 "the kernel died before running this request");
  kh__manager_update_ref(k->m);
}

void kh__kernel_on_restarting(kh_kernel_t *k, const char *reason_json) {
  char extra[300];
  if (k->state == KH__K_CLOSING) return;
  k->state = KH__K_RESTARTING;
  k->restart_pending = 0; /* the backend's restart is the one under way */
  kh__comm_forget(k);
  uv_timer_stop(&k->exec_timer);
  uv_timer_stop(&k->idle_timer);
  snprintf(extra, sizeof(extra), "\"reason\":%s", reason_json ? reason_json : "{}");
  kh__kernel_emit_status(k, "restarting", k->running ? k->running->exec_id : "", extra);
  fail_in_flight(k, "the kernel was restarted while running this request",
                 "the kernel was restarted before running this request");
  kh__manager_update_ref(k->m);
}

/* --- queries ------------------------------------------------------------------------------ */

int kh_kernel_exists(kh_manager_t *m, const char *kernel_id, const char **mode_out) {
  kh_kernel_t *k;
  if (m == NULL || kernel_id == NULL) return 0;
  k = kh__manager_find(m, kernel_id);
  if (k == NULL || k->state == KH__K_CLOSING) return 0;
  if (mode_out) *mode_out = kh__mode_name(k->opts.mode);
  return 1;
}

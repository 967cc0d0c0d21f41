/* hostcall.c: host functions. A kernel's table of exposed functions (kh_kernel_expose), the calls
 * its Python makes (from a main_thread kernel's sink, a worker's "call" frame, or inline on the
 * loop for a thread: "host" kernel), their handles (kh_hostcall_t) and answers, and how calls
 * settle when the kernel is interrupted, restarted, destroyed or dies. Thread: loop, except the
 * waiter functions (kh__hcwait_*, Thread: any).
 *
 * A call's life, seen from the loop:
 *
 *   arrives ──name exposed, kernel alive──> RUNNING (the host function runs, on the loop; its
 *      │                                     kernel's queue refuses new requests: KH_EBUSY)
 *      │ otherwise: answered at once           │ the function returns
 *      v with a HostError (never runs a        v
 *        function)                          PENDING (in k->hostfns->calls) ──answer──> freed
 *                                              │ interrupt (the cell's own call), restart,
 *                                              v destroy, death, manager close
 *                                           CANCELED (out of the list, k forgotten): the next
 *                                              answer frees it and returns KH_ECANCELED
 *
 * Nothing but the exposed functions is reachable this way: a name is looked up in the kernel's
 * own table when the call arrives, whatever the kernel's side believed was exposed. */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef struct hostfn_s {
  struct hostfn_s *next;
  char name[KH__HOSTFN_NAME_MAX + 1];
  kh_hostcall_fn fn;
  void *data;
} hostfn_t;

typedef struct kh__hostfns_s {
  hostfn_t *fns;
  kh_hostcall_t *calls; /* pending: answered neither by the host nor canceled */
  size_t ncalls;
  int depth; /* host functions of this kernel running now (nested on the loop's stack) */
} hostfns_t;

struct kh_hostcall_s {
  kh_hostcall_t *next; /* in k->hostfns->calls while pending */
  kh_kernel_t *k;      /* NULL once canceled: then nothing but kh_free-ing it is left */
  int cell;            /* made by the kernel's own (cell) thread */
  kh__hcwait_t *wait;  /* main_thread: the waiting thread's waiter (a reference), else NULL */
  int64_t id;          /* worker: the process's call id */
  char name[KH__HOSTFN_NAME_MAX + 1];
};

/* How long the loop keeps polling after a host call (see kh_manager_s.hc_idle). Measured on
 * these 2-vCPU machines: a no-op call's round trip is ~25 us when the loop must wake from
 * epoll_wait for it (~20 us of that is the wake-up), and a few us when the loop is still awake;
 * this window costs at most this much loop time per call. */
#define LOOP_WINDOW_NS 100000

/* The thread: "host" kernel whose cell runs on this thread now (kh__hostcall_host_enter). */
static _Thread_local kh_kernel_t *host_kernel;

/* --- waiters (main_thread) ------------------------------------------------------------------ */

kh__hcwait_t *kh__hcwait_new(void) {
  kh__hcwait_t *w = calloc(1, sizeof(*w));
  if (w == NULL) return NULL;
  if (uv_mutex_init(&w->mu) != 0) {
    free(w);
    return NULL;
  }
  if (uv_cond_init(&w->cv) != 0) {
    uv_mutex_destroy(&w->mu);
    free(w);
    return NULL;
  }
  atomic_init(&w->refs, 1);
  return w;
}

void kh__hcwait_ref(kh__hcwait_t *w) {
  atomic_fetch_add(&w->refs, 1);
}

void kh__hcwait_unref(kh__hcwait_t *w) {
  if (w == NULL || atomic_fetch_sub(&w->refs, 1) != 1) return;
  free(w->text);
  kh__buffers_free(w->buffers, w->nbuffers);
  uv_cond_destroy(&w->cv);
  uv_mutex_destroy(&w->mu);
  free(w);
}

void kh__buffers_free(kh_buffer_t *b, size_t n) {
  size_t i;
  if (b == NULL) return;
  for (i = 0; i < n; i++) {
    free((void *)b[i].path);
    free((void *)b[i].data);
  }
  free(b);
}

int kh__buffers_copy(const kh_buffer_t *b, size_t n, kh_buffer_t **out) {
  kh_buffer_t *c;
  size_t i;
  *out = NULL;
  if (n == 0) return 0;
  if ((c = calloc(n, sizeof(*c))) == NULL) return KH_ENOMEM;
  for (i = 0; i < n; i++) {
    c[i].path = kh__strdup(b[i].path ? b[i].path : "");
    /* One byte more, so that an empty buffer still has an address of its own. */
    c[i].data = malloc(b[i].len + 1);
    c[i].len = b[i].len;
    if (c[i].path == NULL || c[i].data == NULL) {
      kh__buffers_free(c, i + 1);
      return KH_ENOMEM;
    }
    if (b[i].len) memcpy((void *)c[i].data, b[i].data, b[i].len);
  }
  *out = c;
  return 0;
}

void kh__hcwait_settle(kh__hcwait_t *w, int state, const char *text, size_t len,
                       const kh_buffer_t *buffers, size_t nbuffers) {
  char *t = NULL;
  kh_buffer_t *b = NULL;
  static const char oom[] = "out of memory passing the host's answer";
  if (text != NULL && (t = kh__memdup(text, len + 1)) != NULL) t[len] = '\0';
  if ((text != NULL && t == NULL) || kh__buffers_copy(buffers, nbuffers, &b) != 0) {
    free(t);
    state = KH__HC_FAILED;
    t = kh__strdup(oom);
    len = t ? strlen(t) : 0;
    b = NULL;
    nbuffers = 0;
  }
  uv_mutex_lock(&w->mu);
  if (atomic_load(&w->state) == KH__HC_WAITING) {
    w->text = t;
    w->len = t ? len : 0;
    w->buffers = b;
    w->nbuffers = b ? nbuffers : 0;
    t = NULL;
    b = NULL;
    atomic_store(&w->state, state); /* last: a spinning waiter reads the rest after it */
    uv_cond_signal(&w->cv);
  }
  uv_mutex_unlock(&w->mu);
  free(t);
  kh__buffers_free(b, nbuffers);
}

void kh__hcwait_interrupt(kh__hcwait_t *w) {
  uv_mutex_lock(&w->mu);
  atomic_store(&w->interrupted, 1);
  uv_cond_signal(&w->cv);
  uv_mutex_unlock(&w->mu);
}

void kh__hcreq_free(kh__hcreq_t *req) {
  if (req == NULL) return;
  if (req->wait != NULL) {
    static const char why[] = "the host call was canceled: its kernel is gone";
    kh__hcwait_settle(req->wait, KH__HC_CANCELED, why, sizeof(why) - 1, NULL, 0);
    kh__hcwait_unref(req->wait);
  }
  free(req->args);
  kh__buffers_free(req->buffers, req->nbuffers);
  free(req);
}

void kh__hcreq_drop(void *req) {
  kh__hcreq_free(req);
}

/* --- the table ------------------------------------------------------------------------------ */

static hostfns_t *table(kh_kernel_t *k) {
  if (k->hostfns == NULL) k->hostfns = calloc(1, sizeof(hostfns_t));
  return k->hostfns;
}

static hostfn_t *find_fn(kh_kernel_t *k, const char *name) {
  hostfn_t *f;
  if (k->hostfns == NULL) return NULL;
  for (f = k->hostfns->fns; f != NULL; f = f->next)
    if (strcmp(f->name, name) == 0) return f;
  return NULL;
}

/* ASCII letters, digits and "_", not starting with a digit: an identifier in every language the
 * bindings serve (kernelhost.host.NAME in Python). */
static int valid_name(const char *name) {
  size_t i, n;
  if (name == NULL || (n = strlen(name)) == 0 || n > KH__HOSTFN_NAME_MAX) return 0;
  for (i = 0; i < n; i++) {
    char c = name[i];
    int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return 0;
  }
  return 1;
}

json_t *kh__hostcall_names(kh_kernel_t *k) {
  json_t *a;
  hostfn_t *f;
  if (k->hostfns == NULL || k->hostfns->fns == NULL) return NULL;
  if ((a = json_array()) == NULL) return NULL;
  for (f = k->hostfns->fns; f != NULL; f = f->next) json_array_append_new(a, json_string(f->name));
  return a;
}

/* Tells the kernel's side what is exposed now: main_thread Python reads the sink, a worker gets
 * "expose" from its backend. */
static int publish_names(kh_kernel_t *k) {
  kh__strbuf_t sb = {0};
  hostfn_t *f;
  json_t *names;
  int rc = 0;
  for (f = k->hostfns ? k->hostfns->fns : NULL; f != NULL; f = f->next)
    kh__sb_append(&sb, f->name, strlen(f->name) + 1);
  if (sb.len > 0) kh__sb_append(&sb, "", 1);
  if (sb.oom) rc = KH_ENOMEM;
  if (rc == 0 && k->sink != NULL) rc = kh__sink_set_names(k->sink, sb.len ? sb.buf : NULL, sb.len);
  kh__sb_free(&sb);
  if (rc == 0 && k->ops->expose != NULL) {
    names = kh__hostcall_names(k);
    if (names == NULL) names = json_array();
    if (names == NULL) return KH_ENOMEM;
    k->ops->expose(k, names);
    json_decref(names);
  }
  return rc;
}

int kh_kernel_expose(kh_manager_t *m, const char *kernel_id, const char *name, kh_hostcall_fn fn,
                     void *data) {
  kh_kernel_t *k;
  hostfn_t *f, **pp;
  int rc;
  if ((k = kh__kernel_lookup(m, kernel_id, &rc)) == NULL) return rc;
  if (k->ops->no_host_functions) {
    kh__set_err(m->errmsg, "host functions need a local kernel (mode \"main_thread\" or "
                           "\"worker\"): a %s kernel cannot call back into this process",
                k->ops->name);
    return KH_ENOTSUP;
  }
  if (!valid_name(name)) {
    kh__set_err(m->errmsg,
                "host function name \"%.80s\" is not an identifier of ASCII letters, digits and "
                "\"_\" (not starting with a digit, at most %d bytes)",
                name ? name : "(null)", KH__HOSTFN_NAME_MAX);
    return KH_EINVAL;
  }
  f = find_fn(k, name);
  if (fn == NULL) { /* withdraw: calls already running keep their handles */
    if (f == NULL) return 0;
    for (pp = &k->hostfns->fns; *pp != f; pp = &(*pp)->next) {
    }
    *pp = f->next;
    free(f);
    return publish_names(k);
  }
  if (f != NULL) { /* replace: same place in the list, so the names keep their order */
    f->fn = fn;
    f->data = data;
    return 0;
  }
  if (table(k) == NULL || (f = calloc(1, sizeof(*f))) == NULL) return KH_ENOMEM;
  snprintf(f->name, sizeof(f->name), "%s", name);
  f->fn = fn;
  f->data = data;
  for (pp = &k->hostfns->fns; *pp != NULL; pp = &(*pp)->next) {
  }
  *pp = f;
  if ((rc = publish_names(k)) != 0) {
    *pp = NULL;
    free(f);
    publish_names(k);
  }
  return rc;
}

int kh__hostcall_busy(kh_kernel_t *k) {
  if (k->hostfns == NULL || k->hostfns->depth == 0) return 0;
  kh__set_err(k->m->errmsg,
              "kernel \"%s\" is waiting for one of its host functions, which is running now: a "
              "request queued on it would wait for that very function (answer the call first, "
              "or use another kernel)",
              k->id);
  return 1;
}

/* --- calls ---------------------------------------------------------------------------------- */

static void on_window(uv_idle_t *h) {
  kh_manager_t *m = h->data;
  if (uv_hrtime() >= m->hc_idle_until) {
    uv_idle_stop(h);
    return;
  }
  /* The waiting kernel thread may be queued on this CPU (a loaded machine): a loop that polled
   * without yielding would keep it from its answer (measured: 133 us instead of 5). */
  sched_yield();
}

/* After a call arrived or was answered: an active idle handle makes the loop poll with a zero
 * timeout until the window ends, so the cell's next call is seen without a wake-up. */
static void loop_window(kh_manager_t *m) {
  if (m->closing) return;
  if (!m->hc_idle_open) {
    if (uv_idle_init(m->loop, &m->hc_idle) != 0) return;
    uv_unref((uv_handle_t *)&m->hc_idle);
    m->hc_idle.data = m;
    m->hc_idle_open = 1;
  }
  m->hc_idle_until = uv_hrtime() + LOOP_WINDOW_NS;
  if (!uv_is_active((uv_handle_t *)&m->hc_idle)) uv_idle_start(&m->hc_idle, on_window);
}

static void unlink_call(kh_hostcall_t *c) {
  hostfns_t *t = c->k->hostfns;
  kh_hostcall_t **pp;
  for (pp = &t->calls; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == c) {
      *pp = c->next;
      t->ncalls--;
      break;
    }
  }
  c->next = NULL;
}

static void call_free(kh_hostcall_t *c) {
  kh__hcwait_unref(c->wait);
  free(c);
}

/* Answers a call that never reached a host function (no such name, a kernel going away): the
 * waiter directly (main_thread), or "result" (worker). */
static void refuse(kh_kernel_t *k, kh__hcwait_t *wait, int64_t id, int state, const char *fmt,
                   ...) {
  char msg[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (wait != NULL)
    kh__hcwait_settle(wait, state, msg, strlen(msg), NULL, 0);
  else if (k->ops->hostcall_answer != NULL)
    k->ops->hostcall_answer(k, id, NULL, msg, NULL, 0);
}

/* Runs one call: wait (a reference, taken over) for main_thread kernels, else the worker's id. */
static void run_call(kh_kernel_t *k, const char *name, const char *args, size_t len,
                     const kh_buffer_t *b, size_t nb, int cell, kh__hcwait_t *wait, int64_t id) {
  hostfn_t *f = find_fn(k, name);
  hostfns_t *t = k->hostfns;
  kh_hostcall_t *c;
  kh_hostcall_fn fn;
  void *data;
  if (k->state == KH__K_CLOSING || k->state == KH__K_DEAD) {
    refuse(k, wait, id, KH__HC_CANCELED, "the host call was canceled: kernel \"%s\" is %s", k->id,
           k->state == KH__K_DEAD ? "dead" : "being destroyed");
    kh__hcwait_unref(wait);
    return;
  }
  if (f == NULL) {
    refuse(k, wait, id, KH__HC_FAILED, "no host function named '%s' is exposed to this kernel",
           name);
    kh__hcwait_unref(wait);
    return;
  }
  if (t->ncalls >= KH__HOSTCALLS_MAX) {
    refuse(k, wait, id, KH__HC_FAILED, "too many host calls in flight (%d): '%s' was not called",
           KH__HOSTCALLS_MAX, name);
    kh__hcwait_unref(wait);
    return;
  }
  if ((c = calloc(1, sizeof(*c))) == NULL) {
    refuse(k, wait, id, KH__HC_FAILED, "out of memory calling host function '%s'", name);
    kh__hcwait_unref(wait);
    return;
  }
  c->k = k;
  c->cell = cell;
  c->wait = wait;
  c->id = id;
  snprintf(c->name, sizeof(c->name), "%s", name);
  c->next = t->calls;
  t->calls = c;
  t->ncalls++;
  /* Copied out first: the function may withdraw itself (kh_kernel_expose with NULL). */
  fn = f->fn;
  data = f->data;
  t->depth++;
  fn(k->m, k->id, c->name, args, len, b, nb, c, data);
  /* k is still allocated: a destroy from inside fn releases it from the inbox, later. */
  t->depth--;
  loop_window(k->m);
}

void kh__hostcall_on_post(kh_kernel_t *k, void *arg) {
  kh__hcreq_t *req = arg;
  kh__hcwait_t *wait = req->wait;
  req->wait = NULL; /* run_call takes the reference over */
  if (table(k) == NULL) {
    refuse(k, wait, 0, KH__HC_FAILED, "out of memory calling host function '%s'", req->name);
    kh__hcwait_unref(wait);
  } else {
    run_call(k, req->name, req->args, req->args_len, req->buffers, req->nbuffers, req->cell, wait,
             0);
  }
  kh__hcreq_free(req);
}

void kh__hostcall_from_worker(kh_kernel_t *k, int64_t id, const char *name, int cell,
                              const char *args, size_t len, const kh_buffer_t *buffers,
                              size_t nbuffers) {
  if (table(k) == NULL) {
    refuse(k, NULL, id, KH__HC_FAILED, "out of memory calling host function '%s'", name);
    return;
  }
  run_call(k, name, args, len, buffers, nbuffers, cell, NULL, id);
}

kh_kernel_t *kh__hostcall_host_enter(kh_kernel_t *k) {
  kh_kernel_t *prev = host_kernel;
  host_kernel = k;
  return prev;
}

void kh__hostcall_host_leave(kh_kernel_t *prev) {
  host_kernel = prev;
}

void kh__hostcall_sync(kh__sink_t *sink, kh__hcreq_t *req) {
  kh_kernel_t *k = host_kernel;
  kh__hcwait_t *wait = req->wait;
  kh_hostcall_t *c;
  int state;
  if (k == NULL || k->sink != sink || table(k) == NULL) {
    static const char why[] = "a host call from a thread: \"host\" kernel outside its cell";
    kh__hcwait_settle(wait, KH__HC_FAILED, why, sizeof(why) - 1, NULL, 0);
    kh__hcreq_free(req);
    return;
  }
  req->wait = NULL;     /* run_call takes the request's reference over */
  kh__hcwait_ref(wait); /* and this one is for looking at it after */
  run_call(k, req->name, req->args, req->args_len, req->buffers, req->nbuffers, 1, wait, 0);
  uv_mutex_lock(&wait->mu);
  state = atomic_load(&wait->state);
  uv_mutex_unlock(&wait->mu);
  if (state == KH__HC_WAITING) {
    /* Nothing can answer later: the loop is this very thread, blocked in the cell. The handle
     * stays valid (the host may still hold it) and answers KH_ECANCELED. */
    for (c = k->hostfns->calls; c != NULL && c->wait != wait; c = c->next) {
    }
    if (c != NULL) {
      unlink_call(c);
      c->k = NULL;
      kh__hcwait_unref(c->wait);
      c->wait = NULL;
    }
    {
      char msg[300];
      snprintf(msg, sizeof(msg),
               "host function '%s' returned without answering: a kernel with thread \"host\" "
               "needs the answer inside the host function",
               req->name);
      kh__hcwait_settle(wait, KH__HC_FAILED, msg, strlen(msg), NULL, 0);
    }
  }
  kh__hcwait_unref(wait);
  kh__hcreq_free(req);
}

/* Takes c out of its kernel for good: a later answer frees it and returns KH_ECANCELED. `why`:
 * wake its main_thread waiter with this reason (NULL: the Gate ends that wait instead). */
static void cancel(kh_hostcall_t *c, const char *why) {
  unlink_call(c);
  c->k = NULL;
  if (c->wait != NULL) {
    if (why != NULL) kh__hcwait_settle(c->wait, KH__HC_CANCELED, why, strlen(why), NULL, 0);
    kh__hcwait_unref(c->wait);
    c->wait = NULL;
  }
}

void kh__hostcall_cancel_cell(kh_kernel_t *k) {
  kh_hostcall_t *c, *next;
  if (k->hostfns == NULL) return;
  for (c = k->hostfns->calls; c != NULL; c = next) {
    next = c->next;
    /* The interrupt itself ends the cell's wait (py-gate.c, or SIGINT in a worker): waking it
     * here as well would raise a second KeyboardInterrupt behind the first. */
    if (c->cell) cancel(c, NULL);
  }
}

void kh__hostcall_cancel_all(kh_kernel_t *k, const char *why) {
  char msg[300];
  if (k->hostfns == NULL) return;
  snprintf(msg, sizeof(msg), "the host call was canceled: %s", why);
  while (k->hostfns->calls != NULL) cancel(k->hostfns->calls, msg);
}

void kh__hostcall_free(kh_kernel_t *k) {
  hostfn_t *f;
  if (k->hostfns == NULL) return;
  kh__hostcall_cancel_all(k, "kernel destroyed");
  while ((f = k->hostfns->fns) != NULL) {
    k->hostfns->fns = f->next;
    free(f);
  }
  free(k->hostfns);
  k->hostfns = NULL;
}

/* --- answers -------------------------------------------------------------------------------- */

/* A copy of s (n bytes) that is valid UTF-8: each ill-formed part becomes U+FFFD. Owned. */
static char *utf8_clean(const char *s, size_t n) {
  kh__strbuf_t sb = {0};
  size_t i = 0;
  while (i < n) {
    int l = kh__utf8_seq((const unsigned char *)s + i, n - i);
    if (l == 0) l = -(int)(n - i); /* cut short at the end: one ill-formed part */
    if (l > 0) {
      kh__sb_append(&sb, s + i, (size_t)l);
      i += (size_t)l;
    } else {
      kh__sb_append(&sb, "\xEF\xBF\xBD", 3);
      i += (size_t)-l;
    }
  }
  kh__sb_append(&sb, "", 1);
  return kh__sb_take(&sb);
}

int kh_hostcall_return(kh_hostcall_t *call, const char *json, size_t len,
                       const kh_buffer_t *buffers, size_t nbuffers) {
  kh_kernel_t *k;
  json_t *value;
  json_error_t err;
  size_t i;
  int rc = 0;
  if (call == NULL) return KH_EINVAL;
  if ((k = call->k) == NULL) {
    call_free(call);
    return KH_ECANCELED;
  }
  /* A refused answer leaves the call unanswered, so that the host can still answer it (with
   * kh_hostcall_error, say): the kernel must never wait for an answer that was lost. */
  if (json == NULL || (nbuffers > 0 && buffers == NULL)) {
    kh__set_err(k->m->errmsg, "kh_hostcall_return: %s is NULL", json ? "buffers" : "json");
    return KH_EINVAL;
  }
  value = json_loadb(json, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
  if (value == NULL) {
    kh__set_err(k->m->errmsg,
                "the answer of host function '%s' is not JSON (integers within 64 bits, no NaN): "
                "%s at byte %d",
                call->name, err.text, err.position);
    return KH_EINVAL;
  }
  for (i = 0; i < nbuffers; i++) {
    if (buffers[i].path == NULL || (buffers[i].data == NULL && buffers[i].len > 0)) {
      kh__set_err(k->m->errmsg, "buffer %zu of host function '%s''s answer has no %s", i,
                  call->name, buffers[i].path == NULL ? "path" : "data");
      json_decref(value);
      return KH_EINVAL;
    }
  }
  /* Each path leads to a null in the value, none twice (the paths Python puts the bytes at). */
  if ((rc = kh__bufs_check(value, buffers, nbuffers, k->m->errmsg)) != 0) {
    json_decref(value);
    return rc;
  }
  unlink_call(call);
  if (call->wait != NULL)
    kh__hcwait_settle(call->wait, KH__HC_ANSWERED, json, len, buffers, nbuffers);
  else if (k->ops->hostcall_answer != NULL)
    rc = k->ops->hostcall_answer(k, call->id, value, NULL, buffers, nbuffers);
  json_decref(value);
  call_free(call);
  loop_window(k->m);
  /* The process that asked is gone (it was being replaced): the call was as good as canceled. */
  return rc == KH_EKERNELDEAD ? KH_ECANCELED : rc;
}

int kh_hostcall_error(kh_hostcall_t *call, const char *message) {
  kh_kernel_t *k;
  char *msg;
  int rc = 0;
  if (call == NULL) return KH_EINVAL;
  if ((k = call->k) == NULL) {
    call_free(call);
    return KH_ECANCELED;
  }
  if (message == NULL) message = "";
  /* Host text may be any bytes (a Lua string): the kernel gets it as text, whatever it was. */
  msg = utf8_clean(message, strlen(message));
  unlink_call(call);
  if (msg == NULL) {
    static const char oom[] = "out of memory passing the host's error";
    if (call->wait != NULL)
      kh__hcwait_settle(call->wait, KH__HC_FAILED, oom, sizeof(oom) - 1, NULL, 0);
    else if (k->ops->hostcall_answer != NULL)
      rc = k->ops->hostcall_answer(k, call->id, NULL, oom, NULL, 0);
  } else if (call->wait != NULL) {
    kh__hcwait_settle(call->wait, KH__HC_FAILED, msg, strlen(msg), NULL, 0);
  } else if (k->ops->hostcall_answer != NULL) {
    rc = k->ops->hostcall_answer(k, call->id, NULL, msg, NULL, 0);
  }
  free(msg);
  call_free(call);
  return rc == KH_EKERNELDEAD ? KH_ECANCELED : rc == KH_ENOMEM ? KH_ENOMEM : 0;
}

/* manager.c: the manager handle: the loop it lives on, its kernels, its inbox (inbox.c),
 * whether it keeps the loop alive, listing, destroy-all and the orderly close. Thread: loop.
 *
 * Close runs in one order (STYLE.md): stop accepting work (m->closing: every API call that
 * would start something returns KH_ECLOSED), let each backend drop its per-manager state (the
 * worker pool), destroy every kernel (their requests complete with KH_ECANCELED from the
 * loop), and once the last kernel is released queue the close itself behind every delivery
 * still waiting; when that runs, the async handle closes and then the close callback runs and
 * the memory goes. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* kh_manager_new() has no manager to hold its error text: it lives here, per thread. */
static _Thread_local char last_error[KH__ERRMSG_MAX];

static void on_async(uv_async_t *h) {
  kh__inbox_drain(h->data);
}

/* The core writes to worker pipes and the fork server's socket, whose reader may die at any
 * moment: the write must fail with EPIPE (and the death be reported), not kill the host with
 * SIGPIPE. As CPython and Node do, SIGPIPE is ignored, unless the host chose a handler of its
 * own (or to ignore it already), once per process. */
static pthread_once_t sigpipe_once = PTHREAD_ONCE_INIT;

static void ignore_sigpipe(void) {
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) != 0 || sa.sa_handler != SIG_DFL ||
      (sa.sa_flags & SA_SIGINFO))
    return;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = SIG_IGN;
  sigaction(SIGPIPE, &sa, NULL);
}

int kh_manager_new(kh_manager_t **out, uv_loop_t *loop, const char *options_json) {
  kh_manager_t *m;
  int rc;
  last_error[0] = '\0';
  pthread_once(&sigpipe_once, ignore_sigpipe);
  if (out == NULL || loop == NULL) {
    kh__set_err(last_error, "kh_manager_new: out and loop must not be NULL");
    return KH_EINVAL;
  }
  *out = NULL;
  m = calloc(1, sizeof(*m));
  if (m == NULL) return KH_ENOMEM;
  if ((rc = kh__manager_opts_parse(&m->opts, options_json, last_error)) != 0) {
    free(m);
    return rc;
  }
  m->loop = loop;
  if ((rc = uv_mutex_init(&m->inbox.mu)) != 0) goto fail_opts;
  if ((rc = uv_async_init(loop, &m->async, on_async)) != 0) goto fail_mutex;
  m->async.data = m;
  m->inbox.async = &m->async;
  uv_unref((uv_handle_t *)&m->async);
  kh__backends_manager_open(m);
  *out = m;
  return 0;
fail_mutex:
  uv_mutex_destroy(&m->inbox.mu);
fail_opts:
  kh__manager_opts_free(&m->opts);
  free(m);
  kh__set_err(last_error, "kh_manager_new: %s", uv_strerror(rc));
  return rc;
}

const char *kh_manager_errmsg(const kh_manager_t *m) {
  return m ? m->errmsg : last_error;
}

void kh_free(void *p) {
  free(p);
}

kh_kernel_t *kh__manager_find_serial(kh_manager_t *m, uint64_t serial) {
  kh_kernel_t *k;
  for (k = m->kernels; k; k = k->next)
    if (k->serial == serial) return k;
  return NULL;
}

/* A list, walked: managers hold a handful of kernels (tens at most, each a thread or a
 * process), where a hash table would only add code. */
kh_kernel_t *kh__manager_find(kh_manager_t *m, const char *id) {
  kh_kernel_t *k;
  if (id == NULL) return NULL;
  for (k = m->kernels; k; k = k->next)
    if (strcmp(k->id, id) == 0) return k;
  return NULL;
}

/* The manager keeps the host's loop alive through its one async handle, by reference: ref'd
 * while any callback is owed, unref'd otherwise, as a libuv handle with nothing to do would
 * be. Kernel timers, worker pipes and processes are all unref'd; only this decides. */
void kh__manager_update_ref(kh_manager_t *m) {
  /* A closing manager keeps the loop until its close callback ran: the close itself is a
   * queued delivery that uv_run() must not return before. */
  int want =
      m->pending > 0 || m->destroying > 0 || m->closing || (m->ref_mode && m->kernels != NULL);
  if (uv_is_closing((uv_handle_t *)&m->async)) return;
  if (want)
    uv_ref((uv_handle_t *)&m->async);
  else
    uv_unref((uv_handle_t *)&m->async);
}

void kh_manager_ref(kh_manager_t *m, int ref) {
  if (m == NULL) return;
  m->ref_mode = ref != 0;
  kh__manager_update_ref(m);
}

size_t kh_manager_kernel_count(const kh_manager_t *m) {
  size_t n = 0;
  const kh_kernel_t *k;
  if (m == NULL) return 0;
  for (k = m->kernels; k; k = k->next)
    if (k->state != KH__K_CLOSING) n++;
  return n;
}

size_t kh_manager_pending_count(const kh_manager_t *m) {
  return m ? m->pending + m->destroying : 0;
}

static void on_handle_closed(uv_handle_t *h) {
  kh_manager_t *m = h->data;
  if (--m->handles_open > 0) return; /* the memory goes with the last of them */
  /* Only events can be left (every callback was delivered before the close was): drop them. */
  kh__inbox_discard(m);
  if (m->close_cb) m->close_cb(m, m->close_data);
  uv_mutex_destroy(&m->inbox.mu);
  kh__manager_opts_free(&m->opts);
  free(m->keep);
  free(m);
}

void kh__manager_close_handle(kh_manager_t *m, uv_handle_t *h) {
  m->handles_open++;
  h->data = m;
  uv_close(h, on_handle_closed);
}

void kh__manager_keep(kh_manager_t *m, void *p) {
  free(m->keep);
  m->keep = p;
}

/* The close's own delivery: it runs after every delivery queued before it. */
static void close_now(kh_manager_t *m, void *arg) {
  (void)arg;
  if (m->inbox_discarding) return;
  kh__bus_free_all(m);
  m->handles_open = 1;
  kh__backends_manager_free(m); /* may close handles of its own (kh__manager_close_handle) */
  if (m->hc_idle_open) {
    m->handles_open++;
    m->hc_idle.data = m;
    uv_close((uv_handle_t *)&m->hc_idle, on_handle_closed);
  }
  uv_close((uv_handle_t *)&m->async, on_handle_closed);
}

static void finish_close(kh_manager_t *m) {
  if (m->close_started) return;
  m->close_started = 1;
  if (kh__defer(m, close_now, NULL) != 0) close_now(m, NULL);
}

void kh__manager_unlink(kh_manager_t *m, kh_kernel_t *k) {
  kh_kernel_t **p;
  for (p = &m->kernels; *p; p = &(*p)->next) {
    if (*p == k) {
      *p = k->next;
      break;
    }
  }
}

void kh__manager_kernel_gone(kh_manager_t *m) {
  if (m->closing && m->kernels == NULL && m->servers == NULL)
    finish_close(m);
  else
    kh__manager_update_ref(m);
}

int kh_manager_close(kh_manager_t *m, kh_manager_close_cb cb, void *data) {
  kh_kernel_t *k, *next;
  if (m == NULL) return KH_EINVAL;
  if (m->closing) return KH_ECLOSED;
  m->closing = 1;
  m->close_cb = cb;
  m->close_data = data;
  kh__backends_manager_close(m);
  if (m->jupyter != NULL) m->jupyter->manager_close(m);
  kh__manager_update_ref(m);
  if (m->kernels == NULL && m->servers == NULL) {
    finish_close(m);
    return 0;
  }
  for (k = m->kernels; k; k = next) {
    next = k->next;
    if (k->state != KH__K_CLOSING) kh_kernel_destroy(m, k->id, NULL, NULL);
  }
  return 0;
}

/* Kernels as the API describes them: snake_case keys like every JSON the core hands out; the
 * bindings convert in one place each (Node to camelCase, Lua keeps them). */
static json_t *kernel_summary(kh_kernel_t *k) {
  return json_pack("{s:s, s:s, s:s, s:s, s:f, s:i}", "id", k->id, "mode",
                   kh__mode_name(k->opts.mode), "namespace", k->opts.namespace_, "status",
                   kh__kstate_name(k->state), "created", k->created_ms, "execution_count",
                   k->execution_count);
}

char *kh_manager_list(kh_manager_t *m, const char *namespace_) {
  json_t *arr;
  kh_kernel_t *k;
  char *s;
  if (m == NULL) return NULL;
  arr = json_array();
  for (k = m->kernels; k; k = k->next) {
    if (k->state == KH__K_CLOSING) continue;
    if (namespace_ != NULL && strcmp(namespace_, k->opts.namespace_) != 0) continue;
    json_array_append_new(arr, kernel_summary(k));
  }
  s = json_dumps(arr, JSON_COMPACT);
  json_decref(arr);
  return s;
}

char *kh_kernel_info(kh_manager_t *m, const char *kernel_id) {
  kh_kernel_t *k;
  json_t *o;
  char *s;
  if (m == NULL || (k = kh__manager_find(m, kernel_id)) == NULL || k->state == KH__K_CLOSING)
    return NULL;
  o = kernel_summary(k);
  json_object_set(o, "options", k->opts.all);
  if (k->ops->info != NULL) k->ops->info(k, o);
  s = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  return s;
}

/* destroy_all: one countdown shared by the kernels it destroys, plus one count that the call
 * itself holds until its walk is over (released from the loop, so that with nothing to
 * destroy the callback still runs after the call returned). */
typedef struct {
  kh_kernel_done_cb cb;
  void *data;
  int left;
  int count;
} destroy_all_t;

static void on_one_destroyed(kh_manager_t *m, const char *id, int status, const char *errmsg,
                             void *data) {
  destroy_all_t *d = data;
  (void)id;
  (void)status;
  (void)errmsg;
  if (--d->left == 0) {
    kh__deliver_done(m, d->cb, d->data, NULL, d->count, NULL);
    free(d);
  }
}

static void release_walk(kh_manager_t *m, void *arg) {
  on_one_destroyed(m, NULL, 0, NULL, arg);
}

int kh_manager_destroy_all(kh_manager_t *m, const char *namespace_, kh_kernel_done_cb cb,
                           void *data) {
  destroy_all_t *d;
  kh_kernel_t *k, *next;
  int n = 0;
  if (m == NULL) return KH_EINVAL;
  if (m->closing) return KH_ECLOSED;
  for (k = m->kernels; k; k = k->next)
    if (k->state != KH__K_CLOSING &&
        (namespace_ == NULL || strcmp(namespace_, k->opts.namespace_) == 0))
      n++;
  d = calloc(1, sizeof(*d));
  if (d == NULL) return KH_ENOMEM;
  d->cb = cb;
  d->data = data;
  d->count = n;
  /* One extra count, released below, so the callback cannot run before the walk ends. */
  d->left = n + 1;
  m->pending++; /* the destroy-all's own callback */
  for (k = m->kernels; k; k = next) {
    next = k->next;
    if (k->state == KH__K_CLOSING) continue;
    if (namespace_ != NULL && strcmp(namespace_, k->opts.namespace_) != 0) continue;
    if (kh_kernel_destroy(m, k->id, on_one_destroyed, d) != 0) d->left--;
  }
  if (kh__defer(m, release_walk, d) != 0) on_one_destroyed(m, NULL, 0, NULL, d);
  kh__manager_update_ref(m);
  return 0;
}

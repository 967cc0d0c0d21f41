/* inbox.c: the manager's one FIFO of work for the loop, and the sinks that kernel threads (and
 * their Python objects) post into. Posting is Thread: any; draining is Thread: loop, from the
 * manager's uv_async_t.
 *
 * Why one FIFO for everything: a user callback may only run from the loop, never inside the
 * API call that caused it (libuv's rule; STYLE.md). The core therefore never calls a user
 * callback directly: it queues a delivery (kh__defer) behind whatever is already queued,
 * including the events kernel threads posted before. Draining in FIFO order then gives every
 * callback in the order its cause happened, and a callback that calls the API again only
 * queues more work behind itself: there is no re-entrancy for the core to guard against.
 *
 * Cost: one uncontended mutex round trip and, when the inbox was empty, one uv_async_send
 * per delivery (an eventfd write that the drain's own iteration absorbs); measured on the
 * `1+1` round trip in bench/ it is within noise (a few hundred ns against 12-90 us). */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Appends msg to the inbox and wakes the loop if this is the first message since the last
 * drain took the list (a non-empty inbox already has a wake-up on its way). `nowake`: the
 * loop thread posts from inside the drain, which takes this message before it returns; an
 * eventfd write and an empty loop iteration per delivery cost the main_thread 1+1 round trip
 * ~5 us (23 -> 28-35 us, bench/) before this. */
static void inbox_push(kh__inbox_t *in, kh__msg_t *msg, int nowake) {
  int wake;
  uv_mutex_lock(&in->mu);
  wake = in->head == NULL && !nowake;
  if (in->tail)
    in->tail->next = msg;
  else
    in->head = msg;
  in->tail = msg;
  uv_mutex_unlock(&in->mu);
  if (wake) uv_async_send(in->async);
}

static kh__msg_t *inbox_take(kh__inbox_t *in) {
  kh__msg_t *head;
  uv_mutex_lock(&in->mu);
  head = in->head;
  in->head = in->tail = NULL;
  uv_mutex_unlock(&in->mu);
  return head;
}

static void msg_free(kh__msg_t *msg) {
  if (msg->drop != NULL) msg->drop(msg->arg); /* it never ran: its argument is still owned */
  free(msg->data);
  kh__bufs_free(&msg->bufs);
  free(msg);
}

/* --- sinks -------------------------------------------------------------------------------- */

kh__sink_t *kh__sink_new(kh__inbox_t *inbox, uint64_t serial) {
  kh__sink_t *s = calloc(1, sizeof(*s));
  if (s == NULL) return NULL;
  if (uv_mutex_init(&s->mu) != 0) {
    free(s);
    return NULL;
  }
  atomic_init(&s->refs, 1);
  s->inbox = inbox;
  s->serial = serial;
  return s;
}

void kh__sink_ref(kh__sink_t *s) {
  atomic_fetch_add(&s->refs, 1);
}

void kh__sink_unref(kh__sink_t *s) {
  if (atomic_fetch_sub(&s->refs, 1) == 1) {
    uv_mutex_destroy(&s->mu);
    free(s->host_names);
    free(s);
  }
}

void kh__sink_close(kh__sink_t *s) {
  uv_mutex_lock(&s->mu);
  s->closed = 1;
  s->inbox = NULL;
  uv_mutex_unlock(&s->mu);
}

/* Posts msg unless the sink is closed. The sink's mutex is held across the push so that a
 * kernel being released (kh__sink_close) never races a thread still holding the inbox. */
static int sink_push(kh__sink_t *s, kh__msg_t *msg) {
  uv_mutex_lock(&s->mu);
  if (s->closed) {
    uv_mutex_unlock(&s->mu);
    msg->drop = NULL; /* refused: an owned argument stays the caller's */
    msg_free(msg);
    return KH_ECLOSED;
  }
  inbox_push(s->inbox, msg, 0);
  uv_mutex_unlock(&s->mu);
  return 0;
}

int kh__sink_post(kh__sink_t *s, int kind, int type, int status, const char *exec_id,
                  const char *data, size_t len) {
  return kh__sink_post_bufs(s, kind, type, status, exec_id, data, len, NULL);
}

int kh__sink_post_bufs(kh__sink_t *s, int kind, int type, int status, const char *exec_id,
                       const char *data, size_t len, kh__bufs_t *bufs) {
  kh__msg_t *msg = calloc(1, sizeof(*msg));
  if (msg == NULL) {
    kh__bufs_free(bufs);
    return KH_ENOMEM;
  }
  if (bufs != NULL) kh__bufs_move(&msg->bufs, bufs);
  msg->serial = s->serial;
  msg->kind = kind;
  msg->type = type;
  msg->status = status;
  if (exec_id != NULL) { /* cut to fit, as snprintf would, without its formatting cost */
    size_t n = strnlen(exec_id, sizeof(msg->exec_id) - 1);
    memcpy(msg->exec_id, exec_id, n);
    msg->exec_id[n] = '\0';
  }
  if (data != NULL) {
    msg->data = malloc(len + 1);
    if (msg->data == NULL) {
      msg_free(msg);
      return KH_ENOMEM;
    }
    memcpy(msg->data, data, len);
    msg->data[len] = '\0';
    msg->len = len;
  }
  return sink_push(s, msg);
}

int kh__sink_post_call(kh__sink_t *s, kh__kernel_call_fn fn, void *arg) {
  kh__msg_t *msg = calloc(1, sizeof(*msg));
  if (msg == NULL) return KH_ENOMEM;
  msg->serial = s->serial;
  msg->kind = KH__MSG_KCALL;
  msg->kcall = fn;
  msg->arg = arg;
  return sink_push(s, msg);
}

int kh__sink_post_owned(kh__sink_t *s, kh__kernel_call_fn fn, void *arg, void (*drop)(void *)) {
  kh__msg_t *msg = calloc(1, sizeof(*msg));
  if (msg == NULL) return KH_ENOMEM;
  msg->serial = s->serial;
  msg->kind = KH__MSG_KCALL;
  msg->kcall = fn;
  msg->arg = arg;
  msg->drop = drop;
  return sink_push(s, msg);
}

int kh__sink_set_names(kh__sink_t *s, const char *names, size_t len) {
  char *copy = NULL;
  if (names != NULL && (copy = kh__memdup(names, len)) == NULL) return KH_ENOMEM;
  uv_mutex_lock(&s->mu);
  free(s->host_names);
  s->host_names = copy;
  uv_mutex_unlock(&s->mu);
  return 0;
}

int kh__sink_has_name(kh__sink_t *s, const char *name) {
  const char *p;
  int found = 0;
  uv_mutex_lock(&s->mu);
  for (p = s->host_names; p != NULL && *p && !found; p += strlen(p) + 1)
    found = strcmp(p, name) == 0;
  uv_mutex_unlock(&s->mu);
  return found;
}

char *kh__sink_copy_names(kh__sink_t *s, size_t *len) {
  char *copy = NULL;
  const char *p;
  uv_mutex_lock(&s->mu);
  if (s->host_names != NULL) {
    for (p = s->host_names; *p; p += strlen(p) + 1) {
    }
    *len = (size_t)(p - s->host_names) + 1;
    copy = kh__memdup(s->host_names, *len);
  }
  uv_mutex_unlock(&s->mu);
  return copy;
}

/* --- deferred work on the loop ------------------------------------------------------------ */

int kh__defer(kh_manager_t *m, kh__call_fn fn, void *arg) {
  kh__msg_t *msg = calloc(1, sizeof(*msg));
  if (msg == NULL) return KH_ENOMEM;
  msg->kind = KH__MSG_CALL;
  msg->call = fn;
  msg->arg = arg;
  inbox_push(&m->inbox, msg, m->draining || m->held);
  return 0;
}

void kh__inbox_hold(kh_manager_t *m) {
  m->held++;
}

void kh__inbox_release(kh_manager_t *m) {
  if (--m->held == 0 && !m->draining && !kh__inbox_empty(m)) uv_async_send(&m->async);
}

void kh__inbox_drain(kh_manager_t *m) {
  kh__msg_t *msg;
  /* Messages queued while one runs land behind the list taken here; the outer loop takes
   * them too, so a burst of deliveries costs one wake-up, not one per message. */
  m->draining = 1;
  while ((msg = inbox_take(&m->inbox)) != NULL) {
    while (msg) {
      kh__msg_t *next = msg->next;
      if (msg->kind == KH__MSG_CALL) {
        msg->call(m, msg->arg);
      } else {
        /* Kernels are found by serial, not pointer: a kernel that left (and maybe a new one
         * at the same address) must not receive its predecessor's late messages. */
        kh_kernel_t *k = kh__manager_find_serial(m, msg->serial);
        if (k != NULL) {
          msg->drop = NULL; /* it runs: a call it carries takes its argument over */
          kh__kernel_dispatch_msg(k, msg);
        }
      }
      msg_free(msg);
      msg = next;
    }
  }
  m->draining = 0;
}

int kh__inbox_empty(kh_manager_t *m) {
  int empty;
  uv_mutex_lock(&m->inbox.mu);
  empty = m->inbox.head == NULL;
  uv_mutex_unlock(&m->inbox.mu);
  return empty;
}

void kh__inbox_discard(kh_manager_t *m) {
  kh__msg_t *msg;
  m->inbox_discarding = 1;
  m->draining = 1; /* the async handle is closed: whatever is posted now needs no wake-up */
  while ((msg = inbox_take(&m->inbox)) != NULL) {
    while (msg) {
      kh__msg_t *next = msg->next;
      /* A deferred call owns its argument: it runs in discard mode to free it. */
      if (msg->kind == KH__MSG_CALL) msg->call(m, msg->arg);
      msg_free(msg);
      msg = next;
    }
  }
}

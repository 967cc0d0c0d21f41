/* delivery.c: the only place that calls user callbacks. Each delivery copies what the callback
 * will see, queues itself in the manager's inbox (kh__defer) and runs from the drain, after
 * everything that happened before it. Thread: loop.
 *
 * A delivery copies the kernel id instead of holding the kernel: the kernel may be freed
 * before its last deliveries run (a destroy's completion is delivered after the kernel left
 * the manager, which is what its callback must see), and nothing here touches it again.
 *
 * m->pending counts callbacks promised and not yet run; a delivery of a counted callback
 * drops it just before the callback runs, so kh_manager_pending_count() seen from inside the
 * callback no longer includes it, and the loop stays referenced until the callback ran (a
 * count dropped at queueing time could let uv_run() return with the delivery still queued). */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef enum { D_EVENT = 1, D_REPLY, D_DONE, D_CREATE } dkind_t;

typedef struct {
  dkind_t kind;
  int status;
  int type;
  int execution_count;
  char kernel_id[KH__ID_MAX];
  char exec_id[KH__EXEC_ID_MAX];
  char reply_status[16]; /* "ok", "error", "aborted" or "" */
  char *json;            /* owned, may be NULL */
  size_t json_len;
  char *errmsg; /* owned, may be NULL */
  kh__bufs_t bufs; /* owned references: json's binary values */
  union {
    kh_execute_cb execute;
    kh_kernel_done_cb done;
    kh_kernel_create_cb create;
  } cb;
  void *data;
} delivery_t;

static void delivery_free(delivery_t *d) {
  free(d->json);
  free(d->errmsg);
  kh__bufs_free(&d->bufs);
  free(d);
}

static void run_delivery(kh_manager_t *m, void *arg) {
  delivery_t *d = arg;
  if (m->inbox_discarding) {
    /* The manager is gone past its close callback: nobody may be called any more. Only
     * events can be left here (every callback was delivered before the close). */
    delivery_free(d);
    return;
  }
  if (d->kind != D_EVENT) m->pending--;
  switch (d->kind) {
    case D_EVENT: {
      kh_event_t ev;
      ev.type = (kh_event_type_t)d->type;
      ev.type_name = kh_event_type_name(d->type);
      ev.kernel_id = d->kernel_id;
      ev.execution_id = d->exec_id;
      ev.json = d->json ? d->json : "{}";
      ev.json_len = d->json ? d->json_len : 2;
      ev.buffers = kh__bufs_view(&d->bufs, &ev.nbuffers);
      if (ev.buffers != NULL || d->bufs.n == 0) kh__bus_dispatch(m, &ev);
      free((void *)ev.buffers);
      break;
    }
    case D_REPLY: {
      kh_reply_t rep;
      memset(&rep, 0, sizeof(rep));
      rep.kernel_id = d->kernel_id;
      rep.execution_id = d->exec_id;
      rep.status = d->reply_status[0] ? d->reply_status : NULL;
      rep.execution_count = d->execution_count;
      rep.json = d->json;
      rep.json_len = d->json_len;
      rep.errmsg = d->errmsg;
      rep.buffers = kh__bufs_view(&d->bufs, &rep.nbuffers);
      if (rep.buffers == NULL && d->bufs.n > 0) { /* no memory for the views: say so */
        rep.json = NULL;
        rep.status = NULL;
        rep.errmsg = "out of memory delivering the reply";
        d->status = KH_ENOMEM;
      }
      d->cb.execute(m, &rep, d->status, d->data);
      free((void *)rep.buffers);
      break;
    }
    case D_DONE:
      d->cb.done(m, d->kernel_id[0] ? d->kernel_id : NULL, d->status, d->errmsg, d->data);
      break;
    case D_CREATE:
      d->cb.create(m, d->kernel_id, d->status, d->errmsg, d->data);
      break;
  }
  delivery_free(d);
  kh__manager_update_ref(m);
}

/* Copies an id or a short word, cut to fit. Not snprintf("%s"): three deliveries a request
 * with two ids each made formatting ~1.2k of the 3.5k instructions the queue added to 1+1
 * (callgrind, kh_bench_c host). */
static void copy_str(char *dst, const char *src, size_t size) {
  size_t n = strlen(src);
  if (n >= size) n = size - 1;
  memcpy(dst, src, n);
  dst[n] = '\0';
}

/* Allocates a delivery with copies of the two ids and the JSON text; NULL when out of memory. */
static delivery_t *delivery_new(dkind_t kind, const char *kernel_id, const char *exec_id,
                                const char *json, size_t len, const char *errmsg) {
  delivery_t *d = calloc(1, sizeof(*d));
  if (d == NULL) return NULL;
  d->kind = kind;
  if (kernel_id) copy_str(d->kernel_id, kernel_id, sizeof(d->kernel_id));
  if (exec_id) copy_str(d->exec_id, exec_id, sizeof(d->exec_id));
  if (json != NULL && (d->json = kh__memdup(json, len + 1)) == NULL) goto oom;
  if (d->json) d->json[len] = '\0';
  d->json_len = len;
  if (errmsg != NULL && (d->errmsg = kh__strdup(errmsg)) == NULL) goto oom;
  return d;
oom:
  delivery_free(d);
  return NULL;
}

/* Queues d; when even that fails, the promised callback is lost, but its count is released so
 * the manager can still close. Out of memory on the loop thread leaves no better choice. */
static void queue(kh_manager_t *m, delivery_t *d, int counted) {
  if (d != NULL && kh__defer(m, run_delivery, d) == 0) return;
  if (d != NULL) delivery_free(d);
  if (counted) m->pending--;
}

void kh__deliver_event(kh_manager_t *m, const char *kernel_id, int type, const char *exec_id,
                       const char *json, size_t len, const kh__bufs_t *bufs) {
  delivery_t *d;
  size_t i;
  if (m->subs == NULL) return; /* nobody listens: nothing to copy */
  d = delivery_new(D_EVENT, kernel_id, exec_id ? exec_id : "", json, len, NULL);
  if (d != NULL) d->type = type;
  for (i = 0; d != NULL && bufs != NULL && i < bufs->n; i++) {
    if (kh__bufs_add(&d->bufs, NULL, bufs->v[i].path, bufs->v[i].blob) != 0) {
      delivery_free(d);
      d = NULL;
    }
  }
  queue(m, d, 0);
}

void kh__deliver_reply(kh_manager_t *m, kh_execute_cb cb, void *data, const kh_reply_t *rep,
                       int status, char *owned_json, kh__bufs_t *bufs) {
  /* A reply carries every event of its cell (a 1 MB figure is 1 MB here): take the buffer
   * that was built for it rather than copy it. */
  delivery_t *d = delivery_new(D_REPLY, rep->kernel_id, rep->execution_id,
                               owned_json ? NULL : rep->json, rep->json_len, rep->errmsg);
  if (d == NULL) {
    free(owned_json);
    kh__bufs_free(bufs);
  }
  if (d != NULL) {
    if (owned_json != NULL) d->json = owned_json;
    if (bufs != NULL) kh__bufs_move(&d->bufs, bufs);
    d->cb.execute = cb;
    d->data = data;
    d->status = status;
    d->execution_count = rep->execution_count;
    if (rep->status) copy_str(d->reply_status, rep->status, sizeof(d->reply_status));
  }
  queue(m, d, 1);
}

/* A completion (done or create): both carry a kernel id, a status and an error text. */
static void deliver_completion(kh_manager_t *m, dkind_t kind, void (*cb)(void), void *data,
                               const char *kernel_id, int status, const char *errmsg) {
  delivery_t *d;
  if (cb == NULL) { /* counted all the same: the call that took it promised to end */
    m->pending--;
    return;
  }
  d = delivery_new(kind, kernel_id, NULL, NULL, 0, errmsg);
  if (d != NULL) {
    if (kind == D_DONE)
      d->cb.done = (kh_kernel_done_cb)cb;
    else
      d->cb.create = (kh_kernel_create_cb)cb;
    d->data = data;
    d->status = status;
  }
  queue(m, d, 1);
}

void kh__deliver_done(kh_manager_t *m, kh_kernel_done_cb cb, void *data, const char *kernel_id,
                      int status, const char *errmsg) {
  deliver_completion(m, D_DONE, (void (*)(void))cb, data, kernel_id, status, errmsg);
}

void kh__deliver_create(kh_manager_t *m, kh_kernel_create_cb cb, void *data, const char *kernel_id,
                        int status, const char *errmsg) {
  deliver_completion(m, D_CREATE, (void (*)(void))cb, data, kernel_id, status, errmsg);
}

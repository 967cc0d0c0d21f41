/* sink.c: the thread-safe path from kernel threads (and their Python objects) to the loop: a
 * refcounted sink per kernel posting into the manager's inbox, woken by one uv_async_t. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

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
    free(s);
  }
}

void kh__sink_close(kh__sink_t *s) {
  uv_mutex_lock(&s->mu);
  s->closed = 1;
  s->inbox = NULL;
  uv_mutex_unlock(&s->mu);
}

int kh__sink_post(kh__sink_t *s, int kind, int type, int status, const char *exec_id,
                  const char *data, size_t len) {
  kh__msg_t *msg = calloc(1, sizeof(*msg));
  kh__inbox_t *in;
  int wake;
  if (msg == NULL) return KH_ENOMEM;
  msg->serial = s->serial;
  msg->kind = kind;
  msg->type = type;
  msg->status = status;
  if (exec_id != NULL) snprintf(msg->exec_id, sizeof(msg->exec_id), "%s", exec_id);
  if (data != NULL) {
    msg->data = malloc(len + 1);
    if (msg->data == NULL) {
      free(msg);
      return KH_ENOMEM;
    }
    memcpy(msg->data, data, len);
    msg->data[len] = '\0';
    msg->len = len;
  }
  uv_mutex_lock(&s->mu);
  if (s->closed) {
    uv_mutex_unlock(&s->mu);
    kh__msg_free(msg);
    return KH_ECLOSED;
  }
  in = s->inbox;
  uv_mutex_lock(&in->mu);
  wake = in->head == NULL; /* a non-empty inbox already has a wake-up on its way */
  if (in->tail)
    in->tail->next = msg;
  else
    in->head = msg;
  in->tail = msg;
  uv_mutex_unlock(&in->mu);
  if (wake) uv_async_send(in->async);
  uv_mutex_unlock(&s->mu);
  return 0;
}

kh__msg_t *kh__inbox_take(kh__inbox_t *in) {
  kh__msg_t *head;
  uv_mutex_lock(&in->mu);
  head = in->head;
  in->head = in->tail = NULL;
  uv_mutex_unlock(&in->mu);
  return head;
}

void kh__msg_free(kh__msg_t *msg) {
  if (msg == NULL) return;
  free(msg->data);
  free(msg);
}

/* bus.c: event subscriptions (per kernel, per type, or everything) and their dispatch to
 * subscribers. Thread: loop. Dispatch only ever runs from the inbox's drain (delivery.c or a
 * kernel thread's event), never inside an API call.
 *
 * A subscriber may subscribe or unsubscribe from inside its callback (a "wait for this one
 * event" helper removes itself). So removal only marks a subscription; it is unlinked when no
 * dispatch is running (dispatch_depth is 0), which keeps the list that a running dispatch
 * walks intact. Subscriptions made during a dispatch do not see the event being dispatched:
 * they subscribed after it happened. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int kh_subscribe(kh_manager_t *m, const char *kernel_id, int type, kh_event_cb cb, void *data,
                 int64_t *sub_id_out) {
  kh__sub_t *s, **tail;
  if (sub_id_out != NULL) *sub_id_out = 0;
  if (m == NULL || cb == NULL || type < 0 || type >= KH_EVENT_TYPE_MAX_) return KH_EINVAL;
  if (m->closing) return KH_ECLOSED;
  s = calloc(1, sizeof(*s));
  if (s == NULL) return KH_ENOMEM;
  if (kernel_id != NULL && (s->kernel_id = kh__strdup(kernel_id)) == NULL) {
    free(s);
    return KH_ENOMEM;
  }
  /* Ids only grow, never reused: an old id unsubscribes nothing by accident. */
  s->id = ++m->next_sub_id;
  s->type = type;
  s->cb = cb;
  s->data = data;
  /* Append, so subscribers run in the order they subscribed. */
  for (tail = &m->subs; *tail; tail = &(*tail)->next) {
  }
  *tail = s;
  if (sub_id_out != NULL) *sub_id_out = s->id;
  return 0;
}

static void sweep(kh_manager_t *m) {
  kh__sub_t **p = &m->subs;
  while (*p) {
    kh__sub_t *s = *p;
    if (s->removed) {
      *p = s->next;
      free(s->kernel_id);
      free(s);
    } else {
      p = &s->next;
    }
  }
  m->subs_dirty = 0;
}

int kh_unsubscribe(kh_manager_t *m, int64_t sub_id) {
  kh__sub_t *s;
  if (m == NULL) return KH_EINVAL;
  for (s = m->subs; s; s = s->next) {
    if (s->id == sub_id && !s->removed) {
      s->removed = 1;
      m->subs_dirty = 1;
      if (m->dispatch_depth == 0) sweep(m);
      return 0;
    }
  }
  return KH_ENOTFOUND;
}

void kh__bus_dispatch(kh_manager_t *m, const kh_event_t *ev) {
  kh__sub_t *s;
  int64_t last;
  if (m->subs == NULL) return;
  /* Subscriptions made during this dispatch do not see this event. */
  last = m->next_sub_id;
  m->dispatch_depth++;
  for (s = m->subs; s; s = s->next) {
    if (s->removed || s->id > last) continue;
    if (s->type != KH_EVENT_ALL && s->type != (int)ev->type) continue;
    if (s->kernel_id != NULL && strcmp(s->kernel_id, ev->kernel_id) != 0) continue;
    s->cb(m, ev, s->data);
  }
  m->dispatch_depth--;
  if (m->dispatch_depth == 0 && m->subs_dirty) sweep(m);
}

void kh__bus_free_all(kh_manager_t *m) {
  kh__sub_t *s;
  for (s = m->subs; s; s = s->next) s->removed = 1;
  m->subs_dirty = 1;
  if (m->dispatch_depth == 0) sweep(m);
}

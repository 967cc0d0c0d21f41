/* worker-pool.c: the manager's warm pool of worker processes (manager option pool.size):
 * spawned ahead of need, Python already up, claimed by kernels at creation and refilled. A
 * warm worker serves any option set, because permissions, mounts, env and cwd are applied when
 * it is claimed (the "open" message). Worker-backend state, per manager. Thread: loop. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define POOL_MAX_FAILURES 3 /* pool workers dying before "hello": stop refilling */

typedef struct {
  uv_loop_t *loop;
  kh_manager_t *m; /* NULL once the manager closed: the pool then drains and frees itself */
  kh__wproc_t *procs;
  int count;    /* processes in procs */
  int failures; /* in a row, before "hello": a broken worker is not respawned forever */
  /* The manager's reference (until kh__wpool_close) plus one per process the pool holds that
   * has not closed yet (util.c's scheme): the pool outlives the manager until its last
   * killed worker is reaped. */
  kh__refs_t refs;
} pool_t;

static void pool_free(kh__refs_t *r) {
  free((char *)r - offsetof(pool_t, refs));
}

/* The pool hangs off its manager only as the worker backend's per-manager state. */
static pool_t *pool_of(kh_manager_t *m) {
  return m->backend_state[KH__BACKEND_WORKER];
}

static void pool_fill(pool_t *p);

/* A pooled process may say "hello" and nothing else until it is claimed (worker-proc.c refuses
 * every other message before "open"). */
static void pool_frame(void *holder, kh__wproc_t *w, kh__pmsg_t kind, json_t *msg, const char *data,
                       size_t len) {
  pool_t *p = holder;
  (void)w;
  (void)msg;
  (void)data;
  (void)len;
  if (kind == KH__P_HELLO) p->failures = 0;
}

static void pool_exited(void *holder, kh__wproc_t *w) {
  pool_t *p = holder;
  kh__wproc_t **pp;
  for (pp = &p->procs; *pp; pp = &(*pp)->next) {
    if (*pp == w) {
      *pp = w->next;
      p->count--;
      if (w->phase == KH__WP_SPAWNED) p->failures++;
      break;
    }
  }
  if (p->m != NULL) pool_fill(p);
}

static void pool_closed(void *holder) {
  pool_t *p = holder;
  kh__refs_put(&p->refs);
}

static const kh__wproc_cbs_t pool_cbs = {pool_frame, pool_exited, pool_closed};

static void pool_fill(pool_t *p) {
  char path[4096], err[KH__ERRMSG_MAX];
  while (p->m != NULL && p->count < p->m->opts.pool_size && p->failures < POOL_MAX_FAILURES) {
    kh__wproc_t *w;
    if (kh__wproc_path(p->m, path, sizeof(path), err) != 0 ||
        kh__wproc_spawn(p->loop, path, NULL, &pool_cbs, p, &w, err) != 0)
      return; /* kernels will get the error at creation */
    w->next = p->procs;
    p->procs = w;
    p->count++;
    kh__refs_get(&p->refs);
  }
}

void kh__wpool_open(kh_manager_t *m) {
  pool_t *p;
  if (m->opts.pool_size <= 0) return;
  p = calloc(1, sizeof(*p));
  if (p == NULL) return; /* no pool: kernels start cold */
  p->loop = m->loop;
  p->m = m;
  kh__refs_init(&p->refs, pool_free);
  kh__refs_get(&p->refs); /* the manager's */
  m->backend_state[KH__BACKEND_WORKER] = p;
  pool_fill(p);
}

void kh__wpool_close(kh_manager_t *m) {
  pool_t *p = pool_of(m);
  kh__wproc_t *w;
  if (p == NULL) return;
  m->backend_state[KH__BACKEND_WORKER] = NULL;
  p->m = NULL;
  while ((w = p->procs) != NULL) {
    p->procs = w->next;
    p->count--;
    kh__wproc_kill(w);
  }
  kh__refs_put(&p->refs); /* the manager's */
}

/* Options that only a process's start can apply: variables read by the dynamic loader and the
 * C library before main() (LD_PRELOAD, LD_LIBRARY_PATH, MALLOC_*, GLIBC_TUNABLES). */
static int needs_fresh_process(const json_t *env) {
  json_t *v;
  const char *key;
  json_object_foreach((json_t *)env, key, v) {
    if (strncmp(key, "LD_", 3) == 0 || strncmp(key, "MALLOC_", 7) == 0 ||
        strcmp(key, "GLIBC_TUNABLES") == 0)
      return 1;
  }
  return 0;
}

kh__wproc_t *kh__wpool_claim(kh_manager_t *m, const json_t *env, const kh__wproc_cbs_t *cbs,
                             void *holder) {
  pool_t *p = pool_of(m);
  kh__wproc_t *w, **pp, **best = NULL;
  if (p == NULL || p->procs == NULL || needs_fresh_process(env)) return NULL;
  /* Prefer a warm worker; one still starting is still ahead of a cold spawn. */
  for (pp = &p->procs; *pp; pp = &(*pp)->next)
    if (best == NULL || (*pp)->phase == KH__WP_HELLO) best = pp;
  w = *best;
  *best = w->next;
  w->next = NULL;
  p->count--;
  kh__refs_put(&p->refs); /* the new holder counts it from now on (the manager's ref stays) */
  w->cbs = cbs;
  w->holder = holder;
  pool_fill(p);
  return w;
}

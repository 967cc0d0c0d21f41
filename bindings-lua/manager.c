/* manager.c: kernelhost.Manager, the userdata that owns a core manager and the private libuv
 * loop it runs on. Owns running that loop (blocking calls, poll(), run()), the embedding hooks
 * fd() and timeout(), the calls that complete through a kh_kernel_done_cb, and shutdown from
 * close(), __close and __gc. Loop thread: the Lua thread that calls in runs the loop itself. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lkh.h"

/* What a create, destroy, restart or destroy_all waits for: on the C stack while a blocking call
 * runs the loop (fnref == LUA_NOREF), or on the heap with the Lua callback of a non-blocking
 * call, freed once that callback ran. */
typedef struct {
  lkh_manager_t *lm;
  int fnref;
  const char *where; /* static: names the call in error reports ("restart") */
  int done;
  int status; /* 0, a count (destroy_all) or a negative code */
  char kernel_id[LKH_ID_MAX];
  char errmsg[512];
} lkh_wait_t;

static char lkh_managers_key; /* registry: weak table, lightuserdata(lm) -> manager userdata */

/* --- the userdata ------------------------------------------------------------------------- */

static lkh_manager_t **lkh_manager_slot(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, LKH_MANAGER_MT);
}

/* The manager at idx, open; raises on a wrong type, returns NULL when closed. */
lkh_manager_t *lkh_manager_get(lua_State *L, int idx) {
  lkh_manager_t *lm = *lkh_manager_slot(L, idx);
  if (lm == NULL || lm->closing || lm->m == NULL) return NULL;
  return lm;
}

/* Pushes lm's userdata and returns 1, or pushes nil and returns 0 once it was collected. The
 * table is weak so that this lookup never keeps a manager alive. */
int lkh_manager_push(lua_State *L, lkh_manager_t *lm) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &lkh_managers_key); /* managers */
  if (lua_rawgetp(L, -1, lm) != LUA_TUSERDATA) {        /* managers, ud|nil */
    lua_pop(L, 2);                                      /* */
    lua_pushnil(L);                                     /* nil */
    return 0;
  }
  lua_remove(L, -2); /* ud */
  return 1;
}

/* --- the loop ----------------------------------------------------------------------------- */

static void lkh_manager_on_count(kh_manager_t *m, const kh_event_t *ev, void *data) {
  lkh_manager_t *lm = data;
  (void)m;
  (void)ev;
  lm->dispatched++;
}

static void lkh_manager_on_closed(kh_manager_t *m, void *data) {
  lkh_manager_t *lm = data;
  (void)m;
  lm->closed = 1;
  lm->m = NULL;
}

static void lkh_manager_on_keepalive(uv_async_t *h) {
  (void)h;
}

static void lkh_manager_on_poll_timer(uv_timer_t *t) {
  lkh_manager_t *lm = t->data;
  lm->poll_expired = 1;
}

/* Runs the loop once on L's behalf: the callbacks it runs are called on L, and blocking calls
 * from them are refused (depth), since uv_run must not be entered again from inside. The core
 * calls back only from the loop, never inside an API call (kernelhost.h's delivery rule), so
 * this is the one place that says which Lua thread callbacks run on: lm->L is set exactly
 * while the loop runs. */
static void lkh_manager_step(lkh_manager_t *lm, lua_State *L, uv_run_mode mode) {
  lm->L = L;
  lm->depth++;
  uv_run(&lm->loop, mode);
  lm->depth--;
  lm->L = NULL;
}

/* Runs the loop on L's behalf until *flag is set. */
void lkh_manager_wait(lkh_manager_t *lm, lua_State *L, int *flag) {
  while (!*flag) lkh_manager_step(lm, L, UV_RUN_ONCE);
}

static void lkh_manager_walk_report(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h))
    fprintf(stderr, "kernelhost: handle left open on a closed manager (type %d)\n", (int)h->type);
}

/* Closes the manager: its kernels (pending requests complete with KH_ECANCELED), then its
 * handles and the loop. Inside a callback the close only starts (the loop that runs the
 * callback cannot be run again from inside it); a later call, or __gc, finishes it. */
static void lkh_manager_shutdown(lkh_manager_t *lm, lua_State *L) {
  if (lm->loop_closed) return;
  if (!lm->closing) {
    /* Host calls still waiting for the host get their answer first: no cell waits on a
     * handle that can no longer reach the core. */
    lkh_hostcall_cancel(lm, 1);
    lm->closing = 1;
    if (kh_manager_close(lm->m, lkh_manager_on_closed, lm) != 0) lm->closed = 1;
  }
  if (lm->depth > 0) return;
  lkh_manager_wait(lm, L, &lm->closed);
  lm->m = NULL;
  uv_close((uv_handle_t *)&lm->keepalive, NULL);
  uv_close((uv_handle_t *)&lm->poll_timer, NULL);
  lkh_manager_step(lm, L, UV_RUN_DEFAULT); /* the close callbacks of those two */
  lkh_events_free(lm, L);
  if (uv_loop_close(&lm->loop) == 0) {
    lm->loop_closed = 1;
  } else {
    /* Something still refers to the loop: leaking it is safer than freeing it. */
    uv_walk(&lm->loop, lkh_manager_walk_report, NULL);
  }
}

/* --- calls that complete through a kh_kernel_done_cb ---------------------------------------- */

typedef int (*lkh_done_op_t)(kh_manager_t *m, const char *arg, kh_kernel_done_cb cb, void *data);

/* The completion of a create, destroy, restart or destroy_all. A blocking call reads *w once its
 * loop run returns; a non-blocking one gets fn(true | count) or fn(nil, msg, code) here. */
static void lkh_wait_on_done(kh_manager_t *m, const char *id, int status, const char *errmsg,
                             void *data) {
  lkh_wait_t *w = data;
  lkh_manager_t *lm = w->lm;
  lua_State *L = lm->L;
  (void)m;
  (void)id;
  w->done = 1;
  w->status = status;
  snprintf(w->errmsg, sizeof(w->errmsg), "%s", errmsg ? errmsg : "");
  if (w->fnref == LUA_NOREF) return;
  lm->dispatched++;
  if (!lm->quiet && L != NULL) {
    luaL_checkstack(L, 4, "kernelhost completion");
    lkh_events_push(L, lm, w->fnref); /* fn */
    if (status < 0) {
      lkh_fail(L, status, w->errmsg); /* fn, nil, msg, code */
      lkh_events_call(lm, L, 3, w->kernel_id, "", w->where);
    } else {
      lua_pushboolean(L, 1); /* fn, true */
      lkh_events_call(lm, L, 1, w->kernel_id, "", w->where);
    }
  }
  if (L != NULL) lkh_events_unref(L, lm, w->fnref);
  free(w);
}

/* Runs op(arg): with a Lua function at index fn (0: none) it returns true at once and the
 * function runs from the loop once op completed; without one it blocks until then and returns
 * true, or the count when count is set (destroy_all). Failures: nil, msg, code. */
static int lkh_manager_done_call(lua_State *L, lkh_manager_t *lm, lkh_done_op_t op, const char *arg,
                                 int fn, const char *where, int count) {
  lkh_wait_t bw, *w = &bw;
  int rc;
  if (fn == 0 && lm->depth > 0) return lkh_fail_busy(L, where);
  if (fn != 0 && (w = calloc(1, sizeof(*w))) == NULL) return luaL_error(L, "out of memory");
  memset(w, 0, sizeof(*w));
  w->lm = lm;
  w->where = where;
  w->fnref = fn != 0 ? lkh_events_ref(L, lm, fn) : LUA_NOREF;
  snprintf(w->kernel_id, sizeof(w->kernel_id), "%s", arg ? arg : "");
  rc = op(lm->m, arg, lkh_wait_on_done, w);
  if (rc == 0) lkh_hostcall_cancel(lm, 0); /* a destroyed kernel's calls: answered, inert */
  if (rc != 0) {
    if (fn != 0) {
      lkh_events_unref(L, lm, w->fnref);
      free(w);
    }
    return lkh_fail(L, rc, kh_manager_errmsg(lm->m));
  }
  if (fn == 0) {
    lkh_manager_wait(lm, L, &w->done);
    if (w->status < 0) return lkh_fail(L, w->status, w->errmsg);
    if (count) {
      lua_pushinteger(L, w->status);
      return 1;
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* The optional callback argument at idx: its index, or 0 when absent. */
int lkh_manager_opt_fn(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return 0;
  luaL_checktype(L, idx, LUA_TFUNCTION);
  return idx;
}

/* --- methods ------------------------------------------------------------------------------ */

/* KernelManager.new([opts]) -> manager | nil, msg, code */
static int lkh_manager_new(lua_State *L) {
  lkh_manager_t **slot, *lm;
  char *opts, bad[320];
  int rc;
  if (lkh_values_check_opts(L, 1, bad, sizeof(bad))) return lkh_fail(L, KH_EOPTION, bad);
  opts = lkh_values_encode_opts(L, 1);
  slot = lua_newuserdatauv(L, sizeof(*slot), 3); /* ud */
  *slot = NULL;
  luaL_setmetatable(L, LKH_MANAGER_MT);
  lua_newtable(L);          /* ud, cache */
  lua_createtable(L, 0, 1); /* ud, cache, mt */
  lua_pushliteral(L, "v");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);     /* ud, cache */
  lua_setiuservalue(L, -2, 1); /* ud: uservalue 1 caches kernel objects by id */
  lua_newtable(L);             /* ud, fns */
  lua_setiuservalue(L, -2, 2); /* ud: uservalue 2 holds the callbacks (events.c) */
  lua_newtable(L);             /* ud, comms */
  lua_setiuservalue(L, -2, 3); /* ud: uservalue 3 holds the comm objects (comm.c) */
  lm = calloc(1, sizeof(*lm));
  if (lm == NULL) {
    free(opts);
    return luaL_error(L, "out of memory");
  }
  if ((rc = uv_loop_init(&lm->loop)) != 0) {
    free(opts);
    free(lm);
    return lkh_fail(L, rc, uv_strerror(rc));
  }
  rc = kh_manager_new(&lm->m, &lm->loop, opts);
  free(opts);
  if (rc != 0) {
    uv_loop_close(&lm->loop);
    free(lm);
    return lkh_fail(L, rc, kh_manager_errmsg(NULL));
  }
  uv_async_init(&lm->loop, &lm->keepalive, lkh_manager_on_keepalive);
  uv_timer_init(&lm->loop, &lm->poll_timer);
  lm->poll_timer.data = lm;
  kh_subscribe(lm->m, NULL, KH_EVENT_ALL, lkh_manager_on_count, lm, &lm->count_sub);
  *slot = lm;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &lkh_managers_key); /* ud, managers */
  lua_pushvalue(L, -2);                                 /* ud, managers, ud */
  lua_rawsetp(L, -2, lm);                               /* ud, managers */
  lua_pop(L, 1);                                        /* ud */
  /* Registers the loop's watchers with its backend, so fd() is live from the start. */
  lkh_manager_step(lm, L, UV_RUN_NOWAIT);
  return 1;
}

static int lkh_manager_gc(lua_State *L) {
  lkh_manager_t **slot = lkh_manager_slot(L, 1);
  lkh_manager_t *lm = *slot;
  if (lm == NULL) return 0;
  if (!lm->loop_closed) {
    lm->quiet = 1; /* a collected manager calls no Lua function any more */
    lkh_manager_shutdown(lm, L);
  }
  *slot = NULL;
  if (lm->loop_closed) free(lm);
  return 0;
}

/* manager:close() -> true. Also the manager's __close. */
static int lkh_manager_close(lua_State *L) {
  lkh_manager_t *lm = *lkh_manager_slot(L, 1);
  if (lm != NULL) lkh_manager_shutdown(lm, L);
  lua_pushboolean(L, 1);
  return 1;
}

static int lkh_manager_tostring(lua_State *L) {
  lkh_manager_t *lm = *lkh_manager_slot(L, 1);
  lua_pushfstring(L, "kernelhost.Manager (%s): %p", lm == NULL || lm->closing ? "closed" : "open",
                  (void *)lm);
  return 1;
}

/* Creates a kernel from the options table at `arg` (remote_id NULL), or attaches to the
 * gateway's kernel remote_id; blocks until it is ready and returns its id | nil, msg, code. */
static int lkh_manager_start_kernel(lua_State *L, const char *remote_id, int arg,
                                    const char *where) {
  lkh_manager_t *lm = lkh_manager_get(L, 1);
  char *opts, bad[320];
  lkh_wait_t w;
  int rc;
  if (lkh_values_check_opts(L, arg, bad, sizeof(bad))) return lkh_fail(L, KH_EOPTION, bad);
  opts = lkh_values_encode_opts(L, arg);
  if (lm == NULL || lm->depth > 0) {
    free(opts);
    return lm == NULL ? lkh_fail_closed(L) : lkh_fail_busy(L, where);
  }
  memset(&w, 0, sizeof(w));
  w.lm = lm;
  w.fnref = LUA_NOREF;
  if (remote_id == NULL)
    rc = kh_kernel_create(lm->m, opts, w.kernel_id, sizeof(w.kernel_id), lkh_wait_on_done, &w);
  else
    rc = kh_kernel_connect(lm->m, remote_id, opts, w.kernel_id, sizeof(w.kernel_id),
                           lkh_wait_on_done, &w);
  free(opts);
  if (rc != 0) return lkh_fail(L, rc, kh_manager_errmsg(lm->m));
  lkh_manager_wait(lm, L, &w.done);
  if (w.status != 0) return lkh_fail(L, w.status, w.errmsg);
  lua_pushstring(L, w.kernel_id);
  return 1;
}

/* manager:create_kernel([opts]) -> id | nil, msg, code. Blocks until the kernel is ready. */
static int lkh_manager_create_kernel(lua_State *L) {
  return lkh_manager_start_kernel(L, NULL, 2, "manager:create_kernel");
}

/* manager:connect_kernel(remote_id[, opts]) -> id | nil, msg, code: attaches to the gateway's
 * running kernel remote_id as a mode "remote" kernel (kh_kernel_connect; the local id is
 * remote_id unless opts.id is given; destroying it leaves the remote kernel running unless
 * opts.shutdown is true). Blocks until it is ready. */
static int lkh_manager_connect_kernel(lua_State *L) {
  const char *remote_id = luaL_checkstring(L, 2);
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
  return lkh_manager_start_kernel(L, remote_id, 3, "manager:connect_kernel");
}

/* Asks the gateway for `what` (kh_gateway_list), or with `what` NULL waits for the pool
 * (kh_manager_pool_ready), and blocks until it answers. */
static int lkh_manager_ask(lua_State *L, const char *what, const char *where) {
  lkh_manager_t *lm = lkh_manager_get(L, 1);
  lkh_answer_t a;
  memset(&a, 0, sizeof(a));
  if (lm == NULL) return lkh_fail_closed(L);
  if (lm->depth > 0) return lkh_fail_busy(L, where);
  return lkh_answer_finish(L, lm, &a,
                           what != NULL ? kh_gateway_list(lm->m, what, lkh_answer_on_answer, &a)
                                        : kh_manager_pool_ready(lm->m, lkh_answer_on_answer, &a));
}

/* manager:list_remote_kernels() -> {{id, name, last_activity, execution_state, connections},
 * ...} | nil, msg, code: every kernel the gateway runs (GET /api/kernels). Blocks. */
static int lkh_manager_list_remote_kernels(lua_State *L) {
  return lkh_manager_ask(L, "kernels", "manager:list_remote_kernels");
}

/* manager:list_kernelspecs() -> {default, kernelspecs = {name = {name, spec, resources}}} |
 * nil, msg, code: the gateway's kernelspecs (GET /api/kernelspecs). Blocks. */
static int lkh_manager_list_kernelspecs(lua_State *L) {
  return lkh_manager_ask(L, "kernelspecs", "manager:list_kernelspecs");
}

/* manager:pool_ready() -> {mode, size, waiting, and for a fork server preload, state, pid,
 * restarts, forked, last_exit, error?} | nil, msg, code: blocks until the pool has settled
 * (kh_manager_pool_ready; KH_ENOTSUP: no pool, KH_EOPTION: a preload module failed to import,
 * KH_EWORKER: the fork server cannot start). */
static int lkh_manager_pool_ready(lua_State *L) {
  return lkh_manager_ask(L, NULL, "manager:pool_ready");
}

/* manager:get_kernel(id) -> kernel | nil, msg, "KH_ENOTFOUND" */
static int lkh_manager_get_kernel(lua_State *L) {
  lkh_manager_t *lm = lkh_manager_get(L, 1);
  const char *id = luaL_checkstring(L, 2);
  if (lm == NULL) return lkh_fail_closed(L);
  return lkh_kernel_push(L, lm, 1, id);
}

/* Pushes the kernel description (an object) or list (an array of them) in text, which the core
 * allocated: it is freed here. The core's keys are snake_case already, Lua's style, so the value
 * passes through as it is. Returns 1, or 3 (nil, msg, code) when text is not JSON. */
static int lkh_manager_push_description(lua_State *L, char *text, const char *what) {
  json_t *j = json_loads(text, 0, NULL);
  kh_free(text);
  if (j == NULL) return lkh_fail(L, KH_EPROTO, what);
  lkh_values_push(L, j);
  json_decref(j);
  return 1;
}

/* manager:list_kernels([namespace]) -> {{id, mode, namespace, status, created,
 * execution_count}, ...} */
static int lkh_manager_list_kernels(lua_State *L) {
  lkh_manager_t *lm = lkh_manager_get(L, 1);
  const char *ns = luaL_optstring(L, 2, NULL);
  char *s;
  if (lm == NULL) return lkh_fail_closed(L);
  if ((s = kh_manager_list(lm->m, ns)) == NULL) return lkh_fail(L, KH_ENOMEM, NULL);
  return lkh_manager_push_description(L, s, "the kernel list is not JSON");
}

/* manager:kernel_info(id) -> {id, mode, namespace, status, created, execution_count, options,
 * pid?, pooled?, sandbox?} | nil, msg, "KH_ENOTFOUND" */
static int lkh_manager_kernel_info(lua_State *L) {
  lkh_manager_t *lm = lkh_manager_get(L, 1);
  const char *id = luaL_checkstring(L, 2);
  char *s;
  if (lm == NULL) return lkh_fail_closed(L);
  if ((s = kh_kernel_info(lm->m, id)) == NULL) return lkh_fail(L, KH_ENOTFOUND, NULL);
  return lkh_manager_push_description(L, s, "the kernel info is not JSON");
}

/* manager:destroy_kernel(id[, fn]) -> true | nil, msg, code. Blocks until the kernel is gone,
 * unless fn is given: then fn(true) or fn(nil, msg, code) runs from the loop once it is. */
int lkh_manager_destroy_kernel(lua_State *L) {
  lkh_manager_t *lm = lkh_manager_get(L, 1);
  const char *id = luaL_checkstring(L, 2);
  int fn = lkh_manager_opt_fn(L, 3), n;
  if (lm == NULL) return lkh_fail_closed(L);
  if (fn == 0 && lm->depth > 0) {
    /* Inside a callback, where the loop cannot block, a destroy without fn only starts (as it
     * always has): the kernel is gone once the loop has nothing pending. */
    n = lkh_result(L, lm, kh_kernel_destroy(lm->m, id, NULL, NULL));
  } else {
    n = lkh_manager_done_call(L, lm, kh_kernel_destroy, id, fn, "manager:destroy_kernel", 0);
  }
  lkh_comm_sweep(L, lm);     /* the kernel's comm objects go with it (it is closing already) */
  lkh_hostcall_cancel(lm, 0); /* and its host calls' handles are answered, inert from now on */
  return n;
}

/* manager:destroy_all([namespace]) -> count | nil, msg, code. Blocks. */
static int lkh_manager_destroy_all(lua_State *L) {
  lkh_manager_t *lm = lkh_manager_get(L, 1);
  const char *ns = luaL_optstring(L, 2, NULL);
  int n;
  if (lm == NULL) return lkh_fail_closed(L);
  n = lkh_manager_done_call(L, lm, kh_manager_destroy_all, ns, 0, "manager:destroy_all", 1);
  lkh_comm_sweep(L, lm);
  return n;
}

/* kernel:restart([fn]) lives in kernel.c but completes like the calls above. */
int lkh_manager_restart(lua_State *L, lkh_manager_t *lm, const char *id, int fn) {
  return lkh_manager_done_call(L, lm, kh_kernel_restart, id, fn, "kernel:restart", 0);
}

/* manager:poll([timeout_ms]) -> number of events and completions dispatched. Waits at most
 * timeout_ms (default 0) for the first one; a negative timeout waits while work is pending. */
static int lkh_manager_poll(lua_State *L) {
  lkh_manager_t *lm = lkh_manager_get(L, 1);
  lua_Integer timeout = luaL_optinteger(L, 2, 0);
  size_t before;
  if (lm == NULL) return lkh_fail_closed(L);
  if (lm->depth > 0) return lkh_fail_busy(L, "manager:poll");
  before = lm->dispatched;
  lm->poll_expired = 0;
  if (timeout > 0) uv_timer_start(&lm->poll_timer, lkh_manager_on_poll_timer, (uint64_t)timeout, 0);
  lkh_manager_step(lm, L, UV_RUN_NOWAIT);
  while (lm->dispatched == before && timeout != 0 && !lm->poll_expired && !lm->closing) {
    if (timeout < 0 && kh_manager_pending_count(lm->m) == 0) break;
    lkh_manager_step(lm, L, UV_RUN_ONCE);
  }
  uv_timer_stop(&lm->poll_timer);
  lua_pushinteger(L, (lua_Integer)(lm->dispatched - before));
  return 1;
}

/* manager:run() -> number dispatched; runs until no request, creation or destroy is pending. */
static int lkh_manager_run(lua_State *L) {
  lkh_manager_t *lm = lkh_manager_get(L, 1);
  size_t before;
  if (lm == NULL) return lkh_fail_closed(L);
  if (lm->depth > 0) return lkh_fail_busy(L, "manager:run");
  before = lm->dispatched;
  lkh_manager_step(lm, L, UV_RUN_NOWAIT);
  while (!lm->closing && kh_manager_pending_count(lm->m) > 0) lkh_manager_step(lm, L, UV_RUN_ONCE);
  lua_pushinteger(L, (lua_Integer)(lm->dispatched - before));
  return 1;
}

/* manager:fd() -> the loop's backend fd (readable when poll() has work) */
static int lkh_manager_fd(lua_State *L) {
  lkh_manager_t *lm = lkh_manager_get(L, 1);
  if (lm == NULL) return lkh_fail_closed(L);
  lua_pushinteger(L, uv_backend_fd(&lm->loop));
  return 1;
}

/* manager:timeout() -> ms until the loop's next timer, -1 for none */
static int lkh_manager_timeout(lua_State *L) {
  lkh_manager_t *lm = lkh_manager_get(L, 1);
  if (lm == NULL) return lkh_fail_closed(L);
  lua_pushinteger(L, uv_backend_timeout(&lm->loop));
  return 1;
}

static const luaL_Reg lkh_manager_methods[] = {{"create_kernel", lkh_manager_create_kernel},
                                               {"connect_kernel", lkh_manager_connect_kernel},
                                               {"list_remote_kernels",
                                                lkh_manager_list_remote_kernels},
                                               {"list_kernelspecs", lkh_manager_list_kernelspecs},
                                               {"pool_ready", lkh_manager_pool_ready},
                                               {"get_kernel", lkh_manager_get_kernel},
                                               {"list_kernels", lkh_manager_list_kernels},
                                               {"kernel_info", lkh_manager_kernel_info},
                                               {"destroy_kernel", lkh_manager_destroy_kernel},
                                               {"destroy_all", lkh_manager_destroy_all},
                                               {"poll", lkh_manager_poll},
                                               {"run", lkh_manager_run},
                                               {"fd", lkh_manager_fd},
                                               {"timeout", lkh_manager_timeout},
                                               {"close", lkh_manager_close},
                                               {NULL, NULL}};

/* Creates the manager metatable and sets M.KernelManager on the module table on top. */
void lkh_manager_open(lua_State *L) {
  /* Reused when the module is loaded again in the same state: managers created before must
   * stay reachable through it. */
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &lkh_managers_key) != LUA_TTABLE) { /* M, nil */
    lua_createtable(L, 0, 1);                                               /* M, nil, managers */
    lua_createtable(L, 0, 1); /* M, nil, managers, mt */
    lua_pushliteral(L, "v");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);                              /* M, nil, managers */
    lua_rawsetp(L, LUA_REGISTRYINDEX, &lkh_managers_key); /* M, nil */
  }
  lua_pop(L, 1); /* M */

  luaL_newmetatable(L, LKH_MANAGER_MT); /* M, mt */
  luaL_newlib(L, lkh_manager_methods);  /* M, mt, methods */
  luaL_setfuncs(L, lkh_events_methods, 0);
  luaL_setfuncs(L, lkh_jupyter_manager_methods, 0); /* jupyter.c's serve_jupyter */
  lua_setfield(L, -2, "__index"); /* M, mt */
  lua_pushcfunction(L, lkh_manager_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, lkh_manager_close);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, lkh_manager_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1); /* M */

  lua_createtable(L, 0, 1); /* M, KernelManager */
  lua_pushcfunction(L, lkh_manager_new);
  lua_setfield(L, -2, "new");
  lua_setfield(L, -2, "KernelManager"); /* M */
}

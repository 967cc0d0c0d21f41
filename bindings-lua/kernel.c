/* kernel.c: kernelhost.Kernel, the object manager:get_kernel() gives for a kernel id, and its
 * methods: execute (blocking) and submit (a callback), interrupt, input_reply, restart and
 * destroy. A kernel object holds only the id and refers to its manager, so it outlives its
 * kernel harmlessly (calls then fail with KH_ENOTFOUND). Loop thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lkh.h"

typedef struct {
  char id[LKH_ID_MAX];
  const char *mode; /* static */
} lkh_kernel_t;

/* An execute request: on the C stack for kernel:execute(), on the heap for kernel:submit(). */
typedef struct {
  lkh_manager_t *lm;
  int fnref; /* submit's callback; LUA_NOREF for a blocking execute */
  int done;
  int status;
  json_t *doc; /* owned: the reply, binary values put in (blocking execute only) */
  char *errmsg; /* owned copy of the failure detail (blocking execute only) */
  char kernel_id[LKH_ID_MAX];
  char exec_id[LKH_ID_MAX];
} lkh_req_t;

/* The kernel at idx and its manager (NULL when closed). */
static lkh_kernel_t *lkh_kernel_get(lua_State *L, int idx, lkh_manager_t **lm) {
  lkh_kernel_t *k = luaL_checkudata(L, idx, LKH_KERNEL_MT);
  lua_getiuservalue(L, idx, 1); /* manager */
  *lm = lkh_manager_get(L, lua_gettop(L));
  lua_pop(L, 1); /* */
  return k;
}

/* Pushes the kernel object for id, or fails. One object per kernel: it is cached in the
 * manager's uservalue 1 (a weak table), so that get_kernel(id) == get_kernel(id). */
int lkh_kernel_push(lua_State *L, lkh_manager_t *lm, int mgr, const char *id) {
  const char *mode = NULL;
  lkh_kernel_t *k;
  if (!kh_kernel_exists(lm->m, id, &mode)) {
    lua_pushnil(L);
    lua_pushfstring(L, "no kernel with id \"%s\"", id);
    lua_pushstring(L, kh_err_name(KH_ENOTFOUND));
    return 3;
  }
  lua_getiuservalue(L, mgr, 1);                           /* cache */
  if (lua_getfield(L, -1, id) == LUA_TUSERDATA) return 1; /* cache, k */
  lua_pop(L, 1);                                          /* cache */
  k = lua_newuserdatauv(L, sizeof(*k), 1);                /* cache, k */
  snprintf(k->id, sizeof(k->id), "%s", id);
  k->mode = mode;
  luaL_setmetatable(L, LKH_KERNEL_MT);
  lua_pushvalue(L, mgr);       /* cache, k, manager */
  lua_setiuservalue(L, -2, 1); /* cache, k */
  lua_pushvalue(L, -1);        /* cache, k, k */
  lua_setfield(L, -3, id);     /* cache, k */
  return 1;
}

const char *lkh_kernel_id(lua_State *L, int idx) {
  lkh_kernel_t *k = luaL_checkudata(L, idx, LKH_KERNEL_MT);
  return k->id;
}

/* kernel.id, kernel.mode and kernel.manager are fields; everything else is a method. */
static int lkh_kernel_index(lua_State *L) {
  lkh_kernel_t *k = luaL_checkudata(L, 1, LKH_KERNEL_MT);
  const char *key = lua_tostring(L, 2);
  if (key != NULL && strcmp(key, "id") == 0) {
    lua_pushstring(L, k->id);
  } else if (key != NULL && strcmp(key, "mode") == 0) {
    lua_pushstring(L, k->mode);
  } else if (key != NULL && strcmp(key, "manager") == 0) {
    lua_getiuservalue(L, 1, 1);
  } else {
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1)); /* methods[key] */
  }
  return 1;
}

static int lkh_kernel_tostring(lua_State *L) {
  lkh_kernel_t *k = luaL_checkudata(L, 1, LKH_KERNEL_MT);
  lua_pushfstring(L, "kernelhost.Kernel (%s, %s)", k->id, k->mode);
  return 1;
}

/* --- execute ------------------------------------------------------------------------------ */

/* Reads kernel:execute's options table at idx. Misuse raises: unlike kernel options, these are
 * the binding's to check, since they fill a C struct rather than JSON. */
static void lkh_kernel_exec_opts(lua_State *L, int idx, kh_execute_options_t *o) {
  kh_execute_options_init(o);
  if (lua_isnoneornil(L, idx)) return;
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_pushnil(L);                 /* nil */
  while (lua_next(L, idx) != 0) { /* k, v */
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
    int *flag = NULL;
    if (strcmp(k, "silent") == 0)
      flag = &o->silent;
    else if (strcmp(k, "store_history") == 0)
      flag = &o->store_history;
    else if (strcmp(k, "stop_on_error") == 0)
      flag = &o->stop_on_error;
    else if (strcmp(k, "allow_stdin") == 0)
      flag = &o->allow_stdin;
    if (flag != NULL) {
      if (!lua_isboolean(L, -1))
        luaL_argerror(L, idx, lua_pushfstring(L, "option '%s' must be a boolean", k));
      *flag = lua_toboolean(L, -1);
    } else if (strcmp(k, "timeout") == 0) {
      int isint;
      lua_Integer ms = lua_tointegerx(L, -1, &isint);
      if (!isint || ms < 0)
        luaL_argerror(L, idx, "option 'timeout' must be a non-negative integer (ms)");
      o->timeout_ms = (uint64_t)ms;
    } else {
      luaL_argerror(L, idx, lua_pushfstring(L, "unknown option '%s'", k));
    }
    lua_pop(L, 1); /* k */
  }
}

static void lkh_kernel_on_reply(kh_manager_t *m, const kh_reply_t *rep, int status, void *data) {
  lkh_req_t *r = data;
  lkh_manager_t *lm = r->lm;
  lua_State *L = lm->L;
  (void)m;
  r->done = 1;
  r->status = status;
  lm->dispatched++;
  if (r->fnref == LUA_NOREF) {
    /* A blocking execute: keep copies, and build the table once the loop returned, on the
     * caller's stack frame rather than in the middle of the loop's. */
    if (status == 0 && rep->json != NULL) {
      r->doc = lkh_values_reply_doc(rep->json, rep->json_len, rep->buffers, rep->nbuffers);
      if (r->doc == NULL) r->status = KH_EPROTO;
    }
    if (rep->errmsg != NULL) r->errmsg = strdup(rep->errmsg);
    return;
  }
  if (!lm->quiet && L != NULL) {
    luaL_checkstack(L, 8, "kernelhost reply");
    lkh_events_push(L, lm, r->fnref); /* fn */
    json_t *doc = status == 0 && rep->json != NULL
                      ? lkh_values_reply_doc(rep->json, rep->json_len, rep->buffers, rep->nbuffers)
                      : NULL;
    if (doc != NULL) {
      lkh_values_push_reply(L, doc, r->kernel_id, r->exec_id);
      json_decref(doc);
      lkh_events_call(lm, L, 1, r->kernel_id, r->exec_id, "submit"); /* */
    } else {
      if (status == 0) status = KH_EPROTO;
      lkh_fail(L, status, rep->errmsg);                              /* fn, nil, msg, code */
      lkh_events_call(lm, L, 3, r->kernel_id, r->exec_id, "submit"); /* */
    }
  }
  if (L != NULL) lkh_events_unref(L, lm, r->fnref);
  free(r);
}

/* Queues r's code on kernel k; 0 or the core's error code. A thread: "host" kernel may run the
 * cell inside this very call, and the cell may call host functions (kernelhost.h's one exception
 * to its delivery rule): they run on L, as inside a callback, where blocking is refused. */
static int lkh_kernel_start(lua_State *L, lkh_manager_t *lm, lkh_kernel_t *k, lkh_req_t *r,
                            const char *code, size_t len, const kh_execute_options_t *o) {
  lua_State *outer = lm->L;
  int rc;
  r->lm = lm;
  snprintf(r->kernel_id, sizeof(r->kernel_id), "%s", k->id);
  if (outer == NULL) lm->L = L;
  lm->depth++;
  rc = kh_kernel_execute(lm->m, k->id, code, len, o, r->exec_id, sizeof(r->exec_id),
                         lkh_kernel_on_reply, r);
  lm->depth--;
  lm->L = outer;
  return rc;
}

/* kernel:execute(code[, opts]) -> result | nil, msg, code. Blocks; dispatches events. */
static int lkh_kernel_execute(lua_State *L) {
  lkh_manager_t *lm;
  lkh_kernel_t *k = lkh_kernel_get(L, 1, &lm);
  size_t len;
  const char *code = luaL_checklstring(L, 2, &len);
  kh_execute_options_t o;
  lkh_req_t r;
  int rc;
  lkh_kernel_exec_opts(L, 3, &o);
  if (lm == NULL) return lkh_fail_closed(L);
  if (lm->depth > 0) return lkh_fail_busy(L, "kernel:execute");
  memset(&r, 0, sizeof(r));
  r.fnref = LUA_NOREF;
  if ((rc = lkh_kernel_start(L, lm, k, &r, code, len, &o)) != 0)
    return lkh_fail(L, rc, kh_manager_errmsg(lm->m));
  lkh_manager_wait(lm, L, &r.done);
  if (r.status == 0) {
    rc = r.doc ? 0 : KH_EPROTO;
    if (rc == 0)
      lkh_values_push_reply(L, r.doc, r.kernel_id, r.exec_id);
    else
      lkh_fail(L, rc, "the reply is not a JSON object");
  } else {
    lkh_fail(L, r.status, r.errmsg == NULL && r.status == KH_EPROTO ? "the reply is not a JSON object" : r.errmsg);
  }
  json_decref(r.doc);
  free(r.errmsg);
  return rc == 0 && r.status == 0 ? 1 : 3;
}

/* kernel:submit(code[, opts], fn) -> execution id | nil, msg, code. fn(result) or
 * fn(nil, msg, code) runs later, during poll(), run() or a blocking call. */
static int lkh_kernel_submit(lua_State *L) {
  lkh_manager_t *lm;
  lkh_kernel_t *k = lkh_kernel_get(L, 1, &lm);
  size_t len;
  const char *code = luaL_checklstring(L, 2, &len);
  int fn = lua_isfunction(L, 3) ? 3 : 4;
  kh_execute_options_t o;
  lkh_req_t *r;
  int rc;
  if (fn == 4)
    lkh_kernel_exec_opts(L, 3, &o);
  else
    kh_execute_options_init(&o);
  luaL_checktype(L, fn, LUA_TFUNCTION);
  if (lm == NULL) return lkh_fail_closed(L);
  if ((r = calloc(1, sizeof(*r))) == NULL) return luaL_error(L, "out of memory");
  r->fnref = lkh_events_ref(L, lm, fn);
  if ((rc = lkh_kernel_start(L, lm, k, r, code, len, &o)) != 0) {
    lkh_events_unref(L, lm, r->fnref);
    free(r);
    return lkh_fail(L, rc, kh_manager_errmsg(lm->m));
  }
  lua_pushstring(L, r->exec_id);
  return 1;
}

/* --- the rest ----------------------------------------------------------------------------- */

/* kernel:interrupt() -> true | nil, msg, code */
static int lkh_kernel_interrupt(lua_State *L) {
  lkh_manager_t *lm;
  lkh_kernel_t *k = lkh_kernel_get(L, 1, &lm);
  if (lm == NULL) return lkh_fail_closed(L);
  return lkh_result(L, lm, kh_kernel_interrupt(lm->m, k->id));
}

/* kernel:input_reply(value) -> true | nil, msg, code */
static int lkh_kernel_input_reply(lua_State *L) {
  lkh_manager_t *lm;
  lkh_kernel_t *k = lkh_kernel_get(L, 1, &lm);
  size_t len;
  const char *value = luaL_checklstring(L, 2, &len);
  if (lm == NULL) return lkh_fail_closed(L);
  return lkh_result(L, lm, kh_kernel_input_reply(lm->m, k->id, value, len));
}

/* kernel:restart([fn]) -> true | nil, msg, code. Blocks until the kernel is ready again,
 * unless fn is given: then fn(true) or fn(nil, msg, code) runs from the loop once it is. */
static int lkh_kernel_restart(lua_State *L) {
  lkh_manager_t *lm;
  lkh_kernel_t *k = lkh_kernel_get(L, 1, &lm);
  int fn = lkh_manager_opt_fn(L, 2);
  if (lm == NULL) return lkh_fail_closed(L);
  return lkh_manager_restart(L, lm, k->id, fn);
}

/* kernel:destroy([fn]) -> manager:destroy_kernel(kernel.id[, fn]). Also the kernel's __close. */
static int lkh_kernel_destroy(lua_State *L) {
  lkh_kernel_t *k = luaL_checkudata(L, 1, LKH_KERNEL_MT);
  lkh_manager_opt_fn(L, 2);                         /* misuse raises here, naming kernel:destroy */
  lua_settop(L, 2);                                 /* k, fn|nil */
  lua_pushcfunction(L, lkh_manager_destroy_kernel); /* k, fn, f */
  lua_getiuservalue(L, 1, 1);                       /* k, fn, f, manager */
  lua_pushstring(L, k->id);                         /* k, fn, f, manager, id */
  lua_pushvalue(L, 2);                              /* k, fn, f, manager, id, fn */
  lua_call(L, 3, 3);                                /* k, fn, ok, msg, code */
  return 3;
}

/* __close(k, err): destroys the kernel if it still exists. */
static int lkh_kernel_close(lua_State *L) {
  lkh_kernel_t *k = luaL_checkudata(L, 1, LKH_KERNEL_MT);
  lkh_manager_t *lm;
  lua_getiuservalue(L, 1, 1); /* k, err, manager */
  lm = lkh_manager_get(L, -1);
  lua_settop(L, 1); /* k */
  if (lm != NULL && kh_kernel_exists(lm->m, k->id, NULL)) lkh_kernel_destroy(L);
  return 0;
}

static const luaL_Reg lkh_kernel_methods[] = {{"execute", lkh_kernel_execute},
                                              {"submit", lkh_kernel_submit},
                                              {"interrupt", lkh_kernel_interrupt},
                                              {"input_reply", lkh_kernel_input_reply},
                                              {"restart", lkh_kernel_restart},
                                              {"destroy", lkh_kernel_destroy},
                                              {NULL, NULL}};

/* Creates the kernel metatable (kernel objects are made by manager:get_kernel). */
void lkh_kernel_open(lua_State *L) {
  luaL_newmetatable(L, LKH_KERNEL_MT);       /* mt */
  luaL_newlib(L, lkh_kernel_methods);        /* mt, methods */
  luaL_setfuncs(L, lkh_interact_methods, 0); /* interact.c's editor requests */
  luaL_setfuncs(L, lkh_hostcall_methods, 0); /* hostcall.c's expose */
  luaL_setfuncs(L, lkh_comm_kernel_methods, 0); /* comm.c's open_comm and comm */
  lua_pushcclosure(L, lkh_kernel_index, 1);  /* mt, index */
  lua_setfield(L, -2, "__index");            /* mt */
  lua_pushcfunction(L, lkh_kernel_close);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, lkh_kernel_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1); /* */
}

/* lkh.c: the Lua 5.4 binding, require("kernelhost"). Thin over the core: it converts values
 * (Lua tables <-> JSON text through jansson), runs a private libuv loop inside blocking calls
 * and manager:poll(), and maps the event bus onto Lua callbacks (luv's conventions). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

#include "kernelhost.h"

#define LKH_MANAGER_MT "kernelhost.Manager"
#define LKH_KERNEL_MT "kernelhost.Kernel"
#define LKH_ID_MAX 64
#define LKH_JSON_DEPTH 64
#define LKH_EXPORT __attribute__((visibility("default")))

typedef struct lkh_manager_s lkh_manager_t;

/* One Lua subscription: an event subscription on the core's bus, or an "error" handler that
 * only the binding knows about (core_id == 0). */
typedef struct lkh_sub_s {
  struct lkh_sub_s *next;
  lkh_manager_t *lm;
  lua_Integer id;  /* the handle Lua sees */
  int64_t core_id; /* 0 for "error" handlers */
  char *kernel_id; /* owned; NULL: every kernel */
  int all;         /* subscribed to "*": the payload is wrapped as {type, data} */
  int fnref;       /* key of the callback in the manager's callback table */
  int removed;
} lkh_sub_t;

/* An execute request: on the C stack for kernel:execute(), on the heap for kernel:submit(). */
typedef struct {
  lkh_manager_t *lm;
  int fnref; /* submit's callback; LUA_NOREF for a blocking execute */
  int done;
  int status;
  char *json; /* owned copy of the reply (blocking execute only) */
  size_t len;
  char *errmsg; /* owned copy of the failure detail (blocking execute only) */
  char kernel_id[LKH_ID_MAX];
  char exec_id[LKH_ID_MAX];
} lkh_req_t;

/* What a blocking create/destroy/restart/close waits for. */
typedef struct {
  int done;
  int status;
  char errmsg[512];
} lkh_wait_t;

struct lkh_manager_s {
  uv_loop_t loop;
  kh_manager_t *m;       /* NULL once the close callback ran */
  lua_State *L;          /* the running Lua thread that callbacks are called on */
  uv_async_t keepalive;  /* ref'd: keeps the loop alive, so fd()/timeout() stay meaningful */
  uv_timer_t poll_timer; /* poll(timeout_ms) */
  int poll_expired;
  int64_t count_sub; /* counts every event for poll()'s return value */
  size_t dispatched; /* events and completed requests, ever */
  int depth;         /* > 0 while the loop runs: blocking calls are refused */
  int cb_depth;      /* > 0 while Lua callbacks run: removed subscriptions stay linked */
  int closing;       /* kh_manager_close() was called */
  int closed;        /* its callback ran */
  int loop_closed;   /* uv_loop_close() succeeded: lm may be freed */
  int quiet;         /* closing from __gc: no Lua callback runs any more */
  lkh_sub_t *subs;
  lua_Integer next_sub;
  int next_ref; /* keys of the callback table (the manager's uservalue 2) */
};

typedef struct {
  char id[LKH_ID_MAX];
  const char *mode; /* static */
} lkh_kernel_t;

static char lkh_wrapper_key;  /* registry: the callback wrapper, if set */
static char lkh_array_mt_key; /* registry: metatable of kernelhost.empty_array */
static char lkh_managers_key; /* registry: weak table, lightuserdata(lm) -> manager userdata */

/* --- results ------------------------------------------------------------------------------ */

/* Pushes nil, message, "KH_E..." (luv's convention) and returns 3. */
static int lkh_fail(lua_State *L, int rc, const char *msg) {
  lua_pushnil(L);
  lua_pushstring(L, msg && *msg ? msg : kh_strerror(rc));
  lua_pushstring(L, kh_err_name(rc));
  return 3;
}

static int lkh_fail_busy(lua_State *L, const char *what) {
  lua_pushnil(L);
  lua_pushfstring(L, "%s cannot block inside a kernelhost callback (use kernel:submit)", what);
  lua_pushstring(L, kh_err_name(KH_EBUSY));
  return 3;
}

/* --- JSON <-> Lua ------------------------------------------------------------------------- */

static void lkh_json_push(lua_State *L, json_t *j) {
  luaL_checkstack(L, 4, "JSON nested too deeply");
  switch (json_typeof(j)) {
    case JSON_OBJECT: {
      const char *k;
      json_t *v;
      lua_createtable(L, 0, (int)json_object_size(j)); /* t */
      json_object_foreach(j, k, v) {
        lkh_json_push(L, v);    /* t, v */
        lua_setfield(L, -2, k); /* t */
      }
      break;
    }
    case JSON_ARRAY: {
      size_t i;
      json_t *v;
      lua_createtable(L, (int)json_array_size(j), 0); /* t */
      json_array_foreach(j, i, v) {
        lkh_json_push(L, v);                    /* t, v */
        lua_rawseti(L, -2, (lua_Integer)i + 1); /* t */
      }
      break;
    }
    case JSON_STRING:
      lua_pushlstring(L, json_string_value(j), json_string_length(j));
      break;
    case JSON_INTEGER:
      lua_pushinteger(L, (lua_Integer)json_integer_value(j));
      break;
    case JSON_REAL:
      lua_pushnumber(L, json_real_value(j));
      break;
    case JSON_TRUE:
      lua_pushboolean(L, 1);
      break;
    case JSON_FALSE:
      lua_pushboolean(L, 0);
      break;
    default:
      lua_pushlightuserdata(L, NULL);
      break; /* kernelhost.null */
  }
}

/* Converts the value at idx to JSON; on failure returns NULL and sets *err (static text). */
static json_t *lkh_json_from_lua(lua_State *L, int idx, int depth, const char **err) {
  idx = lua_absindex(L, idx);
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
      return json_null();
    case LUA_TBOOLEAN:
      return json_boolean(lua_toboolean(L, idx));
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) return json_integer((json_int_t)lua_tointeger(L, idx));
      if (!isfinite(lua_tonumber(L, idx))) {
        *err = "numbers must be finite";
        return NULL;
      }
      return json_real(lua_tonumber(L, idx));
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      json_t *j = json_stringn(s, n);
      if (j == NULL) *err = "strings must be valid UTF-8";
      return j;
    }
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) == NULL) return json_null();
      break;
    case LUA_TTABLE: {
      json_t *out;
      lua_Integer n = (lua_Integer)lua_rawlen(L, idx), count = 0;
      int as_array = 0;
      if (depth >= LKH_JSON_DEPTH) {
        *err = "tables nest too deeply (a cycle?)";
        return NULL;
      }
      luaL_checkstack(L, 4, "table nested too deeply");
      if (luaL_getmetafield(L, idx, "__jsontype") != LUA_TNIL) { /* ..., jsontype */
        as_array = lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "array") == 0;
        lua_pop(L, 1);
      }
      lua_pushnil(L);                 /* ..., nil */
      while (lua_next(L, idx) != 0) { /* ..., k, v */
        count++;
        lua_pop(L, 1); /* ..., k */
      }
      if (count > 0 && count == n) as_array = 1;
      if (as_array) {
        lua_Integer i;
        out = json_array();
        for (i = 1; i <= n; i++) {
          json_t *v;
          lua_rawgeti(L, idx, i); /* ..., v */
          v = lkh_json_from_lua(L, -1, depth + 1, err);
          lua_pop(L, 1); /* ... */
          if (v == NULL || json_array_append_new(out, v) != 0) goto fail_table;
        }
        return out;
      }
      out = json_object();
      lua_pushnil(L);                 /* ..., nil */
      while (lua_next(L, idx) != 0) { /* ..., k, v */
        json_t *v;
        if (lua_type(L, -2) != LUA_TSTRING) {
          lua_pop(L, 2); /* ... */
          *err = "table keys must be strings (or the table a sequence)";
          goto fail_table;
        }
        v = lkh_json_from_lua(L, -1, depth + 1, err);
        if (v == NULL || json_object_set_new(out, lua_tostring(L, -2), v) != 0) {
          lua_pop(L, 2); /* ... */
          if (v != NULL && *err == NULL) *err = "invalid table key";
          goto fail_table;
        }
        lua_pop(L, 1); /* ..., k */
      }
      return out;
    fail_table:
      json_decref(out);
      return NULL;
    }
    default:
      break;
  }
  *err = "only nil, booleans, numbers, strings, tables and kernelhost.null convert to JSON";
  return NULL;
}

/* Encodes the optional options table at arg as JSON text (owned, free()), or NULL when nil.
 * Values that cannot be JSON are misuse: they raise. Types of known options are the core's
 * to check (KH_EOPTION with a message). */
static char *lkh_opts_encode(lua_State *L, int arg) {
  const char *err = NULL;
  json_t *j;
  char *s;
  if (lua_isnoneornil(L, arg)) return NULL;
  luaL_checktype(L, arg, LUA_TTABLE);
  j = lkh_json_from_lua(L, arg, 0, &err);
  if (j == NULL) luaL_argerror(L, arg, err ? err : "cannot convert to JSON");
  if (!json_is_object(j)) {
    json_decref(j);
    luaL_argerror(L, arg, "options must be a table with string keys");
  }
  s = json_dumps(j, JSON_COMPACT);
  json_decref(j);
  if (s == NULL) luaL_error(L, "out of memory");
  return s;
}

/* Adds kernel_id and execution_id to an event payload (a JSON object). */
static void lkh_json_tag(json_t *o, const char *kernel_id, const char *exec_id) {
  if (!json_is_object(o)) return;
  json_object_set_new(o, "kernel_id", json_string(kernel_id ? kernel_id : ""));
  json_object_set_new(o, "execution_id", json_string(exec_id ? exec_id : ""));
}

/* Pushes the result table of a reply: the core's object, tagged with the ids, each output's
 * data tagged too. Returns 0, or pushes nothing and returns KH_EPROTO. */
static int lkh_reply_push(lua_State *L, const char *json, size_t len, const char *kernel_id,
                          const char *exec_id) {
  json_t *j = json_loadb(json, len, 0, NULL), *outputs, *o;
  size_t i;
  if (j == NULL || !json_is_object(j)) {
    json_decref(j);
    return KH_EPROTO;
  }
  lkh_json_tag(j, kernel_id, exec_id);
  outputs = json_object_get(j, "outputs");
  json_array_foreach(outputs, i, o) lkh_json_tag(json_object_get(o, "data"), kernel_id, exec_id);
  lkh_json_push(L, j); /* result */
  json_decref(j);
  return 0;
}

/* --- calling Lua back --------------------------------------------------------------------- */

static int lkh_traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* Callbacks live in the manager's uservalue 2, not in the registry, so a callback that refers
 * to its manager does not keep the manager alive: an unreachable manager is collected. */
static int lkh_fns_push(lua_State *L, lkh_manager_t *lm) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &lkh_managers_key); /* managers */
  if (lua_rawgetp(L, -1, lm) != LUA_TUSERDATA) {        /* managers, ud|nil */
    lua_pop(L, 2);
    lua_pushnil(L); /* nil */
    return 0;
  }
  lua_getiuservalue(L, -1, 2); /* managers, ud, fns */
  lua_replace(L, -3);          /* fns, ud */
  lua_pop(L, 1);               /* fns */
  return 1;
}

/* Stores the function at idx; returns its key. */
static int lkh_fn_ref(lua_State *L, lkh_manager_t *lm, int idx) {
  int ref = ++lm->next_ref;
  idx = lua_absindex(L, idx);
  if (lkh_fns_push(L, lm)) { /* fns */
    lua_pushvalue(L, idx);   /* fns, fn */
    lua_rawseti(L, -2, ref); /* fns */
  }
  lua_pop(L, 1); /* */
  return ref;
}

/* Pushes the function stored under ref (nil when gone). */
static void lkh_fn_push(lua_State *L, lkh_manager_t *lm, int ref) {
  if (lkh_fns_push(L, lm)) { /* fns */
    lua_rawgeti(L, -1, ref); /* fns, fn */
    lua_remove(L, -2);       /* fn */
  }
}

static void lkh_fn_unref(lua_State *L, lkh_manager_t *lm, int ref) {
  if (lm->quiet || ref == LUA_NOREF) return; /* a collected manager's table goes with it */
  if (lkh_fns_push(L, lm)) {                 /* fns */
    lua_pushnil(L);                          /* fns, nil */
    lua_rawseti(L, -2, ref);                 /* fns */
  }
  lua_pop(L, 1); /* */
}

static void lkh_sub_sweep(lkh_manager_t *lm) {
  lkh_sub_t **p = &lm->subs;
  if (lm->cb_depth > 0) return;
  while (*p) {
    lkh_sub_t *s = *p;
    if (s->removed) {
      *p = s->next;
      free(s->kernel_id);
      free(s);
    } else {
      p = &s->next;
    }
  }
}

/* Reports the error message on top of the stack (and pops it): to every matching "error"
 * handler, or to stderr when there is none (or a handler fails too). */
static void lkh_report(lkh_manager_t *lm, lua_State *L, const char *kernel_id, const char *exec_id,
                       const char *where) {
  lkh_sub_t *s;
  lua_Integer last = lm->next_sub;
  int handled = 0, base = lua_gettop(L); /* err */
  lm->cb_depth++;
  for (s = lm->subs; s; s = s->next) {
    if (s->removed || s->core_id != 0 || s->id > last) continue;
    if (s->kernel_id != NULL && (kernel_id == NULL || strcmp(s->kernel_id, kernel_id) != 0))
      continue;
    handled = 1;
    lua_pushcfunction(L, lkh_traceback); /* err, msgh */
    lkh_fn_push(L, lm, s->fnref);        /* err, msgh, fn */
    lua_pushvalue(L, base);              /* err, msgh, fn, err */
    lua_createtable(L, 0, 3);            /* err, msgh, fn, err, info */
    lua_pushstring(L, kernel_id ? kernel_id : "");
    lua_setfield(L, -2, "kernel_id");
    lua_pushstring(L, exec_id ? exec_id : "");
    lua_setfield(L, -2, "execution_id");
    lua_pushstring(L, where);
    lua_setfield(L, -2, "event");
    if (lua_pcall(L, 2, 0, base + 1) != LUA_OK) { /* err, msgh, err2 */
      fprintf(stderr, "kernelhost: the \"error\" handler failed: %s\n", lua_tostring(L, -1));
      lua_pop(L, 1); /* err, msgh */
    }
    lua_pop(L, 1); /* err */
  }
  lm->cb_depth--;
  if (!handled)
    fprintf(stderr, "kernelhost: error in a %s callback: %s\n", where, lua_tostring(L, base));
  lua_settop(L, base - 1);
  lkh_sub_sweep(lm);
}

/* Calls the function below its nargs arguments on the stack, through the callback wrapper if
 * one is set, in protected mode; a failure is reported, never raised. Pops everything. */
static void lkh_call(lkh_manager_t *lm, lua_State *L, int nargs, const char *kernel_id,
                     const char *exec_id, const char *where) {
  int fn = lua_gettop(L) - nargs;      /* fn, args */
  lua_pushcfunction(L, lkh_traceback); /* fn, args, msgh */
  lua_insert(L, fn);                   /* msgh, fn, args */
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &lkh_wrapper_key) != LUA_TNIL) {
    lua_insert(L, fn + 1); /* msgh, wrapper, fn, args */
    nargs++;
  } else {
    lua_pop(L, 1); /* msgh, fn, args */
  }
  lm->cb_depth++;
  if (lua_pcall(L, nargs, 0, fn) != LUA_OK) { /* msgh, err */
    lm->cb_depth--;
    lkh_report(lm, L, kernel_id, exec_id, where); /* msgh */
  } else {
    lm->cb_depth--;
  }
  lua_pop(L, 1); /* */
  lkh_sub_sweep(lm);
}

/* --- core callbacks ----------------------------------------------------------------------- */

static void lkh_on_count(kh_manager_t *m, const kh_event_t *ev, void *data) {
  lkh_manager_t *lm = data;
  (void)m;
  (void)ev;
  lm->dispatched++;
}

static void lkh_on_event(kh_manager_t *m, const kh_event_t *ev, void *data) {
  lkh_sub_t *s = data;
  lkh_manager_t *lm = s->lm;
  lua_State *L = lm->L;
  json_t *j;
  (void)m;
  if (s->removed || lm->quiet || L == NULL) return;
  luaL_checkstack(L, 8, "kernelhost event");
  j = json_loadb(ev->json, ev->json_len, 0, NULL);
  if (j == NULL) {
    lua_pushfstring(L, "kernelhost: %s event with invalid JSON payload", ev->type_name);
    lkh_report(lm, L, ev->kernel_id, ev->execution_id, ev->type_name);
    return;
  }
  lkh_json_tag(j, ev->kernel_id, ev->execution_id);
  lkh_fn_push(L, lm, s->fnref); /* fn */
  if (s->all) {
    lua_createtable(L, 0, 4); /* fn, ev */
    lua_pushstring(L, ev->type_name);
    lua_setfield(L, -2, "type");
    lkh_json_push(L, j);
    lua_setfield(L, -2, "data");
    lua_pushstring(L, ev->kernel_id);
    lua_setfield(L, -2, "kernel_id");
    lua_pushstring(L, ev->execution_id);
    lua_setfield(L, -2, "execution_id");
  } else {
    lkh_json_push(L, j); /* fn, payload */
  }
  json_decref(j);
  lkh_call(lm, L, 1, ev->kernel_id, ev->execution_id, ev->type_name);
}

static void lkh_on_reply(kh_manager_t *m, const kh_reply_t *rep, int status, void *data) {
  lkh_req_t *r = data;
  lkh_manager_t *lm = r->lm;
  lua_State *L = lm->L;
  (void)m;
  r->done = 1;
  r->status = status;
  lm->dispatched++;
  if (r->fnref == LUA_NOREF) {
    /* A blocking execute: keep copies; the table is built once the loop returns. */
    if (status == 0 && rep->json != NULL) {
      r->json = malloc(rep->json_len + 1);
      if (r->json != NULL) {
        memcpy(r->json, rep->json, rep->json_len + 1);
        r->len = rep->json_len;
      } else {
        r->status = KH_ENOMEM;
      }
    }
    if (rep->errmsg != NULL) r->errmsg = strdup(rep->errmsg);
    return;
  }
  if (!lm->quiet && L != NULL) {
    luaL_checkstack(L, 8, "kernelhost reply");
    lkh_fn_push(L, lm, r->fnref); /* fn */
    if (status == 0 && rep->json != NULL &&
        lkh_reply_push(L, rep->json, rep->json_len, r->kernel_id, r->exec_id) == 0) {
      lkh_call(lm, L, 1, r->kernel_id, r->exec_id, "submit");
    } else {
      if (status == 0) status = KH_EPROTO;
      lkh_fail(L, status, rep->errmsg); /* fn, nil, msg, code */
      lkh_call(lm, L, 3, r->kernel_id, r->exec_id, "submit");
    }
  }
  if (L != NULL) lkh_fn_unref(L, lm, r->fnref);
  free(r);
}

static void lkh_on_created(kh_manager_t *m, const char *id, int status, const char *errmsg,
                           void *data) {
  lkh_wait_t *w = data;
  (void)m;
  (void)id;
  w->done = 1;
  w->status = status;
  snprintf(w->errmsg, sizeof(w->errmsg), "%s", errmsg ? errmsg : "");
}

static void lkh_on_done(kh_manager_t *m, const char *id, int status, const char *errmsg,
                        void *data) {
  lkh_on_created(m, id, status, errmsg, data);
}

static void lkh_on_closed(kh_manager_t *m, void *data) {
  lkh_manager_t *lm = data;
  (void)m;
  lm->closed = 1;
  lm->m = NULL;
}

static void lkh_on_keepalive(uv_async_t *h) {
  (void)h;
}

static void lkh_on_poll_timer(uv_timer_t *t) {
  lkh_manager_t *lm = t->data;
  lm->poll_expired = 1;
}

/* --- the loop ----------------------------------------------------------------------------- */

/* Runs the loop on L's behalf until *flag is set. */
static void lkh_loop_until(lkh_manager_t *lm, lua_State *L, int *flag) {
  lua_State *prev = lm->L;
  lm->L = L;
  lm->depth++;
  while (!*flag) uv_run(&lm->loop, UV_RUN_ONCE);
  lm->depth--;
  lm->L = prev;
}

static void lkh_subs_free(lkh_manager_t *lm, lua_State *L) {
  lkh_sub_t *s;
  for (s = lm->subs; s; s = s->next) {
    lkh_fn_unref(L, lm, s->fnref);
    s->fnref = LUA_NOREF;
    s->removed = 1;
  }
  lkh_sub_sweep(lm);
}

static void lkh_walk_report(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h))
    fprintf(stderr, "kernelhost: handle left open on a closed manager (type %d)\n", (int)h->type);
}

/* Closes the manager: its kernels (pending requests complete with KH_ECANCELED), then its
 * handles and the loop. Inside a callback the close only starts; a later call finishes it. */
static void lkh_manager_shutdown(lkh_manager_t *lm, lua_State *L) {
  if (lm->loop_closed) return;
  if (!lm->closing) {
    lm->closing = 1;
    if (kh_manager_close(lm->m, lkh_on_closed, lm) != 0) lm->closed = 1;
  }
  if (lm->depth > 0) return;
  lkh_loop_until(lm, L, &lm->closed);
  lm->m = NULL;
  uv_close((uv_handle_t *)&lm->keepalive, NULL);
  uv_close((uv_handle_t *)&lm->poll_timer, NULL);
  uv_run(&lm->loop, UV_RUN_DEFAULT);
  lkh_subs_free(lm, L);
  if (uv_loop_close(&lm->loop) == 0) {
    lm->loop_closed = 1;
  } else {
    /* Something still refers to the loop: leaking it is safer than freeing it. */
    uv_walk(&lm->loop, lkh_walk_report, NULL);
  }
}

/* --- manager ------------------------------------------------------------------------------ */

static lkh_manager_t **lkh_manager_slot(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, LKH_MANAGER_MT);
}

/* The manager at idx, open; raises on a wrong type, returns NULL when closed. */
static lkh_manager_t *lkh_manager_get(lua_State *L, int idx) {
  lkh_manager_t *lm = *lkh_manager_slot(L, idx);
  if (lm == NULL || lm->closing || lm->m == NULL) return NULL;
  return lm;
}

static int lkh_fail_closed(lua_State *L) {
  return lkh_fail(L, KH_ECLOSED, "the manager is closed");
}

/* KernelManager.new([opts]) -> manager | nil, msg, code */
static int lkh_manager_new(lua_State *L) {
  lkh_manager_t **slot, *lm;
  char *opts = lkh_opts_encode(L, 1);
  int rc;
  slot = lua_newuserdatauv(L, sizeof(*slot), 2); /* ud */
  *slot = NULL;
  luaL_setmetatable(L, LKH_MANAGER_MT);
  lua_newtable(L);          /* ud, cache */
  lua_createtable(L, 0, 1); /* ud, cache, mt */
  lua_pushliteral(L, "v");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);     /* ud, cache */
  lua_setiuservalue(L, -2, 1); /* ud */
  lua_newtable(L);             /* ud, fns */
  lua_setiuservalue(L, -2, 2); /* ud */
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
  uv_async_init(&lm->loop, &lm->keepalive, lkh_on_keepalive);
  uv_timer_init(&lm->loop, &lm->poll_timer);
  lm->poll_timer.data = lm;
  lm->L = L;
  kh_subscribe(lm->m, NULL, KH_EVENT_ALL, lkh_on_count, lm, &lm->count_sub);
  *slot = lm;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &lkh_managers_key); /* ud, managers */
  lua_pushvalue(L, -2);                                 /* ud, managers, ud */
  lua_rawsetp(L, -2, lm);                               /* ud, managers */
  lua_pop(L, 1);                                        /* ud */
  /* Registers the loop's watchers with its backend, so fd() is live from the start. */
  uv_run(&lm->loop, UV_RUN_NOWAIT);
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

/* manager:close() -> true */
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

/* manager:create_kernel([opts]) -> id | nil, msg, code. Blocks until the kernel is ready. */
static int lkh_manager_create_kernel(lua_State *L) {
  lkh_manager_t *lm = lkh_manager_get(L, 1);
  char *opts = lkh_opts_encode(L, 2);
  char id[LKH_ID_MAX] = "";
  lkh_wait_t w;
  lua_State *prev;
  int rc;
  if (lm == NULL) {
    free(opts);
    return lkh_fail_closed(L);
  }
  if (lm->depth > 0) {
    free(opts);
    return lkh_fail_busy(L, "manager:create_kernel");
  }
  memset(&w, 0, sizeof(w));
  prev = lm->L;
  lm->L = L;
  rc = kh_kernel_create(lm->m, opts, id, sizeof(id), lkh_on_created, &w);
  lm->L = prev;
  free(opts);
  if (rc != 0) return lkh_fail(L, rc, kh_manager_errmsg(lm->m));
  lkh_loop_until(lm, L, &w.done);
  if (w.status != 0) return lkh_fail(L, w.status, w.errmsg);
  lua_pushstring(L, id);
  return 1;
}

/* Pushes the kernel object for id (cached in the manager's uservalue), or fails. */
static int lkh_kernel_push(lua_State *L, lkh_manager_t *lm, int mgr, const char *id) {
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

/* manager:get_kernel(id) -> kernel | nil, msg, "KH_ENOTFOUND" */
static int lkh_manager_get_kernel(lua_State *L) {
  lkh_manager_t *lm = lkh_manager_get(L, 1);
  const char *id = luaL_checkstring(L, 2);
  if (lm == NULL) return lkh_fail_closed(L);
  return lkh_kernel_push(L, lm, 1, id);
}

/* The core describes kernels with camelCase keys; Lua callers get snake_case. */
static void lkh_summary_keys(json_t *o) {
  json_t *c = json_object_get(o, "executionCount");
  if (c != NULL) {
    json_object_set(o, "execution_count", c);
    json_object_del(o, "executionCount");
  }
}

/* manager:list_kernels([namespace]) -> {{id, mode, namespace, status, created,
 * execution_count}, ...} */
static int lkh_manager_list_kernels(lua_State *L) {
  lkh_manager_t *lm = lkh_manager_get(L, 1);
  const char *ns = luaL_optstring(L, 2, NULL);
  char *s;
  json_t *j, *o;
  size_t i;
  if (lm == NULL) return lkh_fail_closed(L);
  s = kh_manager_list(lm->m, ns);
  if (s == NULL) return lkh_fail(L, KH_ENOMEM, NULL);
  j = json_loads(s, 0, NULL);
  kh_free(s);
  if (j == NULL) return lkh_fail(L, KH_EPROTO, "the kernel list is not JSON");
  json_array_foreach(j, i, o) lkh_summary_keys(o);
  lkh_json_push(L, j);
  json_decref(j);
  return 1;
}

/* manager:kernel_info(id) -> {id, mode, namespace, status, created, execution_count, options,
 * pid?, pooled?, sandbox?} | nil, msg, "KH_ENOTFOUND" */
static int lkh_manager_kernel_info(lua_State *L) {
  lkh_manager_t *lm = lkh_manager_get(L, 1);
  const char *id = luaL_checkstring(L, 2);
  char *s;
  json_t *j;
  if (lm == NULL) return lkh_fail_closed(L);
  s = kh_kernel_info(lm->m, id);
  if (s == NULL) return lkh_fail(L, KH_ENOTFOUND, NULL);
  j = json_loads(s, 0, NULL);
  kh_free(s);
  if (j == NULL) return lkh_fail(L, KH_EPROTO, "the kernel info is not JSON");
  lkh_summary_keys(j);
  lkh_json_push(L, j);
  json_decref(j);
  return 1;
}

/* manager:destroy_kernel(id) -> true | nil, msg, code. Inside a callback it only starts. */
static int lkh_manager_destroy_kernel(lua_State *L) {
  lkh_manager_t *lm = lkh_manager_get(L, 1);
  const char *id = luaL_checkstring(L, 2);
  lkh_wait_t w;
  lua_State *prev;
  int rc;
  if (lm == NULL) return lkh_fail_closed(L);
  memset(&w, 0, sizeof(w));
  prev = lm->L;
  lm->L = L;
  if (lm->depth > 0) {
    rc = kh_kernel_destroy(lm->m, id, NULL, NULL);
    lm->L = prev;
    if (rc != 0) return lkh_fail(L, rc, kh_manager_errmsg(lm->m));
    lua_pushboolean(L, 1);
    return 1;
  }
  rc = kh_kernel_destroy(lm->m, id, lkh_on_done, &w);
  lm->L = prev;
  if (rc != 0) return lkh_fail(L, rc, kh_manager_errmsg(lm->m));
  lkh_loop_until(lm, L, &w.done);
  if (w.status != 0) return lkh_fail(L, w.status, w.errmsg);
  lua_pushboolean(L, 1);
  return 1;
}

/* manager:destroy_all([namespace]) -> count | nil, msg, code */
static int lkh_manager_destroy_all(lua_State *L) {
  lkh_manager_t *lm = lkh_manager_get(L, 1);
  const char *ns = luaL_optstring(L, 2, NULL);
  lkh_wait_t w;
  lua_State *prev;
  int rc;
  if (lm == NULL) return lkh_fail_closed(L);
  if (lm->depth > 0) return lkh_fail_busy(L, "manager:destroy_all");
  memset(&w, 0, sizeof(w));
  prev = lm->L;
  lm->L = L;
  rc = kh_manager_destroy_all(lm->m, ns, lkh_on_done, &w);
  lm->L = prev;
  if (rc != 0) return lkh_fail(L, rc, kh_manager_errmsg(lm->m));
  lkh_loop_until(lm, L, &w.done);
  if (w.status < 0) return lkh_fail(L, w.status, w.errmsg);
  lua_pushinteger(L, w.status);
  return 1;
}

/* manager:on_kernel_event(id|nil, event, fn) -> subscription (an integer) */
static int lkh_manager_on_kernel_event(lua_State *L) {
  lkh_manager_t *lm = lkh_manager_get(L, 1);
  const char *id = luaL_optstring(L, 2, NULL);
  const char *event = luaL_checkstring(L, 3);
  lkh_sub_t *s, **tail;
  int type = 0;
  luaL_checktype(L, 4, LUA_TFUNCTION);
  if (strcmp(event, "error") != 0 && (type = kh_event_type_from_name(event)) < 0)
    return luaL_argerror(L, 3, lua_pushfstring(L, "unknown event \"%s\"", event));
  if (lm == NULL) return lkh_fail_closed(L);
  s = calloc(1, sizeof(*s));
  if (s == NULL || (id != NULL && (s->kernel_id = strdup(id)) == NULL)) {
    free(s);
    return luaL_error(L, "out of memory");
  }
  s->lm = lm;
  s->all = type == KH_EVENT_ALL && strcmp(event, "error") != 0;
  if (strcmp(event, "error") != 0) {
    int rc = kh_subscribe(lm->m, id, type, lkh_on_event, s, &s->core_id);
    if (rc != 0) {
      free(s->kernel_id);
      free(s);
      return lkh_fail(L, rc, NULL);
    }
  }
  s->fnref = lkh_fn_ref(L, lm, 4);
  s->id = ++lm->next_sub;
  for (tail = &lm->subs; *tail; tail = &(*tail)->next) {
  }
  *tail = s;
  lua_pushinteger(L, s->id);
  return 1;
}

/* manager:off_kernel_event(sub) -> true | nil, msg, "KH_ENOTFOUND". Safe inside callbacks. */
static int lkh_manager_off_kernel_event(lua_State *L) {
  lkh_manager_t *lm = lkh_manager_get(L, 1);
  lua_Integer id = luaL_checkinteger(L, 2);
  lkh_sub_t *s;
  if (lm == NULL) return lkh_fail_closed(L);
  for (s = lm->subs; s; s = s->next) {
    if (s->id != id || s->removed) continue;
    if (s->core_id > 0) kh_unsubscribe(lm->m, s->core_id);
    s->removed = 1;
    lkh_fn_unref(L, lm, s->fnref);
    s->fnref = LUA_NOREF;
    lkh_sub_sweep(lm);
    lua_pushboolean(L, 1);
    return 1;
  }
  return lkh_fail(L, KH_ENOTFOUND, "no such subscription");
}

/* manager:poll([timeout_ms]) -> number of events and completions dispatched. Waits at most
 * timeout_ms (default 0) for the first one; a negative timeout waits while work is pending. */
static int lkh_manager_poll(lua_State *L) {
  lkh_manager_t *lm = lkh_manager_get(L, 1);
  lua_Integer timeout = luaL_optinteger(L, 2, 0);
  lua_State *prev;
  size_t before;
  if (lm == NULL) return lkh_fail_closed(L);
  if (lm->depth > 0) return lkh_fail_busy(L, "manager:poll");
  before = lm->dispatched;
  prev = lm->L;
  lm->L = L;
  lm->depth++;
  lm->poll_expired = 0;
  if (timeout > 0) uv_timer_start(&lm->poll_timer, lkh_on_poll_timer, (uint64_t)timeout, 0);
  uv_run(&lm->loop, UV_RUN_NOWAIT);
  while (lm->dispatched == before && timeout != 0 && !lm->poll_expired && !lm->closing) {
    if (timeout < 0 && kh_manager_pending_count(lm->m) == 0) break;
    uv_run(&lm->loop, UV_RUN_ONCE);
  }
  uv_timer_stop(&lm->poll_timer);
  lm->depth--;
  lm->L = prev;
  lua_pushinteger(L, (lua_Integer)(lm->dispatched - before));
  return 1;
}

/* manager:run() -> number dispatched; runs until no request, creation or destroy is pending. */
static int lkh_manager_run(lua_State *L) {
  lkh_manager_t *lm = lkh_manager_get(L, 1);
  lua_State *prev;
  size_t before;
  if (lm == NULL) return lkh_fail_closed(L);
  if (lm->depth > 0) return lkh_fail_busy(L, "manager:run");
  before = lm->dispatched;
  prev = lm->L;
  lm->L = L;
  lm->depth++;
  uv_run(&lm->loop, UV_RUN_NOWAIT);
  while (!lm->closing && kh_manager_pending_count(lm->m) > 0) uv_run(&lm->loop, UV_RUN_ONCE);
  lm->depth--;
  lm->L = prev;
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

/* --- kernel ------------------------------------------------------------------------------- */

/* The kernel at idx and its manager (NULL when closed). */
static lkh_kernel_t *lkh_kernel_get(lua_State *L, int idx, lkh_manager_t **lm) {
  lkh_kernel_t *k = luaL_checkudata(L, idx, LKH_KERNEL_MT);
  lua_getiuservalue(L, idx, 1); /* manager */
  *lm = lkh_manager_get(L, lua_gettop(L));
  lua_pop(L, 1); /* */
  return k;
}

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

/* Reads kernel:execute's options table at idx. Misuse raises. */
static void lkh_exec_opts_check(lua_State *L, int idx, kh_execute_options_t *o) {
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

/* kernel:execute(code[, opts]) -> result | nil, msg, code. Blocks; dispatches events. */
static int lkh_kernel_execute(lua_State *L) {
  lkh_manager_t *lm;
  lkh_kernel_t *k = lkh_kernel_get(L, 1, &lm);
  size_t len;
  const char *code = luaL_checklstring(L, 2, &len);
  kh_execute_options_t o;
  lkh_req_t r;
  lua_State *prev;
  int rc;
  lkh_exec_opts_check(L, 3, &o);
  if (lm == NULL) return lkh_fail_closed(L);
  if (lm->depth > 0) return lkh_fail_busy(L, "kernel:execute");
  memset(&r, 0, sizeof(r));
  r.lm = lm;
  r.fnref = LUA_NOREF;
  snprintf(r.kernel_id, sizeof(r.kernel_id), "%s", k->id);
  prev = lm->L;
  lm->L = L;
  rc = kh_kernel_execute(lm->m, k->id, code, len, &o, r.exec_id, sizeof(r.exec_id), lkh_on_reply,
                         &r);
  lm->L = prev;
  if (rc != 0) return lkh_fail(L, rc, kh_manager_errmsg(lm->m));
  lkh_loop_until(lm, L, &r.done);
  if (r.status == 0) {
    rc = r.json ? lkh_reply_push(L, r.json, r.len, r.kernel_id, r.exec_id) : KH_EPROTO;
    if (rc != 0) lkh_fail(L, rc, "the reply is not a JSON object");
  } else {
    lkh_fail(L, r.status, r.errmsg);
  }
  free(r.json);
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
  lua_State *prev;
  int rc;
  if (fn == 4)
    lkh_exec_opts_check(L, 3, &o);
  else
    kh_execute_options_init(&o);
  luaL_checktype(L, fn, LUA_TFUNCTION);
  if (lm == NULL) return lkh_fail_closed(L);
  r = calloc(1, sizeof(*r));
  if (r == NULL) return luaL_error(L, "out of memory");
  r->lm = lm;
  snprintf(r->kernel_id, sizeof(r->kernel_id), "%s", k->id);
  r->fnref = lkh_fn_ref(L, lm, fn);
  prev = lm->L;
  lm->L = L;
  rc = kh_kernel_execute(lm->m, k->id, code, len, &o, r->exec_id, sizeof(r->exec_id), lkh_on_reply,
                         r);
  lm->L = prev;
  if (rc != 0) {
    lkh_fn_unref(L, lm, r->fnref);
    free(r);
    return lkh_fail(L, rc, kh_manager_errmsg(lm->m));
  }
  lua_pushstring(L, r->exec_id);
  return 1;
}

/* kernel:interrupt() -> true | nil, msg, code */
static int lkh_kernel_interrupt(lua_State *L) {
  lkh_manager_t *lm;
  lkh_kernel_t *k = lkh_kernel_get(L, 1, &lm);
  int rc;
  if (lm == NULL) return lkh_fail_closed(L);
  if ((rc = kh_kernel_interrupt(lm->m, k->id)) != 0)
    return lkh_fail(L, rc, kh_manager_errmsg(lm->m));
  lua_pushboolean(L, 1);
  return 1;
}

/* kernel:input_reply(value) -> true | nil, msg, code */
static int lkh_kernel_input_reply(lua_State *L) {
  lkh_manager_t *lm;
  lkh_kernel_t *k = lkh_kernel_get(L, 1, &lm);
  const char *value = luaL_checkstring(L, 2);
  int rc;
  if (lm == NULL) return lkh_fail_closed(L);
  if ((rc = kh_kernel_input_reply(lm->m, k->id, value)) != 0)
    return lkh_fail(L, rc, kh_manager_errmsg(lm->m));
  lua_pushboolean(L, 1);
  return 1;
}

/* kernel:restart() -> true | nil, msg, code. Blocks until the kernel is ready again. */
static int lkh_kernel_restart(lua_State *L) {
  lkh_manager_t *lm;
  lkh_kernel_t *k = lkh_kernel_get(L, 1, &lm);
  lkh_wait_t w;
  lua_State *prev;
  int rc;
  if (lm == NULL) return lkh_fail_closed(L);
  if (lm->depth > 0) return lkh_fail_busy(L, "kernel:restart");
  memset(&w, 0, sizeof(w));
  prev = lm->L;
  lm->L = L;
  rc = kh_kernel_restart(lm->m, k->id, lkh_on_done, &w);
  lm->L = prev;
  if (rc != 0) return lkh_fail(L, rc, kh_manager_errmsg(lm->m));
  lkh_loop_until(lm, L, &w.done);
  if (w.status != 0) return lkh_fail(L, w.status, w.errmsg);
  lua_pushboolean(L, 1);
  return 1;
}

/* kernel:destroy() -> manager:destroy_kernel(kernel.id). Also the kernel's __close. */
static int lkh_kernel_destroy(lua_State *L) {
  lkh_kernel_t *k = luaL_checkudata(L, 1, LKH_KERNEL_MT);
  lua_settop(L, 1);
  lua_pushcfunction(L, lkh_manager_destroy_kernel); /* k, f */
  lua_getiuservalue(L, 1, 1);                       /* k, f, manager */
  lua_pushstring(L, k->id);                         /* k, f, manager, id */
  lua_call(L, 2, 3);                                /* k, ok, msg, code */
  return 3;
}

static int lkh_kernel_close(lua_State *L) {
  lkh_kernel_t *k = luaL_checkudata(L, 1, LKH_KERNEL_MT);
  lkh_manager_t *lm;
  lua_getiuservalue(L, 1, 1); /* k, ..., manager */
  lm = lkh_manager_get(L, -1);
  lua_pop(L, 1);
  if (lm != NULL && kh_kernel_exists(lm->m, k->id, NULL)) lkh_kernel_destroy(L);
  return 0;
}

/* --- module ------------------------------------------------------------------------------- */

/* kernelhost.set_callback_wrapper(fn|nil): every callback then runs as fn(callback, ...). */
static int lkh_set_callback_wrapper(lua_State *L) {
  if (!lua_isnoneornil(L, 1)) luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &lkh_wrapper_key);
  return 0;
}

/* kernelhost.strerror(code) -> description of a KH_E* or UV_E* code */
static int lkh_strerror(lua_State *L) {
  lua_pushstring(L, kh_strerror((int)luaL_checkinteger(L, 1)));
  return 1;
}

/* kernelhost.hrtime() -> monotonic time in ns (uv_hrtime), for hosts and benchmarks */
static int lkh_hrtime(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)uv_hrtime());
  return 1;
}

/* Keeps this module mapped until the process exits: Python threads that outlive the Lua state
 * may still call into the core it contains. */
static void lkh_pin_module(void) {
  Dl_info info;
  if (dladdr((void *)lkh_pin_module, &info) && info.dli_fname != NULL)
    (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}

static const luaL_Reg lkh_manager_methods[] = {{"create_kernel", lkh_manager_create_kernel},
                                               {"get_kernel", lkh_manager_get_kernel},
                                               {"list_kernels", lkh_manager_list_kernels},
                                               {"kernel_info", lkh_manager_kernel_info},
                                               {"destroy_kernel", lkh_manager_destroy_kernel},
                                               {"destroy_all", lkh_manager_destroy_all},
                                               {"on_kernel_event", lkh_manager_on_kernel_event},
                                               {"off_kernel_event", lkh_manager_off_kernel_event},
                                               {"poll", lkh_manager_poll},
                                               {"run", lkh_manager_run},
                                               {"fd", lkh_manager_fd},
                                               {"timeout", lkh_manager_timeout},
                                               {"close", lkh_manager_close},
                                               {NULL, NULL}};

static const luaL_Reg lkh_kernel_methods[] = {{"execute", lkh_kernel_execute},
                                              {"submit", lkh_kernel_submit},
                                              {"interrupt", lkh_kernel_interrupt},
                                              {"input_reply", lkh_kernel_input_reply},
                                              {"restart", lkh_kernel_restart},
                                              {"destroy", lkh_kernel_destroy},
                                              {NULL, NULL}};

static void lkh_set_strings(lua_State *L, const char *const *kv) {
  for (; *kv; kv += 2) {
    lua_pushstring(L, kv[1]);
    lua_setfield(L, -2, kv[0]);
  }
}

LKH_EXPORT int luaopen_kernelhost(lua_State *L) {
  static const char *const modes[] = {"MAIN_THREAD", "main_thread", "WORKER", "worker", NULL};
  static const char *const events[] = {"STREAM",
                                       "stream",
                                       "DISPLAY_DATA",
                                       "display_data",
                                       "UPDATE_DISPLAY_DATA",
                                       "update_display_data",
                                       "EXECUTE_RESULT",
                                       "execute_result",
                                       "EXECUTE_ERROR",
                                       "execute_error",
                                       "CLEAR_OUTPUT",
                                       "clear_output",
                                       "INPUT_REQUEST",
                                       "input_request",
                                       "STATUS",
                                       "status",
                                       "ALL",
                                       "*",
                                       NULL};
  lkh_pin_module();
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &lkh_managers_key) != LUA_TTABLE) {
    lua_createtable(L, 0, 1); /* nil, managers */
    lua_createtable(L, 0, 1); /* nil, managers, mt */
    lua_pushliteral(L, "v");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2); /* nil, managers */
    lua_rawsetp(L, LUA_REGISTRYINDEX, &lkh_managers_key);
  }
  lua_pop(L, 1); /* */

  luaL_newmetatable(L, LKH_MANAGER_MT); /* mt */
  luaL_newlib(L, lkh_manager_methods);  /* mt, methods */
  lua_setfield(L, -2, "__index");       /* mt */
  lua_pushcfunction(L, lkh_manager_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, lkh_manager_close);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, lkh_manager_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1); /* */

  luaL_newmetatable(L, LKH_KERNEL_MT);      /* mt */
  luaL_newlib(L, lkh_kernel_methods);       /* mt, methods */
  lua_pushcclosure(L, lkh_kernel_index, 1); /* mt, index */
  lua_setfield(L, -2, "__index");           /* mt */
  lua_pushcfunction(L, lkh_kernel_close);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, lkh_kernel_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1); /* */

  lua_newtable(L);          /* M */
  lua_createtable(L, 0, 1); /* M, KernelManager */
  lua_pushcfunction(L, lkh_manager_new);
  lua_setfield(L, -2, "new");
  lua_setfield(L, -2, "KernelManager"); /* M */
  lua_newtable(L);
  lkh_set_strings(L, modes);
  lua_setfield(L, -2, "KernelMode");
  lua_newtable(L);
  lkh_set_strings(L, events);
  lua_setfield(L, -2, "KernelEvents");
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
  lua_newtable(L); /* M, empty_array */
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &lkh_array_mt_key) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 2); /* M, empty_array, mt */
    lua_pushliteral(L, "array");
    lua_setfield(L, -2, "__jsontype");
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &lkh_array_mt_key);
  }
  lua_setmetatable(L, -2);            /* M, empty_array */
  lua_setfield(L, -2, "empty_array"); /* M */
  lua_newtable(L);                    /* M, errors */
#define LKH_ERR_FIELD_(name, code, msg) \
  lua_pushinteger(L, code);             \
  lua_setfield(L, -2, "KH_" #name);
  KH_ERRNO_MAP(LKH_ERR_FIELD_)
#undef LKH_ERR_FIELD_
  lua_setfield(L, -2, "errors"); /* M */
  lua_pushcfunction(L, lkh_set_callback_wrapper);
  lua_setfield(L, -2, "set_callback_wrapper");
  lua_pushcfunction(L, lkh_strerror);
  lua_setfield(L, -2, "strerror");
  lua_pushcfunction(L, lkh_hrtime);
  lua_setfield(L, -2, "hrtime");
  lua_pushfstring(L, "%d.%d.%d", KH_VERSION_MAJOR, KH_VERSION_MINOR, KH_VERSION_PATCH);
  lua_setfield(L, -2, "version");
  return 1;
}

/* events.c: subscriptions (manager:on_kernel_event / off_kernel_event) and every call from the
 * binding into Lua: the callback table, the optional callback wrapper, pcall with a traceback,
 * and "error" handlers that receive what a callback raised. Loop thread: callbacks run only
 * while the binding runs the loop (a blocking call, poll() or run()), on the Lua thread that
 * runs it (lm->L). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lkh.h"

/* One Lua subscription: an event subscription on the core's bus, or an "error" handler that
 * only the binding knows about (core_id == 0). */
struct lkh_sub_s {
  struct lkh_sub_s *next;
  lkh_manager_t *lm;
  lua_Integer id;  /* the handle Lua sees */
  int64_t core_id; /* 0 for "error" handlers */
  char *kernel_id; /* owned; NULL: every kernel */
  int all;         /* subscribed to "*": the payload is wrapped as {type, data} */
  int fnref;       /* key of the callback in the manager's callback table */
  int removed;     /* unsubscribed; freed by the next sweep outside callbacks */
};

static char lkh_wrapper_key; /* registry: the callback wrapper, if set */

/* --- the callback table ------------------------------------------------------------------- */

/* Callbacks live in the manager's uservalue 2, not in the registry, so a callback that refers
 * to its manager does not keep the manager alive: an unreachable manager is collected. */
static int lkh_events_fns(lua_State *L, lkh_manager_t *lm) {
  if (!lkh_manager_push(L, lm)) return 0; /* nil */
  lua_getiuservalue(L, -1, 2);            /* ud, fns */
  lua_remove(L, -2);                      /* fns */
  return 1;
}

/* Stores the function at idx; returns its key. */
int lkh_events_ref(lua_State *L, lkh_manager_t *lm, int idx) {
  int ref = ++lm->next_ref;
  idx = lua_absindex(L, idx);
  if (lkh_events_fns(L, lm)) { /* fns */
    lua_pushvalue(L, idx);     /* fns, fn */
    lua_rawseti(L, -2, ref);   /* fns */
  }
  lua_pop(L, 1); /* */
  return ref;
}

/* Pushes the function stored under ref (nil when gone). */
void lkh_events_push(lua_State *L, lkh_manager_t *lm, int ref) {
  if (lkh_events_fns(L, lm)) { /* fns */
    lua_rawgeti(L, -1, ref);   /* fns, fn */
    lua_remove(L, -2);         /* fn */
  }
}

void lkh_events_unref(lua_State *L, lkh_manager_t *lm, int ref) {
  if (lm->quiet || ref == LUA_NOREF) return; /* a collected manager's table goes with it */
  if (lkh_events_fns(L, lm)) {               /* fns */
    lua_pushnil(L);                          /* fns, nil */
    lua_rawseti(L, -2, ref);                 /* fns */
  }
  lua_pop(L, 1); /* */
}

/* --- calling Lua back --------------------------------------------------------------------- */

/* Frees the subscriptions removed meanwhile. Never while a Lua callback runs: lkh_events_report
 * walks the list around its handlers, and a handler may unsubscribe (itself or another). */
static void lkh_events_sweep(lkh_manager_t *lm) {
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

static int lkh_events_traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* Reports the error message on top of the stack (and pops it): to every matching "error"
 * handler, or to stderr when there is none (or a handler fails too). An error never propagates
 * into the loop: uv_run has no way to unwind through libuv's frames. */
void lkh_events_report(lkh_manager_t *lm, lua_State *L, const char *kernel_id,
                       const char *exec_id, const char *where) {
  lkh_sub_t *s;
  lua_Integer last = lm->next_sub;       /* handlers added by a handler wait for the next error */
  int handled = 0, base = lua_gettop(L); /* err */
  lm->cb_depth++;
  for (s = lm->subs; s; s = s->next) {
    if (s->removed || s->core_id != 0 || s->id > last) continue;
    if (s->kernel_id != NULL && (kernel_id == NULL || strcmp(s->kernel_id, kernel_id) != 0))
      continue;
    handled = 1;
    lua_pushcfunction(L, lkh_events_traceback); /* err, msgh */
    lkh_events_push(L, lm, s->fnref);           /* err, msgh, fn */
    lua_pushvalue(L, base);                     /* err, msgh, fn, err */
    lua_createtable(L, 0, 3);                   /* err, msgh, fn, err, info */
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
  lua_settop(L, base - 1); /* */
  lkh_events_sweep(lm);
}

/* Calls the function below its nargs arguments on the stack, through the callback wrapper if
 * one is set, in protected mode; a failure is reported, never raised. Pops everything. */
void lkh_events_call(lkh_manager_t *lm, lua_State *L, int nargs, const char *kernel_id,
                     const char *exec_id, const char *where) {
  int fn = lua_gettop(L) - nargs;             /* fn, args */
  lua_pushcfunction(L, lkh_events_traceback); /* fn, args, msgh */
  lua_insert(L, fn);                          /* msgh, fn, args */
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &lkh_wrapper_key) != LUA_TNIL) {
    lua_insert(L, fn + 1); /* msgh, wrapper, fn, args */
    nargs++;
  } else {
    lua_pop(L, 1); /* msgh, fn, args */
  }
  lm->cb_depth++;
  if (lua_pcall(L, nargs, 0, fn) != LUA_OK) { /* msgh, err */
    lm->cb_depth--;
    lkh_events_report(lm, L, kernel_id, exec_id, where); /* msgh */
  } else {
    lm->cb_depth--; /* msgh */
  }
  lua_pop(L, 1); /* */
  lkh_events_sweep(lm);
}

/* The core's event callback: one per Lua subscription. */
static void lkh_events_on_event(kh_manager_t *m, const kh_event_t *ev, void *data) {
  lkh_sub_t *s = data;
  lkh_manager_t *lm = s->lm;
  lua_State *L = lm->L;
  json_t *j;
  (void)m;
  /* L is NULL only outside the binding's own loop runs, where the core never calls back. */
  if (s->removed || lm->quiet || L == NULL) return;
  luaL_checkstack(L, 8, "kernelhost event");
  j = json_loadb(ev->json, ev->json_len, JSON_ALLOW_NUL, NULL); /* "\u0000" is text */
  if (j == NULL) {
    lua_pushfstring(L, "kernelhost: %s event with invalid JSON payload", ev->type_name);
    lkh_events_report(lm, L, ev->kernel_id, ev->execution_id, ev->type_name);
    return;
  }
  lkh_values_put_buffers(j, ev->buffers, ev->nbuffers);
  lkh_values_tag(j, ev->kernel_id, ev->execution_id);
  lkh_events_push(L, lm, s->fnref); /* fn */
  if (s->all) {
    lua_createtable(L, 0, 4); /* fn, ev */
    lua_pushstring(L, ev->type_name);
    lua_setfield(L, -2, "type");
    lkh_values_push(L, j);
    lua_setfield(L, -2, "data");
    lua_pushstring(L, ev->kernel_id);
    lua_setfield(L, -2, "kernel_id");
    lua_pushstring(L, ev->execution_id);
    lua_setfield(L, -2, "execution_id");
  } else {
    lkh_values_push(L, j); /* fn, payload */
  }
  json_decref(j);
  lkh_events_call(lm, L, 1, ev->kernel_id, ev->execution_id, ev->type_name);
}

/* Drops every subscription at close; the core's side ends with the core manager. */
void lkh_events_free(lkh_manager_t *lm, lua_State *L) {
  lkh_sub_t *s;
  for (s = lm->subs; s; s = s->next) {
    lkh_events_unref(L, lm, s->fnref);
    s->fnref = LUA_NOREF;
    s->removed = 1;
  }
  lkh_events_sweep(lm);
}

/* --- manager methods ---------------------------------------------------------------------- */

/* manager:on_kernel_event(id|nil, event, fn) -> subscription (an integer) */
static int lkh_events_subscribe(lua_State *L) {
  lkh_manager_t *lm = lkh_manager_get(L, 1);
  const char *id = luaL_optstring(L, 2, NULL);
  const char *event = luaL_checkstring(L, 3);
  int is_error = strcmp(event, "error") == 0, type = 0;
  lkh_sub_t *s, **tail;
  luaL_checktype(L, 4, LUA_TFUNCTION);
  if (!is_error && (type = kh_event_type_from_name(event)) < 0)
    return luaL_argerror(L, 3, lua_pushfstring(L, "unknown event \"%s\"", event));
  if (lm == NULL) return lkh_fail_closed(L);
  s = calloc(1, sizeof(*s));
  if (s == NULL || (id != NULL && (s->kernel_id = strdup(id)) == NULL)) {
    free(s);
    return luaL_error(L, "out of memory");
  }
  s->lm = lm;
  s->all = type == KH_EVENT_ALL && !is_error;
  if (!is_error) {
    int rc = kh_subscribe(lm->m, id, type, lkh_events_on_event, s, &s->core_id);
    if (rc != 0) {
      free(s->kernel_id);
      free(s);
      return lkh_fail(L, rc, NULL);
    }
  }
  s->fnref = lkh_events_ref(L, lm, 4);
  s->id = ++lm->next_sub;
  for (tail = &lm->subs; *tail; tail = &(*tail)->next) {
  }
  *tail = s; /* appended: "error" handlers run in subscription order */
  lua_pushinteger(L, s->id);
  return 1;
}

/* manager:off_kernel_event(sub) -> true | nil, msg, "KH_ENOTFOUND". Safe inside callbacks. */
static int lkh_events_unsubscribe(lua_State *L) {
  lkh_manager_t *lm = lkh_manager_get(L, 1);
  lua_Integer id = luaL_checkinteger(L, 2);
  lkh_sub_t *s;
  if (lm == NULL) return lkh_fail_closed(L);
  for (s = lm->subs; s; s = s->next) {
    if (s->id != id || s->removed) continue;
    if (s->core_id > 0) kh_unsubscribe(lm->m, s->core_id);
    s->removed = 1;
    lkh_events_unref(L, lm, s->fnref);
    s->fnref = LUA_NOREF;
    lkh_events_sweep(lm);
    lua_pushboolean(L, 1);
    return 1;
  }
  return lkh_fail(L, KH_ENOTFOUND, "no such subscription");
}

const luaL_Reg lkh_events_methods[] = {{"on_kernel_event", lkh_events_subscribe},
                                       {"off_kernel_event", lkh_events_unsubscribe},
                                       {NULL, NULL}};

/* kernelhost.set_callback_wrapper(fn|nil): every callback then runs as fn(callback, ...), so a
 * host can run callbacks inside its own error handling or scheduler. */
static int lkh_events_set_wrapper(lua_State *L) {
  if (!lua_isnoneornil(L, 1)) luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &lkh_wrapper_key);
  return 0;
}

/* Sets M.set_callback_wrapper on the module table on top of the stack. */
void lkh_events_open(lua_State *L) {
  lua_pushcfunction(L, lkh_events_set_wrapper); /* M, f */
  lua_setfield(L, -2, "set_callback_wrapper");  /* M */
}

/* jupyter.c: kernelhost.JupyterServer and manager:serve_jupyter(): one kernel of the manager
 * served on Jupyter's wire protocol (kh_jupyter_serve), so that `jupyter console --existing`,
 * JupyterLab or jupyter_client attach to it while the host keeps using it. The server runs on
 * the manager's loop, so it serves while the host runs that loop: blocking calls, poll(), run(),
 * or the host's own loop watching manager:fd(). Loop thread.
 *
 * The core's note callback gets a heap struct, not the userdata: the core keeps its pointer until
 * the STOPPED note, which comes from the loop after __gc has only started the stop. So the struct
 * goes with whichever comes last, STOPPED or the userdata's __gc:
 *
 *   s set,  gone 0    serving (or stopping): the userdata holds it, the core's notes reach it
 *   s NULL, gone 0    stopped: the userdata holds it, info is the last kh_jupyter_info
 *   s set,  gone 1    collected while serving: stopping, STOPPED frees it
 *   s NULL, gone 1    freed
 *
 * The callbacks (server:on) live in the manager's callback table (events.c), so that a server
 * object does not keep its manager alive through them. A collected server calls no Lua function
 * any more, as a collected manager does not. */
#include <stdlib.h>
#include <string.h>

#include "lkh.h"

#define LKH_JUPYTER_MT "kernelhost.JupyterServer"

typedef struct {
  lkh_manager_t *lm; /* valid while s is set: the manager's close waits for STOPPED */
  kh_jupyter_t *s;   /* NULL once STOPPED ran */
  int stopped;       /* STOPPED ran (the flag a blocking stop waits on) */
  int gone;          /* the userdata was collected */
  int on_shutdown, on_stopped; /* keys in the manager's callback table, or LUA_NOREF */
  char *info;        /* kh_jupyter_info at STOPPED (kh_free) */
  char *conn_file;   /* the connection file it wrote, or NULL */
  char kernel_id[LKH_ID_MAX];
} lkh_jserver_t;

/* --- the core's notes (loop) ------------------------------------------------------------------ */

/* Lets go of the server's callbacks (L NULL: outside a loop run, where none is left to). */
static void lkh_jupyter_unref_all(lua_State *L, lkh_jserver_t *j) {
  if (L != NULL) {
    lkh_events_unref(L, j->lm, j->on_shutdown);
    lkh_events_unref(L, j->lm, j->on_stopped);
  }
  j->on_shutdown = j->on_stopped = LUA_NOREF;
}

static void lkh_jupyter_free(lkh_jserver_t *j) {
  kh_free(j->info);
  free(j->conn_file);
  free(j);
}

static void lkh_jupyter_on_note(kh_jupyter_t *s, int note, int restart, void *data) {
  lkh_jserver_t *j = data;
  lkh_manager_t *lm = j->lm;
  lua_State *L = lm->L;
  int stopped = note == KH_JUPYTER_STOPPED;
  int ref = stopped ? j->on_stopped : j->on_shutdown;
  if (stopped) {
    j->info = kh_jupyter_info(s); /* the handle is freed when this returns */
    j->s = NULL;
    j->stopped = 1;
  }
  lm->dispatched++;
  if (!j->gone && !lm->quiet && L != NULL && ref != LUA_NOREF) {
    luaL_checkstack(L, 4, "kernelhost jupyter note");
    lkh_events_push(L, lm, ref); /* fn */
    if (stopped) {
      lkh_events_call(lm, L, 0, j->kernel_id, "", "jupyter stopped"); /* */
    } else {
      lua_createtable(L, 0, 1); /* fn, {restart} */
      lua_pushboolean(L, restart);
      lua_setfield(L, -2, "restart");
      lkh_events_call(lm, L, 1, j->kernel_id, "", "jupyter shutdown"); /* */
    }
  }
  if (!stopped) return;
  lkh_jupyter_unref_all(L, j);
  if (j->gone) lkh_jupyter_free(j);
}

/* --- the userdata ----------------------------------------------------------------------------- */

/* The server at idx, and its manager in *lm (NULL when closed). */
static lkh_jserver_t *lkh_jupyter_check(lua_State *L, int idx, lkh_manager_t **lm) {
  lkh_jserver_t *j = *(lkh_jserver_t **)luaL_checkudata(L, idx, LKH_JUPYTER_MT);
  if (j == NULL) luaL_argerror(L, idx, "the server was collected"); /* resurrected in a __gc */
  lua_getiuservalue(L, idx, 1); /* ..., manager */
  *lm = lkh_manager_get(L, -1);
  lua_pop(L, 1); /* ... */
  return j;
}

/* manager:serve_jupyter(id[, opts]) -> server | nil, msg, code. opts: {connection_file, ip,
 * transport, key, kernel_name, connection, shutdown} (snake_case or camelCase; the core checks
 * them: KH_EOPTION names a bad one). Misuse (an id that is no string, opts that are no table of
 * JSON values) raises. */
static int lkh_jupyter_serve(lua_State *L) {
  lkh_manager_t *lm = lkh_manager_get(L, 1);
  const char *id = luaL_checkstring(L, 2);
  char *opts, bad[320], *text;
  lkh_jserver_t *j, **slot;
  json_t *info;
  int rc;
  if (lkh_values_check_opts(L, 3, bad, sizeof(bad))) return lkh_fail(L, KH_EOPTION, bad);
  opts = lkh_values_encode_opts(L, 3);
  if (lm == NULL) {
    free(opts);
    return lkh_fail_closed(L);
  }
  slot = lua_newuserdatauv(L, sizeof(*slot), 1); /* ud */
  *slot = NULL;
  if ((j = calloc(1, sizeof(*j))) == NULL) {
    free(opts);
    return luaL_error(L, "out of memory");
  }
  j->lm = lm;
  j->on_shutdown = j->on_stopped = LUA_NOREF;
  snprintf(j->kernel_id, sizeof(j->kernel_id), "%s", id);
  rc = kh_jupyter_serve(lm->m, id, opts, lkh_jupyter_on_note, j, &j->s);
  free(opts);
  if (rc != 0) {
    free(j);
    return lkh_fail(L, rc, kh_manager_errmsg(lm->m));
  }
  /* Its notes come from the loop, never inside this call: the object is complete first. */
  if ((text = kh_jupyter_info(j->s)) != NULL && (info = json_loads(text, 0, NULL)) != NULL) {
    json_t *f = json_object_get(info, "connection_file");
    if (json_is_string(f)) j->conn_file = strdup(json_string_value(f));
    json_decref(info);
  }
  kh_free(text);
  *slot = j;
  luaL_setmetatable(L, LKH_JUPYTER_MT);
  lua_pushvalue(L, 1);         /* ud, manager */
  lua_setiuservalue(L, -2, 1); /* ud */
  return 1;
}

/* server:stop() -> true. Stops serving (the kernel keeps running) and removes the connection
 * file. Blocks until the server stopped, its "stopped" callback run, except inside a callback,
 * where it only starts the stop (the callback follows from the loop). Stopping a server that
 * stops or stopped already, or whose manager closed (which stopped it), is no error. Also the
 * server's __close. */
static int lkh_jupyter_stop(lua_State *L) {
  lkh_manager_t *lm;
  lkh_jserver_t *j = lkh_jupyter_check(L, 1, &lm);
  int rc;
  if (j->s != NULL && lm != NULL) {
    if ((rc = kh_jupyter_stop(j->s)) != 0 && rc != KH_ECLOSED)
      return lkh_fail(L, rc, kh_manager_errmsg(lm->m));
    if (lm->depth == 0) lkh_manager_wait(lm, L, &j->stopped);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* server:connection_file() -> the connection file it wrote (removed once it stopped), or nil
 * when it wrote none */
static int lkh_jupyter_connection_file(lua_State *L) {
  lkh_manager_t *lm;
  lkh_jserver_t *j = lkh_jupyter_check(L, 1, &lm);
  if (j->conn_file != NULL)
    lua_pushstring(L, j->conn_file);
  else
    lua_pushnil(L);
  return 1;
}

/* server:info() -> {kernel_id, connection_file, connection (the file's content), messages,
 * dropped, stopping}; once stopped, as it was then. */
static int lkh_jupyter_info(lua_State *L) {
  lkh_manager_t *lm;
  lkh_jserver_t *j = lkh_jupyter_check(L, 1, &lm);
  char *text = j->s != NULL ? kh_jupyter_info(j->s) : j->info;
  json_t *doc = text != NULL ? json_loads(text, 0, NULL) : NULL;
  if (j->s != NULL) kh_free(text);
  if (doc == NULL) return lkh_fail(L, KH_ENOMEM, NULL);
  lkh_values_push(L, doc);
  json_decref(doc);
  return 1;
}

/* server:on(event, fn|nil) -> server. event "shutdown": fn({restart = boolean}) when a client
 * asked for a shutdown (its reply sent; what follows is the shutdown option's); "stopped": fn()
 * exactly once, last, when the server stopped for any reason (stop, its kernel destroyed, the
 * manager closed, a client's shutdown). One function per event: a new one replaces it, nil
 * removes it. */
static int lkh_jupyter_on(lua_State *L) {
  lkh_manager_t *lm;
  lkh_jserver_t *j = lkh_jupyter_check(L, 1, &lm);
  const char *event = luaL_checkstring(L, 2);
  int *slot;
  if (strcmp(event, "shutdown") == 0)
    slot = &j->on_shutdown;
  else if (strcmp(event, "stopped") == 0)
    slot = &j->on_stopped;
  else
    return luaL_argerror(L, 2, lua_pushfstring(L, "unknown event \"%s\"", event));
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TFUNCTION);
  lua_settop(L, 3);
  if (lm != NULL && !j->stopped) { /* else no note will come */
    lkh_events_unref(L, lm, *slot);
    *slot = lua_isnil(L, 3) ? LUA_NOREF : lkh_events_ref(L, lm, 3);
  }
  lua_settop(L, 1); /* server */
  return 1;
}

/* __gc: a server still serving is stopped (STOPPED then comes from the loop, calls nothing and
 * frees the struct). While s is set its manager's struct is alive too: a manager's memory goes
 * only once its loop closed, after every STOPPED. */
static int lkh_jupyter_gc(lua_State *L) {
  lkh_jserver_t **slot = luaL_checkudata(L, 1, LKH_JUPYTER_MT);
  lkh_jserver_t *j = *slot;
  if (j == NULL) return 0;
  *slot = NULL;
  if (j->s == NULL) { /* stopped: its callbacks were let go then */
    lkh_jupyter_free(j);
    return 0;
  }
  j->gone = 1;
  lkh_jupyter_unref_all(L, j);
  (void)kh_jupyter_stop(j->s); /* KH_ECLOSED: stopping already */
  return 0;
}

/* server.kernel_id is a field; everything else is a method. */
static int lkh_jupyter_index(lua_State *L) {
  lkh_jserver_t *j = *(lkh_jserver_t **)luaL_checkudata(L, 1, LKH_JUPYTER_MT);
  const char *key = lua_tostring(L, 2);
  if (key != NULL && strcmp(key, "kernel_id") == 0 && j != NULL) {
    lua_pushstring(L, j->kernel_id);
  } else {
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1)); /* methods[key] */
  }
  return 1;
}

static int lkh_jupyter_tostring(lua_State *L) {
  lkh_jserver_t *j = *(lkh_jserver_t **)luaL_checkudata(L, 1, LKH_JUPYTER_MT);
  lua_pushfstring(L, "kernelhost.JupyterServer (kernel %s, %s)", j ? j->kernel_id : "?",
                  j == NULL || j->stopped ? "stopped" : "serving");
  return 1;
}

static const luaL_Reg lkh_jupyter_methods[] = {{"stop", lkh_jupyter_stop},
                                               {"connection_file", lkh_jupyter_connection_file},
                                               {"info", lkh_jupyter_info},
                                               {"on", lkh_jupyter_on},
                                               {NULL, NULL}};

const luaL_Reg lkh_jupyter_manager_methods[] = {{"serve_jupyter", lkh_jupyter_serve},
                                                {NULL, NULL}};

/* Creates the JupyterServer metatable (servers are made by manager:serve_jupyter). */
void lkh_jupyter_open(lua_State *L) {
  luaL_newmetatable(L, LKH_JUPYTER_MT);      /* mt */
  luaL_newlib(L, lkh_jupyter_methods);       /* mt, methods */
  lua_pushcclosure(L, lkh_jupyter_index, 1); /* mt, index */
  lua_setfield(L, -2, "__index");            /* mt */
  lua_pushcfunction(L, lkh_jupyter_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, lkh_jupyter_stop);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, lkh_jupyter_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1); /* */
}

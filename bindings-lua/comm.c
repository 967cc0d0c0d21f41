/* comm.c: kernelhost.Comm, the host's side of a Jupyter comm: kernel:open_comm() and
 * kernel:comm(), comm:send(), comm:close(), and the routing of each kernel's comm_msg and
 * comm_close events to the callbacks of the comm they name (comm:on_msg, comm:on_close). The
 * events themselves reach manager:on_kernel_event listeners as any event does. Loop thread.
 *
 * A comm object holds its kernel object (uservalue 1) and its two callbacks (uservalues 2, 3).
 * While its comm may be open, the manager's comm table (the manager's uservalue 3:
 * comms[kernel_id][comm_id] = comm) holds it, which is also what makes kernel:comm(id) return
 * the same object each time: a comm with callbacks stays alive as long as the kernel can still
 * call them (luv's rule for handles). It leaves that table when its comm closes (either side),
 * when the kernel restarts or dies (its comms end with its Python side) and when the kernel is
 * destroyed; its calls then fail with KH_ECLOSED or KH_ENOTFOUND from the core, which knows
 * which comms are open. */
#include <stdlib.h>
#include <string.h>

#include "lkh.h"

#define LKH_COMM_MT "kernelhost.Comm"

typedef struct {
  char kernel_id[LKH_ID_MAX];
  char *comm_id;     /* owned */
  char *target_name; /* owned; NULL when not known (kernel:comm) */
} lkh_comm_t;

/* A message's buffers (opts.buffers, a list of strings): views of the Lua strings, which the
 * options table keeps alive for the call. */
#define LKH_COMM_BUFS_MAX 64
typedef struct {
  kh_buffer_t b[LKH_COMM_BUFS_MAX];
  char paths[LKH_COMM_BUFS_MAX][32];
  size_t n;
} lkh_comm_bufs_t;

/* --- the manager's comm table --------------------------------------------------------------- */

/* Pushes comms[kernel_id] (created when `create`), or nil. */
static int lkh_comm_kernel_table(lua_State *L, lkh_manager_t *lm, const char *kernel_id,
                                 int create) {
  if (!lkh_manager_push(L, lm)) return 0;                        /* nil */
  lua_getiuservalue(L, -1, 3);                                   /* ud, comms */
  lua_remove(L, -2);                                             /* comms */
  if (lua_getfield(L, -1, kernel_id) == LUA_TTABLE || !create) { /* comms, t|nil */
    lua_remove(L, -2);                                           /* t|nil */
    return lua_istable(L, -1);
  }
  lua_pop(L, 1);                  /* comms */
  lua_newtable(L);                /* comms, t */
  lua_pushvalue(L, -1);           /* comms, t, t */
  lua_setfield(L, -3, kernel_id); /* comms, t */
  lua_remove(L, -2);              /* t */
  return 1;
}

/* Pushes the comm object of (kernel_id, comm_id), or nil. */
static int lkh_comm_find(lua_State *L, lkh_manager_t *lm, const char *kernel_id,
                         const char *comm_id) {
  if (!lkh_comm_kernel_table(L, lm, kernel_id, 0)) return 0; /* nil */
  lua_getfield(L, -1, comm_id);                              /* t, comm|nil */
  lua_remove(L, -2);                                         /* comm|nil */
  return !lua_isnil(L, -1);
}

static void lkh_comm_unlink(lua_State *L, lkh_manager_t *lm, const char *kernel_id,
                            const char *comm_id) {
  if (lkh_comm_kernel_table(L, lm, kernel_id, 0)) { /* t */
    lua_pushnil(L);                                 /* t, nil */
    lua_setfield(L, -2, comm_id);                   /* t */
  }
  lua_pop(L, 1); /* */
}

/* Drops the comms of kernels that are gone or being destroyed. */
void lkh_comm_sweep(lua_State *L, lkh_manager_t *lm) {
  if (!lkh_manager_push(L, lm)) { /* nil */
    lua_pop(L, 1);
    return;
  }
  lua_getiuservalue(L, -1, 3);   /* ud, comms */
  lua_pushnil(L);                /* ud, comms, nil */
  while (lua_next(L, -2) != 0) { /* ud, comms, id, t */
    lua_pop(L, 1);               /* ud, comms, id */
    if (lm->m != NULL && !kh_kernel_exists(lm->m, lua_tostring(L, -1), NULL)) {
      lua_pushvalue(L, -1); /* ud, comms, id, id */
      lua_pushnil(L);       /* ud, comms, id, id, nil */
      lua_rawset(L, -4);    /* ud, comms, id: clearing a field during lua_next is allowed */
    }
  }
  lua_pop(L, 2); /* */
}

/* --- routing events to comms ---------------------------------------------------------------- */

/* The manager's one subscription behind every comm object: comm_msg and comm_close go to the
 * callbacks of the comm they name; a restart or a death ends the kernel's comms. */
static void lkh_comm_on_event(kh_manager_t *m, const kh_event_t *ev, void *data) {
  lkh_manager_t *lm = data;
  lua_State *L = lm->L;
  json_t *j, *id;
  int uv;
  (void)m;
  if (lm->quiet || L == NULL) return;
  if (ev->type == KH_EVENT_STATUS) {
    if (strstr(ev->json, "\"restarting\"") != NULL || strstr(ev->json, "\"dead\"") != NULL) {
      if (lkh_comm_kernel_table(L, lm, ev->kernel_id, 0)) { /* t */
        lua_pop(L, 1);                                      /* */
        lkh_manager_push(L, lm);                            /* ud */
        lua_getiuservalue(L, -1, 3);                        /* ud, comms */
        lua_pushnil(L);                                     /* ud, comms, nil */
        lua_setfield(L, -2, ev->kernel_id);                 /* ud, comms */
        lua_pop(L, 1);                                      /* ud */
      }
      lua_pop(L, 1); /* */
    }
    return;
  }
  if (ev->type != KH_EVENT_COMM_MSG && ev->type != KH_EVENT_COMM_CLOSE) return;
  luaL_checkstack(L, 8, "kernelhost comm event");
  j = json_loadb(ev->json, ev->json_len, JSON_ALLOW_NUL, NULL); /* "\u0000" is text */
  id = json_object_get(j, "comm_id");
  if (!json_is_string(id) || !lkh_comm_find(L, lm, ev->kernel_id, json_string_value(id))) {
    lua_pop(L, 1); /* */
    json_decref(j);
    return;
  }
  /* comm; a closed comm leaves the table before its callback runs, which then sees it gone. */
  if (ev->type == KH_EVENT_COMM_CLOSE) lkh_comm_unlink(L, lm, ev->kernel_id, json_string_value(id));
  uv = ev->type == KH_EVENT_COMM_MSG ? 2 : 3;
  if (lua_getiuservalue(L, -1, uv) != LUA_TFUNCTION) { /* comm, fn|nil */
    lua_pop(L, 2);                                     /* */
    json_decref(j);
    return;
  }
  lua_remove(L, -2);                                    /* fn */
  lkh_values_put_buffers(j, ev->buffers, ev->nbuffers); /* data.buffers[i]: Lua strings */
  lkh_values_tag(j, ev->kernel_id, ev->execution_id);
  lkh_values_push(L, j); /* fn, payload */
  json_decref(j);
  lkh_events_call(lm, L, 1, ev->kernel_id, ev->execution_id, ev->type_name);
}

/* Subscribes the router once per manager, when its first comm object is made. */
static int lkh_comm_route(lkh_manager_t *lm) {
  if (lm->comm_sub > 0) return 0;
  return kh_subscribe(lm->m, NULL, KH_EVENT_ALL, lkh_comm_on_event, lm, &lm->comm_sub);
}

/* --- comm objects --------------------------------------------------------------------------- */

/* Pushes a new comm object for kernel object kidx and links it into the manager's table. */
static lkh_comm_t *lkh_comm_new(lua_State *L, lkh_manager_t *lm, int kidx, const char *kernel_id,
                                const char *comm_id, const char *target_name) {
  lkh_comm_t *c;
  kidx = lua_absindex(L, kidx);
  c = lua_newuserdatauv(L, sizeof(*c), 3); /* comm */
  memset(c, 0, sizeof(*c));
  luaL_setmetatable(L, LKH_COMM_MT);
  snprintf(c->kernel_id, sizeof(c->kernel_id), "%s", kernel_id);
  c->comm_id = strdup(comm_id);
  c->target_name = target_name ? strdup(target_name) : NULL;
  if (c->comm_id == NULL || (target_name != NULL && c->target_name == NULL))
    luaL_error(L, "out of memory");
  lua_pushvalue(L, kidx);                           /* comm, kernel */
  lua_setiuservalue(L, -2, 1);                      /* comm */
  if (lkh_comm_kernel_table(L, lm, kernel_id, 1)) { /* comm, t */
    lua_pushvalue(L, -2);                           /* comm, t, comm */
    lua_setfield(L, -2, comm_id);                   /* comm, t */
  }
  lua_pop(L, 1); /* comm */
  if (lkh_comm_route(lm) != 0) luaL_error(L, "out of memory");
  return c;
}

/* The kernel object at idx: its id (in the object's memory), and its manager in *lm (NULL
 * when closed). */
static const char *lkh_comm_kernel(lua_State *L, int idx, lkh_manager_t **lm) {
  const char *id = lkh_kernel_id(L, idx);
  lua_getiuservalue(L, idx, 1); /* ..., manager */
  *lm = lkh_manager_get(L, -1);
  lua_pop(L, 1); /* ... */
  return id;
}

static lkh_comm_t *lkh_comm_check(lua_State *L, int idx, lkh_manager_t **lm) {
  lkh_comm_t *c = luaL_checkudata(L, idx, LKH_COMM_MT);
  lua_getiuservalue(L, idx, 1); /* ..., kernel */
  lua_getiuservalue(L, -1, 1);  /* ..., kernel, manager */
  *lm = lkh_manager_get(L, -1);
  lua_pop(L, 2); /* ... */
  return c;
}

/* opts.buffers (the value on top of the stack): a list of strings, their bytes the buffers.
 * Returns NULL or what is wrong. */
static const char *lkh_comm_buffers(lua_State *L, lkh_comm_bufs_t *bufs) {
  lua_Integer i, n;
  if (!lua_istable(L, -1)) return "option 'buffers' must be a list of strings";
  n = (lua_Integer)lua_rawlen(L, -1);
  if (n > LKH_COMM_BUFS_MAX) return "option 'buffers' holds more than 64 buffers";
  for (i = 1; i <= n; i++) {
    kh_buffer_t *b = &bufs->b[i - 1];
    size_t len;
    lua_rawgeti(L, -1, i); /* ..., buffers, s */
    if (lua_type(L, -1) != LUA_TSTRING) {
      lua_pop(L, 1);
      return "option 'buffers' must be a list of strings";
    }
    b->data = lua_tolstring(L, -1, &len); /* kept alive by the options table */
    b->len = len;
    snprintf(bufs->paths[i - 1], sizeof(bufs->paths[0]), "/buffers/%d", (int)(i - 1));
    b->path = bufs->paths[i - 1];
    lua_pop(L, 1); /* ..., buffers */
  }
  bufs->n = (size_t)n;
  return NULL;
}

/* Reads the options table at idx ({comm_id?, metadata?, buffers?}; comm_id only when `open`)
 * into the content object and bufs. Returns NULL, or what is wrong (misuse: the caller frees and
 * raises). */
static const char *lkh_comm_opts(lua_State *L, int idx, json_t *content, int open,
                                 lkh_comm_bufs_t *bufs) {
  const char *err = NULL;
  if (lua_isnoneornil(L, idx)) return NULL;
  if (!lua_istable(L, idx)) return "options must be a table";
  lua_pushnil(L);                                /* nil */
  while (err == NULL && lua_next(L, idx) != 0) { /* k, v */
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
    json_t *v = NULL;
    if (open && strcmp(k, "comm_id") == 0) {
      if (lua_type(L, -1) != LUA_TSTRING)
        err = "option 'comm_id' must be a string";
      else if ((v = json_stringn(lua_tostring(L, -1), lua_rawlen(L, -1))) == NULL)
        err = "option 'comm_id' must be valid UTF-8";
    } else if (strcmp(k, "metadata") == 0) {
      if (!lua_istable(L, -1))
        err = "option 'metadata' must be a table";
      else
        v = lkh_values_to_json(L, -1, &err);
    } else if (strcmp(k, "buffers") == 0) {
      err = lkh_comm_buffers(L, bufs);
    } else {
      err = lua_pushfstring(L, "unknown option '%s'", k); /* k, v, err */
      lua_insert(L, -3); /* err, k, v: kept below, so the text lives until the caller raises */
    }
    if (v != NULL) json_object_set_new(content, k, v);
    lua_pop(L, 1); /* k */
  }
  if (err != NULL) lua_pop(L, 1); /* */
  return err;
}

/* Puts the data argument at idx (nil or a table) into the content object. Returns NULL, or what
 * is wrong (misuse). */
static const char *lkh_comm_data(lua_State *L, int idx, json_t *content) {
  const char *err = NULL;
  json_t *v;
  if (lua_isnoneornil(L, idx)) return NULL;
  if (!lua_istable(L, idx)) return "data must be a table (or nil)";
  if ((v = lkh_values_to_json(L, idx, &err)) == NULL) return err;
  json_object_set_new(content, "data", v);
  return NULL;
}

/* The data at 2 and the options at 3 into content and bufs; on misuse, frees content and
 * raises. */
static void lkh_comm_args(lua_State *L, json_t *content, int open, lkh_comm_bufs_t *bufs) {
  int arg = open ? 3 : 2; /* kernel:open_comm(target, data, opts), comm:send(data, opts) */
  const char *err = lkh_comm_data(L, arg, content);
  bufs->n = 0;
  if (err == NULL) err = lkh_comm_opts(L, ++arg, content, open, bufs);
  if (err == NULL) return;
  json_decref(content);
  luaL_argerror(L, arg, err);
}

/* Sends content (taken) and bufs as msg_type; 0 or the core's code (the detail in
 * kh_manager_errmsg). */
static int lkh_comm_send_content(lkh_manager_t *lm, const char *kernel_id, const char *msg_type,
                                 json_t *content, const lkh_comm_bufs_t *bufs) {
  char *s = json_dumps(content, JSON_COMPACT);
  int rc = s ? kh_kernel_comm_send(lm->m, kernel_id, msg_type, s, strlen(s), bufs->b, bufs->n)
             : KH_ENOMEM;
  free(s);
  json_decref(content);
  return rc;
}

/* A comm id like Python's uuid4().hex: 32 random hex digits. */
static void lkh_comm_new_id(char out[33]) {
  static const char hex[] = "0123456789abcdef";
  unsigned char b[16];
  int i;
  if (uv_random(NULL, NULL, b, sizeof(b), 0, NULL) != 0) {
    uint64_t t = uv_hrtime();
    for (i = 0; i < 16; i++) b[i] = (unsigned char)(t >> (i % 8 * 8)) ^ (unsigned char)(i * 37);
  }
  for (i = 0; i < 16; i++) {
    out[2 * i] = hex[b[i] >> 4];
    out[2 * i + 1] = hex[b[i] & 15];
  }
  out[32] = '\0';
}

/* kernel:open_comm(target_name[, data][, opts]) -> comm | nil, msg, code. opts: {comm_id,
 * metadata, buffers (a list of strings: the message's binary buffers)}. Opens a comm of the host's
 * with the kernel's target (a comm_open message, queued like a cell); what the target answers
 * arrives as comm events and through comm:on_msg. */
static int lkh_comm_open_comm(lua_State *L) {
  lkh_manager_t *lm;
  const char *kernel_id = lkh_comm_kernel(L, 1, &lm);
  const char *target = luaL_checkstring(L, 2);
  json_t *content = json_object(), *t;
  lkh_comm_bufs_t bufs;
  char gen[33];
  const char *comm_id;
  int rc;
  if (content == NULL) return luaL_error(L, "out of memory");
  if ((t = json_stringn(target, lua_rawlen(L, 2))) == NULL) {
    json_decref(content);
    return luaL_argerror(L, 2, "target_name must be valid UTF-8");
  }
  json_object_set_new(content, "target_name", t);
  lkh_comm_args(L, content, 1, &bufs);
  if (json_object_get(content, "comm_id") == NULL) {
    lkh_comm_new_id(gen);
    json_object_set_new(content, "comm_id", json_string(gen));
  }
  if (lm == NULL) {
    json_decref(content);
    return lkh_fail_closed(L);
  }
  comm_id = json_string_value(json_object_get(content, "comm_id"));
  lua_pushstring(L, comm_id); /* ..., comm_id: content is freed by the send */
  rc = lkh_comm_send_content(lm, kernel_id, "comm_open", content, &bufs);
  if (rc != 0) return lkh_fail(L, rc, kh_manager_errmsg(lm->m));
  lkh_comm_new(L, lm, 1, kernel_id, lua_tostring(L, -1), target); /* ..., comm_id, comm */
  return 1;
}

/* kernel:comm(comm_id) -> comm: the object of a comm of this kernel (one the kernel opened, or
 * one of the host's), the same object each time while the comm is open. Sending on a comm that
 * is not open fails (KH_ECLOSED). */
static int lkh_comm_get(lua_State *L) {
  lkh_manager_t *lm;
  const char *kernel_id = lkh_comm_kernel(L, 1, &lm);
  const char *comm_id = luaL_checkstring(L, 2);
  if (lm == NULL) return lkh_fail_closed(L);
  if (lkh_comm_find(L, lm, kernel_id, comm_id)) return 1;
  lua_pop(L, 1);
  lkh_comm_new(L, lm, 1, kernel_id, comm_id, NULL);
  return 1;
}

const luaL_Reg lkh_comm_kernel_methods[] = {
    {"open_comm", lkh_comm_open_comm}, {"comm", lkh_comm_get}, {NULL, NULL}};

/* comm:send([data][, opts]) -> true | nil, msg, code. opts: {metadata, buffers}. */
static int lkh_comm_send(lua_State *L) {
  lkh_manager_t *lm;
  lkh_comm_t *c = lkh_comm_check(L, 1, &lm);
  json_t *content = json_pack("{s:s}", "comm_id", c->comm_id);
  lkh_comm_bufs_t bufs;
  if (content == NULL) return luaL_error(L, "out of memory");
  lkh_comm_args(L, content, 0, &bufs);
  if (lm == NULL) {
    json_decref(content);
    return lkh_fail_closed(L);
  }
  return lkh_result(L, lm, lkh_comm_send_content(lm, c->kernel_id, "comm_msg", content, &bufs));
}

/* comm:close([data][, opts]) -> true | nil, msg, code. The comm's on_close is for the kernel's
 * close, and does not run for this one. */
static int lkh_comm_close(lua_State *L) {
  lkh_manager_t *lm;
  lkh_comm_t *c = lkh_comm_check(L, 1, &lm);
  json_t *content = json_pack("{s:s}", "comm_id", c->comm_id);
  lkh_comm_bufs_t bufs;
  int rc;
  if (content == NULL) return luaL_error(L, "out of memory");
  lkh_comm_args(L, content, 0, &bufs);
  if (lm == NULL) {
    json_decref(content);
    return lkh_fail_closed(L);
  }
  rc = lkh_comm_send_content(lm, c->kernel_id, "comm_close", content, &bufs);
  if (rc == 0) lkh_comm_unlink(L, lm, c->kernel_id, c->comm_id);
  return lkh_result(L, lm, rc);
}

/* comm:on_msg(fn|nil) / comm:on_close(fn|nil) -> comm. fn(payload) gets the event's payload
 * ({comm_id, data, metadata, buffers?, kernel_id, execution_id}), after the manager's
 * listeners of that event. */
static int lkh_comm_set_cb(lua_State *L, int uv) {
  luaL_checkudata(L, 1, LKH_COMM_MT);
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  lua_setiuservalue(L, 1, uv); /* comm */
  return 1;
}

static int lkh_comm_on_msg(lua_State *L) {
  return lkh_comm_set_cb(L, 2);
}

static int lkh_comm_on_close(lua_State *L) {
  return lkh_comm_set_cb(L, 3);
}

/* comm.comm_id, comm.target_name (nil when not known) and comm.kernel are fields. */
static int lkh_comm_index(lua_State *L) {
  lkh_comm_t *c = luaL_checkudata(L, 1, LKH_COMM_MT);
  const char *key = lua_tostring(L, 2);
  if (key != NULL && strcmp(key, "comm_id") == 0) {
    lua_pushstring(L, c->comm_id);
  } else if (key != NULL && strcmp(key, "target_name") == 0) {
    if (c->target_name)
      lua_pushstring(L, c->target_name);
    else
      lua_pushnil(L);
  } else if (key != NULL && strcmp(key, "kernel") == 0) {
    lua_getiuservalue(L, 1, 1);
  } else {
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1)); /* methods[key] */
  }
  return 1;
}

static int lkh_comm_gc(lua_State *L) {
  lkh_comm_t *c = luaL_checkudata(L, 1, LKH_COMM_MT);
  free(c->comm_id);
  free(c->target_name);
  c->comm_id = c->target_name = NULL;
  return 0;
}

static int lkh_comm_tostring(lua_State *L) {
  lkh_comm_t *c = luaL_checkudata(L, 1, LKH_COMM_MT);
  lua_pushfstring(L, "kernelhost.Comm (%s, kernel %s)", c->comm_id ? c->comm_id : "?",
                  c->kernel_id);
  return 1;
}

static const luaL_Reg lkh_comm_methods[] = {{"send", lkh_comm_send},
                                            {"close", lkh_comm_close},
                                            {"on_msg", lkh_comm_on_msg},
                                            {"on_close", lkh_comm_on_close},
                                            {NULL, NULL}};

/* Creates the Comm metatable (comm objects are made by kernel:open_comm and kernel:comm). */
void lkh_comm_open(lua_State *L) {
  luaL_newmetatable(L, LKH_COMM_MT);      /* mt */
  luaL_newlib(L, lkh_comm_methods);       /* mt, methods */
  lua_pushcclosure(L, lkh_comm_index, 1); /* mt, index */
  lua_setfield(L, -2, "__index");         /* mt */
  lua_pushcfunction(L, lkh_comm_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, lkh_comm_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1); /* */
}

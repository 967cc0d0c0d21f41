/* values.c: JSON <-> Lua values for the binding. The core speaks JSON text; Lua callers see
 * tables. Owns kernelhost.null (a NULL lightuserdata, JSON null) and kernelhost.empty_array
 * (an empty table that encodes as [] rather than {}). Loop thread, like every file here. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lkh.h"

/* Tables nested deeper than this are refused: a cycle would otherwise recurse until the C stack
 * overflows, and no option or payload the core takes is this deep. */
#define LKH_JSON_DEPTH 64

static char lkh_array_mt_key; /* registry: the metatable of kernelhost.empty_array */

/* Pushes j as a Lua value: objects and arrays as tables, null as kernelhost.null. */
void lkh_values_push(lua_State *L, json_t *j) {
  luaL_checkstack(L, 4, "JSON nested too deeply");
  switch (json_typeof(j)) {
    case JSON_OBJECT: {
      const char *k;
      json_t *v;
      lua_createtable(L, 0, (int)json_object_size(j)); /* t */
      json_object_foreach(j, k, v) {
        lkh_values_push(L, v);  /* t, v */
        lua_setfield(L, -2, k); /* t */
      }
      break;
    }
    case JSON_ARRAY: {
      size_t i;
      json_t *v;
      lua_createtable(L, (int)json_array_size(j), 0); /* t */
      json_array_foreach(j, i, v) {
        lkh_values_push(L, v);                  /* t, v */
        lua_rawseti(L, -2, (lua_Integer)i + 1); /* t */
      }
      break;
    }
    case JSON_STRING:
      lua_pushlstring(L, json_string_value(j), json_string_length(j));
      break;
    case JSON_INTEGER:
      lkh_push_json_integer(L, (int64_t)json_integer_value(j)); /* beyond 2^53: lkh-compat.h */
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
      lua_pushlightuserdata(L, NULL); /* kernelhost.null */
      break;
  }
}

/* A table is an array when it is a non-empty sequence (every key is 1..#t), or when its
 * metatable says __jsontype = "array" (how an empty table asks to be []). Counting the keys
 * is what tells {1, 2, x = 3} (an object, which then fails on the key 1) from {1, 2}. */
static int lkh_values_is_array(lua_State *L, int idx, lua_Integer n) {
  lua_Integer count = 0;
  int as_array = 0;
  if (luaL_getmetafield(L, idx, "__jsontype") != LUA_TNIL) { /* ..., jsontype */
    as_array = lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "array") == 0;
    lua_pop(L, 1); /* ... */
  }
  lua_pushnil(L);                 /* ..., nil */
  while (lua_next(L, idx) != 0) { /* ..., k, v */
    count++;
    lua_pop(L, 1); /* ..., k */
  }
  return as_array || (count > 0 && count == n);
}

static json_t *lkh_values_from_lua(lua_State *L, int idx, int depth, const char **err);

static json_t *lkh_values_from_table(lua_State *L, int idx, int depth, const char **err) {
  lua_Integer n = (lua_Integer)lua_rawlen(L, idx), i;
  json_t *out, *v;
  if (depth >= LKH_JSON_DEPTH) {
    *err = "tables nest too deeply (a cycle?)";
    return NULL;
  }
  luaL_checkstack(L, 4, "table nested too deeply");
  if (lkh_values_is_array(L, idx, n)) {
    out = json_array();
    for (i = 1; i <= n; i++) {
      lua_rawgeti(L, idx, i); /* ..., v */
      v = lkh_values_from_lua(L, -1, depth + 1, err);
      lua_pop(L, 1); /* ... */
      if (v == NULL || json_array_append_new(out, v) != 0) goto fail;
    }
    return out;
  }
  out = json_object();
  lua_pushnil(L);                 /* ..., nil */
  while (lua_next(L, idx) != 0) { /* ..., k, v */
    /* lua_tostring would turn a number key into a string in place and break lua_next. */
    if (lua_type(L, -2) != LUA_TSTRING) {
      lua_pop(L, 2); /* ... */
      *err = "table keys must be strings (or the table a sequence)";
      goto fail;
    }
    v = lkh_values_from_lua(L, -1, depth + 1, err);
    if (v == NULL || json_object_set_new(out, lua_tostring(L, -2), v) != 0) {
      lua_pop(L, 2);                                             /* ... */
      if (v != NULL && *err == NULL) *err = "invalid table key"; /* not UTF-8 */
      goto fail;
    }
    lua_pop(L, 1); /* ..., k */
  }
  return out;
fail:
  json_decref(out);
  return NULL;
}

json_t *lkh_values_to_json(lua_State *L, int idx, const char **err) {
  return lkh_values_from_lua(L, idx, 0, err);
}

/* Converts the value at idx to JSON; on failure returns NULL and sets *err (static text). */
static json_t *lkh_values_from_lua(lua_State *L, int idx, int depth, const char **err) {
  idx = lua_absindex(L, idx);
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
      return json_null();
    case LUA_TBOOLEAN:
      return json_boolean(lua_toboolean(L, idx));
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) return json_integer((json_int_t)lua_tointeger(L, idx));
      if (!isfinite(lua_tonumber(L, idx))) {
        *err = "numbers must be finite"; /* JSON has no NaN or infinity */
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
    case LUA_TTABLE:
      return lkh_values_from_table(L, idx, depth, err);
    default:
      break;
  }
  *err = "only nil, booleans, numbers, strings, tables and kernelhost.null convert to JSON";
  return NULL;
}

/* The path of a NaN or infinite number in the options value at idx, written into msg as the
 * core words a bad option ("option 'limits.memoryBytes' must be ..."); returns 1 when there is
 * one. JSON has no such numbers, so encoding one would fail as misuse, and a binding that wrote
 * null instead (as JSON.stringify does) would make it "not given": maxExecutionTime = 1/0 would
 * mean no limit. Keys that cannot be JSON are left to the encoder to report. */
static int lkh_values_nonfinite(lua_State *L, int idx, const char *path, int depth, char *msg,
                                size_t n) {
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) == LUA_TNUMBER && !lua_isinteger(L, idx)) {
    lua_Number x = lua_tonumber(L, idx);
    if (isfinite(x)) return 0;
    snprintf(msg, n, "option '%s' must be a finite number, got %s", path,
             isnan(x) ? "nan"
             : x > 0  ? "inf"
                      : "-inf");
    return 1;
  }
  if (lua_type(L, idx) != LUA_TTABLE || depth >= LKH_JSON_DEPTH) return 0;
  luaL_checkstack(L, 3, "table nested too deeply");
  lua_pushnil(L);                 /* ..., nil */
  while (lua_next(L, idx) != 0) { /* ..., k, v */
    char sub[256];
    if (lua_type(L, -2) == LUA_TSTRING)
      snprintf(sub, sizeof(sub), "%s%s%s", path, *path ? "." : "", lua_tostring(L, -2));
    else if (lua_isinteger(L, -2))
      snprintf(sub, sizeof(sub), "%s[%lld]", path, (long long)lua_tointeger(L, -2) - 1);
    else
      sub[0] = '\0';
    if (sub[0] && lkh_values_nonfinite(L, -1, sub, depth + 1, msg, n)) {
      lua_pop(L, 2); /* ... */
      return 1;
    }
    lua_pop(L, 1); /* ..., k */
  }
  return 0;
}

int lkh_values_check_opts(lua_State *L, int arg, char *msg, size_t n) {
  return lua_type(L, arg) == LUA_TTABLE && lkh_values_nonfinite(L, arg, "", 0, msg, n);
}

/* Encodes the optional options table at arg as JSON text (owned, free()), or NULL when nil.
 * Values that cannot be JSON are misuse: they raise. The types of known options are the core's
 * to check (KH_EOPTION with a message), so that every binding reports them alike. */
char *lkh_values_encode_opts(lua_State *L, int arg) {
  const char *err = NULL;
  json_t *j;
  char *s;
  if (lua_isnoneornil(L, arg)) return NULL;
  luaL_checktype(L, arg, LUA_TTABLE);
  j = lkh_values_from_lua(L, arg, 0, &err);
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

/* Puts each binary value (kh_buffer_t) into doc where its JSON Pointer says, as a string of its
 * bytes (jansson's unchecked strings hold any bytes): pushed to Lua, it is a Lua string. A path
 * that leads nowhere is skipped (the core checked them; this only keeps a bad one harmless). */
void lkh_values_put_buffers(json_t *doc, const kh_buffer_t *b, size_t n) {
  size_t i;
  for (i = 0; i < n; i++) {
    const char *p = b[i].path;
    json_t *cur = doc;
    char key[512];
    while (cur != NULL && *p == '/') {
      size_t k = 0;
      p++;
      while (*p && *p != '/' && k + 1 < sizeof(key)) {
        char c = *p++;
        if (c == '~' && (*p == '0' || *p == '1')) c = *p++ == '0' ? '~' : '/';
        key[k++] = c;
      }
      key[k] = '\0';
      if (*p == '\0') { /* the last step: replace the null */
        json_t *v = json_stringn_nocheck(b[i].len ? b[i].data : "", b[i].len);
        if (json_is_object(cur))
          json_object_set_new_nocheck(cur, key, v);
        else if (json_is_array(cur))
          json_array_set_new(cur, (size_t)strtoul(key, NULL, 10), v);
        else
          json_decref(v);
        break;
      }
      cur = json_is_object(cur)  ? json_object_get(cur, key)
            : json_is_array(cur) ? json_array_get(cur, (size_t)strtoul(key, NULL, 10))
                                 : NULL;
    }
  }
}

/* Adds kernel_id and execution_id to an event payload (a JSON object), so that one callback
 * subscribed to every kernel can tell which cell a payload belongs to. */
void lkh_values_tag(json_t *o, const char *kernel_id, const char *exec_id) {
  if (!json_is_object(o)) return;
  json_object_set_new(o, "kernel_id", json_string(kernel_id ? kernel_id : ""));
  json_object_set_new(o, "execution_id", json_string(exec_id ? exec_id : ""));
}

/* Pushes the result table of a reply: the core's object, tagged with the ids, each output's
 * data tagged too (so an output reads like the event it was). Returns 0, or pushes nothing and
 * returns KH_EPROTO. */
json_t *lkh_values_reply_doc(const char *json, size_t len, const kh_buffer_t *bufs, size_t nbufs) {
  json_t *j = json_loadb(json, len, JSON_ALLOW_NUL, NULL); /* "\u0000" is text (print("\\0")) */
  if (j == NULL || !json_is_object(j)) {
    json_decref(j);
    return NULL;
  }
  lkh_values_put_buffers(j, bufs, nbufs);
  return j;
}

void lkh_values_push_reply(lua_State *L, json_t *j, const char *kernel_id, const char *exec_id) {
  json_t *outputs, *o;
  size_t i;
  lkh_values_tag(j, kernel_id, exec_id);
  outputs = json_object_get(j, "outputs");
  json_array_foreach(outputs, i, o) lkh_values_tag(json_object_get(o, "data"), kernel_id, exec_id);
  lkh_values_push(L, j); /* result */
}

/* Gives the table on top of the stack kernelhost.empty_array's metatable, so that it converts
 * back to [] even while empty (host functions hand empty lists to Lua so). */
void lkh_values_mark_array(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &lkh_array_mt_key) == LUA_TTABLE) /* t, mt */
    lua_setmetatable(L, -2);                                                /* t */
  else
    lua_pop(L, 1); /* t */
}

/* Sets M.null and M.empty_array on the module table on top of the stack. */
void lkh_values_open(lua_State *L) {
  lua_pushlightuserdata(L, NULL); /* M, null */
  lua_setfield(L, -2, "null");    /* M */
  lua_newtable(L);                /* M, empty_array */
  /* One metatable per Lua state, kept in the registry, so that requiring the module again
   * gives an empty_array that still encodes as []. */
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &lkh_array_mt_key) != LUA_TTABLE) { /* M, ea, nil */
    lua_pop(L, 1);                                                          /* M, empty_array */
    lua_createtable(L, 0, 1);                                               /* M, empty_array, mt */
    lua_pushliteral(L, "array");
    lua_setfield(L, -2, "__jsontype");
    lua_pushvalue(L, -1);                                 /* M, empty_array, mt, mt */
    lua_rawsetp(L, LUA_REGISTRYINDEX, &lkh_array_mt_key); /* M, empty_array, mt */
  }
  lua_setmetatable(L, -2);            /* M, empty_array */
  lua_setfield(L, -2, "empty_array"); /* M */
}

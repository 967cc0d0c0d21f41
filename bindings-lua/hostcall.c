/* hostcall.c: host functions for Lua: kernel:expose(name, fn[, {async = true}]), the
 * kernelhost.HostCall handle an async function answers through (call:return_(v), call:error(msg),
 * luv-style: true, or false, msg, "KH_E..."), and the values a call carries between the core's
 * JSON-plus-buffers and Lua values. Loop thread: host functions run only while the binding runs
 * its loop (a blocking call, poll() or run()), on lm->L, like every other callback.
 *
 * Values, Python -> Lua: None -> nil as an argument (kernelhost.null inside tables), bool,
 * int -> integer (exact to 2^63), float -> float, str and bytes -> string (bytes -> a
 * kernelhost.bytes value instead with expose's {bytes = true}), list -> sequence (an empty one
 * with kernelhost.empty_array's metatable, so it comes back as []), dict -> table.
 * Lua -> Python: nil and kernelhost.null -> None, boolean, integer -> int, float -> float (NaN
 * and infinities refused), a string that is valid UTF-8 -> str, any other string and
 * kernelhost.bytes(s) -> bytes, a sequence (every key 1..#t, or kernelhost.empty_array) -> list,
 * a table with string keys -> dict (an empty table is {}; keys sorted, as Lua keeps no order).
 * Anything else (functions, userdata, coroutines, cycles, mixed keys) fails the call: Python
 * raises kernelhost.HostError naming the value and where it is. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lkh.h"

#define LKH_HOSTCALL_MT "kernelhost.HostCall"
#define LKH_BYTES_MT "kernelhost.Bytes"
#define LKH_HOST_DEPTH 64 /* deeper is refused: no scene state nests this deep, a cycle does */
#define LKH_HOST_PATH 512 /* JSON Pointer of the value being converted, for buffers and errors */

static char lkh_exposed_key; /* in the manager's callback table: {[kernel_id] = {[name] = {fn,
                              * async, bytes}}} */

/* A call of an async host function, as the Lua userdata kernelhost.HostCall.
 *
 *   state     call    in lm->calls   how it got there
 *   PENDING   set     yes            the host function was called
 *   ANSWERED  NULL    no             call:return_() / call:error() (or __gc) answered it
 *   CANCELED  NULL    no             the binding answered it: its kernel was destroyed or the
 *                                    manager closed; answering it now reports KH_ECANCELED
 *
 * The userdata's memory holds the struct, so it lives until __gc; the list only points into it
 * and __gc unlinks it first. The core keeps kh_hostcall_t valid until it is answered, whatever
 * happens to the kernel: answering is the one thing every path must do exactly once. */
enum { LKH_CALL_PENDING, LKH_CALL_ANSWERED, LKH_CALL_CANCELED };

struct lkh_call_s {
  kh_hostcall_t *call;           /* owned until answered */
  lkh_manager_t *lm;             /* NULL once detached (manager closed) */
  struct lkh_call_s *prev, *next; /* lm->calls, while PENDING */
  int state;
  const char *why; /* static: why the binding canceled it */
  char kernel_id[LKH_ID_MAX];
  char name[]; /* the function's name, NUL-terminated */
};

/* --- the list of pending calls ---------------------------------------------------------------- */

static void lkh_call_unlink(lkh_call_t *c) {
  if (c->lm == NULL) return;
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    c->lm->calls = c->next;
  if (c->next != NULL) c->next->prev = c->prev;
  c->prev = c->next = NULL;
}

/* Answers c with an error on the host's behalf and makes it inert. */
static void lkh_call_cancel(lkh_call_t *c, const char *why) {
  kh_hostcall_t *call = c->call;
  lkh_call_unlink(c);
  c->call = NULL;
  c->state = LKH_CALL_CANCELED;
  c->why = why;
  c->lm = NULL;
  (void)kh_hostcall_error(call, why); /* KH_ECANCELED when the kernel stopped waiting: fine */
}

/* Cancels the pending calls of kernels that no longer exist (destroyed or being destroyed), or
 * every pending call when all is set (the manager is closing). */
void lkh_hostcall_cancel(lkh_manager_t *lm, int all) {
  lkh_call_t *c = lm->calls, *next;
  for (; c != NULL; c = next) {
    next = c->next;
    if (all)
      lkh_call_cancel(c, "the host's kernelhost manager was closed");
    else if (lm->m == NULL || !kh_kernel_exists(lm->m, c->kernel_id, NULL))
      lkh_call_cancel(c, "the kernel was destroyed");
  }
}

/* --- Python -> Lua -------------------------------------------------------------------------- */

/* Where the buffers of a call go: each buffer's JSON null is replaced by a fresh empty object
 * (jansson's null is a singleton, an object is not), found again by address while pushing. */
typedef struct {
  json_t **marks;
  const kh_buffer_t *buffers;
  size_t n;
  int wrap; /* expose's {bytes = true}: bytes arrive as kernelhost.bytes values */
} lkh_marks_t;

/* --- kernelhost.bytes ------------------------------------------------------------------------ */

/* Pushes a kernelhost.Bytes holding the string at idx (its one uservalue). */
static void lkh_bytes_push(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  lua_newuserdatauv(L, 0, 1); /* b */
  luaL_setmetatable(L, LKH_BYTES_MT);
  lua_pushvalue(L, idx);       /* b, s */
  lua_setiuservalue(L, -2, 1); /* b */
}

/* kernelhost.bytes(s) -> a value that Python receives as bytes, whether or not s is UTF-8 */
static int lkh_bytes_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TSTRING);
  lkh_bytes_push(L, 1);
  return 1;
}

/* The string of the Bytes at idx (pushed), or NULL (nothing pushed) when it is none. */
static const char *lkh_bytes_get(lua_State *L, int idx, size_t *len) {
  if (luaL_testudata(L, idx, LKH_BYTES_MT) == NULL) return NULL;
  lua_getiuservalue(L, idx, 1); /* ..., s */
  return lua_tolstring(L, -1, len);
}

static int lkh_bytes_tostring(lua_State *L) {
  luaL_checkudata(L, 1, LKH_BYTES_MT);
  lua_getiuservalue(L, 1, 1);
  return 1;
}

static int lkh_bytes_len(lua_State *L) {
  size_t n = 0;
  luaL_checkudata(L, 1, LKH_BYTES_MT);
  lua_getiuservalue(L, 1, 1);
  lua_tolstring(L, -1, &n);
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

static int lkh_bytes_eq(lua_State *L) {
  size_t na, nb;
  const char *a = lkh_bytes_get(L, 1, &na), *b = lkh_bytes_get(L, 2, &nb);
  lua_pushboolean(L, a != NULL && b != NULL && na == nb && memcmp(a, b, na) == 0);
  return 1;
}

/* The next RFC 6901 token of *p (after its '/'), unescaped into tok; 0 at the end of the
 * pointer, -1 when it is malformed or too long. */
static int lkh_ptr_token(const char **p, char *tok, size_t size) {
  const char *s = *p;
  size_t n = 0;
  if (*s == '\0') return 0;
  if (*s != '/') return -1;
  for (s++; *s != '\0' && *s != '/'; s++) {
    char ch = *s;
    if (ch == '~') {
      if (s[1] != '0' && s[1] != '1') return -1;
      ch = s[1] == '0' ? '~' : '/';
      s++;
    }
    if (n + 1 >= size) return -1;
    tok[n++] = ch;
  }
  tok[n] = '\0';
  *p = s;
  return 1;
}

/* An array index token: decimal digits, no leading zero; -1 otherwise. */
static long lkh_ptr_index(const char *tok) {
  char *end;
  long i;
  if (tok[0] < '0' || tok[0] > '9' || (tok[0] == '0' && tok[1] != '\0')) return -1;
  i = strtol(tok, &end, 10);
  return *end == '\0' ? i : -1;
}

/* Replaces the null at `path` in root with `mark` (stolen). 0, or -1 when the path does not
 * lead to a null: the core checked its own buffers, so that is a protocol error. */
static int lkh_ptr_mark(json_t *root, const char *path, json_t *mark) {
  char tok[LKH_HOST_PATH];
  json_t *parent = NULL, *cur = root;
  long index = -1;
  int r;
  while ((r = lkh_ptr_token(&path, tok, sizeof(tok))) == 1) {
    parent = cur;
    if (json_is_array(cur)) {
      if ((index = lkh_ptr_index(tok)) < 0) break;
      cur = json_array_get(cur, (size_t)index);
    } else if (json_is_object(cur)) {
      cur = json_object_get(cur, tok);
    } else {
      cur = NULL;
    }
    if (cur == NULL) break;
  }
  if (r != 0 || parent == NULL || !json_is_null(cur)) {
    json_decref(mark);
    return -1;
  }
  if (json_is_array(parent)) return json_array_set_new(parent, (size_t)index, mark);
  return json_object_set_new(parent, tok, mark);
}

/* Pushes j; `top` says it is an argument itself, where JSON null is nil rather than
 * kernelhost.null (a Lua function's missing and nil arguments read alike). */
static void lkh_host_push(lua_State *L, json_t *j, const lkh_marks_t *mk, int top) {
  size_t i;
  luaL_checkstack(L, 4, "host call arguments nested too deeply");
  switch (json_typeof(j)) {
    case JSON_OBJECT: {
      const char *k;
      json_t *v;
      for (i = 0; i < mk->n; i++) {
        if (mk->marks[i] == j) {
          lua_pushlstring(L, mk->buffers[i].data ? mk->buffers[i].data : "", mk->buffers[i].len);
          if (mk->wrap) {
            lkh_bytes_push(L, -1); /* s, b */
            lua_remove(L, -2);     /* b */
          }
          return;
        }
      }
      lua_createtable(L, 0, (int)json_object_size(j)); /* t */
      json_object_foreach(j, k, v) {
        lkh_host_push(L, v, mk, 0); /* t, v */
        lua_setfield(L, -2, k);     /* t */
      }
      return;
    }
    case JSON_ARRAY: {
      json_t *v;
      lua_createtable(L, (int)json_array_size(j), 0); /* t */
      if (json_array_size(j) == 0) lkh_values_mark_array(L); /* [] stays [] on its way back */
      json_array_foreach(j, i, v) {
        lkh_host_push(L, v, mk, 0);             /* t, v */
        lua_rawseti(L, -2, (lua_Integer)i + 1); /* t */
      }
      return;
    }
    case JSON_STRING:
      lua_pushlstring(L, json_string_value(j), json_string_length(j));
      return;
    case JSON_INTEGER:
      lkh_push_json_integer(L, (int64_t)json_integer_value(j)); /* beyond 2^53: lkh-compat.h */
      return;
    case JSON_REAL:
      lua_pushnumber(L, json_real_value(j));
      return;
    case JSON_TRUE:
    case JSON_FALSE:
      lua_pushboolean(L, json_is_true(j));
      return;
    default:
      if (top)
        lua_pushnil(L);
      else
        lua_pushlightuserdata(L, NULL); /* kernelhost.null */
      return;
  }
}

/* --- Lua -> Python -------------------------------------------------------------------------- */

typedef struct {
  kh_buffer_t *bufs; /* paths owned (malloc), data borrowed from Lua strings */
  size_t n, cap;
  char path[LKH_HOST_PATH]; /* the JSON Pointer of the value being converted */
  size_t plen;
  const void *seen[LKH_HOST_DEPTH]; /* the tables being converted, outermost first */
  int depth;
  char err[LKH_HOST_PATH + 160];
  char msg[LKH_HOST_PATH + 320]; /* the whole message, as HostError carries it */
} lkh_enc_t;

static void lkh_enc_free(lkh_enc_t *e) {
  size_t i;
  for (i = 0; i < e->n; i++) free((char *)e->bufs[i].path);
  free(e->bufs);
  e->bufs = NULL;
  e->n = e->cap = 0;
}

static json_t *lkh_enc_fail(lkh_enc_t *e, const char *what) {
  if (e->plen)
    snprintf(e->err, sizeof(e->err), "%s at %s", what, e->path);
  else
    snprintf(e->err, sizeof(e->err), "%s (the whole value)", what);
  return NULL;
}

/* Appends one RFC 6901 token (escaped) to the path; 0, or -1 when the path grows too long. */
static int lkh_enc_push_path(lkh_enc_t *e, const char *tok, size_t len) {
  size_t i, p = e->plen;
  if (p + 1 >= sizeof(e->path)) return -1;
  e->path[p++] = '/';
  for (i = 0; i < len; i++) {
    if (p + 3 >= sizeof(e->path)) return -1;
    if (tok[i] == '~' || tok[i] == '/') {
      e->path[p++] = '~';
      e->path[p++] = tok[i] == '~' ? '0' : '1';
    } else {
      e->path[p++] = tok[i];
    }
  }
  e->path[p] = '\0';
  e->plen = p;
  return 0;
}

static json_t *lkh_enc_value(lua_State *L, int idx, lkh_enc_t *e);

/* A value one level down, at token `tok` of the path. */
static json_t *lkh_enc_child(lua_State *L, int idx, lkh_enc_t *e, const char *tok, size_t len) {
  size_t saved = e->plen;
  json_t *v;
  if (lkh_enc_push_path(e, tok, len) != 0) return lkh_enc_fail(e, "the value nests too deeply");
  v = lkh_enc_value(L, idx, e);
  if (v != NULL) {
    e->plen = saved;
    e->path[saved] = '\0';
  }
  return v; /* on failure the path stays where the failure was, for the message */
}

/* Bytes: a buffer at the current path, and null in the JSON. */
static json_t *lkh_enc_bytes(lkh_enc_t *e, const char *s, size_t len) {
  if (e->n == e->cap) {
    size_t cap = e->cap ? e->cap * 2 : 4;
    kh_buffer_t *b = realloc(e->bufs, cap * sizeof(*b));
    if (b == NULL) return lkh_enc_fail(e, "out of memory");
    e->bufs = b;
    e->cap = cap;
  }
  if ((e->bufs[e->n].path = strdup(e->path)) == NULL) return lkh_enc_fail(e, "out of memory");
  e->bufs[e->n].data = s;
  e->bufs[e->n].len = len;
  e->n++;
  return json_null();
}

static json_t *lkh_enc_table(lua_State *L, int idx, lkh_enc_t *e) {
  lua_Integer n = (lua_Integer)lua_rawlen(L, idx), i, count = 0;
  const void *self = lua_topointer(L, idx);
  int as_array = 0, d;
  char tok[32];
  json_t *out = NULL, *v;
  for (d = 0; d < e->depth; d++)
    if (e->seen[d] == self) return lkh_enc_fail(e, "a table that contains itself (a cycle)");
  if (e->depth >= LKH_HOST_DEPTH) return lkh_enc_fail(e, "tables nested too deeply");
  luaL_checkstack(L, 6, "host value nested too deeply");
  e->seen[e->depth++] = self;
  if (luaL_getmetafield(L, idx, "__jsontype") != LUA_TNIL) { /* ..., jsontype */
    as_array = lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "array") == 0;
    lua_pop(L, 1); /* ... */
  }
  lua_pushnil(L);                 /* ..., nil */
  while (lua_next(L, idx) != 0) { /* ..., k, v */
    count++;
    lua_pop(L, 1); /* ..., k */
  }
  if (as_array || (count > 0 && count == n)) {
    out = json_array();
    for (i = 1; out != NULL && i <= n; i++) {
      snprintf(tok, sizeof(tok), "%lld", (long long)(i - 1));
      lua_rawgeti(L, idx, i); /* ..., v */
      v = lkh_enc_child(L, -1, e, tok, strlen(tok));
      lua_pop(L, 1); /* ... */
      if (v == NULL || json_array_append_new(out, v) != 0) goto fail;
    }
  } else {
    out = json_object();
    lua_pushnil(L);                               /* ..., nil */
    while (out != NULL && lua_next(L, idx) != 0) { /* ..., k, v */
      size_t klen;
      const char *k;
      /* lua_tostring would turn a number key into a string in place and break lua_next. */
      if (lua_type(L, -2) != LUA_TSTRING) {
        lua_pop(L, 2); /* ... */
        lkh_enc_fail(e, "a table whose keys are neither strings nor a sequence 1..n");
        goto fail;
      }
      k = lua_tolstring(L, -2, &klen);
      v = lkh_enc_child(L, -1, e, k, klen);
      if (v == NULL) {
        lua_pop(L, 2); /* ... */
        goto fail;
      }
      if (json_object_setn_new(out, k, klen, v) != 0) {
        lua_pop(L, 2); /* ... */
        lkh_enc_fail(e, "a table key that is not valid UTF-8");
        goto fail;
      }
      lua_pop(L, 1); /* ..., k */
    }
  }
  if (out == NULL) {
    lkh_enc_fail(e, "out of memory");
    goto fail;
  }
  e->depth--;
  return out;
fail:
  json_decref(out);
  e->depth--;
  return NULL;
}

static json_t *lkh_enc_value(lua_State *L, int idx, lkh_enc_t *e) {
  char what[96];
  idx = lua_absindex(L, idx);
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
    case LUA_TNONE:
      return json_null();
    case LUA_TBOOLEAN:
      return json_boolean(lua_toboolean(L, idx));
    case LUA_TNUMBER: {
      lua_Number x;
      if (lua_isinteger(L, idx)) return json_integer((json_int_t)lua_tointeger(L, idx));
      x = lua_tonumber(L, idx);
      if (!isfinite(x)) {
        snprintf(what, sizeof(what), "%s (JSON has no NaN or infinity)",
                 isnan(x) ? "nan" : (x > 0 ? "inf" : "-inf"));
        return lkh_enc_fail(e, what);
      }
      return json_real(x);
    }
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      json_t *j = json_stringn(s, n);
      return j != NULL ? j : lkh_enc_bytes(e, s, n); /* not UTF-8: bytes */
    }
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) == NULL) return json_null(); /* kernelhost.null */
      break;
    case LUA_TTABLE:
      return lkh_enc_table(L, idx, e);
    case LUA_TUSERDATA: {
      size_t n;
      const char *s = lkh_bytes_get(L, idx, &n); /* ..., s: the userdata anchors it */
      if (s != NULL) {
        lua_pop(L, 1); /* ... */
        return lkh_enc_bytes(e, s, n);
      }
      break;
    }
    default:
      break;
  }
  snprintf(what, sizeof(what), "a Lua %s", luaL_typename(L, idx));
  return lkh_enc_fail(e, what);
}

/* Answers call with the Lua value at idx. Returns the core's code; when the value cannot be
 * converted, the call is answered with an error naming it, and *msg says the same (static
 * storage of e) with KH_EINVAL returned. */
static int lkh_host_answer(lua_State *L, int idx, kh_hostcall_t *call, const char *name,
                           kh_manager_t *m, lkh_enc_t *e, const char **msg) {
  json_t *j;
  char *text;
  int rc;
  *msg = NULL;
  memset(e, 0, sizeof(*e));
  j = lkh_enc_value(L, idx, e);
  if (j == NULL) {
    snprintf(e->msg, sizeof(e->msg), "host function \"%.100s\" answered with a value Python cannot "
             "take: %s", name, e->err);
    lkh_enc_free(e);
    (void)kh_hostcall_error(call, e->msg);
    *msg = e->msg;
    return KH_EINVAL;
  }
  /* Sorted: a Lua table has no key order of its own, and a dict should not change from one
   * call to the next. */
  text = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS);
  json_decref(j);
  if (text == NULL) {
    lkh_enc_free(e);
    (void)kh_hostcall_error(call, "out of memory");
    *msg = "out of memory";
    return KH_ENOMEM;
  }
  rc = kh_hostcall_return(call, text, strlen(text), e->bufs, e->n);
  free(text);
  lkh_enc_free(e);
  if (rc == KH_EINVAL) {
    /* The core refused the value (and left the call unanswered): it cannot be the host's
     * fault, every value was checked above, but the cell must still get an answer. */
    snprintf(e->msg, sizeof(e->msg), "host function \"%.100s\": kernelhost could not pass its "
             "value to Python: %.300s", name, m != NULL ? kh_manager_errmsg(m) : "");
    (void)kh_hostcall_error(call, e->msg);
    *msg = e->msg;
  }
  return rc;
}

/* --- the HostCall handle --------------------------------------------------------------------- */

static lkh_call_t *lkh_call_check(lua_State *L) {
  return luaL_checkudata(L, 1, LKH_HOSTCALL_MT);
}

/* The results of an answer: true, or false, msg, code (luv's convention, with false as the
 * issue asks: a late answer is no failure of the host, only news that nobody waits). */
static int lkh_call_result(lua_State *L, int rc, const char *msg) {
  if (rc == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushboolean(L, 0);
  if (msg == NULL)
    msg = rc == KH_ECANCELED ? "the kernel stopped waiting (interrupt, restart or destroy)"
                             : kh_strerror(rc);
  lua_pushstring(L, msg);
  lua_pushstring(L, kh_err_name(rc));
  return 3;
}

/* Takes the call out of c for answering; raises when the host answered it already. Returns
 * NULL (and leaves the results to push) when the binding canceled it. */
static kh_hostcall_t *lkh_call_take(lua_State *L, lkh_call_t *c) {
  kh_hostcall_t *call = c->call;
  if (c->state == LKH_CALL_ANSWERED)
    luaL_error(L, "host call \"%s\" was answered already", c->name);
  if (c->state == LKH_CALL_CANCELED) return NULL;
  lkh_call_unlink(c);
  c->call = NULL;
  c->lm = NULL;
  c->state = LKH_CALL_ANSWERED;
  return call;
}

/* call:return_([value]) -> true | false, msg, code */
static int lkh_call_return(lua_State *L) {
  lkh_call_t *c = lkh_call_check(L);
  kh_hostcall_t *call;
  kh_manager_t *m = c->lm != NULL ? c->lm->m : NULL;
  lkh_enc_t *e;
  const char *msg;
  int rc;
  lua_settop(L, 2); /* c, value (nil when none: None) */
  if ((call = lkh_call_take(L, c)) == NULL) return lkh_call_result(L, KH_ECANCELED, c->why);
  /* The encoder's state is large: on the heap, as a userdata so that no error can leak it. */
  e = lua_newuserdatauv(L, sizeof(*e), 0); /* c, value, e */
  rc = lkh_host_answer(L, 2, call, c->name, m, e, &msg);
  return lkh_call_result(L, rc, msg);
}

/* call:error(message) -> true | false, msg, code. Python raises kernelhost.HostError(message). */
static int lkh_call_error(lua_State *L) {
  lkh_call_t *c = lkh_call_check(L);
  const char *msg = luaL_checkstring(L, 2);
  kh_hostcall_t *call;
  if ((call = lkh_call_take(L, c)) == NULL) return lkh_call_result(L, KH_ECANCELED, c->why);
  return lkh_call_result(L, kh_hostcall_error(call, msg), NULL);
}

/* __gc and __close: a call nobody answered gets an error, so the cell never waits forever. */
static int lkh_call_gc(lua_State *L) {
  lkh_call_t *c = lkh_call_check(L);
  kh_hostcall_t *call = c->call;
  char msg[256];
  if (c->state != LKH_CALL_PENDING) return 0;
  lkh_call_unlink(c);
  c->call = NULL;
  c->lm = NULL;
  c->state = LKH_CALL_ANSWERED;
  snprintf(msg, sizeof(msg), "host function \"%s\" never answered: its call handle was dropped",
           c->name);
  (void)kh_hostcall_error(call, msg);
  return 0;
}

/* call.name, call.kernel_id, call.pending; everything else is a method. */
static int lkh_call_index(lua_State *L) {
  lkh_call_t *c = lkh_call_check(L);
  const char *key = lua_tostring(L, 2);
  if (key != NULL && strcmp(key, "name") == 0)
    lua_pushstring(L, c->name);
  else if (key != NULL && strcmp(key, "kernel_id") == 0)
    lua_pushstring(L, c->kernel_id);
  else if (key != NULL && strcmp(key, "pending") == 0)
    lua_pushboolean(L, c->state == LKH_CALL_PENDING);
  else {
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1)); /* methods[key] */
  }
  return 1;
}

static int lkh_call_tostring(lua_State *L) {
  lkh_call_t *c = lkh_call_check(L);
  static const char *const states[] = {"pending", "answered", "canceled"};
  lua_pushfstring(L, "kernelhost.HostCall (%s, %s, %s)", c->name, c->kernel_id, states[c->state]);
  return 1;
}

static const luaL_Reg lkh_call_methods[] = {
    {"return_", lkh_call_return}, {"error", lkh_call_error}, {NULL, NULL}};

/* Pushes a new pending handle for call and links it into lm->calls. */
static void lkh_call_push(lua_State *L, lkh_manager_t *lm, kh_hostcall_t *call,
                          const char *kernel_id, const char *name) {
  size_t n = strlen(name);
  lkh_call_t *c = lua_newuserdatauv(L, sizeof(*c) + n + 1, 0); /* c */
  memset(c, 0, sizeof(*c));
  luaL_setmetatable(L, LKH_HOSTCALL_MT);
  c->call = call;
  c->lm = lm;
  c->state = LKH_CALL_PENDING;
  snprintf(c->kernel_id, sizeof(c->kernel_id), "%s", kernel_id);
  memcpy(c->name, name, n + 1);
  c->next = lm->calls;
  if (lm->calls != NULL) lm->calls->prev = c;
  lm->calls = c;
}

/* --- calling a host function ----------------------------------------------------------------- */

/* Message handler: the error object as the string HostError carries (no traceback: the message
 * is the host's answer, as error() worded it). */
static int lkh_host_msgh(lua_State *L) {
  if (lua_type(L, 1) == LUA_TSTRING) return 1;
  if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
  lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  return 1;
}

/* Pushes the exposed-functions table ({[kernel_id] = {[name] = {fn, async}}}), creating it when
 * create is set; returns 0 (and pushes nil) when there is none. */
static int lkh_exposed_push(lua_State *L, lkh_manager_t *lm, int create) {
  if (!lkh_manager_push(L, lm)) return 0; /* nil */
  lua_getiuservalue(L, -1, 2);            /* ud, fns */
  lua_remove(L, -2);                      /* fns */
  if (lua_rawgetp(L, -1, &lkh_exposed_key) == LUA_TTABLE) { /* fns, exposed */
    lua_remove(L, -2);                                      /* exposed */
    return 1;
  }
  lua_pop(L, 1); /* fns */
  if (!create) {
    lua_pop(L, 1);
    lua_pushnil(L);
    return 0;
  }
  lua_newtable(L);                         /* fns, exposed */
  lua_pushvalue(L, -1);                    /* fns, exposed, exposed */
  lua_rawsetp(L, -3, &lkh_exposed_key);    /* fns, exposed */
  lua_remove(L, -2);                       /* exposed */
  return 1;
}

/* One call on its way through lkh_host_run, which runs in protected mode: whatever Lua raises
 * there (out of memory while pushing the arguments, too), the call is answered. */
typedef struct {
  lkh_manager_t *lm;
  const char *kernel_id, *name, *args_json;
  size_t args_len;
  const kh_buffer_t *buffers;
  size_t nbuffers;
  kh_hostcall_t *call; /* NULL once answered, or handed to a HostCall handle */
  json_t *args;
  json_t **marks;
} lkh_run_t;

/* lkh_host_run(run): looks the function up, pushes its arguments, calls it, answers. An error
 * raised here reaches lkh_host_on_call, which answers the call with it when it is still the
 * binding's to answer. */
static int lkh_host_run(lua_State *L) {
  lkh_run_t *r = lua_touserdata(L, 1);
  lkh_manager_t *lm = r->lm;
  lkh_marks_t mk = {NULL, r->buffers, 0, 0};
  lkh_call_t *c = NULL;
  lkh_enc_t *e;
  const char *msg;
  size_t i, nargs;
  int async, rc;
  lua_settop(L, 0);
  lua_pushcfunction(L, lkh_host_msgh); /* msgh */
  if (!lkh_exposed_push(L, lm, 0) || lua_getfield(L, -1, r->kernel_id) != LUA_TTABLE ||
      lua_getfield(L, -1, r->name) != LUA_TTABLE) /* msgh, exposed, byname, entry */
    return luaL_error(L, "no Lua function is exposed as \"%s\"", r->name);
  lua_rawgeti(L, -1, 2); /* msgh, exposed, byname, entry, async */
  async = lua_toboolean(L, -1);
  lua_rawgeti(L, -2, 3); /* msgh, exposed, byname, entry, async, bytes */
  mk.wrap = lua_toboolean(L, -1);
  lua_rawgeti(L, -3, 1); /* msgh, exposed, byname, entry, async, bytes, fn */
  lua_replace(L, 2);
  lua_settop(L, 2); /* msgh, fn */
  r->args = json_loadb(r->args_json, r->args_len, JSON_ALLOW_NUL, NULL); /* "\u0000" is text */
  if (!json_is_array(r->args)) return luaL_error(L, "the call's arguments are not a JSON array");
  if (r->nbuffers > 0) {
    if ((r->marks = calloc(r->nbuffers, sizeof(*r->marks))) == NULL)
      return luaL_error(L, "out of memory");
    for (i = 0; i < r->nbuffers; i++) {
      /* args holds the mark (stolen): its address stays valid while args lives */
      if ((r->marks[i] = json_object()) == NULL ||
          lkh_ptr_mark(r->args, r->buffers[i].path, r->marks[i]) != 0)
        return luaL_error(L, "a buffer of the call leads to no null in its arguments");
    }
    mk.marks = r->marks;
    mk.n = r->nbuffers;
  }
  nargs = json_array_size(r->args);
  luaL_checkstack(L, (int)nargs + 6, "too many host call arguments");
  if (async) {
    lkh_call_push(L, lm, r->call, r->kernel_id, r->name); /* msgh, fn, c */
    r->call = NULL;                                       /* the handle answers from now on */
    c = lua_touserdata(L, 3);
    lua_pushvalue(L, 3); /* msgh, fn, c, c */
    lua_insert(L, 2);    /* msgh, c, fn, c: one copy stays below the call */
  }
  for (i = 0; i < nargs; i++) lkh_host_push(L, json_array_get(r->args, i), &mk, 1);
  lm->cb_depth++;
  rc = lua_pcall(L, (int)nargs + (async ? 1 : 0), 1, 1); /* msgh, [c,] result | err */
  lm->cb_depth--;
  if (async) {
    if (rc == LUA_OK) return 0;
    if (c->state == LKH_CALL_PENDING) {
      /* The function failed before it answered: that is its answer. */
      kh_hostcall_t *call = c->call;
      lkh_call_unlink(c);
      c->call = NULL;
      c->lm = NULL;
      c->state = LKH_CALL_ANSWERED;
      (void)kh_hostcall_error(call, lua_tostring(L, -1));
    } else {
      /* Answered already: nobody in Python can hear it, the "error" handlers do. */
      lkh_events_report(lm, L, r->kernel_id, "", "host function");
    }
    return 0;
  }
  if (rc != LUA_OK) return lua_error(L); /* the message, as msgh made it */
  e = lua_newuserdatauv(L, sizeof(*e), 0); /* msgh, result, e */
  (void)lkh_host_answer(L, 2, r->call, r->name, lm->m, e, &msg);
  r->call = NULL; /* answered: lkh_host_answer raises only before it answers */
  return 0;
}

/* The core's host function: one for every name the binding exposed. The Lua function is looked
 * up by kernel and name at each call, so that withdrawing or replacing one leaves the core no
 * pointer to free. */
static void lkh_host_on_call(kh_manager_t *m, const char *kernel_id, const char *name,
                             const char *args_json, size_t args_len, const kh_buffer_t *buffers,
                             size_t nbuffers, kh_hostcall_t *call, void *data) {
  lkh_manager_t *lm = data;
  lua_State *L = lm->L;
  lkh_run_t r;
  int base;
  (void)m;
  /* L is NULL only outside the binding's own loop runs, where the core never calls back. */
  if (lm->quiet || L == NULL) {
    (void)kh_hostcall_error(call, "the Lua host is closing");
    return;
  }
  memset(&r, 0, sizeof(r));
  r.lm = lm;
  r.kernel_id = kernel_id;
  r.name = name;
  r.args_json = args_json;
  r.args_len = args_len;
  r.buffers = buffers;
  r.nbuffers = nbuffers;
  r.call = call;
  lm->dispatched++;
  base = lua_gettop(L);
  if (!lua_checkstack(L, 4)) {
    (void)kh_hostcall_error(call, "the Lua stack is full");
    return;
  }
  lua_pushcfunction(L, lkh_host_run); /* run */
  lua_pushlightuserdata(L, &r);       /* run, r */
  if (lua_pcall(L, 1, 0, 0) != LUA_OK && r.call != NULL) { /* err */
    const char *msg = lua_tostring(L, -1);
    (void)kh_hostcall_error(r.call, msg != NULL ? msg : "the Lua host function failed");
    r.call = NULL;
  }
  if (r.call != NULL) (void)kh_hostcall_error(r.call, "the Lua host function did not answer");
  lua_settop(L, base);
  json_decref(r.args);
  free(r.marks);
}

/* --- kernel:expose --------------------------------------------------------------------------- */

/* Forgets the functions of kernels that no longer exist (their ids may come back as new kernels,
 * which start with none). */
static void lkh_exposed_prune(lua_State *L, lkh_manager_t *lm, int exposed) {
  lua_pushnil(L);                     /* nil */
  while (lua_next(L, exposed) != 0) { /* id, byname */
    lua_pop(L, 1);                    /* id */
    if (lua_type(L, -1) == LUA_TSTRING && !kh_kernel_exists(lm->m, lua_tostring(L, -1), NULL)) {
      lua_pushvalue(L, -1);         /* id, id */
      lua_pushnil(L);               /* id, id, nil */
      lua_rawset(L, exposed);       /* id: clearing a field during lua_next is allowed */
    }
  }
}

/* kernel:expose(name, fn|nil[, {async = bool, bytes = bool}]) -> true | nil, msg, code.
 * fn(...) answers with its first return value (or raises: HostError); with async, fn(call, ...)
 * answers later through call:return_(v) / call:error(msg); with bytes, Python bytes arrive as
 * kernelhost.bytes values rather than plain strings. nil withdraws the name. */
static int lkh_kernel_expose(lua_State *L) {
  lkh_manager_t *lm;
  const char *id, *name = luaL_checkstring(L, 2);
  int async = 0, bytes = 0, withdraw = lua_isnoneornil(L, 3), rc;
  luaL_checkudata(L, 1, LKH_KERNEL_MT);
  if (!withdraw) luaL_checktype(L, 3, LUA_TFUNCTION);
  if (!lua_isnoneornil(L, 4)) {
    luaL_checktype(L, 4, LUA_TTABLE);
    lua_pushnil(L);             /* nil */
    while (lua_next(L, 4) != 0) { /* k, v */
      const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
      int *flag = strcmp(k, "async") == 0 ? &async : strcmp(k, "bytes") == 0 ? &bytes : NULL;
      if (flag == NULL) luaL_argerror(L, 4, "the options are 'async' and 'bytes'");
      if (!lua_isboolean(L, -1))
        luaL_argerror(L, 4, lua_pushfstring(L, "option '%s' must be a boolean", k));
      *flag = lua_toboolean(L, -1);
      lua_pop(L, 1); /* k */
    }
  }
  lua_settop(L, 3);
  lua_getfield(L, 1, "id");   /* k, name, fn, id */
  id = lua_tostring(L, -1);
  lua_getiuservalue(L, 1, 1); /* k, name, fn, id, manager */
  lm = lkh_manager_get(L, -1);
  lua_pop(L, 1); /* k, name, fn, id */
  if (lm == NULL) return lkh_fail_closed(L);
  rc = kh_kernel_expose(lm->m, id, name, withdraw ? NULL : lkh_host_on_call, withdraw ? NULL : lm);
  if (rc != 0) return lkh_fail(L, rc, kh_manager_errmsg(lm->m));
  lkh_exposed_push(L, lm, 1); /* k, name, fn, id, exposed */
  lkh_exposed_prune(L, lm, 5);
  if (lua_getfield(L, 5, id) != LUA_TTABLE) { /* k, name, fn, id, exposed, byname|nil */
    lua_pop(L, 1);
    lua_newtable(L);      /* k, name, fn, id, exposed, byname */
    lua_pushvalue(L, -1); /* k, name, fn, id, exposed, byname, byname */
    lua_setfield(L, 5, id);
  }
  if (withdraw) {
    lua_pushnil(L); /* ..., byname, nil */
  } else {
    lua_createtable(L, 3, 0); /* ..., byname, entry: {fn, async, bytes} */
    lua_pushvalue(L, 3);
    lua_rawseti(L, -2, 1);
    lua_pushboolean(L, async);
    lua_rawseti(L, -2, 2);
    lua_pushboolean(L, bytes);
    lua_rawseti(L, -2, 3);
  }
  lua_setfield(L, -2, name); /* ..., byname */
  lua_pushboolean(L, 1);
  return 1;
}

const luaL_Reg lkh_hostcall_methods[] = {{"expose", lkh_kernel_expose}, {NULL, NULL}};

/* Creates the HostCall and Bytes metatables; sets M.bytes on the module table on top. */
void lkh_hostcall_open(lua_State *L) {
  luaL_newmetatable(L, LKH_BYTES_MT); /* M, mt */
  lua_pushcfunction(L, lkh_bytes_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushcfunction(L, lkh_bytes_len);
  lua_setfield(L, -2, "__len");
  lua_pushcfunction(L, lkh_bytes_eq);
  lua_setfield(L, -2, "__eq");
  lua_pop(L, 1); /* M */
  lua_pushcfunction(L, lkh_bytes_new);
  lua_setfield(L, -2, "bytes");
  luaL_newmetatable(L, LKH_HOSTCALL_MT);    /* mt */
  luaL_newlib(L, lkh_call_methods);         /* mt, methods */
  lua_pushcclosure(L, lkh_call_index, 1);   /* mt, index */
  lua_setfield(L, -2, "__index");           /* mt */
  lua_pushcfunction(L, lkh_call_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, lkh_call_gc);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, lkh_call_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1); /* */
}

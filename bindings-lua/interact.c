/* interact.c: kernelhost.Kernel's editor requests: complete, inspect, is_complete, history and
 * kernel_info, each blocking like kernel:execute() (the loop runs, so events and other
 * callbacks are dispatched meanwhile, and a cell submitted before keeps running). They return
 * the content of Jupyter's reply as a table, or nil, msg, "KH_E..." / "UV_E...". Cursor
 * positions count Unicode code points (Jupyter 5.2+), not bytes. Loop thread. */
#include <stdlib.h>
#include <string.h>

#include "lkh.h"

void lkh_answer_on_answer(kh_manager_t *m, const char *kernel_id, int status, const char *json,
                          size_t len, const char *errmsg, void *data) {
  lkh_answer_t *a = data;
  (void)m;
  (void)kernel_id;
  a->done = 1;
  a->status = status;
  if (json != NULL && (a->json = malloc(len + 1)) != NULL) {
    memcpy(a->json, json, len + 1);
    a->len = len;
  }
  if (errmsg != NULL) a->errmsg = strdup(errmsg);
}

/* The kernel id and manager of the kernel object at 1 (NULL lm: closed). */
static const char *lkh_interact_kernel(lua_State *L, lkh_manager_t **lm) {
  lkh_manager_t *m;
  luaL_checkudata(L, 1, LKH_KERNEL_MT);
  lua_getfield(L, 1, "id");   /* ..., id */
  lua_getiuservalue(L, 1, 1); /* ..., id, manager */
  m = lkh_manager_get(L, -1);
  lua_pop(L, 1); /* ..., id */
  *lm = m;
  return lua_tostring(L, -1); /* kept alive on the stack */
}

/* The `timeout` (ms) of an options table at idx (absent: 0, the core's default). */
static uint64_t lkh_interact_timeout(lua_State *L, int idx) {
  lua_Integer ms;
  int isint;
  if (lua_isnoneornil(L, idx)) return 0;
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_getfield(L, idx, "timeout");
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return 0;
  }
  ms = lua_tointegerx(L, -1, &isint);
  if (!isint || ms < 0)
    luaL_argerror(L, idx, "option 'timeout' must be a non-negative integer (ms)");
  lua_pop(L, 1);
  return (uint64_t)ms;
}

/* A cursor position argument: an integer, or nil for the end of the code (-1). */
static int64_t lkh_interact_cursor(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return -1;
  return (int64_t)luaL_checkinteger(L, idx);
}

/* Waits for the answer of a request the call `rc` started, then pushes its results. */
int lkh_answer_finish(lua_State *L, lkh_manager_t *lm, lkh_answer_t *a, int rc) {
  int n;
  if (rc != 0) return lkh_fail(L, rc, kh_manager_errmsg(lm->m));
  lkh_manager_wait(lm, L, &a->done);
  if (a->status == 0) {
    json_t *j = a->json ? json_loadb(a->json, a->len, JSON_ALLOW_NUL, NULL) : NULL;
    if (j != NULL) {
      lkh_values_push(L, j);
      json_decref(j);
      n = 1;
    } else {
      n = lkh_fail(L, KH_EPROTO, "the answer is not JSON");
    }
  } else {
    n = lkh_fail(L, a->status, a->errmsg);
  }
  free(a->json);
  free(a->errmsg);
  return n;
}

/* Refuses what a blocking call cannot do (a closed manager, inside a callback). */
#define LKH_INTERACT_BEGIN(name)                \
  lkh_manager_t *lm;                            \
  const char *id = lkh_interact_kernel(L, &lm); \
  lkh_answer_t a;                               \
  memset(&a, 0, sizeof(a));                     \
  if (lm == NULL) return lkh_fail_closed(L);    \
  if (lm->depth > 0) return lkh_fail_busy(L, "kernel:" name);

/* kernel:complete(code[, cursor_pos][, opts]) -> {matches, cursor_start, cursor_end, metadata} */
static int lkh_kernel_complete(lua_State *L) {
  size_t len;
  const char *code = luaL_checklstring(L, 2, &len);
  int64_t cursor = lkh_interact_cursor(L, 3);
  uint64_t timeout = lkh_interact_timeout(L, 4);
  LKH_INTERACT_BEGIN("complete");
  return lkh_answer_finish(
      L, lm, &a,
      kh_kernel_complete(lm->m, id, code, len, cursor, timeout, lkh_answer_on_answer, &a));
}

/* kernel:inspect(code[, cursor_pos][, detail_level][, opts]) -> {found, data, metadata} */
static int lkh_kernel_inspect(lua_State *L) {
  size_t len;
  const char *code = luaL_checklstring(L, 2, &len);
  int64_t cursor = lkh_interact_cursor(L, 3);
  int detail = (int)luaL_optinteger(L, 4, 0);
  uint64_t timeout = lkh_interact_timeout(L, 5);
  LKH_INTERACT_BEGIN("inspect");
  return lkh_answer_finish(
      L, lm, &a,
      kh_kernel_inspect(lm->m, id, code, len, cursor, detail, timeout, lkh_answer_on_answer, &a));
}

/* kernel:is_complete(code[, opts]) -> {status, indent?} */
static int lkh_kernel_is_complete(lua_State *L) {
  size_t len;
  const char *code = luaL_checklstring(L, 2, &len);
  uint64_t timeout = lkh_interact_timeout(L, 3);
  LKH_INTERACT_BEGIN("is_complete");
  return lkh_answer_finish(
      L, lm, &a, kh_kernel_is_complete(lm->m, id, code, len, timeout, lkh_answer_on_answer, &a));
}

/* kernel:history(request) -> {status, history = {{session, line, input}, ...}}; request is
 * Jupyter's history_request content: {hist_access_type = "tail", n = 10}, ...; with
 * output = true the entries are {session, line, {input, output}} (output: the execute_result's
 * text/plain, or kernelhost.null). */
static int lkh_kernel_history(lua_State *L) {
  char *req;
  int rc;
  LKH_INTERACT_BEGIN("history");
  luaL_checktype(L, 2, LUA_TTABLE);
  req = lkh_values_encode_opts(L, 2);
  if (req == NULL) return luaL_argerror(L, 2, "the history request cannot be encoded as JSON");
  rc = kh_kernel_history(lm->m, id, req, lkh_answer_on_answer, &a);
  free(req);
  return lkh_answer_finish(L, lm, &a, rc);
}

/* kernel:kernel_info([opts]) -> Jupyter's kernel_info_reply content. (manager:kernel_info(id)
 * is the core's description of the kernel: id, mode, status, options.) */
static int lkh_kernel_kernel_info(lua_State *L) {
  uint64_t timeout = lkh_interact_timeout(L, 2);
  LKH_INTERACT_BEGIN("kernel_info");
  return lkh_answer_finish(L, lm, &a,
                           kh_kernel_kernel_info(lm->m, id, timeout, lkh_answer_on_answer, &a));
}

const luaL_Reg lkh_interact_methods[] = {
    {"complete", lkh_kernel_complete},       {"inspect", lkh_kernel_inspect},
    {"is_complete", lkh_kernel_is_complete}, {"history", lkh_kernel_history},
    {"kernel_info", lkh_kernel_kernel_info}, {NULL, NULL}};

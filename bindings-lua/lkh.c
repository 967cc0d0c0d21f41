/* lkh.c: the Lua binding's entry point, require("kernelhost"): builds the module table from each
 * concept's part (manager.c, kernel.c, events.c, values.c, ...; lkh.h lists them), and owns the
 * results convention (nil, message, "KH_E...", as luv does) and the module's constants and small
 * functions (KernelMode, KernelEvents, errors, strerror, hrtime, version). Loop thread. */
#define _GNU_SOURCE
#include <ctype.h>
#include <dlfcn.h>

#include "lkh.h"

#define LKH_EXPORT __attribute__((visibility("default")))

/* --- results ------------------------------------------------------------------------------ */

/* Pushes nil, message, "KH_E..." and returns 3; the message falls back to the code's text. */
int lkh_fail(lua_State *L, int rc, const char *msg) {
  lua_pushnil(L);
  lua_pushstring(L, msg && *msg ? msg : kh_strerror(rc));
  lua_pushstring(L, kh_err_name(rc));
  return 3;
}

/* A blocking call inside a callback: the callback runs inside uv_run, which must not be
 * entered again, so the call fails instead of waiting. */
int lkh_fail_busy(lua_State *L, const char *what) {
  lua_pushnil(L);
  lua_pushfstring(L, "%s cannot block inside a kernelhost callback (use kernel:submit)", what);
  lua_pushstring(L, kh_err_name(KH_EBUSY));
  return 3;
}

/* The result of a core call that completes at once: true, or nil, msg, code with the detail
 * the manager keeps for its last failure. */
int lkh_result(lua_State *L, lkh_manager_t *lm, int rc) {
  if (rc != 0) return lkh_fail(L, rc, kh_manager_errmsg(lm->m));
  lua_pushboolean(L, 1);
  return 1;
}

int lkh_fail_closed(lua_State *L) {
  return lkh_fail(L, KH_ECLOSED, "the manager is closed");
}

/* --- module functions --------------------------------------------------------------------- */

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
 * may still call into the core it contains, and lua_close() would otherwise dlclose() it. */
static void lkh_pin_module(void) {
  Dl_info info;
  if (dladdr((void *)lkh_pin_module, &info) && info.dli_fname != NULL)
    (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}

/* Pushes KernelEvents: STREAM = "stream", ... for every type the core names, and ALL = "*". Read
 * from the core, so a new event type reaches Lua without a second list to keep in step. */
static void lkh_push_event_names(lua_State *L) {
  char key[32];
  int t;
  size_t i;
  lua_createtable(L, 0, KH_EVENT_TYPE_MAX_); /* events */
  for (t = KH_EVENT_ALL + 1; t < KH_EVENT_TYPE_MAX_; t++) {
    const char *name = kh_event_type_name(t);
    if (name == NULL) continue;
    for (i = 0; name[i] && i + 1 < sizeof(key); i++) key[i] = (char)toupper((unsigned char)name[i]);
    key[i] = '\0';
    lua_pushstring(L, name);  /* events, name */
    lua_setfield(L, -2, key); /* events */
  }
  lua_pushliteral(L, "*");    /* events, "*" */
  lua_setfield(L, -2, "ALL"); /* events */
}

LKH_EXPORT int luaopen_kernelhost(lua_State *L) {
  lkh_pin_module();
  lkh_kernel_open(L);       /* */
  lkh_comm_open(L);         /* */
  lkh_jupyter_open(L);      /* */
  lua_newtable(L);          /* M */
  lkh_hostcall_open(L);     /* M: bytes */
  lkh_manager_open(L);      /* M: KernelManager */
  lkh_events_open(L);       /* M: set_callback_wrapper */
  lkh_values_open(L);       /* M: null, empty_array */
  lua_createtable(L, 0, 3); /* M, KernelMode */
  lua_pushliteral(L, "main_thread");
  lua_setfield(L, -2, "MAIN_THREAD");
  lua_pushliteral(L, "worker");
  lua_setfield(L, -2, "WORKER");
  lua_pushliteral(L, "remote");
  lua_setfield(L, -2, "REMOTE");
  lua_setfield(L, -2, "KernelMode");   /* M */
  lkh_push_event_names(L);             /* M, KernelEvents */
  lua_setfield(L, -2, "KernelEvents"); /* M */
  lua_newtable(L);                     /* M, errors */
#define LKH_ERR_FIELD_(name, code, msg) \
  lua_pushinteger(L, code);             \
  lua_setfield(L, -2, "KH_" #name);
  KH_ERRNO_MAP(LKH_ERR_FIELD_)
#undef LKH_ERR_FIELD_
  lua_setfield(L, -2, "errors"); /* M */
  lua_pushcfunction(L, lkh_strerror);
  lua_setfield(L, -2, "strerror");
  lua_pushcfunction(L, lkh_hrtime);
  lua_setfield(L, -2, "hrtime");
  lua_pushfstring(L, "%d.%d.%d", KH_VERSION_MAJOR, KH_VERSION_MINOR, KH_VERSION_PATCH);
  lua_setfield(L, -2, "version");
  return 1;
}

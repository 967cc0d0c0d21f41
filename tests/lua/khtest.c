/* khtest.c: a test-only Lua module: khtest.readable(fd, timeout_ms) waits with poll(2) until
 * fd is readable and returns true, or false on timeout. Built beside the specs, never shipped. */
#include <errno.h>
#include <poll.h>

#include <lauxlib.h>
#include <lua.h>

static int khtest_readable(lua_State *L) {
  struct pollfd p;
  int rc;
  p.fd = (int)luaL_checkinteger(L, 1);
  p.events = POLLIN;
  p.revents = 0;
  do rc = poll(&p, 1, (int)luaL_optinteger(L, 2, -1));
  while (rc < 0 && errno == EINTR);
  if (rc < 0) return luaL_error(L, "poll failed (errno %d)", errno);
  lua_pushboolean(L, rc > 0 && (p.revents & POLLIN));
  return 1;
}

__attribute__((visibility("default"))) int luaopen_khtest(lua_State *L) {
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, khtest_readable);
  lua_setfield(L, -2, "readable");
  return 1;
}

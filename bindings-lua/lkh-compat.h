/* lkh-compat.h: the one place where the Lua versions differ. The binding is written against
 * the Lua 5.4 C API; built for Lua 5.1 or LuaJIT 2.1 (Neovim, LÖVE), it gets the 5.2/5.3 API
 * from lua-compat-5.3 (Debian: lua-compat53-dev; its functions are compiled in, static, under
 * a compat53_ prefix, so nothing clashes with the host's own copy) and the 5.4 pieces below.
 * Included by lkh.h instead of <lua.h> and <lauxlib.h>. Loop thread, like the whole binding.
 *
 * What differs for a 5.1 user, and is documented in README (LuaJIT and Lua 5.1):
 *   - n user values per userdata: one table holding them at 1..n;
 *   - no <close>: manager:close() / kernel:destroy() and __gc do what __close does;
 *   - numbers are doubles: a JSON integer beyond +-2^53 arrives as a string of its decimal
 *     digits (exact), never as a rounded number (lkh_push_json_integer). */
#ifndef LKH_COMPAT_H
#define LKH_COMPAT_H

#include <stdint.h>
#include <stdio.h>

#include <lauxlib.h>
#include <lua.h>

#if LUA_VERSION_NUM < 503
#include <compat-5.3.h>
#endif

#if LUA_VERSION_NUM < 504
/* Before 5.4 a userdata has one user value (on 5.1 its environment table, which compat-5.3's
 * lua_getuservalue/lua_setuservalue reach): a table holding the n values at 1..n. Set on every
 * new userdata: on 5.1 it would otherwise share the running function's environment. */
static inline void *lkh_compat_newuserdatauv(lua_State *L, size_t size, int n) {
  void *p = lua_newuserdata(L, size); /* ud */
  lua_createtable(L, n, 0);           /* ud, uv */
  lua_setuservalue(L, -2);            /* ud */
  return p;
}

/* Pops a value into user value n of the userdata at idx; returns 1, as 5.4 does. */
static inline int lkh_compat_setiuservalue(lua_State *L, int idx, int n) {
  idx = lua_absindex(L, idx);
  lua_getuservalue(L, idx); /* v, uv */
  lua_insert(L, -2);        /* uv, v */
  lua_rawseti(L, -2, n);    /* uv */
  lua_pop(L, 1);            /* */
  return 1;
}

/* Pushes user value n of the userdata at idx; returns its type. */
static inline int lkh_compat_getiuservalue(lua_State *L, int idx, int n) {
  lua_getuservalue(L, idx); /* uv */
  lua_rawgeti(L, -1, n);    /* uv, v */
  lua_remove(L, -2);        /* v */
  return lua_type(L, -1);
}

#define lua_newuserdatauv lkh_compat_newuserdatauv
#define lua_setiuservalue lkh_compat_setiuservalue
#define lua_getiuservalue lkh_compat_getiuservalue
#endif

/* Pushes a JSON integer. Lua 5.3+ has 64-bit integers; 5.1's numbers are doubles, exact up to
 * 2^53 only, so a larger integer (an id, a byte count, Python's 2**64) becomes the string of its
 * digits: the caller sees a string where it expected a number, rather than a number that is
 * silently wrong (tonumber() gives the rounded value when that is what one wants). */
static inline void lkh_push_json_integer(lua_State *L, int64_t v) {
#if LUA_VERSION_NUM < 503
  const int64_t exact = (int64_t)1 << 53;
  if (v > exact || v < -exact) {
    char digits[24];
    snprintf(digits, sizeof(digits), "%lld", (long long)v);
    lua_pushstring(L, digits);
    return;
  }
#endif
  lua_pushinteger(L, (lua_Integer)v);
}

#endif

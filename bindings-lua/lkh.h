/* lkh.h: what the files of the Lua binding share: the manager's state and each file's entry
 * points. Everything here runs on the thread that runs the Lua state, which is also the loop
 * thread: the binding runs its private loop itself, inside blocking calls and manager:poll()
 * (DESIGN.md, section 3).
 *
 * The files, by concept (as luv splits its sources):
 *   lkh.c      the module: luaopen_kernelhost, the results convention, module functions
 *   manager.c  kernelhost.Manager: the private loop, blocking calls, close and __gc, and
 *              the gateway's calls (connect_kernel, list_remote_kernels, list_kernelspecs)
 *              and pool_ready
 *   kernel.c   kernelhost.Kernel: execute, submit, interrupt, input_reply, restart, destroy
 *   interact.c kernelhost.Kernel's editor requests: complete, inspect, is_complete, history
 *   comm.c     kernelhost.Comm: kernel:open_comm, kernel:comm, and comm events to their comm
 *   jupyter.c  kernelhost.JupyterServer: manager:serve_jupyter, a kernel on Jupyter's wire
 *   events.c   subscriptions, and calling Lua back (pcall + traceback, "error" handlers)
 *   hostcall.c kernelhost.Kernel's expose and the HostCall handle: host functions
 *   values.c   JSON <-> Lua values (kernelhost.null, kernelhost.empty_array)
 *   lkh-compat.h  what differs between Lua 5.4 and Lua 5.1 / LuaJIT (one place) */
#ifndef LKH_H
#define LKH_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "kernelhost.h"
#include "lkh-compat.h" /* <lua.h>, <lauxlib.h>, and what Lua 5.1 / LuaJIT lack */

#define LKH_MANAGER_MT "kernelhost.Manager"
#define LKH_KERNEL_MT "kernelhost.Kernel"
#define LKH_ID_MAX 64

typedef struct lkh_sub_s lkh_sub_t;   /* events.c */
typedef struct lkh_call_s lkh_call_t; /* hostcall.c */

/* One KernelManager. The Lua userdata holds only a pointer to it: the struct must outlive the
 * userdata when __gc finds the loop still busy (then it is leaked on purpose, see manager.c). */
typedef struct lkh_manager_s {
  uv_loop_t loop;
  kh_manager_t *m;       /* NULL once the close callback ran */
  lua_State *L;          /* the Lua thread running the loop, callbacks run on it; else NULL */
  uv_async_t keepalive;  /* ref'd: keeps the loop alive, so fd()/timeout() stay meaningful */
  uv_timer_t poll_timer; /* poll(timeout_ms) */
  int poll_expired;
  int64_t count_sub; /* the core subscription that counts every event for poll() */
  int64_t comm_sub;  /* comm.c's subscription that routes comm events, once a comm exists */
  size_t dispatched; /* events and completions delivered, ever (poll()'s return value) */
  /* The two guards below are Lua's own, not the core's: the core never calls back inside an
   * API call, but a Lua callback runs inside uv_run and may call the binding again. */
  int depth;       /* > 0 while the loop runs: uv_run is not re-entrant, so blocking is refused */
  int cb_depth;    /* > 0 while Lua callbacks run: a callback may unsubscribe while the error
                    * report walks the list, so removed subscriptions stay linked until then */
  int closing;     /* kh_manager_close() was called */
  int closed;      /* its callback ran */
  int loop_closed; /* uv_loop_close() succeeded: the struct may be freed */
  int quiet;       /* closing from __gc: no Lua callback runs any more */
  lkh_sub_t *subs; /* in subscription order; events.c owns the list */
  lua_Integer next_sub;
  int next_ref;     /* keys of the callback table (the manager's uservalue 2) */
  lkh_call_t *calls; /* the async host calls not answered yet; hostcall.c owns the list */
} lkh_manager_t;

/* lkh.c: results. Runtime failures push nil, message, "KH_E..." (luv's convention). */
int lkh_fail(lua_State *L, int rc, const char *msg);
int lkh_fail_busy(lua_State *L, const char *what);
int lkh_fail_closed(lua_State *L);
int lkh_result(lua_State *L, lkh_manager_t *lm, int rc);

/* manager.c */
void lkh_manager_open(lua_State *L);
lkh_manager_t *lkh_manager_get(lua_State *L, int idx);
int lkh_manager_push(lua_State *L, lkh_manager_t *lm);
void lkh_manager_wait(lkh_manager_t *lm, lua_State *L, int *flag);
int lkh_manager_destroy_kernel(lua_State *L);
int lkh_manager_restart(lua_State *L, lkh_manager_t *lm, const char *id, int fn);
int lkh_manager_opt_fn(lua_State *L, int idx);

/* kernel.c */
void lkh_kernel_open(lua_State *L);
int lkh_kernel_push(lua_State *L, lkh_manager_t *lm, int mgr, const char *id);
/* The id of the kernel object at idx (raises on another type); valid while the object is. */
const char *lkh_kernel_id(lua_State *L, int idx);

/* comm.c: kernelhost.Comm, kernel:open_comm and kernel:comm */
extern const luaL_Reg lkh_comm_kernel_methods[];
void lkh_comm_open(lua_State *L);
/* Drops the comm objects of kernels that are gone (after a destroy). */
void lkh_comm_sweep(lua_State *L, lkh_manager_t *lm);

/* jupyter.c: manager:serve_jupyter and kernelhost.JupyterServer */
extern const luaL_Reg lkh_jupyter_manager_methods[];
void lkh_jupyter_open(lua_State *L);

/* interact.c: kernel:complete, inspect, is_complete, history, kernel_info */
extern const luaL_Reg lkh_interact_methods[];
/* The answer of a request that completes through a kh_request_cb (editor requests, the
 * gateway's lists, pool_ready): zero it, pass lkh_answer_on_answer and it to the core call, then
 * lkh_answer_finish(L, lm, &a, rc) blocks until it is answered and pushes the answer's table,
 * or nil, msg, code. */
typedef struct {
  int done;
  int status;
  char *json;   /* owned copy of the answer */
  char *errmsg; /* owned copy of the failure detail */
  size_t len;
} lkh_answer_t;
void lkh_answer_on_answer(kh_manager_t *m, const char *kernel_id, int status, const char *json,
                          size_t len, const char *errmsg, void *data);
int lkh_answer_finish(lua_State *L, lkh_manager_t *lm, lkh_answer_t *a, int rc);

/* events.c */
extern const luaL_Reg lkh_events_methods[];
void lkh_events_open(lua_State *L);
int lkh_events_ref(lua_State *L, lkh_manager_t *lm, int idx);
void lkh_events_push(lua_State *L, lkh_manager_t *lm, int ref);
void lkh_events_unref(lua_State *L, lkh_manager_t *lm, int ref);
void lkh_events_call(lkh_manager_t *lm, lua_State *L, int nargs, const char *kernel_id,
                     const char *exec_id, const char *where);
void lkh_events_report(lkh_manager_t *lm, lua_State *L, const char *kernel_id,
                       const char *exec_id, const char *where);
void lkh_events_free(lkh_manager_t *lm, lua_State *L);

/* hostcall.c: kernel:expose and kernelhost.HostCall */
extern const luaL_Reg lkh_hostcall_methods[];
void lkh_hostcall_open(lua_State *L);
/* Answers the unanswered async calls of kernels that are gone (all: every one, at close). */
void lkh_hostcall_cancel(lkh_manager_t *lm, int all);

/* values.c */
void lkh_values_open(lua_State *L);
void lkh_values_push(lua_State *L, json_t *j);
/* The value at idx as JSON (owned), or NULL with *err (static text) saying why it cannot be. */
json_t *lkh_values_to_json(lua_State *L, int idx, const char **err);
char *lkh_values_encode_opts(lua_State *L, int arg);
/* 1 (and the message in msg) when the options table at arg holds a NaN or infinity, which the
 * caller reports as KH_EOPTION (a bad value, not misuse); call before encoding. */
int lkh_values_check_opts(lua_State *L, int arg, char *msg, size_t n);
void lkh_values_mark_array(lua_State *L);
void lkh_values_tag(json_t *o, const char *kernel_id, const char *exec_id);
/* A reply's JSON with its binary values put in (lkh_values_put_buffers): owned, or NULL when
 * it is not a JSON object. */
json_t *lkh_values_reply_doc(const char *json, size_t len, const kh_buffer_t *bufs, size_t nbufs);
/* Pushes the result table of a reply doc (lkh_values_reply_doc), tagged with the ids. */
void lkh_values_push_reply(lua_State *L, json_t *doc, const char *kernel_id, const char *exec_id);
void lkh_values_put_buffers(json_t *doc, const kh_buffer_t *b, size_t n);

#endif

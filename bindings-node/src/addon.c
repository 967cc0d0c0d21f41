/* addon.c: the Node-API addon: a NativeManager class over kh_manager_t on Node's own libuv
 * loop. Core callbacks run on the loop thread (the JS thread) and call into JS through
 * napi_make_callback; the JS facade (lib/index.js) turns them into Promises and events. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <node_api.h>

#include "kernelhost.h"

/* Checks one napi call. On failure it throws (unless an exception is pending already) and
 * jumps to the function's `fail:` label: every napi_* call in this file goes through it. */
#define NAPI_CALL(env, call)                                            \
  do {                                                                  \
    if (nkh_napi_check((env), (call), #call, __LINE__) != 0) goto fail; \
  } while (0)

#define NKH_ID_MAX 256 /* longer ids cannot exist in the core (64 bytes): they are not found */

typedef struct nkh_addon_s nkh_addon_t;
typedef struct nkh_manager_s nkh_manager_t;

/* Per-environment state (instance data): one per main thread or worker thread. */
struct nkh_addon_s {
  napi_ref ctor;   /* NativeManager */
  size_t managers; /* open managers in this environment */
};

struct nkh_manager_s {
  napi_env env;
  nkh_addon_t *addon;
  kh_manager_t *m;   /* NULL once closed */
  napi_ref self;     /* the wrapper object: weak, strong while `inflight` > 0 */
  uint32_t inflight; /* core callbacks still to run */
  napi_ref on_event; /* function (kernelId, executionId, type, json), `this` = wrapper */
  napi_async_context actx;
  napi_async_cleanup_hook_handle hook; /* NULL once removed */
  int closing;                         /* kh_manager_close() was called */
  int closed;                          /* its callback ran: m is gone */
  int js_gone;                         /* the wrapper was finalized */
  int teardown;                        /* the environment is going away: no more calls into JS */
};

/* One pending core callback and the JS function that gets its outcome. */
typedef struct {
  nkh_manager_t *w;
  napi_ref cb;
} nkh_req_t;

static int nkh_napi_check(napi_env env, napi_status status, const char *what, int line) {
  const napi_extended_error_info *info = NULL;
  bool pending = false;
  char msg[512];
  if (status == napi_ok) return 0;
  napi_get_last_error_info(env, &info);
  napi_is_exception_pending(env, &pending);
  if (!pending) {
    snprintf(msg, sizeof(msg), "kernelhost addon: %s failed (%s, line %d)", what,
             info && info->error_message ? info->error_message : "napi error", line);
    napi_throw_error(env, "KH_EINVAL", msg);
  }
  return -1;
}

/* Called with no JS on the stack (from a loop callback): an exception must not stay pending. */
static void nkh_flush_exception(napi_env env) {
  bool pending = false;
  napi_value exc;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending &&
      napi_get_and_clear_last_exception(env, &exc) == napi_ok)
    napi_fatal_exception(env, exc);
}

/* Throws an Error for a core failure: code "KH_E..." and the manager's detail message. */
static void nkh_throw_kh(napi_env env, nkh_manager_t *w, int rc) {
  const char *detail = w && w->m ? kh_manager_errmsg(w->m) : NULL;
  napi_throw_error(env, kh_err_name(rc), detail && *detail ? detail : kh_strerror(rc));
}

/* --- argument helpers ----------------------------------------------------------------------- */

static napi_value nkh_undefined(napi_env env) {
  napi_value v = NULL;
  napi_get_undefined(env, &v);
  return v;
}

static int nkh_is_nullish(napi_env env, napi_value v) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return 0;
  return t == napi_undefined || t == napi_null;
}

static int nkh_expect(napi_env env, napi_value v, napi_valuetype want, const char *what) {
  napi_valuetype t;
  char msg[128];
  if (napi_typeof(env, v, &t) != napi_ok || t != want) {
    snprintf(msg, sizeof(msg), "%s has the wrong type", what);
    napi_throw_type_error(env, NULL, msg);
    return -1;
  }
  return 0;
}

/* Reads a string argument into a malloc'd UTF-8 buffer (lone surrogates become U+FFFD: use
 * nkh_code_get for code, which must reject them). Returns NULL with a TypeError thrown. */
static char *nkh_str_get(napi_env env, napi_value v, const char *what, size_t *len_out) {
  size_t n = 0;
  char *s = NULL;
  if (nkh_expect(env, v, napi_string, what) != 0) return NULL;
  NAPI_CALL(env, napi_get_value_string_utf8(env, v, NULL, 0, &n));
  if ((s = malloc(n + 1)) == NULL) {
    napi_throw_error(env, "KH_ENOMEM", "out of memory");
    return NULL;
  }
  NAPI_CALL(env, napi_get_value_string_utf8(env, v, s, n + 1, &n));
  if (len_out) *len_out = n;
  return s;
fail:
  free(s);
  return NULL;
}

/* NULL or undefined -> NULL without error; a string -> a malloc'd copy; else TypeError. */
static int nkh_optstr_get(napi_env env, napi_value v, const char *what, char **out) {
  *out = NULL;
  if (nkh_is_nullish(env, v)) return 0;
  *out = nkh_str_get(env, v, what, NULL);
  return *out ? 0 : -1;
}

/* Kernel ids: into a fixed buffer; an id too long to exist reads as "" (never truncated into
 * another kernel's id). */
static int nkh_id_get(napi_env env, napi_value v, char *buf, size_t size) {
  size_t n = 0;
  if (nkh_expect(env, v, napi_string, "kernel id") != 0) return -1;
  NAPI_CALL(env, napi_get_value_string_utf8(env, v, NULL, 0, &n));
  if (n + 1 > size) {
    buf[0] = '\0';
    return 0;
  }
  NAPI_CALL(env, napi_get_value_string_utf8(env, v, buf, size, &n));
  return 0;
fail:
  return -1;
}

/* Cell code: a JS string is UTF-16, and V8's own UTF-8 conversion replaces lone surrogates
 * with U+FFFD silently. Code must arrive exactly as written, so convert here and report a
 * lone surrogate as KH_EENCODING (as the core reports invalid UTF-8). Returns 0, -1 with an
 * exception thrown, or KH_EENCODING with *bad_at set. */
static int nkh_code_get(napi_env env, napi_value v, char **out, size_t *out_len, size_t *bad_at) {
  size_t n = 0, i, o = 0;
  char16_t *u = NULL;
  unsigned char *s = NULL;
  *out = NULL;
  if (nkh_expect(env, v, napi_string, "code") != 0) return -1;
  NAPI_CALL(env, napi_get_value_string_utf16(env, v, NULL, 0, &n));
  u = malloc((n + 1) * sizeof(*u));
  s = malloc(n * 3 + 1);
  if (u == NULL || s == NULL) {
    napi_throw_error(env, "KH_ENOMEM", "out of memory");
    goto fail;
  }
  NAPI_CALL(env, napi_get_value_string_utf16(env, v, u, n + 1, &n));
  for (i = 0; i < n; i++) {
    uint32_t c = u[i];
    if (c < 0x80) {
      s[o++] = (unsigned char)c;
    } else if (c < 0x800) {
      s[o++] = (unsigned char)(0xC0 | (c >> 6));
      s[o++] = (unsigned char)(0x80 | (c & 0x3F));
    } else if (c >= 0xD800 && c <= 0xDFFF) {
      uint32_t lo = i + 1 < n ? u[i + 1] : 0;
      if (c > 0xDBFF || lo < 0xDC00 || lo > 0xDFFF) {
        *bad_at = i;
        free(u);
        free(s);
        return KH_EENCODING;
      }
      c = 0x10000 + ((c - 0xD800) << 10) + (lo - 0xDC00);
      i++;
      s[o++] = (unsigned char)(0xF0 | (c >> 18));
      s[o++] = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
      s[o++] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
      s[o++] = (unsigned char)(0x80 | (c & 0x3F));
    } else {
      s[o++] = (unsigned char)(0xE0 | (c >> 12));
      s[o++] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
      s[o++] = (unsigned char)(0x80 | (c & 0x3F));
    }
  }
  s[o] = '\0';
  free(u);
  *out = (char *)s;
  *out_len = o;
  return 0;
fail:
  free(u);
  free(s);
  return -1;
}

/* --- the wrapper's lifetime ---------------------------------------------------------------- */

static void nkh_manager_free(nkh_manager_t *w) {
  if (w->self) napi_delete_reference(w->env, w->self);
  if (w->on_event) napi_delete_reference(w->env, w->on_event);
  if (w->actx) napi_async_destroy(w->env, w->actx);
  free(w);
}

/* Keeps the wrapper object alive while a core callback is pending, so a manager nobody
 * references can still resolve the Promise somebody awaits. */
static void nkh_manager_hold(nkh_manager_t *w) {
  uint32_t n;
  /* Once finalized the object is gone and the reference must not be touched. */
  if (!w->js_gone && w->self && napi_reference_ref(w->env, w->self, &n) == napi_ok) w->inflight++;
}

static void nkh_manager_release(nkh_manager_t *w) {
  uint32_t n;
  if (w->inflight == 0) return;
  w->inflight--;
  napi_reference_unref(w->env, w->self, &n);
}

static nkh_req_t *nkh_req_new(nkh_manager_t *w, napi_value cb) {
  nkh_req_t *r = calloc(1, sizeof(*r));
  if (r == NULL) {
    napi_throw_error(w->env, "KH_ENOMEM", "out of memory");
    return NULL;
  }
  r->w = w;
  if (nkh_expect(w->env, cb, napi_function, "callback") != 0) goto fail;
  NAPI_CALL(w->env, napi_create_reference(w->env, cb, 1, &r->cb));
  return r;
fail:
  free(r);
  return NULL;
}

/* The core will run the request's callback: keep the wrapper alive until then. */
static void nkh_req_submitted(nkh_req_t *r) {
  nkh_manager_hold(r->w);
}

/* The core refused the request: its callback will never run. */
static void nkh_req_discard(nkh_req_t *r) {
  napi_delete_reference(r->w->env, r->cb);
  free(r);
}

/* Calls the request's JS callback with argv (unless the environment is going away), then
 * frees the request. Runs on the loop thread, inside a handle scope the caller opened. */
static void nkh_req_finish(nkh_req_t *r, size_t argc, const napi_value *argv) {
  nkh_manager_t *w = r->w;
  napi_env env = w->env;
  napi_value fn, recv;
  if (!w->teardown && r->cb && napi_get_reference_value(env, r->cb, &fn) == napi_ok && fn != NULL) {
    NAPI_CALL(env, napi_get_global(env, &recv));
    NAPI_CALL(env, napi_make_callback(env, w->actx, recv, fn, argc, argv, NULL));
  }
fail:
  if (!w->teardown) nkh_flush_exception(env);
  if (r->cb) napi_delete_reference(env, r->cb);
  free(r);
  nkh_manager_release(w);
}

/* Makes the (errorCode | null, message | null) pair every callback starts with. */
static int nkh_status_values(napi_env env, int status, const char *errmsg, napi_value *argv) {
  if (status == 0) {
    NAPI_CALL(env, napi_get_null(env, &argv[0]));
    NAPI_CALL(env, napi_get_null(env, &argv[1]));
  } else {
    NAPI_CALL(env, napi_create_string_utf8(env, kh_err_name(status), NAPI_AUTO_LENGTH, &argv[0]));
    NAPI_CALL(env, napi_create_string_utf8(env, errmsg && *errmsg ? errmsg : kh_strerror(status),
                                           NAPI_AUTO_LENGTH, &argv[1]));
  }
  return 0;
fail:
  return -1;
}

/* --- core callbacks (loop thread) ------------------------------------------------------------ */

static void nkh_manager_on_event(kh_manager_t *m, const kh_event_t *ev, void *data) {
  nkh_manager_t *w = data;
  napi_env env = w->env;
  napi_handle_scope scope;
  napi_value self, fn, argv[4];
  if (w->teardown || w->js_gone) return;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  NAPI_CALL(env, napi_get_reference_value(env, w->self, &self));
  if (self == NULL) goto fail; /* collected: nobody can listen any more */
  NAPI_CALL(env, napi_get_reference_value(env, w->on_event, &fn));
  NAPI_CALL(env, napi_create_string_utf8(env, ev->kernel_id, NAPI_AUTO_LENGTH, &argv[0]));
  NAPI_CALL(env, napi_create_string_utf8(env, ev->execution_id, NAPI_AUTO_LENGTH, &argv[1]));
  NAPI_CALL(env, napi_create_string_utf8(env, ev->type_name, NAPI_AUTO_LENGTH, &argv[2]));
  NAPI_CALL(env, napi_create_string_utf8(env, ev->json, ev->json_len, &argv[3]));
  NAPI_CALL(env, napi_make_callback(env, w->actx, self, fn, 4, argv, NULL));
fail:
  nkh_flush_exception(env);
  napi_close_handle_scope(env, scope);
}

static void nkh_kernel_on_created(kh_manager_t *m, const char *kernel_id, int status,
                                  const char *errmsg, void *data) {
  nkh_req_t *r = data;
  napi_env env = r->w->env;
  napi_handle_scope scope;
  napi_value argv[3] = {NULL, NULL, NULL};
  NAPI_CALL(env, napi_open_handle_scope(env, &scope));
  if (nkh_status_values(env, status, errmsg, argv) == 0)
    napi_create_string_utf8(env, kernel_id ? kernel_id : "", NAPI_AUTO_LENGTH, &argv[2]);
  nkh_req_finish(r, 3, argv);
  napi_close_handle_scope(env, scope);
  return;
fail:
  nkh_flush_exception(env);
}

static void nkh_kernel_on_executed(kh_manager_t *m, const kh_reply_t *reply, int status,
                                   void *data) {
  nkh_req_t *r = data;
  napi_env env = r->w->env;
  napi_handle_scope scope;
  napi_value argv[3] = {NULL, NULL, NULL};
  NAPI_CALL(env, napi_open_handle_scope(env, &scope));
  if (status == 0 && (reply == NULL || reply->json == NULL)) status = KH_EPROTO;
  if (nkh_status_values(env, status, reply ? reply->errmsg : NULL, argv) == 0) {
    if (status == 0)
      napi_create_string_utf8(env, reply->json, reply->json_len, &argv[2]);
    else
      napi_get_null(env, &argv[2]);
  }
  nkh_req_finish(r, 3, argv);
  napi_close_handle_scope(env, scope);
  return;
fail:
  nkh_flush_exception(env);
}

/* Restart, destroy and destroyAll (status >= 0 is the count for destroyAll). */
static void nkh_kernel_on_done(kh_manager_t *m, const char *kernel_id, int status,
                               const char *errmsg, void *data) {
  nkh_req_t *r = data;
  napi_env env = r->w->env;
  napi_handle_scope scope;
  napi_value argv[3] = {NULL, NULL, NULL};
  NAPI_CALL(env, napi_open_handle_scope(env, &scope));
  if (nkh_status_values(env, status < 0 ? status : 0, errmsg, argv) == 0)
    napi_create_int32(env, status < 0 ? 0 : status, &argv[2]);
  nkh_req_finish(r, 3, argv);
  napi_close_handle_scope(env, scope);
  return;
fail:
  nkh_flush_exception(env);
}

static void nkh_manager_on_closed(kh_manager_t *m, void *data) {
  nkh_req_t *r = data;
  nkh_manager_t *w = r->w;
  napi_env env = w->env;
  napi_handle_scope scope = NULL;
  w->m = NULL;
  w->closed = 1;
  w->addon->managers--;
  if (w->hook != NULL) {
    /* Before the environment's teardown this unregisters the hook; during it, this tells
     * Node that the asynchronous cleanup is complete. */
    napi_remove_async_cleanup_hook(w->hook);
    w->hook = NULL;
  }
  if (!w->teardown && napi_open_handle_scope(env, &scope) != napi_ok) scope = NULL;
  nkh_req_finish(r, 0, NULL);
  if (scope) napi_close_handle_scope(env, scope);
  if (w->js_gone) nkh_manager_free(w);
}

/* Starts kh_manager_close(); `r` gets the callback (a request with no JS function when the
 * close comes from the finalizer or the environment's teardown). */
static int nkh_manager_close_start(nkh_manager_t *w, nkh_req_t *r) {
  int rc;
  if (r == NULL) {
    r = calloc(1, sizeof(*r));
    if (r == NULL) return KH_ENOMEM;
    r->w = w;
  }
  w->closing = 1;
  nkh_manager_hold(w);
  rc = kh_manager_close(w->m, nkh_manager_on_closed, r);
  if (rc != 0) {
    nkh_manager_release(w);
    if (r->cb) napi_delete_reference(w->env, r->cb);
    free(r);
  }
  return rc;
}

/* The environment (main thread at exit, or a worker thread being terminated) is going away.
 * kh_manager_close() is asynchronous: it needs the loop to deliver the kernel threads' exits.
 * An async cleanup hook makes Node keep running the loop until we remove the hook, which
 * nkh_manager_on_closed() does. No JS may run from here on. */
static void nkh_manager_on_teardown(napi_async_cleanup_hook_handle handle, void *arg) {
  nkh_manager_t *w = arg;
  w->teardown = 1;
  if (w->closing) return; /* the close under way removes the hook when it completes */
  if (nkh_manager_close_start(w, NULL) != 0) {
    /* Cannot happen (the manager is open): give Node its hook back rather than hang. */
    napi_remove_async_cleanup_hook(handle);
    w->hook = NULL;
  }
}

static void nkh_manager_finalize(napi_env env, void *data, void *hint) {
  nkh_manager_t *w = data;
  w->js_gone = 1;
  if (w->closed) {
    nkh_manager_free(w);
    return;
  }
  /* Unreachable with no request in flight: close it; the memory goes in on_closed. */
  if (!w->closing && nkh_manager_close_start(w, NULL) != 0) return;
}

/* --- NativeManager methods ---------------------------------------------------------------------
 */

static nkh_manager_t *nkh_this(napi_env env, napi_callback_info info, size_t want,
                               napi_value *argv) {
  size_t argc = want;
  napi_value self;
  nkh_manager_t *w = NULL;
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, &self, NULL));
  for (; argc < want; argc++) argv[argc] = nkh_undefined(env);
  NAPI_CALL(env, napi_unwrap(env, self, (void **)&w));
  return w;
fail:
  return NULL;
}

/* Every method but the state getters fails with KH_ECLOSED once close() was called. */
static int nkh_open_check(napi_env env, nkh_manager_t *w) {
  if (w->closing || w->m == NULL) {
    napi_throw_error(env, "KH_ECLOSED", "the manager is closed");
    return -1;
  }
  return 0;
}

/* new NativeManager(optionsJson | null, onEvent) */
static napi_value nkh_manager_new(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], self, name;
  nkh_manager_t *w = NULL;
  nkh_addon_t *addon = NULL;
  char *opts = NULL;
  uv_loop_t *loop = NULL;
  int rc;
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, &self, NULL));
  if (argc < 2) {
    napi_throw_type_error(env, NULL, "NativeManager(optionsJson, onEvent)");
    return NULL;
  }
  if (nkh_optstr_get(env, argv[0], "options", &opts) != 0) return NULL;
  if (nkh_expect(env, argv[1], napi_function, "onEvent") != 0) goto fail;
  NAPI_CALL(env, napi_get_instance_data(env, (void **)&addon));
  NAPI_CALL(env, napi_get_uv_event_loop(env, &loop));
  if ((w = calloc(1, sizeof(*w))) == NULL) {
    napi_throw_error(env, "KH_ENOMEM", "out of memory");
    goto fail;
  }
  w->env = env;
  w->addon = addon;
  rc = kh_manager_new(&w->m, loop, opts);
  if (rc != 0) {
    napi_throw_error(env, kh_err_name(rc),
                     *kh_manager_errmsg(NULL) ? kh_manager_errmsg(NULL) : kh_strerror(rc));
    goto fail;
  }
  addon->managers++;
  if (kh_subscribe(w->m, NULL, KH_EVENT_ALL, nkh_manager_on_event, w, NULL) != 0) {
    napi_throw_error(env, "KH_ENOMEM", "cannot subscribe to the manager's events");
    goto fail_close;
  }
  NAPI_CALL(env, napi_create_string_utf8(env, "kernelhost", NAPI_AUTO_LENGTH, &name));
  if (nkh_napi_check(env, napi_async_init(env, self, name, &w->actx), "napi_async_init",
                     __LINE__) != 0 ||
      nkh_napi_check(env, napi_create_reference(env, argv[1], 1, &w->on_event),
                     "napi_create_reference", __LINE__) != 0 ||
      nkh_napi_check(env, napi_add_async_cleanup_hook(env, nkh_manager_on_teardown, w, &w->hook),
                     "napi_add_async_cleanup_hook", __LINE__) != 0 ||
      nkh_napi_check(env, napi_wrap(env, self, w, nkh_manager_finalize, NULL, &w->self),
                     "napi_wrap", __LINE__) != 0)
    goto fail_close;
  free(opts);
  return self;
fail_close:
  /* Nothing is in flight yet: close synchronously-enough and let on_closed free `w`. */
  if (w->hook) {
    napi_remove_async_cleanup_hook(w->hook);
    w->hook = NULL;
  }
  w->js_gone = 1;
  w->teardown = 1;
  nkh_manager_close_start(w, NULL);
  free(opts);
  return NULL;
fail:
  free(w);
  free(opts);
  return NULL;
}

/* createKernel(optionsJson | null, cb(code, msg, id)) -> id */
static napi_value nkh_kernel_create(napi_env env, napi_callback_info info) {
  napi_value argv[2], out;
  char id[64] = "";
  char *opts = NULL;
  nkh_req_t *r = NULL;
  nkh_manager_t *w = nkh_this(env, info, 2, argv);
  int rc;
  if (w == NULL || nkh_open_check(env, w) != 0) return NULL;
  if (nkh_optstr_get(env, argv[0], "options", &opts) != 0) return NULL;
  if ((r = nkh_req_new(w, argv[1])) == NULL) goto fail;
  rc = kh_kernel_create(w->m, opts, id, sizeof(id), nkh_kernel_on_created, r);
  if (rc != 0) {
    nkh_req_discard(r);
    nkh_throw_kh(env, w, rc);
    goto fail;
  }
  nkh_req_submitted(r);
  free(opts);
  NAPI_CALL(env, napi_create_string_utf8(env, id, NAPI_AUTO_LENGTH, &out));
  return out;
fail:
  free(opts);
  return NULL;
}

/* execute(kernelId, code, silent, storeHistory, stopOnError, timeoutMs, cb) -> executionId */
static napi_value nkh_kernel_execute(napi_env env, napi_callback_info info) {
  napi_value argv[7], out;
  char id[NKH_ID_MAX], exec_id[64] = "";
  char *code = NULL;
  size_t len = 0, bad_at = 0;
  bool silent, store, stop;
  double timeout;
  kh_execute_options_t o;
  nkh_req_t *r = NULL;
  nkh_manager_t *w = nkh_this(env, info, 7, argv);
  int rc;
  if (w == NULL || nkh_open_check(env, w) != 0) return NULL;
  if (nkh_id_get(env, argv[0], id, sizeof(id)) != 0) return NULL;
  if (nkh_expect(env, argv[2], napi_boolean, "silent") != 0 ||
      nkh_expect(env, argv[3], napi_boolean, "storeHistory") != 0 ||
      nkh_expect(env, argv[4], napi_boolean, "stopOnError") != 0 ||
      nkh_expect(env, argv[5], napi_number, "timeout") != 0)
    return NULL;
  NAPI_CALL(env, napi_get_value_bool(env, argv[2], &silent));
  NAPI_CALL(env, napi_get_value_bool(env, argv[3], &store));
  NAPI_CALL(env, napi_get_value_bool(env, argv[4], &stop));
  NAPI_CALL(env, napi_get_value_double(env, argv[5], &timeout));
  if (!(timeout >= 0 && timeout <= 9007199254740991.0)) {
    napi_throw_range_error(env, NULL, "timeout must be a number of milliseconds >= 0");
    return NULL;
  }
  rc = nkh_code_get(env, argv[1], &code, &len, &bad_at);
  if (rc == KH_EENCODING) {
    char msg[160];
    snprintf(msg, sizeof(msg), "code is not valid Unicode: lone surrogate at index %zu", bad_at);
    napi_throw_error(env, "KH_EENCODING", msg);
    return NULL;
  }
  if (rc != 0) return NULL;
  if ((r = nkh_req_new(w, argv[6])) == NULL) goto fail;
  kh_execute_options_init(&o);
  o.silent = silent;
  o.store_history = store;
  o.stop_on_error = stop;
  o.timeout_ms = (uint64_t)timeout;
  rc = kh_kernel_execute(w->m, id, code, len, &o, exec_id, sizeof(exec_id), nkh_kernel_on_executed,
                         r);
  free(code);
  code = NULL;
  if (rc != 0) {
    nkh_req_discard(r);
    nkh_throw_kh(env, w, rc);
    return NULL;
  }
  nkh_req_submitted(r);
  NAPI_CALL(env, napi_create_string_utf8(env, exec_id, NAPI_AUTO_LENGTH, &out));
  return out;
fail:
  free(code);
  return NULL;
}

/* interrupt(kernelId) */
static napi_value nkh_kernel_interrupt(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  char id[NKH_ID_MAX];
  nkh_manager_t *w = nkh_this(env, info, 1, argv);
  int rc;
  if (w == NULL || nkh_open_check(env, w) != 0) return NULL;
  if (nkh_id_get(env, argv[0], id, sizeof(id)) != 0) return NULL;
  if ((rc = kh_kernel_interrupt(w->m, id)) != 0) nkh_throw_kh(env, w, rc);
  return NULL;
}

/* inputReply(kernelId, value) */
static napi_value nkh_kernel_input_reply(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  char id[NKH_ID_MAX];
  char *value;
  nkh_manager_t *w = nkh_this(env, info, 2, argv);
  int rc;
  if (w == NULL || nkh_open_check(env, w) != 0) return NULL;
  if (nkh_id_get(env, argv[0], id, sizeof(id)) != 0) return NULL;
  if ((value = nkh_str_get(env, argv[1], "value", NULL)) == NULL) return NULL;
  rc = kh_kernel_input_reply(w->m, id, value);
  free(value);
  if (rc != 0) nkh_throw_kh(env, w, rc);
  return NULL;
}

/* restart(kernelId, cb) / destroy(kernelId, cb) */
static napi_value nkh_kernel_done_op(napi_env env, napi_callback_info info, int destroy) {
  napi_value argv[2];
  char id[NKH_ID_MAX];
  nkh_req_t *r;
  nkh_manager_t *w = nkh_this(env, info, 2, argv);
  int rc;
  if (w == NULL || nkh_open_check(env, w) != 0) return NULL;
  if (nkh_id_get(env, argv[0], id, sizeof(id)) != 0) return NULL;
  if ((r = nkh_req_new(w, argv[1])) == NULL) return NULL;
  rc = destroy ? kh_kernel_destroy(w->m, id, nkh_kernel_on_done, r)
               : kh_kernel_restart(w->m, id, nkh_kernel_on_done, r);
  if (rc != 0) {
    nkh_req_discard(r);
    nkh_throw_kh(env, w, rc);
    return NULL;
  }
  nkh_req_submitted(r);
  return NULL;
}

static napi_value nkh_kernel_restart(napi_env env, napi_callback_info info) {
  return nkh_kernel_done_op(env, info, 0);
}

static napi_value nkh_kernel_destroy(napi_env env, napi_callback_info info) {
  return nkh_kernel_done_op(env, info, 1);
}

/* destroyAll(namespace | null, cb(code, msg, count)) */
static napi_value nkh_manager_destroy_all(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  char *ns = NULL;
  nkh_req_t *r;
  nkh_manager_t *w = nkh_this(env, info, 2, argv);
  int rc;
  if (w == NULL || nkh_open_check(env, w) != 0) return NULL;
  if (nkh_optstr_get(env, argv[0], "namespace", &ns) != 0) return NULL;
  if ((r = nkh_req_new(w, argv[1])) == NULL) {
    free(ns);
    return NULL;
  }
  /* The callback may run before kh_manager_destroy_all returns (no kernels): hold first. */
  nkh_req_submitted(r);
  rc = kh_manager_destroy_all(w->m, ns, nkh_kernel_on_done, r);
  free(ns);
  if (rc != 0) {
    nkh_manager_release(w);
    nkh_req_discard(r);
    nkh_throw_kh(env, w, rc);
  }
  return NULL;
}

/* kernelMode(kernelId) -> "worker" | "main_thread" | null */
static napi_value nkh_kernel_mode(napi_env env, napi_callback_info info) {
  napi_value argv[1], out;
  char id[NKH_ID_MAX];
  const char *mode = NULL;
  nkh_manager_t *w = nkh_this(env, info, 1, argv);
  if (w == NULL) return NULL;
  if (nkh_id_get(env, argv[0], id, sizeof(id)) != 0) return NULL;
  if (w->m == NULL || w->closing || !kh_kernel_exists(w->m, id, &mode)) {
    NAPI_CALL(env, napi_get_null(env, &out));
    return out;
  }
  NAPI_CALL(env, napi_create_string_utf8(env, mode, NAPI_AUTO_LENGTH, &out));
  return out;
fail:
  return NULL;
}

/* Returns an owned JSON string from the core as a JS string (or null), freeing it. */
static napi_value nkh_owned_json(napi_env env, char *s) {
  napi_value out = NULL;
  if (s == NULL) {
    NAPI_CALL(env, napi_get_null(env, &out));
    return out;
  }
  NAPI_CALL(env, napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &out));
fail:
  kh_free(s);
  return out;
}

/* list(namespace | null) -> JSON text */
static napi_value nkh_manager_list(napi_env env, napi_callback_info info) {
  napi_value argv[1], out;
  char *ns = NULL;
  nkh_manager_t *w = nkh_this(env, info, 1, argv);
  if (w == NULL) return NULL;
  if (nkh_optstr_get(env, argv[0], "namespace", &ns) != 0) return NULL;
  if (w->m == NULL || w->closing) {
    free(ns);
    NAPI_CALL(env, napi_create_string_utf8(env, "[]", NAPI_AUTO_LENGTH, &out));
    return out;
  }
  out = nkh_owned_json(env, kh_manager_list(w->m, ns));
  free(ns);
  return out;
fail:
  return NULL;
}

/* info(kernelId) -> JSON text | null */
static napi_value nkh_kernel_info(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  char id[NKH_ID_MAX];
  nkh_manager_t *w = nkh_this(env, info, 1, argv);
  if (w == NULL) return NULL;
  if (nkh_id_get(env, argv[0], id, sizeof(id)) != 0) return NULL;
  return nkh_owned_json(env, w->m && !w->closing ? kh_kernel_info(w->m, id) : NULL);
}

/* ref(bool) */
static napi_value nkh_manager_ref(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  bool on = true;
  nkh_manager_t *w = nkh_this(env, info, 1, argv);
  if (w == NULL) return NULL;
  if (nkh_expect(env, argv[0], napi_boolean, "ref") != 0) return NULL;
  NAPI_CALL(env, napi_get_value_bool(env, argv[0], &on));
  if (w->m != NULL && !w->closing) kh_manager_ref(w->m, on);
fail:
  return NULL;
}

/* counts() -> [kernels, pending] */
static napi_value nkh_manager_counts(napi_env env, napi_callback_info info) {
  napi_value out, v;
  nkh_manager_t *w = nkh_this(env, info, 0, NULL);
  if (w == NULL) return NULL;
  NAPI_CALL(env, napi_create_array_with_length(env, 2, &out));
  NAPI_CALL(env, napi_create_uint32(env, w->m ? (uint32_t)kh_manager_kernel_count(w->m) : 0, &v));
  NAPI_CALL(env, napi_set_element(env, out, 0, v));
  NAPI_CALL(env, napi_create_uint32(env, w->m ? (uint32_t)kh_manager_pending_count(w->m) : 0, &v));
  NAPI_CALL(env, napi_set_element(env, out, 1, v));
  return out;
fail:
  return NULL;
}

/* close(cb) */
static napi_value nkh_manager_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  nkh_req_t *r;
  nkh_manager_t *w = nkh_this(env, info, 1, argv);
  int rc;
  if (w == NULL || nkh_open_check(env, w) != 0) return NULL;
  if ((r = nkh_req_new(w, argv[0])) == NULL) return NULL;
  if ((rc = nkh_manager_close_start(w, r)) != 0) nkh_throw_kh(env, w, rc);
  return NULL;
}

/* --- module ---------------------------------------------------------------------------------- */

static napi_value nkh_error_name(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  int32_t code;
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || nkh_expect(env, argv[0], napi_number, "code") != 0) return NULL;
  NAPI_CALL(env, napi_get_value_int32(env, argv[0], &code));
  NAPI_CALL(env, napi_create_string_utf8(env, kh_err_name(code), NAPI_AUTO_LENGTH, &out));
  return out;
fail:
  return NULL;
}

static void nkh_addon_finalize(napi_env env, void *data, void *hint) {
  nkh_addon_t *addon = data;
  if (addon->ctor) napi_delete_reference(env, addon->ctor);
  free(addon);
}

#define NKH_METHOD(name, fn) \
  { name, NULL, fn, NULL, NULL, NULL, napi_default_method, NULL }

static napi_value nkh_init(napi_env env, napi_value exports) {
  napi_property_descriptor methods[] = {
      NKH_METHOD("createKernel", nkh_kernel_create),
      NKH_METHOD("execute", nkh_kernel_execute),
      NKH_METHOD("interrupt", nkh_kernel_interrupt),
      NKH_METHOD("inputReply", nkh_kernel_input_reply),
      NKH_METHOD("restart", nkh_kernel_restart),
      NKH_METHOD("destroy", nkh_kernel_destroy),
      NKH_METHOD("destroyAll", nkh_manager_destroy_all),
      NKH_METHOD("kernelMode", nkh_kernel_mode),
      NKH_METHOD("list", nkh_manager_list),
      NKH_METHOD("info", nkh_kernel_info),
      NKH_METHOD("ref", nkh_manager_ref),
      NKH_METHOD("counts", nkh_manager_counts),
      NKH_METHOD("close", nkh_manager_close),
  };
  napi_value cls, fn, codes, v;
  nkh_addon_t *addon = calloc(1, sizeof(*addon));
  int i;
  static const int all_codes[] = {
#define NKH_CODE_(name, code, msg) code,
      KH_ERRNO_MAP(NKH_CODE_)
#undef NKH_CODE_
  };
  if (addon == NULL) {
    napi_throw_error(env, "KH_ENOMEM", "out of memory");
    return NULL;
  }
  if (nkh_napi_check(env, napi_set_instance_data(env, addon, nkh_addon_finalize, NULL),
                     "napi_set_instance_data", __LINE__) != 0) {
    free(addon);
    return NULL;
  }
  NAPI_CALL(env, napi_define_class(env, "NativeManager", NAPI_AUTO_LENGTH, nkh_manager_new, NULL,
                                   sizeof(methods) / sizeof(methods[0]), methods, &cls));
  NAPI_CALL(env, napi_create_reference(env, cls, 1, &addon->ctor));
  NAPI_CALL(env, napi_set_named_property(env, exports, "NativeManager", cls));
  NAPI_CALL(env,
            napi_create_function(env, "errorName", NAPI_AUTO_LENGTH, nkh_error_name, NULL, &fn));
  NAPI_CALL(env, napi_set_named_property(env, exports, "errorName", fn));
  /* errorCodes: {KH_EINVAL: -30001, ...} for the facade and the tests. */
  NAPI_CALL(env, napi_create_object(env, &codes));
  for (i = 0; i < (int)(sizeof(all_codes) / sizeof(all_codes[0])); i++) {
    NAPI_CALL(env, napi_create_int32(env, all_codes[i], &v));
    NAPI_CALL(env, napi_set_named_property(env, codes, kh_err_name(all_codes[i]), v));
  }
  NAPI_CALL(env, napi_set_named_property(env, exports, "errorCodes", codes));
  NAPI_CALL(env, napi_create_string_utf8(env, KH_PYTHON_EXECUTABLE, NAPI_AUTO_LENGTH, &v));
  NAPI_CALL(env, napi_set_named_property(env, exports, "pythonExecutable", v));
  return exports;
fail:
  return NULL;
}

NAPI_MODULE_INIT() {
  return nkh_init(env, exports);
}

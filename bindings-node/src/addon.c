/* addon.c: the Node-API addon: class NativeManager over one kh_manager_t on Node's own libuv
 * loop, and the plumbing that turns core callbacks into calls of JS functions. Everything here
 * runs on the JS thread of one environment (the main thread or a worker_threads thread), which
 * is that loop's thread. The JS facade (lib/index.js) owns Promises, listeners and the public
 * API's validation; the type checks here only keep a wrong call from reaching the core.
 *
 * The core never runs a callback inside the call that caused it: events, replies, cancellations
 * and completions all arrive from the loop, in order, so nothing here guards against
 * re-entrancy. Each request holds the wrapper from its creation until it is freed, which stays
 * right whichever way the core delivers. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <node_api.h>

#include "kernelhost.h"

/* Every napi_* call in this file goes through NAPI_CALL: on failure it throws an Error (unless
 * an exception is pending already) and jumps to the function's `fail:` label. The only calls
 * outside it are the ones that report a failure (nkh_napi_check, nkh_throw and
 * nkh_flush_exception): when they fail there is nothing left to report with. */
#define NAPI_CALL(env, call)                                            \
  do {                                                                  \
    if (nkh_napi_check((env), (call), #call, __LINE__) != 0) goto fail; \
  } while (0)

#define NKH_ID_MAX 256 /* longer ids cannot exist in the core (64 bytes): they are not found */

typedef struct nkh_manager_s nkh_manager_t;
typedef struct nkh_call_s nkh_call_t; /* a host function's call in flight (host functions) */

struct nkh_manager_s {
  napi_env env;
  kh_manager_t *m;   /* NULL once closed */
  napi_ref self;     /* the wrapper object: weak, plus one strong count per held request */
  napi_ref on_event; /* function (kernelId, executionId, type, json), `this` = wrapper */
  napi_ref on_hostcall; /* function (kernelId, name, args, call), `this` = wrapper */
  nkh_call_t *calls;    /* host calls not answered yet (host functions owns the list) */
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
  napi_ref cb; /* NULL for closes that nobody awaits (finalizer, teardown) */
  int held;    /* this request holds a strong count on w->self */
} nkh_req_t;

/* Tags NativeManager objects, so that a method called on anything else is a TypeError rather
 * than a pointer read from a foreign object. */
static const napi_type_tag nkh_manager_tag = {0x6b65726e656c686fULL, 0x73744e6174697665ULL};

/* --- errors ---------------------------------------------------------------------------------- */

typedef enum { NKH_ERROR, NKH_TYPE_ERROR, NKH_RANGE_ERROR } nkh_error_kind_t;

/* Throws an Error with `code` ("KH_E..."), or a TypeError / RangeError (code NULL) for misuse. */
static void nkh_throw(napi_env env, nkh_error_kind_t kind, const char *code, const char *msg) {
  if (kind == NKH_TYPE_ERROR)
    napi_throw_type_error(env, code, msg);
  else if (kind == NKH_RANGE_ERROR)
    napi_throw_range_error(env, code, msg);
  else
    napi_throw_error(env, code, msg);
}

static int nkh_napi_check(napi_env env, napi_status status, const char *what, int line) {
  const napi_extended_error_info *info = NULL;
  bool pending = false;
  char msg[512];
  if (status == napi_ok) return 0;
  /* Read first: any other napi call overwrites it. */
  if (napi_get_last_error_info(env, &info) != napi_ok) info = NULL;
  if (status == napi_pending_exception || napi_is_exception_pending(env, &pending) != napi_ok ||
      pending)
    return -1;
  snprintf(msg, sizeof(msg), "kernelhost addon: %s failed (%s, line %d)", what,
           info && info->error_message ? info->error_message : "napi error", line);
  nkh_throw(env, NKH_ERROR, "KH_EINVAL", msg);
  return -1;
}

/* Throws an Error for a core failure: code "KH_E..." and the manager's detail text when there
 * is one (w NULL: none; kh_manager_new's failures are read by the caller). */
static void nkh_throw_kh(napi_env env, nkh_manager_t *w, int rc) {
  const char *detail = w != NULL && w->m != NULL ? kh_manager_errmsg(w->m) : NULL;
  nkh_throw(env, NKH_ERROR, kh_err_name(rc), detail && *detail ? detail : kh_strerror(rc));
}

/* A loop callback has no JS caller to hand an exception to: one left pending (thrown by the
 * callback, or by a napi call that failed while building its arguments) becomes an uncaught
 * exception, as one thrown from any of Node's own callbacks does. */
static void nkh_flush_exception(napi_env env) {
  bool pending = false;
  napi_value exc;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending &&
      napi_get_and_clear_last_exception(env, &exc) == napi_ok)
    napi_fatal_exception(env, exc);
}

/* --- arguments ------------------------------------------------------------------------------- */

static const char *nkh_type_name(napi_valuetype t) {
  switch (t) {
    case napi_string:
      return "a string";
    case napi_boolean:
      return "a boolean";
    case napi_number:
      return "a number";
    case napi_function:
      return "a function";
    case napi_object:
      return "an object";
    default:
      return "defined";
  }
}

/* Returns 0 when `v` has type `want`, else throws a TypeError naming `what` and returns -1. */
static int nkh_expect(napi_env env, napi_value v, napi_valuetype want, const char *what) {
  napi_valuetype t;
  char msg[128];
  NAPI_CALL(env, napi_typeof(env, v, &t));
  if (t == want) return 0;
  snprintf(msg, sizeof(msg), "%s must be %s", what, nkh_type_name(want));
  nkh_throw(env, NKH_TYPE_ERROR, NULL, msg);
fail:
  return -1;
}

/* The data of the external at v, which must carry `tag` (so that no other external, nor any
 * other value, is taken for one); NULL: a TypeError saying `msg` is thrown. */
static void *nkh_external_get(napi_env env, napi_value v, const napi_type_tag *tag,
                              const char *msg) {
  bool ours = false;
  void *data = NULL;
  napi_valuetype t;
  NAPI_CALL(env, napi_typeof(env, v, &t));
  if (t == napi_external) NAPI_CALL(env, napi_check_object_type_tag(env, v, tag, &ours));
  if (!ours) {
    nkh_throw(env, NKH_TYPE_ERROR, NULL, msg);
    return NULL;
  }
  NAPI_CALL(env, napi_get_value_external(env, v, &data));
fail:
  return data;
}

/* Reads a string argument into a malloc'd UTF-8 buffer (V8 turns lone surrogates into U+FFFD,
 * which is right for ids but not for code or input: see nkh_text_get). NULL: thrown. */
static char *nkh_str_get(napi_env env, napi_value v, const char *what, size_t *len_out) {
  size_t n = 0;
  char *s = NULL;
  if (nkh_expect(env, v, napi_string, what) != 0) return NULL;
  NAPI_CALL(env, napi_get_value_string_utf8(env, v, NULL, 0, &n));
  if ((s = malloc(n + 1)) == NULL) {
    nkh_throw_kh(env, NULL, KH_ENOMEM);
    return NULL;
  }
  NAPI_CALL(env, napi_get_value_string_utf8(env, v, s, n + 1, &n));
  if (len_out) *len_out = n;
  return s;
fail:
  free(s);
  return NULL;
}

/* null or undefined -> *out NULL; a string -> a malloc'd copy; anything else: TypeError. */
static int nkh_optstr_get(napi_env env, napi_value v, const char *what, char **out) {
  napi_valuetype t;
  *out = NULL;
  NAPI_CALL(env, napi_typeof(env, v, &t));
  if (t == napi_undefined || t == napi_null) return 0;
  *out = nkh_str_get(env, v, what, NULL);
  return *out ? 0 : -1;
fail:
  return -1;
}

/* Kernel ids go into a fixed buffer. One too long to exist reads as "", which no kernel has:
 * truncating it could name another kernel. */
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

/* Cell code and input replies (`what`). A JS string is UTF-16, and V8's own UTF-8 conversion
 * silently replaces lone surrogates with U+FFFD; text must arrive exactly as written, so this
 * converts it (NUL characters included: *out_len counts them) and rejects a lone surrogate with
 * KH_EENCODING (as the core rejects invalid UTF-8). Returns 0, or -1 with an exception thrown. */
static int nkh_text_get(napi_env env, napi_value v, const char *what, char **out, size_t *out_len) {
  size_t n = 0, i, o = 0;
  char16_t *u = NULL;
  unsigned char *s = NULL;
  char msg[160];
  *out = NULL;
  if (nkh_expect(env, v, napi_string, what) != 0) return -1;
  NAPI_CALL(env, napi_get_value_string_utf16(env, v, NULL, 0, &n));
  u = malloc((n + 1) * sizeof(*u));
  s = malloc(n * 3 + 1); /* each UTF-16 unit becomes at most 3 bytes (a pair: 4 for 2 units) */
  if (u == NULL || s == NULL) {
    nkh_throw_kh(env, NULL, KH_ENOMEM);
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
        snprintf(msg, sizeof(msg), "%s is not valid Unicode: lone surrogate at index %zu", what, i);
        nkh_throw(env, NKH_ERROR, "KH_EENCODING", msg);
        goto fail;
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

/* --- references and scopes ------------------------------------------------------------------- */

/* Also runs in finalizers and at teardown, where a failure has nowhere to go: the environment's
 * own cleanup then takes the reference. */
static void nkh_ref_delete(napi_env env, napi_ref *ref) {
  napi_ref r = *ref;
  *ref = NULL;
  if (r != NULL) NAPI_CALL(env, napi_delete_reference(env, r));
fail:
  return;
}

static void nkh_scope_close(napi_env env, napi_handle_scope scope) {
  if (scope != NULL) NAPI_CALL(env, napi_close_handle_scope(env, scope));
fail:
  return;
}

/* Before the environment's teardown this unregisters the hook; during it, it tells Node that
 * the asynchronous cleanup is complete. */
static void nkh_hook_remove(nkh_manager_t *w) {
  napi_async_cleanup_hook_handle h = w->hook;
  w->hook = NULL;
  if (h != NULL) NAPI_CALL(w->env, napi_remove_async_cleanup_hook(h));
fail:
  return;
}

/* --- requests -------------------------------------------------------------------------------- */

/* Frees a request: the core refused it, or its callback has run. */
static void nkh_req_free(nkh_req_t *r) {
  uint32_t n;
  nkh_manager_t *w = r->w;
  nkh_ref_delete(w->env, &r->cb);
  if (r->held && !w->js_gone) NAPI_CALL(w->env, napi_reference_unref(w->env, w->self, &n));
fail:
  free(r);
}

/* A request for JS function `cb` (NULL: a close nobody awaits, from the finalizer or the
 * teardown, where nothing may be thrown). From its creation until it is freed it holds the
 * wrapper strongly, so that a manager nobody references any more still settles the Promise
 * somebody awaits; once the wrapper is finalized (environment teardown) there is nothing left
 * to hold. */
static nkh_req_t *nkh_req_new(nkh_manager_t *w, napi_value cb) {
  uint32_t n;
  nkh_req_t *r;
  if (cb != NULL && nkh_expect(w->env, cb, napi_function, "callback") != 0) return NULL;
  if ((r = calloc(1, sizeof(*r))) == NULL) {
    if (cb != NULL) nkh_throw_kh(w->env, NULL, KH_ENOMEM);
    return NULL;
  }
  r->w = w;
  if (cb != NULL) NAPI_CALL(w->env, napi_create_reference(w->env, cb, 1, &r->cb));
  if (!w->js_gone && w->self != NULL) {
    NAPI_CALL(w->env, napi_reference_ref(w->env, w->self, &n));
    r->held = 1;
  }
  return r;
fail:
  nkh_req_free(r);
  return NULL;
}

/* Calls the request's JS function with (code | null, message | null, value), value being `str`
 * (len bytes) when given, else `count`, and null on failure; then frees the request. Runs from
 * a core callback on the loop, so it opens its own handle scope and hands exceptions to
 * nkh_flush_exception. No JS runs once the environment is going away. */
/* Binary values beside a JSON text (kh_buffer_t) as a JS array of [path, Buffer] pairs (copies:
 * the core's bytes are borrowed for the callback), or undefined when there are none; the JS side
 * puts each Buffer where its JSON Pointer says (lib/index.js, applyBuffers). */
static napi_status nkh_buffers_value(napi_env env, const kh_buffer_t *b, size_t n,
                                     napi_value *out) {
  napi_status st;
  size_t i;
  if (n == 0) return napi_get_undefined(env, out);
  if ((st = napi_create_array_with_length(env, n, out)) != napi_ok) return st;
  for (i = 0; i < n; i++) {
    napi_value pair, path, buf;
    void *dst;
    if ((st = napi_create_array_with_length(env, 2, &pair)) != napi_ok ||
        (st = napi_create_string_utf8(env, b[i].path, NAPI_AUTO_LENGTH, &path)) != napi_ok ||
        (st = napi_create_buffer_copy(env, b[i].len, b[i].len ? b[i].data : "", &dst, &buf)) !=
            napi_ok ||
        (st = napi_set_element(env, pair, 0, path)) != napi_ok ||
        (st = napi_set_element(env, pair, 1, buf)) != napi_ok ||
        (st = napi_set_element(env, *out, (uint32_t)i, pair)) != napi_ok)
      return st;
  }
  return napi_ok;
}

static void nkh_req_complete_bufs(nkh_req_t *r, int status, const char *errmsg, const char *str,
                                  size_t len, int32_t count, const kh_buffer_t *bufs,
                                  size_t nbufs);

static void nkh_req_complete(nkh_req_t *r, int status, const char *errmsg, const char *str,
                             size_t len, int32_t count) {
  nkh_req_complete_bufs(r, status, errmsg, str, len, count, NULL, 0);
}

/* As nkh_req_complete, with the value's binary values as a fourth argument (see
 * nkh_buffers_value). */
static void nkh_req_complete_bufs(nkh_req_t *r, int status, const char *errmsg, const char *str,
                                  size_t len, int32_t count, const kh_buffer_t *bufs,
                                  size_t nbufs) {
  nkh_manager_t *w = r->w;
  napi_env env = w->env;
  napi_handle_scope scope = NULL;
  napi_value argv[4], fn, recv;
  if (w->teardown || r->cb == NULL) goto done;
  NAPI_CALL(env, napi_open_handle_scope(env, &scope));
  if (status == 0) {
    NAPI_CALL(env, napi_get_null(env, &argv[0]));
    NAPI_CALL(env, napi_get_null(env, &argv[1]));
    if (str != NULL)
      NAPI_CALL(env, napi_create_string_utf8(env, str, len, &argv[2]));
    else
      NAPI_CALL(env, napi_create_int32(env, count, &argv[2]));
  } else {
    NAPI_CALL(env, napi_create_string_utf8(env, kh_err_name(status), NAPI_AUTO_LENGTH, &argv[0]));
    NAPI_CALL(env, napi_create_string_utf8(env, errmsg && *errmsg ? errmsg : kh_strerror(status),
                                           NAPI_AUTO_LENGTH, &argv[1]));
    NAPI_CALL(env, napi_get_null(env, &argv[2]));
  }
  NAPI_CALL(env, nkh_buffers_value(env, bufs, status == 0 ? nbufs : 0, &argv[3]));
  NAPI_CALL(env, napi_get_reference_value(env, r->cb, &fn));
  NAPI_CALL(env, napi_get_global(env, &recv));
  NAPI_CALL(env, napi_make_callback(env, w->actx, recv, fn, 4, argv, NULL));
fail:
  nkh_flush_exception(env);
  nkh_scope_close(env, scope);
done:
  nkh_req_free(r);
}

/* --- core callbacks (loop thread) ------------------------------------------------------------ */

static void nkh_manager_on_event(kh_manager_t *m, const kh_event_t *ev, void *data) {
  nkh_manager_t *w = data;
  napi_env env = w->env;
  napi_handle_scope scope = NULL;
  napi_value self, fn, argv[5];
  if (w->teardown || w->js_gone) return;
  NAPI_CALL(env, napi_open_handle_scope(env, &scope));
  NAPI_CALL(env, napi_get_reference_value(env, w->self, &self));
  if (self == NULL) goto fail; /* collected, not yet finalized: nobody can listen any more */
  NAPI_CALL(env, napi_get_reference_value(env, w->on_event, &fn));
  NAPI_CALL(env, napi_create_string_utf8(env, ev->kernel_id, NAPI_AUTO_LENGTH, &argv[0]));
  NAPI_CALL(env, napi_create_string_utf8(env, ev->execution_id, NAPI_AUTO_LENGTH, &argv[1]));
  NAPI_CALL(env, napi_create_string_utf8(env, ev->type_name, NAPI_AUTO_LENGTH, &argv[2]));
  NAPI_CALL(env, napi_create_string_utf8(env, ev->json, ev->json_len, &argv[3]));
  NAPI_CALL(env, nkh_buffers_value(env, ev->buffers, ev->nbuffers, &argv[4]));
  NAPI_CALL(env, napi_make_callback(env, w->actx, self, fn, 5, argv, NULL));
fail:
  nkh_flush_exception(env);
  nkh_scope_close(env, scope);
}

static void nkh_kernel_on_created(kh_manager_t *m, const char *kernel_id, int status,
                                  const char *errmsg, void *data) {
  nkh_req_complete(data, status, errmsg, kernel_id ? kernel_id : "", NAPI_AUTO_LENGTH, 0);
}

static void nkh_kernel_on_executed(kh_manager_t *m, const kh_reply_t *reply, int status,
                                   void *data) {
  if (status == 0 && (reply == NULL || reply->json == NULL)) status = KH_EPROTO;
  nkh_req_complete_bufs(data, status, reply ? reply->errmsg : NULL,
                        status == 0 ? reply->json : NULL, status == 0 ? reply->json_len : 0, 0,
                        status == 0 ? reply->buffers : NULL, status == 0 ? reply->nbuffers : 0);
}

/* Restart, destroy and destroyAll (status >= 0 is the count for destroyAll). */
static void nkh_kernel_on_done(kh_manager_t *m, const char *kernel_id, int status,
                               const char *errmsg, void *data) {
  nkh_req_complete(data, status < 0 ? status : 0, errmsg, NULL, 0, status < 0 ? 0 : status);
}

static void nkh_manager_free(nkh_manager_t *w) {
  nkh_ref_delete(w->env, &w->self);
  nkh_ref_delete(w->env, &w->on_event);
  nkh_ref_delete(w->env, &w->on_hostcall);
  if (w->actx != NULL) NAPI_CALL(w->env, napi_async_destroy(w->env, w->actx));
fail:
  free(w);
}

static void nkh_manager_on_closed(kh_manager_t *m, void *data) {
  nkh_req_t *r = data;
  nkh_manager_t *w = r->w;
  w->m = NULL;
  w->closed = 1;
  nkh_hook_remove(w);
  nkh_req_complete(r, 0, NULL, NULL, 0, 0);
  /* Finalized while the close was under way: nothing else will free it. */
  if (w->js_gone) nkh_manager_free(w);
}

/* --- the wrapper's lifetime ------------------------------------------------------------------ */

static void nkh_hostcall_cancel_all(nkh_manager_t *w);

/* Starts kh_manager_close(). `r` gets the callback, or is NULL when nobody awaits the close
 * (the finalizer, the environment's teardown, a failed constructor). */
static int nkh_manager_close_start(nkh_manager_t *w, nkh_req_t *r) {
  int rc;
  if (r == NULL && (r = nkh_req_new(w, NULL)) == NULL) return KH_ENOMEM;
  nkh_hostcall_cancel_all(w);
  w->closing = 1;
  if ((rc = kh_manager_close(w->m, nkh_manager_on_closed, r)) != 0) {
    nkh_req_free(r);
    return rc;
  }
  return 0;
}

/* The environment (main thread at exit, or a worker thread being terminated) is going away.
 * kh_manager_close() is asynchronous: it needs the loop to deliver the kernel threads' and
 * workers' exits. An async cleanup hook makes Node keep running the loop until the hook is
 * removed, which nkh_manager_on_closed() does. No JS may run from here on. */
static void nkh_manager_on_teardown(napi_async_cleanup_hook_handle handle, void *arg) {
  nkh_manager_t *w = arg;
  w->teardown = 1;
  if (w->closing) return; /* the close under way removes the hook when it completes */
  /* Cannot fail (the manager is open) but for memory: then give Node its hook back rather
   * than make it wait forever. */
  if (nkh_manager_close_start(w, NULL) != 0) nkh_hook_remove(w);
}

static void nkh_manager_finalize(napi_env env, void *data, void *hint) {
  nkh_manager_t *w = data;
  w->js_gone = 1;
  if (w->closed) {
    nkh_manager_free(w);
    return;
  }
  /* Unreachable with no request in flight (each holds the wrapper): close it; the memory goes
   * in on_closed. */
  if (!w->closing) nkh_manager_close_start(w, NULL);
}

/* --- NativeManager methods ------------------------------------------------------------------- */

/* Reads `want` arguments (missing ones read as undefined) and the manager behind `this`; a
 * receiver that is no NativeManager is a TypeError. */
static nkh_manager_t *nkh_this(napi_env env, napi_callback_info info, size_t want,
                               napi_value *argv) {
  size_t argc = want;
  napi_value self;
  bool ours = false;
  nkh_manager_t *w = NULL;
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, &self, NULL));
  if (nkh_expect(env, self, napi_object, "this") != 0) return NULL;
  NAPI_CALL(env, napi_check_object_type_tag(env, self, &nkh_manager_tag, &ours));
  if (!ours) {
    nkh_throw(env, NKH_TYPE_ERROR, NULL, "this must be a NativeManager");
    return NULL;
  }
  NAPI_CALL(env, napi_unwrap(env, self, (void **)&w));
  return w;
fail:
  return NULL;
}

/* Every method but the state getters fails with KH_ECLOSED once close() was called. */
static int nkh_open_check(napi_env env, nkh_manager_t *w) {
  if (!w->closing && w->m != NULL) return 0;
  nkh_throw(env, NKH_ERROR, "KH_ECLOSED", "the manager is closed");
  return -1;
}

/* A new manager that cannot be handed to JS: close it (nothing is in flight and no JS will see
 * it; on_closed frees it from the loop), or free it when the core never made one. */
static void nkh_manager_abandon(nkh_manager_t *w) {
  nkh_hook_remove(w);
  if (w->m == NULL) {
    nkh_manager_free(w);
    return;
  }
  w->js_gone = 1;
  w->teardown = 1;
  if (nkh_manager_close_start(w, NULL) != 0) nkh_manager_free(w); /* out of memory: leak m */
}

/* new NativeManager(optionsJson | null, onEvent, onHostCall) */
static napi_value nkh_manager_new(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], self, target, name;
  nkh_manager_t *w = NULL;
  char *opts = NULL;
  uv_loop_t *loop = NULL;
  int rc;
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, &self, NULL));
  NAPI_CALL(env, napi_get_new_target(env, info, &target));
  if (target == NULL) {
    nkh_throw(env, NKH_TYPE_ERROR, NULL, "NativeManager must be called with new");
    return NULL;
  }
  if (nkh_optstr_get(env, argv[0], "options", &opts) != 0) return NULL;
  if (nkh_expect(env, argv[1], napi_function, "onEvent") != 0) goto fail;
  if (nkh_expect(env, argv[2], napi_function, "onHostCall") != 0) goto fail;
  NAPI_CALL(env, napi_get_uv_event_loop(env, &loop));
  if ((w = calloc(1, sizeof(*w))) == NULL) {
    nkh_throw_kh(env, NULL, KH_ENOMEM);
    goto fail;
  }
  w->env = env;
  if ((rc = kh_manager_new(&w->m, loop, opts)) != 0) {
    const char *detail = kh_manager_errmsg(NULL);
    nkh_throw(env, NKH_ERROR, kh_err_name(rc), *detail ? detail : kh_strerror(rc));
    goto fail;
  }
  /* One subscription for every event of the manager; it ends with the manager, so its id is
   * never needed. */
  if ((rc = kh_subscribe(w->m, NULL, KH_EVENT_ALL, nkh_manager_on_event, w, NULL)) != 0) {
    nkh_throw_kh(env, w, rc);
    goto fail;
  }
  NAPI_CALL(env, napi_create_string_utf8(env, "kernelhost", NAPI_AUTO_LENGTH, &name));
  NAPI_CALL(env, napi_async_init(env, self, name, &w->actx));
  NAPI_CALL(env, napi_create_reference(env, argv[1], 1, &w->on_event));
  NAPI_CALL(env, napi_create_reference(env, argv[2], 1, &w->on_hostcall));
  NAPI_CALL(env, napi_add_async_cleanup_hook(env, nkh_manager_on_teardown, w, &w->hook));
  NAPI_CALL(env, napi_type_tag_object(env, self, &nkh_manager_tag));
  /* Last: from here on the finalizer owns w. */
  NAPI_CALL(env, napi_wrap(env, self, w, nkh_manager_finalize, NULL, &w->self));
  free(opts);
  return self;
fail:
  if (w != NULL) nkh_manager_abandon(w);
  free(opts);
  return NULL;
}

/* createKernel(optionsJson | null, cb(code, msg, id)) -> id, and (connect) connectKernel(remoteId,
 * optionsJson | null, cb(code, msg, id)) -> id, which attaches to the gateway's running kernel
 * remoteId (kh_kernel_connect). */
static napi_value nkh_kernel_start(napi_env env, napi_callback_info info, int connect) {
  napi_value argv[3], out = NULL, *args = connect ? argv + 1 : argv;
  char id[64] = "";
  char *remote = NULL, *opts = NULL;
  nkh_req_t *r;
  nkh_manager_t *w = nkh_this(env, info, connect ? 3 : 2, argv);
  int rc;
  if (w == NULL || nkh_open_check(env, w) != 0) return NULL;
  if (connect && (remote = nkh_str_get(env, argv[0], "remote kernel id", NULL)) == NULL)
    return NULL;
  if (nkh_optstr_get(env, args[0], "options", &opts) != 0) goto fail;
  if ((r = nkh_req_new(w, args[1])) == NULL) goto fail;
  rc = connect ? kh_kernel_connect(w->m, remote, opts, id, sizeof(id), nkh_kernel_on_created, r)
               : kh_kernel_create(w->m, opts, id, sizeof(id), nkh_kernel_on_created, r);
  if (rc != 0) {
    nkh_req_free(r);
    nkh_throw_kh(env, w, rc);
    goto fail;
  }
  NAPI_CALL(env, napi_create_string_utf8(env, id, NAPI_AUTO_LENGTH, &out));
fail:
  free(remote);
  free(opts);
  return out;
}

static napi_value nkh_kernel_create(napi_env env, napi_callback_info info) {
  return nkh_kernel_start(env, info, 0);
}

static napi_value nkh_kernel_connect(napi_env env, napi_callback_info info) {
  return nkh_kernel_start(env, info, 1);
}

/* execute(kernelId, code, silent, storeHistory, stopOnError, timeoutMs, allowStdin, cb)
 *   -> executionId */
static napi_value nkh_kernel_execute(napi_env env, napi_callback_info info) {
  napi_value argv[8], out = NULL;
  char id[NKH_ID_MAX], exec_id[64] = "";
  char *code = NULL;
  size_t len = 0;
  bool silent, store, stop, allow_stdin;
  double timeout;
  kh_execute_options_t o;
  nkh_req_t *r;
  nkh_manager_t *w = nkh_this(env, info, 8, argv);
  int rc;
  if (w == NULL || nkh_open_check(env, w) != 0) return NULL;
  if (nkh_id_get(env, argv[0], id, sizeof(id)) != 0) return NULL;
  if (nkh_expect(env, argv[2], napi_boolean, "silent") != 0 ||
      nkh_expect(env, argv[3], napi_boolean, "storeHistory") != 0 ||
      nkh_expect(env, argv[4], napi_boolean, "stopOnError") != 0 ||
      nkh_expect(env, argv[5], napi_number, "timeout") != 0 ||
      nkh_expect(env, argv[6], napi_boolean, "allowStdin") != 0)
    return NULL;
  NAPI_CALL(env, napi_get_value_bool(env, argv[2], &silent));
  NAPI_CALL(env, napi_get_value_bool(env, argv[3], &store));
  NAPI_CALL(env, napi_get_value_bool(env, argv[4], &stop));
  NAPI_CALL(env, napi_get_value_double(env, argv[5], &timeout));
  NAPI_CALL(env, napi_get_value_bool(env, argv[6], &allow_stdin));
  /* Also false for NaN. 2^53 - 1: the largest integral double, exactly a uint64_t. */
  if (!(timeout >= 0 && timeout <= 9007199254740991.0)) {
    nkh_throw(env, NKH_RANGE_ERROR, NULL, "timeout must be a number of milliseconds >= 0");
    return NULL;
  }
  if (nkh_text_get(env, argv[1], "code", &code, &len) != 0) return NULL;
  if ((r = nkh_req_new(w, argv[7])) == NULL) goto fail;
  kh_execute_options_init(&o);
  o.silent = silent;
  o.store_history = store;
  o.stop_on_error = stop;
  o.timeout_ms = (uint64_t)timeout;
  o.allow_stdin = allow_stdin;
  rc = kh_kernel_execute(w->m, id, code, len, &o, exec_id, sizeof(exec_id), nkh_kernel_on_executed,
                         r);
  if (rc != 0) {
    nkh_req_free(r);
    nkh_throw_kh(env, w, rc);
    goto fail;
  }
  NAPI_CALL(env, napi_create_string_utf8(env, exec_id, NAPI_AUTO_LENGTH, &out));
fail:
  free(code);
  return out;
}

/* --- editor requests ------------------------------------------------------------------------ */

static void nkh_kernel_on_answer(kh_manager_t *m, const char *kernel_id, int status,
                                 const char *json, size_t len, const char *errmsg, void *data) {
  (void)m;
  (void)kernel_id;
  if (status == 0 && json == NULL) status = KH_EPROTO;
  nkh_req_complete(data, status, errmsg, status == 0 ? json : NULL, status == 0 ? len : 0, 0);
}

/* A number argument that must be an integer in [lo, 2^53 - 1]; 0 or -1 (thrown). */
static int nkh_int_get(napi_env env, napi_value v, const char *what, double lo, int64_t *out) {
  double d;
  char msg[96];
  if (nkh_expect(env, v, napi_number, what) != 0) return -1;
  NAPI_CALL(env, napi_get_value_double(env, v, &d));
  if (!(d >= lo && d <= 9007199254740991.0) || d != (double)(int64_t)d) {
    snprintf(msg, sizeof(msg), "%s must be an integer%s", what, lo == 0 ? " >= 0" : "");
    nkh_throw(env, NKH_RANGE_ERROR, NULL, msg);
    return -1;
  }
  *out = (int64_t)d;
  return 0;
fail:
  return -1;
}

/* interact(kernelId, op, code | request JSON, cursorPos, detailLevel, timeout, cb(code, msg,
 * json)): one of the core's editor requests (op "complete", "inspect", "isComplete", "history",
 * "kernelInfo"). cursorPos -1: the end of the code. Range checks beyond the types are the
 * core's (KH_EINVAL), so every layer refuses the same positions. */
static napi_value nkh_kernel_interact(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  char id[NKH_ID_MAX], *op = NULL, *code = NULL;
  size_t len = 0;
  int64_t cursor = -1, detail = 0, timeout = 0;
  nkh_req_t *r = NULL;
  nkh_manager_t *w = nkh_this(env, info, 7, argv);
  int rc;
  if (w == NULL || nkh_open_check(env, w) != 0) return NULL;
  if (nkh_id_get(env, argv[0], id, sizeof(id)) != 0) return NULL;
  if (nkh_optstr_get(env, argv[1], "op", &op) != 0) return NULL;
  if (nkh_int_get(env, argv[3], "cursorPos", -(9007199254740991.0), &cursor) != 0 ||
      nkh_int_get(env, argv[4], "detailLevel", -(9007199254740991.0), &detail) != 0 ||
      nkh_int_get(env, argv[5], "timeout", 0, &timeout) != 0 ||
      nkh_text_get(env, argv[2], "code", &code, &len) != 0)
    goto fail;
  if ((r = nkh_req_new(w, argv[6])) == NULL) goto fail;
  if (op == NULL)
    rc = KH_EINVAL;
  else if (strcmp(op, "complete") == 0)
    rc =
        kh_kernel_complete(w->m, id, code, len, cursor, (uint64_t)timeout, nkh_kernel_on_answer, r);
  else if (strcmp(op, "inspect") == 0)
    rc = kh_kernel_inspect(w->m, id, code, len, cursor,
                           detail < INT32_MIN || detail > INT32_MAX ? -1 : (int)detail,
                           (uint64_t)timeout, nkh_kernel_on_answer, r);
  else if (strcmp(op, "isComplete") == 0)
    rc = kh_kernel_is_complete(w->m, id, code, len, (uint64_t)timeout, nkh_kernel_on_answer, r);
  else if (strcmp(op, "history") == 0)
    rc = kh_kernel_history(w->m, id, code, nkh_kernel_on_answer, r);
  else if (strcmp(op, "kernelInfo") == 0)
    rc = kh_kernel_kernel_info(w->m, id, (uint64_t)timeout, nkh_kernel_on_answer, r);
  else
    rc = KH_EINVAL;
  if (rc != 0) {
    nkh_req_free(r);
    nkh_throw_kh(env, w, rc);
  }
fail:
  free(op);
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
#define NKH_COMM_BUFS_MAX 64

/* The bytes of a Buffer, TypedArray, DataView or ArrayBuffer (valid while v is alive: for the
 * call). Returns 0, or -1 with a TypeError thrown for anything else. */
static int nkh_bytes_get(napi_env env, napi_value v, const void **data, size_t *len) {
  bool is = false;
  void *p = NULL;
  size_t n = 0, off = 0, count = 0;
  napi_typedarray_type t;
  napi_value ab;
  NAPI_CALL(env, napi_is_buffer(env, v, &is));
  if (is) {
    NAPI_CALL(env, napi_get_buffer_info(env, v, &p, &n));
    goto done;
  }
  NAPI_CALL(env, napi_is_typedarray(env, v, &is));
  if (is) {
    NAPI_CALL(env, napi_get_typedarray_info(env, v, &t, &count, &p, &ab, &off));
    if (t == napi_int8_array || t == napi_uint8_array || t == napi_uint8_clamped_array)
      n = count;
    else if (t == napi_int16_array || t == napi_uint16_array)
      n = count * 2;
    else if (t == napi_int32_array || t == napi_uint32_array || t == napi_float32_array)
      n = count * 4;
    else
      n = count * 8; /* float64, bigint64, biguint64 */
    goto done;
  }
  NAPI_CALL(env, napi_is_dataview(env, v, &is));
  if (is) {
    NAPI_CALL(env, napi_get_dataview_info(env, v, &n, &p, &ab, &off));
    goto done;
  }
  NAPI_CALL(env, napi_is_arraybuffer(env, v, &is));
  if (is) {
    NAPI_CALL(env, napi_get_arraybuffer_info(env, v, &p, &n));
    goto done;
  }
  nkh_throw(env, NKH_TYPE_ERROR, NULL,
            "comm buffers must be Buffers, TypedArrays, DataViews or ArrayBuffers");
  return -1;
done:
  *data = n ? p : "";
  *len = n;
  return 0;
fail:
  return -1;
}

/* commSend(kernelId, msgType, contentJson, buffers?): kh_kernel_comm_send; throws on failure.
 * The content is the facade's JSON.stringify() output, converted exactly (nkh_text_get); buffers
 * (an array, or undefined) go beside it at "/buffers/N". */
static napi_value nkh_kernel_comm_send(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  char id[NKH_ID_MAX];
  char *type = NULL, *content = NULL;
  size_t len = 0, nb = 0, i;
  kh_buffer_t bufs[NKH_COMM_BUFS_MAX];
  char paths[NKH_COMM_BUFS_MAX][32];
  nkh_manager_t *w = nkh_this(env, info, 4, argv);
  napi_valuetype t;
  int rc;
  if (w == NULL || nkh_open_check(env, w) != 0) return NULL;
  if (nkh_id_get(env, argv[0], id, sizeof(id)) != 0) return NULL;
  NAPI_CALL(env, napi_typeof(env, argv[3], &t));
  if (t != napi_undefined) {
    bool arr = false;
    uint32_t n = 0;
    NAPI_CALL(env, napi_is_array(env, argv[3], &arr));
    if (arr) NAPI_CALL(env, napi_get_array_length(env, argv[3], &n));
    if (!arr || n > NKH_COMM_BUFS_MAX) {
      nkh_throw(env, arr ? NKH_RANGE_ERROR : NKH_TYPE_ERROR, NULL,
                arr ? "a comm message carries at most 64 buffers"
                    : "comm option buffers must be an array");
      return NULL;
    }
    for (i = 0; i < n; i++) {
      napi_value v;
      NAPI_CALL(env, napi_get_element(env, argv[3], (uint32_t)i, &v));
      if (nkh_bytes_get(env, v, &bufs[i].data, &bufs[i].len) != 0) return NULL;
      snprintf(paths[i], sizeof(paths[i]), "/buffers/%zu", i);
      bufs[i].path = paths[i];
    }
    nb = n;
  }
  if ((type = nkh_str_get(env, argv[1], "msgType", NULL)) == NULL) return NULL;
  if (nkh_text_get(env, argv[2], "content", &content, &len) != 0) {
    free(type);
    return NULL;
  }
  rc = kh_kernel_comm_send(w->m, id, type, content, len, nb ? bufs : NULL, nb);
  free(type);
  free(content);
  if (rc != 0) nkh_throw_kh(env, w, rc);
  return NULL;
fail:
  return NULL;
}

static napi_value nkh_kernel_input_reply(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  char id[NKH_ID_MAX];
  char *value;
  size_t len;
  nkh_manager_t *w = nkh_this(env, info, 2, argv);
  int rc;
  if (w == NULL || nkh_open_check(env, w) != 0) return NULL;
  if (nkh_id_get(env, argv[0], id, sizeof(id)) != 0) return NULL;
  if (nkh_text_get(env, argv[1], "value", &value, &len) != 0) return NULL;
  rc = kh_kernel_input_reply(w->m, id, value, len); /* all of it: "ab\0cd" is 5 bytes */
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
    nkh_req_free(r);
    nkh_throw_kh(env, w, rc);
    return NULL;
  }
  return NULL;
}

static napi_value nkh_kernel_restart(napi_env env, napi_callback_info info) {
  return nkh_kernel_done_op(env, info, 0);
}

static napi_value nkh_kernel_destroy(napi_env env, napi_callback_info info) {
  return nkh_kernel_done_op(env, info, 1);
}

/* A call of the manager with one string argument `what` (null: NULL), or none when `what` is
 * NULL, that completes through cb, its last argument. */
typedef int (*nkh_str_op_t)(kh_manager_t *m, const char *arg, nkh_req_t *r);

static napi_value nkh_manager_str_call(napi_env env, napi_callback_info info, const char *what,
                                       nkh_str_op_t op) {
  napi_value argv[2];
  char *arg = NULL;
  nkh_req_t *r;
  size_t argc = what != NULL ? 2 : 1;
  nkh_manager_t *w = nkh_this(env, info, argc, argv);
  int rc;
  if (w == NULL || nkh_open_check(env, w) != 0) return NULL;
  if (what != NULL && nkh_optstr_get(env, argv[0], what, &arg) != 0) return NULL;
  if ((r = nkh_req_new(w, argv[argc - 1])) != NULL && (rc = op(w->m, arg, r)) != 0) {
    nkh_req_free(r);
    nkh_throw_kh(env, w, rc);
  }
  free(arg);
  return NULL;
}

static int nkh_op_destroy_all(kh_manager_t *m, const char *ns, nkh_req_t *r) {
  return kh_manager_destroy_all(m, ns, nkh_kernel_on_done, r);
}

static int nkh_op_gateway_list(kh_manager_t *m, const char *what, nkh_req_t *r) {
  return kh_gateway_list(m, what, nkh_kernel_on_answer, r);
}

/* destroyAll(namespace | null, cb(code, msg, count)) */
static napi_value nkh_manager_destroy_all(napi_env env, napi_callback_info info) {
  return nkh_manager_str_call(env, info, "namespace", nkh_op_destroy_all);
}

/* gatewayList(what, cb(code, msg, json)): the gateway's "kernels" or "kernelspecs"
 * (kh_gateway_list), answered like an editor request. */
static napi_value nkh_gateway_list(napi_env env, napi_callback_info info) {
  return nkh_manager_str_call(env, info, "what", nkh_op_gateway_list);
}

static int nkh_op_pool_ready(kh_manager_t *m, const char *none, nkh_req_t *r) {
  (void)none;
  return kh_manager_pool_ready(m, nkh_kernel_on_answer, r);
}

/* poolReady(cb(code, msg, json)): the pool's info once it has settled (kh_manager_pool_ready),
 * answered like an editor request; KH_ENOTSUP (no pool) is thrown. */
static napi_value nkh_manager_pool_ready(napi_env env, napi_callback_info info) {
  return nkh_manager_str_call(env, info, NULL, nkh_op_pool_ready);
}

/* kernelMode(kernelId) -> "worker" | "main_thread" | "remote" | null */
static napi_value nkh_kernel_mode(napi_env env, napi_callback_info info) {
  napi_value argv[1], out = NULL;
  char id[NKH_ID_MAX];
  const char *mode = NULL;
  nkh_manager_t *w = nkh_this(env, info, 1, argv);
  if (w == NULL) return NULL;
  if (nkh_id_get(env, argv[0], id, sizeof(id)) != 0) return NULL;
  if (w->m == NULL || w->closing || !kh_kernel_exists(w->m, id, &mode))
    NAPI_CALL(env, napi_get_null(env, &out));
  else
    NAPI_CALL(env, napi_create_string_utf8(env, mode, NAPI_AUTO_LENGTH, &out));
fail:
  return out;
}

/* An owned JSON string from the core as a JS string (NULL: null), freed here. */
static napi_value nkh_owned_json(napi_env env, char *s) {
  napi_value out = NULL;
  if (s == NULL)
    NAPI_CALL(env, napi_get_null(env, &out));
  else
    NAPI_CALL(env, napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &out));
fail:
  kh_free(s);
  return out;
}

/* list(namespace | null) -> JSON text */
static napi_value nkh_manager_list(napi_env env, napi_callback_info info) {
  napi_value argv[1], out = NULL;
  char *ns = NULL;
  nkh_manager_t *w = nkh_this(env, info, 1, argv);
  if (w == NULL) return NULL;
  if (nkh_optstr_get(env, argv[0], "namespace", &ns) != 0) return NULL;
  if (w->m == NULL || w->closing)
    NAPI_CALL(env, napi_create_string_utf8(env, "[]", NAPI_AUTO_LENGTH, &out));
  else
    out = nkh_owned_json(env, kh_manager_list(w->m, ns));
fail:
  free(ns);
  return out;
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

/* --- host functions -------------------------------------------------------------------------- */

/* A call of a host function, owned by the JS external the facade answers through
 * (hostReturn/hostError). Its memory goes with the external's finalizer; while unanswered it is
 * also linked into w->calls, so that close answers what the host never will.
 *
 *   call set,  w set     pending: the facade has the external
 *   call NULL, w NULL    answered (by the facade, the finalizer, or close): inert
 *
 * The core keeps kh_hostcall_t valid until it is answered, whatever happens to the kernel, so
 * every path answers exactly once: hostReturn/hostError, close (KH_ECANCELED for the host's
 * late answer) or the finalizer (an external collected unanswered: the cell gets HostError). */
struct nkh_call_s {
  kh_hostcall_t *call;
  nkh_manager_t *w;
  nkh_call_t *prev, *next;
  int canceled; /* answered by close, not by the host */
  char name[];  /* the function's name, for messages */
};

static const napi_type_tag nkh_call_tag = {0x6b65726e656c686fULL, 0x7374486f737443ULL};

#define NKH_HOST_DEPTH 64  /* deeper values are refused: a cycle is caught first, by identity */
#define NKH_HOST_PATH 512  /* the JSON Pointer of the value being converted */
#define NKH_SAFE_INT 9007199254740991.0 /* 2^53 - 1: beyond it a JS number is no exact integer */

/* Takes c's call for answering: unlinks it. NULL when it was answered already. */
static kh_hostcall_t *nkh_call_take(nkh_call_t *c) {
  kh_hostcall_t *call = c->call;
  nkh_manager_t *w = c->w;
  if (call == NULL) return NULL;
  if (c->prev != NULL)
    c->prev->next = c->next;
  else if (w != NULL)
    w->calls = c->next;
  if (c->next != NULL) c->next->prev = c->prev;
  c->prev = c->next = NULL;
  c->call = NULL;
  c->w = NULL;
  return call;
}

/* Close: the host's answers can no longer reach the core after it, so the calls get theirs
 * now; the facade's late answer then learns KH_ECANCELED, as after an interrupt. */
static void nkh_hostcall_cancel_all(nkh_manager_t *w) {
  while (w->calls != NULL) {
    nkh_call_t *c = w->calls;
    kh_hostcall_t *call = nkh_call_take(c);
    c->canceled = 1;
    (void)kh_hostcall_error(call, "the host's kernelhost manager was closed");
  }
}

static void nkh_call_finalize(napi_env env, void *data, void *hint) {
  nkh_call_t *c = data;
  kh_hostcall_t *call = nkh_call_take(c);
  char msg[256];
  if (call != NULL) {
    snprintf(msg, sizeof(msg), "host function \"%.100s\" never answered (its call was dropped)",
             c->name);
    (void)kh_hostcall_error(call, msg);
  }
  free(c);
}

/* --- JSON and buffers -> JS values (a call's arguments) --- */

/* Each buffer's null is replaced by a fresh empty object (jansson's null is one shared value;
 * an object has an address of its own), which the conversion finds again and makes a Buffer. */
typedef struct {
  json_t **marks;
  const kh_buffer_t *buffers;
  size_t n;
} nkh_marks_t;

/* The next RFC 6901 token of *p (after its '/'), unescaped into tok: 1, 0 at the end of the
 * pointer, -1 when it is malformed or too long. */
static int nkh_ptr_token(const char **p, char *tok, size_t size) {
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

/* Replaces the null at `path` in root with `mark` (stolen); 0, or -1 when the path leads to no
 * null (the core checks its own buffers, so that is a protocol error). */
static int nkh_ptr_mark(json_t *root, const char *path, json_t *mark) {
  char tok[NKH_HOST_PATH], *end;
  json_t *parent = NULL, *cur = root;
  long index = -1;
  int r;
  while ((r = nkh_ptr_token(&path, tok, sizeof(tok))) == 1) {
    parent = cur;
    if (json_is_array(cur)) {
      if (tok[0] < '0' || tok[0] > '9' || (tok[0] == '0' && tok[1] != '\0')) break;
      index = strtol(tok, &end, 10);
      cur = *end == '\0' ? json_array_get(cur, (size_t)index) : NULL;
    } else {
      cur = json_is_object(cur) ? json_object_get(cur, tok) : NULL;
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

/* j as a JS value: null, booleans, numbers (integers beyond 2^53 as BigInt, so that none is
 * rounded), strings, arrays, objects (own properties, "__proto__" included, as JSON.parse
 * makes them), and the marked buffers as Buffers. NULL: an exception is pending. */
static napi_value nkh_host_to_js(napi_env env, json_t *j, const nkh_marks_t *mk) {
  napi_value out = NULL, v;
  size_t i;
  switch (json_typeof(j)) {
    case JSON_OBJECT: {
      const char *k;
      json_t *x;
      for (i = 0; i < mk->n; i++) {
        if (mk->marks[i] == j) {
          const kh_buffer_t *b = &mk->buffers[i];
          void *copy;
          NAPI_CALL(env, napi_create_buffer_copy(env, b->len, b->len ? b->data : "", &copy, &out));
          return out;
        }
      }
      NAPI_CALL(env, napi_create_object(env, &out));
      json_object_foreach(j, k, x) {
        napi_property_descriptor d = {NULL, NULL, NULL, NULL, NULL, NULL,
                                      napi_writable | napi_enumerable | napi_configurable, NULL};
        NAPI_CALL(env, napi_create_string_utf8(env, k, NAPI_AUTO_LENGTH, &d.name));
        if ((d.value = nkh_host_to_js(env, x, mk)) == NULL) return NULL;
        /* defined, not set: a "__proto__" key must not replace the prototype */
        NAPI_CALL(env, napi_define_properties(env, out, 1, &d));
      }
      return out;
    }
    case JSON_ARRAY: {
      json_t *x;
      NAPI_CALL(env, napi_create_array_with_length(env, json_array_size(j), &out));
      json_array_foreach(j, i, x) {
        if ((v = nkh_host_to_js(env, x, mk)) == NULL) return NULL;
        NAPI_CALL(env, napi_set_element(env, out, (uint32_t)i, v));
      }
      return out;
    }
    case JSON_STRING:
      NAPI_CALL(env, napi_create_string_utf8(env, json_string_value(j), json_string_length(j), &out));
      return out;
    case JSON_INTEGER: {
      json_int_t x = json_integer_value(j);
      if (x >= -(json_int_t)NKH_SAFE_INT && x <= (json_int_t)NKH_SAFE_INT)
        NAPI_CALL(env, napi_create_int64(env, (int64_t)x, &out));
      else
        NAPI_CALL(env, napi_create_bigint_int64(env, (int64_t)x, &out));
      return out;
    }
    case JSON_REAL:
      NAPI_CALL(env, napi_create_double(env, json_real_value(j), &out));
      return out;
    case JSON_TRUE:
    case JSON_FALSE:
      NAPI_CALL(env, napi_get_boolean(env, json_is_true(j), &out));
      return out;
    default:
      NAPI_CALL(env, napi_get_null(env, &out));
      return out;
  }
fail:
  return NULL;
}

/* --- JS values -> JSON and buffers (an answer) --- */

typedef struct {
  napi_env env;
  kh_buffer_t *bufs; /* paths owned (malloc), data borrowed from the JS value being converted */
  size_t n, cap;
  char path[NKH_HOST_PATH];
  size_t plen;
  napi_value seen[NKH_HOST_DEPTH]; /* the objects being converted, outermost first */
  int depth;
  napi_value map_ctor, set_ctor; /* looked up once an object needs them */
  char err[NKH_HOST_PATH + 200];
  char msg[NKH_HOST_PATH + 360]; /* the whole message, as HostError carries it */
} nkh_enc_t;

static void nkh_enc_free(nkh_enc_t *e) {
  size_t i;
  for (i = 0; i < e->n; i++) free((char *)e->bufs[i].path);
  free(e->bufs);
  e->bufs = NULL;
  e->n = e->cap = 0;
}

/* Records why the value cannot go; returns NULL, the conversion's failure. */
static json_t *nkh_enc_fail(nkh_enc_t *e, const char *what) {
  if (e->err[0] != '\0') return NULL; /* the innermost reason is kept */
  if (e->plen)
    snprintf(e->err, sizeof(e->err), "%s at %s", what, e->path);
  else
    snprintf(e->err, sizeof(e->err), "%s (the whole value)", what);
  return NULL;
}

/* A napi call failed inside the conversion: a getter or a Proxy trap threw, most likely. The
 * exception is the host's, but it has no JS caller here: it becomes the reason. */
static json_t *nkh_enc_napi_fail(nkh_enc_t *e) {
  napi_value exc, s;
  bool pending = false;
  char buf[200] = "reading the value failed";
  size_t n;
  if (napi_is_exception_pending(e->env, &pending) == napi_ok && pending &&
      napi_get_and_clear_last_exception(e->env, &exc) == napi_ok &&
      napi_coerce_to_string(e->env, exc, &s) == napi_ok &&
      napi_get_value_string_utf8(e->env, s, buf + 26, sizeof(buf) - 26, &n) == napi_ok)
    memcpy(buf + 24, ": ", 2);
  return nkh_enc_fail(e, buf);
}

/* Strict UTF-16 -> UTF-8 (a lone surrogate fails, as it does for cell code: V8's own
 * conversion would replace it silently). Returns a malloc'd string, or NULL with *bad set. */
static char *nkh_utf16_to_utf8(const char16_t *u, size_t n, size_t *out_len, int *bad) {
  unsigned char *s = malloc(n * 3 + 1);
  size_t i, o = 0;
  *bad = 0;
  if (s == NULL) return NULL;
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
        free(s);
        *bad = 1;
        return NULL;
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
  *out_len = o;
  return (char *)s;
}

/* The JS string v as malloc'd UTF-8; NULL with the reason recorded. */
static char *nkh_enc_string(nkh_enc_t *e, napi_value v, size_t *len) {
  char16_t small[256], *u = small;
  size_t n = 0;
  char *s = NULL;
  int bad = 0;
  if (napi_get_value_string_utf16(e->env, v, NULL, 0, &n) != napi_ok) goto fail;
  if (n >= sizeof(small) / sizeof(small[0]) && (u = malloc((n + 1) * sizeof(*u))) == NULL) {
    nkh_enc_fail(e, "out of memory");
    return NULL;
  }
  if (napi_get_value_string_utf16(e->env, v, u, n + 1, &n) != napi_ok) goto fail;
  s = nkh_utf16_to_utf8(u, n, len, &bad);
  if (s == NULL) nkh_enc_fail(e, bad ? "a string with a lone surrogate (not valid Unicode)"
                                     : "out of memory");
  if (u != small) free(u);
  return s;
fail:
  if (u != small) free(u);
  nkh_enc_napi_fail(e);
  return NULL;
}

/* Appends one token (escaped per RFC 6901) to the path; 0, or -1 when it grows too long. */
static int nkh_enc_push_path(nkh_enc_t *e, const char *tok, size_t len) {
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

static json_t *nkh_enc_value(nkh_enc_t *e, napi_value v, int *omit);

/* A value one level down, at token `tok`; on failure the path stays where it failed. */
static json_t *nkh_enc_child(nkh_enc_t *e, napi_value v, const char *tok, size_t len, int *omit) {
  size_t saved = e->plen;
  json_t *j;
  if (nkh_enc_push_path(e, tok, len) != 0) return nkh_enc_fail(e, "the value nests too deeply");
  j = nkh_enc_value(e, v, omit);
  if (j != NULL || (omit != NULL && *omit)) {
    e->plen = saved;
    e->path[saved] = '\0';
  }
  return j;
}

/* Bytes at the current path: a buffer beside the JSON, null inside it. */
static json_t *nkh_enc_bytes(nkh_enc_t *e, const void *data, size_t len) {
  if (e->n == e->cap) {
    size_t cap = e->cap ? e->cap * 2 : 4;
    kh_buffer_t *b = realloc(e->bufs, cap * sizeof(*b));
    if (b == NULL) return nkh_enc_fail(e, "out of memory");
    e->bufs = b;
    e->cap = cap;
  }
  if ((e->bufs[e->n].path = strdup(e->path)) == NULL) return nkh_enc_fail(e, "out of memory");
  e->bufs[e->n].data = data;
  e->bufs[e->n].len = len;
  e->n++;
  return json_null();
}

/* An object that is neither an array nor binary: refused kinds first, then own enumerable
 * string-keyed properties, as JSON.stringify takes them (undefined and function values
 * omitted there would hide a mistake: functions fail, undefined is left out). */
static json_t *nkh_enc_object(nkh_enc_t *e, napi_value v) {
  napi_env env = e->env;
  napi_value keys, key, x, global;
  uint32_t n, i;
  bool is = false;
  json_t *out = NULL, *j;
  if (napi_is_date(env, v, &is) != napi_ok) return nkh_enc_napi_fail(e);
  if (is) return nkh_enc_fail(e, "a Date (pass date.toISOString() or a number)");
  if (napi_is_promise(env, v, &is) != napi_ok) return nkh_enc_napi_fail(e);
  if (is) return nkh_enc_fail(e, "a Promise inside the value (await it first)");
  if (e->map_ctor == NULL) {
    if (napi_get_global(env, &global) != napi_ok ||
        napi_get_named_property(env, global, "Map", &e->map_ctor) != napi_ok ||
        napi_get_named_property(env, global, "Set", &e->set_ctor) != napi_ok)
      return nkh_enc_napi_fail(e);
  }
  if (napi_instanceof(env, v, e->map_ctor, &is) != napi_ok) return nkh_enc_napi_fail(e);
  if (is) return nkh_enc_fail(e, "a Map (pass Object.fromEntries(map))");
  if (napi_instanceof(env, v, e->set_ctor, &is) != napi_ok) return nkh_enc_napi_fail(e);
  if (is) return nkh_enc_fail(e, "a Set (pass [...set])");
  if (napi_get_all_property_names(env, v, napi_key_own_only,
                                  napi_key_enumerable | napi_key_skip_symbols,
                                  napi_key_numbers_to_strings, &keys) != napi_ok ||
      napi_get_array_length(env, keys, &n) != napi_ok)
    return nkh_enc_napi_fail(e);
  if ((out = json_object()) == NULL) return nkh_enc_fail(e, "out of memory");
  for (i = 0; i < n; i++) {
    size_t klen;
    char *k;
    int omit = 0;
    if (napi_get_element(env, keys, i, &key) != napi_ok ||
        napi_get_property(env, v, key, &x) != napi_ok) {
      nkh_enc_napi_fail(e);
      goto fail;
    }
    if ((k = nkh_enc_string(e, key, &klen)) == NULL) goto fail;
    j = nkh_enc_child(e, x, k, klen, &omit);
    if (j == NULL && !omit) {
      free(k);
      goto fail;
    }
    if (j != NULL && json_object_setn_new(out, k, klen, j) != 0) {
      free(k);
      nkh_enc_fail(e, "out of memory");
      goto fail;
    }
    free(k);
  }
  return out;
fail:
  json_decref(out);
  return NULL;
}

/* v as JSON. In an object, undefined makes *omit set (omit NULL: null instead, as in an array
 * or at the top, where undefined is None). */
static json_t *nkh_enc_value(nkh_enc_t *e, napi_value v, int *omit) {
  napi_env env = e->env;
  napi_valuetype t;
  bool is = false;
  json_t *out = NULL;
  int d;
  if (napi_typeof(env, v, &t) != napi_ok) return nkh_enc_napi_fail(e);
  switch (t) {
    case napi_undefined:
      if (omit != NULL) {
        *omit = 1;
        return NULL;
      }
      return json_null();
    case napi_null:
      return json_null();
    case napi_boolean: {
      bool b;
      if (napi_get_value_bool(env, v, &b) != napi_ok) return nkh_enc_napi_fail(e);
      return json_boolean(b);
    }
    case napi_number: {
      double x;
      if (napi_get_value_double(env, v, &x) != napi_ok) return nkh_enc_napi_fail(e);
      if (x != x) return nkh_enc_fail(e, "NaN (JSON has no NaN or Infinity)");
      if (x > 1.7976931348623157e308 || x < -1.7976931348623157e308)
        return nkh_enc_fail(e, x > 0 ? "Infinity (JSON has no NaN or Infinity)"
                                     : "-Infinity (JSON has no NaN or Infinity)");
      /* JS has one number type: an integral value within 2^53 is an int in Python. */
      if (x >= -NKH_SAFE_INT && x <= NKH_SAFE_INT && x == (double)(int64_t)x)
        return json_integer((json_int_t)x);
      return json_real(x);
    }
    case napi_bigint: {
      int64_t x;
      bool lossless = false;
      if (napi_get_value_bigint_int64(env, v, &x, &lossless) != napi_ok)
        return nkh_enc_napi_fail(e);
      if (!lossless) return nkh_enc_fail(e, "a BigInt beyond int64");
      return json_integer((json_int_t)x);
    }
    case napi_string: {
      size_t len;
      char *s = nkh_enc_string(e, v, &len);
      if (s == NULL) return NULL;
      out = json_stringn_nocheck(s, len);
      free(s);
      return out != NULL ? out : nkh_enc_fail(e, "out of memory");
    }
    case napi_symbol:
      return nkh_enc_fail(e, "a Symbol");
    case napi_function:
      return nkh_enc_fail(e, "a function");
    case napi_external:
      return nkh_enc_fail(e, "a native external value");
    case napi_object:
      break;
  }
  /* Binary: Buffer, any typed array or DataView, ArrayBuffer: its bytes. */
  if (napi_is_typedarray(env, v, &is) != napi_ok) return nkh_enc_napi_fail(e);
  if (is) {
    napi_typedarray_type tt;
    size_t length, offset;
    void *data;
    napi_value ab;
    if (napi_get_typedarray_info(env, v, &tt, &length, &data, &ab, &offset) != napi_ok)
      return nkh_enc_napi_fail(e);
    static const size_t width[] = {1, 1, 1, 2, 2, 4, 4, 4, 8, 8, 8};
    return nkh_enc_bytes(e, data, length * ((size_t)tt < sizeof(width) / sizeof(width[0])
                                                ? width[tt] : 1));
  }
  if (napi_is_dataview(env, v, &is) != napi_ok) return nkh_enc_napi_fail(e);
  if (is) {
    size_t length, offset;
    void *data;
    napi_value ab;
    if (napi_get_dataview_info(env, v, &length, &data, &ab, &offset) != napi_ok)
      return nkh_enc_napi_fail(e);
    return nkh_enc_bytes(e, data, length);
  }
  if (napi_is_arraybuffer(env, v, &is) != napi_ok) return nkh_enc_napi_fail(e);
  if (is) {
    size_t length;
    void *data;
    if (napi_get_arraybuffer_info(env, v, &data, &length) != napi_ok) return nkh_enc_napi_fail(e);
    return nkh_enc_bytes(e, data, length);
  }
  /* A container: refused when it is one of those being converted (a cycle). */
  for (d = 0; d < e->depth; d++) {
    bool same = false;
    if (napi_strict_equals(env, v, e->seen[d], &same) != napi_ok) return nkh_enc_napi_fail(e);
    if (same) return nkh_enc_fail(e, "an object that contains itself (a cycle)");
  }
  if (e->depth >= NKH_HOST_DEPTH) return nkh_enc_fail(e, "objects nested too deeply");
  e->seen[e->depth++] = v;
  if (napi_is_array(env, v, &is) != napi_ok) {
    nkh_enc_napi_fail(e);
  } else if (is) {
    uint32_t n, i;
    char tok[16];
    napi_value x;
    json_t *j;
    if (napi_get_array_length(env, v, &n) != napi_ok) {
      nkh_enc_napi_fail(e);
    } else if ((out = json_array()) == NULL) {
      nkh_enc_fail(e, "out of memory");
    } else {
      for (i = 0; i < n; i++) {
        snprintf(tok, sizeof(tok), "%u", i);
        if (napi_get_element(env, v, i, &x) != napi_ok) {
          nkh_enc_napi_fail(e);
          break;
        }
        j = nkh_enc_child(e, x, tok, strlen(tok), NULL);
        if (j == NULL || json_array_append_new(out, j) != 0) break;
      }
      if (i < n) {
        json_decref(out);
        out = NULL;
      }
    }
  } else {
    out = nkh_enc_object(e, v);
  }
  e->depth--;
  return out;
}

/* Answers call with the JS value v. 0, or the core's code; KH_EINVAL when v cannot go to
 * Python: then the call was answered with an error that says why (*why, borrowed from e). */
static int nkh_host_answer(nkh_enc_t *e, napi_value v, kh_hostcall_t *call, const char *name,
                           kh_manager_t *m, const char **why) {
  json_t *j;
  char *text = NULL;
  int rc;
  *why = NULL;
  j = nkh_enc_value(e, v, NULL);
  if (j == NULL) {
    nkh_enc_free(e);
    snprintf(e->msg, sizeof(e->msg), "host function \"%.100s\" answered with a value Python "
             "cannot take: %s", name, e->err[0] ? e->err : "unknown reason");
    *why = e->msg;
    (void)kh_hostcall_error(call, e->msg);
    return KH_EINVAL;
  }
  text = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
  json_decref(j);
  if (text == NULL) {
    nkh_enc_free(e);
    (void)kh_hostcall_error(call, "out of memory");
    return KH_ENOMEM;
  }
  rc = kh_hostcall_return(call, text, strlen(text), e->bufs, e->n);
  free(text);
  nkh_enc_free(e);
  if (rc == KH_EINVAL) {
    /* The core refused the value and left the call unanswered: every value was checked above,
     * so this is no fault of the host's, but the cell must still get an answer. */
    snprintf(e->msg, sizeof(e->msg), "host function \"%.100s\": kernelhost could not pass its "
             "value to Python: %.300s", name, m != NULL ? kh_manager_errmsg(m) : "");
    *why = e->msg;
    (void)kh_hostcall_error(call, e->msg);
  }
  return rc;
}

/* --- the call's way through JS --- */

/* The core's host function, for every name the facade exposed: hands (kernelId, name, args,
 * call) to the facade's dispatcher, `this` the wrapper, which finds the JS function and answers
 * through hostReturn/hostError, now or when its Promise settles. */
static void nkh_on_hostcall(kh_manager_t *m, const char *kernel_id, const char *name,
                            const char *args_json, size_t args_len, const kh_buffer_t *buffers,
                            size_t nbuffers, kh_hostcall_t *call, void *data) {
  nkh_manager_t *w = data;
  napi_env env = w->env;
  napi_handle_scope scope = NULL;
  napi_value self, fn, argv[4];
  json_t *args = NULL, **marks = NULL;
  nkh_marks_t mk = {NULL, buffers, 0};
  nkh_call_t *c = NULL;
  const char *why = "the Node host is closing";
  size_t i, n;
  int handed = 0; /* the external owns c */
  bool pending = false;
  (void)m;
  if (w->teardown || w->js_gone || w->closing || w->on_hostcall == NULL) goto done;
  why = "kernelhost: the call's arguments are not a JSON array";
  if (!json_is_array(args = json_loadb(args_json, args_len, JSON_ALLOW_NUL, NULL))) goto done;
  if (nbuffers > 0) {
    why = "out of memory";
    if ((marks = calloc(nbuffers, sizeof(*marks))) == NULL) goto done;
    why = "kernelhost: a buffer of the call leads to no null in its arguments";
    for (i = 0; i < nbuffers; i++) /* args owns each mark (stolen); its address stays valid */
      if ((marks[i] = json_object()) == NULL || nkh_ptr_mark(args, buffers[i].path, marks[i]) != 0)
        goto done;
    mk.marks = marks;
    mk.n = nbuffers;
  }
  n = strlen(name);
  why = "out of memory";
  if ((c = calloc(1, sizeof(*c) + n + 1)) == NULL) goto done;
  memcpy(c->name, name, n + 1);
  why = "kernelhost: the Node host could not take the call";
  NAPI_CALL(env, napi_open_handle_scope(env, &scope));
  NAPI_CALL(env, napi_get_reference_value(env, w->self, &self));
  if (self == NULL) goto fail; /* collected, not yet finalized */
  NAPI_CALL(env, napi_get_reference_value(env, w->on_hostcall, &fn));
  NAPI_CALL(env, napi_create_string_utf8(env, kernel_id, NAPI_AUTO_LENGTH, &argv[0]));
  NAPI_CALL(env, napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &argv[1]));
  if ((argv[2] = nkh_host_to_js(env, args, &mk)) == NULL) goto fail;
  NAPI_CALL(env, napi_create_external(env, c, nkh_call_finalize, NULL, &argv[3]));
  handed = 1;
  c->call = call;
  c->w = w;
  c->next = w->calls;
  if (w->calls != NULL) w->calls->prev = c;
  w->calls = c;
  call = NULL;
  NAPI_CALL(env, napi_type_tag_object(env, argv[3], &nkh_call_tag));
  NAPI_CALL(env, napi_make_callback(env, w->actx, self, fn, 4, argv, NULL));
fail:
  /* The facade answers or keeps the call; a dispatcher that threw did neither. */
  if (handed && napi_is_exception_pending(env, &pending) == napi_ok && pending)
    call = nkh_call_take(c);
  nkh_flush_exception(env);
  nkh_scope_close(env, scope);
done:
  if (call != NULL) (void)kh_hostcall_error(call, why);
  if (!handed) free(c);
  json_decref(args);
  free(marks);
}

/* The external at v as its call; NULL: a TypeError is thrown. */
static nkh_call_t *nkh_call_get(napi_env env, napi_value v) {
  return nkh_external_get(env, v, &nkh_call_tag, "call must be a host call handle");
}

/* What an answer returns to the facade: undefined when it reached the kernel, else the code
 * ("KH_ECANCELED": the kernel stopped waiting, the answer was dropped; "KH_EINVAL": the value
 * could not go, and the kernel got an error saying why). A second answer is an Error. */
static napi_value nkh_answer_result(napi_env env, int rc) {
  napi_value out = NULL;
  if (rc == 0)
    NAPI_CALL(env, napi_get_undefined(env, &out));
  else
    NAPI_CALL(env, napi_create_string_utf8(env, kh_err_name(rc), NAPI_AUTO_LENGTH, &out));
fail:
  return out;
}

static kh_hostcall_t *nkh_answer_take(napi_env env, nkh_call_t *c, int *canceled) {
  kh_hostcall_t *call = nkh_call_take(c);
  *canceled = 0;
  if (call == NULL && c->canceled) {
    *canceled = 1;
  } else if (call == NULL) {
    nkh_throw(env, NKH_ERROR, "KH_EINVAL", "the host call was answered already");
  }
  return call;
}

/* hostReturn(call, value) -> undefined | code */
static napi_value nkh_host_return(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  nkh_manager_t *w = nkh_this(env, info, 2, argv);
  nkh_call_t *c;
  kh_hostcall_t *call;
  nkh_enc_t *e;
  const char *why;
  int canceled, rc;
  if (w == NULL || (c = nkh_call_get(env, argv[0])) == NULL) return NULL;
  if ((call = nkh_answer_take(env, c, &canceled)) == NULL)
    return canceled ? nkh_answer_result(env, KH_ECANCELED) : NULL;
  /* Large (paths, the cycle stack): on the heap. */
  if ((e = calloc(1, sizeof(*e))) == NULL) {
    (void)kh_hostcall_error(call, "out of memory");
    return nkh_answer_result(env, KH_ENOMEM);
  }
  e->env = env;
  rc = nkh_host_answer(e, argv[1], call, c->name, w->m, &why);
  free(e);
  return nkh_answer_result(env, rc);
}

/* hostError(call, message) -> undefined | code. Python raises kernelhost.HostError(message). */
static napi_value nkh_host_error(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  nkh_manager_t *w = nkh_this(env, info, 2, argv);
  nkh_call_t *c;
  kh_hostcall_t *call;
  char *msg = NULL;
  size_t len;
  int canceled, rc;
  if (w == NULL || (c = nkh_call_get(env, argv[0])) == NULL) return NULL;
  if (nkh_expect(env, argv[1], napi_string, "message") != 0) return NULL;
  if ((call = nkh_answer_take(env, c, &canceled)) == NULL)
    return canceled ? nkh_answer_result(env, KH_ECANCELED) : NULL;
  /* Lone surrogates become U+FFFD here, as V8 converts them: a message is for reading. */
  if (napi_get_value_string_utf8(env, argv[1], NULL, 0, &len) == napi_ok &&
      (msg = malloc(len + 1)) != NULL &&
      napi_get_value_string_utf8(env, argv[1], msg, len + 1, &len) != napi_ok) {
    free(msg);
    msg = NULL;
  }
  rc = kh_hostcall_error(call, msg != NULL ? msg : "the host function failed");
  free(msg);
  return nkh_answer_result(env, rc);
}

/* expose(kernelId, name, on) : exposes the name to the kernel (on) or withdraws it. The JS
 * function itself stays in the facade, which the dispatcher asks by kernel and name. */
static napi_value nkh_kernel_expose(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  char id[NKH_ID_MAX], *name = NULL;
  bool on = false;
  nkh_manager_t *w = nkh_this(env, info, 3, argv);
  int rc;
  if (w == NULL || nkh_open_check(env, w) != 0) return NULL;
  if (nkh_id_get(env, argv[0], id, sizeof(id)) != 0) return NULL;
  if (nkh_expect(env, argv[2], napi_boolean, "on") != 0) return NULL;
  if ((name = nkh_str_get(env, argv[1], "name", NULL)) == NULL) return NULL;
  NAPI_CALL(env, napi_get_value_bool(env, argv[2], &on));
  rc = kh_kernel_expose(w->m, id, name, on ? nkh_on_hostcall : NULL, on ? w : NULL);
  if (rc != 0) nkh_throw_kh(env, w, rc);
fail:
  free(name);
  return NULL;
}

/* --- Jupyter's wire protocol ------------------------------------------------------------------ */

/* One kernel served on the wire (kh_jupyter_serve), owned by the JS external that the facade's
 * JupyterServer holds. While it serves, the addon holds that external, its note function and
 * the wrapper (one strong count on w->self, as a request does): a served kernel keeps its
 * manager and its server object alive, as a listening net.Server keeps itself, and the core's
 * sockets keep the loop alive. The STOPPED note (exactly once, last) lets all three go and keeps
 * the server's last kh_jupyter_info, which info() returns from then on.
 *
 *   s set     serving or stopping: the core's note callback gets this struct
 *   s NULL    stopped: inert but for `info`; freed by the external's finalizer
 *
 * At the environment's teardown the finalizer may come first (every reference is finalized
 * then); STOPPED, which the manager's close waits for, frees the struct in that case. */
typedef struct {
  nkh_manager_t *w;
  kh_jupyter_t *s;  /* NULL once STOPPED ran */
  napi_ref self;    /* the external: strong while serving */
  napi_ref on_note; /* function (note, restart): strong while serving */
  char *info;       /* owned (kh_free): kh_jupyter_info at STOPPED */
  int held;         /* holds a strong count on w->self */
  int js_gone;      /* the external was finalized */
} nkh_jserver_t;

static const napi_type_tag nkh_jserver_tag = {0x6b65726e656c686fULL, 0x73744a7570797472ULL};

/* Lets go of what a serving server holds. Safe in finalizers and at teardown. */
static void nkh_jserver_release(nkh_jserver_t *j) {
  uint32_t n;
  nkh_manager_t *w = j->w;
  nkh_ref_delete(w->env, &j->on_note);
  nkh_ref_delete(w->env, &j->self);
  if (j->held && !w->js_gone) NAPI_CALL(w->env, napi_reference_unref(w->env, w->self, &n));
fail:
  j->held = 0;
}

static void nkh_jserver_free(nkh_jserver_t *j) {
  kh_free(j->info);
  free(j);
}

static void nkh_jserver_on_note(kh_jupyter_t *s, int note, int restart, void *data) {
  nkh_jserver_t *j = data;
  nkh_manager_t *w = j->w;
  napi_env env = w->env;
  napi_handle_scope scope = NULL;
  napi_value fn, recv, argv[2];
  int stopped = note == KH_JUPYTER_STOPPED;
  if (stopped) {
    j->info = kh_jupyter_info(s); /* the handle is freed when this returns */
    j->s = NULL;
  }
  if (w->teardown || j->js_gone || j->on_note == NULL) goto done;
  NAPI_CALL(env, napi_open_handle_scope(env, &scope));
  NAPI_CALL(env, napi_create_string_utf8(env, stopped ? "stopped" : "shutdown", NAPI_AUTO_LENGTH,
                                         &argv[0]));
  NAPI_CALL(env, napi_get_boolean(env, restart != 0, &argv[1]));
  NAPI_CALL(env, napi_get_reference_value(env, j->on_note, &fn));
  NAPI_CALL(env, napi_get_global(env, &recv));
  NAPI_CALL(env, napi_make_callback(env, w->actx, recv, fn, 2, argv, NULL));
fail:
  nkh_flush_exception(env);
  nkh_scope_close(env, scope);
done:
  if (!stopped) return;
  nkh_jserver_release(j);
  if (j->js_gone) nkh_jserver_free(j);
}

static void nkh_jserver_finalize(napi_env env, void *data, void *hint) {
  nkh_jserver_t *j = data;
  (void)env;
  (void)hint;
  j->js_gone = 1;
  nkh_jserver_release(j);
  if (j->s == NULL) nkh_jserver_free(j);
}

/* The external at v as its server; NULL: a TypeError is thrown. */
static nkh_jserver_t *nkh_jserver_get(napi_env env, napi_value v) {
  return nkh_external_get(env, v, &nkh_jserver_tag, "server must be a Jupyter server handle");
}

/* serveJupyter(kernelId, optionsJson | null, onNote(note, restart)) -> server handle. Throws
 * the core's code (KH_EOPTION, KH_EEXIST, KH_ENOTFOUND, UV_EADDRINUSE, ...) when it refuses. */
static napi_value nkh_jupyter_serve(napi_env env, napi_callback_info info) {
  napi_value argv[3], out = NULL;
  char id[NKH_ID_MAX], *opts = NULL;
  uint32_t n;
  nkh_jserver_t *j = NULL;
  nkh_manager_t *w = nkh_this(env, info, 3, argv);
  int rc;
  if (w == NULL || nkh_open_check(env, w) != 0) return NULL;
  if (nkh_id_get(env, argv[0], id, sizeof(id)) != 0) return NULL;
  if (nkh_expect(env, argv[2], napi_function, "onNote") != 0) return NULL;
  if (nkh_optstr_get(env, argv[1], "options", &opts) != 0) return NULL;
  if ((j = calloc(1, sizeof(*j))) == NULL) {
    nkh_throw_kh(env, NULL, KH_ENOMEM);
    goto fail;
  }
  j->w = w;
  NAPI_CALL(env, napi_create_external(env, j, nkh_jserver_finalize, NULL, &out));
  NAPI_CALL(env, napi_type_tag_object(env, out, &nkh_jserver_tag));
  /* From here on the external's finalizer owns j. */
  NAPI_CALL(env, napi_create_reference(env, argv[2], 1, &j->on_note));
  NAPI_CALL(env, napi_create_reference(env, out, 1, &j->self));
  if ((rc = kh_jupyter_serve(w->m, id, opts, nkh_jserver_on_note, j, &j->s)) != 0) {
    nkh_throw_kh(env, w, rc);
    goto fail;
  }
  if (!w->js_gone && w->self != NULL) {
    NAPI_CALL(env, napi_reference_ref(env, w->self, &n));
    j->held = 1;
  }
  free(opts);
  return out;
fail:
  /* Served but not handed to JS (a napi call failed): stop it; STOPPED lets go of the rest. */
  if (j != NULL && j->s != NULL) (void)kh_jupyter_stop(j->s);
  /* Refused (or never started): nothing holds the external, which frees j when collected. */
  if (j != NULL && j->s == NULL) {
    if (out == NULL)
      free(j);
    else
      nkh_jserver_release(j);
  }
  free(opts);
  return NULL;
}

/* jupyterInfo(server) -> JSON text (kh_jupyter_info; after STOPPED, as it was then) | null */
static napi_value nkh_jupyter_info(napi_env env, napi_callback_info info) {
  napi_value argv[1], out = NULL;
  nkh_jserver_t *j;
  if (nkh_this(env, info, 1, argv) == NULL || (j = nkh_jserver_get(env, argv[0])) == NULL)
    return NULL;
  if (j->s != NULL) return nkh_owned_json(env, kh_jupyter_info(j->s));
  if (j->info == NULL)
    NAPI_CALL(env, napi_get_null(env, &out));
  else
    NAPI_CALL(env, napi_create_string_utf8(env, j->info, NAPI_AUTO_LENGTH, &out));
fail:
  return out;
}

/* jupyterStop(server): starts the stop; the 'stopped' note follows from the loop. A server that
 * is stopping or stopped already is left as it is (no error: stop() is idempotent). */
static napi_value nkh_jupyter_stop(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  nkh_jserver_t *j;
  nkh_manager_t *w = nkh_this(env, info, 1, argv);
  int rc;
  if (w == NULL || (j = nkh_jserver_get(env, argv[0])) == NULL) return NULL;
  if (j->s != NULL && (rc = kh_jupyter_stop(j->s)) != 0 && rc != KH_ECLOSED)
    nkh_throw_kh(env, w, rc);
  return NULL;
}

/* --- module ---------------------------------------------------------------------------------- */

#define NKH_METHOD(name, fn) \
  { name, NULL, fn, NULL, NULL, NULL, napi_default_method, NULL }

static napi_value nkh_init(napi_env env, napi_value exports) {
  static const napi_property_descriptor methods[] = {
      NKH_METHOD("createKernel", nkh_kernel_create),
      NKH_METHOD("connectKernel", nkh_kernel_connect),
      NKH_METHOD("gatewayList", nkh_gateway_list),
      NKH_METHOD("poolReady", nkh_manager_pool_ready),
      NKH_METHOD("execute", nkh_kernel_execute),
      NKH_METHOD("interrupt", nkh_kernel_interrupt),
      NKH_METHOD("interact", nkh_kernel_interact),
      NKH_METHOD("inputReply", nkh_kernel_input_reply),
      NKH_METHOD("commSend", nkh_kernel_comm_send),
      NKH_METHOD("restart", nkh_kernel_restart),
      NKH_METHOD("destroy", nkh_kernel_destroy),
      NKH_METHOD("destroyAll", nkh_manager_destroy_all),
      NKH_METHOD("kernelMode", nkh_kernel_mode),
      NKH_METHOD("list", nkh_manager_list),
      NKH_METHOD("info", nkh_kernel_info),
      NKH_METHOD("ref", nkh_manager_ref),
      NKH_METHOD("close", nkh_manager_close),
      NKH_METHOD("expose", nkh_kernel_expose),
      NKH_METHOD("hostReturn", nkh_host_return),
      NKH_METHOD("hostError", nkh_host_error),
      NKH_METHOD("serveJupyter", nkh_jupyter_serve),
      NKH_METHOD("jupyterInfo", nkh_jupyter_info),
      NKH_METHOD("jupyterStop", nkh_jupyter_stop),
  };
  static const int all_codes[] = {
#define NKH_CODE_(name, code, msg) code,
      KH_ERRNO_MAP(NKH_CODE_)
#undef NKH_CODE_
  };
  napi_value cls, codes, v;
  size_t i;
  NAPI_CALL(env, napi_define_class(env, "NativeManager", NAPI_AUTO_LENGTH, nkh_manager_new, NULL,
                                   sizeof(methods) / sizeof(methods[0]), methods, &cls));
  NAPI_CALL(env, napi_set_named_property(env, exports, "NativeManager", cls));
  /* errorCodes: {KH_EINVAL: -30001, ...}, the facade's ErrorCodes. */
  NAPI_CALL(env, napi_create_object(env, &codes));
  for (i = 0; i < sizeof(all_codes) / sizeof(all_codes[0]); i++) {
    NAPI_CALL(env, napi_create_int32(env, all_codes[i], &v));
    NAPI_CALL(env, napi_set_named_property(env, codes, kh_err_name(all_codes[i]), v));
  }
  NAPI_CALL(env, napi_set_named_property(env, exports, "errorCodes", codes));
  /* The Python the core was built against, for the tests to probe for numpy and friends. */
  NAPI_CALL(env, napi_create_string_utf8(env, KH_PYTHON_EXECUTABLE, NAPI_AUTO_LENGTH, &v));
  NAPI_CALL(env, napi_set_named_property(env, exports, "pythonExecutable", v));
  return exports;
fail:
  return NULL;
}

NAPI_MODULE_INIT() {
  return nkh_init(env, exports);
}

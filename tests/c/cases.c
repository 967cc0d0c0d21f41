/* cases.c: the C harness of tests/cases/<concept>.json. kh_tests runs a case by name when no TEST()
 * has that name; the format, the matching rules and the checks made for every request are written
 * once in tests/cases/README.md, and tests/lua/cases_spec.lua and tests/node/cases.test.js
 * implement the same rules. Everything here runs on the test's loop thread. */
#include <dirent.h>
#include <stdarg.h>

#include "kh_test.h"

#ifndef KH_CASES_DIR
#error "KH_CASES_DIR (the tests/cases directory) must be defined by the build"
#endif

#define MAX_KERNELS 16
#define MAX_REQUESTS 256
#define MAX_HOSTFNS 32

typedef struct run_s run_t;

/* A host function of an "expose" step: its behaviour (tests/cases/README.md, "Host functions")
 * and the calls it got. */
typedef struct {
  run_t *run;
  int kernel;
  char name[80];
  json_t *behaviour; /* borrowed from the case */
  json_t *calls;     /* owned: the argument list of every call, bytes as {"$binary": hex} */
} hostfn_t;

/* One request of a case: what was asked, and what came back. */
typedef struct {
  run_t *run;
  json_t *spec; /* the EXECUTE step (borrowed from the case) */
  int kernel;   /* index into run->ids */
  int rc;       /* what kh_kernel_execute returned */
  int calls;    /* completions seen (must end at 1 when rc == 0, 0 otherwise) */
  int status;   /* the completion's status */
  int order;    /* 1 + how many requests of the case completed before this one */
  char id[64];  /* execution id */
  char errmsg[512];
  json_t *reply;   /* owned; NULL unless status == 0 */
  size_t answered; /* input requests answered so far */
  int comm;        /* a COMM step: id learnt from its busy status, completed by its idle */
  int from;        /* events recorded before the call (where its busy status may come) */
} req_t;

struct run_s {
  th_t t;
  const char *name;
  const char *mode; /* the mode under test */
  int step;         /* 1-based, for messages */
  int in_call;      /* 1 while a public API call made by the harness runs */
  int completed;    /* completions so far, for req_t.order */
  int nkernels;
  char names[MAX_KERNELS][32];
  char ids[MAX_KERNELS][64];
  int host_thread[MAX_KERNELS]; /* created with thread: "host" (its host functions run inline) */
  req_t reqs[MAX_REQUESTS];
  int nreqs;
  hostfn_t fns[MAX_HOSTFNS];
  int nfns;
  int answers_due; /* host calls that a timer or a request will answer later */
};

static void case_fail(run_t *r, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 2, 3)));

static void case_fail(run_t *r, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "case %s, step %d (%s mode): ", r->name, r->step, r->mode);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n");
  exit(1);
}

/* --- finding the case ---------------------------------------------------------------------- */

/* Reads every tests/cases/<concept>.json and returns the case named `name` (a new reference), or
 * NULL. JSON_ALLOW_NUL: a case may send code with a NUL byte in it, to see it refused. */
static json_t *case_find(const char *name) {
  DIR *d = opendir(KH_CASES_DIR);
  struct dirent *e;
  json_t *found = NULL;
  if (d == NULL) FAIL("cannot open %s", KH_CASES_DIR);
  while (found == NULL && (e = readdir(d)) != NULL) {
    char path[1024];
    json_error_t err;
    json_t *file, *c;
    size_t i, n = strlen(e->d_name);
    if (n < 6 || strcmp(e->d_name + n - 5, ".json") != 0) continue;
    snprintf(path, sizeof(path), "%s/%s", KH_CASES_DIR, e->d_name);
    file = json_load_file(path, JSON_ALLOW_NUL, &err);
    if (file == NULL) FAIL("%s:%d: %s", path, err.line, err.text);
    json_array_foreach(json_object_get(file, "cases"), i, c) {
      const char *cn = json_string_value(json_object_get(c, "name"));
      if (cn != NULL && strcmp(cn, name) == 0) {
        found = json_incref(c);
        break;
      }
    }
    json_decref(file);
  }
  closedir(d);
  return found;
}

/* --- matchers (tests/cases/README.md, "Matchers") -------------------------------------------- */

static const char *type_name(const json_t *v) {
  switch (json_typeof(v)) {
    case JSON_OBJECT:
      return "object";
    case JSON_ARRAY:
      return "array";
    case JSON_STRING:
      return "string";
    case JSON_INTEGER:
    case JSON_REAL:
      return "number";
    case JSON_TRUE:
    case JSON_FALSE:
      return "boolean";
    default:
      return "null";
  }
}

/* 1 when every key of the object starts with '$' (an operator object), 0 when none does. */
static int is_ops(run_t *r, const json_t *exp) {
  const char *k;
  json_t *v;
  int ops = 0, plain = 0;
  if (!json_is_object(exp)) return 0;
  json_object_foreach((json_t *)exp, k, v) {
    if (k[0] == '$')
      ops++;
    else
      plain++;
  }
  if (ops && plain) case_fail(r, "a matcher mixes $ operators and keys");
  return ops > 0;
}

static int match(run_t *r, json_t *exp, json_t *act, const char *path, char *why, size_t n);

/* Describes a mismatch: where, what was expected, what was there. */
static int mismatch(json_t *exp, json_t *act, const char *path, char *why, size_t n,
                    const char *what) {
  char *e = json_dumps(exp, JSON_ENCODE_ANY | JSON_COMPACT);
  char *a = act ? json_dumps(act, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
  snprintf(why, n, "%s: %s: expected %s, got %.400s", path[0] ? path : "(value)", what, e ? e : "?",
           act ? (a ? a : "?") : "(missing)");
  free(e);
  free(a);
  return 0;
}

static int match_op(run_t *r, const char *op, json_t *arg, json_t *act, const char *path, char *why,
                    size_t n) {
  char sub[512];
  if (strcmp(op, "$absent") == 0) {
    if (json_is_true(arg) ? act == NULL : act != NULL) return 1;
    return mismatch(arg, act, path, why, n, "$absent");
  }
  if (act == NULL) return mismatch(arg, act, path, why, n, op);
  if (strcmp(op, "$eq") == 0) {
    return json_equal(arg, act) ? 1 : mismatch(arg, act, path, why, n, "$eq");
  } else if (strcmp(op, "$bytes") == 0) {
    /* A binary value (th_put_buffers made it {"$binary": hex}): its hex, a hex prefix, a length;
     * a string argument is the hex. */
    const char *hex = json_string_value(json_object_get(act, "$binary"));
    const char *want = json_is_string(arg) ? json_string_value(arg)
                                           : json_string_value(json_object_get(arg, "hex"));
    const char *pre = json_string_value(json_object_get(arg, "prefix_hex"));
    json_t *len = json_object_get(arg, "len");
    int ok = hex != NULL && (want == NULL || strcmp(hex, want) == 0) &&
             (pre == NULL || strncmp(hex, pre, strlen(pre)) == 0) &&
             (len == NULL || (json_int_t)(strlen(hex) / 2) == json_integer_value(len));
    return ok ? 1 : mismatch(arg, act, path, why, n, "$bytes");
  } else if (strcmp(op, "$type") == 0) {
    const char *want = json_string_value(arg);
    int ok =
        strcmp(want, "integer") == 0 ? json_is_integer(act) : strcmp(want, type_name(act)) == 0;
    return ok ? 1 : mismatch(arg, act, path, why, n, "$type");
  } else if (strcmp(op, "$contains") == 0 || strcmp(op, "$not_contains") == 0 ||
             strcmp(op, "$prefix") == 0) {
    const char *s = json_string_value(act), *needle = json_string_value(arg);
    int ok;
    if (s == NULL) return mismatch(arg, act, path, why, n, op);
    if (op[1] == 'p')
      ok = strncmp(s, needle, strlen(needle)) == 0;
    else
      ok = (strstr(s, needle) != NULL) == (op[1] == 'c');
    return ok ? 1 : mismatch(arg, act, path, why, n, op);
  } else if (strcmp(op, "$min") == 0 || strcmp(op, "$max") == 0) {
    double a = json_number_value(act), b = json_number_value(arg);
    if (!json_is_number(act) || (op[2] == 'i' ? a < b : a > b))
      return mismatch(arg, act, path, why, n, op);
    return 1;
  } else if (strcmp(op, "$len") == 0) {
    json_t *len;
    int ok;
    if (!json_is_array(act)) return mismatch(arg, act, path, why, n, "$len of an array");
    len = json_integer((json_int_t)json_array_size(act));
    snprintf(sub, sizeof(sub), "%s.length", path);
    ok = match(r, arg, len, sub, why, n);
    json_decref(len);
    return ok;
  } else if (strcmp(op, "$each") == 0 || strcmp(op, "$some") == 0) {
    size_t i;
    json_t *v;
    int some = op[1] == 's';
    if (!json_is_array(act)) return mismatch(arg, act, path, why, n, op);
    json_array_foreach(act, i, v) {
      snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
      if (match(r, arg, v, sub, why, n) == some) return some ? 1 : 0;
    }
    return some ? mismatch(arg, act, path, why, n, "$some") : 1;
  } else if (strcmp(op, "$all") == 0) {
    size_t i;
    json_t *m;
    json_array_foreach(arg, i, m) {
      if (!match(r, m, act, path, why, n)) return 0;
    }
    return 1;
  } else if (strcmp(op, "$item") == 0) {
    const char *k;
    json_t *m;
    if (!json_is_array(act)) return mismatch(arg, act, path, why, n, "$item");
    json_object_foreach(arg, k, m) {
      long idx = strtol(k, NULL, 10);
      if (idx < 0) idx += (long)json_array_size(act);
      snprintf(sub, sizeof(sub), "%s[%s]", path, k);
      if (idx < 0 || !match(r, m, json_array_get(act, (size_t)idx), sub, why, n)) {
        if (idx < 0) mismatch(m, NULL, sub, why, n, "$item");
        return 0;
      }
    }
    return 1;
  }
  case_fail(r, "unknown matcher operator %s", op);
}

/* Returns 1 when `act` (NULL: missing) matches `exp`; otherwise 0, with why filled in. */
static int match(run_t *r, json_t *exp, json_t *act, const char *path, char *why, size_t n) {
  char sub[512];
  if (is_ops(r, exp)) {
    const char *op;
    json_t *arg;
    json_object_foreach(exp, op, arg) {
      if (!match_op(r, op, arg, act, path, why, n)) return 0;
    }
    return 1;
  }
  if (act == NULL) return mismatch(exp, act, path, why, n, "missing");
  switch (json_typeof(exp)) {
    case JSON_OBJECT: {
      const char *k;
      json_t *v;
      if (!json_is_object(act)) return mismatch(exp, act, path, why, n, "not an object");
      json_object_foreach(exp, k, v) {
        snprintf(sub, sizeof(sub), "%s%s%s", path, path[0] ? "." : "", k);
        if (!match(r, v, json_object_get(act, k), sub, why, n)) return 0;
      }
      return 1;
    }
    case JSON_ARRAY: {
      size_t i;
      json_t *v;
      if (!json_is_array(act) || json_array_size(act) != json_array_size(exp))
        return mismatch(exp, act, path, why, n, "not an array of that length");
      json_array_foreach(exp, i, v) {
        snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
        if (!match(r, v, json_array_get(act, i), sub, why, n)) return 0;
      }
      return 1;
    }
    case JSON_INTEGER:
    case JSON_REAL:
      if (json_is_number(act) && json_number_value(act) == json_number_value(exp)) return 1;
      return mismatch(exp, act, path, why, n, "not equal");
    default: /* strings, booleans, null */
      return json_equal(exp, act) ? 1 : mismatch(exp, act, path, why, n, "not equal");
  }
}

static void expect_match(run_t *r, json_t *exp, json_t *act, const char *what) {
  char why[2048];
  if (!match(r, exp, act, "", why, sizeof(why))) case_fail(r, "%s: %s", what, why);
}

/* --- kernels, code, options ------------------------------------------------------------------ */

static int kernel_index(run_t *r, const char *name, int must_exist) {
  int i;
  for (i = 0; i < r->nkernels; i++)
    if (strcmp(r->names[i], name) == 0) return i;
  if (must_exist) case_fail(r, "no kernel named \"%s\" in this case", name);
  return -1;
}

/* A kernel options object as JSON text (owned): `opts` plus the mode under test. */
static char *kernel_options(run_t *r, json_t *opts) {
  json_t *o = json_is_object(opts) ? json_deep_copy(opts) : json_object();
  char *s;
  if (json_object_get(o, "mode") == NULL) json_object_set_new(o, "mode", json_string(r->mode));
  s = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  return s;
}

/* Code: a string, or an array of lines joined with "\n". Owned; *len set (NUL bytes allowed). */
static char *code_of(json_t *code, size_t *len) {
  char *out;
  if (json_is_string(code)) {
    *len = json_string_length(code);
    out = malloc(*len + 1);
    memcpy(out, json_string_value(code), *len + 1);
  } else {
    size_t i, at = 0;
    json_t *line;
    *len = 0;
    json_array_foreach(code, i, line) *len += json_string_length(line) + (i > 0);
    out = malloc(*len + 1);
    json_array_foreach(code, i, line) {
      if (i > 0) out[at++] = '\n';
      memcpy(out + at, json_string_value(line), json_string_length(line));
      at += json_string_length(line);
    }
    out[at] = '\0';
  }
  return out;
}

static void execute_options(json_t *o, kh_execute_options_t *out) {
  json_t *v;
  kh_execute_options_init(out);
  if ((v = json_object_get(o, "silent")) != NULL) out->silent = json_is_true(v);
  if ((v = json_object_get(o, "store_history")) != NULL) out->store_history = json_is_true(v);
  if ((v = json_object_get(o, "stop_on_error")) != NULL) out->stop_on_error = json_is_true(v);
  if ((v = json_object_get(o, "allow_stdin")) != NULL) out->allow_stdin = json_is_true(v);
  if ((v = json_object_get(o, "timeout")) != NULL)
    out->timeout_ms = (uint64_t)json_integer_value(v);
}

/* --- events ---------------------------------------------------------------------------------- */

/* The request's events as [{type, data}], adjacent streams of one name merged (owned). */
static json_t *request_events(run_t *r, const char *exec_id, int merge) {
  json_t *out = json_array(), *last = NULL;
  int i;
  for (i = 0; i < r->t.nevents; i++) {
    th_event_t *e = &r->t.events[i];
    const char *name;
    if (strcmp(e->exec_id, exec_id) != 0) continue;
    name = json_string_value(json_object_get(e->data, "name"));
    if (merge && last != NULL && e->type == KH_EVENT_STREAM &&
        strcmp(json_string_value(json_object_get(last, "type")), "stream") == 0 &&
        strcmp(json_string_value(json_object_get(json_object_get(last, "data"), "name")), name) ==
            0) {
      /* By length: text may hold NUL characters (stream_nul_character). */
      json_t *d = json_object_get(last, "data"), *ta = json_object_get(d, "text");
      json_t *tb = json_object_get(e->data, "text");
      size_t na = json_string_length(ta), nb = json_string_length(tb);
      char *cat = malloc(na + nb + 1);
      memcpy(cat, json_string_value(ta), na);
      memcpy(cat + na, json_string_value(tb), nb + 1);
      json_object_set_new(d, "text", json_stringn(cat, na + nb));
      free(cat);
      continue;
    }
    last = json_pack("{s:s, s:o}", "type", kh_event_type_name(e->type), "data",
                     json_deep_copy(e->data));
    json_array_append_new(out, last);
  }
  return out;
}

/* The text of every stream event of the request with this name, concatenated (owned). */
static json_t *stream_text(run_t *r, const char *exec_id, const char *name) {
  size_t len = 0, n;
  char *buf = calloc(1, 1);
  json_t *s;
  int i;
  for (i = 0; i < r->t.nevents; i++) {
    th_event_t *e = &r->t.events[i];
    const char *text;
    if (e->type != KH_EVENT_STREAM || strcmp(e->exec_id, exec_id) != 0) continue;
    if (strcmp(json_string_value(json_object_get(e->data, "name")), name) != 0) continue;
    /* By length: text may hold NUL characters (stream_nul_character). */
    n = json_string_length(json_object_get(e->data, "text"));
    text = json_string_value(json_object_get(e->data, "text"));
    buf = realloc(buf, len + n + 1);
    memcpy(buf + len, text, n + 1);
    len += n;
  }
  s = json_stringn(buf, len);
  free(buf);
  return s;
}

static void run_once(run_t *r) {
  th_step(&r->t);
}

static void watchdog_off(run_t *r) {
  uv_timer_stop(&r->t.watchdog);
}

/* --- requests -------------------------------------------------------------------------------- */

static void on_executed(kh_manager_t *m, const kh_reply_t *rep, int status, void *data) {
  req_t *q = data;
  json_error_t err;
  (void)m;
  if (q->run->in_call) case_fail(q->run, "a completion ran inside the call that caused it");
  q->calls++;
  if (q->calls > 1) case_fail(q->run, "request %s completed twice", q->id);
  q->status = status;
  q->order = ++q->run->completed;
  snprintf(q->errmsg, sizeof(q->errmsg), "%s", rep->errmsg ? rep->errmsg : "");
  if (status == 0) {
    q->reply = json_loadb(rep->json, rep->json_len, JSON_ALLOW_NUL, &err);
    if (q->reply == NULL) case_fail(q->run, "the reply is not JSON (%s)", err.text);
    th_put_buffers(q->reply, rep->buffers, rep->nbuffers);
  }
}

static req_t *submit(run_t *r, json_t *spec) {
  req_t *q;
  kh_execute_options_t o;
  size_t len;
  char *code;
  int i;
  if (r->nreqs >= MAX_REQUESTS) case_fail(r, "too many requests in one case");
  q = &r->reqs[r->nreqs++];
  memset(q, 0, sizeof(*q));
  q->run = r;
  q->spec = spec;
  q->kernel = kernel_index(r,
                           json_string_value(json_object_get(spec, "kernel"))
                               ? json_string_value(json_object_get(spec, "kernel"))
                               : "k",
                           1);
  code = code_of(json_object_get(spec, "execute"), &len);
  execute_options(json_object_get(spec, "options"), &o);
  r->in_call = 1;
  q->rc = kh_kernel_execute(r->t.m, r->ids[q->kernel], code, len, &o, q->id, sizeof(q->id),
                            on_executed, q);
  r->in_call = 0;
  free(code);
  if (q->rc != 0) {
    snprintf(q->errmsg, sizeof(q->errmsg), "%s", kh_manager_errmsg(r->t.m));
    q->id[0] = '\0';
    return q;
  }
  if (q->id[0] == '\0') case_fail(r, "an execution id is empty");
  for (i = 0; i < r->nreqs - 1; i++)
    if (strcmp(r->reqs[i].id, q->id) == 0) case_fail(r, "execution id %s given twice", q->id);
  return q;
}

/* The host's side of a comm (a COMM step, tests/cases/README.md): kh_kernel_comm_send with the
 * step's comm_id, target_name, data and metadata; it completes once the kernel has handled it. */
static req_t *submit_comm(run_t *r, json_t *spec) {
  const char *verb = json_string_value(json_object_get(spec, "comm"));
  const char *keys[] = {"comm_id", "target_name", "data", "metadata"};
  char type[32], paths[64][32];
  json_t *content = json_object(), *hexes = json_object_get(spec, "buffers"), *h;
  kh_buffer_t bufs[64];
  unsigned char *bytes[64];
  char *text;
  req_t *q;
  size_t i, nb = json_array_size(hexes);
  if (r->nreqs >= MAX_REQUESTS) case_fail(r, "too many requests in one case");
  if (verb == NULL) case_fail(r, "a comm step without its verb");
  q = &r->reqs[r->nreqs++];
  memset(q, 0, sizeof(*q));
  q->run = r;
  q->spec = spec;
  q->comm = 1;
  q->from = r->t.nevents;
  q->kernel = kernel_index(r,
                           json_string_value(json_object_get(spec, "kernel"))
                               ? json_string_value(json_object_get(spec, "kernel"))
                               : "k",
                           1);
  for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
    if (json_object_get(spec, keys[i]) != NULL)
      json_object_set(content, keys[i], json_object_get(spec, keys[i]));
  snprintf(type, sizeof(type), "comm_%s", verb);
  /* The step's buffers are hex strings of their bytes. */
  if (nb > 64) case_fail(r, "too many buffers");
  json_array_foreach(hexes, i, h) {
    const char *x = json_string_value(h);
    size_t k, n = x ? strlen(x) / 2 : 0;
    bytes[i] = malloc(n + 1);
    for (k = 0; k < n; k++) sscanf(x + 2 * k, "%2hhx", &bytes[i][k]);
    snprintf(paths[i], sizeof(paths[i]), "/buffers/%zu", i);
    bufs[i].path = paths[i];
    bufs[i].data = bytes[i];
    bufs[i].len = n;
  }
  text = json_dumps(content, JSON_COMPACT);
  json_decref(content);
  r->in_call = 1;
  q->rc = kh_kernel_comm_send(r->t.m, r->ids[q->kernel], type, text, strlen(text),
                              nb ? bufs : NULL, nb);
  r->in_call = 0;
  for (i = 0; i < nb; i++) free(bytes[i]);
  free(text);
  if (q->rc != 0) snprintf(q->errmsg, sizeof(q->errmsg), "%s", kh_manager_errmsg(r->t.m));
  return q;
}

/* Whether exec_id is a known request's. */
static int id_taken(run_t *r, const char *exec_id) {
  int i;
  for (i = 0; i < r->nreqs; i++)
    if (strcmp(r->reqs[i].id, exec_id) == 0) return 1;
  return 0;
}

/* A comm message's id is its kernel's first busy status after the call that no other request
 * has (a kernel runs its requests one at a time, in order); it has completed once its idle
 * status came. */
static void comm_progress(run_t *r, req_t *q) {
  int i;
  if (!q->comm || q->rc != 0 || q->calls) return;
  for (i = q->from; q->id[0] == '\0' && i < r->t.nevents; i++) {
    th_event_t *e = &r->t.events[i];
    if (e->type == KH_EVENT_STATUS && e->exec_id[0] &&
        strcmp(e->kernel_id, r->ids[q->kernel]) == 0 &&
        strcmp(th_s(e->data, "execution_state"), "busy") == 0 && !id_taken(r, e->exec_id))
      snprintf(q->id, sizeof(q->id), "%s", e->exec_id);
  }
  if (q->id[0] == '\0') return;
  for (i = q->from; i < r->t.nevents; i++) {
    th_event_t *e = &r->t.events[i];
    if (e->type == KH_EVENT_STATUS && strcmp(e->exec_id, q->id) == 0 &&
        strcmp(th_s(e->data, "execution_state"), "idle") == 0) {
      q->calls = 1;
      q->order = ++r->completed;
    }
  }
}

/* Answers the request's input requests that have arrived, with the next scripted inputs. */
static void answer_inputs(run_t *r, req_t *q) {
  json_t *inputs = json_object_get(q->spec, "inputs");
  int seen;
  if (inputs == NULL || q->rc != 0) return;
  seen = th_count(&r->t, KH_EVENT_INPUT_REQUEST, q->id);
  while ((int)q->answered < seen) {
    json_t *in = json_array_get(inputs, q->answered);
    const char *v = json_string_value(in);
    if (v == NULL) case_fail(r, "more input requests than inputs");
    q->answered++;
    ASSERT_INT(kh_kernel_input_reply(r->t.m, r->ids[q->kernel], v, json_string_length(in)), ==, 0);
  }
}

/* 1 when the `when` of a `during` holds for request q. */
static int during_due(run_t *r, req_t *q, json_t *when) {
  if (json_is_string(when) && strcmp(json_string_value(when), "busy") == 0) {
    int i;
    for (i = 0; i < r->t.nevents; i++) {
      th_event_t *e = &r->t.events[i];
      if (e->type == KH_EVENT_STATUS && strcmp(e->exec_id, q->id) == 0 &&
          strcmp(th_s(e->data, "execution_state"), "busy") == 0)
        return 1;
    }
    return 0;
  } else if (json_is_object(when) && json_object_get(when, "stdout")) {
    json_t *s = stream_text(r, q->id, "stdout");
    int due =
        strstr(json_string_value(s), json_string_value(json_object_get(when, "stdout"))) != NULL;
    json_decref(s);
    return due;
  }
  case_fail(r, "unknown \"when\" in during");
}

/* Makes a `during` call on the request's kernel; returns a flag to wait for (NULL: none). */
static int *during_do(run_t *r, req_t *q, const char *what, int *done) {
  const char *id = r->ids[q->kernel];
  int rc;
  if (strcmp(what, "interrupt") == 0) {
    ASSERT_ERR(kh_kernel_interrupt(r->t.m, id), 0);
    return NULL;
  }
  if (strcmp(what, "restart") == 0)
    rc = kh_kernel_restart(r->t.m, id, th_done_cb, done);
  else if (strcmp(what, "destroy") == 0)
    rc = kh_kernel_destroy(r->t.m, id, th_done_cb, done);
  else
    case_fail(r, "unknown \"do\" in during: %s", what);
  if (rc != 0) case_fail(r, "during %s: %s", what, kh_err_name(rc));
  return done;
}

/* Waits for every request of reqs[first..] to complete, answering inputs and making the
 * `during` call on the first once it is due. */
static void wait_requests(run_t *r, int first, json_t *during) {
  int i, pending = 1, done_flag[2] = {0, 0}, *wait_flag = NULL, due = during == NULL;
  while (pending || (wait_flag != NULL && !wait_flag[0])) {
    pending = 0;
    for (i = first; i < r->nreqs; i++) {
      answer_inputs(r, &r->reqs[i]);
      comm_progress(r, &r->reqs[i]);
      if (r->reqs[i].rc == 0 && r->reqs[i].calls == 0) pending = 1;
    }
    if (!due && r->reqs[first].rc == 0 &&
        during_due(r, &r->reqs[first], json_object_get(during, "when"))) {
      due = 1;
      wait_flag = during_do(r, &r->reqs[first], json_string_value(json_object_get(during, "do")),
                            done_flag);
    }
    if (!due && !pending) case_fail(r, "the request completed before its \"during\" was due");
    if (pending || (wait_flag != NULL && !wait_flag[0])) run_once(r);
  }
  watchdog_off(r);
  if (wait_flag != NULL && wait_flag[1] != 0)
    case_fail(r, "during %s completed with %s", json_string_value(json_object_get(during, "do")),
              kh_err_name(wait_flag[1]));
}

static const char *err_name_or_ok(int rc) {
  return rc == 0 ? "success" : kh_err_name(rc);
}

/* Checks one request against its `expect` and the rules every request obeys. */
static void check_request(run_t *r, req_t *q) {
  json_t *exp = json_object_get(q->spec, "expect"), *v, *events;
  const char *refused = json_string_value(json_object_get(exp, "refused"));
  const char *failed = json_string_value(json_object_get(exp, "failed"));
  const char *k;
  int i;
  if (refused != NULL) {
    if (q->rc == 0 || strcmp(kh_err_name(q->rc), refused) != 0)
      case_fail(r, "expected the call to be refused with %s, got %s", refused,
                err_name_or_ok(q->rc));
  } else if (q->rc != 0) {
    case_fail(r, "the call was refused: %s: %s", kh_err_name(q->rc), q->errmsg);
  } else if (failed != NULL) {
    if (q->status == 0 || strcmp(kh_err_name(q->status), failed) != 0)
      case_fail(r, "expected the request to fail with %s, got %s", failed,
                err_name_or_ok(q->status));
  } else if (q->status != 0) {
    case_fail(r, "the request failed: %s: %s", kh_err_name(q->status), q->errmsg);
  }
  if ((v = json_object_get(exp, "message")) != NULL) {
    json_t *m = json_string(q->errmsg);
    expect_match(r, v, m, "message");
    json_decref(m);
  }
  if (q->rc != 0) return;
  /* Every event of the request carries the kernel's id and, with a reply, is its outputs. */
  events = request_events(r, q->id, 0);
  for (i = 0; i < r->t.nevents; i++)
    if (strcmp(r->t.events[i].exec_id, q->id) == 0 &&
        strcmp(r->t.events[i].kernel_id, r->ids[q->kernel]) != 0)
      case_fail(r, "an event of %s names kernel %s", q->id, r->t.events[i].kernel_id);
  if (q->reply != NULL && !json_equal(events, json_object_get(q->reply, "outputs"))) {
    char *a = json_dumps(events, JSON_COMPACT), *b = json_dumps(q->reply, JSON_COMPACT);
    case_fail(r, "the subscriber's events are not the reply's outputs:\n%.2000s\n%.2000s", a, b);
  }
  json_decref(events);
  json_object_foreach(exp, k, v) {
    char what[128];
    snprintf(what, sizeof(what), "expect.%s", k);
    if (strcmp(k, "status") == 0 || strcmp(k, "execution_count") == 0 || strcmp(k, "result") == 0 ||
        strcmp(k, "error") == 0) {
      if (q->reply == NULL) case_fail(r, "%s: the request got no reply", what);
      expect_match(r, v, json_object_get(q->reply, k), what);
    } else if (strcmp(k, "events") == 0) {
      json_t *merged = request_events(r, q->id, 1);
      expect_match(r, v, merged, what);
      json_decref(merged);
    } else if (strcmp(k, "streams") == 0) {
      const char *name;
      json_t *m;
      json_object_foreach(v, name, m) {
        json_t *s = stream_text(r, q->id, name);
        snprintf(what, sizeof(what), "expect.streams.%s", name);
        expect_match(r, m, s, what);
        json_decref(s);
      }
    } else if (strcmp(k, "counts") == 0) {
      const char *type;
      json_t *m;
      json_object_foreach(v, type, m) {
        int t = kh_event_type_from_name(type);
        json_t *c;
        if (t <= 0) case_fail(r, "unknown event type %s", type);
        c = json_integer(th_count(&r->t, t, q->id));
        snprintf(what, sizeof(what), "expect.counts.%s", type);
        expect_match(r, m, c, what);
        json_decref(c);
      }
    } else if (strcmp(k, "refused") != 0 && strcmp(k, "failed") != 0 && strcmp(k, "message") != 0) {
      case_fail(r, "unknown expect key %s", k);
    }
  }
}

/* Requests of one batch that ran complete in order, and no two requests' events interleave.
 * (Cancellations and failures may complete in another order: a queued request is canceled at
 * once, the running one only when it has stopped.) */
static void check_batch_order(run_t *r, int first) {
  int i, j, last_prev = -1;
  for (i = first; i < r->nreqs; i++) {
    req_t *q = &r->reqs[i];
    int lo = -1, hi = -1;
    if (q->rc != 0) continue;
    for (j = first; j < i; j++)
      if (q->reply != NULL && r->reqs[j].reply != NULL && r->reqs[j].order > q->order)
        case_fail(r, "request %d of the batch completed before request %d", i - first + 1,
                  j - first + 1);
    for (j = 0; j < r->t.nevents; j++)
      if (strcmp(r->t.events[j].exec_id, q->id) == 0) {
        if (lo < 0) lo = j;
        hi = j;
      }
    if (lo >= 0 && lo < last_prev)
      case_fail(r, "events of request %d came before the end of the previous one", i - first + 1);
    if (hi >= 0) last_prev = hi;
  }
}

/* --- steps ----------------------------------------------------------------------------------- */

/* Checks a call's outcome against {"code", "message"} (absent: it must succeed). */
static void expect_outcome(run_t *r, json_t *exp, int rc, const char *msg, const char *what) {
  const char *code = json_string_value(json_object_get(exp, "code"));
  json_t *m = json_object_get(exp, "message");
  if (code == NULL && rc != 0) case_fail(r, "%s failed: %s: %s", what, kh_err_name(rc), msg);
  if (code != NULL && (rc == 0 || strcmp(kh_err_name(rc), code) != 0))
    case_fail(r, "%s: expected %s, got %s", what, code, err_name_or_ok(rc));
  if (m != NULL) {
    json_t *s = json_string(msg ? msg : "");
    expect_match(r, m, s, "message");
    json_decref(s);
  }
}

typedef struct {
  int done, status;
  char errmsg[512];
} create_t;

static void on_created(kh_manager_t *m, const char *id, int status, const char *errmsg,
                       void *data) {
  create_t *c = data;
  (void)m;
  (void)id;
  c->done = 1;
  c->status = status;
  snprintf(c->errmsg, sizeof(c->errmsg), "%s", errmsg ? errmsg : "");
}

static void step_create(run_t *r, const char *name, json_t *opts, json_t *exp) {
  char *json = kernel_options(r, opts), id[64];
  create_t c = {0, 0, ""};
  int rc;
  if (kernel_index(r, name, 0) >= 0) case_fail(r, "kernel %s created twice", name);
  rc = kh_kernel_create(r->t.m, json, id, sizeof(id), on_created, &c);
  free(json);
  if (rc != 0) {
    expect_outcome(r, exp, rc, kh_manager_errmsg(r->t.m), "create");
    return;
  }
  th_run_until(&r->t, &c.done);
  expect_outcome(r, exp, c.status, c.errmsg, "create");
  if (c.status != 0) return;
  if (r->nkernels >= MAX_KERNELS) case_fail(r, "too many kernels");
  snprintf(r->names[r->nkernels], sizeof(r->names[0]), "%s", name);
  snprintf(r->ids[r->nkernels], sizeof(r->ids[0]), "%s", id);
  r->host_thread[r->nkernels] =
      json_is_string(json_object_get(opts, "thread")) &&
      strcmp(json_string_value(json_object_get(opts, "thread")), "host") == 0;
  r->nkernels++;
}

static void on_closed(kh_manager_t *m, void *data) {
  (void)m;
  *(int *)data = 1;
}

static void step_manager(run_t *r, json_t *opts, json_t *exp) {
  kh_manager_t *m = NULL;
  char *json = json_dumps(opts, JSON_COMPACT);
  int rc = kh_manager_new(&m, &r->t.loop, json);
  free(json);
  expect_outcome(r, exp, rc, rc != 0 ? kh_manager_errmsg(NULL) : "", "manager");
  if (rc == 0) {
    int closed = 0;
    ASSERT_INT(kh_manager_close(m, on_closed, &closed), ==, 0);
    th_run_until(&r->t, &closed);
  } else if (m != NULL) {
    case_fail(r, "a failed kh_manager_new set its out-parameter");
  }
}

static void step_kernel_events(run_t *r, const char *name, json_t *exp) {
  const char *id = r->ids[kernel_index(r, name, 1)];
  json_t *got;
  int i, n;
  for (;;) {
    for (n = 0, i = 0; i < r->t.nevents; i++)
      n += r->t.events[i].exec_id[0] == '\0' && strcmp(r->t.events[i].kernel_id, id) == 0;
    if (n >= (int)json_array_size(exp)) break;
    run_once(r);
  }
  watchdog_off(r);
  got = json_array();
  for (i = 0; i < r->t.nevents; i++) {
    th_event_t *e = &r->t.events[i];
    if (e->exec_id[0] != '\0' || strcmp(e->kernel_id, id) != 0) continue;
    json_array_append_new(
        got, json_pack("{s:s, s:O}", "type", kh_event_type_name(e->type), "data", e->data));
  }
  expect_match(r, exp, got, "kernel_events");
  json_decref(got);
}

static void step_list(run_t *r, json_t *ns, json_t *exp) {
  char *s = kh_manager_list(r->t.m, json_string_value(ns));
  json_t *j = s ? json_loads(s, 0, NULL) : NULL;
  if (j == NULL) case_fail(r, "kh_manager_list gave no JSON");
  kh_free(s);
  expect_match(r, exp, j, "list");
  json_decref(j);
}

static void step_info(run_t *r, const char *name, json_t *exp) {
  char *s = kh_kernel_info(r->t.m, r->ids[kernel_index(r, name, 1)]);
  json_t *j = s ? json_loads(s, 0, NULL) : NULL;
  if (s != NULL && j == NULL) case_fail(r, "kh_kernel_info gave no JSON");
  kh_free(s);
  expect_match(r, exp, j, "info");
  json_decref(j);
}

/* restart / destroy / interrupt / input_reply on an idle kernel. */
static void step_kernel_call(run_t *r, const char *verb, json_t *step) {
  json_t *exp = json_object_get(step, "expect");
  int done[2] = {0, 0}, rc, waits = 0;
  const char *name = strcmp(verb, "input_reply") == 0
                         ? json_string_value(json_object_get(step, "kernel"))
                         : json_string_value(json_object_get(step, verb));
  const char *id = r->ids[kernel_index(r, name ? name : "k", 1)];
  if (strcmp(verb, "restart") == 0) {
    rc = kh_kernel_restart(r->t.m, id, th_done_cb, done);
    waits = 1;
  } else if (strcmp(verb, "destroy") == 0) {
    rc = kh_kernel_destroy(r->t.m, id, th_done_cb, done);
    waits = 1;
  } else if (strcmp(verb, "interrupt") == 0) {
    rc = kh_kernel_interrupt(r->t.m, id);
  } else {
    json_t *v = json_object_get(step, verb);
    rc = kh_kernel_input_reply(r->t.m, id, json_string_value(v), json_string_length(v));
  }
  if (rc == 0 && waits) {
    th_run_until(&r->t, &done[0]);
    rc = done[1];
  }
  expect_outcome(r, exp, rc, rc != 0 ? kh_manager_errmsg(r->t.m) : "", verb);
}

/* --- editor requests (the "request" verb) -------------------------------------------------- */

typedef struct {
  run_t *run;
  int calls, status;
  char errmsg[512];
  json_t *reply;
} ereq_t;

static void on_answered(kh_manager_t *m, const char *kernel_id, int status, const char *json,
                        size_t len, const char *errmsg, void *data) {
  ereq_t *e = data;
  (void)m;
  (void)kernel_id;
  if (e->run->in_call) case_fail(e->run, "an answer ran inside the call that caused it");
  e->calls++;
  e->status = status;
  snprintf(e->errmsg, sizeof(e->errmsg), "%s", errmsg ? errmsg : "");
  if (status == 0 && (e->reply = json_loadb(json, len, JSON_ALLOW_NUL, NULL)) == NULL)
    case_fail(e->run, "the answer is not JSON");
  if (status != 0 && json != NULL) case_fail(e->run, "a failed answer carries JSON");
}

/* Makes the editor request a "request" step names; returns what the call returned. */
static int editor_call(run_t *r, const char *verb, json_t *step, const char *id, ereq_t *e) {
  size_t len = 0;
  json_t *pos = json_object_get(step, "cursor_pos");
  int64_t cursor = json_is_integer(pos) ? (int64_t)json_integer_value(pos) : -1;
  uint64_t timeout = (uint64_t)json_integer_value(json_object_get(step, "timeout"));
  char *code = json_object_get(step, "code") ? code_of(json_object_get(step, "code"), &len) : NULL;
  char *hist = NULL;
  int rc;
  r->in_call = 1;
  if (strcmp(verb, "complete") == 0) {
    rc = kh_kernel_complete(r->t.m, id, code, len, cursor, timeout, on_answered, e);
  } else if (strcmp(verb, "inspect") == 0) {
    rc = kh_kernel_inspect(r->t.m, id, code, len, cursor,
                           (int)json_integer_value(json_object_get(step, "detail_level")), timeout,
                           on_answered, e);
  } else if (strcmp(verb, "is_complete") == 0) {
    rc = kh_kernel_is_complete(r->t.m, id, code, len, timeout, on_answered, e);
  } else if (strcmp(verb, "history") == 0) {
    hist = json_dumps(json_object_get(step, "history"), JSON_COMPACT);
    rc = kh_kernel_history(r->t.m, id, hist, on_answered, e);
  } else if (strcmp(verb, "kernel_info") == 0) {
    rc = kh_kernel_kernel_info(r->t.m, id, timeout, on_answered, e);
  } else {
    r->in_call = 0;
    case_fail(r, "unknown request \"%s\"", verb);
  }
  r->in_call = 0;
  free(code);
  free(hist);
  return rc;
}

static void step_request(run_t *r, json_t *step) {
  const char *verb = json_string_value(json_object_get(step, "request"));
  const char *kname = json_string_value(json_object_get(step, "kernel"));
  json_t *exp = json_object_get(step, "expect"), *during = json_object_get(step, "while");
  const char *id = json_string_value(json_object_get(step, "kernel_id"));
  const char *refused = json_string_value(json_object_get(exp, "refused"));
  const char *failed = json_string_value(json_object_get(exp, "failed"));
  ereq_t e;
  req_t *cell = NULL;
  int rc;
  memset(&e, 0, sizeof(e));
  e.run = r;
  if (id == NULL) id = r->ids[kernel_index(r, kname ? kname : "k", 1)];
  if (during != NULL) {
    /* The cell runs (it has printed its marker) while the request is made and answered. */
    json_t *spec = json_pack("{s:O, s:s}", "execute", json_object_get(during, "execute"), "kernel",
                             kname ? kname : "k");
    cell = submit(r, spec);
    if (cell->rc != 0) case_fail(r, "the \"while\" cell was refused");
    for (;;) {
      if (during_due(r, cell, json_object_get(during, "when"))) break;
      if (cell->calls) case_fail(r, "the \"while\" cell ended before its marker");
      run_once(r);
    }
    watchdog_off(r);
    cell->spec = NULL;
    json_decref(spec);
  }
  rc = editor_call(r, verb, step, id, &e);
  if (rc == 0 && json_is_true(json_object_get(step, "interrupt"))) {
    /* While the request is in flight: its answer has not run inside the call. */
    r->in_call = 1;
    ASSERT_ERR(kh_kernel_interrupt(r->t.m, id), 0);
    r->in_call = 0;
  }
  if (refused != NULL || rc != 0) {
    json_t *o = json_pack("{s:s?}", "code", refused);
    if (json_object_get(exp, "message"))
      json_object_set(o, "message", json_object_get(exp, "message"));
    expect_outcome(r, o, rc, kh_manager_errmsg(r->t.m), verb);
    json_decref(o);
    if (e.calls) case_fail(r, "a refused request was answered");
  } else {
    while (!e.calls) run_once(r);
    watchdog_off(r);
    if (cell != NULL && cell->calls && !json_is_true(json_object_get(step, "interrupt")))
      case_fail(r, "the \"while\" cell ended before the answer: the request waited for it");
    if (failed != NULL) {
      if (e.status == 0 || strcmp(kh_err_name(e.status), failed) != 0)
        case_fail(r, "%s: expected %s, got %s", verb, failed, err_name_or_ok(e.status));
    } else if (e.status != 0) {
      case_fail(r, "%s failed: %s: %s", verb, kh_err_name(e.status), e.errmsg);
    }
    if (json_object_get(exp, "message")) {
      json_t *s = json_string(e.errmsg);
      expect_match(r, json_object_get(exp, "message"), s, "message");
      json_decref(s);
    }
    if (json_object_get(exp, "reply"))
      expect_match(r, json_object_get(exp, "reply"), e.reply, verb);
  }
  json_decref(e.reply);
  if (cell != NULL) {
    ASSERT_ERR(kh_kernel_interrupt(r->t.m, r->ids[cell->kernel]), 0);
    while (!cell->calls) run_once(r);
    watchdog_off(r);
  }
}

/* --- host functions (the "expose" and "host_calls" verbs) ---------------------------------- */

static int hex_digit(int c) {
  return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* A copy of v with every {"$bytes": HEX} replaced by null, its bytes appended to bufs (paths and
 * data owned). */
static json_t *to_wire(run_t *r, json_t *v, const char *path, kh_buffer_t *bufs, size_t *nb) {
  char sub[512];
  /* {"$bytes": HEX} in a case's VALUE, {"$binary": hex} where the harness recorded bytes. */
  json_t *marker = json_is_object(v) && json_object_size(v) == 1
                       ? (json_object_get(v, "$bytes") ? json_object_get(v, "$bytes")
                                                       : json_object_get(v, "$binary"))
                       : NULL;
  if (json_is_string(marker)) {
    const char *hex = json_string_value(marker);
    size_t n = strlen(hex) / 2, i;
    unsigned char *data = malloc(n + 1);
    if (*nb >= 64) case_fail(r, "too many $bytes in one value");
    for (i = 0; i < n; i++) {
      int hi = hex_digit(hex[2 * i]), lo = hex_digit(hex[2 * i + 1]);
      if (hi < 0 || lo < 0) case_fail(r, "$bytes \"%s\" is not lower-case hex", hex);
      data[i] = (unsigned char)(hi * 16 + lo);
    }
    bufs[*nb].path = strdup(path);
    bufs[*nb].data = data;
    bufs[*nb].len = n;
    (*nb)++;
    return json_null();
  }
  if (json_is_object(v)) {
    json_t *o = json_object(), *x;
    const char *k;
    json_object_foreach(v, k, x) {
      char key[256]; /* RFC 6901: "~" is written "~0", "/" is written "~1" */
      size_t i, j = 0;
      for (i = 0; k[i] && j + 3 < sizeof(key); i++) {
        if (k[i] == '~' || k[i] == '/') {
          key[j++] = '~';
          key[j++] = k[i] == '~' ? '0' : '1';
        } else {
          key[j++] = k[i];
        }
      }
      key[j] = '\0';
      snprintf(sub, sizeof(sub), "%s/%s", path, key);
      json_object_set_new(o, k, to_wire(r, x, sub, bufs, nb));
    }
    return o;
  }
  if (json_is_array(v)) {
    json_t *a = json_array(), *x;
    size_t i;
    json_array_foreach(v, i, x) {
      snprintf(sub, sizeof(sub), "%s/%zu", path, i);
      json_array_append_new(a, to_wire(r, x, sub, bufs, nb));
    }
    return a;
  }
  return json_deep_copy(v);
}

static void free_bufs(kh_buffer_t *b, size_t n) {
  size_t i;
  for (i = 0; i < n; i++) {
    free((void *)b[i].path);
    free((void *)b[i].data);
  }
}

/* A later answer (README: "later": true): a 0 ms timer of its own. */
typedef struct {
  uv_timer_t timer;
  run_t *run;
  kh_hostcall_t *call;
  char *json; /* the value to answer, or NULL for an error */
  char *error;
  kh_buffer_t bufs[64];
  size_t nb;
} later_t;

static void later_closed(uv_handle_t *h) {
  later_t *l = (later_t *)h;
  free_bufs(l->bufs, l->nb);
  free(l->json);
  free(l->error);
  free(l);
}

static void later_fire(uv_timer_t *t) {
  later_t *l = (later_t *)t;
  int rc = l->json ? kh_hostcall_return(l->call, l->json, strlen(l->json), l->bufs, l->nb)
                   : kh_hostcall_error(l->call, l->error);
  /* KH_ECANCELED: the kernel stopped waiting meanwhile (the case destroyed it, say). */
  if (rc != 0 && rc != KH_ECANCELED)
    case_fail(l->run, "a later answer failed: %s", kh_err_name(rc));
  l->run->answers_due--;
  uv_close((uv_handle_t *)&l->timer, later_closed);
}

/* Answers with JSON value v ({"$bytes"} inside), or fails with error (v NULL): now, or later. */
static void answer(run_t *r, kh_hostcall_t *call, json_t *v, const char *error, int later) {
  later_t *l = calloc(1, sizeof(*l));
  l->run = r;
  l->call = call;
  if (v != NULL) {
    json_t *wire = to_wire(r, v, "", l->bufs, &l->nb);
    l->json = json_dumps(wire, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(wire);
  } else {
    l->error = strdup(error);
  }
  if (later) {
    r->answers_due++;
    uv_timer_init(&r->t.loop, &l->timer);
    uv_timer_start(&l->timer, later_fire, 0, 0);
    return;
  }
  {
    int rc = l->json ? kh_hostcall_return(call, l->json, strlen(l->json), l->bufs, l->nb)
                     : kh_hostcall_error(call, l->error);
    if (rc != 0) case_fail(r, "answering a host call failed: %s", kh_err_name(rc));
  }
  later_closed((uv_handle_t *)l);
}

/* "run": the request a host function made, answering its call when it completes. */
typedef struct {
  run_t *run;
  kh_hostcall_t *call;
} run_call_t;

static void run_done(kh_manager_t *m, const kh_reply_t *rep, int status, void *data) {
  run_call_t *rc = data;
  run_t *r = rc->run;
  json_t *reply = status == 0 ? json_loadb(rep->json, rep->json_len, JSON_ALLOW_NUL, NULL) : NULL;
  char msg[1024];
  int ret;
  (void)m;
  r->answers_due--;
  if (status != 0) {
    ret = kh_hostcall_error(rc->call, kh_err_name(status));
  } else if (strcmp(th_s(reply, "status"), "ok") == 0) {
    const char *text = th_s(reply, "result.data.text/plain");
    json_t *v = json_string(text ? text : "");
    char *s = json_dumps(v, JSON_ENCODE_ANY);
    ret = kh_hostcall_return(rc->call, s, strlen(s), NULL, 0);
    free(s);
    json_decref(v);
  } else {
    snprintf(msg, sizeof(msg), "%s: %s", th_s(reply, "error.ename"), th_s(reply, "error.evalue"));
    ret = kh_hostcall_error(rc->call, msg);
  }
  if (ret != 0 && ret != KH_ECANCELED)
    case_fail(r, "answering a run call failed: %s", kh_err_name(ret));
  json_decref(reply);
  free(rc);
}

static void case_hostfn(kh_manager_t *m, const char *kernel_id, const char *name, const char *args,
                        size_t len, const kh_buffer_t *b, size_t nb, kh_hostcall_t *call,
                        void *data) {
  hostfn_t *f = data;
  run_t *r = f->run;
  json_t *bh = f->behaviour, *v, *rec;
  int later = json_is_true(json_object_get(bh, "later"));
  /* A thread: "host" kernel's cell runs inside the call that runs it, its host functions too. */
  if (r->in_call && !r->host_thread[f->kernel])
    case_fail(r, "host function %s ran inside an API call", name);
  if (strcmp(kernel_id, r->ids[f->kernel]) != 0 || strcmp(name, f->name) != 0)
    case_fail(r, "host function %s got the call of %s on %s", f->name, name, kernel_id);
  rec = json_loadb(args, len, JSON_ALLOW_NUL, NULL);
  if (!json_is_array(rec)) case_fail(r, "the arguments of %s are not an array", name);
  th_put_buffers(rec, b, nb);
  json_array_append(f->calls, rec);
  if ((v = json_object_get(bh, "return")) != NULL) {
    answer(r, call, v, NULL, later);
  } else if (json_is_true(json_object_get(bh, "echo"))) {
    answer(r, call, rec, NULL, later);
  } else if ((v = json_object_get(bh, "error")) != NULL) {
    answer(r, call, NULL, json_string_value(v), later);
  } else if ((v = json_object_get(bh, "run")) != NULL) {
    const char *kn = json_string_value(json_object_get(v, "kernel"));
    size_t clen;
    char *code = code_of(json_object_get(v, "code"), &clen);
    run_call_t *rc = calloc(1, sizeof(*rc));
    int ret;
    rc->run = r;
    rc->call = call;
    ret = kh_kernel_execute(m, r->ids[kernel_index(r, kn ? kn : "k", 1)], code, clen, NULL, NULL, 0,
                            run_done, rc);
    free(code);
    if (ret != 0) {
      free(rc);
      answer(r, call, NULL, kh_err_name(ret), 0);
    } else {
      r->answers_due++;
    }
  } else {
    case_fail(r, "host function %s has no behaviour", name);
  }
  json_decref(rec);
}

static void step_expose(run_t *r, json_t *step) {
  json_t *fns = json_object_get(step, "expose"), *bh, *exp = json_object_get(step, "expect");
  const char *kname = json_string_value(json_object_get(step, "kernel")), *name;
  int k = kernel_index(r, kname ? kname : "k", 1), rc = 0;
  json_object_foreach(fns, name, bh) {
    hostfn_t *f = NULL;
    int i;
    for (i = 0; i < r->nfns; i++)
      if (r->fns[i].kernel == k && strcmp(r->fns[i].name, name) == 0) f = &r->fns[i];
    if (f == NULL && !json_is_null(bh)) {
      if (r->nfns >= MAX_HOSTFNS) case_fail(r, "too many host functions");
      f = &r->fns[r->nfns++];
      f->run = r;
      f->kernel = k;
      snprintf(f->name, sizeof(f->name), "%s", name);
      f->calls = json_array();
    }
    if (f != NULL) f->behaviour = bh;
    r->in_call = 1;
    rc = kh_kernel_expose(r->t.m, r->ids[k], name, json_is_null(bh) ? NULL : case_hostfn, f);
    r->in_call = 0;
    if (rc != 0) break;
  }
  expect_outcome(r, exp, rc, rc != 0 ? kh_manager_errmsg(r->t.m) : "", "expose");
}

static void step_host_calls(run_t *r, json_t *step) {
  const char *name = json_string_value(json_object_get(step, "host_calls"));
  const char *kname = json_string_value(json_object_get(step, "kernel"));
  int k = kernel_index(r, kname ? kname : "k", 1), i;
  json_t *empty = json_array(), *got = empty;
  for (i = 0; i < r->nfns; i++)
    if (r->fns[i].kernel == k && strcmp(r->fns[i].name, name) == 0) got = r->fns[i].calls;
  expect_match(r, json_object_get(step, "expect"), got, "host_calls");
  json_decref(empty);
}

static void run_step(run_t *r, json_t *step) {
  static const char *const calls[] = {"restart", "destroy", "interrupt", "input_reply"};
  size_t i;
  json_t *v;
  if ((v = json_object_get(step, "execute")) != NULL || json_object_get(step, "comm") != NULL) {
    int first = r->nreqs;
    if (v != NULL)
      submit(r, step);
    else
      submit_comm(r, step);
    if (r->reqs[first].calls != 0) case_fail(r, "a completion ran inside kh_kernel_execute");
    wait_requests(r, first, json_object_get(step, "during"));
    check_request(r, &r->reqs[first]);
  } else if ((v = json_object_get(step, "batch")) != NULL) {
    int first = r->nreqs;
    json_t *item;
    json_array_foreach(v, i, item) {
      if (json_object_get(item, "comm") != NULL)
        submit_comm(r, item);
      else
        submit(r, item);
      if (r->reqs[r->nreqs - 1].calls != 0)
        case_fail(r, "a completion ran inside kh_kernel_execute");
    }
    wait_requests(r, first, json_object_get(step, "during"));
    for (i = (size_t)first; i < (size_t)r->nreqs; i++) check_request(r, &r->reqs[i]);
    check_batch_order(r, first);
  } else if ((v = json_object_get(step, "create")) != NULL) {
    step_create(r, json_string_value(v), json_object_get(step, "options"),
                json_object_get(step, "expect"));
  } else if ((v = json_object_get(step, "manager")) != NULL) {
    step_manager(r, v, json_object_get(step, "expect"));
  } else if ((v = json_object_get(step, "kernel_events")) != NULL) {
    step_kernel_events(r, json_string_value(v), json_object_get(step, "expect"));
  } else if ((v = json_object_get(step, "list")) != NULL) {
    step_list(r, v, json_object_get(step, "expect"));
  } else if ((v = json_object_get(step, "info")) != NULL) {
    step_info(r, json_string_value(v), json_object_get(step, "expect"));
  } else if ((v = json_object_get(step, "request")) != NULL) {
    step_request(r, step);
  } else if ((v = json_object_get(step, "expose")) != NULL) {
    step_expose(r, step);
  } else if ((v = json_object_get(step, "host_calls")) != NULL) {
    step_host_calls(r, step);
  } else {
    for (i = 0; i < sizeof(calls) / sizeof(calls[0]); i++)
      if (json_object_get(step, calls[i]) != NULL) {
        step_kernel_call(r, calls[i], step);
        return;
      }
    case_fail(r, "a step with no known verb");
  }
}

int th_case_run(const char *name, const char **mode_out) {
  json_t *c = case_find(name), *steps, *step, *kopts;
  run_t *r;
  char *mopts = NULL;
  size_t i;
  if (c == NULL) return 0;
  r = calloc(1, sizeof(*r));
  r->name = name;
  r->mode = json_string_value(json_object_get(c, "only"));
  if (r->mode == NULL) r->mode = th_mode();
  /* The case's strings die with it; the caller prints the mode after that. */
  *mode_out = strcmp(r->mode, "worker") == 0 ? "worker" : "main_thread";
  if (json_object_get(c, "manager") != NULL)
    mopts = json_dumps(json_object_get(c, "manager"), JSON_COMPACT);
  th_init(&r->t, mopts);
  free(mopts);
  kopts = json_object_get(c, "kernel");
  if (!json_is_null(kopts)) step_create(r, "k", kopts, NULL);
  steps = json_object_get(c, "steps");
  json_array_foreach(steps, i, step) {
    r->step = (int)i + 1;
    run_step(r, step);
  }
  r->step = 0;
  /* Every answer a timer or a request owes is given before the case ends (the manager's close
   * would cancel them, which is no test of anything). */
  while (r->answers_due > 0) run_once(r);
  watchdog_off(r);
  th_fini(&r->t);
  for (i = 0; i < (size_t)r->nfns; i++) json_decref(r->fns[i].calls);
  /* A refused request's callback never runs, not even when the manager closes. */
  for (i = 0; i < (size_t)r->nreqs; i++) {
    if (r->reqs[i].rc != 0 && r->reqs[i].calls != 0)
      case_fail(r, "the callback of a refused call ran");
    if (r->reqs[i].rc == 0 && r->reqs[i].calls != 1) case_fail(r, "a request never completed");
    json_decref(r->reqs[i].reply);
  }
  free(r);
  json_decref(c);
  return 1;
}

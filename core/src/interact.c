/* interact.c: a kernel's editor requests (complete, inspect, is_complete, kernel_info) and its
 * history, on the loop thread. Editor requests do not join the kernel's execute queue: each is
 * checked here, handed to the backend's interact op (which serves it on a thread that does not
 * wait for the running cell) and bounded by a timer of its own; its answer comes back through
 * the inbox (KH__MSG_ANSWER) and is delivered from the drain like every callback. History is
 * the core's own: the cells that advanced the counter, recorded as their replies arrive, so it
 * survives a worker's restart or death and is served without Python; a restart starts a new
 * session. Each entry keeps the text/plain of the cell's execute_result, if it had one, for
 * history_request's `output: true`. The kernel option historyFile appends every entry to a
 * file (one JSON array [session, line, input, output] a line, output a string or null; lines
 * of three, written before outputs were kept, read as without output) and a kernel created
 * with it reads that file back. */
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define DEFAULT_TIMEOUT_MS 10000
#define MAX_IN_FLIGHT 64 /* editor requests per kernel: a console that floods gets KH_EBUSY */

typedef struct ireq_s {
  struct ireq_s *next;
  kh_kernel_t *k; /* NULL once answered: the timer is closing */
  char id[KH__EXEC_ID_MAX];
  kh_request_cb cb;
  void *data;
  uv_timer_t timer;
} ireq_t;

typedef struct {
  int session;
  int line;
  char *input;  /* owned */
  char *output; /* owned: the execute_result's text/plain, or NULL */
} hist_t;

struct kh__interact_s {
  ireq_t *reqs; /* in flight */
  int nreqs;
  hist_t *hist;
  size_t nhist, cap;
  int session;
  char *file;          /* owned: historyFile, or NULL */
  char *pending_input; /* owned: the running cell's code when it may be recorded */
};

/* n bytes of s and a NUL (owned), or NULL. */
static char *copy_text(const char *s, size_t n) {
  char *p = malloc(n + 1);
  if (p == NULL) return NULL;
  memcpy(p, s, n);
  p[n] = '\0';
  return p;
}

/* --- delivery ----------------------------------------------------------------------------- */

typedef struct {
  kh_request_cb cb;
  void *data;
  char kernel_id[KH__ID_MAX];
  int status;
  char *json;   /* owned or NULL */
  char *errmsg; /* owned or NULL */
  size_t len;
} answer_t;

static void run_answer(kh_manager_t *m, void *arg) {
  answer_t *a = arg;
  if (!m->inbox_discarding) {
    m->pending--;
    a->cb(m, a->kernel_id, a->status, a->status == 0 ? a->json : NULL, a->status == 0 ? a->len : 0,
          a->status == 0 ? NULL : a->errmsg, a->data);
  }
  free(a->json);
  free(a->errmsg);
  free(a);
}

/* Queues the callback (counted in m->pending since the request was accepted). */
static void deliver(kh_manager_t *m, kh_request_cb cb, void *data, const char *kernel_id,
                    int status, const char *text, size_t len) {
  answer_t *a = calloc(1, sizeof(*a));
  if (a == NULL) {
    m->pending--;
    return;
  }
  a->cb = cb;
  a->data = data;
  snprintf(a->kernel_id, sizeof(a->kernel_id), "%s", kernel_id);
  a->status = status;
  if (status == 0) {
    a->json = text ? copy_text(text, len) : NULL;
    a->len = len;
    if (a->json == NULL) {
      a->status = KH_ENOMEM;
      a->errmsg = kh__strdup("out of memory copying the reply");
    }
  } else {
    a->errmsg = kh__strdup(text && *text ? text : kh_strerror(status));
  }
  if (kh__defer(m, run_answer, a) != 0) {
    m->pending--;
    free(a->json);
    free(a->errmsg);
    free(a);
  }
}

static void ireq_closed(uv_handle_t *h) {
  free(h->data);
}

/* Takes r out of the kernel's list, answers its caller and closes its timer (which frees it). */
static void finish(kh_kernel_t *k, ireq_t *r, int status, const char *text, size_t len) {
  struct kh__interact_s *st = k->interact;
  ireq_t **p;
  for (p = &st->reqs; *p; p = &(*p)->next)
    if (*p == r) {
      *p = r->next;
      st->nreqs--;
      break;
    }
  deliver(k->m, r->cb, r->data, k->id, status, text, len);
  r->k = NULL;
  uv_timer_stop(&r->timer);
  uv_close((uv_handle_t *)&r->timer, ireq_closed);
  kh__manager_update_ref(k->m);
}

static void on_timeout(uv_timer_t *t) {
  ireq_t *r = t->data;
  char msg[128];
  if (r->k == NULL) return;
  /* The kernel's side stops the work at the same deadline (py-interact.c's watchdog); its late
   * answer, if any, finds no request and is dropped. */
  snprintf(msg, sizeof(msg), "the request took longer than its timeout");
  finish(r->k, r, UV_ETIMEDOUT, msg, strlen(msg));
}

void kh__kernel_on_answer(kh_kernel_t *k, const char *id, int status, const char *json,
                          size_t len) {
  struct kh__interact_s *st = k->interact;
  ireq_t *r;
  if (st == NULL) return;
  for (r = st->reqs; r; r = r->next)
    if (strcmp(r->id, id) == 0) break;
  if (r == NULL) return; /* timed out or canceled already */
  if (status == 0) {
    /* A worker's frames are hostile by assumption: the answer must be a JSON object. */
    json_t *doc = json_loadb(json, len, 0, NULL);
    int ok = json_is_object(doc);
    json_decref(doc);
    if (!ok) {
      static const char bad[] = "the kernel's answer is not a JSON object";
      finish(k, r, KH_EPROTO, bad, sizeof(bad) - 1);
      return;
    }
  } else if (status != UV_ETIMEDOUT && status != KH_EPYTHON && status != KH_EKERNELDEAD &&
             status != KH_ENOMEM) {
    status = KH_EPYTHON;
  }
  finish(k, r, status, json, len);
}

void kh__interact_fail_all(kh_kernel_t *k, int status, const char *msg) {
  struct kh__interact_s *st = k->interact;
  while (st != NULL && st->reqs != NULL) {
    if (k->ops->interact_cancel != NULL) k->ops->interact_cancel(k, st->reqs->id);
    finish(k, st->reqs, status, msg, strlen(msg));
  }
}

/* --- requests ----------------------------------------------------------------------------- */

/* Checks what every editor request needs: a live, ready kernel that can serve it. */
static kh_kernel_t *usable(kh_manager_t *m, const char *kernel_id, kh_request_cb cb, int *rc) {
  kh_kernel_t *k;
  if (cb == NULL) {
    *rc = KH_EINVAL;
    return NULL;
  }
  if ((k = kh__kernel_lookup(m, kernel_id, rc)) == NULL) return NULL;
  if (k->state == KH__K_DEAD) {
    kh__set_err(m->errmsg, "kernel \"%s\" is dead: %s", kernel_id, k->dead_reason);
    *rc = KH_EKERNELDEAD;
    return NULL;
  }
  if (k->state == KH__K_STARTING || k->state == KH__K_RESTARTING) {
    kh__set_err(m->errmsg, "kernel \"%s\" is %s", kernel_id,
                k->state == KH__K_STARTING ? "still starting" : "restarting");
    *rc = KH_EBUSY;
    return NULL;
  }
  if (k->interact == NULL) {
    *rc = KH_ENOMEM;
    return NULL;
  }
  *rc = 0;
  return k;
}

/* The number of code points of valid UTF-8 text. */
static size_t code_points(const char *s, size_t len) {
  size_t i, n = 0;
  for (i = 0; i < len; i++)
    if (((unsigned char)s[i] & 0xC0) != 0x80) n++;
  return n;
}

/* Checks code and the cursor (replacing -1 by the end). Fills m->errmsg. */
static int check_code_cursor(kh_manager_t *m, const char *code, size_t len, int64_t *cursor) {
  int rc = kh__check_code(code, len, m->opts.max_code_bytes, m->errmsg);
  size_t n;
  if (rc != 0) return rc;
  n = code_points(code, len);
  if (*cursor == -1) *cursor = (int64_t)n;
  if (*cursor < 0 || (uint64_t)*cursor > n) {
    kh__set_err(m->errmsg,
                "cursor position %lld is out of range: the code has %zu code points (positions "
                "count Unicode code points, from 0 to %zu)",
                (long long)*cursor, n, n);
    return KH_EINVAL;
  }
  return 0;
}

/* Hands one request to the backend. `content` is owned by the caller. */
static int start(kh_kernel_t *k, const char *op, json_t *content, uint64_t timeout_ms,
                 kh_request_cb cb, void *data) {
  kh_manager_t *m = k->m;
  struct kh__interact_s *st = k->interact;
  ireq_t *r;
  char *text;
  int rc;
  if (k->ops->interact == NULL) {
    kh__set_err(m->errmsg, "kernel \"%s\" cannot serve %s requests", k->id, op);
    return KH_ENOTSUP;
  }
  if (st->nreqs >= MAX_IN_FLIGHT) {
    kh__set_err(m->errmsg, "kernel \"%s\" has %d editor requests in flight already", k->id,
                st->nreqs);
    return KH_EBUSY;
  }
  if (content == NULL || (text = json_dumps(content, JSON_COMPACT)) == NULL) return KH_ENOMEM;
  r = calloc(1, sizeof(*r));
  if (r == NULL) {
    free(text);
    return KH_ENOMEM;
  }
  if (timeout_ms == 0) timeout_ms = DEFAULT_TIMEOUT_MS;
  kh__uuid(r->id);
  rc = k->ops->interact(k, r->id, op, text, strlen(text), timeout_ms);
  free(text);
  if (rc != 0) {
    free(r);
    if (!m->errmsg[0]) kh__set_err(m->errmsg, "the kernel could not take the request");
    return rc;
  }
  r->k = k;
  r->cb = cb;
  r->data = data;
  uv_timer_init(m->loop, &r->timer);
  uv_unref((uv_handle_t *)&r->timer); /* m->pending keeps the loop alive */
  r->timer.data = r;
  uv_timer_start(&r->timer, on_timeout, timeout_ms, 0);
  r->next = st->reqs;
  st->reqs = r;
  st->nreqs++;
  m->pending++;
  kh__manager_update_ref(m);
  return 0;
}

static int code_request(kh_manager_t *m, const char *kernel_id, const char *op, const char *code,
                        size_t len, int64_t cursor, int detail, uint64_t timeout_ms,
                        kh_request_cb cb, void *data) {
  kh_kernel_t *k;
  json_t *c;
  int rc;
  if ((k = usable(m, kernel_id, cb, &rc)) == NULL) return rc;
  if ((rc = check_code_cursor(m, code, len, &cursor)) != 0) return rc;
  c = json_pack("{s:s%}", "code", code, len);
  if (c == NULL) return KH_ENOMEM;
  if (strcmp(op, "is_complete") != 0) json_object_set_new(c, "cursor_pos", json_integer(cursor));
  if (strcmp(op, "inspect") == 0) json_object_set_new(c, "detail_level", json_integer(detail));
  rc = start(k, op, c, timeout_ms, cb, data);
  json_decref(c);
  return rc;
}

int kh_kernel_complete(kh_manager_t *m, const char *kernel_id, const char *code, size_t len,
                       int64_t cursor_pos, uint64_t timeout_ms, kh_request_cb cb, void *data) {
  return code_request(m, kernel_id, "complete", code, len, cursor_pos, 0, timeout_ms, cb, data);
}

int kh_kernel_inspect(kh_manager_t *m, const char *kernel_id, const char *code, size_t len,
                      int64_t cursor_pos, int detail_level, uint64_t timeout_ms, kh_request_cb cb,
                      void *data) {
  if (m != NULL && (detail_level < 0 || detail_level > 1)) {
    kh__set_err(m->errmsg, "detail level %d: Jupyter's are 0 and 1", detail_level);
    return KH_EINVAL;
  }
  return code_request(m, kernel_id, "inspect", code, len, cursor_pos, detail_level, timeout_ms, cb,
                      data);
}

int kh_kernel_is_complete(kh_manager_t *m, const char *kernel_id, const char *code, size_t len,
                          uint64_t timeout_ms, kh_request_cb cb, void *data) {
  return code_request(m, kernel_id, "is_complete", code, len, 0, 0, timeout_ms, cb, data);
}

int kh_kernel_kernel_info(kh_manager_t *m, const char *kernel_id, uint64_t timeout_ms,
                          kh_request_cb cb, void *data) {
  kh_kernel_t *k;
  json_t *c;
  char version[32];
  int rc;
  if ((k = usable(m, kernel_id, cb, &rc)) == NULL) return rc;
  snprintf(version, sizeof(version), "%d.%d.%d", KH_VERSION_MAJOR, KH_VERSION_MINOR,
           KH_VERSION_PATCH);
  c = json_pack("{s:s}", "implementation_version", version);
  rc = start(k, "kernel_info", c, timeout_ms, cb, data);
  json_decref(c);
  return rc;
}

/* --- history ------------------------------------------------------------------------------ */

static int hist_add(struct kh__interact_s *st, int session, int line, const char *input,
                    const char *output) {
  hist_t *h;
  if (st->nhist == st->cap) {
    size_t cap = st->cap ? st->cap * 2 : 64;
    hist_t *n = realloc(st->hist, cap * sizeof(*n));
    if (n == NULL) return KH_ENOMEM;
    st->hist = n;
    st->cap = cap;
  }
  h = &st->hist[st->nhist];
  if ((h->input = kh__strdup(input)) == NULL) return KH_ENOMEM;
  h->output = NULL;
  if (output != NULL && (h->output = kh__strdup(output)) == NULL) {
    free(h->input);
    return KH_ENOMEM;
  }
  h->session = session;
  h->line = line;
  st->nhist++;
  return 0;
}

/* Reads historyFile back: lines that are not [session, line, input(, output)] are skipped (a
 * file cut short by a crash keeps what it had). Sessions continue after the file's last. */
static void hist_load(struct kh__interact_s *st) {
  FILE *f = fopen(st->file, "r");
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  if (f == NULL) return;
  while ((n = getline(&line, &cap, f)) > 0) {
    json_t *a = json_loadb(line, (size_t)n, 0, NULL);
    json_t *out = json_array_get(a, 3);
    if (json_is_array(a) && (json_array_size(a) == 3 || json_array_size(a) == 4) &&
        json_is_integer(json_array_get(a, 0)) && json_is_integer(json_array_get(a, 1)) &&
        json_is_string(json_array_get(a, 2)) &&
        (out == NULL || json_is_null(out) || json_is_string(out))) {
      int s = (int)json_integer_value(json_array_get(a, 0));
      if (hist_add(st, s, (int)json_integer_value(json_array_get(a, 1)),
                   json_string_value(json_array_get(a, 2)), json_string_value(out)) == 0 &&
          s >= st->session)
        st->session = s + 1;
    }
    json_decref(a);
  }
  free(line);
  fclose(f);
}

int kh__interact_open(kh_kernel_t *k) {
  struct kh__interact_s *st = calloc(1, sizeof(*st));
  const char *file = json_string_value(json_object_get(k->opts.all, "history_file"));
  if (st == NULL) return KH_ENOMEM;
  st->session = 1;
  if (file != NULL && (st->file = kh__strdup(file)) == NULL) {
    free(st);
    return KH_ENOMEM;
  }
  if (st->file != NULL) hist_load(st);
  k->interact = st;
  return 0;
}

void kh__interact_free(kh_kernel_t *k) {
  struct kh__interact_s *st = k->interact;
  size_t i;
  if (st == NULL) return;
  for (i = 0; i < st->nhist; i++) {
    free(st->hist[i].input);
    free(st->hist[i].output);
  }
  free(st->hist);
  free(st->file);
  free(st->pending_input);
  free(st);
  k->interact = NULL;
}

void kh__interact_new_session(kh_kernel_t *k) {
  if (k->interact != NULL) k->interact->session++;
}

void kh__history_cell_started(kh_kernel_t *k, const kh__request_t *r) {
  struct kh__interact_s *st = k->interact;
  size_t i;
  if (st == NULL) return;
  free(st->pending_input);
  st->pending_input = NULL;
  if (!r->store_history || r->code == NULL) return;
  for (i = 0; i < r->len; i++)
    if (r->code[i] != ' ' && r->code[i] != '\t' && r->code[i] != '\n' && r->code[i] != '\r') break;
  if (i == r->len) return; /* blank cells do not count */
  st->pending_input = copy_text(r->code, r->len);
}

void kh__history_cell_ended(kh_kernel_t *k, int prev_count, int count, const char *output) {
  struct kh__interact_s *st = k->interact;
  if (st == NULL || st->pending_input == NULL) return;
  if (count > prev_count && hist_add(st, st->session, count, st->pending_input, output) == 0 &&
      st->file != NULL) {
    json_t *a = json_pack("[i,i,s,s?]", st->session, count, st->pending_input, output);
    char *line = a ? json_dumps(a, JSON_COMPACT) : NULL;
    FILE *f = line ? fopen(st->file, "a") : NULL;
    /* Small appends on the loop thread: one line per counted cell. */
    if (f != NULL) {
      fprintf(f, "%s\n", line);
      fclose(f);
    }
    free(line);
    json_decref(a);
  }
  free(st->pending_input);
  st->pending_input = NULL;
}

/* One entry as Jupyter's history_reply has it: [session, line, input], or with `output`
 * [session, line, [input, output]] (output null when the cell had no execute_result). */
static int push_entry(json_t *list, const hist_t *h, int output) {
  if (output)
    return json_array_append_new(
        list, json_pack("[i,i,[s,s?]]", h->session, h->line, h->input, h->output));
  return json_array_append_new(list, json_pack("[i,i,s]", h->session, h->line, h->input));
}

/* Integer member `key` of req, or def when absent; -1 (KH_EINVAL) when it is not an integer. */
static int int_member(const json_t *req, const char *key, json_int_t def, json_int_t *out) {
  json_t *v = json_object_get(req, key);
  if (v == NULL || json_is_null(v)) {
    *out = def;
    return 0;
  }
  if (!json_is_integer(v)) return -1;
  *out = json_integer_value(v);
  return 0;
}

static int history_build(kh_manager_t *m, struct kh__interact_s *st, json_t *req, json_t *list) {
  const char *type = json_string_value(json_object_get(req, "hist_access_type"));
  json_t *o = json_object_get(req, "output");
  int output = json_is_true(o);
  json_int_t n, session, start, stop;
  size_t i;
  if (o != NULL && !json_is_boolean(o) && !json_is_null(o)) {
    kh__set_err(m->errmsg, "history request: output must be a boolean");
    return KH_EINVAL;
  }
  if (type == NULL) {
    kh__set_err(m->errmsg, "history request without hist_access_type (tail, range or search)");
    return KH_EINVAL;
  }
  if (strcmp(type, "tail") == 0) {
    if (int_member(req, "n", 10, &n) != 0 || n < 0) {
      kh__set_err(m->errmsg, "history tail: n must be a non-negative integer");
      return KH_EINVAL;
    }
    i = st->nhist > (size_t)n ? st->nhist - (size_t)n : 0;
    for (; i < st->nhist; i++) push_entry(list, &st->hist[i], output);
    return 0;
  }
  if (strcmp(type, "range") == 0) {
    if (int_member(req, "session", 0, &session) != 0 || int_member(req, "start", 1, &start) != 0 ||
        int_member(req, "stop", -1, &stop) != 0) {
      kh__set_err(m->errmsg, "history range: session, start and stop must be integers");
      return KH_EINVAL;
    }
    /* IPython's rule: 0 is the current session, negative ones count back from it. */
    if (session <= 0) session += st->session;
    for (i = 0; i < st->nhist; i++) {
      const hist_t *h = &st->hist[i];
      if (h->session == session && h->line >= start && (stop < 0 || h->line < stop))
        push_entry(list, h, output);
    }
    return 0;
  }
  if (strcmp(type, "search") == 0) {
    json_t *p = json_object_get(req, "pattern");
    const char *pattern = json_is_string(p) ? json_string_value(p) : "*";
    int unique = json_is_true(json_object_get(req, "unique"));
    size_t count = 0;
    json_t *rev = json_array();
    if (p != NULL && !json_is_string(p)) {
      json_decref(rev);
      kh__set_err(m->errmsg, "history search: pattern must be a string (a glob)");
      return KH_EINVAL;
    }
    if (int_member(req, "n", 0, &n) != 0 || n < 0) {
      json_decref(rev);
      kh__set_err(m->errmsg, "history search: n must be a non-negative integer");
      return KH_EINVAL;
    }
    if (rev == NULL) return KH_ENOMEM;
    /* Newest first, so that n keeps the last matches and unique the latest of each input;
     * then reversed into the reply's oldest-first order. */
    for (i = st->nhist; i-- > 0 && (n == 0 || count < (size_t)n);) {
      const hist_t *h = &st->hist[i];
      size_t j;
      int dup = 0;
      if (fnmatch(pattern, h->input, 0) != 0) continue;
      if (unique)
        for (j = i + 1; j < st->nhist && !dup; j++)
          dup = strcmp(st->hist[j].input, h->input) == 0 &&
                fnmatch(pattern, st->hist[j].input, 0) == 0;
      if (dup) continue;
      push_entry(rev, h, output);
      count++;
    }
    for (i = json_array_size(rev); i-- > 0;) json_array_append(list, json_array_get(rev, i));
    json_decref(rev);
    return 0;
  }
  kh__set_err(m->errmsg, "history request: hist_access_type \"%s\" is not tail, range or search",
              type);
  return KH_EINVAL;
}

int kh_kernel_history(kh_manager_t *m, const char *kernel_id, const char *request_json,
                      kh_request_cb cb, void *data) {
  kh_kernel_t *k;
  json_t *req, *reply, *list;
  char *text;
  int rc;
  if (cb == NULL) return KH_EINVAL;
  if ((k = kh__kernel_lookup(m, kernel_id, &rc)) == NULL) return rc;
  if (k->interact == NULL) return KH_ENOMEM;
  req = json_loads(request_json ? request_json : "", 0, NULL);
  if (!json_is_object(req)) {
    json_decref(req);
    kh__set_err(m->errmsg, "the history request must be a JSON object");
    return KH_EINVAL;
  }
  list = json_array();
  if (list == NULL) {
    json_decref(req);
    return KH_ENOMEM;
  }
  rc = history_build(m, k->interact, req, list);
  json_decref(req);
  if (rc != 0) {
    json_decref(list);
    return rc;
  }
  reply = json_pack("{s:s, s:o}", "status", "ok", "history", list);
  text = reply ? json_dumps(reply, JSON_COMPACT) : NULL;
  json_decref(reply);
  if (text == NULL) return KH_ENOMEM;
  /* Served at once, answered from the loop like every callback (never inside this call). */
  m->pending++;
  deliver(m, cb, data, k->id, 0, text, strlen(text));
  free(text);
  kh__manager_update_ref(m);
  return 0;
}

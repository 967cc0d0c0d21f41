/* runner.c: runs one named C test per process (ctest registers each name): a TEST() of
 * tests/c/test_<concept>.c, or else a case of tests/cases/<concept>.json (cases.c); and the fixture
 * helpers from kh_test.h. */
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kh_test.h"

typedef struct {
  const char *name;
  th_fn fn;
} th_entry_t;

static th_entry_t tests[512];
static int ntests;

void th_register(const char *name, th_fn fn) {
  if (ntests < (int)(sizeof(tests) / sizeof(tests[0]))) {
    tests[ntests].name = name;
    tests[ntests].fn = fn;
    ntests++;
  }
}

int main(int argc, char **argv) {
  const char *mode;
  int i;
  if (argc < 2) {
    for (i = 0; i < ntests; i++) printf("%s\n", tests[i].name);
    return 0;
  }
  for (i = 0; i < ntests; i++) {
    if (strcmp(tests[i].name, argv[1]) == 0) {
      tests[i].fn();
      printf("ok %s (%s)\n", argv[1], th_mode());
      return 0;
    }
  }
  if (th_case_run(argv[1], &mode)) {
    printf("ok %s (case, %s)\n", argv[1], mode);
    return 0;
  }
  fprintf(stderr, "no test or case named %s\n", argv[1]);
  return 2;
}

const char *th_mode(void) {
  const char *m = getenv("KH_TEST_MODE");
  return m && *m ? m : "main_thread";
}

const char *th_opts(const char *extra) {
  static char buf[8][2048];
  static int slot;
  char *b = buf[slot++ % 8];
  snprintf(b, 2048, "{\"mode\":\"%s\"%s%s}", th_mode(), extra && *extra ? "," : "",
           extra ? extra : "");
  return b;
}

/* Puts each binary value where its JSON Pointer says, as {"$binary": "<hex of its bytes>"}: what
 * the cases' $bytes matcher looks at (tests/cases/README.md). Fails on a path that leads to
 * anything but a null: the core promises that. */
void th_put_buffers(json_t *doc, const kh_buffer_t *b, size_t n) {
  size_t i, k;
  for (i = 0; i < n; i++) {
    const char *p = b[i].path;
    json_t *cur = doc, *hex;
    char key[512], *h = malloc(2 * b[i].len + 1);
    for (k = 0; k < b[i].len; k++) sprintf(h + 2 * k, "%02x", ((const unsigned char *)b[i].data)[k]);
    h[2 * b[i].len] = '\0';
    hex = json_pack("{s:s}", "$binary", h);
    free(h);
    while (cur != NULL && *p == '/') {
      size_t kn = 0;
      p++;
      while (*p && *p != '/' && kn + 1 < sizeof(key)) {
        char c = *p++;
        if (c == '~' && (*p == '0' || *p == '1')) c = *p++ == '0' ? '~' : '/';
        key[kn++] = c;
      }
      key[kn] = '\0';
      if (*p == '\0') {
        json_t *old = json_is_object(cur) ? json_object_get(cur, key)
                                          : json_array_get(cur, (size_t)strtoul(key, NULL, 10));
        if (!json_is_null(old)) FAIL("buffer path %s does not lead to a null", b[i].path);
        if (json_is_object(cur))
          json_object_set(cur, key, hex);
        else
          json_array_set(cur, (size_t)strtoul(key, NULL, 10), hex);
        break;
      }
      cur = json_is_object(cur) ? json_object_get(cur, key)
                                : json_array_get(cur, (size_t)strtoul(key, NULL, 10));
    }
    if (cur == NULL) FAIL("buffer path %s leads nowhere", b[i].path);
    json_decref(hex);
  }
}

static void on_event(kh_manager_t *m, const kh_event_t *ev, void *data) {
  th_t *t = data;
  th_event_t *e;
  json_error_t err;
  (void)m;
  if (t->nevents >= TH_MAX_EVENTS) FAIL("too many events");
  e = &t->events[t->nevents++];
  e->type = ev->type;
  snprintf(e->kernel_id, sizeof(e->kernel_id), "%s", ev->kernel_id);
  snprintf(e->exec_id, sizeof(e->exec_id), "%s", ev->execution_id);
  /* Output may hold NUL characters (print("\0"), binary bytes on fd 1): valid JSON ("\u0000"). */
  e->data = json_loadb(ev->json, ev->json_len, JSON_ALLOW_NUL, &err);
  if (e->data == NULL)
    FAIL("event %s has invalid JSON (%s): %.*s", ev->type_name, err.text, (int)ev->json_len,
         ev->json);
  if (strlen(ev->json) != ev->json_len) FAIL("event JSON length mismatch");
  th_put_buffers(e->data, ev->buffers, ev->nbuffers);
}

static void on_watchdog(uv_timer_t *h) {
  (void)h;
  FAIL("watchdog: the awaited callback or event never came");
}

/* KH_TEST_POOL ("fork" or "spawn"): every manager that does not choose a pool itself gets one,
 * so that one suite runs with kernels from the fork server, the warm pool, or cold (unset). */
static char *with_test_pool(const char *manager_opts) {
  const char *pool = getenv("KH_TEST_POOL");
  json_t *o;
  char *s;
  if (pool == NULL || !*pool) return NULL;
  o = manager_opts ? json_loads(manager_opts, 0, NULL) : json_object();
  if (!json_is_object(o) || json_object_get(o, "pool") != NULL) {
    json_decref(o);
    return NULL;
  }
  json_object_set_new(o, "pool",
                      strcmp(pool, "fork") == 0 ? json_pack("{s:s, s:i}", "mode", "fork", "size", 1)
                                                : json_pack("{s:i}", "size", 1));
  s = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  return s;
}

void th_init(th_t *t, const char *manager_opts) {
  char *pooled = with_test_pool(manager_opts);
  memset(t, 0, sizeof(*t));
  ASSERT_INT(uv_loop_init(&t->loop), ==, 0);
  if (kh_manager_new(&t->m, &t->loop, pooled ? pooled : manager_opts) != 0)
    FAIL("kh_manager_new: %s", kh_manager_errmsg(NULL));
  free(pooled);
  ASSERT_INT(kh_subscribe(t->m, NULL, KH_EVENT_ALL, on_event, t, &t->sub), ==, 0);
  ASSERT(t->sub > 0);
  uv_timer_init(&t->loop, &t->watchdog);
}

static void on_closed(kh_manager_t *m, void *data) {
  (void)m;
  *(int *)data = 1;
}

static void walk_cb(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) fprintf(stderr, "handle left open: type %d\n", (int)h->type);
}

int th_in_close;

void th_fini(th_t *t) {
  int closed = 0, i, rc;
  th_in_close = 1;
  rc = kh_manager_close(t->m, on_closed, &closed);
  th_in_close = 0;
  ASSERT_INT(rc, ==, 0);
  th_run_until(t, &closed);
  uv_close((uv_handle_t *)&t->watchdog, NULL);
  uv_run(&t->loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&t->loop) != 0) {
    uv_walk(&t->loop, walk_cb, NULL);
    FAIL("uv_loop_close failed: handles left behind");
  }
  for (i = 0; i < t->nevents; i++) json_decref(t->events[i].data);
  t->nevents = 0;
}

void th_run_until(th_t *t, int *flag) {
  uv_timer_start(&t->watchdog, on_watchdog, 60000, 0);
  while (!*flag) uv_run(&t->loop, UV_RUN_ONCE);
  uv_timer_stop(&t->watchdog);
}

int th_count(th_t *t, int type, const char *exec_id) {
  int i, n = 0;
  for (i = 0; i < t->nevents; i++)
    if (t->events[i].type == type &&
        (exec_id == NULL || strcmp(exec_id, t->events[i].exec_id) == 0))
      n++;
  return n;
}

th_event_t *th_find(th_t *t, int type, const char *exec_id, int nth) {
  int i;
  for (i = 0; i < t->nevents; i++)
    if (t->events[i].type == type &&
        (exec_id == NULL || strcmp(exec_id, t->events[i].exec_id) == 0) && nth-- == 0)
      return &t->events[i];
  return NULL;
}

void th_wait_events(th_t *t, int type, const char *exec_id, int n) {
  uv_timer_start(&t->watchdog, on_watchdog, 60000, 0);
  while (th_count(t, type, exec_id) < n) uv_run(&t->loop, UV_RUN_ONCE);
  uv_timer_stop(&t->watchdog);
}

static void on_created(kh_manager_t *m, const char *id, int status, const char *errmsg,
                       void *data) {
  th_result_t *r = data;
  (void)m;
  r->done = 1;
  r->status = status;
  snprintf(r->id, sizeof(r->id), "%s", id);
  snprintf(r->errmsg, sizeof(r->errmsg), "%s", errmsg ? errmsg : "");
}

const char *th_create(th_t *t, const char *opts_json, char *id_buf) {
  th_result_t r;
  int rc;
  memset(&r, 0, sizeof(r));
  rc = kh_kernel_create(t->m, opts_json, id_buf, 64, on_created, &r);
  if (rc != 0) FAIL("kh_kernel_create: %s: %s", kh_err_name(rc), kh_manager_errmsg(t->m));
  th_run_until(t, &r.done);
  if (r.status != 0) FAIL("kernel creation failed: %s: %s", kh_err_name(r.status), r.errmsg);
  ASSERT_STR(r.id, id_buf);
  return id_buf;
}

static void on_executed(kh_manager_t *m, const kh_reply_t *rep, int status, void *data) {
  th_result_t *r = data;
  json_error_t err;
  (void)m;
  if (r->done) FAIL("execute callback ran twice");
  r->done = 1;
  r->status = status;
  snprintf(r->id, sizeof(r->id), "%s", rep->execution_id);
  snprintf(r->errmsg, sizeof(r->errmsg), "%s", rep->errmsg ? rep->errmsg : "");
  if (status == 0) {
    r->json = json_loadb(rep->json, rep->json_len, 0, &err);
    if (r->json == NULL) FAIL("reply is not JSON (%s): %s", err.text, rep->json);
    th_put_buffers(r->json, rep->buffers, rep->nbuffers);
    ASSERT_STR(th_s(r->json, "status"), rep->status);
    ASSERT_INT(th_i(r->json, "execution_count"), ==, rep->execution_count);
  } else {
    ASSERT(rep->json == NULL);
  }
}

int th_submit(th_t *t, const char *id, const char *code, const kh_execute_options_t *o,
              th_result_t *res) {
  char exec_id[64];
  int rc;
  memset(res, 0, sizeof(*res));
  rc = kh_kernel_execute(t->m, id, code, strlen(code), o, exec_id, sizeof(exec_id), on_executed,
                         res);
  if (rc == 0) snprintf(res->id, sizeof(res->id), "%s", exec_id);
  return rc;
}

json_t *th_exec(th_t *t, const char *id, const char *code, th_result_t *res) {
  int rc = th_submit(t, id, code, NULL, res);
  if (rc != 0)
    FAIL("kh_kernel_execute(%s): %s: %s", code, kh_err_name(rc), kh_manager_errmsg(t->m));
  th_run_until(t, &res->done);
  if (res->status != 0)
    FAIL("execute(%s) failed: %s: %s", code, kh_err_name(res->status), res->errmsg);
  return res->json;
}

void th_result_free(th_result_t *res) {
  json_decref(res->json);
  res->json = NULL;
}

void th_done_cb(kh_manager_t *m, const char *id, int status, const char *errmsg, void *data) {
  int *d = data;
  (void)m;
  (void)id;
  (void)errmsg;
  d[0] = 1;
  d[1] = status;
}

void th_never_cb(kh_manager_t *m, const kh_reply_t *r, int status, void *data) {
  (void)m;
  (void)r;
  (void)status;
  (void)data;
  FAIL("a callback ran for a call that returned an error");
}

void th_create_error(th_t *t, const char *opts, int code, const char *mention) {
  char id[64];
  int rc = kh_kernel_create(t->m, opts, id, sizeof(id), NULL, NULL);
  if (rc != code)
    FAIL("create(%s): expected %s, got %s (%s)", opts, kh_err_name(code), kh_err_name(rc),
         kh_manager_errmsg(t->m));
  ASSERT_CONTAINS(kh_manager_errmsg(t->m), mention);
}

static void on_destroyed(kh_manager_t *m, const char *id, int status, const char *errmsg,
                         void *data) {
  (void)m;
  (void)id;
  (void)errmsg;
  ASSERT_INT(status, ==, 0);
  *(int *)data = 1;
}

void th_destroy(th_t *t, const char *id) {
  int done = 0;
  ASSERT_INT(kh_kernel_destroy(t->m, id, on_destroyed, &done), ==, 0);
  th_run_until(t, &done);
}

void th_interrupt_sleep(th_t *t, const char *id) {
  th_result_t r;
  ASSERT_INT(
      th_submit(t, id, "import time\nprint('sleeping', flush=True)\ntime.sleep(100)", NULL, &r), ==,
      0);
  th_wait_events(t, KH_EVENT_STREAM, r.id, 1); /* inside the cell, on its way into sleep */
  ASSERT_INT(kh_kernel_interrupt(t->m, id), ==, 0);
  th_run_until(t, &r.done);
  ASSERT_INT(r.status, ==, 0);
  ASSERT_STR(th_s(r.json, "error.ename"), "KeyboardInterrupt");
  th_result_free(&r);
}

json_t *th_get(json_t *j, const char *path) {
  char key[256];
  const char *p = path;
  while (j != NULL && *p) {
    size_t n = strcspn(p, ".[");
    if (n > 0) {
      snprintf(key, sizeof(key), "%.*s", (int)n, p);
      /* MIME keys contain '/', and some contain '.', e.g. "text/plain": dots only split. */
      j = json_object_get(j, key);
      p += n;
    }
    if (*p == '[') {
      long idx = strtol(p + 1, (char **)&p, 10);
      j = json_array_get(j, idx < 0 ? json_array_size(j) + idx : (size_t)idx);
      if (*p == ']') p++;
    }
    if (*p == '.') p++;
  }
  return j;
}

const char *th_s(json_t *j, const char *path) {
  return json_string_value(th_get(j, path));
}

long long th_i(json_t *j, const char *path) {
  json_t *v = th_get(j, path);
  if (!json_is_integer(v)) FAIL("%s is not an integer", path);
  return json_integer_value(v);
}

void th_step(th_t *t) {
  if (!uv_is_active((uv_handle_t *)&t->watchdog))
    uv_timer_start(&t->watchdog, on_watchdog, 60000, 0);
  uv_run(&t->loop, UV_RUN_ONCE);
}

void th_wait_status(th_t *t, const char *exec_id, const char *state) {
  int i, seen = 0;
  uv_timer_start(&t->watchdog, on_watchdog, 60000, 0);
  while (!seen) {
    for (i = 0; i < t->nevents && !seen; i++)
      seen = t->events[i].type == KH_EVENT_STATUS && strcmp(t->events[i].exec_id, exec_id) == 0 &&
             strcmp(th_s(t->events[i].data, "execution_state"), state) == 0;
    if (!seen) uv_run(&t->loop, UV_RUN_ONCE);
  }
  uv_timer_stop(&t->watchdog);
}

static void on_pool_settled(kh_manager_t *m, const char *kernel_id, int status, const char *json,
                            size_t len, const char *errmsg, void *data) {
  int *d = data;
  (void)m;
  (void)kernel_id;
  (void)json;
  (void)len;
  if (status != 0) FAIL("the pool did not settle: %s: %s", kh_err_name(status), errmsg);
  d[0] = 1;
}

void th_pool_settle(th_t *t) {
  int done = 0, rc = kh_manager_pool_ready(t->m, on_pool_settled, &done);
  if (rc == KH_ENOTSUP) return; /* no pool */
  ASSERT_INT(rc, ==, 0);
  th_run_until(t, &done);
}

int th_pid_open(int pid) {
  return (int)syscall(SYS_pidfd_open, pid, 0);
}

void th_wait_pid_gone(int pidfd) {
  struct pollfd p;
  p.fd = pidfd;
  p.events = POLLIN;
  if (poll(&p, 1, 60000) != 1) FAIL("the process did not exit");
  close(pidfd);
}

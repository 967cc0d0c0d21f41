/* test_api.c: the public API's edges that need code: unknown ids, misuse, input the bindings
 * cannot express (invalid UTF-8, JSON text, huge cells), ids, listing, destroy-all,
 * subscriptions and error names. Options the core refuses are data: tests/cases/options.json. */
#include "kh_test.h"

static void never(kh_manager_t *m, const kh_reply_t *r, int status, void *data) {
  (void)m;
  (void)r;
  (void)status;
  (void)data;
  FAIL("a callback ran for a call that returned an error");
}

TEST(kernel_unknown_id) {
  th_t t;
  th_result_t r;
  th_init(&t, NULL);
  ASSERT_ERR(th_submit(&t, "nope", "1", NULL, &r), KH_ENOTFOUND);
  ASSERT_CONTAINS(kh_manager_errmsg(t.m), "nope");
  ASSERT_ERR(kh_kernel_interrupt(t.m, "nope"), KH_ENOTFOUND);
  ASSERT_ERR(kh_kernel_restart(t.m, "nope", NULL, NULL), KH_ENOTFOUND);
  ASSERT_ERR(kh_kernel_destroy(t.m, "nope", NULL, NULL), KH_ENOTFOUND);
  ASSERT_ERR(kh_kernel_input_reply(t.m, "nope", "x"), KH_ENOTFOUND);
  ASSERT(kh_kernel_info(t.m, "nope") == NULL);
  ASSERT_ERR(kh_kernel_execute(t.m, NULL, "1", 1, NULL, NULL, 0, never, NULL), KH_EINVAL);
  ASSERT_ERR(kh_kernel_execute(NULL, "x", "1", 1, NULL, NULL, 0, never, NULL), KH_EINVAL);
  th_fini(&t);
}

static void expect_create_error(th_t *t, const char *opts, int code, const char *mention) {
  char id[64];
  int rc = kh_kernel_create(t->m, opts, id, sizeof(id), NULL, NULL);
  if (rc != code)
    FAIL("create(%s): expected %s, got %s (%s)", opts, kh_err_name(code), kh_err_name(rc),
         kh_manager_errmsg(t->m));
  ASSERT_CONTAINS(kh_manager_errmsg(t->m), mention);
}

/* What only a C caller can hand the core: options that are not a JSON object, and no loop. */
TEST(api_misuse_refused) {
  th_t t;
  kh_manager_t *m = NULL;
  th_init(&t, NULL);
  expect_create_error(&t, "[1, 2]", KH_EOPTION, "object");
  expect_create_error(&t, "{not json", KH_EOPTION, "JSON");
  ASSERT_INT(kh_manager_kernel_count(t.m), ==, 0);
  th_fini(&t);
  ASSERT_ERR(kh_manager_new(&m, NULL, NULL), KH_EINVAL);
  ASSERT(m == NULL);
}

TEST(kernel_invalid_utf8) {
  th_t t;
  char id[64];
  th_result_t r;
  static const char bad[] = "x = '\xff\xfe'";
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  ASSERT_ERR(kh_kernel_execute(t.m, id, bad, sizeof(bad) - 1, NULL, NULL, 0, never, NULL),
             KH_EENCODING);
  ASSERT_CONTAINS(kh_manager_errmsg(t.m), "UTF-8");
  th_exec(&t, id, "'ok \xc3\xa9'", &r); /* valid UTF-8 is fine, and the kernel still works */
  ASSERT_STR(th_s(r.json, "result.data.text/plain"), "'ok \xc3\xa9'");
  th_result_free(&r);
  th_fini(&t);
}

TEST(kernel_huge_cell) {
  th_t t;
  char id[64];
  th_result_t r;
  size_t n = 10u << 20;
  char *big = malloc(n);
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  memset(big, ' ', n);
  memcpy(big, "x = 1", 5);
  ASSERT_ERR(kh_kernel_execute(t.m, id, big, n, NULL, NULL, 0, never, NULL), KH_ETOOBIG);
  ASSERT_CONTAINS(kh_manager_errmsg(t.m), "maxCodeBytes");
  /* a big cell under the limit runs */
  n = 2u << 20;
  big[n - 1] = '\0';
  th_exec(&t, id, big, &r);
  ASSERT_STR(th_s(r.json, "status"), "ok");
  th_result_free(&r);
  free(big);
  th_fini(&t);
}

TEST(kernel_ids) {
  th_t t;
  char a[64], b[64], c[64];
  th_init(&t, NULL);
  th_create(&t, th_opts("\"id\": \"my-kernel\""), a);
  ASSERT_STR(a, "my-kernel");
  expect_create_error(&t, th_opts("\"id\": \"my-kernel\""), KH_EEXIST, "my-kernel");
  th_create(&t, th_opts(""), b);
  th_create(&t, th_opts(""), c);
  ASSERT_INT(strlen(b), ==, 36); /* a UUID */
  ASSERT(strcmp(b, c) != 0);
  ASSERT_INT(kh_kernel_exists(t.m, "my-kernel", NULL), ==, 1);
  th_fini(&t);
}

TEST(manager_list_namespace) {
  th_t t;
  char a[64], b[64], c[64];
  char *s;
  json_t *j;
  th_init(&t, NULL);
  th_create(&t, th_opts("\"namespace\": \"ws1\""), a);
  th_create(&t, th_opts("\"namespace\": \"ws1\""), b);
  th_create(&t, th_opts("\"namespace\": \"ws2\""), c);
  s = kh_manager_list(t.m, "ws1");
  j = json_loads(s, 0, NULL);
  ASSERT_INT(json_array_size(j), ==, 2);
  ASSERT_STR(th_s(j, "[0].namespace"), "ws1");
  ASSERT_STR(th_s(j, "[0].mode"), th_mode());
  ASSERT_STR(th_s(j, "[0].status"), "idle");
  ASSERT(json_is_number(th_get(j, "[0].created")));
  json_decref(j);
  kh_free(s);
  s = kh_manager_list(t.m, NULL);
  j = json_loads(s, 0, NULL);
  ASSERT_INT(json_array_size(j), ==, 3);
  json_decref(j);
  kh_free(s);
  s = kh_kernel_info(t.m, c);
  j = json_loads(s, 0, NULL);
  ASSERT_STR(th_s(j, "id"), c);
  ASSERT_STR(th_s(j, "options.namespace"), "ws2");
  json_decref(j);
  kh_free(s);
  th_fini(&t);
}

static void on_all_destroyed(kh_manager_t *m, const char *id, int status, const char *errmsg,
                             void *data) {
  (void)m;
  (void)id;
  (void)errmsg;
  ((int *)data)[0] = 1;
  ((int *)data)[1] = status;
}

TEST(manager_destroy_all) {
  th_t t;
  char a[64], b[64], c[64];
  int done[2] = {0, -1};
  th_init(&t, NULL);
  th_create(&t, th_opts("\"namespace\": \"ws1\""), a);
  th_create(&t, th_opts("\"namespace\": \"ws1\""), b);
  th_create(&t, th_opts("\"namespace\": \"ws2\""), c);
  ASSERT_INT(kh_manager_destroy_all(t.m, "ws1", on_all_destroyed, done), ==, 0);
  th_run_until(&t, &done[0]);
  ASSERT_INT(done[1], ==, 2);
  ASSERT_INT(kh_kernel_exists(t.m, a, NULL), ==, 0);
  ASSERT_INT(kh_kernel_exists(t.m, b, NULL), ==, 0);
  ASSERT_INT(kh_kernel_exists(t.m, c, NULL), ==, 1);
  done[0] = 0;
  ASSERT_INT(kh_manager_destroy_all(t.m, "empty", on_all_destroyed, done), ==, 0);
  th_run_until(&t, &done[0]); /* runs even when nothing matched */
  ASSERT_INT(done[1], ==, 0);
  done[0] = 0;
  ASSERT_INT(kh_manager_destroy_all(t.m, NULL, on_all_destroyed, done), ==, 0);
  th_run_until(&t, &done[0]);
  ASSERT_INT(done[1], ==, 1);
  ASSERT_INT(kh_manager_kernel_count(t.m), ==, 0);
  th_fini(&t);
}

typedef struct {
  kh_manager_t *m;
  int64_t self;
  int calls;
  int types[64];
} counter_t;

static void count_cb(kh_manager_t *m, const kh_event_t *ev, void *data) {
  counter_t *c = data;
  (void)m;
  if (c->calls < 64) c->types[c->calls] = ev->type;
  c->calls++;
}

static void unsub_self_cb(kh_manager_t *m, const kh_event_t *ev, void *data) {
  counter_t *c = data;
  (void)ev;
  c->calls++;
  ASSERT_INT(kh_unsubscribe(m, c->self), ==, 0);
  ASSERT_ERR(kh_unsubscribe(m, c->self), KH_ENOTFOUND);
}

TEST(bus_subscribe_filters) {
  th_t t;
  char a[64], b[64];
  th_result_t r;
  counter_t only_a_results = {0}, all_b = {0}, every = {0};
  int64_t s1, s2, s3;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), a);
  th_create(&t, th_opts(""), b);
  ASSERT_INT(kh_subscribe(t.m, a, KH_EVENT_EXECUTE_RESULT, count_cb, &only_a_results, &s1), ==, 0);
  ASSERT_INT(kh_subscribe(t.m, b, KH_EVENT_ALL, count_cb, &all_b, &s2), ==, 0);
  ASSERT_INT(kh_subscribe(t.m, NULL, KH_EVENT_STREAM, count_cb, &every, &s3), ==, 0);
  ASSERT(s1 > 0 && s2 > 0 && s3 > 0 && s1 != s2 && s2 != s3);
  ASSERT_ERR(kh_subscribe(t.m, a, 99, count_cb, NULL, &s1), KH_EINVAL);
  ASSERT_INT(s1, ==, 0);
  th_exec(&t, a, "print('x'); 1", &r);
  th_result_free(&r);
  th_exec(&t, b, "print('y'); 2", &r);
  th_result_free(&r);
  ASSERT_INT(only_a_results.calls, ==, 1);
  ASSERT_INT(only_a_results.types[0], ==, KH_EVENT_EXECUTE_RESULT);
  ASSERT_INT(all_b.calls, ==, 4); /* busy, stream, execute_result, idle */
  ASSERT_INT(every.calls, ==, 2);
  ASSERT_INT(kh_unsubscribe(t.m, s2), ==, 0);
  ASSERT_ERR(kh_unsubscribe(t.m, s2), KH_ENOTFOUND);
  th_exec(&t, b, "3", &r);
  th_result_free(&r);
  ASSERT_INT(all_b.calls, ==, 4);
  th_fini(&t);
}

TEST(bus_unsubscribe_in_callback) {
  th_t t;
  char a[64];
  th_result_t r;
  counter_t c = {0}, later = {0};
  th_init(&t, NULL);
  th_create(&t, th_opts(""), a);
  ASSERT_INT(kh_subscribe(t.m, a, KH_EVENT_ALL, unsub_self_cb, &c, &c.self), ==, 0);
  ASSERT_INT(kh_subscribe(t.m, a, KH_EVENT_ALL, count_cb, &later, NULL), ==, 0);
  th_exec(&t, a, "1", &r);
  th_result_free(&r);
  ASSERT_INT(c.calls, ==, 1);     /* removed itself on the first event */
  ASSERT_INT(later.calls, ==, 3); /* the next subscriber still saw every event */
  th_fini(&t);
}

TEST(error_names) {
  ASSERT_STR(kh_err_name(KH_ENOTFOUND), "KH_ENOTFOUND");
  ASSERT_STR(kh_err_name(KH_EKERNELDEAD), "KH_EKERNELDEAD");
  ASSERT_STR(kh_err_name(UV_ENOENT), "UV_ENOENT");
  ASSERT_STR(kh_err_name(0), "OK");
  ASSERT_STR(kh_strerror(KH_ECANCELED), "request canceled");
  ASSERT_CONTAINS(kh_strerror(UV_ENOENT), "no such file");
  ASSERT_STR(kh_event_type_name(KH_EVENT_STREAM), "stream");
  ASSERT_INT(kh_event_type_from_name("execute_error"), ==, KH_EVENT_EXECUTE_ERROR);
  ASSERT_INT(kh_event_type_from_name("*"), ==, KH_EVENT_ALL);
  ASSERT_ERR(kh_event_type_from_name("nope"), KH_EINVAL);
  ASSERT(KH_EINVAL < -4100); /* disjoint from libuv's codes */
}

/* test_execute.c: what the execute and input_reply calls refuse that a case file cannot hold:
 * invalid UTF-8 (JSON text is always valid Unicode) and cells of several megabytes. Running
 * cells is data: tests/cases/execute.json. */
#include "kh_test.h"

TEST(kernel_invalid_utf8) {
  th_t t;
  char id[64];
  th_result_t r;
  static const char bad[] = "x = '\xff\xfe'";
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  ASSERT_ERR(kh_kernel_execute(t.m, id, bad, sizeof(bad) - 1, NULL, NULL, 0, th_never_cb, NULL),
             KH_EENCODING);
  ASSERT_CONTAINS(kh_manager_errmsg(t.m), "UTF-8");
  th_exec(&t, id, "'ok \xc3\xa9'", &r); /* valid UTF-8 is fine, and the kernel still works */
  ASSERT_STR(th_s(r.json, "result.data.text/plain"), "'ok \xc3\xa9'");
  th_result_free(&r);
  th_fini(&t);
}

/* An input reply that is not UTF-8 is refused in every mode (main_thread used to accept it and
 * drop it on the way); the cell still waits, and a valid reply (NUL bytes included) reaches it
 * whole. */
TEST(input_reply_invalid_utf8) {
  th_t t;
  char id[64];
  th_result_t r;
  static const char bad[] = "bad\xff", truncated[] = "\xc3", good[] = "ok\0\xc3\xa9";
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  ASSERT_INT(th_submit(&t, id, "x = input('? ')\nlen(x), x == 'ok\\x00\\xe9'", NULL, &r), ==, 0);
  th_wait_events(&t, KH_EVENT_INPUT_REQUEST, r.id, 1);
  ASSERT_ERR(kh_kernel_input_reply(t.m, id, bad, sizeof(bad) - 1), KH_EENCODING);
  ASSERT_CONTAINS(kh_manager_errmsg(t.m), "UTF-8");
  ASSERT_ERR(kh_kernel_input_reply(t.m, id, truncated, sizeof(truncated) - 1), KH_EENCODING);
  ASSERT(!r.done);
  ASSERT_INT(kh_kernel_input_reply(t.m, id, good, sizeof(good) - 1), ==, 0);
  th_run_until(&t, &r.done);
  ASSERT_INT(r.status, ==, 0);
  ASSERT_STR(th_s(r.json, "result.data.text/plain"), "(4, True)");
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
  ASSERT_ERR(kh_kernel_execute(t.m, id, big, n, NULL, NULL, 0, th_never_cb, NULL), KH_ETOOBIG);
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

/* test_interact.c: what a case file cannot hold about editor requests: an interrupt made while
 * one is in flight and no cell runs (Lua's requests block, so a case could only interrupt from
 * an event, and an idle kernel has none), and historyFile (a path of the test's own). The rest
 * is data: tests/cases/interact.json. */
#include <unistd.h>

#include "kh_test.h"

typedef struct {
  int done, status;
  json_t *reply;
} answer_t;

static void on_answer(kh_manager_t *m, const char *kernel_id, int status, const char *json,
                      size_t len, const char *errmsg, void *data) {
  answer_t *a = data;
  (void)m;
  (void)kernel_id;
  (void)errmsg;
  a->done++;
  a->status = status;
  if (status == 0) a->reply = json_loadb(json, len, 0, NULL);
}

/* An interrupt with no cell running still cancels the editor request in flight (KH_ECANCELED,
 * answered from the loop), and stops its work: the next request is served at once. */
TEST(interact_interrupt_idle) {
  th_t t;
  char id[64];
  th_result_t r;
  answer_t a = {0}, b = {0};
  static const char slow[] = "slow.";
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  th_exec(&t, id,
          "class Slow:\n    def __dir__(self):\n        while True:\n            pass\n"
          "slow = Slow()",
          &r);
  th_result_free(&r);
  ASSERT_INT(kh_kernel_complete(t.m, id, slow, sizeof(slow) - 1, -1, 60000, on_answer, &a), ==, 0);
  ASSERT_INT(kh_kernel_interrupt(t.m, id), ==, 0);
  ASSERT_INT(a.done, ==, 0); /* never inside the call */
  th_run_until(&t, &a.done);
  ASSERT_ERR(a.status, KH_ECANCELED);
  ASSERT_INT(kh_kernel_is_complete(t.m, id, "x = 1", 5, 0, on_answer, &b), ==, 0);
  th_run_until(&t, &b.done);
  ASSERT_ERR(b.status, 0);
  ASSERT_STR(th_s(b.reply, "status"), "complete");
  json_decref(b.reply);
  ASSERT_INT(a.done, ==, 1);
  th_fini(&t);
}

static json_t *history(th_t *t, const char *id, const char *req) {
  answer_t a = {0};
  ASSERT_INT(kh_kernel_history(t->m, id, req, on_answer, &a), ==, 0);
  th_run_until(t, &a.done);
  ASSERT_ERR(a.status, 0);
  return a.reply;
}

/* historyFile keeps each cell's output with its input: a kernel created with the file reads
 * both back (output: true), its own session after the file's. */
TEST(history_file_output) {
  th_t t;
  char id[64], id2[64], path[] = "/tmp/kh-history-XXXXXX", opt[128];
  th_result_t r;
  json_t *h, *want;
  int fd = mkstemp(path);
  ASSERT(fd >= 0);
  close(fd);
  snprintf(opt, sizeof(opt), "\"history_file\":\"%s\"", path);
  th_init(&t, NULL);
  th_create(&t, th_opts(opt), id);
  th_exec(&t, id, "x = 20", &r);
  th_result_free(&r);
  th_exec(&t, id, "x * 2 + 2", &r);
  th_result_free(&r);
  th_destroy(&t, id);
  th_create(&t, th_opts(opt), id2);
  th_exec(&t, id2, "'next'", &r);
  th_result_free(&r);
  h = history(&t, id2, "{\"hist_access_type\":\"tail\",\"n\":10,\"output\":true}");
  want = json_loads(
      "[[1,1,[\"x = 20\",null]],[1,2,[\"x * 2 + 2\",\"42\"]],"
      "[2,1,[\"'next'\",\"'next'\"]]]",
      0, NULL);
  if (!json_equal(json_object_get(h, "history"), want)) {
    char *s = json_dumps(h, JSON_COMPACT);
    FAIL("history with output: %s", s);
  }
  json_decref(want);
  json_decref(h);
  th_fini(&t);
  unlink(path);
}

/* test_execute.c: running cells: results, streams, errors, state, counters. */
#include "kh_test.h"

TEST(kernel_execute_result) {
  th_t t;
  char id[64];
  th_result_t r;
  json_t *j;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  j = th_exec(&t, id, "1 + 1", &r);
  ASSERT_STR(th_s(j, "status"), "ok");
  ASSERT_INT(th_i(j, "execution_count"), ==, 1);
  ASSERT_STR(th_s(j, "result.data.text/plain"), "2");
  ASSERT(json_is_object(th_get(j, "result.metadata")));
  /* outputs: busy, execute_result, idle, in order */
  ASSERT_INT(json_array_size(th_get(j, "outputs")), ==, 3);
  ASSERT_STR(th_s(j, "outputs[0].type"), "status");
  ASSERT_STR(th_s(j, "outputs[0].data.execution_state"), "busy");
  ASSERT_STR(th_s(j, "outputs[1].type"), "execute_result");
  ASSERT_INT(th_i(j, "outputs[1].data.execution_count"), ==, 1);
  ASSERT_STR(th_s(j, "outputs[2].data.execution_state"), "idle");
  /* the same events went to subscribers, tagged with kernel and execution ids */
  ASSERT_INT(th_count(&t, KH_EVENT_EXECUTE_RESULT, r.id), ==, 1);
  ASSERT_STR(th_find(&t, KH_EVENT_EXECUTE_RESULT, r.id, 0)->kernel_id, id);
  th_result_free(&r);
  th_fini(&t);
}

TEST(kernel_execute_stream) {
  th_t t;
  char id[64];
  th_result_t r;
  json_t *j;
  int i, n;
  char expect[8192] = "";
  char got[8192] = "";
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  j = th_exec(&t, id, "for i in range(1000): print(i)", &r);
  ASSERT_STR(th_s(j, "status"), "ok");
  ASSERT(th_get(j, "result") == NULL);
  n = th_count(&t, KH_EVENT_STREAM, r.id);
  ASSERT_INT(n, >=, 1);
  ASSERT_INT(n, <, 100); /* batched, not one event per write */
  for (i = 0; i < 1000; i++) snprintf(expect + strlen(expect), 16, "%d\n", i);
  for (i = 0; i < n; i++) {
    th_event_t *e = th_find(&t, KH_EVENT_STREAM, r.id, i);
    ASSERT_STR(th_s(e->data, "name"), "stdout");
    strncat(got, th_s(e->data, "text"), sizeof(got) - strlen(got) - 1);
  }
  ASSERT_STR(got, expect);
  th_result_free(&r);
  th_fini(&t);
}

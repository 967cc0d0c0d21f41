/* test_bus.c: subscriptions: filters by kernel and type, ids and their errors, unsubscribing
 * inside a callback. (Busy/idle bracketing is data: tests/cases/status.json.) */
#include "kh_test.h"

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

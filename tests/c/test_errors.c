/* test_errors.c: error codes and their names, and misuse that only a C caller can commit
 * (options that are not a JSON object, no loop). Options the core refuses are data:
 * tests/cases/options.json. */
#include "kh_test.h"

/* What only a C caller can hand the core: options that are not a JSON object, and no loop. */
TEST(api_misuse_refused) {
  th_t t;
  kh_manager_t *m = NULL;
  th_init(&t, NULL);
  th_create_error(&t, "[1, 2]", KH_EOPTION, "object");
  th_create_error(&t, "{not json", KH_EOPTION, "JSON");
  ASSERT_INT(kh_manager_kernel_count(t.m), ==, 0);
  th_fini(&t);
  ASSERT_ERR(kh_manager_new(&m, NULL, NULL), KH_EINVAL);
  ASSERT(m == NULL);
}

/* NaN and infinities have no JSON form: a C host that writes them (NaN, a number that
 * overflows a double) gets KH_EOPTION, never an option taken as "not given". The bindings, whose
 * numbers can be NaN, refuse them the same way, naming the option. */
TEST(options_nan_infinity) {
  th_t t;
  kh_manager_t *m = NULL;
  th_init(&t, NULL);
  th_create_error(&t, "{\"maxExecutionTime\": NaN}", KH_EOPTION, "JSON");
  th_create_error(&t, "{\"maxExecutionTime\": Infinity}", KH_EOPTION, "JSON");
  th_create_error(&t, "{\"maxExecutionTime\": 1e999}", KH_EOPTION, "JSON");
  th_create_error(&t, "{\"limits\": {\"memoryBytes\": -1e999}}", KH_EOPTION, "JSON");
  ASSERT_INT(kh_manager_kernel_count(t.m), ==, 0);
  ASSERT_ERR(kh_manager_new(&m, &t.loop, "{\"interruptGraceMs\": 1e999}"), KH_EOPTION);
  ASSERT(m == NULL);
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

/* test_comm.c: what a case file cannot hold about comms: the host's bad input, which only C can
 * spell byte by byte (the bindings refuse what they can before the core sees it: their own
 * comm_bad_input tests say what). The rest is data: tests/cases/comm.json. */
#include "kh_test.h"

typedef struct {
  const char *type;
  const char *content; /* NULL: the NULL pointer */
  size_t len;          /* 0: strlen(content) */
  int code;
  const char *mention; /* in the detail text */
} bad_t;

/* Every message the host gets wrong is refused at once with a clear error and queues nothing:
 * no busy status ever comes for it, and the kernel runs the next cell as its only request. */
TEST(comm_bad_input) {
  static const char nul[] = "{\"comm_id\":\"a\0b\",\"target_name\":\"t\"}";
  char long_id[400];
  const bad_t bad[] = {
      {"comm_nope", "{\"comm_id\":\"a\"}", 0, KH_EINVAL, "comm_nope"},
      {"execute_request", "{\"comm_id\":\"a\"}", 0, KH_EINVAL, "unknown comm message type"},
      {NULL, "{\"comm_id\":\"a\"}", 0, KH_EINVAL, "(NULL)"},
      {"comm_open", NULL, 0, KH_EINVAL, "NULL"},
      {"comm_open", "[1]", 0, KH_EINVAL, "object"},
      {"comm_open", "\"comm\"", 0, KH_EINVAL, "object"},
      {"comm_open", "{\"comm_id\":", 0, KH_EINVAL, "not JSON"},
      {"comm_open", "{\"comm_id\":\"a\",\"comm_id\":\"b\",\"target_name\":\"t\"}", 0, KH_EINVAL,
       "not JSON"},
      {"comm_open", "{\"target_name\":\"t\"}", 0, KH_EINVAL, "comm_id"},
      {"comm_msg", "{\"comm_id\":\"\"}", 0, KH_EINVAL, "comm_id"},
      {"comm_msg", "{\"comm_id\":7}", 0, KH_EINVAL, "comm_id"},
      {"comm_open", "{\"comm_id\":\"a\"}", 0, KH_EINVAL, "target_name"},
      {"comm_open", "{\"comm_id\":\"a\",\"target_name\":3}", 0, KH_EINVAL, "target_name"},
      {"comm_open", "{\"comm_id\":\"a\",\"target_name\":\"t\",\"data\":[1]}", 0, KH_EINVAL, "data"},
      {"comm_open", "{\"comm_id\":\"a\",\"target_name\":\"t\",\"metadata\":\"m\"}", 0, KH_EINVAL,
       "metadata"},
      {"comm_open", "{\"comm_id\":\"\\u0000\",\"target_name\":\"t\"}", 0, KH_EINVAL, "not JSON"},
      {"comm_open", "{\"comm_id\":\"\xff\",\"target_name\":\"t\"}", 0, KH_EENCODING, "UTF-8"},
      {"comm_open", "{\"comm_id\":\"\xed\xa0\x80\",\"target_name\":\"t\"}", 0, KH_EENCODING,
       "UTF-8"},
      {"comm_open", nul, sizeof(nul) - 1, KH_EENCODING, "NUL"},
      {"comm_open", long_id, 0, KH_EINVAL, "comm_id"},
      {"comm_msg", "{\"comm_id\":\"never\"}", 0, KH_ECLOSED, "never"},
      {"comm_close", "{\"comm_id\":\"never\"}", 0, KH_ECLOSED, "never"},
  };
  th_t t;
  char id[64], big[600];
  th_result_t r;
  size_t i;
  int busy;
  snprintf(long_id, sizeof(long_id), "{\"comm_id\":\"%0300d\",\"target_name\":\"t\"}", 0);
  th_init(&t, "{\"maxCodeBytes\": 500}");
  th_create(&t, th_opts(""), id);
  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    const bad_t *b = &bad[i];
    size_t len = b->content == NULL ? 0 : b->len ? b->len : strlen(b->content);
    int rc = kh_kernel_comm_send(t.m, id, b->type, b->content, len, NULL, 0);
    if (rc != b->code)
      FAIL("bad input %zu (%s): expected %s, got %s (%s)", i, b->type ? b->type : "NULL",
           kh_err_name(b->code), kh_err_name(rc), kh_manager_errmsg(t.m));
    ASSERT_CONTAINS(kh_manager_errmsg(t.m), b->mention);
  }
  /* Buffers: no array, paths other than /buffers/0..n-1 (or twice), a content "buffers" that
   * does not hold one null per buffer, a buffer without data, too many. */
  {
    static const char open[] = "{\"comm_id\":\"b\",\"target_name\":\"t\"}";
    static const char two[] = "{\"comm_id\":\"b\",\"target_name\":\"t\",\"buffers\":[null,1]}";
    static const char one[] = "{\"comm_id\":\"b\",\"target_name\":\"t\",\"buffers\":[null]}";
    kh_buffer_t b[65];
    for (i = 0; i < 65; i++) {
      b[i].path = "/buffers/0";
      b[i].data = "x";
      b[i].len = 1;
    }
    ASSERT_ERR(kh_kernel_comm_send(t.m, id, "comm_open", open, strlen(open), NULL, 1), KH_EINVAL);
    b[0].path = "/buffers/1";
    ASSERT_ERR(kh_kernel_comm_send(t.m, id, "comm_open", open, strlen(open), b, 1), KH_EINVAL);
    ASSERT_CONTAINS(kh_manager_errmsg(t.m), "/buffers/N");
    b[0].path = "/data/x";
    ASSERT_ERR(kh_kernel_comm_send(t.m, id, "comm_open", open, strlen(open), b, 1), KH_EINVAL);
    b[0].path = "/buffers/00";
    ASSERT_ERR(kh_kernel_comm_send(t.m, id, "comm_open", open, strlen(open), b, 1), KH_EINVAL);
    b[0].path = b[1].path = "/buffers/0";
    ASSERT_ERR(kh_kernel_comm_send(t.m, id, "comm_open", open, strlen(open), b, 2), KH_EINVAL);
    b[1].path = "/buffers/1";
    ASSERT_ERR(kh_kernel_comm_send(t.m, id, "comm_open", two, strlen(two), b, 2), KH_EINVAL);
    ASSERT_ERR(kh_kernel_comm_send(t.m, id, "comm_open", one, strlen(one), b, 2), KH_EINVAL);
    ASSERT_CONTAINS(kh_manager_errmsg(t.m), "buffers");
    ASSERT_ERR(kh_kernel_comm_send(t.m, id, "comm_open", one, strlen(one), NULL, 0), KH_EINVAL);
    b[0].data = NULL;
    ASSERT_ERR(kh_kernel_comm_send(t.m, id, "comm_open", open, strlen(open), b, 1), KH_EINVAL);
    ASSERT_ERR(kh_kernel_comm_send(t.m, id, "comm_open", open, strlen(open), b, 65), KH_EINVAL);
  }
  /* Over maxCodeBytes, no such kernel, no manager. */
  memset(big, ' ', sizeof(big));
  ASSERT_ERR(kh_kernel_comm_send(t.m, id, "comm_msg", big, sizeof(big), NULL, 0), KH_ETOOBIG);
  ASSERT_CONTAINS(kh_manager_errmsg(t.m), "maxCodeBytes");
  ASSERT_ERR(
      kh_kernel_comm_send(t.m, "no-such-kernel", "comm_msg", "{\"comm_id\":\"a\"}", 15, NULL, 0),
      KH_ENOTFOUND);
  ASSERT_ERR(kh_kernel_comm_send(NULL, id, "comm_msg", "{\"comm_id\":\"a\"}", 15, NULL, 0),
             KH_EINVAL);
  /* Nothing was queued: the next cell is the kernel's only request so far. */
  th_exec(&t, id, "1", &r);
  th_result_free(&r);
  for (busy = 0, i = 0; i < (size_t)t.nevents; i++)
    busy += t.events[i].type == KH_EVENT_STATUS &&
            strcmp(th_s(t.events[i].data, "execution_state"), "busy") == 0;
  ASSERT_INT(busy, ==, 1);
  th_destroy(&t, id);
  /* The kernel is gone: no comm of it can be reached. */
  ASSERT_ERR(kh_kernel_comm_send(t.m, id, "comm_msg", "{\"comm_id\":\"a\"}", 15, NULL, 0),
             KH_ENOTFOUND);
  th_fini(&t);
}

/* test_hostcall.c: host functions (kh_kernel_expose, kh_hostcall_return / _error) where the host
 * side needs code: answers after the kernel stopped waiting (interrupt, destroy, restart, close),
 * thread: "host" kernels, forged worker frames, names. The behaviours whose host side is a fixed
 * function are cases (tests/cases/hostcall.json), run by all three harnesses. */
#include "kh_test.h"

/* What the host functions below saw and hold. */
typedef struct {
  int calls;
  char kernel_id[64];
  char name[80];
  json_t *args;          /* the last call's arguments */
  kh_hostcall_t *held;   /* a call kept unanswered */
  const char *answer;    /* JSON to answer with at once, or NULL */
} host_t;

static void host_reset(host_t *h) {
  json_decref(h->args);
  memset(h, 0, sizeof(*h));
}

static void record(host_t *h, const char *kernel_id, const char *name, const char *args,
                   size_t len) {
  h->calls++;
  snprintf(h->kernel_id, sizeof(h->kernel_id), "%s", kernel_id);
  snprintf(h->name, sizeof(h->name), "%s", name);
  json_decref(h->args);
  h->args = json_loadb(args, len, JSON_ALLOW_NUL, NULL);
  if (h->args == NULL || !json_is_array(h->args)) FAIL("host call arguments are not an array: %.*s", (int)len, args);
}

/* Answers h->answer at once (or holds the call when it is NULL). */
static void fn_answer(kh_manager_t *m, const char *kernel_id, const char *name, const char *args,
                      size_t len, const kh_buffer_t *b, size_t nb, kh_hostcall_t *call,
                      void *data) {
  host_t *h = data;
  (void)m;
  (void)b;
  (void)nb;
  record(h, kernel_id, name, args, len);
  if (h->answer == NULL) {
    if (h->held != NULL) FAIL("a second call while one is held");
    h->held = call;
    return;
  }
  ASSERT_INT(kh_hostcall_return(call, h->answer, strlen(h->answer), NULL, 0), ==, 0);
}

/* Answers with its own arguments. */
static void fn_echo(kh_manager_t *m, const char *kernel_id, const char *name, const char *args,
                    size_t len, const kh_buffer_t *b, size_t nb, kh_hostcall_t *call, void *data) {
  host_t *h = data;
  (void)m;
  record(h, kernel_id, name, args, len);
  ASSERT_INT(kh_hostcall_return(call, args, len, b, nb), ==, 0);
}

/* Every value type, both ways; integers exact to the ends of 64 bits, floats to the last bit. */
TEST(hostcall_value_types) {
  th_t t;
  th_result_t r;
  host_t echo = {0}, fixed = {0};
  char id[64];
  json_t *a;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  ASSERT_INT(kh_kernel_expose(t.m, id, "echo", fn_echo, &echo), ==, 0);
  fixed.answer =
      "{\"max\": 9223372036854775807, \"min\": -9223372036854775808, \"f\": 0.1, \"tiny\": 5e-324,"
      " \"s\": \"h\\u00e9llo \\u2603 \\ud83d\\ude00 nul\\u0000\", \"n\": null, \"t\": true,"
      " \"l\": [[], {}, [1, [2, [3]]]], \"e\": \"\"}";
  ASSERT_INT(kh_kernel_expose(t.m, id, "fixed", fn_answer, &fixed), ==, 0);
  th_exec(&t, id,
          "import kernelhost\n"
          "vals = [None, True, False, 0, -1, 2**63 - 1, -2**63, 1.5, -0.25, 1e300, 5e-324, 0.1,\n"
          "        '', 'h\\u00e9llo \\u2603 \\U0001f600', 'nul\\x00byte', [], {}, [1, [2, [3]]],\n"
          "        {'a': {'b': [None]}, 'k/~': 1}, (1, 2)]\n"
          "back = kernelhost.host.echo(*vals)\n"
          "want = [list(v) if isinstance(v, tuple) else v for v in vals]\n"
          "assert back == want, back\n"
          "assert [type(x) for x in back] == [type(x) for x in want], back\n"
          "f = kernelhost.host.fixed()\n"
          "assert f['max'] == 2**63 - 1 and type(f['max']) is int, f\n"
          "assert f['min'] == -2**63 and f['f'] == 0.1 and f['tiny'] == 5e-324, f\n"
          "assert f['s'] == 'h\\u00e9llo \\u2603 \\U0001f600 nul\\x00', f\n"
          "assert f['n'] is None and f['t'] is True and f['e'] == '', f\n"
          "assert f['l'] == [[], {}, [1, [2, [3]]]], f\n"
          "print('ok')",
          &r);
  ASSERT_STR(th_s(r.json, "status"), "ok");
  ASSERT_STR(th_s(r.json, "outputs[1].data.text"), "ok\n");
  /* The host saw exact integers and the types Python sent. */
  a = echo.args;
  ASSERT_INT(json_array_size(a), ==, 20);
  ASSERT(json_is_null(json_array_get(a, 0)));
  ASSERT(json_is_true(json_array_get(a, 1)) && json_is_false(json_array_get(a, 2)));
  ASSERT(json_integer_value(json_array_get(a, 5)) == INT64_MAX);
  ASSERT(json_integer_value(json_array_get(a, 6)) == INT64_MIN);
  ASSERT(json_is_real(json_array_get(a, 7)) && json_real_value(json_array_get(a, 7)) == 1.5);
  ASSERT(json_real_value(json_array_get(a, 11)) == 0.1);
  ASSERT_STR(json_string_value(json_array_get(a, 13)), "h\xc3\xa9llo \xe2\x98\x83 \xf0\x9f\x98\x80");
  ASSERT_INT(json_string_length(json_array_get(a, 14)), ==, 8);
  ASSERT(json_is_array(json_array_get(a, 19)));
  ASSERT_INT(json_integer_value(json_object_get(json_array_get(a, 18), "k/~")), ==, 1);
  th_result_free(&r);
  th_fini(&t);
  host_reset(&echo);
  host_reset(&fixed);
}

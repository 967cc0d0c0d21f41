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

/* Concatenates the text of every stream event of a request, as "name:text" chunks. */
static void stream_text(th_t *t, const char *exec_id, char *out, size_t n) {
  int i;
  th_event_t *e;
  out[0] = '\0';
  for (i = 0; (e = th_find(t, KH_EVENT_STREAM, exec_id, i)) != NULL; i++) {
    snprintf(out + strlen(out), n - strlen(out), "%s:%s", th_s(e->data, "name"),
             th_s(e->data, "text"));
  }
}

TEST(kernel_execute_stream_order) {
  th_t t;
  char id[64], got[1024];
  th_result_t r;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  th_exec(&t, id,
          "import sys\n"
          "print('a')\n"
          "print('b', file=sys.stderr)\n"
          "print('c')\n"
          "display('d')\n"
          "print('e')\n",
          &r);
  /* stdout and stderr keep their interleaving, and stream text never jumps a display */
  stream_text(&t, r.id, got, sizeof(got));
  ASSERT_STR(got, "stdout:a\nstderr:b\nstdout:c\nstdout:e\n");
  {
    int i, disp = -1, last_c = -1, first_e = -1;
    for (i = 0; i < t.nevents; i++) {
      th_event_t *e = &t.events[i];
      if (strcmp(e->exec_id, r.id) != 0) continue;
      if (e->type == KH_EVENT_DISPLAY_DATA) disp = i;
      if (e->type == KH_EVENT_STREAM && strstr(th_s(e->data, "text"), "c")) last_c = i;
      if (e->type == KH_EVENT_STREAM && strstr(th_s(e->data, "text"), "e") && first_e < 0)
        first_e = i;
    }
    ASSERT_INT(last_c, <, disp);
    ASSERT_INT(disp, <, first_e);
  }
  th_result_free(&r);
  th_fini(&t);
}

TEST(kernel_execute_error) {
  th_t t;
  char id[64];
  th_result_t r;
  json_t *j, *tb;
  size_t i;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  j = th_exec(&t, id, "def f():\n    return 1 / 0\nf()", &r);
  ASSERT_STR(th_s(j, "status"), "error");
  ASSERT_STR(th_s(j, "error.ename"), "ZeroDivisionError");
  ASSERT_STR(th_s(j, "error.evalue"), "division by zero");
  tb = th_get(j, "error.traceback");
  ASSERT(json_array_size(tb) >= 3);
  for (i = 0; i < json_array_size(tb); i++) {
    const char *line = json_string_value(json_array_get(tb, i));
    ASSERT(line != NULL);
    ASSERT(strstr(line, "kernelhost>") == NULL); /* only user frames */
  }
  ASSERT_CONTAINS(json_string_value(json_array_get(tb, json_array_size(tb) - 1)),
                  "ZeroDivisionError");
  ASSERT_INT(th_count(&t, KH_EVENT_EXECUTE_ERROR, r.id), ==, 1);
  ASSERT_STR(th_s(th_find(&t, KH_EVENT_EXECUTE_ERROR, r.id, 0)->data, "ename"),
             "ZeroDivisionError");
  th_result_free(&r);
  th_fini(&t);
}

TEST(kernel_execute_syntax_error) {
  th_t t;
  char id[64];
  th_result_t r;
  json_t *j;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  j = th_exec(&t, id, "x = 1\ny = (2 +\n", &r);
  ASSERT_STR(th_s(j, "status"), "error");
  ASSERT_STR(th_s(j, "error.ename"), "SyntaxError");
  ASSERT_CONTAINS(th_s(j, "error.evalue"), "line 2");
  th_result_free(&r);
  /* nothing of the failed cell ran */
  j = th_exec(&t, id, "'x' in globals()", &r);
  ASSERT_STR(th_s(j, "result.data.text/plain"), "False");
  th_result_free(&r);
  th_fini(&t);
}

TEST(kernel_execute_system_exit) {
  th_t t;
  char id[64];
  th_result_t r;
  json_t *j;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  j = th_exec(&t, id, "raise SystemExit(3)", &r);
  ASSERT_STR(th_s(j, "status"), "error");
  ASSERT_STR(th_s(j, "error.ename"), "SystemExit");
  th_result_free(&r);
  j = th_exec(&t, id, "exit()", &r);
  ASSERT_STR(th_s(j, "error.ename"), "SystemExit");
  th_result_free(&r);
  /* the kernel and the host go on */
  j = th_exec(&t, id, "6 * 7", &r);
  ASSERT_STR(th_s(j, "result.data.text/plain"), "42");
  th_result_free(&r);
  th_fini(&t);
}

TEST(kernel_state_persists) {
  th_t t;
  char id[64];
  th_result_t r;
  json_t *j;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  th_exec(&t, id, "x = 41", &r);
  th_result_free(&r);
  j = th_exec(&t, id, "x + 1", &r);
  ASSERT_STR(th_s(j, "result.data.text/plain"), "42");
  th_result_free(&r);
  j = th_exec(&t, id, "_ * 2", &r);
  ASSERT_STR(th_s(j, "result.data.text/plain"), "84");
  th_result_free(&r);
  th_fini(&t);
}

TEST(kernel_result_suppressed) {
  th_t t;
  char id[64];
  th_result_t r;
  json_t *j;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  j = th_exec(&t, id, "None", &r);
  ASSERT(th_get(j, "result") == NULL);
  ASSERT_INT(th_count(&t, KH_EVENT_EXECUTE_RESULT, r.id), ==, 0);
  th_result_free(&r);
  j = th_exec(&t, id, "1 + 1;", &r);
  ASSERT(th_get(j, "result") == NULL);
  th_result_free(&r);
  j = th_exec(&t, id, "1 + 1 ; # trailing comment", &r);
  ASSERT(th_get(j, "result") == NULL);
  th_result_free(&r);
  j = th_exec(&t, id, "s = 'a;b'\ns", &r);
  ASSERT_STR(th_s(j, "result.data.text/plain"), "'a;b'");
  th_result_free(&r);
  th_fini(&t);
}

TEST(kernel_namespaces_isolated) {
  th_t t;
  char a[64], b[64];
  th_result_t r;
  json_t *j;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), a);
  th_create(&t, th_opts(""), b);
  th_exec(&t, a, "secret = 1", &r);
  th_result_free(&r);
  j = th_exec(&t, b, "secret", &r);
  ASSERT_STR(th_s(j, "error.ename"), "NameError");
  th_result_free(&r);
  /* each kernel counts on its own */
  j = th_exec(&t, a, "1", &r);
  ASSERT_INT(th_i(j, "execution_count"), ==, 2);
  th_result_free(&r);
  j = th_exec(&t, b, "1", &r);
  ASSERT_INT(th_i(j, "execution_count"), ==, 2);
  th_result_free(&r);
  th_fini(&t);
}

TEST(kernel_execution_count) {
  th_t t;
  char id[64];
  th_result_t r;
  json_t *j;
  kh_execute_options_t o;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  j = th_exec(&t, id, "1", &r);
  ASSERT_INT(th_i(j, "execution_count"), ==, 1);
  th_result_free(&r);
  kh_execute_options_init(&o);
  o.silent = 1;
  ASSERT_INT(th_submit(&t, id, "print('quiet'); 5", &o, &r), ==, 0);
  th_run_until(&t, &r.done);
  ASSERT_INT(r.status, ==, 0);
  ASSERT_STR(th_s(r.json, "status"), "ok");
  ASSERT_INT(th_i(r.json, "execution_count"), ==, 1); /* silent: counter unchanged */
  ASSERT(th_get(r.json, "result") == NULL);           /* and no execute_result */
  ASSERT_INT(th_count(&t, KH_EVENT_EXECUTE_RESULT, r.id), ==, 0);
  th_result_free(&r);
  kh_execute_options_init(&o);
  o.store_history = 0;
  ASSERT_INT(th_submit(&t, id, "7", &o, &r), ==, 0);
  th_run_until(&t, &r.done);
  ASSERT_INT(th_i(r.json, "execution_count"), ==, 1);
  ASSERT_STR(th_s(r.json, "result.data.text/plain"), "7");
  th_result_free(&r);
  j = th_exec(&t, id, "_", &r); /* store_history=0 did not set _ */
  ASSERT_STR(th_s(j, "result.data.text/plain"), "1");
  ASSERT_INT(th_i(j, "execution_count"), ==, 2);
  th_result_free(&r);
  th_fini(&t);
}

TEST(kernel_top_level_await) {
  th_t t;
  char id[64];
  th_result_t r;
  json_t *j;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  j = th_exec(&t, id,
              "import asyncio\nawait asyncio.sleep(0)\nasync def f():\n    return 5\n"
              "await f()",
              &r);
  ASSERT_STR(th_s(j, "status"), "ok");
  ASSERT_STR(th_s(j, "result.data.text/plain"), "5");
  th_result_free(&r);
  th_fini(&t);
}

TEST(kernel_numpy_import) {
  th_t t;
  char id[64];
  th_result_t r;
  json_t *j;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  j = th_exec(&t, id, "import numpy as np\nint(np.arange(4).sum())", &r);
  if (strcmp(th_s(j, "status"), "ok") != 0) FAIL("numpy: %s", th_s(j, "error.evalue"));
  ASSERT_STR(th_s(j, "result.data.text/plain"), "6");
  th_result_free(&r);
  th_fini(&t);
}

TEST(stream_thread_output) {
  th_t t;
  char id[64], got[512];
  th_result_t r;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  th_exec(&t, id,
          "import threading\n"
          "th = threading.Thread(target=lambda: print('from thread'))\n"
          "th.start(); th.join()\n",
          &r);
  stream_text(&t, r.id, got, sizeof(got));
  ASSERT_STR(got, "stdout:from thread\n");
  th_result_free(&r);
  th_fini(&t);
}

TEST(kernel_input_request) {
  th_t t;
  char id[64];
  th_result_t r;
  th_event_t *e;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  ASSERT_INT(th_submit(&t, id, "name = input('who? ')\n'hello ' + name", NULL, &r), ==, 0);
  th_wait_events(&t, KH_EVENT_INPUT_REQUEST, r.id, 1);
  e = th_find(&t, KH_EVENT_INPUT_REQUEST, r.id, 0);
  ASSERT_STR(th_s(e->data, "prompt"), "who? ");
  ASSERT(json_is_false(th_get(e->data, "password")));
  ASSERT_INT(kh_kernel_input_reply(t.m, id, "ada"), ==, 0);
  th_run_until(&t, &r.done);
  ASSERT_INT(r.status, ==, 0);
  ASSERT_STR(th_s(r.json, "result.data.text/plain"), "'hello ada'");
  th_result_free(&r);
  /* getpass asks with password: true */
  ASSERT_INT(th_submit(&t, id, "import getpass\nlen(getpass.getpass('pw: '))", NULL, &r), ==, 0);
  th_wait_events(&t, KH_EVENT_INPUT_REQUEST, r.id, 1);
  e = th_find(&t, KH_EVENT_INPUT_REQUEST, r.id, 0);
  ASSERT_STR(th_s(e->data, "prompt"), "pw: ");
  ASSERT(json_is_true(th_get(e->data, "password")));
  ASSERT_INT(kh_kernel_input_reply(t.m, id, "secret"), ==, 0);
  th_run_until(&t, &r.done);
  ASSERT_STR(th_s(r.json, "result.data.text/plain"), "6");
  th_result_free(&r);
  th_fini(&t);
}

TEST(kernel_repeated_cell) {
  th_t t;
  char id[64];
  th_result_t r;
  json_t *tb;
  int i;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  /* the same source again and again: each run is its own cell, with its own traceback name */
  for (i = 1; i <= 3; i++) {
    char want[32];
    th_exec(&t, id, "n = globals().get('n', 0) + 1\n1 / (n - n)", &r);
    ASSERT_STR(th_s(r.json, "error.ename"), "ZeroDivisionError");
    tb = th_get(r.json, "error.traceback");
    snprintf(want, sizeof(want), "<cell-%d>", i);
    ASSERT_CONTAINS(json_string_value(json_array_get(tb, 1)), want);
    th_result_free(&r);
  }
  th_exec(&t, id, "n", &r);
  ASSERT_STR(th_s(r.json, "result.data.text/plain"), "3");
  th_result_free(&r);
  th_fini(&t);
}

TEST(stream_write_semantics) {
  th_t t;
  char id[64], got[512];
  th_result_t r;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  th_exec(&t, id,
          "import sys\n"
          "n = sys.stdout.write('abc')\n"
          "sys.stdout.write('')\n"
          "print('', n)\n"
          "try:\n    sys.stdout.write(b'x')\nexcept TypeError as e:\n    print('TypeError')\n"
          "sys.stdout.flush(); sys.stderr.writelines(['e1', 'e2\\n'])\n"
          "print(sys.stdout.isatty(), sys.stdout.encoding)\n",
          &r);
  ASSERT_STR(th_s(r.json, "status"), "ok");
  stream_text(&t, r.id, got, sizeof(got));
  ASSERT_STR(got, "stdout:abc 3\nTypeError\nstderr:e1e2\nstdout:False utf-8\n");
  th_result_free(&r);
  th_fini(&t);
}

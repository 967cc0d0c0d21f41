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
  json_t *args;        /* the last call's arguments */
  kh_hostcall_t *held; /* a call kept unanswered */
  const char *answer;  /* JSON to answer with at once, or NULL */
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
  if (h->args == NULL || !json_is_array(h->args))
    FAIL("host call arguments are not an array: %.*s", (int)len, args);
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
  ASSERT_STR(json_string_value(json_array_get(a, 13)),
             "h\xc3\xa9llo \xe2\x98\x83 \xf0\x9f\x98\x80");
  ASSERT_INT(json_string_length(json_array_get(a, 14)), ==, 8);
  ASSERT(json_is_array(json_array_get(a, 19)));
  ASSERT_INT(json_integer_value(json_object_get(json_array_get(a, 18), "k/~")), ==, 1);
  th_result_free(&r);
  th_fini(&t);
  host_reset(&echo);
  host_reset(&fixed);
}

/* Runs the loop until host function h has been called n times in all. */
static void wait_calls(th_t *t, host_t *h, int n) {
  while (h->calls < n) th_step(t);
  uv_timer_stop(&t->watchdog);
}

static const char hold_cell[] = "import kernelhost\nkernelhost.host.hold(1)";

/* An interrupt lands at once in a cell that waits for its host, exactly once (the cell may
 * catch it and go on); the host's late answer is dropped (KH_ECANCELED), never delivered to the
 * next call, which gets its own answer. */
TEST(hostcall_interrupt_pending) {
  th_t t;
  th_result_t r;
  host_t h = {0};
  char id[64];
  kh_hostcall_t *late;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  ASSERT_INT(kh_kernel_expose(t.m, id, "hold", fn_answer, &h), ==, 0);
  ASSERT_INT(th_submit(&t, id, hold_cell, NULL, &r), ==, 0);
  wait_calls(&t, &h, 1);
  ASSERT_INT(kh_kernel_interrupt(t.m, id), ==, 0);
  th_run_until(&t, &r.done);
  ASSERT_INT(r.status, ==, 0);
  ASSERT_STR(th_s(r.json, "error.ename"), "KeyboardInterrupt");
  th_result_free(&r);
  late = h.held;
  h.held = NULL;
  /* The next cell's call is held too; the first call's answer must not reach it. */
  ASSERT_INT(th_submit(&t, id,
                       "try:\n"
                       "    kernelhost.host.hold(2)\n"
                       "except KeyboardInterrupt:\n"
                       "    print('caught once')\n"
                       "'went on'",
                       NULL, &r),
             ==, 0);
  wait_calls(&t, &h, 2);
  ASSERT_ERR(kh_hostcall_return(late, "\"late\"", 6, NULL, 0), KH_ECANCELED);
  ASSERT_INT(kh_kernel_interrupt(t.m, id), ==, 0);
  th_run_until(&t, &r.done);
  ASSERT_STR(th_s(r.json, "status"), "ok");
  ASSERT_STR(th_s(r.json, "result.data.text/plain"), "'went on'");
  ASSERT_INT(th_count(&t, KH_EVENT_EXECUTE_ERROR, r.id), ==, 0); /* one interrupt, caught */
  ASSERT_CONTAINS(th_s(r.json, "outputs[1].data.text"), "caught once");
  th_result_free(&r);
  ASSERT_ERR(kh_hostcall_error(h.held, "late too"), KH_ECANCELED);
  h.held = NULL;
  /* A time limit interrupts the same way (kernel.c's timer, not kh_kernel_interrupt). */
  {
    kh_execute_options_t o;
    kh_execute_options_init(&o);
    o.timeout_ms = 300;
    ASSERT_INT(th_submit(&t, id, "kernelhost.host.hold(4)", &o, &r), ==, 0);
    wait_calls(&t, &h, 3);
    th_run_until(&t, &r.done);
    ASSERT_INT(r.status, ==, 0);
    ASSERT_STR(th_s(r.json, "status"), "error");
    ASSERT_ERR(kh_hostcall_return(h.held, "1", 1, NULL, 0), KH_ECANCELED);
    h.held = NULL;
    th_result_free(&r);
  }
  /* The kernel and its function work as before. */
  h.answer = "\"fresh\"";
  th_exec(&t, id, "kernelhost.host.hold(3)", &r);
  ASSERT_STR(th_s(r.json, "result.data.text/plain"), "'fresh'");
  th_result_free(&r);
  ASSERT_INT(h.calls, ==, 4);
  th_fini(&t);
  host_reset(&h);
}

static void on_restarted(kh_manager_t *m, const char *id, int status, const char *errmsg,
                         void *data) {
  th_done_cb(m, id, status, errmsg, data);
}

/* A host function that destroys its own kernel, then answers (which returns KH_ECANCELED). */
typedef struct {
  int calls, answer_rc, destroyed[2];
} self_destroy_t;

static void fn_destroy_self(kh_manager_t *m, const char *kernel_id, const char *name,
                            const char *args, size_t len, const kh_buffer_t *b, size_t nb,
                            kh_hostcall_t *call, void *data) {
  self_destroy_t *d = data;
  (void)name;
  (void)args;
  (void)len;
  (void)b;
  (void)nb;
  d->calls++;
  ASSERT_INT(kh_kernel_destroy(m, kernel_id, th_done_cb, d->destroyed), ==, 0);
  d->answer_rc = kh_hostcall_return(call, "1", 1, NULL, 0);
}

static void destroy_inside(th_t *t, const char *opts) {
  self_destroy_t d = {0, 0, {0, 0}};
  th_result_t r;
  char id[64];
  th_create(t, opts, id);
  ASSERT_INT(kh_kernel_expose(t->m, id, "leave", fn_destroy_self, &d), ==, 0);
  ASSERT_INT(
      th_submit(t, id, "import kernelhost\nkernelhost.host.leave()\n'not reached'", NULL, &r), ==,
      0);
  th_run_until(t, &d.destroyed[0]);
  th_run_until(t, &r.done);
  ASSERT_INT(d.calls, ==, 1);
  ASSERT_ERR(d.answer_rc, KH_ECANCELED);
  ASSERT_ERR(r.status, KH_ECANCELED);
  ASSERT_INT(d.destroyed[1], ==, 0);
  ASSERT_INT(kh_kernel_exists(t->m, id, NULL), ==, 0);
}

/* Destroy, restart and manager close while a call is pending settle everything: the cell
 * completes (KH_ECANCELED), the handle stays valid and answers KH_ECANCELED, even after the
 * manager is gone; nothing leaks (ASan runs this as asan/ and asan-worker/). */
TEST(hostcall_destroy_pending) {
  th_t t;
  th_result_t r;
  host_t h = {0};
  char id[64];
  int done[2] = {0, 0};
  kh_hostcall_t *held;
  th_init(&t, NULL);
  /* destroy */
  th_create(&t, th_opts(""), id);
  ASSERT_INT(kh_kernel_expose(t.m, id, "hold", fn_answer, &h), ==, 0);
  ASSERT_INT(th_submit(&t, id, hold_cell, NULL, &r), ==, 0);
  wait_calls(&t, &h, 1);
  ASSERT_INT(kh_kernel_destroy(t.m, id, th_done_cb, done), ==, 0);
  th_run_until(&t, &done[0]);
  ASSERT_INT(done[1], ==, 0);
  ASSERT(r.done);
  ASSERT_ERR(r.status, KH_ECANCELED);
  ASSERT_ERR(kh_hostcall_return(h.held, "1", 1, NULL, 0), KH_ECANCELED);
  h.held = NULL;
  /* restart: the kernel comes back with its functions still exposed */
  th_create(&t, th_opts(""), id);
  ASSERT_INT(kh_kernel_expose(t.m, id, "hold", fn_answer, &h), ==, 0);
  ASSERT_INT(th_submit(&t, id, hold_cell, NULL, &r), ==, 0);
  wait_calls(&t, &h, 2);
  done[0] = done[1] = 0;
  ASSERT_INT(kh_kernel_restart(t.m, id, on_restarted, done), ==, 0);
  th_run_until(&t, &done[0]);
  ASSERT_INT(done[1], ==, 0);
  th_run_until(&t, &r.done);
  ASSERT_ERR(r.status, KH_ECANCELED);
  ASSERT_ERR(kh_hostcall_error(h.held, "too late"), KH_ECANCELED);
  h.held = NULL;
  h.answer = "[\"after\", \"restart\"]";
  th_exec(&t, id, "import kernelhost\nkernelhost.host.hold()", &r);
  ASSERT_STR(th_s(r.json, "result.data.text/plain"), "['after', 'restart']");
  th_result_free(&r);
  /* a worker that dies while its cell waits */
  if (strcmp(th_mode(), "worker") == 0) {
    h.answer = NULL;
    ASSERT_INT(th_submit(&t, id,
                         "import kernelhost, os, threading, time\n"
                         "threading.Thread(target=lambda: (time.sleep(0.2), os._exit(3))).start()\n"
                         "kernelhost.host.hold()",
                         NULL, &r),
               ==, 0);
    th_run_until(&t, &r.done);
    ASSERT_ERR(r.status, KH_EKERNELDEAD);
    ASSERT(h.held != NULL);
    ASSERT_ERR(kh_hostcall_return(h.held, "null", 4, NULL, 0), KH_ECANCELED);
    h.held = NULL;
    done[0] = done[1] = 0;
    ASSERT_INT(kh_kernel_restart(t.m, id, on_restarted, done), ==, 0);
    th_run_until(&t, &done[0]);
  }
  /* destroyed from inside its own host function (thread: "host" too: the cell is on the stack) */
  destroy_inside(&t, th_opts(""));
  if (strcmp(th_mode(), "main_thread") == 0) destroy_inside(&t, th_opts("\"thread\":\"host\""));
  /* manager close */
  h.answer = NULL;
  ASSERT_INT(th_submit(&t, id, hold_cell, NULL, &r), ==, 0);
  while (h.held == NULL) th_step(&t);
  held = h.held;
  th_fini(&t);
  ASSERT(r.done);
  ASSERT_ERR(r.status, KH_ECANCELED);
  ASSERT_ERR(kh_hostcall_return(held, "1", 1, NULL, 0), KH_ECANCELED);
  host_reset(&h);
}

/* What a hostile cell writes to every descriptor it has: host-call frames the host must refuse
 * (variant V). The protocol pipe is among them. */
static const char forge_hostcall_src[] =
    "import os, json, struct\n"
    "V = %d\n"
    "def fr(o):\n"
    "    b = json.dumps(o).encode()\n"
    "    return struct.pack('>I', len(b)) + b\n"
    "call = lambda i, **kw: dict({'t': 'call', 'id': i, 'name': 'hold', 'cell': False, 'args': "
    "[]}, "
    "**kw)\n"
    "blobs = [\n"
    "    fr(call(7)) + fr(call(7)),\n"
    "    fr(call(0)),\n"
    "    fr(call(8, kernel_id='someone-else')),\n"
    "    fr(call(9, args={'a': 1})),\n"
    "    fr({'t': 'result', 'id': 1, 'value': 1}),\n"
    "    fr({'t': 'expose', 'names': ['hold', 'os_system']}),\n"
    "    fr(call(10, name='not_exposed')),\n"
    "    fr(call(11, args=[1], bufs=['/0'])) + struct.pack('>I', 0x80000003) + b'abc',\n"
    "    fr(call(12, args=[None], bufs=['/0'])),\n"
    "]\n"
    "for fd in sorted(int(f) for f in os.listdir('/proc/self/fd')):\n"
    "    try:\n"
    "        if fd > 2: os.write(fd, blobs[V])  # 1 and 2 are captured as output\n"
    "    except OSError:\n"
    "        pass\n"
    "'survived'\n";
#define FORGE_HOSTCALL_VARIANTS 9

/* Forged "call", "result" and "expose" frames from a worker: a repeated or made-up call id, a
 * stray member, a message that travels the other way, a binary value whose path leads to no
 * null, a binary value that never comes, each end that worker with a protocol error (its held
 * call is canceled); a call of a name that is not exposed is answered with an error and reaches
 * no function. */
TEST(worker_forged_hostcall_contained) {
  th_t t;
  th_result_t r;
  host_t h = {0};
  char id[64], code[2048];
  int v;
  th_init(&t, NULL);
  th_create(&t, "{\"mode\":\"worker\"}", id);
  ASSERT_INT(kh_kernel_expose(t.m, id, "hold", fn_answer, &h), ==, 0);
  for (v = 0; v < FORGE_HOSTCALL_VARIANTS; v++) {
    int before = h.calls;
    snprintf(code, sizeof(code), forge_hostcall_src, v);
    ASSERT_INT(th_submit(&t, id, code, NULL, &r), ==, 0);
    th_run_until(&t, &r.done);
    if (v == 6) { /* answered with an error the worker drops: nothing waits for id 10 */
      int done[2] = {0, 0};
      ASSERT_INT(r.status, ==, 0);
      ASSERT_STR(th_s(r.json, "result.data.text/plain"), "'survived'");
      ASSERT_INT(h.calls, ==, before);
      /* Its own calls would now reuse ids up to 10, which the host refuses: a new process. */
      ASSERT_INT(kh_kernel_restart(t.m, id, th_done_cb, done), ==, 0);
      th_run_until(&t, &done[0]);
    } else {
      int done[2] = {0, 0};
      th_event_t *e = NULL;
      int i;
      ASSERT_ERR(r.status, KH_EKERNELDEAD);
      for (i = t.nevents - 1; i >= 0 && e == NULL; i--)
        if (t.events[i].type == KH_EVENT_STATUS &&
            strcmp(th_s(t.events[i].data, "execution_state"), "dead") == 0)
          e = &t.events[i];
      ASSERT(e != NULL);
      ASSERT_STR(th_s(e->data, "reason.cause"), "protocol_error");
      /* Only the first call 7 reached the function; it was canceled with its worker. */
      ASSERT_INT(h.calls, ==, before + (v == 0));
      if (v == 0) {
        ASSERT_ERR(kh_hostcall_return(h.held, "1", 1, NULL, 0), KH_ECANCELED);
        h.held = NULL;
      }
      ASSERT_INT(kh_kernel_restart(t.m, id, th_done_cb, done), ==, 0);
      th_run_until(&t, &done[0]);
      ASSERT_INT(done[1], ==, 0);
    }
    th_result_free(&r);
  }
  /* The restarted worker still has its one function, and nothing else. */
  h.answer = "\"real\"";
  th_exec(&t, id, "import kernelhost\n(kernelhost.host.hold(), dir(kernelhost.host))", &r);
  ASSERT_STR(th_s(r.json, "result.data.text/plain"), "('real', ['hold'])");
  th_result_free(&r);
  th_fini(&t);
  host_reset(&h);
}

/* Answers the host cannot give: not JSON, NULL, an integer beyond 64 bits, a binary value whose
 * path leads to no null, are refused with KH_EINVAL and leave the call unanswered, so the host
 * answers it again; an error text that is not UTF-8 reaches Python cleaned; names are checked;
 * functions exposed before the kernel is ready are there once it is. */
static void fn_bad_answers(kh_manager_t *m, const char *kernel_id, const char *name,
                           const char *args, size_t len, const kh_buffer_t *b, size_t nb,
                           kh_hostcall_t *call, void *data) {
  host_t *h = data;
  kh_buffer_t buf = {"/x", "ab", 2}, dup[2] = {{"/1", "a", 1}, {"/1", "b", 1}};
  (void)b;
  (void)nb;
  record(h, kernel_id, name, args, len);
  ASSERT_ERR(kh_hostcall_return(call, "{not json", 9, NULL, 0), KH_EINVAL);
  ASSERT_CONTAINS(kh_manager_errmsg(m), "not JSON");
  ASSERT_ERR(kh_hostcall_return(call, NULL, 0, NULL, 0), KH_EINVAL);
  ASSERT_ERR(kh_hostcall_return(call, "99999999999999999999", 20, NULL, 0), KH_EINVAL);
  ASSERT_ERR(kh_hostcall_return(call, "{\"x\": 1}", 8, &buf, 1), KH_EINVAL);
  ASSERT_ERR(kh_hostcall_return(call, "[0, null]", 9, dup, 2), KH_EINVAL);
  ASSERT_ERR(kh_hostcall_return(NULL, "1", 1, NULL, 0), KH_EINVAL);
  ASSERT_ERR(kh_hostcall_error(NULL, "x"), KH_EINVAL);
  /* Still unanswered: this answer is the one the cell gets. */
  ASSERT_INT(kh_hostcall_error(call, "bad \xff\xfe bytes \xe2\x98"), ==, 0);
}

TEST(hostcall_bad_answer) {
  th_t t;
  th_result_t r;
  host_t h = {0};
  char id[64];
  int created[2] = {0, 0};
  th_init(&t, NULL);
  ASSERT_ERR(kh_kernel_expose(t.m, "no-such-kernel", "f", fn_bad_answers, &h), KH_ENOTFOUND);
  ASSERT_INT(kh_kernel_create(t.m, th_opts(""), id, sizeof(id), th_done_cb, created), ==, 0);
  /* Exposed while the kernel starts: its worker hears of it once ready. */
  ASSERT_INT(kh_kernel_expose(t.m, id, "f", fn_bad_answers, &h), ==, 0);
  ASSERT_INT(kh_kernel_expose(t.m, id, "f", fn_bad_answers, &h), ==, 0); /* replaces */
  ASSERT_INT(kh_kernel_expose(t.m, id, "never_exposed", NULL, NULL), ==, 0);
  ASSERT_ERR(kh_kernel_expose(t.m, id, "", fn_bad_answers, &h), KH_EINVAL);
  ASSERT_ERR(kh_kernel_expose(t.m, id, NULL, fn_bad_answers, &h), KH_EINVAL);
  ASSERT_ERR(kh_kernel_expose(t.m, id, "caf\xc3\xa9", fn_bad_answers, &h), KH_EINVAL);
  ASSERT_ERR(kh_kernel_expose(t.m, id,
                              "a234567890123456789012345678901234567890123456789012345678901234"
                              "5",
                              fn_bad_answers, &h),
             KH_EINVAL);
  ASSERT_INT(
      kh_kernel_expose(t.m, id, "a234567890123456789012345678901234567890123456789012345678901234",
                       fn_bad_answers, &h),
      ==, 0);
  th_run_until(&t, &created[0]);
  ASSERT_INT(created[1], ==, 0);
  th_exec(&t, id,
          "import kernelhost\n"
          "try:\n"
          "    kernelhost.host.f(1)\n"
          "except kernelhost.HostError as e:\n"
          "    print(repr(str(e)))\n"
          "print(len(dir(kernelhost.host)))",
          &r);
  ASSERT_STR(th_s(r.json, "status"), "ok");
  ASSERT_STR(th_s(r.json, "outputs[1].data.text"),
             "'bad \xef\xbf\xbd\xef\xbf\xbd bytes \xef\xbf\xbd'\n2\n");
  ASSERT_INT(h.calls, ==, 1);
  th_result_free(&r);
  th_fini(&t);
  host_reset(&h);
}

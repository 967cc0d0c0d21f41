/* test_lifecycle.c: the request queue, interrupts, timeouts, restart and destroy. */
#include "kh_test.h"

TEST(kernel_queue_fifo) {
  th_t t;
  char id[64];
  th_result_t r[3];
  int i;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  ASSERT_INT(th_submit(&t, id,
                       "import time\nfor i in range(3):\n    print('a', i)\n"
                       "    time.sleep(0.001)",
                       NULL, &r[0]),
             ==, 0);
  ASSERT_INT(th_submit(&t, id, "print('b')", NULL, &r[1]), ==, 0);
  ASSERT_INT(th_submit(&t, id, "3", NULL, &r[2]), ==, 0);
  th_run_until(&t, &r[2].done);
  ASSERT(r[0].done && r[1].done);
  for (i = 0; i < 3; i++) ASSERT_INT(th_i(r[i].json, "execution_count"), ==, i + 1);
  /* requests never interleave: every event of request 0 comes before any of request 1 */
  {
    int last0 = -1, first1 = t.nevents;
    for (i = 0; i < t.nevents; i++) {
      if (strcmp(t.events[i].exec_id, r[0].id) == 0) last0 = i;
      if (strcmp(t.events[i].exec_id, r[1].id) == 0 && i < first1) first1 = i;
    }
    ASSERT_INT(last0, <, first1);
  }
  for (i = 0; i < 3; i++) th_result_free(&r[i]);
  th_fini(&t);
}

TEST(kernel_stop_on_error) {
  th_t t;
  char id[64];
  th_result_t r[3];
  kh_execute_options_t o;
  int i;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  ASSERT_INT(th_submit(&t, id, "raise ValueError('x')", NULL, &r[0]), ==, 0);
  ASSERT_INT(th_submit(&t, id, "ran = 1", NULL, &r[1]), ==, 0);
  ASSERT_INT(th_submit(&t, id, "ran = 2", NULL, &r[2]), ==, 0);
  th_run_until(&t, &r[2].done);
  ASSERT_STR(th_s(r[0].json, "status"), "error");
  ASSERT_STR(th_s(r[1].json, "status"), "aborted");
  ASSERT_STR(th_s(r[2].json, "status"), "aborted");
  for (i = 0; i < 3; i++) th_result_free(&r[i]);
  th_exec(&t, id, "'ran' in globals()", &r[0]);
  ASSERT_STR(th_s(r[0].json, "result.data.text/plain"), "False");
  th_result_free(&r[0]);
  /* stop_on_error = 0: the queue goes on */
  kh_execute_options_init(&o);
  o.stop_on_error = 0;
  ASSERT_INT(th_submit(&t, id, "raise ValueError('y')", &o, &r[0]), ==, 0);
  ASSERT_INT(th_submit(&t, id, "ran = 3", NULL, &r[1]), ==, 0);
  th_run_until(&t, &r[1].done);
  ASSERT_STR(th_s(r[0].json, "status"), "error");
  ASSERT_STR(th_s(r[1].json, "status"), "ok");
  for (i = 0; i < 2; i++) th_result_free(&r[i]);
  th_fini(&t);
}

/* Waits until the request is running (its busy status), then interrupts it. */
static void interrupt_when_busy(th_t *t, const char *id, th_result_t *r) {
  th_wait_status(t, r->id, "busy");
  ASSERT_INT(kh_kernel_interrupt(t->m, id), ==, 0);
}

static void check_interrupted(th_t *t, const char *id, const char *code) {
  th_result_t r;
  ASSERT_INT(th_submit(t, id, code, NULL, &r), ==, 0);
  interrupt_when_busy(t, id, &r);
  th_run_until(t, &r.done);
  ASSERT_INT(r.status, ==, 0);
  ASSERT_STR(th_s(r.json, "status"), "error");
  ASSERT_STR(th_s(r.json, "error.ename"), "KeyboardInterrupt");
  th_result_free(&r);
  /* the kernel stays usable */
  th_exec(t, id, "'still here'", &r);
  ASSERT_STR(th_s(r.json, "result.data.text/plain"), "'still here'");
  th_result_free(&r);
}

TEST(kernel_interrupt_busy_loop) {
  th_t t;
  char id[64];
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  check_interrupted(&t, id, "while True:\n    pass");
  th_fini(&t);
}

TEST(kernel_interrupt_sleep) {
  th_t t;
  char id[64];
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  check_interrupted(&t, id, "import time\ntime.sleep(100)");
  th_fini(&t);
}

TEST(kernel_interrupt_idle) {
  th_t t;
  char id[64];
  th_result_t r;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  ASSERT_INT(kh_kernel_interrupt(t.m, id), ==, 0); /* a no-op, as in Jupyter */
  th_exec(&t, id, "1", &r);
  ASSERT_STR(th_s(r.json, "status"), "ok");
  th_result_free(&r);
  th_fini(&t);
}

TEST(kernel_execute_timeout) {
  th_t t;
  char id[64];
  th_result_t r;
  kh_execute_options_t o;
  th_init(&t, "{\"interruptGraceMs\": 500}");
  th_create(&t, th_opts(""), id);
  kh_execute_options_init(&o);
  o.timeout_ms = 100;
  ASSERT_INT(th_submit(&t, id, "import time\ntime.sleep(60)", &o, &r), ==, 0);
  th_run_until(&t, &r.done);
  ASSERT_STR(th_s(r.json, "error.ename"), "KeyboardInterrupt");
  th_result_free(&r);
  th_fini(&t);
}

TEST(kernel_max_execution_time) {
  th_t t;
  char id[64];
  th_result_t r;
  th_init(&t, "{\"interruptGraceMs\": 500}");
  th_create(&t, th_opts("\"maxExecutionTime\": 100"), id);
  th_exec(&t, id, "while True: pass", &r);
  ASSERT_STR(th_s(r.json, "error.ename"), "KeyboardInterrupt");
  th_result_free(&r);
  th_exec(&t, id, "2", &r); /* quick cells are untouched */
  ASSERT_STR(th_s(r.json, "status"), "ok");
  th_result_free(&r);
  th_fini(&t);
}

static void on_done(kh_manager_t *m, const char *id, int status, const char *errmsg, void *data) {
  int *d = data;
  (void)m;
  (void)id;
  (void)errmsg;
  d[0] = 1;
  d[1] = status;
}

TEST(kernel_restart) {
  th_t t;
  char id[64];
  th_result_t r, running;
  int done[2] = {0, 0};
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  th_exec(&t, id, "x = 1", &r);
  th_result_free(&r);
  /* restart while a cell runs: the cell is canceled, the kernel comes back fresh */
  ASSERT_INT(th_submit(&t, id, "import time\ntime.sleep(100)", NULL, &running), ==, 0);
  th_wait_status(&t, running.id, "busy");
  ASSERT_INT(kh_kernel_restart(t.m, id, on_done, done), ==, 0);
  th_run_until(&t, &done[0]);
  ASSERT_INT(done[1], ==, 0);
  ASSERT(running.done);
  ASSERT_INT(running.status, ==, KH_ECANCELED);
  th_exec(&t, id, "x", &r);
  ASSERT_STR(th_s(r.json, "error.ename"), "NameError");
  ASSERT_INT(th_i(r.json, "execution_count"), ==, 1);
  th_result_free(&r);
  ASSERT_INT(kh_kernel_exists(t.m, id, NULL), ==, 1);
  th_fini(&t);
}

TEST(kernel_destroy_cancels) {
  th_t t;
  char id[64];
  th_result_t a, b, c;
  int done[2] = {0, 0};
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  ASSERT_INT(th_submit(&t, id, "import time\ntime.sleep(100)", NULL, &a), ==, 0);
  ASSERT_INT(th_submit(&t, id, "1", NULL, &b), ==, 0);
  th_wait_status(&t, a.id, "busy");
  ASSERT_INT(kh_kernel_destroy(t.m, id, on_done, done), ==, 0);
  /* Canceled at once, told from the loop: never inside the call. */
  ASSERT(!a.done && !b.done && !done[0]);
  ASSERT_ERR(th_submit(&t, id, "1", NULL, &c), KH_ECLOSED);
  th_run_until(&t, &done[0]);
  ASSERT(a.done && b.done);
  ASSERT_INT(a.status, ==, KH_ECANCELED);
  ASSERT_INT(b.status, ==, KH_ECANCELED);
  ASSERT_INT(done[1], ==, 0);
  ASSERT_INT(kh_kernel_exists(t.m, id, NULL), ==, 0);
  th_fini(&t);
}

TEST(kernel_destroy_twice) {
  th_t t;
  char id[64];
  int done[2] = {0, 0};
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  ASSERT_INT(kh_kernel_destroy(t.m, id, on_done, done), ==, 0);
  ASSERT_ERR(kh_kernel_destroy(t.m, id, NULL, NULL), KH_ECLOSED);
  th_run_until(&t, &done[0]);
  ASSERT_ERR(kh_kernel_destroy(t.m, id, NULL, NULL), KH_ENOTFOUND);
  th_fini(&t);
}

TEST(status_busy_idle) {
  th_t t;
  char id[64];
  th_result_t r;
  th_event_t *e;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  /* creation: starting, then idle, outside any request */
  e = th_find(&t, KH_EVENT_STATUS, "", 0);
  ASSERT(e != NULL);
  ASSERT_STR(th_s(e->data, "execution_state"), "starting");
  ASSERT_STR(e->kernel_id, id);
  e = th_find(&t, KH_EVENT_STATUS, "", 1);
  ASSERT_STR(th_s(e->data, "execution_state"), "idle");
  th_exec(&t, id, "print(1)", &r);
  ASSERT_INT(th_count(&t, KH_EVENT_STATUS, r.id), ==, 2);
  ASSERT_STR(th_s(th_find(&t, KH_EVENT_STATUS, r.id, 0)->data, "execution_state"), "busy");
  ASSERT_STR(th_s(th_find(&t, KH_EVENT_STATUS, r.id, 1)->data, "execution_state"), "idle");
  ASSERT_STR(th_s(r.json, "outputs[0].data.execution_state"), "busy");
  ASSERT_STR(th_s(r.json, "outputs[-1].data.execution_state"), "idle");
  th_result_free(&r);
  th_fini(&t);
}

TEST(kernel_inactivity_timeout) {
  th_t t;
  char id[64];
  th_result_t r;
  int i, dead = 0;
  th_init(&t, NULL);
  th_create(&t, th_opts("\"inactivityTimeout\": 50"), id);
  th_exec(&t, id, "1", &r);
  th_result_free(&r);
  /* an idle kernel is destroyed: it reports dead with the reason, then disappears */
  th_wait_status(&t, "", "dead");
  for (i = 0; i < t.nevents; i++)
    if (t.events[i].type == KH_EVENT_STATUS &&
        strcmp(th_s(t.events[i].data, "execution_state"), "dead") == 0) {
      ASSERT_STR(th_s(t.events[i].data, "reason.message"), "inactivityTimeout");
      dead = 1;
    }
  ASSERT(dead);
  while (kh_manager_kernel_count(t.m) > 0 || kh_manager_pending_count(t.m) > 0) th_step(&t);
  ASSERT_ERR(th_submit(&t, id, "1", NULL, &r), KH_ENOTFOUND);
  th_fini(&t);
}

TEST(manager_close_cancels) {
  th_t t;
  char id[64];
  th_result_t a, b;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  ASSERT_INT(th_submit(&t, id, "import time\ntime.sleep(100)", NULL, &a), ==, 0);
  ASSERT_INT(th_submit(&t, id, "1", NULL, &b), ==, 0);
  th_wait_status(&t, a.id, "busy");
  th_fini(&t); /* closes the manager with work in flight */
  ASSERT(a.done && b.done);
  ASSERT_INT(a.status, ==, KH_ECANCELED);
  ASSERT_INT(b.status, ==, KH_ECANCELED);
}

static void execute_in_destroy_cb(kh_manager_t *m, const char *id, int status, const char *errmsg,
                                  void *data) {
  int *d = data;
  (void)status;
  (void)errmsg;
  /* the kernel is already gone when its destroy callback runs */
  d[1] = kh_kernel_execute(m, id, "1", 1, NULL, NULL, 0, NULL, NULL) == KH_EINVAL
             ? kh_kernel_interrupt(m, id)
             : -1;
  d[0] = 1;
}

TEST(kernel_destroy_callback_sees_it_gone) {
  th_t t;
  char id[64];
  int done[2] = {0, 0};
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  ASSERT_INT(kh_kernel_destroy(t.m, id, execute_in_destroy_cb, done), ==, 0);
  th_run_until(&t, &done[0]);
  ASSERT_ERR(done[1], KH_ENOTFOUND);
  th_fini(&t);
}

TEST(kernel_destroy_swallowed_interrupt) {
  th_t t;
  char id[64];
  th_result_t r;
  int done[2] = {0, 0};
  th_init(&t, "{\"interruptGraceMs\": 100}");
  th_create(&t, th_opts(""), id);
  /* the cell swallows the first KeyboardInterrupt; destroy keeps interrupting until it ends */
  ASSERT_INT(th_submit(&t, id,
                       "import time\nn = 0\nprint('started', flush=True)\nwhile n < 2:\n"
                       "    try:\n        time.sleep(100)\n    except KeyboardInterrupt:\n"
                       "        n += 1\n",
                       NULL, &r),
             ==, 0);
  th_wait_events(&t, KH_EVENT_STREAM, r.id, 1);
  ASSERT_INT(kh_kernel_destroy(t.m, id, on_done, done), ==, 0);
  th_run_until(&t, &done[0]);
  ASSERT_INT(r.status, ==, KH_ECANCELED);
  th_fini(&t);
}

typedef struct {
  th_t *t;
  const char *id;
  th_result_t b;
  int restarted[2];
  int done;
} reenter_t;

static void restart_in_reply_cb(kh_manager_t *m, const kh_reply_t *rep, int status, void *data) {
  reenter_t *x = data;
  (void)rep;
  ASSERT_INT(status, ==, 0);
  /* Re-enter from inside the reply callback, as Node's promise continuations do: start a new
   * cell, then restart while it runs. */
  ASSERT_INT(th_submit(x->t, x->id, "while True: pass", NULL, &x->b), ==, 0);
  ASSERT_INT(kh_kernel_restart(m, x->id, on_done, x->restarted), ==, 0);
  x->done = 1;
}

TEST(kernel_restart_from_callback) {
  th_t t;
  char id[64];
  th_result_t r;
  reenter_t x;
  memset(&x, 0, sizeof(x));
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  x.t = &t;
  x.id = id;
  th_exec(&t, id, "y = 1", &r);
  th_result_free(&r);
  ASSERT_INT(kh_kernel_execute(t.m, id, "2", 1, NULL, NULL, 0, restart_in_reply_cb, &x), ==, 0);
  th_run_until(&t, &x.restarted[0]);
  ASSERT_INT(x.restarted[1], ==, 0);
  ASSERT_INT(x.b.status, ==, KH_ECANCELED);
  /* the kernel is fresh and runs cells again */
  th_exec(&t, id, "'y' in globals()", &r);
  ASSERT_STR(th_s(r.json, "result.data.text/plain"), "False");
  th_result_free(&r);
  th_fini(&t);
}

typedef struct {
  int dead;
  int rc;
  th_t *t;
} dead_listener_t;

static void on_dead_try_execute(kh_manager_t *m, const kh_event_t *ev, void *data) {
  dead_listener_t *d = data;
  th_result_t r;
  if (strstr(ev->json, "\"dead\"") == NULL) return;
  d->dead = 1;
  d->rc = th_submit(d->t, ev->kernel_id, "1", NULL, &r);
  (void)m;
}

TEST(kernel_inactivity_dead_is_final) {
  th_t t;
  char id[64];
  dead_listener_t d = {0, 0, NULL};
  th_init(&t, NULL);
  d.t = &t;
  th_create(&t, th_opts("\"inactivityTimeout\": 50"), id);
  ASSERT_INT(kh_subscribe(t.m, id, KH_EVENT_STATUS, on_dead_try_execute, &d, NULL), ==, 0);
  th_run_until(&t, &d.dead);
  /* the kernel was already on its way out when it said so: no cell runs on it again */
  ASSERT_ERR(d.rc, KH_ECLOSED);
  ASSERT_INT(kh_kernel_exists(t.m, id, NULL), ==, 0);
  th_fini(&t);
}

TEST(kernel_host_thread) {
  th_t t;
  char id[64], got[256];
  th_result_t r;
  kh_execute_options_t o;
  int i, done[2] = {0, 0};
  th_event_t *e;
  th_init(&t, NULL);
  /* thread "host": the cell runs on the loop thread, inside the call that starts it */
  th_create(&t, "{\"mode\": \"main_thread\", \"thread\": \"host\"}", id);
  th_exec(&t, id, "import threading\nprint('a')\nx = 2\nx * 21", &r);
  ASSERT_STR(th_s(r.json, "status"), "ok");
  ASSERT_STR(th_s(r.json, "result.data.text/plain"), "42");
  ASSERT_STR(th_s(r.json, "outputs[0].data.execution_state"), "busy");
  ASSERT_STR(th_s(r.json, "outputs[1].type"), "stream");
  ASSERT_STR(th_s(r.json, "outputs[-1].data.execution_state"), "idle");
  /* events reach subscribers too, in order, with the request's id */
  got[0] = '\0';
  for (i = 0; (e = th_find(&t, KH_EVENT_STREAM, r.id, i)) != NULL; i++)
    strncat(got, th_s(e->data, "text"), sizeof(got) - strlen(got) - 1);
  ASSERT_STR(got, "a\n");
  th_result_free(&r);
  th_exec(&t, id, "x + 1", &r); /* state persists */
  ASSERT_STR(th_s(r.json, "result.data.text/plain"), "3");
  th_result_free(&r);
  /* nothing can answer input() while the host thread runs the cell */
  th_exec(&t, id, "input('? ')", &r);
  ASSERT_STR(th_s(r.json, "error.ename"), "RuntimeError");
  th_result_free(&r);
  /* what needs a kernel thread is refused, naming the option */
  kh_execute_options_init(&o);
  o.timeout_ms = 100;
  ASSERT_ERR(th_submit(&t, id, "1", &o, &r), KH_ENOTSUP);
  ASSERT_CONTAINS(kh_manager_errmsg(t.m), "timeout");
  ASSERT_INT(kh_kernel_interrupt(t.m, id), ==, 0); /* between cells: a no-op */
  ASSERT_ERR(
      kh_kernel_create(t.m, "{\"mode\": \"worker\", \"thread\": \"host\"}", NULL, 0, NULL, NULL),
      KH_ENOTSUP);
  ASSERT_CONTAINS(kh_manager_errmsg(t.m), "thread");
  ASSERT_ERR(kh_kernel_create(t.m,
                              "{\"mode\": \"main_thread\", \"thread\": \"host\", "
                              "\"maxExecutionTime\": 100}",
                              NULL, 0, NULL, NULL),
             KH_ENOTSUP);
  ASSERT_CONTAINS(kh_manager_errmsg(t.m), "maxExecutionTime");
  ASSERT_ERR(kh_kernel_create(t.m, "{\"mode\": \"main_thread\", \"thread\": \"fast\"}", NULL, 0,
                              NULL, NULL),
             KH_EOPTION);
  /* restart gives a fresh namespace; destroy completes */
  ASSERT_INT(kh_kernel_restart(t.m, id, on_done, done), ==, 0);
  th_run_until(&t, &done[0]);
  ASSERT_INT(done[1], ==, 0);
  th_exec(&t, id, "'x' in globals()", &r);
  ASSERT_STR(th_s(r.json, "result.data.text/plain"), "False");
  ASSERT_INT(th_i(r.json, "execution_count"), ==, 1);
  th_result_free(&r);
  th_destroy(&t, id);
  ASSERT_INT(kh_kernel_exists(t.m, id, NULL), ==, 0);
  th_fini(&t);
}

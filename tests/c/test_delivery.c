/* test_delivery.c: libuv's rule, "no user callback runs inside the API call that caused it",
 * and the bugs it fixed: retries from a failed request's callback after a timeout, a crash
 * with autoRestart, a restart and a destroy; and interruptGraceMs: 0 (a timer that re-armed
 * itself at 0 ms used to spin the host forever). Runs in both modes like every C test. */
#include "kh_test.h"

static int worker_mode(void) {
  return strcmp(th_mode(), "worker") == 0;
}

/* --- the rule ----------------------------------------------------------------------------- */

/* Every public call this file makes goes through API(): in_api says one is running. */
static int in_api;
static int inside_calls; /* callbacks that ran while in_api > 0: must stay 0 */
static int callbacks;
static void api_begin(void) {
  in_api++;
}
static int api_end(int rc) {
  in_api--;
  return rc;
}
#define API(call) api_end((api_begin(), (call)))

typedef struct {
  kh_manager_t *m;
  char id[64];
  int replies;
  int done;
  int closed;
  int created;
  int input_answered;
  int busy;
} rule_t;

static void note(void) {
  callbacks++;
  if (in_api) inside_calls++;
}

static void rule_on_event(kh_manager_t *m, const kh_event_t *ev, void *data) {
  rule_t *r = data;
  note();
  if (ev->type == KH_EVENT_STATUS && strstr(ev->json, "\"busy\"") != NULL) r->busy++;
  /* Answer input requests from inside the event callback: another API call, nested. */
  if (ev->type == KH_EVENT_INPUT_REQUEST) {
    API(kh_kernel_input_reply(m, ev->kernel_id, "typed", 5));
    r->input_answered++;
  }
}

static void rule_on_reply(kh_manager_t *m, const kh_reply_t *rep, int status, void *data) {
  rule_t *r = data;
  (void)m;
  (void)rep;
  (void)status;
  note();
  r->replies++;
}

static void rule_on_done(kh_manager_t *m, const char *id, int status, const char *errmsg,
                         void *data) {
  (void)m;
  (void)id;
  (void)status;
  (void)errmsg;
  note();
  ((rule_t *)data)->done++;
}

static void rule_on_created(kh_manager_t *m, const char *id, int status, const char *errmsg,
                            void *data) {
  (void)m;
  (void)id;
  (void)errmsg;
  note();
  ASSERT_INT(status, ==, 0);
  ((rule_t *)data)->created++;
}

static void rule_on_closed(kh_manager_t *m, void *data) {
  (void)m;
  note();
  ((rule_t *)data)->closed = 1;
}

static void rule_exec(rule_t *r, const char *code, const kh_execute_options_t *o) {
  ASSERT_INT(API(kh_kernel_execute(r->m, r->id, code, strlen(code), o, NULL, 0, rule_on_reply, r)),
             ==, 0);
}

static void run_until_count(uv_loop_t *loop, int *counter, int n) {
  while (*counter < n) uv_run(loop, UV_RUN_ONCE);
}

TEST(delivery_never_inside_api) {
  uv_loop_t loop;
  rule_t r;
  int want;
  char other[64];
  const char *opts = th_opts("");
  memset(&r, 0, sizeof(r));
  ASSERT_INT(uv_loop_init(&loop), ==, 0);
  ASSERT_INT(API(kh_manager_new(&r.m, &loop, "{\"interruptGraceMs\": 200}")), ==, 0);
  ASSERT_INT(API(kh_subscribe(r.m, NULL, KH_EVENT_ALL, rule_on_event, &r, NULL)), ==, 0);
  ASSERT_INT(API(kh_kernel_create(r.m, opts, r.id, sizeof(r.id), rule_on_created, &r)), ==, 0);
  run_until_count(&loop, &r.created, 1);

  /* execute: busy, events, reply; an error aborts the request queued behind it. */
  rule_exec(&r, "print('x'); 1", NULL);
  rule_exec(&r, "1/0", NULL);
  rule_exec(&r, "2", NULL);
  run_until_count(&loop, &r.replies, 3);
  /* input reply (answered from inside the input_request event callback) */
  rule_exec(&r, "input('? ')", NULL);
  run_until_count(&loop, &r.replies, 4);
  ASSERT_INT(r.input_answered, ==, 1);
  /* interrupt a running cell */
  want = r.busy + 1;
  rule_exec(&r, "import time\ntime.sleep(30)", NULL);
  run_until_count(&loop, &r.busy, want);
  ASSERT_INT(API(kh_kernel_interrupt(r.m, r.id)), ==, 0);
  run_until_count(&loop, &r.replies, 5);
  /* restart with a running and a queued request: both canceled from the loop */
  rule_exec(&r, "import time\ntime.sleep(30)", NULL);
  rule_exec(&r, "3", NULL);
  ASSERT_INT(API(kh_kernel_restart(r.m, r.id, rule_on_done, &r)), ==, 0);
  run_until_count(&loop, &r.done, 1);
  run_until_count(&loop, &r.replies, 7);
  /* destroy-all of a namespace with nothing in it: the callback still waits for the loop */
  ASSERT_INT(API(kh_manager_destroy_all(r.m, "no-such-namespace", rule_on_done, &r)), ==, 0);
  run_until_count(&loop, &r.done, 2);
  /* destroy with queued work */
  rule_exec(&r, "import time\ntime.sleep(30)", NULL);
  rule_exec(&r, "4", NULL);
  ASSERT_INT(API(kh_kernel_destroy(r.m, r.id, rule_on_done, &r)), ==, 0);
  run_until_count(&loop, &r.done, 3);
  run_until_count(&loop, &r.replies, 9);
  /* destroy-all with kernels, then close with a busy kernel */
  ASSERT_INT(API(kh_kernel_create(r.m, opts, other, sizeof(other), rule_on_created, &r)), ==, 0);
  run_until_count(&loop, &r.created, 2);
  ASSERT_INT(API(kh_manager_destroy_all(r.m, NULL, rule_on_done, &r)), ==, 0);
  run_until_count(&loop, &r.done, 4);
  ASSERT_INT(API(kh_kernel_create(r.m, opts, r.id, sizeof(r.id), rule_on_created, &r)), ==, 0);
  run_until_count(&loop, &r.created, 3);
  rule_exec(&r, "import time\ntime.sleep(30)", NULL);
  ASSERT_INT(API(kh_manager_close(r.m, rule_on_closed, &r)), ==, 0);
  run_until_count(&loop, &r.closed, 1);
  ASSERT_INT(r.replies, ==, 10);
  ASSERT_INT(uv_run(&loop, UV_RUN_DEFAULT), ==, 0);
  ASSERT_INT(uv_loop_close(&loop), ==, 0);
  ASSERT(callbacks > 20);
  ASSERT_INT(inside_calls, ==, 0);
}

TEST(delivery_busy_not_inside_execute) {
  th_t t;
  char id[64];
  th_result_t r;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  ASSERT_INT(th_submit(&t, id, "1", NULL, &r), ==, 0);
  ASSERT_INT(th_count(&t, KH_EVENT_STATUS, r.id), ==, 0); /* nothing yet: it comes from the loop */
  th_run_until(&t, &r.done);
  ASSERT_STR(th_s(th_find(&t, KH_EVENT_STATUS, r.id, 0)->data, "execution_state"), "busy");
  th_result_free(&r);
  th_fini(&t);
}

/* --- retries from a failed request's callback --------------------------------------------- */

typedef struct {
  th_t *t;
  char id[64];
  int status;   /* of the first request */
  int fired;    /* the first request's callback ran */
  int returned; /* the API call that fails it has returned */
  int early;    /* the first callback ran before that call returned */
  int retry_rc; /* kh_kernel_execute from inside the callback */
  th_result_t retry;
} retry_t;

static void retry_on_reply(kh_manager_t *m, const kh_reply_t *rep, int status, void *data) {
  retry_t *x = data;
  (void)m;
  (void)rep;
  x->fired = 1;
  x->status = status;
  if (!x->returned) x->early = 1;
  x->retry_rc = th_submit(x->t, x->id, "1+1", NULL, &x->retry);
}

static void retry_submit(retry_t *x, const char *code, const kh_execute_options_t *o) {
  ASSERT_INT(kh_kernel_execute(x->t->m, x->id, code, strlen(code), o, NULL, 0, retry_on_reply, x),
             ==, 0);
}

/* A manager and a kernel with `kernel_extra` options, ready for retry_submit(). */
static void retry_init(th_t *t, retry_t *x, const char *manager_opts, const char *kernel_extra) {
  memset(x, 0, sizeof(*x));
  th_init(t, manager_opts);
  x->t = t;
  th_create(t, th_opts(kernel_extra), x->id);
}

/* The retry ran and gave 2. */
static void retry_check_ok(retry_t *x) {
  th_run_until(x->t, &x->fired);
  ASSERT_ERR(x->retry_rc, 0);
  th_run_until(x->t, &x->retry.done);
  ASSERT_ERR(x->retry.status, 0);
  ASSERT_STR(th_s(x->retry.json, "status"), "ok");
  ASSERT_STR(th_s(x->retry.json, "result.data.text/plain"), "2");
  th_result_free(&x->retry);
}

TEST(delivery_retry_after_timeout) {
  th_t t;
  retry_t x;
  kh_execute_options_t o;
  retry_init(&t, &x, "{\"interruptGraceMs\": 100}", "");
  x.returned = 1;
  kh_execute_options_init(&o);
  o.timeout_ms = 100;
  /* A worker cell that swallows the interrupt is killed and its process replaced; a kernel
   * thread cannot be killed, so there the interrupt itself ends the cell. */
  retry_submit(&x,
               worker_mode() ? "import time\nwhile True:\n  try:\n    time.sleep(10)\n"
                               "  except KeyboardInterrupt:\n    pass"
                             : "import time\ntime.sleep(30)",
               &o);
  retry_check_ok(&x);
  ASSERT_INT(x.status, ==, worker_mode() ? KH_EKERNELDEAD : 0);
  th_fini(&t);
}

TEST(delivery_retry_after_crash_autorestart) {
  th_t t;
  retry_t x;
  if (!worker_mode()) return; /* a crash in main_thread mode is the host's own */
  retry_init(&t, &x, NULL, "\"autoRestart\": true");
  x.returned = 1;
  retry_submit(&x, "import os\nos._exit(3)", NULL);
  retry_check_ok(&x);
  ASSERT_ERR(x.status, KH_EKERNELDEAD);
  th_fini(&t);
}

static void on_done_flag(kh_manager_t *m, const char *id, int status, const char *errmsg,
                         void *data) {
  (void)m;
  (void)id;
  (void)errmsg;
  ASSERT_INT(status, >=, 0);
  *(int *)data = 1;
}

TEST(delivery_retry_after_restart) {
  th_t t;
  retry_t x;
  int restarted = 0;
  retry_init(&t, &x, NULL, "");
  retry_submit(&x, "import time\ntime.sleep(30)", NULL);
  th_wait_events(&t, KH_EVENT_STATUS, NULL, 1); /* busy */
  ASSERT_INT(kh_kernel_restart(t.m, x.id, on_done_flag, &restarted), ==, 0);
  x.returned = 1;
  retry_check_ok(&x);
  ASSERT_INT(x.early, ==, 0);
  ASSERT_ERR(x.status, KH_ECANCELED);
  ASSERT_INT(restarted, ==, 1); /* the retry ran after the restart, on the fresh kernel */
  th_fini(&t);
}

TEST(delivery_callbacks_after_destroy) {
  th_t t;
  retry_t x;
  int destroyed = 0;
  retry_init(&t, &x, NULL, "");
  retry_submit(&x, "import time\ntime.sleep(30)", NULL);
  ASSERT_INT(kh_kernel_destroy(t.m, x.id, on_done_flag, &destroyed), ==, 0);
  x.returned = 1;
  th_run_until(&t, &x.fired);
  ASSERT_INT(x.early, ==, 0);
  ASSERT_ERR(x.status, KH_ECANCELED);
  /* retried from the cancellation: the kernel is on its way out, never back; it is still
   * closing, as its release is queued behind the deliveries that were queued before it */
  ASSERT_ERR(x.retry_rc, KH_ECLOSED);
  th_run_until(&t, &destroyed);
  ASSERT_INT(kh_kernel_exists(t.m, x.id, NULL), ==, 0);
  th_fini(&t);
}

/* --- interruptGraceMs: 0 ------------------------------------------------------------------- */

/* A cell that an interrupt ends in either mode, and that keeps the kernel busy until then. */
static const char *busy_cell(void) {
  return worker_mode() ? "import time\ntime.sleep(100)" : "while True:\n  pass";
}

TEST(grace_zero_time_limit) {
  th_t t;
  char id[64];
  th_result_t r;
  th_init(&t, "{\"interruptGraceMs\": 0}");
  th_create(&t, th_opts("\"maxExecutionTime\": 100"), id);
  ASSERT_INT(th_submit(&t, id, busy_cell(), NULL, &r), ==, 0);
  th_run_until(&t, &r.done);
  /* interrupted (a KeyboardInterrupt reply) or, in a worker, killed at once and restarted */
  if (r.status == 0)
    ASSERT_STR(th_s(r.json, "error.ename"), "KeyboardInterrupt");
  else
    ASSERT_ERR(r.status, KH_EKERNELDEAD);
  th_result_free(&r);
  th_exec(&t, id, "1+1", &r); /* and the kernel is usable again */
  ASSERT_STR(th_s(r.json, "result.data.text/plain"), "2");
  th_result_free(&r);
  th_fini(&t);
}

/* A manager with interruptGraceMs: 0 and a kernel busy with busy_cell(). */
static void grace_zero_busy(th_t *t, char *id, th_result_t *r) {
  th_init(t, "{\"interruptGraceMs\": 0}");
  th_create(t, th_opts(""), id);
  ASSERT_INT(th_submit(t, id, busy_cell(), NULL, r), ==, 0);
  th_wait_status(t, r->id, "busy");
}

TEST(grace_zero_destroy_busy) {
  th_t t;
  char id[64];
  th_result_t r;
  int destroyed = 0;
  grace_zero_busy(&t, id, &r);
  ASSERT_INT(kh_kernel_destroy(t.m, id, on_done_flag, &destroyed), ==, 0);
  th_run_until(&t, &destroyed);
  ASSERT(r.done);
  ASSERT_ERR(r.status, KH_ECANCELED);
  th_fini(&t);
}

static void on_closed_flag(kh_manager_t *m, void *data) {
  (void)m;
  *(int *)data = 1;
}

TEST(grace_zero_close_busy) {
  th_t t;
  char id[64];
  th_result_t r;
  int closed = 0, i;
  grace_zero_busy(&t, id, &r);
  ASSERT_INT(kh_manager_close(t.m, on_closed_flag, &closed), ==, 0);
  th_run_until(&t, &closed);
  ASSERT(r.done);
  ASSERT_ERR(r.status, KH_ECANCELED);
  uv_close((uv_handle_t *)&t.watchdog, NULL);
  ASSERT_INT(uv_run(&t.loop, UV_RUN_DEFAULT), ==, 0);
  ASSERT_INT(uv_loop_close(&t.loop), ==, 0); /* nothing left behind: no thread, no process */
  for (i = 0; i < t.nevents; i++) json_decref(t.events[i].data);
}

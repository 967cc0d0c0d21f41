/* test_lifecycle.c: what needs code about a kernel's life: unknown ids, ids, listing and
 * destroy-all, calls made while a destroy is under way or from inside callbacks, inactivity
 * timeouts, and closing with work in flight. Restart, interrupts and the request queue are
 * data: tests/cases/. */
#include <signal.h>

#include "kh_test.h"

TEST(kernel_unknown_id) {
  th_t t;
  th_result_t r;
  th_init(&t, NULL);
  ASSERT_ERR(th_submit(&t, "nope", "1", NULL, &r), KH_ENOTFOUND);
  ASSERT_CONTAINS(kh_manager_errmsg(t.m), "nope");
  ASSERT_ERR(kh_kernel_interrupt(t.m, "nope"), KH_ENOTFOUND);
  ASSERT_ERR(kh_kernel_restart(t.m, "nope", NULL, NULL), KH_ENOTFOUND);
  ASSERT_ERR(kh_kernel_destroy(t.m, "nope", NULL, NULL), KH_ENOTFOUND);
  ASSERT_ERR(kh_kernel_input_reply(t.m, "nope", "x", 1), KH_ENOTFOUND);
  ASSERT(kh_kernel_info(t.m, "nope") == NULL);
  ASSERT_ERR(kh_kernel_execute(t.m, NULL, "1", 1, NULL, NULL, 0, th_never_cb, NULL), KH_EINVAL);
  ASSERT_ERR(kh_kernel_execute(NULL, "x", "1", 1, NULL, NULL, 0, th_never_cb, NULL), KH_EINVAL);
  th_fini(&t);
}

TEST(kernel_ids) {
  th_t t;
  char a[64], b[64], c[64];
  th_init(&t, NULL);
  th_create(&t, th_opts("\"id\": \"my-kernel\""), a);
  ASSERT_STR(a, "my-kernel");
  th_create_error(&t, th_opts("\"id\": \"my-kernel\""), KH_EEXIST, "my-kernel");
  th_create(&t, th_opts(""), b);
  th_create(&t, th_opts(""), c);
  ASSERT_INT(strlen(b), ==, 36); /* a UUID */
  ASSERT(strcmp(b, c) != 0);
  ASSERT_INT(kh_kernel_exists(t.m, "my-kernel", NULL), ==, 1);
  th_fini(&t);
}

TEST(manager_list_namespace) {
  th_t t;
  char a[64], b[64], c[64];
  char *s;
  json_t *j;
  th_init(&t, NULL);
  th_create(&t, th_opts("\"namespace\": \"ws1\""), a);
  th_create(&t, th_opts("\"namespace\": \"ws1\""), b);
  th_create(&t, th_opts("\"namespace\": \"ws2\""), c);
  s = kh_manager_list(t.m, "ws1");
  j = json_loads(s, 0, NULL);
  ASSERT_INT(json_array_size(j), ==, 2);
  ASSERT_STR(th_s(j, "[0].namespace"), "ws1");
  ASSERT_STR(th_s(j, "[0].mode"), th_mode());
  ASSERT_STR(th_s(j, "[0].status"), "idle");
  ASSERT(json_is_number(th_get(j, "[0].created")));
  json_decref(j);
  kh_free(s);
  s = kh_manager_list(t.m, NULL);
  j = json_loads(s, 0, NULL);
  ASSERT_INT(json_array_size(j), ==, 3);
  json_decref(j);
  kh_free(s);
  s = kh_kernel_info(t.m, c);
  j = json_loads(s, 0, NULL);
  ASSERT_STR(th_s(j, "id"), c);
  ASSERT_STR(th_s(j, "options.namespace"), "ws2");
  json_decref(j);
  kh_free(s);
  th_fini(&t);
}

TEST(manager_destroy_all) {
  th_t t;
  char a[64], b[64], c[64];
  int done[2] = {0, -1};
  th_init(&t, NULL);
  th_create(&t, th_opts("\"namespace\": \"ws1\""), a);
  th_create(&t, th_opts("\"namespace\": \"ws1\""), b);
  th_create(&t, th_opts("\"namespace\": \"ws2\""), c);
  ASSERT_INT(kh_manager_destroy_all(t.m, "ws1", th_done_cb, done), ==, 0);
  th_run_until(&t, &done[0]);
  ASSERT_INT(done[1], ==, 2);
  ASSERT_INT(kh_kernel_exists(t.m, a, NULL), ==, 0);
  ASSERT_INT(kh_kernel_exists(t.m, b, NULL), ==, 0);
  ASSERT_INT(kh_kernel_exists(t.m, c, NULL), ==, 1);
  done[0] = 0;
  ASSERT_INT(kh_manager_destroy_all(t.m, "empty", th_done_cb, done), ==, 0);
  th_run_until(&t, &done[0]); /* runs even when nothing matched */
  ASSERT_INT(done[1], ==, 0);
  done[0] = 0;
  ASSERT_INT(kh_manager_destroy_all(t.m, NULL, th_done_cb, done), ==, 0);
  th_run_until(&t, &done[0]);
  ASSERT_INT(done[1], ==, 1);
  ASSERT_INT(kh_manager_kernel_count(t.m), ==, 0);
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
  ASSERT_INT(kh_kernel_destroy(t.m, id, th_done_cb, done), ==, 0);
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
  ASSERT_INT(kh_kernel_destroy(t.m, id, th_done_cb, done), ==, 0);
  ASSERT_ERR(kh_kernel_destroy(t.m, id, NULL, NULL), KH_ECLOSED);
  th_run_until(&t, &done[0]);
  ASSERT_ERR(kh_kernel_destroy(t.m, id, NULL, NULL), KH_ENOTFOUND);
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
  ASSERT_INT(kh_kernel_restart(m, x->id, th_done_cb, x->restarted), ==, 0);
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
  /* Subscribed before the kernel exists: its 50 ms may run out before th_create returns. */
  ASSERT_INT(kh_subscribe(t.m, "inactivity-dead-final", KH_EVENT_STATUS, on_dead_try_execute, &d,
                          NULL),
             ==, 0);
  th_create(&t, th_opts("\"id\": \"inactivity-dead-final\", \"inactivityTimeout\": 50"), id);
  th_run_until(&t, &d.dead);
  /* the kernel was already on its way out when it said so: no cell runs on it again */
  ASSERT_ERR(d.rc, KH_ECLOSED);
  ASSERT_INT(kh_kernel_exists(t.m, id, NULL), ==, 0);
  th_fini(&t);
}

static void on_sigpipe(int sig) {
  (void)sig;
}

TEST(manager_sigpipe_ignored) {
  th_t t;
  struct sigaction sa;
  /* The default disposition (a shell's, CI's): the first manager makes it "ignore", so a write
   * to a worker that just died fails with EPIPE instead of killing this process. */
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = SIG_DFL;
  ASSERT_INT(sigaction(SIGPIPE, &sa, NULL), ==, 0);
  th_init(&t, NULL);
  ASSERT_INT(sigaction(SIGPIPE, NULL, &sa), ==, 0);
  ASSERT(sa.sa_handler == SIG_IGN);
  ASSERT_INT(raise(SIGPIPE), ==, 0); /* still alive */
  th_fini(&t);
}

TEST(manager_sigpipe_handler_kept) {
  th_t t;
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_sigpipe;
  ASSERT_INT(sigaction(SIGPIPE, &sa, NULL), ==, 0);
  th_init(&t, NULL);
  ASSERT_INT(sigaction(SIGPIPE, NULL, &sa), ==, 0);
  ASSERT(sa.sa_handler == on_sigpipe);
  th_fini(&t);
}

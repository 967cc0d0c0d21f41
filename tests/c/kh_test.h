/* kh_test.h: the C test harness: registration, assertions that print values, and a fixture
 * that drives a real libuv loop and waits for callbacks and events (never for time). */
#ifndef KH_TEST_H
#define KH_TEST_H

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "kernelhost.h"

typedef void (*th_fn)(void);
void th_register(const char *name, th_fn fn);
/* Runs the case of tests/cases/<concept>.json with this name (cases.c); returns 0 when there is
 * none. Sets *mode_out to the mode it ran in. */
int th_case_run(const char *name, const char **mode_out);

#define TEST(name)                                                 \
  static void test_##name(void);                                   \
  __attribute__((constructor)) static void register_##name(void) { \
    th_register(#name, test_##name);                               \
  }                                                                \
  static void test_##name(void)

#define FAIL(...)                                   \
  do {                                              \
    fprintf(stderr, "%s:%d: ", __FILE__, __LINE__); \
    fprintf(stderr, __VA_ARGS__);                   \
    fprintf(stderr, "\n");                          \
    exit(1);                                        \
  } while (0)

#define ASSERT(c)                               \
  do {                                          \
    if (!(c)) FAIL("assertion failed: %s", #c); \
  } while (0)

#define ASSERT_INT(a, op, b)                                              \
  do {                                                                    \
    long long a_ = (long long)(a), b_ = (long long)(b);                   \
    if (!(a_ op b_)) FAIL("%s %s %s: %lld vs %lld", #a, #op, #b, a_, b_); \
  } while (0)

#define ASSERT_STR(a, b)                                                                  \
  do {                                                                                    \
    const char *a_ = (a), *b_ = (b);                                                      \
    if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0)                                  \
      FAIL("%s == %s: \"%s\" vs \"%s\"", #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)"); \
  } while (0)

#define ASSERT_CONTAINS(hay, needle)                                        \
  do {                                                                      \
    const char *h_ = (hay), *n_ = (needle);                                 \
    if (h_ == NULL || strstr(h_, n_) == NULL)                               \
      FAIL("%s contains \"%s\": got \"%s\"", #hay, n_, h_ ? h_ : "(null)"); \
  } while (0)

/* Asserts a call returned the given error, printing names. */
#define ASSERT_ERR(call, code)                                                             \
  do {                                                                                     \
    int r_ = (call);                                                                       \
    if (r_ != (code))                                                                      \
      FAIL("%s: expected %s, got %s (%d)", #call, kh_err_name(code), kh_err_name(r_), r_); \
  } while (0)

#define TH_MAX_EVENTS 4096

typedef struct {
  int type;
  char kernel_id[64];
  char exec_id[64];
  json_t *data;
} th_event_t;

typedef struct {
  int done;
  int status;
  char errmsg[512];
  char id[64];
  json_t *json; /* the reply, when status == 0 */
} th_result_t;

typedef struct {
  uv_loop_t loop;
  kh_manager_t *m;
  th_event_t events[TH_MAX_EVENTS];
  int nevents;
  int64_t sub;
  uv_timer_t watchdog;
} th_t;

/* Reads KH_TEST_MODE ("main_thread" default, or "worker"): the mode every test uses. */
const char *th_mode(void);
/* A kernel options object for th_mode() plus the given extra JSON members (may be ""). */
const char *th_opts(const char *extra);

/* Binary values into a parsed event or reply, as {"$binary": "<hex>"} at their paths. */
void th_put_buffers(json_t *doc, const kh_buffer_t *b, size_t n);
void th_init(th_t *t, const char *manager_opts);
void th_fini(th_t *t); /* closes the manager, the loop, and checks nothing is left */
/* 1 while th_fini is inside kh_manager_close: a callback that sees it ran inside an API call. */
extern int th_in_close;
void th_run_until(th_t *t, int *flag);
/* Runs until `n` events of `type` for exec_id (NULL: any) have been recorded. */
void th_wait_events(th_t *t, int type, const char *exec_id, int n);
int th_count(th_t *t, int type, const char *exec_id);
/* Runs one loop iteration under the watchdog. */
void th_step(th_t *t);
/* Runs until a status event with this execution_state for exec_id ("" = none) arrives. */
void th_wait_status(th_t *t, const char *exec_id, const char *state);
th_event_t *th_find(th_t *t, int type, const char *exec_id, int nth);

/* Creates a kernel and waits until it is ready; fails the test on error. Returns its id. */
const char *th_create(th_t *t, const char *opts_json, char *id_buf);
/* Starts an execute; the result fills *res when the callback runs. */
int th_submit(th_t *t, const char *id, const char *code, const kh_execute_options_t *o,
              th_result_t *res);
/* Executes and waits; fails the test unless the API call and callback succeed. */
json_t *th_exec(th_t *t, const char *id, const char *code, th_result_t *res);
void th_result_free(th_result_t *res);
/* A kh_kernel_done_cb / kh_kernel_create_cb that stores 1 in d[0] and the status in d[1]
 * (data: int d[2]). */
void th_done_cb(kh_manager_t *m, const char *id, int status, const char *errmsg, void *data);
/* An execute callback for calls that must fail: it fails the test if it ever runs. */
void th_never_cb(kh_manager_t *m, const kh_reply_t *r, int status, void *data);
/* Asserts kh_kernel_create(opts) returns `code` at once, with a detail text naming `mention`. */
void th_create_error(th_t *t, const char *opts, int code, const char *mention);
void th_destroy(th_t *t, const char *id);
/* With a pool on the manager (KH_TEST_POOL, or the test's own), waits until it is full
 * (kh_manager_pool_ready), so that counts of descriptors and processes compare like with like;
 * nothing without one. */
void th_pool_settle(th_t *t);
/* A pidfd for pid (it becomes readable when the process exits), and the wait for that, with a
 * bound of 60 s; it closes the pidfd. */
int th_pid_open(int pid);
void th_wait_pid_gone(int pidfd);
/* Runs a cell that prints and then sleeps for 100 s, interrupts it once the print has arrived
 * (the cell is inside, on its way into sleep), and asserts the reply is a KeyboardInterrupt. */
void th_interrupt_sleep(th_t *t, const char *id);

/* Small JSON accessors: th_s(j, "result.data.text/plain") follows dotted keys; "outputs[2]"
 * indexes arrays. */
json_t *th_get(json_t *j, const char *path);
const char *th_s(json_t *j, const char *path);
long long th_i(json_t *j, const char *path);
#endif

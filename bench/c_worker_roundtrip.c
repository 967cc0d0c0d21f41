/* c_worker_roundtrip.c: worker-mode figures from C: create-to-ready (cold and from the warm
 * pool), execute round trip of `1+1` (p50/p99), interrupt-to-error latency, idle worker RSS.
 * Usage: c_worker_roundtrip [runs=10000] [cold_starts=20]  (KH_WORKER_PATH may point at the
 * worker; by default it is found next to this program). Prints one JSON object. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <jansson.h>

#include "kernelhost.h"

static uv_loop_t loop;
static kh_manager_t *m;
static int done, status;

static double now_us(void) {
  return (double)uv_hrtime() / 1e3;
}

static void on_created(kh_manager_t *mm, const char *id, int st, const char *err, void *d) {
  (void)mm;
  (void)id;
  (void)d;
  if (st != 0) fprintf(stderr, "create failed: %s\n", err);
  status = st;
  done = 1;
}

static void on_done(kh_manager_t *mm, const char *id, int st, const char *err, void *d) {
  (void)mm;
  (void)id;
  (void)err;
  (void)d;
  status = st;
  done = 1;
}

static void on_exec(kh_manager_t *mm, const kh_reply_t *r, int st, void *d) {
  (void)mm;
  (void)d;
  status = st;
  if (st == 0 && d != NULL) snprintf(d, 64, "%s", r->status);
  done = 1;
}

static void wait_done(void) {
  while (!done) uv_run(&loop, UV_RUN_ONCE);
  done = 0;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double create_ms(const char *opts, char *id) {
  double t0 = now_us();
  if (kh_kernel_create(m, opts, id, 64, on_created, NULL) != 0) exit(1);
  wait_done();
  if (status != 0) exit(1);
  return (now_us() - t0) / 1e3;
}

static void destroy(const char *id) {
  kh_kernel_destroy(m, id, on_done, NULL);
  wait_done();
}

static long rss_kb(int pid) {
  char path[64], line[256];
  long kb = -1;
  FILE *f;
  snprintf(path, sizeof(path), "/proc/%d/status", pid);
  if ((f = fopen(path, "r")) == NULL) return -1;
  while (fgets(line, sizeof(line), f))
    if (strncmp(line, "VmRSS:", 6) == 0) kb = atol(line + 6);
  fclose(f);
  return kb;
}

static void on_tick(uv_timer_t *t) {
  (void)t;
  done = 1;
}

/* Lets the pool refill (a benchmark may wait on the clock; tests may not). */
static void pause_ms(int ms) {
  uv_timer_t t;
  uv_timer_init(&loop, &t);
  uv_timer_start(&t, on_tick, (uint64_t)ms, 0);
  wait_done();
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&loop, UV_RUN_NOWAIT);
}

int main(int argc, char **argv) {
  int runs = argc > 1 ? atoi(argv[1]) : 10000;
  int colds = argc > 2 ? atoi(argv[2]) : 20;
  double *lat = calloc((size_t)runs, sizeof(double)), *cold = calloc((size_t)colds, sizeof(double));
  double pooled[10], intr[20];
  char id[64], st[64];
  int i, pid = 0;
  long rss;
  char *info;
  json_t *j;
  uv_loop_init(&loop);
  if (kh_manager_new(&m, &loop, "{\"pool\":{\"size\":1}}") != 0) return 1;

  /* Cold: a kernel whose env needs a fresh process never comes from the pool. */
  for (i = 0; i < colds; i++) {
    cold[i] = create_ms("{\"mode\":\"worker\",\"env\":{\"LD_BENCH\":\"1\"}}", id);
    destroy(id);
  }
  qsort(cold, (size_t)colds, sizeof(double), cmp);

  for (i = 0; i < 10; i++) {
    pause_ms(400); /* the pool refills in the background */
    pooled[i] = create_ms("{\"mode\":\"worker\"}", id);
    destroy(id);
  }
  qsort(pooled, 10, sizeof(double), cmp);

  create_ms("{\"mode\":\"worker\"}", id);
  pause_ms(500);              /* let the pool's refill finish starting, off the measurement */
  for (i = 0; i < 200; i++) { /* warm-up */
    kh_kernel_execute(m, id, "1+1", 3, NULL, NULL, 0, on_exec, NULL);
    wait_done();
  }
  for (i = 0; i < runs; i++) {
    double t0 = now_us();
    kh_kernel_execute(m, id, "1+1", 3, NULL, NULL, 0, on_exec, NULL);
    wait_done();
    lat[i] = now_us() - t0;
  }
  qsort(lat, (size_t)runs, sizeof(double), cmp);

  info = kh_kernel_info(m, id);
  j = json_loads(info, 0, NULL);
  pid = (int)json_integer_value(json_object_get(j, "pid"));
  json_decref(j);
  kh_free(info);
  rss = rss_kb(pid);

  /* Interrupt-to-error: a cell in time.sleep, interrupted once it is busy in the worker. */
  for (i = 0; i < 20; i++) {
    double t0;
    kh_kernel_execute(m, id, "import time\ntime.sleep(30)", 26, NULL, NULL, 0, on_exec, st);
    pause_ms(50);
    t0 = now_us();
    kh_kernel_interrupt(m, id);
    wait_done();
    intr[i] = (now_us() - t0) / 1e3;
    if (status != 0 || strcmp(st, "error") != 0) return 1;
  }
  qsort(intr, 20, sizeof(double), cmp);
  destroy(id);

  printf(
      "{\"cold_create_ms\":{\"p50\":%.1f,\"min\":%.1f,\"max\":%.1f},"
      "\"pool_create_ms\":{\"p50\":%.2f,\"min\":%.2f,\"max\":%.2f},"
      "\"roundtrip_1p1_us\":{\"runs\":%d,\"p50\":%.1f,\"p99\":%.1f},"
      "\"interrupt_to_error_ms\":{\"p50\":%.2f,\"max\":%.2f},\"idle_worker_rss_kb\":%ld}\n",
      cold[colds / 2], cold[0], cold[colds - 1], pooled[5], pooled[0], pooled[9], runs,
      lat[runs / 2], lat[(size_t)((double)runs * 0.99)], intr[10], intr[19], rss);
  kh_manager_close(m, NULL, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  free(lat);
  free(cold);
  return uv_loop_close(&loop) != 0;
}

/* c_roundtrip.c: execute("1+1") round trip from C (p50/p99 over N runs) and kernel
 * create-to-ready, for one mode. Usage: kh_bench_c [main_thread|worker|host] [runs]
 * Prints one JSON object. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "kernelhost.h"

static int done, status;

static void on_created(kh_manager_t *m, const char *id, int st, const char *e, void *d) {
  (void)m, (void)id, (void)e, (void)d;
  status = st;
  done = 1;
}

static void on_exec(kh_manager_t *m, const kh_reply_t *r, int st, void *d) {
  (void)m, (void)r, (void)d;
  status = st;
  done = 1;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double create_one(uv_loop_t *loop, kh_manager_t *m, const char *opts, char *id) {
  uint64_t t0 = uv_hrtime();
  done = 0;
  if (kh_kernel_create(m, opts, id, 64, on_created, NULL) != 0) {
    fprintf(stderr, "create: %s\n", kh_manager_errmsg(m));
    exit(1);
  }
  while (!done) uv_run(loop, UV_RUN_ONCE);
  if (status != 0) exit(1);
  return (uv_hrtime() - t0) / 1e3;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "main_thread";
  int runs = argc > 2 ? atoi(argv[2]) : 10000, i;
  uv_loop_t loop;
  kh_manager_t *m;
  char id[64], id2[64], opts[128];
  double first_us, next_us, *lat = malloc(sizeof(double) * (size_t)runs);
  uv_loop_init(&loop);
  kh_manager_new(&m, &loop, NULL);
  if (strcmp(mode, "host") == 0) /* main_thread with thread "host" (DESIGN.md section 3) */
    snprintf(opts, sizeof(opts), "{\"mode\":\"main_thread\",\"thread\":\"host\"}");
  else
    snprintf(opts, sizeof(opts), "{\"mode\":\"%s\"}", mode);
  first_us = create_one(&loop, m, opts, id);
  next_us = create_one(&loop, m, opts, id2);
  for (i = 0; i < runs + 200; i++) {
    uint64_t t0 = uv_hrtime();
    done = 0;
    kh_kernel_execute(m, id, "1+1", 3, NULL, NULL, 0, on_exec, NULL);
    while (!done) uv_run(&loop, UV_RUN_ONCE);
    if (i >= 200) lat[i - 200] = (uv_hrtime() - t0) / 1e3; /* 200 warm-up runs */
  }
  qsort(lat, (size_t)runs, sizeof(double), cmp);
  printf(
      "{\"lang\":\"c\",\"mode\":\"%s\",\"runs\":%d,\"execute_p50_us\":%.1f,"
      "\"execute_p99_us\":%.1f,\"create_first_us\":%.0f,\"create_next_us\":%.0f}\n",
      mode, runs, lat[runs / 2], lat[runs * 99 / 100], first_us, next_us);
  kh_manager_close(m, NULL, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  free(lat);
  return 0;
}

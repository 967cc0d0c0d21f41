/* kh_bench.c: kernelhost's side of `make bench`. One metric per run, raw samples out as one JSON
 * line, so bench/run.py can put them beside ipykernel's. A metric that needs a piece this build
 * lacks prints {"skip": "<why>"} instead of a number.
 *
 * Usage: kh_bench <metric> <mode> [runs] [extra]
 *   create    main_thread|worker   create -> ready (worker: cold, pool {size: 0})
 *   pool      worker               create -> ready from the warm pool (pool {size: extra|2})
 *   execute   main_thread|worker   execute("1+1") -> reply callback
 *   stream    main_thread|worker   100,000 printed lines -> every line in the host
 *   display   main_thread|worker   1 MiB display_data: execute -> event in the host
 *   display_png  main_thread|worker [base64]  1 MiB PNG (_repr_png_ bytes): execute -> the
 *             display_data event in the host, its PNG as bytes (or base64 with the kernel
 *             option binary: "base64")
 *   interrupt main_thread|worker   extra = busy|sleep: interrupt -> KeyboardInterrupt event
 *   restart   main_thread|worker   restart -> ready
 *   rss       main_thread|worker   extra = kernel count (default 50): idle memory
 *   complete_attr, complete_import, inspect, is_complete
 *             main_thread|worker   an editor request -> its answer callback (issue 12): `box.`
 *                                  after a cell made box, `import nu`, `len` at detail 0,
 *                                  `for i in x:`; the first request is not a sample
 *   complete_first main_thread|worker  a fresh kernel's first completion of `box.` (jedi's
 *                                  import: once per process; main_thread's first_us)
 *   hostcall  main_thread|host|worker  kernelhost.host.noop() from a cell -> the host's no-op
 *                                  function (answers null at once) -> back in the cell, timed
 *                                  in the cell (issue 13)
 *   comm      main_thread|worker   issue 13: kh_kernel_comm_send(comm_msg) on a comm whose
 *                                  Python handler sends the data back -> that comm_msg event
 *                                  (then the message's idle, before the next one)
 *   import    worker [module]      issue 17: `import pandas` (or the module given) as the first
 *                                  cell of a new kernel, execute -> reply; one kernel per sample
 *   burst     worker [count]       issue 17: `count` (default 200) kernels created at once;
 *                                  samples are each kernel's submit -> ready
 *
 * Environment (issue 17): KH_BENCH_POOL, the manager's pool option as JSON (for example
 * {"mode":"fork","size":2,"preload":["pandas"]}), replaces the metric's own pool (the fork server
 * is waited for with kh_manager_pool_ready before measuring, and rss then reports its template's
 * memory too); KH_BENCH_KOPTS, members added to every kernel's options (",\"permissions\":{}").
 */
#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "kernelhost.h"

static uv_loop_t loop;
static kh_manager_t *mgr;

/* What the callbacks saw; the main flow waits on these flags. */
static struct {
  int created, create_status;
  int replied, reply_status;
  int restarted, restart_status;
  int destroyed;
  char errmsg[512];
  char reply_status_str[16];
  /* events of the current measurement */
  long lines;             /* newlines seen in stream events */
  uint64_t lines_done_ns; /* when `lines` reached the goal */
  long lines_goal;
  int go; /* a stream event with "go" arrived */
  uint64_t display_ns;
  size_t display_len;
  uint64_t error_ns;
  char ename[64];
  int answered, answer_status; /* an editor request's answer */
  char answer_err[256];
  uint64_t comm_ns; /* a comm_msg event arrived */
  int idles;        /* idle status events of requests (not the kernel's own) */
  long result_int;  /* the last execute_result's text/plain, when it is an integer */
} st;

static double *samples;
static int nsamples;

static void skip(const char *metric, const char *mode, const char *why) {
  printf("{\"metric\":\"%s\",\"mode\":\"%s\",\"skip\":\"", metric, mode);
  for (; *why; why++) {
    if (*why == '"' || *why == '\\') putchar('\\');
    putchar(*why == '\n' ? ' ' : *why);
  }
  printf("\"}\n");
}

static void emit_samples(const char *metric, const char *mode, const char *unit,
                         const char *extra_json) {
  int i;
  printf("{\"metric\":\"%s\",\"mode\":\"%s\",\"unit\":\"%s\"%s%s,\"samples\":[", metric, mode, unit,
         extra_json ? "," : "", extra_json ? extra_json : "");
  for (i = 0; i < nsamples; i++) printf("%s%.3f", i ? "," : "", samples[i]);
  printf("]}\n");
}

static void run_until(int *flag) {
  while (!*flag) uv_run(&loop, UV_RUN_ONCE);
}

static void on_timer(uv_timer_t *t) {
  *(int *)t->data = 1;
}

/* Runs the loop for `ms` milliseconds (lets a pool refill, lets memory settle). */
static void run_for(uint64_t ms) {
  uv_timer_t t;
  int fired = 0;
  uv_timer_init(&loop, &t);
  t.data = &fired;
  uv_timer_start(&t, on_timer, ms, 0);
  run_until(&fired);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&loop, UV_RUN_NOWAIT);
}

/* --- callbacks ------------------------------------------------------------------------------ */

static void on_created(kh_manager_t *m, const char *id, int status, const char *e, void *d) {
  st.create_status = status;
  snprintf(st.errmsg, sizeof(st.errmsg), "%s", e ? e : "");
  st.created = 1;
}

static void on_reply(kh_manager_t *m, const kh_reply_t *r, int status, void *d) {
  st.reply_status = status;
  snprintf(st.reply_status_str, sizeof(st.reply_status_str), "%s", r->status ? r->status : "");
  st.replied = 1;
}

static void on_restarted(kh_manager_t *m, const char *id, int status, const char *e, void *d) {
  st.restart_status = status;
  st.restarted = 1;
}

static void on_destroyed(kh_manager_t *m, const char *id, int status, const char *e, void *d) {
  st.destroyed++;
}

static void on_answer(kh_manager_t *m, const char *id, int status, const char *json, size_t len,
                      const char *errmsg, void *d) {
  st.answer_status = status;
  snprintf(st.answer_err, sizeof(st.answer_err), "%s", errmsg ? errmsg : "");
  st.answered = 1;
}

static void on_event(kh_manager_t *m, const kh_event_t *ev, void *d) {
  uint64_t now = uv_hrtime();
  const char *p, *end;
  switch (ev->type) {
    case KH_EVENT_STREAM:
      if (strstr(ev->json, "\"go\\n") != NULL || strstr(ev->json, "go\\n") != NULL) st.go = 1;
      /* Count escaped newlines ("\n" in the JSON text). */
      for (p = ev->json, end = ev->json + ev->json_len; p + 1 < end; p++) {
        if (p[0] == '\\') {
          if (p[1] == 'n') st.lines++;
          p++;
        }
      }
      if (st.lines_goal && st.lines >= st.lines_goal && st.lines_done_ns == 0)
        st.lines_done_ns = now;
      break;
    case KH_EVENT_DISPLAY_DATA:
      st.display_ns = now;
      st.display_len = ev->json_len;
      if (ev->nbuffers > 0) st.display_len += ev->buffers[0].len;
      break;
    case KH_EVENT_COMM_MSG:
      if (st.comm_ns == 0) st.comm_ns = now;
      break;
    case KH_EVENT_EXECUTE_RESULT:
      p = strstr(ev->json, "\"text/plain\":\"");
      st.result_int = p ? strtol(p + 14, NULL, 10) : -1;
      break;
    case KH_EVENT_STATUS:
      if (ev->execution_id[0] && strstr(ev->json, "\"idle\"") != NULL) st.idles++;
      break;
    case KH_EVENT_EXECUTE_ERROR:
      st.error_ns = now;
      p = strstr(ev->json, "\"ename\":\"");
      if (p) {
        p += 9;
        end = strchr(p, '"');
        snprintf(st.ename, sizeof(st.ename), "%.*s", end ? (int)(end - p) : 0, p);
      }
      break;
    default:
      break;
  }
}

/* --- helpers -------------------------------------------------------------------------------- */

static const char *extra_kernel_opts = ""; /* appended to every kernel's options */

static const char *opts_for(const char *mode) {
  static char buf[1024];
  if (strcmp(mode, "host") == 0) /* main_thread, cells on this thread (thread "host") */
    snprintf(buf, sizeof(buf), "{\"mode\":\"main_thread\",\"thread\":\"host\"%s}",
             extra_kernel_opts);
  else
    snprintf(buf, sizeof(buf), "{\"mode\":\"%s\"%s}", mode, extra_kernel_opts);
  return buf;
}

/* Creates a kernel and waits until it is ready. Returns the elapsed microseconds, or -1 with
 * st.errmsg set. */
static double create_kernel(const char *mode, char *id) {
  uint64_t t0 = uv_hrtime();
  int rc;
  st.created = 0;
  rc = kh_kernel_create(mgr, opts_for(mode), id, 64, on_created, NULL);
  if (rc != 0) {
    snprintf(st.errmsg, sizeof(st.errmsg), "kh_kernel_create: %s: %s", kh_err_name(rc),
             kh_manager_errmsg(mgr));
    return -1;
  }
  run_until(&st.created);
  if (st.create_status != 0) {
    char e[400];
    snprintf(e, sizeof(e), "%.399s", st.errmsg);
    snprintf(st.errmsg, sizeof(st.errmsg), "kernel failed to start: %s: %s",
             kh_err_name(st.create_status), e);
    return -1;
  }
  return (double)(uv_hrtime() - t0) / 1e3;
}

static void destroy_kernel(const char *id) {
  int before = st.destroyed;
  if (kh_kernel_destroy(mgr, id, on_destroyed, NULL) == 0)
    while (st.destroyed == before) uv_run(&loop, UV_RUN_ONCE);
}

/* Executes code and waits for the reply; returns microseconds or -1. */
static double execute(const char *id, const char *code) {
  uint64_t t0 = uv_hrtime();
  st.replied = 0;
  if (kh_kernel_execute(mgr, id, code, strlen(code), NULL, NULL, 0, on_reply, NULL) != 0) return -1;
  run_until(&st.replied);
  if (st.reply_status != 0) return -1;
  return (double)(uv_hrtime() - t0) / 1e3;
}

/* An integer field of kh_kernel_info(), or -1 when absent. */
static long info_int(const char *id, const char *key) {
  char *info = kh_kernel_info(mgr, id), pat[64], *p;
  long v = -1;
  if (info == NULL) return -1;
  snprintf(pat, sizeof(pat), "\"%s\":", key);
  p = strstr(info, pat);
  if (p) {
    p += strlen(pat);
    while (*p == ' ') p++;
    if (strncmp(p, "true", 4) == 0)
      v = 1;
    else if (strncmp(p, "false", 5) == 0)
      v = 0;
    else
      v = strtol(p, NULL, 10);
  }
  kh_free(info);
  return v;
}

/* A string field of kh_kernel_info() into buf ("" when absent). */
static const char *info_str(const char *id, const char *key, char *buf, size_t n) {
  char *info = kh_kernel_info(mgr, id), pat[64], *p, *e;
  buf[0] = 0;
  if (info == NULL) return buf;
  snprintf(pat, sizeof(pat), "\"%s\":\"", key);
  if ((p = strstr(info, pat)) != NULL && (e = strchr(p + strlen(pat), '"')) != NULL)
    snprintf(buf, n, "%.*s", (int)(e - p - strlen(pat)), p + strlen(pat));
  kh_free(info);
  return buf;
}

/* --- the pool under test (KH_BENCH_POOL) -------------------------------------------------- */

static int fork_pool;    /* KH_BENCH_POOL has mode "fork" */
static long tmpl_pid;    /* the fork server's pid, from kh_manager_pool_ready */
static int pool_answered, pool_status;
static char pool_err[512];

static void on_pool_ready(kh_manager_t *m, const char *id, int status, const char *json,
                          size_t len, const char *errmsg, void *d) {
  const char *p = json ? strstr(json, "\"pid\":") : NULL;
  pool_status = status;
  snprintf(pool_err, sizeof(pool_err), "%s", errmsg ? errmsg : "");
  tmpl_pid = p ? strtol(p + 6, NULL, 10) : 0;
  pool_answered = 1;
}

/* Waits for a fork server to be up; 0, or -1 with st.errmsg set. */
static int wait_pool(void) {
  int rc;
  if (!fork_pool) return 0;
  pool_answered = 0;
  if ((rc = kh_manager_pool_ready(mgr, on_pool_ready, NULL)) != 0) {
    snprintf(st.errmsg, sizeof(st.errmsg), "kh_manager_pool_ready: %s", kh_err_name(rc));
    return -1;
  }
  run_until(&pool_answered);
  if (pool_status != 0) {
    snprintf(st.errmsg, sizeof(st.errmsg), "the fork server failed: %s: %.400s",
             kh_err_name(pool_status), pool_err);
    return -1;
  }
  return 0;
}

/* With a fork server, a kernel that did not come from it is not a sample of it. */
static int origin_ok(const char *id, char *why, size_t n) {
  char origin[16];
  if (!fork_pool || strcmp(info_str(id, "origin", origin, sizeof(origin)), "fork") == 0) return 1;
  snprintf(why, n, "a kernel came from \"%s\", not from the fork server", origin);
  return 0;
}

/* VmRSS / Pss of a process from /proc, in KiB (-1 when unreadable). */
static long proc_kib(long pid, const char *file, const char *key) {
  char path[64], line[256];
  size_t n = strlen(key);
  long v = -1;
  FILE *f;
  if (pid > 0)
    snprintf(path, sizeof(path), "/proc/%ld/%s", pid, file);
  else
    snprintf(path, sizeof(path), "/proc/self/%s", file);
  if ((f = fopen(path, "r")) == NULL) return -1;
  while (fgets(line, sizeof(line), f))
    if (strncmp(line, key, n) == 0) {
      v = strtol(line + n, NULL, 10);
      break;
    }
  fclose(f);
  return v;
}

/* --- metrics -------------------------------------------------------------------------------- */

static int m_create(const char *mode, int runs) {
  char id[64], extra[160];
  double first = -1;
  int i;
  if (strcmp(mode, "main_thread") == 0) {
    /* The first kernel starts CPython: reported on its own, then create/destroy N times. */
    first = create_kernel(mode, id);
    if (first < 0) return skip("create", mode, st.errmsg), 0;
  }
  for (i = 0; i < runs; i++) {
    char id2[64];
    double us = create_kernel(mode, id2);
    if (us < 0) {
      if (nsamples == 0) return skip("create", mode, st.errmsg), 0;
      break;
    }
    samples[nsamples++] = us;
    destroy_kernel(id2);
  }
  snprintf(extra, sizeof(extra), "\"first_us\":%.0f", first);
  emit_samples("create", mode, "us", extra);
  return 0;
}

static int m_pool(const char *mode, int runs, int size) {
  char id[64], why[600];
  int i, pooled = 0;
  /* The pool fills in the background: give it time before each create. */
  if (wait_pool() < 0) return skip("pool", mode, st.errmsg), 0;
  run_for(fork_pool ? 300 : 2000);
  for (i = 0; i < runs; i++) {
    double us = create_kernel(mode, id);
    long p;
    if (us < 0) return skip("pool", mode, st.errmsg), 0;
    if (!origin_ok(id, why, sizeof(why))) return skip("pool", mode, why), 0;
    p = info_int(id, "pooled");
    if (p < 0) {
      snprintf(why, sizeof(why),
               "pool {size:%d} accepted, but kh_kernel_info() has no \"pooled\" field, so a "
               "warm start cannot be told from a cold one",
               size);
      return skip("pool", mode, why), 0;
    }
    if (p == 1) {
      samples[nsamples++] = us;
      pooled++;
    }
    destroy_kernel(id);
    /* Let the pool refill: a cold worker start takes 100-200 ms here. A fork server is waited
     * for (kh_manager_pool_ready answers once `size` workers wait, each ready ahead of need:
     * its pids cgroup joined, its network namespace made), then the loop settles briefly. */
    if (fork_pool && wait_pool() < 0) return skip("pool", mode, st.errmsg), 0;
    run_for(fork_pool ? 20 : 1000);
  }
  if (pooled == 0) {
    snprintf(why, sizeof(why), "none of %d kernels came from the pool (pooled=false)", runs);
    return skip("pool", mode, why), 0;
  }
  snprintf(why, sizeof(why), "\"pooled\":%d,\"tried\":%d", pooled, runs);
  emit_samples("pool", mode, "us", why);
  return 0;
}

/* "1+1" round trips; with a prelude (execute_shell: "%time 1", which makes the kernel's IPython
 * shell), what a plain cell costs once a notebook has used a magic (results then go through the
 * shell's formatter path). */
static int m_execute(const char *metric, const char *mode, int runs, const char *prelude) {
  char id[64];
  int i, warm = runs / 10 < 200 ? runs / 10 : 200;
  if (create_kernel(mode, id) < 0) return skip(metric, mode, st.errmsg), 0;
  if (prelude && execute(id, prelude) < 0) return skip(metric, mode, "the prelude failed"), 0;
  for (i = 0; i < warm + runs; i++) {
    double us = execute(id, "1+1");
    if (us < 0) return skip(metric, mode, "execute failed"), 0;
    if (i >= warm) samples[nsamples++] = us;
  }
  emit_samples(metric, mode, "us", NULL);
  return 0;
}

/* The first magic of a kernel (issue 11): "%time 1" in a fresh kernel, which imports IPython
 * (once per process: each worker, the first main_thread kernel) and makes the kernel's shell.
 * main_thread: the first kernel's figure is first_us, later kernels' (shell only) the samples. */
static int m_first_magic(const char *mode, int runs) {
  char id[64], extra[160];
  double first = -1;
  int i;
  for (i = 0; i < runs + (strcmp(mode, "worker") != 0); i++) {
    double us;
    if (create_kernel(mode, id) < 0) return skip("first_magic", mode, st.errmsg), 0;
    us = execute(id, "%time 1");
    if (us < 0) return skip("first_magic", mode, "\"%time 1\" failed (is IPython installed?)"), 0;
    if (i == 0 && strcmp(mode, "worker") != 0)
      first = us;
    else
      samples[nsamples++] = us;
    destroy_kernel(id);
  }
  snprintf(extra, sizeof(extra), "\"first_us\":%.0f", first);
  emit_samples("first_magic", mode, "us", extra);
  return 0;
}

static int m_stream(const char *mode, int runs) {
  static const char code[] = "for i in range(100000): print(i)";
  char id[64];
  int i;
  if (create_kernel(mode, id) < 0) return skip("stream", mode, st.errmsg), 0;
  for (i = 0; i < runs + 1; i++) {
    uint64_t t0;
    st.lines = 0;
    st.lines_goal = 100000;
    st.lines_done_ns = 0;
    t0 = uv_hrtime();
    if (execute(id, code) < 0) return skip("stream", mode, "execute failed"), 0;
    if (st.lines != 100000 || st.lines_done_ns == 0) {
      char why[128];
      snprintf(why, sizeof(why), "expected 100000 lines, got %ld", st.lines);
      return skip("stream", mode, why), 0;
    }
    if (i > 0) samples[nsamples++] = (double)(st.lines_done_ns - t0) / 1e6; /* 1 warm-up */
  }
  st.lines_goal = 0;
  emit_samples("stream", mode, "ms", NULL);
  return 0;
}

static int m_display(const char *mode, int runs) {
  static const char code[] = "display({'text/plain': _kh_bench_payload}, raw=True)";
  char id[64];
  int i;
  if (create_kernel(mode, id) < 0) return skip("display", mode, st.errmsg), 0;
  if (execute(id, "_kh_bench_payload = 'x' * (1 << 20)") < 0)
    return skip("display", mode, "setup cell failed"), 0;
  for (i = 0; i < runs + 1; i++) {
    uint64_t t0;
    st.display_ns = 0;
    st.display_len = 0;
    t0 = uv_hrtime();
    if (execute(id, code) < 0 || st.display_ns == 0 || st.display_len < (1u << 20))
      return skip("display", mode, "no 1 MiB display_data event arrived"), 0;
    if (i > 0) samples[nsamples++] = (double)(st.display_ns - t0) / 1e6;
  }
  emit_samples("display", mode, "ms", NULL);
  return 0;
}

/* A 1 MiB PNG (random bytes after the signature: incompressible, as a real image's data is) from
 * an object's _repr_png_, as a plot library hands one to the display machinery. */
static int m_display_png(const char *mode, int runs, const char *extra) {
  static const char setup[] =
      "import os\n"
      "class _KhBenchPng:\n"
      "    data = b'\\x89PNG\\r\\n\\x1a\\n' + os.urandom((1 << 20) - 8)\n"
      "    def _repr_png_(self): return self.data\n"
      "    def __repr__(self): return 'png'\n"
      "_kh_bench_png = _KhBenchPng()";
  const char *name = extra && strcmp(extra, "base64") == 0 ? "display_png64" : "display_png";
  char id[64];
  int i;
  if (extra && strcmp(extra, "base64") == 0) extra_kernel_opts = ",\"binary\":\"base64\"";
  if (create_kernel(mode, id) < 0) return skip(name, mode, st.errmsg), 0;
  if (execute(id, setup) < 0) return skip(name, mode, "setup cell failed"), 0;
  for (i = 0; i < runs + 1; i++) {
    uint64_t t0;
    st.display_ns = 0;
    st.display_len = 0;
    t0 = uv_hrtime();
    if (execute(id, "display(_kh_bench_png)") < 0 || st.display_ns == 0 ||
        st.display_len < (1u << 20))
      return skip(name, mode, "no 1 MiB PNG display_data arrived"), 0;
    if (i > 0) samples[nsamples++] = (double)(st.display_ns - t0) / 1e6;
  }
  emit_samples(name, mode, "ms", NULL);
  return 0;
}

static int m_interrupt(const char *mode, int runs, const char *kind) {
  const char *code = strcmp(kind, "sleep") == 0
                         ? "import time\nprint('go', flush=True)\ntime.sleep(100)"
                         : "print('go', flush=True)\nwhile True: pass";
  char id[64], metric[32];
  int i;
  snprintf(metric, sizeof(metric), "interrupt_%s", kind);
  if (create_kernel(mode, id) < 0) return skip(metric, mode, st.errmsg), 0;
  for (i = 0; i < runs; i++) {
    uint64_t t0;
    int rc;
    st.go = 0;
    st.error_ns = 0;
    st.ename[0] = '\0';
    st.replied = 0;
    if (kh_kernel_execute(mgr, id, code, strlen(code), NULL, NULL, 0, on_reply, NULL) != 0)
      return skip(metric, mode, "execute failed"), 0;
    run_until(&st.go);
    run_for(5); /* let the cell get into its loop / sleep */
    t0 = uv_hrtime();
    if ((rc = kh_kernel_interrupt(mgr, id)) != 0) {
      char why[128];
      snprintf(why, sizeof(why), "kh_kernel_interrupt: %s", kh_err_name(rc));
      return skip(metric, mode, why), 0;
    }
    while (st.error_ns == 0 && !st.replied) uv_run(&loop, UV_RUN_ONCE);
    if (st.error_ns == 0 || strcmp(st.ename, "KeyboardInterrupt") != 0) {
      char why[128];
      snprintf(why, sizeof(why), "no KeyboardInterrupt error event (ename \"%s\")", st.ename);
      return skip(metric, mode, why), 0;
    }
    samples[nsamples++] = (double)(st.error_ns - t0) / 1e3;
    run_until(&st.replied);
  }
  emit_samples(metric, mode, "us", NULL);
  return 0;
}

static int m_restart(const char *mode, int runs) {
  char id[64], why[200];
  int i;
  if (wait_pool() < 0 || create_kernel(mode, id) < 0) return skip("restart", mode, st.errmsg), 0;
  for (i = 0; i < runs; i++) {
    uint64_t t0;
    int rc;
    if (execute(id, "x = 1") < 0) return skip("restart", mode, "execute failed"), 0;
    st.restarted = 0;
    t0 = uv_hrtime();
    if ((rc = kh_kernel_restart(mgr, id, on_restarted, NULL)) != 0)
      return skip("restart", mode, kh_err_name(rc)), 0;
    run_until(&st.restarted);
    if (st.restart_status != 0) return skip("restart", mode, kh_err_name(st.restart_status)), 0;
    samples[nsamples++] = (double)(uv_hrtime() - t0) / 1e3;
    if (!origin_ok(id, why, sizeof(why))) return skip("restart", mode, why), 0;
  }
  emit_samples("restart", mode, "us", NULL);
  return 0;
}

/* --- editor requests (issue 12) ----------------------------------------------------------- */

/* The cell that makes the object whose attribute completes (the same in ipykernel_bench.py). */
static const char box_cell[] =
    "class Box:\n    def method(self, a, b=1):\n        return a\nbox = Box()\n"
    "box.live_value = 42\nbox.name = 'kernelhost'";

/* One editor request of `kind` (the metric's name), timed to its answer callback; -1 with
 * st.answer_err set when it fails. */
static double interact(const char *id, const char *kind) {
  uint64_t t0 = uv_hrtime();
  int rc;
  st.answered = 0;
  if (strncmp(kind, "complete", 8) == 0) {
    const char *code = strcmp(kind, "complete_import") == 0 ? "import nu" : "box.";
    rc = kh_kernel_complete(mgr, id, code, strlen(code), -1, 0, on_answer, NULL);
  } else if (strcmp(kind, "inspect") == 0) {
    rc = kh_kernel_inspect(mgr, id, "len", 3, -1, 0, 0, on_answer, NULL);
  } else {
    rc = kh_kernel_is_complete(mgr, id, "for i in x:", 11, 0, on_answer, NULL);
  }
  if (rc != 0) {
    snprintf(st.answer_err, sizeof(st.answer_err), "%s: %s: %s", kind, kh_err_name(rc),
             kh_manager_errmsg(mgr));
    return -1;
  }
  run_until(&st.answered);
  if (st.answer_status != 0) {
    char e[200];
    snprintf(e, sizeof(e), "%.199s", st.answer_err);
    snprintf(st.answer_err, sizeof(st.answer_err), "%s answered %s: %s", kind,
             kh_err_name(st.answer_status), e);
    return -1;
  }
  return (double)(uv_hrtime() - t0) / 1e3;
}

/* A kernel that ran box_cell; its first request of the kind is made and not counted (the first
 * completion imports jedi: complete_first's figure). */
static int m_interact(const char *metric, const char *mode, int runs) {
  char id[64], extra[64];
  double first;
  int i, warm = runs / 10 < 50 ? runs / 10 : 50;
  if (create_kernel(mode, id) < 0) return skip(metric, mode, st.errmsg), 0;
  if (execute(id, box_cell) < 0) return skip(metric, mode, "the cell making box failed"), 0;
  if ((first = interact(id, metric)) < 0) return skip(metric, mode, st.answer_err), 0;
  for (i = 0; i < warm + runs; i++) {
    double us = interact(id, metric);
    if (us < 0) return skip(metric, mode, st.answer_err), 0;
    if (i >= warm) samples[nsamples++] = us;
  }
  snprintf(extra, sizeof(extra), "\"first_us\":%.0f", first);
  emit_samples(metric, mode, "us", extra);
  destroy_kernel(id);
  return 0;
}

/* A fresh kernel's first completion. main_thread: the process's first kernel imports jedi
 * (first_us); later kernels (the samples) find it imported. worker: every kernel is a process
 * of its own, so every sample imports jedi. */
static int m_complete_first(const char *mode, int runs) {
  char id[64], extra[64];
  double first = -1;
  int i, main = strcmp(mode, "worker") != 0;
  for (i = 0; i < runs + main; i++) {
    double us;
    if (create_kernel(mode, id) < 0) return skip("complete_first", mode, st.errmsg), 0;
    if (execute(id, box_cell) < 0) return skip("complete_first", mode, "the cell failed"), 0;
    if ((us = interact(id, "complete_attr")) < 0)
      return skip("complete_first", mode, st.answer_err), 0;
    if (i == 0 && main)
      first = us;
    else
      samples[nsamples++] = us;
    destroy_kernel(id);
  }
  snprintf(extra, sizeof(extra), "\"first_us\":%.0f", first);
  emit_samples("complete_first", mode, "us", extra);
  return 0;
}

/* --- comms (issue 13) -------------------------------------------------------------------- */

/* The target whose comms echo every message (the same in ipykernel_bench.py, through ipykernel's
 * own comm manager there). */
static const char comm_cell[] =
    "import comm\n"
    "def _kh_bench_open(c, msg):\n"
    "    c.on_msg(lambda m: c.send(m['content']['data']))\n"
    "comm.get_comm_manager().register_target('kh_bench', _kh_bench_open)";

/* Sends one comm message and runs until its idle status; returns 0 or the error code. */
static int comm_send(const char *id, const char *type, const char *content) {
  int before = st.idles, rc = kh_kernel_comm_send(mgr, id, type, content, strlen(content), NULL, 0);
  if (rc != 0) return rc;
  while (st.idles == before) uv_run(&loop, UV_RUN_ONCE);
  return 0;
}

static int m_comm(const char *mode, int runs) {
  static const char open[] = "{\"comm_id\":\"kh_bench\",\"target_name\":\"kh_bench\"}";
  char id[64], msg[96], why[600];
  int i, rc, warm = runs / 10 < 100 ? runs / 10 : 100;
  if (create_kernel(mode, id) < 0) return skip("comm", mode, st.errmsg), 0;
  if (execute(id, comm_cell) < 0) return skip("comm", mode, "registering the target failed"), 0;
  if ((rc = comm_send(id, "comm_open", open)) != 0) {
    snprintf(why, sizeof(why), "comm_open: %s: %s", kh_err_name(rc), kh_manager_errmsg(mgr));
    return skip("comm", mode, why), 0;
  }
  for (i = 0; i < warm + runs; i++) {
    uint64_t t0;
    snprintf(msg, sizeof(msg), "{\"comm_id\":\"kh_bench\",\"data\":{\"n\":%d}}", i);
    st.comm_ns = 0;
    t0 = uv_hrtime();
    if ((rc = comm_send(id, "comm_msg", msg)) != 0) {
      snprintf(why, sizeof(why), "comm_msg: %s: %s", kh_err_name(rc), kh_manager_errmsg(mgr));
      return skip("comm", mode, why), 0;
    }
    if (st.comm_ns == 0) return skip("comm", mode, "no comm_msg came back"), 0;
    if (i >= warm) samples[nsamples++] = (double)(st.comm_ns - t0) / 1e3;
  }
  emit_samples("comm", mode, "us", NULL);
  destroy_kernel(id);
  return 0;
}

/* Private memory (USS) of a process in KiB: its private clean and dirty pages. */
static long uss_kib(long pid) {
  long c = proc_kib(pid, "smaps_rollup", "Private_Clean:");
  long d = proc_kib(pid, "smaps_rollup", "Private_Dirty:");
  return c < 0 || d < 0 ? -1 : c + d;
}

static int m_rss(const char *mode, int count) {
  char(*ids)[64] = calloc((size_t)count, 64), extra[800], why[200];
  long host0 = proc_kib(0, "status", "VmRSS:"), host1 = 0, host_n;
  long rss1 = 0, pss1 = 0, rss_sum = 0, pss_sum = 0, uss_sum = 0, tmpl_pss = 0;
  int i, worker = strcmp(mode, "worker") == 0;
  if (wait_pool() < 0) return skip("rss", mode, st.errmsg), 0;
  for (i = 0; i < count; i++) {
    if (create_kernel(mode, ids[i]) < 0) return skip("rss", mode, st.errmsg), 0;
    if (!origin_ok(ids[i], why, sizeof(why))) return skip("rss", mode, why), 0;
    if (execute(ids[i], "1+1") < 0) return skip("rss", mode, "execute failed"), 0;
    if (i == 0) {
      run_for(200);
      host1 = proc_kib(0, "status", "VmRSS:");
      if (worker) {
        long pid = info_int(ids[0], "pid");
        if (pid <= 0) return skip("rss", mode, "kh_kernel_info() gives no worker pid"), 0;
        rss1 = proc_kib(pid, "status", "VmRSS:");
        pss1 = proc_kib(pid, "smaps_rollup", "Pss:");
      }
    }
  }
  run_for(300);
  host_n = proc_kib(0, "status", "VmRSS:");
  if (worker)
    for (i = 0; i < count; i++) {
      long pid = info_int(ids[i], "pid");
      rss_sum += proc_kib(pid, "status", "VmRSS:");
      pss_sum += proc_kib(pid, "smaps_rollup", "Pss:");
      uss_sum += uss_kib(pid);
    }
  /* The fork server's template shares its pages with the kernels: its own share is counted in
   * the total (and a pre-forked worker waiting in the pool is not: it is not a kernel). */
  if (fork_pool && tmpl_pid > 0) tmpl_pss = proc_kib(tmpl_pid, "smaps_rollup", "Pss:");
  /* main_thread: the first kernel brings CPython into the host; later ones cost their thread,
   * namespace and runtime objects. */
  snprintf(extra, sizeof(extra),
           "\"count\":%d,\"host_before_kib\":%ld,\"host_after_first_kib\":%ld,"
           "\"host_after_all_kib\":%ld,\"kernel_rss_kib\":%ld,\"kernel_pss_kib\":%ld,"
           "\"all_rss_kib\":%ld,\"all_pss_kib\":%ld,\"per_extra_kernel_kib\":%.1f,"
           "\"all_uss_kib\":%ld,\"per_kernel_uss_kib\":%.1f,\"template_pss_kib\":%ld,"
           "\"total_pss_kib\":%ld",
           count, host0, host1, host_n, rss1, pss1, rss_sum, pss_sum,
           count > 1 ? (double)(host_n - host1) / (count - 1) : 0.0, uss_sum,
           (double)uss_sum / count, tmpl_pss, pss_sum + tmpl_pss);
  emit_samples("rss", mode, "kib", extra);
  for (i = 0; i < count; i++) destroy_kernel(ids[i]);
  free(ids);
  return 0;
}

/* The first import of a module in a new kernel: one kernel per sample. */
static int m_import(const char *mode, int runs, const char *module) {
  char id[64], code[300], why[200], *inner = calloc((size_t)runs, 24);
  size_t at = 0;
  int i;
  /* The cell also times the import statement itself (perf_counter_ns around it): the rest of
   * the round trip is the first cell's own cost in a new process. */
  snprintf(code, sizeof(code),
           "import time as _kh_t\n_kh_a = _kh_t.perf_counter_ns()\nimport %s\n"
           "(_kh_t.perf_counter_ns() - _kh_a) // 1000",
           module);
  if (wait_pool() < 0) return skip("import", mode, st.errmsg), 0;
  for (i = 0; i < runs; i++) {
    double us;
    if (create_kernel(mode, id) < 0) return skip("import", mode, st.errmsg), 0;
    if (!origin_ok(id, why, sizeof(why))) return skip("import", mode, why), 0;
    st.result_int = -1;
    us = execute(id, code);
    if (us < 0 || strcmp(st.reply_status_str, "ok") != 0 || st.result_int < 0)
      return skip("import", mode, "the import failed"), 0;
    samples[nsamples++] = us;
    at += (size_t)snprintf(inner + at, 24, "%s%ld", i ? "," : "", st.result_int);
    destroy_kernel(id);
    run_for(fork_pool ? 50 : 0);
  }
  {
    char *extra = malloc(at + 100);
    snprintf(extra, at + 100, "\"module\":\"%s\",\"inner_us\":[%s]", module, inner);
    emit_samples("import", mode, "us", extra);
    free(extra);
  }
  free(inner);
  return 0;
}

/* `count` kernels created at once, as a host serving a burst of users would. */
static struct {
  uint64_t t0;
  int done, failed;
  char err[400];
} burst;

static void on_burst(kh_manager_t *m, const char *id, int status, const char *e, void *d) {
  if (status == 0)
    samples[nsamples++] = (double)(uv_hrtime() - burst.t0) / 1e3;
  else if (burst.failed++ == 0)
    snprintf(burst.err, sizeof(burst.err), "%s: %.300s", kh_err_name(status), e ? e : "");
  burst.done++;
}

static int m_burst(const char *mode, int count) {
  char(*ids)[64] = calloc((size_t)count, 64), extra[600], origin[16];
  int i, forked = 0, rc;
  double wall;
  free(samples);
  samples = calloc((size_t)count + 1, sizeof(double));
  if (wait_pool() < 0) return skip("burst", mode, st.errmsg), 0;
  run_for(300);
  burst.t0 = uv_hrtime();
  for (i = 0; i < count; i++) {
    if ((rc = kh_kernel_create(mgr, opts_for(mode), ids[i], 64, on_burst, NULL)) != 0) {
      snprintf(st.errmsg, sizeof(st.errmsg), "kh_kernel_create #%d: %s: %s", i, kh_err_name(rc),
               kh_manager_errmsg(mgr));
      return skip("burst", mode, st.errmsg), 0;
    }
  }
  while (burst.done < count) uv_run(&loop, UV_RUN_ONCE);
  wall = (double)(uv_hrtime() - burst.t0) / 1e6;
  if (burst.failed) {
    snprintf(extra, sizeof(extra), "%d of %d kernels failed: %s", burst.failed, count, burst.err);
    return skip("burst", mode, extra), 0;
  }
  for (i = 0; i < count; i++)
    if (strcmp(info_str(ids[i], "origin", origin, sizeof(origin)), "fork") == 0) forked++;
  snprintf(extra, sizeof(extra), "\"count\":%d,\"wall_ms\":%.1f,\"rate_per_s\":%.1f,\"forked\":%d",
           count, wall, count / (wall / 1e3), forked);
  emit_samples("burst", mode, "us", extra);
  st.destroyed = 0;
  for (i = 0; i < count; i++) kh_kernel_destroy(mgr, ids[i], on_destroyed, NULL);
  while (st.destroyed < count) uv_run(&loop, UV_RUN_ONCE);
  free(ids);
  return 0;
}

/* Host functions (issue 13): `noop` answers null at once; `report` takes the cell's samples. */
static void fn_noop(kh_manager_t *m, const char *kernel_id, const char *name, const char *args,
                    size_t len, const kh_buffer_t *b, size_t nb, kh_hostcall_t *call, void *d) {
  kh_hostcall_return(call, "null", 4, NULL, 0);
}

static void fn_report(kh_manager_t *m, const char *kernel_id, const char *name, const char *args,
                      size_t len, const kh_buffer_t *b, size_t nb, kh_hostcall_t *call, void *d) {
  const char *p = args, *end = args + len;
  int cap = *(int *)d;
  /* [[us, us, ...]]: numbers only, so plain strtod over the text is enough. */
  while (p < end && nsamples < cap) {
    char *next;
    double v;
    while (p < end && (*p == '[' || *p == ']' || *p == ',' || *p == ' ')) p++;
    if (p >= end) break;
    v = strtod(p, &next);
    if (next == p) break;
    samples[nsamples++] = v;
    p = next;
  }
  kh_hostcall_return(call, "null", 4, NULL, 0);
}

/* A host call's round trip as the cell sees it: one cell makes warm-up + `runs` calls of the
 * no-op function, each timed with perf_counter_ns around the call (what a host function costs
 * a cell beyond its own work), and hands the samples back through `report`. */
static int m_hostcall(const char *mode, int runs) {
  char id[64], code[512];
  int warm = runs / 10 < 200 ? runs / 10 : 200, cap = runs;
  if (create_kernel(mode, id) < 0) return skip("hostcall", mode, st.errmsg), 0;
  if (kh_kernel_expose(mgr, id, "noop", fn_noop, NULL) != 0 ||
      kh_kernel_expose(mgr, id, "report", fn_report, &cap) != 0)
    return skip("hostcall", mode, kh_manager_errmsg(mgr)), 0;
  snprintf(code, sizeof(code),
           "import kernelhost, time\n"
           "noop, pc, out = kernelhost.host.noop, time.perf_counter_ns, []\n"
           "for i in range(%d):\n"
           "    t0 = pc()\n"
           "    noop()\n"
           "    out.append((pc() - t0) / 1e3)\n"
           "kernelhost.host.report(out[%d:])\n",
           warm + runs, warm);
  if (execute(id, code) < 0 || strcmp(st.reply_status_str, "ok") != 0 || nsamples == 0)
    return skip("hostcall", mode, "the host-call cell failed"), 0;
  emit_samples("hostcall", mode, "us", NULL);
  return 0;
}

int main(int argc, char **argv) {
  const char *metric = argc > 1 ? argv[1] : "execute";
  const char *mode = argc > 2 ? argv[2] : "main_thread";
  int runs = argc > 3 ? atoi(argv[3]) : 1000;
  const char *extra = argc > 4 ? argv[4] : NULL;
  char mopts[1024] = "";
  const char *pool = getenv("KH_BENCH_POOL");
  struct rlimit nofile;
  int rc;
  if (runs < 1) runs = 1;
  /* 200 kernels hold more pipes than the usual soft limit of 1024 descriptors. */
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }
  if (getenv("KH_BENCH_KOPTS")) extra_kernel_opts = getenv("KH_BENCH_KOPTS");
  samples = calloc((size_t)runs + 1, sizeof(double));
  uv_loop_init(&loop);
  if (strcmp(metric, "pool") == 0)
    snprintf(mopts, sizeof(mopts), "{\"pool\":{\"size\":%d}}", extra ? atoi(extra) : 2);
  else if (strcmp(mode, "worker") == 0)
    snprintf(mopts, sizeof(mopts), "{\"pool\":{\"size\":0}}"); /* cold starts */
  if (pool != NULL) {
    snprintf(mopts, sizeof(mopts), "{\"pool\":%.1000s}", pool);
    fork_pool = strstr(pool, "\"fork\"") != NULL;
  }
  rc = kh_manager_new(&mgr, &loop, mopts[0] ? mopts : NULL);
  if (rc != 0 && pool == NULL && strcmp(metric, "pool") != 0) rc = kh_manager_new(&mgr, &loop, NULL);
  if (rc != 0) {
    char why[600];
    snprintf(why, sizeof(why), "kh_manager_new(%s): %s: %s", mopts, kh_err_name(rc),
             kh_manager_errmsg(NULL));
    skip(metric, mode, why);
    return 0;
  }
  kh_subscribe(mgr, NULL, KH_EVENT_ALL, on_event, NULL, NULL);
  if (strcmp(metric, "create") == 0)
    m_create(mode, runs);
  else if (strcmp(metric, "pool") == 0)
    m_pool(mode, runs, extra ? atoi(extra) : 2);
  else if (strcmp(metric, "execute") == 0)
    m_execute(metric, mode, runs, NULL);
  else if (strcmp(metric, "first_magic") == 0)
    m_first_magic(mode, runs);
  else if (strcmp(metric, "execute_shell") == 0)
    m_execute(metric, mode, runs, "%time 1");
  else if (strcmp(metric, "stream") == 0)
    m_stream(mode, runs);
  else if (strcmp(metric, "display") == 0)
    m_display(mode, runs);
  else if (strcmp(metric, "display_png") == 0)
    m_display_png(mode, runs, extra);
  else if (strcmp(metric, "interrupt") == 0)
    m_interrupt(mode, runs, extra ? extra : "busy");
  else if (strcmp(metric, "restart") == 0)
    m_restart(mode, runs);
  else if (strcmp(metric, "rss") == 0)
    m_rss(mode, extra ? atoi(extra) : runs);
  else if (strcmp(metric, "complete_attr") == 0 || strcmp(metric, "complete_import") == 0 ||
           strcmp(metric, "inspect") == 0 || strcmp(metric, "is_complete") == 0)
    m_interact(metric, mode, runs);
  else if (strcmp(metric, "complete_first") == 0)
    m_complete_first(mode, runs);
  else if (strcmp(metric, "hostcall") == 0)
    m_hostcall(mode, runs);
  else if (strcmp(metric, "comm") == 0)
    m_comm(mode, runs);
  else if (strcmp(metric, "import") == 0)
    m_import(mode, runs, extra ? extra : "pandas");
  else if (strcmp(metric, "burst") == 0)
    m_burst(mode, extra ? atoi(extra) : 200);
  else {
    fprintf(stderr, "kh_bench: unknown metric \"%s\"\n", metric);
    return 2;
  }
  fflush(stdout);
  /* Kernels still open are destroyed by the close; running cells were finished above. */
  kh_manager_close(mgr, NULL, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  free(samples);
  return 0;
}

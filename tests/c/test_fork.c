/* test_fork.c: the fork server (manager option pool.mode "fork"): kernels forked from a template
 * that imported the preload modules, each applying its own options; the fork-safety points
 * (threads, random state, descriptors, hash secret) and the faults (a preload that fails, a
 * template that dies, a host SIGKILLed with a template and kernels alive). The worker behaviour
 * suite itself runs against the fork server as ctest fork/<name> (KH_TEST_POOL=fork). These
 * tests choose worker mode themselves. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kh_test.h"

#define WORKER "{\"mode\": \"worker\"}"

typedef struct {
  int done;
  int status;
  char errmsg[1024];
  json_t *info;
} ready_t;

static void on_ready(kh_manager_t *m, const char *kernel_id, int status, const char *json,
                     size_t len, const char *errmsg, void *data) {
  ready_t *r = data;
  (void)m;
  (void)kernel_id;
  if (th_in_close) FAIL("a pool_ready callback ran inside kh_manager_close");
  r->done = 1;
  r->status = status;
  if (errmsg) snprintf(r->errmsg, sizeof(r->errmsg), "%s", errmsg);
  r->info = json ? json_loadb(json, len, 0, NULL) : NULL;
}

static void on_created(kh_manager_t *m, const char *kernel_id, int status, const char *errmsg,
                       void *data) {
  ready_t *r = data;
  (void)m;
  (void)kernel_id;
  if (th_in_close) FAIL("a create callback ran inside kh_manager_close");
  r->done++;
  r->status = status;
  if (errmsg) snprintf(r->errmsg, sizeof(r->errmsg), "%s", errmsg);
}

/* Waits for the pool to settle; returns its info (owned) and fills *status. */
static json_t *pool_ready(th_t *t, int *status, char *errmsg, size_t n) {
  ready_t r;
  memset(&r, 0, sizeof(r));
  ASSERT_INT(kh_manager_pool_ready(t->m, on_ready, &r), ==, 0);
  th_run_until(t, &r.done);
  *status = r.status;
  if (errmsg) snprintf(errmsg, n, "%s", r.errmsg);
  return r.info;
}

static json_t *pool_ready_ok(th_t *t) {
  int status;
  char err[1024];
  json_t *info = pool_ready(t, &status, err, sizeof(err));
  if (status != 0) FAIL("pool not ready: %s: %s", kh_err_name(status), err);
  ASSERT_STR(th_s(info, "state"), "ready");
  return info;
}

static json_t *kinfo(th_t *t, const char *id) {
  char *s = kh_kernel_info(t->m, id);
  json_t *j = s ? json_loads(s, 0, NULL) : NULL;
  kh_free(s);
  ASSERT(j != NULL);
  return j;
}

static void assert_origin(th_t *t, const char *id, const char *origin) {
  json_t *j = kinfo(t, id);
  ASSERT_STR(th_s(j, "origin"), origin);
  json_decref(j);
}

static int kpid(th_t *t, const char *id) {
  json_t *j = kinfo(t, id);
  int pid = (int)th_i(j, "pid");
  json_decref(j);
  ASSERT(pid > 0);
  return pid;
}

/* The text/plain result of a cell. */
static char *eval(th_t *t, const char *id, const char *code) {
  th_result_t r;
  char *s;
  th_exec(t, id, code, &r);
  if (th_get(r.json, "result.data.text/plain") == NULL)
    FAIL("no result for %s: %s", code, json_dumps(r.json, JSON_COMPACT));
  s = strdup(th_s(r.json, "result.data.text/plain"));
  th_result_free(&r);
  return s;
}

static void assert_eval(th_t *t, const char *id, const char *code, const char *want) {
  char *got = eval(t, id, code);
  ASSERT_STR(got, want);
  free(got);
}

static int ppid_of(int pid) {
  char path[64], buf[512], *rp;
  int ppid = -1;
  FILE *f;
  snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  if ((f = fopen(path, "r")) == NULL) return -1;
  if (fgets(buf, sizeof(buf), f) && (rp = strrchr(buf, ')')) != NULL) sscanf(rp + 4, "%d", &ppid);
  fclose(f);
  return ppid;
}

/* A manager with pool `mopts`, settled, and one kernel on it that came from the fork server. */
static void forked_kernel(th_t *t, const char *mopts, char *id) {
  th_init(t, mopts);
  th_pool_settle(t);
  th_create(t, WORKER, id);
  assert_origin(t, id, "fork");
}

TEST(fork_kernel_from_template) {
  th_t t;
  char a[64], b[64];
  json_t *info;
  int tpid;
  th_init(&t, "{\"pool\": {\"mode\": \"fork\", \"preload\": [\"json\", \"email.mime.text\"]}}");
  info = pool_ready_ok(&t);
  tpid = (int)th_i(info, "pid");
  ASSERT(tpid > 0);
  ASSERT_STR(th_s(info, "mode"), "fork");
  json_decref(info);
  th_create(&t, WORKER, a);
  th_create(&t, WORKER, b);
  assert_origin(&t, a, "fork");
  assert_origin(&t, b, "fork");
  /* The host's children (CLONE_PARENT), not the template's; each in its own process group. */
  ASSERT_INT(ppid_of(kpid(&t, a)), ==, getpid());
  ASSERT_INT(getpgid(kpid(&t, a)), ==, kpid(&t, a));
  ASSERT(kpid(&t, a) != kpid(&t, b) && kpid(&t, a) != tpid);
  /* The preload is imported already; the kernels are separate processes. */
  assert_eval(&t, a, "import sys\n'email.mime.text' in sys.modules", "True");
  assert_eval(&t, a, "x = 41\nx + 1", "42");
  assert_eval(&t, b, "'x' in globals()", "False");
  assert_eval(&t, b, "import os\nos.getpid() != os.getppid()", "True");
  th_interrupt_sleep(&t, a);
  assert_eval(&t, a, "x", "41");
  th_fini(&t);
}

TEST(fork_kernel_options_applied) {
  th_t t;
  char a[64];
  th_init(&t, "{\"pool\": {\"mode\": \"fork\", \"size\": 2}}");
  json_decref(pool_ready_ok(&t));
  th_create(&t, "{\"mode\": \"worker\", \"env\": {\"KH_FORK\": \"a\"}, \"cwd\": \"/tmp\"}", a);
  assert_origin(&t, a, "fork");
  assert_eval(&t, a, "import os\n(os.environ['KH_FORK'], os.getcwd())", "('a', '/tmp')");
  th_fini(&t);
}

TEST(fork_loader_variables_spawn_fresh) {
  th_t t;
  char a[64];
  th_init(&t, "{\"pool\": {\"mode\": \"fork\"}}");
  json_decref(pool_ready_ok(&t));
  th_create(&t, "{\"mode\": \"worker\", \"env\": {\"LD_KH_TEST\": \"1\"}}", a);
  assert_origin(&t, a, "cold");
  assert_eval(&t, a, "import os\nos.environ['LD_KH_TEST']", "'1'");
  th_fini(&t);
}

TEST(fork_restart_from_template) {
  th_t t;
  char a[64];
  int done[2] = {0, 0}, before;
  forked_kernel(&t, "{\"pool\": {\"mode\": \"fork\", \"size\": 0}}", a);
  before = kpid(&t, a);
  assert_eval(&t, a, "y = 1\ny", "1");
  ASSERT_INT(kh_kernel_restart(t.m, a, th_done_cb, done), ==, 0);
  th_run_until(&t, &done[0]);
  ASSERT_INT(done[1], ==, 0);
  assert_origin(&t, a, "fork");
  ASSERT(kpid(&t, a) != before);
  ASSERT_INT(ppid_of(kpid(&t, a)), ==, getpid());
  assert_eval(&t, a, "'y' in globals()", "False");
  th_fini(&t);
}

TEST(fork_random_state_per_kernel) {
  th_t t;
  char a[64], b[64];
  char *ra, *rb, *na, *nb;
  th_init(&t, "{\"pool\": {\"mode\": \"fork\", \"size\": 2, \"preload\": [\"random\", \"numpy\"]}}");
  json_decref(pool_ready_ok(&t));
  th_create(&t, WORKER, a);
  th_create(&t, WORKER, b);
  assert_origin(&t, a, "fork");
  assert_origin(&t, b, "fork");
  ra = eval(&t, a, "import random\nrandom.random()");
  rb = eval(&t, b, "import random\nrandom.random()");
  ASSERT(strcmp(ra, rb) != 0);
  /* numpy's legacy global RandomState is seeded once at import, in the template. */
  na = eval(&t, a, "import numpy as np\nrepr(np.random.rand())");
  nb = eval(&t, b, "import numpy as np\nrepr(np.random.rand())");
  ASSERT(strcmp(na, nb) != 0);
  free(ra);
  free(rb);
  free(na);
  free(nb);
  th_fini(&t);
}

TEST(fork_no_template_descriptors) {
  th_t t;
  char a[64];
  forked_kernel(&t, "{\"pool\": {\"mode\": \"fork\"}}", a);
  /* Nothing of the template's (its socket, other children's pipes) is open in a kernel: every
   * descriptor is one a spawned worker has too (stdio, the protocol pipes above 10, the capture
   * pipes, the eventfd). No socket at all. */
  assert_eval(&t, a,
              "import os, stat\n"
              "kinds = [stat.S_IFMT(os.fstat(int(fd)).st_mode) for fd in os.listdir('/proc/self/fd')\n"
              "         if os.path.exists('/proc/self/fd/' + fd)]\n"
              "stat.S_IFSOCK in kinds",
              "False");
  th_fini(&t);
}

TEST(fork_single_threaded_template) {
  th_t t;
  char a[64];
  th_init(&t, "{\"pool\": {\"mode\": \"fork\", \"preload\": [\"numpy\"]}}");
  json_decref(pool_ready_ok(&t));
  th_create(&t, WORKER, a);
  /* The template asked BLAS/OpenMP pools for one thread while it imported; the kernel does not
   * inherit that request. */
  assert_eval(&t, a, "import os\nos.environ.get('OPENBLAS_NUM_THREADS'), os.environ.get('OMP_NUM_THREADS')",
              "(None, None)");
  th_fini(&t);
}

TEST(fork_preload_error_names_module) {
  th_t t;
  json_t *info;
  int status;
  char err[1024], id[64];
  ready_t made;
  th_init(&t, "{\"pool\": {\"mode\": \"fork\", \"preload\": [\"json\", \"kh_no_such_module\"]}}");
  info = pool_ready(&t, &status, err, sizeof(err));
  ASSERT_INT(status, ==, KH_EOPTION);
  ASSERT(strstr(err, "kh_no_such_module") != NULL);
  json_decref(info);
  /* Kernels on this manager fail with the same error, at creation. */
  memset(&made, 0, sizeof(made));
  ASSERT_INT(kh_kernel_create(t.m, WORKER, id, sizeof(id), on_created, &made), ==, 0);
  th_run_until(&t, &made.done);
  ASSERT_INT(made.status, ==, KH_EOPTION);
  ASSERT(strstr(made.errmsg, "kh_no_such_module") != NULL);
  th_fini(&t);
}

TEST(fork_preload_name_checked) {
  kh_manager_t *m;
  uv_loop_t loop;
  const char *bad[] = {"{\"pool\": {\"mode\": \"fork\", \"preload\": [\"os; import x\"]}}",
                       "{\"pool\": {\"mode\": \"fork\", \"preload\": \"numpy\"}}",
                       "{\"pool\": {\"mode\": \"fork\", \"preload\": [\"\"]}}",
                       "{\"pool\": {\"mode\": \"fork\", \"preload\": [\"a..b\"]}}",
                       "{\"pool\": {\"preload\": [\"numpy\"]}}",
                       "{\"pool\": {\"mode\": \"vfork\"}}",
                       "{\"pool\": {\"mode\": \"fork\", \"preloads\": []}}"};
  size_t i;
  ASSERT_INT(uv_loop_init(&loop), ==, 0);
  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    ASSERT_ERR(kh_manager_new(&m, &loop, bad[i]), KH_EOPTION);
    ASSERT(strstr(kh_manager_errmsg(NULL), "pool") != NULL);
  }
  ASSERT_INT(uv_loop_close(&loop), ==, 0);
}

TEST(fork_template_death_restarts) {
  th_t t;
  char a[64], b[64], c[64];
  json_t *info;
  int tpid, status;
  ready_t early;
  memset(&early, 0, sizeof(early));
  th_init(&t, "{\"pool\": {\"mode\": \"fork\", \"size\": 0}}");
  info = pool_ready_ok(&t);
  tpid = (int)th_i(info, "pid");
  json_decref(info);
  th_create(&t, WORKER, a);
  assert_origin(&t, a, "fork");
  ASSERT_INT(kill(tpid, SIGKILL), ==, 0);
  {
    /* Dead (not reaped: the loop has not seen it yet) before the next call: the pool must not
     * call a dead template ready. */
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    ASSERT_INT(waitid(P_PID, (id_t)tpid, &si, WEXITED | WNOWAIT), ==, 0);
  }
  ASSERT_INT(kh_manager_pool_ready(t.m, on_ready, &early), ==, 0);
  /* The kernel made by the dead template lives on (it is the host's child). */
  assert_eval(&t, a, "1 + 1", "2");
  /* Meanwhile kernels start cold or from the restarted template; then it is back. */
  th_create(&t, WORKER, b);
  assert_eval(&t, b, "2 + 2", "4");
  th_run_until(&t, &early.done);
  ASSERT_INT(early.status, ==, 0);
  ASSERT(th_i(early.info, "pid") != tpid);
  ASSERT(th_i(early.info, "restarts") >= 1);
  json_decref(early.info);
  info = pool_ready(&t, &status, NULL, 0);
  ASSERT_INT(status, ==, 0);
  ASSERT_STR(th_s(info, "state"), "ready");
  ASSERT(th_i(info, "restarts") >= 1);
  ASSERT(strstr(th_s(info, "last_exit"), "SIGKILL") != NULL);
  ASSERT(th_i(info, "pid") != tpid);
  json_decref(info);
  th_create(&t, WORKER, c);
  assert_origin(&t, c, "fork");
  assert_eval(&t, c, "3 + 3", "6");
  th_fini(&t);
}

TEST(fork_no_orphan_after_host_sigkill) {
  int p[2], status, pids[2], fd[2];
  pid_t host;
  ASSERT_INT(pipe(p), ==, 0);
  host = fork();
  ASSERT(host >= 0);
  if (host == 0) {
    th_t t;
    char id[64];
    json_t *info;
    close(p[0]);
    th_init(&t, "{\"pool\": {\"mode\": \"fork\"}}");
    info = pool_ready_ok(&t);
    pids[0] = (int)th_i(info, "pid");
    th_create(&t, WORKER, id);
    pids[1] = kpid(&t, id);
    if (write(p[1], pids, sizeof(pids)) != sizeof(pids)) _exit(1);
    for (;;) pause();
  }
  close(p[1]);
  ASSERT_INT(read(p[0], pids, sizeof(pids)), ==, sizeof(pids));
  close(p[0]);
  fd[0] = th_pid_open(pids[0]);
  fd[1] = th_pid_open(pids[1]);
  ASSERT(fd[0] >= 0 && fd[1] >= 0);
  ASSERT_INT(kill(host, SIGKILL), ==, 0);
  ASSERT_INT(waitpid(host, &status, 0), ==, host);
  th_wait_pid_gone(fd[0]); /* the template */
  th_wait_pid_gone(fd[1]); /* the forked kernel */
}

TEST(fork_pool_ready_no_pool) {
  const char *none[] = {"{}", "{\"pool\": {\"size\": 0}}"};
  size_t i;
  for (i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
    th_t t;
    char a[64];
    ready_t r;
    memset(&r, 0, sizeof(r));
    th_init(&t, none[i]);
    ASSERT_ERR(kh_manager_pool_ready(t.m, on_ready, &r), KH_ENOTSUP);
    ASSERT(strstr(kh_manager_errmsg(t.m), "pool") != NULL);
    /* Refused: its callback never runs, while the loop runs a kernel's creation and a cell. */
    th_create(&t, WORKER, a);
    assert_origin(&t, a, "cold");
    assert_eval(&t, a, "1 + 1", "2");
    ASSERT_INT(r.done, ==, 0);
    th_fini(&t);
  }
}

TEST(fork_pool_ready_holds_loop) {
  th_t t;
  ready_t r;
  memset(&r, 0, sizeof(r));
  th_init(&t, "{\"pool\": {\"mode\": \"fork\", \"size\": 0}}");
  /* A host whose loop has nothing else to do: the wait itself keeps uv_run() going until the
   * template's "hello" is answered (the harness's watchdog is not running here). */
  ASSERT_INT(kh_manager_pool_ready(t.m, on_ready, &r), ==, 0);
  uv_run(&t.loop, UV_RUN_DEFAULT);
  ASSERT_INT(r.done, ==, 1);
  ASSERT_INT(r.status, ==, 0);
  json_decref(r.info);
  th_fini(&t);
}

TEST(fork_pools_coexist) {
  th_t t, u;
  char a[64], b[64];
  /* A fork server and a warm pool in one host process, one per manager. */
  th_init(&t, "{\"pool\": {\"mode\": \"fork\", \"size\": 1}}");
  th_init(&u, "{\"pool\": {\"size\": 1}}");
  json_decref(pool_ready_ok(&t));
  th_pool_settle(&u);
  th_create(&t, WORKER, a);
  th_create(&u, WORKER, b);
  assert_origin(&t, a, "fork");
  assert_origin(&u, b, "warm");
  assert_eval(&t, a, "x = 20\nx + 1", "21");
  assert_eval(&u, b, "x = 30\nx + 1", "31");
  th_fini(&u);
  th_fini(&t);
}

TEST(fork_hash_secret_per_template) {
  th_t t;
  char a[64], b[64], c[64];
  char *ha, *hb, *hc;
  th_init(&t, "{\"pool\": {\"mode\": \"fork\", \"size\": 0}}");
  json_decref(pool_ready_ok(&t));
  th_create(&t, WORKER, a);
  th_create(&t, WORKER, b);
  /* A cold kernel (loader variables skip the pool) starts its own interpreter. */
  th_create(&t, "{\"mode\": \"worker\", \"env\": {\"LD_KH_TEST\": \"1\"}}", c);
  assert_origin(&t, a, "fork");
  assert_origin(&t, c, "cold");
  ha = eval(&t, a, "hash('kernelhost')");
  hb = eval(&t, b, "hash('kernelhost')");
  hc = eval(&t, c, "hash('kernelhost')");
  /* Python fixes the secret at start-up: kernels of one template share it (README says so). */
  ASSERT_STR(ha, hb);
  ASSERT(strcmp(ha, hc) != 0);
  free(ha);
  free(hb);
  free(hc);
  th_fini(&t);
}

/* The group directory of a process in the pids hierarchy, from /proc/<pid>/cgroup ("" if none). */
static void pids_group(int pid, char *out, size_t n) {
  char path[64], line[512];
  FILE *f;
  out[0] = '\0';
  snprintf(path, sizeof(path), "/proc/%d/cgroup", pid);
  if ((f = fopen(path, "r")) == NULL) return;
  while (fgets(line, sizeof(line), f)) {
    char *c = strchr(line, ':'), *p = c ? strchr(c + 1, ':') : NULL;
    if (p == NULL || (strncmp(line, "0::", 3) != 0 && strstr(c, "pids") == NULL)) continue;
    p[strcspn(p, "\n")] = '\0';
    snprintf(out, n, "%s", p + 1);
    if (strncmp(line, "0::", 3) != 0) break; /* v1's pids line wins over the unified one */
  }
  fclose(f);
}

/* The network namespace of pid ("net:[inode]"), and how many of its descriptors are namespaces. */
static void ns_link(int pid, char *out, size_t n) {
  char path[64];
  ssize_t k;
  snprintf(path, sizeof(path), "/proc/%d/ns/net", pid);
  k = readlink(path, out, n - 1);
  out[k > 0 ? k : 0] = '\0';
}

static int ns_fds(int pid) {
  char dir[64], path[340], link[128];
  struct dirent *e;
  int n = 0;
  DIR *d;
  snprintf(dir, sizeof(dir), "/proc/%d/fd", pid);
  if ((d = opendir(dir)) == NULL) return -1;
  while ((e = readdir(d)) != NULL) {
    ssize_t k;
    snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
    k = readlink(path, link, sizeof(link) - 1);
    if (k > 0 && (link[k] = '\0', strncmp(link, "net:[", 5) == 0)) n++;
  }
  closedir(d);
  return n;
}

TEST(fork_sandbox_from_template) {
  th_t t;
  char a[64], group[300], want[64];
  int pid;
  th_init(&t, "{\"pool\": {\"mode\": \"fork\", \"size\": 1}}");
  th_pool_settle(&t); /* the pooled worker is forked (and, as root, in its own pids cgroup) */
  th_create(&t, "{\"mode\": \"worker\", \"permissions\": {}, \"limits\": {\"maxProcesses\": 20}}", a);
  assert_origin(&t, a, "fork");
  pid = kpid(&t, a);
  if (geteuid() == 0) {
    /* Its own group, w-<pid>, under kernelhost's pids cgroup: the limit is its alone. */
    pids_group(pid, group, sizeof(group));
    snprintf(want, sizeof(want), "/kernelhost/w-%d", pid);
    ASSERT_STR(group, want);
  }
  /* Without network: a namespace of its own (the pooled worker made it ahead of need), and no
   * descriptor of a namespace left open in the kernel. */
  ns_link(pid, group, sizeof(group));
  ns_link(getpid(), want, sizeof(want));
  ASSERT(group[0] != '\0' && strcmp(group, want) != 0);
  ASSERT_INT(ns_fds(pid), ==, 0);
  assert_eval(&t, a,
              "import os\n"
              "r, w = os.pipe()\n"
              "kids, limited = [], False\n"
              "try:\n"
              "    for i in range(200):\n"
              "        pid = os.fork()\n"
              "        if pid == 0:\n"
              "            os.close(w)\n"
              "            os.read(r, 1)\n"
              "            os._exit(0)\n"
              "        kids.append(pid)\n"
              "except BlockingIOError:\n"
              "    limited = True\n"
              "os.close(w)\n"
              "for k in kids:\n"
              "    os.waitpid(k, 0)\n"
              "(limited, len(kids) < 20)",
              "(True, True)");
  th_fini(&t);
}

TEST(fork_locks_reset) {
  th_t t;
  char a[64];
  /* A lock the template held at the fork would hang the kernel: the import lock, the GIL and
   * threading's state (reset by PyOS_AfterFork_Child), logging's locks (its at-fork hooks). The
   * template imported logging and started a thread's worth of machinery before forking. */
  forked_kernel(&t, "{\"pool\": {\"mode\": \"fork\", \"size\": 1, \"preload\": [\"logging\", "
              "\"concurrent.futures\"]}}", a);
  assert_eval(&t, a,
              "import logging, threading, concurrent.futures, decimal\n"
              "logging.getLogger('kh').warning('from a forked kernel')\n"
              "with concurrent.futures.ThreadPoolExecutor(2) as ex:\n"
              "    got = sorted(ex.map(lambda x: x * 2, range(4)))\n"
              "(got, threading.active_count() >= 1, str(decimal.Decimal(1) / 4))",
              "([0, 2, 4, 6], True, '0.25')");
  th_fini(&t);
}

TEST(fork_close_while_forking) {
  th_t t;
  char id[64];
  ready_t made, ready;
  memset(&made, 0, sizeof(made));
  memset(&ready, 0, sizeof(ready));
  /* The template is still starting: the kernel's process and the pool's answer are both on
   * their way when the manager closes. Each callback runs once, after the close call returned,
   * with KH_ECANCELED; no process is left (th_fini checks the loop, the process table below). */
  th_init(&t, "{\"pool\": {\"mode\": \"fork\", \"size\": 2}}");
  ASSERT_INT(kh_kernel_create(t.m, WORKER, id, sizeof(id), on_created, &made), ==, 0);
  ASSERT_INT(kh_manager_pool_ready(t.m, on_ready, &ready), ==, 0);
  th_fini(&t);
  ASSERT_INT(made.done, ==, 1);
  ASSERT_ERR(made.status, KH_ECANCELED);
  ASSERT_INT(ready.done, ==, 1);
  ASSERT_ERR(ready.status, KH_ECANCELED);
  /* Every process it made (template, forked workers: the host's children) is reaped. */
  errno = 0;
  ASSERT_INT(waitpid(-1, NULL, WNOHANG), ==, -1);
  ASSERT_INT(errno, ==, ECHILD);
}

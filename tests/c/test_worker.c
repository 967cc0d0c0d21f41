/* test_worker.c: worker-only behaviour that needs code (process ids, descriptors, children,
 * memory): interrupts that land in the same process, kill escalation, auto restart, no orphans,
 * create/destroy hygiene, limits, env/cwd, restart, the pool and a missing worker. Deaths and
 * fd-level output are data: tests/cases/worker.json. These tests choose worker mode themselves,
 * whatever KH_TEST_MODE says. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kh_test.h"

#if defined(__SANITIZE_ADDRESS__)
#define CYCLES 200 /* each cycle spawns a process; ASan makes the host side slow */
#else
#define CYCLES 1000
#endif

static const char *wopts(const char *extra) {
  static char buf[8][2048];
  static int slot;
  char *b = buf[slot++ % 8];
  snprintf(b, 2048, "{\"mode\":\"worker\"%s%s}", extra && *extra ? "," : "", extra ? extra : "");
  return b;
}

static int kernel_pid(th_t *t, const char *id) {
  char *info = kh_kernel_info(t->m, id);
  json_t *j = info ? json_loads(info, 0, NULL) : NULL;
  int pid = (int)json_integer_value(json_object_get(j, "pid"));
  kh_free(info);
  json_decref(j);
  ASSERT(pid > 0);
  return pid;
}

static int kernel_pooled(th_t *t, const char *id) {
  char *info = kh_kernel_info(t->m, id);
  json_t *j = info ? json_loads(info, 0, NULL) : NULL;
  int pooled = json_is_true(json_object_get(j, "pooled"));
  kh_free(info);
  json_decref(j);
  return pooled;
}

/* Counts status events with this state (and exec id, NULL = any). */
static int count_status(th_t *t, const char *exec_id, const char *state) {
  int i, n = 0;
  for (i = 0; i < t->nevents; i++) {
    th_event_t *e = &t->events[i];
    if (e->type == KH_EVENT_STATUS && (exec_id == NULL || strcmp(e->exec_id, exec_id) == 0) &&
        strcmp(th_s(e->data, "execution_state"), state) == 0)
      n++;
  }
  return n;
}

static th_event_t *find_status(th_t *t, const char *state, int nth) {
  int i;
  for (i = 0; i < t->nevents; i++) {
    th_event_t *e = &t->events[i];
    if (e->type == KH_EVENT_STATUS && strcmp(th_s(e->data, "execution_state"), state) == 0 &&
        nth-- == 0)
      return e;
  }
  return NULL;
}

/* Waits for n status events with this state (any exec id). */
static void wait_status_n(th_t *t, const char *state, int n) {
  while (count_status(t, NULL, state) < n) th_step(t);
}

/* Runs the loop until the (not yet reaped) process pid has exited. */
static void wait_worker_exit(th_t *t, int pid) {
  int fd = th_pid_open(pid);
  struct pollfd p;
  if (fd < 0) return; /* already gone and reaped */
  p.fd = fd;
  p.events = POLLIN;
  while (poll(&p, 1, 0) == 0) th_step(t);
  close(fd);
}

static void assert_json_contains(json_t *j, const char *needle) {
  char *s = json_dumps(j, JSON_ENCODE_ANY);
  ASSERT_CONTAINS(s, needle);
  free(s);
}

static void clear_events(th_t *t) {
  int i;
  for (i = 0; i < t->nevents; i++) json_decref(t->events[i].data);
  t->nevents = 0;
}

TEST(worker_interrupt_sleep) {
  th_t t;
  char id[64];
  th_result_t r;
  int pid;
  th_init(&t, NULL);
  th_create(&t, wopts(""), id);
  pid = kernel_pid(&t, id);
  ASSERT_INT(
      th_submit(&t, id, "import time\nprint('sleeping', flush=True)\ntime.sleep(100)", NULL, &r),
      ==, 0);
  th_wait_events(&t, KH_EVENT_STREAM, r.id, 1); /* inside the cell, on its way into sleep */
  ASSERT_INT(kh_kernel_interrupt(t.m, id), ==, 0);
  th_run_until(&t, &r.done);
  ASSERT_INT(r.status, ==, 0);
  ASSERT_STR(th_s(r.json, "error.ename"), "KeyboardInterrupt");
  assert_json_contains(th_get(r.json, "error.traceback"), "sleep");
  th_result_free(&r);
  /* the same process carries on */
  th_exec(&t, id, "'still here'", &r);
  ASSERT_STR(th_s(r.json, "result.data.text/plain"), "'still here'");
  ASSERT_INT(kernel_pid(&t, id), ==, pid);
  ASSERT_INT(count_status(&t, NULL, "restarting"), ==, 0);
  th_result_free(&r);
  th_fini(&t);
}

TEST(worker_kill_escalation) {
  th_t t;
  char id[64];
  th_result_t r;
  th_event_t *e;
  int pid;
  th_init(&t, "{\"interruptGraceMs\": 300}");
  th_create(&t, wopts(""), id);
  pid = kernel_pid(&t, id);
  ASSERT_INT(th_submit(&t, id,
                       "import signal, sys\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                       "print('ignoring', flush=True)\nwhile True:\n    pass",
                       NULL, &r),
             ==, 0);
  /* interrupt once the cell ignores SIGINT */
  th_wait_events(&t, KH_EVENT_STREAM, r.id, 1);
  ASSERT_INT(kh_kernel_interrupt(t.m, id), ==, 0);
  th_run_until(&t, &r.done);
  ASSERT_ERR(r.status, KH_EKERNELDEAD);
  e = find_status(&t, "restarting", 0);
  ASSERT(e != NULL);
  ASSERT_STR(e->exec_id, r.id);
  ASSERT_STR(th_s(e->data, "reason.cause"), "interrupt_timeout");
  wait_status_n(&t, "idle", 2); /* created, restarted */
  th_exec(&t, id, "1 + 1", &r);
  ASSERT_STR(th_s(r.json, "result.data.text/plain"), "2");
  ASSERT_INT(th_i(r.json, "execution_count"), ==, 1);
  ASSERT(kernel_pid(&t, id) != pid);
  th_result_free(&r);
  wait_worker_exit(&t, pid);
  th_fini(&t);
}

TEST(worker_auto_restart) {
  th_t t;
  char id[64];
  th_result_t r;
  int pid;
  th_init(&t, NULL);
  th_create(&t, wopts("\"autoRestart\": true, \"env\": {\"KH_AUTO\": \"yes\"}"), id);
  pid = kernel_pid(&t, id);
  ASSERT_INT(th_submit(&t, id, "import os\nos._exit(3)", NULL, &r), ==, 0);
  th_run_until(&t, &r.done);
  ASSERT_ERR(r.status, KH_EKERNELDEAD);
  ASSERT_INT(count_status(&t, r.id, "dead"), ==, 1);
  ASSERT_INT(count_status(&t, NULL, "restarting"), ==, 1);
  wait_status_n(&t, "idle", 2);
  th_exec(&t, id, "import os\nos.environ['KH_AUTO']", &r);
  ASSERT_STR(th_s(r.json, "result.data.text/plain"), "'yes'");
  ASSERT(kernel_pid(&t, id) != pid);
  th_result_free(&r);
  th_fini(&t);
}

/* A child host runs a kernel and is SIGKILLed: its worker must exit too. */
TEST(worker_no_orphan_after_host_sigkill) {
  int p[2], status, worker = 0, pidfd;
  pid_t host;
  ASSERT_INT(pipe(p), ==, 0);
  host = fork();
  ASSERT(host >= 0);
  if (host == 0) {
    th_t t;
    char id[64];
    close(p[0]);
    th_init(&t, NULL);
    th_create(&t, wopts(""), id);
    worker = kernel_pid(&t, id);
    if (write(p[1], &worker, sizeof(worker)) != sizeof(worker)) _exit(1);
    for (;;) pause();
  }
  close(p[1]);
  ASSERT_INT(read(p[0], &worker, sizeof(worker)), ==, sizeof(worker));
  close(p[0]);
  pidfd = th_pid_open(worker);
  ASSERT(pidfd >= 0);
  ASSERT_INT(kill(host, SIGKILL), ==, 0);
  ASSERT_INT(waitpid(host, &status, 0), ==, host);
  ASSERT(WIFSIGNALED(status));
  th_wait_pid_gone(pidfd);
}

static int count_dir(const char *path) {
  DIR *d = opendir(path);
  struct dirent *e;
  int n = 0;
  ASSERT(d != NULL);
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

static int count_children(void) {
  DIR *d = opendir("/proc");
  struct dirent *e;
  int n = 0;
  char path[300], buf[512];
  ASSERT(d != NULL);
  while ((e = readdir(d)) != NULL) {
    FILE *f;
    char *rp;
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
    if ((f = fopen(path, "r")) == NULL) continue;
    if (fgets(buf, sizeof(buf), f) && (rp = strrchr(buf, ')')) != NULL) {
      int ppid = 0;
      char state;
      if (sscanf(rp + 2, "%c %d", &state, &ppid) == 2 && ppid == getpid()) n++;
    }
    fclose(f);
  }
  closedir(d);
  return n;
}

static long rss_kb(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kb = 0;
  while (f && fgets(line, sizeof(line), f))
    if (strncmp(line, "VmRSS:", 6) == 0) kb = atol(line + 6);
  if (f) fclose(f);
  return kb;
}

TEST(worker_create_destroy_cycles) {
  th_t t;
  char id[64];
  int i, fds, threads, children;
  long rss = 0;
  th_init(&t, NULL);
  /* One cycle first, so that lazily created state (libuv's signal pipe) is in the baseline. */
  th_create(&t, wopts(""), id);
  th_destroy(&t, id);
  th_pool_settle(&t);
  fds = count_dir("/proc/self/fd");
  threads = count_dir("/proc/self/task");
  children = count_children();
  for (i = 0; i < CYCLES; i++) {
    if (i % 10 == 0) {
      th_result_t r;
      th_create(&t, wopts(""), id);
      th_exec(&t, id, "1 + 1", &r);
      th_result_free(&r);
    } else {
      /* Destroyed while starting: the create callback gets KH_ECANCELED. */
      int created[2] = {0, 0};
      ASSERT_INT(kh_kernel_create(t.m, wopts(""), id, sizeof(id), th_done_cb, created), ==, 0);
      th_destroy(&t, id);
      th_run_until(&t, &created[0]);
      ASSERT_ERR(created[1], KH_ECANCELED);
    }
    if (i % 10 == 0) th_destroy(&t, id);
    if (i == CYCLES / 10) rss = rss_kb();
    clear_events(&t); /* keep the harness's event log bounded */
  }
  th_pool_settle(&t);
  ASSERT_INT(count_dir("/proc/self/fd"), ==, fds);
  ASSERT_INT(count_dir("/proc/self/task"), ==, threads);
  ASSERT_INT(count_children(), ==, children);
  ASSERT_INT(kh_manager_kernel_count(t.m), ==, 0);
#if !defined(__SANITIZE_ADDRESS__)
  /* Memory: flat after warm-up, within allocator noise. (Under ASan, freed memory sits in its
   * quarantine, and LeakSanitizer checks for leaks at exit instead.) */
  ASSERT_INT(rss_kb() - rss, <, 8192);
#else
  (void)rss;
#endif
  th_fini(&t);
}

TEST(worker_max_execution_time) {
  th_t t;
  char id[64];
  th_result_t r;
  int pid, idle;
  th_init(&t, "{\"interruptGraceMs\": 300}");
  th_create(&t, wopts("\"maxExecutionTime\": 200"), id);
  pid = kernel_pid(&t, id);
  /* An interrupt that lands: KeyboardInterrupt, same process. */
  ASSERT_INT(th_submit(&t, id, "import time\ntime.sleep(100)", NULL, &r), ==, 0);
  th_run_until(&t, &r.done);
  ASSERT_INT(r.status, ==, 0);
  ASSERT_STR(th_s(r.json, "error.ename"), "KeyboardInterrupt");
  ASSERT_INT(kernel_pid(&t, id), ==, pid);
  th_result_free(&r);
  /* One that does not: killed and restarted, with a status saying so. */
  idle = count_status(&t, NULL, "idle");
  ASSERT_INT(th_submit(&t, id,
                       "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                       "while True:\n    pass",
                       NULL, &r),
             ==, 0);
  th_run_until(&t, &r.done);
  ASSERT_ERR(r.status, KH_EKERNELDEAD);
  ASSERT_INT(count_status(&t, r.id, "restarting"), ==, 1);
  wait_status_n(&t, "idle", idle + 1);
  th_exec(&t, id, "'alive'", &r);
  ASSERT_STR(th_s(r.json, "result.data.text/plain"), "'alive'");
  ASSERT(kernel_pid(&t, id) != pid);
  th_result_free(&r);
  th_fini(&t);
}

TEST(worker_inactivity_timeout) {
  th_t t;
  char id[64];
  th_result_t r;
  int pid, pidfd;
  th_init(&t, NULL);
  th_create(&t, wopts("\"inactivityTimeout\": 300"), id);
  pid = kernel_pid(&t, id);
  pidfd = th_pid_open(pid);
  ASSERT(pidfd >= 0);
  /* busy for longer than the timeout: never destroyed while busy */
  th_exec(&t, id, "import time\ntime.sleep(0.6)\n'done'", &r);
  ASSERT_STR(th_s(r.json, "result.data.text/plain"), "'done'");
  th_result_free(&r);
  while (kh_manager_kernel_count(t.m) > 0) th_step(&t);
  ASSERT_INT(kh_kernel_exists(t.m, id, NULL), ==, 0);
  /* and its process is gone: wait for the exit on the loop (the reaping happens there) */
  {
    struct pollfd p;
    p.fd = pidfd;
    p.events = POLLIN;
    while (poll(&p, 1, 0) == 0) th_step(&t);
    close(pidfd);
  }
  th_fini(&t);
}

TEST(worker_env_and_cwd) {
  th_t t;
  char id[64];
  th_result_t r;
  int i;
  char out[1024] = "";
  th_init(&t, NULL);
  th_create(&t, wopts("\"env\": {\"KH_TEST_VAR\": \"v1\"}, \"cwd\": \"/tmp\""), id);
  th_exec(&t, id,
          "import os\nos.system('echo $KH_TEST_VAR')\n(os.environ['KH_TEST_VAR'], "
          "os.getcwd())",
          &r);
  ASSERT_STR(th_s(r.json, "result.data.text/plain"), "('v1', '/tmp')");
  for (i = 0; i < th_count(&t, KH_EVENT_STREAM, r.id); i++)
    strncat(out, th_s(th_find(&t, KH_EVENT_STREAM, r.id, i)->data, "text"), 1000 - strlen(out));
  ASSERT_STR(out, "v1\n");
  th_result_free(&r);
  /* the host's own environment is untouched */
  ASSERT(getenv("KH_TEST_VAR") == NULL);
  /* a cwd that does not exist fails creation with a clear error */
  {
    int created[2] = {0, 0};
    ASSERT_INT(kh_kernel_create(t.m, wopts("\"cwd\": \"/nonexistent/kh\""), id, sizeof(id),
                                th_done_cb, created),
               ==, 0);
    th_run_until(&t, &created[0]);
    ASSERT_ERR(created[1], KH_EWORKER);
  }
  th_fini(&t);
}

static void on_restarted(kh_manager_t *m, const char *id, int status, const char *errmsg,
                         void *data) {
  (void)m;
  (void)id;
  (void)errmsg;
  ASSERT_INT(status, ==, 0);
  *(int *)data = 1;
}

TEST(worker_restart_fresh_process) {
  th_t t;
  char id[64];
  th_result_t r;
  int pid, done = 0;
  th_init(&t, NULL);
  th_create(&t, wopts("\"env\": {\"KH_TEST_VAR\": \"v2\"}"), id);
  pid = kernel_pid(&t, id);
  th_exec(&t, id, "x = 1", &r);
  th_result_free(&r);
  ASSERT_INT(kh_kernel_restart(t.m, id, on_restarted, &done), ==, 0);
  th_run_until(&t, &done);
  ASSERT(kernel_pid(&t, id) != pid);
  th_exec(&t, id, "import os\n('x' in dir(), os.environ['KH_TEST_VAR'])", &r);
  ASSERT_STR(th_s(r.json, "result.data.text/plain"), "(False, 'v2')");
  ASSERT_INT(th_i(r.json, "execution_count"), ==, 1);
  th_result_free(&r);
  wait_worker_exit(&t, pid);
  th_fini(&t);
}

TEST(worker_pool_claim) {
  th_t t;
  char a[64], b[64], c[64];
  th_result_t r;
  th_init(&t, "{\"pool\": {\"size\": 1}}");
  /* A pooled worker serves any option set: env and cwd are applied when it is claimed. */
  th_create(&t, wopts("\"env\": {\"KH_POOL\": \"a\"}, \"cwd\": \"/tmp\""), a);
  ASSERT_INT(kernel_pooled(&t, a), ==, 1);
  th_exec(&t, a, "import os\n(os.environ['KH_POOL'], os.getcwd())", &r);
  ASSERT_STR(th_s(r.json, "result.data.text/plain"), "('a', '/tmp')");
  th_result_free(&r);
  /* Loader variables need a fresh process. */
  th_create(&t, wopts("\"env\": {\"LD_KH_TEST\": \"1\"}"), b);
  ASSERT_INT(kernel_pooled(&t, b), ==, 0);
  th_exec(&t, b, "import os\nos.environ['LD_KH_TEST']", &r);
  ASSERT_STR(th_s(r.json, "result.data.text/plain"), "'1'");
  th_result_free(&r);
  /* The pool was refilled after the first claim. */
  th_create(&t, wopts(""), c);
  ASSERT_INT(kernel_pooled(&t, c), ==, 1);
  ASSERT(kernel_pid(&t, c) != kernel_pid(&t, a));
  th_exec(&t, c, "import os\nos.environ.get('KH_POOL')", &r);
  ASSERT(th_get(r.json, "result") == NULL); /* None: nothing leaked from kernel a */
  th_result_free(&r);
  th_fini(&t);
}

TEST(worker_missing_executable) {
  th_t t;
  char id[64];
  int created[2];
  th_result_t res;
  const char *paths[] = {"{\"workerPath\": \"/nonexistent/kernelhost-worker\"}",
                         "{\"workerPath\": \"/bin/false\"}"};
  int i;
  for (i = 0; i < 2; i++) {
    memset(created, 0, sizeof(created));
    memset(&res, 0, sizeof(res));
    th_init(&t, paths[i]);
    ASSERT_INT(kh_kernel_create(t.m, wopts(""), id, sizeof(id), th_done_cb, created), ==, 0);
    th_run_until(&t, &created[0]);
    ASSERT_ERR(created[1], KH_EWORKER);
    ASSERT_INT(kh_manager_kernel_count(t.m), ==, 0);
    th_fini(&t);
  }
  /* KH_WORKER_PATH is honoured too. */
  {
    char *old = getenv("KH_WORKER_PATH") ? strdup(getenv("KH_WORKER_PATH")) : NULL;
    setenv("KH_WORKER_PATH", "/nonexistent/kh-worker-env", 1);
    memset(created, 0, sizeof(created));
    th_init(&t, NULL);
    ASSERT_INT(kh_kernel_create(t.m, wopts(""), id, sizeof(id), th_done_cb, created), ==, 0);
    th_run_until(&t, &created[0]);
    ASSERT_ERR(created[1], KH_EWORKER);
    th_fini(&t);
    if (old)
      setenv("KH_WORKER_PATH", old, 1);
    else
      unsetenv("KH_WORKER_PATH");
    free(old);
  }
}

/* What a hostile cell writes to every descriptor it has (protocol.h: the host treats every
 * frame as hostile). Variant V of `blobs`; B and BX are the neighbour kernel's id and its
 * running request's id, which the attacker is assumed to know. */
static const char forge_src[] =
    "import os, json, struct\n"
    "B, BX, V = '%s', '%s', %d\n"
    "def fr(o):\n"
    "    b = json.dumps(o).encode()\n"
    "    return struct.pack('>I', len(b)) + b\n"
    "out = {'name': 'stdout', 'text': 'forged'}\n"
    "blobs = [\n"
    "    fr({'t': 'ev', 'type': 'stream', 'id': BX, 'data': out}),\n"
    "    fr({'t': 'reply', 'id': BX, 'data': {'status': 'ok', 'execution_count': 99}}),\n"
    "    fr({'t': 'ev', 'type': 'stream', 'id': 'f0rged-id', 'data': out}),\n"
    "    fr({'t': 'ev', 'type': 'stream', 'id': '', 'kernel_id': B, 'data': out}),\n"
    "    fr({'t': 'ev', 'type': 'status', 'id': '', 'data': {'execution_state': 'dead'}}),\n"
    "    fr({'t': 'ev', 'type': 'stream', 'id': '', 'data': [1]}),\n"
    "    fr({'t': 'ready'}),\n"
    "    fr({'t': 'hello', 'pid': 1, 'python': '3'}),\n"
    "    fr({'t': 'exec', 'id': BX, 'code': '1', 'silent': False, 'store_history': True,\n"
    "        'allow_stdin': True}),\n"
    "    fr({'t': 'fatal', 'message': 'forged'}),\n"
    "    b'\\0\\0\\0K{\"t\":\"ev\",\"type\":\"stam\",\"id\":\"e1\",\"data\":{\"name\":\"stdout\","
    "\"text\":\"hi\\\\n\"}\"}}',\n"
    "    b'\\xff\\xff\\xff\\xff' + b'x' * 64,\n"
    "    struct.pack('>I', 12) + b'not json at!',\n"
    "    b'\\xde\\xad\\xbe\\xef' + os.urandom(4092),\n"
    "    fr({'t': 'ev', 'type': 'display_data', 'id': '', 'bufs': ['/data'],\n"
    "        'data': {'data': {}}}) + struct.pack('>I', 0x80000002) + b'hi',\n"
    "    struct.pack('>I', 0x80000004) + b'abcd',\n"
    "    fr({'t': 'ev', 'type': 'display_data', 'id': '', 'bufs': ['/x'],\n"
    "        'data': {'x': None}}) + fr({'t': 'hello', 'pid': 1, 'python': '3'}),\n"
    "]\n"
    "for fd in sorted(int(f) for f in os.listdir('/proc/self/fd')):\n"
    "    try:\n"
    "        os.write(fd, blobs[V])\n"
    "    except OSError:\n"
    "        pass\n"
    "len(blobs)\n";
#define FORGE_VARIANTS 17

/* A cell writes forged and garbage frames to every fd it can see while a second kernel runs
 * beside it: each attempt ends the attacker's worker with a protocol error (or leaves it
 * unaffected); the neighbour, its request and its output are untouched; nothing leaks. */
TEST(worker_forged_frames_contained) {
  th_t t;
  char a[64], b[64], code[4096], out[256] = "";
  th_result_t ra, rb;
  int i, v, fds, children, bpid, dead = 0;
  th_init(&t, NULL);
  th_create(&t, wopts(""), a); /* lazily created state (libuv's signal pipe) goes first */
  th_destroy(&t, a);
  fds = count_dir("/proc/self/fd");
  children = count_children();
  th_create(&t, wopts(""), a); /* the attacker */
  th_create(&t, wopts(""), b); /* its neighbour, busy in a cell across every attack */
  bpid = kernel_pid(&t, b);
  ASSERT_INT(th_submit(&t, b,
                       "print('b-before', flush=True)\nv = input('go? ')\nprint('b-after', v)"
                       "\n'b-done'",
                       NULL, &rb),
             ==, 0);
  th_wait_events(&t, KH_EVENT_INPUT_REQUEST, rb.id, 1);
  for (v = 0; v < FORGE_VARIANTS; v++) {
    snprintf(code, sizeof(code), forge_src, b, rb.id, v);
    ASSERT_INT(th_submit(&t, a, code, NULL, &ra), ==, 0);
    th_run_until(&t, &ra.done);
    if (ra.status == 0) {
      /* Unaffected: the cell ran to its end (a frame no fd of it reached the host with). */
      ASSERT_INT(th_i(ra.json, "result.data.text/plain"), ==, FORGE_VARIANTS);
    } else {
      th_event_t *e;
      int done = 0;
      ASSERT_ERR(ra.status, KH_EKERNELDEAD);
      e = find_status(&t, "dead", dead++);
      ASSERT(e != NULL);
      ASSERT_STR(e->kernel_id, a);
      /* a forged "fatal" is the worker's own word for its end, not a protocol error */
      if (v != 9) ASSERT_STR(th_s(e->data, "reason.cause"), "protocol_error");
      ASSERT_INT(kh_kernel_restart(t.m, a, on_restarted, &done), ==, 0);
      th_run_until(&t, &done);
    }
    th_result_free(&ra);
  }
  ASSERT_INT(dead, ==, FORGE_VARIANTS); /* every variant reached the host through some fd */
  /* The neighbour: same process, its request completes with its own output only. */
  ASSERT_INT(kernel_pid(&t, b), ==, bpid);
  ASSERT(!rb.done);
  ASSERT_INT(kh_kernel_input_reply(t.m, b, "go", 2), ==, 0);
  th_run_until(&t, &rb.done);
  ASSERT_INT(rb.status, ==, 0);
  ASSERT_STR(th_s(rb.json, "result.data.text/plain"), "'b-done'");
  for (i = 0; i < th_count(&t, KH_EVENT_STREAM, rb.id); i++)
    strncat(out, th_s(th_find(&t, KH_EVENT_STREAM, rb.id, i)->data, "text"), 200 - strlen(out));
  ASSERT_STR(out, "b-before\nb-after go\n");
  for (i = 0; i < t.nevents; i++) {
    th_event_t *e = &t.events[i];
    /* nothing the attacker wrote is attributed to the neighbour or its request */
    if (strcmp(e->exec_id, rb.id) == 0) ASSERT_STR(e->kernel_id, b);
    if (strcmp(e->kernel_id, b) == 0) {
      ASSERT(strcmp(e->exec_id, rb.id) == 0 || e->exec_id[0] == '\0');
      if (e->type == KH_EVENT_STATUS) {
        ASSERT(strcmp(th_s(e->data, "execution_state"), "dead") != 0);
        ASSERT(strcmp(th_s(e->data, "execution_state"), "restarting") != 0);
      }
    }
  }
  th_result_free(&rb);
  /* The attacker's kernel works again after its last restart. */
  th_exec(&t, a, "1 + 1", &ra);
  ASSERT_STR(th_s(ra.json, "result.data.text/plain"), "2");
  th_result_free(&ra);
  th_destroy(&t, a);
  th_destroy(&t, b);
  ASSERT_INT(count_dir("/proc/self/fd"), ==, fds);
  ASSERT_INT(count_children(), ==, children);
  th_fini(&t);
}

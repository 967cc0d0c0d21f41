/* test_python.c: how the embedded interpreter is started (core/src/py-start.c), in the host and
 * in the worker: which of the environment's PYTHON* variables count, that the host's signal
 * handlers stay the host's, and that a worker that inherited SIGINT as ignored can still be
 * interrupted. Each test runs in its own process, so each sees the interpreter start afresh. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kh_test.h"

/* The environment is read when the interpreter starts: in the host at the first main_thread
 * kernel, in a worker when it is spawned (after th_init, which may fill the pool). Both come
 * after these are set. A PYTHONHOME that were honoured would make start-up fail outright. */
TEST(python_ignores_host_environment) {
  th_t t;
  char id[64];
  th_result_t r;
  setenv("PYTHONPATH", "/nonexistent/kh-pythonpath", 1);
  setenv("PYTHONHOME", "/nonexistent/kh-pythonhome", 1);
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  th_exec(&t, id, "import sys\n[p for p in sys.path if 'kh-python' in p]", &r);
  ASSERT_STR(th_s(r.json, "result.data.text/plain"), "[]");
  th_result_free(&r);
  th_fini(&t);
  unsetenv("PYTHONPATH");
  unsetenv("PYTHONHOME");
}

static void host_sigint(int sig) {
  (void)sig;
}

/* The host's interpreter installs no handler: had it done so, CPython would have ignored SIGXFSZ
 * (as every Python program does) and taken over a SIGINT left at its default. (SIGPIPE is no
 * probe: kh_manager_new ignores it when left at its default, test_lifecycle.c.) This test always
 * runs a main_thread kernel, whatever KH_TEST_MODE says: only there does the host run Python. */
TEST(python_host_signals_untouched) {
  th_t t;
  char id[64];
  th_result_t r;
  struct sigaction sa, now;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = host_sigint;
  sigaction(SIGINT, &sa, NULL);
  sa.sa_handler = SIG_DFL;
  sigaction(SIGXFSZ, &sa, NULL);
  th_init(&t, NULL);
  th_create(&t, "{\"mode\":\"main_thread\"}", id);
  th_exec(&t, id, "import signal\nsignal.getsignal(signal.SIGXFSZ) == signal.SIG_DFL", &r);
  ASSERT_STR(th_s(r.json, "result.data.text/plain"), "True");
  th_result_free(&r);
  sigaction(SIGINT, NULL, &now);
  ASSERT(now.sa_handler == host_sigint);
  sigaction(SIGXFSZ, NULL, &now);
  ASSERT(now.sa_handler == SIG_DFL);
  th_fini(&t);
}

/* The worker executable the other tests use: KH_WORKER_PATH, else the one next to this program
 * (where libkernelhost looks for it too, when it is linked in statically). */
static void worker_path(char *out, size_t n) {
  const char *p = getenv("KH_WORKER_PATH");
  char self[4096];
  ssize_t len;
  if (p != NULL && *p) {
    snprintf(out, n, "%s", p);
    return;
  }
  len = readlink("/proc/self/exe", self, sizeof(self) - 1);
  ASSERT(len > 0);
  self[len] = '\0';
  snprintf(out, n, "%s/kernelhost-worker", dirname(self));
}

/* DESIGN.md section 10: a process started from a background job inherits SIGINT as ignored, and
 * CPython then never installs its KeyboardInterrupt handler. libuv resets dispositions when it
 * spawns, so the worker is started through a shell script that ignores SIGINT and execs it, as a
 * job-control shell or a forking server would leave it. */
TEST(worker_sigint_inherited_ignored) {
  th_t t;
  char id[64], worker[4096], wrapper[] = "/tmp/kh-sigint-ignored-XXXXXX", mopts[4200];
  int fd;
  worker_path(worker, sizeof(worker));
  fd = mkostemp(wrapper, O_CLOEXEC);
  ASSERT(fd >= 0);
  ASSERT(dprintf(fd, "#!/bin/sh\ntrap '' INT\nexec '%s' \"$@\"\n", worker) > 0);
  ASSERT_INT(fchmod(fd, 0700), ==, 0);
  close(fd);
  snprintf(mopts, sizeof(mopts), "{\"workerPath\": \"%s\"}", wrapper);
  th_init(&t, mopts);
  th_create(&t, "{\"mode\":\"worker\"}", id);
  /* An interrupt that never landed would end in kill + restart instead (KH_EKERNELDEAD). */
  th_interrupt_sleep(&t, id);
  th_fini(&t);
  unlink(wrapper);
}

/* sandbox_runner.c: drives the sandbox the way a worker does, for tests/security until worker
 * mode calls it: kernel options -> plan (kh__sandbox_new) -> fork -> in the child, Python up,
 * kh__sandbox_apply(), _kh_sandbox.install(), then the attack code. Prints the outcome.
 *
 * usage: sandbox_runner [--no-hooks] [--exec] [--plan] [--bare] [--thread] OPTIONS_JSON CODE
 *   --no-hooks  skip the Python audit hooks (test the OS layer alone)
 *   --exec      apply, then exec /usr/bin/python3 -c CODE (a cold worker start; needs run)
 *   --plan      print the plan (and info) as JSON on stderr
 *   --bare      no sandbox at all (baseline for overhead measurements)
 *   --thread    start a Python thread before applying (apply must refuse)
 * Exit status: the child's, or 128 + signal. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <Python.h>

#include "internal.h"

#ifndef KH_PY_DIR
#error "KH_PY_DIR (core/python) must be defined"
#endif

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int run_python(const json_t *plan, const char *code, int hooks, int bare, int thread) {
  PyObject *mod = NULL, *r;
  char err[KH__ERRMSG_MAX];
  int rc;
  PyConfig config;
  PyConfig_InitPythonConfig(&config);
  config.install_signal_handlers = 0;
  config.parse_argv = 0;
  /* Debian's CPython, whatever python3 comes first on PATH (its stdlib is what is granted). */
  PyConfig_SetBytesString(&config, &config.program_name, KH_PYTHON_EXECUTABLE);
  if (PyStatus_Exception(Py_InitializeFromConfig(&config))) {
    fprintf(stderr, "sandbox_runner: Python initialisation failed\n");
    return 70;
  }
  PyConfig_Clear(&config);
  /* The module is loaded before the sandbox closes the source tree, as the worker's embedded
   * copy would be. */
  PyRun_SimpleString("import sys; sys.path.insert(0, '" KH_PY_DIR "')");
  mod = PyImport_ImportModule("_kh_sandbox");
  if (mod == NULL) {
    PyErr_Print();
    return 70;
  }
  PyRun_SimpleString("del sys.path[0]\nimport json"); /* the worker's runtime has it loaded */
  if (thread)
    PyRun_SimpleString(
        "import threading\n_ev = threading.Event()\n"
        "threading.Thread(target=_ev.wait, daemon=True).start()");
  if (!bare) {
    json_t *report = NULL;
    int show_report = getenv("KH_RUNNER_REPORT") != NULL; /* the sandbox filters env */
    double t0 = now_us();
    rc = kh__sandbox_apply(plan, &report, err);
    if (show_report) fprintf(stderr, "apply_us %.0f\n", now_us() - t0);
    if (rc != 0) {
      fprintf(stderr, "sandbox_runner: %s: %s\n", kh_err_name(rc), err);
      return 71;
    }
    if (show_report) {
      char *s = json_dumps(report, JSON_COMPACT);
      fprintf(stderr, "report %s\n", s);
      free(s);
    }
    json_decref(report);
    if (hooks) {
      double t1 = now_us();
      char *s = json_dumps(plan, JSON_COMPACT);
      PyObject *json = PyImport_ImportModule("json");
      PyObject *d = json ? PyObject_CallMethod(json, "loads", "s", s) : NULL;
      free(s);
      r = d ? PyObject_CallMethod(mod, "install", "O", d) : NULL;
      Py_XDECREF(d);
      Py_XDECREF(json);
      if (r == NULL) {
        PyErr_Print();
        return 72;
      }
      Py_DECREF(r);
      if (show_report) fprintf(stderr, "install_us %.0f\n", now_us() - t1);
    }
  }
  Py_DECREF(mod);
  rc = PyRun_SimpleString(code) == 0 ? 0 : 1;
  if (Py_FinalizeEx() < 0 && rc == 0) rc = 120;
  return rc;
}

int main(int argc, char **argv) {
  kh__kernel_opts_t opts;
  kh__sandbox_t *sb = NULL;
  char err[KH__ERRMSG_MAX];
  int hooks = 1, exec_mode = 0, show = 0, bare = 0, thread = 0, i = 1, rc, st;
  pid_t pid;
  for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
    if (strcmp(argv[i], "--no-hooks") == 0)
      hooks = 0;
    else if (strcmp(argv[i], "--exec") == 0)
      exec_mode = 1;
    else if (strcmp(argv[i], "--plan") == 0)
      show = 1;
    else if (strcmp(argv[i], "--bare") == 0)
      bare = 1;
    else if (strcmp(argv[i], "--thread") == 0)
      thread = 1;
    else
      break;
  }
  if (argc - i != 2) {
    fprintf(
        stderr,
        "usage: sandbox_runner [--no-hooks] [--exec] [--plan] [--bare] [--thread] OPTIONS CODE\n");
    return 2;
  }
  if ((rc = kh__kernel_opts_parse(&opts, argv[i], err)) != 0) {
    fprintf(stderr, "sandbox_runner: %s: %s\n", kh_err_name(rc), err);
    return 3;
  }
  double t0 = now_us();
  if (!bare) rc = kh__sandbox_new(&sb, opts.all, err);
  if (!bare && getenv("KH_RUNNER_REPORT")) fprintf(stderr, "new_us %.0f\n", now_us() - t0);
  if (!bare && rc != 0) {
    /* createKernel would fail here: the name is what tests assert on. */
    fprintf(stderr, "sandbox_runner: %s: %s\n", kh_err_name(rc), err);
    kh__kernel_opts_free(&opts);
    return 4;
  }
  if (show && sb != NULL) {
    json_t *info = json_object();
    char *s;
    kh__sandbox_info(sb, info);
    json_object_set(info, "plan", (json_t *)kh__sandbox_plan(sb));
    s = json_dumps(info, JSON_INDENT(1));
    fprintf(stderr, "%s\n", s);
    free(s);
    json_decref(info);
  }
  if (sb == NULL) bare = 1;
  fflush(NULL);
  pid = fork();
  if (pid < 0) return 5;
  if (pid == 0) {
    if (exec_mode) {
      if (!bare && (rc = kh__sandbox_apply(kh__sandbox_plan(sb), NULL, err)) != 0) {
        fprintf(stderr, "sandbox_runner: %s: %s\n", kh_err_name(rc), err);
        _exit(71);
      }
      execl("/usr/bin/python3", "python3", "-c", argv[i + 1], (char *)NULL);
      fprintf(stderr, "sandbox_runner: exec: %s\n", strerror(errno));
      _exit(73);
    }
    _exit(run_python(bare ? NULL : kh__sandbox_plan(sb), argv[i + 1], hooks, bare, thread));
  }
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (sb != NULL) kh__sandbox_cleanup(kh__sandbox_plan(sb), (int)pid);
  kh__sandbox_free(sb);
  kh__kernel_opts_free(&opts);
  if (WIFSIGNALED(st)) {
    fprintf(stderr, "sandbox_runner: child killed by signal %d (%s)\n", WTERMSIG(st),
            strsignal(WTERMSIG(st)));
    return 128 + WTERMSIG(st);
  }
  return WEXITSTATUS(st);
}

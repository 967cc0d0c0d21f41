/* kernelhost-jupyter: a kernelhost kernel as a Jupyter kernel.
 *
 *   kernelhost-jupyter -f CONNECTION_FILE [--options JSON] [--manager-options JSON]
 *       What jupyter_client starts from a kernelspec: serves one new kernel (worker mode unless
 *       the options say otherwise) on the ports and key of the connection file until a client
 *       asks for a shutdown (or SIGTERM, or the parent's death). SIGINT interrupts the cell.
 *       KERNEL_KERNELHOST_OPTIONS (a JSON object, set by a gateway from the kernel's create
 *       request: Enterprise Gateway passes KERNEL_* variables on) adds kernel options for this
 *       kernel only: permissions, filesystem, limits, sandbox, cwd, the ones a remote kernelhost
 *       client cannot enforce itself. Those --options gives win: the kernelspec's owner decides,
 *       a request may only add what it left open.
 *   kernelhost-jupyter install [--user | --prefix DIR] [--name NAME] [--display-name NAME]
 *                              [--options JSON] [--manager-options JSON] [--env NAME=VALUE]...
 *       Writes a kernelspec (kernels/NAME/kernel.json) whose argv runs this executable with
 *       those options, as `python -m ipykernel install` does.
 *
 * Everything else is the library's kh_jupyter_serve(). */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernelhost.h"

static const char usage[] =
    "usage: kernelhost-jupyter -f CONNECTION_FILE [--options JSON] [--manager-options JSON]\n"
    "       kernelhost-jupyter install [--user | --prefix DIR] [--name NAME]\n"
    "                                  [--display-name NAME] [--options JSON]\n"
    "                                  [--manager-options JSON] [--env NAME=VALUE]...\n";

typedef struct {
  uv_loop_t *loop;
  kh_manager_t *m;
  kh_jupyter_t *server;
  char id[64];
  uv_signal_t sigint, sigterm;
  int exit_code;
  int closing;
} app_t;

static void die(const char *fmt, const char *detail) {
  fprintf(stderr, "kernelhost-jupyter: ");
  fprintf(stderr, fmt, detail);
  fputc('\n', stderr);
  exit(2);
}

/* --- serving ------------------------------------------------------------------------------ */

static void on_manager_closed(kh_manager_t *m, void *data) {
  app_t *a = data;
  uv_close((uv_handle_t *)&a->sigint, NULL);
  uv_close((uv_handle_t *)&a->sigterm, NULL);
}

static void close_all(app_t *a) {
  if (a->closing) return;
  a->closing = 1;
  kh_manager_close(a->m, on_manager_closed, a);
}

/* The kernel goes first; its destroy stops the server, whose STOPPED note closes the rest. */
static void shut_down(app_t *a) {
  if (kh_kernel_destroy(a->m, a->id, NULL, NULL) != 0) close_all(a);
}

static void on_note(kh_jupyter_t *s, int note, int restart, void *data) {
  app_t *a = data;
  if (note == KH_JUPYTER_SHUTDOWN) {
    /* A restart too: jupyter_client starts a new process once this one has exited. */
    shut_down(a);
  } else if (note == KH_JUPYTER_STOPPED) {
    a->server = NULL;
    close_all(a);
  }
}

static void on_created(kh_manager_t *m, const char *id, int status, const char *errmsg,
                       void *data) {
  app_t *a = data;
  if (status == 0 || status == KH_ECANCELED) return;
  fprintf(stderr, "kernelhost-jupyter: the kernel did not start: %s: %s\n", kh_err_name(status),
          errmsg ? errmsg : "");
  a->exit_code = 1;
  close_all(a);
}

/* A kernel that died for good (no autoRestart) ends the process, as a crashed ipykernel does:
 * jupyter_client's restarter then starts a new one. */
static void on_status(kh_manager_t *m, const kh_event_t *ev, void *data) {
  app_t *a = data;
  json_t *doc = json_loadb(ev->json, ev->json_len, 0, NULL);
  const char *st = json_string_value(json_object_get(doc, "execution_state"));
  if (st != NULL && strcmp(st, "dead") == 0 && !a->closing) {
    fprintf(stderr, "kernelhost-jupyter: the kernel died: %.*s\n", (int)ev->json_len, ev->json);
    a->exit_code = 1;
    shut_down(a);
  }
  json_decref(doc);
}

static void on_signal(uv_signal_t *h, int signum) {
  app_t *a = h->data;
  if (signum == SIGINT)
    kh_kernel_interrupt(a->m, a->id);
  else
    shut_down(a);
}

/* The connection file's known keys, as kh_jupyter_serve's `connection` option. */
static char *read_connection(const char *path) {
  static const char *const keys[] = {"transport",    "ip",      "shell_port", "iopub_port",
                                     "stdin_port",   "control_port", "hb_port", "key",
                                     "signature_scheme", "kernel_name"};
  json_error_t jerr;
  json_t *file = json_load_file(path, 0, &jerr), *conn, *opts;
  char *text;
  size_t i;
  if (file == NULL || !json_is_object(file))
    die("cannot read the connection file: %s", file ? "not a JSON object" : jerr.text);
  conn = json_object();
  for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
    json_t *v = json_object_get(file, keys[i]);
    if (v != NULL && !json_is_null(v)) json_object_set(conn, keys[i], v);
  }
  opts = json_pack("{s:o, s:s}", "connection", conn, "shutdown", "none");
  text = json_dumps(opts, JSON_COMPACT);
  json_decref(opts);
  json_decref(file);
  return text;
}

/* The kernel's options: --options, plus what KERNEL_KERNELHOST_OPTIONS adds (owned, or NULL
 * for none). */
static char *request_options(const char *kopts) {
  static const char *const allowed[] = {"permissions", "filesystem", "limits", "sandbox", "cwd",
                                        NULL};
  const char *env = getenv("KERNEL_KERNELHOST_OPTIONS");
  json_t *base, *extra, *v;
  const char *key;
  char *text;
  int i;
  if (env == NULL || !*env) return kopts ? strdup(kopts) : NULL;
  extra = json_loads(env, 0, NULL);
  if (!json_is_object(extra)) die("%s", "KERNEL_KERNELHOST_OPTIONS must be a JSON object");
  base = kopts ? json_loads(kopts, 0, NULL) : json_object();
  if (!json_is_object(base)) die("%s", "bad --options: not a JSON object");
  json_object_foreach(extra, key, v) {
    for (i = 0; allowed[i] && strcmp(allowed[i], key) != 0; i++) {
    }
    if (allowed[i] == NULL)
      die("KERNEL_KERNELHOST_OPTIONS may set permissions, filesystem, limits, sandbox and cwd, "
          "not \"%s\"",
          key);
    if (json_object_get(base, key) == NULL) json_object_set(base, key, v);
  }
  text = json_dumps(base, JSON_COMPACT);
  json_decref(base);
  json_decref(extra);
  return text;
}

static int serve(const char *conn_path, const char *kopts_given, const char *mopts) {
  app_t a;
  char *sopts = read_connection(conn_path);
  char *kopts = request_options(kopts_given);
  int rc;
  memset(&a, 0, sizeof(a));
  /* Gone with the front end that started us, as ipykernel's parent poller makes it. */
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  a.loop = uv_default_loop();
  if ((rc = kh_manager_new(&a.m, a.loop, mopts)) != 0)
    die("bad --manager-options: %s", kh_manager_errmsg(NULL));
  if ((rc = kh_kernel_create(a.m, kopts, a.id, sizeof(a.id), on_created, &a)) != 0) {
    fprintf(stderr, "kernelhost-jupyter: cannot create the kernel: %s: %s\n", kh_err_name(rc),
            kh_manager_errmsg(a.m));
    return 2;
  }
  kh_subscribe(a.m, a.id, KH_EVENT_STATUS, on_status, &a, NULL);
  /* Served at once, while the kernel starts: the front end's first requests wait in order. */
  if ((rc = kh_jupyter_serve(a.m, a.id, sopts, on_note, &a, &a.server)) != 0) {
    fprintf(stderr, "kernelhost-jupyter: cannot serve the kernel: %s: %s\n", kh_err_name(rc),
            kh_manager_errmsg(a.m));
    return 1;
  }
  free(sopts);
  free(kopts);
  uv_signal_init(a.loop, &a.sigint);
  uv_signal_init(a.loop, &a.sigterm);
  a.sigint.data = a.sigterm.data = &a;
  uv_signal_start(&a.sigint, on_signal, SIGINT);
  uv_signal_start(&a.sigterm, on_signal, SIGTERM);
  uv_run(a.loop, UV_RUN_DEFAULT);
  uv_loop_close(a.loop);
  return a.exit_code;
}

/* --- install ------------------------------------------------------------------------------- */

static int valid_name(const char *s) {
  if (!*s) return 0;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
          *s == '.' || *s == '_' || *s == '-'))
      return 0;
  return 1;
}

static void mkdirs(char *path) {
  char *p;
  for (p = path + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    mkdir(path, 0755);
    *p = '/';
  }
  mkdir(path, 0755);
}

static void on_probe(kh_manager_t *m, const char *id, int status, const char *errmsg, void *d) {}

/* The options are checked as the kernel will check them, so that a kernelspec with a typo is
 * refused now rather than failing in a front end later. */
static void check_options(const char *kopts, const char *mopts) {
  kh_manager_t *m;
  char id[64];
  int rc;
  uv_loop_t loop;
  uv_loop_init(&loop);
  if (kh_manager_new(&m, &loop, mopts) != 0)
    die("bad --manager-options: %s", kh_manager_errmsg(NULL));
  rc = kh_kernel_create(m, kopts, id, sizeof(id), on_probe, NULL);
  if (rc != 0) {
    fprintf(stderr, "kernelhost-jupyter: bad --options: %s: %s\n", kh_err_name(rc),
            kh_manager_errmsg(m));
    exit(2);
  }
  kh_manager_close(m, NULL, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
}

static int install(int argc, char **argv) {
  const char *name = "kernelhost", *display = NULL, *prefix = NULL, *kopts = NULL,
             *mopts = NULL;
  int user = 0, i;
  char exe[PATH_MAX], dir[PATH_MAX + 64], file[PATH_MAX + 96], shown[256];
  json_t *spec, *args, *env = json_object();
  ssize_t n;
  for (i = 0; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--user") == 0) {
      user = 1;
      continue;
    }
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      fputs(usage, stdout);
      exit(0);
    }
    if (v == NULL) die("%s needs a value", a);
    if (strcmp(a, "--name") == 0)
      name = v;
    else if (strcmp(a, "--display-name") == 0)
      display = v;
    else if (strcmp(a, "--prefix") == 0)
      prefix = v;
    else if (strcmp(a, "--options") == 0)
      kopts = v;
    else if (strcmp(a, "--manager-options") == 0)
      mopts = v;
    else if (strcmp(a, "--env") == 0) {
      const char *eq = strchr(v, '=');
      if (eq == NULL || eq == v) die("--env takes NAME=VALUE, got \"%s\"", v);
      json_object_setn_new(env, v, (size_t)(eq - v), json_string(eq + 1));
    } else
      die("unknown install argument \"%s\"", a);
    i++;
  }
  if (user && prefix) die("%s", "--user and --prefix exclude each other");
  if (!valid_name(name)) die("kernel name \"%s\" may only hold letters, digits, '.', '_', '-'", name);
  check_options(kopts, mopts);
  if ((n = readlink("/proc/self/exe", exe, sizeof(exe) - 1)) < 0) die("%s", "cannot find myself");
  exe[n] = '\0';
  if (prefix != NULL) {
    snprintf(dir, sizeof(dir), "%s/share/jupyter/kernels/%s", prefix, name);
  } else if (user) {
    const char *d = getenv("JUPYTER_DATA_DIR"), *x = getenv("XDG_DATA_HOME");
    const char *h = getenv("HOME");
    if (d && *d)
      snprintf(dir, sizeof(dir), "%s/kernels/%s", d, name);
    else if (x && *x)
      snprintf(dir, sizeof(dir), "%s/jupyter/kernels/%s", x, name);
    else if (h && *h)
      snprintf(dir, sizeof(dir), "%s/.local/share/jupyter/kernels/%s", h, name);
    else
      die("%s", "--user needs HOME");
  } else {
    snprintf(dir, sizeof(dir), "/usr/local/share/jupyter/kernels/%s", name);
  }
  if (display == NULL) {
    snprintf(shown, sizeof(shown), "Python 3 (kernelhost%s)",
             kopts && strstr(kopts, "main_thread") ? ", main thread" : "");
    display = shown;
  }
  args = json_pack("[s, s, s]", exe, "-f", "{connection_file}");
  if (kopts) {
    json_array_append_new(args, json_string("--options"));
    json_array_append_new(args, json_string(kopts));
  }
  if (mopts) {
    json_array_append_new(args, json_string("--manager-options"));
    json_array_append_new(args, json_string(mopts));
  }
  /* metadata.kernelhost: a remote kernelhost client may send this kernel options it cannot
   * enforce itself (KERNEL_KERNELHOST_OPTIONS, see above) */
  spec = json_pack("{s:o, s:s, s:s, s:s, s:{s:b, s:{s:s}}}", "argv", args, "display_name",
                   display, "language", "python", "interrupt_mode", "message", "metadata",
                   "debugger", 0, "kernelhost", "options_env", "KERNEL_KERNELHOST_OPTIONS");
  if (json_object_size(env) > 0) json_object_set(spec, "env", env);
  json_decref(env);
  mkdirs(dir);
  snprintf(file, sizeof(file), "%s/kernel.json", dir);
  if (json_dump_file(spec, file, JSON_INDENT(1)) != 0)
    die("cannot write the kernelspec: %s", strerror(errno));
  json_decref(spec);
  printf("Installed kernelspec %s in %s\n", name, dir);
  return 0;
}

int main(int argc, char **argv) {
  const char *conn = NULL, *kopts = NULL, *mopts = NULL;
  int i;
  if (argc >= 2 && strcmp(argv[1], "install") == 0) return install(argc - 2, argv + 2);
  for (i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      fputs(usage, stdout);
      return 0;
    }
    if (v == NULL) die("%s needs a value (see --help)", a);
    if (strcmp(a, "-f") == 0 || strcmp(a, "--connection-file") == 0)
      conn = v;
    else if (strcmp(a, "--options") == 0)
      kopts = v;
    else if (strcmp(a, "--manager-options") == 0)
      mopts = v;
    else
      die("unknown argument \"%s\" (see --help)", a);
    i++;
  }
  if (conn == NULL) {
    fputs(usage, stderr);
    return 2;
  }
  return serve(conn, kopts, mopts);
}

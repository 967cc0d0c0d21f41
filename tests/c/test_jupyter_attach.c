/* test_jupyter_attach.c: a live C host serves one of its kernels on Jupyter's wire
 * (kh_jupyter_serve) while its own loop keeps turning, and a real jupyter_client
 * (tests/jupyter/attach_client.py, a child process) attaches to it; and the server's life as a
 * host sees it: refused calls, the connection file, stopping by every cause. The Lua and Node
 * suites test the same names through their bindings. The server's own options and the protocol
 * itself are tests/c/test_jupyter.c's and tests/jupyter's. */
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kh_test.h"

#define PYTHON "/usr/bin/python3" /* Debian's, where jupyter_client is */
#define CLIENT KH_CASES_DIR "/../jupyter/attach_client.py"

/* The server's notes, in the order they came. */
typedef struct {
  int shutdown, restart, stopped;
  int after_stopped; /* notes that came after STOPPED: must stay 0 */
} notes_t;

static void on_note(kh_jupyter_t *s, int note, int restart, void *data) {
  notes_t *n = data;
  (void)s;
  if (n->stopped) n->after_stopped++;
  if (note == KH_JUPYTER_SHUTDOWN) {
    n->shutdown++;
    n->restart = restart;
  } else if (note == KH_JUPYTER_STOPPED) {
    n->stopped++;
  }
}

/* A server whose connection file is connection.json in a fresh directory under /tmp, which
 * served_done() removes: it must be empty by then, so the server removed what it wrote. */
typedef struct {
  char dir[64], file[192]; /* file: the directory and a kernel id */
  notes_t n;
  kh_jupyter_t *s;
} served_t;

static void temp_dir(served_t *sv) {
  memset(sv, 0, sizeof(*sv));
  snprintf(sv->dir, sizeof(sv->dir), "/tmp/kh-jupyter-XXXXXX");
  if (mkdtemp(sv->dir) == NULL) FAIL("mkdtemp: %s", strerror(errno));
  snprintf(sv->file, sizeof(sv->file), "%s/connection.json", sv->dir);
}

/* Serves kernel id on sv->file; `key` spells the option (the core takes "connectionFile" and
 * "connection_file" alike). */
static void serve(th_t *t, const char *id, served_t *sv, const char *key) {
  char opts[256];
  int rc;
  temp_dir(sv);
  snprintf(opts, sizeof(opts), "{\"%s\": \"%s\"}", key, sv->file);
  if ((rc = kh_jupyter_serve(t->m, id, opts, on_note, &sv->n, &sv->s)) != 0)
    FAIL("kh_jupyter_serve: %s: %s", kh_err_name(rc), kh_manager_errmsg(t->m));
  ASSERT(sv->s != NULL);
}

static int file_gone(const char *path) {
  return access(path, F_OK) != 0 && errno == ENOENT;
}

/* Runs the loop until STOPPED came, which took the connection file with it. */
static void wait_stopped(th_t *t, served_t *sv) {
  th_run_until(t, &sv->n.stopped);
  ASSERT(file_gone(sv->file));
}

static void stop_served(th_t *t, served_t *sv) {
  ASSERT_INT(kh_jupyter_stop(sv->s), ==, 0);
  ASSERT_INT(sv->n.stopped, ==, 0); /* from the loop, never inside the call */
  wait_stopped(t, sv);
}

/* After the manager closed: STOPPED came exactly once and last, and the directory is empty. */
static void served_done(served_t *sv) {
  ASSERT_INT(sv->n.stopped, ==, 1);
  ASSERT_INT(sv->n.after_stopped, ==, 0);
  ASSERT_INT(rmdir(sv->dir), ==, 0);
}

static json_t *load_file(const char *path) {
  json_error_t err;
  json_t *j = json_load_file(path, 0, &err);
  if (j == NULL) FAIL("%s is not JSON: %s", path, err.text);
  return j;
}

static json_t *server_info(kh_jupyter_t *s) {
  char *text = kh_jupyter_info(s);
  json_t *j;
  ASSERT(text != NULL);
  j = json_loads(text, 0, NULL);
  kh_free(text);
  ASSERT(j != NULL);
  return j;
}

/* --- the wire client, a child process --------------------------------------------------------- */

typedef struct {
  uv_process_t proc;
  uv_pipe_t out;
  char buf[65536];
  size_t len;
  int exited, out_closed;
  int64_t status;
  int term_signal;
} client_t;

static void client_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  client_t *c = h->data;
  (void)hint;
  *b = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - 1 - c->len));
}

static void client_closed(uv_handle_t *h) {
  client_t *c = h->data;
  if (h == (uv_handle_t *)&c->out) c->out_closed = 1;
}

static void client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  client_t *c = s->data;
  (void)b;
  if (n > 0) c->len += (size_t)n;
  if (n < 0 || c->len + 1 >= sizeof(c->buf)) {
    uv_read_stop(s);
    uv_close((uv_handle_t *)s, client_closed);
  }
}

static void client_exit(uv_process_t *p, int64_t status, int sig) {
  client_t *c = p->data;
  c->exited = 1;
  c->status = status;
  c->term_signal = sig;
  uv_close((uv_handle_t *)p, NULL);
}

/* Starts attach_client.py on the connection file; `flag` is NULL or "--shutdown". */
static void client_start(th_t *t, client_t *c, const char *file, const char *flag) {
  char *args[] = {PYTHON, CLIENT, (char *)file, (char *)flag, NULL};
  uv_process_options_t o;
  uv_stdio_container_t io[3];
  memset(c, 0, sizeof(*c));
  memset(&o, 0, sizeof(o));
  ASSERT_INT(uv_pipe_init(&t->loop, &c->out, 0), ==, 0);
  c->out.data = c->proc.data = c;
  io[0].flags = UV_IGNORE;
  io[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  io[1].data.stream = (uv_stream_t *)&c->out;
  io[2].flags = UV_INHERIT_FD; /* its complaints go to the test's log */
  io[2].data.fd = 2;
  o.file = PYTHON;
  o.args = args;
  o.stdio = io;
  o.stdio_count = 3;
  o.exit_cb = client_exit;
  ASSERT_INT(uv_spawn(&t->loop, &c->proc, &o), ==, 0);
  ASSERT_INT(uv_read_start((uv_stream_t *)&c->out, client_alloc, client_read), ==, 0);
}

/* Runs the host's loop until the client exited and its output is all in; returns its summary
 * (owned), failing the test unless the client's every check held. */
static json_t *client_wait(th_t *t, client_t *c) {
  json_t *summary;
  while (!c->exited || !c->out_closed) th_step(t);
  c->buf[c->len] = '\0';
  if (c->status != 0 || c->term_signal != 0)
    FAIL("attach_client.py exited %d (signal %d): %s", (int)c->status, c->term_signal, c->buf);
  summary = json_loads(c->buf, 0, NULL);
  if (summary == NULL) FAIL("attach_client.py printed no JSON: %s", c->buf);
  ASSERT_INT(json_array_size(json_object_get(summary, "failures")), ==, 0);
  return summary;
}

/* --- the host's own loop and events ---------------------------------------------------------- */

typedef struct {
  uv_timer_t timer;
  long ticks;        /* the host's own work: a timer that keeps firing while the client runs */
  long marker_ticks; /* ticks when the host saw the wire cell's output among its events */
  char marker_exec[64];
} host_t;

static void on_tick(uv_timer_t *h) {
  ((host_t *)h->data)->ticks++;
}

static void on_host_stream(kh_manager_t *m, const kh_event_t *ev, void *data) {
  host_t *h = data;
  (void)m;
  if (h->marker_exec[0] == '\0' && strstr(ev->json, "wire-marker 42") != NULL) {
    h->marker_ticks = h->ticks;
    snprintf(h->marker_exec, sizeof(h->marker_exec), "%s", ev->execution_id);
  }
}

/* A jupyter_client attaches to a kernel of this running host, runs a cell, sees its output,
 * completes and interrupts, while the host's loop keeps turning and the host receives the
 * wire's cells' events as its own; stopping the server leaves the kernel running. */
TEST(jupyter_attach_live_host) {
  th_t t;
  host_t h;
  client_t c;
  served_t sv;
  char id[64];
  json_t *info, *conn, *summary, *r;
  th_event_t *e;
  th_result_t res;
  long ticks_at_spawn;
  int64_t sub;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  serve(&t, id, &sv, "connectionFile");

  /* What the host learns of its server: the file it wrote and what it holds. */
  info = server_info(sv.s);
  ASSERT_STR(th_s(info, "kernel_id"), id);
  ASSERT_STR(th_s(info, "connection_file"), sv.file);
  ASSERT(json_is_false(json_object_get(info, "stopping")));
  conn = load_file(sv.file);
  ASSERT(json_equal(conn, json_object_get(info, "connection")));
  ASSERT_STR(th_s(conn, "ip"), "127.0.0.1");
  ASSERT_STR(th_s(conn, "transport"), "tcp");
  ASSERT_STR(th_s(conn, "signature_scheme"), "hmac-sha256");
  ASSERT(strlen(th_s(conn, "key")) >= 32);
  ASSERT(th_i(conn, "shell_port") > 0 && th_i(conn, "iopub_port") > 0);
  json_decref(conn);
  json_decref(info);

  memset(&h, 0, sizeof(h));
  ASSERT_INT(kh_subscribe(t.m, id, KH_EVENT_STREAM, on_host_stream, &h, &sub), ==, 0);
  uv_timer_init(&t.loop, &h.timer);
  h.timer.data = &h;
  uv_timer_start(&h.timer, on_tick, 1, 1);
  ticks_at_spawn = h.ticks;
  client_start(&t, &c, sv.file, NULL);
  summary = client_wait(&t, &c);
  uv_close((uv_handle_t *)&h.timer, NULL);

  /* The client's view (it checked each step itself). */
  ASSERT_STR(th_s(summary, "execute.status"), "ok");
  ASSERT_STR(th_s(summary, "execute.stdout"), "wire-marker 42\n");
  ASSERT_STR(th_s(summary, "interrupt.ename"), "KeyboardInterrupt");
  ASSERT_STR(th_s(summary, "complete.status"), "ok");
  json_decref(summary);

  /* The host's view: its loop turned meanwhile, and the wire's cell came among its own events,
   * under an execution id of its own; so did the interrupted cell's error. */
  ASSERT(h.marker_exec[0] != '\0');
  ASSERT(h.marker_ticks > ticks_at_spawn);
  ASSERT(h.ticks > h.marker_ticks);
  ASSERT(th_find(&t, KH_EVENT_STREAM, h.marker_exec, 0) != NULL);
  e = th_find(&t, KH_EVENT_EXECUTE_ERROR, NULL, 0);
  ASSERT(e != NULL);
  ASSERT_STR(th_s(e->data, "ename"), "KeyboardInterrupt");
  ASSERT(strcmp(e->exec_id, h.marker_exec) != 0);
  info = server_info(sv.s);
  ASSERT(th_i(info, "messages") > 0);
  ASSERT_INT(th_i(info, "dropped"), ==, 0);
  json_decref(info);
  ASSERT_INT(sv.n.stopped, ==, 0);

  /* Stopping: the note comes from the loop, the file is gone, the kernel runs on with what the
   * wire's cells left in its namespace. */
  stop_served(&t, &sv);
  ASSERT_INT(sv.n.shutdown, ==, 0);
  r = th_exec(&t, id, "wire_value + 1", &res);
  ASSERT_STR(th_s(r, "result.data.text/plain"), "43");
  th_result_free(&res);
  th_fini(&t);
  served_done(&sv);
}

/* A client's shutdown_request (restart false, the default shutdown "stop"): the SHUTDOWN note,
 * then STOPPED; the kernel keeps running for the host. */
TEST(jupyter_attach_shutdown) {
  th_t t;
  client_t c;
  served_t sv;
  char id[64];
  json_t *summary, *r;
  th_result_t res;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  serve(&t, id, &sv, "connection_file");
  client_start(&t, &c, sv.file, "--shutdown");
  summary = client_wait(&t, &c);
  ASSERT_STR(th_s(summary, "shutdown.reply"), "shutdown_reply");
  json_decref(summary);
  wait_stopped(&t, &sv);
  ASSERT_INT(sv.n.shutdown, ==, 1);
  ASSERT_INT(sv.n.restart, ==, 0);
  ASSERT(kh_kernel_exists(t.m, id, NULL));
  r = th_exec(&t, id, "6 * 7", &res);
  ASSERT_STR(th_s(r, "result.data.text/plain"), "42");
  th_result_free(&res);
  th_fini(&t);
  served_done(&sv);
}

/* --- the server's life as the host sees it ---------------------------------------------------- */

/* Options the core refuses: KH_EOPTION naming the option, nothing served, no note. */
TEST(jupyter_serve_bad_options) {
  static const struct {
    const char *json, *mention;
  } bad[] = {
      {"{\"bogus\": 1}", "bogus"},
      {"{\"ip\": 5}", "ip"},
      {"{\"connectionFile\": true}", "connectionFile"},
      {"{\"shutdown\": \"later\"}", "shutdown"},
      {"{\"transport\": \"udp\"}", "transport"},
      {"{\"connection\": {\"shell_port\": \"x\"}}", "shell_port"},
      {"{\"connection\": {\"shell_port\": 70000}}", "shell_port"},
      {"[1]", "object"},
      {"{\"key\":", "JSON"},
  };
  th_t t;
  served_t sv;
  notes_t never = {0};
  kh_jupyter_t *s = NULL;
  char id[64];
  size_t i;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    int rc = kh_jupyter_serve(t.m, id, bad[i].json, on_note, &never, &s);
    if (rc != KH_EOPTION)
      FAIL("serve(%s): expected KH_EOPTION, got %s (%s)", bad[i].json, kh_err_name(rc),
           kh_manager_errmsg(t.m));
    ASSERT_CONTAINS(kh_manager_errmsg(t.m), bad[i].mention);
    ASSERT(s == NULL);
  }
  /* Nothing was left serving, and no note came: the kernel can be served now. */
  serve(&t, id, &sv, "connectionFile");
  stop_served(&t, &sv);
  th_fini(&t);
  served_done(&sv);
  ASSERT_INT(never.stopped + never.shutdown, ==, 0);
}

/* One server per kernel: a second is KH_EEXIST while the first serves; once it stopped the
 * kernel can be served again. */
TEST(jupyter_serve_twice) {
  th_t t;
  served_t one, two;
  kh_jupyter_t *s = NULL;
  char id[64], opts[256];
  json_t *info;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  serve(&t, id, &one, "connectionFile");
  snprintf(opts, sizeof(opts), "{\"connectionFile\": \"%s/two.json\"}", one.dir);
  ASSERT_ERR(kh_jupyter_serve(t.m, id, opts, on_note, &one.n, &s), KH_EEXIST);
  ASSERT_CONTAINS(kh_manager_errmsg(t.m), id);
  ASSERT(s == NULL);
  info = server_info(one.s);
  ASSERT(json_is_false(json_object_get(info, "stopping")));
  json_decref(info);
  stop_served(&t, &one);
  serve(&t, id, &two, "connectionFile");
  stop_served(&t, &two);
  th_fini(&t);
  served_done(&one); /* empty: two.json was never written */
  served_done(&two);
}

/* A second stop while the first is under way is KH_ECLOSED, and STOPPED comes once. */
TEST(jupyter_stop_twice) {
  th_t t;
  served_t sv;
  char id[64];
  json_t *info;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  serve(&t, id, &sv, "connectionFile");
  ASSERT_INT(kh_jupyter_stop(sv.s), ==, 0);
  ASSERT_ERR(kh_jupyter_stop(sv.s), KH_ECLOSED);
  info = server_info(sv.s); /* valid until STOPPED has run */
  ASSERT(json_is_true(json_object_get(info, "stopping")));
  json_decref(info);
  ASSERT_ERR(kh_jupyter_stop(NULL), KH_EINVAL);
  ASSERT_INT(sv.n.stopped, ==, 0);
  wait_stopped(&t, &sv);
  th_fini(&t);
  served_done(&sv);
}

/* No such kernel (never was, or destroyed): KH_ENOTFOUND; missing arguments: KH_EINVAL. */
TEST(jupyter_serve_unknown_kernel) {
  th_t t;
  notes_t n = {0};
  kh_jupyter_t *s = NULL;
  char id[64];
  th_init(&t, NULL);
  ASSERT_ERR(kh_jupyter_serve(t.m, "no-such-kernel", NULL, on_note, &n, &s), KH_ENOTFOUND);
  ASSERT(s == NULL);
  th_create(&t, th_opts(""), id);
  ASSERT_ERR(kh_jupyter_serve(NULL, id, NULL, on_note, &n, &s), KH_EINVAL);
  ASSERT_ERR(kh_jupyter_serve(t.m, NULL, NULL, on_note, &n, &s), KH_EINVAL);
  ASSERT_ERR(kh_jupyter_serve(t.m, id, NULL, on_note, &n, NULL), KH_EINVAL);
  th_destroy(&t, id);
  ASSERT_ERR(kh_jupyter_serve(t.m, id, NULL, on_note, &n, &s), KH_ENOTFOUND);
  ASSERT(s == NULL);
  th_fini(&t);
  ASSERT_INT(n.stopped, ==, 0);
}

/* The connection file holds the key: mode 0600 whatever the umask, both where the host says
 * and in Jupyter's runtime directory (the default), where `jupyter console --existing` finds
 * it by name. */
TEST(jupyter_connection_file_mode) {
  th_t t;
  served_t sv, def;
  char id[64];
  struct stat st;
  mode_t old;
  json_t *info;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  old = umask(0);
  serve(&t, id, &sv, "connectionFile");
  umask(old);
  ASSERT_INT(stat(sv.file, &st), ==, 0);
  ASSERT_INT(st.st_mode & 07777, ==, 0600);
  stop_served(&t, &sv);

  temp_dir(&def);
  snprintf(def.file, sizeof(def.file), "%s/kernel-kh-%s.json", def.dir, id);
  setenv("JUPYTER_RUNTIME_DIR", def.dir, 1);
  old = umask(0);
  ASSERT_INT(kh_jupyter_serve(t.m, id, NULL, on_note, &def.n, &def.s), ==, 0);
  umask(old);
  unsetenv("JUPYTER_RUNTIME_DIR");
  info = server_info(def.s);
  ASSERT_STR(th_s(info, "connection_file"), def.file);
  json_decref(info);
  ASSERT_INT(stat(def.file, &st), ==, 0);
  ASSERT_INT(st.st_mode & 07777, ==, 0600);
  stop_served(&t, &def);
  th_fini(&t);
  served_done(&sv);
  served_done(&def);
}

/* Destroying the kernel stops its server: STOPPED once, the file removed. */
TEST(jupyter_serve_stops_on_destroy) {
  th_t t;
  served_t sv;
  char id[64];
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  serve(&t, id, &sv, "connectionFile");
  th_destroy(&t, id);
  wait_stopped(&t, &sv);
  th_fini(&t);
  ASSERT_INT(sv.n.shutdown, ==, 0);
  served_done(&sv);
}

typedef struct {
  notes_t *notes;
  int closed;
  int stopped_before_close; /* STOPPED had come when the close callback ran */
} close_t;

static void on_manager_closed(kh_manager_t *m, void *data) {
  close_t *c = data;
  (void)m;
  c->closed = 1;
  c->stopped_before_close = c->notes->stopped;
}

/* Closing the manager stops its servers: STOPPED comes before the close's own callback. */
TEST(jupyter_serve_stops_on_manager_close) {
  th_t t;
  served_t sv;
  close_t c = {&sv.n, 0, 0};
  char id[64];
  int i;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  serve(&t, id, &sv, "connectionFile");
  ASSERT_INT(kh_manager_close(t.m, on_manager_closed, &c), ==, 0);
  th_run_until(&t, &c.closed);
  ASSERT_INT(c.stopped_before_close, ==, 1);
  ASSERT(file_gone(sv.file));
  /* th_fini's end, the manager being closed already. */
  uv_close((uv_handle_t *)&t.watchdog, NULL);
  uv_run(&t.loop, UV_RUN_DEFAULT);
  ASSERT_INT(uv_loop_close(&t.loop), ==, 0);
  for (i = 0; i < t.nevents; i++) json_decref(t.events[i].data);
  served_done(&sv);
}

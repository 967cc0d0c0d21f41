/* test_remote.c: mode "remote" kernels on a real Jupyter Server (Debian's jupyter_server 1.23)
 * on loopback, started per test by tests/remote/gateway.py behind a proxy the test can cut. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kh_test.h"

#ifndef KH_SOURCE_DIR
#define KH_SOURCE_DIR "."
#endif

typedef struct {
  pid_t pid;
  FILE *in;  /* commands */
  FILE *out; /* answers */
  json_t *info;
  char url[256], token[256], mopts[1024];
} fx_t;

/* kh: also serve kernelspec "kernelhost" (kernelhost-jupyter's own, from $KH_JUPYTER_EXE). */
static void fx_start_with(fx_t *f, int kh) {
  int to[2], from[2];
  const char *exe = getenv("KH_JUPYTER_EXE");
  char line[4096];
  memset(f, 0, sizeof(*f));
  if (kh && (exe == NULL || !*exe)) FAIL("KH_JUPYTER_EXE must name the kernelhost-jupyter to serve");
  if (pipe(to) != 0 || pipe(from) != 0) FAIL("pipe");
  f->pid = fork();
  if (f->pid == 0) {
    dup2(to[0], 0);
    dup2(from[1], 1);
    close(to[1]);
    close(from[0]);
    if (kh)
      execl("/usr/bin/python3", "python3", KH_SOURCE_DIR "/tests/remote/gateway.py",
            "--kernelhost-jupyter", exe, (char *)NULL);
    else
      execl("/usr/bin/python3", "python3", KH_SOURCE_DIR "/tests/remote/gateway.py", (char *)NULL);
    _exit(127);
  }
  close(to[0]);
  close(from[1]);
  f->in = fdopen(to[1], "w");
  f->out = fdopen(from[0], "r");
  if (fgets(line, sizeof(line), f->out) == NULL) FAIL("the gateway fixture did not start");
  f->info = json_loads(line, 0, NULL);
  if (f->info == NULL) FAIL("fixture said: %s", line);
  snprintf(f->url, sizeof(f->url), "%s", th_s(f->info, "url"));
  snprintf(f->token, sizeof(f->token), "%s", th_s(f->info, "token"));
  snprintf(f->mopts, sizeof(f->mopts),
           "{\"gateway\":{\"url\":\"%s\",\"token\":\"%s\",\"reconnectTimeout\":3000,\"pollInterval\":500}}", f->url,
           f->token);
}

static void fx_start(fx_t *f) { fx_start_with(f, 0); }

/* Sends one command; returns its answer (owned) and fails the test unless it is ok. */
static json_t *fx_cmd(fx_t *f, const char *cmd) {
  char line[65536];
  json_t *a;
  fprintf(f->in, "%s\n", cmd);
  fflush(f->in);
  if (fgets(line, sizeof(line), f->out) == NULL) FAIL("the fixture went away after %s", cmd);
  a = json_loads(line, 0, NULL);
  if (!json_is_true(json_object_get(a, "ok"))) FAIL("fixture %s: %s", cmd, line);
  return a;
}

static void fx_stop(fx_t *f) {
  int st;
  fclose(f->in);
  waitpid(f->pid, &st, 0);
  fclose(f->out);
  json_decref(f->info);
}

static int remote_listed(fx_t *f, const char *rid) {
  json_t *a = fx_cmd(f, "kernels"), *e;
  size_t i;
  int found = 0;
  json_array_foreach(json_object_get(a, "kernels"), i, e) {
    if (strcmp(json_string_value(json_object_get(e, "id")), rid) == 0) found = 1;
  }
  json_decref(a);
  return found;
}

static void remote_id_of(th_t *t, const char *id, char *out, size_t n) {
  char *info = kh_kernel_info(t->m, id);
  json_t *j = json_loads(info, 0, NULL);
  ASSERT(j != NULL);
  snprintf(out, n, "%s", th_s(j, "remote.id"));
  json_decref(j);
  kh_free(info);
}

static const char *rmode = "{\"mode\":\"remote\"}";

TEST(remote_execute_events_in_order) {
  fx_t f;
  th_t t;
  char id[64];
  th_result_t res;
  json_t *r;
  th_event_t *e;
  int i, seen_stream = -1, seen_display = -1, seen_result = -1, busy = -1, idle = -1;
  fx_start(&f);
  th_init(&t, f.mopts);
  th_create(&t, rmode, id);
  r = th_exec(&t, id,
              "print('hi'); from IPython.display import display, HTML; display(HTML('<b>x</b>')); 40+2",
              &res);
  ASSERT_STR(th_s(r, "status"), "ok");
  ASSERT_INT(th_i(r, "execution_count"), ==, 1);
  ASSERT_STR(th_s(r, "result.data.text/plain"), "42");
  for (i = 0; i < t.nevents; i++) {
    e = &t.events[i];
    if (strcmp(e->exec_id, res.id) != 0) continue;
    if (e->type == KH_EVENT_STATUS && busy < 0 && strcmp(th_s(e->data, "execution_state"), "busy") == 0)
      busy = i;
    if (e->type == KH_EVENT_STATUS && strcmp(th_s(e->data, "execution_state"), "idle") == 0) idle = i;
    if (e->type == KH_EVENT_STREAM && seen_stream < 0) {
      ASSERT_STR(th_s(e->data, "name"), "stdout");
      ASSERT_STR(th_s(e->data, "text"), "hi\n");
      seen_stream = i;
    }
    if (e->type == KH_EVENT_DISPLAY_DATA) {
      ASSERT_STR(th_s(e->data, "data.text/html"), "<b>x</b>");
      seen_display = i;
    }
    if (e->type == KH_EVENT_EXECUTE_RESULT) seen_result = i;
  }
  ASSERT(busy >= 0 && seen_stream > busy && seen_display > seen_stream && seen_result > seen_display &&
         idle > seen_result);
  th_result_free(&res);
  r = th_exec(&t, id, "raise ValueError('bad')", &res);
  ASSERT_STR(th_s(r, "status"), "error");
  ASSERT_STR(th_s(r, "error.ename"), "ValueError");
  ASSERT(th_find(&t, KH_EVENT_EXECUTE_ERROR, res.id, 0) != NULL);
  th_result_free(&res);
  th_destroy(&t, id);
  th_fini(&t);
  fx_stop(&f);
}

/* kh_request_cb into a th_result_t */
static void on_answer(kh_manager_t *m, const char *kid, int status, const char *json, size_t len,
                      const char *errmsg, void *data) {
  th_result_t *r = data;
  (void)m;
  (void)kid;
  r->done = 1;
  r->status = status;
  snprintf(r->errmsg, sizeof(r->errmsg), "%s", errmsg ? errmsg : "");
  r->json = json ? json_loadb(json, len, 0, NULL) : NULL;
}

TEST(remote_input_reply) {
  fx_t f;
  th_t t;
  char id[64];
  th_result_t res;
  th_event_t *e;
  fx_start(&f);
  th_init(&t, f.mopts);
  th_create(&t, rmode, id);
  ASSERT_INT(th_submit(&t, id, "input('name? ')", NULL, &res), ==, 0);
  th_wait_events(&t, KH_EVENT_INPUT_REQUEST, res.id, 1);
  e = th_find(&t, KH_EVENT_INPUT_REQUEST, res.id, 0);
  ASSERT_STR(th_s(e->data, "prompt"), "name? ");
  ASSERT(json_is_false(th_get(e->data, "password")));
  ASSERT_INT(kh_kernel_input_reply(t.m, id, "kh", 2), ==, 0);
  th_run_until(&t, &res.done);
  ASSERT_INT(res.status, ==, 0);
  ASSERT_STR(th_s(res.json, "result.data.text/plain"), "'kh'");
  th_result_free(&res);
  th_destroy(&t, id);
  th_fini(&t);
  fx_stop(&f);
}

TEST(remote_interrupt) {
  fx_t f;
  th_t t;
  char id[64];
  fx_start(&f);
  th_init(&t, f.mopts);
  th_create(&t, rmode, id);
  th_interrupt_sleep(&t, id);
  th_destroy(&t, id);
  th_fini(&t);
  fx_stop(&f);
}

TEST(remote_restart) {
  fx_t f;
  th_t t;
  char id[64];
  th_result_t res;
  int d[2] = {0, 0};
  json_t *r;
  fx_start(&f);
  th_init(&t, f.mopts);
  th_create(&t, rmode, id);
  th_exec(&t, id, "x = 1", &res);
  th_result_free(&res);
  ASSERT_INT(kh_kernel_restart(t.m, id, th_done_cb, d), ==, 0);
  th_run_until(&t, &d[0]);
  ASSERT_INT(d[1], ==, 0);
  r = th_exec(&t, id, "x", &res);
  ASSERT_STR(th_s(r, "status"), "error");
  ASSERT_STR(th_s(r, "error.ename"), "NameError");
  ASSERT_INT(th_i(r, "execution_count"), ==, 1);
  th_result_free(&res);
  th_destroy(&t, id);
  th_fini(&t);
  fx_stop(&f);
}

TEST(remote_destroy_shuts_down) {
  fx_t f;
  th_t t;
  char id[64], id2[64], rid[256], rid2[256];
  fx_start(&f);
  th_init(&t, f.mopts);
  th_create(&t, rmode, id);
  th_create(&t, rmode, id2);
  remote_id_of(&t, id, rid, sizeof(rid));
  remote_id_of(&t, id2, rid2, sizeof(rid2));
  ASSERT(rid[0] != 0 && strcmp(rid, rid2) != 0);
  ASSERT(remote_listed(&f, rid));
  th_destroy(&t, id);
  ASSERT(!remote_listed(&f, rid));
  /* closing the manager destroys the other one: shut down on the server as well */
  ASSERT(remote_listed(&f, rid2));
  th_fini(&t);
  ASSERT(!remote_listed(&f, rid2));
  fx_stop(&f);
}

TEST(remote_list_kernels_and_specs) {
  fx_t f;
  th_t t;
  char id[64], rid[256], *local;
  th_result_t a = {0}, b = {0};
  json_t *e, *l;
  size_t i;
  int found = 0;
  fx_start(&f);
  th_init(&t, f.mopts);
  th_create(&t, rmode, id);
  remote_id_of(&t, id, rid, sizeof(rid));
  ASSERT_INT(kh_gateway_list(t.m, "kernels", on_answer, &a), ==, 0);
  ASSERT_INT(kh_gateway_list(t.m, "kernelspecs", on_answer, &b), ==, 0);
  ASSERT_ERR(kh_gateway_list(t.m, "nope", on_answer, &b), KH_EINVAL);
  th_run_until(&t, &a.done);
  th_run_until(&t, &b.done);
  ASSERT_INT(a.status, ==, 0);
  json_array_foreach(a.json, i, e) if (strcmp(th_s(e, "id"), rid) == 0) found = 1;
  ASSERT(found);
  ASSERT_INT(b.status, ==, 0);
  ASSERT(th_get(b.json, "kernelspecs.python3") != NULL);
  local = kh_manager_list(t.m, NULL);
  l = json_loads(local, 0, NULL);
  ASSERT_STR(th_s(l, "[0].mode"), "remote");
  json_decref(l);
  kh_free(local);
  th_result_free(&a);
  th_result_free(&b);
  th_destroy(&t, id);
  th_fini(&t);
  fx_stop(&f);
}

TEST(remote_connect_by_id) {
  fx_t f;
  th_t t;
  char a[64], b[64], rid[256];
  th_result_t res;
  int d[2] = {0, 0};
  json_t *r;
  fx_start(&f);
  th_init(&t, f.mopts);
  th_create(&t, rmode, a);
  remote_id_of(&t, a, rid, sizeof(rid));
  th_exec(&t, a, "x = 5", &res);
  th_result_free(&res);
  ASSERT_INT(kh_kernel_connect(t.m, rid, "{\"id\":\"attached\"}", b, sizeof(b), th_done_cb, d), ==, 0);
  ASSERT_STR(b, "attached");
  th_run_until(&t, &d[0]);
  ASSERT_INT(d[1], ==, 0);
  r = th_exec(&t, b, "x", &res);
  ASSERT_STR(th_s(r, "result.data.text/plain"), "5");
  th_result_free(&res);
  th_destroy(&t, b);
  ASSERT(remote_listed(&f, rid)); /* an attached kernel is not shut down by its destroy */
  r = th_exec(&t, a, "x + 1", &res);
  ASSERT_STR(th_s(r, "result.data.text/plain"), "6");
  th_result_free(&res);
  ASSERT_ERR(kh_kernel_connect(t.m, rid, "{\"mode\":\"worker\"}", b, sizeof(b), NULL, NULL),
             KH_EOPTION);
  th_destroy(&t, a);
  th_fini(&t);
  fx_stop(&f);
}

static char last_create_msg[1024];
static void on_create_msg(kh_manager_t *m, const char *id, int status, const char *errmsg,
                          void *data) {
  int *d = data;
  (void)m;
  (void)id;
  d[0] = 1;
  d[1] = status;
  snprintf(last_create_msg, sizeof(last_create_msg), "%s", errmsg ? errmsg : "");
}

TEST(remote_bad_token) {
  fx_t f;
  th_t t;
  char mopts[1024], id[64];
  int d[2] = {0, 0};
  fx_start(&f);
  snprintf(mopts, sizeof(mopts), "{\"gateway\":{\"url\":\"%s\",\"token\":\"wrong-secret\"}}", f.url);
  th_init(&t, mopts);
  ASSERT_INT(kh_kernel_create(t.m, rmode, id, sizeof(id), on_create_msg, d), ==, 0);
  th_run_until(&t, &d[0]);
  ASSERT_ERR(d[1], KH_EAUTH);
  ASSERT(strstr(last_create_msg, "wrong-secret") == NULL);
  th_fini(&t);
  fx_stop(&f);
}

TEST(remote_unreachable) {
  th_t t;
  char id[64];
  int d[2] = {0, 0};
  th_init(&t, "{\"gateway\":{\"url\":\"http://127.0.0.1:1\",\"token\":\"s3cret-token\"}}");
  ASSERT_INT(kh_kernel_create(t.m, rmode, id, sizeof(id), on_create_msg, d), ==, 0);
  th_run_until(&t, &d[0]);
  ASSERT_ERR(d[1], KH_EREMOTE);
  ASSERT_CONTAINS(last_create_msg, "127.0.0.1:1");
  ASSERT(strstr(last_create_msg, "s3cret-token") == NULL);
  th_fini(&t);
}

TEST(remote_websocket_cut_mid_cell) {
  fx_t f;
  th_t t;
  char id[64], text[256] = "";
  th_result_t res;
  json_t *a;
  int i;
  fx_start(&f);
  th_init(&t, f.mopts);
  th_create(&t, rmode, id);
  ASSERT_INT(th_submit(&t, id,
                       "import time\nfor i in range(5):\n    print(i, flush=True); time.sleep(0.3)",
                       NULL, &res),
             ==, 0);
  th_wait_events(&t, KH_EVENT_STREAM, res.id, 1);
  a = fx_cmd(&f, "cut");
  ASSERT_INT(json_integer_value(json_object_get(a, "cut")), >=, 1);
  json_decref(a);
  th_run_until(&t, &res.done);
  ASSERT_INT(res.status, ==, 0);
  ASSERT_STR(th_s(res.json, "status"), "ok");
  for (i = 0; i < t.nevents; i++)
    if (t.events[i].type == KH_EVENT_STREAM && strcmp(t.events[i].exec_id, res.id) == 0)
      strncat(text, th_s(t.events[i].data, "text"), sizeof(text) - strlen(text) - 1);
  ASSERT_STR(text, "0\n1\n2\n3\n4\n");
  th_result_free(&res);
  th_destroy(&t, id);
  th_fini(&t);
  fx_stop(&f);
}

TEST(remote_server_killed_mid_cell) {
  fx_t f;
  th_t t;
  char id[64], id2[64];
  th_result_t res;
  json_t *a, *r;
  th_event_t *dead = NULL;
  int i;
  fx_start(&f);
  th_init(&t, f.mopts);
  th_create(&t, rmode, id);
  ASSERT_INT(th_submit(&t, id, "import time\nprint('up', flush=True)\ntime.sleep(30)", NULL, &res),
             ==, 0);
  th_wait_events(&t, KH_EVENT_STREAM, res.id, 1);
  json_decref(fx_cmd(&f, "kill"));
  th_run_until(&t, &res.done);
  ASSERT_ERR(res.status, KH_EKERNELDEAD);
  for (i = 0; i < t.nevents; i++)
    if (t.events[i].type == KH_EVENT_STATUS &&
        strcmp(th_s(t.events[i].data, "execution_state"), "dead") == 0)
      dead = &t.events[i];
  ASSERT(dead != NULL);
  ASSERT(th_s(dead->data, "reason.message") != NULL);
  th_result_free(&res);
  a = fx_cmd(&f, "start");
  json_decref(a);
  th_create(&t, rmode, id2);
  r = th_exec(&t, id2, "1+1", &res);
  ASSERT_STR(th_s(r, "result.data.text/plain"), "2");
  th_result_free(&res);
  th_destroy(&t, id2);
  th_destroy(&t, id);
  th_fini(&t);
  fx_stop(&f);
}

static void host_fn(kh_manager_t *m, const char *kernel_id, const char *name, const char *args,
                    size_t len, const kh_buffer_t *b, size_t nb, kh_hostcall_t *call, void *data) {
  (void)m, (void)kernel_id, (void)name, (void)args, (void)len, (void)b, (void)nb, (void)data;
  kh_hostcall_error(call, "never called");
}

/* Creates a kernel that must fail to start with code; its message must name `mention`. */
static void create_fails(th_t *t, const char *opts, int code, const char *mention) {
  char id[64];
  int d[2] = {0, 0};
  ASSERT_INT(kh_kernel_create(t->m, opts, id, sizeof(id), on_create_msg, d), ==, 0);
  th_run_until(t, &d[0]);
  ASSERT_ERR(d[1], code);
  ASSERT_CONTAINS(last_create_msg, mention);
}

TEST(remote_options_refused) {
  fx_t f;
  th_t t;
  fx_start(&f);
  th_init(&t, f.mopts);
  /* the kernelspec decides, and Debian's ipykernel one takes no such options */
  create_fails(&t, "{\"mode\":\"remote\",\"permissions\":{\"read\":[\"/tmp\"]}}", KH_ENOTSUP,
               "permissions");
  ASSERT_CONTAINS(last_create_msg, "kernelspec \"python3\"");
  create_fails(&t, "{\"mode\":\"remote\",\"filesystem\":{\"enabled\":true,\"root\":\"/tmp\"}}",
               KH_ENOTSUP, "filesystem");
  create_fails(&t, "{\"mode\":\"remote\",\"limits\":{\"memoryBytes\":1000000}}", KH_ENOTSUP,
               "limits");
  {
    json_t *a = fx_cmd(&f, "kernels");
    ASSERT_INT(json_array_size(json_object_get(a, "kernels")), ==, 0);
    json_decref(a);
  }
  /* what no remote kernel can honour is refused at once */
  th_create_error(&t, "{\"mode\":\"remote\",\"autoRestart\":true}", KH_ENOTSUP, "autoRestart");
  th_create_error(&t, "{\"mode\":\"remote\",\"thread\":\"host\"}", KH_ENOTSUP, "thread");
  th_create_error(&t, "{\"mode\":\"remote\",\"figureFormats\":[\"svg\"]}", KH_ENOTSUP,
                  "figureFormats");
  th_create_error(&t, "{\"mode\":\"remote\",\"remoteId\":\"x\",\"cwd\":\"/tmp\"}", KH_ENOTSUP,
                  "runs already");
  th_create_error(&t, "{\"mode\":\"worker\",\"remoteId\":\"abc\"}", KH_ENOTSUP, "remoteId");
  th_create_error(&t, "{\"mode\":\"remote\",\"kernelName\":3}", KH_EOPTION, "kernelName");
  th_create_error(&t, "{\"mode\":\"remote\",\"permissions\":{\"nope\":1}}", KH_EOPTION, "nope");
  /* host functions: a remote kernel has no way back into this process */
  {
    char id[64];
    int d[2] = {0, 0};
    ASSERT_INT(kh_kernel_create(t.m, rmode, id, sizeof(id), th_done_cb, d), ==, 0);
    ASSERT_ERR(kh_kernel_expose(t.m, id, "f", host_fn, NULL), KH_ENOTSUP);
    ASSERT_CONTAINS(kh_manager_errmsg(t.m), "remote");
    th_run_until(&t, &d[0]);
    ASSERT_INT(d[1], ==, 0);
    th_destroy(&t, id);
  }
  th_fini(&t);
  fx_stop(&f);
  ASSERT_ERR(kh_manager_new(&t.m, uv_default_loop(), "{\"gateway\":{\"url\":\"ftp://x\"}}"),
             KH_EOPTION);
  ASSERT_CONTAINS(kh_manager_errmsg(NULL), "gateway.url");
  ASSERT_ERR(kh_manager_new(&t.m, uv_default_loop(), "{\"gateway\":{\"url\":\"http://x\",\"nope\":1}}"),
             KH_EOPTION);
  ASSERT_CONTAINS(kh_manager_errmsg(NULL), "nope");
  ASSERT_ERR(kh_manager_new(&t.m, uv_default_loop(),
                            "{\"gateway\":{\"url\":\"http://x\",\"headers\":{\"X\":\"a\\r\\nB: c\"}}}"),
             KH_EOPTION);
  ASSERT_ERR(kh_manager_new(&t.m, uv_default_loop(), "{\"gateway\":{\"token\":\"t\"}}"), KH_EOPTION);
  ASSERT_CONTAINS(kh_manager_errmsg(NULL), "gateway.url");
}

TEST(remote_options_passed_to_kernelhost) {
  fx_t f;
  th_t t;
  char id[64], *info;
  th_result_t res;
  json_t *j, *a, *opts, *r;
  fx_start_with(&f, 1);
  th_init(&t, f.mopts);
  th_create(&t,
            "{\"mode\":\"remote\",\"kernelName\":\"kernelhost\",\"permissions\":{\"read\":[\"/tmp\"]},"
            "\"limits\":{\"memoryBytes\":2000000000}}",
            id);
  /* said in the kernel's info: what went to the kernelspec, in which variable */
  info = kh_kernel_info(t.m, id);
  j = json_loads(info, 0, NULL);
  ASSERT_STR(th_s(j, "remote.passed_options[0]"), "permissions");
  ASSERT_STR(th_s(j, "remote.passed_options[1]"), "limits");
  ASSERT_STR(th_s(j, "remote.passed_in"), "KERNEL_KERNELHOST_OPTIONS");
  json_decref(j);
  kh_free(info);
  /* and in the create request, where a gateway that passes KERNEL_* on (Enterprise Gateway)
   * hands it to kernelhost-jupyter (Jupyter Server 1.23 drops env: enforcing them is
   * jupyter/kernelspec's jupyter_kernelspec_options_from_request) */
  a = fx_cmd(&f, "posts");
  opts = json_loads(th_s(json_array_get(json_object_get(a, "posts"), 0),
                         "env.KERNEL_KERNELHOST_OPTIONS"), 0, NULL);
  ASSERT_STR(th_s(opts, "permissions.read[0]"), "/tmp");
  ASSERT_INT(th_i(opts, "limits.memory_bytes"), ==, 2000000000);
  json_decref(opts);
  json_decref(a);
  /* the remote kernel is a kernelhost kernel */
  r = th_exec(&t, id, "import kernelhost; 6 * 7", &res);
  ASSERT_STR(th_s(r, "result.data.text/plain"), "42");
  th_result_free(&res);
  th_destroy(&t, id);
  th_fini(&t);
  fx_stop(&f);
}

TEST(remote_no_gateway) {
  th_t t;
  unsetenv("KERNELHOST_GATEWAY_URL");
  unsetenv("KERNELHOST_GATEWAY_TOKEN");
  th_init(&t, NULL);
  th_create_error(&t, rmode, KH_ENOTSUP, "gateway");
  th_fini(&t);
}

TEST(remote_complete) {
  fx_t f;
  th_t t;
  char id[64];
  th_result_t a = {0}, b = {0}, c = {0};
  json_t *e;
  size_t i;
  int found = 0;
  fx_start(&f);
  th_init(&t, f.mopts);
  th_create(&t, rmode, id);
  ASSERT_INT(kh_kernel_complete(t.m, id, "import o", 8, 8, 0, on_answer, &a), ==, 0);
  th_run_until(&t, &a.done);
  ASSERT_INT(a.status, ==, 0);
  json_array_foreach(th_get(a.json, "matches"), i, e) if (strcmp(json_string_value(e), "os") == 0) found = 1;
  ASSERT(found);
  ASSERT_INT(kh_kernel_is_complete(t.m, id, "for i in x:", 11, 0, on_answer, &b), ==, 0);
  th_run_until(&t, &b.done);
  ASSERT_INT(b.status, ==, 0);
  ASSERT_STR(th_s(b.json, "status"), "incomplete");
  ASSERT_INT(kh_kernel_inspect(t.m, id, "len", 3, 3, 0, 0, on_answer, &c), ==, 0);
  th_run_until(&t, &c.done);
  ASSERT_INT(c.status, ==, 0);
  ASSERT(json_is_true(th_get(c.json, "found")));
  th_result_free(&a);
  th_result_free(&b);
  th_result_free(&c);
  th_destroy(&t, id);
  th_fini(&t);
  fx_stop(&f);
}

TEST(remote_env_passed_in_create) {
  fx_t f;
  th_t t;
  char id[64];
  json_t *a, *post;
  fx_start(&f);
  th_init(&t, f.mopts);
  th_create(&t, "{\"mode\":\"remote\",\"kernelName\":\"python3\",\"env\":{\"KERNEL_USERNAME\":\"alice\"}}",
            id);
  a = fx_cmd(&f, "posts");
  post = json_array_get(json_object_get(a, "posts"), 0);
  ASSERT_STR(th_s(post, "name"), "python3");
  ASSERT_STR(th_s(post, "env.KERNEL_USERNAME"), "alice");
  json_decref(a);
  th_destroy(&t, id);
  th_fini(&t);
  fx_stop(&f);
}

TEST(remote_kernel_culled) {
  fx_t f;
  th_t t;
  char id[64], rid[256], cmd[300];
  th_event_t *e;
  fx_start(&f);
  th_init(&t, f.mopts);
  th_create(&t, rmode, id);
  remote_id_of(&t, id, rid, sizeof(rid));
  snprintf(cmd, sizeof(cmd), "delete %s", rid);
  json_decref(fx_cmd(&f, cmd));
  th_wait_status(&t, "", "dead");
  e = th_find(&t, KH_EVENT_STATUS, NULL, 0);
  for (int i = 0; i < t.nevents; i++)
    if (t.events[i].type == KH_EVENT_STATUS &&
        strcmp(th_s(t.events[i].data, "execution_state"), "dead") == 0)
      e = &t.events[i];
  ASSERT_CONTAINS(th_s(e->data, "reason.message"), "gone");
  ASSERT_ERR(kh_kernel_execute(t.m, id, "1", 1, NULL, NULL, 0, th_never_cb, NULL), KH_EKERNELDEAD);
  th_destroy(&t, id);
  th_fini(&t);
  fx_stop(&f);
}

TEST(remote_comm_buffers) {
  fx_t f;
  th_t t;
  char id[64];
  th_result_t res;
  th_event_t *e;
  kh_buffer_t b = {"/buffers/0", "abc", 3};
  static const char open[] = "{\"comm_id\":\"c1\",\"target_name\":\"echo\",\"data\":{}}";
  static const char msg[] = "{\"comm_id\":\"c1\",\"data\":{\"x\":1},\"buffers\":[null]}";
  fx_start(&f);
  th_init(&t, f.mopts);
  th_create(&t, rmode, id);
  th_exec(&t, id,
          "def _echo(comm, msg):\n"
          "    @comm.on_msg\n"
          "    def _r(m):\n"
          "        comm.send({'got': m['content']['data']}, buffers=[bytes(x)[::-1] for x in m['buffers']])\n"
          "get_ipython().kernel.comm_manager.register_target('echo', _echo)",
          &res);
  ASSERT_STR(th_s(res.json, "status"), "ok");
  th_result_free(&res);
  ASSERT_INT(kh_kernel_comm_send(t.m, id, "comm_open", open, strlen(open), NULL, 0), ==, 0);
  ASSERT_INT(kh_kernel_comm_send(t.m, id, "comm_msg", msg, strlen(msg), &b, 1), ==, 0);
  th_wait_events(&t, KH_EVENT_COMM_MSG, NULL, 1);
  e = th_find(&t, KH_EVENT_COMM_MSG, NULL, 0);
  ASSERT_INT(th_i(e->data, "data.got.x"), ==, 1);
  ASSERT_STR(th_s(e->data, "buffers[0].$binary"), "636261");
  th_destroy(&t, id);
  th_fini(&t);
  fx_stop(&f);
}

TEST(remote_kernel_crash_restarted) {
  fx_t f;
  th_t t;
  char id[64];
  th_result_t res;
  json_t *r;
  int i, restarting = 0;
  fx_start(&f);
  th_init(&t, f.mopts);
  th_create(&t, rmode, id);
  th_exec(&t, id, "x = 1", &res);
  th_result_free(&res);
  /* the kernel's process dies; the server's restarter starts a new one and says so */
  ASSERT_INT(th_submit(&t, id, "import os; os._exit(1)", NULL, &res), ==, 0);
  th_run_until(&t, &res.done);
  ASSERT_ERR(res.status, KH_EKERNELDEAD);
  th_result_free(&res);
  for (i = 0; i < t.nevents; i++)
    if (t.events[i].type == KH_EVENT_STATUS &&
        strcmp(th_s(t.events[i].data, "execution_state"), "restarting") == 0)
      restarting = 1;
  ASSERT(restarting);
  r = th_exec(&t, id, "'x' in globals()", &res); /* waits for the fresh kernel */
  ASSERT_STR(th_s(r, "result.data.text/plain"), "False");
  ASSERT_INT(th_i(r, "execution_count"), ==, 1);
  th_result_free(&res);
  th_destroy(&t, id);
  th_fini(&t);
  fx_stop(&f);
}

TEST(remote_execute_options) {
  fx_t f;
  th_t t;
  char id[64];
  th_result_t res;
  kh_execute_options_t o;
  json_t *r;
  fx_start(&f);
  th_init(&t, f.mopts);
  th_create(&t, rmode, id);
  /* silent: no execute_result, the counter stays */
  kh_execute_options_init(&o);
  o.silent = 1;
  ASSERT_INT(th_submit(&t, id, "y = 41\ny + 1", &o, &res), ==, 0);
  th_run_until(&t, &res.done);
  ASSERT_INT(res.status, ==, 0);
  ASSERT(th_get(res.json, "result") == NULL);
  ASSERT(th_find(&t, KH_EVENT_EXECUTE_RESULT, res.id, 0) == NULL);
  th_result_free(&res);
  r = th_exec(&t, id, "y", &res);
  ASSERT_INT(th_i(r, "execution_count"), ==, 1);
  ASSERT_STR(th_s(r, "result.data.text/plain"), "41");
  th_result_free(&res);
  /* allow_stdin off: input() raises, no input_request */
  kh_execute_options_init(&o);
  o.allow_stdin = 0;
  ASSERT_INT(th_submit(&t, id, "input('?')", &o, &res), ==, 0);
  th_run_until(&t, &res.done);
  ASSERT_STR(th_s(res.json, "error.ename"), "StdinNotImplementedError");
  ASSERT(th_find(&t, KH_EVENT_INPUT_REQUEST, res.id, 0) == NULL);
  th_result_free(&res);
  /* timeout_ms: the core interrupts the remote cell */
  kh_execute_options_init(&o);
  o.timeout_ms = 1000;
  ASSERT_INT(th_submit(&t, id, "import time; time.sleep(30)", &o, &res), ==, 0);
  th_run_until(&t, &res.done);
  ASSERT_STR(th_s(res.json, "error.ename"), "KeyboardInterrupt");
  th_result_free(&res);
  th_destroy(&t, id);
  th_fini(&t);
  fx_stop(&f);
}

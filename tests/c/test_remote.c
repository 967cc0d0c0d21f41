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

static void fx_start(fx_t *f) {
  int to[2], from[2];
  char line[4096];
  memset(f, 0, sizeof(*f));
  if (pipe(to) != 0 || pipe(from) != 0) FAIL("pipe");
  f->pid = fork();
  if (f->pid == 0) {
    dup2(to[0], 0);
    dup2(from[1], 1);
    close(to[1]);
    close(from[0]);
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
           "{\"gateway\":{\"url\":\"%s\",\"token\":\"%s\",\"reconnectTimeout\":3000}}", f->url,
           f->token);
}

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

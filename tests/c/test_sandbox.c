/* test_sandbox.c: the worker sandbox end to end through the public API (DESIGN.md §7, issue 7):
 * kh_kernel_create with permissions / filesystem / limits / sandbox, then real attempts to break
 * each grant from inside the kernel, through Python and through ctypes calling libc directly.
 * tests/security/ attacks the same layers more widely without the worker; these prove the
 * worker applies them (cold, claimed from the pool, after a restart). Worker mode always. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kh_test.h"

/* A scratch tree for one test: secret.txt, r/data.txt (readable), w/ (writable), root/ (a
 * filesystem root holding hello.txt); mnt/ws is where the sandbox mounts root. */
typedef struct {
  char dir[256];
  char secret[300], r[300], w[300], root[300], mp[300];
} tree_t;

static void put_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (f == NULL) FAIL("cannot create %s: %s", path, strerror(errno));
  fputs(text, f);
  fclose(f);
}

static void tree_init(tree_t *t) {
  char p[400];
  snprintf(t->dir, sizeof(t->dir), "/tmp/kh-sbx-XXXXXX");
  if (mkdtemp(t->dir) == NULL) FAIL("mkdtemp: %s", strerror(errno));
  snprintf(t->secret, sizeof(t->secret), "%s/secret.txt", t->dir);
  snprintf(t->r, sizeof(t->r), "%s/r", t->dir);
  snprintf(t->w, sizeof(t->w), "%s/w", t->dir);
  snprintf(t->root, sizeof(t->root), "%s/root", t->dir);
  snprintf(t->mp, sizeof(t->mp), "%s/mnt/ws", t->dir);
  put_file(t->secret, "TOP-SECRET");
  mkdir(t->r, 0755);
  mkdir(t->w, 0755);
  mkdir(t->root, 0755);
  snprintf(p, sizeof(p), "%s/data.txt", t->r);
  put_file(p, "readable");
  snprintf(p, sizeof(p), "%s/hello.txt", t->root);
  put_file(p, "hello from root");
}

static void tree_free(tree_t *t) {
  char cmd[400];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->dir);
  if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", t->dir);
}

static const char *sopts(const char *extra) {
  static char buf[8][4096];
  static int slot;
  char *b = buf[slot++ % 8];
  snprintf(b, 4096, "{\"mode\":\"worker\"%s%s}", extra && *extra ? "," : "", extra ? extra : "");
  return b;
}

/* The kernel's info object (owned). */
static json_t *info_of(th_t *t, const char *id) {
  char *s = kh_kernel_info(t->m, id);
  json_t *j = s ? json_loads(s, 0, NULL) : NULL;
  kh_free(s);
  ASSERT(j != NULL);
  return j;
}

/* Runs code that must succeed (status ok); prints the error otherwise. Returns the reply. */
static json_t *exec_ok(th_t *t, const char *id, const char *code, th_result_t *r) {
  json_t *j = th_exec(t, id, code, r);
  if (strcmp(th_s(j, "status"), "ok") != 0) {
    char *s = json_dumps(th_get(j, "error"), JSON_ENCODE_ANY);
    FAIL("cell failed: %s\n--- code:\n%s", s ? s : "?", code);
  }
  return j;
}

/* Runs code that must end in exception `ename`, reported as an execute_error event too. */
static void exec_error(th_t *t, const char *id, const char *code, const char *ename) {
  th_result_t r;
  th_event_t *e;
  json_t *j = th_exec(t, id, code, &r);
  ASSERT_STR(th_s(j, "status"), "error");
  ASSERT_STR(th_s(j, "error.ename"), ename);
  e = th_find(t, KH_EVENT_EXECUTE_ERROR, r.id, 0);
  ASSERT(e != NULL);
  ASSERT_STR(th_s(e->data, "ename"), ename);
  th_result_free(&r);
}

/* Everything the cell wrote to a stream, from the reply's outputs (owned, malloc). */
static char *stream_text(json_t *reply) {
  json_t *outs = th_get(reply, "outputs"), *o;
  size_t i, len = 0;
  char *buf = calloc(1, 1);
  json_array_foreach(outs, i, o) {
    const char *s;
    if (strcmp(json_string_value(json_object_get(o, "type")), "stream") != 0) continue;
    s = json_string_value(json_object_get(json_object_get(o, "data"), "text"));
    if (s == NULL) continue;
    buf = realloc(buf, len + strlen(s) + 1);
    memcpy(buf + len, s, strlen(s) + 1);
    len += strlen(s);
  }
  return buf;
}

static size_t count_char(const char *s, char c) {
  size_t n = 0;
  for (; *s; s++) n += *s == c;
  return n;
}

/* The attacks on reading: Python's open (audit hook: PermissionError naming the grant), and
 * libc's open through ctypes, which only the OS layer (Landlock) can stop. */
static const char read_attack[] =
    "import ctypes, errno\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "assert open(R + '/data.txt').read() == 'readable'\n"
    "fd = libc.open(SECRET.encode(), 0)\n"
    "assert fd == -1 and ctypes.get_errno() in (errno.EACCES, errno.EPERM), (fd, "
    "ctypes.get_errno())\n"
    "open(SECRET).read()\n";

static void read_denied_in(th_t *t, const char *id, const tree_t *tr) {
  char code[2048];
  snprintf(code, sizeof(code), "R = '%s'\nSECRET = '%s'\n%s", tr->r, tr->secret, read_attack);
  exec_error(t, id, code, "PermissionError");
}

TEST(sandbox_read_denied) {
  th_t t;
  tree_t tr;
  char id[64], extra[1024];
  json_t *info;
  tree_init(&tr);
  th_init(&t, NULL);
  snprintf(extra, sizeof(extra), "\"permissions\": {\"read\": [\"%s\"]}", tr.r);
  th_create(&t, sopts(extra), id);
  read_denied_in(&t, id, &tr);
  /* The kernel's info names the mode and the layers in force. */
  info = info_of(&t, id);
  ASSERT_STR(th_s(info, "sandbox.mode"), "strict");
  ASSERT(json_is_true(th_get(info, "sandbox.layers.landlock")));
  ASSERT(json_is_true(th_get(info, "sandbox.layers.no_new_privs")));
  ASSERT_INT(json_array_size(th_get(info, "sandbox.missing")), ==, 0);
  ASSERT(json_array_size(th_get(info, "sandbox.runtime_read")) > 0);
  json_decref(info);
  th_fini(&t);
  tree_free(&tr);
}

TEST(sandbox_write_denied) {
  th_t t;
  tree_t tr;
  char id[64], extra[1024], code[2048], path[400];
  th_result_t r;
  struct stat st;
  tree_init(&tr);
  th_init(&t, NULL);
  snprintf(extra, sizeof(extra), "\"permissions\": {\"read\": [\"%s\"], \"write\": [\"%s\"]}",
           tr.dir, tr.w);
  th_create(&t, sopts(extra), id);
  /* Allowed: a write inside the grant lands on the host. */
  snprintf(code, sizeof(code), "open('%s/ok.txt', 'w').write('written')", tr.w);
  exec_ok(&t, id, code, &r);
  th_result_free(&r);
  snprintf(path, sizeof(path), "%s/ok.txt", tr.w);
  ASSERT_INT(stat(path, &st), ==, 0);
  /* Denied: readable but not writable (the secret), a new file beside it, via libc too. */
  snprintf(code, sizeof(code),
           "import ctypes, errno, os\n"
           "libc = ctypes.CDLL(None, use_errno=True)\n"
           "assert open('%s').read() == 'TOP-SECRET'\n"
           "fd = libc.open(b'%s/new.txt', os.O_WRONLY | os.O_CREAT, 0o644)\n"
           "assert fd == -1 and ctypes.get_errno() in (errno.EACCES, errno.EPERM), fd\n"
           "fd = libc.open(b'%s', os.O_WRONLY | os.O_TRUNC)\n"
           "assert fd == -1 and ctypes.get_errno() in (errno.EACCES, errno.EPERM), fd\n"
           "open('%s/new.txt', 'w')\n",
           tr.secret, tr.dir, tr.secret, tr.dir);
  exec_error(&t, id, code, "PermissionError");
  snprintf(path, sizeof(path), "%s/new.txt", tr.dir);
  ASSERT(stat(path, &st) != 0);
  {
    FILE *f = fopen(tr.secret, "r");
    char buf[32] = "";
    ASSERT(f != NULL);
    ASSERT(fgets(buf, sizeof(buf), f) != NULL);
    fclose(f);
    ASSERT_STR(buf, "TOP-SECRET");
  }
  th_fini(&t);
  tree_free(&tr);
}

TEST(sandbox_mount_visible) {
  th_t t;
  tree_t tr;
  char id[64], extra[1024], code[2048], path[400];
  th_result_t r;
  struct stat st;
  FILE *f;
  char buf[64] = "";
  tree_init(&tr);
  th_init(&t, NULL);
  snprintf(extra, sizeof(extra),
           "\"filesystem\": {\"root\": \"%s\", \"mountPoint\": \"%s\"}, \"permissions\": {}",
           tr.root, tr.mp);
  th_create(&t, sopts(extra), id);
  /* The kernel starts at the mount point, sees root's files there, and writes land in root. */
  snprintf(code, sizeof(code),
           "import os\n"
           "assert os.getcwd() == '%s', os.getcwd()\n"
           "assert open('hello.txt').read() == 'hello from root'\n"
           "open('made-inside.txt', 'w').write('from the kernel')\n"
           "os.mkdir('sub')\n"
           "sorted(os.listdir('.'))",
           tr.mp);
  json_t *j = exec_ok(&t, id, code, &r);
  ASSERT_STR(th_s(j, "result.data.text/plain"), "['hello.txt', 'made-inside.txt', 'sub']");
  th_result_free(&r);
  snprintf(path, sizeof(path), "%s/made-inside.txt", tr.root);
  f = fopen(path, "r");
  ASSERT(f != NULL);
  ASSERT(fgets(buf, sizeof(buf), f) != NULL);
  fclose(f);
  ASSERT_STR(buf, "from the kernel");
  /* The mount is the worker's own: the host's mount point stays an empty directory. */
  snprintf(path, sizeof(path), "%s/hello.txt", tr.mp);
  ASSERT(stat(path, &st) != 0);
  /* Nothing outside the mount: the host tree around it, and /etc. */
  snprintf(code, sizeof(code), "open('%s').read()", tr.secret);
  exec_error(&t, id, code, "PermissionError");
  snprintf(code, sizeof(code),
           "import ctypes, errno\n"
           "libc = ctypes.CDLL(None, use_errno=True)\n"
           "fd = libc.open(b'/etc/passwd', 0)\n"
           "assert fd == -1 and ctypes.get_errno() in (errno.EACCES, errno.EPERM), fd\n"
           "open('../../root/hello.txt').read()\n");
  exec_error(&t, id, code, "PermissionError");
  th_fini(&t);
  tree_free(&tr);
}

/* A loopback TCP listener on an ephemeral port (the kernel's connects queue in its backlog). */
static int listener(int *port) {
  struct sockaddr_in a;
  socklen_t n = sizeof(a);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT(fd >= 0);
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_INT(bind(fd, (struct sockaddr *)&a, sizeof(a)), ==, 0);
  ASSERT_INT(listen(fd, 16), ==, 0);
  ASSERT_INT(getsockname(fd, (struct sockaddr *)&a, &n), ==, 0);
  *port = ntohs(a.sin_port);
  return fd;
}

TEST(sandbox_net_denied) {
  th_t t;
  char id[64], extra[512], code[3072];
  th_result_t r;
  int pa, pb;
  int la = listener(&pa), lb = listener(&pb);
  th_init(&t, NULL);
  snprintf(extra, sizeof(extra), "\"permissions\": {\"net\": [\"127.0.0.1:%d\"]}", pa);
  th_create(&t, sopts(extra), id);
  /* Allowed: the listed port. */
  snprintf(code, sizeof(code),
           "import socket\n"
           "s = socket.create_connection(('127.0.0.1', %d))\n"
           "s.close()",
           pa);
  exec_ok(&t, id, code, &r);
  th_result_free(&r);
  /* Denied: another port on the same host, by libc's connect (Landlock) and by Python. */
  snprintf(code, sizeof(code),
           "import ctypes, errno, socket, struct\n"
           "libc = ctypes.CDLL(None, use_errno=True)\n"
           "s = socket.socket()\n"
           "addr = struct.pack('=H', socket.AF_INET) + struct.pack('!H', %d) + "
           "socket.inet_aton('127.0.0.1') + bytes(8)\n"
           "rc = libc.connect(s.fileno(), addr, len(addr))\n"
           "assert rc == -1 and ctypes.get_errno() in (errno.EACCES, errno.EPERM), (rc, "
           "ctypes.get_errno())\n"
           "s.close()\n"
           "socket.create_connection(('127.0.0.1', %d))\n",
           pb, pb);
  exec_error(&t, id, code, "PermissionError");
  /* Unix sockets reach whatever listens at a path: refused unless net is true (seccomp). */
  snprintf(code, sizeof(code),
           "import ctypes, errno, socket\n"
           "libc = ctypes.CDLL(None, use_errno=True)\n"
           "fd = libc.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0)\n"
           "assert fd == -1 and ctypes.get_errno() in (errno.EACCES, errno.EPERM), fd\n"
           "socket.socket(socket.AF_UNIX).connect('/run/whatever.sock')\n");
  exec_error(&t, id, code, "PermissionError");
  th_fini(&t);
  close(la);
  close(lb);
}

TEST(sandbox_run_denied) {
  th_t t;
  char id[64];
  th_init(&t, NULL);
  th_create(&t, sopts("\"permissions\": {\"run\": false}"), id);
  /* libc's execve (seccomp: EPERM), fork + exec from C, then Python's subprocess. */
  exec_error(&t, id,
             "import ctypes, errno, os\n"
             "libc = ctypes.CDLL(None, use_errno=True)\n"
             "argv = (ctypes.c_char_p * 2)(b'/bin/true', None)\n"
             "rc = libc.execve(b'/bin/true', argv, None)\n"
             "assert rc == -1 and ctypes.get_errno() in (errno.EPERM, errno.EACCES), rc\n"
             "import subprocess\n"
             "subprocess.run(['/bin/true'])\n",
             "PermissionError");
  exec_error(&t, id, "import os\nos.system('true')", "PermissionError");
  exec_error(&t, id, "import os\nos.execv('/bin/true', ['true'])", "PermissionError");
  th_fini(&t);
}

TEST(sandbox_env_filtered) {
  th_t t;
  char id[64];
  th_result_t r;
  json_t *j;
  setenv("KH_TEST_SECRET", "s3cret-value", 1);
  setenv("KH_TEST_GRANTED", "granted-value", 1);
  th_init(&t, NULL);
  th_create(&t,
            sopts("\"permissions\": {\"env\": [\"KH_TEST_GRANTED\"]}, "
                  "\"env\": {\"KH_OWN\": \"own-value\"}"),
            id);
  j = exec_ok(&t, id,
              "import ctypes, os\n"
              "libc = ctypes.CDLL(None)\n"
              "libc.getenv.restype = ctypes.c_char_p\n"
              "assert libc.getenv(b'KH_TEST_SECRET') is None\n"
              "assert b's3cret-value' not in open('/proc/self/environ', 'rb').read()\n"
              "(os.environ.get('KH_TEST_SECRET'), os.environ.get('KH_TEST_GRANTED'),\n"
              " os.environ.get('KH_OWN'), libc.getenv(b'KH_OWN'))",
              &r);
  ASSERT_STR(th_s(j, "result.data.text/plain"),
             "(None, 'granted-value', 'own-value', b'own-value')");
  th_result_free(&r);
  th_fini(&t);
  unsetenv("KH_TEST_SECRET");
  unsetenv("KH_TEST_GRANTED");
}

TEST(sandbox_memory_limit) {
  th_t t;
  char id[64];
  th_result_t r;
  json_t *j;
  th_init(&t, NULL);
  th_create(&t, sopts("\"limits\": {\"memoryBytes\": 1073741824}"), id);
  exec_error(&t, id, "x = bytearray(4 << 30)", "MemoryError");
  /* The kernel survives its MemoryError. */
  j = exec_ok(&t, id, "len(bytearray(1 << 20))", &r);
  ASSERT_STR(th_s(j, "result.data.text/plain"), "1048576");
  th_result_free(&r);
  th_fini(&t);
}

TEST(sandbox_max_output) {
  th_t t;
  char id[64];
  th_result_t r;
  json_t *j;
  char *text;
  th_init(&t, NULL);
  th_create(&t, sopts("\"limits\": {\"maxOutputBytes\": 1000}"), id);
  /* print() (the runtime's streams) and fd 1 (os.write, C code, subprocesses) are both cut. */
  j = exec_ok(&t, id,
              "import os\n"
              "print('Q' * 5000)\n"
              "print('Q' * 5000)\n"
              "os.write(1, b'J' * 5000)\n"
              "os.write(1, b'J' * 5000)\n",
              &r);
  text = stream_text(j);
  ASSERT_CONTAINS(text, "output truncated after 1000");
  ASSERT(count_char(text, 'Q') <= 1000);
  ASSERT(count_char(text, 'Q') >= 900);
  ASSERT(count_char(text, 'J') <= 1000);
  ASSERT(count_char(text, 'J') >= 900);
  free(text);
  th_result_free(&r);
  /* The limit is per cell: the next cell's output comes out whole. */
  j = exec_ok(&t, id, "print('Z' * 500)", &r);
  text = stream_text(j);
  ASSERT_INT(count_char(text, 'Z'), ==, 500);
  ASSERT(strstr(text, "truncated") == NULL);
  free(text);
  th_result_free(&r);
  /* Output the worker does not cut (display_data here) is bounded by the host itself:
   * 4 x maxOutputBytes + 64 KiB of events per cell, then one marker, and the reply comes. */
  j = exec_ok(&t, id, "for i in range(300):\n    display('d' * 1000)\n", &r);
  text = stream_text(j);
  ASSERT_CONTAINS(text, "output cut by the host");
  free(text);
  ASSERT(json_array_size(th_get(j, "outputs")) < 100);
  th_result_free(&r);
  th_fini(&t);
}

TEST(sandbox_pool_claim) {
  th_t t;
  tree_t tr;
  char a[64], b[64], extra[1024], code[1024];
  th_result_t r;
  json_t *info, *j;
  tree_init(&tr);
  th_init(&t, "{\"pool\": {\"size\": 1}}");
  /* A warm worker claimed for a sandboxed kernel gets the sandbox exactly like a cold one. */
  snprintf(extra, sizeof(extra), "\"permissions\": {\"read\": [\"%s\"]}", tr.r);
  th_create(&t, sopts(extra), a);
  info = info_of(&t, a);
  ASSERT(json_is_true(th_get(info, "pooled")));
  ASSERT(json_is_true(th_get(info, "sandbox.layers.landlock")));
  json_decref(info);
  read_denied_in(&t, a, &tr);
  /* The refilled pool serves an unconfined kernel next: nothing carried over. */
  th_create(&t, sopts(""), b);
  info = info_of(&t, b);
  ASSERT(json_is_true(th_get(info, "pooled")));
  ASSERT(th_get(info, "sandbox") == NULL);
  json_decref(info);
  snprintf(code, sizeof(code), "open('%s').read()", tr.secret);
  j = exec_ok(&t, b, code, &r);
  ASSERT_STR(th_s(j, "result.data.text/plain"), "'TOP-SECRET'");
  th_result_free(&r);
  th_fini(&t);
  tree_free(&tr);
}

static void on_restarted(kh_manager_t *m, const char *id, int status, const char *err, void *d) {
  int *done = d;
  (void)m;
  (void)id;
  if (status != 0) FAIL("restart failed: %s", err ? err : "?");
  *done = 1;
}

TEST(sandbox_restart_confined) {
  th_t t;
  tree_t tr;
  char id[64], extra[1024];
  int done = 0;
  tree_init(&tr);
  th_init(&t, NULL);
  snprintf(extra, sizeof(extra), "\"permissions\": {\"read\": [\"%s\"]}", tr.r);
  th_create(&t, sopts(extra), id);
  ASSERT_INT(kh_kernel_restart(t.m, id, on_restarted, &done), ==, 0);
  th_run_until(&t, &done);
  read_denied_in(&t, id, &tr);
  th_fini(&t);
  tree_free(&tr);
}

TEST(sandbox_interrupt_works) {
  th_t t;
  char id[64];
  th_result_t r;
  th_init(&t, NULL);
  th_create(&t, sopts("\"permissions\": {}, \"limits\": {\"cpuSeconds\": 60}"), id);
  ASSERT_INT(
      th_submit(&t, id, "import time\nprint('sleeping', flush=True)\ntime.sleep(100)", NULL, &r),
      ==, 0);
  th_wait_events(&t, KH_EVENT_STREAM, r.id, 1);
  ASSERT_INT(kh_kernel_interrupt(t.m, id), ==, 0);
  th_run_until(&t, &r.done);
  ASSERT_INT(r.status, ==, 0);
  ASSERT_STR(th_s(r.json, "error.ename"), "KeyboardInterrupt");
  th_result_free(&r);
  th_fini(&t);
}

TEST(sandbox_strict_refuses) {
  th_t t;
  char id[64];
  int created[2] = {0, 0};
  json_t *info;
  /* Read once per process by the probe: set before the first sandboxed kernel. */
  setenv("KH_SANDBOX_PRETEND_MISSING", "landlock", 1);
  th_init(&t, NULL);
  /* strict (the default): creation fails at once, naming what is missing; no kernel. */
  ASSERT_ERR(
      kh_kernel_create(t.m, sopts("\"permissions\": {}"), id, sizeof(id), th_done_cb, created),
      KH_ENOTSUP);
  ASSERT_CONTAINS(kh_manager_errmsg(t.m), "Landlock");
  ASSERT_INT(created[0], ==, 0);
  ASSERT_INT(kh_manager_kernel_count(t.m), ==, 0);
  /* best-effort runs with what is there and says what is not. */
  th_create(&t, sopts("\"permissions\": {}, \"sandbox\": \"best-effort\""), id);
  info = info_of(&t, id);
  ASSERT_STR(th_s(info, "sandbox.mode"), "best-effort");
  ASSERT(json_is_false(th_get(info, "sandbox.layers.landlock")));
  ASSERT(json_array_size(th_get(info, "sandbox.missing")) > 0);
  json_decref(info);
  th_fini(&t);
  unsetenv("KH_SANDBOX_PRETEND_MISSING");
}

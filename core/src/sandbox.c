/* sandbox.c: OS-enforced permissions, mounts and limits for worker kernels (DESIGN.md §7). The
 * host turns a kernel's options into a plan and checks that this system can enforce it
 * (kh__sandbox_new); the worker applies the plan to itself while still single-threaded
 * (kh__sandbox_apply): namespaces, the bind mount, rlimits, env, Landlock, seccomp. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <seccomp.h>

#include "internal.h"

extern char **environ;

/* --- Landlock's UAPI, spelled out: Debian 12's headers stop at ABI 2, the kernel may be newer */

#define LL_CREATE_RULESET_VERSION (1U << 0)
#define LL_RULE_PATH_BENEATH 1
#define LL_RULE_NET_PORT 2

#define LL_FS_EXECUTE (1ULL << 0)
#define LL_FS_WRITE_FILE (1ULL << 1)
#define LL_FS_READ_FILE (1ULL << 2)
#define LL_FS_READ_DIR (1ULL << 3)
#define LL_FS_REMOVE_DIR (1ULL << 4)
#define LL_FS_REMOVE_FILE (1ULL << 5)
#define LL_FS_MAKE_CHAR (1ULL << 6)
#define LL_FS_MAKE_DIR (1ULL << 7)
#define LL_FS_MAKE_REG (1ULL << 8)
#define LL_FS_MAKE_SOCK (1ULL << 9)
#define LL_FS_MAKE_FIFO (1ULL << 10)
#define LL_FS_MAKE_BLOCK (1ULL << 11)
#define LL_FS_MAKE_SYM (1ULL << 12)
#define LL_FS_REFER (1ULL << 13)           /* ABI 2 */
#define LL_FS_TRUNCATE (1ULL << 14)        /* ABI 3 */
#define LL_FS_IOCTL_DEV (1ULL << 15)       /* ABI 5 */
#define LL_NET_BIND_TCP (1ULL << 0)        /* ABI 4 */
#define LL_NET_CONNECT_TCP (1ULL << 1)     /* ABI 4 */
#define LL_SCOPE_ABSTRACT_UNIX (1ULL << 0) /* ABI 6 */
#define LL_SCOPE_SIGNAL (1ULL << 1)        /* ABI 6 */

struct ll_ruleset_attr {
  uint64_t handled_access_fs;
  uint64_t handled_access_net;
  uint64_t scoped;
};
struct ll_path_beneath_attr {
  uint64_t allowed_access;
  int32_t parent_fd;
} __attribute__((packed));
struct ll_net_port_attr {
  uint64_t allowed_access;
  uint64_t port;
};

/* Rights that apply to a file (rather than a directory's contents). */
#define LL_FS_FILE_RIGHTS \
  (LL_FS_EXECUTE | LL_FS_WRITE_FILE | LL_FS_READ_FILE | LL_FS_TRUNCATE | LL_FS_IOCTL_DEV)
#define LL_R (LL_FS_READ_FILE | LL_FS_READ_DIR)
#define LL_W                                                                                   \
  (LL_FS_WRITE_FILE | LL_FS_REMOVE_DIR | LL_FS_REMOVE_FILE | LL_FS_MAKE_DIR | LL_FS_MAKE_REG | \
   LL_FS_MAKE_SYM | LL_FS_MAKE_FIFO | LL_FS_REFER | LL_FS_TRUNCATE)

static uint64_t ll_handled_fs(int abi) {
  uint64_t h = (LL_FS_MAKE_SYM << 1) - 1; /* ABI 1: bits 0..12 */
  if (abi >= 2) h |= LL_FS_REFER;
  if (abi >= 3) h |= LL_FS_TRUNCATE;
  if (abi >= 5) h |= LL_FS_IOCTL_DEV;
  return h;
}

/* --- probing what the system offers (once per process) ----------------------------------- */

typedef struct {
  int landlock_abi;      /* 0: none */
  int userns;            /* user + mount namespaces with uid/gid maps work */
  int mountns;           /* a private mount namespace works (with userns, or as root) */
  int netns;             /* a network namespace works */
  int seccomp;           /* libseccomp compiled in and the kernel filters */
  char pids_cgroup[256]; /* a writable pids cgroup directory for workers, "" when none */
  char userns_err[128];
} probe_t;

static probe_t probe_result;
static pthread_once_t probe_once = PTHREAD_ONCE_INIT;

static int write_file(const char *path, const char *s) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  ssize_t n, len = (ssize_t)strlen(s);
  if (fd < 0) return -errno;
  n = write(fd, s, (size_t)len);
  if (n != len) {
    int e = n < 0 ? errno : EIO;
    close(fd);
    return -e;
  }
  close(fd);
  return 0;
}

/* Maps the calling process's ids to themselves in its new user namespace. */
static int write_id_maps(uid_t uid, gid_t gid) {
  char buf[64];
  int rc;
  if ((rc = write_file("/proc/self/setgroups", "deny")) != 0 && rc != -ENOENT) return rc;
  snprintf(buf, sizeof(buf), "%u %u 1\n", (unsigned)uid, (unsigned)uid);
  if ((rc = write_file("/proc/self/uid_map", buf)) != 0) return rc;
  snprintf(buf, sizeof(buf), "%u %u 1\n", (unsigned)gid, (unsigned)gid);
  return write_file("/proc/self/gid_map", buf);
}

/* The probe child: exit 0 when user+mount+net namespaces work, 10 when only mount+net work
 * (root without user namespaces), else 20 + the errno of the failing unshare (capped). */
static int probe_ns_child(uid_t uid, gid_t gid) {
  int e;
  if (unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET) == 0) {
    if (write_id_maps(uid, gid) != 0) _exit(2);
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) _exit(3);
    _exit(0);
  }
  e = errno;
  if (unshare(CLONE_NEWNS | CLONE_NEWNET) == 0 &&
      mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0)
    _exit(10);
  _exit(20 + (e < 100 ? e : 99));
}

static void probe_pids_cgroup(probe_t *p) {
  static const char *const bases[] = {"/sys/fs/cgroup/pids", "/sys/fs/cgroup",
                                      "/sys/fs/cgroup/unified", NULL};
  const char *const *b;
  char dir[200], probe[256], f[300];
  for (b = bases; *b; b++) {
    struct stat st;
    snprintf(dir, sizeof(dir), "%s/kernelhost", *b);
    snprintf(f, sizeof(f), "%s/cgroup.procs", *b);
    if (stat(f, &st) != 0) continue;
    snprintf(f, sizeof(f), "%s/cgroup.subtree_control", *b);
    write_file(f, "+pids"); /* cgroup v2; absent (and harmless) in v1 */
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) continue;
    snprintf(f, sizeof(f), "%s/cgroup.subtree_control", dir);
    write_file(f, "+pids");
    snprintf(probe, sizeof(probe), "%s/probe-%d", dir, (int)getpid());
    if (mkdir(probe, 0755) != 0 && errno != EEXIST) continue;
    snprintf(f, sizeof(f), "%s/pids.max", probe);
    if (access(f, W_OK) == 0) snprintf(p->pids_cgroup, sizeof(p->pids_cgroup), "%s", dir);
    rmdir(probe);
    if (p->pids_cgroup[0]) return;
  }
}

/* Whether the comma-separated list holds word. */
static int has_token(const char *list, const char *word) {
  size_t n = strlen(word);
  const char *p = list;
  while ((p = strstr(p, word)) != NULL) {
    if ((p == list || p[-1] == ',') && (p[n] == '\0' || p[n] == ',')) return 1;
    p += n;
  }
  return 0;
}

static void probe_run(void) {
  probe_t *p = &probe_result;
  long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LL_CREATE_RULESET_VERSION);
  pid_t pid;
  int st = 0;
  p->landlock_abi = abi > 0 ? (int)abi : 0;
  p->seccomp = prctl(PR_GET_SECCOMP, 0, 0, 0, 0) >= 0;
  pid = fork();
  if (pid == 0) probe_ns_child(getuid(), getgid());
  if (pid < 0) {
    snprintf(p->userns_err, sizeof(p->userns_err), "fork failed: %s", strerror(errno));
  } else {
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
      p->userns = p->mountns = p->netns = 1;
    } else if (WIFEXITED(st) && WEXITSTATUS(st) == 10) {
      p->mountns = p->netns = 1;
      snprintf(p->userns_err, sizeof(p->userns_err), "user namespaces are not available");
    } else if (WIFEXITED(st) && WEXITSTATUS(st) >= 20) {
      snprintf(p->userns_err, sizeof(p->userns_err), "unshare(CLONE_NEWUSER) failed: %s",
               strerror(WEXITSTATUS(st) - 20));
    } else {
      snprintf(p->userns_err, sizeof(p->userns_err), "user namespace set-up failed (step %d)",
               WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    }
  }
  if (geteuid() == 0) probe_pids_cgroup(p);
  /* Testing aid (tests/security): pretend layers are missing, to check that "strict" refuses
   * and "best-effort" reports. It can only take layers away. */
  {
    const char *pretend = getenv("KH_SANDBOX_PRETEND_MISSING");
    if (pretend != NULL) {
      if (has_token(pretend, "landlock")) p->landlock_abi = 0;
      if (has_token(pretend, "landlocknet") && p->landlock_abi > 3) p->landlock_abi = 3;
      if (has_token(pretend, "userns")) {
        p->userns = p->mountns = p->netns = 0;
        snprintf(p->userns_err, sizeof(p->userns_err), "user namespaces disabled (pretend)");
      }
      if (has_token(pretend, "seccomp")) p->seccomp = 0;
      if (has_token(pretend, "pids")) p->pids_cgroup[0] = '\0';
    }
  }
}

static const probe_t *probe(void) {
  pthread_once(&probe_once, probe_run);
  return &probe_result;
}

/* --- the plan (host side) ----------------------------------------------------------------- */

struct kh__sandbox_s {
  json_t *plan; /* owned */
};

static int is_abs(const char *p) {
  return p != NULL && p[0] == '/';
}

/* "/a/b/" -> "/a/b"; keeps "/". Paths are otherwise kept as given: the kernel resolves them. */
static json_t *path_str(const char *p) {
  size_t n = strlen(p);
  while (n > 1 && p[n - 1] == '/') n--;
  return json_stringn(p, n);
}

static int copy_paths(json_t *dst, const json_t *src, const char *key, char *errmsg) {
  size_t i;
  json_t *e;
  if (src == NULL) return 0;
  json_array_foreach(src, i, e) {
    if (!is_abs(json_string_value(e))) {
      kh__set_err(errmsg, "option 'permissions.%s[%zu]' must be an absolute path, got \"%s\"", key,
                  i, json_string_value(e));
      return KH_EOPTION;
    }
    json_array_append_new(dst, path_str(json_string_value(e)));
  }
  return 0;
}

/* Parses "host:port", "host", "[v6]:port", "[v6]". *port is 0 when none is given. */
static int parse_net(const char *s, char *host, size_t hn, int *port) {
  const char *colon = NULL, *end;
  char *ep;
  long v;
  *port = 0;
  if (*s == '[') {
    end = strchr(s, ']');
    if (end == NULL || end == s + 1) return -1;
    snprintf(host, hn, "%.*s", (int)(end - s - 1), s + 1);
    if (end[1] == '\0') return 0;
    if (end[1] != ':') return -1;
    colon = end + 1;
  } else {
    colon = strrchr(s, ':');
    if (colon != NULL && strchr(s, ':') != colon) colon = NULL; /* a bare IPv6 address */
    snprintf(host, hn, "%.*s", (int)(colon ? (size_t)(colon - s) : strlen(s)), s);
    if (colon == NULL) return host[0] ? 0 : -1;
    if (host[0] == '\0') return -1;
  }
  if (colon[1] == '\0') return -1;
  errno = 0;
  v = strtol(colon + 1, &ep, 10);
  if (errno || *ep || v < 1 || v > 65535) return -1;
  *port = (int)v;
  return 0;
}

/* Read access the runtime itself needs: the Python stdlib and packages, shared libraries, data
 * files (matplotlib's, zoneinfo), a few devices and /etc files. Listed in the kernel's info. */
static void runtime_paths(json_t *read, json_t *rw, json_t *exec_dirs, int net) {
  static const char *const ro[] = {"/usr/lib",
                                   "/usr/lib64",
                                   "/usr/local/lib",
                                   "/lib",
                                   "/lib64",
                                   "/usr/share",
                                   "/etc/ld.so.cache",
                                   "/etc/localtime",
                                   "/etc/mime.types",
                                   "/etc/matplotlibrc",
                                   "/etc/python3",
                                   "/etc/python3.11",
                                   "/dev/urandom",
                                   "/dev/random",
                                   "/dev/zero",
                                   "/proc/self",
                                   "/sys/devices/system/cpu",
                                   NULL};
  static const char *const netf[] = {"/etc/hosts",           "/etc/resolv.conf",
                                     "/etc/nsswitch.conf",   "/etc/gai.conf",
                                     "/etc/host.conf",       "/etc/services",
                                     "/etc/protocols",       "/etc/ssl",
                                     "/etc/ca-certificates", NULL};
  static const char *const bins[] = {"/usr/bin",  "/bin",  "/usr/local/bin",
                                     "/usr/sbin", "/sbin", NULL};
  const char *const *p;
  for (p = ro; *p; p++) json_array_append_new(read, json_string(*p));
#ifdef KH_PYTHON_EXECUTABLE
  {
    /* A CPython outside /usr: its prefix's lib directory ("/opt/py/bin/python3" -> /opt/py/lib) */
    char buf[PATH_MAX];
    char *s;
    snprintf(buf, sizeof(buf), "%s", KH_PYTHON_EXECUTABLE);
    if ((s = strrchr(buf, '/')) != NULL) {
      *s = '\0';
      if ((s = strrchr(buf, '/')) != NULL && strcmp(buf, "/usr/bin") != 0) {
        snprintf(s, sizeof(buf) - (size_t)(s - buf), "/lib");
        json_array_append_new(read, json_string(buf));
      }
    }
  }
#endif
  if (net)
    for (p = netf; *p; p++) json_array_append_new(read, json_string(*p));
  for (p = bins; *p; p++) json_array_append_new(exec_dirs, json_string(*p));
  json_array_append_new(rw, json_string("/dev/null"));
}

static void note_missing(json_t *missing, const char *what) {
  json_array_append_new(missing, json_string(what));
}

int kh__sandbox_new(kh__sandbox_t **out, const json_t *opts, char *errmsg) {
  const probe_t *pr;
  json_t *perms = json_object_get(opts, "permissions");
  json_t *fs = json_object_get(opts, "filesystem");
  json_t *limits = json_object_get(opts, "limits");
  json_t *envopt = json_object_get(opts, "env");
  const char *mode = json_string_value(json_object_get(opts, "sandbox"));
  int strict = mode == NULL || strcmp(mode, "best-effort") != 0;
  json_t *plan = NULL, *layers, *missing, *read, *write, *rt_read, *rt_rw, *rt_exec, *v;
  const char *root = NULL, *mp = NULL;
  int mount_needed = 0, ro = 0, run = 1, net_any = 1, net_off = 0, rc = 0;
  int want_nproc = 0;
  json_t *ports = NULL;
  kh__sandbox_t *sb;

  *out = NULL;
  if (fs != NULL && !json_is_false(json_object_get(fs, "enabled"))) {
    root = json_string_value(json_object_get(fs, "root"));
    mp = json_string_value(json_object_get(fs, "mountPoint"));
    ro = json_is_true(json_object_get(fs, "readOnly"));
    if (root == NULL) {
      kh__set_err(errmsg, "option 'filesystem.root' is required when 'filesystem' is enabled");
      return KH_EOPTION;
    }
    if (!is_abs(root) || (mp != NULL && !is_abs(mp))) {
      kh__set_err(errmsg,
                  "options 'filesystem.root' and 'filesystem.mountPoint' must be "
                  "absolute paths");
      return KH_EOPTION;
    }
    {
      struct stat st;
      if (stat(root, &st) != 0 || !S_ISDIR(st.st_mode)) {
        kh__set_err(errmsg, "option 'filesystem.root': \"%s\" is not a directory", root);
        return KH_EOPTION;
      }
    }
    if (mp != NULL && strcmp(mp, "/") == 0) {
      kh__set_err(errmsg, "option 'filesystem.mountPoint' must not be \"/\"");
      return KH_EOPTION;
    }
    if (mp == NULL) mp = root;
    mount_needed = strcmp(mp, root) != 0 || ro;
  }
  if (perms == NULL && !mount_needed && limits == NULL && root == NULL) return 0;

  pr = probe();
  plan = json_object();
  layers = json_object();
  missing = json_array();
  read = json_array();
  write = json_array();
  rt_read = json_array();
  rt_rw = json_array();
  rt_exec = json_array();
  json_object_set_new(plan, "strict", json_boolean(strict));
  json_object_set_new(plan, "confine", json_boolean(perms != NULL));

  if (perms != NULL) {
    json_t *net = json_object_get(perms, "net");
    json_t *env = json_object_get(perms, "env");
    if ((rc = copy_paths(read, json_object_get(perms, "read"), "read", errmsg))) goto fail;
    if ((rc = copy_paths(write, json_object_get(perms, "write"), "write", errmsg))) goto fail;
    run = json_is_true(json_object_get(perms, "run"));
    /* Deno's model: anything not granted is denied. */
    net_any = json_is_true(net);
    net_off = net == NULL || json_is_false(net) || (json_is_array(net) && !json_array_size(net));
    if (json_is_array(net) && json_array_size(net)) {
      size_t k;
      json_t *e;
      int portless = 0;
      ports = json_array();
      json_array_foreach(net, k, e) {
        char host[256];
        int port;
        if (parse_net(json_string_value(e), host, sizeof(host), &port) != 0) {
          kh__set_err(errmsg,
                      "option 'permissions.net[%zu]' must be \"host\", \"host:port\" or "
                      "\"[ipv6]:port\" with a port from 1 to 65535, got \"%s\"",
                      k, json_string_value(e));
          rc = KH_EOPTION;
          goto fail;
        }
        if (port == 0)
          portless = 1;
        else
          json_array_append_new(ports, json_integer(port));
      }
      json_object_set(plan, "net", net);
      if (portless) { /* every port is open to some host: only the audit hook can check */
        json_decref(ports);
        ports = NULL;
      }
    } else {
      json_object_set_new(plan, "net", json_boolean(net_any));
    }
    json_object_set_new(
        plan, "env",
        env != NULL && json_is_array(env) ? json_incref(env) : json_boolean(json_is_true(env)));
    json_object_set_new(plan, "run", json_boolean(run));
    runtime_paths(rt_read, rt_rw, rt_exec, !net_off);
  }
  if (envopt != NULL) json_object_set(plan, "setEnv", envopt);
  if ((v = json_object_get(opts, "cwd")) != NULL) json_object_set(plan, "cwd", v);
  if (root != NULL) {
    json_object_set_new(plan, "mount",
                        json_pack("{s:o, s:o, s:b, s:b}", "root", path_str(root), "mountPoint",
                                  path_str(mp), "readOnly", ro, "bind", mount_needed));
    /* The mount is the kernel's workspace: granted as asked (read-only or read-write). */
    if (perms != NULL) {
      json_array_append_new(read, path_str(mp));
      if (!ro) json_array_append_new(write, path_str(mp));
    }
  }
  json_object_set_new(plan, "read", read);
  json_object_set_new(plan, "write", write);
  json_object_set_new(plan, "runtimeRead", rt_read);
  json_object_set_new(plan, "runtimeReadWrite", rt_rw);
  json_object_set_new(plan, "runtimeExec", rt_exec);
  if (limits != NULL) {
    json_object_set(plan, "limits", limits);
    want_nproc = json_object_get(limits, "maxProcesses") != NULL;
  }

  /* Which layers this plan needs, and whether the system has them. */
  json_object_set_new(layers, "noNewPrivs", json_true());
  json_object_set_new(layers, "envFilter", json_boolean(perms != NULL));
  json_object_set_new(layers, "rlimits", json_boolean(limits != NULL));
  {
    int ns_needed = mount_needed || (perms != NULL && net_off);
    int userns = ns_needed && pr->userns;
    int mountns = ns_needed && pr->mountns;
    json_object_set_new(layers, "userNamespace", json_boolean(userns));
    json_object_set_new(layers, "mountNamespace", json_boolean(mountns));
    if (mount_needed && !pr->mountns) {
      /* A mount cannot be faked: even best-effort fails. */
      kh__set_err(errmsg,
                  "sandbox: cannot mount 'filesystem.root' at '%s': no private mount "
                  "namespace (%s)",
                  mp, pr->userns_err);
      rc = KH_ENOTSUP;
      goto fail;
    }
    json_object_set_new(layers, "netNamespace",
                        json_boolean(perms != NULL && net_off && pr->netns));
    if (perms != NULL && net_off && !pr->netns)
      note_missing(missing, "network namespace for net=false");
  }
  if (perms != NULL) {
    int abi = pr->landlock_abi;
    json_object_set_new(layers, "landlock", json_boolean(abi >= 1));
    json_object_set_new(plan, "landlockAbi", json_integer(abi));
    if (abi < 1) note_missing(missing, "Landlock (file access rules)");
    if (!net_any && ports != NULL) {
      json_object_set_new(layers, "landlockNet", json_boolean(abi >= 4));
      if (abi < 4) note_missing(missing, "Landlock ABI 4 (TCP port rules)");
    } else if (net_off) {
      /* The network namespace does the work; Landlock's TCP rules back it up when present. */
      json_object_set_new(layers, "landlockNet", json_boolean(abi >= 4));
      if (abi < 4 && !pr->netns) note_missing(missing, "Landlock ABI 4 (TCP port rules)");
    } else {
      json_object_set_new(layers, "landlockNet", json_false());
    }
    if (ports != NULL) json_object_set_new(plan, "netPorts", json_incref(ports));
    json_object_set_new(layers, "landlockScope", json_boolean(abi >= 6 && !net_any));
    json_object_set_new(layers, "seccomp", json_boolean((!run || !net_any) && pr->seccomp));
    if (!run && !pr->seccomp && abi < 1)
      note_missing(missing, "seccomp or Landlock (to deny exec for run=false)");
    /* Landlock does not cover connect() to a Unix socket's path (the Docker socket...). */
    if (!net_any && !pr->seccomp)
      note_missing(missing, "seccomp (to deny Unix sockets, which Landlock does not cover)");
  }
  if (want_nproc) {
    int cg = geteuid() == 0 && pr->pids_cgroup[0];
    json_object_set_new(layers, "pidsCgroup", json_boolean(cg));
    if (cg) json_object_set_new(plan, "pidsCgroup", json_string(pr->pids_cgroup));
    /* RLIMIT_NPROC never binds uid 0 (the kernel exempts INIT_USER). */
    if (geteuid() == 0 && !cg)
      note_missing(missing,
                   "a writable pids cgroup (maxProcesses as "
                   "root: RLIMIT_NPROC does not bind uid 0)");
  }
  json_object_set_new(plan, "layers", layers);
  json_object_set_new(plan, "missing", missing);
  if (strict && json_array_size(missing) > 0) {
    kh__strbuf_t sb = {0};
    size_t k;
    json_array_foreach(missing, k, v) {
      if (k) kh__sb_puts(&sb, ", ");
      kh__sb_puts(&sb, json_string_value(v));
    }
    kh__set_err(errmsg,
                "sandbox: this system cannot enforce the requested permissions: "
                "missing %s%s%s; pass sandbox: \"best-effort\" to run with the layers that are "
                "available",
                sb.buf ? sb.buf : "?", pr->userns_err[0] ? "; " : "", pr->userns_err);
    kh__sb_free(&sb);
    rc = KH_ENOTSUP;
    goto fail;
  }
  json_decref(ports);
  sb = calloc(1, sizeof(*sb));
  if (sb == NULL) {
    json_decref(plan);
    return KH_ENOMEM;
  }
  sb->plan = plan;
  *out = sb;

  return 0;

fail:
  json_decref(ports);
  /* read/write/... not yet owned by plan when we jump early: decref what plan does not own */
  if (json_object_get(plan, "read") != read) json_decref(read);
  if (json_object_get(plan, "write") != write) json_decref(write);
  if (json_object_get(plan, "runtimeRead") != rt_read) json_decref(rt_read);
  if (json_object_get(plan, "runtimeReadWrite") != rt_rw) json_decref(rt_rw);
  if (json_object_get(plan, "runtimeExec") != rt_exec) json_decref(rt_exec);
  if (json_object_get(plan, "layers") != layers) json_decref(layers);
  if (json_object_get(plan, "missing") != missing) json_decref(missing);
  json_decref(plan);
  return rc;
}

void kh__sandbox_free(kh__sandbox_t *sb) {
  if (sb == NULL) return;
  json_decref(sb->plan);
  free(sb);
}

const json_t *kh__sandbox_plan(const kh__sandbox_t *sb) {
  return sb->plan;
}

void kh__sandbox_info(const kh__sandbox_t *sb, json_t *info) {
  const json_t *p = sb->plan;
  json_t *o =
      json_pack("{s:s, s:O, s:O, s:O, s:O}", "mode",
                json_is_true(json_object_get(p, "strict")) ? "strict" : "best-effort", "layers",
                json_object_get(p, "layers"), "missing", json_object_get(p, "missing"),
                "runtimeRead", json_object_get(p, "runtimeRead"), "runtimeReadWrite",
                json_object_get(p, "runtimeReadWrite"));
  if (o != NULL) json_object_set_new(info, "sandbox", o);
}

void kh__sandbox_cleanup(const json_t *plan, int pid) {
  const char *cg = json_string_value(json_object_get(plan, "pidsCgroup"));
  char dir[300];
  if (cg == NULL) return;
  snprintf(dir, sizeof(dir), "%s/w-%d", cg, pid);
  rmdir(dir);
}

/* --- applying the plan (worker side, single-threaded) ------------------------------------ */

typedef struct {
  const json_t *plan;
  int strict;
  json_t *layers; /* what is actually active */
  json_t *missing;
  char *errmsg;
} apply_t;

/* A layer could not be applied: fatal when strict, else noted. Returns 0 to go on. */
static int layer_failed(apply_t *a, const char *layer, const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  json_object_set_new(a->layers, layer, json_false());
  if (a->strict) {
    kh__set_err(a->errmsg, "sandbox: %s", buf);
    return KH_ENOTSUP;
  }
  json_array_append_new(a->missing, json_string(buf));
  return 0;
}

static int mkdir_p(const char *path) {
  char buf[PATH_MAX];
  char *s;
  snprintf(buf, sizeof(buf), "%s", path);
  for (s = buf + 1; *s; s++) {
    if (*s != '/') continue;
    *s = '\0';
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -errno;
    *s = '/';
  }
  if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -errno;
  return 0;
}

static int join_pids_cgroup(apply_t *a, const char *base, uint64_t max) {
  char dir[300], f[340], num[32];
  int rc;
  snprintf(dir, sizeof(dir), "%s/w-%d", base, (int)getpid());
  if (mkdir(dir, 0755) != 0 && errno != EEXIST)
    return layer_failed(a, "pidsCgroup", "cannot create pids cgroup %s: %s", dir, strerror(errno));
  snprintf(f, sizeof(f), "%s/pids.max", dir);
  snprintf(num, sizeof(num), "%llu", (unsigned long long)max);
  if ((rc = write_file(f, num)) == 0) {
    snprintf(f, sizeof(f), "%s/cgroup.procs", dir);
    snprintf(num, sizeof(num), "%d", (int)getpid());
    rc = write_file(f, num);
  }
  if (rc != 0) {
    rmdir(dir);
    return layer_failed(a, "pidsCgroup", "cannot join pids cgroup %s: %s", dir, strerror(-rc));
  }
  return 0;
}

static int set_rlimit(apply_t *a, int res, const char *name, uint64_t soft, uint64_t hard) {
  struct rlimit rl;
  rl.rlim_cur = (rlim_t)soft;
  rl.rlim_max = (rlim_t)hard;
  if (setrlimit(res, &rl) != 0)
    return layer_failed(a, "rlimits", "setrlimit(%s) failed: %s", name, strerror(errno));
  return 0;
}

static int apply_limits(apply_t *a, const json_t *limits) {
  json_t *v;
  int rc;
  if ((v = json_object_get(limits, "memoryBytes")) != NULL &&
      (rc = set_rlimit(a, RLIMIT_AS, "RLIMIT_AS", (uint64_t)json_integer_value(v),
                       (uint64_t)json_integer_value(v))))
    return rc;
  /* SIGXCPU at the soft limit (the worker dies with that reason), SIGKILL a second later. */
  if ((v = json_object_get(limits, "cpuSeconds")) != NULL &&
      (rc = set_rlimit(a, RLIMIT_CPU, "RLIMIT_CPU", (uint64_t)json_integer_value(v),
                       (uint64_t)json_integer_value(v) + 1)))
    return rc;
  if ((v = json_object_get(limits, "maxProcesses")) != NULL &&
      (rc = set_rlimit(a, RLIMIT_NPROC, "RLIMIT_NPROC", (uint64_t)json_integer_value(v),
                       (uint64_t)json_integer_value(v))))
    return rc;
  return 0;
}

/* The original environment block (what /proc/self/environ shows) spans [start, end). */
static int env_block(unsigned long *start, unsigned long *end) {
  char buf[4096];
  int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
  ssize_t n;
  char *p;
  int field;
  if (fd < 0) return -1;
  n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = '\0';
  p = strrchr(buf, ')'); /* the command name may hold spaces */
  if (p == NULL) return -1;
  /* Field 3 follows ") "; env_start and env_end are fields 50 and 51. */
  for (field = 2; field < 50 && p; field++) p = strchr(p + 1, ' ');
  if (p == NULL || sscanf(p + 1, "%lu %lu", start, end) != 2) return -1;
  return 0;
}

static int env_granted(const json_t *grant, const char *name, size_t n) {
  size_t i;
  json_t *e;
  if (json_is_true(grant)) return 1;
  json_array_foreach(grant, i, e) {
    if (json_string_length(e) == n && memcmp(json_string_value(e), name, n) == 0) return 1;
  }
  return 0;
}

/* Only granted host variables stay; the kernel's own `env` values are set; the original block
 * is wiped so /proc/self/environ (and memory) no longer holds what was dropped. */
static int apply_env(apply_t *a, const json_t *grant, const json_t *set) {
  char **keep = NULL;
  size_t n = 0, k = 0, i;
  unsigned long start = 0, end = 0;
  const char *key;
  json_t *v;
  if (grant != NULL) {
    for (n = 0; environ && environ[n]; n++) {
    }
    keep = calloc(n + 1, sizeof(*keep));
    if (keep == NULL) return KH_ENOMEM;
    for (i = 0; i < n; i++) {
      const char *eq = strchr(environ[i], '=');
      if (eq != NULL && env_granted(grant, environ[i], (size_t)(eq - environ[i])))
        keep[k++] = kh__strdup(environ[i]);
    }
    env_block(&start, &end);
    clearenv();
    for (i = 0; i < k; i++) {
      char *eq = keep[i] ? strchr(keep[i], '=') : NULL;
      if (eq == NULL) continue;
      *eq = '\0';
      setenv(keep[i], eq + 1, 1);
      free(keep[i]);
    }
    free(keep);
    if (start && end > start) memset((void *)start, 0, end - start);
  }
  json_object_foreach((json_t *)set, key, v) setenv(key, json_string_value(v), 1);
  json_object_set_new(a->layers, "envFilter", json_boolean(grant != NULL));
  return 0;
}

static int mount_ro(const char *path) {
  struct mount_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
  if (syscall(SYS_mount_setattr, AT_FDCWD, path, AT_RECURSIVE, &attr, sizeof(attr)) == 0) return 0;
  return mount(NULL, path, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL);
}

static int apply_mount(apply_t *a, const json_t *m) {
  const char *root = json_string_value(json_object_get(m, "root"));
  const char *mp = json_string_value(json_object_get(m, "mountPoint"));
  int ro = json_is_true(json_object_get(m, "readOnly"));
  int rc;
  /* Read-only also through root's own path, not only at mountPoint. */
  if (ro && (mount(root, root, NULL, MS_BIND | MS_REC, NULL) != 0 || mount_ro(root) != 0)) {
    kh__set_err(a->errmsg, "sandbox: cannot make '%s' read-only: %s", root, strerror(errno));
    return KH_ENOTSUP;
  }
  if (strcmp(root, mp) == 0) return 0;
  if ((rc = mkdir_p(mp)) != 0) {
    kh__set_err(a->errmsg, "sandbox: cannot create mount point '%s': %s", mp, strerror(-rc));
    return KH_ENOTSUP;
  }
  if (mount(root, mp, NULL, MS_BIND | MS_REC, NULL) != 0) {
    kh__set_err(a->errmsg, "sandbox: cannot bind-mount '%s' at '%s': %s", root, mp,
                strerror(errno));
    return KH_ENOTSUP;
  }
  if (ro && mount_ro(mp) != 0) {
    kh__set_err(a->errmsg, "sandbox: cannot make '%s' read-only: %s", mp, strerror(errno));
    return KH_ENOTSUP;
  }
  return 0;
}

static int apply_namespaces(apply_t *a, int want_net, int want_mount) {
  uid_t uid = getuid();
  gid_t gid = getgid();
  int flags = CLONE_NEWNS | (want_net ? CLONE_NEWNET : 0);
  int rc;
  if (unshare(CLONE_NEWUSER | flags) == 0) {
    if ((rc = write_id_maps(uid, gid)) != 0) {
      kh__set_err(a->errmsg, "sandbox: cannot write the user namespace's id maps: %s",
                  strerror(-rc));
      return KH_ENOTSUP;
    }
    json_object_set_new(a->layers, "userNamespace", json_true());
  } else {
    int e = errno;
    json_object_set_new(a->layers, "userNamespace", json_false());
    if (geteuid() != 0 || unshare(flags) != 0) {
      if (want_mount) {
        kh__set_err(a->errmsg, "sandbox: cannot create a private mount namespace: %s", strerror(e));
        return KH_ENOTSUP;
      }
      json_object_set_new(a->layers, "mountNamespace", json_false());
      if (want_net) return layer_failed(a, "netNamespace", "unshare: %s", strerror(e));
      return 0;
    }
  }
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
    kh__set_err(a->errmsg, "sandbox: cannot make the mount namespace private: %s", strerror(errno));
    return KH_ENOTSUP;
  }
  json_object_set_new(a->layers, "mountNamespace", json_true());
  json_object_set_new(a->layers, "netNamespace", json_boolean(want_net));
  return 0;
}

/* Nothing the sandboxed code runs may hold or regain a capability, in any namespace. */
static void drop_caps(void) {
  struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2];
  int c;
  prctl(PR_SET_SECUREBITS,
        SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP |
            SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED,
        0, 0, 0);
  for (c = 0; c <= 63; c++)
    if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) != 0 && errno == EINVAL) break;
  prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
  memset(data, 0, sizeof(data));
  syscall(SYS_capset, &hdr, data);
}

/* Adds a path rule; a path that does not exist is skipped (nothing to grant). */
static int ll_add_path(int rs, const char *path, uint64_t access, uint64_t handled) {
  struct ll_path_beneath_attr pb;
  struct stat st;
  int fd = open(path, O_PATH | O_CLOEXEC);
  int rc = 0;
  if (fd < 0) return errno == ENOENT || errno == ENOTDIR || errno == EACCES ? 0 : -errno;
  if (fstat(fd, &st) == 0 && !S_ISDIR(st.st_mode)) access &= LL_FS_FILE_RIGHTS;
  pb.allowed_access = access & handled;
  pb.parent_fd = fd;
  if (pb.allowed_access && syscall(SYS_landlock_add_rule, rs, LL_RULE_PATH_BENEATH, &pb, 0) != 0)
    rc = -errno;
  close(fd);
  return rc;
}

static int ll_add_list(int rs, const json_t *list, uint64_t access, uint64_t handled,
                       const char **bad) {
  size_t i;
  json_t *e;
  int rc;
  json_array_foreach(list, i, e) {
    if ((rc = ll_add_path(rs, json_string_value(e), access, handled)) != 0) {
      *bad = json_string_value(e);
      return rc;
    }
  }
  return 0;
}

static int apply_landlock(apply_t *a, int run, int net_tcp_rules) {
  const json_t *p = a->plan;
  long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LL_CREATE_RULESET_VERSION);
  struct ll_ruleset_attr attr;
  size_t attr_size;
  uint64_t exec = run ? LL_FS_EXECUTE : 0;
  const char *bad = NULL;
  int rs, rc = 0;
  char self_exe[PATH_MAX];
  ssize_t n;
  json_t *plan_abi = json_object_get(p, "landlockAbi");
  /* No more than the host planned (and reported in the kernel's info); what it planned must
   * be here, since worker and host run on one kernel. */
  if (plan_abi != NULL && abi > json_integer_value(plan_abi))
    abi = (long)json_integer_value(plan_abi);
  if (abi < 1) return layer_failed(a, "landlock", "Landlock is not available");
  if (net_tcp_rules && abi < 4 &&
      json_is_true(json_object_get(json_object_get(p, "layers"), "landlockNet")) &&
      layer_failed(a, "landlockNet", "Landlock TCP rules need ABI 4, the kernel has %ld", abi))
    return KH_ENOTSUP;
  memset(&attr, 0, sizeof(attr));
  attr.handled_access_fs = ll_handled_fs((int)abi);
  attr_size = sizeof(uint64_t);
  if (abi >= 4 && net_tcp_rules) attr.handled_access_net = LL_NET_BIND_TCP | LL_NET_CONNECT_TCP;
  if (abi >= 4) attr_size = 2 * sizeof(uint64_t);
  if (abi >= 6 && !json_is_true(json_object_get(p, "net")))
    attr.scoped = LL_SCOPE_ABSTRACT_UNIX | LL_SCOPE_SIGNAL;
  if (abi >= 6) attr_size = sizeof(attr);
  rs = (int)syscall(SYS_landlock_create_ruleset, &attr, attr_size, 0);
  if (rs < 0) return layer_failed(a, "landlock", "landlock_create_ruleset: %s", strerror(errno));
  if ((rc = ll_add_list(rs, json_object_get(p, "runtimeRead"), LL_R | exec, attr.handled_access_fs,
                        &bad)) ||
      (rc = ll_add_list(rs, json_object_get(p, "runtimeReadWrite"),
                        LL_R | LL_FS_WRITE_FILE | LL_FS_TRUNCATE, attr.handled_access_fs, &bad)) ||
      (run && (rc = ll_add_list(rs, json_object_get(p, "runtimeExec"), LL_R | LL_FS_EXECUTE,
                                attr.handled_access_fs, &bad))) ||
      (rc = ll_add_list(rs, json_object_get(p, "read"), LL_R | exec, attr.handled_access_fs,
                        &bad)) ||
      (rc = ll_add_list(rs, json_object_get(p, "write"), LL_R | LL_W | exec, attr.handled_access_fs,
                        &bad)))
    goto fail;
  /* The worker's own executable (the test runner's, here). */
  n = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
  if (n > 0) {
    self_exe[n] = '\0';
    if ((rc = ll_add_path(rs, self_exe, LL_FS_READ_FILE, attr.handled_access_fs)) != 0) {
      bad = self_exe;
      goto fail;
    }
  }
  if (attr.handled_access_net) {
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(p, "netPorts"), i, e) {
      struct ll_net_port_attr np;
      np.allowed_access = LL_NET_BIND_TCP | LL_NET_CONNECT_TCP;
      np.port = (uint64_t)json_integer_value(e);
      if (syscall(SYS_landlock_add_rule, rs, LL_RULE_NET_PORT, &np, 0) != 0) {
        rc = -errno;
        bad = "a TCP port rule";
        goto fail;
      }
    }
  }
  if (syscall(SYS_landlock_restrict_self, rs, 0) != 0) {
    rc = -errno;
    bad = "landlock_restrict_self";
    goto fail;
  }
  close(rs);
  json_object_set_new(a->layers, "landlock", json_true());
  json_object_set_new(a->layers, "landlockAbi", json_integer(abi));
  json_object_set_new(a->layers, "landlockNet", json_boolean(attr.handled_access_net != 0));
  json_object_set_new(a->layers, "landlockScope", json_boolean(attr.scoped != 0));
  return 0;
fail:
  close(rs);
  return layer_failed(a, "landlock", "Landlock rule for %s: %s", bad ? bad : "?", strerror(-rc));
}

/* run=false: no execve/execveat (memfd and fexecve included). net not true: no new Unix
 * socket (socketpair stays: asyncio and multiprocessing use it; it reaches nobody). */
static int apply_seccomp(apply_t *a, int deny_exec, int deny_unix) {
  /* Other architectures' system calls (i386, x32) kill the process: libseccomp's default. */
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  int rc = 0;
  if (ctx == NULL) return layer_failed(a, "seccomp", "seccomp_init failed");
  if (deny_exec &&
      ((rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(execve), 0)) != 0 ||
       (rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(execveat), 0)) != 0))
    goto out;
  if (deny_unix && (rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(socket), 1,
                                          SCMP_A0(SCMP_CMP_EQ, AF_UNIX))) != 0)
    goto out;
  rc = seccomp_load(ctx);
out:
  seccomp_release(ctx);
  if (rc != 0) return layer_failed(a, "seccomp", "seccomp filter: %s", strerror(-rc));
  json_object_set_new(a->layers, "seccomp", json_true());
  return 0;
}

/* Threads in this process (from /proc/self/status), or -1 when unknown. */
static int thread_count(void) {
  char buf[4096];
  int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  ssize_t n;
  char *p;
  if (fd < 0) return -1;
  n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = '\0';
  p = strstr(buf, "\nThreads:");
  return p ? atoi(p + 9) : -1;
}

int kh__sandbox_apply(const json_t *plan, json_t **report, char *errmsg) {
  apply_t a;
  const json_t *perms_on = json_object_get(plan, "confine");
  const json_t *m = json_object_get(plan, "mount");
  const json_t *limits = json_object_get(plan, "limits");
  const json_t *net = json_object_get(plan, "net");
  const char *cwd = json_string_value(json_object_get(plan, "cwd"));
  const char *cg = json_string_value(json_object_get(plan, "pidsCgroup"));
  int confine = json_is_true(perms_on);
  int run = !confine || json_is_true(json_object_get(plan, "run"));
  int net_off = confine && json_is_false(net);
  int want_mount = m != NULL && json_is_true(json_object_get(m, "bind"));
  int pdeath = 0, rc = 0;
  pid_t ppid = getppid();

  if (report) *report = NULL;
  memset(&a, 0, sizeof(a));
  a.plan = plan;
  a.strict = json_is_true(json_object_get(plan, "strict"));
  a.layers = json_object();
  a.missing = json_array();
  a.errmsg = errmsg;
  prctl(PR_GET_PDEATHSIG, &pdeath, 0, 0, 0);
  /* Landlock, seccomp and user namespaces bind the calling thread (and what it starts later):
   * a thread that already runs would stay outside, and user code could borrow it (ctypes). */
  if (thread_count() != 1) {
    kh__set_err(errmsg,
                "sandbox: must be applied while the process is single-threaded (it has "
                "%d threads)",
                thread_count());
    rc = KH_EINVAL;
    goto done;
  }

  /* 1. Things that need the host's own privileges: the pids cgroup (root only). */
  if (cg != NULL && limits != NULL &&
      (rc = join_pids_cgroup(
           &a, cg, (uint64_t)json_integer_value(json_object_get(limits, "maxProcesses")))))
    goto done;
  if (cg != NULL && json_object_get(a.layers, "pidsCgroup") == NULL)
    json_object_set_new(a.layers, "pidsCgroup", json_true());
  /* 2. Namespaces, then the mount inside the private mount namespace. */
  if ((want_mount || net_off) && (rc = apply_namespaces(&a, net_off, want_mount))) goto done;
  if (m != NULL && (rc = apply_mount(&a, m))) goto done;
  if (cwd == NULL && m != NULL) cwd = json_string_value(json_object_get(m, "mountPoint"));
  if (cwd != NULL && chdir(cwd) != 0) {
    kh__set_err(errmsg, "sandbox: cannot change to directory '%s': %s", cwd, strerror(errno));
    rc = KH_ENOTSUP;
    goto done;
  }
  /* 3. Limits and the environment. */
  if (limits != NULL) {
    if ((rc = apply_limits(&a, limits))) goto done;
    if (json_object_get(a.layers, "rlimits") == NULL)
      json_object_set_new(a.layers, "rlimits", json_true());
  }
  if ((rc = apply_env(&a, confine ? json_object_get(plan, "env") : NULL,
                      json_object_get(plan, "setEnv"))))
    goto done;
  /* 4. Seal: no capabilities, no new privileges, Landlock, seccomp. Order matters: Landlock
   * and seccomp need no_new_privs (or privileges we just dropped). */
  drop_caps();
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    kh__set_err(errmsg, "sandbox: PR_SET_NO_NEW_PRIVS failed: %s", strerror(errno));
    rc = KH_ENOTSUP;
    goto done;
  }
  json_object_set_new(a.layers, "noNewPrivs", json_true());
  if (confine) {
    int tcp_rules = net_off || json_object_get(plan, "netPorts") != NULL;
    if ((rc = apply_landlock(&a, run, tcp_rules))) goto done;
    if ((!run || !json_is_true(net)) && (rc = apply_seccomp(&a, !run, !json_is_true(net))))
      goto done;
  }
  /* Credential changes can clear the parent-death signal: put it back, and close the race
   * with a parent that died meanwhile. */
  if (pdeath) {
    prctl(PR_SET_PDEATHSIG, pdeath, 0, 0, 0);
    if (getppid() != ppid) kill(getpid(), pdeath);
  }
done:
  if (rc == 0 && report) {
    *report = json_pack("{s:O, s:O}", "layers", a.layers, "missing", a.missing);
  }
  json_decref(a.layers);
  json_decref(a.missing);
  return rc;
}

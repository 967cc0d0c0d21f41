/* sandbox-plan.c: the host's half of the worker sandbox (DESIGN.md §7). It probes once per
 * process what this system can enforce, turns a kernel's normalised options into a plan (a
 * JSON object the worker applies to itself: sandbox-apply.c, then _kh_sandbox.py), refuses
 * what cannot be enforced, and reports the plan in the kernel's info. Thread: loop (the probe
 * may run from whichever thread plans first; pthread_once makes that safe).
 *
 * The plan, as sent in the worker's "open" message (snake_case, like all the core's JSON):
 *   strict              bool      sandbox "strict" (the default): a missing layer is fatal
 *   confine             bool      `permissions` was given: what is not granted is denied
 *   read, write         [path]    granted paths; the mount point joins them
 *   net                 bool or ["host[:port]"]   permissions.net
 *   net_ports           [port]    TCP ports for Landlock, absent when some host has no port
 *   env                 bool or [name]            host variables that stay (permissions.env)
 *   run                 bool      subprocesses may be started
 *   set_env, cwd                  the kernel's `env` and `cwd` options
 *   mount               {root, mount_point, read_only, bind}; bind: a mount is needed
 *   limits              {memory_bytes, cpu_seconds, max_processes, max_output_bytes}
 *   runtime_read, runtime_read_write, runtime_exec   [path] what the runtime itself needs
 *   landlock_abi        int       the most the worker may use (what the host saw)
 *   pids_cgroup         path      where limits.max_processes is enforced when we are root
 *   layers              {name: bool}  the layers planned: no_new_privs, env_filter, rlimits,
 *                       user_namespace, mount_namespace, net_namespace, landlock,
 *                       landlock_net, landlock_scope, seccomp, pids_cgroup
 *   missing             [text]    layers this system lacks (best-effort runs without them) */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

/* --- probing what the system offers (once per process) ----------------------------------- */

typedef struct {
  int landlock_abi;      /* 0: none */
  int userns;            /* user + mount namespaces with uid/gid maps work */
  int mountns;           /* a private mount namespace works (with userns, or as root) */
  int netns;             /* a network namespace works */
  int seccomp;           /* the kernel filters system calls */
  char pids_cgroup[256]; /* a writable pids cgroup directory for workers, "" when none */
  char userns_err[128];  /* why user namespaces are not available, for messages */
} probe_t;

/* Written once by probe_run (under pthread_once), then only read. A probe costs a fork, so it
 * runs once per process; a system changed afterwards (a sysctl) is seen by the next host. */
static probe_t probe_result;
static pthread_once_t probe_once = PTHREAD_ONCE_INIT;

/* The probe child: exit 0 when user+mount+net namespaces work, 10 when only mount+net work
 * (root without user namespaces), else 20 + the errno of the failing unshare (capped). It is
 * a child because unshare cannot be undone, and the host must stay as it was. */
static int probe_ns_child(uid_t uid, gid_t gid) {
  int e;
  if (unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET) == 0) {
    if (kh__sandbox_map_ids(uid, gid) != 0) _exit(2);
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) _exit(3);
    _exit(0);
  }
  e = errno;
  if (unshare(CLONE_NEWNS | CLONE_NEWNET) == 0 &&
      mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0)
    _exit(10);
  _exit(20 + (e < 100 ? e : 99));
}

/* As root, limits.max_processes needs a pids cgroup (RLIMIT_NPROC does not bind uid 0). Finds
 * one we can create child groups in, under cgroup v2's unified tree or v1's pids hierarchy,
 * and proves it by making (and removing) a probe group. */
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
    kh__sandbox_write_file(f, "+pids"); /* cgroup v2; absent (and harmless) in v1 */
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) continue;
    snprintf(f, sizeof(f), "%s/cgroup.subtree_control", dir);
    kh__sandbox_write_file(f, "+pids");
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

/* The probe itself. Landlock and seccomp answer a query; namespaces can only be tried, so a
 * child tries them the way a worker will (probe_ns_child) and reports by its exit status. */
static void probe_run(void) {
  probe_t *p = &probe_result;
  const char *pretend = getenv("KH_SANDBOX_PRETEND_MISSING");
  pid_t pid;
  int st = 0;
  p->landlock_abi = kh__landlock_abi();
  /* PR_GET_SECCOMP fails with EINVAL on a kernel built without seccomp. */
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
   * and "best-effort" reports. It can only take layers away, so it weakens nothing. */
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

static const probe_t *probe(void) {
  pthread_once(&probe_once, probe_run);
  return &probe_result;
}

/* --- the plan ------------------------------------------------------------------------------ */

struct kh__sandbox_s {
  json_t *plan; /* owned */
};

/* What kh__sandbox_new works from and on. The JSON members are borrowed from plan. */
typedef struct {
  const probe_t *pr;
  json_t *plan, *layers, *missing, *read, *write;
  const json_t *perms; /* the permissions option, or NULL: no confinement */
  /* What permissions decide (the defaults are "no permissions given": everything allowed). */
  const char *root; /* filesystem.root when the filesystem is enabled, else NULL */
  const char *mp;   /* its mount point (root itself when not given) */
  int ro, bind;     /* read-only; a mount is needed (elsewhere, or read-only) */
  int run, net_any, net_off, tcp_ports;
  char *errmsg;
} plan_t;

/* "/a/b/" -> "/a/b"; keeps "/". Paths are otherwise kept as given: the worker opens them in
 * its own mount namespace (where the mount point exists), so resolving them here, in the
 * host's view, could name another file. */
static json_t *path_str(const char *p) {
  size_t n = strlen(p);
  while (n > 1 && p[n - 1] == '/') n--;
  return json_stringn(p, n);
}

static void append_paths(json_t *dst, const json_t *src) {
  size_t i;
  json_t *e;
  json_array_foreach(src, i, e) json_array_append_new(dst, path_str(json_string_value(e)));
}

static json_t *new_array(json_t *plan, const char *key) {
  json_t *a = json_array();
  json_object_set_new(plan, key, a);
  return a;
}

/* Read access the runtime itself needs: the Python stdlib and packages, shared libraries, data
 * files (matplotlib's, zoneinfo), a few devices and /etc files; name resolution and TLS files
 * when some network is granted; the bin directories (only when run is granted). Listed in the
 * kernel's info, so a user can see what "deny by default" still lets through. */
static void runtime_paths(json_t *plan, int net) {
  /* /usr/lib and /lib hold the stdlib, dist-packages and shared libraries; /etc/ld.so.cache is
   * how the loader finds the latter; /proc/self serves /proc/self/fd (subprocess closes fds
   * from it) and friends; /sys/devices/system/cpu is where glibc's get_nprocs (os.cpu_count,
   * OpenBLAS's thread count) looks; /dev/urandom is os.urandom's fallback. */
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
  /* getaddrinfo's configuration, service names, and the CA certificates TLS verifies with. */
  static const char *const netf[] = {"/etc/hosts",           "/etc/resolv.conf",
                                     "/etc/nsswitch.conf",   "/etc/gai.conf",
                                     "/etc/host.conf",       "/etc/services",
                                     "/etc/protocols",       "/etc/ssl",
                                     "/etc/ca-certificates", NULL};
  /* Execute rights for subprocesses; read-only, so a kernel cannot plant a binary there. */
  static const char *const bins[] = {"/usr/bin",  "/bin",  "/usr/local/bin",
                                     "/usr/sbin", "/sbin", NULL};
  json_t *read = new_array(plan, "runtime_read");
  json_t *rw = new_array(plan, "runtime_read_write");
  json_t *exec_dirs = new_array(plan, "runtime_exec");
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
  /* /dev/null is written by subprocess (DEVNULL) and many C libraries; writing it leaks
   * nothing, and as a file it gets file rights only: it cannot be removed or replaced. */
  json_array_append_new(rw, json_string("/dev/null"));
}

static void note_missing(plan_t *p, const char *what) {
  json_array_append_new(p->missing, json_string(what));
}

/* A layer the plan counts on (true) or goes without (false). The worker reports its own view
 * once applied, which the kernel's info then shows instead (the worker backend's info). */
static void set_layer(plan_t *p, const char *name, int on) {
  json_object_set_new(p->layers, name, json_boolean(on));
}

/* filesystem: where the workspace is and whether it needs a mount. The options parser has
 * checked that both paths are absolute; whether root is a directory is this system's fact. */
static int plan_filesystem(plan_t *p, const json_t *fs) {
  struct stat st;
  if (fs == NULL || json_is_false(json_object_get(fs, "enabled"))) return 0;
  p->root = json_string_value(json_object_get(fs, "root"));
  p->mp = json_string_value(json_object_get(fs, "mount_point"));
  p->ro = json_is_true(json_object_get(fs, "read_only"));
  if (p->root == NULL) {
    kh__set_err(p->errmsg, "option 'filesystem.root' is required when 'filesystem' is enabled");
    return KH_EOPTION;
  }
  if (stat(p->root, &st) != 0 || !S_ISDIR(st.st_mode)) {
    kh__set_err(p->errmsg, "option 'filesystem.root': \"%s\" is not a directory", p->root);
    return KH_EOPTION;
  }
  if (p->mp == NULL) p->mp = p->root;
  /* Read-only needs a mount even in place: a read-only bind of root over itself. */
  p->bind = strcmp(p->mp, p->root) != 0 || p->ro;
  return 0;
}

/* permissions: Deno's model, anything not granted is denied. */
static void plan_permissions(plan_t *p) {
  const json_t *net = json_object_get(p->perms, "net");
  const json_t *env = json_object_get(p->perms, "env");
  append_paths(p->read, json_object_get(p->perms, "read"));
  append_paths(p->write, json_object_get(p->perms, "write"));
  p->run = json_is_true(json_object_get(p->perms, "run"));
  p->net_any = json_is_true(net);
  p->net_off = net == NULL || json_is_false(net) || (json_is_array(net) && !json_array_size(net));
  if (json_is_array(net) && json_array_size(net)) {
    json_t *ports = json_array();
    size_t k;
    json_t *e;
    int portless = 0;
    json_array_foreach(net, k, e) {
      char host[256];
      int port = 0;
      /* Validated by the options parser; a malformed entry could only widen to portless. */
      if (kh__net_grant_parse(json_string_value(e), host, sizeof(host), &port) != 0 || !port)
        portless = 1;
      else
        json_array_append_new(ports, json_integer(port));
    }
    json_object_set(p->plan, "net", (json_t *)net);
    /* A host without a port opens every port to that host: Landlock (ports only) cannot
     * express it, so only the audit hook checks hosts and ports then. */
    if (!portless) {
      json_object_set_new(p->plan, "net_ports", ports);
      p->tcp_ports = 1;
    } else {
      json_decref(ports);
    }
  } else {
    json_object_set_new(p->plan, "net", json_boolean(p->net_any));
  }
  json_object_set_new(
      p->plan, "env",
      json_is_array(env) ? json_incref((json_t *)env) : json_boolean(json_is_true(env)));
  json_object_set_new(p->plan, "run", json_boolean(p->run));
  runtime_paths(p->plan, !p->net_off);
}

/* Which layers the plan needs, and whether the system has them. Returns KH_ENOTSUP only for a
 * mount that cannot be made: a mount is never faked, not even by best-effort. */
static int plan_layers(plan_t *p, const json_t *limits) {
  const probe_t *pr = p->pr;
  int confine = p->perms != NULL;
  int ns_needed = p->bind || (confine && p->net_off);
  /* Unconditional: every plan seals the process, and prctl cannot be missing. */
  set_layer(p, "no_new_privs", 1);
  set_layer(p, "env_filter", confine);
  set_layer(p, "rlimits", limits != NULL);
  set_layer(p, "user_namespace", ns_needed && pr->userns);
  set_layer(p, "mount_namespace", ns_needed && pr->mountns);
  if (p->bind && !pr->mountns) {
    kh__set_err(p->errmsg,
                "sandbox: cannot mount 'filesystem.root' at '%s': no private mount namespace (%s)",
                p->mp, pr->userns_err);
    return KH_ENOTSUP;
  }
  set_layer(p, "net_namespace", confine && p->net_off && pr->netns);
  if (confine && p->net_off && !pr->netns) note_missing(p, "network namespace for net=false");
  if (confine) {
    int abi = pr->landlock_abi;
    set_layer(p, "landlock", abi >= 1);
    json_object_set_new(p->plan, "landlock_abi", json_integer(abi));
    if (abi < 1) note_missing(p, "Landlock (file access rules)");
    if (!p->net_any && p->tcp_ports) {
      set_layer(p, "landlock_net", abi >= 4);
      if (abi < 4) note_missing(p, "Landlock ABI 4 (TCP port rules)");
    } else if (p->net_off) {
      /* The network namespace does the work; Landlock's TCP rules back it up when present. */
      set_layer(p, "landlock_net", abi >= 4);
      if (abi < 4 && !pr->netns) note_missing(p, "Landlock ABI 4 (TCP port rules)");
    } else {
      set_layer(p, "landlock_net", 0);
    }
    set_layer(p, "landlock_scope", abi >= 6 && !p->net_any);
    /* seccomp denies exec (run=false) and new Unix sockets (net not granted in full). */
    set_layer(p, "seccomp", (!p->run || !p->net_any) && pr->seccomp);
    if (!p->run && !pr->seccomp && abi < 1)
      note_missing(p, "seccomp or Landlock (to deny exec for run=false)");
    /* Landlock does not cover connect() to a Unix socket's path (the Docker socket...). */
    if (!p->net_any && !pr->seccomp)
      note_missing(p, "seccomp (to deny Unix sockets, which Landlock does not cover)");
  }
  if (json_object_get(limits, "max_processes") != NULL) {
    int cg = geteuid() == 0 && pr->pids_cgroup[0];
    set_layer(p, "pids_cgroup", cg);
    if (cg) json_object_set_new(p->plan, "pids_cgroup", json_string(pr->pids_cgroup));
    /* RLIMIT_NPROC never binds uid 0 (the kernel exempts INIT_USER). */
    if (geteuid() == 0 && !cg)
      note_missing(p,
                   "a writable pids cgroup (limits.max_processes as root: RLIMIT_NPROC does "
                   "not bind uid 0)");
  }
  return 0;
}

/* strict: every missing layer is fatal, and the message lists them all at once. */
static int refuse_missing(plan_t *p) {
  kh__strbuf_t sb = {0};
  size_t k;
  json_t *v;
  json_array_foreach(p->missing, k, v) {
    if (k) kh__sb_puts(&sb, ", ");
    kh__sb_puts(&sb, json_string_value(v));
  }
  kh__set_err(p->errmsg,
              "sandbox: this system cannot enforce the requested permissions: missing %s%s%s; "
              "pass sandbox: \"best-effort\" to run with the layers that are available",
              sb.buf ? sb.buf : "?", p->pr->userns_err[0] ? "; " : "", p->pr->userns_err);
  kh__sb_free(&sb);
  return KH_ENOTSUP;
}

/* The steps: the workspace (filesystem), an early way out when nothing is asked, then every
 * array the worker and the info read is created at once, owned by the plan, so that any
 * failure below frees everything with one json_decref. */
int kh__sandbox_new(kh__sandbox_t **out, const json_t *opts, char *errmsg) {
  const json_t *limits = json_object_get(opts, "limits");
  const char *mode = json_string_value(json_object_get(opts, "sandbox"));
  const json_t *v;
  kh__sandbox_t *sb;
  plan_t p;
  int strict = mode == NULL || strcmp(mode, "best-effort") != 0;
  int rc;

  *out = NULL;
  memset(&p, 0, sizeof(p));
  p.errmsg = errmsg;
  p.perms = json_object_get(opts, "permissions");
  p.run = 1;
  p.net_any = 1;
  if ((rc = plan_filesystem(&p, json_object_get(opts, "filesystem"))) != 0) return rc;
  /* Nothing asked: the worker runs as any process of the host's user (no plan, no probe). */
  if (p.perms == NULL && p.root == NULL && limits == NULL) return 0;

  p.pr = probe();
  p.plan = json_object();
  if (p.plan == NULL) return KH_ENOMEM;
  json_object_set_new(p.plan, "strict", json_boolean(strict));
  json_object_set_new(p.plan, "confine", json_boolean(p.perms != NULL));
  p.layers = json_object();
  json_object_set_new(p.plan, "layers", p.layers);
  p.missing = new_array(p.plan, "missing");
  p.read = new_array(p.plan, "read");
  p.write = new_array(p.plan, "write");
  if (p.perms != NULL) {
    plan_permissions(&p);
  } else {
    /* Not confined: the runtime needs no grant, but the info still lists (empty) arrays. */
    new_array(p.plan, "runtime_read");
    new_array(p.plan, "runtime_read_write");
    new_array(p.plan, "runtime_exec");
  }
  if ((v = json_object_get(opts, "env")) != NULL) json_object_set(p.plan, "set_env", (json_t *)v);
  if ((v = json_object_get(opts, "cwd")) != NULL) json_object_set(p.plan, "cwd", (json_t *)v);
  if (p.root != NULL) {
    json_object_set_new(p.plan, "mount",
                        json_pack("{s:o, s:o, s:b, s:b}", "root", path_str(p.root), "mount_point",
                                  path_str(p.mp), "read_only", p.ro, "bind", p.bind));
    /* The mount is the kernel's workspace: granted as asked (read-only or read-write). */
    if (p.perms != NULL) {
      json_array_append_new(p.read, path_str(p.mp));
      if (!p.ro) json_array_append_new(p.write, path_str(p.mp));
    }
  }
  if (limits != NULL) json_object_set(p.plan, "limits", (json_t *)limits);
  if ((rc = plan_layers(&p, limits)) != 0 ||
      (strict && json_array_size(p.missing) > 0 && (rc = refuse_missing(&p)) != 0)) {
    json_decref(p.plan);
    return rc;
  }
  sb = calloc(1, sizeof(*sb));
  if (sb == NULL) {
    json_decref(p.plan);
    return KH_ENOMEM;
  }
  sb->plan = p.plan;
  *out = sb;
  return 0;
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
                "runtime_read", json_object_get(p, "runtime_read"), "runtime_read_write",
                json_object_get(p, "runtime_read_write"));
  if (o != NULL) json_object_set_new(info, "sandbox", o);
}

void kh__sandbox_cgroup_remove(const char *base, int pid) {
  char dir[300];
  /* The group the worker made for itself (sandbox-apply.c, or the fork server's child). */
  snprintf(dir, sizeof(dir), "%s/w-%d", base, pid);
  rmdir(dir);
}

void kh__sandbox_cleanup(const json_t *plan, int pid) {
  const char *cg = json_string_value(json_object_get(plan, "pids_cgroup"));
  if (cg != NULL) kh__sandbox_cgroup_remove(cg, pid);
}

static pthread_once_t cgroup_once = PTHREAD_ONCE_INIT;
static char cgroup_dir[256];

static void cgroup_run(void) {
  const char *pretend = getenv("KH_SANDBOX_PRETEND_MISSING");
  probe_t p;
  if (geteuid() != 0 || (pretend != NULL && has_token(pretend, "pids"))) return;
  memset(&p, 0, sizeof(p));
  probe_pids_cgroup(&p);
  snprintf(cgroup_dir, sizeof(cgroup_dir), "%s", p.pids_cgroup);
}

const char *kh__sandbox_pids_cgroup(void) {
  pthread_once(&cgroup_once, cgroup_run);
  return cgroup_dir[0] ? cgroup_dir : NULL;
}

/* sandbox-apply.c: the worker confining itself to its sandbox plan (sandbox-plan.c made it on
 * the host): the pids cgroup, user, mount and network namespaces, the bind mount, rlimits, the
 * environment, capabilities, no_new_privs, Landlock (landlock.c) and seccomp. Thread: the
 * worker's main thread, while it is the only one (kernelhost-worker, tests/security's runner).
 *
 * The order is forced by the kernel: the cgroup is joined while we still hold the host's
 * privileges; namespaces come before the mount they make private; the environment is filtered
 * before anything can read it; capabilities go and no_new_privs is set before Landlock and
 * seccomp, which require it. Each layer records itself in `layers` ({name: bool}); a layer that
 * fails is fatal under "strict" and a `missing` entry under "best-effort" (layer_failed). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/securebits.h>
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
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/mman.h>
#include <unistd.h>
#include <seccomp.h>

#include "internal.h"

extern char **environ;

typedef struct {
  const json_t *plan; /* borrowed */
  int strict;
  json_t *layers;  /* owned: what is actually in force, for the report */
  json_t *missing; /* owned: what best-effort went without, for the report */
  char *errmsg;
} apply_t;

int kh__sandbox_write_file(const char *path, const char *s) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  ssize_t n, len = (ssize_t)strlen(s);
  if (fd < 0) return -errno;
  /* One write: /proc and /sys files take their value in a single call (uid_map must). */
  n = write(fd, s, (size_t)len);
  if (n != len) {
    int e = n < 0 ? errno : EIO;
    close(fd);
    return -e;
  }
  close(fd);
  return 0;
}

int kh__sandbox_map_ids(uid_t uid, gid_t gid) {
  char buf[64];
  int rc;
  /* An unprivileged process may write gid_map only once setgroups is denied (user_namespaces
   * (7)); kernels older than 3.19 have no such file, and need nothing. */
  if ((rc = kh__sandbox_write_file("/proc/self/setgroups", "deny")) != 0 && rc != -ENOENT)
    return rc;
  snprintf(buf, sizeof(buf), "%u %u 1\n", (unsigned)uid, (unsigned)uid);
  if ((rc = kh__sandbox_write_file("/proc/self/uid_map", buf)) != 0) return rc;
  snprintf(buf, sizeof(buf), "%u %u 1\n", (unsigned)gid, (unsigned)gid);
  return kh__sandbox_write_file("/proc/self/gid_map", buf);
}

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

/* Sets a layer that nothing marked failed yet. */
static void layer_on(apply_t *a, const char *layer) {
  if (json_object_get(a->layers, layer) == NULL) json_object_set_new(a->layers, layer, json_true());
}

/* The mount point may not exist yet ("/home/user" in a fresh container): made inside the
 * private mount namespace's view, with the host user's rights. */
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

/* --- limits ------------------------------------------------------------------------------ */

/* limits.max_processes as root: RLIMIT_NPROC never binds uid 0, a pids cgroup does. Each
 * worker gets its own child group "w-<pid>" (kh__sandbox_cleanup removes it after the reap). */
/* Whether this process is in cgroup directory dir already (a fork server's pooled worker
 * joined it before it was claimed): /proc/self/cgroup names the pids hierarchy's group (v1,
 * "N:pids:/path") or the unified one (v2, "0::/path"), relative to the hierarchy's mount. */
static int in_cgroup(const char *dir) {
  char line[512];
  int found = 0;
  FILE *f = fopen("/proc/self/cgroup", "re");
  if (f == NULL) return 0;
  while (!found && fgets(line, sizeof(line), f)) {
    char *ctl = strchr(line, ':'), *path = ctl ? strchr(ctl + 1, ':') : NULL;
    size_t n, d = strlen(dir);
    if (path == NULL) continue;
    *ctl = '\0';
    *path++ = '\0';
    path[strcspn(path, "\n")] = '\0';
    n = strlen(path);
    if (strcmp(line, "0") != 0 && strstr(ctl + 1, "pids") == NULL) continue;
    /* path starts with '/': a match ends at a component boundary of dir. */
    found = n > 1 && n < d && strcmp(dir + d - n, path) == 0;
  }
  fclose(f);
  return found;
}

static int join_pids_cgroup(apply_t *a, const char *base, uint64_t max) {
  char dir[300], f[340], num[32];
  int rc;
  snprintf(dir, sizeof(dir), "%s/w-%d", base, (int)getpid());
  if (mkdir(dir, 0755) != 0 && errno != EEXIST)
    return layer_failed(a, "pids_cgroup", "cannot create pids cgroup %s: %s", dir, strerror(errno));
  snprintf(f, sizeof(f), "%s/pids.max", dir);
  snprintf(num, sizeof(num), "%llu", (unsigned long long)max);
  if ((rc = kh__sandbox_write_file(f, num)) == 0 && !in_cgroup(dir)) {
    snprintf(f, sizeof(f), "%s/cgroup.procs", dir);
    snprintf(num, sizeof(num), "%d", (int)getpid());
    rc = kh__sandbox_write_file(f, num);
  }
  if (rc != 0) {
    rmdir(dir);
    return layer_failed(a, "pids_cgroup", "cannot join pids cgroup %s: %s", dir, strerror(-rc));
  }
  return 0;
}

/* Soft and hard limits both: with the hard limit left high, user code could raise the soft
 * one again (setrlimit needs no privilege below the hard limit). */
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
  /* Address space, not RSS: RLIMIT_RSS is not enforced by Linux. Python then raises
   * MemoryError instead of the OOM killer taking the whole worker. */
  if ((v = json_object_get(limits, "memory_bytes")) != NULL &&
      (rc = set_rlimit(a, RLIMIT_AS, "RLIMIT_AS", (uint64_t)json_integer_value(v),
                       (uint64_t)json_integer_value(v))))
    return rc;
  /* SIGXCPU at the soft limit (the worker dies with that reason), SIGKILL a second later. */
  if ((v = json_object_get(limits, "cpu_seconds")) != NULL &&
      (rc = set_rlimit(a, RLIMIT_CPU, "RLIMIT_CPU", (uint64_t)json_integer_value(v),
                       (uint64_t)json_integer_value(v) + 1)))
    return rc;
  if ((v = json_object_get(limits, "max_processes")) != NULL &&
      (rc = set_rlimit(a, RLIMIT_NPROC, "RLIMIT_NPROC", (uint64_t)json_integer_value(v),
                       (uint64_t)json_integer_value(v))))
    return rc;
  layer_on(a, "rlimits");
  return 0;
}

/* --- the environment ---------------------------------------------------------------------- */

/* The original environment block (what /proc/self/environ shows) spans [start, end): the
 * strings execve copied onto the stack, which setenv and clearenv never touch. */
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

/* Whether the variable name (n bytes, not NUL-terminated) is granted: true grants all. */
static int env_granted(const json_t *grant, const char *name, size_t n) {
  size_t i;
  json_t *e;
  if (json_is_true(grant)) return 1;
  json_array_foreach(grant, i, e) {
    if (json_string_length(e) == n && memcmp(json_string_value(e), name, n) == 0) return 1;
  }
  return 0;
}

/* Only granted host variables stay (grant NULL: no filter); the kernel's own `env` values are
 * set. The original block is wiped too: clearenv() only drops the pointers, and the strings
 * would stay readable in /proc/self/environ and in memory. */
static int apply_env(apply_t *a, const json_t *grant, const json_t *set) {
  char **keep = NULL;
  size_t n = 0, k = 0, i;
  unsigned long start = 0, end = 0;
  const char *key;
  json_t *v;
  if (grant != NULL) {
    for (n = 0; environ && environ[n]; n++) {
    }
    /* Copies first: clearenv() drops environ, and the strings it pointed to are wiped below. */
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
  json_object_set_new(a->layers, "env_filter", json_boolean(grant != NULL));
  return 0;
}

/* --- namespaces and the mount ------------------------------------------------------------- */

/* Read-only, recursively: mount_setattr (Linux 5.12) covers submounts in one call; the
 * remount fallback covers only the top mount, which is all older kernels offer. */
static int mount_ro(const char *path) {
  struct mount_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
  if (syscall(SYS_mount_setattr, AT_FDCWD, path, AT_RECURSIVE, &attr, sizeof(attr)) == 0) return 0;
  return mount(NULL, path, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL);
}

/* A mount failure is KH_ENOTSUP even under best-effort: the kernel would otherwise see (and
 * write) another directory than the one it was promised. */
static int apply_mount(apply_t *a, const json_t *m) {
  const char *root = json_string_value(json_object_get(m, "root"));
  const char *mp = json_string_value(json_object_get(m, "mount_point"));
  int ro = json_is_true(json_object_get(m, "read_only"));
  int rc;
  /* Read-only also through root's own path, not only at the mount point. */
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

/* A user namespace where the system allows one (so an unprivileged host can mount), else, as
 * root, plain mount and network namespaces. The network namespace holds only a loopback that
 * is down: nothing inside can reach any host. */
/* kh__sandbox_prepare_netns's namespace, or -1. */
static int spare_netns = -1;

void kh__sandbox_prepare_netns(void) {
  int own, spare;
  if (geteuid() != 0 || spare_netns >= 0) return;
  if ((own = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC)) < 0) return;
  if (unshare(CLONE_NEWNET) == 0) {
    spare = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    /* Back to its own: a kernel with network must find the host's. Failing that, this process
     * cannot serve it: it exits, and the pool makes another. */
    if (setns(own, CLONE_NEWNET) != 0) _exit(72);
    if (spare >= 0) {
      spare_netns = fcntl(spare, F_DUPFD_CLOEXEC, 10);
      close(spare);
    }
  }
  close(own);
}

void kh__sandbox_release_netns(void) {
  if (spare_netns >= 0) close(spare_netns);
  spare_netns = -1;
}

static int apply_namespaces(apply_t *a, int want_net, int want_mount) {
  uid_t uid = getuid();
  gid_t gid = getgid();
  int flags = CLONE_NEWNS | (want_net ? CLONE_NEWNET : 0);
  int rc;
  /* The empty network namespace made ahead of need, entered while still root in ours (setns
   * needs CAP_SYS_ADMIN over it); it is owned by the initial user namespace, so the kernel's
   * own user namespace gets no capability in it at all. */
  if (want_net && spare_netns >= 0 && setns(spare_netns, CLONE_NEWNET) == 0) flags &= ~CLONE_NEWNET;
  kh__sandbox_release_netns();
  if (unshare(CLONE_NEWUSER | flags) == 0) {
    if ((rc = kh__sandbox_map_ids(uid, gid)) != 0) {
      kh__set_err(a->errmsg, "sandbox: cannot write the user namespace's id maps: %s",
                  strerror(-rc));
      return KH_ENOTSUP;
    }
    json_object_set_new(a->layers, "user_namespace", json_true());
  } else {
    int e = errno;
    json_object_set_new(a->layers, "user_namespace", json_false());
    if (geteuid() != 0 || unshare(flags) != 0) {
      if (want_mount) {
        kh__set_err(a->errmsg, "sandbox: cannot create a private mount namespace: %s", strerror(e));
        return KH_ENOTSUP;
      }
      json_object_set_new(a->layers, "mount_namespace", json_false());
      if (want_net) return layer_failed(a, "net_namespace", "unshare: %s", strerror(e));
      return 0;
    }
  }
  /* Mount events must not travel back to the host's namespace (systemd makes / shared). */
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
    kh__set_err(a->errmsg, "sandbox: cannot make the mount namespace private: %s", strerror(errno));
    return KH_ENOTSUP;
  }
  json_object_set_new(a->layers, "mount_namespace", json_true());
  json_object_set_new(a->layers, "net_namespace", json_boolean(want_net));
  return 0;
}

/* --- sealing: capabilities, Landlock, seccomp --------------------------------------------- */

/* Nothing the sandboxed code runs may hold or regain a capability, in any namespace: the user
 * namespace gave us a full set in it, which could undo the mount. The securebits stop setuid
 * binaries and uid 0 from getting them back. */
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

/* The plan's path lists become Landlock rules. run=false keeps execute out of every grant
 * (and leaves the runtime's bin directories out); tcp: Landlock handles TCP ports (net=false,
 * or net given as host:port pairs). */
static int apply_landlock(apply_t *a, int run, int tcp) {
  const json_t *p = a->plan;
  json_t *plan_abi = json_object_get(p, "landlock_abi");
  /* Execute rides on read grants only when run is granted: shared libraries are mapped with
   * mmap(PROT_EXEC), which Landlock does not check, so the runtime loads either way. */
  unsigned x = run ? KH__LL_EXEC : 0;
  const struct {
    const char *key;
    unsigned grant; /* 0: not granted at all */
  } lists[] = {{"runtime_read", KH__LL_READ | x},
               {"runtime_read_write", KH__LL_READ | KH__LL_WRITE_FILE},
               {"runtime_exec", run ? KH__LL_READ | KH__LL_EXEC : 0},
               {"read", KH__LL_READ | x},
               {"write", KH__LL_READ | KH__LL_WRITE | x}};
  kh__landlock_t ll;
  const char *bad = NULL;
  char self_exe[PATH_MAX];
  int abi = kh__landlock_abi(), rc;
  size_t i, j;
  json_t *e;
  ssize_t n;
  /* No more than the host planned (and reported in the kernel's info); what it planned must
   * be here, since worker and host run on one kernel. */
  if (plan_abi != NULL && abi > json_integer_value(plan_abi))
    abi = (int)json_integer_value(plan_abi);
  if (abi < 1) return layer_failed(a, "landlock", "Landlock is not available");
  if (tcp && abi < 4 &&
      json_is_true(json_object_get(json_object_get(p, "layers"), "landlock_net")) &&
      layer_failed(a, "landlock_net", "Landlock TCP rules need ABI 4, the kernel has %d", abi))
    return KH_ENOTSUP;
  /* Scoping (ABI 6) keeps the kernel from signalling or reaching abstract Unix sockets of
   * processes outside its domain, unless the network is granted in full. */
  if ((rc = kh__landlock_open(&ll, abi, tcp, !json_is_true(json_object_get(p, "net")))) != 0)
    return layer_failed(a, "landlock", "landlock_create_ruleset: %s", strerror(-rc));
  for (i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
    if (lists[i].grant == 0) continue;
    json_array_foreach(json_object_get(p, lists[i].key), j, e) {
      if ((rc = kh__landlock_allow_path(&ll, json_string_value(e), lists[i].grant)) != 0) {
        bad = json_string_value(e);
        goto fail;
      }
    }
  }
  /* The worker's own executable (the test runner's, in tests/security) stays readable. */
  n = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
  if (n > 0) {
    self_exe[n] = '\0';
    if ((rc = kh__landlock_allow_path(&ll, self_exe, KH__LL_READ)) != 0) {
      bad = self_exe;
      goto fail;
    }
  }
  json_array_foreach(json_object_get(p, "net_ports"), j, e) {
    if ((rc = kh__landlock_allow_port(&ll, (uint64_t)json_integer_value(e))) != 0) {
      bad = "a TCP port rule";
      goto fail;
    }
  }
  if ((rc = kh__landlock_restrict(&ll)) != 0) {
    bad = "landlock_restrict_self";
    goto fail;
  }
  json_object_set_new(a->layers, "landlock", json_true());
  json_object_set_new(a->layers, "landlock_abi", json_integer(abi));
  json_object_set_new(a->layers, "landlock_net", json_boolean(ll.net));
  json_object_set_new(a->layers, "landlock_scope", json_boolean(ll.scoped));
  return 0;
fail:
  kh__landlock_close(&ll);
  return layer_failed(a, "landlock", "Landlock rule for %s: %s", bad ? bad : "?", strerror(-rc));
}

/* deny_exec (run=false): no execve/execveat (memfd and fexecve included). deny_unix (net not
 * granted in full): no new Unix socket, since Landlock does not cover connect() to a socket's
 * path (the Docker socket...). socketpair stays: asyncio and multiprocessing use it and it
 * reaches nobody. */
/* The filter for (deny_exec, deny_unix), as libseccomp builds it. Other architectures' system
 * calls (i386, x32) kill the process: libseccomp's default. NULL on failure (rc set). */
static scmp_filter_ctx seccomp_filter(int deny_exec, int deny_unix, int *rc) {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  *rc = 0;
  if (ctx == NULL) {
    *rc = -ENOMEM;
    return NULL;
  }
  if ((deny_exec &&
       ((*rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(execve), 0)) != 0 ||
        (*rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(execveat), 0)) != 0)) ||
      (deny_unix && (*rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(socket), 1,
                                            SCMP_A0(SCMP_CMP_EQ, AF_UNIX))) != 0)) {
    seccomp_release(ctx);
    return NULL;
  }
  return ctx;
}

/* kh__sandbox_precompile's programs, by deny_exec * 2 + deny_unix (len 0: none). */
static struct sock_fprog compiled[4];

void kh__sandbox_precompile(void) {
  int i;
  for (i = 1; i < 4; i++) {
    int rc, fd = memfd_create("kh-seccomp", MFD_CLOEXEC);
    scmp_filter_ctx ctx = fd >= 0 ? seccomp_filter(i >> 1, i & 1, &rc) : NULL;
    off_t n = ctx != NULL && seccomp_export_bpf(ctx, fd) == 0 ? lseek(fd, 0, SEEK_END) : -1;
    void *prog = n > 0 && n % sizeof(struct sock_filter) == 0 ? malloc((size_t)n) : NULL;
    if (prog != NULL && pread(fd, prog, (size_t)n, 0) == n) {
      compiled[i].len = (unsigned short)(n / sizeof(struct sock_filter));
      compiled[i].filter = prog;
    } else {
      free(prog);
    }
    if (ctx != NULL) seccomp_release(ctx);
    if (fd >= 0) close(fd);
  }
}

static int apply_seccomp(apply_t *a, int deny_exec, int deny_unix) {
  const struct sock_fprog *p = &compiled[deny_exec * 2 + deny_unix];
  scmp_filter_ctx ctx;
  int rc;
  if (p->len > 0) {
    /* The template's program, built by libseccomp from the same rules (no_new_privs is set). */
    rc = prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, p, 0, 0) == 0 ? 0 : -errno;
  } else if ((ctx = seccomp_filter(deny_exec, deny_unix, &rc)) != NULL) {
    rc = seccomp_load(ctx);
    seccomp_release(ctx);
  }
  if (rc != 0) return layer_failed(a, "seccomp", "seccomp filter: %s", strerror(-rc));
  json_object_set_new(a->layers, "seccomp", json_true());
  return 0;
}

/* Threads in this process (from /proc/self/status), or -1 when unknown (which refuses too:
 * a sandbox that cannot tell must not assume). */
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

/* The steps, in the order the file's header explains. */
static int apply_all(apply_t *a) {
  const json_t *plan = a->plan;
  const json_t *m = json_object_get(plan, "mount");
  const json_t *limits = json_object_get(plan, "limits");
  const json_t *net = json_object_get(plan, "net");
  const char *cwd = json_string_value(json_object_get(plan, "cwd"));
  const char *cg = json_string_value(json_object_get(plan, "pids_cgroup"));
  /* Without `permissions` nothing is denied: run and net stay open, only mounts and limits
   * apply. net_off: no network at all (false, or an empty list, as the host planned it). */
  int confine = json_is_true(json_object_get(plan, "confine"));
  int run = !confine || json_is_true(json_object_get(plan, "run"));
  int net_off = confine && json_is_false(net);
  int want_mount = m != NULL && json_is_true(json_object_get(m, "bind"));
  int rc, nthreads;

  /* Landlock, seccomp and user namespaces bind the calling thread (and what it starts later):
   * a thread that already runs would stay outside, and user code could borrow it (ctypes). */
  if ((nthreads = thread_count()) != 1) {
    kh__set_err(a->errmsg,
                "sandbox: must be applied while the process is single-threaded (it has %d "
                "threads)",
                nthreads);
    return KH_EINVAL;
  }
  /* 1. What needs the host's own privileges: the pids cgroup (root only). */
  if (cg != NULL) {
    uint64_t max = (uint64_t)json_integer_value(json_object_get(limits, "max_processes"));
    if ((rc = join_pids_cgroup(a, cg, max)) != 0) return rc;
    layer_on(a, "pids_cgroup");
  }
  /* 2. Namespaces, then the mount inside the private mount namespace; the kernel starts in
   * its workspace unless `cwd` says otherwise. */
  if ((want_mount || net_off) && (rc = apply_namespaces(a, net_off, want_mount)) != 0) return rc;
  if (m != NULL && (rc = apply_mount(a, m)) != 0) return rc;
  if (cwd == NULL && m != NULL) cwd = json_string_value(json_object_get(m, "mount_point"));
  if (cwd != NULL && chdir(cwd) != 0) {
    kh__set_err(a->errmsg, "sandbox: cannot change to directory '%s': %s", cwd, strerror(errno));
    return KH_ENOTSUP;
  }
  /* 3. Limits and the environment. */
  if (limits != NULL && (rc = apply_limits(a, limits)) != 0) return rc;
  if ((rc = apply_env(a, confine ? json_object_get(plan, "env") : NULL,
                      json_object_get(plan, "set_env"))) != 0)
    return rc;
  /* 4. Seal: no capabilities, no new privileges, then Landlock and seccomp (which need
   * no_new_privs, or the privileges just dropped). */
  drop_caps();
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    kh__set_err(a->errmsg, "sandbox: PR_SET_NO_NEW_PRIVS failed: %s", strerror(errno));
    return KH_ENOTSUP;
  }
  json_object_set_new(a->layers, "no_new_privs", json_true());
  if (!confine) return 0;
  if ((rc = apply_landlock(a, run, net_off || json_object_get(plan, "net_ports") != NULL)) != 0)
    return rc;
  if (!run || !json_is_true(net)) return apply_seccomp(a, !run, !json_is_true(net));
  return 0;
}

int kh__sandbox_apply(const json_t *plan, json_t **report, char *errmsg) {
  apply_t a;
  int pdeath = 0, rc;
  pid_t ppid = getppid();

  if (report) *report = NULL;
  memset(&a, 0, sizeof(a));
  a.plan = plan;
  a.strict = json_is_true(json_object_get(plan, "strict"));
  a.layers = json_object();
  a.missing = json_array();
  a.errmsg = errmsg;
  /* The parent-death signal is read before the namespaces change our credentials. */
  prctl(PR_GET_PDEATHSIG, &pdeath, 0, 0, 0);
  rc = apply_all(&a);
  /* Credential changes (the user namespace's) clear the parent-death signal: put it back, and
   * close the race with a parent that died meanwhile. A worker is never orphaned. */
  if (pdeath) {
    prctl(PR_SET_PDEATHSIG, pdeath, 0, 0, 0);
    if (getppid() != ppid) kill(getpid(), pdeath);
  }
  if (rc == 0 && report)
    *report = json_pack("{s:O, s:O}", "layers", a.layers, "missing", a.missing);
  json_decref(a.layers);
  json_decref(a.missing);
  return rc;
}

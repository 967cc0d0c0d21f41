/* landlock.c: Landlock's system calls and access rights, behind four calls that the worker's
 * sandbox (sandbox-apply.c) uses to confine files and TCP ports. The host only asks for the
 * ABI (sandbox-plan.c, when it plans). Thread: the worker's only thread, before user code; the
 * ABI query is safe on any thread.
 *
 * Landlock grows by ABI versions: each adds rights a ruleset may "handle" (deny unless a rule
 * grants them). A ruleset must never name a right the running kernel does not know, or
 * landlock_create_ruleset fails with EINVAL, so every mask below is cut to the ABI in use. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

/* Landlock's UAPI, spelled out: Debian 12's <linux/landlock.h> stops at ABI 2, and the kernel
 * the worker runs on may well be newer (ABI 4 brings TCP rules, ABI 6 scopes). The values are
 * the kernel's and never change. */
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

/* The attribute grows with the ABI; the kernel is told how much of it we filled in. */
struct ll_ruleset_attr {
  uint64_t handled_access_fs;
  uint64_t handled_access_net; /* ABI 4 */
  uint64_t scoped;             /* ABI 6 */
};
struct ll_path_beneath_attr {
  uint64_t allowed_access;
  int32_t parent_fd;
} __attribute__((packed)); /* the kernel's layout: no padding after the 64-bit field */
struct ll_net_port_attr {
  uint64_t allowed_access;
  uint64_t port;
};

/* Rights that make sense on a file itself, not only on a directory's contents: a rule on a
 * file that names any other right fails with EINVAL. */
#define LL_FS_FILE_RIGHTS \
  (LL_FS_EXECUTE | LL_FS_WRITE_FILE | LL_FS_READ_FILE | LL_FS_TRUNCATE | LL_FS_IOCTL_DEV)
#define LL_R (LL_FS_READ_FILE | LL_FS_READ_DIR)
/* Write beneath a directory: create, remove, rename (REFER) and truncate, but not make device
 * nodes or sockets, which a kernel never needs. */
#define LL_W                                                                                   \
  (LL_FS_WRITE_FILE | LL_FS_REMOVE_DIR | LL_FS_REMOVE_FILE | LL_FS_MAKE_DIR | LL_FS_MAKE_REG | \
   LL_FS_MAKE_SYM | LL_FS_MAKE_FIFO | LL_FS_REFER | LL_FS_TRUNCATE)

/* Every file right the ABI knows: handled rights are denied unless granted, so handling all
 * of them is what makes the ruleset deny by default. */
static uint64_t handled_fs(int abi) {
  uint64_t h = (LL_FS_MAKE_SYM << 1) - 1; /* ABI 1: bits 0..12 */
  if (abi >= 2) h |= LL_FS_REFER;
  if (abi >= 3) h |= LL_FS_TRUNCATE;
  if (abi >= 5) h |= LL_FS_IOCTL_DEV;
  return h;
}

/* KH__LL_* grants to Landlock's rights. */
static uint64_t fs_rights(unsigned grant) {
  uint64_t r = 0;
  if (grant & KH__LL_READ) r |= LL_R;
  if (grant & KH__LL_WRITE) r |= LL_W;
  if (grant & KH__LL_WRITE_FILE) r |= LL_FS_WRITE_FILE | LL_FS_TRUNCATE;
  if (grant & KH__LL_EXEC) r |= LL_FS_EXECUTE;
  return r;
}

int kh__landlock_abi(void) {
  long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LL_CREATE_RULESET_VERSION);
  return abi > 0 ? (int)abi : 0;
}

int kh__landlock_open(kh__landlock_t *ll, int abi, int tcp, int scope) {
  struct ll_ruleset_attr attr;
  size_t attr_size = sizeof(uint64_t);
  memset(ll, 0, sizeof(*ll));
  ll->fd = -1;
  if (abi < 1) return -EOPNOTSUPP;
  memset(&attr, 0, sizeof(attr));
  attr.handled_access_fs = handled_fs(abi);
  if (abi >= 4) {
    attr_size = 2 * sizeof(uint64_t);
    if (tcp) attr.handled_access_net = LL_NET_BIND_TCP | LL_NET_CONNECT_TCP;
  }
  if (abi >= 6) {
    attr_size = sizeof(attr);
    if (scope) attr.scoped = LL_SCOPE_ABSTRACT_UNIX | LL_SCOPE_SIGNAL;
  }
  ll->fd = (int)syscall(SYS_landlock_create_ruleset, &attr, attr_size, 0);
  if (ll->fd < 0) return -errno;
  ll->abi = abi;
  ll->handled_fs = attr.handled_access_fs;
  ll->net = attr.handled_access_net != 0;
  ll->scoped = attr.scoped != 0;
  return 0;
}

int kh__landlock_allow_path(kh__landlock_t *ll, const char *path, unsigned grant) {
  struct ll_path_beneath_attr pb;
  struct stat st;
  uint64_t access = fs_rights(grant);
  int fd = open(path, O_PATH | O_CLOEXEC);
  int rc = 0;
  /* Nothing there is nothing to grant: the runtime's list names paths that only some systems
   * have (/lib64, /etc/python3.11). EACCES: we could not reach it before Landlock either. */
  if (fd < 0) return errno == ENOENT || errno == ENOTDIR || errno == EACCES ? 0 : -errno;
  if (fstat(fd, &st) == 0 && !S_ISDIR(st.st_mode)) access &= LL_FS_FILE_RIGHTS;
  pb.allowed_access = access & ll->handled_fs;
  pb.parent_fd = fd;
  if (pb.allowed_access &&
      syscall(SYS_landlock_add_rule, ll->fd, LL_RULE_PATH_BENEATH, &pb, 0) != 0)
    rc = -errno;
  close(fd);
  return rc;
}

int kh__landlock_allow_port(kh__landlock_t *ll, uint64_t port) {
  struct ll_net_port_attr np;
  if (!ll->net) return 0; /* TCP is not handled: every port is open anyway */
  np.allowed_access = LL_NET_BIND_TCP | LL_NET_CONNECT_TCP;
  np.port = port;
  if (syscall(SYS_landlock_add_rule, ll->fd, LL_RULE_NET_PORT, &np, 0) != 0) return -errno;
  return 0;
}

int kh__landlock_restrict(kh__landlock_t *ll) {
  int rc = 0;
  if (syscall(SYS_landlock_restrict_self, ll->fd, 0) != 0) rc = -errno;
  kh__landlock_close(ll);
  return rc;
}

void kh__landlock_close(kh__landlock_t *ll) {
  if (ll->fd >= 0) close(ll->fd);
  ll->fd = -1;
}

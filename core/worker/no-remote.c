/* no-remote.c: kernelhost-worker's stand-in for the remote backend. The worker runs one
 * kernel's Python and never a kernel of its own, so backend.c's table entry for mode "remote"
 * is never used here; this definition comes before the library's, which therefore stays out of
 * the executable with libcurl and libwebsockets. */
#include "internal.h"

static int no_remote_start(kh_kernel_t *k) {
  kh__set_err(k->m->errmsg, "mode \"remote\" is not available inside kernelhost-worker");
  return KH_ENOTSUP;
}

const kh__backend_t kh__remote_backend = {
    .name = "remote",
    .start = no_remote_start,
    .index = KH__BACKEND_REMOTE,
};

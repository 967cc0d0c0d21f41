/* backend.c: the table of backends and the one place that decides which one runs a kernel.
 * Thread: loop. A new kernel kind (a remote gateway, a fork server) is one new file that fills
 * a kh__backend_t (internal.h says what each op must do) and one line here. */
#include "internal.h"

static const kh__backend_t *const backends[KH__BACKEND_MAX] = {
    [KH__BACKEND_INPROC] = &kh__inproc_backend,
    [KH__BACKEND_HOST] = &kh__host_backend,
    [KH__BACKEND_WORKER] = &kh__worker_backend,
    [KH__BACKEND_REMOTE] = &kh__remote_backend,
};

const kh__backend_t *kh__backend_for(const kh__kernel_opts_t *o) {
  if (o->mode == KH__MODE_MAIN_THREAD)
    return o->host_thread ? backends[KH__BACKEND_HOST] : backends[KH__BACKEND_INPROC];
  if (o->mode == KH__MODE_REMOTE) return backends[KH__BACKEND_REMOTE];
  return backends[KH__BACKEND_WORKER];
}

void kh__backends_manager_open(kh_manager_t *m) {
  int i;
  for (i = 0; i < KH__BACKEND_MAX; i++)
    if (backends[i] != NULL && backends[i]->manager_open != NULL) backends[i]->manager_open(m);
}

void kh__backends_manager_close(kh_manager_t *m) {
  int i;
  for (i = 0; i < KH__BACKEND_MAX; i++)
    if (backends[i] != NULL && backends[i]->manager_close != NULL) backends[i]->manager_close(m);
}

void kh__backends_manager_free(kh_manager_t *m) {
  int i;
  for (i = 0; i < KH__BACKEND_MAX; i++)
    if (backends[i] != NULL && backends[i]->manager_free != NULL) backends[i]->manager_free(m);
}

/* backend-remote.c: mode "remote", kernels on a Jupyter Server / Kernel Gateway / Enterprise
 * Gateway (work in progress: the backend lands with its tests). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int kh_kernel_connect(kh_manager_t *m, const char *remote_id, const char *options_json,
                      char *id_out, size_t id_out_size, kh_kernel_create_cb cb, void *data) {
  json_t *o;
  char *text;
  int rc;
  if (m == NULL || remote_id == NULL) return KH_EINVAL;
  m->errmsg[0] = '\0';
  o = (options_json == NULL || !*options_json) ? json_object() : json_loads(options_json, 0, NULL);
  if (!json_is_object(o)) {
    json_decref(o);
    kh__set_err(m->errmsg, "options must be a JSON object");
    return KH_EOPTION;
  }
  {
    json_t *mode = json_object_get(o, "mode");
    if (mode != NULL && !json_is_null(mode) &&
        !(json_is_string(mode) && strcmp(json_string_value(mode), "remote") == 0)) {
      json_decref(o);
      kh__set_err(m->errmsg, "option 'mode' must be \"remote\" (or absent) to connect a kernel");
      return KH_EOPTION;
    }
  }
  if (json_object_get(o, "remote_id") != NULL || json_object_get(o, "remoteId") != NULL) {
    json_decref(o);
    kh__set_err(m->errmsg, "option 'remoteId' is the connect's own argument");
    return KH_EOPTION;
  }
  json_object_set_new(o, "mode", json_string("remote"));
  json_object_set_new(o, "remote_id", json_string(remote_id));
  if (json_object_get(o, "id") == NULL || json_is_null(json_object_get(o, "id")))
    json_object_set_new(o, "id", json_string(remote_id));
  text = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  if (text == NULL) return KH_ENOMEM;
  rc = kh_kernel_create(m, text, id_out, id_out_size, cb, data);
  free(text);
  return rc;
}

int kh_gateway_list(kh_manager_t *m, const char *what, kh_request_cb cb, void *data) {
  if (m == NULL || what == NULL || cb == NULL) return KH_EINVAL;
  kh__set_err(m->errmsg, "the remote backend is not built yet");
  return KH_ENOTSUP;
}

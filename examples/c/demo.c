/* demo.c: a small C host: two main_thread kernels, cells with streamed output, a result, an
 * error with its traceback, and a matplotlib figure saved from the image/png it sends.
 * Run: build/kh_demo [output.png] */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "kernelhost.h"

typedef struct {
  uv_loop_t *loop;
  kh_manager_t *m;
  const char *png_path;
  int pending;
  int png_written;
} demo_t;

/* Binary values (image/png here) arrive as bytes beside the JSON, at a JSON Pointer path. */
static void write_png(demo_t *d, const void *png, size_t len) {
  FILE *f = fopen(d->png_path, "wb");
  if (f != NULL) {
    fwrite(png, 1, len, f);
    fclose(f);
    d->png_written = 1;
    printf("    [wrote %zu bytes of PNG to %s]\n", len, d->png_path);
  }
}

static void on_event(kh_manager_t *m, const kh_event_t *ev, void *data) {
  demo_t *d = data;
  json_t *j = json_loadb(ev->json, ev->json_len, 0, NULL);
  (void)m;
  printf("  %.8s %-14s ", ev->kernel_id, ev->type_name);
  switch (ev->type) {
    case KH_EVENT_STREAM:
      printf("%s: %s", json_string_value(json_object_get(j, "name")),
             json_string_value(json_object_get(j, "text")));
      break;
    case KH_EVENT_EXECUTE_RESULT:
      printf("Out[%lld]: %s\n",
             (long long)json_integer_value(json_object_get(j, "execution_count")),
             json_string_value(json_object_get(json_object_get(j, "data"), "text/plain")));
      break;
    case KH_EVENT_EXECUTE_ERROR: {
      size_t i;
      json_t *line;
      printf("%s: %s\n", json_string_value(json_object_get(j, "ename")),
             json_string_value(json_object_get(j, "evalue")));
      json_array_foreach(json_object_get(j, "traceback"), i, line)
          printf("      | %s\n", json_string_value(line));
      break;
    }
    case KH_EVENT_DISPLAY_DATA: {
      json_t *bundle = json_object_get(j, "data");
      size_t i;
      printf("%s\n", json_string_value(json_object_get(bundle, "text/plain")));
      for (i = 0; i < ev->nbuffers; i++)
        if (strcmp(ev->buffers[i].path, "/data/image~1png") == 0 && !d->png_written)
          write_png(d, ev->buffers[i].data, ev->buffers[i].len);
      break;
    }
    default:
      printf("%s\n", ev->json);
  }
  json_decref(j);
}

static void on_done(kh_manager_t *m, const kh_reply_t *r, int status, void *data) {
  demo_t *d = data;
  (void)m;
  if (status != 0)
    printf("  request failed: %s\n", kh_err_name(status));
  else
    printf("  -> %s (execution_count %d)\n", r->status, r->execution_count);
  d->pending--;
}

static void run(demo_t *d, const char *id, const char *code) {
  int rc = kh_kernel_execute(d->m, id, code, strlen(code), NULL, NULL, 0, on_done, d);
  if (rc != 0) {
    fprintf(stderr, "execute: %s: %s\n", kh_err_name(rc), kh_manager_errmsg(d->m));
    exit(1);
  }
  d->pending++;
}

static void on_created(kh_manager_t *m, const char *id, int status, const char *errmsg,
                       void *data) {
  (void)m;
  (void)id;
  if (status != 0) {
    fprintf(stderr, "kernel failed to start: %s: %s\n", kh_err_name(status), errmsg);
    exit(1);
  }
  ((demo_t *)data)->pending--;
}

static void on_closed(kh_manager_t *m, void *data) {
  (void)m;
  (void)data;
}

int main(int argc, char **argv) {
  uv_loop_t loop;
  demo_t d;
  char a[64], b[64];
  uint64_t t0;
  memset(&d, 0, sizeof(d));
  d.png_path = argc > 1 ? argv[1] : "demo-figure.png";
  uv_loop_init(&loop);
  d.loop = &loop;
  if (kh_manager_new(&d.m, &loop, NULL) != 0) {
    fprintf(stderr, "kh_manager_new: %s\n", kh_manager_errmsg(NULL));
    return 1;
  }
  kh_subscribe(d.m, NULL, KH_EVENT_ALL, on_event, &d, NULL);

  printf("== creating two main_thread kernels\n");
  t0 = uv_hrtime();
  kh_kernel_create(d.m, "{\"mode\": \"main_thread\", \"namespace\": \"demo\"}", a, sizeof(a),
                   on_created, &d);
  kh_kernel_create(d.m, "{\"mode\": \"main_thread\", \"namespace\": \"demo\"}", b, sizeof(b),
                   on_created, &d);
  d.pending = 2;
  while (d.pending) uv_run(&loop, UV_RUN_ONCE);
  printf("== both ready in %.1f ms (includes starting CPython)\n", (uv_hrtime() - t0) / 1e6);

  printf("== cells on both kernels (events print as they arrive)\n");
  run(&d, a,
      "import time\nfor i in range(3):\n    print('kernel A tick', i)\n    time.sleep(0.05)");
  run(&d, b, "x = 6\nprint('kernel B sets x =', x)");
  run(&d, b, "x * 7");
  run(&d, a,
      "import matplotlib.pyplot as plt\n"
      "import numpy as np\n"
      "t = np.linspace(0, 2 * np.pi, 200)\n"
      "plt.plot(t, np.sin(t), label='sin')\n"
      "plt.plot(t, np.cos(t), label='cos')\n"
      "plt.legend(); plt.title('kernelhost demo')\n"
      "plt.show()");
  /* Last: an error also aborts the requests queued behind it (stop_on_error, as Jupyter). */
  run(&d, a, "def f(n):\n    return 10 / n\nf(0)");
  while (d.pending) uv_run(&loop, UV_RUN_ONCE);

  kh_manager_close(d.m, on_closed, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0) fprintf(stderr, "loop not closed cleanly\n");
  printf("== done%s\n", d.png_written ? "" : " (no figure was received!)");
  return d.png_written ? 0 : 1;
}

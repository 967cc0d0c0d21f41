/* test_display.c: rich output: MIME bundles, display ids, clear_output, IPython, matplotlib. */
#include "kh_test.h"

TEST(display_data_mime) {
  th_t t;
  char id[64];
  th_result_t r;
  json_t *j;
  th_event_t *e;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  j = th_exec(&t, id,
              "class Rich:\n"
              "    def _repr_html_(self): return '<b>hi</b>'\n"
              "    def _repr_markdown_(self): return '**hi**'\n"
              "    def _repr_png_(self): return b'\\x89PNG'\n"
              "    def __repr__(self): return 'Rich()'\n"
              "class Bundle:\n"
              "    def _repr_mimebundle_(self, include=None, exclude=None):\n"
              "        return {'application/x-custom+json': {'a': 1}, 'text/plain': 'B'}, "
              "{'k': 'v'}\n"
              "display(Rich())\n"
              "Bundle()",
              &r);
  ASSERT_STR(th_s(j, "status"), "ok");
  e = th_find(&t, KH_EVENT_DISPLAY_DATA, r.id, 0);
  ASSERT(e != NULL);
  ASSERT_STR(th_s(e->data, "data.text/html"), "<b>hi</b>");
  ASSERT_STR(th_s(e->data, "data.text/markdown"), "**hi**");
  ASSERT_STR(th_s(e->data, "data.image/png"), "iVBORw=="); /* base64, as Jupyter sends */
  ASSERT_STR(th_s(e->data, "data.text/plain"), "Rich()");
  ASSERT(json_is_object(th_get(e->data, "metadata")));
  ASSERT_INT(th_i(j, "result.data.application/x-custom+json.a"), ==, 1);
  ASSERT_STR(th_s(j, "result.data.text/plain"), "B");
  ASSERT_STR(th_s(j, "result.metadata.k"), "v");
  th_result_free(&r);
  th_fini(&t);
}

TEST(display_update_and_clear) {
  th_t t;
  char id[64];
  th_result_t r;
  th_event_t *d, *u, *c;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  th_exec(&t, id,
          "h = display('one', display_id='progress')\n"
          "h.update('two')\n"
          "update_display('three', display_id='progress')\n"
          "clear_output(wait=True)\n",
          &r);
  ASSERT_STR(th_s(r.json, "status"), "ok");
  d = th_find(&t, KH_EVENT_DISPLAY_DATA, r.id, 0);
  ASSERT(d != NULL);
  ASSERT_STR(th_s(d->data, "transient.display_id"), "progress");
  ASSERT_STR(th_s(d->data, "data.text/plain"), "'one'");
  ASSERT_INT(th_count(&t, KH_EVENT_UPDATE_DISPLAY_DATA, r.id), ==, 2);
  u = th_find(&t, KH_EVENT_UPDATE_DISPLAY_DATA, r.id, 1);
  ASSERT_STR(th_s(u->data, "transient.display_id"), "progress");
  ASSERT_STR(th_s(u->data, "data.text/plain"), "'three'");
  c = th_find(&t, KH_EVENT_CLEAR_OUTPUT, r.id, 0);
  ASSERT(c != NULL);
  ASSERT(json_is_true(th_get(c->data, "wait")));
  th_result_free(&r);
  th_fini(&t);
}

TEST(display_formatter_error_contained) {
  th_t t;
  char id[64];
  th_result_t r;
  json_t *j;
  th_event_t *e;
  int i, saw = 0;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  j = th_exec(&t, id,
              "class Bad:\n"
              "    def _repr_html_(self): raise ValueError('boom')\n"
              "    def __repr__(self): return 'Bad()'\n"
              "Bad()",
              &r);
  ASSERT_STR(th_s(j, "status"), "ok");
  ASSERT_STR(th_s(j, "result.data.text/plain"), "Bad()");
  ASSERT(th_get(j, "result.data.text/html") == NULL);
  for (i = 0; (e = th_find(&t, KH_EVENT_STREAM, r.id, i)) != NULL; i++)
    if (strcmp(th_s(e->data, "name"), "stderr") == 0 && strstr(th_s(e->data, "text"), "boom"))
      saw = 1;
  ASSERT(saw); /* the formatter's traceback reached stderr */
  th_result_free(&r);
  th_fini(&t);
}

TEST(display_ipython) {
  th_t t;
  char id[64];
  th_result_t r;
  th_event_t *e;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  th_exec(&t, id,
          "from IPython.display import display, HTML, Markdown\n"
          "display(HTML('<i>x</i>'))\n"
          "display(Markdown('*y*'))\n",
          &r);
  if (strcmp(th_s(r.json, "status"), "ok") != 0) FAIL("%s", th_s(r.json, "error.evalue"));
  ASSERT_INT(th_count(&t, KH_EVENT_DISPLAY_DATA, r.id), ==, 2);
  e = th_find(&t, KH_EVENT_DISPLAY_DATA, r.id, 0);
  ASSERT_STR(th_s(e->data, "data.text/html"), "<i>x</i>");
  e = th_find(&t, KH_EVENT_DISPLAY_DATA, r.id, 1);
  ASSERT_STR(th_s(e->data, "data.text/markdown"), "*y*");
  th_result_free(&r);
  th_fini(&t);
}

TEST(matplotlib_png) {
  th_t t;
  char id[64];
  th_result_t r;
  th_event_t *e;
  const char *png;
  th_init(&t, NULL);
  th_create(&t, th_opts(""), id);
  th_exec(&t, id,
          "import matplotlib.pyplot as plt\n"
          "plt.plot([1, 2, 3], [1, 4, 9])\n"
          "plt.show()\n"
          "fig = plt.figure()\n"
          "plt.bar([1, 2], [3, 4]);\n",
          &r);
  if (strcmp(th_s(r.json, "status"), "ok") != 0) FAIL("%s", th_s(r.json, "error.evalue"));
  /* one from plt.show(), one for the figure still open at the end of the cell */
  ASSERT_INT(th_count(&t, KH_EVENT_DISPLAY_DATA, r.id), ==, 2);
  e = th_find(&t, KH_EVENT_DISPLAY_DATA, r.id, 0);
  png = th_s(e->data, "data.image/png");
  ASSERT(png != NULL);
  ASSERT(strncmp(png, "iVBORw0KGgo", 11) == 0); /* base64 of the PNG signature */
  ASSERT_CONTAINS(th_s(e->data, "data.text/plain"), "Figure");
  th_result_free(&r);
  /* figures were closed: the next cell shows nothing */
  th_exec(&t, id, "len(plt.get_fignums())", &r);
  ASSERT_STR(th_s(r.json, "result.data.text/plain"), "0");
  ASSERT_INT(th_count(&t, KH_EVENT_DISPLAY_DATA, r.id), ==, 0);
  th_result_free(&r);
  th_fini(&t);
}

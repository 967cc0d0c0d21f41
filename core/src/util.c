/* util.c: string buffers, ids, clocks, input checks and the reference counts of handle-owned
 * objects, used across the core. Thread: any, except the references (loop).
 *
 * The string buffer remembers an allocation failure instead of reporting each append: a reply
 * is built from dozens of pieces, and checking once at the end (kh__sb_take returns NULL) is
 * the only way that code stays readable and still never hands out a truncated JSON text. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "internal.h"

void kh__sb_append(kh__strbuf_t *sb, const char *s, size_t n) {
  if (sb->oom) return;
  if (sb->len + n + 1 > sb->cap) {
    size_t cap = sb->cap ? sb->cap : 256;
    char *p;
    while (cap < sb->len + n + 1) cap *= 2;
    p = realloc(sb->buf, cap);
    if (p == NULL) {
      sb->oom = 1;
      return;
    }
    sb->buf = p;
    sb->cap = cap;
  }
  memcpy(sb->buf + sb->len, s, n);
  sb->len += n;
  sb->buf[sb->len] = '\0';
}

void kh__sb_puts(kh__strbuf_t *sb, const char *s) {
  kh__sb_append(sb, s, strlen(s));
}

char *kh__sb_take(kh__strbuf_t *sb) {
  char *p;
  if (sb->oom) {
    kh__sb_free(sb);
    return NULL;
  }
  if (sb->buf == NULL) kh__sb_append(sb, "", 0);
  p = sb->buf;
  sb->buf = NULL;
  sb->len = sb->cap = 0;
  return p;
}

void kh__sb_free(kh__strbuf_t *sb) {
  free(sb->buf);
  sb->buf = NULL;
  sb->len = sb->cap = 0;
  sb->oom = 0;
}

char *kh__strdup(const char *s) {
  return s ? kh__memdup(s, strlen(s) + 1) : NULL;
}

void *kh__memdup(const void *p, size_t n) {
  void *q = malloc(n ? n : 1);
  if (q != NULL && n) memcpy(q, p, n);
  return q;
}

/* Execution ids and kernel ids are UUID-4 strings, as Jupyter's msg_ids are: unique across
 * managers and processes, so an event can never be credited to another host's request. */
void kh__uuid(char *out) {
  unsigned char b[16];
  static const char hex[] = "0123456789abcdef";
  int i, j = 0;
  if (uv_random(NULL, NULL, b, sizeof(b), 0, NULL) != 0) {
    /* uv_random only fails without any entropy source; fall back to the clock. */
    uint64_t t = uv_hrtime();
    for (i = 0; i < 16; i++) b[i] = (unsigned char)(t >> ((i % 8) * 8)) ^ (unsigned char)(i * 37);
  }
  b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
  b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
  for (i = 0; i < 16; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out[j++] = '-';
    out[j++] = hex[b[i] >> 4];
    out[j++] = hex[b[i] & 15];
  }
  out[j] = '\0';
}

double kh__now_ms(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (double)tv.tv_sec * 1000.0 + (double)(tv.tv_usec / 1000);
}

void kh__set_err(char *buf, const char *fmt, ...) {
  va_list ap;
  if (buf == NULL) return;
  va_start(ap, fmt);
  vsnprintf(buf, KH__ERRMSG_MAX, fmt, ap);
  va_end(ap);
}

/* Code is checked on the host, before it is queued: a worker must never be the first to see
 * invalid UTF-8 (its frames would not encode), and a NUL byte would cut the cell short in
 * CPython's compile() without a word. */
int kh__check_code(const char *code, size_t len, size_t max, char *errmsg) {
  const char *nul;
  if (code == NULL) {
    kh__set_err(errmsg, "code must not be NULL");
    return KH_EINVAL;
  }
  if (len > max) {
    kh__set_err(errmsg,
                "code is %zu bytes, over the limit of %zu bytes (manager option "
                "maxCodeBytes)",
                len, max);
    return KH_ETOOBIG;
  }
  nul = memchr(code, '\0', len);
  if (nul != NULL) {
    kh__set_err(errmsg, "code contains a NUL byte at offset %zu", (size_t)(nul - code));
    return KH_EENCODING;
  }
  if (!kh__utf8_valid(code, len)) {
    kh__set_err(errmsg, "code is not valid UTF-8");
    return KH_EENCODING;
  }
  return 0;
}

int kh__utf8_valid(const char *s, size_t len) {
  /* jansson validates UTF-8 when it makes a string; that is the check we need. */
  json_t *j = json_stringn(s, len);
  json_decref(j);
  return j != NULL;
}

/* --- references --------------------------------------------------------------------------- */

void kh__refs_init(kh__refs_t *r, void (*release)(kh__refs_t *r)) {
  r->n = 0;
  r->release = release;
}

void kh__refs_get(kh__refs_t *r) {
  r->n++;
}

void kh__refs_put(kh__refs_t *r) {
  if (--r->n == 0) r->release(r);
}

static void on_refs_handle_closed(uv_handle_t *h) {
  kh__refs_put(h->data);
}

void kh__refs_close(kh__refs_t *r, uv_handle_t *h) {
  if (uv_is_closing(h)) return; /* closed already: its reference is on its way back */
  h->data = r;
  uv_close(h, on_refs_handle_closed);
}

/* frame.c: the worker protocol's framing: a 4-byte big-endian length, then that many bytes of
 * one JSON object with a string member "t" (the message type). The decoder takes arbitrary
 * bytes and either yields whole frames or a clear error; it is fuzzed (tests/fuzz/). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

void kh__frame_dec_init(kh__frame_dec_t *d, size_t max) {
  memset(d, 0, sizeof(*d));
  d->max = max ? max : KH__FRAME_MAX;
}

void kh__frame_dec_free(kh__frame_dec_t *d) {
  free(d->buf);
  d->buf = NULL;
  d->len = d->pos = d->cap = 0;
}

static int fail(kh__frame_dec_t *d, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(d->err, sizeof(d->err), fmt, ap);
  va_end(ap);
  d->failed = 1;
  return KH_EPROTO;
}

static size_t frame_len(const unsigned char *p) {
  return ((size_t)p[0] << 24) | ((size_t)p[1] << 16) | ((size_t)p[2] << 8) | (size_t)p[3];
}

int kh__frame_dec_feed(kh__frame_dec_t *d, const void *p, size_t n) {
  if (d->failed) return KH_EPROTO;
  if (n == 0) return 0;
  if (d->pos > 0 && (d->pos == d->len || d->len + n > d->cap)) {
    /* Drop consumed bytes before growing, so the buffer stays within one frame's size. */
    memmove(d->buf, d->buf + d->pos, d->len - d->pos);
    d->len -= d->pos;
    d->pos = 0;
  }
  if (d->len + n > d->cap) {
    size_t cap = d->cap ? d->cap : 4096;
    char *nb;
    while (cap < d->len + n) cap *= 2;
    nb = realloc(d->buf, cap);
    if (nb == NULL) return fail(d, "out of memory buffering a frame");
    d->buf = nb;
    d->cap = cap;
  }
  memcpy(d->buf + d->len, p, n);
  d->len += n;
  return 0;
}

int kh__frame_dec_next(kh__frame_dec_t *d, json_t **out) {
  const unsigned char *p;
  size_t avail, n;
  json_t *j;
  json_error_t jerr;
  *out = NULL;
  if (d->failed) return KH_EPROTO;
  avail = d->len - d->pos;
  if (avail < 4) return 0;
  p = (const unsigned char *)d->buf + d->pos;
  n = frame_len(p);
  if (n == 0) return fail(d, "malformed frame: empty payload");
  if (n > d->max)
    return fail(d, "oversized frame: %zu bytes declared, the limit is %zu", n, d->max);
  if (avail - 4 < n) return 0;
  /* JSON_ALLOW_NUL: output may hold NUL characters (print("\0"), binary junk on fd 1). */
  j = json_loadb((const char *)p + 4, n, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
  if (j == NULL) return fail(d, "malformed frame: invalid JSON: %s", jerr.text);
  if (!json_is_object(j) || !json_is_string(json_object_get(j, "t"))) {
    json_decref(j);
    return fail(d, "malformed frame: not an object with a string member \"t\"");
  }
  d->last_off = d->pos + 4;
  d->last_len = n;
  d->pos += 4 + n;
  *out = j;
  return 1;
}

char *kh__frame_dec_raw(kh__frame_dec_t *d, size_t *len) {
  *len = d->last_len;
  return d->buf + d->last_off;
}

int kh__frame_dec_finish(kh__frame_dec_t *d) {
  size_t avail;
  if (d->failed) return KH_EPROTO;
  avail = d->len - d->pos;
  if (avail == 0) return 0;
  if (avail < 4) return fail(d, "truncated frame: %zu bytes of a 4-byte length", avail);
  return fail(d, "truncated frame: %zu of %zu payload bytes", avail - 4,
              frame_len((const unsigned char *)d->buf + d->pos));
}

char *kh__frame_encode(const json_t *obj, size_t *len_out) {
  size_t n = json_dumpb(obj, NULL, 0, JSON_COMPACT);
  char *buf;
  if (n == 0 || n > KH__FRAME_MAX) return NULL;
  buf = malloc(n + 4);
  if (buf == NULL) return NULL;
  if (json_dumpb(obj, buf + 4, n, JSON_COMPACT) != n) {
    free(buf);
    return NULL;
  }
  kh__frame_put_len(buf, n);
  *len_out = n + 4;
  return buf;
}

void kh__frame_put_len(char *hdr, size_t n) {
  unsigned char *p = (unsigned char *)hdr;
  p[0] = (unsigned char)(n >> 24);
  p[1] = (unsigned char)(n >> 16);
  p[2] = (unsigned char)(n >> 8);
  p[3] = (unsigned char)n;
}

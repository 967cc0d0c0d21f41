/* jupyter-wire.c: Jupyter's wire format on ZeroMQ sockets: the frames of one message, their
 * HMAC-SHA256 signature (OpenSSL's EVP_MAC), and the header every message carries. What the
 * messages mean is jupyter.c's. Thread: loop.
 *
 * A message is the multipart
 *   [routing ids...] "<IDS|MSG>" signature header parent_header metadata content [buffers...]
 * where the signature is the lowercase hex HMAC of the four JSON frames, keyed by the
 * connection's key; an empty key means no signing (the signature frame is then empty). */
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "jupyter-internal.h"

static const char delimiter[] = "<IDS|MSG>";

int kh__jwire_init(kh__jwire_t *w, const char *key) {
  memset(w, 0, sizeof(*w));
  kh__uuid(w->session);
  w->keylen = strlen(key);
  if (w->keylen >= sizeof(w->key)) return KH_EINVAL;
  memcpy(w->key, key, w->keylen);
  if (w->keylen == 0) return 0;
  w->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
  return w->mac ? 0 : KH_ENOMEM;
}

void kh__jwire_free(kh__jwire_t *w) {
  EVP_MAC_free(w->mac);
  w->mac = NULL;
  OPENSSL_cleanse(w->key, sizeof(w->key));
}

/* The signature of four frames into hex (65 bytes). 0, or -1 when OpenSSL failed. */
static int sign(kh__jwire_t *w, const void *const *parts, const size_t *lens, char *hex) {
  static const char digits[] = "0123456789abcdef";
  unsigned char mac[EVP_MAX_MD_SIZE];
  size_t maclen = 0, i;
  char digest[] = "SHA256";
  OSSL_PARAM params[2];
  EVP_MAC_CTX *ctx;
  int ok;
  if (w->keylen == 0) {
    hex[0] = '\0';
    return 0;
  }
  params[0] = OSSL_PARAM_construct_utf8_string("digest", digest, 0);
  params[1] = OSSL_PARAM_construct_end();
  ctx = EVP_MAC_CTX_new(w->mac);
  ok = ctx != NULL && EVP_MAC_init(ctx, (const unsigned char *)w->key, w->keylen, params);
  for (i = 0; ok && i < 4; i++) ok = EVP_MAC_update(ctx, parts[i], lens[i]);
  ok = ok && EVP_MAC_final(ctx, mac, &maclen, sizeof(mac));
  EVP_MAC_CTX_free(ctx);
  if (!ok || maclen != 32) return -1;
  for (i = 0; i < maclen; i++) {
    hex[2 * i] = digits[mac[i] >> 4];
    hex[2 * i + 1] = digits[mac[i] & 15];
  }
  hex[2 * maclen] = '\0';
  return 0;
}

/* --- receiving ------------------------------------------------------------------------------ */

void kh__jmsg_free(kh__jmsg_t *msg) {
  size_t i;
  kh__jframes_free(&msg->idents);
  for (i = 0; i < msg->nbufs; i++) zmq_msg_close(&msg->bufs[i]);
  free(msg->bufs);
  json_decref(msg->header);
  json_decref(msg->parent);
  json_decref(msg->metadata);
  json_decref(msg->content);
  memset(msg, 0, sizeof(*msg));
}

void kh__jframes_free(kh__jframes_t *f) {
  size_t i;
  for (i = 0; i < f->n; i++) free(f->v[i].data);
  free(f->v);
  f->v = NULL;
  f->n = 0;
}

int kh__jframes_copy(kh__jframes_t *dst, const kh__jframes_t *src) {
  size_t i;
  dst->n = 0;
  dst->v = src->n ? calloc(src->n, sizeof(*dst->v)) : NULL;
  if (src->n && dst->v == NULL) return KH_ENOMEM;
  for (i = 0; i < src->n; i++) {
    dst->v[i].data = kh__memdup(src->v[i].data, src->v[i].len ? src->v[i].len : 1);
    if (dst->v[i].data == NULL) {
      kh__jframes_free(dst);
      return KH_ENOMEM;
    }
    dst->v[i].len = src->v[i].len;
    dst->n++;
  }
  return 0;
}

/* Reads every frame of one multipart message. 1 when one was read, 0 when none waits, or a
 * negative errno. */
static int recv_all(void *sock, zmq_msg_t **out, size_t *n) {
  zmq_msg_t *v = NULL;
  size_t cap = 0, len = 0;
  int more = 1;
  while (more) {
    if (len == cap) {
      zmq_msg_t *nv = realloc(v, (cap ? cap * 2 : 8) * sizeof(*v));
      if (nv == NULL) break;
      v = nv;
      cap = cap ? cap * 2 : 8;
    }
    zmq_msg_init(&v[len]);
    if (zmq_msg_recv(&v[len], sock, len == 0 ? ZMQ_DONTWAIT : 0) < 0) {
      int e = zmq_errno();
      zmq_msg_close(&v[len]);
      while (len > 0) zmq_msg_close(&v[--len]);
      free(v);
      return e == EAGAIN ? 0 : -e;
    }
    more = zmq_msg_more(&v[len]);
    len++;
  }
  if (more) { /* out of memory: read the rest away, drop the message */
    zmq_msg_t skip;
    while (more) {
      zmq_msg_init(&skip);
      if (zmq_msg_recv(&skip, sock, 0) < 0) more = 0;
      else more = zmq_msg_more(&skip);
      zmq_msg_close(&skip);
    }
    while (len > 0) zmq_msg_close(&v[--len]);
    free(v);
    return KH_ENOMEM;
  }
  *out = v;
  *n = len;
  return 1;
}

static json_t *load_object(zmq_msg_t *f) {
  json_t *v = json_loadb(zmq_msg_data(f), zmq_msg_size(f), JSON_REJECT_DUPLICATES, NULL);
  if (v != NULL && !json_is_object(v)) {
    json_decref(v);
    v = NULL;
  }
  return v;
}

int kh__jwire_recv(kh__jwire_t *w, void *sock, kh__jmsg_t *msg) {
  zmq_msg_t *f = NULL;
  size_t n = 0, d, i;
  int rc = recv_all(sock, &f, &n);
  memset(msg, 0, sizeof(*msg));
  if (rc <= 0) return rc;
  for (d = 0; d < n; d++)
    if (zmq_msg_size(&f[d]) == sizeof(delimiter) - 1 &&
        memcmp(zmq_msg_data(&f[d]), delimiter, sizeof(delimiter) - 1) == 0)
      break;
  rc = KH_EPROTO;
  if (d + 5 <= n) {
    const void *parts[4];
    size_t lens[4];
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    size_t siglen = zmq_msg_size(&f[d + 1]);
    for (i = 0; i < 4; i++) {
      parts[i] = zmq_msg_data(&f[d + 2 + i]);
      lens[i] = zmq_msg_size(&f[d + 2 + i]);
    }
    /* Constant time: a peer learns nothing from how long a wrong signature took. */
    if (sign(w, parts, lens, hex) == 0 && siglen == strlen(hex) &&
        CRYPTO_memcmp(hex, zmq_msg_data(&f[d + 1]), siglen) == 0)
      rc = 1;
    else
      rc = KH_JWIRE_EBADSIG;
  }
  if (rc == 1) {
    msg->header = load_object(&f[d + 2]);
    msg->parent = load_object(&f[d + 3]);
    msg->metadata = load_object(&f[d + 4]);
    msg->content = load_object(&f[d + 5]);
    msg->msg_type = json_string_value(json_object_get(msg->header, "msg_type"));
    if (!msg->header || !msg->parent || !msg->metadata || !msg->content || !msg->msg_type ||
        !json_is_string(json_object_get(msg->header, "msg_id")))
      rc = KH_EPROTO;
  }
  if (rc == 1 && d > 0) {
    msg->idents.v = calloc(d, sizeof(*msg->idents.v));
    for (i = 0; msg->idents.v != NULL && i < d; i++) {
      size_t len = zmq_msg_size(&f[i]);
      msg->idents.v[i].data = kh__memdup(zmq_msg_data(&f[i]), len ? len : 1);
      msg->idents.v[i].len = len;
      msg->idents.n = i + 1;
      if (msg->idents.v[i].data == NULL) break;
    }
    if (msg->idents.n != d || msg->idents.v[d - 1].data == NULL) rc = KH_ENOMEM;
  }
  if (rc == 1 && n > d + 6) { /* the binary buffers, kept as they came */
    msg->nbufs = n - (d + 6);
    msg->bufs = malloc(msg->nbufs * sizeof(*msg->bufs));
    if (msg->bufs == NULL) {
      msg->nbufs = 0;
      rc = KH_ENOMEM;
    }
    for (i = 0; rc == 1 && i < msg->nbufs; i++) {
      zmq_msg_init(&msg->bufs[i]);
      zmq_msg_move(&msg->bufs[i], &f[d + 6 + i]);
    }
  }
  for (i = 0; i < n; i++) zmq_msg_close(&f[i]);
  free(f);
  if (rc != 1) kh__jmsg_free(msg);
  return rc;
}

/* --- sending -------------------------------------------------------------------------------- */

/* ISO 8601 in UTC with microseconds, as Jupyter's headers carry it. */
static void iso_now(char *out, size_t n) {
  struct timespec ts;
  struct tm tm;
  char base[24]; /* "2026-12-02T12:00:00" */
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(out, n, "%.19s.%06dZ", base, (int)(ts.tv_nsec / 1000) % 1000000);
}

void kh__jwire_date(char *out, size_t n) { iso_now(out, n); }

json_t *kh__jwire_header(kh__jwire_t *w, const char *msg_type, const char *session,
                         const char *msg_id, const char *username) {
  char id[40], date[48];
  if (msg_id == NULL) {
    kh__uuid(id);
    msg_id = id;
  }
  iso_now(date, sizeof(date));
  return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "msg_id", msg_id, "session",
                   session ? session : w->session, "username", username ? username : "kernel",
                   "date", date, "msg_type", msg_type, "version", "5.3");
}

static int send_frame(void *sock, const void *data, size_t len, int more) {
  return zmq_send(sock, data, len, more ? ZMQ_SNDMORE : 0) < 0 ? -zmq_errno() : 0;
}

int kh__jwire_send(kh__jwire_t *w, void *sock, const kh__jframes_t *idents, const char *topic,
                   const char *msg_type, const json_t *parent, const json_t *metadata,
                   const char *content, size_t content_len, const kh__jbuf_t *bufs,
                   size_t nbufs) {
  json_t *header = kh__jwire_header(w, msg_type, NULL, NULL, NULL);
  char *texts[3];
  const void *parts[4];
  size_t lens[4], i;
  char hex[2 * EVP_MAX_MD_SIZE + 1];
  int rc = 0;
  texts[0] = header ? json_dumps(header, JSON_COMPACT) : NULL;
  texts[1] = parent ? json_dumps(parent, JSON_COMPACT) : kh__strdup("{}");
  texts[2] = metadata ? json_dumps(metadata, JSON_COMPACT) : kh__strdup("{}");
  json_decref(header);
  if (!texts[0] || !texts[1] || !texts[2]) rc = KH_ENOMEM;
  for (i = 0; rc == 0 && i < 3; i++) {
    parts[i] = texts[i];
    lens[i] = strlen(texts[i]);
  }
  parts[3] = content;
  lens[3] = content_len;
  if (rc == 0 && sign(w, parts, lens, hex) != 0) rc = KH_ENOMEM;
  /* ZeroMQ sends a multipart message whole or not at all: once the first frame is taken the
   * rest cannot fail on a full queue (the first one would have). */
  if (rc == 0 && idents != NULL)
    for (i = 0; rc == 0 && i < idents->n; i++)
      rc = send_frame(sock, idents->v[i].data, idents->v[i].len, 1);
  if (rc == 0 && topic != NULL) rc = send_frame(sock, topic, strlen(topic), 1);
  if (rc == 0) rc = send_frame(sock, delimiter, sizeof(delimiter) - 1, 1);
  if (rc == 0) rc = send_frame(sock, hex, strlen(hex), 1);
  for (i = 0; rc == 0 && i < 4; i++) rc = send_frame(sock, parts[i], lens[i], i < 3 || nbufs > 0);
  for (i = 0; rc == 0 && i < nbufs; i++)
    rc = send_frame(sock, bufs[i].data, bufs[i].len, i + 1 < nbufs);
  for (i = 0; i < 3; i++) free(texts[i]);
  return rc;
}

/* --- base64, as Jupyter's JSON carries binary values ------------------------------------- */

json_t *kh__jwire_b64_string(const void *data, size_t len) {
  size_t out = 4 * ((len + 2) / 3);
  unsigned char *b = malloc(out + 1);
  json_t *v;
  if (b == NULL) return NULL;
  EVP_EncodeBlock(b, data, (int)len);
  v = json_stringn((const char *)b, out);
  free(b);
  return v;
}

unsigned char *kh__jwire_b64_bytes(const char *text, size_t len, size_t *out_len) {
  unsigned char *b;
  int n;
  size_t pad = 0;
  if (len % 4 != 0 || len > INT_MAX) return NULL;
  if ((b = malloc(len / 4 * 3 + 1)) == NULL) return NULL;
  if ((n = EVP_DecodeBlock(b, (const unsigned char *)text, (int)len)) < 0) {
    free(b);
    return NULL;
  }
  if (len >= 1 && text[len - 1] == '=') pad++;
  if (len >= 2 && text[len - 2] == '=') pad++;
  *out_len = (size_t)n - pad;
  return b;
}

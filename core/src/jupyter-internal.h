/* jupyter-internal.h: between jupyter-wire.c (the wire format) and jupyter.c (the server). */
#ifndef KH_JUPYTER_INTERNAL_H
#define KH_JUPYTER_INTERNAL_H

#include <openssl/evp.h>
#include <zmq.h>

#include "internal.h"

/* A message whose signature did not match (or was missing): dropped and counted. */
#define KH_JWIRE_EBADSIG (-30100)

typedef struct {
  EVP_MAC *mac; /* NULL when the key is empty: no signing */
  char key[1025];
  size_t keylen;
  char session[40]; /* the kernel's session id, in every header it sends */
} kh__jwire_t;

typedef struct {
  void *data;
  size_t len;
} kh__jframe_t;

/* Routing ids of a ROUTER socket's peer, owned. */
typedef struct {
  kh__jframe_t *v;
  size_t n;
} kh__jframes_t;

typedef struct {
  const void *data;
  size_t len;
} kh__jbuf_t;

/* One message received, owned. */
typedef struct {
  kh__jframes_t idents;
  json_t *header, *parent, *metadata, *content;
  const char *msg_type; /* borrowed from header */
  zmq_msg_t *bufs;      /* the binary frames after content */
  size_t nbufs;
} kh__jmsg_t;

int kh__jwire_init(kh__jwire_t *w, const char *key);
void kh__jwire_free(kh__jwire_t *w);
/* Reads one message: 1 when one was read into *msg, 0 when none waits, KH_JWIRE_EBADSIG,
 * KH_EPROTO (not Jupyter's frames or JSON objects), KH_ENOMEM or a negative errno. */
int kh__jwire_recv(kh__jwire_t *w, void *sock, kh__jmsg_t *msg);
void kh__jmsg_free(kh__jmsg_t *msg);
void kh__jframes_free(kh__jframes_t *f);
int kh__jframes_copy(kh__jframes_t *dst, const kh__jframes_t *src);
/* A header {msg_id, session, username, date, msg_type, version}; session, msg_id and username
 * NULL: the kernel's session, a new id, "kernel". NULL when out of memory. */
json_t *kh__jwire_header(kh__jwire_t *w, const char *msg_type, const char *session,
                         const char *msg_id, const char *username);
void kh__jwire_date(char *out, size_t n);
/* base64 (OpenSSL's EVP blocks): a JSON string of data, or the bytes of text (owned, *out_len
 * set; NULL when it is no base64 or out of memory). Also for the remote backend's messages. */
json_t *kh__jwire_b64_string(const void *data, size_t len);
unsigned char *kh__jwire_b64_bytes(const char *text, size_t len, size_t *out_len);
/* Sends one message: idents (may be NULL) for a ROUTER peer, topic (may be NULL) for iopub,
 * parent and metadata NULL for {}; content is JSON text. 0 or a negative code. */
int kh__jwire_send(kh__jwire_t *w, void *sock, const kh__jframes_t *idents, const char *topic,
                   const char *msg_type, const json_t *parent, const json_t *metadata,
                   const char *content, size_t content_len, const kh__jbuf_t *bufs,
                   size_t nbufs);

#endif

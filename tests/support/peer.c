/*
 * A peer node by hand (see peer.h).
 */
#include "peer.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <tractor/time.h>

#include "transport/auth.h"
#include "transport/hello.h"
#include "transport/listen.h"

#define PEER_MS (1000 * 1000LL)

void tr_test_peer_uuid(uint8_t seed, uint8_t me[TR_UUID_LEN]) {
  for (size_t i = 0; i < TR_UUID_LEN; i++)
    me[i] = (uint8_t)(seed ^ i);
}

int tr_test_peer_connect(void) {
  struct sockaddr_in sa;
  if (tr__addr_parse(getenv("TR_REGISTRY_ADDR"), &sa) != 0)
    return -1;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct timeval tv = {5, 0};
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
      connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    if (fd >= 0)
      close(fd);
    return -1;
  }
  return fd;
}

int tr_test_peer_dial(const char *name, const uint8_t me[TR_UUID_LEN], int rcvbuf, int *fd,
                      char *why, size_t len) {
  return tr_test_peer_dial_at(name, me, NULL, rcvbuf, fd, why, len);
}

int tr_test_peer_dial_at(const char *name, const uint8_t me[TR_UUID_LEN], const char *addr,
                         int rcvbuf, int *fd, char *why, size_t len) {
  tr_hello_info_t hi = {.name = name, .uuid = me, .addr = addr};
  tr_msg_t *hello = NULL, *peer = NULL;
  struct timeval tv = {10, 0};
  *fd = tr_test_peer_connect();
  if (*fd >= 0 && rcvbuf > 0)
    (void)setsockopt(*fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  if (*fd >= 0)
    (void)setsockopt(*fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int rc = *fd < 0 || tr__hello_new(&hi, &hello) != 0
               ? -1
               : tr__hs_initiate(*fd, hello, tr_now() + 5000 * PEER_MS, &peer, why, len);
  tr_msg_free(hello);
  tr_msg_free(peer);
  return rc;
}

int tr_test_peer_send_all(int fd, const uint8_t *p, size_t len) {
  for (size_t off = 0; off < len;) {
    ssize_t k = send(fd, p + off, len - off, MSG_NOSIGNAL);
    if (k <= 0)
      return -1;
    off += (size_t)k;
  }
  return 0;
}

int tr_test_peer_send(int fd, tr_msg_t *m) {
  uint8_t *fr = NULL;
  size_t len = 0;
  int rc = tr__frame_encode(m, 0, &fr, &len) == 0 ? tr_test_peer_send_all(fd, fr, len) : -1;
  free(fr);
  tr_msg_free(m);
  return rc;
}

tr_msg_t *tr_test_peer_read(int fd) {
  tr_msg_t *m = NULL;
  char why[160];
  (void)tr__hs_read_frame(fd, tr_now() + 5000 * PEER_MS, &m, why, sizeof why);
  return m;
}

tr_msg_t *tr_test_peer_start_to_nobody(const uint8_t me[TR_UUID_LEN], uint64_t cid) {
  tr_msg_t *m;
  if (tr_msg_new(&m) != 0)
    return NULL;
  m->body = TR_BODY_START;
  m->cid = cid;
  struct tr_envx *x = tr__envx_get(m);
  x->has_src = x->has_dst = 1;
  memcpy(x->src.uuid, me, TR_UUID_LEN);
  memset(x->dst.uuid, 0xee, TR_UUID_LEN);
  (void)tr__envx_set_start(x, "nobody", "here");
  return m;
}

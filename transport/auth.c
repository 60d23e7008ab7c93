/* Authenticated handshakes: the key, the proofs, the initiator's exchange
 * (transport/auth.h). */
#include "transport/auth.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <sodium.h>

#include <tractor/errors.h>
#include <tractor/time.h>

#include "runtime/error/error.h"
#include "transport/hello.h"

#define SECRET_FILE_MAX 4096

/* Written before the workers start and after they stop (tr_run), read in
 * between: no lock needed. */
static struct {
  int on;
  uint8_t key[crypto_auth_KEYBYTES];
} K;

static const char LABEL_KEY[] = "tractor-c channel key v1";
static const char LABEL_I[] = "tractor-c proof v1 initiator";
static const char LABEL_R[] = "tractor-c proof v1 responder";

static void derive(const uint8_t *secret, size_t len) {
  crypto_generichash_state st;
  uint8_t label[crypto_generichash_KEYBYTES] = {0};
  memcpy(label, LABEL_KEY, sizeof LABEL_KEY - 1);
  crypto_generichash_init(&st, label, sizeof label, sizeof K.key);
  crypto_generichash_update(&st, secret, len);
  crypto_generichash_final(&st, K.key, sizeof K.key);
  K.on = 1;
}

static int from_file(const char *path) {
  FILE *f = fopen(path, "re");
  if (!f)
    return TR_ERROR(-TR_EINVAL, "TR_SECRET_FILE %s: %s", path, strerror(errno));
  uint8_t *buf = sodium_malloc(SECRET_FILE_MAX + 1);
  if (!buf) {
    fclose(f);
    return TR__ENOMEM();
  }
  size_t n = fread(buf, 1, SECRET_FILE_MAX + 1, f);
  int err = ferror(f);
  fclose(f);
  int rc = 0;
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
    n--;
  if (err)
    rc = TR_ERROR(-TR_EINVAL, "TR_SECRET_FILE %s: cannot read it", path);
  else if (n > SECRET_FILE_MAX)
    rc = TR_ERROR(-TR_EINVAL, "TR_SECRET_FILE %s: longer than %d bytes", path, SECRET_FILE_MAX);
  else if (n == 0)
    rc = TR_ERROR(-TR_EINVAL, "TR_SECRET_FILE %s is empty", path);
  else
    derive(buf, n);
  sodium_free(buf); /* zeroed */
  return rc;
}

int tr__auth_setup(const tr_config_t *cfg) {
  tr__auth_clear();
  if (sodium_init() < 0)
    return TR_ERROR(-TR_ENOMEM, "libsodium cannot start");
  char *hex = getenv(TR_AUTH_KEY_ENV);
  if (hex) {
    if (!*hex) {
      unsetenv(TR_AUTH_KEY_ENV); /* not passed on (see below) */
      return 0; /* the parent has no key: neither has its child */
    }
    size_t n = 0, len = strlen(hex);
    int bad = sodium_hex2bin(K.key, sizeof K.key, hex, len, NULL, &n, NULL) != 0 ||
              n != sizeof K.key;
    /* Not left readable in this process's environment (nor in
     * /proc/<pid>/environ, which shows these very bytes), nor passed on
     * to a program this process starts. */
    sodium_memzero(hex, len);
    unsetenv(TR_AUTH_KEY_ENV);
    if (bad) {
      sodium_memzero(K.key, sizeof K.key);
      return TR_ERROR(-TR_EINVAL, "%s is not %zu bytes in hex", TR_AUTH_KEY_ENV, sizeof K.key);
    }
    K.on = 1;
    return 0;
  }
  const char *s = getenv("TR_SECRET");
  if (!s || !*s)
    s = cfg ? cfg->secret : NULL;
  if (s && *s) {
    derive((const uint8_t *)s, strlen(s));
    return 0;
  }
  const char *path = getenv("TR_SECRET_FILE");
  return path && *path ? from_file(path) : 0;
}

void tr__auth_clear(void) {
  sodium_memzero(K.key, sizeof K.key);
  K.on = 0;
}

int tr__auth_on(void) { return K.on; }

void tr__auth_child_env(char *buf, size_t len) {
  char hex[2 * sizeof K.key + 1] = "";
  if (K.on)
    sodium_bin2hex(hex, sizeof hex, K.key, sizeof K.key);
  snprintf(buf, len, "%s=%s", TR_AUTH_KEY_ENV, hex);
  sodium_memzero(hex, sizeof hex);
}

/* ---- proofs --------------------------------------------------------------------------- */

static void prove(const tr_hs_t *hs, const char *label, uint8_t out[TR_AUTH_PROOF]) {
  crypto_auth_hmacsha512256_state st;
  crypto_auth_hmacsha512256_init(&st, K.key, sizeof K.key);
  crypto_auth_hmacsha512256_update(&st, (const uint8_t *)label, strlen(label));
  crypto_auth_hmacsha512256_update(&st, hs->nonce_i, sizeof hs->nonce_i);
  crypto_auth_hmacsha512256_update(&st, hs->nonce_r, sizeof hs->nonce_r);
  crypto_auth_hmacsha512256_update(&st, hs->uuid_i, sizeof hs->uuid_i);
  crypto_auth_hmacsha512256_update(&st, hs->uuid_r, sizeof hs->uuid_r);
  crypto_auth_hmacsha512256_final(&st, out);
}

/* 1 when m's proof is the one `label` makes over this handshake. */
static int proof_ok(const tr_hs_t *hs, const char *label, const tr_msg_t *m) {
  if (!m->payload || tr_buf_len(m->payload) != TR_AUTH_PROOF)
    return 0;
  uint8_t want[TR_AUTH_PROOF];
  prove(hs, label, want);
  int ok = sodium_memcmp(want, tr_buf_data(m->payload), TR_AUTH_PROOF) == 0;
  sodium_memzero(want, sizeof want);
  return ok;
}

static int attach_proof(const tr_hs_t *hs, const char *label, tr_msg_t *m) {
  uint8_t p[TR_AUTH_PROOF];
  prove(hs, label, p);
  tr_buf_t *b;
  int rc = tr_buf_from(p, sizeof p, &b);
  if (rc)
    return TR__ENOMEM();
  tr_buf_release(m->payload);
  m->payload = b;
  return 0;
}

void tr__hs_offer(tr_hs_t *hs, tr_msg_t *my_hello) {
  struct tr_envx *x = my_hello->x_;
  hs->on = (uint8_t)K.on;
  memcpy(hs->uuid_i, x->u.hello.id.uuid, TR_UUID_LEN);
  if (hs->on) {
    randombytes_buf(hs->nonce_i, sizeof hs->nonce_i);
    x->u.hello.has_nonce = 1;
    memcpy(x->u.hello.nonce, hs->nonce_i, sizeof hs->nonce_i);
  }
}

int tr__hs_answer(tr_hs_t *hs, const tr_msg_t *peer_hello, tr_msg_t *my_hello) {
  const struct tr_envx *px = peer_hello->x_;
  struct tr_envx *x = my_hello->x_;
  hs->on = (uint8_t)K.on;
  if (px->u.hello.has_nonce && !hs->on)
    return TR_ERROR(-TR_EPERM, "%s asks for authentication, and this node has no secret",
                    px->u.hello.id.name);
  if (!px->u.hello.has_nonce && hs->on) {
    /* A nonce without a proof: the answer still says a secret is wanted. */
    x->u.hello.has_nonce = 1;
    randombytes_buf(x->u.hello.nonce, sizeof x->u.hello.nonce);
    return TR_ERROR(-TR_EPERM, "%s offers no authentication (no secret?), and this node has one",
                    px->u.hello.id.name);
  }
  if (peer_hello->payload && tr_buf_len(peer_hello->payload) != 0)
    return TR_ERROR(-TR_EPERM, "%s sent a proof before any challenge", px->u.hello.id.name);
  memcpy(hs->uuid_i, px->u.hello.id.uuid, TR_UUID_LEN);
  memcpy(hs->uuid_r, x->u.hello.id.uuid, TR_UUID_LEN);
  if (!hs->on)
    return 0;
  memcpy(hs->nonce_i, px->u.hello.nonce, sizeof hs->nonce_i);
  randombytes_buf(hs->nonce_r, sizeof hs->nonce_r);
  x->u.hello.has_nonce = 1;
  memcpy(x->u.hello.nonce, hs->nonce_r, sizeof hs->nonce_r);
  return attach_proof(hs, LABEL_R, my_hello);
}

int tr__hs_confirm(tr_hs_t *hs, const tr_msg_t *peer_hello, tr_msg_t **confirm) {
  *confirm = NULL;
  const struct tr_envx *px = peer_hello->x_;
  const char *who = px->u.hello.id.name;
  memcpy(hs->uuid_r, px->u.hello.id.uuid, TR_UUID_LEN);
  int proved = peer_hello->payload && tr_buf_len(peer_hello->payload) != 0;
  if (!hs->on)
    return px->u.hello.has_nonce || proved
               ? TR_ERROR(-TR_EPERM, "%s asks for authentication, and this node has no secret",
                          who)
               : 0;
  if (!px->u.hello.has_nonce || !proved)
    return TR_ERROR(-TR_EPERM, "%s proved nothing (it has no secret?)", who);
  memcpy(hs->nonce_r, px->u.hello.nonce, sizeof hs->nonce_r);
  if (!proof_ok(hs, LABEL_R, peer_hello))
    return TR_ERROR(-TR_EPERM, "%s's proof is wrong: it has another secret", who);
  tr_msg_t *m;
  if (tr_msg_new(&m) != 0)
    return TR__ENOMEM();
  m->body = TR_BODY_HELLO;
  struct tr_envx *x = tr__envx_get(m);
  int rc = x ? 0 : TR__ENOMEM();
  if (rc == 0) {
    /* The initiator's identity again (the first Hello's), and its proof. */
    x->u.hello.version = TR_PROTO_VERSION;
    memcpy(x->u.hello.id.uuid, hs->uuid_i, TR_UUID_LEN);
  }
  if (rc == 0)
    rc = attach_proof(hs, LABEL_I, m);
  if (rc) {
    tr_msg_free(m);
    return rc;
  }
  *confirm = m;
  return 0;
}

int tr__hs_verify(const tr_hs_t *hs, const tr_msg_t *confirm) {
  if (confirm->body != TR_BODY_HELLO || !confirm->x_)
    return TR_ERROR(-TR_EPERM, "the handshake expects a confirmation (Hello), got %s",
                    tr__body_name(confirm->body));
  if (memcmp(confirm->x_->u.hello.id.uuid, hs->uuid_i, TR_UUID_LEN) != 0)
    return TR_ERROR(-TR_EPERM, "the confirmation names another actor than the Hello");
  if (!confirm->payload || tr_buf_len(confirm->payload) == 0)
    return TR_ERROR(-TR_EPERM, "the confirmation carries no proof");
  if (!proof_ok(hs, LABEL_I, confirm))
    return TR_ERROR(-TR_EPERM, "the proof is wrong (another secret, or a replay)");
  return 0;
}

/* ---- the initiator's exchange ------------------------------------------------------- */

size_t tr__hs_read_max(const tr_frame_dec_t *d) {
  if (d->hdr_have < 4)
    return 4u - d->hdr_have;
  return d->need > d->have ? (size_t)(d->need - d->have) : 1;
}

/* Waits until fd is ready for ev or the deadline: 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short ev, int64_t deadline) {
  for (;;) {
    int64_t left = deadline - tr_now();
    if (left <= 0)
      return 0;
    struct pollfd p = {.fd = fd, .events = ev};
    int k = poll(&p, 1, (int)((left + 999999) / 1000000));
    if (k < 0 && errno == EINTR)
      continue;
    return k < 0 ? -1 : k > 0;
  }
}

static int send_msg(int fd, const tr_msg_t *m, int64_t deadline, char *why, size_t why_len) {
  uint8_t *frame;
  size_t len;
  int rc = tr__frame_encode(m, 0, &frame, &len);
  if (rc) {
    snprintf(why, why_len, "cannot encode the Hello: %s", tr_strerror(rc));
    return -TR_EIO;
  }
  for (size_t off = 0; off < len;) {
    ssize_t k = send(fd, frame + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k < 0 && errno == EINTR)
      continue;
    if (k < 0 && errno == EAGAIN && wait_fd(fd, POLLOUT, deadline) > 0)
      continue;
    if (k < 0) {
      snprintf(why, why_len, "sending the handshake: %s",
               errno == EAGAIN ? "timed out" : strerror(errno));
      free(frame);
      return -TR_EIO;
    }
    off += (size_t)k;
  }
  free(frame);
  return 0;
}

int tr__hs_read_frame(int fd, int64_t deadline, tr_msg_t **out, char *why, size_t why_len) {
  *out = NULL;
  tr_frame_dec_t dec;
  tr__frame_dec_init(&dec, TR_HELLO_MAX);
  tr_msg_t *m = NULL;
  int rc = 0;
  while (!m) {
    uint8_t buf[512];
    size_t want = tr__hs_read_max(&dec);
    ssize_t k = recv(fd, buf, want < sizeof buf ? want : sizeof buf, MSG_DONTWAIT);
    if (k < 0 && errno == EINTR)
      continue;
    if (k < 0 && errno == EAGAIN) {
      if (wait_fd(fd, POLLIN, deadline) > 0)
        continue;
      snprintf(why, why_len, "no Hello came back in time");
      rc = -TR_EIO;
      break;
    }
    if (k <= 0) {
      snprintf(why, why_len, "the connection closed before a Hello came back%s%s",
               k < 0 ? ": " : "", k < 0 ? strerror(errno) : "");
      rc = -TR_EIO;
      break;
    }
    size_t used;
    int frc = tr__frame_dec_feed(&dec, buf, (size_t)k, &used, NULL, &m);
    if (frc) {
      snprintf(why, why_len, "the answer is no Hello (%s)", tr_strerror(frc));
      rc = -TR_EIO;
      break;
    }
  }
  tr__frame_dec_fini(&dec);
  *out = m;
  return rc;
}

int tr__hs_initiate(int fd, tr_msg_t *my_hello, int64_t deadline, tr_msg_t **peer, char *why,
                    size_t why_len) {
  *peer = NULL;
  tr_hs_t hs = {0};
  tr__hs_offer(&hs, my_hello);
  int rc = send_msg(fd, my_hello, deadline, why, why_len);
  if (rc)
    return rc;
  tr_msg_t *m = NULL;
  rc = tr__hs_read_frame(fd, deadline, &m, why, why_len);
  tr_msg_t *confirm = NULL;
  if (rc == 0 && (rc = tr__hello_check(m, NULL)) != 0) {
    snprintf(why, why_len, "%s", tr_error_message(tr_error_last()));
    rc = -TR_EIO;
  } else if (rc == 0 && (rc = tr__hs_confirm(&hs, m, &confirm)) != 0) {
    snprintf(why, why_len, "%s", tr_error_message(tr_error_last()));
  } else if (rc == 0 && confirm) {
    rc = send_msg(fd, confirm, deadline, why, why_len);
    tr_msg_free(confirm);
  }
  tr_error_clear();
  if (rc) {
    tr_msg_free(m);
    return rc;
  }
  *peer = m;
  return 0;
}

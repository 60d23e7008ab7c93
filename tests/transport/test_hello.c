/*
 * The handshake's Hello (transport/hello.h): it survives the frame codec
 * whole, and the check refuses what a channel must not accept: another
 * body first, another protocol version, no name, no uuid, no pid, and
 * bytes that are not a frame at all.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TR_TEST_WORKERS 1
#include <tractor/testing.h>

#include "transport/hello.h"

/* m through a frame and back, as the other end of a channel reads it. */
static tr_msg_t *over_the_wire(tr_msg_t *m) {
  uint8_t *buf = NULL;
  size_t len = 0, used = 0;
  tr_msg_t *out = NULL;
  if (tr__frame_encode(m, 0, &buf, &len) == 0) {
    tr_frame_dec_t d;
    tr__frame_dec_init(&d, 0);
    if (tr__frame_dec_feed(&d, buf, len, &used, NULL, &out) < 0)
      out = NULL;
    tr__frame_dec_fini(&d);
  }
  free(buf);
  tr_msg_free(m);
  return out;
}

static int check_message(const char *part) {
  const tr_error_t *e = tr_error_last();
  return e && tr_error_code(e) == -TR_EPROTO && strstr(tr_error_message(e), part);
}

TR_TEST(hello, round_trip_and_accepted) {
  tr_hello_info_t info = {.node = tr_self(), .addr = "127.0.0.1:40001", .is_probe = 1};
  tr_msg_t *m = NULL;
  tr_assert_rc(tr__hello_new(&info, &m), 0);
  m = over_the_wire(m);
  tr_assert(m != NULL, "the Hello goes through a frame and back");
  tr_uid_t peer;
  tr_check_rc(tr__hello_check(m, &peer), 0);
  uint8_t me[TR_UUID_LEN];
  tr_actor_uuid(tr_self(), me);
  tr_check(memcmp(peer.uuid, me, TR_UUID_LEN) == 0, "the uuid arrives");
  tr_check_str_eq(peer.name, tr_actor_name(tr_self()));
  tr_check_str_eq(peer.addr, "127.0.0.1:40001");
  tr_check_eq(m->x_->u.hello.pid, (int64_t)getpid());
  tr_check_eq(m->x_->u.hello.version, TR_PROTO_VERSION);
  tr_check_eq(m->x_->u.hello.is_probe, 1);
  tr__uid_fini(&peer);
  tr_msg_free(m);
  return 0;
}

TR_TEST(hello, refusals_say_why) {
  tr_hello_info_t info = {.node = tr_self()};
  tr_msg_t *m = NULL;
  /* Another protocol version. */
  tr_assert_rc(tr__hello_new(&info, &m), 0);
  m->x_->u.hello.version = TR_PROTO_VERSION + 1;
  m = over_the_wire(m);
  tr_assert(m != NULL);
  tr_check_rc(tr__hello_check(m, NULL), -TR_EPROTO);
  tr_check(check_message("protocol version 2"), "names the versions");
  tr_msg_free(m);
  /* No uuid, no name, no pid. */
  tr_assert_rc(tr__hello_new(&info, &m), 0);
  memset(m->x_->u.hello.id.uuid, 0, TR_UUID_LEN);
  tr_check_rc(tr__hello_check(m, NULL), -TR_EPROTO);
  tr_check(check_message("without a uuid"));
  tr_actor_uuid(tr_self(), m->x_->u.hello.id.uuid);
  m->x_->u.hello.pid = 0;
  tr_check_rc(tr__hello_check(m, NULL), -TR_EPROTO);
  tr_check(check_message("pid 0"));
  free(m->x_->u.hello.id.name);
  m->x_->u.hello.id.name = NULL;
  tr_check_rc(tr__hello_check(m, NULL), -TR_EPROTO);
  tr_check(check_message("without a name"));
  tr_msg_free(m);
  /* Another body first. */
  tr_assert_rc(tr_msg_new(&m), 0);
  m->body = TR_BODY_STOP;
  tr_check_rc(tr__hello_check(m, NULL), -TR_EPROTO);
  tr_check(check_message("expects Hello first, got Stop"));
  tr_msg_free(m);
  /* Bytes that are not a frame: the decoder refuses them before any
   * check (a 4 GiB length claim allocates nothing). */
  uint8_t junk[8] = {0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4};
  tr_frame_dec_t d;
  size_t used = 0;
  tr_msg_t *out = NULL;
  tr__frame_dec_init(&d, 0);
  tr_check(tr__frame_dec_feed(&d, junk, sizeof junk, &used, NULL, &out) < 0, "junk is refused");
  tr_check(out == NULL);
  tr__frame_dec_fini(&d);
  tr_check_rc(tr__hello_new(NULL, &m), -TR_EINVAL);
  return 0;
}

/*
 * tr_buf_t: construction, the u64 helpers, reference counting (also across
 * threads, for TSan), and protobuf pack/unpack.  Early frees show up as
 * ASan use-after-free reports, missed frees as leak reports.
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "schema/tractor.pb-c.h"
#include "tractor/buf.h"
#include "tractor/errors.h"

Test(buf, new_is_writable_by_its_creator, .timeout = 30) {
  tr_buf_t *b = NULL;
  cr_assert_eq(tr_buf_new(100, &b), 0);
  cr_assert_not_null(b);
  cr_assert_eq(tr_buf_len(b), 100);
  memset(tr_buf_wdata(b), 0xab, 100);
  const uint8_t *d = tr_buf_data(b);
  for (int i = 0; i < 100; i++)
    cr_assert_eq(d[i], 0xab);
  cr_assert_eq((uintptr_t)tr_buf_data(b) % _Alignof(max_align_t), 0);
  tr_buf_release(b);
}

Test(buf, new_empty, .timeout = 30) {
  tr_buf_t *b = NULL;
  cr_assert_eq(tr_buf_new(0, &b), 0);
  cr_assert_eq(tr_buf_len(b), 0);
  tr_buf_release(b);
}

Test(buf, new_too_large_fails_cleanly, .timeout = 30) {
  tr_buf_t *b = (tr_buf_t *)0x1;
  cr_assert_eq(tr_buf_new(SIZE_MAX, &b), -TR_ENOMEM);
  cr_assert_null(b);
}

Test(buf, from_copies, .timeout = 30) {
  char src[] = "some bytes\0with a NUL";
  tr_buf_t *b = NULL;
  cr_assert_eq(tr_buf_from(src, sizeof src, &b), 0);
  src[0] = 'X'; /* the buffer holds its own copy */
  cr_assert_eq(tr_buf_len(b), sizeof src);
  cr_assert_eq(memcmp(tr_buf_data(b), "some bytes\0with a NUL", sizeof src), 0);
  tr_buf_release(b);

  cr_assert_eq(tr_buf_from(NULL, 0, &b), 0);
  cr_assert_eq(tr_buf_len(b), 0);
  tr_buf_release(b);

  b = (tr_buf_t *)0x1;
  cr_assert_eq(tr_buf_from(NULL, 5, &b), -TR_EINVAL);
  cr_assert_null(b);
}

Test(buf, from_str_drops_the_nul, .timeout = 30) {
  tr_buf_t *b = NULL;
  cr_assert_eq(tr_buf_from_str("hello", &b), 0);
  cr_assert_eq(tr_buf_len(b), 5);
  cr_assert_eq(memcmp(tr_buf_data(b), "hello", 5), 0);
  tr_buf_release(b);

  cr_assert_eq(tr_buf_from_str("", &b), 0);
  cr_assert_eq(tr_buf_len(b), 0);
  tr_buf_release(b);

  cr_assert_eq(tr_buf_from_str(NULL, &b), -TR_EINVAL);
  cr_assert_null(b);
}

Test(buf, u64_round_trip_little_endian, .timeout = 30) {
  static const uint64_t vals[] = {0, 1, 255, 256, 0x0102030405060708ull, UINT64_MAX};
  for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
    tr_buf_t *b = NULL;
    uint64_t v = 12345;
    cr_assert_eq(tr_buf_from_u64(vals[i], &b), 0);
    cr_assert_eq(tr_buf_len(b), 8);
    cr_assert_eq(tr_buf_to_u64(b, &v), 0);
    cr_assert_eq(v, vals[i]);
    tr_buf_release(b);
  }
  tr_buf_t *b = NULL;
  cr_assert_eq(tr_buf_from_u64(0x0102030405060708ull, &b), 0);
  const uint8_t want[8] = {8, 7, 6, 5, 4, 3, 2, 1};
  cr_assert_eq(memcmp(tr_buf_data(b), want, 8), 0);
  tr_buf_release(b);
}

Test(buf, to_u64_wrong_length, .timeout = 30) {
  static const size_t lens[] = {0, 1, 7, 9, 16};
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    tr_buf_t *b = NULL;
    uint64_t v = 77;
    cr_assert_eq(tr_buf_new(lens[i], &b), 0);
    if (lens[i] != 0)
      memset(tr_buf_wdata(b), 0, lens[i]);
    cr_assert_eq(tr_buf_to_u64(b, &v), -TR_EMSGTYPE);
    cr_assert_eq(v, 77, "a failed decode leaves the output alone");
    tr_buf_release(b);
  }
  uint64_t v;
  cr_assert_eq(tr_buf_to_u64(NULL, &v), -TR_EMSGTYPE);
}

Test(buf, refcount_last_release_frees, .timeout = 30) {
  tr_buf_t *b = NULL;
  cr_assert_eq(tr_buf_from_str("shared", &b), 0);
  cr_assert_eq(tr_buf_ref(b), b);
  cr_assert_eq(tr_buf_ref(b), b);
  tr_buf_release(b);
  tr_buf_release(b);
  /* One reference left: reading is still valid (ASan would say otherwise). */
  cr_assert_eq(memcmp(tr_buf_data(b), "shared", 6), 0);
  tr_buf_release(b);
}

Test(buf, null_handling, .timeout = 30) {
  tr_buf_release(NULL);
  cr_assert_null(tr_buf_ref(NULL));
  cr_assert_null(tr_buf_data(NULL));
  cr_assert_null(tr_buf_wdata(NULL));
  cr_assert_eq(tr_buf_len(NULL), 0);
  cr_assert_eq(tr_buf_new(1, NULL), -TR_EINVAL);
  cr_assert_eq(tr_buf_from("x", 1, NULL), -TR_EINVAL);
  cr_assert(strstr(tr_error_message(tr_error_last()), "tr_buf_from") != NULL,
            "the error names the call made: %s", tr_error_message(tr_error_last()));
  cr_assert_eq(tr_buf_to_u64(NULL, NULL), -TR_EINVAL);

  tr_buf_t *b = (tr_buf_t *)0x1;
  cr_assert_eq(tr_buf_pack(NULL, &b), -TR_EINVAL);
  cr_assert_null(b);
  cr_assert_eq(tr_buf_pack(NULL, NULL), -TR_EINVAL);

  ProtobufCMessage *pm = (ProtobufCMessage *)0x1;
  cr_assert_eq(tr_buf_unpack(NULL, NULL, &pm), -TR_EINVAL);
  cr_assert_null(pm);
  /* A NULL buffer is the empty message, which proto3 accepts. */
  cr_assert_eq(tr_buf_unpack(NULL, &tractor__credit__descriptor, &pm), 0);
  cr_assert_not_null(pm);
  cr_assert_eq(((Tractor__Credit *)pm)->n, 0);
  protobuf_c_message_free_unpacked(pm, NULL);
}

#define NTHREADS 8
#define NITER 20000

static void *ref_churn(void *arg) {
  tr_buf_t *b = arg;
  for (int i = 0; i < NITER; i++) {
    tr_buf_t *r = tr_buf_ref(b);
    cr_assert_eq(((const char *)tr_buf_data(r))[0], 'z');
    tr_buf_release(r);
  }
  /* Each thread was handed one reference and drops it: the last thread to
   * finish may be the one that frees. */
  tr_buf_release(b);
  return NULL;
}

Test(buf, refcount_across_threads, .timeout = 30) {
  pthread_t th[NTHREADS];
  tr_buf_t *b = NULL;
  cr_assert_eq(tr_buf_from_str("zzz", &b), 0);
  for (int i = 0; i < NTHREADS; i++)
    tr_buf_ref(b);
  for (int i = 0; i < NTHREADS; i++)
    cr_assert_eq(pthread_create(&th[i], NULL, ref_churn, b), 0);
  tr_buf_release(b);
  for (int i = 0; i < NTHREADS; i++)
    pthread_join(th[i], NULL);
}

Test(buf, pack_unpack_protobuf, .timeout = 30) {
  Tractor__Envelope env = TRACTOR__ENVELOPE__INIT;
  Tractor__Credit credit = TRACTOR__CREDIT__INIT;
  Tractor__ActorRef src = TRACTOR__ACTOR_REF__INIT;
  uint8_t uuid[16];
  for (int i = 0; i < 16; i++)
    uuid[i] = (uint8_t)i;
  src.name = "alice";
  src.addr = "tcp://127.0.0.1:1616";
  src.uuid.len = 16;
  src.uuid.data = uuid;
  credit.n = 64;
  env.cid = 42;
  env.src = &src;
  env.body_case = TRACTOR__ENVELOPE__BODY_CREDIT;
  env.credit = &credit;

  tr_buf_t *b = NULL;
  cr_assert_eq(tr_buf_pack(&env.base, &b), 0);
  cr_assert_eq(tr_buf_len(b), tractor__envelope__get_packed_size(&env));

  ProtobufCMessage *pm = NULL;
  cr_assert_eq(tr_buf_unpack(b, &tractor__envelope__descriptor, &pm), 0);
  Tractor__Envelope *e = (Tractor__Envelope *)pm;
  cr_assert_eq(e->cid, 42);
  cr_assert_eq(e->body_case, TRACTOR__ENVELOPE__BODY_CREDIT);
  cr_assert_eq(e->credit->n, 64);
  cr_assert_not_null(e->src);
  cr_assert_str_eq(e->src->name, "alice");
  cr_assert_str_eq(e->src->addr, "tcp://127.0.0.1:1616");
  cr_assert_eq(e->src->uuid.len, 16);
  cr_assert_eq(memcmp(e->src->uuid.data, uuid, 16), 0);
  cr_assert_null(e->dst);
  protobuf_c_message_free_unpacked(pm, NULL);
  tr_buf_release(b);
}

Test(buf, unpack_garbage_is_msgtype, .timeout = 30) {
  /* Field 2 (src), length-delimited, announcing 5 bytes but carrying 1. */
  static const uint8_t truncated[] = {0x12, 0x05, 0x01};
  /* Wire type 7 does not exist. */
  static const uint8_t badwire[] = {0x0f, 0x00};
  /* A varint that never ends. */
  static const uint8_t endless[] = {0x08, 0xff, 0xff, 0xff, 0xff, 0xff,
                                    0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  const struct {
    const uint8_t *p;
    size_t n;
  } cases[] = {{truncated, sizeof truncated}, {badwire, sizeof badwire}, {endless, sizeof endless}};

  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    tr_buf_t *b = NULL;
    ProtobufCMessage *pm = (ProtobufCMessage *)0x1;
    cr_assert_eq(tr_buf_from(cases[i].p, cases[i].n, &b), 0);
    cr_assert_eq(tr_buf_unpack(b, &tractor__envelope__descriptor, &pm), -TR_EMSGTYPE, "case %zu",
                 i);
    cr_assert_null(pm);
    tr_buf_release(b);
  }
}

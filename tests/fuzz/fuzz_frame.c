/*
 * libFuzzer target for the wire decoders (DESIGN §7): bytes from a peer go
 * through the streaming frame decoder, cut into chunks at offsets taken
 * from the input itself, and the frame bodies that come out are decoded as
 * envelopes again; every body is also decoded directly, by both decoders
 * (the hand-written one of the hot bodies and protobuf-c), with and
 * without a route (tr_route_t), which must agree: an input on which they
 * differ aborts.  Any crash, leak
 * (ASan) or undefined behaviour (UBSan) is a bug: malformed input must only
 * ever produce -TR_EPROTO / -TR_EMSGSIZE.
 *
 * Built with clang's -fsanitize=fuzzer in the ASan build (tests/CMakeLists),
 * with the codec it calls (envelope.c, the protoc-c output, buf.c,
 * msgpool.c) compiled with -fsanitize=fuzzer-no-link so libFuzzer sees its
 * branches (~220 edges after 60 s; the harness alone has 12).  ctest runs it
 * for a bounded number of inputs through run_fuzz.sh, which prints the final
 * `cov:` line.  Run it longer by hand:
 *   build/test-asan/tests/fuzz_frame -max_total_time=600 CORPUS_DIR tests/fuzz/seeds
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <tractor/actor.h>

#include "schema/envelope.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t *malloc_room(void *ctx, size_t n) { return *(uint8_t **)ctx = malloc(n); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* 1. The body on its own, by both decoders (the hand-written path of
   * the hot bodies and protobuf-c): the same verdict, and messages that
   * encode to the same bytes. */
  tr_msg_t *m = NULL, *ref = NULL, *rm = NULL, *rref = NULL;
  tr_route_t rt, rt_ref;
  int drc = tr__env_decode(data, size, NULL, &m), drc_ref = tr__env_decode_pb(data, size, NULL, &ref);
  /* And with a route (a channel's decode): the same verdict, and frames
   * of the same bytes when encoded with it. */
  int rrc = tr__env_decode(data, size, &rt, &rm), rrc_ref = tr__env_decode_pb(data, size, &rt_ref, &rref);
  if (drc != drc_ref || rrc != drc || rrc_ref != drc)
    abort();
  if (drc == 0) {
    /* A message that decodes must encode again (its fields are valid). */
    uint8_t *out = NULL, *out_ref = NULL;
    size_t len = 0, len_ref = 0;
    if (tr__env_encode(m, &out, &len) != 0 || tr__env_encode(ref, &out_ref, &len_ref) != 0 ||
        len != len_ref || memcmp(out, out_ref, len) != 0)
      abort();
    free(out);
    free(out_ref);
    const tr_route_t *rts[2] = {&rt, &rt_ref};
    tr_msg_t *rms[2] = {rm, rref};
    uint8_t *frame = NULL;
    size_t flen = 0;
    if (tr__frame_encode(m, SIZE_MAX, &frame, &flen) != 0)
      abort();
    for (int i = 0; i < 2; i++) {
      uint8_t *f = NULL;
      size_t n = 0;
      if (tr__frame_encode_with(rms[i], rts[i], SIZE_MAX, malloc_room, &f, &n) != 0 || n != flen ||
          memcmp(f, frame, n) != 0)
        abort();
      free(f);
    }
    free(frame);
    tr_msg_free(m);
    tr_msg_free(ref);
    tr_msg_free(rm);
    tr_msg_free(rref);
  }

  /* 2. As a stream of frames, small max_frame, chunked by the first byte. */
  if (size == 0)
    return 0;
  size_t chunk = (size_t)(data[0] % 7) + 1;
  tr_frame_dec_t d;
  tr__frame_dec_init(&d, 1u << 16);
  size_t at = 1;
  while (at < size) {
    size_t n = size - at < chunk ? size - at : chunk;
    size_t used = 0;
    tr_msg_t *got = NULL;
    int rc = tr__frame_dec_feed(&d, data + at, n, &used, NULL, &got);
    if (rc != 0)
      break; /* poisoned: every later feed fails the same way */
    if (got)
      tr_msg_free(got);
    if (used == 0 && !got)
      abort(); /* no progress and no message: the decoder would spin */
    at += used;
  }
  tr__frame_dec_fini(&d);
  return 0;
}

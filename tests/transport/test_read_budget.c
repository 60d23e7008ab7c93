/*
 * A channel shares its worker with the other actors.  A peer that keeps
 * the socket full (it writes faster than the channel decodes) must not
 * hold the worker for as long as it writes: the channel reads at most a
 * budget per turn (READ_BUDGET full reads, transport/channel.c), then ends
 * its turn and reads on in a later one, and the worker runs the others
 * meanwhile, those woken by the reactor (a timer) included.
 *
 * The runtime has one worker, so nothing else could run the test's own
 * task while the channel reads.  The flood is Yields for an actor nobody
 * has (each one decoded, then dropped), written in 256 KiB batches from a
 * thread of the test; decoding is slower than writing, so the socket stays
 * full.  The test's task sleeps ten times for 1 ms during the flood and
 * must get through them before the flood gives up (FLOOD_MAX_NS).  They
 * take ~30 ms.  A channel that read until EAGAIN, or whose reminder to
 * read on came in the same turn (up to 64 of them, TR_DEFAULT_BATCH),
 * held the worker for seconds, and the test failed.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TR_TEST_WORKERS 1
#include <tractor/testing.h>

#include "../support/peer.h"
#include "../support/procs.h"

#define MS (1000 * 1000LL)
/* How long the flood goes on at most.  Sanitized builds decode the frames
 * ~50 times slower (a turn's budget takes ~0.4 s under TSan), so they get
 * longer: the ten sleeps there take a few seconds. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define FLOOD_MAX_NS (45 * 1000 * MS)
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define FLOOD_MAX_NS (45 * 1000 * MS)
#endif
#endif
#ifndef FLOOD_MAX_NS
#define FLOOD_MAX_NS (10 * 1000 * MS)
#endif
#define FLOOD_BATCH (256u << 10)

typedef struct flood {
  uint32_t stop;     /* atomic: the test has what it needs */
  uint32_t finished; /* atomic: the flood ended (stopped, gave up or failed) */
  uint64_t sent;     /* atomic: bytes written */
  int rc, gave_up;
  char why[160];
} flood_t;

static void setup(void) { tr_test_procs_setup(); }
static void teardown(void) { tr_test_procs_check(); }

/* The batch of frames the flood writes again and again (NULL: no memory). */
static uint8_t *flood_batch(const uint8_t me[TR_UUID_LEN], size_t *len) {
  uint8_t *b = malloc(FLOOD_BATCH + 4096);
  *len = 0;
  for (uint64_t i = 1; b && *len < FLOOD_BATCH; i++) {
    tr_msg_t *m = NULL;
    uint8_t *fr = NULL;
    size_t flen = 0;
    int rc = tr_msg_new(&m);
    if (rc == 0) {
      m->body = TR_BODY_YIELD;
      m->cid = i;
      struct tr_envx *x = tr__envx_get(m);
      rc = x ? 0 : -1;
      if (rc == 0) {
        x->has_src = x->has_dst = 1;
        memcpy(x->src.uuid, me, TR_UUID_LEN);
        memset(x->dst.uuid, 0xee, TR_UUID_LEN);
      }
    }
    if (rc == 0)
      rc = tr__frame_encode(m, 0, &fr, &flen);
    tr_msg_free(m);
    if (rc != 0 || flen > 4096) {
      free(fr);
      free(b);
      return NULL;
    }
    memcpy(b + *len, fr, flen);
    *len += flen;
    free(fr);
  }
  return b;
}

static void *flood_run(void *arg) {
  flood_t *f = arg;
  uint8_t me[TR_UUID_LEN];
  tr_test_peer_uuid(0x71, me);
  int fd;
  size_t len = 0;
  f->rc = tr_test_peer_dial("flooder", me, 0, &fd, f->why, sizeof f->why);
  uint8_t *batch = f->rc == 0 ? flood_batch(me, &len) : NULL;
  if (f->rc == 0 && !batch) {
    f->rc = -1;
    snprintf(f->why, sizeof f->why, "no batch (out of memory)");
  }
  int64_t end = tr_now() + FLOOD_MAX_NS;
  while (f->rc == 0 && !__atomic_load_n(&f->stop, __ATOMIC_ACQUIRE)) {
    if (tr_now() > end) {
      f->gave_up = 1;
      break;
    }
    if (tr_test_peer_send_all(fd, batch, len) != 0) {
      f->rc = -1;
      snprintf(f->why, sizeof f->why, "the node closed the connection");
      break;
    }
    __atomic_fetch_add(&f->sent, len, __ATOMIC_RELEASE);
  }
  free(batch);
  if (fd >= 0)
    close(fd);
  __atomic_store_n(&f->finished, 1, __ATOMIC_RELEASE);
  return NULL;
}

static int flood_task(void *arg) { return tr_to_thread(flood_run, arg, NULL); }

TR_TEST_DEADLINE(read_budget, a_peer_that_keeps_the_socket_full_does_not_hold_the_worker,
                 100 * 1000 * MS, .timeout = 120,
        .init = setup, .fini = teardown) {
  static flood_t f; /* the thread's: read after the wait */
  tr_nursery_t *n;
  tr_assert_rc(tr_nursery_open(&n), 0);
  tr_assert_rc(tr_nursery_spawn(n, flood_task, &f, NULL), 0);
  /* The flood is under way and the channel reading. */
  while (__atomic_load_n(&f.sent, __ATOMIC_ACQUIRE) < (2u << 20) &&
         !__atomic_load_n(&f.finished, __ATOMIC_ACQUIRE))
    tr_check_rc(tr_sleep(MS), 0);
  uint64_t sent = __atomic_load_n(&f.sent, __ATOMIC_ACQUIRE);
  int64_t t0 = tr_now();
  for (int i = 0; i < 10; i++)
    tr_check_rc(tr_sleep(MS), 0);
  int64_t took = tr_now() - t0;
  int flooding = !__atomic_load_n(&f.finished, __ATOMIC_ACQUIRE) &&
                 __atomic_load_n(&f.sent, __ATOMIC_ACQUIRE) > sent;
  __atomic_store_n(&f.stop, 1, __ATOMIC_RELEASE);
  tr_check_rc(tr_nursery_close(n), 0);
  tr_check(f.rc == 0, "the flood (%d: %s)", f.rc, f.why);
  tr_check(flooding && !f.gave_up,
           "the task slept ten times while the flood went on (%.0f ms for the ten; the flood "
           "%s)",
           (double)took / MS, f.gave_up ? "gave up first" : "had ended");
  return 0;
}

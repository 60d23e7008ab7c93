/*
 * Topic pub/sub (tractor's tractor.msg.pub and its test_pubsub.py):
 * even/odd subscribers, one feeder per key, the live topic set shrinking
 * as subscribers leave, the feeder exiting when none remain, and a
 * publisher's end or failure reaching every subscriber.
 */
#include <stdlib.h>
#include <string.h>

#define TR_TEST_WORKERS 2
#include <tractor/testing.h>

#define MS (1000 * 1000LL)

static int starts, exits, exit_rc;

/* Publishes i under "even" or "odd", only while someone wants that topic
 * (tractor's publishers consult get_topics()).  Each value carries the
 * size of the live topic set at the time: value = i * 16 + ntopics. */
static int numbers(tr_pub_t *pub) {
  __atomic_add_fetch(&starts, 1, __ATOMIC_ACQ_REL);
  int rc = 0;
  for (uint64_t i = 0; rc == 0; i++) {
    const char *topic = i % 2 ? "odd" : "even";
    const char *live[8];
    size_t n = tr_pub_topics(pub, live, 8);
    int wanted = 0;
    for (size_t k = 0; k < n && k < 8; k++)
      wanted |= strcmp(live[k], topic) == 0;
    if (!wanted) {
      rc = tr_checkpoint();
      continue;
    }
    tr_buf_t *b;
    if ((rc = tr_buf_from_u64(i * 16 + n, &b)) != 0)
      break;
    rc = tr_pub_send(pub, topic, b);
    tr_buf_release(b);
  }
  __atomic_store_n(&exit_rc, rc, __ATOMIC_RELEASE);
  __atomic_add_fetch(&exits, 1, __ATOMIC_ACQ_REL);
  return rc;
}
TR_EXPORT_PUB("tpub.feeds", "numbers", numbers)

/* Publishes 10 values under "t" and returns. */
static int ten(tr_pub_t *pub) {
  for (uint64_t i = 0; i < 10; i++) {
    tr_buf_t *b;
    int rc = tr_buf_from_u64(i, &b);
    if (rc)
      return rc;
    rc = tr_pub_send(pub, "t", b);
    tr_buf_release(b);
    if (rc)
      return rc;
  }
  return 0;
}
TR_EXPORT_PUB("tpub.feeds", "ten", ten)

static int broken(tr_pub_t *pub) {
  tr_buf_t *b;
  int rc = tr_buf_from_u64(1, &b);
  if (rc == 0)
    rc = tr_pub_send(pub, "t", b);
  tr_buf_release(b);
  return rc ? rc : tr_fail("ValueError", "feed %s broke", tr_pub_key(pub));
}
TR_EXPORT_PUB("tpub.feeds", "broken", broken)

/* Sends under "x", which nobody wants, until a send fails: tr_pub_send
 * never waits here, and must still be a schedule point. */
static int spin(tr_pub_t *pub) {
  int rc;
  while ((rc = tr_pub_send(pub, "x", NULL)) == 0)
    ;
  return rc == -TR_ECANCELED ? 0 : rc;
}
TR_EXPORT_PUB("tpub.feeds", "spin", spin)

/* A value too large to cross processes (then refused for the subscriber
 * in another process only), an empty one, and what the first send
 * returned (as -rc, under "rc"). */
static int sizes(tr_pub_t *pub) {
  tr_buf_t *big, *code;
  int rc = tr_buf_new(TR_REMOTE_VALUE_MAX, &big);
  if (rc)
    return rc;
  memset(tr_buf_wdata(big), 7, TR_REMOTE_VALUE_MAX);
  int big_rc = tr_pub_send(pub, "big", big);
  tr_buf_release(big);
  if (big_rc == -TR_EMSGSIZE && !strstr(tr_error_message(tr_error_last()), "TR_REMOTE_VALUE_MAX"))
    big_rc = -TR_EINVAL; /* no error object saying why */
  if ((rc = tr_pub_send(pub, "empty", NULL)) != 0)
    return rc;
  if ((rc = tr_buf_from_u64((uint64_t)-big_rc, &code)) != 0)
    return rc;
  rc = tr_pub_send(pub, "rc", code);
  tr_buf_release(code);
  return rc;
}
TR_EXPORT_PUB("tpub.feeds", "sizes", sizes)

static const char *const feeds_ns[] = {"tpub.feeds"};

static void reset(void) {
  __atomic_store_n(&starts, 0, __ATOMIC_RELEASE);
  __atomic_store_n(&exits, 0, __ATOMIC_RELEASE);
  __atomic_store_n(&exit_rc, 0, __ATOMIC_RELEASE);
}

/* Receives one value of `topic`; returns its index i (value / 16) and
 * the live-topic count in *ntopics, or -1. */
static int64_t recv_one(tr_stream_t *s, const char *topic, uint64_t *ntopics) {
  char got[16];
  tr_buf_t *b = NULL;
  uint64_t v = 0;
  int rc = tr_pub_recv(s, got, sizeof got, &b);
  tr_check_rc(rc, 0, "tr_pub_recv on %s", topic);
  if (rc)
    return -1;
  tr_check_rc(tr_buf_to_u64(b, &v), 0);
  tr_buf_release(b);
  tr_check_str_eq(got, topic);
  if (ntopics)
    *ntopics = v % 16;
  return (int64_t)(v / 16);
}

typedef struct sub_arg {
  tr_portal_t *p;
  const char *topic;
  int n;
  int got;
} sub_arg_t;

/* A subscriber task: n values of one topic, each of the right parity and
 * increasing. */
static int subscriber(void *arg) {
  sub_arg_t *a = arg;
  const char *topics[] = {a->topic};
  tr_stream_t *s;
  tr_assert_rc(tr_pub_subscribe(a->p, "tpub.feeds.numbers", NULL, topics, 1, &s), 0);
  int64_t last = -1;
  for (int k = 0; k < a->n; k++) {
    int64_t i = recv_one(s, a->topic, NULL);
    if (i < 0)
      break;
    tr_check_eq(i % 2, strcmp(a->topic, "odd") == 0 ? 1 : 0, "parity of %lld", (long long)i);
    tr_check(i > last, "increasing: %lld after %lld", (long long)i, (long long)last);
    last = i;
    a->got++;
  }
  tr_check_rc(tr_stream_close(s), 0);
  return 0;
}

/* Waits (bounded) until the publisher has exited `want` times. */
static int wait_exits(int want) {
  int64_t until = tr_now() + 5000 * MS;
  while (__atomic_load_n(&exits, __ATOMIC_ACQUIRE) < want && tr_now() < until)
    if (tr_sleep(1 * MS) != 0)
      break;
  return __atomic_load_n(&exits, __ATOMIC_ACQUIRE);
}

/* tractor: test_pubsub.py::test_multi_actor_subs_arbiter_pub (even/odd
 * subscribers of one publisher, each gets only its topic). */
TR_TEST(pubsub, even_odd_subscribers, .timeout = 60) {
  reset();
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "publisher", feeds_ns, 1, &p), 0);
  if (p) {
    sub_arg_t even = {p, "even", 200, 0}, odd = {p, "odd", 200, 0};
    tr_nursery_t *n;
    tr_assert_rc(tr_nursery_open(&n), 0);
    tr_check_rc(tr_nursery_spawn(n, subscriber, &even, NULL), 0);
    tr_check_rc(tr_nursery_spawn(n, subscriber, &odd, NULL), 0);
    tr_check_rc(tr_nursery_close(n), 0);
    tr_check_eq(even.got, 200);
    tr_check_eq(odd.got, 200);
    /* Both left: the one feeder (one key) was cancelled and exited. */
    tr_check_eq(wait_exits(1), 1, "the feeder exited once nobody was left");
    tr_check_eq(__atomic_load_n(&starts, __ATOMIC_ACQUIRE), 1, "one feeder for the key");
    tr_check_rc(__atomic_load_n(&exit_rc, __ATOMIC_ACQUIRE), -TR_ECANCELED);
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

/* An odd-topic subscriber task: reads n values, then leaves and says so. */
static int odd_reader(void *arg) {
  sub_arg_t *a = arg;
  const char *to[] = {"odd"};
  tr_stream_t *s;
  tr_assert_rc(tr_pub_subscribe(a->p, "tpub.feeds.numbers", NULL, to, 1, &s), 0);
  for (; a->got < a->n; a->got++)
    if (recv_one(s, "odd", NULL) < 0)
      break;
  tr_check_rc(tr_stream_close(s), 0);
  __atomic_store_n(&a->n, -1, __ATOMIC_RELEASE); /* left */
  return 0;
}

/* tractor: test_pubsub.py (the publisher's get_topics() shrinking as
 * subscribers leave, and the feeder ending with the last one).  Each
 * subscriber reads in its own task: the feeder serves them in turn and
 * waits for the slowest (lossless), so one task reading two subscriptions
 * in lockstep could starve itself. */
TR_TEST(pubsub, topic_set_shrinks_and_feeder_exits, .timeout = 60) {
  reset();
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "publisher", feeds_ns, 1, &p), 0);
  if (p) {
    const char *te[] = {"even"};
    tr_stream_t *se = NULL;
    tr_check_rc(tr_pub_subscribe(p, "tpub.feeds.numbers", NULL, te, 1, &se), 0);
    sub_arg_t odd = {p, "odd", 300, 0};
    tr_nursery_t *n = NULL;
    tr_check_rc(tr_nursery_open(&n), 0);
    if (se && n) {
      tr_check_rc(tr_nursery_spawn(n, odd_reader, &odd, NULL), 0);
      /* While the odd reader is subscribed, values say two live topics;
       * once it has left, the set shrinks to {"even"}. */
      uint64_t nt = 0;
      int seen2 = 0, seen1 = 0;
      for (int k = 0; k < 100000 && !seen1; k++) {
        if (recv_one(se, "even", &nt) < 0)
          break;
        seen2 |= nt == 2;
        seen1 = nt == 1 && __atomic_load_n(&odd.n, __ATOMIC_ACQUIRE) == -1;
      }
      tr_check(seen2, "the live topic set had both topics");
      tr_check(seen1, "the live topic set shrank to one topic");
      tr_check_eq(odd.got, 300);
      tr_check_eq(__atomic_load_n(&exits, __ATOMIC_ACQUIRE), 0, "the feeder still runs");
    }
    if (n)
      tr_check_rc(tr_nursery_close(n), 0);
    if (se)
      tr_check_rc(tr_stream_close(se), 0);
    tr_check_eq(wait_exits(1), 1, "the feeder exited when none remained");
    tr_check_rc(__atomic_load_n(&exit_rc, __ATOMIC_ACQUIRE), -TR_ECANCELED);
    /* A new subscriber starts a new feeder. */
    tr_stream_t *s2 = NULL;
    tr_check_rc(tr_pub_subscribe(p, "tpub.feeds.numbers", NULL, te, 1, &s2), 0);
    if (s2) {
      tr_check(recv_one(s2, "even", NULL) >= 0);
      tr_check_rc(tr_stream_close(s2), 0);
    }
    tr_check_eq(wait_exits(2), 2);
    tr_check_eq(__atomic_load_n(&starts, __ATOMIC_ACQUIRE), 2);
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

typedef struct key_arg {
  tr_portal_t *p;
  const char *key;
} key_arg_t;

static int keyed_reader(void *arg) {
  key_arg_t *a = arg;
  const char *te[] = {"even"};
  tr_stream_t *s;
  tr_assert_rc(tr_pub_subscribe(a->p, "tpub.feeds.numbers", a->key, te, 1, &s), 0);
  for (int k = 0; k < 100; k++)
    if (recv_one(s, "even", NULL) < 0)
      break;
  tr_check_rc(tr_stream_close(s), 0);
  return 0;
}

/* Subscribers passing another key get their own feeder (tractor's
 * task_name); the same key shares one. */
TR_TEST(pubsub, one_feeder_per_key, .timeout = 60) {
  reset();
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "publisher", feeds_ns, 1, &p), 0);
  if (p) {
    key_arg_t a = {p, NULL}, b = {p, NULL}, c = {p, "mine"};
    tr_nursery_t *n;
    tr_assert_rc(tr_nursery_open(&n), 0);
    tr_check_rc(tr_nursery_spawn(n, keyed_reader, &a, NULL), 0);
    tr_check_rc(tr_nursery_spawn(n, keyed_reader, &b, NULL), 0);
    tr_check_rc(tr_nursery_spawn(n, keyed_reader, &c, NULL), 0);
    tr_check_rc(tr_nursery_close(n), 0);
    tr_check_eq(wait_exits(2), 2);
    tr_check_eq(__atomic_load_n(&starts, __ATOMIC_ACQUIRE), 2, "default key + 'mine'");
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

/* A publisher that returns ends the streams; one that fails fails them. */
TR_TEST(pubsub, publisher_end_and_failure, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "publisher", feeds_ns, 1, &p), 0);
  if (p) {
    const char *t[] = {"t"};
    tr_stream_t *s = NULL;
    tr_check_rc(tr_pub_subscribe(p, "tpub.feeds.ten", NULL, t, 1, &s), 0);
    if (s) {
      char topic[8];
      tr_buf_t *b;
      uint64_t v, want = 0;
      int rc;
      while ((rc = tr_pub_recv(s, topic, sizeof topic, &b)) == 0) {
        tr_check_rc(tr_buf_to_u64(b, &v), 0);
        tr_check_eq(v, want++);
        tr_buf_release(b);
      }
      tr_check_rc(rc, -TR_EEOF);
      tr_check_eq(want, 10);
      tr_check_rc(tr_stream_close(s), 0);
    }
    s = NULL;
    tr_check_rc(tr_pub_subscribe(p, "tpub.feeds.broken", NULL, t, 1, &s), 0);
    if (s) {
      tr_buf_t *b = NULL;
      tr_check_rc(tr_pub_recv(s, NULL, 0, &b), 0);
      tr_buf_release(b);
      tr_check_rc(tr_pub_recv(s, NULL, 0, &b), -TR_EREMOTE);
      const tr_error_t *e = tr_error_last();
      tr_check(e && tr_error_boxed_type(e) && strcmp(tr_error_boxed_type(e), "ValueError") == 0,
               "boxed ValueError");
      tr_check_rc(tr_stream_close(s), -TR_EREMOTE);
    }
    const char *none[] = {NULL};
    tr_check_rc(tr_pub_subscribe(p, "tpub.feeds.ten", NULL, none, 0, &s), -TR_EINVAL);
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

/* pubsub.h's own loop, with nobody wanting what it sends, never waits:
 * tr_pub_send is a schedule point, so the publisher still sees its last
 * subscriber leave (it spun for ever, and its actor took no mail: the
 * close waited its 0.5 s and the nursery never closed). */
TR_TEST(pubsub, a_publisher_that_never_waits_sees_its_last_subscriber_leave, .timeout = 60) {
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_scope_t sc;
  tr_assert_rc(tr_move_on_after(&sc, 10000 * MS), 0);
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "publisher", feeds_ns, 1, &p), 0);
  if (p) {
    const char *t[] = {"never"};
    tr_stream_t *s = NULL;
    tr_check_rc(tr_pub_subscribe(p, "tpub.feeds.spin", NULL, t, 1, &s), 0);
    int64_t t0 = tr_now();
    if (s)
      tr_check_rc(tr_stream_close(s), 0);
    tr_check(tr_now() - t0 < 400 * MS, "the close took %lld ms",
             (long long)((tr_now() - t0) / MS));
  }
  tr_check_rc(tr_actor_nursery_cancel(an), 0);
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_assert_rc(tr_scope_close(&sc), 0);
  tr_check(!tr_scope_cancelled_caught(&sc), "the publisher's actor never ended");
  tr_portal_release(p);
  return 0;
}

/* A value too large for a subscriber in another process is refused to the
 * publisher (-TR_EMSGSIZE, with an error object), and that subscriber
 * goes on with the next values; in one process it is delivered.  An empty
 * payload arrives as NULL. */
TR_TEST(pubsub, a_value_too_large_to_cross_is_refused_to_the_publisher, .timeout = 60) {
  const char *spawn = getenv("TR_SPAWN");
  int remote = spawn && strcmp(spawn, "process") == 0;
  tr_actor_nursery_t *an;
  tr_portal_t *p = NULL;
  tr_assert_rc(tr_actor_nursery_open(&an, NULL), 0);
  tr_check_rc(tr_start_actor(an, "publisher", feeds_ns, 1, &p), 0);
  if (p) {
    const char *t[] = {"big", "empty", "rc"};
    tr_stream_t *s = NULL;
    tr_check_rc(tr_pub_subscribe(p, "tpub.feeds.sizes", NULL, t, 3, &s), 0);
    char topic[8];
    tr_buf_t *b = NULL;
    if (s && !remote) {
      tr_check_rc(tr_pub_recv(s, topic, sizeof topic, &b), 0);
      tr_check_str_eq(topic, "big");
      tr_check_eq(tr_buf_len(b), TR_REMOTE_VALUE_MAX);
      tr_buf_release(b);
    }
    if (s) {
      b = (tr_buf_t *)1;
      tr_check_rc(tr_pub_recv(s, topic, sizeof topic, &b), 0);
      tr_check_str_eq(topic, "empty");
      tr_check(b == NULL, "an empty payload is NULL");
      uint64_t code = 1;
      tr_check_rc(tr_pub_recv(s, topic, sizeof topic, &b), 0);
      tr_check_str_eq(topic, "rc");
      tr_check_rc(tr_buf_to_u64(b, &code), 0);
      tr_buf_release(b);
      tr_check_eq(code, remote ? (uint64_t)TR_EMSGSIZE : 0);
      tr_check_rc(tr_pub_recv(s, NULL, 0, &b), -TR_EEOF);
      tr_check_rc(tr_stream_close(s), 0);
    }
  }
  tr_assert_rc(tr_actor_nursery_close(an), 0);
  tr_portal_release(p);
  return 0;
}

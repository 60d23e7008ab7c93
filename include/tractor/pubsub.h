/*
 * Topic pub/sub over streams (tractor's tractor.msg.pub).
 *
 * A publisher is a function that sends (topic, payload) pairs.  Exported
 * with TR_EXPORT_PUB, it is called by subscribers as a STREAM function
 * with a list of topics.  However many subscribers an actor has, one task,
 * the feeder, runs the publisher function per key and fans every value
 * out to the subscribers of its topic:
 *
 *     static int prices(tr_pub_t *pub) {
 *       for (uint64_t i = 0;; i++) {
 *         tr_buf_t *b; tr_buf_from_u64(i, &b);
 *         int rc = tr_pub_send(pub, i % 2 ? "odd" : "even", b);
 *         tr_buf_release(b);
 *         if (rc) return rc;          // -TR_ECANCELED: no subscriber left
 *       }
 *     }
 *     TR_EXPORT_PUB("market", "prices", prices)
 *
 *     // in another actor's task, with a portal to the publisher's actor:
 *     const char *topics[] = {"even"};
 *     tr_stream_t *s;
 *     tr_pub_subscribe(p, "market.prices", NULL, topics, 1, &s);
 *     char topic[64]; tr_buf_t *v;
 *     while (tr_pub_recv(s, topic, sizeof topic, &v) == 0) { ...; tr_buf_release(v); }
 *     tr_stream_close(s);
 *
 * Semantics (tractor's):
 *  - the feeder starts with the first subscriber of a key; the key defaults
 *    to the exported name ("market.prices"), and subscribers that pass
 *    another key get a feeder of their own running the same function;
 *  - the live topic set (tr_pub_topics) is the union of the current
 *    subscribers' topics: it shrinks when subscribers leave, and the
 *    publisher may use it to skip work nobody wants;
 *  - when the last subscriber leaves, the feeder is cancelled: its
 *    publisher's next blocking call (tr_pub_send included) returns
 *    -TR_ECANCELED, and the feeder exits;
 *  - a publisher that returns ends every subscriber's stream (-TR_EEOF), or
 *    fails it with the publisher's error (boxed, -TR_EREMOTE);
 *  - delivery is lossless and in order per subscriber: a subscriber that
 *    does not consume blocks the feeder once its window is full
 *    (backpressure), as a tractor publisher awaits each send.
 */
#ifndef TRACTOR_PUBSUB_H
#define TRACTOR_PUBSUB_H

#include <stddef.h>

#include "buf.h"
#include "portal.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One feeder: a running publisher function and its subscribers. */
typedef struct tr_pub tr_pub_t;

/* A publisher function.  Runs as the feeder task of its key in the
 * publishing actor; returns 0 to end every subscriber's stream, or a
 * negative -TR_E* with the task's error set to fail them. */
typedef int (*tr_pub_fn)(tr_pub_t *pub);

/*
 * TR_EXPORT_PUB(ns, name, fn) exports publisher fn as STREAM function
 * "ns.name" (string literals, as TR_EXPORT_STREAM).  At file scope.
 */
#define TR_EXPORT_PUB(ns, name, fn) TR__EXPORT_PUB_AT(__COUNTER__, ns, name, fn)
#define TR__EXPORT_PUB_AT(id, ns, name, fn)                                                        \
  static int TR__RPC_CAT(tr__pub_wrap_, id)(struct tr_ctx * ctx, const tr_buf_t *args,             \
                                            tr_buf_t **result) {                                   \
    (void)result;                                                                                  \
    return tr__pub_serve(ctx, args, (fn), "" ns "." name "");                                      \
  }                                                                                                \
  TR_EXPORT_STREAM(ns, name, TR__RPC_CAT(tr__pub_wrap_, id))

/* The body of an exported publisher, per subscriber (TR_EXPORT_PUB). */
int tr__pub_serve(struct tr_ctx *ctx, const tr_buf_t *args, tr_pub_fn fn, const char *qualified);

/*
 * Publisher side: sends payload under `topic` to every current subscriber
 * of that topic (nothing is sent when there is none).  Waits while a
 * subscriber's window is full.  Each call is a schedule point (the
 * actor's other tasks and its mail are handled before it returns), so a
 * loop of sends that never waits still sees its last subscriber leave.
 * Returns 0, -TR_ECANCELED (the feeder was cancelled: no subscriber is
 * left, or the actor is cancelled), -TR_EMSGSIZE (the value, 2 + topic +
 * payload bytes, is larger than TR_REMOTE_VALUE_MAX and a subscriber in
 * another process wants it: that subscriber gets nothing of this send and
 * stays subscribed, those in this process got it), -TR_EINVAL (NULL or a
 * topic longer than 65535 bytes) or -TR_ENOMEM, with an error object.  A
 * subscriber that has left is skipped.
 * Ownership: borrowed (subscribers get references to one shared copy).
 * Threads: the feeder task (the publisher function).
 */
int tr_pub_send(tr_pub_t *pub, const char *topic, const tr_buf_t *payload);

/*
 * The live topic set: stores up to `max` distinct topics in out (borrowed,
 * valid until the publisher's next blocking call) and returns how many
 * there are in all.
 */
size_t tr_pub_topics(const tr_pub_t *pub, const char **out, size_t max);

/* The feeder's key (borrowed). */
const char *tr_pub_key(const tr_pub_t *pub);

/*
 * Subscriber side: subscribes to `topics` of publisher `qualified` in the
 * portal's actor, with feeder `key` (NULL: the default, the exported
 * name).  Returns as tr_portal_open_stream_from (and -TR_EINVAL for no
 * topics or more than 65535, or a topic or key longer than 65535 bytes);
 * receive with
 * tr_pub_recv, leave with tr_stream_close.
 * Ownership: topics and key are copied; *out as open_stream_from.
 * Threads: a task.
 */
int tr_pub_subscribe(tr_portal_t *p, const char *qualified, const char *key,
                     const char *const *topics, size_t n, tr_stream_t **out);

/*
 * Receives the next (topic, payload): 0 with the topic copied into
 * topic[cap] (NUL-terminated, truncated if longer) and *payload (a new
 * buffer, the caller's; NULL for an empty payload); otherwise as tr_stream_recv (-TR_EEOF when the
 * publisher returned), or -TR_EPROTO for a value that is not a pub/sub
 * message.  topic may be NULL when cap is 0.
 */
int tr_pub_recv(tr_stream_t *s, char *topic, size_t cap, tr_buf_t **payload);

#ifdef __cplusplus
}
#endif
#endif

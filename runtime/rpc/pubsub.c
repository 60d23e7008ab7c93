/*
 * Topic pub/sub (include/tractor/pubsub.h) on top of STREAM dialogs.
 *
 * Each subscriber's call runs tr__pub_serve as its request task: it joins
 * the feeder of its key (starting it when it is the first), opens its
 * stream, and waits until the feeder ends or its caller leaves (a Cancel
 * for its dialog cancels the task).  The feeder is a task of the actor's
 * service nursery running the publisher function; tr_pub_send writes one
 * encoded value and sends a reference to it on each matching subscriber's
 * stream, so credit windows give per-subscriber backpressure.
 *
 * Wire form of the values (a Yield payload): u16 topic length (little
 * endian), the topic, then the payload bytes.  Of the call arguments:
 * u16 key length (0 = default key), the key, u16 topic count, then each
 * topic as u16 length + bytes.
 */
#include <stdlib.h>
#include <string.h>

#include <tractor/pubsub.h>

#include "runtime/actor/actor.h"
#include "runtime/error/error.h"
#include "runtime/rpc/rpc.h"
#include "runtime/task/task.h"

typedef struct pub_sub {
  struct pub_sub *next;
  tr_stream_t *stream;
  tr_task_t *task; /* the subscriber's request task */
  char **topics;
  size_t n;
  uint8_t busy;    /* the feeder is sending to it: do not free */
  uint8_t waiting; /* its task waits for busy to clear */
  uint8_t gone;    /* its caller left (a send failed) */
} pub_sub_t;

struct tr_pub {
  struct tr_pub *next; /* the actor's feeders */
  char *key;
  tr_pub_fn fn;
  pub_sub_t *subs;
  size_t nsubs;
  unsigned refs; /* subscribers + the feeder task while it runs */
  tr_task_t *task;
  tr_scope_t *scope; /* the feeder's scope while the function runs */
  uint8_t ended;
  int rc;
  tr_error_t *err;
};

/* ---- encoding ------------------------------------------------------------- */

static void put16(uint8_t *p, size_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
}

static size_t get16(const uint8_t *p) { return (size_t)p[0] | ((size_t)p[1] << 8); }

/* Reads a u16-prefixed string at *pos into a new C string. */
static int read_str(const uint8_t *d, size_t len, size_t *pos, char **out) {
  if (len - *pos < 2)
    return TR_ERROR(-TR_EPROTO, "pub/sub value: topic length cut short");
  size_t n = get16(d + *pos);
  *pos += 2;
  if (len - *pos < n)
    return TR_ERROR(-TR_EPROTO, "pub/sub value: topic longer than the value");
  *out = malloc(n + 1);
  if (!*out)
    return TR__ENOMEM();
  memcpy(*out, d + *pos, n);
  (*out)[n] = '\0';
  *pos += n;
  return 0;
}

static void free_strs(char **v, size_t n) {
  for (size_t i = 0; v && i < n; i++)
    free(v[i]);
  free(v);
}

static int decode_args(const tr_buf_t *args, char **key, char ***topics, size_t *n) {
  *key = NULL;
  *topics = NULL;
  *n = 0;
  const uint8_t *d = tr_buf_data(args);
  size_t len = tr_buf_len(args), pos = 0;
  int rc = read_str(d, len, &pos, key);
  if (rc)
    goto bad;
  if (len - pos < 2) {
    rc = TR_ERROR(-TR_EPROTO, "subscription arguments: topic count cut short");
    goto bad;
  }
  size_t cnt = get16(d + pos);
  pos += 2;
  *topics = calloc(cnt ? cnt : 1, sizeof(char *));
  if (!*topics) {
    rc = TR__ENOMEM();
    goto bad;
  }
  for (; *n < cnt; (*n)++)
    if ((rc = read_str(d, len, &pos, &(*topics)[*n])) != 0)
      goto bad;
  if (cnt == 0 || pos != len) {
    rc = TR_ERROR(-TR_EPROTO, "subscription arguments: %s",
                  cnt == 0 ? "no topic" : "bytes after the last topic");
    goto bad;
  }
  return 0;
bad:
  free(*key);
  *key = NULL;
  free_strs(*topics, *n);
  *topics = NULL;
  *n = 0;
  return rc == -TR_EPROTO ? TR_ERROR(rc, "malformed pub/sub subscription") : rc;
}

/* ---- feeder ---------------------------------------------------------------- */

static void pub_unref(tr_tasks_t *ts, tr_pub_t *pub) {
  if (--pub->refs)
    return;
  for (tr_pub_t **pp = &ts->rpc->pubs; *pp; pp = &(*pp)->next)
    if (*pp == pub) {
      *pp = pub->next;
      break;
    }
  free(pub->key);
  tr__error_free(pub->err);
  free(pub);
}

static int feeder_main(void *arg) {
  tr_pub_t *pub = arg;
  tr_actor_t *self = tr_self();
  tr_scope_t s;
  int rc = tr_scope_open(&s, TR_NO_DEADLINE, 0);
  if (rc == 0) {
    pub->task = tr__task_of_actor_current(self);
    pub->scope = &s;
    if (pub->nsubs == 0) /* every subscriber left before the feeder ran */
      tr_scope_cancel(&s);
    rc = pub->fn(pub);
    pub->scope = NULL;
    tr_scope_close(&s);
  }
  pub->ended = 1;
  pub->rc = rc;
  if (rc && tr_error_last())
    pub->err = tr__error_copy(tr_error_last());
  for (pub_sub_t *sub = pub->subs; sub; sub = sub->next)
    tr__task_wake_blocked(sub->task);
  pub_unref(self->tasks, pub);
  return 0; /* the publisher's outcome goes to its subscribers, not the service */
}

static int sub_wants(const pub_sub_t *sub, const char *topic) {
  for (size_t i = 0; i < sub->n; i++)
    if (strcmp(sub->topics[i], topic) == 0)
      return 1;
  return 0;
}

int tr_pub_send(tr_pub_t *pub, const char *topic, const tr_buf_t *payload) {
  if (!pub || !topic)
    return TR__EINVAL_NULL();
  size_t tlen = strlen(topic), plen = tr_buf_len(payload);
  if (tlen > 0xffff)
    return TR_ERROR(-TR_EINVAL, "topic longer than 65535 bytes");
  tr_task_t *t = tr__task_of_actor_current(tr_self());
  if (!t)
    return TR__EPERM_NOTASK();
  if (tr__task_cancelled(t))
    return tr__task_observe_cancel(t, "%s", "");
  tr_buf_t *b = NULL;
  tr_error_t *big_err = NULL;
  int rc = 0, too_big = 0;
  for (pub_sub_t *sub = pub->subs; sub; sub = sub->next) {
    if (sub->gone || !sub_wants(sub, topic))
      continue;
    if (!b) { /* encoded once, shared by every subscriber */
      if ((rc = tr_buf_new(2 + tlen + plen, &b)) != 0)
        return rc;
      uint8_t *d = tr_buf_wdata(b);
      put16(d, tlen);
      memcpy(d + 2, topic, tlen);
      if (plen)
        memcpy(d + 2 + tlen, tr_buf_data(payload), plen);
    }
    sub->busy = 1;
    rc = tr_stream_send(sub->stream, b);
    sub->busy = 0;
    if (sub->waiting)
      tr__task_wake_blocked(sub->task);
    if (rc == -TR_ECANCELED)
      break; /* the feeder itself is cancelled */
    if (rc == -TR_EMSGSIZE) {
      /* Too large for a subscriber in another process (refused where it
       * is sent, with its error object): that subscriber gets nothing of
       * this send and stays; the publisher hears of it below. */
      too_big = 1;
      tr_error_t *e = tr__error_take();
      tr__error_free(big_err);
      big_err = e;
      rc = 0;
    } else if (rc) {
      sub->gone = 1; /* its caller left; it unregisters itself */
      rc = 0;
    }
  }
  tr_buf_release(b);
  if (rc == 0 && too_big) {
    if (!big_err)
      return TR_ERROR(-TR_EMSGSIZE, "a value of topic '%s' is too large for a subscriber", topic);
    tr__error_put(big_err);
    return -TR_EMSGSIZE;
  }
  tr__error_free(big_err);
  if (rc == 0) /* a schedule point: a loop of sends never starves its actor */
    tr__task_yield(t);
  return rc;
}

size_t tr_pub_topics(const tr_pub_t *pub, const char **out, size_t max) {
  size_t count = 0;
  if (!pub)
    return 0;
  for (const pub_sub_t *sub = pub->subs; sub; sub = sub->next) {
    if (sub->gone)
      continue;
    for (size_t i = 0; i < sub->n; i++) {
      int seen = 0;
      /* Earlier subscribers' topics: quadratic, topic sets are small. */
      for (const pub_sub_t *o = pub->subs; o != sub && !seen; o = o->next)
        seen = !o->gone && sub_wants(o, sub->topics[i]);
      for (size_t j = 0; j < i && !seen; j++)
        seen = strcmp(sub->topics[j], sub->topics[i]) == 0;
      if (seen)
        continue;
      if (count < max && out)
        out[count] = sub->topics[i];
      count++;
    }
  }
  return count;
}

const char *tr_pub_key(const tr_pub_t *pub) { return pub ? pub->key : NULL; }

/* ---- a subscriber's call ---------------------------------------------------- */

int tr__pub_serve(struct tr_ctx *ctx, const tr_buf_t *args, tr_pub_fn fn, const char *qualified) {
  tr_actor_t *self = tr_self();
  tr_tasks_t *ts = self->tasks;
  tr_task_t *t = tr__task_of_actor_current(self);
  char *key, **topics;
  size_t n;
  int rc = decode_args(args, &key, &topics, &n);
  if (rc)
    return rc;
  pub_sub_t *sub = calloc(1, sizeof(*sub));
  if (!sub || (rc = tr_ctx_open_stream(ctx, &sub->stream)) != 0) {
    free(key);
    free_strs(topics, n);
    free(sub);
    return sub ? rc : TR__ENOMEM();
  }
  sub->task = t;
  sub->topics = topics;
  sub->n = n;
  if (!key[0]) {
    free(key);
    key = strdup(qualified);
  }
  tr_pub_t *pub = NULL;
  for (tr_pub_t *p = ts->rpc->pubs; p && key; p = p->next)
    if (!p->ended && p->fn == fn && p->nsubs && strcmp(p->key, key) == 0)
      pub = p;
  if (!pub && key) {
    pub = calloc(1, sizeof(*pub));
    if (pub) {
      pub->key = key;
      key = NULL;
      pub->fn = fn;
      pub->refs = 1; /* the feeder task's */
      rc = ts->rpc->service
               ? tr__nursery_spawn_internal(ts->rpc->service, feeder_main, pub, pub->key)
               : -TR_ECLOSED;
      if (rc == -TR_ECLOSED) /* the other's errors are recorded */
        (void)TR_ERROR(rc, "the publisher's actor no longer serves");
      if (rc) {
        free(pub->key);
        free(pub);
        pub = NULL;
      } else {
        pub->next = ts->rpc->pubs;
        ts->rpc->pubs = pub;
      }
    }
  }
  free(key);
  if (!pub) {
    free_strs(topics, n);
    free(sub);
    return rc ? rc : TR__ENOMEM();
  }
  pub->refs++;
  sub->next = pub->subs;
  pub->subs = sub;
  pub->nsubs++;

  /* Serve until the feeder ends or this subscriber's caller leaves. */
  rc = 0;
  while (!pub->ended) { /* a caller that leaves cancels this task */
    if (tr__task_cancelled(t)) {
      rc = tr__task_observe_cancel(t, "%s", "");
      break;
    }
    t->blocked_on = "serving a pub/sub subscriber (until its feeder ends)";
    tr__task_block(t, 1);
  }
  while (sub->busy) { /* the feeder is inside a send to this stream */
    sub->waiting = 1;
    t->blocked_on = "a pub/sub feeder's send to this subscriber";
    tr__task_wait_until(t, TR_NO_DEADLINE);
  }
  for (pub_sub_t **pp = &pub->subs; *pp; pp = &(*pp)->next)
    if (*pp == sub) {
      *pp = sub->next;
      break;
    }
  pub->nsubs--;
  if (pub->nsubs == 0 && !pub->ended && pub->scope)
    tr__task_cancel_scope_local(pub->task, pub->scope); /* nobody left */
  if (pub->ended && rc == 0) {
    rc = pub->rc;
    if (rc && pub->err)
      tr__error_put(tr__error_copy(pub->err));
  }
  free_strs(sub->topics, sub->n);
  free(sub);
  pub_unref(ts, pub);
  return rc;
}

int tr_pub_subscribe(tr_portal_t *p, const char *qualified, const char *key,
                     const char *const *topics, size_t n, tr_stream_t **out) {
  if (out)
    *out = NULL;
  if (!out)
    return TR__EINVAL_NULL();
  if (!topics || n == 0 || n > 0xffff)
    return TR_ERROR(-TR_EINVAL, "tr_pub_subscribe takes 1 to 65535 topics, not %zu%s", n,
                    topics ? "" : " (topics is NULL)");
  size_t klen = key ? strlen(key) : 0, len = 2 + klen + 2;
  for (size_t i = 0; i < n; i++) {
    if (!topics[i] || strlen(topics[i]) > 0xffff)
      return TR_ERROR(-TR_EINVAL, "topic %zu is NULL or longer than 65535 bytes", i);
    len += 2 + strlen(topics[i]);
  }
  if (klen > 0xffff)
    return TR_ERROR(-TR_EINVAL, "key longer than 65535 bytes");
  tr_buf_t *args;
  int rc = tr_buf_new(len, &args);
  if (rc)
    return rc;
  uint8_t *d = tr_buf_wdata(args);
  size_t pos = 0;
  put16(d, klen);
  memcpy(d + 2, key ? key : "", klen);
  pos = 2 + klen;
  put16(d + pos, n);
  pos += 2;
  for (size_t i = 0; i < n; i++) {
    size_t tl = strlen(topics[i]);
    put16(d + pos, tl);
    memcpy(d + pos + 2, topics[i], tl);
    pos += 2 + tl;
  }
  rc = tr_portal_open_stream_from(p, qualified, args, NULL, out);
  tr_buf_release(args);
  return rc;
}

int tr_pub_recv(tr_stream_t *s, char *topic, size_t cap, tr_buf_t **payload) {
  if (payload)
    *payload = NULL;
  if (!payload || (cap && !topic))
    return TR__EINVAL_NULL();
  tr_buf_t *v;
  int rc = tr_stream_recv(s, &v);
  if (rc)
    return rc;
  const uint8_t *d = tr_buf_data(v);
  size_t len = tr_buf_len(v);
  size_t tl = len >= 2 ? get16(d) : 0;
  if (len < 2 || len - 2 < tl) {
    tr_buf_release(v);
    return TR_ERROR(-TR_EPROTO, "not a pub/sub value (%zu bytes)", len);
  }
  if (cap) {
    size_t c = tl < cap ? tl : cap - 1;
    memcpy(topic, d + 2, c);
    topic[c] = '\0';
  }
  /* Empty is NULL, as everywhere (portal.h). */
  rc = len - 2 - tl ? tr_buf_from(d + 2 + tl, len - 2 - tl, payload) : (*payload = NULL, 0);
  tr_buf_release(v);
  return rc;
}

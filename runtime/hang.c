/*
 * The hang report: when tr_run (or tr_main) has been waiting for actors
 * for hang_report_ns after the root returned, say once, on stderr, which
 * actors are still alive and what they are waiting for.  A forgotten
 * actor otherwise hangs the program silently.
 *
 * How it reads the actors.  The live lists (one per shard, under the shard
 * locks that spawn and exit take anyway) say which actors exist; each
 * listed actor holds its own reference, so the report takes one more and
 * may use the actor after unlocking.  What an actor is doing (its tasks,
 * its queue) belongs to the worker running it and is touched without
 * locks, so the report does not read it: it asks, with a TR_SYS_DESCRIBE
 * message, and the actor's worker writes the answer in its next turn, at a
 * point where none of its tasks is running.  An actor that does not answer
 * within TR_HANG_ANSWER_NS is busy: a behaviour, or a task, that neither
 * returns nor blocks; the report says so.
 *
 * A request and its answer share a slot with two references, the
 * report's and the message's: the message's is dropped by whoever ends
 * the message (the answering worker, or the dead-letter path of an actor
 * that exited first), so a late answer never writes into freed memory.
 *
 * Cost: nothing until the report is due (tr_run's wait only has a
 * deadline), then one message per listed actor.  Tasks keep a label of
 * what they are blocked on (runtime/task/task.h), a pointer store per
 * block.  Deliberately not done: a thread of its own, or reading actors'
 * state without asking them (a data race with their workers).
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tractor/time.h>

#include "runtime/actor/actor.h"
#include "runtime/platform/log.h"
#include "runtime/runtime.h"
#include "runtime/sched/worker.h"
#include "runtime/task/task.h"

/* Actors listed one by one; beyond them the report gives a count. */
#define TR_HANG_LIST_MAX 32
/* How long the report waits for the listed actors' answers.  Generous:
 * the report comes once, and an idle actor's answer may be slow on a
 * loaded machine (250 ms proved too short under ThreadSanitizer with the
 * two cores busy), while only a truly stuck actor makes it wait this long. */
#define TR_HANG_ANSWER_NS (2000 * 1000000LL)

typedef struct hang_slot {
  uint32_t refs;     /* atomic: the report's and the request message's */
  uint32_t answered; /* atomic: release by the answering worker */
  char *text;        /* the answer (malloc'd), read once answered */
} hang_slot_t;

static void slot_release(hang_slot_t *s) {
  /* acq_rel: the other holder's writes (the answer) happen before the
   * free by whoever drops the last reference. */
  if (tr_fsub_acqrel(&s->refs, 1) == 1) {
    free(s->text);
    free(s);
  }
}

static void hang_drop(tr_msg_t *m) {
  slot_release(m->ptr);
  m->ptr = NULL;
}

/* ---- the actor's side ---------------------------------------------------- */

/* Application messages in the mailbox behind the consumer's position.  The
 * consumer owns every linked message until it pops it, so it may walk
 * them; the stub may sit anywhere in the chain and is skipped (it is only
 * a link, with no flags to read). */
static size_t mailbox_depth(tr_mbox_t *q) {
  tr_msg_t *stub = tr__mbox_stub(q);
  size_t n = 0;
  /* Acquire pairs with the producers' release store of each link. */
  for (tr_msg_t *m = q->tail; m; m = tr_load_acquire(&m->next_))
    if (m != stub && !(m->flags_ & TR_MSGF_SYS))
      n++;
  return n;
}

static const char *task_state(const tr_task_t *t) {
  switch (t->state) {
  case TR_TASK_READY:
    return "ready to run";
  case TR_TASK_RUNNING:
    return "running"; /* not seen: answers come between task runs */
  case TR_TASK_BLOCKED:
    return "blocked in ";
  default:
    return "finished";
  }
}

static void describe_tasks(FILE *f, tr_actor_t *a) {
  tr_tasks_t *ts = a->tasks;
  size_t inbox = 0;
  for (tr_msg_t *m = ts->inbox_head; m; m = m->next_)
    inbox++;
  fprintf(f, "%zu message(s) queued%s\n", mailbox_depth(&a->mbox) + inbox,
          ts->stopping ? ", being cancelled" : "");
  unsigned listed = 0;
  for (tr_task_t *t = ts->all; t; t = t->next) {
    if (++listed > TR_HANG_LIST_MAX) {
      fprintf(f, "    ... and more tasks\n");
      break;
    }
    fprintf(f, "    task \"%s\": %s", t->name, task_state(t));
    if (t->state == TR_TASK_BLOCKED)
      fprintf(f, "%s%s", t->blocked_on ? t->blocked_on : "an unlabelled wait",
              tr__task_cancelled(t) ? " (cancelled, still waiting)" : "");
    fputc('\n', f);
  }
  if (ts->zombies)
    fprintf(f,
            "    %" PRIu64 " finished task(s) held by a pending wake-up (an abandoned "
            "tr_to_thread call, say)\n",
            ts->zombies);
}

static void hang_answer(tr_worker_t *w, tr_actor_t *a, tr_msg_t *m) {
  hang_slot_t *s = m->ptr;
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  if (f) {
    if (a->tasks) {
      describe_tasks(f, a);
    } else {
      /* It answered, so its behaviour is not stuck: it waits for mail. */
      fprintf(f, "%zu message(s) queued, idle between messages\n", mailbox_depth(&a->mbox));
    }
    if (fclose(f) != 0) {
      free(text);
      text = NULL;
    }
  }
  s->text = text; /* NULL: out of memory, the report says so */
  /* Release pairs with the report's acquire load of answered. */
  tr_store_release(&s->answered, 1);
  tr__rt_broadcast();
  slot_release(s);
  m->ptr = NULL;
  tr__msg_dispose(w, m);
}

/* ---- the report ------------------------------------------------------------ */

static const char *kind_name(int kind) {
  switch (kind) {
  case TR_AK_BEHAVIOUR:
    return "behaviour";
  case TR_AK_TASK:
    return "task actor";
  case TR_AK_ROOT:
    return "root actor";
  case TR_AK_CHILD:
    return "actor-nursery child";
  case TR_AK_DAEMON:
    return "daemon";
  case TR_AK_RUN_IN_ACTOR:
    return "run_in_actor child";
  default:
    return "actor";
  }
}

/* Sends actor a its request; the slot starts with the report's reference
 * and, once the message exists, the message's. */
static hang_slot_t *ask(tr_actor_t *a) {
  hang_slot_t *s = calloc(1, sizeof(*s));
  if (!s)
    return NULL;
  tr_msg_t *m;
  if (tr__sys_msg(&m, TR_SYS_DESCRIBE, 0, s, 0) != 0) {
    free(s);
    return NULL;
  }
  s->refs = 2;
  /* An actor exiting meanwhile dead-letters the request (hang_drop). */
  (void)tr__actor_push(a, m);
  return s;
}

static int all_answered(hang_slot_t **slots, int n) {
  for (int i = 0; i < n; i++)
    if (slots[i] && !tr_load_acquire(&slots[i]->answered))
      return 0;
  return 1;
}

static void hang_report(int64_t since_ns) {
  tr_actor_t *listed[TR_HANG_LIST_MAX];
  hang_slot_t *slots[TR_HANG_LIST_MAX];
  int n = 0;
  for (int sh = 0; sh <= tr__rt.nworkers; sh++) {
    tr_shard_t *shard = &tr__actors.shards[sh];
    pthread_mutex_lock(&shard->lock);
    /* Each listed actor holds its own reference until it has left the
     * list (actor_finish_exit), so a dup under the lock is safe. */
    for (tr_actor_t *a = shard->head; a && n < TR_HANG_LIST_MAX; a = a->live_next)
      listed[n++] = tr_actor_dup(a);
    pthread_mutex_unlock(&shard->lock);
  }
  for (int i = 0; i < n; i++)
    slots[i] = ask(listed[i]);

  /* The answers come from the actors' workers, which broadcast. */
  int64_t until = tr_now() + TR_HANG_ANSWER_NS;
  struct timespec ts = {.tv_sec = until / 1000000000LL, .tv_nsec = until % 1000000000LL};
  pthread_mutex_lock(&tr__actors.wait_lock);
  while (!all_answered(slots, n) &&
         pthread_cond_timedwait(&tr__actors.wait_cv, &tr__actors.wait_lock, &ts) == 0) {
  }
  pthread_mutex_unlock(&tr__actors.wait_lock);

  char *out = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&out, &len);
  uint64_t live = tr_load_acquire(&tr__actors.live);
  if (f) {
    fprintf(f,
            "the root returned %.1f s ago and %" PRIu64
            " actor(s) are still alive; tr_run waits for every actor to exit "
            "(tr_config_t.hang_report_ns or TR_HANG_REPORT_MS set this report's delay):\n",
            (double)since_ns / 1e9, live);
    for (int i = 0; i < n; i++) {
      tr_actor_t *a = listed[i];
      hang_slot_t *s = slots[i];
      fprintf(f, "  actor \"%s\" (%s, id %#" PRIx64 "): ", tr_actor_name(a),
              kind_name(tr_load_relaxed(&a->kind)), tr_actor_id(a));
      if (!s)
        fputs("could not be asked (out of memory)\n", f);
      else if (tr_load_acquire(&s->answered))
        fputs(s->text ? s->text : "(no memory for its answer)\n", f);
      else if (tr_actor_exited(a))
        fputs("exited while the report was made\n", f);
      else
        fprintf(f,
                "did not answer within %lld ms: busy in a behaviour, or in a task that "
                "neither blocks nor yields\n",
                (long long)(TR_HANG_ANSWER_NS / 1000000));
    }
    if (live > (uint64_t)n)
      fprintf(f, "  ... and %" PRIu64 " more\n", live - (uint64_t)n);
    fprintf(f, "end of the hang report; still waiting");
    /* One log record (the default hook writes it to stderr at once). */
    if (fclose(f) == 0 && out)
      tr__log_text(TR_LOG_WARN, out);
    (void)len;
    free(out);
  } else {
    tr_log(TR_LOG_WARN, "%" PRIu64 " actor(s) still alive after the root returned", live);
  }
  for (int i = 0; i < n; i++) {
    if (slots[i])
      slot_release(slots[i]);
    tr_actor_release(listed[i]);
  }
}

void tr__hang_init(void) {
  static const tr_actor_hang_ops_t ops = {hang_answer, hang_drop, hang_report};
  tr__actor_set_hang_ops(&ops);
}

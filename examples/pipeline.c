/*
 * A small real program on tractor-c: a text pipeline across actors and a
 * child process, the program that `bash tools/demo.sh` builds and runs.
 *
 *   root (this process) ── actor nursery
 *     ├─ producer   in-process daemon: STREAM  pipeline.source.lines(n)
 *     │             makes n lines of text ("Trio, cancel the Portal!")
 *     ├─ normalize  in-process daemon: CONTEXT pipeline.text.normalize
 *     │             two-way stream: a line in, the line lowercased with
 *     │             punctuation dropped out ("trio cancel the portal")
 *     └─ wordcount  daemon in a CHILD PROCESS (TR_SPAWN_PROCESS), over TCP
 *                   on 127.0.0.1: CONTEXT pipeline.stats.count, two-way: a
 *                   line in, its word count, length and FNV-1a hash out; it
 *                   returns its totals when its input ends
 *
 * The root's tasks join the dialogs: one forwards producer -> normalize,
 * one normalize -> wordcount, one collects wordcount's answers, and (on a
 * terminal) one redraws a progress line.  At the end the program checks
 * the answers three ways (its own sums, the child's totals, and a local
 * recomputation of every line) and prints a summary: items, time, rate,
 * the supervision tree with the child's pid, and every process's exit
 * status.  Exit status 0 when all of it holds, 1 otherwise, 2 for a usage
 * error.
 *
 *   example_pipeline [-n ITEMS]
 *
 * Built and run by ctest (test `example_pipeline`, small -n).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <tractor/tractor.h>

#define MS (1000 * 1000LL)
#define DEFAULT_ITEMS 200000
#define LINE_MAX_LEN 512 /* generated lines stay far below it */
#define WINDOW 256       /* stream credit per direction (default 64) */

/* ---- the work: lines, normalisation, counting (plain C) ---------------------------- */

static const char *const vocab[] = {
    "actor",   "nursery", "portal", "context",   "stream",   "cancel", "scope",
    "trio",    "tractor", "the",    "message",   "mailbox",  "fiber",  "worker",
    "reactor", "channel", "a",      "supervise", "deadline", "shield", "result"};
static const char *const punct[] = {"", "", "", ",", ".", "!", ";", " --", "?"};

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/* Line i of the input, the same on every run: 4 to 12 words, some
 * capitalised, some followed by punctuation.  Returns its length (cap
 * is far above the longest line, 12 * 13 bytes). */
static size_t make_line(uint64_t i, char *out, size_t cap) {
  uint64_t seed = i;
  size_t len = 0;
  int words = 4 + (int)(splitmix64(&seed) % 9);
  for (int w = 0; w < words; w++) {
    uint64_t r = splitmix64(&seed);
    const char *word = vocab[r % (sizeof vocab / sizeof vocab[0])];
    const char *p = punct[(r >> 16) % (sizeof punct / sizeof punct[0])];
    size_t wl = strlen(word), pl = strlen(p);
    if (len + 1 + wl + pl > cap)
      break;
    if (w)
      out[len++] = ' ';
    memcpy(out + len, word, wl);
    if ((r >> 32) % 4 == 0 || w == 0)
      out[len] = (char)(out[len] - 'a' + 'A');
    memcpy(out + len + wl, p, pl);
    len += wl + pl;
  }
  return len;
}

/* Lowercases in[0..len) and turns every run of other characters than
 * letters and digits into one space, without a leading or trailing one.
 * out has room for len bytes.  Returns the new length. */
static size_t normalize(const char *in, size_t len, char *out) {
  size_t k = 0;
  int gap = 0;
  for (size_t i = 0; i < len; i++) {
    char c = in[i];
    if (c >= 'A' && c <= 'Z')
      c = (char)(c - 'A' + 'a');
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
      if (gap && k)
        out[k++] = ' ';
      out[k++] = c;
      gap = 0;
    } else {
      gap = 1;
    }
  }
  return k;
}

static uint64_t fnv1a(const char *s, size_t len) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < len; i++)
    h = (h ^ (uint8_t)s[i]) * 0x100000001b3ULL;
  return h;
}

static uint32_t count_words(const char *s, size_t len) {
  uint32_t n = len ? 1 : 0;
  for (size_t i = 0; i < len; i++)
    n += s[i] == ' ';
  return n;
}

/* What the pipeline computes: the count of items, words and bytes, and a
 * digest of the items' hashes in order (so a lost, repeated or reordered
 * item changes it). */
typedef struct totals {
  uint64_t items, words, bytes, digest;
} totals_t;

#define DIGEST_INIT 0xcbf29ce484222325ULL

static void totals_add(totals_t *t, uint32_t words, uint32_t bytes, uint64_t hash) {
  t->items++;
  t->words += words;
  t->bytes += bytes;
  t->digest = (t->digest ^ hash) * 0x100000001b3ULL;
}

static int totals_eq(const totals_t *a, const totals_t *b) {
  return a->items == b->items && a->words == b->words && a->bytes == b->bytes &&
         a->digest == b->digest;
}

/* Values cross actors (and the process boundary) as bytes: little-endian
 * fields, never a C struct's layout. */
static void put64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}
static uint64_t get64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v |= (uint64_t)p[i] << (8 * i);
  return v;
}

/* ---- the actors' exported functions ------------------------------------------------- */

/* producer: streams lines 0 .. n-1 (n: a u64 argument). */
static int source_lines(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)result;
  uint64_t n;
  if (tr_buf_to_u64(args, &n) != 0)
    return tr_fail("TypeError", "pipeline.source.lines takes a u64 count");
  tr_stream_t *s;
  int rc = tr_ctx_open_stream(ctx, &s);
  char line[LINE_MAX_LEN];
  for (uint64_t i = 0; rc == 0 && i < n; i++) {
    tr_buf_t *b;
    if ((rc = tr_buf_from(line, make_line(i, line, sizeof line), &b)) == 0) {
      rc = tr_stream_send(s, b); /* waits for credit: the pipeline sets the pace */
      tr_buf_release(b);
    }
  }
  return rc;
}
TR_EXPORT_STREAM("pipeline.source", "lines", source_lines)

/*
 * The body of both stages: started(first), then for each value received,
 * step() makes the value to send back, until the caller's Stop; then Stop
 * in turn.  An empty value arrives as NULL, which the tr_buf accessors
 * read as 0 bytes.
 */
typedef int (*step_fn)(void *state, const tr_buf_t *in, tr_buf_t **out);

static int serve_stage(struct tr_ctx *ctx, const tr_buf_t *first, step_fn step, void *state) {
  tr_stream_t *s = NULL;
  int rc = tr_ctx_started(ctx, first);
  if (rc == 0)
    rc = tr_ctx_open_stream(ctx, &s);
  while (rc == 0) {
    tr_buf_t *in = NULL, *out = NULL;
    rc = tr_stream_recv(s, &in);
    if (rc == -TR_EEOF)
      return tr_stream_close(s); /* input over: end ours too */
    if (rc == 0 && (rc = step(state, in, &out)) == 0)
      rc = tr_stream_send(s, out);
    tr_buf_release(in);
    tr_buf_release(out);
  }
  return rc;
}

/* normalize: a line in, the normalised line out. */
static int normalize_step(void *state, const tr_buf_t *in, tr_buf_t **out) {
  uint64_t *n = state;
  char buf[LINE_MAX_LEN];
  size_t len = tr_buf_len(in);
  if (len > sizeof buf)
    return tr_fail("ValueError", "a line of %zu bytes (at most %zu)", len, sizeof buf);
  ++*n;
  return tr_buf_from(buf, normalize(tr_buf_data(in), len, buf), out);
}

static int text_normalize(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)args;
  uint64_t n = 0;
  int rc = serve_stage(ctx, NULL, normalize_step, &n);
  return rc ? rc : tr_buf_from_u64(n, result); /* returns how many lines it did */
}
TR_EXPORT_CONTEXT("pipeline.text", "normalize", text_normalize)

/* wordcount: a line in, 16 bytes out (hash u64, words u32, bytes u32). */
static int count_step(void *state, const tr_buf_t *in, tr_buf_t **out) {
  totals_t *t = state;
  const char *s = tr_buf_data(in);
  size_t len = tr_buf_len(in);
  uint32_t words = count_words(s, len);
  uint64_t hash = fnv1a(s, len);
  totals_add(t, words, (uint32_t)len, hash);
  uint8_t ans[16];
  put64(ans, hash);
  put64(ans + 8, (uint64_t)words | (uint64_t)len << 32);
  return tr_buf_from(ans, sizeof ans, out);
}

static int stats_count(struct tr_ctx *ctx, const tr_buf_t *args, tr_buf_t **result) {
  (void)args;
  totals_t t = {.digest = DIGEST_INIT};
  tr_buf_t *pid;
  int rc = tr_buf_from_u64((uint64_t)getpid(), &pid); /* started: where it runs */
  if (rc == 0) {
    rc = serve_stage(ctx, pid, count_step, &t);
    tr_buf_release(pid);
  }
  if (rc)
    return rc;
  uint8_t b[32];
  put64(b, t.items);
  put64(b + 8, t.words);
  put64(b + 16, t.bytes);
  put64(b + 24, t.digest);
  return tr_buf_from(b, sizeof b, result); /* the child's own totals */
}
TR_EXPORT_CONTEXT("pipeline.stats", "count", stats_count)

/* ---- the root ---------------------------------------------------------------------------- */

typedef struct run {
  uint64_t n;   /* items asked for */
  int progress; /* draw a progress line (stderr is a terminal) */
  /* Filled in by the root actor's tasks, read by main after tr_main. */
  totals_t got;   /* summed from wordcount's answers */
  totals_t child; /* wordcount's own totals (its result) */
  uint64_t normalized;
  int64_t t0, t_flow, t_flow_end, t_end;
  int child_pid, child_status, child_said_pid;
  char err[4096]; /* the root's failure, rendered */
} run_t;

static void draw_progress(const run_t *r) {
  double secs = (double)(tr_now() - r->t_flow) / 1e9;
  fprintf(stderr, "\r  %" PRIu64 " / %" PRIu64 " items (%3.0f%%), %.1f s, %.0f items/s   ",
          r->got.items, r->n, r->n ? 100.0 * (double)r->got.items / (double)r->n : 100.0, secs,
          secs > 0 ? (double)r->got.items / secs : 0.0);
  fflush(stderr);
}

/* The progress task: a redraw every 100 ms until it is cancelled. */
static int progress(void *arg) {
  while (tr_sleep(100 * MS) == 0)
    draw_progress(arg);
  return 0;
}

typedef struct pump {
  tr_stream_t *from, *to;
} pump_t;

/* Forwards every value of one stream to another, then ends the second
 * (Stop), so the next stage finishes after the last item. */
static int forward(void *arg) {
  pump_t *p = arg;
  int rc;
  for (;;) {
    tr_buf_t *b = NULL;
    if ((rc = tr_stream_recv(p->from, &b)) != 0)
      break;
    rc = tr_stream_send(p->to, b);
    tr_buf_release(b);
    if (rc)
      break;
  }
  return rc == -TR_EEOF ? tr_stream_close(p->to) : rc;
}

typedef struct collect {
  tr_stream_t *from;
  run_t *r;
} collect_t;

/* Sums wordcount's answers until its Stop. */
static int collect(void *arg) {
  collect_t *c = arg;
  int rc;
  for (;;) {
    tr_buf_t *b = NULL;
    if ((rc = tr_stream_recv(c->from, &b)) != 0)
      break;
    if (tr_buf_len(b) == 16) {
      const uint8_t *d = tr_buf_data(b);
      uint64_t wb = get64(d + 8);
      totals_add(&c->r->got, (uint32_t)wb, (uint32_t)(wb >> 32), get64(d));
    } else {
      rc = tr_fail("ValueError", "wordcount sent %zu bytes, not 16", tr_buf_len(b));
    }
    tr_buf_release(b);
    if (rc)
      break;
  }
  return rc == -TR_EEOF ? 0 : rc;
}

/* Keeps the first failure: rc if it is one, else the next code. */
#define KEEP(rc, expr)                                                                             \
  do {                                                                                             \
    int rc_ = (expr);                                                                              \
    if ((rc) == 0)                                                                                 \
      (rc) = rc_;                                                                                  \
  } while (0)

/* Opens the three dialogs, runs the tasks that join them, and leaves the
 * dialogs (cancelling them first after a failure). */
static int flow(run_t *r, tr_portal_t *src, tr_portal_t *norm, tr_portal_t *wc) {
  tr_ctx_opts_t co = {.window = WINDOW};
  tr_ctx_t *c_norm = NULL, *c_wc = NULL;
  tr_stream_t *s_src = NULL, *s_norm = NULL, *s_wc = NULL;
  tr_buf_t *nbuf = NULL, *pid = NULL;
  uint64_t v = 0;
  int rc = tr_portal_open_context(wc, "pipeline.stats.count", NULL, &co, &c_wc, &pid);
  if (rc == 0 && (rc = tr_buf_to_u64(pid, &v)) == 0)
    r->child_said_pid = (int)v;
  if (rc == 0)
    rc = tr_ctx_open_stream(c_wc, &s_wc);
  if (rc == 0)
    rc = tr_portal_open_context(norm, "pipeline.text.normalize", NULL, &co, &c_norm, NULL);
  if (rc == 0)
    rc = tr_ctx_open_stream(c_norm, &s_norm);
  if (rc == 0)
    rc = tr_buf_from_u64(r->n, &nbuf);
  r->t_flow = tr_now();
  if (rc == 0)
    rc = tr_portal_open_stream_from(src, "pipeline.source.lines", nbuf, &co, &s_src);

  if (rc == 0) {
    tr_nursery_t *pn = NULL, *n = NULL;
    pump_t p1 = {s_src, s_norm}, p2 = {s_norm, s_wc};
    collect_t c = {s_wc, r};
    if (r->progress)
      rc = tr_nursery_open(&pn);
    if (pn)
      (void)tr_nursery_spawn(pn, progress, r, &(tr_task_opts_t){.name = "progress"}); /* optional */
    if (rc == 0 && (rc = tr_nursery_open(&n)) == 0) {
      int sp = tr_nursery_spawn(n, forward, &p1, &(tr_task_opts_t){.name = "producer->normalize"});
      if (sp == 0)
        sp = tr_nursery_spawn(n, forward, &p2, &(tr_task_opts_t){.name = "normalize->wordcount"});
      if (sp == 0)
        sp = tr_nursery_spawn(n, collect, &c, &(tr_task_opts_t){.name = "collect"});
      tr_error_t *e = sp ? tr_error_take() : NULL;
      if (sp)
        tr_nursery_cancel(n);   /* a pipeline with a missing link would wait forever */
      rc = tr_nursery_close(n); /* the first failure cancels the other tasks */
      if (e)
        rc = tr_error_raise(e);
    }
    if (pn) {
      tr_error_t *e = rc ? tr_error_take() : NULL;
      tr_nursery_cancel(pn);
      tr_nursery_close(pn);
      if (e)
        tr_error_raise(e);
      fputs("\r\033[K", stderr); /* clear the line for the summary */
    }
  }
  r->t_flow_end = tr_now();

  /* Leave the dialogs.  After a failure, cancel the stages first, so that
   * no close waits for a stage still waiting for input. */
  tr_error_t *err = rc ? tr_error_take() : NULL;
  if (rc && c_norm)
    tr_ctx_cancel(c_norm);
  if (rc && c_wc)
    tr_ctx_cancel(c_wc);
  if (s_src)
    KEEP(rc, tr_stream_close(s_src));
  tr_buf_t *res = NULL;
  if (c_norm) {
    KEEP(rc, tr_ctx_close(c_norm, &res));
    if (tr_buf_to_u64(res, &v) == 0)
      r->normalized = v;
    tr_buf_release(res);
    res = NULL;
  }
  if (c_wc) {
    KEEP(rc, tr_ctx_close(c_wc, &res));
    if (res && tr_buf_len(res) == 32) {
      const uint8_t *d = tr_buf_data(res);
      r->child = (totals_t){get64(d), get64(d + 8), get64(d + 16), get64(d + 24)};
    }
    tr_buf_release(res);
  }
  tr_buf_release(nbuf);
  tr_buf_release(pid);
  return err ? tr_error_raise(err) : rc;
}

static int root(void *arg) {
  run_t *r = arg;
  static const char *const src_ns[] = {"pipeline.source"};
  static const char *const norm_ns[] = {"pipeline.text"};
  static const char *const wc_ns[] = {"pipeline.stats"};
  tr_actor_opts_t o_src = {.enable = src_ns, .n_enable = 1, .spawn = TR_SPAWN_THREAD};
  tr_actor_opts_t o_norm = {.enable = norm_ns, .n_enable = 1, .spawn = TR_SPAWN_THREAD};
  tr_actor_opts_t o_wc = {.enable = wc_ns, .n_enable = 1, .spawn = TR_SPAWN_PROCESS};
  tr_portal_t *src = NULL, *norm = NULL, *wc = NULL;
  tr_actor_nursery_t *an;

  r->t0 = tr_now();
  int rc = tr_actor_nursery_open(&an, NULL);
  if (rc) {
    tr_error_format(tr_error_last(), r->err, sizeof r->err);
    return rc;
  }
  rc = tr_start_actor_opts(an, "producer", &o_src, &src);
  if (rc == 0)
    rc = tr_start_actor_opts(an, "normalize", &o_norm, &norm);
  if (rc == 0)
    rc = tr_start_actor_opts(an, "wordcount", &o_wc, &wc);
  if (rc == 0)
    rc = flow(r, src, norm, wc);
  tr_error_t *err = rc ? tr_error_take() : NULL;
  if (rc)
    tr_actor_nursery_cancel(an);
  /* Cancels the daemons (they serve until then), waits for them, and
   * reaps the child process. */
  KEEP(rc, tr_actor_nursery_close(an));
  if (err)
    rc = tr_error_raise(err);
  if (wc)
    tr_portal_process(wc, &r->child_pid, &r->child_status);
  tr_portal_release(src);
  tr_portal_release(norm);
  tr_portal_release(wc);
  r->t_end = tr_now();
  if (rc)
    tr_error_format(tr_error_last(), r->err, sizeof r->err);
  return rc;
}

/* ---- main: options, the run, the summary -------------------------------------------- */

static void describe_status(int status, char *buf, size_t len) {
  if (status == -1)
    snprintf(buf, len, "not reaped");
  else if (WIFEXITED(status))
    snprintf(buf, len, "exited %d", WEXITSTATUS(status));
  else if (WIFSIGNALED(status))
    snprintf(buf, len, "killed by signal %d", WTERMSIG(status));
  else
    snprintf(buf, len, "wait status %#x", (unsigned)status);
}

static void usage(FILE *f, const char *prog) {
  fprintf(f,
          "usage: %s [-n ITEMS]\n"
          "  Runs ITEMS lines of text (default %d) through a pipeline of actors:\n"
          "  producer and normalize in this process, wordcount in a child process.\n",
          prog, DEFAULT_ITEMS);
}

int main(int argc, char **argv) {
  /* A child actor process runs this executable too; tr_main serves it
   * (and never calls root).  Hand it over before reading options, which
   * are the parent's. */
  if (tr_spawned_child())
    return tr_main(argc, argv, NULL, NULL, NULL) == 0 ? 0 : 1;

  static run_t r; /* 4 KiB of error text: not on the stack */
  r.n = DEFAULT_ITEMS;
  r.child_pid = -1;
  r.child_status = -1;
  r.got.digest = r.child.digest = DIGEST_INIT;
  int opt;
  while ((opt = getopt(argc, argv, "n:h")) != -1) {
    char *end;
    switch (opt) {
    case 'n':
      errno = 0;
      r.n = strtoull(optarg, &end, 10);
      if (errno || *end || optarg[0] == '-' || end == optarg) {
        fprintf(stderr, "%s: -n wants a count of items, not '%s'\n", argv[0], optarg);
        return 2;
      }
      break;
    case 'h':
      usage(stdout, argv[0]);
      return 0;
    default:
      usage(stderr, argv[0]);
      return 2;
    }
  }
  if (optind < argc) {
    usage(stderr, argv[0]);
    return 2;
  }
  r.progress = isatty(STDERR_FILENO);

  int rc = tr_main(argc, argv, root, &r, NULL);

  /* Every line once more, here, to check the pipeline's answers. */
  totals_t local = {.digest = DIGEST_INIT};
  char line[LINE_MAX_LEN], norm[LINE_MAX_LEN];
  for (uint64_t i = 0; rc == 0 && i < r.n; i++) {
    size_t len = normalize(line, make_line(i, line, sizeof line), norm);
    totals_add(&local, count_words(norm, len), (uint32_t)len, fnv1a(norm, len));
  }
  int ok_sums =
      rc == 0 && totals_eq(&r.got, &local) && totals_eq(&r.child, &local) && r.normalized == r.n;
  int ok_child = r.child_pid > 0 && r.child_said_pid == r.child_pid && WIFEXITED(r.child_status) &&
                 WEXITSTATUS(r.child_status) == 0;

  double flow = (double)(r.t_flow_end - r.t_flow) / 1e9;
  char st[64];
  describe_status(r.child_status, st, sizeof st);
  printf("pipeline: %" PRIu64 " items in %.2f s, %.0f items/s (start-up %.0f ms, "
         "shutdown %.0f ms)\n",
         r.got.items, flow, flow > 0 ? (double)r.got.items / flow : 0.0,
         (double)(r.t_flow - r.t0) / 1e6, (double)(r.t_end - r.t_flow_end) / 1e6);
  printf("  words %" PRIu64 ", bytes %" PRIu64 ", digest %016" PRIx64 ": %s\n", r.got.words,
         r.got.bytes, r.got.digest,
         ok_sums ? "the same in the root, in the child and recomputed here"
         : rc    ? "not checked (the run failed)"
                 : "MISMATCH (root, child and recomputation disagree)");
  int ok = rc == 0 && ok_sums && ok_child;
  printf("supervision tree:\n");
  printf("  root (pid %d, this process): actor nursery of\n", (int)getpid());
  printf("  |- producer   in-process               daemon, stream  pipeline.source.lines\n");
  printf("  |- normalize  in-process               daemon, context pipeline.text.normalize\n");
  printf("  `- wordcount  child process pid %-7d daemon, context pipeline.stats.count\n",
         r.child_pid);
  printf("exit status:\n");
  printf("  wordcount  pid %-7d %s (reaped when the actor nursery closed)\n", r.child_pid, st);
  printf("  root       pid %-7d tr_main returned %d (%s), exit %d\n", (int)getpid(), rc,
         rc ? tr_errname(rc) : "ok", ok ? 0 : 1);
  if (rc)
    fprintf(stderr, "pipeline failed:\n%s\n", r.err);
  else if (!ok_child)
    fprintf(stderr, "pipeline: wordcount said it ran in pid %d; its process is pid %d, %s\n",
            r.child_said_pid, r.child_pid, st);
  printf("result: %s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}

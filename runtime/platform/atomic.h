/*
 * Atomics for the runtime's own lock-free code.
 *
 * These are thin names over the compiler's __atomic builtins with the
 * memory order spelled out at each use.  We do not build our own queues on
 * ck_pr: Concurrency Kit 0.7 implements ck_pr loads and stores either as
 * inline assembly (invisible to ThreadSanitizer) or, with
 * CK_USE_CC_BUILTINS, as volatile accesses plus full fences, which TSan
 * reports as races because it does not model fences.  __atomic with
 * acquire/release compiles to the same plain moves on x86-64 and is
 * understood by TSan, so the TSan build checks the real protocol.
 *
 * Where we still use a Concurrency Kit structure (ck_ring run queues),
 * TR_TSAN_RELEASE/ACQUIRE tell TSan about the happens-before edge that the
 * structure provides (see sched/runq.h).
 */
#ifndef TR_PLATFORM_ATOMIC_H
#define TR_PLATFORM_ATOMIC_H

#include <stdint.h>

#define tr_load_relaxed(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define tr_load_acquire(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define tr_load_seqcst(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define tr_store_relaxed(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define tr_store_release(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define tr_store_seqcst(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
#define tr_xchg_acqrel(p, v) __atomic_exchange_n((p), (v), __ATOMIC_ACQ_REL)
#define tr_xchg_seqcst(p, v) __atomic_exchange_n((p), (v), __ATOMIC_SEQ_CST)
#define tr_faa_relaxed(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)
#define tr_faa_acqrel(p, v) __atomic_fetch_add((p), (v), __ATOMIC_ACQ_REL)
#define tr_faa_seqcst(p, v) __atomic_fetch_add((p), (v), __ATOMIC_SEQ_CST)
#define tr_fas_seqcst(p, v) __atomic_fetch_sub((p), (v), __ATOMIC_SEQ_CST)
#define tr_fsub_release(p, v) __atomic_fetch_sub((p), (v), __ATOMIC_RELEASE)
#define tr_fsub_acqrel(p, v) __atomic_fetch_sub((p), (v), __ATOMIC_ACQ_REL)
#define tr_for_relaxed(p, v) __atomic_fetch_or((p), (v), __ATOMIC_RELAXED)
#define tr_for_seqcst(p, v) __atomic_fetch_or((p), (v), __ATOMIC_SEQ_CST)
#define tr_fand_seqcst(p, v) __atomic_fetch_and((p), (v), __ATOMIC_SEQ_CST)
#define tr_cas_acqrel(p, expp, v)                                                                  \
  __atomic_compare_exchange_n((p), (expp), (v), 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)
#define tr_cas_seqcst(p, expp, v)                                                                  \
  __atomic_compare_exchange_n((p), (expp), (v), 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)
#if defined(TR_TSAN)
/* GCC refuses standalone fences under TSan (it cannot model them).  A
 * seq_cst read-modify-write is a full barrier on every target we support;
 * the data that matters is published through checked atomics anyway. */
extern uint32_t tr__fence_word;
#define tr_fence_seqcst() ((void)__atomic_fetch_add(&tr__fence_word, 0, __ATOMIC_SEQ_CST))
#else
#define tr_fence_seqcst() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#endif

/* Per-thread counters: written by one thread, read (approximately) by
 * others.  Relaxed atomics keep that legal without costing a locked op. */
#define tr_counter_add(p, v) tr_store_relaxed((p), tr_load_relaxed(p) + (v))

static inline void tr_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield" ::: "memory");
#endif
}

#if defined(TR_TSAN)
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define TR_TSAN_ACQUIRE(p) __tsan_acquire((void *)(p))
#define TR_TSAN_RELEASE(p) __tsan_release((void *)(p))
#else
#define TR_TSAN_ACQUIRE(p) ((void)(p))
#define TR_TSAN_RELEASE(p) ((void)(p))
#endif

#define TR_LIKELY(x) __builtin_expect(!!(x), 1)
#define TR_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define TR_CACHELINE 64

#endif

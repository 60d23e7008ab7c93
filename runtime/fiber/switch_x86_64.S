/*
 * Context switch for x86-64 (System V ABI).  See fiber.h and fiber.c.
 *
 *   void tr__fiber_swap(void **save_sp, void *load_sp);
 *
 * Saves what the ABI says a callee must preserve (rbx, rbp, r12-r15, the
 * MXCSR control bits and the x87 control word) by pushing it on the
 * current stack, stores rsp in *save_sp, switches to load_sp and pops the
 * same set from there.  Everything else is caller-saved, so the compiler
 * has already spilled whatever it needs: the switch costs a call, 8 stack
 * stores, 8 loads and an indirect jump.
 *
 * Frame at the saved rsp (lowest address first), also built by hand for a
 * fresh fiber in fiber.c (plant_first_frame):
 *   +0 MXCSR (4 bytes)  +4 x87 CW (2 bytes)  +8 r15  +16 r14  +24 r13
 *   +32 r12  +40 rbx  +48 rbp  +56 return address
 *
 * CET: the file carries no GNU property note, so a -fcf-protection build
 * links as neither IBT nor shadow-stack compatible, which is what this code
 * needs: the final `jmp *%rcx` lands on return addresses (no endbr64), and
 * switching stacks without switching shadow stacks would break SHSTK.
 */
#if defined(__x86_64__) && !(defined(TR_FIBER_UCONTEXT) && TR_FIBER_UCONTEXT)

#if defined(__CET__)
#define TR_ENDBR endbr64
#else
#define TR_ENDBR
#endif

	.text
	.globl	tr__fiber_swap
	.hidden	tr__fiber_swap
	.type	tr__fiber_swap, @function
	.p2align 4
tr__fiber_swap:
	.cfi_startproc
	TR_ENDBR
	pushq	%rbp
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %rbp, 0
	pushq	%rbx
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %rbx, 0
	pushq	%r12
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %r12, 0
	pushq	%r13
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %r13, 0
	pushq	%r14
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %r14, 0
	pushq	%r15
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %r15, 0
	subq	$8, %rsp
	.cfi_adjust_cfa_offset 8
	stmxcsr	(%rsp)
	fnstcw	4(%rsp)

	movq	%rsp, (%rdi)
	movq	%rsi, %rsp
	/* From here on we are in the other context; its frame has the same
	 * shape, so the CFI above still describes it. */

	ldmxcsr	(%rsp)
	fldcw	4(%rsp)
	addq	$8, %rsp
	.cfi_adjust_cfa_offset -8
	popq	%r15
	.cfi_adjust_cfa_offset -8
	.cfi_restore %r15
	popq	%r14
	.cfi_adjust_cfa_offset -8
	.cfi_restore %r14
	popq	%r13
	.cfi_adjust_cfa_offset -8
	.cfi_restore %r13
	popq	%r12
	.cfi_adjust_cfa_offset -8
	.cfi_restore %r12
	popq	%rbx
	.cfi_adjust_cfa_offset -8
	.cfi_restore %rbx
	popq	%rbp
	.cfi_adjust_cfa_offset -8
	.cfi_restore %rbp
	/* pop + jmp rather than ret: the return-stack predictor pairs this
	 * ret with the call that entered the *other* context, so a ret
	 * mispredicts on every switch; the indirect-branch predictor learns
	 * the alternation.  Measured on the dev VM (AMD EPYC): round trip
	 * ~25 ns with ret, ~14 ns with pop/jmp. */
	popq	%rcx
	.cfi_adjust_cfa_offset -8
	.cfi_register %rip, %rcx
	jmp	*%rcx
	.cfi_endproc
	.size	tr__fiber_swap, .-tr__fiber_swap

/*
 * First code a fresh fiber runs: the first swap into it "returns" here
 * with rsp 16-byte aligned and the fiber pointer in r12.  The return
 * address slot is marked undefined so debuggers and unwinders stop here
 * instead of walking into the (unrelated) switching thread's stack.
 */
	.globl	tr__fiber_entry
	.hidden	tr__fiber_entry
	.type	tr__fiber_entry, @function
	.p2align 4
tr__fiber_entry:
	.cfi_startproc
	.cfi_undefined %rip
	TR_ENDBR
	movq	%r12, %rdi
	call	tr__fiber_start
	ud2	/* tr__fiber_start never returns */
	.cfi_endproc
	.size	tr__fiber_entry, .-tr__fiber_entry

#endif

	.section .note.GNU-stack,"",%progbits

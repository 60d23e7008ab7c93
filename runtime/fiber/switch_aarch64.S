/*
 * Context switch for aarch64 (AAPCS64).  See fiber.h and fiber.c.
 *
 *   void tr__fiber_swap(void **save_sp, void *load_sp);
 *
 * Saves what the ABI says a callee must preserve (x19-x28, the frame
 * pointer x29, the link register x30 and the low halves d8-d15) plus FPCR
 * (rounding mode, flush-to-zero) in a 176-byte frame on the current stack,
 * stores sp in *save_sp, switches to load_sp and restores the same set.
 * FPCR is only written when it differs, because an FPCR write can be
 * serialising on some cores and fibers nearly always share one mode.
 *
 * Frame at the saved sp (byte offsets), also built by hand for a fresh
 * fiber in fiber.c (plant_first_frame):
 *   0 x19 x20  16 x21 x22  32 x23 x24  48 x25 x26  64 x27 x28
 *   80 x29 x30  96 d8 d9  112 d10 d11  128 d12 d13  144 d14 d15
 *   160 FPCR  168 pad
 *
 * BTI/PAC: the return addresses are stored unsigned and the file carries
 * no GNU property note, so a -mbranch-protection build links as not
 * BTI-compatible rather than faulting.
 */
#if defined(__aarch64__) && !(defined(TR_FIBER_UCONTEXT) && TR_FIBER_UCONTEXT)

#if defined(__ARM_FEATURE_BTI_DEFAULT)
#define TR_BTI_C hint #34
#else
#define TR_BTI_C
#endif

	.text
	.globl	tr__fiber_swap
	.hidden	tr__fiber_swap
	.type	tr__fiber_swap, %function
	.p2align 4
tr__fiber_swap:
	.cfi_startproc
	TR_BTI_C
	sub	sp, sp, #176
	.cfi_def_cfa_offset 176
	stp	x19, x20, [sp, #0]
	stp	x21, x22, [sp, #16]
	stp	x23, x24, [sp, #32]
	stp	x25, x26, [sp, #48]
	stp	x27, x28, [sp, #64]
	stp	x29, x30, [sp, #80]
	.cfi_offset x29, -96
	.cfi_offset x30, -88
	stp	d8, d9, [sp, #96]
	stp	d10, d11, [sp, #112]
	stp	d12, d13, [sp, #128]
	stp	d14, d15, [sp, #144]
	mrs	x11, fpcr
	str	x11, [sp, #160]

	mov	x9, sp
	str	x9, [x0]
	mov	sp, x1
	/* From here on we are in the other context; its frame has the same
	 * shape, so the CFI above still describes it. */

	ldr	x10, [sp, #160]
	cmp	x10, x11
	b.eq	1f
	msr	fpcr, x10
1:
	ldp	x19, x20, [sp, #0]
	ldp	x21, x22, [sp, #16]
	ldp	x23, x24, [sp, #32]
	ldp	x25, x26, [sp, #48]
	ldp	x27, x28, [sp, #64]
	ldp	x29, x30, [sp, #80]
	ldp	d8, d9, [sp, #96]
	ldp	d10, d11, [sp, #112]
	ldp	d12, d13, [sp, #128]
	ldp	d14, d15, [sp, #144]
	add	sp, sp, #176
	.cfi_def_cfa_offset 0
	.cfi_restore x29
	.cfi_restore x30
	ret
	.cfi_endproc
	.size	tr__fiber_swap, .-tr__fiber_swap

/*
 * First code a fresh fiber runs: the first swap into it "returns" here
 * (x30) with sp at the top of the stack and the fiber pointer in x19.
 * The return address is marked undefined so unwinders stop here.
 */
	.globl	tr__fiber_entry
	.hidden	tr__fiber_entry
	.type	tr__fiber_entry, %function
	.p2align 4
tr__fiber_entry:
	.cfi_startproc
	.cfi_undefined x30
	TR_BTI_C
	mov	x0, x19
	bl	tr__fiber_start
	brk	#0	/* tr__fiber_start never returns */
	.cfi_endproc
	.size	tr__fiber_entry, .-tr__fiber_entry

#endif

	.section .note.GNU-stack,"",%progbits

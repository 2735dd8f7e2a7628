#include "textflag.h"

// func pollKick(fds *rawfile.PollEvent, nfds int, word *uint32) (n int, errno unix.Errno)
TEXT ·pollKick(SB),NOSPLIT|NOFRAME,$0-40
	CALL	·callEntersyscallblock(SB)
	MOVQ	fds+0(FP), DI
	MOVQ	nfds+8(FP), SI
	MOVQ	$0, DX         // no timeout
	MOVQ	$0, R10        // no sigmask
	MOVQ	$271, AX       // SYS_ppoll
	SYSCALL
	CMPQ	AX, $0xfffffffffffff002
	JLS	ok
	MOVQ	$-1, n+24(FP)
	NEGQ	AX
	MOVQ	AX, errno+32(FP)
	CALL	·callExitsyscall(SB)
	RET
ok:
	MOVQ	AX, n+24(FP)
	MOVQ	$0, errno+32(FP)
	// fds[0].revents (struct pollfd: int fd; short events, revents)
	MOVQ	fds+0(FP), DI
	MOVW	6(DI), BX
	TESTW	BX, BX
	JZ	done
	MOVQ	word+16(FP), DI
	MOVL	$1, BX
	LOCK
	XADDL	BX, (DI)
	MOVQ	$1, SI         // FUTEX_WAKE (shared: not FUTEX_PRIVATE_FLAG)
	MOVQ	$0x7fffffff, DX // all waiters
	MOVQ	$202, AX       // SYS_futex
	SYSCALL
done:
	CALL	·callExitsyscall(SB)
	RET

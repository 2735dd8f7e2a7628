/* SPDX-License-Identifier: Apache-2.0 */
/*
 * signals.c - the program's signal handlers (signals.h): the interposers
 * sigaction, __sigaction, signal, bsd_signal, sysv_signal, __sysv_signal,
 * sigset and siginterrupt (glibc's signal() family calls sigaction inside
 * libc, past an interposer, so each is redone here the way glibc does it),
 * the trampolines installed in front of the program's handlers, and the
 * restart verdict after an interrupted wait.  It calls only the base (and
 * reads the fd table's pid, to tell a vfork child).
 *
 * For each signal the table holds the program's handler and flags; the
 * kernel holds a trampoline with exactly the program's flags and mask
 * (SA_SIGINFO decides which of the two trampolines), so everything but the
 * handler's address is the kernel's own.  sigaction's old action reports
 * the program's handler whenever the kernel holds a trampoline, and the
 * kernel's action otherwise (after SA_RESETHAND the kernel holds SIG_DFL,
 * with the flags, as Linux reports).  Synchronous signals (SIGSEGV, SIGBUS,
 * SIGFPE, SIGILL, SIGTRAP, SIGSYS) are never wrapped: they do not interrupt
 * a wait, and their handlers (crash reporters, the sanitizers, runtimes
 * that read the faulting context) see no extra frame.
 *
 * Not serialised: two threads changing the same signal's action at the
 * same moment can leave the table and the kernel disagreeing about which
 * won (a program doing that cannot tell which won under Linux either); a
 * signal delivered while its action changes may run the new handler.
 */
#include "signals.h"

#include <signal.h>

#include "fdtab.h"

__thread volatile unsigned g_sig_intr __attribute__((tls_model("initial-exec")));
__thread volatile unsigned g_sig_rest __attribute__((tls_model("initial-exec")));
__thread struct sig_mark g_sig_call __attribute__((tls_model("initial-exec")));

/* The program's handler (a sa_handler or sa_sigaction) and its flags. */
static struct {
	_Atomic(void *) fn;
	_Atomic int flags;
} acts[NSIG];

/*
 * The signals whose trampoline the kernel holds with SA_ONSTACK that we
 * added: sigaction's old action leaves it out.  We add it because a
 * process-directed signal may land on a thread of the shim's Go runtime
 * (runtime.c), which runs on goroutine stacks of a few KiB: without
 * SA_ONSTACK the kernel's signal frame and the handler go on that stack,
 * past its end, into the runtime's stack pool (a program blocking SIGCHLD
 * in its own thread and forking crashed in Go's stackpoolalloc).  With it
 * they go on Go's signal stack; threads without an alternate stack, the
 * program's usually, run the handler where they did.
 */
static _Atomic unsigned char onstack_ours[NSIG];

/* siginterrupt()'s set: signal() installs these without SA_RESTART. */
static sigset_t intr_set;

static void note(int sig)
{
	if (atomic_load_explicit(&acts[sig].flags, memory_order_relaxed) & SA_RESTART)
		g_sig_rest++;
	else
		g_sig_intr++;
}

/*
 * The table said SIG_DFL or SIG_IGN: the program changed the action while
 * this signal was being delivered.  Ignore it, or take the default action
 * (put SIG_DFL in the kernel and send the signal again; it is delivered
 * once this handler returns).
 */
static void no_handler(int sig, void *fn)
{
	struct sigaction dfl = {.sa_handler = SIG_DFL};

	if (fn != (void *)SIG_DFL)
		return;
	REAL(sigaction);
	R.sigaction(sig, &dfl, NULL);
	syscall(SYS_tgkill, getpid(), (pid_t)syscall(SYS_gettid), sig);
}

/*
 * The kernel gave a signal to a thread of the shim's own runtime (Go keeps
 * SIGCHLD, SIGURG and SIGPROF unblocked on its threads, runtime.c): one
 * sent to that thread alone is the runtime's (Go's preemption SIGURG) and
 * is none of the program's business; one sent to the process is the
 * program's, and goes on to its main thread, pending there until that
 * thread unblocks it (nginx's master takes SIGCHLD in sigsuspend), as
 * Linux would keep it for a program whose every thread blocks it.  Returns
 * 1 if the handler is not to run here.
 */
static int not_here(int sig, const siginfo_t *si)
{
	int e = errno, r;
	pid_t pid;

	if (!g_shim_thread)
		return 0;
	if (si ? si->si_code == SI_TKILL : sig == SIGURG)
		return 1;
	pid = getpid();
	if (si) {
		siginfo_t c = *si;

		/* Only the main thread may queue a kernel's or kill()'s si_code
		 * to its process: the sender and status stay, the code says
		 * queued. */
		if (c.si_code >= 0)
			c.si_code = SI_QUEUE;
		r = syscall(SYS_rt_tgsigqueueinfo, pid, pid, sig, &c) == 0 ||
		    syscall(SYS_tgkill, pid, pid, sig) == 0;
	} else {
		r = syscall(SYS_tgkill, pid, pid, sig) == 0;
	}
	errno = e;
	return r;
}

static void tramp_plain(int sig)
{
	void *fn;

	if (sig <= 0 || sig >= NSIG || not_here(sig, NULL))
		return;
	note(sig);
	fn = atomic_load_explicit(&acts[sig].fn, memory_order_acquire);
	if (fn == (void *)SIG_DFL || fn == (void *)SIG_IGN) {
		no_handler(sig, fn);
		return;
	}
	((void (*)(int))fn)(sig);
}

static void tramp_info(int sig, siginfo_t *si, void *uc)
{
	void *fn;

	if (sig <= 0 || sig >= NSIG || not_here(sig, si))
		return;
	note(sig);
	fn = atomic_load_explicit(&acts[sig].fn, memory_order_acquire);
	if (fn == (void *)SIG_DFL || fn == (void *)SIG_IGN) {
		no_handler(sig, fn);
		return;
	}
	((void (*)(int, siginfo_t *, void *))fn)(sig, si, uc);
}

static int synchronous(int sig)
{
	return sig == SIGSEGV || sig == SIGBUS || sig == SIGFPE || sig == SIGILL || sig == SIGTRAP || sig == SIGSYS;
}

/*
 * A vfork child shares our memory but has its own signal actions: what it
 * installs goes to the kernel as it is, never into the parent's table.
 * (g_mypid is 0 until the constructor ran: not a child then.)
 */
static int vfork_child(void)
{
	return g_mypid && in_vfork_child();
}

static void *handler_of(const struct sigaction *a)
{
	return (a->sa_flags & SA_SIGINFO) ? (void *)a->sa_sigaction : (void *)a->sa_handler;
}

static int is_tramp(const struct sigaction *a)
{
	void *h = handler_of(a);

	return h == (void *)tramp_plain || h == (void *)tramp_info;
}

EXPORT int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
	struct sigaction mine;
	void *prev_fn = NULL;
	int prev_flags = 0, wrap, r, added;

	REAL(sigaction);
	if (sig <= 0 || sig >= NSIG)
		return R.sigaction(sig, act, old);
	added = atomic_load(&onstack_ours[sig]);
	prev_fn = atomic_load(&acts[sig].fn);
	prev_flags = atomic_load(&acts[sig].flags);
	wrap = act && !synchronous(sig) && handler_of(act) != (void *)SIG_DFL && handler_of(act) != (void *)SIG_IGN &&
	       !is_tramp(act) && !vfork_child();
	if (wrap) {
		mine = *act;
		if (act->sa_flags & SA_SIGINFO)
			mine.sa_sigaction = tramp_info;
		else
			mine.sa_handler = tramp_plain;
		mine.sa_flags |= SA_ONSTACK; /* see onstack_ours */
		/* the table first: a signal that finds the trampoline finds this */
		atomic_store(&acts[sig].flags, act->sa_flags);
		atomic_store(&acts[sig].fn, handler_of(act));
	}
	r = R.sigaction(sig, wrap ? &mine : act, old);
	if (r < 0) {
		if (wrap) {
			atomic_store(&acts[sig].flags, prev_flags);
			atomic_store(&acts[sig].fn, prev_fn);
		}
		return r;
	}
	if (act && !vfork_child())
		atomic_store(&onstack_ours[sig], wrap && !(act->sa_flags & SA_ONSTACK));
	if (old && added)
		old->sa_flags &= ~SA_ONSTACK;
	if (old && is_tramp(old)) {
		if (old->sa_flags & SA_SIGINFO)
			old->sa_sigaction = (void (*)(int, siginfo_t *, void *))prev_fn;
		else
			old->sa_handler = (void (*)(int))prev_fn;
	}
	return r;
}

EXPORT int __sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
	return sigaction(sig, act, old);
}

/* glibc's __bsd_signal: BSD semantics, SA_RESTART unless siginterrupt(). */
EXPORT sighandler_t signal(int sig, sighandler_t h)
{
	struct sigaction act = {.sa_handler = h}, old;

	if (h == SIG_ERR || sig <= 0 || sig >= NSIG) {
		errno = EINVAL;
		return SIG_ERR;
	}
	sigemptyset(&act.sa_mask);
	sigaddset(&act.sa_mask, sig);
	act.sa_flags = sigismember(&intr_set, sig) ? 0 : SA_RESTART;
	if (sigaction(sig, &act, &old) < 0)
		return SIG_ERR;
	return old.sa_handler;
}

EXPORT sighandler_t bsd_signal(int sig, sighandler_t h)
{
	return signal(sig, h);
}

#ifndef SA_INTERRUPT
#define SA_INTERRUPT 0x20000000
#endif

/* glibc's __sysv_signal: one-shot, not deferred, not restarted. */
EXPORT sighandler_t sysv_signal(int sig, sighandler_t h)
{
	struct sigaction act = {.sa_handler = h}, old;

	if (h == SIG_ERR || sig <= 0 || sig >= NSIG) {
		errno = EINVAL;
		return SIG_ERR;
	}
	sigemptyset(&act.sa_mask);
	act.sa_flags = (SA_RESETHAND | SA_NODEFER | SA_INTERRUPT) & ~SA_RESTART;
	if (sigaction(sig, &act, &old) < 0)
		return SIG_ERR;
	return old.sa_handler;
}

EXPORT sighandler_t __sysv_signal(int sig, sighandler_t h)
{
	return sysv_signal(sig, h);
}

/* glibc's sigset (System V): flags 0, and SIG_HOLD blocks the signal. */
EXPORT sighandler_t sigset(int sig, sighandler_t disp)
{
	struct sigaction act = {.sa_handler = disp}, old;
	sigset_t set, oset;

	sigemptyset(&set);
	if (sigaddset(&set, sig) < 0)
		return SIG_ERR;
	if (disp == SIG_HOLD) {
		if (sigprocmask(SIG_BLOCK, &set, &oset) < 0)
			return SIG_ERR;
		if (sigismember(&oset, sig))
			return SIG_HOLD;
		if (sigaction(sig, NULL, &old) < 0)
			return SIG_ERR;
		return old.sa_handler;
	}
	sigemptyset(&act.sa_mask);
	act.sa_flags = 0;
	if (sigaction(sig, &act, &old) < 0)
		return SIG_ERR;
	if (sigprocmask(SIG_UNBLOCK, &set, &oset) < 0)
		return SIG_ERR;
	return sigismember(&oset, sig) ? SIG_HOLD : old.sa_handler;
}

EXPORT int siginterrupt(int sig, int interrupt)
{
	struct sigaction act;

	if (sigaction(sig, NULL, &act) < 0)
		return -1;
	if (interrupt) {
		sigaddset(&intr_set, sig);
		act.sa_flags &= ~SA_RESTART;
	} else {
		sigdelset(&intr_set, sig);
		act.sa_flags |= SA_RESTART;
	}
	return sigaction(sig, &act, NULL);
}

/*
 * A handler we did not install ran (raw rt_sigaction, or a synchronous
 * signal): we cannot tell which, so restart only if every installed
 * handler has SA_RESTART; otherwise EINTR, as for a handler without it.
 */
static int all_restart(void)
{
	struct sigaction sa;
	int sig;

	for (sig = 1; sig < NSIG; sig++) {
		if (sig == SIGKILL || sig == SIGSTOP || sigaction(sig, NULL, &sa) < 0)
			continue;
		if (!(sa.sa_flags & SA_SIGINFO) && (sa.sa_handler == SIG_DFL || sa.sa_handler == SIG_IGN))
			continue;
		if (!(sa.sa_flags & SA_RESTART))
			return 0;
	}
	return 1;
}

/*
 * poll() returns EINTR only when a handler ran on this thread.  If ours
 * counted it, its flags decide; a timed call (SO_RCVTIMEO/SO_SNDTIMEO) gets
 * EINTR whatever the flags, as in Linux.
 */
int sig_restart(const struct sig_mark *m, int timed)
{
	if (g_sig_intr != m->intr)
		return 0;
	if (g_sig_rest != m->rest)
		return !timed;
	return !timed && all_restart();
}

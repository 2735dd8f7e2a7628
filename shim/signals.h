/* SPDX-License-Identifier: Apache-2.0 */
/*
 * signals.h - the program's signal handlers, as far as a blocking NUSE call
 * needs them: whether an interrupted call restarts (SA_RESTART) or fails
 * with EINTR is decided, as in Linux, by the handler of the signal that
 * arrived.  The shim sleeps in poll(), which the kernel never restarts, so
 * signals.c interposes sigaction() and the signal() family and installs a
 * trampoline in front of each handler the program installs; the trampoline
 * counts, per thread, the handlers that ran with and without SA_RESTART,
 * then calls the program's handler.  A blocking call marks the counts when
 * it starts (sig_call_begin), and its waits (sockstate.c) ask
 * sig_interrupted() before they sleep and sig_restart() after an EINTR.  Handlers the
 * shim did not wrap (installed by raw syscalls, or for synchronous signals,
 * which it leaves alone) fall back to the rule "restart only if every
 * installed handler has SA_RESTART".  It calls only the base (and reads
 * g_mypid of the fd table, to tell a vfork child).
 */
#ifndef NUSE_SIGNALS_H
#define NUSE_SIGNALS_H

#include "nuse.h"

#pragma GCC visibility push(hidden)

/* Handlers the trampoline ran on this thread: without / with SA_RESTART. */
extern __thread volatile unsigned g_sig_intr __attribute__((tls_model("initial-exec")));
extern __thread volatile unsigned g_sig_rest __attribute__((tls_model("initial-exec")));

struct sig_mark {
	unsigned intr, rest;
};

/* The mark of the blocking call this thread is in (sig_call_begin). */
extern __thread struct sig_mark g_sig_call __attribute__((tls_model("initial-exec")));

/*
 * At the start of every NUSE call that may block (connect, accept, the
 * stream's send and recv): a handler that runs from here on, even before
 * the call sleeps (during a command exchange with the daemon), counts for
 * the call, as a signal that arrives inside Linux's call does.  Every wait
 * (wait_fd) runs inside such a call and judges by this mark.
 */
static inline void sig_call_begin(void)
{
	g_sig_call.intr = g_sig_intr;
	g_sig_call.rest = g_sig_rest;
}

/*
 * Did a handler run on this thread since m, that Linux would have let
 * interrupt a blocking socket call?  One without SA_RESTART always does;
 * one with SA_RESTART does when the call has a timeout (SO_RCVTIMEO,
 * SO_SNDTIMEO: sock_intr_errno() gives EINTR then).
 */
static inline int sig_interrupted(const struct sig_mark *m, int timed)
{
	return g_sig_intr != m->intr || (timed && g_sig_rest != m->rest);
}

/*
 * After a wait that went on: did a handler run since the call began?  Then
 * Linux's call was interrupted and restarted (SA_RESTART); but one that had
 * already moved bytes (a send partly queued, a MSG_WAITALL recv partly
 * filled) returns their count instead (1).  Else the mark starts again:
 * the restarted call is a new one.
 */
static inline int sig_restarted(int moved)
{
	if (g_sig_call.intr == g_sig_intr && g_sig_call.rest == g_sig_rest)
		return 0;
	if (moved)
		return 1;
	sig_call_begin();
	return 0;
}

/* After poll() failed with EINTR: 1 if the call goes on (restarts). */
int sig_restart(const struct sig_mark *m, int timed);

#pragma GCC visibility pop

#endif /* NUSE_SIGNALS_H */

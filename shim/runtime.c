/* SPDX-License-Identifier: Apache-2.0 */
/*
 * runtime.c - the threads of libnuse.so's own Go runtime (cgo builds the
 * shim as a Go c-shared library, so a Go runtime starts in every process
 * that loads it, with threads of its own; no Go code runs on any call path).
 *
 * Linux delivers a process-directed signal to any thread that does not
 * block it.  Go's threads take their mask from the thread that started the
 * runtime, at load, when nothing is blocked: so a SIGTERM a program blocks
 * in all its threads (to read it from signalfd or sigwait) killed it when
 * it came while the program was not waiting, and a SIGCHLD nginx's master
 * blocks outside sigsuspend ran its handler on a Go thread and left the
 * master asleep.  This file interposes pthread_create for the calls made
 * from inside libnuse.so (the Go runtime's): those threads start with
 * every signal blocked and are marked (g_shim_thread).  Go unblocks a few
 * again (the synchronous ones, SIGCHLD, SIGURG, SIGPROF); the trampolines
 * (signals.c) send a process-directed one that lands there on to the
 * program's main thread.  The program's own pthread_create calls pass
 * straight through.  It calls only the base.
 */
#include "nuse.h"

#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

__thread int g_shim_thread __attribute__((tls_model("initial-exec")));

struct start {
	void *(*fn)(void *);
	void *arg;
};

static void *shim_start(void *p)
{
	struct start s = *(struct start *)p;

	free(p);
	g_shim_thread = 1;
	return s.fn(s.arg);
}

/* Is addr inside libnuse.so?  (Compared by the object dladdr names.) */
static int in_shim(const void *addr)
{
	static const void *self;
	Dl_info me, it;

	if (!self) {
		if (!dladdr((void *)in_shim, &me))
			return 0;
		self = me.dli_fbase;
	}
	return dladdr(addr, &it) && it.dli_fbase == self;
}

EXPORT int pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
	static int (*real)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
	sigset_t all, old;
	int r;

	if (!real) {
		real = (int (*)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *))dlsym(RTLD_NEXT,
													"pthread_create");
		if (!real)
			return EAGAIN;
	}
	if (!in_shim(__builtin_return_address(0)))
		return real(t, attr, fn, arg);
	struct start *s = malloc(sizeof(*s));

	if (!s)
		return EAGAIN;
	s->fn = fn;
	s->arg = arg;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = real(t, attr, shim_start, s);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r)
		free(s);
	return r;
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * procs.c - sockets shared with other processes (procs.h): the per-slot
 * counts of processes holding a socket, raised at fork, lowered at close,
 * exec and exit, so that the last holder sends CLOSE; and the fork
 * handlers that keep the child's locks sane.  It calls the fd table, the
 * command slots (CLOSE at exit) and the session.
 */
#include "procs.h"

#include "cmd.h"
#include "direct.h"
#include "inherit.h"
#include "lazy.h"
#include "relay.h"
#include "spare.h"
#include "wake.h"

int procs_release(struct nsock *s)
{
	unsigned v = atomic_load(&g_sh->procs[s->slot]);

	while (v > 0 && !atomic_compare_exchange_weak(&g_sh->procs[s->slot], &v, v - 1))
		;
	return v <= 1;
}

static void exec_drop(struct nsock *s)
{
	unsigned v = atomic_load(&g_sh->procs[s->slot]);

	/* Another process holds it too: after exec we don't.  (The last holder
	 * keeps its count: if exec fails it still has the socket.) */
	s->exec_dropped = 0;
	while (v > 1) {
		if (atomic_compare_exchange_weak(&g_sh->procs[s->slot], &v, v - 1)) {
			s->exec_dropped = 1;
			break;
		}
	}
}

static void exec_restore(struct nsock *s)
{
	if (s->exec_dropped)
		atomic_fetch_add(&g_sh->procs[s->slot], 1);
	s->exec_dropped = 0;
}

int exec_prepare(void)
{
	/* The new image waits on what it keeps with its own shim, which
	 * knows nothing of our lazy sockets: loud again first (lazy.h). */
	lazy_all_loud();
	/* Sockets the new image keeps: relayed, so that they work there. */
	relay_for_exec(1);
	/* A vfork child shares our memory and runs no atfork handler: it was
	 * never counted, so its exec must not uncount the parent. */
	if (S.state != SESS_UP || !g_sh || getpid() != g_mypid)
		return 0;
	pthread_mutex_lock(&g_tablock);
	each_nuse_locked(exec_drop);
	pthread_mutex_unlock(&g_tablock);
	return 1;
}

void exec_failed(int prepared)
{
	int e = errno;

	if (!prepared)
		return;
	pthread_mutex_lock(&g_tablock);
	each_nuse_locked(exec_restore);
	pthread_mutex_unlock(&g_tablock);
	adopt_inherited(); /* the listeners let go of for the exec */
	errno = e;
}

static void exit_release(struct nsock *s)
{
	if (procs_release(s) && !s->dead && !atomic_load(&S.dead))
		cmd_call(s, NUSE_OP_CLOSE, NULL);
}

/*
 * A forked child that exits (through exit(), not _exit()) lets go of the
 * sockets it still holds, so that the last holder's exit closes them.  The
 * session's own process needs nothing: the daemon closes its sockets when
 * the session ends.
 */
__attribute__((destructor)) static void nuse_fini(void)
{
	if (S.state != SESS_UP || !g_sh || getpid() == S.pid)
		return;
	pthread_mutex_lock(&g_tablock);
	each_nuse_locked(exit_release);
	pthread_mutex_unlock(&g_tablock);
}

static void procs_inc(struct nsock *s)
{
	atomic_fetch_add(&g_sh->procs[s->slot], 1);
}

void atfork_prepare(void)
{
	/* the child may wait on our sockets and epoll sets: their readiness
	 * goes back into the fds (lazy.h) */
	lazy_all_loud();
	pthread_mutex_lock(&S.lock);
	pthread_mutex_lock(&g_tablock);
	/* the child will hold every socket we hold (if fork fails, a socket
	 * outlives its last close until the session ends: harmless) */
	if (g_sh)
		each_nuse_locked(procs_inc);
}

void atfork_parent(void)
{
	pthread_mutex_unlock(&g_tablock);
	pthread_mutex_unlock(&S.lock);
}

/*
 * In the child only this thread exists: the locks other threads held are
 * re-created (not the process-shared ctl_lock: its state is shared and its
 * holder, if any, is alive in the parent).  The child shares the parent's
 * session: its arena, its control socket and its sockets.
 */
void atfork_child(void)
{
	int i;

	g_mypid = getpid();
	pthread_mutex_init(&g_tablock, NULL);
	direct_atfork_child();
	wake_atfork_child();
	spare_atfork_child();
	lazy_atfork_child();
	pthread_mutex_init(&S.lock, NULL);
	for (i = 0; i < g_tabhi; i++) {
		struct nsock *s = atomic_load_explicit(&g_tab[i], memory_order_relaxed);

		if (s) {
			pthread_mutex_init(&s->lock, NULL);
			pthread_mutex_init(&s->rx_lock, NULL);
			pthread_mutex_init(&s->tx_lock, NULL);
			/* the threads that blocked on it stayed in the parent */
			atomic_store(&s->busy, 0);
		}
	}
}

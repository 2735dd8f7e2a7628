/* SPDX-License-Identifier: Apache-2.0 */
/*
 * wake.c - a direct connection's peer waker (wake.h): asked of the daemon
 * once per socket and process (NUSE_CTL_WAKE), written to after a write
 * the peer's reader sleeps for, hidden from the program's fd calls, let go
 * of, and shut by the watcher thread if the daemon goes away.  It calls
 * the session (ctl_request_fd, ctl_alive) and the base.
 *
 * Why: without it every message to a sleeping reader costs the daemon a
 * wake-up, a pass and a write(2) of the readiness byte (a core's worth of
 * daemon CPU under redis-benchmark).  With it the writer writes that byte
 * itself; the daemon hears of the connection only for state changes.
 */
#include "wake.h"

#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/resource.h>

#include "session.h"

static pthread_mutex_t g_wakelock = PTHREAD_MUTEX_INITIALIZER;
static struct nsock **g_owner; /* by fd number: whose waker it is */
static int g_nowned;
static int g_lo = -1, g_hi; /* the owned numbers lie in [g_lo, g_hi) */
static pid_t g_watcher; /* the process whose watcher thread runs */

/*
 * The daemon is gone (or ended our session).  Our copies of the peers'
 * wakers would keep their app fds from hanging up, as they would without
 * us: shut them (the socket, not just our fd), so that a peer blocked on
 * its fd wakes and finds out.  Shutting, not closing: a writer racing us
 * still holds the number.
 */
static void *watch(void *arg)
{
	struct pollfd p = {.fd = (int)(intptr_t)arg, .events = POLLRDHUP};
	int i;

	for (;;) {
		p.revents = 0;
		if (rpoll(&p, 1, -1) > 0 && (p.revents & (POLLHUP | POLLERR | POLLRDHUP | POLLNVAL)))
			break;
	}
	if ((p.revents & POLLNVAL) || p.fd != S.ctl)
		return NULL; /* the session ended another way (never the daemon's doing) */
	ctl_alive();         /* says so, once, and marks the session dead */
	pthread_mutex_lock(&g_wakelock);
	for (i = g_lo; g_owner && i >= 0 && i < g_hi; i++)
		if (g_owner[i])
			R.shutdown(i, SHUT_RDWR);
	pthread_mutex_unlock(&g_wakelock);
	return NULL;
}

/* Called with g_wakelock held. */
static void start_watcher(void)
{
	pthread_attr_t a;
	pthread_t t;

	if (g_watcher == g_mypid || S.ctl < 0)
		return;
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&a, 64 * 1024);
	if (pthread_create(&t, &a, watch, (void *)(intptr_t)S.ctl) == 0)
		g_watcher = g_mypid;
	pthread_attr_destroy(&a);
}

/*
 * Asks for the peer's waker, once per socket and process.  Wakers live at
 * high fd numbers (the program expects the lowest free ones) and take at
 * most a quarter of the fd limit: beyond that, the daemon wakes the peer.
 * Called with tx_lock held.
 */
static int wake_get(struct nsock *s)
{
	struct nuse_ctl_reply rep;
	struct rlimit rl;
	int fd = -1, hi, lim, r;

	s->wake_tried = 1;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur < 256)
		return -1;
	lim = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (rlim_t)g_tabmax ? g_tabmax : (int)rl.rlim_cur;
	pthread_mutex_lock(&g_wakelock);
	r = g_nowned >= lim / 4 || S.ctl < 0;
	if (!r && !g_owner) {
		void *p = table_map((size_t)g_tabmax * sizeof(*g_owner), "waker table");

		if (!p)
			r = 1;
		else
			g_owner = p;
	}
	pthread_mutex_unlock(&g_wakelock);
	if (r)
		return -1;
	r = ctl_request_fd(NUSE_CTL_WAKE, s->slot, s->gen, &fd, &rep);
	if (r < 0 || fd < 0) {
		if (fd >= 0)
			R.close(fd);
		debug("nuse: slot %u: no peer waker (%s); the daemon wakes the peer", s->slot,
		      strerror(r < 0 ? -r : EIO));
		return -1;
	}
	hi = R.fcntl(fd, F_DUPFD_CLOEXEC, lim / 2);
	R.close(fd);
	if (hi < 0 || hi >= g_tabmax) {
		if (hi >= 0)
			R.close(hi);
		return -1;
	}
	pthread_mutex_lock(&g_wakelock);
	g_owner[hi] = s;
	g_nowned++;
	if (g_lo < 0 || hi < g_lo)
		g_lo = hi;
	if (hi >= g_hi)
		g_hi = hi + 1;
	s->wake_fd = hi;
	start_watcher();
	pthread_mutex_unlock(&g_wakelock);
	debug("nuse: slot %u: wakes its peer itself (fd %d)", s->slot, hi);
	return 0;
}

int wake_peer(struct nsock *s)
{
	int peer = s->dside ^ 1, e;
	_Atomic uint32_t *ps;
	uint32_t n;

	/* Cleared by the daemon when the peer closes or is handed to a
	 * relay, before it reads our head: this load, after our head store
	 * and the caller's fence, sees the clear, or the daemon sees our
	 * bytes as written before. */
	if (!atomic_load_explicit(A32(&s->dir->wake_ok[peer]), memory_order_relaxed))
		return -1;
	if (s->wake_fd < 0 && (s->wake_tried || wake_get(s) < 0))
		return -1;
	ps = A32(&s->dir->psig[peer]);
	n = atomic_load_explicit(ps, memory_order_relaxed);
	/* A byte of ours is queued: it wakes a level-triggered reader (one
	 * that takes it back looks at the ring again after, and sees our
	 * head), so only an EPOLLET one needs another, as a new edge. */
	if (n >= NUSE_WAKE_MAX_EDGES || (n && !atomic_load_explicit(A32(&s->dir->et[peer]), memory_order_relaxed)))
		return 0;
	/*
	 * Counted first, written after, as the daemon does: a reader that
	 * finds the byte has its count, so it can take every byte back once
	 * the ring is empty (a byte it could not count would leave the fd
	 * readable with nothing to read: EAGAIN after poll said readable,
	 * which programs such as wrk take for an error).  A count whose
	 * byte is still in flight is waited for, or owed (wake_fold).
	 */
	n = atomic_fetch_add(ps, 1);
	/*
	 * The reader may have taken all we wrote already (it reads whenever
	 * it likes, and looks at psig after its tail store and a fence): a
	 * byte now would make its fd poll readable with nothing to read, and
	 * EAGAIN after poll said readable is an error to programs such as
	 * wrk.  So, after our count and a fence, if it did, we take the count
	 * back -- unless it was folded meanwhile (the reader then waits for
	 * the byte) or another writer counted too.
	 */
	atomic_thread_fence(memory_order_seq_cst);
	if ((int64_t)(atomic_load_explicit(A64(&s->tx->tail), memory_order_relaxed) - s->tx->head) >= 0) {
		uint32_t mine = n + 1;

		if (atomic_compare_exchange_strong(ps, &mine, n))
			return 0;
	}
	e = errno;
	n = (uint32_t)R.send(s->wake_fd, "\1", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
	errno = e;
	if (n != 1) {
		/* Refused (the peer's pair is gone or full): our count back,
		 * never below zero (the reader may have taken it: it then owes
		 * itself a byte, a late wake-up at worst). */
		uint32_t v = atomic_load(ps);

		while (v && !atomic_compare_exchange_weak(ps, &v, v - 1))
			;
		return -1;
	}
	return 0;
}

void wake_edge_triggered(struct nsock *s)
{
	atomic_store(&s->et, 1);
	if (atomic_load(&s->dir_ready))
		atomic_store(A32(&s->dir->et[s->dside]), 1);
}

void wake_release(struct nsock *s)
{
	int fd;

	pthread_mutex_lock(&s->tx_lock);
	fd = s->wake_fd;
	s->wake_fd = -1;
	pthread_mutex_unlock(&s->tx_lock);
	if (fd < 0)
		return;
	pthread_mutex_lock(&g_wakelock);
	if (g_owner && fd < g_tabmax && g_owner[fd] == s) {
		g_owner[fd] = NULL;
		g_nowned--;
		R.close(fd);
	}
	pthread_mutex_unlock(&g_wakelock);
}

int wake_owns(int fd)
{
	struct nsock **o = g_owner;

	return o && fd >= 0 && fd < g_tabmax && o[fd];
}

unsigned wake_next(unsigned from, unsigned last)
{
	unsigned i;

	if (!g_owner || g_lo < 0)
		return ~0u;
	for (i = from > (unsigned)g_lo ? from : (unsigned)g_lo; i <= last && i < (unsigned)g_hi; i++)
		if (g_owner[i])
			return i;
	return ~0u;
}

void wake_yield(int fd)
{
	struct nsock *s;

	if (!wake_owns(fd))
		return;
	/* Not nested with tx_lock: wake_get takes ours under it. */
	pthread_mutex_lock(&g_wakelock);
	s = g_owner[fd];
	if (s) {
		g_owner[fd] = NULL;
		g_nowned--;
	}
	pthread_mutex_unlock(&g_wakelock);
	if (!s)
		return;
	pthread_mutex_lock(&s->tx_lock);
	if (s->wake_fd == fd)
		s->wake_fd = -1; /* wake_tried stays: the daemon wakes its peer */
	pthread_mutex_unlock(&s->tx_lock);
}

void wake_atfork_child(void)
{
	int i;

	pthread_mutex_init(&g_wakelock, NULL);
	for (i = g_lo; g_owner && g_nowned > 0 && i >= 0 && i < g_hi; i++) {
		struct nsock *s = g_owner[i];

		if (!s)
			continue;
		g_owner[i] = NULL;
		g_nowned--;
		s->wake_fd = -1;
		s->wake_tried = 0;
		R.close(i);
	}
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * spare.c - the pool of spare socketpairs (spare.h): taking and giving
 * back, refilling through NUSE_CTL_SPARES, hiding the pool's fds from the
 * program's fd calls, and the fork child's reset.  It calls the session
 * (ctl_request_spares) and the base.
 *
 * Why: a control request waits for the daemon's session loop, which the Go
 * scheduler serves between the workers' passes (up to the nudge period,
 * 100 us, when they are busy) and costs a wake-up each way; a command on
 * the ring is served within the worker's pass while the caller spins.  A
 * program that accepts or connects all day pays it once per pool refill.
 */
#include "spare.h"

#include <fcntl.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "cmd.h"
#include "session.h"

static pthread_mutex_t g_sparelock = PTHREAD_MUTEX_INITIALIZER;
/* g_pool[0..g_n) are the spares; a free entry's fd is -1, so that close()
 * can look without the lock (spare_owns). */
static struct {
	uint32_t id;
	_Atomic int fd;
} g_pool[NUSE_SPARES_MAX] = {[0 ... NUSE_SPARES_MAX - 1] = {0, -1}};
static int g_n;
/* Every fd the pool ever held lies in [g_lo, g_hi): close's quick test. */
static _Atomic int g_lo = -1, g_hi;
/* Sockets born or accepted in this process: a pool pays from the third,
 * and a refill brings as many as were made so far (up to the maximum). */
static atomic_uint g_births;

/* Where the pool's fds go: high, as the program expects the lowest free
 * numbers, and below the wakers' (from half the limit); -1 when the fd
 * limit is too small to spare them. */
static int spare_min(void)
{
	struct rlimit rl;
	int lim;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur < 256)
		return -1;
	lim = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (rlim_t)g_tabmax ? g_tabmax : (int)rl.rlim_cur;
	return lim / 2 - lim / 8;
}

/* Asks the daemon to hold n new pairs; adds what it kept to the pool. */
static void spare_fill(int n)
{
	int ours[NUSE_SPARES_MAX], theirs[NUSE_SPARES_MAX], k, i, r, lo = spare_min();
	struct nuse_ctl_reply rep;

	if (lo < 0 || !session_get())
		return;
	for (k = 0; k < n && k < NUSE_SPARES_MAX; k++) {
		int sv[2];

		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
			break;
		ours[k] = R.fcntl(sv[0], F_DUPFD_CLOEXEC, lo);
		R.close(sv[0]);
		if (ours[k] < 0 || ours[k] >= g_tabmax) {
			if (ours[k] >= 0)
				R.close(ours[k]);
			R.close(sv[1]);
			break;
		}
		theirs[k] = sv[1];
	}
	if (k == 0)
		return;
	r = ctl_request_spares(theirs, k, &rep);
	for (i = 0; i < k; i++)
		R.close(theirs[i]);
	if (r > k || (uint32_t)r * 4 > rep.addrlen)
		r = -EIO;
	pthread_mutex_lock(&g_sparelock);
	for (i = 0; i < k; i++) {
		uint32_t id;

		if (i >= r || g_n == NUSE_SPARES_MAX) {
			/* not kept (or no room): the daemon's end, if it has
			 * one, hangs up and goes at its next prune */
			R.close(ours[i]);
			continue;
		}
		memcpy(&id, rep.addr + 4 * i, sizeof(id));
		g_pool[g_n].id = id;
		atomic_store(&g_pool[g_n].fd, ours[i]);
		g_n++;
		if (atomic_load(&g_lo) < 0 || ours[i] < atomic_load(&g_lo))
			atomic_store(&g_lo, ours[i]);
		if (ours[i] >= atomic_load(&g_hi))
			atomic_store(&g_hi, ours[i] + 1);
	}
	pthread_mutex_unlock(&g_sparelock);
	if (r < 0)
		debug("nuse: no spare pairs (%s); sockets are born through the control socket", strerror(-r));
}

int spare_take(uint32_t *id)
{
	unsigned births;
	int fd = -1, tries;

	/* a vfork child shares our memory, not our fds */
	if (in_vfork_child())
		return -1;
	births = atomic_fetch_add(&g_births, 1);
	if (births < 2)
		return -1;
	for (tries = 0; tries < 2; tries++) {
		pthread_mutex_lock(&g_sparelock);
		if (g_n > 0) {
			g_n--;
			*id = g_pool[g_n].id;
			fd = atomic_exchange(&g_pool[g_n].fd, -1);
		}
		pthread_mutex_unlock(&g_sparelock);
		if (fd >= 0 || tries > 0)
			break;
		spare_fill(births < NUSE_SPARES_MAX ? (int)births : NUSE_SPARES_MAX);
	}
	return fd;
}

void spare_put(uint32_t id, int fd)
{
	pthread_mutex_lock(&g_sparelock);
	if (g_n < NUSE_SPARES_MAX) {
		g_pool[g_n].id = id;
		atomic_store(&g_pool[g_n].fd, fd);
		g_n++;
		fd = -1;
	}
	pthread_mutex_unlock(&g_sparelock);
	if (fd >= 0)
		R.close(fd);
}

int spare_call(struct nsock *s, uint16_t op, struct cmd_io *io, const struct nuse_op_born *born,
	       const uint32_t *born_len, int dupfd, int *fd)
{
	uint32_t id;
	int sp = spare_take(&id), nfd = -1, r;

	if (sp < 0)
		return 1;
	if (dupfd >= 0) {
		/* The new fd's number first: out of fds, nothing happens
		 * (an accept leaves the connection queued, as Linux's). */
		nfd = R.fcntl(sp, dupfd, 0);
		if (nfd < 0) {
			r = errno == EMFILE ? -EMFILE : -ENFILE;
			spare_put(id, sp);
			return r;
		}
	}
	io->arg0 = id;
	r = cmd_call(s, op, io);
	if (r == 0 && (*born_len < sizeof(*born) || born->sock >= S.max_socks))
		r = -EIO;
	if (r < 0 && nfd >= 0)
		R.close(nfd);
	if (r == -ENOENT) { /* not a spare the daemon knows: never again */
		R.close(sp);
		return 1;
	}
	if (r < 0) {
		spare_put(id, sp);
		return r;
	}
	if (nfd >= 0) {
		R.close(sp);
		sp = nfd;
	}
	*fd = sp;
	return 0;
}

/* The pool's index of fd, or -1. Called with g_sparelock held. */
static int pool_index(int fd)
{
	int i;

	for (i = 0; i < g_n; i++)
		if (atomic_load(&g_pool[i].fd) == fd)
			return i;
	return -1;
}

int spare_owns(int fd)
{
	int i;

	if (fd < 0 || fd < atomic_load(&g_lo) || fd >= atomic_load(&g_hi))
		return 0;
	for (i = 0; i < NUSE_SPARES_MAX; i++)
		if (atomic_load(&g_pool[i].fd) == fd)
			return 1;
	return 0;
}

unsigned spare_next(unsigned from, unsigned last)
{
	unsigned best = ~0u;
	int i;

	if (atomic_load(&g_lo) < 0)
		return best;
	pthread_mutex_lock(&g_sparelock);
	for (i = 0; i < g_n; i++) {
		unsigned f = (unsigned)atomic_load(&g_pool[i].fd);

		if (f >= from && f <= last && f < best)
			best = f;
	}
	pthread_mutex_unlock(&g_sparelock);
	return best;
}

void spare_yield(int fd)
{
	int i;

	if (fd < atomic_load(&g_lo) || fd >= atomic_load(&g_hi))
		return;
	pthread_mutex_lock(&g_sparelock);
	i = pool_index(fd);
	if (i >= 0) {
		g_n--;
		g_pool[i].id = g_pool[g_n].id;
		atomic_store(&g_pool[i].fd, atomic_load(&g_pool[g_n].fd));
		atomic_store(&g_pool[g_n].fd, -1);
	}
	pthread_mutex_unlock(&g_sparelock);
}

void spare_atfork_child(void)
{
	int i;

	pthread_mutex_init(&g_sparelock, NULL);
	for (i = 0; i < NUSE_SPARES_MAX; i++) {
		int fd = atomic_exchange(&g_pool[i].fd, -1);

		if (fd >= 0)
			R.close(fd);
	}
	g_n = 0;
	atomic_store(&g_births, 0);
}

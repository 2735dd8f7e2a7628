/* SPDX-License-Identifier: Apache-2.0 */
/*
 * stale.c - letting go of table entries whose fd was closed behind the
 * shim's back (stale.h).  The socket is treated as the program's close()
 * would have treated it: the fd's reference is dropped and the last one
 * closes the socket in the daemon (drop_fd, control.h: a CLOSE command,
 * never data on the fd, which now names another file).  It calls control,
 * the fd table and the base.
 */
#include "stale.h"

#include <fcntl.h>
#include <string.h>
#include <sys/resource.h>

#include "control.h"

/* An fd that never polls ready (an empty epoll set), numbered out of the
 * program's way, or -1. */
static int placeholder(void)
{
	struct rlimit rl;
	int e, h, min = 3;

	e = (int)syscall(SYS_epoll_create1, EPOLL_CLOEXEC);
	if (e < 0)
		return -1;
	/* as drop_fd's copies: programs expect the lowest free numbers */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur > 256 && rl.rlim_cur != RLIM_INFINITY)
		min = (int)(rl.rlim_cur - 128);
	h = R.fcntl(e, F_DUPFD_CLOEXEC, min);
	if (h >= 0) {
		R.close(e);
		e = h;
	}
	if (fd_get(e) != NULL) {
		/* itself on a stale number: not worth a loop */
		R.close(e);
		return -1;
	}
	return e;
}

/*
 * A thread is blocked on the socket (sock_hold) and this is its last fd:
 * drop_fd would keep a copy of the fd for the thread's waits, but the fd
 * now names another file.  The thread gets an fd that never polls ready
 * (an empty epoll set) instead: it rechecks the socket's shared state each
 * slice, and its sock_unhold closes that fd and lets the socket go.
 * Returns 0 if it did, -1 if drop_fd should do the work.
 */
static int orphan_stale(int fd)
{
	struct nsock *s;
	int ph = -1;

	pthread_mutex_lock(&g_tablock);
	s = fd_get(fd);
	if (s && atomic_load(&s->refs) == 1 && atomic_load(&s->busy) > 0 &&
	    atomic_load(&s->orphan_fd) < 0) {
		ph = placeholder();
		if (ph >= 0) {
			atomic_store(&g_tab[fd], NULL);
			atomic_store(&s->refs, 0);
			atomic_store(&s->orphan_fd, ph);
		}
	}
	pthread_mutex_unlock(&g_tablock);
	return ph >= 0 ? 0 : -1;
}

void stale_drop(int fd)
{
	if (in_vfork_child())
		return; /* the child's new fds say nothing of ours */
	debug("nuse: fd %d was closed behind the shim's back and is a new file now: its socket is let go of", fd);
	REAL(close);
	REAL(fcntl);
	if (orphan_stale(fd) == 0)
		return;
	drop_fd(fd);
}

static void fresh_fd(int fd)
{
	fd_fresh(fd);
}

void stale_drop_cmsg(const struct msghdr *m)
{
	each_rights_fd(m, fresh_fd);
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * relay.c - relayed sockets (relay.h): the NUSE_CTL_RELAY exchange and
 * putting the relay's end in place of the program's fds, for this process
 * or, in a vfork child, for the child alone.  It calls the session
 * (ctl_request), the command slots and procs.h (letting go of the rings as
 * a close does), the fd table and the base.
 *
 * Why a fresh pair rather than the socket's own: the old one carries
 * readiness bytes and filling junk, and may already be shut for writing
 * (the peer's FIN mirrored); the daemon moves what the rings hold into the
 * relay first, so no byte is lost or reordered.
 */
#include "relay.h"

#include "direct.h"

#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "cmd.h"
#include "inherit.h"
#include "procs.h"
#include "session.h"

/* Asks the daemon to relay s through a new pair; returns our end, or
 * -errno.  Called with s's locks held. */
static int relay_request(struct nsock *s)
{
	struct nuse_ctl_reply rep;
	int sp[2], r;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
		return -errno;
	r = ctl_request(NUSE_CTL_RELAY, s->family, s->slot, s->gen, sp[1], &rep);
	R.close(sp[1]);
	if (r < 0) {
		R.close(sp[0]);
		return r;
	}
	if (s->nonblock)
		R.fcntl(sp[0], F_SETFL, O_RDWR | O_NONBLOCK);
	return sp[0];
}

/* Puts our end in place of fd, keeping its close-on-exec flag. */
static void replace_fd(int end, int fd)
{
	int fl = R.fcntl(fd, F_GETFD);

	R.dup3(end, fd, fl >= 0 && (fl & FD_CLOEXEC) ? O_CLOEXEC : 0);
}

static int relayable(struct nsock *s)
{
	return s->kind == K_NUSE && !s->dead && !atomic_load(&S.dead) && !s->listening && atomic_load(&s->busy) == 0;
}

static void lock3(struct nsock *s)
{
	pthread_mutex_lock(&s->lock);
	pthread_mutex_lock(&s->tx_lock);
	pthread_mutex_lock(&s->rx_lock);
}

static void unlock3(struct nsock *s)
{
	pthread_mutex_unlock(&s->rx_lock);
	pthread_mutex_unlock(&s->tx_lock);
	pthread_mutex_unlock(&s->lock);
}

int relay_sock(struct nsock *s)
{
	int end, i;

	if (s->kind == K_NUSE && s->listening)
		return keep_listener(s); /* shared, not relayed (inherit.h) */
	lock3(s);
	if (!relayable(s)) {
		/* A thread blocked on it would wake to a socket that moved. */
		end = s->kind == K_NUSE && atomic_load(&s->busy) ? -EBUSY : -EINVAL;
		unlock3(s);
		debug("nuse: slot %u cannot be relayed (%s)", s->slot, strerror(-end));
		return end;
	}
	end = relay_request(s);
	if (end < 0) {
		unlock3(s);
		say("nuse: slot %u could not be handed on (%s); the program that gets it reads a raw channel",
		    s->slot, strerror(-end));
		return end;
	}
	pthread_mutex_lock(&g_tablock);
	for (i = 0; i < g_tabhi; i++) {
		if (atomic_load_explicit(&g_tab[i], memory_order_relaxed) != s)
			continue;
		replace_fd(end, i);
		atomic_store(&g_tab[i], NULL);
	}
	atomic_store(&s->refs, 0);
	pthread_mutex_unlock(&g_tablock);
	unlock3(s);
	R.close(end);
	/* This process uses the rings no more; if no other does, CLOSE hands
	 * the connection to the relay (a forked sibling may still hold it:
	 * its last close does). */
	if (procs_release(s) && !atomic_load(&S.dead))
		cmd_call(s, NUSE_OP_CLOSE, NULL);
	debug("nuse: slot %u is handed on through the daemon's relay", s->slot);
	direct_release(s);
	pthread_mutex_lock(&g_tablock);
	nsock_free_locked(s);
	pthread_mutex_unlock(&g_tablock);
	return 0;
}

/* The NUSE socket whose application end has inode ino, if any.  A vfork
 * child's fds are its own, not what the table (its parent's) says. */
static struct nsock *by_ino(uint64_t ino)
{
	int i;

	for (i = 0; i < g_tabhi; i++) {
		struct nsock *s = atomic_load_explicit(&g_tab[i], memory_order_relaxed);

		if (s && s->kind == K_NUSE && s->ino == ino)
			return s;
	}
	return NULL;
}

/* A socket fd that survives an exec: its inode, else 0. */
static uint64_t kept_sock(int fd)
{
	struct stat st;
	int fl = R.fcntl(fd, F_GETFD);

	if (fl < 0 || (fl & FD_CLOEXEC) || fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode))
		return 0;
	return st.st_ino;
}

/* In a vfork child: relays s for the child's fds alone (from fd up to hi,
 * every one naming s's end: a socket made both stdin and stdout).  The
 * parent's socket, in the memory we share, stays as it is: its last close
 * hands the connection to the relay. */
static void relay_child_fds(struct nsock *s, int fd, int hi)
{
	uint64_t ino = s->ino;
	int end, i;

	if (s->kind == K_NUSE && s->listening) {
		keep_listener(s); /* the child's image takes it up (inherit.h) */
		return;
	}
	lock3(s);
	end = relayable(s) ? relay_request(s) : -EINVAL;
	unlock3(s);
	if (end < 0)
		return;
	for (i = fd; i < hi; i++)
		if (kept_sock(i) == ino)
			replace_fd(end, i);
	R.close(end);
}

void relay_for_exec(int leaving)
{
	int i, hi;

	if (S.state != SESS_UP || !g_sh || atomic_load(&S.dead))
		return;
	if (!in_vfork_child()) {
		for (i = 0; i < g_tabhi; i++) {
			struct nsock *s = fd_nuse(i);
			int fl;

			if (!s || (fl = R.fcntl(i, F_GETFD)) < 0 || (fl & FD_CLOEXEC))
				continue;
			if (s->listening && leaving)
				keep_listener_exec(s);
			else if (s->listening)
				keep_listener(s);
			else
				relay_sock(s);
		}
		return;
	}
	/* A vfork child (posix_spawn, subprocess) may have dup2'd a socket
	 * anywhere; low numbers and the parent's are where it does. */
	hi = g_tabhi > 256 ? g_tabhi : 256;
	for (i = 0; i < hi; i++) {
		uint64_t ino = kept_sock(i);
		struct nsock *s;

		if (ino && (s = by_ino(ino)) != NULL)
			relay_child_fds(s, i, hi);
	}
}

static void relay_fd(int fd)
{
	struct nsock *s = fd_nuse(fd);

	if (s)
		relay_sock(s);
}

void relay_msg_fds(const struct msghdr *m)
{
	if (!in_vfork_child())
		each_rights_fd(m, relay_fd);
}

#define RELAY_NAME "nuse-relay/" /* the daemon's end: "\0nuse-relay/PID/N" */

int relay_name(int fd, int peer, struct sockaddr *sa, socklen_t *len)
{
	struct sockaddr_un sun;
	socklen_t sl = sizeof(sun);
	struct nuse_ctl_reply rep;
	int e = errno;

	if (R.getpeername(fd, (struct sockaddr *)&sun, &sl) < 0 || sl < offsetof(struct sockaddr_un, sun_path) + 1 +
	    sizeof(RELAY_NAME) - 1 || sun.sun_path[0] || memcmp(sun.sun_path + 1, RELAY_NAME, sizeof(RELAY_NAME) - 1)) {
		errno = e;
		return -1;
	}
	if (!session_get() || ctl_request(NUSE_CTL_IDENT, 0, (uint32_t)peer, 0, fd, &rep) < 0 || !rep.addrlen ||
	    rep.addrlen > NUSE_ADDR_LEN) {
		errno = e;
		return -1;
	}
	memcpy(sa, rep.addr, rep.addrlen < *len ? rep.addrlen : *len);
	*len = rep.addrlen;
	errno = e;
	return 0;
}

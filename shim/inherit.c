/* SPDX-License-Identifier: Apache-2.0 */
/*
 * inherit.c - listening sockets handed on (inherit.h).  A listener cannot
 * be relayed like a connection, so every process that holds its fd shares
 * the daemon's one listener: the giver asks the daemon to keep it
 * (NUSE_CTL_KEEP), and the taker proves it holds the fd by sending it
 * (NUSE_CTL_ADOPT) and gets a slot of its own on it.  The fd number stays
 * what it was: the program's end of the original socketpair, which the
 * daemon's end (named "\0nuse-lsn/...") signals for every holder.
 */
#include "inherit.h"

#include <dirent.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "cmd.h"
#include "procs.h"
#include "session.h"
#include "sockstate.h"

#define LSN_NAME "nuse-lsn/" /* the daemon's end: "\0nuse-lsn/PID/N" */

int keep_listener(struct nsock *s)
{
	struct nuse_ctl_reply rep;
	int r;

	if (s->kind != K_NUSE || !s->listening || s->dead || atomic_load(&S.dead))
		return -EINVAL;
	r = ctl_request(NUSE_CTL_KEEP, s->family, s->slot, s->gen, -1, &rep);
	if (r < 0)
		say("nuse: slot %u, a listening socket, could not be handed on (%s); the program that gets it "
		    "reads a raw channel", s->slot, strerror(-r));
	else
		debug("nuse: slot %u, a listening socket, is kept for the program it is handed to", s->slot);
	return r;
}

void keep_listener_exec(struct nsock *s)
{
	int i;

	if (keep_listener(s) < 0)
		return;
	/* This image lets go as a close would (the new one takes it up by its
	 * fd; exec_failed does if the exec fails): the last holder's CLOSE
	 * parks it in the daemon rather than closing it. */
	pthread_mutex_lock(&g_tablock);
	for (i = 0; i < g_tabhi; i++)
		if (atomic_load_explicit(&g_tab[i], memory_order_relaxed) == s)
			atomic_store(&g_tab[i], NULL);
	atomic_store(&s->refs, 0);
	pthread_mutex_unlock(&g_tablock);
	if (procs_release(s) && !atomic_load(&S.dead))
		cmd_call(s, NUSE_OP_CLOSE, NULL);
	pthread_mutex_lock(&g_tablock);
	nsock_free_locked(s);
	pthread_mutex_unlock(&g_tablock);
}

/* Is fd the program's end of a NUSE listener's pair?  One getpeername. */
static int lsn_fd(int fd)
{
	struct sockaddr_un sun;
	socklen_t sl = sizeof(sun);
	struct stat st;

	if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode))
		return 0;
	if (R.getpeername(fd, (struct sockaddr *)&sun, &sl) < 0 ||
	    sl < offsetof(struct sockaddr_un, sun_path) + 1 + sizeof(LSN_NAME) - 1)
		return 0;
	return !sun.sun_path[0] && !memcmp(sun.sun_path + 1, LSN_NAME, sizeof(LSN_NAME) - 1);
}

static void adopt_fd(int fd)
{
	struct nuse_ctl_reply rep;
	struct nsock *s;
	sa_family_t fam;
	int fl, r, e = errno;

	if (fd < 0 || fd >= g_tabmax || fd_nuse(fd) || !lsn_fd(fd) || !session_get()) {
		errno = e;
		return;
	}
	r = ctl_request(NUSE_CTL_ADOPT, 0, 0, 0, fd, &rep);
	if (r < 0 || rep.addrlen < sizeof(fam) || rep.addrlen > NUSE_ADDR_LEN) {
		say("nuse: fd %d, a listening socket handed to this program, could not be taken up (%s)", fd,
		    strerror(r < 0 ? -r : EPROTO));
		errno = e;
		return;
	}
	memcpy(&fam, rep.addr, sizeof(fam));
	s = nsock_new(fam);
	if (!s) {
		errno = e;
		return;
	}
	fl = R.fcntl(fd, F_GETFL);
	s->nonblock = fl >= 0 && (fl & O_NONBLOCK);
	pthread_mutex_lock(&g_tablock);
	attach_slot(s, rep.sock, rep.gen, fd);
	s->listening = 1;
	s->sndbuf_small = 1; /* its giver filled the end we share */
	tab_put_locked(fd, s);
	pthread_mutex_unlock(&g_tablock);
	debug("nuse: fd %d is a listening socket handed to this program (slot %u)", fd, rep.sock);
	errno = e;
}

void adopt_inherited(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int e = errno;

	if (!d) {
		errno = e;
		return;
	}
	while ((de = readdir(d)) != NULL) {
		char *end;
		long fd = strtol(de->d_name, &end, 10);

		if (*end || end == de->d_name || fd == dirfd(d))
			continue;
		adopt_fd((int)fd);
	}
	closedir(d);
	errno = e;
}

void adopt_msg_fds(const struct msghdr *m)
{
	each_rights_fd(m, adopt_fd);
}

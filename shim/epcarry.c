/* SPDX-License-Identifier: Apache-2.0 */
/*
 * epcarry.c - carrying epoll registrations to a replacing file
 * (epcarry.h).  Raw syscalls for /proc: the interposed open would take the
 * fd table's lock the caller holds.  It calls the base only.
 */
#include "epcarry.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

struct dirent64_raw {
	uint64_t ino;
	int64_t off;
	unsigned short reclen;
	unsigned char type;
	char name[];
};

static int open_ro(const char *path, int flags)
{
	return (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC | flags);
}

/* One fdinfo line: "tfd: N events: HEX data: HEX  pos:N ino:HEX sdev:HEX". */
static void take_line(struct epcarry *c, int ep, const char *l, uint64_t ino)
{
	unsigned long long data;
	unsigned long lino;
	unsigned ev;
	int tfd;

	if (sscanf(l, "tfd: %d events: %x data: %llx pos:%*d ino:%lx", &tfd, &ev, &data, &lino) != 4 || lino != ino)
		return;
	if (c->n == EPCARRY_MAX) {
		say("nuse: fd %d is in more than %d epoll sets: only %d follow it to its new pair", tfd, EPCARRY_MAX,
		    EPCARRY_MAX);
		return;
	}
	c->r[c->n].epfd = ep;
	c->r[c->n].fd = tfd;
	c->r[c->n].ev.events = ev;
	c->r[c->n].ev.data.u64 = data;
	c->n++;
}

static void scan_epoll(struct epcarry *c, int ep, uint64_t ino)
{
	char path[48], buf[4096 + 1];
	size_t have = 0;
	int fd;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", ep);
	fd = open_ro(path, 0);
	if (fd < 0)
		return;
	for (;;) {
		ssize_t r = R.read(fd, buf + have, sizeof(buf) - 1 - have);
		char *l, *nl;

		if (r <= 0)
			break;
		have += (size_t)r;
		buf[have] = 0;
		for (l = buf; (nl = strchr(l, '\n')); l = nl + 1) {
			*nl = 0;
			take_line(c, ep, l, ino);
		}
		have -= (size_t)(l - buf);
		memmove(buf, l, have);
		if (have == sizeof(buf) - 1)
			have = 0; /* no line is this long */
	}
	R.close(fd);
}

void epcarry_save(struct epcarry *c, uint64_t ino)
{
	char buf[4096], link[32];
	int d;

	c->n = 0;
	if (!ino)
		return;
	d = open_ro("/proc/self/fd", O_DIRECTORY);
	if (d < 0)
		return;
	for (;;) {
		long n = syscall(SYS_getdents64, d, buf, sizeof(buf)), off;

		if (n <= 0)
			break;
		for (off = 0; off < n;) {
			struct dirent64_raw *e = (struct dirent64_raw *)(buf + off);
			ssize_t k;

			off += e->reclen;
			if (e->name[0] < '0' || e->name[0] > '9')
				continue;
			k = readlinkat(d, e->name, link, sizeof(link) - 1);
			if (k <= 0)
				continue;
			link[k] = 0;
			if (!strcmp(link, "anon_inode:[eventpoll]"))
				scan_epoll(c, atoi(e->name), ino);
		}
	}
	R.close(d);
}

void epcarry_restore(const struct epcarry *c)
{
	int i;

	for (i = 0; i < c->n; i++) {
		struct epoll_event ev = c->r[i].ev;

		if (R.epoll_ctl(c->r[i].epfd, EPOLL_CTL_ADD, c->r[i].fd, &ev) < 0 && errno != EEXIST)
			debug("nuse: fd %d: re-adding it to epoll fd %d: %s", c->r[i].fd, c->r[i].epfd,
			      strerror(errno));
	}
}

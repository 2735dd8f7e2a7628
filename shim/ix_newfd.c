/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ix_newfd.c - the interposers of calls that give the program a new fd and
 * are not socket()/accept()/dup*()/fcntl() (those are in ix_socket.c,
 * ix_fd.c and ix_opts.c): open, openat, creat (and their 64-bit and
 * FORTIFY_SOURCE variants), pipe, pipe2, socketpair, eventfd,
 * timerfd_create, signalfd, epoll_create(1), memfd_create, inotify_init(1),
 * mkstemp/mkostemp, and fopen, tmpfile, popen for the fd under the FILE.
 * Each is the real call, then fd_fresh() on what it returned (stale.h):
 * one array load, unless the number still names a socket closed behind
 * the shim's back.  The real functions are resolved here with
 * dlsym(RTLD_NEXT), once, on first use.
 */
#include "nuse.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>

#include "stale.h"

/* The real f, looked up once (a race only looks it up twice). */
#define REAL_NEXT(f, type)                                  \
	static __typeof__(type) real_##f;                   \
	if (unlikely(!real_##f))                            \
		real_##f = (type)dlsym(RTLD_NEXT, #f);      \
	if (unlikely(!real_##f))                            \
		return (int)fail(ENOSYS)

#define REAL_NEXT_FILE(f, type)                             \
	static __typeof__(type) real_##f;                   \
	if (unlikely(!real_##f))                            \
		real_##f = (type)dlsym(RTLD_NEXT, #f);      \
	if (unlikely(!real_##f)) {                          \
		errno = ENOSYS;                             \
		return NULL;                                \
	}

/* open's mode is there only with O_CREAT or O_TMPFILE. */
static mode_t open_mode(int flags, va_list ap)
{
	if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE)
		return (mode_t)va_arg(ap, int);
	return 0;
}

EXPORT int open(const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;

	REAL_NEXT(open, int (*)(const char *, int, ...));
	va_start(ap, flags);
	mode = open_mode(flags, ap);
	va_end(ap);
	return fd_fresh(real_open(path, flags, mode));
}

EXPORT int open64(const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;

	REAL_NEXT(open64, int (*)(const char *, int, ...));
	va_start(ap, flags);
	mode = open_mode(flags, ap);
	va_end(ap);
	return fd_fresh(real_open64(path, flags, mode));
}

EXPORT int openat(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;

	REAL_NEXT(openat, int (*)(int, const char *, int, ...));
	va_start(ap, flags);
	mode = open_mode(flags, ap);
	va_end(ap);
	return fd_fresh(real_openat(dirfd, path, flags, mode));
}

EXPORT int openat64(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;

	REAL_NEXT(openat64, int (*)(int, const char *, int, ...));
	va_start(ap, flags);
	mode = open_mode(flags, ap);
	va_end(ap);
	return fd_fresh(real_openat64(dirfd, path, flags, mode));
}

/* What _FORTIFY_SOURCE's open() calls when it cannot check the flags. */
EXPORT int __open_2(const char *path, int flags)
{
	REAL_NEXT(__open_2, int (*)(const char *, int));
	return fd_fresh(real___open_2(path, flags));
}

EXPORT int __open64_2(const char *path, int flags)
{
	REAL_NEXT(__open64_2, int (*)(const char *, int));
	return fd_fresh(real___open64_2(path, flags));
}

EXPORT int __openat_2(int dirfd, const char *path, int flags)
{
	REAL_NEXT(__openat_2, int (*)(int, const char *, int));
	return fd_fresh(real___openat_2(dirfd, path, flags));
}

EXPORT int __openat64_2(int dirfd, const char *path, int flags)
{
	REAL_NEXT(__openat64_2, int (*)(int, const char *, int));
	return fd_fresh(real___openat64_2(dirfd, path, flags));
}

EXPORT int creat(const char *path, mode_t mode)
{
	REAL_NEXT(creat, int (*)(const char *, mode_t));
	return fd_fresh(real_creat(path, mode));
}

EXPORT int creat64(const char *path, mode_t mode)
{
	REAL_NEXT(creat64, int (*)(const char *, mode_t));
	return fd_fresh(real_creat64(path, mode));
}

static int fresh_pair(int r, int fds[2])
{
	if (r == 0) {
		fd_fresh(fds[0]);
		fd_fresh(fds[1]);
	}
	return r;
}

EXPORT int pipe(int fds[2])
{
	REAL_NEXT(pipe, int (*)(int[2]));
	return fresh_pair(real_pipe(fds), fds);
}

EXPORT int pipe2(int fds[2], int flags)
{
	REAL_NEXT(pipe2, int (*)(int[2], int));
	return fresh_pair(real_pipe2(fds, flags), fds);
}

/* Also the shim's own socketpairs (decide.c, control.c's accept). */
EXPORT int socketpair(int domain, int type, int protocol, int sv[2])
{
	REAL_NEXT(socketpair, int (*)(int, int, int, int[2]));
	return fresh_pair(real_socketpair(domain, type, protocol, sv), sv);
}

EXPORT int eventfd(unsigned int initval, int flags)
{
	REAL_NEXT(eventfd, int (*)(unsigned int, int));
	return fd_fresh(real_eventfd(initval, flags));
}

EXPORT int timerfd_create(int clockid, int flags)
{
	REAL_NEXT(timerfd_create, int (*)(int, int));
	return fd_fresh(real_timerfd_create(clockid, flags));
}

EXPORT int signalfd(int fd, const sigset_t *mask, int flags)
{
	REAL_NEXT(signalfd, int (*)(int, const sigset_t *, int));
	if (fd >= 0)
		return real_signalfd(fd, mask, flags); /* changes an existing one */
	return fd_fresh(real_signalfd(fd, mask, flags));
}

EXPORT int epoll_create(int size)
{
	REAL_NEXT(epoll_create, int (*)(int));
	return fd_fresh(real_epoll_create(size));
}

EXPORT int epoll_create1(int flags)
{
	REAL_NEXT(epoll_create1, int (*)(int));
	return fd_fresh(real_epoll_create1(flags));
}

EXPORT int memfd_create(const char *name, unsigned int flags)
{
	REAL_NEXT(memfd_create, int (*)(const char *, unsigned int));
	return fd_fresh(real_memfd_create(name, flags));
}

EXPORT int inotify_init(void)
{
	REAL_NEXT(inotify_init, int (*)(void));
	return fd_fresh(real_inotify_init());
}

EXPORT int inotify_init1(int flags)
{
	REAL_NEXT(inotify_init1, int (*)(int));
	return fd_fresh(real_inotify_init1(flags));
}

EXPORT int mkstemp(char *tmpl)
{
	REAL_NEXT(mkstemp, int (*)(char *));
	return fd_fresh(real_mkstemp(tmpl));
}

EXPORT int mkostemp(char *tmpl, int flags)
{
	REAL_NEXT(mkostemp, int (*)(char *, int));
	return fd_fresh(real_mkostemp(tmpl, flags));
}

/* stdio opens inside libc, where open() is not ours: the FILE's fd. */
static FILE *fresh_file(FILE *f)
{
	if (f)
		fd_fresh(fileno(f));
	return f;
}

EXPORT FILE *fopen(const char *path, const char *mode)
{
	REAL_NEXT_FILE(fopen, FILE *(*)(const char *, const char *));
	return fresh_file(real_fopen(path, mode));
}

EXPORT FILE *fopen64(const char *path, const char *mode)
{
	REAL_NEXT_FILE(fopen64, FILE *(*)(const char *, const char *));
	return fresh_file(real_fopen64(path, mode));
}

EXPORT FILE *tmpfile(void)
{
	REAL_NEXT_FILE(tmpfile, FILE *(*)(void));
	return fresh_file(real_tmpfile());
}

EXPORT FILE *popen(const char *cmd, const char *mode)
{
	REAL_NEXT_FILE(popen, FILE *(*)(const char *, const char *));
	return fresh_file(real_popen(cmd, mode));
}

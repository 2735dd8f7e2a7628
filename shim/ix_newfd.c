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

#include "lazy.h"
#include "stale.h"

/* The real f, looked up once (two threads racing both look it up and
 * store the same pointer). */
#define NEXT(f, type)                                                          \
	static __typeof__(type) real_##f;                                      \
	__typeof__(type) f##_p = __atomic_load_n(&real_##f, __ATOMIC_RELAXED); \
	if (unlikely(!f##_p)) {                                                \
		f##_p = (type)dlsym(RTLD_NEXT, #f);                            \
		__atomic_store_n(&real_##f, f##_p, __ATOMIC_RELAXED);          \
	}

#define REAL_NEXT(f, type)       \
	NEXT(f, type)            \
	if (unlikely(!f##_p))    \
		return (int)fail(ENOSYS)

#define REAL_NEXT_FILE(f, type)  \
	NEXT(f, type)            \
	if (unlikely(!f##_p)) {  \
		errno = ENOSYS;  \
		return NULL;     \
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
	return fd_fresh(open_p(path, flags, mode));
}

EXPORT int open64(const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;

	REAL_NEXT(open64, int (*)(const char *, int, ...));
	va_start(ap, flags);
	mode = open_mode(flags, ap);
	va_end(ap);
	return fd_fresh(open64_p(path, flags, mode));
}

EXPORT int openat(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;

	REAL_NEXT(openat, int (*)(int, const char *, int, ...));
	va_start(ap, flags);
	mode = open_mode(flags, ap);
	va_end(ap);
	return fd_fresh(openat_p(dirfd, path, flags, mode));
}

EXPORT int openat64(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;

	REAL_NEXT(openat64, int (*)(int, const char *, int, ...));
	va_start(ap, flags);
	mode = open_mode(flags, ap);
	va_end(ap);
	return fd_fresh(openat64_p(dirfd, path, flags, mode));
}

/* What _FORTIFY_SOURCE's open() calls when it cannot check the flags. */
EXPORT int __open_2(const char *path, int flags)
{
	REAL_NEXT(__open_2, int (*)(const char *, int));
	return fd_fresh(__open_2_p(path, flags));
}

EXPORT int __open64_2(const char *path, int flags)
{
	REAL_NEXT(__open64_2, int (*)(const char *, int));
	return fd_fresh(__open64_2_p(path, flags));
}

EXPORT int __openat_2(int dirfd, const char *path, int flags)
{
	REAL_NEXT(__openat_2, int (*)(int, const char *, int));
	return fd_fresh(__openat_2_p(dirfd, path, flags));
}

EXPORT int __openat64_2(int dirfd, const char *path, int flags)
{
	REAL_NEXT(__openat64_2, int (*)(int, const char *, int));
	return fd_fresh(__openat64_2_p(dirfd, path, flags));
}

EXPORT int creat(const char *path, mode_t mode)
{
	REAL_NEXT(creat, int (*)(const char *, mode_t));
	return fd_fresh(creat_p(path, mode));
}

EXPORT int creat64(const char *path, mode_t mode)
{
	REAL_NEXT(creat64, int (*)(const char *, mode_t));
	return fd_fresh(creat64_p(path, mode));
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
	return fresh_pair(pipe_p(fds), fds);
}

EXPORT int pipe2(int fds[2], int flags)
{
	REAL_NEXT(pipe2, int (*)(int[2], int));
	return fresh_pair(pipe2_p(fds, flags), fds);
}

/* Also the shim's own socketpairs (decide.c, control.c's accept). */
EXPORT int socketpair(int domain, int type, int protocol, int sv[2])
{
	REAL_NEXT(socketpair, int (*)(int, int, int, int[2]));
	return fresh_pair(socketpair_p(domain, type, protocol, sv), sv);
}

EXPORT int eventfd(unsigned int initval, int flags)
{
	REAL_NEXT(eventfd, int (*)(unsigned int, int));
	return fd_fresh(eventfd_p(initval, flags));
}

EXPORT int timerfd_create(int clockid, int flags)
{
	REAL_NEXT(timerfd_create, int (*)(int, int));
	return fd_fresh(timerfd_create_p(clockid, flags));
}

EXPORT int signalfd(int fd, const sigset_t *mask, int flags)
{
	REAL_NEXT(signalfd, int (*)(int, const sigset_t *, int));
	if (fd >= 0)
		return signalfd_p(fd, mask, flags); /* changes an existing one */
	return fd_fresh(signalfd_p(fd, mask, flags));
}

EXPORT int epoll_create(int size)
{
	int r;

	REAL_NEXT(epoll_create, int (*)(int));
	r = fd_fresh(epoll_create_p(size));
	if (r >= 0)
		lazy_epoll_created(r);
	return r;
}

EXPORT int epoll_create1(int flags)
{
	int r;

	REAL_NEXT(epoll_create1, int (*)(int));
	r = fd_fresh(epoll_create1_p(flags));
	if (r >= 0)
		lazy_epoll_created(r);
	return r;
}

EXPORT int memfd_create(const char *name, unsigned int flags)
{
	REAL_NEXT(memfd_create, int (*)(const char *, unsigned int));
	return fd_fresh(memfd_create_p(name, flags));
}

EXPORT int inotify_init(void)
{
	REAL_NEXT(inotify_init, int (*)(void));
	return fd_fresh(inotify_init_p());
}

EXPORT int inotify_init1(int flags)
{
	REAL_NEXT(inotify_init1, int (*)(int));
	return fd_fresh(inotify_init1_p(flags));
}

EXPORT int mkstemp(char *tmpl)
{
	REAL_NEXT(mkstemp, int (*)(char *));
	return fd_fresh(mkstemp_p(tmpl));
}

EXPORT int mkostemp(char *tmpl, int flags)
{
	REAL_NEXT(mkostemp, int (*)(char *, int));
	return fd_fresh(mkostemp_p(tmpl, flags));
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
	return fresh_file(fopen_p(path, mode));
}

EXPORT FILE *fopen64(const char *path, const char *mode)
{
	REAL_NEXT_FILE(fopen64, FILE *(*)(const char *, const char *));
	return fresh_file(fopen64_p(path, mode));
}

EXPORT FILE *tmpfile(void)
{
	REAL_NEXT_FILE(tmpfile, FILE *(*)(void));
	return fresh_file(tmpfile_p());
}

EXPORT FILE *popen(const char *cmd, const char *mode)
{
	REAL_NEXT_FILE(popen, FILE *(*)(const char *, const char *));
	lazy_all_loud(); /* the child inherits our fds (lazy.h) */
	return fresh_file(popen_p(cmd, mode));
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nuse.c - libnuse.so: the LD_PRELOAD shim.  All of it is C; the Go in
 * shim.go only makes cgo build a shared library.  shim/PROTOCOL.md is the
 * contract with the daemon; this file follows it.
 *
 * Every TCP socket starts as a real kernel socket, "undecided", and is
 * recorded in an array indexed by fd.  At bind/listen/connect the rules
 * decide: the kernel (the entry is dropped and the fd is never looked at
 * again) or NUSE (a socketpair end is dup3'd over the fd and the socket
 * lives in the daemon).  Any other fd costs one array load per call.
 *
 * Choices PROTOCOL.md leaves open, made here:
 *  - Readiness byte: the daemon writes one byte per sig NONE->SET, so the
 *    shim reads exactly one byte per SET->NONE (waiting briefly if it is
 *    still in flight).  Draining more could eat the byte of a newer SET.
 *  - CLOSE is awaited like any command; listen() without bind() sends a
 *    BIND of the wildcard first; a bind done before the decision is replayed.
 *  - Options the daemon does not carry (ENOPROTOOPT at a known level) are
 *    accepted, as Linux would; SO_RCVTIMEO/SNDTIMEO/BINDTODEVICE stay here.
 *  - fork(): children share the session.  Control exchanges are serialized
 *    across processes (robust process-shared mutex) and a socket's CLOSE is
 *    sent by the last process that lets go of it (shared per-slot counts,
 *    raised at fork, lowered at close, exec and exit).
 *  - Every blocking wait re-checks in slices of at most 1 s and reminds the
 *    daemon of the socket after an idle slice: a lost event costs a slice.
 */
#include "nuse.h"

#include <arpa/inet.h>

#include <dlfcn.h>

#include <errno.h>

#include <fcntl.h>

#include <limits.h>

#include <linux/futex.h>

#include <net/if.h>

#include <netinet/in.h>

#include <netinet/tcp.h>

#include <poll.h>

#include <sched.h>

#include <signal.h>

#include <stdarg.h>

#include <stdio.h>

#include <stdlib.h>

#include <string.h>

#include <sys/ioctl.h>

#include <sys/mman.h>

#include <sys/resource.h>

#include <sys/sendfile.h>

#include <sys/syscall.h>

#include <sys/un.h>

#include <time.h>

#include <unistd.h>

#include "cmd.h"
#include "control.h"

#include "data.h"
#include "decide.h"

#include "fdtab.h"
#include "procs.h"

#include "session.h"

#include "ring.h"

#include "rules.h"

/* ---- the interposers ------------------------------------------------ */

EXPORT int socket(int domain, int type, int protocol)
{
	int fd, base = type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC);
	struct nsock *s;

	REAL(socket);
	fd = R.socket(domain, type, protocol);
	if (fd < 0 || (domain != AF_INET && domain != AF_INET6) || base != SOCK_STREAM ||
	    (protocol != 0 && protocol != IPPROTO_TCP) || fd >= g_tabmax || in_vfork_child())
		return fd;
	s = nsock_new(domain);
	if (!s)
		return fd;
	s->nonblock = !!(type & SOCK_NONBLOCK);
	pthread_mutex_lock(&g_tablock);
	tab_put_locked(fd, s);
	pthread_mutex_unlock(&g_tablock);
	return fd;
}

EXPORT int accept4(int fd, struct sockaddr *sa, socklen_t *len, int flags)
{
	struct nsock *s;

	REAL(accept4);
	s = fd_nuse(fd);
	if (likely(!s))
		return R.accept4(fd, sa, len, flags);
	return nuse_accept(s, fd, sa, len, flags);
}

EXPORT int accept(int fd, struct sockaddr *sa, socklen_t *len)
{
	struct nsock *s;

	REAL(accept);
	s = fd_nuse(fd);
	if (likely(!s))
		return R.accept(fd, sa, len);
	return nuse_accept(s, fd, sa, len, 0);
}

EXPORT ssize_t send(int fd, const void *buf, size_t n, int flags)
{
	struct nsock *s;
	struct iovec iov;

	REAL(send);
	s = fd_nuse(fd);
	if (likely(!s))
		return R.send(fd, buf, n, flags);
	iov.iov_base = (void *)buf;
	iov.iov_len = n;
	return data_send(s, fd, &iov, 1, flags);
}

EXPORT ssize_t sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *sa, socklen_t len)
{
	struct nsock *s;
	struct iovec iov;

	REAL(sendto);
	s = fd_nuse(fd);
	if (likely(!s))
		return R.sendto(fd, buf, n, flags, sa, len);
	iov.iov_base = (void *)buf;
	iov.iov_len = n;
	return data_send(s, fd, &iov, 1, flags); /* TCP ignores the address */
}

EXPORT ssize_t sendmsg(int fd, const struct msghdr *m, int flags)
{
	struct nsock *s;

	REAL(sendmsg);
	s = fd_nuse(fd);
	if (likely(!s))
		return R.sendmsg(fd, m, flags);
	if (!m || m->msg_iovlen > IOV_MAX)
		return fail(m ? EMSGSIZE : EFAULT);
	return data_send(s, fd, m->msg_iov, (int)m->msg_iovlen, flags);
}

EXPORT ssize_t recv(int fd, void *buf, size_t n, int flags)
{
	struct nsock *s;
	struct iovec iov;

	REAL(recv);
	s = fd_nuse(fd);
	if (likely(!s))
		return R.recv(fd, buf, n, flags);
	iov.iov_base = buf;
	iov.iov_len = n;
	return data_recv(s, fd, &iov, 1, flags);
}

EXPORT ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *sa, socklen_t *len)
{
	struct nsock *s;
	struct iovec iov;

	REAL(recvfrom);
	s = fd_nuse(fd);
	if (likely(!s))
		return R.recvfrom(fd, buf, n, flags, sa, len);
	iov.iov_base = buf;
	iov.iov_len = n;
	if (len)
		*len = 0; /* TCP gives no source address */
	return data_recv(s, fd, &iov, 1, flags);
}

EXPORT ssize_t recvmsg(int fd, struct msghdr *m, int flags)
{
	struct nsock *s;
	ssize_t r;

	REAL(recvmsg);
	s = fd_nuse(fd);
	if (likely(!s))
		return R.recvmsg(fd, m, flags);
	if (!m || m->msg_iovlen > IOV_MAX)
		return fail(m ? EMSGSIZE : EFAULT);
	r = data_recv(s, fd, m->msg_iov, (int)m->msg_iovlen, flags);
	if (r >= 0) {
		m->msg_namelen = 0;
		m->msg_controllen = 0;
		m->msg_flags = 0;
	}
	return r;
}

EXPORT ssize_t read(int fd, void *buf, size_t n)
{
	struct nsock *s;
	struct iovec iov;

	REAL(read);
	s = fd_nuse(fd);
	if (likely(!s))
		return R.read(fd, buf, n);
	iov.iov_base = buf;
	iov.iov_len = n;
	return data_recv(s, fd, &iov, 1, 0);
}

EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
	struct nsock *s;
	struct iovec iov;

	REAL(write);
	s = fd_nuse(fd);
	if (likely(!s))
		return R.write(fd, buf, n);
	if (n == 0)
		return 0;
	iov.iov_base = (void *)buf;
	iov.iov_len = n;
	return data_send(s, fd, &iov, 1, 0);
}

EXPORT ssize_t readv(int fd, const struct iovec *iov, int cnt)
{
	struct nsock *s;

	REAL(readv);
	s = fd_nuse(fd);
	if (likely(!s))
		return R.readv(fd, iov, cnt);
	if (cnt < 0 || cnt > IOV_MAX)
		return fail(EINVAL);
	return data_recv(s, fd, iov, cnt, 0);
}

EXPORT ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
	struct nsock *s;

	REAL(writev);
	s = fd_nuse(fd);
	if (likely(!s))
		return R.writev(fd, iov, cnt);
	if (cnt < 0 || cnt > IOV_MAX)
		return fail(EINVAL);
	return data_send(s, fd, iov, cnt, 0);
}

/* FORTIFY_SOURCE builds call these instead of read/recv/recvfrom. */
EXPORT ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
	REAL(read_chk);
	if (likely(!fd_nuse(fd)) || n > buflen)
		return R.read_chk(fd, buf, n, buflen);
	return read(fd, buf, n);
}

EXPORT ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen, int flags)
{
	REAL(recv_chk);
	if (likely(!fd_nuse(fd)) || n > buflen)
		return R.recv_chk(fd, buf, n, buflen, flags);
	return recv(fd, buf, n, flags);
}

EXPORT ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t buflen, int flags, struct sockaddr *sa,
			      socklen_t *len)
{
	REAL(recvfrom_chk);
	if (likely(!fd_nuse(fd)) || n > buflen)
		return R.recvfrom_chk(fd, buf, n, buflen, flags, sa, len);
	return recvfrom(fd, buf, n, flags, sa, len);
}

EXPORT ssize_t sendfile(int out, int in, off_t *off, size_t count)
{
	struct nsock *s;

	REAL(sendfile);
	s = fd_nuse(out);
	if (likely(!s))
		return R.sendfile(out, in, off, count);
	return data_sendfile(s, out, in, off, count);
}

EXPORT ssize_t sendfile64(int out, int in, off_t *off, size_t count)
{
	struct nsock *s;

	REAL(sendfile64);
	s = fd_nuse(out);
	if (likely(!s))
		return R.sendfile64(out, in, off, count);
	return data_sendfile(s, out, in, off, count);
}

EXPORT int close(int fd)
{
	REAL(close);
	if (unlikely(fd_get(fd) != NULL) && !in_vfork_child())
		drop_fd(fd);
	else if (unlikely(fd == S.ctl && fd >= 0)) {
		/* closefrom()-style sweeps must not take our session with them */
		return 0;
	}
	return R.close(fd);
}

EXPORT int getsockname(int fd, struct sockaddr *sa, socklen_t *len)
{
	struct nsock *s;

	REAL(getsockname);
	s = fd_nuse(fd);
	if (likely(!s))
		return R.getsockname(fd, sa, len);
	return nuse_name(s, NUSE_OP_GETSOCKNAME, sa, len);
}

EXPORT int getpeername(int fd, struct sockaddr *sa, socklen_t *len)
{
	struct nsock *s;

	REAL(getpeername);
	s = fd_nuse(fd);
	if (likely(!s))
		return R.getpeername(fd, sa, len);
	return nuse_name(s, NUSE_OP_GETPEERNAME, sa, len);
}

static int nuse_fcntl(int (*real)(int, int, ...), int fd, int cmd, void *arg)
{
	struct nsock *s = fd_get(fd);
	int r;

	if (likely(!s))
		return real(fd, cmd, arg);
	switch (cmd) {
	case F_DUPFD:
	case F_DUPFD_CLOEXEC:
		r = real(fd, cmd, arg);
		if (r >= 0)
			dup_track(fd, r);
		return r;
	case F_SETFL:
		r = real(fd, cmd, arg);
		if (r == 0)
			s->nonblock = !!((long)arg & O_NONBLOCK);
		return r;
	default:
		return real(fd, cmd, arg);
	}
}

EXPORT int fcntl(int fd, int cmd, ...)
{
	va_list ap;
	void *arg;

	REAL(fcntl);
	va_start(ap, cmd);
	arg = va_arg(ap, void *);
	va_end(ap);
	return nuse_fcntl(R.fcntl, fd, cmd, arg);
}

EXPORT int fcntl64(int fd, int cmd, ...)
{
	va_list ap;
	void *arg;

	REAL(fcntl64);
	va_start(ap, cmd);
	arg = va_arg(ap, void *);
	va_end(ap);
	return nuse_fcntl(R.fcntl64 ? R.fcntl64 : R.fcntl, fd, cmd, arg);
}

EXPORT int ioctl(int fd, unsigned long req, ...)
{
	struct nsock *s;
	va_list ap;
	void *arg;
	int r;

	REAL(ioctl);
	va_start(ap, req);
	arg = va_arg(ap, void *);
	va_end(ap);
	s = fd_get(fd);
	if (likely(!s))
		return R.ioctl(fd, req, arg);
	if (req == FIONBIO) {
		r = R.ioctl(fd, req, arg);
		if (r == 0 && arg)
			s->nonblock = !!*(int *)arg;
		return r;
	}
	if (s->kind == K_NUSE && (req == FIONREAD || req == TIOCOUTQ)) {
		uint64_t used;

		if (!arg)
			return (int)fail(EFAULT);
		used = data_queued(s, req == FIONREAD);
		*(int *)arg = used > INT_MAX ? INT_MAX : (int)used;
		return 0;
	}
	return R.ioctl(fd, req, arg);
}

EXPORT int dup(int fd)
{
	int r;

	REAL(dup);
	r = R.dup(fd);
	if (r >= 0 && unlikely(fd_get(fd) != NULL))
		dup_track(fd, r);
	return r;
}

EXPORT int dup2(int fd, int nfd)
{
	int r;

	REAL(dup2);
	if (fd != nfd && unlikely(fd_get(nfd) != NULL) && R.fcntl(fd, F_GETFD) >= 0 && !in_vfork_child())
		drop_fd(nfd);
	r = R.dup2(fd, nfd);
	if (r >= 0 && unlikely(fd_get(fd) != NULL))
		dup_track(fd, r);
	return r;
}

EXPORT int dup3(int fd, int nfd, int flags)
{
	int r;

	REAL(dup3);
	if (fd != nfd && unlikely(fd_get(nfd) != NULL) && R.fcntl(fd, F_GETFD) >= 0 && !in_vfork_child())
		drop_fd(nfd);
	r = R.dup3(fd, nfd, flags);
	if (r >= 0 && unlikely(fd_get(fd) != NULL))
		dup_track(fd, r);
	return r;
}

/*
 * close_range()/closefrom(): sweeps by daemons and by children before exec.
 * Tracked sockets in the range are let go of as by close(), and the control
 * socket is kept out of the sweep.
 */
EXPORT int close_range(unsigned first, unsigned last, int flags)
{
	unsigned i, hi;
	int r;

	REAL(close_range);
	if (!(flags & CLOSE_RANGE_CLOEXEC) && first < (unsigned)g_tabhi && !in_vfork_child()) {
		hi = last < (unsigned)g_tabhi - 1 ? last : (unsigned)g_tabhi - 1;
		for (i = first; i <= hi; i++)
			if (fd_get((int)i))
				drop_fd((int)i);
	}
	if (S.ctl >= 0 && (unsigned)S.ctl >= first && (unsigned)S.ctl <= last) {
		r = 0;
		if ((unsigned)S.ctl > first)
			r = R.close_range(first, (unsigned)S.ctl - 1, flags);
		if (r == 0 && (unsigned)S.ctl < last)
			r = R.close_range((unsigned)S.ctl + 1, last, flags);
		return r;
	}
	return R.close_range(first, last, flags);
}

EXPORT void closefrom(int lowfd)
{
	if (lowfd < 0)
		lowfd = 0;
	close_range((unsigned)lowfd, ~0u, 0);
}

/* ---- exec and exit: letting go of sockets shared with other processes -- */

extern char **environ;

EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
	int p, r;

	REAL(execve);
	p = exec_prepare();
	r = R.execve(path, argv, envp);
	exec_failed(p);
	return r;
}

EXPORT int execv(const char *path, char *const argv[])
{
	return execve(path, argv, environ);
}

EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
	int p, r;

	REAL(execvpe);
	p = exec_prepare();
	r = R.execvpe(file, argv, envp);
	exec_failed(p);
	return r;
}

EXPORT int execvp(const char *file, char *const argv[])
{
	return execvpe(file, argv, environ);
}

EXPORT int fexecve(int fd, char *const argv[], char *const envp[])
{
	int p, r;

	REAL(fexecve);
	p = exec_prepare();
	r = R.fexecve(fd, argv, envp);
	exec_failed(p);
	return r;
}

#define EXEC_MAX_ARGS 65536

/*
 * execl*(): glibc's versions call execve internally, past our interposer.
 * The argument vector lives on the stack, sized by a first pass (no static
 * TLS: every thread of the program would carry it).
 */
static int count_args(const char *arg, va_list ap)
{
	va_list aq;
	int n = 1;

	va_copy(aq, ap);
	while (arg && n <= EXEC_MAX_ARGS) {
		arg = va_arg(aq, const char *);
		n++;
	}
	va_end(aq);
	return n; /* including the terminating NULL */
}

static void fill_args(const char *arg, va_list ap, char **argv, int n, char ***envp)
{
	int i = 0;

	argv[i++] = (char *)arg;
	while (arg && i < n) {
		arg = va_arg(ap, const char *);
		argv[i++] = (char *)arg;
	}
	argv[n - 1] = NULL;
	if (envp)
		*envp = va_arg(ap, char **);
}

#define EXECL_BODY(call, want_envp)                                 \
	va_list ap;                                                 \
	char **envp = environ;                                      \
	int n;                                                      \
                                                                    \
	va_start(ap, arg);                                          \
	n = count_args(arg, ap);                                    \
	if (n > EXEC_MAX_ARGS) {                                    \
		va_end(ap);                                         \
		errno = E2BIG;                                      \
		return -1;                                          \
	}                                                           \
	{                                                           \
		char *argv[n];                                      \
                                                                    \
		fill_args(arg, ap, argv, n, want_envp ? &envp : NULL); \
		va_end(ap);                                         \
		return call;                                        \
	}

EXPORT int execl(const char *path, const char *arg, ...)
{
	EXECL_BODY(execve(path, argv, envp), 0)
}

EXPORT int execle(const char *path, const char *arg, ...)
{
	EXECL_BODY(execve(path, argv, envp), 1)
}

EXPORT int execlp(const char *file, const char *arg, ...)
{
	EXECL_BODY(execvpe(file, argv, envp), 0)
}

/* ---- setup ------------------------------------------------------------ */

__attribute__((constructor)) static void nuse_init(void)
{
	struct rlimit rl;
	const char *e;
	size_t max = 65536;
	void *p;

	resolve();
	g_mypid = getpid();
	e = getenv("NUSE_DEBUG");
	g_debug = e && *e && strcmp(e, "0");
	e = getenv("NUSE_SOCK");
	if (e && *e)
		g_sock_path = e;
	e = getenv("NUSE_DEV");
	if (e && *e && strlen(e) < sizeof(g_dev))
		strcpy(g_dev, e);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max != RLIM_INFINITY && rl.rlim_max > max)
		max = rl.rlim_max;
	if (max > (1u << 20))
		max = 1u << 20;
	p = mmap(NULL, max * sizeof(*g_tab), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1,
		 0);
	if (p == MAP_FAILED) {
		say("nuse: cannot allocate the fd table; everything stays in the kernel");
		return;
	}
	g_tab = p;
	load_rules();
	pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
	g_tabmax = (int)max; /* last: from here on sockets are tracked */
}

EXPORT int bind(int fd, const struct sockaddr *sa, socklen_t len)
{
	struct nsock *s;

	REAL(bind);
	s = fd_get(fd);
	if (likely(!s) || !sa)
		return R.bind(fd, sa, len);
	return sock_bind(s, fd, sa, len);
}

EXPORT int listen(int fd, int backlog)
{
	struct nsock *s;

	REAL(listen);
	s = fd_get(fd);
	if (likely(!s))
		return R.listen(fd, backlog);
	return sock_listen(s, fd, backlog);
}

EXPORT int connect(int fd, const struct sockaddr *sa, socklen_t len)
{
	struct nsock *s;

	REAL(connect);
	s = fd_get(fd);
	if (likely(!s) || !sa)
		return R.connect(fd, sa, len);
	return sock_connect(s, fd, sa, len);
}

EXPORT int shutdown(int fd, int how)
{
	struct nsock *s;

	REAL(shutdown);
	s = fd_nuse(fd);
	if (likely(!s))
		return R.shutdown(fd, how);
	if (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR)
		return (int)fail(EINVAL);
	return nuse_shutdown(s, how);
}

EXPORT int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
	struct nsock *s;

	REAL(setsockopt);
	s = fd_get(fd);
	if (likely(!s))
		return R.setsockopt(fd, level, name, val, len);
	if (s->kind == K_NUSE)
		return ret_err(nuse_setopt(s, level, name, val, len));
	return undecided_setsockopt(s, fd, level, name, val, len);
}

EXPORT int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
	struct nsock *s;

	REAL(getsockopt);
	s = fd_get(fd);
	if (likely(!s) || s->kind != K_NUSE) {
		if (s && level == SOL_SOCKET && name == SO_BINDTODEVICE && s->bindtodev && val && len)
			return put_dev(val, len);
		return R.getsockopt(fd, level, name, val, len);
	}
	return nuse_getsockopt(s, level, name, val, len);
}

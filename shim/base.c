/* SPDX-License-Identifier: Apache-2.0 */
/*
 * base.c - the base of libnuse.so (nuse.h): the table of real libc
 * functions and its resolution, the settings read at load, logging, and
 * the memory of the tables indexed by fd number.  It calls only libc.
 */
#include "nuse.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

struct nuse_real R;

int g_debug;

char g_dev[IF_NAMESIZE + 1] = "nuse0";

const char *g_sock_path = NUSE_DEFAULT_SOCK_PATH;

void say(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n, e = errno;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0) {
		errno = e;
		return;
	}
	if (n > (int)sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	if (R.write)
		(void)!R.write(2, buf, (size_t)n);
	errno = e;
}

const char *fmt_addr(const struct sockaddr *sa, socklen_t len, char *buf, size_t n)
{
	char a[INET6_ADDRSTRLEN];

	if (sa && sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *in = (const void *)sa;
		inet_ntop(AF_INET, &in->sin_addr, a, sizeof(a));
		snprintf(buf, n, "%s:%u", a, ntohs(in->sin_port));
	} else if (sa && sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *in6 = (const void *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, a, sizeof(a));
		snprintf(buf, n, "[%s]:%u", a, ntohs(in6->sin6_port));
	} else {
		snprintf(buf, n, "(family %d)", sa ? sa->sa_family : -1);
	}
	return buf;
}

void raise_sigpipe(void)
{
	int e = errno;

	syscall(SYS_tgkill, getpid(), (pid_t)syscall(SYS_gettid), SIGPIPE);
	errno = e;
}

#define SYM(f) R.f = dlsym(RTLD_NEXT, #f)

void resolve(void)
{
	SYM(socket);
	SYM(bind);
	SYM(listen);
	SYM(accept);
	SYM(accept4);
	SYM(connect);
	SYM(send);
	SYM(sendto);
	SYM(sendmsg);
	SYM(recv);
	SYM(recvfrom);
	SYM(recvmsg);
	SYM(sendmmsg);
	SYM(recvmmsg);
	SYM(read);
	SYM(write);
	SYM(readv);
	SYM(writev);
	SYM(close);
	SYM(shutdown);
	SYM(getsockname);
	SYM(getpeername);
	SYM(setsockopt);
	SYM(getsockopt);
	SYM(fcntl);
	SYM(fcntl64);
	SYM(ioctl);
	SYM(dup);
	SYM(dup2);
	SYM(dup3);
	SYM(sendfile);
	SYM(sendfile64);
	SYM(splice);
	SYM(vdprintf);
	SYM(sigaction);
	SYM(close_range);
	SYM(epoll_ctl);
	SYM(epoll_wait);
	SYM(epoll_pwait);
	SYM(epoll_pwait2); /* NULL before glibc 2.35: ix_wait.c makes the system call */
	SYM(poll);
	SYM(ppoll);
	SYM(select);
	SYM(pselect);
	SYM(execve);
	SYM(execvpe);
	SYM(fexecve);
	R.read_chk = dlsym(RTLD_NEXT, "__read_chk");
	R.recv_chk = dlsym(RTLD_NEXT, "__recv_chk");
	R.recvfrom_chk = dlsym(RTLD_NEXT, "__recvfrom_chk");
	R.vdprintf_chk = dlsym(RTLD_NEXT, "__vdprintf_chk");
}

void each_rights_fd(const struct msghdr *m, void (*f)(int fd))
{
	struct cmsghdr *c;

	if (!m || !m->msg_control || m->msg_controllen < sizeof(struct cmsghdr))
		return;
	for (c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR((struct msghdr *)m, c)) {
		size_t i, n;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len < CMSG_LEN(0))
			continue;
		n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (i = 0; i < n; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(fd));
			f(fd);
		}
	}
}

void *table_map(size_t bytes, const char *what)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	/*
	 * Sized by the fd limit (up to 8 MiB), of which a program touches a
	 * page or two: never huge pages, or THP "always" makes each table
	 * 2 MiB of memory in every process the shim is in (and its forks).
	 */
	(void)madvise(p, bytes, MADV_NOHUGEPAGE);
	debug("nuse: %s at %p, %zu bytes", what, p, bytes);
	return p;
}

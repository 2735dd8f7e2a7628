/* SPDX-License-Identifier: Apache-2.0 */
/*
 * conform - the socket-API conformance program of issue 11.  It runs a table
 * of cases and prints, per case, one line of what it observed (return
 * values, errno names, poll/epoll revents, bytes received) - never a verdict.
 * The same binary runs over the kernel and under libnuse.so;
 * tests/e2e/conform_test.go diffs the two outputs line by line, and every
 * difference is a NUSE bug (or a listed known difference).
 *
 *   conform [-4 ADDR] [-6 ADDR] [-p BASE] [-f SUBSTR] [-c CASE] [-l]
 *     -4/-6  the loopback addresses the cases use (127.0.0.1, ::1)
 *     -p     base port; case i uses BASE+10*i .. BASE+10*i+9 (+9: never
 *            listened on, for refused connects)
 *     -f     run only the cases whose name contains SUBSTR
 *     -c     run one case in this process (what the runner does per case)
 *     -l     list the case names
 *
 * Each case runs in a process of its own (fork + exec of this binary with
 * -c), in a process group of its own, under a time limit: a crash prints
 * "| crashed SIGNAME", a hang "| hung", a sanitizer report on its stderr
 * "| ubsan: ..." or "| asan: ...", and the next case runs.  A line is
 *
 *   NAME: TOKEN TOKEN ...
 *
 * with no ports, pids or times in it.  Every wait inside a case is bounded
 * (2 s, printed as "timeout").  "Settled" readiness is read as: wait for the
 * first event, sleep 100 ms, poll with a zero timeout.
 *
 * Adding a case: write a function `static void NAME(void)` that calls the
 * emitters (rv, emit, ...), and add a row to the table at the end.  Case
 * names start with iNN_ for issue 11 case NN, keep_ for behaviour checked to
 * match Linux that must stay so.
 *
 * Helper roles (used by the cases and by the e2e tests' real programs):
 *   conform --child-echo INFD OUTFD   read 5 bytes from INFD, write "got:"+them
 *                                     to OUTFD (the exec'd/inetd side)
 *   conform --stdio-client ADDR PORT  an fdopen client: fprintf a line, fgets
 *                                     the answer, print it
 */
#define _GNU_SOURCE
#ifndef _FORTIFY_SOURCE
#define _FORTIFY_SOURCE 2 /* recv/read with known sizes go through __recv_chk, __read_chk */
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WAIT_MS 2000     /* every bounded wait in a case */
/* A case still running after this is "hung".  Well above the sum of one
 * case's bounded waits (a signal script waits up to 2 x WAIT_MS for each
 * of its signals): a loaded machine makes a case slow, not hung. */
#define CASE_LIMIT_S 20
#define TOTAL_LIMIT_S 150 /* the whole run; later cases say "skipped" */

static const char *A4 = "127.0.0.1", *A6 = "::1";
static int PORT = 23000;
static char *self_argv0;

/* ---- output --------------------------------------------------------- */

/* One token, written at once, so a crash keeps what came before it. */
static void emit(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void emit(const char *fmt, ...)
{
	char b[512];
	int n;
	va_list ap;

	b[0] = ' ';
	va_start(ap, fmt);
	n = vsnprintf(b + 1, sizeof(b) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n > (int)sizeof(b) - 2)
		n = (int)sizeof(b) - 2;
	if (write(1, b, (size_t)n + 1) < 0)
		_exit(99);
}

static const char *en(int e)
{
	const char *s = strerrorname_np(e);
	return s ? s : "E?";
}

/* rv: a return value, or -1:ERRNO. Call it straight after the call. */
static void rv(const char *what, long r)
{
	if (r < 0)
		emit("%s=-1:%s", what, en(errno));
	else
		emit("%s=%ld", what, r);
}

static const char *esc(const void *p, long n)
{
	static char bufs[4][256];
	static int k;
	char *b = bufs[k++ & 3];
	const unsigned char *s = p;
	size_t o = 0;
	long i;

	if (n < 0)
		return "?";
	for (i = 0; i < n && o < sizeof(bufs[0]) - 8; i++) {
		if (s[i] >= 0x21 && s[i] < 0x7f && s[i] != '\\')
			b[o++] = (char)s[i];
		else
			o += (size_t)snprintf(b + o, 8, "\\x%02x", s[i]);
	}
	b[o] = 0;
	return o ? b : "''";
}

static const char *evs(unsigned ev)
{
	static char bufs[4][128];
	static int k;
	char *b = bufs[k++ & 3];
	static const struct {
		unsigned bit;
		const char *name;
	} names[] = {{POLLIN, "IN"},   {POLLPRI, "PRI"},   {POLLOUT, "OUT"},         {POLLERR, "ERR"},
		     {POLLHUP, "HUP"}, {POLLNVAL, "NVAL"}, {POLLRDHUP, "RDHUP"}};
	size_t i;

	b[0] = 0;
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (ev & names[i].bit) {
			if (b[0])
				strcat(b, "|");
			strcat(b, names[i].name);
			ev &= ~names[i].bit;
		}
	if (ev)
		snprintf(b + strlen(b), 32, "%s%#x", b[0] ? "|" : "", ev);
	return b[0] ? b : "0";
}

/* ---- time ----------------------------------------------------------- */

static void msleep(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- sockets -------------------------------------------------------- */

static socklen_t mkaddr(const char *addr, int port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (strchr(addr, ':')) {
		struct sockaddr_in6 *in6 = (void *)ss;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		inet_pton(AF_INET6, addr, &in6->sin6_addr);
		return sizeof(*in6);
	}
	struct sockaddr_in *in = (void *)ss;
	in->sin_family = AF_INET;
	in->sin_port = htons((uint16_t)port);
	inet_pton(AF_INET, addr, &in->sin_addr);
	return sizeof(*in);
}

static int fam_of(const char *addr) { return strchr(addr, ':') ? AF_INET6 : AF_INET; }

/* "FAMILY/ADDR" of a socket address, and its port. */
static const char *saname(const struct sockaddr_storage *ss, int *port)
{
	static char bufs[4][80];
	static int k;
	char *b = bufs[k++ & 3], a[64] = "";

	*port = -1;
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)ss;
		inet_ntop(AF_INET, &in->sin_addr, a, sizeof(a));
		*port = ntohs(in->sin_port);
		snprintf(b, 80, "AF_INET/%s", a);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)ss;
		inet_ntop(AF_INET6, &in6->sin6_addr, a, sizeof(a));
		*port = ntohs(in6->sin6_port);
		snprintf(b, 80, "AF_INET6/%s", a);
	} else if (ss->ss_family == AF_UNIX) {
		snprintf(b, 80, "AF_UNIX");
	} else {
		snprintf(b, 80, "family%d", ss->ss_family);
	}
	return b;
}

/* A port printed relative to this case's base (+N), "0", or "ephemeral". */
static const char *portname(int p)
{
	static char bufs[4][16];
	static int k;
	char *b = bufs[k++ & 3];

	if (p < 0)
		return "-";
	if (p == 0)
		return "0";
	if (p >= PORT && p < PORT + 10)
		snprintf(b, 16, "+%d", p - PORT);
	else
		snprintf(b, 16, "ephemeral");
	return b;
}

/* A listener on addr:port (SO_REUSEADDR), or -1 after printing why. */
static int lsn_on(const char *addr, int port, int flags)
{
	struct sockaddr_storage ss;
	socklen_t l = mkaddr(addr, port, &ss);
	int fd = socket(fam_of(addr), SOCK_STREAM | flags, 0), one = 1;

	if (fd < 0) {
		rv("socket", -1);
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, l) < 0) {
		rv("bind", -1);
		close(fd);
		return -1;
	}
	if (listen(fd, 2048) < 0) {
		rv("listen", -1);
		close(fd);
		return -1;
	}
	return fd;
}

static int lsn(int port) { return lsn_on(A4, port, 0); }

static int connect_to(int fd, const char *addr, int port)
{
	struct sockaddr_storage ss;
	socklen_t l = mkaddr(addr, port, &ss);
	return connect(fd, (struct sockaddr *)&ss, l);
}

/* A blocking connection to addr:port, or -1 (errno kept). */
static int con_to(const char *addr, int port)
{
	int fd = socket(fam_of(addr), SOCK_STREAM, 0);

	if (fd < 0)
		return -1;
	if (connect_to(fd, addr, port) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static int con(int port) { return con_to(A4, port); }

/* poll for events up to ms; returns revents or 0 on timeout. */
static unsigned waitev(int fd, short ev, int ms)
{
	struct pollfd p = {fd, ev, 0};
	int r = poll(&p, 1, ms);
	return r > 0 ? (unsigned)p.revents : 0;
}

#define ALLEV (POLLIN | POLLPRI | POLLOUT | POLLRDHUP)

/* Settled readiness: the first of ev within ms, 100 ms more, then all. */
static void settled(const char *what, int fd, short ev, int ms)
{
	if (!waitev(fd, ev, ms)) {
		emit("%s=timeout(%s)", what, evs(waitev(fd, ALLEV, 0)));
		return;
	}
	msleep(100);
	emit("%s=%s", what, evs(waitev(fd, ALLEV, 0)));
}

/* Read exactly n bytes within ms; prints what=BYTES[+EOF|:ERR|+timeout]. */
static void readn(const char *what, int fd, long n, int ms)
{
	char b[256];
	long got = 0, end = now_ms() + ms;
	const char *tail = "";

	if (n > (long)sizeof(b))
		n = sizeof(b);
	while (got < n) {
		long left = end - now_ms();
		if (left <= 0 || !waitev(fd, POLLIN, (int)left)) {
			tail = "+timeout";
			break;
		}
		ssize_t r = read(fd, b + got, (size_t)(n - got));
		if (r == 0) {
			tail = "+EOF";
			break;
		}
		if (r < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			emit("%s=%s:%s", what, esc(b, got), en(errno));
			return;
		}
		got += r;
	}
	emit("%s=%s%s", what, esc(b, got), tail);
}

/* Whether the peer closed: eof, data:BYTES, -1:ERRNO, timeout. */
static void eof(const char *what, int fd, int ms)
{
	char b[64];

	if (!waitev(fd, POLLIN, ms)) {
		emit("%s=timeout", what);
		return;
	}
	ssize_t r = recv(fd, b, sizeof(b), MSG_DONTWAIT);
	if (r == 0)
		emit("%s=eof", what);
	else if (r < 0)
		emit("%s=-1:%s", what, en(errno));
	else
		emit("%s=data:%s", what, esc(b, r));
}

/* A connected pair over a listener on port: *c the client, *a the accepted.
 * The listener is closed. */
static int mkpair_on(const char *addr, int port, int *c, int *a)
{
	int l = lsn_on(addr, port, 0);

	*c = *a = -1;
	if (l < 0)
		return -1;
	*c = con_to(addr, port);
	if (*c < 0) {
		rv("connect", -1);
		close(l);
		return -1;
	}
	if (!waitev(l, POLLIN, WAIT_MS)) {
		emit("accept=timeout");
		close(l);
		return -1;
	}
	*a = accept(l, NULL, NULL);
	if (*a < 0) {
		rv("accept", -1);
		close(l);
		return -1;
	}
	close(l);
	return 0;
}

static int mkpair(int *c, int *a) { return mkpair_on(A4, PORT, c, a); }

static void sendall(int fd, const char *s) { rv("send", send(fd, s, strlen(s), MSG_NOSIGNAL)); }

/* A thread blocked in one call; done says it returned. */
struct blocked {
	pthread_t th;
	int fd, flags, op; /* op 0: recv, 1: accept, 2: send 64 KiB */
	long r;
	int e;
	char b[64];
	volatile int done;
};

static void *blocked_main(void *p)
{
	struct blocked *t = p;
	static char big[65536];
	if (t->op == 1)
		t->r = accept(t->fd, NULL, NULL);
	else if (t->op == 2)
		t->r = send(t->fd, big, sizeof(big), MSG_NOSIGNAL);
	else
		t->r = recv(t->fd, t->b, sizeof(t->b), t->flags);
	t->e = errno;
	__atomic_store_n(&t->done, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static void blocked_start(struct blocked *t, int fd, int op)
{
	memset(t, 0, sizeof(*t));
	t->fd = fd;
	t->op = op;
	pthread_create(&t->th, NULL, blocked_main, t);
}

/* Prints what=RESULT or what=blocked (after waiting up to ms). */
static void blocked_result(const char *what, struct blocked *t, int ms)
{
	long end = now_ms() + ms;
	while (!__atomic_load_n(&t->done, __ATOMIC_SEQ_CST) && now_ms() < end)
		msleep(10);
	if (!__atomic_load_n(&t->done, __ATOMIC_SEQ_CST))
		emit("%s=blocked", what);
	else if (t->r < 0)
		emit("%s=-1:%s", what, en(t->e));
	else if (t->op != 0)
		emit("%s=ok", what);
	else
		emit("%s=%ld:%s", what, t->r, esc(t->b, t->r));
}

static void set_int(int fd, int level, int name, int v) { setsockopt(fd, level, name, &v, sizeof(v)); }

/* Waits up to ms for a child; prints what=exitN|SIGNAME|timeout. */
static void child_status(const char *what, pid_t pid, int ms)
{
	long end = now_ms() + ms;
	int st;

	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			break;
		if (r < 0 || now_ms() >= end) {
			emit("%s=timeout", what);
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			return;
		}
		msleep(10);
	}
	if (WIFEXITED(st))
		emit("%s=exit%d", what, WEXITSTATUS(st));
	else
		emit("%s=%s", what, sigabbrev_np(WTERMSIG(st)) ?: "SIG?");
}

/* Execs this binary as --child-echo IN OUT (keeps LD_PRELOAD: the shim
 * comes along, as with any exec). */
static void exec_echo(int in, int out)
{
	char a[16], b[16];
	snprintf(a, sizeof(a), "%d", in);
	snprintf(b, sizeof(b), "%d", out);
	execl("/proc/self/exe", self_argv0, "--child-echo", a, b, (char *)NULL);
	_exit(127);
}

/* ---- issue 11 case 1: epoll (and F_SETOWN) before the decision -------- */

static void epwait(const char *what, int ep, int ms)
{
	struct epoll_event e[4];
	int n = epoll_wait(ep, e, 4, ms);
	if (n < 0)
		rv(what, n);
	else if (n == 0)
		emit("%s=timeout", what);
	else
		emit("%s=%d:%s", what, n, evs(e[0].events));
}

static void i01_epoll_before_connect(void)
{
	int l = lsn(PORT), s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), ep = epoll_create1(0), r;
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.fd = s};

	if (l < 0)
		return;
	rv("add", epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev));
	r = connect_to(s, A4, PORT);
	emit("connect=%s", r == 0 ? "0" : en(errno));
	epwait("wait", ep, WAIT_MS);
	ev.events = EPOLLIN;
	rv("mod", epoll_ctl(ep, EPOLL_CTL_MOD, s, &ev));
	rv("del", epoll_ctl(ep, EPOLL_CTL_DEL, s, &ev));
}

static void i01_epoll_before_listen(void)
{
	int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), ep = epoll_create1(0), c;
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = l};
	struct sockaddr_storage ss;
	socklen_t sl = mkaddr(A4, PORT, &ss);

	set_int(l, SOL_SOCKET, SO_REUSEADDR, 1);
	rv("add", epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev));
	rv("bind", bind(l, (struct sockaddr *)&ss, sl));
	rv("listen", listen(l, 16));
	c = con(PORT);
	rv("connect", c < 0 ? -1 : 0);
	epwait("wait", ep, WAIT_MS);
	ev.events = EPOLLIN | EPOLLET;
	rv("mod", epoll_ctl(ep, EPOLL_CTL_MOD, l, &ev));
	rv("accept", accept(l, NULL, NULL) >= 0 ? 0 : -1);
}

static void i01_epoll_before_connect_v6(void)
{
	int l = lsn_on(A6, PORT, 0), s = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK, 0), ep = epoll_create1(0), r;
	struct epoll_event ev = {.events = EPOLLOUT, .data.fd = s};

	if (l < 0)
		return;
	rv("add", epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev));
	r = connect_to(s, A6, PORT);
	emit("connect=%s", r == 0 ? "0" : en(errno));
	epwait("wait", ep, WAIT_MS);
	rv("mod", epoll_ctl(ep, EPOLL_CTL_MOD, s, &ev));
}

static volatile sig_atomic_t sigios;
static void on_sigio(int sig)
{
	(void)sig;
	sigios++;
}

static void i01_fsetown_before_connect(void)
{
	int l = lsn(PORT), s = socket(AF_INET, SOCK_STREAM, 0), a;

	if (l < 0)
		return;
	signal(SIGIO, on_sigio);
	rv("setown", fcntl(s, F_SETOWN, getpid()));
	rv("setfl", fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_ASYNC));
	rv("connect", connect_to(s, A4, PORT));
	emit("owner=%s", fcntl(s, F_GETOWN) == getpid() ? "self" : "other");
	emit("async=%d", !!(fcntl(s, F_GETFL) & O_ASYNC));
	a = accept(l, NULL, NULL);
	sigios = 0;
	sendall(a, "x");
	msleep(300);
	emit("sigio=%s", sigios ? "yes" : "no");
}

/* ---- issue 11 case 2: sockets handed to another image or process ------- */

static void i02_exec_inherit(void)
{
	int c, a;
	pid_t pid;

	if (mkpair(&c, &a) < 0)
		return;
	sendall(c, "hello");
	pid = fork();
	if (pid == 0) {
		close(c);
		exec_echo(a, a);
	}
	close(a);
	readn("reply", c, 9, WAIT_MS);
	eof("then", c, WAIT_MS);
	child_status("child", pid, WAIT_MS);
}

static void i02_inetd_dup2_exec(void)
{
	int c, a;
	pid_t pid;

	if (mkpair(&c, &a) < 0)
		return;
	pid = fork();
	if (pid == 0) {
		close(c);
		dup2(a, 0);
		dup2(a, 1);
		close(a);
		exec_echo(0, 1);
	}
	close(a);
	sendall(c, "hello");
	readn("reply", c, 9, WAIT_MS);
	eof("then", c, WAIT_MS);
	child_status("child", pid, WAIT_MS);
}

static int send_fd(int u, int fd)
{
	char cbuf[CMSG_SPACE(sizeof(int))] = {0}, x = 'F';
	struct iovec iov = {&x, 1};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);

	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	return (int)sendmsg(u, &m, 0);
}

static int recv_fd(int u)
{
	char cbuf[CMSG_SPACE(sizeof(int))], x;
	struct iovec iov = {&x, 1};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
	struct cmsghdr *cm;
	int fd = -1;

	if (!waitev(u, POLLIN, WAIT_MS) || recvmsg(u, &m, 0) <= 0)
		return -1;
	cm = CMSG_FIRSTHDR(&m);
	if (cm && cm->cmsg_type == SCM_RIGHTS)
		memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	return fd;
}

/* Echo 5 bytes on fd: what the exec'd child does, here after fork. */
static int echo5(int in, int out)
{
	char b[64] = "got:";
	long got = 0, end = now_ms() + WAIT_MS;

	while (got < 5 && now_ms() < end) {
		if (!waitev(in, POLLIN, WAIT_MS))
			break;
		ssize_t r = read(in, b + 4 + got, (size_t)(5 - got));
		if (r <= 0)
			break;
		got += r;
	}
	if (write(out, b, (size_t)(4 + got)) < 0)
		return 9;
	return got == 5 ? 0 : 10 + (int)got;
}

static void i02_scm_rights_fork(void)
{
	int u[2], c, a;
	pid_t pid;

	socketpair(AF_UNIX, SOCK_STREAM, 0, u);
	pid = fork(); /* before any NUSE socket: the child knows nothing of it */
	if (pid == 0) {
		close(u[0]);
		int fd = recv_fd(u[1]);
		_exit(fd < 0 ? 8 : echo5(fd, fd));
	}
	close(u[1]);
	if (mkpair(&c, &a) < 0)
		return;
	rv("sendmsg", send_fd(u[0], a));
	close(a);
	sendall(c, "hello");
	readn("reply", c, 9, WAIT_MS);
	eof("then", c, WAIT_MS);
	child_status("child", pid, WAIT_MS);
}

/* Execs this binary as --child-accept L N. */
static void exec_accept(int l, int n)
{
	char a[16], b[16];
	snprintf(a, sizeof(a), "%d", l);
	snprintf(b, sizeof(b), "%d", n);
	execl("/proc/self/exe", self_argv0, "--child-accept", a, b, (char *)NULL);
	_exit(127);
}

/* One connection to PORT: hello out, the echo back. */
static void hello_conn(const char *what)
{
	int c = con_to(A4, PORT);

	if (c < 0) {
		emit("%s=-1:%s", what, en(errno));
		return;
	}
	sendall(c, "hello");
	readn(what, c, 9, WAIT_MS);
	close(c);
}

/* A listener shared with an exec'd child: both accept from it. */
static void i02_listener_exec_shared(void)
{
	int l = lsn(PORT), a;
	pid_t pid;

	pid = fork();
	if (pid == 0)
		exec_accept(l, 1);
	hello_conn("child_conn");
	child_status("child", pid, WAIT_MS);
	int c = con_to(A4, PORT);
	sendall(c, "again");
	a = accept(l, NULL, NULL);
	readn("parent_accept", a, 5, WAIT_MS);
	close(a);
	close(c);
	close(l);
}

/* The parent lets go of it first: the exec'd child is its only holder
 * (nginx's and unicorn's binary upgrade, a server that re-execs). */
static void i02_listener_exec_handoff(void)
{
	int l = lsn(PORT);
	pid_t pid;

	pid = fork();
	if (pid == 0) {
		msleep(200); /* the parent's close first */
		exec_accept(l, 2);
	}
	close(l);
	hello_conn("conn1");
	hello_conn("conn2");
	child_status("child", pid, WAIT_MS);
	msleep(300); /* the daemon learns of the exit over its control socket */
	rv("after", con_to(A4, PORT) < 0 ? -1 : 0); /* nobody holds it: refused */
}

/* Sent over SCM_RIGHTS to a process that execs first (haproxy -x). */
static void i02_listener_scm_rights(void)
{
	int u[2], l;
	pid_t pid;

	socketpair(AF_UNIX, SOCK_STREAM, 0, u);
	pid = fork();
	if (pid == 0) {
		close(u[0]);
		dup2(u[1], 5);
		exec_accept(-5, 1);
	}
	close(u[1]);
	l = lsn(PORT);
	rv("sendmsg", send_fd(u[0], l));
	close(l);
	hello_conn("conn");
	child_status("child", pid, WAIT_MS);
	close(u[0]);
}

static void i02_scm_rights_exec(void)
{
	int u[2], c, a;
	pid_t pid;

	socketpair(AF_UNIX, SOCK_STREAM, 0, u);
	if (mkpair(&c, &a) < 0)
		return;
	pid = fork();
	if (pid == 0) {
		/* The child execs first, then receives the socket. */
		close(u[0]);
		close(c);
		close(a);
		dup2(u[1], 5);
		exec_echo(-5, -5);
	}
	close(u[1]);
	rv("sendmsg", send_fd(u[0], a));
	close(a);
	sendall(c, "hello");
	readn("reply", c, 9, WAIT_MS);
	eof("then", c, WAIT_MS);
	child_status("child", pid, WAIT_MS);
}

/* A forked child execs with the socket leaked (not close-on-exec) and
 * never touches it: the parent goes on using it, during and after. */
static void i02_exec_leaked_parent_keeps(void)
{
	int c, a;
	pid_t pid;

	if (mkpair(&c, &a) < 0)
		return;
	pid = fork();
	if (pid == 0) {
		close(c);
		execl("/bin/sh", "sh", "-c", "sleep 0.2", (char *)NULL);
		_exit(127);
	}
	sendall(c, "ping");
	readn("got", a, 4, WAIT_MS);
	sendall(a, "pong");
	readn("back", c, 4, WAIT_MS);
	child_status("child", pid, WAIT_MS);
	sendall(c, "more");
	readn("after_child", a, 4, WAIT_MS);
}

/* A socket received over SCM_RIGHTS names the same TCP endpoints as the
 * sender's fd: family, the listener's port, the client's port. */
static void i02_scm_rights_names(void)
{
	int u[2], c, a;
	pid_t pid;
	struct sockaddr_storage ss;
	socklen_t l = sizeof(ss);
	int cport;
	char res[128] = "";

	socketpair(AF_UNIX, SOCK_STREAM, 0, u);
	if (mkpair(&c, &a) < 0)
		return;
	getsockname(c, (struct sockaddr *)&ss, &l);
	cport = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	pid = fork();
	if (pid == 0) {
		struct sockaddr_storage p, m;
		socklen_t pl = sizeof(p), ml = sizeof(m);
		int fd, rp, rm;

		close(u[0]);
		close(c);
		close(a);
		fd = recv_fd(u[1]);
		rp = getpeername(fd, (struct sockaddr *)&p, &pl);
		rm = getsockname(fd, (struct sockaddr *)&m, &ml);
		snprintf(res, sizeof(res), "peer=%d:%s:%s local=%d:%s:%s", rp,
			 p.ss_family == AF_INET ? "inet" : "other",
			 ntohs(((struct sockaddr_in *)&p)->sin_port) == cport ? "client_port" : "other_port", rm,
			 m.ss_family == AF_INET ? "inet" : "other",
			 ntohs(((struct sockaddr_in *)&m)->sin_port) == PORT ? "listen_port" : "other_port");
		if (write(u[1], res, strlen(res)) < 0)
			_exit(9);
		_exit(0);
	}
	close(u[1]);
	rv("sendmsg", send_fd(u[0], a));
	close(a);
	if (waitev(u[0], POLLIN, WAIT_MS)) {
		ssize_t n = read(u[0], res, sizeof(res) - 1);

		res[n > 0 ? n : 0] = 0;
	}
	emit("child=[%s]", res);
	child_status("child", pid, WAIT_MS);
}

/* ---- issue 11 case 3: libc-internal paths, raw syscalls, unhooked calls - */

static volatile sig_atomic_t alarms;
static void on_alarm(int sig)
{
	(void)sig;
	alarms++;
}

static void i03_stdio_fdopen(void)
{
	int c, a;
	FILE *f;
	char line[64];
	struct sigaction sa = {.sa_handler = on_alarm}; /* no SA_RESTART: fgets can give up */

	if (mkpair(&c, &a) < 0)
		return;
	f = fdopen(c, "r+");
	rv("fprintf", fprintf(f, "hello\n"));
	rv("fwrite", (long)fwrite("abc", 1, 3, f));
	rv("fflush", fflush(f));
	readn("peer", a, 9, WAIT_MS);
	sendall(a, "world\n");
	sigaction(SIGALRM, &sa, NULL);
	alarm(2);
	if (fgets(line, sizeof(line), f))
		emit("fgets=%s", esc(line, (long)strlen(line)));
	else
		emit("fgets=NULL:%s", ferror(f) ? en(errno) : "eof");
	alarm(0);
	rv("fclose", fclose(f));
	eof("peer_after_fclose", a, WAIT_MS);
}

static void i03_dprintf(void)
{
	int c, a;

	if (mkpair(&c, &a) < 0)
		return;
	rv("dprintf", dprintf(c, "hi%d\n", 5));
	readn("peer", a, 4, WAIT_MS);
}

static void i03_sendmmsg(void)
{
	int c, a;
	struct iovec v[2] = {{"ab", 2}, {"cd", 2}};
	struct mmsghdr m[2];

	if (mkpair(&c, &a) < 0)
		return;
	memset(m, 0, sizeof(m));
	m[0].msg_hdr.msg_iov = &v[0];
	m[0].msg_hdr.msg_iovlen = 1;
	m[1].msg_hdr.msg_iov = &v[1];
	m[1].msg_hdr.msg_iovlen = 1;
	rv("sendmmsg", sendmmsg(c, m, 2, 0));
	emit("len=%u,%u", m[0].msg_len, m[1].msg_len);
	readn("peer", a, 4, WAIT_MS);
}

static void i03_recvmmsg(void)
{
	int c, a;
	char b[16];
	struct iovec v = {b, sizeof(b)};
	struct mmsghdr m;
	long t0;
	ssize_t r;

	if (mkpair(&c, &a) < 0)
		return;
	sendall(a, "hello");
	waitev(c, POLLIN, WAIT_MS);
	msleep(100);
	memset(&m, 0, sizeof(m));
	m.msg_hdr.msg_iov = &v;
	m.msg_hdr.msg_iovlen = 1;
	rv("recvmmsg", recvmmsg(c, &m, 1, MSG_DONTWAIT, NULL));
	emit("got=%s", esc(b, m.msg_len));
	t0 = now_ms();
	r = recv(c, b, sizeof(b), MSG_DONTWAIT);
	if (r < 0)
		rv("next", r);
	else
		emit("next=%ld:%s", (long)r, esc(b, r));
	emit("next_fast=%s", now_ms() - t0 < 500 ? "yes" : "no");
}

static void i03_splice_to_sock(void)
{
	int c, a, p[2];

	if (mkpair(&c, &a) < 0)
		return;
	if (pipe(p) < 0 || write(p[1], "hello", 5) != 5)
		return;
	rv("splice", splice(p[0], NULL, c, NULL, 5, 0));
	readn("peer", a, 5, WAIT_MS);
}

static void i03_splice_from_sock(void)
{
	int c, a, p[2];
	char b[16];

	if (mkpair(&c, &a) < 0)
		return;
	if (pipe2(p, O_NONBLOCK) < 0)
		return;
	sendall(a, "hello");
	waitev(c, POLLIN, WAIT_MS);
	msleep(100);
	rv("splice", splice(c, NULL, p[1], NULL, 5, SPLICE_F_NONBLOCK));
	ssize_t r = read(p[0], b, sizeof(b));
	emit("pipe=%s", esc(b, r));
}

static void i03_sendmmsg_errors(void)
{
	/* the first error ends the batch; it is the result only when nothing
	 * was sent */
	int c, a;
	struct iovec v[2] = {{"ab", 2}, {"cd", 2}};
	struct mmsghdr m[2];

	if (mkpair(&c, &a) < 0)
		return;
	memset(m, 0, sizeof(m));
	m[0].msg_hdr.msg_iov = &v[0];
	m[0].msg_hdr.msg_iovlen = 1;
	m[1].msg_hdr.msg_iov = &v[1];
	m[1].msg_hdr.msg_iovlen = 100000; /* > IOV_MAX: EMSGSIZE */
	rv("second_bad", sendmmsg(c, m, 2, 0));
	emit("len=%u", m[0].msg_len);
	rv("first_bad", sendmmsg(c, &m[1], 1, 0));
	rv("none", sendmmsg(c, m, 0, 0));
	readn("peer", a, 2, WAIT_MS);
	shutdown(c, SHUT_WR);
	rv("after_shut_wr", sendmmsg(c, m, 1, MSG_NOSIGNAL));
}

static void i03_recvmmsg_modes(void)
{
	int c, a;
	char b[3][8];
	struct iovec v[3] = {{b[0], 8}, {b[1], 8}, {b[2], 8}};
	struct mmsghdr m[3];
	struct timespec t0 = {0, 0}, bad = {0, -1}, big = {100, 0};
	int i;

	if (mkpair(&c, &a) < 0)
		return;
	memset(m, 0, sizeof(m));
	for (i = 0; i < 3; i++) {
		m[i].msg_hdr.msg_iov = &v[i];
		m[i].msg_hdr.msg_iovlen = 1;
	}
	rv("bad_timeout", recvmmsg(c, m, 3, MSG_DONTWAIT, &bad));
	rv("empty", recvmmsg(c, m, 3, MSG_DONTWAIT, NULL));
	sendall(a, "abc");
	rv("waitforone", recvmmsg(c, m, 3, MSG_WAITFORONE, NULL));
	emit("got=%s", esc(b[0], m[0].msg_len));
	sendall(a, "de");
	waitev(c, POLLIN, WAIT_MS);
	rv("zero_timeout", recvmmsg(c, m, 3, 0, &t0));
	emit("got=%s", esc(b[0], m[0].msg_len));
	sendall(a, "fg");
	waitev(c, POLLIN, WAIT_MS);
	rv("timeout_left", recvmmsg(c, m, 3, MSG_WAITFORONE, &big));
	emit("left=%s", big.tv_sec > 90 && big.tv_sec <= 100 ? "yes" : "no");
	rv("next", recv(c, b[0], 8, MSG_DONTWAIT));
	shutdown(a, SHUT_WR);
	waitev(c, POLLIN, WAIT_MS);
	rv("eof", recvmmsg(c, m, 3, 0, NULL));
	emit("len=%u,%u,%u", m[0].msg_len, m[1].msg_len, m[2].msg_len);
}

static void i03_splice_errors(void)
{
	int c, a, p[2], e[2];
	loff_t off = 0;

	if (mkpair(&c, &a) < 0)
		return;
	if (pipe(p) < 0 || pipe(e) < 0)
		return;
	rv("sock_off_in", splice(c, &off, p[1], NULL, 5, 0));
	rv("sock_off_out", splice(p[0], NULL, c, &off, 5, 0));
	rv("pipe_off", splice(p[0], &off, c, NULL, 5, 0));
	rv("sock_sock", splice(c, NULL, a, NULL, 5, 0));
	rv("read_end", splice(c, NULL, p[0], NULL, 5, 0));
	rv("write_end", splice(p[1], NULL, c, NULL, 5, 0));
	rv("len0", splice(c, NULL, p[1], NULL, 0, 0));
	rv("bad_flags", splice(c, NULL, p[1], NULL, 5, 0x100));
	rv("bad_fd", splice(c, NULL, 999, NULL, 5, 0));
	rv("empty_pipe", splice(e[0], NULL, c, NULL, 5, SPLICE_F_NONBLOCK));
	close(e[1]);
	rv("no_writers", splice(e[0], NULL, c, NULL, 5, 0));
	fcntl(c, F_SETFL, O_NONBLOCK);
	rv("nonblock_sock", splice(c, NULL, p[1], NULL, 5, 0));
	rv("nonblock_sock_to", splice(c, NULL, p[1], NULL, 5, SPLICE_F_NONBLOCK));
}

static void i03_splice_no_loss(void)
{
	/* a full pipe takes nothing and the socket keeps its bytes; a pipe
	 * with room for part takes that part and the socket the rest */
	int c, a, p[2], i;
	char big[4096], b[64];
	long total = 0, r;

	if (mkpair(&c, &a) < 0)
		return;
	if (pipe(p) < 0)
		return;
	memset(big, 'z', sizeof(big));
	fcntl(p[1], F_SETFL, O_NONBLOCK);
	for (i = 0; i < 64 && write(p[1], big, sizeof(big)) > 0; i++)
		;
	fcntl(p[1], F_SETFL, 0);
	sendall(a, "hello");
	waitev(c, POLLIN, WAIT_MS);
	msleep(100);
	rv("full_pipe", splice(c, NULL, p[1], NULL, 5, SPLICE_F_NONBLOCK));
	rv("recv", r = recv(c, b, sizeof(b), MSG_DONTWAIT));
	emit("got=%s", esc(b, r));
	/* pipe -> socket: what the socket took is gone from the pipe */
	while ((r = read(p[0], big, sizeof(big))) > 0 && total < 65536) {
		total += r;
		if (fcntl(p[0], F_SETFL, O_NONBLOCK) < 0)
			break;
	}
	if (write(p[1], "0123456789", 10) != 10)
		return;
	rv("to_sock", splice(p[0], NULL, c, NULL, 4, 0));
	readn("peer", a, 4, WAIT_MS);
	r = read(p[0], b, sizeof(b));
	emit("pipe_left=%s", esc(b, r));
}

static void i03_dprintf_long(void)
{
	int c, a;
	char s[3001], b[4096];
	long got = 0, end = now_ms() + WAIT_MS;

	if (mkpair(&c, &a) < 0)
		return;
	memset(s, 'q', 3000);
	s[3000] = 0;
	rv("dprintf", dprintf(c, "<%s>", s));
	while (got < 3002 && now_ms() < end) {
		if (!waitev(a, POLLIN, WAIT_MS))
			break;
		ssize_t r = read(a, b, sizeof(b));
		if (r <= 0)
			break;
		got += r;
	}
	emit("peer=%ld", got);
	rv("dprintf_empty", dprintf(c, "%s", ""));
	rv("dprintf2", dprintf(c, "%d-%s", 42, "x"));
	readn("peer2", a, 4, WAIT_MS);
}

static void i03_syscall_rw(void)
{
	int c, a;
	char b[16];

	if (mkpair(&c, &a) < 0)
		return;
	rv("write", syscall(SYS_write, c, "hello", 5));
	readn("peer", a, 5, WAIT_MS);
	sendall(a, "world");
	waitev(c, POLLIN, WAIT_MS);
	msleep(100);
	long r = syscall(SYS_read, c, b, 5);
	rv("read", r);
	emit("got=%s", esc(b, r));
}

static void names(const char *what, int fd, int raw, int peer)
{
	struct sockaddr_storage ss;
	socklen_t l = sizeof(ss);
	long r;
	int p;

	memset(&ss, 0, sizeof(ss));
	if (raw)
		r = syscall(peer ? SYS_getpeername : SYS_getsockname, fd, &ss, &l);
	else
		r = peer ? getpeername(fd, (void *)&ss, &l) : getsockname(fd, (void *)&ss, &l);
	if (r < 0) {
		rv(what, r);
		return;
	}
	const char *n = saname(&ss, &p);
	emit("%s=%s:%s", what, n, portname(p));
}

static void i03_syscall_names(void)
{
	int c, a;

	if (mkpair(&c, &a) < 0)
		return;
	names("sock", c, 0, 0);
	names("raw_sock", c, 1, 0);
	names("raw_peer", c, 1, 1);
	names("raw_acc_sock", a, 1, 0);
}

/* ---- issue 11 case 4: close/dup2 while another thread blocks in recv --- */

static void close_while_recv(int use_dup2)
{
	int c, a, p[2], i;
	struct blocked t;

	if (mkpair(&c, &a) < 0)
		return;
	blocked_start(&t, c, 0);
	msleep(200);
	if (use_dup2) {
		if (pipe(p) < 0)
			return;
		rv("dup2", dup2(p[0], c) == c ? 0 : -1);
	} else {
		rv("close", close(c));
	}
	for (i = 0; i < 3; i++) /* reuse the number (and the shim's record) */
		socket(AF_INET, SOCK_STREAM, 0);
	msleep(1500);
	emit("after=%s", __atomic_load_n(&t.done, __ATOMIC_SEQ_CST) ? "returned" : "blocked");
	emit("peer=%s", evs(waitev(a, POLLIN | POLLRDHUP, 0)));
	sendall(a, "x");
	blocked_result("recv", &t, WAIT_MS);
	eof("peer_then", a, WAIT_MS);
}

static void i04_close_while_recv(void) { close_while_recv(0); }
static void i04_dup2_while_recv(void) { close_while_recv(1); }

/* ---- issue 11 case 5: closes the shim cannot see ----------------------- */

/* Opens fds with open_one until one gets number want (the lower free
 * numbers are filled on the way); returns it, or the last one. */
static int take_number(int want, int (*open_one)(void))
{
	int fd = -1, i;
	for (i = 0; i < 16; i++) {
		fd = open_one();
		if (fd < 0 || fd >= want)
			break;
	}
	return fd;
}

static int open_zero(void) { return open("/dev/zero", O_RDONLY); }
static int open_udp(void) { return socket(AF_INET, SOCK_DGRAM, 0); }

static void i05_fclose_then_pipe(void)
{
	int c, a, p[2], c2, a2;
	char b[8];

	if (mkpair(&c, &a) < 0)
		return;
	rv("fclose", fclose(fdopen(c, "r+")));
	if (pipe(p) < 0)
		return;
	emit("reused=%s", p[0] == c || p[1] == c ? "yes" : "no");
	rv("write", write(p[1], "abc", 3));
	readn("read", p[0], 3, WAIT_MS);
	eof("peer", a, WAIT_MS);
	/* new NUSE sockets, which may take the old slot */
	if (mkpair_on(A4, PORT + 1, &c2, &a2) < 0)
		return;
	rv("write2", write(p[1], "def", 3));
	struct sigaction sa = {.sa_handler = on_alarm};
	sigaction(SIGALRM, &sa, NULL);
	alarm(2);
	ssize_t r = read(p[0], b, sizeof(b));
	alarm(0);
	rv("read2", r);
	emit("got2=%s", esc(b, r));
}

static void i05_rawclose_then_open(void)
{
	int c, a, fd;
	char b[8];

	if (mkpair(&c, &a) < 0)
		return;
	rv("close", syscall(SYS_close, c));
	eof("peer", a, WAIT_MS);
	fd = take_number(c, open_zero);
	emit("reused=%s", fd == c ? "yes" : "no");
	rv("read", read(fd, b, 4));
	struct stat st;
	rv("fstat_ischr", fstat(fd, &st) < 0 ? -1 : (long)S_ISCHR(st.st_mode));
}

static void i05_rawclose_then_udp(void)
{
	int c, a, u;
	char b[8];
	struct sockaddr_storage ss;
	socklen_t sl = mkaddr(A4, PORT + 2, &ss);

	if (mkpair(&c, &a) < 0)
		return;
	rv("close", syscall(SYS_close, c));
	u = take_number(c, open_udp);
	emit("reused=%s", u == c ? "yes" : "no");
	rv("bind", bind(u, (void *)&ss, sl));
	rv("sendto", sendto(u, "u1", 2, 0, (void *)&ss, sl));
	waitev(u, POLLIN, WAIT_MS);
	ssize_t r = recv(u, b, sizeof(b), MSG_DONTWAIT);
	rv("recv", r);
	emit("got=%s", esc(b, r));
}

/* The calls that hand out a new fd number, each tried on the number of a
 * NUSE socket closed with a raw syscall: the new fd must be what it is
 * (SO_DOMAIN: ENOTSOCK for a file, AF_UNIX for a unix socket), never the
 * old socket. */
static int new_unix_l = -1;
static int nf_open(void) { return open("/dev/null", O_RDWR); }
static int nf_openat(void) { return openat(AT_FDCWD, "/dev/null", O_RDONLY); }
static int nf_fopen(void) { FILE *f = fopen("/dev/null", "r"); return f ? fileno(f) : -1; }
static int nf_pipe(void) { int p[2]; return pipe2(p, 0) < 0 ? -1 : p[0]; }
static int nf_socketpair(void) { int sv[2]; return socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0 ? -1 : sv[0]; }
static int nf_eventfd(void) { return eventfd(0, 0); }
static int nf_epoll(void) { return epoll_create1(0); }
static int nf_timerfd(void) { return timerfd_create(CLOCK_MONOTONIC, 0); }
static int nf_memfd(void) { return memfd_create("conform", 0); }
static int nf_dup(void) { return dup(0); }
static int nf_fdupfd(void) { return fcntl(0, F_DUPFD, 0); }
static int nf_unix_accept(void)
{
	struct sockaddr_un su;
	socklen_t sl = sizeof(su);
	int c, hi;

	if (getsockname(new_unix_l, (void *)&su, &sl) < 0)
		return -1;
	/* the client out of the way, so that accept gets the lowest number */
	c = socket(AF_UNIX, SOCK_STREAM, 0);
	hi = fcntl(c, F_DUPFD, 200);
	close(c);
	if (connect(hi, (void *)&su, sl) < 0)
		return -1;
	return accept(new_unix_l, NULL, NULL);
}

static void i05_rawclose_then_each(void)
{
	static const struct {
		const char *name;
		int (*open_one)(void);
	} calls[] = {{"open", nf_open},         {"openat", nf_openat},       {"fopen", nf_fopen},
		     {"pipe2", nf_pipe},        {"socketpair", nf_socketpair}, {"eventfd", nf_eventfd},
		     {"epoll", nf_epoll},       {"timerfd", nf_timerfd},     {"memfd", nf_memfd},
		     {"dup", nf_dup},           {"fdupfd", nf_fdupfd},       {"unix_accept", nf_unix_accept}};
	struct sockaddr_un su = {.sun_family = AF_UNIX};
	int l = lsn(PORT), i;

	if (l < 0)
		return;
	/* a unix listener on an abstract name the kernel picks (autobind) */
	new_unix_l = socket(AF_UNIX, SOCK_STREAM, 0);
	if (bind(new_unix_l, (void *)&su, sizeof(sa_family_t)) < 0 || listen(new_unix_l, 16) < 0) {
		rv("unix_listen", -1);
		return;
	}
	for (i = 0; i < (int)(sizeof(calls) / sizeof(calls[0])); i++) {
		int c = con(PORT), a, fd, v = -7;
		socklen_t vl = sizeof(v);

		if (c < 0 || !waitev(l, POLLIN, WAIT_MS) || (a = accept(l, NULL, NULL)) < 0) {
			emit("%s=nopair", calls[i].name);
			continue;
		}
		syscall(SYS_close, c);
		fd = take_number(c, calls[i].open_one);
		if (fd != c) {
			emit("%s=notreused", calls[i].name);
			continue;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &vl) < 0)
			emit("%s=%s", calls[i].name, en(errno));
		else
			emit("%s=%s", calls[i].name, v == AF_UNIX ? "AF_UNIX" : v == AF_INET ? "AF_INET" : "other");
	}
}

/* A raw close while another thread blocks in recv, and the number reused:
 * the new file is the program's, the blocked thread is not woken by it. */
static void i05_rawclose_while_recv(void)
{
	int c, a, fd;
	struct blocked t;
	char b[8];

	if (mkpair(&c, &a) < 0)
		return;
	blocked_start(&t, c, 0);
	msleep(200);
	rv("close", syscall(SYS_close, c));
	fd = take_number(c, open_zero);
	emit("reused=%s", fd == c ? "yes" : "no");
	rv("read", read(fd, b, 4));
	rv("close_new", close(fd));
	msleep(2500);
	emit("after=%s", __atomic_load_n(&t.done, __ATOMIC_SEQ_CST) ? "returned" : "blocked");
	emit("peer=%s", evs(waitev(a, POLLIN | POLLRDHUP, 0)));
	sendall(a, "x");
	blocked_result("recv", &t, WAIT_MS);
}

/* ---- issue 11 case 6: wildcard listeners and claimed loopback ---------- */

static void roundtrip(const char *what, int c, int l)
{
	int a;

	if (!waitev(l, POLLIN, WAIT_MS)) {
		emit("%s_accept=timeout", what);
		return;
	}
	a = accept(l, NULL, NULL);
	if (a < 0) {
		rv("accept", -1);
		return;
	}
	send(c, "ping", 4, MSG_NOSIGNAL);
	readn(what, a, 4, WAIT_MS);
	close(a);
}

static void i06_wildcard_v4(void)
{
	int l = lsn_on("0.0.0.0", PORT, 0), c;

	if (l < 0)
		return;
	c = con(PORT);
	rv("connect", c < 0 ? -1 : 0);
	if (c >= 0)
		roundtrip("data", c, l);
}

static void i06_wildcard_v6_dualstack(void)
{
	int l = lsn_on("::", PORT, 0), c;

	if (l < 0)
		return;
	c = con_to(A6, PORT);
	rv("connect6", c < 0 ? -1 : 0);
	if (c >= 0)
		roundtrip("data6", c, l);
	c = con_to(A4, PORT);
	rv("connect4", c < 0 ? -1 : 0);
	if (c >= 0)
		roundtrip("data4", c, l);
}

/* ---- issue 11 case 7: bind to port 0 ------------------------------------ */

static void bind0(const char *addr)
{
	struct sockaddr_storage ss, got;
	socklen_t sl = mkaddr(addr, 0, &ss), gl = sizeof(got);
	int s = socket(fam_of(addr), SOCK_STREAM, 0), p, c;

	rv("bind", bind(s, (void *)&ss, sl));
	memset(&got, 0, sizeof(got));
	if (getsockname(s, (void *)&got, &gl) < 0)
		rv("getsockname", -1);
	else {
		const char *n = saname(&got, &p);
		emit("name=%s:%s", n, portname(p));
	}
	rv("bind_again", bind(s, (void *)&ss, sl));
	rv("listen", listen(s, 4));
	gl = sizeof(got);
	getsockname(s, (void *)&got, &gl);
	saname(&got, &p);
	emit("listen_port=%s", portname(p));
	c = con_to(fam_of(addr) == AF_INET ? A4 : A6, p);
	rv("connect_there", c < 0 ? -1 : 0);
}

static void i07_bind_any_port0(void) { bind0("0.0.0.0"); }
static void i07_bind_lo_port0(void) { bind0(A4); }
static void i07_bind_lo6_port0(void) { bind0(A6); }

static void i07_bind_twice(void)
{
	struct sockaddr_storage ss;
	socklen_t sl = mkaddr(A4, PORT, &ss);
	int s = socket(AF_INET, SOCK_STREAM, 0), s2 = socket(AF_INET, SOCK_STREAM, 0);

	rv("bind", bind(s, (void *)&ss, sl));
	sl = mkaddr(A4, PORT + 1, &ss);
	rv("bind_other_port", bind(s, (void *)&ss, sl));
	sl = mkaddr(A4, PORT, &ss);
	rv("bind_same_port_other_socket", bind(s2, (void *)&ss, sl));
}

/* ---- issue 11 case 8: connect after a failed connect, AF_UNSPEC --------- */

static void i08_reconnect_blocking(void)
{
	int l = lsn(PORT), s = socket(AF_INET, SOCK_STREAM, 0);

	if (l < 0)
		return;
	rv("connect_refused", connect_to(s, A4, PORT + 9));
	rv("connect_again", connect_to(s, A4, PORT));
	roundtrip("data", s, l);
}

static void so_error(const char *what, int s)
{
	int v = -1;
	socklen_t l = sizeof(v);
	if (getsockopt(s, SOL_SOCKET, SO_ERROR, &v, &l) < 0)
		rv(what, -1);
	else
		emit("%s=%s", what, v ? en(v) : "0");
}

static void i08_reconnect_nonblock(void)
{
	int l = lsn(PORT), s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);

	if (l < 0)
		return;
	rv("connect_refused", connect_to(s, A4, PORT + 9));
	settled("poll", s, POLLOUT, WAIT_MS);
	so_error("so_error", s);
	so_error("so_error_again", s);
	rv("connect_again", connect_to(s, A4, PORT));
	settled("poll_again", s, POLLOUT, WAIT_MS);
	so_error("so_error3", s);
	rv("connect_third", connect_to(s, A4, PORT));
	roundtrip("data", s, l);
}

static void i08_connect_unspec(void)
{
	int c, a, l;
	struct sockaddr sa = {.sa_family = AF_UNSPEC};

	if (mkpair(&c, &a) < 0)
		return;
	/* asked twice: NUSE's shim keeps an established socket's names */
	names("peer_first", c, 0, 1);
	names("peer_first_again", c, 0, 1);
	rv("unspec", connect(c, &sa, sizeof(sa)));
	names("peer", c, 0, 1);
	eof("old_peer", a, WAIT_MS);
	l = lsn(PORT + 1);
	if (l < 0)
		return;
	rv("reconnect", connect_to(c, A4, PORT + 1));
	names("peer_second", c, 0, 1);
	names("peer_second_again", c, 0, 1);
	roundtrip("data", c, l);
}

/* ---- issue 11 case 9: shutdown of listeners, SHUT_RD -------------------- */

static void i09_shutdown_listener(void)
{
	int l = lsn(PORT);
	struct blocked t;

	if (l < 0)
		return;
	blocked_start(&t, l, 1);
	msleep(200);
	rv("shutdown", shutdown(l, SHUT_RDWR));
	blocked_result("accept", &t, WAIT_MS);
	emit("poll=%s", evs(waitev(l, ALLEV, 0)));
	int c = con(PORT);
	rv("connect_after", c < 0 ? -1 : 0);
}

static void i09_shut_rd_then_data(void)
{
	int c, a;
	char b[16];
	ssize_t r;

	if (mkpair(&c, &a) < 0)
		return;
	rv("shut_rd", shutdown(c, SHUT_RD));
	rv("recv_before", recv(c, b, sizeof(b), MSG_DONTWAIT));
	sendall(a, "hello");
	msleep(200);
	r = recv(c, b, sizeof(b), MSG_DONTWAIT);
	rv("recv_after", r);
	if (r > 0)
		emit("got=%s", esc(b, r));
	sendall(c, "back");
	readn("peer", a, 4, WAIT_MS);
}

static void i09_shut_wr_then_poll(void)
{
	int c, a;

	if (mkpair(&c, &a) < 0)
		return;
	rv("shut_wr", shutdown(c, SHUT_WR));
	eof("peer", a, WAIT_MS);
	settled("peer_poll", a, POLLIN, WAIT_MS);
	emit("self_poll=%s", evs(waitev(c, ALLEV, 0)));
	rv("send_after", send(c, "x", 1, MSG_NOSIGNAL));
}

/* ---- issue 11 case 10: a thread asleep in a call holds no lock ----------- */

struct later {
	int fd;
	int ms;
	const char *data;
};

static void *send_later(void *p)
{
	struct later *l = p;
	msleep(l->ms);
	send(l->fd, l->data, strlen(l->data), MSG_NOSIGNAL);
	return NULL;
}

static void i10_dontwait_while_blocked(void)
{
	int c, a;
	struct blocked t;
	char b[8];
	pthread_t th;
	struct later lt;
	long t0;

	if (mkpair(&c, &a) < 0)
		return;
	blocked_start(&t, c, 0);
	msleep(200);
	/* if the call below blocks, this unblocks it after 1.5 s */
	lt = (struct later){a, 1500, "x"};
	pthread_create(&th, NULL, send_later, &lt);
	t0 = now_ms();
	rv("dontwait", recv(c, b, sizeof(b), MSG_DONTWAIT));
	emit("fast=%s", now_ms() - t0 < 500 ? "yes" : "no");
	pthread_join(th, NULL);
	blocked_result("blocked_recv", &t, WAIT_MS);
}

/* Reads and drops everything after ms, until 300 ms pass without data. */
static void *drain_later(void *p)
{
	struct later *l = p;
	static char b[65536];
	long end;

	msleep(l->ms);
	end = now_ms() + 5000;
	while (now_ms() < end && waitev(l->fd, POLLIN, 300))
		if (recv(l->fd, b, sizeof(b), MSG_DONTWAIT) <= 0)
			break;
	return NULL;
}

static void i10_dontwait_send_while_blocked_send(void)
{
	int c, a, i;
	static char b[65536];
	struct blocked t;
	pthread_t th;
	struct later lt;
	long t0;

	if (mkpair(&c, &a) < 0)
		return;
	fcntl(c, F_SETFL, O_NONBLOCK);
	for (i = 0; i < 10000 && send(c, b, sizeof(b), MSG_NOSIGNAL) > 0; i++)
		;
	emit("filled=%s", en(errno));
	fcntl(c, F_SETFL, 0);
	blocked_start(&t, c, 2);
	msleep(200);
	/* if the call below blocks, the peer starts reading after 1.5 s */
	lt = (struct later){a, 1500, NULL};
	pthread_create(&th, NULL, drain_later, &lt);
	t0 = now_ms();
	ssize_t r = send(c, "x", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (r >= 0 || errno == EAGAIN) /* Linux: either, as the tail segment has room or not */
		emit("dontwait=1-or-EAGAIN");
	else
		rv("dontwait", r);
	emit("fast=%s", now_ms() - t0 < 500 ? "yes" : "no");
	pthread_join(th, NULL);
	blocked_result("blocked_send", &t, WAIT_MS);
}

static void i10_cancel_blocked_recv(void)
{
	int c, a;
	struct blocked t;
	struct timespec ts;

	if (mkpair(&c, &a) < 0)
		return;
	blocked_start(&t, c, 0);
	msleep(200);
	rv("cancel", pthread_cancel(t.th));
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 2;
	rv("join", -pthread_timedjoin_np(t.th, NULL, &ts));
	sendall(a, "x");
	readn("recv", c, 1, WAIT_MS);
	sendall(c, "y");
	readn("peer", a, 1, WAIT_MS);
}

/* ---- issue 11 case 11: readiness: RDHUP, HUP, ERR, idle listeners, ET --- */

static void i11_poll_after_fin(void)
{
	int c, a, ep = epoll_create1(0);
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI};

	if (mkpair(&c, &a) < 0)
		return;
	epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
	close(a);
	settled("poll", c, POLLIN, WAIT_MS);
	epwait("epoll", ep, 0);
	rv("recv", recv(c, (char[8]){0}, 8, 0));
}

static void i11_poll_after_rst(void)
{
	int c, a, ep = epoll_create1(0);
	struct linger lg = {1, 0};
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI};

	if (mkpair(&c, &a) < 0)
		return;
	epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
	setsockopt(a, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(a);
	settled("poll", c, POLLIN, WAIT_MS);
	epwait("epoll", ep, 0);
	so_error("so_error", c);
	rv("recv", recv(c, (char[8]){0}, 8, 0));
	emit("poll_after=%s", evs(waitev(c, ALLEV, 0)));
	rv("send", send(c, "x", 1, MSG_NOSIGNAL));
}

static void i11_poll_refused(void)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), ep = epoll_create1(0);
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP};

	rv("connect", connect_to(s, A4, PORT + 9));
	epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
	settled("poll", s, POLLOUT, WAIT_MS);
	epwait("epoll", ep, 0);
	so_error("so_error", s);
}

static void i11_listener_idle(void)
{
	int l = lsn(PORT), c;

	if (l < 0)
		return;
	emit("idle=%s", evs(waitev(l, ALLEV, 0)));
	c = con(PORT);
	(void)c;
	settled("pending", l, POLLIN, WAIT_MS);
	close(accept(l, NULL, NULL));
	emit("drained=%s", evs(waitev(l, ALLEV, 0)));
}

static void i11_unconnected_poll(void)
{
	int s = socket(AF_INET, SOCK_STREAM, 0);
	emit("fresh=%s", evs(waitev(s, ALLEV, 0)));
}

static void i11_epollet_new_data(void)
{
	int c, a, ep = epoll_create1(0);
	struct epoll_event ev = {.events = EPOLLIN | EPOLLET};

	if (mkpair(&c, &a) < 0)
		return;
	epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
	sendall(a, "a");
	epwait("first", ep, WAIT_MS);
	epwait("nothing_new", ep, 100);
	sendall(a, "b");
	epwait("second", ep, WAIT_MS);
	readn("read", c, 2, WAIT_MS);
	sendall(a, "c");
	epwait("after_read", ep, WAIT_MS);
}

static void i11_epollet_new_conn(void)
{
	int l = lsn_on(A4, PORT, SOCK_NONBLOCK), ep = epoll_create1(0), n = 0, c1, c2;
	struct epoll_event ev = {.events = EPOLLIN | EPOLLET};

	if (l < 0)
		return;
	epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
	c1 = con(PORT);
	epwait("first", ep, WAIT_MS);
	c2 = con(PORT);
	epwait("second", ep, WAIT_MS);
	(void)c1;
	(void)c2;
	while (accept(l, NULL, NULL) >= 0)
		n++;
	emit("accepted=%d:%s", n, en(errno));
}

static void i11_epollet_accept_one_per_event(void)
{
	/* the server pattern of issue 11: one accept per edge, 20 connections
	 * arriving one after another while it is not looking */
	int l = lsn_on(A4, PORT, SOCK_NONBLOCK), ep = epoll_create1(0), n = 0, i;
	struct epoll_event ev = {.events = EPOLLIN | EPOLLET}, e;

	if (l < 0)
		return;
	epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
	for (i = 0; i < 20; i++) {
		if (con(PORT) < 0) {
			rv("connect", -1);
			break;
		}
		if (epoll_wait(ep, &e, 1, WAIT_MS) == 1 && accept(l, NULL, NULL) >= 0)
			n++;
	}
	emit("accepted=%d", n);
}

/* ---- issue 11 case 12: SA_RESTART of the signal that arrived ------------ */

static void on_usr(int sig) { (void)sig; }

struct sigplan {
	pthread_t target;
	int a;
};

static void *sig_thread(void *p)
{
	struct sigplan *s = p;
	msleep(200);
	pthread_kill(s->target, SIGUSR1); /* SA_RESTART: recv goes on */
	msleep(200);
	send(s->a, "1", 1, MSG_NOSIGNAL);
	msleep(300);
	pthread_kill(s->target, SIGUSR2); /* no SA_RESTART: EINTR */
	msleep(300);
	send(s->a, "2", 1, MSG_NOSIGNAL);
	return NULL;
}

/*
 * Process-directed signals go to the program's threads, never to the
 * shim's own (its Go runtime's threads started with nothing blocked): a
 * signal every program thread blocks waits for signalfd, and SIGCHLD
 * blocked outside sigsuspend wakes sigsuspend (nginx's master).
 */
static void i12_signalfd_blocked(void)
{
	sigset_t s, old;
	struct signalfd_siginfo si;
	int fd;

	sigemptyset(&s);
	sigaddset(&s, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &s, &old);
	fd = signalfd(-1, &s, SFD_CLOEXEC | SFD_NONBLOCK);
	kill(getpid(), SIGUSR2); /* while no thread waits for it */
	msleep(100);
	if (read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
		emit("signalfd=%s", sigabbrev_np((int)si.ssi_signo) ?: "?");
	else
		rv("signalfd", -1);
	close(fd);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static volatile sig_atomic_t chld_got, alrm_got;
static void on_chld(int sig) { (void)sig; chld_got = 1; }
static void on_alrm(int sig) { (void)sig; alrm_got = 1; }

static void i12_sigchld_sigsuspend(void)
{
	struct sigaction sc = {.sa_handler = on_chld}, sa = {.sa_handler = on_alrm}, oc, oa;
	struct itimerval it = {.it_value = {.tv_sec = 2}}, off = {{0, 0}, {0, 0}};
	sigset_t s, old, none;
	pid_t pid;

	chld_got = alrm_got = 0;
	sigaction(SIGCHLD, &sc, &oc);
	sigaction(SIGALRM, &sa, &oa);
	sigemptyset(&s);
	sigaddset(&s, SIGCHLD);
	sigaddset(&s, SIGALRM);
	sigprocmask(SIG_BLOCK, &s, &old);
	pid = fork();
	if (pid == 0)
		_exit(0);
	msleep(200); /* it has exited: SIGCHLD came while blocked */
	setitimer(ITIMER_REAL, &it, NULL); /* a bound, should it not come */
	sigemptyset(&none);
	sigsuspend(&none);
	setitimer(ITIMER_REAL, &off, NULL);
	emit("chld=%d alrm=%d", (int)chld_got, (int)alrm_got);
	waitpid(pid, NULL, 0);
	sigprocmask(SIG_SETMASK, &old, NULL);
	sigaction(SIGCHLD, &oc, NULL);
	sigaction(SIGALRM, &oa, NULL);
}

static void i12_sa_restart_per_signal(void)
{
	int c, a;
	char b[8];
	struct sigaction r = {.sa_handler = on_usr, .sa_flags = SA_RESTART}, nr = {.sa_handler = on_usr};
	struct sigplan sp;
	pthread_t th;
	ssize_t n;

	sigaction(SIGUSR1, &r, NULL);
	sigaction(SIGUSR2, &nr, NULL);
	if (mkpair(&c, &a) < 0)
		return;
	sp = (struct sigplan){pthread_self(), a};
	pthread_create(&th, NULL, sig_thread, &sp);
	n = recv(c, b, sizeof(b), 0);
	rv("recv_usr1", n);
	n = recv(c, b, sizeof(b), 0);
	rv("recv_usr2", n);
	pthread_join(th, NULL);
	readn("then", c, 1, WAIT_MS);
}

/*
 * The rows below interrupt one blocking call after another with signals
 * whose handlers differ, and wait (never sleep) for each step: a helper
 * thread waits until the call has started and the thread sleeps in the
 * kernel, sends the signal, waits for its handler to have run, then does
 * what lets a restarted call finish (sends a byte, connects, accepts).
 */
static volatile sig_atomic_t handled;
static void on_count(int sig)
{
	(void)sig;
	handled++;
}

static void on_count_info(int sig, siginfo_t *si, void *uc)
{
	(void)si;
	(void)uc;
	on_count(sig);
}

struct sigscript {
	pthread_t target;
	pid_t tid;
	int sigs[4], n;
	volatile int calls;               /* the target's calls started so far */
	void (*act)(struct sigscript *, int);
	int fd, port;
};

/* Waits up to WAIT_MS for the thread to sleep in the kernel (state S). */
static int thread_sleeps(pid_t tid)
{
	char path[64], b[512], *p;
	long end = now_ms() + WAIT_MS;

	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)tid);
	while (now_ms() < end) {
		int fd = open(path, O_RDONLY);
		ssize_t n = fd < 0 ? -1 : read(fd, b, sizeof(b) - 1);

		if (fd >= 0)
			close(fd);
		if (n > 0) {
			b[n] = 0;
			p = strrchr(b, ')');
			if (p && (p[2] == 'S' || p[2] == 'D'))
				return 1;
		}
		msleep(1);
	}
	return 0;
}

static void *sigscript_main(void *p)
{
	struct sigscript *s = p;
	long end;
	int i;

	for (i = 0; i < s->n; i++) {
		int before;

		end = now_ms() + WAIT_MS;
		while (__atomic_load_n(&s->calls, __ATOMIC_SEQ_CST) <= i && now_ms() < end)
			msleep(1);
		thread_sleeps(s->tid);
		before = handled;
		pthread_kill(s->target, s->sigs[i]);
		end = now_ms() + WAIT_MS;
		while (handled == before && now_ms() < end)
			msleep(1);
		if (s->act)
			s->act(s, i);
	}
	return NULL;
}

static void sigscript_start(struct sigscript *s, pthread_t *th)
{
	s->target = pthread_self();
	s->tid = (pid_t)syscall(SYS_gettid);
	s->calls = 0;
	pthread_create(th, NULL, sigscript_main, s);
}

static void call_starts(struct sigscript *s) { __atomic_add_fetch(&s->calls, 1, __ATOMIC_SEQ_CST); }

/* SIGUSR1 restarts (SA_RESTART), SIGUSR2 interrupts (no SA_RESTART). */
static void two_handlers(int info)
{
	struct sigaction r = {.sa_handler = on_count, .sa_flags = SA_RESTART}, nr = {.sa_handler = on_count};

	if (info) {
		r.sa_sigaction = on_count_info;
		r.sa_flags |= SA_SIGINFO;
	}
	sigaction(SIGUSR1, &r, NULL);
	sigaction(SIGUSR2, &nr, NULL);
}

static void act_send(struct sigscript *s, int i) { send(s->fd, i ? "2" : "1", 1, MSG_NOSIGNAL); }

static void i12_recv_waits_for_the_handler(void)
{
	/* the same as i12_sa_restart_per_signal, without sleeps, SA_SIGINFO */
	struct sigscript sc = {.sigs = {SIGUSR1, SIGUSR2}, .n = 2, .act = act_send};
	int c, a;
	char b[8];
	pthread_t th;

	two_handlers(1);
	if (mkpair(&c, &a) < 0)
		return;
	sc.fd = a;
	sigscript_start(&sc, &th);
	call_starts(&sc);
	rv("recv_usr1", recv(c, b, sizeof(b), 0));
	call_starts(&sc);
	rv("recv_usr2", recv(c, b, sizeof(b), 0));
	pthread_join(th, NULL);
	readn("then", c, 1, WAIT_MS);
	emit("handled=%d", (int)handled);
}

static void act_connect(struct sigscript *s, int i)
{
	if (i == 0)
		s->fd = con(s->port);
}

static void i12_accept_restart_per_signal(void)
{
	struct sigscript sc = {.sigs = {SIGUSR1, SIGUSR2}, .n = 2, .act = act_connect, .fd = -1, .port = PORT};
	int l = lsn(PORT), a;
	pthread_t th;

	two_handlers(0);
	if (l < 0)
		return;
	sigscript_start(&sc, &th);
	call_starts(&sc);
	a = accept(l, NULL, NULL);
	rv("accept_usr1", a < 0 ? -1 : 0);
	call_starts(&sc);
	rv("accept_usr2", accept(l, NULL, NULL));
	pthread_join(th, NULL);
	rv("client", sc.fd < 0 ? -1 : 0);
	if (a >= 0 && sc.fd >= 0) {
		sendall(sc.fd, "x");
		readn("data", a, 1, WAIT_MS);
	}
}

/*
 * A connect that waits: the listener's queue is full (backlog 1: two
 * connections in Linux, one in gVisor; two non-blocking connects fill
 * either), so its SYN goes unanswered.  SIGUSR2 interrupts the first; the
 * second goes on after SIGUSR1 until the listener closes and its SYN is
 * refused.
 */
static void act_close_listener(struct sigscript *s, int i)
{
	if (i == 1)
		close(s->fd);
}

static void i12_connect_restart_per_signal(void)
{
	struct sigscript sc = {.sigs = {SIGUSR2, SIGUSR1}, .n = 2, .act = act_close_listener};
	struct sockaddr_storage ss;
	socklen_t sl = mkaddr(A4, PORT, &ss);
	int l = socket(AF_INET, SOCK_STREAM, 0), i, s1, s2;
	pthread_t th;

	two_handlers(0);
	set_int(l, SOL_SOCKET, SO_REUSEADDR, 1);
	if (bind(l, (struct sockaddr *)&ss, sl) < 0 || listen(l, 1) < 0) {
		rv("listen", -1);
		return;
	}
	for (i = 0; i < 2; i++)
		connect_to(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), A4, PORT);
	sc.fd = l;
	s1 = socket(AF_INET, SOCK_STREAM, 0);
	s2 = socket(AF_INET, SOCK_STREAM, 0);
	sigscript_start(&sc, &th);
	call_starts(&sc);
	rv("connect_usr2", connect_to(s1, A4, PORT));
	call_starts(&sc);
	rv("connect_usr1", connect_to(s2, A4, PORT));
	pthread_join(th, NULL);
}

/* siginterrupt and sigset are deprecated, and programs still call them */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
static void i12_signal_family(void)
{
	/* handlers installed through signal() (BSD: SA_RESTART), siginterrupt,
	 * sysv_signal (one-shot, no SA_RESTART) and sigset (no SA_RESTART) */
	struct sigscript sc = {.sigs = {SIGUSR1, SIGUSR2, SIGWINCH, SIGPWR}, .n = 4, .act = act_send};
	struct sigaction o;
	int c, a;
	char b[8];
	pthread_t th;

	signal(SIGUSR1, on_count);
	signal(SIGUSR2, on_count);
	siginterrupt(SIGUSR2, 1);
	sysv_signal(SIGWINCH, on_count);
	sigset(SIGPWR, on_count); /* not SIGURG: the Go runtime in libnuse.so sends it to its threads */
	if (mkpair(&c, &a) < 0)
		return;
	sc.fd = a;
	sigscript_start(&sc, &th);
	call_starts(&sc);
	rv("signal", recv(c, b, 1, 0));
	call_starts(&sc);
	rv("siginterrupt", recv(c, b, 1, 0));
	readn("then", c, 1, WAIT_MS);
	call_starts(&sc);
	rv("sysv_signal", recv(c, b, 1, 0));
	readn("then", c, 1, WAIT_MS);
	call_starts(&sc);
	rv("sigset", recv(c, b, 1, 0));
	pthread_join(th, NULL);
	readn("then", c, 1, WAIT_MS);
	sigaction(SIGWINCH, NULL, &o);
	emit("sysv_after=%s", o.sa_handler == SIG_DFL ? "DFL" : o.sa_handler == on_count ? "handler" : "other");
	emit("handled=%d", (int)handled);
}
#pragma GCC diagnostic pop

static void i12_timeout_interrupts(void)
{
	/* with SO_RCVTIMEO even an SA_RESTART handler interrupts (EINTR) */
	struct sigscript sc = {.sigs = {SIGUSR1}, .n = 1, .act = act_send};
	struct timeval tv = {WAIT_MS / 1000 + 2, 0};
	int c, a;
	char b[8];
	pthread_t th;

	two_handlers(0);
	if (mkpair(&c, &a) < 0)
		return;
	setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	sc.fd = a;
	sigscript_start(&sc, &th);
	call_starts(&sc);
	rv("recv_usr1", recv(c, b, sizeof(b), 0));
	pthread_join(th, NULL);
	readn("then", c, 1, WAIT_MS);
}

static void act_nothing(struct sigscript *s, int i)
{
	(void)s;
	(void)i;
}

static void i12_epoll_wait_eintr(void)
{
	/* epoll_wait is never restarted: EINTR with SA_RESTART too (and the
	 * shim's spin before the sleep must not hide the handler) */
	struct sigscript sc = {.sigs = {SIGUSR1, SIGUSR2}, .n = 2, .act = act_nothing};
	struct epoll_event ev = {.events = EPOLLIN}, got;
	int c, a, ep = epoll_create1(0);
	pthread_t th;

	two_handlers(0);
	if (mkpair(&c, &a) < 0)
		return;
	ev.data.fd = c;
	epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
	sigscript_start(&sc, &th);
	call_starts(&sc);
	rv("epoll_usr1", epoll_wait(ep, &got, 1, 3 * WAIT_MS));
	call_starts(&sc);
	rv("epoll_pwait_usr2", epoll_pwait(ep, &got, 1, 3 * WAIT_MS, NULL));
	pthread_join(th, NULL);
	send(a, "x", 1, MSG_NOSIGNAL);
	rv("then", epoll_wait(ep, &got, 1, WAIT_MS));
	close(ep);
}

static void i12_partial_then_signal(void)
{
	/* a blocking send that queued part, and a MSG_WAITALL recv that got
	 * part, return what they moved when a signal comes, SA_RESTART or not */
	static char big[64 << 20];
	struct sigscript sc = {.sigs = {SIGUSR1, SIGUSR1}, .n = 2, .act = act_nothing};
	int c, a;
	char b[16];
	long r;
	pthread_t th;

	two_handlers(0);
	if (mkpair(&c, &a) < 0)
		return;
	sendall(a, "x");
	/* NUSE delivers asynchronously: with "x" not yet readable, the signal
	 * would find a recv that got nothing and restarts (as Linux's would),
	 * and the script's next signal would come before the send */
	waitev(c, POLLIN, WAIT_MS);
	sigscript_start(&sc, &th);
	call_starts(&sc);
	rv("waitall_usr1", recv(c, b, sizeof(b), MSG_WAITALL));
	call_starts(&sc);
	r = send(c, big, sizeof(big), MSG_NOSIGNAL);
	emit("send_usr1=%s", r > 0 && r < (long)sizeof(big) ? "partial" : r < 0 ? en(errno) : "all");
	pthread_join(th, NULL);
}

#ifdef __x86_64__
/* A handler installed behind libc's back (raw rt_sigaction): the kernel's
 * struct, and a restorer of our own (x86-64: rt_sigreturn). */
struct ksigaction {
	void *handler;
	unsigned long flags;
	void *restorer;
	uint64_t mask;
};
void conform_restorer(void);
__asm__(".text\n.globl conform_restorer\nconform_restorer:\n\tmov $15, %rax\n\tsyscall\n");

static long raw_sigaction(int sig, void (*h)(int), unsigned long flags)
{
	struct ksigaction k = {(void *)h, flags | 0x04000000 /* SA_RESTORER */, (void *)conform_restorer, 0};

	return syscall(SYS_rt_sigaction, sig, &k, NULL, 8);
}
#endif

static void show_action(const char *what, const struct sigaction *o);

static void i12_raw_handlers_fall_back(void)
{
	/* handlers the shim did not install: their SA_RESTART still decides
	 * when they are alike (here: SIGUSR1 without, then all with) */
#ifdef __x86_64__
	struct sigscript sc = {.sigs = {SIGUSR1, SIGUSR2}, .n = 2, .act = act_send};
	struct sigaction r = {.sa_handler = on_count, .sa_flags = SA_RESTART}, o;
	int c, a;
	char b[8];
	pthread_t th;

	sigaction(SIGUSR1, &r, NULL);
	rv("raw", raw_sigaction(SIGUSR1, on_count, 0));
	sigaction(SIGUSR1, NULL, &o);
	show_action("reads", &o);
	if (mkpair(&c, &a) < 0)
		return;
	sc.fd = a;
	sigscript_start(&sc, &th);
	call_starts(&sc);
	rv("recv_raw_usr1", recv(c, b, sizeof(b), 0));
	readn("then", c, 1, WAIT_MS);
	sigaction(SIGUSR1, &r, NULL);
	raw_sigaction(SIGUSR2, on_count, SA_RESTART);
	call_starts(&sc);
	rv("recv_raw_usr2", recv(c, b, sizeof(b), 0));
	pthread_join(th, NULL);
	emit("handled=%d", (int)handled);
#else
	emit("skipped");
#endif
}

static volatile sig_atomic_t other_ran;
static void on_other(int sig)
{
	(void)sig;
	other_ran++;
}

static void i12_vfork_child_handler(void)
{
	/* a vfork child has signal actions of its own: what it installs
	 * before exec is not the parent's handler */
	struct sigaction r = {.sa_handler = on_count, .sa_flags = SA_RESTART}, o;
	pid_t pid;

	sigaction(SIGUSR1, &r, NULL);
	pid = vfork();
	if (pid == 0) {
		signal(SIGUSR1, on_other);
		_exit(0);
	}
	child_status("child", pid, WAIT_MS);
	raise(SIGUSR1);
	emit("handled=%d other=%d", (int)handled, (int)other_ran);
	sigaction(SIGUSR1, NULL, &o);
	emit("reads=%s", o.sa_handler == on_count ? "on_count" : o.sa_handler == on_other ? "on_other" : "other");
}

static const char *hname(void *h)
{
	if (h == (void *)SIG_DFL)
		return "DFL";
	if (h == (void *)SIG_IGN)
		return "IGN";
	if (h == (void *)on_count)
		return "on_count";
	if (h == (void *)on_count_info)
		return "on_count_info";
	if (h == (void *)on_usr)
		return "on_usr";
	return "other";
}

static void show_action(const char *what, const struct sigaction *o)
{
	emit("%s=%s/%#x/%s", what, hname(o->sa_flags & SA_SIGINFO ? (void *)o->sa_sigaction : (void *)o->sa_handler),
	     (unsigned)o->sa_flags & ~0x04000000u /* SA_RESTORER: libc's */, sigismember(&o->sa_mask, SIGINT) ? "INT" : "-");
}

static void i12_sigaction_reports_handler(void)
{
	/* the old action is the program's handler, flags and mask; after
	 * SA_RESETHAND it is SIG_DFL (flags kept, as Linux does) */
	struct sigaction r = {.sa_sigaction = on_count_info, .sa_flags = SA_SIGINFO | SA_RESTART}, o, q;
	struct sigaction once = {.sa_handler = on_count, .sa_flags = SA_RESETHAND};

	sigemptyset(&r.sa_mask);
	sigaddset(&r.sa_mask, SIGINT);
	rv("set", sigaction(SIGUSR1, &r, &o));
	show_action("before", &o);
	rv("get", sigaction(SIGUSR1, NULL, &o));
	show_action("now", &o);
	q = (struct sigaction){.sa_handler = on_usr};
	sigaction(SIGUSR1, &q, &o);
	show_action("replaced", &o);
	emit("signal=%s", hname((void *)signal(SIGUSR1, SIG_IGN)));
	emit("signal2=%s", hname((void *)signal(SIGUSR1, on_count)));
	emit("sysv=%s", hname((void *)sysv_signal(SIGUSR1, on_usr)));
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
	emit("sigset=%s", hname((void *)sigset(SIGUSR1, SIG_DFL)));
#pragma GCC diagnostic pop
	sigaction(SIGUSR1, NULL, &o);
	show_action("last", &o);
	rv("bad", sigaction(SIGKILL, &r, NULL));
	rv("bad_signal", (long)(signal(0, on_count) == SIG_ERR ? -1 : 0));

	sigaction(SIGWINCH, &once, NULL);
	raise(SIGWINCH);
	sigaction(SIGWINCH, NULL, &o);
	show_action("resethand_after", &o);
	/* the program's own SA_ONSTACK shows; the shim's (signals.c) not */
	q = (struct sigaction){.sa_handler = on_usr, .sa_flags = SA_ONSTACK};
	sigaction(SIGUSR2, &q, NULL);
	sigaction(SIGUSR2, NULL, &o);
	show_action("onstack", &o);
	q.sa_flags = 0;
	sigaction(SIGUSR2, &q, &o);
	show_action("onstack_old", &o);
	sigaction(SIGUSR2, NULL, &o);
	show_action("not_onstack", &o);
	raise(SIGWINCH); /* default: ignored */
	emit("handled=%d", (int)handled);
}

/* ---- issue 11 case 13: flags and options -------------------------------- */

static void i13_recv_null_trunc(void)
{
	int c, a;
	char b[16];

	if (mkpair(&c, &a) < 0)
		return;
	sendall(a, "helloworld");
	waitev(c, POLLIN, WAIT_MS);
	msleep(100);
	rv("trunc", recv(c, NULL, 5, MSG_TRUNC));
	ssize_t r = recv(c, b, sizeof(b), MSG_DONTWAIT);
	emit("rest=%s", esc(b, r));
}

static void i13_peek_and_waitall(void)
{
	int c, a;
	char b[16];
	ssize_t r;

	if (mkpair(&c, &a) < 0)
		return;
	sendall(a, "hello");
	waitev(c, POLLIN, WAIT_MS);
	msleep(100);
	r = recv(c, b, sizeof(b), MSG_PEEK);
	emit("peek=%s", esc(b, r));
	struct later lt = {a, 300, "world"};
	pthread_t th;
	pthread_create(&th, NULL, send_later, &lt);
	r = recv(c, b, 10, MSG_WAITALL);
	emit("waitall=%s", esc(b, r));
	pthread_join(th, NULL);
}

static void i13_errqueue(void)
{
	int c, a;
	char b[16], cb[64];
	struct iovec v = {b, sizeof(b)};
	struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1, .msg_control = cb, .msg_controllen = sizeof(cb)};

	if (mkpair(&c, &a) < 0)
		return;
	sendall(a, "hello");
	waitev(c, POLLIN, WAIT_MS);
	msleep(100);
	rv("errqueue", recvmsg(c, &m, MSG_ERRQUEUE));
	ssize_t r = recv(c, b, sizeof(b), MSG_DONTWAIT);
	emit("data=%s", esc(b, r));
}

static void i13_oob(void)
{
	int c, a, mark = -1;
	char b[16];
	ssize_t r;

	if (mkpair(&c, &a) < 0)
		return;
	sendall(a, "ab");
	rv("send_oob", send(a, "c", 1, MSG_OOB));
	waitev(c, POLLIN, WAIT_MS);
	msleep(100);
	emit("poll=%s", evs(waitev(c, POLLIN | POLLPRI, 0)));
	rv("atmark", ioctl(c, SIOCATMARK, &mark) < 0 ? -1 : mark);
	r = recv(c, b, 1, MSG_OOB);
	rv("recv_oob", r);
	if (r > 0)
		emit("oob=%s", esc(b, r));
	r = recv(c, b, sizeof(b), MSG_DONTWAIT);
	emit("inline=%s", esc(b, r));
}

static const struct opt {
	const char *name;
	int level, opt, val;
} opts[] = {
	{"SO_RCVLOWAT", SOL_SOCKET, SO_RCVLOWAT, 5},
	{"SO_KEEPALIVE", SOL_SOCKET, SO_KEEPALIVE, 1},
	{"SO_PRIORITY", SOL_SOCKET, SO_PRIORITY, 3},
	{"SO_ZEROCOPY", SOL_SOCKET, SO_ZEROCOPY, 1},
	{"SO_OOBINLINE", SOL_SOCKET, SO_OOBINLINE, 1},
	{"IP_TOS", IPPROTO_IP, IP_TOS, 0x10},
	{"TCP_NODELAY", IPPROTO_TCP, TCP_NODELAY, 1},
	{"TCP_USER_TIMEOUT", IPPROTO_TCP, TCP_USER_TIMEOUT, 3000},
	{"TCP_KEEPIDLE", IPPROTO_TCP, TCP_KEEPIDLE, 30},
	{"TCP_KEEPINTVL", IPPROTO_TCP, TCP_KEEPINTVL, 7},
	{"TCP_KEEPCNT", IPPROTO_TCP, TCP_KEEPCNT, 4},
	{"TCP_MAXSEG", IPPROTO_TCP, TCP_MAXSEG, 1200},
};

static void get_opt(const struct opt *o, int fd)
{
	int v = -7;
	socklen_t l = sizeof(v);
	if (getsockopt(fd, o->level, o->opt, &v, &l) < 0)
		emit("%s=get:%s", o->name, en(errno));
	else if (o->opt == TCP_MAXSEG && o->level == IPPROTO_TCP)
		emit("%s=%s", o->name, v > 0 && v <= o->val ? "<=set" : "other");
	else
		emit("%s=%d", o->name, v);
}

static void i13_options_after_connect(void)
{
	int c, a;
	size_t i;

	if (mkpair(&c, &a) < 0)
		return;
	for (i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
		if (opts[i].opt == TCP_MAXSEG)
			continue; /* only before connect */
		if (setsockopt(c, opts[i].level, opts[i].opt, &opts[i].val, sizeof(int)) < 0)
			emit("%s=set:%s", opts[i].name, en(errno));
		else
			get_opt(&opts[i], c);
	}
}

static void i13_options_before_connect(void)
{
	int l = lsn(PORT), s = socket(AF_INET, SOCK_STREAM, 0);
	size_t i;

	if (l < 0)
		return;
	for (i = 0; i < sizeof(opts) / sizeof(opts[0]); i++)
		if (setsockopt(s, opts[i].level, opts[i].opt, &opts[i].val, sizeof(int)) < 0)
			emit("%s=set:%s", opts[i].name, en(errno));
	rv("connect", connect_to(s, A4, PORT));
	for (i = 0; i < sizeof(opts) / sizeof(opts[0]); i++)
		get_opt(&opts[i], s);
}

/* More options before the decision than the shim may keep for replay:
 * 16 sets of IP_TOS first, then the ones read back. */
static void i13_options_replay_beyond_16(void)
{
	int l = lsn(PORT), s = socket(AF_INET, SOCK_STREAM, 0), i, v;
	socklen_t len;

	if (l < 0)
		return;
	for (i = 0; i < 16; i++)
		set_int(s, IPPROTO_IP, IP_TOS, (i % 4) * 8);
	rv("nodelay", setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int)));
	rv("keepalive", setsockopt(s, SOL_SOCKET, SO_KEEPALIVE, &(int){1}, sizeof(int)));
	rv("keepidle", setsockopt(s, IPPROTO_TCP, TCP_KEEPIDLE, &(int){45}, sizeof(int)));
	rv("connect", connect_to(s, A4, PORT));
	len = sizeof(v), v = -7;
	getsockopt(s, IPPROTO_TCP, TCP_NODELAY, &v, &len);
	emit("TCP_NODELAY=%d", v);
	len = sizeof(v), v = -7;
	getsockopt(s, SOL_SOCKET, SO_KEEPALIVE, &v, &len);
	emit("SO_KEEPALIVE=%d", v);
	len = sizeof(v), v = -7;
	getsockopt(s, IPPROTO_TCP, TCP_KEEPIDLE, &v, &len);
	emit("TCP_KEEPIDLE=%d", v);
}

static void i13_rcvlowat_poll(void)
{
	int c, a;
	char b[16];

	if (mkpair(&c, &a) < 0)
		return;
	set_int(c, SOL_SOCKET, SO_RCVLOWAT, 5);
	sendall(a, "abc");
	msleep(200);
	emit("poll_3=%s", evs(waitev(c, POLLIN, 0)));
	sendall(a, "de");
	settled("poll_5", c, POLLIN, WAIT_MS);
	ssize_t r = recv(c, b, sizeof(b), MSG_DONTWAIT);
	emit("got=%s", esc(b, r));
}

/* A blocking recv waits for SO_RCVLOWAT bytes (or the length asked for). */
static void i13_rcvlowat_recv(void)
{
	int c, a;
	char b[16];
	pthread_t th;
	struct later lt;

	if (mkpair(&c, &a) < 0)
		return;
	set_int(c, SOL_SOCKET, SO_RCVLOWAT, 5);
	sendall(a, "abc");
	msleep(100);
	lt = (struct later){a, 300, "defgh"};
	pthread_create(&th, NULL, send_later, &lt);
	ssize_t r = recv(c, b, sizeof(b), 0);
	emit("got=%s", esc(b, r));
	pthread_join(th, NULL);
	sendall(a, "fg");
	msleep(100);
	r = recv(c, b, 2, 0); /* asks for fewer than SO_RCVLOWAT: no wait */
	emit("short=%s", esc(b, r));
	int v = 0;
	socklen_t l = sizeof(v);
	rv("getsockopt", getsockopt(c, SOL_SOCKET, SO_RCVLOWAT, &v, &l));
	emit("lowat=%d", v);
}

static void i13_ioctls(void)
{
	int c, a, n;

	if (mkpair(&c, &a) < 0)
		return;
	sendall(a, "hello");
	msleep(200);
	n = -7;
	rv("fionread", ioctl(c, FIONREAD, &n) < 0 ? -1 : n);
	n = -7;
	rv("siocinq", ioctl(c, SIOCINQ, &n) < 0 ? -1 : n);
	sendall(c, "xyz");
	msleep(200);
	n = -7;
	rv("siocoutq", ioctl(c, SIOCOUTQ, &n) < 0 ? -1 : n);
	n = -7;
	rv("siocoutqnsd", ioctl(c, SIOCOUTQNSD, &n) < 0 ? -1 : n);
	n = -7;
	rv("atmark", ioctl(c, SIOCATMARK, &n) < 0 ? -1 : n);
}

static void i13_fionread_listener(void)
{
	int l = lsn(PORT), n = -7;

	if (l < 0)
		return;
	rv("fionread", ioctl(l, FIONREAD, &n));
	emit("value=%d", n);
}

static void i13_failed_getsockopt_keeps_value(void)
{
	int c, a, v;
	socklen_t l;

	if (mkpair(&c, &a) < 0)
		return;
	v = 12345, l = sizeof(v);
	rv("sol_socket_bad", getsockopt(c, SOL_SOCKET, 0x7777, &v, &l));
	emit("v=%d,l=%u", v, l);
	v = 12345, l = sizeof(v);
	rv("tcp_bad", getsockopt(c, IPPROTO_TCP, 0x7777, &v, &l));
	emit("v=%d,l=%u", v, l);
	v = 12345, l = sizeof(v);
	rv("ip_bad", getsockopt(c, IPPROTO_IP, 0x7777, &v, &l));
	emit("v=%d,l=%u", v, l);
	v = 12345, l = sizeof(v);
	rv("ipv6_on_v4", getsockopt(c, IPPROTO_IPV6, IPV6_V6ONLY, &v, &l));
	emit("v=%d,l=%u", v, l);
}

static void i13_tcp_info(void)
{
	int c, a;
	struct tcp_info ti;
	socklen_t l = sizeof(ti);

	if (mkpair(&c, &a) < 0)
		return;
	memset(&ti, 0, sizeof(ti));
	rv("tcp_info", getsockopt(c, IPPROTO_TCP, TCP_INFO, &ti, &l));
	emit("state=%u", ti.tcpi_state);
	close(a);
	msleep(200);
	l = sizeof(ti);
	getsockopt(c, IPPROTO_TCP, TCP_INFO, &ti, &l);
	emit("state_after_fin=%u", ti.tcpi_state);
}

/* ---- issue 11 case 14: many sockets in one process pair ------------------ */

static void i14_many_sockets(void)
{
	enum { N = 1100 };
	struct rlimit rl = {8192, 8192};
	int l, rep[2], n = 0, i;
	pid_t pid;
	long end;
	char b[64] = "";

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 8192) {
		rl.rlim_cur = rl.rlim_max < 8192 ? rl.rlim_max : 8192;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	l = lsn_on(A4, PORT, SOCK_NONBLOCK);
	if (l < 0 || pipe(rep) < 0)
		return;
	pid = fork();
	if (pid == 0) {
		const char *err = "none";
		close(l);
		for (i = 0; i < N; i++)
			if (con(PORT) < 0) {
				err = en(errno);
				break;
			}
		dprintf(rep[1], "connected=%d:%s", i, err);
		close(rep[1]);
		pause();
		_exit(0);
	}
	close(rep[1]);
	end = now_ms() + 20000;
	while (n < N && now_ms() < end) {
		int a = accept(l, NULL, NULL);
		if (a >= 0) {
			n++;
			continue;
		}
		if (errno != EAGAIN) {
			emit("accept_failed_at=%d:%s", n, en(errno));
			break;
		}
		if (waitev(rep[0], POLLIN, 0))
			if (!waitev(l, POLLIN, 200))
				break; /* the client has finished and nothing more comes */
		waitev(l, POLLIN, 100);
	}
	if (waitev(rep[0], POLLIN, 5000) && read(rep[0], b, sizeof(b) - 1) > 0)
		emit("%s", b);
	else
		emit("connected=timeout");
	emit("accepted=%d", n);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

/* ---- matching Linux today; keep them so ---------------------------------- */

static void keep_reuseport(void)
{
	int l1 = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), l2 = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	struct sockaddr_storage ss;
	socklen_t sl = mkaddr(A4, PORT, &ss);
	int n1 = 0, n2 = 0, i;

	set_int(l1, SOL_SOCKET, SO_REUSEPORT, 1);
	set_int(l2, SOL_SOCKET, SO_REUSEPORT, 1);
	rv("bind1", bind(l1, (void *)&ss, sl));
	rv("bind2", bind(l2, (void *)&ss, sl));
	rv("listen1", listen(l1, 64));
	rv("listen2", listen(l2, 64));
	for (i = 0; i < 32; i++)
		if (con(PORT) < 0)
			break;
	msleep(200);
	while (accept(l1, NULL, NULL) >= 0)
		n1++;
	while (accept(l2, NULL, NULL) >= 0)
		n2++;
	emit("total=%d both=%s", n1 + n2, n1 && n2 ? "yes" : "no");
}

static void keep_fstat_and_identity(void)
{
	int c, a, v;
	socklen_t l;
	struct stat st;

	if (mkpair(&c, &a) < 0)
		return;
	rv("fstat", fstat(c, &st));
	emit("sock=%d", S_ISSOCK(st.st_mode));
	l = sizeof(v);
	getsockopt(c, SOL_SOCKET, SO_DOMAIN, &v, &l);
	emit("domain=%d", v);
	l = sizeof(v);
	getsockopt(c, SOL_SOCKET, SO_TYPE, &v, &l);
	emit("type=%d", v);
	l = sizeof(v);
	getsockopt(c, SOL_SOCKET, SO_PROTOCOL, &v, &l);
	emit("protocol=%d", v);
	l = sizeof(v);
	getsockopt(c, SOL_SOCKET, SO_ACCEPTCONN, &v, &l);
	emit("acceptconn=%d", v);
}

static void keep_sendfile(void)
{
	enum { SZ = 200000 };
	int c, a, mf = memfd_create("conform", 0), i;
	static unsigned char b[SZ];
	off_t off = 0;
	long sent = 0, got = 0, end;
	uint64_t h = 1469598103934665603ull;

	if (mkpair(&c, &a) < 0)
		return;
	for (i = 0; i < SZ; i++)
		b[i] = (unsigned char)(i * 7 + i / 251);
	if (write(mf, b, SZ) != SZ)
		return;
	fcntl(a, F_SETFL, O_NONBLOCK);
	end = now_ms() + 5000;
	while ((sent < SZ || got < SZ) && now_ms() < end) {
		if (sent < SZ) {
			fcntl(c, F_SETFL, O_NONBLOCK);
			ssize_t r = sendfile(c, mf, &off, (size_t)(SZ - sent));
			if (r > 0)
				sent += r;
		}
		ssize_t r = recv(a, b, sizeof(b), 0);
		if (r > 0) {
			for (ssize_t k = 0; k < r; k++)
				h = (h ^ b[k]) * 1099511628211ull;
			got += r;
		} else {
			waitev(a, POLLIN, 10);
		}
	}
	emit("sent=%ld got=%ld sum=%016llx", sent, got, (unsigned long long)h);
}

/* sendfile with the file's own position (no offset), blocking, asked for
 * more than the file holds: it sends what there is, the position moves by
 * that, and a second call at EOF sends nothing; then a count of 0, and a
 * file opened write-only (EBADF). */
static void keep_sendfile_pos(void)
{
	enum { SZ = 300000, SKIP = 1000 };
	int c, a, mf = memfd_create("conform", 0), wo, i, p[2];
	static unsigned char b[SZ];
	char res[64] = "";
	pid_t pid;
	ssize_t r;

	if (mkpair(&c, &a) < 0 || pipe(p) < 0)
		return;
	for (i = 0; i < SZ; i++)
		b[i] = (unsigned char)(i * 13 + i / 509);
	if (write(mf, b, SZ) != SZ || lseek(mf, SKIP, SEEK_SET) != SKIP)
		return;
	pid = fork();
	if (pid == 0) { /* the reader, so that a blocking sendfile can finish */
		uint64_t h = 1469598103934665603ull;
		long n = 0;
		int len;

		close(c);
		while (n < SZ - SKIP) {
			ssize_t k = recv(a, b, sizeof(b), 0);

			if (k <= 0)
				break;
			for (ssize_t j = 0; j < k; j++)
				h = (h ^ b[j]) * 1099511628211ull;
			n += k;
		}
		len = snprintf(res, sizeof(res), "recv=%ld sum=%016llx", n, (unsigned long long)h);
		if (write(p[1], res, (size_t)len) < 0)
			_exit(1);
		_exit(0);
	}
	close(a);
	close(p[1]);
	r = sendfile(c, mf, NULL, SZ * 2);
	emit("sent=%ld pos=%ld", (long)r, (long)lseek(mf, 0, SEEK_CUR));
	rv("at-eof", sendfile(c, mf, NULL, 4096));
	rv("zero", sendfile(c, mf, NULL, 0));
	wo = open("/dev/null", O_WRONLY);
	rv("write-only", sendfile(c, wo, NULL, 10));
	close(wo);
	rv("from-socket", sendfile(c, c, NULL, 10));
	{
		int q[2], d = open("/", O_RDONLY | O_DIRECTORY);
		off_t o = 0;

		if (pipe(q) == 0 && write(q[1], "x", 1) == 1) {
			rv("from-pipe", sendfile(c, q[0], NULL, 1));
			rv("from-pipe-at", sendfile(c, q[0], &o, 1));
			close(q[0]);
			close(q[1]);
		}
		rv("from-dir", sendfile(c, d, NULL, 1));
		rv("from-dir-at", sendfile(c, d, &o, 1));
		close(d);
	}
	child_status("reader", pid, WAIT_MS);
	if (read(p[0], res, sizeof(res) - 1) > 0)
		emit("%s", res);
	close(p[0]);
}

static void keep_fork_child_sends(void)
{
	int c, a;
	pid_t pid;

	if (mkpair(&c, &a) < 0)
		return;
	pid = fork();
	if (pid == 0) {
		send(c, "child", 5, MSG_NOSIGNAL);
		_exit(0);
	}
	child_status("child", pid, WAIT_MS);
	readn("peer", a, 5, WAIT_MS);
	sendall(c, "parent");
	readn("peer2", a, 6, WAIT_MS);
	close(c);
	eof("peer3", a, WAIT_MS);
}

static void keep_nonblocking_accept_empty(void)
{
	int l = lsn_on(A4, PORT, SOCK_NONBLOCK);
	if (l < 0)
		return;
	rv("accept", accept(l, NULL, NULL));
	rv("accept4", accept4(l, NULL, NULL, SOCK_CLOEXEC));
}

static void i08_refused_so_error(void)
{
	int s = socket(AF_INET, SOCK_STREAM, 0);
	rv("connect", connect_to(s, A4, PORT + 9));
	so_error("so_error", s);
	int s6 = socket(AF_INET6, SOCK_STREAM, 0);
	rv("connect6", connect_to(s6, A6, PORT + 9));
}

/* A socket in an epoll set before a refused connect stays in it through the
 * reconnect (NUSE gives it a new file then: issue 11 cases 8, 11). */
static void i08_reconnect_epoll(void)
{
	int l = lsn(PORT), s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), ep = epoll_create1(0);
	struct epoll_event ev = {.events = EPOLLOUT | EPOLLET, .data.u64 = 0x5eed0000beefull};
	struct epoll_event got;
	int n;

	if (l < 0)
		return;
	epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
	rv("connect_refused", connect_to(s, A4, PORT + 9));
	settled("poll", s, POLLOUT, WAIT_MS); /* NUSE's ERR|HUP and OUT come as two wake-ups */
	epwait("epoll", ep, 0);
	so_error("so_error", s);
	rv("connect_again", connect_to(s, A4, PORT));
	rv("connect_third", connect_to(s, A4, PORT));
	n = epoll_wait(ep, &got, 1, WAIT_MS);
	emit("epoll_third=%d:%s:%s", n, n > 0 ? evs(got.events) : "-",
	     n > 0 && got.data.u64 == ev.data.u64 ? "same_data" : "other_data");
	so_error("so_error3", s);
	roundtrip("data", s, l);
}

/* A listener shut down listens again (NUSE gives it a new file: case 9). */
static void i09_relisten_after_shutdown(void)
{
	int l = lsn(PORT), c;

	if (l < 0)
		return;
	rv("shutdown", shutdown(l, SHUT_RDWR));
	settled("poll", l, POLLOUT, WAIT_MS);
	rv("listen_again", listen(l, 8));
	emit("idle=%s", evs(waitev(l, ALLEV, 0)));
	c = con(PORT);
	rv("connect", c < 0 ? -1 : 0);
	settled("pending", l, POLLIN, WAIT_MS);
	roundtrip("data", c, l);
}

/* ---- the table ------------------------------------------------------------ */

static const struct kase {
	const char *name;
	void (*fn)(void);
} cases[] = {
#define C(f) {#f, f}
	C(i01_epoll_before_connect),
	C(i01_epoll_before_connect_v6),
	C(i01_epoll_before_listen),
	C(i01_fsetown_before_connect),
	C(i02_exec_inherit),
	C(i02_inetd_dup2_exec),
	C(i02_scm_rights_fork),
	C(i02_scm_rights_exec),
	C(i02_listener_exec_shared),
	C(i02_listener_exec_handoff),
	C(i02_listener_scm_rights),
	C(i02_scm_rights_names),
	C(i02_exec_leaked_parent_keeps),
	C(i03_stdio_fdopen),
	C(i03_dprintf),
	C(i03_sendmmsg),
	C(i03_recvmmsg),
	C(i03_splice_to_sock),
	C(i03_splice_from_sock),
	C(i03_sendmmsg_errors),
	C(i03_recvmmsg_modes),
	C(i03_splice_errors),
	C(i03_splice_no_loss),
	C(i03_dprintf_long),
	C(i03_syscall_rw),
	C(i03_syscall_names),
	C(i04_close_while_recv),
	C(i04_dup2_while_recv),
	C(i05_fclose_then_pipe),
	C(i05_rawclose_then_open),
	C(i05_rawclose_then_udp),
	C(i05_rawclose_then_each),
	C(i05_rawclose_while_recv),
	C(i06_wildcard_v4),
	C(i06_wildcard_v6_dualstack),
	C(i07_bind_any_port0),
	C(i07_bind_lo_port0),
	C(i07_bind_lo6_port0),
	C(i07_bind_twice),
	C(i08_reconnect_blocking),
	C(i08_reconnect_nonblock),
	C(i08_connect_unspec),
	C(i08_refused_so_error),
	C(i08_reconnect_epoll),
	C(i09_relisten_after_shutdown),
	C(i09_shutdown_listener),
	C(i09_shut_rd_then_data),
	C(i09_shut_wr_then_poll),
	C(i10_dontwait_while_blocked),
	C(i10_dontwait_send_while_blocked_send),
	C(i10_cancel_blocked_recv),
	C(i11_poll_after_fin),
	C(i11_poll_after_rst),
	C(i11_poll_refused),
	C(i11_listener_idle),
	C(i11_unconnected_poll),
	C(i11_epollet_new_data),
	C(i11_epollet_new_conn),
	C(i11_epollet_accept_one_per_event),
	C(i12_signalfd_blocked),
	C(i12_sigchld_sigsuspend),
	C(i12_sa_restart_per_signal),
	C(i12_recv_waits_for_the_handler),
	C(i12_accept_restart_per_signal),
	C(i12_connect_restart_per_signal),
	C(i12_signal_family),
	C(i12_timeout_interrupts),
	C(i12_epoll_wait_eintr),
	C(i12_partial_then_signal),
	C(i12_raw_handlers_fall_back),
	C(i12_vfork_child_handler),
	C(i12_sigaction_reports_handler),
	C(i13_recv_null_trunc),
	C(i13_peek_and_waitall),
	C(i13_errqueue),
	C(i13_oob),
	C(i13_options_after_connect),
	C(i13_options_before_connect),
	C(i13_options_replay_beyond_16),
	C(i13_rcvlowat_poll),
	C(i13_rcvlowat_recv),
	C(i13_ioctls),
	C(i13_fionread_listener),
	C(i13_failed_getsockopt_keeps_value),
	C(i13_tcp_info),
	C(i14_many_sockets),
	C(keep_reuseport),
	C(keep_fstat_and_identity),
	C(keep_sendfile),
	C(keep_sendfile_pos),
	C(keep_fork_child_sends),
	C(keep_nonblocking_accept_empty),
#undef C
};
#define NCASES ((int)(sizeof(cases) / sizeof(cases[0])))

/* ---- helper roles ----------------------------------------------------------- */

static int child_echo(int in, int out)
{
	if (in < 0) { /* receive the socket over the unix socket -in first */
		int fd = recv_fd(-in);
		if (fd < 0)
			return 8;
		in = out = fd;
	}
	return echo5(in, out);
}

/* A listener handed on (issue 11 case 2): accept n connections on l (a
 * negative l: receive it over the unix socket -l first), echo5 each. */
static int child_accept(int l, int n)
{
	int i;

	if (l < 0 && (l = recv_fd(-l)) < 0)
		return 8;
	for (i = 0; i < n; i++) {
		int a, r;

		if (!waitev(l, POLLIN, WAIT_MS))
			return 20 + i; /* the listener never polled readable */
		a = accept(l, NULL, NULL);
		if (a < 0)
			return 30 + i;
		r = echo5(a, a);
		close(a);
		if (r)
			return r;
	}
	return 0;
}

/* An fdopen client: one line out with fprintf, one line back with fgets. */
static int stdio_client(const char *addr, int port)
{
	char line[256];
	int fd = con_to(addr, port);
	FILE *f;

	if (fd < 0) {
		fprintf(stderr, "stdio-client: connect: %s\n", strerror(errno));
		return 1;
	}
	f = fdopen(fd, "r+");
	if (fprintf(f, "hello from stdio\n") < 0 || fflush(f) != 0) {
		fprintf(stderr, "stdio-client: fprintf: %s\n", strerror(errno));
		return 1;
	}
	alarm(5);
	if (!fgets(line, sizeof(line), f)) {
		fprintf(stderr, "stdio-client: fgets: %s\n", ferror(f) ? strerror(errno) : "EOF");
		return 1;
	}
	printf("stdio-client got: %s", line);
	fclose(f);
	return 0;
}

/* ---- the runner ---------------------------------------------------------------- */

/* Runs case i in a fresh process (fork + exec -c NAME), prints its line. */
static void run_case(int i, const char *a4, const char *a6, int base)
{
	int p[2], st = 0, done = 0, hung = 0;
	char port[16], buf[4096];
	size_t len = 0;
	long end = now_ms() + CASE_LIMIT_S * 1000;
	pid_t pid;

	snprintf(port, sizeof(port), "%d", base + 10 * i);
	if (pipe2(p, O_CLOEXEC) < 0) {
		perror("pipe");
		exit(2);
	}
	/* the case's stderr, scanned for sanitizer reports, then passed on */
	int ef = memfd_create("conform-stderr", MFD_CLOEXEC);
	pid = fork();
	if (pid == 0) {
		setpgid(0, 0);
		dup2(p[1], 1);
		if (ef >= 0)
			dup2(ef, 2);
		execl("/proc/self/exe", self_argv0, "-4", a4, "-6", a6, "-p", port, "-c", cases[i].name, (char *)NULL);
		_exit(127);
	}
	setpgid(pid, pid);
	close(p[1]);
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	for (;;) {
		waitev(p[0], POLLIN, 50);
		ssize_t r;
		while (len < sizeof(buf) - 1 && (r = read(p[0], buf + len, sizeof(buf) - 1 - len)) > 0)
			len += (size_t)r;
		if (done)
			break;
		if (waitpid(pid, &st, WNOHANG) == pid) {
			done = 1; /* one more read: what was written just before exit */
			continue;
		}
		if (now_ms() > end) {
			hung = 1;
			kill(-pid, SIGKILL);
			waitpid(pid, &st, 0);
			done = 1;
		}
	}
	kill(-pid, SIGKILL); /* whatever the case left behind */
	close(p[0]);
	buf[len] = 0;
	while (len && buf[len - 1] == '\n')
		buf[--len] = 0;
	printf("%s:%s", cases[i].name, buf);
	if (ef >= 0) {
		static char eb[65536];
		ssize_t n = pread(ef, eb, sizeof(eb) - 1, 0);
		if (n > 0) {
			eb[n] = 0;
			fwrite(eb, 1, (size_t)n, stderr);
			if (strstr(eb, "runtime error:"))
				printf(" | ubsan: runtime error");
			if (strstr(eb, "ERROR: AddressSanitizer"))
				printf(" | asan: error");
		}
		close(ef);
	}
	if (hung)
		printf(" | hung");
	else if (WIFSIGNALED(st))
		printf(" | crashed %s", sigabbrev_np(WTERMSIG(st)) ? sigabbrev_np(WTERMSIG(st)) : "SIG?");
	else if (WEXITSTATUS(st))
		printf(" | exit %d", WEXITSTATUS(st));
	printf("\n");
	fflush(stdout);
}

int main(int argc, char **argv)
{
	const char *only = NULL, *filter = NULL;
	int opt, i, list = 0, ran = 0;
	long t0 = now_ms();

	self_argv0 = argv[0];
	if (argc == 4 && !strcmp(argv[1], "--child-echo"))
		return child_echo(atoi(argv[2]), atoi(argv[3]));
	if (argc == 4 && !strcmp(argv[1], "--child-accept"))
		return child_accept(atoi(argv[2]), atoi(argv[3]));
	if (argc == 4 && !strcmp(argv[1], "--stdio-client"))
		return stdio_client(argv[2], atoi(argv[3]));
	while ((opt = getopt(argc, argv, "4:6:p:c:f:l")) != -1) {
		switch (opt) {
		case '4': A4 = optarg; break;
		case '6': A6 = optarg; break;
		case 'p': PORT = atoi(optarg); break;
		case 'c': only = optarg; break;
		case 'f': filter = optarg; break;
		case 'l': list = 1; break;
		default:
			fprintf(stderr, "usage: %s [-4 ADDR] [-6 ADDR] [-p BASE] [-f SUBSTR] [-c CASE] [-l]\n", argv[0]);
			return 2;
		}
	}
	if (only) {
		signal(SIGPIPE, SIG_IGN);
		for (i = 0; i < NCASES; i++)
			if (!strcmp(cases[i].name, only)) {
				cases[i].fn();
				_exit(0); /* threads a case left blocked end here */
			}
		fprintf(stderr, "no case %s\n", only);
		return 2;
	}
	for (i = 0; i < NCASES; i++) {
		if (filter && !strstr(cases[i].name, filter))
			continue;
		if (list) {
			printf("%s\n", cases[i].name);
			continue;
		}
		if (now_ms() - t0 > TOTAL_LIMIT_S * 1000) {
			printf("%s: | skipped (the run passed %d s)\n", cases[i].name, TOTAL_LIMIT_S);
			continue;
		}
		run_case(i, A4, A6, PORT);
		ran++;
	}
	if (!list)
		fprintf(stderr, "conform: %d cases in %.1f s\n", ran, (double)(now_ms() - t0) / 1000);
	return 0;
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tcp_semantics - checks that TCP sockets behave as Linux's do.  The same
 * binary runs over kernel loopback (no preload) and under libnuse.so with
 * NUSE addresses, so NUSE can be compared with the kernel check by check.
 *
 *   tcp_semantics [-4 ADDR|none] [-6 ADDR|none] [-p PORT]
 *   (or NUSE_TEST_ADDR4, NUSE_TEST_ADDR6, NUSE_TEST_PORT; defaults
 *   127.0.0.1, ::1, 17300).  Ports PORT..PORT+7 are used.
 *
 * Prints one line per check and "N passed, M failed"; exits 1 on failure.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
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
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int passed, failed;
static const char *fam_name;

static void check(int ok, const char *what, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void check(int ok, const char *what, const char *fmt, ...)
{
	char detail[256] = "";
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	printf("%s %-5s %-40s %s\n", ok ? "PASS" : "FAIL", fam_name, what, detail);
	fflush(stdout);
	if (ok)
		passed++;
	else
		failed++;
}

static void msleep(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static socklen_t mkaddr(int fam, const char *addr, int port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (fam == AF_INET) {
		struct sockaddr_in *in = (void *)ss;
		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)port);
		if (inet_pton(AF_INET, addr, &in->sin_addr) != 1) {
			fprintf(stderr, "bad IPv4 address %s\n", addr);
			exit(2);
		}
		return sizeof(*in);
	}
	struct sockaddr_in6 *in6 = (void *)ss;
	in6->sin6_family = AF_INET6;
	in6->sin6_port = htons((uint16_t)port);
	if (inet_pton(AF_INET6, addr, &in6->sin6_addr) != 1) {
		fprintf(stderr, "bad IPv6 address %s\n", addr);
		exit(2);
	}
	return sizeof(*in6);
}

static const char *fmt(const struct sockaddr_storage *ss, char *buf, size_t n)
{
	char a[INET6_ADDRSTRLEN] = "?";
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)ss;
		inet_ntop(AF_INET, &in->sin_addr, a, sizeof(a));
		snprintf(buf, n, "%s:%u", a, ntohs(in->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)ss;
		inet_ntop(AF_INET6, &in6->sin6_addr, a, sizeof(a));
		snprintf(buf, n, "[%s]:%u", a, ntohs(in6->sin6_port));
	} else {
		snprintf(buf, n, "family %d", ss->ss_family);
	}
	return buf;
}

static int same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return 0;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
	return x->sin6_port == y->sin6_port && !memcmp(&x->sin6_addr, &y->sin6_addr, 16);
}

static int port_of(const struct sockaddr_storage *ss)
{
	return ss->ss_family == AF_INET ? ntohs(((const struct sockaddr_in *)ss)->sin_port)
					: ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
}

static int tcp_listen(int fam, const char *addr, int port)
{
	struct sockaddr_storage ss;
	socklen_t l = mkaddr(fam, addr, port, &ss);
	int fd = socket(fam, SOCK_STREAM, 0), one = 1;

	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, l) < 0 || listen(fd, 16) < 0) {
		fprintf(stderr, "listen on %s port %d: %s\n", addr, port, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static int tcp_connect(int fam, const char *addr, int port)
{
	struct sockaddr_storage ss;
	socklen_t l = mkaddr(fam, addr, port, &ss);
	int fd = socket(fam, SOCK_STREAM, 0);

	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&ss, l) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

/* Reads exactly n bytes (blocking); returns bytes read. */
static size_t read_full(int fd, void *buf, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = recv(fd, (char *)buf + got, n - got, 0);
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	return got;
}

/* ---- large transfer -------------------------------------------------- */

#define BIG (8u << 20)

struct sink {
	int fd;
	size_t got, want; /* it stops after want bytes */
	uint64_t sum;
	ssize_t last; /* the recv that ended it, and its errno */
	int err;
};

static uint64_t mix(uint64_t h, const unsigned char *p, size_t n)
{
	size_t i;
	for (i = 0; i < n; i++)
		h = (h ^ p[i]) * 1099511628211ull;
	return h;
}

static void *sink_thread(void *arg)
{
	struct sink *k = arg;
	static unsigned char buf[65536];
	ssize_t r;

	k->sum = 1469598103934665603ull;
	while ((r = recv(k->fd, buf, sizeof(buf), 0)) > 0) {
		k->sum = mix(k->sum, buf, (size_t)r);
		k->got += (size_t)r;
		if (k->got >= k->want)
			break;
	}
	k->last = r;
	k->err = r < 0 ? errno : 0;
	return NULL;
}

static volatile sig_atomic_t sigusr1s;
static void on_sigusr1(int sig)
{
	(void)sig;
	sigusr1s++;
}

struct later {
	pthread_t target;
	int fd;
};

/* 100 ms: signal the target thread; 300 ms: send it a byte. */
static void *signal_then_send(void *arg)
{
	struct later *l = arg;
	msleep(100);
	pthread_kill(l->target, SIGUSR1);
	msleep(200);
	send(l->fd, "s", 1, 0);
	return NULL;
}

static volatile sig_atomic_t sigpipes;
static void on_sigpipe(int sig)
{
	(void)sig;
	sigpipes++;
}

/* ---- one family ------------------------------------------------------ */

static void run_family(int fam, const char *addr, int port)
{
	struct sockaddr_storage la, ca, sa, x, y;
	socklen_t l;
	char b1[80], b2[80], buf[256];
	int lfd, c, s, r, v, e;

	fam_name = fam == AF_INET ? "ipv4" : "ipv6";
	lfd = tcp_listen(fam, addr, port);
	check(lfd >= 0, "listen", "%s port %d", addr, port);
	if (lfd < 0)
		return;

	/* straight after listen(): a non-blocking accept says EAGAIN, not EINVAL */
	{
		int l2 = tcp_listen(fam, addr, port + 2), a2, acc = -1;

		fcntl(l2, F_SETFL, O_NONBLOCK);
		a2 = accept(l2, NULL, NULL);
		e = errno;
		l = sizeof(acc);
		getsockopt(l2, SOL_SOCKET, SO_ACCEPTCONN, &acc, &l);
		check(l2 >= 0 && a2 == -1 && e == EAGAIN && acc == 1, "accept right after listen: EAGAIN",
		      "%d %s, SO_ACCEPTCONN %d", a2, a2 < 0 ? strerror(e) : "", acc);
		close(l2);
	}

	/* names */
	c = tcp_connect(fam, addr, port);
	check(c >= 0, "blocking connect", "%s", c < 0 ? strerror(errno) : "");
	if (c < 0)
		return;
	l = sizeof(sa);
	s = accept(lfd, (struct sockaddr *)&sa, &l);
	check(s >= 0, "accept", "%s", s < 0 ? strerror(errno) : fmt(&sa, b1, sizeof(b1)));
	if (s < 0)
		return;
	mkaddr(fam, addr, port, &la);
	l = sizeof(x);
	r = getsockname(lfd, (struct sockaddr *)&x, &l);
	check(r == 0 && same_addr(&x, &la), "getsockname(listener)", "%s", fmt(&x, b1, sizeof(b1)));
	l = sizeof(ca);
	r = getsockname(c, (struct sockaddr *)&ca, &l);
	l = sizeof(y);
	r |= getpeername(c, (struct sockaddr *)&y, &l);
	check(r == 0 && same_addr(&y, &la) && same_addr(&ca, &sa) && port_of(&ca) != 0,
	      "getsockname/getpeername(client)", "local %s peer %s", fmt(&ca, b1, sizeof(b1)),
	      fmt(&y, b2, sizeof(b2)));
	l = sizeof(x);
	r = getpeername(s, (struct sockaddr *)&x, &l);
	l = sizeof(y);
	r |= getsockname(s, (struct sockaddr *)&y, &l);
	check(r == 0 && same_addr(&x, &ca) && same_addr(&y, &la), "getpeername/getsockname(accepted)",
	      "peer %s local %s", fmt(&x, b1, sizeof(b1)), fmt(&y, b2, sizeof(b2)));

	/* SO_TYPE, TCP_NODELAY */
	l = sizeof(v);
	r = getsockopt(c, SOL_SOCKET, SO_TYPE, &v, &l);
	check(r == 0 && v == SOCK_STREAM, "SO_TYPE", "%d", v);
	v = 1;
	r = setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &v, sizeof(v));
	v = 0;
	l = sizeof(v);
	r |= getsockopt(c, IPPROTO_TCP, TCP_NODELAY, &v, &l);
	check(r == 0 && v != 0, "TCP_NODELAY set/get", "%d", v);

	/* TCP_INFO (as iperf3 and nginx read it), TCP_CONGESTION */
	{
		struct tcp_info ti;
		char cc[16] = {0};
		socklen_t tl = sizeof(ti);

		memset(&ti, 0xff, sizeof(ti));
		r = getsockopt(c, IPPROTO_TCP, TCP_INFO, &ti, &tl);
		check(r == 0 && tl >= 104 && ti.tcpi_state == 1 && ti.tcpi_snd_mss > 0 && ti.tcpi_snd_mss <= 65535,
		      "TCP_INFO on a connection", "%d len %u state %u snd_mss %u", r, tl, ti.tcpi_state, ti.tcpi_snd_mss);
		tl = sizeof(ti);
		r = getsockopt(lfd, IPPROTO_TCP, TCP_INFO, &ti, &tl);
		check(r == 0 && ti.tcpi_state == 10, "TCP_INFO on a listener: TCP_LISTEN", "%d state %u", r, ti.tcpi_state);
		tl = 8;
		r = getsockopt(c, IPPROTO_TCP, TCP_INFO, &ti, &tl);
		check(r == 0 && tl == 8, "TCP_INFO into a short buffer", "%d len %u", r, tl);
		tl = sizeof(cc);
		r = getsockopt(c, IPPROTO_TCP, TCP_CONGESTION, cc, &tl);
		check(r == 0 && cc[0] != 0, "TCP_CONGESTION get", "%d '%.16s'", r, cc);
		r = setsockopt(c, IPPROTO_TCP, TCP_CONGESTION, "reno", 4);
		memset(cc, 0, sizeof(cc));
		tl = sizeof(cc);
		r |= getsockopt(c, IPPROTO_TCP, TCP_CONGESTION, cc, &tl);
		check(r == 0 && !strcmp(cc, "reno"), "TCP_CONGESTION set reno", "%d '%.16s'", r, cc);
		r = setsockopt(c, IPPROTO_TCP, TCP_CONGESTION, "no-such-cc", 10);
		e = errno;
		check(r == -1 && e == ENOENT, "TCP_CONGESTION unknown -> ENOENT", "%d %s", r, r < 0 ? strerror(e) : "");
	}

	/* FIONREAD, MSG_PEEK, partial reads */
	send(s, "hello world", 11, 0);
	{
		struct pollfd p = {.fd = c, .events = POLLIN};
		int i;
		r = poll(&p, 1, 2000);
		for (i = 0, v = 0; i < 200; i++) {
			if (ioctl(c, FIONREAD, &v) == 0 && v == 11)
				break;
			msleep(5);
		}
		check(r == 1 && (p.revents & POLLIN) && v == 11, "poll POLLIN + FIONREAD", "poll %d revents %#x FIONREAD %d", r,
		      p.revents, v);
	}
	memset(buf, 0, sizeof(buf));
	r = (int)recv(c, buf, 5, MSG_PEEK);
	check(r == 5 && !memcmp(buf, "hello", 5), "MSG_PEEK", "%d '%.5s'", r, buf);
	r = (int)recv(c, buf, 4, 0);
	v = (int)recv(c, buf + 4, sizeof(buf) - 4, 0);
	check(r == 4 && v == 7 && !memcmp(buf, "hello world", 11), "partial reads", "%d + %d '%.11s'", r, v, buf);

	/* readiness clears once everything is read */
	{
		struct pollfd p = {.fd = c, .events = POLLIN};
		r = poll(&p, 1, 0);
		check(r == 0, "not readable after draining", "poll %d revents %#x", r, p.revents);
	}

	/* non-blocking recv */
	fcntl(c, F_SETFL, fcntl(c, F_GETFL) | O_NONBLOCK);
	r = (int)recv(c, buf, sizeof(buf), 0);
	e = errno;
	check(r == -1 && e == EAGAIN, "non-blocking recv EAGAIN", "%d %s", r, r < 0 ? strerror(e) : "");
	v = 0;
	ioctl(c, FIONBIO, &v);
	check(!(fcntl(c, F_GETFL) & O_NONBLOCK), "FIONBIO clears O_NONBLOCK", "%s", "");

	/* half-close */
	r = shutdown(c, SHUT_WR);
	v = (int)recv(s, buf, sizeof(buf), 0);
	check(r == 0 && v == 0, "shutdown(SHUT_WR) -> EOF at peer", "shutdown %d recv %d", r, v);
	r = (int)send(s, "still", 5, 0);
	v = (int)read_full(c, buf, 5);
	check(r == 5 && v == 5 && !memcmp(buf, "still", 5), "other direction after half-close", "%d %d", r, v);
	r = (int)send(c, "x", 1, MSG_NOSIGNAL);
	e = errno;
	check(r == -1 && e == EPIPE, "send after SHUT_WR -> EPIPE", "%d %s", r, r < 0 ? strerror(e) : "");
	close(c);
	close(s);

	/* an option set before connect() survives the move to wherever the socket goes */
	{
		struct sockaddr_storage ss;
		socklen_t sl = mkaddr(fam, addr, port, &ss);
		int fd = socket(fam, SOCK_STREAM, 0), one = 1, got = 0, a2;
		struct timeval tv = {0, 200000};
		struct timespec t0, t1;
		long ms;

		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		r = connect(fd, (struct sockaddr *)&ss, sl);
		l = sizeof(got);
		getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &got, &l);
		check(r == 0 && got != 0, "TCP_NODELAY set before connect kept", "connect %d, TCP_NODELAY %d", r, got);
		a2 = accept(lfd, NULL, NULL);

		/* SO_RCVTIMEO: a blocking recv gives up with EAGAIN */
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		clock_gettime(CLOCK_MONOTONIC, &t0);
		r = (int)recv(fd, buf, sizeof(buf), 0);
		e = errno;
		clock_gettime(CLOCK_MONOTONIC, &t1);
		ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
		check(r == -1 && e == EAGAIN && ms >= 150 && ms < 2000, "SO_RCVTIMEO 200 ms -> EAGAIN", "%d %s after %ld ms",
		      r, r < 0 ? strerror(e) : "", ms);

		/* dup: the copy keeps working after the original is closed */
		v = dup(fd);
		close(fd);
		r = a2 >= 0 ? (int)send(a2, "dup", 3, 0) : -1;
		fd = v >= 0 ? (int)read_full(v, buf, 3) : -1;
		check(v >= 0 && r == 3 && fd == 3 && !memcmp(buf, "dup", 3), "dup'd fd works after close of original",
		      "dup %d send %d read %d", v, r, fd);
		r = (int)send(v, "back", 4, 0);
		fd = a2 >= 0 ? (int)read_full(a2, buf, 4) : -1;
		check(r == 4 && fd == 4, "send on dup'd fd", "%d %d", r, fd);
		close(v);
		fd = a2 >= 0 ? (int)recv(a2, buf, sizeof(buf), 0) : -1;
		check(fd == 0, "EOF at peer after the last copy is closed", "%d", fd);
		if (a2 >= 0)
			close(a2);
	}

	/* dup'd before connect(): both numbers name the connected socket */
	{
		struct sockaddr_storage ss;
		socklen_t sl = mkaddr(fam, addr, port, &ss);
		int fd = socket(fam, SOCK_STREAM, 0), d = dup(fd), a2, n1, n2;

		r = connect(fd, (struct sockaddr *)&ss, sl);
		a2 = accept(lfd, NULL, NULL);
		n1 = (int)send(d, "ab", 2, 0);
		n2 = a2 >= 0 ? (int)read_full(a2, buf, 2) : -1;
		l = sizeof(x);
		v = getpeername(d, (struct sockaddr *)&x, &l);
		check(r == 0 && n1 == 2 && n2 == 2 && v == 0 && same_addr(&x, &ss), "dup before connect: copy connected too",
		      "connect %d send %d read %d getpeername %d", r, n1, n2, v);
		close(fd);
		close(d);
		if (a2 >= 0)
			close(a2);
	}

	/* data sent before accept(): the accepted socket polls readable at once */
	{
		struct pollfd p;
		int a2;

		c = tcp_connect(fam, addr, port);
		r = c >= 0 ? (int)send(c, "early", 5, 0) : -1;
		msleep(50);
		a2 = accept(lfd, NULL, NULL);
		p.fd = a2;
		p.events = POLLIN | POLLOUT;
		p.revents = 0;
		v = poll(&p, 1, 2000);
		check(r == 5 && v == 1 && (p.revents & POLLIN) && (p.revents & POLLOUT), "early data: accepted fd polls readable",
		      "poll %d revents %#x", v, p.revents);
		v = a2 >= 0 ? (int)recv(a2, buf, sizeof(buf), 0) : -1;
		check(v == 5 && !memcmp(buf, "early", 5), "early data: recv", "%d", v);
		close(c);
		if (a2 >= 0)
			close(a2);
	}

	/* a signal during a blocking recv: restarted after an SA_RESTART handler,
	 * EINTR after one without */
	{
		int a2, k;

		c = tcp_connect(fam, addr, port);
		a2 = accept(lfd, NULL, NULL);
		for (k = 0; k < 2; k++) {
			struct sigaction sa;
			struct later lt = {pthread_self(), a2};
			pthread_t t;

			memset(&sa, 0, sizeof(sa));
			sa.sa_handler = on_sigusr1;
			sa.sa_flags = k == 0 ? SA_RESTART : 0;
			sigaction(SIGUSR1, &sa, NULL);
			sigusr1s = 0;
			pthread_create(&t, NULL, signal_then_send, &lt);
			r = (int)recv(c, buf, sizeof(buf), 0);
			e = errno;
			pthread_join(t, NULL);
			if (k == 0) {
				check(r == 1 && sigusr1s == 1, "SA_RESTART handler: recv restarted", "%d %s, %d signal", r,
				      r < 0 ? strerror(e) : "", (int)sigusr1s);
			} else {
				check(r == -1 && e == EINTR && sigusr1s == 1, "handler without SA_RESTART: EINTR",
				      "%d %s, %d signal", r, r < 0 ? strerror(e) : "", (int)sigusr1s);
				recv(c, buf, sizeof(buf), 0); /* the byte sent meanwhile */
			}
		}
		signal(SIGUSR1, SIG_DFL);
		close(c);
		if (a2 >= 0)
			close(a2);
	}

	/* fork: the child serves the connection after the parent closed its copy */
	{
		int a2, st = -1;
		pid_t pid;

		c = tcp_connect(fam, addr, port);
		a2 = accept(lfd, NULL, NULL);
		pid = fork();
		if (pid == 0) {
			close(lfd);
			close(c);
			msleep(100);
			send(a2, "fork", 4, 0);
			close(a2);
			_exit(0);
		}
		close(a2);
		r = (int)read_full(c, buf, 4);
		v = (int)recv(c, buf + 4, 10, 0);
		waitpid(pid, &st, 0);
		check(r == 4 && !memcmp(buf, "fork", 4) && v == 0 && st == 0, "fork: child serves after parent's close",
		      "read %d, then %d (EOF expected)", r, v);
		close(c);
	}

	/* large write in one call */
	c = tcp_connect(fam, addr, port);
	s = accept(lfd, NULL, NULL);
	if (c >= 0 && s >= 0) {
		unsigned char *big = malloc(BIG);
		struct sink k = {.fd = s, .want = BIG};
		pthread_t t;
		uint64_t want;
		size_t i;
		ssize_t w;

		for (i = 0; i < BIG; i++)
			big[i] = (unsigned char)(i * 7 + (i >> 13));
		want = mix(1469598103934665603ull, big, BIG);
		pthread_create(&t, NULL, sink_thread, &k);
		w = send(c, big, BIG, 0);
		pthread_join(t, NULL);
		check(w == (ssize_t)BIG && k.got == BIG && k.sum == want, "large write (8 MiB, one send)",
		      "sent %zd got %zu %s", w, k.got, k.sum == want ? "data ok" : "DATA MISMATCH");
		free(big);
	} else {
		check(0, "large write (8 MiB, one send)", "connect/accept failed");
	}

	/* non-blocking send: EAGAIN when full, unwritable, writable after the peer reads */
	{
		static char chunk[65536];
		struct pollfd p = {.fd = c, .events = POLLOUT};
		struct sink k = {.fd = s};
		pthread_t t;
		size_t total = 0;
		int i, pr1, pr2, stalls = 0;

		/*
		 * Full means EAGAIN that lasts: one EAGAIN can be a moment when
		 * the sender outran whoever drains its buffer (under NUSE, the
		 * daemon moving the ring into the stack), and room comes back
		 * without the peer reading, as it may when ACKs free a kernel
		 * socket's buffer.
		 */
		fcntl(c, F_SETFL, fcntl(c, F_GETFL) | O_NONBLOCK);
		for (i = 0; i < 10000; i++) {
			ssize_t w = send(c, chunk, sizeof(chunk), 0);
			if (w < 0) {
				if (errno != EAGAIN || ++stalls == 3)
					break;
				msleep(50);
				continue;
			}
			stalls = 0;
			total += (size_t)w;
		}
		e = errno;
		pr1 = poll(&p, 1, 0);
		check(i < 10000 && e == EAGAIN && pr1 == 0, "non-blocking send EAGAIN, then unwritable",
		      "%zu bytes queued, errno %s, poll %d", total, strerror(e), pr1);
		/* The sink reads exactly what was queued (under the kernel engine
		 * that can be more than BIG: the daemon's kernel sockets buffer
		 * megabytes). */
		k.want = total;
		pthread_create(&t, NULL, sink_thread, &k);
		p.revents = 0;
		pr2 = poll(&p, 1, 5000);
		pthread_join(t, NULL);
		check(pr2 == 1 && (p.revents & POLLOUT), "writable again after the peer reads",
		      "poll %d revents %#x; the peer read %zu of %zu queued bytes, its last recv %zd %s", pr2, p.revents,
		      k.got, total, k.last, k.last < 0 ? strerror(k.err) : "");
		v = 0;
		ioctl(c, FIONBIO, &v);
	}

	/* EPIPE after the peer closed, with MSG_NOSIGNAL, then SIGPIPE without */
	close(s);
	{
		int i, got_epipe = 0;
		sigpipes = 0;
		for (i = 0; i < 2000 && !got_epipe; i++) { /* up to 10 s */
			r = (int)send(c, "ping", 4, MSG_NOSIGNAL);
			if (r < 0 && errno == EPIPE)
				got_epipe = 1;
			else if (r < 0 && errno != ECONNRESET)
				break;
			else
				msleep(5);
		}
		check(got_epipe && sigpipes == 0, "EPIPE with MSG_NOSIGNAL (no signal)", "after %d sends, %d SIGPIPE", i,
		      (int)sigpipes);
		r = (int)send(c, "ping", 4, 0);
		e = errno;
		check(r == -1 && e == EPIPE && sigpipes == 1, "EPIPE without MSG_NOSIGNAL raises SIGPIPE", "%d %s, %d SIGPIPE",
		      r, r < 0 ? strerror(e) : "", (int)sigpipes);
	}
	close(c);

	/* ECONNREFUSED */
	c = tcp_connect(fam, addr, port + 1);
	e = errno;
	check(c < 0 && e == ECONNREFUSED, "ECONNREFUSED", "%s", c < 0 ? strerror(e) : "connected?!");
	if (c >= 0)
		close(c);

	/* EADDRINUSE */
	{
		int fd = socket(fam, SOCK_STREAM, 0), one = 1;
		l = mkaddr(fam, addr, port, &x);
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		r = bind(fd, (struct sockaddr *)&x, l);
		if (r == 0)
			r = listen(fd, 1);
		e = errno;
		check(r == -1 && e == EADDRINUSE, "EADDRINUSE", "%d %s", r, r < 0 ? strerror(e) : "");
		close(fd);
	}

	/* non-blocking connect */
	{
		struct pollfd p;
		l = mkaddr(fam, addr, port, &x);
		c = socket(fam, SOCK_STREAM | SOCK_NONBLOCK, 0);
		r = connect(c, (struct sockaddr *)&x, l);
		e = errno;
		p.fd = c;
		p.events = POLLOUT;
		p.revents = 0;
		int pr = poll(&p, 1, 5000);
		v = -1;
		l = sizeof(v);
		getsockopt(c, SOL_SOCKET, SO_ERROR, &v, &l);
		check(r == -1 && e == EINPROGRESS && pr == 1 && (p.revents & POLLOUT) && v == 0,
		      "non-blocking connect EINPROGRESS->POLLOUT", "connect %d %s, poll %d revents %#x, SO_ERROR %d", r,
		      r < 0 ? strerror(e) : "", pr, p.revents, v);
		/* Linux: the first connect() after completion reports 0, then EISCONN */
		v = connect(c, (struct sockaddr *)&x, l);
		r = connect(c, (struct sockaddr *)&x, l);
		e = errno;
		check(v == 0 && r == -1 && e == EISCONN, "connect again -> 0, then EISCONN", "%d, %d %s", v, r,
		      r < 0 ? strerror(e) : "");
		s = accept(lfd, NULL, NULL);
		r = (int)send(c, "nb", 2, 0);
		v = s >= 0 ? (int)read_full(s, buf, 2) : -1;
		check(r == 2 && v == 2 && !memcmp(buf, "nb", 2), "data after non-blocking connect", "%d %d", r, v);
		close(c);
		if (s >= 0)
			close(s);
	}
	close(lfd);
}

int main(int argc, char **argv)
{
	const char *a4 = getenv("NUSE_TEST_ADDR4"), *a6 = getenv("NUSE_TEST_ADDR6"), *ps = getenv("NUSE_TEST_PORT");
	int port, opt;

	if (!a4)
		a4 = "127.0.0.1";
	if (!a6)
		a6 = "::1";
	if (!ps)
		ps = "17300";
	while ((opt = getopt(argc, argv, "4:6:p:")) != -1) {
		switch (opt) {
		case '4': a4 = optarg; break;
		case '6': a6 = optarg; break;
		case 'p': ps = optarg; break;
		default:
			fprintf(stderr, "usage: %s [-4 ADDR|none] [-6 ADDR|none] [-p PORT]\n", argv[0]);
			return 2;
		}
	}
	port = atoi(ps);
	signal(SIGPIPE, on_sigpipe);
	alarm(120); /* a hang is a failure, not a stuck CI */
	if (strcmp(a4, "none"))
		run_family(AF_INET, a4, port);
	if (strcmp(a6, "none"))
		run_family(AF_INET6, a6, port + 4);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}

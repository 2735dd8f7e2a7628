/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lazywait - the waits of a program whose sockets are lazy (the daemon
 * leaves out the readiness byte of data while no thread sleeps: shim/lazy.h,
 * PROTOCOL.md "Lazy readiness").  Each check makes data arrive while the
 * program is awake in a way the shim does not count as waiting (nanosleep),
 * then waits for it in one of the ways a program may: a level-triggered
 * epoll_wait (the shim's scan), poll, select and a dup polled at once
 * (making the socket loud must bring its byte first), a blocking recv, a
 * forked child's poll, a set nested in another, EPOLLET after LT, a socket
 * in two sets, a set past its lazy members, and a ping-pong of two
 * threads each sleeping in its own epoll_wait, and what may end a wait
 * the shim spins in (data, a kernel fd, a handler, the timeout), and a
 * lazy socket with data put in a set another thread sleeps on, and poll
 * and ppoll of sockets in no set.  Every
 * wait is bounded:
 * data that is never seen fails the check, a hang is ended by alarm().
 * Over the kernel every check passes too (it is how Linux behaves).
 *
 *   lazywait ADDR PORT
 * Prints "lazywait: N checks, 0 failed" or the failures.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_storage g_ss;
static socklen_t g_len;
static int g_lsn, g_checks, g_failed;

static void die(const char *what)
{
	fprintf(stderr, "lazywait: %s: %s\n", what, strerror(errno));
	exit(2);
}

static void check(int ok, const char *what)
{
	g_checks++;
	if (!ok) {
		g_failed++;
		printf("FAIL: %s\n", what);
	} else
		printf("ok: %s\n", what);
	fflush(stdout);
}

static void nap(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* A connected pair: *c the client end, *s the server end. */
static void pair(int *c, int *s)
{
	int one = 1;

	*c = socket(g_ss.ss_family, SOCK_STREAM, 0);
	if (*c < 0)
		die("socket");
	if (connect(*c, (struct sockaddr *)&g_ss, g_len) < 0)
		die("connect");
	*s = accept(g_lsn, NULL, NULL);
	if (*s < 0)
		die("accept");
	setsockopt(*c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(*s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Sends one byte from c and lets it arrive at s while we are awake. */
static void arrive(int c)
{
	if (send(c, "x", 1, 0) != 1)
		die("send");
	nap(30);
}

static int take(int s)
{
	char b[16];

	return recv(s, b, sizeof(b), MSG_DONTWAIT) > 0;
}

static int epoll_with(int s, uint32_t events, uint64_t data)
{
	struct epoll_event ev = {.events = events, .data.u64 = data};
	int ep = epoll_create1(EPOLL_CLOEXEC);

	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev) < 0)
		die("epoll");
	return ep;
}

static int polled_in(int fd, int ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};

	return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

static void scan(void)
{
	struct epoll_event ev[4];
	int c, s, ep, n;

	pair(&c, &s);
	ep = epoll_with(s, EPOLLIN, 77);
	arrive(c);
	n = epoll_wait(ep, ev, 4, 0);
	check(n == 1 && ev[0].data.u64 == 77 && (ev[0].events & EPOLLIN), "epoll_wait(0) reports data that came while awake");
	n = epoll_wait(ep, ev, 4, 2000);
	check(n == 1 && ev[0].data.u64 == 77, "... and again, level-triggered, until it is read");
	check(take(s), "... and recv takes it");
	n = epoll_wait(ep, ev, 4, 0);
	check(n == 0, "epoll_wait(0) reports nothing once it is read");
	close(ep);
	close(c);
	close(s);
}

static void by_poll(int how)
{
	static const char *what[] = {"poll(0) of a lazy socket sees the data that came while awake",
				     "select(0) of a lazy socket sees the data that came while awake",
				     "poll(0) of a dup of a lazy socket sees the data"};
	struct epoll_event ev[4];
	int c, s, ep, ok;

	pair(&c, &s);
	ep = epoll_with(s, EPOLLIN, 1);
	arrive(c);
	if (how == 0)
		ok = polled_in(s, 0);
	else if (how == 1) {
		fd_set r;
		struct timeval tv = {0, 0};

		FD_ZERO(&r);
		FD_SET(s, &r);
		ok = select(s + 1, &r, NULL, NULL, &tv) == 1 && FD_ISSET(s, &r);
	} else {
		int d = dup(s);

		ok = d >= 0 && polled_in(d, 0);
		close(d);
	}
	check(ok, what[how]);
	check(epoll_wait(ep, ev, 4, 0) == 1, "... and epoll_wait still does");
	check(take(s), "... and recv takes it");
	check(!polled_in(s, 0), "... and poll(0) is quiet after");
	arrive(c);
	check(polled_in(s, 0), "... and sees the next arrival (a loud socket)");
	close(ep);
	close(c);
	close(s);
}

static int g_ls_ep;

static void *set_sleeper(void *arg)
{
	struct epoll_event ev[4];
	long n = epoll_wait(g_ls_ep, ev, 4, 5000);

	(void)arg;
	return (void *)(n == 1 && ev[0].data.u64 == 42 ? 1L : 0L);
}

/* A socket lazy in one set, its data there, put in a second set that
 * another thread sleeps on: that thread did not count itself in its
 * watched word, so the byte must come (Linux wakes it: the fd is ready),
 * not the daemon's backstop's, late. */
static void into_sleeping_set(void)
{
	struct epoll_event e = {.events = EPOLLIN, .data.u64 = 42}, ev1[4];
	pthread_t t;
	void *ok;
	int c, s, a;

	pair(&c, &s);
	a = epoll_with(s, EPOLLIN, 41);
	arrive(c);
	g_ls_ep = epoll_create1(EPOLL_CLOEXEC);
	if (g_ls_ep < 0)
		die("epoll_create1");
	if (pthread_create(&t, NULL, set_sleeper, NULL))
		die("pthread_create");
	nap(50);
	if (epoll_ctl(g_ls_ep, EPOLL_CTL_ADD, s, &e) < 0)
		die("epoll_ctl");
	pthread_join(t, &ok);
	check(ok != NULL, "a lazy socket with data, added to a set a thread sleeps on: that thread wakes for it");
	check(epoll_wait(a, ev1, 4, 0) == 1, "... and the first set reports it too");
	check(take(s), "... recv takes it");
	close(a);
	close(g_ls_ep);
	close(c);
	close(s);
}

static int g_bs;

static void *blocked_recv(void *arg)
{
	char b[4];
	long n = recv(g_bs, b, sizeof(b), 0);

	(void)arg;
	return (void *)n;
}

static void blocking(void)
{
	pthread_t t;
	void *n;
	int c, ep;

	pair(&c, &g_bs);
	ep = epoll_with(g_bs, EPOLLIN, 2);
	if (pthread_create(&t, NULL, blocked_recv, NULL))
		die("pthread_create");
	nap(50);
	if (send(c, "y", 1, 0) != 1)
		die("send");
	pthread_join(t, &n);
	check((long)n == 1, "a blocking recv on a lazy socket wakes for data sent while it sleeps");
	close(ep);
	close(c);
	close(g_bs);
}

static void forked(void)
{
	int c, s, ep, st;
	pid_t p;

	pair(&c, &s);
	ep = epoll_with(s, EPOLLIN, 3);
	arrive(c);
	p = fork();
	if (p < 0)
		die("fork");
	if (p == 0)
		_exit(polled_in(s, 2000) ? 0 : 1);
	check(waitpid(p, &st, 0) == p && WIFEXITED(st) && WEXITSTATUS(st) == 0,
	      "a forked child's poll sees data that came before the fork");
	check(take(s), "... and the parent reads it");
	close(ep);
	close(c);
	close(s);
}

/* An epoll set numbered above every socket, shared with a forked child:
 * a socket the parent makes and adds after the fork must stay loud (the
 * child sleeps on the same set and cannot scan it), so the child's wait
 * sees its data through the byte, not through the daemon's 200 ms
 * backstop (e2e checks lazy_late stays 0). */
static void forked_high_set(void)
{
	int c, s, c2, s2, pad[8], ep, st, i;
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 2};
	pid_t p;

	pair(&c, &s);
	for (i = 0; i < 8; i++)
		if ((pad[i] = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0)
			die("open");
	ep = epoll_with(s, EPOLLIN, 1);
	p = fork();
	if (p < 0)
		die("fork");
	if (p == 0) {
		struct epoll_event got[4];
		int n, k, seen = 0;

		for (k = 0; k < 50 && !seen; k++) {
			n = epoll_wait(ep, got, 4, 100);
			for (i = 0; i < n; i++)
				seen |= got[i].data.u64 == 2 && (got[i].events & EPOLLIN);
		}
		_exit(seen ? 0 : 1);
	}
	pair(&c2, &s2);
	if (epoll_ctl(ep, EPOLL_CTL_ADD, s2, &ev) < 0)
		die("epoll_ctl");
	nap(50); /* the child sleeps on the set */
	arrive(c2);
	check(waitpid(p, &st, 0) == p && WIFEXITED(st) && WEXITSTATUS(st) == 0,
	      "a forked child asleep on a high-numbered set sees data of a socket the parent added after the fork");
	check(take(s2), "... and the parent reads it");
	for (i = 0; i < 8; i++)
		close(pad[i]);
	close(ep);
	close(c);
	close(s);
	close(c2);
	close(s2);
}

static void nested(void)
{
	struct epoll_event ev[4], e = {.events = EPOLLIN, .data.u64 = 9};
	int c, s, in, out;

	pair(&c, &s);
	in = epoll_with(s, EPOLLIN, 4);
	out = epoll_create1(EPOLL_CLOEXEC);
	if (out < 0 || epoll_ctl(out, EPOLL_CTL_ADD, in, &e) < 0)
		die("epoll nested");
	arrive(c);
	check(epoll_wait(out, ev, 4, 0) == 1 && ev[0].data.u64 == 9, "an epoll set nested in another reports its data");
	check(take(s), "... and recv takes it");
	close(out);
	close(in);
	close(c);
	close(s);
}

static void edge(void)
{
	struct epoll_event ev[4], e = {.events = EPOLLIN | EPOLLET, .data.u64 = 5};
	int c, s, ep;

	pair(&c, &s);
	ep = epoll_with(s, EPOLLIN, 5);
	if (epoll_ctl(ep, EPOLL_CTL_MOD, s, &e) < 0)
		die("epoll_ctl MOD");
	arrive(c);
	check(epoll_wait(ep, ev, 4, 0) == 1, "EPOLLET after LT: the arrival is an edge");
	check(epoll_wait(ep, ev, 4, 0) == 0, "... reported once");
	arrive(c);
	check(epoll_wait(ep, ev, 4, 0) == 1, "... and the next arrival is another");
	check(take(s), "... and recv takes both");
	close(ep);
	close(c);
	close(s);
}

static int g_et_ep, g_et_c;

static void *et_sender(void *arg)
{
	(void)arg;
	nap(50);
	if (send(g_et_c, "1", 1, 0) != 1)
		return NULL;
	nap(50);
	if (send(g_et_c, "2", 1, 0) != 1)
		return NULL;
	return (void *)1L;
}

/* An edge-triggered sleeper that leaves the data unread is woken by each
 * new arrival all the same (Linux's edge per arrival). */
static void edge_sleeper(void)
{
	struct epoll_event ev[4];
	pthread_t t;
	void *ok;
	int s, n1, n2;

	pair(&g_et_c, &s);
	g_et_ep = epoll_with(s, EPOLLIN | EPOLLET, 10);
	if (pthread_create(&t, NULL, et_sender, NULL))
		die("pthread_create");
	n1 = epoll_wait(g_et_ep, ev, 4, 5000);
	n2 = epoll_wait(g_et_ep, ev, 4, 5000);
	pthread_join(t, &ok);
	check(ok && n1 == 1 && n2 == 1, "an edge-triggered sleeper wakes for each arrival, leaving the first unread");
	check(take(s), "... and recv takes both");
	close(g_et_ep);
	close(g_et_c);
	close(s);
}

static void two_sets(void)
{
	struct epoll_event ev[4], e = {.events = EPOLLIN, .data.u64 = 6};
	int c, s, a, b;

	pair(&c, &s);
	a = epoll_with(s, EPOLLIN, 6);
	b = epoll_create1(EPOLL_CLOEXEC);
	if (b < 0 || epoll_ctl(b, EPOLL_CTL_ADD, s, &e) < 0)
		die("epoll second set");
	arrive(c);
	check(epoll_wait(b, ev, 4, 0) == 1, "a socket in two sets: the second reports its data");
	check(epoll_wait(a, ev, 4, 0) == 1, "... and the first");
	check(take(s), "... and recv takes it");
	close(a);
	close(b);
	close(c);
	close(s);
}

#define MANY 70

static void many(void)
{
	struct epoll_event ev[MANY];
	int c[MANY], s[MANY], ep, i, n, seen = 0;

	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		die("epoll_create1");
	for (i = 0; i < MANY; i++) {
		struct epoll_event e = {.events = EPOLLIN, .data.u64 = (uint64_t)i};

		pair(&c[i], &s[i]);
		if (epoll_ctl(ep, EPOLL_CTL_ADD, s[i], &e) < 0)
			die("epoll_ctl");
	}
	for (i = 0; i < MANY; i += 3)
		if (send(c[i], "m", 1, 0) != 1)
			die("send");
	nap(50);
	n = epoll_wait(ep, ev, MANY, 0);
	for (i = 0; i < n; i++)
		if (ev[i].data.u64 % 3 == 0)
			seen++;
	check(n == (MANY + 2) / 3 && seen == n, "a set of 70 (past its lazy members) reports each socket with data once");
	for (i = 0; i < MANY; i++) {
		close(c[i]);
		close(s[i]);
	}
	close(ep);
}

/*
 * Two threads bounce a counter, each sleeping in its own epoll_wait, and
 * read only what epoll said is there (MSG_DONTWAIT: a readiness with
 * nothing behind it is a stray byte, which wrk counts as an error).  With
 * `sleeper`, a third thread sleeps in a blocking recv meanwhile: the
 * daemon then writes every byte, while the two may read before it does.
 */
#define ROUNDS 3000
static int g_pp[2], g_sleeper[2];
static atomic_int g_stray;

static void *bouncer(void *arg)
{
	int side = (int)(long)arg, fd = g_pp[side], ep = epoll_with(fd, EPOLLIN, (uint64_t)side), i;
	long ok = 1;

	for (i = 0; i < ROUNDS && ok; i++) {
		struct epoll_event ev;
		char b;
		long n;

		/* side 0 serves, side 1 answers */
		if (side == 0 && send(fd, "p", 1, 0) != 1) {
			ok = 0;
			break;
		}
		for (;;) {
			if (epoll_wait(ep, &ev, 1, 5000) != 1) {
				ok = 0;
				break;
			}
			n = recv(fd, &b, 1, MSG_DONTWAIT);
			if (n == 1)
				break;
			if (n < 0 && errno == EAGAIN) {
				atomic_fetch_add(&g_stray, 1);
				continue;
			}
			ok = 0;
			break;
		}
		if (ok && side == 1 && send(fd, "q", 1, 0) != 1)
			ok = 0;
	}
	close(ep);
	return (void *)ok;
}

static void *sleeper(void *arg)
{
	char b;

	(void)arg;
	return (void *)(long)recv(g_sleeper[1], &b, 1, 0);
}

static void pingpong(int with_sleeper)
{
	pthread_t t[3];
	void *r0, *r1, *r2;

	pair(&g_pp[0], &g_pp[1]);
	if (with_sleeper) {
		pair(&g_sleeper[0], &g_sleeper[1]);
		if (pthread_create(&t[2], NULL, sleeper, NULL))
			die("pthread_create");
		nap(20);
	}
	atomic_store(&g_stray, 0);
	if (pthread_create(&t[0], NULL, bouncer, (void *)0L) || pthread_create(&t[1], NULL, bouncer, (void *)1L))
		die("pthread_create");
	pthread_join(t[0], &r0);
	pthread_join(t[1], &r1);
	check(r0 && r1, with_sleeper ? "3000 round trips in epoll_wait while a third thread sleeps in recv"
				     : "3000 round trips, each side sleeping in its own level-triggered epoll_wait");
	printf("   (%d readiness reports with nothing to read)\n", atomic_load(&g_stray));
	check(atomic_load(&g_stray) == 0, "... and epoll never said readable with nothing to read");
	if (with_sleeper) {
		send(g_sleeper[0], "s", 1, 0);
		pthread_join(t[2], &r2);
		check((long)r2 == 1, "... and the sleeping recv got its byte");
		close(g_sleeper[0]);
		close(g_sleeper[1]);
	}
	close(g_pp[0]);
	close(g_pp[1]);
}

/*
 * A stream of small writes to a reader that is awake most of the time
 * (it reads what epoll_wait reports, MSG_DONTWAIT), while another thread
 * sleeps in recv: the daemon writes a byte per arrival, racing the reader
 * that took the data already.  No byte may be left with nothing behind it.
 */
#define STREAM 20000
static int g_st[2];

static void *streamer(void *arg)
{
	int i;
	long ok = 1;

	(void)arg;
	for (i = 0; i < STREAM && ok; i++) {
		if (send(g_st[0], "s", 1, 0) != 1)
			ok = 0;
		if ((i & 7) == 7)
			sched_yield();
	}
	return (void *)ok;
}

static void stream(void)
{
	pthread_t t[2];
	void *r0, *r1;
	char b[4096];
	int ep, got = 0, stray = 0, waits = 0;

	pair(&g_st[0], &g_st[1]);
	pair(&g_sleeper[0], &g_sleeper[1]);
	ep = epoll_with(g_st[1], EPOLLIN, 8);
	if (pthread_create(&t[1], NULL, sleeper, NULL))
		die("pthread_create");
	nap(20);
	if (pthread_create(&t[0], NULL, streamer, NULL))
		die("pthread_create");
	while (got < STREAM && waits < 100000) {
		struct epoll_event ev;
		long n;

		waits++;
		if (epoll_wait(ep, &ev, 1, 5000) != 1)
			break;
		n = recv(g_st[1], b, sizeof(b), MSG_DONTWAIT);
		if (n > 0)
			got += (int)n;
		else if (n < 0 && errno == EAGAIN)
			stray++;
		else
			break;
	}
	pthread_join(t[0], &r0);
	send(g_sleeper[0], "s", 1, 0);
	pthread_join(t[1], &r1);
	printf("   (%d bytes in %d waits, %d readiness reports with nothing to read)\n", got, waits, stray);
	check(r0 && got == STREAM, "a stream of 20000 one-byte writes to a reader awake in epoll_wait arrives whole");
	check(stray == 0, "... and epoll never said readable with nothing to read");
	close(ep);
	close(g_st[0]);
	close(g_st[1]);
	close(g_sleeper[0]);
	close(g_sleeper[1]);
}

/* Waits that a spin may hold (the shim spins --shim-spin on a set's lazy
 * members before it sleeps; e2e runs this with a 10 ms spin): data that
 * comes during it, a kernel fd of the set, a handler that runs (epoll
 * waits never restart: EINTR), a timeout shorter than the spin. */
static volatile sig_atomic_t g_usr1;
static pthread_t g_main;

static void on_usr1(int sig)
{
	(void)sig;
	g_usr1++;
}

/* A byte sent on fd after ms: 2 lands in the shim's spin, 60 after any
 * spin (e2e's longest is 10 ms), when the reader sleeps. */
struct late {
	int fd, ms;
};

static void *late_send(void *arg)
{
	struct late *l = arg;

	nap(l->ms);
	if (send(l->fd, "y", 1, 0) != 1)
		die("send");
	return NULL;
}

static void *late_signal(void *arg)
{
	(void)arg;
	nap(2);
	pthread_kill(g_main, SIGUSR1);
	return NULL;
}

static void spun(void)
{
	struct sigaction sa = {.sa_handler = on_usr1}; /* no SA_RESTART */
	struct epoll_event ev[4], pe = {.events = EPOLLIN, .data.u64 = 9};
	int c, s, ep, n, p[2], e;
	pthread_t t;

	pair(&c, &s);
	ep = epoll_with(s, EPOLLIN, 88);
	if (pipe(p) < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &pe) < 0)
		die("pipe");
	pthread_create(&t, NULL, late_send, &(struct late){c, 2});
	n = epoll_wait(ep, ev, 4, 5000);
	pthread_join(t, NULL);
	check(n == 1 && ev[0].data.u64 == 88, "data that comes while epoll_wait waits is reported");
	check(take(s), "... and taken");
	if (write(p[1], "z", 1) != 1)
		die("write");
	n = epoll_wait(ep, ev, 4, 5000);
	check(n == 1 && ev[0].data.u64 == 9, "a kernel fd of the set is reported while lazy members are quiet");
	check(read(p[0], ev, 1) == 1, "... and read");
	n = epoll_wait(ep, ev, 4, 1);
	check(n == 0, "a 1 ms timeout with nothing there ends with nothing");
	g_main = pthread_self();
	sigaction(SIGUSR1, &sa, NULL);
	pthread_create(&t, NULL, late_signal, NULL);
	n = epoll_wait(ep, ev, 4, 5000);
	e = errno;
	pthread_join(t, NULL);
	check(n == -1 && e == EINTR && g_usr1 == 1, "a handler that runs while epoll_wait waits ends it with EINTR");
	signal(SIGUSR1, SIG_DFL);
	close(ep);
	close(p[0]);
	close(p[1]);
	close(c);
	close(s);
}

/*
 * poll and ppoll of sockets in no epoll set: data that came while awake, data that comes while
 * poll spins or sleeps, a kernel fd beside a quiet socket, input and
 * output at once, a timeout, a handler (poll never restarts: EINTR),
 * ppoll, the peer's close, and a ping-pong of two threads each sleeping
 * in its own poll.
 */
static int g_pq[2];

static void *poll_bouncer(void *arg)
{
	int me = g_pq[(long)arg], i;
	char b[8];

	for (i = 0; i < 3000; i++) {
		struct pollfd p = {.fd = me, .events = POLLIN};

		if ((long)arg == 0 && send(me, "p", 1, 0) != 1)
			return NULL;
		if (poll(&p, 1, 5000) != 1 || !(p.revents & POLLIN) || recv(me, b, sizeof(b), MSG_DONTWAIT) != 1)
			return NULL;
		if ((long)arg == 1 && send(me, "q", 1, 0) != 1)
			return NULL;
	}
	return (void *)1L;
}

static void polls(void)
{
	struct sigaction sa = {.sa_handler = on_usr1}; /* no SA_RESTART */
	struct timespec ts = {0, 1000000};
	struct pollfd f[2];
	pthread_t t, u;
	void *r0, *r1;
	int c, s, n, p[2], e;

	pair(&c, &s);
	arrive(c);
	check(polled_in(s, 0), "poll(0) of a socket in no set sees the data that came while awake");
	check(polled_in(s, 2000), "... and poll(2000) at once, level-triggered, until it is read");
	check(take(s), "... and recv takes it");
	check(!polled_in(s, 0), "... and poll(0) is quiet after");
	pthread_create(&t, NULL, late_send, &(struct late){c, 2});
	check(polled_in(s, 5000), "data that comes while poll waits is reported");
	pthread_join(t, NULL);
	check(take(s), "... and taken");
	/* past the spin: poll sleeps, watching the socket */
	pthread_create(&t, NULL, late_send, &(struct late){c, 60});
	check(polled_in(s, 5000), "data that comes while poll sleeps is reported");
	pthread_join(t, NULL);
	check(take(s), "... and taken");
	if (pipe(p) < 0)
		die("pipe");
	if (write(p[1], "z", 1) != 1)
		die("write");
	f[0] = (struct pollfd){.fd = s, .events = POLLIN};
	f[1] = (struct pollfd){.fd = p[0], .events = POLLIN};
	n = poll(f, 2, 5000);
	check(n == 1 && f[1].revents == POLLIN && f[0].revents == 0, "a kernel fd is reported beside a quiet socket");
	check(read(p[0], &e, 1) == 1, "... and read");
	arrive(c);
	f[0].events = POLLIN | POLLOUT;
	n = poll(f, 2, 5000);
	check(n == 1 && f[0].revents == (POLLIN | POLLOUT) && f[1].revents == 0, "input and output at once, beside a quiet kernel fd");
	check(take(s), "... and taken");
	f[0].events = POLLIN;
	n = poll(f, 2, 1);
	check(n == 0 && f[0].revents == 0 && f[1].revents == 0, "a 1 ms timeout with nothing there ends with nothing");
	n = ppoll(f, 1, &ts, NULL);
	check(n == 0, "ppoll's 1 ms timeout too");
	arrive(c);
	n = ppoll(f, 1, NULL, NULL);
	check(n == 1 && f[0].revents == POLLIN, "ppoll reports the data");
	check(take(s), "... and taken");
	g_main = pthread_self();
	g_usr1 = 0;
	sigaction(SIGUSR1, &sa, NULL);
	pthread_create(&t, NULL, late_signal, NULL);
	n = poll(f, 1, 5000);
	e = errno;
	pthread_join(t, NULL);
	check(n == -1 && e == EINTR && g_usr1 == 1, "a handler that runs while poll waits ends it with EINTR");
	signal(SIGUSR1, SIG_DFL);
	close(c);
	f[0].events = POLLIN | POLLRDHUP;
	n = poll(f, 1, 5000);
	if (n != 1 || (f[0].revents & (POLLIN | POLLRDHUP)) != (POLLIN | POLLRDHUP))
		printf("   (poll gave %d, revents %#x)\n", n, n == 1 ? f[0].revents : 0);
	check(n == 1 && (f[0].revents & (POLLIN | POLLRDHUP)) == (POLLIN | POLLRDHUP),
	      "the peer's close: POLLIN | POLLRDHUP at once");
	close(s);
	/* the peer closes with our data unread: a reset */
	pair(&c, &s);
	if (send(s, "r", 1, 0) != 1)
		die("send");
	nap(30);
	close(c);
	f[0] = (struct pollfd){.fd = s, .events = POLLIN | POLLRDHUP};
	n = poll(f, 1, 5000);
	e = POLLIN | POLLHUP | POLLRDHUP;
	if (n != 1 || (f[0].revents & e) != e)
		printf("   (poll gave %d, revents %#x)\n", n, n == 1 ? f[0].revents : 0);
	check(n == 1 && (f[0].revents & e) == e, "a reset: POLLIN | POLLHUP | POLLRDHUP at once");
	f[0].events = POLLIN | POLLOUT | POLLRDHUP;
	n = poll(f, 1, 0);
	check(n == 1 && (f[0].revents & (e | POLLOUT)) == (e | POLLOUT), "... and POLLOUT too");
	close(p[0]);
	close(p[1]);
	close(s);
	pair(&g_pq[0], &g_pq[1]);
	if (pthread_create(&t, NULL, poll_bouncer, (void *)0L) || pthread_create(&u, NULL, poll_bouncer, (void *)1L))
		die("pthread_create");
	pthread_join(t, &r0);
	pthread_join(u, &r1);
	check(r0 && r1, "3000 round trips, each side in its own poll");
	close(g_pq[0]);
	close(g_pq[1]);
}

int main(int argc, char **argv)
{
	struct sockaddr_in *a4 = (struct sockaddr_in *)&g_ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&g_ss;
	int one = 1;

	if (argc != 3) {
		fprintf(stderr, "usage: lazywait ADDR PORT\n");
		return 2;
	}
	memset(&g_ss, 0, sizeof(g_ss));
	if (inet_pton(AF_INET, argv[1], &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)atoi(argv[2]));
		g_len = sizeof(*a4);
	} else if (inet_pton(AF_INET6, argv[1], &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)atoi(argv[2]));
		g_len = sizeof(*a6);
	} else {
		fprintf(stderr, "lazywait: bad address %s\n", argv[1]);
		return 2;
	}
	alarm(120); /* a hang is a failure, not a stuck test */
	g_lsn = socket(g_ss.ss_family, SOCK_STREAM, 0);
	if (g_lsn < 0)
		die("socket");
	setsockopt(g_lsn, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(g_lsn, (struct sockaddr *)&g_ss, g_len) < 0 || listen(g_lsn, 128) < 0)
		die("bind/listen");
	scan();
	by_poll(0);
	by_poll(1);
	by_poll(2);
	into_sleeping_set();
	blocking();
	forked();
	forked_high_set();
	nested();
	edge();
	edge_sleeper();
	two_sets();
	many();
	pingpong(0);
	pingpong(1);
	stream();
	spun();
	polls();
	printf("lazywait: %d checks, %d failed\n", g_checks, g_failed);
	return g_failed != 0;
}

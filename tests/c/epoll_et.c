/* SPDX-License-Identifier: Apache-2.0 */
/*
 * epoll_et - an nginx-shaped transfer: a non-blocking server registers each
 * connection once with EPOLLIN|EPOLLOUT|EPOLLET, writes a large body in
 * writev chunks until EAGAIN, and only writes again after epoll reports the
 * next edge.  A client reads it (blocking, or non-blocking with its own
 * edge-triggered epoll) and checks every byte.  A missed EPOLLOUT or EPOLLIN
 * edge shows up as a stall, reported after a timeout.
 *
 *   epoll_et ADDR PORT [ROUNDS] [BYTES]
 *
 * Prints "epoll_et: N rounds x B bytes ok" or fails with a reason.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define STALL_MS 10000

static struct sockaddr_storage g_ss;
static socklen_t g_len;
static size_t g_bytes = 8 << 20;

static void die(const char *what)
{
	fprintf(stderr, "epoll_et: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void fail(const char *what)
{
	fprintf(stderr, "epoll_et: FAIL: %s\n", what);
	exit(1);
}

static uint8_t pattern(size_t off)
{
	return (uint8_t)(off * 2654435761u >> 13);
}

static void nonblock(int fd)
{
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
		die("fcntl");
}

/* Server: one connection at a time, served from an edge-triggered loop. */
static void *server(void *arg)
{
	int l = *(int *)arg, ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.fd = l};
	uint8_t *body = malloc(g_bytes);

	if (ep < 0 || !body)
		die("setup");
	for (size_t i = 0; i < g_bytes; i++)
		body[i] = pattern(i);
	if (epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev) < 0)
		die("epoll_ctl listener");
	static size_t offs[4096]; /* bytes written, per connection fd */
	for (;;) {
		struct epoll_event evs[8];
		int n = epoll_wait(ep, evs, 8, STALL_MS);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("epoll_wait");
		if (n == 0) {
			fprintf(stderr, "epoll_et: server stalled (no edge for %d ms)", STALL_MS);
			for (int f = 0; f < 4096; f++) {
				struct pollfd p = {.fd = f, .events = POLLIN | POLLOUT};

				int outq = -1;

				if (f != l && offs[f] && poll(&p, 1, 0) >= 0 && !(p.revents & POLLNVAL)) {
					ioctl(f, SIOCOUTQ, &outq);
					fprintf(stderr, "; fd %d at %zu of %zu bytes, poll now:%s%s%s, outq %d", f, offs[f],
						g_bytes, p.revents & POLLIN ? " IN" : "", p.revents & POLLOUT ? " OUT" : "",
						p.revents & POLLHUP ? " HUP" : "", outq);
				}
			}
			fprintf(stderr, "\n");
			if (getenv("EPOLL_ET_HOLD"))
				sleep((unsigned)atoi(getenv("EPOLL_ET_HOLD"))); /* time to inspect */
			exit(1);
		}
		for (int i = 0; i < n; i++) {
			if (evs[i].data.fd == l) {
				for (;;) {
					int a = accept4(l, NULL, NULL, SOCK_NONBLOCK);

					if (a < 0) {
						if (errno == EAGAIN)
							break;
						die("accept4");
					}
					if (a >= 4096)
						fail("fd too large");
					offs[a] = 0;
					struct epoll_event ce = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.fd = a};

					if (epoll_ctl(ep, EPOLL_CTL_ADD, a, &ce) < 0)
						die("epoll_ctl conn");
				}
				continue;
			}
			int c = evs[i].data.fd;
			size_t off = offs[c];

			/* Write until EAGAIN, in 32 KiB x 2 writev like nginx's output buffers. */
			while (off < g_bytes) {
				struct iovec iov[2];
				size_t left = g_bytes - off, a = left < 32768 ? left : 32768;
				size_t b = left - a < 32768 ? left - a : 32768;

				iov[0] = (struct iovec){body + off, a};
				iov[1] = (struct iovec){body + off + a, b};
				ssize_t w = writev(c, iov, b ? 2 : 1);

				if (w < 0) {
					if (errno == EAGAIN)
						break;
					die("writev");
				}
				off += (size_t)w;
			}
			offs[c] = off;
			if (off == g_bytes) {
				/* Done: wait for the client's close (EPOLLIN then 0). */
				char x;
				ssize_t r = read(c, &x, 1);

				if (r == 0 || (r < 0 && errno != EAGAIN)) {
					epoll_ctl(ep, EPOLL_CTL_DEL, c, NULL);
					close(c);
				}
			}
		}
	}
	return NULL;
}

static int wait_edge(int ep, const char *who, size_t got)
{
	struct epoll_event ev;
	int n;

	do
		n = epoll_wait(ep, &ev, 1, STALL_MS);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		die("epoll_wait");
	if (n == 0) {
		fprintf(stderr, "epoll_et: %s client stalled at %zu of %zu bytes\n", who, got, g_bytes);
		exit(1);
	}
	return 0;
}

static void client(int round)
{
	int fd = socket(g_ss.ss_family, SOCK_STREAM, 0), et = round & 1, ep = -1;
	size_t got = 0;
	static uint8_t buf[65536];

	if (fd < 0)
		die("socket");
	if (connect(fd, (struct sockaddr *)&g_ss, g_len) < 0)
		die("connect");
	if (et) {
		struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.fd = fd};

		nonblock(fd);
		ep = epoll_create1(0);
		if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
			die("client epoll");
	}
	while (got < g_bytes) {
		/* Small, varying reads so the server meets a full ring often. */
		size_t want = 1 + (size_t)((got * 7 + (unsigned)round * 131) % sizeof(buf));
		ssize_t r = read(fd, buf, want);

		if (r < 0 && errno == EAGAIN) {
			wait_edge(ep, "edge-triggered", got);
			continue;
		}
		if (r < 0)
			die("read");
		if (r == 0) {
			fprintf(stderr, "epoll_et: early EOF at %zu of %zu bytes\n", got, g_bytes);
			exit(1);
		}
		for (ssize_t i = 0; i < r; i++)
			if (buf[i] != pattern(got + (size_t)i)) {
				fprintf(stderr, "epoll_et: byte %zu differs\n", got + (size_t)i);
				exit(1);
			}
		got += (size_t)r;
	}
	if (ep >= 0)
		close(ep);
	close(fd);
}

int main(int argc, char **argv)
{
	int rounds = argc > 3 ? atoi(argv[3]) : 20, one = 1;
	pthread_t t;

	if (argc < 3) {
		fprintf(stderr, "usage: epoll_et ADDR PORT [ROUNDS] [BYTES]\n");
		return 2;
	}
	if (argc > 4)
		g_bytes = strtoul(argv[4], NULL, 10);
	memset(&g_ss, 0, sizeof(g_ss));
	if (strchr(argv[1], ':')) {
		struct sockaddr_in6 *s6 = (void *)&g_ss;

		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)atoi(argv[2]));
		if (inet_pton(AF_INET6, argv[1], &s6->sin6_addr) != 1)
			fail("bad address");
		g_len = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (void *)&g_ss;

		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)atoi(argv[2]));
		if (inet_pton(AF_INET, argv[1], &s4->sin_addr) != 1)
			fail("bad address");
		g_len = sizeof(*s4);
	}
	int l = socket(g_ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);

	if (l < 0)
		die("socket");
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(l, (struct sockaddr *)&g_ss, g_len) < 0)
		die("bind");
	if (listen(l, 16) < 0)
		die("listen");
	if (pthread_create(&t, NULL, server, &l))
		fail("pthread_create");
	for (int r = 0; r < rounds; r++)
		client(r);
	printf("epoll_et: %d rounds x %zu bytes ok\n", rounds, g_bytes);
	return 0;
}

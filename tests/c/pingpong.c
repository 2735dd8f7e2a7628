/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pingpong - 64-byte TCP ping-pong, for latency benchmarks.
 *
 *   pingpong server ADDR PORT ITERATIONS   (serves one client, then exits)
 *   pingpong client ADDR PORT ITERATIONS
 *
 * The client prints min/median/p99 round-trip time in microseconds:
 *   pingpong: 10000 x 64 B  min 12.3 us  median 14.1 us  p99 30.2 us
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MSG 64

static socklen_t mkaddr(const char *addr, int port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (strchr(addr, ':')) {
		struct sockaddr_in6 *in6 = (void *)ss;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, addr, &in6->sin6_addr) != 1)
			return 0;
		return sizeof(*in6);
	}
	struct sockaddr_in *in = (void *)ss;
	in->sin_family = AF_INET;
	in->sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, addr, &in->sin_addr) != 1)
		return 0;
	return sizeof(*in);
}

static int full(int fd, char *buf, int n, int wr)
{
	int done = 0;
	while (done < n) {
		ssize_t r = wr ? send(fd, buf + done, (size_t)(n - done), MSG_NOSIGNAL)
			       : recv(fd, buf + done, (size_t)(n - done), 0);
		if (r <= 0) {
			if (r < 0 && errno == EINTR)
				continue;
			return -1;
		}
		done += (int)r;
	}
	return 0;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	struct sockaddr_storage ss;
	socklen_t l;
	char buf[MSG];
	int fd, one = 1, iters, i;

	if (argc != 5 || (strcmp(argv[1], "server") && strcmp(argv[1], "client"))) {
		fprintf(stderr, "usage: %s server|client ADDR PORT ITERATIONS\n", argv[0]);
		return 2;
	}
	l = mkaddr(argv[2], atoi(argv[3]), &ss);
	iters = atoi(argv[4]);
	if (!l || iters <= 0) {
		fprintf(stderr, "pingpong: bad address or iterations\n");
		return 2;
	}
	fd = socket(ss.ss_family, SOCK_STREAM, 0);
	if (fd < 0) {
		perror("socket");
		return 1;
	}
	memset(buf, 'p', sizeof(buf));
	if (!strcmp(argv[1], "server")) {
		int c;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, (struct sockaddr *)&ss, l) < 0 || listen(fd, 1) < 0) {
			perror("bind/listen");
			return 1;
		}
		c = accept(fd, NULL, NULL);
		if (c < 0) {
			perror("accept");
			return 1;
		}
		setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		for (i = 0; i < iters; i++)
			if (full(c, buf, MSG, 0) || full(c, buf, MSG, 1)) {
				fprintf(stderr, "pingpong server: connection ended after %d\n", i);
				return 1;
			}
		close(c);
		close(fd);
		return 0;
	}
	{
		uint64_t *rtt = calloc((size_t)iters, sizeof(*rtt));
		int tries;

		/* the server may still be starting */
		for (tries = 0; connect(fd, (struct sockaddr *)&ss, l) < 0; tries++) {
			struct timespec ts = {0, 20000000};
			if (tries == 250 || errno != ECONNREFUSED) {
				perror("connect");
				return 1;
			}
			close(fd);
			fd = socket(ss.ss_family, SOCK_STREAM, 0);
			nanosleep(&ts, NULL);
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		for (i = 0; i < iters; i++) {
			uint64_t t0 = now_ns();
			if (full(fd, buf, MSG, 1) || full(fd, buf, MSG, 0)) {
				fprintf(stderr, "pingpong client: connection ended after %d\n", i);
				return 1;
			}
			rtt[i] = now_ns() - t0;
		}
		qsort(rtt, (size_t)iters, sizeof(*rtt), cmp);
		printf("pingpong: %d x %d B  min %.1f us  median %.1f us  p99 %.1f us\n", iters, MSG, rtt[0] / 1e3,
		       rtt[iters / 2] / 1e3, rtt[(size_t)((double)iters * 0.99) < (size_t)iters ? (size_t)((double)iters * 0.99) : (size_t)iters - 1] / 1e3);
		free(rtt);
		close(fd);
	}
	return 0;
}

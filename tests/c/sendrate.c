/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sendrate - how many 64-byte send() calls per second a program makes on
 * one TCP connection (the receiver just discards).  For benchmarks.
 *
 *   sendrate server ADDR PORT            (receives one connection, prints bytes)
 *   sendrate client ADDR PORT SECONDS [SIZE]
 *
 * The client prints: sendrate: 64 B x 3500000/s (224.0 MB/s) for 2.0 s
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static socklen_t mkaddr(const char *addr, int port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (strchr(addr, ':')) {
		struct sockaddr_in6 *in6 = (void *)ss;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		return inet_pton(AF_INET6, addr, &in6->sin6_addr) == 1 ? sizeof(*in6) : 0;
	}
	struct sockaddr_in *in = (void *)ss;
	in->sin_family = AF_INET;
	in->sin_port = htons((uint16_t)port);
	return inet_pton(AF_INET, addr, &in->sin_addr) == 1 ? sizeof(*in) : 0;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	struct sockaddr_storage ss;
	socklen_t l;
	int fd, one = 1;

	if (argc < 4 || (strcmp(argv[1], "server") && strcmp(argv[1], "client")) ||
	    (!strcmp(argv[1], "client") && argc < 5)) {
		fprintf(stderr, "usage: %s server ADDR PORT | client ADDR PORT SECONDS [SIZE]\n", argv[0]);
		return 2;
	}
	l = mkaddr(argv[2], atoi(argv[3]), &ss);
	if (!l) {
		fprintf(stderr, "sendrate: bad address\n");
		return 2;
	}
	fd = socket(ss.ss_family, SOCK_STREAM, 0);
	if (!strcmp(argv[1], "server")) {
		static char buf[1 << 20];
		long long total = 0;
		ssize_t r;
		int c;

		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, (struct sockaddr *)&ss, l) < 0 || listen(fd, 1) < 0 || (c = accept(fd, NULL, NULL)) < 0) {
			perror("sendrate server");
			return 1;
		}
		while ((r = recv(c, buf, sizeof(buf), 0)) > 0)
			total += r;
		printf("sendrate server: %lld bytes\n", total);
		return 0;
	}
	{
		double secs = atof(argv[4]), t0, t;
		int size = argc > 5 ? atoi(argv[5]) : 64, tries;
		char msg[65536];
		long long n = 0;

		if (size < 1 || size > (int)sizeof(msg))
			size = 64;
		memset(msg, 'm', sizeof(msg));
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
		t0 = now();
		do {
			int i;
			for (i = 0; i < 1024; i++) {
				if (send(fd, msg, (size_t)size, MSG_NOSIGNAL) != size) {
					perror("send");
					return 1;
				}
			}
			n += 1024;
			t = now();
		} while (t - t0 < secs);
		printf("sendrate: %d B x %.0f/s (%.1f MB/s) for %.1f s\n", size, (double)n / (t - t0),
		       (double)n * size / (t - t0) / 1e6, t - t0);
		close(fd);
	}
	return 0;
}

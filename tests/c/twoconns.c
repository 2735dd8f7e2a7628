/* SPDX-License-Identifier: Apache-2.0 */
/*
 * twoconns - one program holding several TCP connections at once, each
 * over its own port (so that rules can put each on another engine).
 *
 *   twoconns ADDR HOLDFILE PORT...
 *
 * For each port: listen on ADDR:PORT, connect to it, accept, and exchange
 * a message both ways.  Then it prints "holding N connections" and keeps
 * them open until HOLDFILE exists (at most 60 s), exchanges again on each,
 * closes everything and prints "twoconns: N connections ok".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAXC 8

static void die(const char *what, int port)
{
	fprintf(stderr, "twoconns: port %d: ", port);
	perror(what);
	exit(1);
}

static void exchange(int a, int b, int port, int round)
{
	char msg[64], buf[64];
	int n = snprintf(msg, sizeof(msg), "round %d port %d", round, port);
	ssize_t got = 0, r;
	int i;

	for (i = 0; i < 2; i++) {
		int from = i ? b : a, to = i ? a : b;

		if (write(from, msg, (size_t)n) != n)
			die("write", port);
		for (got = 0; got < n; got += r)
			if ((r = read(to, buf + got, (size_t)(n - got))) <= 0)
				die("read", port);
		if (memcmp(buf, msg, (size_t)n))
			die("wrong bytes", port);
	}
}

int main(int argc, char **argv)
{
	int ls[MAXC], cs[MAXC], as[MAXC], ports[MAXC], n, i, one = 1, waited;
	struct sockaddr_in sa;

	if (argc < 4 || argc - 3 > MAXC) {
		fprintf(stderr, "usage: twoconns ADDR HOLDFILE PORT... (at most %d ports)\n", MAXC);
		return 2;
	}
	n = argc - 3;
	for (i = 0; i < n; i++) {
		ports[i] = atoi(argv[3 + i]);
		memset(&sa, 0, sizeof(sa));
		sa.sin_family = AF_INET;
		sa.sin_port = htons((uint16_t)ports[i]);
		if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1) {
			fprintf(stderr, "twoconns: bad IPv4 address %s\n", argv[1]);
			return 2;
		}
		if ((ls[i] = socket(AF_INET, SOCK_STREAM, 0)) < 0)
			die("socket", ports[i]);
		setsockopt(ls[i], SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(ls[i], (struct sockaddr *)&sa, sizeof(sa)) < 0)
			die("bind", ports[i]);
		if (listen(ls[i], 4) < 0)
			die("listen", ports[i]);
		if ((cs[i] = socket(AF_INET, SOCK_STREAM, 0)) < 0)
			die("socket", ports[i]);
		if (connect(cs[i], (struct sockaddr *)&sa, sizeof(sa)) < 0)
			die("connect", ports[i]);
		if ((as[i] = accept(ls[i], NULL, NULL)) < 0)
			die("accept", ports[i]);
		exchange(cs[i], as[i], ports[i], 1);
	}
	printf("holding %d connections\n", n);
	fflush(stdout);
	for (waited = 0; access(argv[2], F_OK) != 0; waited++) {
		if (waited > 1200) {
			fprintf(stderr, "twoconns: %s did not appear in 60 s\n", argv[2]);
			return 1;
		}
		usleep(50000);
	}
	for (i = 0; i < n; i++) {
		exchange(cs[i], as[i], ports[i], 2);
		close(cs[i]);
		close(as[i]);
		close(ls[i]);
	}
	printf("twoconns: %d connections ok\n", n);
	return 0;
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * stress - many threads, many connections: an echo server (one thread per
 * connection) and client threads that connect, echo random-sized messages
 * (checked byte for byte), half-close and close, over and over.  Exercises
 * concurrent socket creation, command slots and rings.
 *
 *   stress ADDR PORT [THREADS [CONNS [MSGS]]]     (defaults 16 20 50)
 *
 * Prints "stress: N connections, B bytes echoed, 0 errors"; exits 1 on error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct sockaddr_storage g_addr;
static socklen_t g_len;
static int g_conns = 20, g_msgs = 50;
static atomic_long g_bytes, g_errors, g_done;

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

static void err(const char *what)
{
	fprintf(stderr, "stress: %s: %s\n", what, strerror(errno));
	atomic_fetch_add(&g_errors, 1);
}

static void *echo(void *arg)
{
	int c = (int)(intptr_t)arg;
	char buf[70000];
	ssize_t r;

	while ((r = recv(c, buf, sizeof(buf), 0)) > 0) {
		ssize_t off = 0;
		while (off < r) {
			ssize_t w = send(c, buf + off, (size_t)(r - off), MSG_NOSIGNAL);
			if (w <= 0) {
				err("server send");
				close(c);
				return NULL;
			}
			off += w;
		}
	}
	if (r < 0)
		err("server recv");
	close(c);
	return NULL;
}

static void *server(void *arg)
{
	int l = (int)(intptr_t)arg;

	for (;;) {
		int c = accept(l, NULL, NULL);
		pthread_t t;

		if (c < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return NULL; /* listener closed */
		}
		pthread_create(&t, NULL, echo, (void *)(intptr_t)c);
		pthread_detach(t);
	}
}

static void *client(void *arg)
{
	unsigned seed = (unsigned)(uintptr_t)arg * 7919u + 1;
	static __thread char out[65536], in[65536];
	int i, m;

	for (i = 0; i < g_conns; i++) {
		int fd = socket(g_addr.ss_family, SOCK_STREAM, 0), one = 1;

		if (fd < 0 || connect(fd, (struct sockaddr *)&g_addr, g_len) < 0) {
			err("connect");
			if (fd >= 0)
				close(fd);
			continue;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		for (m = 0; m < g_msgs; m++) {
			size_t n = 1 + (size_t)(rand_r(&seed) % (m % 10 == 9 ? 65536 : 2000)), got = 0, k;

			for (k = 0; k < n; k++)
				out[k] = (char)rand_r(&seed);
			if (send(fd, out, n, MSG_NOSIGNAL) != (ssize_t)n) {
				err("client send");
				break;
			}
			while (got < n) {
				ssize_t r = recv(fd, in + got, n - got, 0);
				if (r <= 0) {
					err("client recv");
					break;
				}
				got += (size_t)r;
			}
			if (got != n || memcmp(in, out, n)) {
				fprintf(stderr, "stress: echo mismatch (%zu of %zu bytes)\n", got, n);
				atomic_fetch_add(&g_errors, 1);
				break;
			}
			atomic_fetch_add(&g_bytes, (long)n);
		}
		shutdown(fd, SHUT_WR);
		if (recv(fd, in, 1, 0) != 0) /* the server closes after our EOF */
			err("client EOF");
		close(fd);
		atomic_fetch_add(&g_done, 1);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	int threads = 16, i, l, one = 1;
	pthread_t st, *ct;

	if (argc < 3) {
		fprintf(stderr, "usage: %s ADDR PORT [THREADS [CONNS [MSGS]]]\n", argv[0]);
		return 2;
	}
	g_len = mkaddr(argv[1], atoi(argv[2]), &g_addr);
	if (argc > 3)
		threads = atoi(argv[3]);
	if (argc > 4)
		g_conns = atoi(argv[4]);
	if (argc > 5)
		g_msgs = atoi(argv[5]);
	if (!g_len || threads < 1 || threads > 1000) {
		fprintf(stderr, "stress: bad arguments\n");
		return 2;
	}
	alarm(300);
	l = socket(g_addr.ss_family, SOCK_STREAM, 0);
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(l, (struct sockaddr *)&g_addr, g_len) < 0 || listen(l, 128) < 0) {
		perror("stress: listen");
		return 1;
	}
	pthread_create(&st, NULL, server, (void *)(intptr_t)l);
	ct = calloc((size_t)threads, sizeof(*ct));
	for (i = 0; i < threads; i++)
		pthread_create(&ct[i], NULL, client, (void *)(uintptr_t)i);
	for (i = 0; i < threads; i++)
		pthread_join(ct[i], NULL);
	printf("stress: %ld connections, %ld bytes echoed, %ld errors\n", atomic_load(&g_done), atomic_load(&g_bytes),
	       atomic_load(&g_errors));
	free(ct);
	return atomic_load(&g_errors) ? 1 : 0;
}

// tcpperf: perftest-style TCP latency and message-rate benchmark over plain
// sockets, so that the same unmodified binary runs over the kernel and under
// `nuse run`.
//
//   tcpperf server [-p PORT] [-b ADDR]
//   tcpperf lat    [-p PORT] [-s SIZE | -a] [-n ITERS] ADDR
//   tcpperf rate   [-p PORT] [-s SIZE | -a] [-n MSGS]  ADDR
//
// The server serves any number of runs, one connection each, until it gets
// SIGTERM. Output: one line per size, in perftest's columns.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { MODE_LAT = 1, MODE_RATE = 2 };

struct hello {
	uint32_t mode, size, count, pad;
};

static void die(const char *what)
{
	fprintf(stderr, "tcpperf: %s: %s\n", what, strerror(errno));
	exit(1);
}

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int read_full(int fd, void *buf, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = recv(fd, (char *)buf + got, n - got, 0);
		if (r == 0)
			return 0;
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		got += r;
	}
	return 1;
}

static int write_full(int fd, const void *buf, size_t n)
{
	size_t done = 0;
	while (done < n) {
		ssize_t w = send(fd, (const char *)buf + done, n - done, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		done += w;
	}
	return 0;
}

static int resolve(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST };
	struct addrinfo *ai;
	char ps[16];
	snprintf(ps, sizeof(ps), "%d", port);
	if (getaddrinfo(host, ps, &hints, &ai) != 0)
		return -1;
	memcpy(ss, ai->ai_addr, ai->ai_addrlen);
	*len = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

static void nodelay(int fd)
{
	int one = 1;
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		die("TCP_NODELAY");
}

static int serve_one(int c)
{
	struct hello h;
	if (read_full(c, &h, sizeof(h)) <= 0)
		return -1;
	if (h.size == 0 || h.size > (8u << 20))
		return -1;
	char *buf = malloc(h.size);
	if (!buf)
		return -1;
	if (h.mode == MODE_LAT) {
		for (uint32_t i = 0; i < h.count; i++) {
			if (read_full(c, buf, h.size) <= 0 || write_full(c, buf, h.size) < 0)
				break;
		}
	} else {
		uint64_t want = (uint64_t)h.size * h.count, got = 0;
		while (got < want) {
			ssize_t r = recv(c, buf, h.size, 0);
			if (r <= 0)
				break;
			got += r;
		}
		char ack = 1;
		write_full(c, &ack, 1);
	}
	free(buf);
	return 0;
}

static int server(const char *bind_addr, int port)
{
	struct sockaddr_storage ss;
	socklen_t len;
	if (resolve(bind_addr, port, &ss, &len) < 0) {
		fprintf(stderr, "tcpperf: bad address %s\n", bind_addr);
		return 1;
	}
	int l = socket(ss.ss_family, SOCK_STREAM, 0);
	if (l < 0)
		die("socket");
	int one = 1;
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(l, (struct sockaddr *)&ss, len) < 0)
		die("bind");
	if (listen(l, 16) < 0)
		die("listen");
	printf("tcpperf server listening on %s port %d\n", bind_addr, port);
	fflush(stdout);
	for (;;) {
		int c = accept(l, NULL, NULL);
		if (c < 0) {
			if (errno == EINTR)
				continue;
			die("accept");
		}
		nodelay(c);
		serve_one(c);
		close(c);
	}
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static int client(int mode, const char *host, int port, uint32_t size, uint32_t count)
{
	struct sockaddr_storage ss;
	socklen_t len;
	if (resolve(host, port, &ss, &len) < 0) {
		fprintf(stderr, "tcpperf: bad address %s\n", host);
		return 1;
	}
	int fd = socket(ss.ss_family, SOCK_STREAM, 0);
	if (fd < 0)
		die("socket");
	nodelay(fd);
	if (connect(fd, (struct sockaddr *)&ss, len) < 0)
		die("connect");
	struct hello h = { .mode = mode, .size = size, .count = count };
	if (write_full(fd, &h, sizeof(h)) < 0)
		die("send");
	char *buf = calloc(1, size);
	if (!buf)
		die("calloc");
	if (mode == MODE_LAT) {
		double *t = calloc(count, sizeof(double));
		if (!t)
			die("calloc");
		for (uint32_t i = 0; i < count; i++) {
			double t0 = now_us();
			if (write_full(fd, buf, size) < 0)
				die("send");
			int r = read_full(fd, buf, size);
			if (r <= 0) {
				if (r == 0)
					errno = ECONNRESET;
				die("recv");
			}
			t[i] = now_us() - t0;
		}
		double sum = 0, sq = 0;
		for (uint32_t i = 0; i < count; i++)
			sum += t[i];
		double avg = sum / count;
		for (uint32_t i = 0; i < count; i++)
			sq += (t[i] - avg) * (t[i] - avg);
		qsort(t, count, sizeof(double), cmp_double);
		// perftest's columns; RTT halves are not taken: these are round trips.
		printf(" %-8u %-11u %-11.2f %-11.2f %-11.2f %-11.2f %-11.2f %-11.2f %-11.2f\n", size, count, t[0],
		       t[count - 1], t[count / 2], avg, sqrt(sq / count), t[(size_t)(count * 0.99)],
		       t[(size_t)(count * 0.999)]);
		free(t);
	} else {
		double t0 = now_us();
		for (uint32_t i = 0; i < count; i++)
			if (write_full(fd, buf, size) < 0)
				die("send");
		char ack;
		if (read_full(fd, &ack, 1) <= 0)
			die("recv ack");
		double us = now_us() - t0;
		double mbs = (double)size * count / us; // bytes/us = MB/s
		printf(" %-8u %-11u %-18.2f %-18.2f %-12.6f\n", size, count, mbs, mbs, count / us);
	}
	free(buf);
	close(fd);
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: tcpperf server [-p PORT] [-b ADDR]\n"
			"       tcpperf lat|rate [-p PORT] [-s SIZE | -a] [-n COUNT] ADDR\n");
	exit(2);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		usage();
	const char *mode = argv[1];
	int port = 18515, all = 0, opt;
	uint32_t size = 64, count = 0;
	const char *bind_addr = "0.0.0.0";
	optind = 2;
	while ((opt = getopt(argc, argv, "p:s:n:ab:")) != -1) {
		switch (opt) {
		case 'p': port = atoi(optarg); break;
		case 's': size = strtoul(optarg, NULL, 0); break;
		case 'n': count = strtoul(optarg, NULL, 0); break;
		case 'a': all = 1; break;
		case 'b': bind_addr = optarg; break;
		default: usage();
		}
	}
	signal(SIGPIPE, SIG_IGN);
	if (!strcmp(mode, "server"))
		return server(bind_addr, port);
	int m = !strcmp(mode, "lat") ? MODE_LAT : !strcmp(mode, "rate") ? MODE_RATE : 0;
	if (!m || optind != argc - 1 || size == 0 || size > (8u << 20))
		usage();
	if (count == 0)
		count = m == MODE_LAT ? 1000 : 100000;
	if (m == MODE_LAT)
		printf(" %-8s %-11s %-11s %-11s %-11s %-11s %-11s %-11s %-11s\n", "#bytes", "#iterations",
		       "t_min[usec]", "t_max[usec]", "t_typical", "t_avg[usec]", "t_stdev", "99%", "99.9%");
	else
		printf(" %-8s %-11s %-18s %-18s %-12s\n", "#bytes", "#iterations", "BW peak[MB/sec]",
		       "BW average[MB/sec]", "MsgRate[Mpps]");
	fflush(stdout);
	for (uint32_t s = all ? 2 : size; s <= (all ? (1u << 16) : size); s *= 2) {
		uint32_t n = count;
		if (all && m == MODE_RATE && (uint64_t)s * n > (256u << 20))
			n = (256u << 20) / s; // keep every run bounded
		if (client(m, argv[argc - 1], port, s, n))
			return 1;
		fflush(stdout);
		if (!all)
			break;
	}
	return 0;
}

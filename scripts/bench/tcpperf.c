// tcpperf: perftest-style TCP latency, message-rate and bulk-throughput
// benchmark over plain sockets, so that the same unmodified binary runs over
// the kernel and under `nuse run`.
//
//   tcpperf server [-p PORT] [-b ADDR]
//   tcpperf lat    [-p PORT] [-s SIZE | -a] [-n ITERS] ADDR
//   tcpperf rate   [-p PORT] [-s SIZE | -a] [-n MSGS]  ADDR
//   tcpperf bw     [-p PORT] [-s SIZE | -a] [-n WRITES] [-V] ADDR
//   tcpperf crr    [-p PORT] [-s SIZE | -a] [-n CONNS] ADDR
//
// rate: the client send()s MSGS messages of SIZE, the server reads them in
// SIZE-byte recv()s and acks at the end; the key figure is send() calls per
// second. bw (bulk): the same stream, SIZE-byte writes (default 64 KiB),
// WRITES x SIZE bytes in all; the server acks with the byte count it read
// and, with -V, a position-dependent checksum of the stream (Fletcher-style,
// computed at both ends) that the client compares: lost, duplicated or
// reordered bytes fail the run. The key figure is bytes per second.
// crr (netperf's TCP_CRR): each iteration is a new connection: connect, one
// SIZE-byte request (sent with the hello, in one write), the SIZE-byte
// answer, the server's close (the client reads to EOF, so the server's end
// takes TIME_WAIT, as an HTTP server's does), the client's close; the
// columns are lat's, each iteration's time being the whole transaction.
//
// The server serves any number of runs, one connection each, until it gets
// SIGTERM. Output: one line per size, in perftest's columns (bw adds the
// average in Gbit/s).
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

enum { MODE_LAT = 1, MODE_RATE = 2, MODE_BW = 3, MODE_CRR = 4 };
enum { FLAG_VERIFY = 1 };

struct hello {
	uint32_t mode, size, count, flags;
};

// bw's answer at the end of the stream.
struct bw_ack {
	uint64_t bytes, sum;
};

// sum_t is a Fletcher-style checksum of a byte stream: b depends on every
// byte and on its position, so chunks lost, repeated or swapped change it.
typedef struct {
	uint64_t a, b;
} sum_t;

static void sum_add(sum_t *s, const unsigned char *p, size_t n)
{
	uint64_t a = s->a, b = s->b;
	for (size_t i = 0; i < n; i++) {
		a += p[i];
		b += a;
	}
	s->a = a, s->b = b;
}

static uint64_t sum_value(const sum_t *s)
{
	return s->b * 0x9e3779b97f4a7c15ull ^ s->a;
}

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
	} else if (h.mode == MODE_RATE) {
		uint64_t want = (uint64_t)h.size * h.count, got = 0;
		while (got < want) {
			ssize_t r = recv(c, buf, h.size, 0);
			if (r <= 0)
				break;
			got += r;
		}
		char ack = 1;
		write_full(c, &ack, 1);
	} else if (h.mode == MODE_BW) {
		uint64_t want = (uint64_t)h.size * h.count, got = 0;
		sum_t sum = { 0, 0 };
		while (got < want) {
			ssize_t r = recv(c, buf, h.size, 0);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				break;
			if (h.flags & FLAG_VERIFY)
				sum_add(&sum, (unsigned char *)buf, r);
			got += r;
		}
		struct bw_ack ack = { got, sum_value(&sum) };
		write_full(c, &ack, sizeof(ack));
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

// print_lat prints lat's columns for count times t (sorting them).
static void print_lat(uint32_t size, uint32_t count, double *t)
{
	double sum = 0, sq = 0;
	for (uint32_t i = 0; i < count; i++)
		sum += t[i];
	double avg = sum / count;
	for (uint32_t i = 0; i < count; i++)
		sq += (t[i] - avg) * (t[i] - avg);
	qsort(t, count, sizeof(double), cmp_double);
	// perftest's columns; RTT halves are not taken: these are round trips.
	printf(" %-8u %-11u %-11.2f %-11.2f %-11.2f %-11.2f %-11.2f %-11.2f %-11.2f\n", size, count, t[0], t[count - 1],
	       t[count / 2], avg, sqrt(sq / count), t[(size_t)(count * 0.99)], t[(size_t)(count * 0.999)]);
}

// client_crr runs count transactions, a connection each (see crr above).
static int client_crr(const struct sockaddr_storage *ss, socklen_t len, uint32_t size, uint32_t count)
{
	struct hello h = { .mode = MODE_LAT, .size = size, .count = 1 };
	char *msg = calloc(1, sizeof(h) + size);
	double *t = calloc(count, sizeof(double));
	if (!msg || !t)
		die("calloc");
	memcpy(msg, &h, sizeof(h));
	for (uint32_t i = 0; i < count; i++) {
		double t0 = now_us();
		int fd = socket(ss->ss_family, SOCK_STREAM, 0);
		if (fd < 0)
			die("socket");
		nodelay(fd);
		if (connect(fd, (const struct sockaddr *)ss, len) < 0)
			die("connect");
		if (write_full(fd, msg, sizeof(h) + size) < 0)
			die("send");
		int r = read_full(fd, msg + sizeof(h), size);
		if (r > 0) {
			char c;
			while ((r = recv(fd, &c, 1, 0)) < 0 && errno == EINTR)
				;
			if (r > 0) {
				fprintf(stderr, "tcpperf: the server sent more than %u bytes\n", size);
				exit(1);
			}
			r = r == 0 ? 1 : r;
		}
		if (r <= 0) {
			if (r == 0)
				errno = ECONNRESET;
			die("recv");
		}
		close(fd);
		t[i] = now_us() - t0;
	}
	print_lat(size, count, t);
	free(t);
	free(msg);
	return 0;
}

static int client(int mode, const char *host, int port, uint32_t size, uint32_t count, int verify)
{
	struct sockaddr_storage ss;
	socklen_t len;
	if (resolve(host, port, &ss, &len) < 0) {
		fprintf(stderr, "tcpperf: bad address %s\n", host);
		return 1;
	}
	if (mode == MODE_CRR)
		return client_crr(&ss, len, size, count);
	int fd = socket(ss.ss_family, SOCK_STREAM, 0);
	if (fd < 0)
		die("socket");
	nodelay(fd);
	if (connect(fd, (struct sockaddr *)&ss, len) < 0)
		die("connect");
	struct hello h = { .mode = mode, .size = size, .count = count, .flags = verify ? FLAG_VERIFY : 0 };
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
		print_lat(size, count, t);
		free(t);
	} else if (mode == MODE_BW) {
		// Data that is not all zeroes, different in each write (the
		// buffer's first word counts the writes), for the checksum.
		uint64_t x = 0x2545f4914f6cdd1dull;
		for (uint32_t i = 0; i < size; i++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			buf[i] = (char)x;
		}
		sum_t sum = { 0, 0 };
		double t0 = now_us();
		for (uint32_t i = 0; i < count; i++) {
			memcpy(buf, &i, size < sizeof(i) ? size : sizeof(i));
			if (verify)
				sum_add(&sum, (unsigned char *)buf, size);
			if (write_full(fd, buf, size) < 0)
				die("send");
		}
		struct bw_ack ack;
		int r = read_full(fd, &ack, sizeof(ack));
		if (r <= 0) {
			if (r == 0)
				errno = ECONNRESET;
			die("recv ack");
		}
		double us = now_us() - t0;
		uint64_t total = (uint64_t)size * count;
		if (ack.bytes != total) {
			fprintf(stderr, "tcpperf: the server read %llu bytes of %llu\n", (unsigned long long)ack.bytes,
				(unsigned long long)total);
			exit(1);
		}
		if (verify && ack.sum != sum_value(&sum)) {
			fprintf(stderr, "tcpperf: checksum mismatch: the server read other bytes than were sent (%u x %u)\n",
				count, size);
			exit(1);
		}
		double mbs = (double)total / us; // bytes/us = MB/s
		printf(" %-8u %-11u %-18.2f %-18.2f %-12.6f %-12.3f\n", size, count, mbs, mbs, count / us, mbs * 8 / 1000);
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
			"       tcpperf lat|rate [-p PORT] [-s SIZE | -a] [-n COUNT] ADDR\n"
			"       tcpperf bw [-p PORT] [-s SIZE | -a] [-n WRITES] [-V] ADDR\n"
			"       tcpperf crr [-p PORT] [-s SIZE | -a] [-n CONNS] ADDR\n");
	exit(2);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		usage();
	const char *mode = argv[1];
	int port = 18515, all = 0, verify = 0, opt;
	uint32_t size = 0, count = 0;
	const char *bind_addr = "0.0.0.0";
	optind = 2;
	while ((opt = getopt(argc, argv, "p:s:n:ab:V")) != -1) {
		switch (opt) {
		case 'p': port = atoi(optarg); break;
		case 's': size = strtoul(optarg, NULL, 0); break;
		case 'n': count = strtoul(optarg, NULL, 0); break;
		case 'a': all = 1; break;
		case 'b': bind_addr = optarg; break;
		case 'V': verify = 1; break;
		default: usage();
		}
	}
	signal(SIGPIPE, SIG_IGN);
	if (!strcmp(mode, "server"))
		return server(bind_addr, port);
	int m = !strcmp(mode, "lat")	? MODE_LAT
		: !strcmp(mode, "rate") ? MODE_RATE
		: !strcmp(mode, "bw")	? MODE_BW
		: !strcmp(mode, "crr")	? MODE_CRR
					: 0;
	if (size == 0)
		size = m == MODE_BW ? 65536 : 64;
	if (!m || optind != argc - 1 || size > (8u << 20))
		usage();
	int count_given = count != 0;
	if (count == 0)
		count = m == MODE_LAT || m == MODE_CRR ? 1000 : m == MODE_RATE ? 100000 : (256u << 20) / size;
	if (m == MODE_LAT || m == MODE_CRR)
		printf(" %-8s %-11s %-11s %-11s %-11s %-11s %-11s %-11s %-11s\n", "#bytes", "#iterations",
		       "t_min[usec]", "t_max[usec]", "t_typical", "t_avg[usec]", "t_stdev", "99%", "99.9%");
	else if (m == MODE_RATE)
		printf(" %-8s %-11s %-18s %-18s %-12s\n", "#bytes", "#iterations", "BW peak[MB/sec]",
		       "BW average[MB/sec]", "MsgRate[Mpps]");
	else
		printf(" %-8s %-11s %-18s %-18s %-12s %-12s\n", "#bytes", "#iterations", "BW peak[MB/sec]",
		       "BW average[MB/sec]", "MsgRate[Mpps]", "BW avg[Gb/sec]");
	fflush(stdout);
	for (uint32_t s = all ? 2 : size; s <= (all ? (1u << 16) : size); s *= 2) {
		uint32_t n = count;
		if (all && m == MODE_BW && !count_given)
			n = (256u << 20) / s; // 256 MiB a size, at most 1M writes
		if (n > (1u << 20) && m == MODE_BW && !count_given)
			n = 1u << 20;
		if (all && m != MODE_LAT && m != MODE_CRR && (uint64_t)s * n > (256u << 20))
			n = (256u << 20) / s; // keep every run bounded
		if (client(m, argv[argc - 1], port, s, n, verify))
			return 1;
		fflush(stdout);
		if (!all)
			break;
	}
	return 0;
}

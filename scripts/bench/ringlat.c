// ringlat: the floor under NUSE's latency, measured two ways in one program.
//
//   ringlat line [-n ITERS] [-c CPU_A,CPU_B]
//       Two processes, pinned to two CPUs, bounce one shared cache line:
//       each round trip is the physical limit of any cross-core handoff.
//   ringlat cmd  [-n ITERS] [-c CPU] ADDR PORT
//       Under `nuse run` (with rules that claim ADDR): binds a NUSE socket
//       and times getsockname(), which the shim posts on the arena's command
//       ring and the daemon answers; both sides spin, nothing sleeps. This is
//       the bare shim<->daemon request/answer round trip.
//
// Output: one line of perftest-like columns, in nanoseconds.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what)
{
	fprintf(stderr, "ringlat: %s: %s\n", what, strerror(errno));
	exit(1);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void pin(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) < 0)
		die("sched_setaffinity");
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void report(const char *what, uint64_t *t, unsigned n, uint64_t clock_cost)
{
	double sum = 0;

	for (unsigned i = 0; i < n; i++)
		sum += (double)t[i];
	qsort(t, n, sizeof(*t), cmp_u64);
	printf(" %-22s %-11u %-11llu %-11llu %-11.0f %-11llu %-11llu %llu\n", what, n, (unsigned long long)t[0],
	       (unsigned long long)t[n / 2], sum / n, (unsigned long long)t[(size_t)(n * 0.99)],
	       (unsigned long long)t[n - 1], (unsigned long long)clock_cost);
}

// clock_cost is what two clock_gettime calls add to each sample.
static uint64_t clock_cost(void)
{
	uint64_t best = UINT64_MAX;

	for (int i = 0; i < 1000; i++) {
		uint64_t a = now_ns(), b = now_ns();

		if (b - a < best)
			best = b - a;
	}
	return best;
}

struct line {
	_Alignas(64) _Atomic uint64_t ping;
	_Alignas(64) _Atomic uint64_t pong; // unused by the bounce; keeps the page ours
};

static int run_line(unsigned n, int cpu_a, int cpu_b)
{
	struct line *l = mmap(NULL, sizeof(*l), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	uint64_t *t = calloc(n, sizeof(*t));
	pid_t child;
	int st;

	if (l == MAP_FAILED || !t)
		die("alloc");
	child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		// Odd values are the parent's pings, even the child's answers.
		pin(cpu_b);
		alarm(60); // bounded even if the parent dies
		for (uint64_t want = 1; want < 2ull * n; want += 2) {
			while (atomic_load_explicit(&l->ping, memory_order_acquire) != want)
				__builtin_ia32_pause();
			atomic_store_explicit(&l->ping, want + 1, memory_order_release);
		}
		_exit(0);
	}
	pin(cpu_a);
	for (uint64_t i = 0; i < n; i++) {
		uint64_t t0 = now_ns();

		atomic_store_explicit(&l->ping, 2 * i + 1, memory_order_release);
		while (atomic_load_explicit(&l->ping, memory_order_acquire) != 2 * i + 2)
			__builtin_ia32_pause();
		t[i] = now_ns() - t0;
	}
	if (waitpid(child, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "ringlat: the bouncing child failed\n");
		return 1;
	}
	report("cache-line-pingpong", t, n, clock_cost());
	return 0;
}

static int run_cmd(unsigned n, int cpu, const char *addr, int port)
{
	struct sockaddr_storage ss;
	socklen_t len;
	uint64_t *t = calloc(n, sizeof(*t));
	int fd;

	memset(&ss, 0, sizeof(ss));
	if (strchr(addr, ':')) {
		struct sockaddr_in6 *s6 = (void *)&ss;

		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, addr, &s6->sin6_addr) != 1)
			die("bad address");
		len = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (void *)&ss;

		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		if (inet_pton(AF_INET, addr, &s4->sin_addr) != 1)
			die("bad address");
		len = sizeof(*s4);
	}
	if (!t)
		die("calloc");
	pin(cpu);
	fd = socket(ss.ss_family, SOCK_STREAM, 0);
	if (fd < 0)
		die("socket");
	if (bind(fd, (struct sockaddr *)&ss, len) < 0)
		die("bind");
	// Warm up: the first calls fault the arena's pages in.
	for (unsigned i = 0; i < 1000; i++) {
		struct sockaddr_storage got;
		socklen_t gl = sizeof(got);

		if (getsockname(fd, (struct sockaddr *)&got, &gl) < 0)
			die("getsockname");
	}
	for (unsigned i = 0; i < n; i++) {
		struct sockaddr_storage got;
		socklen_t gl = sizeof(got);
		uint64_t t0 = now_ns();

		if (getsockname(fd, (struct sockaddr *)&got, &gl) < 0)
			die("getsockname");
		t[i] = now_ns() - t0;
	}
	close(fd);
	report("shim-daemon-command", t, n, clock_cost());
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: ringlat line [-n ITERS] [-c CPU_A,CPU_B]\n"
			"       ringlat cmd  [-n ITERS] [-c CPU] ADDR PORT   (under nuse run)\n");
	exit(2);
}

int main(int argc, char **argv)
{
	unsigned n = 100000;
	int cpu_a = 0, cpu_b = 1, pinned = 0, opt;
	const char *mode;

	if (argc < 2)
		usage();
	mode = argv[1];
	optind = 2;
	while ((opt = getopt(argc, argv, "n:c:h")) != -1) {
		switch (opt) {
		case 'n':
			n = (unsigned)strtoul(optarg, NULL, 10);
			if (n == 0 || n > 10000000)
				usage();
			break;
		case 'c':
			if (sscanf(optarg, "%d,%d", &cpu_a, &cpu_b) < 1)
				usage();
			pinned = 1;
			break;
		default:
			usage();
		}
	}
	if (!strcmp(mode, "header")) {
		printf(" %-22s %-11s %-11s %-11s %-11s %-11s %-11s %s\n", "what", "#iterations", "t_min[ns]",
		       "t_typical", "t_avg[ns]", "99%", "t_max[ns]", "clock[ns]");
		return 0;
	}
	if (!strcmp(mode, "line"))
		return run_line(n, cpu_a, cpu_b);
	if (!strcmp(mode, "cmd")) {
		if (optind + 2 != argc)
			usage();
		return run_cmd(n, pinned ? cpu_a : -1, argv[optind], atoi(argv[optind + 1]));
	}
	usage();
	return 2;
}

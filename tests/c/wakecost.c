/* SPDX-License-Identifier: Apache-2.0 */
/*
 * wakecost - what a wake-up costs the thread that gives it, on this
 * machine: the two ways the daemon wakes a program (FUTEX_WAKE on a
 * command slot, a one-byte send on a socket's pair, which a poll()er
 * sleeps on), each timed in the waker's call when a thread sleeps on the
 * other end (300 us after it went to sleep: its CPU is idle by then) and
 * when nobody does, and a bare system call for scale.  Where idle vCPUs
 * halt at once (a guest without halt polling), the wake-up is an
 * inter-processor interrupt, paid by the waker: the figure NUSE's daemon
 * pays per sleeping program it wakes.
 *
 *   wakecost [-n COUNT]
 *
 * Prints one line per case: the median and 90th percentile in us.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static _Atomic unsigned g_word;
static atomic_int g_asleep, g_stop;
static int g_sv[2];

static double now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static long futex(_Atomic unsigned *w, int op, unsigned v)
{
	return syscall(SYS_futex, w, op, v, NULL, NULL, 0);
}

static void *futex_sleeper(void *arg)
{
	(void)arg;
	while (!atomic_load(&g_stop)) {
		atomic_store(&g_asleep, 1);
		while (atomic_load(&g_word) == 0 && !atomic_load(&g_stop))
			futex(&g_word, FUTEX_WAIT, 0);
		atomic_store(&g_word, 0);
	}
	return NULL;
}

static void *poll_sleeper(void *arg)
{
	char b;

	(void)arg;
	while (!atomic_load(&g_stop)) {
		struct pollfd p = {.fd = g_sv[1], .events = POLLIN};

		atomic_store(&g_asleep, 1);
		if (poll(&p, 1, -1) > 0)
			while (recv(g_sv[1], &b, 1, MSG_DONTWAIT) == 1)
				;
	}
	return NULL;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void report(const char *what, double *t, int n)
{
	qsort(t, (size_t)n, sizeof(*t), cmp);
	printf("%-40s median %6.2f us  p90 %6.2f us\n", what, t[n / 2] / 1e3, t[n * 9 / 10] / 1e3);
}

/* Times wake() n times against a sleeper thread (or none). */
static void timed(const char *what, int n, void *(*sleeper)(void *), void (*wake)(void), double *t)
{
	struct timespec gap = {0, 300000};
	pthread_t th;
	int i;

	atomic_store(&g_stop, 0);
	atomic_store(&g_asleep, 0);
	if (sleeper && pthread_create(&th, NULL, sleeper, NULL) != 0) {
		fprintf(stderr, "wakecost: pthread_create: %s\n", strerror(errno));
		exit(2);
	}
	for (i = 0; i < n; i++) {
		double t0;

		if (sleeper) {
			while (!atomic_load(&g_asleep))
				;
			nanosleep(&gap, NULL);
			atomic_store(&g_asleep, 0);
		}
		t0 = now_ns();
		wake();
		t[i] = now_ns() - t0;
		if (!sleeper) {
			char b;

			atomic_store(&g_word, 0);
			while (recv(g_sv[1], &b, 1, MSG_DONTWAIT) == 1)
				;
		}
	}
	if (sleeper) {
		atomic_store(&g_stop, 1);
		wake();
		pthread_join(th, NULL);
	}
	report(what, t, n);
}

static void wake_futex(void)
{
	atomic_store(&g_word, 1);
	futex(&g_word, FUTEX_WAKE, 1);
}

static void wake_byte(void)
{
	char b = 1;

	if (send(g_sv[0], &b, 1, MSG_DONTWAIT | MSG_NOSIGNAL) != 1 && errno != EAGAIN) {
		fprintf(stderr, "wakecost: send: %s\n", strerror(errno));
		exit(2);
	}
}

static void bare(void)
{
	syscall(SYS_getppid);
}

int main(int argc, char **argv)
{
	int n = 2000, o;
	double *t;

	while ((o = getopt(argc, argv, "n:")) != -1) {
		if (o != 'n' || (n = atoi(optarg)) < 10 || n > 1000000) {
			fprintf(stderr, "usage: wakecost [-n COUNT (10 to 1000000)]\n");
			return 2;
		}
	}
	t = calloc((size_t)n, sizeof(*t));
	if (!t || socketpair(AF_UNIX, SOCK_STREAM, 0, g_sv) < 0) {
		fprintf(stderr, "wakecost: %s\n", strerror(errno));
		return 2;
	}
	timed("FUTEX_WAKE of a sleeping thread", n, futex_sleeper, wake_futex, t);
	timed("FUTEX_WAKE, nobody asleep", n, NULL, wake_futex, t);
	timed("1-byte AF_UNIX send to a poll()er", n, poll_sleeper, wake_byte, t);
	timed("1-byte AF_UNIX send, nobody asleep", n, NULL, wake_byte, t);
	timed("a bare system call (getppid)", n, NULL, bare, t);
	free(t);
	return 0;
}

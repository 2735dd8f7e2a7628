/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nuse.h - the base every C file of libnuse.so includes: the real libc
 * functions (R, REAL), the settings read at load, logging (say, debug) and
 * the small helpers of the per-call path (spinning, clocks, futex, errno).
 * Implemented by base.c.  It may call nothing else of the shim.
 *
 * Each part of the shim has its own header (fdtab.h, session.h, cmd.h,
 * sockstate.h, data.h, xfer.h, decide.h, control.h, procs.h, signals.h);
 * README.md shows how they depend on each other.  Everything here is
 * hidden from the program: only the interposers (EXPORT) are visible
 * outside the library.
 */
#ifndef NUSE_SHIM_H
#define NUSE_SHIM_H

#define _GNU_SOURCE
#include <errno.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "abi/nuse_abi.h"

#pragma GCC visibility push(hidden)

#define EXPORT __attribute__((visibility("default")))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* Words of the shared arena, accessed atomically. */
#define A32(p) ((_Atomic uint32_t *)(p))
#define A64(p) ((_Atomic uint64_t *)(p))

struct sigaction;

/* The real libc functions, resolved once with dlsym(RTLD_NEXT). */
struct nuse_real {
	int (*socket)(int, int, int);
	int (*bind)(int, const struct sockaddr *, socklen_t);
	int (*listen)(int, int);
	int (*accept)(int, struct sockaddr *, socklen_t *);
	int (*accept4)(int, struct sockaddr *, socklen_t *, int);
	int (*connect)(int, const struct sockaddr *, socklen_t);
	ssize_t (*send)(int, const void *, size_t, int);
	ssize_t (*sendto)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
	ssize_t (*sendmsg)(int, const struct msghdr *, int);
	ssize_t (*recv)(int, void *, size_t, int);
	ssize_t (*recvfrom)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
	ssize_t (*recvmsg)(int, struct msghdr *, int);
	int (*sendmmsg)(int, struct mmsghdr *, unsigned int, int);
	int (*recvmmsg)(int, struct mmsghdr *, unsigned int, int, struct timespec *);
	ssize_t (*read)(int, void *, size_t);
	ssize_t (*write)(int, const void *, size_t);
	ssize_t (*readv)(int, const struct iovec *, int);
	ssize_t (*writev)(int, const struct iovec *, int);
	int (*close)(int);
	int (*shutdown)(int, int);
	int (*getsockname)(int, struct sockaddr *, socklen_t *);
	int (*getpeername)(int, struct sockaddr *, socklen_t *);
	int (*setsockopt)(int, int, int, const void *, socklen_t);
	int (*getsockopt)(int, int, int, void *, socklen_t *);
	int (*fcntl)(int, int, ...);
	int (*fcntl64)(int, int, ...);
	int (*ioctl)(int, unsigned long, ...);
	int (*dup)(int);
	int (*dup2)(int, int);
	int (*dup3)(int, int, int);
	ssize_t (*read_chk)(int, void *, size_t, size_t);
	ssize_t (*recv_chk)(int, void *, size_t, size_t, int);
	ssize_t (*recvfrom_chk)(int, void *, size_t, size_t, int, struct sockaddr *, socklen_t *);
	ssize_t (*sendfile)(int, int, off_t *, size_t);
	ssize_t (*sendfile64)(int, int, off_t *, size_t);
	ssize_t (*splice)(int, loff_t *, int, loff_t *, size_t, unsigned int);
	int (*vdprintf)(int, const char *, va_list);
	int (*vdprintf_chk)(int, int, const char *, va_list);
	int (*sigaction)(int, const struct sigaction *, struct sigaction *);
	int (*close_range)(unsigned, unsigned, int);
	int (*epoll_ctl)(int, int, int, struct epoll_event *);
	int (*epoll_wait)(int, struct epoll_event *, int, int);
	int (*epoll_pwait)(int, struct epoll_event *, int, int, const sigset_t *);
	int (*epoll_pwait2)(int, struct epoll_event *, int, const struct timespec *, const sigset_t *);
	int (*poll)(struct pollfd *, nfds_t, int);
	int (*ppoll)(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *);
	int (*select)(int, fd_set *, fd_set *, fd_set *, struct timeval *);
	int (*pselect)(int, fd_set *, fd_set *, fd_set *, const struct timespec *, const sigset_t *);
	int (*execve)(const char *, char *const[], char *const[]);
	int (*execvpe)(const char *, char *const[], char *const[]);
	int (*fexecve)(int, char *const[], char *const[]);
};

extern struct nuse_real R;

/* Fills R (the constructor does; an interposer called before it, too). */
void resolve(void);

#define REAL(f)                          \
	do {                             \
		if (unlikely(!R.f))      \
			resolve();       \
	} while (0)

/* The kernel's poll(2) for the shim's own waits (poll() itself is the
 * program's, interposed by ix_wait.c). */
static inline int rpoll(struct pollfd *p, nfds_t n, int ms)
{
	REAL(poll);
	return R.poll(p, n, ms);
}

/* Settings from the environment, read once at load. */
extern int g_debug;                   /* NUSE_DEBUG */
extern char g_dev[IF_NAMESIZE + 1];   /* NUSE_DEV: the device SO_BINDTODEVICE names */
extern const char *g_sock_path;       /* NUSE_SOCK: the daemon's control socket */

/* One line to stderr, written with the real write() so it never recurses. */
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define debug(...)                        \
	do {                              \
		if (unlikely(g_debug))    \
			say(__VA_ARGS__); \
	} while (0)

/* "a.b.c.d:port" or "[v6]:port" for the debug lines. */
const char *fmt_addr(const struct sockaddr *sa, socklen_t len, char *buf, size_t n);

/* This thread is one of the shim's own runtime (runtime.c), not the
 * program's. */
extern __thread int g_shim_thread __attribute__((tls_model("initial-exec")));

/* A zeroed table of bytes indexed by fd number, for the process's life:
 * reserved, paged in as touched, never with huge pages.  NULL if the
 * memory cannot be had.  what names it in the debug line. */
void *table_map(size_t bytes, const char *what);

/* Calls f on every fd an SCM_RIGHTS message of m carries. */
void each_rights_fd(const struct msghdr *m, void (*f)(int fd));

/* The kernel raises SIGPIPE on the sending thread; so do we. */
void raise_sigpipe(void);

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

/*
 * Called every 64 spins: the thread we wait for (the peer the daemon woke,
 * or the daemon itself) may be runnable on this very CPU, and a spin that
 * keeps the CPU only delays it (on 2 vCPUs it is, half the time).
 */
static inline void spin_yield(void)
{
	sched_yield();
}

static inline uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline int futex(uint32_t *uaddr, int op, uint32_t val, const struct timespec *ts)
{
	return (int)syscall(SYS_futex, uaddr, op, val, ts, NULL, 0);
}

static inline ssize_t fail(int e)
{
	errno = e;
	return -1;
}

/* A -errno result to the libc convention: -1 with errno set. */
static inline int ret_err(int r)
{
	if (r < 0) {
		errno = -r;
		return -1;
	}
	return r;
}

#pragma GCC visibility pop

#endif /* NUSE_SHIM_H */

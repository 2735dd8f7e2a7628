/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fdtab.h - the shim's sockets (struct nsock) and the fd table that maps a
 * program's fd numbers to them.  Implemented by fdtab.c; it calls only the
 * base (nuse.h).  fd_get()/fd_nuse() run on every interposed call, for
 * every fd, so they stay inline here: one bounds check and one load.
 *
 * An entry exists only for TCP sockets that are undecided (the rules have
 * not spoken yet) or NUSE's; a socket the kernel keeps is dropped from the
 * table and never looked at again.  Several fds (dup) may point at one
 * nsock; refs counts them.  g_tablock guards the table's writers.
 */
#ifndef NUSE_FDTAB_H
#define NUSE_FDTAB_H

#include "nuse.h"

#pragma GCC visibility push(hidden)

enum { K_UNDECIDED = 1, K_NUSE = 2 };
/* How an undecided socket is bound: not, to a wildcard address and the
 * port the kernel picked (the decision still open), or to an address the
 * rules gave to the kernel. */
enum { B_NONE = 0, B_EPHEMERAL = 1, B_KERNEL = 2 };

#define MAX_OPTS 16
#define MAX_EPS 4
#define MAX_KEPT 8

struct optrec {
	int level, name;
	socklen_t len;
	uint8_t val[NUSE_OPT_LEN];
};

struct nsock {
	/* Kept when a freed nsock is reused (nsock_new clears from `kind` on):
	 * a thread that raced a close() may still touch these two. */
	atomic_int busy;      /* threads in a blocking call on it (sock_hold) */
	atomic_int orphan_fd; /* closed by the program while busy: our copy of its fd, else -1 */
	/* Bumped each time the nsock is reused: a reference kept elsewhere
	 * (lazy.c's epoll members) tells its socket from a later one. */
	unsigned incarnation;

	int kind;
	int family;
	int nonblock;
	atomic_int refs; /* fds in the table that point here */
	pthread_mutex_t lock; /* control calls: decision, connect, ... */
	pthread_mutex_t rx_lock, tx_lock; /* one reader, one writer of a ring */

	/* undecided: what to replay in NUSE (decide.c) */
	int bound;
	struct sockaddr_storage bind_addr;
	socklen_t bind_len;
	int bindtodev;
	int nopts;
	struct optrec opts[MAX_OPTS];
	/* epoll sets the program put it in: the kernel drops those
	 * registrations when the fd is replaced, so they are made again */
	int neps;
	struct epreg {
		int epfd, fd; /* registered as fd (it may be a dup) in epfd */
		struct epoll_event ev;
	} eps[MAX_EPS];

	/* NUSE: options the daemon's engine does not carry, kept so that
	 * getsockopt gives back what was set (control.c) */
	int nkept;
	struct optrec kept[MAX_KEPT];

	/* NUSE: the arena slot (sockstate.c) and the stream path (stream.c).
	 * The rings are the slot's, or a shm connection's direct region
	 * (direct.c) once dir_ready is set. */
	uint32_t slot, gen;
	struct nuse_sock *sh;
	struct nuse_ring *rx, *tx;
	uint8_t *rx_data, *tx_data;
	uint64_t ring_size;
	atomic_int dir_ready;     /* rx/tx point into dir (set last, release) */
	struct nuse_direct *dir;  /* the mapped region, or NULL */
	size_t dir_len;
	int dside;                /* our side: we write ring[dside] */
	int wake_fd;              /* the peer's waker (wake.h), or -1; valid once dir is set */
	int wake_tried;           /* asked for it (or may not): the daemon wakes the peer */
	atomic_int et;            /* registered with EPOLLET somewhere (published as dir->et) */
	/* lazy readiness (lazy.h, under its lock): made loud for good, and
	 * the epoll sets of ours it is a member of */
	atomic_int lz_loud;
	int lz_n;
	int lz_eps[4];
	int shut_rd, shut_wr;
	int connecting;   /* a connect was started and not yet reported */
	int conn_aborted; /* a failed connect was reported by SO_ERROR only */
	int reset_told;   /* a reset's error was reported: reads now say EOF */
	/* What our own commands established: the daemon publishes state in the
	 * arena after it answers, so a call right after listen()/connect() may
	 * not see it there yet. */
	int listening, established;
	int dead;         /* the daemon's end is gone */
	uint64_t ino;     /* the app end's inode: finds it among a vfork child's fds */
	uint32_t sig_owed; /* readiness bytes counted but not read yet (sockstate.c) */
	int quiet;        /* dead listener: its fd number names a never-ready socket */
	int unpaired;     /* its fds name a never-ready socket until it connects anew */
	int sndbuf_small; /* app end's SO_SNDBUF shrunk for filling */
	/* the last SETSOCKOPT of each keep-alive option posted without
	 * waiting (options.c): the next of the same option waits for it */
	struct nuse_cmd *ka_posted[4];
	int64_t rcvtimeo_ms, sndtimeo_ms; /* 0: forever */
	uint32_t rcvlowat; /* SO_RCVLOWAT (0: 1), also the daemon's for poll */
	unsigned mark; /* counted in the current fork/exec sweep */
	unsigned rx_idle; /* non-blocking receives in a row that found nothing (rx_lock) */
	int exec_dropped; /* its process count was lowered for an exec */
	struct nsock *next_free;
};

extern _Atomic(struct nsock *) *g_tab;
extern int g_tabmax; /* set last at load: until then nothing is tracked */
extern int g_tabhi; /* 1 + the highest fd ever tracked: bounds table scans */
extern pid_t g_mypid; /* set at load and in fork children, not by vfork */
extern pthread_mutex_t g_tablock;

/*
 * A vfork child shares our memory but has its own fd table and runs no
 * atfork handler: what it does to fds (dup2 before exec, close) must not
 * touch the table, which is the parent's.
 */
static inline int in_vfork_child(void)
{
	return getpid() != g_mypid;
}

static inline struct nsock *fd_get(int fd)
{
	if ((unsigned)fd < (unsigned)g_tabmax)
		return atomic_load_explicit(&g_tab[fd], memory_order_acquire);
	return NULL;
}

/*
 * The fd a call on s polls and reads its readiness byte from: the program's
 * fd, or, once the program closed it while a thread was blocked on s, the
 * shim's own copy (the blocked call goes on, as it would in Linux).
 */
static inline int sock_fd(struct nsock *s, int fd)
{
	int o = atomic_load_explicit(&s->orphan_fd, memory_order_acquire);

	return o >= 0 ? o : fd;
}

static inline struct nsock *fd_nuse(int fd)
{
	struct nsock *s = fd_get(fd);

	return s && s->kind == K_NUSE ? s : NULL;
}

/* A new undecided socket, or NULL without memory. */
struct nsock *nsock_new(int family);
/* Back to the free list (g_tablock held); never unmapped. */
void nsock_free_locked(struct nsock *s);
/* Points fd at s (one more reference); returns the old entry, if any. */
struct nsock *tab_set_locked(int fd, struct nsock *s);
/* Points fd at s and frees the entry it replaces if that was its last fd. */
void tab_put_locked(int fd, struct nsock *s);
/* Calls f once for every NUSE socket this process holds (g_tablock held). */
void each_nuse_locked(void (*f)(struct nsock *));
/* The socket stays in the kernel: forget it, on every fd that points at it. */
void to_kernel(struct nsock *s, int fd);
/* A new fd (from dup*) now names the same socket as old. */
void dup_track(int old, int nfd);

#pragma GCC visibility pop

#endif /* NUSE_FDTAB_H */

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * session.h - the process's session with the daemon (PROTOCOL.md "Finding
 * the daemon", "Handshake", "Socket birth"): the control socket, the
 * mapped arena and the state shared with forked children.  Implemented by
 * session.c; it calls only the base.  The session opens lazily, at the
 * first socket the rules give to NUSE.
 */
#ifndef NUSE_SESSION_H
#define NUSE_SESSION_H

#include "nuse.h"

#pragma GCC visibility push(hidden)

enum { SESS_NONE = 0, SESS_UP = 1, SESS_FAILED = 2 };

/* The process's session with the daemon (one per process, shared by the
 * children it forks). */
struct nuse_session {
	int state;
	atomic_int dead; /* the daemon went away after the handshake */
	int ctl;
	pid_t pid;
	uint32_t seq;
	uint8_t *base;
	uint64_t size;
	struct nuse_arena_hdr *hdr;
	struct nuse_cmd *cmds;
	uint32_t max_socks, ring_size;
	uint64_t socks_off, stride, spin_ns;
	pthread_mutex_t lock; /* one control request at a time */
};

extern struct nuse_session S;

/*
 * State shared with the children this process forks (MAP_SHARED anonymous
 * memory survives fork() as shared): they inherit the control socket and the
 * NUSE sockets, so control exchanges are serialized across processes, and a
 * socket is closed (CLOSE) only when the last process holding it lets go.
 */
struct nuse_shared {
	pthread_mutex_t ctl_lock; /* robust, process-shared */
	atomic_uint seq;
	atomic_uint procs[]; /* per slot: processes holding the socket */
};

extern struct nuse_shared *g_sh;

/* 1 if the session is up, 0 if NUSE is unavailable (sockets use the kernel). */
int session_get(void);

/* Is the control socket still connected?  POLLHUP or EOF means no. */
int ctl_alive(void);

/*
 * NUSE_CTL_SOCKET or NUSE_CTL_ACCEPT with the daemon's socketpair end.
 * Returns the reply's result; -ECONNRESET when the daemon is gone.
 */
int ctl_request(uint16_t type, int family, uint32_t sock, uint32_t gen, int dfd, struct nuse_ctl_reply *rep);

/* NUSE_CTL_SOCKET on the named engine (NULL or "": the daemon's default;
 * at most NUSE_ENGINE_LEN-1 bytes).  -ENOPROTOOPT: the daemon does not run
 * that engine. */
int ctl_request_engine(uint16_t type, int family, uint32_t sock, uint32_t gen, const char *engine, int dfd,
		       struct nuse_ctl_reply *rep);

/* A request (sock, gen) whose reply carries an fd (NUSE_CTL_DIRECT): *fdout
 * is that fd (the caller's to close), or -1. */
int ctl_request_fd(uint16_t type, uint32_t sock, uint32_t gen, int *fdout, struct nuse_ctl_reply *rep);

/* NUSE_CTL_SPARES with n (1..NUSE_SPARES_MAX) daemon ends: the result is
 * how many the daemon kept (the first ones; their ids in rep->addr). */
int ctl_request_spares(const int *fds, int n, struct nuse_ctl_reply *rep);

#pragma GCC visibility pop

#endif /* NUSE_SESSION_H */

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lazy.h - lazy readiness (PROTOCOL.md "Lazy readiness"): the daemon
 * leaves out the readiness byte of a socket's data while no thread of the
 * program sleeps on it, and the program's waits look at the rings
 * themselves.
 *
 * A socket is lazy (nuse_sock.lazy) while every wait of this program for
 * its data is one the shim sees: it is registered (level- or
 * edge-triggered, not EPOLLONESHOT or EPOLLEXCLUSIVE) only in epoll sets
 * this process created since its last fork (their members are kept here,
 * and epoll_wait scans their rings before it sleeps: an edge-triggered
 * member when its head moved since the last report), it
 * has one fd, and no other process can hold it.  A thread about to sleep
 * on such a set, or in the shim's own blocking receive, adds itself to the
 * watched count of each lazy socket it waits for, looks at their rings
 * again, and only then sleeps.  Whatever the shim cannot watch --
 * poll or select of a lazy socket, EPOLLONESHOT, a second epoll
 * set it does not know, dup, fork, exec, SCM_RIGHTS, O_ASYNC, an epoll set
 * nested in another -- makes the socket loud for good (lazy_demote), and
 * waits for the byte the daemon owed it.  Implemented by lazy.c; it calls
 * the fd table, the session and the command slots (attention).
 */
#ifndef NUSE_LAZY_H
#define NUSE_LAZY_H

#include "fdtab.h"

#pragma GCC visibility push(hidden)

/* Members an epoll set scans at most (beyond them, sockets stay loud): the
 * scan is a few loads per member per epoll_wait. */
#define LAZY_MAX_MEMBERS 64

/* epoll_create*() gave the program epfd: its set may hold lazy sockets. */
void lazy_epoll_created(int epfd);

/* After a successful epoll_ctl(epfd, op, fd, ev). */
void lazy_epoll_ctl(int epfd, int op, int fd, const struct epoll_event *ev);

/* The program closes fd (before the real close). */
void lazy_fd_closed(int fd);

/* close_range(first, last): the epoll sets in the range go. */
void lazy_range_closed(unsigned first, unsigned last);

/* fd is duplicated, passed to another process (SCM_RIGHTS), or made
 * O_ASYNC: a lazy socket under it becomes loud, an epoll set under it
 * stops taking lazy members and makes its own loud. */
void lazy_fd_escapes(int fd);

/* Before fork(), exec and posix_spawn: every lazy socket becomes loud and
 * every epoll set this process knows stops taking lazy members (a child
 * may wait on both). */
void lazy_all_loud(void);

/* s becomes loud for good; returns once the daemon wrote the byte it owed
 * (bounded). */
void lazy_demote(struct nsock *s);

/* In a fork child: the locks other threads held are made anew. */
void lazy_atfork_child(void);

/* Does lazy_fd_closed have anything to do for fd (a socket, or a set)? */
int lazy_known(int fd);

/* Is there an epoll set of ours under epfd (the interposers' fast test)? */
int lazy_own_set(int epfd);

/* Scans the lazy members of epfd's set for readable data: fills up to max
 * events, returns how many. */
int lazy_scan(int epfd, struct epoll_event *ev, int max);

/* The lazy sockets a thread asleep on a set watches. */
struct lazy_watch {
	int n;
	struct nuse_sock *sh[LAZY_MAX_MEMBERS];
	uint32_t gen[LAZY_MAX_MEMBERS];
};

/* A thread about to sleep on epfd's set: counted in the set (no member
 * becomes lazy meanwhile) and in the watched word of each lazy member
 * (the daemon writes their bytes); then it looks at their rings once more
 * and sleeps, and lazy_watch_end takes the counts back.  A thread of
 * another set, or of none, keeps its sockets lazy. */
void lazy_watch_begin(int epfd, struct lazy_watch *w);
void lazy_watch_end(int epfd, struct lazy_watch *w);

/* Does epfd's set have lazy members (worth a spin)? */
int lazy_has_lazy(int epfd);

/* Does epfd's set have edge-triggered members? */
int lazy_has_edges(int epfd);

/* The kernel reported ev[0..n) on epfd's set (the caller still watches
 * it): its edge-triggered members among them are told of what their
 * rings hold now, so the scan does not report that again, and an edge
 * for data the scan reported already is dropped.  Returns how many
 * events are left (compacted). */
int lazy_note_edges(int epfd, struct epoll_event *ev, int n);

/* The shim's own blocking receive on s: d = +1 before its last look at
 * the ring, -1 after the sleep. */
void lazy_watch_sock(struct nsock *s, int d);

#pragma GCC visibility pop

#endif /* NUSE_LAZY_H */

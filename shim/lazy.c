/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lazy.c - lazy readiness (lazy.h, PROTOCOL.md "Lazy readiness"): the
 * epoll sets this process created and their lazy members, the scan that
 * epoll_wait makes before it sleeps, the watched counts, and making
 * sockets loud again.
 *
 * Locks: g_lzlock guards the membership (sets' member lists and the
 * sockets' lz_* fields) and is taken after g_tablock when both are; each
 * set's lock guards its members for the scan, which takes only that.
 */
#include "nuse.h"

#include <sys/mman.h>

#include "cmd.h"
#include "lazy.h"
#include "session.h"
#include "sockstate.h"

struct member {
	int fd;          /* the fd number it was registered as */
	struct nsock *s; /* the socket under it then */
	unsigned inc;    /* ... and its incarnation (a reused nsock is another) */
	uint32_t events;
	uint64_t seen;   /* EPOLLET: the rx head the scan last reported */
	epoll_data_t data;
};

struct epset {
	pthread_mutex_t lock;
	int own;        /* created here since the last fork, never escaped */
	int n;
	/* Threads asleep on the set (lazy_watch_begin): they watch the lazy
	 * members they found, so no member becomes lazy meanwhile. */
	atomic_int asleep;
	unsigned rot;   /* where the next scan starts: every member gets its turn */
	struct member m[LAZY_MAX_MEMBERS];
};

static pthread_mutex_t g_lzlock = PTHREAD_MUTEX_INITIALIZER;
static int g_ephi; /* 1 + the highest epfd ever given a set */
/* Sets by epfd, g_tabmax entries, mapped at the first epoll_create. */
static _Atomic(struct epset *) *g_ep;

static struct epset *set_of(int epfd)
{
	_Atomic(struct epset *) *t = atomic_load_explicit(&g_ep, memory_order_acquire);

	if (!t || (unsigned)epfd >= (unsigned)g_tabmax)
		return NULL;
	return atomic_load_explicit(&t[epfd], memory_order_acquire);
}

int lazy_known(int fd)
{
	return fd_get(fd) != NULL || set_of(fd) != NULL;
}

int lazy_own_set(int epfd)
{
	struct epset *e = set_of(epfd);

	return e && e->own;
}

void lazy_epoll_created(int epfd)
{
	_Atomic(struct epset *) *t;
	struct epset *e;

	if (epfd < 0 || epfd >= g_tabmax || in_vfork_child())
		return;
	pthread_mutex_lock(&g_lzlock);
	t = atomic_load(&g_ep);
	if (!t) {
		void *p = table_map((size_t)g_tabmax * sizeof(*t), "epoll set table");

		if (!p) {
			pthread_mutex_unlock(&g_lzlock);
			return; /* no lazy sockets: every byte is written, as before */
		}
		t = p;
		atomic_store(&g_ep, t);
	}
	e = atomic_load(&t[epfd]);
	if (!e) {
		e = mmap(NULL, sizeof(*e), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (e == MAP_FAILED) {
			pthread_mutex_unlock(&g_lzlock);
			return;
		}
		pthread_mutex_init(&e->lock, NULL);
		atomic_store(&t[epfd], e);
	}
	if (epfd >= g_ephi)
		g_ephi = epfd + 1;
	/* a fresh epoll instance under the number: no members (close dropped
	 * any the last one had) */
	pthread_mutex_lock(&e->lock);
	e->n = 0;
	e->own = 1;
	pthread_mutex_unlock(&e->lock);
	pthread_mutex_unlock(&g_lzlock);
}

/* Removes member i of e (g_lzlock and e->lock held) and e from its
 * socket's list. */
static void drop_member(struct epset *e, int epfd, int i)
{
	struct nsock *s = e->m[i].s;
	int j;

	for (j = 0; s->incarnation == e->m[i].inc && j < s->lz_n; j++)
		if (s->lz_eps[j] == epfd) {
			s->lz_eps[j] = s->lz_eps[--s->lz_n];
			break;
		}
	e->m[i] = e->m[--e->n];
}

static int find_member(struct epset *e, int fd)
{
	int i;

	for (i = 0; i < e->n; i++)
		if (e->m[i].fd == fd)
			return i;
	return -1;
}

void lazy_demote(struct nsock *s)
{
	int i;

	/* Dekker with lazy_epoll_ctl (it stores lazy, then loads lz_loud) */
	atomic_store(&s->lz_loud, 1);
	if (!s->sh || !atomic_load(A32(&s->sh->lazy)))
		return;
	/* Dekker with the daemon (it stores lazy_owed, then loads lazy): it
	 * sees us loud and writes the byte, or we see what it owes. */
	atomic_store(A32(&s->sh->lazy), 0);
	if (!atomic_load(A32(&s->sh->lazy_owed)))
		return;
	attention(s);
	/* The byte must be there before the program's own poll looks: a
	 * zero-timeout poll would otherwise miss data that is there.  Once per
	 * socket; bounded, in case the daemon is gone. */
	for (i = 0; i < 2000 && atomic_load(A32(&s->sh->lazy_owed)) && !atomic_load(&S.dead); i++) {
		struct timespec ts = {0, 50000};

		if (i < 64)
			sched_yield();
		else
			nanosleep(&ts, NULL);
	}
}

/* All members of e become loud, and e takes no more (g_lzlock held). */
static void set_escapes(struct epset *e)
{
	int i;

	pthread_mutex_lock(&e->lock);
	e->own = 0;
	for (i = 0; i < e->n; i++)
		lazy_demote(e->m[i].s);
	pthread_mutex_unlock(&e->lock);
}

void lazy_epoll_ctl(int epfd, int op, int fd, const struct epoll_event *ev)
{
	struct nsock *s;
	struct epset *e, *inner;
	int i, mayb, added = 0;

	/* No vfork check (a getpid: redis-benchmark calls epoll_ctl five
	 * times a request): a vfork child's epoll_ctl changes the very epoll
	 * instance the parent's set stands for, so following it is right. */
	/* an epoll set of ours put in another: its waiters no longer scan */
	inner = set_of(fd);
	if (unlikely(inner != NULL) && op == EPOLL_CTL_ADD && inner->own) {
		pthread_mutex_lock(&g_lzlock);
		set_escapes(inner);
		pthread_mutex_unlock(&g_lzlock);
	}
	s = fd_get(fd);
	if (!s)
		return;
	e = set_of(epfd);
	pthread_mutex_lock(&g_lzlock);
	/* Gone from the set; or a listener, whose readiness is never lazy:
	 * no member (the scan would have nothing to say of it). */
	if (op == EPOLL_CTL_DEL || !ev || s->listening) {
		if (e) {
			pthread_mutex_lock(&e->lock);
			if ((i = find_member(e, fd)) >= 0)
				drop_member(e, epfd, i);
			pthread_mutex_unlock(&e->lock);
		}
		pthread_mutex_unlock(&g_lzlock);
		return;
	}
	/* A wait the scan cannot stand for: a one-shot, an exclusive waker,
	 * a set not ours or full, a socket in too many.  An edge-triggered
	 * registration it can (each arrival moves the head: an edge). */
	mayb = e && e->own && !(ev->events & (EPOLLONESHOT | EPOLLEXCLUSIVE)) && !atomic_load(&s->lz_loud);
	if (e) {
		pthread_mutex_lock(&e->lock);
		i = find_member(e, fd);
		if (i >= 0 && (e->m[i].s != s || e->m[i].inc != s->incarnation)) {
			drop_member(e, epfd, i); /* a stale entry under a reused number */
			i = -1;
		}
		if (i < 0 && mayb && e->n < LAZY_MAX_MEMBERS && s->lz_n < (int)(sizeof(s->lz_eps) / sizeof(s->lz_eps[0]))) {
			i = e->n;
			e->m[i].fd = fd;
			e->m[i].s = s;
			e->m[i].inc = s->incarnation;
			e->m[i].seen = ~0ull; /* registered: what is there is an edge */
			s->lz_eps[s->lz_n++] = epfd;
			e->n = i + 1;
			added = 1;
		}
		if (i >= 0 && !mayb) {
			drop_member(e, epfd, i);
			i = -1;
		}
		if (i >= 0) {
			/* EPOLL_CTL_MOD re-arms an edge, as Linux's does */
			if (op == EPOLL_CTL_MOD || !(e->m[i].events & EPOLLET))
				e->m[i].seen = ~0ull;
			e->m[i].events = ev->events;
			e->m[i].data = ev->data;
		} else
			mayb = 0;
		pthread_mutex_unlock(&e->lock);
	}
	if (!mayb) {
		pthread_mutex_unlock(&g_lzlock);
		lazy_demote(s);
		return;
	}
	/* Lazy once it has one fd and is ours alone (no other process holds
	 * it: procs) -- and no thread sleeps on any of its sets: those
	 * watched their lazy members only (lazy_watch_begin, under the set's
	 * lock, which we hold for all of them while we decide). */
	if (s->kind == K_NUSE && s->sh && atomic_load(&s->refs) == 1 &&
	    (!g_sh || atomic_load(&g_sh->procs[s->slot]) <= 1) &&
	    atomic_load(A32(&s->sh->lazy)) != NUSE_LAZY_ET &&
	    ((ev->events & EPOLLET) || atomic_load(A32(&s->sh->lazy)) == NUSE_LAZY_NONE)) {
		struct epset *held[sizeof(s->lz_eps) / sizeof(s->lz_eps[0])];
		int j, n = 0, asleep = 0;

		for (j = 0; j < s->lz_n; j++)
			if ((held[n] = set_of(s->lz_eps[j])) != NULL) {
				pthread_mutex_lock(&held[n]->lock);
				asleep |= atomic_load(&held[n]->asleep);
				n++;
			}
		if (!asleep)
			atomic_store(A32(&s->sh->lazy), (ev->events & EPOLLET) ? NUSE_LAZY_ET : NUSE_LAZY_LT);
		while (n > 0)
			pthread_mutex_unlock(&held[--n]->lock);
		/* Lazy for level-triggered waiters only, and one sleeps: the
		 * daemon would not give an edge-triggered one its edges. */
		if (asleep && (ev->events & EPOLLET) && atomic_load(A32(&s->sh->lazy)) == NUSE_LAZY_LT) {
			pthread_mutex_unlock(&g_lzlock);
			lazy_demote(s);
			return;
		}
		/* Dekker with lazy_demote (it stores lz_loud, then loads lazy) */
		if (!asleep && atomic_load(&s->lz_loud)) {
			pthread_mutex_unlock(&g_lzlock);
			lazy_demote(s);
			return;
		}
	} else if (added && s->sh && atomic_load(A32(&s->sh->lazy)) != NUSE_LAZY_NONE && atomic_load(&e->asleep)) {
		/* Lazy already (a member of another set), now new in a set a
		 * thread sleeps on: that thread counted itself in the watched
		 * words of the members it found, not in this one's, and the
		 * kernel reports only a byte.  (A thread that begins to sleep
		 * after the member went in, under the set's lock, counts it;
		 * a member it found, modified now, it counted.) */
		pthread_mutex_unlock(&g_lzlock);
		lazy_demote(s);
		return;
	}
	pthread_mutex_unlock(&g_lzlock);
}

/* Forgets s's memberships under fd (g_lzlock held). */
static void forget_locked(struct nsock *s, int fd)
{
	int j;

	for (j = s->lz_n - 1; j >= 0; j--) {
		int epfd = s->lz_eps[j], i;
		struct epset *e = set_of(epfd);

		if (!e)
			continue;
		pthread_mutex_lock(&e->lock);
		for (i = e->n - 1; i >= 0; i--)
			if (e->m[i].s == s && (fd < 0 || e->m[i].fd == fd)) {
				drop_member(e, epfd, i);
				break;
			}
		pthread_mutex_unlock(&e->lock);
	}
}

void lazy_fd_closed(int fd)
{
	struct nsock *s = fd_get(fd);
	struct epset *e;

	/* A vfork child's close leaves the parent's fds (and sets) as they
	 * are: asked (a getpid) only when there is something to forget. */
	if (s) {
		if (s->lz_n && !in_vfork_child()) {
			pthread_mutex_lock(&g_lzlock);
			forget_locked(s, fd);
			pthread_mutex_unlock(&g_lzlock);
		}
		return;
	}
	e = set_of(fd);
	if (!e || in_vfork_child())
		return;
	/* The epoll instance goes with its last fd (a dup would have made
	 * the set escape): its members are nobody's any more. */
	pthread_mutex_lock(&g_lzlock);
	pthread_mutex_lock(&e->lock);
	while (e->n > 0)
		drop_member(e, fd, e->n - 1);
	e->own = 0;
	pthread_mutex_unlock(&e->lock);
	pthread_mutex_unlock(&g_lzlock);
}

void lazy_atfork_child(void)
{
	_Atomic(struct epset *) *t = atomic_load(&g_ep);
	int i;

	pthread_mutex_init(&g_lzlock, NULL);
	for (i = 0; t && i < g_ephi; i++) {
		struct epset *e = atomic_load(&t[i]);

		if (e) {
			pthread_mutex_init(&e->lock, NULL);
			atomic_store(&e->asleep, 0); /* its sleeping threads stayed in the parent */
		}
	}
}

void lazy_range_closed(unsigned first, unsigned last)
{
	unsigned i;

	for (i = first; i < (unsigned)g_ephi && i <= last; i++)
		if (set_of((int)i))
			lazy_fd_closed((int)i);
}

void lazy_fd_escapes(int fd)
{
	struct nsock *s = fd_get(fd);
	struct epset *e;

	if (s) {
		if (!atomic_load(&s->lz_loud))
			lazy_demote(s);
		return;
	}
	e = set_of(fd);
	if (e && e->own) {
		pthread_mutex_lock(&g_lzlock);
		set_escapes(e);
		pthread_mutex_unlock(&g_lzlock);
	}
}

void lazy_all_loud(void)
{
	int i, hi = g_tabhi > g_ephi ? g_tabhi : g_ephi; /* sets may sit above every socket */

	for (i = 0; i < hi; i++) {
		struct nsock *s = fd_get(i);
		struct epset *e = set_of(i);

		if (s && !atomic_load(&s->lz_loud))
			lazy_demote(s);
		if (e && e->own) {
			pthread_mutex_lock(&e->lock);
			e->own = 0;
			pthread_mutex_unlock(&e->lock);
		}
	}
}

int lazy_scan(int epfd, struct epoll_event *ev, int max)
{
	struct epset *e = set_of(epfd);
	int i, k = 0, n;

	/* a dead daemon's sockets show it on their fds (hang-ups) */
	if (!e || !e->n || atomic_load(&S.dead))
		return 0;
	pthread_mutex_lock(&e->lock);
	n = e->n;
	for (i = 0; i < n && k < max; i++) {
		struct member *m = &e->m[(e->rot + (unsigned)i) % (unsigned)n];
		struct nsock *s = m->s;

		/* Only lazy sockets: the others' fds say it all (a listener,
		 * a dead or replaced socket).  A member the fd table no longer
		 * puts under its number is skipped (its close removes it). */
		if (!(m->events & EPOLLIN) || fd_get(m->fd) != s || s->incarnation != m->inc || s->kind != K_NUSE ||
		    !s->sh || !s->rx || s->dead || s->quiet || s->unpaired || s->listening ||
		    !atomic_load_explicit(A32(&s->sh->lazy), memory_order_relaxed))
			continue;
		if (readable(s)) {
			/* An edge-triggered member: only what came since the scan
			 * last reported it (the head moved). */
			if (m->events & EPOLLET) {
				uint64_t h = atomic_load_explicit(A64(&s->rx->head), memory_order_acquire);

				if (h == m->seen)
					continue;
				m->seen = h;
			}
			ev[k].events = EPOLLIN;
			ev[k].data = m->data;
			k++;
		}
	}
	e->rot++;
	pthread_mutex_unlock(&e->lock);
	return k;
}

void lazy_watch_begin(int epfd, struct lazy_watch *w)
{
	struct epset *e = set_of(epfd);
	int i;

	w->n = 0;
	if (!e)
		return;
	pthread_mutex_lock(&e->lock);
	atomic_fetch_add(&e->asleep, 1);
	for (i = 0; i < e->n; i++) {
		struct nsock *s = e->m[i].s;
		struct nuse_sock *sh = s->sh;

		if (s->incarnation != e->m[i].inc || s->kind != K_NUSE || !sh || !atomic_load(A32(&sh->lazy)))
			continue;
		/* seq_cst: then the caller looks at the ring (Dekker with the
		 * daemon, which stores the head, then loads watched) */
		atomic_fetch_add(A32(&sh->watched), 1);
		w->sh[w->n] = sh;
		w->gen[w->n] = s->gen;
		w->n++;
	}
	pthread_mutex_unlock(&e->lock);
}

static int is_lazy(const struct member *m)
{
	return m->s->incarnation == m->inc && m->s->sh &&
	       atomic_load_explicit(A32(&m->s->sh->lazy), memory_order_relaxed);
}

static int is_edge(const struct member *m)
{
	return !!(m->events & EPOLLET);
}

/* Has epfd's set a member for which want says yes? */
static int set_has(int epfd, int (*want)(const struct member *))
{
	struct epset *e = set_of(epfd);
	int i, yes = 0;

	if (!e || !e->n)
		return 0;
	pthread_mutex_lock(&e->lock);
	for (i = 0; i < e->n && !yes; i++)
		yes = want(&e->m[i]);
	pthread_mutex_unlock(&e->lock);
	return yes;
}

int lazy_has_lazy(int epfd)
{
	return set_has(epfd, is_lazy);
}

int lazy_has_edges(int epfd)
{
	return set_has(epfd, is_edge);
}

int lazy_note_edges(int epfd, struct epoll_event *ev, int n)
{
	struct epset *e = set_of(epfd);
	int i, j, out = 0;

	if (!e || n <= 0)
		return n;
	pthread_mutex_lock(&e->lock);
	for (j = 0; j < n; j++) {
		for (i = 0; (ev[j].events & EPOLLIN) && i < e->n; i++) {
			struct member *m = &e->m[i];
			uint64_t h;

			if (!(m->events & EPOLLET) || m->data.u64 != ev[j].data.u64 || m->s->incarnation != m->inc ||
			    m->s->kind != K_NUSE || !m->s->rx || !m->s->sh)
				continue;
			h = atomic_load_explicit(A64(&m->s->rx->head), memory_order_acquire);
			/* The byte of data the scan reported already (the daemon
			 * wrote it as we watched): no edge of its own, as Linux
			 * gives one per arrival.  EOF, a reset, an error are. */
			if (h == m->seen && !(st_load(m->s) & (NUSE_SS_RD_EOF | NUSE_SS_RESET | NUSE_SS_ERROR)))
				ev[j].events &= ~(uint32_t)EPOLLIN;
			else
				m->seen = h;
			break;
		}
		if (ev[j].events)
			ev[out++] = ev[j];
	}
	pthread_mutex_unlock(&e->lock);
	return out;
}

void lazy_watch_end(int epfd, struct lazy_watch *w)
{
	struct epset *e = set_of(epfd);
	int i;

	for (i = 0; i < w->n; i++)
		/* a slot reused meanwhile started again at 0 (the daemon's
		 * Reset): its count is not ours to take */
		if (atomic_load_explicit(A32(&w->sh[i]->gen), memory_order_relaxed) == w->gen[i])
			atomic_fetch_sub(A32(&w->sh[i]->watched), 1);
	if (e)
		atomic_fetch_sub(&e->asleep, 1);
}

void lazy_watch_sock(struct nsock *s, int d)
{
	if (s->sh)
		atomic_fetch_add(A32(&s->sh->watched), (uint32_t)d);
}

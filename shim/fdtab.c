/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fdtab.c - the fd table (fdtab.h): allocating and freeing the shim's
 * sockets and pointing fd numbers at them.  It calls only the base.
 */
#include "fdtab.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

_Atomic(struct nsock *) *g_tab;
int g_tabmax;
int g_tabhi;
pid_t g_mypid;
pthread_mutex_t g_tablock = PTHREAD_MUTEX_INITIALIZER;

static struct nsock *g_free;

struct nsock *nsock_new(int family)
{
	struct nsock *s;

	pthread_mutex_lock(&g_tablock);
	s = g_free;
	if (s)
		g_free = s->next_free;
	pthread_mutex_unlock(&g_tablock);
	if (!s) {
		s = malloc(sizeof(*s));
		if (!s)
			return NULL;
		atomic_init(&s->busy, 0);
		atomic_init(&s->orphan_fd, -1);
		s->incarnation = 0;
	}
	s->incarnation++;
	memset(&s->kind, 0, sizeof(*s) - offsetof(struct nsock, kind));
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->rx_lock, NULL);
	pthread_mutex_init(&s->tx_lock, NULL);
	s->kind = K_UNDECIDED;
	s->family = family;
	return s;
}

/*
 * Freed sockets go to a free list and are never unmapped: a thread racing a
 * close() on another thread reads stale but valid memory, and the slot
 * generation keeps it from touching a newer socket's slot.
 */
void nsock_free_locked(struct nsock *s)
{
	s->kind = 0;
	atomic_store(&s->orphan_fd, -1);
	s->next_free = g_free;
	g_free = s;
}

struct nsock *tab_set_locked(int fd, struct nsock *s)
{
	struct nsock *old;

	if ((unsigned)fd >= (unsigned)g_tabmax)
		return NULL;
	old = atomic_load_explicit(&g_tab[fd], memory_order_relaxed);
	if (s)
		atomic_fetch_add(&s->refs, 1);
	if (fd >= g_tabhi)
		g_tabhi = fd + 1;
	atomic_store_explicit(&g_tab[fd], s, memory_order_release);
	return old;
}

void tab_put_locked(int fd, struct nsock *s)
{
	struct nsock *old = tab_set_locked(fd, s);

	if (old && atomic_fetch_sub(&old->refs, 1) == 1) /* a stale entry for a reused fd */
		nsock_free_locked(old);
}

static unsigned g_mark;

void each_nuse_locked(void (*f)(struct nsock *))
{
	int i;

	g_mark++;
	for (i = 0; i < g_tabhi; i++) {
		struct nsock *s = atomic_load_explicit(&g_tab[i], memory_order_relaxed);

		if (s && s->kind == K_NUSE && s->mark != g_mark) {
			s->mark = g_mark;
			f(s);
		}
	}
}

void to_kernel(struct nsock *s, int fd)
{
	int i;

	pthread_mutex_lock(&g_tablock);
	if (atomic_load(&s->refs) > 1) {
		for (i = 0; i < g_tabhi; i++)
			if (atomic_load_explicit(&g_tab[i], memory_order_relaxed) == s)
				atomic_store(&g_tab[i], NULL);
	} else if (fd_get(fd) == s) {
		atomic_store(&g_tab[fd], NULL);
	}
	atomic_store(&s->refs, 0);
	nsock_free_locked(s);
	pthread_mutex_unlock(&g_tablock);
}

void dup_track(int old, int nfd)
{
	struct nsock *s;

	if (in_vfork_child())
		return;
	pthread_mutex_lock(&g_tablock);
	s = fd_get(old);
	if (s && nfd >= 0 && nfd != old) {
		tab_put_locked(nfd, s);
	}
	pthread_mutex_unlock(&g_tablock);
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * direct.c - a shm connection's direct region (direct.h): asked of the
 * daemon once per socket and process (NUSE_CTL_DIRECT), checked, mapped,
 * and let go of.  It calls the session (ctl_request_fd) and the base.
 *
 * The region is shared with one other process only, the peer; nothing it
 * writes there is trusted beyond this connection: the ring code checks
 * every counter (nuse_ring_sane) and bounds every copy by ring_size, which
 * we read once, here, and keep.
 */
#include "direct.h"

#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "session.h"
#include "wake.h"

static pthread_mutex_t g_dirlock = PTHREAD_MUTEX_INITIALIZER;

/*
 * Regions let go of are not unmapped but replaced by zero pages (reserving
 * no memory) and kept for the next region of the same size: a thread that
 * races a close() (another thread's non-blocking call, which still has the
 * socket's pointers) reads zeros, never a hole, and the peer's memory is
 * no longer ours.  Beyond SPARES at once they are unmapped.
 */
#define SPARES 1024
static struct spare {
	void *p;
	size_t len;
} g_spare[SPARES];

static void *spare_take(size_t len)
{
	int i;

	for (i = 0; i < SPARES; i++) {
		if (g_spare[i].p && g_spare[i].len == len) {
			void *p = g_spare[i].p;

			g_spare[i].p = NULL;
			return p;
		}
	}
	return NULL;
}

/*
 * The ring size comes from the file's size, which is sealed, never from
 * the header after this check: the peer maps the header too and could
 * change it between our check and our use.
 */
static uint64_t check(const struct nuse_direct *d, size_t len)
{
	uint64_t rs = (len - NUSE_DIRECT_HDR_SIZE) / 2;

	if (d->magic != NUSE_DIRECT_MAGIC || d->version != NUSE_ABI_VERSION || rs < 4096 || (rs & (rs - 1)) ||
	    (uint64_t)NUSE_DIRECT_HDR_SIZE + 2 * rs != len)
		return 0;
	return rs;
}

int direct_map_slow(struct nsock *s)
{
	struct nuse_ctl_reply rep;
	struct nuse_direct *d;
	struct stat st;
	void *want;
	size_t len;
	uint64_t rs;
	int fd = -1, r;

	pthread_mutex_lock(&g_dirlock);
	if (atomic_load(&s->dir_ready)) {
		pthread_mutex_unlock(&g_dirlock);
		return 0;
	}
	r = ctl_request_fd(NUSE_CTL_DIRECT, s->slot, s->gen, &fd, &rep);
	if (r >= 0 && (fd < 0 || r > 1))
		r = -EIO;
	if (r < 0)
		goto fail;
	if (fstat(fd, &st) < 0 || st.st_size < NUSE_DIRECT_HDR_SIZE || st.st_size > (1ll << 31)) {
		r = -EIO;
		goto fail;
	}
	len = (size_t)st.st_size;
	want = spare_take(len);
	d = mmap(want, len, PROT_READ | PROT_WRITE, MAP_SHARED | (want ? MAP_FIXED : 0), fd, 0);
	if (d == MAP_FAILED) {
		r = -errno;
		if (want)
			munmap(want, len);
		goto fail;
	}
	(void)madvise(d, len, MADV_NOHUGEPAGE); /* as the arena's (session.c) */
	R.close(fd);
	fd = -1;
	rs = check(d, len);
	if (!rs) {
		munmap(d, len);
		r = -EIO;
		goto fail;
	}
	s->wake_fd = -1;
	s->wake_tried = 0;
	s->dir = d;
	s->dir_len = len;
	s->dside = r;
	s->ring_size = rs;
	s->tx = &d->ring[r];
	s->rx = &d->ring[r ^ 1];
	s->tx_data = (uint8_t *)d + NUSE_DIRECT_HDR_SIZE + (uint64_t)r * rs;
	s->rx_data = (uint8_t *)d + NUSE_DIRECT_HDR_SIZE + (uint64_t)(r ^ 1) * rs;
	atomic_store_explicit(&s->dir_ready, 1, memory_order_release);
	/* Dekker with wake_edge_triggered (et, then dir_ready): one of us
	 * publishes et[side]. */
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_load(&s->et))
		atomic_store(A32(&d->et[r]), 1);
	pthread_mutex_unlock(&g_dirlock);
	debug("nuse: slot %u: direct region mapped (side %d, rings %llu bytes)", s->slot, r, (unsigned long long)rs);
	return 0;
fail:
	if (fd >= 0)
		R.close(fd);
	s->dead = 1;
	pthread_mutex_unlock(&g_dirlock);
	debug("nuse: slot %u: no direct region (%s); the socket fails", s->slot, strerror(-r));
	return r;
}

void direct_release(struct nsock *s)
{
	void *p = s->dir;
	size_t len = s->dir_len;
	int i;

	if (!p || !len)
		return;
	wake_release(s);
	pthread_mutex_lock(&g_dirlock);
	/* s->dir keeps pointing at the zero pages: see SPARES. */
	s->dir_len = 0;
	if (mmap(p, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) ==
	    MAP_FAILED) {
		munmap(p, len);
		p = NULL;
	}
	for (i = 0; p && i < SPARES; i++) {
		if (!g_spare[i].p) {
			g_spare[i].p = p;
			g_spare[i].len = len;
			p = NULL;
		}
	}
	if (p)
		munmap(p, len);
	pthread_mutex_unlock(&g_dirlock);
}

void direct_atfork_child(void)
{
	pthread_mutex_init(&g_dirlock, NULL);
}

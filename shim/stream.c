/* SPDX-License-Identifier: Apache-2.0 */
/*
 * stream.c - the stream data path (stream.h): send and recv of a TCP
 * socket through its tx and rx byte rings in the arena (PROTOCOL.md
 * "Data"), blocking and non-blocking, with the readiness rules of
 * "Readiness".  It calls the socket's shared state (sockstate.h: waits,
 * fill, unsignal, SO_ERROR), the command slots (attention), the signal
 * handlers' record (signals.h: a blocking call's mark, a partial count
 * after a signal) and the base.
 */
#include "stream.h"

#include "control.h"
#include "direct.h"
#include "wake.h"
#include "signals.h"

#include <limits.h>
#include <poll.h>
#include <sys/stat.h>

/* The most one read, write or sendfile moves in Linux (MAX_RW_COUNT). */
#define MAX_RW ((size_t)INT_MAX & ~(size_t)4095)

static size_t iov_total(const struct iovec *iov, int n)
{
	size_t t = 0;
	int i;

	for (i = 0; i < n; i++) {
		if (iov[i].iov_len > SSIZE_MAX - t)
			return SSIZE_MAX;
		t += iov[i].iov_len;
	}
	return t;
}

/* Copies up to n bytes of the iovec, starting at byte off, into the ring. */
static void iov_to_ring(uint8_t *data, uint64_t size, uint64_t pos, const struct iovec *iov, int cnt, size_t off,
			size_t n)
{
	int i;

	for (i = 0; i < cnt && n; i++) {
		size_t l = iov[i].iov_len;

		if (off >= l) {
			off -= l;
			continue;
		}
		l -= off;
		if (l > n)
			l = n;
		nuse_ring_copy_in(data, size, pos, (const uint8_t *)iov[i].iov_base + off, l);
		pos += l;
		n -= l;
		off = 0;
	}
}

/*
 * Where a send's bytes come from: the caller's iovec, or (sendfile) a file
 * read straight into the ring -- no buffer between, one copy fewer.
 */
struct source {
	const struct iovec *iov;
	int cnt;
	int in;     /* sendfile's file, or -1: the iovec */
	off_t *off; /* sendfile's offset, or NULL: the file's own position */
	int err;    /* the file's read failed with this */
};

/* Copies n bytes of src, from its byte done on, into the ring at pos;
 * returns how many came (fewer: the file ended, or failed: src->err). */
static size_t source_to_ring(struct source *src, uint8_t *data, uint64_t size, uint64_t pos, size_t done, size_t n)
{
	size_t got = 0;

	if (src->in < 0) {
		iov_to_ring(data, size, pos, src->iov, src->cnt, done, n);
		return n;
	}
	while (got < n) {
		uint64_t at = (pos + got) & (size - 1);
		size_t l = n - got < size - at ? n - got : (size_t)(size - at);
		ssize_t r = src->off ? pread(src->in, data + at, l, *src->off) : R.read(src->in, data + at, l);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			if (r < 0) /* a directory: EINVAL, as Linux's sendfile */
				src->err = errno == EISDIR ? EINVAL : errno;
			break;
		}
		if (src->off)
			*src->off += r;
		got += (size_t)r;
	}
	return got;
}

static void ring_to_iov(const uint8_t *data, uint64_t size, uint64_t pos, const struct iovec *iov, int cnt,
			size_t off, size_t n)
{
	int i;

	for (i = 0; i < cnt && n; i++) {
		size_t l = iov[i].iov_len;

		if (off >= l) {
			off -= l;
			continue;
		}
		l -= off;
		if (l > n)
			l = n;
		nuse_ring_copy_out(data, size, pos, (uint8_t *)iov[i].iov_base + off, l);
		pos += l;
		n -= l;
		off = 0;
	}
}

/*
 * A blocking call's wait, with lock let go meanwhile: a reader asleep for
 * data must not stop another thread's MSG_DONTWAIT recv (which gets EAGAIN
 * at once, as in Linux), nor leave the lock held if it is cancelled.
 */
static int wait_unlocked(struct nsock *s, int fd, short ev, int (*ready)(struct nsock *), uint64_t deadline,
			 pthread_mutex_t *lock)
{
	int r;

	pthread_mutex_unlock(lock);
	r = wait_fd(s, fd, ev, ready, deadline);
	pthread_mutex_lock(lock);
	return r;
}

static ssize_t send_error(int e, int flags)
{
	if (e == EPIPE && !(flags & MSG_NOSIGNAL))
		raise_sigpipe();
	return fail(e);
}

/*
 * A ring keeps every page it has cycled through, where a kernel socket's
 * buffers give memory back once sent.  When the daemon has seen our tx
 * ring idle and empty a while, it asks us (the producer: only we may) to
 * give the pages back at our next write.  Only idle rings: a busy ring's
 * pages come back as faults in both the daemon and us (measured: nginx +
 * wrk -c 32 at 0.7x its speed when rings were trimmed every 50 ms).
 */
static void tx_trim(struct nsock *s, uint64_t head)
{
	_Atomic uint32_t *w = A32(&s->sh->daemon_wait);

	if (!(atomic_load_explicit(w, memory_order_relaxed) & NUSE_DWAIT_TRIM_TX))
		return;
	atomic_fetch_and(w, ~(uint32_t)NUSE_DWAIT_TRIM_TX);
	if (!s->dir)
		nuse_ring_trim(s->tx_data, s->ring_size, head);
}

static ssize_t send_source(struct nsock *s, int fd, struct source *src, size_t total, int flags)
{
	size_t done = 0;
	int nonblock = s->nonblock || (flags & MSG_DONTWAIT), held = 0;
	uint64_t deadline = nonblock ? 0 : deadline_of(s->sndtimeo_ms);
	ssize_t ret;

	if (flags & MSG_OOB)
		return fail(EOPNOTSUPP);
	sig_call_begin();
	pthread_mutex_lock(&s->tx_lock);
	for (;;) {
		uint32_t st = st_load(s);
		uint64_t head, tail, room;
		int r;

		if (s->dead || atomic_load(&S.dead)) {
			ret = done ? (ssize_t)done : send_error(EPIPE, flags);
			break;
		}
		if (s->shut_wr) {
			ret = done ? (ssize_t)done : send_error(EPIPE, flags);
			break;
		}
		if (st & (NUSE_SS_WR_DEAD | NUSE_SS_RESET | NUSE_SS_ERROR)) {
			int e = (st & NUSE_SS_ERROR) ? take_so_error(s, fd) : 0;

			if (done) {
				ret = (ssize_t)done;
				break;
			}
			ret = send_error(e ? e : EPIPE, flags);
			break;
		}
		if (!is_connected(s, st)) {
			if (!is_connecting(s, st)) {
				ret = send_error(EPIPE, flags);
				break;
			}
			if (nonblock) {
				ret = hung_up(s, fd) ? send_error(EPIPE, flags) : fail(EAGAIN);
				break;
			}
			if (!held && !(held = sock_hold(s, fd))) {
				ret = fail(EBADF);
				break;
			}
			r = wait_unlocked(s, fd, POLLOUT, conn_ready, deadline, &s->tx_lock);
			if (r < 0) {
				ret = r == -EPIPE ? send_error(EPIPE, flags) : fail(r == -ETIMEDOUT ? EAGAIN : -r);
				break;
			}
			continue;
		}
		if (direct_map(s) < 0)
			continue; /* dead: answered at the top */
		head = s->tx->head;
		tail = atomic_load_explicit(A64(&s->tx->tail), memory_order_acquire);
		if (!nuse_ring_sane(head, tail, s->ring_size)) {
			s->dead = 1;
			continue;
		}
		room = nuse_ring_free(head, tail, s->ring_size);
		if (room && done < total) {
			size_t n, got;

			if (head == tail) {
				uint64_t h = s->dir ? head : nuse_ring_rewind(head, s->ring_size, total - done);

				if (h != head) {
					/* before head (release, below): see ring.h */
					atomic_store_explicit(A64(&s->tx->skip), h, memory_order_relaxed);
					head = h;
					room = nuse_ring_free(head, tail, s->ring_size);
				}
				tx_trim(s, head);
			}
			n = total - done < room ? total - done : (size_t)room;
			got = source_to_ring(src, s->tx_data, s->ring_size, head, done, n);
			if (got) {
				atomic_store_explicit(A64(&s->tx->head), head + got, memory_order_release);
				if (!direct_peer_spins(s) && (!s->dir || wake_peer(s) < 0))
					attention(s);
				done += got;
			}
			if (got < n) { /* sendfile's file ended, or failed */
				ret = done || !src->err ? (ssize_t)done : fail(src->err);
				break;
			}
		}
		if (done == total) {
			ret = (ssize_t)done;
			break;
		}
		if (nonblock) {
			if (done) {
				ret = (ssize_t)done;
				break;
			}
			fill(s, fd);
			if (tx_has_space(s)) /* drained while we filled */
				continue;
			if (hung_up(s, fd))
				continue; /* answered at the top: EPIPE */
			ret = fail(EAGAIN);
			break;
		}
		fill(s, fd);
		if (!held && !(held = sock_hold(s, fd))) {
			ret = done ? (ssize_t)done : fail(EBADF);
			break;
		}
		/* A handler that already ran in this call (in a short wait of
		 * its own: a readiness byte in flight) with bytes moved: return
		 * them now, not after a sleep, as Linux's call would. */
		if (done && sig_restarted(1)) {
			ret = (ssize_t)done;
			break;
		}
		/* As in Linux, another thread may send while this one sleeps
		 * for room (its bytes then come between this call's). */
		r = wait_unlocked(s, fd, POLLOUT, tx_ready, deadline, &s->tx_lock);
		if (r < 0) {
			if (done) {
				ret = (ssize_t)done;
				break;
			}
			ret = r == -EPIPE ? send_error(EPIPE, flags) : fail(r == -ETIMEDOUT ? EAGAIN : -r);
			break;
		}
		if (sig_restarted(done != 0)) { /* a signal: Linux returns what it queued */
			ret = (ssize_t)done;
			break;
		}
	}
	pthread_mutex_unlock(&s->tx_lock);
	if (held)
		sock_unhold(s);
	return ret;
}

ssize_t stream_send(struct nsock *s, int fd, const struct iovec *iov, int cnt, int flags)
{
	struct source src = {.iov = iov, .cnt = cnt, .in = -1};

	return send_source(s, fd, &src, iov_total(iov, cnt), flags);
}

ssize_t stream_recv(struct nsock *s, int fd, const struct iovec *iov, int cnt, int flags)
{
	size_t total = iov_total(iov, cnt), done = 0;
	int nonblock = s->nonblock || (flags & MSG_DONTWAIT), held = 0;
	uint64_t deadline = nonblock ? 0 : deadline_of(s->rcvtimeo_ms);
	ssize_t ret;

	if (flags & MSG_OOB)
		return fail(EINVAL);
	if (flags & MSG_ERRQUEUE) /* no error queue (no timestamps, no zerocopy) */
		return fail(EAGAIN);
	if (total == 0)
		return 0;
	sig_call_begin();
	pthread_mutex_lock(&s->rx_lock);
	for (;;) {
		uint64_t head, tail;
		uint32_t st;
		int r;

		if (direct_map(s) < 0) {
			ret = done ? (ssize_t)done : fail(ECONNRESET);
			break;
		}
		head = atomic_load_explicit(A64(&s->rx->head), memory_order_acquire);
		tail = s->rx->tail;
		if (!nuse_ring_sane(head, tail, s->ring_size)) {
			ret = done ? (ssize_t)done : fail(ECONNRESET);
			break;
		}
		tail = nuse_ring_start(head, tail, atomic_load_explicit(A64(&s->rx->skip), memory_order_relaxed));
		/* Blocking, with fewer than SO_RCVLOWAT (or the length asked
		 * for) there: wait for more, as Linux does, unless no more can
		 * come (the checks below). */
		if (head != tail && !done && !nonblock && !(flags & MSG_PEEK) && head - tail < s->rcvlowat &&
		    head - tail < total && !(st_load(s) & (NUSE_SS_RD_EOF | NUSE_SS_RESET | NUSE_SS_ERROR)) &&
		    !s->shut_rd)
			head = tail; /* treated as empty: the wait below needs readable() */
		if (head != tail) {
			uint64_t avail = head - tail;
			size_t n = total - done < avail ? total - done : (size_t)avail;

			if (!(flags & MSG_TRUNC)) /* TCP's MSG_TRUNC: discard, copy nothing */
				ring_to_iov(s->rx_data, s->ring_size, tail, iov, cnt, done, n);
			done += n;
			if (flags & MSG_PEEK) {
				ret = (ssize_t)done;
				break;
			}
			s->rx_idle = 0;
			atomic_store_explicit(A64(&s->rx->tail), tail + n, memory_order_release);
			/* Dekker with the producer (the daemon sets daemon_wait, a
			 * direct peer's writer wwait, then re-reads tail): without the
			 * fence our tail store can pass this load and both sides miss
			 * each other, leaving the ring drained and the writer waiting
			 * for space forever. */
			atomic_thread_fence(memory_order_seq_cst);
			if (s->dir) {
				_Atomic uint32_t *w = A32(&s->dir->wwait[s->dside ^ 1]);

				if (atomic_load_explicit(w, memory_order_relaxed) && atomic_exchange(w, 0))
					attention(s); /* the daemon wakes the peer's writer */
			} else if (atomic_load(A32(&s->sh->daemon_wait)) & NUSE_DWAIT_RX_SPACE) {
				attention(s);
			}
			if (done == total || !(flags & MSG_WAITALL)) {
				ret = (ssize_t)done;
				break;
			}
			continue;
		}
		st = st_load(s);
		if (s->shut_rd || (st & NUSE_SS_RD_EOF)) {
			ret = (ssize_t)done;
			break;
		}
		if (st & (NUSE_SS_RESET | NUSE_SS_ERROR)) {
			int e = done ? 0 : reset_error(s, fd, st);

			ret = done ? (ssize_t)done : e ? fail(e) : 0;
			break;
		}
		if (s->dead || atomic_load(&S.dead)) {
			ret = done ? (ssize_t)done : fail(ECONNRESET);
			break;
		}
		if (!is_connected(s, st) && !is_connecting(s, st)) {
			ret = done ? (ssize_t)done : fail(ENOTCONN);
			break;
		}
		/* Nothing to read: take the readiness byte back before waiting. */
		unsignal(s, fd);
		if (readable(s))
			continue;
		if (nonblock) {
			/* hung_up is a poll(2): asked at the second EAGAIN in a row
			 * only.  The first, as a client reads right after it sent
			 * its request, is the common one and costs no system call
			 * (the kernel's costs one); a program that then polls the
			 * fd and reads again finds out at that read. */
			if (!done && s->rx_idle++ && hung_up(s, fd))
				continue; /* answered above: ECONNRESET */
			ret = done ? (ssize_t)done : fail(EAGAIN);
			break;
		}
		if (!held && !(held = sock_hold(s, fd))) {
			ret = done ? (ssize_t)done : fail(EBADF);
			break;
		}
		if (done && sig_restarted(1)) { /* as in send: decided before a sleep */
			ret = (ssize_t)done;
			break;
		}
		r = wait_unlocked(s, fd, POLLIN, rx_ready, deadline, &s->rx_lock);
		if (r < 0) {
			ret = done ? (ssize_t)done : fail(r == -EPIPE ? ECONNRESET : r == -ETIMEDOUT ? EAGAIN : -r);
			break;
		}
		if (sig_restarted(done != 0)) { /* a signal: MSG_WAITALL returns what it has */
			ret = (ssize_t)done;
			break;
		}
	}
	if (!(flags & MSG_PEEK)) {
		if (!readable(s)) {
			unsignal(s, fd);
		} else if (ret > 0) {
			unsignal_extra(s, fd);
			/* Bytes left that a spinning reader's writer told nobody
			 * of: the daemon mirrors them on the fd. */
			if (s->dir && !sig_queued(s))
				attention(s);
		}
	} else if (s->dir && ret > 0 && !sig_queued(s)) {
		attention(s); /* peeked bytes stay: the same */
	}
	pthread_mutex_unlock(&s->rx_lock);
	if (held)
		sock_unhold(s);
	return ret;
}

ssize_t stream_sendfile(struct nsock *s, int out, int in, off_t *off, size_t count)
{
	struct source src = {.in = in, .off = off};

	if (!count)
		return 0;
	/* Linux reads only files that splice to a pipe: never a socket (ours
	 * would give its readiness bytes), a pipe or a directory.  Read at an
	 * offset, a pipe or socket fails ESPIPE by itself (as in Linux);
	 * at its position, we ask. */
	if (fd_nuse(in))
		return fail(EINVAL);
	if (!off) {
		struct stat st;

		if (fstat(in, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode) || S_ISDIR(st.st_mode)))
			return fail(EINVAL);
	}
	if (count > MAX_RW)
		count = MAX_RW; /* as Linux: at most this much per call */
	return send_source(s, out, &src, count, 0);
}

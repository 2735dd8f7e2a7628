/* SPDX-License-Identifier: Apache-2.0 */
/*
 * session.c - the session (session.h): connecting to the daemon, the
 * handshake and the arena mapping, the control-socket exchanges
 * (NUSE_CTL_SOCKET, NUSE_CTL_ACCEPT), and noticing that the daemon is gone.
 * It calls only the base and libc.
 */
#include "session.h"

#include "cmd.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/un.h>

struct nuse_session S = {.ctl = -1, .lock = PTHREAD_MUTEX_INITIALIZER};

struct nuse_shared *g_sh;

static void ctl_lock(void)
{
	if (pthread_mutex_lock(&g_sh->ctl_lock) == EOWNERDEAD) /* a process died mid-exchange */
		pthread_mutex_consistent(&g_sh->ctl_lock);
}

static void ctl_unlock(void)
{
	pthread_mutex_unlock(&g_sh->ctl_lock);
}

static void session_fail(const char *why)
{
	say("nuse: %s; NUSE sockets fall back to the kernel", why);
	S.state = SESS_FAILED;
	if (S.ctl >= 0) {
		R.close(S.ctl);
		S.ctl = -1;
	}
}

int ctl_alive(void)
{
	struct pollfd p = {.fd = S.ctl, .events = POLLIN};
	int e = errno, r;
	char c;

	if (atomic_load(&S.dead))
		return 0;
	r = rpoll(&p, 1, 0);
	errno = e;
	if (r <= 0)
		return 1;
	if (p.revents & (POLLHUP | POLLERR | POLLNVAL) ||
	    ((p.revents & POLLIN) && R.recv(S.ctl, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0)) {
		if (!atomic_exchange(&S.dead, 1))
			say("nuse: the daemon closed the session; NUSE sockets fail with ECONNRESET/EPIPE");
		return 0;
	}
	return 1;
}

static int session_map(int memfd, uint64_t size)
{
	struct nuse_arena_hdr *h;
	void *p;

	if (size < sizeof(*h) || size > (1ull << 40)) {
		session_fail("daemon sent a bad arena size");
		return -1;
	}
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	if (p == MAP_FAILED) {
		session_fail("cannot map the arena");
		return -1;
	}
	/*
	 * Never huge pages: rings are touched sparsely and trimmed when idle,
	 * and whichever end touches a page first allocates it (the daemon asks
	 * the same, internal/shmem).  Fails only where there is no THP.
	 */
	(void)madvise(p, size, MADV_NOHUGEPAGE);
	h = p;
	/* Use the layout as given, after checking that it fits in the map. */
	if (h->magic != NUSE_ABI_MAGIC || h->version != NUSE_ABI_VERSION || h->max_socks == 0 ||
	    h->max_socks > NUSE_MAX_SOCKS_LIMIT || h->ring_size < 64 || (h->ring_size & (h->ring_size - 1)) ||
	    h->cmd_off + NUSE_CMD_SLOTS * sizeof(struct nuse_cmd) > size || h->cmd_off % 64 ||
	    h->sock_stride < NUSE_SOCK_HDR_SIZE + 2ull * h->ring_size ||
	    h->socks_off + (uint64_t)h->max_socks * h->sock_stride > size) {
		munmap(p, size);
		session_fail("arena header does not match this shim's ABI");
		return -1;
	}
	{
		size_t shsz = sizeof(struct nuse_shared) + sizeof(atomic_uint) * h->max_socks;
		pthread_mutexattr_t ma;
		void *q = mmap(NULL, shsz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

		if (q == MAP_FAILED) {
			munmap(p, size);
			session_fail("cannot allocate the shim's shared state");
			return -1;
		}
		g_sh = q;
		pthread_mutexattr_init(&ma);
		pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
		pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
		pthread_mutex_init(&g_sh->ctl_lock, &ma);
		pthread_mutexattr_destroy(&ma);
		atomic_store(&g_sh->seq, S.seq);
	}
	S.base = p;
	S.size = size;
	S.hdr = h;
	S.cmds = (struct nuse_cmd *)(S.base + h->cmd_off);
	S.max_socks = h->max_socks;
	S.ring_size = h->ring_size;
	S.socks_off = h->socks_off;
	S.stride = h->sock_stride;
	S.spin_ns = h->spin_ns;
	if (S.spin_ns > 10000000ull) /* a wild value must not make us spin for long */
		S.spin_ns = 10000000ull;
	return 0;
}

/* Receives one control message (and up to one fd) with a bounded wait. */
static ssize_t ctl_recv(void *buf, size_t len, int *fdout)
{
	char cbuf[CMSG_SPACE(sizeof(int) * 4)];
	struct iovec iov = {buf, len};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
	struct cmsghdr *c;
	ssize_t n;
	int waited = 0;

	if (fdout)
		*fdout = -1;
	for (;;) {
		struct pollfd p = {.fd = S.ctl, .events = POLLIN};
		int r = rpoll(&p, 1, 50);

		if (r > 0)
			break;
		if (r < 0 && errno != EINTR)
			return -1;
		if ((waited += 50) >= 30000) { /* a daemon that never answers */
			errno = ETIMEDOUT;
			return -1;
		}
	}
	do
		n = R.recvmsg(S.ctl, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n <= 0) {
		if (n == 0)
			errno = ECONNRESET;
		return -1;
	}
	for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			int nfd = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int)), i, fds[4];

			memcpy(fds, CMSG_DATA(c), sizeof(int) * (size_t)nfd);
			for (i = 0; i < nfd; i++) {
				if (fdout && *fdout < 0)
					*fdout = fds[i];
				else
					R.close(fds[i]);
			}
		}
	}
	return n;
}

/* Sends buf with nfds (at most NUSE_SPARES_MAX) fds attached. */
static int ctl_send(const void *buf, size_t len, const int *fds, int nfds)
{
	char cbuf[CMSG_SPACE(sizeof(int) * NUSE_SPARES_MAX)];
	struct iovec iov = {(void *)buf, len};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	ssize_t n;

	if (nfds > 0 && nfds <= NUSE_SPARES_MAX) {
		struct cmsghdr *c;

		memset(cbuf, 0, sizeof(cbuf));
		mh.msg_control = cbuf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
	}
	do
		n = R.sendmsg(S.ctl, &mh, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n == (ssize_t)len ? 0 : -1;
}

static void session_open_locked(void)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct nuse_ctl_hello hello;
	union {
		struct nuse_ctl_hello_ok ok;
		struct nuse_ctl_reply rep;
	} u;
	char why[256];
	int fd, memfd;
	ssize_t n;

	if (strlen(g_sock_path) >= sizeof(sun.sun_path)) {
		session_fail("NUSE_SOCK path too long");
		return;
	}
	strcpy(sun.sun_path, g_sock_path);
	fd = R.socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		session_fail("cannot create the control socket");
		return;
	}
	if (R.connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		snprintf(why, sizeof(why), "no daemon at %s (%s)", g_sock_path, strerror(errno));
		R.close(fd);
		session_fail(why);
		return;
	}
	/* Out of the way of programs that juggle low fds. */
	S.ctl = R.fcntl(fd, F_DUPFD_CLOEXEC, 512);
	if (S.ctl < 0)
		S.ctl = fd;
	else
		R.close(fd);

	memset(&hello, 0, sizeof(hello));
	hello.hdr.magic = NUSE_ABI_MAGIC;
	hello.hdr.version = NUSE_ABI_VERSION;
	hello.hdr.type = NUSE_CTL_HELLO;
	hello.hdr.len = sizeof(hello);
	hello.hdr.seq = ++S.seq;
	hello.pid = (uint32_t)getpid();
	strncpy(hello.comm, program_invocation_short_name, NUSE_COMM_LEN - 1);
	if (ctl_send(&hello, sizeof(hello), NULL, 0) < 0) {
		snprintf(why, sizeof(why), "handshake with %s failed (%s)", g_sock_path, strerror(errno));
		session_fail(why);
		return;
	}
	memset(&u, 0, sizeof(u));
	n = ctl_recv(&u, sizeof(u), &memfd);
	if (n < (ssize_t)sizeof(struct nuse_ctl_hdr) || u.ok.hdr.magic != NUSE_ABI_MAGIC) {
		snprintf(why, sizeof(why), "handshake with %s failed (%s)", g_sock_path,
			 n < 0 ? strerror(errno) : "bad reply");
		if (memfd >= 0)
			R.close(memfd);
		session_fail(why);
		return;
	}
	if (u.ok.hdr.type == NUSE_CTL_ERROR) {
		u.rep.msg[NUSE_MSG_LEN - 1] = 0;
		snprintf(why, sizeof(why), "daemon refused the session: %s",
			 n >= (ssize_t)sizeof(u.rep) ? u.rep.msg : "(no reason given)");
		if (memfd >= 0)
			R.close(memfd);
		session_fail(why);
		return;
	}
	if (u.ok.hdr.version != NUSE_ABI_VERSION) {
		snprintf(why, sizeof(why), "ABI version mismatch: daemon speaks %u, this shim %u", u.ok.hdr.version,
			 NUSE_ABI_VERSION);
		if (memfd >= 0)
			R.close(memfd);
		session_fail(why);
		return;
	}
	if (u.ok.hdr.type != NUSE_CTL_HELLO_OK || n < (ssize_t)sizeof(u.ok) || memfd < 0) {
		snprintf(why, sizeof(why), "handshake failed: daemon answered type %u version %u%s",
			 u.ok.hdr.type, u.ok.hdr.version, memfd < 0 ? " without an arena" : "");
		if (memfd >= 0)
			R.close(memfd);
		session_fail(why);
		return;
	}
	if (session_map(memfd, u.ok.arena_size) == 0) {
		S.state = SESS_UP;
		S.pid = getpid();
		debug("nuse: session %u up: %u sockets, rings %u bytes, spin %llu ns", u.ok.session_id,
		      S.max_socks, S.ring_size, (unsigned long long)S.spin_ns);
	}
	R.close(memfd);
}

int session_get(void)
{
	if (likely(S.state == SESS_UP))
		return !atomic_load(&S.dead);
	if (S.state == SESS_FAILED)
		return 0;
	pthread_mutex_lock(&S.lock);
	if (S.state == SESS_NONE)
		session_open_locked();
	pthread_mutex_unlock(&S.lock);
	return S.state == SESS_UP;
}

int ctl_request(uint16_t type, int family, uint32_t sock, uint32_t gen, int dfd, struct nuse_ctl_reply *rep)
{
	return ctl_request_engine(type, family, sock, gen, NULL, dfd, rep);
}

static int ctl_exchange(uint16_t type, int family, uint32_t sock, uint32_t gen, const char *engine, const int *dfds,
			int ndfds, int *fdout, struct nuse_ctl_reply *rep)
{
	struct nuse_ctl_req q;
	ssize_t n;
	int e = -ECONNRESET, saved = errno;

	memset(&q, 0, sizeof(q));
	q.hdr.magic = NUSE_ABI_MAGIC;
	q.hdr.version = NUSE_ABI_VERSION;
	q.hdr.type = type;
	q.hdr.len = sizeof(q);
	q.family = family;
	q.type = SOCK_STREAM;
	q.protocol = IPPROTO_TCP;
	q.sock = sock;
	q.gen = gen;
	if (engine)
		strncpy(q.engine, engine, sizeof(q.engine) - 1); /* NUL-padded; the rest stays 0 */
	ctl_lock();
	if (S.ctl < 0 || atomic_load(&S.dead))
		goto out;
	q.hdr.seq = atomic_fetch_add(&g_sh->seq, 1) + 1;
	if (ctl_send(&q, sizeof(q), dfds, ndfds) < 0)
		goto dead;
	/* A sleeping worker holds the daemon's only Go thread, and its
	 * scheduler reads the control socket only when it runs (up to 10 ms
	 * later, sysmon's): ring, and the worker's pass has it read (nudge). */
	if (S.hdr)
		doorbell();
	for (;;) {
		memset(rep, 0, sizeof(*rep));
		if (fdout && *fdout >= 0) { /* came with a reply we skipped */
			R.close(*fdout);
			*fdout = -1;
		}
		n = ctl_recv(rep, sizeof(*rep), fdout);
		if (n < 0)
			goto dead;
		if (n < (ssize_t)offsetof(struct nuse_ctl_reply, addr) || rep->hdr.magic != NUSE_ABI_MAGIC)
			continue;
		if (rep->hdr.seq != q.hdr.seq) /* a late answer to a request we gave up on */
			continue;
		break;
	}
	if (rep->hdr.type == NUSE_CTL_ERROR) {
		rep->msg[NUSE_MSG_LEN - 1] = 0;
		say("nuse: daemon error: %s", rep->msg);
		e = rep->result < 0 ? rep->result : -EIO;
	} else if (rep->hdr.type != NUSE_CTL_REPLY) {
		e = -EIO;
	} else if (rep->result >= 0 && rep->sock >= S.max_socks) {
		e = -EIO;
	} else {
		e = rep->result;
	}
	goto out;
dead:
	if (!atomic_exchange(&S.dead, 1))
		say("nuse: the daemon closed the session; NUSE sockets fail with ECONNRESET/EPIPE");
out:
	ctl_unlock();
	errno = saved;
	return e;
}

int ctl_request_engine(uint16_t type, int family, uint32_t sock, uint32_t gen, const char *engine, int dfd,
		       struct nuse_ctl_reply *rep)
{
	return ctl_exchange(type, family, sock, gen, engine, &dfd, dfd >= 0, NULL, rep);
}

int ctl_request_fd(uint16_t type, uint32_t sock, uint32_t gen, int *fdout, struct nuse_ctl_reply *rep)
{
	int r;

	*fdout = -1;
	r = ctl_exchange(type, 0, sock, gen, NULL, NULL, 0, fdout, rep);
	if (r < 0 && *fdout >= 0) {
		R.close(*fdout);
		*fdout = -1;
	}
	return r;
}

int ctl_request_spares(const int *fds, int n, struct nuse_ctl_reply *rep)
{
	return ctl_exchange(NUSE_CTL_SPARES, n, 0, 0, NULL, fds, n, NULL, rep);
}

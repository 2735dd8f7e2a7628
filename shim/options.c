/* SPDX-License-Identifier: Apache-2.0 */
/*
 * options.c - a NUSE socket's options (options.h): setsockopt and
 * getsockopt as SETSOCKOPT/GETSOCKOPT commands (cmd.h), the options the
 * shim answers itself (timeouts, SO_BINDTODEVICE, the socket's kind), and
 * the ones the daemon's engine does not carry, kept so that getsockopt
 * gives back what was set.  It calls the command slots, the socket's
 * shared state and the base.
 */
#include "options.h"

#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>

#include "cmd.h"
#include "sockstate.h"

/* SO_* options the shim answers or keeps itself; 1 if handled. */
static int local_setopt(struct nsock *s, int level, int name, const void *val, socklen_t len, int *ret)
{
	if (level != SOL_SOCKET)
		return 0;
	if (name == SO_RCVTIMEO || name == SO_SNDTIMEO) {
		const struct timeval *tv = val;
		int64_t ms;

		if (len < sizeof(struct timeval)) {
			*ret = -EINVAL;
			return 1;
		}
		ms = (int64_t)tv->tv_sec * 1000 + (tv->tv_usec + 999) / 1000;
		if (name == SO_RCVTIMEO)
			s->rcvtimeo_ms = ms;
		else
			s->sndtimeo_ms = ms;
		*ret = 0;
		return 1;
	}
	if (name == SO_BINDTODEVICE) {
		*ret = 0;
		return 1;
	}
	return 0;
}

static struct optrec *kept_opt(struct nsock *s, int level, int name)
{
	int i;

	for (i = 0; i < s->nkept; i++)
		if (s->kept[i].level == level && s->kept[i].name == name)
			return &s->kept[i];
	return NULL;
}

static void keep_opt(struct nsock *s, int level, int name, const void *val, socklen_t len)
{
	struct optrec *o = kept_opt(s, level, name);

	if (!o && s->nkept < MAX_KEPT)
		o = &s->kept[s->nkept++];
	if (!o || len > sizeof(o->val))
		return;
	o->level = level;
	o->name = name;
	o->len = len;
	memcpy(o->val, val, len);
}

/*
 * IP_TOS as Linux keeps it on a TCP socket: the ECN bits stay the
 * socket's own, and a new TOS sets the priority the TOS maps to
 * (rt_tos2priority: best effort, bulk, interactive, interactive bulk).
 */
static void keep_tos(struct nsock *s, int v)
{
	static const int prio[8] = {0, 0, 2, 2, 6, 6, 4, 4};
	struct optrec *o = kept_opt(s, IPPROTO_IP, IP_TOS);
	int old = 0, p;

	if (o)
		memcpy(&old, o->val, sizeof(old));
	v = (v & ~3) | (old & 3);
	if (v == old)
		return;
	keep_opt(s, IPPROTO_IP, IP_TOS, &v, sizeof(v));
	p = prio[(v & 0x1e) >> 2];
	keep_opt(s, SOL_SOCKET, SO_PRIORITY, &p, sizeof(p));
}

/* Linux's value of an option the daemon does not carry, never set. */
static int default_opt(int level, int name, int *v)
{
	if (level == SOL_SOCKET && name == SO_RCVLOWAT)
		*v = 1;
	else if ((level == SOL_SOCKET && (name == SO_PRIORITY || name == SO_ZEROCOPY || name == SO_OOBINLINE)) ||
		 (level == IPPROTO_IP && name == IP_TOS) || (level == IPPROTO_IPV6 && name == IPV6_TCLASS) ||
		 (level == IPPROTO_TCP && name == TCP_USER_TIMEOUT))
		*v = 0;
	else
		return 0;
	return 1;
}

/*
 * The keep-alive options: which of ka_posted, or -1.  Their effect is on
 * an idle connection's timers only, so on a connected socket they need
 * not wait for the daemon (a server sets four of them on every socket it
 * accepts: redis-server does): the shim checks the value as Linux does,
 * and posts the SETSOCKOPT without waiting (PROTOCOL.md "Command slots":
 * the daemon runs it before any command posted after it, so a getsockopt
 * reads it back).  Not on a listener: a connection it accepts meanwhile
 * would not inherit it.
 */
static int ka_index(int level, int name)
{
	if (level == SOL_SOCKET && name == SO_KEEPALIVE)
		return 0;
	if (level != IPPROTO_TCP)
		return -1;
	return name == TCP_KEEPIDLE ? 1 : name == TCP_KEEPINTVL ? 2 : name == TCP_KEEPCNT ? 3 : -1;
}

/* 0 if posted, -errno for Linux's answer to a bad value, 1 to wait for
 * the daemon after all. */
static int ka_post(struct nsock *s, int k, struct cmd_io *io, const void *val, socklen_t len)
{
	static const int max[4] = {INT_MAX, 32767, 32767, 127}; /* MAX_TCP_KEEPIDLE, ...INTVL, ...CNT */
	struct nuse_cmd *c;
	uint32_t st;
	int v, i;

	if (len < sizeof(int))
		return -EINVAL;
	memcpy(&v, val, sizeof(v));
	if (k > 0 && (v < 1 || v > max[k]))
		return -EINVAL;
	st = st_load(s);
	if ((st & (NUSE_SS_CONNECTED | NUSE_SS_RESET | NUSE_SS_ERROR)) != NUSE_SS_CONNECTED || s->listening)
		return 1;
	/* Two of the same option in one batch could run in either order (the
	 * daemon runs a batch's asynchronous commands by slot): the first
	 * must be out of its slot (the daemon frees it) before the next. */
	c = s->ka_posted[k];
	for (i = 0; c && atomic_load(A32(&c->state)) == NUSE_CMD_SUBMITTED && c->sock == s->slot && c->op == NUSE_OP_SETSOCKOPT;
	     i++) {
		if (i >= 4096)
			return 1;
		if ((i & 63) == 63)
			spin_yield();
		cpu_relax();
	}
	s->ka_posted[k] = c = cmd_post_async_io(s, NUSE_OP_SETSOCKOPT, io);
	return c ? 0 : 1;
}

int nuse_setopt(struct nsock *s, int level, int name, const void *val, socklen_t len)
{
	struct cmd_io io = {.arg0 = (uint32_t)level, .arg1 = (uint32_t)name, .opt = val, .optlen = len};
	int r, k;

	if (local_setopt(s, level, name, val, len, &r))
		return r;
	if (level == IPPROTO_IPV6 && s->family == AF_INET)
		return -ENOPROTOOPT; /* Linux's IPv4 socket; not one to keep */
	if (len > NUSE_OPT_LEN)
		return -EINVAL;
	if ((k = ka_index(level, name)) >= 0 && (r = ka_post(s, k, &io, val, len)) <= 0)
		return r;
	r = cmd_call(s, NUSE_OP_SETSOCKOPT, &io);
	if (r == 0 && level == SOL_SOCKET && name == SO_RCVLOWAT && len >= sizeof(int)) {
		int v = *(const int *)val;

		s->rcvlowat = v < 0 ? INT_MAX : v ? (uint32_t)v : 1; /* as Linux stores it */
	}
	if (r == -ENOPROTOOPT &&
	    (level == SOL_SOCKET || level == IPPROTO_IP || level == IPPROTO_IPV6 || level == IPPROTO_TCP)) {
		/* A real option the daemon does not carry (IP_TOS, SO_PRIORITY,
		 * ...): Linux would take it, so the program must not fail; the
		 * value is kept for getsockopt. */
		debug("nuse: setsockopt(%d, %d) not carried by the daemon; kept, not applied", level, name);
		if (level == IPPROTO_IP && name == IP_TOS && len >= sizeof(int))
			keep_tos(s, *(const int *)val);
		else
			keep_opt(s, level, name, val, len);
		r = 0;
	}
	return r;
}

int put_dev(void *val, socklen_t *len)
{
	size_t n = strlen(g_dev) + 1;

	memcpy(val, g_dev, n < *len ? n : *len);
	*len = (socklen_t)n;
	return 0;
}

static int put_int(void *val, socklen_t *len, int v)
{
	if (!val || !len)
		return (int)fail(EFAULT);
	if (*len >= sizeof(int)) {
		memcpy(val, &v, sizeof(int));
		*len = sizeof(int);
	} else {
		memcpy(val, &v, *len); /* Linux copies what fits */
	}
	return 0;
}

int nuse_listener(struct nsock *s)
{
	return !!(st_load(s) & NUSE_SS_LISTENING) || s->listening;
}

int nuse_getsockopt(struct nsock *s, int fd, int level, int name, void *val, socklen_t *len)
{
	struct cmd_io io = {0};
	int r;

	if (level == IPPROTO_IPV6 && s->family == AF_INET)
		return (int)fail(EOPNOTSUPP); /* what Linux's IPv4 socket answers */
	if (!len || !val)
		return (int)fail(EFAULT);
	if (level == SOL_SOCKET) {
		switch (name) {
		case SO_TYPE:
			return put_int(val, len, SOCK_STREAM);
		case SO_DOMAIN:
			return put_int(val, len, s->family);
		case SO_PROTOCOL:
			return put_int(val, len, IPPROTO_TCP);
		case SO_ACCEPTCONN:
			return put_int(val, len, nuse_listener(s));
		case SO_RCVTIMEO:
		case SO_SNDTIMEO: {
			int64_t ms = name == SO_RCVTIMEO ? s->rcvtimeo_ms : s->sndtimeo_ms;
			struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

			if (*len < sizeof(tv))
				return (int)fail(EINVAL);
			memcpy(val, &tv, sizeof(tv));
			*len = sizeof(tv);
			return 0;
		}
		case SO_BINDTODEVICE:
			return put_dev(val, len);
		}
	}
	io.arg0 = (uint32_t)level;
	io.arg1 = (uint32_t)name;
	if (level == IPPROTO_TCP && name == TCP_INFO) {
		/* Too big for a command slot: the daemon writes it into the
		 * socket's info area and answers with its length. */
		size_t n;

		r = cmd_call(s, NUSE_OP_GETSOCKOPT, &io);
		if (r < 0)
			return ret_err(r);
		n = (size_t)r < NUSE_INFO_LEN ? (size_t)r : NUSE_INFO_LEN;
		if (n > *len)
			n = *len;
		memcpy(val, s->sh->info, n);
		*len = (socklen_t)n;
		return 0;
	}
	{
		uint8_t out[NUSE_OPT_LEN]; /* a failed call leaves the caller's value alone */

		io.opt_out = out;
		io.opt_out_len = *len < sizeof(out) ? *len : (socklen_t)sizeof(out);
		r = cmd_call(s, NUSE_OP_GETSOCKOPT, &io);
		if (r == -ENOPROTOOPT) {
			/* one the daemon does not carry: what was set, or Linux's default */
			struct optrec *o = kept_opt(s, level, name);
			int v;

			if (o) {
				socklen_t n = o->len < *len ? o->len : *len;

				memcpy(val, o->val, n);
				*len = n;
				return 0;
			}
			if (default_opt(level, name, &v))
				return put_int(val, len, v);
		}
		if (r < 0)
			return ret_err(r);
		memcpy(val, out, io.opt_out_len);
		*len = io.opt_out_len;
	}
	/* A failed connect's error, read from SO_ERROR, ends it: the next
	 * connect() is not EALREADY (Linux: ECONNABORTED, and the one after
	 * starts anew).  A connect that succeeded stays for connect() to
	 * report (0, then EISCONN), as Linux's does. */
	if (level == SOL_SOCKET && name == SO_ERROR)
		clear_app_err(s, fd);
	if (level == SOL_SOCKET && name == SO_ERROR && s->connecting &&
	    !(st_load(s) & (NUSE_SS_CONNECTING | NUSE_SS_CONNECTED))) {
		s->connecting = 0;
		s->conn_aborted = 1;
	}
	return 0;
}

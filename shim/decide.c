/* SPDX-License-Identifier: Apache-2.0 */
/*
 * decide.c - the decision (decide.h): the rules, read at load, decide at
 * bind/listen/connect whether an undecided socket goes to the kernel (it
 * is forgotten) or to NUSE (a socketpair end replaces the fd and what was
 * done before the decision -- bind, options -- is replayed in the daemon).
 * It calls the control calls (control.h), the session (NUSE_CTL_SOCKET),
 * the socket's shared state (attach_slot), the fd table and the rules
 * parser (rules.h).
 */
#include "decide.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "control.h"
#include "options.h"
#include "rules.h"
#include "sockstate.h"
#include "spare.h"

static struct nuse_rules g_rules;
static int g_rules_ok; /* rules parsed without error */

_Static_assert(NUSE_RULE_ENGINE_LEN == NUSE_ENGINE_LEN, "rules.h and the ABI disagree on engine names");

/*
 * Engines the daemon said it does not run (ENOPROTOOPT at socket birth):
 * told once per name per process, and asked for no more (the rule's
 * sockets stay in the kernel).  Few names: rules name few engines.
 */
#define ABSENT_MAX 16
static char g_absent[ABSENT_MAX][NUSE_ENGINE_LEN];
static int g_nabsent;
static pthread_mutex_t g_absent_lock = PTHREAD_MUTEX_INITIALIZER;

static int engine_absent(const char *engine)
{
	int i, r = 0;

	pthread_mutex_lock(&g_absent_lock);
	for (i = 0; i < g_nabsent && !r; i++)
		r = !strcmp(g_absent[i], engine);
	pthread_mutex_unlock(&g_absent_lock);
	return r;
}

/* The daemon refused engine (named by rule ridx): say so, once per name. */
static void engine_refused(const char *engine, int ridx)
{
	int i, known = 0;

	pthread_mutex_lock(&g_absent_lock);
	for (i = 0; i < g_nabsent && !known; i++)
		known = !strcmp(g_absent[i], engine);
	if (!known && g_nabsent < ABSENT_MAX)
		strcpy(g_absent[g_nabsent++], engine);
	pthread_mutex_unlock(&g_absent_lock);
	if (!known)
		say("nuse: rule %d names engine \"%s\", which the daemon does not run; its sockets stay in the kernel",
		    ridx, engine);
}

static int addr_key(const struct sockaddr *sa, socklen_t len, uint8_t a[16], uint16_t *port)
{
	if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *in = (const void *)sa;

		memset(a, 0, 10);
		a[10] = a[11] = 0xff;
		memcpy(a + 12, &in->sin_addr, 4);
		*port = ntohs(in->sin_port);
		return 0;
	}
	if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *in6 = (const void *)sa;

		memcpy(a, &in6->sin6_addr, 16);
		*port = ntohs(in6->sin6_port);
		return 0;
	}
	return -1;
}

static int is_wildcard_port0(const struct sockaddr *sa, socklen_t len)
{
	uint8_t a[16], z[16] = {0};
	uint16_t port;

	if (addr_key(sa, len, a, &port))
		return 0;
	if (port)
		return 0;
	if (sa->sa_family == AF_INET)
		return !memcmp(a + 12, z, 4);
	return !memcmp(a, z, 16);
}

/*
 * 1: NUSE, 0: kernel.  Logs the decision with NUSE_DEBUG=1.  For NUSE,
 * *engine is the engine the deciding rule names ("": the daemon's default,
 * as for SO_BINDTODEVICE) and *ridx that rule (0 for SO_BINDTODEVICE).
 */
static int decide(struct nsock *s, int fd, int dir, const struct sockaddr *sa, socklen_t len, const char **engine,
		  int *ridx)
{
	const char *dn = dir == NUSE_DIR_LISTEN ? "listen" : "connect";
	char ab[80];
	uint8_t a[16];
	uint16_t port;
	int idx, nuse;

	*engine = "";
	*ridx = 0;
	if (s->bindtodev) {
		debug("nuse: fd %d %s %s -> nuse (SO_BINDTODEVICE %s)", fd, dn, fmt_addr(sa, len, ab, sizeof(ab)),
		      g_dev);
		return 1;
	}
	if (!g_rules_ok || g_rules.n == 0 || addr_key(sa, len, a, &port))
		return 0;
	nuse = nuse_rules_decide(&g_rules, dir, a, port, program_invocation_short_name, &idx);
	*engine = nuse_rules_engine(&g_rules, idx);
	*ridx = idx;
	if (idx > 0)
		debug("nuse: fd %d %s %s -> %s%s%s (rule %d: %s)", fd, dn, fmt_addr(sa, len, ab, sizeof(ab)),
		      nuse ? "nuse" : "kernel", **engine ? " engine " : "", *engine, idx,
		      nuse_rules_why(&g_rules, idx));
	else
		debug("nuse: fd %d %s %s -> kernel (%s)", fd, dn, fmt_addr(sa, len, ab, sizeof(ab)),
		      nuse_rules_why(&g_rules, idx));
	return nuse;
}

void undecided_epoll(struct nsock *s, int epfd, int op, int fd, const struct epoll_event *ev)
{
	int i;

	pthread_mutex_lock(&s->lock);
	for (i = 0; i < s->neps && (s->eps[i].epfd != epfd || s->eps[i].fd != fd); i++)
		;
	if (op == EPOLL_CTL_DEL) {
		if (i < s->neps)
			s->eps[i] = s->eps[--s->neps];
	} else if (ev && (op == EPOLL_CTL_ADD || op == EPOLL_CTL_MOD)) {
		if (i == s->neps && s->neps < MAX_EPS)
			s->neps++;
		if (i < s->neps) {
			s->eps[i].epfd = epfd;
			s->eps[i].fd = fd;
			s->eps[i].ev = *ev;
		} else {
			say("nuse: fd in more than %d epoll sets before bind/connect: only %d follow it into NUSE", MAX_EPS,
			    MAX_EPS);
		}
	}
	pthread_mutex_unlock(&s->lock);
}

/*
 * What the kernel keeps with an open file, not with the fd number, and so
 * loses when to_nuse() puts another file under the number: epoll
 * registrations, O_ASYNC, the SIGIO owner and signal.  Saved from the
 * kernel socket before the swap (only the registrations that are still
 * there: the program may have closed an epoll fd without telling us), and
 * put on the new file after it.
 */
struct carry {
	int fl, sig, neps;
	struct f_owner_ex owner;
	struct epreg eps[MAX_EPS];
};

static void carry_save(struct nsock *s, int fd, struct carry *c)
{
	int i;

	c->fl = R.fcntl(fd, F_GETFL);
	c->sig = R.fcntl(fd, F_GETSIG);
	if (R.fcntl(fd, F_GETOWN_EX, &c->owner) < 0)
		c->owner.pid = 0;
	c->neps = 0;
	for (i = 0; i < s->neps; i++) {
		struct epoll_event ev = s->eps[i].ev;

		/* MOD succeeds only where fd is registered now (re-arming a
		 * one-shot or an edge is allowed: epoll may report spuriously) */
		if (R.epoll_ctl(s->eps[i].epfd, EPOLL_CTL_MOD, s->eps[i].fd, &ev) == 0)
			c->eps[c->neps++] = s->eps[i];
	}
	s->neps = 0;
}

static void carry_restore(int fd, const struct carry *c)
{
	int i;

	if (c->fl >= 0 && (c->fl & (O_NONBLOCK | O_ASYNC)))
		R.fcntl(fd, F_SETFL, c->fl & (O_NONBLOCK | O_ASYNC));
	if (c->owner.pid)
		R.fcntl(fd, F_SETOWN_EX, &c->owner);
	if (c->sig > 0)
		R.fcntl(fd, F_SETSIG, c->sig);
	for (i = 0; i < c->neps; i++) {
		struct epoll_event ev = c->eps[i].ev;

		if (R.epoll_ctl(c->eps[i].epfd, EPOLL_CTL_ADD, c->eps[i].fd, &ev) < 0)
			debug("nuse: fd %d: re-adding it to epoll fd %d: %s", c->eps[i].fd, c->eps[i].epfd,
			      strerror(errno));
	}
}

/*
 * A socket's birth on a spare pair (spare.h): 0 with *pair our end and the
 * slot in rep; -errno from the daemon (the spare went back to the pool); 1
 * when there is no spare to use (the control socket's way, then).
 */
static int born_on_spare(struct nsock *s, const char *engine, int *pair, struct nuse_ctl_reply *rep)
{
	struct nuse_op_socket q;
	struct nuse_op_born b;
	struct cmd_io io;
	int r;

	memset(&q, 0, sizeof(q));
	q.family = s->family;
	q.type = SOCK_STREAM;
	q.protocol = IPPROTO_TCP;
	strncpy(q.engine, engine, sizeof(q.engine) - 1); /* NUL-padded */
	memset(&io, 0, sizeof(io));
	io.opt = &q;
	io.optlen = sizeof(q);
	io.addr_out = &b;
	io.addr_out_len = sizeof(b);
	r = spare_call(s, NUSE_OP_SOCKET, &io, &b, &io.addr_out_len, -1, pair);
	if (r == 0) {
		rep->sock = b.sock;
		rep->gen = b.gen;
	}
	return r;
}

/* Moves s into NUSE on fd, on engine ("": the default; named by rule
 * ridx).  0: done; 1: NUSE unavailable (stay in the kernel); < 0: -errno
 * for the caller. */
static int to_nuse(struct nsock *s, int fd, const char *engine, int ridx)
{
	struct nuse_ctl_reply rep;
	struct carry c;
	int sv[2], fl, fdfl, r, i;

	if (!session_get())
		return 1;
	if (*engine && engine_absent(engine))
		return 1;
	r = born_on_spare(s, engine, &sv[0], &rep);
	if (r == 1) {
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
			return -errno;
		r = ctl_request_engine(NUSE_CTL_SOCKET, s->family, 0, 0, engine, sv[1], &rep);
		R.close(sv[1]);
		if (r < 0)
			R.close(sv[0]);
	}
	if (r == -ENOPROTOOPT && *engine) {
		engine_refused(engine, ridx);
		return 1;
	}
	if (r < 0) {
		static atomic_int told;

		/* Out of slots, refused, daemon gone: the program must not break,
		 * so this socket stays in the kernel, loudly (a few times). */
		if (!atomic_load(&S.dead) && atomic_fetch_add(&told, 1) < 5)
			say("nuse: fd %d: the daemon did not take the socket (%s); it stays in the kernel", fd,
			    strerror(-r));
		return 1;
	}
	fl = R.fcntl(fd, F_GETFL);
	if (fl >= 0 && (fl & O_NONBLOCK))
		R.fcntl(sv[0], F_SETFL, O_NONBLOCK | O_RDWR);
	carry_save(s, fd, &c);
	/* The app's fd number now names our end; the kernel socket closes. */
	pthread_mutex_lock(&g_tablock);
	fdfl = R.fcntl(fd, F_GETFD);
	R.dup3(sv[0], fd, fdfl >= 0 && (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0);
	/* dup'd before the decision: every copy must name our end too */
	for (i = 0; atomic_load(&s->refs) > 1 && i < g_tabhi; i++) {
		if (i == fd || atomic_load_explicit(&g_tab[i], memory_order_relaxed) != s)
			continue;
		fdfl = R.fcntl(i, F_GETFD);
		R.dup3(sv[0], i, fdfl >= 0 && (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0);
	}
	attach_slot(s, rep.sock, rep.gen, fd);
	pthread_mutex_unlock(&g_tablock);
	R.close(sv[0]);
	carry_restore(fd, &c);
	for (i = 0; i < s->nopts; i++)
		nuse_setopt(s, s->opts[i].level, s->opts[i].name, s->opts[i].val, s->opts[i].len);
	s->nopts = 0;
	return 0;
}

/* The port a kernel socket is bound to, or 0. */
static int bound_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t l = sizeof(ss);

	if (R.getsockname(fd, (struct sockaddr *)&ss, &l) < 0)
		return 0;
	return ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
					     : ((struct sockaddr_in6 *)&ss)->sin6_port);
}

/* Does an engine of the daemon hold port (NUSE_CTL_PORTFREE)?  No if the
 * daemon cannot be asked. */
static int engine_holds(int family, int port)
{
	struct nuse_ctl_reply rep;

	return session_get() && ctl_request(NUSE_CTL_PORTFREE, family, (uint32_t)port, 0, -1, &rep) == -EADDRINUSE;
}

/*
 * fd was just bound to the wildcard at port 0: the kernel picked a port
 * free in the kernel, but NUSE's engines take ports from the same range
 * for their own connections (and keep them in TIME_WAIT), so a listen or
 * connect that takes the socket to NUSE could fail there with EADDRINUSE.
 * While an engine holds the kernel's pick, bind a fresh kernel socket
 * (again port 0, the held ones kept open so that the kernel picks another)
 * and put it in fd's place, with fd's flags, options and epoll sets.
 */
static void pick_port_free_in_nuse(struct nsock *s, int fd, const struct sockaddr *sa, socklen_t len)
{
	int held[8], n = 0, i;

	while (n < (int)(sizeof(held) / sizeof(held[0])) && engine_holds(s->family, bound_port(fd))) {
		int ns = R.socket(s->family, SOCK_STREAM | SOCK_CLOEXEC, 0), fdfl;
		struct carry c;

		if (ns < 0)
			break;
		for (i = 0; i < s->nopts; i++)
			R.setsockopt(ns, s->opts[i].level, s->opts[i].name, s->opts[i].val, s->opts[i].len);
		if (R.bind(ns, sa, len) < 0 || (held[n] = R.fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0) {
			R.close(ns);
			break;
		}
		n++;
		carry_save(s, fd, &c);
		fdfl = R.fcntl(fd, F_GETFD);
		R.dup3(ns, fd, fdfl >= 0 && (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0);
		R.close(ns);
		carry_restore(fd, &c);
		s->neps = c.neps; /* still undecided: the decision carries them again */
		memcpy(s->eps, c.eps, sizeof(c.eps[0]) * (size_t)c.neps);
	}
	for (i = 0; i < n; i++)
		R.close(held[i]);
}

int sock_bind(struct nsock *s, int fd, const struct sockaddr *sa, socklen_t len)
{
	const char *eng;
	int r, ridx;

	pthread_mutex_lock(&s->lock);
	if (s->kind == K_NUSE) {
		r = ret_err(nuse_bind(s, sa, len));
		goto out;
	}
	if (s->kind != K_UNDECIDED || sa->sa_family != s->family || len > sizeof(s->bind_addr) || s->bound) {
		r = R.bind(fd, sa, len);
		goto out;
	}
	if (is_wildcard_port0(sa, len) && !s->bindtodev) {
		/* Nothing to decide yet: listen or connect will.  The kernel
		 * picks the port now, as Linux does at bind (getsockname tells
		 * it, a second bind fails), and if the socket goes to NUSE it
		 * takes the same port there. */
		socklen_t l = sizeof(s->bind_addr);

		r = R.bind(fd, sa, len);
		if (r == 0)
			pick_port_free_in_nuse(s, fd, sa, len);
		if (r == 0 && R.getsockname(fd, (struct sockaddr *)&s->bind_addr, &l) == 0) {
			s->bind_len = l;
			s->bound = B_EPHEMERAL;
		}
		goto out;
	}
	if (decide(s, fd, NUSE_DIR_LISTEN, sa, len, &eng, &ridx)) {
		r = to_nuse(s, fd, eng, ridx);
		if (r == 0) {
			r = ret_err(nuse_bind(s, sa, len));
			goto out;
		}
		if (r < 0) {
			r = ret_err(r);
			goto out;
		}
	}
	r = R.bind(fd, sa, len);
	if (r == 0) {
		memcpy(&s->bind_addr, sa, len);
		s->bind_len = len;
		s->bound = B_KERNEL;
	}
out:
	pthread_mutex_unlock(&s->lock);
	return r;
}

int sock_listen(struct nsock *s, int fd, int backlog)
{
	struct sockaddr_storage any;
	const char *eng;
	socklen_t alen;
	int r, ridx;

	pthread_mutex_lock(&s->lock);
	if (s->kind == K_NUSE) {
		r = ret_err(nuse_listen(s, fd, backlog));
		pthread_mutex_unlock(&s->lock);
		return r;
	}
	if (s->kind == K_UNDECIDED && s->bound != B_KERNEL) {
		if (s->bound == B_EPHEMERAL) {
			memcpy(&any, &s->bind_addr, s->bind_len);
			alen = s->bind_len;
		} else {
			memset(&any, 0, sizeof(any));
			any.ss_family = (sa_family_t)s->family;
			alen = s->family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
		}
		if (decide(s, fd, NUSE_DIR_LISTEN, (struct sockaddr *)&any, alen, &eng, &ridx)) {
			r = to_nuse(s, fd, eng, ridx);
			if (r == 0) {
				/* the daemon's stack may not autobind on listen */
				r = nuse_bind(s, (struct sockaddr *)&any, alen);
				if (r == 0)
					r = nuse_listen(s, fd, backlog);
				pthread_mutex_unlock(&s->lock);
				return ret_err(r);
			}
			if (r < 0) {
				pthread_mutex_unlock(&s->lock);
				return ret_err(r);
			}
		}
	}
	pthread_mutex_unlock(&s->lock);
	to_kernel(s, fd);
	return R.listen(fd, backlog);
}

int sock_connect(struct nsock *s, int fd, const struct sockaddr *sa, socklen_t len)
{
	const char *eng;
	int r, ridx;

	pthread_mutex_lock(&s->lock);
	if (s->kind == K_NUSE) {
		r = ret_err(nuse_connect(s, fd, sa, len));
		pthread_mutex_unlock(&s->lock);
		return r;
	}
	if (s->kind == K_UNDECIDED && (sa->sa_family == AF_INET || sa->sa_family == AF_INET6) &&
	    decide(s, fd, NUSE_DIR_CONNECT, sa, len, &eng, &ridx)) {
		r = to_nuse(s, fd, eng, ridx);
		if (r == 0) {
			if (s->bound)
				r = nuse_bind(s, (struct sockaddr *)&s->bind_addr, s->bind_len);
			if (r == 0)
				r = nuse_connect(s, fd, sa, len);
			pthread_mutex_unlock(&s->lock);
			return ret_err(r);
		}
		if (r < 0) {
			pthread_mutex_unlock(&s->lock);
			return ret_err(r);
		}
	}
	pthread_mutex_unlock(&s->lock);
	to_kernel(s, fd);
	return R.connect(fd, sa, len);
}

static int is_nuse_dev(const void *val, socklen_t len)
{
	size_t n = strnlen(val, len);

	return n == strlen(g_dev) && !memcmp(val, g_dev, n);
}

int undecided_setsockopt(struct nsock *s, int fd, int level, int name, const void *val, socklen_t len)
{
	int r, i;

	pthread_mutex_lock(&s->lock);
	if (s->kind != K_UNDECIDED) {
		pthread_mutex_unlock(&s->lock);
		return R.setsockopt(fd, level, name, val, len);
	}
	if (level == SOL_SOCKET && name == SO_BINDTODEVICE && val) {
		if (is_nuse_dev(val, len)) {
			/* the NUSE device need not exist in the kernel */
			s->bindtodev = 1;
			pthread_mutex_unlock(&s->lock);
			return 0;
		}
		s->bindtodev = 0;
	}
	r = R.setsockopt(fd, level, name, val, len);
	if (r == 0 && val && len <= NUSE_OPT_LEN && !(level == SOL_SOCKET && name == SO_BINDTODEVICE)) {
		/* recorded for replay in NUSE; the latest value of an option wins */
		for (i = 0; i < s->nopts; i++)
			if (s->opts[i].level == level && s->opts[i].name == name)
				break;
		if (i < MAX_OPTS) {
			s->opts[i].level = level;
			s->opts[i].name = name;
			s->opts[i].len = len;
			memcpy(s->opts[i].val, val, len);
			if (i == s->nopts)
				s->nopts++;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return r;
}

void load_rules(void)
{
	static char text[65536];
	const char *env = getenv("NUSE_RULES"), *file = getenv("NUSE_RULES_FILE");
	char err[256];
	size_t n = 0;

	if (env) {
		n = strlen(env) < sizeof(text) - 2 ? strlen(env) : sizeof(text) - 2;
		memcpy(text, env, n);
		text[n++] = '\n';
	}
	if (file && *file) {
		int fd = open(file, O_RDONLY | O_CLOEXEC);
		ssize_t r = 0;

		if (fd < 0) {
			say("nuse: cannot read NUSE_RULES_FILE %s (%s); NUSE sockets stay in the kernel", file,
			    strerror(errno));
			return;
		}
		while (n < sizeof(text) - 1 && (r = R.read(fd, text + n, sizeof(text) - 1 - n)) > 0)
			n += (size_t)r;
		R.close(fd);
		if (n >= sizeof(text) - 1) {
			say("nuse: NUSE_RULES_FILE %s is too long; NUSE sockets stay in the kernel", file);
			return;
		}
	}
	text[n] = 0;
	if (nuse_rules_parse(text, &g_rules, err, sizeof(err)) < 0) {
		say("nuse: rules: %s; NUSE sockets stay in the kernel", err);
		return;
	}
	g_rules_ok = 1;
}

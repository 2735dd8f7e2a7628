/* SPDX-License-Identifier: Apache-2.0 */
/* rules.c - the rules parser and matcher; see rules.h for the grammar. */
#include "rules.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define RULE_MAX_LEN 512

static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static void seterr(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* Strict decimal in [0, max]; the whole string must be digits. */
static int parse_uint(const char *s, size_t n, unsigned max, unsigned *out)
{
	unsigned v = 0;
	size_t i;

	if (n == 0 || n > 6)
		return -1;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > max)
		return -1;
	*out = v;
	return 0;
}

static int parse_ports(const char *s, size_t n, struct nuse_rule *r, int num, const char *tok, char *err,
		       size_t errlen)
{
	const char *dash = memchr(s, '-', n);
	unsigned lo, hi;

	if (!dash) {
		if (parse_uint(s, n, 65535, &lo)) {
			seterr(err, errlen, "rule %d: bad port '%.*s' in '%s'", num, (int)n, s, tok);
			return -1;
		}
		hi = lo;
	} else {
		if (parse_uint(s, (size_t)(dash - s), 65535, &lo) ||
		    parse_uint(dash + 1, n - (size_t)(dash - s) - 1, 65535, &hi)) {
			seterr(err, errlen, "rule %d: bad port range '%.*s' in '%s'", num, (int)n, s, tok);
			return -1;
		}
		if (lo > hi) {
			seterr(err, errlen, "rule %d: bad port range '%.*s' (%u > %u) in '%s'", num, (int)n, s,
			       lo, hi, tok);
			return -1;
		}
	}
	r->port_lo = (uint16_t)lo;
	r->port_hi = (uint16_t)hi;
	return 0;
}

/* Parses ADDR[/LEN] (no brackets); v6 says whether ADDR must be IPv6. */
static int parse_prefix(const char *s, size_t n, int v6, struct nuse_rule *r, int num, const char *tok, char *err,
			size_t errlen)
{
	char buf[64];
	const char *slash = memchr(s, '/', n);
	size_t alen = slash ? (size_t)(slash - s) : n;
	unsigned plen, maxlen;

	if (alen == 0 || alen >= sizeof(buf)) {
		seterr(err, errlen, "rule %d: bad address '%.*s' in '%s'", num, (int)alen, s, tok);
		return -1;
	}
	memcpy(buf, s, alen);
	buf[alen] = 0;
	if (!v6 && inet_pton(AF_INET, buf, r->addr + 12) == 1) {
		memcpy(r->addr, v4mapped, 12);
		r->addr_v4 = 1;
		maxlen = 32;
	} else if (inet_pton(AF_INET6, buf, r->addr) == 1) {
		maxlen = 128;
		r->addr_v4 = 0;
	} else {
		seterr(err, errlen, "rule %d: bad %saddress '%s' in '%s'", num, v6 ? "IPv6 " : "", buf, tok);
		return -1;
	}
	plen = maxlen;
	if (slash && parse_uint(slash + 1, n - alen - 1, maxlen, &plen)) {
		seterr(err, errlen, "rule %d: bad prefix length %.*s in '%s'", num, (int)(n - alen - 1), slash + 1,
		       tok);
		return -1;
	}
	if (r->addr_v4)
		plen += 96;
	else if (plen >= 96 && !memcmp(r->addr, v4mapped, 12))
		r->addr_v4 = 1; /* [::ffff:a.b.c.d]/LEN counts as IPv4 */
	r->plen = (uint16_t)plen;
	return 0;
}

static int parse_target(const char *tok, struct nuse_rule *r, int num, char *err, size_t errlen)
{
	size_t n = strlen(tok);
	const char *ports = NULL;
	size_t plen_ports = 0;

	r->port_lo = 0;
	r->port_hi = 65535;
	if (tok[0] == '*') {
		r->any_addr = 1;
		if (n == 1)
			return 0;
		if (tok[1] != ':') {
			seterr(err, errlen, "rule %d: bad target '%s' (want *, *:PORTS or ADDR[/LEN][:PORTS])", num,
			       tok);
			return -1;
		}
		return parse_ports(tok + 2, n - 2, r, num, tok, err, errlen);
	}
	if (tok[0] == '[') {
		const char *close = strchr(tok, ']');
		const char *rest;
		const char *inner = tok + 1;
		size_t ilen;

		if (!close) {
			seterr(err, errlen, "rule %d: missing ']' in '%s'", num, tok);
			return -1;
		}
		ilen = (size_t)(close - inner);
		rest = close + 1;
		if (*rest == '/') { /* [V6]/LEN[:PORTS] */
			const char *colon = strchr(rest, ':');
			char buf[80];
			size_t l = colon ? (size_t)(colon - rest) : strlen(rest);

			if (ilen + l >= sizeof(buf) || memchr(inner, '/', ilen)) {
				seterr(err, errlen, "rule %d: bad target '%s'", num, tok);
				return -1;
			}
			memcpy(buf, inner, ilen);
			memcpy(buf + ilen, rest, l);
			buf[ilen + l] = 0;
			if (parse_prefix(buf, ilen + l, 1, r, num, tok, err, errlen))
				return -1;
			rest += l;
		} else if (parse_prefix(inner, ilen, 1, r, num, tok, err, errlen)) {
			return -1;
		}
		if (*rest == 0)
			return 0;
		if (*rest != ':') {
			seterr(err, errlen, "rule %d: bad target '%s'", num, tok);
			return -1;
		}
		return parse_ports(rest + 1, strlen(rest + 1), r, num, tok, err, errlen);
	}
	{
		const char *c1 = strchr(tok, ':');

		if (c1 && strchr(c1 + 1, ':')) /* bare IPv6 address: no ports */
			return parse_prefix(tok, n, 1, r, num, tok, err, errlen);
		if (c1) {
			ports = c1 + 1;
			plen_ports = strlen(ports);
			n = (size_t)(c1 - tok);
		}
		if (parse_prefix(tok, n, 0, r, num, tok, err, errlen))
			return -1;
		if (ports)
			return parse_ports(ports, plen_ports, r, num, tok, err, errlen);
		return 0;
	}
}

/* An engine name: 1 to NUSE_RULE_ENGINE_LEN-1 of [a-z0-9_-]. */
static int parse_engine(const char *name, struct nuse_rule *r, int num, char *err, size_t errlen)
{
	size_t n = strlen(name), i;

	if (n >= sizeof(r->engine)) {
		seterr(err, errlen, "rule %d: engine name '%.*s...' longer than %d characters", num, 20, name,
		       (int)sizeof(r->engine) - 1);
		return -1;
	}
	for (i = 0; i < n; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) {
			seterr(err, errlen, "rule %d: bad engine name '%s' (use a-z, 0-9, '_' and '-')", num, name);
			return -1;
		}
	}
	memcpy(r->engine, name, n + 1);
	return 0;
}

/* Splits a rule into blank-separated words in place; returns the count. */
static int split_words(char *s, char **w, int max)
{
	int n = 0;

	while (*s) {
		while (*s == ' ' || *s == '\t' || *s == '\r')
			*s++ = 0;
		if (!*s)
			break;
		if (n == max)
			return max + 1;
		w[n++] = s;
		while (*s && *s != ' ' && *s != '\t' && *s != '\r')
			s++;
	}
	return n;
}

static int parse_rule(char *line, struct nuse_rule *r, int num, char *err, size_t errlen)
{
	char *w[10];
	int nw, i = 0, j;
	size_t tl = 0;

	memset(r, 0, sizeof(*r));
	r->nuse = 1;
	nw = split_words(line, w, 9);
	if (nw > 9) {
		seterr(err, errlen, "rule %d: too many words", num);
		return -1;
	}
	/* The rule as written, blanks collapsed, for messages. */
	for (j = 0; j < nw; j++) {
		int k = snprintf(r->text + tl, sizeof(r->text) - tl, "%s%s", j ? " " : "", w[j]);
		if (k < 0 || (size_t)k >= sizeof(r->text) - tl) {
			tl = sizeof(r->text) - 1;
			break;
		}
		tl += (size_t)k;
	}
	if (!strcmp(w[i], "nuse") || !strcmp(w[i], "kernel")) {
		r->nuse = w[i][0] == 'n';
		i++;
	}
	if (i >= nw) {
		seterr(err, errlen, "rule %d: missing protocol in '%s'", num, r->text);
		return -1;
	}
	if (!strcmp(w[i], "tcp")) {
		r->fam = NUSE_FAM_ANY;
	} else if (!strcmp(w[i], "tcp4")) {
		r->fam = NUSE_FAM_V4;
	} else if (!strcmp(w[i], "tcp6")) {
		r->fam = NUSE_FAM_V6;
	} else if (!strncmp(w[i], "udp", 3)) {
		seterr(err, errlen, "rule %d: udp is not supported yet", num);
		return -1;
	} else {
		seterr(err, errlen, "rule %d: unknown protocol '%s' (want tcp, tcp4 or tcp6)", num, w[i]);
		return -1;
	}
	i++;
	if (i < nw && (!strcmp(w[i], "listen") || !strcmp(w[i], "connect"))) {
		r->dir = w[i][0] == 'l' ? NUSE_DIR_LISTEN : NUSE_DIR_CONNECT;
		i++;
	}
	if (i >= nw) {
		seterr(err, errlen, "rule %d: missing target (*, ADDR[/LEN][:PORTS]) in '%s'", num, r->text);
		return -1;
	}
	if (parse_target(w[i], r, num, err, errlen))
		return -1;
	if (!r->any_addr) {
		if (r->fam == NUSE_FAM_V4 && !r->addr_v4) {
			seterr(err, errlen, "rule %d: tcp4 with IPv6 address in '%s'", num, w[i]);
			return -1;
		}
		if (r->fam == NUSE_FAM_V6 && r->addr_v4) {
			seterr(err, errlen, "rule %d: tcp6 with IPv4 address in '%s'", num, w[i]);
			return -1;
		}
	}
	i++;
	while (i < nw && (!strcmp(w[i], "prog") || !strcmp(w[i], "engine"))) {
		if (w[i][0] == 'p') {
			if (i + 1 >= nw) {
				seterr(err, errlen, "rule %d: 'prog' needs a program name", num);
				return -1;
			}
			if (r->prog[0]) {
				seterr(err, errlen, "rule %d: 'prog' given twice in '%s'", num, r->text);
				return -1;
			}
			if (strlen(w[i + 1]) >= sizeof(r->prog)) {
				seterr(err, errlen, "rule %d: program name too long in '%s'", num, w[i + 1]);
				return -1;
			}
			strcpy(r->prog, w[i + 1]);
		} else {
			if (i + 1 >= nw) {
				seterr(err, errlen, "rule %d: 'engine' needs an engine name (e.g. gvisor, kernel)", num);
				return -1;
			}
			if (r->engine[0]) {
				seterr(err, errlen, "rule %d: 'engine' given twice in '%s'", num, r->text);
				return -1;
			}
			if (parse_engine(w[i + 1], r, num, err, errlen))
				return -1;
			if (!r->nuse) {
				seterr(err, errlen, "rule %d: a kernel rule takes no engine in '%s'", num, r->text);
				return -1;
			}
		}
		i += 2;
	}
	if (i < nw) {
		seterr(err, errlen, "rule %d: unexpected '%s' in '%s'", num, w[i], r->text);
		return -1;
	}
	return 0;
}

int nuse_rules_parse(const char *text, struct nuse_rules *rs, char *err, size_t errlen)
{
	const char *p = text ? text : "";
	int num = 0;

	rs->n = 0;
	if (err && errlen)
		err[0] = 0;
	while (*p) {
		char line[RULE_MAX_LEN];
		size_t n = 0;
		int blank = 1, toolong = 0;

		/* One rule: up to ';' or newline; '#' comments run to newline. */
		while (*p && *p != ';' && *p != '\n') {
			if (*p == '#') {
				while (*p && *p != '\n')
					p++;
				break;
			}
			if (n < sizeof(line) - 1)
				line[n++] = *p;
			else
				toolong = 1;
			if (*p != ' ' && *p != '\t' && *p != '\r')
				blank = 0;
			p++;
		}
		if (*p)
			p++;
		line[n] = 0;
		if (blank)
			continue;
		num++;
		if (toolong) {
			seterr(err, errlen, "rule %d: longer than %d characters", num, RULE_MAX_LEN - 1);
			rs->n = 0;
			return -1;
		}
		if (rs->n == NUSE_RULES_MAX) {
			seterr(err, errlen, "too many rules (at most %d)", NUSE_RULES_MAX);
			rs->n = 0;
			return -1;
		}
		if (parse_rule(line, &rs->r[rs->n], num, err, errlen)) {
			rs->n = 0;
			return -1;
		}
		rs->n++;
	}
	return 0;
}

static int prefix_match(const uint8_t *a, const uint8_t *b, unsigned plen)
{
	unsigned full = plen / 8, rem = plen % 8;

	if (memcmp(a, b, full))
		return 0;
	if (rem) {
		uint8_t mask = (uint8_t)(0xff << (8 - rem));
		if ((a[full] ^ b[full]) & mask)
			return 0;
	}
	return 1;
}

static int decide_addr(const struct nuse_rules *rs, int dir, const uint8_t addr[16], uint16_t port,
		       const char *prog, int *idx);

/*
 * A wildcard listen that no rule names goes where a loopback listen on its
 * port would (for [::], IPv6 or IPv4 loopback): most servers listen on the
 * wildcard, and with loopback claimed their local clients are NUSE's.
 */
int nuse_rules_decide(const struct nuse_rules *rs, int dir, const uint8_t addr[16], uint16_t port,
		      const char *prog, int *idx)
{
	static const uint8_t any6[16], any4[16] = {[10] = 0xff, [11] = 0xff};
	static const uint8_t lo4[16] = {[10] = 0xff, [11] = 0xff, [12] = 127, [15] = 1}, lo6[16] = {[15] = 1};
	int nuse = decide_addr(rs, dir, addr, port, prog, idx), li;

	if (nuse || *idx != 0 || dir != NUSE_DIR_LISTEN)
		return nuse;
	if (!memcmp(addr, any4, 16) && decide_addr(rs, dir, lo4, port, prog, &li) == 1)
		*idx = li;
	else if (!memcmp(addr, any6, 16) &&
		 (decide_addr(rs, dir, lo6, port, prog, &li) == 1 || decide_addr(rs, dir, lo4, port, prog, &li) == 1))
		*idx = li;
	else
		return 0;
	return 1;
}

static int decide_addr(const struct nuse_rules *rs, int dir, const uint8_t addr[16], uint16_t port,
		       const char *prog, int *idx)
{
	int v4 = !memcmp(addr, v4mapped, 12);
	int i;

	if (dir == NUSE_DIR_CONNECT && port == 53) {
		*idx = -1;
		return 0;
	}
	for (i = 0; rs && i < rs->n; i++) {
		const struct nuse_rule *r = &rs->r[i];

		if (r->dir != NUSE_DIR_ANY && r->dir != dir)
			continue;
		if ((r->fam == NUSE_FAM_V4 && !v4) || (r->fam == NUSE_FAM_V6 && v4))
			continue;
		if (port < r->port_lo || port > r->port_hi)
			continue;
		if (!r->any_addr && (r->addr_v4 != v4 || !prefix_match(addr, r->addr, r->plen)))
			continue;
		if (r->prog[0] && (!prog || strcmp(prog, r->prog)))
			continue;
		*idx = i + 1;
		return r->nuse;
	}
	*idx = 0;
	return 0;
}

const char *nuse_rules_engine(const struct nuse_rules *rs, int idx)
{
	if (!rs || idx < 1 || idx > rs->n)
		return "";
	return rs->r[idx - 1].engine;
}

const char *nuse_rules_why(const struct nuse_rules *rs, int idx)
{
	if (idx == -1)
		return "built-in: tcp port 53 stays in the kernel";
	if (!rs || idx < 1 || idx > rs->n)
		return "default: kernel";
	return rs->r[idx - 1].text;
}

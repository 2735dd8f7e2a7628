/* SPDX-License-Identifier: Apache-2.0 */
/*
 * rules.h - which sockets NUSE takes.  One parser, used by libnuse.so and,
 * through cgo (shim/rules), by the CLI and the fuzz test.
 *
 * Grammar (rules separated by ';' or newlines, '#' starts a comment that
 * runs to the end of the line; first match wins; no match: kernel):
 *
 *   [nuse|kernel] tcp|tcp4|tcp6 [listen|connect] TARGET [prog NAME] [engine ENGINE]
 *   TARGET = * | ADDR[/LEN] | *:PORTS | ADDR[/LEN]:PORTS
 *          | [V6ADDR][/LEN][:PORTS] | [V6ADDR/LEN][:PORTS] | V6ADDR[/LEN]
 *   PORTS  = N | N-M
 *   ENGINE = 1 to 15 of [a-z0-9_-], e.g. gvisor, kernel, shm
 *
 * `prog` and `engine` may come in either order, each at most once.  A rule
 * without `engine` gives its sockets to the daemon's default engine; a
 * kernel rule takes no engine.
 * IPv4-mapped IPv6 addresses count as IPv4.  A listen on the wildcard
 * address that no rule names is decided as a listen on loopback would be.  TCP connects to port 53 always
 * stay in the kernel.  The parser allocates nothing and calls no function
 * that could re-enter the shim, so it is safe in a library constructor.
 */
#ifndef NUSE_RULES_H
#define NUSE_RULES_H

#include <stddef.h>
#include <stdint.h>

#define NUSE_RULES_MAX 128
#define NUSE_RULE_TEXT 192
#define NUSE_PROG_LEN 64
#define NUSE_RULE_ENGINE_LEN 16 /* = NUSE_ENGINE_LEN of the ABI: 15 + NUL */

enum { NUSE_DIR_ANY = 0, NUSE_DIR_LISTEN = 1, NUSE_DIR_CONNECT = 2 };
enum { NUSE_FAM_ANY = 0, NUSE_FAM_V4 = 4, NUSE_FAM_V6 = 6 };

struct nuse_rule {
	uint8_t nuse;     /* 1: NUSE, 0: kernel */
	uint8_t fam;      /* NUSE_FAM_*: tcp, tcp4, tcp6 */
	uint8_t dir;      /* NUSE_DIR_* */
	uint8_t any_addr; /* target address is '*' */
	uint8_t addr_v4;  /* addr is IPv4 (stored IPv4-mapped) */
	uint8_t addr[16];
	uint16_t plen; /* prefix length over the 128-bit (mapped) address */
	uint16_t port_lo, port_hi;
	char prog[NUSE_PROG_LEN]; /* "" = any program */
	char engine[NUSE_RULE_ENGINE_LEN]; /* "" = the daemon's default */
	char text[NUSE_RULE_TEXT]; /* the rule as written, blanks collapsed */
};

struct nuse_rules {
	int n;
	struct nuse_rule r[NUSE_RULES_MAX];
};

/* Parses text into rs.  Returns 0, or -1 with a message in err. */
int nuse_rules_parse(const char *text, struct nuse_rules *rs, char *err, size_t errlen);

/*
 * Decides a socket: dir is NUSE_DIR_LISTEN or NUSE_DIR_CONNECT, addr the
 * 16-byte address (IPv4 as ::ffff:a.b.c.d), port in host order, prog the
 * program name.  Returns 1 for NUSE, 0 for the kernel; *idx is the 1-based
 * index of the rule that decided, 0 for the default, -1 for the built-in
 * DNS exception.
 */
int nuse_rules_decide(const struct nuse_rules *rs, int dir, const uint8_t addr[16], uint16_t port,
		      const char *prog, int *idx);

/* The engine a decision's idx names: "" for the daemon's default (also
 * for the default decision, the DNS exception and kernel rules). */
const char *nuse_rules_engine(const struct nuse_rules *rs, int idx);

/* Text for a decision's idx, e.g. "tcp 10.77.0.0/16" or "default: kernel". */
const char *nuse_rules_why(const struct nuse_rules *rs, int idx);

#endif /* NUSE_RULES_H */

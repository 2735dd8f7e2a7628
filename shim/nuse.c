/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nuse.c - libnuse.so: the LD_PRELOAD shim.  All of it is C; the Go in
 * shim.go only makes cgo build a shared library.  shim/PROTOCOL.md is the
 * contract with the daemon; README.md says which file does which part.
 * This file holds the constructor, which reads the settings, maps the fd
 * table, reads the rules and registers the fork handlers; it calls the
 * base, the fd table, the decision (load_rules) and procs.h.
 *
 * Every TCP socket starts as a real kernel socket, "undecided", and is
 * recorded in an array indexed by fd.  At bind/listen/connect the rules
 * decide: the kernel (the entry is dropped and the fd is never looked at
 * again) or NUSE (a socketpair end is dup3'd over the fd and the socket
 * lives in the daemon).  Any other fd costs one array load per call.
 *
 * Choices PROTOCOL.md leaves open, made here:
 *  - Readiness byte: the daemon writes one byte per sig NONE->SET, so the
 *    shim reads exactly one byte per SET->NONE (waiting briefly if it is
 *    still in flight).  Draining more could eat the byte of a newer SET.
 *  - CLOSE is awaited like any command; listen() without bind() sends a
 *    BIND of the wildcard first; a bind done before the decision is replayed.
 *  - Options the daemon does not carry (ENOPROTOOPT at a known level) are
 *    accepted, as Linux would; SO_RCVTIMEO/SNDTIMEO/BINDTODEVICE stay here.
 *  - fork(): children share the session.  Control exchanges are serialized
 *    across processes (robust process-shared mutex) and a socket's CLOSE is
 *    sent by the last process that lets go of it (shared per-slot counts,
 *    raised at fork, lowered at close, exec and exit).
 *  - Every blocking wait re-checks in slices of at most 1 s and reminds the
 *    daemon of the socket after an idle slice: a lost event costs a slice.
 */
#include "nuse.h"

#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "decide.h"
#include "fdtab.h"
#include "inherit.h"
#include "procs.h"

__attribute__((constructor)) static void nuse_init(void)
{
	struct rlimit rl;
	const char *e;
	size_t max = 65536;
	void *p;

	resolve();
	g_mypid = getpid();
	e = getenv("NUSE_DEBUG");
	g_debug = e && *e && strcmp(e, "0");
	e = getenv("NUSE_SOCK");
	if (e && *e)
		g_sock_path = e;
	e = getenv("NUSE_DEV");
	if (e && *e && strlen(e) < sizeof(g_dev))
		strcpy(g_dev, e);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max != RLIM_INFINITY && rl.rlim_max > max)
		max = rl.rlim_max;
	if (max > (1u << 20))
		max = 1u << 20;
	p = table_map(max * sizeof(*g_tab), "fd table");
	if (!p) {
		say("nuse: cannot allocate the fd table; everything stays in the kernel");
		return;
	}
	g_tab = p;
	load_rules();
	pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
	g_tabmax = (int)max; /* from here on sockets are tracked */
	adopt_inherited();   /* listeners handed to this image (inherit.h) */
}

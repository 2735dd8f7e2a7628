/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fakedaemon - a control socket that answers every HELLO badly, to check
 * that the shim falls back to the kernel without breaking the program.
 *
 *   fakedaemon PATH refuse|version   (serves until killed)
 *
 * refuse:  NUSE_CTL_ERROR "ABI version N not supported (daemon speaks N+1)"
 * version: a HELLO_OK that says ABI version N+1, without an arena
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "../../shim/abi/nuse_abi.h"

int main(int argc, char **argv)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int l, refuse;

	if (argc != 3 || strlen(argv[1]) >= sizeof(sun.sun_path) ||
	    (strcmp(argv[2], "refuse") && strcmp(argv[2], "version"))) {
		fprintf(stderr, "usage: %s PATH refuse|version\n", argv[0]);
		return 2;
	}
	refuse = !strcmp(argv[2], "refuse");
	strcpy(sun.sun_path, argv[1]);
	unlink(argv[1]);
	l = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	if (l < 0 || bind(l, (struct sockaddr *)&sun, sizeof(sun)) < 0 || listen(l, 16) < 0) {
		perror("fakedaemon");
		return 1;
	}
	for (;;) {
		struct nuse_ctl_hello h;
		int c = accept(l, NULL, NULL);
		ssize_t n;

		if (c < 0) {
			if (errno == EINTR)
				continue;
			return 1;
		}
		n = recv(c, &h, sizeof(h), 0);
		if (n >= (ssize_t)sizeof(h.hdr)) {
			if (refuse) {
				struct nuse_ctl_reply r;

				memset(&r, 0, sizeof(r));
				r.hdr = h.hdr;
				r.hdr.version = NUSE_ABI_VERSION + 1;
				r.hdr.type = NUSE_CTL_ERROR;
				r.hdr.len = sizeof(r);
				r.result = -EPROTONOSUPPORT;
				snprintf(r.msg, sizeof(r.msg), "ABI version %u not supported (daemon speaks %u)",
					 h.hdr.version, NUSE_ABI_VERSION + 1);
				send(c, &r, sizeof(r), 0);
			} else {
				struct nuse_ctl_hello_ok ok;

				memset(&ok, 0, sizeof(ok));
				ok.hdr = h.hdr;
				ok.hdr.version = NUSE_ABI_VERSION + 1;
				ok.hdr.type = NUSE_CTL_HELLO_OK;
				ok.hdr.len = sizeof(ok);
				ok.arena_size = 4096;
				send(c, &ok, sizeof(ok), 0);
			}
		}
		close(c);
	}
}

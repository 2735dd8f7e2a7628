/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ix_handoff.c - interposers where a program hands a socket to code the
 * shim cannot see: fdopen (stdio reads and writes inside libc),
 * posix_spawn/posix_spawnp (the child execs inside libc, past the exec
 * interposers) and posix_spawn_file_actions_adddup2 (a socket made some fd
 * of the child).  Each relays the NUSE sockets concerned (relay.h) before
 * the real call.  sendmsg's SCM_RIGHTS and dup2 onto a standard stream are
 * seen by ix_data.c and ix_fd.c; exec by ix_exec.c.
 */
#include "nuse.h"

#include <dlfcn.h>
#include <spawn.h>
#include <stdio.h>

#include "execenv.h"
#include "fdtab.h"
#include "lazy.h"
#include "relay.h"

/* Not in R: these are called rarely, so each finds its real function on
 * first use. */
#define NEXT(var, name)                                          \
	do {                                                     \
		if (unlikely(!var))                              \
			*(void **)&var = dlsym(RTLD_NEXT, name); \
	} while (0)

EXPORT FILE *fdopen(int fd, const char *mode)
{
	static FILE *(*real)(int, const char *);
	struct nsock *s;

	NEXT(real, "fdopen");
	if (unlikely((s = fd_nuse(fd)) != NULL) && !in_vfork_child())
		relay_sock(s);
	return real(fd, mode);
}

EXPORT int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
		       const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
	static int (*real)(pid_t *, const char *, const posix_spawn_file_actions_t *, const posix_spawnattr_t *,
			   char *const[], char *const[]);

	char *const *env;

	NEXT(real, "posix_spawn");
	lazy_all_loud(); /* the child inherits our fds (lazy.h) */
	relay_for_exec(0);
	return WITH_NUSE_ENV(envp, env, real(pid, path, fa, attr, argv, env));
}

EXPORT int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
			const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
	static int (*real)(pid_t *, const char *, const posix_spawn_file_actions_t *, const posix_spawnattr_t *,
			   char *const[], char *const[]);

	char *const *env;

	NEXT(real, "posix_spawnp");
	lazy_all_loud();
	relay_for_exec(0);
	return WITH_NUSE_ENV(envp, env, real(pid, file, fa, attr, argv, env));
}

/* system(): libc spawns the shell itself, and the child inherits our fds
 * (lazy.h). */
EXPORT int system(const char *cmd)
{
	static int (*real)(const char *);

	NEXT(real, "system");
	if (cmd)
		lazy_all_loud();
	return real(cmd);
}

EXPORT int posix_spawn_file_actions_adddup2(posix_spawn_file_actions_t *fa, int fd, int nfd)
{
	static int (*real)(posix_spawn_file_actions_t *, int, int);
	struct nsock *s;

	NEXT(real, "posix_spawn_file_actions_adddup2");
	/* The child will hold the socket as nfd, even if fd is close-on-exec. */
	if (unlikely((s = fd_nuse(fd)) != NULL) && !in_vfork_child())
		relay_sock(s);
	return real(fa, fd, nfd);
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ix_exec.c - the exec interposers: execve, execv, execvpe, execvp,
 * fexecve and execl/execle/execlp.  Around the real call they lower and,
 * if the exec fails, restore this process's counts on the sockets other
 * processes share (exec_prepare/exec_failed, procs.h), and keep NUSE's
 * variables in the new image's environment (execenv.h).
 */
#include "nuse.h"

#include <stdarg.h>

#include "execenv.h"
#include "procs.h"

extern char **environ;

EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
	char *const *env;
	int p, r;

	REAL(execve);
	p = exec_prepare();
	r = WITH_NUSE_ENV(envp, env, R.execve(path, argv, env));
	exec_failed(p);
	return r;
}

EXPORT int execv(const char *path, char *const argv[])
{
	return execve(path, argv, environ);
}

EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
	char *const *env;
	int p, r;

	REAL(execvpe);
	p = exec_prepare();
	r = WITH_NUSE_ENV(envp, env, R.execvpe(file, argv, env));
	exec_failed(p);
	return r;
}

EXPORT int execvp(const char *file, char *const argv[])
{
	return execvpe(file, argv, environ);
}

EXPORT int fexecve(int fd, char *const argv[], char *const envp[])
{
	char *const *env;
	int p, r;

	REAL(fexecve);
	p = exec_prepare();
	r = WITH_NUSE_ENV(envp, env, R.fexecve(fd, argv, env));
	exec_failed(p);
	return r;
}

#define EXEC_MAX_ARGS 65536

/*
 * execl*(): glibc's versions call execve internally, past our interposer.
 * The argument vector lives on the stack, sized by a first pass (no static
 * TLS: every thread of the program would carry it).
 */
static int count_args(const char *arg, va_list ap)
{
	va_list aq;
	int n = 1;

	va_copy(aq, ap);
	while (arg && n <= EXEC_MAX_ARGS) {
		arg = va_arg(aq, const char *);
		n++;
	}
	va_end(aq);
	return n; /* including the terminating NULL */
}

static void fill_args(const char *arg, va_list ap, char **argv, int n, char ***envp)
{
	int i = 0;

	argv[i++] = (char *)arg;
	while (arg && i < n) {
		arg = va_arg(ap, const char *);
		argv[i++] = (char *)arg;
	}
	argv[n - 1] = NULL;
	if (envp)
		*envp = va_arg(ap, char **);
}

#define EXECL_BODY(call, want_envp)                                 \
	va_list ap;                                                 \
	char **envp = environ;                                      \
	int n;                                                      \
                                                                    \
	va_start(ap, arg);                                          \
	n = count_args(arg, ap);                                    \
	if (n > EXEC_MAX_ARGS) {                                    \
		va_end(ap);                                         \
		errno = E2BIG;                                      \
		return -1;                                          \
	}                                                           \
	{                                                           \
		char *argv[n];                                      \
                                                                    \
		fill_args(arg, ap, argv, n, want_envp ? &envp : NULL); \
		va_end(ap);                                         \
		return call;                                        \
	}

EXPORT int execl(const char *path, const char *arg, ...)
{
	EXECL_BODY(execve(path, argv, envp), 0)
}

EXPORT int execle(const char *path, const char *arg, ...)
{
	EXECL_BODY(execve(path, argv, envp), 1)
}

EXPORT int execlp(const char *file, const char *arg, ...)
{
	EXECL_BODY(execvpe(file, argv, envp), 0)
}

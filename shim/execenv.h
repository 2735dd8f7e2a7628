/* SPDX-License-Identifier: Apache-2.0 */
/*
 * execenv.h - NUSE's environment across exec: a program that execs with
 * an environment of its own making (nginx's upgrade keeps only TZ and
 * NGINX, daemons that sanitise theirs) would drop LD_PRELOAD and the
 * NUSE_* settings, and the new image, its sockets and any listener it
 * inherits would leave NUSE.  The exec interposers put back the ones
 * envp lacks and this process still has.  Implemented by execenv.c; it
 * calls only libc.
 */
#ifndef NUSE_EXECENV_H
#define NUSE_EXECENV_H

#pragma GCC visibility push(hidden)

/* How many of LD_PRELOAD and NUSE_* envp lacks that this process has;
 * *n gets envp's length.  0: pass envp as it is. */
int env_missing(char *const envp[], int *n);

/* out (n + missing + 1 entries): envp, then the missing ones, NULL. */
void env_fill(char *const envp[], int n, char **out);

/* Runs call with env (an lvalue) set to envp, or to envp with NUSE's
 * variables put back, on the stack (safe in a vfork child). */
#define WITH_NUSE_ENV(envp, env, call)                          \
	({                                                      \
		int n_, m_ = env_missing((envp), &n_);          \
		__typeof__(call) r_;                            \
		if (!m_) {                                      \
			env = (char *const *)(envp);            \
			r_ = (call);                            \
		} else {                                        \
			char *e_[n_ + m_ + 1];                  \
			env_fill((envp), n_, e_);               \
			env = e_;                               \
			r_ = (call);                            \
		}                                               \
		r_;                                             \
	})

#pragma GCC visibility pop

#endif /* NUSE_EXECENV_H */

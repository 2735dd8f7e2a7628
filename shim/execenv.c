/* SPDX-License-Identifier: Apache-2.0 */
/*
 * execenv.c - NUSE's environment across exec (execenv.h).  Only a
 * variable this process still has is put back: a program that unset it
 * itself (`env -u LD_PRELOAD`, `env -i`) meant the new image to leave
 * NUSE, one that built a fresh envp (nginx) did not think of it.  No
 * allocation: it runs in vfork children.
 */
#include "execenv.h"

#include <stddef.h>
#include <string.h>

extern char **environ;

#define ENV_MAX 65536 /* entries of an envp we look through */

static const char *const names[] = {"LD_PRELOAD", "NUSE_SOCK", "NUSE_RULES", "NUSE_RULES_FILE", "NUSE_DEV",
				     "NUSE_DEBUG"};
#define NNAMES (sizeof(names) / sizeof(names[0]))

/* envp's entry for name (envp has n entries), or NULL. */
static char *find(char *const envp[], int n, const char *name)
{
	size_t l = strlen(name);
	int i;

	for (i = 0; envp && i < n && envp[i]; i++)
		if (!strncmp(envp[i], name, l) && envp[i][l] == '=')
			return envp[i];
	return NULL;
}

int env_missing(char *const envp[], int *n)
{
	size_t i;
	int m = 0;

	*n = 0;
	if (!envp || envp == environ)
		return 0;
	while (*n < ENV_MAX && envp[*n])
		(*n)++;
	if (*n == ENV_MAX)
		return 0;
	for (i = 0; i < NNAMES; i++)
		if (!find(envp, *n, names[i]) && find(environ, ENV_MAX, names[i]))
			m++;
	return m;
}

void env_fill(char *const envp[], int n, char **out)
{
	size_t i;
	int k = n;

	memcpy(out, envp, (size_t)n * sizeof(*out));
	for (i = 0; i < NNAMES; i++) {
		char *v;

		if (!find(envp, n, names[i]) && (v = find(environ, ENV_MAX, names[i])) != NULL)
			out[k++] = v;
	}
	out[k] = NULL;
}

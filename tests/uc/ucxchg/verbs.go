//go:build verbs

package main

// Built with -tags verbs for the guest (needs libibverbs at run time).
import _ "github.com/nuse-project/nuse/uc/verbs"

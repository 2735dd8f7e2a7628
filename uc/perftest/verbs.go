//go:build verbs

package perftest

// Built with -tags verbs, the tool (and nuse) links libibverbs; without it
// the binary has no libibverbs dependency and offers --backend soft only.
import _ "github.com/nuse-project/nuse/uc/verbs"

// Command shim is built with -buildmode=c-shared into libnuse.so, the
// LD_PRELOAD library. All of it is C (every .c file in this directory; see
// README.md for which does what); Go does nothing on any call path: this
// file only makes cgo build the C files into a library. cgo compiles the
// .c files of this directory only, so the shim's C files stay flat here.
//
// The strict warning flags live here, not in CGO_CFLAGS, because CGO_CFLAGS
// also reaches runtime/cgo, which does not build with -Wextra -Werror.
package main

/*
#cgo CFLAGS: -O2 -g -Wall -Wextra -Werror -fvisibility=hidden
*/
import "C"

func main() {}

// Command shim is built with -buildmode=c-shared into libnuse.so, the
// LD_PRELOAD library. All of it is C (nuse.c, rules.c); Go does nothing on
// any call path: this file only makes cgo build the C files into a library.
//
// The strict warning flags live here, not in CGO_CFLAGS, because CGO_CFLAGS
// also reaches runtime/cgo, which does not build with -Wextra -Werror.
package main

/*
#cgo CFLAGS: -O2 -g -Wall -Wextra -Werror -fvisibility=hidden
*/
import "C"

func main() {}

//go:build race

package racesync

import (
	"runtime"
	"unsafe"
)

// Release marks a handover of everything written so far.
func (t *Token) Release() { runtime.RaceReleaseMerge(unsafe.Pointer(t)) }

// Acquire marks taking over what was handed over.
func (t *Token) Acquire() { runtime.RaceAcquire(unsafe.Pointer(t)) }

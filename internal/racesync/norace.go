//go:build !race

package racesync

// Release marks a handover of everything written so far.
func (t *Token) Release() {}

// Acquire marks taking over what was handed over.
func (t *Token) Acquire() {}

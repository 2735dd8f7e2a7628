// Package racesync tells the race detector about happens-before edges it
// cannot see: data handed over through memory shared with another mapping
// (rings in a memfd) or carried by the kernel (raw sockets). Go's own file
// descriptors do the same for reads and writes. Without -race it is empty.
package racesync

// A Token is one handover point: Release where data is handed over,
// Acquire where it is taken.
type Token struct{ _ byte }

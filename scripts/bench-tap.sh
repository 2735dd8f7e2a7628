#!/bin/bash
# TAP netdev benchmark: a kernel TCP client against a gVisor (netstack)
# server over the TAP, side by side with the same client against a kernel
# server across a veth pair; 64-byte ping-pong RTT and bulk throughput, with
# ratios. Needs root; works in its own network namespaces (nuseg-*), which it
# removes afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
	echo "bench-tap: needs root (it creates network namespaces and a TAP device)" >&2
	exit 1
fi
NUSE_TAP_BENCH=1 go test -count=1 -run '^TestTAPBench$' -v ./stack/link/tap/ | sed -n '/ping-pong/,/gVisor client/p'
echo
echo "stack-internal (two sockets in one gVisor engine, driven through stack.Socket + Notify):"
go test -run '^$' -bench 'PingPong64|Bulk' -benchtime 2s ./stack/gvisor/ | grep -E '^Benchmark'

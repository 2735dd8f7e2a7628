#!/usr/bin/env bash
# Soft backend benchmarks on the host: nuse perf uc-write-lat / uc-write-bw
# between two processes on loopback (127.0.0.1 <-> 127.0.0.2, path MTU
# 4096), polling and sleeping on completions, each native and with the
# client going through a NUSE daemon (uc/proxy), side by side. Bounded:
# every run has a timeout and a fixed iteration count. Needs root (raw
# sockets). Usage: scripts/uc/bench-host.sh [nuse]
set -euo pipefail
cd "$(dirname "$0")/../.."
NUSE=${1:-bin/nuse}
[[ -x $NUSE ]] || { echo "build $NUSE first (make build)"; exit 1; }
D=$(mktemp -d /tmp/nuse-ucbench.XXXXXX)
$NUSE daemon --netdev none --sock $D/nused.sock -q &
DPID=$!
trap 'kill $DPID 2>/dev/null; wait $DPID 2>/dev/null; rm -rf $D' EXIT
for _ in $(seq 100); do [[ -S $D/nused.sock ]] && break; sleep 0.1; done
pair() { # mode, args... ; prints the native row, then the via-daemon row
	local mode=$1; shift
	local via
	for via in "" "--via-daemon --sock $D/nused.sock"; do
		timeout 120 $NUSE perf "$mode" --local 127.0.0.1 -p 18600 "$@" >/dev/null 2>&1 &
		local sp=$!
		sleep 0.3
		# shellcheck disable=SC2086
		timeout 120 $NUSE perf "$mode" --local 127.0.0.2 -p 18600 "$@" $via 127.0.0.1 | grep -E '^ [0-9]' |
			sed "s/\$/   ${via:+(via daemon)}/"
		wait $sp || true
	done
}
echo "# soft backend, loopback, latency (polling) -- ib_write_lat columns"
echo " #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]    t_avg[usec]    t_stdev[usec]   99% percentile[usec]   99.9% percentile[usec]"
for s in 2 64 1024 4096 65536; do pair uc-write-lat -m 4096 -s $s -n 5000; done
echo "# soft backend, loopback, latency (-e: sleep on completion events)"
for s in 2 64 1024 4096 65536; do pair uc-write-lat -e -m 4096 -s $s -n 5000; done
echo "# soft backend, loopback, bandwidth and message rate -- ib_write_bw columns"
echo " #bytes     #iterations    BW peak[MB/sec]    BW average[MB/sec]   MsgRate[Mpps]"
for s in 2 64 1024 4096 65536 1048576; do
	n=200000; ((s >= 65536)) && n=$((2000000000 / s / 4))
	pair uc-write-bw -m 4096 -s $s -n $n
done

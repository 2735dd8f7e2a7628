#!/usr/bin/env bash
# make demo: an unmodified server/client pair through NUSE, next to the same
# pair over the kernel, then perftest-style tables (kernel vs NUSE) and what
# `nuse stats` saw. Everything runs inside a network namespace this script
# creates (no default route), and is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/bin
SIZE_MB=${DEMO_SIZE_MB:-50}
REPS=${DEMO_REPS:-3} # transfers per path: the median is shown
for v in "$SIZE_MB" "$REPS"; do
	[[ $v =~ ^[0-9]+$ ]] && ((v > 0 && v <= 4096)) || { echo "demo: DEMO_SIZE_MB and DEMO_REPS: 1 to 4096, not '$v'" >&2; exit 2; }
done

if [ "$(id -u)" != 0 ]; then
	echo "demo: needs root for a network namespace and a TAP device (try: sudo make demo)" >&2
	exit 1
fi
for t in python3 curl ip; do
	command -v $t >/dev/null || { echo "demo: $t is not installed (apt-get install $t)" >&2; exit 1; }
done

NS=nuse-demo-$$
WORK=$(mktemp -d /tmp/nuse-demo.XXXXXX)
SOCK=$WORK/nused.sock
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	ip netns del "$NS" 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up
in_ns() { ip netns exec "$NS" "$@"; }

echo "== NUSE demo (namespace $NS, no route out) =="
# Background programs are started with ip netns exec directly (it execs
# them), so $! is the program's own PID and cleanup can stop it.
ip netns exec "$NS" "$BIN/nuse" daemon --sock "$SOCK" >"$WORK/daemon.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
sed 's/^/  /' "$WORK/daemon.log"

mkdir -p "$WORK/www"
head -c $((SIZE_MB << 20)) /dev/urandom >"$WORK/www/blob"
WANT=$(sha256sum <"$WORK/www/blob" | cut -d' ' -f1)
RULES="tcp 10.77.0.0/16"

# Kernel pair: server on the kernel's address of nuse0, kernel curl.
ip netns exec "$NS" python3 -m http.server --bind 10.77.0.1 8001 --directory "$WORK/www" >/dev/null 2>&1 &
PIDS+=($!)
# NUSE pair: the same two programs, preloaded; the server lives in NUSE.
ip netns exec "$NS" "$BIN/nuse" run --sock "$SOCK" --rules "$RULES" -- python3 -m http.server --bind 10.77.0.2 8002 --directory "$WORK/www" >/dev/null 2>&1 &
PIDS+=($!)
for port in 8001 8002; do
	host=10.77.0.1; [ $port = 8002 ] && host=10.77.0.2
	for _ in $(seq 100); do in_ns curl -s -o /dev/null --max-time 1 http://$host:$port/ && break; sleep 0.1; done
done

fetch() { # label, curl prefix..., url: the median of REPS transfers, each checked
	local label=$1; shift
	local out runs=() ok=ok i got
	for ((i = 0; i < REPS; i++)); do
		out=$(in_ns "$@" -sS -o "$WORK/got" -w '%{time_total} %{speed_download}' 2>&1)
		got=$(sha256sum <"$WORK/got" | cut -d' ' -f1)
		[ "$got" = "$WANT" ] || ok=CORRUPT
		runs+=("$out")
	done
	# by speed; the middle one
	out=$(printf '%s\n' "${runs[@]}" | sort -g -k2 | sed -n "$(((REPS + 1) / 2))p")
	awk -v l="$label" -v o="$out" -v s=$SIZE_MB -v k=$ok 'BEGIN{split(o,a," "); printf " %-34s %6d %10.3f %12.1f   %s\n", l, s, a[1], a[2]/1048576, k}'
}
echo
echo "== unmodified python3 http.server + curl, ${SIZE_MB} MiB file (sha256 checked), median of $REPS transfers =="
printf " %-34s %6s %10s %12s   %s\n" "path" "MiB" "seconds" "MiB/s" "sha256"
K=$(fetch "kernel: curl -> kernel server" curl http://10.77.0.1:8001/blob)
N=$(fetch "nuse:   curl -> nuse server" "$BIN/nuse" run --sock "$SOCK" --rules "$RULES" -- curl http://10.77.0.2:8002/blob)
printf '%s\n%s\n' "$K" "$N"
fetch "mixed:  kernel curl -> nuse server" curl http://10.77.0.2:8002/blob
fetch "mixed:  nuse curl -> kernel server" "$BIN/nuse" run --sock "$SOCK" --rules "$RULES" -- curl http://10.77.0.1:8001/blob
awk -v k="$(echo "$K" | awk '{print $(NF-1)}')" -v n="$(echo "$N" | awk '{print $(NF-1)}')" \
	'BEGIN { if (k > 0) printf " ratio  MiB/s nuse/kernel = %.2fx\n", n / k }'

echo
echo "== nuse stats (the sessions above; per-socket rows show the bytes went through NUSE) =="
"$BIN/nuse" stats --sock "$SOCK"

echo
echo "== TCP latency, perftest columns: the same unmodified tcpperf over kernel loopback and through NUSE =="
in_ns "$BIN/nuse" perf tcp-lat -s 64 -n 2000 -r 2 -sock "$SOCK" 2>/dev/null
in_ns "$BIN/nuse" perf tcp-lat -s 4096 -n 1000 -sock "$SOCK" 2>/dev/null | tail -3
echo
echo "== TCP message rate: 64 B send() calls (NUSE copies into the shared ring, no system call) =="
in_ns "$BIN/nuse" perf tcp-rate -s 64 -n 300000 -sock "$SOCK" 2>/dev/null
echo
echo "== the floor: shim<->daemon command round trip next to a cache line bounced between the two cores =="
in_ns "$BIN/nuse" perf ring-lat -n 100000 2>/dev/null
echo
echo "(one run on a shared, noisy 2-vCPU machine: read the ratios, not the absolute figures)"

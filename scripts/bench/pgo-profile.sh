#!/usr/bin/env bash
# Regenerates cmd/nuse/default.pgo, the CPU profile that `go build`
# uses for profile-guided optimization of nuse (Go's -pgo=auto: a
# default.pgo in the main package's directory). The daemon runs the
# workloads whose per-request cost matters, each under `nuse daemon
# --cpuprofile`, inside a network namespace this script creates (loopback
# and the daemon's own TAP, no route out) and removes at the end:
#   gvisor engine, both ends under NUSE: redis-benchmark GET and SET
#     against redis-server; wrk -c 32 against nginx (2 workers), 4 KiB
#   gvisor engine, a NUSE client of kernel servers through the TAP: the
#     same redis-benchmark GET and wrk
#   kernel engine, both ends under NUSE: redis-benchmark GET
# and the profiles are merged (go tool pprof -proto). Then `make build`
# and compare the builds with scripts/bench/instr.sh -b DIR (instructions
# per request) and scripts/bench/ab-daemons.sh (req/s, side by side).
#
# Usage: scripts/bench/pgo-profile.sh [-n REDIS_REQUESTS] [-d WRK_SECONDS] [-o FILE]
#   (defaults: -n 200000 -d 8 -o cmd/nuse/default.pgo)
# Needs root, redis-server/redis-benchmark, nginx, wrk, and `make build`.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=$PWD/bin N=200000 D=8 OUT=$PWD/cmd/nuse/default.pgo
while getopts "n:d:o:h" o; do
	case $o in
	n) N=$OPTARG ;; d) D=$OPTARG ;; o) OUT=$OPTARG ;;
	*) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
	esac
done
[[ $N =~ ^[0-9]+$ ]] && ((N > 0 && N <= 10000000)) || { echo "pgo-profile: bad -n $N" >&2; exit 2; }
[[ $D =~ ^[0-9]+$ ]] && ((D > 0 && D <= 60)) || { echo "pgo-profile: -d from 1 to 60" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "pgo-profile: needs root for a network namespace and a TAP" >&2; exit 1; }
for t in redis-server redis-benchmark nginx wrk go; do
	command -v $t >/dev/null || { echo "pgo-profile: $t not installed" >&2; exit 1; }
done
for b in nuse libnuse.so; do [[ -e $BIN/$b ]] || { echo "pgo-profile: $BIN/$b missing (make build)" >&2; exit 1; }; done

. scripts/benchlib.sh
private_netns nuse-pgo
chmod 755 "$WORK" # nginx's workers run as www-data
mkdir -p "$WORK/www" "$WORK/ng"
chmod 755 "$WORK/www"
head -c 4096 /dev/urandom >"$WORK/www/4k.bin"
chmod 644 "$WORK/www/4k.bin"
in_ns() { ip netns exec "$NS" "$@"; }

# daemon NAME FLAGS...: starts a profiled daemon (DPID, SOCK).
daemon() {
	local name=$1
	shift
	SOCK=$WORK/$name.sock
	# ip netns exec execs the program, so $! is the daemon's own PID.
	ip netns exec "$NS" "$BIN/nuse" daemon --sock "$SOCK" -q --cpuprofile "$WORK/$name.pprof" "$@" >"$WORK/$name.log" 2>&1 &
	DPID=$!
	PIDS+=("$DPID")
	for _ in $(seq 100); do [[ -S $SOCK ]] && break; sleep 0.1; done
	[[ -S $SOCK ]] || { echo "pgo-profile: daemon $name did not start:"; cat "$WORK/$name.log"; exit 1; }
}

# stop: the daemon writes its profile as it exits.
stop() {
	kill -INT "$DPID"
	wait "$DPID" || true
	[[ -s $WORK/$1.pprof ]] || { echo "pgo-profile: daemon $1 wrote no profile:"; cat "$WORK/$1.log"; exit 1; }
	PROFS+=("$WORK/$1.pprof")
}

# serve ADDR PORT WHO...: redis-server and nginx on ADDR, run by WHO
# (nothing: the kernel; else the nuse run prefix; WHO also checks they
# listen); sets SRV.
serve() {
	local addr=$1 port=$2
	shift 2
	in_ns "$@" redis-server --port "$port" --bind "$addr" --save "" --appendonly no --protected-mode no >/dev/null 2>&1 &
	SRV=($!)
	nginx_conf "$WORK/ng" $((port + 1)) "$WORK/www" 4096 "$addr"
	in_ns "$@" nginx -c "$WORK/ng/$((port + 1)).conf" >/dev/null 2>&1 &
	SRV+=($!)
	PIDS+=("${SRV[@]}")
	for _ in $(seq 50); do
		in_ns "$@" timeout 1 bash -c "exec 3<>/dev/tcp/$addr/$port && exec 4<>/dev/tcp/$addr/$((port + 1))" 2>/dev/null && return
		sleep 0.1
	done
	echo "pgo-profile: the servers on $addr did not come up" >&2
	exit 1
}

unserve() {
	kill "${SRV[@]}" 2>/dev/null || true
	wait "${SRV[@]}" 2>/dev/null || true
}

# load ADDR PORT TESTS WRK WHO...: redis-benchmark (TESTS) and, if WRK,
# wrk, under WHO.
load() {
	local addr=$1 port=$2 tests=$3 wrk=$4
	shift 4
	in_ns "$@" redis-benchmark -h "$addr" -p "$port" -c 20 -n "$N" -t "$tests" -q 2>&1 | tr '\r' '\n' | grep -a "per second" | sed 's/^/    /'
	if [[ $wrk == 1 ]]; then
		in_ns "$@" wrk -t 2 -c 32 -d "${D}s" "http://$addr:$((port + 1))/4k.bin" 2>&1 | grep -E "Requests/sec|errors" | sed 's/^/    /'
	fi
}

PROFS=()
echo "== pgo-profile: gvisor engine, both ends under NUSE"
daemon loop --netdev none --engine gvisor
run=("$BIN/nuse" run --sock "$SOCK" --rules "tcp 127.0.0.0/8" --)
serve 127.0.0.1 17100 "${run[@]}"
load 127.0.0.1 17100 get,set 1 "${run[@]}"
unserve
stop loop

echo "== pgo-profile: gvisor engine, a NUSE client of kernel servers through the TAP"
daemon tap --netdev tap --engine gvisor
# The kernel's side of the TAP is 10.77.0.1; the stack is 10.77.0.2.
serve 10.77.0.1 17200
load 10.77.0.1 17200 get 1 "$BIN/nuse" run --sock "$SOCK" --rules "tcp 10.77.0.0/16" --
unserve
stop tap

echo "== pgo-profile: kernel engine, both ends under NUSE"
daemon kern --netdev none --engine kernel
run=("$BIN/nuse" run --sock "$SOCK" --rules "tcp 127.0.0.0/8" --)
serve 127.0.0.1 17300 "${run[@]}"
load 127.0.0.1 17300 get 0 "${run[@]}"
unserve
stop kern

go tool pprof -proto "${PROFS[@]}" >"$WORK/merged.pgo" 2>/dev/null
mv "$WORK/merged.pgo" "$OUT"
echo "pgo-profile: wrote $OUT ($(stat -c %s "$OUT") bytes, from ${#PROFS[@]} profiles); now make build"

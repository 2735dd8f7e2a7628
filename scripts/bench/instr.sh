#!/usr/bin/env bash
# Instructions the daemon executes per request, under callgrind: a measure
# of NUSE's per-request cost that the machine's noise does not move (runs
# repeat within a few percent, where req/s on these shared VMs swing by
# half). The workload is redis-benchmark GET against redis-server, both
# under `nuse run` (rules claiming loopback), in a network namespace this
# script creates and removes. The daemon runs under valgrind with no
# spinning (--spin 0s --spin-max 0s --shim-spin 0s: a spin loop counts whatever
# instructions the timing gives it); its counters are zeroed before each
# repetition and dumped after it (callgrind_control), and the dump's total
# over the requests is the figure. Compare builds or flags with the same
# -n/-c, side by side, as ratios.
#
# Caveats: valgrind runs one thread at a time (GOMAXPROCS effects do not
# show), and does not know futex_waitv, so each session gets a worker of
# its own (the daemon's fallback for kernels before 5.16).
#
# Usage: scripts/bench/instr.sh [-n REQUESTS] [-c CLIENTS] [-r REPS] [-k 0|1]
#          [-e ENGINE] [-a "DAEMON FLAGS"] [-b BIN_DIR] [-o FILE]
#   -k 0: a connection per request (redis-benchmark -k 0): what a
#   connection's setup and teardown cost, with its GET.
#   -o FILE keeps the callgrind dump of the last repetition (for
#   callgrind_annotate).
# Needs root, valgrind, redis-server and redis-benchmark, and `make build`.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=2000 C=1 REPS=3 ENGINE=gvisor DARGS="" BIN=$PWD/bin OUT="" KEEP=1
while getopts "n:c:r:k:e:a:b:o:h" o; do
	case $o in
	n) N=$OPTARG ;; c) C=$OPTARG ;; r) REPS=$OPTARG ;; k) KEEP=$OPTARG ;; e) ENGINE=$OPTARG ;;
	a) DARGS=$OPTARG ;; b) BIN=$(cd "$OPTARG" && pwd) ;; o) OUT=$OPTARG ;;
	*) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
	esac
done
for v in "$N" "$C" "$REPS"; do
	[[ $v =~ ^[0-9]+$ ]] && ((v > 0 && v <= 100000)) || { echo "instr: bad count $v" >&2; exit 2; }
done
((REPS <= 10)) || { echo "instr: -r at most 10" >&2; exit 2; }
[[ $KEEP == 0 || $KEEP == 1 ]] || { echo "instr: -k 0 (a connection per request) or 1 (keep-alive), not $KEEP" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "instr: needs root for a network namespace" >&2; exit 1; }
for t in valgrind callgrind_control redis-server redis-benchmark; do
	command -v $t >/dev/null || { echo "instr: $t not installed (apt-get install valgrind redis-server redis-tools)" >&2; exit 1; }
done
for b in nuse libnuse.so; do [[ -e $BIN/$b ]] || { echo "instr: $BIN/$b missing (make build)" >&2; exit 1; }; done

. scripts/benchlib.sh
private_netns nuse-instr
SOCK=$WORK/nused.sock
CG=$WORK/callgrind.out
in_ns() { ip netns exec "$NS" "$@"; }
nuse() { in_ns "$BIN/nuse" run --sock "$SOCK" --rules "tcp 127.0.0.0/8" -- "$@"; }

# Go's asynchronous preemption signals are noise under valgrind. ip netns
# exec execs the command, so $! is valgrind's own PID.
# shellcheck disable=SC2086
ip netns exec "$NS" env GODEBUG=asyncpreemptoff=1 valgrind --tool=callgrind --callgrind-out-file="$CG" \
	"$BIN/nuse" daemon --sock "$SOCK" --netdev none --engine "$ENGINE" -q --spin 0s --spin-max 0s --shim-spin 0s $DARGS \
	>"$WORK/daemon.log" 2>&1 &
VPID=$!
PIDS+=("$VPID")
for _ in $(seq 200); do [[ -S $SOCK ]] && break; sleep 0.2; done
[[ -S $SOCK ]] || { echo "instr: the daemon did not start under valgrind:"; tail -5 "$WORK/daemon.log"; exit 1; }
nuse redis-server --port 16390 --bind 127.0.0.1 --save "" --appendonly no --protected-mode no >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
	nuse redis-cli -p 16390 ping 2>/dev/null | grep -q PONG && break
	sleep 0.2
done
# Warm up: sessions, connections and the engine's first allocations.
nuse redis-benchmark -p 16390 -c "$C" -n 200 -t get -k "$KEEP" -q >/dev/null 2>&1

echo "== instructions per request in the daemon (callgrind), redis GET -c $C -n $N -k $KEEP, engine $ENGINE${DARGS:+, daemon $DARGS} =="
figs=()
for r in $(seq "$REPS"); do
	callgrind_control -z "$VPID" >/dev/null 2>&1
	out=$(nuse timeout 600 redis-benchmark -p 16390 -c "$C" -n "$N" -t get -k "$KEEP" -q 2>&1 | tr '\r' '\n' | grep 'GET:' | tail -1)
	callgrind_control -d "$VPID" >/dev/null 2>&1
	dump=$(ls -t "$CG".* | head -1)
	ir=$(awk '/^summary:/ {print $2}' "$dump")
	[[ -n $ir && -n $out ]] || { echo "instr: repetition $r gave no figure (${out:-no benchmark output})" >&2; exit 1; }
	f=$(awk -v i="$ir" -v n="$N" 'BEGIN{printf "%.0f", i / n}')
	figs+=("$f")
	echo "  rep $r: $f instructions/request ($ir in all; under valgrind: $out)"
	[[ -n $OUT ]] && cp "$dump" "$OUT"
done
median=$(printf '%s\n' "${figs[@]}" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
echo "median: $median instructions/request"

#!/usr/bin/env bash
# The shared memory NUSE's rings hold, and what bulk transfers gain from
# them, side by side for daemon variants, in a network namespace this
# script creates (loopback only, no route) and removes at the end:
#   mem   redis-server and redis-benchmark -c 20 -n N -d 1000 (SET, GET),
#         both under `nuse run`; the daemon's memfds (every session's
#         arena) right after the run, before the client's freed slots go
#   http  python3 http.server + curl, both under `nuse run`, a 50 MiB
#         file fetched R times, next to the same pair on the kernel:
#         MiB/s each and the median NUSE/kernel ratio
#
# Usage: scripts/bench/ring-mem.sh [-n N] [-r R] NAME=DIR[:FLAGS] ...
#   NAME=DIR[:FLAGS]   a variant: DIR holds nuse and libnuse.so, FLAGS go
#                      to its daemon (e.g. new=bin small=bin:"--ring 262144")
# Needs root, redis-server/redis-benchmark, python3, curl.
set -uo pipefail
N=200000 R=3
while getopts "n:r:h" o; do
	case $o in
	n) N=$OPTARG ;; r) R=$OPTARG ;;
	*) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[[ $N =~ ^[0-9]+$ && $R =~ ^[0-9]+$ ]] && ((N > 0 && N <= 10000000 && R > 0 && R <= 20)) ||
	{ echo "ring-mem: -n 1..10000000, -r 1..20" >&2; exit 2; }
(($# > 0)) || { echo "ring-mem: name at least one variant NAME=DIR[:FLAGS]" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "ring-mem: needs root for a network namespace" >&2; exit 1; }
for t in redis-server redis-benchmark python3 curl; do
	command -v $t >/dev/null || { echo "ring-mem: $t is not installed" >&2; exit 1; }
done

. "$(dirname "$0")/../benchlib.sh"
private_netns nuse-ringmem
# Background programs start with ip netns exec itself (it execs them), so
# that $! is the program and it can be stopped by its PID.
in_ns() { ip netns exec "$NS" "$@"; }
RULES="tcp 127.0.0.0/8"
mkdir -p "$WORK/www"
head -c $((50 << 20)) /dev/urandom >"$WORK/www/blob"

# shm_kib PID: KiB the memfds open in process PID hold
shm_kib() {
	local t=0 f
	for f in /proc/$1/fd/*; do
		case $(readlink "$f") in *memfd*) t=$((t + $(stat -L -c %b "$f") * 512)) ;; esac
	done
	echo $((t >> 10))
}

stop() { kill "$1" 2>/dev/null; wait "$1" 2>/dev/null; }

port=17800
for v in "$@"; do
	name=${v%%=*} rest=${v#*=}
	dir=${rest%%:*} flags=""
	[[ $rest == *:* ]] && flags=${rest#*:}
	[[ -x $dir/nuse && -f $dir/libnuse.so ]] || { echo "ring-mem: $dir lacks nuse or libnuse.so" >&2; exit 1; }
	dir=$(cd "$dir" && pwd)
	sock=$WORK/$name.sock
	# shellcheck disable=SC2086
	ip netns exec "$NS" "$dir/nuse" daemon --sock "$sock" --netdev none -q $flags >"$WORK/$name.log" 2>&1 &
	dp=$!
	PIDS+=($dp)
	for _ in $(seq 100); do [[ -S $sock ]] && break; sleep 0.1; done
	run=("$dir/nuse" run --sock "$sock" --rules "$RULES" --)

	port=$((port + 1))
	ip netns exec "$NS" "${run[@]}" redis-server --port $port --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 &
	rp=$!
	PIDS+=($rp)
	for _ in $(seq 100); do in_ns "${run[@]}" redis-cli -p $port ping >/dev/null 2>&1 && break; sleep 0.1; done
	in_ns "${run[@]}" redis-benchmark -p $port -c 20 -n "$N" -d 1000 -t set,get -q >/dev/null 2>&1
	echo "$name: redis-benchmark -c 20 -n $N -d 1000 done: the daemon's memfds hold $(shm_kib $dp) KiB"
	stop $rp

	port=$((port + 1))
	ip netns exec "$NS" python3 -m http.server --bind 127.0.0.1 $port --directory "$WORK/www" >/dev/null 2>&1 &
	kp=$!
	port=$((port + 1))
	ip netns exec "$NS" "${run[@]}" python3 -m http.server --bind 127.0.0.1 $port --directory "$WORK/www" >/dev/null 2>&1 &
	np=$!
	PIDS+=($kp $np)
	for p in $((port - 1)) $port; do
		for _ in $(seq 100); do in_ns curl -s -o /dev/null --max-time 1 http://127.0.0.1:$p/ && break; sleep 0.1; done
	done
	ratios=()
	for i in $(seq "$R"); do
		k=$(in_ns curl -s -o /dev/null -w '%{speed_download}' http://127.0.0.1:$((port - 1))/blob)
		n=$(in_ns "${run[@]}" curl -s -o /dev/null -w '%{speed_download}' http://127.0.0.1:$port/blob)
		r=$(awk -v k="$k" -v n="$n" 'BEGIN{printf "%.2f", (k > 0 ? n / k : 0)}')
		ratios+=("$r")
		awk -v l="$name" -v i="$i" -v k="$k" -v n="$n" -v r="$r" \
			'BEGIN{printf "%s: fetch %d  kernel %7.0f MiB/s  nuse %7.0f MiB/s  nuse/kernel %sx\n", l, i, k/1048576, n/1048576, r}'
	done
	echo "$name: median nuse/kernel $(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')x"
	stop $kp
	stop $np
	stop $dp
done
echo "(one run on a shared machine: compare variants within it, not across runs)"

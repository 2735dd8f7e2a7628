#!/usr/bin/env bash
# Side-by-side A/B of NUSE daemons (different builds, or different daemon
# flags) against kernel loopback, on one workload, in one run: each round
# runs the kernel, then every variant in turn (servers and clients both
# under `nuse run`, rules claiming loopback), inside a network namespace
# this script creates (loopback only, no route) and removes at the end.
# Prints per-round req/s and the daemon's CPU per request (utime+stime
# of its nused over the client's run, divided by the requests), then the
# means and NUSE/kernel ratios. It also takes the CPU per request of the
# server (every process of the namespace but the daemons) and of the client
# (its process tree, bash's `times`), and from the three parties' figures
# the rate each path would reach with a core per party: the requests one
# core can serve of its busiest party (1 / the largest CPU per request) --
# the bound where a 2-CPU machine runs three busy parties on two cores.
# With -p, each daemon runs a CPU profile (--cpuprofile) whose samples
# its workers label with the program whose turn it is (usock's
# Config.ProfileLabels): the daemon's CPU per request splits into each
# program's turns and the rest (gVisor's own goroutines, the runtime).
# The busiest worker's samples (its programs' turns and its own loop) in
# place of the daemon's whole give the rate with a core per worker.
#
# Usage: scripts/bench/ab-daemons.sh [-w redis|nginx|memcached] [-r ROUNDS] [-n REQS]
#          [-c CONNS] [-d SECONDS] [-x "REDIS-BENCHMARK FLAGS"] [-p] NAME=DIR[:FLAGS] ...
#   NAME=DIR[:FLAGS]   a variant: DIR holds nuse and libnuse.so (e.g. bin,
#                      or a copy of an older build), FLAGS go to its daemon
#   -w redis: redis-benchmark -c CONNS (20) -n REQS (50000) -t get [-x ...]
#   -w nginx: nginx (2 workers) + wrk -t 2 -c CONNS (32) -d SECONDS (4), 4 KiB
#   -w memcached: memcached (2 threads) + memcslap --concurrency CONNS (8),
#                 REQS sets in all (CONNS x REQS/CONNS; req/s from its "Time total")
# e.g. scripts/bench/ab-daemons.sh -r 3 old=/tmp/old new=bin one=bin:"--procs 1"
# Needs root, redis-server/redis-benchmark, nginx/wrk or memcached/memcslap; -p needs go (go tool pprof).
# With -p, AB_PROFILES=DIR keeps each variant's profile there (NAME.pprof).
set -uo pipefail
W_=redis R=3 N=50000 C="" D=4 X="" P=0
while getopts "w:r:n:c:d:x:ph" o; do
	case $o in
	w) W_=$OPTARG ;; r) R=$OPTARG ;; n) N=$OPTARG ;; c) C=$OPTARG ;; d) D=$OPTARG ;; x) X=$OPTARG ;; p) P=1 ;;
	*) sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
case $W_ in redis) C=${C:-20} ;; nginx) C=${C:-32} ;; memcached) C=${C:-8} ;; *) echo "ab-daemons: -w redis, nginx or memcached" >&2; exit 2 ;; esac
for v in "$R" "$N" "$C" "$D"; do
	[[ $v =~ ^[0-9]+$ ]] && ((v > 0 && v <= 10000000)) || { echo "ab-daemons: bad count $v" >&2; exit 2; }
done
((R <= 20 && D <= 60)) || { echo "ab-daemons: -r at most 20, -d at most 60" >&2; exit 2; }
(($# > 0)) || { echo "ab-daemons: name at least one variant NAME=DIR[:FLAGS]" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "ab-daemons: needs root for a network namespace" >&2; exit 1; }
((P == 0)) || command -v go >/dev/null || { echo "ab-daemons: -p needs go (go tool pprof)" >&2; exit 1; }

. "$(dirname "$0")/../benchlib.sh"
private_netns nuse-ab
chmod 755 "$WORK" # nginx's workers run as www-data

declare -A DIR DP SUMR SUMC SUMS SUMK SUMN
NAMES=()
for v in "$@"; do
	name=${v%%=*} rest=${v#*=}
	dir=${rest%%:*} flags=""
	[[ $rest == *:* ]] && flags=${rest#*:}
	[[ $name =~ ^[a-zA-Z0-9_-]+$ && $name != K ]] || { echo "ab-daemons: bad variant name '$name'" >&2; exit 2; }
	[[ -x $dir/nuse && -e $dir/libnuse.so ]] || { echo "ab-daemons: $dir has no nuse and libnuse.so" >&2; exit 1; }
	dir=$(cd "$dir" && pwd)
	NAMES+=("$name") DIR[$name]=$dir
	((P)) && flags+=" --cpuprofile $WORK/$name.pprof"
	# ip netns exec execs the program, so $! is the daemon's own PID.
	# shellcheck disable=SC2086 # flags are words
	ip netns exec "$NS" "$dir/nuse" daemon --sock "$WORK/$name.sock" --netdev none -q $flags >"$WORK/$name.log" 2>&1 &
	DP[$name]=$! PIDS+=($!)
done
for n in "${NAMES[@]}"; do
	for _ in $(seq 100); do [[ -S $WORK/$n.sock ]] && break; sleep 0.1; done
	[[ -S $WORK/$n.sock ]] || { echo "ab-daemons: daemon $n did not start:"; cat "$WORK/$n.log"; exit 1; }
done
HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
mkdir -p "$WORK/www" "$WORK/ng"
chmod 755 "$WORK/www"
head -c 4096 /dev/urandom >"$WORK/www/4k.bin"
chmod 644 "$WORK/www/4k.bin"

# one VARIANT PORT: a server, its client, the figures.
one() {
	local w=$1 port=$2 pre=() srv t0=0 t1=0 out rps reqs cpu
	[[ $w != K ]] && pre=("${DIR[$w]}/nuse" run --sock "$WORK/$w.sock" --rules "tcp 127.0.0.0/8" --)
	if [[ $W_ == redis ]]; then
		ip netns exec "$NS" "${pre[@]}" redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --protected-mode no >/dev/null 2>&1 &
	elif [[ $W_ == memcached ]]; then
		ip netns exec "$NS" "${pre[@]}" memcached -l 127.0.0.1 -p "$port" -U 0 -t 2 -u root >/dev/null 2>&1 &
	else
		nginx_conf "$WORK/ng" "$port" "$WORK/www" 4096
		ip netns exec "$NS" "${pre[@]}" nginx -c "$WORK/ng/$port.conf" >/dev/null 2>&1 &
	fi
	srv=$!
	PIDS+=("$srv")
	for _ in $(seq 50); do
		ip netns exec "$NS" "${pre[@]}" timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null && break
		sleep 0.1
	done
	[[ $w != K ]] && t0=$(ticks "${DP[$w]}")
	s0=$(ns_ticks "${DP[@]}")
	if [[ $W_ == redis ]]; then
		# shellcheck disable=SC2086 # -x is words
		out=$(ip netns exec "$NS" "${pre[@]}" "${TIMED[@]}" timeout 300 redis-benchmark -h 127.0.0.1 -p "$port" -c "$C" -n "$N" $X -t get -q 2>&1)
		rps=$(echo "$out" | tr '\r' '\n' | awk '$1 == "GET:" {print $2}' | tail -1)
		reqs=$N
	elif [[ $W_ == memcached ]]; then
		out=$(ip netns exec "$NS" "${pre[@]}" "${TIMED[@]}" timeout 300 memcslap --servers=127.0.0.1:"$port" --concurrency="$C" --execute-number=$((N / C)) 2>&1)
		reqs=$((N / C * C))
		# memcslap prints "Time total: N seconds."
		rps=$(echo "$out" | awk -v n="$reqs" '/^Time total:/ && $3 > 0 { printf "%.0f", n / $3 }' | tail -1)
	else
		out=$(ip netns exec "$NS" "${pre[@]}" "${TIMED[@]}" timeout $((D + 30)) wrk -t 2 -c "$C" -d "${D}s" "http://127.0.0.1:$port/4k.bin" 2>&1)
		rps=$(echo "$out" | awk '/^Requests\/sec:/ {print $2}')
		reqs=$(echo "$out" | awk '/requests in/ {print $1}')
		echo "$out" | grep -E "Socket errors|Non-2xx" | sed "s/^/    $w: /"
	fi
	[[ $w != K ]] && t1=$(ticks "${DP[$w]}")
	s1=$(ns_ticks "${DP[@]}")
	kill "$srv" 2>/dev/null
	wait "$srv" 2>/dev/null
	per() { awk -v v="$1" -v n="${reqs:-0}" 'BEGIN { if (n > 0) printf "%.1f", v / n * 1e6; else print 0 }'; }
	cpu=$(per "$(awk -v t=$((t1 - t0)) -v hz="$HZ" 'BEGIN { print t / hz }')")
	scpu=$(per "$(awk -v t=$((s1 - s0)) -v hz="$HZ" 'BEGIN { print t / hz }')")
	kcpu=$(per "$(echo "$out" | child_secs)")
	printf '  round %d %-10s %10s req/s  CPU/request: daemon %s us, server %s us, client %s us\n' "$i" "$w" "${rps:-0}" "$cpu" "$scpu" "$kcpu"
	SUMR[$w]=$(awk -v a="${SUMR[$w]:-0}" -v b="${rps:-0}" 'BEGIN {print a + b}')
	SUMC[$w]=$(awk -v a="${SUMC[$w]:-0}" -v b="$cpu" 'BEGIN {print a + b}')
	SUMN[$w]=$((${SUMN[$w]:-0} + ${reqs:-0}))
	SUMS[$w]=$(awk -v a="${SUMS[$w]:-0}" -v b="$scpu" 'BEGIN {print a + b}')
	SUMK[$w]=$(awk -v a="${SUMK[$w]:-0}" -v b="$kcpu" 'BEGIN {print a + b}')
}

echo "== ab-daemons: $W_ -c $C, $R rounds, kernel loopback vs ${NAMES[*]} (load average $(cut -d' ' -f1-3 /proc/loadavg))"
port=17000
for i in $(seq "$R"); do
	for w in K "${NAMES[@]}"; do one "$w" $((port++)); done
done
echo "means over $R rounds (NUSE/kernel: mean req/s over the kernel's mean req/s):"
for w in K "${NAMES[@]}"; do
	awk -v n="$([[ $w == K ]] && echo kernel || echo "$w")" -v r="${SUMR[$w]}" -v k="${SUMR[K]}" -v c="${SUMC[$w]}" -v R="$R" \
		'BEGIN { printf "  %-10s %10.0f req/s  NUSE/kernel %.2fx  daemon CPU/request %.1f us\n", n, r / R, (k > 0 ? r / k : 0), c / R }'
done
echo "with a core per party (1 / the busiest party's CPU per request; means of the rounds' CPU figures):"
core() { # variant: its projected rate
	awk -v c="${SUMC[$1]}" -v s="${SUMS[$1]}" -v k="${SUMK[$1]}" -v R="$R" 'BEGIN { m = c; if (s > m) m = s; if (k > m) m = k; if (m > 0) printf "%.0f", 1e6 * R / m; else print 0 }'
}
kcore=$(core K)
for w in K "${NAMES[@]}"; do
	awk -v n="$([[ $w == K ]] && echo kernel || echo "$w")" -v r="$(core "$w")" -v k="$kcore" -v c="${SUMC[$w]}" -v s="${SUMS[$w]}" -v cl="${SUMK[$w]}" -v R="$R" \
		'BEGIN { printf "  %-10s %10.0f req/s  NUSE/kernel %.2fx  (daemon %.1f, server %.1f, client %.1f us/request)\n", n, r, (k > 0 ? r / k : 0), c / R, s / R, cl / R }'
done
((P)) || exit 0
# The profiles are written as the daemons exit.
for w in "${NAMES[@]}"; do kill -INT "${DP[$w]}" 2>/dev/null; done
for w in "${NAMES[@]}"; do wait "${DP[$w]}" 2>/dev/null; done
if [[ -n ${AB_PROFILES:-} ]]; then
	mkdir -p "$AB_PROFILES" && for w in "${NAMES[@]}"; do cp "$WORK/$w.pprof" "$AB_PROFILES/"; done
fi
echo "the daemon's CPU per request by program (-p: profile labels): each program's turns, the workers' own loops (spinning included), the rest (gVisor's goroutines, Go's runtime: any thread runs them):"
# `go tool pprof -tags`: "program: Total 6.37s of 9.55s (66.70%)", then a
# line per label value, "1.71s (17.91%): 5 nginx[21979]" (session id,
# name, pid); the same for "worker" (its id).
tags() { go tool pprof -tags "$@" 2>/dev/null; }
secs='function secs(v) { if (v ~ /ms$/) return v / 1000; if (v ~ /us$/) return v / 1e6; return v + 0 }'
for w in "${NAMES[@]}"; do
	prof=("${DIR[$w]}/nuse" "$WORK/$w.pprof")
	whole=$(tags "${prof[@]}")
	all=$(awk "$secs"' $2 == "Total" { print secs($5); exit }' <<<"$whole")
	# Each worker's samples: a worker serves the sessions of one round (it
	# retires with its last), so its share of all rounds' samples times
	# the daemon's CPU of all rounds is per request of its round.
	busy=0
	for id in $(awk '$1 == "worker:" { on = 1; next } /^$/ { on = 0 } on { print $NF }' <<<"$whole"); do
		t=$(tags -tagfocus="worker=^$id\$" "${prof[@]}" | awk "$secs"' $1 == "worker:" { print secs($3) }')
		busy=$(awk -v a="$busy" -v b="${t:-0}" 'BEGIN { print (b > a ? b : a) }')
	done
	awk "$secs"'
		$1 == "program:" || $1 == "worker:" { on = $1 == "program:"; if (on) plab = secs($3); else wlab = secs($3); next }
		/^$/ { on = 0 }
		on && /%\): / { name = $0; sub(/^.*%\): [0-9]+ /, "", name); sub(/\[[0-9]+\]$/, "", name); if (!(name in t)) o[++k] = name; t[name] += secs($1) }
		END {
			if (all <= 0 || reqs <= 0) { printf "  %-10s no samples\n", n; exit }
			u = c / R / all # us per request per profile second, over the rounds
			line = ""
			for (i = 1; i <= k; i++) line = line sprintf("%s %.1f, ", o[i], t[o[i]] * u)
			printf "  %-10s %sthe workers'"'"' loops %.1f, the rest %.1f us/request (of %.1f)\n", n, line, (wlab - plab) * u, (all - wlab) * u, c / R
			m = busy * u * R; b = m; if (s / R > b) b = s / R; if (cl / R > b) b = cl / R
			if (b > 0) printf "  %-10s with a core per worker (the busiest %.1f, server %.1f, client %.1f us/request; the rest on other cores): %.0f req/s, NUSE/kernel %.2fx\n", n, m, s / R, cl / R, 1e6 / b, (kcore > 0 ? 1e6 / b / kcore : 0)
		}' n="$w" all="${all:-0}" busy="$busy" reqs="${SUMN[$w]}" c="${SUMC[$w]}" R="$R" cl="${SUMK[$w]}" s="${SUMS[$w]}" kcore="$kcore" <<<"$whole"
done

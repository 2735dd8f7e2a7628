#!/usr/bin/env bash
# Real applications with their own benchmark clients, kernel loopback vs
# both ends under NUSE (`nuse run`, rules claiming loopback), in one run,
# inside a network namespace this script creates (loopback only, no route)
# and removes at the end:
#   redis-server + redis-benchmark -c 20 GET / SET (-n bounded)
#   nginx (2 workers) + wrk -c 32, a 4 KiB file
#   nginx (2 workers) + wrk -c 1000 and -c 2000 (-C), a small file: many
#   connections (wrk's timeouts and errors are reported)
#   node http + wrk -c 16
#   memcached + memcslap (8 x 20000)
#   iperf3, one stream (-t bounded)
#   (gvisor engine) one end under NUSE: a NUSE client to a kernel server
#   through the TAP of a second daemon (--netdev tap), redis-benchmark -c 20
#   GET and wrk -c 32 against nginx, against the same clients on the kernel
# Prints a table: the kernel figure, the NUSE figure, NUSE/kernel, the
# daemon's CPU per request over the NUSE run (utime+stime deltas from
# /proc/PID/stat divided by the requests; for iperf3, per GiB moved), and
# each path's rate with a core per party: every party's CPU per request
# (the server: the namespace's processes but the daemons; the client: its
# process tree, through bash's `times`; the daemon), and the ratio of the
# two paths' rates if each party had a core of its own (1 / the busiest
# party's CPU per request) -- the bound where two CPUs run three parties.
# Installs nothing: a missing tool skips its row, saying so.
#
# Usage: scripts/apps-bench.sh [-e gvisor|kernel|shm] [-n REDIS_REQUESTS]
#        [-d WRK_SECONDS] [-t IPERF_SECONDS] [-m MEMCSLAP_PER_CLIENT] [-o FILE.md]
#        [-a "DAEMON FLAGS"]   (more flags for the daemon, e.g. "--procs 1")
#        [-C "CONNS ..."]      (the many-connections rows; "" skips them)
#        [-r RUNS]             (the whole run RUNS times; the table gives each
#                               figure's median and the ratios' range)
# Needs root (a network namespace) and `make build`.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/bin
ARGS=$(printf "%q " "$@")
ARGS=${ARGS% }
ENGINE=gvisor REDIS_N=100000 WRK_D=5 IPERF_T=5 MEMC_N=20000 OUT="" DARGS="" MANY="1000 2000" RUNS=1
while getopts "e:n:d:t:m:o:a:C:r:h" o; do
	case $o in
	e) ENGINE=$OPTARG ;;
	n) REDIS_N=$OPTARG ;;
	d) WRK_D=$OPTARG ;;
	t) IPERF_T=$OPTARG ;;
	m) MEMC_N=$OPTARG ;;
	o) OUT=$OPTARG ;;
	a) DARGS=$OPTARG ;;
	C) MANY=$OPTARG ;;
	r) RUNS=$OPTARG ;;
	*) sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
	esac
done
case $ENGINE in gvisor | kernel | shm) ;; *) echo "apps-bench: -e gvisor, kernel or shm" >&2; exit 2 ;; esac
for v in "$REDIS_N" "$WRK_D" "$IPERF_T" "$MEMC_N"; do
	[[ $v =~ ^[0-9]+$ ]] && ((v > 0 && v <= 10000000)) || { echo "apps-bench: bad count $v" >&2; exit 2; }
done
for c in $MANY; do
	[[ $c =~ ^[0-9]+$ ]] && ((c > 0 && c <= 5000)) || { echo "apps-bench: -C: connection counts from 1 to 5000, not $c" >&2; exit 2; }
done
((WRK_D <= 60 && IPERF_T <= 60)) || { echo "apps-bench: -d and -t at most 60 s" >&2; exit 2; }
[[ $RUNS =~ ^[0-9]+$ ]] && ((RUNS >= 1 && RUNS <= 9)) || { echo "apps-bench: -r: 1 to 9 runs, not $RUNS" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "apps-bench: needs root for a network namespace" >&2; exit 1; }
for b in nuse libnuse.so; do [[ -e $BIN/$b ]] || { echo "apps-bench: $BIN/$b missing (make build)" >&2; exit 1; }; done

if ((RUNS > 1)); then
	# The whole run again and again (each in a namespace of its own), then
	# per row the median of each figure, and the range of the ratios: on
	# a shared machine one run's ratio moves by a third.
	RT=$(mktemp -d /tmp/apps-bench-runs.XXXXXX)
	trap 'rm -rf "$RT"' EXIT
	LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
	for i in $(seq "$RUNS"); do
		echo "== apps-bench: run $i of $RUNS"
		"$0" -e "$ENGINE" -n "$REDIS_N" -d "$WRK_D" -t "$IPERF_T" -m "$MEMC_N" -a "$DARGS" -C "$MANY" -o "$RT/$i.md" || exit 1
	done
	TABLE=$(awk -F'|' '
		function med(list,   a, n, i, j, t) {
			n = split(list, a, " ")
			for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
			return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
		}
		function lo(list,   a, n, i, m) { n = split(list, a, " "); m = a[1]; for (i = 2; i <= n; i++) if (a[i] + 0 < m + 0) m = a[i]; return m }
		function hi(list,   a, n, i, m) { n = split(list, a, " "); m = a[1]; for (i = 2; i <= n; i++) if (a[i] + 0 > m + 0) m = a[i]; return m }
		FNR == 1 { runs++ }
		/^\| / && $2 !~ /workload/ {
			key = $2
			if (!(key in seen)) { seen[key] = 1; order[++rows] = key; line[key] = $0 }
			if ($3 ~ /skipped/) next
			split($3, k, " "); split($4, n, " "); split($5, r, " "); split($6, c, " ")
			if (k[1] + 0 <= 0 || n[1] + 0 <= 0) { fail[key]++; next }
			K[key] = K[key] " " k[1]; N[key] = N[key] " " n[1]; R[key] = R[key] " " r[1]; C[key] = C[key] " " c[1]
			# a core per party: "0.62 (daemon)"; the CPU of server and client: "9.1, 11.0 -> 10.2, 8.3 us"
			if (split($7, p, /[ ()]+/) >= 3 && p[2] + 0 > 0) { P[key] = P[key] " " p[2]; who[key, p[3]]++; if (who[key, p[3]] > whon[key]) { whon[key] = who[key, p[3]]; whom[key] = p[3] } }
			if (split($8, q, /[ ,>-]+/) >= 6) { for (j = 1; j <= 4; j++) Q[key, j] = Q[key, j] " " q[j + 1]; qunit[key] = q[6] }
			unit[key] = k[2]; cunit[key] = c[2]; rsuf[key] = ""
			if ($5 ~ /time kernel\/NUSE/) rsuf[key] = " (time kernel/NUSE)"
		}
		END {
			for (i = 1; i <= rows; i++) {
				key = order[i]
				if (!(key in K)) { print line[key]; continue }
				note = fail[key] ? sprintf(", %d run(s) gave no figure", fail[key]) : ""
				printf "|%s| %g %s | %g %s | %.2f (%.2f-%.2f)%s%s | %g %s |", key, med(K[key]), unit[key], med(N[key]), unit[key], med(R[key]), lo(R[key]), hi(R[key]), rsuf[key], note, med(C[key]), cunit[key]
				if (key in P) printf " %.2f (%.2f-%.2f) (%s) |", med(P[key]), lo(P[key]), hi(P[key]), whom[key]; else printf " - |"
				if ((key, 1) in Q) printf " %g, %g -> %g, %g %s |\n", med(Q[key, 1]), med(Q[key, 2]), med(Q[key, 3]), med(Q[key, 4]), qunit[key]; else printf " - |\n"
			}
		}' "$RT"/*.md)
	HEAD="| workload (engine $ENGINE), median of $RUNS runs | kernel | NUSE | NUSE/kernel (range) | daemon CPU per request | a core per party: NUSE/kernel (busiest NUSE party) | server, client CPU per request: kernel -> NUSE |"
	echo
	echo "$HEAD"
	echo "|---|---:|---:|---:|---:|---:|---|"
	echo "$TABLE"
	if [[ -n $OUT ]]; then
		{
			echo "\`scripts/apps-bench.sh $ARGS\`, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, load average at the start $LOAD."
			echo "$RUNS runs on a shared, noisy machine, one after the other: each figure is the median of its runs, each ratio the median of the runs' own ratios (kernel and NUSE measured in the same run), with their range."
			echo
			echo "$HEAD"
			echo "|---|---:|---:|---:|---:|---:|---|"
			echo "$TABLE"
		} >"$OUT"
	fi
	exit 0
fi

. scripts/benchlib.sh
private_netns nuse-apps
SOCK=$WORK/nused.sock
RULES="tcp 127.0.0.0/8"
in_ns() { ip netns exec "$NS" "$@"; }
nuse() { in_ns "$BIN/nuse" run --sock "$SOCK" --rules "$RULES" -- "$@"; }
kern() { in_ns "$@"; }

# ip netns exec execs the program, so $! is the daemon's own PID.
ip netns exec "$NS" "$BIN/nuse" daemon --sock "$SOCK" --netdev none --engine "$ENGINE" -q $DARGS >"$WORK/daemon.log" 2>&1 &
DPID=$!
PIDS+=("$DPID")
for _ in $(seq 100); do [[ -S $SOCK ]] && break; sleep 0.1; done
[[ -S $SOCK ]] || { echo "apps-bench: the daemon did not start:"; cat "$WORK/daemon.log"; exit 1; }
HZ=$(getconf CLK_TCK)
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
cpu_ticks() { awk '{print $14 + $15}' "/proc/${TICK_PID:-$DPID}/stat"; }

ROWS=()
ERRS=()
declare -A PD PS PC
# party KEY UNITS: the last measure's CPU per unit (request, or GiB) of
# the daemon, the server and the client, in seconds, kept under KEY
# (none without units)
party() {
	PD[$1]="" PS[$1]="" PC[$1]=""
	(($(awk -v n="$2" 'BEGIN { print (n > 0) }'))) || return 0
	read -r "PD[$1]" "PS[$1]" "PC[$1]" < <(awk -v d="$TICKS" -v s="$STICKS" -v c="$CSECS" -v hz="$HZ" -v n="$2" \
		'BEGIN { printf "%.9f %.9f %.9f\n", d / hz / n, s / hz / n, c / n }')
}
# core KERNKEY NUSEKEY: NUSE/kernel with a core per party (each path's
# rate is 1 / its busiest party's CPU per unit), the busiest NUSE party,
# and the server's and client's CPU per unit on both paths
core() {
	awk -v kd="${PD[$1]:-0}" -v ks="${PS[$1]:-0}" -v kc="${PC[$1]:-0}" -v nd="${PD[$2]:-0}" -v ns="${PS[$2]:-0}" -v nc="${PC[$2]:-0}" -v u="$3" '
		function f(v) { return u == "Gbit/s" ? sprintf("%.3f", v) : sprintf("%.1f", v * 1e6) }
		BEGIN {
			k = kd; if (ks > k) k = ks; if (kc > k) k = kc
			n = nd; who = "daemon"; if (ns > n) { n = ns; who = "server" } if (nc > n) { n = nc; who = "client" }
			if (k <= 0 || n <= 0) { print "- | -"; exit }
			printf "%.2f (%s) | %s, %s -> %s, %s %s\n", k / n, who, f(ks), f(kc), f(ns), f(nc), (u == "Gbit/s" ? "s/GiB" : "us")
		}'
}
# daemon_cpu KEY UNIT: the daemon's CPU per unit, as the table shows it
daemon_cpu() {
	awk -v v="${PD[$1]}" -v u="$2" 'BEGIN{ if (v == "") print "-"; else if (u == "Gbit/s") printf "%.3f s/GiB", v; else printf "%.1f us", v * 1e6 }'
}
# show WORKLOAD KERNEL NUSE UNIT RATIO KERNKEY NUSEKEY: a table row, and
# the same on the terminal
show() {
	local cpu cores
	cpu=$(daemon_cpu "$7" "$4")
	cores=$(core "$6" "$7" "$4")
	ROWS+=("| $1 | $2 $4 | $3 $4 | $5 | $cpu | $cores |")
	printf '  %-44s kernel %10s  nuse %10s %-6s  nuse/kernel %5s  daemon CPU %s\n' "$1" "$2" "$3" "$4" "${5%% *}" "$cpu"
	printf '  %-44s with a core per party: nuse/kernel %s\n' "" "${cores/ | / (server, client CPU: kernel -> NUSE: })"
}
row() { # workload, kernel figure, nuse figure, unit, kernel party key, nuse party key
	show "$1" "$2" "$3" "$4" "$(awk -v k="$2" -v n="$3" 'BEGIN{ if (k > 0 && n > 0) printf "%.2f", n / k; else print "-" }')" "$5" "$6"
}
skip() { ROWS+=("| $1 | skipped: $2 | | | | | |"); echo "  $1: SKIPPED: $2"; }
missing() { # tools... ; prints the missing ones
	local m=()
	for t in "$@"; do command -v "$t" >/dev/null || m+=("$t"); done
	echo "${m[*]}"
}
wait_port() { # wrapper, port [, host]: until a connect through the same path succeeds (10 s)
	local w=$1 port=$2 host=${3:-127.0.0.1}
	for _ in $(seq 100); do
		$w timeout 1 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "apps-bench: nothing listens on port $port" >&2
	return 1
}
start() { # wrapper, args... : a background server; sets SPID
	local w=$1; shift
	if [[ $w == nuse ]]; then
		ip netns exec "$NS" "$BIN/nuse" run --sock "$SOCK" --rules "$RULES" -- "$@" >>"$WORK/servers.log" 2>&1 &
	else
		ip netns exec "$NS" "$@" >>"$WORK/servers.log" 2>&1 &
	fi
	SPID=$!
	PIDS+=("$SPID")
}
stop() { kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true; }
# measure WRAPPER CMD...: runs a client, its output in $OUTPUT, the daemon's
# CPU ticks over it in $TICKS, the servers' in $STICKS, the client's
# seconds in $CSECS.
measure() {
	local t0 s0 w=$1
	shift
	t0=$(cpu_ticks)
	s0=$(ns_ticks "$DPID" "${TDPID:-}")
	OUTPUT=$("$w" "${TIMED[@]}" "$@" 2>&1) || { echo "apps-bench: failed: $*" >&2; echo "$OUTPUT" | tail -5 >&2; OUTPUT=""; }
	TICKS=$(($(cpu_ticks) - t0))
	STICKS=$(($(ns_ticks "$DPID" "${TDPID:-}") - s0))
	CSECS=$(echo "$OUTPUT" | child_secs)
}

echo "== apps-bench: kernel loopback vs both ends under NUSE (engine $ENGINE${DARGS:+, daemon $DARGS}), namespace $NS =="
echo "   (one run on a shared, noisy machine: read the ratios of this run, not the absolute figures)"

# --- redis ---
if m=$(missing redis-server redis-benchmark) && [[ -n $m ]]; then
	skip "redis-benchmark -c 20 GET/SET" "not installed: $m (apt-get install redis-server redis-tools)"
else
	declare -A RK
	for w in kern nuse; do
		port=$([[ $w == kern ]] && echo 16379 || echo 16380)
		start $w redis-server --port $port --bind 127.0.0.1 --save "" --appendonly no --protected-mode no
		wait_port $w $port
		measure $w timeout 300 redis-benchmark -h 127.0.0.1 -p $port -c 20 -n "$REDIS_N" -t set,get -q
		for t in SET GET; do
			RK[$w$t]=$(echo "$OUTPUT" | tr '\r' '\n' | awk -v t="$t:" '$1 == t {print $2}' | tail -1)
		done
		party "redis$w" $((2 * REDIS_N))
		stop
	done
	# The daemon's CPU over both tests, per request (2 x -n requests).
	row "redis-benchmark -c 20 SET" "${RK[kernSET]:-0}" "${RK[nuseSET]:-0}" "req/s" rediskern redisnuse
	row "redis-benchmark -c 20 GET" "${RK[kernGET]:-0}" "${RK[nuseGET]:-0}" "req/s" rediskern redisnuse
fi

# --- nginx and node, with wrk ---
wrk_pair() { # label, connections, kernel-server-cmd..., --, nuse-server-cmd... (PORT substituted)
	local label=$1 conns=$2 kport=$3 nport=$4 path=$5; shift 5
	local k n
	for w in kern nuse; do
		local port=$kport
		[[ $w == nuse ]] && port=$nport
		start $w "${@//PORT/$port}"
		wait_port $w $port
		measure $w timeout $((WRK_D + 30)) wrk -t 2 -c "$conns" -d "${WRK_D}s" "http://127.0.0.1:$port$path"
		local rps reqs
		rps=$(echo "$OUTPUT" | awk '/^Requests\/sec:/ {print $2}')
		reqs=$(echo "$OUTPUT" | awk '/requests in/ {print $1}')
		party "wrk$kport$w" "${reqs:-0}"
		if [[ $w == kern ]]; then k=${rps:-0}; else n=${rps:-0}; fi
		if echo "$OUTPUT" | grep -qE "Socket errors|Non-2xx"; then
			echo "$OUTPUT" | grep -E "Socket errors|Non-2xx" | sed "s/^/    $label, $w: /"
			ERRS+=("$label ($w): $(echo "$OUTPUT" | grep -E "Socket errors|Non-2xx" | tr -s ' ' | tr '\n' ';')")
		fi
		stop
	done
	row "$label" "$k" "$n" "req/s" "wrk${kport}kern" "wrk${kport}nuse"
}
if m=$(missing nginx wrk) && [[ -n $m ]]; then
	skip "nginx (2 workers) + wrk -c 32, 4 KiB" "not installed: $m (apt-get install nginx-light wrk)"
else
	mkdir -p "$WORK/www" "$WORK/nginx"
	chmod 755 "$WORK" "$WORK/www" # nginx's workers run as www-data
	head -c 4096 /dev/urandom >"$WORK/www/4k.bin"
	for port in 18080 18081; do
		nginx_conf "$WORK/nginx" "$port" "$WORK/www" 1024
	done
	wrk_pair "nginx (2 workers) + wrk -c 32, 4 KiB" 32 18080 18081 /4k.bin nginx -c "$WORK/nginx/PORT.conf"
	# Many connections: a small file, so the cost is per connection and
	# per request (wrk's timeouts show under the table).
	printf 'hello from nginx\n' >"$WORK/www/small.html"
	port=18100
	# Both ends hold a descriptor per connection (and nginx's workers
	# count their listeners): raise the limit, which the child processes
	# inherit, or say why a row cannot run.
	ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
	for c in $MANY; do
		if (($(ulimit -n) < 2 * c + 256)); then
			skip "nginx (2 workers) + wrk -c $c, small file" "open files limit $(ulimit -n) is too low for $c connections"
			continue
		fi
		for p in $port $((port + 1)); do
			nginx_conf "$WORK/nginx" "$p" "$WORK/www" $((2 * c + 64))
		done
		wrk_pair "nginx (2 workers) + wrk -c $c, small file" "$c" $port $((port + 1)) /small.html nginx -c "$WORK/nginx/PORT.conf"
		port=$((port + 2))
	done
fi
if m=$(missing node wrk) && [[ -n $m ]]; then
	skip "node http + wrk -c 16" "not installed: $m (apt-get install nodejs wrk)"
else
	wrk_pair "node http + wrk -c 16" 16 18090 18091 / node -e \
		"require('http').createServer((q, r) => r.end('hello from node\n')).listen(PORT, '127.0.0.1')"
fi

# --- memcached ---
if m=$(missing memcached memcslap) && [[ -n $m ]]; then
	skip "memcached + memcslap 8x$MEMC_N" "not installed: $m (apt-get install memcached libmemcached-tools)"
else
	declare -A MS
	for w in kern nuse; do
		port=$([[ $w == kern ]] && echo 11311 || echo 11312)
		start $w memcached -l 127.0.0.1 -p $port -U 0 -t 2 -u root
		wait_port $w $port
		t0=$(date +%s.%N)
		measure $w timeout 300 memcslap --servers=127.0.0.1:$port --concurrency=8 --execute-number="$MEMC_N"
		t1=$(date +%s.%N)
		# memcslap prints "Time total: N seconds."; else the wall time.
		s=$(echo "$OUTPUT" | awk '/^Time total:/ {print $3}' | tail -1)
		[[ -n $OUTPUT ]] || s=0
		MS[$w]=${s:-$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b - a}')}
		[[ $w == nuse ]] && echo "    (daemon ticks over the NUSE run: $TICKS)"
		party "memc$w" $((8 * MEMC_N))
		stop
	done
	# Seconds: lower is better, so the ratio is kernel/NUSE time (a speed ratio like the others).
	ratio_fix() { awk -v k="$1" -v n="$2" 'BEGIN{ if (k > 0 && n > 0) printf "%.2f", k / n; else print "-" }'; }
	r=$(ratio_fix "${MS[kern]}" "${MS[nuse]}")
	show "memcached + memcslap 8x$MEMC_N (set)" "${MS[kern]}" "${MS[nuse]}" "s" "$r (time kernel/NUSE)" memckern memcnuse
fi

# --- iperf3 ---
if m=$(missing iperf3) && [[ -n $m ]]; then
	skip "iperf3 single stream" "not installed: $m (apt-get install iperf3)"
else
	declare -A IP IB
	for w in kern nuse; do
		port=$([[ $w == kern ]] && echo 15201 || echo 15202)
		# a server for more than one test (not -1): still there when the
		# client is done, so its CPU counts; and no probe connection (one
		# is a test to iperf3)
		start $w iperf3 -s -B 127.0.0.1 -p $port
		sleep 0.5
		measure $w timeout $((IPERF_T + 30)) iperf3 -c 127.0.0.1 -p $port -t "$IPERF_T" -f g
		IP[$w]=$(echo "$OUTPUT" | awk '/receiver/ {for (i = 1; i <= NF; i++) if ($i == "Gbits/sec") print $(i-1)}' | tail -1)
		# GBytes moved, for the daemon's CPU per GiB.
		IB[$w]=$(echo "$OUTPUT" | awk '/receiver/ {for (i = 1; i <= NF; i++) if ($i == "GBytes") print $(i-1)}' | tail -1)
		party "iperf$w" "$(awk -v g="${IB[$w]:-0}" 'BEGIN{print g * 1e9 / 2^30}')"
		stop
	done
	row "iperf3 single stream, -t $IPERF_T" "${IP[kern]:-0}" "${IP[nuse]:-0}" "Gbit/s" iperfkern iperfnuse
fi

# --- one end under NUSE: a NUSE client to a kernel server through the TAP ---
TAPROW="redis-benchmark -c 20 GET, NUSE client -> kernel redis via TAP"
if [[ $ENGINE != gvisor ]]; then
	skip "$TAPROW" "the $ENGINE engine has no TAP of its own"
elif m=$(missing redis-server redis-benchmark nginx wrk) && [[ -n $m ]]; then
	skip "$TAPROW" "not installed: $m"
else
	TSOCK=$WORK/nused-tap.sock
	ip netns exec "$NS" "$BIN/nuse" daemon --sock "$TSOCK" --netdev tap --engine gvisor -q $DARGS >"$WORK/daemon-tap.log" 2>&1 &
	TDPID=$!
	PIDS+=("$TDPID")
	for _ in $(seq 100); do [[ -S $TSOCK ]] && break; sleep 0.1; done
	if [[ ! -S $TSOCK ]]; then
		skip "$TAPROW" "the TAP daemon did not start: $(tail -1 "$WORK/daemon-tap.log")"
	else
		# The kernel's side of the TAP is 10.77.0.1; the stack is 10.77.0.2.
		tapnuse() { in_ns "$BIN/nuse" run --sock "$TSOCK" --rules "tcp 10.77.0.0/16" -- "$@"; }
		TICK_PID=$TDPID
		start kern redis-server --port 16383 --bind 10.77.0.1 --save "" --appendonly no --protected-mode no
		wait_port kern 16383 10.77.0.1 || true
		declare -A TK
		for w in kern tapnuse; do
			measure $w timeout 300 redis-benchmark -h 10.77.0.1 -p 16383 -c 20 -n "$REDIS_N" -t get -q
			TK[$w]=$(echo "$OUTPUT" | tr '\r' '\n' | awk '$1 == "GET:" {print $2}' | tail -1)
			party "tapredis$w" "$REDIS_N"
		done
		stop
		row "$TAPROW" "${TK[kern]:-0}" "${TK[tapnuse]:-0}" "req/s" taprediskern tapredistapnuse
		mkdir -p "$WORK/www" "$WORK/nginx"
		chmod 755 "$WORK" "$WORK/www"
		[[ -e $WORK/www/4k.bin ]] || head -c 4096 /dev/urandom >"$WORK/www/4k.bin"
		nginx_conf "$WORK/nginx" 18082 "$WORK/www" 1024 10.77.0.1
		start kern nginx -c "$WORK/nginx/18082.conf"
		wait_port kern 18082 10.77.0.1 || true
		declare -A WK WR
		for w in kern tapnuse; do
			measure $w timeout $((WRK_D + 30)) wrk -t 2 -c 32 -d "${WRK_D}s" "http://10.77.0.1:18082/4k.bin"
			WK[$w]=$(echo "$OUTPUT" | awk '/^Requests\/sec:/ {print $2}')
			WR[$w]=$(echo "$OUTPUT" | awk '/requests in/ {print $1}')
			party "tapwrk$w" "${WR[$w]:-0}"
			if echo "$OUTPUT" | grep -qE "Socket errors|Non-2xx"; then
				ERRS+=("wrk via TAP ($w): $(echo "$OUTPUT" | grep -E "Socket errors|Non-2xx" | tr -s ' ' | tr '\n' ';')")
			fi
		done
		stop
		row "wrk -c 32 -> kernel nginx, 4 KiB, NUSE client via TAP" "${WK[kern]:-0}" "${WK[tapnuse]:-0}" "req/s" tapwrkkern tapwrktapnuse
		unset TICK_PID
	fi
fi

echo
echo "| workload (engine $ENGINE) | kernel | NUSE | NUSE/kernel | daemon CPU per request | a core per party: NUSE/kernel (busiest NUSE party) | server, client CPU per request: kernel -> NUSE |"
echo "|---|---:|---:|---:|---:|---:|---|"
printf '%s\n' "${ROWS[@]}"
for e in "${ERRS[@]}"; do echo "wrk reported errors: $e"; done
echo
echo "(one run on a shared, noisy machine; daemon CPU: utime+stime of nused over the NUSE run / requests; iperf3: per GiB)"
if [[ -n $OUT ]]; then
	{
		echo "\`scripts/apps-bench.sh $ARGS\`, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, load average at the start $LOAD."
		echo "One run on a shared, noisy machine: read the ratios (same run), not the absolute figures."
		echo
		echo "| workload (engine $ENGINE) | kernel | NUSE | NUSE/kernel | daemon CPU per request | a core per party: NUSE/kernel (busiest NUSE party) | server, client CPU per request: kernel -> NUSE |"
		echo "|---|---:|---:|---:|---:|---:|---|"
		printf '%s\n' "${ROWS[@]}"
	} >"$OUT"
fi

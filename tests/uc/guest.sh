#!/usr/bin/env bash
# Runs inside the QEMU guest (scripts/uc/guest-test.sh boots it): soft-RoCE
# on eth0, then verbs<->verbs checks, the UC link endpoint carrying TCP over
# rxe, perftest vs nuse perf on the same rxe device, and finally the guest
# halves of the soft(host)<->verbs(guest) interop runs. Binaries come from
# bin/uc/ (built on the host with -tags verbs). Prints "UC-GUEST: PASS|FAIL".
set -u
IP=/usr/sbin/ip
B=bin/uc
GIP=10.232.0.2
fails=0
step() { echo; echo "=== uc-guest: $*"; }
ok() { echo "--- ok: $*"; }
bad() { echo "--- FAIL: $*"; fails=$((fails + 1)); }

$IP link set lo up
$IP addr add $GIP/24 dev eth0
# Jumbo frames give rxe a 4096-byte path MTU (set before the rxe link).
$IP link set eth0 mtu 9000 up
rdma link add rxe0 type rxe netdev eth0 || { echo "UC-GUEST: FAIL (no rxe)"; exit 1; }
rdma link
gid=$(cat /sys/class/infiniband/rxe0/ports/1/gids/1)
echo "rxe0 GID[1] $gid"

step "verbs <-> verbs on rxe0: WRITE and WRITE WITH IMMEDIATE, completions, payloads"
timeout 120 $B/ucxchg -backend verbs -dev rxe0 -gid 1 -listen $GIP:7480 -wait 60s > /tmp/x1.log 2>&1 &
p=$!
if timeout 120 $B/ucxchg -backend verbs -dev rxe0 -gid 1 -peer $GIP:7480 -wait 60s -doorbell && wait $p; then
	ok "verbs<->verbs exchange (dialer rings its send doorbell after every post and wait)"
else
	bad "verbs<->verbs exchange"; cat /tmp/x1.log
fi
cat /tmp/x1.log

step "verbs through the NUSE daemon (uc/proxy) <-> verbs on rxe0: WRITE and WRITE WITH IMMEDIATE, payloads"
$B/nuse daemon --netdev none --sock /tmp/nused.sock > /tmp/nused.log 2>&1 &
dpid=$!
for i in $(seq 100); do [ -S /tmp/nused.sock ] && break; sleep 0.1; done
timeout 120 $B/ucxchg -backend verbs -dev rxe0 -gid 1 -listen $GIP:7483 -wait 60s > /tmp/x2.log 2>&1 &
p=$!
if timeout 120 $B/ucxchg -backend verbs -dev rxe0 -gid 1 -via-daemon /tmp/nused.sock -peer $GIP:7483 -wait 60s && wait $p; then
	ok "verbs via the daemon <-> verbs exchange"
else
	bad "verbs via the daemon <-> verbs exchange"; cat /tmp/x2.log /tmp/nused.log
fi

step "UC link endpoint over verbs (rxe0): TCP transfer between two gVisor stacks"
timeout 300 $B/ucpeer -netdev listen=$GIP:7490,backend=verbs,dev=rxe0,pmtu=1024 -addr 192.168.78.2/24 -size 8388608 -timeout 280s > /tmp/ps.out 2>/tmp/ps.err &
p=$!
if timeout 300 $B/ucpeer -netdev peer=$GIP:7490,backend=verbs,dev=rxe0,pmtu=1024 -addr 192.168.78.1/24 -connect 192.168.78.2:5001 -size 8388608 -timeout 280s > /tmp/pc.out 2>/tmp/pc.err && wait $p; then
	c=$(awk '{print $4}' /tmp/pc.out); s=$(awk '{print $4}' /tmp/ps.out)
	if [[ -n $c && $c == "$s" ]]; then ok "8 MiB over TCP/UC/verbs intact (sha256 $s)"; else bad "digest mismatch: $c vs $s"; fi
else
	bad "TCP over the verbs link endpoint"; cat /tmp/pc.err /tmp/ps.err
fi
cat /tmp/pc.out /tmp/ps.out

# bench LABEL EXTRA CMD...: CMD as the server, CMD EXTRA $GIP as the client
# (EXTRA: the client's own flags, word-split). With --via-daemon the client
# goes through the daemon (uc/proxy: its requests cross a shared memory ring
# to nused, which posts them) and the server is native: the seed design's
# forwarding experiment, beside the native runs.
bench() {
	local label=$1 extra=$2 try rc sp
	shift 2
	for try in 1 2 3; do
		"$@" > /tmp/ls.log 2>&1 &
		sp=$!
		sleep 1
		timeout 300 "$@" $extra $GIP > /tmp/lc.log 2>&1
		rc=$?
		wait $sp
		# perftest refuses to report when calibrating its cycle counter
		# against the clock is too noisy (r^2 < 0.9), as TCG makes it now
		# and then: that run measured nothing, so measure again.
		grep -q "Can't produce a report" /tmp/lc.log || break
		echo "[$label] perftest could not calibrate its clock (try $try of 3)"
	done
	echo "[$label]"; grep -A40 '#bytes' /tmp/lc.log | grep -v -- '----'
	[[ $rc == 0 ]] || { bad "$label"; cat /tmp/lc.log /tmp/ls.log; }
}
lat() { local label=$1; shift; bench "$label" "" "$@"; }
viad() { local label=$1; shift; bench "$label" "--via-daemon --sock /tmp/nused.sock" "$@"; }

step "benchmarks on rxe0 (same guest run; TCG: compare ratios, not absolutes)"
for s in 2 64 4096; do
	lat "ib_write_lat -c UC -m 4096 -s $s" timeout 300 ib_write_lat -c UC -d rxe0 -x 1 -m 4096 -s $s -n 1000
	lat "nuse perf uc-write-lat --backend verbs -m 4096 -s $s" timeout 300 $B/nuse perf uc-write-lat --backend verbs -c UC -d rxe0 -x 1 -m 4096 -s $s -n 1000
	viad "nuse perf uc-write-lat --backend verbs --via-daemon -m 4096 -s $s" timeout 300 $B/nuse perf uc-write-lat --backend verbs -c UC -d rxe0 -x 1 -m 4096 -s $s -n 1000
done
# The same at 64 B with both ends sleeping on completion events (-e): two
# programs that poll, plus the daemon's threads, are more runners than the
# guest's two vCPUs, and a woken thread may wait for a spinner's time slice.
# The native row is NUSE's own verbs path, sleeping on events too.
lat "nuse perf uc-write-lat --backend verbs -e -m 4096 -s 64" timeout 300 $B/nuse perf uc-write-lat --backend verbs -e -c UC -d rxe0 -x 1 -m 4096 -s 64 -n 1000
viad "nuse perf uc-write-lat --backend verbs --via-daemon -e -m 4096 -s 64" timeout 300 $B/nuse perf uc-write-lat --backend verbs -e -c UC -d rxe0 -x 1 -m 4096 -s 64 -n 1000
for s in 64 65536; do
	lat "ib_write_bw -c UC -m 4096 -s $s" timeout 300 ib_write_bw -c UC -d rxe0 -x 1 -m 4096 -s $s -n 5000
	lat "nuse perf uc-write-bw --backend verbs -m 4096 -s $s" timeout 300 $B/nuse perf uc-write-bw --backend verbs -c UC -d rxe0 -x 1 -m 4096 -s $s -n 5000
	viad "nuse perf uc-write-bw --backend verbs --via-daemon -m 4096 -s $s" timeout 300 $B/nuse perf uc-write-bw --backend verbs -c UC -d rxe0 -x 1 -m 4096 -s $s -n 5000
done
kill $dpid 2>/dev/null; wait $dpid 2>/dev/null

step "interop: soft (host netns) <-> verbs (guest rxe0), WRITE WITH IMMEDIATE both ways"
if timeout 300 $B/ucxchg -backend verbs -dev rxe0 -gid 1 -listen $GIP:7481 -wait 240s; then
	ok "soft<->verbs exchange (guest side)"
else
	bad "soft<->verbs exchange (guest side)"
fi

step "interop: UC link endpoint, soft (host) <-> verbs (guest), TCP"
# Link MTU 4000 < path MTU 4096: one packet per message. rdma_rxe's UC
# responder never recovers once it loses a non-first packet of a
# multi-packet RDMA WRITE (do_class_d1e_error resets resp.opcode only when
# a receive WQE is held), and the host->guest TAP does drop packets.
if timeout 300 $B/ucpeer -netdev listen=$GIP:7482,backend=verbs,dev=rxe0,mtu=4000 -addr 192.168.79.2/24 -size 4194304 -timeout 280s; then
	ok "TCP over soft<->verbs link (guest side)"
else
	bad "TCP over soft<->verbs link (guest side)"
fi

echo
if [[ $fails == 0 ]]; then echo "UC-GUEST: PASS"; else echo "UC-GUEST: FAIL ($fails)"; fi
exit $((fails > 0))

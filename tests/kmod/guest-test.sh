#!/usr/bin/env bash
# The kmod/ tests, run inside the guest test bed from the repository root:
#   scripts/guest/run.sh -- tests/kmod/guest-test.sh
# (make test-kmod builds nuse.ko and the test binaries first). Every address
# used is inside the guest.
set -uo pipefail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
IP=/usr/sbin/ip
BIN=${BIN:-bin}
fails=0
pids=()

step() { echo; echo "=== $*"; }
pass() { echo "--- PASS: $*"; }
fail() { echo "--- FAIL: $*"; fails=$((fails + 1)); }
check() {
	local d=$1
	shift
	if "$@"; then pass "$d"; else fail "$d"; fi
}
# wait_for CMD... : up to 10 s
wait_for() {
	local i
	for i in $(seq 1 100); do
		"$@" && return 0
		sleep 0.1
	done
	return 1
}
cleanup() {
	local p
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
	pids=()
}
trap cleanup EXIT

step "1. nuse.ko loads, nuse0 appears, unloads cleanly"
check "insmod kmod/nuse.ko" insmod kmod/nuse.ko
check "/dev/nuse is a character device" test -c /dev/nuse
check "ip link add type nuse makes nuse0" bash -c "$IP link add type nuse && $IP -br link show nuse0"
check "ip link del nuse0" $IP link del nuse0

step "2. gVisor stack on the kmod netdev: ping, HTTP both ways, netfilter"
rm -f /tmp/ready
"$BIN/nusekmod" serve -netdev kmod -dev nuse0 -addr 10.99.0.2/24 -host-addr 10.99.0.1/24 \
	-blob-size $((8 << 20)) -ready /tmp/ready &
pids+=($!)
check "server up on nuse0" wait_for test -e /tmp/ready
$IP -br addr show nuse0
check "nuse0 has carrier" bash -c "[ \$(cat /sys/class/net/nuse0/carrier) = 1 ]"
check "ping the stack" ping -c 3 -W 3 10.99.0.2
want=$(curl -fsS -m 30 http://10.99.0.2/sha)
check "curl a file from the stack (8 MiB), sha256 matches" bash -c \
	"curl -fsS -m 120 -o /tmp/blob http://10.99.0.2/blob && [ \"\$(sha256sum </tmp/blob | cut -d' ' -f1)\" = '$want' ]"
check "wget the same file, sha256 matches" bash -c \
	"wget -q -T 60 -O /tmp/blob2 http://10.99.0.2/blob && [ \"\$(sha256sum </tmp/blob2 | cut -d' ' -f1)\" = '$want' ]"
mkdir -p /tmp/www
head -c $((8 << 20)) /dev/urandom >/tmp/www/file
fsum="$(sha256sum </tmp/www/file | cut -d' ' -f1) $((8 << 20))"
busybox httpd -f -p 10.99.0.1:8080 -h /tmp/www &
pids+=($!)
sleep 0.3
check "the stack fetches a file from a kernel server, sha256 matches" bash -c \
	"[ \"\$(curl -fsS -m 120 'http://10.99.0.2/fetch?url=http://10.99.0.1:8080/file')\" = '$fsum' ]"
check "upload to the stack, sha256 matches" bash -c \
	"[ \"\$(curl -fsS -m 120 --data-binary @/tmp/www/file http://10.99.0.2/upload)\" = '$fsum' ]"
$IP -s link show nuse0

nft -f - <<'EOF'
table inet nusektest {
	chain in {
		type filter hook input priority 0; policy accept;
		iifname "nuse0" counter drop
	}
}
EOF
check "nft: input drop on nuse0 blocks curl" bash -c "! curl -fsS -m 4 -o /dev/null http://10.99.0.2/sha"
check "nft: input drop on nuse0 blocks ping" bash -c "! ping -c 2 -W 2 10.99.0.2 >/dev/null"
nft list table inet nusektest | grep counter
check "nft: the rule counted packets" bash -c "nft list table inet nusektest | grep -q 'counter packets [1-9]'"
nft delete table inet nusektest
check "nft: traffic flows again after the rule is gone" curl -fsS -m 30 -o /dev/null http://10.99.0.2/sha
nft -f - <<'EOF'
table inet nusektest {
	chain out {
		type filter hook output priority 0; policy accept;
		oifname "nuse0" icmp type echo-request counter drop
	}
}
EOF
check "nft: output drop on nuse0 blocks ping" bash -c "! ping -c 2 -W 2 10.99.0.2 >/dev/null"
nft delete table inet nusektest
check "iptables: -i nuse0 -j DROP blocks curl" bash -c \
	"iptables -A INPUT -i nuse0 -j DROP && ! curl -fsS -m 4 -o /dev/null http://10.99.0.2/sha"
iptables -D INPUT -i nuse0 -j DROP
check "iptables: flows again" curl -fsS -m 30 -o /dev/null http://10.99.0.2/sha
cleanup
check "nuse0 gone when the server exits" bash -c "! $IP link show nuse0 2>/dev/null"

step "2b. the daemon on --netdev kmod"
dhelp=$("$BIN/nuse" daemon -h 2>&1 || true)
if grep -A1 -- '-netdev' <<<"$dhelp" | grep -q kmod; then
	"$BIN/nuse" daemon --netdev kmod --dev nuse1 --sock /tmp/nused.sock -q &
	pids+=($!)
	check "daemon brings nuse1 up" wait_for bash -c "[ \"\$(cat /sys/class/net/nuse1/carrier 2>/dev/null)\" = 1 ]"
	$IP -br addr show nuse1
	check "ping the daemon's stack (10.77.0.2)" ping -c 3 -W 3 10.77.0.2
	check "ping6 the daemon's stack (fd77::2)" ping6 -c 3 -W 3 fd77::2
	busybox httpd -f -p 10.77.0.1:8080 -h /tmp/www &
	pids+=($!)
	sleep 0.3
	if [ -e "$BIN/libnuse.so" ]; then
		check "nuse run -- curl from a kernel server through the daemon, sha256 matches" bash -c \
			"[ \"\$($BIN/nuse run --sock /tmp/nused.sock -- curl -fsS -m 120 http://10.77.0.1:8080/file | sha256sum | cut -d' ' -f1) $((8 << 20))\" = '$fsum' ]"
	fi
	cleanup
	check "nuse1 gone when the daemon exits" bash -c "! $IP link show nuse1 2>/dev/null"
else
	echo "(bin/nuse daemon does not list the kmod netdev kind yet: skipped)"
fi

step "3. malformed descriptors, fuzz, lifecycle, full ring (Go tests against the module)"
check "kmod.test" bash -c "set -o pipefail; '$BIN/kmod.test' -test.v -test.count=1 -test.run Guest 2>&1 | tee /tmp/kmodtest.log"

step "4. benchmark: kmod vs TAP (same stack, same run)"
# Interleaved rounds (the machine is shared and TCG is noisy); the best
# round of each kind counts.
declare -A R
for mtu in 1500 65000; do
	rounds=${BENCH_ROUNDS:-2}
	[ $mtu = 65000 ] && rounds=1
	for round in $(seq 1 $rounds); do
		for kind in kmod tap; do
			"$BIN/nusekmod" bench -netdev $kind -dev nusebench0 -mtu $mtu -addr 10.96.0.2/24 -host-addr 10.96.0.1/24 \
				-secs "${BENCH_SECS:-2}" >/tmp/bench.log 2>&1
			grep -E '^(bench|RESULT|nusekmod)' /tmp/bench.log
			R[$kind.$mtu.$round]=$(grep '^RESULT' /tmp/bench.log)
		done
	done
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
echo
echo "BENCH kmod/tap ratios (guest under TCG: ratios only, not absolute figures)"
best() { # best KIND MTU FIELD
	local r v m=0
	for r in "${!R[@]}"; do
		case $r in "$1.$2."*) ;; *) continue ;; esac
		v=$(field "${R[$r]}" "$3")
		[ -n "$v" ] && m=$(awk -v a="$m" -v b="$v" 'BEGIN { printf "%.0f", (b > a) ? b : a }')
	done
	echo "$m"
}
# The link alone (TestGuestLinkRate in stack/link/kmod, no stack on the user
# side; see kmod/README.md): u2k counts the device's rx_packets; k2u-udp and
# k2u-pkt what the user side read while the sender ran, next to what the
# sender offered the device (read < sent: the reader bounded the figure;
# read = sent: the sender did); k2u-drain the reader alone.
link=$(grep '^RESULT kind=link' /tmp/kmodtest.log)
check "the link benchmark reported its figures" test -n "$link"
linkrow() { # linkrow FIELD LABEL NOTE
	local k t
	k=$(field "$link" "$1_kmod") t=$(field "$link" "$1_tap")
	printf 'BENCH link %-16s kmod=%-10s tap=%-10s ratio=%-5s %s\n' "$2" "$k" "$t" "$(ratio "$k" "$t")" "$3"
}
linkrow u2k_udp "u2k-udp pkt/s" "(user->kernel, delivered to a UDP socket: kernel IP/UDP receive included)"
linkrow u2k_dev "u2k-dev pkt/s" "(user->kernel, dropped at an nft netdev ingress chain: the device alone)"
linkrow k2u_udp "k2u-udp read/s" "(kernel->user, read by user space; sender: a UDP socket, one sendto each)"
linkrow k2u_udp_sent "k2u-udp sent/s" "(what that sender offered the device)"
linkrow k2u_pkt "k2u-pkt read/s" "(kernel->user, read by user space; sender: AF_PACKET qdisc bypass, sendmmsg x64)"
linkrow k2u_pkt_sent "k2u-pkt sent/s" "(what that sender offered the device)"
linkrow k2u_drain "k2u-drain read/s" "(kernel->user, the reader alone: it empties a queue filled while nobody read)"
for mtu in 1500 65000; do
	for f in rr1_tps rr16_pps k2u_pps u2k_pps tcp_s2k_Bps tcp_k2s_Bps; do
		k=$(best kmod $mtu $f) t=$(best tap $mtu $f)
		printf 'BENCH mtu=%-5s %-13s kmod=%-12s tap=%-12s ratio=%s\n' "$mtu" "$f" "$k" "$t" "$(ratio "$k" "$t")"
	done
done

step "5. clean unload"
$IP link add nusex type nuse
check "refcount 0 with no fd open" bash -c "[ \$(cat /sys/module/nuse/refcnt) = 0 ]"
check "rmmod nuse (removes the persistent nusex too)" rmmod nuse
check "no nuse devices left" bash -c "! $IP -br link | grep -q nuse"
check "module gone" test ! -e /sys/module/nuse
dmesg | grep -E 'WARNING|BUG|Oops|general protection|refcount_t|unregister_netdevice: waiting'
check "no kernel warnings" bash -c "! dmesg | grep -qE 'WARNING|BUG|Oops|general protection|refcount_t|unregister_netdevice: waiting'"

echo
if [ $fails -gt 0 ]; then
	echo "kmod guest tests: $fails FAILED"
	exit 1
fi
echo "kmod guest tests: all passed"

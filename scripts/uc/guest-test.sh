#!/usr/bin/env bash
# Host side of the UC guest test: builds the verbs-enabled binaries, makes
# namespace nuseu-h with TAP nuseu-tap0 (10.232.0.1/24, no default route),
# boots one guest on that TAP (scripts/guest/run.sh, run inside the
# namespace so QEMU opens the TAP there), and runs the soft halves of the
# interop tests against the guest's rxe0 while capturing the RoCE traffic
# to check rxe's ICRCs with an independent checker. Everything it creates
# is removed on exit. Exits non-zero on any failure; skips (exit 0) when
# QEMU or the guest bed is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PATH:/usr/local/go/bin"
NS=nuseu-h
TAP=nuseu-tap0
HIP=10.232.0.1
GIP=10.232.0.2
OUT=bin/uc
LOG=$OUT/guest

if ! command -v qemu-system-x86_64 >/dev/null || [[ ! -x scripts/guest/run.sh ]]; then
	echo "uc guest test: SKIP (qemu-system-x86_64 or scripts/guest/run.sh missing)"
	exit 0
fi
mkdir -p "$LOG"
# The image is built (or reused) here, outside the namespace: building it
# may download Debian packages, and the namespace has no network.
scripts/guest/build.sh >/dev/null
go build -tags verbs -o $OUT/nuse ./cmd/nuse
go build -tags verbs -o $OUT/ucpeer ./tests/uc/ucpeer
go build -tags verbs -o $OUT/ucxchg ./tests/uc/ucxchg

pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	ip netns del $NS 2>/dev/null || true
}
trap cleanup EXIT
ip netns del $NS 2>/dev/null || true
ip netns add $NS
ip -n $NS link set lo up
ip -n $NS tuntap add dev $TAP mode tap
ip -n $NS addr add $HIP/24 dev $TAP
ip -n $NS link set $TAP mtu 9000 up

# The capture (bounded in packets and time) sees both directions.
ip netns exec $NS timeout 1000 tshark -q -i $TAP -f "udp port 4791" -c 20000 -a duration:990 -F pcap -w $LOG/tap.pcap 2>$LOG/tshark.err &
pids+=($!)
# Soft halves: they dial and retry until the guest listens.
ip netns exec $NS timeout 1000 $OUT/ucxchg -backend soft -local $HIP -peer $GIP:7481 -wait 900s >$LOG/xchg-host.log 2>&1 &
xp=$!; pids+=($xp)
ip netns exec $NS timeout 1000 $OUT/ucpeer -netdev peer=$GIP:7482,local=$HIP,mtu=4000,wait=900s -addr 192.168.79.1/24 \
	-connect 192.168.79.2:5001 -size 4194304 -timeout 990s >$LOG/peer-host.log 2>&1 &
pp=$!; pids+=($pp)

rc=0
ip netns exec $NS scripts/guest/run.sh --net tap:$TAP --timeout 950 -- tests/uc/guest.sh 2>&1 | tee $LOG/guest.log || rc=$?
grep -q '^UC-GUEST: PASS' $LOG/guest.log || rc=1

wait $xp || rc=1
wait $pp || rc=1
echo "=== host side (soft, netns $NS)"
cat $LOG/xchg-host.log $LOG/peer-host.log
grep -q "ucxchg: OK" $LOG/xchg-host.log || { echo "FAIL: soft<->verbs exchange (host side)"; rc=1; }
grep -q "^bytes 4194304 " $LOG/peer-host.log || { echo "FAIL: TCP over soft<->verbs link (host side)"; rc=1; }
sleep 1
kill -INT "${pids[0]}" 2>/dev/null || true
sleep 1
# rxe's own packets (source $GIP) checked by the independent ICRC checker:
# the soft side verified them too, or the exchange would have failed.
if [[ -s $LOG/tap.pcap ]]; then
	tshark -r $LOG/tap.pcap -Y "ip.src==$GIP && infiniband" -F pcap -w $LOG/rxe.pcap 2>/dev/null || true
	echo -n "rxe-generated packets: "; python3 scripts/uc/icrc_check.py $LOG/rxe.pcap || rc=1
	echo -n "soft-generated packets: "
	tshark -r $LOG/tap.pcap -Y "ip.src==$HIP && infiniband" -F pcap -w $LOG/soft.pcap 2>/dev/null || true
	python3 scripts/uc/icrc_check.py $LOG/soft.pcap || rc=1
fi
[[ $rc == 0 ]] && echo "uc guest test: PASS" || echo "uc guest test: FAIL"
exit $rc

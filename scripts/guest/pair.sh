#!/usr/bin/env bash
# Runs two guests joined by a point-to-point Ethernet wire (QEMU socket
# netdev on 127.0.0.1) and exits non-zero unless both commands succeed.
#
#   scripts/guest/pair.sh [--port N] [run.sh options...] -- 'command A' 'command B'
#
# In each guest eth0 is up with an address before the command runs:
# A = 10.0.77.1/24, B = 10.0.77.2/24; NUSE_PAIR_ROLE (a|b), NUSE_PAIR_SELF
# and NUSE_PAIR_PEER (addresses) are exported. Each console is prefixed
# with [a] or [b]. A boots first (it listens); B connects.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
port=$((17000 + $$ % 1000))
opts=()
while [[ $# -gt 0 ]]; do
	case $1 in
	--port) port=$2; shift 2 ;;
	--) shift; break ;;
	*) opts+=("$1"); shift ;;
	esac
done
[[ $# -eq 2 ]] || { echo "usage: pair.sh [--port N] [run.sh options] -- 'command A' 'command B'" >&2; exit 2; }

prologue() { # role self peer
	printf 'export NUSE_PAIR_ROLE=%s NUSE_PAIR_SELF=%s NUSE_PAIR_PEER=%s\n' "$1" "$2" "$3"
	printf '/usr/sbin/ip addr add %s/24 dev eth0 && /usr/sbin/ip link set eth0 up || exit 99\n' "$2"
}
# Build the image once, before two QEMUs race for the lock.
"$HERE/build.sh" >/dev/null

(
	"$HERE/run.sh" "${opts[@]}" --net "socket-listen:$port" --mac 52:54:00:77:00:01 -- \
		"$(prologue a 10.0.77.1 10.0.77.2; printf '%s\n' "$1")" 2>&1 | sed -u 's/^/[a] /'
	exit "${PIPESTATUS[0]}"
) &
apid=$!
sleep 1
set +e
"$HERE/run.sh" "${opts[@]}" --net "socket-connect:$port" --mac 52:54:00:77:00:02 -- \
	"$(prologue b 10.0.77.2 10.0.77.1; printf '%s\n' "$2")" 2>&1 | sed -u 's/^/[b] /'
brc=${PIPESTATUS[0]}
wait $apid
arc=$?
set -e
echo "pair: a exited $arc, b exited $brc"
[[ $arc -eq 0 && $brc -eq 0 ]]

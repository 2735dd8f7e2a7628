# scripts/netns.sh - sourced by the benchmark scripts: a network namespace
# of their own (loopback only, no route out) and a scratch directory, both
# removed at exit with every process started in them.
#   private_netns PREFIX   sets NS and WORK, creates both, arms the cleanup
#   PIDS+=($!)             records a process to stop (then wait for) at exit
private_netns() {
	NS=$1-$$
	WORK=$(mktemp -d "/tmp/$1.XXXXXX")
	PIDS=()
	trap _netns_cleanup EXIT
	trap 'exit 130' INT TERM
	ip netns add "$NS"
	ip netns exec "$NS" ip link set lo up
}

_netns_cleanup() {
	set +e
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
	# Anything still in the namespace is ours.
	for p in $(ip netns pids "$NS" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
	ip netns del "$NS" 2>/dev/null
	rm -rf "$WORK"
}

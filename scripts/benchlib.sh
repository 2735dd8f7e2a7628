# scripts/benchlib.sh - sourced by the benchmark scripts (apps-bench.sh,
# bench/ab-daemons.sh): what they set up alike.
#   private_netns PREFIX   a network namespace of their own (loopback only,
#                          no route out) and a scratch directory: sets NS and
#                          WORK, creates both, and removes them at exit with
#                          every process started in them
#   PIDS+=($!)             records a process to stop (then wait for) at exit
#   ns_ticks PID...        the CPU ticks (utime+stime) of the namespace's
#                          processes but the PIDs given (the daemons): the
#                          servers, when sampled around a client's run (the
#                          client has not started, then has exited)
#   TIMED=(bash -c ...)    runs a command, then prints its children's CPU
#                          (bash's `times`); child_secs reads that in seconds
#   nginx_conf DIR PORT ROOT CONNS [ADDR]   (listens on ADDR, default 127.0.0.1)
#                          writes DIR/PORT.conf: nginx with 2 workers serving
#                          ROOT on 127.0.0.1:PORT, its files under DIR
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

ns_ticks() {
	local p t=0 skip=" $* "
	for p in $(ip netns pids "$NS"); do
		[[ $skip == *" $p "* ]] && continue
		t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
	done
	echo "$t"
}

# bash's `times`, children's line (0m1.250s 0m0.310s), in seconds
child_secs() { awk 'NF == 2 && $1 ~ /^[0-9]+m[0-9.]+s$/ { split($1, u, /[ms]/); split($2, s, /[ms]/); v = u[1] * 60 + u[2] + s[1] * 60 + s[2] } END { print v + 0 }'; }
# shellcheck disable=SC2016 # the inner bash expands it
TIMED=(bash -c '"$@"; rc=$?; times; exit $rc' _)

nginx_conf() {
	local dir=$1 port=$2 root=$3 conns=$4 addr=${5:-127.0.0.1}
	cat >"$dir/$port.conf" <<EOC
worker_processes 2;
daemon off;
pid $dir/$port.pid;
error_log $dir/$port.err;
events { worker_connections $conns; }
http {
	access_log off;
	client_body_temp_path $dir/body; proxy_temp_path $dir/proxy;
	fastcgi_temp_path $dir/fcgi; uwsgi_temp_path $dir/uwsgi; scgi_temp_path $dir/scgi;
	server { listen $addr:$port; root $root; }
}
EOC
}

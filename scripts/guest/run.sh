#!/usr/bin/env bash
# Runs a command inside a Debian kernel booted under QEMU (TCG) and exits
# with its status. The repository is shared at /host (the guest's cwd).
#
#   scripts/guest/run.sh [options] -- <guest command...>
#
# Options:
#   --extra-modules LIST  more kernel modules (with dependencies) in the image
#   --extra-pkgs LIST     more Debian packages unpacked into the image
#   --load LIST           modules to modprobe at boot (comma separated)
#   --net SPEC            a NIC (virtio-net, eth0 in the guest). SPEC is one of
#                           socket-listen:PORT   -netdev socket,listen=127.0.0.1:PORT
#                           socket-connect:PORT  -netdev socket,connect=127.0.0.1:PORT
#                           mcast:PORT           -netdev socket,mcast=230.0.0.1:PORT,localaddr=127.0.0.1
#                           tap:IFNAME           -netdev tap,ifname=IFNAME (created by you, nusek-*)
#                           netdev:ARGS          -netdev ARGS,id=n0 (raw)
#                         may be given twice (eth0, eth1)
#   --mac MAC             MAC of the first NIC (default 52:54:00:12:34:<pid%256>)
#   --mem MB              guest memory (default 1024)
#   --smp N               guest CPUs (default 2)
#   --timeout SEC         kill QEMU after SEC seconds (default 900)
#   --append ARGS         more kernel command line
#   --qemu ARG            one more raw QEMU argument (repeatable)
#
# The guest command runs with bash -c in /host with PATH set and /dev,
# /proc, /sys, /tmp mounted; NUSE_GUEST=1 and NUSE_GUEST_RUNDIR (a directory
# shared with the host, removed afterwards) are set.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=${NUSE_GUEST_OUT:-$HERE/out}

build_args=()
load=""
nets=()
mac=""
mem=1024
smp=2
timeout=900
append=""
qextra=()
while [[ $# -gt 0 ]]; do
	case $1 in
	--extra-modules | --extra-pkgs) build_args+=("$1" "$2"); shift 2 ;;
	--load) load=$2; shift 2 ;;
	--net) nets+=("$2"); shift 2 ;;
	--mac) mac=$2; shift 2 ;;
	--mem) mem=$2; shift 2 ;;
	--smp) smp=$2; shift 2 ;;
	--timeout) timeout=$2; shift 2 ;;
	--append) append+=" $2"; shift 2 ;;
	--qemu) qextra+=("$2"); shift 2 ;;
	--) shift; break ;;
	-h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "run.sh: unknown option $1 (the command goes after --)" >&2; exit 2 ;;
	esac
done
[[ $# -gt 0 ]] || { echo "usage: run.sh [options] -- <guest command>" >&2; exit 2; }

img=$("$HERE/build.sh" "${build_args[@]}")

rundir_rel=scripts/guest/out/runs/$$
rundir=$REPO/$rundir_rel
[[ $OUT == "$HERE/out" ]] || { echo "run.sh: NUSE_GUEST_OUT must stay inside the repository share" >&2; exit 2; }
rm -rf "$rundir"
mkdir -p "$rundir"
{
	printf 'cd /host\n'
	printf '%q ' "$@"
	printf '\n'
} >"$rundir/cmd"
if [[ $# -eq 1 ]]; then
	# One argument: a shell snippet.
	printf 'cd /host\n%s\n' "$1" >"$rundir/cmd"
fi

qemu_pid=""
cleanup() {
	[[ -n $qemu_pid ]] && kill "$qemu_pid" 2>/dev/null || true
	rm -rf "$rundir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

netargs=()
i=0
for n in "${nets[@]}"; do
	case $n in
	socket-listen:*) nd="socket,listen=127.0.0.1:${n#*:}" ;;
	socket-connect:*) nd="socket,connect=127.0.0.1:${n#*:}" ;;
	mcast:*) nd="socket,mcast=230.0.0.1:${n#*:},localaddr=127.0.0.1" ;;
	tap:*) nd="tap,ifname=${n#*:},script=no,downscript=no" ;;
	netdev:*) nd=${n#*:} ;;
	*) echo "run.sh: bad --net $n" >&2; exit 2 ;;
	esac
	m=${mac:-52:54:00:12:34:$(printf %02x $(($$ % 256)))}
	[[ $i -gt 0 ]] && m=${m%:*}:$(printf %02x $(((0x${m##*:} + i) % 256)))
	netargs+=(-netdev "$nd,id=n$i" -device "virtio-net-pci,netdev=n$i,mac=$m")
	i=$((i + 1))
done
[[ ${#nets[@]} -eq 0 ]] && netargs=(-nic none)

cmdline="console=ttyS0 panic=-1 oops=panic loglevel=4 rdinit=/init nuse.run=$rundir_rel"
[[ -n $load ]] && cmdline+=" nuse.load=$load"
cmdline+=$append

set +e
timeout -k 10 "$timeout" qemu-system-x86_64 \
	-accel tcg,thread=multi -cpu max -smp "$smp" -m "$mem" \
	-kernel "$img/vmlinuz" -initrd "$img/initramfs.cpio.gz" -append "$cmdline" \
	-display none -vga none -monitor none -serial stdio -no-reboot \
	-device isa-debug-exit,iobase=0xf4,iosize=0x04 \
	-virtfs "local,path=$REPO,mount_tag=host0,security_model=none,id=host0" \
	"${netargs[@]}" "${qextra[@]}" </dev/null &
qemu_pid=$!
wait "$qemu_pid"
qrc=$?
qemu_pid=""
set -e

if [[ -f $rundir/rc ]]; then
	exit "$(cat "$rundir/rc")"
fi
if [[ $qrc -eq 124 || $qrc -eq 137 ]]; then
	echo "run.sh: guest timed out after ${timeout}s" >&2
	exit 124
fi
if ((qrc & 1)); then
	exit $((qrc >> 1))
fi
echo "run.sh: the guest stopped without reporting a status (qemu rc $qrc): kernel panic?" >&2
exit 125

#!/usr/bin/env bash
# Builds (or reuses) the guest image: Debian's stock kernel matching the
# installed linux-headers-amd64, and a small initramfs made from this
# machine's binaries plus base.conf and extra.d/*.conf.
#
#   scripts/guest/build.sh [--extra-modules "a b"] [--extra-pkgs "p q"]
#
# Prints the image directory (holding vmlinuz, initramfs.cpio.gz, kver) on
# stdout. Everything lands in scripts/guest/out/ (gitignored); an image is
# rebuilt only when its inputs change.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${NUSE_GUEST_OUT:-$HERE/out}
EXTRA_MODULES=""
EXTRA_PKGS=""
while [[ $# -gt 0 ]]; do
	case $1 in
	--extra-modules) EXTRA_MODULES+=" ${2//,/ }"; shift 2 ;;
	--extra-pkgs) EXTRA_PKGS+=" ${2//,/ }"; shift 2 ;;
	*) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done

log() { echo "guest-build: $*" >&2; }
trap 'echo "guest-build: failed at line $LINENO" >&2' ERR
die() { log "error: $*"; exit 1; }
# fetch PKG: the .deb into $OUT/debs unless there, retrying a few times
# (a mirror's name lookup fails now and then on these machines).
fetch() {
	(cd "$OUT/debs" && ls "$1"_*.deb >/dev/null 2>&1) && return 0
	local i
	for i in 1 2 3 4 5; do
		(cd "$OUT/debs" && apt-get download -q "$1" >&2) && return 0
		log "apt-get download $1 failed (try $i of 5)"
		sleep $((i * 3))
	done
	return 1
}

for t in dpkg-deb cpio depmod busybox apt-get ldd; do
	command -v "$t" >/dev/null || die "$t not found (install .ci/apt/kmod.list)"
done
[[ -x /usr/bin/busybox ]] || die "busybox-static not installed"

# The kernel: the ABI name linux-headers-amd64 depends on.
kabi=$(dpkg-query -W -f='${Depends}' linux-headers-amd64 2>/dev/null |
	sed -n 's/.*linux-headers-\([0-9][^ ,]*-amd64\).*/\1/p')
[[ -n $kabi ]] || die "linux-headers-amd64 is not installed"
mkdir -p "$OUT/debs" "$OUT/images"

exec 9>"$OUT/.lock"
flock 9

kdir=$OUT/kernel-$kabi
if [[ ! -e $kdir/.done ]]; then
	log "fetching linux-image-$kabi"
	rm -rf "$kdir"
	fetch "linux-image-$kabi" ||
		die "apt-get download linux-image-$kabi failed (run apt-get update?)"
	mkdir -p "$kdir"
	dpkg-deb -x "$(ls "$OUT"/debs/linux-image-"$kabi"_*.deb | tail -1)" "$kdir"
	depmod -b "$kdir" "$kabi"
	touch "$kdir/.done"
fi
vmlinuz=$kdir/boot/vmlinuz-$kabi
[[ -f $vmlinuz ]] || die "no $vmlinuz in the package"

# Collect the configuration: base.conf, extra.d/*.conf, the command line.
declare -a MODULES LOAD PKGS BINS FILES LINKS
conf_files=("$HERE/base.conf")
for f in "$HERE"/extra.d/*.conf; do [[ -e $f ]] && conf_files+=("$f"); done
for f in "${conf_files[@]}"; do
	while IFS= read -r line; do
		line=${line%%#*}
		[[ $line =~ ^[[:space:]]*([a-z]+):(.*)$ ]] || continue
		key=${BASH_REMATCH[1]}
		read -r -a vals <<<"${BASH_REMATCH[2]}"
		case $key in
		modules) MODULES+=("${vals[@]}") ;;
		load) LOAD+=("${vals[@]}") ;;
		packages) PKGS+=("${vals[@]}") ;;
		binaries) BINS+=("${vals[@]}") ;;
		files) FILES+=("${vals[@]}") ;;
		links) LINKS+=("${vals[@]}") ;;
		*) die "$f: unknown key '$key'" ;;
		esac
	done <"$f"
done
read -r -a em <<<"$EXTRA_MODULES"
read -r -a ep <<<"$EXTRA_PKGS"
MODULES+=("${em[@]}" "${LOAD[@]}")
PKGS+=("${ep[@]}")

# The image key: everything that decides the image's contents.
key=$({
	echo "$kabi"
	cat "$HERE/build.sh" "$HERE/init" "${conf_files[@]}"
	echo "m=${MODULES[*]} p=${PKGS[*]}"
	for b in "${BINS[@]}"; do
		if [[ -e ${b%\?} ]]; then stat -L -c '%n %s %Y' "${b%\?}"; fi
	done
} | sha256sum | cut -c1-16)
img=$OUT/images/$key
if [[ -e $img/.done ]]; then
	touch "$img"
	echo "$img"
	exit 0
fi

log "building image $key (kernel $kabi)"
rm -rf "$img"
root=$img/root
mkdir -p "$root"/usr/{bin,sbin,lib,lib64} "$img"
ln -s usr/bin "$root/bin"
ln -s usr/sbin "$root/sbin"
ln -s usr/lib "$root/lib"
ln -s usr/lib64 "$root/lib64"
mkdir -p "$root"/{proc,sys,dev,tmp,run,host,root,etc,mnt,var/tmp}

# copy_path copies a host path into the image, keeping symlinks' targets.
copy_path() {
	local p=$1
	[[ -e $p || -L $p ]] || return 1
	local r
	r=$(realpath -m "$p")
	if [[ ! -e $root$r ]]; then
		mkdir -p "$(dirname "$root$r")"
		cp -a --no-preserve=ownership "$r" "$root$r"
	fi
	if [[ ! -e $root$p && ! -L $root$p ]]; then
		mkdir -p "$(dirname "$root$p")"
		ln -s "$r" "$root$p"
	fi
}

# copy_libs copies the shared libraries an ELF file needs. Libraries already
# in the image (from packages) win over the host's.
copy_libs() {
	local f=$1
	file_is_elf "$f" || return 0
	local libpath
	libpath=$(find "$root/usr/lib" "$root/usr/lib64" -maxdepth 2 -type d 2>/dev/null | paste -sd:)
	LD_LIBRARY_PATH=$libpath ldd "$f" 2>/dev/null | while read -r a b c _; do
		local lib=""
		if [[ $b == "=>" && $c == /* ]]; then
			lib=$c
		elif [[ $a == /* ]]; then
			lib=$a
		elif [[ $b == "=>" && $c == "not" ]]; then
			log "warning: $f needs $a, which is in no package given (add it to packages:)"
		fi
		[[ -z $lib ]] && continue
		if [[ $lib == "$root"/* ]]; then
			continue
		fi
		copy_path "$lib" || log "warning: missing $lib"
	done
}
file_is_elf() { [[ -f $1 && $(head -c4 "$1" 2>/dev/null | od -An -c | tr -d ' ') == '177ELF' ]]; }

# Packages: apt-get download and unpack (no maintainer scripts run).
for p in "${PKGS[@]}"; do
	opt=0
	[[ $p == *\? ]] && { opt=1; p=${p%\?}; }
	if ! fetch "$p"; then
		((opt)) && continue
		die "apt-get download $p failed"
	fi
	dpkg-deb -x "$(ls "$OUT"/debs/"${p}"_*.deb | tail -1)" "$img/pkgroot"
done
if [[ -d $img/pkgroot ]]; then
	# Debian bookworm packages may still ship /lib, /bin, /sbin: merge them.
	for d in bin sbin lib lib64; do
		if [[ -d $img/pkgroot/$d && ! -L $img/pkgroot/$d ]]; then
			mkdir -p "$img/pkgroot/usr/$d"
			cp -a "$img/pkgroot/$d/." "$img/pkgroot/usr/$d/"
			rm -rf "${img:?}/pkgroot/$d"
		fi
	done
	cp -a "$img/pkgroot/." "$root/"
	rm -rf "$img/pkgroot"
	rm -rf "$root"/usr/share/{doc,man,info,locale,lintian}
fi

for b in "${BINS[@]}" "${FILES[@]}"; do
	opt=0
	[[ $b == *\? ]] && { opt=1; b=${b%\?}; }
	if ! copy_path "$b"; then
		((opt)) && continue
		die "$b not found on this machine"
	fi
done
for l in "${LINKS[@]}"; do
	mkdir -p "$(dirname "$root${l%%=*}")"
	ln -sfn "${l#*=}" "$root${l%%=*}"
done

# Shared libraries of every ELF file in the image.
find "$root/usr" -type f \( -perm -u+x -o -name '*.so*' \) | while read -r f; do
	copy_libs "$f"
done
copy_path /lib64/ld-linux-x86-64.so.2

# busybox applets for what is not there already.
cp /usr/bin/busybox "$root/usr/bin/busybox"
/usr/bin/busybox --list-full | while read -r a; do
	[[ -e $root/$a || -L $root/$a ]] && continue
	mkdir -p "$(dirname "$root/$a")"
	ln -s /usr/bin/busybox "$root/$a"
done

# Kernel modules and their dependencies.
mdir=lib/modules/$kabi
mkdir -p "$root/usr/$mdir"
for f in modules.order modules.builtin modules.builtin.modinfo; do
	[[ -e $kdir/$mdir/$f ]] && cp "$kdir/$mdir/$f" "$root/usr/$mdir/"
done
for m in "${MODULES[@]}"; do
	deps=$(modprobe -d "$kdir" -S "$kabi" --show-depends "$m" 2>&1) ||
		die "module $m: $deps"
	while read -r kind path _; do
		[[ $kind == insmod ]] || continue
		rel=${path#"$kdir"/}
		rel=${rel#/}
		mkdir -p "$(dirname "$root/usr/${rel#usr/}")"
		cp "$path" "$root/usr/${rel#usr/}"
	done <<<"$deps"
done
depmod -b "$root" "$kabi"

# /init and settings.
install -m 0755 "$HERE/init" "$root/init"
printf '%s\n' "${LOAD[@]}" >"$root/etc/nuse-guest-load"
echo "$kabi" >"$root/etc/nuse-guest-kver"
echo "root:x:0:0:root:/root:/bin/bash" >"$root/etc/passwd"
echo "root:x:0:" >"$root/etc/group"
printf 'hosts: files\n' >"$root/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"
ldconfig -r "$root" 2>/dev/null || true

(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 >"$img/initramfs.cpio.gz"
cp "$vmlinuz" "$img/vmlinuz"
echo "$kabi" >"$img/kver"
rm -rf "$root"
touch "$img/.done"
log "image $key: $(du -h "$img/initramfs.cpio.gz" | cut -f1) initramfs"

# Keep the three most recently used images.
ls -1t "$OUT/images" | tail -n +4 | while read -r old; do rm -rf "${OUT:?}/images/$old"; done
echo "$img"

#!/usr/bin/env bash
# make demo: the main job end to end on a sample made here. Needs root (FUSE
# and loop mounts) and e2fsprogs. Cleans up everything, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/bin
[ "$(id -u)" = 0 ] || { echo "demo: run as root (it mounts FUSE and loop devices)"; exit 1; }
command -v mkfs.ext4 >/dev/null || { echo "demo: mkfs.ext4 not found (apt-get install e2fsprogs)"; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/vhdmount-demo.XXXXXX")
mounts=()
cleanup() {
	for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
		mountpoint -q "${mounts[i]}" && { umount "${mounts[i]}" 2>/dev/null || umount -l "${mounts[i]}"; }
	done
	# wait for the servers to sync and exit before removing their images
	for _ in $(seq 50); do pgrep -f "vhdmount .*$work" >/dev/null || break; sleep 0.1; done
	rm -rf "$work"
}
trap cleanup EXIT
mnt() { mkdir -p "$1"; mounts+=("$1"); }
say() { printf '  %s\n' "$*"; }

cd "$work"
echo "vhdmount demo in $work"

"$BIN/vhd" create base.vhd 64M >/dev/null
say "created base.vhd: dynamic, 64 MiB, $(stat -c %s base.vhd) bytes on disk"

mnt m; "$BIN/vhdmount" base.vhd m
mkfs.ext4 -q -L demo m/disk.raw
mnt fs; mount -o loop m/disk.raw fs
mkdir fs/docs; echo "hello from the base disk" > fs/docs/hello.txt
head -c 3000000 /dev/urandom > fs/docs/random.bin
sum_random=$(sha256sum < fs/docs/random.bin | cut -c1-16)
umount fs; umount m
say "made ext4 in base.vhd through m/disk.raw, wrote docs/hello.txt and docs/random.bin ($sum_random…)"

base_sum=$(sha256sum < base.vhd | cut -c1-16)
"$BIN/vhd" create --parent base.vhd child.vhd >/dev/null
"$BIN/vhdmount" child.vhd m
mount -o loop m/disk.raw fs
echo "changed in the child" > fs/docs/hello.txt
echo "new in the child" > fs/docs/new.txt
umount fs; umount m
say "created child.vhd over base.vhd, changed docs/hello.txt and added docs/new.txt in the child"

[ "$(sha256sum < base.vhd | cut -c1-16)" = "$base_sum" ] || { echo "demo: base.vhd changed!"; exit 1; }
mnt pm; "$BIN/vhdmount" --ro base.vhd pm
mnt pf; mount -o loop,ro pm/disk.raw pf
"$BIN/vhdmount" --ro child.vhd m
mount -o loop,ro m/disk.raw fs
say "base  sees: $(cat pf/docs/hello.txt)$( [ -e pf/docs/new.txt ] && echo ', new.txt' || echo ', no new.txt')"
say "child sees: $(cat fs/docs/hello.txt), $(cat fs/docs/new.txt)"
[ "$(sha256sum < fs/docs/random.bin | cut -c1-16)" = "$sum_random" ] || { echo "demo: random.bin differs in the child"; exit 1; }
say "docs/random.bin is the same in both ($sum_random…); base.vhd is byte for byte unchanged"
umount fs; umount m; umount pf; umount pm

for f in base.vhd child.vhd; do
	say "vhd check: $("$BIN/vhd" check "$f")"
done
"$BIN/vhd" info child.vhd | grep -E "^layer|found via|allocated:" | sed 's/^/  /'

# The same disk as a VHDX, with a Hyper-V style checkpoint (AVHDX) over it.
"$BIN/vhd" convert -O vhdx base.vhd base.vhdx 2>/dev/null
"$BIN/vhd" create --parent base.vhdx checkpoint.avhdx >/dev/null
"$BIN/vhdmount" checkpoint.avhdx m
mount -o loop m/disk.raw fs
echo "written into the checkpoint" > fs/docs/checkpoint.txt
umount fs; umount m
"$BIN/vhdmount" --ro checkpoint.avhdx m
mount -o loop,ro m/disk.raw fs
say "converted base.vhd to base.vhdx, took the checkpoint checkpoint.avhdx over it and wrote into it:"
say "checkpoint sees: $(cat fs/docs/hello.txt), $(cat fs/docs/checkpoint.txt)"
[ "$(sha256sum < fs/docs/random.bin | cut -c1-16)" = "$sum_random" ] || { echo "demo: random.bin differs in the checkpoint"; exit 1; }
umount fs; umount m
say "vhd check: $("$BIN/vhd" check checkpoint.avhdx)"
"$BIN/vhd" commit checkpoint.avhdx >/dev/null
"$BIN/vhdmount" --ro base.vhdx m
mount -o loop,ro m/disk.raw fs
say "vhd commit checkpoint.avhdx: base.vhdx alone now has docs/checkpoint.txt: \"$(cat fs/docs/checkpoint.txt)\"; the emptied checkpoint is still its child"
umount fs; umount m
say "vhd check: $("$BIN/vhd" check checkpoint.avhdx)"
echo "demo done; cleaning up"

#!/bin/sh
# byol-one-partition.sh IMAGE.qcow2
#
# Rewrites a whole-disk qcow2 image (GPT: ESP, BIOS boot, root...) in place as a BYOL image: a GPT
# disk with one partition, the old root filesystem, unchanged. The root partition is the largest
# "Linux filesystem" partition. The ESP and the boot loader are not kept: the installer makes an ESP
# on each disk and the image's make_image_bootable.sh installs the boot loader there.
# Needs qemu-img, sfdisk (fdisk package) and GNU dd; no root, nothing is mounted.
set -eu
in=$1
LINUX_FS=0FC63DAF-8483-4772-8E79-3D69D8477DE4
work=$(mktemp -d "${TMPDIR:-/tmp}/byol-one-partition.XXXXXX")
trap 'rm -rf "$work"' EXIT

qemu-img convert -O raw "$in" "$work/disk.raw"
# "/.../disk.raw1 : start=  262144, size=  4032479, type=0FC63DAF-..., uuid=..." -> "size start"
line=$(sfdisk --dump "$work/disk.raw" | awk -F'[=,]' -v t="TYPE=$LINUX_FS" 'index(toupper($0), t) {
    gsub(/ /, "", $2); gsub(/ /, "", $4); print $4, $2 }' | sort -n | tail -n 1)
[ -n "$line" ] || { echo "byol-one-partition: no Linux filesystem partition in $in" >&2; exit 1; }
size=${line% *}
start=${line#* }

# 1 MiB before the partition, 1 MiB after it for the backup GPT
truncate -s $(( (2048 + size + 2048) * 512 )) "$work/byol.raw"
printf 'label: gpt\nstart=2048, size=%s, type=%s, name=root\n' "$size" "$LINUX_FS" | sfdisk --quiet "$work/byol.raw"
dd if="$work/disk.raw" of="$work/byol.raw" bs=4M iflag=skip_bytes,count_bytes oflag=seek_bytes \
    skip=$((start * 512)) seek=$((2048 * 512)) count=$((size * 512)) conv=notrunc,sparse status=none
qemu-img convert -O qcow2 "$work/byol.raw" "$in.tmp"
mv "$in.tmp" "$in"
echo "byol-one-partition: $in now holds one partition of $((size / 2048)) MiB"

#!/bin/sh
# make_image_bootable.sh: make this Debian tree bootable on the disks it was installed on.
# UEFI or legacy BIOS, md RAID and LVM aware (baremetal.byol lab image).
set -eu
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C
t0=$(date +%s)
# each line says how many seconds the script has run (the installer saves the output in the installed system)
log() { echo "make_image_bootable: [$(( $(date +%s) - t0 ))s] $*"; }

# 1. mdadm.conf, so the initramfs assembles the arrays
if [ -r /proc/mdstat ] && grep -q '^md' /proc/mdstat; then
    mkdir -p /etc/mdadm
    {
        echo 'HOMEHOST <system>'
        echo 'MAILADDR root'
        mdadm --detail --scan
    } > /etc/mdadm/mdadm.conf
    log "wrote /etc/mdadm/mdadm.conf"
fi

# 2. the initramfs (md, LVM and the root filesystem's modules come from the installed tree). For the first
#    boot, only the drivers this server needs (MODULES=dep: the BYOL guide's "adhoc initramfs, embedding drivers
#    dedicated to the system the image will boot on"; about 3 times faster to build than MODULES=most, which
#    matters on a slow rescue system). The setting is not kept: later kernel updates build the image's usual
#    initramfs. If dep cannot work out the devices, every storage driver (MODULES=most).
first_boot_conf=/etc/initramfs-tools/conf.d/zz-byol-first-boot
initramfs() {
    if [ -e "/boot/initrd.img-$1" ]; then update-initramfs -u -k "$1"; else update-initramfs -c -k "$1"; fi
}
build_initramfs() {
    for k in /boot/vmlinuz-*; do
        [ -e "$k" ] || continue
        v=${k#/boot/vmlinuz-}
        echo 'MODULES=dep' > "$first_boot_conf"
        if initramfs "$v"; then
            log "initramfs of $v written (MODULES=dep: the drivers of this server)"
        else
            rm -f "$first_boot_conf"
            initramfs "$v"
            log "initramfs of $v written (MODULES=dep failed: every storage driver)"
        fi
        rm -f "$first_boot_conf"
    done
}

# 3. the boot loader, on the disks that hold /boot (or / without a separate /boot): physical disks under md/LVM
install_loader() {
    boot_src=$(findmnt -n -o SOURCE --target /boot)
    disks=$(lsblk -n -s -r -p -o NAME,TYPE "$boot_src" | awk '$2 == "disk" {print $1}' | sort -u)
    [ -n "$disks" ] || { echo "make_image_bootable: no disk found under $boot_src" >&2; exit 1; }
    # shellcheck disable=SC2086,SC2116  # echo joins the disk names (one per line) into one line
    log "disks holding /boot: $(echo $disks)"
    if [ -d /sys/firmware/efi ]; then
        if ! findmnt -n /boot/efi >/dev/null; then
            echo "make_image_bootable: UEFI boot but no ESP mounted on /boot/efi" >&2; exit 1
        fi
        # --no-nvram: the installer manages the boot entries; the fallback path keeps the disk bootable alone
        grub-install --target=x86_64-efi --efi-directory=/boot/efi --bootloader-id=debian --no-nvram --recheck
        log "GRUB installed on $(findmnt -n -o SOURCE /boot/efi)"
        mkdir -p /boot/efi/EFI/BOOT
        cp /boot/efi/EFI/debian/grubx64.efi /boot/efi/EFI/BOOT/BOOTX64.EFI
        # the other disks' ESPs: the installer copies /boot/efi to them after the hook (as OVHcloud's does);
        # the hook can neither mount them nor reach any disk that is not a target
    else
        for d in $disks; do
            grub-install --target=i386-pc --recheck "$d"
            log "GRUB installed in the boot code of $d"
        done
    fi
    update-grub
    log "grub.cfg written"
}

# 4. both. The loader does not need the new initramfs: grub.cfg names /boot/initrd.img-<version>, which
#    update-initramfs replaces in one rename. When every kernel already has one (the image was built with
#    them), GRUB is installed and configured while the initramfs is built: on a slow rescue system the two
#    take minutes each. Its output is shown when it is done; either one failing fails the hook.
all_have_initrd=yes
for k in /boot/vmlinuz-*; do
    [ -e "$k" ] && [ ! -e "/boot/initrd.img-${k#/boot/vmlinuz-}" ] && all_have_initrd=no
done
if [ "$all_have_initrd" = yes ]; then
    loader_log=$(mktemp)
    install_loader >"$loader_log" 2>&1 &
    loader=$!
    build_initramfs
    loader_rc=0
    wait "$loader" || loader_rc=$?
    cat "$loader_log"; rm -f "$loader_log"
    [ "$loader_rc" -eq 0 ] || { echo "make_image_bootable: installing GRUB failed (exit code $loader_rc)" >&2; exit 1; }
else
    build_initramfs
    install_loader
fi
# shellcheck disable=SC1010  # "done" is a word for log here, not the end of a loop
log done

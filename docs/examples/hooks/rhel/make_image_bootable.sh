#!/bin/sh
# make_image_bootable.sh for RHEL-family images (AlmaLinux, Rocky Linux, CentOS Stream, RHEL 8 and 9).
#
# NOT TESTED BY A BOOT: the baremetal.byol lab builds Debian images only. This is a starting point
# that follows the same steps as the lab's Debian hook (docs/examples/hooks/debian/), which is tested;
# boot your image in a VM before you rely on it.
#
# Runs confined in the installed tree, without network: /dev holds the target disks only, /proc, /sys
# (read-only; efivarfs read-only on UEFI), /run and /tmp are private, every target filesystem is mounted (the
# ESP on /boot/efi), /etc/fstab is written; no mount, no mknod (docs/byol.md, "The hook's confinement").
# The image needs: kernel, dracut, grub2-tools, mdadm and lvm2 when used, and for UEFI
# grub2-efi-x64 + shim-x64 (their files under /boot/efi/EFI/ are copied onto the ESP with the image),
# for legacy BIOS grub2-pc.
set -eu
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C
log() { echo "make_image_bootable: $*"; }

# 1. mdadm.conf, so the initramfs assembles the arrays
if [ -r /proc/mdstat ] && grep -q '^md' /proc/mdstat; then
    {
        echo 'MAILADDR root'
        mdadm --detail --scan
    } > /etc/mdadm.conf
    log "wrote /etc/mdadm.conf"
fi

# 2. the kernel command line: the root filesystem is new (new UUID); dracut's host-only
#    command line (rd.md.uuid, rd.lvm.lv) goes into the initramfs below
root_src=$(findmnt -n -o SOURCE /)
root_uuid=$(blkid -s UUID -o value "$root_src")
[ -n "$root_uuid" ] || { echo "make_image_bootable: no UUID for $root_src" >&2; exit 1; }
if command -v grubby >/dev/null 2>&1; then
    grubby --update-kernel=ALL --remove-args="root resume rd.lvm.lv rd.md.uuid" --args="root=UUID=$root_uuid"
fi

# 3. the initramfs of every installed kernel, for this machine (host-only: its disks, md, LVM)
for moddir in /lib/modules/*; do
    [ -d "$moddir" ] || continue
    v=${moddir##*/}
    [ -e "/boot/vmlinuz-$v" ] || continue
    dracut --force --hostonly --hostonly-cmdline "/boot/initramfs-$v.img" "$v"
    log "initramfs for $v"
done

# 4. the disks that hold /boot (or / without a separate /boot): physical disks under md/LVM
boot_src=$(findmnt -n -o SOURCE --target /boot)
disks=$(lsblk -n -s -r -p -o NAME,TYPE "$boot_src" | awk '$2 == "disk" {print $1}' | sort -u)
[ -n "$disks" ] || { echo "make_image_bootable: no disk found under $boot_src" >&2; exit 1; }
log "disks holding /boot: $(echo "$disks" | tr '\n' ' ')"

# 5. the boot loader
if [ -d /sys/firmware/efi ]; then
    findmnt -n /boot/efi >/dev/null || { echo "make_image_bootable: UEFI boot but no ESP mounted on /boot/efi" >&2; exit 1; }
    # the signed shim and GRUB come from the packages (no grub2-install on UEFI); find their directory
    efidir=
    for f in /boot/efi/EFI/*/grubx64.efi; do
        case $f in /boot/efi/EFI/BOOT/*) continue ;; esac
        if [ -e "$f" ]; then efidir=${f%/grubx64.efi}; break; fi
    done
    [ -n "$efidir" ] || { echo "make_image_bootable: no grubx64.efi under /boot/efi/EFI/<vendor>/" >&2; exit 1; }
    boot_uuid=$(blkid -s UUID -o value "$boot_src")
    if [ "$(findmnt -n -o TARGET --target /boot)" = /boot ]; then prefix=/grub2; else prefix=/boot/grub2; fi
    # a small grub.cfg on the ESP that loads the real one (what RHEL 9 ships; it names the filesystem by UUID)
    cat > "$efidir/grub.cfg" <<EOF
search --no-floppy --fs-uuid --set=dev $boot_uuid
set prefix=(\$dev)$prefix
export \$prefix
configfile \$prefix/grub.cfg
EOF
    grub2-mkconfig -o /boot/grub2/grub.cfg
    # the removable-media path, so each disk boots without an NVRAM entry
    if [ -e "$efidir/shimx64.efi" ]; then
        mkdir -p /boot/efi/EFI/BOOT
        cp "$efidir/shimx64.efi" /boot/efi/EFI/BOOT/BOOTX64.EFI
    fi
    # the other disks' ESPs: the installer copies /boot/efi to them after the hook (as OVHcloud's does);
    # the hook can neither mount them nor reach any disk that is not a target
else
    for d in $disks; do
        grub2-install --target=i386-pc --recheck "$d"
    done
    grub2-mkconfig -o /boot/grub2/grub.cfg
fi

# 6. SELinux: the files the installer wrote (fstab, mdadm.conf) have no label yet; relabel at first boot
if [ -e /etc/selinux/config ]; then
    touch /.autorelabel
fi
log "done"

#!/usr/bin/env bash
# The lab's foreign-style BYOL hook (baremetal.byol test tooling, never shipped).
#
# Written for this project, but it behaves the way OVHcloud's published Debian 12 example hook does, so the
# collection is tested against a hook that was not written for it:
#   - it takes the serial console settings from /proc/cmdline (the rescue system's) into GRUB's defaults;
#   - it deletes the installer's /etc/mdadm.conf and regenerates /etc/mdadm/mdadm.conf with Debian's mkconf;
#   - it installs GRUB with apt, offline, from the .deb files the image carries in /var/cache/apt/archives;
#     the package's postinst writes grub.cfg (it does so only because the image already has one);
#   - it installs the loader only on the ESP mounted at /boot/efi (the installer copies it to the other ESPs);
#   - it rebuilds the initramfs and deletes /root/.ovh, this script included, at its end.
# UEFI only: the lab image carries no grub-pc package.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C

say() { echo ">>> foreign hook: $*"; }

serial_console() {
    # console=ttyS<unit>,<speed><parity><bits> of the kernel we run under, for GRUB and the installed kernel
    local consoles arg tty opts unit speed parity bits
    consoles=$(tr ' ' '\n' </proc/cmdline | grep '^console=' || true)
    if [ -z "$consoles" ]; then
        say "no console= on /proc/cmdline: GRUB's defaults left as they are"
        return 0
    fi
    {
        echo "# written by /root/.ovh/make_image_bootable.sh from the installer's /proc/cmdline"
        # shellcheck disable=SC2016  # expanded by grub-mkconfig when it reads this file
        echo "GRUB_CMDLINE_LINUX=\"\$GRUB_CMDLINE_LINUX $(echo "$consoles" | tr '\n' ' ' | sed 's/ $//')\""
        arg=$(echo "$consoles" | grep '^console=ttyS' | tail -n 1 || true)
        if [ -n "$arg" ]; then
            tty=${arg#console=}; opts=${tty#*,}; tty=${tty%%,*}
            [ "$opts" != "$tty" ] || opts=115200n8
            unit=${tty#ttyS}
            speed=$(echo "$opts" | sed -n 's/^\([0-9]*\).*/\1/p')
            case "$(echo "$opts" | sed -n 's/^[0-9]*\([noe]\).*/\1/p')" in
                o) parity=odd ;; e) parity=even ;; *) parity=no ;;
            esac
            bits=$(echo "$opts" | sed -n 's/^[0-9]*[noe]\([5-8]\).*/\1/p')
            echo 'GRUB_TERMINAL="console serial"'
            echo "GRUB_SERIAL_COMMAND=\"serial --unit=${unit} --speed=${speed:-115200} --parity=${parity} --word=${bits:-8}\""
        fi
    } >/etc/default/grub.d/60-console.cfg
    say "console settings for GRUB: $(tr '\n' ' ' </etc/default/grub.d/60-console.cfg)"
}

md_config() {
    # the installer's /etc/mdadm.conf goes; Debian's own tool writes the file the initramfs reads
    rm -f /etc/mdadm.conf
    /usr/share/mdadm/mkconf force-generate
    say "$(grep -c '^ARRAY' /etc/mdadm/mdadm.conf || true) array(s) in /etc/mdadm/mdadm.conf (mkconf)"
}

boot_loader() {
    if [ ! -d /sys/firmware/efi ]; then
        echo "foreign hook: legacy BIOS is not supported by this lab image (it carries grub-efi-amd64 only)" >&2
        exit 1
    fi
    # from the image's apt cache: there is no network here
    apt-get install -y --no-install-recommends grub-efi-amd64
    grub-install --target=x86_64-efi --efi-directory=/boot/efi --no-nvram
    say "GRUB installed on $(findmnt -n -o SOURCE /boot/efi) only"
    apt-get purge -y grub-pc-bin
    apt-get autoremove -y
}

finish() {
    systemd-machine-id-setup
    update-initramfs -u
    rm -rf /root/.ovh
    say "done, /root/.ovh removed"
}

serial_console
md_config
boot_loader
finish

#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: byol_bootable_hook
short_description: Run a BYOL image's make_image_bootable.sh once inside the installed system
version_added: 0.1.0
author: baremetal.byol developers (@baremetal-byol)
description:
  - Runs the image's own C(/root/.ovh/make_image_bootable.sh) once, inside the installed tree (by default
    C(/tmp/a)), the way the OVHcloud Bring Your Own Linux installer does, and makes its failures visible.
  - Before running, the script is validated; it must exist inside the tree (a symbolic link that leads out
    of the tree is refused), be a regular file and be executable. Otherwise the module fails with the BYOL
    requirement message, before anything is mounted.
  - The script runs confined to the installed tree and the target disks. C(unshare) makes new mount, PID, UTS,
    IPC and (unless O(network=true)) network namespaces; in them a small standard-library Python program (stage 2)
    bind-mounts the tree onto itself with every filesystem of it C(nodev) (a device node shipped in the image
    cannot be opened), mounts a private V(/dev) (tmpfs) holding only the nodes of the target disks (O(disks) and
    the disks under the tree's filesystems), their partitions, the md and device-mapper (LVM) devices built only on
    them, C(null), C(zero), C(full), C(random), C(urandom), C(tty), C(ptmx) with a new C(devpts), the V(/dev)
    links (C(/dev/disk/by-id), C(by-uuid), C(by-partuuid), ...) that lead to them and nothing of the other
    disks; a new V(/proc) (V(/proc/sys), V(/proc/sysrq-trigger) read-only), a new read-only V(/sys) (and
    C(efivarfs), read-only, on UEFI), private V(/run) and V(/tmp) (tmpfs), and V(/run/udev) holding a read-only
    copy of the udev database entries of the allowed devices (for C(lsblk)); with O(network=true) a read-only
    copy of the rescue system's C(resolv.conf) over the tree's. Then it does C(pivot_root) into the tree and
    detaches the rescue system's root, so neither a double C(chroot) nor V(/proc/1/root) leads out of the tree,
    and no socket or file of the rescue system is reachable.
  - The script gets a bounded capability set (C(CAP_CHOWN), C(CAP_DAC_OVERRIDE), C(CAP_FOWNER), C(CAP_FSETID),
    C(CAP_KILL), C(CAP_SETGID), C(CAP_SETUID), C(CAP_SETPCAP), C(CAP_NET_BIND_SERVICE), C(CAP_IPC_LOCK),
    C(CAP_SYS_CHROOT), C(CAP_AUDIT_WRITE), C(CAP_SETFCAP); why each stays is in the collection's docs/byol.md)
    and C(no_new_privs). It has no C(mount), no C(mknod), no module loading, no raw I/O, no reboot, clock or keyring
    changes. It cannot make a device node nor mount a fresh C(devtmpfs), so the private V(/dev) is all it can
    open. When systemd is PID 1 of the rescue system, the hook also runs in a C(systemd-run --scope) with
    C(DevicePolicy=closed) and C(DeviceAllow=) of exactly those devices (the kernel's device cgroup).
  - The script is PID 1 of its namespace; when it exits or is killed on timeout, every process it started
    dies with it, and every mount of the namespace goes with it.
  - The environment is controlled; nothing from the rescue system or from Ansible is inherited (only
    C(PATH), C(HOME=/root), C(LANG=C.UTF-8), C(TERM=dumb), C(DEBIAN_FRONTEND=noninteractive), C(USER),
    C(LOGNAME), C(SHELL), C(BYOL_NETWORK) and O(environment)).
  - Afterwards, always (success, failure, timeout), what is left is killed and C(/proc/self/mountinfo) is checked
    to show the tree mounted exactly as it was found (nothing is mounted outside the hook's namespace).
  - Just before the script runs (and only when it runs), O(fstab) and O(mdadm_conf) are written into the tree,
    the way the BYOL installer prepares them for the hook (C(update-initramfs) and C(dracut) copy mdadm.conf,
    C(grub-mkconfig) reads fstab). Once the hook ran for an image, they belong to the installed system (a hook
    may rewrite mdadm.conf with C(mdadm --detail --scan)), and a later run that skips the hook leaves them alone.
  - The output is returned and saved in the installed system as C(/var/log/byol/make_image_bootable.log).
    A successful run writes the installer's record C(/var/lib/byol/make_image_bootable.done) holding O(image_digest)
    (or the script's SHA-256) and the UUID of the tree's filesystem (made by C(mkfs) on the rescue system, so an
    image cannot ship a record that matches). While the record matches, the module does not run the script again,
    even if the script is gone (OVH's example hooks remove C(/root/.ovh) at their end). A record that came with
    the image's files is ignored.
extends_documentation_fragment:
  - baremetal.byol.attributes
  - baremetal.byol.attributes.RESCUE
  - baremetal.byol.server_lock
attributes:
  check_mode:
    support: full
    details: Validates the script and reports whether it would run; runs and mounts nothing.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: The installer's record makes a second run report C(changed=false) without running the script (or
      needing it), unless O(force=true).
options:
  root:
    description:
      - The installed system's tree, with all of its filesystems mounted.
      - Resolved first (C(..), symbolic links); C(/) or a directory of the rescue system (C(/etc), C(/usr), C(/tmp)...) is
        refused.
    type: path
    default: /tmp/a
  script:
    description: Path of the hook inside the installed system (not on the rescue system).
    type: str
    default: /root/.ovh/make_image_bootable.sh
  timeout:
    description:
      - Seconds the script may run. When they are over, the script and every process it started are
        killed and the task fails. V(0) means no limit.
      - The default leaves room for C(update-initramfs) and C(grub-install) on slow machines.
    type: int
    default: 1800
  network:
    description:
      - Give the script the rescue system's network (and a copy of its C(resolv.conf)).
      - OVHcloud's BYOL documentation says internet access "may be available" to the hook, without promising it;
        the default is no network (only C(lo)), so a hook that works here does not depend on it. Images should
        install from their own package cache; set this only for a hook that must download.
    type: bool
    default: false
  force:
    description: Run the script even if the marker says it already ran for this image.
    type: bool
    default: false
  image_digest:
    description:
      - Digest of the installed image (for example the checksum the image step verified). Recorded in the marker;
        a run with a different digest runs the script again.
      - When omitted, the SHA-256 of the script itself is used.
    type: str
  fstab:
    description:
      - Content for C(/etc/fstab) of the installed system, written before the script runs (for example the
        RV(baremetal.byol.byol_partition#module:fstab) of the partitioning step). Not written when empty or
        when the script does not run.
    type: str
  mdadm_conf:
    description:
      - Content for the installed system's mdadm.conf, written before the script runs, as C(/etc/mdadm/mdadm.conf)
        when the tree has C(/etc/mdadm/) (Debian family), else C(/etc/mdadm.conf). Not written when empty or
        when the script does not run.
    type: str
  disks:
    description:
      - The target disks (for example O(baremetal.byol.byol_partition#module:disks) or the pre-flight's targets).
        They, their partitions and the md and device-mapper devices built only on them are the block devices the
        hook can open; the disks under the tree's own filesystems are always added. No other disk is in its V(/dev).
    type: list
    elements: path
    default: []
  esp_devices:
    description:
      - Every ESP of the layout (for example RV(baremetal.byol.byol_partition#module:esp_devices)). After a successful
        hook, each of them except the one mounted at C(/boot/efi) of the tree is made a copy of C(/boot/efi) (with
        mtools, file by file; symbolic links are not followed), so every disk boots alone, the way OVHcloud's
        installer syncs the ESPs after the hook. Checked again, and copied again if it differs, when the hook does
        not need to run.
    type: list
    elements: path
    default: []
  environment:
    description:
      - Extra environment variables for the script. Values are treated as secrets (C(no_log)) and are never
        returned.
    type: dict
    default: {}
  progress_file:
    description:
      - JSON file replaced every few seconds while the script runs, with its running time and its latest output line
        (values of O(environment) masked). The action plugin prints it in the play's output. Empty string to disable.
      - Not written in check mode.
    type: path
    default: /run/baremetal-byol/bootable_hook.progress
requirements:
  - util-linux (C(unshare) with C(--kill-child), C(pivot_root), C(blkid))
  - mtools (C(mdir), C(mcopy), C(mmd), C(mdel), C(mrd); only with O(esp_devices))
notes:
  - Root on the rescue system is required. The kernel must support mount, PID and network namespaces.
  - Where the rescue system's root cannot be pivoted (it runs from its initramfs C(rootfs)) or has no C(pivot_root),
    the tree is moved onto V(/) and chrooted into instead, as C(switch_root) does; without C(CAP_SYS_ADMIN) the
    hook cannot unmount it to reach what is beneath.
seealso:
  - name: BYOL README
    description: OVHcloud's Bring Your Own Linux documentation (the C(make_image_bootable.sh) contract).
    link: https://github.com/ovh/BringYourOwnLinux
"""

EXAMPLES = r"""
- name: Run the image's hook in the installed tree (no network, 30 minutes at most)
  baremetal.byol.byol_bootable_hook:
    root: /tmp/a
    image_digest: "sha256:{{ image_checksum }}"
    disks: [/dev/sda, /dev/sdb]

- name: Write fstab and mdadm.conf of the new layout, then run the hook
  baremetal.byol.byol_bootable_hook:
    root: /tmp/a
    fstab: "{{ partitioning.fstab }}"
    mdadm_conf: "{{ partitioning.mdadm_conf }}"

- name: Run it again after changing the image, with a shorter timeout
  baremetal.byol.byol_bootable_hook:
    root: /tmp/a
    timeout: 600
    force: true
"""

RETURN = r"""
ran:
  description: Whether the script ran in this invocation (or would run, in check mode).
  returned: always
  type: bool
rc:
  description: Exit code of the script. V(null) when it did not run.
  returned: always
  type: int
stdout:
  description: Standard output of the script.
  returned: always
  type: str
stderr:
  description: Standard error of the script.
  returned: always
  type: str
duration:
  description: Seconds the script ran (including mounting and cleanup).
  returned: when the script ran
  type: float
timed_out:
  description: Whether the script was killed because O(timeout) expired.
  returned: when the script ran
  type: bool
killed:
  description: PIDs of processes that were still running inside the tree after the script and were killed.
  returned: when the script ran
  type: list
  elements: int
files:
  description: Paths inside the tree written before the script ran (or that would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: [/etc/fstab, /etc/mdadm/mdadm.conf]
mounts:
  description: Paths inside the tree that the hook's namespace mounted (gone with the namespace).
  returned: when the script ran
  type: list
  elements: str
  sample: [/dev, /dev/pts, /dev/shm, /proc, /sys, /run, /run/udev, /tmp]
esp_synced:
  description: The ESPs that were (or, in check mode, would be) rewritten as a copy of C(/boot/efi).
  returned: always
  type: list
  elements: str
  sample: [/dev/sdb1]
device_cgroup:
  description:
    - Whether the hook also ran in a C(systemd-run --scope) with C(DevicePolicy=closed) and C(DeviceAllow=) of its
      devices (the kernel's device cgroup; only when systemd is PID 1 of the rescue system).
  returned: when the script ran
  type: bool
device_cgroup_note:
  description: Why the device cgroup was or was not used.
  returned: when the script ran
  type: str
devices:
  description: The block devices in the hook's V(/dev) (the targets, their partitions, md and dm devices on them).
  returned: when the script ran
  type: list
  elements: str
  sample: [/dev/sda, /dev/sda1, /dev/sda2, /dev/md127]
log:
  description: Path of the log inside the installed system.
  returned: when the script ran
  type: str
  sample: /var/log/byol/make_image_bootable.log
digest:
  description: The digest recorded in the marker (O(image_digest) or the script's SHA-256).
  returned: always
  type: str
marker:
  description: Path of the marker inside the installed system.
  returned: always
  type: str
  sample: /var/lib/byol/make_image_bootable.done
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.baremetal.byol.plugins.module_utils._chroot import run_module
from ansible_collections.baremetal.byol.plugins.module_utils._lock import LOCK_ARGUMENT_SPEC
from ansible_collections.baremetal.byol.plugins.module_utils._module import run_step


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **LOCK_ARGUMENT_SPEC,
            root=dict(type='path', default='/tmp/a'),
            script=dict(type='str', default='/root/.ovh/make_image_bootable.sh'),
            timeout=dict(type='int', default=1800),
            network=dict(type='bool', default=False),
            force=dict(type='bool', default=False),
            image_digest=dict(type='str'),
            fstab=dict(type='str'),
            mdadm_conf=dict(type='str'),
            environment=dict(type='dict', default={}, no_log=True),
            disks=dict(type='list', elements='path', default=[]),
            esp_devices=dict(type='list', elements='path', default=[]),
            progress_file=dict(type='path', default='/run/baremetal-byol/bootable_hook.progress'),
        ),
        supports_check_mode=True,
    )
    module.exit_json(**run_step(module, run_module))


if __name__ == '__main__':
    main()

#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: byol_partition
short_description: Partition disks with software RAID, LVM and filesystems from an OVHcloud-style layout
version_added: 0.1.0
description:
  - Turns a storage layout in the OVHcloud partitioning model into partition tables, md software RAID arrays,
    LVM volume groups and logical volumes, ZFS pools (where the rescue system has ZFS), filesystems and swap,
    and mounts everything in depth order under O(mount_root), ready for the image's files.
  - The plan is computed first and validated against the layout rules (one filling partition, swap never RAIDed,
    RAID level reduction, MBR 2 TiB limit, C(/boot) not XFS, sizes that fit...). Every violation fails before any disk is touched.
  - Adds the EFI system partition on every disk (UEFI, one independent ESP per disk, not RAIDed) or a BIOS boot
    partition on every disk (GPT with legacy boot).
  - Refuses disks that hold a mounted filesystem (outside O(mount_root)), active swap or the running system's root,
    that back a loop device (a file on one of their filesystems) or carry a device-mapper device that is not LVM.
  - Refuses anything in O(disks) that is not a whole disk (a partition, an md array, a logical volume).
  - Never tears down beyond the targets. An md array, volume group or ZFS pool that also lives on a disk that is
    not in O(disks) stops the run, naming that disk, before anything is changed.
  - Idempotent. When the disks already hold the planned tables, arrays, volumes and filesystems nothing is wiped;
    only what is not mounted gets mounted.
  - See L(docs/partitioning.md,https://github.com/baremetal-byol/baremetal.byol/blob/main/docs/partitioning.md) for the rules.
author: baremetal.byol developers (@baremetal-byol)
extends_documentation_fragment:
  - baremetal.byol.attributes
  - baremetal.byol.attributes.RESCUE
  - baremetal.byol.server_lock
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: The diff shows the disks' current partitions and filesystems beside the planned layout.
  idempotent:
    support: full
requirements:
  - sfdisk, wipefs, blkid, lsblk, findmnt, partx (util-linux, fdisk)
  - mkfs.ext4 (e2fsprogs), mkfs.xfs (xfsprogs), mkfs.btrfs (btrfs-progs), mkfs.vfat (dosfstools) for the filesystems used
  - mdadm for RAID, lvm2 for logical volumes, zfsutils-linux for ZFS
options:
  disks:
    description:
      - Block devices to use, in order. The first one carries the config drive space.
      - All of them are wiped unless they already match the plan.
    type: list
    elements: path
    required: true
  layout:
    description:
      - The partitions, in the OVHcloud partitioning model with snake_case keys.
    type: list
    elements: dict
    required: true
    suboptions:
      mount_point:
        description: Absolute mount point, or V(swap) for swap.
        type: str
        required: true
      fs_type:
        description: Filesystem.
        type: str
        choices: [ext3, ext4, xfs, btrfs, vfat, swap, zfs]
        required: true
      size:
        description:
          - Size in MiB of the partition on each disk (of the logical volume with O(layout[].lv_name)).
          - V(0) fills the remaining space; at most one item may do that, and never swap.
        type: int
        default: 0
      raid_level:
        description:
          - Software RAID level across all O(disks). Defaults to V(1). With one disk there is no RAID.
          - A level that needs more disks than there are is reduced in the order 6, 10, 5, 1, 0 with a warning.
          - V(7) (raidz3) is for ZFS only. Ignored for swap (one swap partition on every disk).
        type: int
        choices: [0, 1, 5, 6, 7, 10]
      lv_name:
        description:
          - Make this a logical volume of this name. Logical volumes with the same RAID level share one volume group
            (C(vg_r<level>)) on one md array; with RAID 0 the volume group spans one partition per disk (striped).
        type: str
      zpool_name:
        description:
          - Make this a ZFS dataset in the pool of this name (needs the ZFS tools and module on the rescue system).
          - One pool per name on one partition per disk, its vdevs from O(layout[].raid_level) (V(0) stripe, V(1) mirror,
            V(5)/V(6)/V(7) raidz1/2/3, V(10) striped mirrors), C(ashift) from the disks' physical sector size,
            C(compression=lz4), C(atime=off), C(xattr=sa), C(acltype=posixacl), altroot O(mount_root).
          - The dataset's C(mountpoint) is the mount point (mounted by ZFS, not listed in the fstab); with a size, its
            C(quota). V(/boot) may not be a dataset, nor V(/) without a separate V(/boot).
        type: str
  table_type:
    description: Partition table type. V(auto) means V(gpt).
    type: str
    choices: [auto, gpt, msdos]
    default: auto
  boot_mode:
    description: Firmware boot mode. V(auto) reads C(/sys/firmware/efi) of the rescue system.
    type: str
    choices: [auto, uefi, legacy]
    default: auto
  configdrive_size:
    description: MiB left free at the end of the first disk for P(baremetal.byol.byol_configdrive#module), 0 to 1024.
    type: int
    default: 64
  mount_root:
    description:
      - Directory under which the filesystems are mounted (C(/) of the new system).
      - Resolved first (C(..), symbolic links); C(/) or a directory of the rescue system (C(/etc), C(/usr), C(/tmp)...) is
        refused, and so is a layout whose mount point paths under it would exceed the kernel's limits (255 bytes a
        component, 4095 a path), before any disk is touched.
    type: path
    default: /tmp/a
  mount_esp:
    description:
      - Mount the first ESP on C(<mount_root>/boot/efi). Set to V(false) where the rescue kernel cannot mount vfat;
        the ESP is still created and formatted and appears in RV(fstab).
    type: bool
    default: true
notes:
  - Sizes are per disk, as in the OVHcloud API. A RAID 1 C(/boot) of 1024 MiB is a 1024 MiB partition on each disk.
  - md arrays use metadata 1.2 and stable names (C(md-root), C(md-boot), C(md-vg_r1)...), reachable as C(/dev/md/<name>).
seealso:
  - module: baremetal.byol.byol_configdrive
  - name: OVHcloud API and storage
    description: The partitioning model this module follows.
    link: https://help.ovhcloud.com/csm/en-dedicated-servers-api-partitioning?id=kb_article_view&sysparm_article=KB0043882
"""

EXAMPLES = r"""
- name: Two disks, RAID 1 /boot, swap on each disk, LVM root filling the rest
  baremetal.byol.byol_partition:
    disks: [/dev/sda, /dev/sdb]
    layout:
      - {mount_point: /boot, fs_type: ext4, size: 1024}
      - {mount_point: swap, fs_type: swap, size: 4096}
      - {mount_point: /, fs_type: ext4, size: 0, lv_name: root}
      - {mount_point: /var, fs_type: xfs, size: 20480, lv_name: var}
  register: storage

- name: One disk, MBR, legacy BIOS
  baremetal.byol.byol_partition:
    disks: [/dev/vda]
    table_type: msdos
    boot_mode: legacy
    layout:
      - {mount_point: /, fs_type: ext4, size: 0}
      - {mount_point: swap, fs_type: swap, size: 1024}

- name: Write the fstab of the new system
  ansible.builtin.copy:
    content: "{{ storage.fstab }}"
    dest: /tmp/a/etc/fstab
    mode: "0644"
"""

RETURN = r"""
plan:
  description: The plan (partitions per disk with sectors and types, md arrays, volume groups, logical volumes, filesystems, mounts).
  returned: always
  type: dict
differences:
  description: Why the disks do not match the plan (empty when they do).
  returned: always
  type: list
  elements: str
repartitioned:
  description: Whether the disks were (or in check mode would be) wiped and partitioned.
  returned: always
  type: bool
mounts:
  description: Filesystems in mount order with C(target) (under O(mount_root)) and C(mounted).
  returned: success and not check mode
  type: list
  elements: dict
devices:
  description: Per device path, C(uuid), C(fs_type), C(label), C(partuuid) as blkid reads them.
  returned: success and not check mode
  type: dict
fstab:
  description: An fstab for the new system, by filesystem UUID.
  returned: success and not check mode
  type: str
mdadm_conf:
  description: An mdadm.conf with an ARRAY line per array (empty without RAID).
  returned: success and not check mode
  type: str
esp_devices:
  description: The EFI system partitions, one per disk (UEFI); the first is mounted on /boot/efi.
  returned: success and not check mode
  type: list
  elements: str
boot_device:
  description: Device holding /boot (or / without /boot).
  returned: success and not check mode
  type: str
root_device:
  description: Device holding /.
  returned: success and not check mode
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.baremetal.byol.plugins.module_utils import _layout
from ansible_collections.baremetal.byol.plugins.module_utils import _partition
from ansible_collections.baremetal.byol.plugins.module_utils._lock import LOCK_ARGUMENT_SPEC
from ansible_collections.baremetal.byol.plugins.module_utils._module import run_step


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **LOCK_ARGUMENT_SPEC,
            disks=dict(type='list', elements='path', required=True),
            layout=dict(type='list', elements='dict', required=True, options=dict(
                mount_point=dict(type='str', required=True),
                fs_type=dict(type='str', required=True, choices=list(_layout.FS_TYPES)),
                size=dict(type='int', default=0),
                raid_level=dict(type='int', choices=[0, 1, 5, 6, 7, 10]),
                lv_name=dict(type='str'),
                zpool_name=dict(type='str'),
            )),
            table_type=dict(type='str', default='auto', choices=['auto', 'gpt', 'msdos']),
            boot_mode=dict(type='str', default='auto', choices=['auto', 'uefi', 'legacy']),
            configdrive_size=dict(type='int', default=64),
            mount_root=dict(type='path', default='/tmp/a'),
            mount_esp=dict(type='bool', default=True),
        ),
        supports_check_mode=True,
    )
    module.exit_json(**run_step(module, _partition.run_module))


if __name__ == '__main__':
    main()

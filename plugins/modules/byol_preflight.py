#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: byol_preflight
short_description: Check that a server in rescue mode can be reinstalled, and pick its target disks
version_added: 0.1.0
author: baremetal.byol developers (@baremetal-byol)
description:
  - Lists the server's disks with model, size, type (C(NVMe), C(SSD), C(HDD)), serial and
    C(/dev/disk/by-id) path, and groups them the way OVHcloud's C(diskGroupId) does - disks of the
    same type and the same size form a group.
  - Groups are numbered from 1 - fastest type first (NVMe, SSD, HDD), then the smaller disks first
    (system disks are usually the small fast ones), then the group with more disks, then by name.
    O(disk_group_id=0) means group 1, the default. Within a group disks are in natural name order
    and O(disks=N) takes the first N. A disk that holds the running system's root (a rescue system
    booted from a local disk) is in no group and never chosen; it is reported in RV(rescue.system_disks).
  - Every device is listed in RV(devices) with the properties root device hints match on and whether it
    is a candidate, with the reasons when it is not. Never candidates, whatever the groups or the hints
    say - zram and RAM disks, optical drives, removable media, BMC virtual media (virtual CD, floppy and
    disk of AMI, ATEN/Supermicro, iDRAC, iLO, Cisco CIMC, the Linux USB gadget of OpenBMC and iDRAC 9),
    read-only devices, devices without a medium, USB-attached disks (unless the hints ask for
    C(tran=usb)), loop devices (unless O(include_loop)), the rescue system's own disks and boot medium,
    and the paths of a multipath disk (the multipath device is the disk; two paths to one WWN without a
    multipath device are refused). Disk groups are made of candidates only.
  - O(root_device_hints) choose the disks the way ironic-python-agent's root device hints do, and win
    over O(disk_group_id).
  - Reports the disks that are not targets and carry what an old installation left (md superblocks, LVM
    PVs, ZFS pool labels, EFI system partitions, BIOS boot partitions, config drives, boot code) as
    warnings, and refuses when such a disk carries a name the new installation creates too (an md array,
    volume group or ZFS pool of the same name, or a C(config-2) filesystem) - the installed system would
    find both at boot.
  - Proves the host is a rescue system for the target disks - the running system's root filesystem
    is on none of them - and refuses targets that hold a mounted filesystem or active swap (mounts
    under O(mount_root), left by an earlier run of this collection, are allowed).
  - Checks that every command the installation will run is present, naming the Debian package
    that provides each missing one.
  - Reports the boot mode (from C(/sys/firmware/efi)), the memory and the scratch space available
    (used to decide where an image can be staged).
  - Reads only; never changes anything (also outside check mode).
extends_documentation_fragment:
  - baremetal.byol.attributes
  - baremetal.byol.attributes.RESCUE
  - baremetal.byol.disk_safety
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  installer:
    description:
      - V(byoi) installs an image onto one disk; V(byol) partitions disks and copies an image's files.
      - Decides the default number of target disks and the commands that must be present.
    type: str
    choices: [byoi, byol]
    default: byoi
  disk_group_id:
    description: The disk group (C(diskGroupId)) to install on; V(0) is group 1.
    type: int
    default: 0
  disks:
    description:
      - How many disks of the group to use (C(partitioning.disks)), the first ones in name order.
      - Default 1 for V(byoi), all disks of the group for V(byol).
    type: int
  target_disks:
    description:
      - Explicit target disks (device paths or C(/dev/disk/by-id) links); when given, O(disk_group_id)
        and O(disks) are ignored. Loop devices are accepted here (tests).
    type: list
    elements: path
  root_device_hints:
    description:
      - Root device hints as ironic-python-agent has them - a mapping of C(size) (GiB), C(model), C(vendor),
        C(serial), C(wwn), C(wwn_with_extension), C(wwn_vendor_extension), C(name), C(rotational), C(hctl),
        C(by_path), C(tran) to a value or an expression with an operator - C(==), C(!=), C(<), C(<=), C(>),
        C(>=), C(=) (means C(>=), as in oslo), C(<range-in> [ low high ]) for C(size); C(s==), C(s!=), C(s<),
        C(s<=), C(s>), C(s>=), C(<in>) (substring) and C(<or>) for strings. A list is the C(<or>) of its values.
      - A disk must match every hint. Strings compare case-insensitively; C(size) without an operator and with
        C(==) compares whole GiB (a 960 GB disk is 894 GiB). See C(docs/partitioning.md).
      - The candidates that match are the targets (BYOI the first, BYOL all of them or the first O(disks)),
        in disk group order. O(disk_group_id) is then ignored. Not with O(target_disks).
    type: dict
  wipe_other_disks:
    description:
      - The disks that are not targets and carry what an old installation left are to be wiped (by
        M(baremetal.byol.byol_wipe_disks), listed in RV(wipe_disks)); their names then do not count as clashes.
        Pre-flight itself wipes nothing. Removable media, virtual media and the other devices that are never
        targets are never wiped.
    type: bool
    default: false
  boot_mode:
    description: Boot mode to assume; V(auto) reads C(/sys/firmware/efi).
    type: str
    choices: [auto, uefi, legacy]
    default: auto
  layout:
    description:
      - The BYOL layout (as for M(baremetal.byol.byol_partition)), used to know which C(mkfs), C(mdadm)
        and LVM commands are needed.
    type: list
    elements: dict
  image_type:
    description: The image format (C(qcow2) or C(raw)).
    type: str
    choices: [qcow2, raw]
  tools:
    description: More commands that must be present.
    type: list
    elements: str
    default: []
  check_in_use:
    description: Refuse target disks that hold a mounted filesystem or active swap.
    type: bool
    default: true
  scratch_dir:
    description: Scratch directory whose free space is reported (for staging big images).
    type: path
requirements:
  - lsblk, findmnt (util-linux)
notes:
  - The server must be booted into a rescue system whose root is not on the target disks (a RAM
    disk, NFS, or another disk).
seealso:
  - module: baremetal.byol.byol_partition
  - module: baremetal.byol.byol_image_burn
"""

EXAMPLES = r"""
- name: Pre-flight for a BYOI install on the default disk group
  baremetal.byol.byol_preflight:
    installer: byoi
  register: preflight

- name: Pre-flight for a BYOL install on the first two disks of group 2
  baremetal.byol.byol_preflight:
    installer: byol
    disk_group_id: 2
    disks: 2
    layout:
      - {mount_point: /, fs_type: ext4, size: 0, raid_level: 1}

- name: Pre-flight for a BYOL install on the two Samsung NVMe disks with these serials
  baremetal.byol.byol_preflight:
    installer: byol
    root_device_hints:
      model: "<in> samsung"
      serial: [S64FNE0R1234, S64FNE0R1235]
      size: ">= 800"

- name: Show the chosen disks
  ansible.builtin.debug:
    msg: "{{ preflight.targets }} ({{ preflight.boot_mode }})"
"""

RETURN = r"""
boot_mode:
  description: The boot mode used (V(uefi) or V(legacy)).
  returned: success
  type: str
  sample: uefi
boot_mode_detected:
  description: The boot mode of the running rescue system.
  returned: success
  type: str
  sample: uefi
devices:
  description:
    - Every whole device of the server (disks, loop devices, optical drives, multipath devices) with the fields
      of RV(disks) and C(kind) (lsblk's type), C(vendor), C(hctl), C(by_path), C(wwn_with_extension),
      C(wwn_vendor_extension), C(hotplug), C(read_only), C(logical_sector_size), C(physical_sector_size),
      C(candidate), C(reasons) (why it is not a candidate), C(signatures) (what an old installation left
      on it, see RV(other_disks)), and with hints C(hints_match) and C(hints_mismatch).
  returned: success
  type: list
  elements: dict
hints:
  description: The root device hints used (empty without).
  returned: success
  type: dict
other_disks:
  description:
    - The devices that are not targets and carry md superblocks, LVM PVs, ZFS pool labels, an EFI system
      partition, a BIOS boot partition, a config drive or boot code; they are left alone (and named in a
      warning).
  returned: success
  type: list
  elements: dict
  sample: [{path: /dev/sdc, candidate: true, signatures: ['md superblock on /dev/sdc1 (array old:md-vg_r1)']}]
wipe_disks:
  description: With O(wipe_other_disks), the disks of RV(other_disks) to wipe (candidates only).
  returned: success
  type: list
  elements: str
  sample: [/dev/sde]
disks:
  description: Every candidate disk of the server (see RV(devices) for the others).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Kernel name.
      type: str
      sample: nvme0n1
    path:
      description: Device path.
      type: str
      sample: /dev/nvme0n1
    by_id:
      description: Preferred C(/dev/disk/by-id) path (model and serial first, then WWN), or V(null).
      type: str
      sample: /dev/disk/by-id/nvme-SAMSUNG_MZQL2960HCJR-00A07_S64FNE0R1234
    by_id_links:
      description: All C(/dev/disk/by-id) paths of the disk.
      type: list
      elements: str
    model:
      description: Model.
      type: str
      sample: SAMSUNG MZQL2960HCJR-00A07
    serial:
      description: Serial number.
      type: str
      sample: S64FNE0R1234
    wwn:
      description: World wide name, when the disk has one.
      type: str
    size:
      description: Size in bytes.
      type: int
      sample: 960197124096
    type:
      description: V(NVMe), V(SSD) or V(HDD).
      type: str
      sample: NVMe
    transport:
      description: Transport as lsblk reports it (for example nvme, sata, sas, virtio).
      type: str
    rotational:
      description: Whether the disk is rotational.
      type: bool
    removable:
      description: Whether the disk is removable.
      type: bool
    group:
      description: The disk group it belongs to.
      type: int
      sample: 1
groups:
  description: The disk groups, numbered from 1.
  returned: always
  type: list
  elements: dict
  sample: [{id: 1, type: NVMe, size: 960197124096, count: 2, disks: [/dev/nvme0n1, /dev/nvme1n1]}]
group:
  description: The group the targets were chosen from (V(null) with O(target_disks)).
  returned: success
  type: dict
targets:
  description: The target disks, in order.
  returned: success
  type: list
  elements: str
  sample: [/dev/nvme0n1, /dev/nvme1n1]
target_disks:
  description: The entries of RV(disks) for the targets.
  returned: success
  type: list
  elements: dict
target_size:
  description: Size of the smallest target disk in bytes.
  returned: success
  type: int
memory:
  description: Memory in bytes (C(total), C(available)).
  returned: success
  type: dict
  sample: {total: 68719476736, available: 66571993088}
scratch:
  description: Free bytes in C(/dev/shm) (C(shm_available)), C(/tmp) (C(tmp_available)) and O(scratch_dir) (C(dir_available)).
  returned: success
  type: dict
tools:
  description: The commands checked, with their paths.
  returned: success
  type: dict
  sample: {qemu-img: /usr/bin/qemu-img}
missing_tools:
  description: Commands that are missing (on failure).
  returned: failure
  type: list
  elements: str
in_use:
  description: Why target disks are in use (on failure).
  returned: failure
  type: list
  elements: str
rescue:
  description: The running (rescue) system.
  returned: success
  type: dict
  contains:
    root_source:
      description: The device of the running system's root filesystem, or V(null) for a RAM or network root.
      type: str
      sample: null
    system_disks:
      description: The whole disks that root lives on; they are in no disk group and never chosen.
      type: list
      elements: str
      sample: []
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.baremetal.byol.plugins.module_utils._disk_select import DISK_SAFETY_ARGUMENT_SPEC
from ansible_collections.baremetal.byol.plugins.module_utils._module import run_step
from ansible_collections.baremetal.byol.plugins.module_utils._preflight import run_module


def main():
    module = AnsibleModule(
        argument_spec=dict(
            installer=dict(type='str', choices=['byoi', 'byol'], default='byoi'),
            disk_group_id=dict(type='int', default=0),
            disks=dict(type='int'),
            target_disks=dict(type='list', elements='path'),
            **DISK_SAFETY_ARGUMENT_SPEC,
            root_device_hints=dict(type='dict'),
            wipe_other_disks=dict(type='bool', default=False),
            boot_mode=dict(type='str', choices=['auto', 'uefi', 'legacy'], default='auto'),
            layout=dict(type='list', elements='dict'),
            image_type=dict(type='str', choices=['qcow2', 'raw']),
            tools=dict(type='list', elements='str', default=[]),
            check_in_use=dict(type='bool', default=True),
            scratch_dir=dict(type='path'),
        ),
        supports_check_mode=True,
    )
    module.exit_json(**run_step(module, run_module))


if __name__ == '__main__':
    main()

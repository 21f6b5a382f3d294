#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: byol_wipe_disks
short_description: Wipe what an old installation left on disks that are not install targets
version_added: 0.1.0
author: baremetal.byol developers (@baremetal-byol)
description:
  - The step behind the roles' C(byol_wipe_other_disks) option. M(baremetal.byol.byol_preflight) names the disks
    that are not targets and carry md superblocks, LVM PVs, ZFS pool labels, EFI system partitions, BIOS boot
    partitions, config drives or boot code (RV(baremetal.byol.byol_preflight#module:wipe_disks)); this module wipes them.
  - Every disk is classified again - removable media, BMC virtual media, optical drives, read-only devices, loop
    devices (unless O(include_loop)), the paths of a multipath disk and the rescue system's own disks are refused,
    whatever O(disks) says. A disk with a mounted filesystem or active swap is refused.
  - Wiping stops the md arrays, volume groups and ZFS pools on the disk, erases every signature of its partitions
    and of the disk (C(wipefs --all)), and zeroes the boot code of its first sector (a legacy BIOS could otherwise
    start an old boot loader from it). The data itself is not overwritten.
  - A disk that carries none of these is left alone.
extends_documentation_fragment:
  - baremetal.byol.attributes
  - baremetal.byol.attributes.RESCUE
  - baremetal.byol.disk_safety
  - baremetal.byol.server_lock
attributes:
  check_mode:
    support: full
    details: Reports what each disk carries and would lose; writes nothing.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: A wiped disk carries nothing; a second run changes nothing.
options:
  disks:
    description: The disks to wipe (device paths or C(/dev/disk/by-id) links).
    type: list
    elements: path
    required: true
requirements:
  - lsblk, wipefs (util-linux); mdadm, lvm2 and zfsutils-linux when the disks carry arrays, volume groups or pools
seealso:
  - module: baremetal.byol.byol_preflight
"""

EXAMPLES = r"""
- name: Wipe the disks pre-flight found with an old installation on them
  baremetal.byol.byol_wipe_disks:
    disks: "{{ byol_preflight.wipe_disks }}"
  when: byol_preflight.wipe_disks | length > 0
"""

RETURN = r"""
wiped:
  description: The disks wiped (in check mode, to be wiped), each with what it carried.
  returned: success
  type: list
  elements: dict
  sample: [{path: /dev/sdc, signatures: ['EFI system partition /dev/sdc1', 'LVM PV on /dev/sdc2 (VG vg_r1)']}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.baremetal.byol.plugins.module_utils._disk_select import DISK_SAFETY_ARGUMENT_SPEC
from ansible_collections.baremetal.byol.plugins.module_utils._disk_wipe import run_module
from ansible_collections.baremetal.byol.plugins.module_utils._lock import LOCK_ARGUMENT_SPEC
from ansible_collections.baremetal.byol.plugins.module_utils._module import run_step


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **LOCK_ARGUMENT_SPEC,
            disks=dict(type='list', elements='path', required=True),
            **DISK_SAFETY_ARGUMENT_SPEC,
        ),
        supports_check_mode=True,
    )
    module.exit_json(**run_step(module, run_module))


if __name__ == '__main__':
    main()

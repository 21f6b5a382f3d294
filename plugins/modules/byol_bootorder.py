#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: byol_bootorder
short_description: Make the firmware boot the installed disk (UEFI NVRAM entry and BootOrder, or legacy check)
version_added: 0.1.0
author: baremetal.byol developers (@baremetal-byol)
description:
  - On UEFI, finds the EFI system partition (ESP) of each boot disk (from O(esp_partitions) or by its GPT type
    C(C12A7328-F81F-11D2-BA4B-00A0C93EC93B), MBR type C(ef)), checks that the loader O(loader) exists on it
    (read with mtools, without mounting; any case and either slash, as FAT and the firmware do), creates one NVRAM
    boot entry per disk with a stable label, never a duplicate, removes stale entries this module created
    earlier (identified by O(label)), and places the entries in C(BootOrder) as O(boot_order_policy) says.
  - Existing entries are matched by ESP partition GUID (or MBR signature and partition number) and loader path,
    so an entry made by C(grub-install) for the same loader is reused rather than duplicated.
  - On legacy BIOS, NVRAM is not touched. The module checks that each disk has boot code in its MBR (and, on GPT,
    a BIOS boot partition with GRUB's core image) and reports it; it fails if no disk can boot.
extends_documentation_fragment:
  - baremetal.byol.attributes
  - baremetal.byol.attributes.RESCUE
  - baremetal.byol.server_lock
attributes:
  check_mode:
    support: full
    details: Reads NVRAM and the disks, and reports the planned entries and BootOrder; writes nothing.
  diff_mode:
    support: full
    details: Shows BootOrder (with labels) before and after.
  idempotent:
    support: full
    details: A second run finds its entries in place and runs no efibootmgr write.
options:
  disks:
    description:
      - The boot disks, in the wanted boot order (for software RAID, every disk that carries an ESP).
    type: list
    elements: path
    required: true
  loader:
    description:
      - Path of the EFI loader on the ESP (C(efiBootloaderPath) of the install request). Any case, either slash.
      - Ignored (accepted) in legacy mode.
    type: str
    default: \EFI\debian\grubx64.efi
  label:
    description:
      - Label of the NVRAM entries. With several disks each entry is labelled C(<label> (<disk name>)).
      - Entries carrying this label that match none of the current disks' ESPs are removed as stale.
    type: str
    default: byol
  boot_order_policy:
    description:
      - V(first) puts the new entries first.
      - V(after_network) keeps the network boot entries (PXE, HTTP) first, in their order, and puts the new entries
        right after them (for providers that PXE boot every server and chain to the disk).
      - V(none) does not touch NVRAM at all; the loader is still verified.
    type: str
    choices: [first, after_network, none]
    default: first
  esp_partitions:
    description:
      - ESP device paths (for example from the partitioning step's result). When omitted, the ESPs are found on
        O(disks) by partition type.
    type: list
    elements: path
  boot_mode:
    description:
      - V(auto) uses UEFI when the rescue system was booted with UEFI (C(/sys/firmware/efi) exists), else legacy.
    type: str
    choices: [auto, uefi, legacy]
    default: auto
requirements:
  - efibootmgr (UEFI, unless O(boot_order_policy=none))
  - mtools (UEFI loader check)
  - fdisk (C(sfdisk --json))
notes:
  - efibootmgr creates entries through the kernel's efivarfs; the rescue system must be booted in UEFI mode to
    change NVRAM.
seealso:
  - module: baremetal.byol.byol_bootable_hook
"""

EXAMPLES = r"""
- name: Boot the installed disk first (BYOI, efiBootloaderPath from the request)
  baremetal.byol.byol_bootorder:
    disks: [/dev/sda]
    loader: \efi\debian\grubx64.efi

- name: Two RAID1 disks, keep PXE first (provider chains from PXE to the disk)
  baremetal.byol.byol_bootorder:
    disks: [/dev/nvme0n1, /dev/nvme1n1]
    boot_order_policy: after_network

- name: Only verify the loader, leave NVRAM as it is
  baremetal.byol.byol_bootorder:
    disks: [/dev/sda]
    loader: /EFI/BOOT/BOOTX64.EFI
    boot_order_policy: none
"""

RETURN = r"""
boot_mode:
  description: The boot mode used.
  returned: always
  type: str
  sample: uefi
loaders:
  description: Loader check per disk (UEFI).
  returned: when boot_mode is uefi
  type: list
  elements: dict
  sample: [{disk: /dev/sda, esp: /dev/sda1, loader: '\EFI\debian\grubx64.efi', exists: true, size: 4194304, pe: true}]
entries:
  description: The NVRAM entry per disk (number, label, ESP partition GUID).
  returned: when boot_mode is uefi and boot_order_policy is not none
  type: list
  elements: dict
  sample: [{disk: /dev/sda, num: '0003', label: byol, partuuid: 4b1c..., created: true}]
created:
  description: Entry numbers created (in check mode, the disks they would be created for).
  returned: when boot_mode is uefi
  type: list
  elements: str
deleted:
  description: Stale or duplicate entries of this module that were removed.
  returned: when boot_mode is uefi
  type: list
  elements: str
boot_order_before:
  description: BootOrder before the run.
  returned: when boot_mode is uefi and NVRAM was read
  type: list
  elements: str
boot_order_after:
  description: BootOrder after the run (planned, in check mode; new entries appear as C(new:<disk>)).
  returned: when boot_mode is uefi and NVRAM was read
  type: list
  elements: str
legacy:
  description: Legacy boot check per disk.
  returned: when boot_mode is legacy
  type: list
  elements: dict
  sample: [{disk: /dev/sda, boot_code: true, loader: grub, bios_boot_partition: /dev/sda1, bios_boot_code: true}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.baremetal.byol.plugins.module_utils import _bootorder
from ansible_collections.baremetal.byol.plugins.module_utils._lock import LOCK_ARGUMENT_SPEC
from ansible_collections.baremetal.byol.plugins.module_utils._module import run_step


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **LOCK_ARGUMENT_SPEC,
            disks=dict(type='list', elements='path', required=True),
            loader=dict(type='str', default='\\EFI\\debian\\grubx64.efi'),
            label=dict(type='str', default='byol'),
            boot_order_policy=dict(type='str', default='first', choices=['first', 'after_network', 'none']),
            esp_partitions=dict(type='list', elements='path'),
            boot_mode=dict(type='str', default='auto', choices=['auto', 'uefi', 'legacy']),
        ),
        supports_check_mode=True,
    )
    module.exit_json(**run_step(module, _bootorder.run_module))


if __name__ == '__main__':
    main()

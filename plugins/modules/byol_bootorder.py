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

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.baremetal.byol.plugins.module_utils import _blockdev
from ansible_collections.baremetal.byol.plugins.module_utils import _efi as efi
from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError, ValidationError, fail_from_error
from ansible_collections.baremetal.byol.plugins.module_utils._lock import LOCK_ARGUMENT_SPEC, take_server_lock
from ansible_collections.baremetal.byol.plugins.module_utils._runner import CommandRunner


def legacy_check(runner, disks):
    report = []
    for disk in disks:
        sector = efi.read_first_sector(disk)
        mbr = efi.inspect_mbr(sector)
        item = {'disk': disk, 'boot_code': mbr['boot_code'], 'loader': mbr['loader'],
                'signature_55aa': mbr['signature_55aa'], 'bios_boot_partition': None, 'bios_boot_code': None}
        table = _blockdev.read_table(runner, disk)
        if table:
            parts = efi.find_bios_boot(table)
            if parts:
                sector_size = table.get('sectorsize', 512)
                part = parts[0]
                item['bios_boot_partition'] = part.get('node')
                data = efi.read_first_sector(disk, offset=int(part['start']) * int(sector_size), length=512)
                item['bios_boot_code'] = any(b != 0 for b in bytearray(data))
        item['bootable'] = bool(mbr['boot_code'] and mbr['signature_55aa'] and
                                (item['bios_boot_partition'] is None or item['bios_boot_code']))
        report.append(item)
    return report


def esps_for_disks(runner, disks, esp_partitions):
    """One ESP per disk (the first by partition number), optionally restricted to ``esp_partitions``."""
    wanted = set(os.path.realpath(p) for p in esp_partitions or [])
    result = []
    for disk in disks:
        table = _blockdev.read_table(runner, disk)
        if table is None:
            raise ValidationError('%s has no partition table; it cannot hold an EFI system partition.' % disk)
        esps = efi.find_esps(table, disk)
        if wanted:
            esps = [e for e in esps if os.path.realpath(e['node']) in wanted]
        if not esps:
            raise ValidationError('No EFI system partition found on %s (GPT type C12A7328-F81F-11D2-BA4B-00A0C93EC93B%s).'
                                  % (disk, ', one of %s' % ', '.join(sorted(wanted)) if wanted else ''))
        esps.sort(key=lambda e: e['number'])
        result.append(esps[0])
    return result


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
    p = module.params
    runner = CommandRunner(module)
    result = dict(changed=False)
    try:
        take_server_lock(module, 'byol_bootorder', module.params['lock_timeout'])  # held until the module's process ends
        if not p['disks']:
            raise ValidationError('disks must name at least one boot disk.')
        for disk in p['disks']:
            if not os.path.exists(disk):
                raise ValidationError('Boot disk %s does not exist.' % disk)
        label = (p['label'] or '').strip()
        if not label or any(ord(c) < 32 for c in label):
            raise ValidationError('label must be a non-empty single line.')
        mode = p['boot_mode']
        if mode == 'auto':
            mode = _blockdev.detect_boot_mode()
        result['boot_mode'] = mode

        if mode == 'legacy':
            report = legacy_check(runner, p['disks'])
            result['legacy'] = report
            if not any(r['bootable'] for r in report):
                raise ByolError('No disk has legacy boot code (MBR boot code%s): the image or the hook must install a '
                                'boot loader (e.g. grub-install --target=i386-pc) for a legacy BIOS to boot it.'
                                % (' and GRUB in the BIOS boot partition' if any(r['bios_boot_partition'] for r in report)
                                   else ''), **result)
            missing = [r['disk'] for r in report if not r['bootable']]
            if missing:
                module.warn('No legacy boot code on %s; only the other disks can boot.' % ', '.join(missing))
            result['msg'] = 'Legacy BIOS: boot code found on %s; NVRAM is not used.' % ', '.join(
                r['disk'] for r in report if r['bootable'])
            module.exit_json(**result)

        loader = efi.normalize_loader(p['loader'])
        esps = esps_for_disks(runner, p['disks'], p['esp_partitions'])
        checks = []
        for esp in esps:
            chk = efi.check_loader(runner, esp['node'], loader)
            chk['disk'] = esp['disk']
            checks.append(chk)
        result['loaders'] = checks
        bad = [c for c in checks if not c['exists'] or c['pe'] is False]
        if bad:
            raise ValidationError('The loader %s (efiBootloaderPath) is not on the EFI system partition: %s. Fix '
                                  'efiBootloaderPath or the image.' % (loader, '; '.join(
                                      '%s: %s' % (c['esp'], 'not a PE/EFI file' if c['exists'] else 'missing')
                                      for c in bad)), **result)
        if p['boot_order_policy'] == 'none':
            result.update(created=[], deleted=[])
            result['msg'] = 'Loader %s found on %s; NVRAM left untouched (boot_order_policy=none).' % (
                loader, ', '.join(c['esp'] for c in checks))
            module.exit_json(**result)

        if not _blockdev.booted_uefi():
            raise ByolError('boot_mode is uefi but the rescue system was not booted with UEFI (/sys/firmware/efi is '
                            'missing), so NVRAM cannot be changed. Boot the rescue system in UEFI mode or use '
                            'boot_order_policy=none.', **result)
        runner.which('efibootmgr')
        state = efi.read_state(runner)
        targets = []
        for esp in esps:
            t = {'disk': esp['disk'], 'number': esp['number'], 'loader': loader,
                 'label': efi.entry_label(label, os.path.realpath(esp['disk']), len(esps))}
            if esp['scheme'] == 'GPT':
                t['guid'] = esp['guid']
            else:
                t['signature'] = esp['signature']
            targets.append(t)
        plan = efi.plan_boot_entries(state, targets, label, p['boot_order_policy'])
        new_labels = dict(('new:%s' % t['disk'], t['label']) for t in plan['create'])
        result['boot_order_before'] = plan['order_before']
        result['boot_order_after'] = plan['order_after']
        result['deleted'] = plan['delete']
        result['created'] = ['new:%s' % t['disk'] for t in plan['create']]
        result['changed'] = plan['changed']
        if module._diff:
            result['diff'] = {'before': efi.describe_order(state, plan['order_before']),
                              'after': efi.describe_order(state, plan['order_after'], new_labels),
                              'before_header': 'NVRAM BootOrder', 'after_header': 'NVRAM BootOrder'}
        entries = []
        created = {}
        if plan['changed'] and not module.check_mode:
            created, state = efi.apply_plan(runner, plan, targets)
            result['created'] = [created[d] for d in sorted(created)]
            result['boot_order_after'] = state['boot_order']
            if module._diff:
                result['diff']['after'] = efi.describe_order(state, state['boot_order'])
        for t in targets:
            num = created.get(t['disk']) or plan['keep'].get(t['disk'])
            entries.append({'disk': t['disk'], 'num': num or 'new:%s' % t['disk'], 'label': t['label'],
                            'partuuid': t.get('guid'), 'created': t['disk'] in created or num is None})
        result['entries'] = entries
        result['msg'] = 'BootOrder %s -> %s' % (','.join(result['boot_order_before']), ','.join(result['boot_order_after']))
    except ByolError as e:
        fail_from_error(module, e, **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The boot step (byol_bootorder): legacy boot-code check, or loader check and NVRAM entries.

Do not use this from other collections or standalone plugins/modules!

The parsing and planning of boot entries (efibootmgr, ESPs, MBR) is in :mod:`_efi`; this file
decides from the module's arguments what to check and what to change, in that order: arguments,
boot mode, legacy report (no NVRAM) or the loader on every ESP, then the entries and BootOrder.
"""

from __future__ import annotations

import os

from ansible_collections.baremetal.byol.plugins.module_utils import _blockdev
from ansible_collections.baremetal.byol.plugins.module_utils import _efi as efi
from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError, ValidationError
from ansible_collections.baremetal.byol.plugins.module_utils._lock import take_server_lock


def legacy_check(runner, disks):
    """Per disk: MBR boot code, and on GPT the BIOS boot partition's GRUB core image."""
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


def check_arguments(params):
    """The label (stripped); raises ValidationError for missing disks or a bad label."""
    if not params['disks']:
        raise ValidationError('disks must name at least one boot disk.')
    for disk in params['disks']:
        if not os.path.exists(disk):
            raise ValidationError('Boot disk %s does not exist.' % disk)
    label = (params['label'] or '').strip()
    if not label or any(ord(c) < 32 for c in label):
        raise ValidationError('label must be a non-empty single line.')
    return label


def legacy(module, runner, result):
    """Legacy BIOS: report the boot code of every disk; fail when none can boot."""
    report = legacy_check(runner, module.params['disks'])
    result['legacy'] = report
    if not any(r['bootable'] for r in report):
        raise ByolError('No disk has legacy boot code (MBR boot code%s): the image or the hook must install a '
                        'boot loader (e.g. grub-install --target=i386-pc) for a legacy BIOS to boot it.'
                        % (' and GRUB in the BIOS boot partition' if any(r['bios_boot_partition'] for r in report)
                           else ''))
    missing = [r['disk'] for r in report if not r['bootable']]
    if missing:
        module.warn('No legacy boot code on %s; only the other disks can boot.' % ', '.join(missing))
    result['msg'] = 'Legacy BIOS: boot code found on %s; NVRAM is not used.' % ', '.join(
        r['disk'] for r in report if r['bootable'])
    return result


def check_loaders(runner, esps, loader, result):
    """The loader on every ESP (mtools); raises ValidationError naming the ESPs without it."""
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
                                  for c in bad)))
    return checks


def boot_targets(esps, loader, label):
    """The wanted NVRAM entry of every ESP."""
    targets = []
    for esp in esps:
        t = {'disk': esp['disk'], 'number': esp['number'], 'loader': loader,
             'label': efi.entry_label(label, os.path.realpath(esp['disk']), len(esps))}
        if esp['scheme'] == 'GPT':
            t['guid'] = esp['guid']
        else:
            t['signature'] = esp['signature']
        targets.append(t)
    return targets


def nvram(module, runner, targets, label, result):
    """Plan the entries and BootOrder, and (unless check mode) write them."""
    state = efi.read_state(runner)
    plan = efi.plan_boot_entries(state, targets, label, module.params['boot_order_policy'])
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
    created = {}
    if plan['changed'] and not module.check_mode:
        created, state = efi.apply_plan(runner, plan, targets)
        result['created'] = [created[d] for d in sorted(created)]
        result['boot_order_after'] = state['boot_order']
        if module._diff:
            result['diff']['after'] = efi.describe_order(state, state['boot_order'])
    entries = []
    for t in targets:
        num = created.get(t['disk']) or plan['keep'].get(t['disk'])
        entries.append({'disk': t['disk'], 'num': num or 'new:%s' % t['disk'], 'label': t['label'],
                        'partuuid': t.get('guid'), 'created': t['disk'] in created or num is None})
    result['entries'] = entries
    result['msg'] = 'BootOrder %s -> %s' % (','.join(result['boot_order_before']), ','.join(result['boot_order_after']))
    return result


def run_module(module, runner, result):
    """byol_bootorder (see ``_module.run_step``)."""
    p = module.params
    take_server_lock(module, 'byol_bootorder', p['lock_timeout'])  # held until the module's process ends
    label = check_arguments(p)
    mode = p['boot_mode']
    if mode == 'auto':
        mode = _blockdev.detect_boot_mode()
    result['boot_mode'] = mode
    if mode == 'legacy':
        return legacy(module, runner, result)

    loader = efi.normalize_loader(p['loader'])
    esps = esps_for_disks(runner, p['disks'], p['esp_partitions'])
    checks = check_loaders(runner, esps, loader, result)
    if p['boot_order_policy'] == 'none':
        result.update(created=[], deleted=[])
        result['msg'] = 'Loader %s found on %s; NVRAM left untouched (boot_order_policy=none).' % (
            loader, ', '.join(c['esp'] for c in checks))
        return result
    if not _blockdev.booted_uefi():
        raise ByolError('boot_mode is uefi but the rescue system was not booted with UEFI (/sys/firmware/efi is '
                        'missing), so NVRAM cannot be changed. Boot the rescue system in UEFI mode or use '
                        'boot_order_policy=none.')
    runner.which('efibootmgr')
    return nvram(module, runner, boot_targets(esps, loader, label), label, result)

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""byol_bootorder's main(): legacy boot code, the loader on each ESP, and the efibootmgr calls (recorded OVMF outputs)."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils import _blockdev
from ansible_collections.baremetal.byol.plugins.modules import byol_bootorder
from ansible_collections.baremetal.byol.tests.unit.plugins.module_utils.fake_runner import FakeRunner
from ansible_collections.baremetal.byol.tests.unit.plugins.modules.utils import run_main

EFIBOOTMGR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'module_utils', 'fixtures',
                          'efibootmgr')
GUIDS = {'vda': '8fd16ea9-250a-4664-91ea-494c25692792', 'vdb': 'c4065642-5512-40d8-ad48-6a5808532a14'}


def efibootmgr(name):
    with open(os.path.join(EFIBOOTMGR, name)) as f:
        return f.read()


def gpt_with_esp(disk, guid):
    return json.dumps({'partitiontable': {'label': 'gpt', 'sectorsize': 512, 'partitions': [
        {'node': disk + '1', 'start': 2048, 'size': 65536, 'type': 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B', 'uuid': guid},
        {'node': disk + '2', 'start': 67584, 'size': 4000000, 'type': '0FC63DAF-8483-4772-8E79-3D69D8477DE4'}]}})


@pytest.fixture
def disks(tmp_path):
    out = []
    for name in ('vda', 'vdb'):
        path = tmp_path / name
        path.write_bytes(b'\0' * 4096)
        out.append(str(path))
    return out


def uefi_runner(disks, loader_ok=True):
    runner = FakeRunner()
    for disk in disks:
        runner.on('sfdisk', '--json', disk, stdout=gpt_with_esp(disk, GUIDS[os.path.basename(disk)]))
    if loader_ok:
        runner.on('mdir', stdout=' grubx64  efi   4194304 2026-12-07  12:00  grubx64.efi\n')

        def mcopy(args):
            with open(args[-1], 'wb') as f:
                f.write(b'MZ\x90\x00')
            return 0, '', ''
        runner.on('mcopy', call=mcopy)
    else:
        runner.on('mdir', rc=1, stderr='File "::/EFI/debian/grubx64.efi" not found')
    return runner


def test_uefi_creates_one_entry_per_disk_and_puts_them_first(disks, monkeypatch):
    monkeypatch.setattr(_blockdev, 'booted_uefi', lambda efi_dir=None: True)
    runner = uefi_runner(disks)
    initial = efibootmgr('ovmf-efibootmgr17-01-initial-v.txt')
    both = efibootmgr('ovmf-efibootmgr17-05-after-create-v.txt')
    lines = both.splitlines(True)
    one = ''.join(l for l in lines if not l.startswith('Boot000A')).replace('BootOrder: 000A,0009,', 'BootOrder: 0009,')
    ordered = both.replace('BootOrder: 000A,0009,', 'BootOrder: 0009,000A,')
    runner.on('efibootmgr', '-v', results=[(0, initial, ''), (0, initial, ''), (0, one, ''), (0, one, ''),
                                           (0, both, ''), (0, both, ''), (0, ordered, '')])
    failed, result = run_main(byol_bootorder, dict(disks=disks, boot_mode='uefi'), runner, diff=True)
    assert not failed, result
    assert result['changed'] and result['created'] == ['0009', '000A']
    assert result['boot_order_after'][:2] == ['0009', '000A']
    assert [e['label'] for e in result['entries']] == ['byol (vda)', 'byol (vdb)']
    assert [c for c in runner.commands if c.startswith('efibootmgr') and c != 'efibootmgr -v'] == [
        'efibootmgr --create --disk %s --part 1 --loader \\EFI\\debian\\grubx64.efi --label byol (vda)' % disks[0],
        'efibootmgr --create --disk %s --part 1 --loader \\EFI\\debian\\grubx64.efi --label byol (vdb)' % disks[1],
        'efibootmgr --bootorder 0009,000A,0000,0001,0002,0003,0004,0005,0006,0007,0008']
    assert 'byol (vdb)' in result['diff']['after']


def test_uefi_second_run_changes_nothing(disks, monkeypatch):
    monkeypatch.setattr(_blockdev, 'booted_uefi', lambda efi_dir=None: True)
    runner = uefi_runner(disks)
    done = efibootmgr('ovmf-efibootmgr17-05-after-create-v.txt').replace('BootOrder: 000A,0009,', 'BootOrder: 0009,000A,')
    runner.on('efibootmgr', '-v', stdout=done)
    failed, result = run_main(byol_bootorder, dict(disks=disks, boot_mode='uefi'), runner)
    assert not failed and not result['changed'] and result['created'] == []
    assert [c for c in runner.commands if c.startswith('efibootmgr')] == ['efibootmgr -v']


def test_check_mode_plans_without_writing(disks, monkeypatch):
    monkeypatch.setattr(_blockdev, 'booted_uefi', lambda efi_dir=None: True)
    runner = uefi_runner(disks)
    runner.on('efibootmgr', '-v', stdout=efibootmgr('ovmf-efibootmgr17-01-initial-v.txt'))
    failed, result = run_main(byol_bootorder, dict(disks=disks, boot_mode='uefi'), runner, check_mode=True)
    assert not failed and result['changed']
    assert result['created'] == ['new:%s' % d for d in disks]
    assert [c for c in runner.commands if c.startswith('efibootmgr')] == ['efibootmgr -v']


def test_missing_loader_fails_with_the_checks_and_touches_no_nvram(disks):
    runner = uefi_runner(disks, loader_ok=False)
    failed, result = run_main(byol_bootorder, dict(disks=disks, boot_mode='uefi'), runner)
    assert failed and result['msg'].startswith('The loader \\EFI\\debian\\grubx64.efi (efiBootloaderPath) is not on the EFI '
                                               'system partition: %s1: missing; %s1: missing.' % tuple(disks))
    assert [c['exists'] for c in result['loaders']] == [False, False] and result['boot_mode'] == 'uefi'
    assert not any(c.startswith('efibootmgr') for c in runner.commands)


def test_policy_none_only_checks_the_loader(disks):
    runner = uefi_runner(disks)
    failed, result = run_main(byol_bootorder, dict(disks=disks, boot_mode='uefi', boot_order_policy='none'), runner)
    assert not failed and not result['changed'] and result['created'] == [] and result['deleted'] == []
    assert [c['pe'] for c in result['loaders']] == [True, True]
    assert not any(c.startswith('efibootmgr') for c in runner.commands)


def test_uefi_without_efivars_refused(disks, monkeypatch):
    monkeypatch.setattr(_blockdev, 'booted_uefi', lambda efi_dir=None: False)
    runner = uefi_runner(disks)
    failed, result = run_main(byol_bootorder, dict(disks=disks, boot_mode='uefi'), runner)
    assert failed and result['msg'].startswith('boot_mode is uefi but the rescue system was not booted with UEFI')
    assert result['loaders']  # what was checked before comes with the failure
    assert not any(c.startswith('efibootmgr') for c in runner.commands)


def test_legacy_reports_boot_code_and_warns_for_a_disk_without(disks):
    with open(disks[0], 'r+b') as f:
        f.write(b'\xeb\x63\x90GRUB' + b'\0' * 503 + b'\x55\xaa')
    runner = FakeRunner()
    runner.on('sfdisk', '--json', rc=1)
    warnings = []
    failed, result = run_main(byol_bootorder, dict(disks=disks, boot_mode='legacy'), runner, warnings=warnings)
    assert not failed, result
    assert [(r['disk'], r['bootable'], r['loader']) for r in result['legacy']] == [
        (disks[0], True, 'grub'), (disks[1], False, None)]
    assert warnings == ['No legacy boot code on %s; only the other disks can boot.' % disks[1]]
    assert result['msg'] == 'Legacy BIOS: boot code found on %s; NVRAM is not used.' % disks[0]


def test_legacy_without_boot_code_fails(disks):
    failed, result = run_main(byol_bootorder, dict(disks=disks, boot_mode='legacy'), FakeRunner().on('sfdisk', rc=1))
    assert failed and result['msg'].startswith('No disk has legacy boot code (MBR boot code):')
    assert len(result['legacy']) == 2


@pytest.mark.parametrize('params, msg', [
    (dict(disks=[]), 'disks must name at least one boot disk.'),
    (dict(disks=['/nonexistent/vdz']), 'Boot disk /nonexistent/vdz does not exist.'),
    (dict(label=' \n '), 'label must be a non-empty single line.'),
    (dict(label='byol\x1b[2J'), 'label must be a non-empty single line.'),
])
def test_arguments_refused_before_any_command(disks, params, msg):
    args = dict(disks=disks, boot_mode='uefi')
    args.update(params)
    runner = FakeRunner()
    failed, result = run_main(byol_bootorder, args, runner)
    assert failed and result['msg'] == msg
    assert runner.calls == []

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""byol_partition's main(): arguments in, the plan and the disks' commands out (fake runner, files for disks)."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils import _blockdev as B
from ansible_collections.baremetal.byol.plugins.modules import byol_partition
from ansible_collections.baremetal.byol.tests.unit.plugins.module_utils.fake_runner import FakeRunner
from ansible_collections.baremetal.byol.tests.unit.plugins.modules.utils import run_main

GIB = 1024 ** 3
LAYOUT = [{'mount_point': '/boot', 'fs_type': 'ext4', 'size': 1024},
          {'mount_point': 'swap', 'fs_type': 'swap', 'size': 512},
          {'mount_point': '/', 'fs_type': 'ext4', 'size': 0, 'lv_name': 'root'}]
READS = ('lsblk', 'blockdev --getsize64', 'blockdev --getss', 'findmnt', 'losetup --list', 'sfdisk --json', 'pvs')


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    """A test that would wait for device nodes fails at once instead (the real run's test lets them appear)."""
    def wait(paths, timeout=30, **kw):
        raise AssertionError('waited for %s' % paths)
    monkeypatch.setattr(B, 'wait_for_paths', wait)


@pytest.fixture
def disks(tmp_path):
    paths = []
    for name in ('sda', 'sdb'):
        path = tmp_path / name
        path.write_bytes(b'')
        paths.append(os.path.realpath(str(path)))
    return paths


def server(disks, missing=()):
    """Blank disks of 20 GiB, a rescue system running from RAM."""
    tree = json.dumps({'blockdevices': [{'name': os.path.basename(d), 'path': d, 'kname': os.path.basename(d),
                                         'type': 'disk', 'size': 20 * GIB, 'mountpoints': [None]} for d in disks]})
    runner = FakeRunner(missing=missing)
    runner.on('lsblk', stdout=tree)
    runner.on('blockdev', '--getsize64', stdout='%d\n' % (20 * GIB))
    runner.on('blockdev', '--getss', stdout='512\n')
    runner.on('findmnt', '--noheadings', stdout='tmpfs\n')
    runner.on('findmnt', '--json', stdout='{"filesystems": []}')
    runner.on('sfdisk', '--json', rc=1, stderr='does not contain a recognized partition table')
    runner.on('losetup', stdout='{"loopdevices": []}')
    return runner


def args(disks, tmp_path, **kw):
    out = dict(disks=disks, layout=LAYOUT, boot_mode='uefi', mount_root=str(tmp_path / 'target'), lock_timeout=0)
    out.update(kw)
    return out


def test_check_mode_plans_reads_and_writes_nothing(disks, tmp_path):
    runner = server(disks)
    warnings = []
    failed, result = run_main(byol_partition, args(disks, tmp_path), runner, check_mode=True, diff=True,
                              warnings=warnings)
    assert not failed, result
    assert result['changed'] and result['repartitioned']
    assert result['differences'] == ['%s has no partition table' % d for d in disks]
    plan = result['plan']
    assert [md['name'] for md in plan['md_arrays']] == ['md-boot', 'md-vg_r1']
    assert plan['esp_devices'] == [B.partition_path(d, 1) for d in disks]
    assert result['diff']['after_header'] == 'planned layout'
    assert warnings == []
    # only reads, not even the mount root
    assert all(c.startswith(READS) for c in runner.commands), runner.commands
    assert not os.path.exists(str(tmp_path / 'target'))


def test_no_diff_without_diff_mode(disks, tmp_path):
    failed, result = run_main(byol_partition, args(disks, tmp_path), server(disks), check_mode=True)
    assert not failed and 'diff' not in result and 'warnings_list' not in result


def test_mount_root_of_the_rescue_system_refused_before_any_command(disks, tmp_path):
    runner = server(disks)
    failed, result = run_main(byol_partition, args(disks, tmp_path, mount_root='/usr'), runner)
    assert failed and 'mount_root' in result['msg']
    assert runner.calls == []


def test_missing_tool_named_with_its_package_before_anything_changes(disks, tmp_path):
    runner = server(disks, missing=('mdadm',))
    failed, result = run_main(byol_partition, args(disks, tmp_path), runner)
    assert failed
    assert result['msg'] == 'Required command mdadm was not found (install the package mdadm on the rescue system).'
    assert result['plan']['md_arrays']  # the plan made before the failure comes with it
    assert all(c.startswith(READS) for c in runner.commands), runner.commands


def test_a_partition_given_for_a_disk_is_refused(disks, tmp_path):
    runner = server(disks)
    tree = json.loads(runner._answer(['lsblk'])[1])
    tree['blockdevices'][1].update(type='part', pkname='sdz')
    runner.on('lsblk', stdout=json.dumps(tree))
    failed, result = run_main(byol_partition, args(disks, tmp_path), runner)
    assert failed and result['msg'].startswith('%s is a partition; give the whole disk' % disks[1])
    assert all(c.startswith(READS) for c in runner.commands)


def test_layout_rule_violation_fails_with_the_rule(disks, tmp_path):
    layout = [{'mount_point': '/', 'fs_type': 'xfs', 'size': 0}]
    runner = server(disks)
    failed, result = run_main(byol_partition, args(disks, tmp_path, layout=layout), runner)
    assert failed and result['msg'].startswith('/ may not be XFS')
    assert all(c.startswith(READS) for c in runner.commands)


def test_missing_disk(tmp_path):
    failed, result = run_main(byol_partition, args([str(tmp_path / 'nope')], tmp_path), server([]))
    assert failed and result['msg'] == 'Disk %s does not exist' % (tmp_path / 'nope')


def test_real_run_tears_down_builds_and_mounts_in_order(disks, tmp_path, monkeypatch):
    monkeypatch.setattr(B, 'wait_for_paths', lambda paths, timeout=30, **kw: None)
    runner = server(disks)
    mounted = []
    runner.on('mount', call=lambda a: (mounted.append(a[-1]), (0, '', ''))[1])
    runner.on('mdadm', '--detail', call=lambda a: (0, 'ARRAY %s metadata=1.2 UUID=0:0:0:0\n' % a[-1], ''))
    failed, result = run_main(byol_partition, args(disks, tmp_path), runner)
    assert not failed, result
    assert result['changed'] and result['repartitioned']
    tools = runner.tools()
    # read, tear down, build, mount, report: each phase after the one before
    firsts = [tools.index(t) for t in ('sfdisk', 'wipefs', 'mdadm', 'pvcreate', 'mkfs.ext4', 'mkswap', 'mount')]
    assert firsts == sorted(firsts)
    target = str(tmp_path / 'target')
    assert mounted == [target, target + '/boot', target + '/boot/efi']
    assert [m['target'] for m in result['mounts']] == mounted
    assert result['mdadm_conf'].splitlines()[-1] == 'ARRAY /dev/md/md-vg_r1 metadata=1.2 UUID=0:0:0:0'
    assert result['fstab'].splitlines()[1].split()[:3] == ['/dev/vg_r1/root', '/', 'ext4']

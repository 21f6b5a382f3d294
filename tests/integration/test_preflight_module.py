# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""byol_preflight with the real ansible, on loop devices."""

from __future__ import annotations

import os
import subprocess

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils._blockdev import write_sectors


def root_disk():
    src = subprocess.run(['findmnt', '-n', '-o', 'SOURCE', '/'], stdout=subprocess.PIPE, universal_newlines=True, check=False).stdout.strip()
    if not src.startswith('/dev/'):
        return None
    pk = subprocess.run(['lsblk', '-n', '-s', '-o', 'PATH,TYPE', src], stdout=subprocess.PIPE,
                        universal_newlines=True, check=False).stdout.split('\n')
    disks = [line.split()[0] for line in pk if line.split() and line.split()[1] == 'disk']
    return disks[0] if disks else None


def test_explicit_loop_target(loopdev, ansible_module):
    dev = loopdev(size_mib=73)
    before = write_sectors(dev)
    for check in (False, True):
        r = ansible_module('byol_preflight', {'installer': 'byoi', 'target_disks': [dev]}, check=check)
        assert r.rc == 0, r.output
        assert not r.changed
        assert r.result['targets'] == [dev]
        target = r.result['target_disks'][0]
        assert target['size'] == 73 * 1024 * 1024 and target['type'] in ('SSD', 'HDD')
        assert r.result['boot_mode'] == ('uefi' if os.path.isdir('/sys/firmware/efi') else 'legacy')
        assert r.result['memory']['total'] > 0 and r.result['scratch']['shm_available'] > 0
        assert 'qemu-img' in r.result['tools'] and 'mcopy' in r.result['tools']
    assert write_sectors(dev) == before


def test_groups_and_disk_count_on_loop_devices(loopdev, ansible_module):
    a, b, c = loopdev(size_mib=71), loopdev(size_mib=71), loopdev(size_mib=69)
    # Other processes on this machine create and detach loop devices of their own: the groups (and their ids)
    # may change between two runs. The test looks only at its own disks, and pairs the second run with a first
    # one that saw the same group under the same id (a changed machine is told apart, not taken for a failure).
    # Only that group counts: hack/stress's churn adds and removes loop devices of other sizes all the time, so
    # the whole list of groups is rarely the same twice (the test then compared two different machines).
    consistent = False
    for dummy in range(10):
        r = ansible_module('byol_preflight', {'installer': 'byol', 'include_loop': True, 'disk_group_id': 0,
                                              'check_in_use': False})
        assert r.rc in (0, 2), r.output
        groups = r.result['groups']
        mine = [g for g in groups if a in g['disks']][0]
        # group 2 style selection: pick our group by id and take one disk
        r2 = ansible_module('byol_preflight', {'installer': 'byol', 'include_loop': True, 'disk_group_id': mine['id'],
                                               'disks': 1, 'check_in_use': False})
        if r2.rc == 0 and [g for g in r2.result['groups'] if g['id'] == mine['id']] == [mine]:
            consistent = True
            break
    assert r2.rc == 0, r2.output
    assert consistent, 'the group of this test\'s disks changed between every pair of runs: %s' % r2.result['groups']
    assert set([a, b]) <= set(mine['disks']) and mine['size'] == 71 * 1024 * 1024
    assert c not in mine['disks']
    small = [g for g in groups if c in g['disks']][0]
    assert small['id'] != mine['id'] and small['size'] == 69 * 1024 * 1024
    assert r2.result['targets'] == [mine['disks'][0]]
    r3 = ansible_module('byol_preflight', {'installer': 'byol', 'include_loop': True, 'disk_group_id': 9999})
    assert r3.failed and r3.result['msg'].startswith('diskGroupId 9999 does not exist on this server')


def test_mounted_disk_refused(loopdev, ansible_module, tmp_path):
    dev = loopdev(size_mib=64)
    subprocess.run(['mkfs.ext4', '-q', '-F', dev], check=True)
    mnt = tmp_path / 'mnt'
    mnt.mkdir()
    subprocess.run(['mount', dev, str(mnt)], check=True)
    try:
        r = ansible_module('byol_preflight', {'target_disks': [dev]})
        assert r.failed
        assert r.result['msg'].startswith('Refusing to touch disk(s) that are in use: %s is mounted on %s' % (dev, mnt))
        # the installer's own mounts under mount_root are allowed
        r = ansible_module('byol_preflight', {'target_disks': [dev], 'mount_root': str(tmp_path)})
        assert r.rc == 0, r.output
    finally:
        subprocess.run(['umount', str(mnt)], check=False)


def test_root_disk_refused(ansible_module):
    disk = root_disk()
    if disk is None:
        pytest.skip('root is not on a disk here')
    r = ansible_module('byol_preflight', {'target_disks': [disk], 'check_in_use': False})
    assert r.failed
    assert r.result['msg'].startswith('This is not a rescue system for %s' % disk)


def test_missing_tool_named_with_package(loopdev, ansible_module):
    dev = loopdev(size_mib=64)
    r = ansible_module('byol_preflight', {'target_disks': [dev], 'tools': ['qemu-img', 'no-such-tool-byol']})
    assert r.failed
    assert r.result['msg'].startswith('Required command(s) not found on the rescue system: no-such-tool-byol (package unknown)')
    assert r.result['missing_tools'] == ['no-such-tool-byol']


def test_not_a_disk(loopdev, ansible_module, tmp_path):
    r = ansible_module('byol_preflight', {'target_disks': [str(tmp_path)]})
    assert r.failed and 'is not a whole disk of this server' in r.result['msg']

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Teardown never reaches beyond the target disks (issue 14 class 8); whole disks only (class 4);
stacked devices count as in use (issue 23 item 7); busy disks are retried and explained (class 9).

md and LVM do not exist on the test host's kernel: the decisions are tested on the tools' outputs
(fixtures/teardown: ``lsblk --json``, ``pvs --reportformat json``, ``zpool list -H -v -P``) and the command
sequence with the recording runner (fake_runner.py)."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils import _blockdev as B
from ansible_collections.baremetal.byol.plugins.module_utils import _partition as P
from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError, CommandError
from ansible_collections.baremetal.byol.tests.unit.plugins.module_utils.fake_runner import FakeRunner

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'teardown')


def fixture(name):
    with open(os.path.join(FIX, name)) as f:
        return f.read()


DEVICES = B.parse_lsblk(fixture('lsblk_md_lvm_spanning.json'))
PVS = P.parse_lvs(fixture('pvs_data_vg.json'))


def test_md_array_on_a_non_target_disk_refused():
    problems = P.foreign_holders(DEVICES, ['/dev/sda'], PVS)
    md = [p for p in problems if 'md array /dev/md0' in p]
    assert md and 'also lives on /dev/sdb, which is not a target disk' in md[0]
    vg = [p for p in problems if 'volume group data' in p]
    assert vg and 'also lives on /dev/sdb' in vg[0]


def test_both_disks_targets_nothing_refused():
    assert P.foreign_holders(DEVICES, ['/dev/sda', '/dev/sdb'], PVS) == []


def test_untouched_disk_alone_is_no_business_of_ours():
    assert P.foreign_holders(DEVICES, ['/dev/sdc'], PVS) == []


def test_zfs_pool_spanning_a_non_target_disk():
    pools = P.parse_zpool_members(fixture('zpool_list_tank.txt'))
    assert pools == {'tank': ['/dev/sda3', '/dev/sdc1']}
    devices = DEVICES + [
        {'name': 'sda3', 'kname': 'sda3', 'path': '/dev/sda3', 'pkname': 'sda', 'type': 'part', 'fstype': 'zfs_member'},
        {'name': 'sdc1', 'kname': 'sdc1', 'path': '/dev/sdc1', 'pkname': 'sdc', 'type': 'part', 'fstype': 'zfs_member'}]
    problems = P.foreign_holders(devices, ['/dev/sda', '/dev/sdb'], PVS, pools)
    assert problems == ['Refusing to tear down ZFS pool tank: it also lives on /dev/sdc, which is not a target disk. '
                        'Add the disk(s) to the targets, or destroy the pool yourself; nothing was changed']


def test_teardown_refuses_before_any_command_that_changes():
    runner = FakeRunner().on('lsblk', stdout=fixture('lsblk_md_lvm_spanning.json'))
    runner.on('pvs', stdout=fixture('pvs_data_vg.json'))
    with pytest.raises(ByolError) as err:
        P.teardown(runner, ['/dev/sda'], '/tmp/a')
    assert '/dev/sdb' in err.value.msg
    # only reads ran: no umount, vgchange, vgremove, mdadm, wipefs
    assert [c[0] for c in runner.calls] == ['lsblk', 'pvs']


# -- whole disks ---------------------------------------------------------------------------------

def test_whole_disk_problem():
    assert B.whole_disk_problem(DEVICES, '/dev/sda') is None
    assert B.whole_disk_problem(DEVICES, '/dev/sda1') == '/dev/sda1 is a partition'
    assert B.whole_disk_problem(DEVICES, '/dev/md0') == '/dev/md0 is a raid1'
    assert B.whole_disk_problem(DEVICES, '/dev/mapper/data-big') == '/dev/mapper/data-big is a logical volume'
    assert B.whole_disk_problem(DEVICES, '/dev/nope') == '/dev/nope is not a block device'


# -- stacked devices -----------------------------------------------------------------------------

LOOPS = json.dumps({'loopdevices': [
    {'name': '/dev/loop7', 'back-file': '/mnt/data/disk.img', 'back-maj:min': '8:1'},
    {'name': '/dev/loop8', 'back-file': '/var/tmp/x.img (deleted)', 'back-maj:min': '254:1'}]})


def test_loop_backed_by_a_file_on_a_target_partition_is_in_use():
    loops = B.parse_losetup(LOOPS)
    reasons = B.disk_in_use_reasons(DEVICES, '/dev/sda', loops=loops)
    assert reasons == ['/dev/loop7 is a loop device backed by /mnt/data/disk.img, a file on /dev/sda1: detach it '
                       '(losetup --detach /dev/loop7)']
    assert B.disk_in_use_reasons(DEVICES, '/dev/sdb', loops=loops) == []


def test_dm_crypt_on_a_target_is_in_use():
    devices = DEVICES + [{'name': 'secret', 'kname': 'dm-3', 'path': '/dev/mapper/secret', 'pkname': 'sdc',
                          'type': 'crypt', 'mountpoints': []}]
    assert B.disk_in_use_reasons(devices, '/dev/sdc') == [
        '/dev/mapper/secret (a dm-crypt device) is built on /dev/sdc: close it first (cryptsetup close, dmsetup remove)']


def test_holders_walk(tmp_path):
    sys_block = tmp_path / 'block'
    sys_class = tmp_path / 'class'
    (sys_block / 'sdz' / 'sdz1').mkdir(parents=True)
    (sys_block / 'sdz' / 'sdz1' / 'partition').write_text('1')
    for name, holders in (('sdz', []), ('sdz1', ['md9']), ('md9', ['dm-4']), ('dm-4', [])):
        (sys_class / name / 'holders').mkdir(parents=True)
        for h in holders:
            (sys_class / name / 'holders' / h).write_text('')
    assert B.holders_of('/dev/sdz', sys_block=str(sys_block), sys_class=str(sys_class)) == ['md9', 'dm-4']


# -- busy ----------------------------------------------------------------------------------------

def test_busy_is_retried_after_settling():
    runner = FakeRunner().on('sfdisk', results=[
        (1, '', 'sfdisk: This disk is currently in use - repartitioning is probably a bad idea.'),
        (1, '', 'BLKRRPART: Device or resource busy'), (0, '', '')])
    res = B.run_retrying_busy(runner, ['sfdisk', '/dev/sdz'], '/dev/sdz', sleep=lambda s: None)
    assert res.rc == 0
    assert [c[0] for c in runner.calls] == ['sfdisk', 'udevadm', 'sfdisk', 'udevadm', 'sfdisk']


def test_busy_gives_up_and_says_what_held_it():
    runner = FakeRunner().on('sfdisk', rc=1, stderr='This disk is currently in use')
    with pytest.raises(CommandError) as err:
        B.run_retrying_busy(runner, ['sfdisk', '/dev/nonexistent-byol'], '/dev/nonexistent-byol', attempts=3,
                            sleep=lambda s: None)
    assert 'after 3 attempts, /dev/nonexistent-byol stayed busy (nothing seen holding it' in err.value.msg
    assert [c[0] for c in runner.calls].count('sfdisk') == 3


def test_other_failures_are_not_retried():
    runner = FakeRunner().on('sfdisk', rc=1, stderr='sfdisk: bad input')
    with pytest.raises(CommandError, match='bad input'):
        B.run_retrying_busy(runner, ['sfdisk', '/dev/sdz'], '/dev/sdz', sleep=lambda s: None)
    assert len(runner.calls) == 1


def test_openers_found_in_proc(tmp_path):
    proc = tmp_path / 'proc'
    (proc / '4242' / 'fd').mkdir(parents=True)
    (proc / '4242' / 'comm').write_text('monitor-agent\n')
    os.symlink('/dev/byoltest0', str(proc / '4242' / 'fd' / '3'))
    assert B.openers_of('/dev/byoltest0', proc=str(proc)) == ['4242 (monitor-agent) has /dev/byoltest0 open']

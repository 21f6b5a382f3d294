# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The exact, ordered commands of tearing down and building a layout (ironic-python-agent's test_disk_utils style).

md, LVM and device-mapper do not exist on the test host's kernel, so the order the tools run in is proved here with
the recording runner; tests/integration and the VM scenarios prove that the tools accept them. A reordering (a VG
removed after its array was stopped, an md array created before its members were wiped, mkfs before the array)
fails these tests."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils import _blockdev as B
from ansible_collections.baremetal.byol.plugins.module_utils import _layout as L
from ansible_collections.baremetal.byol.plugins.module_utils import _partition as P
from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError
from ansible_collections.baremetal.byol.tests.unit.plugins.module_utils.fake_runner import FakeRunner

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'teardown')
GIB = 1024 ** 3
SETTLE = 'udevadm settle --timeout=60'


def fixture(name):
    with open(os.path.join(FIX, name)) as f:
        return f.read()


def spanning_runner():
    runner = FakeRunner()
    runner.on('lsblk', stdout=fixture('lsblk_md_lvm_spanning.json'))
    runner.on('pvs', stdout=fixture('pvs_data_vg.json'))
    return runner


def test_teardown_sequence_md_and_lvm_on_two_disks():
    runner = spanning_runner()
    P.teardown(runner, ['/dev/sda', '/dev/sdb'], '/tmp/a')
    read_lsblk = 'lsblk --json --bytes --output ' + B.LSBLK_COLUMNS
    read_pvs = 'pvs --reportformat json -o pv_name,vg_name'
    assert runner.commands == [
        read_lsblk, read_pvs,                       # refuse before anything when a holder reaches another disk
        read_pvs,                                   # the volume groups on the targets
        'vgchange --activate n data',               # LVM first: its PVs sit on the partitions (and could sit on md)
        'vgremove --force --force --yes data',
        'mdadm --stop /dev/md0',                    # then the array, once (it is listed under both members)
        'mdadm --zero-superblock /dev/sda1',
        'mdadm --zero-superblock /dev/sdb1',
        'wipefs --all --force /dev/sda1',           # every partition's signatures, then the disks' tables
        'wipefs --all --force /dev/sda2',
        'wipefs --all --force /dev/sdb1',
        'wipefs --all --force /dev/sdb2',
        'wipefs --all --force /dev/sda',
        'wipefs --all --force /dev/sdb',
        SETTLE, 'partx --update /dev/sda', SETTLE,  # the kernel forgets the old partitions
        SETTLE, 'partx --update /dev/sdb', SETTLE,
    ]


def test_teardown_unmounts_deepest_first_and_leaves_swap_alone():
    data = json.loads(fixture('lsblk_md_lvm_spanning.json'))
    mounted = {'md0': ['/tmp/a/boot'], 'data-big': ['/tmp/a'], 'sdb2': ['[SWAP]']}

    def mark(devices):
        for dev in devices:
            if dev['name'] in mounted:
                dev['mountpoints'] = mounted[dev['name']]
            mark(dev.get('children') or [])
    mark(data['blockdevices'])
    tree = json.dumps(data)
    assert tree.count('/tmp/a') == 3 and '[SWAP]' in tree  # md0 is listed under both members
    runner = FakeRunner()
    runner.on('lsblk', stdout=tree)
    runner.on('pvs', stdout=fixture('pvs_data_vg.json'))
    P.teardown(runner, ['/dev/sda', '/dev/sdb'], '/tmp/a')
    umounts = [c for c in runner.commands if c.startswith('umount')]
    assert umounts == ['umount /tmp/a/boot', 'umount /tmp/a']
    assert runner.commands.index('umount /tmp/a') < runner.commands.index('vgchange --activate n data')


def test_teardown_stops_at_a_failing_stop():
    runner = spanning_runner()
    runner.on('mdadm', '--stop', rc=1, stderr='mdadm: Cannot get exclusive access to /dev/md0')
    with pytest.raises(ByolError) as err:
        P.teardown(runner, ['/dev/sda', '/dev/sdb'], '/tmp/a')
    assert 'Cannot get exclusive access' in err.value.msg
    assert runner.commands[-1] == 'mdadm --stop /dev/md0'
    assert not any(c.startswith('wipefs') for c in runner.commands)


# ---------------------------------------------------------------------------------------------- build

def two_disk_plan(boot_mode='uefi', table_type='gpt'):
    layout = [{'mount_point': '/boot', 'fs_type': 'ext4', 'size': 1024},
              {'mount_point': 'swap', 'fs_type': 'swap', 'size': 512},
              {'mount_point': '/', 'fs_type': 'ext4', 'size': 0, 'lv_name': 'root'},
              {'mount_point': '/var', 'fs_type': 'xfs', 'size': 2048, 'lv_name': 'var'}]
    disks = [{'path': '/dev/sda', 'size': 20 * GIB, 'sector_size': 512},
             {'path': '/dev/sdb', 'size': 20 * GIB, 'sector_size': 512}]
    return L.plan_layout(layout, disks, boot_mode=boot_mode, table_type=table_type, configdrive_size=64)


@pytest.fixture
def nodes_appear(monkeypatch):
    """The kernel's partition, md and LV nodes "appear" at once: the waits return, and say what they waited for."""
    waited = []
    monkeypatch.setattr(B, 'wait_for_paths', lambda paths, timeout=30, **kw: waited.append(list(paths)))
    real_exists = os.path.exists
    monkeypatch.setattr(os.path, 'exists', lambda p: True if str(p).startswith('/dev/') else real_exists(p))
    return waited


def test_build_sequence_raid1_boot_swap_and_lvm_on_md(nodes_appear):
    plan = two_disk_plan()
    runner = FakeRunner()
    P.build(runner, plan)
    parts = dict((d['path'], [p['device'] for p in d['partitions']]) for d in plan['disks'])
    assert parts == {'/dev/sda': ['/dev/sda1', '/dev/sda2', '/dev/sda3', '/dev/sda4'],
                     '/dev/sdb': ['/dev/sdb1', '/dev/sdb2', '/dev/sdb3', '/dev/sdb4']}
    create_boot = ('mdadm --create /dev/md/md-boot --run --name=md-boot --metadata=1.2 --level=1 --raid-devices=2 '
                   '--assume-clean /dev/sda2 /dev/sdb2')
    create_vg = ('mdadm --create /dev/md/md-vg_r1 --run --name=md-vg_r1 --metadata=1.2 --level=1 --raid-devices=2 '
                 '--assume-clean /dev/sda4 /dev/sdb4')
    assert runner.commands == [
        'sfdisk --quiet --wipe always --wipe-partitions always /dev/sda',
        'sfdisk --quiet --wipe always --wipe-partitions always /dev/sdb',
        SETTLE, 'partx --update /dev/sda', SETTLE,
        'wipefs --all --force /dev/sda1', 'wipefs --all --force /dev/sda2',
        'wipefs --all --force /dev/sda3', 'wipefs --all --force /dev/sda4',
        SETTLE, 'partx --update /dev/sdb', SETTLE,
        'wipefs --all --force /dev/sdb1', 'wipefs --all --force /dev/sdb2',
        'wipefs --all --force /dev/sdb3', 'wipefs --all --force /dev/sdb4',
        create_boot, create_vg, SETTLE,
        'wipefs --all --force /dev/md/md-boot', 'wipefs --all --force /dev/md/md-vg_r1',
        'pvcreate --force --force --yes /dev/md/md-vg_r1',
        'vgcreate --yes vg_r1 /dev/md/md-vg_r1',
        'lvcreate --yes --wipesignatures y --zero y --name var --size 2048m vg_r1',
        'lvcreate --yes --wipesignatures y --zero y --name root --extents 100%FREE vg_r1',
        SETTLE,
        'mkfs.ext4 -F -q -L boot /dev/md/md-boot',
        'mkfs.xfs -f -q -L var /dev/vg_r1/var',          # the sized LV first, as it was created
        'mkfs.ext4 -F -q -L root /dev/vg_r1/root',
        'mkfs.vfat -F 32 -n EFI_SYSPART /dev/sda1',
        'mkfs.vfat -F 32 -n EFI_SYSPART /dev/sdb1',
        'mkswap --label swap1 /dev/sda3',
        'mkswap --label swap2 /dev/sdb3',
        'udevadm trigger --action=change /dev/md/md-boot /dev/vg_r1/var /dev/vg_r1/root /dev/sda1 /dev/sdb1 '
        '/dev/sda3 /dev/sdb3', SETTLE,
    ]
    # each disk's table went to sfdisk on its standard input
    assert runner.inputs[0] == P.sfdisk_script(plan, plan['disks'][0])
    assert runner.inputs[1] == P.sfdisk_script(plan, plan['disks'][1])
    assert runner.inputs[0].startswith('label: gpt\nunit: sectors\nfirst-lba: 2048\n')
    # it waited for the arrays before wiping them, and for the LVs before mkfs
    assert ['/dev/md/md-boot', '/dev/md/md-vg_r1'] in nodes_appear
    assert ['/dev/vg_r1/var', '/dev/vg_r1/root'] in nodes_appear


def test_build_mbr_legacy_logical_partitions(nodes_appear):
    layout = [{'mount_point': '/boot', 'fs_type': 'ext4', 'size': 512, 'raid_level': 1},
              {'mount_point': '/', 'fs_type': 'ext4', 'size': 4096},
              {'mount_point': '/var', 'fs_type': 'ext4', 'size': 2048},
              {'mount_point': '/home', 'fs_type': 'ext4', 'size': 0},
              {'mount_point': 'swap', 'fs_type': 'swap', 'size': 256}]
    plan = L.plan_layout(layout, [{'path': '/dev/vda', 'size': 20 * GIB, 'sector_size': 512}], boot_mode='legacy',
                         table_type='msdos', configdrive_size=64)
    runner = FakeRunner()
    P.build(runner, plan)
    # primaries 1-2, the extended partition 3 (no wipefs: it holds the logical ones), logical 5-7; the 4th
    # primary slot stays free for the config drive. One disk: RAID 1 /boot is a plain partition.
    assert runner.commands == [
        'sfdisk --quiet --wipe always --wipe-partitions always /dev/vda',
        SETTLE, 'partx --update /dev/vda', SETTLE,
        'wipefs --all --force /dev/vda1', 'wipefs --all --force /dev/vda2', 'wipefs --all --force /dev/vda5',
        'wipefs --all --force /dev/vda6', 'wipefs --all --force /dev/vda7',
        'mkfs.ext4 -F -q -L boot /dev/vda1', 'mkfs.ext4 -F -q -L root /dev/vda2', 'mkfs.ext4 -F -q -L var /dev/vda5',
        'mkfs.ext4 -F -q -L home /dev/vda7', 'mkswap --label swap /dev/vda6',
        'udevadm trigger --action=change /dev/vda1 /dev/vda2 /dev/vda5 /dev/vda7 /dev/vda6', SETTLE]
    assert runner.inputs[0] == (
        'label: dos\nunit: sectors\n\n'
        'start=2048, size=1048576, type=83, bootable\n'      # /boot carries the legacy boot flag
        'start=1050624, size=8388608, type=83\n'
        'start=9439232, size=32372736, type=5\n'
        'start=9441280, size=4194304, type=83\n'             # 1 MiB (EBR) after the extended partition's start
        'start=13637632, size=524288, type=82\n'
        'start=14163968, size=27648000, type=83\n')


def test_build_adds_the_logical_partitions_partx_update_missed(monkeypatch):
    """util-linux 2.38's partx --update stops at the gap of the unused 4th primary: the rest is added one by one."""
    layout = [{'mount_point': '/', 'fs_type': 'ext4', 'size': 4096}, {'mount_point': '/var', 'fs_type': 'ext4', 'size': 0},
              {'mount_point': '/srv', 'fs_type': 'ext4', 'size': 1024}, {'mount_point': 'swap', 'fs_type': 'swap', 'size': 256}]
    plan = L.plan_layout(layout, [{'path': '/dev/vda', 'size': 20 * GIB, 'sector_size': 512}], boot_mode='legacy',
                         table_type='msdos', configdrive_size=64)
    monkeypatch.setattr(B, 'wait_for_paths', lambda paths, timeout=30, **kw: None)
    seen = {'/dev/vda1', '/dev/vda2', '/dev/vda3'}  # what partx --update made appear
    real_exists = os.path.exists
    monkeypatch.setattr(os.path, 'exists', lambda p: p in seen if str(p).startswith(('/dev/', '/sys/class/block/'))
                        else real_exists(p))
    runner = FakeRunner()
    P.build(runner, plan)
    i = runner.commands.index('partx --update /dev/vda')
    assert runner.commands[i + 1:i + 5] == [SETTLE, 'partx --add --nr 5 /dev/vda', 'partx --add --nr 6 /dev/vda', SETTLE]


def test_build_stops_at_the_first_failing_command(nodes_appear):
    plan = two_disk_plan()
    runner = FakeRunner()
    runner.on('mdadm', '--create', rc=1, stderr='mdadm: cannot open /dev/sda2: Device or resource busy')
    with pytest.raises(ByolError) as err:
        P.build(runner, plan)
    assert 'Device or resource busy' in err.value.msg
    assert runner.commands[-1].startswith('mdadm --create /dev/md/md-boot')
    assert not any(c.startswith(('pvcreate', 'mkfs', 'mkswap')) for c in runner.commands)

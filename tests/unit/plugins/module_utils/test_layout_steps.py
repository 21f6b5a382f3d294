# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The layout planner's steps one by one (test_layout.py tests the whole plan_layout)."""

from __future__ import annotations

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils import _layout as L
from ansible_collections.baremetal.byol.plugins.module_utils._errors import ValidationError

MIB = 1024 * 1024
GIB = 1024 * MIB
TIB = 1024 * GIB


def disk(name='sda', size=100 * GIB, sector=512):
    return {'path': '/dev/' + name, 'size': size, 'sector_size': sector}


def items(layout, ndisks=2):
    out, warnings = L.normalize_layout(layout, ndisks)
    return out


# -- the request -------------------------------------------------------------------------------

@pytest.mark.parametrize('args, msg', [
    (('bios', 'gpt', [disk()], 64), 'boot_mode must be uefi or legacy, got bios'),
    (('uefi', 'apm', [disk()], 64), 'table_type must be gpt or msdos, got apm'),
    (('uefi', 'gpt', [], 64), 'No disks given'),
    (('uefi', 'gpt', [disk(), disk()], 64), 'The same disk is listed twice: /dev/sda, /dev/sda'),
])
def test_check_request_refuses(args, msg):
    with pytest.raises(ValidationError) as err:
        L.check_request(*args)
    assert err.value.msg == msg


def test_check_request_returns_the_config_drive_size_as_a_number():
    assert L.check_request('uefi', 'gpt', [disk()], '64') == 64
    assert L.check_request('legacy', 'msdos', [disk()], None) == 0


def test_check_zfs_names_the_pools_only_without_the_tools():
    its = items([{'mount_point': '/', 'fs_type': 'ext4'},
                 {'mount_point': '/srv', 'fs_type': 'zfs', 'zpool_name': 'tank', 'size': 1024}])
    L.check_zfs(its, zfs_available=True)
    with pytest.raises(ValidationError, match=r'The layout uses ZFS \(zpool tank\) but the rescue system has no ZFS'):
        L.check_zfs(its, zfs_available=False)
    L.check_zfs(items([{'mount_point': '/', 'fs_type': 'ext4'}]), zfs_available=False)


# -- RAID levels ----------------------------------------------------------------------------------

def test_reduce_levels_warns_for_explicit_levels_and_lost_mirrors():
    its = items([{'mount_point': '/', 'fs_type': 'ext4', 'raid_level': 6},
                 {'mount_point': '/srv', 'fs_type': 'ext4', 'size': 1024},
                 {'mount_point': '/tank', 'fs_type': 'zfs', 'zpool_name': 'tank', 'size': 1024}], ndisks=3)
    warnings = []
    L.reduce_levels(its, 3, warnings)
    assert [i['raid_level'] for i in its] == [5, 1, 1]
    assert warnings == ['/: RAID 6 needs at least 4 disks, there are 3: reduced to RAID 5']
    its = items([{'mount_point': '/', 'fs_type': 'ext4'}, {'mount_point': '/t', 'fs_type': 'zfs', 'zpool_name': 't',
                                                           'size': 1024}], ndisks=1)
    warnings = []
    L.reduce_levels(its, 1, warnings)
    # one disk: no RAID, silently for the default level; a one-disk pool is one vdev (level 0)
    assert [i['raid_level'] for i in its] == [None, 0] and warnings == []


# -- slots ---------------------------------------------------------------------------------------

def test_group_slots_one_vg_per_level_and_one_slot_per_pool():
    its = items([{'mount_point': '/boot', 'fs_type': 'ext4', 'size': 1024},
                 {'mount_point': 'swap', 'fs_type': 'swap', 'size': 512},
                 {'mount_point': '/', 'fs_type': 'ext4', 'lv_name': 'root'},
                 {'mount_point': '/var', 'fs_type': 'ext4', 'size': 2048, 'lv_name': 'var'},
                 {'mount_point': '/scratch', 'fs_type': 'ext4', 'size': 2048, 'lv_name': 'scratch', 'raid_level': 0},
                 {'mount_point': '/srv', 'fs_type': 'zfs', 'size': 2048, 'zpool_name': 'tank'},
                 {'mount_point': '/srv/b', 'fs_type': 'zfs', 'size': 2048, 'zpool_name': 'tank'}])
    slots = L.group_slots(its)
    assert [(s['kind'], s['name']) for s in slots] == [
        ('md', 'boot'), ('swap', 'swap'), ('pv', 'vg_r1'), ('pv', 'vg_r0'), ('zfs', 'zfs-tank')]
    assert [i['lv_name'] for i in slots[2]['items']] == ['root', 'var']
    assert len(slots[4]['items']) == 2


def test_group_slots_refuses_a_pool_with_two_levels():
    its = items([{'mount_point': '/', 'fs_type': 'ext4'},
                 {'mount_point': '/a', 'fs_type': 'zfs', 'size': 1024, 'zpool_name': 'tank', 'raid_level': 1},
                 {'mount_point': '/b', 'fs_type': 'zfs', 'size': 1024, 'zpool_name': 'tank', 'raid_level': 0}])
    with pytest.raises(ValidationError, match='All datasets of ZFS pool tank must have the same raid_level'):
        L.group_slots(its)


def test_size_slots_md_members_hold_the_lvs_and_the_vg_fills_when_nothing_else_does():
    its = items([{'mount_point': '/', 'fs_type': 'ext4', 'size': 10240, 'lv_name': 'root'},
                 {'mount_point': '/boot', 'fs_type': 'ext4', 'size': 1024}])
    ordered = L.size_slots(L.group_slots(its), 2)
    assert [s['name'] for s in ordered] == ['boot', 'vg_r1']  # the filling slot last
    vg = ordered[1]
    assert vg['fill'] and vg['vg_fills_free']
    assert vg['size'] == 10240 + L.PV_OVERHEAD_MIB + L.MD_OVERHEAD_MIB and vg['min_fill'] == vg['size'] + 8
    assert ordered[0]['min_fill'] == L.FS_MIN_MIB['ext4'] + L.MD_OVERHEAD_MIB


def test_size_slots_raid5_members_carry_a_share():
    its = items([{'mount_point': '/', 'fs_type': 'ext4', 'size': 0},
                 {'mount_point': '/data', 'fs_type': 'ext4', 'size': 30720, 'lv_name': 'data', 'raid_level': 5}], ndisks=3)
    L.reduce_levels(its, 3, [])
    ordered = L.size_slots(L.group_slots(its), 3)
    assert [s['name'] for s in ordered] == ['vg_r5', 'root']
    # 3 disks in RAID 5 hold 2 disks' worth: 30720 + 4 MiB PV metadata over 2, plus md's data offset
    assert ordered[0]['size'] == -(-(30720 + L.PV_OVERHEAD_MIB) // 2) + L.MD_OVERHEAD_MIB


def test_sector_size_of():
    assert L.sector_size_of([disk(sector=4096), disk('sdb', sector=4096)]) == 4096
    assert L.sector_size_of([{'path': '/dev/sda', 'size': GIB}]) == 512
    with pytest.raises(ValidationError, match='same logical sector size: /dev/sda 512, /dev/sdb 4096'):
        L.sector_size_of([disk(), disk('sdb', sector=4096)])


# -- partition tables ------------------------------------------------------------------------

def entries(*sizes):
    return [{'kind': 'fs', 'size': s, 'name': 'p%d' % n, 'items': []} for n, s in enumerate(sizes)]


def test_gpt_numbers_in_order_names_and_keeps_the_backup_table():
    table = L.GPTTable('uefi', 512, 64)
    boot = table.boot_partitions()
    assert boot == [{'role': 'esp', 'size': L.ESP_SIZE_MIB, 'name': L.ESP_LABEL}]
    assert L.GPTTable('legacy', 512, 64).boot_partitions()[0]['role'] == 'bios_boot'
    ents = boot + entries(1024, 2048)
    table.arrange(len(ents))
    positions, end = table.positions(ents, lambda e: e['size'])
    assert [(start, number, logical) for e, start, number, logical in positions] == [(1, 1, False), (512, 2, False),
                                                                                     (1536, 3, False)]
    assert end == 3584
    assert table.usable_end_mib(disk(size=10 * GIB), True, []) == 10240 - 1 - 64
    assert table.usable_end_mib(disk(size=10 * GIB), False, []) == 10240 - 1
    part = table.partition('/dev/nvme0n1', 2, 'md', 512, 1024, 'boot', False, table.bootable('md', True))
    assert part == {'number': 2, 'role': 'md', 'start': 512 * 2048, 'size': 1024 * 2048, 'start_mib': 512,
                    'size_mib': 1024, 'type': L.GPT_TYPES['md'], 'name': 'boot', 'bootable': False, 'logical': False,
                    'device': '/dev/nvme0n1p2'}


def test_mbr_keeps_a_primary_for_the_config_drive_and_goes_logical_after_it():
    table = L.MBRTable('legacy', 512, 64)
    assert table.boot_partitions() == []  # no BIOS boot partition on MBR: GRUB sits in the gap before 1 MiB
    ents = entries(100, 200, 300, 400)
    table.arrange(len(ents))
    positions, end = table.positions(ents, lambda e: e['size'])
    # 1, 2 primary; 3 extended; logical 5, 6, each 1 MiB (its EBR) after the one before
    assert [(e if e == 'extended' else e['name'], start, number, logical)
            for e, start, number, logical in positions] == [
        ('p0', 1, 1, False), ('p1', 101, 2, False), ('extended', 301, 3, False), ('p2', 302, 5, True),
        ('p3', 603, 6, True)]
    assert end == 1003
    # without a config drive all four fit as primaries
    table = L.MBRTable('legacy', 512, 0)
    table.arrange(4)
    assert [n for e, s, n, lg in table.positions(ents, lambda e: e['size'])[0]] == [1, 2, 3, 4]


def test_mbr_boot_flag_and_no_names():
    legacy, uefi = L.MBRTable('legacy', 512, 64), L.MBRTable('uefi', 512, 64)
    assert legacy.bootable('md', True) and not legacy.bootable('esp', False) and not legacy.bootable('fs', False)
    assert uefi.bootable('esp', False) and not uefi.bootable('fs', True)
    assert legacy.partition('/dev/sda', 1, 'fs', 1, 10, 'root', False, False)['name'] is None
    assert legacy.partition('/dev/sda', 1, 'fs', 1, 10, 'root', False, False)['type'] == '83'


def test_mbr_2tib_limits():
    table = L.MBRTable('legacy', 512, 0)
    warnings = []
    assert table.usable_end_mib(disk(size=3 * TIB), True, warnings) == 2 * 1024 * 1024
    assert warnings == ['/dev/sda: MBR can only address the first 2 TiB (2097152 MiB) of the 3145728 MiB disk; the rest '
                        'is unused. Use GPT to use the whole disk.']
    with pytest.raises(ValidationError, match='the config drive at the end of /dev/sda would end at 3145728 MiB'):
        L.MBRTable('legacy', 512, 64).usable_end_mib(disk(size=3 * TIB), True, [])
    # 4096-byte sectors address 16 TiB
    assert L.MBRTable('legacy', 4096, 0).usable_end_mib(disk(size=3 * TIB, sector=4096), True, []) == 3 * 1024 * 1024
    part = table.partition('/dev/sda', 1, 'fs', 2 * 1024 * 1024 - 10, 20, 'x', False, False)
    with pytest.raises(ValidationError, match=r'partition 1 \(fs\) of /dev/sda would end at sector 4294987776'):
        table.check_limits([part], '/dev/sda')


def test_fit_gives_the_filling_slot_what_is_left_on_the_smallest_disk():
    table = L.GPTTable('uefi', 512, 64)
    ordered = entries(1024)
    fill = {'kind': 'fs', 'size': 0, 'fill': True, 'min_fill': 2, 'name': 'root', 'items': [{'mount_point': '/'}]}
    for e in ordered:
        e['fill'] = False
    ordered.append(fill)
    ents = table.boot_partitions() + ordered
    table.arrange(len(ents))
    disks = [disk(size=10 * GIB), disk('sdb', size=8 * GIB)]
    disk_mibs = [table.usable_end_mib(d, i == 0, []) for i, d in enumerate(disks)]
    sizes = L.fit(table, ents, ordered, disks, disk_mibs)
    assert sizes[id(fill)] == 8192 - 1 - (1 + 511 + 1024)
    fill['min_fill'] = 8000
    with pytest.raises(ValidationError, match='leaving 6655 MiB on /dev/sdb for /, which needs at least 8000 MiB'):
        L.fit(table, ents, ordered, disks, disk_mibs)


def test_partition_disks_the_extended_partition_spans_to_the_disks_end():
    table = L.MBRTable('legacy', 512, 64)
    ents = entries(100, 200, 300, 400)
    for e in ents:
        e['kind'] = 'swap'
    table.arrange(len(ents))
    sizes = dict((id(e), e['size']) for e in ents)
    d = disk(size=10 * GIB)
    end = table.usable_end_mib(d, True, [])
    plan_disks, slot_devices, esps, bios = L.partition_disks(table, ents, sizes, [d], [end], boot_item={})
    ext = [p for p in plan_disks[0]['partitions'] if p['role'] == 'extended'][0]
    assert (ext['number'], ext['start_mib'], ext['start_mib'] + ext['size_mib']) == (3, 301, end)
    assert [slot_devices[id(e)] for e in ents] == [['/dev/sda1'], ['/dev/sda2'], ['/dev/sda5'], ['/dev/sda6']]
    assert esps == [] and bios == []


# -- what is built on the partitions ----------------------------------------------------------

def test_stack_md_lvm_and_swap():
    stack = L.Stack(2)
    boot = {'mount_point': '/boot', 'fs_type': 'ext4', 'size': 1024, 'requested_raid_level': None}
    stack.add({'kind': 'md', 'name': 'boot', 'raid_level': 1, 'items': [boot]}, ['/dev/sda2', '/dev/sdb2'], 1024)
    stack.add({'kind': 'swap', 'items': [{'size': 512}]}, ['/dev/sda3', '/dev/sdb3'], 512)
    root = {'mount_point': '/', 'fs_type': 'ext4', 'size': 0, 'fill': True, 'lv_name': 'root'}
    var = {'mount_point': '/var', 'fs_type': 'xfs', 'size': 1001, 'fill': False, 'lv_name': 'var'}
    stack.add({'kind': 'pv', 'vg': 'vg_r0', 'raid_level': 0, 'items': [root, var], 'vg_fills_free': True},
              ['/dev/sda4', '/dev/sdb4'], 5000)
    assert [(m['name'], m['members'], m['capacity_mib']) for m in stack.md_arrays] == [
        ('md-boot', ['/dev/sda2', '/dev/sdb2'], 1024)]
    assert stack.volume_groups == [{'name': 'vg_r0', 'pvs': ['/dev/sda4', '/dev/sdb4'], 'raid_level': 0,
                                    'fills_free': True}]
    # the sized LV first; striped over both disks, rounded up to whole extents on each
    assert [(lv['name'], lv['stripes'], lv['alloc_mib']) for lv in stack.logical_volumes] == [
        ('var', 2, 1008), ('root', 2, None)]
    assert [s['label'] for s in stack.swaps] == ['swap1', 'swap2']
    assert [(f['device'], f['label']) for f in stack.filesystems] == [
        ('/dev/md/md-boot', 'boot'), ('/dev/vg_r0/var', 'var'), ('/dev/vg_r0/root', 'root')]
    stack.add_esps(['/dev/sda1', '/dev/sdb1'])
    assert [m['mount_point'] for m in stack.mounts()] == ['/', '/boot', '/var', '/boot/efi']
    assert stack.device_of('/boot') == '/dev/md/md-boot'


def test_stack_zfs_pool_and_datasets():
    stack = L.Stack(3)
    srv = {'mount_point': '/srv/www', 'fs_type': 'zfs', 'size': 2048}
    stack.add({'kind': 'zfs', 'pool': 'tank', 'raid_level': 5, 'items': [srv]}, ['/dev/sda4', '/dev/sdb4', '/dev/sdc4'],
              4000)
    assert stack.zpools == [{'name': 'tank', 'level': 5, 'vdevs': [['raidz1', '/dev/sda4', '/dev/sdb4', '/dev/sdc4']],
                             'members': ['/dev/sda4', '/dev/sdb4', '/dev/sdc4'], 'ashift': 12,
                             'properties': dict(L.ZFS_POOL_PROPERTIES)}]
    assert stack.datasets == [{'name': 'tank/srv-www', 'pool': 'tank', 'quota_mib': 2048, 'mount_point': '/srv/www',
                               'canmount': 'on'}]
    assert stack.filesystems[0]['device'] == 'tank/srv-www' and stack.filesystems[0]['label'] is None

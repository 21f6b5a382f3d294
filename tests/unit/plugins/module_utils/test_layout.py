# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests for the pure storage layout planner."""

from __future__ import annotations

import json

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils import _layout as L
from ansible_collections.baremetal.byol.plugins.module_utils._errors import ValidationError

MIB = 1024 * 1024
GIB = 1024 * MIB
TIB = 1024 * GIB


def disks(n=2, size=500 * GIB, sector=512, prefix='/dev/sd'):
    return [{'path': '%s%s' % (prefix, 'abcdefgh'[i]), 'size': size, 'sector_size': sector} for i in range(n)]


def item(mp, fs='ext4', size=0, **kw):
    d = {'mount_point': mp, 'fs_type': fs, 'size': size}
    d.update(kw)
    return d


def plan(layout, n=2, size=500 * GIB, boot_mode='uefi', table_type='gpt', configdrive_size=64, **kw):
    return L.plan_layout(layout, disks(n, size, **kw), boot_mode=boot_mode, table_type=table_type,
                         configdrive_size=configdrive_size)


def error(layout, **kw):
    with pytest.raises(ValidationError) as exc:
        plan(layout, **kw)
    return exc.value.msg


def parts(p, disk=0):
    return p['disks'][disk]['partitions']


def check_geometry(p):
    """No overlaps, 1 MiB aligned, inside the disk; logical partitions inside the extended one."""
    spm = MIB // p['sector_size']
    for d in p['disks']:
        prims = [x for x in d['partitions'] if not x['logical'] and x['role'] != 'extended']
        logicals = [x for x in d['partitions'] if x['logical']]
        ext = [x for x in d['partitions'] if x['role'] == 'extended']
        for group in (prims + ext, logicals):
            spans = sorted((x['start'], x['start'] + x['size']) for x in group)
            for (s1, e1), (s2, _e2) in zip(spans, spans[1:]):
                assert e1 <= s2
        for x in d['partitions']:
            assert x['start'] % spm == 0 and x['size'] % spm == 0 and x['size'] > 0
            assert x['start'] + x['size'] <= d['usable_end_mib'] * spm
        for x in logicals:
            assert ext and ext[0]['start'] < x['start'] and x['start'] + x['size'] <= ext[0]['start'] + ext[0]['size']
    json.dumps(p)  # the plan is plain data


# ---------------------------------------------------------------------------------------------
# the guide's examples and typical layouts
# ---------------------------------------------------------------------------------------------

def test_guide_example_two_disks_raid1_lvm():
    p = plan([item('/boot', size=1024, raid_level=1), item('swap', 'swap', 4096),
              item('/', size=0, raid_level=1, lv_name='root'), item('/var', 'xfs', 20480, lv_name='var')])
    check_geometry(p)
    roles = [x['role'] for x in parts(p)]
    assert roles == ['esp', 'md', 'swap', 'pv']
    assert [x['name'] for x in parts(p)] == ['EFI_SYSPART', 'boot', 'swap', 'vg_r1']
    assert [md['name'] for md in p['md_arrays']] == ['md-boot', 'md-vg_r1']
    assert p['md_arrays'][0]['members'] == ['/dev/sda2', '/dev/sdb2']
    assert p['md_arrays'][0]['metadata'] == '1.2' and p['md_arrays'][0]['level'] == 1
    assert p['volume_groups'] == [{'name': 'vg_r1', 'pvs': ['/dev/md/md-vg_r1'], 'raid_level': 1, 'fills_free': False}]
    lvs = dict((lv['name'], lv) for lv in p['logical_volumes'])
    assert lvs['root']['fill'] and lvs['var']['size_mib'] == 20480
    # fixed-size LVs are created before the one that fills the VG
    assert [lv['name'] for lv in p['logical_volumes']] == ['var', 'root']
    assert [s['device'] for s in p['swaps']] == ['/dev/sda3', '/dev/sdb3']
    assert [m['mount_point'] for m in p['mounts']] == ['/', '/boot', '/var', '/boot/efi']
    assert p['esp_devices'] == ['/dev/sda1', '/dev/sdb1']
    assert p['boot_device'] == '/dev/md/md-boot' and p['root_device'] == '/dev/vg_r1/root'
    assert p['warnings'] == []


def test_spec_example_with_zfs():
    p = plan([item('/boot', size=1024, raid_level=1), item('swap', 'swap', 4096),
              item('/', size=20480, raid_level=1, lv_name='root'), item('/data', 'zfs', 0, raid_level=5, zpool_name='tank')],
             n=3)
    check_geometry(p)
    assert p['zpools'] == [{'name': 'tank', 'level': 5, 'vdevs': [['raidz1', '/dev/sda5', '/dev/sdb5', '/dev/sdc5']],
                            'members': ['/dev/sda5', '/dev/sdb5', '/dev/sdc5'], 'ashift': 9,
                            'properties': dict(L.ZFS_POOL_PROPERTIES)}]
    assert p['datasets'][0]['name'] == 'tank/data'
    # the pool partition fills, the VG does not
    assert parts(p)[-1]['role'] == 'zfs'


def test_single_disk_default_raid_is_plain_partition_without_warning():
    p = plan([item('/', size=0)], n=1)
    assert p['md_arrays'] == [] and p['warnings'] == []
    assert [x['role'] for x in parts(p)] == ['esp', 'fs']
    assert p['root_device'] == '/dev/sda2'


def test_single_disk_explicit_raid1_warns():
    p = plan([item('/', size=0, raid_level=1)], n=1)
    assert p['md_arrays'] == []
    assert p['warnings'] == ['/: RAID 1 needs at least 2 disks, there is 1: a plain partition without RAID is used']


def test_fill_partition_is_last_and_takes_the_rest():
    p = plan([item('/', size=0), item('/home', size=10240), item('swap', 'swap', 2048)], n=1, size=100 * GIB)
    check_geometry(p)
    last = parts(p)[-1]
    assert last['name'] == 'root'
    # 100 GiB - 1 MiB start - 511 ESP - 10240 - 2048 - 64 config drive - 1 MiB backup GPT
    assert last['size_mib'] == 102400 - 1 - 511 - 10240 - 2048 - 64 - 1
    assert p['disks'][0]['usable_end_mib'] == 102400 - 64 - 1


def test_no_fill_leaves_space_free():
    p = plan([item('/', size=10240)], n=1)
    assert parts(p)[-1]['start_mib'] + parts(p)[-1]['size_mib'] == 512 + 10240


def test_configdrive_space_only_on_first_disk_but_members_equal():
    p = plan([item('/', size=0)], n=2, size=10 * GIB, configdrive_size=64)
    assert p['disks'][0]['usable_end_mib'] == 10240 - 65
    assert p['disks'][1]['usable_end_mib'] == 10240 - 1
    assert parts(p, 0)[-1]['size'] == parts(p, 1)[-1]['size']


def test_disks_of_different_size_use_the_smallest():
    ds = [{'path': '/dev/sda', 'size': 20 * GIB, 'sector_size': 512}, {'path': '/dev/sdb', 'size': 10 * GIB, 'sector_size': 512}]
    p = L.plan_layout([item('/', size=0)], ds, 'uefi', 'gpt', 0)
    assert parts(p, 0)[-1]['size_mib'] == parts(p, 1)[-1]['size_mib'] == 10240 - 1 - 511 - 1


def test_legacy_gpt_adds_bios_boot_partition_on_every_disk():
    p = plan([item('/', size=0)], boot_mode='legacy')
    for n in range(2):
        assert parts(p, n)[0]['role'] == 'bios_boot'
        assert parts(p, n)[0]['type'] == L.GPT_TYPES['bios_boot'] and parts(p, n)[0]['size_mib'] == 1
    assert p['bios_boot_devices'] == ['/dev/sda1', '/dev/sdb1'] and p['esp_devices'] == []


def test_legacy_msdos_has_no_boot_partition_and_marks_boot_bootable():
    p = plan([item('/boot', size=512), item('/', size=0)], n=1, boot_mode='legacy', table_type='msdos')
    assert [x['role'] for x in parts(p)] == ['fs', 'fs']
    assert parts(p)[0]['bootable'] and not parts(p)[1]['bootable']
    assert parts(p)[0]['type'] == '83' and parts(p)[0]['name'] is None


def test_uefi_msdos_esp_type_ef():
    p = plan([item('/', size=0)], n=1, table_type='msdos')
    assert parts(p)[0]['type'] == 'ef' and parts(p)[0]['role'] == 'esp'


def test_esp_on_every_disk_first_one_mounted():
    p = plan([item('/', size=0)], n=4)
    esps = [f for f in p['filesystems'] if f.get('role') == 'esp']
    assert [f['device'] for f in esps] == ['/dev/sda1', '/dev/sdb1', '/dev/sdc1', '/dev/sdd1']
    assert [f['mount_point'] for f in esps] == ['/boot/efi', None, None, None]
    assert all(f['fs_type'] == 'vfat' and f['label'] == 'EFI_SYSPART' for f in esps)
    assert not [md for md in p['md_arrays'] if any(m.endswith('1') for m in md['members'])]


def test_nvme_partition_names():
    p = L.plan_layout([item('/', size=0)], [{'path': '/dev/nvme0n1', 'size': 100 * GIB, 'sector_size': 512}], 'uefi', 'gpt', 0)
    assert [x['device'] for x in parts(p)] == ['/dev/nvme0n1p1', '/dev/nvme0n1p2']


def test_4k_sectors():
    p = plan([item('/', size=0)], n=1, sector=4096)
    check_geometry(p)
    assert parts(p)[0]['start'] == 256 and parts(p)[0]['size'] == 511 * 256


# ---------------------------------------------------------------------------------------------
# RAID levels and reduction
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('level,ndisks,expected', [
    (1, 2, 1), (0, 2, 0), (5, 3, 5), (6, 4, 6), (10, 4, 10),
    (6, 3, 5), (10, 3, 5), (6, 2, 1), (10, 2, 1), (5, 2, 1), (1, 1, None), (0, 1, None),
])
def test_reduce_level(level, ndisks, expected):
    assert L.reduce_level(level, ndisks) == expected


def test_raid6_on_three_disks_reduced_to_5_with_warning():
    p = plan([item('/', size=0, raid_level=6)], n=3)
    assert p['md_arrays'][0]['level'] == 5
    assert p['warnings'] == ['/: RAID 6 needs at least 4 disks, there are 3: reduced to RAID 5']


def test_raid10_on_two_disks_reduced_to_1():
    p = plan([item('/', size=0, raid_level=10)], n=2)
    assert p['md_arrays'][0]['level'] == 1
    assert 'reduced to RAID 1' in p['warnings'][0]


def test_raid5_four_disks_capacity():
    p = plan([item('/', size=0), item('/srv', size=10240, raid_level=5)], n=4)
    srv = [md for md in p['md_arrays'] if md['name'] == 'md-srv'][0]
    assert srv['level'] == 5 and srv['capacity_mib'] == 3 * 10240 and len(srv['members']) == 4


def test_raid10_four_disks():
    p = plan([item('/', size=0, raid_level=10)], n=4)
    assert p['md_arrays'][0]['level'] == 10 and p['md_arrays'][0]['members'][-1] == '/dev/sdd2'


def test_raid0_lvm_vg_spans_partitions_striped():
    p = plan([item('/', size=20480), item('/data', size=0, raid_level=0, lv_name='data')], n=2)
    vg = p['volume_groups'][0]
    assert vg['name'] == 'vg_r0' and vg['pvs'] == ['/dev/sda3', '/dev/sdb3'] and vg['raid_level'] == 0
    assert p['logical_volumes'][0]['stripes'] == 2
    p = plan([item('/', size=20480), item('/scratch', size=200, raid_level=0, lv_name='scratch'),
              item('/data', size=0, raid_level=0, lv_name='data')], n=4)
    # lvcreate rounds 200 MiB up to whole 4 MiB extents on each of the 4 stripes
    assert p['logical_volumes'][0]['alloc_mib'] == 208 and p['logical_volumes'][0]['stripes'] == 4
    assert [md['name'] for md in p['md_arrays']] == ['md-root']


def test_lvs_of_same_level_share_one_vg_different_levels_separate():
    p = plan([item('/', size=0, lv_name='root'), item('/var', size=4096, lv_name='var'),
              item('/scratch', size=8192, raid_level=0, lv_name='scratch')], n=2)
    assert sorted(vg['name'] for vg in p['volume_groups']) == ['vg_r0', 'vg_r1']
    assert [md['name'] for md in p['md_arrays']] == ['md-vg_r1']
    assert sorted(lv['name'] for lv in p['logical_volumes'] if lv['vg'] == 'vg_r1') == ['root', 'var']


def test_vg_fills_remaining_space_when_nothing_fills():
    p = plan([item('/', size=10240), item('/var', size=4096, lv_name='var')], n=2)
    assert parts(p)[-1]['role'] == 'pv'
    assert p['volume_groups'][0]['fills_free'] is True
    assert parts(p)[-1]['start_mib'] + parts(p)[-1]['size_mib'] == p['disks'][0]['usable_end_mib']


def test_single_disk_lvm_without_md():
    p = plan([item('/', size=0, lv_name='root')], n=1)
    assert p['md_arrays'] == [] and p['volume_groups'][0]['pvs'] == ['/dev/sda2'] and p['volume_groups'][0]['name'] == 'vg'


def test_swap_never_raid_one_per_disk_and_warning_for_raid_level():
    p = plan([item('/', size=0), item('swap', 'swap', 1024, raid_level=1)], n=3)
    assert len(p['swaps']) == 3 and [s['label'] for s in p['swaps']] == ['swap1', 'swap2', 'swap3']
    assert all('swap' not in md['name'] for md in p['md_arrays'])
    assert p['warnings'] == ['swap is never RAIDed: raid_level 1 ignored, one swap partition of 1024 MiB on each of the 3 disk(s)']


def test_zfs_mirror_and_raid10_pairs():
    p = plan([item('/', size=10240), item('/tank', 'zfs', 0, raid_level=10, zpool_name='tank')], n=4)
    assert p['zpools'][0]['vdevs'] == [['mirror', '/dev/sda3', '/dev/sdb3'], ['mirror', '/dev/sdc3', '/dev/sdd3']]
    p = plan([item('/', size=10240), item('/tank', 'zfs', 0, zpool_name='tank')], n=2)
    assert p['zpools'][0]['vdevs'] == [['mirror', '/dev/sda3', '/dev/sdb3']]


def test_zfs_raidz3_level7_reduced():
    p = plan([item('/', size=10240), item('/tank', 'zfs', 0, raid_level=7, zpool_name='tank')], n=4)
    assert p['zpools'][0]['level'] == 6 and 'reduced to RAID 6' in p['warnings'][0]


def test_labels_fit_filesystem_limits_and_are_unique():
    p = plan([item('/', size=0), item('/var/lib/postgresql', 'xfs', 4096), item('/var/lib/postgres2', 'xfs', 4096)], n=1)
    labels = [f['label'] for f in p['filesystems'] if f['fs_type'] == 'xfs']
    assert all(len(x) <= 12 for x in labels) and len(set(labels)) == 2


def test_mounts_in_depth_order():
    p = plan([item('/var/log', size=1024), item('/var', size=2048), item('/', size=0), item('/boot', size=512)], n=1)
    assert [m['mount_point'] for m in p['mounts']] == ['/', '/boot', '/var', '/boot/efi', '/var/log']


# ---------------------------------------------------------------------------------------------
# MBR
# ---------------------------------------------------------------------------------------------

def test_mbr_more_than_four_uses_extended_and_keeps_a_slot_for_the_config_drive():
    p = plan([item('/boot', size=512), item('swap', 'swap', 1024), item('/', size=0), item('/var', size=2048),
              item('/home', size=2048)], n=1, boot_mode='legacy', table_type='msdos', configdrive_size=64)
    check_geometry(p)
    nums = [(x['number'], x['role'], x['logical']) for x in parts(p)]
    assert nums == [(1, 'fs', False), (2, 'swap', False), (3, 'extended', False), (5, 'fs', True), (6, 'fs', True),
                    (7, 'fs', True)]
    ext = parts(p)[2]
    assert ext['start_mib'] + ext['size_mib'] == p['disks'][0]['usable_end_mib']


def test_mbr_without_config_drive_uses_three_primaries():
    p = plan([item('/boot', size=512), item('swap', 'swap', 1024), item('/', size=0), item('/var', size=2048),
              item('/home', size=2048)], n=1, boot_mode='legacy', table_type='msdos', configdrive_size=0)
    check_geometry(p)
    assert [x['number'] for x in parts(p)] == [1, 2, 3, 4, 5, 6]
    assert parts(p)[3]['role'] == 'extended'


def test_mbr_four_partitions_with_config_drive_need_extended():
    p = plan([item('/boot', size=512), item('/', size=0)], n=1, table_type='msdos', configdrive_size=64)
    # ESP + 2 + config drive = 4 primaries: no extended partition needed
    assert not [x for x in parts(p) if x['role'] == 'extended']
    p = plan([item('/boot', size=512), item('/', size=0), item('/var', size=1024)], n=1, table_type='msdos')
    assert [x for x in parts(p) if x['role'] == 'extended']


def test_mbr_config_drive_beyond_2tib_refused():
    msg = error([item('/', size=0)], n=1, size=3 * TIB, table_type='msdos', boot_mode='legacy', configdrive_size=64)
    assert msg.startswith('MBR partitions must end before 2 TiB, the config drive included')
    assert '/dev/sda' in msg and '3145728 MiB' in msg and 'limit 2097152 MiB' in msg


def test_mbr_fill_capped_at_2tib_with_warning():
    p = plan([item('/', size=0)], n=1, size=3 * TIB, table_type='msdos', boot_mode='legacy', configdrive_size=0)
    last = parts(p)[-1]
    assert last['start'] + last['size'] <= 2 ** 32
    assert 'MBR can only address the first 2 TiB' in p['warnings'][0]


def test_mbr_fixed_partition_beyond_2tib_refused():
    msg = error([item('/', size=2 * 1024 * 1024 + 10)], n=1, size=3 * TIB, table_type='msdos', boot_mode='legacy',
                configdrive_size=0)
    assert 'does not fit' in msg


def test_gpt_on_3tib_uses_whole_disk():
    p = plan([item('/', size=0)], n=1, size=3 * TIB, configdrive_size=0)
    assert parts(p)[-1]['start'] + parts(p)[-1]['size'] > 2 ** 32


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------

def test_two_fill_partitions_refused():
    msg = error([item('/', size=0), item('/home', size=0)])
    assert msg == 'Only one partition may fill the remaining space (size 0); these do: /, /home'


def test_swap_fill_refused():
    assert error([item('/', size=10240), item('swap', 'swap', 0)]) == 'swap may not fill the disk (size 0): give swap a size in MiB'


def test_swap_as_lv_refused():
    assert 'swap cannot be a logical volume' in error([item('/', size=0), item('swap', 'swap', 1024, lv_name='swap')])


def test_swap_mount_point_must_be_swap():
    assert 'swap partition has no mount point' in error([item('/', size=0), item('/swap', 'swap', 1024)])


@pytest.mark.parametrize('mp', ['/boot', '/'])
def test_boot_not_xfs(mp):
    layout = [item('/', 'xfs', 0)] if mp == '/' else [item('/', size=0), item('/boot', 'xfs', 1024)]
    msg = error(layout)
    assert msg.startswith('%s may not be XFS' % mp)


def test_root_xfs_with_separate_boot_ok():
    p = plan([item('/', 'xfs', 0), item('/boot', 'ext4', 1024)])
    assert [f['fs_type'] for f in p['filesystems'] if f['mount_point'] == '/'] == ['xfs']


def test_unknown_filesystem():
    assert error([item('/', 'ntfs', 0)]) == 'Unknown filesystem ntfs for /: use one of ext3, ext4, xfs, btrfs, vfat, swap, zfs'


def test_duplicate_mount_point():
    assert error([item('/', size=0), item('/var', size=10), item('/var', size=20)]) == \
        'Mount point /var appears twice in the layout (items 2 and 3): each mount point once'


@pytest.mark.parametrize('mp', ['var', 'boot/efi', 'relative/path'])
def test_mount_point_must_be_absolute(mp):
    assert error([item('/', size=0), item(mp, size=100)]) == \
        "layout[1].mount_point '%s' must be an absolute path (start with /) or swap" % mp


def test_mount_point_with_dotdot_refused():
    assert error([item('/', size=0), item('/var/../etc', size=100)]) == \
        "layout[1].mount_point '/var/../etc' must not contain . or .. components"
    assert error([item('/', size=0), item('/var/', size=100)]) == \
        "layout[1].mount_point '/var/' is not a clean absolute path (did you mean /var?)"


def test_no_root_refused():
    assert error([item('/var', size=0)]) == 'The layout has no "/" (root) partition'


def test_empty_layout_refused():
    assert 'The layout is empty' in error([])


def test_esp_in_layout_refused():
    assert 'the installer adds it itself' in error([item('/', size=0), item('/boot/efi', 'vfat', 512)])


def test_does_not_fit_names_disk_and_sizes():
    msg = error([item('/', size=0), item('/var', size=20000)], n=2, size=10 * GIB)
    assert msg.startswith('The layout does not fit: the fixed-size partitions need')
    assert '/dev/sda' in msg and 'disk 10240 MiB' in msg and '64 MiB kept for the config drive' in msg


def test_does_not_fit_without_fill():
    msg = error([item('/', size=20000)], n=1, size=10 * GIB)
    assert msg == ('The layout does not fit: it needs 20512 MiB on each disk but /dev/sda has only 10175 MiB usable '
                   '(disk 10240 MiB, 64 MiB kept for the config drive). Make the partitions smaller or use bigger disks.')


def test_fs_minimum_size():
    assert error([item('/', size=0), item('/srv', 'xfs', 100)]) == '/srv: xfs needs at least 301 MiB, the layout gives 100 MiB'


def test_invalid_raid_level():
    assert error([item('/', size=0, raid_level=3)]) == \
        'raid_level 3 of / is not supported: use one of 0, 1, 5, 6, 10 (7 = raidz3 is for ZFS only)'


def test_raid7_without_zfs_refused():
    assert 'raid_level 7 of / is not supported' in error([item('/', size=0, raid_level=7)])


def test_negative_size():
    assert error([item('/', size=-5)]) == 'layout[0].size -5 must be a whole number of MiB (0 = fill the remaining space)'


def test_zfs_without_tools_refused():
    with pytest.raises(ValidationError) as exc:
        L.plan_layout([item('/', size=10240), item('/tank', 'zfs', 0, zpool_name='tank')], disks(2), 'uefi', 'gpt', 0,
                      zfs_available=False)
    assert 'no ZFS tools' in exc.value.msg and 'tank' in exc.value.msg


def test_zfs_fs_without_pool_and_pool_with_other_fs():
    assert 'ZFS datasets need a pool name' in error([item('/', size=10240), item('/t', 'zfs', 1024)])
    assert 'ZFS datasets use fs_type zfs' in error([item('/', size=0), item('/t', 'ext4', 1024, zpool_name='tank')])


def test_root_on_zfs_without_boot_refused():
    assert '/ may not be on ZFS' in error([item('/', 'zfs', 0, zpool_name='rpool')])


def test_zfs_pool_mixed_levels_refused():
    assert 'must have the same raid_level' in error([item('/', size=10240), item('/a', 'zfs', 1024, raid_level=1, zpool_name='p'),
                                                     item('/b', 'zfs', 0, raid_level=0, zpool_name='p')])


def test_hardware_raid_refused():
    layout = [dict(item('/', size=0), hardware_raid=True)]
    assert 'hardwareRaid is not supported' in error(layout)


def test_unknown_key_refused():
    assert 'unknown key(s) mountPoint' in error([{'mountPoint': '/', 'fs_type': 'ext4', 'size': 0}])


def test_duplicate_lv_name():
    assert 'Logical volume name root is used twice' in error([item('/', size=0, lv_name='root'), item('/a', size=10, lv_name='root')])


def test_same_disk_twice():
    with pytest.raises(ValidationError) as exc:
        L.plan_layout([item('/', size=0)], [{'path': '/dev/sda', 'size': GIB}, {'path': '/dev/sda', 'size': GIB}])
    assert 'listed twice' in exc.value.msg


def test_mixed_sector_sizes_refused():
    with pytest.raises(ValidationError) as exc:
        L.plan_layout([item('/', size=0)], [{'path': '/dev/sda', 'size': 10 * GIB, 'sector_size': 512},
                                            {'path': '/dev/sdb', 'size': 10 * GIB, 'sector_size': 4096}])
    assert 'same logical sector size' in exc.value.msg


def test_plan_is_deterministic():
    layout = [item('/boot', size=1024), item('swap', 'swap', 1024), item('/', size=0, lv_name='root')]
    assert plan(layout) == plan(layout)

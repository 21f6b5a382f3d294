# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Pre-flight's pure parts: disk listing, grouping like diskGroupId, target choice, tools, rescue proof."""

from __future__ import annotations

import json

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils._errors import ValidationError
from ansible_collections.baremetal.byol.plugins.module_utils._blockdev import parse_lsblk
from ansible_collections.baremetal.byol.plugins.module_utils import _preflight as PF

GB = 1000 ** 3


def dev(name, size, rota=False, tran=None, typ='disk', model=None, serial=None, ro=False, children=None, mps=None):
    entry = {'name': name, 'path': '/dev/' + name, 'kname': name, 'pkname': None, 'type': typ, 'size': size,
             'rota': rota, 'tran': tran, 'model': model, 'serial': serial, 'ro': ro, 'rm': False,
             'mountpoints': mps or [None]}
    if children:
        entry['children'] = children
    return entry


def lsblk(*devs):
    return parse_lsblk(json.dumps({'blockdevices': list(devs)}))


# A typical "2 x NVMe + 2 x HDD" server, listed in kernel order (HDDs first).
SERVER = lsblk(
    dev('sda', 4000 * GB, rota=True, tran='sata', model='HGST HUS726T4TAL', serial='V6G1'),
    dev('sdb', 4000 * GB, rota=True, tran='sata', model='HGST HUS726T4TAL', serial='V6G2'),
    dev('nvme1n1', 960 * GB, tran='nvme', model='SAMSUNG MZQL2960', serial='S2'),
    dev('nvme0n1', 960 * GB, tran='nvme', model='SAMSUNG MZQL2960', serial='S1'),
    dev('zram0', 0), dev('sr0', 1024, typ='rom'), dev('loop0', 100 * 1024 ** 2, typ='loop'),
)


def test_types():
    assert PF.disk_type({'name': 'nvme0n1', 'tran': None, 'rota': False}) == 'NVMe'
    assert PF.disk_type({'name': 'sda', 'tran': 'nvme', 'rota': False}) == 'NVMe'
    assert PF.disk_type({'name': 'sda', 'tran': 'sata', 'rota': False}) == 'SSD'
    assert PF.disk_type({'name': 'sda', 'tran': 'sata', 'rota': True}) == 'HDD'
    assert PF.disk_type({'name': 'vda', 'rota': '1'}) == 'HDD'


def test_list_disks_skips_non_disks_and_sorts_naturally():
    disks = PF.list_disks(SERVER, by_id={'nvme0n1': ['/dev/disk/by-id/nvme-eui.0025', '/dev/disk/by-id/nvme-SAMSUNG_S1']})
    assert [d['name'] for d in disks] == ['nvme0n1', 'nvme1n1', 'sda', 'sdb']
    first = disks[0]
    assert first['by_id'] == '/dev/disk/by-id/nvme-SAMSUNG_S1'
    assert first['model'] == 'SAMSUNG MZQL2960' and first['serial'] == 'S1' and first['type'] == 'NVMe'
    assert disks[2]['by_id'] is None
    assert 'loop0' in [d['name'] for d in PF.list_disks(SERVER, include_loop=True)]
    assert 'loop0' not in [d['name'] for d in disks]


def test_list_disks_skips_read_only_and_md_dm():
    devices = lsblk(dev('sda', GB, ro=True), dev('md0', GB, typ='raid1'), dev('dm-0', GB, typ='lvm'), dev('sdb', GB))
    assert [d['name'] for d in PF.list_disks(devices)] == ['sdb']


def test_grouping_fastest_type_first():
    groups = PF.group_disks(PF.list_disks(SERVER))
    assert groups == [
        {'id': 1, 'type': 'NVMe', 'size': 960 * GB, 'count': 2, 'disks': ['/dev/nvme0n1', '/dev/nvme1n1']},
        {'id': 2, 'type': 'HDD', 'size': 4000 * GB, 'count': 2, 'disks': ['/dev/sda', '/dev/sdb']},
    ]


def test_grouping_same_type_smaller_first_and_sizes_split_groups():
    devices = lsblk(dev('sda', 960 * GB), dev('sdb', 960 * GB), dev('sdc', 480 * GB), dev('sdd', 480 * GB),
                    dev('sde', 480 * GB + 512))
    groups = PF.group_disks(PF.list_disks(devices))
    assert [(g['id'], g['size'], g['disks']) for g in groups] == [
        (1, 480 * GB, ['/dev/sdc', '/dev/sdd']),
        (2, 480 * GB + 512, ['/dev/sde']),
        (3, 960 * GB, ['/dev/sda', '/dev/sdb']),
    ]


def test_grouping_ssd_before_hdd_even_if_bigger():
    devices = lsblk(dev('sda', 500 * GB, rota=True), dev('sdb', 2000 * GB, rota=False))
    assert [g['disks'] for g in PF.group_disks(PF.list_disks(devices))] == [['/dev/sdb'], ['/dev/sda']]


def test_grouping_natural_order_within_group():
    devices = lsblk(*[dev('nvme%dn1' % i, GB, tran='nvme') for i in (10, 2, 1, 0)])
    assert PF.group_disks(PF.list_disks(devices))[0]['disks'] == ['/dev/nvme0n1', '/dev/nvme1n1', '/dev/nvme2n1',
                                                                  '/dev/nvme10n1']


def test_grouping_empty():
    assert PF.group_disks([]) == []


def test_choose_targets_defaults():
    groups = PF.group_disks(PF.list_disks(SERVER))
    assert PF.choose_targets(groups, 0, None, 'byoi')[0] == ['/dev/nvme0n1']
    assert PF.choose_targets(groups, 1, None, 'byol')[0] == ['/dev/nvme0n1', '/dev/nvme1n1']
    assert PF.choose_targets(groups, 2, 1, 'byol')[0] == ['/dev/sda']
    assert PF.choose_targets(groups, 2, None, 'byoi')[1]['type'] == 'HDD'


def test_choose_targets_errors():
    groups = PF.group_disks(PF.list_disks(SERVER))
    with pytest.raises(ValidationError) as exc:
        PF.choose_targets(groups, 3, None, 'byol')
    assert exc.value.msg == ('diskGroupId 3 does not exist on this server: it has 2 disk group(s): '
                             'group 1: 2 x NVMe 894.1 GiB (nvme0n1 nvme1n1), group 2: 2 x HDD 3.6 TiB (sda sdb)')
    with pytest.raises(ValidationError) as exc:
        PF.choose_targets(groups, 1, 3, 'byol')
    assert exc.value.msg.startswith('partitioning.disks is 3 but disk group 1 has only 2 disk(s)')
    with pytest.raises(ValidationError, match='No disk found'):
        PF.choose_targets([], 0, None, 'byoi')


def test_rescue_proof():
    devices = lsblk(dev('sda', GB, children=[dict(dev('sda1', GB // 2, typ='part', mps=['/']), pkname='sda')]),
                    dev('sdb', GB))
    assert PF.rescue_problems(devices, None, ['/dev/sda']) == []          # RAM root: fine
    assert PF.rescue_problems(devices, '/dev/sda1', ['/dev/sdb']) == []
    problems = PF.rescue_problems(devices, '/dev/sda1', ['/dev/sdb', '/dev/sda'])
    assert problems == ["This is not a rescue system for /dev/sda: the running system's root filesystem (/dev/sda1) is "
                        "on sda. Boot the server into its rescue system first, or choose other disks."]


def test_required_tools():
    byoi = PF.required_tools('byoi', 'legacy')
    assert 'qemu-img' in byoi and 'mcopy' in byoi and 'efibootmgr' not in byoi and 'rsync' not in byoi
    assert 'efibootmgr' in PF.required_tools('byoi', 'uefi')
    byol = PF.required_tools('byol', 'uefi', [
        {'mount_point': '/', 'fs_type': 'xfs', 'lv_name': 'root', 'raid_level': 1},
        {'mount_point': 'swap', 'fs_type': 'swap'},
        {'mount_point': '/srv', 'fs_type': 'btrfs'}])
    for tool in ('mkfs.xfs', 'mkfs.btrfs', 'mkswap', 'lvcreate', 'mdadm', 'rsync', 'efibootmgr', 'chroot'):
        assert tool in byol
    assert len(byol) == len(set(byol))
    assert 'mdadm' not in PF.required_tools('byol', 'legacy', [{'mount_point': 'swap', 'fs_type': 'swap'}])


def test_missing_tools_message_names_packages():
    msg = PF.missing_tools_message(['qemu-img', 'mcopy', 'mdir', 'chroot'])
    assert msg == ('Required command(s) not found on the rescue system: qemu-img (package qemu-utils), mcopy (package '
                   'mtools), mdir (package mtools), chroot (package coreutils). Install the Debian package(s) qemu-utils, '
                   'mtools, coreutils on the rescue system (apt-get install qemu-utils mtools coreutils).')


def test_by_id_preference():
    assert PF.pick_by_id(['/x/wwn-0x5000', '/x/ata-HGST_V6G1']) == '/x/ata-HGST_V6G1'
    assert PF.pick_by_id(['/x/nvme-eui.0025', '/x/nvme-nvme.144d', '/x/nvme-SAMSUNG_S1_1']) == '/x/nvme-SAMSUNG_S1_1'
    assert PF.pick_by_id(['/x/wwn-0x5000']) == '/x/wwn-0x5000'
    assert PF.pick_by_id([]) is None


class _FakeRunner(object):
    """lsblk and findmnt answers of a server whose rescue system booted from a local disk (sda)."""

    def __init__(self, tree, root):
        self.tree, self.root = tree, root

    def run(self, args, check=True):
        class Res(object):
            rc, stderr = 0, ''
        res = Res()
        if args[0] == 'lsblk':
            res.stdout = json.dumps({'blockdevices': self.tree})
        elif args[0] == 'findmnt':
            res.stdout = self.root + '\n'
        elif args[0] == 'pvs':
            res.stdout = '{"report": [{"pv": []}]}'
        else:
            raise AssertionError('unexpected command %r' % (args,))
        return res

    def which(self, tool, required=True):
        return '/usr/bin/' + tool


LOCAL_RESCUE = [dev('sda', 500 * GB, children=[dict(dev('sda1', 500 * GB, typ='part', mps=['/']), pkname='sda')]),
                dev('sdb', 960 * GB), dev('sdc', 960 * GB)]


def test_run_leaves_the_running_systems_disk_out_of_the_groups():
    # sda is the smallest SSD: counted in, it would be group 1 and the default target.
    res = PF.run(_FakeRunner(LOCAL_RESCUE, '/dev/sda1'), {'installer': 'byol', 'check_in_use': False})
    assert [g['disks'] for g in res['groups']] == [['/dev/sdb', '/dev/sdc']]
    assert res['targets'] == ['/dev/sdb', '/dev/sdc']
    assert res['rescue'] == {'root_source': '/dev/sda1', 'system_disks': ['/dev/sda']}
    assert [d['path'] for d in res['disks']] == ['/dev/sdb', '/dev/sdc']


def test_run_refuses_the_running_systems_disk_by_name_and_when_it_is_the_only_one():
    from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError
    with pytest.raises(ByolError, match='not a rescue system for /dev/sda'):
        PF.run(_FakeRunner(LOCAL_RESCUE, '/dev/sda1'), {'installer': 'byoi', 'target_disks': ['/dev/sda']})
    with pytest.raises(ByolError, match='not a rescue system for /dev/sda'):
        PF.run(_FakeRunner(LOCAL_RESCUE[:1], '/dev/sda1'), {'installer': 'byoi'})


def test_every_required_tool_has_its_package_and_mkfs_matches_partitioning():
    from ansible_collections.baremetal.byol.plugins.module_utils import _fstable
    layout = [{'fs_type': fs, 'raid_level': 1, 'lv_name': 'x'} for fs in _fstable.NAMES if fs != 'swap'] + [{'fs_type': 'swap'}]
    tools = set()
    for installer in ('byoi', 'byol'):
        for boot in ('uefi', 'legacy'):
            tools.update(PF.required_tools(installer, boot, layout, 'qcow2'))
    tools.update(['qemu-nbd', 'zstd'])
    assert sorted(t for t in tools if not PF.package_of(t)) == []
    # pre-flight checks for the very command byol_partition runs for each filesystem
    byol = PF.required_tools('byol', 'legacy', layout, 'qcow2')
    for fs in _fstable.MKFS_TYPES + ('swap',):
        assert _fstable.mkfs_args(fs, '/dev/x', 'L')[0] in byol, fs
    assert 'zpool' in byol


# ---------------------------------------------------------------------------------------------- ZFS (issue 18)

ZFS_LAYOUT = [{'mount_point': '/boot', 'fs_type': 'ext4', 'size': 512},
              {'mount_point': '/', 'fs_type': 'zfs', 'size': 0, 'zpool_name': 'rpool', 'raid_level': 1}]


def test_zfs_layout_needs_zpool_and_zfs_and_no_mdadm():
    tools = PF.required_tools('byol', 'uefi', ZFS_LAYOUT)
    assert 'zpool' in tools and 'zfs' in tools
    assert 'mdadm' in tools  # /boot: raid_level defaults to 1
    assert 'zpool' not in PF.required_tools('byol', 'uefi', ZFS_LAYOUT[:1])


def test_missing_zfs_tools_named_with_their_package_and_where_it_comes_from():
    msg = PF.missing_tools_message(['zpool', 'zfs'])
    assert msg == ('Required command(s) not found on the rescue system: zpool (package zfsutils-linux), zfs (package '
                   'zfsutils-linux). Install the Debian package(s) zfsutils-linux on the rescue system (apt-get install '
                   'zfsutils-linux). ZFS is in Debian\'s contrib component (enable contrib in the APT sources): '
                   'zfsutils-linux for the commands, zfs-dkms (with linux-headers-$(uname -r)) for the kernel module, '
                   'built by DKMS for the running kernel.')
    assert 'contrib' not in PF.missing_tools_message(['mdadm'])


class _ZfsRunner(_FakeRunner):
    """LOCAL_RESCUE's answers; the ZFS commands missing or there, modinfo finding a zfs module or not."""

    def __init__(self, tools=True, module=False):
        super(_ZfsRunner, self).__init__(LOCAL_RESCUE, '/dev/sda1')
        self.tools, self.module, self.commands = tools, module, []

    def run(self, args, check=True):
        self.commands.append(list(args))
        if args[0] == 'modinfo':
            class Res(object):
                stdout, stderr = '', ''
            res = Res()
            res.rc = 0 if self.module else 1
            res.stdout = '/lib/modules/x/updates/dkms/zfs.ko\n' if self.module else ''
            return res
        return super(_ZfsRunner, self).run(args, check)

    def which(self, tool, required=True):
        if tool in ('zpool', 'zfs') and not self.tools:
            return None
        return '/usr/bin/' + tool


def test_preflight_refuses_zfs_without_tools_naming_the_packages():
    from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError
    with pytest.raises(ByolError) as exc:
        PF.run(_ZfsRunner(tools=False), {'installer': 'byol', 'check_in_use': False, 'layout': ZFS_LAYOUT})
    assert exc.value.msg.startswith('Required command(s) not found on the rescue system: zpool (package zfsutils-linux), '
                                    'zfs (package zfsutils-linux).')
    assert 'zfs-dkms' in exc.value.msg and 'contrib' in exc.value.msg


def test_preflight_refuses_zfs_without_the_kernel_module(monkeypatch):
    from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError
    monkeypatch.setattr(PF.os.path, 'isdir', lambda p: False if p == '/sys/module/zfs' else True)
    runner = _ZfsRunner(tools=True, module=False)
    with pytest.raises(ByolError) as exc:
        PF.run(runner, {'installer': 'byol', 'check_in_use': False, 'layout': ZFS_LAYOUT})
    release = PF.os.uname()[2]
    assert exc.value.msg.startswith('The layout uses ZFS but the rescue kernel %s has no zfs module. Install zfs-dkms and '
                                    'linux-headers-%s on the rescue system' % (release, release))
    assert ['modinfo', '-F', 'filename', 'zfs'] in runner.commands  # the check ran
    runner = _ZfsRunner(tools=True, module=True)
    res = PF.run(runner, {'installer': 'byol', 'check_in_use': False, 'layout': ZFS_LAYOUT})
    assert res['targets'] == ['/dev/sdb', '/dev/sdc']
    assert ['modinfo', '-F', 'filename', 'zfs'] in runner.commands

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ZFS in byol_partition (issue 18): the planning of pools and datasets (pure, table-driven), the commands that build,
compare, mount and tear them down (recording runner: the host kernel has no zfs module; the real tools run in
tests/integration/test_partition_zfs_vm.py)."""

from __future__ import annotations

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils import _layout as L
from ansible_collections.baremetal.byol.plugins.module_utils import _partition as P
from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError, ValidationError
from ansible_collections.baremetal.byol.tests.unit.plugins.module_utils.fake_runner import FakeRunner

GIB = 1024 ** 3


def disks(n, physical=None, logical=512):
    out = []
    for i in range(n):
        d = {'path': '/dev/sd%s' % 'abcdefgh'[i], 'size': 100 * GIB, 'sector_size': logical}
        if physical is not None:
            d['physical_sector_size'] = physical[i] if isinstance(physical, list) else physical
        out.append(d)
    return out


def item(mp, fs='ext4', size=0, **kw):
    d = {'mount_point': mp, 'fs_type': fs, 'size': size}
    d.update(kw)
    return d


def zplan(level, n, physical=None, extra=(), mount_root=None):
    layout = [item('/boot', size=512), item('/', size=4096)] + list(extra) + [
        item('/data', 'zfs', 0, raid_level=level, zpool_name='tank')]
    return L.plan_layout(layout, disks(n, physical), 'uefi', 'gpt', 0, mount_root=mount_root)


def error(layout, n=2):
    with pytest.raises(ValidationError) as exc:
        L.plan_layout(layout, disks(n), 'uefi', 'gpt', 0)
    return exc.value.msg


# ------------------------------------------------------------------------------------------ the vdev shape

@pytest.mark.parametrize('level, n, vdevs, level_used', [
    (0, 1, [['/dev/sda4']], 0),
    (0, 3, [['/dev/sda4'], ['/dev/sdb4'], ['/dev/sdc4']], 0),
    (1, 2, [['mirror', '/dev/sda4', '/dev/sdb4']], 1),
    (1, 3, [['mirror', '/dev/sda4', '/dev/sdb4', '/dev/sdc4']], 1),
    (1, 1, [['/dev/sda4']], 0),
    (5, 3, [['raidz1', '/dev/sda4', '/dev/sdb4', '/dev/sdc4']], 5),
    (6, 4, [['raidz2', '/dev/sda4', '/dev/sdb4', '/dev/sdc4', '/dev/sdd4']], 6),
    (7, 5, [['raidz3', '/dev/sda4', '/dev/sdb4', '/dev/sdc4', '/dev/sdd4', '/dev/sde4']], 7),
    (10, 4, [['mirror', '/dev/sda4', '/dev/sdb4'], ['mirror', '/dev/sdc4', '/dev/sdd4']], 10),
    (10, 6, [['mirror', '/dev/sda4', '/dev/sdb4'], ['mirror', '/dev/sdc4', '/dev/sdd4'],
             ['mirror', '/dev/sde4', '/dev/sdf4']], 10),
    # too few disks: reduced in the order 7, 6, 10, 5, 1, 0 (with a warning)
    (7, 4, [['raidz2', '/dev/sda4', '/dev/sdb4', '/dev/sdc4', '/dev/sdd4']], 6),
    (10, 3, [['raidz1', '/dev/sda4', '/dev/sdb4', '/dev/sdc4']], 5),
    (5, 2, [['mirror', '/dev/sda4', '/dev/sdb4']], 1),
])
def test_vdev_shape_from_raid_level(level, n, vdevs, level_used):
    p = zplan(level, n)
    assert [zp['vdevs'] for zp in p['zpools']] == [vdevs]
    assert p['zpools'][0]['members'] == ['/dev/sd%s4' % 'abcdefgh'[i] for i in range(n)]
    assert p['zpools'][0]['level'] == (level_used if n > 1 else 0)


# ------------------------------------------------------------------------------------------ ashift

@pytest.mark.parametrize('physical, logical, ashift', [
    (None, 512, 9),            # physical not known: the logical sector size
    (512, 512, 9),
    (4096, 512, 12),           # 512e disk
    (4096, 4096, 12),          # 4Kn
    ([512, 4096], 512, 12),    # mixed disks: the largest, never a write smaller than a physical sector
    (8192, 512, 13),
    (1 << 20, 512, 16),        # bounded by ZFS's largest ashift
])
def test_ashift_from_the_physical_sector_size(physical, logical, ashift):
    ds = disks(2, physical, logical)
    assert L.zfs_ashift(ds) == ashift
    p = L.plan_layout([item('/boot', size=512), item('/', size=4096), item('/z', 'zfs', 0, zpool_name='z')], ds,
                      'uefi', 'gpt', 0)
    assert p['zpools'][0]['ashift'] == ashift


def test_ashift_refuses_a_sector_size_that_is_not_a_power_of_two():
    with pytest.raises(ValidationError) as exc:
        L.zfs_ashift(disks(2, 520))
    assert exc.value.msg == 'Physical sector size 520 of /dev/sda, /dev/sdb is not a power of two: ZFS cannot use it'


# ------------------------------------------------------------------------------------------ pools and datasets

def test_defaults_and_one_dataset_per_mount_point():
    p = L.plan_layout([item('/boot', size=512, raid_level=1), item('swap', 'swap', 1024),
                       item('/', 'zfs', 0, raid_level=1, zpool_name='rpool'),
                       item('/srv', 'zfs', 2048, raid_level=1, zpool_name='rpool'),
                       item('/var/lib/data', 'zfs', 1024, raid_level=0, zpool_name='data')],
                      disks(2, 4096), 'uefi', 'gpt', 0)
    # the pool that fills the disks comes last
    assert [(zp['name'], zp['level'], zp['ashift']) for zp in p['zpools']] == [('data', 0, 12), ('rpool', 1, 12)]
    assert p['zpools'][0]['properties'] == {'compression': 'lz4', 'atime': 'off', 'xattr': 'sa', 'acltype': 'posixacl',
                                            'mountpoint': 'none', 'canmount': 'off'}
    assert [(d['name'], d['mount_point'], d['quota_mib'], d['canmount']) for d in p['datasets']] == [
        ('data/var-lib-data', '/var/lib/data', 1024, 'on'), ('rpool/root', '/', 0, 'noauto'), ('rpool/srv', '/srv', 2048, 'on')]
    assert p['root_device'] == 'rpool/root' and p['boot_device'] == '/dev/md/md-boot'
    assert [m['mount_point'] for m in p['mounts']] == ['/', '/boot', '/srv', '/boot/efi', '/var/lib/data']


def test_dataset_names_stay_unique():
    p = L.plan_layout([item('/boot', size=512), item('/', size=4096),
                       item('/var/log', 'zfs', 512, zpool_name='tank'), item('/var-log', 'zfs', 0, zpool_name='tank')],
                      disks(2), 'uefi', 'gpt', 0)
    assert sorted(d['name'] for d in p['datasets']) == ['tank/var-log', 'tank/var-log1']


@pytest.mark.parametrize('layout, message', [
    ([item('/', 'zfs', 0, zpool_name='rpool')], '/ may not be on ZFS: add a separate /boot partition in ext4'),
    ([item('/boot', 'zfs', 512, zpool_name='rpool'), item('/', 'zfs', 0, zpool_name='rpool')],
     '/boot may not be on ZFS: add a separate /boot partition in ext4'),
    ([item('/boot', size=512), item('swap', 'swap', 512, zpool_name='rpool'), item('/', size=0)],
     'swap cannot be a logical volume or a ZFS dataset: it is one plain partition on every disk'),
    ([item('/boot', size=512), item('/', 'zfs', 0)], '/ has fs_type zfs but no zpool_name: ZFS datasets need a pool name'),
    ([item('/boot', size=512), item('/', 'zfs', 0, zpool_name='mirror')],
     "layout[1].zpool_name 'mirror' is reserved by ZFS: a pool may not be called log nor begin with mirror, raidz, draid, "
     "spare or c and a digit (zpool(8))"),
    ([item('/boot', size=512), item('/', 'zfs', 0, zpool_name='p', raid_level=1),
      item('/a', 'zfs', 512, zpool_name='p', raid_level=0)],
     'All datasets of ZFS pool p must have the same raid_level (/a has 0, another has 1)'),
])
def test_what_the_guide_forbids_is_refused_while_planning(layout, message):
    assert error(layout) == message


def test_summary_names_ashift_and_datasets():
    lines = L.plan_summary(zplan(1, 2, 4096))
    assert 'zpool tank mirror /dev/sda4 /dev/sdb4 ashift 12' in lines
    assert 'zfs tank/data -> /data' in lines


# ------------------------------------------------------------------------------------------ commands

def test_zpool_and_zfs_create_arguments():
    p = zplan(10, 4, 4096)
    assert P.zpool_create_args(p['zpools'][0], '/mnt/target') == [
        'zpool', 'create', '-f', '-o', 'ashift=12', '-R', '/mnt/target', '-O', 'acltype=posixacl', '-O', 'atime=off',
        '-O', 'canmount=off', '-O', 'compression=lz4', '-O', 'mountpoint=none', '-O', 'xattr=sa', 'tank',
        'mirror', '/dev/sda4', '/dev/sdb4', 'mirror', '/dev/sdc4', '/dev/sdd4']
    assert P.zfs_create_args(p['datasets'][0]) == ['zfs', 'create', '-o', 'canmount=noauto', '-o', 'mountpoint=/data',
                                                   'tank/data']
    assert P.zfs_create_args(dict(p['datasets'][0], quota_mib=300)) == [
        'zfs', 'create', '-o', 'canmount=noauto', '-o', 'mountpoint=/data', '-o', 'quota=300M', 'tank/data']


def test_fstab_leaves_the_datasets_to_zfs():
    p = L.plan_layout([item('/boot', size=512), item('/', 'zfs', 0, zpool_name='rpool'),
                       item('/srv', 'zfs', 512, zpool_name='rpool')], disks(2), 'legacy', 'gpt', 0)
    text = P.fstab_text(p, {'/dev/md/md-boot': {'UUID': 'b00t'}})
    entries = [line for line in text.splitlines() if not line.startswith('#')]
    assert entries == ['UUID=b00t /boot ext4 defaults 0 2']
    assert '# / on rpool: ZFS dataset rpool/root, mounted by ZFS (not listed here)' in text


def test_required_tools_name_zpool_and_zfs():
    assert P.required_tools(zplan(1, 2))[-2:] == ['zpool', 'zfs']
    plain = L.plan_layout([item('/', size=0)], disks(2), 'uefi', 'gpt', 0)
    assert 'zpool' not in P.required_tools(plain)


# ------------------------------------------------------------------------------------------ state and idempotence

def zfs_state(plan, pools=None, members=None, props=None, altroots=None):
    return {'zpools': pools if pools is not None else [zp['name'] for zp in plan['zpools']],
            'zpool_members': members if members is not None else dict((zp['name'], zp['members']) for zp in plan['zpools']),
            'dataset_props': props if props is not None else dict(
                (d['name'], {'mountpoint': d['mount_point'], 'canmount': d['canmount']}) for d in plan['datasets']),
            'datasets': [d['name'] for d in plan['datasets']] if props is None else sorted(props),
            'zpool_altroots': altroots or {}}


def zfs_diffs(plan, state):
    only = dict(plan, disks=[], md_arrays=[], volume_groups=[], filesystems=[], swaps=[])
    state = dict(state, tables={}, md_members={}, filesystems={})
    return P.compare(only, state)


@pytest.mark.parametrize('change, diffs', [
    ({}, []),
    ({'pools': [], 'props': {}}, ['ZFS pool tank is missing', 'ZFS dataset tank/data is missing']),
    ({'members': {'tank': ['/dev/sda4', '/dev/sdc4']}},
     ['ZFS pool tank is on /dev/sda4 /dev/sdc4, the plan wants /dev/sda4 /dev/sdb4']),
    ({'props': {}}, ['ZFS dataset tank/data is missing']),
    ({'props': {'tank/data': {'mountpoint': '/other', 'canmount': 'on'}}},
     ['ZFS dataset tank/data has mountpoint /other, the plan wants /data']),
    # zfs list shows the mountpoint under the pool's altroot
    ({'props': {'tank/data': {'mountpoint': '/mnt/t/data', 'canmount': 'on'}}, 'altroots': {'tank': '/mnt/t'}}, []),
    ({'props': {'tank/data': {'mountpoint': '/mnt/t/data', 'canmount': 'on'}}},
     ['ZFS dataset tank/data has mountpoint /mnt/t/data, the plan wants /data']),
])
def test_compare_pools_and_datasets(change, diffs):
    p = zplan(1, 2)
    assert zfs_diffs(p, zfs_state(p, **change)) == diffs


def test_compare_skips_a_pool_found_exported_in_check_mode():
    p = zplan(1, 2)
    state = zfs_state(p, pools=[], props={})
    state['inactive_zpools'] = ['tank']
    assert zfs_diffs(p, state) == []


@pytest.mark.parametrize('mountpoint, altroot, stored', [
    ('/mnt/t', '/mnt/t', '/'), ('/mnt/t/srv', '/mnt/t', '/srv'), ('/mnt/t/srv', '/mnt/t/', '/srv'),
    ('/mnt/tank', '/mnt/t', '/mnt/tank'), ('/srv', None, '/srv'), ('none', '/mnt/t', 'none'), ('legacy', None, 'legacy')])
def test_without_altroot(mountpoint, altroot, stored):
    assert P._without_altroot(mountpoint, altroot) == stored


def test_parsers():
    assert P.parse_zpool_import('   pool: tank\n     id: 123\n  state: ONLINE\n\n   pool: data\n') == ['tank', 'data']
    assert P.parse_zfs_props('tank\tnone\toff\ntank/data\t/data\ton\nbad line\n') == {
        'tank': {'mountpoint': 'none', 'canmount': 'off'}, 'tank/data': {'mountpoint': '/data', 'canmount': 'on'}}


def test_read_state_imports_an_exported_pool_from_its_members_only():
    p = zplan(1, 2)
    runner = FakeRunner()
    runner.on('zpool', 'list', '-H', '-o', 'name,altroot', results=[(0, '', ''), (0, 'tank\t/mnt/t\n', '')])
    runner.on('zpool', 'list', '-H', '-v', '-P', stdout='tank\n\tmirror-0\n\t/dev/sda4\n\t/dev/sdb4\n')
    runner.on('zfs', 'list', stdout='tank\tnone\toff\ntank/data\t/mnt/t/data\tnoauto\n')
    state = {}
    P.read_zfs_state(runner, p, state, True, '/mnt/t')
    assert ['zpool', 'import', '-N', '-f', '-R', '/mnt/t', '-d', '/dev/sda4', '-d', '/dev/sdb4', 'tank'] in runner.calls
    assert state['zpools'] == ['tank'] and state['zpool_altroots'] == {'tank': '/mnt/t'}
    assert zfs_diffs(p, state) == []


def test_read_state_in_check_mode_imports_nothing():
    p = zplan(1, 2)
    runner = FakeRunner()
    runner.on('zpool', 'import', stdout='   pool: tank\n     id: 1\n')
    state = {}
    P.read_zfs_state(runner, p, state, False, '/mnt/t')
    assert not [c for c in runner.calls if c[:2] == ['zpool', 'import'] and '-N' in c]
    assert ['zpool', 'import', '-d', '/dev/sda4', '-d', '/dev/sdb4'] in runner.calls
    assert state['inactive_zpools'] == ['tank'] and zfs_diffs(p, state) == []


def test_zfs_finish_sets_canmount_once():
    p = zplan(1, 2)
    runner = FakeRunner().on('zfs', 'list', stdout='tank\tnone\toff\ntank/data\t/data\tnoauto\n')
    assert P.zfs_finish(runner, p) is True
    assert ['zfs', 'set', 'canmount=on', 'tank/data'] in runner.calls
    runner = FakeRunner().on('zfs', 'list', stdout='tank\tnone\toff\ntank/data\t/data\ton\n')
    assert P.zfs_finish(runner, p) is False
    assert not [c for c in runner.calls if c[:2] == ['zfs', 'set']]


# ------------------------------------------------------------------------------------------ teardown

def lsblk(*parts):
    import json
    devs = [{'name': 'sda', 'kname': 'sda', 'path': '/dev/sda', 'type': 'disk', 'fstype': None},
            {'name': 'sdb', 'kname': 'sdb', 'path': '/dev/sdb', 'type': 'disk', 'fstype': None},
            {'name': 'sdc', 'kname': 'sdc', 'path': '/dev/sdc', 'type': 'disk', 'fstype': None}]
    for path, fstype, label, uuid in parts:
        name = path[5:]
        devs.append({'name': name, 'kname': name, 'path': path, 'pkname': name[:3], 'type': 'part', 'fstype': fstype,
                     'label': label, 'uuid': uuid, 'mountpoints': [None]})
    return json.dumps({'blockdevices': devs})


def test_teardown_destroys_the_pool_and_clears_every_label():
    runner = FakeRunner().on('lsblk', stdout=lsblk(('/dev/sda3', 'zfs_member', 'tank', '111'),
                                                   ('/dev/sdb3', 'zfs_member', 'tank', '111')))
    runner.on('zpool', 'list', stdout='tank\n\tmirror-0\n\t/dev/sda3\n\t/dev/sdb3\n')
    P.teardown(runner, ['/dev/sda', '/dev/sdb'], '/mnt/t')
    zfs = [c for c in runner.calls if c[0] == 'zpool' and c[1] != 'list']
    assert zfs == [['zpool', 'destroy', '-f', 'tank'], ['zpool', 'labelclear', '-f', '/dev/sda3'],
                   ['zpool', 'labelclear', '-f', '/dev/sdb3']]
    # labels cleared before the signatures are wiped
    assert runner.calls.index(['zpool', 'labelclear', '-f', '/dev/sda3']) < runner.calls.index(
        ['wipefs', '--all', '--force', '/dev/sda3'])


def test_teardown_clears_the_labels_of_a_pool_that_is_not_imported():
    runner = FakeRunner().on('lsblk', stdout=lsblk(('/dev/sda3', 'zfs_member', 'old', '222'),
                                                   ('/dev/sdb3', 'zfs_member', 'old', '222')))
    P.teardown(runner, ['/dev/sda', '/dev/sdb'], '/mnt/t')
    assert ['zpool', 'labelclear', '-f', '/dev/sda3'] in runner.calls
    assert ['zpool', 'labelclear', '-f', '/dev/sdb3'] in runner.calls
    assert not [c for c in runner.calls if c[:2] == ['zpool', 'destroy']]


def test_teardown_refuses_an_exported_pool_that_also_lives_on_another_disk():
    runner = FakeRunner().on('lsblk', stdout=lsblk(('/dev/sda3', 'zfs_member', 'old', '222'),
                                                   ('/dev/sdc1', 'zfs_member', 'old', '222')))
    with pytest.raises(ByolError) as exc:
        P.teardown(runner, ['/dev/sda', '/dev/sdb'], '/mnt/t')
    assert exc.value.msg == ('Refusing to clear the labels of ZFS pool old (not imported): it also lives on /dev/sdc, '
                             'which is not a target disk. Add the disk(s) to the targets, or clear the labels yourself '
                             '(zpool labelclear); nothing was changed')
    assert [c[0] for c in runner.calls if c[0] not in ('lsblk', 'zpool')] == []
    assert not [c for c in runner.calls if c[0] == 'zpool' and c[1] != 'list']


def test_teardown_without_zpool_refuses_before_any_change():
    runner = FakeRunner(missing=('zpool',)).on('lsblk', stdout=lsblk(('/dev/sda3', 'zfs_member', 'old', '222')))
    with pytest.raises(ByolError) as exc:
        P.teardown(runner, ['/dev/sda'], '/mnt/t')
    assert exc.value.msg == ('/dev/sda3 carries a ZFS pool label but the rescue system has no zpool (zfsutils-linux): '
                             'install it to clear the label, or wipe the disks yourself; nothing was changed')
    assert [c[0] for c in runner.calls] == ['lsblk']


def test_teardown_unmounts_datasets_and_other_filesystems_deepest_first():
    import json
    tree = json.loads(lsblk(('/dev/sda3', 'zfs_member', 'tank', '111'), ('/dev/sdb3', 'zfs_member', 'tank', '111'),
                            ('/dev/sda2', 'ext4', 'root', '333')))
    for dev in tree['blockdevices']:
        if dev['path'] == '/dev/sda2':
            dev['mountpoints'] = ['/mnt/t']
    runner = FakeRunner().on('lsblk', stdout=json.dumps(tree))
    runner.on('zpool', 'list', stdout='tank\n\tmirror-0\n\t/dev/sda3\n\t/dev/sdb3\n')
    runner.on('findmnt', stdout=json.dumps({'filesystems': [
        {'source': '/dev/sda2', 'target': '/mnt/t', 'maj:min': '8:2', 'fstype': 'ext4'},
        {'source': 'tank/srv', 'target': '/mnt/t/srv', 'maj:min': '0:50', 'fstype': 'zfs'},
        {'source': 'other/x', 'target': '/other', 'maj:min': '0:51', 'fstype': 'zfs'}]}))
    P.teardown(runner, ['/dev/sda', '/dev/sdb'], '/mnt/t')
    umounts = [c for c in runner.calls if c[0] == 'umount']
    # /mnt/t/srv (a dataset of the pool torn down) before the ext4 / it sits on; another pool's dataset is left alone
    assert umounts == [['umount', '/mnt/t/srv'], ['umount', '/mnt/t']]
    assert runner.calls.index(['umount', '/mnt/t']) < runner.calls.index(['zpool', 'destroy', '-f', 'tank'])


def test_teardown_trusts_the_pool_list_when_udev_has_not_seen_the_labels(monkeypatch):
    # a pool created in this boot: lsblk (udev) shows no zfs_member on its partitions; the zfs module is loaded
    real_isdir = P.os.path.isdir
    monkeypatch.setattr(P.os.path, 'isdir', lambda p: True if p == '/sys/module/zfs' else real_isdir(p))
    runner = FakeRunner().on('lsblk', stdout=lsblk(('/dev/sda3', None, None, None), ('/dev/sdb3', None, None, None)))
    runner.on('zpool', 'list', stdout='tank\n\tmirror-0\n\t/dev/sda3\n\t/dev/sdb3\n')
    P.teardown(runner, ['/dev/sda', '/dev/sdb'], '/mnt/t')
    assert [c for c in runner.calls if c[0] == 'zpool' and c[1] != 'list'] == [
        ['zpool', 'destroy', '-f', 'tank'], ['zpool', 'labelclear', '-f', '/dev/sda3'],
        ['zpool', 'labelclear', '-f', '/dev/sdb3']]


def test_read_state_strips_the_mount_root_when_zpool_reports_no_altroot():
    # seen in the ZFS rescue VM: after zpool import -R the datasets show under the mount root
    p = zplan(1, 2)
    runner = FakeRunner()
    runner.on('zpool', 'list', '-H', '-o', 'name,altroot', stdout='tank\t-\n')
    runner.on('zpool', 'list', '-H', '-v', '-P', stdout='tank\n\tmirror-0\n\t/dev/sda4\n\t/dev/sdb4\n')
    runner.on('zfs', 'list', stdout='tank\tnone\toff\ntank/data\t/mnt/t/data\tnoauto\n')
    state = {}
    P.read_zfs_state(runner, p, state, True, '/mnt/t')
    assert state['zpool_altroots'] == {'tank': '/mnt/t'} and zfs_diffs(p, state) == []

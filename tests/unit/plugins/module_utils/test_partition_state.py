# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests for the pure parts of _partition: state comparison, sfdisk scripts, fstab, parsers."""

from __future__ import annotations

import copy

from ansible_collections.baremetal.byol.plugins.module_utils import _blockdev as bd
from ansible_collections.baremetal.byol.plugins.module_utils import _layout as L
from ansible_collections.baremetal.byol.plugins.module_utils import _partition as P

GIB = 1024 ** 3


def make_plan(n=2, table_type='gpt', boot_mode='uefi'):
    layout = [{'mount_point': '/boot', 'fs_type': 'ext4', 'size': 1024}, {'mount_point': 'swap', 'fs_type': 'swap', 'size': 1024},
              {'mount_point': '/', 'fs_type': 'ext4', 'size': 0, 'lv_name': 'root'},
              {'mount_point': '/var', 'fs_type': 'xfs', 'size': 4096, 'lv_name': 'var'}]
    disks = [{'path': '/dev/vd%s' % 'abcd'[i], 'size': 20 * GIB, 'sector_size': 512} for i in range(n)]
    return L.plan_layout(layout, disks, boot_mode=boot_mode, table_type=table_type, configdrive_size=64)


def matching_state(plan):
    """The state a disk has right after the plan was applied."""
    state = {'tables': {}, 'md_members': {}, 'lvs': [], 'filesystems': {}, 'zpools': [], 'datasets': []}
    label = 'gpt' if plan['table_type'] == 'gpt' else 'dos'
    for d in plan['disks']:
        state['tables'][d['path']] = {'label': label, 'partitions': [
            {'node': p['device'], 'start': p['start'], 'size': p['size'],
             'type': p['type'].lower() if label == 'dos' else p['type'], 'name': p['name'] or ''} for p in d['partitions']]}
    for md in plan['md_arrays']:
        for m in md['members']:
            state['md_members'][m] = {'MD_LEVEL': 'raid%d' % md['level'], 'MD_NAME': 'rescue:%s' % md['name'],
                                      'MD_UUID': 'uuid-' + md['name']}
    for lv in plan['logical_volumes']:
        state['lvs'].append({'vg_name': lv['vg'], 'lv_name': lv['name'],
                             'lv_size': '%.2f' % (lv['alloc_mib'] if not lv['fill'] else 12345)})
    for f in plan['filesystems']:
        state['filesystems'][f['device']] = {'TYPE': f['fs_type'], 'LABEL': f['label'], 'UUID': 'u-' + f['device']}
    for s in plan['swaps']:
        state['filesystems'][s['device']] = {'TYPE': 'swap', 'LABEL': s['label'], 'UUID': 'u-' + s['device']}
    return state


def test_compare_matching_state_has_no_differences():
    plan = make_plan()
    assert P.compare(plan, matching_state(plan)) == []
    assert P.state_summary(matching_state(plan), plan) == P.plan_diff_summary(plan)


def test_compare_blank_disk():
    plan = make_plan()
    state = matching_state(plan)
    state['tables']['/dev/vdb'] = None
    assert P.compare(plan, state) == ['/dev/vdb has no partition table']


def test_compare_moved_partition_and_other_type():
    plan = make_plan()
    state = matching_state(plan)
    state['tables']['/dev/vda']['partitions'][1]['start'] += 2048
    state['tables']['/dev/vda']['partitions'][2]['type'] = L.GPT_TYPES['fs']
    diffs = P.compare(plan, state)
    assert len(diffs) == 2 and diffs[0].startswith('/dev/vda2 is at') and diffs[1].startswith('/dev/vda3 has type')


def test_compare_md_level_and_name():
    plan = make_plan()
    state = matching_state(plan)
    state['md_members']['/dev/vdb2'] = {'MD_LEVEL': 'raid0', 'MD_NAME': 'x:md-boot', 'MD_UUID': 'uuid-md-boot'}
    diffs = P.compare(plan, state)
    assert diffs == ['/dev/vdb2 is not a member of raid1 array md-boot (found raid0 md-boot)']


def test_compare_lv_size_and_filesystem_label():
    plan = make_plan()
    state = matching_state(plan)
    state['lvs'] = [r for r in state['lvs'] if r['lv_name'] != 'var']
    assert P.compare(plan, state) == ['logical volume vg_r1/var is missing']
    state = matching_state(plan)
    state['filesystems']['/dev/md/md-boot'] = {'TYPE': 'ext4', 'LABEL': 'old'}
    assert P.compare(plan, state) == ['/dev/md/md-boot holds ext4 label old, the plan wants ext4 label boot']


def test_compare_check_mode_skips_filesystems_of_arrays_not_started():
    plan = make_plan()
    state = matching_state(plan)
    for dev in ('/dev/md/md-boot', '/dev/vg_r1/root', '/dev/vg_r1/var'):
        state['filesystems'][dev] = {}
    assert len(P.compare(plan, state)) == 3
    state['inactive'] = ['/dev/md/md-boot', '/dev/vg_r1/root', '/dev/vg_r1/var']
    assert P.compare(plan, state) == []
    # a VG whose md PV is stopped cannot be read: its LVs are not compared in check mode
    state['lvs'] = []
    assert P.compare(plan, state) == ['logical volume vg_r1/var is missing', 'logical volume vg_r1/root is missing']
    state['inactive_vgs'] = ['vg_r1']
    assert P.compare(plan, state) == []
    # partitions are always compared
    state['filesystems']['/dev/vda1'] = {}
    assert P.compare(plan, state) == ['/dev/vda1 holds nothing label None, the plan wants vfat label EFI_SYSPART']


def test_compare_mbr_types_are_hex_insensitive():
    plan = make_plan(n=1, table_type='msdos', boot_mode='legacy')
    state = matching_state(plan)
    for p in state['tables']['/dev/vda']['partitions']:
        p['type'] = p['type'].upper()
    assert P.compare(plan, state) == []
    state['tables']['/dev/vda']['label'] = 'gpt'
    assert P.compare(plan, state) == ['/dev/vda has a gpt table, the plan wants dos']


def test_sfdisk_script_gpt():
    plan = make_plan(n=1)
    script = P.sfdisk_script(plan, plan['disks'][0])
    lines = script.splitlines()
    assert lines[:3] == ['label: gpt', 'unit: sectors', 'first-lba: 2048']
    assert lines[4] == 'start=2048, size=1046528, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI_SYSPART"'
    assert len([x for x in lines if x.startswith('start=')]) == 4


def test_sfdisk_script_mbr_extended_and_bootable():
    layout = [{'mount_point': '/boot', 'fs_type': 'ext4', 'size': 512}, {'mount_point': 'swap', 'fs_type': 'swap', 'size': 512},
              {'mount_point': '/', 'fs_type': 'ext4', 'size': 0}, {'mount_point': '/var', 'fs_type': 'ext4', 'size': 512},
              {'mount_point': '/home', 'fs_type': 'ext4', 'size': 512}]
    plan = L.plan_layout(layout, [{'path': '/dev/sda', 'size': 20 * GIB, 'sector_size': 512}], 'legacy', 'msdos', 64)
    lines = P.sfdisk_script(plan, plan['disks'][0]).splitlines()
    assert lines[0] == 'label: dos'
    entries = [x for x in lines if x.startswith('start=')]
    assert entries[0].endswith('type=83, bootable')
    assert entries[2].endswith('type=5')
    assert len(entries) == 6 and 'name=' not in ''.join(entries)


def test_fstab_by_uuid():
    plan = make_plan()
    state = matching_state(plan)
    text = P.fstab_text(plan, state['filesystems'])
    lines = text.splitlines()[1:]
    assert lines[0] == 'UUID=u-/dev/vg_r1/root / ext4 defaults 0 1'
    assert lines[1] == 'UUID=u-/dev/md/md-boot /boot ext4 defaults 0 2'
    assert 'UUID=u-/dev/vg_r1/var /var xfs defaults 0 0' in lines
    # two disks: what lives on one disk only (the first ESP, each swap) must not stop a boot without that disk
    assert 'UUID=u-/dev/vda1 /boot/efi vfat umask=0077,nofail 0 1' in lines
    assert not [x for x in lines if x.startswith('UUID=u-/dev/vdb1 ')]
    assert lines[-2:] == ['UUID=u-/dev/vda3 none swap sw,nofail 0 0',
                          'UUID=u-/dev/vdb3 none swap sw,nofail 0 0']


def test_fstab_single_disk_keeps_plain_options():
    plan = make_plan(n=1)
    lines = P.fstab_text(plan, matching_state(plan)['filesystems']).splitlines()[1:]
    assert 'UUID=u-/dev/vda1 /boot/efi vfat umask=0077 0 1' in lines
    assert [x for x in lines if ' swap ' in x] == ['UUID=u-/dev/vda3 none swap sw 0 0']
    assert not [x for x in lines if 'nofail' in x]


def test_parsers():
    assert bd.parse_export('UUID=abc\nTYPE=ext4\nLABEL=a=b\n') == {'UUID': 'abc', 'TYPE': 'ext4', 'LABEL': 'a=b'}
    out = '{"report": [{"lv": [{"vg_name": "vg_r1", "lv_name": "root", "lv_size": "100.00"}]}]}'
    assert P.parse_lvs(out) == [{'vg_name': 'vg_r1', 'lv_name': 'root', 'lv_size': '100.00'}]
    assert P.parse_lvs('{"report": [{"pv": [{"pv_name": "/dev/md127", "vg_name": "vg"}]}]}')[0]['vg_name'] == 'vg'


def test_stacked_devices_follow_partitions_md_and_lvm():
    devices = [
        {'name': 'vda', 'kname': 'vda', 'path': '/dev/vda', 'type': 'disk', 'pkname': None},
        {'name': 'vda2', 'kname': 'vda2', 'path': '/dev/vda2', 'type': 'part', 'pkname': 'vda'},
        {'name': 'md127', 'kname': 'md127', 'path': '/dev/md127', 'type': 'raid1', 'pkname': 'vda2'},
        {'name': 'vg-root', 'kname': 'dm-0', 'path': '/dev/mapper/vg-root', 'type': 'lvm', 'pkname': 'md127'},
        {'name': 'vdb', 'kname': 'vdb', 'path': '/dev/vdb', 'type': 'disk', 'pkname': None},
    ]
    assert [d['kname'] for d in P._stacked(devices, '/dev/vda')] == ['vda2', 'md127', 'dm-0']
    assert P._stacked(devices, '/dev/vdb') == []


def test_stacked_device_with_two_parents_on_the_disk_is_listed_once():
    """An md array on two partitions of one disk is in lsblk's tree under each: tear-down sees it once (the
    pre-flight's signatures and the tear-down read the tree with the same function, _blockdev.stacked)."""
    devices = [
        {'name': 'vda', 'kname': 'vda', 'path': '/dev/vda', 'type': 'disk', 'pkname': None},
        {'name': 'vda1', 'kname': 'vda1', 'path': '/dev/vda1', 'type': 'part', 'pkname': 'vda'},
        {'name': 'vda2', 'kname': 'vda2', 'path': '/dev/vda2', 'type': 'part', 'pkname': 'vda'},
        {'name': 'md0', 'kname': 'md0', 'path': '/dev/md0', 'type': 'raid0', 'pkname': 'vda1'},
        {'name': 'md0', 'kname': 'md0', 'path': '/dev/md0', 'type': 'raid0', 'pkname': 'vda2'},
    ]
    assert [d['kname'] for d in P._stacked(devices, '/dev/vda')] == ['vda1', 'vda2', 'md0']
    assert [d['kname'] for d in bd.stacked(devices, 'vda')] == ['vda1', 'vda2', 'md0']


def test_target_path():
    assert P.target_path('/tmp/a', '/') == '/tmp/a'
    assert P.target_path('/tmp/a/', '/var/log') == '/tmp/a/var/log'


def test_plan_is_not_modified_by_compare():
    plan = make_plan()
    snapshot = copy.deepcopy(plan)
    P.compare(plan, matching_state(plan))
    assert plan == snapshot


# -- the config drive that byol_configdrive adds in the reserved tail of the first disk ------------------

def with_config_drive(plan, state, disk=None, size_mib=64, label='config-2', fs_type='vfat', number=None, start=None):
    """Add the partition byol_configdrive would create (placed by its own planner) to ``state``."""
    from ansible_collections.baremetal.byol.plugins.module_utils import _configdrive as CD
    d = plan['disks'][0] if disk is None else [x for x in plan['disks'] if x['path'] == disk][0]
    table = state['tables'][d['path']]
    if start is None:
        where = CD.plan_partition(table, d['size_sectors'], plan['sector_size'], size_mib)
    else:
        where = {'start': start, 'size': size_mib * 2048, 'number': None}
    if number is None:
        number = where['number'] or CD.plan_partition(table, d['size_sectors'], plan['sector_size'], 1)['number'] or 4
        # (MBR: sfdisk --append takes the first free primary slot)
    node = '%s%d' % (d['path'], number)
    entry = {'node': node, 'start': where['start'], 'size': where['size'],
             'type': 'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7' if table['label'] == 'gpt' else 'c'}
    if table['label'] == 'gpt':
        entry['name'] = 'config-2'
    table['partitions'].append(entry)
    state.setdefault('extra_filesystems', {})[node] = {'TYPE': fs_type, 'LABEL': label, 'UUID': '1234-ABCD'}
    return entry


def test_config_drive_in_the_reserved_tail_matches():
    plan = make_plan()
    state = matching_state(plan)
    entry = with_config_drive(plan, state)
    assert entry['node'] == '/dev/vda5'
    assert entry['start'] >= plan['disks'][0]['usable_end_mib'] * 2048
    assert P.kept_partitions(plan, state) == [entry]
    assert P.compare(plan, state) == []
    # the diff shows the config drive on both sides: no change
    assert P.state_summary(state, plan) == P.plan_diff_summary(plan, kept=[entry])
    assert P.state_summary(state, plan) != P.plan_diff_summary(plan)


def test_config_drive_mbr_with_extended_partition_matches():
    layout = [{'mount_point': '/boot', 'fs_type': 'ext4', 'size': 512}, {'mount_point': 'swap', 'fs_type': 'swap', 'size': 512},
              {'mount_point': '/', 'fs_type': 'ext4', 'size': 0}, {'mount_point': '/var', 'fs_type': 'ext4', 'size': 512}]
    plan = L.plan_layout(layout, [{'path': '/dev/sda', 'size': 20 * GIB + 12345 * 512, 'sector_size': 512}], 'legacy',
                         'msdos', 64)
    state = matching_state(plan)
    entry = with_config_drive(plan, state)
    assert entry['node'] == '/dev/sda4'
    assert P.compare(plan, state) == []
    state['tables']['/dev/sda']['partitions'].sort(key=lambda p: int(p['node'][len('/dev/sda'):]))
    assert P.state_summary(state, plan) == P.plan_diff_summary(plan, kept=[entry])


def test_config_drive_in_the_tail_read_by_read_state():
    plan = make_plan(n=1)
    state = matching_state(plan)
    entry = with_config_drive(plan, state)
    calls = []

    class Runner(object):
        def run(self, args, check=True, **kw):
            calls.append(args)

            class Res(object):
                rc = 0
                stdout = ''
            res = Res()
            if args[0] == 'sfdisk':
                import json
                res.stdout = json.dumps({'partitiontable': state['tables'][args[-1]]})
            return res

    probed = []

    def fake_probe(runner, device):
        probed.append(device)
        return dict(state['extra_filesystems'].get(device) or state['filesystems'].get(device) or {})

    real_probe = bd.probe
    bd.probe = fake_probe
    try:
        got = P.read_state(Runner(), dict(plan, md_arrays=[], volume_groups=[], logical_volumes=[], filesystems=[],
                                          swaps=[]), activate=False)
    finally:
        bd.probe = real_probe
    assert probed == [entry['node']]  # only the partition in the tail beyond the plan is probed
    assert got['extra_filesystems'] == {entry['node']: state['extra_filesystems'][entry['node']]}
    assert P.kept_partitions(plan, got) == [entry]


def test_anything_else_beyond_the_plan_still_differs():
    plan = make_plan()
    # not vfat / not labelled config-2
    for kw in ({'fs_type': 'ext4'}, {'label': 'CONFIG-3'}, {'fs_type': ''}):
        state = matching_state(plan)
        with_config_drive(plan, state, **kw)
        assert P.kept_partitions(plan, state) == []
        assert P.compare(plan, state) == ['/dev/vda has 5 partitions, the plan has 4'], kw
    # on the second disk: nothing is reserved there
    state = matching_state(plan)
    with_config_drive(plan, state, disk='/dev/vdb')
    assert P.compare(plan, state) == ['/dev/vdb has 5 partitions, the plan has 4']
    # starting before the reserved tail (inside the space the plan uses)
    state = matching_state(plan)
    with_config_drive(plan, state, start=plan['disks'][0]['usable_end_mib'] * 2048 - 2048)
    assert P.compare(plan, state) == ['/dev/vda has 5 partitions, the plan has 4']
    # beyond the end of the disk
    state = matching_state(plan)
    with_config_drive(plan, state, start=plan['disks'][0]['size_sectors'] - 2048)
    assert P.compare(plan, state) == ['/dev/vda has 5 partitions, the plan has 4']
    # two config drives
    state = matching_state(plan)
    first = with_config_drive(plan, state, size_mib=16)
    with_config_drive(plan, state, size_mib=16, number=6, start=first['start'] - 16 * 2048)
    assert P.compare(plan, state) == ['/dev/vda has 6 partitions, the plan has 4']
    # the config drive present but a planned partition missing: still a difference
    state = matching_state(plan)
    with_config_drive(plan, state)
    del state['tables']['/dev/vda']['partitions'][2]
    assert P.compare(plan, state) == ['/dev/vda has 3 partitions, the plan has 4', '/dev/vda3 is missing']
    # a plan without reserved space keeps nothing
    plan0 = L.plan_layout([{'mount_point': '/', 'fs_type': 'ext4', 'size': 4096}],
                          [{'path': '/dev/vda', 'size': 20 * GIB, 'sector_size': 512}], configdrive_size=0)
    state = matching_state(plan0)
    with_config_drive(plan0, state)
    assert P.compare(plan0, state) == ['/dev/vda has 3 partitions, the plan has 2']

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_fstable, the one filesystem table, row by row; and its readers (planner, partitioning, pre-flight, request
rules, runner) take what they know of filesystems from it. tests/integration/test_fstable.py checks the numbers
against the real mkfs."""

from __future__ import annotations

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils import _fstable as T
from ansible_collections.baremetal.byol.plugins.module_utils import _layout as L
from ansible_collections.baremetal.byol.plugins.module_utils import _payload
from ansible_collections.baremetal.byol.plugins.module_utils import _preflight as PF
from ansible_collections.baremetal.byol.plugins.module_utils._runner import TOOL_PACKAGES

# name, mkfs argv for device /dev/x and label L, tool, min MiB, label bytes, package, grow argv for target t
ROWS = [
    ('ext3', ['mkfs.ext3', '-F', '-q', '-L', 'L', '/dev/x'], 'mkfs.ext3', 2, 16, 'e2fsprogs', ['resize2fs', 't']),
    ('ext4', ['mkfs.ext4', '-F', '-q', '-L', 'L', '/dev/x'], 'mkfs.ext4', 2, 16, 'e2fsprogs', ['resize2fs', 't']),
    ('xfs', ['mkfs.xfs', '-f', '-q', '-L', 'L', '/dev/x'], 'mkfs.xfs', 301, 12, 'xfsprogs', ['xfs_growfs', 't']),
    ('btrfs', ['mkfs.btrfs', '-f', '-q', '-L', 'L', '/dev/x'], 'mkfs.btrfs', 110, 254, 'btrfs-progs',
     ['btrfs', 'filesystem', 'resize', 'max', 't']),
    ('vfat', ['mkfs.vfat', '-F', '32', '-n', 'L', '/dev/x'], 'mkfs.vfat', 1, 11, 'dosfstools', None),
    ('swap', ['mkswap', '--label', 'L', '/dev/x'], 'mkswap', 1, 15, 'util-linux', None),
    ('zfs', None, 'zpool', 64, None, 'zfsutils-linux', ['zpool', 'online', '-e', 't']),
]


def test_the_table_has_these_rows_in_this_order():
    assert T.NAMES == tuple(r[0] for r in ROWS)
    assert T.MKFS_TYPES == ('ext3', 'ext4', 'xfs', 'btrfs', 'vfat')


@pytest.mark.parametrize('name, mkfs, tool, min_mib, label_max, package, grow', ROWS)
def test_row(name, mkfs, tool, min_mib, label_max, package, grow):
    if mkfs is None:
        with pytest.raises(ValueError):
            T.mkfs_args(name, '/dev/x', 'L')
    else:
        assert T.mkfs_args(name, '/dev/x', 'L') == mkfs
    assert T.tool(name) == tool
    assert T.MIN_MIB[name] == min_mib == T.row(name)['min_mib']
    assert T.LABEL_MAX.get(name) == label_max
    assert T.row(name)['package'] == package
    assert T.grow_args(name, 't') == grow
    # the runner's "install the package" hint names the same package for every command of the row
    for argv in (mkfs, grow, [tool]):
        if argv:
            assert TOOL_PACKAGES[argv[0]] == package


def test_grow_args_of_a_pool_member():
    assert T.grow_args('zfs', ('rpool', '/dev/sda3')) == ['zpool', 'online', '-e', 'rpool', '/dev/sda3']


def test_unknown_filesystem():
    assert T.tool('ntfs') is None
    with pytest.raises(KeyError):
        T.mkfs_args('ntfs', '/dev/x', 'L')


def test_the_planner_and_the_request_rules_read_the_table():
    assert L.FS_TYPES is T.NAMES
    assert L.FS_MIN_MIB is T.MIN_MIB
    assert L.LABEL_MAX is T.LABEL_MAX
    assert _payload.FILESYSTEMS == tuple(sorted(T.NAMES))
    assert _payload.check_layout([{'mount_point': '/', 'fs_type': 'ext3', 'size': 0}]) == []
    assert _payload.check_layout([{'mount_point': '/', 'fs_type': 'ntfs', 'size': 0}]) == [
        "layout[0]: fileSystem 'ntfs' is not supported; use one of btrfs, ext3, ext4, swap, vfat, xfs, zfs"]


@pytest.mark.parametrize('name', [r[0] for r in ROWS])
def test_preflight_asks_for_the_command_partitioning_runs(name):
    item = {'mount_point': '/srv', 'fs_type': name, 'raid_level': 1}
    if name == 'zfs':
        item['zpool_name'] = 'tank'
    tools = PF.required_tools('byol', 'legacy', [{'mount_point': '/', 'fs_type': 'ext4'}, item], 'qcow2')
    assert T.tool(name) in tools
    if name != 'zfs':
        assert T.mkfs_args(name, '/dev/x', 'L')[0] in tools


DISK = {'path': '/dev/sda', 'size': 64 * 1024 ** 3, 'sector_size': 512}


@pytest.mark.parametrize('name', ['ext3', 'ext4', 'xfs', 'btrfs', 'vfat'])
def test_planned_labels_fit_the_filesystem(name):
    """A mount point of one 255-byte component: its label is cut to what the filesystem keeps. mkfs.btrfs keeps
    254 bytes of a 255-byte label; a plan that asked for 255 would never match the disk it made."""
    long_dir = '/' + 'd' * 255
    plan = L.plan_layout([{'mount_point': '/', 'fs_type': 'ext4', 'size': 4096},
                          {'mount_point': long_dir, 'fs_type': name, 'size': 1024}], [DISK], boot_mode='legacy')
    label = [f['label'] for f in plan['filesystems'] if f['mount_point'] == long_dir][0]
    assert len(label.encode('utf-8')) == dict((r[0], r[4]) for r in ROWS)[name]


def test_minimum_sizes_are_enforced_by_the_planner():
    for name in ('ext3', 'xfs', 'btrfs'):
        with pytest.raises(Exception) as exc:
            L.plan_layout([{'mount_point': '/', 'fs_type': 'ext4', 'size': 4096},
                           {'mount_point': '/srv', 'fs_type': name, 'size': T.MIN_MIB[name] - 1}], [DISK],
                          boot_mode='legacy')
        assert exc.value.msg == '/srv: %s needs at least %d MiB, the layout gives %d MiB' % (
            name, T.MIN_MIB[name], T.MIN_MIB[name] - 1)
        L.plan_layout([{'mount_point': '/', 'fs_type': 'ext4', 'size': 4096},
                       {'mount_point': '/srv', 'fs_type': name, 'size': T.MIN_MIB[name]}], [DISK], boot_mode='legacy')

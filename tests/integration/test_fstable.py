# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The filesystem table (_fstable) against the real tools: each row's mkfs argument list makes its filesystem at
the table's minimum size, and not much below it; each filesystem keeps a label of the table's length, and not a
longer one; the grow commands grow the filesystem. mkfs runs on sparse files (no kernel module needed, vfat
included); growing xfs and btrfs needs them mounted on a loop device (root)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils import _fstable as T

MIB = 1024 * 1024
MADE = [r['name'] for r in T.FILESYSTEMS if r['mkfs']]
# what blkid -p reports for each
BLKID_TYPE = {'ext3': 'ext3', 'ext4': 'ext4', 'xfs': 'xfs', 'btrfs': 'btrfs', 'vfat': 'vfat', 'swap': 'swap'}
# The real floor below the table's minimum: what mkfs makes at (min_mib - 1) and (min_mib - 2), None: nothing.
# xfs and btrfs keep 1 MiB above the floor of their mkfs; mkfs.ext3 makes ext2 below 2 MiB (no room for a journal).
BELOW = {
    'ext3': ('ext2', None),    # "Filesystem too small for a journal" at 1 MiB
    'xfs': ('xfs', None),      # "Filesystem must be larger than 300MB" at 299 MiB
    'btrfs': ('btrfs', None),  # "minimum size for each btrfs device is 114294784" (109 MiB) at 108 MiB
}


def need(*tools):
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        pytest.skip('needs %s' % ', '.join(missing))


def sparse(path, mib):
    with open(path, 'wb') as f:
        f.truncate(int(mib * MIB))
    return str(path)


def mkfs(fs, path, label):
    return subprocess.run(T.mkfs_args(fs, path, label), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, check=False)


def blkid(path, tag):
    return subprocess.run(['blkid', '-p', '-o', 'value', '-s', tag, path], stdout=subprocess.PIPE,
                          universal_newlines=True, check=False).stdout.rstrip('\n')


def label_of(fs, n):
    return ('A' if fs == 'vfat' else 'a') * n


@pytest.mark.parametrize('fs', MADE)
def test_mkfs_at_the_minimum_size(tmp_path, fs):
    need(T.tool(fs), 'blkid')
    row = T.row(fs)
    path = sparse(tmp_path / 'fs.img', row['min_mib'])
    label = 'BYOL' if fs == 'vfat' else 'byol'  # the planner gives vfat upper-case labels
    res = mkfs(fs, path, label)
    assert res.returncode == 0, res.stdout
    assert blkid(path, 'TYPE') == BLKID_TYPE[fs]
    assert blkid(path, 'LABEL') == label


@pytest.mark.parametrize('fs', sorted(BELOW))
def test_the_minimum_is_the_tools_floor(tmp_path, fs):
    need(T.tool(fs), 'blkid')
    one_below, two_below = BELOW[fs]
    for mib, expected in ((T.MIN_MIB[fs] - 1, one_below), (T.MIN_MIB[fs] - 2, two_below)):
        path = sparse(tmp_path / ('fs-%d.img' % mib), mib)
        res = mkfs(fs, path, 'byol')
        if expected is None:
            assert res.returncode != 0, '%s made a filesystem at %d MiB' % (fs, mib)
            assert blkid(path, 'TYPE') == ''
        else:
            assert res.returncode == 0, res.stdout
            assert blkid(path, 'TYPE') == expected, '%d MiB' % mib


@pytest.mark.parametrize('fs', MADE)
def test_label_length(tmp_path, fs):
    need(T.tool(fs), 'blkid')
    row = T.row(fs)
    size = max(row['min_mib'], 2)
    longest = label_of(fs, row['label_max'])
    path = sparse(tmp_path / 'fs.img', size)
    res = mkfs(fs, path, longest)
    assert res.returncode == 0, res.stdout
    assert blkid(path, 'LABEL') == longest
    # one byte more: refused, or cut
    too_long = label_of(fs, row['label_max'] + 1)
    path = sparse(tmp_path / 'fs2.img', size)
    res = mkfs(fs, path, too_long)
    kept = blkid(path, 'LABEL') if res.returncode == 0 else None
    assert res.returncode != 0 or kept != too_long, '%s kept a %d-byte label' % (fs, len(too_long))
    if kept is not None:
        assert len(kept) <= row['label_max']


@pytest.mark.parametrize('fs', ['ext3', 'ext4'])
def test_grow_on_the_device(tmp_path, fs):
    need(T.tool(fs), T.row(fs)['grow'][0], 'dumpe2fs')

    def blocks(path):
        out = subprocess.run(['dumpe2fs', '-h', path], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             universal_newlines=True, check=True).stdout
        return int([line for line in out.splitlines() if line.startswith('Block count:')][0].split(':')[1])

    path = sparse(tmp_path / 'fs.img', 16)
    assert mkfs(fs, path, 'byol').returncode == 0
    before = blocks(path)
    sparse_grow(path, 32)
    subprocess.run(T.grow_args(fs, path), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert blocks(path) == 2 * before


def sparse_grow(path, mib):
    with open(path, 'r+b') as f:
        f.truncate(mib * MIB)


@pytest.mark.parametrize('fs', ['xfs', 'btrfs'])
def test_grow_mounted(tmp_path, loopdev, fs):
    need(T.tool(fs), T.row(fs)['grow'][0], 'findmnt')
    with open('/proc/filesystems') as f:
        if fs not in f.read().split():
            pytest.skip('the kernel has no %s' % fs)
    # at 300 MiB: a btrfs of 110 MiB refuses to grow (EINVAL from the kernel, 6.x)
    size = max(T.MIN_MIB[fs], 300)
    dev = loopdev(size_mib=size, name='grow.img')
    backing = str(tmp_path / 'grow.img')
    assert mkfs(fs, dev, 'byol').returncode == 0
    mnt = str(tmp_path / 'mnt')
    os.makedirs(mnt)
    subprocess.run(['mount', dev, mnt], check=True)
    try:
        before = os.statvfs(mnt).f_blocks * os.statvfs(mnt).f_frsize
        sparse_grow(backing, 2 * size)
        subprocess.run(['losetup', '--set-capacity', dev], check=True)
        assert T.row(fs)['grow_target'] == 'mount'
        subprocess.run(T.grow_args(fs, mnt), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        after = os.statvfs(mnt).f_blocks * os.statvfs(mnt).f_frsize
        assert after > before + (size - 16) * MIB, (before, after)
    finally:
        subprocess.run(['umount', mnt], check=False)

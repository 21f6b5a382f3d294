# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The filesystems a layout may use, one row each: the command that makes it and its arguments, the smallest
size its mkfs accepts, the longest label it keeps, its Debian package, and the command that grows it.

Do not use this from other collections or standalone plugins/modules!

Pure data and small accessors. The layout planner (:mod:`._layout`), partitioning (:mod:`._partition`),
pre-flight (:mod:`._preflight`), the request rules (:mod:`._payload`) and the runner's package hints
(:mod:`._runner`) read it; nothing else keeps a list of filesystems. The numbers are the real tools'
(``tests/integration/test_fstable.py`` runs each mkfs on a file at the edges):

- ``min_mib``: the smallest size in MiB at which ``mkfs`` makes the filesystem: mkfs.xfs refuses 300 MB and less
  ("Filesystem must be larger than 300MB", xfsprogs 5.19 and later), mkfs.btrfs less than 109 MiB
  ("minimum size for each btrfs device is 114294784"); xfs and btrfs keep 1 MiB above that floor. mkfs.ext3 makes
  ext2 below 2 MiB ("Filesystem too small for a journal").
- ``label_max``: bytes of label the filesystem keeps (mke2fs(8) ``-L``: 16 bytes, longer is truncated;
  mkfs.xfs(8): 12, longer is refused; mkfs.fat(8) ``-n``: 11, longer is refused; mkfs.btrfs: a 256-byte field,
  it refuses 256 bytes and keeps 254 of 255 (btrfs-progs 6.2); mkswap(8) keeps 15 of a 16-byte field).
- ``grow``: the command that grows the filesystem to its (enlarged) device, and what it is given: the
  ``device`` (resize2fs, offline or mounted), the ``mount`` point (xfs_growfs, btrfs), the ``pool`` member
  (``zpool online -e``); None where there is none (vfat; swap is made again).
"""

from __future__ import annotations

FILESYSTEMS = (
    {'name': 'ext3', 'mkfs': ['mkfs.ext3', '-F', '-q'], 'label_option': '-L', 'min_mib': 2, 'label_max': 16,
     'package': 'e2fsprogs', 'grow': ['resize2fs'], 'grow_target': 'device'},
    {'name': 'ext4', 'mkfs': ['mkfs.ext4', '-F', '-q'], 'label_option': '-L', 'min_mib': 2, 'label_max': 16,
     'package': 'e2fsprogs', 'grow': ['resize2fs'], 'grow_target': 'device'},
    {'name': 'xfs', 'mkfs': ['mkfs.xfs', '-f', '-q'], 'label_option': '-L', 'min_mib': 301, 'label_max': 12,
     'package': 'xfsprogs', 'grow': ['xfs_growfs'], 'grow_target': 'mount'},
    {'name': 'btrfs', 'mkfs': ['mkfs.btrfs', '-f', '-q'], 'label_option': '-L', 'min_mib': 110, 'label_max': 254,
     'package': 'btrfs-progs', 'grow': ['btrfs', 'filesystem', 'resize', 'max'], 'grow_target': 'mount'},
    {'name': 'vfat', 'mkfs': ['mkfs.vfat', '-F', '32'], 'label_option': '-n', 'min_mib': 1, 'label_max': 11,
     'package': 'dosfstools', 'grow': None, 'grow_target': None},
    {'name': 'swap', 'mkfs': ['mkswap'], 'label_option': '--label', 'min_mib': 1, 'label_max': 15,
     'package': 'util-linux', 'grow': None, 'grow_target': None},
    # ZFS datasets are made by zpool/zfs create (see _partition.build) and carry no label
    {'name': 'zfs', 'mkfs': None, 'label_option': None, 'min_mib': 64, 'label_max': None,
     'package': 'zfsutils-linux', 'grow': ['zpool', 'online', '-e'], 'grow_target': 'pool', 'tool': 'zpool'},
)

_BY_NAME = dict((row['name'], row) for row in FILESYSTEMS)

# the names, in the order the planner's messages list them
NAMES = tuple(row['name'] for row in FILESYSTEMS)
# the filesystems byol_partition makes with a mkfs.* command (swap: mkswap; zfs: zpool/zfs)
MKFS_TYPES = tuple(row['name'] for row in FILESYSTEMS if row['mkfs'] and row['mkfs'][0].startswith('mkfs.'))
MIN_MIB = dict((row['name'], row['min_mib']) for row in FILESYSTEMS)
LABEL_MAX = dict((row['name'], row['label_max']) for row in FILESYSTEMS if row['label_max'])


def row(fs_type):
    """The table's row of ``fs_type`` (KeyError for a filesystem it does not know)."""
    return _BY_NAME[fs_type]


def tool(fs_type):
    """The command that makes ``fs_type`` (``mkfs.ext4``, ``mkswap``, ``zpool``), or None for an unknown one."""
    entry = _BY_NAME.get(fs_type)
    if entry is None:
        return None
    return entry.get('tool') or entry['mkfs'][0]


def mkfs_args(fs_type, device, label):
    """The argument list that makes ``fs_type`` labelled ``label`` on ``device``."""
    entry = row(fs_type)
    if not entry['mkfs']:
        raise ValueError('%s is not made with a mkfs command' % fs_type)
    return entry['mkfs'] + [entry['label_option'], label, device]


def grow_args(fs_type, target):
    """The argument list that grows ``fs_type`` to fill its device; ``target`` is what :func:`row`'s
    ``grow_target`` names (the device, the mount point, the pool and its member). None where there is none."""
    entry = row(fs_type)
    if not entry['grow']:
        return None
    return entry['grow'] + (list(target) if isinstance(target, (list, tuple)) else [target])


def tool_packages():
    """Debian package of every command the table names (mkfs and grow commands), for the runner's hints."""
    out = {}
    for entry in FILESYSTEMS:
        for argv in (entry['mkfs'], entry['grow'], [entry.get('tool')]):
            if argv and argv[0]:
                out[argv[0]] = entry['package']
    return out

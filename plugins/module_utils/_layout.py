# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The storage layout planner (pure: data in, data out, no I/O).

Do not use this from other collections or standalone plugins/modules!

:func:`plan_layout` turns a layout in the OVHcloud partitioning model (snake_case keys:
``mount_point``, ``fs_type``, ``size`` in MiB with 0 = fill, ``raid_level``, ``lv_name``,
``zpool_name``) plus the disks' sizes into a plan: partitions per disk (sectors, types,
names), md arrays, volume groups, logical volumes, ZFS pools and datasets, filesystems,
swap, mounts in depth order, the ESP and boot devices, and warnings.

Every rule violation raises :class:`ValidationError` with the values filled in, before
any disk is touched. See ``docs/partitioning.md`` for the rules and the ESP choice.
"""

from __future__ import annotations

import copy
import re

from ansible_collections.baremetal.byol.plugins.module_utils._blockdev import partition_path
from ansible_collections.baremetal.byol.plugins.module_utils import _fstable
from ansible_collections.baremetal.byol.plugins.module_utils import _rules as rules
from ansible_collections.baremetal.byol.plugins.module_utils._errors import ValidationError

MIB = 1024 * 1024
TIB2_SECTORS_512 = 2 ** 32  # MBR: 32-bit LBA, 2 TiB with 512-byte sectors

# the filesystems, the smallest size their mkfs accepts (MiB) and their longest label: _fstable's
FS_TYPES = _fstable.NAMES
FS_MIN_MIB = _fstable.MIN_MIB
LABEL_MAX = _fstable.LABEL_MAX

MD_LEVELS = (0, 1, 5, 6, 10)
ZFS_LEVELS = (0, 1, 5, 6, 7, 10)
# disks needed per level (md): raid0 stripes 2+, raid1 mirrors 2+, raid5 3+, raid6 4+, raid10 4+
MD_MIN_DISKS = {0: 2, 1: 2, 5: 3, 6: 4, 10: 4}
# ZFS: 0 stripe, 1 mirror, 5 raidz1, 6 raidz2, 7 raidz3, 10 striped mirrors
ZFS_MIN_DISKS = {0: 1, 1: 2, 5: 3, 6: 4, 7: 5, 10: 4}
REDUCTION_ORDER = (7, 6, 10, 5, 1, 0)
# ZFS: what a pool gets where the request says nothing (see docs/partitioning.md, "ZFS"). Set on the pool's root
# dataset, so every dataset inherits them; the pool's root dataset itself is never mounted.
ZFS_POOL_PROPERTIES = (('compression', 'lz4'), ('atime', 'off'), ('xattr', 'sa'), ('acltype', 'posixacl'),
                       ('mountpoint', 'none'), ('canmount', 'off'))
# ashift: 2^ashift is the smallest block ZFS writes; from the disks' physical sector size, within ZFS's bounds
ZFS_ASHIFT_MIN, ZFS_ASHIFT_MAX = 9, 16
DEFAULT_RAID_LEVEL = 1

ESP_SIZE_MIB = 511
BIOS_BOOT_SIZE_MIB = 1
ESP_LABEL = 'EFI_SYSPART'
ESP_MOUNT = '/boot/efi'

# md metadata 1.2 reserves up to 128 MiB at the start of each member (data offset) on
# large disks; LVM keeps 1 MiB of metadata per PV and allocates in 4 MiB extents.
MD_OVERHEAD_MIB = 132
PV_OVERHEAD_MIB = 4
EXTENT_MIB = 4

GPT_TYPES = {
    'esp': 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B',
    'bios_boot': '21686148-6449-6E6F-744E-656564454649',
    'fs': '0FC63DAF-8483-4772-8E79-3D69D8477DE4',
    'swap': '0657FD6D-A4AB-43C4-84E5-0933C84B4F4F',
    'md': 'A19D880F-05FC-4D3B-A006-743F0F84911E',
    'pv': 'E6D6D379-F507-44C2-A23C-238F2A3DF928',
    'zfs': '6A898CC3-1DD2-11B2-99A6-080020736631',
}
MBR_TYPES = {'esp': 'ef', 'fs': '83', 'swap': '82', 'md': 'fd', 'pv': '8e', 'zfs': 'bf', 'extended': '5'}


def _fail(msg, **extra):
    raise ValidationError(msg, **extra)


def md_min_disks(level):
    return MD_MIN_DISKS[level]


def reduce_level(level, ndisks, zfs=False):
    """The RAID level to use with ``ndisks`` disks: ``level`` or the first level after it in
    the order 7 (ZFS), 6, 10, 5, 1, 0 that has enough disks; None means a plain partition
    (one disk, no RAID)."""
    mins = ZFS_MIN_DISKS if zfs else MD_MIN_DISKS
    order = [lv for lv in REDUCTION_ORDER if lv in mins]
    idx = order.index(level)
    for candidate in order[idx:]:
        if ndisks >= mins[candidate]:
            return candidate
    return None


def array_capacity_mib(level, ndisks, member_mib):
    """Usable size of an md array of ``ndisks`` members of ``member_mib`` (before md overhead)."""
    if level is None:
        return member_mib
    if level == 0:
        return member_mib * ndisks
    if level == 1:
        return member_mib
    if level == 5:
        return member_mib * (ndisks - 1)
    if level == 6:
        return member_mib * (ndisks - 2)
    if level == 10:
        return member_mib * ndisks // 2
    if level == 7:
        return member_mib * (ndisks - 3)
    raise ValueError(level)


def slug(mount_point):
    """A short stable name for a mount point: ``/`` -> ``root``, ``/var/log`` -> ``var-log``."""
    if mount_point == '/':
        return 'root'
    s = re.sub(r'[^A-Za-z0-9_.-]+', '-', mount_point.strip('/'))
    return s.strip('-') or 'root'


def mount_depth_key(mount_point):
    parts = [p for p in mount_point.split('/') if p]
    return (len(parts), mount_point)


def _label(base, fs_type, used):
    maxlen = LABEL_MAX.get(fs_type, 12)
    label = base[:maxlen]
    if fs_type == 'vfat':
        label = label.upper()
    n = 1
    while label.lower() in used:
        suffix = str(n)
        label = base[:maxlen - len(suffix)] + suffix
        if fs_type == 'vfat':
            label = label.upper()
        n += 1
    used.add(label.lower())
    rules.enforce(rules.check_label(label, maxlen))
    return label


def _to_int(value, what):
    if isinstance(value, bool):
        _fail('%s must be a whole number, got %r' % (what, value))
    try:
        return int(value)
    except (TypeError, ValueError):
        _fail('%s must be a whole number, got %r' % (what, value))


def normalize_layout(layout, ndisks, mount_root=None):
    """Validate the user's layout items and fill in defaults. Returns (items, warnings).

    ``mount_root`` (resolved) counts in the length of every mount point's path.
    """
    if not layout:
        _fail('The layout is empty: give at least a partition for "/".')
    items = []
    warnings = []
    seen_mounts = {}
    for idx, raw in enumerate(layout):
        if not isinstance(raw, dict):
            _fail('Layout item %d must be a dictionary, got %r' % (idx + 1, raw))
        known = ('mount_point', 'fs_type', 'size', 'raid_level', 'lv_name', 'zpool_name')
        unknown = sorted(k for k in raw if k not in known)
        if unknown:
            if 'hardware_raid' in unknown or 'hardwareRaid' in unknown:
                _fail('hardwareRaid is not supported: it needs the vendor\'s RAID controller tools. Configure the '
                      'hardware RAID before the reinstall; the rescue system then sees it as one disk.')
            _fail('Layout item %d has unknown key(s) %s; known keys: %s' % (idx + 1, ', '.join(unknown), ', '.join(known)))
        fs_type = (raw.get('fs_type') or '').lower()
        mp = raw.get('mount_point')
        if not fs_type:
            _fail('Layout item %d (%s) has no fs_type; use one of %s' % (idx + 1, mp, ', '.join(FS_TYPES)))
        if fs_type not in FS_TYPES:
            _fail('Unknown filesystem %s for %s: use one of %s' % (fs_type, mp, ', '.join(FS_TYPES)))
        size = raw.get('size') if raw.get('size') is not None else 0
        rules.enforce(rules.check_size_mib(size, 'layout[%d].size' % idx))
        size = rules.as_int(size)
        requested = raw.get('raid_level')
        if requested is not None:
            requested = _to_int(requested, 'raid_level of %s' % mp)
        lv_name = raw.get('lv_name')
        zpool = raw.get('zpool_name')
        if lv_name is not None:
            rules.enforce(rules.check_lv_name(lv_name, 'layout[%d].lv_name' % idx))
        if zpool is not None:
            rules.enforce(rules.check_zpool_name(zpool, 'layout[%d].zpool_name' % idx))
        if fs_type == 'swap':
            if mp in (None, '', 'swap', 'none'):
                mp = 'swap'
            else:
                _fail('A swap partition has no mount point: set mount_point to "swap" (got %s)' % mp)
            if size == 0:
                _fail('swap may not fill the disk (size 0): give swap a size in MiB')
            if lv_name or zpool:
                _fail('swap cannot be a logical volume or a ZFS dataset: it is one plain partition on every disk')
            if requested is not None:
                warnings.append('swap is never RAIDed: raid_level %s ignored, one swap partition of %d MiB on each of the %d disk(s)'
                                % (requested, size, ndisks))
            requested = None
        else:
            if not mp or not isinstance(mp, str):
                _fail('Layout item %d (%s) has no mount_point' % (idx + 1, fs_type))
            rules.enforce(rules.check_mount_point(mp, 'layout[%d].mount_point' % idx, root=mount_root))
            if mp in seen_mounts:
                _fail('Mount point %s appears twice in the layout (items %d and %d): each mount point once'
                      % (mp, seen_mounts[mp] + 1, idx + 1))
            seen_mounts[mp] = idx
            if mp == ESP_MOUNT or mp.startswith(ESP_MOUNT + '/'):
                _fail('%s is the EFI system partition: the installer adds it itself (one per disk); remove it from the layout'
                      % mp)
            if requested is not None:
                valid = ZFS_LEVELS if zpool else MD_LEVELS
                if requested not in valid:
                    _fail('raid_level %s of %s is not supported: use one of %s%s'
                          % (requested, mp, ', '.join(str(v) for v in valid),
                             '' if zpool else ' (7 = raidz3 is for ZFS only)'))
            if fs_type == 'zfs' and not zpool:
                _fail('%s has fs_type zfs but no zpool_name: ZFS datasets need a pool name' % mp)
            if zpool and fs_type != 'zfs':
                _fail('%s has zpool_name %s but fs_type %s: ZFS datasets use fs_type zfs' % (mp, zpool, fs_type))
            if zpool and lv_name:
                _fail('%s cannot be both a logical volume (%s) and a ZFS dataset (%s)' % (mp, lv_name, zpool))
        if size and size < FS_MIN_MIB[fs_type]:
            _fail('%s: %s needs at least %d MiB, the layout gives %d MiB' % (mp, fs_type, FS_MIN_MIB[fs_type], size))
        level = None
        if fs_type != 'swap':
            level = DEFAULT_RAID_LEVEL if requested is None else requested
        items.append({
            'index': idx, 'mount_point': mp, 'fs_type': fs_type, 'size': size, 'fill': size == 0,
            'requested_raid_level': requested, 'raid_level': level, 'lv_name': lv_name, 'zpool_name': zpool,
        })
    if not any(i['mount_point'] == '/' for i in items):
        _fail('The layout has no "/" (root) partition')
    fills = [i for i in items if i['fill']]
    if len(fills) > 1:
        _fail('Only one partition may fill the remaining space (size 0); these do: %s'
              % ', '.join(i['mount_point'] for i in fills))
    lv_names = {}
    for i in items:
        if i['lv_name']:
            if i['lv_name'] in lv_names:
                _fail('Logical volume name %s is used twice (%s and %s)' % (i['lv_name'], lv_names[i['lv_name']], i['mount_point']))
            lv_names[i['lv_name']] = i['mount_point']
    boot = [i for i in items if i['mount_point'] == '/boot']
    boot_item = boot[0] if boot else [i for i in items if i['mount_point'] == '/'][0]
    if boot_item['fs_type'] == 'xfs':
        _fail('%s may not be XFS (the boot loader of Debian-like images cannot read it reliably): use ext4 for %s%s'
              % (boot_item['mount_point'], boot_item['mount_point'],
                 '' if boot else ', or add a separate /boot partition in ext4'))
    if boot_item['zpool_name']:
        _fail('%s may not be on ZFS: add a separate /boot partition in ext4' % boot_item['mount_point'])
    if boot_item['fs_type'] == 'vfat':
        _fail('%s may not be vfat: use ext4' % boot_item['mount_point'])
    return items, warnings


def _align_up(n, a):
    return -(-n // a) * a


def _lv_need_mib(size):
    return _align_up(size, EXTENT_MIB)


# ----------------------------------------------------------------------------------------------
# partition tables (one class per table type: numbering, types, boot flags, limits)
# ----------------------------------------------------------------------------------------------

class PartitionTable(object):
    """The table written on every disk of the plan, in MiB: the first partition starts at 1 MiB.

    A subclass says what its table type does differently: the type codes, names, the space kept at the end of the
    disk, the numbering (MBR: primary, extended and logical partitions), the boot flag and the size limits.
    """

    table_type = None
    types = {}
    end_reserve_mib = 0

    def __init__(self, boot_mode, sector_size, configdrive_size):
        self.boot_mode = boot_mode
        self.sector_size = sector_size
        self.configdrive_size = configdrive_size
        self.sectors_per_mib = MIB // sector_size

    def boot_partitions(self):
        """What the firmware needs first on every disk: an ESP (UEFI)."""
        if self.boot_mode == 'uefi':
            return [{'role': 'esp', 'size': ESP_SIZE_MIB, 'name': ESP_LABEL}]
        return []

    def arrange(self, count):
        """Prepare the numbering of ``count`` partitions per disk."""

    def usable_end_mib(self, disk, first, warnings):
        """Where the partitions of ``disk`` must end (MiB); the first disk keeps the config drive's space free."""
        return disk['size'] // MIB - self.end_reserve_mib - (self.configdrive_size if first else 0)

    def positions(self, entries, size_of):
        """``([(entry, start MiB, number, logical)], end MiB)`` of ``entries`` (the same on every disk); an extended
        partition is listed as the entry ``'extended'``."""
        pos = 1
        out = []
        for n, entry in enumerate(entries, start=1):
            if self.opens_extended(n):
                out.append(('extended', pos, n, False))
            number, logical, gap = self.slot(n)
            pos += gap
            out.append((entry, pos, number, logical))
            pos += size_of(entry)
        return out, pos

    def slot(self, n):
        """(number, logical, MiB kept free before it) of the ``n``-th partition."""
        return n, False, 0

    def opens_extended(self, n):
        """Whether an extended partition starts where the ``n``-th partition would."""
        return False

    def name(self, name):
        return name

    def bootable(self, role, holds_boot):
        return False

    def check_limits(self, parts, disk_path):
        """Raise ValidationError for a partition the table cannot address."""

    def partition(self, disk_path, number, role, start, size, name, logical, bootable):
        return {'number': number, 'role': role, 'start': start * self.sectors_per_mib,
                'size': size * self.sectors_per_mib, 'start_mib': start, 'size_mib': size, 'type': self.types[role],
                'name': self.name(name), 'bootable': bootable, 'logical': logical,
                'device': partition_path(disk_path, number)}


class GPTTable(PartitionTable):
    """GPT: partitions numbered in order, named; 1 MiB kept for the backup table; a BIOS boot partition for GRUB
    when the firmware boots legacy."""

    table_type = 'gpt'
    types = GPT_TYPES
    end_reserve_mib = 1

    def boot_partitions(self):
        if self.boot_mode == 'legacy':
            return [{'role': 'bios_boot', 'size': BIOS_BOOT_SIZE_MIB, 'name': 'BIOS_BOOT'}]
        return super(GPTTable, self).boot_partitions()


class MBRTable(PartitionTable):
    """MBR (msdos): four primary slots, one of them kept for the config drive; more partitions go into an
    extended partition as logical ones (numbered from 5, each after a 1 MiB EBR gap). 32-bit sector addresses:
    nothing may end beyond 2 TiB (512-byte sectors). No names; the boot flag on the partition holding /boot
    (legacy) or on the ESP (UEFI)."""

    table_type = 'msdos'
    types = MBR_TYPES
    max_sectors = TIB2_SECTORS_512

    def __init__(self, boot_mode, sector_size, configdrive_size):
        super(MBRTable, self).__init__(boot_mode, sector_size, configdrive_size)
        self.extended = False
        self.primaries = 4

    def arrange(self, count):
        reserve_cd = 1 if self.configdrive_size else 0
        self.extended = count + reserve_cd > 4
        # slots 1..primaries primary, the next one extended, (4 left for the config drive)
        self.primaries = 3 - reserve_cd if self.extended else 4

    def limit_mib(self):
        return self.max_sectors * self.sector_size // MIB

    def usable_end_mib(self, disk, first, warnings):
        total_mib = disk['size'] // MIB
        usable_end = super(MBRTable, self).usable_end_mib(disk, first, warnings)
        limit_mib = self.limit_mib()
        if first and self.configdrive_size and total_mib > limit_mib:
            _fail('MBR partitions must end before 2 TiB, the config drive included: the config drive at the end of '
                  '%s would end at %d MiB (disk size %d MiB, limit %d MiB). Use table_type gpt.'
                  % (disk['path'], total_mib, total_mib, limit_mib))
        if usable_end > limit_mib:
            warnings.append('%s: MBR can only address the first 2 TiB (%d MiB) of the %d MiB disk; the rest is unused. '
                            'Use GPT to use the whole disk.' % (disk['path'], limit_mib, total_mib))
            usable_end = limit_mib
        return usable_end

    def slot(self, n):
        if not self.extended or n <= self.primaries:
            return n, False, 0
        return 5 + (n - self.primaries - 1), True, 1  # the EBR before each logical partition

    def opens_extended(self, n):
        return self.extended and n == self.primaries + 1

    def name(self, name):
        return None

    def bootable(self, role, holds_boot):
        if self.boot_mode == 'legacy':
            return holds_boot
        return role == 'esp'

    def check_limits(self, parts, disk_path):
        for part in parts:
            if part['start'] + part['size'] > self.max_sectors:
                _fail('MBR partitions must end before 2 TiB: partition %d (%s) of %s would end at sector %d (limit %d). '
                      'Use table_type gpt.' % (part['number'], part['name'] or part['role'], disk_path,
                                               part['start'] + part['size'], self.max_sectors))


TABLES = {'gpt': GPTTable, 'msdos': MBRTable}


# ----------------------------------------------------------------------------------------------
# the planner, step by step
# ----------------------------------------------------------------------------------------------

def check_request(boot_mode, table_type, disks, configdrive_size):
    """The arguments beside the layout; returns ``configdrive_size`` as a number."""
    if boot_mode not in ('uefi', 'legacy'):
        _fail('boot_mode must be uefi or legacy, got %s' % boot_mode)
    if table_type not in TABLES:
        _fail('table_type must be gpt or msdos, got %s' % table_type)
    if not disks:
        _fail('No disks given')
    paths = [d['path'] for d in disks]
    if len(set(paths)) != len(paths):
        _fail('The same disk is listed twice: %s' % ', '.join(paths))
    rules.enforce(rules.check_configdrive_size(configdrive_size or 0, 'configdrive_size', allow_zero=True))
    return rules.as_int(configdrive_size or 0)


def check_zfs(items, zfs_available):
    if any(i['zpool_name'] for i in items) and not zfs_available:
        _fail('The layout uses ZFS (zpool %s) but the rescue system has no ZFS tools (zpool, zfs from zfsutils-linux and '
              'the zfs kernel module): install them or use md/LVM instead'
              % ', '.join(sorted(set(i['zpool_name'] for i in items if i['zpool_name']))))


def reduce_levels(items, ndisks, warnings):
    """Each item's RAID level for ``ndisks`` disks (see :func:`reduce_level`), warning where it changes."""
    for i in items:
        if i['raid_level'] is None:
            continue
        zfs = bool(i['zpool_name'])
        new = reduce_level(i['raid_level'], ndisks, zfs=zfs)
        if new != i['raid_level']:
            explicit = i['requested_raid_level'] is not None
            if explicit or (new is None and ndisks > 1):
                if new is None:
                    warnings.append('%s: RAID %d needs at least %d disks, there is %d: a plain partition without RAID is used'
                                    % (i['mount_point'], i['raid_level'],
                                       (ZFS_MIN_DISKS if zfs else MD_MIN_DISKS)[i['raid_level']], ndisks))
                else:
                    warnings.append('%s: RAID %d needs at least %d disks, there are %d: reduced to RAID %d'
                                    % (i['mount_point'], i['raid_level'],
                                       (ZFS_MIN_DISKS if zfs else MD_MIN_DISKS)[i['raid_level']], ndisks, new))
        i['raid_level'] = new
        if zfs and i['raid_level'] is None:
            i['raid_level'] = 0  # a one-disk pool is a single vdev


def group_slots(items):
    """Items -> slots, one partition per disk each: ``swap`` (one per disk), ``fs`` (plain), ``md`` (an array of one
    partition per disk), ``pv`` (the members of one volume group per RAID level) and ``zfs`` (one pool's members)."""
    slots = []
    vg_slots = {}
    zp_slots = {}
    for i in items:
        if i['fs_type'] == 'swap':
            slots.append({'kind': 'swap', 'items': [i], 'size': i['size'], 'fill': False, 'name': 'swap'})
        elif i['lv_name']:
            level = i['raid_level']
            if level not in vg_slots:
                vgname = 'vg' if level is None else 'vg_r%d' % level
                vg_slots[level] = {'kind': 'pv', 'items': [], 'raid_level': level, 'vg': vgname, 'fill': False,
                                   'name': vgname}
                slots.append(vg_slots[level])
            vg_slots[level]['items'].append(i)
        elif i['zpool_name']:
            pool = i['zpool_name']
            if pool not in zp_slots:
                zp_slots[pool] = {'kind': 'zfs', 'items': [], 'raid_level': i['raid_level'], 'pool': pool,
                                  'fill': False, 'name': 'zfs-' + pool}
                slots.append(zp_slots[pool])
            elif zp_slots[pool]['raid_level'] != i['raid_level']:
                _fail('All datasets of ZFS pool %s must have the same raid_level (%s has %s, another has %s)'
                      % (pool, i['mount_point'], i['raid_level'], zp_slots[pool]['raid_level']))
            zp_slots[pool]['items'].append(i)
        else:
            kind = 'fs' if i['raid_level'] is None else 'md'
            slots.append({'kind': kind, 'items': [i], 'size': i['size'], 'fill': i['fill'], 'name': slug(i['mount_point']),
                          'raid_level': i['raid_level']})
    return slots


def size_slots(slots, ndisks):
    """Each slot's partition size per disk (MiB) and the least it needs when it fills the disk (``min_fill``); a
    volume group takes the rest of the disks when nothing else fills them. Returns the slots in disk order: the
    filling one last, the others in layout order."""
    for s in slots:
        if s['kind'] == 'pv':
            s['fill'] = any(i['fill'] for i in s['items'])
            n = ndisks if s['raid_level'] is not None else 1
            lv_total = sum(_lv_need_mib(i['size']) for i in s['items'] if not i['fill'])
            if s['raid_level'] == 0:
                # VG spans one partition per disk directly (striped LVs): each gets its share
                per_disk = _align_up(-(-lv_total // n) + PV_OVERHEAD_MIB + EXTENT_MIB * len(s['items']), 1)
            else:
                per_disk = lv_total + PV_OVERHEAD_MIB + (MD_OVERHEAD_MIB if s['raid_level'] is not None else 0)
                if s['raid_level'] is not None:
                    # usable size of the array must hold the LVs: size the members for the level
                    data_disks = array_capacity_mib(s['raid_level'], ndisks, 1)
                    per_disk = -(-(lv_total + PV_OVERHEAD_MIB) // data_disks) + MD_OVERHEAD_MIB
            s['size'] = per_disk
            s['min_fill'] = per_disk + 8
        elif s['kind'] == 'zfs':
            s['fill'] = any(i['fill'] for i in s['items'])
            total = sum(i['size'] for i in s['items'] if not i['fill'])
            data_disks = array_capacity_mib(s['raid_level'], ndisks, 1) if ndisks > 1 else 1
            s['size'] = -(-total // max(data_disks, 1)) + 64
            s['min_fill'] = s['size'] + 64
        else:
            fs = s['items'][0]['fs_type']
            s['min_fill'] = FS_MIN_MIB[fs] + (MD_OVERHEAD_MIB if s['kind'] == 'md' else 0)
    if not any(s['fill'] for s in slots):
        pvs = [s for s in slots if s['kind'] == 'pv']
        if pvs:
            pvs[-1]['fill'] = True
            pvs[-1]['vg_fills_free'] = True
    return [s for s in slots if not s['fill']] + [s for s in slots if s['fill']]


def zfs_ashift(disks):
    """The ``ashift`` of a pool on ``disks``: log2 of their largest physical sector size (the logical one when the
    physical one is not known), so that ZFS never writes less than a physical sector."""
    size = max((d.get('physical_sector_size') or d.get('sector_size') or 512) for d in disks)
    if size & (size - 1):
        _fail('Physical sector size %d of %s is not a power of two: ZFS cannot use it'
              % (size, ', '.join(d['path'] for d in disks)))
    return min(max(size.bit_length() - 1, ZFS_ASHIFT_MIN), ZFS_ASHIFT_MAX)


def sector_size_of(disks):
    """The disks' one logical sector size."""
    sector = disks[0].get('sector_size') or 512
    for d in disks:
        if (d.get('sector_size') or 512) != sector:
            _fail('All disks must have the same logical sector size: %s' %
                  ', '.join('%s %d' % (x['path'], x.get('sector_size') or 512) for x in disks))
    return sector


def fit(table, entries, ordered, disks, disk_mibs):
    """Sizes (MiB, by slot id) on every disk: the fixed ones as asked, the filling slot what is left on the smallest
    disk. Raises ValidationError when the layout does not fit."""
    configdrive_size = table.configdrive_size
    sizes = {}
    fill_slot = None
    for s in ordered:
        if s['fill']:
            fill_slot = s
            sizes[id(s)] = 0
        else:
            sizes[id(s)] = s['size']

    def size_of(entry):
        return entry['size'] if 'role' in entry else sizes[id(entry)]
    needed_end = table.positions(entries, size_of)[1]
    smallest = min(disk_mibs)
    smallest_disk = disks[disk_mibs.index(smallest)]['path']
    if fill_slot is not None:
        free = smallest - needed_end
        if free < fill_slot['min_fill']:
            _fail('The layout does not fit: the fixed-size partitions need %d MiB on each disk, leaving %d MiB on %s for %s, '
                  'which needs at least %d MiB (disk %d MiB%s%s). Make the other partitions smaller or use bigger disks.'
                  % (needed_end, max(free, 0), smallest_disk, _slot_desc(fill_slot), fill_slot['min_fill'],
                     disks[disk_mibs.index(smallest)]['size'] // MIB,
                     ', %d MiB kept for the config drive' % configdrive_size if configdrive_size and smallest_disk == disks[0]['path'] else '',
                     ', table %s' % table.table_type))
        sizes[id(fill_slot)] = free
    elif needed_end > smallest:
        _fail('The layout does not fit: it needs %d MiB on each disk but %s has only %d MiB usable (disk %d MiB%s). '
              'Make the partitions smaller or use bigger disks.'
              % (needed_end, smallest_disk, smallest, disks[disk_mibs.index(smallest)]['size'] // MIB,
                 ', %d MiB kept for the config drive' % configdrive_size if configdrive_size and smallest_disk == disks[0]['path'] else ''))
    return sizes


def partition_disks(table, entries, sizes, disks, disk_mibs, boot_item):
    """The partitions of every disk. Returns (plan disks, devices by slot id, ESP devices, BIOS boot devices)."""
    positions = table.positions(entries, lambda e: e['size'] if 'role' in e else sizes[id(e)])[0]
    plan_disks = []
    slot_devices = dict((id(e), []) for e in entries if 'role' not in e)
    esp_devices = []
    bios_devices = []
    for didx, d in enumerate(disks):
        parts = []
        for p, start, number, logical in positions:
            if p == 'extended':
                parts.append(table.partition(d['path'], number, 'extended', start, disk_mibs[didx] - start, None, False,
                                             False))
                continue
            if 'role' in p:
                role, size, name = p['role'], p['size'], p['name']
                holds_boot = False
            else:
                role, size, name = p['kind'], sizes[id(p)], p['name']
                holds_boot = boot_item in p['items'] and p['kind'] in ('fs', 'md', 'pv')
            part = table.partition(d['path'], number, role, start, size, name, logical, table.bootable(role, holds_boot))
            if role == 'esp':
                esp_devices.append(part['device'])
            elif role == 'bios_boot':
                bios_devices.append(part['device'])
            else:
                slot_devices[id(p)].append(part['device'])
            parts.append(part)
        table.check_limits(parts, d['path'])
        plan_disks.append({'path': d['path'], 'size_mib': d['size'] // MIB, 'size_sectors': d['size'] // table.sector_size,
                           'usable_end_mib': disk_mibs[didx], 'partitions': parts})
    return plan_disks, slot_devices, esp_devices, bios_devices


class Stack(object):
    """What is built on the partitions, slot by slot: md arrays, volume groups and logical volumes, ZFS pools and
    datasets, filesystems and swap (labels unique across the plan)."""

    def __init__(self, ndisks, ashift=12):
        self.ndisks = ndisks
        self.ashift = ashift
        self.md_arrays = []
        self.volume_groups = []
        self.logical_volumes = []
        self.zpools = []
        self.datasets = []
        self.filesystems = []
        self.swaps = []
        self.used_labels = set()
        self.swap_labels = set()

    def add(self, slot, devs, size):
        getattr(self, 'add_' + slot['kind'])(slot, devs, size)

    def add_swap(self, slot, devs, size):
        i = slot['items'][0]
        for n, dev in enumerate(devs, start=1):
            label = _label('swap%d' % n if self.ndisks > 1 else 'swap', 'swap', self.swap_labels)
            self.swaps.append({'device': dev, 'label': label, 'size_mib': i['size']})

    def add_fs(self, slot, devs, size):
        self.filesystems.append(_fs(slot['items'][0], devs[0], self.used_labels, size))

    def md_array(self, name, level, devs, size, requested=None):
        dev = '/dev/md/%s' % name
        self.md_arrays.append({'name': name, 'device': dev, 'level': level, 'members': list(devs), 'metadata': '1.2',
                               'requested_level': requested, 'member_size_mib': size,
                               'capacity_mib': array_capacity_mib(level, self.ndisks, size)})
        return dev

    def add_md(self, slot, devs, size):
        i = slot['items'][0]
        dev = self.md_array('md-%s' % slot['name'], slot['raid_level'], devs, size, i['requested_raid_level'])
        self.filesystems.append(_fs(i, dev, self.used_labels, array_capacity_mib(slot['raid_level'], self.ndisks, size)))

    def add_pv(self, slot, devs, size):
        level = slot['raid_level']
        if level is None:
            pvs, stripes = list(devs[:1]), 1
        elif level == 0:
            pvs, stripes = list(devs), self.ndisks
        else:
            pvs, stripes = [self.md_array('md-%s' % slot['vg'], level, devs, size)], 1
        self.volume_groups.append({'name': slot['vg'], 'pvs': pvs, 'raid_level': level,
                                   'fills_free': bool(slot.get('vg_fills_free'))})
        for i in sorted(slot['items'], key=lambda x: x['fill']):
            lvdev = '/dev/%s/%s' % (slot['vg'], i['lv_name'])
            # lvcreate rounds a size up to whole extents on every stripe
            alloc = _align_up(i['size'], EXTENT_MIB * stripes) if not i['fill'] else None
            self.logical_volumes.append({'vg': slot['vg'], 'name': i['lv_name'], 'size_mib': i['size'], 'alloc_mib': alloc,
                                         'fill': i['fill'], 'stripes': stripes, 'device': lvdev,
                                         'mount_point': i['mount_point']})
            self.filesystems.append(_fs(i, lvdev, self.used_labels, i['size']))

    def add_zfs(self, slot, devs, size):
        level = slot['raid_level']
        self.zpools.append({'name': slot['pool'], 'level': level, 'vdevs': _zfs_vdevs(level, devs), 'members': list(devs),
                            'ashift': self.ashift, 'properties': dict(ZFS_POOL_PROPERTIES)})
        names = set()
        for i in sorted(slot['items'], key=lambda x: mount_depth_key(x['mount_point'])):
            base = slug(i['mount_point'])
            name, n = base, 1
            while name in names:  # /var-log and /var/log: var-log, var-log1
                name, n = '%s%d' % (base, n), n + 1
            names.add(name)
            ds = '%s/%s' % (slot['pool'], name)
            # mounted in depth order by byol_partition (canmount=noauto until then, see _partition.zfs_finish); the
            # installed system's ZFS mounts all but / itself (zfs-mount.service), its initramfs mounts /
            self.datasets.append({'name': ds, 'pool': slot['pool'], 'quota_mib': i['size'], 'mount_point': i['mount_point'],
                                  'canmount': 'noauto' if i['mount_point'] == '/' else 'on'})
            self.filesystems.append({'device': ds, 'fs_type': 'zfs', 'label': None, 'mount_point': i['mount_point'],
                                     'size_mib': i['size']})

    def add_esps(self, esp_devices):
        for n, dev in enumerate(esp_devices):
            self.filesystems.append({'device': dev, 'fs_type': 'vfat', 'label': ESP_LABEL,
                                     'mount_point': ESP_MOUNT if n == 0 else None, 'size_mib': ESP_SIZE_MIB, 'role': 'esp'})

    def mounts(self):
        """The filesystems with a mount point, parents before children."""
        return sorted(({'mount_point': f['mount_point'], 'device': f['device'], 'fs_type': f['fs_type']}
                       for f in self.filesystems if f.get('mount_point')), key=lambda m: mount_depth_key(m['mount_point']))

    def device_of(self, mount_point):
        return [f for f in self.filesystems if f.get('mount_point') == mount_point][0]['device']


def plan_layout(layout, disks, boot_mode='uefi', table_type='gpt', configdrive_size=0, zfs_available=True,
                mount_root=None):
    """Plan the storage layout.

    ``disks``: list of ``{'path': '/dev/sda', 'size': bytes, 'sector_size': 512}`` in order
    (the first one carries the config drive). ``configdrive_size`` in MiB is left free at
    the end of the first disk. ``mount_root`` (resolved), when given, counts in the length of the
    mount points' paths. Returns the plan dict (see module RETURN docs).

    The steps: the request (:func:`check_request`, :func:`normalize_layout`, :func:`check_zfs`), RAID levels for the
    number of disks (:func:`reduce_levels`), slots of one partition per disk (:func:`group_slots`,
    :func:`size_slots`), the partition table (:class:`GPTTable` or :class:`MBRTable`; :func:`fit`,
    :func:`partition_disks`), then what is built on the partitions (:class:`Stack`).
    """
    configdrive_size = check_request(boot_mode, table_type, disks, configdrive_size)
    ndisks = len(disks)
    items, warnings = normalize_layout(layout, ndisks, mount_root=mount_root)
    check_zfs(items, zfs_available)
    reduce_levels(items, ndisks, warnings)
    ordered = size_slots(group_slots(items), ndisks)

    table = TABLES[table_type](boot_mode, sector_size_of(disks), configdrive_size)
    entries = table.boot_partitions() + ordered
    table.arrange(len(entries))
    disk_mibs = [table.usable_end_mib(d, idx == 0, warnings) for idx, d in enumerate(disks)]
    sizes = fit(table, entries, ordered, disks, disk_mibs)
    boot_item = ([i for i in items if i['mount_point'] == '/boot'] or [i for i in items if i['mount_point'] == '/'])[0]
    plan_disks, slot_devices, esp_devices, bios_devices = partition_disks(table, entries, sizes, disks, disk_mibs,
                                                                          boot_item)

    stack = Stack(ndisks, zfs_ashift(disks) if any(s['kind'] == 'zfs' for s in ordered) else None)
    for s in ordered:
        stack.add(s, slot_devices[id(s)], sizes[id(s)])
    if boot_mode == 'uefi':
        stack.add_esps(esp_devices)

    return {
        'boot_mode': boot_mode,
        'table_type': table_type,
        'sector_size': table.sector_size,
        'configdrive_size': configdrive_size,
        'disks': plan_disks,
        'md_arrays': stack.md_arrays,
        'volume_groups': stack.volume_groups,
        'logical_volumes': stack.logical_volumes,
        'zpools': stack.zpools,
        'datasets': stack.datasets,
        'filesystems': stack.filesystems,
        'swaps': stack.swaps,
        'mounts': stack.mounts(),
        'esp_devices': esp_devices,
        'bios_boot_devices': bios_devices,
        'boot_device': stack.device_of(boot_item['mount_point']),
        'root_device': stack.device_of('/'),
        'warnings': warnings,
    }


def _slot_desc(slot):
    if slot['kind'] == 'pv':
        return 'volume group %s' % slot['vg']
    if slot['kind'] == 'zfs':
        return 'ZFS pool %s' % slot['pool']
    return slot['items'][0]['mount_point']


def _fs(item, device, used_labels, size_mib):
    return {'device': device, 'fs_type': item['fs_type'], 'label': _label(slug(item['mount_point']), item['fs_type'], used_labels),
            'mount_point': item['mount_point'], 'size_mib': size_mib}


def _zfs_vdevs(level, devs):
    if level == 0 or len(devs) == 1:
        return [[d] for d in devs]
    if level == 1:
        return [['mirror'] + list(devs)]
    if level == 10:
        pairs = []
        for n in range(0, len(devs) - len(devs) % 2, 2):
            pairs.append(['mirror', devs[n], devs[n + 1]])
        return pairs
    return [[{5: 'raidz1', 6: 'raidz2', 7: 'raidz3'}[level]] + list(devs)]


def plan_summary(plan):
    """Human-readable lines for --diff and reports."""
    lines = ['table %s, boot %s, sector %d' % (plan['table_type'], plan['boot_mode'], plan['sector_size'])]
    for d in plan['disks']:
        lines.append('%s (%d MiB):' % (d['path'], d['size_mib']))
        for p in d['partitions']:
            lines.append('  %-16s start %8d MiB size %8d MiB type %s%s%s' % (
                p['device'], p['start_mib'], p['size_mib'], p['type'], ' name %s' % p['name'] if p['name'] else '',
                ' (%s%s)' % (p['role'], ', logical' if p['logical'] else '')))
    for md in plan['md_arrays']:
        lines.append('%s raid%d metadata %s members %s' % (md['device'], md['level'], md['metadata'], ' '.join(md['members'])))
    for vg in plan['volume_groups']:
        lines.append('vg %s on %s' % (vg['name'], ' '.join(vg['pvs'])))
    for lv in plan['logical_volumes']:
        lines.append('lv %s/%s %s' % (lv['vg'], lv['name'], 'rest of the VG' if lv['fill'] else '%d MiB' % lv['size_mib']))
    for zp in plan['zpools']:
        lines.append('zpool %s %s ashift %s' % (zp['name'], ' '.join(' '.join(v) for v in zp['vdevs']), zp['ashift']))
    for ds in plan.get('datasets') or []:
        lines.append('zfs %s -> %s%s' % (ds['name'], ds['mount_point'],
                                         ' quota %d MiB' % ds['quota_mib'] if ds['quota_mib'] else ''))
    for f in plan['filesystems']:
        lines.append('%s %s label %s -> %s' % (f['device'], f['fs_type'], f['label'], f['mount_point'] or '(not mounted)'))
    for s in plan['swaps']:
        lines.append('%s swap label %s' % (s['device'], s['label']))
    return lines


def public_plan(plan):
    return copy.deepcopy(plan)

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


def plan_layout(layout, disks, boot_mode='uefi', table_type='gpt', configdrive_size=0, zfs_available=True,
                mount_root=None):
    """Plan the storage layout.

    ``disks``: list of ``{'path': '/dev/sda', 'size': bytes, 'sector_size': 512}`` in order
    (the first one carries the config drive). ``configdrive_size`` in MiB is left free at
    the end of the first disk. ``mount_root`` (resolved), when given, counts in the length of the
    mount points' paths. Returns the plan dict (see module RETURN docs).
    """
    if boot_mode not in ('uefi', 'legacy'):
        _fail('boot_mode must be uefi or legacy, got %s' % boot_mode)
    if table_type not in ('gpt', 'msdos'):
        _fail('table_type must be gpt or msdos, got %s' % table_type)
    if not disks:
        _fail('No disks given')
    paths = [d['path'] for d in disks]
    if len(set(paths)) != len(paths):
        _fail('The same disk is listed twice: %s' % ', '.join(paths))
    rules.enforce(rules.check_configdrive_size(configdrive_size or 0, 'configdrive_size', allow_zero=True))
    configdrive_size = rules.as_int(configdrive_size or 0)
    ndisks = len(disks)
    items, warnings = normalize_layout(layout, ndisks, mount_root=mount_root)

    if any(i['zpool_name'] for i in items) and not zfs_available:
        _fail('The layout uses ZFS (zpool %s) but the rescue system has no ZFS tools (zpool, zfs from zfsutils-linux and '
              'the zfs kernel module): install them or use md/LVM instead'
              % ', '.join(sorted(set(i['zpool_name'] for i in items if i['zpool_name']))))

    # --- RAID level reduction ---------------------------------------------------------
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

    # --- group into "slots": one partition per disk for each slot ---------------------
    # slot kinds: fs (plain partition), md (md array of one partition per disk),
    # swap (one per disk), pv (VG member partition(s)), zfs (pool member partition(s))
    slots = []
    vg_slots = {}
    zp_slots = {}
    for i in items:
        if i['fs_type'] == 'swap':
            slots.append({'kind': 'swap', 'items': [i], 'size': i['size'], 'fill': False, 'name': 'swap'})
        elif i['lv_name']:
            level = i['raid_level']
            key = level
            if key not in vg_slots:
                vgname = 'vg' if level is None else 'vg_r%d' % level
                vg_slots[key] = {'kind': 'pv', 'items': [], 'raid_level': level, 'vg': vgname, 'fill': False,
                                 'name': vgname}
                slots.append(vg_slots[key])
            vg_slots[key]['items'].append(i)
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

    # fill slot last; the rest in layout order
    ordered = [s for s in slots if not s['fill']] + [s for s in slots if s['fill']]

    # --- geometry ------------------------------------------------------------------------
    sector = disks[0].get('sector_size') or 512
    for d in disks:
        if (d.get('sector_size') or 512) != sector:
            _fail('All disks must have the same logical sector size: %s' %
                  ', '.join('%s %d' % (x['path'], x.get('sector_size') or 512) for x in disks))
    spm = MIB // sector  # sectors per MiB
    boot_parts = []
    if boot_mode == 'uefi':
        boot_parts.append({'role': 'esp', 'size': ESP_SIZE_MIB, 'name': ESP_LABEL})
    elif table_type == 'gpt':
        boot_parts.append({'role': 'bios_boot', 'size': BIOS_BOOT_SIZE_MIB, 'name': 'BIOS_BOOT'})

    nparts = len(boot_parts) + len(ordered)
    mbr_extended = False
    mbr_primaries = 4
    if table_type == 'msdos':
        reserve_cd = 1 if configdrive_size else 0
        if nparts + reserve_cd > 4:
            mbr_extended = True
            mbr_primaries = 3 - reserve_cd  # slots 1..p primary, p+1 extended, (4 left for the config drive)

    disk_mibs = []
    for idx, d in enumerate(disks):
        total_mib = d['size'] // MIB
        end_reserve = 1 if table_type == 'gpt' else 0  # backup GPT
        usable_end = total_mib - end_reserve - (configdrive_size if idx == 0 else 0)
        if table_type == 'msdos':
            limit_mib = TIB2_SECTORS_512 * 512 // MIB if sector == 512 else (2 ** 32) * sector // MIB
            if idx == 0 and configdrive_size and total_mib > limit_mib:
                _fail('MBR partitions must end before 2 TiB, the config drive included: the config drive at the end of '
                      '%s would end at %d MiB (disk size %d MiB, limit %d MiB). Use table_type gpt.'
                      % (d['path'], total_mib, total_mib, limit_mib))
            if usable_end > limit_mib:
                warnings.append('%s: MBR can only address the first 2 TiB (%d MiB) of the %d MiB disk; the rest is unused. '
                                'Use GPT to use the whole disk.' % (d['path'], limit_mib, total_mib))
                usable_end = limit_mib
        disk_mibs.append(usable_end)

    # compute per-slot sizes (same on every disk), fill gets what is left on the smallest disk
    def layout_positions(sizes_by_slot):
        """(entry, start MiB, number, logical) for one disk (boot parts + ordered slots), and the end MiB.

        MBR with more partitions than primaries: the extended partition takes the next primary
        number and the logical partitions are numbered from 5, each after a 1 MiB EBR gap.
        """
        pos = 1
        out = []
        plist = boot_parts + ordered
        for n, p in enumerate(plist, start=1):
            number, logical = n, False
            if mbr_extended and n > mbr_primaries:
                if n == mbr_primaries + 1:
                    out.append(('extended', pos, mbr_primaries + 1, False))
                pos += 1  # EBR before each logical partition
                number, logical = 5 + (n - mbr_primaries - 1), True
            size = p['size'] if 'role' in p else sizes_by_slot[id(p)]
            out.append((p, pos, number, logical))
            pos += size
        return out, pos

    sizes = {}
    fill_slot = None
    for s in ordered:
        if s['fill']:
            fill_slot = s
            sizes[id(s)] = 0
        else:
            sizes[id(s)] = s['size']
    needed_end = layout_positions(sizes)[1]
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
                     ', table %s' % table_type))
        sizes[id(fill_slot)] = free
    elif needed_end > smallest:
        _fail('The layout does not fit: it needs %d MiB on each disk but %s has only %d MiB usable (disk %d MiB%s). '
              'Make the partitions smaller or use bigger disks.'
              % (needed_end, smallest_disk, smallest, disks[disk_mibs.index(smallest)]['size'] // MIB,
                 ', %d MiB kept for the config drive' % configdrive_size if configdrive_size and smallest_disk == disks[0]['path'] else ''))
    positions, end_mib = layout_positions(sizes)

    # --- partitions per disk ------------------------------------------------------------------
    plan_disks = []
    slot_devices = dict((id(s), []) for s in ordered)
    esp_devices = []
    bios_devices = []
    boot_item = ([i for i in items if i['mount_point'] == '/boot'] or [i for i in items if i['mount_point'] == '/'])[0]
    for d in disks:
        parts = []
        didx = disks.index(d)
        for p, start, number, logical in positions:
            if p == 'extended':
                ext_end = disk_mibs[didx]
                parts.append({'number': number, 'role': 'extended', 'start': start * spm, 'size': (ext_end - start) * spm,
                              'start_mib': start, 'size_mib': ext_end - start, 'type': MBR_TYPES['extended'], 'name': None,
                              'bootable': False, 'logical': False, 'device': partition_path(d['path'], number)})
                continue
            if 'role' in p:
                role, size, name = p['role'], p['size'], p['name']
            else:
                role, size, name = p['kind'], sizes[id(p)], p['name']
            ptype_key = {'esp': 'esp', 'bios_boot': 'bios_boot', 'fs': 'fs', 'md': 'md', 'swap': 'swap', 'pv': 'pv',
                         'zfs': 'zfs'}[role]
            if table_type == 'gpt':
                ptype = GPT_TYPES[ptype_key]
            else:
                ptype = MBR_TYPES[ptype_key]
            dev = partition_path(d['path'], number)
            part = {'number': number, 'role': role, 'start': start * spm, 'size': size * spm, 'start_mib': start,
                    'size_mib': size, 'type': ptype, 'name': name if table_type == 'gpt' else None, 'bootable': False,
                    'logical': logical, 'device': dev}
            if table_type == 'msdos' and boot_mode == 'legacy' and 'role' not in p and boot_item in p['items'] \
                    and p['kind'] in ('fs', 'md', 'pv'):
                part['bootable'] = True
            if table_type == 'msdos' and boot_mode == 'uefi' and role == 'esp':
                part['bootable'] = True
            if role == 'esp':
                esp_devices.append(dev)
            elif role == 'bios_boot':
                bios_devices.append(dev)
            else:
                slot_devices[id(p)].append(dev)
            parts.append(part)
        if table_type == 'msdos':
            limit = TIB2_SECTORS_512 if sector == 512 else 2 ** 32
            for part in parts:
                if part['start'] + part['size'] > limit:
                    _fail('MBR partitions must end before 2 TiB: partition %d (%s) of %s would end at sector %d (limit %d). '
                          'Use table_type gpt.' % (part['number'], part['name'] or part['role'], d['path'],
                                                   part['start'] + part['size'], limit))
        plan_disks.append({'path': d['path'], 'size_mib': d['size'] // MIB, 'size_sectors': d['size'] // sector,
                           'usable_end_mib': disk_mibs[disks.index(d)], 'partitions': parts})

    # --- arrays, VGs, LVs, pools, filesystems ---------------------------------------------------
    mds = []
    vgs = []
    lvs = []
    zpools = []
    datasets = []
    filesystems = []
    swaps = []
    used_labels = set()
    swap_label_used = set()

    for s in ordered:
        devs = slot_devices[id(s)]
        if s['kind'] == 'swap':
            i = s['items'][0]
            for n, dev in enumerate(devs, start=1):
                label = _label('swap%d' % n if ndisks > 1 else 'swap', 'swap', swap_label_used)
                swaps.append({'device': dev, 'label': label, 'size_mib': i['size']})
        elif s['kind'] == 'fs':
            i = s['items'][0]
            filesystems.append(_fs(i, devs[0], used_labels, sizes[id(s)]))
        elif s['kind'] == 'md':
            i = s['items'][0]
            name = 'md-%s' % s['name']
            dev = '/dev/md/%s' % name
            mds.append({'name': name, 'device': dev, 'level': s['raid_level'], 'members': list(devs), 'metadata': '1.2',
                        'requested_level': i['requested_raid_level'], 'member_size_mib': sizes[id(s)],
                        'capacity_mib': array_capacity_mib(s['raid_level'], ndisks, sizes[id(s)])})
            filesystems.append(_fs(i, dev, used_labels, array_capacity_mib(s['raid_level'], ndisks, sizes[id(s)])))
        elif s['kind'] == 'pv':
            level = s['raid_level']
            if level is None:
                pvs = list(devs[:1])
                stripes = 1
            elif level == 0:
                pvs = list(devs)
                stripes = ndisks
            else:
                name = 'md-%s' % s['vg']
                dev = '/dev/md/%s' % name
                mds.append({'name': name, 'device': dev, 'level': level, 'members': list(devs), 'metadata': '1.2',
                            'requested_level': None, 'member_size_mib': sizes[id(s)],
                            'capacity_mib': array_capacity_mib(level, ndisks, sizes[id(s)])})
                pvs = [dev]
                stripes = 1
            vgs.append({'name': s['vg'], 'pvs': pvs, 'raid_level': level, 'fills_free': bool(s.get('vg_fills_free'))})
            for i in sorted(s['items'], key=lambda x: x['fill']):
                lvdev = '/dev/%s/%s' % (s['vg'], i['lv_name'])
                # lvcreate rounds a size up to whole extents on every stripe
                alloc = _align_up(i['size'], EXTENT_MIB * stripes) if not i['fill'] else None
                lvs.append({'vg': s['vg'], 'name': i['lv_name'], 'size_mib': i['size'], 'alloc_mib': alloc, 'fill': i['fill'],
                            'stripes': stripes, 'device': lvdev, 'mount_point': i['mount_point']})
                filesystems.append(_fs(i, lvdev, used_labels, i['size']))
        elif s['kind'] == 'zfs':
            level = s['raid_level']
            zpools.append({'name': s['pool'], 'level': level, 'vdevs': _zfs_vdevs(level, devs), 'members': list(devs)})
            for i in s['items']:
                ds = '%s/%s' % (s['pool'], slug(i['mount_point']))
                datasets.append({'name': ds, 'pool': s['pool'], 'quota_mib': i['size'], 'mount_point': i['mount_point']})
                filesystems.append({'device': ds, 'fs_type': 'zfs', 'label': None, 'mount_point': i['mount_point'],
                                    'size_mib': i['size']})

    if boot_mode == 'uefi':
        for n, dev in enumerate(esp_devices):
            filesystems.append({'device': dev, 'fs_type': 'vfat', 'label': ESP_LABEL,
                                'mount_point': ESP_MOUNT if n == 0 else None, 'size_mib': ESP_SIZE_MIB, 'role': 'esp'})

    mounts = sorted(({'mount_point': f['mount_point'], 'device': f['device'], 'fs_type': f['fs_type']}
                     for f in filesystems if f.get('mount_point')), key=lambda m: mount_depth_key(m['mount_point']))
    boot_fs = [f for f in filesystems if f.get('mount_point') == boot_item['mount_point']][0]

    return {
        'boot_mode': boot_mode,
        'table_type': table_type,
        'sector_size': sector,
        'configdrive_size': configdrive_size,
        'disks': plan_disks,
        'md_arrays': mds,
        'volume_groups': vgs,
        'logical_volumes': lvs,
        'zpools': zpools,
        'datasets': datasets,
        'filesystems': filesystems,
        'swaps': swaps,
        'mounts': mounts,
        'esp_devices': esp_devices,
        'bios_boot_devices': bios_devices,
        'boot_device': boot_fs['device'],
        'root_device': [f for f in filesystems if f.get('mount_point') == '/'][0]['device'],
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
        lines.append('zpool %s %s' % (zp['name'], ' '.join(' '.join(v) for v in zp['vdevs'])))
    for f in plan['filesystems']:
        lines.append('%s %s label %s -> %s' % (f['device'], f['fs_type'], f['label'], f['mount_point'] or '(not mounted)'))
    for s in plan['swaps']:
        lines.append('%s swap label %s' % (s['device'], s['label']))
    return lines


def public_plan(plan):
    return copy.deepcopy(plan)

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Pre-flight: the disks of the server, its disk groups, the target disks, and the safety checks.

Do not use this from other collections or standalone plugins/modules!

Disk groups follow what OVHcloud's ``diskGroupId`` means: disks of the same type (NVMe, SSD,
HDD) and the same size form one group. Groups are numbered from 1 in this order:

1. the fastest type first (NVMe, then SSD, then HDD);
2. within a type, the smaller disks first (servers usually carry small, fast system disks and
   big data disks; the system goes on group 1, the default);
3. then the group with more disks first, then by the name of its first disk.

``diskGroupId`` 0 (or absent) means group 1. Within a group, disks are ordered by their kernel
name in natural order (``sda`` < ``sdb``, ``nvme0n1`` < ``nvme1n1`` < ``nvme10n1``), and
``partitioning.disks: N`` takes the first N.

The functions at the top are pure (they take lsblk data and return data); :func:`run` does the
I/O with the module's runner.
"""

from __future__ import annotations

import os
import re

from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError, ValidationError
from ansible_collections.baremetal.byol.plugins.module_utils import _blockdev
from ansible_collections.baremetal.byol.plugins.module_utils._runner import TOOL_PACKAGES

TYPE_RANK = {'NVMe': 0, 'SSD': 1, 'HDD': 2}
PREFLIGHT_COLUMNS = _blockdev.LSBLK_COLUMNS + ',RM,WWN'
# kernel names that are never installation targets
IGNORED_NAME_RE = re.compile(r'^(zram|ram|fd|sr|nbd|dm-|md|drbd)')
BY_ID_PREFERENCE = ('nvme-', 'ata-', 'scsi-', 'virtio-', 'usb-', 'mmc-')

# Commands each step needs (their Debian packages are in _runner.TOOL_PACKAGES).
TOOLS_COMMON = ('lsblk', 'blockdev', 'blkid', 'findmnt', 'wipefs', 'partx', 'udevadm', 'sgdisk', 'sfdisk')
TOOLS_IMAGE = ('qemu-img',)
TOOLS_CONFIGDRIVE = ('mkfs.vfat', 'mcopy', 'mdir')
TOOLS_UEFI = ('efibootmgr',)
TOOLS_BYOL = ('mount', 'umount', 'losetup', 'rsync', 'chroot', 'unshare', 'mkswap')
# mkfs command per fs_type (the commands byol_partition runs, see _partition.MKFS; zfs: its pool tool)
FS_TOOLS = {'ext4': 'mkfs.ext4', 'ext3': 'mkfs.ext3', 'xfs': 'mkfs.xfs', 'btrfs': 'mkfs.btrfs', 'vfat': 'mkfs.vfat',
            'zfs': 'zpool'}


def natural_key(name):
    """Sort key: digits compare as numbers (``nvme2n1`` < ``nvme10n1``)."""
    return [int(part) if part.isdigit() else part for part in re.split(r'(\d+)', name or '')]


def _truthy(value):
    if isinstance(value, str):
        return value.strip() in ('1', 'true', 'True')
    return bool(value)


def disk_type(dev):
    """``NVMe``, ``SSD`` or ``HDD`` for one lsblk entry."""
    name = dev.get('kname') or dev.get('name') or ''
    if (dev.get('tran') or '').lower() == 'nvme' or name.startswith('nvme'):
        return 'NVMe'
    return 'HDD' if _truthy(dev.get('rota')) else 'SSD'


def pick_by_id(links):
    """The most descriptive ``/dev/disk/by-id`` path among ``links``: model and serial first, then WWN/EUI."""
    if not links:
        return None

    def rank(link):
        base = os.path.basename(link)
        if base.startswith(('nvme-eui.', 'nvme-nvme.', 'scsi-3', 'scsi-0')):
            return (7, base)
        if base.startswith('wwn-'):
            return (6, base)
        for i, prefix in enumerate(BY_ID_PREFERENCE):
            if base.startswith(prefix):
                return (i, base)
        return (8, base)
    return sorted(links, key=rank)[0]


def list_disks(devices, by_id=None, include_loop=False):
    """Whole disks from the flat lsblk list, with the fields pre-flight reports.

    ``by_id`` maps a kernel name to the list of its ``/dev/disk/by-id`` paths. Loop devices are
    only listed with ``include_loop`` (tests); zram, ram disks, CD-ROMs, nbd, md and dm devices,
    read-only and empty devices never are.
    """
    by_id = by_id or {}
    disks = []
    for dev in devices:
        kind = dev.get('type')
        if dev.get('pkname') or kind not in ('disk', 'loop'):
            continue
        if kind == 'loop' and not include_loop:
            continue
        name = dev.get('kname') or dev.get('name')
        if IGNORED_NAME_RE.match(name or '') or _truthy(dev.get('ro')) or not dev.get('size'):
            continue
        links = by_id.get(name, [])
        disks.append({
            'name': name,
            'path': dev.get('path') or '/dev/' + name,
            'by_id': pick_by_id(links),
            'by_id_links': sorted(links),
            'model': (dev.get('model') or '').strip() or None,
            'serial': (dev.get('serial') or '').strip() or None,
            'wwn': dev.get('wwn'),
            'size': int(dev.get('size') or 0),
            'type': disk_type(dev),
            'transport': dev.get('tran'),
            'rotational': _truthy(dev.get('rota')),
            'removable': _truthy(dev.get('rm')),
        })
    return sorted(disks, key=lambda d: natural_key(d['name']))


def group_disks(disks):
    """Disk groups: ``[{'id': 1, 'type', 'size', 'disks': [names...]}, ...]`` (see module docstring)."""
    buckets = {}
    for disk in disks:
        buckets.setdefault((disk['type'], disk['size']), []).append(disk)

    def order(item):
        (kind, size), members = item
        return (TYPE_RANK.get(kind, 9), size, -len(members), natural_key(members[0]['name']))

    ordered = sorted(buckets.items(), key=order)
    groups = []
    for number, ((kind, size), members) in enumerate(ordered, start=1):
        members = sorted(members, key=lambda d: natural_key(d['name']))
        groups.append({'id': number, 'type': kind, 'size': size, 'count': len(members),
                       'disks': [d['path'] for d in members]})
    return groups


def describe_groups(groups):
    return ', '.join('group %d: %d x %s %s (%s)' % (g['id'], g['count'], g['type'], human_size(g['size']),
                                                    ' '.join(os.path.basename(p) for p in g['disks']))
                     for g in groups) or 'no disks'


def human_size(size):
    value = float(size)
    for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'):
        if value < 1024 or unit == 'PiB':
            return ('%d %s' % (value, unit)) if unit == 'B' else ('%.1f %s' % (value, unit))
        value /= 1024.0
    return str(size)


def choose_targets(groups, disk_group_id=0, count=None, installer='byoi'):
    """Target disk paths for ``diskGroupId`` and ``partitioning.disks``.

    BYOI writes one disk (the first of the group); BYOL uses every disk of the group unless
    ``count`` says how many (the first ``count``).
    """
    if not groups:
        raise ValidationError('No disk found to install on (lsblk lists no whole disk that is writable and not empty)')
    gid = disk_group_id or 1
    if gid > len(groups):
        raise ValidationError('diskGroupId %d does not exist on this server: it has %d disk group(s): %s'
                              % (gid, len(groups), describe_groups(groups)))
    group = groups[gid - 1]
    if count is None:
        count = 1 if installer == 'byoi' else group['count']
    if count > group['count']:
        raise ValidationError('partitioning.disks is %d but disk group %d has only %d disk(s): %s'
                              % (count, gid, group['count'], describe_groups([group])))
    return group['disks'][:count], group


def required_tools(installer, boot_mode, layout=None, image_type=None):
    """Commands the installation will run, in a stable order, without duplicates."""
    tools = list(TOOLS_COMMON) + list(TOOLS_CONFIGDRIVE)
    if installer == 'byoi' or image_type == 'qcow2' or installer == 'byol':
        tools += list(TOOLS_IMAGE)
    if boot_mode == 'uefi':
        tools += list(TOOLS_UEFI)
    if installer == 'byol':
        tools += list(TOOLS_BYOL)
        levels = set()
        for item in layout or []:
            fs = item.get('fs_type')
            if fs in FS_TOOLS:
                tools.append(FS_TOOLS[fs])
            if item.get('lv_name'):
                tools += ['pvcreate', 'vgcreate', 'lvcreate']
            if fs != 'swap' and not item.get('zpool_name'):
                levels.add(item.get('raid_level', 1))
        if levels - {None}:
            tools.append('mdadm')
    out = []
    for tool in tools:
        if tool not in out:
            out.append(tool)
    return out


def package_of(tool):
    return TOOL_PACKAGES.get(tool)


def missing_tools_message(missing):
    packages = []
    for tool in missing:
        pkg = package_of(tool)
        if pkg and pkg not in packages:
            packages.append(pkg)
    return ('Required command(s) not found on the rescue system: %s. Install the Debian package(s) %s on the rescue '
            'system (apt-get install %s).' % (', '.join('%s (package %s)' % (t, package_of(t) or 'unknown') for t in missing),
                                              ', '.join(packages) or '?', ' '.join(packages)))


def rescue_problems(devices, root_src, targets):
    """Reasons the running system is not a rescue system for these targets (empty list if it is)."""
    if not root_src:
        return []
    root_on = _blockdev.root_disks(devices, root_src)
    bad = [t for t in targets if os.path.basename(os.path.realpath(t)) in root_on]
    if bad:
        return ['This is not a rescue system for %s: the running system\'s root filesystem (%s) is on %s. '
                'Boot the server into its rescue system first, or choose other disks.'
                % (', '.join(bad), root_src, ', '.join(sorted(root_on)))]
    return []


def parse_meminfo(text):
    """``/proc/meminfo`` -> dict of bytes for MemTotal, MemAvailable (MemFree if no MemAvailable)."""
    values = {}
    for line in text.splitlines():
        match = re.match(r'^(\w+):\s+(\d+)\s*kB', line)
        if match:
            values[match.group(1)] = int(match.group(2)) * 1024
    return {'total': values.get('MemTotal', 0),
            'available': values.get('MemAvailable', values.get('MemFree', 0))}


# ---------------------------------------------------------------------------------------- I/O

def read_by_id(directory='/dev/disk/by-id'):
    """Kernel name -> list of ``/dev/disk/by-id`` paths (partitions left out)."""
    out = {}
    try:
        names = os.listdir(directory)
    except OSError:
        return out
    for link in names:
        if re.search(r'-part\d+$', link):
            continue
        path = os.path.join(directory, link)
        out.setdefault(os.path.basename(os.path.realpath(path)), []).append(path)
    return out


def detect_boot_mode(efi_dir='/sys/firmware/efi'):
    return 'uefi' if os.path.isdir(efi_dir) else 'legacy'


def free_space(path):
    """Bytes available to root at ``path`` (the nearest existing parent), or None."""
    while path and not os.path.exists(path):
        parent = os.path.dirname(path.rstrip('/'))
        if parent == path:
            break
        path = parent
    try:
        st = os.statvfs(path or '/')
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def run(runner, params):
    """Gather, check, and return the pre-flight result (raises ByolError on the first blocking problem)."""
    installer = params.get('installer') or 'byoi'
    lsblk_out = runner.run(['lsblk', '--json', '--bytes', '--output', PREFLIGHT_COLUMNS]).stdout
    devices = _blockdev.parse_lsblk(lsblk_out)
    by_id = read_by_id()
    explicit = [d for d in (params.get('target_disks') or []) if d]
    include_loop = bool(params.get('include_loop')) or any(
        os.path.basename(os.path.realpath(d)).startswith('loop') for d in explicit)
    all_disks = list_disks(devices, by_id=by_id, include_loop=include_loop)
    # The disk(s) holding the running system's root are never install targets: they are left out of
    # the disk groups (so diskGroupId counts the server's disks as the provider does) and reported.
    root_src = _blockdev.root_source(runner)
    root_on = _blockdev.root_disks(devices, root_src) if root_src else set()
    disks = [d for d in all_disks if d['name'] not in root_on]
    system_disks = [d['path'] for d in all_disks if d['name'] in root_on]
    groups = group_disks(disks)
    by_path = dict((d['path'], d) for d in all_disks)
    for disk in disks:
        disk['group'] = next(g['id'] for g in groups if disk['path'] in g['disks'])

    boot_mode = params.get('boot_mode') or 'auto'
    detected = detect_boot_mode()
    if boot_mode == 'auto':
        boot_mode = detected

    if explicit:
        targets = []
        for disk in explicit:
            real = os.path.realpath(disk)
            if real not in by_path:
                raise ValidationError('target disk %s (%s) is not a whole disk of this server; whole disks: %s'
                                      % (disk, real, ', '.join(sorted(by_path)) or 'none'))
            targets.append(real)
        group = None
    else:
        count = params.get('disks')
        if not groups and system_disks:
            # only the running system's own disk(s): the clear message, not "no disk found"
            problems = rescue_problems(devices, root_src, system_disks)
            raise ByolError(problems[0], disks=all_disks, groups=groups, targets=[])
        targets, group = choose_targets(groups, params.get('disk_group_id') or 0, count, installer)
    if len(set(targets)) != len(targets):
        raise ValidationError('target disks are listed twice: %s' % ', '.join(targets))

    problems = rescue_problems(devices, root_src, targets)
    if problems:
        raise ByolError(problems[0], disks=disks, groups=groups, targets=targets)

    in_use = {}
    if params.get('check_in_use', True):
        try:
            _blockdev.check_disks_free(runner, targets, allowed_mount_prefix=params.get('mount_root'))
        except ByolError as exc:
            raise ByolError(exc.msg, in_use=exc.extra.get('in_use'), disks=disks, groups=groups, targets=targets)

    tools = required_tools(installer, boot_mode, params.get('layout'), params.get('image_type'))
    for extra in params.get('tools') or []:
        if extra not in tools:
            tools.append(extra)
    missing = []
    found = {}
    for tool in tools:
        path = runner.which(tool, required=False)
        if path:
            found[tool] = path
        else:
            missing.append(tool)
    if missing:
        raise ByolError(missing_tools_message(missing), missing_tools=missing)

    try:
        with open('/proc/meminfo') as f:
            memory = parse_meminfo(f.read())
    except IOError:
        memory = {'total': 0, 'available': 0}
    scratch_dir = params.get('scratch_dir') or None
    scratch = {
        'shm_available': free_space('/dev/shm'),
        'tmp_available': free_space('/tmp'),
        'dir': scratch_dir,
        'dir_available': free_space(scratch_dir) if scratch_dir else None,
    }
    target_info = [by_path[t] for t in targets]
    return {
        'boot_mode': boot_mode,
        'boot_mode_detected': detected,
        'disks': disks,
        'groups': groups,
        'group': group,
        'targets': targets,
        'target_disks': target_info,
        'target_size': min(d['size'] for d in target_info) if target_info else 0,
        'memory': memory,
        'scratch': scratch,
        'tools': found,
        'rescue': {'root_source': root_src, 'system_disks': system_disks},
    }

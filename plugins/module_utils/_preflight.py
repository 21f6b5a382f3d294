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
from ansible_collections.baremetal.byol.plugins.module_utils import _disk_select
from ansible_collections.baremetal.byol.plugins.module_utils import _fstable
from ansible_collections.baremetal.byol.plugins.module_utils import _rules
from ansible_collections.baremetal.byol.plugins.module_utils._runner import TOOL_PACKAGES

TYPE_RANK = _disk_select.TYPE_RANK
PREFLIGHT_LSBLK = ['lsblk', '--json', '--bytes', '--output-all']

# Commands each step needs (their Debian packages are in _runner.TOOL_PACKAGES).
TOOLS_COMMON = ('lsblk', 'blockdev', 'blkid', 'findmnt', 'wipefs', 'partx', 'udevadm', 'sgdisk', 'sfdisk')
TOOLS_IMAGE = ('qemu-img',)
TOOLS_CONFIGDRIVE = ('mkfs.vfat', 'mcopy', 'mdir')
TOOLS_UEFI = ('efibootmgr',)
TOOLS_BYOL = ('mount', 'umount', 'losetup', 'rsync', 'chroot', 'unshare', 'mkswap')
TOOLS_ZFS = ('zpool', 'zfs')
# where ZFS comes from on a Debian rescue system: not in main
ZFS_SOURCE_HINT = ('ZFS is in Debian\'s contrib component (enable contrib in the APT sources): zfsutils-linux for the '
                   'commands, zfs-dkms (with linux-headers-%s) for the kernel module, built by DKMS for the running '
                   'kernel.')

# disk classification and grouping live in _disk_select
natural_key = _disk_select.natural_key
disk_type = _disk_select.disk_type
pick_by_id = _disk_select.pick_by_id


def list_disks(devices, by_id=None, include_loop=False):
    """The candidate disks (see :func:`_disk_select.classify`), in natural name order."""
    return [d for d in _disk_select.classify(devices, by_id=by_id, include_loop=include_loop) if d['candidate']]


def group_disks(disks):
    """Disk groups: ``[{'id': 1, 'type', 'size', 'disks': [names...]}, ...]`` (see module docstring)."""
    return _disk_select.group_candidates(disks)


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
            if _fstable.tool(fs):  # the command byol_partition makes it with
                tools.append(_fstable.tool(fs))
            if item.get('lv_name'):
                tools += ['pvcreate', 'vgcreate', 'lvcreate']
            if item.get('zpool_name'):
                tools += list(TOOLS_ZFS)
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
    msg = ('Required command(s) not found on the rescue system: %s. Install the Debian package(s) %s on the rescue '
           'system (apt-get install %s).' % (', '.join('%s (package %s)' % (t, package_of(t) or 'unknown') for t in missing),
                                             ', '.join(packages) or '?', ' '.join(packages)))
    if 'zfsutils-linux' in packages:
        msg += ' ' + ZFS_SOURCE_HINT % '$(uname -r)'
    return msg


def zfs_module_problem(runner, release=None):
    """None when the running kernel has a zfs module (loaded, or ``modinfo`` finds it), else the message."""
    if os.path.isdir('/sys/module/zfs'):
        return None
    if runner.which('modinfo', required=False) and runner.run(['modinfo', '-F', 'filename', 'zfs'], check=False).rc == 0:
        return None
    release = release or os.uname()[2]
    return ('The layout uses ZFS but the rescue kernel %s has no zfs module. Install zfs-dkms and linux-headers-%s on '
            'the rescue system (apt-get install zfs-dkms linux-headers-%s); %s Or use md/LVM instead.'
            % (release, release, release, ZFS_SOURCE_HINT % release))


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


# ---------------------------------------------------------------------------------------- I/O

def read_by_id(directory='/dev/disk/by-id'):
    """Kernel name -> list of ``/dev/disk/by-id`` paths (partitions left out; also ``/dev/disk/by-path``)."""
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


def read_boot_code(records):
    """Kernel name -> True when the disk's first sector holds boot code (reads 512 bytes of each disk)."""
    out = {}
    for rec in records:
        if rec['kind'] not in ('disk', 'loop', 'mpath') or not rec['size']:
            continue
        try:
            with open(rec['path'], 'rb') as f:
                out[rec['name']] = _disk_select.has_boot_code(f.read(512))
        except (IOError, OSError):
            continue
    return out


def read_pv_vgs(runner):
    """LVM PV path -> VG name (``pvs``), empty without LVM tools."""
    if not runner.which('pvs', required=False):
        return {}
    res = runner.run(['pvs', '--reportformat', 'json', '--options', 'pv_name,vg_name'], check=False)
    return _disk_select.parse_pvs(res.stdout) if res.rc == 0 else {}


def select_disks(runner, params, installer):
    """Classify every device, then choose the targets: explicit disks, root device hints, or the disk group.

    Returns a dict with ``devices`` (every device with ``candidate`` and ``reasons``), ``disks`` (the
    candidates, with their group), ``groups``, ``group``, ``targets``, ``hints``, ``notes``,
    ``system_disks``, ``root_src`` and the lsblk entries (``lsblk``)."""
    devices = _blockdev.parse_lsblk(runner.run(PREFLIGHT_LSBLK).stdout)
    by_id = read_by_id()
    by_path = read_by_id('/dev/disk/by-path')
    explicit = [d for d in (params.get('target_disks') or []) if d]
    hints = params.get('root_device_hints') or {}
    if explicit and hints:
        raise ValidationError('Give either target_disks or root device hints, not both (target_disks: %s; hints: %s)'
                              % (', '.join(explicit), _disk_select.describe_hints(hints)))
    _disk_select.parse_hints(hints)
    include_loop = bool(params.get('include_loop')) or any(
        os.path.basename(os.path.realpath(d)).startswith('loop') for d in explicit)
    usb_allowed = 'usb' in str(hints.get('tran', '')).lower()
    # The disk(s) holding the running system's root are never install targets: they are left out of
    # the disk groups (so diskGroupId counts the server's disks as the provider does) and reported.
    root_src = _blockdev.root_source(runner)
    root_on = _blockdev.root_disks(devices, root_src) if root_src else set()
    records = _disk_select.classify(devices, by_id=by_id, by_path=by_path, system_disks=root_on,
                                    include_loop=include_loop, usb_allowed=usb_allowed)
    boot_code = read_boot_code(records)
    pv_vgs = read_pv_vgs(runner)
    for rec in records:
        rec['signatures'] = _disk_select.signatures(devices, rec['name'], pv_vgs=pv_vgs, boot_code=boot_code)
    disks = [r for r in records if r['candidate']]
    system_disks = [r['path'] for r in records if r['name'] in root_on]
    groups = group_disks(disks)
    for disk in disks:
        disk['group'] = next(g['id'] for g in groups if disk['path'] in g['disks'])
    out = {'lsblk': devices, 'devices': records, 'disks': disks, 'groups': groups, 'group': None, 'hints': hints,
           'notes': [], 'system_disks': system_disks, 'root_src': root_src}
    if explicit:
        by_real = dict((r['path'], r) for r in records)
        by_real.update((os.path.realpath(r['path']), r) for r in records)
        targets = []
        for disk in explicit:
            real = os.path.realpath(disk)
            rec = by_real.get(real) or by_real.get(disk)
            if rec is None or rec['kind'] == 'rom' and not rec['size']:
                raise ValidationError('target disk %s (%s) is not a whole disk of this server; whole disks: %s'
                                      % (disk, real, ', '.join(r['path'] for r in disks) or 'none'))
            # the running system's own disk gets the rescue proof's message below
            never = [why for why in rec['reasons'] if not why.startswith("holds the running")]
            if never:
                raise ValidationError('target disk %s is never an installation target: %s' % (disk, ', '.join(never)))
            targets.append(rec['path'])
        out['targets'] = targets
        return out
    count = params.get('disks')
    if hints:
        if params.get('disk_group_id'):
            out['notes'].append('diskGroupId %d is ignored: the root device hints choose the disks'
                                % params['disk_group_id'])
        out['targets'], matched = _disk_select.choose_by_hints(records, hints, count, installer)
        return out
    if not groups and system_disks:
        # only the running system's own disk(s): the clear message, not "no disk found"
        problems = rescue_problems(devices, root_src, system_disks)
        raise ByolError(problems[0], disks=records, groups=groups, targets=[])
    out['targets'], out['group'] = choose_targets(groups, params.get('disk_group_id') or 0, count, installer)
    return out


def other_disks_report(selection, layout=None, wipe=False):
    """Non-target devices that carry what an installation left, and the names the new one would share with them.

    With ``wipe`` the candidate disks among them are to be wiped (removable media, virtual media and the
    like never are). Returns ``(others, to_wipe, warnings, clashes)``."""
    targets = set(selection['targets'])
    # loop devices, zram and RAM disks are gone when the server reboots: nothing of theirs is seen at boot;
    # a path of a multipath disk carries what its multipath device carries (it is reported once, as that device)
    others = [r for r in selection['devices'] if r['path'] not in targets and r['signatures'] and _disk_select.persistent(r)
              and not r.get('multipath_device')]
    to_wipe = [r for r in others if r['candidate']] if wipe else []
    warnings = []
    for rec in others:
        warnings.append(('Not a target, to be wiped (wipe_other_disks): %s carries %s' if rec in to_wipe
                         else 'Not a target, left alone: %s carries %s')
                        % (rec['path'], '; '.join(sig['text'] for sig in rec['signatures'])))
    planned = _disk_select.planned_names(layout, len(selection['targets']))
    kept = [r for r in others if r not in to_wipe]
    return others, to_wipe, warnings, _disk_select.name_clashes(kept, planned)


def run(runner, params):
    """Gather, check, and return the pre-flight result (raises ByolError on the first blocking problem)."""
    installer = params.get('installer') or 'byoi'
    selection = select_disks(runner, params, installer)
    devices, disks, groups = selection['lsblk'], selection['disks'], selection['groups']
    targets, group, root_src = selection['targets'], selection['group'], selection['root_src']
    system_disks = selection['system_disks']
    by_path = dict((d['path'], d) for d in selection['devices'])

    boot_mode = params.get('boot_mode') or 'auto'
    detected = _blockdev.detect_boot_mode()
    if boot_mode == 'auto':
        boot_mode = detected

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
    if installer == 'byol' and any(item.get('zpool_name') for item in params.get('layout') or []):
        problem = zfs_module_problem(runner)
        if problem:
            raise ByolError(problem, missing_tools=['zfs kernel module'])

    try:
        memory = _blockdev.memory_summary(_blockdev.meminfo())
    except (IOError, OSError):
        memory = {'total': 0, 'available': 0}
    scratch_dir = params.get('scratch_dir') or None
    scratch = {
        'shm_available': _blockdev.free_bytes_near('/dev/shm'),
        'tmp_available': _blockdev.free_bytes_near('/tmp'),
        'dir': scratch_dir,
        'dir_available': _blockdev.free_bytes_near(scratch_dir) if scratch_dir else None,
    }
    target_info = [by_path[t] for t in targets]
    others, to_wipe, warnings, clashes = other_disks_report(selection, params.get('layout'), params.get('wipe_other_disks'))
    if clashes:
        raise ValidationError('Disks that are not targets carry names the new installation creates too: %s. At boot the '
                              'installed system would see both (cloud-init reads any config-2 filesystem, LVM and mdadm '
                              'refuse or rename duplicates). Wipe them (wipe_other_disks), remove them, or make them '
                              'targets.' % '; '.join(clashes), devices=selection['devices'], targets=targets)
    if to_wipe and params.get('check_in_use', True):
        _blockdev.check_disks_free(runner, [r['path'] for r in to_wipe], allowed_mount_prefix=params.get('mount_root'))
    return {
        'devices': selection['devices'],
        'hints': selection['hints'],
        'other_disks': [{'path': r['path'], 'candidate': r['candidate'], 'signatures': [x['text'] for x in r['signatures']]}
                        for r in others],
        'wipe_disks': [r['path'] for r in to_wipe],
        'warnings': selection['notes'] + warnings,
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


def run_module(module, runner, result):
    """byol_preflight (see ``_module.run_step``): reads only, never changes anything."""
    params = dict(module.params)
    if params['disk_group_id'] is not None and params['disk_group_id'] < 0:
        raise ValidationError('disk_group_id must be 0 or more, got %d' % params['disk_group_id'])
    if params['disks'] is not None and params['disks'] < 1:
        raise ValidationError('disks must be 1 or more, got %d' % params['disks'])
    _rules.enforce(_rules.check_tree(params['mount_root'], 'mount_root')[1])
    out = run(runner, params)
    for warning in out.pop('warnings', []):
        module.warn(warning)
    result.update(out)
    return result

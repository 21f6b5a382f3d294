# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Apply a storage plan (from :mod:`_layout`) to real disks, and read the disks' current state.

Do not use this from other collections or standalone plugins/modules!

Order of work: read the disks, compare with the plan; if they match, only assemble /
activate / mount what is not (no byte written); otherwise tear down what the disks held
(unmount our own mounts, deactivate VGs, stop md arrays, wipe signatures), write the tables
with ``sfdisk``, create md arrays, PVs/VGs/LVs, ZFS pools, filesystems and swap, then mount
everything in depth order under ``mount_root``.
"""

from __future__ import annotations

import json
import os
import re

from ansible_collections.baremetal.byol.plugins.module_utils import _blockdev
from ansible_collections.baremetal.byol.plugins.module_utils import _fstable
from ansible_collections.baremetal.byol.plugins.module_utils import _layout
from ansible_collections.baremetal.byol.plugins.module_utils import _lock
from ansible_collections.baremetal.byol.plugins.module_utils import _rules as rules
from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError
from ansible_collections.baremetal.byol.plugins.module_utils._treefs import check_dirs

NODE_TIMEOUT = 60


# ----------------------------------------------------------------------------------------------
# reading the current state
# ----------------------------------------------------------------------------------------------

def parse_lvs(text):
    """``lvs --reportformat json`` -> list of dicts."""
    data = json.loads(text or '{}')
    rows = []
    for rep in data.get('report', []):
        rows.extend(rep.get('lv', []) or rep.get('pv', []) or [])
    return rows


def _norm_type(table_label, value):
    value = (value or '').strip()
    if table_label == 'dos':
        try:
            return '%x' % int(value, 16)
        except ValueError:
            return value.lower()
    return value.upper()


CONFIGDRIVE_LABEL = 'config-2'


def tail_candidates(plan, table):
    """Partitions of the first disk's ``table`` that the plan does not have and that lie inside the space the
    plan leaves free at the end of that disk for the config drive (``configdrive_size``); [] without one."""
    if not plan.get('configdrive_size') or not table or not plan['disks']:
        return []
    d = plan['disks'][0]
    spm = 1024 * 1024 // plan['sector_size']
    planned = set(p['device'] for p in d['partitions'])
    tail_start = d['usable_end_mib'] * spm
    disk_end = d.get('size_sectors') or d['size_mib'] * spm
    out = []
    for p in table.get('partitions') or []:
        try:
            start, size = int(p.get('start', -1)), int(p.get('size', 0))
        except (TypeError, ValueError):
            continue
        if p.get('node') not in planned and start >= tail_start and size > 0 and start + size <= disk_end:
            out.append(p)
    return out


def kept_partitions(plan, state):
    """The config drive that ``byol_configdrive`` made in the reserved tail of the first disk: a list with its
    ``sfdisk --json`` entry, or [] when there is none.

    It counts as matching the plan only when it is the one partition beyond the plan on that disk, lies wholly
    inside the reserved tail and holds a vfat filesystem labelled config-2 (``state['extra_filesystems']``,
    blkid of the partitions found by :func:`tail_candidates`). Anything else is a difference.
    """
    if not plan['disks']:
        return []
    d = plan['disks'][0]
    table = state['tables'].get(d['path'])
    if not table:
        return []
    planned = set(p['device'] for p in d['partitions'])
    extras = [p for p in table.get('partitions') or [] if p.get('node') not in planned]
    if len(extras) != 1:
        return []
    tail = tail_candidates(plan, table)
    if [p.get('node') for p in tail] != [extras[0].get('node')]:
        return []
    info = (state.get('extra_filesystems') or {}).get(extras[0].get('node')) or {}
    if info.get('TYPE') != 'vfat' or (info.get('LABEL') or '').lower() != CONFIGDRIVE_LABEL:
        return []
    return extras


def _part_number(node):
    m = re.search(r'(\d+)$', node or '')
    return int(m.group(1)) if m else 0


def compare(plan, state):
    """Differences between the plan and the disks' state (list of strings; empty = match).

    The config drive in the reserved tail of the first disk (:func:`kept_partitions`) is not a difference.
    """
    diffs = []
    want_label = 'gpt' if plan['table_type'] == 'gpt' else 'dos'
    kept = set(p.get('node') for p in kept_partitions(plan, state))
    for d in plan['disks']:
        table = state['tables'].get(d['path'])
        if not table:
            diffs.append('%s has no partition table' % d['path'])
            continue
        if table.get('label') != want_label:
            diffs.append('%s has a %s table, the plan wants %s' % (d['path'], table.get('label'), want_label))
            continue
        have = dict((p.get('node'), p) for p in table.get('partitions', []) if p.get('node') not in kept)
        if len(have) != len(d['partitions']):
            diffs.append('%s has %d partitions, the plan has %d' % (d['path'], len(have), len(d['partitions'])))
        for p in d['partitions']:
            h = have.get(p['device'])
            if h is None:
                diffs.append('%s is missing' % p['device'])
                continue
            if int(h.get('start', -1)) != p['start'] or int(h.get('size', -1)) != p['size']:
                diffs.append('%s is at %s+%s sectors, the plan wants %d+%d' % (p['device'], h.get('start'), h.get('size'),
                                                                               p['start'], p['size']))
            if _norm_type(want_label, h.get('type')) != _norm_type(want_label, p['type']):
                diffs.append('%s has type %s, the plan wants %s' % (p['device'], h.get('type'), p['type']))
            if want_label == 'gpt' and (h.get('name') or '') != (p['name'] or ''):
                diffs.append('%s is named %r, the plan wants %r' % (p['device'], h.get('name'), p['name']))
    if diffs:
        return diffs
    for md in plan['md_arrays']:
        uuids = set()
        for member in md['members']:
            ex = state['md_members'].get(member) or {}
            name = ex.get('MD_NAME', '').split(':')[-1]
            if ex.get('MD_LEVEL') != 'raid%d' % md['level'] or name != md['name']:
                diffs.append('%s is not a member of raid%d array %s (found %s %s)' % (
                    member, md['level'], md['name'], ex.get('MD_LEVEL') or 'no md superblock', name))
            uuids.add(ex.get('MD_UUID'))
        if len(uuids) > 1:
            diffs.append('the members of %s belong to different arrays' % md['name'])
    lvs = state.get('lvs')
    for vg in plan['volume_groups']:
        if vg['name'] in state.get('inactive_vgs', ()):
            continue  # check mode: its PV is an md array that is not started, LVM cannot read it yet
        for lv in plan['logical_volumes']:
            if lv['vg'] != vg['name']:
                continue
            found = [r for r in (lvs or []) if r.get('vg_name') == vg['name'] and r.get('lv_name') == lv['name']]
            if not found:
                diffs.append('logical volume %s/%s is missing' % (vg['name'], lv['name']))
            elif not lv['fill'] and int(float(found[0].get('lv_size', 0))) != lv['alloc_mib']:
                diffs.append('logical volume %s/%s has %s MiB, the plan wants %d'
                             % (vg['name'], lv['name'], found[0].get('lv_size'), lv['alloc_mib']))
    inactive_pools = state.get('inactive_zpools') or []
    for zp in plan['zpools']:
        if zp['name'] in inactive_pools:
            continue  # check mode: exported on the planned members; the real run imports it and looks
        if zp['name'] not in state.get('zpools', []):
            diffs.append('ZFS pool %s is missing' % zp['name'])
            continue
        members = (state.get('zpool_members') or {}).get(zp['name'])
        if members is not None and sorted(_blockdev.real_device(m) for m in members) != sorted(zp['members']):
            diffs.append('ZFS pool %s is on %s, the plan wants %s'
                         % (zp['name'], ' '.join(sorted(members)) or 'nothing', ' '.join(sorted(zp['members']))))
    datasets = state.get('datasets', [])
    props = state.get('dataset_props') or {}
    altroots = state.get('zpool_altroots') or {}
    for ds in plan['datasets']:
        if ds['pool'] in inactive_pools:
            continue
        if ds['name'] not in datasets:
            diffs.append('ZFS dataset %s is missing' % ds['name'])
        elif ds['name'] in props and _without_altroot(props[ds['name']].get('mountpoint'), altroots.get(ds['pool'])) \
                != ds['mount_point']:
            diffs.append('ZFS dataset %s has mountpoint %s, the plan wants %s'
                         % (ds['name'], props[ds['name']].get('mountpoint'), ds['mount_point']))
    if diffs:
        return diffs
    for f in plan['filesystems'] + [dict(s, fs_type='swap') for s in plan['swaps']]:
        if f['fs_type'] == 'zfs':
            continue
        have = state['filesystems'].get(f['device']) or {}
        if f['device'] in state.get('inactive', ()):
            continue  # check mode: the array or VG is there but not started; the real run starts it and looks
        if have.get('TYPE') != f['fs_type'] or (have.get('LABEL') or None) != f['label']:
            diffs.append('%s holds %s label %s, the plan wants %s label %s' % (
                f['device'], have.get('TYPE') or 'nothing', have.get('LABEL'), f['fs_type'], f['label']))
    return diffs


def _without_altroot(mountpoint, altroot):
    """A dataset's mountpoint as stored in the pool: ``zfs list`` shows it under the pool's altroot."""
    if not altroot or not mountpoint or not mountpoint.startswith('/'):
        return mountpoint
    root = altroot.rstrip('/')
    if mountpoint == root or mountpoint == altroot:
        return '/'
    if mountpoint.startswith(root + '/'):
        return mountpoint[len(root):]
    return mountpoint


def parse_zpool_import(text):
    """Pool names in ``zpool import`` (the list of importable pools) output."""
    names = []
    for line in (text or '').splitlines():
        fields = line.split(None, 1)
        if len(fields) == 2 and fields[0] == 'pool:':
            names.append(fields[1].strip())
    return names


def parse_zfs_props(text):
    """``zfs list -H -o name,mountpoint,canmount`` -> {name: {'mountpoint', 'canmount'}}."""
    out = {}
    for line in (text or '').splitlines():
        fields = line.split('\t')
        if len(fields) == 3:
            out[fields[0]] = {'mountpoint': fields[1], 'canmount': fields[2]}
    return out


def read_zfs_state(runner, plan, state, activate, mount_root):
    """The plan's pools (imported ones: their members) and datasets (mountpoint, canmount) into ``state``.

    A pool of the plan that is not imported is looked for on its planned members only (``zpool import -d`` each
    member: a pool of that name on another disk is never touched). With ``activate`` it is imported, not mounted,
    under ``mount_root`` (``-R``); in check mode it is listed in ``inactive_zpools``."""
    res = runner.run(['zpool', 'list', '-H', '-o', 'name,altroot'], check=False)
    altroots = dict(line.split('\t', 1) for line in (res.stdout or '').splitlines() if res.rc == 0 and '\t' in line)
    imported = sorted(altroots)
    for zp in plan['zpools']:
        if zp['name'] in imported:
            continue
        search = []
        for member in zp['members']:
            search += ['-d', member]
        if activate:
            args = ['zpool', 'import', '-N', '-f'] + (['-R', mount_root] if mount_root else []) + search + [zp['name']]
            if runner.run(args, check=False).rc == 0:
                imported.append(zp['name'])
        else:
            res = runner.run(['zpool', 'import'] + search, check=False)
            if zp['name'] in parse_zpool_import(res.stdout):
                state.setdefault('inactive_zpools', []).append(zp['name'])
    state['zpools'] = imported
    if activate:
        res = runner.run(['zpool', 'list', '-H', '-o', 'name,altroot'], check=False)
        altroots = dict(line.split('\t', 1) for line in (res.stdout or '').splitlines() if res.rc == 0 and '\t' in line)
    # the altroot zfs list puts in front of the mountpoints: the pool's, else the mount root (which is where the
    # datasets are mounted; a mountpoint outside it is left as it is)
    state['zpool_altroots'] = dict((k, v if v not in ('', '-') else mount_root) for k, v in altroots.items()
                                   if k in imported and (v not in ('', '-') or mount_root))
    res = runner.run(['zpool', 'list', '-H', '-v', '-P', '-o', 'name'], check=False)
    state['zpool_members'] = parse_zpool_members(res.stdout if res.rc == 0 else '')
    res = runner.run(['zfs', 'list', '-H', '-o', 'name,mountpoint,canmount'], check=False)
    state['dataset_props'] = parse_zfs_props(res.stdout if res.rc == 0 else '')
    state['datasets'] = sorted(state['dataset_props'])


def read_state(runner, plan, activate=False, mount_root=None):
    """Read what the disks hold today, as far as the plan needs it.

    md and LVM tools are only called when the plan uses them. With ``activate`` (not in
    check mode), arrays whose members match are assembled and VGs activated so their
    filesystems can be probed; that writes nothing to the disks' data. In check mode the
    filesystems of arrays and LVs that are not started are listed in ``inactive`` and not
    compared (their tables, md superblocks and LVs are).
    """
    state = {'tables': {}, 'md_members': {}, 'lvs': None, 'filesystems': {}, 'zpools': [], 'datasets': [], 'inactive': [],
             'extra_filesystems': {}}
    for d in plan['disks']:
        state['tables'][d['path']] = _blockdev.read_table(runner, d['path'])
    if plan['disks']:
        for p in tail_candidates(plan, state['tables'].get(plan['disks'][0]['path'])):
            state['extra_filesystems'][p['node']] = _blockdev.probe(runner, p['node'])
    partitions_match = not compare(dict(plan, md_arrays=[], volume_groups=[], zpools=[], datasets=[], filesystems=[], swaps=[]),
                                   state)
    if not partitions_match:
        return state
    for md in plan['md_arrays']:
        for member in md['members']:
            res = runner.run(['mdadm', '--examine', '--export', member], check=False)
            state['md_members'][member] = _blockdev.parse_export(res.stdout) if res.rc == 0 else {}
    if activate and plan['md_arrays'] and not compare(dict(plan, volume_groups=[], zpools=[], datasets=[], filesystems=[],
                                                           swaps=[]), state):
        for md in plan['md_arrays']:
            if not os.path.exists(md['device']):
                runner.run(['mdadm', '--assemble', md['device']] + md['members'], check=False)
        _blockdev.settle(runner)
    if plan['volume_groups']:
        if activate:
            for vg in plan['volume_groups']:
                runner.run(['vgchange', '--activate', 'y', vg['name']], check=False)
            _blockdev.settle(runner)
        res = runner.run(['lvs', '--reportformat', 'json', '--units', 'm', '--nosuffix', '-o', 'vg_name,lv_name,lv_size'],
                         check=False)
        state['lvs'] = parse_lvs(res.stdout) if res.rc == 0 else []
    if plan['zpools']:
        read_zfs_state(runner, plan, state, activate, mount_root)
    if not activate:
        for vg in plan['volume_groups']:
            if not all(os.path.exists(pv) for pv in vg['pvs']):
                state.setdefault('inactive_vgs', []).append(vg['name'])
    stacked = [md['device'] for md in plan['md_arrays']] + [lv['device'] for lv in plan['logical_volumes']]
    for f in plan['filesystems'] + plan['swaps']:
        if f.get('fs_type') != 'zfs':
            state['filesystems'][f['device']] = _blockdev.probe(runner, f['device'])
            if not activate and f['device'] in stacked and not os.path.exists(f['device']):
                state.setdefault('inactive', []).append(f['device'])
    return state


def _diff_lines(plan, tables, filesystems, sector):
    spm = 1024 * 1024 // sector
    lines = []
    for d in plan['disks']:
        table = tables.get(d['path'])
        if not table:
            lines.append('%s: no partition table' % d['path'])
            continue
        lines.append('%s: %s table' % (d['path'], table.get('label')))
        for p in table.get('partitions', []):
            start, size = int(p.get('start', 0)), int(p.get('size', 0))
            lines.append('  %-16s start %8s MiB size %8s MiB type %s%s' % (
                p.get('node'), start // spm if start % spm == 0 else '%ds' % start,
                size // spm if size % spm == 0 else '%ds' % size,
                _norm_type(table.get('label'), p.get('type')), ' name %s' % p['name'] if p.get('name') else ''))
    for dev in sorted(filesystems):
        info = filesystems[dev]
        if info and info.get('TYPE'):
            lines.append('%s %s label %s' % (dev, info.get('TYPE'), info.get('LABEL')))
    return lines


def state_summary(state, plan):
    """Today's layout as text lines, for --diff (same format as :func:`plan_diff_summary`)."""
    return _diff_lines(plan, state['tables'], state['filesystems'], plan['sector_size'])


def plan_diff_summary(plan, kept=()):
    """The planned layout in the format of :func:`state_summary`, so equal layouts show no diff.

    ``kept``: ``sfdisk --json`` entries of partitions that stay on the first disk (the config drive, when
    the disks match the plan).
    """
    label = 'gpt' if plan['table_type'] == 'gpt' else 'dos'
    tables = {}
    for d in plan['disks']:
        tables[d['path']] = {'label': label, 'partitions': [
            {'node': p['device'], 'start': p['start'], 'size': p['size'], 'type': p['type'], 'name': p['name']}
            for p in d['partitions']]}
    if kept and plan['disks']:
        first = tables[plan['disks'][0]['path']]['partitions']
        first.extend(kept)
        first.sort(key=lambda p: _part_number(p.get('node')))
    fss = {}
    for f in plan['filesystems'] + [dict(s, fs_type='swap') for s in plan['swaps']]:
        if f['fs_type'] != 'zfs':
            fss[f['device']] = {'TYPE': f['fs_type'], 'LABEL': f['label']}
    lines = _diff_lines(plan, tables, fss, plan['sector_size'])
    return lines


# ----------------------------------------------------------------------------------------------
# tear down
# ----------------------------------------------------------------------------------------------

def _stacked(devices, disk):
    """Devices stacked on ``disk`` (a path; partitions, md, dm...), deepest last: :func:`_blockdev.stacked`."""
    return _blockdev.stacked(devices, os.path.basename(_blockdev.real_device(disk)))


def parse_zpool_members(text):
    """``zpool list -H -v -P -o name`` -> {pool: [member device paths]}."""
    pools = {}
    pool = None
    for line in (text or '').splitlines():
        fields = line.split()
        if not fields:
            continue
        if not line.startswith(('\t', ' ')):
            pool = fields[0]
            pools.setdefault(pool, [])
        elif pool is not None and fields[0].startswith('/dev/'):
            pools[pool].append(fields[0])
    return pools


def foreign_holders(devices, disks, pvs_rows=(), zpools=None):
    """Refusals for what teardown would destroy beyond ``disks`` (pure).

    An md array, a volume group or a ZFS pool with a member on a target disk and another member on a disk that is
    not a target: tearing it down (``mdadm --stop``, ``vgremove``, ``zpool destroy``) would take the other disk's
    data with it. ``devices`` from :func:`_blockdev.parse_lsblk` (whole system), ``pvs_rows`` from
    :func:`parse_lvs` of ``pvs --reportformat json -o pv_name,vg_name``, ``zpools`` from :func:`parse_zpool_members`.
    Returns a list of messages, each naming the other disk(s).
    """
    targets = set(os.path.basename(_blockdev.real_device(d)) for d in disks)
    stacked = []
    for disk in disks:
        stacked.extend(_stacked(devices, disk))
    by_path = dict((d.get('path'), d) for d in devices if d.get('path'))

    def disks_of(dev):
        return _blockdev.root_disks(devices, dev)

    def on_targets(path):
        entry = by_path.get(path) or by_path.get(_blockdev.real_device(path or ''))
        return entry is not None and bool(disks_of(entry.get('path')) & targets)

    out = []
    seen = set()
    for d in stacked:
        kind = d.get('type') or ''
        key = d.get('kname') or d.get('name')
        if (kind.startswith('raid') or kind == 'md') and key not in seen:
            seen.add(key)
            others = sorted(disks_of(d.get('path') or key) - targets)
            if others:
                out.append('Refusing to tear down md array %s: it also lives on %s, which %s not a target disk. Add '
                           'the disk(s) to the targets, or stop the array yourself; nothing was changed'
                           % (d.get('path') or key, ', '.join('/dev/%s' % o for o in others),
                              'is' if len(others) == 1 else 'are'))
    vgs = {}
    for row in pvs_rows or ():
        if row.get('vg_name'):
            vgs.setdefault(row['vg_name'], []).append(row.get('pv_name'))
    for vg in sorted(vgs):
        pvs = vgs[vg]
        if not any(on_targets(pv) for pv in pvs):
            continue
        others = set()
        for pv in pvs:
            entry = by_path.get(pv) or by_path.get(_blockdev.real_device(pv or ''))
            others |= (disks_of(entry.get('path')) if entry else set([os.path.basename(pv or '?')])) - targets
        if others:
            out.append('Refusing to tear down volume group %s: it also lives on %s, which %s not a target disk. Add '
                       'the disk(s) to the targets, or remove the volume group yourself; nothing was changed'
                       % (vg, ', '.join('/dev/%s' % o for o in sorted(others)), 'is' if len(others) == 1 else 'are'))
    for pool in sorted(zpools or {}):
        members = zpools[pool]
        if not any(on_targets(m) for m in members):
            continue
        others = set()
        for m in members:
            entry = by_path.get(m) or by_path.get(_blockdev.real_device(m))
            others |= (disks_of(entry.get('path')) if entry else set([os.path.basename(m)])) - targets
        if others:
            out.append('Refusing to tear down ZFS pool %s: it also lives on %s, which %s not a target disk. Add '
                       'the disk(s) to the targets, or destroy the pool yourself; nothing was changed'
                       % (pool, ', '.join('/dev/%s' % o for o in sorted(others)), 'is' if len(others) == 1 else 'are'))
    # pools that are not imported (exported, or from another system): their members by the pool GUID of their label
    labelled = {}
    for d in devices:
        if (d.get('fstype') or '') == 'zfs_member' and d.get('uuid'):
            labelled.setdefault(d['uuid'], []).append(d)
    for guid in sorted(labelled):
        members = labelled[guid]
        name = members[0].get('label') or guid
        if name in (zpools or {}) or not any(disks_of(m.get('path')) & targets for m in members):
            continue
        others = set()
        for m in members:
            others |= disks_of(m.get('path')) - targets
        if others:
            out.append('Refusing to clear the labels of ZFS pool %s (not imported): it also lives on %s, which %s not a '
                       'target disk. Add the disk(s) to the targets, or clear the labels yourself (zpool labelclear); '
                       'nothing was changed'
                       % (name, ', '.join('/dev/%s' % o for o in sorted(others)), 'is' if len(others) == 1 else 'are'))
    return out


def _zfs_possible(stacked):
    """Whether a ZFS pool may use ``stacked``: one carries a ZFS label as udev saw it, or the zfs module is loaded (a
    pool created in this boot: ZFS writes its labels from the kernel and udev may not have probed them again)."""
    return any((d.get('fstype') or '') == 'zfs_member' for d in stacked) or os.path.isdir('/sys/module/zfs')


def check_foreign_holders(runner, devices, disks):
    """Raise ByolError when tearing down ``disks`` would reach another disk (see :func:`foreign_holders`)."""
    stacked = []
    for disk in disks:
        stacked.extend(_stacked(devices, disk))
    pvs_rows = []
    if (any(d.get('type') == 'lvm' or (d.get('fstype') or '') == 'LVM2_member' for d in stacked)
            and runner.which('pvs', required=False)):
        res = runner.run(['pvs', '--reportformat', 'json', '-o', 'pv_name,vg_name'], check=False)
        pvs_rows = parse_lvs(res.stdout) if res.rc == 0 else []
    zpools = {}
    if _zfs_possible(stacked) and runner.which('zpool', required=False):
        res = runner.run(['zpool', 'list', '-H', '-v', '-P', '-o', 'name'], check=False)
        zpools = parse_zpool_members(res.stdout if res.rc == 0 else '')
    problems = foreign_holders(devices, disks, pvs_rows, zpools)
    if problems:
        raise ByolError('; '.join(problems), foreign=problems)


def teardown(runner, disks, mount_root):
    """Unmount our mounts, deactivate VGs and stop md arrays on ``disks``, wipe every signature.

    First refuses (before any change) when an array, volume group or pool on the disks also lives on another
    disk (:func:`check_foreign_holders`)."""
    devices = _blockdev.lsblk(runner)
    check_foreign_holders(runner, devices, disks)
    stacked = []
    for disk in disks:
        stacked.extend(_stacked(devices, disk))
    zfs_labelled = sorted(d.get('path') for d in stacked if (d.get('fstype') or '') == 'zfs_member')
    if zfs_labelled and not runner.which('zpool', required=False):
        raise ByolError('%s carries a ZFS pool label but the rescue system has no zpool (zfsutils-linux): install it '
                        'to clear the label, or wipe the disks yourself; nothing was changed' % ', '.join(zfs_labelled))
    destroy = set()
    zfs_members = [d.get('path') for d in stacked if (d.get('fstype') or '') == 'zfs_member']
    if _zfs_possible(stacked) and runner.which('zpool', required=False):
        res = runner.run(['zpool', 'list', '-H', '-v', '-P', '-o', 'name'], check=False)
        stacked_paths = set(d.get('path') for d in stacked if d.get('path'))
        for pool, members in parse_zpool_members(res.stdout if res.rc == 0 else '').items():
            on_targets = [m for m in members if m in stacked_paths or _blockdev.real_device(m) in stacked_paths]
            if on_targets:
                destroy.add(pool)
                # udev may not know the label yet (ZFS wrote it from the kernel): the pool's own list is the truth
                zfs_members += [m for m in on_targets if m not in zfs_members]
    mounts = []
    for d in stacked:
        for mp in d.get('mountpoints') or []:
            if mp != '[SWAP]':
                mounts.append(mp)
    if destroy:
        # the datasets of those pools are unmounted with the rest, deepest first: a dataset on /srv under an ext4 /
        # keeps / busy, an ext4 /boot on a dataset's / keeps the dataset busy
        for source, target, _majmin, fstype in current_mounts(runner):
            if fstype == 'zfs' and (source or '').split('/')[0] in destroy:
                mounts.append(target)
    for mp in sorted(set(mounts), key=_layout.mount_depth_key, reverse=True):
        runner.run(['umount', mp])
    kinds = set(d.get('type') for d in stacked)
    paths = set(d.get('path') for d in stacked if d.get('path'))
    if 'lvm' in kinds or any((d.get('fstype') or '') == 'LVM2_member' for d in stacked):
        if runner.which('pvs', required=False):
            res = runner.run(['pvs', '--reportformat', 'json', '-o', 'pv_name,vg_name'], check=False)
            vgs = set()
            for row in parse_lvs(res.stdout) if res.rc == 0 else []:
                pv = row.get('pv_name')
                if pv in paths or _blockdev.real_device(pv or '') in paths:
                    if row.get('vg_name'):
                        vgs.add(row['vg_name'])
            for vg in sorted(vgs):
                runner.run(['vgchange', '--activate', 'n', vg])
                runner.run(['vgremove', '--force', '--force', '--yes', vg], check=False)
    raids = [d for d in stacked if (d.get('type') or '').startswith('raid') or (d.get('type') or '') == 'md']
    if raids:
        seen = set()
        for d in reversed(raids):
            path = d.get('path') or '/dev/' + d.get('kname')
            if path in seen:
                continue
            seen.add(path)
            runner.run(['mdadm', '--stop', path])
    members = [d for d in stacked if (d.get('fstype') or '') == 'linux_raid_member']
    for d in members:
        runner.run(['mdadm', '--zero-superblock', d.get('path')], check=False)
    for pool in sorted(destroy):
        runner.run(['zpool', 'destroy', '-f', pool])
    # a pool's four labels (two at each end of the device): wipefs alone leaves what a later import finds
    for path in zfs_members:
        runner.run(['zpool', 'labelclear', '-f', path])
    for d in stacked:
        if (d.get('type') or '') == 'part' and d.get('path'):
            runner.run(['wipefs', '--all', '--force', d['path']], check=False)
    for disk in disks:
        runner.run(['wipefs', '--all', '--force', disk])
    for disk in disks:
        _blockdev.reread_partitions(runner, disk, timeout=NODE_TIMEOUT, strict=True)


# ----------------------------------------------------------------------------------------------
# build
# ----------------------------------------------------------------------------------------------

def sfdisk_script(plan, disk):
    """The ``sfdisk`` input that writes ``disk``'s planned table."""
    gpt = plan['table_type'] == 'gpt'
    lines = ['label: %s' % ('gpt' if gpt else 'dos'), 'unit: sectors']
    if gpt:
        lines.append('first-lba: %d' % (1024 * 1024 // plan['sector_size']))
    lines.append('')
    for p in disk['partitions']:
        fields = ['start=%d' % p['start'], 'size=%d' % p['size'], 'type=%s' % p['type']]
        if gpt and p.get('name'):
            fields.append('name="%s"' % p['name'])
        if p.get('bootable'):
            fields.append('bootable')
        lines.append(', '.join(fields))
    return '\n'.join(lines) + '\n'


def wait_partitions(runner, disk, numbers):
    """Make the kernel see ``disk``'s new partitions and wait for their nodes.

    ``partx --update`` stops at the first gap in the numbering (util-linux 2.38: an MBR with
    partitions 1-3 and logical 5+ has no 4), so missing partitions are added one by one.
    """
    _blockdev.reread_partitions(runner, disk, timeout=NODE_TIMEOUT, strict=True)
    missing = [n for n in numbers if not os.path.exists(_blockdev.partition_path(disk, n))]
    for n in missing:
        if not os.path.exists('/sys/class/block/%s' % os.path.basename(_blockdev.partition_path(disk, n))):
            runner.run(['partx', '--add', '--nr', str(n), disk], check=False)
    if missing:
        _blockdev.settle(runner, NODE_TIMEOUT)
    _blockdev.wait_for_paths([_blockdev.partition_path(disk, n) for n in numbers], timeout=NODE_TIMEOUT)


def zpool_create_args(zp, mount_root=None):
    """``zpool create`` of a planned pool: its ashift, its properties (inherited by its datasets), its vdevs, under
    ``mount_root`` (``-R``: the altroot, not stored in the pool; the installed system mounts at the mountpoints)."""
    args = ['zpool', 'create', '-f', '-o', 'ashift=%d' % zp['ashift']]
    if mount_root:
        args += ['-R', mount_root]
    for key in sorted(zp['properties']):
        args += ['-O', '%s=%s' % (key, zp['properties'][key])]
    args.append(zp['name'])
    for vdev in zp['vdevs']:
        args.extend(vdev)
    return args


def zfs_create_args(ds):
    """``zfs create`` of a planned dataset: not mounted yet (``canmount=noauto``; :func:`mount_all` mounts it in
    depth order, :func:`zfs_finish` sets its canmount)."""
    args = ['zfs', 'create', '-o', 'canmount=noauto', '-o', 'mountpoint=%s' % ds['mount_point']]
    if ds['quota_mib']:
        args += ['-o', 'quota=%dM' % ds['quota_mib']]
    return args + [ds['name']]


def build(runner, plan, mount_root=None):
    """Write tables, create arrays, volumes and filesystems (the disks must be torn down)."""
    for d in plan['disks']:
        # right after teardown udev (or a monitoring agent) may still hold the disk open for a moment
        _blockdev.run_retrying_busy(runner, ['sfdisk', '--quiet', '--wipe', 'always', '--wipe-partitions', 'always',
                                             d['path']], d['path'], data=sfdisk_script(plan, d))
    for d in plan['disks']:
        wait_partitions(runner, d['path'], [p['number'] for p in d['partitions']])
        for p in d['partitions']:
            if p['role'] != 'extended':
                runner.run(['wipefs', '--all', '--force', p['device']])
    for md in plan['md_arrays']:
        args = ['mdadm', '--create', md['device'], '--run', '--name=%s' % md['name'], '--metadata=%s' % md['metadata'],
                '--level=%d' % md['level'], '--raid-devices=%d' % len(md['members'])]
        if md['level'] in (1, 10):
            # fresh mirrors: nothing to copy yet (a RAID 5/6 needs its parity computed: resync runs)
            args.append('--assume-clean')
        runner.run(args + md['members'])
    if plan['md_arrays']:
        _blockdev.settle(runner, NODE_TIMEOUT)
        _blockdev.wait_for_paths([md['device'] for md in plan['md_arrays']], timeout=NODE_TIMEOUT)
        for md in plan['md_arrays']:
            runner.run(['wipefs', '--all', '--force', md['device']])
    for vg in plan['volume_groups']:
        for pv in vg['pvs']:
            runner.run(['pvcreate', '--force', '--force', '--yes', pv])
        runner.run(['vgcreate', '--yes', vg['name']] + vg['pvs'])
        for lv in [x for x in plan['logical_volumes'] if x['vg'] == vg['name']]:
            args = ['lvcreate', '--yes', '--wipesignatures', 'y', '--zero', 'y', '--name', lv['name']]
            if lv['stripes'] > 1:
                args += ['--stripes', str(lv['stripes']), '--stripesize', '64k']
            if lv['fill']:
                args += ['--extents', '100%FREE']
            else:
                args += ['--size', '%dm' % lv['size_mib']]
            runner.run(args + [vg['name']])
    if plan['logical_volumes']:
        _blockdev.settle(runner, NODE_TIMEOUT)
        _blockdev.wait_for_paths([lv['device'] for lv in plan['logical_volumes']], timeout=NODE_TIMEOUT)
    for zp in plan['zpools']:
        runner.run(zpool_create_args(zp, mount_root))
    for ds in plan['datasets']:
        runner.run(zfs_create_args(ds))
    for f in plan['filesystems']:
        if f['fs_type'] == 'zfs':
            continue
        runner.run(_fstable.mkfs_args(f['fs_type'], f['device'], f['label']))
    for s in plan['swaps']:
        runner.run(_fstable.mkfs_args('swap', s['device'], s['label']))
    _blockdev.refresh_udev(runner, [f['device'] for f in plan['filesystems'] if f['fs_type'] != 'zfs']
                           + [s['device'] for s in plan['swaps']], NODE_TIMEOUT)


# ----------------------------------------------------------------------------------------------
# mounting
# ----------------------------------------------------------------------------------------------

def zfs_finish(runner, plan):
    """Give the planned datasets their canmount once they are mounted (created ``noauto`` so that ZFS does not mount
    one before its parent filesystem): ``on`` but for ``/``, which the installed system's initramfs mounts. Returns
    whether it changed anything."""
    if not plan['datasets']:
        return False
    res = runner.run(['zfs', 'list', '-H', '-o', 'name,mountpoint,canmount'], check=False)
    props = parse_zfs_props(res.stdout if res.rc == 0 else '')
    changed = False
    for ds in plan['datasets']:
        if (props.get(ds['name']) or {}).get('canmount') != ds['canmount']:
            runner.run(['zfs', 'set', 'canmount=%s' % ds['canmount'], ds['name']])
            changed = True
    return changed


def current_mounts(runner):
    """List of (source, target, maj:min, fstype) from findmnt."""
    res = runner.run(['findmnt', '--json', '--list', '--output', 'SOURCE,TARGET,MAJ:MIN,FSTYPE'])
    rows = json.loads(res.stdout or '{}').get('filesystems', [])
    return [(r.get('source'), r.get('target'), r.get('maj:min'), r.get('fstype')) for r in rows]


def _majmin(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return '%d:%d' % (os.major(st.st_rdev), os.minor(st.st_rdev))


def _same_device(source, device):
    if not source:
        return False
    source = source.split('[')[0]  # btrfs: /dev/sda2[/subvol]
    if source == device:
        return True
    if source.startswith('/dev/') and os.path.exists(device):
        return os.path.realpath(source) == os.path.realpath(device) or _majmin(source) == _majmin(device)
    return False


def target_path(mount_root, mount_point):
    return os.path.normpath(mount_root.rstrip('/') + '/' + mount_point.lstrip('/')) if mount_point != '/' else \
        os.path.normpath(mount_root)


def mount_all(runner, plan, mount_root, mount_esp=True):
    """Mount the plan's filesystems in depth order; returns (mounted now, mount list)."""
    mounted = []
    out = []
    for m in plan['mounts']:
        target = target_path(mount_root, m['mount_point'])
        entry = dict(m, target=target, mounted=False)
        out.append(entry)
        if m['mount_point'] == _layout.ESP_MOUNT and not mount_esp:
            continue
        existing = [row for row in current_mounts(runner) if row[1] == target]
        if existing:
            if any(_same_device(row[0], m['device']) or (m['fs_type'] == 'zfs' and row[0] == m['device']) for row in existing):
                entry['mounted'] = True
                continue
            raise ByolError('%s is already mounted on %s, not %s as planned: unmount it first'
                            % (existing[-1][0], target, m['device']))
        if m['mount_point'] == '/':
            _lock.ensure_dir(target, 0o755, 'mount_root')
        else:
            _lock.ensure_dir(mount_root, 0o755, 'mount_root')
            # below the root filesystem the tree may hold what an image copied there (a second run after the
            # image): a symbolic link on the way would send the mount out of the tree; walked without links
            check_dirs(target_path(mount_root, '/'), m['mount_point'], create=True)
        if m['fs_type'] == 'zfs':
            # zfsutil: a dataset whose mountpoint is not legacy, mounted where the plan says (altroot + mountpoint)
            runner.run(['mount', '-t', 'zfs', '-o', 'zfsutil', m['device'], target])
        else:
            runner.run(['mount', '-t', m['fs_type'], m['device'], target])
        entry['mounted'] = True
        mounted.append(target)
    return mounted, out


# ----------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------

# A server of several disks must still boot when one of them is gone (RAID 1 is there for that): the entries of
# what lives on one disk only (the ESP mounted on /boot/efi, one per disk; the swap partitions) must not hold the
# boot up for good. Without nofail systemd drops to emergency mode for /boot/efi when its disk is gone. With
# nofail the boot still waits for a missing swap device up to the device timeout (swap units are ordered before
# swap.target), and a device that shows up after the timeout is never used. So no x-systemd.device-timeout of our
# own: the installed system's default applies (systemd: DefaultDeviceTimeoutSec, 90 s). Shorter ones lost the
# swap and the ESP of disks that were there: on a loaded machine udev's coldplug took 30 to 45 s to show them
# (10 s and 30 s both failed). A boot with a disk gone waits that default once, as it would without nofail.
DEGRADED_OPTS = ',nofail'


def fstab_text(plan, probes):
    lines = ['# <file system> <mount point> <type> <options> <dump> <pass>  (written by baremetal.byol.byol_partition)']
    for ds in sorted(plan.get('datasets') or [], key=lambda x: _layout.mount_depth_key(x['mount_point'])):
        lines.append('# %s on %s: ZFS dataset %s, mounted by ZFS (not listed here)'
                     % (ds['mount_point'], ds['pool'], ds['name']))
    single_disk_opts = DEGRADED_OPTS if len(plan.get('disks') or []) > 1 else ''
    for f in sorted([f for f in plan['filesystems'] if f.get('mount_point')],
                    key=lambda x: _layout.mount_depth_key(x['mount_point'])):
        if f['fs_type'] == 'zfs':
            continue  # mounted by ZFS itself (its mountpoint property), / by the initramfs
        uuid = (probes.get(f['device']) or {}).get('UUID')
        spec = 'UUID=%s' % uuid if uuid else f['device']
        opts = 'defaults'
        passno = 1 if f['mount_point'] == '/' else 2
        if f['fs_type'] in ('xfs', 'btrfs'):
            passno = 0
        if f['fs_type'] == 'vfat':
            opts, passno = 'umask=0077', 1
        if f.get('role') == 'esp':
            opts += single_disk_opts
        lines.append('%s %s %s %s 0 %d' % (spec, f['mount_point'], f['fs_type'], opts, passno))
    for s in plan['swaps']:
        uuid = (probes.get(s['device']) or {}).get('UUID')
        lines.append('%s none swap sw%s 0 0' % ('UUID=%s' % uuid if uuid else s['device'], single_disk_opts))
    return '\n'.join(lines) + '\n'


def mdadm_conf_text(runner, plan):
    if not plan['md_arrays']:
        return ''
    lines = ['# mdadm.conf (written by baremetal.byol.byol_partition)', 'HOMEHOST <ignore>', 'MAILADDR root']
    for md in plan['md_arrays']:
        res = runner.run(['mdadm', '--detail', '--brief', md['device']], check=False)
        line = (res.stdout or '').strip()
        if line:
            lines.append(line.splitlines()[0].replace(os.path.realpath(md['device']), md['device']))
    return '\n'.join(lines) + '\n'


def apply(runner, plan, mount_root, check_mode=False, mount_esp=True):
    """Bring the disks to the plan. Returns a result dict (see the module's RETURN)."""
    disks = [d['path'] for d in plan['disks']]
    _blockdev.check_disks_free(runner, disks, allowed_mount_prefix=mount_root)
    state = read_state(runner, plan, activate=not check_mode, mount_root=mount_root)
    diffs = compare(plan, state)
    before = state_summary(state, plan)
    after = plan_diff_summary(plan, kept=[] if diffs else kept_partitions(plan, state))
    result = {'changed': False, 'plan': plan, 'warnings_list': plan['warnings'], 'differences': diffs,
              'diff': {'before': '\n'.join(before) + '\n', 'after': '\n'.join(after) + '\n',
                       'before_header': 'disks today', 'after_header': 'planned layout'}}
    if check_mode and diffs:
        # what the real run would refuse, check mode refuses too (reads only)
        check_foreign_holders(runner, _blockdev.lsblk(runner), disks)
    if check_mode:
        would_mount = [target_path(mount_root, m['mount_point']) for m in plan['mounts']
                       if mount_esp or m['mount_point'] != _layout.ESP_MOUNT]
        mounted_targets = set(row[1] for row in current_mounts(runner))
        result['changed'] = bool(diffs) or any(t not in mounted_targets for t in would_mount)
        result['repartitioned'] = bool(diffs)
        return result
    if diffs:
        teardown(runner, disks, mount_root)
        build(runner, plan, mount_root)
        result['changed'] = True
    result['repartitioned'] = bool(diffs)
    mounted, mounts = mount_all(runner, plan, mount_root, mount_esp=mount_esp)
    if mounted:
        result['changed'] = True
    if zfs_finish(runner, plan):
        result['changed'] = True
    probes = {}
    for f in plan['filesystems'] + plan['swaps']:
        if f.get('fs_type') != 'zfs':
            probes[f['device']] = _blockdev.probe(runner, f['device'])
    result['mounts'] = mounts
    result['devices'] = dict((dev, {'uuid': info.get('UUID'), 'fs_type': info.get('TYPE'), 'label': info.get('LABEL'),
                                    'partuuid': info.get('PART_ENTRY_UUID')})
                             for dev, info in probes.items())
    result['fstab'] = fstab_text(plan, probes)
    result['mdadm_conf'] = mdadm_conf_text(runner, plan)
    result['esp_devices'] = plan['esp_devices']
    result['boot_device'] = plan['boot_device']
    result['root_device'] = plan['root_device']
    result['mount_root'] = mount_root
    return result


# ----------------------------------------------------------------------------------------------
# the module's step (byol_partition)
# ----------------------------------------------------------------------------------------------

def physical_sector_size(runner, device):
    """Physical sector size of ``device`` in bytes (``blockdev --getpbsz``; None when it cannot say)."""
    res = runner.run(['blockdev', '--getpbsz', device], check=False)
    try:
        return int((res.stdout or '').strip()) if res.rc == 0 else None
    except ValueError:
        return None


def target_disks(runner, paths):
    """``[{'path', 'size', 'sector_size'}]`` of the whole disks ``paths`` (links resolved)."""
    disks = []
    for path in paths:
        real = _blockdev.real_device(path)
        if not os.path.exists(real):
            raise ByolError('Disk %s does not exist' % path)
        _blockdev.require_whole_disk(runner, real, 'the partition table is written onto it')
        disks.append({'path': real, 'size': _blockdev.device_size(runner, real),
                      'sector_size': _blockdev.sector_size(runner, real)})
    return disks


def required_tools(plan):
    """The tools applying ``plan`` needs (checked before the lock and before any disk is touched)."""
    tools = ['sfdisk', 'wipefs', 'blkid', 'lsblk', 'findmnt', 'partx']
    fs_types = set(f['fs_type'] for f in plan['filesystems'])
    tools += [_fstable.tool(t) for t in sorted(fs_types) if t in _fstable.MKFS_TYPES]
    if plan['swaps']:
        tools.append('mkswap')
    if plan['md_arrays']:
        tools.append('mdadm')
    if plan['volume_groups']:
        tools += ['pvcreate', 'vgcreate', 'lvcreate', 'lvs', 'vgchange']
    if plan['zpools']:
        tools += ['zpool', 'zfs']
    return tools


def run_module(module, runner, result):
    """byol_partition: plan from the module's arguments, then :func:`apply` (see ``_module.run_step``)."""
    p = module.params
    mount_root, problems = rules.check_tree(p['mount_root'], 'mount_root')
    rules.enforce(problems)
    boot_mode = p['boot_mode']
    if boot_mode == 'auto':
        boot_mode = _blockdev.detect_boot_mode()
    table_type = 'gpt' if p['table_type'] == 'auto' else p['table_type']
    disks = target_disks(runner, p['disks'])
    layout = [dict((k, v) for k, v in item.items() if v is not None) for item in p['layout']]
    uses_zfs = any(item.get('zpool_name') for item in layout)
    zfs_available = bool(runner.which('zpool', required=False) and runner.which('zfs', required=False)) if uses_zfs else True
    if uses_zfs:
        for disk in disks:  # the pools' ashift
            disk['physical_sector_size'] = physical_sector_size(runner, disk['path'])
    plan = _layout.plan_layout(layout, disks, boot_mode=boot_mode, table_type=table_type,
                               configdrive_size=p['configdrive_size'], zfs_available=zfs_available,
                               mount_root=mount_root)
    result['plan'] = plan
    for tool in required_tools(plan):
        runner.which(tool)
    _lock.take_server_lock(module, 'byol_partition', p['lock_timeout'])  # held until the module's process ends
    out = apply(runner, plan, p['mount_root'], check_mode=module.check_mode, mount_esp=p['mount_esp'])
    for warning in out.pop('warnings_list', []):
        module.warn(warning)
    if not module._diff:
        out.pop('diff', None)
    return out

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Config drive writer: find or create the partition, mkfs.vfat, read and write files with mtools.

Do not use this from other collections or standalone plugins/modules!

Nothing is mounted (vfat may not even be available in the rescue kernel): the files are
read and written with mtools on the partition's device node. Content and placement come
from :mod:`._configdrive` (pure).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time

from ansible_collections.baremetal.byol.plugins.module_utils import _blockdev as bd
from ansible_collections.baremetal.byol.plugins.module_utils import _configdrive as cd
from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError
from ansible_collections.baremetal.byol.plugins.module_utils._lock import take_server_lock
from ansible_collections.baremetal.byol.plugins.module_utils._treefs import Tree, TreeError

MBR_TYPE = 'c'          # W95 FAT32 (LBA); blkid and cloud-init look at the filesystem, not the type
GPT_TYPE = '0700'       # Microsoft basic data


def _mt_env():
    return {'MTOOLS_SKIP_CHECK': '1'}


def parse_sgdisk_entries(text):
    """Number of GPT entries from ``sgdisk -p`` output (128 if not stated)."""
    m = re.search(r'holds up to (\d+) entries', text or '')
    return int(m.group(1)) if m else 128


def parse_mdir_listing(text):
    """``mdir -b -/ ::/`` output -> (set of directories, set of files), paths without ``::/``."""
    dirs, files = set(), set()
    for line in (text or '').splitlines():
        line = line.strip()
        if not line.startswith('::/'):
            continue
        path = line[3:]
        if path.endswith('/'):
            dirs.add(path.rstrip('/'))
        elif path:
            files.add(path)
    return dirs, files


def ensure_nodes(runner, disk, numbers, attempts=20, sleep=time.sleep):
    """Make the partition nodes of ``numbers`` exist.

    After a program closes the whole disk for writing, udev may re-read the table
    asynchronously (on some kernels this drops the partitions of a loop device for a while);
    so settle first, add the partitions with ``partx --update``, and retry until they stay.
    """
    paths = [bd.partition_path(disk, n) for n in numbers]
    for attempt in range(attempts):
        bd.settle(runner)
        if all(os.path.exists(p) for p in paths):
            return paths
        runner.run(['partx', '--update', disk], check=False)
        bd.settle(runner)
        if all(os.path.exists(p) for p in paths):
            return paths
        sleep(min(0.1 * (attempt + 1), 1.0))
    bd.wait_for_paths(paths, timeout=10)
    return paths


def find_existing(runner, disk, table):
    """(number, formatted) of the partition that holds (or was created for) the config drive, or (None, False)."""
    parts = [(cd._part_number(p), p) for p in (table or {}).get('partitions') or []]
    if not parts:
        return None, False
    ensure_nodes(runner, disk, [n for n, _p in parts])
    found = []
    for number, p in parts:
        info = bd.probe(runner, bd.partition_path(disk, number))
        label = info.get('LABEL', '')
        if label.lower() == cd.LABEL:
            if info.get('TYPE') != 'vfat':
                raise ByolError('partition %d of %s is labelled %s but holds %s, not vfat; this module writes vfat '
                                'config drives only. Delete that partition first.' % (number, disk, label, info.get('TYPE')))
            found.append((number, True))
        elif p.get('name') == cd.LABEL and not info.get('TYPE'):
            # created by an earlier run that stopped before mkfs
            found.append((number, False))
    if len(found) > 1:
        raise ByolError('%s has several config-2 partitions (%s); cloud-init would pick one at random. Delete the extra ones.'
                        % (disk, ', '.join(str(n) for n, _f in found)))
    return found[0] if found else (None, False)


def read_files(runner, part, tmpdir):
    """Managed files on the drive (path -> bytes) and the stale entries under ``openstack/``.

    The ``meta_data.json`` of the newest stale version directory (a drive written by another
    installer) is returned as ``existing['stale_meta']`` so that its uuid can be kept.
    """
    res = runner.run(['mdir', '-i', part, '-b', '-/', '::/'], env=_mt_env(), check=False)
    if res.rc != 0:
        if 'not found' in (res.stderr or ''):   # empty filesystem
            return {}, []
        raise ByolError('Cannot read the config drive %s with mtools: %s' % (part, (res.stderr or '').strip()),
                        rc=res.rc, stderr=res.stderr, cmd=res.cmd)
    dirs, files = parse_mdir_listing(res.stdout)
    existing = {}
    stale = sorted(d for d in dirs if d.count('/') == 1 and d.startswith('openstack/') and d != cd.BASE_DIR)
    if 'openstack' in dirs:
        out = os.path.join(tmpdir, 'drive')
        os.mkdir(out)
        runner.run(['mcopy', '-i', part, '-s', '-n', '-p', '::/openstack', out + '/'], env=_mt_env())
        # what the drive holds is read back file by file: a file that is missing or not a regular file is
        # absent (and written again), never followed anywhere
        with Tree(out) as tree:
            for path in cd.MANAGED_FILES:
                data = _read_local(tree, path) if path in files else None
                if data is not None:
                    existing[path] = data
            for d in reversed(stale):
                data = _read_local(tree, d + '/meta_data.json')
                if data is not None:
                    existing['stale_meta'] = data
                    break
    return existing, stale


def _read_local(tree, path):
    try:
        return tree.read_bytes(path, max_size=None)  # bounded by the partition's size
    except TreeError:
        return None


def write_files(runner, part, desired, status, stale, tmpdir):
    if any(st in ('created', 'updated') for st in status.values()):
        dirs = parse_mdir_listing(runner.run(['mdir', '-i', part, '-b', '-/', '::/'], env=_mt_env(), check=False).stdout)[0]
        for d in ('openstack', cd.BASE_DIR):
            if d not in dirs:
                runner.run(['mmd', '-i', part, '::/' + d], env=_mt_env())
    for d in stale:
        runner.run(['mdeltree', '-i', part, '::/' + d], env=_mt_env())
    for path, st in sorted(status.items()):
        if st == 'removed':
            runner.run(['mdel', '-i', part, '::/' + path], env=_mt_env())
        elif st in ('created', 'updated'):
            local = os.path.join(tmpdir, 'new-' + os.path.basename(path))
            fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, 'wb') as f:
                f.write(desired[path])
            runner.run(['mcopy', '-i', part, '-D', 'o', local, '::/' + path], env=_mt_env())
            os.unlink(local)


def disk_identity(runner, disk):
    """Identity parts for the derived instance uuid: SMBIOS UUID, disk serial (or path)."""
    parts = []
    try:
        with open('/sys/class/dmi/id/product_uuid') as f:
            parts.append(f.read().strip().lower())
    except (IOError, OSError):
        parts.append('')
    info = {}
    for d in bd.lsblk(runner, [disk]):
        if d.get('path') == disk or d.get('name') == os.path.basename(disk):
            info = d
            break
    parts.append(info.get('serial') or disk)
    return parts


def configdrive(runner, p, check_mode=False, tmp_root=None):
    """Ensure the config drive on ``p['device']``; returns the module result (without invocation)."""
    # --- validate everything before looking at the disk
    hostname = cd.validate_hostname(p['hostname']) if p.get('hostname') else None
    keys = cd.validate_ssh_keys(p.get('ssh_keys'))
    meta = cd.validate_meta(p.get('meta_data'))
    user_data, user_data_source = cd.decode_user_data(p.get('user_data'), p.get('user_data_encoding') or 'auto')
    instance_id = cd.validate_instance_id(p['instance_id']) if p.get('instance_id') else None
    size = cd.validate_size(p.get('size'))
    vendor_data = p.get('vendor_data')
    if vendor_data is not None and not isinstance(vendor_data, (dict, list)):
        raise ByolError('vendor_data must be a dictionary (vendor_data.json)')
    nd = p.get('network_data')
    if isinstance(nd, str) and nd.strip().startswith('{'):
        try:
            nd = json.loads(nd)
        except ValueError as exc:
            raise ByolError('network_data is not valid JSON: %s' % exc)
    if isinstance(nd, str):
        if nd not in ('auto', 'dhcp'):
            raise ByolError('network_data must be a dictionary (network_data.json), "auto" or "dhcp", not %r' % nd)
        addrs = json.loads(runner.run(['ip', '-j', 'addr', 'show']).stdout or '[]')
        routes = json.loads(runner.run(['ip', '-j', 'route', 'show']).stdout or '[]')
        routes6 = json.loads(runner.run(['ip', '-j', '-6', 'route', 'show'], check=False).stdout or '[]')
        try:
            with open('/etc/resolv.conf') as f:
                nameservers = cd.parse_resolv_conf(f.read())
        except (IOError, OSError):
            nameservers = []
        network_data = cd.derive_network_data(addrs, routes, routes6, nameservers, mode=nd)
    elif nd is not None:
        network_data = cd.validate_network_data(nd)
    else:
        network_data = None

    # --- the disk
    disk = bd.require_whole_disk(runner, p['device'], 'the config drive partition is created on it')
    sector = bd.sector_size(runner, disk)
    disk_sectors = bd.device_size(runner, disk) // sector
    table = bd.read_table(runner, disk, strict=True)
    entries = 128
    if table and table.get('label') == 'gpt':
        entries = parse_sgdisk_entries(runner.run(['sgdisk', '-p', disk], check=False).stdout)
    number, formatted = find_existing(runner, disk, table)
    plan = cd.plan_partition(table, disk_sectors, sector, size, gpt_entries=entries, existing=number)
    if plan['action'] == 'reuse':
        plan['formatted'] = formatted
    part = bd.partition_path(disk, plan['number']) if plan.get('number') else None

    tmpdir = tempfile.mkdtemp(prefix='byol-configdrive-', dir=tmp_root)
    try:
        existing, stale = {}, []
        if plan['action'] == 'reuse' and formatted:
            ensure_nodes(runner, disk, [plan['number']])
            for d in bd.lsblk(runner, [part]):
                if d.get('mountpoints'):
                    raise ByolError('the config drive %s is mounted on %s; unmount it first (writing it while mounted '
                                    'would corrupt it)' % (part, ', '.join(d['mountpoints'])))
            existing, stale = read_files(runner, part, tmpdir)

        id_source = 'parameter'
        stale_meta = existing.pop('stale_meta', b'')
        if instance_id is None:
            instance_id = cd.instance_id_from_meta(existing.get(cd.META_DATA, b'')) or cd.instance_id_from_meta(stale_meta)
            id_source = 'drive'
        if instance_id is None:
            instance_id = cd.derive_instance_id(disk_identity(runner, disk) + [hostname or ''])
            id_source = 'derived'

        desired = cd.build_files(instance_id, hostname, keys, meta, user_data, network_data, vendor_data)
        status = cd.compare_files(desired, existing)
        files_changed = any(s != 'unchanged' for s in status.values()) or bool(stale)
        partition_changed = plan['action'] == 'create' or not plan.get('formatted', True)
        changed = files_changed or partition_changed or plan.get('relocate_gpt', False)

        result = {
            'changed': changed,
            'device': disk,
            'instance_id': instance_id,
            'instance_id_source': id_source,
            'partition': {
                'action': plan['action'] if plan['action'] == 'create' or formatted else 'format',
                'table': plan['label'],
                'number': plan.get('number'),
                'device': part,
                'start': plan['start'],
                'size': plan['size'],
                'size_mib': plan['size'] * sector // cd.MIB,
                'relocated_gpt_backup': bool(plan.get('relocate_gpt')),
            },
            'files': dict((k, v) for k, v in status.items()),
            'removed_stale': stale,
            'user_data_source': user_data_source,
            'meta_data': json.loads(desired[cd.META_DATA].decode('utf-8')),
            'network_data': network_data,
            'diff': cd.build_diff(desired, existing, status, p.get('show_user_data_in_diff', False)),
        }
        if check_mode or not changed:
            return result

        try:
            _write(runner, disk, plan, part, desired, status, stale, partition_changed, result, tmpdir)
        except ByolError as err:
            # something may already be on the disk: report it as changed, with what was planned
            err.extra.setdefault('changed', True)
            err.extra.setdefault('partition', result['partition'])
            raise
        return result
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _write(runner, disk, plan, part, desired, status, stale, partition_changed, result, tmpdir):
    """Create/format the partition if needed and write the changed files."""
    if plan['action'] == 'create':
        if plan['label'] == 'gpt':
            if plan['relocate_gpt']:
                runner.run(['sgdisk', '-e', disk], msg='Could not move the backup GPT of %s to the end of the disk' % disk)
            runner.run(['sgdisk', '-n', '%d:%d:%d' % (plan['number'], plan['start'], plan['end']),
                        '-t', '%d:%s' % (plan['number'], GPT_TYPE), '-c', '%d:%s' % (plan['number'], cd.LABEL), disk])
        else:
            runner.run(['sfdisk', '--append', '--no-reread', '--no-tell-kernel', disk],
                       data='start=%d, size=%d, type=%s\n' % (plan['start'], plan['size'], MBR_TYPE))
            new = [q for q in (bd.read_table(runner, disk, strict=True) or {}).get('partitions', []) if q['start'] == plan['start']]
            if not new:
                raise ByolError('sfdisk did not create the config drive partition on %s' % disk)
            plan['number'] = cd._part_number(new[0])
            part = bd.partition_path(disk, plan['number'])
            result['partition']['number'] = plan['number']
            result['partition']['device'] = part
    if partition_changed:
        ensure_nodes(runner, disk, [plan['number']])
        runner.run(['mkfs.vfat', '-n', cd.LABEL, part])
        # a fresh filesystem: every file is new
        stale = []
        status = cd.compare_files(desired, {})
        result['files'] = status
    write_files(runner, part, desired, status, stale, tmpdir)
    runner.run(['blockdev', '--flushbufs', part], check=False)


def run_module(module, runner, result):
    """byol_configdrive (see ``_module.run_step``)."""
    take_server_lock(module, 'byol_configdrive', module.params['lock_timeout'])  # held until the module's process ends
    out = configdrive(runner, module.params, check_mode=module.check_mode)
    diff = out.pop('diff')
    if module._diff:
        out['diff'] = diff
    return out

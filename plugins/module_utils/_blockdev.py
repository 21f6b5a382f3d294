# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Block devices: lsblk, sizes, partition names, udev settling and in-use detection.

Do not use this from other collections or standalone plugins/modules!

The parsing functions are pure (they take command output); the others take the module's
:class:`CommandRunner`.
"""

from __future__ import annotations

import json
import os
import re
import time

from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError

LSBLK_COLUMNS = 'NAME,PATH,KNAME,PKNAME,TYPE,SIZE,FSTYPE,LABEL,UUID,PARTTYPE,PARTLABEL,PARTUUID,MOUNTPOINTS,MODEL,SERIAL,ROTA,TRAN,RO'


def partition_path(disk, number):
    """Device path of partition ``number`` of ``disk``.

    ``/dev/sda`` -> ``/dev/sda1``; ``/dev/nvme0n1``, ``/dev/loop0``, ``/dev/md0``,
    ``/dev/mmcblk0`` (names ending in a digit) -> ``/dev/nvme0n1p1``.
    """
    disk = disk.rstrip('/')
    if re.search(r'\d$', disk):
        return '%sp%d' % (disk, number)
    return '%s%d' % (disk, number)


def parse_lsblk(output):
    """Parse ``lsblk --json --bytes`` output into a flat list of device dicts.

    Each dict has the lsblk columns (lower-case keys), ``mountpoints`` as a list without
    ``None`` entries, ``size`` as int, and ``children`` removed (``pkname`` links them).
    """
    data = json.loads(output or '{}')
    flat = []

    def walk(devices, parent):
        for dev in devices or []:
            entry = dict((k.lower(), v) for k, v in dev.items() if k != 'children')
            mps = entry.get('mountpoints')
            if mps is None and entry.get('mountpoint'):
                mps = [entry.get('mountpoint')]
            entry['mountpoints'] = [m for m in (mps or []) if m]
            if entry.get('size') is not None:
                entry['size'] = int(entry['size'])
            if parent is not None and not entry.get('pkname'):
                entry['pkname'] = parent.get('kname') or parent.get('name')
            flat.append(entry)
            walk(dev.get('children'), entry)

    walk(data.get('blockdevices'), None)
    return flat


def lsblk(runner, devices=None):
    """Flat list of block devices (see :func:`parse_lsblk`), optionally for ``devices`` only."""
    args = ['lsblk', '--json', '--bytes', '--output', LSBLK_COLUMNS]
    if devices:
        args.extend(devices)
    return parse_lsblk(runner.run(args).stdout)


def device_size(runner, device):
    """Size of ``device`` in bytes (``blockdev --getsize64``)."""
    return int(runner.run(['blockdev', '--getsize64', device]).stdout.strip())


def sector_size(runner, device):
    """Logical sector size of ``device`` in bytes."""
    return int(runner.run(['blockdev', '--getss', device]).stdout.strip())


def real_device(path):
    """Resolve symlinks such as ``/dev/disk/by-id/...`` to ``/dev/sdX``."""
    return os.path.realpath(path)


def settle(runner, timeout=30):
    """Wait for udev to finish processing events (no-op when udevadm is missing)."""
    if runner.which('udevadm', required=False):
        runner.run(['udevadm', 'settle', '--timeout=%d' % timeout], check=False)


def refresh_udev(runner, devices, timeout=30):
    """Make udev probe ``devices`` again and wait for it (no-op when udevadm is missing).

    udev probes a new partition when the kernel announces it and then watches it for writes.
    A ``mkfs`` that runs while that first probe is still going leaves udev's database (what
    ``lsblk``, ``/dev/disk/by-uuid`` and ``/dev/disk/by-label`` read) without the new
    filesystem, and no later event corrects it. A ``change`` event after the last write does.
    """
    if devices and runner.which('udevadm', required=False):
        runner.run(['udevadm', 'trigger', '--action=change'] + list(devices), check=False)
        settle(runner, timeout)


def wait_for_paths(paths, timeout=30, sleep=time.sleep, exists=os.path.exists, clock=time.monotonic):
    """Wait until every path in ``paths`` exists; raise ByolError naming the missing ones."""
    deadline = clock() + timeout
    delay = 0.05
    while True:
        missing = [p for p in paths if not exists(p)]
        if not missing:
            return
        if clock() >= deadline:
            raise ByolError('Device node(s) %s did not appear within %d s (is udev running on the rescue system?)'
                            % (', '.join(missing), timeout))
        sleep(delay)
        delay = min(delay * 2, 1.0)


def reread_partitions(runner, disk, expected=None, timeout=30):
    """Make the kernel re-read ``disk``'s partition table and wait for the partition nodes.

    ``expected`` is a list of partition numbers whose device nodes must appear.
    """
    result = runner.run(['partx', '--update', disk], check=False)
    if result.rc != 0:
        # partx refuses a disk without partitions; blockdev works for an unused disk.
        runner.run(['blockdev', '--rereadpt', disk], check=False)
    settle(runner, timeout)
    if expected:
        wait_for_paths([partition_path(disk, n) for n in expected], timeout=timeout)


def parse_swaps(text):
    """Device paths listed in ``/proc/swaps``."""
    devs = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if fields:
            devs.append(fields[0])
    return devs


def parse_export(text):
    """``KEY=value`` lines (``blkid -o export``, ``mdadm --examine --export``) -> dict; values may hold ``=``."""
    out = {}
    for line in (text or '').splitlines():
        if '=' in line:
            key, value = line.split('=', 1)
            out[key.strip()] = value.strip()
    return out


def root_disks(devices, root_source):
    """Names of the top-level disks that ``root_source`` (the device of ``/``) lives on.

    ``devices`` is the flat :func:`parse_lsblk` list. Follows ``pkname`` links up through
    partitions, md arrays and device-mapper devices.
    """
    by_kname = dict((d.get('kname') or d.get('name'), d) for d in devices)
    by_path = dict((d.get('path'), d) for d in devices if d.get('path'))
    start = by_path.get(root_source) or by_kname.get(os.path.basename(root_source or ''))
    if start is None:
        return set()
    disks = set()
    todo = [start]
    seen = set()
    while todo:
        dev = todo.pop()
        key = dev.get('kname') or dev.get('name')
        if key in seen:
            continue
        seen.add(key)
        # A device with several parents (RAID member list) appears once per parent in lsblk.
        parents = [d for d in devices if (d.get('kname') or d.get('name')) == key and d.get('pkname')]
        if not parents:
            disks.add(key)
        for p in parents:
            parent = by_kname.get(p['pkname'])
            if parent is not None:
                todo.append(parent)
    return disks


def disk_in_use_reasons(devices, disk, swaps=(), root_source=None, allowed_mount_prefix=None):
    """Reasons why ``disk`` must not be wiped (empty list if it is free).

    Pure: ``devices`` from :func:`parse_lsblk` (whole system), ``swaps`` from
    :func:`parse_swaps`, ``root_source`` the device mounted on ``/``. Mounts under
    ``allowed_mount_prefix`` (our own ``mount_root``) do not count.
    """
    name = os.path.basename(real_device(disk))
    reasons = []
    if root_source and name in root_disks(devices, root_source):
        reasons.append('%s holds the running system\'s root filesystem (%s)' % (disk, root_source))
    # every device stacked on the disk (partitions, md, dm, ...)
    stacked = []
    todo = [name]
    seen = set()
    while todo:
        cur = todo.pop()
        if cur in seen:
            continue
        seen.add(cur)
        for d in devices:
            key = d.get('kname') or d.get('name')
            if key == cur:
                stacked.append(d)
            if d.get('pkname') == cur:
                todo.append(key)
    for d in stacked:
        for mp in d.get('mountpoints') or []:
            if mp == '[SWAP]':
                continue
            if allowed_mount_prefix and (mp == allowed_mount_prefix or mp.startswith(allowed_mount_prefix.rstrip('/') + '/')):
                continue
            reasons.append('%s is mounted on %s' % (d.get('path') or d.get('name'), mp))
        path = d.get('path') or '/dev/' + (d.get('kname') or d.get('name'))
        if path in swaps or '[SWAP]' in (d.get('mountpoints') or []):
            reasons.append('%s is active swap' % path)
    # de-duplicate, keep order
    out = []
    for r in reasons:
        if r not in out:
            out.append(r)
    return out


def root_source(runner):
    """The device mounted on ``/`` (``findmnt``), or None (e.g. a tmpfs/overlay root)."""
    res = runner.run(['findmnt', '--noheadings', '--output', 'SOURCE', '--mountpoint', '/'], check=False)
    src = (res.stdout or '').strip()
    return src if src.startswith('/dev/') else None


def check_disks_free(runner, disks, allowed_mount_prefix=None):
    """Raise ByolError naming each disk that is in use and why."""
    devices = lsblk(runner)
    try:
        with open('/proc/swaps') as f:
            swaps = parse_swaps(f.read())
    except IOError:
        swaps = []
    rsrc = root_source(runner)
    problems = []
    for disk in disks:
        for reason in disk_in_use_reasons(devices, disk, swaps=swaps, root_source=rsrc,
                                          allowed_mount_prefix=allowed_mount_prefix):
            problems.append(reason)
    if problems:
        raise ByolError('Refusing to touch disk(s) that are in use: %s. Unmount them, or choose other disks.'
                        % '; '.join(problems), in_use=problems)


def write_sectors(disk):
    """Sectors written to ``disk`` since boot (``/sys/block/<disk>/stat``, field 7)."""
    name = os.path.basename(real_device(disk))
    with open('/sys/block/%s/stat' % name) as f:
        return int(f.read().split()[6])

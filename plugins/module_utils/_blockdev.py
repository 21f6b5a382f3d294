# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Block devices: lsblk, sizes, partition names, udev settling and in-use detection; and the one place that
reads the machine's block-device state: partition tables (``sfdisk --json``), signatures (``blkid -p``), the
boot mode (``/sys/firmware/efi``), memory (``/proc/meminfo``) and free space (``statvfs``).

Do not use this from other collections or standalone plugins/modules!

The parsing functions are pure (they take command output); the others take the module's
:class:`CommandRunner`.
"""

from __future__ import annotations

import errno
import json
import os
import re
import time

from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError, CommandError

LSBLK_COLUMNS = 'NAME,PATH,KNAME,PKNAME,MAJ:MIN,TYPE,SIZE,FSTYPE,LABEL,UUID,PARTTYPE,PARTLABEL,PARTUUID,MOUNTPOINTS,MODEL,SERIAL,ROTA,TRAN,RO'
MOUNTINFO = '/proc/self/mountinfo'


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


def stacked(devices, kname):
    """The entries of ``devices`` (:func:`parse_lsblk`) stacked on the device ``kname`` (partitions, md, dm...), not the
    device itself, breadth first (deepest last). A device with several parents (an md array on two partitions of the
    disk, multipath) is listed once."""
    out = []
    keys = set()
    todo = [kname]
    seen = set()
    while todo:
        cur = todo.pop(0)
        if cur in seen:
            continue
        seen.add(cur)
        for dev in devices:
            key = dev.get('kname') or dev.get('name')
            if dev.get('pkname') == cur and key not in keys:
                out.append(dev)
                keys.add(key)
                todo.append(key)
    return out


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


def flush_buffers(runner, disk):
    """Drop ``disk``'s cached pages (``blockdev --flushbufs``) after it was written with O_DIRECT: a page of the old
    partition table that a reader (udev's probe, a monitoring agent) held while the image was written can stay in
    the page cache, and the kernel's re-read of the table would parse that instead of the disk."""
    if runner.which('blockdev', required=False):
        runner.run(['blockdev', '--flushbufs', disk], check=False)


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


# A disk that udev, blkid, a monitoring agent or multipathd opens for a moment refuses a partition table re-read
# or an sfdisk write with EBUSY. Those opens end by themselves: settle and try again, a bounded number of times.
BUSY_ATTEMPTS = 10  # about 30 s in all: 0.2 s, then doubling up to 5 s between attempts
BUSY_MARKERS = ('currently in use', 'Device or resource busy', 'device or resource busy', 'EBUSY')


def is_busy(result):
    """True when a command's output says the device was busy (a transient open)."""
    text = '%s %s' % (getattr(result, 'stderr', '') or '', getattr(result, 'stdout', '') or '')
    return any(m in text for m in BUSY_MARKERS)


def _sys_name(device):
    return os.path.basename(real_device(device))


def _read_sys(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except (IOError, OSError):
        return None


def _partitions_sys(name, sys_block='/sys/block'):
    """Kernel names of ``name`` and of its partitions (``/sys/block/<name>/<name>N``)."""
    out = [name]
    try:
        for entry in sorted(os.listdir(os.path.join(sys_block, name))):
            if entry.startswith(name) and os.path.exists(os.path.join(sys_block, name, entry, 'partition')):
                out.append(entry)
    except OSError:
        pass
    return out


def holders_of(device, sys_block='/sys/block', sys_class='/sys/class/block'):
    """Kernel names of the devices stacked on ``device`` or its partitions (``holders`` in sysfs: dm, md...),
    recursively; empty when nothing holds it."""
    todo = _partitions_sys(_sys_name(device), sys_block)
    seen = set(todo)
    out = []
    while todo:
        cur = todo.pop(0)
        try:
            holders = sorted(os.listdir(os.path.join(sys_class, cur, 'holders')))
        except OSError:
            holders = []
        for h in holders:
            if h not in seen:
                seen.add(h)
                out.append(h)
                todo.append(h)
    return out


def openers_of(device, proc='/proc'):
    """``pid (comm)`` of every process with an open descriptor on ``device`` or one of its partitions."""
    names = set(_partitions_sys(_sys_name(device)))
    nodes = set('/dev/%s' % n for n in names)
    out = []
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return out
    for pid in pids:
        if int(pid) == os.getpid():
            continue
        fd_dir = os.path.join(proc, pid, 'fd')
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if target in nodes:
                comm = _read_sys(os.path.join(proc, pid, 'comm')) or '?'
                out.append('%s (%s) has %s open' % (pid, comm, target))
                break
    return out


def unescape_mountinfo(field):
    """Undo the octal escapes (``\\040`` etc.) of /proc/self/mountinfo fields."""
    out = []
    i = 0
    while i < len(field):
        if field[i] == '\\' and i + 4 <= len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return ''.join(out)


def parse_mountinfo(text):
    """Parse /proc/self/mountinfo into a list of dicts (in kernel order)."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 10 or '-' not in fields:
            continue
        sep = fields.index('-')
        mounts.append({
            'id': int(fields[0]),
            'parent': int(fields[1]),
            'devno': fields[2],
            'root': unescape_mountinfo(fields[3]),
            'mountpoint': unescape_mountinfo(fields[4]),
            'options': fields[5],
            'optional': fields[6:sep],
            'fstype': fields[sep + 1],
            'source': unescape_mountinfo(fields[sep + 2]),
        })
    return mounts


def read_mountinfo(path=MOUNTINFO):
    """This process's mounts (:func:`parse_mountinfo` of ``path``)."""
    with open(path) as f:
        return parse_mountinfo(f.read())


def namespace_mounts_of(device, proc='/proc'):
    """``pid (comm)`` of processes whose mount namespace still mounts ``device`` or a partition of it (a namespace
    made while it was mounted keeps it after the host unmounts it: no descriptor shows in ``/proc/*/fd``)."""
    numbers = set()
    for name in _partitions_sys(_sys_name(device)):
        dev = _read_sys('/sys/class/block/%s/dev' % name)
        if dev:
            numbers.add(dev)
    out = []
    if not numbers:
        return out
    seen_ns = set()
    try:
        own_ns = os.readlink(os.path.join(proc, 'self', 'ns', 'mnt'))
    except OSError:
        own_ns = None
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return out
    for pid in pids:
        try:
            ns = os.readlink(os.path.join(proc, pid, 'ns', 'mnt'))
        except OSError:
            continue
        if ns == own_ns or ns in seen_ns:
            continue
        seen_ns.add(ns)
        text = _read_sys(os.path.join(proc, pid, 'mountinfo')) or ''
        for line in text.splitlines():
            fields = line.split()
            if len(fields) > 4 and fields[2] in numbers:
                comm = _read_sys(os.path.join(proc, pid, 'comm')) or '?'
                out.append('%s (%s) has it mounted on %s in its own mount namespace' % (pid, comm, fields[4]))
                break
    return out


def busy_report(device):
    """What holds ``device`` now, in words (holders in sysfs, processes with it open), or ``nothing seen``."""
    parts = []
    holders = holders_of(device)
    if holders:
        parts.append('stacked on it: %s' % ', '.join(holders))
    openers = openers_of(device) + namespace_mounts_of(device)
    if openers:
        parts.append('processes: %s' % '; '.join(openers))
    return ', '.join(parts) or 'nothing seen holding it (a short open that ended)'


def busy_error(args, result, attempts, device):
    """The CommandError of a command that found ``device`` busy at every attempt, naming what holds it."""
    return CommandError('Command %s failed with exit code %d after %d attempts, %s stayed busy (%s): %s'
                        % (' '.join(str(a) for a in args), result.rc, attempts, device, busy_report(device),
                           (result.stderr or result.stdout or '').strip()),
                        cmd=list(args), rc=result.rc, stdout=result.stdout, stderr=result.stderr)


def run_retrying_busy(runner, args, device, attempts=BUSY_ATTEMPTS, sleep=time.sleep, **kwargs):
    """Run ``args``; while it fails because ``device`` is busy, settle udev and try again (``attempts`` in all).

    Returns the last CommandResult when ``check=False`` is passed; otherwise raises CommandError naming what held
    the device after the last attempt."""
    check = kwargs.pop('check', True)
    delay = 0.2
    result = None
    for attempt in range(attempts):
        result = runner.run(args, check=False, **kwargs)
        if result.rc == 0 or not is_busy(result):
            break
        if attempt < attempts - 1:
            settle(runner)
            sleep(delay)
            delay = min(delay * 2, 5.0)
    if check and result.rc != 0:
        text = (result.stderr or result.stdout or '').strip()
        if is_busy(result):
            raise busy_error(args, result, attempts, device)
        raise CommandError('Command %s failed with exit code %d: %s' % (' '.join(str(a) for a in args), result.rc, text),
                           cmd=list(args), rc=result.rc, stdout=result.stdout, stderr=result.stderr)
    return result


def reread_partitions(runner, disk, expected=None, timeout=30, strict=False):
    """Make the kernel re-read ``disk``'s partition table and wait for the partition nodes.

    ``expected`` is a list of partition numbers whose device nodes must appear. A re-read refused because the disk
    is busy for a moment (udev's probe right after a write) is retried after settling. With ``strict``, a disk
    still busy after the last attempt raises CommandError naming what holds it: the kernel would go on using
    the old partitions (a partition held open keeps its old size, whatever the new table says).
    """
    settle(runner, timeout)
    result = run_retrying_busy(runner, ['partx', '--update', disk], disk, check=False)
    if result.rc != 0:
        # partx refuses a disk without partitions, and cannot change a partition that is open;
        # blockdev works for an unused disk and says EBUSY for one that is not.
        args = ['blockdev', '--rereadpt', disk]
        result = run_retrying_busy(runner, args, disk, check=False)
        if strict and result.rc != 0 and is_busy(result):
            raise busy_error(args, result, BUSY_ATTEMPTS, disk)
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


WHOLE_DISK_TYPES = ('disk', 'loop')
TYPE_WORDS = {'part': 'partition', 'lvm': 'logical volume', 'crypt': 'dm-crypt device', 'dm': 'device-mapper device',
              'rom': 'optical drive'}


def whole_disk_problem(devices, path):
    """Why ``path`` is not a whole disk (a partition, an md array, a logical volume...), or None (pure)."""
    disk = real_device(path)
    found = [d for d in devices if d.get('path') == disk]
    if not found:
        return '%s is not a block device' % path
    kind = found[0].get('type') or 'unknown device'
    if kind in WHOLE_DISK_TYPES and not found[0].get('pkname'):
        return None
    return '%s is a %s' % (path, TYPE_WORDS.get(kind, kind))


def require_whole_disk(runner, path, purpose):
    """Raise ByolError unless ``path`` is a whole disk (or a loop device): ``purpose`` says why it must be one."""
    disk = real_device(path)
    problem = whole_disk_problem(lsblk(runner, [disk]) if os.path.exists(disk) else [], path)
    if problem:
        raise ByolError('%s; give the whole disk (%s)' % (problem, purpose))
    return disk


def parse_losetup(text):
    """``losetup --list --json --output NAME,BACK-FILE,BACK-MAJ:MIN`` -> list of dicts name, back_file, back_majmin."""
    data = json.loads(text or '{}')
    out = []
    for row in data.get('loopdevices') or []:
        out.append({'name': row.get('name'), 'back_file': row.get('back-file'),
                    'back_majmin': (row.get('back-maj:min') or '').strip() or None})
    return out


def loop_devices(runner):
    """Loop devices with their backing file and the device that file lives on (``losetup``; [] without it)."""
    if not runner.which('losetup', required=False):
        return []
    res = runner.run(['losetup', '--list', '--json', '--output', 'NAME,BACK-FILE,BACK-MAJ:MIN'], check=False)
    if res.rc != 0:
        return []
    try:
        return parse_losetup(res.stdout)
    except ValueError:
        return []


def stacked_on(devices, disk):
    """``disk``'s own lsblk entry and every device stacked on it (partitions, md, dm...), from the flat list."""
    name = os.path.basename(real_device(disk))
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
    return stacked


def disk_in_use_reasons(devices, disk, swaps=(), root_source=None, allowed_mount_prefix=None, loops=()):
    """Reasons why ``disk`` must not be wiped (empty list if it is free).

    Pure: ``devices`` from :func:`parse_lsblk` (whole system), ``swaps`` from
    :func:`parse_swaps`, ``root_source`` the device mounted on ``/``, ``loops`` from
    :func:`parse_losetup`. Mounts under ``allowed_mount_prefix`` (our own ``mount_root``) do not
    count. A loop device backed by a file that lives on the disk (or on a device built on it) is
    a holder too: lsblk does not show it under the disk.
    """
    name = os.path.basename(real_device(disk))
    reasons = []
    if root_source and name in root_disks(devices, root_source):
        reasons.append('%s holds the running system\'s root filesystem (%s)' % (disk, root_source))
    # every device stacked on the disk (partitions, md, dm, ...)
    stacked = stacked_on(devices, disk)
    on_disk = dict((d.get('maj:min'), d) for d in stacked if d.get('maj:min'))
    for loop in loops:
        holder = on_disk.get(loop.get('back_majmin'))
        if holder is not None and os.path.basename(loop.get('name') or '') != name:
            reasons.append('%s is a loop device backed by %s, a file on %s: detach it (losetup --detach %s)'
                           % (loop.get('name'), loop.get('back_file'), holder.get('path') or holder.get('name'),
                              loop.get('name')))
    for d in stacked:
        if d.get('type') in ('crypt', 'dm') and d.get('pkname'):
            reasons.append('%s (a %s) is built on %s: close it first (cryptsetup close, dmsetup remove)'
                           % (d.get('path') or d.get('name'), TYPE_WORDS[d['type']], disk))
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
    loops = loop_devices(runner)
    problems = []
    for disk in disks:
        for reason in disk_in_use_reasons(devices, disk, swaps=swaps, root_source=rsrc,
                                          allowed_mount_prefix=allowed_mount_prefix, loops=loops):
            problems.append(reason)
    if problems:
        raise ByolError('Refusing to touch disk(s) that are in use: %s. Unmount them, or choose other disks.'
                        % '; '.join(problems), in_use=problems)


def write_sectors(disk):
    """Sectors written to ``disk`` since boot (``/sys/block/<disk>/stat``, field 7)."""
    name = os.path.basename(real_device(disk))
    with open('/sys/block/%s/stat' % name) as f:
        return int(f.read().split()[6])


# ----------------------------------------------------------------------------------------------
# reading the machine's state: partition tables, signatures, boot mode, memory, free space.
# Nothing else in the collection runs ``sfdisk --json`` or ``blkid -p`` or reads these files
# (tests/unit/plugins/module_utils/test_blockread.py greps plugins/ for them).
# ----------------------------------------------------------------------------------------------

NO_TABLE = 'does not contain a recognized partition table'
EFI_SYS = '/sys/firmware/efi'
EFIVARS = EFI_SYS + '/efivars'
MEMINFO = '/proc/meminfo'


def parse_sfdisk(text):
    """``sfdisk --json`` output -> its ``partitiontable`` dict as sfdisk wrote it, or None (no output)."""
    if not (text or '').strip():
        return None
    return json.loads(text).get('partitiontable')


def table_summary(table):
    """A :func:`parse_sfdisk` table (or None) -> dict ``label``, ``sectorsize``, ``partitions`` (``node``,
    ``start``, ``size`` in sectors, ``type``)."""
    table = table or {}
    parts = []
    for p in table.get('partitions') or []:
        parts.append(dict(node=p.get('node'), start=int(p.get('start', 0)), size=int(p.get('size', 0)),
                          type=p.get('type')))
    return dict(label=table.get('label'), sectorsize=int(table.get('sectorsize') or 512), partitions=parts)


def read_table(runner, disk, strict=False):
    """The partition table of ``disk`` (a device or an image file) from ``sfdisk --json`` (see
    :func:`parse_sfdisk`), or None when it has none. With ``strict``, an sfdisk failure other than "no
    partition table" raises ByolError; without, it reads as None."""
    res = runner.run(['sfdisk', '--json', disk], check=False)
    if res.rc != 0:
        if strict and NO_TABLE not in (res.stderr or '') + (res.stdout or ''):
            raise ByolError('Cannot read the partition table of %s: %s' % (disk, (res.stderr or res.stdout).strip()),
                            rc=res.rc, stderr=res.stderr, cmd=res.cmd)
        return None
    return parse_sfdisk(res.stdout)


def probe(runner, device):
    """``blkid -p`` (low-level probe, no cache) of ``device`` as a dict (TYPE, UUID, LABEL...); {} when it
    does not exist or holds no signature blkid knows."""
    if not os.path.exists(device):
        return {}
    res = runner.run(['blkid', '-p', '-o', 'export', device], check=False)
    return parse_export(res.stdout if res.rc == 0 else '')


def booted_uefi(efi_dir=EFI_SYS):
    """True when the running system was booted with UEFI (the kernel shows ``/sys/firmware/efi``)."""
    return os.path.isdir(efi_dir)


def detect_boot_mode(efi_dir=EFI_SYS):
    """``uefi`` or ``legacy``: how the running system was booted."""
    return 'uefi' if booted_uefi(efi_dir) else 'legacy'


def parse_meminfo(text):
    """``/proc/meminfo`` -> dict name -> bytes (``kB`` values times 1024)."""
    out = {}
    for line in (text or '').splitlines():
        parts = line.replace(':', ' ').split()
        if len(parts) >= 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1]) * (1024 if len(parts) > 2 and parts[2] == 'kB' else 1)
    return out


def memory_summary(info):
    """:func:`parse_meminfo` -> dict ``total``, ``available`` in bytes (MemFree where MemAvailable is missing)."""
    return {'total': info.get('MemTotal', 0), 'available': info.get('MemAvailable', info.get('MemFree', 0))}


def meminfo(path=MEMINFO):
    """:func:`parse_meminfo` of the running system (raises OSError when it cannot be read)."""
    with open(path) as f:
        return parse_meminfo(f.read())


def free_bytes(path):
    """Bytes available to root on the filesystem of ``path`` (``statvfs``), or None when ``path`` does not
    exist."""
    try:
        st = os.statvfs(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    return st.f_bavail * st.f_frsize


def free_bytes_near(path):
    """:func:`free_bytes` of ``path`` or, when it does not exist yet, of its nearest existing parent; None when
    that cannot be read."""
    while path and not os.path.exists(path):
        parent = os.path.dirname(path.rstrip('/'))
        if parent == path:
            break
        path = parent
    try:
        return free_bytes(path or '/')
    except OSError:
        return None


def used_bytes(path):
    """Bytes in use on the filesystem of ``path`` (``statvfs``)."""
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize

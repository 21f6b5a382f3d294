# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""EFI boot entries: efibootmgr parsing and boot-order planning (pure), ESP and MBR checks.

Do not use this from other collections or standalone plugins/modules!

Everything above the ``I/O below`` line is pure (text in, data out) and unit-tested with real
``efibootmgr`` outputs. The functions below it take the module's :class:`CommandRunner`.
"""

from __future__ import annotations

import os
import re
import tempfile

from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError, ValidationError

ESP_GPT_TYPE = 'c12a7328-f81f-11d2-ba4b-00a0c93ec93b'
ESP_MBR_TYPES = ('ef',)
BIOS_BOOT_GPT_TYPE = '21686148-6449-6e6f-744e-656564454649'

_HEX4 = re.compile(r'^[0-9A-Fa-f]{4}$')
_ENTRY = re.compile(r'^Boot([0-9A-Fa-f]{4})(\*?)\s?(.*)$')
_HEADER = re.compile(r'^(BootCurrent|BootNext|Timeout|BootOrder)\s*:\s*(.*)$')
# Device path node types that start a path in efibootmgr output (for lines without a tab).
_NODE_NAMES = ('PciRoot', 'Pci', 'HD', 'VenHw', 'VenMsg', 'VenMedia', 'Fv', 'FvVol', 'FvFile', 'BBS', 'MAC',
               'Acpi', 'AcpiEx', 'IPv4', 'IPv6', 'Uri', 'File', 'USB', 'UsbClass', 'Sata', 'NVMe', 'Scsi', 'Ata',
               'CDROM', 'MemoryMapped', 'Uart', 'Msg', 'Hw', 'Media', 'SAS', 'SasEx', 'Unit', 'eMMC', 'SD')
_PATH_START = re.compile(r'(?:\t|\s{2,}|\s)(?=(?:%s)\()' % '|'.join(sorted(_NODE_NAMES, key=len, reverse=True)))
_HD = re.compile(r'HD\((\d+),(GPT|MBR|SIG)?,?([0-9A-Fa-fx-]+)(?:,(0x[0-9A-Fa-f]+|\d+),(0x[0-9A-Fa-f]+|\d+))?\)', re.I)
_FILE_V17 = re.compile(r'(?:^|/)File\(([^)]*)\)')
_NET_LABEL = re.compile(r'(PXE|HTTP|\bIPv?[46]\b|\bNetwork\b|\bNIC\b|\bLAN\b|Ethernet|iSCSI)', re.I)


def _nodes(path):
    """Split a device path text into its top-level nodes (``/`` outside parentheses)."""
    nodes = []
    depth = 0
    cur = []
    for ch in path:
        if ch == '(':
            depth += 1
        elif ch == ')':
            depth = max(depth - 1, 0)
        if ch == '/' and depth == 0:
            nodes.append(''.join(cur))
            cur = []
            continue
        cur.append(ch)
    nodes.append(''.join(cur))
    return [n for n in nodes if n]


def clean_device_path(text):
    """The device path part of efibootmgr's text, without the optional data it may append.

    efibootmgr 17 prints ``HD(...)/File(\\EFI\\x.efi)`` followed, for some entries, by the
    optional data as raw text (``RC``, ``WINDOWS.....``, UCS-2 garbage); efibootmgr 18 prints
    ``HD(...)/\\EFI\\x.efi``. Only well-formed nodes are kept; a file node ends the path.
    """
    out = []
    for node in _nodes(text.strip()):
        m = re.match(r'^([A-Za-z][A-Za-z0-9]*\((?:[^()]|\([^()]*\))*\))', node)
        if m:
            out.append(m.group(1))
            if m.group(1) != node or m.group(1).startswith('File('):
                break
            continue
        if node.startswith('\\'):
            f = re.match(r'^(\\[\x21-\x7e]*?\.efi)', node, re.I) or re.match(r'^(\\[\x21-\x7e]*)', node)
            out.append(f.group(1))
        break
    return '/'.join(out)


def classify_network(label, path):
    """``pxe4``, ``pxe6``, ``http4``, ``http6``, ``network`` (label only) or None."""
    p = (path or '').lower()
    if 'mac(' in p or 'ipv4(' in p or 'ipv6(' in p or 'uri(' in p:
        v6 = 'ipv6(' in p
        if 'uri(' in p:
            return 'http6' if v6 else 'http4'
        return 'pxe6' if v6 else 'pxe4'
    if p.startswith('hd(') or '/hd(' in p or 'file(' in p or '\\' in p:
        return None
    if label and _NET_LABEL.search(label):
        lab = label.lower()
        v6 = re.search(r'(ip|v)6', lab) is not None
        if 'http' in lab:
            return 'http6' if v6 else 'http4'
        if v6:
            return 'pxe6'
        return 'pxe4' if ('pxe' in lab or re.search(r'(ip|v)4', lab)) else 'network'
    if p.startswith('bbs(') and 'network' in p:
        return 'network'
    return None


def parse_hd(path):
    """The HD() node of a device path as a dict, or None."""
    m = _HD.search(path or '')
    if not m:
        return None
    scheme = (m.group(2) or '').upper()
    sig = m.group(3)
    res = {'number': int(m.group(1)), 'scheme': 'GPT' if scheme == 'GPT' else ('MBR' if scheme in ('MBR', 'SIG') else scheme)}
    if res['scheme'] == 'GPT':
        res['guid'] = sig.lower()
    else:
        res['signature'] = sig.lower()
    if m.group(4):
        res['start'] = int(m.group(4), 0)
        res['size'] = int(m.group(5), 0)
    return res


def parse_file(path):
    """The loader path (``\\EFI\\debian\\grubx64.efi``) of a device path, or None."""
    if not path:
        return None
    m = _FILE_V17.search(path)
    if m:
        return m.group(1)
    for node in _nodes(path):
        if node.startswith('\\'):
            return node
    return None


def parse_efibootmgr(text):
    """Parse ``efibootmgr`` or ``efibootmgr -v`` output (versions 16 to 18).

    Returns ``{'boot_current', 'boot_next', 'timeout', 'boot_order': [...], 'entries': [...]}``;
    each entry has ``num`` (upper-case hex), ``active``, ``label``, ``path`` (device path text or
    None), ``hd`` (see :func:`parse_hd`), ``file`` and ``network``.
    """
    result = {'boot_current': None, 'boot_next': None, 'timeout': None, 'boot_order': [], 'entries': []}
    for raw in (text or '').splitlines():
        line = raw.rstrip('\r\n')
        if not line.strip():
            continue
        if line[:1].isspace():
            continue  # efibootmgr 18 -v: indented "dp:" / "data:" hex dumps
        m = _HEADER.match(line)
        if m:
            key, value = m.group(1), m.group(2).strip()
            if key == 'BootOrder':
                result['boot_order'] = [v.strip().upper() for v in value.split(',') if _HEX4.match(v.strip())]
            elif key == 'Timeout':
                t = re.match(r'(\d+)', value)
                result['timeout'] = int(t.group(1)) if t else None
            elif key == 'BootCurrent':
                result['boot_current'] = value.upper() if _HEX4.match(value) else None
            else:
                result['boot_next'] = value.upper() if _HEX4.match(value) else None
            continue
        m = _ENTRY.match(line)
        if not m:
            continue
        rest = m.group(3)
        if '\t' in rest:
            label, path = rest.split('\t', 1)
        else:
            split = _PATH_START.search(rest)
            if split:
                label, path = rest[:split.start()], rest[split.end():]
            else:
                label, path = rest, ''
        path = clean_device_path(path) if path.strip() else None
        label = label.strip()
        result['entries'].append({
            'num': m.group(1).upper(),
            'active': m.group(2) == '*',
            'label': label,
            'path': path or None,
            'hd': parse_hd(path),
            'file': parse_file(path),
            'network': classify_network(label, path),
        })
    return result


def normalize_loader(path):
    """``/efi/debian/grubx64.efi`` or ``EFI\\debian\\grubx64.efi`` -> ``\\efi\\debian\\grubx64.efi``.

    Case is kept (FAT and the firmware ignore it; comparisons use :func:`loader_key`).
    """
    if not path or not path.strip():
        raise ValidationError('loader (efiBootloaderPath) must not be empty, e.g. \\EFI\\debian\\grubx64.efi.')
    p = path.strip().replace('/', '\\')
    parts = [c for c in p.split('\\') if c]
    if not parts or any(c in ('.', '..') for c in parts):
        raise ValidationError('loader (efiBootloaderPath) %r is not a file path on the ESP.' % path)
    for c in parts:
        if re.search(r'[\x00-\x1f"*:<>?|]', c):
            raise ValidationError('loader (efiBootloaderPath) %r contains characters FAT does not allow.' % path)
    return '\\' + '\\'.join(parts)


def loader_key(path):
    return normalize_loader(path).lower() if path else None


def loader_mtools_path(path):
    """The loader as an mtools path: ``::/EFI/debian/grubx64.efi``."""
    return '::' + normalize_loader(path).replace('\\', '/')


def entry_label(label, disk, count):
    """The NVRAM label for ``disk``: the label itself for one disk, ``label (sda)`` for several."""
    if count <= 1:
        return label
    return '%s (%s)' % (label, os.path.basename(disk))


def is_our_label(entry_label_text, label):
    return entry_label_text == label or (entry_label_text.startswith(label + ' (') and entry_label_text.endswith(')'))


def entry_matches(entry, target):
    """Does NVRAM ``entry`` boot ``target`` (same ESP partition and same loader file)?"""
    hd = entry.get('hd')
    if not hd or not entry.get('file'):
        return False
    try:
        if loader_key(entry['file']) != loader_key(target['loader']):
            return False
    except ValidationError:
        return False
    if target.get('guid'):
        return hd.get('scheme') == 'GPT' and hd.get('guid') == target['guid'].lower()
    if target.get('signature'):
        sig = hd.get('signature', '')
        try:
            same = int(sig, 16) == int(target['signature'], 16)
        except ValueError:
            same = False
        return hd.get('scheme') == 'MBR' and same and hd.get('number') == target.get('number')
    return False


def plan_boot_entries(state, targets, label, policy):
    """Plan NVRAM changes.

    ``state``: :func:`parse_efibootmgr` output. ``targets``: one dict per boot disk, in the wanted
    order, with ``disk``, ``label``, ``loader``, ``number`` and ``guid`` (GPT) or ``signature``
    (MBR). ``label``: the base label (entries carrying it and matching no target are stale).
    ``policy``: ``first``, ``after_network`` or ``none``.

    Returns a dict: ``create`` (targets without an entry), ``delete`` (entry numbers: stale
    entries and duplicates of ours), ``keep`` (disk -> entry number), ``order_before``,
    ``order_after`` (new entries appear as ``new:<disk>``) and ``changed``.
    """
    entries = state.get('entries', [])
    before = list(state.get('boot_order', []))
    plan = {'create': [], 'delete': [], 'keep': {}, 'order_before': before, 'order_after': before,
            'changed': False, 'policy': policy}
    if policy == 'none':
        return plan
    position = dict((num, i) for i, num in enumerate(before))
    used = set()
    ours_in_order = []
    for target in targets:
        matches = [e for e in entries if entry_matches(e, target) and e['num'] not in used]
        if matches:
            matches.sort(key=lambda e: (e['label'] != target['label'], not e['active'], position.get(e['num'], 1 << 20),
                                        e['num']))
            keep = matches[0]
            used.add(keep['num'])
            plan['keep'][target['disk']] = keep['num']
            ours_in_order.append(keep['num'])
            for dup in matches[1:]:
                if is_our_label(dup['label'], label) and dup['num'] not in plan['delete']:
                    plan['delete'].append(dup['num'])
                    used.add(dup['num'])
        else:
            plan['create'].append(target)
            ours_in_order.append('new:%s' % target['disk'])
    for e in entries:
        if e['num'] in used or e['num'] in plan['delete']:
            continue
        if is_our_label(e['label'], label):
            plan['delete'].append(e['num'])
    rest = [n for n in before if n not in ours_in_order and n not in plan['delete']]
    if policy == 'after_network':
        net = set(e['num'] for e in entries if e['network'])
        head = [n for n in rest if n in net]
        tail_ = [n for n in rest if n not in net]
        after = head + ours_in_order + tail_
    else:
        after = ours_in_order + rest
    plan['order_after'] = after
    plan['changed'] = bool(plan['create'] or plan['delete'] or after != before)
    return plan


def describe_order(state, order, new_labels=None):
    """Human-readable BootOrder for --diff: one ``Boot0001 label`` line per entry."""
    labels = dict((e['num'], e['label']) for e in state.get('entries', []))
    labels.update(new_labels or {})
    lines = ['BootOrder: %s' % ','.join(order)]
    for num in order:
        lines.append('%s %s' % (num if num.startswith('new:') else 'Boot' + num, labels.get(num, '?')))
    return '\n'.join(lines) + '\n'


def find_esps(table, disk):
    """ESP partitions of ``disk`` from its partition table (:func:`._blockdev.read_table`).

    Returns dicts with ``node``, ``number``, ``start``, ``size``, ``scheme`` and ``guid`` (GPT)
    or ``signature`` (MBR).
    """
    table = table or {}
    label = (table.get('label') or '').lower()
    found = []
    for part in table.get('partitions') or []:
        ptype = str(part.get('type', '')).lower()
        node = part.get('node', '')
        m = re.search(r'(\d+)$', node)
        if not m:
            continue
        number = int(m.group(1))
        if label == 'gpt' and ptype == ESP_GPT_TYPE:
            found.append({'node': node, 'number': number, 'start': part.get('start'), 'size': part.get('size'),
                          'scheme': 'GPT', 'guid': (part.get('uuid') or '').lower(), 'disk': disk})
        elif label == 'dos' and ptype in ESP_MBR_TYPES:
            found.append({'node': node, 'number': number, 'start': part.get('start'), 'size': part.get('size'),
                          'scheme': 'MBR', 'signature': (table.get('id') or '').lower(), 'disk': disk})
    return found


def find_bios_boot(table):
    """BIOS boot partitions (GPT type 21686148-...) from a partition table (:func:`._blockdev.read_table`)."""
    table = table or {}
    return [dict(p) for p in table.get('partitions') or []
            if str(p.get('type', '')).lower() == BIOS_BOOT_GPT_TYPE]


def inspect_mbr(sector):
    """What the first 512 bytes of a disk say about legacy boot code."""
    code = sector[:440]
    res = {
        'boot_code': any(b != 0 for b in bytearray(code)),
        'signature_55aa': len(sector) >= 512 and bytearray(sector[510:512]) == bytearray(b'\x55\xaa'),
        'loader': None,
    }
    if b'GRUB' in code:
        res['loader'] = 'grub'
    elif b'SYSLINUX' in code.upper() or b'ISOLINUX' in code.upper():
        res['loader'] = 'syslinux'
    elif res['boot_code']:
        res['loader'] = 'unknown'
    return res


def parse_mdir_size(output):
    """Size in bytes from ``mdir`` output for one file, or None."""
    for line in (output or '').splitlines():
        m = re.match(r'^\S.*?\s+(\d+)\s+\d{4}-\d{2}-\d{2}\s', line)
        if m:
            return int(m.group(1))
    return None


# --------------------------------------------------------------------------- I/O below

MTOOLS_ENV = {'MTOOLS_SKIP_CHECK': '1', 'MTOOLS_NO_VFAT': '0'}


def read_state(runner):
    return parse_efibootmgr(runner.run(['efibootmgr', '-v']).stdout)


def check_loader(runner, esp_node, loader):
    """Check that ``loader`` exists on the FAT filesystem ``esp_node`` (read with mtools, no mount).

    mtools looks names up case-insensitively, like FAT and the firmware. Returns a dict with
    ``exists``, ``size`` and ``pe`` (the file starts with ``MZ``).
    """
    path = loader_mtools_path(loader)
    # The ESP may be mounted (the tree's /boot/efi, written by the hook a moment ago): its files can still be in
    # the page cache, and the device's own cache can hold blocks read before they changed. mtools reads the
    # device, so the filesystems are synced and the device's buffers dropped first (the lab saw a loader that
    # grub-install had just written read back as "not a PE/EFI file").
    os.sync()
    runner.run(['blockdev', '--flushbufs', esp_node], check=False)
    res = runner.run(['mdir', '-i', esp_node, path], check=False, env=MTOOLS_ENV)
    result = {'esp': esp_node, 'loader': normalize_loader(loader), 'exists': res.rc == 0, 'size': None, 'pe': None}
    if res.rc != 0:
        result['error'] = (res.stderr or res.stdout or '').strip()
        return result
    result['size'] = parse_mdir_size(res.stdout)
    tmpdir = tempfile.mkdtemp(prefix='byol-loader-')
    try:
        dest = os.path.join(tmpdir, 'loader.efi')
        cp = runner.run(['mcopy', '-n', '-i', esp_node, path, dest], check=False, env=MTOOLS_ENV)
        if cp.rc == 0 and os.path.exists(dest):
            with open(dest, 'rb') as f:
                result['pe'] = f.read(2) == b'MZ'
            if result['size'] is None:
                result['size'] = os.path.getsize(dest)
    finally:
        for name in os.listdir(tmpdir):
            os.unlink(os.path.join(tmpdir, name))
        os.rmdir(tmpdir)
    return result


def read_first_sector(disk, offset=0, length=512):
    fd = os.open(disk, os.O_RDONLY)
    try:
        os.lseek(fd, offset, os.SEEK_SET)
        return os.read(fd, length)
    finally:
        os.close(fd)


def apply_plan(runner, plan, targets):
    """Carry out ``plan`` with efibootmgr; returns (created {disk: num}, final state)."""
    created = {}
    for num in plan['delete']:
        runner.run(['efibootmgr', '--bootnum', num, '--delete-bootnum'])
    for target in plan['create']:
        before = set(e['num'] for e in read_state(runner)['entries'])
        runner.run(['efibootmgr', '--create', '--disk', target['disk'], '--part', str(target['number']),
                    '--loader', normalize_loader(target['loader']), '--label', target['label']])
        state = read_state(runner)
        new = [e for e in state['entries'] if e['num'] not in before and entry_matches(e, target)]
        if not new:
            raise ByolError('efibootmgr did not create a boot entry for %s (partition %s, %s).'
                            % (target['disk'], target['number'], target['loader']))
        created[target['disk']] = new[0]['num']
    order = [created.get(n[4:], n) if n.startswith('new:') else n for n in plan['order_after']]
    state = read_state(runner)
    existing = set(e['num'] for e in state['entries'])
    order = [n for n in order if n in existing]
    if order != state['boot_order']:
        runner.run(['efibootmgr', '--bootorder', ','.join(order)])
        state = read_state(runner)
    if state['boot_order'][:len(order)] != order:
        raise ByolError('The firmware did not keep the BootOrder that was set: wanted %s, got %s.'
                        % (','.join(order), ','.join(state['boot_order'])))
    return created, state

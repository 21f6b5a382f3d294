# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Which disks may be installed on: classification, root device hints, foreign signatures (pure).

Do not use this from other collections or standalone plugins/modules!

Everything here takes data (the flat list of :func:`_blockdev.parse_lsblk` of
``lsblk --json --bytes --output-all``, ``/dev/disk/by-id`` and ``/dev/disk/by-path`` links, the
first sector of each disk, the VG of each LVM PV) and returns data; no subprocess, no file access.

1. :func:`classify` lists every whole device of the server (disks, loop devices, optical drives,
   multipath devices) with the properties root device hints match on, and says for each whether
   it is a *candidate* (a disk an installation may ever be written to) and why not.
   Never candidates, whatever the disk groups or the hints say: zram and RAM disks, optical
   drives, removable media, BMC virtual media (virtual CD/floppy/disk of AMI, ATEN/Supermicro,
   iDRAC, iLO, Cisco CIMC and OpenBMC's USB gadget), read-only devices, devices without a medium,
   loop devices unless asked for, the disks of the running (rescue) system, and the paths of a
   multipath disk (the multipath device is the disk; two paths to one WWN without a multipath
   device are refused).
2. :func:`parse_hints` and :func:`match_hints`: root device hints as ironic-python-agent has
   them (``size`` in GiB, ``model``, ``vendor``, ``serial``, ``wwn``, ``wwn_with_extension``,
   ``wwn_vendor_extension``, ``name``, ``rotational``, ``hctl``, ``by_path``, ``tran``) with
   oslo's operators (``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``=`` meaning ``>=``,
   ``s==`` ... ``s>=``, ``<in>``, ``<or>``, ``<range-in>``). Strings compare case-insensitively.
3. :func:`signatures`: what a disk carries that an old installation left (md superblocks, LVM
   PVs, ZFS pool labels, ESPs, BIOS boot partitions, config drives, boot code), and
   :func:`name_clashes` between those and the names the new installation creates.
"""

from __future__ import annotations

import json
import os
import re

from ansible_collections.baremetal.byol.plugins.module_utils import _blockdev
from ansible_collections.baremetal.byol.plugins.module_utils import _layout
from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError, ValidationError

GIB = 1024 ** 3

# ---------------------------------------------------------------------------------------- disks

BY_ID_PREFERENCE = ('nvme-', 'ata-', 'scsi-', 'virtio-', 'usb-', 'mmc-')
TYPE_RANK = {'NVMe': 0, 'SSD': 1, 'HDD': 2}

# Models (and vendor + model) of the virtual media BMCs present to the host over USB. Sources:
# AMI MegaRAC ("AMI Virtual CDROM0", "Virtual Floppy0", "Virtual HDisk0"), ATEN/Supermicro
# ("ATEN Virtual CDROM", "Virtual Floppy", "Virtual Disk"), Dell iDRAC ("iDRAC Virtual CD",
# "Virtual Floppy", "LCDRIVE", vFlash), HPE iLO ("Virtual DVD-ROM", "Virtual USB Key"), Cisco
# CIMC ("vKVM-Mapped vDVD/vHDD/vFDD", "CIMC-Mapped ..."), and the Linux USB mass-storage gadget
# that iDRAC 9, OpenBMC and others use ("Linux File-Stor Gadget", "File-CD Gadget").
BMC_MODEL_RE = re.compile(
    r'virtual[ _-]?(cd|cdrom|dvd|dvd-rom|floppy|fdd|hdisk|hdd|usb[ _-]?key|media|removable)\d*\b'
    r'|file-(stor|cd)[ _]gadget|vkvm-mapped|cimc-mapped|\blcdrive\b|\bvflash\b', re.I)
# "Virtual Disk" alone is also the model of real VMware and Hyper-V disks: only with a BMC's vendor.
BMC_VENDOR_RE = re.compile(r'^(ami|aten|idrac|hp ?ilo|hpe ?ilo|ilo|cisco|avocent|ipmi|openbmc|megarac)\b', re.I)
ESP_TYPES = ('c12a7328-f81f-11d2-ba4b-00a0c93ec93b', '0xef', 'ef')
BIOS_BOOT_TYPE = '21686148-6449-6e6f-744e-656564454649'
# where live rescue systems mount the medium they booted from
RESCUE_MEDIA_MOUNTS = ('/run/live/medium', '/lib/live/mount/medium', '/run/initramfs/live', '/run/archiso/bootmnt',
                       '/cdrom', '/media/cdrom')
CONFIG_DRIVE_LABEL = 'config-2'


def natural_key(name):
    """Sort key: digits compare as numbers (``nvme2n1`` < ``nvme10n1``)."""
    return [int(part) if part.isdigit() else part for part in re.split(r'(\d+)', name or '')]


def truthy(value):
    if isinstance(value, str):
        return value.strip().lower() in ('1', 'true', 'yes', 'on')
    return bool(value)


def _text(value):
    value = (value if isinstance(value, str) else '' if value is None else str(value)).strip()
    return value or None


def disk_type(dev):
    """``NVMe``, ``SSD`` or ``HDD`` for one lsblk entry."""
    name = dev.get('kname') or dev.get('name') or ''
    if (dev.get('tran') or '').lower() == 'nvme' or name.startswith('nvme'):
        return 'NVMe'
    return 'HDD' if truthy(dev.get('rota')) else 'SSD'


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


def split_wwn(wwn):
    """lsblk's WWN (udev's ID_WWN_WITH_EXTENSION) -> (wwn, vendor extension or None)."""
    wwn = _text(wwn)
    if wwn and re.match(r'^0x[0-9a-fA-F]{17,}$', wwn):
        return wwn[:18], '0x' + wwn[18:]
    return wwn, None


def is_bmc_virtual_media(vendor, model):
    vendor = (vendor or '').strip()
    model = (model or '').strip()
    if BMC_MODEL_RE.search(model) or BMC_MODEL_RE.search(vendor + ' ' + model):
        return True
    return bool(BMC_VENDOR_RE.match(vendor) and re.search(r'virtual', model, re.I))


# The arguments of the disk checks that byol_preflight and byol_wipe_disks share (documented by the doc fragment
# baremetal.byol.disk_safety): whether loop devices count as disks, and under which directory mounts are the
# installer's own (not "in use").
DISK_SAFETY_ARGUMENT_SPEC = dict(
    include_loop=dict(type='bool', default=False),
    mount_root=dict(type='path', default='/tmp/a'),
)


def _key(dev):
    return dev.get('kname') or dev.get('name')


def _record(dev, by_id, by_path):
    name = _key(dev)
    wwn, vendor_ext = split_wwn(dev.get('wwn'))
    links = sorted(by_id.get(name, []))
    log_sec = dev.get('log-sec')
    phy_sec = dev.get('phy-sec')
    return {
        'name': name,
        'path': dev.get('path') or '/dev/' + name,
        'kind': dev.get('type'),
        'by_id': pick_by_id(links),
        'by_id_links': links,
        'by_path': sorted(by_path.get(name, [])),
        'model': _text(dev.get('model')),
        'vendor': _text(dev.get('vendor')),
        'serial': _text(dev.get('serial')),
        'wwn': wwn,
        'wwn_with_extension': _text(dev.get('wwn')),
        'wwn_vendor_extension': vendor_ext,
        'hctl': _text(dev.get('hctl')),
        'size': int(dev.get('size') or 0),
        'type': disk_type(dev),
        'transport': _text(dev.get('tran')),
        'rotational': truthy(dev.get('rota')),
        'removable': truthy(dev.get('rm')),
        'hotplug': truthy(dev.get('hotplug')),
        'read_only': truthy(dev.get('ro')),
        'logical_sector_size': int(log_sec) if log_sec else None,
        'physical_sector_size': int(phy_sec) if phy_sec else None,
        'candidate': True,
        'reasons': [],
        'signatures': [],
    }


def classify(devices, by_id=None, by_path=None, system_disks=(), include_loop=False, usb_allowed=False):
    """Every whole device of the server, each with ``candidate`` and the ``reasons`` it is not one.

    ``devices``: flat :func:`_blockdev.parse_lsblk` list (``--output-all``). ``by_id``/``by_path``:
    kernel name -> list of ``/dev/disk/by-id`` / ``/dev/disk/by-path`` links. ``system_disks``: kernel
    names of the disks the running system's root is on. ``usb_allowed``: USB-attached fixed disks
    may be candidates (only when the root device hints ask for ``tran: usb``).
    Returned in natural name order; multipath devices stand for their paths.
    """
    by_id = by_id or {}
    by_path = by_path or {}
    records = []
    by_name = {}
    mpaths = {}
    for dev in devices:
        kind = dev.get('type')
        if kind == 'mpath':
            entry = mpaths.setdefault(_key(dev), {'dev': dev, 'paths': []})
            if dev.get('pkname') and dev['pkname'] not in entry['paths']:
                entry['paths'].append(dev['pkname'])
            continue
        if dev.get('pkname') or kind not in ('disk', 'loop', 'rom'):
            continue
        if _key(dev) in by_name:
            continue
        rec = _record(dev, by_id, by_path)
        by_name[rec['name']] = rec
        records.append(rec)

    def refuse(rec, why):
        rec['candidate'] = False
        if why not in rec['reasons']:
            rec['reasons'].append(why)

    for rec in records:
        name = rec['name']
        if name.startswith('zram'):
            refuse(rec, 'zram device (compressed RAM)')
        elif re.match(r'^ram\d', name):
            refuse(rec, 'RAM disk')
        elif re.match(r'^fd\d', name):
            refuse(rec, 'floppy drive')
        elif re.match(r'^nbd\d', name):
            refuse(rec, 'network block device (nbd)')
        if rec['kind'] == 'rom' or re.match(r'^sr\d', name):
            refuse(rec, 'optical drive (type rom)')
        if rec['kind'] == 'loop' and not include_loop:
            refuse(rec, 'loop device (only with include_loop)')
        if rec['read_only']:
            refuse(rec, 'read-only device')
        if rec['removable']:
            refuse(rec, 'removable media')
        if is_bmc_virtual_media(rec['vendor'], rec['model']):
            refuse(rec, 'BMC virtual media (%s)' % ' '.join(x for x in (rec['vendor'], rec['model']) if x))
        if (rec['transport'] or '').lower() == 'usb' and not usb_allowed:
            refuse(rec, 'USB-attached disk (the root device hint tran: usb chooses one)')
        if not rec['size']:
            refuse(rec, 'no medium (size 0)')
        if name in system_disks:
            refuse(rec, "holds the running (rescue) system's root filesystem")
        for dev in [d for d in devices if _key(d) == name] + _blockdev.stacked(devices, name):
            for mp in dev.get('mountpoints') or []:
                if mp in RESCUE_MEDIA_MOUNTS:
                    refuse(rec, "holds the rescue system's boot medium (mounted on %s)" % mp)

    # multipath: the dm device is the disk, its paths are not
    for kname, entry in sorted(mpaths.items()):
        dev = entry['dev']
        paths = [by_name[p] for p in entry['paths'] if p in by_name]
        first = paths[0] if paths else {}
        rec = _record(dev, by_id, by_path)
        rec['name'] = kname
        rec['path'] = dev.get('path') or '/dev/mapper/%s' % (dev.get('name') or kname)
        for field in ('model', 'vendor', 'serial', 'wwn', 'wwn_with_extension', 'wwn_vendor_extension', 'transport',
                      'rotational', 'type', 'logical_sector_size', 'physical_sector_size'):
            if not rec.get(field) and first.get(field) is not None:
                rec[field] = first[field]
        rec['type'] = first.get('type', rec['type'])
        rec['rotational'] = first.get('rotational', rec['rotational'])
        rec['multipath_paths'] = ['/dev/' + p for p in entry['paths']]
        for path in paths:
            path['multipath_device'] = rec['path']
            refuse(path, 'path of multipath device %s (%s): the multipath device is the disk' % (dev.get('name'), rec['path']))
            for why in path['reasons']:
                if not why.startswith('path of multipath') and why not in rec['reasons']:
                    refuse(rec, why)
        records.append(rec)
    # two paths to one WWN and no multipath device: which one to write is undecidable
    in_mpath = set(p for entry in mpaths.values() for p in entry['paths'])
    by_wwn = {}
    for rec in records:
        wwn = (rec['wwn_with_extension'] or '').lower()
        if rec['kind'] in ('disk',) and wwn and rec['name'] not in in_mpath and not re.match(r'^(0x)?0+$', wwn):
            by_wwn.setdefault(wwn, []).append(rec)
    for wwn, same in by_wwn.items():
        if len(same) > 1:
            names = [r['path'] for r in same]
            for rec in same:
                refuse(rec, 'same WWN %s as %s: two paths to one disk and no multipath device (start multipathd so '
                            'that the multipath device is the disk, or disconnect the other path)'
                       % (rec['wwn_with_extension'], ', '.join(n for n in names if n != rec['path'])))
    return sorted(records, key=lambda r: natural_key(r['name']))


def persistent(rec):
    """Whether the device is still there after a reboot (not a loop device, zram, RAM disk or nbd)."""
    return rec['kind'] != 'loop' and not re.match(r'^(zram|ram|nbd)\d', rec['name'])


def group_candidates(records):
    """Disk groups of the candidates: ``[{'id', 'type', 'size', 'count', 'disks': [paths]}]``.

    Disks of the same type (NVMe, SSD, HDD) and the same size form one group. Groups are numbered
    from 1: fastest type first, then the smaller disks, then the group with more disks, then by
    the name of its first disk. Within a group, disks are in natural name order.
    """
    buckets = {}
    for rec in records:
        if rec['candidate']:
            buckets.setdefault((rec['type'], rec['size']), []).append(rec)

    def order(item):
        (kind, size), members = item
        return (TYPE_RANK.get(kind, 9), size, -len(members), natural_key(members[0]['name']))

    groups = []
    for number, ((kind, size), members) in enumerate(sorted(buckets.items(), key=order), start=1):
        members = sorted(members, key=lambda d: natural_key(d['name']))
        groups.append({'id': number, 'type': kind, 'size': size, 'count': len(members),
                       'disks': [d['path'] for d in members]})
    return groups


# ---------------------------------------------------------------------------------------- hints

HINT_TYPES = {
    'size': 'number', 'model': 'str', 'vendor': 'str', 'serial': 'str', 'wwn': 'str', 'wwn_with_extension': 'str',
    'wwn_vendor_extension': 'str', 'name': 'str', 'rotational': 'bool', 'hctl': 'str', 'by_path': 'str', 'tran': 'str',
}
NUMBER_OPS = ('==', '!=', '<=', '<', '>=', '>', '=')
STRING_OPS = ('s==', 's!=', 's<=', 's<', 's>=', 's>')
RANGE_RE = re.compile(r'^([\[(])\s*([0-9.]+)\s+([0-9.]+)\s*([\])])$')
NUMBER_RE = re.compile(r'^\d+(\.\d+)?$')
BOOLS = {'true': True, 'yes': True, 'on': True, '1': True, 'false': False, 'no': False, 'off': False, '0': False}


def _norm(text):
    return re.sub(r'\s+', ' ', str(text).strip().lower())


def _hint_error(name, expression, why):
    raise ValidationError('Root device hint %s: %r %s' % (name, expression, why))


def parse_hint(name, expression):
    """One hint -> ``{'op': operator, 'values': [...]}`` (strings lower-cased, numbers as floats)."""
    kind = HINT_TYPES.get(name)
    if kind == 'bool':
        if isinstance(expression, bool):
            return {'op': '==', 'values': [expression]}
        if isinstance(expression, str) and expression.strip().lower() in BOOLS:
            return {'op': '==', 'values': [BOOLS[expression.strip().lower()]]}
        _hint_error(name, expression, 'is not a boolean (true or false)')
    if isinstance(expression, (list, tuple)):
        # a list is the <or> of its items (several serials, several models)
        if not expression:
            _hint_error(name, expression, 'is an empty list')
        parsed = [parse_hint(name, item) for item in expression]
        if any(p['op'] not in ('s==', '==') for p in parsed):
            _hint_error(name, expression, 'mixes operators into a list: write "<or> a <or> b" or a list of plain values')
        return {'op': '<or>', 'values': [v for p in parsed for v in p['values']]}
    if isinstance(expression, bool):
        _hint_error(name, expression, 'is a boolean, not a %s' % ('number' if kind == 'number' else 'string'))
    if kind == 'number' and isinstance(expression, (int, float)):
        if expression <= 0:
            _hint_error(name, expression, 'must be a positive size in GiB')
        return {'op': '==', 'values': [float(expression)]}
    if not isinstance(expression, str):
        # YAML turns an unquoted serial such as 0123 or 1e5 into a number, silently changing it
        _hint_error(name, expression, 'is not a string: quote the value in YAML')
    text = expression.strip()
    if not text:
        _hint_error(name, expression, 'is empty')
    tokens = text.split()
    op = tokens[0].lower()
    if op == '<all-in>':
        _hint_error(name, expression, 'uses <all-in>, which only compares lists: use <in> or <or>')
    if op == '<or>':
        values = [_norm(v) for v in re.split(r'(?i)<or>', text) if v.strip()]
        if not values:
            _hint_error(name, expression, 'has no value after <or>')
        if kind == 'number':
            values = [_number(name, expression, v) for v in values]
        return {'op': '<or>', 'values': values}
    if op == '<range-in>':
        if kind != 'number':
            _hint_error(name, expression, 'uses <range-in>, which only compares numbers (size)')
        match = RANGE_RE.match(text[len('<range-in>'):].strip())
        if not match:
            _hint_error(name, expression, 'is not "<range-in> [ low high ]" (brackets [ ] include, ( ) exclude)')
        low, high = _number(name, expression, match.group(2)), _number(name, expression, match.group(3))
        if low > high:
            _hint_error(name, expression, 'has its low bound above its high bound')
        return {'op': '<range-in>', 'values': [match.group(1), low, high, match.group(4)]}
    rest = text[len(tokens[0]):].strip()
    if op == '<in>':
        if not rest:
            _hint_error(name, expression, 'has no value after <in>')
        return {'op': '<in>', 'values': [_norm(rest)]}
    if op in NUMBER_OPS or op in STRING_OPS:
        if not rest:
            _hint_error(name, expression, 'has no value after %s' % op)
        if kind == 'number':
            if op in STRING_OPS:
                _hint_error(name, expression, 'compares a size as a string: use ==, !=, <, <=, >, >=')
            return {'op': op, 'values': [_number(name, expression, rest)]}
        if op in NUMBER_OPS:
            _hint_error(name, expression, 'compares a string with a number operator: use s==, s!=, <in> or <or>')
        return {'op': op, 'values': [_norm(rest)]}
    if kind == 'number':
        return {'op': '==', 'values': [_number(name, expression, text)]}
    return {'op': 's==', 'values': [_norm(text)]}


def _number(name, expression, text):
    text = text.strip()
    if not NUMBER_RE.match(text) or float(text) <= 0:
        _hint_error(name, expression, 'is not a positive size in GiB (for example 894, or ">= 800")')
    return float(text)


def parse_hints(hints):
    """Validate root device hints (a dict); ``{}`` or None -> ``{}``. Raises ValidationError."""
    if not hints:
        return {}
    if not isinstance(hints, dict):
        raise ValidationError('Root device hints must be a mapping such as {serial: S64FNE0R1234}, got %r' % (hints,))
    unknown = sorted(set(hints) - set(HINT_TYPES))
    if unknown:
        raise ValidationError('Unknown root device hint(s) %s; valid hints: %s'
                              % (', '.join(unknown), ', '.join(sorted(HINT_TYPES))))
    parsed = {}
    for name in sorted(hints):
        parsed[name] = parse_hint(name, hints[name])
    return parsed


def _disk_values(name, disk):
    """The disk's value(s) for hint ``name`` (a list: a disk may have several by-path links)."""
    if name == 'size':
        return [disk['size'] / float(GIB)]
    if name == 'name':
        return sorted(set([disk['path'], '/dev/' + disk['name']]))
    if name == 'tran':
        return [disk.get('transport')]
    if name == 'by_path':
        return list(disk.get('by_path') or [])
    if name == 'rotational':
        return [disk.get('rotational')]
    return [disk.get(name)]


def _compare(name, op, want, have):
    if HINT_TYPES[name] == 'bool':
        return bool(have) == want[0]
    if HINT_TYPES[name] == 'number':
        whole = float(int(have))  # a 960 GB disk is 894.25 GiB: "size: 894" and "== 894" mean that disk
        if op in ('==', '<or>'):
            return any(whole == w for w in want)
        if op == '!=':
            return whole != want[0]
        if op == '<range-in>':
            lo_ok = have >= want[1] if want[0] == '[' else have > want[1]
            hi_ok = have <= want[2] if want[3] == ']' else have < want[2]
            return lo_ok and hi_ok
        return {'<': have < want[0], '<=': have <= want[0], '>': have > want[0], '>=': have >= want[0],
                '=': have >= want[0]}[op]
    if have is None:
        return False
    have = _norm(have)
    if name == 'name' and not want[0].startswith('/dev/') and op in ('s==', '<or>'):
        want = [w if w.startswith('/dev/') else '/dev/' + w for w in want]
    if op in ('s==', '<or>'):
        return have in want
    if op == '<in>':
        return want[0] in have
    return {'s!=': have != want[0], 's<': have < want[0], 's<=': have <= want[0], 's>': have > want[0],
            's>=': have >= want[0]}[op]


def match_hints(disk, parsed):
    """``(matches, [the hints the disk fails, with its values])``."""
    failed = []
    for name in sorted(parsed):
        op, want = parsed[name]['op'], parsed[name]['values']
        values = _disk_values(name, disk)
        if name == 'name':
            ok = any(_compare(name, op, want, v) for v in values) if op != 's!=' else \
                all(_compare(name, op, want, v) for v in values)
        else:
            ok = any(_compare(name, op, want, v) for v in values)
        if not ok:
            shown = values if name != 'size' else [('%.2f GiB' if values[0] >= 1 else '%.4f GiB') % values[0]]
            failed.append('%s is %s' % (name, ', '.join(str(v) for v in shown) if any(v is not None for v in shown)
                                        else 'unknown'))
    return (not failed), failed


def describe_hints(hints):
    return ', '.join('%s: %s' % (k, hints[k]) for k in sorted(hints or {}))


def choose_by_hints(records, hints, count=None, installer='byoi'):
    """Targets chosen by root device hints among the candidates, in group order.

    Returns ``(paths, matched records)``; records get ``hints_match`` and ``hints_mismatch``.
    BYOI takes the first match, BYOL every match unless ``count`` says how many.
    """
    parsed = parse_hints(hints)
    groups = group_candidates(records)
    order = dict((path, (g['id'], i)) for g in groups for i, path in enumerate(g['disks']))
    matched = []
    for rec in records:
        ok, failed = match_hints(rec, parsed)
        rec['hints_match'] = ok
        rec['hints_mismatch'] = failed
        if ok and rec['candidate']:
            matched.append(rec)
    matched.sort(key=lambda r: order.get(r['path'], (99, 0)))
    if not matched:
        refused = [r for r in records if r['hints_match'] and not r['candidate']]
        raise ValidationError('No disk matches the root device hints (%s)%s. Disks: %s'
                              % (describe_hints(hints),
                                 ''.join('; %s matches but is never a target: %s' % (r['path'], ', '.join(r['reasons']))
                                         for r in refused),
                                 '; '.join('%s (%s)' % (r['path'], ', '.join(r['hints_mismatch']))
                                           for r in records if r['candidate']) or 'none is a candidate'))
    if count is None:
        count = 1 if installer == 'byoi' else len(matched)
    if count > len(matched):
        raise ValidationError('partitioning.disks is %d but only %d disk(s) match the root device hints (%s): %s'
                              % (count, len(matched), describe_hints(hints), ', '.join(r['path'] for r in matched)))
    return [r['path'] for r in matched[:count]], matched


# ---------------------------------------------------------------------------------------- signatures

def has_boot_code(sector):
    """Whether the first sector (bytes) holds boot code: anything in its first 440 bytes.

    sfdisk, sgdisk and parted write zeros there; GRUB, SYSLINUX and Windows write their code."""
    return bool(sector) and any(b != 0 for b in bytearray(sector[:440]))


def signatures(devices, name, pv_vgs=None, boot_code=None):
    """What disk ``name`` and its partitions carry that an installation left: a list of
    ``{'kind', 'device', 'name', 'text'}``. ``pv_vgs``: device path -> VG name (``pvs``);
    ``boot_code``: kernel name -> True when the first sector holds boot code."""
    pv_vgs = pv_vgs or {}
    found = []
    for dev in [d for d in devices if _key(d) == name][:1] + _blockdev.stacked(devices, name):
        path = dev.get('path') or '/dev/' + _key(dev)
        fstype = (dev.get('fstype') or '').lower()
        label = _text(dev.get('label'))
        parttype = (dev.get('parttype') or '').lower()
        if fstype == 'linux_raid_member':
            array = (label or '').split(':')[-1] or None
            found.append({'kind': 'md', 'device': path, 'name': array,
                          'text': 'md superblock on %s (array %s)' % (path, label or 'unnamed')})
        elif fstype == 'lvm2_member':
            vg = pv_vgs.get(path)
            found.append({'kind': 'lvm', 'device': path, 'name': vg,
                          'text': 'LVM PV on %s (VG %s)' % (path, vg or 'unknown')})
        elif fstype == 'zfs_member':
            found.append({'kind': 'zfs', 'device': path, 'name': label,
                          'text': 'ZFS pool label on %s (pool %s)' % (path, label or 'unknown')})
        if parttype in ESP_TYPES:
            found.append({'kind': 'esp', 'device': path, 'name': None, 'text': 'EFI system partition %s' % path})
        elif parttype == BIOS_BOOT_TYPE:
            found.append({'kind': 'bios_boot', 'device': path, 'name': None, 'text': 'BIOS boot partition %s' % path})
        if label and label.lower() == CONFIG_DRIVE_LABEL and fstype != 'linux_raid_member':
            found.append({'kind': 'config_drive', 'device': path, 'name': CONFIG_DRIVE_LABEL,
                          'text': 'config drive %s (label config-2)' % path})
    if (boot_code or {}).get(name):
        found.append({'kind': 'boot_code', 'device': '/dev/' + name, 'name': None,
                      'text': 'boot code in the first sector of /dev/%s' % name})
    return found


def planned_names(layout, ndisks):
    """Names the new installation creates: ``{'md': set, 'lvm': set, 'zfs': set, 'config_drive': set}``.

    The layout planner decides them (RAID levels are reduced for the number of disks first); the
    disks' sizes play no part in names, so it plans on disks large enough for any layout. An invalid
    layout gives no names here: the partitioning step reports it."""
    names = {'md': set(), 'lvm': set(), 'zfs': set(), 'config_drive': set([CONFIG_DRIVE_LABEL])}
    if not layout or not ndisks:
        return names
    disks = [{'path': '/dev/byol-plan%d' % i, 'size': 2 ** 50, 'sector_size': 512} for i in range(ndisks)]
    try:
        plan = _layout.plan_layout(layout, disks, boot_mode='uefi', table_type='gpt', configdrive_size=64)
    except (ByolError, KeyError, TypeError, ValueError):
        return names
    names['md'] = set(md['name'] for md in plan['md_arrays'])
    names['lvm'] = set(vg['name'] for vg in plan['volume_groups'])
    names['zfs'] = set(zp['name'] for zp in plan['zpools'])
    return names


def name_clashes(others, planned):
    """``[text]`` for each name a non-target disk carries that the new installation creates too.

    ``others``: records with ``signatures``; ``planned``: :func:`planned_names`."""
    what = {'md': 'md array', 'lvm': 'volume group', 'zfs': 'ZFS pool', 'config_drive': 'config drive label'}
    clashes = []
    for rec in others:
        for sig in rec.get('signatures') or []:
            if sig['kind'] in planned and sig['name'] and sig['name'] in planned[sig['kind']]:
                clashes.append('%s %s on %s' % (what[sig['kind']], sig['name'], sig['device']))
    return clashes


def parse_pvs(text):
    """``pvs --reportformat json --options pv_name,vg_name`` -> {PV path: VG name} (PVs in no VG left out)."""
    try:
        data = json.loads(text or '{}')
    except ValueError:
        return {}
    out = {}
    for report in data.get('report') or []:
        for row in report.get('pv') or []:
            if row.get('pv_name') and row.get('vg_name'):
                out[row['pv_name']] = row['vg_name']
    return out

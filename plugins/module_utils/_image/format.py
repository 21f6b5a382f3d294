# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Image format inspection from bytes: pure functions, no I/O (but :func:`qemu_img_checks`).

Do not use this from other collections or standalone plugins/modules!

Everything here takes the first bytes of an image (the "head", at least
:data:`HEAD_SIZE` bytes when the image is that large) or a tool's output and
returns data. The format of an image is decided from its bytes, never from its name.
:func:`qemu_img_checks` runs ``qemu-img info`` and ``qemu-img check`` on a downloaded copy
and applies the same rules to their output.
"""

from __future__ import annotations

import json
import os
import struct
import uuid
import zlib

from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError

# How many leading bytes the inspectors want (GPT entries of 4 KiB-sector disks,
# btrfs superblock at 64 KiB, qcow2 header extensions of small clusters).
HEAD_SIZE = 1024 * 1024

QCOW2_MAGIC = b'QFI\xfb'

# qcow2 incompatible feature bits
QCOW2_INCOMPAT_DIRTY = 1 << 0
QCOW2_INCOMPAT_CORRUPT = 1 << 1
QCOW2_INCOMPAT_DATA_FILE = 1 << 2
QCOW2_INCOMPAT_COMPRESSION = 1 << 3
QCOW2_INCOMPAT_EXTL2 = 1 << 4
QCOW2_KNOWN_INCOMPAT = (QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT | QCOW2_INCOMPAT_DATA_FILE
                        | QCOW2_INCOMPAT_COMPRESSION | QCOW2_INCOMPAT_EXTL2)
# qcow2 autoclear bit: the external data file is a valid raw image
QCOW2_AUTOCLEAR_DATA_FILE_RAW = 1 << 1

# qcow2 header extension types
QCOW2_EXT_END = 0
QCOW2_EXT_BACKING_FORMAT = 0xe2792aca
QCOW2_EXT_FEATURE_NAMES = 0x6803f857
QCOW2_EXT_BITMAPS = 0x23852875
QCOW2_EXT_CRYPTO = 0x0537be77
QCOW2_EXT_DATA_FILE = 0x44415441

# Compression containers, recognised by their magic numbers.
COMPRESSION_MAGICS = (
    ('xz', 0, b'\xfd7zXZ\x00'),
    ('gz', 0, b'\x1f\x8b'),
    ('zst', 0, b'\x28\xb5\x2f\xfd'),
    ('bz2', 0, b'BZh'),
)

# Disk image container formats other than raw that qemu-img knows.
CONTAINER_MAGICS = (
    ('qcow2', 0, QCOW2_MAGIC),
    ('qed', 0, b'QED\x00'),
    ('vmdk', 0, b'KDMV'),
    ('vmdk', 0, b'# Disk DescriptorFile'),
    ('vhdx', 0, b'vhdxfile'),
    ('vpc', 0, b'conectix'),
    ('vdi', 64, b'\x7f\x10\xda\xbe'),
    ('dmg', 0, b'koly'),
)


class FormatError(ByolError):
    """The bytes are not what they claim to be (message is for the user)."""


class TruncatedError(ByolError):
    """The image ended before its own format says it ends."""


def _at(data, offset, magic):
    return len(data) >= offset + len(magic) and data[offset:offset + len(magic)] == magic


def detect_compression(head):
    """``'xz'``, ``'gz'``, ``'zst'``, ``'bz2'`` or None, from the first bytes."""
    for name, offset, magic in COMPRESSION_MAGICS:
        if _at(head, offset, magic):
            return name
    return None


def detect_format(head):
    """The container format of an (uncompressed) image: ``qcow2``, ``vmdk``, ... or ``raw``.

    qcow2 version 1 (magic with version 1) is reported as ``qcow`` since qemu-img calls it so.
    """
    for name, offset, magic in CONTAINER_MAGICS:
        if _at(head, offset, magic):
            if name == 'qcow2' and len(head) >= 8 and struct.unpack('>I', head[4:8])[0] == 1:
                return 'qcow'
            return name
    return 'raw'


def _cstr(data):
    return data.split(b'\x00', 1)[0].decode('utf-8', 'replace')


def parse_qcow2_header(head):
    """Parse a qcow2 header (and its extensions) from ``head``.

    Returns a dict: ``version``, ``virtual_size``, ``cluster_size``, ``backing_file``
    (str, ``''`` if none, ``None`` if it lies beyond ``head``), ``has_backing_file``,
    ``backing_format``, ``encrypted`` (crypt method or crypto extension), ``crypt_method``,
    ``external_data_file`` (bool, incompatible bit 2), ``data_file_name``, ``incompatible_features``
    (int), ``unknown_incompatible`` (int), ``dirty``, ``corrupt``, ``nb_snapshots``.
    Raises FormatError if the header is not a qcow2 header.
    """
    if not _at(head, 0, QCOW2_MAGIC):
        raise FormatError('not a qcow2 image (no QFI magic)')
    if len(head) < 72:
        raise FormatError('qcow2 header truncated (%d bytes)' % len(head))
    (version, backing_off, backing_size, cluster_bits, size, crypt_method, _l1_size, _l1_off,
     _rc_off, _rc_clusters, nb_snapshots, _snap_off) = struct.unpack('>IQIIQIIQQIIQ', head[4:72])
    if version not in (2, 3):
        raise FormatError('unsupported qcow2 version %d' % version)
    info = dict(version=version, virtual_size=size, cluster_size=1 << cluster_bits if cluster_bits < 64 else 0,
                crypt_method=crypt_method, nb_snapshots=nb_snapshots, incompatible_features=0,
                compatible_features=0, autoclear_features=0, backing_format=None, data_file_name=None,
                crypto_extension=False)
    header_length = 72
    if version == 3:
        if len(head) < 104:
            raise FormatError('qcow2 v3 header truncated (%d bytes)' % len(head))
        incompat, compat, autoclear, _refcount_order, header_length = struct.unpack('>QQQII', head[72:104])
        info.update(incompatible_features=incompat, compatible_features=compat, autoclear_features=autoclear)
        if header_length < 104:
            raise FormatError('qcow2 v3 header length %d is invalid' % header_length)
    # header extensions
    pos = header_length
    # extensions end at the backing file name or at the end of the first cluster
    limit = len(head)
    if backing_off:
        limit = min(limit, backing_off)
    while pos + 8 <= limit:
        ext_type, ext_len = struct.unpack('>II', head[pos:pos + 8])
        if ext_type == QCOW2_EXT_END:
            break
        data = head[pos + 8:pos + 8 + ext_len]
        if ext_type == QCOW2_EXT_BACKING_FORMAT:
            info['backing_format'] = _cstr(data)
        elif ext_type == QCOW2_EXT_DATA_FILE:
            info['data_file_name'] = _cstr(data)
        elif ext_type == QCOW2_EXT_CRYPTO:
            info['crypto_extension'] = True
        pos += 8 + ((ext_len + 7) & ~7)
    incompat = info['incompatible_features']
    info['external_data_file'] = bool(incompat & QCOW2_INCOMPAT_DATA_FILE) or bool(info['data_file_name'])
    info['dirty'] = bool(incompat & QCOW2_INCOMPAT_DIRTY)
    info['corrupt'] = bool(incompat & QCOW2_INCOMPAT_CORRUPT)
    info['unknown_incompatible'] = incompat & ~QCOW2_KNOWN_INCOMPAT
    info['encrypted'] = crypt_method != 0 or info['crypto_extension']
    info['has_backing_file'] = backing_off != 0 and backing_size != 0
    if not info['has_backing_file']:
        info['backing_file'] = ''
    elif backing_off + backing_size <= len(head):
        info['backing_file'] = head[backing_off:backing_off + backing_size].decode('utf-8', 'replace')
    else:
        info['backing_file'] = None
    return info


def qcow2_problems(info):
    """Reasons (list of str) why a parsed qcow2 header must not be written; empty if it is fine.

    A backing file or an external data file would make qemu-img open files of the rescue
    system; an encrypted image cannot be converted without its secret.
    """
    problems = []
    if info.get('has_backing_file'):
        name = info.get('backing_file')
        problems.append('the qcow2 image has a backing file (%s); it could make qemu-img read files of the '
                        'rescue system. Flatten it first: qemu-img convert -O qcow2 image.qcow2 flat.qcow2'
                        % (repr(name) if name is not None else 'name beyond the first bytes'))
    if info.get('external_data_file'):
        name = info.get('data_file_name')
        problems.append('the qcow2 image uses an external data file%s; it could make qemu-img read files of the '
                        'rescue system. Convert it to a self-contained image first: '
                        'qemu-img convert -O qcow2 image.qcow2 flat.qcow2' % (' (%r)' % name if name else ''))
    if info.get('encrypted'):
        problems.append('the qcow2 image is encrypted (crypt method %d); provide an unencrypted image'
                        % info.get('crypt_method', 0))
    if info.get('corrupt'):
        problems.append('the qcow2 image is marked corrupt; repair it with qemu-img check -r all')
    if info.get('unknown_incompatible'):
        problems.append('the qcow2 image uses unknown incompatible features (0x%x)' % info['unknown_incompatible'])
    return problems


def qemu_img_info_problems(info):
    """Same checks as :func:`qcow2_problems` on ``qemu-img info --output=json`` data (a dict)."""
    problems = []
    if info.get('backing-filename') or info.get('full-backing-filename'):
        problems.append('the qcow2 image has a backing file (%r); it could make qemu-img read files of the rescue '
                        'system. Flatten it first: qemu-img convert -O qcow2 image.qcow2 flat.qcow2'
                        % (info.get('backing-filename') or info.get('full-backing-filename')))
    data = (info.get('format-specific') or {}).get('data') or {}
    if data.get('data-file'):
        problems.append('the qcow2 image uses an external data file (%r); it could make qemu-img read files of the '
                        'rescue system. Convert it to a self-contained image first: '
                        'qemu-img convert -O qcow2 image.qcow2 flat.qcow2' % data.get('data-file'))
    if info.get('encrypted'):
        problems.append('the qcow2 image is encrypted; provide an unencrypted image')
    if data.get('corrupt'):
        problems.append('the qcow2 image is marked corrupt; repair it with qemu-img check -r all')
    return problems


# ---------------------------------------------------------------------------------------------
# partition tables

def _guid(raw):
    return str(uuid.UUID(bytes_le=bytes(raw))).upper()


def parse_mbr(head):
    """MBR partition entries from sector 0, or None if there is no valid MBR table.

    Each entry: ``number``, ``bootable``, ``type`` (int), ``start`` and ``sectors`` (LBA, 512 bytes).
    A boot sector with the 0x55AA signature but invalid entries (a filesystem's boot sector)
    does not count as a table.
    """
    if len(head) < 512 or head[510:512] != b'\x55\xaa':
        return None
    entries = []
    for i in range(4):
        raw = head[446 + 16 * i:446 + 16 * (i + 1)]
        status = raw[0]
        ptype = raw[4]
        start, sectors = struct.unpack('<II', raw[8:16])
        if status not in (0x00, 0x80):
            return None
        if ptype == 0 and sectors == 0:
            continue
        if ptype == 0 or sectors == 0 or start == 0:
            return None
        entries.append(dict(number=i + 1, bootable=status == 0x80, type=ptype, start=start, sectors=sectors))
    if not entries:
        return None
    return entries


def parse_gpt(head, sector_size=None):
    """Primary GPT header and entries from ``head``, or None.

    Tries 512 and 4096-byte sectors unless ``sector_size`` is given. Returns dict
    ``sector_size``, ``disk_guid``, ``first_usable``, ``last_usable``, ``backup_lba``,
    ``min_image_size`` (bytes up to and including the backup header as recorded), and
    ``partitions`` (list of ``number``, ``type_guid``, ``guid``, ``start``, ``end``, ``name``),
    ``entries_complete`` (False when the entries lie beyond ``head``).
    """
    sizes = [sector_size] if sector_size else [512, 4096]
    for ss in sizes:
        if not _at(head, ss, b'EFI PART'):
            continue
        hdr = head[ss:ss + 92]
        if len(hdr) < 92:
            return None
        (_rev, _hsize, _crc, _res, _cur, backup, first, last) = struct.unpack('<IIIIQQQQ', hdr[8:56])
        disk_guid = _guid(hdr[56:72])
        entries_lba, n_entries, entry_size = struct.unpack('<QII', hdr[72:88])
        parts = []
        complete = True
        if entry_size >= 128 and n_entries <= 4096:
            for i in range(n_entries):
                off = entries_lba * ss + i * entry_size
                raw = head[off:off + 128]
                if len(raw) < 128:
                    complete = False
                    break
                if raw[:16] == b'\x00' * 16:
                    continue
                start, end = struct.unpack('<QQ', raw[32:48])
                name = raw[56:128].decode('utf-16-le', 'replace').split('\x00', 1)[0]
                parts.append(dict(number=i + 1, type_guid=_guid(raw[:16]), guid=_guid(raw[16:32]),
                                  start=start, end=end, name=name))
        return dict(sector_size=ss, disk_guid=disk_guid, first_usable=first, last_usable=last,
                    backup_lba=backup, min_image_size=(backup + 1) * ss, partitions=parts,
                    entries_complete=complete)
    return None


def partition_table(head):
    """``('gpt', info)``, ``('dos', entries)`` or ``(None, None)`` for the head of a raw disk image."""
    mbr = parse_mbr(head)
    gpt = parse_gpt(head)
    if gpt is not None and (mbr is None or any(e['type'] == 0xEE for e in mbr)):
        return 'gpt', gpt
    if mbr is not None:
        if any(e['type'] == 0xEE for e in mbr):
            # protective MBR without readable GPT header: still a GPT disk as far as tools go
            return 'gpt', None
        return 'dos', mbr
    return None, None


def min_raw_size(head):
    """Bytes a raw disk image needs at least, from its partition table (0 if unknown)."""
    kind, info = partition_table(head)
    if kind == 'gpt' and info:
        ends = [(p['end'] + 1) * info['sector_size'] for p in info['partitions']]
        return max([info['min_image_size']] + ends)
    if kind == 'dos':
        return max((e['start'] + e['sectors']) * 512 for e in info)
    return 0


# ---------------------------------------------------------------------------------------------
# what a raw image without partition table seems to contain

def _ext_describe(head):
    sb = head[1024:2048]
    compat, incompat, ro_compat = struct.unpack('<III', sb[92:104])
    if incompat & 0x40 or incompat & 0x80 or ro_compat & 0x8 or incompat & 0x200:
        kind = 'ext4'
    elif compat & 0x4:
        kind = 'ext3'
    else:
        kind = 'ext2'
    label = _cstr(sb[120:136])
    fs_uuid = str(uuid.UUID(bytes=bytes(sb[104:120])))
    return kind, label, fs_uuid


def describe_content(head, total_size=None):
    """Human description of what a raw image without partition table holds, like blkid/file.

    ``head`` are its first bytes; ``total_size`` its size when known. Only the type and the size:
    never a label, a UUID or any text from the bytes (a ``file://`` URL may name a secret file of
    the rescue system, an http URL an internal service; the message must not carry their content).
    """
    size_txt = ' (%d bytes)' % total_size if total_size is not None else ''
    if not head:
        return 'nothing: the image is empty'
    comp = detect_compression(head)
    if comp:
        return '%s compressed data' % comp
    fmt = detect_format(head)
    if fmt != 'raw':
        return '%s disk image' % fmt
    if _at(head, 1080, b'\x53\xef'):
        kind = _ext_describe(head)[0]
        return '%s filesystem%s' % (kind, size_txt)
    if _at(head, 0, b'XFSB'):
        return 'xfs filesystem%s' % size_txt
    if _at(head, 0x10040, b'_BHRfS_M'):
        return 'btrfs filesystem%s' % size_txt
    for page in (4096, 8192, 16384, 65536):
        if _at(head, page - 10, b'SWAPSPACE2'):
            return 'Linux swap space%s' % size_txt
    if _at(head, 0x8001, b'CD001'):
        return 'ISO 9660 filesystem%s' % size_txt
    if _at(head, 0, b'hsqs'):
        return 'squashfs filesystem%s' % size_txt
    if _at(head, 0, b'LUKS\xba\xbe'):
        return 'LUKS encrypted volume%s' % size_txt
    if _at(head, 536, b'LVM2 001'):
        return 'LVM2 physical volume%s' % size_txt
    if _at(head, 4096, b'\xfc\x4e\x2b\xa9'):
        return 'Linux md RAID member (superblock 1.2)%s' % size_txt
    if _at(head, 3, b'NTFS    '):
        return 'NTFS filesystem%s' % size_txt
    if _at(head, 82, b'FAT32   ') or _at(head, 54, b'FAT12   ') or _at(head, 54, b'FAT16   '):
        return 'FAT filesystem%s' % size_txt
    if head[510:512] == b'\x55\xaa':
        return 'a boot sector without a valid partition table%s' % size_txt
    if head.count(b'\x00') == len(head):
        return 'only zero bytes in its first %d bytes%s' % (len(head), size_txt)
    sample = head[:4096]
    printable = sum(1 for b in bytearray(sample) if b in (9, 10, 13) or 32 <= b < 127)
    if printable == len(sample):
        kind = 'HTML text' if b'<html' in bytes(sample).lower() else 'text'
        return '%s%s' % (kind, size_txt)
    return 'unrecognised data%s' % size_txt


def check_declared_format(head, declared):
    """Raise FormatError with the guide's message when the bytes are not ``declared``."""
    real = detect_format(head)
    if real != declared:
        raise FormatError('image provided format is %s which does not match expected %s format' % (real, declared))
    return real


def raw_table_or_fail(head, total_size=None):
    """Partition table kind of a raw image; raise FormatError (guide's message) without one."""
    kind, _info = partition_table(head)
    if kind is None:
        raise FormatError('image provided format is not of type raw because no partition table was found. '
                          'It seems to contain: %s' % describe_content(head, total_size))
    return kind


# ---------------------------------------------------------------------------------------------
# BYOL: the image's single partition

def single_partition(table):
    """``(offset_bytes, size_bytes)`` of the one partition of a BYOL image; ValueError otherwise.

    Extended-partition containers (MBR types 5, f, 85) are not counted as partitions
    only when they are empty, which sfdisk never reports: any second entry is refused.
    """
    parts = table.get('partitions') or []
    if len(parts) != 1:
        raise FormatError('a BYOL image must contain exactly one partition, this one has %d%s'
                          % (len(parts), ' (%s)' % ', '.join(
                              'partition %s at sector %d, %d sectors' % (p.get('node'), p['start'], p['size'])
                              for p in parts) if parts else ''))
    ss = table.get('sectorsize') or 512
    part = parts[0]
    return part['start'] * ss, part['size'] * ss


BYOL_FILESYSTEMS = ('ext4', 'xfs')
HOOK_PATH = 'root/.ovh/make_image_bootable.sh'


def check_byol_filesystem(fstype):
    if fstype not in BYOL_FILESYSTEMS:
        raise FormatError("the partition of a BYOL image must be formatted ext4 or XFS, this one is %s"
                          % (fstype or 'not a recognised filesystem'))
    return fstype


# ---------------------------------------------------------------------------------------------
# moving the backup GPT to the end of a larger disk (what ``sgdisk -e`` does, without its
# one-second sleep)

def gpt_relocate_backup(head, disk_bytes):
    """Writes ``[(offset, bytes), ...]`` that move the backup GPT to the end of the disk.

    ``head``: the disk's first bytes (primary header and entries); ``disk_bytes``: its size.
    Like ``sgdisk -e``: the backup entries and header go to the last sectors, the primary
    header's alternate and last-usable LBAs follow, the CRCs are recomputed, the protective
    MBR covers the disk, and the stale backup header is zeroed. Returns ``[]`` when the backup
    is already at the end. Raises FormatError when the table cannot be moved.
    """
    info = parse_gpt(head)
    if info is None:
        raise FormatError('no GPT header found')
    ss = info['sector_size']
    hdr = bytearray(head[ss:2 * ss])
    hsize = struct.unpack('<I', hdr[12:16])[0]
    if not 92 <= hsize <= ss:
        raise FormatError('GPT header size %d is invalid' % hsize)
    entries_lba, n_entries, entry_size = struct.unpack('<QII', bytes(hdr[72:88]))
    entries_len = n_entries * entry_size
    entries_sectors = (entries_len + ss - 1) // ss
    entries = head[entries_lba * ss:entries_lba * ss + entries_sectors * ss]
    if len(entries) < entries_sectors * ss:
        raise FormatError('GPT partition entries lie beyond the inspected bytes')
    disk_sectors = disk_bytes // ss
    backup_lba = disk_sectors - 1
    backup_entries_lba = backup_lba - entries_sectors
    last_usable = backup_entries_lba - 1
    max_end = max([p['end'] for p in info['partitions']] or [0])
    if last_usable < max_end:
        raise FormatError('the disk (%d bytes) is smaller than the partitions of the image' % disk_bytes)
    if info['backup_lba'] == backup_lba and info['last_usable'] == last_usable:
        return []
    writes = []
    primary = bytearray(hdr)
    struct.pack_into('<Q', primary, 32, backup_lba)
    struct.pack_into('<Q', primary, 48, last_usable)
    backup = bytearray(primary)
    struct.pack_into('<Q', backup, 24, backup_lba)
    struct.pack_into('<Q', backup, 32, 1)
    struct.pack_into('<Q', backup, 72, backup_entries_lba)
    for h in (primary, backup):
        struct.pack_into('<I', h, 16, 0)
        struct.pack_into('<I', h, 16, zlib.crc32(bytes(h[:hsize])) & 0xffffffff)
    writes.append((ss, bytes(primary)))
    old = info['backup_lba']
    if 1 < old < disk_sectors and old != backup_lba:
        writes.append((old * ss, bytes(ss)))
    writes.append((backup_entries_lba * ss, bytes(entries)))
    writes.append((backup_lba * ss, bytes(backup)))
    # protective MBR: one 0xEE entry covering the disk (capped at 2 TiB in sectors)
    mbr = parse_mbr(head)
    if mbr and len(mbr) == 1 and mbr[0]['type'] == 0xEE:
        sector0 = bytearray(head[:512])
        struct.pack_into('<I', sector0, 446 + 12, min(disk_sectors - 1, 0xffffffff))
        writes.insert(0, (0, bytes(sector0)))
    return writes


# ---------------------------------------------------------------------------------------------
# the checks before an image is written or attached

def check_qcow2_head(head, result=None):
    """The qcow2 header of ``head`` when the module accepts it, else FormatError; its virtual size and version
    go into ``result`` (the module's result) when given."""
    check_declared_format(head, 'qcow2')
    info = parse_qcow2_header(head)
    problems = qcow2_problems(info)
    if problems:
        raise FormatError('Refusing the image: %s' % '; '.join(problems))
    if result is not None:
        result['virtual_size'] = info['virtual_size']
        result['qcow2'] = dict(version=info['version'], cluster_size=info['cluster_size'])
    return info


def qemu_img_checks(runner, path, image_type):
    """``qemu-img info`` of the downloaded copy ``path`` (refused on the problems of
    :func:`qemu_img_info_problems`); a qcow2 copy is also checked with ``qemu-img check``: qemu-img reads a
    cut qcow2 file as zeroes, so its tables must not point past its end. Returns qemu-img's info."""
    res = runner.run(['qemu-img', 'info', '--output=json', '-f', image_type, path])
    info = json.loads(res.stdout)
    problems = qemu_img_info_problems(info)
    if problems:
        raise FormatError('Refusing the image: %s' % '; '.join(problems))
    if image_type == 'qcow2':
        res = runner.run(['qemu-img', 'check', '--output=json', '-f', 'qcow2', path], check=False)
        if res.rc in (0, 3):  # 3: leaked clusters only, harmless
            return info
        try:
            report = json.loads(res.stdout or '{}')
        except ValueError:
            report = {}
        size = os.path.getsize(path)
        if res.rc == 2:
            raise TruncatedError('Refusing the image: the qcow2 image is incomplete or damaged: qemu-img check finds %s '
                                 'corruptions (its tables refer to %s bytes, the file has %d): the download was cut '
                                 'or the image is damaged' % (report.get('corruptions', 'some'),
                                                              report.get('image-end-offset', 'more'), size))
        raise FormatError('Refusing the image: qemu-img check could not check the qcow2 image (exit code %d)' % res.rc)
    return info

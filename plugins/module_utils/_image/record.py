# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The records of what was written: one format for a disk, a tree's files and a staged copy, and the hook's
marker beside them; all read and written by :func:`read_record` and :func:`write_record`.

Do not use this from other collections or standalone plugins/modules!

A record (:func:`new_record`) is a JSON object: ``version`` (:data:`VERSION`), ``mode`` (``disk``, ``files``
or ``stage``), ``image_type``, ``digests`` (type -> hex digest of the downloaded bytes), ``validators`` (the
server's URL without credentials, size, ETag, Last-Modified), ``compression``, ``written_at`` (seconds since
the epoch), and what the mode adds:

- ``disk`` (``<state_dir>/image_burn-<disk>.json``): ``device``, ``device_size``, ``image_size``, the image's
  partition table (:func:`table_record`), the sha256 of its boot code and boot area, the :func:`fingerprint`
  of sampled data blocks;
- ``files`` (:data:`FILES_MARKER` in ``dest``): ``dest``;
- ``stage`` (:data:`STAGE_INFO` beside the staged copy): ``url_id`` (never the URL), ``file``, ``size``,
  ``mtime_ns``, ``downloaded_bytes``, ``image_bytes``, ``virtual_size``, ``filesystem``.

Older records are still read: disk and files records of version 1 (no table), stage records of version 1
(``staged_at``, no ``mode``). The hook's marker (:data:`HOOK_MARKER` in the installed tree, written by
``byol_bootable_hook``) keeps its own fields (:func:`hook_record`) and goes through the same reader and writer.
Records in a target tree are read and written without following any symbolic link (:mod:`.._treefs`).
"""

from __future__ import annotations

import hashlib
import os
import stat
import time

from ansible_collections.baremetal.byol.plugins.module_utils._treefs import Tree, TreeError, kind, split_path
from ansible_collections.baremetal.byol.plugins.module_utils._image.request import redact_url

MIB = 1024 * 1024
VERSION = 2
# records of version 1 (before the disk's table and boot code were recorded) still identify the image; a disk
# record of version 1 has nothing to check the disk against and is not trusted
VERSIONS = (1, 2)
MODES = ('disk', 'files', 'stage')
FILES_MARKER = 'var/lib/baremetal-byol/image_burn.json'
STAGE_INFO = 'stage.json'
HOOK_MARKER = '/var/lib/byol/make_image_bootable.done'
BOOT_CODE_BYTES = 440
BOOT_AREA_MAX = MIB
FINGERPRINT_SAMPLES = 32
FINGERPRINT_BLOCK = 64 * 1024


# ---------------------------------------------------------------------------------------------
# the one format, its reader and its writer

def new_record(mode, image_type, digests, validators, compression, **extra):
    """A record of ``mode`` (``disk``, ``files`` or ``stage``) for an image with these ``digests`` (pure but for
    the clock)."""
    record = dict(version=VERSION, mode=mode, image_type=image_type, digests=dict(digests or {}),
                  validators=dict(validators or {}), compression=compression, written_at=int(time.time()))
    record.update(extra)
    return record


def disk_record_name(device):
    """The file name of the record of a write onto ``device`` in ``state_dir``."""
    return 'image_burn-%s.json' % os.path.basename(device)


def read_record(directory, path, strict=True):
    """The record (a dict) at ``path`` under ``directory``, or None when there is none or it is not a JSON
    object. No symbolic link is followed: one on the way raises TreeError when ``strict``, else reads as no
    record (as does a ``directory`` that does not exist)."""
    try:
        with Tree(directory) as tree:
            data = tree.read_json(path)
    except TreeError:
        if strict:
            raise
        return None
    return data if isinstance(data, dict) else None


def write_record(directory, path, record, mode=0o644, sync=False):
    """Write ``record`` at ``path`` under ``directory`` (sorted JSON and a newline, replaced atomically, no link
    followed); ``sync``: flush the filesystem first, so the record never says more than the disk holds.
    Returns the host path."""
    with Tree(directory) as tree:
        if sync:
            tree.sync()
        return tree.write_json(path, record, mode=mode)


def recorded_digest(record, hash_type):
    return ((record or {}).get('digests') or {}).get(hash_type)


def written_at(record):
    """When the record was written (``staged_at`` in stage records of version 1)."""
    return (record or {}).get('written_at') or (record or {}).get('staged_at') or 0


# ---------------------------------------------------------------------------------------------
# is the image of the request the one recorded?

def url_id(url):
    """A digest naming a URL without keeping it (it may carry credentials)."""
    return hashlib.sha256(url.encode('utf-8')).hexdigest()


def marker_matches(marker, req, remote=None):
    """Does ``marker`` (dict or None) record this image? Returns (bool or None, reason).

    None means "cannot tell without downloading" (no checksum, no usable validators).
    """
    if not marker or marker.get('version') not in VERSIONS:
        return False, 'no record of a previous write'
    if marker.get('image_type') != req['image_type']:
        return False, 'the recorded image type was %s' % marker.get('image_type')
    if req.get('checksum'):
        recorded = (marker.get('digests') or {}).get(req['checksum_type'])
        if recorded is None:
            return None, 'the record has no %s digest' % req['checksum_type']
        if recorded == req['checksum']:
            return True, 'the %s checksum matches the image written before' % req['checksum_type']
        return False, 'the %s checksum differs from the image written before' % req['checksum_type']
    val = marker.get('validators') or {}
    if val.get('url') != redact_url(req['url']):
        return False, 'the image written before came from another URL and no checksum is given'
    if remote is not None:
        if remote.etag and val.get('etag') == remote.etag:
            return True, 'same URL and ETag as the image written before'
        if (remote.last_modified and remote.content_length is not None and val.get('last_modified') == remote.last_modified
                and val.get('content_length') == remote.content_length):
            return True, 'same URL, Last-Modified and size as the image written before'
        if remote.etag or remote.last_modified:
            return False, 'the image at the URL changed (ETag/Last-Modified differ)'
    return None, 'no checksum given and the server gives no validators'


def is_stage_record(info):
    """A stage record of this format, or of version 1 (no ``mode``)."""
    if not isinstance(info, dict):
        return False
    return (info.get('version') == VERSION and info.get('mode') == 'stage') or (
        info.get('version') == 1 and 'mode' not in info)


def staged_matches(info, req, url_digest):
    """Is the staged copy described by ``info`` (its ``stage.json``) the image of ``req``? (pure)

    Returns ``(bool, reason)``. ``url_digest`` is :func:`url_id` of the request's URL (the staged
    record keeps no URL, which could hold credentials).
    """
    if not is_stage_record(info):
        return False, 'the staged copy has no usable record'
    if info.get('image_type') != req['image_type']:
        return False, 'the staged copy is a %s image' % info.get('image_type')
    if info.get('url_id') != url_digest:
        return False, 'the staged copy came from another URL'
    if req.get('checksum'):
        staged = (info.get('digests') or {}).get(req['checksum_type'])
        if staged != req['checksum']:
            return False, 'the staged copy does not have the requested %s checksum' % req['checksum_type']
    return True, 'the staged copy was downloaded and checked before'


# ---------------------------------------------------------------------------------------------
# does the disk still hold the image recorded?

def table_record(table):
    """What a partition table defines, from its ``sfdisk --json`` (the ``partitiontable`` dict), as the image
    defines it (pure): label, disk identifier, and per partition start, size, type, unique GUID, name and
    attributes. Left out: what later steps legitimately change (the GPT's last usable LBA and backup header
    location, moved by ``sgdisk -e``) and the device node names."""
    if not table:
        return None
    parts = []
    for p in table.get('partitions') or []:
        parts.append(dict(start=int(p.get('start', -1)), size=int(p.get('size', -1)),
                          type=str(p.get('type') or '').upper(), uuid=str(p.get('uuid') or '').upper() or None,
                          name=p.get('name') or None, attrs=p.get('attrs') or None))
    parts.sort(key=lambda p: p['start'])
    return dict(label=table.get('label'), id=str(table.get('id') or '').upper() or None,
                sector_size=int(table.get('sectorsize') or 512), first_lba=table.get('firstlba'), partitions=parts)


def table_differences(recorded, current):
    """How the table ``current`` differs from the ``recorded`` one (both from :func:`table_record`); a list of
    strings, empty when the disk still holds the table the image wrote (pure).

    A partition after the image's last one is not a difference: ``byol_configdrive`` adds the config drive at
    the end of the disk.
    """
    if current is None:
        return ['the disk has no partition table (the image wrote a %s table)' % recorded.get('label')]
    if current.get('label') != recorded.get('label'):
        return ['the disk has a %s partition table, the image wrote a %s table'
                % (current.get('label'), recorded.get('label'))]
    diffs = []
    if current.get('id') != recorded.get('id'):
        diffs.append('the disk identifier is %s, the image\'s is %s' % (current.get('id'), recorded.get('id')))
    image_end = max([p['start'] + p['size'] for p in recorded.get('partitions') or []] or [0])
    have = dict((p['start'], p) for p in current.get('partitions') or [])
    for want in recorded.get('partitions') or []:
        got = have.pop(want['start'], None)
        if got is None:
            diffs.append('the partition at sector %d (%d sectors) is missing' % (want['start'], want['size']))
            continue
        for key, what in (('size', 'size'), ('type', 'type'), ('uuid', 'unique GUID'), ('name', 'name'),
                          ('attrs', 'attributes')):
            if got.get(key) != want.get(key):
                diffs.append('the partition at sector %d has %s %s, the image\'s has %s'
                             % (want['start'], what, got.get(key), want.get(key)))
    for start, extra in sorted(have.items()):
        if start < image_end:
            diffs.append('a partition at sector %d (%d sectors) is not the image\'s' % (start, extra['size']))
    return diffs


def boot_area(table):
    """``(offset, length)`` in bytes of the area between the partition table and the first partition (pure):
    where GRUB puts its core image on an MBR disk (the "MBR gap"). Nothing that runs after the image writes
    there. ``(0, 0)`` when there is none."""
    if not table:
        return 0, 0
    sector = table.get('sector_size') or 512
    first = min([p['start'] for p in table.get('partitions') or []] or [0])
    start = int(table.get('first_lba') or 1) if table.get('label') == 'gpt' else 1
    if first <= start:
        return 0, 0
    return start * sector, min((first - start) * sector, BOOT_AREA_MAX)


def disk_differences(marker, current):
    """How the disk described by ``current`` (from :func:`.disk.disk_state`) differs from the ``marker``
    written with the image; [] when it still holds it (pure)."""
    diffs = table_differences(marker['table'], current['table'])
    if marker.get('boot_code') and current.get('boot_code') != marker['boot_code']:
        diffs.append('the boot code (the first %d bytes of the disk) is not the image\'s' % BOOT_CODE_BYTES)
    if marker.get('boot_area') and current.get('boot_area') != marker['boot_area']:
        diffs.append('the area between the partition table and the first partition (the boot loader\'s) is not '
                     'the image\'s')
    if current.get('fingerprint') != marker.get('fingerprint'):
        diffs.append('the sampled data blocks differ from the ones written')
    return diffs


def fingerprint_offsets(image_size):
    """Offsets sampled to recognise a written image (pure).

    The first and last MiB are skipped: the partition tables live there and later steps
    (``sgdisk -e``, the config drive) change them. What the image defines there (the table's
    partitions and GUIDs, the boot code, the boot loader's area) is compared on its own by
    :func:`disk_differences`: the fingerprint alone never vouches for a disk.
    """
    lo, hi = MIB, image_size - MIB - FINGERPRINT_BLOCK
    if hi <= lo:
        return []
    step = (hi - lo) // max(1, FINGERPRINT_SAMPLES - 1)
    offs = sorted(set(lo + (i * step) // 4096 * 4096 for i in range(FINGERPRINT_SAMPLES)))
    return offs


def fingerprint(path, image_size):
    """sha256 over sampled blocks of ``path`` (a few MiB read; cheap)."""
    h = hashlib.sha256()
    h.update(str(image_size).encode())
    fd = os.open(path, os.O_RDONLY | getattr(os, 'O_CLOEXEC', 0))
    try:
        for off in fingerprint_offsets(image_size):
            h.update(os.pread(fd, FINGERPRINT_BLOCK, off))
    finally:
        os.close(fd)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# the record's path in an image's tree

def check_record_path(mnt):
    """Refuse an image whose tree holds something else than directories on the way to the record's path, or
    something else than a regular file at it (a symbolic link there would redirect the record out of the
    tree): checked on the mounted image, before anything is copied."""
    parts = split_path(FILES_MARKER)
    with Tree(mnt) as tree:
        for i in range(1, len(parts) + 1):
            st = tree.lstat('/'.join(parts[:i]))
            if st is None:
                return
            want_dir = i < len(parts)
            if (want_dir and not stat.S_ISDIR(st.st_mode)) or (not want_dir and not stat.S_ISREG(st.st_mode)):
                raise TreeError('Refusing the image: its /%s is %s, where the installer keeps its record %s. '
                                'Remove it from the image.' % ('/'.join(parts[:i]), kind(st.st_mode),
                                                               '/' + FILES_MARKER))


# ---------------------------------------------------------------------------------------------
# the hook's marker (byol_bootable_hook), beside the image's records

def hook_record(digest, script, rc, duration, now, filesystem=None):
    """The installer's record of a successful run of the hook for ``digest``, bound to the tree's filesystem
    (the UUID the partitioning step's mkfs gave it: an image cannot know it in advance)."""
    return {'digest': digest, 'script': script, 'rc': rc, 'duration': round(duration, 3), 'finished': now,
            'filesystem': filesystem, 'writer': 'baremetal.byol'}


def write_hook_record(root, digest, script, rc, duration, now, filesystem=None):
    """Write the hook's marker in the tree ``root`` (no link followed); returns its path in the tree.

    The marker says the hook's work (initramfs, boot loader, its files on ``/boot`` and ``/boot/efi``) is on the
    disks: every filesystem of the tree is flushed first, or a power cut after the marker loses what it describes
    and the re-run skips the hook."""
    write_record(root, HOOK_MARKER, hook_record(digest, script, rc, duration, now, filesystem), sync=True)
    return HOOK_MARKER


def trusted_hook_record(record, filesystem):
    """``record`` (the hook's marker, a dict or None) if the installer wrote it on this filesystem, else None.

    A record the image shipped (copied with its files) names no filesystem or another one: the filesystem
    UUID is made by mkfs on the rescue system after the image was built. No filesystem identity (the tree is
    not a mounted filesystem), no trust: the hook runs.
    """
    if not isinstance(record, dict) or not filesystem or record.get('filesystem') != filesystem \
            or record.get('rc') != 0:
        return None
    return record


def read_hook_record(root, filesystem):
    """The hook's marker in the tree ``root`` when it is trusted (:func:`trusted_hook_record`), else None."""
    return trusted_hook_record(read_record(root, HOOK_MARKER, strict=False), filesystem)


def hook_done(record, digest, script, image_digest):
    """Whether ``record`` (a trusted one, or None) says the hook already ran for this image.

    ``digest`` is None when the script is gone (a hook may delete itself, or all of /root/.ovh, at its end):
    then the record of this image's digest (or, without ``image_digest``, of this script) is enough.
    """
    if not record:
        return False
    if digest is not None:
        return record.get('digest') == digest
    if image_digest:
        return record.get('digest') == image_digest
    return record.get('script') == script


# ---------------------------------------------------------------------------------------------
# the decision: write again or not

def idempotence(job, marker):
    """``(skip, reason)`` for the image of ``job.req`` and the ``marker`` of the previous write (or None); may
    download the image once to compare digests (never writes)."""
    req = job.req
    if req.get('force'):
        return False, 'force is set'
    remote = None
    if not req.get('checksum') and marker:
        remote = job.fetch.head()
    same, reason = marker_matches(marker, req, remote)
    if same is None and not job.check_mode and marker:
        same = recorded_digest(marker, job.fetch.hash_type) == job.fetch.digest_only()
        reason = ('the downloaded image has the digest recorded for the image written before' if same
                  else 'the downloaded image differs from the one written before')
    return bool(same), reason

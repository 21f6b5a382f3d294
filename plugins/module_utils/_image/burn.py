# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""byol_image_burn's logic: decide, download once, check before writing, write, record.

Do not use this from other collections or standalone plugins/modules!

Order of a run (``mode: disk``): request validation -> marker (idempotence) -> disk free
checks -> download start; the first MiB is inspected (declared format, qcow2 header, raw
partition table, sizes) BEFORE the disk is opened for writing -> raw: streamed to the disk
while hashed; qcow2: to scratch space while hashed, ``qemu-img info`` double-check, then
``qemu-img convert`` -> kernel re-reads the table, ``sgdisk -e`` -> marker.

``mode: files``: download to scratch while hashed -> header checks -> attach read-only
(qemu-nbd, or loop at the partition's offset) -> one partition, ext4/XFS, executable hook
-> only then ``rsync`` onto ``dest`` -> marker file in ``dest``. Mounts, loop and nbd
devices and scratch files are always cleaned up.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import stat
import tempfile
import time

from ansible_collections.baremetal.byol.plugins.module_utils import _blockdev as blockdev
from ansible_collections.baremetal.byol.plugins.module_utils._blockdev import free_bytes, meminfo, read_table, used_bytes
from ansible_collections.baremetal.byol.plugins.module_utils._treefs import Tree, TreeError, check_dirs, split_path
from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError, CommandError, ValidationError
from ansible_collections.baremetal.byol.plugins.module_utils._lock import ensure_dir
from ansible_collections.baremetal.byol.plugins.module_utils._lock import take_server_lock
from ansible_collections.baremetal.byol.plugins.module_utils._progress import Progress
from ansible_collections.baremetal.byol.plugins.module_utils._image.format import (
    HEAD_SIZE, FormatError, check_declared_format, detect_format, gpt_relocate_backup, min_raw_size, parse_qcow2_header, partition_table,
    qcow2_problems, qemu_img_info_problems, raw_table_or_fail)
from ansible_collections.baremetal.byol.plugins.module_utils._image.qcow2stream import Incomplete, Qcow2StreamPlan, Unsupported
from ansible_collections.baremetal.byol.plugins.module_utils._image.request import (
    checksum_from_file, image_file_name, redact_url, validate_request)
from ansible_collections.baremetal.byol.plugins.module_utils._image.source import (
    DownloadError, ImagePump, RetryPolicy, TruncatedError, head_source, open_source, origin, readinto_full)
from ansible_collections.baremetal.byol.plugins.module_utils._image.write import (
    DeviceWriter, ImageAttachment, copy_tree, fingerprint, nbd_available, qemu_img_convert, signature_regions)

MIB = 1024 * 1024
MEMORY_RESERVE = 512 * MIB
SCRATCH_MARGIN = 64 * MIB
MARKER_VERSION = 2
SUMS_MAX = MIB  # a checksum file larger than this is not one
# records of version 1 (before the disk's table and boot code were recorded) still identify the image; a disk
# record of version 1 has nothing to check the disk against and is not trusted
MARKER_VERSIONS = (1, 2)
BOOT_CODE_BYTES = 440
BOOT_AREA_MAX = MIB
FILES_MARKER = 'var/lib/baremetal-byol/image_burn.json'
TMPFS_CANDIDATES = ('/dev/shm', '/run/shm', '/tmp')
STAGE_PREFIX = 'byol-image-burn-stage-'
STAGE_INFO = 'stage.json'
STAGE_VERSION = 1
STALE_STAGE_SECONDS = 6 * 3600


class NoSpaceError(ByolError):
    """The scratch space filled up while downloading."""


# ---------------------------------------------------------------------------------------------
# pure helpers

def parse_mounts(text):
    """``/proc/mounts`` -> list of (source, target, fstype)."""
    out = []
    for line in (text or '').splitlines():
        fields = line.split()
        if len(fields) >= 3:
            out.append((fields[0], fields[1].replace('\\040', ' '), fields[2]))
    return out


def choose_scratch(needed, tmpfs, mem_available, scratch_dir=None, scratch_free=None, image_type='qcow2'):
    """Pick where a downloaded image goes (pure).

    ``tmpfs``: list of (path, free_bytes) of RAM-backed filesystems; ``needed``: bytes or None
    when unknown. Returns ``(path, kind)`` with kind ``memory`` or ``scratch_dir``; raises
    ByolError with the guide's message when neither fits.
    """
    best = None
    for path, free in tmpfs:
        if free is None:
            continue
        if best is None or free > best[1]:
            best = (path, free)
    if best is not None:
        limit = min(best[1] - SCRATCH_MARGIN, (mem_available or 0) - MEMORY_RESERVE)
        if needed is None and not scratch_dir:
            return best[0], 'memory'
        if needed is not None and needed <= limit:
            return best[0], 'memory'
    if scratch_dir:
        if needed is None or scratch_free is None or needed + SCRATCH_MARGIN <= scratch_free:
            return scratch_dir, 'scratch_dir'
        raise ByolError('Could not download, %s image is too big to download in memory. (%d bytes to download; '
                        'scratch_dir %s has %d bytes free)' % (image_type, needed, scratch_dir, scratch_free),
                        needed_bytes=needed, scratch_free_bytes=scratch_free)
    raise ByolError('Could not download, %s image is too big to download in memory. (%s bytes to download, %d bytes '
                    'of memory usable; give scratch_dir on a disk that is not being installed)'
                    % (image_type, needed if needed is not None else 'unknown',
                       max(0, min(best[1] if best else 0, (mem_available or 0)) - MEMORY_RESERVE)),
                    needed_bytes=needed)


def plan_scratch(needed, tmpfs, mem_available, scratch_dir=None, scratch_free=None, copies=1):
    """Where a staged image would go, without failing (pure).

    ``needed``: download size in bytes or None when the server does not say; ``copies``: how many
    times that size the checks need (2 for a qcow2 image attached through a raw copy, without nbd).
    A tmpfs is used when the image fits in it (less :data:`SCRATCH_MARGIN`) and in the available
    memory less :data:`MEMORY_RESERVE`; else ``scratch_dir`` when it has room (plus the margin).
    Returns a dict: ``fits`` (bool), ``path`` and ``kind`` (``memory`` or ``scratch_dir``) when it
    fits, ``needed_bytes``, ``memory_usable_bytes``, ``scratch_dir``, ``scratch_free_bytes`` and
    ``msg`` (why it does not fit).
    """
    total = None if needed is None else needed * max(1, copies)
    best = None
    for path, free in tmpfs:
        if free is not None and (best is None or free > best[1]):
            best = (path, free)
    usable = max(0, min(best[1] - SCRATCH_MARGIN, (mem_available or 0) - MEMORY_RESERVE)) if best else 0
    out = dict(fits=False, path=None, kind=None, needed_bytes=total, memory_usable_bytes=usable,
               scratch_dir=scratch_dir or None, scratch_free_bytes=scratch_free if scratch_dir else None, msg=None)
    if best is not None and total is not None and total <= usable:
        out.update(fits=True, path=best[0], kind='memory')
    elif best is not None and total is None and not scratch_dir and usable > 0:
        # size unknown: try memory; a full tmpfs is reported as "does not fit" when it happens
        out.update(fits=True, path=best[0], kind='memory')
    elif scratch_dir and (total is None or scratch_free is None or total + SCRATCH_MARGIN <= scratch_free):
        out.update(fits=True, path=scratch_dir, kind='scratch_dir')
    else:
        where = 'memory (%d bytes usable)' % usable
        if scratch_dir:
            where += ' nor in scratch_dir %s (%s bytes free)' % (
                scratch_dir, scratch_free if scratch_free is not None else 'unknown')
        else:
            where += ', and no scratch_dir is given'
        out['msg'] = 'The image (%s bytes to store) does not fit in %s.' % (
            total if total is not None else 'an unknown number of', where)
    return out


def staged_matches(info, req, url_digest):
    """Is the staged copy described by ``info`` (its ``stage.json``) the image of ``req``? (pure)

    Returns ``(bool, reason)``. ``url_digest`` is :func:`url_id` of the request's URL (the staged
    record keeps no URL, which could hold credentials).
    """
    if not isinstance(info, dict) or info.get('version') != STAGE_VERSION:
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


def url_id(url):
    """A digest naming a URL without keeping it (it may carry credentials)."""
    return hashlib.sha256(url.encode('utf-8')).hexdigest()


def marker_matches(marker, req, remote=None):
    """Does ``marker`` (dict or None) record this image? Returns (bool or None, reason).

    None means "cannot tell without downloading" (no checksum, no usable validators).
    """
    if not marker or marker.get('version') not in MARKER_VERSIONS:
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
    """How the disk described by ``current`` (from :meth:`ImageBurn._disk_state`) differs from the ``marker``
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


def peak_rss():
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return dict(module_bytes=own, largest_child_bytes=children)


# ---------------------------------------------------------------------------------------------

class ImageBurn(object):

    def __init__(self, module, runner, req, progress, check_mode=False):
        self.module = module
        self.runner = runner
        self.req = req
        self.progress = progress
        self.check_mode = check_mode
        self.hash_type = req.get('checksum_type') or 'sha512'
        self.result = dict(changed=False, mode=req['mode'], url=redact_url(req['url']), image_type=req['image_type'])
        self.retry = RetryPolicy(retries=req.get('retries', 9), delay=req.get('retry_delay', 10),
                                 max_time=req.get('retry_max_time', 600))
        # every retry of the run, with its reason (the same list grows while the run goes on)
        self.result['retries'] = self.retry.reports
        self.t0 = time.monotonic()
        self._cleanup_paths = []
        self._created_dirs = []

    # -- shared ------------------------------------------------------------------------------
    def _src_kwargs(self):
        r = self.req
        return dict(headers=r['http_headers'], validate_certs=r['validate_certs'], ca_path=r.get('ca_path'),
                    timeout=r['timeout'], policy=self.retry)

    def _open(self):
        source = open_source(self.req['url'], **self._src_kwargs())
        if source.redirects:
            self.result['redirects'] = source.redirects
        return source

    def _head(self):
        try:
            return head_source(self.req['url'], **self._src_kwargs())
        except DownloadError:
            if self.check_mode:
                raise
            return None

    def _pump(self, source, limit=None, limit_error=None):
        zstd = self.runner.which('zstd', required=False)
        return ImagePump(source, hash_type=self.hash_type, progress=self.progress, zstd_path=zstd, limit=limit,
                         limit_error=limit_error)

    @staticmethod
    def _collect_head(it):
        """Read chunks from iterator ``it`` until HEAD_SIZE bytes; returns (head_bytes, chunks)."""
        chunks = []
        size = 0
        for chunk in it:
            chunks.append(chunk)
            size += len(chunk)
            if size >= HEAD_SIZE:
                break
        head = b''.join(bytes(c) for c in chunks)[:HEAD_SIZE] if chunks else b''
        return head, chunks

    def _check_digest(self, pump):
        digest = pump.digest
        self.result['checksum_type'] = self.hash_type
        self.result['checksum'] = digest
        if self.req.get('checksum') and digest != self.req['checksum']:
            raise ByolError('Bad checkSumType for downloaded file, got: %s while expecting %s.'
                            % (digest, self.req['checksum']), checksum_type=self.hash_type)

    def _download_phase(self, source):
        self.progress.start('download', total=source.content_length)

    def _record(self, source, pump, extra):
        marker = dict(version=MARKER_VERSION, image_type=self.req['image_type'], mode=self.req['mode'],
                      digests={self.hash_type: pump.digest}, validators=source.validators(),
                      compression=pump.compression, written_at=int(time.time()))
        marker.update(extra)
        return marker

    def _verify_only(self, marker):
        """Download and hash without writing; True if the digest equals the recorded one."""
        source = self._open()
        pump = self._pump(source)
        self.progress.start('verify', total=source.content_length)
        try:
            for _chunk in pump:
                self.progress.update(pump.downloaded)
        finally:
            source.close()
        self.progress.end(pump.downloaded)
        self.result['downloaded_bytes'] = pump.downloaded
        return (marker.get('digests') or {}).get(self.hash_type) == pump.digest

    def _idempotence(self, marker):
        """(skip: bool, reason) — may download once to compare digests (never writes)."""
        if self.req.get('force'):
            return False, 'force is set'
        remote = None
        if not self.req.get('checksum') and marker:
            remote = self._head()
        same, reason = marker_matches(marker, self.req, remote)
        if same is None and not self.check_mode and marker:
            same = self._verify_only(marker)
            reason = ('the downloaded image has the digest recorded for the image written before' if same
                      else 'the downloaded image differs from the one written before')
        return bool(same), reason

    def _finish(self):
        self.result['phases'] = self.progress.summary()
        self.result['download_resumes'] = self.retry.resumes
        self.result['download_restarts'] = self.retry.restarts
        self.result['seconds'] = round(time.monotonic() - self.t0, 3)
        self.result['peak_rss'] = peak_rss()
        self.result['progress_reports'] = self.progress.reports
        return self.result

    def _scratch_for(self, source):
        with open('/proc/mounts') as f:
            mounts = parse_mounts(f.read())
        mem = meminfo()
        tmpfs = [(target, free_bytes(target)) for (_s, target, fs) in mounts if fs == 'tmpfs'
                 and target in TMPFS_CANDIDATES and os.access(target, os.W_OK)]
        sdir = self.req.get('scratch_dir')
        sfree = None
        if sdir:
            self._check_scratch_in_dest(sdir)
            if ensure_dir(sdir, 0o700, 'scratch_dir'):
                self._created_dirs.append(sdir)
            sfree = free_bytes(sdir)
        path, kind = choose_scratch(source.content_length, tmpfs, mem.get('MemAvailable'), sdir, sfree,
                                    self.req['image_type'])
        work = tempfile.mkdtemp(prefix='byol-image-burn-', dir=path)
        self._cleanup_paths.append(work)
        self.result['scratch'] = dict(path=path, kind=kind)
        return work

    def _check_scratch_in_dest(self, sdir):
        """A ``scratch_dir`` inside ``dest`` (the role's ``<mount_root>/.byol-scratch``, when the image fits nowhere
        else) is in the installed tree, which may hold what an earlier copy of the image put there: walk it from
        ``dest`` without following links (TreeError on one), so the download never lands outside the tree."""
        dest = self.req.get('dest') if self.req.get('mode') == 'files' else None
        if not dest:
            return
        target = os.path.abspath(sdir)
        for base in sorted(set([os.path.abspath(dest), os.path.realpath(dest)])):
            if target == base or target.startswith(base.rstrip('/') + '/'):
                existed = os.path.lexists(target)
                check_dirs(base, os.path.relpath(target, base), mode=0o700, create=True)
                if not existed:
                    self._created_dirs.append(sdir)
                return

    def cleanup(self):
        for path in self._cleanup_paths:
            shutil.rmtree(path, ignore_errors=True)
        self._cleanup_paths = []
        # a scratch_dir this run made (for example under the new filesystems) goes too, when empty
        for path in reversed(self._created_dirs):
            try:
                os.rmdir(path)
            except OSError:
                pass
        self._created_dirs = []

    def _download_to_file(self, source, path, check_head, started=None):
        """Stream the (decompressed) image into ``path`` while hashing; ``check_head(head)`` first.

        ``started``: ``(pump, iterator, head_chunks)`` of a download already begun and checked.
        """
        work = os.path.dirname(path)

        def full(n):
            return NoSpaceError('Could not download, %s image is too big to download in memory. (%s is full after %d '
                                'bytes; give scratch_dir with more space)' % (self.req['image_type'], work, n))
        if started is None:
            # a decompressed image larger than the scratch space stops at once, before it fills it
            pump = self._pump(source, limit=self._scratch_limit(work), limit_error=full)
            self._download_phase(source)
            it = iter(pump)
        else:
            pump, it, chunks = started
            pump.limit_error = full
            pump.limit = self._scratch_limit(work)
        try:
            if started is None:
                head, chunks = self._collect_head(it)
                try:
                    check_head(head, pump)
                except Exception:
                    pump.stop()
                    raise
            try:
                with open(path, 'wb') as f:
                    for chunk in self._chain(chunks, it):
                        f.write(chunk)
                        pump.recycle(chunk)
                        self.progress.update(pump.downloaded)
            except (IOError, OSError) as exc:
                pump.stop()
                if exc.errno == 28:  # ENOSPC
                    raise NoSpaceError('Could not download, %s image is too big to download in memory. (%s is full '
                                       'after %d bytes; give scratch_dir with more space)'
                                       % (self.req['image_type'], os.path.dirname(path), pump.downloaded))
                raise
        finally:
            source.close()
        self.progress.end(pump.downloaded)
        self.result['downloaded_bytes'] = pump.downloaded
        self.result['compression'] = pump.compression
        self.result['image_bytes'] = pump.produced
        self._check_digest(pump)
        return pump

    def _scratch_limit(self, work):
        """Bytes the scratch directory ``work`` can take (on a tmpfs, also what memory allows)."""
        free = free_bytes(work)
        if free is None:
            return None
        limit = free
        try:
            with open('/proc/mounts') as f:
                mounts = parse_mounts(f.read())
            fstype = None
            real = os.path.realpath(work)
            best = ''
            for _src, target, fs in mounts:
                if (real == target or real.startswith(target.rstrip('/') + '/')) and len(target) >= len(best):
                    best, fstype = target, fs
            if fstype == 'tmpfs':
                mem = meminfo().get('MemAvailable')
                if mem is not None:
                    limit = min(limit, mem - MEMORY_RESERVE)
        except (IOError, OSError):
            pass
        return max(0, limit)

    def _qemu_info(self, path):
        res = self.runner.run(['qemu-img', 'info', '--output=json', '-f', self.req['image_type'], path])
        info = json.loads(res.stdout)
        problems = qemu_img_info_problems(info)
        if problems:
            raise FormatError('Refusing the image: %s' % '; '.join(problems))
        if self.req['image_type'] == 'qcow2':
            self._qemu_check(path)
        return info

    def _qemu_check(self, path):
        """qemu-img reads a cut qcow2 file as zeroes: its tables must not point past its end."""
        res = self.runner.run(['qemu-img', 'check', '--output=json', '-f', 'qcow2', path], check=False)
        if res.rc in (0, 3):  # 3: leaked clusters only, harmless
            return
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

    def _check_qcow2_head(self, head):
        check_declared_format(head, 'qcow2')
        info = parse_qcow2_header(head)
        problems = qcow2_problems(info)
        if problems:
            raise FormatError('Refusing the image: %s' % '; '.join(problems))
        self.result['virtual_size'] = info['virtual_size']
        self.result['qcow2'] = dict(version=info['version'], cluster_size=info['cluster_size'])
        return info

    # -- disk mode ---------------------------------------------------------------------------
    def _disk_marker_path(self, device):
        return os.path.join(self.req['state_dir'], 'image_burn-%s.json' % os.path.basename(device))

    def _disk_state(self, device, image_size, recorded_table=None):
        """What the disk holds today where the image wrote: its table (:func:`table_record`), the sha256 of its
        boot code and boot area (None when all zeros; the area of ``recorded_table`` when given) and the
        fingerprint of sampled data. Reads only."""
        table = table_record(read_table(self.runner, device))
        fd = os.open(device, os.O_RDONLY | getattr(os, 'O_CLOEXEC', 0))
        try:
            code = os.pread(fd, BOOT_CODE_BYTES, 0)
            offset, length = boot_area(recorded_table or table)
            area = os.pread(fd, length, offset) if length else b''
        finally:
            os.close(fd)
        return dict(table=table,
                    boot_code=hashlib.sha256(code).hexdigest() if code.strip(b'\0') else None,
                    boot_area=hashlib.sha256(area).hexdigest() if area.strip(b'\0') else None,
                    fingerprint=fingerprint(device, image_size))

    def _load_disk_marker(self, device, device_size):
        """``(marker, why not)``: the record of the image written on ``device`` when the disk still holds it (its
        partition table, boot code, boot area and sampled data are checked), else ``(None, what differs)``."""
        path = self._disk_marker_path(device)
        try:
            with open(path) as f:
                marker = json.load(f)
        except (IOError, OSError, ValueError):
            return None, 'no record of a previous write'
        if not isinstance(marker, dict):
            return None, 'no record of a previous write'
        if marker.get('device_size') != device_size:
            return None, 'the disk size changed since the image was written'
        if not marker.get('table'):
            return None, 'the record of the previous write has nothing to check the disk against (an older version)'
        size = marker.get('image_size') or 0
        if size > device_size:
            return None, 'the recorded image is larger than the disk'
        diffs = disk_differences(marker, self._disk_state(device, size, marker['table']))
        if diffs:
            self.result['disk_differences'] = diffs
            return None, 'the disk no longer holds the image written before (%s)' % '; '.join(diffs)
        return marker, None

    def run_disk(self):
        req = self.req
        device = blockdev.real_device(req['device'])
        self.result['device'] = req['device']
        try:
            st = os.stat(device)
        except OSError as exc:
            raise ValidationError('device %s does not exist: %s' % (req['device'], exc.strerror))
        if not stat.S_ISBLK(st.st_mode):
            raise ValidationError('device %s is not a block device' % req['device'])
        device_size = blockdev.device_size(self.runner, device)
        self.result['device_size'] = device_size
        marker, why_not = self._load_disk_marker(device, device_size)
        skip, reason = self._idempotence(marker)
        if why_not and not self.req.get('force'):
            reason = why_not
        self.result['reason'] = reason
        if skip:
            self.result['msg'] = 'The image on %s is already written (%s); nothing written.' % (req['device'], reason)
            self.result['checksum'] = (marker.get('digests') or {}).get(self.hash_type)
            return self._finish()
        if self.check_mode:
            return self._plan_disk(device, device_size, reason)
        blockdev.check_disks_free(self.runner, [device])
        source = self._open()
        self.result['download_size'] = source.content_length
        if req['image_type'] == 'raw':
            self._burn_raw(source, device, device_size)
        else:
            self._burn_qcow2(source, device, device_size)
        numbers = self._after_write(device)
        self._wait_partitions(device, numbers)
        image_size = self.result['image_bytes']
        # the record says the image is on the disk: only once it is (a power cut before this point leaves no
        # record, and the next run writes again)
        sync_device(device)
        state = self._disk_state(device, image_size)
        marker = self._record(source, self._last_pump, dict(device=req['device'], device_size=device_size,
                                                            image_size=image_size, **state))
        path = self._disk_marker_path(device)
        ensure_dir(os.path.dirname(path), 0o700, 'state_dir')
        with Tree(os.path.dirname(path)) as tree:
            tree.write_json(os.path.basename(path), marker, mode=0o600)
        self.result['marker'] = path
        self.result['changed'] = True
        self.result['msg'] = 'Wrote the %s image (%d bytes) onto %s.' % (req['image_type'], image_size, req['device'])
        return self._finish()

    def _plan_disk(self, device, device_size, reason):
        plan = dict(action='write', device=self.req['device'], device_size=device_size, image_type=self.req['image_type'],
                    reason=reason)
        head = self._head()
        if head is not None:
            plan['download_size'] = head.content_length
            if (self.req['image_type'] == 'raw' and head.content_length and head.content_length > device_size
                    and not self.req['url'].split('?')[0].endswith(('.xz', '.gz', '.zst', '.bz2'))):
                plan['warning'] = ('the download (%d bytes) is larger than the device (%d bytes), unless it is '
                                   'compressed' % (head.content_length, device_size))
        self.result['plan'] = plan
        self.result['changed'] = True
        self.result['msg'] = 'Would download %s and write it onto %s (%s).' % (
            redact_url(self.req['url']), self.req['device'], reason)
        return self._finish()

    def _size_error(self, size, device_size, at_least=False):
        return ByolError('image provided has a size of %s%d bytes which is larger than device of %d bytes'
                         % ('at least ' if at_least else '', size, device_size), image_size=size,
                         device_size=device_size)

    def _burn_raw(self, source, device, device_size):
        # the first byte past the device stops the download (and the decompression) at once
        pump = self._pump(source, limit=device_size,
                          limit_error=lambda n: self._size_error(n, device_size, at_least=True))
        self._last_pump = pump
        self._download_phase(source)
        it = iter(pump)
        head, chunks = self._collect_head(it)
        try:
            fmt = detect_format(head)
            if fmt != 'raw':
                raise FormatError('image provided format is %s which does not match expected raw format' % fmt)
            known = None
            if pump.compression is None and source.content_length is not None:
                known = source.content_length
                self.result['virtual_size'] = known
            elif pump.compression is None and sum(len(c) for c in chunks) < HEAD_SIZE:
                known = sum(len(c) for c in chunks)
            raw_table_or_fail(head, known)
            kind, _info = partition_table(head)
            self.result['partition_table'] = kind
            need = max(known or 0, min_raw_size(head))
            if need > device_size:
                raise self._size_error(need, device_size, at_least=known is None)
        except Exception:
            pump.stop()
            raise
        # Everything checkable is checked: only now is the disk opened for writing.
        writer = DeviceWriter(device)
        self.result['changed'] = True
        overflow = None
        try:
            self.progress.set_total(source.content_length)
            for chunk in self._chain(chunks, it):
                if overflow is None and writer.offset + len(chunk) > device_size:
                    overflow = writer.offset
                if overflow is None:
                    writer.write(chunk)
                pump.recycle(chunk)
                self.progress.update(pump.downloaded)
        except Exception:
            pump.stop()
            writer.close(sync=True)
            # part of the image is on the disk: remove the partition tables it wrote
            self._wipe(device, max(writer.offset, min_raw_size(head)), head)
            raise
        finally:
            source.close()
        write_summary = self.progress.end(pump.downloaded)
        self.result['downloaded_bytes'] = pump.downloaded
        self.result['compression'] = pump.compression
        self.result['image_bytes'] = pump.produced
        self.result['written_bytes'] = writer.written
        self.result['zeroed_bytes'] = writer.zeroed
        written_end = writer.offset
        try:
            writer.close(sync=True)
        except ByolError:
            raise
        if write_summary:
            write_summary['phase'] = 'download+write'
        if overflow is not None:
            self._wipe(device, written_end, head)
            raise self._size_error(pump.produced, device_size)
        try:
            self._check_digest(pump)
        except ByolError:
            self._wipe(device, written_end, head)
            raise

    @staticmethod
    def _chain(chunks, it):
        yield from chunks
        yield from it

    def _wipe(self, device, written, head):
        writer = DeviceWriter(device, zero_out=False, direct=False)
        try:
            writer.wipe(signature_regions(written, min_raw_size(head)))
        finally:
            writer.close(sync=True)
        self._settle_after_close()
        blockdev.reread_partitions(self.runner, device)
        self._settle_after_close()
        self.result['wiped_signatures'] = True

    def _burn_qcow2(self, source, device, device_size):
        """Stream the clusters onto the disk while downloading when the layout allows it (no
        scratch space needed), else download to scratch space and ``qemu-img convert``."""
        pump = self._pump(source)
        self._download_phase(source)
        it = iter(pump)
        head, chunks = self._collect_head(it)

        def check_head(head, _pump=None):
            info = self._check_qcow2_head(head)
            if info['virtual_size'] > device_size:
                raise self._size_error(info['virtual_size'], device_size)
            return info

        try:
            info = check_head(head)
        except Exception:
            pump.stop()
            source.close()
            raise
        plan, fallback = None, None
        if self.req.get('qcow2_streaming', True):
            try:
                plan = Qcow2StreamPlan(info, head)
            except Unsupported as exc:
                fallback = str(exc)
        if plan is not None:
            # a qcow2 file larger than its tables allow (a decompression bomb) stops at once
            bound = plan.max_file_size()
            pump.limit_error = lambda n: FormatError(
                'Refusing the image: the qcow2 data is larger than a qcow2 image of virtual size %d bytes can be '
                '(more than %d bytes)' % (info['virtual_size'], bound))
            pump.limit = bound
        if plan is None:
            return self._qcow2_via_scratch(source, device, check_head, (pump, it, chunks), fallback)
        vsize = info['virtual_size']
        # every check on the header passed: the disk is written from here on
        writer = DeviceWriter(device)
        self.result['changed'] = True
        offset = 0
        zero = None
        try:
            try:
                for chunk in self._chain(chunks, it):
                    writes = plan.feed(offset, chunk)
                    if writes:
                        view = memoryview(chunk)
                        for guest, start, length in writes:
                            # a whole piece of data clusters goes as it is (a page-aligned buffer: O_DIRECT without a copy)
                            writer.write_at(guest, chunk if start == 0 and length == len(chunk)
                                            else view[start:start + length])
                        view.release()
                    # compressed clusters completed by this piece, inflated one at a time
                    for guest, data in plan.inflated():
                        writer.write_at(guest, data)
                    offset += len(chunk)
                    pump.recycle(chunk)
                    self.progress.update(pump.downloaded)
                for guest, data in plan.finish_inflated():
                    writer.write_at(guest, data)
                zero = plan.finish()
            except Unsupported as exc:
                fallback = str(exc)
            except Incomplete as exc:
                raise TruncatedError("Can't write qcow2 on disk: the qcow2 image is incomplete, %s: the download was "
                                     "cut or the image is damaged" % exc)
        except Exception:
            pump.stop()
            source.close()
            writer.close(sync=True)
            self._wipe(device, vsize, b'')
            raise
        if fallback is not None:
            pump.stop()
            source.close()
            writer.close(sync=False)
            self.progress.end(pump.downloaded)
            # not streamable after all: download again into scratch space; qemu-img convert then
            # rewrites the whole virtual disk
            try:
                return self._qcow2_via_scratch(self._open(), device, check_head, None, fallback)
            except Exception:
                # part of the image is on the disk: remove the partition tables it wrote
                self._wipe(device, vsize, b'')
                raise
        source.close()
        summary = self.progress.end(pump.downloaded)
        if summary:
            summary['phase'] = 'download+write'
        self._last_pump = pump
        self.result.update(downloaded_bytes=pump.downloaded, compression=pump.compression, image_bytes=vsize,
                           qcow2_streamed=True)
        try:
            self._check_digest(pump)
        except ByolError:
            writer.close(sync=True)
            self._wipe(device, vsize, b'')
            raise
        self.progress.start('zero', total=sum(length for _o, length in zero))
        for zoffset, length in zero:
            writer.zero_range(zoffset, length)
        writer.close(sync=True)
        self.progress.end(sum(length for _o, length in zero))
        return None

    def _qcow2_via_scratch(self, source, device, check_head, started, fallback):
        work = self._scratch_for(source)
        path = os.path.join(work, 'image.qcow2')
        try:
            pump = self._download_to_file(source, path, check_head, started=started)
            self._last_pump = pump
            self._qemu_info(path)
            vsize = self.result['virtual_size']
            self.result['qcow2_streamed'] = False
            if fallback:
                self.result['qcow2_stream_fallback'] = fallback
            self.progress.start('write', total=vsize)
            self.result['changed'] = True
            qemu_img_convert(self.runner, path, 'qcow2', device, progress=self.progress, total=vsize)
            self.progress.end(vsize)
            self.result['image_bytes'] = vsize
        finally:
            self.cleanup()

    def _after_write(self, device):
        """Re-read the partition table; move the backup GPT header to the real end of the disk."""
        with open(device, 'rb') as f:
            head = f.read(HEAD_SIZE)
        kind, info = partition_table(head)
        self.result['partition_table'] = kind
        if kind == 'gpt':
            try:
                writes = gpt_relocate_backup(head, blockdev.device_size(self.runner, device))
            except FormatError:
                writes = None
            if writes is None:
                self.runner.run(['sgdisk', '-e', device])
            elif writes:
                fd = os.open(device, os.O_WRONLY | getattr(os, 'O_CLOEXEC', 0))
                try:
                    for offset, data in writes:
                        os.pwrite(fd, data, offset)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            self.result['gpt_backup_moved'] = True
            with open(device, 'rb') as f:
                head = f.read(HEAD_SIZE)
            kind, info = partition_table(head)
            numbers = [p['number'] for p in (info or {}).get('partitions', [])]
        elif kind == 'dos':
            numbers = [e['number'] for e in info]
        else:
            numbers = []
        return numbers

    def _settle_after_close(self):
        """udev watches disks: closing a writer makes it re-read the table (partitions go and come
        back). Let it see the close, then wait for its queue, so the nodes are stable on return."""
        time.sleep(0.3)
        blockdev.settle(self.runner)

    def _wait_partitions(self, device, numbers):
        self._settle_after_close()
        paths = [blockdev.partition_path(device, n) for n in numbers]
        if not all(os.path.exists(p) for p in paths) or not numbers:
            blockdev.flush_buffers(self.runner, device)  # the image went there with O_DIRECT: no stale table
            blockdev.reread_partitions(self.runner, device, expected=numbers)
            self._settle_after_close()
        blockdev.wait_for_paths(paths, timeout=30)
        self.result['partitions'] = paths

    # -- files mode --------------------------------------------------------------------------
    @staticmethod
    def _load_files_marker(dest):
        """The record in ``dest`` (None when there is none or it is not JSON). Read without following any
        symbolic link: one there (the image's, from an earlier copy) raises TreeError."""
        with Tree(dest) as tree:
            marker = tree.read_json(FILES_MARKER)
        return marker if isinstance(marker, dict) else None

    @staticmethod
    def _check_record_path(mnt):
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
                                    'Remove it from the image.' % ('/'.join(parts[:i]), _kind_of(st.st_mode),
                                                                   '/' + FILES_MARKER))

    def _files_check_head(self, head, _pump=None):
        if self.req['image_type'] == 'qcow2':
            self._check_qcow2_head(head)
        else:
            check_declared_format(head, 'raw')
            raw_table_or_fail(head)

    def _inspect(self, path, work):
        """Attach the downloaded image read-only, mount its one partition, check filesystem and
        hook. Returns the attachment (the caller closes it); nothing outside ``work`` is written."""
        req = self.req
        if req['image_type'] == 'qcow2':
            self._qemu_info(path)
        attachment = ImageAttachment(self.runner, path, req['image_type'], work,
                                     use_nbd={'auto': None, 'nbd': True, 'loop': False}[req['attach']])
        try:
            attachment.attach(progress=self.progress, virtual_size=self.result.get('virtual_size'))
            attachment.mount()
            hook = attachment.check_hook()
            self._check_record_path(attachment.mountpoint)
        except Exception:
            self._detach(attachment)
            raise
        self.result.update(attach_method=attachment.method, filesystem=attachment.fstype, hook=hook)
        return attachment

    def _detach(self, attachment):
        """Undo an attachment (if any); what could not be undone is reported in ``cleanup_errors``."""
        if attachment is None:
            return
        errors = attachment.close()
        if errors:
            self.result['cleanup_errors'] = errors

    def _copy_and_record(self, attachment, dest, record):
        """Every check passed: ``dest`` is written from here on."""
        mnt = attachment.mountpoint
        used = used_bytes(mnt)
        self.result['changed'] = True
        self.progress.start('copy', total=used)
        copy_tree(self.runner, mnt, dest, progress=self.progress)
        self.progress.end(used)
        self.result['copied_bytes'] = used
        with Tree(dest) as tree:
            # the record says the files are there: only once they are on the disk (syncfs of dest)
            tree.sync()
            self.result['marker'] = tree.write_json(FILES_MARKER, record)

    def _files_skip(self, dest, required):
        """(skip, reason, marker) from the record in ``dest``."""
        if not os.path.isdir(dest):
            if required:
                raise ValidationError('dest %s is not a directory (mount the new filesystems there first)' % dest)
            return False, 'dest %s does not exist yet' % dest, None
        marker = self._load_files_marker(dest)
        skip, reason = self._idempotence(marker)
        return skip, reason, marker

    def run_files(self):
        req = self.req
        dest = req['dest']
        self.result['dest_dir'] = dest
        skip, reason, marker = self._files_skip(dest, required=True)
        self.result['reason'] = reason
        if skip:
            if req.get('staged'):
                self.result['staged_removed'] = remove_staged(req['staged'])
            self.result['msg'] = 'The image is already copied onto %s (%s); nothing written.' % (dest, reason)
            self.result['checksum'] = (marker.get('digests') or {}).get(self.hash_type)
            return self._finish()
        if self.check_mode:
            plan = dict(action='copy', dest=dest, image_type=req['image_type'], reason=reason)
            if req.get('staged'):
                plan['staged'] = req['staged']
            head = self._head()
            if head is not None:
                plan['download_size'] = head.content_length
            self.result['plan'] = plan
            self.result['changed'] = True
            self.result['msg'] = 'Would download %s and copy its files onto %s (%s).' % (
                redact_url(req['url']), dest, reason)
            return self._finish()
        staged = None
        if req.get('staged'):
            staged, why = self._usable_staged(req['staged'])
            self.result['staged_used'] = staged is not None
            self.result['staged_reason'] = why
        if staged is not None:
            return self._copy_staged(staged, dest)
        if req.get('staged'):
            self.result['staged_removed'] = remove_staged(req['staged'])
        source = self._open()
        self.result['download_size'] = source.content_length
        work = self._scratch_for(source)
        path = os.path.join(work, 'image.%s' % req['image_type'])
        attachment = None
        try:
            pump = self._download_to_file(source, path, self._files_check_head)
            attachment = self._inspect(path, work)
            self._copy_and_record(attachment, dest, self._record(source, pump, dict(dest=dest)))
        finally:
            self._detach(attachment)
            self.cleanup()
        self.result['changed'] = True
        self.result['msg'] = 'Copied the files of the %s image onto %s.' % (req['image_type'], dest)
        return self._finish()

    # -- staging (mode files, stage_only) -----------------------------------------------------
    def _memory_and_tmpfs(self):
        with open('/proc/mounts') as f:
            mounts = parse_mounts(f.read())
        mem = meminfo()
        tmpfs = [(target, free_bytes(target)) for (_s, target, fs) in mounts if fs == 'tmpfs'
                 and target in TMPFS_CANDIDATES and os.access(target, os.W_OK)]
        return tmpfs, mem.get('MemAvailable')

    def _space_plan(self, needed):
        tmpfs, mem = self._memory_and_tmpfs()
        sdir = self.req.get('scratch_dir')
        sfree = None
        if sdir:
            # the nearest existing parent tells the free space without creating anything
            probe = sdir
            while probe and not os.path.isdir(probe):
                probe = os.path.dirname(probe)
            sfree = free_bytes(probe or '/')
        copies = 2 if self.req['image_type'] == 'qcow2' and not self._nbd() else 1
        return plan_scratch(needed, tmpfs, mem, sdir, sfree, copies=copies)

    def _nbd(self):
        mode = self.req.get('attach') or 'auto'
        if mode == 'auto':
            # check mode loads no kernel module: only a loaded nbd counts then
            return os.path.isdir('/sys/module/nbd') if self.check_mode else nbd_available(self.runner)
        return mode == 'nbd'

    def _does_not_fit(self, space, dest):
        msg = ('%s It is not staged: it will be downloaded onto the new filesystems under %s and checked there '
               'before any file is copied.' % (space['msg'], dest))
        self.result.update(staged=False, fits=False, space=space, msg=msg)
        return self._finish()

    def _head_only(self, source):
        """Check the first MiB (format, qcow2 header, raw partition table), then stop the download."""
        pump = self._pump(source)
        it = iter(pump)
        try:
            head, _chunks = self._collect_head(it)
            self._files_check_head(head)
            self.result['checks'] = ['format', 'qcow2 header' if self.req['image_type'] == 'qcow2'
                                     else 'partition table']
        finally:
            pump.stop()
            source.close()

    def _remove_stale_stages(self):
        """Copies of this image staged by an earlier run that stopped before copying them (and any
        staged copy older than :data:`STALE_STAGE_SECONDS`) are removed: they hold memory."""
        removed = []
        tmpfs, _mem = self._memory_and_tmpfs()
        ident = url_id(self.req['url'])
        now = time.time()
        for base in [t for t, _f in tmpfs] + ([self.req['scratch_dir']] if self.req.get('scratch_dir') else []):
            try:
                names = os.listdir(base)
            except OSError:
                continue
            for name in names:
                path = os.path.join(base, name)
                if not name.startswith(STAGE_PREFIX) or os.path.islink(path) or not os.path.isdir(path):
                    continue
                try:
                    with open(os.path.join(path, STAGE_INFO)) as f:
                        info = json.load(f)
                except (IOError, OSError, ValueError):
                    continue  # being staged right now, or not ours
                if info.get('url_id') == ident or now - (info.get('staged_at') or 0) > STALE_STAGE_SECONDS:
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
        if removed:
            self.result['stale_stages_removed'] = removed

    def run_stage(self):
        req = self.req
        dest = req['dest']
        self.result.update(dest_dir=dest, staged=False, stage_only=True)
        skip, reason, marker = self._files_skip(dest, required=False)
        self.result['reason'] = reason
        if skip:
            self.result['msg'] = 'The image is already copied onto %s (%s); nothing staged.' % (dest, reason)
            self.result['checksum'] = (marker.get('digests') or {}).get(self.hash_type)
            return self._finish()
        if self.check_mode:
            head = self._head()
            size = head.content_length if head is not None else None
            space = self._space_plan(size)
            self.result['plan'] = dict(action='stage', image_type=req['image_type'], reason=reason, download_size=size,
                                       fits=space['fits'], scratch=dict(path=space['path'], kind=space['kind']))
            self.result['changed'] = bool(space['fits'])
            self.result['msg'] = ('Would download %s into %s (%s) and check it; nothing would be written to a disk.'
                                  % (redact_url(req['url']), space['path'], space['kind']) if space['fits']
                                  else '%s It would be downloaded onto the new filesystems under %s instead.'
                                  % (space['msg'], dest))
            return self._finish()
        self._remove_stale_stages()
        source = self._open()
        self.result['download_size'] = source.content_length
        space = self._space_plan(source.content_length)
        self.result['space'] = space
        if not space['fits']:
            self._head_only(source)
            return self._does_not_fit(space, dest)
        if space['kind'] == 'scratch_dir':
            self._check_scratch_in_dest(space['path'])
        if space['kind'] == 'scratch_dir' and ensure_dir(space['path'], 0o700, 'scratch_dir'):
            self._created_dirs.append(space['path'])
        work = tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=space['path'])
        self._cleanup_paths.append(work)
        self.result['scratch'] = dict(path=space['path'], kind=space['kind'])
        path = os.path.join(work, 'image.%s' % req['image_type'])
        attachment = None
        try:
            try:
                pump = self._download_to_file(source, path, self._files_check_head)
                attachment = self._inspect(path, work)
            except NoSpaceError as exc:
                space = dict(space, fits=False, msg='The image does not fit in %s (%s): %s' % (
                    space['path'], space['kind'], exc.msg))
                self.result['space'] = space
                return self._does_not_fit(space, dest)
            except CommandError as exc:
                if 'No space left on device' not in (exc.stderr or ''):
                    raise
                space = dict(space, fits=False, msg='The unpacked image does not fit in %s (%s).' % (
                    space['path'], space['kind']))
                self.result['space'] = space
                return self._does_not_fit(space, dest)
        finally:
            self._detach(attachment)
        st = os.stat(path)
        info = dict(version=STAGE_VERSION, image_type=req['image_type'], url_id=url_id(req['url']),
                    file=os.path.basename(path), size=st.st_size, mtime_ns=st.st_mtime_ns,
                    digests={self.hash_type: pump.digest}, validators=source.validators(),
                    compression=pump.compression, downloaded_bytes=pump.downloaded, image_bytes=pump.produced,
                    virtual_size=self.result.get('virtual_size'), filesystem=self.result.get('filesystem'),
                    staged_at=int(time.time()))
        # the record of the staged copy is written once the copy is on its disk (a scratch_dir survives a power cut)
        sync_device(path)
        with Tree(work) as tree:
            tree.write_json(STAGE_INFO, info, mode=0o600)
        self._cleanup_paths.remove(work)  # kept for the run that copies it
        checks = ['checksum' if req.get('checksum') else 'digest computed (no checksum given)',
                  'format is %s' % req['image_type']]
        if req['image_type'] == 'qcow2':
            checks.append('qcow2 header (no backing file, external data file or encryption)')
        checks += ['exactly one partition', 'filesystem %s' % self.result.get('filesystem'),
                   'executable %s' % self.result.get('hook')]
        self.result.update(staged=True, fits=True, staged_path=path, checks=checks, changed=True,
                           msg='Downloaded and checked the %s image in %s (%s); no disk was written.'
                           % (req['image_type'], space['path'], space['kind']))
        return self._finish()

    def _usable_staged(self, staged):
        """``(info, reason)``: the record of a staged copy that can be used, or ``(None, why not)``."""
        path = os.path.abspath(staged)
        work = os.path.dirname(path)
        try:
            wst = os.lstat(work)
            with open(os.path.join(work, STAGE_INFO)) as f:
                info = json.load(f)
            fst = os.lstat(path)
        except (IOError, OSError, ValueError) as exc:
            return None, 'the staged copy %s cannot be used (%s); downloading again' % (staged, exc)
        if (not os.path.basename(work).startswith(STAGE_PREFIX) or not stat.S_ISDIR(wst.st_mode)
                or wst.st_uid != os.geteuid() or wst.st_mode & 0o077 or not stat.S_ISREG(fst.st_mode)):
            return None, '%s is not a staged copy made by this module; downloading again' % staged
        if info.get('file') != os.path.basename(path) or info.get('size') != fst.st_size \
                or info.get('mtime_ns') != fst.st_mtime_ns:
            return None, 'the staged copy %s changed since it was checked; downloading again' % staged
        ok, why = staged_matches(info, self.req, url_id(self.req['url']))
        if not ok:
            return None, '%s; downloading again' % why
        info['path'] = path
        return info, why

    def _copy_staged(self, info, dest):
        req = self.req
        work = os.path.dirname(info['path'])
        self._cleanup_paths.append(work)  # the staged copy is removed when done, also on failure
        digest = (info.get('digests') or {}).get(self.hash_type)
        self.result.update(checksum=digest, checksum_type=self.hash_type, downloaded_bytes=0,
                           staged_downloaded_bytes=info.get('downloaded_bytes'), compression=info.get('compression'),
                           image_bytes=info.get('image_bytes'), scratch=dict(path=os.path.dirname(work), kind='staged'))
        if info.get('virtual_size') is not None:
            self.result['virtual_size'] = info['virtual_size']
        attachment = None
        try:
            attachment = self._inspect(info['path'], work)
            record = dict(version=MARKER_VERSION, image_type=req['image_type'], mode='files',
                          digests=info.get('digests') or {}, validators=info.get('validators') or {},
                          compression=info.get('compression'), written_at=int(time.time()), dest=dest)
            self._copy_and_record(attachment, dest, record)
        finally:
            self._detach(attachment)
            self.cleanup()
        self.result['changed'] = True
        self.result['msg'] = 'Copied the files of the staged %s image onto %s (not downloaded again).' % (
            req['image_type'], dest)
        return self._finish()

    def _resolve_checksum(self):
        """``checksum: <type>:<URL>``: the digest is the checksum file's entry for the image's file name. The file is
        fetched under the image's policy (redirects, retries); the image's headers go to it only when it has the
        image URL's origin."""
        url = self.req.get('checksum_url')
        if not url:
            return
        shown = redact_url(url)
        same = origin(url) == origin(self.req['url']) and not url.startswith('file://')
        kwargs = self._src_kwargs()
        kwargs['headers'] = self.req['http_headers'] if same else {}
        try:
            source = open_source(url, **kwargs)
            try:
                buf = bytearray(SUMS_MAX + 1)
                view = memoryview(buf)
                n = readinto_full(source.stream, view) if source.stream is not None else 0
                view.release()
            finally:
                source.close()
        except DownloadError as exc:
            prefix = 'Could not download image located: %s (' % shown
            detail = exc.msg[len(prefix):-1] if exc.msg.startswith(prefix) else exc.msg
            raise ByolError('Could not download the checksum file %s (%s)' % (shown, detail), checksum_url=shown,
                            http_status=exc.status)
        if n > SUMS_MAX:
            raise ByolError('The checksum file %s is larger than %d bytes: is it a checksum file?' % (shown, SUMS_MAX),
                            checksum_url=shown)
        text = bytes(buf[:n]).decode('utf-8', 'replace')
        name = image_file_name(self.req['url'])
        self.req['checksum'] = checksum_from_file(text, name, self.req['checksum_type'], shown)
        self.result['checksum_url'] = shown
        self.result['checksum_headers_sent'] = bool(same and self.req['http_headers'])

    def run(self):
        try:
            self._resolve_checksum()
            if self.req['mode'] == 'disk':
                return self.run_disk()
            if self.req.get('stage_only'):
                return self.run_stage()
            return self.run_files()
        finally:
            self.cleanup()


def remove_staged(staged):
    """Remove a staged copy's directory (only one this module made); True if removed."""
    work = os.path.dirname(os.path.abspath(staged))
    if os.path.basename(work).startswith(STAGE_PREFIX) and os.path.isfile(os.path.join(work, STAGE_INFO)):
        shutil.rmtree(work, ignore_errors=True)
        return True
    return False


def _kind_of(mode):
    if stat.S_ISLNK(mode):
        return 'a symbolic link'
    if stat.S_ISDIR(mode):
        return 'a directory'
    if stat.S_ISREG(mode):
        return 'a regular file'
    return 'a special file'


def sync_device(device):
    """Flush what was written to ``device`` (or a file: its cache and the disk's write cache) before a record
    says it is there."""
    fd = os.open(device, os.O_RDONLY | getattr(os, 'O_CLOEXEC', 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def run_module(module, runner, result):
    """byol_image_burn (see ``_module.run_step``); a failure keeps what the run found out (format, digest...)."""
    req = validate_request(module.params)
    if req['mode'] == 'disk' and os.path.exists(req['device']):
        # a partition taken for a disk would get a partition table inside it
        blockdev.require_whole_disk(runner, req['device'], 'the image is written onto it, partition table included')
    take_server_lock(module, 'byol_image_burn', module.params['lock_timeout'])  # held until the module's process ends
    # check mode touches nothing, not even the progress file
    progress = Progress(module=module, path=None if module.check_mode else (req.get('progress_file') or None),
                        interval=req.get('progress_interval') or 10)
    burn = ImageBurn(module, runner, req, progress, check_mode=module.check_mode)
    try:
        return burn.run()
    except ByolError:
        result.update((k, v) for k, v in burn.result.items() if k not in ('msg', 'failed'))
        raise

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

import json
import os
import resource
import shutil
import stat
import tempfile
import time

from ansible_collections.baremetal.byol.plugins.module_utils import _blockdev as blockdev
from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError, ValidationError
from ansible_collections.baremetal.byol.plugins.module_utils._image_format import (
    HEAD_SIZE, FormatError, check_declared_format, detect_format, gpt_relocate_backup, min_raw_size, parse_qcow2_header, partition_table,
    qcow2_problems, qemu_img_info_problems, raw_table_or_fail)
from ansible_collections.baremetal.byol.plugins.module_utils._image_qcow2stream import Qcow2StreamPlan, Unsupported
from ansible_collections.baremetal.byol.plugins.module_utils._image_request import redact_url
from ansible_collections.baremetal.byol.plugins.module_utils._image_source import (
    DownloadError, ImagePump, head_source, open_source)
from ansible_collections.baremetal.byol.plugins.module_utils._image_write import (
    DeviceWriter, ImageAttachment, copy_tree, fingerprint, free_bytes, qemu_img_convert, signature_regions)

MIB = 1024 * 1024
MEMORY_RESERVE = 512 * MIB
SCRATCH_MARGIN = 64 * MIB
MARKER_VERSION = 1
FILES_MARKER = 'var/lib/baremetal-byol/image_burn.json'
TMPFS_CANDIDATES = ('/dev/shm', '/run/shm', '/tmp')


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


def parse_meminfo(text):
    """``/proc/meminfo`` -> dict name -> bytes."""
    out = {}
    for line in (text or '').splitlines():
        parts = line.replace(':', ' ').split()
        if len(parts) >= 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1]) * (1024 if len(parts) > 2 and parts[2] == 'kB' else 1)
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


def marker_matches(marker, req, remote=None):
    """Does ``marker`` (dict or None) record this image? Returns (bool or None, reason).

    None means "cannot tell without downloading" (no checksum, no usable validators).
    """
    if not marker or marker.get('version') != MARKER_VERSION:
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
        self.t0 = time.monotonic()
        self._cleanup_paths = []

    # -- shared ------------------------------------------------------------------------------
    def _src_kwargs(self):
        r = self.req
        return dict(headers=r['http_headers'], validate_certs=r['validate_certs'], ca_path=r.get('ca_path'),
                    timeout=r['timeout'])

    def _open(self):
        return open_source(self.req['url'], **self._src_kwargs())

    def _head(self):
        try:
            return head_source(self.req['url'], **self._src_kwargs())
        except DownloadError:
            if self.check_mode:
                raise
            return None

    def _pump(self, source):
        zstd = self.runner.which('zstd', required=False)
        return ImagePump(source, hash_type=self.hash_type, progress=self.progress, zstd_path=zstd)

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
        self.result['seconds'] = round(time.monotonic() - self.t0, 3)
        self.result['peak_rss'] = peak_rss()
        self.result['progress_reports'] = self.progress.reports
        return self.result

    def _scratch_for(self, source):
        with open('/proc/mounts') as f:
            mounts = parse_mounts(f.read())
        with open('/proc/meminfo') as f:
            mem = parse_meminfo(f.read())
        tmpfs = [(target, free_bytes(target)) for (_s, target, fs) in mounts if fs == 'tmpfs'
                 and target in TMPFS_CANDIDATES and os.access(target, os.W_OK)]
        sdir = self.req.get('scratch_dir')
        sfree = None
        if sdir:
            if not os.path.isdir(sdir):
                os.makedirs(sdir, 0o700)
            sfree = free_bytes(sdir)
        path, kind = choose_scratch(source.content_length, tmpfs, mem.get('MemAvailable'), sdir, sfree,
                                    self.req['image_type'])
        work = tempfile.mkdtemp(prefix='byol-image-burn-', dir=path)
        self._cleanup_paths.append(work)
        self.result['scratch'] = dict(path=path, kind=kind)
        return work

    def cleanup(self):
        for path in self._cleanup_paths:
            shutil.rmtree(path, ignore_errors=True)
        self._cleanup_paths = []

    def _download_to_file(self, source, path, check_head, started=None):
        """Stream the (decompressed) image into ``path`` while hashing; ``check_head(head)`` first.

        ``started``: ``(pump, iterator, head_chunks)`` of a download already begun and checked.
        """
        if started is None:
            pump = self._pump(source)
            self._download_phase(source)
            it = iter(pump)
        else:
            pump, it, chunks = started
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
                    raise ByolError('Could not download, %s image is too big to download in memory. (%s is full '
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

    def _qemu_info(self, path):
        res = self.runner.run(['qemu-img', 'info', '--output=json', '-f', self.req['image_type'], path])
        info = json.loads(res.stdout)
        problems = qemu_img_info_problems(info)
        if problems:
            raise FormatError('Refusing the image: %s' % '; '.join(problems))
        return info

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

    def _load_disk_marker(self, device, device_size):
        path = self._disk_marker_path(device)
        try:
            with open(path) as f:
                marker = json.load(f)
        except (IOError, OSError, ValueError):
            return None
        if marker.get('device_size') != device_size:
            return None
        size = marker.get('image_size') or 0
        if size > device_size or fingerprint(device, size) != marker.get('fingerprint'):
            return None
        return marker

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
        marker = self._load_disk_marker(device, device_size)
        skip, reason = self._idempotence(marker)
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
        marker = self._record(source, self._last_pump, dict(device=req['device'], device_size=device_size,
                                                            image_size=image_size,
                                                            fingerprint=fingerprint(device, image_size)))
        path = self._disk_marker_path(device)
        if not os.path.isdir(os.path.dirname(path)):
            os.makedirs(os.path.dirname(path), 0o700)
        with open(path + '.tmp', 'w') as f:
            json.dump(marker, f)
        os.rename(path + '.tmp', path)
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
        pump = self._pump(source)
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
                            writer.write_at(guest, view[start:start + length])
                        view.release()
                    offset += len(chunk)
                    pump.recycle(chunk)
                    self.progress.update(pump.downloaded)
                zero = plan.finish()
            except Unsupported as exc:
                fallback = str(exc)
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
            blockdev.reread_partitions(self.runner, device, expected=numbers)
            self._settle_after_close()
        blockdev.wait_for_paths(paths, timeout=30)
        self.result['partitions'] = paths

    # -- files mode --------------------------------------------------------------------------
    def run_files(self):
        req = self.req
        dest = req['dest']
        self.result['dest_dir'] = dest
        if not os.path.isdir(dest):
            raise ValidationError('dest %s is not a directory (mount the new filesystems there first)' % dest)
        marker_path = os.path.join(dest, FILES_MARKER)
        marker = None
        try:
            with open(marker_path) as f:
                marker = json.load(f)
        except (IOError, OSError, ValueError):
            marker = None
        skip, reason = self._idempotence(marker)
        self.result['reason'] = reason
        if skip:
            self.result['msg'] = 'The image is already copied onto %s (%s); nothing written.' % (dest, reason)
            self.result['checksum'] = (marker.get('digests') or {}).get(self.hash_type)
            return self._finish()
        if self.check_mode:
            plan = dict(action='copy', dest=dest, image_type=req['image_type'], reason=reason)
            head = self._head()
            if head is not None:
                plan['download_size'] = head.content_length
            self.result['plan'] = plan
            self.result['changed'] = True
            self.result['msg'] = 'Would download %s and copy its files onto %s (%s).' % (
                redact_url(req['url']), dest, reason)
            return self._finish()
        source = self._open()
        self.result['download_size'] = source.content_length
        work = self._scratch_for(source)
        path = os.path.join(work, 'image.%s' % req['image_type'])

        def check_head(head, _pump):
            if req['image_type'] == 'qcow2':
                self._check_qcow2_head(head)
            else:
                check_declared_format(head, 'raw')
                raw_table_or_fail(head)

        attachment = None
        try:
            pump = self._download_to_file(source, path, check_head)
            if req['image_type'] == 'qcow2':
                self._qemu_info(path)
            attachment = ImageAttachment(self.runner, path, req['image_type'], work,
                                         use_nbd={'auto': None, 'nbd': True, 'loop': False}[req['attach']])
            attachment.attach(progress=self.progress, virtual_size=self.result.get('virtual_size'))
            mnt = attachment.mount()
            hook = attachment.check_hook()
            self.result.update(attach_method=attachment.method, filesystem=attachment.fstype, hook=hook)
            # every check passed: dest is touched from here on
            used = _used_bytes(mnt)
            self.progress.start('copy', total=used)
            copy_tree(self.runner, mnt, dest, progress=self.progress)
            self.progress.end(used)
            self.result['copied_bytes'] = used
            marker = self._record(source, pump, dict(dest=dest))
            os.makedirs(os.path.dirname(marker_path), exist_ok=True)
            with open(marker_path + '.tmp', 'w') as f:
                json.dump(marker, f)
            os.rename(marker_path + '.tmp', marker_path)
            self.result['marker'] = marker_path
        finally:
            if attachment is not None:
                errors = attachment.close()
                if errors:
                    self.result['cleanup_errors'] = errors
            self.cleanup()
        self.result['changed'] = True
        self.result['msg'] = 'Copied the files of the %s image onto %s.' % (req['image_type'], dest)
        return self._finish()

    def run(self):
        try:
            if self.req['mode'] == 'disk':
                return self.run_disk()
            return self.run_files()
        finally:
            self.cleanup()


def _used_bytes(path):
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize

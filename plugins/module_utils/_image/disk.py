# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""``mode: disk`` (BYOI): the image onto the whole disk.

Do not use this from other collections or standalone plugins/modules!

Order: the record in ``state_dir`` (idempotence: the disk must still hold the image) -> disk free checks ->
download start; the first MiB is inspected (declared format, qcow2 header, raw partition table, sizes) BEFORE
the disk is opened for writing -> raw: streamed to the disk while hashed; qcow2: its clusters streamed onto the
disk while it downloads (:mod:`.qcow2stream`) or, when its layout does not allow it, to scratch space while
hashed, ``qemu-img info``/``check``, then ``qemu-img convert`` -> the kernel re-reads the table, the backup GPT
moves to the disk's end -> the record. A failure after the first write wipes the partition tables written.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time

from ansible_collections.baremetal.byol.plugins.module_utils import _blockdev as blockdev
from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError, ValidationError
from ansible_collections.baremetal.byol.plugins.module_utils._lock import ensure_dir
from ansible_collections.baremetal.byol.plugins.module_utils._image import record
from ansible_collections.baremetal.byol.plugins.module_utils._image.format import (
    HEAD_SIZE, FormatError, TruncatedError, check_qcow2_head, detect_format, gpt_relocate_backup, min_raw_size,
    partition_table, qemu_img_checks, raw_table_or_fail)
from ansible_collections.baremetal.byol.plugins.module_utils._image.qcow2stream import Incomplete, Qcow2StreamPlan, Unsupported
from ansible_collections.baremetal.byol.plugins.module_utils._image.request import redact_url
from ansible_collections.baremetal.byol.plugins.module_utils._image.scratch import download_to_file
from ansible_collections.baremetal.byol.plugins.module_utils._image.write import (
    DeviceWriter, qemu_img_convert, signature_regions, sync_device)


def run(job):
    req = job.req
    device = blockdev.real_device(req['device'])
    job.result['device'] = req['device']
    try:
        st = os.stat(device)
    except OSError as exc:
        raise ValidationError('device %s does not exist: %s' % (req['device'], exc.strerror))
    if not stat.S_ISBLK(st.st_mode):
        raise ValidationError('device %s is not a block device' % req['device'])
    device_size = blockdev.device_size(job.runner, device)
    job.result['device_size'] = device_size
    marker, why_not = load_marker(job, device, device_size)
    skip, reason = record.idempotence(job, marker)
    if why_not and not req.get('force'):
        reason = why_not
    job.result['reason'] = reason
    if skip:
        job.result['msg'] = 'The image on %s is already written (%s); nothing written.' % (req['device'], reason)
        job.result['checksum'] = record.recorded_digest(marker, job.fetch.hash_type)
        return job.finish()
    if job.check_mode:
        return plan(job, device_size, reason)
    blockdev.check_disks_free(job.runner, [device])
    source = job.fetch.open()
    job.result['download_size'] = source.content_length
    if req['image_type'] == 'raw':
        pump = burn_raw(job, source, device, device_size)
    else:
        pump = burn_qcow2(job, source, device, device_size)
    numbers = after_write(job, device)
    wait_partitions(job, device, numbers)
    image_size = job.result['image_bytes']
    # the record says the image is on the disk: only once it is (a power cut before this point leaves no
    # record, and the next run writes again)
    sync_device(device)
    state = disk_state(job.runner, device, image_size)
    marker = record.new_record('disk', req['image_type'], {job.fetch.hash_type: pump.digest}, source.validators(),
                               pump.compression, device=req['device'], device_size=device_size,
                               image_size=image_size, **state)
    path = os.path.join(req['state_dir'], record.disk_record_name(device))
    ensure_dir(os.path.dirname(path), 0o700, 'state_dir')
    record.write_record(os.path.dirname(path), os.path.basename(path), marker, mode=0o600)
    job.result['marker'] = path
    job.result['changed'] = True
    job.result['msg'] = 'Wrote the %s image (%d bytes) onto %s.' % (req['image_type'], image_size, req['device'])
    return job.finish()


def disk_state(runner, device, image_size, recorded_table=None):
    """What the disk holds today where the image wrote: its table (:func:`.record.table_record`), the sha256 of
    its boot code and boot area (None when all zeros; the area of ``recorded_table`` when given) and the
    fingerprint of sampled data. Reads only."""
    table = record.table_record(blockdev.read_table(runner, device))
    fd = os.open(device, os.O_RDONLY | getattr(os, 'O_CLOEXEC', 0))
    try:
        code = os.pread(fd, record.BOOT_CODE_BYTES, 0)
        offset, length = record.boot_area(recorded_table or table)
        area = os.pread(fd, length, offset) if length else b''
    finally:
        os.close(fd)
    return dict(table=table,
                boot_code=hashlib.sha256(code).hexdigest() if code.strip(b'\0') else None,
                boot_area=hashlib.sha256(area).hexdigest() if area.strip(b'\0') else None,
                fingerprint=record.fingerprint(device, image_size))


def load_marker(job, device, device_size):
    """``(marker, why not)``: the record of the image written on ``device`` when the disk still holds it (its
    partition table, boot code, boot area and sampled data are checked), else ``(None, what differs)``."""
    marker = record.read_record(job.req['state_dir'], record.disk_record_name(device), strict=False)
    if marker is None:
        return None, 'no record of a previous write'
    if marker.get('device_size') != device_size:
        return None, 'the disk size changed since the image was written'
    if not marker.get('table'):
        return None, 'the record of the previous write has nothing to check the disk against (an older version)'
    size = marker.get('image_size') or 0
    if size > device_size:
        return None, 'the recorded image is larger than the disk'
    diffs = record.disk_differences(marker, disk_state(job.runner, device, size, marker['table']))
    if diffs:
        job.result['disk_differences'] = diffs
        return None, 'the disk no longer holds the image written before (%s)' % '; '.join(diffs)
    return marker, None


def plan(job, device_size, reason):
    req = job.req
    planned = dict(action='write', device=req['device'], device_size=device_size, image_type=req['image_type'],
                   reason=reason)
    head = job.fetch.head()
    if head is not None:
        planned['download_size'] = head.content_length
        if (req['image_type'] == 'raw' and head.content_length and head.content_length > device_size
                and not req['url'].split('?')[0].endswith(('.xz', '.gz', '.zst', '.bz2'))):
            planned['warning'] = ('the download (%d bytes) is larger than the device (%d bytes), unless it is '
                                  'compressed' % (head.content_length, device_size))
    job.result['plan'] = planned
    job.result['changed'] = True
    job.result['msg'] = 'Would download %s and write it onto %s (%s).' % (redact_url(req['url']), req['device'], reason)
    return job.finish()


def size_error(size, device_size, at_least=False):
    return ByolError('image provided has a size of %s%d bytes which is larger than device of %d bytes'
                     % ('at least ' if at_least else '', size, device_size), image_size=size,
                     device_size=device_size)


def burn_raw(job, source, device, device_size):
    """Stream the raw image onto ``device`` while it downloads; returns the pump."""
    fetch = job.fetch
    # the first byte past the device stops the download (and the decompression) at once
    pump = fetch.pump(source, limit=device_size, limit_error=lambda n: size_error(n, device_size, at_least=True))
    fetch.start(source)
    it = iter(pump)
    head, chunks = fetch.collect_head(it)
    try:
        fmt = detect_format(head)
        if fmt != 'raw':
            raise FormatError('image provided format is %s which does not match expected raw format' % fmt)
        known = None
        if pump.compression is None and source.content_length is not None:
            known = source.content_length
            job.result['virtual_size'] = known
        elif pump.compression is None and sum(len(c) for c in chunks) < HEAD_SIZE:
            known = sum(len(c) for c in chunks)
        raw_table_or_fail(head, known)
        kind, _info = partition_table(head)
        job.result['partition_table'] = kind
        need = max(known or 0, min_raw_size(head))
        if need > device_size:
            raise size_error(need, device_size, at_least=known is None)
    except Exception:
        pump.stop()
        raise
    # Everything checkable is checked: only now is the disk opened for writing.
    writer = DeviceWriter(device)
    job.result['changed'] = True
    overflow = None
    try:
        job.progress.set_total(source.content_length)
        for chunk in fetch.chain(chunks, it):
            if overflow is None and writer.offset + len(chunk) > device_size:
                overflow = writer.offset
            if overflow is None:
                writer.write(chunk)
            pump.recycle(chunk)
            job.progress.update(pump.downloaded)
    except Exception:
        pump.stop()
        writer.close(sync=True)
        # part of the image is on the disk: remove the partition tables it wrote
        wipe(job, device, max(writer.offset, min_raw_size(head)), head)
        raise
    finally:
        source.close()
    write_summary = job.progress.end(pump.downloaded)
    fetch.done(pump)
    job.result['written_bytes'] = writer.written
    job.result['zeroed_bytes'] = writer.zeroed
    written_end = writer.offset
    writer.close(sync=True)
    if write_summary:
        write_summary['phase'] = 'download+write'
    if overflow is not None:
        wipe(job, device, written_end, head)
        raise size_error(pump.produced, device_size)
    try:
        fetch.check_digest(pump)
    except ByolError:
        wipe(job, device, written_end, head)
        raise
    return pump


def wipe(job, device, written, head):
    writer = DeviceWriter(device, zero_out=False, direct=False)
    try:
        writer.wipe(signature_regions(written, min_raw_size(head)))
    finally:
        writer.close(sync=True)
    settle_after_close(job)
    blockdev.reread_partitions(job.runner, device)
    settle_after_close(job)
    job.result['wiped_signatures'] = True


def burn_qcow2(job, source, device, device_size):
    """Stream the clusters onto the disk while downloading when the layout allows it (no
    scratch space needed), else download to scratch space and ``qemu-img convert``; returns the pump."""
    fetch = job.fetch
    pump = fetch.pump(source)
    fetch.start(source)
    it = iter(pump)
    head, chunks = fetch.collect_head(it)

    def check_head(head, _pump=None):
        info = check_qcow2_head(head, job.result)
        if info['virtual_size'] > device_size:
            raise size_error(info['virtual_size'], device_size)
        return info

    try:
        info = check_head(head)
    except Exception:
        pump.stop()
        source.close()
        raise
    streamed, fallback = None, None
    if job.req.get('qcow2_streaming', True):
        try:
            streamed = Qcow2StreamPlan(info, head)
        except Unsupported as exc:
            fallback = str(exc)
    if streamed is not None:
        # a qcow2 file larger than its tables allow (a decompression bomb) stops at once
        bound = streamed.max_file_size()
        pump.limit_error = lambda n: FormatError(
            'Refusing the image: the qcow2 data is larger than a qcow2 image of virtual size %d bytes can be '
            '(more than %d bytes)' % (info['virtual_size'], bound))
        pump.limit = bound
    if streamed is None:
        return qcow2_via_scratch(job, source, device, check_head, (pump, it, chunks), fallback)
    vsize = info['virtual_size']
    # every check on the header passed: the disk is written from here on
    writer = DeviceWriter(device)
    job.result['changed'] = True
    offset = 0
    zero = None
    try:
        try:
            for chunk in fetch.chain(chunks, it):
                writes = streamed.feed(offset, chunk)
                if writes:
                    view = memoryview(chunk)
                    for guest, start, length in writes:
                        # a whole piece of data clusters goes as it is (a page-aligned buffer: O_DIRECT without a copy)
                        writer.write_at(guest, chunk if start == 0 and length == len(chunk)
                                        else view[start:start + length])
                    view.release()
                # compressed clusters completed by this piece, inflated one at a time
                for guest, data in streamed.inflated():
                    writer.write_at(guest, data)
                offset += len(chunk)
                pump.recycle(chunk)
                job.progress.update(pump.downloaded)
            for guest, data in streamed.finish_inflated():
                writer.write_at(guest, data)
            zero = streamed.finish()
        except Unsupported as exc:
            fallback = str(exc)
        except Incomplete as exc:
            raise TruncatedError("Can't write qcow2 on disk: the qcow2 image is incomplete, %s: the download was "
                                 "cut or the image is damaged" % exc)
    except Exception:
        pump.stop()
        source.close()
        writer.close(sync=True)
        wipe(job, device, vsize, b'')
        raise
    if fallback is not None:
        pump.stop()
        source.close()
        writer.close(sync=False)
        job.progress.end(pump.downloaded)
        # not streamable after all: download again into scratch space; qemu-img convert then
        # rewrites the whole virtual disk
        try:
            return qcow2_via_scratch(job, fetch.open(), device, check_head, None, fallback)
        except Exception:
            # part of the image is on the disk: remove the partition tables it wrote
            wipe(job, device, vsize, b'')
            raise
    source.close()
    summary = job.progress.end(pump.downloaded)
    if summary:
        summary['phase'] = 'download+write'
    job.result.update(downloaded_bytes=pump.downloaded, compression=pump.compression, image_bytes=vsize,
                      qcow2_streamed=True)
    try:
        fetch.check_digest(pump)
    except ByolError:
        writer.close(sync=True)
        wipe(job, device, vsize, b'')
        raise
    job.progress.start('zero', total=sum(length for _o, length in zero))
    for zoffset, length in zero:
        writer.zero_range(zoffset, length)
    writer.close(sync=True)
    job.progress.end(sum(length for _o, length in zero))
    return pump


def qcow2_via_scratch(job, source, device, check_head, started, fallback):
    work = job.scratch.for_source(source)
    path = os.path.join(work, 'image.qcow2')
    try:
        pump = download_to_file(job, source, path, check_head, started=started)
        qemu_img_checks(job.runner, path, 'qcow2')
        vsize = job.result['virtual_size']
        job.result['qcow2_streamed'] = False
        if fallback:
            job.result['qcow2_stream_fallback'] = fallback
        job.progress.start('write', total=vsize)
        job.result['changed'] = True
        qemu_img_convert(job.runner, path, 'qcow2', device, progress=job.progress, total=vsize)
        job.progress.end(vsize)
        job.result['image_bytes'] = vsize
    finally:
        job.scratch.cleanup()
    return pump


def after_write(job, device):
    """Re-read the partition table; move the backup GPT header to the real end of the disk."""
    with open(device, 'rb') as f:
        head = f.read(HEAD_SIZE)
    kind, info = partition_table(head)
    job.result['partition_table'] = kind
    if kind == 'gpt':
        try:
            writes = gpt_relocate_backup(head, blockdev.device_size(job.runner, device))
        except FormatError:
            writes = None
        if writes is None:
            job.runner.run(['sgdisk', '-e', device])
        elif writes:
            fd = os.open(device, os.O_WRONLY | getattr(os, 'O_CLOEXEC', 0))
            try:
                for offset, data in writes:
                    os.pwrite(fd, data, offset)
                os.fsync(fd)
            finally:
                os.close(fd)
        job.result['gpt_backup_moved'] = True
        with open(device, 'rb') as f:
            head = f.read(HEAD_SIZE)
        kind, info = partition_table(head)
        numbers = [p['number'] for p in (info or {}).get('partitions', [])]
    elif kind == 'dos':
        numbers = [e['number'] for e in info]
    else:
        numbers = []
    return numbers


def settle_after_close(job):
    """udev watches disks: closing a writer makes it re-read the table (partitions go and come
    back). Let it see the close, then wait for its queue, so the nodes are stable on return."""
    time.sleep(0.3)
    blockdev.settle(job.runner)


def wait_partitions(job, device, numbers):
    settle_after_close(job)
    paths = [blockdev.partition_path(device, n) for n in numbers]
    if not all(os.path.exists(p) for p in paths) or not numbers:
        blockdev.flush_buffers(job.runner, device)  # the image went there with O_DIRECT: no stale table
        blockdev.reread_partitions(job.runner, device, expected=numbers)
        settle_after_close(job)
    blockdev.wait_for_paths(paths, timeout=30)
    job.result['partitions'] = paths

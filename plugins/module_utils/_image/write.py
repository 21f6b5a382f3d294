# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Writing images: raw streams onto a disk (:class:`DeviceWriter`), qcow2 through ``qemu-img convert``, BYOL trees
with ``rsync``. The steps that use them: :mod:`.disk` (mode disk) and :mod:`.files` (mode files).

Do not use this from other collections or standalone plugins/modules!
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import re
import stat
import struct
import subprocess
import tempfile

from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError, CommandError

BLKZEROOUT = 0x127f  # _IO(0x12, 127)
MIB = 1024 * 1024


class DeviceWriter(object):
    """Sequential writer onto a block device (or file) opened exclusively.

    On a block device the data goes with ``O_DIRECT`` from page-aligned buffers (no page
    cache: less memory and, on most devices, faster than buffered writes plus a final flush).
    All-zero, 512-aligned chunks are zeroed with ``BLKZEROOUT`` (the device zeroes them
    without the data crossing the bus, like ``qemu-img``'s write-zeroes); where the ioctl is
    refused, the zeroes are written.
    """

    def __init__(self, path, limit=None, zero_out=True, direct=True):
        flags = os.O_WRONLY | getattr(os, 'O_CLOEXEC', 0)
        self.is_block = False
        try:
            self.is_block = stat.S_ISBLK(os.stat(path).st_mode)
        except OSError:
            pass
        if self.is_block:
            flags |= os.O_EXCL
        self.direct = bool(direct and self.is_block and hasattr(os, 'O_DIRECT'))
        try:
            self.fd = os.open(path, flags | (os.O_DIRECT if self.direct else 0))
        except OSError as exc:
            if self.direct and exc.errno == errno.EINVAL:
                self.direct = False
                self.fd = os.open(path, flags)
            else:
                raise ByolError("Can't write raw on disk: cannot open %s for writing: %s" % (path, exc.strerror),
                                device=path)
        self.path = path
        self.limit = limit
        self.offset = 0
        self.zero_out = zero_out and self.is_block
        self.zeroed = 0
        self.written = 0
        self._zero = None
        self._stage = None
        self._pending_zero = None

    def _set_direct(self, on):
        fl = fcntl.fcntl(self.fd, fcntl.F_GETFL)
        fcntl.fcntl(self.fd, fcntl.F_SETFL, (fl | os.O_DIRECT) if on else (fl & ~os.O_DIRECT))
        self.direct = on

    def _is_zero(self, data, n):
        if self._zero is None or len(self._zero) != n:
            self._zero = bytes(n)
        # cheap early exit for data, then the full comparison
        if bytes(data[:4096]) != self._zero[:4096]:
            return False
        return bytes(data) == self._zero

    def write_at(self, offset, data):
        """Write ``data`` at ``offset`` (later writes continue after it)."""
        if offset != self.offset:
            self._flush_zero()
        self.offset = offset
        self.write(data)

    def zero_range(self, offset, length):
        """Make [offset, offset+length) read as zeroes (BLKZEROOUT, else written zeroes)."""
        self._flush_zero()
        if self.zero_out and offset % 512 == 0 and length % 512 == 0:
            try:
                fcntl.ioctl(self.fd, BLKZEROOUT, struct.pack('QQ', offset, length))
                self.zeroed += length
                return
            except (IOError, OSError):
                self.zero_out = False
        self._write_zeroes(offset, length)
        self.offset = offset + length

    def _flush_zero(self):
        """Zero the pending run of all-zero chunks with one BLKZEROOUT."""
        pending, self._pending_zero = self._pending_zero, None
        if pending is None:
            return
        start, length = pending
        try:
            fcntl.ioctl(self.fd, BLKZEROOUT, struct.pack('QQ', start, length))
            self.zeroed += length
        except (IOError, OSError):
            self.zero_out = False
            self._write_zeroes(start, length)

    def _write_zeroes(self, start, length):
        """Write zeroes over [start, start+length) where BLKZEROOUT is refused; ``offset`` stays where it is. The
        buffer is page-aligned (an anonymous mmap) so an ``O_DIRECT`` descriptor takes it as it is."""
        zero = mmap.mmap(-1, min(length, 4 * MIB))
        try:
            view = memoryview(zero)
            pos = 0
            while pos < length:
                n = min(len(zero), length - pos)
                self._pwrite_all(view[:n], start + pos)
                pos += n
            view.release()
        finally:
            zero.close()

    def write(self, data):
        n = len(data)
        if self.zero_out and n % 512 == 0 and self.offset % 512 == 0 and n >= 65536 and self._is_zero(data, n):
            pending = self._pending_zero
            if pending is not None and pending[0] + pending[1] == self.offset:
                self._pending_zero = (pending[0], pending[1] + n)
            else:
                self._flush_zero()
                self._pending_zero = (self.offset, n)
            self.offset += n
            return
        self._flush_zero()
        if self.direct:
            if n % 4096 or self.offset % 4096:
                self._set_direct(False)  # an unaligned tail: the page cache takes it
            elif not isinstance(data, mmap.mmap):
                if self._stage is None or len(self._stage) < n:
                    self._stage = mmap.mmap(-1, n)
                self._stage[:n] = data
                data = memoryview(self._stage)[:n]
        self._pwrite_all(data, self.offset)
        self.offset += n

    def _pwrite_all(self, data, offset):
        view = memoryview(data)
        n = len(view)
        pos = 0
        try:
            while pos < n:
                try:
                    done = os.pwrite(self.fd, view[pos:], offset + pos)
                except OSError as exc:
                    if self.direct and exc.errno == errno.EINVAL:
                        self._set_direct(False)
                        continue
                    raise ByolError("Can't write raw on disk: writing %s at byte %d failed: %s"
                                    % (self.path, offset + pos, exc.strerror), device=self.path, errno=exc.errno)
                pos += done
                self.written += done
        finally:
            view.release()

    def wipe(self, regions):
        """Overwrite ``regions`` (list of (offset, length)) with zeroes."""
        self._flush_zero()
        for offset, length in regions:
            if length <= 0:
                continue
            zero = bytes(min(length, MIB))
            pos = 0
            while pos < length:
                n = min(len(zero), length - pos)
                os.pwrite(self.fd, zero[:n], offset + pos)
                pos += n

    def close(self, sync=True):
        if self.fd is None:
            return
        try:
            self._flush_zero()
            if sync:
                try:
                    os.fsync(self.fd)
                except OSError as exc:
                    raise ByolError("Can't write raw on disk: flushing %s failed: %s" % (self.path, exc.strerror),
                                    device=self.path)
        finally:
            os.close(self.fd)
            self.fd = None


def signature_regions(written, head_min_size=0):
    """Where a raw image's partition-table signatures are: first MiB and the last MiB written."""
    regions = [(0, min(MIB, written))]
    end = max(written, head_min_size)
    if end > MIB:
        start = max(MIB, end - MIB)
        regions.append((start, end - start))
    return regions


_QEMU_PROGRESS = re.compile(r'\((\d+(?:\.\d+)?)/100%\)')


def run_with_progress(args, show, window=4096):
    """Run ``args`` (C locale), calling ``show(text)`` with the last ``window`` bytes of its output as they
    come (run_command cannot report progress while a command runs); returns ``(rc, stderr)``.

    stderr goes to a temporary file, not a pipe: a command that writes much to stderr (rsync naming
    each file it cannot copy) must not block on a full pipe while stdout is being read.
    """
    with tempfile.TemporaryFile() as err:
        # pylint: disable-next=ansible-bad-function
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, close_fds=True,
                                env=dict(os.environ, LANG='C', LC_ALL='C'))
        buf = b''
        while True:
            piece = proc.stdout.read1(window) if hasattr(proc.stdout, 'read1') else proc.stdout.read(64)
            if not piece:
                break
            buf = (buf + piece)[-window:]
            show(buf.decode('ascii', 'replace'))
        rc = proc.wait()
        err.seek(0)
        return rc, err.read().decode('utf-8', 'replace')


def qemu_img_convert(runner, source, source_format, target, progress=None, total=None, target_is_device=True,
                     cache_none=True):
    """``qemu-img convert -f <fmt> -O raw`` ``source`` onto ``target`` with progress.

    On a device: ``-n`` (no target creation); zero areas become write-zeroes requests.
    Raises ByolError with the guide's ``Can't write <type> on disk`` and qemu-img's message.
    """
    qemu_img = runner.which('qemu-img')
    args = [qemu_img, 'convert', '-p', '-f', source_format, '-O', 'raw']
    if target_is_device:
        args += ['-n', '-W']
        if cache_none:
            args += ['-t', 'none']
    args += [source, target]

    def show(text):
        m = None
        for m in _QEMU_PROGRESS.finditer(text):
            pass
        if m is not None and progress is not None and total:
            progress.update(int(total * float(m.group(1)) / 100.0))

    rc, stderr = run_with_progress(args, show, window=256)
    if rc != 0:
        if cache_none and target_is_device and 'O_DIRECT' in stderr or (cache_none and 'Invalid argument' in stderr):
            return qemu_img_convert(runner, source, source_format, target, progress, total, target_is_device,
                                    cache_none=False)
        raise CommandError("Can't write %s on disk: %s" % (source_format, stderr.strip()), cmd=args, rc=rc,
                           stdout='', stderr=stderr)
    return args


_RSYNC_PROGRESS = re.compile(r'^\s*([\d,]+)\s+\d+%')


def copy_tree(runner, source, dest, progress=None):
    """``rsync -aHAXx --numeric-ids --sparse`` the mounted image onto ``dest`` with progress."""
    rsync = runner.which('rsync')
    args = [rsync, '-aHAXx', '--numeric-ids', '--sparse', '--info=progress2', '--no-inc-recursive',
            source.rstrip('/') + '/', dest.rstrip('/') + '/']

    def show(text):
        for line in reversed(re.split(r'[\r\n]', text)):
            m = _RSYNC_PROGRESS.match(line)
            if m:
                if progress is not None:
                    progress.update(int(m.group(1).replace(',', '')))
                break

    rc, stderr = run_with_progress(args, show, window=4096)
    if rc != 0:
        raise CommandError('Copying the image onto %s failed (rsync exit code %d): %s' % (dest, rc, stderr.strip()),
                           cmd=args, rc=rc, stdout='', stderr=stderr)
    return args


def sync_device(device):
    """Flush what was written to ``device`` (or a file: its cache and the disk's write cache) before a record
    says it is there."""
    fd = os.open(device, os.O_RDONLY | getattr(os, 'O_CLOEXEC', 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

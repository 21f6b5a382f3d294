# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Writing images: raw streams onto a disk, qcow2 through qemu-img, BYOL trees with rsync.

Do not use this from other collections or standalone plugins/modules!
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import mmap
import os
import re
import stat
import struct
import subprocess
import tempfile

from ansible_collections.baremetal.byol.plugins.module_utils import _blockdev
from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError, CommandError
from ansible_collections.baremetal.byol.plugins.module_utils._lock import ensure_dir
from ansible_collections.baremetal.byol.plugins.module_utils._image.format import (
    FormatError, HOOK_PATH, check_byol_filesystem, single_partition)

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
        zero = bytes(min(length, 4 * MIB))
        pos = 0
        while pos < length:
            n = min(len(zero), length - pos)
            self.write_at(offset + pos, zero[:n])
            pos += n

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
            zero = bytes(min(length, 4 * MIB))
            pos = 0
            while pos < length:
                n = min(len(zero), length - pos)
                self._pwrite_all(zero[:n], start + pos)
                pos += n

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


FINGERPRINT_SAMPLES = 32
FINGERPRINT_BLOCK = 64 * 1024


def fingerprint_offsets(image_size):
    """Offsets sampled to recognise a written image (pure).

    The first and last MiB are skipped: the partition tables live there and later steps
    (``sgdisk -e``, the config drive) change them. What the image defines there (the table's
    partitions and GUIDs, the boot code, the boot loader's area) is compared on its own by
    ``_image.record.disk_differences``: the fingerprint alone never vouches for a disk.
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


# ---------------------------------------------------------------------------------------------
# BYOL (mode files)

def nbd_available(runner):
    """True where the nbd kernel module is loaded or loadable."""
    if os.path.isdir('/sys/module/nbd'):
        return True
    if runner.which('modprobe', required=False):
        runner.run(['modprobe', 'nbd', 'max_part=16'], check=False)
    return os.path.isdir('/sys/module/nbd') and os.path.exists('/dev/nbd0')


NBD_LOCK = '/run/lock/byol-nbd.lock'


class _NbdLock(object):
    """Serialise "find a free /dev/nbdN and connect it" between concurrent runs on one host.

    A free device is only recognisable as such (no ``pid``, size 0) until qemu-nbd has connected it,
    so two runs that both pick it before either connects would collide: the choice and the
    connection happen under one exclusive ``flock``.
    """

    def __init__(self, path=None):
        self.path = path or NBD_LOCK
        self.fd = None

    def __enter__(self):
        ensure_dir(os.path.dirname(self.path), 0o755, 'lock directory')
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ByolError('The lock file %s cannot be opened: %s (a symbolic link there is refused)'
                            % (self.path, exc.strerror))
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None
        return False


def _free_nbd():
    i = 0
    while os.path.exists('/sys/block/nbd%d' % i):
        if not os.path.exists('/sys/block/nbd%d/pid' % i):
            size = '/sys/block/nbd%d/size' % i
            try:
                with open(size) as f:
                    if int(f.read().strip() or 0) == 0:
                        return '/dev/nbd%d' % i
            except (IOError, ValueError):
                return '/dev/nbd%d' % i
        i += 1
    raise ByolError('No free /dev/nbd device for the image')


class ImageAttachment(object):
    """Attach a downloaded BYOL image read-only and mount its single partition.

    With nbd: ``qemu-nbd --read-only``. Without (a kernel without nbd, like the test host):
    ``qemu-img convert`` to a sparse raw file in scratch space, then a read-only loop device
    at the partition's offset. Everything is undone by :meth:`close` (also on errors).
    """

    def __init__(self, runner, image_path, image_format, workdir, use_nbd=None):
        self.runner = runner
        self.image_path = image_path
        self.image_format = image_format
        self.workdir = workdir
        self.use_nbd = nbd_available(runner) if use_nbd is None else use_nbd
        self.nbd = None
        self.loop = None
        self.raw_path = None
        self.mountpoint = None
        self.partition = None
        self.fstype = None
        self.method = None
        self.table = None

    def attach(self, progress=None, virtual_size=None):
        if self.use_nbd:
            self.method = 'qemu-nbd'
            with _NbdLock():
                nbd = _free_nbd()
                self.runner.run(['qemu-nbd', '--read-only', '--format=%s' % self.image_format,
                                 '--connect=%s' % nbd, self.image_path])
                self.nbd = nbd
            _blockdev.settle(self.runner)
            self.table = _blockdev.table_summary(_blockdev.read_table(self.runner, self.nbd))
            offset, size = single_partition(self.table)
            node = self.table['partitions'][0]['node'] or '%sp1' % self.nbd
            try:
                _blockdev.wait_for_paths([node], timeout=10)
                self.partition = node
            except ByolError:
                # nbd loaded without partition support (max_part=0): a loop device at the offset
                self.loop = self.runner.run(['losetup', '--find', '--show', '--read-only', '--offset', str(offset),
                                             '--sizelimit', str(size), self.nbd]).stdout.strip()
                self.partition = self.loop
        else:
            self.method = 'loop'
            if self.image_format == 'raw':
                self.raw_path = self.image_path
            else:
                self.raw_path = os.path.join(self.workdir, 'image.raw')
                if progress is not None:
                    progress.start('unpack', total=virtual_size)
                qemu_img_convert(self.runner, self.image_path, self.image_format, self.raw_path, progress=progress,
                                 total=virtual_size, target_is_device=False)
                if progress is not None:
                    progress.end(virtual_size)
            self.table = _blockdev.table_summary(_blockdev.read_table(self.runner, self.raw_path))
            offset, size = single_partition(self.table)
            self.loop = self.runner.run(['losetup', '--find', '--show', '--read-only', '--offset', str(offset),
                                         '--sizelimit', str(size), self.raw_path]).stdout.strip()
            self.partition = self.loop
        return self.partition

    def mount(self):
        info = _blockdev.probe(self.runner, self.partition)
        self.fstype = info.get('TYPE')
        check_byol_filesystem(self.fstype)
        self.mountpoint = tempfile.mkdtemp(prefix='byol-image-', dir=self.workdir)
        opts = 'ro,noload' if self.fstype == 'ext4' else 'ro,norecovery,nouuid'
        self.runner.run(['mount', '-t', self.fstype, '-o', opts, self.partition, self.mountpoint])
        return self.mountpoint

    def check_hook(self):
        """The executable hook must be inside; raise FormatError (nothing touched yet) otherwise."""
        path = resolve_inside(self.mountpoint, HOOK_PATH)
        shown = '/' + HOOK_PATH
        if path is None or not os.path.lexists(path):
            raise FormatError('the BYOL image has no %s: add an executable script at that path to the image' % shown)
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise FormatError('%s in the BYOL image is not a regular file' % shown)
        if not st.st_mode & 0o111:
            raise FormatError('%s in the BYOL image is not executable (mode %04o): chmod +x it in the image'
                              % (shown, stat.S_IMODE(st.st_mode)))
        return shown

    def close(self):
        errors = []
        if self.mountpoint:
            res = self.runner.run(['umount', self.mountpoint], check=False)
            if res.rc != 0:
                res = self.runner.run(['umount', '-l', self.mountpoint], check=False)
                if res.rc != 0:
                    errors.append(res.stderr)
            try:
                os.rmdir(self.mountpoint)
            except OSError:
                pass
            self.mountpoint = None
        if self.loop:
            res = self.runner.run(['losetup', '--detach', self.loop], check=False)
            if res.rc != 0:
                errors.append(res.stderr)
            self.loop = None
        if self.nbd:
            self.runner.run(['qemu-nbd', '--disconnect', self.nbd], check=False)
            self.nbd = None
        if self.raw_path and self.raw_path != self.image_path:
            try:
                os.unlink(self.raw_path)
            except OSError:
                pass
            self.raw_path = None
        return errors


def resolve_inside(root, relpath, max_links=20):
    """Resolve ``relpath`` under ``root`` following symlinks as if ``root`` were ``/``."""
    parts = [p for p in relpath.split('/') if p]
    cur = root
    links = 0
    while parts:
        name = parts.pop(0)
        if name == '.':
            continue
        if name == '..':
            if cur != root:
                cur = os.path.dirname(cur)
            continue
        nxt = os.path.join(cur, name)
        if os.path.islink(nxt):
            links += 1
            if links > max_links:
                return None
            target = os.readlink(nxt)
            if target.startswith('/'):
                cur = root
            parts = [p for p in target.split('/') if p] + parts
            continue
        cur = nxt
    return cur


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

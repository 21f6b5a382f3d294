# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Attaching a downloaded BYOL image read-only: ``qemu-nbd``, or a loop device at its partition's offset, and
the partition mounted; then the checks on what is inside (filesystem, hook, the record's path) before any file
is copied.

Do not use this from other collections or standalone plugins/modules!
"""

from __future__ import annotations

import fcntl
import os
import stat
import tempfile

from ansible_collections.baremetal.byol.plugins.module_utils import _blockdev
from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError
from ansible_collections.baremetal.byol.plugins.module_utils._lock import ensure_dir
from ansible_collections.baremetal.byol.plugins.module_utils._image.format import (
    FormatError, HOOK_PATH, check_byol_filesystem, qemu_img_checks, single_partition)
from ansible_collections.baremetal.byol.plugins.module_utils._image.record import check_record_path
from ansible_collections.baremetal.byol.plugins.module_utils._image.write import qemu_img_convert

ATTACH_MODES = {'auto': None, 'nbd': True, 'loop': False}


def wants_nbd(runner, attach, check_mode=False):
    """Will the image be attached with qemu-nbd (``attach``: auto, nbd or loop)? Check mode loads no kernel
    module: only a loaded nbd counts then."""
    mode = attach or 'auto'
    if mode == 'auto':
        return os.path.isdir('/sys/module/nbd') if check_mode else nbd_available(runner)
    return mode == 'nbd'


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


def inspect(job, path, work):
    """Attach the downloaded image ``path`` read-only, mount its one partition, check filesystem, hook and the
    record's path. Returns the attachment (the caller closes it with :func:`detach`); nothing outside ``work``
    is written."""
    req = job.req
    if req['image_type'] == 'qcow2':
        qemu_img_checks(job.runner, path, req['image_type'])
    attachment = ImageAttachment(job.runner, path, req['image_type'], work, use_nbd=ATTACH_MODES[req['attach']])
    try:
        attachment.attach(progress=job.progress, virtual_size=job.result.get('virtual_size'))
        attachment.mount()
        hook = attachment.check_hook()
        check_record_path(attachment.mountpoint)
    except Exception:
        detach(job, attachment)
        raise
    job.result.update(attach_method=attachment.method, filesystem=attachment.fstype, hook=hook)
    return attachment


def detach(job, attachment):
    """Undo an attachment (if any); what could not be undone is reported in ``cleanup_errors``."""
    if attachment is None:
        return
    errors = attachment.close()
    if errors:
        job.result['cleanup_errors'] = errors

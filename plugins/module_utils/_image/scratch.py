# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Scratch space: where a downloaded image is kept while it is checked (a tmpfs when it fits in memory, else
``scratch_dir``), the staged copies of ``stage_only``, and their cleanup.

Do not use this from other collections or standalone plugins/modules!
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time

from ansible_collections.baremetal.byol.plugins.module_utils._blockdev import free_bytes, meminfo
from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError
from ansible_collections.baremetal.byol.plugins.module_utils._lock import ensure_dir
from ansible_collections.baremetal.byol.plugins.module_utils._treefs import check_dirs
from ansible_collections.baremetal.byol.plugins.module_utils._image import record
from ansible_collections.baremetal.byol.plugins.module_utils._image.attach import wants_nbd

MIB = 1024 * 1024
MEMORY_RESERVE = 512 * MIB
SCRATCH_MARGIN = 64 * MIB
TMPFS_CANDIDATES = ('/dev/shm', '/run/shm', '/tmp')
STAGE_PREFIX = 'byol-image-burn-stage-'
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


def memory_limit(path):
    """What memory allows a tmpfs at ``path`` to take (MemAvailable less :data:`MEMORY_RESERVE`), or None when
    ``path`` is not on a tmpfs."""
    with open('/proc/mounts') as f:
        mounts = parse_mounts(f.read())
    fstype = None
    real = os.path.realpath(path)
    best = ''
    for _src, target, fs in mounts:
        if (real == target or real.startswith(target.rstrip('/') + '/')) and len(target) >= len(best):
            best, fstype = target, fs
    if fstype != 'tmpfs':
        return None
    mem = meminfo().get('MemAvailable')
    return None if mem is None else mem - MEMORY_RESERVE


def memory_and_tmpfs():
    """``([(tmpfs path, free bytes)], MemAvailable)``: the RAM-backed places a download may go."""
    with open('/proc/mounts') as f:
        mounts = parse_mounts(f.read())
    mem = meminfo()
    tmpfs = [(target, free_bytes(target)) for (_s, target, fs) in mounts if fs == 'tmpfs'
             and target in TMPFS_CANDIDATES and os.access(target, os.W_OK)]
    return tmpfs, mem.get('MemAvailable')


def remove_staged(staged):
    """Remove a staged copy's directory (only one this module made); True if removed."""
    work = os.path.dirname(os.path.abspath(staged))
    if os.path.basename(work).startswith(STAGE_PREFIX) and os.path.isfile(os.path.join(work, record.STAGE_INFO)):
        shutil.rmtree(work, ignore_errors=True)
        return True
    return False


class Scratch(object):
    """The scratch space of one run: the directories it makes, removed by :meth:`cleanup` (also on failure),
    unless :meth:`keep` says otherwise (a staged copy)."""

    def __init__(self, req, result, runner=None, check_mode=False):
        self.req = req
        self.result = result
        self.runner = runner
        self.check_mode = check_mode
        self.paths = []
        self.created = []

    def space_plan(self, needed):
        """:func:`plan_scratch` for ``needed`` bytes, with this host's memory, tmpfs and ``scratch_dir``."""
        tmpfs, mem = memory_and_tmpfs()
        sdir = self.req.get('scratch_dir')
        sfree = None
        if sdir:
            # the nearest existing parent tells the free space without creating anything
            probe = sdir
            while probe and not os.path.isdir(probe):
                probe = os.path.dirname(probe)
            sfree = free_bytes(probe or '/')
        nbd = wants_nbd(self.runner, self.req.get('attach'), self.check_mode)
        copies = 2 if self.req['image_type'] == 'qcow2' and not nbd else 1
        return plan_scratch(needed, tmpfs, mem, sdir, sfree, copies=copies)

    def for_source(self, source):
        """A new directory for the download of ``source`` (memory when it fits, else ``scratch_dir``)."""
        tmpfs, mem = memory_and_tmpfs()
        sdir = self.req.get('scratch_dir')
        sfree = None
        if sdir:
            self.check_in_dest(sdir)
            if ensure_dir(sdir, 0o700, 'scratch_dir'):
                self.created.append(sdir)
            sfree = free_bytes(sdir)
        path, kind = choose_scratch(source.content_length, tmpfs, mem, sdir, sfree, self.req['image_type'])
        work = tempfile.mkdtemp(prefix='byol-image-burn-', dir=path)
        self.paths.append(work)
        self.result['scratch'] = dict(path=path, kind=kind)
        return work

    def for_stage(self, space):
        """A new directory for a staged copy where :meth:`space_plan` found room."""
        if space['kind'] == 'scratch_dir':
            self.check_in_dest(space['path'])
        if space['kind'] == 'scratch_dir' and ensure_dir(space['path'], 0o700, 'scratch_dir'):
            self.created.append(space['path'])
        work = tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=space['path'])
        self.paths.append(work)
        self.result['scratch'] = dict(path=space['path'], kind=space['kind'])
        return work

    def check_in_dest(self, sdir):
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
                    self.created.append(sdir)
                return

    def limit(self, work):
        """Bytes the scratch directory ``work`` can take (on a tmpfs, also what memory allows)."""
        free = free_bytes(work)
        if free is None:
            return None
        limit = free
        try:
            mem = memory_limit(work)
            if mem is not None:
                limit = min(limit, mem)
        except (IOError, OSError):
            pass
        return max(0, limit)

    def remove(self, work):
        """``work`` (a staged copy being used) is removed when the run ends, also on failure."""
        self.paths.append(work)

    def keep(self, work):
        """``work`` survives the run (a staged copy, for the run that copies it)."""
        self.paths.remove(work)

    def remove_stale_stages(self):
        """Copies of this image staged by an earlier run that stopped before copying them (and any
        staged copy older than :data:`STALE_STAGE_SECONDS`) are removed: they hold memory."""
        removed = []
        tmpfs, _mem = memory_and_tmpfs()
        ident = record.url_id(self.req['url'])
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
                info = record.read_record(path, record.STAGE_INFO, strict=False)
                if info is None:
                    continue  # being staged right now, or not ours
                if info.get('url_id') == ident or now - record.written_at(info) > STALE_STAGE_SECONDS:
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
        if removed:
            self.result['stale_stages_removed'] = removed

    def cleanup(self):
        for path in self.paths:
            shutil.rmtree(path, ignore_errors=True)
        self.paths = []
        # a scratch_dir this run made (for example under the new filesystems) goes too, when empty
        for path in reversed(self.created):
            try:
                os.rmdir(path)
            except OSError:
                pass
        self.created = []


def download_to_file(job, source, path, check_head, started=None):
    """Stream the (decompressed) image into ``path`` while hashing; ``check_head(head)`` first.

    ``started``: ``(pump, iterator, head_chunks)`` of a download already begun and checked.
    """
    work = os.path.dirname(path)
    fetch = job.fetch
    image_type = job.req['image_type']

    def full(n):
        return NoSpaceError('Could not download, %s image is too big to download in memory. (%s is full after %d '
                            'bytes; give scratch_dir with more space)' % (image_type, work, n))
    if started is None:
        # a decompressed image larger than the scratch space stops at once, before it fills it
        pump = fetch.pump(source, limit=job.scratch.limit(work), limit_error=full)
        fetch.start(source)
        it = iter(pump)
    else:
        pump, it, chunks = started
        pump.limit_error = full
        pump.limit = job.scratch.limit(work)
    try:
        if started is None:
            head, chunks = fetch.collect_head(it)
            try:
                check_head(head, pump)
            except Exception:
                pump.stop()
                raise
        try:
            with open(path, 'wb') as f:
                for chunk in fetch.chain(chunks, it):
                    f.write(chunk)
                    pump.recycle(chunk)
                    job.progress.update(pump.downloaded)
        except (IOError, OSError) as exc:
            pump.stop()
            if exc.errno == errno.ENOSPC:
                raise NoSpaceError('Could not download, %s image is too big to download in memory. (%s is full '
                                   'after %d bytes; give scratch_dir with more space)'
                                   % (image_type, os.path.dirname(path), pump.downloaded))
            raise
    finally:
        source.close()
    job.progress.end(pump.downloaded)
    fetch.done(pump)
    fetch.check_digest(pump)
    return pump

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""``mode: files`` (BYOL): the image's files onto the new filesystems, and its staging (``stage_only``,
``staged``).

Do not use this from other collections or standalone plugins/modules!

Order: the record in ``dest`` (idempotence) -> download to scratch space while hashed -> header checks ->
attach read-only (:mod:`.attach`: qemu-nbd, or loop at the partition's offset) -> one partition, ext4/XFS,
executable hook, the record's path -> only then ``rsync`` onto ``dest`` -> the record in ``dest``. Mounts, loop
and nbd devices and scratch files are always cleaned up. ``stage_only`` stops before the copy and keeps the
checked copy with its record (:data:`.record.STAGE_INFO`); ``staged`` copies such a copy without downloading.
"""

from __future__ import annotations

import os
import stat

from ansible_collections.baremetal.byol.plugins.module_utils._blockdev import used_bytes
from ansible_collections.baremetal.byol.plugins.module_utils._errors import CommandError, ValidationError
from ansible_collections.baremetal.byol.plugins.module_utils._image import record
from ansible_collections.baremetal.byol.plugins.module_utils._image.attach import detach, inspect
from ansible_collections.baremetal.byol.plugins.module_utils._image.format import (
    check_declared_format, check_qcow2_head, raw_table_or_fail)
from ansible_collections.baremetal.byol.plugins.module_utils._image.request import redact_url
from ansible_collections.baremetal.byol.plugins.module_utils._image.scratch import (
    STAGE_PREFIX, NoSpaceError, download_to_file, remove_staged)
from ansible_collections.baremetal.byol.plugins.module_utils._image.write import copy_tree, sync_device


def run(job):
    req = job.req
    dest = req['dest']
    job.result['dest_dir'] = dest
    skip, reason, marker = files_skip(job, dest, required=True)
    job.result['reason'] = reason
    if skip:
        if req.get('staged'):
            job.result['staged_removed'] = remove_staged(req['staged'])
        job.result['msg'] = 'The image is already copied onto %s (%s); nothing written.' % (dest, reason)
        job.result['checksum'] = record.recorded_digest(marker, job.fetch.hash_type)
        return job.finish()
    if job.check_mode:
        plan = dict(action='copy', dest=dest, image_type=req['image_type'], reason=reason)
        if req.get('staged'):
            plan['staged'] = req['staged']
        head = job.fetch.head()
        if head is not None:
            plan['download_size'] = head.content_length
        job.result['plan'] = plan
        job.result['changed'] = True
        job.result['msg'] = 'Would download %s and copy its files onto %s (%s).' % (redact_url(req['url']), dest, reason)
        return job.finish()
    staged = None
    if req.get('staged'):
        staged, why = usable_staged(job, req['staged'])
        job.result['staged_used'] = staged is not None
        job.result['staged_reason'] = why
    if staged is not None:
        return copy_staged(job, staged, dest)
    if req.get('staged'):
        job.result['staged_removed'] = remove_staged(req['staged'])
    source = job.fetch.open()
    job.result['download_size'] = source.content_length
    work = job.scratch.for_source(source)
    path = os.path.join(work, 'image.%s' % req['image_type'])
    attachment = None
    try:
        pump = download_to_file(job, source, path, check_head(job))
        attachment = inspect(job, path, work)
        copy_and_record(job, attachment, dest, record.new_record(
            'files', req['image_type'], {job.fetch.hash_type: pump.digest}, source.validators(), pump.compression,
            dest=dest))
    finally:
        detach(job, attachment)
        job.scratch.cleanup()
    job.result['changed'] = True
    job.result['msg'] = 'Copied the files of the %s image onto %s.' % (req['image_type'], dest)
    return job.finish()


def check_head(job):
    """The checks of the image's first MiB before it is kept (format, qcow2 header, raw partition table)."""
    def check(head, _pump=None):
        if job.req['image_type'] == 'qcow2':
            check_qcow2_head(head, job.result)
        else:
            check_declared_format(head, 'raw')
            raw_table_or_fail(head)
    return check


def files_skip(job, dest, required):
    """(skip, reason, marker) from the record in ``dest``: read without following any symbolic link (one there,
    the image's from an earlier copy, raises TreeError)."""
    if not os.path.isdir(dest):
        if required:
            raise ValidationError('dest %s is not a directory (mount the new filesystems there first)' % dest)
        return False, 'dest %s does not exist yet' % dest, None
    marker = record.read_record(dest, record.FILES_MARKER)
    skip, reason = record.idempotence(job, marker)
    return skip, reason, marker


def copy_and_record(job, attachment, dest, marker):
    """Every check passed: ``dest`` is written from here on."""
    mnt = attachment.mountpoint
    used = used_bytes(mnt)
    job.result['changed'] = True
    job.progress.start('copy', total=used)
    copy_tree(job.runner, mnt, dest, progress=job.progress)
    job.progress.end(used)
    job.result['copied_bytes'] = used
    # the record says the files are there: only once they are on the disk (syncfs of dest)
    job.result['marker'] = record.write_record(dest, record.FILES_MARKER, marker, sync=True)


# ---------------------------------------------------------------------------------------------
# stage_only, staged

def does_not_fit(job, space, dest):
    msg = ('%s It is not staged: it will be downloaded onto the new filesystems under %s and checked there '
           'before any file is copied.' % (space['msg'], dest))
    job.result.update(staged=False, fits=False, space=space, msg=msg)
    return job.finish()


def head_only(job, source):
    """Check the first MiB (format, qcow2 header, raw partition table), then stop the download."""
    pump = job.fetch.pump(source)
    it = iter(pump)
    try:
        head, _chunks = job.fetch.collect_head(it)
        check_head(job)(head)
        job.result['checks'] = ['format', 'qcow2 header' if job.req['image_type'] == 'qcow2' else 'partition table']
    finally:
        pump.stop()
        source.close()


def run_stage(job):
    req = job.req
    dest = req['dest']
    job.result.update(dest_dir=dest, staged=False, stage_only=True)
    skip, reason, marker = files_skip(job, dest, required=False)
    job.result['reason'] = reason
    if skip:
        job.result['msg'] = 'The image is already copied onto %s (%s); nothing staged.' % (dest, reason)
        job.result['checksum'] = record.recorded_digest(marker, job.fetch.hash_type)
        return job.finish()
    if job.check_mode:
        head = job.fetch.head()
        size = head.content_length if head is not None else None
        space = job.scratch.space_plan(size)
        job.result['plan'] = dict(action='stage', image_type=req['image_type'], reason=reason, download_size=size,
                                  fits=space['fits'], scratch=dict(path=space['path'], kind=space['kind']))
        job.result['changed'] = bool(space['fits'])
        job.result['msg'] = ('Would download %s into %s (%s) and check it; nothing would be written to a disk.'
                             % (redact_url(req['url']), space['path'], space['kind']) if space['fits']
                             else '%s It would be downloaded onto the new filesystems under %s instead.'
                             % (space['msg'], dest))
        return job.finish()
    job.scratch.remove_stale_stages()
    source = job.fetch.open()
    job.result['download_size'] = source.content_length
    space = job.scratch.space_plan(source.content_length)
    job.result['space'] = space
    if not space['fits']:
        head_only(job, source)
        return does_not_fit(job, space, dest)
    work = job.scratch.for_stage(space)
    path = os.path.join(work, 'image.%s' % req['image_type'])
    attachment = None
    try:
        try:
            pump = download_to_file(job, source, path, check_head(job))
            attachment = inspect(job, path, work)
        except NoSpaceError as exc:
            space = dict(space, fits=False, msg='The image does not fit in %s (%s): %s' % (
                space['path'], space['kind'], exc.msg))
            job.result['space'] = space
            return does_not_fit(job, space, dest)
        except CommandError as exc:
            if 'No space left on device' not in (exc.stderr or ''):
                raise
            space = dict(space, fits=False, msg='The unpacked image does not fit in %s (%s).' % (
                space['path'], space['kind']))
            job.result['space'] = space
            return does_not_fit(job, space, dest)
    finally:
        detach(job, attachment)
    st = os.stat(path)
    info = record.new_record('stage', req['image_type'], {job.fetch.hash_type: pump.digest}, source.validators(),
                             pump.compression, url_id=record.url_id(req['url']), file=os.path.basename(path),
                             size=st.st_size, mtime_ns=st.st_mtime_ns, downloaded_bytes=pump.downloaded,
                             image_bytes=pump.produced, virtual_size=job.result.get('virtual_size'),
                             filesystem=job.result.get('filesystem'))
    # the record of the staged copy is written once the copy is on its disk (a scratch_dir survives a power cut)
    sync_device(path)
    record.write_record(work, record.STAGE_INFO, info, mode=0o600)
    job.scratch.keep(work)  # kept for the run that copies it
    checks = ['checksum' if req.get('checksum') else 'digest computed (no checksum given)',
              'format is %s' % req['image_type']]
    if req['image_type'] == 'qcow2':
        checks.append('qcow2 header (no backing file, external data file or encryption)')
    checks += ['exactly one partition', 'filesystem %s' % job.result.get('filesystem'),
               'executable %s' % job.result.get('hook')]
    job.result.update(staged=True, fits=True, staged_path=path, checks=checks, changed=True,
                      msg='Downloaded and checked the %s image in %s (%s); no disk was written.'
                      % (req['image_type'], space['path'], space['kind']))
    return job.finish()


def usable_staged(job, staged):
    """``(info, reason)``: the record of a staged copy that can be used, or ``(None, why not)``."""
    path = os.path.abspath(staged)
    work = os.path.dirname(path)
    try:
        wst = os.lstat(work)
        fst = os.lstat(path)
    except (IOError, OSError) as exc:
        return None, 'the staged copy %s cannot be used (%s); downloading again' % (staged, exc)
    if (not os.path.basename(work).startswith(STAGE_PREFIX) or not stat.S_ISDIR(wst.st_mode)
            or wst.st_uid != os.geteuid() or wst.st_mode & 0o077 or not stat.S_ISREG(fst.st_mode)):
        return None, '%s is not a staged copy made by this module; downloading again' % staged
    info = record.read_record(work, record.STAGE_INFO, strict=False)
    if info is None:
        return None, 'the staged copy %s cannot be used (its %s cannot be read); downloading again' % (
            staged, record.STAGE_INFO)
    if info.get('file') != os.path.basename(path) or info.get('size') != fst.st_size \
            or info.get('mtime_ns') != fst.st_mtime_ns:
        return None, 'the staged copy %s changed since it was checked; downloading again' % staged
    ok, why = record.staged_matches(info, job.req, record.url_id(job.req['url']))
    if not ok:
        return None, '%s; downloading again' % why
    info['path'] = path
    return info, why


def copy_staged(job, info, dest):
    req = job.req
    work = os.path.dirname(info['path'])
    job.scratch.remove(work)  # the staged copy is removed when done, also on failure
    digest = record.recorded_digest(info, job.fetch.hash_type)
    job.result.update(checksum=digest, checksum_type=job.fetch.hash_type, downloaded_bytes=0,
                      staged_downloaded_bytes=info.get('downloaded_bytes'), compression=info.get('compression'),
                      image_bytes=info.get('image_bytes'), scratch=dict(path=os.path.dirname(work), kind='staged'))
    if info.get('virtual_size') is not None:
        job.result['virtual_size'] = info['virtual_size']
    attachment = None
    try:
        attachment = inspect(job, info['path'], work)
        marker = record.new_record('files', req['image_type'], info.get('digests'), info.get('validators'),
                                   info.get('compression'), dest=dest)
        copy_and_record(job, attachment, dest, marker)
    finally:
        detach(job, attachment)
        job.scratch.cleanup()
    job.result['changed'] = True
    job.result['msg'] = 'Copied the files of the staged %s image onto %s (not downloaded again).' % (
        req['image_type'], dest)
    return job.finish()

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""byol_image_burn's staging (stage_only / staged): where a staged image goes, whether it fits,
whether a staged copy belongs to a request, and the request rules."""

from __future__ import annotations

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils._errors import ValidationError
from ansible_collections.baremetal.byol.plugins.module_utils._image import record
from ansible_collections.baremetal.byol.plugins.module_utils._image import scratch
from ansible_collections.baremetal.byol.plugins.module_utils._image import request as rq

MIB = 1024 ** 2
GIB = 1024 ** 3
SHM = [('/dev/shm', 12 * GIB)]


def files_request(**kw):
    params = dict(url='https://images.example.com/byol.qcow2', image_type='qcow2', mode='files', device=None,
                  dest='/tmp/a', checksum=None, checksum_type=None, http_headers={}, timeout=60, progress_interval=10,
                  scratch_dir=None, stage_only=False, staged=None)
    params.update(kw)
    return rq.validate_request(params)


# -- plan_scratch ---------------------------------------------------------------------------------

def test_memory_when_it_fits_with_headroom():
    plan = scratch.plan_scratch(1 * GIB, SHM, 20 * GIB)
    assert (plan['fits'], plan['path'], plan['kind']) == (True, '/dev/shm', 'memory')
    assert plan['memory_usable_bytes'] == 12 * GIB - scratch.SCRATCH_MARGIN
    assert plan['msg'] is None


def test_memory_headroom_is_kept():
    # 2 GiB available: 512 MiB stay free for the rescue system
    usable = 2 * GIB - scratch.MEMORY_RESERVE
    assert scratch.plan_scratch(usable, SHM, 2 * GIB)['fits']
    plan = scratch.plan_scratch(usable + 1, SHM, 2 * GIB)
    assert not plan['fits'] and plan['memory_usable_bytes'] == usable


def test_tmpfs_size_limits_too():
    plan = scratch.plan_scratch(1 * GIB, [('/dev/shm', 1 * GIB)], 64 * GIB)
    assert not plan['fits']
    assert plan['memory_usable_bytes'] == 1 * GIB - scratch.SCRATCH_MARGIN


def test_largest_tmpfs_is_chosen():
    plan = scratch.plan_scratch(3 * GIB, [('/run/shm', 2 * GIB), ('/dev/shm', 8 * GIB), ('/tmp', None)], 20 * GIB)
    assert plan['path'] == '/dev/shm'


def test_scratch_dir_when_memory_is_too_small():
    plan = scratch.plan_scratch(30 * GIB, SHM, 20 * GIB, '/mnt/scratch', 100 * GIB)
    assert (plan['fits'], plan['path'], plan['kind']) == (True, '/mnt/scratch', 'scratch_dir')


def test_qcow2_without_nbd_needs_room_for_the_raw_copy():
    # 5 GiB fits in 12 GiB of tmpfs once, but not twice with 10 GiB of memory
    assert scratch.plan_scratch(5 * GIB, SHM, 10 * GIB, copies=1)['fits']
    plan = scratch.plan_scratch(5 * GIB, SHM, 10 * GIB, copies=2)
    assert not plan['fits'] and plan['needed_bytes'] == 10 * GIB


def test_does_not_fit_anywhere_says_so():
    plan = scratch.plan_scratch(30 * GIB, SHM, 20 * GIB, '/mnt/scratch', 10 * GIB)
    assert not plan['fits'] and plan['path'] is None
    assert plan['msg'] == ('The image (%d bytes to store) does not fit in memory (%d bytes usable) nor in scratch_dir '
                           '/mnt/scratch (%d bytes free).' % (30 * GIB, 12 * GIB - scratch.SCRATCH_MARGIN, 10 * GIB))


def test_does_not_fit_without_scratch_dir_says_so():
    plan = scratch.plan_scratch(30 * GIB, SHM, 20 * GIB)
    assert plan['msg'] == ('The image (%d bytes to store) does not fit in memory (%d bytes usable), and no scratch_dir '
                           'is given.' % (30 * GIB, 12 * GIB - scratch.SCRATCH_MARGIN))


def test_scratch_dir_margin():
    assert scratch.plan_scratch(1 * GIB, [], 0, '/s', 1 * GIB + scratch.SCRATCH_MARGIN)['fits']
    assert not scratch.plan_scratch(1 * GIB, [], 0, '/s', 1 * GIB + scratch.SCRATCH_MARGIN - 1)['fits']


def test_unknown_size():
    # no Content-Length: memory is tried (a full tmpfs is reported when it happens), scratch_dir preferred if given
    assert scratch.plan_scratch(None, SHM, 20 * GIB)['kind'] == 'memory'
    assert scratch.plan_scratch(None, SHM, 20 * GIB, '/s', 1 * GIB)['kind'] == 'scratch_dir'
    plan = scratch.plan_scratch(None, [], 20 * GIB)
    assert not plan['fits'] and 'an unknown number of bytes' in plan['msg']


def test_no_tmpfs_at_all():
    plan = scratch.plan_scratch(10 * MIB, [], 20 * GIB)
    assert not plan['fits'] and plan['memory_usable_bytes'] == 0


# -- staged_matches -----------------------------------------------------------------------------------

def staged_info(req, **kw):
    info = record.new_record('stage', req['image_type'], {'sha512': 'ab' * 64}, {}, None,
                             url_id=record.url_id(req['url']))
    info.update(kw)
    return info


def old_staged_info(req, **kw):
    """A stage.json as the collection wrote it before the records had one format (version 1, no mode)."""
    info = dict(version=1, image_type=req['image_type'], url_id=record.url_id(req['url']),
                digests={'sha512': 'ab' * 64}, staged_at=1700000000)
    info.update(kw)
    return info


def test_staged_copy_of_the_same_request():
    req = files_request(checksum='AB' * 64, checksum_type='sha512')
    assert record.staged_matches(staged_info(req), req, record.url_id(req['url'])) == (
        True, 'the staged copy was downloaded and checked before')
    req = files_request()
    assert record.staged_matches(staged_info(req), req, record.url_id(req['url']))[0]


def test_staged_copy_with_a_record_of_the_old_format_is_still_used():
    req = files_request(checksum='AB' * 64, checksum_type='sha512')
    assert record.staged_matches(old_staged_info(req), req, record.url_id(req['url'])) == (
        True, 'the staged copy was downloaded and checked before')
    assert record.staged_matches(old_staged_info(req, digests={}), req, record.url_id(req['url']))[0] is False
    assert record.written_at(old_staged_info(req)) == 1700000000
    assert record.written_at(staged_info(req)) > 1700000000


@pytest.mark.parametrize('change,reason', [
    (dict(image_type='raw'), 'the staged copy is a raw image'),
    (dict(url_id=record.url_id('https://other.example.com/x.qcow2')), 'the staged copy came from another URL'),
    (dict(digests={'sha512': 'cd' * 64}), 'the staged copy does not have the requested sha512 checksum'),
    (dict(digests={'sha256': 'ab' * 32}), 'the staged copy does not have the requested sha512 checksum'),
    (dict(version=99), 'the staged copy has no usable record'),
    (dict(mode='files'), 'the staged copy has no usable record'),  # a record of another kind
])
def test_staged_copy_of_another_request(change, reason):
    req = files_request(checksum='ab' * 64, checksum_type='sha512')
    assert record.staged_matches(staged_info(req, **change), req, record.url_id(req['url'])) == (False, reason)


def test_url_id_keeps_no_credentials():
    ident = record.url_id('https://user:pw@images.example.com/byol.qcow2')
    assert 'pw' not in ident and len(ident) == 64
    assert ident != record.url_id('https://user:other@images.example.com/byol.qcow2')


# -- request rules ----------------------------------------------------------------------------------

def test_stage_only_is_for_files_mode():
    with pytest.raises(ValidationError) as exc:
        rq.validate_request(dict(files_request(), mode='disk', device='/dev/sda', stage_only=True))
    assert exc.value.msg.startswith('stage_only is for mode files (BYOL)')
    assert files_request(stage_only=True)['stage_only']


def test_staged_rules():
    with pytest.raises(ValidationError) as exc:
        files_request(stage_only=True, staged='/dev/shm/x/image.qcow2')
    assert 'mutually exclusive' in exc.value.msg
    with pytest.raises(ValidationError) as exc:
        files_request(staged='relative/image.qcow2')
    assert exc.value.msg == "staged must be an absolute path, got 'relative/image.qcow2'"
    with pytest.raises(ValidationError):
        rq.validate_request(dict(files_request(), mode='disk', device='/dev/sda', staged='/dev/shm/x/image.qcow2'))


def test_remove_staged_only_removes_stage_directories(tmp_path):
    work = tmp_path / (scratch.STAGE_PREFIX + 'abc')
    work.mkdir()
    (work / 'image.qcow2').write_bytes(b'x')
    other = tmp_path / 'not-a-stage'
    other.mkdir()
    (other / 'image.qcow2').write_bytes(b'x')
    (other / record.STAGE_INFO).write_text('{}')
    assert not scratch.remove_staged(str(work / 'image.qcow2'))  # no stage.json: not ours
    assert work.exists()
    (work / record.STAGE_INFO).write_text('{}')
    assert scratch.remove_staged(str(work / 'image.qcow2'))
    assert not work.exists()
    assert not scratch.remove_staged(str(other / 'image.qcow2'))
    assert other.exists()

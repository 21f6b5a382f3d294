# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""byol_image_burn ``stage_only`` / ``staged`` (BYOL): the image is downloaded and checked before any
disk is touched, then copied without a second download. Real tools, loop devices, the lab's synthetic
images over its HTTP server. "Does not fit in memory" is made real by running the module in its own
mount namespace with a 1 MiB tmpfs on /dev/shm (the Python interpreter is a wrapper that does that)."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import subprocess
import sys
import time

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils._blockdev import write_sectors
from byollab import synthetic
from byollab.httpserve import ImageServer

MIB = 1024 * 1024
STAGE_GLOB = '/dev/shm/byol-image-burn-stage-*'


# the images cache the role tests use too (built once, warm afterwards)
IMAGES = os.environ.get('BYOL_TEST_IMAGES', '/root/.cache/baremetal-byol/roles-test/images')


def file_digest(path, kind):
    h = hashlib.new(kind)
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(4 * MIB), b''):
            h.update(block)
    return h.hexdigest()


@pytest.fixture(scope='module')
def images():
    if os.geteuid() != 0:
        pytest.skip('integration tests need root')
    paths = synthetic.build_all(IMAGES)
    sums = dict((os.path.basename(paths[key]), dict((kind, file_digest(paths[key], kind)) for kind in ('sha256', 'sha512')))
                for key in ('byol_qcow2',))
    return dict(dir=os.path.dirname(paths['byol_qcow2']), paths=paths, sums=sums)


@pytest.fixture(scope='module')
def server(images):
    with ImageServer(images['dir']) as srv:
        yield srv


@pytest.fixture
def small_shm(tmp_path):
    """A Python interpreter that runs in a private mount namespace where /dev/shm is a 1 MiB tmpfs."""
    wrapper = tmp_path / 'python-small-shm'
    wrapper.write_text('#!/bin/sh\nexec unshare --mount --propagation private /bin/sh -c '
                       '\'mount -t tmpfs -o size=1m byol-small-shm /dev/shm && exec "$@"\' sh %s "$@"\n' % sys.executable)
    wrapper.chmod(0o755)
    # the implicit localhost always uses ansible's own interpreter: name localhost in an inventory
    inventory = tmp_path / 'small-shm-inventory'
    inventory.write_text('localhost ansible_connection=local ansible_python_interpreter=%s\n' % wrapper)
    return {'ANSIBLE_INVENTORY': str(inventory)}


@pytest.fixture
def burn(ansible_module, server, tmp_path):
    """Run the module with the minimal callback (the json one is not loadable everywhere) and parse its result."""
    def run(name, args=None, check=False, env=None):
        params = dict(url=server.url(name), mode='files', image_type='qcow2', progress_interval=1,
                      progress_file=str(tmp_path / 'progress.json'))
        params.update(args or {})
        r = ansible_module('byol_image_burn', params, check=check,
                           env=dict(env or {}, ANSIBLE_STDOUT_CALLBACK='ansible.builtin.minimal'))
        match = re.search(r'^localhost \| ([A-Z!]+) => ', r.output, re.M)
        assert match, r.output
        r.result = json.JSONDecoder().raw_decode(r.output[match.end():])[0]
        if match.group(1).startswith('FAILED'):
            r.result['failed'] = True
        return r
    return run


@pytest.fixture
def old_system(loopdev):
    """A disk holding "the old system": a GPT with a partition and some data; nothing may change it."""
    dev = loopdev(size_mib=96)
    subprocess.run(['sgdisk', '--clear', '--new=1:2048:+32M', dev], check=True, stdout=subprocess.DEVNULL)
    with open(dev, 'r+b') as f:
        f.seek(2 * MIB)
        f.write(os.urandom(4 * MIB))
    settle_writes()
    return dev


def settle_writes():
    subprocess.run(['sync'], check=True)
    time.sleep(1)
    subprocess.run(['sync'], check=True)


def disk_digest(dev):
    h = hashlib.sha256()
    with open(dev, 'rb') as f:
        for block in iter(lambda: f.read(4 * MIB), b''):
            h.update(block)
    return h.hexdigest()


def leftovers():
    loops = subprocess.run(['losetup', '--list', '--noheadings', '--output', 'BACK-FILE'], stdout=subprocess.PIPE,
                           universal_newlines=True, check=False).stdout
    mounts = subprocess.run(['findmnt', '--list', '--noheadings', '--output', 'TARGET'], stdout=subprocess.PIPE,
                            universal_newlines=True, check=False).stdout
    return [line for line in loops.splitlines() if 'byol-image-burn-' in line] + \
        [line for line in mounts.splitlines() if 'byol-image-' in line]


def gets(server, name):
    return server.requests.count(('GET', '/' + name))


def test_stage_then_copy_without_second_download(burn, server, images, target_fs, old_system, tmp_path):
    dev, mnt = target_fs
    name = 'byol.qcow2'
    args = dict(checksum=images['sums'][name]['sha512'], checksum_type='sha512')
    old_digest = disk_digest(old_system)
    before = {d: write_sectors(d) for d in (dev, old_system)}
    not_yet = str(tmp_path / 'not-mounted-yet')

    # check mode: a plan, nothing downloaded
    del server.requests[:]
    r = burn(name, dict(args, stage_only=True, dest=not_yet), check=True)
    assert r.rc == 0, r.output
    assert r.result['plan']['action'] == 'stage' and r.result['plan']['fits']
    assert r.result['plan']['scratch']['kind'] == 'memory'
    assert gets(server, name) == 0

    # stage: downloaded once, checked, kept in memory; no disk written
    r = burn(name, dict(args, stage_only=True, dest=not_yet))
    assert r.rc == 0, r.output
    assert r.changed and r.result['staged'] and r.result['fits']
    staged = r.result['staged_path']
    assert staged.startswith('/dev/shm/byol-image-burn-stage-') and os.path.isfile(staged)
    assert r.result['checks'] == ['checksum', 'format is qcow2',
                                  'qcow2 header (no backing file, external data file or encryption)',
                                  'exactly one partition', 'filesystem ext4',
                                  'executable /root/.ovh/make_image_bootable.sh']
    assert r.result['checksum'] == args['checksum']
    assert gets(server, name) == 1
    assert not os.path.exists(not_yet)
    settle_writes()
    assert {d: write_sectors(d) for d in (dev, old_system)} == before
    assert disk_digest(old_system) == old_digest
    assert leftovers() == []

    # copy: the staged copy is used (no download) and removed
    r = burn(name, dict(args, dest=mnt, staged=staged))
    assert r.rc == 0, r.output
    assert r.changed and r.result['staged_used'] and r.result['downloaded_bytes'] == 0
    assert gets(server, name) == 1
    assert not os.path.exists(os.path.dirname(staged))
    assert os.path.exists(os.path.join(mnt, 'root/.ovh/make_image_bootable.sh'))
    assert os.path.getsize(os.path.join(mnt, 'data/sparse.img')) == synthetic.SPARSE_SIZE
    assert leftovers() == []

    # again: the record in dest says the image is there; nothing staged, nothing downloaded
    del server.requests[:]
    r = burn(name, dict(args, stage_only=True, dest=mnt))
    assert r.rc == 0 and not r.changed and not r.result['staged'], r.output
    r = burn(name, dict(args, stage_only=True, dest=mnt), check=True)
    assert r.rc == 0 and not r.changed, r.output
    assert server.requests == []
    assert disk_digest(old_system) == old_digest


def test_staged_copy_of_another_image_is_not_used(burn, server, images, target_fs, tmp_path):
    _dev, mnt = target_fs
    r = burn('byol.qcow2', dict(stage_only=True, dest=str(tmp_path / 'x')))
    assert r.rc == 0 and r.result['staged'], r.output
    staged = r.result['staged_path']
    del server.requests[:]
    r = burn('byol-xfs.qcow2', dict(dest=mnt, staged=staged))
    assert r.rc == 0, r.output
    assert r.result['staged_used'] is False
    assert r.result['staged_reason'] == 'the staged copy came from another URL; downloading again'
    assert r.result['filesystem'] == 'xfs' and gets(server, 'byol-xfs.qcow2') == 1
    assert not os.path.exists(os.path.dirname(staged))  # the unusable copy does not keep memory


def test_staged_copy_recorded_by_the_previous_release_is_used(burn, server, images, target_fs, tmp_path):
    """stage.json took the records' one format (version 2, mode stage, written_at); a copy staged by the previous
    release (version 1, staged_at, no mode) is still used without a second download, then removed."""
    _dev, mnt = target_fs
    name = 'byol.qcow2'
    args = dict(checksum=images['sums'][name]['sha512'], checksum_type='sha512')
    r = burn(name, dict(args, stage_only=True, dest=str(tmp_path / 'x')))
    assert r.rc == 0 and r.result['staged'], r.output
    staged = r.result['staged_path']
    info_path = os.path.join(os.path.dirname(staged), 'stage.json')
    with open(info_path) as f:
        info = json.load(f)
    assert info['version'] == 2 and info['mode'] == 'stage' and info['written_at'] > 0 and 'staged_at' not in info
    assert set(info) >= {'image_type', 'digests', 'validators', 'compression', 'url_id', 'file', 'size', 'mtime_ns'}
    old = dict((k, v) for k, v in info.items() if k not in ('mode', 'written_at'))
    old.update(version=1, staged_at=info['written_at'])
    with open(info_path, 'w') as f:
        json.dump(old, f)
    del server.requests[:]
    r = burn(name, dict(args, dest=mnt, staged=staged))
    assert r.rc == 0, r.output
    assert r.result['staged_used'] is True and r.result['downloaded_bytes'] == 0, r.result.get('staged_reason')
    assert gets(server, name) == 0
    assert not os.path.exists(os.path.dirname(staged))
    with open(os.path.join(mnt, 'var/lib/baremetal-byol/image_burn.json')) as f:
        record = json.load(f)
    assert record['mode'] == 'files' and record['version'] == 2 and record['digests']['sha512'] == args['checksum']


BAD = [
    ('byol-two-parts.qcow2', 'qcow2', {}, 'a BYOL image must contain exactly one partition, this one has 2'),
    ('byol-nohook.qcow2', 'qcow2', {}, 'the BYOL image has no /root/.ovh/make_image_bootable.sh'),
    ('byol-hook-noexec.qcow2', 'qcow2', {},
     '/root/.ovh/make_image_bootable.sh in the BYOL image is not executable (mode 0644)'),
    ('byol.qcow2', 'raw', {}, 'image provided format is qcow2 which does not match expected raw format'),
    ('byol.qcow2', 'qcow2', dict(checksum='0' * 64, checksum_type='sha256'),
     'Bad checkSumType for downloaded file, got: %s while expecting ' + '0' * 64 + '.'),
    ('backing.qcow2', 'qcow2', {}, 'Refusing the image: the qcow2 image has a backing file'),
]


@pytest.mark.parametrize('name,image_type,extra,message', BAD,
                         ids=['two-partitions', 'no-hook', 'hook-not-executable', 'qcow2-declared-raw',
                              'checksum-mismatch', 'backing-file'])
def test_bad_image_fails_in_the_stage_step(burn, images, old_system, tmp_path, name, image_type, extra, message):
    if '%s' in message:
        message = message % images['sums'][name]['sha256']
    old_digest = disk_digest(old_system)
    before = write_sectors(old_system)
    stages = set(glob.glob(STAGE_GLOB))
    r = burn(name, dict(extra, image_type=image_type, stage_only=True, dest=str(tmp_path / 'a')))
    assert r.rc != 0 and r.failed
    assert r.result['msg'].startswith(message), r.result['msg']
    assert not r.changed
    settle_writes()
    assert write_sectors(old_system) == before
    assert disk_digest(old_system) == old_digest
    assert set(glob.glob(STAGE_GLOB)) == stages  # nothing left in memory
    assert leftovers() == []


def test_too_big_for_memory_is_reported_then_checked_on_the_new_filesystems(
        burn, server, images, target_fs, old_system, small_shm):
    dev, mnt = target_fs
    old_digest = disk_digest(old_system)
    before = write_sectors(dev)
    r = burn('byol.qcow2', dict(stage_only=True, dest=mnt), check=True, env=small_shm)
    assert r.rc == 0 and not r.result['plan']['fits'], r.output

    del server.requests[:]
    r = burn('byol.qcow2', dict(stage_only=True, dest=mnt), env=small_shm)
    assert r.rc == 0, r.output
    assert r.result['staged'] is False and r.result['fits'] is False and 'staged_path' not in r.result
    size = os.path.getsize(images['paths']['byol_qcow2'])
    # without nbd the qcow2 is checked through a raw copy: twice the room
    needed = r.result['space']['needed_bytes']
    assert needed == (size if os.path.isdir('/sys/module/nbd') else 2 * size)
    assert r.result['msg'] == (
        'The image (%d bytes to store) does not fit in memory (0 bytes usable), and no scratch_dir is given. '
        'It is not staged: it will be downloaded onto the new filesystems under %s and checked there before any '
        'file is copied.' % (needed, mnt))
    assert r.result['checks'] == ['format', 'qcow2 header']  # its first MiB was checked
    settle_writes()
    assert write_sectors(dev) == before and sorted(os.listdir(mnt)) == ['lost+found']

    # the copying run downloads it under the new filesystems, checks it there, copies, removes the scratch copy
    scratch = os.path.join(mnt, '.byol-scratch')
    r = burn('byol.qcow2', dict(dest=mnt, scratch_dir=scratch), env=small_shm)
    assert r.rc == 0, r.output
    assert r.result['scratch'] == dict(path=scratch, kind='scratch_dir')
    assert not os.path.exists(scratch)
    assert os.path.exists(os.path.join(mnt, 'root/.ovh/make_image_bootable.sh'))
    assert disk_digest(old_system) == old_digest
    assert leftovers() == []


def test_too_big_bad_image_stops_before_any_file_is_copied(burn, target_fs, small_shm):
    dev, mnt = target_fs
    r = burn('byol-two-parts.qcow2', dict(stage_only=True, dest=mnt), env=small_shm)
    assert r.rc == 0 and r.result['fits'] is False, r.output
    scratch = os.path.join(mnt, '.byol-scratch')
    r = burn('byol-two-parts.qcow2', dict(dest=mnt, scratch_dir=scratch), env=small_shm)
    assert r.failed
    assert r.result['msg'].startswith('a BYOL image must contain exactly one partition, this one has 2')
    assert sorted(os.listdir(mnt)) == ['lost+found']  # the scratch copy is gone, no file was copied
    assert leftovers() == []


def test_too_big_declared_wrong_is_refused_from_its_first_mib(burn, old_system, small_shm, tmp_path):
    before = write_sectors(old_system)
    r = burn('byol.qcow2', dict(image_type='raw', stage_only=True, dest=str(tmp_path / 'a')), env=small_shm)
    assert r.failed
    assert r.result['msg'] == 'image provided format is qcow2 which does not match expected raw format'
    assert write_sectors(old_system) == before

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Records are never proof without the thing they record, and never lead out of the target tree.

- ``byol_image_burn`` (disk): after a write, the disk's first MiB wiped, the GPT's GUIDs rewritten, the boot code
  or the boot loader's area overwritten: the next run writes again; the config drive added at the end does not
  count as a change.
- ``byol_image_burn`` (files): an image whose tree carries a symbolic link on the record's path (to a directory
  or a file outside the tree) is refused; the outside files are unchanged.
- ``byol_configdrive``: files removed from the drive (``mdel``) are written again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils._blockdev import write_sectors
from byollab import synthetic
from byollab.httpserve import ImageServer, write_checksums

MIB = 1024 * 1024
RECORD = 'var/lib/baremetal-byol/image_burn.json'
BOOT_CODE = bytes(range(1, 256)) + bytes(range(1, 186))  # 440 bytes, none zero
GAP = b'GRUB core image stand-in ' * 100


def _run(*args, **kw):
    return subprocess.run([str(a) for a in args], check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def _with_boot_code(path, gap_offset):
    with open(path, 'r+b') as f:
        f.write(BOOT_CODE)
        f.seek(gap_offset)
        f.write(GAP)


@pytest.fixture(scope='session')
def hostile(tmp_path_factory):
    """Images built for these tests, served over HTTP, and the outside directory their links point to."""
    if os.geteuid() != 0:
        pytest.skip('integration tests need root')
    base = str(tmp_path_factory.mktemp('records'))
    outside = os.path.join(base, 'outside')
    os.makedirs(outside)
    images = os.path.join(base, 'images')
    os.makedirs(images)
    work = tempfile.mkdtemp(dir=base)
    # BYOL images whose tree has a link on the record's path: the directory, or the record itself
    for name, link, target in (('byol-record-dirlink.qcow2', os.path.dirname(RECORD), outside),
                               ('byol-record-filelink.qcow2', RECORD, os.path.join(outside, 'victim'))):
        tree = synthetic.make_tree(os.path.join(work, name + '.tree'))
        os.makedirs(os.path.join(tree, os.path.dirname(link)), exist_ok=True)
        os.symlink(target, os.path.join(tree, link))
        fs = synthetic.mkfs_ext4(tree, os.path.join(work, name + '.ext4'))
        raw = synthetic.gpt_disk(os.path.join(work, name + '.raw'), synthetic.DISK_MIB,
                                 [(fs, synthetic.ROOT_FS_MIB, '8300', 'root')])
        synthetic.qcow2(raw, os.path.join(images, name))
    # BYOI images with boot code in the first 440 bytes and data in the boot loader's area
    fs = synthetic.mkfs_ext4(synthetic.make_tree(os.path.join(work, 'byoi.tree')), os.path.join(work, 'byoi.ext4'))
    gpt = synthetic.gpt_disk(os.path.join(images, 'bootcode-gpt.raw'), synthetic.DISK_MIB,
                             [(None, 8, 'EF00', 'esp'), (fs, synthetic.ROOT_FS_MIB, '8300', 'root')])
    _with_boot_code(gpt, 40 * 512)  # after the GPT's entries (first usable LBA 34), before the first partition
    mbr = synthetic.mbr_disk(os.path.join(images, 'bootcode-mbr.raw'), synthetic.DISK_MIB,
                             [(None, 8, 'ef', 'esp'), (fs, synthetic.ROOT_FS_MIB, '83', 'root')])
    _with_boot_code(mbr, 512)  # the "MBR gap", where GRUB puts its core image
    shutil.rmtree(work)
    # and the lab's ordinary ones
    lab = synthetic.build_all(os.path.join(base, 'lab'))
    shutil.copy(lab['byol_qcow2'], os.path.join(images, 'byol.qcow2'))
    shutil.copy(lab['byoi_raw'], os.path.join(images, 'byoi.raw'))
    write_checksums(images)
    with ImageServer(images) as srv:
        yield dict(outside=outside, server=srv, images=images)


def outside_state(outside):
    out = {}
    for name in sorted(os.listdir(outside)):
        with open(os.path.join(outside, name), 'rb') as f:
            out[name] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture
def victim(hostile):
    outside = hostile['outside']
    for name in os.listdir(outside):
        os.unlink(os.path.join(outside, name))
    with open(os.path.join(outside, 'victim'), 'w') as f:
        f.write('a file of the rescue system\n')
    return outside


@pytest.fixture
def burn(ansible_module, hostile, tmp_path):
    def run(name, args, check=False):
        params = dict(url=hostile['server'].url(name), state_dir=str(tmp_path / 'state'), progress_interval=1,
                      progress_file=str(tmp_path / 'progress.json'))
        params.update(args)
        return ansible_module('byol_image_burn', params, check=check)
    return run


def settle():
    subprocess.run(['udevadm', 'settle', '--timeout=30'], check=False)


def quiet(dev):
    subprocess.run(['sync'], check=True)
    settle()
    time.sleep(0.3)
    return write_sectors(dev)


# -- issue 14 class 1: the record never leads out of the tree -----------------------------------------

@pytest.mark.parametrize('name,link', [('byol-record-dirlink.qcow2', os.path.dirname(RECORD)),
                                       ('byol-record-filelink.qcow2', RECORD)])
def test_files_record_link_in_image_refused(burn, target_fs, victim, name, link):
    """The image's link is met on the mounted image (the message names it) and nothing is copied or written
    outside. On main the directory link made the module write its JSON into the outside directory."""
    dev, mnt = target_fs
    before = outside_state(victim)
    r = burn(name, dict(image_type='qcow2', mode='files', dest=mnt))
    assert outside_state(victim) == before
    assert r.failed, r.output
    assert 'Refusing the image: its /%s is a symbolic link' % link in r.result['msg'], r.result['msg']
    assert not r.changed
    assert sorted(os.listdir(mnt)) == ['lost+found']


def test_files_record_link_in_dest_refused(burn, target_fs, victim):
    """A link already in the tree (left by an earlier copy, or by a hook) at the record's directory: the
    record is neither read nor written through it."""
    dev, mnt = target_fs
    os.makedirs(os.path.join(mnt, 'var/lib'))
    os.symlink(victim, os.path.join(mnt, os.path.dirname(RECORD)))
    with open(os.path.join(victim, 'image_burn.json'), 'w') as f:
        json.dump(dict(version=1, image_type='qcow2', digests={'sha512': 'x'}), f)
    before = outside_state(victim)
    r = burn('byol.qcow2', dict(image_type='qcow2', mode='files', dest=mnt))
    assert r.failed, r.output
    assert 'Refusing /%s in the target tree' % RECORD in r.result['msg'], r.result['msg']
    assert '/var/lib/baremetal-byol is a symbolic link, not a directory' in r.result['msg']
    assert outside_state(victim) == before
    assert os.path.islink(os.path.join(mnt, os.path.dirname(RECORD)))


def test_files_record_written_inside(burn, target_fs, hostile):
    """The ordinary case still records inside the tree (a regular file, mode 0644)."""
    _dev, mnt = target_fs
    r = burn('byol.qcow2', dict(image_type='qcow2', mode='files', dest=mnt))
    assert r.rc == 0 and r.changed, r.output
    path = os.path.join(mnt, RECORD)
    assert r.result['marker'] == path and os.path.isfile(path) and not os.path.islink(path)
    assert json.load(open(path))['mode'] == 'files'
    assert [n for n in os.listdir(os.path.dirname(path)) if 'tmp' in n] == []
    r = burn('byol.qcow2', dict(image_type='qcow2', mode='files', dest=mnt))
    assert r.rc == 0 and not r.changed, r.output


# -- issue 25: a disk record is checked against the disk ----------------------------------------------

def raw_args(dev):
    return dict(image_type='raw', device=dev)


def test_first_mib_wiped_writes_again(burn, loopdev):
    """The issue's case: no checksum (validators), the first MiB wiped after the write."""
    dev = loopdev(size_mib=96)
    r = burn('byoi.raw', raw_args(dev))
    assert r.rc == 0 and r.changed, r.output
    with open(dev, 'r+b') as f:
        f.write(b'\0' * MIB)
        os.fsync(f.fileno())
    r = burn('byoi.raw', raw_args(dev))
    assert r.rc == 0, r.output
    assert r.changed, r.result.get('msg')
    assert 'the disk has no partition table' in r.result['reason'], r.result['reason']
    assert _run('sfdisk', '--json', dev).stdout  # the table is back
    r = burn('byoi.raw', raw_args(dev))
    assert r.rc == 0 and not r.changed, r.output


def test_guids_rewritten_writes_again(burn, loopdev):
    dev = loopdev(size_mib=96)
    assert burn('byoi.raw', raw_args(dev)).changed
    image_table = json.loads(_run('sfdisk', '--json', dev).stdout)['partitiontable']
    _run('sgdisk', '-G', dev)  # new random disk and partition GUIDs, nothing else
    settle()
    r = burn('byoi.raw', raw_args(dev))
    assert r.rc == 0 and r.changed, r.output
    assert 'unique GUID' in r.result['reason'] and 'disk identifier' in r.result['reason'], r.result['reason']
    again = json.loads(_run('sfdisk', '--json', dev).stdout)['partitiontable']
    assert [p['uuid'] for p in again['partitions']] == [p['uuid'] for p in image_table['partitions']]


@pytest.mark.parametrize('name,table', [('bootcode-gpt.raw', 'gpt'), ('bootcode-mbr.raw', 'dos')])
@pytest.mark.parametrize('damage', ['boot_code', 'boot_area'])
def test_boot_code_overwritten_writes_again(burn, loopdev, name, table, damage):
    dev = loopdev(size_mib=96)
    r = burn(name, raw_args(dev))
    assert r.rc == 0 and r.changed, r.output
    assert r.result['partition_table'] == table
    offset = 0 if damage == 'boot_code' else (40 * 512 if table == 'gpt' else 512)
    with open(dev, 'r+b') as f:
        f.seek(offset)
        f.write(b'\0' * 440)
        os.fsync(f.fileno())
    r = burn(name, raw_args(dev))
    assert r.rc == 0 and r.changed, r.output
    assert ('boot code' if damage == 'boot_code' else 'boot loader') in r.result['reason'], r.result['reason']
    with open(dev, 'rb') as f:
        assert f.read(440) == BOOT_CODE


@pytest.mark.parametrize('name', ['bootcode-gpt.raw', 'bootcode-mbr.raw'])
def test_config_drive_after_image_is_no_change(burn, loopdev, ansible_module, name):
    """What the later steps legitimately change (backup GPT moved, config drive added at the end) does not make
    the image's record fail: the second run writes nothing."""
    dev = loopdev(size_mib=160)
    assert burn(name, raw_args(dev)).changed
    r = ansible_module('byol_configdrive', dict(device=dev, hostname='web01.example.net'))
    assert r.rc == 0 and r.changed, r.output
    before = quiet(dev)
    r = burn(name, raw_args(dev))
    assert r.rc == 0, r.output
    assert not r.changed, r.result.get('reason')
    assert quiet(dev) == before


# -- issue 25: the config drive's check reads its files -----------------------------------------------

def test_config_drive_files_removed_written_again(loopdev, ansible_module, burn):
    dev = loopdev(size_mib=160)
    assert burn('byoi.raw', raw_args(dev)).changed
    args = dict(device=dev, hostname='web01.example.net', user_data='#cloud-config\n')
    r = ansible_module('byol_configdrive', args)
    assert r.rc == 0 and r.changed, r.output
    part = r.result['partition']['device']
    settle()
    env = dict(os.environ, MTOOLS_SKIP_CHECK='1')
    subprocess.run(['mdel', '-i', part, '::/openstack/latest/meta_data.json', '::/openstack/latest/user_data'],
                   check=True, env=env)
    listing = subprocess.run(['mdir', '-i', part, '-b', '-/', '::/'], stdout=subprocess.PIPE, universal_newlines=True,
                             env=env, check=False).stdout
    assert 'meta_data.json' not in listing
    r = ansible_module('byol_configdrive', args)
    assert r.rc == 0 and r.changed, r.output
    assert r.result['files']['openstack/latest/meta_data.json'] == 'created'
    assert r.result['files']['openstack/latest/user_data'] == 'created'
    listing = subprocess.run(['mdir', '-i', part, '-b', '-/', '::/'], stdout=subprocess.PIPE, universal_newlines=True,
                             env=env, check=False).stdout
    assert 'meta_data.json' in listing and 'user_data' in listing
    r = ansible_module('byol_configdrive', args)
    assert r.rc == 0 and not r.changed, r.output

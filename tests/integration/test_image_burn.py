# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""byol_image_burn on loop devices, with the lab's synthetic images over its real HTTP server."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import stat
import subprocess
import zipfile

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils._blockdev import write_sectors
from ansible_collections.baremetal.byol.plugins.module_utils._image.format import parse_gpt
from byollab import synthetic
from byollab.httpserve import ImageServer, write_checksums

MIB = 1024 * 1024
SECRET = 'Basic YnlvbDp0b3Atc2VjcmV0LXZhbHVl'


@pytest.fixture(scope='session')
def images(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip('integration tests need root')
    d = str(tmp_path_factory.mktemp('synthetic'))
    paths = synthetic.build_all(d)
    sums = write_checksums(d)
    return dict(dir=d, paths=paths, sums=sums)


@pytest.fixture(scope='session')
def server(images):
    with ImageServer(images['dir']) as srv:
        yield srv


@pytest.fixture
def burn(ansible_module, server, images, tmp_path):
    state = str(tmp_path / 'state')

    def run(name, args=None, check=False, verbosity=0, srv=None):
        params = dict(url=(srv or server).url(name), progress_interval=1, state_dir=state,
                      progress_file=str(tmp_path / 'progress.json'))
        params.update(args or {})
        return ansible_module('byol_image_burn', params, check=check, verbosity=verbosity)
    return run


def sha512(name, images):
    return images['sums'][name]['sha512']


def read(path, offset, length):
    with open(path, 'rb') as f:
        f.seek(offset)
        return f.read(length)


def device_size(dev):
    return int(subprocess.run(['blockdev', '--getsize64', dev], stdout=subprocess.PIPE, check=True).stdout)


def assert_disk_holds_byoi(dev, images):
    """Partition contents equal the image's; the backup GPT header is at the real end; nodes exist."""
    raw = images['paths']['byoi_raw']
    size = os.path.getsize(raw)
    # everything between the primary table area and the image's end (backup table area excluded)
    assert hashlib.sha256(read(dev, MIB, size - 2 * MIB)).hexdigest() == \
        hashlib.sha256(read(raw, MIB, size - 2 * MIB)).hexdigest()
    gpt = parse_gpt(read(dev, 0, MIB))
    assert gpt['backup_lba'] == device_size(dev) // 512 - 1
    assert read(dev, device_size(dev) - 512, 8) == b'EFI PART'
    assert os.path.exists(dev + 'p1') and os.path.exists(dev + 'p2')
    blkid = subprocess.run(['blkid', '-p', '-o', 'value', '-s', 'LABEL', dev + 'p2'], stdout=subprocess.PIPE,
                           universal_newlines=True, check=False).stdout.strip()
    assert blkid == 'byolroot'
    # last: sgdisk opens the disk read-write, and on closing it udev re-reads the table (the
    # partition nodes go away on this kernel until the next partx --update)
    verify = subprocess.run(['sgdisk', '-v', dev], stdout=subprocess.PIPE, universal_newlines=True, check=False)
    assert 'No problems found' in verify.stdout, verify.stdout


# -- mode disk ---------------------------------------------------------------------------------

@pytest.mark.parametrize('name,image_type', [('byoi.raw', 'raw'), ('byoi.qcow2', 'qcow2')])
def test_disk_write_idempotent_force_check(burn, loopdev, images, server, name, image_type):
    dev = loopdev(size_mib=128)
    args = dict(image_type=image_type, device=dev, checksum=sha512(name, images), checksum_type='sha512')
    # check mode: downloads nothing, writes nothing
    before = write_sectors(dev)
    del server.requests[:]
    r = burn(name, args, check=True)
    assert r.rc == 0, r.output
    assert r.changed and r.result['plan']['action'] == 'write'
    assert write_sectors(dev) == before
    assert ('GET', '/' + name) not in server.requests
    # real run
    r = burn(name, args)
    assert r.rc == 0, r.output
    assert r.changed and r.result['checksum'] == sha512(name, images)
    assert r.result['partition_table'] == 'gpt' and r.result['gpt_backup_moved']
    assert r.result['partitions'] == [dev + 'p1', dev + 'p2']
    assert r.result['phases'] and all(p['seconds'] >= 0 for p in r.result['phases'])
    assert r.result['peak_rss']['module_bytes'] < 100 * MIB
    assert_disk_holds_byoi(dev, images)
    assert json.load(open(r.result['marker']))['digests']['sha512'] == sha512(name, images)
    # second run: nothing downloaded, nothing written
    del server.requests[:]
    before = write_sectors(dev)
    r = burn(name, args)
    assert r.rc == 0, r.output
    assert not r.changed
    assert write_sectors(dev) == before
    assert server.requests == []
    # check mode on a written disk: no change predicted
    assert not burn(name, args, check=True).changed
    # force rewrites
    r = burn(name, dict(args, force=True))
    assert r.rc == 0 and r.changed
    assert write_sectors(dev) > before
    assert_disk_holds_byoi(dev, images)


def test_disk_idempotent_without_checksum_uses_validators(burn, loopdev, server):
    dev = loopdev(size_mib=96)
    assert burn('byoi.raw', dict(image_type='raw', device=dev)).changed
    del server.requests[:]
    before = write_sectors(dev)
    r = burn('byoi.raw', dict(image_type='raw', device=dev))
    assert r.rc == 0 and not r.changed, r.output
    assert write_sectors(dev) == before
    assert server.requests == [('HEAD', '/byoi.raw')]


def test_disk_rewritten_when_disk_changed(burn, loopdev):
    dev = loopdev(size_mib=96)
    args = dict(image_type='raw', device=dev)
    assert burn('byoi.raw', args).changed
    with open(dev, 'r+b') as f:  # someone overwrote part of the image
        f.seek(20 * MIB)
        f.write(os.urandom(8 * MIB))
    r = burn('byoi.raw', args)
    assert r.rc == 0 and r.changed, r.output


def test_mbr_image(burn, loopdev, images):
    dev = loopdev(size_mib=80)
    r = burn('byoi-mbr.raw', dict(image_type='raw', device=dev))
    assert r.rc == 0, r.output
    assert r.result['partition_table'] == 'dos' and 'gpt_backup_moved' not in r.result
    assert os.path.exists(dev + 'p2')
    raw = images['paths']['byoi_mbr_raw']
    assert read(dev, 0, 8 * MIB) == read(raw, 0, 8 * MIB)


@pytest.mark.parametrize('name,image_type,compression', [
    ('byoi.raw.xz', 'raw', 'xz'), ('byoi.raw.gz', 'raw', 'gz'), ('byoi.raw.zst', 'raw', 'zst'),
    ('byoi.qcow2.gz', 'qcow2', 'gz')])
def test_compressed_images(burn, loopdev, images, name, image_type, compression):
    dev = loopdev(size_mib=96)
    r = burn(name, dict(image_type=image_type, device=dev, checksum=sha512(name, images), checksum_type='sha512'))
    assert r.rc == 0, r.output
    assert r.result['compression'] == compression
    assert r.result['downloaded_bytes'] == os.path.getsize(os.path.join(images['dir'], name))
    assert_disk_holds_byoi(dev, images)


# -- errors before writing -----------------------------------------------------------------------

BAD = [
    ('byoi.qcow2', 'raw', 'image provided format is qcow2 which does not match expected raw format'),
    ('byoi.raw', 'qcow2', 'image provided format is raw which does not match expected qcow2 format'),
    ('noptable.raw', 'raw', "image provided format is not of type raw because no partition table was found. It seems "
     "to contain: ext4 filesystem (50331648 bytes)"),
    ('backing.qcow2', 'qcow2', 'Refusing the image: the qcow2 image has a backing file ('),
    ('datafile.qcow2', 'qcow2', 'Refusing the image: the qcow2 image uses an external data file ('),
]


@pytest.mark.parametrize('name,image_type,message', BAD)
def test_bad_images_refused_before_writing(burn, loopdev, name, image_type, message):
    dev = loopdev(size_mib=96)
    before = write_sectors(dev)
    r = burn(name, dict(image_type=image_type, device=dev))
    assert r.rc != 0 and r.failed
    assert r.result['msg'].startswith(message), r.result['msg']
    assert write_sectors(dev) == before
    assert not r.changed


@pytest.mark.parametrize('name,image_type', [('byoi.raw', 'raw'), ('byoi.qcow2', 'qcow2'), ('byoi.raw.xz', 'raw')])
def test_image_larger_than_device(burn, loopdev, name, image_type):
    dev = loopdev(size_mib=40)
    before = write_sectors(dev)
    r = burn(name, dict(image_type=image_type, device=dev))
    assert r.failed
    assert r.result['msg'] == 'image provided has a size of %s%d bytes which is larger than device of %d bytes' % (
        'at least ' if name.endswith('.xz') else '', 64 * MIB, 40 * MIB)
    assert write_sectors(dev) == before


def test_checksum_pair_rule(burn, loopdev):
    dev = loopdev(size_mib=96)
    r = burn('byoi.raw', dict(image_type='raw', device=dev, checksum='ab' * 64))
    assert r.failed and r.result['msg'] == 'Please provide checkSum AND checkSumType or none of them'


def test_download_404(burn, loopdev, server):
    dev = loopdev(size_mib=96)
    r = burn('missing.raw', dict(image_type='raw', device=dev))
    assert r.failed
    assert r.result['msg'] == 'Could not download image located: %s (HTTP status 404 File not found)' % \
        server.url('missing.raw')


def test_checksum_mismatch_raw_wipes_signatures(burn, loopdev, images):
    dev = loopdev(size_mib=96)
    wrong = 'f' * 128
    r = burn('byoi.raw', dict(image_type='raw', device=dev, checksum=wrong, checksum_type='sha512'))
    assert r.failed
    assert r.result['msg'] == 'Bad checkSumType for downloaded file, got: %s while expecting %s.' % (
        sha512('byoi.raw', images), wrong)
    assert r.changed and r.result['wiped_signatures']
    assert read(dev, 0, MIB) == bytes(MIB)
    assert read(dev, 63 * MIB, MIB) == bytes(MIB)
    out = subprocess.run(['sfdisk', '--json', dev], stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    assert out.returncode != 0  # no partition table left
    assert not os.path.exists(dev + 'p1')


def test_checksum_mismatch_qcow2_touches_nothing_without_streaming(burn, loopdev, images):
    dev = loopdev(size_mib=96)
    before = write_sectors(dev)
    r = burn('byoi.qcow2', dict(image_type='qcow2', device=dev, checksum='0' * 64, checksum_type='sha256',
                                qcow2_streaming=False))
    assert r.failed
    assert r.result['msg'] == 'Bad checkSumType for downloaded file, got: %s while expecting %s.' % (
        images['sums']['byoi.qcow2']['sha256'], '0' * 64)
    assert write_sectors(dev) == before


def test_checksum_mismatch_qcow2_streamed_wipes_signatures(burn, loopdev, images):
    dev = loopdev(size_mib=96)
    r = burn('byoi.qcow2', dict(image_type='qcow2', device=dev, checksum='0' * 64, checksum_type='sha256'))
    assert r.failed
    assert r.result['msg'] == 'Bad checkSumType for downloaded file, got: %s while expecting %s.' % (
        images['sums']['byoi.qcow2']['sha256'], '0' * 64)
    assert r.changed and r.result['wiped_signatures']
    assert read(dev, 0, MIB) == bytes(MIB)
    assert read(dev, 63 * MIB, MIB) == bytes(MIB)


def test_qcow2_not_streamable_falls_back_to_qemu_img(burn, loopdev, images, server):
    """A qcow2 grown with qemu-img resize past what its L1 table maps has its L1 table moved to the end of the file,
    after the L2 tables (metadata preallocated: 64 MiB of file before it): the stream stops when the L1 table
    arrives, and the image is downloaded again into scratch space for qemu-img convert."""
    name = 'byoi-resized.qcow2'
    path = os.path.join(images['dir'], name)
    if not os.path.exists(path):
        subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2', '-o',
                        'cluster_size=4096,preallocation=metadata', images['paths']['byoi_raw'], path + '.tmp'],
                       check=True)
        subprocess.run(['qemu-img', 'resize', '-q', path + '.tmp', '80M'], check=True)
        os.rename(path + '.tmp', path)
    dev = loopdev(size_mib=96)
    del server.requests[:]
    r = burn(name, dict(image_type='qcow2', device=dev))
    assert r.rc == 0, r.output
    assert r.result['qcow2_streamed'] is False
    assert r.result['qcow2_stream_fallback'] == 'an L2 table precedes the L1 table'
    assert server.requests.count(('GET', '/' + name)) == 2
    assert_disk_holds_byoi(dev, images)


def test_qcow2_with_compressed_clusters_is_streamed(burn, loopdev, images, server):
    """qemu-img convert -c (how cloud images are published): streamed, inflated on the way, one download and no
    scratch space (on main: the stream stopped at the first compressed cluster and the image was downloaded
    again into scratch space)."""
    dev = loopdev(size_mib=96)
    del server.requests[:]
    name = 'byoi-compressed.qcow2'
    r = burn(name, dict(image_type='qcow2', device=dev, checksum=sha512(name, images), checksum_type='sha512'))
    assert r.rc == 0, r.output
    assert r.result['qcow2_streamed'] is True and 'qcow2_stream_fallback' not in r.result
    assert 'scratch' not in r.result
    assert server.requests.count(('GET', '/' + name)) == 1
    assert_disk_holds_byoi(dev, images)


def test_qcow2_damaged_compressed_cluster_fails_and_wipes(burn, loopdev, images, server, tmp_path):
    """A compressed cluster whose deflate data is damaged (byte-level edit) is not written as part of a complete
    image: the run fails and the partition tables written before it are wiped."""
    src = images['paths']['byoi_compressed_qcow2']
    name = 'byoi-compressed-damaged.qcow2'
    path = os.path.join(images['dir'], name)
    with open(src, 'rb') as f:
        data = bytearray(f.read())
    cluster_bits = int.from_bytes(bytes(data[20:24]), 'big')
    offset_mask = (1 << (62 - (cluster_bits - 8))) - 1
    # the last compressed cluster of the file's last L2 entry: the data that ends the image
    starts = []
    l1_size, l1_offset = int.from_bytes(bytes(data[36:40]), 'big'), int.from_bytes(bytes(data[40:48]), 'big')
    for i in range(l1_size):
        l2 = int.from_bytes(bytes(data[l1_offset + 8 * i:l1_offset + 8 * i + 8]), 'big') & 0x00fffffffffffe00
        for j in range(l2 and (1 << cluster_bits) // 8):
            entry = int.from_bytes(bytes(data[l2 + 8 * j:l2 + 8 * j + 8]), 'big')
            if entry & (1 << 62):
                starts.append(entry & offset_mask)
    assert starts, 'the image has compressed clusters'
    start = max(starts)
    data[start:start + 32] = b'\xff' * 32
    with open(path, 'wb') as f:
        f.write(data)
    dev = loopdev(size_mib=96)
    del server.requests[:]
    r = burn(name, dict(image_type='qcow2', device=dev))
    assert server.requests.count(('GET', '/' + name)) == 1  # the download ran
    assert r.failed
    assert 'does not inflate to a whole cluster' in r.result['msg'], r.result['msg']
    assert r.changed and r.result['wiped_signatures']
    assert read(dev, 0, MIB) == bytes(MIB)


@pytest.mark.parametrize('streaming', [True, False])
def test_qcow2_streamed_or_converted(burn, loopdev, images, streaming):
    dev = loopdev(size_mib=96)
    r = burn('byoi.qcow2', dict(image_type='qcow2', device=dev, qcow2_streaming=streaming))
    assert r.rc == 0, r.output
    assert r.result['qcow2_streamed'] is streaming
    assert_disk_holds_byoi(dev, images)


# -- HTTP: Authorization header and TLS --------------------------------------------------------------

def test_authorization_header(burn, loopdev, images):
    dev = loopdev(size_mib=96)
    with ImageServer(images['dir'], auth=SECRET) as srv:
        r = burn('byoi.raw', dict(image_type='raw', device=dev), srv=srv, verbosity=4)
        assert r.failed
        assert r.result['msg'] == 'Could not download image located: %s (HTTP status 401 Unauthorized)' % \
            srv.url('byoi.raw')
        wrong = 'Basic d3JvbmctdmFsdWUtc2hvd24='
        r = burn('byoi.raw', dict(image_type='raw', device=dev, http_headers={'Authorization': wrong}), srv=srv,
                 verbosity=4)
        assert r.failed and '401' in r.result['msg']
        assert wrong not in r.output and 'd3JvbmctdmFsdWUtc2hvd24' not in r.output
        r = burn('byoi.raw', dict(image_type='raw', device=dev, http_headers={'Authorization': SECRET}), srv=srv,
                 verbosity=4)
        assert r.rc == 0 and r.changed, r.output
        assert SECRET not in r.output and 'YnlvbDp0b3Atc2VjcmV0LXZhbHVl' not in r.output
        r = burn('byoi.raw', dict(image_type='raw', device=dev, http_headers={'Authorization': SECRET}), srv=srv,
                 verbosity=4, check=True)
        assert SECRET not in r.output
    assert_disk_holds_byoi(dev, images)


def test_tls_self_signed_ca(burn, loopdev, images, tmp_path):
    dev = loopdev(size_mib=96)
    with ImageServer(images['dir'], tls=True, certdir=str(tmp_path / 'tls')) as srv:
        before = write_sectors(dev)
        r = burn('byoi.raw', dict(image_type='raw', device=dev), srv=srv)
        assert r.failed
        assert r.result['msg'].startswith('Could not download image located: %s (' % srv.url('byoi.raw'))
        assert 'CERTIFICATE_VERIFY_FAILED' in r.result['msg'] or 'certificate verify failed' in r.result['msg']
        assert write_sectors(dev) == before
        r = burn('byoi.raw', dict(image_type='raw', device=dev, ca_path=srv.ca_path), srv=srv)
        assert r.rc == 0 and r.changed, r.output
    assert_disk_holds_byoi(dev, images)


def test_progress_file(burn, loopdev, tmp_path):
    dev = loopdev(size_mib=96)
    # qemu-img convert's own progress (-p) feeds the 'write' phase
    r = burn('byoi.qcow2', dict(image_type='qcow2', device=dev, qcow2_streaming=False))
    assert r.rc == 0, r.output
    assert [p['phase'] for p in r.result['phases']] == ['download', 'write']
    last = json.load(open(str(tmp_path / 'progress.json')))
    assert last['final'] and last['phase'] == 'write' and last['bytes'] == 64 * MIB
    assert r.result['progress_reports'] >= 4


# -- mode files (BYOL) -----------------------------------------------------------------------------

def leftovers():
    loops = subprocess.run(['losetup', '--list', '--noheadings', '--output', 'BACK-FILE'], stdout=subprocess.PIPE,
                           universal_newlines=True, check=False).stdout
    mounts = subprocess.run(['findmnt', '--list', '--noheadings', '--output', 'TARGET'], stdout=subprocess.PIPE,
                            universal_newlines=True, check=False).stdout
    return [line for line in loops.splitlines() if 'byol-image-burn-' in line] + \
        [line for line in mounts.splitlines() if 'byol-image-' in line]


def assert_tree_copied(mnt):
    data = os.path.join(mnt, 'data')
    owned = os.stat(os.path.join(data, 'owned'))
    assert (owned.st_uid, owned.st_gid) == (synthetic.OWNED_UID, synthetic.OWNED_GID)
    assert stat.S_IMODE(owned.st_mode) == 0o660 or stat.S_IMODE(owned.st_mode) == 0o640
    a, b = os.stat(os.path.join(data, 'linked-a')), os.stat(os.path.join(data, 'linked-b'))
    assert a.st_ino == b.st_ino and a.st_nlink == 2
    assert os.getxattr(os.path.join(data, 'owned'), 'user.byol') == b'kept'
    acl = subprocess.run(['getfacl', '-cn', os.path.join(data, 'owned')], stdout=subprocess.PIPE,
                         universal_newlines=True, check=False).stdout
    assert 'user:4321:rw-' in acl
    sp = os.stat(os.path.join(data, 'sparse.img'))
    assert sp.st_size == synthetic.SPARSE_SIZE and sp.st_blocks * 512 < 1 * MIB
    null = os.stat(os.path.join(mnt, 'dev', 'null'))
    assert stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1 and os.minor(null.st_rdev) == 3
    assert os.readlink(os.path.join(data, 'hostname-link')) == '../etc/hostname'
    hook = os.stat(os.path.join(mnt, 'root', '.ovh', 'make_image_bootable.sh'))
    assert hook.st_mode & 0o111


@pytest.mark.parametrize('name,fstype', [('byol.qcow2', 'ext4'), ('byol-xfs.qcow2', 'xfs'),
                                         ('byol.qcow2.zst', 'ext4')])
def test_files_mode_copies_tree(burn, target_fs, images, name, fstype):
    dev, mnt = target_fs
    args = dict(image_type='qcow2', mode='files', dest=mnt, checksum=sha512(name, images), checksum_type='sha512')
    before = write_sectors(dev)
    r = burn(name, args, check=True)
    assert r.rc == 0 and r.changed and r.result['plan']['action'] == 'copy', r.output
    assert sorted(os.listdir(mnt)) == ['lost+found']
    r = burn(name, args)
    assert r.rc == 0, r.output
    assert r.changed and r.result['filesystem'] == fstype
    assert r.result['attach_method'] in ('loop', 'qemu-nbd')
    assert_tree_copied(mnt)
    assert json.load(open(os.path.join(mnt, 'var/lib/baremetal-byol/image_burn.json')))['digests']['sha512'] == \
        sha512(name, images)
    assert leftovers() == []
    subprocess.run(['sync'], check=True)
    before = write_sectors(dev)
    r = burn(name, args)
    assert r.rc == 0 and not r.changed, r.output
    subprocess.run(['sync'], check=True)
    assert write_sectors(dev) == before


BAD_BYOL = [
    ('byol-two-parts.qcow2', 'a BYOL image must contain exactly one partition, this one has 2'),
    ('byol-nohook.qcow2', 'the BYOL image has no /root/.ovh/make_image_bootable.sh'),
    ('byol-hook-noexec.qcow2', '/root/.ovh/make_image_bootable.sh in the BYOL image is not executable (mode 0644)'),
    ('byol-btrfs.qcow2', 'the partition of a BYOL image must be formatted ext4 or XFS, this one is btrfs'),
    ('backing.qcow2', 'Refusing the image: the qcow2 image has a backing file'),
]


@pytest.mark.parametrize('name,message', BAD_BYOL)
def test_files_mode_bad_images_touch_nothing(burn, target_fs, images, name, message):
    if name not in [os.path.basename(p) for p in images['paths'].values()]:
        pytest.skip('%s not built (tool missing)' % name)
    dev, mnt = target_fs
    subprocess.run(['sync'], check=True)
    before = write_sectors(dev)
    r = burn(name, dict(image_type='qcow2', mode='files', dest=mnt))
    assert r.failed
    assert r.result['msg'].startswith(message), r.result['msg']
    subprocess.run(['sync'], check=True)
    assert write_sectors(dev) == before
    assert sorted(os.listdir(mnt)) == ['lost+found']
    assert leftovers() == []


def test_files_mode_raw_declared_qcow2(burn, target_fs):
    _dev, mnt = target_fs
    r = burn('byol.raw', dict(image_type='qcow2', mode='files', dest=mnt))
    assert r.failed and r.result['msg'] == 'image provided format is raw which does not match expected qcow2 format'


def test_ansiballz_packs_the_image_package(ansible_module, server, images, tmp_path):
    """The module imports ``module_utils/_image/`` (a subpackage): the payload the real ``ansible`` builds
    (AnsiballZ) holds each of its files, and the module runs from that payload (ansible's process never has the
    repository on its path). Check mode on mode files runs the dispatcher, files.py, record.py and source.py's
    HEAD against the image server."""
    remote = tmp_path / 'remote'
    dest = tmp_path / 'dest'
    dest.mkdir()
    r = ansible_module('byol_image_burn', dict(url=server.url('byol.qcow2'), image_type='qcow2', mode='files',
                                               dest=str(dest), checksum=sha512('byol.qcow2', images),
                                               checksum_type='sha512'),
                       check=True, env={'ANSIBLE_KEEP_REMOTE_FILES': '1', 'ANSIBLE_REMOTE_TMP': str(remote)})
    assert r.rc == 0, r.output
    assert r.result['plan']['action'] == 'copy' and r.result['plan']['download_size'] > 0
    assert r.result['reason'] == 'no record of a previous write'
    wrappers = [os.path.join(d, n) for d, _s, names in os.walk(str(remote)) for n in names
                if n == 'AnsiballZ_byol_image_burn.py']
    assert len(wrappers) == 1
    with open(wrappers[0]) as f:
        zip_data = re.search(r"zip_data='([A-Za-z0-9+/=]+)'", f.read()).group(1)
    names = set(zipfile.ZipFile(io.BytesIO(base64.b64decode(zip_data))).namelist())
    package = 'ansible_collections/baremetal/byol/plugins/module_utils/_image/'
    wanted = set(package + n for n in ('burn.py', 'request.py', 'source.py', 'format.py', 'qcow2stream.py',
                                       'write.py', 'disk.py', 'files.py', 'attach.py', 'scratch.py', 'record.py'))
    assert wanted <= names, sorted(wanted - names)
    assert not any(n.startswith('ansible_collections/baremetal/byol/plugins/module_utils/_image_') for n in names)

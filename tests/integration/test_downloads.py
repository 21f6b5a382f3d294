# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""byol_image_burn against servers that misbehave (lab/byollab/httpserve.py faults), on loop devices.

Redirects across origins and schemes, a pre-signed object-store redirect, retries on 5xx/429/503,
connections cut several times during one image (resume), short bodies, cut compressed streams, a
qcow2 cut in half, decompression bombs, and a file:// URL of a text file.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import subprocess

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils._blockdev import write_sectors
from byollab import synthetic
from byollab.httpserve import ImageServer, write_checksums

MIB = 1024 * 1024
SECRET = 'Basic cHJlc2lnbi11c2VyOnRvcC1zZWNyZXQ='
COOKIE = 'session=cookie-top-secret'
CHUNK = 4 * MIB


@pytest.fixture(scope='session')
def dl_images(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip('integration tests need root')
    d = str(tmp_path_factory.mktemp('downloads'))
    paths = synthetic.build_all(d)
    raw = paths['byoi_raw']
    with open(raw, 'rb') as f:
        image = f.read()
    with open(os.path.join(d, 'byoi.raw.bz2'), 'wb') as f:
        f.write(bz2.compress(image, 1))
    # complete files of cut streams: the server sends them whole, their own format says they end early
    for name in ('byoi.raw.gz', 'byoi.raw.xz', 'byoi.raw.bz2', 'byoi.raw.zst'):
        with open(os.path.join(d, name), 'rb') as f:
            whole = f.read()
        with open(os.path.join(d, 'cut-' + name), 'wb') as f:
            f.write(whole[:len(whole) // 2])
    with open(paths['byoi_qcow2'], 'rb') as f:
        qcow = f.read()
    with open(os.path.join(d, 'half-byoi.qcow2'), 'wb') as f:
        f.write(qcow[:len(qcow) // 2])
    # decompression bombs: a valid disk image head, then zeroes far past the 96 MiB test disk
    bomb = image + bytes(256 * MIB - len(image))
    with open(os.path.join(d, 'bomb.raw.gz'), 'wb') as f:
        f.write(gzip.compress(bomb, 1))
    with open(os.path.join(d, 'bomb.raw.xz'), 'wb') as f:
        f.write(lzma.compress(bomb, preset=0))
    with open(os.path.join(d, 'bomb.raw.bz2'), 'wb') as f:
        f.write(bz2.compress(bomb, 1))
    with open(os.path.join(d, 'bomb.raw'), 'wb') as f:
        f.write(bomb)
    subprocess.run(['zstd', '-q', '-1', '-f', os.path.join(d, 'bomb.raw'), '-o', os.path.join(d, 'bomb.raw.zst')],
                   check=True)
    os.unlink(os.path.join(d, 'bomb.raw'))
    del bomb
    with open(os.path.join(d, 'shadow-like.txt'), 'w') as f:
        f.write('root:$6$c2VjcmV0LXNhbHQ$aGFzaGVkLXBhc3N3b3JkLXZhbHVlLXRvcC1zZWNyZXQ:19700:0:99999:7:::\n' * 40)
    sums = write_checksums(d)
    return dict(dir=d, paths=paths, sums=sums, image=image)


@pytest.fixture
def burn(ansible_module, tmp_path):
    def run(url, args=None, check=False, verbosity=0):
        params = dict(url=url, progress_interval=1, state_dir=str(tmp_path / 'state'),
                      progress_file=str(tmp_path / 'progress.json'), retry_delay=0)
        params.update(args or {})
        return ansible_module('byol_image_burn', params, check=check, verbosity=verbosity)
    return run


def read(path, offset, length):
    with open(path, 'rb') as f:
        f.seek(offset)
        return f.read(length)


def holds_image(dev, image):
    """The image's bytes between its partition-table areas are on the disk."""
    return read(dev, MIB, len(image) - 2 * MIB) == image[MIB:len(image) - MIB]


def assert_wiped(dev, image, written_from=MIB, written_to=8 * MIB):
    """The run wrote image data (proof that the write happened) and zeroed the partition tables."""
    assert read(dev, written_from, written_to - written_from) == image[written_from:written_to]
    assert read(dev, 0, MIB) == bytes(MIB)
    out = subprocess.run(['sfdisk', '--json', dev], stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    assert out.returncode != 0  # no partition table left: the disk cannot boot half an image


# -- redirects -------------------------------------------------------------------------------------

def test_presigned_redirect_with_basic_auth_and_cookie(burn, loopdev, dl_images):
    dev = loopdev(size_mib=96)
    with ImageServer(dl_images['dir'], auth=SECRET) as site, ImageServer(dl_images['dir']) as store:
        store.faults.presigned['/byoi.raw'] = 'Zm9v'
        site.faults.redirects['/releases/byoi.raw'] = (302, store.url('byoi.raw') + '?sig=Zm9v&X-Expires=60')
        args = dict(image_type='raw', device=dev, http_headers={'Authorization': SECRET, 'Cookie': COOKIE},
                    checksum=dl_images['sums']['byoi.raw']['sha512'], checksum_type='sha512')
        r = burn(site.url('releases/byoi.raw'), args, verbosity=3)
        assert r.rc == 0, r.output
        assert r.result['redirects'] == [dict(status=302, to='http://127.0.0.1:%d' % store.port, headers_sent=False)]
        # the store got the request, without the first host's headers
        assert [e['path'] for e in store.faults.log] == ['/byoi.raw?sig=Zm9v&X-Expires=60']
        assert not {'authorization', 'cookie'} & set(store.faults.log[0]['headers'])
        assert site.faults.log[0]['headers']['authorization'] == SECRET
    assert holds_image(dev, dl_images['image'])
    assert SECRET not in r.output and 'cookie-top-secret' not in r.output and 'sig=Zm9v' not in r.output


def test_https_to_http_redirect_refused_before_writing(burn, loopdev, dl_images, tmp_path):
    dev = loopdev(size_mib=96)
    with ImageServer(dl_images['dir'], tls=True, certdir=str(tmp_path / 'tls')) as tls, \
            ImageServer(dl_images['dir']) as plain:
        plain.faults.validators = False
        tls.faults.redirects['/byoi.raw'] = (308, plain.url('byoi.raw'))
        before = write_sectors(dev)
        r = burn(tls.url('byoi.raw'), dict(image_type='raw', device=dev, ca_path=tls.ca_path,
                                           http_headers={'X-Auth-Token': 'tok-secret'}))
        assert r.failed
        assert r.result['msg'] == ('Could not download image located: %s (refused a redirect (HTTP status 308) from '
                                   'https to http (http://127.0.0.1:%d): the download would leave TLS)'
                                   % (tls.url('byoi.raw'), plain.port))
        assert len(tls.faults.log) == 1 and plain.faults.log == []
        assert write_sectors(dev) == before


# -- retries and resume ----------------------------------------------------------------------------

def test_retries_reported_with_reasons(burn, loopdev, dl_images):
    dev = loopdev(size_mib=96)
    with ImageServer(dl_images['dir']) as srv:
        srv.faults.statuses = [(503, {'Retry-After': '1'}), (500, {}), (429, {})]
        r = burn(srv.url('byoi.raw'), dict(image_type='raw', device=dev))
        assert r.rc == 0, r.output
        assert [(x['status'], x['reason'], x['retry_after']) for x in r.result['retries']] == [
            (503, 'HTTP status 503 Service Unavailable', True), (500, 'HTTP status 500 Internal Server Error', False),
            (429, 'HTTP status 429 Too Many Requests', False)]
        assert r.result['retries'][0]['wait_seconds'] == 1
        assert srv.requests == [('GET', '/byoi.raw')] * 4
    assert holds_image(dev, dl_images['image'])


def test_404_is_not_retried(burn, loopdev, dl_images):
    dev = loopdev(size_mib=96)
    with ImageServer(dl_images['dir']) as srv:
        r = burn(srv.url('missing.raw'), dict(image_type='raw', device=dev, retry_delay=30))
        assert r.failed and 'HTTP status 404' in r.result['msg']
        assert r.result['retries'] == [] and srv.requests == [('GET', '/missing.raw')]


@pytest.mark.parametrize('name,image_type,ranges', [
    ('byoi.raw', 'raw', True), ('byoi.raw', 'raw', False), ('byoi.raw.xz', 'raw', True),
    ('byoi.qcow2', 'qcow2', True)])
def test_connection_cut_three_times_during_one_image(burn, loopdev, dl_images, name, image_type, ranges):
    dev = loopdev(size_mib=96)
    size = os.path.getsize(os.path.join(dl_images['dir'], name))
    cuts = [size // 5, size // 2, size * 4 // 5]
    with ImageServer(dl_images['dir']) as srv:
        srv.faults.cuts = list(cuts)
        srv.faults.ranges = ranges
        r = burn(srv.url(name), dict(image_type=image_type, device=dev, checksum=dl_images['sums'][name]['sha512'],
                                     checksum_type='sha512'))
        assert r.rc == 0, r.output
        assert srv.faults.cuts == []  # every cut happened
        assert [x['at_byte'] for x in r.result['retries']] == cuts
        assert all(x['reason'] == 'the connection closed after %d of %d bytes' % (c, size)
                   for x, c in zip(r.result['retries'], cuts))
        if ranges:
            assert (r.result['download_resumes'], r.result['download_restarts']) == (3, 0)
            assert [e['headers'].get('range') for e in srv.faults.log] == [None] + ['bytes=%d-' % c for c in cuts]
        else:
            assert (r.result['download_resumes'], r.result['download_restarts']) == (0, 3)
        # one pass: the checksum is over the bytes of the image, each counted once
        assert r.result['checksum'] == dl_images['sums'][name]['sha512'] and r.result['downloaded_bytes'] == size
    assert holds_image(dev, dl_images['image'])


def test_files_mode_resumes_into_scratch(burn, target_fs, dl_images):
    _dev, mnt = target_fs
    name = 'byol.qcow2'
    size = os.path.getsize(os.path.join(dl_images['dir'], name))
    with ImageServer(dl_images['dir']) as srv:
        srv.faults.cuts = [size // 3, size * 2 // 3]
        r = burn(srv.url(name), dict(image_type='qcow2', mode='files', dest=mnt,
                                     checksum=dl_images['sums'][name]['sha512'], checksum_type='sha512'))
        assert r.rc == 0, r.output
        assert r.result['download_resumes'] == 2 and len(r.result['retries']) == 2
    assert os.path.isfile(os.path.join(mnt, 'root', '.ovh', 'make_image_bootable.sh'))


# -- truncation --------------------------------------------------------------------------------------

def test_short_body_fails_and_wipes(burn, loopdev, dl_images):
    dev = loopdev(size_mib=96)
    size = len(dl_images['image'])
    with ImageServer(dl_images['dir']) as srv:
        srv.faults.truncate = 40 * MIB
        r = burn(srv.url('byoi.raw'), dict(image_type='raw', device=dev, retries=2))
        assert r.failed
        assert r.result['msg'] == ('Could not download image located: %s (the connection closed after %d of %d bytes; '
                                   'no retry left after 2 retries)' % (srv.url('byoi.raw'), 40 * MIB, size))
        assert len(srv.faults.log) == 3
    assert r.changed and r.result['wiped_signatures']
    assert_wiped(dev, dl_images['image'], MIB, 40 * MIB - CHUNK)


@pytest.mark.parametrize('name,kind', [('cut-byoi.raw.gz', 'gzip'), ('cut-byoi.raw.xz', 'xz'),
                                       ('cut-byoi.raw.bz2', 'bzip2'), ('cut-byoi.raw.zst', 'zstd')])
def test_cut_compressed_stream_fails_and_wipes(burn, loopdev, dl_images, name, kind):
    dev = loopdev(size_mib=96)
    with ImageServer(dl_images['dir']) as srv:
        r = burn(srv.url(name), dict(image_type='raw', device=dev))
    assert r.failed
    size = os.path.getsize(os.path.join(dl_images['dir'], name))
    assert r.result['msg'] == ('the image is truncated: its %s data ends before the end of its compressed stream '
                               '(after %d downloaded bytes)' % (kind, size))
    assert r.result['wiped_signatures']
    assert_wiped(dev, dl_images['image'])


def test_chunked_body_cut_fails_and_wipes(burn, loopdev, dl_images):
    dev = loopdev(size_mib=96)
    with ImageServer(dl_images['dir']) as srv:
        srv.faults.chunked = True
        srv.faults.truncate = 30 * MIB + 100
        r = burn(srv.url('byoi.raw'), dict(image_type='raw', device=dev, retries=0))
        assert r.failed
        assert r.result['msg'] == ('Could not download image located: %s (the connection closed in the middle of a '
                                   'chunk (chunked transfer encoding); retries are disabled)' % srv.url('byoi.raw'))
    assert_wiped(dev, dl_images['image'], MIB, 24 * MIB)


def test_qcow2_cut_in_half_streamed_fails_and_wipes(burn, loopdev, dl_images):
    dev = loopdev(size_mib=96)
    with ImageServer(dl_images['dir']) as srv:
        r = burn(srv.url('half-byoi.qcow2'), dict(image_type='qcow2', device=dev))
    assert r.failed
    assert r.result['msg'].startswith("Can't write qcow2 on disk: the qcow2 image is incomplete, the file ends (at "
                                      "byte %d) " % os.path.getsize(os.path.join(dl_images['dir'], 'half-byoi.qcow2')))
    assert r.result['msg'].endswith(': the download was cut or the image is damaged')
    assert r.result['wiped_signatures'] and read(dev, 0, MIB) == bytes(MIB)
    assert not r.result.get('qcow2_stream_fallback')


def test_qcow2_cut_in_half_converted_is_refused_before_writing(burn, loopdev, dl_images):
    dev = loopdev(size_mib=96)
    before = write_sectors(dev)
    with ImageServer(dl_images['dir']) as srv:
        r = burn(srv.url('half-byoi.qcow2'), dict(image_type='qcow2', device=dev, qcow2_streaming=False))
    assert r.failed
    assert r.result['msg'].startswith('Refusing the image: the qcow2 image is incomplete or damaged: qemu-img check '
                                      'finds ')
    assert write_sectors(dev) == before


@pytest.mark.parametrize('name', ['bomb.raw.gz', 'bomb.raw.xz', 'bomb.raw.bz2', 'bomb.raw.zst'])
def test_decompression_bomb_stops_at_the_device_size(burn, loopdev, dl_images, name):
    dev = loopdev(size_mib=96)
    with ImageServer(dl_images['dir']) as srv:
        r = burn(srv.url(name), dict(image_type='raw', device=dev))
    assert r.failed
    # the first chunk past the 96 MiB disk stops it (the stream expands to 256 MiB)
    assert r.result['msg'] == ('image provided has a size of at least %d bytes which is larger than device of %d '
                               'bytes' % (96 * MIB + CHUNK, 96 * MIB))
    assert r.result['wiped_signatures']
    assert_wiped(dev, dl_images['image'])


# -- content is never quoted ---------------------------------------------------------------------------

def test_file_url_of_a_text_file_is_described_not_quoted(burn, loopdev, dl_images):
    dev = loopdev(size_mib=96)
    path = os.path.join(dl_images['dir'], 'shadow-like.txt')
    before = write_sectors(dev)
    r = burn('file://' + path, dict(image_type='raw', device=dev), verbosity=3)
    assert r.failed
    assert r.result['msg'] == ('image provided format is not of type raw because no partition table was found. It '
                               'seems to contain: text (%d bytes)' % os.path.getsize(path))
    assert 'root:' not in r.output and 'c2VjcmV0LXNhbHQ' not in r.output
    assert write_sectors(dev) == before


def test_retry_options_validated(burn, loopdev):
    dev = loopdev(size_mib=16)
    r = burn('http://127.0.0.1:9/x.raw', dict(image_type='raw', device=dev, retries=-1))
    assert r.failed and r.result['msg'] == 'retries must be 0 or more, got -1'


# -- checksum from a checksum file (SHA256SUMS style) ------------------------------------------------------------

def write_sums(directory, name, lines):
    path = os.path.join(directory, name)
    with open(path, 'w') as f:
        f.write(''.join(line + '\n' for line in lines))
    return path


def test_checksum_from_a_checksum_file(burn, loopdev, dl_images):
    """``checksum: sha256:<URL of SHA256SUMS>`` (as get_url takes it): the entry for the image's file name, from a
    file with other entries (GNU and BSD lines, a PGP-signed wrapper) on another origin behind a redirect; the
    image's Authorization header goes to the image's origin only."""
    dev = loopdev(size_mib=96)
    sums = dl_images['sums']['byoi.raw']
    sums_dir = os.path.join(dl_images['dir'], 'sums-ok')
    os.makedirs(sums_dir, exist_ok=True)
    write_sums(sums_dir, 'SHA256SUMS', [
        '-----BEGIN PGP SIGNED MESSAGE-----', 'Hash: SHA256', '',
        '%s *byoi.qcow2' % dl_images['sums']['byoi.qcow2']['sha256'],
        'SHA256 (byoi.raw.xz) = %s' % dl_images['sums']['byoi.raw.xz']['sha256'],
        '%s  byoi.raw' % sums['sha256'],
        'SHA512 (byoi.raw) = %s' % ('0' * 128), '-----BEGIN PGP SIGNATURE-----'])
    with ImageServer(dl_images['dir'], auth=SECRET) as site, ImageServer(sums_dir) as other:
        other.faults.on = True
        other.faults.redirects['/latest/SHA256SUMS'] = (302, other.url('SHA256SUMS'))
        args = dict(image_type='raw', device=dev, http_headers={'Authorization': SECRET},
                    checksum='sha256:' + other.url('latest/SHA256SUMS'))
        r = burn(site.url('byoi.raw'), args)
        assert r.rc == 0, r.output
        assert r.result['checksum'] == sums['sha256'] and r.result['checksum_type'] == 'sha256'
        assert r.result['checksum_url'] == other.url('latest/SHA256SUMS')
        assert r.result['checksum_headers_sent'] is False
        # the checksum file was fetched (through the redirect), without the image's header
        assert [e['path'] for e in other.faults.log] == ['/latest/SHA256SUMS', '/SHA256SUMS']
        assert not any('authorization' in e['headers'] for e in other.faults.log)
    assert holds_image(dev, dl_images['image'])
    assert SECRET not in r.output


def test_checksum_file_on_the_image_origin_gets_its_headers(burn, loopdev, dl_images):
    dev = loopdev(size_mib=96)
    write_sums(dl_images['dir'], 'SHA512SUMS', ['%s  byoi.raw' % dl_images['sums']['byoi.raw']['sha512']])
    with ImageServer(dl_images['dir'], auth=SECRET) as site:
        site.faults.on = True
        r = burn(site.url('byoi.raw'), dict(image_type='raw', device=dev, http_headers={'Authorization': SECRET},
                                            checksum=site.url('SHA512SUMS'), checksum_type='sha512'))
        assert r.rc == 0, r.output
        assert r.result['checksum_headers_sent'] is True
        assert site.faults.log[0]['path'] == '/SHA512SUMS'
        assert site.faults.log[0]['headers']['authorization'] == SECRET


@pytest.mark.parametrize('lines,message', [
    (['%s  other.raw'], "has no sha256 entry for 'byoi.raw'"),
    (['%s  byoi.raw', '%s *./byoi.raw'], "has 2 sha256 entries for 'byoi.raw': it must have exactly one"),
])
def test_checksum_file_without_one_entry_is_refused_before_writing(burn, loopdev, dl_images, lines, message):
    dev = loopdev(size_mib=96)
    sums_dir = os.path.join(dl_images['dir'], 'sums-bad-%d' % len(lines))
    os.makedirs(sums_dir, exist_ok=True)
    write_sums(sums_dir, 'SHA256SUMS', [line % dl_images['sums']['byoi.raw']['sha256'] for line in lines])
    before = write_sectors(dev)
    with ImageServer(sums_dir) as other:
        other.faults.on = True
        r = burn(other.url('byoi.raw'), dict(image_type='raw', device=dev,
                                             checksum='sha256:' + other.url('SHA256SUMS')))
        assert [e['path'] for e in other.faults.log] == ['/SHA256SUMS']  # fetched; the image never asked for
    assert r.failed
    assert r.result['msg'] == 'The checksum file %s %s' % (other.url('SHA256SUMS'), message) + (
        ' (the file name of the image URL): check the URL of the checksum file and the checksum type'
        if 'no sha256' in message else '')
    assert write_sectors(dev) == before


def test_checksum_url_of_something_else_is_refused_before_writing(burn, loopdev, dl_images):
    """A checksum URL that names an image (hostile or a mistake) is read up to 1 MiB, never to its end."""
    dev = loopdev(size_mib=96)
    before = write_sectors(dev)
    with ImageServer(dl_images['dir']) as srv:
        srv.faults.on = True
        r = burn(srv.url('byoi.raw'), dict(image_type='raw', device=dev, checksum='sha256:' + srv.url('byoi.raw.xz')))
        assert [e['path'] for e in srv.faults.log] == ['/byoi.raw.xz']
    assert r.failed
    assert r.result['msg'] == 'The checksum file %s is larger than 1048576 bytes: is it a checksum file?' % (
        srv.url('byoi.raw.xz'))
    assert write_sectors(dev) == before

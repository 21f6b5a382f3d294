# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Request validation of byol_image_burn, and its pure decision helpers."""

from __future__ import annotations

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError, ValidationError
from ansible_collections.baremetal.byol.plugins.module_utils._image import request as rq
from ansible_collections.baremetal.byol.plugins.module_utils._image import record
from ansible_collections.baremetal.byol.plugins.module_utils._image import scratch
from ansible_collections.baremetal.byol.plugins.module_utils._image.request import (
    checksum_from_file, image_file_name, validate_request)
from ansible_collections.baremetal.byol.plugins.module_utils._rules import CHECKSUM_PAIR_MSG

SHA512 = 'a' * 128


def base(**kw):
    params = dict(url='https://images.example.com/x.raw', image_type='raw', mode='disk', device='/dev/sda',
                  dest='/tmp/a', checksum=None, checksum_type=None, http_headers={}, timeout=60, progress_interval=10,
                  scratch_dir=None)
    params.update(kw)
    return params


@pytest.mark.parametrize('checksum,ctype', [(SHA512, None), (None, 'sha512'), ('', 'sha512'), (SHA512, '')])
def test_checksum_pair_rule(checksum, ctype):
    with pytest.raises(ValidationError) as exc:
        rq.validate_request(base(checksum=checksum, checksum_type=ctype))
    assert exc.value.msg == 'Please provide checkSum AND checkSumType or none of them'


def test_checksum_forms():
    assert rq.normalize_checksum(None, None) == (None, None)
    assert rq.normalize_checksum('A' * 64, 'SHA256') == ('a' * 64, 'sha256')
    assert rq.normalize_checksum('sha1:' + 'b' * 40, 'sha1') == ('b' * 40, 'sha1')
    assert rq.normalize_checksum('%s  image.raw\n' % ('c' * 32), 'md5') == ('c' * 32, 'md5')
    with pytest.raises(ValidationError) as exc:
        rq.normalize_checksum('a' * 64, 'sha512')
    assert exc.value.msg == 'checksum has 64 hex digits but a sha512 digest has 128'
    with pytest.raises(ValidationError):
        rq.normalize_checksum('z' * 32, 'md5')
    with pytest.raises(ValidationError):
        rq.normalize_checksum('a' * 32, 'crc32')


def test_headers_valid_and_values_never_in_messages():
    assert rq.validate_headers({'Authorization': 'Basic dXNlcjpwdw=='}) == {'Authorization': 'Basic dXNlcjpwdw=='}
    secret = 'Basic c2VjcmV0\r\nX-Injected: 1'
    with pytest.raises(ValidationError) as exc:
        rq.validate_headers({'Authorization': secret})
    assert 'Authorization' in exc.value.msg
    assert 'c2VjcmV0' not in exc.value.msg and 'Injected' not in exc.value.msg
    with pytest.raises(ValidationError):
        rq.validate_headers({'Bad Name': 'x'})
    with pytest.raises(ValidationError):
        rq.validate_headers({'Host': 'evil'})


@pytest.mark.parametrize('url', ['ftp://x/y', 'images.example.com/x', 'file://relative', 'http://x/a b', ''])
def test_bad_urls(url):
    with pytest.raises(ValidationError):
        rq.validate_request(base(url=url))


def test_url_credentials_redacted():
    assert rq.redact_url('https://user:pw@host/x.raw') == 'https://***@host/x.raw'
    assert rq.redact_url('http://host/x?token=1') == 'http://host/x?token=1'
    with pytest.raises(ValidationError) as exc:
        rq.validate_request(base(url='gopher://user:pw@host/x'))
    assert 'pw' not in exc.value.msg


def test_mode_requirements():
    with pytest.raises(ValidationError):
        rq.validate_request(base(device=None))
    with pytest.raises(ValidationError):
        rq.validate_request(base(device='sda'))
    req = rq.validate_request(base(mode='files', device=None, dest='/tmp/a/'))
    assert req['dest'] == '/tmp/a'
    with pytest.raises(ValidationError):
        rq.validate_request(base(mode='files', dest='/'))
    with pytest.raises(ValidationError):
        rq.validate_request(base(image_type='vmdk'))
    with pytest.raises(ValidationError):
        rq.validate_request(base(progress_interval=60))
    with pytest.raises(ValidationError):
        rq.validate_request(base(timeout=0))


# -- scratch choice ---------------------------------------------------------------------------------

GIB = 1024 ** 3


def test_scratch_memory_when_it_fits():
    assert scratch.choose_scratch(1 * GIB, [('/dev/shm', 12 * GIB)], 20 * GIB) == ('/dev/shm', 'memory')


def test_scratch_dir_when_memory_too_small():
    assert scratch.choose_scratch(30 * GIB, [('/dev/shm', 12 * GIB)], 20 * GIB, '/mnt/scratch', 100 * GIB) == \
        ('/mnt/scratch', 'scratch_dir')


def test_scratch_guide_message_without_scratch_dir():
    with pytest.raises(ByolError) as exc:
        scratch.choose_scratch(30 * GIB, [('/dev/shm', 12 * GIB)], 20 * GIB, image_type='qcow2')
    assert exc.value.msg.startswith('Could not download, qcow2 image is too big to download in memory.')
    assert str(30 * GIB) in exc.value.msg


def test_scratch_dir_too_small():
    with pytest.raises(ByolError) as exc:
        scratch.choose_scratch(30 * GIB, [], 0, '/mnt/s', 10 * GIB, image_type='raw')
    assert exc.value.msg.startswith('Could not download, raw image is too big to download in memory.')


def test_parse_proc():
    mounts = scratch.parse_mounts('tmpfs /dev/shm tmpfs rw 0 0\n/dev/vda / ext4 rw 0 0\n')
    assert mounts == [('tmpfs', '/dev/shm', 'tmpfs'), ('/dev/vda', '/', 'ext4')]


# -- idempotence decision ---------------------------------------------------------------------------

class Remote(object):
    def __init__(self, etag=None, last_modified=None, content_length=None):
        self.etag, self.last_modified, self.content_length = etag, last_modified, content_length


def marker(**kw):
    m = dict(version=record.VERSION, image_type='raw', digests={'sha512': SHA512},
             validators=dict(url='https://images.example.com/x.raw', etag='"abc"', last_modified='Mon', content_length=5))
    m.update(kw)
    return m


def test_marker_by_checksum():
    req = rq.validate_request(base(checksum=SHA512, checksum_type='sha512'))
    assert record.marker_matches(marker(), req)[0] is True
    req = rq.validate_request(base(checksum='b' * 128, checksum_type='sha512'))
    assert record.marker_matches(marker(), req)[0] is False
    req = rq.validate_request(base(checksum='b' * 64, checksum_type='sha256'))
    assert record.marker_matches(marker(), req)[0] is None


def test_marker_by_validators():
    req = rq.validate_request(base())
    assert record.marker_matches(marker(), req, Remote(etag='"abc"'))[0] is True
    assert record.marker_matches(marker(), req, Remote(last_modified='Mon', content_length=5))[0] is True
    assert record.marker_matches(marker(), req, Remote(etag='"new"'))[0] is False
    assert record.marker_matches(marker(), req, Remote())[0] is None
    assert record.marker_matches(marker(), req, None)[0] is None
    other = rq.validate_request(base(url='https://images.example.com/y.raw'))
    assert record.marker_matches(marker(), other, Remote(etag='"abc"'))[0] is False


def test_marker_absent_or_other_type():
    req = rq.validate_request(base())
    assert record.marker_matches(None, req)[0] is False
    assert record.marker_matches(marker(image_type='qcow2'), req)[0] is False
    assert record.marker_matches(marker(version=0), req)[0] is False


# -- checksum files (SHA256SUMS style) --------------------------------------------------------------------------

HEX256 = 'ab' * 32


@pytest.mark.parametrize('checksum,checksum_type', [
    ('sha256:https://images.example.net/v1/SHA256SUMS', None),
    ('SHA256:https://images.example.net/v1/SHA256SUMS', 'sha256'),
    ('https://images.example.net/v1/SHA256SUMS', 'sha256'),
])
def test_checksum_url_forms(checksum, checksum_type):
    req = validate_request(base(url='https://images.example.net/v1/disk.qcow2', image_type='qcow2',
                                checksum=checksum, checksum_type=checksum_type))
    assert req['checksum_url'] == 'https://images.example.net/v1/SHA256SUMS'  # not lower-cased, unlike a digest
    assert req['checksum'] is None and req['checksum_type'] == 'sha256'


@pytest.mark.parametrize('checksum,checksum_type,message', [
    ('sha256:https://a.example/SHA256SUMS', 'sha512', "checksum names a sha256 checksum file but checksum_type is 'sha512'"),
    ('sha256:ftp://a.example/SHA256SUMS', None, CHECKSUM_PAIR_MSG),
    ('sha256:https://u:p@a.example/SHA256SUMS', None, 'must not contain credentials'),
    ('https://a.example/SHA256SUMS', None, CHECKSUM_PAIR_MSG),
])
def test_checksum_url_refused(checksum, checksum_type, message):
    with pytest.raises(ValidationError) as err:
        validate_request(base(url='https://a.example/disk.raw', checksum=checksum, checksum_type=checksum_type))
    assert message in str(err.value.msg)


@pytest.mark.parametrize('url,name', [
    ('https://cloud.example/bookworm/latest/debian-12-generic-amd64.qcow2', 'debian-12-generic-amd64.qcow2'),
    ('https://cdn.example/a/jammy%20server.img?X-Signature=abc#frag', 'jammy server.img'),
    ('file:///srv/images/byoi.raw', 'byoi.raw'),
])
def test_image_file_name(url, name):
    assert image_file_name(url) == name


SUMS = '\n'.join([
    '-----BEGIN PGP SIGNED MESSAGE-----', 'Hash: SHA256', '',
    '# Fedora-Cloud-Base-40.x86_64.qcow2: 123 bytes',
    'SHA256 (Fedora-Cloud-Base-40.x86_64.qcow2) = ' + 'cd' * 32,
    'SHA512 (Fedora-Cloud-Base-40.x86_64.qcow2) = ' + 'ef' * 64,
    HEX256.upper() + ' *jammy-server-cloudimg-amd64.img',
    '12' * 32 + '  ./debian-12-generic-amd64.qcow2',
    '34' * 64 + '  debian-12-generic-amd64.raw',
    '-----BEGIN PGP SIGNATURE-----', 'iQIzBAEBCAAdFiEE'])


@pytest.mark.parametrize('name,checksum_type,digest', [
    ('Fedora-Cloud-Base-40.x86_64.qcow2', 'sha256', 'cd' * 32),
    ('Fedora-Cloud-Base-40.x86_64.qcow2', 'sha512', 'ef' * 64),
    ('jammy-server-cloudimg-amd64.img', 'sha256', HEX256),
    ('debian-12-generic-amd64.qcow2', 'sha256', '12' * 32),
    ('debian-12-generic-amd64.raw', 'sha512', '34' * 64),
])
def test_checksum_from_file(name, checksum_type, digest):
    assert checksum_from_file(SUMS, name, checksum_type, 'U') == digest


@pytest.mark.parametrize('text,name,checksum_type,message', [
    (SUMS, 'other.img', 'sha256', "The checksum file U has no sha256 entry for 'other.img'"),
    # a sha512 line is no sha256 entry (its digest length says so), nor a BSD line of another algorithm
    (SUMS, 'debian-12-generic-amd64.raw', 'sha256', 'has no sha256 entry'),
    (SUMS, 'jammy-server-cloudimg-amd64.img', 'sha512', 'has no sha512 entry'),
    (SUMS + '\n' + '56' * 32 + '  jammy-server-cloudimg-amd64.img', 'jammy-server-cloudimg-amd64.img', 'sha256',
     "has 2 sha256 entries for 'jammy-server-cloudimg-amd64.img': it must have exactly one"),
    # the same digest twice is still two entries
    (SUMS + '\n' + HEX256 + '  jammy-server-cloudimg-amd64.img', 'jammy-server-cloudimg-amd64.img', 'sha256',
     'has 2 sha256 entries'),
    ('SHA256 (x.img) = abcd', 'x.img', 'sha256', 'gives \'x.img\' a 4-digit digest, but a sha256 digest has 64'),
    # a name that only ends like the image's is another file
    (HEX256 + '  old/x.img', 'x.img', 'sha256', 'has no sha256 entry'),
    ('', 'x.img', 'sha256', 'has no sha256 entry'),
])
def test_checksum_file_refused(text, name, checksum_type, message):
    with pytest.raises(ValidationError) as err:
        checksum_from_file(text, name, checksum_type, 'U')
    assert message in str(err.value.msg)

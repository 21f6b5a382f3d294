# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The request rules (_rules.py), one table per rule: value -> None (accepted) or a fragment of the problem.

The same functions serve the payload filter (every problem) and the modules (the first one);
test_rules_both_sides.py feeds hostile values to both sides' entry points.
"""

from __future__ import annotations

import base64
import os

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils import _rules as R
from ansible_collections.baremetal.byol.plugins.module_utils._errors import ValidationError

ED = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHr0n2BQ1cpoc0d8mr6/T5HTrYLbYovE/fhPIqmhEAbp'
RSA_BLOB = ('AAAAB3NzaC1yc2EAAAADAQABAAAAgQC9xPpdqP3sx2H+gcBm65tJEaUbuifQ1uGkgrWtNY0PRKNNPdy+3yoVOtxk6Vjo4YZ0EU/'
            'JhmQfnrK7X7Q5vhqYxmozi0LiTRt0BxgqHJ+4hWTWMIOgr+C2jLx7ZsCReRk+fy5AHr6h0PHQEuXVLXeUy/TDyuY2JPtUZ5jcqvLYgQ==')

# Characters every name refuses: C0/C1 controls, DEL, format (soft hyphen, zero-width, bidi), separators
HOSTILE = ['\x00', '\n', '\r', '\t', '\x1b', '\x7f', '\x85', '\u00ad', '\u200b', '\u200d', '\u202e', '\u2066',
           '\ufeff', '\u2028', '\u2029', '\udcff']
# ... and where a name must be plain, every space
SPACES = [' ', '\u00a0', '\u2007', '\u202f', '\u3000']


def outcome(problems):
    assert isinstance(problems, list)
    return problems[0] if problems else None


def check(problems, expected):
    got = outcome(problems)
    if expected is None:
        assert got is None, got
    else:
        assert got is not None and expected in got, (got, expected)
        assert len(problems) == 1 or expected in ' '.join(problems)


# ---------------------------------------------------------------------------------------- characters

@pytest.mark.parametrize('char', HOSTILE)
def test_bad_characters_refused_everywhere(char):
    assert R.bad_characters('a%sb' % char) == [char]
    assert R.bad_characters('a%sb' % char, plain=True) == [char]


@pytest.mark.parametrize('char', SPACES)
def test_spaces_refused_only_in_plain_names(char):
    assert R.bad_characters('a%sb' % char) == []
    assert R.bad_characters('a%sb' % char, plain=True) == [char]


def test_plain_text_accepted():
    assert R.bad_characters('Zoë-ø_東京.1') == []
    assert R.describe_characters(['\n', '\u202e']) == 'U+000A, U+202E'


# ---------------------------------------------------------------------------------------- host names

@pytest.mark.parametrize('value, expected', [
    ('web1', None), ('web1.example.net', None), ('a', None), ('x' * 63, None), ('.'.join(['a' * 49] * 5), None),
    ('', 'must be a non-empty string'), (None, 'must be a non-empty string'), (3, 'must be a non-empty string'),
    ('host\n', 'contains whitespace, control or format characters (U+000A)'),
    ('host\x00', '(U+0000)'), ('ho\u202est', '(U+202E)'), ('ho\u200bst', '(U+200B)'), ('host\u00a0', '(U+00A0)'),
    ('ho st', '(U+0020)'), ('host\u2028', '(U+2028)'),
    ('a' * 254, 'is 254 characters long; at most 253'),
    ('-web', "bad label '-web'"), ('web-', "bad label 'web-'"), ('under_score', "bad label 'under_score'"),
    ('x' * 64, 'bad label'), ('a..b', "bad label ''"), ('a.b.', "bad label ''"), ('.a', "bad label ''"),
    ('wéb', "bad label 'wéb'"), ('web;reboot', 'bad label'), ('$(id)', 'bad label'),
])
def test_hostname(value, expected):
    check(R.check_hostname(value, 'hostname'), expected)


# ---------------------------------------------------------------------------------------- SSH keys

def key_with_type(ktype, blob_type=None):
    inner = (blob_type or ktype).encode()
    blob = base64.b64encode(len(inner).to_bytes(4, 'big') + inner + b'\x00' * 8).decode()
    return '%s %s' % (ktype, blob)


@pytest.mark.parametrize('value, expected', [
    (ED, None), (ED + ' admin@example.net', None), (ED + ' Zoë laptop 2024', None), ('  ' + ED + '  ', None),
    ('ssh-rsa ' + RSA_BLOB + ' me', None), (key_with_type('sk-ssh-ed25519@openssh.com'), None),
    (None, 'must be a string (an OpenSSH public key line)'),
    (ED + '\n', 'must be exactly one line'), (ED + '\n' + ED, 'must be exactly one line'),
    (ED + ' a\rb', 'must be exactly one line'), (ED + '\x00', 'must be exactly one line'),
    (ED + ' a\u2028b', 'must be exactly one line'),
    ('ssh-ed25519', 'is not an OpenSSH public key'), ('', 'is not an OpenSSH public key'),
    ('ssh-foo AAAA', "unknown key type 'ssh-foo'"), ('command="sh" ' + ED, 'unknown key type'),
    ('ssh-ed448 AAAA', 'unknown key type'),
    ('ssh-ed25519 AAA!', 'not valid base64'), ('ssh-ed25519 AAAAB', 'not valid base64'),
    ('ssh-ed25519 AA==', 'the key data is truncated'),
    ('ssh-rsa ' + ED.split()[1], 'does not hold a ssh-rsa key'),
    (key_with_type('ssh-rsa', 'ssh-dss'), 'does not hold a ssh-rsa key'),
    (ED + ' $(reboot)', 'control or shell characters'), (ED + ' a`id`', 'control or shell characters'),
    (ED + ' a;b', 'control or shell characters'), (ED + ' a|b', 'control or shell characters'),
    (ED + ' a\x1bb', 'control or shell characters'), (ED + ' a\tb', 'control or shell characters'),
    (ED + ' admin\u202egro', 'control or shell characters'), (ED + ' a\u200bb', 'control or shell characters'),
])
def test_ssh_key(value, expected):
    check(R.check_ssh_key(value, 'ssh_keys[0]'), expected)


def test_ssh_keys_normalised_and_deduplicated():
    assert R.ssh_key_lines(ED + '\n\n' + ED + ' other\n') == [ED, ED + ' other']
    assert R.normalize_ssh_keys([' %s  a b ' % ED, ED + ' other', 'ssh-rsa %s' % RSA_BLOB]) == [
        ED + ' a b', 'ssh-rsa ' + RSA_BLOB]


# ---------------------------------------------------------------------------------------- URLs

@pytest.mark.parametrize('value, expected', [
    ('https://images.example.com/x.qcow2', None), ('http://10.0.0.1:8080/a?b=c#d', None), ('HTTPS://h/x', None),
    ('file:///srv/images/x.raw', None), ('https://h/x@y', None), ('https://h/?u=a@b', None),
    ('', 'is required'), (None, 'is required'), (['https://h/x'], 'is required'),
    ('https://h/x y', 'contains whitespace or control characters'),
    ('https://h/x\n', 'contains whitespace or control characters'),
    (' https://h/x', 'contains whitespace or control characters'),
    ('https://h/x\x00', 'contains whitespace or control characters'),
    ('https://h/x\u202e', 'contains whitespace or control characters'),
    ('https://h/x\u00a0', 'contains whitespace or control characters'),
    ('ftp://h/x', 'must start with http://, https:// or file://'), ('h/x', 'must start with http'),
    ('javascript://x', 'must start with http'), ('gopher://user:pw@h/x', 'must start with http'),
    ('file://relative/x', 'must be file:///absolute/path'), ('file://h/x', 'must be file:///absolute/path'),
    ('https://user:pw@h/x', 'must not contain credentials'), ('https://user@h/x', 'must not contain credentials'),
    ('http://:pw@h/x', 'must not contain credentials'), ('https://h@evil.example/x', 'must not contain credentials'),
    ('https:///x', 'has no host name'), ('https://:443/x', 'has no host name'),
])
def test_url(value, expected):
    problems = R.check_url(value, 'url')
    check(problems, expected)
    assert not any('pw' in p for p in problems)


def test_redact_url():
    assert R.redact_url('https://user:pw@host/x.raw') == 'https://***@host/x.raw'
    assert R.redact_url('http://host/x?token=1&a=b@c') == 'http://host/x?token=1&a=b@c'


# ---------------------------------------------------------------------------------------- headers

@pytest.mark.parametrize('value, expected', [
    ({}, None), ({'Authorization': 'Bearer abc'}, None), ({'X-N': 3}, None), ({'X-A': 'a\tb'}, None),
    ({'X-Latin': 'caf\u00e9'}, None), ({'X-Empty': ''}, None),
    ('Authorization: x', 'must be a mapping of header names to values'), ([('a', 'b')], 'must be a mapping'),
    ({'Bad Name': 'x'}, "HTTP header name 'Bad Name' is not valid"), ({'X-A\n': 'x'}, 'is not valid'),
    ({'': 'x'}, 'is not valid'), ({'X:Y': 'x'}, 'is not valid'),
    ({'X-Token': 'a', 'x-token': 'b'}, 'names the header x-token twice'),
    ({'Host': 'evil'}, 'HTTP header Host is set by the module'), ({'content-length': '0'}, 'is set by the module'),
    ({'Transfer-Encoding': 'chunked'}, 'is set by the module'), ({'Range': 'bytes=0-'}, 'is set by the module'),
    ({'Connection': 'close'}, 'is set by the module'),
    ({'X-T': None}, 'must have a string value'), ({'X-T': True}, 'must have a string value'),
    ({'X-T': {'a': 1}}, 'must have a string value'),
    ({'X-T': 'secret\r\nX-Evil: 1'}, 'printable ASCII or Latin-1'), ({'X-T': 'secret\n'}, 'printable ASCII'),
    ({'X-T': 'se\x00cret'}, 'printable ASCII'), ({'X-T': 'se\x7fcret'}, 'printable ASCII'),
    ({'X-T': 'se\x85cret'}, 'printable ASCII'), ({'X-T': 'secret\u202e'}, 'printable ASCII'),
    ({'X-T': 'secr\u20acet'}, 'printable ASCII'),
    ({'X-T': ' secret'}, 'must not start or end with whitespace'), ({'X-T': 'secret '}, 'must not start or end'),
])
def test_headers(value, expected):
    problems = R.check_headers(value, 'http_headers')
    check(problems, expected)
    assert not any('secret' in p or 'Evil' in p for p in problems)


def test_header_problems_all_collected():
    problems = R.check_headers({'Host': 'x', 'X-A': 'b\n', 'Bad Name': 'c'}, 'httpHeaders')
    assert len(problems) == 3


# ---------------------------------------------------------------------------------------- checksums

@pytest.mark.parametrize('value, vtype, expected, result', [
    (None, None, None, (None, None)), ('', '', None, (None, None)),
    ('A' * 64, 'SHA256', None, ('a' * 64, 'sha256')), (' ' + 'b' * 40 + ' ', 'sha1', None, ('b' * 40, 'sha1')),
    ('sha1:' + 'b' * 40, 'sha1', None, ('b' * 40, 'sha1')), ('c' * 32 + '  image.raw\n', 'md5', None, ('c' * 32, 'md5')),
    ('a' * 128, None, R.CHECKSUM_PAIR_MSG, None), (None, 'sha512', R.CHECKSUM_PAIR_MSG, None),
    ('a' * 128, '', R.CHECKSUM_PAIR_MSG, None),
    ('a' * 32, 'crc32', "checksum_type 'crc32' is not supported", None),
    ('z' * 32, 'md5', 'checksum must be a hexadecimal md5 digest', None),
    (12345, 'md5', 'checksum must be a hexadecimal md5 digest', None),
    ('a' * 64, 'sha512', 'checksum has 64 hex digits but a sha512 digest has 128', None),
    ('a' * 31 + '\u0660', 'md5', 'must be a hexadecimal', None),
])
def test_checksum(value, vtype, expected, result):
    pair, problems = R.checksum(value, vtype, 'checksum', 'checksum_type')
    check(problems, expected)
    if result is not None:
        assert pair == result


# ---------------------------------------------------------------------------------------- mount points and trees

@pytest.mark.parametrize('value, expected', [
    ('/', None), ('/var', None), ('/var/lib/données', None), ('/' + 'a' * 255, None),
    ('', 'must be an absolute path or swap'), (None, 'must be an absolute path or swap'),
    ('var', 'must be an absolute path (start with /)'), ('swap', 'must be an absolute path'),
    ('/srv\n', '(U+000A)'), ('/srv\x00x', '(U+0000)'), ('/s rv', '(U+0020)'), ('/srv\u00a0', '(U+00A0)'),
    ('/srv\u202e', '(U+202E)'), ('/srv\x01', '(U+0001)'), ('/srv\t', '(U+0009)'),
    ('/var/../etc', 'must not contain . or .. components'), ('/./var', 'must not contain . or ..'), ('/..', '..'),
    ('/var/', 'is not a clean absolute path (did you mean /var?)'), ('//srv', 'did you mean /srv?'),
    ('/a//b', 'did you mean /a/b?'),
    ('/' + 'a' * 256, 'has a component of 256 bytes; at most 255'), ('/' + 'é' * 128, 'component of 256 bytes'),
    ('/a' * 2048, 'is 4096 bytes long; a path may have at most 4095 (PATH_MAX)'),
])
def test_mount_point(value, expected):
    check(R.check_mount_point(value, 'mount_point'), expected)


def test_mount_point_counts_the_mount_root():
    deep = '/' + '/'.join(['d' * 200] * 19)          # 3819 bytes
    assert R.check_mount_point(deep, 'mp') == []
    assert R.check_mount_point(deep, 'mp', root='/tmp/a') == []
    problems = R.check_mount_point(deep, 'mp', root='/mnt/' + 'r' * 300)
    assert problems and 'under /mnt/' in problems[0] and 'PATH_MAX' in problems[0]


@pytest.mark.parametrize('value, expected', [
    ('/tmp/a', None), ('/mnt', None), ('/mnt/target', None), ('/tmp/a/', None), ('/media/t', None),
    ('/', 'resolves to /, a directory of the rescue system'), ('/.', 'resolves to /,'), ('//', 'resolves to /,'),
    ('///', 'resolves to /,'), ('/tmp/..', 'resolves to /,'), ('/tmp/a/../..', 'resolves to /,'),
    ('/etc', 'resolves to /etc,'), ('/usr/', 'resolves to /usr,'), ('/var/lib', 'resolves to /var/lib,'),
    ('/tmp', 'resolves to /tmp,'), ('/root', 'resolves to /root,'), ('/boot', 'resolves to /boot,'),
    ('/lib64', 'resolves to /lib64,'), ('/run', 'resolves to /run,'),
    ('/proc/1/root', 'resolves to /proc/1/root,'), ('/sys/x', 'resolves to /sys/x,'), ('/dev/shm/x', 'resolves to'),
    ('tmp/a', 'must be an absolute directory path'), ('', 'must be an absolute directory path'),
    (None, 'must be an absolute directory path'),
    ('/tmp/a\n', 'contains control or format characters (U+000A)'), ('/tmp/\u202ea', '(U+202E)'),
    ('/tmp/' + 'x/' * 2100, 'bytes long; a path may have at most 4095'),
])
def test_tree(value, expected):
    resolved, problems = R.check_tree(value, 'dest', realpath=os.path.normpath)
    check(problems, expected)
    if expected is None:
        assert resolved == os.path.normpath(value)


def test_tree_that_cannot_be_resolved():
    def denied(path):
        raise PermissionError(13, 'Permission denied', path)
    assert R.check_tree('/proc/1/root', 'dest', realpath=denied)[1][0].startswith("dest '/proc/1/root' resolves to")
    resolved, problems = R.check_tree('/tmp/x/link', 'dest', realpath=denied)
    assert resolved == '/tmp/x/link' and problems == ["dest '/tmp/x/link' cannot be resolved: Permission denied"]


def test_tree_resolves_symbolic_links(tmp_path):
    (tmp_path / 'a').mkdir()
    (tmp_path / 'to-root').symlink_to('/')
    (tmp_path / 'to-etc').symlink_to('/etc')
    (tmp_path / 'to-a').symlink_to(str(tmp_path / 'a'))
    assert R.check_tree(str(tmp_path / 'to-a'), 'root') == (str(tmp_path / 'a'), [])
    for link, target in (('to-root', '/'), ('to-etc', '/etc')):
        resolved, problems = R.check_tree(str(tmp_path / link), 'root')
        assert resolved == target and 'a directory of the rescue system' in problems[0]
        resolved, problems = R.check_tree(str(tmp_path / link) + '/.', 'root')
        assert resolved == target and problems


# ---------------------------------------------------------------------------------------- LVM, ZFS, labels

@pytest.mark.parametrize('value, expected', [
    ('root', None), ('var_log', None), ('a+b.c-d', None), ('_x', None), ('.x', None), ('x' * 127, None),
    ('snap', None), ('my_snapshot', None), ('mlog', None),
    ('', 'must be a non-empty string'), (None, 'must be a non-empty string'),
    ('root\n', '(U+000A)'), ('ro\x00ot', '(U+0000)'), ('ro ot', '(U+0020)'), ('root\u200b', '(U+200B)'),
    ('-root', 'is not a valid LVM name'), ('ro/ot', 'is not a valid LVM name'), ('rööt', 'is not a valid LVM name'),
    ('x' * 128, 'is not a valid LVM name'), ('ro:ot', 'not a valid LVM name'),
    ('.', 'is reserved by LVM'), ('..', 'is reserved by LVM'), ('snapshot', 'reserved by LVM'),
    ('snapshot1', 'reserved by LVM'), ('pvmove', 'reserved by LVM'), ('pvmove0', 'reserved by LVM'),
] + [('root%s' % part, 'reserved by LVM') for part in R.LV_RESERVED_PARTS] + [
    ('a_mlog_b', 'reserved by LVM'), ('_tmeta', 'reserved by LVM'),
])
def test_lv_name(value, expected):
    check(R.check_lv_name(value, 'lv_name'), expected)


def test_lv_reserved_parts_cover_lvm8():
    # lvm(8) "VALID NAMES"
    for part in ('_cdata', '_cmeta', '_corig', '_iorig', '_mimage', '_mlog', '_pmspare', '_rimage', '_rmeta',
                 '_tdata', '_tmeta', '_vdata', '_vorigin', '_wcorig'):
        assert part in R.LV_RESERVED_PARTS


@pytest.mark.parametrize('value, expected', [
    ('vg', None), ('vg_r1', None), ('data.vg-1', None),
    ('.', 'is not a valid LVM name'), ('..', 'is not a valid LVM name'), ('-vg', 'is not a valid LVM name'),
    ('vg\n', '(U+000A)'), ('', 'must be a non-empty string'),
])
def test_vg_name(value, expected):
    check(R.check_vg_name(value, 'vg_name'), expected)


@pytest.mark.parametrize('value, expected', [
    ('tank', None), ('data_1.a:b-c', None), ('Tank', None), ('logs', None), ('cx', None),
    ('', 'must be a non-empty string'), ('tank\n', '(U+000A)'), ('ta nk', '(U+0020)'), ('tank\u202e', '(U+202E)'),
    ('1pool', 'is not a valid ZFS pool name'), ('_pool', 'is not a valid ZFS pool name'),
    ('ta/nk', 'not a valid ZFS pool name'), ('t' * 256, 'not a valid ZFS pool name'),
    ('mirror', 'is reserved by ZFS'), ('mirror1', 'is reserved by ZFS'), ('raidz2', 'reserved by ZFS'),
    ('draid', 'reserved by ZFS'), ('spare', 'reserved by ZFS'), ('log', 'reserved by ZFS'), ('c0', 'reserved by ZFS'),
    ('c1t0d0', 'reserved by ZFS'),
])
def test_zpool_name(value, expected):
    check(R.check_zpool_name(value, 'zpool_name'), expected)


@pytest.mark.parametrize('value, limit, expected', [
    ('root', 16, None), ('var-log', 12, None), ('EFI_SYSPART', 11, None), ('é' * 8, 16, None),
    ('x' * 17, 16, 'must be at most 16 bytes'), ('é' * 9, 16, 'at most 16 bytes'), ('a/b', 16, 'without a slash'),
    ('', 16, 'must be a non-empty string'), ('ro\not', 16, '(U+000A)'), ('ro ot', 16, '(U+0020)'),
])
def test_label(value, limit, expected):
    check(R.check_label(value, limit, 'label'), expected)


# ---------------------------------------------------------------------------------------- sizes

@pytest.mark.parametrize('value, expected', [
    (0, None), (1024, None), ('512', None), (' 64 ', None),
    (-1, 'must be a whole number of MiB'), ('1G', 'must be a whole number'), (1.5, 'must be a whole number'),
    (True, 'must be a whole number'), (None, 'must be a whole number'), ('1' * 30, 'must be a whole number'),
])
def test_size_mib(value, expected):
    check(R.check_size_mib(value, 'size'), expected)


@pytest.mark.parametrize('value, allow_zero, expected', [
    (64, False, None), (1, False, None), (1024, False, None), ('64', False, None), (0, True, None),
    (0, False, 'must be a whole number of MiB from 1 to 1024'), (-64, False, 'from 1 to 1024'),
    (-1, True, 'from 0 to 1024'), (1025, False, 'from 1 to 1024'), (10 ** 9, True, 'from 0 to 1024'),
    (True, False, 'must be a whole number'), (2.5, False, 'must be a whole number'), ('x', False, 'whole number'),
])
def test_configdrive_size(value, allow_zero, expected):
    check(R.check_configdrive_size(value, 'size', allow_zero=allow_zero), expected)


# ---------------------------------------------------------------------------------------- meta-data, instance ids

@pytest.mark.parametrize('value, expected', [
    ({}, None), ({'role': 'web', 'n': 3, 'b': True, 'f': 1.5}, None), ({'a b:c.d-e_f': 'Zoë ∞ café'}, None),
    ({'k' * 255: 'v' * 255}, None), ({'k': 'a\u00a0b'}, None),
    ('role=web', 'must be a mapping of key/value strings'), (['k'], 'must be a mapping'),
    (dict(('k%d' % i, 'v') for i in range(129)), 'has 129 items; OpenStack allows at most 128'),
    ({'': 'v'}, "key '' is invalid"), ({'k' * 256: 'v'}, 'is invalid'), ({'k\n': 'v'}, 'is invalid'),
    ({'k\u202e': 'v'}, 'is invalid'), ({'k/../x': 'v'}, 'is invalid'), ({3: 'v'}, 'is invalid'),
    ({'k': ['v']}, 'must be a string (or a number/boolean), not list'), ({'k': None}, 'not NoneType'),
    ({'k': {'a': 1}}, 'not dict'),
    ({'k': 'v' * 256}, 'is 256 characters long; OpenStack allows at most 255'),
    ({'k': 'a\nb'}, 'contains control, format or line-separator characters (U+000A)'),
    ({'k': 'ab\n'}, '(U+000A)'), ({'k': 'a\x00b'}, '(U+0000)'), ({'k': 'a\tb'}, '(U+0009)'),
    ({'k': 'a\u202eb'}, '(U+202E)'), ({'k': 'a\u2028b'}, '(U+2028)'), ({'k': 'a\u200bb'}, '(U+200B)'),
    ({'k': 'a\x85b'}, '(U+0085)'),
])
def test_meta_data(value, expected):
    check(R.check_meta_data(value, 'meta_data'), expected)


def test_meta_data_problems_all_collected():
    assert len(R.check_meta_data({'': 1, 'a': None, 'b': 'x\n'}, 'configDriveMetadata')) == 3


@pytest.mark.parametrize('value, expected', [
    ('5d6f4a86-3c2e-4f5b-9a8c-0e4b5a0f1c22', None), ('i-0123', None), ('a' * 255, None), ('host.example:1_x', None),
    ('', 'is invalid'), (None, 'is invalid'), ('-x', 'is invalid'), ('.', 'is invalid'), ('..', 'is invalid'),
    ('a' * 256, 'is invalid'), ('abc\n', 'is invalid'), ('a/b', 'is invalid'), ('a\x00', 'is invalid'),
    ('a b', 'is invalid'), ('ab\u202e', 'is invalid'),
])
def test_instance_id(value, expected):
    check(R.check_instance_id(value, 'instance_id'), expected)


def test_enforce_raises_the_first():
    R.enforce([])
    with pytest.raises(ValidationError) as exc:
        R.enforce(['first', 'second'])
    assert exc.value.msg == 'first' and exc.value.extra['errors'] == ['first', 'second']

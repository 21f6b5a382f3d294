# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Format inspection on bytes made by the real tools (qemu-img, sgdisk, sfdisk, mkfs) in tmp files."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils import _blockdev as bd
from ansible_collections.baremetal.byol.plugins.module_utils._image import format as fmt

MIB = 1024 * 1024


def need(*tools):
    for tool in tools:
        if not shutil.which(tool) and not os.path.exists('/usr/sbin/' + tool) and not os.path.exists('/sbin/' + tool):
            pytest.skip('%s not installed' % tool)


def run(*args, **kw):
    env = dict(os.environ, PATH=os.environ.get('PATH', '') + ':/usr/sbin:/sbin')
    return subprocess.run([str(a) for a in args], check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=env, **kw)


def head_of(path, n=fmt.HEAD_SIZE):
    with open(path, 'rb') as f:
        return f.read(n)


def sparse(path, size):
    with open(path, 'wb') as f:
        f.truncate(size)
    return str(path)


# -- qcow2 ----------------------------------------------------------------------------------------

def test_qcow2_plain_header(tmp_path):
    need('qemu-img')
    img = tmp_path / 'a.qcow2'
    run('qemu-img', 'create', '-q', '-f', 'qcow2', img, '123M')
    head = head_of(img)
    assert fmt.detect_format(head) == 'qcow2'
    info = fmt.parse_qcow2_header(head)
    assert info['version'] == 3
    assert info['virtual_size'] == 123 * MIB
    assert info['cluster_size'] == 65536
    assert not info['has_backing_file'] and info['backing_file'] == ''
    assert not info['external_data_file'] and not info['encrypted']
    assert fmt.qcow2_problems(info) == []


def test_qcow2_v2_header(tmp_path):
    need('qemu-img')
    img = tmp_path / 'v2.qcow2'
    run('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', img, '10M')
    info = fmt.parse_qcow2_header(head_of(img))
    assert info['version'] == 2 and info['virtual_size'] == 10 * MIB
    assert fmt.qcow2_problems(info) == []


def test_qcow2_backing_file_refused(tmp_path):
    need('qemu-img')
    base = tmp_path / 'base.raw'
    sparse(base, 4 * MIB)
    img = tmp_path / 'overlay.qcow2'
    run('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', base, '-F', 'raw', img)
    info = fmt.parse_qcow2_header(head_of(img))
    assert info['has_backing_file']
    assert info['backing_file'] == str(base)
    assert info['backing_format'] == 'raw'
    problems = fmt.qcow2_problems(info)
    assert len(problems) == 1 and 'backing file' in problems[0] and str(base) in problems[0]
    # the qemu-img info double check says the same
    data = json.loads(run('qemu-img', 'info', '--output=json', img).stdout)
    assert 'backing file' in fmt.qemu_img_info_problems(data)[0]


def test_qcow2_external_data_file_refused(tmp_path):
    need('qemu-img')
    img = tmp_path / 'df.qcow2'
    data = tmp_path / 'df.data'
    run('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'data_file=%s,data_file_raw=on' % data, img, '8M')
    info = fmt.parse_qcow2_header(head_of(img))
    assert info['external_data_file']
    assert info['incompatible_features'] & fmt.QCOW2_INCOMPAT_DATA_FILE
    assert info['data_file_name'] == str(data)
    problems = fmt.qcow2_problems(info)
    assert any('external data file' in p and str(data) in p for p in problems)
    qinfo = json.loads(run('qemu-img', 'info', '--output=json', img).stdout)
    assert any('external data file' in p for p in fmt.qemu_img_info_problems(qinfo))


QCOW2_CRYPT_METHOD_OFFSET = 32  # qcow2 header: uint32 crypt_method (0 none, 1 AES, 2 LUKS), big endian


def qcow2_with_crypt_method(img, method):
    """A plain qcow2 made by qemu-img whose header says ``crypt_method`` = ``method`` (1 = AES per the qcow2
    spec); qemu-img itself must then call the image encrypted."""
    run('qemu-img', 'create', '-q', '-f', 'qcow2', img, '8M')
    with open(img, 'r+b') as f:
        f.seek(QCOW2_CRYPT_METHOD_OFFSET)
        assert struct.unpack('>I', f.read(4))[0] == 0
        f.seek(QCOW2_CRYPT_METHOD_OFFSET)
        f.write(struct.pack('>I', method))
    assert json.loads(run('qemu-img', 'info', '--output=json', img).stdout).get('encrypted') is True
    return img


def encrypted_qcow2(img):
    """(path, crypt method) of an encrypted qcow2: LUKS made by qemu-img; where its LUKS key derivation cannot run
    (the pbkdf benchmark needs getrusage(RUSAGE_THREAD): "Unable to get accurate CPU usage" in some sandboxes), an
    AES-encrypted header (see :func:`qcow2_with_crypt_method`)."""
    try:
        run('qemu-img', 'create', '-q', '-f', 'qcow2', '--object', 'secret,id=sec0,data=123456',
            '-o', 'encrypt.format=luks,encrypt.key-secret=sec0', img, '8M')
    except subprocess.CalledProcessError as exc:
        if b'Unable to get accurate CPU usage' not in (exc.stderr or b''):
            raise
        if os.path.exists(str(img)):
            os.unlink(str(img))
        return qcow2_with_crypt_method(img, 1), 1
    return img, 2


def test_qcow2_encrypted_refused(tmp_path):
    need('qemu-img')
    img, method = encrypted_qcow2(tmp_path / 'enc.qcow2')
    info = fmt.parse_qcow2_header(head_of(img))
    assert info['encrypted'] and info['crypt_method'] == method
    assert any('encrypted (crypt method %d)' % method in p for p in fmt.qcow2_problems(info))
    qinfo = json.loads(run('qemu-img', 'info', '--output=json', img).stdout)
    assert any('encrypted' in p for p in fmt.qemu_img_info_problems(qinfo))


def test_qcow2_aes_header_refused(tmp_path):
    """The fallback of :func:`encrypted_qcow2` runs everywhere: a header with crypt method 1 (AES) is refused."""
    need('qemu-img')
    img = qcow2_with_crypt_method(tmp_path / 'aes.qcow2', 1)
    info = fmt.parse_qcow2_header(head_of(img))
    assert info['encrypted'] and info['crypt_method'] == 1 and not info['crypto_extension']
    assert fmt.qcow2_problems(info) == [
        'the qcow2 image is encrypted (crypt method 1); provide an unencrypted image']


def test_qcow2_truncated_and_foreign():
    with pytest.raises(fmt.FormatError):
        fmt.parse_qcow2_header(b'QFI\xfb' + b'\x00' * 10)
    with pytest.raises(fmt.FormatError):
        fmt.parse_qcow2_header(b'\x00' * 512)
    # version 1 is "qcow", not qcow2
    assert fmt.detect_format(b'QFI\xfb' + struct.pack('>I', 1) + b'\x00' * 64) == 'qcow'


def test_unknown_incompatible_bits():
    head = bytearray(fmt.HEAD_SIZE // 16)
    head[0:4] = fmt.QCOW2_MAGIC
    struct.pack_into('>IQIIQ', head, 4, 3, 0, 0, 16, 1 << 30)
    struct.pack_into('>QQQII', head, 72, 1 << 40, 0, 0, 4, 104)
    info = fmt.parse_qcow2_header(bytes(head))
    assert info['unknown_incompatible'] == 1 << 40
    assert any('unknown incompatible' in p for p in fmt.qcow2_problems(info))


# -- declared format ------------------------------------------------------------------------------

def test_declared_format_messages(tmp_path):
    need('qemu-img')
    img = tmp_path / 'x.qcow2'
    run('qemu-img', 'create', '-q', '-f', 'qcow2', img, '1M')
    with pytest.raises(fmt.FormatError) as exc:
        fmt.check_declared_format(head_of(img), 'raw')
    assert exc.value.msg == 'image provided format is qcow2 which does not match expected raw format'
    with pytest.raises(fmt.FormatError) as exc:
        fmt.check_declared_format(b'\x00' * 4096, 'qcow2')
    assert exc.value.msg == 'image provided format is raw which does not match expected qcow2 format'


@pytest.mark.parametrize('data,name', [
    (b'\xfd7zXZ\x00\x00', 'xz'), (b'\x1f\x8b\x08\x00', 'gz'), (b'\x28\xb5\x2f\xfd\x04', 'zst'),
    (b'BZh91AY', 'bz2'), (b'QFI\xfb\x00\x00\x00\x03', None), (b'\x00' * 8, None)])
def test_detect_compression(data, name):
    assert fmt.detect_compression(data) == name


def test_detect_compression_real_tools(tmp_path):
    need('xz', 'gzip', 'zstd')
    src = tmp_path / 'data'
    src.write_bytes(b'hello' * 1000)
    for tool, name, suffix in (('xz', 'xz', '.xz'), ('gzip', 'gz', '.gz'), ('zstd', 'zst', '.zst')):
        run(tool, '-k', '-f', '-q', src) if tool == 'zstd' else run(tool, '-k', '-f', src)
        assert fmt.detect_compression(head_of(str(src) + suffix)) == name


# -- partition tables -----------------------------------------------------------------------------

def test_gpt_from_sgdisk(tmp_path):
    need('sgdisk')
    disk = sparse(tmp_path / 'gpt.raw', 64 * MIB)
    run('sgdisk', '-n', '1:2048:+8M', '-t', '1:EF00', '-c', '1:esp', '-n', '2:0:0', '-t', '2:8300', disk)
    head = head_of(disk)
    kind, info = fmt.partition_table(head)
    assert kind == 'gpt'
    assert info['sector_size'] == 512
    assert [p['number'] for p in info['partitions']] == [1, 2]
    assert info['partitions'][0]['name'] == 'esp'
    assert info['partitions'][0]['type_guid'] == 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B'
    assert info['backup_lba'] == 64 * MIB // 512 - 1
    assert fmt.min_raw_size(head) == 64 * MIB
    assert fmt.raw_table_or_fail(head) == 'gpt'


def test_mbr_from_sfdisk(tmp_path):
    need('sfdisk')
    disk = sparse(tmp_path / 'mbr.raw', 32 * MIB)
    run('sfdisk', '--quiet', disk, input=b'label: dos\nstart=2048, size=20480, type=83, bootable\n')
    head = head_of(disk)
    kind, entries = fmt.partition_table(head)
    assert kind == 'dos'
    assert entries == [dict(number=1, bootable=True, type=0x83, start=2048, sectors=20480)]
    assert fmt.min_raw_size(head) == (2048 + 20480) * 512


def test_no_partition_table_describes_ext4(tmp_path):
    need('mkfs.ext4')
    fs = sparse(tmp_path / 'fs.raw', 16 * MIB)
    run('mkfs.ext4', '-q', '-F', '-L', 'myroot', '-U', '11111111-2222-3333-4444-555555555555', fs)
    head = head_of(fs)
    assert fmt.partition_table(head) == (None, None)
    with pytest.raises(fmt.FormatError) as exc:
        fmt.raw_table_or_fail(head, 16 * MIB)
    assert exc.value.msg == ("image provided format is not of type raw because no partition table was found. "
                             "It seems to contain: ext4 filesystem (16777216 bytes)")


def test_describe_xfs_and_swap(tmp_path):
    need('mkfs.xfs', 'mkswap')
    fs = sparse(tmp_path / 'xfs.raw', 320 * MIB)
    run('mkfs.xfs', '-q', '-f', '-L', 'data', fs)
    assert fmt.describe_content(head_of(fs)) == 'xfs filesystem'
    sw = sparse(tmp_path / 'swap.raw', 8 * MIB)
    run('mkswap', sw)
    assert fmt.describe_content(head_of(sw)).startswith('Linux swap space')


def test_describe_misc():
    assert fmt.describe_content(b'') == 'nothing: the image is empty'
    assert fmt.describe_content(b'\x00' * 4096) == 'only zero bytes in its first 4096 bytes'
    assert fmt.describe_content(b'<html>Not found</html>\n') == 'HTML text'


def test_describe_never_quotes_the_content():
    """A file:// URL of /etc/shadow (or an internal http service) must not end up in the message."""
    secret = b'root:$6$saltsalt$Zm9vYmFyYmF6cXV4aGFzaHZhbHVl:19000:0:99999:7:::\n'
    msg = fmt.describe_content(secret * 3, len(secret) * 3)
    assert msg == 'text (%d bytes)' % (len(secret) * 3)
    assert b'root' not in msg.encode() and b'$6$' not in msg.encode()
    assert fmt.describe_content(b'\x1f\x8b\x08') == 'gz compressed data'


def test_fat_boot_sector_is_not_a_table(tmp_path):
    need('mkfs.vfat')
    fs = sparse(tmp_path / 'fat.raw', 16 * MIB)
    run('mkfs.vfat', fs)
    head = head_of(fs)
    assert fmt.partition_table(head) == (None, None)
    assert 'FAT filesystem' in fmt.describe_content(head)


# -- BYOL -------------------------------------------------------------------------------------------

def test_sfdisk_json_single_partition(tmp_path):
    need('sgdisk', 'sfdisk')
    disk = sparse(tmp_path / 'one.raw', 32 * MIB)
    run('sgdisk', '-n', '1:2048:0', disk)
    table = bd.table_summary(bd.parse_sfdisk(run('sfdisk', '--json', disk).stdout.decode()))
    assert table['label'] == 'gpt'
    offset, size = fmt.single_partition(table)
    assert offset == 2048 * 512
    assert size == table['partitions'][0]['size'] * 512


def test_sfdisk_json_two_partitions_refused(tmp_path):
    need('sgdisk', 'sfdisk')
    disk = sparse(tmp_path / 'two.raw', 32 * MIB)
    run('sgdisk', '-n', '1:2048:+8M', '-n', '2:0:0', disk)
    table = bd.table_summary(bd.parse_sfdisk(run('sfdisk', '--json', disk).stdout.decode()))
    with pytest.raises(fmt.FormatError) as exc:
        fmt.single_partition(table)
    assert exc.value.msg.startswith('a BYOL image must contain exactly one partition, this one has 2')


def test_no_partition_refused():
    with pytest.raises(fmt.FormatError) as exc:
        fmt.single_partition(bd.table_summary(bd.parse_sfdisk('{}')))
    assert exc.value.msg == 'a BYOL image must contain exactly one partition, this one has 0'


def test_byol_filesystems():
    assert fmt.check_byol_filesystem('ext4') == 'ext4'
    assert fmt.check_byol_filesystem('xfs') == 'xfs'
    with pytest.raises(fmt.FormatError) as exc:
        fmt.check_byol_filesystem('btrfs')
    assert exc.value.msg == 'the partition of a BYOL image must be formatted ext4 or XFS, this one is btrfs'
    with pytest.raises(fmt.FormatError):
        fmt.check_byol_filesystem(None)
    assert bd.parse_export('DEVNAME=/dev/loop1\nTYPE=ext4\nUUID=x\n')['TYPE'] == 'ext4'


# -- moving the backup GPT (like sgdisk -e) ----------------------------------------------------------

def apply_writes(path, writes):
    with open(path, 'r+b') as f:
        for offset, data in writes:
            f.seek(offset)
            f.write(data)


@pytest.mark.parametrize('grow_mib', [1, 37, 1024])
def test_gpt_relocate_matches_sgdisk(tmp_path, grow_mib):
    need('sgdisk')
    image = sparse(tmp_path / 'img.raw', 64 * MIB)
    run('sgdisk', '-U', 'AAAAAAAA-1111-2222-3333-444444444444', '-n', '1:2048:+8M', '-t', '1:EF00', '-c', '1:esp',
        '-n', '2:0:0', '-u', '1:11111111-2222-3333-4444-555555555555', '-u', '2:11111111-2222-3333-4444-666666666666',
        image)
    mine, theirs = str(tmp_path / 'mine.raw'), str(tmp_path / 'theirs.raw')
    for p in (mine, theirs):
        shutil.copyfile(image, p)
        with open(p, 'r+b') as f:
            f.truncate((64 + grow_mib) * MIB)
    run('sgdisk', '-e', theirs)
    writes = fmt.gpt_relocate_backup(head_of(mine), (64 + grow_mib) * MIB)
    apply_writes(mine, writes)
    size = (64 + grow_mib) * MIB
    # primary header+entries, backup entries+header: byte-identical to sgdisk's result
    assert read_at(mine, 512, 33 * 512) == read_at(theirs, 512, 33 * 512)
    # protective MBR: same sectors count (the CHS end address is not used by anyone)
    assert read_at(mine, 446 + 8, 8) == read_at(theirs, 446 + 8, 8)
    assert read_at(mine, size - 33 * 512, 33 * 512) == read_at(theirs, size - 33 * 512, 33 * 512)
    out = run('sgdisk', '-v', mine).stdout.decode()
    assert 'No problems found' in out
    # idempotent
    assert fmt.gpt_relocate_backup(head_of(mine), size) == []


def read_at(path, offset, length):
    with open(path, 'rb') as f:
        f.seek(offset)
        return f.read(length)


def test_gpt_relocate_refuses_smaller_disk(tmp_path):
    need('sgdisk')
    image = sparse(tmp_path / 'img.raw', 64 * MIB)
    run('sgdisk', '-n', '1:2048:0', image)
    with pytest.raises(fmt.FormatError):
        fmt.gpt_relocate_backup(head_of(image), 32 * MIB)

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The streaming qcow2 planner gives exactly what qemu-img convert gives, or refuses."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils._image import format as fmt
from ansible_collections.baremetal.byol.plugins.module_utils._image import qcow2stream
from ansible_collections.baremetal.byol.plugins.module_utils._image.qcow2stream import Incomplete, Qcow2StreamPlan, Unsupported

MIB = 1024 * 1024
PIECE = 4 * MIB

pytestmark = pytest.mark.skipif(not shutil.which('qemu-img'), reason='qemu-img not installed')


def make_raw(path, size):
    with open(path, 'wb') as f:
        f.truncate(size)
        for off in range(0, size, 5 * MIB + 12288):
            f.seek(off)
            f.write(os.urandom(min(700 * 1024, size - off)))
        f.seek(size - 4096)
        f.write(b'\xff' * 4096)
    return path


def stream(qcow, piece=PIECE):
    with open(qcow, 'rb') as f:
        head = f.read(fmt.HEAD_SIZE)
    info = fmt.parse_qcow2_header(head)
    plan = Qcow2StreamPlan(info, head)
    disk = bytearray(os.urandom(info['virtual_size']))  # stale content everywhere
    offset = 0
    with open(qcow, 'rb') as f:
        while True:
            data = f.read(piece)
            if not data:
                break
            for guest, start, length in plan.feed(offset, data):
                disk[guest:guest + length] = data[start:start + length]
            for guest, cluster in plan.inflated():
                disk[guest:guest + len(cluster)] = cluster
            offset += len(data)
    for guest, cluster in plan.finish_inflated():
        disk[guest:guest + len(cluster)] = cluster
    for lo, length in plan.finish():
        disk[lo:lo + length] = bytes(length)
    return bytes(disk)


@pytest.mark.parametrize('options', [
    [], ['-o', 'cluster_size=4096'], ['-o', 'cluster_size=2M'], ['-o', 'compat=0.10'],
    ['-o', 'preallocation=metadata'], ['-o', 'cluster_size=512'],
    # compressed clusters (deflate), as cloud images are published: streamed and inflated
    ['-c'], ['-c', '-o', 'cluster_size=4096'], ['-c', '-o', 'cluster_size=2M'], ['-c', '-o', 'compat=0.10'],
    ['-c', '-o', 'cluster_size=512']])
@pytest.mark.parametrize('piece', [PIECE, 3 * 65536])
def test_stream_equals_qemu_img(tmp_path, options, piece):
    if piece != PIECE and 'cluster_size=2M' in options:
        pytest.skip('pieces are multiples of the cluster size')
    raw = make_raw(str(tmp_path / 'src.raw'), 40 * MIB + 8192)
    qcow = str(tmp_path / 'img.qcow2')
    subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2'] + options + [raw, qcow], check=True)
    with open(raw, 'rb') as f:
        assert stream(qcow, piece) == f.read()


def test_written_by_qemu_io_out_of_order(tmp_path):
    if not shutil.which('qemu-io'):
        pytest.skip('qemu-io missing')
    qcow = str(tmp_path / 'io.qcow2')
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', qcow, '64M'], check=True)
    for cmd in ('write -P 0x11 48M 1M', 'write -P 0x22 0 64k', 'write -z 1M 1M', 'write -P 0x33 20M 3M'):
        subprocess.run(['qemu-io', '-f', 'qcow2', '-c', cmd, qcow], check=True, stdout=subprocess.DEVNULL)
    ref = str(tmp_path / 'ref.raw')
    subprocess.run(['qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', qcow, ref], check=True)
    try:
        got = stream(qcow)
    except Unsupported:
        return  # refusing is correct too: the module then converts with qemu-img
    with open(ref, 'rb') as f:
        assert got == f.read()


def test_compressed_image_is_streamed_not_refused(tmp_path):
    """On main's planner a compressed cluster stopped the stream (and the module downloaded the image again into
    scratch space): now its clusters are inflated on the way, and the result is qemu-img's."""
    raw = make_raw(str(tmp_path / 'src.raw'), 8 * MIB)
    qcow = str(tmp_path / 'c.qcow2')
    subprocess.run(['qemu-img', 'convert', '-c', '-f', 'raw', '-O', 'qcow2', raw, qcow], check=True)
    assert os.path.getsize(qcow) < os.path.getsize(raw)
    with open(raw, 'rb') as f:
        assert stream(qcow) == f.read()


def test_truncated_download_refused(tmp_path):
    raw = make_raw(str(tmp_path / 'src.raw'), 16 * MIB)
    qcow = str(tmp_path / 't.qcow2')
    subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2', raw, qcow], check=True)
    with open(qcow, 'r+b') as f:
        f.truncate(os.path.getsize(qcow) - 256 * 1024)
    # incomplete, not merely unsupported: the module fails (and wipes) instead of converting it
    with pytest.raises(Incomplete, match='before 4 of its data clusters'):
        stream(qcow)


@pytest.mark.parametrize('keep', [0.5, 0.001])
def test_cut_in_half_or_in_its_tables_is_incomplete(tmp_path, keep):
    raw = make_raw(str(tmp_path / 'src.raw'), 16 * MIB)
    qcow = str(tmp_path / 't.qcow2')
    subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2', raw, qcow], check=True)
    with open(qcow, 'r+b') as f:
        f.truncate(max(fmt.HEAD_SIZE if keep > 0.01 else 200000, int(os.path.getsize(qcow) * keep)))
    with pytest.raises(Incomplete, match='the file ends'):
        stream(qcow)


def test_zero_ranges_cover_unallocated(tmp_path):
    qcow = str(tmp_path / 'empty.qcow2')
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', qcow, '10M'], check=True)
    with open(qcow, 'rb') as f:
        head = f.read(fmt.HEAD_SIZE)
    plan = Qcow2StreamPlan(fmt.parse_qcow2_header(head), head)
    data = open(qcow, 'rb').read()
    assert plan.feed(0, data) == []
    assert plan.finish() == [(0, 10 * MIB)]


# -- what the stream cannot take: crafted with qemu-img (and a byte-level edit), each refused exactly -------------

def layout(qcow):
    """(cluster_size, l1_size, l1_offset) from the header."""
    with open(qcow, 'rb') as f:
        head = f.read(48)
    cluster_bits = struct.unpack('>I', head[20:24])[0]
    l1_size, l1_offset = struct.unpack('>IQ', head[36:48])
    return 1 << cluster_bits, l1_size, l1_offset


def u64(qcow, offset):
    with open(qcow, 'rb') as f:
        f.seek(offset)
        return struct.unpack('>Q', f.read(8))[0]


def poke(qcow, offset, value):
    with open(qcow, 'r+b') as f:
        f.seek(offset)
        f.write(struct.pack('>Q', value))


def first_l2(qcow):
    _cs, _n, l1_offset = layout(qcow)
    return u64(qcow, l1_offset) & 0x00fffffffffffe00


def compressed_image(tmp_path, size=8 * MIB, options=()):
    """A qcow2 of compressible data: every cluster is stored compressed."""
    raw = str(tmp_path / 'src.raw')
    with open(raw, 'wb') as f:
        f.write(b''.join(b'line %08d of a compressible image\n' % i for i in range(size // 36)).ljust(size, b'.'))
    qcow = str(tmp_path / 'c.qcow2')
    subprocess.run(['qemu-img', 'convert', '-c', '-f', 'raw', '-O', 'qcow2'] + list(options) + [raw, qcow], check=True)
    l2 = first_l2(qcow)
    assert u64(qcow, l2) & (1 << 62), 'the first guest cluster is compressed'
    return qcow, l2


@pytest.mark.parametrize('cluster', ['512', '4096', '65536', '2M'])
@pytest.mark.parametrize('piece', [PIECE, 3 * 65536 + 4096, 'cluster'])
def test_compressed_clusters_equal_qemu_img(tmp_path, cluster, piece):
    """Every cluster compressed (compressible data), its bytes spread over pieces of any size: qemu-img's result.
    With pieces of one cluster, each L2 table starts a piece and the first compressed clusters qemu put before it
    (512- and 4096-byte clusters) come from the bytes kept of the pieces before."""
    if piece == 'cluster':
        piece = 2 * MIB if cluster == '2M' else int(cluster)
    elif cluster == '2M' and piece != PIECE:
        pytest.skip('pieces are multiples of the cluster size')
    qcow, _l2 = compressed_image(tmp_path, 6 * MIB + 12288, ['-o', 'cluster_size=%s' % cluster])
    with open(str(tmp_path / 'src.raw'), 'rb') as f:
        assert stream(qcow, piece) == f.read()


def test_l1_table_after_its_l2_tables_is_not_streamed(tmp_path):
    """qemu-img resize past what the L1 table maps moves the L1 table to the end of the file (a resized cloud
    image): which clusters are whose is known only at the end, so the image goes to scratch space."""
    qcow = str(tmp_path / 'resized.qcow2')
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', qcow, '8M'], check=True)
    subprocess.run(['qemu-io', '-f', 'qcow2', '-c', 'write -P 0x5a 0 1M', qcow], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(['qemu-img', 'resize', '-q', qcow, '16M'], check=True)
    _cs, _n, l1_offset = layout(qcow)
    assert first_l2(qcow) < l1_offset  # the layout the test is about
    with pytest.raises(Unsupported, match='an L2 table precedes the L1 table'):
        stream(qcow, piece=4096)
    # in one piece with its L1 table, the tables are all known before any of its clusters is written
    ref = str(tmp_path / 'ref.raw')
    subprocess.run(['qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', qcow, ref], check=True)
    with open(ref, 'rb') as f:
        assert stream(qcow, piece=PIECE) == f.read()


def test_l2_table_after_its_data_is_not_streamed(tmp_path):
    """Byte-level edit: the first L2 table copied to the end of the file and the L1 entry pointed at the copy, so
    the data clusters it maps arrive before it."""
    raw = make_raw(str(tmp_path / 'src.raw'), 8 * MIB)
    qcow = str(tmp_path / 'moved.qcow2')
    subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2', raw, qcow], check=True)
    cs, _n, l1_offset = layout(qcow)
    l2 = first_l2(qcow)
    with open(qcow, 'rb') as f:
        f.seek(l2)
        table = f.read(cs)
    end = (os.path.getsize(qcow) + cs - 1) // cs * cs
    with open(qcow, 'r+b') as f:
        f.seek(end)
        f.write(table)
    poke(qcow, l1_offset, u64(qcow, l1_offset) - l2 + end)
    with pytest.raises(Unsupported, match='a data cluster precedes its L2 table'):
        stream(qcow)


@pytest.mark.parametrize('options,message', [
    (['-o', 'extended_l2=on'], r'incompatible features 0x10'),
    (['-c', '-o', 'compression_type=zstd'], r'compression type 1 \(zstd\)'),
])
def test_features_the_stream_does_not_take(tmp_path, options, message):
    raw = make_raw(str(tmp_path / 'src.raw'), 8 * MIB)
    qcow = str(tmp_path / 'f.qcow2')
    subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2'] + options + [raw, qcow], check=True)
    with pytest.raises(Unsupported, match=message):
        stream(qcow)


def test_internal_snapshot_is_not_streamed(tmp_path):
    raw = make_raw(str(tmp_path / 'src.raw'), 8 * MIB)
    qcow = str(tmp_path / 's.qcow2')
    subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2', raw, qcow], check=True)
    subprocess.run(['qemu-img', 'snapshot', '-c', 'before', qcow], check=True)
    with pytest.raises(Unsupported, match='internal snapshots'):
        stream(qcow)


def test_compressed_cluster_before_its_l2_table_is_not_streamed(tmp_path):
    """Byte-level edit: the first compressed cluster's offset points into the header, in a piece already passed
    (qemu puts only the first clusters of a new L2 table before it, in the cluster it was filling: those bytes
    are kept, see test_compressed_clusters_equal_qemu_img with 512- and 4096-byte clusters)."""
    qcow, l2 = compressed_image(tmp_path)
    entry = u64(qcow, l2)
    cs = layout(qcow)[0]
    offset_mask = (1 << (62 - (cs.bit_length() - 1 - 8))) - 1
    poke(qcow, l2, (entry & ~offset_mask) | 512)
    assert l2 >= cs  # the L2 table is not in the header's piece
    with pytest.raises(Unsupported, match='a compressed cluster precedes its L2 table'):
        stream(qcow, piece=cs)


# -- hostile images on the new paths: refused, never written as complete ------------------------------------------

def test_one_compressed_cluster_for_two_guest_clusters_is_refused(tmp_path):
    """Byte-level edit: guest cluster 1 maps the same compressed bytes as guest cluster 0 (qemu-img writes each
    cluster's data once; used twice, a few bytes could fill the whole disk through every L2 entry)."""
    qcow, l2 = compressed_image(tmp_path)
    poke(qcow, l2 + 8, u64(qcow, l2))
    with pytest.raises(Unsupported, match='overlapping compressed clusters'):
        stream(qcow)


def test_compressed_cluster_beyond_the_end_of_the_file_is_incomplete(tmp_path):
    qcow, l2 = compressed_image(tmp_path)
    cs = layout(qcow)[0]
    offset_mask = (1 << (62 - (cs.bit_length() - 1 - 8))) - 1
    entry = u64(qcow, l2 + 8)
    poke(qcow, l2 + 8, (entry & ~offset_mask) | (os.path.getsize(qcow) + 10 * MIB))
    with pytest.raises(Incomplete, match='before 1 of its compressed clusters'):
        stream(qcow)


def test_damaged_compressed_cluster_is_refused(tmp_path):
    """Byte-level edit: the first compressed cluster's deflate data overwritten: qemu-img fails to read it; the
    stream refuses it (the module wipes what it wrote) instead of writing anything for it."""
    qcow, l2 = compressed_image(tmp_path)
    cs = layout(qcow)[0]
    offset_mask = (1 << (62 - (cs.bit_length() - 1 - 8))) - 1
    start = u64(qcow, l2) & offset_mask
    with open(qcow, 'r+b') as f:
        f.seek(start)
        f.write(b'\xff' * 64)
    with pytest.raises(Incomplete, match='does not inflate to a whole cluster'):
        stream(qcow)
    assert subprocess.run(['qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', qcow, str(tmp_path / 'out.raw')],
                          stderr=subprocess.DEVNULL, check=False).returncode != 0


@pytest.mark.parametrize('keep', [0.5, 0.97])
def test_compressed_image_cut_is_incomplete(tmp_path, keep):
    qcow, _l2 = compressed_image(tmp_path)
    with open(qcow, 'r+b') as f:
        f.truncate(int(os.path.getsize(qcow) * keep))
    with pytest.raises(Incomplete, match='the file ends'):
        stream(qcow)


def test_huge_virtual_size_with_tiny_clusters_is_not_tracked(tmp_path):
    """17 GiB of 512-byte clusters: 35 million clusters; the planner would need a byte for each (and more for a
    larger disk): it refuses instead of exhausting the rescue system's memory (qemu-img converts it)."""
    qcow = str(tmp_path / 'tiny.qcow2')
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', qcow, '17G'], check=True)
    with open(qcow, 'rb') as f:
        head = f.read(fmt.HEAD_SIZE)
    with pytest.raises(Unsupported, match='clusters of 512 bytes'):
        Qcow2StreamPlan(fmt.parse_qcow2_header(head), head)


def test_clusters_mapped_long_before_their_data_are_bounded(tmp_path, monkeypatch):
    """All L2 tables first (preallocated metadata), their data after: the data clusters waiting for their bytes
    are bounded (MAX_PENDING, lowered here); past it the image is converted from scratch space."""
    monkeypatch.setattr(qcow2stream, 'MAX_PENDING', 16)
    raw = make_raw(str(tmp_path / 'src.raw'), 8 * MIB)
    qcow = str(tmp_path / 'p.qcow2')
    subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2', '-o', 'preallocation=metadata', raw, qcow],
                   check=True)
    with pytest.raises(Unsupported, match='more than 16 data clusters mapped before they arrive'):
        stream(qcow)

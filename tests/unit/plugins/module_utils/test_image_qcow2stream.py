# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The streaming qcow2 planner gives exactly what qemu-img convert gives, or refuses."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils import _image_format as fmt
from ansible_collections.baremetal.byol.plugins.module_utils._image_qcow2stream import Incomplete, Qcow2StreamPlan, Unsupported

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
            offset += len(data)
    for lo, length in plan.finish():
        disk[lo:lo + length] = bytes(length)
    return bytes(disk)


@pytest.mark.parametrize('options', [
    [], ['-o', 'cluster_size=4096'], ['-o', 'cluster_size=2M'], ['-o', 'compat=0.10'],
    ['-o', 'preallocation=metadata'], ['-o', 'cluster_size=512']])
def test_stream_equals_qemu_img(tmp_path, options):
    raw = make_raw(str(tmp_path / 'src.raw'), 40 * MIB + 8192)
    qcow = str(tmp_path / 'img.qcow2')
    subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2'] + options + [raw, qcow], check=True)
    with open(raw, 'rb') as f:
        assert stream(qcow) == f.read()


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


def test_compressed_clusters_refused(tmp_path):
    raw = make_raw(str(tmp_path / 'src.raw'), 8 * MIB)
    qcow = str(tmp_path / 'c.qcow2')
    subprocess.run(['qemu-img', 'convert', '-c', '-f', 'raw', '-O', 'qcow2', raw, qcow], check=True)
    with pytest.raises(Unsupported):
        stream(qcow)


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

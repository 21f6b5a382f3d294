# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""DeviceWriter's zeroes where BLKZEROOUT is refused (a regular file here: the ioctl fails on it): the written
zeroes land where they must, nothing else changes, and the stream's position is what each path promises."""

from __future__ import annotations

from ansible_collections.baremetal.byol.plugins.module_utils._image.write import DeviceWriter

KIB = 1024


def _target(tmp_path, size=256 * KIB):
    path = tmp_path / 'disk.img'
    path.write_bytes(b'x' * size)
    return path


def test_zero_range_without_blkzeroout_writes_zeroes_and_moves_the_position(tmp_path):
    path = _target(tmp_path)
    w = DeviceWriter(str(path))
    assert not w.zero_out  # a regular file: no BLKZEROOUT
    w.zero_range(4 * KIB, 8 * KIB)
    assert w.offset == 12 * KIB
    w.write(b'A' * 512)  # continues after the range
    w.close()
    data = path.read_bytes()
    assert data[:4 * KIB] == b'x' * (4 * KIB)
    assert data[4 * KIB:12 * KIB] == bytes(8 * KIB)
    assert data[12 * KIB:12 * KIB + 512] == b'A' * 512
    assert data[12 * KIB + 512:] == b'x' * (len(data) - 12 * KIB - 512)


def test_a_refused_blkzeroout_of_a_pending_zero_run_falls_back_to_written_zeroes(tmp_path):
    path = _target(tmp_path)
    w = DeviceWriter(str(path))
    w.zero_out = True  # as on a block device; the ioctl then fails on the regular file
    w.write(bytes(64 * KIB))  # all zeroes: kept pending, not written yet
    w.write(bytes(64 * KIB))
    assert w.offset == 128 * KIB
    w.write(b'B' * (4 * KIB))  # flushes the pending run: BLKZEROOUT fails, zeroes are written
    w.close()
    assert not w.zero_out
    data = path.read_bytes()
    assert data[:128 * KIB] == bytes(128 * KIB)
    assert data[128 * KIB:132 * KIB] == b'B' * (4 * KIB)
    assert data[132 * KIB:] == b'x' * (len(data) - 132 * KIB)

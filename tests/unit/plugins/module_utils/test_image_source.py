# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Streaming source: one pass, hashing the downloaded bytes, decompression by content, progress.

Runs against files and the lab's real HTTP server on 127.0.0.1 (no root needed).
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
import os
import shutil
import subprocess

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils._image import source as src
from ansible_collections.baremetal.byol.plugins.module_utils import _progress as prog
from byollab.httpserve import ImageServer, write_checksums

MIB = 1024 * 1024


def payload(size=9 * MIB + 123):
    # compressible but not trivial: random blocks separated by zero runs
    out = bytearray()
    block = 0
    while len(out) < size:
        out += os.urandom(64 * 1024) if block % 3 == 0 else bytes(192 * 1024)
        block += 1
    return bytes(out[:size])


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp('images')
    data = payload()
    (d / 'plain.raw').write_bytes(data)
    (d / 'img.raw.gz').write_bytes(gzip.compress(data, 1))
    (d / 'img.raw.xz').write_bytes(lzma.compress(data, preset=0))
    (d / 'img.raw.bz2').write_bytes(bz2.compress(data, 1))
    # multi-member gzip and multi-stream xz, as produced by parallel compressors
    half = len(data) // 2
    (d / 'multi.raw.gz').write_bytes(gzip.compress(data[:half], 1) + gzip.compress(data[half:], 1))
    (d / 'multi.raw.xz').write_bytes(lzma.compress(data[:half], preset=0) + lzma.compress(data[half:], preset=0))
    # a compressed name with uncompressed content: content decides
    (d / 'liar.raw.xz').write_bytes(data)
    # 64 MiB of zeroes xz-compressed: bounded memory on expansion
    (d / 'zeros.raw.xz').write_bytes(lzma.compress(bytes(64 * MIB), preset=0))
    if shutil.which('zstd'):
        subprocess.run(['zstd', '-q', '-1', str(d / 'plain.raw'), '-o', str(d / 'img.raw.zst')], check=True)
    return d, data


def consume(pump):
    h = hashlib.sha256()
    n = 0
    biggest = 0
    for chunk in pump:
        h.update(chunk)
        n += len(chunk)
        biggest = max(biggest, len(chunk))
    return h.hexdigest(), n, biggest


@pytest.mark.parametrize('name,compression', [
    ('plain.raw', None), ('img.raw.gz', 'gz'), ('img.raw.xz', 'xz'), ('img.raw.bz2', 'bz2'),
    ('multi.raw.gz', 'gz'), ('multi.raw.xz', 'xz'), ('liar.raw.xz', None), ('img.raw.zst', 'zst')])
def test_stream_over_http(images, name, compression):
    d, data = images
    if not (d / name).exists():
        pytest.skip('zstd missing')
    with ImageServer(str(d)) as srv:
        source = src.open_source(srv.url(name))
        assert source.content_length == (d / name).stat().st_size
        pump = src.ImagePump(source, 'sha512', zstd_path=shutil.which('zstd'), chunk_size=MIB)
        digest, n, biggest = consume(pump)
        source.close()
    assert pump.compression == compression
    assert n == len(data) and digest == hashlib.sha256(data).hexdigest()
    # the checksum is over the downloaded (compressed) bytes, computed in the same pass
    assert pump.digest == hashlib.sha512((d / name).read_bytes()).hexdigest()
    assert pump.downloaded == (d / name).stat().st_size
    assert biggest <= MIB
    # exactly one GET: no second read of the source
    assert srv.requests == [('GET', '/' + name)]


def test_expansion_is_bounded(images):
    d, _data = images
    source = src.open_source('file://' + str(d / 'zeros.raw.xz'))
    pump = src.ImagePump(source, 'md5', chunk_size=MIB)
    _digest, n, biggest = consume(pump)
    assert n == 64 * MIB and biggest <= MIB


def test_file_url(images):
    d, data = images
    source = src.open_source('file://' + str(d / 'img.raw.gz'))
    pump = src.ImagePump(source, 'sha256')
    _digest, n, _big = consume(pump)
    assert n == len(data)
    assert pump.digest == hashlib.sha256((d / 'img.raw.gz').read_bytes()).hexdigest()


def test_http_errors_name_url_and_status_never_headers(images):
    d, _data = images
    secret = 'Basic c2VjcmV0LXZhbHVl'
    with ImageServer(str(d), auth=secret) as srv:
        with pytest.raises(src.DownloadError) as exc:
            src.open_source(srv.url('plain.raw'), headers={'Authorization': 'Basic d3Jvbmc='})
        assert exc.value.msg == 'Could not download image located: %s (HTTP status 401 Unauthorized)' % srv.url('plain.raw')
        assert 'd3Jvbmc' not in json.dumps(exc.value.result())
        assert exc.value.status == 401
        ok = src.open_source(srv.url('plain.raw'), headers={'Authorization': secret})
        assert ok.status == 200
        ok.close()
        with pytest.raises(src.DownloadError) as exc:
            src.open_source(srv.url('missing.raw'), headers={'Authorization': secret})
        assert '404' in exc.value.msg
    with pytest.raises(src.DownloadError) as exc:
        src.open_source('http://127.0.0.1:9/none.raw', timeout=5)
    assert exc.value.msg.startswith('Could not download image located: http://127.0.0.1:9/none.raw (reason:')


def test_tls_self_signed(images, tmp_path):
    d, data = images
    with ImageServer(str(d), tls=True, certdir=str(tmp_path / 'tls')) as srv:
        with pytest.raises(src.DownloadError) as exc:
            src.open_source(srv.url('plain.raw'))
        assert 'CERTIFICATE_VERIFY_FAILED' in exc.value.msg or 'certificate verify failed' in exc.value.msg
        source = src.open_source(srv.url('plain.raw'), ca_path=srv.ca_path)
        _digest, n, _b = consume(src.ImagePump(source, 'sha1'))
        assert n == len(data)
        source = src.open_source(srv.url('plain.raw'), validate_certs=False)
        source.close()


def test_head_and_checksum_files(images):
    d, _data = images
    sums = write_checksums(str(d))
    assert sums['plain.raw']['sha512'] == hashlib.sha512((d / 'plain.raw').read_bytes()).hexdigest()
    assert (d / 'plain.raw.sha512').read_text().split()[0] == sums['plain.raw']['sha512']
    with ImageServer(str(d)) as srv:
        info = src.head_source(srv.url('plain.raw'))
        assert info.content_length == (d / 'plain.raw').stat().st_size and info.last_modified
        assert srv.requests == [('HEAD', '/plain.raw')]


def test_stop_early_frees_the_producer(images):
    d, _data = images
    with ImageServer(str(d)) as srv:
        source = src.open_source(srv.url('plain.raw'))
        pump = src.ImagePump(source, 'sha512', chunk_size=64 * 1024, depth=2)
        it = iter(pump)
        next(it)
        pump.stop()
        assert not pump._thread.is_alive()


# -- progress -----------------------------------------------------------------------------------------

class Clock(object):
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class Log(object):
    def __init__(self):
        self.lines = []

    def log(self, msg):
        self.lines.append(msg)


def test_progress_reports_at_interval(tmp_path):
    clock, log = Clock(), Log()
    path = str(tmp_path / 'p' / 'progress.json')
    p = prog.Progress(module=log, path=path, interval=10, clock=clock)
    p.start('download', total=1000 * MIB)
    assert len(log.lines) == 1
    for i in range(1, 61):
        clock.t = i
        p.update(i * 10 * MIB)
    assert len(log.lines) == 1 + 6
    last = json.load(open(path))
    assert last['phase'] == 'download' and last['bytes'] == 600 * MIB and last['total'] == 1000 * MIB
    assert 'download: 600.0 MiB of 1000.0 MiB (60.0%), 10.0 MiB/s, ETA 40s' == last['line']
    summary = p.end(1000 * MIB)
    assert summary == dict(phase='download', bytes=1000 * MIB, seconds=60.0, bytes_per_second=int(1000 * MIB / 60))
    assert json.load(open(path))['final'] is True


def test_progress_interval_capped_at_30s():
    assert prog.Progress(interval=300).interval == 30.0
    st = prog.status('copy', 5 * MIB, None, 2.0)
    assert prog.format_status(st) == 'copy: 5.0 MiB, 2.5 MiB/s, 2s elapsed'

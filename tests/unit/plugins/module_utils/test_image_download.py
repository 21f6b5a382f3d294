# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Downloads over servers that misbehave: redirects, retries, resume, truncation, decompression bombs.

Every server is the lab's real HTTP server (lab/byollab/httpserve.py) on 127.0.0.1 with its faults
switched on; waits go through a recording ``sleep`` (nothing here is timed).
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import shutil
import subprocess

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils._image import source as src
from byollab.httpserve import ImageServer

MIB = 1024 * 1024
SECRETS = {
    'Authorization': 'Basic c2VjcmV0LXVzZXI6c2VjcmV0LXB3',
    'Cookie': 'session=cookie-secret-value',
    'X-Api-Token': 'token-secret-value',
    'x-lower-case-key': 'lower-secret-value',
    'PRIVATE-TOKEN': 'upper-secret-value',
}


def data_of(size):
    out = bytearray()
    i = 0
    while len(out) < size:
        out += hashlib.sha512(b'%d' % i).digest() * 64 if i % 3 else bytes(4096)
        i += 1
    return bytes(out[:size])


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp('dl')
    data = data_of(6 * MIB + 777)
    (d / 'img.raw').write_bytes(data)
    (d / 'img.raw.gz').write_bytes(gzip.compress(data, 1))
    (d / 'img.raw.xz').write_bytes(lzma.compress(data, preset=0))
    (d / 'img.raw.bz2').write_bytes(bz2.compress(data, 1))
    if shutil.which('zstd'):
        subprocess.run(['zstd', '-q', '-1', str(d / 'img.raw'), '-o', str(d / 'img.raw.zst')], check=True)
    # the same files cut in half, served as complete files
    for name in ('img.raw.gz', 'img.raw.xz', 'img.raw.bz2', 'img.raw.zst'):
        if (d / name).exists():
            whole = (d / name).read_bytes()
            (d / ('cut-' + name)).write_bytes(whole[:len(whole) // 2])
    # 64 MiB of zeroes in each compression: a small download that expands far
    zeros = bytes(64 * MIB)
    (d / 'bomb.gz').write_bytes(gzip.compress(zeros, 1))
    (d / 'bomb.xz').write_bytes(lzma.compress(zeros, preset=0))
    (d / 'bomb.bz2').write_bytes(bz2.compress(zeros, 1))
    if shutil.which('zstd'):
        (d / 'zeros').write_bytes(zeros)
        subprocess.run(['zstd', '-q', '-1', str(d / 'zeros'), '-o', str(d / 'bomb.zst')], check=True)
        os.unlink(str(d / 'zeros'))
    return d, data


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)


def policy(retries=9, delay=10.0, max_time=600.0):
    sleeps = Sleeps()
    return src.RetryPolicy(retries=retries, delay=delay, max_time=max_time, sleep=sleeps), sleeps


def fetch(url, pol=None, headers=None, hash_type='sha256', **kw):
    if pol is not None:
        kw['policy'] = pol
    source = src.open_source(url, headers=headers, **kw)
    pump = src.ImagePump(source, hash_type, zstd_path=shutil.which('zstd'), chunk_size=MIB)
    h = hashlib.sha256()
    for chunk in pump:
        h.update(chunk)
        pump.recycle(chunk)
    source.close()
    return h.hexdigest(), pump


def sha(data):
    return hashlib.sha256(data).hexdigest()


def received_secrets(log):
    """Header names (lower-case) of SECRETS that reached a server, per request."""
    names = set(k.lower() for k in SECRETS)
    return [sorted(n for n in entry['headers'] if n in names) for entry in log]


# -- redirects -----------------------------------------------------------------------------------

@pytest.mark.parametrize('status', [301, 302, 303, 307, 308])
def test_cross_origin_redirect_drops_every_user_header(files, status):
    d, data = files
    with ImageServer(str(d)) as first, ImageServer(str(d)) as second:
        second.faults.validators = False  # makes the faulty (logging) path active
        first.faults.redirects['/img.raw'] = (status, second.url('img.raw') + '?X-Amz-Signature=presigned-secret')
        digest, _pump = fetch(first.url('img.raw'), headers=SECRETS)
        assert digest == sha(data)
        # the first origin got every header, the second none (the request reached it)
        assert received_secrets(first.faults.log) == [sorted(k.lower() for k in SECRETS)]
        assert [e['path'] for e in second.faults.log] == ['/img.raw?X-Amz-Signature=presigned-secret']
        assert received_secrets(second.faults.log) == [[]]


def test_same_origin_redirect_keeps_headers_and_other_port_does_not(files):
    d, data = files
    with ImageServer(str(d)) as srv, ImageServer(str(d)) as other:
        other.faults.validators = False
        srv.faults.redirects['/a'] = (302, '/b')           # same origin, relative
        srv.faults.redirects['/b'] = (307, other.url('img.raw'))  # same host, other port
        digest, _pump = fetch(srv.url('a'), headers={'Authorization': SECRETS['Authorization']})
        assert digest == sha(data)
        assert received_secrets(srv.faults.log) == [['authorization'], ['authorization']]
        assert received_secrets(other.faults.log) == [[]]


def test_url_credentials_stay_on_their_origin(files):
    d, data = files
    with ImageServer(str(d), auth='Basic dXNlcjpwYXNz') as srv, ImageServer(str(d)) as other:
        other.faults.validators = False
        srv.faults.redirects['/img.raw'] = (302, '/same-origin.raw')
        srv.faults.redirects['/same-origin.raw'] = (302, other.url('img.raw'))
        url = 'http://user:pass@127.0.0.1:%d/img.raw' % srv.port
        digest, _pump = fetch(url)
        assert digest == sha(data)
        assert [e['headers'].get('authorization') for e in srv.faults.log] == ['Basic dXNlcjpwYXNz'] * 2
        assert 'authorization' not in other.faults.log[0]['headers']


def test_presigned_redirect_works(files):
    """First host wants Basic auth; it redirects to an object store whose URL carries its own
    signature and which refuses a request that also has an Authorization header."""
    d, data = files
    auth = SECRETS['Authorization']
    with ImageServer(str(d), auth=auth) as site, ImageServer(str(d)) as store:
        store.faults.presigned['/img.raw'] = 's1gn'
        site.faults.redirects['/release/img.raw'] = (302, store.url('img.raw') + '?sig=s1gn&expires=9')
        digest, pump = fetch(site.url('release/img.raw'), headers={'Authorization': auth, 'Cookie': 'c=1'})
        assert digest == sha(data) and pump.produced == len(data)
        assert [e['path'] for e in store.faults.log] == ['/img.raw?sig=s1gn&expires=9']


def test_https_to_http_refused(files, tmp_path):
    d, _data = files
    with ImageServer(str(d), tls=True, certdir=str(tmp_path / 'tls')) as tls, ImageServer(str(d)) as plain:
        plain.faults.validators = False
        tls.faults.redirects['/img.raw'] = (301, plain.url('img.raw') + '?sig=do-not-show')
        with pytest.raises(src.DownloadError) as exc:
            fetch(tls.url('img.raw'), headers=SECRETS, ca_path=tls.ca_path)
        assert exc.value.msg == ('Could not download image located: %s (refused a redirect (HTTP status 301) from '
                                 'https to http (http://127.0.0.1:%d): the download would leave TLS)'
                                 % (tls.url('img.raw'), plain.port))
        assert plain.faults.log == []
        assert 'do-not-show' not in exc.value.msg


@pytest.mark.parametrize('location', ['ftp://127.0.0.1/img.raw', 'file:///etc/shadow', 'gopher://x/', 'data:,x'])
def test_redirect_to_other_schemes_refused(files, location):
    d, _data = files
    with ImageServer(str(d)) as srv:
        srv.faults.redirects['/img.raw'] = (302, location)
        with pytest.raises(src.DownloadError) as exc:
            fetch(srv.url('img.raw'))
        scheme = location.split(':')[0]
        assert 'refused a redirect (HTTP status 302) to a %s URL: only http and https are followed' % scheme \
            in exc.value.msg
        assert 'shadow' not in exc.value.msg


def test_redirect_loop_ends(files):
    d, _data = files
    with ImageServer(str(d)) as srv:
        srv.faults.redirects['/a'] = (302, '/b')
        srv.faults.redirects['/b'] = (302, '/a')
        with pytest.raises(src.DownloadError, match='more than 10 redirects'):
            fetch(srv.url('a'))
        assert len(srv.faults.log) == 11


# -- retries -------------------------------------------------------------------------------------

def test_retries_5xx_429_503_honouring_retry_after(files):
    d, data = files
    with ImageServer(str(d)) as srv:
        srv.faults.statuses = [(503, {'Retry-After': '7'}), (500, {}), (429, {'Retry-After': '3'}), (502, {})]
        pol, sleeps = policy(delay=2)
        digest, _pump = fetch(srv.url('img.raw'), pol)
        assert digest == sha(data)
        assert [r['status'] for r in pol.reports] == [503, 500, 429, 502]
        assert [r['reason'] for r in pol.reports] == ['HTTP status 503 Service Unavailable',
                                                      'HTTP status 500 Internal Server Error',
                                                      'HTTP status 429 Too Many Requests',
                                                      'HTTP status 502 Bad Gateway']
        # Retry-After replaces the backoff; the backoff doubles otherwise
        assert sleeps == [7.0, 2.0, 3.0, 4.0]
        assert [r['retry_after'] for r in pol.reports] == [True, False, True, False]
        assert len(srv.requests) == 5


@pytest.mark.parametrize('status', [400, 401, 403, 404, 410])
def test_other_4xx_fail_at_once(files, status):
    d, _data = files
    with ImageServer(str(d)) as srv:
        srv.faults.statuses = [(status, {})]
        pol, sleeps = policy()
        with pytest.raises(src.DownloadError) as exc:
            fetch(srv.url('img.raw'), pol)
        assert exc.value.status == status
        assert pol.reports == [] and sleeps == [] and len(srv.requests) == 1


def test_retries_run_out(files):
    d, _data = files
    with ImageServer(str(d)) as srv:
        srv.faults.statuses = [(503, {})] * 5
        pol, sleeps = policy(retries=2, delay=1)
        with pytest.raises(src.DownloadError) as exc:
            fetch(srv.url('img.raw'), pol)
        assert exc.value.msg.endswith('(HTTP status 503 Service Unavailable; no retry left after 2 retries)')
        assert sleeps == [1.0, 2.0] and len(srv.requests) == 3
        assert len(exc.value.extra['retries']) == 2


def test_retry_after_beyond_the_time_budget_fails_at_once(files):
    d, _data = files
    with ImageServer(str(d)) as srv:
        srv.faults.statuses = [(429, {'Retry-After': '3600'})]
        pol, sleeps = policy(max_time=600)
        with pytest.raises(src.DownloadError) as exc:
            fetch(srv.url('img.raw'), pol)
        assert 'the server asks to wait 3600 s would exceed retry_max_time (600 s' in exc.value.msg
        assert sleeps == []


def test_connection_refused_is_retried_then_reported():
    pol, sleeps = policy(retries=3, delay=0.5)
    with pytest.raises(src.DownloadError) as exc:
        src.open_source('http://127.0.0.1:9/none.raw', policy=pol, timeout=5)
    assert 'no retry left after 3 retries' in exc.value.msg
    assert sleeps == [0.5, 1.0, 2.0]
    assert all('Connection refused' in r['reason'] for r in pol.reports)


def test_backoff_capped():
    pol, sleeps = policy(retries=9, delay=10, max_time=10 ** 6)
    for _i in range(9):
        pol.failed('http://x/', 'reset')
    assert sleeps == [10, 20, 40, 60, 60, 60, 60, 60, 60]


def test_retry_after_http_date():
    import datetime
    now = datetime.datetime(2026, 12, 7, 12, 0, 0, tzinfo=datetime.timezone.utc)
    assert src.parse_retry_after('Mon, 07 Dec 2026 12:00:30 GMT', now=now) == 30
    assert src.parse_retry_after('120') == 120
    assert src.parse_retry_after('soon') is None


# -- truncation ----------------------------------------------------------------------------------

def test_short_body_is_an_error(files):
    d, data = files
    with ImageServer(str(d)) as srv:
        srv.faults.truncate = 3 * MIB
        pol, _sleeps = policy(retries=0)
        with pytest.raises(src.DownloadError) as exc:
            fetch(srv.url('img.raw'), pol)
        assert exc.value.msg == ('Could not download image located: %s (the connection closed after %d of %d bytes; '
                                 'retries are disabled)' % (srv.url('img.raw'), 3 * MIB, len(data)))


def test_short_body_every_time_exhausts_the_retries(files):
    d, data = files
    with ImageServer(str(d)) as srv:
        srv.faults.truncate = 3 * MIB
        pol, _sleeps = policy(retries=2, delay=0)
        with pytest.raises(src.DownloadError, match='no retry left after 2 retries'):
            fetch(srv.url('img.raw'), pol)
        assert [r['at_byte'] for r in pol.reports] == [3 * MIB, 3 * MIB]
        assert len(data) > 3 * MIB


def test_chunked_body_cut_in_a_chunk_is_an_error(files):
    d, _data = files
    with ImageServer(str(d)) as srv:
        srv.faults.chunked = True
        srv.faults.truncate = 2 * MIB + 5
        pol, _sleeps = policy(retries=0)
        with pytest.raises(src.DownloadError, match='the connection closed in the middle of a chunk'):
            fetch(srv.url('img.raw'), pol)


@pytest.mark.parametrize('name,kind', [('cut-img.raw.gz', 'gzip'), ('cut-img.raw.xz', 'xz'),
                                       ('cut-img.raw.bz2', 'bzip2'), ('cut-img.raw.zst', 'zstd')])
@pytest.mark.parametrize('transport', ['http', 'chunked', 'file'])
def test_cut_compressed_streams_are_errors(files, name, kind, transport):
    d, _data = files
    if not (d / name).exists():
        pytest.skip('zstd missing')
    with ImageServer(str(d)) as srv:
        srv.faults.chunked = transport == 'chunked'
        url = 'file://%s' % (d / name) if transport == 'file' else srv.url(name)
        with pytest.raises(src.TruncatedError) as exc:
            fetch(url)
        assert exc.value.msg == ('the image is truncated: its %s data ends before the end of its compressed stream '
                                 '(after %d downloaded bytes)' % (kind, os.path.getsize(str(d / name))))


@pytest.mark.parametrize('name', ['bomb.gz', 'bomb.xz', 'bomb.bz2', 'bomb.zst'])
def test_decompression_stops_at_the_limit(files, name):
    d, _data = files
    if not (d / name).exists():
        pytest.skip('zstd missing')

    class TooBig(src.ByolError):
        pass
    source = src.open_source('file://%s' % (d / name))
    pump = src.ImagePump(source, 'sha256', zstd_path=shutil.which('zstd'), chunk_size=MIB, limit=8 * MIB,
                         limit_error=lambda n: TooBig('past the limit at %d' % n))
    got = 0
    with pytest.raises(TooBig) as exc:
        for chunk in pump:
            got += len(chunk)
    # stopped at the first chunk past 8 MiB, not at the 64 MiB the stream expands to
    assert exc.value.msg == 'past the limit at %d' % (9 * MIB)
    assert got <= 8 * MIB and pump.produced == 8 * MIB
    source.close()


# -- resume --------------------------------------------------------------------------------------

@pytest.mark.parametrize('chunked', [False, True])
def test_cut_three_times_resumes_with_range(files, chunked):
    d, data = files
    with ImageServer(str(d)) as srv:
        srv.faults.cuts = [MIB + 1, 3 * MIB, 5 * MIB + 12345]
        srv.faults.chunked = chunked
        pol, _sleeps = policy(delay=0)
        digest, pump = fetch(srv.url('img.raw'), pol, hash_type='sha512')
        assert digest == sha(data)
        assert pump.digest == hashlib.sha512(data).hexdigest()   # one pass, over every byte once
        assert pump.downloaded == len(data)
        assert pol.resumes == 3 and pol.restarts == 0
        cuts = [MIB + 1, 3 * MIB, 5 * MIB + 12345]
        at = [r['at_byte'] for r in pol.reports]
        if chunked:
            # the bytes of a chunk cut in its middle are not delivered: asked for again
            assert all(cut - 64 * 1024 <= a <= cut for a, cut in zip(at, cuts)) and len(at) == 3
        else:
            assert at == cuts
        ranges = [(e['headers'].get('range'), 'if-range' in e['headers']) for e in srv.faults.log]
        assert ranges == [(None, False)] + [('bytes=%d-' % a, True) for a in at]
        assert srv.faults.cuts == []


@pytest.mark.parametrize('fault', ['ranges', 'validators', 'etag_changes'])
def test_cut_without_usable_range_restarts_and_checks_the_prefix(files, fault):
    d, data = files
    with ImageServer(str(d)) as srv:
        srv.faults.cuts = [2 * MIB, 4 * MIB]
        if fault == 'ranges':
            srv.faults.ranges = False
        elif fault == 'validators':
            srv.faults.validators = False
        else:
            srv.faults.change_after_cut = True
        pol, _sleeps = policy(delay=0)
        digest, pump = fetch(srv.url('img.raw'), pol)
        assert digest == sha(data) and pump.downloaded == len(data)
        assert pol.restarts == 2 and pol.resumes == 0
        assert len(srv.faults.log) == 3


def test_image_changed_during_the_download_fails(files, tmp_path):
    _d, data = files
    d = tmp_path / 'changing'
    d.mkdir()
    (d / 'img.raw').write_bytes(data)

    def change(_offset):
        with open(str(d / 'img.raw'), 'r+b') as f:
            f.write(b'NEW CONTENT')
    with ImageServer(str(d)) as srv:
        srv.faults.cuts = [3 * MIB]
        srv.faults.change_after_cut = True
        srv.faults.after_cut = change
        pol, _sleeps = policy(delay=0)
        with pytest.raises(src.DownloadError) as exc:
            fetch(srv.url('img.raw'), pol)
        assert exc.value.msg.endswith('(the image changed on the server during the download (its first %d bytes '
                                      'differ from the ones already received))' % (3 * MIB))
        assert pol.restarts == 1


def test_cut_during_a_compressed_download_resumes(files):
    d, data = files
    size = os.path.getsize(str(d / 'img.raw.xz'))
    with ImageServer(str(d)) as srv:
        srv.faults.cuts = [size // 4, size // 2, size * 3 // 4]
        pol, _sleeps = policy(delay=0)
        digest, pump = fetch(srv.url('img.raw.xz'), pol)
        assert digest == sha(data) and pump.compression == 'xz' and pol.resumes == 3


def test_time_budget_counts_every_outage_and_only_outages():
    now = [1000.0]
    sleeps = Sleeps()

    def sleep(seconds):
        sleeps.append(seconds)
        now[0] += seconds
    pol = src.RetryPolicy(retries=20, delay=40, max_time=200, sleep=sleep, clock=lambda: now[0])
    pol.failed('http://x/', 'reset')          # outage 1: waits 40
    now[0] += 10                              # the attempt takes 10 s, then answers
    pol.recovered()
    assert pol.spent == 50
    now[0] += 10 ** 6                         # a long healthy download does not count
    pol.failed('http://x/', 'reset')          # outage 2: waits 60 (doubled, capped at 60): 110 used
    now[0] += 10
    pol.failed('http://x/', 'reset')          # 120 used, waits 60
    now[0] += 10
    with pytest.raises(src.DownloadError, match='200 s, 190 s used'):
        pol.failed('http://x/', 'reset again')  # 190 used: another 60 would make 250 > 200
    assert sleeps == [40, 60, 60]


def test_time_budget_exceeded_fails_with_the_numbers():
    now = [0.0]
    pol = src.RetryPolicy(retries=20, delay=40, max_time=100, sleep=lambda s: now.__setitem__(0, now[0] + s),
                          clock=lambda: now[0])
    pol.failed('http://x/', 'reset')
    pol.failed('http://x/', 'reset')
    with pytest.raises(src.DownloadError) as exc:
        pol.failed('http://x/', 'reset')
    assert exc.value.msg == ('Could not download image located: http://x/ (reset; the next wait of 60 s would exceed '
                             'retry_max_time (100 s, 100 s used))')
    assert len(exc.value.extra['retries']) == 2

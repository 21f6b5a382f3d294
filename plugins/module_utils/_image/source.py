# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Image source: open an http(s)/file URL and stream it once, hashing and decompressing.

Do not use this from other collections or standalone plugins/modules!

:class:`ImagePump` reads the source in a background thread. Every downloaded byte is hashed
as it arrives (one pass, never a second read); compressed data (xz, gzip, zstd, bzip2,
recognised by its first bytes, never by the name) is decompressed on the way; the
decompressed chunks are handed to the consumer through a bounded queue, so the download
overlaps with whatever the consumer does (writing a disk) while memory stays bounded
(``depth`` x ``chunk_size`` plus the decompressor's state).

zstd has no decoder in Python's standard library before 3.14: it runs as ``zstd -dc`` in a
pipe. Download errors name the URL (without user:password) and the HTTP status or reason,
never the request headers.
"""

from __future__ import annotations

import bz2
import datetime
import email.utils
import errno
import hashlib
import http.client
import lzma
import mmap
import os
import queue
import socket
import ssl
import subprocess
import threading
import time
import zlib

try:
    from urllib.parse import unquote, urljoin, urlsplit, urlunsplit
    from urllib.error import HTTPError, URLError
except ImportError:  # pragma: no cover
    raise

from ansible.module_utils.urls import open_url

from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError
from ansible_collections.baremetal.byol.plugins.module_utils._image.format import HEAD_SIZE, TruncatedError, detect_compression
from ansible_collections.baremetal.byol.plugins.module_utils._image.request import (
    checksum_from_file, image_file_name, redact_url)

CHUNK_SIZE = 4 * 1024 * 1024
QUEUE_DEPTH = 6
SUMS_MAX = 1024 * 1024  # a checksum file larger than this is not one
_EOF = object()


class DownloadError(ByolError):
    """The guide's ``Could not download image located: <url>`` with the status or reason."""

    def __init__(self, url, detail, status=None, retries=None):
        extra = dict(url=redact_url(url), http_status=status)
        if retries:
            extra['retries'] = retries
        super(DownloadError, self).__init__('Could not download image located: %s (%s)' % (redact_url(url), detail),
                                            **extra)
        self.status = status


class _Retryable(Exception):
    """A failure worth another attempt: ``reason`` (for the report), ``retry_after`` seconds or None."""

    def __init__(self, reason, status=None, retry_after=None):
        super(_Retryable, self).__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


RETRY_STATUSES = (408, 429, 500, 502, 503, 504)
MAX_REDIRECTS = 10
MAX_BACKOFF = 60.0


def parse_retry_after(value, now=None):
    """``Retry-After`` (seconds or an HTTP date) -> seconds (float, >= 0) or None when absent/invalid."""
    if value is None:
        return None
    value = str(value).strip()
    if value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    now = now if now is not None else datetime.datetime.now(datetime.timezone.utc)
    return max(0.0, (when - now).total_seconds())


class RetryPolicy(object):
    """How often and how long a download is retried; every retry is recorded in :attr:`reports`.

    ``retries``: how many retries one run may make in all (0: none). ``delay``: the first wait in
    seconds, doubled after each retry up to :data:`MAX_BACKOFF` (a server's ``Retry-After`` replaces
    it). ``max_time``: how many seconds the download may spend failing in all: from each failure to
    the moment the next attempt answers, waits included.
    """

    def __init__(self, retries=9, delay=10.0, max_time=600.0, sleep=None, clock=None):
        self.retries = max(0, int(retries or 0))
        self.delay = max(0.0, float(delay or 0))
        self.max_time = max(0.0, float(max_time or 0))
        self.sleep = sleep if sleep is not None else time.sleep
        self.clock = clock if clock is not None else time.monotonic
        self.reports = []
        self.resumes = 0
        self.restarts = 0
        self.spent = 0.0
        self._outage = None
        self._backoff = self.delay

    def recovered(self):
        """An attempt answered: the current outage (if any) is over."""
        if self._outage is not None:
            self.spent += self.clock() - self._outage
            self._outage = None

    def failed(self, url, reason, status=None, retry_after=None, at_byte=None):
        """Wait before the next attempt, or raise DownloadError when no retry is left."""
        now = self.clock()
        if self._outage is None:
            self._outage = now
        used = self.spent + (now - self._outage)
        if len(self.reports) >= self.retries:
            raise DownloadError(url, '%s; %s' % (reason, 'no retry left after %d retries' % self.retries
                                                 if self.retries else 'retries are disabled'),
                                status=status, retries=self.reports)
        wait = self._backoff if retry_after is None else retry_after
        if used + wait > self.max_time:
            why = ('the server asks to wait %d s' % wait) if retry_after is not None else 'the next wait of %g s' % wait
            raise DownloadError(url, '%s; %s would exceed retry_max_time (%g s, %d s used)'
                                % (reason, why, self.max_time, int(used)), status=status, retries=self.reports)
        self.reports.append(dict(retry=len(self.reports) + 1, reason=reason, status=status, at_byte=at_byte,
                                 wait_seconds=round(wait, 3), retry_after=retry_after is not None))
        if retry_after is None:
            self._backoff = min(max(MAX_BACKOFF, self.delay), self._backoff * 2)
        if wait > 0:
            self.sleep(wait)


def origin(url):
    """``(scheme, host, port)`` of an http(s) URL, lower-cased, default ports filled in."""
    parts = urlsplit(url)
    scheme = (parts.scheme or '').lower()
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is None:
        port = {'http': 80, 'https': 443}.get(scheme)
    return scheme, (parts.hostname or '').lower(), port


def _strip_userinfo(url):
    parts = urlsplit(url)
    if '@' not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit('@', 1)[1]))


def _shown(url):
    """A URL from a server, shown without path or query (they may hold a signature): scheme://host:port."""
    scheme, host, port = origin(url)
    return '%s://%s%s' % (scheme or '?', host or '?', ':%d' % port if port not in (None, 80, 443, -1) else '')


def _is_retryable_error(exc):
    if isinstance(exc, (ssl.SSLCertVerificationError, ssl.CertificateError)):
        return False
    if isinstance(exc, URLError) and not isinstance(exc, HTTPError):
        reason = exc.reason
        if isinstance(reason, (ssl.SSLCertVerificationError, ssl.CertificateError)):
            return False
        if isinstance(reason, ssl.SSLError) and 'CERTIFICATE' in str(reason).upper():
            return False
        return isinstance(reason, (OSError, socket.timeout))
    return isinstance(exc, (OSError, socket.timeout, http.client.HTTPException))


def _describe_exception(exc):
    if isinstance(exc, HTTPError):
        return 'HTTP status %d %s' % (exc.code, exc.reason or ''), exc.code
    if isinstance(exc, URLError):
        return 'reason: %s' % (exc.reason,), None
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return 'timed out: %s' % (exc,), None
    if isinstance(exc, ssl.SSLError):
        return 'TLS error: %s' % (exc,), None
    if isinstance(exc, http.client.IncompleteRead):
        return 'the connection closed in the middle of a chunk (chunked transfer encoding)', None
    return '%s: %s' % (type(exc).__name__, exc), None


class HttpClient(object):
    """One GET/HEAD at a time, redirects followed by this code (never by urllib).

    Policy: only http and https; never from https to http; the user's headers (every one of
    them) and the URL's user:password go only to the origin (scheme, host, port) of the URL
    the user gave: after a redirect to another origin they are dropped for the rest of the chain
    (a pre-signed URL on an object store carries its own authorisation in its query). At most
    :data:`MAX_REDIRECTS` redirects.
    """

    def __init__(self, url, headers=None, validate_certs=True, ca_path=None, timeout=30, policy=None):
        self.url = url
        self.headers = dict(headers or {})
        self.validate_certs = validate_certs
        self.ca_path = ca_path
        self.timeout = timeout
        self.policy = policy or RetryPolicy(retries=0)
        self.redirects = []

    def _one(self, url, headers, method):
        return open_url(url, headers=headers, method=method, validate_certs=self.validate_certs, ca_path=self.ca_path,
                        timeout=self.timeout, follow_redirects='none', decompress=False, use_netrc=False,
                        http_agent='baremetal.byol-image-burn', force_basic_auth=True)

    def request(self, method='GET', extra_headers=None):
        """Follow redirects; return the final response (any 2xx). Raises _Retryable or DownloadError."""
        first = self.url
        start_origin = origin(first)
        url = first
        trusted = True
        hops = []
        for _hop in range(MAX_REDIRECTS + 1):
            headers = dict(self.headers) if trusted else {}
            headers.update(extra_headers or {})
            target = url if trusted else _strip_userinfo(url)
            try:
                resp = self._one(target, headers, method)
            except HTTPError as exc:
                code = exc.code
                location = exc.headers.get('Location') if exc.headers is not None else None
                retry_after = parse_retry_after(exc.headers.get('Retry-After')) if exc.headers is not None else None
                reason = exc.reason
                try:
                    exc.close()
                except Exception:  # pylint: disable=broad-except
                    pass
                if code in (301, 302, 303, 307, 308):
                    if not location:
                        raise DownloadError(first, 'HTTP status %d without a Location header' % code, status=code)
                    nxt = urljoin(_strip_userinfo(url), location.strip())
                    scheme = origin(nxt)[0]
                    if scheme not in ('http', 'https'):
                        raise DownloadError(first, 'refused a redirect (HTTP status %d) to a %s URL: only http and '
                                            'https are followed' % (code, scheme or 'relative'), status=code)
                    if origin(url)[0] == 'https' and scheme == 'http':
                        raise DownloadError(first, 'refused a redirect (HTTP status %d) from https to http (%s): the '
                                            'download would leave TLS' % (code, _shown(nxt)), status=code)
                    if origin(nxt) != start_origin:
                        trusted = False
                    elif '@' in urlsplit(first).netloc and '@' not in urlsplit(nxt).netloc:
                        # same origin: the user's user:password goes on
                        parts = urlsplit(nxt)
                        userinfo = urlsplit(first).netloc.rsplit('@', 1)[0]
                        nxt = urlunsplit(parts._replace(netloc='%s@%s' % (userinfo, parts.netloc)))
                    hops.append(dict(status=code, to=_shown(nxt), headers_sent=trusted))
                    url = nxt
                    continue
                detail = 'HTTP status %d %s' % (code, reason or '')
                if code in RETRY_STATUSES:
                    raise _Retryable(detail.strip(), status=code, retry_after=retry_after)
                raise DownloadError(first, detail, status=code)
            except DownloadError:
                raise
            except Exception as exc:  # pylint: disable=broad-except
                detail, status = _describe_exception(exc)
                if _is_retryable_error(exc):
                    raise _Retryable(detail, status=status)
                raise DownloadError(first, detail, status=status)
            self.redirects = hops
            return resp
        raise DownloadError(first, 'more than %d redirects, a redirect loop?' % MAX_REDIRECTS)

    def request_retrying(self, method='GET', extra_headers=None, at_byte=None):
        while True:
            try:
                resp = self.request(method, extra_headers)
            except _Retryable as exc:
                self.policy.failed(self.url, exc.reason, status=exc.status, retry_after=exc.retry_after,
                                   at_byte=at_byte)
                continue
            self.policy.recovered()
            return resp


def _int_header(resp, name):
    value = resp.headers.get(name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _content_range(value):
    """``bytes a-b/total`` -> (a, b, total or None); None when unusable."""
    if not value:
        return None
    value = value.strip()
    if not value.lower().startswith('bytes '):
        return None
    try:
        span, total = value[6:].split('/', 1)
        lo, hi = span.split('-', 1)
        return int(lo), int(hi), (None if total.strip() == '*' else int(total))
    except ValueError:
        return None


class _FileStream(object):
    """A local file read once; counts and hashes what it delivers."""

    def __init__(self, f):
        self.f = f
        self.pos = 0
        self.hasher = None

    def readinto(self, view):
        n = self.f.readinto(view)
        if n:
            if self.hasher is not None:
                self.hasher.update(view[:n])
            self.pos += n
        return n

    def close(self):
        self.f.close()


class RemoteStream(object):
    """The body of an HTTP(S) download that survives interruptions.

    Counts and hashes (``hasher``, set by the consumer) every byte it delivers, once. A read that
    fails (reset, timeout, a chunked body cut in a chunk) or a body that ends before its
    ``Content-Length`` is continued under the :class:`RetryPolicy`: with ``Range: bytes=<pos>-``
    and ``If-Range: <validator>`` (a strong ETag, else Last-Modified) when the server gave one,
    accepted only as a ``206`` whose ``Content-Range`` starts at ``pos`` with the same total.
    Otherwise the download restarts from byte 0: the first ``pos`` bytes are read again and must
    hash to the same digest as the bytes already delivered (else the image changed on the server
    and the download fails); the consumer sees one continuous stream.
    """

    def __init__(self, client, resp, hash_type='sha256'):
        self.client = client
        self.resp = resp
        self.length = _int_header(resp, 'Content-Length')
        self.chunked = (resp.headers.get('Transfer-Encoding') or '').lower() == 'chunked'
        if self.chunked:
            self.length = None
        self.etag = resp.headers.get('ETag')
        self.last_modified = resp.headers.get('Last-Modified')
        self.pos = 0
        self.hasher = None
        self.hash_type = hash_type
        self.resumed = 0
        self.restarted = 0

    def _validator(self):
        if self.etag and not self.etag.startswith('W/'):
            return self.etag
        return self.last_modified

    def readinto(self, view):
        while True:
            reason = None
            try:
                n = self.resp.readinto(view)
            except Exception as exc:  # pylint: disable=broad-except
                if not _is_retryable_error(exc):
                    raise
                reason = _describe_exception(exc)[0]
                n = None
            if n:
                if self.length is not None and self.pos + n > self.length:
                    raise DownloadError(self.client.url, 'the server sent more than its Content-Length of %d bytes'
                                        % self.length)
                if self.hasher is not None:
                    self.hasher.update(view[:n])
                self.pos += n
                return n
            if n == 0 and (self.length is None or self.pos == self.length):
                return 0
            if reason is None:
                reason = 'the connection closed after %d of %d bytes' % (self.pos, self.length)
            self._continue(reason)

    def _continue(self, reason):
        """Get the rest of the body after a failure at ``self.pos``."""
        self.close()
        while True:
            self.client.policy.failed(self.client.url, reason, at_byte=self.pos)
            validator = self._validator()
            try:
                if self.pos and validator:
                    resp = self.client.request('GET', {'Range': 'bytes=%d-' % self.pos, 'If-Range': validator})
                else:
                    resp = self.client.request('GET')
            except _Retryable as exc:
                reason = exc.reason
                continue
            status = getattr(resp, 'status', None) or resp.getcode()
            if status == 206:
                rng = _content_range(resp.headers.get('Content-Range'))
                if rng is None or rng[0] != self.pos or (self.length is not None and rng[2] != self.length):
                    resp.close()
                    raise DownloadError(self.client.url, 'the server answered a range request with bytes other than '
                                        'the ones asked for (Content-Range %s)' % ('unreadable' if rng is None else
                                                                                   '%d-%d/%s' % rng))
                self.client.policy.recovered()
                self.resp = resp
                self.resumed += 1
                self.client.policy.resumes += 1
                return
            # a full body: the download starts again, and its first bytes must be the ones delivered
            length = _int_header(resp, 'Content-Length')
            if (resp.headers.get('Transfer-Encoding') or '').lower() == 'chunked':
                length = None
            if self.length is not None and length is not None and length != self.length:
                resp.close()
                raise DownloadError(self.client.url, 'the image changed on the server during the download (%d bytes '
                                    'instead of %d)' % (length, self.length))
            self.client.policy.recovered()
            self.resp = resp
            self.restarted += 1
            self.client.policy.restarts += 1
            try:
                self._skip_prefix()
            except _Retryable as exc:
                reason = exc.reason
                self.close()
                continue
            self.etag = resp.headers.get('ETag') or self.etag
            self.last_modified = resp.headers.get('Last-Modified') or self.last_modified
            return

    def _skip_prefix(self):
        """Read the ``pos`` bytes already delivered again; they must hash the same."""
        want = self.hasher.copy().hexdigest() if self.hasher is not None else None
        check = hashlib.new(self.hasher.name) if self.hasher is not None else None
        left = self.pos
        buf = bytearray(min(left, 1024 * 1024) or 1)
        view = memoryview(buf)
        while left:
            try:
                n = self.resp.readinto(view[:min(left, len(buf))])
            except Exception as exc:  # pylint: disable=broad-except
                if not _is_retryable_error(exc):
                    raise
                raise _Retryable(_describe_exception(exc)[0])
            if not n:
                raise _Retryable('the connection closed while the first %d bytes were read again' % self.pos)
            if check is not None:
                check.update(view[:n])
            left -= n
        if check is not None and check.hexdigest() != want:
            raise DownloadError(self.client.url, 'the image changed on the server during the download (its first %d '
                                'bytes differ from the ones already received)' % self.pos)

    def close(self):
        if self.resp is not None:
            try:
                self.resp.close()
            except Exception:  # pylint: disable=broad-except
                pass


class SourceInfo(object):
    """An opened source: ``stream`` (has ``readinto``, ``pos``, ``hasher``), ``content_length``, validators."""

    def __init__(self, url, stream, content_length=None, etag=None, last_modified=None, status=None,
                 content_type=None, redirects=None):
        self.url = url
        self.stream = stream
        self.content_length = content_length
        self.etag = etag
        self.last_modified = last_modified
        self.status = status
        self.content_type = content_type
        self.redirects = redirects or []

    def validators(self):
        return dict(url=redact_url(self.url), content_length=self.content_length, etag=self.etag,
                    last_modified=self.last_modified)

    def close(self):
        if self.stream is not None:
            try:
                self.stream.close()
            except Exception:  # pylint: disable=broad-except
                pass
            self.stream = None


def _file_path(url):
    return unquote(url[len('file://'):])


def open_source(url, headers=None, validate_certs=True, ca_path=None, timeout=30, method='GET', policy=None):
    """Open ``url`` and return a :class:`SourceInfo`; raises :class:`DownloadError`.

    ``policy``: a :class:`RetryPolicy` shared by every request of one run (none: no retry).
    """
    if url.startswith('file://'):
        path = _file_path(url)
        try:
            st = os.stat(path)
            stream = _FileStream(open(path, 'rb', buffering=0)) if method == 'GET' else None
        except (IOError, OSError) as exc:
            raise DownloadError(url, 'reason: %s' % (exc.strerror or exc))
        return SourceInfo(url, stream, content_length=st.st_size,
                          etag='%d-%d-%d' % (st.st_ino, st.st_size, int(st.st_mtime)),
                          last_modified=str(int(st.st_mtime)), status=None)
    client = HttpClient(url, headers=headers, validate_certs=validate_certs, ca_path=ca_path, timeout=timeout,
                        policy=policy)
    resp = client.request_retrying(method)
    stream = RemoteStream(client, resp)
    if method != 'GET':
        stream.close()
        stream = None
    length = _int_header(resp, 'Content-Length')
    if (resp.headers.get('Transfer-Encoding') or '').lower() == 'chunked':
        length = None
    return SourceInfo(url, stream, content_length=length, etag=resp.headers.get('ETag'),
                      last_modified=resp.headers.get('Last-Modified'), status=getattr(resp, 'status', None),
                      content_type=resp.headers.get('Content-Type'), redirects=client.redirects)


def head_source(url, headers=None, validate_certs=True, ca_path=None, timeout=30, policy=None):
    """Metadata of ``url`` without downloading it (HEAD); None where the server refuses HEAD."""
    try:
        info = open_source(url, headers, validate_certs, ca_path, timeout, method='HEAD', policy=policy)
    except DownloadError as exc:
        if exc.status in (405, 501):
            return None
        raise
    info.close()
    return info


def readinto_full(stream, view):
    """Fill ``view`` from ``stream`` (short reads looped); returns bytes read (0 at EOF)."""
    total = 0
    size = len(view)
    while total < size:
        n = stream.readinto(view[total:])
        if not n:
            break
        total += n
    return total


class _Decompressor(object):
    """Bounded-output stdlib decompressor (multi-member/multi-stream aware)."""

    NAMES = dict(gz='gzip', xz='xz', bz2='bzip2')

    def __init__(self, kind, out_chunk):
        self.kind = kind
        self.out_chunk = out_chunk
        self._obj = self._new()
        self._fed = False

    def _new(self):
        if self.kind == 'gz':
            return zlib.decompressobj(wbits=47)
        if self.kind == 'xz':
            return lzma.LZMADecompressor()
        return bz2.BZ2Decompressor()

    def feed(self, data):
        """Yield decompressed pieces of at most ``out_chunk`` bytes for input ``data``."""
        if data:
            self._fed = True
        while True:
            obj = self._obj
            if self.kind == 'gz':
                out = obj.decompress(data, self.out_chunk)
                data = obj.unconsumed_tail
                if out:
                    yield out
                if obj.eof:
                    rest = obj.unused_data
                    self._obj = self._new()
                    self._fed = bool(rest)
                    if rest:
                        data = rest
                        continue
                    return
                if not data and not out:
                    return
            else:
                if obj.eof:
                    rest = obj.unused_data
                    self._obj = self._new()
                    data = rest + data if rest else data
                    self._fed = bool(data)
                    if not data:
                        return
                    continue
                if obj.needs_input and not data:
                    return
                fed = bool(data)
                out = obj.decompress(data, self.out_chunk)
                data = b''
                if out:
                    yield out
                elif not obj.eof and (obj.needs_input or not fed):
                    return

    def finish(self, downloaded=None):
        """The input ended: the last stream must have reached its end marker (else it was cut)."""
        if self.kind == 'gz':
            out = self._obj.flush()
            if out:
                yield out
        if self._fed and not self._obj.eof:
            raise TruncatedError('the image is truncated: its %s data ends before the end of its compressed stream '
                                 '(after %s downloaded bytes)' % (self.NAMES[self.kind], downloaded))


class ImagePump(object):
    """Stream an opened source once: hash, decompress, and hand out chunks.

    Iterate over it for the (decompressed) chunks (``bytes``/``bytearray`` objects).
    ``downloaded`` (bytes read from the source), ``digest`` (hex, after the end),
    ``compression``, ``seconds`` are available afterwards.
    """

    def __init__(self, source, hash_type='sha512', progress=None, zstd_path=None, chunk_size=CHUNK_SIZE,
                 depth=QUEUE_DEPTH, limit=None, limit_error=None):
        self.source = source
        self.hasher = hashlib.new(hash_type)
        # the source hashes what it delivers (once; a resumed download checks its prefix with it)
        if source.stream is not None:
            source.stream.hasher = self.hasher
        self.limit = limit
        self.limit_error = limit_error
        self.hash_type = hash_type
        self.progress = progress
        self.zstd_path = zstd_path
        self.chunk_size = chunk_size
        self.queue = queue.Queue(maxsize=depth)
        self.downloaded = 0
        self.produced = 0
        self.compression = None
        self.digest = None
        self.seconds = None
        self.error = None
        self._stop = threading.Event()
        self._pool = queue.Queue()
        self._fill = None
        self._fill_len = 0
        self._pool_max = depth + 3
        self._thread = None
        self._zstd = None
        self._zstd_reader = None

    # -- producer side ------------------------------------------------------------------------
    def _put(self, item):
        while not self._stop.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _emit(self, data):
        if self.limit is not None and self.produced + len(data) > self.limit:
            # a decompression bomb or an image larger than its target: stop at once
            raise self.limit_error(self.produced + len(data))
        self.produced += len(data)
        return self._put(data)

    def _emit_piece(self, data):
        """Collect decompressed pieces into full-size aligned chunks."""
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            if self._fill is None:
                self._fill = self._buffer()
                self._fill_len = 0
            n = min(len(view) - pos, self.chunk_size - self._fill_len)
            self._fill[self._fill_len:self._fill_len + n] = view[pos:pos + n]
            self._fill_len += n
            pos += n
            if self._fill_len == self.chunk_size:
                buf, self._fill = self._fill, None
                if not self._emit(buf):
                    return False
        return True

    def _flush_pieces(self):
        if self._fill is not None and self._fill_len:
            data = self._fill[:self._fill_len]
            self.recycle(self._fill)
            self._fill = None
            return self._emit(data)
        return True

    def _buffer(self):
        try:
            return self._pool.get_nowait()
        except queue.Empty:
            # page-aligned anonymous memory: O_DIRECT writes take it without a copy
            return mmap.mmap(-1, self.chunk_size)

    def recycle(self, chunk):
        """Give a chunk back once it is written (full-size buffers are reused)."""
        if isinstance(chunk, mmap.mmap) and self._pool.qsize() < self._pool_max:
            self._pool.put(chunk)

    def _read_chunks(self):
        stream = self.source.stream
        while not self._stop.is_set():
            buf = self._buffer()
            view = memoryview(buf)
            n = readinto_full(stream, view)
            if n == 0:
                view.release()
                self.recycle(buf)
                return
            if n == self.chunk_size:
                view.release()
                data = buf
            else:
                data = view[:n].tobytes()
                view.release()
                self.recycle(buf)
            self.downloaded += n
            yield data

    def _zstd_out(self):
        try:
            out = self._zstd.stdout
            while True:
                buf = self._buffer()
                view = memoryview(buf)
                n = readinto_full(out, view)
                view.release()
                if n == 0:
                    self.recycle(buf)
                    break
                if n < self.chunk_size:
                    data = buf[:n]
                    self.recycle(buf)
                    buf = data
                if not self._emit(buf):
                    break
        except Exception as exc:  # pylint: disable=broad-except
            self._zstd_error = exc
            # nobody reads zstd's output any more: stop it, or the writer blocks on its input
            if self._zstd.poll() is None:
                self._zstd.kill()

    def _run(self):
        start = time.monotonic()
        try:
            chunks = self._read_chunks()
            first = next(chunks, None)
            if first is None:
                self._put(_EOF)
                return
            self.compression = detect_compression(bytes(first[:8]))
            if self.compression == 'zst':
                self._run_zstd(first, chunks)
            elif self.compression:
                dec = _Decompressor(self.compression, self.chunk_size)
                for data in self._chain(first, chunks):
                    for out in dec.feed(data):
                        if not self._emit_piece(out):
                            return
                for out in dec.finish(self.downloaded):
                    self._emit_piece(out)
                self._flush_pieces()
            else:
                for data in self._chain(first, chunks):
                    if not self._emit(data):
                        return
            self.digest = self.hasher.hexdigest()
            self.seconds = time.monotonic() - start
            self._put(_EOF)
        except Exception as exc:  # pylint: disable=broad-except
            self._put(exc)

    @staticmethod
    def _chain(first, rest):
        yield first
        yield from rest

    def _run_zstd(self, first, chunks):
        if not self.zstd_path:
            raise ByolError('The image is zstd-compressed: the zstd command is needed (install the package zstd '
                            'on the rescue system).')
        self._zstd_error = None
        # a pipe that streams: run_command cannot do that
        # pylint: disable-next=ansible-bad-function
        self._zstd = subprocess.Popen([self.zstd_path, '-d', '-c', '-q'], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0, close_fds=True)
        self._zstd_reader = threading.Thread(target=self._zstd_out, name='zstd-out')
        self._zstd_reader.daemon = True
        self._zstd_reader.start()
        try:
            for data in self._chain(first, chunks):
                self._zstd.stdin.write(data)
        except (IOError, OSError) as exc:
            if exc.errno != errno.EPIPE:
                self._zstd.kill()
                raise
        except BaseException:
            # the download failed: zstd must not take the cut input for the end of the image
            self._zstd.kill()
            raise
        finally:
            try:
                self._zstd.stdin.close()
            except (IOError, OSError):
                pass
        self._zstd_reader.join()
        stderr = self._zstd.stderr.read().decode('utf-8', 'replace')
        rc = self._zstd.wait()
        if self._stop.is_set():
            return
        if isinstance(self._zstd_error, ByolError):
            raise self._zstd_error
        if rc != 0 and 'premature end' in stderr or 'truncated' in stderr.lower():
            raise TruncatedError('the image is truncated: its zstd data ends before the end of its compressed stream '
                                 '(after %d downloaded bytes)' % self.downloaded)
        if rc != 0 or self._zstd_error:
            raise ByolError('zstd could not decompress the image: %s' % (stderr.strip() or self._zstd_error),
                            rc=rc, stderr=stderr)

    # -- consumer side ------------------------------------------------------------------------
    def start(self):
        self._thread = threading.Thread(target=self._run, name='image-pump')
        self._thread.daemon = True
        self._thread.start()
        return self

    def __iter__(self):
        if self._thread is None:
            self.start()
        while True:
            try:
                item = self.queue.get(timeout=1.0)
            except queue.Empty:
                if self.progress is not None:
                    self.progress.tick()
                continue
            if item is _EOF:
                return
            if isinstance(item, BaseException):
                self.error = item
                if isinstance(item, ByolError):
                    raise item
                detail = _describe_exception(item)[0]
                raise DownloadError(self.source.url, detail)
            yield item

    def stop(self):
        """Stop early (consumer refused the image); frees the producer thread."""
        self._stop.set()
        if self._zstd is not None and self._zstd.poll() is None:
            self._zstd.kill()
        while True:
            try:
                self.queue.get_nowait()
            except queue.Empty:
                break
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.source.close()

    def drain(self):
        """Read (and hash) the rest of the source without using it; returns produced bytes."""
        for _chunk in self:
            pass
        return self.produced


class Fetch(object):
    """The downloads of one run of ``byol_image_burn``: the request's URL, headers, TLS settings and retry policy;
    every retry is reported in ``result['retries']``, the digest of the downloaded bytes in ``result``."""

    def __init__(self, req, runner, progress, result, check_mode=False):
        self.req, self.runner, self.progress, self.result, self.check_mode = req, runner, progress, result, check_mode
        self.hash_type = req.get('checksum_type') or 'sha512'
        self.retry = RetryPolicy(retries=req.get('retries', 9), delay=req.get('retry_delay', 10),
                                 max_time=req.get('retry_max_time', 600))
        # every retry of the run, with its reason (the same list grows while the run goes on)
        result['retries'] = self.retry.reports

    def _kwargs(self):
        r = self.req
        return dict(headers=r['http_headers'], validate_certs=r['validate_certs'], ca_path=r.get('ca_path'),
                    timeout=r['timeout'], policy=self.retry)

    def resolve_checksum(self):
        """``checksum: <type>:<URL>``: the digest is the checksum file's entry for the image's file name. The file is
        fetched under the image's policy (redirects, retries); the image's headers go to it only when it has the
        image URL's origin."""
        url = self.req.get('checksum_url')
        if not url:
            return
        shown = redact_url(url)
        same = origin(url) == origin(self.req['url']) and not url.startswith('file://')
        kwargs = self._kwargs()
        kwargs['headers'] = self.req['http_headers'] if same else {}
        try:
            source = open_source(url, **kwargs)
            try:
                buf = bytearray(SUMS_MAX + 1)
                view = memoryview(buf)
                n = readinto_full(source.stream, view) if source.stream is not None else 0
                view.release()
            finally:
                source.close()
        except DownloadError as exc:
            prefix = 'Could not download image located: %s (' % shown
            detail = exc.msg[len(prefix):-1] if exc.msg.startswith(prefix) else exc.msg
            raise ByolError('Could not download the checksum file %s (%s)' % (shown, detail), checksum_url=shown,
                            http_status=exc.status)
        if n > SUMS_MAX:
            raise ByolError('The checksum file %s is larger than %d bytes: is it a checksum file?' % (shown, SUMS_MAX),
                            checksum_url=shown)
        text = bytes(buf[:n]).decode('utf-8', 'replace')
        name = image_file_name(self.req['url'])
        self.req['checksum'] = checksum_from_file(text, name, self.req['checksum_type'], shown)
        self.result['checksum_url'] = shown
        self.result['checksum_headers_sent'] = bool(same and self.req['http_headers'])

    def open(self):
        source = open_source(self.req['url'], **self._kwargs())
        if source.redirects:
            self.result['redirects'] = source.redirects
        return source

    def head(self):
        """The server's answer to HEAD, or None when it fails (outside check mode: the GET then tells)."""
        try:
            return head_source(self.req['url'], **self._kwargs())
        except DownloadError:
            if self.check_mode:
                raise
            return None

    def pump(self, source, limit=None, limit_error=None):
        zstd = self.runner.which('zstd', required=False)
        return ImagePump(source, hash_type=self.hash_type, progress=self.progress, zstd_path=zstd, limit=limit,
                         limit_error=limit_error)

    def start(self, source):
        self.progress.start('download', total=source.content_length)

    @staticmethod
    def collect_head(it):
        """Read chunks from iterator ``it`` until HEAD_SIZE bytes; returns (head_bytes, chunks)."""
        chunks = []
        size = 0
        for chunk in it:
            chunks.append(chunk)
            size += len(chunk)
            if size >= HEAD_SIZE:
                break
        head = b''.join(bytes(c) for c in chunks)[:HEAD_SIZE] if chunks else b''
        return head, chunks

    @staticmethod
    def chain(chunks, it):
        yield from chunks
        yield from it

    def done(self, pump):
        """Report what ``pump`` downloaded and produced."""
        self.result['downloaded_bytes'] = pump.downloaded
        self.result['compression'] = pump.compression
        self.result['image_bytes'] = pump.produced

    def check_digest(self, pump):
        digest = pump.digest
        self.result['checksum_type'] = self.hash_type
        self.result['checksum'] = digest
        if self.req.get('checksum') and digest != self.req['checksum']:
            raise ByolError('Bad checkSumType for downloaded file, got: %s while expecting %s.'
                            % (digest, self.req['checksum']), checksum_type=self.hash_type)

    def digest_only(self):
        """Download and hash without writing anything; returns the digest."""
        source = self.open()
        pump = self.pump(source)
        self.progress.start('verify', total=source.content_length)
        try:
            for _chunk in pump:
                self.progress.update(pump.downloaded)
        finally:
            source.close()
        self.progress.end(pump.downloaded)
        self.result['downloaded_bytes'] = pump.downloaded
        return pump.digest

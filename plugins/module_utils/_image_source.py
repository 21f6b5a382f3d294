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
import errno
import hashlib
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
    from urllib.parse import unquote
    from urllib.error import HTTPError, URLError
except ImportError:  # pragma: no cover
    raise

from ansible.module_utils.urls import open_url

from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError
from ansible_collections.baremetal.byol.plugins.module_utils._image_format import detect_compression
from ansible_collections.baremetal.byol.plugins.module_utils._image_request import redact_url

CHUNK_SIZE = 4 * 1024 * 1024
QUEUE_DEPTH = 6
_EOF = object()


class DownloadError(ByolError):
    """The guide's ``Could not download image located: <url>`` with the status or reason."""

    def __init__(self, url, detail, status=None):
        super(DownloadError, self).__init__('Could not download image located: %s (%s)' % (redact_url(url), detail),
                                            url=redact_url(url), http_status=status)
        self.status = status


class SourceInfo(object):
    """An opened source: ``stream`` (has ``readinto``), ``content_length``, validators."""

    def __init__(self, url, stream, content_length=None, etag=None, last_modified=None, status=None,
                 content_type=None):
        self.url = url
        self.stream = stream
        self.content_length = content_length
        self.etag = etag
        self.last_modified = last_modified
        self.status = status
        self.content_type = content_type

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


def _describe_exception(exc):
    if isinstance(exc, HTTPError):
        return 'HTTP status %d %s' % (exc.code, exc.reason or ''), exc.code
    if isinstance(exc, URLError):
        return 'reason: %s' % (exc.reason,), None
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return 'timed out: %s' % (exc,), None
    if isinstance(exc, ssl.SSLError):
        return 'TLS error: %s' % (exc,), None
    return '%s: %s' % (type(exc).__name__, exc), None


def open_source(url, headers=None, validate_certs=True, ca_path=None, timeout=30, method='GET'):
    """Open ``url`` and return a :class:`SourceInfo`; raises :class:`DownloadError`."""
    if url.startswith('file://'):
        path = _file_path(url)
        try:
            st = os.stat(path)
            stream = open(path, 'rb', buffering=0) if method == 'GET' else None
        except (IOError, OSError) as exc:
            raise DownloadError(url, 'reason: %s' % (exc.strerror or exc))
        return SourceInfo(url, stream, content_length=st.st_size,
                          etag='%d-%d-%d' % (st.st_ino, st.st_size, int(st.st_mtime)),
                          last_modified=str(int(st.st_mtime)), status=None)
    try:
        resp = open_url(url, headers=dict(headers or {}), method=method, validate_certs=validate_certs,
                        ca_path=ca_path, timeout=timeout, follow_redirects='safe' if method == 'HEAD' else 'urllib2',
                        decompress=False, use_netrc=False, http_agent='baremetal.byol-image-burn')
    except Exception as exc:  # pylint: disable=broad-except
        detail, status = _describe_exception(exc)
        raise DownloadError(url, detail, status=status)
    length = resp.headers.get('Content-Length')
    try:
        length = int(length) if length is not None else None
    except ValueError:
        length = None
    return SourceInfo(url, resp, content_length=length, etag=resp.headers.get('ETag'),
                      last_modified=resp.headers.get('Last-Modified'), status=getattr(resp, 'status', None),
                      content_type=resp.headers.get('Content-Type'))


def head_source(url, headers=None, validate_certs=True, ca_path=None, timeout=30):
    """Metadata of ``url`` without downloading it (HEAD); None where the server refuses HEAD."""
    try:
        info = open_source(url, headers, validate_certs, ca_path, timeout, method='HEAD')
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

    def __init__(self, kind, out_chunk):
        self.kind = kind
        self.out_chunk = out_chunk
        self._obj = self._new()

    def _new(self):
        if self.kind == 'gz':
            return zlib.decompressobj(wbits=47)
        if self.kind == 'xz':
            return lzma.LZMADecompressor()
        return bz2.BZ2Decompressor()

    def feed(self, data):
        """Yield decompressed pieces of at most ``out_chunk`` bytes for input ``data``."""
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

    def finish(self):
        if self.kind == 'gz':
            out = self._obj.flush()
            if out:
                yield out


class ImagePump(object):
    """Stream an opened source once: hash, decompress, and hand out chunks.

    Iterate over it for the (decompressed) chunks (``bytes``/``bytearray`` objects).
    ``downloaded`` (bytes read from the source), ``digest`` (hex, after the end),
    ``compression``, ``seconds`` are available afterwards.
    """

    def __init__(self, source, hash_type='sha512', progress=None, zstd_path=None, chunk_size=CHUNK_SIZE,
                 depth=QUEUE_DEPTH):
        self.source = source
        self.hasher = hashlib.new(hash_type)
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
            self.hasher.update(data)
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
                for out in dec.finish():
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

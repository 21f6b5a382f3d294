# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A real HTTP(S) server on 127.0.0.1 serving a directory of images (test tooling).

- threaded (stdlib ``http.server``), files sent with ``sendfile`` over plain HTTP;
- optionally requires an exact ``Authorization`` header (401 otherwise, the header is never logged);
- optionally TLS with a self-signed CA made with ``openssl`` (:func:`make_ca`), whose PEM is
  given to the module as ``ca_path``;
- :func:`write_checksums` writes ``<file>.sha512`` (and sha256/sha1/md5) beside each image,
  in ``sha512sum`` format.

In tests::

    with ImageServer(images_dir, auth='Basic dXNlcjpwdw==', tls=True, certdir=tmp) as srv:
        url = srv.url('byoi.raw'); ca = srv.ca_path

From a shell: ``python -m byollab.httpserve DIR --port 8080 --auth 'Basic ...' --tls CERTDIR``.

Misbehaviour on demand (for the download tests), through ``srv.faults`` (a :class:`Faults`; change it
between requests):

- ``redirects``: ``{'/path': (status, location)}``, ``location`` absolute (another port or scheme,
  another ImageServer) or relative; chains are several entries;
- ``presigned``: ``{'/path': 'signature'}``: the request must carry ``?sig=<signature>`` and no
  ``Authorization`` header (400 otherwise, as object stores answer a pre-signed URL with a second
  authorisation); ``auth`` (the server's) is not asked for there;
- ``statuses``: a list of ``(status, headers)`` answered (and consumed) before files are served,
  for example ``[(503, {'Retry-After': '1'}), (500, {})]``;
- ``cuts``: byte offsets of the file; a response that reaches one sends the bytes before it and
  closes the connection (each offset is used once); ``truncate``: every response ends at that
  offset while announcing the whole length (a server that always sends a short body);
- ``ranges`` (default True): honour ``Range``/``If-Range``; ``validators`` (default True): send
  ``ETag``/``Last-Modified``; ``chunked``: ``Transfer-Encoding: chunked`` (no length; a cut then
  falls inside a chunk); ``drip``: seconds to sleep after each 64 KiB sent; ``change_after_cut``:
  the ETag changes after each cut; ``after_cut``: a callable run with the offset after each cut's bytes
  were sent (to change the file "on the server" while it is downloaded);
- ``log``: every request as a dict (``method``, ``path``, ``headers`` with lower-case names).
"""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import ssl
import subprocess
import threading
import time
from urllib.parse import quote

CHECKSUM_TYPES = ('sha512', 'sha256', 'sha1', 'md5')
IMAGE_SUFFIXES = ('.raw', '.qcow2', '.img', '.xz', '.gz', '.zst', '.bz2')


def file_digest(path, checksum_type='sha512'):
    h = hashlib.new(checksum_type)
    with open(path, 'rb') as f:
        while True:
            block = f.read(4 * 1024 * 1024)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def write_checksums(directory, types=CHECKSUM_TYPES, suffixes=IMAGE_SUFFIXES):
    """Write ``<image>.<type>`` files for every image in ``directory``; returns {name: {type: hex}}."""
    out = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if not os.path.isfile(path) or not name.endswith(suffixes):
            continue
        out[name] = {}
        for t in types:
            digest = file_digest(path, t)
            out[name][t] = digest
            with open('%s.%s' % (path, t), 'w') as f:
                f.write('%s  %s\n' % (digest, name))
    return out


def make_ca(certdir, hostname='localhost'):
    """Self-signed CA + server certificate for 127.0.0.1/localhost. Returns (ca_pem, cert_pem, key_pem)."""
    os.makedirs(certdir, exist_ok=True)
    ca_key, ca_pem = os.path.join(certdir, 'ca.key'), os.path.join(certdir, 'ca.pem')
    key, csr, cert = (os.path.join(certdir, n) for n in ('server.key', 'server.csr', 'server.pem'))
    ext = os.path.join(certdir, 'server.ext')
    if all(os.path.exists(p) for p in (ca_pem, cert, key)):
        return ca_pem, cert, key

    def run(args):
        subprocess.run(args, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', ca_key, '-out', ca_pem,
         '-days', '30', '-subj', '/CN=byol lab test CA', '-addext', 'basicConstraints=critical,CA:TRUE',
         '-addext', 'keyUsage=critical,keyCertSign,cRLSign'])
    run(['openssl', 'req', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', csr, '-subj', '/CN=%s' % hostname])
    with open(ext, 'w') as f:
        f.write('subjectAltName=DNS:%s,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' % hostname)
    run(['openssl', 'x509', '-req', '-in', csr, '-CA', ca_pem, '-CAkey', ca_key, '-CAcreateserial', '-out', cert,
         '-days', '30', '-extfile', ext])
    return ca_pem, cert, key


class Faults(object):
    """What the server does wrong (see the module docstring); all off by default."""

    def __init__(self):
        self.redirects = {}
        self.presigned = {}
        self.statuses = []
        self.cuts = []
        self.truncate = None
        self.ranges = True
        self.validators = True
        self.chunked = False
        self.drip = 0.0
        self.change_after_cut = False
        self.etag_generation = 0
        self.after_cut = None
        self.on = False
        self.log = []
        self.lock = threading.Lock()

    def active(self):
        """Any fault set (once set, the server keeps answering through the faulty path, which also
        serves ranges: a fault used up must not change how the rest is served)."""
        if not self.on:
            self.on = bool(self.redirects or self.presigned or self.statuses or self.cuts or self.truncate is not None
                           or not self.ranges or not self.validators or self.chunked or self.drip
                           or self.change_after_cut)
        return self.on

    def take_cut(self, start, end):
        """The first cut offset in (start, end], removed; None when there is none."""
        with self.lock:
            for off in sorted(self.cuts):
                if start < off <= end:
                    self.cuts.remove(off)
                    if self.change_after_cut:
                        self.etag_generation += 1
                    return off
        return None


class _Handler(http.server.SimpleHTTPRequestHandler):
    server_version = 'byollab-httpserve/1'
    auth = None
    requests = None
    faults = None
    protocol_version = 'HTTP/1.1'

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        pass  # quiet, and never logs headers

    def _authorized(self):
        if self.auth is None:
            return True
        if self.headers.get('Authorization') == self.auth:
            return True
        self.send_response(401, 'Unauthorized')
        self.send_header('WWW-Authenticate', 'Basic realm="byol lab"')
        self.send_header('Content-Length', '0')
        self.end_headers()
        return False

    def _record(self):
        if self.requests is not None:
            self.requests.append((self.command, self.path))

    def _plain(self, status, text='', headers=None):
        body = text.encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)

    def _faulty(self):
        """Answer with the configured faults; False when the request is for the normal path."""
        faults = self.faults
        path, _sep, query = self.path.partition('?')
        faults.log.append(dict(method=self.command, path=self.path,
                               headers=dict((k.lower(), v) for k, v in self.headers.items())))
        if path in faults.redirects:
            status, location = faults.redirects[path]
            self._plain(status, 'moved', {'Location': location})
            return True
        with faults.lock:
            answer = faults.statuses.pop(0) if faults.statuses else None
        if answer is not None:
            self._plain(answer[0], 'try again', answer[1])
            return True
        if path in faults.presigned:
            params = dict(p.partition('=')[::2] for p in query.split('&') if p)
            if self.headers.get('Authorization') is not None:
                self._plain(400, 'Only one auth mechanism allowed')
                return True
            if params.get('sig') != faults.presigned[path]:
                self._plain(403, 'SignatureDoesNotMatch')
                return True
        elif not self._authorized():
            return True
        return self._send_file(path)

    def _send_file(self, path):
        faults = self.faults
        fs_path = self.translate_path(path)
        if not os.path.isfile(fs_path):
            self._plain(404, 'File not found')
            return True
        st = os.stat(fs_path)
        size = st.st_size
        etag = '"%x-%x-%d"' % (st.st_ino, st.st_mtime_ns, faults.etag_generation)
        last_modified = self.date_time_string(int(st.st_mtime))
        start = 0
        status = 200
        rng = self.headers.get('Range')
        if rng and faults.ranges and rng.startswith('bytes=') and rng.endswith('-'):
            if_range = self.headers.get('If-Range')
            if if_range is None or if_range in (etag, last_modified):
                start = int(rng[6:-1])
                status = 206
        end = size if faults.truncate is None else min(size, faults.truncate)
        self.send_response(status)
        if faults.validators:
            self.send_header('ETag', etag)
            self.send_header('Last-Modified', last_modified)
        if faults.ranges:
            self.send_header('Accept-Ranges', 'bytes')
        if status == 206:
            self.send_header('Content-Range', 'bytes %d-%d/%d' % (start, size - 1, size))
        if faults.chunked:
            self.send_header('Transfer-Encoding', 'chunked')
        else:
            self.send_header('Content-Length', str(size - start))
        self.end_headers()
        if self.command == 'HEAD':
            return True
        cut = faults.take_cut(start, end)
        stop = min(end, cut) if cut is not None else end
        with open(fs_path, 'rb') as f:
            f.seek(start)
            pos = start
            while pos < stop:
                block = f.read(min(64 * 1024, stop - pos))
                if faults.chunked:
                    self.wfile.write(b'%x\r\n' % (len(block) + (1 if pos + len(block) == stop and stop < size else 0)))
                    self.wfile.write(block)
                    if not (pos + len(block) == stop and stop < size):
                        self.wfile.write(b'\r\n')
                else:
                    self.wfile.write(block)
                pos += len(block)
                if faults.drip:
                    self.wfile.flush()
                    time.sleep(faults.drip)
        if stop < size:
            # the connection goes away mid-body (a chunked body in the middle of a chunk)
            self.wfile.flush()
            if cut is not None and faults.after_cut is not None:
                faults.after_cut(cut)
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return True
        if faults.chunked:
            self.wfile.write(b'0\r\n\r\n')
        return True

    def do_GET(self):
        self._record()
        if self.faults is not None and self.faults.active():
            self._faulty()
            return
        if self._authorized():
            super(_Handler, self).do_GET()

    def do_HEAD(self):
        self._record()
        if self.faults is not None and self.faults.active():
            self._faulty()
            return
        if self._authorized():
            super(_Handler, self).do_HEAD()

    def copyfile(self, source, outputfile):
        if isinstance(self.connection, ssl.SSLSocket):
            return super(_Handler, self).copyfile(source, outputfile)
        outputfile.flush()
        try:
            self.connection.sendfile(source)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return None


class ImageServer(object):
    """Serve ``directory`` on 127.0.0.1 (a free port unless ``port``); a context manager."""

    def __init__(self, directory, auth=None, tls=False, certdir=None, port=0, host='127.0.0.1'):
        self.directory = os.path.abspath(directory)
        self.auth = auth
        self.tls = tls
        self.certdir = certdir or os.path.join(self.directory, '.tls')
        self.host = host
        self.port = port
        self.ca_path = None
        self.requests = []
        self.faults = Faults()
        self.httpd = None
        self.thread = None

    def start(self):
        directory, auth, requests, faults = self.directory, self.auth, self.requests, self.faults

        class Handler(_Handler):
            def __init__(self, *a, **kw):
                kw['directory'] = directory
                super(Handler, self).__init__(*a, **kw)

        Handler.auth = auth
        Handler.requests = requests
        Handler.faults = faults
        self.httpd = http.server.ThreadingHTTPServer((self.host, self.port), Handler)
        self.httpd.daemon_threads = True
        if self.tls:
            ca_pem, cert, key = make_ca(self.certdir)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            self.ca_path = ca_pem
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name='httpserve')
        self.thread.daemon = True
        self.thread.start()
        return self

    def stop(self):
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def base_url(self):
        return '%s://%s:%d' % ('https' if self.tls else 'http', '127.0.0.1', self.port)

    def url(self, name):
        return '%s/%s' % (self.base_url, quote(name))


def main(argv=None):
    import argparse
    import time
    parser = argparse.ArgumentParser(description='Serve a directory of images on 127.0.0.1')
    parser.add_argument('directory')
    parser.add_argument('--port', type=int, default=8080)
    parser.add_argument('--auth', help='exact Authorization header value required (401 otherwise)')
    parser.add_argument('--tls', metavar='CERTDIR', help='serve HTTPS with a self-signed CA kept in CERTDIR')
    parser.add_argument('--checksums', action='store_true', help='write <image>.sha512 etc. first')
    args = parser.parse_args(argv)
    if args.checksums:
        write_checksums(args.directory)
    srv = ImageServer(args.directory, auth=args.auth, tls=bool(args.tls), certdir=args.tls, port=args.port).start()
    print('serving %s on %s%s' % (args.directory, srv.base_url, ' (CA: %s)' % srv.ca_path if srv.ca_path else ''),
          flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()
    return 0


if __name__ == '__main__':
    raise SystemExit(main())

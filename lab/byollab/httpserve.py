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
"""

from __future__ import annotations

import hashlib
import http.server
import os
import ssl
import subprocess
import threading
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


class _Handler(http.server.SimpleHTTPRequestHandler):
    server_version = 'byollab-httpserve/1'
    auth = None
    requests = None

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

    def do_GET(self):
        self._record()
        if self._authorized():
            super(_Handler, self).do_GET()

    def do_HEAD(self):
        self._record()
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
        self.httpd = None
        self.thread = None

    def start(self):
        directory, auth, requests = self.directory, self.auth, self.requests

        class Handler(_Handler):
            def __init__(self, *a, **kw):
                kw['directory'] = directory
                super(Handler, self).__init__(*a, **kw)

        Handler.auth = auth
        Handler.requests = requests
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

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Validation of a byol_image_burn request: pure, no I/O.

Do not use this from other collections or standalone plugins/modules!

Messages never contain HTTP header values (they may hold credentials) nor the user:password
part of a URL.
"""

from __future__ import annotations

import re

from ansible_collections.baremetal.byol.plugins.module_utils._errors import ValidationError

CHECKSUM_TYPES = {'md5': 32, 'sha1': 40, 'sha256': 64, 'sha512': 128}
IMAGE_TYPES = ('qcow2', 'raw')
MODES = ('disk', 'files')
URL_SCHEMES = ('http', 'https', 'file')
PAIR_MESSAGE = 'Please provide checkSum AND checkSumType or none of them'
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HEX = re.compile(r'^[0-9a-fA-F]+$')


def redact_url(url):
    """``https://user:pw@host/x`` -> ``https://***@host/x`` (anything else unchanged)."""
    if not url:
        return url
    return re.sub(r'^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@', r'\1***@', url)


def normalize_checksum(checksum, checksum_type):
    """Apply the guide's pair rule and return ``(checksum_lowercase, type)`` or ``(None, None)``.

    Accepts ``"sha512:<hex>"`` and the ``sha512sum`` line format ``"<hex>  filename"``.
    """
    checksum = (checksum or '').strip() or None
    checksum_type = (checksum_type or '').strip().lower() or None
    if bool(checksum) != bool(checksum_type):
        raise ValidationError(PAIR_MESSAGE)
    if not checksum:
        return None, None
    if checksum_type not in CHECKSUM_TYPES:
        raise ValidationError('checksum_type must be one of %s, got %r'
                              % (', '.join(sorted(CHECKSUM_TYPES)), checksum_type))
    if checksum.lower().startswith(checksum_type + ':'):
        checksum = checksum[len(checksum_type) + 1:]
    checksum = checksum.split()[0]
    if not _HEX.match(checksum) or len(checksum) != CHECKSUM_TYPES[checksum_type]:
        raise ValidationError('checksum must be %d hexadecimal digits for checksum_type %s, got %d characters'
                              % (CHECKSUM_TYPES[checksum_type], checksum_type, len(checksum)))
    return checksum.lower(), checksum_type


def validate_headers(headers):
    """Check HTTP header names and values; return a plain ``{str: str}``. Values never in messages."""
    out = {}
    for name, value in (headers or {}).items():
        name = str(name)
        if not _TOKEN.match(name):
            raise ValidationError('HTTP header name %r is not a valid header name' % name[:64])
        if value is None:
            raise ValidationError('HTTP header %s has no value' % name)
        value = str(value)
        if any(c in value for c in '\r\n\x00'):
            raise ValidationError('HTTP header %s has a value with a line break or NUL byte (value not shown)' % name)
        if name.lower() in ('host', 'content-length', 'transfer-encoding', 'connection'):
            raise ValidationError('HTTP header %s is set by the module and may not be given' % name)
        out[name] = value
    return out


def validate_url(url):
    url = (url or '').strip()
    if not url:
        raise ValidationError('url is required')
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise ValidationError('url %s contains whitespace or control characters' % redact_url(url)[:200])
    m = re.match(r'^([A-Za-z][A-Za-z0-9+.-]*)://', url)
    scheme = m.group(1).lower() if m else None
    if scheme not in URL_SCHEMES:
        raise ValidationError('url %s must start with http://, https:// or file://' % redact_url(url)[:200])
    if scheme == 'file' and not url[len('file://'):].startswith('/'):
        raise ValidationError('url %s must be file:///absolute/path' % redact_url(url)[:200])
    return url


def validate_request(params):
    """Validate module parameters (a dict); return a normalised copy. Raises ValidationError."""
    req = dict(params)
    req['url'] = validate_url(params.get('url'))
    if params.get('image_type') not in IMAGE_TYPES:
        raise ValidationError('image_type must be qcow2 or raw, got %r' % (params.get('image_type'),))
    mode = params.get('mode') or 'disk'
    if mode not in MODES:
        raise ValidationError('mode must be disk or files, got %r' % (mode,))
    req['mode'] = mode
    req['checksum'], req['checksum_type'] = normalize_checksum(params.get('checksum'), params.get('checksum_type'))
    req['http_headers'] = validate_headers(params.get('http_headers'))
    if mode == 'disk':
        if not params.get('device'):
            raise ValidationError('mode disk needs device (the whole disk to write, for example /dev/sda)')
        if not str(params['device']).startswith('/dev/'):
            raise ValidationError('device must be a path under /dev, got %r' % (params['device'],))
    else:
        dest = params.get('dest') or '/tmp/a'
        if not dest.startswith('/') or dest.rstrip('/') == '':
            raise ValidationError('dest must be an absolute directory other than /, got %r' % (dest,))
        req['dest'] = dest.rstrip('/') or '/'
    if params.get('stage_only') and mode != 'files':
        raise ValidationError('stage_only is for mode files (BYOL): with mode disk the image is checked while it is '
                              'written, and a failed check wipes what was written')
    if params.get('staged'):
        if mode != 'files':
            raise ValidationError('staged is for mode files (BYOL)')
        if params.get('stage_only'):
            raise ValidationError('stage_only and staged are mutually exclusive: stage first, then copy the staged image')
        if not str(params['staged']).startswith('/'):
            raise ValidationError('staged must be an absolute path, got %r' % (params['staged'],))
    timeout = params.get('timeout')
    if timeout is not None and timeout <= 0:
        raise ValidationError('timeout must be a positive number of seconds, got %r' % (timeout,))
    for name in ('retries', 'retry_delay', 'retry_max_time'):
        value = params.get(name)
        if value is not None and value < 0:
            raise ValidationError('%s must be 0 or more, got %r' % (name, value))
    interval = params.get('progress_interval')
    if interval is not None and not 0 < interval <= 30:
        raise ValidationError('progress_interval must be between 1 and 30 seconds, got %r' % (interval,))
    if params.get('scratch_dir') and not str(params['scratch_dir']).startswith('/'):
        raise ValidationError('scratch_dir must be an absolute path, got %r' % (params['scratch_dir'],))
    return req

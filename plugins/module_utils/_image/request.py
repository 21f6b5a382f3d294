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

try:
    from urllib.parse import unquote, urlsplit
except ImportError:  # pragma: no cover
    raise

from ansible_collections.baremetal.byol.plugins.module_utils import _rules as rules
from ansible_collections.baremetal.byol.plugins.module_utils._errors import ValidationError

# The rules for the URL, the headers and the checksum live in _rules.py: the payload filter
# applies the same ones.
CHECKSUM_TYPES = rules.CHECKSUM_LENGTHS
IMAGE_TYPES = ('qcow2', 'raw')
MODES = ('disk', 'files')
URL_SCHEMES = rules.URL_SCHEMES
PAIR_MESSAGE = rules.CHECKSUM_PAIR_MSG
redact_url = rules.redact_url


def normalize_checksum(checksum, checksum_type):
    """Apply the guide's pair rule and return ``(checksum_lowercase, type)`` or ``(None, None)``.

    Accepts ``"sha512:<hex>"`` and the ``sha512sum`` line format ``"<hex>  filename"``.
    """
    pair, problems = rules.checksum(checksum, checksum_type, 'checksum', 'checksum_type')
    rules.enforce(problems)
    return pair


def validate_headers(headers):
    """Check HTTP header names and values; return a plain ``{str: str}``. Values never in messages."""
    rules.enforce(rules.check_headers(headers or {}, 'http_headers'))
    return rules.header_dict(headers)


def validate_url(url):
    rules.enforce(rules.check_url(url, 'url'))
    return url


def validate_tree(path, field):
    """A target tree argument, resolved; refused when it is / or a directory of the rescue system."""
    resolved, problems = rules.check_tree(path, field)
    rules.enforce(problems)
    return resolved


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
    req['checksum_url'] = None
    if req['checksum'] and '://' in req['checksum']:
        # <type>:<URL> of a checksum file: the digest is its entry for the image's file name (resolved by the module)
        req['checksum_url'], req['checksum'] = req['checksum'], None
    req['http_headers'] = validate_headers(params.get('http_headers'))
    if mode == 'disk':
        if not params.get('device'):
            raise ValidationError('mode disk needs device (the whole disk to write, for example /dev/sda)')
        if not str(params['device']).startswith('/dev/'):
            raise ValidationError('device must be a path under /dev, got %r' % (params['device'],))
    else:
        dest = params.get('dest') or '/tmp/a'
        validate_tree(dest, 'dest')
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


# ---------------------------------------------------------------------------------------------
# checksum files (SHA256SUMS style)

_SUMS_GNU_RE = re.compile(r'\\?([0-9A-Fa-f]+) [ *]?(.+)')
_SUMS_BSD_RE = re.compile(r'\\?(MD5|SHA1|SHA256|SHA512) ?\((.+)\) ?= ?([0-9A-Fa-f]+)')


def image_file_name(url):
    """The file name a checksum file lists the image under: the last path component of its URL, decoded."""
    path = urlsplit(url).path if not url.startswith('file://') else url[len('file://'):]
    return unquote(path.rstrip('/').rsplit('/', 1)[-1])


def checksum_from_file(text, name, checksum_type, shown_url):
    """The digest (lower-case hex) that checksum file ``text`` gives for ``name``; raises ValidationError.

    Lines ``<hex>  <name>`` / ``<hex> *<name>`` (sha256sum and friends) and BSD ``SHA256 (<name>) = <hex>`` (as
    Fedora publishes them, inside a PGP-signed text: other lines are ignored). A name may carry a leading ``./``.
    BSD lines of another algorithm are not entries; GNU lines are entries when their hex has the length of the
    algorithm's digests. No entry, or more than one, is refused.
    """
    want = CHECKSUM_TYPES[checksum_type]
    found = []
    for line in text.splitlines():
        line = line.strip()
        bsd = _SUMS_BSD_RE.fullmatch(line)
        if bsd:
            algo, entry, digest = bsd.group(1).lower(), bsd.group(2), bsd.group(3)
            if algo != checksum_type:
                continue
        else:
            gnu = _SUMS_GNU_RE.fullmatch(line)
            if not gnu or len(gnu.group(1)) != want:
                continue
            digest, entry = gnu.group(1), gnu.group(2)
        if entry.startswith('./'):
            entry = entry[2:]
        if entry == name:
            if len(digest) != want:
                raise ValidationError('The checksum file %s gives %s a %d-digit digest, but a %s digest has %d hex '
                                      'digits' % (shown_url, rules._show(name), len(digest), checksum_type, want))
            found.append(digest.lower())
    if not found:
        raise ValidationError('The checksum file %s has no %s entry for %s (the file name of the image URL): check '
                              'the URL of the checksum file and the checksum type'
                              % (shown_url, checksum_type, rules._show(name)))
    if len(found) > 1:
        raise ValidationError('The checksum file %s has %d %s entries for %s: it must have exactly one'
                              % (shown_url, len(found), checksum_type, rules._show(name)))
    return found[0]

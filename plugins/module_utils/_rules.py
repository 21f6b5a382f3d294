# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The request rules and their constants: one home for what a valid field is.

Do not use this from other collections or standalone plugins/modules!

Both sides of the collection call these functions, so a value is judged by the same code
whichever way it arrives:

* the controller's filters (``ovh_payload``, ``byol_request`` through :mod:`._payload`) collect
  every problem of a request and report them together;
* the modules (:mod:`._configdrive`, :mod:`._image.request`, the layout planner :mod:`._layout`)
  stop at the first one (:func:`enforce`), before any disk is touched.

Every ``check_*`` function returns a list of problems (messages; empty when the value is fine)
and takes the name the caller gives the field (``imageURL`` on the controller, ``url`` in
``byol_image_burn``). Messages never show HTTP header values nor the ``user:password@`` part of
a URL. Pure: only :func:`check_tree` resolves a path (``os.path.realpath``), without writing.
"""

from __future__ import annotations

import base64
import binascii
import os
import posixpath
import re
import unicodedata

from ansible_collections.baremetal.byol.plugins.module_utils._errors import ValidationError

# ---------------------------------------------------------------------------------------
# characters

# Unicode categories refused in every name: control (C0, DEL, C1), format (soft hyphen,
# zero-width characters, bidi controls such as U+202E), line and paragraph separators,
# surrogates (undecodable bytes) and unassigned code points.
BAD_CATEGORIES = ('Cc', 'Cf', 'Zl', 'Zp', 'Cs', 'Cn')
# ... and, where a name must be plain (host names, mount points, LVM and pool names, labels),
# every space separator too (U+0020, NBSP U+00A0, U+2007, U+202F...).
PLAIN_BAD_CATEGORIES = BAD_CATEGORIES + ('Zs',)


def bad_characters(text, plain=False, allow=''):
    """The characters of ``text`` that a name may not hold (in order, each once)."""
    categories = PLAIN_BAD_CATEGORIES if plain else BAD_CATEGORIES
    found = []
    for char in text:
        if char in allow or char in found:
            continue
        if unicodedata.category(char) in categories or (plain and char.isspace()):
            found.append(char)
    return found


def describe_characters(chars):
    """``U+000A, U+202E`` for the messages (the characters themselves may not print)."""
    return ', '.join('U+%04X' % ord(c) for c in chars[:5]) + (', ...' if len(chars) > 5 else '')


def enforce(problems):
    """Raise :class:`ValidationError` with the first problem (the modules' way); else return."""
    if problems:
        raise ValidationError(problems[0], errors=list(problems))


def _show(value, limit=80):
    """``repr`` of a value, cut to ``limit`` characters (long hostile values stay readable)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + '...'


def as_int(value):
    """A whole number given as int or as a decimal string (JSON from web forms); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r'-?[0-9]{1,18}', value.strip()):
        return int(value.strip())
    return None


# ---------------------------------------------------------------------------------------
# host names (RFC 1123)

HOSTNAME_MAX = 253
HOSTNAME_LABEL_RE = re.compile(r'[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?')


def check_hostname(name, field='hostname'):
    """A host name: dot-separated labels of letters, digits and hyphens (FQDN allowed, no trailing dot)."""
    if not isinstance(name, str) or not name:
        return ['%s must be a non-empty string' % field]
    bad = bad_characters(name, plain=True)
    if bad:
        return ['%s %s contains whitespace, control or format characters (%s)'
                % (field, _show(name), describe_characters(bad))]
    if len(name) > HOSTNAME_MAX:
        return ['%s %s is %d characters long; at most %d are allowed (RFC 1123)'
                % (field, _show(name), len(name), HOSTNAME_MAX)]
    for label in name.split('.'):
        if not HOSTNAME_LABEL_RE.fullmatch(label):
            return ['%s %s is not a valid RFC 1123 host name: every dot-separated label must be 1-63 characters of '
                    'letters, digits and hyphens, not starting or ending with a hyphen (bad label %s)'
                    % (field, _show(name), _show(label))]
    return []


# ---------------------------------------------------------------------------------------
# SSH public keys (OpenSSH authorized_keys lines, without options)

SSH_KEY_TYPES = (
    'ssh-ed25519', 'ssh-rsa', 'ssh-dss',
    'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', 'ecdsa-sha2-nistp521',
    'sk-ssh-ed25519@openssh.com', 'sk-ecdsa-sha2-nistp256@openssh.com',
    'ssh-ed25519-cert-v01@openssh.com', 'ssh-rsa-cert-v01@openssh.com', 'ssh-dss-cert-v01@openssh.com',
    'ecdsa-sha2-nistp256-cert-v01@openssh.com', 'ecdsa-sha2-nistp384-cert-v01@openssh.com',
    'ecdsa-sha2-nistp521-cert-v01@openssh.com',
    'sk-ssh-ed25519-cert-v01@openssh.com', 'sk-ecdsa-sha2-nistp256-cert-v01@openssh.com',
)
SSH_BLOB_RE = re.compile(r'[A-Za-z0-9+/]+={0,2}')
# refused in a key comment besides control/format characters: shell metacharacters
SSH_COMMENT_BAD = '`$;|&<>\\"\'(){}'


def ssh_key_lines(value):
    """``sshKey`` as the API gives it (one key, or several on separate lines) or a list -> a list."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        return [line.strip() for line in value.splitlines() if line.strip()]
    return value


def check_ssh_key(key, field='ssh_keys[0]'):
    """One OpenSSH public key line ``<type> <base64> [comment]``: known type, matching key data, plain comment."""
    if not isinstance(key, str):
        return ['%s must be a string (an OpenSSH public key line)' % field]
    if any(c in key for c in '\x00\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029'):
        return ['%s must be exactly one line: give one key per line or list item' % field]
    fields = key.strip().split(None, 2)
    if len(fields) < 2:
        return ['%s is not an OpenSSH public key (expected "<type> <base64> [comment]")' % field]
    ktype, blob = fields[0], fields[1]
    comment = fields[2] if len(fields) > 2 else ''
    if ktype not in SSH_KEY_TYPES:
        return ['%s has unknown key type %s (options such as from= or command= are not accepted); known types: %s'
                % (field, _show(ktype[:64]), ', '.join(SSH_KEY_TYPES))]
    if not SSH_BLOB_RE.fullmatch(blob) or len(blob) % 4:
        return ['%s: the key data is not valid base64' % field]
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return ['%s: the key data is not valid base64' % field]
    if len(raw) < 4:
        return ['%s: the key data is truncated' % field]
    length = int.from_bytes(raw[:4], 'big')
    if raw[4:4 + length] != ktype.encode('ascii'):
        return ['%s: the key data does not hold a %s key (truncated or mislabelled key?)' % (field, ktype)]
    if bad_characters(comment) or any(c in SSH_COMMENT_BAD for c in comment):
        return ['%s: the key comment contains control or shell characters; use plain text such as user@host' % field]
    return []


def normalize_ssh_keys(keys):
    """Valid key lines -> ``type base64 [comment]`` lines, duplicates (same key data) removed, order kept."""
    out = []
    seen = set()
    for key in keys:
        fields = key.strip().split(None, 2)
        if fields[1] in seen:
            continue
        seen.add(fields[1])
        out.append(' '.join(fields))
    return out


# ---------------------------------------------------------------------------------------
# image URLs

URL_SCHEMES = ('http', 'https', 'file')
_URL_RE = re.compile(r'([A-Za-z][A-Za-z0-9+.-]*)://(.*)', re.S)


def redact_url(url):
    """``https://user:pw@host/x`` -> ``https://***@host/x`` (anything else unchanged)."""
    if not isinstance(url, str) or not url:
        return url
    return re.sub(r'^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@', r'\1***@', url)


def check_url(url, field='url'):
    """An ``http://``, ``https://`` or ``file:///`` URL, one line, without credentials in it."""
    if not isinstance(url, str) or not url:
        return ['%s is required: an http://, https:// or file:/// URL' % field]
    shown = _show(redact_url(url), 200)
    if any(c.isspace() for c in url) or bad_characters(url):
        return ['%s %s contains whitespace or control characters (percent-encode them)' % (field, shown)]
    match = _URL_RE.fullmatch(url)
    scheme = match.group(1).lower() if match else None
    if scheme not in URL_SCHEMES:
        return ['%s %s must start with http://, https:// or file://' % (field, shown)]
    rest = match.group(2)
    if scheme == 'file':
        if not rest.startswith('/'):
            return ['%s %s must be file:///absolute/path' % (field, shown)]
        return []
    authority = re.split(r'[/?#]', rest, maxsplit=1)[0]
    if '@' in authority:
        return ['%s must not contain credentials (user:password@); give them as an Authorization HTTP header, '
                'which is never shown' % field]
    if not authority or authority.startswith(':'):
        return ['%s %s has no host name' % (field, shown)]
    return []


# ---------------------------------------------------------------------------------------
# HTTP request headers

HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 7230 token
# Set by the module itself, or hop-by-hop / framing headers a request may not override.
RESERVED_HEADERS = ('host', 'content-length', 'transfer-encoding', 'connection', 'range', 'te', 'trailer',
                    'upgrade', 'keep-alive', 'expect', 'proxy-connection')


def _header_value_ok(text):
    # field-value (RFC 7230): visible ASCII, space, tab and obs-text (Latin-1 without the C1 controls)
    return all(c == '\t' or ' ' <= c <= '~' or '\xa0' <= c <= '\xff' for c in text)


def check_headers(headers, field='http_headers'):
    """Header names (tokens, not reserved, each once whatever its case) and values. Values are never shown."""
    if not isinstance(headers, dict):
        return ['%s must be a mapping of header names to values' % field]
    problems = []
    seen = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not HEADER_NAME_RE.fullmatch(name):
            problems.append('HTTP header name %s is not valid: use letters, digits and !#$%%&\'*+.^_`|~- only'
                            % _show(name if isinstance(name, str) else str(name), 64))
            continue
        if name.lower() in seen:
            problems.append('%s names the header %s twice (as %s and %s; header names are case-insensitive)'
                            % (field, name.lower(), seen[name.lower()], name))
            continue
        seen[name.lower()] = name
        if name.lower() in RESERVED_HEADERS:
            problems.append('HTTP header %s is set by the module and may not be given' % name)
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            problems.append('HTTP header %s must have a string value' % name)
            continue
        text = str(value)
        if not _header_value_ok(text):
            problems.append('HTTP header %s: its value may hold only printable ASCII or Latin-1 characters, no line '
                            'break, NUL or other control character (value not shown)' % name)
        elif text != text.strip():
            problems.append('HTTP header %s: its value must not start or end with whitespace' % name)
    return problems


def header_dict(headers):
    """Valid headers as a plain ``{str: str}``."""
    return dict((str(name), str(value)) for name, value in (headers or {}).items())


# ---------------------------------------------------------------------------------------
# checksums

CHECKSUM_LENGTHS = {'md5': 32, 'sha1': 40, 'sha256': 64, 'sha512': 128}
CHECKSUM_PAIR_MSG = 'Please provide checkSum AND checkSumType or none of them'


CHECKSUM_URL_RE = re.compile(r'(md5|sha1|sha256|sha512):((?:https?|file)://.*)', re.I | re.S)


def checksum(value, value_type, field='checksum', type_field='checksum_type'):
    """The checksum pair: ``((hex, type) or (None, None), problems)``.

    The guide's pair rule first. ``value`` may be the bare hex digest, ``<type>:<hex>`` or a
    ``sha512sum`` line ``<hex>  <file name>``; it is returned in lower case. As Ansible's ``get_url`` takes
    it, ``<type>:<URL>`` names a checksum file (``SHA256SUMS`` style) that holds the digest: returned as
    ``(URL, type)``, unchanged (the type may then be left out).
    """
    empty = (None, None)
    value = value.strip() if isinstance(value, str) else value
    value_type = value_type.strip().lower() if isinstance(value_type, str) else value_type
    url_form = CHECKSUM_URL_RE.fullmatch(value) if isinstance(value, str) else None
    if url_form is None and isinstance(value, str) and value_type in CHECKSUM_LENGTHS:
        # the URL and its type given apart (what the request filter hands the module)
        url_form = CHECKSUM_URL_RE.fullmatch('%s:%s' % (value_type, value))
    if url_form:
        prefix = url_form.group(1).lower()
        if value_type not in (None, '') and value_type != prefix:
            return empty, ['%s names a %s checksum file but %s is %s' % (field, prefix, type_field, _show(value_type))]
        problems = check_url(url_form.group(2), '%s (checksum file URL)' % field)
        return ((url_form.group(2), prefix), []) if not problems else (empty, problems)
    if (value in (None, '')) != (value_type in (None, '')):
        return empty, [CHECKSUM_PAIR_MSG]
    if value in (None, ''):
        return empty, []
    if value_type not in CHECKSUM_LENGTHS:
        return empty, ['%s %s is not supported: use md5, sha1, sha256 or sha512' % (type_field, _show(value_type))]
    if not isinstance(value, str):
        return empty, ['%s must be a hexadecimal %s digest' % (field, value_type)]
    if value.lower().startswith(value_type + ':'):
        value = value[len(value_type) + 1:]
    value = (value.split() or [''])[0]
    if not re.fullmatch(r'[0-9A-Fa-f]+', value):
        return empty, ['%s must be a hexadecimal %s digest' % (field, value_type)]
    if len(value) != CHECKSUM_LENGTHS[value_type]:
        return empty, ['%s has %d hex digits but a %s digest has %d'
                       % (field, len(value), value_type, CHECKSUM_LENGTHS[value_type])]
    return (value.lower(), value_type), []


# ---------------------------------------------------------------------------------------
# mount points and target trees

NAME_MAX = 255     # bytes of one path component (Linux)
PATH_MAX = 4096    # bytes of a path, its terminating NUL included (Linux)


def check_mount_point(mount_point, field='mount_point', root=None):
    """An absolute, clean mount point (``swap`` is the caller's business) that fits the kernel's limits.

    ``root``: the tree it is mounted under (the resolved ``mount_root``), counted in the path length.
    """
    if not isinstance(mount_point, str) or not mount_point:
        return ['%s must be an absolute path or swap' % field]
    bad = bad_characters(mount_point, plain=True)
    if bad:
        return ['%s %s must not contain whitespace, control or format characters (%s)'
                % (field, _show(mount_point), describe_characters(bad))]
    if not mount_point.startswith('/'):
        return ['%s %s must be an absolute path (start with /) or swap' % (field, _show(mount_point))]
    parts = mount_point.split('/')
    if any(p in ('.', '..') for p in parts):
        return ['%s %s must not contain . or .. components' % (field, _show(mount_point))]
    clean = posixpath.normpath(mount_point)
    if clean.startswith('//'):
        clean = clean[1:]
    if clean != mount_point:
        return ['%s %s is not a clean absolute path (did you mean %s?)' % (field, _show(mount_point), clean)]
    longest = max(len(p.encode('utf-8')) for p in parts)
    if longest > NAME_MAX:
        return ['%s %s has a component of %d bytes; at most %d are allowed (NAME_MAX)'
                % (field, _show(mount_point, 60), longest, NAME_MAX)]
    full = (root.rstrip('/') if root else '') + mount_point
    if len(full.encode('utf-8')) >= PATH_MAX:
        return ['%s is %d bytes long%s; a path may have at most %d (PATH_MAX)'
                % (field, len(full.encode('utf-8')), ' under %s' % root if root else '', PATH_MAX - 1)]
    return []


# Directories of the rescue system that are never a target tree, and the pseudo filesystems
# nothing below which is one.
SYSTEM_DIRS = ('/', '/bin', '/boot', '/dev', '/etc', '/home', '/lib', '/lib32', '/lib64', '/libx32', '/opt', '/proc',
               '/root', '/run', '/sbin', '/srv', '/sys', '/tmp', '/usr', '/var',
               '/usr/bin', '/usr/sbin', '/usr/lib', '/usr/lib32', '/usr/lib64', '/usr/libexec', '/usr/local',
               '/usr/share', '/var/lib', '/var/log', '/var/cache', '/var/tmp', '/var/run', '/run/lock')
PSEUDO_TREES = ('/dev', '/proc', '/sys')


def check_tree(path, field='mount_root', realpath=os.path.realpath):
    """A target tree (``mount_root``, ``dest``, ``root``): ``(resolved path, problems)``.

    Resolved (``..``, ``.``, ``//`` and symbolic links) before it is compared: a tree that is
    ``/`` or a directory of the rescue system (or below ``/dev``, ``/proc``, ``/sys``) is refused.
    """
    if not isinstance(path, str) or not path.startswith('/'):
        return None, ['%s must be an absolute directory path, got %s' % (field, _show(path))]
    bad = bad_characters(path)
    if bad:
        return None, ['%s %s contains control or format characters (%s)' % (field, _show(path), describe_characters(bad))]
    try:
        resolved, error = realpath(path), None
    except OSError as exc:   # a link the kernel will not let us read (/proc/<pid>/root on Python < 3.13)
        resolved, error = posixpath.normpath(path), exc
    if resolved.startswith('//'):
        resolved = '/' + resolved.lstrip('/')
    if resolved in SYSTEM_DIRS or any(resolved.startswith(p + '/') for p in PSEUDO_TREES):
        return resolved, ['%s %s resolves to %s, a directory of the rescue system: give the installed tree '
                          '(for example /tmp/a)' % (field, _show(path), resolved)]
    if error is not None:
        return resolved, ['%s %s cannot be resolved: %s' % (field, _show(path), error.strerror or error)]
    if len(resolved.encode('utf-8')) >= PATH_MAX:
        return resolved, ['%s is %d bytes long; a path may have at most %d (PATH_MAX)'
                          % (field, len(resolved.encode('utf-8')), PATH_MAX - 1)]
    return resolved, []


# ---------------------------------------------------------------------------------------
# LVM, ZFS and filesystem labels

LVM_NAME_RE = re.compile(r'[A-Za-z0-9+_.][A-Za-z0-9+_.-]*')
LVM_NAME_MAX = 127
# lvm(8) "VALID NAMES" (lvm2's apply_lvname_restrictions): LV names may not be these, begin with
# snapshot or pvmove, nor contain the suffixes of LVM's internal sub-volumes.
LV_RESERVED = ('.', '..')
LV_RESERVED_PREFIXES = ('snapshot', 'pvmove')
LV_RESERVED_PARTS = ('_cdata', '_cmeta', '_corig', '_cpool', '_cvol', '_dmeta', '_imeta', '_iorig', '_mimage',
                     '_mlog', '_pmspare', '_rimage', '_rmeta', '_tdata', '_tmeta', '_vdata', '_vorigin', '_wcorig')
VG_RESERVED = ('.', '..')

ZPOOL_NAME_RE = re.compile(r'[A-Za-z][A-Za-z0-9_.:-]*')
ZPOOL_NAME_MAX = 255
# zpool(8): reserved names, and names beginning with them; c<digit> looks like a disk
ZPOOL_RESERVED = ('mirror', 'raidz', 'draid', 'spare', 'log')
ZPOOL_RESERVED_PREFIXES = ('mirror', 'raidz', 'draid', 'spare')


def _plain_name(name, field, what):
    if not isinstance(name, str) or not name:
        return ['%s must be a non-empty string (%s)' % (field, what)]
    bad = bad_characters(name, plain=True)
    if bad:
        return ['%s %s must not contain whitespace, control or format characters (%s)'
                % (field, _show(name), describe_characters(bad))]
    return []


def check_lv_name(name, field='lv_name'):
    """An LVM logical volume name (lvm(8) "VALID NAMES")."""
    problems = _plain_name(name, field, 'an LVM logical volume name')
    if problems:
        return problems
    if not LVM_NAME_RE.fullmatch(name) or len(name) > LVM_NAME_MAX:
        return ['%s %s is not a valid LVM name: 1-%d letters, digits, + _ . - only, not starting with a hyphen'
                % (field, _show(name), LVM_NAME_MAX)]
    reserved = [p for p in LV_RESERVED_PARTS if p in name]
    if name in LV_RESERVED or name.startswith(LV_RESERVED_PREFIXES) or reserved:
        return ['%s %s is reserved by LVM: a logical volume may not be called . or .., begin with snapshot or pvmove, '
                'nor contain %s (lvm(8), VALID NAMES)' % (field, _show(name), ', '.join(LV_RESERVED_PARTS))]
    return []


def check_vg_name(name, field='vg_name'):
    """An LVM volume group name (lvm(8) "VALID NAMES"; whether /dev/<name> exists is the caller's business)."""
    problems = _plain_name(name, field, 'an LVM volume group name')
    if problems:
        return problems
    if not LVM_NAME_RE.fullmatch(name) or len(name) > LVM_NAME_MAX or name in VG_RESERVED:
        return ['%s %s is not a valid LVM name: 1-%d letters, digits, + _ . - only, not starting with a hyphen'
                % (field, _show(name), LVM_NAME_MAX)]
    return []


def check_zpool_name(name, field='zpool_name'):
    """A ZFS pool name (zpool(8)): a letter first, then letters, digits, ``_ . : -``; not a reserved word."""
    problems = _plain_name(name, field, 'a ZFS pool name')
    if problems:
        return problems
    if not ZPOOL_NAME_RE.fullmatch(name) or len(name) > ZPOOL_NAME_MAX:
        return ['%s %s is not a valid ZFS pool name: start with a letter; letters, digits, _ . : - only, at most %d'
                % (field, _show(name), ZPOOL_NAME_MAX)]
    if name in ZPOOL_RESERVED or name.startswith(ZPOOL_RESERVED_PREFIXES) or re.match(r'c[0-9]', name):
        return ['%s %s is reserved by ZFS: a pool may not be called log nor begin with mirror, raidz, draid, spare '
                'or c and a digit (zpool(8))' % (field, _show(name))]
    return []


def check_label(label, max_bytes, field='label'):
    """A filesystem label: plain characters, no slash, at most ``max_bytes`` bytes (the filesystem's limit)."""
    problems = _plain_name(label, field, 'a filesystem label')
    if problems:
        return problems
    if '/' in label or len(label.encode('utf-8')) > max_bytes:
        return ['%s %s must be at most %d bytes without a slash' % (field, _show(label), max_bytes)]
    return []


# ---------------------------------------------------------------------------------------
# sizes

CONFIGDRIVE_MAX_MIB = 1024


def check_size_mib(value, field='size'):
    """A partition size in MiB: a whole number, 0 (fill the remaining space) or more."""
    size = as_int(value)
    if size is None or size < 0:
        return ['%s %s must be a whole number of MiB (0 = fill the remaining space)' % (field, _show(value))]
    return []


def check_configdrive_size(value, field='size', allow_zero=False):
    """The config drive's size in MiB: 1 to :data:`CONFIGDRIVE_MAX_MIB` (``allow_zero``: 0 = no room kept)."""
    size = as_int(value)
    low = 0 if allow_zero else 1
    if size is None or not low <= size <= CONFIGDRIVE_MAX_MIB:
        return ['%s %s must be a whole number of MiB from %d to %d (the config drive holds at most 1 MiB of user '
                'data; 64 is the default)' % (field, _show(value), low, CONFIGDRIVE_MAX_MIB)]
    return []


# ---------------------------------------------------------------------------------------
# config drive user data, meta-data (OpenStack Nova's limits) and instance ids

# Decoded user data limit. OpenStack Nova stores at most 65535 bytes of base64; bare-metal
# installers (OVHcloud) accept more, and cloud-init itself has no limit. 1 MiB keeps the drive far from full.
USER_DATA_MAX = 1024 * 1024
META_MAX_ITEMS = 128
META_KEY_MAX = 255
META_VALUE_MAX = 255
META_KEY_RE = re.compile(r'[a-zA-Z0-9\-_:. ]{1,%d}' % META_KEY_MAX)
INSTANCE_ID_RE = re.compile(r'[A-Za-z0-9][A-Za-z0-9._:-]{0,254}')


def meta_text(value):
    """A meta-data value as the drive stores it (numbers and booleans as strings); None if not scalar."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return value
    return None


def check_meta_data(meta, field='meta_data'):
    """Key/value meta-data: at most 128 items, keys of Nova's characters, one-line string values of 255 at most."""
    if not isinstance(meta, dict):
        return ['%s must be a mapping of key/value strings' % field]
    problems = []
    if len(meta) > META_MAX_ITEMS:
        problems.append('%s has %d items; OpenStack allows at most %d' % (field, len(meta), META_MAX_ITEMS))
    for key, value in meta.items():
        if not isinstance(key, str) or not META_KEY_RE.fullmatch(key):
            problems.append('%s key %s is invalid: keys are 1-%d characters of letters, digits, space, "-", "_", ":" '
                            'and "."' % (field, _show(key), META_KEY_MAX))
            continue
        text = meta_text(value)
        if text is None:
            problems.append('%s[%s] must be a string (or a number/boolean), not %s; OpenStack metadata values are '
                            'strings' % (field, _show(key), type(value).__name__))
        elif len(text) > META_VALUE_MAX:
            problems.append('%s[%s] is %d characters long; OpenStack allows at most %d'
                            % (field, _show(key), len(text), META_VALUE_MAX))
        elif bad_characters(text):
            problems.append('%s[%s] contains control, format or line-separator characters (%s)'
                            % (field, _show(key), describe_characters(bad_characters(text))))
    return problems


def check_instance_id(instance_id, field='instance_id'):
    """An instance id: cloud-init makes a directory of it."""
    if not isinstance(instance_id, str) or not INSTANCE_ID_RE.fullmatch(instance_id):
        return ['%s %s is invalid: use 1-255 characters of letters, digits, ".", "_", ":" and "-", starting with a '
                'letter or digit (a UUID is best)' % (field, _show(instance_id))]
    return []

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The install request: OVHcloud reinstall payloads and the roles' snake_case arguments.

Do not use this from other collections or standalone plugins/modules!

Pure logic, no I/O. Two steps:

* :func:`translate` reads an OVHcloud ``POST /dedicated/server/{serviceName}/reinstall``
  payload (``operatingSystem: byoi_64 | byolinux_64``, ``customizations``, ``storage``) with
  the guides' camelCase names, refuses unknown fields (naming them), and returns the roles'
  ``byol_*`` arguments.
* :func:`validate_request` checks a dict of ``byol_*`` arguments, wherever they came from
  (payload, host vars, role parameters): required fields per installer, the checksum pair
  rule with the BYOI guide's message, hostnames, SSH keys, HTTP headers, the layout's shape.

Every problem found is collected; :class:`~._errors.ValidationError` carries them all in
``errors`` and joins them in its message. Messages never contain the values of secrets
(HTTP header values, user data).
"""

from __future__ import annotations

import difflib
import re

from ansible_collections.baremetal.byol.plugins.module_utils import _fstable
from ansible_collections.baremetal.byol.plugins.module_utils import _rules as rules
from ansible_collections.baremetal.byol.plugins.module_utils._errors import ValidationError

OPERATING_SYSTEMS = {'byoi_64': 'byoi', 'byolinux_64': 'byol'}
INSTALLERS = ('byoi', 'byol')

CHECKSUM_PAIR_MSG = rules.CHECKSUM_PAIR_MSG

CHECKSUM_LENGTHS = rules.CHECKSUM_LENGTHS
IMAGE_TYPES = ('qcow2', 'raw')
FILESYSTEMS = tuple(sorted(_fstable.NAMES))
RAID_LEVELS = (0, 1, 5, 6, 7, 10)
URL_SCHEMES = rules.URL_SCHEMES

TOP_LEVEL_FIELDS = ('operatingSystem', 'customizations', 'storage', 'userMetadata')

# customizations field -> role argument
CUSTOMIZATIONS = {
    'hostname': 'byol_hostname',
    'sshKey': 'byol_ssh_keys',
    'imageURL': 'byol_image_url',
    'imageType': 'byol_image_type',
    'imageCheckSum': 'byol_image_checksum',
    'imageCheckSumType': 'byol_image_checksum_type',
    'configDriveUserData': 'byol_user_data',
    'configDriveMetadata': 'byol_meta_data',
    'httpHeaders': 'byol_http_headers',
    'efiBootloaderPath': 'byol_efi_bootloader_path',
}
USER_METADATA = ('efiBootloaderPath',) + tuple(k for k in CUSTOMIZATIONS if k != 'efiBootloaderPath')
STORAGE_FIELDS = ('diskGroupId', 'partitioning', 'hardwareRaid')
PARTITIONING_FIELDS = ('disks', 'layout', 'schemeName')
LAYOUT_FIELDS = ('mountPoint', 'fileSystem', 'size', 'raidLevel', 'extras')
EXTRAS_FIELDS = ('lv', 'zp')

HARDWARE_RAID_MSG = (
    'storage[%d].hardwareRaid is not supported: configuring a hardware RAID controller needs the '
    "vendor's own tools (storcli, perccli, ssacli...), which a generic rescue system does not have. "
    'Configure the array on the controller before the reinstall: it is then seen here as one disk, '
    'which you select with diskGroupId.')

# Role arguments that validate_request knows; everything else is passed through untouched.
REQUEST_KEYS = (
    'byol_image_url', 'byol_image_type', 'byol_image_checksum', 'byol_image_checksum_type',
    'byol_http_headers', 'byol_hostname', 'byol_ssh_keys', 'byol_user_data', 'byol_meta_data',
    'byol_efi_bootloader_path', 'byol_disk_group_id', 'byol_disk_count', 'byol_layout',
)

# The rules for each field (host names, SSH keys, URLs, headers, checksums, names, sizes, meta-data)
# live in _rules.py: the modules apply the same ones.
USER_DATA_MAX = rules.USER_DATA_MAX
# byolinux_64 without storage: one root filesystem filling the disk(s), RAID 1 across several disks.
# byol_partition adds the ESP (UEFI) or BIOS boot partition (GPT + legacy) and keeps room for the config drive.
DEFAULT_LAYOUT = ({'mount_point': '/', 'fs_type': 'ext4', 'size': 0, 'raid_level': 1},)  # generous; byol_configdrive enforces the config drive's own limit


def _suggest(name, candidates):
    """`` (did you mean X?)`` for a misspelt field name, else ``''``."""
    lowered = dict((c.lower(), c) for c in candidates)
    if name.lower() in lowered:
        return ' (did you mean %s?)' % lowered[name.lower()]
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.7)
    return ' (did you mean %s?)' % match[0] if match else ''


def _unknown(errors, where, mapping, allowed):
    for key in mapping:
        if key not in allowed:
            errors.append('Unknown field %s%s%s; allowed fields here: %s'
                          % (where, key, _suggest(str(key), allowed), ', '.join(allowed)))


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


_as_int = rules.as_int


def _user_metadata(value, errors):
    """``userMetadata`` as a dict: the API's list of ``{key, value}`` or a plain mapping."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        out = {}
        for i, item in enumerate(value):
            if not isinstance(item, dict) or set(item) != {'key', 'value'}:
                errors.append('userMetadata[%d] must be an object with exactly the fields key and value' % i)
                continue
            out[item['key']] = item['value']
        return out
    errors.append('userMetadata must be an object or a list of {key, value} objects')
    return {}


def _headers(value, errors, where):
    """``httpHeaders`` as a dict (a mapping, or a list of ``{key, value}``)."""
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        out = {}
        for i, item in enumerate(value):
            if not isinstance(item, dict) or set(item) != {'key', 'value'}:
                errors.append('%s[%d] must be an object with exactly the fields key and value' % (where, i))
                continue
            out[item['key']] = item['value']
        return out
    errors.append('%s must be an object mapping header names to values' % where)
    return None


def _layout_item(item, index, errors, where):
    if not isinstance(item, dict):
        errors.append('%s[%d] must be an object' % (where, index))
        return None
    here = '%s[%d].' % (where, index)
    _unknown(errors, here, item, LAYOUT_FIELDS)
    out = {}
    if 'mountPoint' not in item:
        errors.append('%smountPoint is required' % here)
    else:
        out['mount_point'] = item['mountPoint']
    if 'fileSystem' not in item:
        errors.append('%sfileSystem is required' % here)
    else:
        out['fs_type'] = item['fileSystem']
    out['size'] = item.get('size', 0)
    if item.get('raidLevel') is not None:
        out['raid_level'] = item['raidLevel']
    extras = item.get('extras')
    if extras is not None:
        if not isinstance(extras, dict):
            errors.append('%sextras must be an object' % here)
        else:
            _unknown(errors, here + 'extras.', extras, EXTRAS_FIELDS)
            for key, target in (('lv', 'lv_name'), ('zp', 'zpool_name')):
                sub = extras.get(key)
                if sub is None:
                    continue
                if not isinstance(sub, dict):
                    errors.append('%sextras.%s must be an object with a name' % (here, key))
                    continue
                _unknown(errors, '%sextras.%s.' % (here, key), sub, ('name',))
                if not sub.get('name'):
                    errors.append('%sextras.%s.name is required' % (here, key))
                else:
                    out[target] = sub['name']
    return out


def _storage(storage, installer, errors):
    """``storage`` list -> dict of role arguments."""
    args = {}
    if storage is None:
        return args
    if not isinstance(storage, list):
        errors.append('storage must be a list')
        return args
    if len(storage) > 1:
        errors.append('storage has %d entries; one entry (one disk group) is supported per reinstall' % len(storage))
    for i, entry in enumerate(storage[:1]):
        where = 'storage[%d].' % i
        if not isinstance(entry, dict):
            errors.append('storage[%d] must be an object' % i)
            continue
        _unknown(errors, where, entry, STORAGE_FIELDS)
        if entry.get('hardwareRaid'):
            errors.append(HARDWARE_RAID_MSG % i)
        if entry.get('diskGroupId') is not None:
            args['byol_disk_group_id'] = entry['diskGroupId']
        part = entry.get('partitioning')
        if part is None:
            continue
        if not isinstance(part, dict):
            errors.append('%spartitioning must be an object' % where)
            continue
        _unknown(errors, where + 'partitioning.', part, PARTITIONING_FIELDS)
        if part.get('disks') is not None:
            args['byol_disk_count'] = part['disks']
        layout = part.get('layout')
        if layout is not None:
            if installer == 'byoi':
                errors.append('%spartitioning.layout is not used by byoi_64: the image carries its own partition table '
                              '(use byolinux_64 for a custom layout)' % where)
            elif not isinstance(layout, list):
                errors.append('%spartitioning.layout must be a list' % where)
            else:
                items = [_layout_item(item, n, errors, where + 'partitioning.layout') for n, item in enumerate(layout)]
                args['byol_layout'] = [item for item in items if item is not None]
    return args


def installer_of(payload):
    """``byoi`` or ``byol`` from a payload's ``operatingSystem``; ValidationError otherwise."""
    if not isinstance(payload, dict):
        msg = 'The install request must be an object (OVHcloud reinstall payload), got %s' % type(payload).__name__
        raise ValidationError(msg, errors=[msg])
    osname = payload.get('operatingSystem')
    if osname not in OPERATING_SYSTEMS:
        hint = ''
        if isinstance(osname, str) and osname.lower() in ('boylinux_64', 'byol', 'byolinux'):
            hint = ' (did you mean byolinux_64?)'
        elif isinstance(osname, str) and osname.lower() in ('byoi', 'byoi64'):
            hint = ' (did you mean byoi_64?)'
        msg = 'operatingSystem must be byoi_64 or byolinux_64, got %r%s' % (osname, hint)
        raise ValidationError(msg, errors=[msg])
    return OPERATING_SYSTEMS[osname]


def translate(payload, installer=None):
    """OVHcloud reinstall payload -> role arguments; raises ValidationError (see :func:`translate_collect`)."""
    args, errors = translate_collect(payload, installer=installer)
    if errors:
        raise ValidationError('; '.join(errors), errors=errors)
    return args


def translate_collect(payload, installer=None):
    """OVHcloud reinstall payload -> dict of the roles' ``byol_*`` arguments (plus ``byol_installer``).

    Only fields present in the payload appear in the result, so it can be combined over role
    defaults. ``installer`` (``byoi``/``byol``), when given, must match ``operatingSystem``.
    Returns ``(args, errors)``: ``errors`` lists structural problems (unknown fields, wrong
    types, ``hardwareRaid``). An invalid ``operatingSystem`` raises ValidationError at once.
    The result is not validated semantically: pass it through :func:`validate_request`
    (:func:`ovh_payload` does both and reports the problems of both steps together).
    """
    found = installer_of(payload)
    errors = []
    if installer and installer != found:
        errors.append('This payload is for %s (operatingSystem %s) but the %s installer was asked for; '
                      'use the baremetal.byol.%s role or the reinstall playbook, which picks the role by operatingSystem'
                      % (found, payload['operatingSystem'], installer, found))
    _unknown(errors, '', payload, TOP_LEVEL_FIELDS)
    args = {'byol_installer': found}

    custom = payload.get('customizations')
    if custom is None:
        custom = {}
    if not isinstance(custom, dict):
        errors.append('customizations must be an object')
        custom = {}
    _unknown(errors, 'customizations.', custom, tuple(CUSTOMIZATIONS))

    meta = _user_metadata(payload.get('userMetadata'), errors)
    _unknown(errors, 'userMetadata.', meta, USER_METADATA)
    for key, value in meta.items():
        if key in custom and custom[key] != value:
            errors.append('%s is given both in customizations and in userMetadata with different values; give it once'
                          % key)
    merged = dict(meta)
    merged.update(custom)

    for key, target in CUSTOMIZATIONS.items():
        if key not in merged or merged[key] is None:
            continue
        value = merged[key]
        if key == 'sshKey':
            value = rules.ssh_key_lines(value)
        elif key == 'httpHeaders':
            value = _headers(value, errors, 'customizations.httpHeaders')
            if value is None:
                continue
        elif key == 'imageCheckSumType' and isinstance(value, str):
            value = value.lower()
        args[target] = value

    args.update(_storage(payload.get('storage'), found, errors))
    return args, errors


# ---------------------------------------------------------------- validation of role arguments

def _empty(value):
    return value is None or value == '' or value == [] or value == {}


def check_hostname(name):
    """Problems with ``name`` as an RFC 1123 host name (the rule of :mod:`._rules`)."""
    return rules.check_hostname(name, 'hostname')


def check_ssh_key(key, index=0):
    """Problems with one SSH public key line (OpenSSH ``authorized_keys`` format, no options)."""
    return rules.check_ssh_key(key, 'sshKey' if index is None else 'sshKey[%d]' % index)


def check_headers(headers):
    """Problems with HTTP headers. Messages name the header, never show its value."""
    return rules.check_headers(headers, 'httpHeaders')


def check_url(url):
    return rules.check_url(url, 'imageURL')


def check_layout(layout):
    """Shape of a snake_case layout (the partition planner checks the rules between items)."""
    if not isinstance(layout, list):
        return ['layout must be a list']
    problems = []
    allowed = ('mount_point', 'fs_type', 'size', 'raid_level', 'lv_name', 'zpool_name')
    for i, item in enumerate(layout):
        where = 'layout[%d]' % i
        if not isinstance(item, dict):
            problems.append('%s must be an object' % where)
            continue
        for key in item:
            if key not in allowed:
                problems.append('Unknown field %s.%s%s' % (where, key, _suggest(str(key), allowed)))
        mp = item.get('mount_point')
        if mp != 'swap':
            problems.extend(rules.check_mount_point(mp, where + '.mount_point'))
        fs = item.get('fs_type')
        if fs not in FILESYSTEMS:
            problems.append('%s: fileSystem %r is not supported; use one of %s' % (where, fs, ', '.join(FILESYSTEMS)))
        problems.extend(rules.check_size_mib(item.get('size', 0), where + '.size'))
        if item.get('raid_level') is not None:
            level = _as_int(item['raid_level'])
            if level not in RAID_LEVELS:
                levels = ', '.join(str(r) for r in RAID_LEVELS)
                problems.append('%s: raidLevel %r is not one of %s' % (where, item['raid_level'], levels))
        if item.get('lv_name') is not None and item.get('zpool_name') is not None:
            problems.append('%s: extras.lv and extras.zp exclude each other' % where)
        if item.get('lv_name') is not None:
            problems.extend(rules.check_lv_name(item['lv_name'], where + '.lv_name'))
        if item.get('zpool_name') is not None:
            problems.extend(rules.check_zpool_name(item['zpool_name'], where + '.zpool_name'))
    return problems


def validate_request(args, installer, boot_mode='auto'):
    """Validate and normalise the ``byol_*`` arguments of one installation.

    ``installer`` is ``byoi`` or ``byol``; ``boot_mode`` ``uefi``, ``legacy`` or ``auto`` (the
    EFI loader is then required only once pre-flight knows the boot mode). Returns a new dict
    (unknown keys kept as they are); raises ValidationError listing every problem.
    """
    if installer not in INSTALLERS:
        msg = 'installer must be byoi or byol, got %r' % (installer,)
        raise ValidationError(msg, errors=[msg])
    out = dict(args)
    errors = []
    for key in REQUEST_KEYS:
        if _empty(out.get(key)):
            out[key] = None

    if out['byol_image_url'] is None:
        errors.append('imageURL (byol_image_url) is required')
    else:
        errors.extend(check_url(out['byol_image_url']))

    itype = out['byol_image_type']
    if itype is None and installer == 'byol':
        itype = out['byol_image_type'] = 'qcow2'
    if itype is None:
        errors.append('imageType (byol_image_type) is required: qcow2 or raw')
    elif itype not in IMAGE_TYPES:
        errors.append('imageType %r is not supported: use qcow2 or raw' % (itype,))

    (csum, ctype), problems = rules.checksum(out['byol_image_checksum'], out['byol_image_checksum_type'],
                                             'imageCheckSum', 'imageCheckSumType')
    errors.extend(problems)
    if csum is not None:
        out['byol_image_checksum'], out['byol_image_checksum_type'] = csum, ctype

    if out['byol_hostname'] is not None:
        errors.extend(check_hostname(out['byol_hostname']))

    keys = out['byol_ssh_keys']
    if keys is not None:
        keys = out['byol_ssh_keys'] = rules.ssh_key_lines(keys)
        if not isinstance(keys, list):
            errors.append('sshKey must be a string or a list of strings')
        else:
            for i, key in enumerate(keys):
                errors.extend(check_ssh_key(key, i))

    headers = out['byol_http_headers']
    if headers is not None:
        errors.extend(check_headers(headers))

    user_data = out['byol_user_data']
    if user_data is not None:
        if not isinstance(user_data, str):
            errors.append('configDriveUserData must be a string (#cloud-config, a script, or their base64)')
        elif len(user_data.encode('utf-8')) > USER_DATA_MAX:
            errors.append('configDriveUserData is %d bytes; at most %d are accepted'
                          % (len(user_data.encode('utf-8')), USER_DATA_MAX))

    meta = out['byol_meta_data']
    if meta is not None:
        errors.extend(rules.check_meta_data(meta, 'configDriveMetadata'))

    loader = out['byol_efi_bootloader_path']
    if loader is None:
        if installer == 'byoi' and boot_mode == 'uefi':
            errors.append('efiBootloaderPath (byol_efi_bootloader_path) is required to install an image on a UEFI '
                          'server, for example \\efi\\debian\\grubx64.efi')
    elif not isinstance(loader, str) or any(c in loader for c in '\r\n\0') or not loader.strip():
        errors.append('efiBootloaderPath must be a single-line path such as \\efi\\debian\\grubx64.efi')
    elif '..' in re.split(r'[\\/]+', loader):
        errors.append('efiBootloaderPath %r must not contain .. components' % loader)

    group = out['byol_disk_group_id']
    if group is None:
        out['byol_disk_group_id'] = 0
    elif _as_int(group) is None or _as_int(group) < 0:
        errors.append('diskGroupId %r must be a whole number, 0 or more (0 = the default group)' % (group,))
    else:
        out['byol_disk_group_id'] = _as_int(group)

    count = out['byol_disk_count']
    if count is not None:
        if _as_int(count) is None or _as_int(count) < 1:
            errors.append('partitioning.disks %r must be a whole number, 1 or more' % (count,))
        else:
            out['byol_disk_count'] = _as_int(count)
            if installer == 'byoi' and out['byol_disk_count'] != 1:
                errors.append('byoi_64 writes the image onto one disk; partitioning.disks must be 1 or absent, got %d'
                              % out['byol_disk_count'])

    layout = out['byol_layout']
    if layout is not None:
        if installer == 'byoi':
            errors.append('A partition layout is not used by byoi_64: the image carries its own partition table')
        else:
            problems = check_layout(layout)
            errors.extend(problems)
            if not problems:
                norm = []
                for item in layout:
                    item = dict(item)
                    item['size'] = _as_int(item.get('size', 0))
                    if item.get('raid_level') is not None:
                        item['raid_level'] = _as_int(item['raid_level'])
                    norm.append(item)
                out['byol_layout'] = norm
    elif installer == 'byol':
        out['byol_layout'] = [dict(item) for item in DEFAULT_LAYOUT]

    if errors:
        raise ValidationError('; '.join(errors), errors=errors)
    out['byol_installer'] = installer
    return out


def ovh_payload(payload, installer=None, boot_mode='auto', defaults=None):
    """Translate and validate an OVHcloud payload in one step (the ``ovh_payload`` filter).

    ``defaults`` are ``byol_*`` arguments the payload's fields are laid over (the roles pass
    their own arguments); the problems of the translation and of the validation are reported
    together.
    """
    args, errors = translate_collect(payload, installer=installer)
    merged = dict(defaults or {})
    merged.update(args)
    try:
        result = validate_request(merged, args['byol_installer'], boot_mode=boot_mode)
    except ValidationError as exc:
        errors.extend(e for e in exc.extra.get('errors', [exc.msg]) if e not in errors)
    if errors:
        raise ValidationError('; '.join(errors), errors=errors)
    return result

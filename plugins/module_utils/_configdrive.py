# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Config drive content (OpenStack config-drive v2) and placement planning. PURE.

Do not use this from other collections or standalone plugins/modules!

Everything here takes data and returns data: validation of the user's input, the bytes of
each file of the drive, the network config derived from ``ip -j addr``/``ip -j route``
output, the stable instance uuid, and where the partition goes on the disk. The writer
(:mod:`._configdrive_writer`) does the I/O.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
import uuid

from ansible_collections.baremetal.byol.plugins.module_utils import _rules as rules
from ansible_collections.baremetal.byol.plugins.module_utils._errors import ValidationError, ByolError

MIB = 1024 * 1024
LABEL = 'config-2'
BASE_DIR = 'openstack/latest'
META_DATA = BASE_DIR + '/meta_data.json'
USER_DATA = BASE_DIR + '/user_data'
NETWORK_DATA = BASE_DIR + '/network_data.json'
VENDOR_DATA = BASE_DIR + '/vendor_data.json'
MANAGED_FILES = (META_DATA, USER_DATA, NETWORK_DATA, VENDOR_DATA)

# The rules for the user's values (host name, SSH keys, meta-data, instance id, size) live in
# _rules.py: the payload filter applies the same ones.
USER_DATA_MAX = rules.USER_DATA_MAX
META_MAX_ITEMS = rules.META_MAX_ITEMS
META_KEY_MAX = rules.META_KEY_MAX
META_VALUE_MAX = rules.META_VALUE_MAX
INSTANCE_ID_RE = rules.INSTANCE_ID_RE
# Namespace of the derived instance uuids (uuid5 of a fixed name, never changes).
UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, 'configdrive.baremetal.byol')

SSH_KEY_TYPES = rules.SSH_KEY_TYPES
_B64_RE = re.compile(r'^[A-Za-z0-9+/]+={0,2}$')


# ---------------------------------------------------------------------------------------
# validation


def validate_hostname(hostname):
    """Return ``hostname`` if it is a valid RFC 1123 host name (FQDN allowed), else raise."""
    rules.enforce(rules.check_hostname(hostname, 'hostname'))
    return hostname


def validate_ssh_key(key, index=0):
    """Validate one OpenSSH public key line; return ``(type, base64, comment)``.

    The key must be ``<type> <base64> [comment]`` on one line, with a known type whose name
    matches the one encoded in the key blob. Options (``from=...``, ``command=...``) are refused.
    """
    rules.enforce(rules.check_ssh_key(key, 'ssh_keys[%d]' % index))
    fields = key.strip().split(None, 2)
    return fields[0], fields[1], fields[2] if len(fields) > 2 else ''


def validate_ssh_keys(keys):
    """Normalised key lines (``type base64 [comment]``), duplicates removed, order kept."""
    if keys is None:
        return []
    if isinstance(keys, str):
        keys = [keys]
    for i, key in enumerate(keys):
        validate_ssh_key(key, i)
    return rules.normalize_ssh_keys(keys)


def validate_meta(meta):
    """Validate ``meta_data`` against Nova's limits; return a dict of str -> str."""
    if meta is None:
        return {}
    rules.enforce(rules.check_meta_data(meta, 'meta_data'))
    return dict((key, rules.meta_text(value)) for key, value in meta.items())


def validate_instance_id(instance_id):
    """An instance id given by the user: cloud-init uses it as a directory name."""
    rules.enforce(rules.check_instance_id(instance_id, 'instance_id'))
    return instance_id


def validate_size(size):
    """Size in MiB of a new config drive partition (None: the default, 64)."""
    if size is None:
        return 64
    rules.enforce(rules.check_configdrive_size(size, 'size'))
    return rules.as_int(size)


def _is_text(raw):
    """UTF-8 without control characters other than tab, newline, carriage return and form feed."""
    try:
        text = raw.decode('utf-8')
    except UnicodeDecodeError:
        return False
    return not re.search(r'[\x00-\x08\x0b\x0e-\x1f\x7f]', text)


def decode_user_data(user_data, encoding='auto', limit=USER_DATA_MAX):
    """Bytes to write as ``user_data`` and how they were read (``base64`` or ``plain``).

    ``auto``: the text is base64 only if it is strictly base64 (alphabet, padding, length a
    multiple of 4 after removing line breaks) AND the decoded bytes are UTF-8 text without
    control characters, or gzip data; anything else (``#cloud-config``, ``#!/bin/sh``, a word
    such as ``AAAA``, ...) is plain text and kept byte for byte (UTF-8). ``base64`` and
    ``plain`` force the interpretation.
    """
    if user_data is None:
        return None, None
    if not isinstance(user_data, str):
        raise ValidationError('user_data must be a string (#cloud-config, a script, or their base64)')
    if encoding not in ('auto', 'base64', 'plain'):
        raise ValidationError('user_data_encoding must be auto, base64 or plain')
    decoded = None
    if encoding in ('auto', 'base64'):
        compact = re.sub(r'[\r\n]', '', user_data.strip())
        if compact and _B64_RE.match(compact) and len(compact) % 4 == 0:
            try:
                raw = base64.b64decode(compact, validate=True)
            except (binascii.Error, ValueError):
                raw = None
            if raw is not None:
                if encoding == 'base64' or raw[:2] == b'\x1f\x8b' or _is_text(raw):
                    decoded = raw
        if decoded is None and encoding == 'base64':
            raise ValidationError('user_data is not valid base64 (user_data_encoding=base64); '
                                  'encode it with "base64 -w0" or set user_data_encoding to auto')
    if decoded is not None:
        how = 'base64'
        data = decoded
    else:
        how = 'plain'
        data = user_data.encode('utf-8', 'surrogateescape')
    if not data:
        raise ValidationError('user_data is empty; leave it out instead')
    if len(data) > limit:
        raise ValidationError('user_data is %d bytes (%s); at most %d bytes are accepted. Shorten it, or '
                              'fetch the rest from the network in a script (for example with #include).'
                              % (len(data), 'after base64 decoding' if how == 'base64' else 'as plain text', limit))
    return data, how


# ---------------------------------------------------------------------------------------
# content


def derive_instance_id(identity):
    """A stable UUID for this server: uuid5 over ``identity`` (a list of strings).

    The writer passes the machine's SMBIOS UUID (when readable), the disk's WWN/serial (or
    its path) and the hostname. The same server, disk and hostname always get the same id.
    """
    name = '\n'.join(str(p or '') for p in identity)
    return str(uuid.uuid5(UUID_NAMESPACE, name))


def _json_bytes(data):
    return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + '\n').encode('utf-8')


def build_meta_data(instance_id, hostname=None, ssh_keys=(), meta=None):
    """The ``meta_data.json`` dict (Nova's field names; cloud-init reads uuid, hostname, public_keys, meta)."""
    md = {'uuid': instance_id, 'meta': dict(meta or {})}
    if hostname:
        md['hostname'] = hostname
        md['name'] = hostname.split('.')[0]
    if ssh_keys:
        md['public_keys'] = dict(('key-%d' % (i + 1), k) for i, k in enumerate(ssh_keys))
        md['keys'] = [{'name': 'key-%d' % (i + 1), 'type': 'ssh', 'data': k} for i, k in enumerate(ssh_keys)]
    return md


def validate_network_data(nd):
    """Basic shape check of a user-supplied network_data dict (links/networks/services lists)."""
    if not isinstance(nd, dict):
        raise ValidationError('network_data must be a dictionary (OpenStack network_data.json), "auto" or "dhcp"')
    unknown = sorted(k for k in nd if k not in ('links', 'networks', 'services'))
    if unknown:
        raise ValidationError('network_data has unknown top-level keys %s; OpenStack network_data.json has '
                              'links, networks and services' % ', '.join(unknown))
    for key in ('links', 'networks', 'services'):
        if key in nd and not isinstance(nd[key], list):
            raise ValidationError('network_data.%s must be a list' % key)
    link_ids = set()
    for i, link in enumerate(nd.get('links', [])):
        if not isinstance(link, dict) or not link.get('id') or not link.get('type'):
            raise ValidationError('network_data.links[%d] needs at least "id" and "type"' % i)
        link_ids.add(link['id'])
    for i, net in enumerate(nd.get('networks', [])):
        if not isinstance(net, dict) or not net.get('type') or not net.get('link'):
            raise ValidationError('network_data.networks[%d] needs at least "type" and "link"' % i)
        if net['link'] not in link_ids:
            raise ValidationError('network_data.networks[%d] refers to link %r which is not in network_data.links'
                                  % (i, net['link']))
    return nd


def build_files(instance_id, hostname=None, ssh_keys=(), meta=None, user_data=None, network_data=None,
                vendor_data=None):
    """Map of drive path -> bytes for every managed file that should exist.

    A managed file that is not in the map (user_data, network_data.json) must be absent.
    """
    files = {
        META_DATA: _json_bytes(build_meta_data(instance_id, hostname, ssh_keys, meta)),
        VENDOR_DATA: _json_bytes(vendor_data if vendor_data is not None else {}),
    }
    if user_data is not None:
        files[USER_DATA] = user_data
    if network_data is not None:
        files[NETWORK_DATA] = _json_bytes(network_data)
    return files


def instance_id_from_meta(content):
    """The ``uuid`` of an existing meta_data.json (bytes), or None if unreadable."""
    try:
        md = json.loads(content.decode('utf-8'))
    except (ValueError, UnicodeDecodeError, AttributeError):
        return None
    value = md.get('uuid') if isinstance(md, dict) else None
    if isinstance(value, str) and INSTANCE_ID_RE.fullmatch(value):
        return value
    return None


def compare_files(desired, existing):
    """Per managed file: ``created``, ``updated``, ``removed`` or ``unchanged``.

    ``existing`` maps drive path -> bytes for the managed files found on the drive.
    """
    status = {}
    for path in MANAGED_FILES:
        want = desired.get(path)
        have = existing.get(path)
        if want is None and have is None:
            continue
        if want is None:
            status[path] = 'removed'
        elif have is None:
            status[path] = 'created'
        elif want != have:
            status[path] = 'updated'
        else:
            status[path] = 'unchanged'
    return status


def _show(path, content, show_user_data):
    if content is None:
        return ''
    if path == USER_DATA and not show_user_data:
        return '<user data: %d bytes, hidden; set show_user_data_in_diff to show it>\n' % len(content)
    try:
        return content.decode('utf-8')
    except UnicodeDecodeError:
        return '<binary: %d bytes>\n' % len(content)


def build_diff(desired, existing, status, show_user_data=False):
    """Ansible ``diff`` list for the files that change (user data redacted unless asked)."""
    diffs = []
    for path in MANAGED_FILES:
        st = status.get(path)
        if st in (None, 'unchanged'):
            continue
        diffs.append({
            'before_header': '%s (%s)' % (path, 'absent' if existing.get(path) is None else 'on the drive'),
            'after_header': '%s (%s)' % (path, 'absent' if desired.get(path) is None else st),
            'before': _show(path, existing.get(path), show_user_data),
            'after': _show(path, desired.get(path), show_user_data),
        })
    return diffs


# ---------------------------------------------------------------------------------------
# network_data.json from the rescue system's own interfaces


def _netmask(family, prefixlen):
    if family == 'inet':
        return str(ipaddress.IPv4Network('0.0.0.0/%d' % prefixlen).netmask)
    return str(ipaddress.IPv6Network('::/%d' % prefixlen).netmask.exploded)


def parse_resolv_conf(text):
    """Non-loopback ``nameserver`` addresses of a resolv.conf."""
    out = []
    for line in (text or '').splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == 'nameserver':
            try:
                addr = ipaddress.ip_address(fields[1].split('%')[0])
            except ValueError:
                continue
            if not addr.is_loopback and fields[1] not in out:
                out.append(fields[1])
    return out


def derive_network_data(addrs, routes, routes6=None, nameservers=(), mode='auto'):
    """network_data.json for the installed system from ``ip -j addr`` / ``ip -j route`` (parsed JSON).

    Every physical Ethernet interface that is up and has a global address becomes a link
    matched by MAC. ``mode=auto``: an IPv4 address the rescue system got by DHCP (flagged
    ``dynamic``) becomes ``ipv4_dhcp``, a static one is copied with its prefix and the
    default gateway of that interface; IPv6 the same (dynamic -> ``ipv6_slaac``).
    ``mode=dhcp``: DHCP (IPv4) on every such interface. Bonds, bridges, VLANs and virtual
    interfaces are not derived: give network_data explicitly for them.
    """
    gateways = {}
    for route in list(routes or []) + list(routes6 or []):
        if route.get('dst') == 'default' and route.get('gateway') and route.get('dev'):
            fam = 'inet6' if ':' in route['gateway'] else 'inet'
            gateways.setdefault((route['dev'], fam), route['gateway'])
    links, networks = [], []
    skipped = []
    for iface in addrs or []:
        name = iface.get('ifname')
        flags = iface.get('flags') or []
        if iface.get('link_type') != 'ether' or 'UP' not in flags:
            continue
        if iface.get('linkinfo') or iface.get('master') or name.startswith(('veth', 'docker', 'virbr', 'br-', 'tap')):
            # bond/bridge/vlan members or virtual devices
            skipped.append(name)
            continue
        infos = [a for a in iface.get('addr_info') or [] if a.get('scope') == 'global' and a.get('family') in ('inet', 'inet6')]
        if not infos:
            continue
        mac = (iface.get('address') or '').lower()
        link = {'id': name, 'type': 'phy', 'ethernet_mac_address': mac}
        if iface.get('mtu'):
            link['mtu'] = iface['mtu']
        links.append(link)
        nets = []
        if mode == 'dhcp':
            nets.append({'type': 'ipv4_dhcp', 'link': name})
        else:
            done = set()
            for a in infos:
                fam = a['family']
                if a.get('dynamic'):
                    kind = 'ipv4_dhcp' if fam == 'inet' else 'ipv6_slaac'
                    if kind not in done:
                        done.add(kind)
                        nets.append({'type': kind, 'link': name})
                    continue
                net = {'type': 'ipv4' if fam == 'inet' else 'ipv6', 'link': name,
                       'ip_address': a['local'], 'netmask': _netmask(fam, a['prefixlen'])}
                gw = gateways.get((name, fam))
                if gw and (fam, 'gw') not in done:
                    done.add((fam, 'gw'))
                    if fam == 'inet':
                        net['routes'] = [{'network': '0.0.0.0', 'netmask': '0.0.0.0', 'gateway': gw}]
                    else:
                        net['routes'] = [{'network': '::', 'netmask': '::', 'gateway': gw}]
                nets.append(net)
        for i, net in enumerate(nets):
            net['id'] = '%s-net%d' % (name, i)
        networks.extend(nets)
    if not links:
        raise ByolError('network_data=%s: the rescue system has no Ethernet interface that is up with a global address; '
                        'give network_data explicitly' % mode)
    services = [{'type': 'dns', 'address': ns} for ns in nameservers]
    return {'links': links, 'networks': networks, 'services': services}


# ---------------------------------------------------------------------------------------
# placement of the partition


def gpt_last_usable(disk_sectors, sector_size, entries=128, entry_size=128):
    """Last usable LBA of a GPT whose backup header is at the end of the disk."""
    entry_sectors = -(-entries * entry_size // sector_size)
    return disk_sectors - 2 - entry_sectors


def plan_partition(table, disk_sectors, sector_size, size_mib, gpt_entries=128, existing=None):
    """Where the config drive goes. Pure.

    ``table``: ``sfdisk --json`` partitiontable dict (or None for no table). ``existing``: the
    number of a partition that already holds the config drive (label config-2), if any.
    Returns a dict: ``action`` (``reuse``/``create``), ``label`` (gpt/dos), ``number`` (reuse),
    ``start``/``size``/``end`` in sectors, ``relocate_gpt`` (the backup GPT must move to the end
    first), ``free_mib``. Raises ByolError when there is no room or no usable slot.
    """
    if not table:
        raise ByolError('the disk has no partition table: write the image (byol_image_burn) or partition the disk '
                        '(byol_partition) first; the config drive is added to an existing table')
    label = table.get('label')
    parts = table.get('partitions') or []
    if existing is not None:
        for p in parts:
            if _part_number(p) == existing:
                return {'action': 'reuse', 'label': label, 'number': existing, 'start': p['start'], 'size': p['size'],
                        'end': p['start'] + p['size'] - 1, 'relocate_gpt': False}
    if label not in ('gpt', 'dos'):
        raise ByolError('unsupported partition table type %r (only GPT and MBR/dos)' % label)
    size = size_mib * MIB // sector_size
    align = max(1, MIB // sector_size)
    used_end = max([p['start'] + p['size'] - 1 for p in parts] + [0])
    if label == 'gpt':
        last = gpt_last_usable(disk_sectors, sector_size, gpt_entries)
        relocate = int(table.get('lastlba', last)) < last
        limit_note = 'the end of the disk'
    else:
        relocate = False
        last = disk_sectors - 1
        limit_note = 'the end of the disk'
        mbr_limit = (2 ** 41) // sector_size - 1   # last sector before 2 TiB
        if last > mbr_limit:
            last = mbr_limit
            limit_note = '2 TiB (an MBR partition must end before 2 TiB)'
        primaries = sorted(n for n in (_part_number(p) for p in parts) if n and n <= 4)
        if len(primaries) >= 4:
            raise ByolError('the MBR partition table has no free primary slot (partitions %s are in use); the config '
                            'drive needs one. Use GPT, or an image/layout with at most 3 primary partitions'
                            % ', '.join(str(n) for n in primaries))
    first_free = used_end + 1
    # 1 MiB alignment; when only exactly the space is left (an image or layout that reserved it
    # without alignment), fall back to 4 KiB alignment, then to none, rather than refuse.
    start = (last + 1 - size) // align * align
    if start < first_free:
        small = max(1, 4096 // sector_size)
        start = (last + 1 - size) // small * small
    if start < first_free:
        start = last + 1 - size
    free_mib = max(0, (last + 1 - first_free) * sector_size // MIB)
    if start < first_free or start < min(align, 34):
        raise ByolError('no room for the %d MiB config drive: only %d MiB are free between the last partition (ends at '
                        'sector %d) and %s. Leave space at the end of the disk (byol_partition configdrive_size) or '
                        'use a smaller image' % (size_mib, free_mib, used_end, limit_note),
                        free_mib=free_mib)
    number = None
    if label == 'gpt':
        used = set(_part_number(p) for p in parts)
        number = next(n for n in range(1, 129) if n not in used)
    return {'action': 'create', 'label': label, 'number': number, 'start': start, 'size': size,
            'end': start + size - 1, 'relocate_gpt': relocate, 'free_mib': free_mib}


def _part_number(part):
    """Partition number from an sfdisk --json entry (its ``node``: /dev/sda3, /dev/loop0p3)."""
    m = re.search(r'(\d+)$', part.get('node') or '')
    return int(m.group(1)) if m else None

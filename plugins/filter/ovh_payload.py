# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: ovh_payload
short_description: Translate an OVHcloud BYOI/BYOL reinstall payload into the roles' arguments
version_added: 0.1.0
author: baremetal.byol developers (@baremetal-byol)
description:
  - Reads an OVHcloud C(POST /dedicated/server/{serviceName}/reinstall) payload exactly as the
    BYOI guide and the BYOL README write it (C(operatingSystem) set to C(byoi_64) or C(byolinux_64);
    C(customizations) with the guides' camelCase names; C(storage)) and returns the
    C(byol_*) arguments of the P(baremetal.byol.byoi#role) and P(baremetal.byol.byol#role) roles.
  - C(efiBootloaderPath) is accepted in C(customizations) and in C(userMetadata) (the BYOI
    guide's table names C(userMetadata/efiBootloaderPath)); C(userMetadata) may be a mapping or
    the API's list of C({key, value}) objects.
  - C(storage[0].diskGroupId) becomes C(byol_disk_group_id), C(partitioning.disks) becomes
    C(byol_disk_count), and C(partitioning.layout) becomes C(byol_layout) with the keys C(mount_point),
    C(fs_type), C(size), C(raid_level), C(lv_name) (from C(extras.lv.name)) and C(zpool_name)
    (from C(extras.zp.name)). C(hardwareRaid) is refused (it needs the controller vendor's tools).
  - The result is validated like the roles' own arguments (P(baremetal.byol.byol_request#filter)) -
    required fields per installer (BYOI C(imageURL), C(imageType) and, on UEFI, C(efiBootloaderPath);
    BYOL C(imageURL)), the checksum pair rule with the guide's message
    C(Please provide checkSum AND checkSumType or none of them), host name (RFC 1123), SSH keys,
    HTTP header names and values (no line breaks).
  - Every problem is reported at once; an unknown field is an error that names it (and suggests
    the right spelling). Error messages never contain header values or user data.
  - C(configDriveUserData) is passed on unchanged (plain text or base64);
    M(baremetal.byol.byol_configdrive) decodes base64.
positional: installer
options:
  _input:
    description: The payload, as a mapping or as a JSON string.
    type: raw
    required: true
  installer:
    description:
      - The installer the payload must be for (C(byoi) or C(byol)). The roles pass their own name,
        so a C(byolinux_64) payload given to the C(byoi) role is an error.
      - Omit it to accept both.
    type: str
    choices: [byoi, byol]
  boot_mode:
    description:
      - The server's boot mode, when known. With C(uefi), a BYOI payload without C(efiBootloaderPath)
        is an error. With C(auto) (default) that check is left to the role, after pre-flight has
        read the boot mode; C(legacy) never requires it.
    type: str
    choices: [auto, uefi, legacy]
    default: auto
  defaults:
    description:
      - C(byol_*) arguments the payload's fields are laid over before validation (the roles pass their
        own arguments, so a field the payload does not give keeps the role's value).
    type: dict
    default: {}
  validate:
    description:
      - V(false) only translates (unknown fields, structure and C(hardwareRaid) are still errors) and
        returns just the fields present in the payload, so they can be combined over other arguments
        and validated afterwards with P(baremetal.byol.byol_request#filter) - this is what the roles do.
    type: bool
    default: true
seealso:
  - plugin: baremetal.byol.byol_request
    plugin_type: filter
  - name: OVHcloud Bring Your Own Image guide
    description: The payload fields and error messages this filter follows.
    link: https://help.ovhcloud.com/csm/en-dedicated-servers-bringyourownimage?id=kb_article_view&sysparm_article=KB0043281
"""

EXAMPLES = r"""
- name: Translate the payload of the host
  ansible.builtin.set_fact:
    install_args: "{{ byol_payload | baremetal.byol.ovh_payload }}"
  no_log: true

- name: Include the role the payload asks for, with the translated arguments
  ansible.builtin.include_role:
    name: "baremetal.byol.{{ install_args.byol_installer }}"
  vars:
    byol_payload: "{{ lookup('ansible.builtin.file', 'payload.json') | ansible.builtin.from_json }}"

- name: A BYOI payload must be a BYOI payload
  ansible.builtin.debug:
    msg: "{{ {'operatingSystem': 'byoi_64', 'customizations': {'imageURL': 'https://example.com/d.raw', 'imageType': 'raw'}}
             | baremetal.byol.ovh_payload('byoi') }}"
"""

RETURN = r"""
_value:
  description:
    - The role arguments, validated and normalised (checksum lower-case, C(sshKey) split into a list,
      numbers as integers, BYOL's default layout when the payload has none).
    - C(byol_installer) is C(byoi) or C(byol); absent fields are V(null).
  type: dict
  sample:
    byol_installer: byoi
    byol_image_url: https://cdimage.debian.org/cdimage/cloud/bookworm/latest/debian-12-generic-amd64.raw
    byol_image_type: raw
    byol_image_checksum: null
    byol_image_checksum_type: null
    byol_hostname: mon-tux
    byol_ssh_keys: [ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHr0n2BQ1cpoc0d8mr6/T5HTrYLbYovE/fhPIqmhEAbp admin]
    byol_http_headers: null
    byol_user_data: null
    byol_meta_data: null
    byol_efi_bootloader_path: \efi\debian\grubx64.efi
    byol_disk_group_id: 0
    byol_disk_count: null
    byol_layout: null
"""

import json

from ansible.errors import AnsibleFilterError

from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError
from ansible_collections.baremetal.byol.plugins.module_utils._payload import ovh_payload as _translate
from ansible_collections.baremetal.byol.plugins.module_utils._payload import translate as _translate_only


def _plain(value):
    """Copy templated data into plain dicts/lists/str (no lazy or tagged containers)."""
    if isinstance(value, dict):
        return dict((str(k), _plain(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return value


def ovh_payload(payload, installer=None, boot_mode='auto', validate=True, defaults=None):
    """OVHcloud reinstall payload -> validated role arguments."""
    if isinstance(payload, (str, bytes)):
        try:
            payload = json.loads(payload)
        except ValueError as exc:
            raise AnsibleFilterError('ovh_payload: the payload is a string but not JSON: %s' % exc)
    if boot_mode not in ('auto', 'uefi', 'legacy'):
        raise AnsibleFilterError('ovh_payload: boot_mode must be auto, uefi or legacy, got %r' % (boot_mode,))
    try:
        if not validate:
            return _translate_only(_plain(payload), installer=installer or None)
        return _translate(_plain(payload), installer=installer or None, boot_mode=boot_mode, defaults=_plain(defaults or {}))
    except ByolError as exc:
        raise AnsibleFilterError('Invalid install request: %s' % exc.msg)


class FilterModule(object):

    def filters(self):
        return {'ovh_payload': ovh_payload}

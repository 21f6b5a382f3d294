# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: byol_request
short_description: Validate the install request given as the roles' C(byol_*) arguments
version_added: 0.1.0
author: baremetal.byol developers (@baremetal-byol)
description:
  - Checks a mapping of C(byol_*) role arguments (from role parameters, host variables, or the
    output of P(baremetal.byol.ovh_payload#filter) combined over them) the way the OVHcloud
    installers check their payloads, and returns it normalised.
  - Required per installer - C(byoi) needs C(byol_image_url), C(byol_image_type) and, when
    O(boot_mode=uefi), C(byol_efi_bootloader_path); C(byol) needs C(byol_image_url) (the image
    type defaults to C(qcow2) and the layout to one ext4 root filesystem filling the disks).
  - The checksum pair rule, with the BYOI guide's message
    C(Please provide checkSum AND checkSumType or none of them), and the digest length of the type.
  - Host name (RFC 1123), SSH public keys (known key types, one line each), HTTP header names
    (RFC 7230 tokens) and values (no line breaks), the layout's fields, file systems and RAID levels.
  - Every problem is reported at once; messages never contain header values or user data.
  - Keys it does not know are returned unchanged.
positional: installer
options:
  _input:
    description: Mapping of C(byol_*) arguments.
    type: dict
    required: true
  installer:
    description: C(byoi) or C(byol).
    type: str
    choices: [byoi, byol]
    required: true
  boot_mode:
    description: The server's boot mode; C(uefi) makes C(byol_efi_bootloader_path) required for C(byoi).
    type: str
    choices: [auto, uefi, legacy]
    default: auto
seealso:
  - plugin: baremetal.byol.ovh_payload
    plugin_type: filter
"""

EXAMPLES = r"""
- name: Validate a BYOI request written with the roles' argument names
  ansible.builtin.debug:
    msg: >-
      {{ {'byol_image_url': 'https://example.com/disk.qcow2', 'byol_image_type': 'qcow2',
          'byol_efi_bootloader_path': '\\efi\\debian\\grubx64.efi'}
         | baremetal.byol.byol_request('byoi', boot_mode='uefi') }}
"""

RETURN = r"""
_value:
  description:
    - The arguments, normalised (checksum lower-case, SSH keys as a list, numbers as integers,
      C(byol_disk_group_id) 0 when absent, BYOL's default layout when none is given), with
      C(byol_installer) set.
  type: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError
from ansible_collections.baremetal.byol.plugins.module_utils._payload import validate_request
from ansible_collections.baremetal.byol.plugins.filter.ovh_payload import _plain


def byol_request(args, installer, boot_mode='auto'):
    """Validate role arguments; raise AnsibleFilterError listing the problems."""
    if not isinstance(args, dict):
        raise AnsibleFilterError('byol_request expects a mapping of byol_* arguments, got %s' % type(args).__name__)
    if boot_mode not in ('auto', 'uefi', 'legacy'):
        raise AnsibleFilterError('byol_request: boot_mode must be auto, uefi or legacy, got %r' % (boot_mode,))
    try:
        return validate_request(_plain(args), installer, boot_mode=boot_mode)
    except ByolError as exc:
        raise AnsibleFilterError('Invalid install request: %s' % exc.msg)


class FilterModule(object):

    def filters(self):
        return {'byol_request': byol_request}

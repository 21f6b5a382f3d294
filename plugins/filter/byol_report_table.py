# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: byol_report_table
short_description: The post-install report as a short text table
version_added: 0.1.0
author: baremetal.byol developers (@baremetal-byol)
description:
  - One line per disk, RAID array, volume group, filesystem (with its UUID), swap, config drive, boot entry, the
    image and its digest, the hook, each SSH host key fingerprint and each measured step of a report made by
    P(baremetal.byol.byol_report#filter).
options:
  _input:
    description: The output of P(baremetal.byol.byol_report#filter).
    type: dict
    required: true
seealso:
  - plugin: baremetal.byol.byol_report
    plugin_type: filter
"""

EXAMPLES = r"""
- name: Print the report
  ansible.builtin.debug:
    msg: "{{ (byol_report | baremetal.byol.byol_report_table).splitlines() }}"
"""

RETURN = r"""
_value:
  description: The text, one line per item.
  type: str
"""

from ansible_collections.baremetal.byol.plugins.filter.byol_report import report_table


class FilterModule(object):
    def filters(self):
        return {'byol_report_table': report_table}

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment(object):

    # The options of the disk checks that the modules choosing or wiping whole disks share (byol_preflight,
    # byol_wipe_disks); their argument spec is module_utils/_disk_select.DISK_SAFETY_ARGUMENT_SPEC.
    DOCUMENTATION = r"""
options:
  include_loop:
    description: Loop devices count as disks (for tests); without it they are never candidates.
    type: bool
    default: false
  mount_root:
    description:
      - Mounts under this directory do not count as "in use" (the installer's own mounts).
      - Resolved first (C(..), symbolic links); C(/) or a directory of the rescue system is refused (every mount would
        be under it).
    type: path
    default: /tmp/a
"""

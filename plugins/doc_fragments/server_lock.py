# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment(object):

    # The per-server lock that every module changing the server takes (module_utils/_lock.py).
    DOCUMENTATION = r"""
options:
  lock_timeout:
    description:
      - Seconds to wait while another run changes this server (the per-server lock C(/run/baremetal-byol/server.lock),
        taken by every module of this collection that changes the server; see C(docs/fleet.md)). V(0) fails at once.
      - The failure names the holder's pid, module, start time and the address it was started from.
      - Check mode takes no lock.
    type: int
    default: 600
"""

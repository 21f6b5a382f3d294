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
      - The same wait applies while another run holds the server's reinstall lease (see O(lock_owner)).
    type: int
    default: 600
  lock_owner:
    description:
      - The run id of the reinstall this task belongs to (the lease taken by M(baremetal.byol.byol_lease), which the
        roles take first and release at the end; see C(docs/fleet.md)).
      - With it, the module renews that run's lease on the server (and records this step in it); while the lease of
        another run is live, the module waits (O(lock_timeout)), then fails naming that run's controller, user,
        start time and last step.
      - Without it (a module run alone), the module still waits for (then refuses) a live lease of a run, and
        takes none.
      - When it is not set, the collection's action plugins set it from the host's fact C(byol_lock_owner), which
        M(baremetal.byol.byol_lease) sets; so every module after the lease task of a play belongs to that run.
    type: str
"""

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Controller side of the reinstall lease (module_utils/_lock.py, module byol_lease).

Do not use this from other collections or standalone plugins/modules!

Action plugins run in a worker that ``ansible-playbook`` forked (multiprocessing's fork context), so the
worker's parent is the ``ansible-playbook`` process of the run: its pid and start time (``/proc``) identify the run,
and tell later whether it still lives (a pid that was reused has another start time).
"""

from __future__ import annotations

import getpass
import os
import socket

FACT = 'byol_lock_owner'
LEASE_MODULES = ('byol_partition', 'byol_image_burn', 'byol_configdrive', 'byol_bootable_hook', 'byol_bootorder',
                 'byol_wipe_disks')


def pid_start(pid):
    """The start time of process ``pid`` (clock ticks after boot, from /proc), or None (no such process, no /proc)."""
    try:
        with open('/proc/%d/stat' % int(pid)) as f:
            data = f.read()
    except (OSError, ValueError, TypeError):
        return None
    try:
        return int(data[data.rindex(')') + 2:].split()[19])
    except (ValueError, IndexError):
        return None


def pid_alive(pid, start=None):
    """True when ``pid`` runs on this host (and, when ``start`` is known, is the process that started then)."""
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError) as exc:
        if getattr(exc, 'errno', None) != 1:  # EPERM: it exists, it is another user's
            return False
    if start is not None:
        now = pid_start(pid)
        if now is not None and now != start:
            return False
    return True


def controller_identity():
    """Who runs this reinstall: host name, ansible-playbook's pid and start time, user."""
    pid = os.getppid()
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return {'host': socket.gethostname(), 'pid': pid, 'pid_start': pid_start(pid), 'user': user}


def run_id(identity):
    return '%s:%s:%s' % (identity['host'], identity['pid'], identity['pid_start'] or 0)


def holder_has_ended(lease, identity=None):
    """True when ``lease`` was taken from this controller host by an ansible-playbook that no longer runs."""
    identity = identity or controller_identity()
    ctl = (lease or {}).get('controller') or {}
    if not ctl.get('pid') or ctl.get('host') != identity['host']:
        return False
    if ctl.get('pid') == identity['pid'] and ctl.get('pid_start') == identity['pid_start']:
        return False  # this very run
    return not pid_alive(ctl['pid'], ctl.get('pid_start'))


def inject_lock_owner(task, task_vars):
    """Give the task ``lock_owner`` from the host's fact byol_lock_owner (set by byol_lease) unless it has one."""
    if task.args.get('lock_owner'):
        return
    task_vars = task_vars or {}
    owner = (task_vars.get('ansible_facts') or {}).get(FACT) or task_vars.get(FACT)
    if owner:
        task.args['lock_owner'] = owner

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The controller's side of the reinstall lease: is the ansible-playbook that holds it still running here?"""

from __future__ import annotations

import os
import subprocess
import sys

from ansible_collections.baremetal.byol.plugins.plugin_utils import _lease


def _ended_pid():
    proc = subprocess.Popen([sys.executable, '-c', 'pass'])
    start = _lease.pid_start(proc.pid)
    proc.wait()
    return proc.pid, start


def test_identity_is_the_parent_process():
    ident = _lease.controller_identity()
    assert ident['pid'] == os.getppid() and ident['pid_start'] == _lease.pid_start(os.getppid())
    assert _lease.run_id(ident) == '%s:%d:%d' % (ident['host'], ident['pid'], ident['pid_start'])


def test_holder_of_this_host_that_ended_is_stale():
    me = _lease.controller_identity()
    pid, start = _ended_pid()
    assert _lease.holder_has_ended({'controller': {'host': me['host'], 'pid': pid, 'pid_start': start}}, me)


def test_holder_alive_or_elsewhere_or_unknown_is_not_stale():
    me = _lease.controller_identity()
    live = {'host': me['host'], 'pid': os.getpid(), 'pid_start': _lease.pid_start(os.getpid())}
    assert not _lease.holder_has_ended({'controller': live}, me)
    pid, start = _ended_pid()
    assert not _lease.holder_has_ended({'controller': {'host': 'other-controller', 'pid': pid, 'pid_start': start}}, me)
    assert not _lease.holder_has_ended({'controller': {}}, me)  # a module run alone: only its ttl ends it
    assert not _lease.holder_has_ended({'controller': me}, me)  # this very run


def test_reused_pid_is_not_the_holder():
    """The holder's pid now belongs to another process (another start time): the holder has ended."""
    me = _lease.controller_identity()
    lease = {'controller': {'host': me['host'], 'pid': os.getpid(), 'pid_start': _lease.pid_start(os.getpid()) - 1}}
    assert _lease.holder_has_ended(lease, me)


class _Task(object):
    def __init__(self, args):
        self.args = args


def test_lock_owner_comes_from_the_fact_unless_set():
    task = _Task({})
    _lease.inject_lock_owner(task, {'ansible_facts': {'byol_lock_owner': 'ctl:1:2'}})
    assert task.args['lock_owner'] == 'ctl:1:2'
    task = _Task({'lock_owner': 'mine'})
    _lease.inject_lock_owner(task, {'ansible_facts': {'byol_lock_owner': 'ctl:1:2'}})
    assert task.args['lock_owner'] == 'mine'
    task = _Task({})
    _lease.inject_lock_owner(task, {'ansible_facts': {'byol_lock_owner': ''}})  # released
    assert 'lock_owner' not in task.args

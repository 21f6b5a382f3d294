# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The nbd device choice and qemu-nbd's connection happen under one host-wide lock, so two
concurrent BYOL runs on one rescue system never pick the same free /dev/nbdN."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys

from ansible_collections.baremetal.byol.plugins.module_utils._image import attach as iw


def _held_elsewhere(path):
    """True when another open file description holds an exclusive flock on path."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_lock_excludes_a_second_process(tmp_path):
    lock = str(tmp_path / 'sub' / 'nbd.lock')
    # The child says whether the lock was free when it first tried (no timing: a loaded machine may start it late),
    # then waits for it and says when it has it.
    child = ('import fcntl, os, sys\n'
             'fd = os.open(sys.argv[1], os.O_RDWR)\n'
             'try:\n'
             '    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print("free", flush=True)\n'
             'except BlockingIOError:\n'
             '    print("busy", flush=True); fcntl.flock(fd, fcntl.LOCK_EX); print("got", flush=True)\n')
    with iw._NbdLock(lock):
        assert os.path.exists(lock)
        proc = subprocess.Popen([sys.executable, '-c', child, lock], stdout=subprocess.PIPE, text=True)
        first = proc.stdout.readline().strip()
        assert first == 'busy', 'the second process got the lock while the first held it'
        assert proc.poll() is None
    assert proc.communicate(timeout=30)[0].strip() == 'got'
    assert not _held_elsewhere(lock)


class _Res(object):
    def __init__(self, stdout=''):
        self.rc, self.stdout, self.stderr = 0, stdout, ''


class _Runner(object):
    def __init__(self, lock):
        self.lock = lock
        self.locked_during = {}

    def run(self, args, check=True, **kw):
        self.locked_during.setdefault(args[0], _held_elsewhere(self.lock))
        if args[0] == 'sfdisk':
            raise RuntimeError('stop here')
        return _Res()


def test_attach_picks_and_connects_under_the_lock(tmp_path, monkeypatch):
    lock = str(tmp_path / 'nbd.lock')
    monkeypatch.setattr(iw, 'NBD_LOCK', lock)
    picked = []

    def free():
        picked.append(_held_elsewhere(lock))
        return '/dev/nbd7'

    monkeypatch.setattr(iw, '_free_nbd', free)
    monkeypatch.setattr(iw._blockdev, 'settle', lambda r: None)
    runner = _Runner(lock)
    att = iw.ImageAttachment(runner, str(tmp_path / 'img.qcow2'), 'qcow2', str(tmp_path), use_nbd=True)
    try:
        att.attach()
    except RuntimeError:
        pass
    assert picked == [True]
    assert runner.locked_during['qemu-nbd'] is True
    # the lock is released once connected: the partition table is read outside it
    assert runner.locked_during['sfdisk'] is False
    assert att.nbd == '/dev/nbd7'

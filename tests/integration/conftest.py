# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures for integration tests on this machine: loop devices and real ansible runs.

These tests need root, loop devices and a running systemd-udevd (partition nodes).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _need_root_and_loop():
    if os.geteuid() != 0:
        pytest.skip('integration tests need root')
    if not os.path.exists('/dev/loop-control'):
        pytest.skip('no loop device support')


@pytest.fixture(scope='session', autouse=True)
def udevd():
    """Start systemd-udevd if it is not running (partition nodes of loop devices need it)."""
    if os.geteuid() != 0:
        return
    running = subprocess.run(['pgrep', '-x', 'systemd-udevd'], stdout=subprocess.DEVNULL, check=False).returncode == 0
    # Debian keeps systemd-udevd outside PATH (/lib/systemd)
    udevd = shutil.which('systemd-udevd') or next(
        (p for p in ('/lib/systemd/systemd-udevd', '/usr/lib/systemd/systemd-udevd') if os.path.exists(p)), None)
    if not running and udevd:
        subprocess.run([udevd, '--daemon'], check=False)
        subprocess.run(['udevadm', 'trigger', '--action=add', '--subsystem-match=block'], check=False)
        subprocess.run(['udevadm', 'settle', '--timeout=30'], check=False)


class LoopFactory(object):
    """Create sparse files attached to loop devices; everything is detached at teardown."""

    def __init__(self, tmpdir):
        self.tmpdir = tmpdir
        self.devices = []

    def __call__(self, size_mib=256, name=None, backing=None):
        if backing is None:
            backing = os.path.join(self.tmpdir, name or 'disk%d.img' % len(self.devices))
            with open(backing, 'wb') as f:
                f.truncate(size_mib * 1024 * 1024)
        dev = subprocess.run(['losetup', '--show', '--find', '--partscan', backing],
                             check=True, stdout=subprocess.PIPE, universal_newlines=True).stdout.strip()
        self.devices.append(dev)
        return dev

    def cleanup(self):
        for dev in reversed(self.devices):
            # unmount anything still mounted from this loop device or its partitions
            out = subprocess.run(['findmnt', '--list', '--noheadings', '--output', 'SOURCE,TARGET'],
                                 stdout=subprocess.PIPE, universal_newlines=True, check=False).stdout
            # this device or its partitions (/dev/loop1, /dev/loop1p2), never /dev/loop12 of another process
            targets = [line.split(None, 1)[1] for line in out.splitlines()
                       if line.split() and re.fullmatch(re.escape(dev) + r'(p[0-9]+)?', line.split()[0])]
            for target in sorted(targets, key=len, reverse=True):
                subprocess.run(['umount', '-l', target], check=False)
            subprocess.run(['losetup', '--detach', dev], check=False)
        self.devices = []


@pytest.fixture
def loopdev(tmp_path):
    """``loopdev(size_mib=256)`` -> ``/dev/loopN`` backed by a sparse file in tmp_path."""
    _need_root_and_loop()
    factory = LoopFactory(str(tmp_path))
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.fixture
def target_fs(loopdev, tmp_path):
    """A fresh ext4 filesystem on a loop device, mounted (the new filesystems); ``(device, mountpoint)``."""
    dev = loopdev(size_mib=256)
    # no lazy init: the kernel would keep writing inode tables in the background
    subprocess.run(['mkfs.ext4', '-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0', dev], check=True)
    mnt = str(tmp_path / 'a')
    os.makedirs(mnt)
    subprocess.run(['mount', '-o', 'noatime', dev, mnt], check=True)
    # let the mount's own superblock/journal writes reach the device before tests count writes
    subprocess.run(['sync'], check=True)
    time.sleep(1)
    subprocess.run(['sync'], check=True)
    return dev, mnt


def wait_ext4_lazyinit(deadline):
    """Wait (until ``deadline``, a time.monotonic() value) while the kernel zeroes new ext4 inode tables.

    Freshly made ext4 filesystems zero their inode tables in the background while they are mounted
    (the ``ext4lazyinit`` kernel thread, which exists only while it has work): megabytes that are the
    kernel's, not a module's, in a block device's write counter."""
    while time.monotonic() < deadline and subprocess.run(['pgrep', '-x', 'ext4lazyinit'], stdout=subprocess.DEVNULL,
                                                         check=False).returncode == 0:
        time.sleep(0.5)


def _ansible_bin(name):
    candidate = os.path.join(os.path.dirname(sys.executable), name)
    return candidate if os.path.exists(candidate) else shutil.which(name)


class AnsibleRun(object):
    def __init__(self, rc, result, output):
        self.rc = rc
        self.result = result
        self.output = output

    @property
    def changed(self):
        return bool(self.result.get('changed'))

    @property
    def failed(self):
        return bool(self.result.get('failed'))


CALLBACK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'callback_plugins')


def run_module(module, args, check=False, diff=False, verbosity=0, env=None):
    """Run ``baremetal.byol.<module>`` with the real ``ansible`` against localhost.

    Returns AnsibleRun(rc, result dict, full text output). The output includes everything
    ansible printed at ``verbosity`` (used to prove secrets never appear): the built-in
    ``minimal`` stdout callback. The result comes unabridged (``diff`` included) from the
    test callback ``callback_plugins/byol_result_file.py``: ansible-core has no ``json``
    stdout callback (2.19 and 2.21 alike).
    """
    collections = os.environ.get('BYOL_COLLECTIONS_PATH')
    if not collections:
        raise RuntimeError('tests/conftest.py did not set BYOL_COLLECTIONS_PATH')
    results = tempfile.mkdtemp(prefix='byol-ansible-result-')
    environ = dict(os.environ)
    environ.update({
        'ANSIBLE_COLLECTIONS_PATH': collections,
        'ANSIBLE_STDOUT_CALLBACK': 'ansible.builtin.minimal',
        'ANSIBLE_LOAD_CALLBACK_PLUGINS': '1',
        'ANSIBLE_CALLBACK_PLUGINS': CALLBACK_DIR,
        'ANSIBLE_CALLBACKS_ENABLED': 'byol_result_file',
        'BYOL_TEST_RESULT_DIR': results,
        'ANSIBLE_HOST_KEY_CHECKING': 'False',
        'ANSIBLE_NOCOLOR': '1',
        'ANSIBLE_PYTHON_INTERPRETER': sys.executable,
        'ANSIBLE_LOCALHOST_WARNING': 'False',
        'ANSIBLE_INVENTORY_UNPARSED_WARNING': 'False',
    })
    if env:
        environ.update(env)
    cmd = [_ansible_bin('ansible'), 'localhost', '-c', 'local', '-m', 'baremetal.byol.%s' % module,
           '-a', json.dumps(args)]
    if check:
        cmd.append('--check')
    if diff:
        cmd.append('--diff')
    if verbosity:
        cmd.append('-' + 'v' * verbosity)
    return run_ansible(cmd, environ, results)


def run_ansible(cmd, environ, results):
    """Run an ``ansible``/``ansible-playbook`` command line whose test callback writes the result into
    ``results`` (a directory, removed afterwards); AnsibleRun(rc, result dict, full text output)."""
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                              env=environ, cwd=tempfile.gettempdir(), check=False)
        try:
            with open(os.path.join(results, 'localhost.json')) as f:
                result = json.load(f)
        except (OSError, ValueError):
            result = {}
    finally:
        shutil.rmtree(results, ignore_errors=True)
    return AnsibleRun(proc.returncode, result, proc.stdout)


@pytest.fixture
def ansible_module():
    """``ansible_module('byol_configdrive', {...}, check=False, diff=False, verbosity=0)``."""
    return run_module

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The lab's fault injector: stop a reinstall half-way, as a fleet sees it happen (issue 20).

Three kinds of fault, fired when a given task of the play starts (optionally N seconds into it):

- ``power``: the server side dies. The rescue VM's QEMU is killed (SIGKILL, nothing flushed), then the VM
  is started again into rescue on the same disks and NVRAM (``RescueVM.power_cut`` / ``restart_rescue``).
- ``kill``: the controller dies. ``ansible-playbook``'s process group is killed (SIGKILL) and so are the
  SSH processes of that run (its ControlMaster too): a laptop that went away. What runs on the server
  (the module of the task) goes on, an orphan.
- ``ssh``: the SSH connection is cut. Only the run's ``ssh`` processes (ControlMaster included) are
  killed; ``ansible-playbook`` sees the host unreachable and ends by itself.

The trigger reads the task log of the test-only callback ``byol_task_times``
(``tests/integration/callback_plugins``): one JSON line per task start and result.

Usage in tests::

    run = PlaybookRun(cmd, env, workdir, callback_dir)
    run.start()
    run.wait_task('Copy the image', after=20)
    fire(run, vm, 'power')      # vm: a byollab.vm.RescueVM
    run.wait()
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

FAULTS = ('power', 'kill', 'ssh')


class FaultError(Exception):
    pass


def _cmdline(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            return [a.decode(errors='replace') for a in f.read().split(b'\0') if a]
    except OSError:
        return []


def ssh_pids(control_dir):
    """The ssh processes whose command line names ``control_dir`` (this run's ControlPath directory only)."""
    pids = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        cmd = _cmdline(int(entry))
        if cmd and os.path.basename(cmd[0]) == 'ssh' and any(control_dir in a for a in cmd):
            pids.append(int(entry))
    return pids


class PlaybookRun(object):
    """One ``ansible-playbook`` run in its own process group, with its own SSH ControlPath directory and task log."""

    def __init__(self, cmd, env, workdir, callback_dir, name='run'):
        self.cmd = list(cmd)
        self.workdir = workdir
        self.name = name
        self.task_log = os.path.join(workdir, '%s.tasks.jsonl' % name)
        self.output = os.path.join(workdir, '%s.out' % name)
        self.control_dir = os.path.join(workdir, '%s.cp' % name)
        self.env = dict(env, ANSIBLE_CALLBACK_PLUGINS=callback_dir, BYOL_TEST_TASK_LOG=self.task_log,
                        ANSIBLE_SSH_CONTROL_PATH_DIR=self.control_dir)
        enabled = [c for c in self.env.get('ANSIBLE_CALLBACKS_ENABLED', '').split(',') if c]
        self.env['ANSIBLE_CALLBACKS_ENABLED'] = ','.join(enabled + ['byol_task_times'])
        self.proc = None
        self.t0 = self.t1 = None

    def start(self):
        os.makedirs(self.control_dir, exist_ok=True)
        with open(self.output, 'w') as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                         cwd=self.workdir, start_new_session=True)
        self.t0 = time.monotonic()
        return self

    def events(self):
        try:
            with open(self.task_log) as f:
                return [json.loads(line) for line in f if line.strip()]
        except (OSError, ValueError):
            return []

    def wait_task(self, name, after=0, timeout=3600):
        """Wait until a task whose name contains ``name`` starts, then ``after`` seconds more (the run must
        still be going). Returns the seconds since the run started."""
        deadline = time.monotonic() + timeout
        while not any(e['event'] == 'start' and name in e['name'] for e in self.events()):
            if self.proc.poll() is not None:
                raise FaultError('%s ended (rc %s) before task %r started:\n%s'
                                 % (self.name, self.proc.returncode, name, self.tail()))
            if time.monotonic() > deadline:
                raise FaultError('task %r did not start within %d s' % (name, timeout))
            time.sleep(0.2)
        end = time.monotonic() + after
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise FaultError('%s ended (rc %s) within %s s of task %r:\n%s'
                                 % (self.name, self.proc.returncode, after, name, self.tail()))
            time.sleep(0.2)
        return time.monotonic() - self.t0

    def running_task(self):
        """The name of the last task that started."""
        starts = [e['name'] for e in self.events() if e['event'] == 'start']
        return starts[-1] if starts else None

    def kill_controller(self):
        """SIGKILL of ansible-playbook's process group, then of the run's ssh processes left (ControlMaster)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.cut_ssh()

    def cut_ssh(self):
        """SIGKILL of this run's ssh processes: the connection (and its ControlMaster) is gone."""
        pids = ssh_pids(self.control_dir)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return pids

    def wait(self, timeout=None):
        rc = self.proc.wait(timeout)
        self.t1 = time.monotonic()
        return rc

    @property
    def seconds(self):
        return (self.t1 or time.monotonic()) - self.t0

    def tail(self, chars=6000):
        try:
            with open(self.output, errors='replace') as f:
                return f.read()[-chars:]
        except OSError:
            return ''

    def changed_tasks(self):
        """Names of the tasks that reported a change (in order, once each)."""
        out = []
        for e in self.events():
            if e['event'] == 'ok' and e.get('changed') and e['name'] not in out:
                out.append(e['name'])
        return out


def fire(run, vm, fault, ssh_timeout=900):
    """Inject ``fault`` into ``run`` (a :class:`PlaybookRun`) against ``vm`` (a ``byollab.vm.RescueVM``).

    ``power``: the VM's power is cut, the controller then sees its host go away (its run is left to end
    by itself, or killed after a while); the VM is started into rescue again and SSH waited for.
    Returns a short description of what was done."""
    if fault not in FAULTS:
        raise FaultError('fault must be one of %s, got %r' % (', '.join(FAULTS), fault))
    task = run.running_task()
    if fault == 'power':
        vm.power_cut()
        # the controller's connection is dead: its task fails as unreachable; do not wait for its timeouts
        try:
            run.wait(timeout=120)
        except subprocess.TimeoutExpired:
            run.kill_controller()
        vm.restart_rescue()
        vm.wait_ssh(timeout=ssh_timeout)
        return 'power cut during %r, restarted into rescue' % task
    if fault == 'kill':
        run.kill_controller()
        return 'ansible-playbook killed during %r' % task
    pids = run.cut_ssh()
    run.wait(timeout=900)
    return 'ssh cut during %r (%d ssh processes killed), the run ended with rc %s' % (task, len(pids), run.proc.returncode)

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fault injector's controller side (``byollab.faults``) without a VM: a real ``ansible-playbook`` on
localhost, its trigger on a task start, the kill of its process group, and the SSH cut that kills only the run's
own ssh processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from byollab import faults

CALLBACK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'callback_plugins')
PLAY = '''- hosts: localhost
  gather_facts: false
  tasks:
    - name: First step
      ansible.builtin.debug: {msg: one}
    - name: Long step that sleeps
      ansible.builtin.command: sleep 300
'''


def _alive(pid):
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().split(')')[-1].split()[0] != 'Z'
    except OSError:
        return False


def _wait_gone(pid, seconds=30):
    end = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < end:
        time.sleep(0.1)
    return not _alive(pid)


@pytest.fixture
def run(tmp_path):
    (tmp_path / 'play.yml').write_text(PLAY)
    cmd = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', 'localhost,', '-c', 'local',
           '-e', 'ansible_python_interpreter=%s' % sys.executable, str(tmp_path / 'play.yml')]
    env = dict(os.environ, ANSIBLE_NOCOLOR='1', ANSIBLE_LOCALHOST_WARNING='False')
    r = faults.PlaybookRun(cmd, env, str(tmp_path), CALLBACK_DIR, name='t').start()
    yield r
    if r.proc.poll() is None:
        r.kill_controller()


def _procs(pred):
    out = []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                if pred(int(entry), faults._cmdline(int(entry))):  # pylint: disable=protected-access
                    out.append(int(entry))
            except OSError:
                pass
    return out


def test_trigger_on_task_start_then_kill_the_controller_process_group(run):
    """The trigger fires once the named task has run ``after`` seconds; the kill takes ansible-playbook and its
    workers (its process group) at once. The task's command, started in its own session as a module on a
    remote server is, goes on: the orphan a killed controller leaves behind."""
    at = run.wait_task('Long step that sleeps', after=1, timeout=300)
    assert at > 1
    assert run.running_task().endswith('Long step that sleeps')

    def sleeper(pid, cmd):
        return len(cmd) == 2 and os.path.basename(cmd[0]) == 'sleep' and cmd[1] == '300' and os.getsid(pid) != os.getsid(0)

    end = time.monotonic() + 60
    while not _procs(sleeper) and time.monotonic() < end:
        time.sleep(0.2)
    orphans = _procs(sleeper)
    assert orphans, 'the task did not start its command'
    try:
        group = _procs(lambda pid, cmd: os.getpgid(pid) == run.proc.pid)
        assert run.proc.pid in group
        run.kill_controller()
        assert run.proc.returncode == -9
        assert all(_wait_gone(pid) for pid in group)
        assert all(_alive(pid) for pid in orphans)
    finally:
        for pid in orphans:
            os.kill(pid, 9)


def test_ssh_cut_kills_only_this_runs_ssh_processes(tmp_path):
    """``ssh`` processes are told apart by the run's ControlPath directory on their command line."""
    ssh = tmp_path / 'ssh'
    ssh.symlink_to(sys.executable)
    control = str(tmp_path / 'run.cp')
    ours = subprocess.Popen([str(ssh), '-c', 'import time; time.sleep(300)', '-o', 'ControlPath=%s/abc' % control])
    other = subprocess.Popen([str(ssh), '-c', 'import time; time.sleep(300)', '-o', 'ControlPath=/elsewhere/abc'])
    try:
        end = time.monotonic() + 10
        while ours.pid not in faults.ssh_pids(control) and time.monotonic() < end:
            time.sleep(0.1)
        assert faults.ssh_pids(control) == [ours.pid]
        run = faults.PlaybookRun(['true'], {}, str(tmp_path), CALLBACK_DIR, name='run')
        assert run.cut_ssh() == [ours.pid]
        assert ours.wait(10) == -9
        assert other.poll() is None
    finally:
        for p in (ours, other):
            if p.poll() is None:
                p.kill()
                p.wait()

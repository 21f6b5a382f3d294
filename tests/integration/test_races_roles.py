# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Two reinstalls of one server (issue 24), and a reinstall whose controller was killed (issue 20, item 3): the
byol role run by real ansible-playbook processes against localhost, a loop device as the server's disk.

The image server stalls the first download until the test lets it go, so "while the first run holds the server"
is a state the test waits for, not a time it guesses. Which task ran when comes from a test-only callback
(``callback_plugins/byol_task_times.py``), not from the collection's own records."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import CALLBACK_DIR  # pylint: disable=import-error
from test_races import serve_stalling  # pylint: disable=import-error
from test_roles import ROLE_PLAY, byol_hook_image, images  # noqa: F401 pylint: disable=import-error,unused-import

SERVER_MODULES = ('byol_preflight', 'byol_partition', 'byol_image_burn', 'byol_configdrive', 'byol_bootable_hook',
                  'byol_bootorder', 'byol_wipe_disks')


@pytest.fixture
def stalling_image(byol_hook_image):  # noqa: F811 pylint: disable=redefined-outer-name
    with serve_stalling(byol_hook_image, 'byol-hook.qcow2') as served:
        yield served


class Runs(object):
    """ansible-playbook processes of the byol role on one server (one run directory, one mount root)."""

    def __init__(self, tmp_path, dev, url):
        self.tmp_path = tmp_path
        self.run_dir = tmp_path / 'run'
        self.task_log = tmp_path / 'tasks.jsonl'
        self.extra = {
            'byol_target_disks': [dev], 'byol_image_url': url,
            'byol_layout': [{'mount_point': '/', 'fs_type': 'ext4', 'size': 0}], 'byol_boot_mode': 'legacy',
            'byol_mount_root': str(tmp_path / 'target'), 'byol_reboot': False, 'byol_hostname': 'races',
            'byol_validate_certs': False,
        }
        self.procs = []
        self.done = []

    def start(self, name, **extra):
        work = self.tmp_path / name
        work.mkdir()
        (work / 'play.yml').write_text(ROLE_PLAY % 'byol')
        (work / 'extra.json').write_text(json.dumps(dict(self.extra, **extra)))
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.environ['BYOL_COLLECTIONS_PATH'], ANSIBLE_NOCOLOR='1',
                   ANSIBLE_LOCALHOST_WARNING='False', ANSIBLE_INVENTORY_UNPARSED_WARNING='False',
                   ANSIBLE_DEPRECATION_WARNINGS='False', ANSIBLE_CALLBACK_PLUGINS=CALLBACK_DIR,
                   ANSIBLE_CALLBACKS_ENABLED='byol_task_times', BYOL_TEST_TASK_LOG=str(self.task_log),
                   BYOL_RUN_DIR=str(self.run_dir))
        cmd = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', 'localhost,', '-c', 'local',
               '-e', 'ansible_python_interpreter=%s' % sys.executable, '-e', '@' + str(work / 'extra.json'),
               '--skip-tags', 'bootorder', str(work / 'play.yml')]
        out = open(str(work / 'output'), 'w')
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(work))
        out.close()
        proc.work = work
        self.procs.append(proc)
        return proc

    def finish(self, proc, timeout=900):
        self.done.append(proc)
        proc.wait(timeout)
        return proc.returncode, (proc.work / 'output').read_text()

    def lease(self):
        try:
            return json.loads((self.run_dir / 'reinstall.lease').read_text())
        except (OSError, ValueError):
            return None

    def history(self):
        path = self.run_dir / 'reinstall.lease.log'
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def tasks(self, pid):
        entries = [json.loads(line) for line in self.task_log.read_text().splitlines()]
        return [e for e in entries if e['pid'] == pid]

    def span(self, pid):
        """(first start, last end) of the tasks of run ``pid`` that use the server's modules."""
        times = [e['time'] for e in self.tasks(pid) if e['action'].split('.')[-1] in SERVER_MODULES]
        assert times, 'run %d ran none of the modules' % pid
        return min(times), max(times)

    def wait_for(self, what, predicate, timeout=300):
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, 'gave up waiting for ' + what
            for proc in self.procs:
                if proc.poll() is not None and proc.returncode != 0 and proc not in self.done:
                    pytest.fail('%s ended with %d while waiting for %s:\n%s' % (
                        proc.work.name, proc.returncode, what, (proc.work / 'output').read_text()[-4000:]))
            time.sleep(0.2)

    def kill_leftovers(self, pids):
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def descendants(pid):
    """The pids of the processes below ``pid`` (from /proc)."""
    children = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open('/proc/%s/stat' % entry) as f:
                    data = f.read()
            except OSError:
                continue
            ppid = int(data[data.rindex(')') + 2:].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def test_two_reinstalls_of_one_server_never_interleave(tmp_path, loopdev, stalling_image):
    """Two byol runs of one server started at once: the second waits for the first's whole reinstall (not only
    for its current step), and a third started with byol_lock_timeout 0 while the first holds the server is
    refused at once, naming the holder's controller, ansible-playbook pid, user, start time and last step.
    On main's code the two runs took turns step by step (their module tasks overlapped in time)."""
    url, handler = stalling_image
    dev = loopdev(size_mib=256)
    runs = Runs(tmp_path, dev, url)
    first, second = runs.start('a'), runs.start('b')
    try:
        # one of them is downloading the image (the server stalls it): it holds the server now
        runs.wait_for('the first download', handler.started.is_set)
        holder = runs.lease()
        assert holder, 'no reinstall lease while a run downloads the image'
        holder_proc = first if holder['controller']['pid'] == first.pid else second
        assert holder['controller']['pid'] == holder_proc.pid
        third = runs.start('c', byol_lock_timeout=0)
        rc, out = runs.finish(third)
        assert rc != 0, out
        assert 'Another run is reinstalling this server: the lease %s is held by run %s (controller %s, ' \
               'ansible-playbook pid %d, user ' % (runs.run_dir / 'reinstall.lease', holder['owner'],
                                                   holder['controller']['host'], holder_proc.pid) in out, out
        assert 'since %s; its last step: byol_image_burn at ' % holder['since'] in out, out
        assert 'Gave up at once (lock_timeout is 0)' in out
        assert not [e for e in runs.tasks(third.pid) if e['action'].split('.')[-1] in SERVER_MODULES], \
            'the refused run went on'
    finally:
        handler.release.set()
    rc_a, out_a = runs.finish(first)
    rc_b, out_b = runs.finish(second)
    assert rc_a == 0, out_a
    assert rc_b == 0, out_b
    other = second if holder_proc is first else first
    first_span, other_span = runs.span(holder_proc.pid), runs.span(other.pid)
    assert first_span[1] < other_span[0], (
        'the runs interleaved: %s ran its modules from %.2f to %.2f, %s from %.2f to %.2f' % (
            holder_proc.work.name, first_span[0], first_span[1], other.work.name, other_span[0], other_span[1]))
    # the lease history: the holder's whole run, then the other's; the refusal in between
    owners = [e['owner'] for e in runs.history() if e['event'] in ('take', 'renew', 'release', 'takeover')]
    switches = [i for i in range(1, len(owners)) if owners[i] != owners[i - 1]]
    assert len(switches) == 1, owners
    assert any(e['event'] == 'refuse' for e in runs.history())
    assert runs.lease() is None  # released at the end


def test_killed_controller_rerun_takes_over_after_the_orphan_module(tmp_path, loopdev, stalling_image):
    """ansible-playbook killed (SIGKILL) while its image download still runs on the server: a re-run with
    byol_lock_timeout 0 is refused naming the module that still runs (the orphan), not racing it; a re-run that
    waits takes the killed run's lease over as soon as the orphan ends, and installs, without operator action."""
    url, handler = stalling_image
    dev = loopdev(size_mib=256)
    runs = Runs(tmp_path, dev, url)
    killed = runs.start('killed')
    leftovers = []
    try:
        runs.wait_for('the download of the run to kill', handler.started.is_set)
        lease = runs.lease()
        assert lease and lease['controller']['pid'] == killed.pid
        leftovers = descendants(killed.pid)
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(60)
        runs.done.append(killed)
        note = json.loads((runs.run_dir / 'server.lock').read_text())
        assert note['module'] == 'byol_image_burn'
        os.kill(note['pid'], 0)  # the orphan module still runs (async: it left the controller's process tree)
        rc, out = runs.finish(runs.start('at-once', byol_lock_timeout=0))
        assert rc != 0, out
        assert ('Another run is changing this server: the lock %s is held by pid %d (byol_image_burn) since '
                % (runs.run_dir / 'server.lock', note['pid'])) in out, out
        rerun = runs.start('rerun')
        # it waits for the orphan (its lease request is blocked on the server lock)
        runs.wait_for('the re-run to reach its lease', lambda: any(
            e['action'].endswith('byol_lease') for e in runs.tasks(rerun.pid)))
        assert rerun.poll() is None
        assert runs.lease()['owner'] == lease['owner']
    finally:
        handler.release.set()
    try:
        rc, out = runs.finish(rerun)
    finally:
        runs.kill_leftovers(leftovers)
    assert rc == 0, out
    takeovers = [e for e in runs.history() if e['event'] == 'takeover']
    assert len(takeovers) == 1, runs.history()
    assert takeovers[0]['previous'] == lease['owner']
    assert takeovers[0]['reason'] == 'its controller says its ansible-playbook has ended'
    assert 'Took over the reinstall lease of run %s' % lease['owner'] in out
    assert runs.lease() is None

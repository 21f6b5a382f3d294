# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The per-server lock and the race-free shared directories (issue 24)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils import _lock as L
from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError
from ansible_collections.baremetal.byol.plugins.module_utils._progress import Progress

HOLD = ('import os, sys, time\n'
        'from ansible_collections.baremetal.byol.plugins.module_utils import _lock as L\n'
        'L.ServerLock("byol_partition", timeout=0, path=sys.argv[1], environ={"SSH_CONNECTION": "192.0.2.7 40022 10.0.0.2 22"}).acquire()\n'
        'print("held", flush=True)\n'
        'sys.stdin.read()\n')


def _holder(path):
    proc = subprocess.Popen([sys.executable, '-c', HOLD, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert proc.stdout.readline().strip() == 'held'
    return proc


def test_second_run_fails_at_once_naming_the_holder(tmp_path):
    path = str(tmp_path / 'run' / 'server.lock')
    proc = _holder(path)
    try:
        with pytest.raises(ByolError) as err:
            L.ServerLock('byol_image_burn', timeout=0, path=path).acquire()
        msg = err.value.msg
        assert 'held by pid %d (byol_partition) since ' % proc.pid in msg
        assert 'from 192.0.2.7 port 40022 (ssh)' in msg and 'Gave up at once' in msg
        assert err.value.extra['lock_holder']['pid'] == proc.pid
    finally:
        proc.stdin.close()
        proc.wait()
    # the holder ended: the kernel dropped its flock, the next run gets the lock although the note is still there
    lock = L.ServerLock('byol_image_burn', timeout=0, path=path).acquire()
    assert json.load(open(path))['module'] == 'byol_image_burn'
    lock.release()


def test_second_run_waits_then_gives_up(tmp_path):
    path = str(tmp_path / 'server.lock')
    proc = _holder(path)
    now = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s
    try:
        with pytest.raises(ByolError) as err:
            L.ServerLock('byol_configdrive', timeout=5, path=path, clock=lambda: now[0], sleep=sleep).acquire()
        assert 'Waited 5 s (lock_timeout)' in err.value.msg
        assert 4.9 < sum(slept) < 6
    finally:
        proc.stdin.close()
        proc.wait()


def test_waiting_run_gets_the_lock_when_the_holder_ends(tmp_path):
    path = str(tmp_path / 'server.lock')
    proc = _holder(path)
    got = []

    def wait():
        got.append(L.ServerLock('byol_bootorder', timeout=60, path=path).acquire())
    t = threading.Thread(target=wait)
    t.start()
    t.join(0.5)
    assert t.is_alive() and not got  # still waiting while the holder runs
    proc.stdin.close()
    proc.wait()
    t.join(30)
    assert got and got[0].waited > 0
    got[0].release()


def test_dead_holder_is_told_from_a_live_one():
    note = {'pid': 999999999, 'module': 'byol_partition', 'since': '2026-01-01T00:00:00Z', 'origin': 'local'}
    assert 'that process has ended' in L.describe_holder(note)
    assert 'that process has ended' not in L.describe_holder(dict(note, pid=os.getpid()))
    assert 'left no note' in L.describe_holder({})


def test_note_with_a_tail_of_the_previous_note():
    assert L.parse_note(b'{"pid": 5}\n"module": "x"}') == {'pid': 5}
    assert L.parse_note(b'') == {} and L.parse_note(b'[1]') == {}


def test_origin():
    assert L.origin({'SSH_CONNECTION': '2001:db8::1 51000 2001:db8::2 22'}) == '2001:db8::1 port 51000 (ssh)'
    assert L.origin({}) == 'local'


def test_symlink_lock_file_refused(tmp_path):
    target = tmp_path / 'elsewhere'
    target.write_text('precious\n')
    os.symlink(str(target), str(tmp_path / 'server.lock'))
    with pytest.raises(ByolError, match='cannot be opened'):
        L.ServerLock('byol_partition', timeout=0, path=str(tmp_path / 'server.lock')).acquire()
    assert target.read_text() == 'precious\n'


def test_negative_timeout_refused(tmp_path):
    with pytest.raises(ByolError, match='lock_timeout must be 0'):
        L.ServerLock('byol_partition', timeout=-1, path=str(tmp_path / 'l')).acquire()


def test_check_mode_takes_no_lock(tmp_path, monkeypatch):
    monkeypatch.setenv('BYOL_RUN_DIR', str(tmp_path / 'run'))

    class M(object):
        check_mode = True
        _name = 'baremetal.byol.byol_partition'
    assert L.take_server_lock(M(), 'byol_partition', 0) is None
    assert not (tmp_path / 'run').exists()
    M.check_mode = False
    lock = L.take_server_lock(M(), 'byol_partition', 0)
    assert lock.path == str(tmp_path / 'run' / 'server.lock') and lock.note['module'] == 'byol_partition'
    lock.release()


# -- shared directories ------------------------------------------------------------------------

def test_ensure_dir_refuses_a_symlink(tmp_path):
    (tmp_path / 'real').mkdir()
    os.symlink(str(tmp_path / 'real'), str(tmp_path / 'link'))
    with pytest.raises(ByolError, match='is a symbolic link, not a directory'):
        L.ensure_dir(str(tmp_path / 'link'), what='state_dir')
    os.symlink(str(tmp_path / 'missing'), str(tmp_path / 'dangling'))
    with pytest.raises(ByolError, match='is a symbolic link, not a directory'):
        L.ensure_dir(str(tmp_path / 'dangling'))
    assert not (tmp_path / 'missing').exists()


def test_ensure_dir_refuses_a_file(tmp_path):
    (tmp_path / 'f').write_text('x')
    with pytest.raises(ByolError, match='exists and is not a directory'):
        L.ensure_dir(str(tmp_path / 'f'))


def test_ensure_dir_refuses_another_owner(tmp_path, monkeypatch):
    (tmp_path / 'd').mkdir()
    monkeypatch.setattr(L.os, 'geteuid', lambda: os.stat(str(tmp_path)).st_uid + 1)
    with pytest.raises(ByolError, match='belongs to uid'):
        L.ensure_dir(str(tmp_path / 'd'))


def test_ensure_dir_reports_creation(tmp_path):
    assert L.ensure_dir(str(tmp_path / 'a' / 'b')) is True
    assert L.ensure_dir(str(tmp_path / 'a' / 'b')) is False


def test_progress_directory_created_by_many_at_once(tmp_path):
    """16 threads create the progress directory together (it is missing): none fails with "File exists".

    On main's Progress (isdir, then makedirs) a run that lost the race raised FileExistsError; a barrier
    lines the threads up right at that window and os.path.isdir answers False for everyone, as it does
    for runs that all look before any creates."""
    for round_ in range(10):
        parent = tmp_path / ('r%d' % round_) / 'run'
        barrier = threading.Barrier(16)
        errors = []
        real_makedirs = os.makedirs

        def makedirs(*a, **kw):
            barrier.wait(10)
            return real_makedirs(*a, **kw)

        def one():
            try:
                Progress(path=str(parent / 'image_burn.progress'))
            except Exception as exc:  # pylint: disable=broad-except
                errors.append(exc)
        saved = os.makedirs
        os.makedirs = makedirs
        try:
            threads = [threading.Thread(target=one) for dummy in range(16)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
        finally:
            os.makedirs = saved
        assert errors == [] and parent.is_dir()


def test_progress_directory_that_is_a_symlink_is_refused(tmp_path):
    (tmp_path / 'elsewhere').mkdir()
    os.symlink(str(tmp_path / 'elsewhere'), str(tmp_path / 'run'))
    with pytest.raises(ByolError, match='progress directory .* is a symbolic link'):
        Progress(path=str(tmp_path / 'run' / 'image_burn.progress'))


def test_mount_point_of_another_user_allowed_a_link_refused(tmp_path, monkeypatch):
    (tmp_path / 'home').mkdir()
    monkeypatch.setattr(L.os, 'geteuid', lambda: os.stat(str(tmp_path)).st_uid + 1)
    assert L.ensure_dir(str(tmp_path / 'home'), what='mount point', check_owner=False) is False
    os.symlink('/etc', str(tmp_path / 'var'))
    with pytest.raises(ByolError, match='mount point .* is a symbolic link'):
        L.ensure_dir(str(tmp_path / 'var'), what='mount point', check_owner=False)


# ---------------------------------------------------------------- the reinstall lease (a whole run, not one module)

def _lease_of(tmp_path):
    return L.read_lease(str(tmp_path / 'reinstall.lease'))


def _history(tmp_path):
    return [json.loads(line) for line in (tmp_path / 'reinstall.lease.log').read_text().splitlines()]


def test_lease_keeps_a_run_together_between_its_steps(tmp_path):
    """Run A holds the lease; between A's steps (no module of A runs, the flock is free) a module of run B and a
    module run alone wait, then refuse naming A; A's own next step goes on and renews it."""
    path = str(tmp_path / 'server.lock')
    ctl = {'host': 'ctl1', 'pid': 4242, 'pid_start': 77, 'user': 'ops'}
    changed, lease, previous = L.take_lease('A', ctl, ttl=900, timeout=0, path=path,
                                            environ={'SSH_CONNECTION': '192.0.2.7 40022 10.0.0.2 22'})
    assert changed and previous is None and lease['controller'] == ctl
    for owner in ('B', None):
        now = [0.0]

        def sleep(s):
            now[0] += s
        with pytest.raises(ByolError) as err:
            L.ServerLock('byol_partition', timeout=5, path=path, owner=owner, clock=lambda: now[0], sleep=sleep).acquire()
        msg = err.value.msg
        assert ('Another run is reinstalling this server: the lease %s is held by run A (controller ctl1, ansible-playbook '
                'pid 4242, user ops, connected from 192.0.2.7 port 40022 (ssh)) since ' % (tmp_path / 'reinstall.lease')) in msg
        assert 'its last step: byol_lease at ' in msg and 'Waited 5 s (lock_timeout).' in msg
        assert now[0] >= 5  # it waited
    lock = L.ServerLock('byol_image_burn', timeout=0, path=path, owner='A').acquire()
    lock.release()
    assert _lease_of(tmp_path)['step'] == 'byol_image_burn'
    events = [(e['event'], e['owner']) for e in _history(tmp_path)]
    assert events == [('take', 'A'), ('refuse', 'A'), ('refuse', 'A'), ('renew', 'A')]
    # A's lease again: only renewed
    assert not L.take_lease('A', ctl, ttl=900, timeout=0, path=path)[0]
    assert L.release_lease('B', timeout=0, path=path) == (False, _lease_of(tmp_path))  # not B's: left alone
    assert L.release_lease('A', timeout=0, path=path)[0]
    assert _lease_of(tmp_path) is None
    L.ServerLock('byol_partition', timeout=0, path=path, owner='B').acquire().release()  # free for B now


def test_waiting_run_gets_the_lease_when_the_holder_releases(tmp_path):
    path = str(tmp_path / 'server.lock')
    L.take_lease('A', {}, ttl=900, timeout=0, path=path)
    released = []

    def sleep(dummy):
        if not released:
            released.append(L.release_lease('A', timeout=0, path=path))
    lock = L.ServerLock('byol_partition', timeout=60, path=path, owner='B', sleep=sleep).acquire()
    lock.release()
    assert released and _lease_of(tmp_path)['owner'] == 'B'


def test_stale_lease_taken_over_after_its_ttl(tmp_path, monkeypatch):
    path = str(tmp_path / 'server.lock')
    L.take_lease('A', {'host': 'ctl1', 'pid': 1}, ttl=60, timeout=0, path=path)
    with pytest.raises(ByolError):
        L.take_lease('B', {}, ttl=60, timeout=0, path=path)
    real = L.time.time
    monkeypatch.setattr(L.time, 'time', lambda: real() + 61)
    changed, lease, previous = L.take_lease('B', {}, ttl=60, timeout=0, path=path)
    assert changed and lease['owner'] == 'B' and previous['owner'] == 'A'
    takeover = _history(tmp_path)[-1]
    assert takeover['event'] == 'takeover' and takeover['previous'] == 'A' and takeover['reason'] == 'no step for 60 s (its ttl)'


def test_takeover_only_of_the_run_named(tmp_path):
    """The controller found run A's ansible-playbook dead and names A: A's live lease is taken over, but not C's."""
    path = str(tmp_path / 'server.lock')
    L.take_lease('C', {}, ttl=900, timeout=0, path=path)
    with pytest.raises(ByolError):
        L.take_lease('B', {}, ttl=900, timeout=0, path=path, takeover='A')
    L.release_lease('C', timeout=0, path=path)
    L.take_lease('A', {}, ttl=900, timeout=0, path=path)
    changed, lease, previous = L.take_lease('B', {}, ttl=900, timeout=0, path=path, takeover='A')
    assert changed and previous['owner'] == 'A'
    assert _history(tmp_path)[-1]['reason'] == 'its controller says its ansible-playbook has ended'


def test_module_takes_no_lease_of_its_own_without_lock_owner(tmp_path):
    path = str(tmp_path / 'server.lock')
    L.ServerLock('byol_partition', timeout=0, path=path).acquire().release()
    assert _lease_of(tmp_path) is None


def test_long_step_renews_the_lease_when_it_ends(tmp_path, monkeypatch):
    path = str(tmp_path / 'server.lock')
    L.take_lease('A', {}, ttl=60, timeout=0, path=path)
    lock = L.ServerLock('byol_image_burn', timeout=0, path=path, owner='A').acquire()
    real = L.time.time
    monkeypatch.setattr(L.time, 'time', lambda: real() + 3600)  # the step took an hour
    lock.renew_at_exit()
    lock.release()
    assert not L.lease_expired(_lease_of(tmp_path))


def test_lease_that_is_a_symlink_is_ignored(tmp_path):
    (tmp_path / 'elsewhere').write_text(json.dumps({'owner': 'X', 'renewed_epoch': 9e9}))
    os.symlink(str(tmp_path / 'elsewhere'), str(tmp_path / 'reinstall.lease'))
    assert L.read_lease(str(tmp_path / 'reinstall.lease')) is None

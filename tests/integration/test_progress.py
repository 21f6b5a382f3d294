# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Live progress in the play's output (plugins/action/byol_image_burn.py), with a real ansible-playbook run.

A slow HTTP server serves a raw image to byol_image_burn (mode disk, onto a loop device): while the step runs,
the play prints progress lines; its result equals the synchronous run's (byol_progress=false), in check mode
and with --diff too; the Authorization header reaches the server and never the output.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from conftest import CALLBACK_DIR, _ansible_bin, run_ansible

MIB = 1024 * 1024
SECRET = 'Bearer progress-test-s3cr3t-token'
# what differs between two runs of the same write: durations, rates, and how many reports they made
VOLATILE = ('seconds', 'phases', 'peak_rss', 'progress_reports')


class SlowServer(object):
    """Serves one file at ``rate`` bytes per second; counts the requests that carried ``auth``."""

    def __init__(self, path, rate, auth):
        self.path = path
        self.rate = rate
        self.auth = auth
        self.requests = []
        self.httpd = None

    def __enter__(self):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format, *args):  # pylint: disable=redefined-builtin
                pass

            def _head(self):
                outer.requests.append((self.command, self.headers.get('Authorization') == outer.auth))
                if self.headers.get('Authorization') != outer.auth:
                    self.send_response(401)
                    self.send_header('Content-Length', '0')
                    self.end_headers()
                    return False
                self.send_response(200)
                self.send_header('Content-Length', str(os.path.getsize(outer.path)))
                self.send_header('Content-Type', 'application/octet-stream')
                self.end_headers()
                return True

            def do_HEAD(self):
                self._head()

            def do_GET(self):
                if not self._head():
                    return
                chunk = 64 * 1024
                with open(outer.path, 'rb') as f:
                    while True:
                        data = f.read(chunk)
                        if not data:
                            break
                        try:
                            self.wfile.write(data)
                        except (BrokenPipeError, ConnectionResetError):
                            return
                        time.sleep(float(len(data)) / outer.rate)

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def url(self):
        return 'http://127.0.0.1:%d/disk.raw' % self.httpd.server_address[1]


def run_playbook(playbook, extra_vars=None, check=False, diff=False, verbosity=0, hosts='localhost,'):
    """ansible-playbook against localhost; (rc, the last task's result, the whole output)."""
    results = tempfile.mkdtemp(prefix='byol-progress-result-')
    environ = dict(os.environ)
    environ.update({
        'ANSIBLE_COLLECTIONS_PATH': os.environ['BYOL_COLLECTIONS_PATH'],
        'ANSIBLE_STDOUT_CALLBACK': 'ansible.builtin.default',
        'ANSIBLE_CALLBACK_PLUGINS': CALLBACK_DIR,
        'ANSIBLE_CALLBACKS_ENABLED': 'byol_result_file',
        'BYOL_TEST_RESULT_DIR': results,
        'ANSIBLE_NOCOLOR': '1',
        'ANSIBLE_PYTHON_INTERPRETER': sys.executable,
        'ANSIBLE_LOCALHOST_WARNING': 'False',
        'ANSIBLE_INVENTORY_UNPARSED_WARNING': 'False',
    })
    # in a file: -vvvv prints the command line
    with open(os.path.join(results, 'vars.json'), 'w') as f:
        json.dump(extra_vars or {}, f)
    cmd = [_ansible_bin('ansible-playbook'), '-i', hosts, '-c', 'local', '-f', '5', playbook,
           '-e', '@' + os.path.join(results, 'vars.json')]
    if check:
        cmd.append('--check')
    if diff:
        cmd.append('--diff')
    if verbosity:
        cmd.append('-' + 'v' * verbosity)
    run = run_ansible(cmd, environ, results)
    return run.rc, run.result, run.output


def stable(result):
    return dict((k, v) for k, v in result.items() if k not in VOLATILE)


PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Write the image
      baremetal.byol.byol_image_burn:
        url: "{{ url }}"
        image_type: raw
        device: "{{ device }}"
        state_dir: "{{ state_dir }}"
        progress_file: "{{ progress_file }}"
        progress_interval: 1
        force: "{{ force | default(false) }}"
        http_headers:
          Authorization: "{{ secret }}"
"""


@pytest.fixture
def slow_image(tmp_path):
    if os.geteuid() != 0:
        pytest.skip('integration tests need root')
    image = str(tmp_path / 'disk.raw')
    with open(image, 'wb') as f:
        f.truncate(24 * MIB)
    subprocess.run(['sgdisk', '-o', '-n', '1:2048:0', '-t', '1:8300', image], check=True, stdout=subprocess.DEVNULL)
    # data in the partition, so the write phase has something to write
    with open(image, 'r+b') as f:
        f.seek(2 * MIB)
        f.write(os.urandom(16 * MIB))
    # about 12 s for the whole image: several polls, even on a loaded machine
    with SlowServer(image, rate=2 * MIB, auth=SECRET) as srv:
        yield srv


def test_progress_lines_and_result_unchanged(slow_image, loopdev, tmp_path):
    dev = loopdev(size_mib=64)
    playbook = str(tmp_path / 'burn.yml')
    with open(playbook, 'w') as f:
        f.write(PLAYBOOK)
    evars = dict(url=slow_image.url, device=dev, state_dir=str(tmp_path / 'state'), secret=SECRET,
                 progress_file=str(tmp_path / 'progress.json'), byol_progress_interval=1)

    # with progress (the default), at the highest verbosity
    rc, live, out = run_playbook(playbook, evars, verbosity=4)
    assert rc == 0, out
    assert live['changed'] and live['checksum'], out
    lines = [line for line in out.splitlines() if line.startswith('[localhost] image (running ')]
    numbers = [line for line in lines if re.search(r': (download|download\+write|write): [0-9.]+ [KMG]iB of 24\.0 MiB '
                                                   r'\([0-9.]+%\), [0-9.]+ [KMG]?i?B/s, (ETA|done)', line)]
    assert len(numbers) >= 2, out
    # the lines came while the step ran: before the task's own result
    assert out.index(numbers[0]) < out.index('changed: [localhost]'), out
    # the header reached the server and never the output
    assert ('GET', True) in slow_image.requests
    assert SECRET not in out and 's3cr3t' not in out

    # the same write, synchronously: the same result
    rc, sync, out_sync = run_playbook(playbook, dict(evars, force=True, byol_progress=False))
    assert rc == 0, out_sync
    assert '[localhost] image (running' not in out_sync
    rc, live_forced, out = run_playbook(playbook, dict(evars, force=True))
    assert rc == 0, out
    assert stable(live_forced) == stable(sync)
    assert set(live) == set(sync)

    # the second run without force: unchanged, the same way in both
    rc, again_live, out = run_playbook(playbook, evars)
    rc2, again_sync, out2 = run_playbook(playbook, dict(evars, byol_progress=False))
    assert rc == 0 and rc2 == 0, out + out2
    assert not again_live['changed'] and stable(again_live) == stable(again_sync)

    # check mode with --diff: the same plan
    rc, check_live, out = run_playbook(playbook, dict(evars, force=True), check=True, diff=True)
    rc2, check_sync, out2 = run_playbook(playbook, dict(evars, force=True, byol_progress=False), check=True, diff=True)
    assert rc == 0 and rc2 == 0, out + out2
    assert check_live['changed'] and 'plan' in check_live
    assert stable(check_live) == stable(check_sync)


MANY_PLAYBOOK = PLAYBOOK.replace('hosts: localhost', 'hosts: all').replace(
    '"{{ device }}"', '"{{ devices[inventory_hostname] }}"').replace(
    '"{{ progress_file }}"', '"{{ progress_file }}.{{ inventory_hostname }}"').replace(
    '"{{ state_dir }}"', '"{{ state_dir }}/{{ inventory_hostname }}"').replace(
    # the three "hosts" are one machine: each gets its own run directory, hence its own per-server lock
    # (_lock.py), or the lock would rightly make them take turns
    '    - name: Write the image\n',
    '    - name: Write the image\n      environment:\n        BYOL_RUN_DIR: "{{ state_dir }}/run-{{ inventory_hostname }}"\n')


def test_progress_of_several_hosts_at_once(slow_image, loopdev, tmp_path):
    """Three hosts (forks), each its own job and its own lines."""
    hosts = ['h1', 'h2', 'h3']
    devices = dict((h, loopdev(size_mib=64)) for h in hosts)
    playbook = str(tmp_path / 'burn.yml')
    with open(playbook, 'w') as f:
        f.write(MANY_PLAYBOOK)
    evars = dict(url=slow_image.url, devices=devices, state_dir=str(tmp_path / 'state'), secret=SECRET,
                 progress_file=str(tmp_path / 'progress.json'), byol_progress_interval=1)
    rc, dummy, out = run_playbook(playbook, evars, hosts=','.join(hosts) + ',')
    assert rc == 0, out
    for h in hosts:
        assert len([line for line in out.splitlines() if line.startswith('[%s] image (running ' % h) and '%' in line]) >= 2, out
        assert 'changed: [%s]' % h in out
    # the three downloads ran side by side: each host printed a line before the first result
    first_result = min(out.index('changed: [%s]' % h) for h in hosts)
    assert all(out.index('[%s] image (running ' % h) < first_result for h in hosts), out


def test_failure_result_unchanged(slow_image, loopdev, tmp_path):
    """A refused request fails the same way with and without progress, and the header stays hidden."""
    dev = loopdev(size_mib=64)
    playbook = str(tmp_path / 'burn.yml')
    with open(playbook, 'w') as f:
        f.write(PLAYBOOK)
    evars = dict(url=slow_image.url, device=dev, state_dir=str(tmp_path / 'state'), secret='Bearer wrong-t0ken-value',
                 progress_file=str(tmp_path / 'progress.json'), byol_progress_interval=1)
    rc, live, out = run_playbook(playbook, evars, verbosity=3)
    rc2, sync, out2 = run_playbook(playbook, dict(evars, byol_progress=False), verbosity=3)
    assert rc != 0 and rc2 != 0
    assert live['failed'] and '401' in live['msg']
    assert ('GET', False) in slow_image.requests or ('HEAD', False) in slow_image.requests
    assert stable(live) == stable(sync)
    assert 'wrong-t0ken' not in out and 'wrong-t0ken' not in out2


# -- the hook: running time and latest output line -------------------------------------------------------------

BUSYBOX = shutil.which('busybox')
HOOK_SECRET = 'hook-env-t0ken-5521'

HOOK_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Run the hook
      baremetal.byol.byol_bootable_hook:
        root: "{{ root }}"
        timeout: 120
        force: "{{ force | default(false) }}"
        image_digest: sha256:progress-test
        progress_file: "{{ progress_file }}"
        environment:
          HOOK_TOKEN: "{{ token }}"
"""


@pytest.fixture
def hook_tree(loopdev, tmp_path):
    """A mounted ext4 filesystem with a busybox system and a hook that talks for about 12 s."""
    if BUSYBOX is None:
        pytest.skip('busybox-static is not installed')
    dev = loopdev(size_mib=64)
    subprocess.run(['mkfs.ext4', '-q', '-F', dev], check=True)
    root = str(tmp_path / 'a')
    os.mkdir(root)
    subprocess.run(['mount', dev, root], check=True)
    for d in ('bin', 'root/.ovh', 'dev', 'proc', 'sys', 'run', 'tmp', 'etc', 'var'):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    shutil.copy2(BUSYBOX, os.path.join(root, 'bin', 'busybox'))
    for applet in ('sh', 'sleep', 'echo', 'printf'):
        os.symlink('busybox', os.path.join(root, 'bin', applet))
    script = os.path.join(root, 'root/.ovh/make_image_bootable.sh')
    with open(script, 'w') as f:
        # the secret of the environment, and an escape sequence, in the output while it runs
        f.write('#!/bin/sh\nfor i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo "building step $i of 12 ($HOOK_TOKEN)"; '
                'printf "\\033]0;title\\007\\n"; echo "step $i done" >&2; sleep 1; done\necho finished\n')
    os.chmod(script, 0o755)
    try:
        yield root
    finally:
        subprocess.run(['umount', root], check=False)


def test_hook_progress_lines_and_result_unchanged(hook_tree, tmp_path):
    playbook = str(tmp_path / 'hook.yml')
    with open(playbook, 'w') as f:
        f.write(HOOK_PLAYBOOK)
    progress = str(tmp_path / 'hook.progress')
    evars = dict(root=hook_tree, token=HOOK_SECRET, progress_file=progress, byol_progress_interval=1)
    rc, live, out = run_playbook(playbook, evars, verbosity=4)
    assert rc == 0, out
    assert live['changed'] and live['ran'] and 'finished' in live['stdout']
    lines = [line for line in out.splitlines() if line.startswith('[localhost] hook (running ')]
    talking = [line for line in lines
               if re.search(r': hook: [0-9]+s elapsed \| last output: (building step [0-9]+ of 12 \(\*+\)|step [0-9]+ done|\]0;title)$',
                            line)]
    assert len(talking) >= 2, out
    assert out.index(talking[0]) < out.index('changed: [localhost]')
    # the secret is masked in the progress (and hidden in the result, as before), escape sequences are gone
    assert HOOK_SECRET not in out
    assert not any('\x1b' in line or '\x07' in line for line in lines)
    with open(progress) as f:
        last = json.load(f)
    assert last['final'] and last['output'] == 'finished' and HOOK_SECRET not in json.dumps(last)

    # the synchronous run's result is the same (durations aside)
    rc, sync, out_sync = run_playbook(playbook, dict(evars, force=True, byol_progress=False))
    rc2, live_forced, out2 = run_playbook(playbook, dict(evars, force=True))
    assert rc == 0 and rc2 == 0, out_sync + out2
    assert '[localhost] hook (running' not in out_sync

    def same(res):
        return dict((k, v) for k, v in res.items() if k not in ('duration', 'msg'))
    assert same(live_forced) == same(sync)
    assert set(live_forced) == set(sync)
    # check mode: the module runs nothing and writes no progress; the result is the same
    os.unlink(progress)
    rc, check_live, out = run_playbook(playbook, dict(evars, force=True), check=True, diff=True)
    rc2, check_sync, out2 = run_playbook(playbook, dict(evars, force=True, byol_progress=False), check=True, diff=True)
    # (ansible-core 2.19 counts the check-mode result's rc: null as a failure, with or without the action plugin)
    assert rc == rc2 and check_live == check_sync, out + out2
    assert check_live['ran'] and check_live['msg'].startswith('Would run')
    assert not os.path.exists(progress)

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One server, many runs (issue 24): real module processes started together on loop devices.

The modules run as Ansible runs them on a server (``python <module> <args file>``), so that sixteen of them
start within a few milliseconds; ``BYOL_RUN_DIR`` points the lock at a directory of the test."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils._blockdev import write_sectors

IMAGE_MIB = 2


def _module_path(name):
    root = os.environ['BYOL_COLLECTIONS_PATH']
    return os.path.join(root, 'ansible_collections', 'baremetal', 'byol', 'plugins', 'modules', name + '.py')


def start_module(name, args, tmp_path, run_dir, tag):
    argfile = tmp_path / ('args-%s.json' % tag)
    argfile.write_text(json.dumps({'ANSIBLE_MODULE_ARGS': args}))
    env = dict(os.environ, PYTHONPATH=os.environ['BYOL_COLLECTIONS_PATH'], BYOL_RUN_DIR=str(run_dir))
    return subprocess.Popen([sys.executable, _module_path(name), str(argfile)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def result_of(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    try:
        return json.loads(out[out.index('{'):])
    except ValueError:
        return {'failed': True, 'msg': 'no JSON result (crashed?): %s %s' % (out[-2000:], err[-2000:])}


def make_raw_image(path):
    with open(path, 'wb') as f:
        f.truncate(IMAGE_MIB * 1024 * 1024)
    subprocess.run(['sfdisk', '--quiet', path], input='label: gpt\n,,L\n', text=True, check=True)
    return path


def test_sixteen_modules_at_once_with_the_state_directory_absent(loopdev, tmp_path):
    """16 image writes onto 16 disks start together, state, progress and lock directories missing: each
    ends with its own result (its disk written, its record), BYOL_RACE_ROUNDS rounds in a row (3 in the
    default run, about 50 s a round under load; the issue's proof is BYOL_RACE_ROUNDS=10). On the code
    before the fix some lost the race on the directories ("File exists") or on the record's shared
    temporary name (seen in round 7 of 10)."""
    image = make_raw_image(str(tmp_path / 'image.raw'))
    disks = [loopdev(size_mib=4) for dummy in range(16)]
    for round_ in range(int(os.environ.get('BYOL_RACE_ROUNDS', '3'))):
        base = tmp_path / ('round%d' % round_)
        base.mkdir()
        procs = []
        for i, disk in enumerate(disks):
            procs.append(start_module('byol_image_burn', {
                'url': 'file://' + image, 'image_type': 'raw', 'device': disk,
                'state_dir': str(base / 'state'), 'progress_file': str(base / 'run' / 'image_burn.progress')},
                tmp_path, base / 'run', '%d-%d' % (round_, i)))
        results = [result_of(p) for p in procs]
        for disk, res in zip(disks, results):
            assert not res.get('failed'), 'round %d, %s: %s' % (round_, disk, res.get('msg'))
            assert res['changed'] and res['device'] == disk
            assert res['marker'] == str(base / 'state' / ('image_burn-%s.json' % os.path.basename(disk)))
            assert json.load(open(res['marker']))['device'] == disk
        assert sorted(os.listdir(str(base / 'state'))) == sorted('image_burn-%s.json' % os.path.basename(d) for d in disks)


class _StallingHandler(http.server.BaseHTTPRequestHandler):
    """Serves the image; the body waits until the test releases it (a download that is still running)."""
    image = None
    release = None
    started = None

    def log_message(self, *a):
        pass

    def do_HEAD(self):
        self.send_response(200)
        self.send_header('Content-Length', str(os.path.getsize(self.image)))
        self.end_headers()

    def do_GET(self):
        with open(self.image, 'rb') as f:
            data = f.read()
        self.send_response(200)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data[:512 * 1024])
        self.wfile.flush()
        self.started.set()
        self.release.wait(120)
        self.wfile.write(data[512 * 1024:])


@contextlib.contextmanager
def serve_stalling(image, name):
    """An HTTP server on 127.0.0.1 whose image download stalls after 512 KiB until ``handler.release`` is set.

    Yields the image's URL and the handler class (``started`` is set when a download began)."""
    handler = type('H', (_StallingHandler,), {'image': image, 'release': threading.Event(), 'started': threading.Event()})
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield 'http://127.0.0.1:%d/%s' % (server.server_address[1], name), handler
    finally:
        handler.release.set()
        server.shutdown()


@pytest.fixture
def stalling_server(tmp_path):
    with serve_stalling(make_raw_image(str(tmp_path / 'slow.raw')), 'slow.raw') as served:
        yield served


def test_two_runs_on_one_disk_one_success_one_refusal(loopdev, tmp_path, stalling_server):
    """While an image write holds the server (its download is still running), a partitioning of the same disk
    with lock_timeout 0 is refused naming the holder, and writes nothing; one with a wait runs after it.
    On main's code the partitioning ran right away, in the middle of the image write."""
    url, handler = stalling_server
    disk = loopdev(size_mib=64)
    run_dir = tmp_path / 'run'
    writer = start_module('byol_image_burn', {'url': url, 'image_type': 'raw', 'device': disk, 'validate_certs': False,
                                              'state_dir': str(tmp_path / 'state'),
                                              'progress_file': str(run_dir / 'image_burn.progress')},
                          tmp_path, run_dir, 'writer')
    try:
        assert handler.started.wait(60), 'the image write never started its download'
        note = json.load(open(str(run_dir / 'server.lock')))
        assert note['pid'] == writer.pid and note['module'] == 'byol_image_burn'
        before = write_sectors(disk)
        layout = [{'mount_point': '/', 'fs_type': 'ext4', 'size': 0}]
        part_args = {'disks': [disk], 'layout': layout, 'boot_mode': 'legacy', 'configdrive_size': 0,
                     'mount_root': str(tmp_path / 'mnt'), 'lock_timeout': 0}
        refused = result_of(start_module('byol_partition', part_args, tmp_path, run_dir, 'refused'))
        assert refused.get('failed'), refused
        assert ('the lock %s is held by pid %d (byol_image_burn) since ' % (run_dir / 'server.lock', writer.pid)
                in refused['msg']), refused['msg']
        assert 'from local' in refused['msg'] and 'Gave up at once (lock_timeout is 0)' in refused['msg']
        assert write_sectors(disk) == before  # the refused run wrote nothing
        waiter = start_module('byol_image_burn', {
            'url': url, 'image_type': 'raw', 'device': disk, 'validate_certs': False, 'lock_timeout': 120,
            'state_dir': str(tmp_path / 'state'), 'progress_file': str(run_dir / 'image_burn.progress')},
            tmp_path, run_dir, 'waiter')
        time.sleep(1)
        assert waiter.poll() is None  # it waits for the writer
    finally:
        handler.release.set()
    first = result_of(writer)
    assert not first.get('failed') and first['changed'], first.get('msg')
    second = result_of(waiter)
    # it ran after the first one: the image is already there, nothing written
    assert not second.get('failed') and not second['changed'], second.get('msg')

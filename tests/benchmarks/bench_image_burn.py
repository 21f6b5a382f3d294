# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark byol_image_burn against its baselines, in ONE run, as ratios (not a timed test).

Needs root, loop devices, curl, qemu-img, sgdisk. From the repository root::

    sudo .../venv/bin/python tests/benchmarks/bench_image_burn.py --size-gib 4

For raw and qcow2 it measures, on the same loop device and the lab's HTTP server on 127.0.0.1:

- ``module``: wall time of ``ansible localhost -m baremetal.byol.byol_image_burn`` (force, with a
  sha512 checksum), and the module's own time and peak RSS;
- ``curl``: ``curl -o /dev/null`` of the same URL alone;
- ``write``: ``dd bs=4M conv=fsync`` of the raw data onto the device alone;
- ``sequential``: download to a file (``curl -o``, on tmpfs like the module's scratch), then
  ``sha512sum``, then ``qemu-img convert -f <type> -O raw`` onto the device.

- ``resume`` (unless ``--no-resume``): the raw image over the server's Python path uncut, then cut
  three times and resumed with ``Range``, then cut three times and restarted (no ``Range``), as
  ratios to the uncut run; and the qcow2 image (streamed) uncut and cut three times and resumed.

The module runs as a plain task (``-e byol_progress=false``): the live progress of the action plugin
runs it as an async job and polls it (0.5 s, then up to 5 s apart), which adds a latency of up to
5 s that does not depend on the image; the qcow2 row ``+poller`` measures it once with the default.
Each module run gets its own ``BYOL_RUN_DIR`` (lock and progress files), so a module of another test
on the same machine holding the server lock does not count as the benchmark's time.

Targets (issue 3, issue 15): raw module <= 1.15 x max(curl, write) and <= 0.6 x sequential; qcow2 module
<= 0.6 x sequential; peak RSS < 100 MiB for a 4 GiB image. The loop device is discarded before
each write so every variant starts from the same empty backing file.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, 'tests'))
sys.path.insert(0, os.path.join(REPO, 'lab'))

import conftest  # noqa: E402,F401  pylint: disable=unused-import,wrong-import-position
from byollab.httpserve import ImageServer, file_digest  # noqa: E402  pylint: disable=wrong-import-position

MIB = 1024 * 1024


def sh(args, check=True, **kw):
    return subprocess.run([str(a) for a in args], check=check, **kw)


def timed(fn):
    t = time.monotonic()
    out = fn()
    return time.monotonic() - t, out


def build_raw(path, size, data_percent):
    """GPT disk of ``size`` bytes; ``data_percent`` of it random data in 8 MiB runs, rest zeroes."""
    with open(path, 'wb') as f:
        f.truncate(size)
    sh(['sgdisk', '-n', '1:2048:0', '-t', '1:8300', path], stdout=subprocess.DEVNULL)
    block = os.urandom(8 * MIB)
    stride = int(8 * MIB * 100 / max(1, data_percent)) // MIB * MIB
    with open(path, 'r+b') as f:
        off = 2 * MIB
        while off + 8 * MIB < size - 2 * MIB:
            f.seek(off)
            f.write(block)
            off += stride
    return path


def discard(dev):
    sh(['blkdiscard', '-f', dev], stderr=subprocess.DEVNULL, check=False)
    sh(['sync'])


def run_module(args, poller=False):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.environ['BYOL_COLLECTIONS_PATH'],
               ANSIBLE_STDOUT_CALLBACK='ansible.builtin.minimal', ANSIBLE_PYTHON_INTERPRETER=sys.executable,
               ANSIBLE_LOCALHOST_WARNING='False', ANSIBLE_INVENTORY_UNPARSED_WARNING='False', ANSIBLE_NOCOLOR='1',
               BYOL_RUN_DIR=args['state_dir'])
    ansible = os.path.join(os.path.dirname(sys.executable), 'ansible')
    extra = [] if poller else ['-e', 'byol_progress=false']
    t, proc = timed(lambda: sh([ansible, 'localhost', '-c', 'local', '-m', 'baremetal.byol.byol_image_burn',
                                '-a', json.dumps(args)] + extra, stdout=subprocess.PIPE, universal_newlines=True,
                               env=env, check=False))
    m = re.search(r'^localhost \| ([A-Z!]+) => ', proc.stdout, re.M)
    result = json.JSONDecoder().raw_decode(proc.stdout[m.end():])[0] if m else {}
    if proc.returncode != 0:
        raise SystemExit('module failed: %s' % proc.stdout[-2000:])
    return t, result


def resume_costs(srv, images, sums, dev, state):
    """Through the server's faulty path (Python, not sendfile): the raw image uncut, cut three times and
    resumed with Range, cut three times and restarted (no Range: the received bytes are read again); the
    qcow2 image (streamed onto the disk) uncut and cut three times and resumed."""
    out = {}
    faults = srv.faults
    for kind, cases in (('raw', (('resumed', True), ('restarted', False))), ('qcow2', (('resumed', True),))):
        path = images[kind]
        size = os.path.getsize(path)
        args = dict(url=srv.url(os.path.basename(path)), image_type=kind, device=dev, force=True, checksum=sums[path],
                    checksum_type='sha512', state_dir=state, progress_file=os.path.join(state, 'progress.json'),
                    retry_delay=0)
        try:
            faults.on = True  # the faulty path, without any fault yet
            discard(dev)
            out[kind + '_uncut'] = run_module(args)[0]
            for label, ranges in cases:
                faults.ranges = ranges
                faults.cuts = [size // 4, size // 2, size * 3 // 4]
                discard(dev)
                seconds, res = run_module(args)
                assert len(res['retries']) == 3 and res['checksum'] == sums[path], res
                assert kind == 'raw' or res['qcow2_streamed'] is True, res
                out['%s_%s' % (kind, label)] = seconds
        finally:
            faults.ranges, faults.cuts, faults.on = True, [], False
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--size-gib', type=float, default=4.0)
    parser.add_argument('--data-percent', type=int, default=25, help='share of random data in the image')
    parser.add_argument('--workdir', default='/var/tmp/byol-bench', help='images and the loop backing file (a disk)')
    parser.add_argument('--scratch', default='/dev/shm', help='where the sequential baseline downloads to')
    parser.add_argument('--keep', action='store_true')
    parser.add_argument('--no-resume', dest='resume', action='store_false',
                        help='skip the cost of a download cut three times (resumed, and restarted)')
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit('needs root (loop devices)')
    size = int(args.size_gib * 1024) * MIB
    images = os.path.join(args.workdir, 'images')
    os.makedirs(images, exist_ok=True)
    raw = os.path.join(images, 'bench.raw')
    qcow = os.path.join(images, 'bench.qcow2')
    stamp = os.path.join(images, 'stamp')
    recipe = '%d-%d' % (size, args.data_percent)
    if not os.path.exists(stamp) or open(stamp).read() != recipe:
        print('building %s (%d MiB, %d%% data) and its qcow2...' % (raw, size // MIB, args.data_percent), flush=True)
        build_raw(raw, size, args.data_percent)
        sh(['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2', raw, qcow])
        with open(stamp, 'w') as f:
            f.write(recipe)
    sums = dict((p, file_digest(p, 'sha512')) for p in (raw, qcow))  # also warms the page cache
    backing = os.path.join(args.workdir, 'loop-backing.img')
    with open(backing, 'wb') as f:
        f.truncate(size + 256 * MIB)
    dev = sh(['losetup', '--show', '--find', backing], stdout=subprocess.PIPE,
             universal_newlines=True).stdout.strip()
    state = tempfile.mkdtemp(prefix='bench-state-')
    rows = {}
    try:
        with ImageServer(images) as srv:
            for kind, path in (('raw', raw), ('qcow2', qcow)):
                url = srv.url(os.path.basename(path))
                r = rows[kind] = dict(download_bytes=os.path.getsize(path))
                sh(['curl', '-s', '-o', '/dev/null', url])  # warm up
                r['curl'] = timed(lambda: sh(['curl', '-s', '-o', '/dev/null', url]))[0]
                discard(dev)
                r['write'] = timed(lambda: sh(['dd', 'if=%s' % raw, 'of=%s' % dev, 'bs=4M', 'conv=fsync',
                                               'status=none']))[0]
                discard(dev)
                r['module'], res = run_module(dict(url=url, image_type=kind, device=dev, force=True,
                                                   checksum=sums[path], checksum_type='sha512', state_dir=state,
                                                   progress_file=os.path.join(state, 'progress.json')))
                r['module_inner'] = res.get('seconds')
                r['peak_rss_mib'] = round(res['peak_rss']['module_bytes'] / MIB, 1)
                r['child_rss_mib'] = round(res['peak_rss']['largest_child_bytes'] / MIB, 1)
                r['phases'] = res.get('phases')
                r['streamed'] = res.get('qcow2_streamed')
                if kind == 'qcow2':
                    # the same with the live progress (async job and polls), as a playbook runs it by default
                    discard(dev)
                    r['module_poller'] = run_module(dict(url=url, image_type=kind, device=dev, force=True,
                                                         checksum=sums[path], checksum_type='sha512', state_dir=state,
                                                         progress_file=os.path.join(state, 'progress.json')),
                                                    poller=True)[0]
                discard(dev)
                target = os.path.join(args.scratch, 'bench-download.%s' % kind)

                def sequential():
                    sh(['curl', '-s', '-o', target, url])
                    out = sh(['sha512sum', target], stdout=subprocess.PIPE, universal_newlines=True).stdout
                    assert out.split()[0] == sums[path]
                    sh(['qemu-img', 'convert', '-f', kind, '-O', 'raw', target, dev])
                    sh(['sync'])
                try:
                    r['sequential'] = timed(sequential)[0]
                finally:
                    if os.path.exists(target):
                        os.unlink(target)
            if args.resume:
                rows['resume'] = resume_costs(srv, dict(raw=raw, qcow2=qcow), sums, dev, state)
    finally:
        sh(['losetup', '--detach', dev], check=False)
        shutil.rmtree(state, ignore_errors=True)
        if not args.keep:
            os.unlink(backing)

    print()
    print('image: %d MiB raw (%d%% random data), qcow2 %d MiB; loop device backed by %s'
          % (size // MIB, args.data_percent, os.path.getsize(qcow) // MIB, args.workdir))
    print('%-6s %9s %9s %9s %9s %9s %9s' % ('', 'module', '(inner)', 'curl', 'write', 'sequent.', 'RSS MiB'))
    resume = rows.pop('resume', None)
    for kind, r in rows.items():
        print('%-6s %8.2fs %8.2fs %8.2fs %8.2fs %8.2fs %9.1f' % (
            kind, r['module'], r['module_inner'] or 0, r['curl'], r['write'], r['sequential'], r['peak_rss_mib']))
    print()
    if 'module_poller' in rows['qcow2']:
        print('qcow2 with the live progress (async job, polled): %.2fs (+%.2fs)'
              % (rows['qcow2']['module_poller'], rows['qcow2']['module_poller'] - rows['qcow2']['module']))
    print('qcow2 streamed onto the disk (no scratch space): %s' % rows['qcow2'].get('streamed'))
    print()
    if resume:
        print('raw over the faulty server path: uncut %.2fs, cut 3x resumed %.2fs, cut 3x restarted %.2fs'
              % (resume['raw_uncut'], resume['raw_resumed'], resume['raw_restarted']))
        print('qcow2 over the faulty server path: uncut %.2fs, cut 3x resumed %.2fs'
              % (resume['qcow2_uncut'], resume['qcow2_resumed']))
        print('%-34s %5.2f' % ('raw: resumed (3 cuts) / uncut', resume['raw_resumed'] / resume['raw_uncut']))
        print('%-34s %5.2f' % ('raw: restarted (3 cuts) / uncut', resume['raw_restarted'] / resume['raw_uncut']))
        print('%-34s %5.2f' % ('qcow2: resumed (3 cuts) / uncut', resume['qcow2_resumed'] / resume['qcow2_uncut']))
        print('%-34s %5.2f' % ('qcow2: resumed (3 cuts) / sequent.', resume['qcow2_resumed'] / rows['qcow2']['sequential']))
        print()
    raw_r, q = rows['raw'], rows['qcow2']
    slower = max(raw_r['curl'], raw_r['write'])
    checks = [
        ('raw: module / max(curl, write)', raw_r['module'] / slower, 1.15),
        ('raw: module / sequential', raw_r['module'] / raw_r['sequential'], 0.6),
        ('qcow2: module / sequential', q['module'] / q['sequential'], 0.6),
    ]
    for label, ratio, target in checks:
        print('%-34s %5.2f  (target <= %.2f) %s' % (label, ratio, target, 'OK' if ratio <= target else 'MISSED'))
    for kind, r in rows.items():
        print('%-34s %5.1f MiB (target < 100) %s' % ('%s: module peak RSS' % kind, r['peak_rss_mib'],
                                                     'OK' if r['peak_rss_mib'] < 100 else 'MISSED'))
    print()
    print('phases: ' + json.dumps(dict((k, r['phases']) for k, r in rows.items())))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())

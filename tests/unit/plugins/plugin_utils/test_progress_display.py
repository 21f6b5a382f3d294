# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The progress lines the action plugins print (plugins/plugin_utils/_progress_display.py), and what they strip."""

from __future__ import annotations

import json

from ansible_collections.baremetal.byol.plugins.module_utils import _progress
from ansible_collections.baremetal.byol.plugins.plugin_utils._progress_action import strip_async_keys
from ansible_collections.baremetal.byol.plugins.plugin_utils._progress_display import (
    HEARTBEAT_SECONDS, Throttle, clean_text, format_status, human_bytes, human_seconds, parse_status, progress_line,
)

MIB = 1024 * 1024


def module_file(phase='download', done=512 * MIB, total=1024 * MIB, elapsed=10.0, final=False):
    """What plugins/module_utils/_progress.py writes into the progress file."""
    st = _progress.status(phase, done, total, elapsed)
    st['final'] = final
    st['line'] = _progress.format_status(st)
    st['time'] = 1700000000.5
    return json.dumps(st).encode()


def test_line_from_the_modules_own_file():
    st = parse_status(module_file())
    assert progress_line('server1', 'image', st, 12.4) == (
        '[server1] image (running 12s): download: 512.0 MiB of 1.0 GiB (50.0%), 51.2 MiB/s, ETA 10s, 10s elapsed')


def test_final_and_unknown_total():
    st = parse_status(module_file(phase='copy', done=3 * MIB, total=None, elapsed=75))
    assert format_status(st) == 'copy: 3.0 MiB, 41.0 KiB/s, 1m15s elapsed'
    st = parse_status(module_file(phase='write', done=MIB, total=MIB, final=True))
    assert format_status(st) == 'write: 1.0 MiB of 1.0 MiB (100.0%), 102.4 KiB/s, done, 10s elapsed'


def test_hook_line():
    st = parse_status(json.dumps(dict(phase='hook', elapsed_seconds=3725, output='Generating grub configuration file ...')))
    assert progress_line('web-1', 'hook', st, 3730, stale_seconds=12) == (
        '[web-1] hook (running 1h02m): hook: 1h02m elapsed | last output: Generating grub configuration file ... '
        '(last report 12s ago)')


def test_nothing_reported_yet():
    assert progress_line('h', 'hook', None, 31) == '[h] hook (running 31s): no progress reported yet'


def test_hostile_output_cannot_drive_the_terminal():
    """The hook's output line is the image's: escape sequences, carriage returns and bidi overrides are removed."""
    evil = '\x1b]0;pwned\x07\x1b[2J\rok\u202egnp.exe\x00' + 'A' * 500
    st = parse_status(json.dumps(dict(phase='hook\x1b[31m', elapsed_seconds=1, output=evil)))
    line = progress_line('h\x1b[1m', 'hook', st, 2)
    assert all(ord(c) >= 32 and c not in '\x7f\u202e' for c in line)
    assert '\x1b' not in line and '\r' not in line
    assert len(st['output']) == 160 and st['output'].endswith('...')


def test_credentials_of_urls_removed():
    assert clean_text('GET https://user:pa55@images.example.net/x.qcow2 failed') == \
        'GET https://images.example.net/x.qcow2 failed'


def test_bad_files_are_ignored():
    for data in (b'', b'not json', b'[]', b'{"bytes": 5}', json.dumps(dict(phase='x', bytes='5')).encode(),
                 b'{' + b' ' * 70000 + b'}'):
        st = parse_status(data)
        assert st is None or st['bytes'] is None
    st = parse_status(json.dumps(dict(phase='x', bytes=-1, total=float('inf'), percent=900, rate=True)))
    assert st['bytes'] is None and st['total'] is None and st['percent'] == 100.0 and st['rate'] is None
    assert format_status(st) == 'x'


def test_units():
    assert human_bytes(0) == '0 B' and human_bytes(1536) == '1.5 KiB' and human_bytes(5 * 1024 ** 4) == '5.0 TiB'
    assert human_seconds(None) == '?' and human_seconds(59.6) == '1m00s' and human_seconds(7260) == '2h01m'


def test_throttle_new_reports_and_heartbeat():
    t = Throttle(0.0, interval=10)
    assert t.due(1.0, None) == (False, 1.0)
    # a new report before the interval waits, and is printed once the interval has passed
    assert t.due(2.0, 'a')[0] is False
    assert t.due(10.0, 'a') == (True, 8.0)
    assert t.due(15.0, 'a')[0] is False
    # nothing new: a heartbeat every 30 s
    assert t.due(10.0 + HEARTBEAT_SECONDS, 'a') == (True, 8.0 + HEARTBEAT_SECONDS)
    assert t.due(41.0, 'b')[0] is False
    assert t.due(50.0, 'b') == (True, 9.0)
    # the interval is kept between 1 and 30 s
    assert Throttle(0, interval=0).interval == 1.0 and Throttle(0, interval=600).interval == HEARTBEAT_SECONDS


def test_only_the_async_bookkeeping_is_removed():
    module = dict(changed=True, msg='written', checksum='ab', stdout='x', invocation={'module_args': {}})
    status = dict(module, ansible_job_id='j1.2', finished=True)
    assert strip_async_keys(status) == module

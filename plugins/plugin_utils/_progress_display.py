# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Controller side of live progress: what the action plugins print while a long step runs.

Do not use this from other collections or standalone plugins!

The modules (``byol_image_burn``, ``byol_bootable_hook``) replace a small JSON status file on the server
while they run (see ``plugins/module_utils/_progress.py``). The action plugins start the module as an
``async`` job, and between polls of the job read that file and print one line per host. Everything
here that turns the file's content into a line is pure (unit-tested): the file is written by a process
on the server that runs untrusted code (the image's hook), so every value is checked and every string
is stripped of control characters before it reaches the operator's terminal.
"""

from __future__ import annotations

import json
import math
import re

from ansible_collections.baremetal.byol.plugins.module_utils._progress import human_bytes, human_seconds

# a line at least this often per host while a step runs, whatever the module reports
HEARTBEAT_SECONDS = 30.0
# at most this many characters of a line taken from the server (the hook's output)
MAX_TEXT = 160

_CONTROL = re.compile('[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]')
_URL_CREDENTIALS = re.compile(r'(?i)([a-z][a-z0-9+.-]*://)[^/@\s]*@')


def clean_text(text, limit=MAX_TEXT):
    """A string fit for one terminal line: control characters (escape sequences, carriage returns,
    bidirectional overrides) become spaces, credentials of URLs are removed, at most ``limit`` characters."""
    if text is None:
        return ''
    if not isinstance(text, str):
        text = str(text)
    text = _CONTROL.sub(' ', text)
    text = _URL_CREDENTIALS.sub(r'\1', text)
    text = ' '.join(text.split())
    if len(text) > limit:
        text = text[:limit - 3] + '...'
    return text


def _number(value):
    """A finite non-negative float, or None (anything else the file holds)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    if math.isnan(value) or math.isinf(value) or value < 0:
        return None
    return value


def parse_status(data):
    """The progress file's bytes (or text) -> a dict of checked values, or None when it is not a status.

    Keys: phase, bytes, total, percent, rate, eta_seconds, elapsed_seconds, final, line (the hook's latest
    output line), time (the server's clock when it was written; only compared for equality)."""
    if isinstance(data, bytes):
        data = data.decode('utf-8', 'replace')
    if isinstance(data, str):
        if len(data) > 65536:
            return None
        try:
            data = json.loads(data)
        except ValueError:
            return None
    if not isinstance(data, dict):
        return None
    phase = clean_text(data.get('phase'), 40)
    if not phase:
        return None
    st = dict(phase=phase)
    for key in ('bytes', 'total', 'percent', 'rate', 'eta_seconds', 'elapsed_seconds', 'time'):
        st[key] = _number(data.get(key))
    if st['percent'] is not None:
        st['percent'] = min(st['percent'], 100.0)
    if st['percent'] is None and st['total'] and st['bytes'] is not None:
        st['percent'] = min(100.0, 100.0 * st['bytes'] / st['total'])
    st['final'] = data.get('final') is True
    output = data.get('output')
    st['output'] = clean_text(output) if isinstance(output, str) else None
    return st


def format_status(st):
    """One line for a :func:`parse_status` dict (without the host): phase, percent, bytes, rate, ETA."""
    parts = []
    if st.get('bytes') is not None:
        if st.get('total'):
            done = '%s of %s' % (human_bytes(st['bytes']), human_bytes(st['total']))
            if st.get('percent') is not None:
                done += ' (%.1f%%)' % st['percent']
            parts.append(done)
        else:
            parts.append(human_bytes(st['bytes']))
    if st.get('rate') is not None and st.get('bytes') is not None:
        parts.append('%s/s' % human_bytes(st['rate']))
    if st.get('final'):
        parts.append('done')
    elif st.get('total') and st.get('bytes') is not None:
        parts.append('ETA %s' % human_seconds(st.get('eta_seconds')))
    if st.get('elapsed_seconds') is not None:
        parts.append('%s elapsed' % human_seconds(st['elapsed_seconds']))
    line = '%s: %s' % (st['phase'], ', '.join(parts)) if parts else st['phase']
    if st.get('output'):
        line += ' | last output: %s' % st['output']
    return line


def progress_line(host, step, st, running_seconds, stale_seconds=None):
    """The line printed for ``host``: ``[host] step (running 1m05s): download: 1.0 GiB of 2.0 GiB (50.0%), ...``.

    ``st`` is a :func:`parse_status` dict or None (nothing reported yet); ``stale_seconds`` says how old the
    last report is when it is shown again as a heartbeat."""
    head = '[%s] %s (running %s)' % (clean_text(host, 80), step, human_seconds(running_seconds))
    if st is None:
        return head + ': no progress reported yet'
    line = '%s: %s' % (head, format_status(st))
    if stale_seconds is not None and stale_seconds >= 1:
        line += ' (last report %s ago)' % human_seconds(stale_seconds)
    return line


class Throttle(object):
    """Decides when to print: the latest report at most every ``interval`` seconds, and a heartbeat when
    nothing was printed for :data:`HEARTBEAT_SECONDS` (pure; the caller passes its clock's readings)."""

    def __init__(self, start, interval=10.0):
        self.interval = max(1.0, min(float(interval), HEARTBEAT_SECONDS))
        self.last_print = start
        self.last_key = None
        self.last_new = start
        self.pending = False

    def due(self, now, key):
        """``key`` identifies the latest report (None: none yet). Returns (print?, seconds since it was new)."""
        if key is not None and key != self.last_key:
            self.last_key = key
            self.last_new = now
            self.pending = True
        if self.pending and now - self.last_print >= self.interval:
            self.pending = False
            self.last_print = now
            return True, now - self.last_new
        if now - self.last_print >= HEARTBEAT_SECONDS:
            self.pending = False
            self.last_print = now
            return True, now - self.last_new
        return False, now - self.last_new

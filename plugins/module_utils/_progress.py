# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Progress of long transfers, visible while the module runs.

Do not use this from other collections or standalone plugins/modules!

Ansible shows a module's output only when it ends, so progress goes to two places an
operator (or the role, polling an ``async`` task) can read while it runs:

- a small JSON status file (``progress_file``), replaced atomically at each report, holding
  the latest line and the numbers (phase, bytes, total, percent, rate, ETA);
- the rescue system's journal/syslog through ``module.log`` (identifier ``ansible-<module>``),
  so ``journalctl -f -t ansible-byol_image_burn`` follows it.

Reports are made at most every ``interval`` seconds (30 s at most) and at the end of each
phase. The per-phase summary (bytes, seconds, throughput) goes into the module result.
"""

from __future__ import annotations

import json
import os
import threading
import time

from ansible_collections.baremetal.byol.plugins.module_utils._lock import ensure_dir

MAX_INTERVAL = 30.0


def human_bytes(n):
    """``1536`` -> ``'1.5 KiB'``."""
    if n is None:
        return '?'
    value = float(n)
    for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB'):
        if abs(value) < 1024.0 or unit == 'TiB':
            return ('%d %s' % (value, unit)) if unit == 'B' else ('%.1f %s' % (value, unit))
        value /= 1024.0
    return '%.1f TiB' % value  # pragma: no cover


def human_seconds(s):
    if s is None:
        return '?'
    s = int(round(s))
    if s < 60:
        return '%ds' % s
    if s < 3600:
        return '%dm%02ds' % (s // 60, s % 60)
    return '%dh%02dm' % (s // 3600, (s % 3600) // 60)


def status(phase, done, total, elapsed):
    """Numbers of one report (pure): dict phase, bytes, total, percent, rate, eta_seconds."""
    rate = done / elapsed if elapsed > 0 else 0.0
    percent = eta = None
    if total:
        percent = min(100.0, 100.0 * done / total)
        eta = (total - done) / rate if rate > 0 else None
    return dict(phase=phase, bytes=done, total=total, percent=percent, rate=rate,
                eta_seconds=eta, elapsed_seconds=elapsed)


def format_status(st):
    """One human line for a :func:`status` dict (pure)."""
    if st.get('total'):
        return '%s: %s of %s (%.1f%%), %s/s, ETA %s' % (
            st['phase'], human_bytes(st['bytes']), human_bytes(st['total']), st['percent'],
            human_bytes(st['rate']), human_seconds(st['eta_seconds']))
    return '%s: %s, %s/s, %s elapsed' % (
        st['phase'], human_bytes(st['bytes']), human_bytes(st['rate']), human_seconds(st['elapsed_seconds']))


class Progress(object):
    """Thread-safe progress reporter for one module run."""

    def __init__(self, module=None, path=None, interval=10.0, clock=time.monotonic):
        self.module = module
        self.path = path
        self.interval = min(float(interval or MAX_INTERVAL), MAX_INTERVAL)
        self.clock = clock
        self.phases = []
        self._lock = threading.Lock()
        self._cur = None
        self.reports = 0
        if path:
            parent = os.path.dirname(path)
            if parent:
                # runs started together all create it: no "File exists"; a link or file there is refused
                ensure_dir(parent, 0o755, 'progress directory')

    def start(self, phase, total=None):
        """Begin phase ``phase`` (``download``, ``write``, ``convert``, ``copy``...)."""
        self.end()
        now = self.clock()
        with self._lock:
            self._cur = dict(phase=phase, total=total, done=0, start=now, last=now)
        self._emit(force=True)

    def set_total(self, total):
        with self._lock:
            if self._cur is not None:
                self._cur['total'] = total

    def update(self, done):
        """Set the bytes done in the current phase; reports if ``interval`` has passed."""
        with self._lock:
            if self._cur is None:
                return
            self._cur['done'] = done
            due = self.clock() - self._cur['last'] >= self.interval
        if due:
            self._emit()

    def add(self, n):
        with self._lock:
            if self._cur is None:
                return
            self._cur['done'] += n
            due = self.clock() - self._cur['last'] >= self.interval
        if due:
            self._emit()

    def tick(self):
        """Report if due (call from a loop that waits on something else)."""
        with self._lock:
            due = self._cur is not None and self.clock() - self._cur['last'] >= self.interval
        if due:
            self._emit()

    def end(self, done=None):
        """End the current phase (if any) and record its summary."""
        with self._lock:
            cur = self._cur
            if cur is None:
                return None
            if done is not None:
                cur['done'] = done
        self._emit(force=True, final=True)
        with self._lock:
            seconds = self.clock() - cur['start']
            summary = dict(phase=cur['phase'], bytes=cur['done'], seconds=round(seconds, 3),
                           bytes_per_second=int(cur['done'] / seconds) if seconds > 0 else None)
            self.phases.append(summary)
            self._cur = None
        return summary

    def _emit(self, force=False, final=False):
        with self._lock:
            cur = self._cur
            if cur is None:
                return
            now = self.clock()
            if not force and now - cur['last'] < self.interval:
                return
            cur['last'] = now
            st = status(cur['phase'], cur['done'], cur['total'], now - cur['start'])
        st['final'] = final
        line = format_status(st) + (' (done)' if final else '')
        st['line'] = line
        st['time'] = time.time()
        self.reports += 1
        if self.module is not None:
            try:
                self.module.log('byol_image_burn progress: %s' % line)
            except Exception:  # pylint: disable=broad-except
                pass
        if self.path:
            tmp = '%s.tmp%d' % (self.path, os.getpid())
            try:
                try:
                    os.unlink(tmp)  # left by a run that was killed
                except OSError:
                    pass
                # never through a link planted at the temporary name; the rename replaces a link at the final
                # name itself, never its target
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, 'O_CLOEXEC', 0),
                             0o644)
                with os.fdopen(fd, 'w') as f:
                    json.dump(st, f)
                    f.write('\n')
                os.rename(tmp, self.path)
            except (IOError, OSError):
                pass

    def summary(self):
        return list(self.phases)

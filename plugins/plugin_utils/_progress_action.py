# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Run a long module as an ``async`` job and print its progress in the play's own output.

Do not use this from other collections or standalone plugins!

The action plugins of the long steps (``byol_image_burn``, ``byol_bootable_hook``) subclass
:class:`ProgressAction`. Without ``async`` on the task, the module is started the way ``async: N``
with ``poll: 0`` starts it (``async_wrapper``), then polled with ``async_status`` as ``poll: N`` would,
and between polls the module's progress file is read (``slurp``) and one line per host is printed
(:mod:`._progress_display`). The job's final result is returned as the module returned it: the
``async_status`` bookkeeping keys are removed, nothing is added.

A synchronous run (exactly what ansible runs without the action plugin) is used when the task has its
own ``async`` (the task executor then polls, as usual), when ``byol_progress`` is false, when the
connection has no POSIX shell or runs modules natively asynchronously, and when ``async_wrapper``
could not start the job (the module did not start then).
"""

from __future__ import annotations

import base64
import posixpath
import time

from ansible.errors import AnsibleConnectionFailure
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase
from ansible.utils.vars import merge_hash

from ansible_collections.baremetal.byol.plugins.plugin_utils._lease import inject_lock_owner
from ansible_collections.baremetal.byol.plugins.plugin_utils._progress_display import (
    Throttle, parse_status, progress_line,
)

# async_wrapper kills the job after this many seconds; the modules have their own timeouts
DEFAULT_ASYNC_LIMIT = 7 * 86400
# the keys async_status adds to a finished job's result
ASYNC_KEYS = ('ansible_job_id', 'finished', 'started', 'results_file')
POLL_FIRST = 0.5
POLL_MAX = 5.0
POLL_RETRIES = 6


def strip_async_keys(status):
    """The module's own result from a finished ``async_status`` result (pure)."""
    result = dict((k, v) for k, v in status.items() if k not in ASYNC_KEYS)
    return result


class ProgressAction(ActionBase):
    """Base class: set ``MODULE`` (FQCN), ``STEP`` (what the line calls it) and ``DEFAULT_PROGRESS_FILE``."""

    _supports_check_mode = True
    _supports_async = True

    MODULE = None
    STEP = None
    DEFAULT_PROGRESS_FILE = None

    # what the subclasses may override

    def progress_file(self):
        """Path of the module's progress file on the server, or None."""
        path = self._task.args.get('progress_file', self.DEFAULT_PROGRESS_FILE)
        return path or None

    def async_limit(self):
        return DEFAULT_ASYNC_LIMIT

    # the run

    def _option(self, task_vars, name, default):
        value = task_vars.get(name, default)
        try:
            return self._templar.template(value)
        except Exception:  # pylint: disable=broad-except
            return default

    def _async_usable(self):
        conn = self._connection
        if getattr(conn, 'has_native_async', False):
            return False
        shell = getattr(conn, '_shell', None)
        return getattr(shell, 'SHELL_FAMILY', None) == 'sh'

    def _sync(self, result, task_vars, wrap_async=False):
        result = merge_hash(result, self._execute_module(module_name=self.MODULE, task_vars=task_vars,
                                                         wrap_async=wrap_async))
        if not wrap_async:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        inject_lock_owner(self._task, task_vars)  # the run id of the reinstall lease (plugin_utils/_lease.py)
        result = super(ProgressAction, self).run(tmp, task_vars)
        del tmp
        if self._task.async_val:
            # async and poll set on the task: the task executor polls, as for any module
            return self._sync(result, task_vars, wrap_async=True)
        try:
            enabled = boolean(self._option(task_vars, 'byol_progress', True), strict=False)
            interval = float(self._option(task_vars, 'byol_progress_interval', 10))
        except (TypeError, ValueError):
            enabled, interval = True, 10.0
        if not enabled or not self._async_usable():
            return self._sync(result, task_vars)
        return self._run_async(result, task_vars, interval)

    def _read_progress(self, path, task_vars):
        """Raw bytes of the progress file, or None."""
        if not path:
            return None
        res = self._execute_module(module_name='ansible.legacy.slurp', module_args={'src': path},
                                   task_vars=task_vars)
        if res.get('failed') or 'content' not in res:
            return None
        try:
            return base64.b64decode(res['content'])
        except (TypeError, ValueError):
            return None

    def _poll(self, status_args, task_vars):
        """``async_status`` of the job; a connection that fails for a moment (up to POLL_RETRIES polls in a row) does
        not end the task while the job goes on: the last failure is returned (or raised) after that."""
        for attempt in range(POLL_RETRIES + 1):
            try:
                status = self._execute_module(module_name='ansible.legacy.async_status', module_args=dict(status_args),
                                              task_vars=task_vars)
            except AnsibleConnectionFailure:
                if attempt == POLL_RETRIES:
                    raise
                status = None
            if status is not None and 'finished' in status:
                return status
            if attempt == POLL_RETRIES:
                return status
            time.sleep(POLL_MAX)
        return status  # pragma: no cover

    def _run_async(self, result, task_vars, interval):
        host = task_vars.get('inventory_hostname') or self._task.get_name()
        # check mode touches nothing on the server, not even the progress file
        path = None if self._task.check_mode else self.progress_file()
        # what the file held before the job started is not this job's progress
        before = self._read_progress(path, task_vars)
        saved = self._task.async_val
        self._task.async_val = self.async_limit()
        try:
            launch = self._execute_module(module_name=self.MODULE, task_vars=task_vars, wrap_async=True)
        finally:
            self._task.async_val = saved
        jid = launch.get('ansible_job_id')
        if not jid or not launch.get('started') or launch.get('failed'):
            # async_wrapper did not start the module (it exits before forking when it cannot)
            self._display.vv('%s: could not start %s as an async job (%s), running it synchronously'
                             % (host, self.MODULE, launch.get('msg', 'no job id')))
            self._remove_tmp_path(self._connection._shell.tmpdir)
            return self._sync(result, task_vars)
        async_dir = posixpath.dirname(launch['results_file'])
        status_args = {'jid': jid, '_async_dir': async_dir}
        start = time.monotonic()
        throttle = Throttle(start, interval)
        delay = POLL_FIRST
        last = None
        try:
            while True:
                time.sleep(delay)
                delay = min(delay * 2, POLL_MAX, max(1.0, interval / 2.0))
                status = self._poll(status_args, task_vars)
                if status.get('finished') or 'finished' not in status:
                    break
                try:
                    raw = self._read_progress(path, task_vars)
                except AnsibleConnectionFailure:
                    raw = None
                key = raw if raw is not None and raw != before else None
                if key is not None:
                    st = parse_status(raw)
                    if st is not None and self._task.no_log:
                        # the hook's output line is the image's text: with no_log, only the numbers
                        st['output'] = None
                    last = st if st is not None else last
                now = time.monotonic()
                due, age = throttle.due(now, key if last is not None else None)
                if due:
                    self._display.display(progress_line(host, self.STEP, last, now - start,
                                                        stale_seconds=age if last is not None else None))
        finally:
            try:
                self._execute_module(module_name='ansible.legacy.async_status',
                                     module_args=dict(status_args, mode='cleanup'), task_vars=task_vars)
            except Exception:  # pylint: disable=broad-except
                pass
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return merge_hash(result, strip_async_keys(status))

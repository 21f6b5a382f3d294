# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: byol_steps
type: aggregate
short_description: Time of each installer step, per host, at the end of the play
version_added: 0.1.0
author: baremetal.byol developers (@baremetal-byol)
description:
  - What C(ansible.posix.profile_tasks) gives per task, summed by installer step - preflight, plan, stage (download and
    check before the wipe), partition, image, configdrive, hook, bootorder, reboot (unmount, sync, reboot and the waits),
    report - for each host, printed at the end of the playbook with the total and the installer's own time (the total
    without the image's hook).
  - A task belongs to a step by its module (for example M(baremetal.byol.byol_image_burn) with O(baremetal.byol.byol_image_burn#module:stage_only)
    is C(stage)) or by the file of the roles it comes from (C(preflight.yml), C(reboot.yml), C(report.yml)). Other tasks of
    the roles C(baremetal.byol.byol) and C(baremetal.byol.byoi) count as C(other); tasks outside them are not counted.
  - When the play wrote a post-install report (C(<byol_report_dir>/<host>.json)), the measured times are added to it as
    C(step_seconds).
requirements:
  - enabled in callbacks_enabled, for example C(ANSIBLE_CALLBACKS_ENABLED=baremetal.byol.byol_steps)
"""

import json
import os
import time

from ansible.plugins.callback import CallbackBase

STEPS = ('preflight', 'plan', 'stage', 'partition', 'image', 'configdrive', 'hook', 'bootorder', 'reboot', 'report', 'other')
MODULE_STEPS = {'byol_preflight': 'preflight', 'byol_configdrive': 'configdrive', 'byol_bootable_hook': 'hook',
                'byol_bootorder': 'bootorder'}
FILE_STEPS = {'preflight.yml': 'preflight', 'reboot.yml': 'reboot', 'report.yml': 'report'}


def _truthy(value):
    return value is True or (isinstance(value, str) and value.lower() in ('true', 'yes', '1'))


def task_step(action, args, check_mode, path):
    """The installer step of a task (pure): ``action`` its module, ``args`` its arguments, ``path`` file:line.
    None for a task that is not the installer's."""
    path = path or ''
    filename = os.path.basename(path.rsplit(':', 1)[0])
    in_roles = ('/roles/byol/' in path or '/roles/byoi/' in path)
    module = (action or '').rsplit('.', 1)[-1]
    if filename in FILE_STEPS and in_roles:
        return FILE_STEPS[filename]
    if module in MODULE_STEPS:
        return MODULE_STEPS[module]
    if module == 'byol_partition':
        return 'plan' if _truthy(check_mode) else 'partition'
    if module == 'byol_image_burn':
        if _truthy((args or {}).get('stage_only')):
            return 'stage'
        return 'plan' if _truthy(check_mode) else 'image'
    return 'other' if in_roles else None


def summary(times):
    """{step: seconds} of one host -> (ordered [(step, seconds)], total, total without the hook) (pure)."""
    rows = [(s, times[s]) for s in STEPS if s in times]
    total = sum(times.values())
    return rows, total, total - times.get('hook', 0.0)


def table(per_host):
    """Lines of the table: one row per host, one column per step that any host ran (pure)."""
    steps = [s for s in STEPS if any(s in t for t in per_host.values())]
    if not steps:
        return []
    head = ['host'] + steps + ['total', 'without hook']
    rows = []
    for host in sorted(per_host):
        dummy, total, own = summary(per_host[host])
        rows.append([host] + ['%.1f' % per_host[host][s] if s in per_host[host] else '-' for s in steps]
                    + ['%.1f' % total, '%.1f' % own])
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]

    def fmt(row):
        return '  '.join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
    return [fmt(head)] + [fmt(r) for r in rows]


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'baremetal.byol.byol_steps'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super(CallbackModule, self).__init__(*args, **kwargs)
        self.started = {}
        self.times = {}
        self.reports = {}
        self.clock = time.monotonic

    def _step(self, task):
        try:
            path = task.get_path()
        except Exception:  # pylint: disable=broad-except
            path = None
        return task_step(getattr(task, 'action', None), getattr(task, 'args', None) or {},
                         getattr(task, 'check_mode', None), path)

    def v2_runner_on_start(self, host, task):
        self.started[(host.get_name(), task._uuid)] = self.clock()

    def _end(self, result):
        host = result._host.get_name()
        task = result._task
        start = self.started.pop((host, task._uuid), None)
        step = self._step(task)
        if start is None or step is None:
            return
        times = self.times.setdefault(host, {})
        times[step] = times.get(step, 0.0) + (self.clock() - start)
        if step == 'report':
            dest = result._result.get('dest')
            if isinstance(dest, str) and dest.endswith('.json'):
                self.reports[host] = dest

    def v2_runner_on_ok(self, result):
        self._end(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._end(result)

    def v2_runner_on_skipped(self, result):
        self._end(result)

    def v2_runner_on_unreachable(self, result):
        self._end(result)

    def v2_runner_item_on_ok(self, result):
        # a loop's items end before the task: the task's own result (above) counts its whole time
        if result._task.action and self._step(result._task) == 'report':
            dest = result._result.get('dest')
            if isinstance(dest, str) and dest.endswith('.json'):
                self.reports[result._host.get_name()] = dest

    def v2_playbook_on_stats(self, stats):
        lines = table(self.times)
        if not lines:
            return
        self._display.banner('INSTALLER STEPS (seconds)')
        for line in lines:
            self._display.display(line)
        for host, path in sorted(self.reports.items()):
            self._add_to_report(path, self.times.get(host, {}))

    def _add_to_report(self, path, times):
        try:
            with open(path) as f:
                report = json.load(f)
            rows, total, own = summary(times)
            report['step_seconds'] = dict((s, round(v, 1)) for s, v in rows)
            report['step_seconds_total'] = round(total, 1)
            report['step_seconds_without_hook'] = round(own, 1)
            tmp = path + '.tmp'
            with open(tmp, 'w') as f:
                json.dump(report, f, indent=4, sort_keys=True)
                f.write('\n')
            os.rename(tmp, path)
        except (IOError, OSError, ValueError) as e:
            self._display.warning('Could not add the step times to the report %s: %s' % (path, e))

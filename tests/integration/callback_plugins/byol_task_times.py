# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Test-only callback: when each task started and ended, as JSON lines appended to ``$BYOL_TEST_TASK_LOG``.

tests/integration/test_faults_vm.py (the lab's fault injector, lab/byollab/faults.py) fires a fault when a task
starts and reads which steps a re-run changed; tests/integration/test_races_roles.py runs two ansible-playbook processes at once and proves from these times,
which the collection's code does not write, that their steps did not interleave.
"""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: byol_task_times
type: notification
short_description: Log when each task started and ended (baremetal.byol tests only)
description:
  - Appends one JSON line per task start and task result to C($BYOL_TEST_TASK_LOG), with the ansible-playbook pid
    (and whether an ok result changed something).
requirements:
  - enabled in callbacks_enabled
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'notification'
    CALLBACK_NAME = 'byol_task_times'
    CALLBACK_NEEDS_ENABLED = True

    def _log(self, event, task, **extra):
        path = os.environ.get('BYOL_TEST_TASK_LOG')
        if not path:
            return
        entry = dict(extra, event=event, time=time.time(), pid=os.getpid(), action=task.action,
                     name=task.get_name(), check_mode=bool(task.check_mode))
        with open(path, 'a') as f:
            f.write(json.dumps(entry) + '\n')

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._log('start', task)

    def v2_runner_on_ok(self, result):
        self._log('ok', result._task, changed=bool(result._result.get('changed')))

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._log('failed', result._task)

    def v2_runner_on_skipped(self, result):
        self._log('skipped', result._task)

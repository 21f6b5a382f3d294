# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Test-only callback: the last task result of each host as JSON in ``$BYOL_TEST_RESULT_DIR/<host>.json``.

Used by ``run_module`` in tests/integration/conftest.py: ansible-core ships no ``json`` stdout callback, and
the built-in ones print the result abridged (no ``diff`` below -vvv). Works with ansible-core 2.19 and 2.21.
"""

from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase
from ansible.vars.clean import module_response_deepcopy, strip_internal_keys

DOCUMENTATION = r"""
name: byol_result_file
type: notification
short_description: Write each host's last task result as JSON (baremetal.byol tests only)
description:
  - Writes the result of each task (the last one wins) to C($BYOL_TEST_RESULT_DIR/<host>.json), with
    C(failed), C(changed), C(skipped) or C(unreachable) set.
requirements:
  - enabled in callbacks_enabled
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'notification'
    CALLBACK_NAME = 'byol_result_file'
    CALLBACK_NEEDS_ENABLED = True

    def _write(self, result, **flags):
        directory = os.environ.get('BYOL_TEST_RESULT_DIR')
        if not directory:
            return
        data = strip_internal_keys(module_response_deepcopy(result._result))
        data.update(flags)
        host = result._host.get_name()
        tmp = os.path.join(directory, '.%s.json.tmp' % host)
        with open(tmp, 'w') as f:
            json.dump(data, f, default=str, sort_keys=True)
        os.rename(tmp, os.path.join(directory, '%s.json' % host))

    def v2_runner_on_ok(self, result):
        self._write(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._write(result, failed=True)

    def v2_runner_on_unreachable(self, result):
        self._write(result, unreachable=True)

    def v2_runner_on_skipped(self, result):
        self._write(result, skipped=True)

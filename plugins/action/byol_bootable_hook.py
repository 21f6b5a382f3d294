# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Runs baremetal.byol.byol_bootable_hook and prints the hook's running time (and latest output line) while it runs."""

from __future__ import annotations

from ansible_collections.baremetal.byol.plugins.plugin_utils._progress_action import DEFAULT_ASYNC_LIMIT, ProgressAction


class ActionModule(ProgressAction):
    MODULE = 'baremetal.byol.byol_bootable_hook'
    STEP = 'hook'
    DEFAULT_PROGRESS_FILE = '/run/baremetal-byol/bootable_hook.progress'

    def async_limit(self):
        # the module kills the hook after its own timeout; leave it the time to clean up and report
        try:
            timeout = int(self._task.args.get('timeout', 1800))
        except (TypeError, ValueError):
            return DEFAULT_ASYNC_LIMIT
        return timeout + 3600 if timeout > 0 else DEFAULT_ASYNC_LIMIT

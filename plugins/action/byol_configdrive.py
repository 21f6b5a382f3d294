# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Runs baremetal.byol.byol_configdrive as any module, with lock_owner from the host's fact byol_lock_owner (the run id of
the reinstall lease, set by baremetal.byol.byol_lease) when the task does not set it."""

from __future__ import annotations

from ansible.plugins.action.normal import ActionModule as NormalAction

from ansible_collections.baremetal.byol.plugins.plugin_utils._lease import inject_lock_owner


class ActionModule(NormalAction):

    def run(self, tmp=None, task_vars=None):
        inject_lock_owner(self._task, task_vars)
        return super(ActionModule, self).run(tmp, task_vars)

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Runs baremetal.byol.byol_lease with this run's id and controller, and takes over the lease of a run of this
controller whose ansible-playbook has ended (killed, failed) - only the controller can tell that."""

from __future__ import annotations

from ansible.plugins.action import ActionBase

from ansible_collections.baremetal.byol.plugins.plugin_utils import _lease


class ActionModule(ActionBase):
    MODULE = 'baremetal.byol.byol_lease'

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        args = dict(self._task.args)
        identity = _lease.controller_identity()
        args.setdefault('controller', identity)
        if not args.get('lock_owner'):
            args['lock_owner'] = _lease.run_id(identity)
        state = args.get('state', 'present')
        if state == 'present' and not args.get('takeover') and not self._task.check_mode:
            query = self._execute_module(module_name=self.MODULE, task_vars=task_vars,
                                         module_args=dict(args, state='query'))
            lease = query.get('lease')
            if (not query.get('failed') and lease and lease.get('owner') != args['lock_owner']
                    and _lease.holder_has_ended(lease, identity)):
                args['takeover'] = lease['owner']
        result.update(self._execute_module(module_name=self.MODULE, task_vars=task_vars, module_args=args))
        self._remove_tmp_path(self._connection._shell.tmpdir)
        if not result.get('failed') and state != 'query':
            result['ansible_facts'] = {_lease.FACT: args['lock_owner'] if state == 'present' else ''}
        return result

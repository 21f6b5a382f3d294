# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Drive a module's ``main()`` in-process, the usual way (as community.general's tests do).

``run_main(module, args, runner)`` sets the module arguments, replaces ``exit_json``/``fail_json`` by
exceptions carrying the result, hands ``runner`` (a :class:`FakeRunner`) to the module through the
one place modules create their runner (``_module.CommandRunner``), calls ``main()`` and returns
``(failed, result)``.
"""

from __future__ import annotations

from unittest import mock

from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

from ansible_collections.baremetal.byol.plugins.module_utils import _module


class AnsibleExitJson(Exception):
    """exit_json was called."""


class AnsibleFailJson(Exception):
    """fail_json was called."""


def exit_json(*args, **kwargs):
    kwargs.setdefault('changed', False)
    raise AnsibleExitJson(kwargs)


def fail_json(*args, **kwargs):
    kwargs['failed'] = True
    raise AnsibleFailJson(kwargs)


def run_main(module, args, runner, check_mode=False, diff=False, warnings=None):
    """Run ``module.main()`` with ``args``; returns (failed, result). ``warnings`` (a list) collects module.warn()."""
    args = dict(args)
    if check_mode:
        args['_ansible_check_mode'] = True
    if diff:
        args['_ansible_diff'] = True
    warned = [] if warnings is None else warnings
    with patch_module_args(args), \
            mock.patch.object(basic.AnsibleModule, 'exit_json', exit_json), \
            mock.patch.object(basic.AnsibleModule, 'fail_json', fail_json), \
            mock.patch.object(basic.AnsibleModule, 'warn', lambda self, msg: warned.append(msg)), \
            mock.patch.object(_module, 'CommandRunner', lambda mod: runner):
        try:
            module.main()
        except AnsibleExitJson as exc:
            return False, exc.args[0]
        except AnsibleFailJson as exc:
            return True, exc.args[0]
    raise AssertionError('main() returned without exit_json or fail_json')

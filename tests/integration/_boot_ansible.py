# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run a module with the real ``ansible`` and parse the ``minimal`` callback's output.

The shared ``ansible_module`` fixture asks for the ``ansible.builtin.json`` callback, which
ansible-core does not ship (it lives in ansible.posix); until that is fixed in
tests/integration/conftest.py the boot tests parse the built-in ``minimal`` output instead.
"""

from __future__ import annotations

import json
import re

from conftest import AnsibleRun, run_module  # pylint: disable=import-error

_HEAD = re.compile(r'^localhost \| (SUCCESS|CHANGED|FAILED!|UNREACHABLE!) => ', re.M)


def parse_minimal(output):
    heads = list(_HEAD.finditer(output))
    if not heads:
        return {}
    text = output[heads[-1].end():]
    try:
        result = json.JSONDecoder().raw_decode(text)[0]
    except ValueError:
        return {}
    if heads[-1].group(1) == 'FAILED!':
        result['failed'] = True
    if heads[-1].group(1) == 'CHANGED':
        result['changed'] = True
    return result


def run(module, args, check=False, diff=False, verbosity=0, env=None):
    environ = {'ANSIBLE_STDOUT_CALLBACK': 'ansible.builtin.minimal'}
    environ.update(env or {})
    r = run_module(module, args, check=check, diff=diff, verbosity=verbosity, env=environ)
    result = r.result or parse_minimal(r.output)
    return AnsibleRun(r.rc, result, r.output)

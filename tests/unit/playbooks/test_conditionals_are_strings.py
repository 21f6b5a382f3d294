# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every conditional (``that``, ``when``, ``failed_when``, ``changed_when``, ``until``) in the roles,
playbooks and Molecule scenarios is a string.

An unquoted ``x is search('status: done')`` is a YAML mapping, not a string: Ansible fails with
"Conditional expressions must be strings" only when the task runs, which for a scenario's verify
step is after many minutes of VMs. This finds it in milliseconds.
"""

from __future__ import annotations

import os

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
KEYS = ('that', 'when', 'failed_when', 'changed_when', 'until')


def yaml_files():
    for top in ('roles', 'playbooks', 'extensions'):
        for root, _dirs, files in os.walk(os.path.join(REPO, top)):
            for name in files:
                if name.endswith(('.yml', '.yaml')):
                    yield os.path.relpath(os.path.join(root, name), REPO)


def bad_conditionals(node, path=''):
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in KEYS:
                for item in value if isinstance(value, list) else [value]:
                    if not isinstance(item, (str, bool)):
                        found.append('%s/%s: %r' % (path, key, item))
            found += bad_conditionals(value, '%s/%s' % (path, key))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            found += bad_conditionals(item, '%s[%d]' % (path, index))
    return found


def test_the_check_finds_an_unquoted_colon():
    assert bad_conditionals(yaml.safe_load("- assert:\n    that:\n      - x is search('a: b')\n"))
    assert not bad_conditionals(yaml.safe_load("- assert:\n    that:\n      - \"x is search('a: b')\"\n"))


@pytest.mark.parametrize('path', sorted(yaml_files()))
def test_conditionals_are_strings(path):
    with open(os.path.join(REPO, path)) as f:
        docs = list(yaml.safe_load_all(f))
    assert bad_conditionals(docs) == []

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The roles' argument specs, defaults and tasks agree: every byol_* variable a task reads is documented,
every documented argument has its default in defaults/main.yml, with the same value."""

from __future__ import annotations

import os
import re

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
ROLES = os.path.join(REPO, 'roles')
# set by the roles themselves (facts, registered results), not arguments
INTERNAL = {'byol_request', 'byol_preflight', 'byol_partition_plan', 'byol_partition', 'byol_image_stage', 'byol_image',
            'byol_configdrive', 'byol_hook', 'byol_bootorder', 'byol_installer', 'byol_report'}


def load(*parts):
    with open(os.path.join(ROLES, *parts)) as f:
        return yaml.safe_load(f)


def role_text(role):
    text = ''
    for sub in ('tasks', 'vars'):
        folder = os.path.join(ROLES, role, sub)
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            with open(os.path.join(folder, name)) as f:
                content = f.read()
            if sub == 'tasks':
                # values a task sets for an imported entry point are not arguments it reads
                content = re.sub(r'(?m)^\s+byol_[a-z0-9_]+: .*$', '', content)
            text += content
    return text


DEFAULTS = load('byol', 'defaults', 'main.yml')


@pytest.mark.parametrize('role', ['byoi', 'byol'])
def test_every_variable_read_is_documented(role):
    specs = load(role, 'meta', 'argument_specs.yml')['argument_specs']['main']['options']
    used = set(re.findall(r'(?<![\w.])(byol_[a-z0-9_]+)', role_text(role))) - INTERNAL
    assert sorted(used - set(specs)) == []


@pytest.mark.parametrize('role', ['byoi', 'byol'])
def test_documented_defaults_match_defaults_file(role):
    specs = load(role, 'meta', 'argument_specs.yml')['argument_specs']['main']['options']
    for name, spec in specs.items():
        assert name in DEFAULTS, '%s: %s has no default in roles/byol/defaults/main.yml' % (role, name)
        if 'default' in spec:
            assert spec['default'] == DEFAULTS[name], (role, name)
        assert spec.get('description'), (role, name)
        assert spec.get('type'), (role, name)


def test_secrets_are_no_log():
    for role in ('byoi', 'byol'):
        specs = load(role, 'meta', 'argument_specs.yml')['argument_specs']['main']['options']
        assert specs['byol_http_headers'].get('no_log') is True
        assert specs['byol_user_data'].get('no_log') is True


def test_entry_points_of_byol():
    entry = load('byol', 'meta', 'argument_specs.yml')['argument_specs']
    assert set(entry) == {'main', 'preflight', 'reboot'}
    for point in ('preflight', 'reboot'):
        used = set(re.findall(r'(?<![\w.])(byol_[a-z0-9_]+)', open(os.path.join(ROLES, 'byol', 'tasks', point + '.yml')).read()))
        assert sorted(used - INTERNAL - set(entry[point]['options'])) == [], point


def test_step_tags_present():
    tags = set()
    for role in ('byoi', 'byol'):
        for name in os.listdir(os.path.join(ROLES, role, 'tasks')):
            for task in load(role, 'tasks', name) or []:
                tags.update(task.get('tags', []))
    assert {'preflight', 'partition', 'image', 'configdrive', 'hook', 'bootorder', 'reboot', 'always'} <= tags


def test_bool_arguments_are_cast_where_tasks_test_them():
    """`-e byol_reboot=false` gives the string 'false', which a bare `when: byol_reboot` takes as true
    (the demo's rescue VM once rebooted that way): a conditional on a bool argument casts it (`| bool`)."""
    roles = ROLES
    bools = set()
    for role in os.listdir(roles):
        with open(os.path.join(roles, role, 'meta', 'argument_specs.yml')) as f:
            spec = yaml.safe_load(f)['argument_specs']
        for entry in spec.values():
            bools.update(n for n, o in entry['options'].items() if o.get('type') == 'bool')
    assert 'byol_reboot' in bools
    bare = []
    for role in os.listdir(roles):
        tasks = os.path.join(roles, role, 'tasks')
        for name in os.listdir(tasks):
            with open(os.path.join(tasks, name)) as f:
                text = f.read()
            # conditionals (when:) and Jinja `if` expressions
            exprs = re.findall(r'^\s*when:\s*(.+)$', text, re.M) + re.findall(r"\bif ([^}]+?) else\b", text)
            for expr in exprs:
                for var in bools:
                    for m in re.finditer(r'\b%s\b(\s*\|\s*bool)?' % var, expr):
                        if not m.group(1):
                            bare.append('%s/%s: %s' % (role, name, expr.strip()))
    assert bare == []

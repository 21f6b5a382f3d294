# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The roles' argument specs, defaults and tasks agree: every byol_* variable a task reads is documented, and every
documented argument has a default that Ansible really uses (the role's defaults with those of its dependency
baremetal.byol.common, as ansible-playbook loads them), equal to the one ansible-doc shows."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

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
    # the common role's vars (the image arguments for module_defaults) are read by both roles' tasks
    for role, sub in ((role, 'tasks'), (role, 'vars'), ('common', 'vars')):
        folder = os.path.join(ROLES, role, sub)
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            with open(os.path.join(folder, name)) as f:
                content = f.read()
            if sub == 'tasks':
                # values a task sets for an imported entry point are not arguments it reads
                content = re.sub(r'(?m)^\s+byol_[a-z0-9_]+: .*$', '', content)
            text += content
    return text


# Loads each role the way ansible-playbook does (collection roles, dependencies, defaults files) and prints the default
# variables Ansible gives its tasks; raw values (templates are not rendered).
EFFECTIVE_DEFAULTS = r"""
import json, sys
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.playbook.play import Play
from ansible.plugins.loader import init_plugin_loader
from ansible.vars.manager import VariableManager

init_plugin_loader()
loader = DataLoader()
manager = VariableManager(loader=loader, inventory=InventoryManager(loader=loader, sources='localhost,'))
out = {}
for name in sys.argv[1:]:
    play = Play.load({'hosts': 'localhost', 'gather_facts': False, 'roles': [name]}, variable_manager=manager, loader=loader)
    role = play.get_roles()[0]
    out[name] = {'defaults': dict(role.get_default_vars()),
                 'dependencies': [d.get_name() for d in role.get_all_dependencies()]}
print(json.dumps(out, default=str))
"""


@pytest.fixture(scope='module')
def effective():
    """{'baremetal.byol.byoi': {'defaults': {...}, 'dependencies': [...]}, ...}"""
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.environ['BYOL_COLLECTIONS_PATH'], ANSIBLE_NOCOLOR='1')
    proc = subprocess.run([sys.executable, '-c', EFFECTIVE_DEFAULTS, 'baremetal.byol.byoi', 'baremetal.byol.byol'],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('role', ['byoi', 'byol'])
def test_every_variable_read_is_documented(role):
    specs = load(role, 'meta', 'argument_specs.yml')['argument_specs']['main']['options']
    used = set(re.findall(r'(?<![\w.])(byol_[a-z0-9_]+)', role_text(role))) - INTERNAL
    assert sorted(used - set(specs)) == []


@pytest.mark.parametrize('role', ['byoi', 'byol'])
def test_documented_defaults_are_the_defaults_ansible_uses(role, effective):
    """ansible-doc -t role shows the argument_specs' defaults; the role's tasks get the defaults files' values. They
    must be the same for every argument of every entry point: an argument without a default would be undefined."""
    defaults = effective['baremetal.byol.' + role]['defaults']
    for point, entry in load(role, 'meta', 'argument_specs.yml')['argument_specs'].items():
        for name, spec in entry['options'].items():
            if name in INTERNAL and 'default' not in spec:
                continue  # set by the role that imports the entry point (byol_installer)
            assert name in defaults, '%s (%s): %s has no default in its defaults files' % (role, point, name)
            if 'default' in spec:
                assert spec['default'] == defaults[name], (role, point, name, spec['default'], defaults[name])
            assert spec.get('description'), (role, point, name)
            assert spec.get('type'), (role, point, name)


@pytest.mark.parametrize('role', ['byoi', 'byol'])
def test_shared_defaults_have_one_source(role, effective):
    """The defaults both roles have come from baremetal.byol.common only: neither role's own defaults file repeats one
    (a copy could drift), and both roles have the common role as their dependency."""
    assert effective['baremetal.byol.' + role]['dependencies'] == ['baremetal.byol.common']
    common = load('common', 'defaults', 'main.yml')
    own_file = os.path.join(ROLES, role, 'defaults', 'main.yml')
    own = load(role, 'defaults', 'main.yml') if os.path.exists(own_file) else {}
    assert sorted(set(own) & set(common)) == []
    shared = set(load('byoi', 'meta', 'argument_specs.yml')['argument_specs']['main']['options']) & \
        set(load('byol', 'meta', 'argument_specs.yml')['argument_specs']['main']['options'])
    assert sorted(shared - set(common)) == []


def test_both_roles_document_a_shared_argument_alike():
    """The options both roles have are documented with the same type, default, choices and no_log."""
    byoi = load('byoi', 'meta', 'argument_specs.yml')['argument_specs']['main']['options']
    byol = load('byol', 'meta', 'argument_specs.yml')['argument_specs']['main']['options']
    for name in set(byoi) & set(byol):
        for key in ('type', 'default', 'choices', 'no_log', 'elements'):
            assert byoi[name].get(key) == byol[name].get(key), (name, key)


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
            todo = list(load(role, 'tasks', name) or [])
            while todo:
                task = todo.pop()
                tags.update(task.get('tags', []))
                todo.extend(task.get('block', []))
    assert {'preflight', 'partition', 'image', 'configdrive', 'hook', 'bootorder', 'reboot', 'always'} <= tags


def test_bool_arguments_are_cast_where_tasks_test_them():
    """`-e byol_reboot=false` gives the string 'false', which a bare `when: byol_reboot` takes as true
    (the demo's rescue VM once rebooted that way): a conditional on a bool argument casts it (`| bool`)."""
    roles = ROLES
    bools = set()
    for role in ('byoi', 'byol'):
        with open(os.path.join(roles, role, 'meta', 'argument_specs.yml')) as f:
            spec = yaml.safe_load(f)['argument_specs']
        for entry in spec.values():
            bools.update(n for n, o in entry['options'].items() if o.get('type') == 'bool')
    assert 'byol_reboot' in bools
    bare = []
    for role in ('byoi', 'byol'):
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

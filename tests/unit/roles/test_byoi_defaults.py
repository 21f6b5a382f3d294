# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""roles/byoi/defaults/main.yml: every argument of the byoi spec, nothing else, with the spec's default and the
same value as the byol role (whose pre-flight and reboot steps byoi imports)."""

from __future__ import annotations

import os

import yaml

ROLES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))), 'roles')


def load(*parts):
    with open(os.path.join(ROLES, *parts)) as f:
        return yaml.safe_load(f)


def test_byoi_defaults_match_its_argument_spec():
    specs = load('byoi', 'meta', 'argument_specs.yml')['argument_specs']['main']['options']
    defaults = load('byoi', 'defaults', 'main.yml')
    assert sorted(defaults) == sorted(specs)
    for name, spec in specs.items():
        if 'default' in spec:
            assert defaults[name] == spec['default'], name


def test_byoi_defaults_equal_the_byol_role_defaults():
    byoi = load('byoi', 'defaults', 'main.yml')
    byol = load('byol', 'defaults', 'main.yml')
    assert dict((k, byol.get(k)) for k in byoi) == byoi

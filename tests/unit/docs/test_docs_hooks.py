# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The example hooks in docs/examples/hooks/.

The Debian example is the hook of the lab's BYOL images (``BYOL_HOOK`` in lab/byollab/images.py),
the one the VM tests boot: the docs say so, so the two must not drift apart. The example only adds
``# shellcheck disable=...`` comment lines (hack/test runs shellcheck on it).
"""

from __future__ import annotations

import ast
import os
import re
import stat

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
HOOKS = os.path.join(REPO, 'docs', 'examples', 'hooks')
DEBIAN = os.path.join(HOOKS, 'debian', 'make_image_bootable.sh')
RHEL = os.path.join(HOOKS, 'rhel', 'make_image_bootable.sh')
LAB_IMAGES = os.path.join(REPO, 'lab', 'byollab', 'images.py')
SHELLCHECK_LINE = re.compile(r'^\s*# shellcheck disable=\S+.*$')


def lab_hook():
    """``BYOL_HOOK`` of the lab's image recipes, read without importing the lab."""
    with open(LAB_IMAGES) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, 'id', None) == 'BYOL_HOOK' for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError('BYOL_HOOK not found in lab/byollab/images.py')


def without_shellcheck_directives(text):
    return '\n'.join(line for line in text.split('\n') if not SHELLCHECK_LINE.match(line))


def test_debian_example_is_the_lab_hook():
    with open(DEBIAN) as f:
        example = f.read()
    assert without_shellcheck_directives(example) == lab_hook()


def test_only_directives_are_dropped():
    # the comparison above must not hide a changed line
    assert without_shellcheck_directives('a\n# shellcheck disable=SC1010  # why\nlog done\n') == 'a\nlog done\n'
    assert without_shellcheck_directives('a\n# a comment\n') == 'a\n# a comment\n'


@pytest.mark.parametrize('path', [DEBIAN, RHEL])
def test_hook_is_an_executable_script(path):
    assert os.stat(path).st_mode & stat.S_IXUSR
    with open(path) as f:
        assert f.readline().startswith('#!/bin/sh')


def test_rhel_example_says_it_is_not_lab_tested():
    with open(RHEL) as f:
        assert 'NOT TESTED BY A BOOT' in f.read()

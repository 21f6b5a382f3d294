# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The example hooks in docs/examples/hooks/.

The Debian example is the hook of the lab's BYOL images, the one the VM tests boot: the lab reads
it from docs/examples/hooks/debian (``BYOL_HOOK_PATH`` in lab/byollab/images.py), so the documented
hook and the tested one cannot drift apart.
"""

from __future__ import annotations

import ast
import os
import stat

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
HOOKS = os.path.join(REPO, 'docs', 'examples', 'hooks')
DEBIAN = os.path.join(HOOKS, 'debian', 'make_image_bootable.sh')
RHEL = os.path.join(HOOKS, 'rhel', 'make_image_bootable.sh')
LAB_IMAGES = os.path.join(REPO, 'lab', 'byollab', 'images.py')


def test_the_lab_builds_its_byol_images_with_the_debian_example():
    """Read without importing the lab: BYOL_HOOK is the file docs/examples/hooks/debian/make_image_bootable.sh."""
    with open(LAB_IMAGES) as f:
        tree = ast.parse(f.read())
    assigned = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                assigned[getattr(target, 'id', None)] = ast.unparse(node.value)
    assert "'docs', 'examples', 'hooks', 'debian', 'make_image_bootable.sh'" in assigned['BYOL_HOOK_PATH']
    assert 'BYOL_HOOK' not in assigned, 'the lab defines its own hook text again'
    with open(LAB_IMAGES) as f:
        assert 'with open(BYOL_HOOK_PATH) as _hook:\n    BYOL_HOOK = _hook.read()' in f.read()


@pytest.mark.parametrize('path', [DEBIAN, RHEL])
def test_hook_is_an_executable_script(path):
    assert os.stat(path).st_mode & stat.S_IXUSR
    with open(path) as f:
        assert f.readline().startswith('#!/bin/sh')


def test_rhel_example_says_it_is_not_lab_tested():
    with open(RHEL) as f:
        assert 'NOT TESTED BY A BOOT' in f.read()

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Make ``ansible_collections.baremetal.byol`` importable when pytest runs from the repo.

Under ``ansible-test units`` the collection is already importable: only ``BYOL_COLLECTIONS_PATH`` is exported.
Otherwise a symlink ``.build/pytest-root/ansible_collections/baremetal/byol`` -> repository
root is created and put on ``sys.path`` (and exported as ``BYOL_COLLECTIONS_PATH`` for tests
that run ``ansible`` itself).
"""

from __future__ import annotations

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bootstrap():
    try:
        from ansible_collections.baremetal.byol import plugins  # pylint: disable=import-outside-toplevel
    except ImportError:
        pass
    else:
        # e.g. under ansible-test units: export the collections path that holds it (for tests running ansible)
        plugins_dir = list(plugins.__path__)[0]
        os.environ.setdefault('BYOL_COLLECTIONS_PATH', os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(plugins_dir)))))
        return
    root = os.path.join(REPO, '.build', 'pytest-root')
    link = os.path.join(root, 'ansible_collections', 'baremetal', 'byol')
    if not os.path.islink(link):
        os.makedirs(os.path.dirname(link), exist_ok=True)
        try:
            os.symlink(REPO, link)
        except FileExistsError:
            pass
    sys.path.insert(0, root)
    os.environ.setdefault('BYOL_COLLECTIONS_PATH', root)
    # ansible may already have imported an (empty) ansible_collections namespace package
    for name in list(sys.modules):
        if name == 'ansible_collections' or name.startswith('ansible_collections.'):
            del sys.modules[name]


_bootstrap()

# The lab (test tooling, never shipped) is importable as ``byollab``.
LAB = os.path.join(REPO, 'lab')
if os.path.isdir(LAB) and LAB not in sys.path:
    sys.path.insert(0, LAB)

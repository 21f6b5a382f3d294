# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every command the modules run or look up has its Debian package in _runner.TOOL_PACKAGES
(the "install the package X on the rescue system" hint of a missing tool)."""

from __future__ import annotations

import os
import re

from ansible_collections.baremetal.byol.plugins.module_utils import _fstable
from ansible_collections.baremetal.byol.plugins.module_utils import _partition
from ansible_collections.baremetal.byol.plugins.module_utils._runner import TOOL_PACKAGES

PLUGINS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(_partition.__file__))))
# runner.run(['tool', ...]), runner.which('tool'), ['mkfs.x', ...] in a lambda, tools = [...] lists of byol_partition
CALL_RE = re.compile(r"""\b(?:run|which)\(\s*\[?\s*'([A-Za-z0-9_.+-]+)'""")
MKFS_RE = re.compile(r"""\['(mkfs\.[a-z0-9]+|mkswap)'""")
TOOL_LIST_RE = re.compile(r"""tools\s*(?:=|\+=)\s*\[([^\]]*)\]""")


def used_tools():
    found = {}
    for base, _dirs, files in os.walk(PLUGINS):
        for name in files:
            if not name.endswith('.py'):
                continue
            path = os.path.join(base, name)
            with open(path) as f:
                text = f.read()
            names = CALL_RE.findall(text) + MKFS_RE.findall(text)
            for listing in TOOL_LIST_RE.findall(text):
                names += re.findall(r"'([A-Za-z0-9_.+-]+)'", listing)
            for tool in names:
                found.setdefault(tool, set()).add(os.path.relpath(path, PLUGINS))
    return found


def test_the_scan_finds_the_tools():
    tools = used_tools()
    # a few known calls in different forms, so that a broken scan cannot pass silently
    for tool in ('sfdisk', 'findmnt', 'vgremove', 'pvs', 'mkfs.ext3', 'mkswap', 'qemu-img', 'efibootmgr', 'zstd'):
        assert tool in tools, tool
    assert len(tools) > 30


def test_every_tool_has_its_debian_package():
    missing = dict((tool, sorted(where)) for tool, where in used_tools().items() if tool not in TOOL_PACKAGES)
    assert missing == {}


def test_tools_of_the_filesystem_table():
    for row in _fstable.FILESYSTEMS:
        for argv in (row['mkfs'], row['grow'], [_fstable.tool(row['name'])]):
            if argv:
                assert TOOL_PACKAGES[argv[0]] == row['package'], (row['name'], argv[0])

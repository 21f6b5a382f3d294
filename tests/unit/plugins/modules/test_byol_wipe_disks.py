# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""byol_wipe_disks' main(): what would be wiped, and the disks it never wipes."""

from __future__ import annotations

from ansible_collections.baremetal.byol.plugins.modules import byol_wipe_disks
from ansible_collections.baremetal.byol.tests.unit.plugins.modules.test_byol_preflight import messy_server
from ansible_collections.baremetal.byol.tests.unit.plugins.modules.utils import run_main


def test_check_mode_names_the_signatures_and_wipes_nothing():
    runner = messy_server()
    failed, result = run_main(byol_wipe_disks, dict(disks=['/dev/sde'], lock_timeout=0), runner, check_mode=True)
    assert not failed, result
    assert result['changed'] is True and [w['path'] for w in result['wiped']] == ['/dev/sde']
    assert any('config-2' in s for s in result['wiped'][0]['signatures'])
    assert sorted(set(runner.tools())) == ['findmnt', 'lsblk', 'pvs']


def test_a_blank_disk_is_no_change():
    failed, result = run_main(byol_wipe_disks, dict(disks=['/dev/sda'], lock_timeout=0), messy_server())
    assert not failed and result == {'changed': False, 'wiped': []}


def test_removable_media_never_wiped():
    runner = messy_server()
    failed, result = run_main(byol_wipe_disks, dict(disks=['/dev/sdc'], lock_timeout=0), runner)
    assert failed and result['msg'].startswith('disk /dev/sdc is never wiped: removable media')
    assert 'wipefs' not in runner.tools()

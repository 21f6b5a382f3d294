# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""byol_preflight's main(): argument checks, the pre-flight result, and its warnings through module.warn."""

from __future__ import annotations

import pytest

from ansible_collections.baremetal.byol.plugins.modules import byol_preflight
from ansible_collections.baremetal.byol.tests.unit.plugins.module_utils.fake_runner import FakeRunner
from ansible_collections.baremetal.byol.tests.unit.plugins.module_utils.test_disk_select import PVS, messy_tree, recorded_server
from ansible_collections.baremetal.byol.tests.unit.plugins.modules.utils import run_main


def messy_server(without_stale_config_drive=False):
    """The recorded messy server (test_disk_select's), optionally without the stale disk's config-2 partition."""
    if not without_stale_config_drive:
        return recorded_server('messy_server', PVS)
    tree = messy_tree()
    for dev in tree:
        if dev['name'] == 'sde':
            dev['children'] = [c for c in dev['children'] if c['name'] != 'sde3']
    return recorded_server(None, PVS, tree=tree)


@pytest.mark.parametrize('params, msg', [
    (dict(disk_group_id=-1), 'disk_group_id must be 0 or more, got -1'),
    (dict(disks=0), 'disks must be 1 or more, got 0'),
    (dict(mount_root='/etc'), 'mount_root'),
])
def test_arguments_refused_before_any_command(params, msg):
    runner = FakeRunner()
    failed, result = run_main(byol_preflight, params, runner)
    assert failed and msg in result['msg'] and result['changed'] is False
    assert runner.calls == []


def test_result_and_warnings():
    warnings = []
    failed, result = run_main(byol_preflight, dict(check_in_use=False), messy_server(True), warnings=warnings)
    assert not failed, result
    assert result['changed'] is False and result['targets'] == ['/dev/nvme0n1']
    assert 'warnings' not in result
    assert warnings[0].startswith('Not a target, left alone: /dev/sde carries EFI system partition /dev/sde1')


def test_refusal_is_a_failure_with_its_message():
    failed, result = run_main(byol_preflight, dict(check_in_use=False), messy_server())
    assert failed and result['msg'].startswith('Disks that are not targets carry names the new installation creates too')

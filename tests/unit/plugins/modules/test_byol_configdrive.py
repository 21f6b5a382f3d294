# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""byol_configdrive's main(): the request is checked before the disk is looked at."""

from __future__ import annotations

import json

from ansible_collections.baremetal.byol.plugins.modules import byol_configdrive
from ansible_collections.baremetal.byol.tests.unit.plugins.module_utils.fake_runner import FakeRunner
from ansible_collections.baremetal.byol.tests.unit.plugins.modules.utils import run_main


def test_bad_hostname_refused_before_any_command():
    runner = FakeRunner()
    failed, result = run_main(byol_configdrive, dict(device='/dev/null', hostname='bad host;', lock_timeout=0), runner)
    assert failed and 'hostname' in result['msg'] and result['changed'] is False
    assert runner.calls == []


def test_a_partition_given_for_the_disk_is_refused_after_reading_it_only():
    runner = FakeRunner()
    runner.on('lsblk', stdout=json.dumps({'blockdevices': [{'name': 'null', 'path': '/dev/null', 'type': 'part',
                                                            'pkname': 'sda'}]}))
    failed, result = run_main(byol_configdrive, dict(device='/dev/null', hostname='web1', lock_timeout=0), runner)
    assert failed
    assert result['msg'] == '/dev/null is a partition; give the whole disk (the config drive partition is created on it)'
    assert runner.tools() == ['lsblk']

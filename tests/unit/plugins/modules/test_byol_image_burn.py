# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""byol_image_burn's main(): the request and the target are checked before the lock and before any download."""

from __future__ import annotations

import json

from ansible_collections.baremetal.byol.plugins.modules import byol_image_burn
from ansible_collections.baremetal.byol.tests.unit.plugins.module_utils.fake_runner import FakeRunner
from ansible_collections.baremetal.byol.tests.unit.plugins.modules.utils import run_main


def test_credentials_in_the_url_refused_and_never_echoed(run_dir):
    runner = FakeRunner()
    failed, result = run_main(byol_image_burn, dict(url='https://user:s3cret@images.example/x.qcow2', image_type='qcow2',
                                                    device='/dev/null', lock_timeout=0), runner)
    assert failed and 's3cret' not in json.dumps(result)
    assert 'url' in result['msg'] and runner.calls == []
    assert not (run_dir / 'server.lock').exists()


def test_a_partition_given_for_the_disk_is_refused_before_the_lock(run_dir):
    runner = FakeRunner()
    runner.on('lsblk', stdout=json.dumps({'blockdevices': [{'name': 'null', 'path': '/dev/null', 'type': 'part',
                                                            'pkname': 'sda'}]}))
    failed, result = run_main(byol_image_burn, dict(url='https://images.example/x.qcow2', image_type='qcow2',
                                                    device='/dev/null', lock_timeout=0), runner)
    assert failed
    assert result['msg'] == ('/dev/null is a partition; give the whole disk (the image is written onto it, '
                             'partition table included)')
    assert runner.tools() == ['lsblk']
    assert not (run_dir / 'server.lock').exists()

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The post-install report and the time of each step, from a real run of the byol role on a loop device
(ansible-playbook, the callback baremetal.byol.byol_steps enabled)."""

from __future__ import annotations

import json
import os

import pytest

# the image, its server and the playbook runner of the roles' tests
from test_roles import AUTH, ROLE_PLAY, USER_DATA, assert_no_secrets, byol_hook_image, images, play  # noqa: F401 pylint: disable=import-error,unused-import


def test_byol_report_and_step_times(tmp_path, loopdev, byol_hook_image, monkeypatch):  # noqa: F811 pylint: disable=redefined-outer-name
    httpserve = pytest.importorskip('byollab.httpserve')
    server = httpserve.ImageServer(os.path.dirname(byol_hook_image), auth=AUTH).start()
    dev = loopdev(size_mib=256)
    reports = str(tmp_path / 'reports')
    extra = {
        'byol_target_disks': [dev],
        'byol_image_url': server.url('byol-hook.qcow2') + '?token=URLPASSWORD',
        'byol_http_headers': {'Authorization': AUTH},
        'byol_hostname': 'report-byol',
        'byol_user_data': USER_DATA,
        'byol_layout': [{'mount_point': '/', 'fs_type': 'ext4', 'size': 0}],
        'byol_boot_mode': 'legacy',
        'byol_mount_root': str(tmp_path / 'target'),
        'byol_reboot': False,
        'byol_report_dir': reports,
    }
    monkeypatch.setenv('ANSIBLE_CALLBACKS_ENABLED', 'baremetal.byol.byol_steps')
    try:
        r = play(tmp_path, ROLE_PLAY % 'byol', extra, skip_tags=['bootorder'], verbosity=2)
    finally:
        server.stop()
    assert r.rc == 0, r.output
    assert_no_secrets(r.output)

    with open(os.path.join(reports, 'localhost.json')) as f:
        text = f.read()
    with open(os.path.join(reports, 'localhost.txt')) as f:
        table = f.read()
    for secret in ('S3CRETPASSWORD', AUTH.split()[1], 'USERDATASECRET', 'URLPASSWORD', 'cloud-config'):
        assert secret not in text and secret not in table, secret
    report = json.loads(text)
    assert report['host'] == 'localhost' and report['installer'] == 'byol'
    assert report['image']['url'] == server.url('byol-hook.qcow2') and len(report['image']['checksum']) == 128
    assert report['disks'][0]['path'] == dev and report['disks'][0]['partitions']
    root = [f for f in report['filesystems'] if f.get('mount_point') == '/'][0]
    assert root['fs_type'] == 'ext4' and len(root['uuid']) == 36
    assert report['config_drive']['hostname'] == 'report-byol'
    assert report['hook']['ran'] and report['hook']['rc'] == 0
    assert [s['step'] for s in report['steps']] == ['stage (download and check)', 'image (copy files)', 'hook']
    # the callback's measured times, added at the end of the play
    assert set(report['step_seconds']) >= {'preflight', 'plan', 'stage', 'partition', 'image', 'configdrive', 'hook',
                                           'reboot'}
    assert report['step_seconds_without_hook'] < report['step_seconds_total']
    # printed: the table in the play and the steps at its end
    assert 'UUID=%s' % root['uuid'] in r.output and 'UUID=%s' % root['uuid'] in table
    assert 'INSTALLER STEPS (seconds)' in r.output
    head = [line for line in r.output.splitlines() if line.startswith('host ') and 'without hook' in line]
    assert head and 'preflight' in head[0] and 'hook' in head[0], r.output

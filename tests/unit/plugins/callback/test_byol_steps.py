# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The callback baremetal.byol.byol_steps: which step a task belongs to, and the table."""

from __future__ import annotations

from ansible_collections.baremetal.byol.plugins.callback.byol_steps import summary, table, task_step

ROLE = '/x/ansible_collections/baremetal/byol/roles/byol/tasks/'


def test_task_step():
    assert task_step('baremetal.byol.byol_preflight', {}, None, ROLE + 'preflight.yml:20') == 'preflight'
    assert task_step('ansible.builtin.assert', {}, None, ROLE + 'preflight.yml:3') == 'preflight'
    assert task_step('baremetal.byol.byol_partition', {}, True, ROLE + 'main.yml:10') == 'plan'
    assert task_step('baremetal.byol.byol_partition', {}, None, ROLE + 'main.yml:80') == 'partition'
    assert task_step('baremetal.byol.byol_image_burn', {'stage_only': True}, None, ROLE + 'main.yml:50') == 'stage'
    assert task_step('baremetal.byol.byol_image_burn', {}, True, ROLE + 'main.yml:23') == 'plan'
    assert task_step('byol_image_burn', {}, None, '/p/roles/byoi/tasks/main.yml:11') == 'image'
    assert task_step('baremetal.byol.byol_bootable_hook', {}, None, ROLE + 'main.yml:140') == 'hook'
    assert task_step('ansible.builtin.command', {}, None, ROLE + 'reboot.yml:9') == 'reboot'
    assert task_step('ansible.builtin.copy', {}, None, ROLE + 'report.yml:40') == 'report'
    assert task_step('ansible.builtin.debug', {}, None, ROLE + 'main.yml:70') == 'other'
    # the fleet's own tasks are not the installer's
    assert task_step('ansible.builtin.debug', {}, None, '/site/playbook.yml:3') is None
    assert task_step('ansible.builtin.command', {}, None, '/site/roles/other/tasks/reboot.yml:3') is None
    assert task_step('ansible.builtin.debug', {}, None, None) is None


def test_summary_and_table():
    times = {'hook': 100.0, 'preflight': 2.5, 'image': 30.0}
    assert summary(times) == ([('preflight', 2.5), ('image', 30.0), ('hook', 100.0)], 132.5, 32.5)
    lines = table({'web2': {'preflight': 3.0}, 'web1': times})
    assert lines == ['host  preflight  image   hook  total  without hook',
                     'web1        2.5   30.0  100.0  132.5          32.5',
                     'web2        3.0      -      -    3.0           3.0']
    assert table({}) == []

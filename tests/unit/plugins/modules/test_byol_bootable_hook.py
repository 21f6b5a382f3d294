# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""byol_bootable_hook's main(): arguments refused with the result's shape kept, before the tree is touched."""

from __future__ import annotations

from ansible_collections.baremetal.byol.plugins.modules import byol_bootable_hook
from ansible_collections.baremetal.byol.tests.unit.plugins.module_utils.fake_runner import FakeRunner
from ansible_collections.baremetal.byol.tests.unit.plugins.modules.utils import run_main


def test_negative_timeout_refused_with_the_result_keys(tmp_path):
    runner = FakeRunner()
    failed, result = run_main(byol_bootable_hook, dict(root=str(tmp_path), timeout=-1, lock_timeout=0), runner)
    assert failed and result['msg'] == 'timeout must be 0 (no limit) or a number of seconds, got -1.'
    assert result['ran'] is False and result['rc'] is None and result['changed'] is False
    assert result['marker'] and result['files'] == []
    assert runner.calls == []


def test_the_rescue_systems_root_is_refused(tmp_path):
    runner = FakeRunner()
    failed, result = run_main(byol_bootable_hook, dict(root='/', lock_timeout=0), runner)
    assert failed and 'root' in result['msg'] and result['ran'] is False
    assert runner.calls == []


def test_check_mode_says_what_it_would_run(tmp_path):
    root = tmp_path / 'tree'
    (root / 'etc').mkdir(parents=True)
    (root / 'root' / '.ovh').mkdir(parents=True)
    script = root / 'root' / '.ovh' / 'make_image_bootable.sh'
    script.write_text('#!/bin/sh\necho should not run > /tmp/x\n')
    script.chmod(0o755)
    failed, result = run_main(byol_bootable_hook, dict(root=str(root), fstab='UUID=1 / ext4 defaults 0 1\n',
                                                       lock_timeout=0), FakeRunner(), check_mode=True)
    assert not failed, result
    assert result['changed'] and result['ran'] and result['files'] == ['/etc/fstab']
    assert result['msg'] == 'Would write /etc/fstab, then run /root/.ovh/make_image_bootable.sh in %s.' % root
    assert not (root / 'etc' / 'fstab').exists()
    assert result['digest'].startswith('sha256:')

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures of the lab's VM tests."""

from __future__ import annotations

import os
import shutil

import pytest

REQUIRED = ('qemu-system-x86_64', 'qemu-img', 'mmdebstrap', 'sgdisk', 'mkfs.ext4', 'mkfs.vfat', 'mcopy', 'grub-mkimage')


@pytest.fixture(scope='session')
def lab_host():
    """Skips the test unless this host can build and boot the lab's VMs (root, QEMU, OVMF, the image tools)."""
    if os.geteuid() != 0:
        pytest.skip('needs root')
    if os.environ.get('BYOL_VM_TESTS') == '0':
        pytest.skip('BYOL_VM_TESTS=0')
    missing = [t for t in REQUIRED if shutil.which(t) is None]
    if not os.path.exists('/usr/share/OVMF/OVMF_CODE_4M.fd'):
        missing.append('ovmf')
    if missing:
        pytest.skip('missing: %s' % ', '.join(missing))

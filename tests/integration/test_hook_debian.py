# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""byol_bootable_hook with a real Debian tree and a realistic hook (update-initramfs), no network.

The tree is built with mmdebstrap (Debian 12 minbase, initramfs-tools, linux-image-cloud-amd64;
about 80 s with a reachable apt mirror) and extracted onto ext4 on a loop device. The hook
regenerates the initramfs the way BYOL images do and proves that apt has no network.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils._blockdev import read_mountinfo
from ansible_collections.baremetal.byol.plugins.module_utils._chroot import mounts_under

from conftest import run_module as run_ansible  # pylint: disable=import-error

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which('mmdebstrap') is None or os.geteuid() != 0,
                                 reason='needs root and mmdebstrap')]

HOOK = """#!/bin/sh
set -e
echo "kernels: $(ls /lib/modules)"
rm -f /boot/initrd.img-*
update-initramfs -c -k all
ls -l /boot/initrd.img-*
apt-get -o Acquire::Retries=0 -o Acquire::http::Timeout=5 update 2>&1 || true
# what OVH's example hooks read: the kernel command line, lsblk with udev's data
echo "cmdline: $(cat /proc/cmdline)"
lsblk -n -r -p -o NAME,FSTYPE,MOUNTPOINT | sed 's/^/lsblk: /'
echo done > /root/hook-ran
"""


@pytest.fixture(scope='module')
def debian_tar(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('debian') / 'tree.tar')
    proc = subprocess.run(['mmdebstrap', '--variant=minbase', '--mode=root', '--include=initramfs-tools,linux-image-cloud-amd64,zstd',
                           'bookworm', out], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          check=False)
    if proc.returncode != 0:
        pytest.skip('mmdebstrap could not build a Debian tree (no apt mirror?): %s' % proc.stdout[-500:])
    return out


def test_update_initramfs_hook(debian_tar, loopdev, tmp_path):
    dev = loopdev(size_mib=1536)
    subprocess.run(['mkfs.ext4', '-q', '-F', dev], check=True)
    root = str(tmp_path / 'a')
    os.mkdir(root)
    subprocess.run(['mount', dev, root], check=True)
    try:
        subprocess.run(['tar', '-C', root, '-xpf', debian_tar], check=True)
        os.makedirs(os.path.join(root, 'root/.ovh'), exist_ok=True)
        hook = os.path.join(root, 'root/.ovh/make_image_bootable.sh')
        with open(hook, 'w') as f:
            f.write(HOOK)
        os.chmod(hook, 0o755)
        before = [(m['id'], m['mountpoint']) for m in mounts_under(read_mountinfo(), root)]
        r = run_ansible('byol_bootable_hook', {'root': root, 'timeout': 900})
        assert r.rc == 0, r.output
        res = r.result
        assert 'update-initramfs: Generating /boot/initrd.img-' in res['stdout'] + res['stderr']
        # no network: apt cannot even resolve the mirror, nothing is fetched
        assert 'Temporary failure resolving' in res['stdout']
        assert not [line for line in res['stdout'].splitlines() if line.startswith(('Get:', 'Hit:'))]
        with open('/proc/cmdline') as f:
            assert 'cmdline: ' + f.read().strip() in res['stdout']
        # the target disk, with its filesystem type, as the hook sees it; only the targets have a node
        assert 'lsblk: %s ext4 /' % dev in res['stdout'], res['stdout']
        assert res['devices'] == [dev], res['devices']
        initrds = [n for n in os.listdir(os.path.join(root, 'boot')) if n.startswith('initrd.img-')]
        assert initrds and os.path.getsize(os.path.join(root, 'boot', initrds[0])) > 1000000
        assert [(m['id'], m['mountpoint']) for m in mounts_under(read_mountinfo(), root)] == before
        r = run_ansible('byol_bootable_hook', {'root': root})
        assert r.rc == 0 and not r.changed, r.output
    finally:
        subprocess.run(['umount', root], check=False)

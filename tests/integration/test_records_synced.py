# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A record that says a step is done is written only once what it describes is on the disks (issue 20).

The installed tree has several filesystems (``/``, ``/boot``, ``/boot/efi``, ``/var`` ...). The image copy's
record and the hook's record live on ``/``; a power cut after the record must not lose the files the copy or the
hook put on ``/boot``. Proof with real filesystems: a second ext4 (loop device) is mounted at ``<tree>/boot``
with ``commit=600`` (its journal is not committed by itself during the test, and the kernel's writeback leaves
data younger than 30 s alone): its block device's write counter only moves when someone flushes it. The record's
step must move it.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from test_hook import tree, write_script  # noqa: F401 pylint: disable=unused-import,import-error

from ansible_collections.baremetal.byol.plugins.module_utils._treefs import Tree, mount_points_below

BUSYBOX_NEEDED = pytest.mark.skipif(not os.path.exists('/bin/busybox') and not os.path.exists('/usr/bin/busybox'),
                                    reason='busybox-static is not installed')


def sectors_written(dev):
    with open('/sys/block/%s/stat' % os.path.basename(dev)) as f:
        return int(f.read().split()[6])


def mount_boot(loopdev, root):
    """A second ext4 at ``root``/boot whose writes stay in memory until flushed; returns its device."""
    dev = loopdev(size_mib=64)
    subprocess.run(['mkfs.ext4', '-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0', dev], check=True)
    boot = os.path.join(root, 'boot')
    os.makedirs(boot, exist_ok=True)
    subprocess.run(['mount', '-o', 'noatime,commit=600', dev, boot], check=True)
    subprocess.run(['sync'], check=True)
    return dev


def test_mount_points_below_reads_mountinfo(tmp_path):
    info = tmp_path / 'mountinfo'
    info.write_text('22 1 8:1 / / rw - ext4 /dev/sda1 rw\n'
                    '30 22 8:2 / /mnt/t rw - ext4 /dev/vda2 rw\n'
                    '31 30 8:3 / /mnt/t/boot rw - ext4 /dev/vda3 rw\n'
                    '32 31 8:4 / /mnt/t/boot/efi rw - vfat /dev/vda1 rw\n'
                    '33 30 8:5 / /mnt/t/var\\040lib rw - xfs /dev/vda5 rw\n'
                    '34 22 8:6 / /mnt/tt rw - ext4 /dev/vdb1 rw\n')
    assert mount_points_below('/mnt/t', str(info)) == ['/mnt/t/boot', '/mnt/t/boot/efi', '/mnt/t/var lib']


def test_tree_sync_flushes_the_filesystems_mounted_below_it(tree, loopdev):  # noqa: F811 pylint: disable=redefined-outer-name
    """The copy's record follows ``Tree.sync()``: on main it flushed only the tree's top filesystem."""
    dev = mount_boot(loopdev, tree)
    try:
        with open(os.path.join(tree, 'boot', 'vmlinuz'), 'wb') as f:
            f.write(os.urandom(1024 * 1024))
        before = sectors_written(dev)
        with Tree(tree) as t:
            t.sync()
        assert sectors_written(dev) - before >= 2048, 'the 1 MiB written to /boot did not reach its disk'
    finally:
        subprocess.run(['umount', os.path.join(tree, 'boot')], check=False)


@BUSYBOX_NEEDED
def test_hook_record_written_after_its_files_reach_the_disks(tree, loopdev, ansible_module):  # noqa: F811 pylint: disable=redefined-outer-name
    """The hook writes 1 MiB to /boot (an initramfs); by the time the module has written its record, /boot's disk
    has it. On main the record was fsynced alone (on /): /boot's device saw no write."""
    dev = mount_boot(loopdev, tree)
    try:
        write_script(tree, 'dd if=/dev/urandom of=/boot/initrd.img bs=1024 count=1024 2>/dev/null; echo hook-wrote-boot')
        os.symlink('busybox', os.path.join(tree, 'bin', 'dd'))
        before = sectors_written(dev)
        r = ansible_module('byol_bootable_hook', {'root': tree, 'timeout': 60})
        assert r.rc == 0, r.output
        assert 'hook-wrote-boot' in r.result['stdout']  # the hook ran and wrote its file
        assert os.path.getsize(os.path.join(tree, 'boot', 'initrd.img')) == 1024 * 1024
        assert os.path.exists(os.path.join(tree, 'var/lib/byol/make_image_bootable.done'))
        assert sectors_written(dev) - before >= 2048, "the hook's 1 MiB on /boot did not reach its disk before the record"
    finally:
        subprocess.run(['umount', os.path.join(tree, 'boot')], check=False)

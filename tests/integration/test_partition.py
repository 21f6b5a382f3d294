# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""byol_partition on loop devices with the real tools and real ``ansible`` runs.

The host kernel has no md, dm or vfat: RAID and LVM layouts run in the VM lab; here the
ESP is created and formatted (mkfs.vfat works on any kernel) but not mounted
(``mount_esp: false``), and everything else is mounted under a temporary mount_root.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils._blockdev import write_sectors
from conftest import wait_ext4_lazyinit  # pylint: disable=import-error


def lsblk(dev):
    out = subprocess.run(['lsblk', '--json', '--output', 'PATH,TYPE,FSTYPE,LABEL,PARTTYPE,MOUNTPOINTS', dev],
                         check=True, stdout=subprocess.PIPE, universal_newlines=True).stdout
    flat = {}

    def walk(nodes):
        for n in nodes or []:
            flat[n['path']] = n
            walk(n.get('children'))
    walk(json.loads(out)['blockdevices'])
    return flat


def findmnt(target):
    res = subprocess.run(['findmnt', '--noheadings', '--output', 'SOURCE', '--mountpoint', target],
                         stdout=subprocess.PIPE, universal_newlines=True, check=False)
    return res.stdout.strip()


def quiet_writes(dev, timeout=120, window=7):
    """Sync and wait until the write counter stays still for ``window`` s.

    Freshly made ext4 filesystems zero their inode tables in the background after the first
    mount (the ``ext4lazyinit`` kernel thread, which exists only while it has work) and
    journals commit every 5 s: wait for both so the module's own writes can be counted.
    """
    deadline = time.monotonic() + timeout
    wait_ext4_lazyinit(deadline)
    subprocess.run(['sync'], check=True)
    last = write_sectors(dev)
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        cur = write_sectors(dev)
        if cur != last:
            last, stable_since = cur, time.monotonic()
        elif time.monotonic() - stable_since >= window:
            return cur
    return last


GPT_LAYOUT = [
    {'mount_point': '/boot', 'fs_type': 'ext4', 'size': 256},
    {'mount_point': 'swap', 'fs_type': 'swap', 'size': 64},
    {'mount_point': '/', 'fs_type': 'ext4', 'size': 0},
    {'mount_point': '/var', 'fs_type': 'xfs', 'size': 320},
    {'mount_point': '/srv', 'fs_type': 'btrfs', 'size': 128},
]


def test_gpt_uefi_single_disk_idempotent(loopdev, ansible_module, tmp_path):
    dev = loopdev(size_mib=2048)
    root = str(tmp_path / 'a')
    args = {'disks': [dev], 'layout': GPT_LAYOUT, 'boot_mode': 'uefi', 'table_type': 'gpt', 'mount_root': root,
            'mount_esp': False, 'configdrive_size': 64}

    # check mode on a blank disk: reports the change, writes nothing
    before = write_sectors(dev)
    r = ansible_module('byol_partition', args, check=True, diff=True)
    assert r.rc == 0, r.output
    assert r.changed and r.result['repartitioned']
    assert '-%s: no partition table' % dev in r.output  # --diff: today's disk beside the plan
    assert '+%s: gpt table' % dev in r.output
    assert write_sectors(dev) == before
    assert subprocess.run(['sfdisk', '--dump', dev], stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False).returncode != 0

    r = ansible_module('byol_partition', args)
    assert r.rc == 0, r.output
    assert r.changed
    p = dev + 'p'
    blk = lsblk(dev)
    assert blk[p + '1']['fstype'] == 'vfat' and blk[p + '1']['label'] == 'EFI_SYSPART'
    assert blk[p + '1']['parttype'] == 'c12a7328-f81f-11d2-ba4b-00a0c93ec93b'
    assert (blk[p + '2']['fstype'], blk[p + '2']['label']) == ('ext4', 'boot')
    assert (blk[p + '3']['fstype'], blk[p + '3']['label']) == ('swap', 'swap')
    assert (blk[p + '4']['fstype'], blk[p + '4']['label']) == ('xfs', 'var')
    assert (blk[p + '5']['fstype'], blk[p + '5']['label']) == ('btrfs', 'srv')
    assert (blk[p + '6']['fstype'], blk[p + '6']['label']) == ('ext4', 'root')
    assert findmnt(root) == p + '6'
    assert findmnt(root + '/boot') == p + '2'
    assert findmnt(root + '/var') == p + '4'
    assert findmnt(root + '/srv') == p + '5'
    assert findmnt(root + '/boot/efi') == ''
    # the config drive space stays free at the end: last partition ends 64 MiB + backup GPT before the end
    dump = json.loads(subprocess.run(['sfdisk', '--json', dev], check=True, stdout=subprocess.PIPE).stdout)
    last = dump['partitiontable']['partitions'][-1]
    assert (2048 * 2048 - (last['start'] + last['size'])) // 2048 == 65
    # fstab by UUID, mdadm.conf empty, ESP reported
    uuid_root = subprocess.run(['blkid', '-s', 'UUID', '-o', 'value', p + '6'], check=True, stdout=subprocess.PIPE,
                               universal_newlines=True).stdout.strip()
    assert 'UUID=%s / ext4 defaults 0 1' % uuid_root in r.result['fstab']
    assert ' none swap sw 0 0' in r.result['fstab'] and ' /boot/efi vfat ' in r.result['fstab']
    assert r.result['mdadm_conf'] == ''
    assert r.result['esp_devices'] == [p + '1'] and r.result['boot_device'] == p + '2' and r.result['root_device'] == p + '6'

    # second run: nothing to do, not one sector written
    quiet = quiet_writes(dev)
    r2 = ansible_module('byol_partition', args)
    assert r2.rc == 0, r2.output
    assert not r2.changed and not r2.result['repartitioned'] and r2.result['differences'] == []
    assert write_sectors(dev) == quiet
    assert r2.result['fstab'] == r.result['fstab']

    # check mode + diff on the matching disk: no change, empty diff
    r3 = ansible_module('byol_partition', args, check=True, diff=True)
    assert r3.rc == 0 and not r3.changed
    assert '--- before' not in r3.output and '+++ after' not in r3.output
    assert write_sectors(dev) == quiet

    # unmounted (e.g. after a reboot into rescue): only mounts again, no wipe
    for t in (root + '/srv', root + '/var', root + '/boot', root):
        subprocess.run(['umount', t], check=True)
    r4 = ansible_module('byol_partition', args)
    assert r4.rc == 0 and r4.changed and not r4.result['repartitioned'], r4.output
    assert findmnt(root + '/var') == p + '4'
    assert subprocess.run(['blkid', '-s', 'UUID', '-o', 'value', p + '6'], stdout=subprocess.PIPE,
                          universal_newlines=True, check=False).stdout.strip() == uuid_root

    # a different layout while our own filesystems are mounted under mount_root: torn down and redone
    args2 = dict(args, layout=[{'mount_point': '/', 'fs_type': 'ext4', 'size': 0},
                               {'mount_point': '/home', 'fs_type': 'btrfs', 'size': 200}])
    r5 = ansible_module('byol_partition', args2, check=True)
    assert r5.rc == 0 and r5.changed and r5.result['repartitioned']
    assert findmnt(root + '/var') == p + '4'  # check mode touched nothing
    r6 = ansible_module('byol_partition', args2)
    assert r6.rc == 0 and r6.changed and r6.result['repartitioned'], r6.output
    blk = lsblk(dev)
    assert sorted(k for k in blk if k != dev) == [p + '1', p + '2', p + '3']
    assert findmnt(root) == p + '3' and findmnt(root + '/home') == p + '2' and findmnt(root + '/var') == ''


MBR_LAYOUT = [
    {'mount_point': '/boot', 'fs_type': 'ext4', 'size': 256},
    {'mount_point': 'swap', 'fs_type': 'swap', 'size': 64},
    {'mount_point': '/', 'fs_type': 'ext4', 'size': 0},
    {'mount_point': '/var', 'fs_type': 'xfs', 'size': 400},
    {'mount_point': '/home', 'fs_type': 'ext4', 'size': 100},
]


def test_mbr_legacy_extended_partitions_idempotent(loopdev, ansible_module, tmp_path):
    dev = loopdev(size_mib=2048)
    root = str(tmp_path / 'a')
    args = {'disks': [dev], 'layout': MBR_LAYOUT, 'boot_mode': 'legacy', 'table_type': 'msdos', 'mount_root': root,
            'configdrive_size': 64}
    r = ansible_module('byol_partition', args)
    assert r.rc == 0 and r.changed, r.output
    dump = json.loads(subprocess.run(['sfdisk', '--json', dev], check=True, stdout=subprocess.PIPE).stdout)['partitiontable']
    assert dump['label'] == 'dos'
    got = [(x['node'][len(dev) + 1:], x['type'], bool(x.get('bootable'))) for x in dump['partitions']]
    assert got == [('1', '83', True), ('2', '82', False), ('3', '5', False), ('5', '83', False), ('6', '83', False),
                   ('7', '83', False)]
    # partition 4 is left for the config drive; the extended partition stops before its space
    ext = dump['partitions'][2]
    assert ext['start'] + ext['size'] == 2048 * 2048 - 64 * 2048
    p = dev + 'p'
    assert findmnt(root) == p + '7' and findmnt(root + '/var') == p + '5' and findmnt(root + '/home') == p + '6'
    assert findmnt(root + '/boot') == p + '1'
    assert lsblk(dev)[p + '5']['fstype'] == 'xfs'
    quiet = quiet_writes(dev)
    r2 = ansible_module('byol_partition', args)
    assert r2.rc == 0 and not r2.changed, r2.output
    assert write_sectors(dev) == quiet


def test_refuses_disk_mounted_elsewhere(loopdev, ansible_module, tmp_path):
    dev = loopdev(size_mib=1024)
    root = str(tmp_path / 'a')
    args = {'disks': [dev], 'layout': [{'mount_point': '/', 'fs_type': 'ext4', 'size': 0}], 'boot_mode': 'legacy',
            'mount_root': root}
    r = ansible_module('byol_partition', args)
    assert r.rc == 0 and r.changed, r.output
    subprocess.run(['umount', root], check=True)
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    part = dev + 'p2'
    subprocess.run(['mount', part, str(elsewhere)], check=True)
    try:
        quiet = quiet_writes(dev)
        other = dict(args, layout=[{'mount_point': '/', 'fs_type': 'btrfs', 'size': 0}])
        for check in (True, False):
            r = ansible_module('byol_partition', other, check=check)
            assert r.failed and r.rc != 0
            assert 'Refusing to touch disk(s) that are in use' in r.result['msg']
            assert '%s is mounted on %s' % (part, elsewhere) in r.result['msg']
        assert write_sectors(dev) == quiet
        assert findmnt(str(elsewhere)) == part
    finally:
        subprocess.run(['umount', str(elsewhere)], check=False)


def test_validation_error_before_touching_disk(loopdev, ansible_module, tmp_path):
    dev = loopdev(size_mib=512)
    before = write_sectors(dev)
    args = {'disks': [dev], 'layout': [{'mount_point': '/', 'fs_type': 'xfs', 'size': 0}], 'boot_mode': 'legacy',
            'mount_root': str(tmp_path / 'a')}
    r = ansible_module('byol_partition', args)
    assert r.failed and r.result['msg'].startswith('/ may not be XFS')
    r = ansible_module('byol_partition', dict(args, layout=[{'mount_point': '/', 'fs_type': 'ext4', 'size': 4096}]))
    assert r.failed and 'The layout does not fit' in r.result['msg'] and dev in r.result['msg']
    assert write_sectors(dev) == before


@pytest.mark.skipif(os.path.exists('/sbin/zpool') or os.path.exists('/usr/sbin/zpool'), reason='ZFS tools installed')
def test_zfs_without_tools_refused(loopdev, ansible_module, tmp_path):
    dev = loopdev(size_mib=1024)
    before = write_sectors(dev)
    args = {'disks': [dev], 'boot_mode': 'legacy', 'mount_root': str(tmp_path / 'a'),
            'layout': [{'mount_point': '/', 'fs_type': 'ext4', 'size': 400},
                       {'mount_point': '/tank', 'fs_type': 'zfs', 'size': 0, 'zpool_name': 'tank'}]}
    r = ansible_module('byol_partition', args)
    assert r.failed and 'no ZFS tools' in r.result['msg']
    assert write_sectors(dev) == before


def test_mount_point_link_out_of_tree_refused(loopdev, ansible_module, tmp_path):
    """A second run after the image was copied: the tree holds a symbolic link where a mount point belongs (the
    image's own, or the hook's). The mount is refused; on main ``mount`` followed the link and mounted the
    filesystem over a directory of the rescue system."""
    dev = loopdev(size_mib=1024)
    root = str(tmp_path / 'a')
    outside = tmp_path / 'outside'
    outside.mkdir()
    (outside / 'victim').write_text('rescue system file\n')
    args = {'disks': [dev], 'boot_mode': 'legacy', 'mount_root': root,
            'layout': [{'mount_point': '/', 'fs_type': 'ext4', 'size': 0},
                       {'mount_point': '/data', 'fs_type': 'ext4', 'size': 100}]}
    r = ansible_module('byol_partition', args)
    assert r.rc == 0 and r.changed, r.output
    data_dev = findmnt(root + '/data')
    assert data_dev
    subprocess.run(['umount', root + '/data'], check=True)
    os.rmdir(root + '/data')
    os.symlink(str(outside), root + '/data')
    try:
        r = ansible_module('byol_partition', args)
        assert findmnt(str(outside)) == ''
        assert r.failed, r.output
        assert 'Refusing /data in the target tree %s: /data is a symbolic link, not a directory' % root \
            in r.result['msg'], r.result['msg']
        assert os.path.islink(root + '/data')
        assert sorted(os.listdir(str(outside))) == ['victim']
    finally:
        subprocess.run(['umount', str(outside)], check=False, stderr=subprocess.DEVNULL)


def test_second_run_after_table_wiped_partitions_again(loopdev, ansible_module, tmp_path):
    """issue 25: the disks' check reads the disks, not a record: a wiped table is partitioned again."""
    dev = loopdev(size_mib=1024)
    root = str(tmp_path / 'a')
    args = {'disks': [dev], 'boot_mode': 'legacy', 'mount_root': root,
            'layout': [{'mount_point': '/', 'fs_type': 'ext4', 'size': 0}]}
    r = ansible_module('byol_partition', args)
    assert r.rc == 0 and r.changed, r.output
    subprocess.run(['umount', root], check=True)
    with open(dev, 'r+b') as f:
        f.write(b'\0' * 1024 * 1024)
        os.fsync(f.fileno())
    r = ansible_module('byol_partition', args)
    assert r.rc == 0, r.output
    assert r.changed and r.result['repartitioned'], r.output
    assert '%s has no partition table' % dev in r.result['differences']
    assert findmnt(root)


def one_partition(dev):
    """Give ``dev`` a GPT with one partition and wait for its node; returns the partition's path."""
    subprocess.run(['sfdisk', '--quiet', dev], input='label: gpt\n,,L\n', universal_newlines=True, check=True)
    part = dev + 'p1'
    deadline = time.monotonic() + 60
    while not os.path.exists(part) and time.monotonic() < deadline:
        subprocess.run(['partx', '--update', dev], check=False)
        subprocess.run(['udevadm', 'settle', '--timeout=10'], check=False)
        time.sleep(0.2)
    assert os.path.exists(part)
    return part


def test_partition_taken_for_a_disk_refused(loopdev, ansible_module, tmp_path):
    """A partition given as a disk (byol_partition disks, byol_image_burn device) is refused before any write;
    on main's code both wrote a partition table inside the partition."""
    dev = loopdev(size_mib=96)
    part = one_partition(dev)
    before = write_sectors(dev)
    r = ansible_module('byol_partition', {'disks': [part], 'layout': [{'mount_point': '/', 'fs_type': 'ext4'}],
                                          'boot_mode': 'legacy', 'configdrive_size': 0,
                                          'mount_root': str(tmp_path / 'mnt')})
    assert r.failed and r.result['msg'].startswith(
        '%s is a partition; give the whole disk (the partition table is written onto it)' % part), r.result.get('msg')
    image = tmp_path / 'img.raw'
    with open(str(image), 'wb') as f:
        f.truncate(2 * 1024 * 1024)
    subprocess.run(['sfdisk', '--quiet', str(image)], input='label: gpt\n,,L\n', universal_newlines=True, check=True)
    r = ansible_module('byol_image_burn', {'url': 'file://%s' % image, 'image_type': 'raw', 'device': part,
                                           'state_dir': str(tmp_path / 'state')})
    assert r.failed and r.result['msg'].startswith('%s is a partition; give the whole disk' % part), r.result.get('msg')
    assert write_sectors(dev) == before


def test_loop_device_backed_by_a_file_on_a_target_refused(loopdev, ansible_module, tmp_path):
    """A loop device whose backing file lives on the target's filesystem (mounted under mount_root, which the
    in-use check allows) holds the disk: refused and named before any write. On main's code it passed the
    check and the teardown failed half-way (umount: target is busy)."""
    dev = loopdev(size_mib=128)
    part = one_partition(dev)
    # no lazy init: the kernel's background zeroing would move the write counter
    subprocess.run(['mkfs.ext4', '-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0', part], check=True)
    mnt = tmp_path / 'mnt'
    mnt.mkdir()
    # noatime: whoever reads the stacked loop device below (udev's probe of the new device, which under load comes
    # after the sync; another run's preflight) reads inner.img, and with relatime that first read of a new file
    # updates its atime, which the journal then writes to the disk (8 sectors) - not the module's write
    subprocess.run(['mount', '-o', 'noatime', part, str(mnt)], check=True)
    stacked = None
    try:
        backing = mnt / 'inner.img'
        with open(str(backing), 'wb') as f:
            f.truncate(8 * 1024 * 1024)
        stacked = subprocess.run(['losetup', '--show', '--find', str(backing)], stdout=subprocess.PIPE,
                                 universal_newlines=True, check=True).stdout.strip()
        subprocess.run(['udevadm', 'settle', '--timeout=60'], check=False)
        subprocess.run(['sync'], check=True)
        before = write_sectors(dev)
        r = ansible_module('byol_partition', {'disks': [dev], 'layout': [{'mount_point': '/', 'fs_type': 'ext4'}],
                                              'boot_mode': 'legacy', 'configdrive_size': 0, 'mount_root': str(mnt)})
        assert r.failed
        assert ('%s is a loop device backed by %s, a file on %s' % (stacked, backing, part)) in r.result['msg'], \
            r.result.get('msg')
        assert write_sectors(dev) == before
        assert findmnt(str(mnt))  # still mounted: nothing was torn down
    finally:
        if stacked:
            subprocess.run(['losetup', '--detach', stacked], check=False)
        subprocess.run(['umount', str(mnt)], check=False)


def test_partition_held_open_named_after_retries(loopdev, ansible_module, tmp_path):
    """A process that keeps a partition of the target open: the kernel cannot take the new table (it would keep
    the old partition's size). The re-read is retried after settling, then the run stops and names the process.
    On main's code the failed re-read was ignored and the run went on with the kernel's old partitions."""
    dev = loopdev(size_mib=128)
    part = one_partition(dev)
    holder = subprocess.Popen(['sleep', '600'], stdin=open(part, 'rb'))
    try:
        r = ansible_module('byol_partition', {'disks': [dev], 'layout': [{'mount_point': '/', 'fs_type': 'ext4'}],
                                              'boot_mode': 'legacy', 'configdrive_size': 0,
                                              'mount_root': str(tmp_path / 'mnt')})
        assert holder.poll() is None  # the holder was there all along
        assert r.failed
        msg = r.result['msg']
        assert 'after 10 attempts, %s stayed busy' % dev in msg, msg
        assert '%d (sleep) has %s open' % (holder.pid, part) in msg, msg
    finally:
        holder.kill()
        holder.wait()

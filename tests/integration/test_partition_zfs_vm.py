# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""byol_partition with ZFS pools and datasets, in the lab's ZFS rescue VM (``rescue_zfs``: the host has no zfs module).

Like test_partition_vm (the same payload: the collection's plugins copied over SSH, the module run directly), with
the ``rescue_zfs`` artifact (built on first use: minutes of DKMS build) and three blank disks:

- two disks: ``/boot`` ext4 on md RAID 1, swap, ``/`` on a ZFS mirror (pool ``rpool``), ``/srv`` a second dataset
  with a quota: the pool's vdevs, ashift and properties, the datasets' mountpoints and canmount, the mounts under the
  mount root (altroot), fstab without the datasets; second run changed false and no sector written; check mode;
- the pool exported (a reboot of the rescue system): the re-run imports it on its planned members, mounts, does not
  repartition;
- another layout without ZFS on the same disks: the pool is destroyed and its labels cleared (no importable pool
  left);
- a pool on a target and a disk that is not a target: refused, imported and exported (labels only), nothing changed.

Measured on the 2-core TCG machine under load (2026-12-08, BYOL_LAB_SMP=1): 106 s to SSH, 318 s for the scenarios
(41 checks), 436 s in all; the cold build of ``rescue_zfs`` before it: 2829 s.
"""

from __future__ import annotations

import os
import time

import pytest

from test_partition_vm import GUEST_COMMON, run_guest_checks  # pylint: disable=import-error

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason='needs root')]


def test_partition_zfs_in_vm():
    vm_module = pytest.importorskip('byollab.vm')
    t0 = time.monotonic()
    with vm_module.RescueVM('zfs-partition-%d' % os.getpid(), disks=3, disk_size='3G', firmware='bios',
                            rescue='rescue_zfs') as vm:
        vm.start()
        vm.wait_ssh(timeout=900)
        run_guest_checks(vm, GUEST, 'zfstest', t0, 25)


GUEST = r'''"""In-VM check of byol_partition with ZFS."""
''' + GUEST_COMMON + r'''def prop(what, name, key):
    return sh('zpool' if what == 'pool' else 'zfs', 'get', '-H', '-o', 'value', key, name).strip()


def main():
    print(sh('modprobe', 'zfs'), sh('zfs', 'version'))
    os.makedirs('/tmp/a', exist_ok=True)
    disks = ['/dev/vda', '/dev/vdb']
    two = {'disks': disks, 'boot_mode': 'legacy', 'table_type': 'gpt', 'mount_root': '/tmp/a',
           'configdrive_size': 64, 'layout': [
               {'mount_point': '/boot', 'fs_type': 'ext4', 'size': 512, 'raid_level': 1},
               {'mount_point': 'swap', 'fs_type': 'swap', 'size': 128},
               {'mount_point': '/', 'fs_type': 'zfs', 'size': 0, 'raid_level': 1, 'zpool_name': 'rpool'},
               {'mount_point': '/srv', 'fs_type': 'zfs', 'size': 256, 'raid_level': 1, 'zpool_name': 'rpool'}]}
    print('==== scenario two-disks-zfs-mirror', flush=True)
    r = run(two, check=True)
    expect(not r.get('failed') and r.get('changed'), 'check mode on blank disks reports a change')
    expect(not sh('zpool', 'list', '-H', '-o', 'name').strip(), 'check mode created no pool')
    r = run(two)
    expect(not r.get('failed') and r.get('changed') and r.get('repartitioned'), 'first run changed')
    if r.get('failed'):
        print(json.dumps(r, indent=1)[:6000])
        return
    status = sh('zpool', 'status', '-P', 'rpool')
    print(status)
    print(sh('zfs', 'list', '-o', 'name,mountpoint,canmount,quota,mounted'))
    print(sh('findmnt', '-R', '/tmp/a'))
    print(r['fstab'])
    expect('mirror-0' in status and '/dev/vda4' in status and '/dev/vdb4' in status,
           'rpool is one mirror of vda4 and vdb4')
    pbsz = int(sh('blockdev', '--getpbsz', '/dev/vda').strip())
    ashift = {512: '9', 4096: '12'}.get(pbsz)
    expect(prop('pool', 'rpool', 'ashift') == ashift, 'ashift %s from the physical sector size %d' % (ashift, pbsz))
    expect(prop('pool', 'rpool', 'altroot') == '/tmp/a', 'altroot is the mount root')
    for key, value in (('compression', 'lz4'), ('atime', 'off'), ('xattr', 'sa'), ('acltype', 'posix')):
        got = prop('ds', 'rpool/root', key)
        expect(got.startswith(value), 'rpool/root inherits %s=%s (%s)' % (key, value, got))
    expect(prop('ds', 'rpool', 'canmount') == 'off', 'the pool root dataset is never mounted')
    expect(prop('ds', 'rpool/root', 'mountpoint') == '/tmp/a', 'rpool/root mountpoint / under the altroot')
    expect(prop('ds', 'rpool/root', 'canmount') == 'noauto', 'rpool/root canmount noauto (the initramfs mounts /)')
    expect(prop('ds', 'rpool/srv', 'canmount') == 'on', 'rpool/srv canmount on (mounted by ZFS at boot)')
    expect(prop('ds', 'rpool/srv', 'quota') == '256M', 'rpool/srv quota 256M')
    expect(sh('findmnt', '-n', '-o', 'SOURCE,FSTYPE', '/tmp/a').split() == ['rpool/root', 'zfs'], '/ is rpool/root')
    expect(sh('findmnt', '-n', '-o', 'SOURCE,FSTYPE', '/tmp/a/srv').split() == ['rpool/srv', 'zfs'], '/srv is rpool/srv')
    expect(sh('findmnt', '-n', '-o', 'FSTYPE', '/tmp/a/boot').strip() == 'ext4', '/boot ext4 mounted over the ZFS root')
    expect('rpool/' not in ''.join(l for l in r['fstab'].splitlines() if not l.startswith('#')),
           'fstab lists no dataset')
    q = quiet(disks)
    r2 = run(two)
    expect(not r2.get('failed') and not r2.get('changed'), 'second run changed false (%s)' % (r2.get('differences'),))
    expect(writes(disks) == q, 'second run wrote no sector (%d -> %d)' % (q, writes(disks)))
    r3 = run(two, check=True)
    expect(not r3.get('failed') and not r3.get('changed'), 'check mode after: changed false')

    print('==== scenario exported-pool', flush=True)
    sh('umount', '/tmp/a/boot')
    sh('zpool', 'export', 'rpool')
    sh('mdadm', '--stop', '/dev/md/md-boot')
    expect(not sh('zpool', 'list', '-H', '-o', 'name').strip(), 'rpool exported')
    r4 = run(two, check=True)
    expect(not r4.get('failed') and r4.get('changed') and not r4.get('repartitioned'),
           'check mode: exported pool found on its members, mounting only (%s)' % (r4.get('differences'),))
    expect(not sh('zpool', 'list', '-H', '-o', 'name').strip(), 'check mode imported nothing')
    r5 = run(two)
    expect(not r5.get('failed') and r5.get('changed') and not r5.get('repartitioned'),
           'the exported pool is imported and mounted, nothing wiped (%s)' % (r5.get('differences'),))
    expect(sh('findmnt', '-n', '-o', 'SOURCE', '/tmp/a/srv').strip() == 'rpool/srv', '/srv mounted again')
    print(sh('zpool', 'list', '-H', '-o', 'name,altroot'), sh('zfs', 'list', '-H', '-o', 'name,mountpoint'))
    r6 = run(two)
    expect(not r6.get('failed') and not r6.get('changed'), 'after the import: changed false')

    print('==== scenario teardown', flush=True)
    # / ext4 on md with a dataset below it (/data), then a layout without ZFS: the dataset is unmounted before /
    mixed = dict(two, layout=[{'mount_point': '/', 'fs_type': 'ext4', 'size': 1024, 'raid_level': 1},
                              {'mount_point': '/data', 'fs_type': 'zfs', 'size': 0, 'raid_level': 0, 'zpool_name': 'tank'}])
    rm = run(mixed)
    expect(not rm.get('failed') and rm.get('repartitioned'), 'rpool torn down for / on md and /data on tank (%s)'
           % rm.get('msg'))
    expect('tank\n' == sh('zpool', 'list', '-H', '-o', 'name'), 'only tank imported')
    expect(sh('zpool', 'status', '-P', 'tank').count('/dev/vd') == 2 and 'mirror' not in sh('zpool', 'status', 'tank'),
           'tank stripes vda3 and vdb3 (raidLevel 0)')
    expect(sh('findmnt', '-n', '-o', 'SOURCE', '/tmp/a/data').strip() == 'tank/data', '/data is tank/data under /')
    expect('rpool' not in sh('zpool', 'import', '-d', '/dev'), 'no importable rpool left: labels cleared')
    plain = dict(two, layout=[{'mount_point': '/boot', 'fs_type': 'ext4', 'size': 300},
                              {'mount_point': '/', 'fs_type': 'ext4', 'size': 0, 'raid_level': 1}])
    r7 = run(plain)
    expect(not r7.get('failed') and r7.get('repartitioned'), 'the ZFS layout torn down for another one (%s)' % r7.get('msg'))
    expect(not sh('zpool', 'list', '-H', '-o', 'name').strip(), 'tank destroyed')
    scan = sh('zpool', 'import', '-d', '/dev')
    expect('tank' not in scan and 'rpool' not in scan, 'no importable pool left: labels cleared (%s)' % scan.strip()[:200])

    print('==== scenario foreign-pool', flush=True)
    sh('umount', '-R', '/tmp/a')
    sh('mdadm', '--stop', '/dev/md/md-root')
    sh('mdadm', '--stop', '/dev/md/md-boot')
    sh('wipefs', '-a', '-f', '/dev/vda2', '/dev/vdb2', '/dev/vda3', '/dev/vdb3')
    out = sh('zpool', 'create', '-f', '-m', 'none', 'tank', 'mirror', '/dev/vdb', '/dev/vdc')
    expect(sh('zpool', 'list', '-H', '-o', 'name').strip() == 'tank', 'tank on vdb and vdc created (%s)' % out.strip())
    r8 = run(two)
    msg = r8.get('msg') or ''
    expect(r8.get('failed') and 'ZFS pool tank' in msg and '/dev/vdc' in msg, 'imported pool on vdc refused: %s' % msg)
    expect(sh('zpool', 'list', '-H', '-o', 'name').strip() == 'tank', 'tank still imported')
    sh('zpool', 'export', 'tank')
    # what a fresh rescue boot's coldplug does: udev probes the disks and sees the labels ZFS wrote from the kernel
    sh('udevadm', 'trigger', '--settle', '--action=change', '/dev/vdb1', '/dev/vdc1')
    print(sh('lsblk', '-o', 'NAME,FSTYPE,LABEL,UUID', '/dev/vdb', '/dev/vdc'))
    r9 = run(two)
    msg = r9.get('msg') or ''
    expect(r9.get('failed') and 'tank (not imported)' in msg and '/dev/vdc' in msg,
           'exported pool on vdc refused: %s' % msg)
    expect('tank' in sh('zpool', 'import', '-d', '/dev/vdc1'), 'tank still importable from vdc1')


if __name__ == '__main__':
    try:
        main()
    except Exception as e:
        import traceback
        traceback.print_exc()
        FAILS.append('exception %r' % e)
    print('RESULT %s' % ('PASS' if not FAILS else 'FAIL: ' + '; '.join(FAILS)), flush=True)
'''

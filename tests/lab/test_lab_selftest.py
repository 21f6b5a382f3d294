# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Self-test of the VM lab, with no collection code: a BYOI install done by hand.

A rescue VM (OVMF, one blank disk) downloads the lab's BYOI customer image from the lab's HTTP
server, writes it with ``qemu-img convert``, moves the backup GPT to the end of the disk
(``sgdisk -e``), adds a ``config-2`` vfat partition holding an OpenStack config drive written here
(mkfs.vfat + mtools), creates a UEFI boot entry and powers off. The disk then boots alone with the
same NVRAM, and SSH (with the key given in the config drive) proves that cloud-init read the
config drive: hostname, SSH key and user-data ``runcmd``.

Run: ``python -m pytest tests/lab -m vm -s`` (root, qemu-system-x86, ovmf, mmdebstrap; the images are
built or taken from the lab cache). About 5 min under TCG once the images are cached.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid

import pytest

pytestmark = [pytest.mark.vm, pytest.mark.slow]

HOSTNAME = 'byoi-selftest'


@pytest.fixture(scope='module')
def lab(lab_host):
    from byollab import images
    b = images.Builder()
    t0 = time.monotonic()
    b.rescue()
    b.byoi()
    print('images ready in %.1f s' % (time.monotonic() - t0))
    return b


def test_byoi_by_hand_config_drive_hostname(lab, tmp_path):
    from byollab import httpserve, vm as vmlib

    byoi = lab.byoi()
    www = tmp_path / 'www'
    www.mkdir()
    os.link(byoi['qcow2'], str(www / 'byoi.qcow2'))
    with open(lab.sshkey()['public']) as f:
        pubkey = f.read().strip()
    meta = {'uuid': str(uuid.uuid4()), 'hostname': HOSTNAME, 'name': HOSTNAME,
            'public_keys': {'lab': pubkey}, 'meta': {'purpose': 'lab self-test'}}
    user_data = '#cloud-config\nruncmd:\n  - [sh, -c, "echo runcmd-ran > /root/runcmd.txt"]\n'

    name = 'selftest-%d' % os.getpid()
    times = {}
    with httpserve.ImageServer(str(www)) as srv, vmlib.RescueVM(name, disks=1, disk_size='3G', builder=lab) as vm:
        t0 = time.monotonic()
        vm.start()
        vm.wait_ssh(timeout=600)
        times['rescue_ssh'] = time.monotonic() - t0
        try:
            # what a rescue system sees: one blank disk vda, its own root elsewhere
            assert vm.ssh('cat', '/sys/block/vda/serial').strip() == 'target0'
            assert vm.ssh('lsblk', '-n', '-o', 'NAME', '/dev/vda').split() == ['vda']

            t = time.monotonic()
            url = 'http://10.0.2.2:%d/byoi.qcow2' % srv.port
            vm.ssh('curl', '-fsS', '-o', '/tmp/byoi.qcow2', url, timeout=600)
            vm.ssh('qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', '-t', 'none', '/tmp/byoi.qcow2', '/dev/vda',
                   timeout=900)
            vm.ssh('rm', '/tmp/byoi.qcow2')
            times['download_write'] = time.monotonic() - t
            vm.ssh('sgdisk', '-e', '/dev/vda')
            vm.ssh('sgdisk', '--new=0:-64M:0', '--typecode=0:0700', '--change-name=0:config-2', '/dev/vda')
            vm.ssh('partprobe', '/dev/vda')
            vm.ssh('udevadm', 'settle')
            parts = vm.ssh('lsblk', '-n', '-r', '-o', 'NAME', '/dev/vda').split()
            assert parts == ['vda', 'vda1', 'vda2', 'vda3'], parts
            vm.ssh('mkfs.vfat', '-n', 'config-2', '/dev/vda3')
            vm.ssh_run(['sh', '-c', 'cat > /tmp/meta_data.json'], data=json.dumps(meta), check=True)
            vm.ssh_run(['sh', '-c', 'cat > /tmp/user_data'], data=user_data, check=True)
            env = ['env', 'MTOOLS_SKIP_CHECK=1']
            vm.ssh(*(env + ['mmd', '-i', '/dev/vda3', '::/openstack', '::/openstack/latest']))
            vm.ssh(*(env + ['mcopy', '-i', '/dev/vda3', '/tmp/meta_data.json', '::/openstack/latest/meta_data.json']))
            vm.ssh(*(env + ['mcopy', '-i', '/dev/vda3', '/tmp/user_data', '::/openstack/latest/user_data']))
            assert 'config-2' in vm.ssh('blkid', '-o', 'value', '-s', 'LABEL', '/dev/vda3')
            out = vm.ssh('efibootmgr', '--create', '--disk', '/dev/vda', '--part', '1', '--label', 'byoi-selftest',
                         '--loader', '\\EFI\\debian\\grubx64.efi')
            assert 'byoi-selftest' in out
            vm.ssh('sync')
            rescue_log = vm.serial_log()

            t = time.monotonic()
            vm.poweroff(timeout=120)
            vm.boot_installed()
            vm.wait_ssh(timeout=900)
            times['installed_ssh'] = time.monotonic() - t
            status = vm.wait_cloud_init(timeout=900)
            times['cloud_init_done'] = time.monotonic() - t

            assert vm.ssh('hostname').strip() == HOSTNAME
            assert vm.ssh('cat', '/root/runcmd.txt').strip() == 'runcmd-ran'
            assert pubkey in vm.ssh('cat', '/root/.ssh/authorized_keys')
            ds = json.loads(vm.ssh('cat', '/run/cloud-init/instance-data.json'))
            assert ds['v1']['cloud_name'] == 'openstack' or 'ConfigDrive' in ds['ds'].get('_doc', '') \
                or 'configdrive' in json.dumps(ds['v1']).lower(), ds['v1']
            assert 'DataSourceConfigDrive' in vm.ssh('cat', '/run/cloud-init/status.json')
            # booted from the disk: no rescue kernel command line, root on vda2
            assert 'root=LABEL=rescue' not in vm.ssh('cat', '/proc/cmdline')
            assert vm.ssh('findmnt', '-n', '-o', 'SOURCE', '/').strip() == '/dev/vda2'
            installed_log = vm.serial_log()
            assert 'BdsDxe: starting Boot' in installed_log and 'byoi-selftest' in installed_log
        finally:
            logs = os.path.join(os.environ.get('BYOL_LAB_LOGS', str(tmp_path)), name)
            os.makedirs(logs, exist_ok=True)
            for mode in ('rescue', 'installed'):
                src = os.path.join(vm.dir, 'serial-%s.log' % mode)
                if os.path.exists(src):
                    shutil.copy(src, logs)
            print('serial logs in %s' % logs)
            print('timings: %s' % ', '.join('%s %.0f s' % kv for kv in times.items()))
    assert rescue_log
    print(status)


BYOL_SCRIPT = r'''
set -eux
export MTOOLS_SKIP_CHECK=1
sgdisk --zap-all /dev/vda
sgdisk -n1:0:+200M -t1:EF00 -c1:esp -n2:0:-64M -t2:8300 -c2:root -n3:0:0 -t3:0700 -c3:config-2 /dev/vda
partprobe /dev/vda; udevadm settle
mkfs.vfat -F 32 /dev/vda1; mkfs.ext4 -q -F /dev/vda2; mkfs.vfat -n config-2 /dev/vda3
mmd -i /dev/vda3 ::/openstack ::/openstack/latest
mcopy -i /dev/vda3 /tmp/meta_data.json ::/openstack/latest/meta_data.json
T=/tmp/target; I=/tmp/image; mkdir -p $T $I
mount /dev/vda2 $T
qemu-nbd --read-only --format=qcow2 --connect=/dev/nbd0 /tmp/byol.qcow2
partprobe /dev/nbd0; udevadm settle
test "$(lsblk -n -r -o NAME /dev/nbd0 | wc -l)" = 2
mount -o ro /dev/nbd0p1 $I
tar -C $I --xattrs --acls -cf - . | tar -C $T --xattrs --acls -xpf -
umount $I; qemu-nbd --disconnect /dev/nbd0
rm /tmp/byol.qcow2
mkdir -p $T/boot/efi; mount /dev/vda1 $T/boot/efi
printf 'UUID=%s / ext4 errors=remount-ro 0 1\nUUID=%s /boot/efi vfat umask=0077 0 2\n' \
    "$(blkid -o value -s UUID /dev/vda2)" "$(blkid -o value -s UUID /dev/vda1)" > $T/etc/fstab
for d in dev proc sys run; do mount --bind /$d $T/$d; done
mount -t efivarfs efivarfs $T/sys/firmware/efi/efivars
test -x $T/root/.ovh/make_image_bootable.sh
chroot $T /root/.ovh/make_image_bootable.sh
umount $T/sys/firmware/efi/efivars; for d in run sys proc dev; do umount $T/$d; done
umount $T/boot/efi; umount $T
efibootmgr --create --disk /dev/vda --part 1 --label byol-selftest --loader '\EFI\debian\grubx64.efi'
sync
'''


def test_byol_hook_by_hand(lab, tmp_path):
    """BYOL by hand on one disk (ESP + ext4): copy the image's tree, run its hook in a chroot, boot it."""
    from byollab import httpserve, vm as vmlib

    byol = lab.byol()
    www = tmp_path / 'www'
    www.mkdir()
    os.link(byol['qcow2'], str(www / 'byol.qcow2'))
    with open(lab.sshkey()['public']) as f:
        pubkey = f.read().strip()
    meta = {'uuid': str(uuid.uuid4()), 'hostname': 'byol-selftest', 'name': 'byol-selftest', 'public_keys': {'lab': pubkey}}
    name = 'byolhook-%d' % os.getpid()
    times = {}
    with httpserve.ImageServer(str(www)) as srv, vmlib.RescueVM(name, disks=1, disk_size='4G', builder=lab) as vm:
        try:
            t0 = time.monotonic()
            vm.start()
            vm.wait_ssh(timeout=600)
            times['rescue_ssh'] = time.monotonic() - t0
            vm.ssh('curl', '-fsS', '-o', '/tmp/byol.qcow2', 'http://10.0.2.2:%d/byol.qcow2' % srv.port, timeout=600)
            vm.ssh_run(['sh', '-c', 'cat > /tmp/meta_data.json'], data=json.dumps(meta), check=True)
            t = time.monotonic()
            out = vm.ssh_run(['sh', '-c', BYOL_SCRIPT], timeout=1800)
            times['install_and_hook'] = time.monotonic() - t
            assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
            assert re.search(r'make_image_bootable: \[\d+s\] done', out.stdout)
            t = time.monotonic()
            vm.poweroff(timeout=120)
            vm.boot_installed()
            vm.wait_ssh(timeout=900)
            vm.wait_cloud_init(timeout=900)
            times['installed_cloud_init'] = time.monotonic() - t
            assert vm.ssh('hostname').strip() == 'byol-selftest'
            assert vm.ssh('findmnt', '-n', '-o', 'SOURCE', '/').strip() == '/dev/vda2'
            assert vm.ssh('findmnt', '-n', '-o', 'SOURCE', '/boot/efi').strip() == '/dev/vda1'
        finally:
            logs = os.path.join(os.environ.get('BYOL_LAB_LOGS', str(tmp_path)), name)
            os.makedirs(logs, exist_ok=True)
            for mode in ('rescue', 'installed'):
                src = os.path.join(vm.dir, 'serial-%s.log' % mode)
                if os.path.exists(src):
                    shutil.copy(src, logs)
            print('serial logs in %s' % logs)
            print('timings: %s' % ', '.join('%s %.0f s' % kv for kv in times.items()))

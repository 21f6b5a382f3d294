# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""byol_bootorder in the VM lab: a BYOI disk written by hand, the boot entry made by the module.

UEFI: a rescue VM (OVMF, one blank disk) writes the lab's BYOI image, the module (run by the real
``ansible`` over SSH) creates the NVRAM entry (check mode, then twice: the second run changes
nothing); the disk then boots alone with the same NVRAM and the firmware log shows it starting
the entry the module made and GRUB booting the installed kernel to a login prompt (serial console:
without a config drive the image has no SSH host keys). Legacy: the same with SeaBIOS and the MBR
image; the module reports GRUB's boot code and the disk boots.

Run: ``python -m pytest tests/lab/test_bootorder_lab.py -m vm -s`` (root, the lab's tools; images
from the lab cache, built when missing).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.vm, pytest.mark.slow]

_HEAD = re.compile(r'^\S+ \| (SUCCESS|CHANGED|FAILED!|UNREACHABLE!) => ', re.M)


@pytest.fixture(scope='module')
def lab(lab_host):
    from byollab import images
    b = images.Builder()
    b.rescue()
    b.byoi()
    return b


def ansible(vm, module, args, check=False, diff=False):
    """Run ``baremetal.byol.<module>`` on the VM with the real ansible; returns (rc, result, output)."""
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.environ['BYOL_COLLECTIONS_PATH'],
               ANSIBLE_STDOUT_CALLBACK='ansible.builtin.minimal', ANSIBLE_HOST_KEY_CHECKING='False',
               ANSIBLE_NOCOLOR='1')
    cmd = [os.path.join(os.path.dirname(sys.executable), 'ansible'), vm.name, '-i', os.path.join(vm.dir, 'inventory.yml'),
           '-m', 'baremetal.byol.%s' % module, '-a', json.dumps(args)]
    if check:
        cmd.append('--check')
    if diff:
        cmd.append('--diff')
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, env=env,
                          check=False)
    heads = list(_HEAD.finditer(proc.stdout))
    result = {}
    if heads:
        result = json.JSONDecoder().raw_decode(proc.stdout[heads[-1].end():])[0]
        result['changed'] = heads[-1].group(1) == 'CHANGED' or result.get('changed', False)
        result['failed'] = heads[-1].group(1) == 'FAILED!'
    return proc.returncode, result, proc.stdout


def wait_serial(vm, pattern, timeout=900):
    """Wait until the VM's serial log matches ``pattern`` (the BYOI image without a config drive has no
    SSH host keys, so the console is the proof of the boot)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        m = re.search(pattern, vm.serial_log())
        if m:
            return m
        if not vm.running:
            break
        time.sleep(5)
    raise AssertionError('%r not on the serial console; last lines:\n%s' % (pattern, vm.serial_tail()))


def write_image(vm, srv_port, name):
    vm.ssh('curl', '-fsS', '-o', '/tmp/img.qcow2', 'http://10.0.2.2:%d/%s' % (srv_port, name), timeout=600)
    vm.ssh('qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', '-t', 'none', '/tmp/img.qcow2', '/dev/vda', timeout=900)
    vm.ssh('rm', '/tmp/img.qcow2')
    vm.ssh('partprobe', '/dev/vda')
    vm.ssh('udevadm', 'settle')


def test_uefi_entry_made_by_the_module_boots(lab, tmp_path):
    from byollab import httpserve, vm as vmlib

    byoi = lab.byoi()
    www = tmp_path / 'www'
    www.mkdir()
    os.link(byoi['qcow2'], str(www / 'byoi.qcow2'))
    name = 'bootorder-%d' % os.getpid()
    with httpserve.ImageServer(str(www)) as srv, vmlib.RescueVM(name, disks=1, disk_size='3G', builder=lab) as vm:
        vm.start()
        vm.wait_ssh(timeout=600)
        write_image(vm, srv.port, 'byoi.qcow2')
        vm.ssh('sgdisk', '-e', '/dev/vda')
        args = {'disks': ['/dev/vda'], 'loader': '\\efi\\debian\\grubx64.efi', 'label': 'byol-lab'}
        rc, res, out = ansible(vm, 'byol_bootorder', args, check=True, diff=True)
        assert rc == 0 and res['changed'] and res['created'] == ['new:/dev/vda'], out
        assert 'byol-lab' not in vm.ssh('efibootmgr')  # check mode wrote nothing
        rc, res, out = ansible(vm, 'byol_bootorder', args, diff=True)
        assert rc == 0 and res['changed'], out
        [num] = res['created']
        assert res['boot_order_after'][0] == num
        assert res['loaders'][0]['exists'] and res['loaders'][0]['pe']
        rc, res, out = ansible(vm, 'byol_bootorder', args)
        assert rc == 0 and not res['changed'] and res['created'] == [] and res['deleted'] == [], out
        assert vm.ssh('efibootmgr').count('byol-lab') == 1
        vm.ssh('sync')
        vm.poweroff(timeout=120)
        vm.boot_installed()
        # the firmware starts the entry the module made, GRUB boots the installed kernel to a login prompt
        wait_serial(vm, r'BdsDxe: starting Boot%s "byol-lab" from HD\(1,GPT,' % num, timeout=300)
        wait_serial(vm, r'Booting `Debian GNU/Linux', timeout=300)
        wait_serial(vm, r'login: ', timeout=900)


def test_legacy_bios_reports_grub_and_boots(lab, tmp_path):
    from byollab import httpserve, vm as vmlib

    byoi = lab.byoi()
    try:
        mbr = byoi['mbr_qcow2']
    except KeyError:
        pytest.skip('the lab has no MBR BYOI image')
    www = tmp_path / 'www'
    www.mkdir()
    os.link(mbr, str(www / 'byoi-mbr.qcow2'))
    name = 'bootorder-bios-%d' % os.getpid()
    with httpserve.ImageServer(str(www)) as srv, vmlib.RescueVM(name, disks=1, disk_size='3G', firmware='bios',
                                                                builder=lab) as vm:
        t0 = time.monotonic()
        vm.start()
        vm.wait_ssh(timeout=900)
        write_image(vm, srv.port, 'byoi-mbr.qcow2')
        rc, res, out = ansible(vm, 'byol_bootorder', {'disks': ['/dev/vda'], 'loader': '\\efi\\debian\\grubx64.efi'})
        assert rc == 0 and not res['changed'], out
        assert res['boot_mode'] == 'legacy'
        assert res['legacy'][0]['loader'] == 'grub' and res['legacy'][0]['bootable'], res
        vm.ssh('sync')
        vm.poweroff(timeout=120)
        vm.boot_installed()
        wait_serial(vm, r'Booting `Debian GNU/Linux', timeout=300)
        wait_serial(vm, r'login: ', timeout=900)
        print('legacy round trip %.0f s' % (time.monotonic() - t0))

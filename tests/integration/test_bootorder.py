# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""byol_bootorder on loop devices: the loader check on a real vfat ESP (mtools), the legacy checks.

This machine has no UEFI firmware (no /sys/firmware/efi), so NVRAM writes are not tested here:
the real efibootmgr command lines were run against OVMF to produce the unit-test fixtures
(tests/unit/plugins/module_utils/fixtures/efibootmgr/capture-ovmf.sh), and the VM lab boots
the entry the module makes.
"""

from __future__ import annotations

import os
import subprocess

import pytest

GRUB_I386 = '/usr/lib/grub/i386-pc'
MTOOLS_ENV = dict(os.environ, MTOOLS_SKIP_CHECK='1')

pytestmark = pytest.mark.skipif(os.path.isdir('/sys/firmware/efi'),
                                reason='these tests expect a machine without UEFI (NVRAM must not be touched)')


def sh(*args, **kw):
    return subprocess.run(list(args), check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, **kw)


def part(dev, n):
    node = '%sp%d' % (dev, n)
    sh('udevadm', 'settle', '--timeout=30')
    for dummy in range(50):
        if os.path.exists(node):
            return node
        subprocess.run(['partx', '--update', dev], check=False)
        subprocess.run(['udevadm', 'settle'], check=False)
    raise AssertionError('%s did not appear' % node)


@pytest.fixture(scope='module')
def efi_binary(tmp_path_factory):
    """A real GRUB EFI binary (PE/COFF), built with grub-mkimage."""
    out = str(tmp_path_factory.mktemp('efi') / 'grubx64.efi')
    sh('grub-mkimage', '-O', 'x86_64-efi', '-o', out, '-p', '/EFI/debian', 'normal')
    return out


def make_esp_disk(loopdev, efi_binary, files=('EFI/debian/grubx64.efi',), extra_text=None):
    dev = loopdev(size_mib=96)
    sh('sgdisk', '-n', '1:2048:+40M', '-t', '1:ef00', '-n', '2:0:0', '-t', '2:8300', dev)
    subprocess.run(['partx', '--update', dev], check=False)
    esp = part(dev, 1)
    sh('mkfs.vfat', '-F', '32', '-n', 'ESP', esp)
    for f in files:
        d = os.path.dirname(f)
        cur = ''
        for comp in d.split('/'):
            cur = cur + '/' + comp
            subprocess.run(['mmd', '-i', esp, '::' + cur], env=MTOOLS_ENV, check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        src = efi_binary
        if extra_text:
            src = extra_text
        sh('mcopy', '-i', esp, src, '::/' + f, env=MTOOLS_ENV)
    return dev, esp


def test_loader_found_any_case_policy_none(loopdev, efi_binary, ansible_module):
    dev, esp = make_esp_disk(loopdev, efi_binary)
    args = {'disks': [dev], 'loader': '\\efi\\DEBIAN\\GRUBX64.EFI', 'boot_order_policy': 'none', 'boot_mode': 'uefi'}
    for check in (True, False, False):
        r = ansible_module('byol_bootorder', args, check=check, diff=True)
        assert r.rc == 0, r.output
        assert not r.changed
        res = r.result
        assert res['boot_mode'] == 'uefi'
        [chk] = res['loaders']
        assert chk['esp'] == esp and chk['exists'] and chk['pe'] is True and chk['disk'] == dev
        assert chk['size'] == os.path.getsize(efi_binary)
        assert chk['loader'] == '\\efi\\DEBIAN\\GRUBX64.EFI'
        assert 'NVRAM left untouched' in res['msg']


def test_two_disks_and_esp_partitions(loopdev, efi_binary, ansible_module):
    d1, e1 = make_esp_disk(loopdev, efi_binary)
    d2, e2 = make_esp_disk(loopdev, efi_binary)
    r = ansible_module('byol_bootorder', {'disks': [d1, d2], 'loader': '/EFI/debian/grubx64.efi', 'boot_order_policy': 'none',
                                          'boot_mode': 'uefi', 'esp_partitions': [e1, e2]})
    assert r.rc == 0, r.output
    assert [c['esp'] for c in r.result['loaders']] == [e1, e2]
    # an ESP list that names another disk's partition: nothing found on d2
    r = ansible_module('byol_bootorder', {'disks': [d1, d2], 'boot_order_policy': 'none', 'boot_mode': 'uefi',
                                          'esp_partitions': [e1]})
    assert r.failed and 'No EFI system partition found on %s' % d2 in r.result['msg'], r.output


def test_loader_missing_or_not_pe(loopdev, efi_binary, ansible_module, tmp_path):
    dev, esp = make_esp_disk(loopdev, efi_binary, files=('EFI/BOOT/BOOTX64.EFI',))
    r = ansible_module('byol_bootorder', {'disks': [dev], 'loader': '\\EFI\\debian\\grubx64.efi',
                                          'boot_order_policy': 'none', 'boot_mode': 'uefi'})
    assert r.failed, r.output
    assert 'The loader \\EFI\\debian\\grubx64.efi (efiBootloaderPath) is not on the EFI system partition' in r.result['msg']
    assert '%s: missing' % esp in r.result['msg']
    text = tmp_path / 'notpe.efi'
    text.write_text('#!/bin/sh\necho not a loader\n')
    dev, esp = make_esp_disk(loopdev, efi_binary, extra_text=str(text))
    r = ansible_module('byol_bootorder', {'disks': [dev], 'boot_order_policy': 'none', 'boot_mode': 'uefi'})
    assert r.failed and '%s: not a PE/EFI file' % esp in r.result['msg'], r.output


def test_no_esp(loopdev, ansible_module):
    dev = loopdev(size_mib=32)
    sh('sgdisk', '-n', '1:0:0', '-t', '1:8300', dev)
    r = ansible_module('byol_bootorder', {'disks': [dev], 'boot_order_policy': 'none', 'boot_mode': 'uefi'})
    assert r.failed and 'No EFI system partition found on %s' % dev in r.result['msg'], r.output


def test_uefi_nvram_needs_uefi_rescue(loopdev, efi_binary, ansible_module):
    dev, dummy = make_esp_disk(loopdev, efi_binary)
    r = ansible_module('byol_bootorder', {'disks': [dev], 'boot_mode': 'uefi'})
    assert r.failed, r.output
    assert 'was not booted with UEFI' in r.result['msg'] and 'boot_order_policy=none' in r.result['msg']
    assert r.result['loaders'][0]['exists']  # the loader was verified before


def write_at(dev, offset, data):
    fd = os.open(dev, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def grub_boot_img():
    with open(os.path.join(GRUB_I386, 'boot.img'), 'rb') as f:
        return f.read()


@pytest.mark.skipif(not os.path.exists(os.path.join(GRUB_I386, 'boot.img')), reason='grub-pc-bin is not installed')
def test_legacy_mbr(loopdev, ansible_module):
    dev = loopdev(size_mib=32)
    sh('sfdisk', dev, input='label: dos\n,,83,*\n')
    # a partition table but no boot code: refused
    r = ansible_module('byol_bootorder', {'disks': [dev], 'boot_mode': 'legacy'})
    assert r.failed, r.output
    assert 'No disk has legacy boot code' in r.result['msg']
    assert r.result['legacy'][0]['boot_code'] is False
    # GRUB's real boot.img in the first 440 bytes (the partition table stays)
    write_at(dev, 0, grub_boot_img()[:440])
    for check in (True, False, False):
        r = ansible_module('byol_bootorder', {'disks': [dev], 'boot_mode': 'legacy', 'loader': '\\EFI\\x.efi'}, check=check)
        assert r.rc == 0, r.output
        assert not r.changed
        [rep] = r.result['legacy']
        assert rep == {'disk': dev, 'boot_code': True, 'loader': 'grub', 'signature_55aa': True,
                       'bios_boot_partition': None, 'bios_boot_code': None, 'bootable': True}


@pytest.mark.skipif(not os.path.exists(os.path.join(GRUB_I386, 'diskboot.img')), reason='grub-pc-bin is not installed')
def test_legacy_gpt_bios_boot_partition(loopdev, ansible_module):
    good = loopdev(size_mib=32)
    blank = loopdev(size_mib=32)
    for dev in (good, blank):
        sh('sgdisk', '-n', '1:2048:+1M', '-t', '1:ef02', '-n', '2:0:0', '-t', '2:8300', dev)
    write_at(good, 0, grub_boot_img()[:440])
    with open(os.path.join(GRUB_I386, 'diskboot.img'), 'rb') as f:
        write_at(good, 2048 * 512, f.read())  # the first sector of GRUB's core image
    r = ansible_module('byol_bootorder', {'disks': [good, blank], 'boot_mode': 'legacy'})
    assert r.rc == 0, r.output
    rep = dict((x['disk'], x) for x in r.result['legacy'])
    assert rep[good]['bootable'] and rep[good]['bios_boot_code'] is True
    assert rep[good]['bios_boot_partition'] == '%sp1' % good
    assert not rep[blank]['bootable'] and rep[blank]['bios_boot_code'] is False
    assert 'No legacy boot code on %s' % blank in r.output  # shown as a warning
    # boot code in the MBR but an empty BIOS boot partition: GRUB cannot load its core
    write_at(blank, 0, grub_boot_img()[:440])
    r = ansible_module('byol_bootorder', {'disks': [blank], 'boot_mode': 'legacy'})
    assert r.failed and 'GRUB in the BIOS boot partition' in r.result['msg'], r.output


def test_validation(ansible_module, tmp_path):
    r = ansible_module('byol_bootorder', {'disks': [str(tmp_path / 'nodisk')], 'boot_mode': 'legacy'})
    assert r.failed and 'does not exist' in r.result['msg']
    r = ansible_module('byol_bootorder', {'disks': ['/dev/null'], 'boot_mode': 'uefi', 'loader': '/EFI/../x.efi',
                                          'boot_order_policy': 'none'})
    assert r.failed and 'is not a file path on the ESP' in r.result['msg'], r.output

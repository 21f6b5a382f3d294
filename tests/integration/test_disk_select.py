# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Choosing disks with the real lsblk and ansible, on loop devices: root device hints, a read-only device,
and byol_wipe_disks on a loop device carrying an old ESP, config drive, LVM PV and boot code.

Other engineers' loop devices come and go on this machine: every hint names our own devices too
(``name: <or> ...``), and nothing is asserted about devices this test did not create.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils._blockdev import wait_for_paths, write_sectors

MIB = 1024 * 1024


def names_hint(*devs):
    return ' '.join(['<or> %s' % d for d in devs])


def test_size_hint_chooses_among_loop_devices(loopdev, ansible_module):
    small, middle, big = loopdev(size_mib=97), loopdev(size_mib=101), loopdev(size_mib=105)
    # 101 MiB = 0.0986 GiB: the only one of ours in ( 0.097 0.1 )
    hints = {'size': '<range-in> ( 0.097 0.1 )', 'name': names_hint(small, middle, big)}
    r = ansible_module('byol_preflight', {'installer': 'byol', 'include_loop': True, 'root_device_hints': hints,
                                          'check_in_use': False})
    assert r.rc == 0, r.output
    assert r.result['targets'] == [middle]
    mine = dict((d['path'], d) for d in r.result['devices'] if d['path'] in (small, middle, big))
    assert mine[middle]['hints_match'] and mine[middle]['candidate']
    assert not mine[small]['hints_match'] and mine[small]['hints_mismatch'] == ['size is 0.0947 GiB']
    assert mine[big]['size'] == 105 * MIB and not mine[big]['hints_match']
    # "size > x" with the names: both bigger ones, BYOL takes every match, BYOI the first in group order (smaller first)
    hints = {'size': '> 0.095', 'name': names_hint(small, middle, big)}
    r = ansible_module('byol_preflight', {'installer': 'byol', 'include_loop': True, 'root_device_hints': hints,
                                          'check_in_use': False})
    assert r.rc == 0, r.output
    assert r.result['targets'] == [middle, big]
    r = ansible_module('byol_preflight', {'installer': 'byoi', 'include_loop': True, 'root_device_hints': hints,
                                          'check_in_use': False, 'disk_group_id': 7})
    assert r.rc == 0, r.output
    assert r.result['targets'] == [middle]
    assert 'diskGroupId 7 is ignored: the root device hints choose the disks' in r.output


def test_name_hint_and_loop_devices_only_when_asked(loopdev, ansible_module):
    dev = loopdev(size_mib=99)
    r = ansible_module('byol_preflight', {'installer': 'byoi', 'include_loop': True, 'root_device_hints': {'name': dev},
                                          'check_in_use': False})
    assert r.rc == 0, r.output
    assert r.result['targets'] == [dev] and r.result['hints'] == {'name': dev}
    r = ansible_module('byol_preflight', {'installer': 'byoi', 'root_device_hints': {'name': dev}})
    assert r.failed
    assert r.result['msg'].startswith('No disk matches the root device hints (name: %s); %s matches but is never a target: '
                                      'loop device (only with include_loop)' % (dev, dev))


def test_read_only_loop_device_is_never_a_target(tmp_path, ansible_module):
    if os.geteuid() != 0:
        pytest.skip('needs root')
    backing = tmp_path / 'ro.img'
    with open(str(backing), 'wb') as f:
        f.truncate(103 * MIB)
    dev = subprocess.run(['losetup', '--show', '--find', '--read-only', str(backing)], check=True,
                         stdout=subprocess.PIPE, universal_newlines=True).stdout.strip()
    try:
        assert open('/sys/block/%s/ro' % os.path.basename(dev)).read().strip() == '1'  # the kernel has it read-only
        r = ansible_module('byol_preflight', {'installer': 'byoi', 'target_disks': [dev], 'check_in_use': False})
        assert r.failed
        assert r.result['msg'] == 'target disk %s is never an installation target: read-only device' % dev
        r = ansible_module('byol_preflight', {'installer': 'byoi', 'include_loop': True, 'check_in_use': False,
                                              'root_device_hints': {'name': dev}})
        assert r.failed
        assert ('%s matches but is never a target: read-only device' % dev) in r.result['msg']
        r = ansible_module('byol_wipe_disks', {'disks': [dev], 'include_loop': True})
        assert r.failed and r.result['msg'] == 'disk %s is never wiped: read-only device' % dev
    finally:
        subprocess.run(['losetup', '--detach', dev], check=False)


def _stale_disk(loopdev, tmp_path):
    """An old installation on a loop device: GRUB-like boot code, GPT with an ESP, a config drive and an LVM PV of
    VG byoltest_<n>. The boot code is written before the device is attached: this host's kernel reads no GPT itself
    (partx adds the partitions), so a write to sector 0 of the attached device would make it drop them."""
    backing = str(tmp_path / 'stale.img')
    with open(backing, 'wb') as f:
        f.truncate(96 * MIB)
        f.seek(0)
        f.write(b'\xeb\x63\x90GRUB boot code of an old installation')
    dev = loopdev(backing=backing)
    subprocess.run(['sgdisk', '-n', '1:0:+16M', '-t', '1:ef00', '-n', '2:0:+16M', '-t', '2:8300',
                    '-n', '3:0:0', '-t', '3:8e00', dev], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(['partx', '--update', dev], check=False)
    subprocess.run(['udevadm', 'settle'], check=False)
    wait_for_paths([dev + 'p1', dev + 'p2', dev + 'p3'])
    subprocess.run(['mkfs.vfat', '-F', '32', '-n', 'EFI_SYSPART', dev + 'p1'], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    subprocess.run(['mkfs.vfat', '-n', 'config-2', dev + 'p2'], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    vg = 'byoltest_%s' % os.path.basename(dev)
    subprocess.run(['pvcreate', '-ff', '-y', dev + 'p3'], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(['vgcreate', '-y', vg, dev + 'p3'], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(['udevadm', 'trigger', '--action=change', dev + 'p1', dev + 'p2', dev + 'p3'], check=False)
    subprocess.run(['udevadm', 'settle'], check=False)
    return dev, vg


def _probe(backing):
    """What blkid finds in the backing file: the disk itself, then each partition at its offset (1, 17, 33 MiB)."""
    found = []
    for offset in (None, 1 * MIB, 17 * MIB, 33 * MIB):
        args = ['blkid', '--probe', '--output', 'export'] + (['--offset', str(offset)] if offset else []) + [backing]
        out = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True,
                             check=False).stdout
        found.append(sorted(line for line in out.splitlines() if line.startswith(('TYPE=', 'PTTYPE=', 'LABEL='))))
    return found


@pytest.mark.skipif(not os.path.exists('/sbin/pvcreate') and not os.path.exists('/usr/sbin/pvcreate'), reason='no lvm2')
def test_wipe_disks_on_a_stale_loop_device(loopdev, ansible_module, tmp_path):
    vg = None
    try:
        dev, vg = _stale_disk(loopdev, tmp_path)
        backing = str(tmp_path / 'stale.img')
        assert _probe(backing) == [['PTTYPE=gpt'], ['LABEL=EFI_SYSPART', 'TYPE=vfat'], ['LABEL=config-2', 'TYPE=vfat'],
                                   ['TYPE=LVM2_member']]
        # check mode: reports what it carries, writes nothing
        before = write_sectors(dev)
        r = ansible_module('byol_wipe_disks', {'disks': [dev], 'include_loop': True}, check=True)
        assert r.rc == 0 and r.changed, r.output
        carried = r.result['wiped'][0]['signatures']
        assert carried == ['EFI system partition %sp1' % dev, 'config drive %sp2 (label config-2)' % dev,
                           'LVM PV on %sp3 (VG %s)' % (dev, vg), 'boot code in the first sector of %s' % dev]
        assert write_sectors(dev) == before
        # without include_loop a loop device is never wiped
        r = ansible_module('byol_wipe_disks', {'disks': [dev]})
        assert r.failed and r.result['msg'] == 'disk %s is never wiped: loop device (only with include_loop)' % dev
        r = ansible_module('byol_wipe_disks', {'disks': [dev], 'include_loop': True})
        assert r.rc == 0 and r.changed, r.output
        with open(dev, 'rb') as f:
            assert f.read(440) == b'\0' * 440
        assert _probe(backing) == [[], [], [], []]
        vgs = subprocess.run(['vgs', '--noheadings', '-o', 'vg_name'], stdout=subprocess.PIPE, universal_newlines=True,
                             stderr=subprocess.DEVNULL, check=False).stdout.split()
        assert vg not in vgs
        # second run: nothing left, nothing written
        before = write_sectors(dev)
        r = ansible_module('byol_wipe_disks', {'disks': [dev], 'include_loop': True})
        assert r.rc == 0 and not r.changed and r.result['wiped'] == [], r.output
        assert write_sectors(dev) == before
    finally:
        if vg:
            subprocess.run(['vgremove', '-ff', '-y', vg], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


PAYLOAD_PLAY = '''
- name: Pre-flight of a reinstall requested by an OVHcloud payload, with root device hints beside it
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Pre-flight
      ansible.builtin.include_role:
        name: baremetal.byol.byoi
      tags: [always]
'''


def test_hints_beside_an_ovh_payload_win_over_its_disk_group(loopdev, tmp_path):
    first, second = loopdev(size_mib=98), loopdev(size_mib=100)
    extra = {
        'byol_payload': {'operatingSystem': 'byoi_64',
                         'customizations': {'imageURL': 'http://127.0.0.1:9/debian.raw', 'imageType': 'raw',
                                            'efiBootloaderPath': '\\efi\\debian\\grubx64.efi'},
                         'storage': [{'diskGroupId': 2}]},
        'byol_root_device_hints': {'name': names_hint(first, second), 'size': '> 0.0965'},
        'byol_include_loop': True,
        'byol_boot_mode': 'legacy',
    }
    with open(str(tmp_path / 'play.yml'), 'w') as f:
        f.write(PAYLOAD_PLAY)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.environ['BYOL_COLLECTIONS_PATH'], ANSIBLE_NOCOLOR='1',
               ANSIBLE_LOCALHOST_WARNING='False', ANSIBLE_INVENTORY_UNPARSED_WARNING='False')
    with open(str(tmp_path / 'extra.json'), 'w') as f:
        json.dump(extra, f)
    cmd = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', 'localhost,', '-c', 'local',
           '-e', 'ansible_python_interpreter=%s' % sys.executable, '-e', '@' + str(tmp_path / 'extra.json'),
           '--check', '--tags', 'preflight', str(tmp_path / 'play.yml')]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, env=env,
                         cwd=str(tmp_path), check=False).stdout
    assert 'failed=0' in out, out
    # 98 MiB = 0.0957 GiB, 100 MiB = 0.0977 GiB: only the second of ours; the payload's diskGroupId 2 is ignored, and says so
    assert 'diskGroupId 2 is ignored: the root device hints choose the disks' in out
    assert '"target disks: %s (' % second in out
    assert 'matches the hints, TARGET' in out and ('(item=%s)' % second) in out
    line = [x for x in out.splitlines() if '(item=%s)' % first in x]
    assert line, out

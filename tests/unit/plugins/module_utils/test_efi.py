# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""efibootmgr parsing and boot-order planning, with real outputs (see fixtures/efibootmgr/README.md)."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils import _efi as efi
from ansible_collections.baremetal.byol.plugins.module_utils._errors import ValidationError

FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures', 'efibootmgr')
VDA = '8fd16ea9-250a-4664-91ea-494c25692792'
VDB = 'c4065642-5512-40d8-ad48-6a5808532a14'
LOADER = '\\EFI\\debian\\grubx64.efi'


def load(name):
    with open(os.path.join(FIXTURES, name), encoding='utf-8', errors='replace') as f:
        return efi.parse_efibootmgr(f.read())


def by_num(state):
    return dict((e['num'], e) for e in state['entries'])


def target(disk, guid, label='byol', loader=LOADER, number=1):
    return {'disk': disk, 'guid': guid, 'number': number, 'loader': loader, 'label': label}


# ---------------------------------------------------------------- parsing


def test_ovmf_initial_verbose():
    st = load('ovmf-efibootmgr17-01-initial-v.txt')
    assert st['timeout'] == 0 and st['boot_current'] is None and st['boot_next'] is None
    assert st['boot_order'] == ['0000', '0001', '0002', '0003', '0004', '0005', '0006', '0007', '0008']
    e = by_num(st)
    assert e['0000']['label'] == 'UiApp' and e['0000']['file'] is None and e['0000']['network'] is None
    assert e['0001']['path'] == 'PciRoot(0x0)/Pci(0x1,0x0)'  # optional data "N.....YM....R,Y." stripped
    assert e['0003']['network'] == 'pxe4' and e['0003']['label'] == 'UEFI PXEv4 (MAC:525400123456)'
    assert e['0004']['network'] == 'pxe4' and e['0004']['label'] == 'UEFI PXEv4 (MAC:525400123456) 2'
    assert e['0005']['network'] == 'pxe6'
    assert e['0006']['network'] == 'http4' and e['0006']['path'].endswith('/Uri()')
    assert e['0007']['network'] == 'http6'
    assert e['0008']['network'] is None and e['0008']['label'] == 'EFI Internal Shell'
    assert all(x['active'] for x in st['entries'])


def test_ovmf_after_create():
    st = load('ovmf-efibootmgr17-05-after-create-v.txt')
    assert st['boot_order'][:2] == ['000A', '0009']  # efibootmgr --create puts the new entry first
    e = by_num(st)
    assert e['0009']['label'] == 'byol (vda)'
    assert e['0009']['hd'] == {'number': 1, 'scheme': 'GPT', 'guid': VDA, 'start': 0x800, 'size': 0x10000}
    assert e['0009']['file'] == LOADER
    assert e['000A']['hd']['guid'] == VDB


def test_plain_output_has_no_paths():
    st = load('ovmf-efibootmgr17-02-initial.txt')
    e = by_num(st)
    assert e['0003']['path'] is None and e['0003']['network'] == 'pxe4'  # from the label
    assert e['0006']['network'] == 'http4' and e['0007']['network'] == 'http6' and e['0005']['network'] == 'pxe6'
    assert e['0000']['network'] is None and e['0001']['network'] is None


def test_v18_verbose_with_dp_lines():
    st = load('v18-lenovo-thinkpad-e14-verbose.txt')
    assert st['boot_current'] == '0001'
    assert st['boot_order'][:3] == ['0001', '0000', '001D'] and len(st['boot_order']) == 13
    assert len(st['entries']) == 3  # the indented "dp:" lines are not entries
    e = by_num(st)
    assert e['0001']['label'] == 'VoidLinux' and e['0001']['file'] == '\\EFI\\VoidLinux\\grubx64.efi'
    assert e['0001']['hd']['guid'] == 'cd52e45f-ad25-4712-b06a-a6f33373a7af' and e['0001']['hd']['size'] == 0x100000


def test_v18_inactive_and_unicode_garbage():
    st = load('v18-uos-plain.txt')
    e = by_num(st)
    assert not e['0001']['active'] and not e['0005']['active'] and e['0006']['active']
    assert e['0001']['label'] == 'UEFI BootManagerMenuApp' and st['timeout'] == 3
    st = load('v18-uos-unicode.txt')
    e = by_num(st)
    assert e['0002']['path'] == 'PciRoot(0x0)/Pci(0x8,0x0)/Sata(0,65535,0)'
    assert e['0003']['path'] == 'PciRoot(0x0)/Pci(0xd,0x0)/Pci(0x0,0x0)/NVMe(0x1,3A-5A-27-02-30-00-0F-A6)'
    assert e['0000']['path'].endswith('FvFile(462caa21-7614-4503-836e-8ab6f4662331)')
    assert e['0006']['hd']['guid'] == '82f3e1c8-8654-4797-a584-90f373331323'
    assert e['0006']['file'].startswith('\\EFI\\BOOT\\vmlinuz')
    assert not any(x['network'] for x in st['entries'])


def test_supermicro_labels():
    st = load('supermicro-a1sai-plain.txt')
    nets = dict((x['num'], x['network']) for x in st['entries'] if x['network'])
    assert nets == {'0006': 'pxe4', '0007': 'pxe6', '0008': 'pxe4', '0009': 'pxe6',
                    '000A': 'pxe4', '000B': 'pxe6', '000C': 'pxe4', '000D': 'pxe6'}
    assert by_num(st)['0004']['network'] is None  # "Hard Drive"


@pytest.mark.parametrize('name', sorted(n for n in os.listdir(FIXTURES) if n.endswith('.txt')))
def test_every_fixture_parses(name):
    st = load(name)
    assert st['entries'] and st['boot_order']
    nums = set(e['num'] for e in st['entries'])
    assert len(nums) == len(st['entries'])


@pytest.mark.parametrize('label,path,expected', [
    ('NIC in Slot 7 Port 1 Partition 1', 'VenHw(986d1755-b9a0-4f52-9d5a-43a4b6e1a3e4)', 'network'),
    ('Embedded LOM 1 Port 1 : HPE Ethernet 1Gb 4-port 331i Adapter - NIC (PXE IPv4)', 'VenHw(x)', 'pxe4'),
    ('Embedded LOM 1 Port 1 : HPE Ethernet 1Gb 4-port 331i Adapter - NIC (HTTP(S) IPv6)', '', 'http6'),
    ('UEFI P0: HTTP IPv4 Nvidia Network Adapter - 94:6D:AE:00:00:00', None, 'http4'),
    ('whatever', 'PciRoot(0x0)/Pci(0x10,0x0)/Pci(0x0,0x0)/MAC(5CFF35FE04BC,0x1)/IPv4(0.0.0.0,0x0,DHCP,0.0.0.0,0.0.0.0,0.0.0.0)/Uri()',
     'http4'),
    ('whatever', 'MAC(B83FD2909582,0x1)/IPv6([::],0x0,Static,[::],[::],0)', 'pxe6'),
    ('debian', 'HD(1,GPT,x,0x800,0x100000)/File(\\EFI\\debian\\shimx64.efi)', None),
    ('Windows Boot Manager', 'HD(1,GPT,x,0x800,0x100000)/File(\\EFI\\Microsoft\\Boot\\bootmgfw.efi)WINDOWS.x', None),
    ('UEFI QEMU HARDDISK', 'PciRoot(0x0)/Pci(0x1f,0x2)/Sata(0,65535,0)', None),
])
def test_classify_network(label, path, expected):
    assert efi.classify_network(label, efi.clean_device_path(path or '')) == expected


def test_v17_windows_entry_with_optional_data():
    st = efi.parse_efibootmgr('BootOrder: 0000\nBoot0000* Windows Boot Manager\tHD(2,GPT,0C7D3B5A-1111-2222-3333-444455556666,'
                              '0x109000,0x32000)/File(\\EFI\\Microsoft\\Boot\\bootmgfw.efi)WINDOWS.........x...B.C.D.O.B.J.E.C.T.\n')
    e = st['entries'][0]
    assert e['file'] == '\\EFI\\Microsoft\\Boot\\bootmgfw.efi' and e['hd']['guid'] == '0c7d3b5a-1111-2222-3333-444455556666'
    assert e['hd']['number'] == 2


def test_spaces_instead_of_tab_and_mbr_hd():
    st = efi.parse_efibootmgr('BootNext: 0003\nBootOrder: 0001\n'
                              'Boot0001* debian  HD(1,MBR,0x6b3a5e2f,0x800,0x100000)/File(\\EFI\\debian\\grubx64.efi)\n'
                              'Boot0002 Hard Drive BBS(HD,,0x0)\n')
    assert st['boot_next'] == '0003'
    e = by_num(st)
    assert e['0001']['label'] == 'debian' and e['0001']['hd'] == {
        'number': 1, 'scheme': 'MBR', 'signature': '0x6b3a5e2f', 'start': 0x800, 'size': 0x100000}
    assert e['0002']['label'] == 'Hard Drive' and e['0002']['path'] == 'BBS(HD,,0x0)' and not e['0002']['active']


def test_garbage_input():
    assert efi.parse_efibootmgr('') == {'boot_current': None, 'boot_next': None, 'timeout': None, 'boot_order': [],
                                        'entries': []}
    st = efi.parse_efibootmgr('EFI variables are not supported on this system.\nBootOrder: 0001,zz,0002\n')
    assert st['boot_order'] == ['0001', '0002']


# ---------------------------------------------------------------- loader paths


@pytest.mark.parametrize('given,expected', [
    ('\\efi\\debian\\grubx64.efi', '\\efi\\debian\\grubx64.efi'),
    ('/EFI/debian/grubx64.efi', '\\EFI\\debian\\grubx64.efi'),
    ('EFI\\BOOT/BOOTX64.EFI', '\\EFI\\BOOT\\BOOTX64.EFI'),
    ('  //EFI//debian//grubx64.efi ', '\\EFI\\debian\\grubx64.efi'),
])
def test_normalize_loader(given, expected):
    assert efi.normalize_loader(given) == expected
    assert efi.loader_key(given) == expected.lower()


@pytest.mark.parametrize('bad', ['', '  ', '\\', '/EFI/../x.efi', '/EFI/a:b.efi', '/EFI/a\nb.efi'])
def test_normalize_loader_refuses(bad):
    with pytest.raises(ValidationError):
        efi.normalize_loader(bad)


def test_mtools_path():
    assert efi.loader_mtools_path('\\efi\\debian\\grubx64.efi') == '::/efi/debian/grubx64.efi'


# ---------------------------------------------------------------- planning


def test_plan_first_creates_two_entries_on_fresh_ovmf():
    st = load('ovmf-efibootmgr17-01-initial-v.txt')
    targets = [target('/dev/vda', VDA, 'byol (vda)'), target('/dev/vdb', VDB, 'byol (vdb)')]
    plan = efi.plan_boot_entries(st, targets, 'byol', 'first')
    assert [t['disk'] for t in plan['create']] == ['/dev/vda', '/dev/vdb']
    assert plan['delete'] == [] and plan['changed']
    assert plan['order_after'] == ['new:/dev/vda', 'new:/dev/vdb'] + st['boot_order']


def test_plan_is_idempotent_after_the_real_run():
    """After efibootmgr really created the entries and set the order, the plan is empty."""
    st = load('ovmf-efibootmgr17-05-after-create-v.txt')
    targets = [target('/dev/vda', VDA, 'byol (vda)'), target('/dev/vdb', VDB, 'byol (vdb)')]
    plan = efi.plan_boot_entries(st, targets, 'byol', 'first')
    assert plan['create'] == [] and plan['delete'] == []
    assert plan['keep'] == {'/dev/vda': '0009', '/dev/vdb': '000A'}
    assert plan['order_after'] == ['0009', '000A', '0000', '0001', '0002', '0003', '0004', '0005', '0006', '0007', '0008']
    assert plan['changed']  # efibootmgr --create left vdb first: the order must be fixed once
    st['boot_order'] = plan['order_after']
    again = efi.plan_boot_entries(st, targets, 'byol', 'first')
    assert not again['changed'] and again['order_after'] == again['order_before']


def test_plan_after_network_keeps_pxe_and_http_first():
    st = load('ovmf-efibootmgr17-07-after-order-v.txt')  # entries exist, at the end of BootOrder
    targets = [target('/dev/vda', VDA, 'byol (vda)'), target('/dev/vdb', VDB, 'byol (vdb)')]
    plan = efi.plan_boot_entries(st, targets, 'byol', 'after_network')
    assert plan['create'] == [] and plan['delete'] == []
    assert plan['order_after'] == ['0003', '0004', '0005', '0006', '0007', '0009', '000A', '0001', '0002', '0008', '0000']
    st['boot_order'] = plan['order_after']
    assert not efi.plan_boot_entries(st, targets, 'byol', 'after_network')['changed']


def test_plan_after_network_on_server_board_labels_only():
    st = load('supermicro-a1sai-plain.txt')
    plan = efi.plan_boot_entries(st, [target('/dev/sda', '11111111-2222-3333-4444-555555555555')], 'byol', 'after_network')
    assert plan['order_after'] == ['0006', '0007', 'new:/dev/sda', '0000']


def test_plan_none_touches_nothing():
    st = load('ovmf-efibootmgr17-01-initial-v.txt')
    plan = efi.plan_boot_entries(st, [target('/dev/vda', VDA)], 'byol', 'none')
    assert plan['create'] == [] and plan['delete'] == [] and not plan['changed']
    assert plan['order_after'] == plan['order_before']


def test_plan_removes_stale_and_duplicate_entries_of_ours_only():
    st = load('ovmf-efibootmgr17-07-after-order-v.txt')
    # the disks were repartitioned: vda has a new ESP GUID, vdb is not a boot disk any more
    new_guid = '99999999-8888-7777-6666-555555555555'
    plan = efi.plan_boot_entries(st, [target('/dev/vda', new_guid, 'byol')], 'byol', 'first')
    assert sorted(plan['delete']) == ['0009', '000A']  # both "byol (vdX)" entries are stale
    assert plan['order_after'][0] == 'new:/dev/vda' and '0009' not in plan['order_after']
    # a foreign entry for the same ESP and loader is reused, not duplicated, not deleted
    text = ('BootOrder: 0001,0002,0003\n'
            'Boot0001* debian\tHD(1,GPT,%s,0x800,0x10000)/File(\\EFI\\DEBIAN\\GRUBX64.EFI)\n'
            'Boot0002* byol\tHD(1,GPT,%s,0x800,0x10000)/File(\\EFI\\debian\\grubx64.efi)\n'
            'Boot0003* byol\tHD(1,GPT,%s,0x800,0x10000)/File(\\EFI\\debian\\grubx64.efi)\n' % (VDA, VDA, VDA))
    st = efi.parse_efibootmgr(text)
    plan = efi.plan_boot_entries(st, [target('/dev/vda', VDA, 'byol', loader='/efi/debian/grubx64.efi')], 'byol', 'first')
    assert plan['keep'] == {'/dev/vda': '0002'}  # the one with our label wins
    assert plan['delete'] == ['0003'] and plan['create'] == []
    assert plan['order_after'] == ['0002', '0001']


def test_plan_other_loader_is_not_a_match():
    text = 'BootOrder: 0001\nBoot0001* byol\tHD(1,GPT,%s,0x800,0x10000)/File(\\EFI\\BOOT\\BOOTX64.EFI)\n' % VDA
    plan = efi.plan_boot_entries(efi.parse_efibootmgr(text), [target('/dev/vda', VDA)], 'byol', 'first')
    assert [t['disk'] for t in plan['create']] == ['/dev/vda'] and plan['delete'] == ['0001']


def test_plan_mbr_target():
    text = ('BootOrder: 0005,0001\nBoot0001* byol\tHD(1,MBR,0x6b3a5e2f,0x800,0x100000)/File(\\EFI\\debian\\grubx64.efi)\n'
            'Boot0005* UEFI PXEv4 (MAC:001122334455)\tPciRoot(0x0)/Pci(0x3,0x0)/MAC(001122334455,1)\n')
    st = efi.parse_efibootmgr(text)
    t = {'disk': '/dev/sda', 'signature': '0x6B3A5E2F', 'number': 1, 'loader': LOADER, 'label': 'byol'}
    plan = efi.plan_boot_entries(st, [t], 'byol', 'first')
    assert plan['keep'] == {'/dev/sda': '0001'} and plan['order_after'] == ['0001', '0005']
    plan = efi.plan_boot_entries(st, [t], 'byol', 'after_network')
    assert not plan['changed']


def test_labels():
    assert efi.entry_label('byol', '/dev/sda', 1) == 'byol'
    assert efi.entry_label('byol', '/dev/nvme0n1', 2) == 'byol (nvme0n1)'
    assert efi.is_our_label('byol (sda)', 'byol') and efi.is_our_label('byol', 'byol')
    assert not efi.is_our_label('byolx', 'byol') and not efi.is_our_label('debian', 'byol')


def test_describe_order():
    st = load('ovmf-efibootmgr17-05-after-create-v.txt')
    text = efi.describe_order(st, ['new:/dev/sda', '0009'], {'new:/dev/sda': 'byol'})
    assert text == 'BootOrder: new:/dev/sda,0009\nnew:/dev/sda byol\nBoot0009 byol (vda)\n'


# ---------------------------------------------------------------- disks


SFDISK_GPT = json.dumps({'partitiontable': {
    'label': 'gpt', 'id': 'A1B2C3D4-0000-4000-8000-000000000000', 'device': '/dev/nvme0n1', 'unit': 'sectors',
    'firstlba': 2048, 'lastlba': 1000000, 'sectorsize': 512, 'partitions': [
        {'node': '/dev/nvme0n1p1', 'start': 2048, 'size': 2048, 'type': '21686148-6449-6E6F-744E-656564454649',
         'uuid': 'AAAAAAAA-0000-4000-8000-000000000001'},
        {'node': '/dev/nvme0n1p2', 'start': 4096, 'size': 1048576, 'type': 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B',
         'uuid': '8FD16EA9-250A-4664-91EA-494C25692792', 'name': 'EFI System Partition'},
        {'node': '/dev/nvme0n1p3', 'start': 1052672, 'size': 100, 'type': '0FC63DAF-8483-4772-8E79-3D69D8477DE4',
         'uuid': 'AAAAAAAA-0000-4000-8000-000000000003'}]}})

SFDISK_DOS = json.dumps({'partitiontable': {
    'label': 'dos', 'id': '0x6b3a5e2f', 'device': '/dev/sda', 'unit': 'sectors', 'sectorsize': 512, 'partitions': [
        {'node': '/dev/sda1', 'start': 2048, 'size': 1048576, 'type': 'ef'},
        {'node': '/dev/sda2', 'start': 1050624, 'size': 100, 'type': '83', 'bootable': True}]}})


def test_find_esps_gpt_and_mbr():
    esps = efi.find_esps(json.loads(SFDISK_GPT)['partitiontable'], '/dev/nvme0n1')
    assert esps == [{'node': '/dev/nvme0n1p2', 'number': 2, 'start': 4096, 'size': 1048576, 'scheme': 'GPT',
                     'guid': VDA, 'disk': '/dev/nvme0n1'}]
    esps = efi.find_esps(json.loads(SFDISK_DOS)['partitiontable'], '/dev/sda')
    assert esps[0]['scheme'] == 'MBR' and esps[0]['signature'] == '0x6b3a5e2f' and esps[0]['number'] == 1
    assert [p['node'] for p in efi.find_bios_boot(json.loads(SFDISK_GPT)['partitiontable'])] == ['/dev/nvme0n1p1']
    assert efi.find_bios_boot(json.loads(SFDISK_DOS)['partitiontable']) == []


def test_inspect_mbr():
    blank = b'\0' * 512
    assert efi.inspect_mbr(blank) == {'boot_code': False, 'signature_55aa': False, 'loader': None}
    grub = b'\xebc\x90' + b'\0' * 0x17d + b'GRUB \0Geom\0Hard Disk\0Read\0 Error\r\n' + b'\0' * 30
    grub = grub[:440].ljust(510, b'\0') + b'\x55\xaa'
    assert efi.inspect_mbr(grub) == {'boot_code': True, 'signature_55aa': True, 'loader': 'grub'}
    other = b'\xfa\x31\xc0' + b'\0' * 507 + b'\x55\xaa'
    assert efi.inspect_mbr(other)['loader'] == 'unknown'


def test_parse_mdir_size():
    out = (' Volume in drive : has no label\n Volume Serial Number is 1234-ABCD\nDirectory for ::/EFI/debian\n\n'
           'grubx64  efi   4194304 2026-11-23  19:58  grubx64.efi\n        1 file            4 194 304 bytes\n')
    assert efi.parse_mdir_size(out) == 4194304
    assert efi.parse_mdir_size('nothing') is None

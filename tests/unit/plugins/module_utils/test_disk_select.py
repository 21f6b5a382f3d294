# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Which disks may be installed on: classification, root device hints, what other disks carry.

The fixtures in ``fixtures/lsblk/`` are ``lsblk --json --bytes --output-all`` trees in the format of
util-linux 2.38 (every column it prints, children nested as lsblk nests them - a multipath device
under each of its paths):

- ``messy_server.json``: two Samsung NVMe disks with serials and 4 KiB logical sectors, two SAS
  HDDs with WWNs, a SanDisk USB stick, the AMI BMC's virtual disk (no medium) and virtual CD, a
  stale Intel SATA SSD with an ESP, an md member (old array ``oldhost:md-vg_r1`` holding a PV of
  VG ``vg_r1``) and an old config drive, zram swap and the rescue system's squashfs loop device;
- ``multipath.json``: a Pure FlashArray LUN seen through two FC paths with its dm-multipath device,
  and a local NVMe disk;
- ``multipath_without_dm.json``: the same two paths without multipathd, and a local SATA SSD.
"""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils._blockdev import parse_lsblk
from ansible_collections.baremetal.byol.plugins.module_utils._errors import ValidationError
from ansible_collections.baremetal.byol.plugins.module_utils import _disk_select as DS
from ansible_collections.baremetal.byol.plugins.module_utils import _preflight as PF
from ansible_collections.baremetal.byol.tests.unit.plugins.module_utils.fake_runner import FakeRunner

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'lsblk')


def load(name):
    with open(os.path.join(FIXTURES, name + '.json')) as f:
        return parse_lsblk(f.read())


MESSY = load('messy_server')
MULTIPATH = load('multipath')
NO_DM = load('multipath_without_dm')
BY_PATH = {'nvme0n1': ['/dev/disk/by-path/pci-0000:41:00.0-nvme-1'], 'nvme1n1': ['/dev/disk/by-path/pci-0000:42:00.0-nvme-1'],
           'sda': ['/dev/disk/by-path/pci-0000:03:00.0-sas-phy0-lun-0'], 'sdb': ['/dev/disk/by-path/pci-0000:03:00.0-sas-phy1-lun-0']}
PVS = {'/dev/md127': 'vg_r1'}


def records(devices=None, **kw):
    kw.setdefault('by_path', BY_PATH)
    return DS.classify(MESSY if devices is None else devices, **kw)


def by_name(recs):
    return dict((r['name'], r) for r in recs)


# ------------------------------------------------------------------------------------ classification

@pytest.mark.parametrize('name,candidate,reasons', [
    ('nvme0n1', True, []),
    ('nvme1n1', True, []),
    ('sda', True, []),
    ('sdb', True, []),
    ('sde', True, []),  # the stale disk is a disk: it is reported (see below), not hidden
    ('sdc', False, ['removable media', 'USB-attached disk (the root device hint tran: usb chooses one)']),
    ('sdd', False, ['BMC virtual media (AMI Virtual HDisk0)', 'USB-attached disk (the root device hint tran: usb chooses one)',
                    'no medium (size 0)']),
    ('sr0', False, ['optical drive (type rom)', 'removable media', 'BMC virtual media (AMI Virtual CDROM0)',
                    'USB-attached disk (the root device hint tran: usb chooses one)']),
    ('zram0', False, ['zram device (compressed RAM)']),
    ('loop0', False, ['loop device (only with include_loop)', 'read-only device']),
])
def test_messy_server_every_device_with_its_reasons(name, candidate, reasons):
    rec = by_name(records())[name]
    assert (rec['candidate'], rec['reasons']) == (candidate, reasons)


def test_messy_server_properties_hints_match_on():
    recs = by_name(records())
    nvme = recs['nvme0n1']
    assert (nvme['model'], nvme['serial'], nvme['type'], nvme['logical_sector_size'], nvme['transport']) == (
        'SAMSUNG MZQL2960HCJR-00A07', 'S64FNE0R123456', 'NVMe', 4096, 'nvme')
    assert nvme['by_path'] == ['/dev/disk/by-path/pci-0000:41:00.0-nvme-1']
    sas = recs['sda']
    assert (sas['vendor'], sas['model'], sas['wwn'], sas['hctl'], sas['type'], sas['rotational']) == (
        'SEAGATE', 'ST1200MM0099', '0x5000c500a1b2c3d4', '0:0:0:0', 'HDD', True)
    assert [r['name'] for r in records()] == ['loop0', 'nvme0n1', 'nvme1n1', 'sda', 'sdb', 'sdc', 'sdd', 'sde', 'sr0', 'zram0']


def test_messy_server_groups_leave_the_usb_stick_and_virtual_media_out():
    # On main the USB stick (14.3 GiB, not rotational) was an "SSD" and the smallest disk: group 1, the default target.
    groups = DS.group_candidates(records())
    assert [(g['id'], g['type'], g['disks']) for g in groups] == [
        (1, 'NVMe', ['/dev/nvme0n1', '/dev/nvme1n1']),
        (2, 'SSD', ['/dev/sde']),
        (3, 'HDD', ['/dev/sda', '/dev/sdb']),
    ]
    assert PF.choose_targets(PF.group_disks(PF.list_disks(MESSY)), 0, None, 'byoi')[0] == ['/dev/nvme0n1']
    # without the NVMe disks, the 14.3 GiB USB stick (not rotational: an "SSD") was the smallest SSD: group 1 on main
    no_nvme = [d for d in MESSY if not d['name'].startswith('nvme')]
    assert PF.choose_targets(PF.group_disks(PF.list_disks(no_nvme)), 0, None, 'byoi')[0] == ['/dev/sde']


def test_loop_devices_only_when_asked_and_never_read_only():
    rec = by_name(records(include_loop=True))['loop0']
    assert rec['reasons'] == ['read-only device']
    writable = [dict(d, ro=False) if d.get('name') == 'loop0' else d for d in MESSY]
    assert by_name(records(writable, include_loop=True))['loop0']['candidate']
    assert not by_name(records(writable))['loop0']['candidate']


def test_rescue_systems_own_disks_and_boot_medium():
    recs = by_name(records(system_disks={'sda'}))
    assert recs['sda']['reasons'] == ["holds the running (rescue) system's root filesystem"]
    live = [dict(d, mountpoints=['/run/live/medium']) if d.get('name') == 'sdb' else d for d in MESSY]
    assert by_name(records(live))['sdb']['reasons'] == ["holds the rescue system's boot medium (mounted on /run/live/medium)"]


def test_usb_disk_only_with_the_tran_hint_and_never_when_removable():
    recs = by_name(records(usb_allowed=True))
    assert recs['sdc']['reasons'] == ['removable media']
    fixed_usb = [dict(d, rm=False) if d.get('name') == 'sdc' else d for d in MESSY]
    assert by_name(records(fixed_usb, usb_allowed=True))['sdc']['candidate']


@pytest.mark.parametrize('vendor,model,virtual', [
    ('AMI', 'Virtual CDROM0', True),
    ('AMI', 'Virtual Floppy0', True),
    ('AMI', 'Virtual HDisk0', True),
    ('ATEN', 'Virtual CDROM', True),
    ('ATEN', 'Virtual Floppy', True),
    ('ATEN', 'Virtual Disk', True),
    ('iDRAC', 'Virtual CD', True),
    ('iDRAC', 'Virtual Floppy', True),
    ('iDRAC', 'LCDRIVE', True),
    ('Linux', 'File-Stor Gadget', True),  # OpenBMC, iDRAC 9
    ('Linux', 'File-CD Gadget', True),
    ('HP iLO', 'Virtual DVD-ROM', True),
    ('HP', 'Virtual USB Key', True),
    ('Cisco', 'vKVM-Mapped vDVD', True),
    ('Cisco', 'vKVM-Mapped vHDD', True),
    ('Cisco', 'CIMC-Mapped vHDD', True),
    # real disks whose model says "virtual": hypervisors' disks, hardware RAID volumes
    ('VMware', 'Virtual disk', False),
    ('Msft', 'Virtual Disk', False),
    ('DELL', 'PERC H730P Mini', False),
    ('HP', 'LOGICAL VOLUME', False),
    ('ATA', 'SAMSUNG MZ7LH480HAHQ-00005', False),
    (None, 'SAMSUNG MZQL2960HCJR-00A07', False),
])
def test_bmc_virtual_media(vendor, model, virtual):
    assert DS.is_bmc_virtual_media(vendor, model) is virtual


def test_multipath_device_is_the_disk_and_its_paths_are_not():
    recs = by_name(records(MULTIPATH))
    assert recs['sda']['reasons'] == recs['sdb']['reasons'] == [
        'path of multipath device mpatha (/dev/mapper/mpatha): the multipath device is the disk']
    mp = recs['dm-0']
    assert mp['candidate'] and mp['path'] == '/dev/mapper/mpatha'
    assert (mp['vendor'], mp['model'], mp['wwn'], mp['multipath_paths']) == (
        'PURE', 'FlashArray', '0x624a93708f2a1b3c', ['/dev/sda', '/dev/sdb'])
    assert mp['wwn_with_extension'] == '0x624a93708f2a1b3c4d5e6f7a0b1c2d3e'
    assert mp['wwn_vendor_extension'] == '0x4d5e6f7a0b1c2d3e'
    # one LUN, one disk: on main the two paths were a group of two disks
    assert [g['disks'] for g in DS.group_candidates(records(MULTIPATH))] == [['/dev/nvme0n1'], ['/dev/mapper/mpatha']]


def test_two_paths_without_multipath_device_are_refused():
    recs = by_name(records(NO_DM))
    assert recs['sda']['reasons'] == [
        'same WWN 0x624a93708f2a1b3c4d5e6f7a0b1c2d3e as /dev/sdb: two paths to one disk and no multipath device '
        '(start multipathd so that the multipath device is the disk, or disconnect the other path)']
    assert not recs['sdb']['candidate'] and recs['sdc']['candidate']
    with pytest.raises(ValidationError, match='only 1 disk'):
        DS.choose_by_hints(records(NO_DM), {'size': '> 100'}, 2, 'byol')


# ------------------------------------------------------------------------------------ hints

@pytest.mark.parametrize('hints,installer,count,targets', [
    # serials pick the NVMe pair; a list is the <or> of its values
    ({'serial': ['S64FNE0R123456', 'S64FNE0R123457']}, 'byol', None, ['/dev/nvme0n1', '/dev/nvme1n1']),
    ({'serial': '<or> s64fne0r123457 <or> WFK1A2B30000E8221XYZ'}, 'byol', None, ['/dev/nvme1n1', '/dev/sda']),
    ({'serial': 'S64FNE0R123457'}, 'byoi', None, ['/dev/nvme1n1']),
    ({'model': '<in> samsung'}, 'byol', None, ['/dev/nvme0n1', '/dev/nvme1n1']),
    ({'model': 'samsung mzql2960hcjr-00a07', 'size': 894}, 'byoi', None, ['/dev/nvme0n1']),
    ({'vendor': 'seagate'}, 'byol', None, ['/dev/sda', '/dev/sdb']),
    ({'wwn': '0x5000C500A1B2C3E8'}, 'byoi', None, ['/dev/sdb']),
    ({'wwn_with_extension': '0x5000c500a1b2c3d4'}, 'byoi', None, ['/dev/sda']),
    ({'rotational': True}, 'byol', None, ['/dev/sda', '/dev/sdb']),
    ({'rotational': 'false', 'size': '< 500'}, 'byol', None, ['/dev/sde']),
    ({'hctl': '0:0:1:0'}, 'byoi', None, ['/dev/sdb']),
    ({'by_path': '/dev/disk/by-path/pci-0000:42:00.0-nvme-1'}, 'byoi', None, ['/dev/nvme1n1']),
    ({'name': '/dev/sdb'}, 'byoi', None, ['/dev/sdb']),
    ({'name': 'sdb'}, 'byoi', None, ['/dev/sdb']),
    ({'tran': 'sas'}, 'byol', None, ['/dev/sda', '/dev/sdb']),
    # size in GiB: whole GiB for == (960 GB = 894.25 GiB), exact for the comparisons
    ({'size': '== 894'}, 'byol', None, ['/dev/nvme0n1', '/dev/nvme1n1']),
    ({'size': '>= 1000'}, 'byol', None, ['/dev/sda', '/dev/sdb']),
    ({'size': '= 1000'}, 'byol', None, ['/dev/sda', '/dev/sdb']),  # oslo's legacy "=" is ">="
    ({'size': '<= 894.3'}, 'byol', None, ['/dev/nvme0n1', '/dev/nvme1n1', '/dev/sde']),
    ({'size': '< 894.2'}, 'byol', None, ['/dev/sde']),
    ({'size': '!= 894'}, 'byol', None, ['/dev/sde', '/dev/sda', '/dev/sdb']),
    ({'size': '<range-in> [ 400 900 ]'}, 'byol', None, ['/dev/nvme0n1', '/dev/nvme1n1', '/dev/sde']),
    ({'size': '<range-in> ( 447.2 900 )'}, 'byol', None, ['/dev/nvme0n1', '/dev/nvme1n1']),
    ({'size': '<or> 447 <or> 1117'}, 'byol', None, ['/dev/sde', '/dev/sda', '/dev/sdb']),
    ({'model': 's!= st1200mm0099', 'size': '> 100'}, 'byol', 2, ['/dev/nvme0n1', '/dev/nvme1n1']),
    ({'model': 's>= st'}, 'byol', None, ['/dev/sda', '/dev/sdb']),
])
def test_hints_choose(hints, installer, count, targets):
    assert DS.choose_by_hints(records(), hints, count, installer)[0] == targets


def test_hints_never_reach_what_is_never_a_target():
    # the USB stick, the BMC's virtual disk and CD match these hints, and are still refused
    for hints in ({'vendor': 'sandisk'}, {'model': '<in> virtual'}, {'tran': 'usb'}, {'name': '/dev/zram0'}):
        with pytest.raises(ValidationError) as exc:
            DS.choose_by_hints(records(usb_allowed=True), hints, None, 'byol')
        assert 'matches but is never a target' in exc.value.msg


def test_no_disk_matches_says_why_for_each():
    with pytest.raises(ValidationError) as exc:
        DS.choose_by_hints(records(), {'serial': 'S64FNE0R999999', 'size': '> 800'}, None, 'byol')
    msg = exc.value.msg
    assert msg.startswith('No disk matches the root device hints (serial: S64FNE0R999999, size: > 800). Disks: ')
    assert '/dev/nvme0n1 (serial is S64FNE0R123456)' in msg
    assert '/dev/sde (serial is PHYF912301AB480BGN, size is 447.13 GiB)' in msg


@pytest.mark.parametrize('hints,message', [
    ({'colour': 'red'}, 'Unknown root device hint(s) colour; valid hints: by_path, hctl, model'),
    ({'serial': 123}, "Root device hint serial: 123 is not a string: quote the value in YAML"),
    ({'size': 'big'}, "Root device hint size: 'big' is not a positive size in GiB"),
    ({'size': 0}, 'Root device hint size: 0 must be a positive size in GiB'),
    ({'size': '>= -1'}, 'is not a positive size in GiB'),
    ({'size': 's== 10'}, 'compares a size as a string'),
    ({'model': '>= 10'}, 'compares a string with a number operator'),
    ({'model': '<all-in> a b'}, 'uses <all-in>, which only compares lists'),
    ({'model': '<range-in> [ 1 2 ]'}, 'uses <range-in>, which only compares numbers'),
    ({'size': '<range-in> [ 20 10 ]'}, 'has its low bound above its high bound'),
    ({'size': '<range-in> 10 20'}, 'is not "<range-in> [ low high ]"'),
    ({'rotational': 'maybe'}, "Root device hint rotational: 'maybe' is not a boolean"),
    ({'serial': ''}, "Root device hint serial: '' is empty"),
    ({'serial': []}, 'is an empty list'),
    ({'model': '<in>'}, 'has no value after <in>'),
    ('sda', 'Root device hints must be a mapping'),
])
def test_bad_hints_are_refused_clearly(hints, message):
    with pytest.raises(ValidationError) as exc:
        DS.parse_hints(hints)
    assert message in exc.value.msg


def test_hints_count_and_byoi_first():
    with pytest.raises(ValidationError) as exc:
        DS.choose_by_hints(records(), {'model': '<in> samsung'}, 3, 'byol')
    assert exc.value.msg == ('partitioning.disks is 3 but only 2 disk(s) match the root device hints (model: <in> samsung): '
                             '/dev/nvme0n1, /dev/nvme1n1')
    assert DS.choose_by_hints(records(), {'size': '> 100'}, None, 'byoi')[0] == ['/dev/nvme0n1']


# ------------------------------------------------------------------------------------ other disks

def test_stale_disk_signatures():
    sigs = DS.signatures(MESSY, 'sde', pv_vgs=PVS, boot_code={'sde': True})
    assert [s['text'] for s in sigs] == [
        'EFI system partition /dev/sde1',
        'md superblock on /dev/sde2 (array oldhost:md-vg_r1)',
        'config drive /dev/sde3 (label config-2)',
        'LVM PV on /dev/md127 (VG vg_r1)',
        'boot code in the first sector of /dev/sde',
    ]
    assert DS.signatures(MESSY, 'nvme0n1', pv_vgs=PVS) == []


def test_boot_code():
    assert not DS.has_boot_code(b'\0' * 512)
    assert not DS.has_boot_code(b'\0' * 440 + b'\x01\x02\x03\x04' + b'\0' * 66 + b'\x55\xaa')  # disk id + signature only
    assert DS.has_boot_code(b'\xebc\x90' + b'\0' * 509)
    assert not DS.has_boot_code(b'')


def test_planned_names_follow_the_layout_planner():
    layout = [{'mount_point': '/boot', 'fs_type': 'ext4', 'size': 1024, 'raid_level': 1},
              {'mount_point': '/', 'fs_type': 'ext4', 'size': 0, 'raid_level': 1, 'lv_name': 'root'},
              {'mount_point': '/srv', 'fs_type': 'zfs', 'size': 100, 'zpool_name': 'tank', 'raid_level': 1}]
    names = DS.planned_names(layout, 2)
    assert names['lvm'] == {'vg_r1'} and names['zfs'] == {'tank'} and 'md-vg_r1' in names['md']
    assert names['config_drive'] == {'config-2'}
    # one disk: RAID 1 is reduced away, the VG has another name
    assert DS.planned_names(layout, 1)['lvm'] == {'vg'}
    assert DS.planned_names([{'mount_point': '/', 'fs_type': 'nonsense'}], 2)['lvm'] == set()


def test_name_clashes_with_a_stale_disk():
    recs = by_name(records())
    stale = dict(recs['sde'], signatures=DS.signatures(MESSY, 'sde', pv_vgs=PVS))
    layout = [{'mount_point': '/', 'fs_type': 'ext4', 'size': 0, 'raid_level': 1, 'lv_name': 'root'}]
    assert DS.name_clashes([stale], DS.planned_names(layout, 2)) == [
        'md array md-vg_r1 on /dev/sde2', 'config drive label config-2 on /dev/sde3', 'volume group vg_r1 on /dev/md127']
    # BYOI has no arrays or VGs, but writes a config drive too
    assert DS.name_clashes([stale], DS.planned_names(None, 1)) == ['config drive label config-2 on /dev/sde3']


def test_parse_pvs():
    text = json.dumps({'report': [{'pv': [{'pv_name': '/dev/md127', 'vg_name': 'vg_r1'}, {'pv_name': '/dev/sdz1', 'vg_name': ''}]}]})
    assert DS.parse_pvs(text) == {'/dev/md127': 'vg_r1'}
    assert DS.parse_pvs('not json') == {}


# ------------------------------------------------------------------------------------ pre-flight's run()

def recorded_server(fixture, pvs=None, tree=None):
    """lsblk, findmnt and pvs answers of a recorded server whose rescue system runs from RAM."""
    if tree is not None:
        lsblk = json.dumps({'blockdevices': tree})
    else:
        with open(os.path.join(FIXTURES, fixture + '.json')) as f:
            lsblk = f.read()
    runner = FakeRunner(strict=True, bin_dir='/usr/bin')
    runner.on('lsblk', '--json', '--bytes', '--output-all', stdout=lsblk)
    runner.on('findmnt', stdout='tmpfs\n')
    runner.on('pvs', stdout=json.dumps({'report': [{'pv': [{'pv_name': k, 'vg_name': v} for k, v in (pvs or {}).items()]}]}))
    return runner


def messy_tree():
    with open(os.path.join(FIXTURES, 'messy_server.json')) as f:
        return json.load(f)['blockdevices']


RAID1_LVM = [{'mount_point': '/boot', 'fs_type': 'ext4', 'size': 1024, 'raid_level': 1},
             {'mount_point': '/', 'fs_type': 'ext4', 'size': 0, 'raid_level': 1, 'lv_name': 'root'}]


def run(params, fixture='messy_server'):
    base = {'installer': 'byol', 'check_in_use': False}
    base.update(params)
    return PF.run(recorded_server(fixture, PVS), base)


def test_run_messy_server_default_group_is_the_nvme_pair_and_the_others_are_reported():
    # BYOI writes a config drive too: the stale disk's old config-2 would be read by cloud-init at boot
    with pytest.raises(ValidationError) as exc:
        run({'installer': 'byoi'})
    assert exc.value.msg.startswith('Disks that are not targets carry names the new installation creates too: config '
                                    'drive label config-2 on /dev/sde3. At boot')
    stale_free = [d for d in messy_tree() if d['name'] != 'sde'] + [
        dict(d, children=[c for c in d['children'] if c['name'] != 'sde3']) for d in messy_tree() if d['name'] == 'sde']
    res = PF.run(recorded_server(None, PVS, tree=stale_free), {'installer': 'byoi', 'check_in_use': False})
    assert res['targets'] == ['/dev/nvme0n1']
    devices = by_name(res['devices'])
    assert devices['sdc']['reasons'][0] == 'removable media' and devices['sr0']['candidate'] is False
    assert [g['disks'] for g in res['groups']][0] == ['/dev/nvme0n1', '/dev/nvme1n1']
    assert res['other_disks'][0]['path'] == '/dev/sde'
    assert res['warnings'][0].startswith('Not a target, left alone: /dev/sde carries EFI system partition /dev/sde1; '
                                         'md superblock on /dev/sde2 (array oldhost:md-vg_r1)')
    assert res['other_disks'][0]['candidate'] is True
    assert res['wipe_disks'] == []


def test_run_refuses_names_a_stale_disk_carries():
    with pytest.raises(ValidationError) as exc:
        run({'layout': RAID1_LVM})
    assert exc.value.msg.startswith('Disks that are not targets carry names the new installation creates too: md array '
                                    'md-vg_r1 on /dev/sde2; config drive label config-2 on /dev/sde3; volume group vg_r1 on '
                                    '/dev/md127. At boot')
    # the stale disk is not a target of group 1; with the erase option it is to be wiped and nothing clashes
    res = run({'layout': RAID1_LVM, 'wipe_other_disks': True})
    assert res['targets'] == ['/dev/nvme0n1', '/dev/nvme1n1'] and res['wipe_disks'] == ['/dev/sde']
    assert res['warnings'][0].startswith('Not a target, to be wiped (wipe_other_disks): /dev/sde carries')


def test_run_hints_win_over_the_disk_group():
    res = run({'root_device_hints': {'serial': ['S64FNE0R123456', 'S64FNE0R123457']}, 'disk_group_id': 3,
               'wipe_other_disks': True, 'layout': RAID1_LVM})
    assert res['targets'] == ['/dev/nvme0n1', '/dev/nvme1n1']
    assert res['warnings'][0] == 'diskGroupId 3 is ignored: the root device hints choose the disks'
    assert by_name(res['devices'])['sda']['hints_mismatch'] == ['serial is WFK1A2B30000E8221XYZ']
    # the stale disk itself, chosen by hints, is a target: nothing left to clash
    res = run({'root_device_hints': {'model': '<in> intel'}, 'layout': RAID1_LVM})
    assert res['targets'] == ['/dev/sde'] and res['other_disks'] == []


@pytest.mark.parametrize('target,message', [
    ('/dev/sdc', 'target disk /dev/sdc is never an installation target: removable media, USB-attached disk'),
    ('/dev/sr0', 'target disk /dev/sr0 is never an installation target: optical drive (type rom)'),
    ('/dev/sdd', 'target disk /dev/sdd is never an installation target: BMC virtual media (AMI Virtual HDisk0)'),
    ('/dev/zram0', 'target disk /dev/zram0 is never an installation target: zram device (compressed RAM)'),
    ('/dev/loop0', 'target disk /dev/loop0 is never an installation target: read-only device'),
])
def test_run_explicit_targets_never_reach_what_is_never_a_target(target, message):
    # on main every one of these but sr0, zram0 and loop0 was accepted and written
    with pytest.raises(ValidationError) as exc:
        run({'target_disks': [target]})
    assert exc.value.msg.startswith(message)


def test_run_multipath_paths_refused_and_the_dm_device_chosen():
    with pytest.raises(ValidationError, match='is never an installation target: path of multipath device mpatha'):
        run({'target_disks': ['/dev/sda']}, 'multipath')
    res = run({'root_device_hints': {'vendor': 'pure'}}, 'multipath')
    assert res['targets'] == ['/dev/mapper/mpatha']
    with pytest.raises(ValidationError, match='same WWN 0x624a93708f2a1b3c4d5e6f7a0b1c2d3e as /dev/sdb'):
        run({'target_disks': ['/dev/sda']}, 'multipath_without_dm')


def test_run_hints_and_target_disks_together_are_refused():
    with pytest.raises(ValidationError, match='Give either target_disks or root device hints, not both'):
        run({'target_disks': ['/dev/sda'], 'root_device_hints': {'size': '> 1'}})


def test_devices_gone_at_reboot_are_no_other_disks():
    # a loop device of the rescue system carrying a config-2 filesystem is not seen by the installed system
    tree = messy_tree()
    for dev in tree:
        if dev['name'] == 'loop0':
            dev.update(fstype='vfat', label='config-2', ro=False, mountpoints=[None], mountpoint=None)
        if dev['name'] == 'sde':
            dev['children'] = [c for c in dev['children'] if c['name'] != 'sde3']
    res = PF.run(recorded_server(None, PVS, tree=tree), {'installer': 'byoi', 'check_in_use': False})
    assert [o['path'] for o in res['other_disks']] == ['/dev/sde']
    assert by_name(res['devices'])['loop0']['signatures'][0]['text'] == 'config drive /dev/loop0 (label config-2)'


def test_run_reinstall_onto_a_multipath_disk_its_paths_are_no_other_disks():
    # the LUN carries VG vg_r1 from an earlier installation; its two paths see the same PV and are the same disk
    pvs = {'/dev/mapper/mpatha-part1': 'vg_r1'}
    layout = [{'mount_point': '/', 'fs_type': 'ext4', 'size': 0, 'lv_name': 'root'}]
    res = PF.run(recorded_server('multipath', pvs), {'installer': 'byol', 'check_in_use': False, 'layout': layout,
                                                     'root_device_hints': {'vendor': 'pure'}})
    assert res['targets'] == ['/dev/mapper/mpatha'] and res['other_disks'] == [] and res['warnings'] == []
    # the local disk chosen instead: the LUN (once, as its multipath device) is the other disk and its VG is reported
    res = PF.run(recorded_server('multipath', pvs), {'installer': 'byol', 'check_in_use': False, 'layout': layout,
                                                     'root_device_hints': {'tran': 'nvme'}})
    assert [o['path'] for o in res['other_disks']] == ['/dev/mapper/mpatha']
    assert res['other_disks'][0]['signatures'] == ['LVM PV on /dev/mapper/mpatha-part1 (VG vg_r1)']


def test_mismatch_names_each_value_once_and_the_multipath_device_by_both_names():
    recs = records(MULTIPATH)
    DS.choose_by_hints(recs, {'name': '/dev/dm-0'}, None, 'byoi')
    mp = by_name(recs)['dm-0']
    assert mp['hints_match']
    assert by_name(recs)['nvme0n1']['hints_mismatch'] == ['name is /dev/nvme0n1']
    assert DS.choose_by_hints(records(MULTIPATH), {'name': 'mapper/mpatha'}, None, 'byoi')[0] == ['/dev/mapper/mpatha']

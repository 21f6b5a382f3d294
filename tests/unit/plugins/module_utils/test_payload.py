# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The OVHcloud payload translation and the install request validation (pure logic)."""

from __future__ import annotations

import base64
import copy
import json
import os

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils._errors import ValidationError
from ansible_collections.baremetal.byol.plugins.module_utils import _payload as P

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
RSA_KEY = ('ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC9xPpdqP3sx2H+gcBm65tJEaUbuifQ1uGkgrWtNY0PRKNNPdy+3yoVOtxk6Vjo4YZ0EU/'
           'JhmQfnrK7X7Q5vhqYxmozi0LiTRt0BxgqHJ+4hWTWMIOgr+C2jLx7ZsCReRk+fy5AHr6h0PHQEuXVLXeUy/TDyuY2JPtUZ5jcqvLYgQ== '
           'my-nuclear-power-plant')
ED_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHr0n2BQ1cpoc0d8mr6/T5HTrYLbYovE/fhPIqmhEAbp admin@example.net'
SHA512 = ('2cbd3dd5606ef95a5cfa47943b3ad453fcc43522915be7f559a296a71395f82f88e621e558df7aa5f3d2e62c20043f9430'
          'ad18c900e565a1c070066e8d008aaa')
USER_DATA_B64 = (
    'I2Nsb3VkLWNvbmZpZwpzc2hfYXV0aG9yaXplZF9rZXlzOgogIC0gc3NoLXJzYSBBQUFBQjhkallpdz09IG15c2VsZkBteWRvbWFpbi5uZXQKCnVzZXJz'
    'OgogIC0gbmFtZTogcGF0aWVudDAKICAgIHN1ZG86IEFMTD0oQUxMKSBOT1BBU1NXRDpBTEwKICAgIGdyb3VwczogdXNlcnMsIHN1ZG8KICAgIHNoZWxs'
    'OiAvYmluL2Jhc2gKICAgIGxvY2tfcGFzc3dkOiBmYWxzZQogICAgc3NoX2F1dGhvcml6ZWRfa2V5czoKICAgICAgLSBzc2gtcnNhIEFBQUFCOGRqWWl3'
    'PT0gbXlzZWxmQG15ZG9tYWluLm5ldApkaXNhYmxlX3Jvb3Q6IGZhbHNlCnBhY2thZ2VzOgogIC0gdmltCiAgLSB0cmVlCmZpbmFsX21lc3NhZ2U6IFRo'
    'ZSBzeXN0ZW0gaXMgZmluYWxseSB1cCwgYWZ0ZXIgJFVQVElNRSBzZWNvbmRzCg==')

# The BYOI guide's payload, verbatim.
GUIDE_BYOI = {
    'operatingSystem': 'byoi_64',
    'customizations': {
        'hostname': 'mon-tux',
        'imageURL': 'https://cdimage.debian.org/cdimage/cloud/bullseye/20230124-1270/debian-11-generic-amd64-20230124-1270.raw',
        'imageType': 'raw',
        'sshKey': RSA_KEY,
        'efiBootloaderPath': '\\efi\\debian\\grubx64.efi',
        'imageCheckSum': SHA512,
        'httpHeaders': {'Authorization': 'Basic bG9naW46cGFzc3dvcmQ='},
        'imageCheckSumType': 'sha512',
        'configDriveUserData': USER_DATA_B64,
    },
}

# The BYOL README's payload, verbatim.
GUIDE_BYOL = {
    'operatingSystem': 'byolinux_64',
    'customizations': {
        'hostname': 'myHostname',
        'imageURL': 'https://github.com/myself/myImagesFactory/releases/download/0.1/myCustomImage.qcow2',
        'imageCheckSum': '6a65719e6a7f276a4b8685d3ace0920d56acef7d4bbbf9427fe188db7b19c23be7fc182f7a9b29e394167717731f4cd7'
                         'cab410a36e60e6c6451954f3b795a15c',
        'httpHeaders': {'Authorization': 'Basic dGhlb3dsc2FyZW5vdDp3aGF0dGhleXNlZW1z='},
        'imageCheckSumType': 'sha512',
        'configDriveUserData': '#!/bin/bash\necho "Hi, sounds like BYOLinux as ostemplate is a success!" >/etc/motd',
    },
}

SPEC_STORAGE = [{
    'diskGroupId': 1,
    'partitioning': {
        'disks': 2,
        'layout': [
            {'mountPoint': '/boot', 'fileSystem': 'ext4', 'size': 1024, 'raidLevel': 1},
            {'mountPoint': 'swap', 'fileSystem': 'swap', 'size': 4096},
            {'mountPoint': '/', 'fileSystem': 'ext4', 'size': 0, 'raidLevel': 1, 'extras': {'lv': {'name': 'root'}}},
            {'mountPoint': '/data', 'fileSystem': 'xfs', 'size': 0, 'raidLevel': 5, 'extras': {'zp': {'name': 'tank'}}},
        ],
    },
}]


def errors_of(func, *args, **kwargs):
    with pytest.raises(ValidationError) as exc:
        func(*args, **kwargs)
    return exc.value.extra['errors'], exc.value.msg


def with_custom(base, **changes):
    payload = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            payload['customizations'].pop(key, None)
        else:
            payload['customizations'][key] = value
    return payload


# ------------------------------------------------------------------ the guides' payloads

def test_guide_byoi_payload():
    args = P.ovh_payload(GUIDE_BYOI)
    assert args['byol_installer'] == 'byoi'
    assert args['byol_hostname'] == 'mon-tux'
    assert args['byol_image_url'].endswith('debian-11-generic-amd64-20230124-1270.raw')
    assert args['byol_image_type'] == 'raw'
    assert args['byol_ssh_keys'] == [RSA_KEY]
    assert args['byol_efi_bootloader_path'] == '\\efi\\debian\\grubx64.efi'
    assert args['byol_image_checksum'] == SHA512
    assert args['byol_image_checksum_type'] == 'sha512'
    assert args['byol_http_headers'] == {'Authorization': 'Basic bG9naW46cGFzc3dvcmQ='}
    # user data passed through unchanged (byol_configdrive decodes base64)
    assert args['byol_user_data'] == USER_DATA_B64
    assert base64.b64decode(args['byol_user_data']).startswith(b'#cloud-config\n')
    assert args['byol_disk_group_id'] == 0
    assert args['byol_layout'] is None
    assert args['byol_disk_count'] is None


def test_guide_byol_payload_gets_default_layout():
    args = P.ovh_payload(GUIDE_BYOL)
    assert args['byol_installer'] == 'byol'
    assert args['byol_hostname'] == 'myHostname'
    assert args['byol_image_type'] == 'qcow2'
    assert args['byol_user_data'].startswith('#!/bin/bash\n')
    assert args['byol_layout'] == [{'mount_point': '/', 'fs_type': 'ext4', 'size': 0, 'raid_level': 1}]
    assert args['byol_efi_bootloader_path'] is None


def test_byol_storage_layout_translated():
    payload = copy.deepcopy(GUIDE_BYOL)
    payload['storage'] = copy.deepcopy(SPEC_STORAGE)
    args = P.ovh_payload(payload)
    assert args['byol_disk_group_id'] == 1
    assert args['byol_disk_count'] == 2
    assert args['byol_layout'] == [
        {'mount_point': '/boot', 'fs_type': 'ext4', 'size': 1024, 'raid_level': 1},
        {'mount_point': 'swap', 'fs_type': 'swap', 'size': 4096},
        {'mount_point': '/', 'fs_type': 'ext4', 'size': 0, 'raid_level': 1, 'lv_name': 'root'},
        {'mount_point': '/data', 'fs_type': 'xfs', 'size': 0, 'raid_level': 5, 'zpool_name': 'tank'},
    ]


def test_layout_size_defaults_to_fill_and_strings_become_ints():
    payload = copy.deepcopy(GUIDE_BYOL)
    payload['storage'] = [{'diskGroupId': '2', 'partitioning': {'disks': '1', 'layout': [
        {'mountPoint': '/', 'fileSystem': 'ext4', 'raidLevel': '0'}]}}]
    args = P.ovh_payload(payload)
    assert args['byol_layout'] == [{'mount_point': '/', 'fs_type': 'ext4', 'size': 0, 'raid_level': 0}]
    assert args['byol_disk_group_id'] == 2
    assert args['byol_disk_count'] == 1


@pytest.mark.parametrize('name', ['byoi.json', 'byol.json'])
def test_docs_examples_translate(name):
    with open(os.path.join(REPO, 'docs', 'examples', name)) as f:
        payload = json.load(f)
    args = P.ovh_payload(payload, installer=name.split('.')[0], boot_mode='uefi')
    assert args['byol_installer'] == name.split('.')[0]
    assert args['byol_image_url'].startswith('https://')
    assert args['byol_efi_bootloader_path'] == '\\efi\\debian\\grubx64.efi'
    assert args['byol_disk_group_id'] == 1
    if name == 'byol.json':
        assert [i['mount_point'] for i in args['byol_layout']] == ['/boot', 'swap', '/']
        assert args['byol_layout'][2]['lv_name'] == 'root'


# ------------------------------------------------------------------ efiBootloaderPath and userMetadata

def test_efi_loader_in_user_metadata_mapping():
    payload = with_custom(GUIDE_BYOI, efiBootloaderPath=None)
    payload['userMetadata'] = {'efiBootloaderPath': '\\efi\\ubuntu\\grubx64.efi'}
    assert P.ovh_payload(payload, boot_mode='uefi')['byol_efi_bootloader_path'] == '\\efi\\ubuntu\\grubx64.efi'


def test_efi_loader_in_user_metadata_key_value_list():
    payload = with_custom(GUIDE_BYOI, efiBootloaderPath=None)
    payload['userMetadata'] = [{'key': 'efiBootloaderPath', 'value': '\\efi\\FreeBSD\\loader.efi'}]
    assert P.ovh_payload(payload, boot_mode='uefi')['byol_efi_bootloader_path'] == '\\efi\\FreeBSD\\loader.efi'


def test_efi_loader_in_both_places_must_agree():
    payload = copy.deepcopy(GUIDE_BYOI)
    payload['userMetadata'] = {'efiBootloaderPath': '\\efi\\ubuntu\\grubx64.efi'}
    errors, _msg = errors_of(P.ovh_payload, payload)
    assert errors == ['efiBootloaderPath is given both in customizations and in userMetadata with different values; '
                      'give it once']
    payload['userMetadata'] = {'efiBootloaderPath': '\\efi\\debian\\grubx64.efi'}
    assert P.ovh_payload(payload)['byol_efi_bootloader_path'] == '\\efi\\debian\\grubx64.efi'


def test_user_metadata_bad_shapes():
    payload = copy.deepcopy(GUIDE_BYOI)
    payload['userMetadata'] = [{'key': 'efiBootloaderPath'}]
    errors, _msg = errors_of(P.ovh_payload, payload)
    assert errors == ['userMetadata[0] must be an object with exactly the fields key and value']
    payload['userMetadata'] = 'x'
    errors, _msg = errors_of(P.ovh_payload, payload)
    assert errors == ['userMetadata must be an object or a list of {key, value} objects']
    payload['userMetadata'] = {'efiBootLoaderPath': 'x'}
    errors, _msg = errors_of(P.ovh_payload, payload)
    assert errors[0].startswith('Unknown field userMetadata.efiBootLoaderPath (did you mean efiBootloaderPath?)')


@pytest.mark.parametrize('boot_mode, ok', [('uefi', False), ('legacy', True), ('auto', True)])
def test_byoi_efi_loader_required_except_legacy(boot_mode, ok):
    payload = with_custom(GUIDE_BYOI, efiBootloaderPath=None)
    if ok:
        assert P.ovh_payload(payload, boot_mode=boot_mode)['byol_efi_bootloader_path'] is None
    else:
        errors, _msg = errors_of(P.ovh_payload, payload, boot_mode=boot_mode)
        assert errors == ['efiBootloaderPath (byol_efi_bootloader_path) is required to install an image on a UEFI '
                          'server, for example \\efi\\debian\\grubx64.efi']


def test_byol_efi_loader_optional_on_uefi():
    assert P.ovh_payload(GUIDE_BYOL, boot_mode='uefi')['byol_efi_bootloader_path'] is None


@pytest.mark.parametrize('loader, message', [
    ('\\efi\\debian\n\\grubx64.efi', 'efiBootloaderPath must be a single-line path such as \\efi\\debian\\grubx64.efi'),
    ('   ', 'efiBootloaderPath must be a single-line path such as \\efi\\debian\\grubx64.efi'),
    ('\\efi\\..\\..\\x.efi', "efiBootloaderPath '\\\\efi\\\\..\\\\..\\\\x.efi' must not contain .. components"),
])
def test_bad_efi_loader(loader, message):
    errors, _msg = errors_of(P.ovh_payload, with_custom(GUIDE_BYOI, efiBootloaderPath=loader))
    assert errors == [message]


# ------------------------------------------------------------------ required fields and the guide's messages

@pytest.mark.parametrize('csum, ctype', [(SHA512, None), (None, 'sha512')])
def test_checksum_pair_rule_guide_message(csum, ctype):
    payload = with_custom(GUIDE_BYOI, imageCheckSum=csum, imageCheckSumType=ctype)
    assert ('imageCheckSum' in payload['customizations']) != ('imageCheckSumType' in payload['customizations'])
    errors, msg = errors_of(P.ovh_payload, payload)
    assert msg == 'Please provide checkSum AND checkSumType or none of them'
    assert errors == [P.CHECKSUM_PAIR_MSG]
    # same rule for BYOL
    payload['operatingSystem'] = 'byolinux_64'
    for key in ('imageType', 'efiBootloaderPath'):
        payload['customizations'].pop(key)
    _errors, msg = errors_of(P.ovh_payload, payload)
    assert msg == 'Please provide checkSum AND checkSumType or none of them'


def test_no_checksum_at_all_is_fine():
    payload = with_custom(GUIDE_BYOI, imageCheckSum=None, imageCheckSumType=None)
    args = P.ovh_payload(payload)
    assert args['byol_image_checksum'] is None and args['byol_image_checksum_type'] is None


@pytest.mark.parametrize('ctype, csum, message', [
    ('crc32', 'abcd', "imageCheckSumType 'crc32' is not supported: use md5, sha1, sha256 or sha512"),
    ('sha256', SHA512, 'imageCheckSum has 128 hex digits but a sha256 digest has 64'),
    ('md5', 'z' * 32, 'imageCheckSum must be a hexadecimal md5 digest'),
])
def test_checksum_values(ctype, csum, message):
    errors, _msg = errors_of(P.ovh_payload, with_custom(GUIDE_BYOI, imageCheckSum=csum, imageCheckSumType=ctype))
    assert errors == [message]


def test_checksum_type_and_digest_normalised():
    args = P.ovh_payload(with_custom(GUIDE_BYOI, imageCheckSum=' ' + SHA512.upper() + ' ', imageCheckSumType='SHA512'))
    assert args['byol_image_checksum'] == SHA512
    assert args['byol_image_checksum_type'] == 'sha512'


@pytest.mark.parametrize('installer, missing, message', [
    ('byoi', 'imageURL', 'imageURL (byol_image_url) is required'),
    ('byoi', 'imageType', 'imageType (byol_image_type) is required: qcow2 or raw'),
    ('byol', 'imageURL', 'imageURL (byol_image_url) is required'),
])
def test_required_fields_per_installer(installer, missing, message):
    base = GUIDE_BYOI if installer == 'byoi' else GUIDE_BYOL
    errors, _msg = errors_of(P.ovh_payload, with_custom(base, **{missing: None}))
    assert errors == [message]


def test_byol_needs_no_image_type_but_checks_a_given_one():
    assert P.ovh_payload(with_custom(GUIDE_BYOL, imageType='raw'))['byol_image_type'] == 'raw'
    errors, _msg = errors_of(P.ovh_payload, with_custom(GUIDE_BYOL, imageType='vmdk'))
    assert errors == ["imageType 'vmdk' is not supported: use qcow2 or raw"]


def test_everything_reported_at_once():
    payload = with_custom(GUIDE_BYOI, imageType=None, imageCheckSumType=None, hostname='-bad-', imageUrl='x')
    errors, msg = errors_of(P.ovh_payload, payload)
    assert len(errors) == 4
    assert errors[0].startswith('Unknown field customizations.imageUrl (did you mean imageURL?)')
    assert 'imageType (byol_image_type) is required: qcow2 or raw' in errors
    assert P.CHECKSUM_PAIR_MSG in errors
    assert msg == '; '.join(errors)


# ------------------------------------------------------------------ unknown fields

@pytest.mark.parametrize('where, key, message_start', [
    ('top', 'installationTemplate', 'Unknown field installationTemplate; allowed fields here: operatingSystem'),
    ('top', 'Customizations', 'Unknown field Customizations (did you mean customizations?)'),
    ('custom', 'imageUrl', 'Unknown field customizations.imageUrl (did you mean imageURL?)'),
    ('custom', 'imageChecksum', 'Unknown field customizations.imageChecksum (did you mean imageCheckSum?)'),
    ('custom', 'postInstallationScript', 'Unknown field customizations.postInstallationScript; allowed fields here'),
])
def test_unknown_fields_are_named(where, key, message_start):
    payload = copy.deepcopy(GUIDE_BYOI)
    if where == 'top':
        payload[key] = {}
    else:
        payload['customizations'][key] = 'x'
    errors, _msg = errors_of(P.ovh_payload, payload)
    assert len(errors) == 1
    assert errors[0].startswith(message_start)


@pytest.mark.parametrize('mutate, message_start', [
    (lambda s: s[0].update(diskGroupID=1), 'Unknown field storage[0].diskGroupID (did you mean diskGroupId?)'),
    (lambda s: s[0]['partitioning'].update(disk=2), 'Unknown field storage[0].partitioning.disk (did you mean disks?)'),
    (lambda s: s[0]['partitioning']['layout'][0].update(filesystem='ext4'),
     'Unknown field storage[0].partitioning.layout[0].filesystem (did you mean fileSystem?)'),
    (lambda s: s[0]['partitioning']['layout'][2]['extras'].update(lvm={}),
     'Unknown field storage[0].partitioning.layout[2].extras.lvm (did you mean lv?)'),
    (lambda s: s[0]['partitioning']['layout'][2]['extras']['lv'].update(size=3),
     'Unknown field storage[0].partitioning.layout[2].extras.lv.size'),
])
def test_unknown_storage_fields_are_named(mutate, message_start):
    payload = copy.deepcopy(GUIDE_BYOL)
    payload['storage'] = copy.deepcopy(SPEC_STORAGE)
    mutate(payload['storage'])
    errors, _msg = errors_of(P.ovh_payload, payload)
    assert len(errors) == 1, errors
    assert errors[0].startswith(message_start)


# ------------------------------------------------------------------ operatingSystem and installer

@pytest.mark.parametrize('osname, message', [
    (None, "operatingSystem must be byoi_64 or byolinux_64, got None"),
    ('debian12_64', "operatingSystem must be byoi_64 or byolinux_64, got 'debian12_64'"),
    ('boylinux_64', "operatingSystem must be byoi_64 or byolinux_64, got 'boylinux_64' (did you mean byolinux_64?)"),
])
def test_operating_system(osname, message):
    payload = copy.deepcopy(GUIDE_BYOL)
    payload['operatingSystem'] = osname
    _errors, msg = errors_of(P.ovh_payload, payload)
    assert msg == message


def test_payload_must_be_a_mapping():
    _errors, msg = errors_of(P.ovh_payload, ['byoi_64'])
    assert msg == 'The install request must be an object (OVHcloud reinstall payload), got list'


def test_installer_mismatch():
    errors, _msg = errors_of(P.ovh_payload, GUIDE_BYOL, installer='byoi')
    assert errors[0].startswith('This payload is for byol (operatingSystem byolinux_64) but the byoi installer was asked for')


# ------------------------------------------------------------------ storage

def test_hardware_raid_refused_with_reason():
    payload = copy.deepcopy(GUIDE_BYOI)
    payload['storage'] = [{'diskGroupId': 1, 'hardwareRaid': [{'raidLevel': 1, 'disks': 2, 'arrays': 1}]}]
    errors, _msg = errors_of(P.ovh_payload, payload)
    assert len(errors) == 1
    assert errors[0].startswith('storage[0].hardwareRaid is not supported: configuring a hardware RAID controller needs '
                                "the vendor's own tools")
    assert 'seen here as one disk, which you select with diskGroupId' in errors[0]
    payload['storage'][0]['hardwareRaid'] = []   # empty: nothing asked for
    assert P.ovh_payload(payload)['byol_disk_group_id'] == 1


def test_byoi_refuses_layout_and_several_disks():
    payload = copy.deepcopy(GUIDE_BYOI)
    payload['storage'] = copy.deepcopy(SPEC_STORAGE)
    errors, _msg = errors_of(P.ovh_payload, payload)
    assert errors == [
        'storage[0].partitioning.layout is not used by byoi_64: the image carries its own partition table '
        '(use byolinux_64 for a custom layout)',
        'byoi_64 writes the image onto one disk; partitioning.disks must be 1 or absent, got 2']


def test_several_storage_entries_refused():
    payload = copy.deepcopy(GUIDE_BYOL)
    payload['storage'] = [{'diskGroupId': 1}, {'diskGroupId': 2}]
    errors, _msg = errors_of(P.ovh_payload, payload)
    assert errors == ['storage has 2 entries; one entry (one disk group) is supported per reinstall']


@pytest.mark.parametrize('item, message', [
    ({'fileSystem': 'ext4'}, 'storage[0].partitioning.layout[0].mountPoint is required'),
    ({'mountPoint': '/'}, 'storage[0].partitioning.layout[0].fileSystem is required'),
    ({'mountPoint': 'var', 'fileSystem': 'ext4'}, "layout[0].mount_point 'var' must be an absolute path (start with /) or swap"),
    ({'mountPoint': '/srv/../etc', 'fileSystem': 'ext4'}, "layout[0].mount_point '/srv/../etc' must not contain . or .. components"),
    ({'mountPoint': '/', 'fileSystem': 'ntfs'},
     "layout[0]: fileSystem 'ntfs' is not supported; use one of btrfs, ext3, ext4, swap, vfat, xfs, zfs"),
    ({'mountPoint': '/', 'fileSystem': 'ext4', 'size': -1},
     'layout[0].size -1 must be a whole number of MiB (0 = fill the remaining space)'),
    ({'mountPoint': '/', 'fileSystem': 'ext4', 'size': '1G'},
     "layout[0].size '1G' must be a whole number of MiB (0 = fill the remaining space)"),
    ({'mountPoint': '/', 'fileSystem': 'ext4', 'raidLevel': 4}, 'layout[0]: raidLevel 4 is not one of 0, 1, 5, 6, 7, 10'),
    ({'mountPoint': '/', 'fileSystem': 'ext4', 'extras': {'lv': {'name': 'a'}, 'zp': {'name': 'b'}}},
     'layout[0]: extras.lv and extras.zp exclude each other'),
    ({'mountPoint': '/', 'fileSystem': 'ext4', 'extras': {'lv': {'name': 'bad name'}}},
     "layout[0].lv_name 'bad name' must not contain whitespace, control or format characters (U+0020)"),
    ({'mountPoint': '/', 'fileSystem': 'ext4', 'extras': {'lv': {'name': 'root_tmeta'}}},
     "layout[0].lv_name 'root_tmeta' is reserved by LVM: a logical volume may not be called . or .., begin with "
     'snapshot or pvmove, nor contain _cdata, _cmeta, _corig, _cpool, _cvol, _dmeta, _imeta, _iorig, _mimage, _mlog, '
     '_pmspare, _rimage, _rmeta, _tdata, _tmeta, _vdata, _vorigin, _wcorig (lvm(8), VALID NAMES)'),
    ({'mountPoint': '/', 'fileSystem': 'zfs', 'extras': {'zp': {'name': '1pool'}}},
     "layout[0].zpool_name '1pool' is not a valid ZFS pool name: start with a letter; letters, digits, _ . : - only, "
     'at most 255'),
    ({'mountPoint': '/', 'fileSystem': 'ext4', 'extras': {'lv': {}}}, 'storage[0].partitioning.layout[0].extras.lv.name is required'),
    ({'mountPoint': '/', 'fileSystem': 'ext4', 'extras': {'lv': 'root'}},
     'storage[0].partitioning.layout[0].extras.lv must be an object with a name'),
])
def test_layout_item_errors(item, message):
    payload = copy.deepcopy(GUIDE_BYOL)
    payload['storage'] = [{'partitioning': {'layout': [item]}}]
    errors, _msg = errors_of(P.ovh_payload, payload)
    assert message in errors, errors


@pytest.mark.parametrize('storage, message', [
    ({'diskGroupId': 1}, 'storage must be a list'),
    ([{'diskGroupId': -1}], 'diskGroupId -1 must be a whole number, 0 or more (0 = the default group)'),
    ([{'partitioning': {'disks': 0}}], 'partitioning.disks 0 must be a whole number, 1 or more'),
    ([{'partitioning': {'layout': {}}}], 'storage[0].partitioning.layout must be a list'),
    ([{'partitioning': []}], 'storage[0].partitioning must be an object'),
    (['x'], 'storage[0] must be an object'),
])
def test_storage_shape_errors(storage, message):
    payload = copy.deepcopy(GUIDE_BYOL)
    payload['storage'] = storage
    errors, _msg = errors_of(P.ovh_payload, payload)
    assert message in errors, errors


# ------------------------------------------------------------------ hostnames, keys, headers, URL, metadata

@pytest.mark.parametrize('name', ['mon-tux', 'myHostname', 'web1.example.net', 'a', 'x' * 63, 'a.b'])
def test_good_hostnames(name):
    assert P.check_hostname(name) == []


@pytest.mark.parametrize('name, fragment', [
    ('-bad', "label '-bad'"), ('bad-', "label 'bad-'"), ('under_score', "label 'under_score'"),
    ('x' * 64, 'label'), ('a..b', "label ''"), ('host name', 'whitespace'), ('host\nname', 'whitespace'),
    ('', 'non-empty'), ('.'.join(['abc'] * 64), 'at most 253'), ('a.b.', "label ''"), ('host\n', 'U+000A'),
])
def test_bad_hostnames(name, fragment):
    problems = P.check_hostname(name)
    assert len(problems) == 1 and fragment in problems[0], problems


def test_bad_hostname_in_payload():
    errors, _msg = errors_of(P.ovh_payload, with_custom(GUIDE_BYOI, hostname='mon_tux'))
    assert errors == ["hostname 'mon_tux' is not a valid RFC 1123 host name: every dot-separated label must be 1-63 "
                      "characters of letters, digits and hyphens, not starting or ending with a hyphen (bad label 'mon_tux')"]


def test_several_ssh_keys_one_per_line():
    args = P.ovh_payload(with_custom(GUIDE_BYOI, sshKey=RSA_KEY + '\n' + ED_KEY + '\n'))
    assert args['byol_ssh_keys'] == [RSA_KEY, ED_KEY]


@pytest.mark.parametrize('key, fragment', [
    ('ssh-rsa', 'expected "<type> <base64> [comment]"'),
    ('ssh-foo AAAA', "unknown key type 'ssh-foo'"),
    ('ssh-rsa AAA!', 'not valid base64'),
    ('ssh-rsa ' + ED_KEY.split()[1], 'does not hold a ssh-rsa key'),
    ('ssh-rsa AAAAB3NzaC1yc2EAAAADAQAB\nssh-rsa', None),   # split into two lines -> second is bad
])
def test_bad_ssh_keys(key, fragment):
    errors, _msg = errors_of(P.ovh_payload, with_custom(GUIDE_BYOI, sshKey=key))
    if fragment:
        assert len(errors) == 1 and fragment in errors[0], errors
    else:
        assert any(e.startswith('sshKey[1] ') for e in errors), errors


def test_ssh_key_with_newline_in_list_refused():
    problems = P.check_ssh_key(RSA_KEY + '\n', 0)
    assert problems == ['sshKey[0] must be exactly one line: give one key per line or list item']


@pytest.mark.parametrize('headers, message', [
    ({'Bad Header': 'x'}, "HTTP header name 'Bad Header' is not valid"),
    ({'X-Token': 'secret\r\nX-Evil: 1'}, 'HTTP header X-Token: its value may hold only printable ASCII or Latin-1'),
    ({'X-Token': 'secret\n'}, 'HTTP header X-Token: its value may hold only printable ASCII or Latin-1'),
    ({'X-Token': 'secret\u202e'}, 'HTTP header X-Token: its value may hold only printable ASCII or Latin-1'),
    ({'Host': 'evil.example.net'}, 'HTTP header Host is set by the module and may not be given'),
    ({'X-Token': ' secret'}, 'HTTP header X-Token: its value must not start or end with whitespace'),
    ({'X-Token': {'a': 1}}, 'HTTP header X-Token must have a string value'),
    ({'X-Token': 'a', 'x-token': 'b'}, 'httpHeaders names the header x-token twice (as X-Token and x-token; header names '
                                       'are case-insensitive)'),
    ('Authorization: x', 'customizations.httpHeaders must be an object mapping header names to values'),
])
def test_bad_headers_never_show_values(headers, message):
    errors, msg = errors_of(P.ovh_payload, with_custom(GUIDE_BYOI, httpHeaders=headers))
    assert any(e.startswith(message) for e in errors), errors
    assert 'secret' not in msg


def test_headers_as_key_value_list():
    args = P.ovh_payload(with_custom(GUIDE_BYOI, httpHeaders=[{'key': 'Authorization', 'value': 'Bearer abc'}]))
    assert args['byol_http_headers'] == {'Authorization': 'Bearer abc'}


@pytest.mark.parametrize('url, fragment', [
    ('ftp://example.com/x.raw', 'must start with http://, https:// or file://'),
    ('example.com/x.raw', 'must start with http://, https:// or file://'),
    ('https://example.com/x y.raw', 'contains whitespace or control characters'),
    ('https://example.com/x.raw\n', 'contains whitespace or control characters'),
    ('file://relative/x.raw', 'must be file:///absolute/path'),
    ('https://user:pw@example.com/x.raw', 'must not contain credentials'),
])
def test_bad_urls(url, fragment):
    errors, msg = errors_of(P.ovh_payload, with_custom(GUIDE_BYOI, imageURL=url))
    assert len(errors) == 1 and fragment in errors[0]
    assert 'pw@' not in msg or fragment != 'must not contain credentials'


def test_file_url_accepted():
    assert P.ovh_payload(with_custom(GUIDE_BYOI, imageURL='file:///srv/images/d.raw'))['byol_image_url'] == \
        'file:///srv/images/d.raw'


def test_metadata_and_user_data_checks():
    args = P.ovh_payload(with_custom(GUIDE_BYOI, configDriveMetadata={'role': 'web', 'n': 3}))
    assert args['byol_meta_data'] == {'role': 'web', 'n': 3}
    errors, _msg = errors_of(P.ovh_payload, with_custom(GUIDE_BYOI, configDriveMetadata={'role': ['web']}))
    assert errors == ["configDriveMetadata['role'] must be a string (or a number/boolean), not list; OpenStack metadata "
                      'values are strings']
    errors, _msg = errors_of(P.ovh_payload, with_custom(GUIDE_BYOI, configDriveMetadata='role=web'))
    assert errors == ['configDriveMetadata must be a mapping of key/value strings']
    errors, msg = errors_of(P.ovh_payload, with_custom(GUIDE_BYOI, configDriveUserData='#!/bin/sh\n' + 'x' * (1024 * 1024)))
    assert errors == ['configDriveUserData is 1048586 bytes; at most 1048576 are accepted']
    assert 'xxxx' not in msg
    errors, _msg = errors_of(P.ovh_payload, with_custom(GUIDE_BYOI, configDriveUserData=42))
    assert errors == ['configDriveUserData must be a string (#cloud-config, a script, or their base64)']


# ------------------------------------------------------------------ validate_request on snake_case arguments

def test_validate_request_snake_case():
    args = P.validate_request({
        'byol_image_url': 'https://example.com/d.qcow2', 'byol_image_type': 'qcow2',
        'byol_ssh_keys': ED_KEY, 'byol_hostname': '', 'byol_http_headers': {},
        'byol_efi_bootloader_path': '\\EFI\\debian\\grubx64.efi', 'byol_reboot': True,
    }, 'byoi', boot_mode='uefi')
    assert args['byol_ssh_keys'] == [ED_KEY]
    assert args['byol_hostname'] is None and args['byol_http_headers'] is None
    assert args['byol_reboot'] is True          # unknown keys passed through
    assert args['byol_installer'] == 'byoi'


@pytest.mark.parametrize('checksum,checksum_type', [
    ('sha256:https://example.com/v1/SHA256SUMS', ''), ('https://example.com/v1/SHA256SUMS', 'SHA256')])
def test_validate_request_checksum_file_url(checksum, checksum_type):
    """The roles' byol_image_checksum as get_url takes it: the URL is kept as it is (not lower-cased) with its
    type, for byol_image_burn to fetch."""
    args = P.validate_request({
        'byol_image_url': 'https://example.com/v1/D.qcow2', 'byol_image_type': 'qcow2',
        'byol_image_checksum': checksum, 'byol_image_checksum_type': checksum_type,
    }, 'byol')
    assert args['byol_image_checksum'] == 'https://example.com/v1/SHA256SUMS'
    assert args['byol_image_checksum_type'] == 'sha256'


def test_validate_request_bad_installer():
    _errors, msg = errors_of(P.validate_request, {}, 'windows')
    assert msg == "installer must be byoi or byol, got 'windows'"


def test_translate_only_keeps_present_fields():
    args = P.translate({'operatingSystem': 'byolinux_64', 'customizations': {'imageURL': 'https://e/x.qcow2'}})
    assert args == {'byol_installer': 'byol', 'byol_image_url': 'https://e/x.qcow2'}

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The post-install report (plugins/filter/byol_report.py): built from registered results, never a secret in it."""

from __future__ import annotations

import json

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.baremetal.byol.plugins.filter.byol_report import FilterModule, build_report, redact_url

AUTH = 'Basic c2VjcmV0LXVzZXI6czNjcjN0LXBhc3N3b3Jk'
USER_DATA = '#cloud-config\npassword: user-data-s3cret-pw\n'
HOOK_TOKEN = 'hook-env-s3cret'


def results():
    """What the byol role registers for a RAID 1 + LVM install on two disks (trimmed to what matters)."""
    request = {'byol_image_url': 'https://robot:url-s3cret@images.example.net/debian-12.qcow2?token=query-s3cret',
               'byol_image_type': 'qcow2', 'byol_image_checksum': 'ab' * 64, 'byol_image_checksum_type': 'sha512',
               'byol_http_headers': {'Authorization': AUTH}, 'byol_user_data': USER_DATA, 'byol_hostname': 'web1.example.net'}
    preflight = {'changed': False, 'boot_mode': 'uefi', 'targets': ['/dev/sda', '/dev/sdb'],
                 'target_disks': [{'path': '/dev/sda', 'size': 480103981056, 'type': 'ssd', 'model': 'SAMSUNG MZ7',
                                   'serial': 'S1'},
                                  {'path': '/dev/sdb', 'size': 480103981056, 'type': 'ssd', 'model': 'SAMSUNG MZ7',
                                   'serial': 'S2'}]}
    plan = {'boot_mode': 'uefi', 'table_type': 'gpt',
            'disks': [{'path': d, 'partitions': [
                {'device': d + '1', 'role': 'esp', 'size_mib': 511}, {'device': d + '2', 'role': 'md', 'size_mib': 1024},
                {'device': d + '3', 'role': 'swap', 'size_mib': 4096}, {'device': d + '4', 'role': 'pv', 'size_mib': 400000}]}
                for d in ('/dev/sda', '/dev/sdb')],
            'md_arrays': [{'name': 'md-boot', 'device': '/dev/md/md-boot', 'level': 1, 'members': ['/dev/sda2', '/dev/sdb2'],
                           'capacity_mib': 1024},
                          {'name': 'md-vg', 'device': '/dev/md/md-vg', 'level': 1, 'members': ['/dev/sda4', '/dev/sdb4'],
                           'capacity_mib': 400000}],
            'volume_groups': [{'name': 'vg', 'pvs': ['/dev/md/md-vg'], 'raid_level': 1}],
            'logical_volumes': [{'vg': 'vg', 'name': 'root', 'device': '/dev/vg/root', 'size_mib': 0, 'mount_point': '/'}],
            'filesystems': [{'device': '/dev/md/md-boot', 'fs_type': 'ext4', 'label': 'boot', 'mount_point': '/boot',
                             'size_mib': 1024},
                            {'device': '/dev/vg/root', 'fs_type': 'ext4', 'label': 'root', 'mount_point': '/'},
                            {'device': '/dev/sda1', 'fs_type': 'vfat', 'label': 'EFI_SYSPART', 'mount_point': '/boot/efi'}],
            'swaps': [{'device': '/dev/sda3', 'label': 'swap1', 'size_mib': 4096},
                      {'device': '/dev/sdb3', 'label': 'swap2', 'size_mib': 4096}]}
    partition = {'changed': True, 'repartitioned': True, 'plan': plan,
                 'devices': {'/dev/md/md-boot': {'uuid': '1111-boot', 'fs_type': 'ext4'},
                             '/dev/vg/root': {'uuid': '2222-root', 'fs_type': 'ext4', 'partuuid': None},
                             '/dev/sda1': {'uuid': 'AB12-CD34', 'fs_type': 'vfat'},
                             '/dev/sda3': {'uuid': '3333-swap', 'fs_type': 'swap'}},
                 'fstab': 'UUID=2222-root / ext4 defaults 0 1\n', 'mdadm_conf': 'ARRAY /dev/md/md-boot\n'}
    invocation = {'module_args': {'http_headers': {'Authorization': AUTH}, 'url': request['byol_image_url']}}
    stage = {'changed': False, 'staged': True, 'staged_path': '/dev/shm/x', 'seconds': 21.5, 'checksum': 'ab' * 64,
             'checksum_type': 'sha512', 'invocation': invocation}
    image = {'changed': True, 'seconds': 40.25, 'checksum': 'ab' * 64, 'checksum_type': 'sha512', 'filesystem': 'ext4',
             'attach_method': 'loop', 'reason': 'not written yet', 'msg': 'Copied %s' % request['byol_image_url'],
             'invocation': invocation}
    configdrive = {'changed': True, 'device': '/dev/sda', 'instance_id': 'abcd-1234', 'user_data_source': 'plain',
                   'partition': {'action': 'create', 'device': '/dev/sda5', 'number': 5, 'size_mib': 64},
                   'meta_data': {'hostname': 'web1.example.net', 'public_keys': {'k': 'ssh-ed25519 AAAA'}},
                   'invocation': {'module_args': {'user_data': USER_DATA}}}
    hook = {'changed': True, 'ran': True, 'rc': 0, 'duration': 98.7, 'digest': 'sha512:' + 'ab' * 64,
            'log': '/var/log/byol/make_image_bootable.log', 'stdout': 'token is %s' % HOOK_TOKEN,
            'invocation': {'module_args': {'environment': {'TOKEN': HOOK_TOKEN}}}}
    bootorder = {'changed': True, 'boot_mode': 'uefi',
                 'loaders': [{'disk': '/dev/sda', 'loader': '\\EFI\\debian\\shimx64.efi'},
                             {'disk': '/dev/sdb', 'loader': '\\EFI\\debian\\shimx64.efi'}],
                 'entries': [{'disk': '/dev/sda', 'num': '0003', 'label': 'byol', 'partuuid': 'p-a', 'created': True},
                             {'disk': '/dev/sdb', 'num': '0004', 'label': 'byol (2)', 'partuuid': 'p-b', 'created': True}],
                 'boot_order_after': ['0003', '0004', '0001']}
    return {'host': 'web1', 'installer': 'byol', 'request': request, 'preflight': preflight, 'partition': partition,
            'stage': stage, 'image': image, 'configdrive': configdrive, 'hook': hook, 'bootorder': bootorder,
            'fingerprints': ['256 SHA256:abcDEF web1 (ED25519)', '3072 SHA256:xyz web1 (RSA)']}


def test_report_of_a_raid1_lvm_install():
    report = FilterModule().filters()['byol_report'](results(), '2026-12-07T18:00:00+00:00')
    assert report['host'] == 'web1' and report['installer'] == 'byol' and report['boot_mode'] == 'uefi'
    assert report['disks'][0]['serial'] == 'S1' and report['disks'][1]['table'] == 'gpt'
    assert report['disks'][0]['partitions'][1] == '/dev/sda2 md (1024 MiB)'
    assert [a['device'] for a in report['arrays']] == ['/dev/md/md-boot', '/dev/md/md-vg']
    assert report['volume_groups'] == [{'name': 'vg', 'pvs': ['/dev/md/md-vg'], 'raid_level': 1}]
    fs = dict((f['mount_point'], f) for f in report['filesystems'])
    assert fs['/']['uuid'] == '2222-root' and fs['/boot']['uuid'] == '1111-boot' and fs['/boot/efi']['uuid'] == 'AB12-CD34'
    assert report['swap'][0] == {'device': '/dev/sda3', 'label': 'swap1', 'size_mib': 4096, 'uuid': '3333-swap'}
    assert report['config_drive']['device'] == '/dev/sda5' and report['config_drive']['hostname'] == 'web1.example.net'
    assert [(e['disk'], e['num'], e['loader']) for e in report['boot_entries']] == [
        ('/dev/sda', '0003', '\\EFI\\debian\\shimx64.efi'), ('/dev/sdb', '0004', '\\EFI\\debian\\shimx64.efi')]
    assert report['image'] == {'url': 'https://images.example.net/debian-12.qcow2', 'type': 'qcow2', 'checksum': 'ab' * 64,
                               'checksum_type': 'sha512', 'filesystem': 'ext4', 'attach_method': 'loop',
                               'result': 'not written yet'}
    assert report['hook'] == {'ran': True, 'rc': 0, 'duration': 98.7, 'digest': 'sha512:' + 'ab' * 64,
                              'log': '/var/log/byol/make_image_bootable.log'}
    assert report['host_keys'] == ['256 SHA256:abcDEF web1 (ED25519)', '3072 SHA256:xyz web1 (RSA)']
    assert report['steps'] == [{'step': 'stage (download and check)', 'seconds': 21.5},
                               {'step': 'image (copy files)', 'seconds': 40.25}, {'step': 'hook', 'seconds': 98.7}]
    # plain data: it goes to JSON as it is
    json.dumps(report)


def test_no_secret_reaches_the_report_or_its_table():
    """The payload's Authorization header, user data, URL credentials and query, the hook's environment and output."""
    report = build_report(results(), 'now')
    text = json.dumps(report) + FilterModule().filters()['byol_report_table'](report)
    for secret in (AUTH, 'c2VjcmV0', 'user-data-s3cret-pw', 'cloud-config', 'url-s3cret', 'query-s3cret', HOOK_TOKEN,
                   'Authorization', 'robot'):
        assert secret not in text, secret
    # the table still says what was installed
    assert 'UUID=2222-root' in text and 'SHA256:abcDEF' in text and '/dev/md/md-vg' in text


def test_table():
    table = FilterModule().filters()['byol_report_table'](build_report(results(), '2026-12-07T18:00:00+00:00'))
    lines = table.splitlines()
    assert lines[0] == 'web1: byol install, boot mode uefi, report of 2026-12-07T18:00:00+00:00'
    assert 'image      https://images.example.net/debian-12.qcow2 (qcow2), sha512 ' + 'ab' * 64 in lines
    assert 'raid       /dev/md/md-vg RAID 1 of /dev/sda4 /dev/sdb4, 390.6 GiB' in lines
    assert any(line.startswith('fs         /boot/efi  vfat  /dev/sda1') and line.endswith('UUID=AB12-CD34') for line in lines)
    assert 'time       hook                             98.7 s' in lines
    assert 'host key   256 SHA256:abcDEF web1 (ED25519)' in lines


def test_table_has_no_control_characters():
    data = results()
    data['preflight']['target_disks'][0]['model'] = 'EVIL\x1b]0;owned\x07\x1b[2J\u202e'
    table = FilterModule().filters()['byol_report_table'](build_report(data))
    assert 'EVIL?]0;owned??[2J?' in table and '\x1b' not in table and '\u202e' not in table


def test_byoi_and_skipped_steps():
    data = results()
    data.update(installer='byoi', partition={'skipped': True}, stage={}, hook={'skipped': True, 'changed': False},
                fingerprints=[], image=dict(data['image'], partitions=['/dev/sda1', '/dev/sda2'], partition_table='gpt'))
    report = build_report(data)
    assert report['disks'][0]['use'] == 'whole-disk image' and 'use' not in report['disks'][1]
    assert report['partitions'] == ['/dev/sda1', '/dev/sda2'] and report['image']['partition_table'] == 'gpt'
    assert report['filesystems'] == [] and report['arrays'] == [] and 'hook' not in report and report['host_keys'] == []
    assert report['steps'] == [{'step': 'image (write)', 'seconds': 40.25}]


def test_redact_url_and_bad_input():
    assert redact_url('http://u:p@h/x?y#z') == 'http://h/x' and redact_url('file:///srv/i.raw') == 'file:///srv/i.raw'
    assert redact_url(None) is None
    with pytest.raises(AnsibleFilterError, match='byol_report expects a mapping of registered results, got list'):
        build_report([])
    with pytest.raises(AnsibleFilterError, match='byol_report_table expects the output of byol_report'):
        FilterModule().filters()['byol_report_table']('x')

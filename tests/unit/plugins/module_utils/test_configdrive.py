# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Config drive content, validation and placement (pure)."""

from __future__ import annotations

import base64
import gzip
import json
import uuid

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils import _blockdev as bd
from ansible_collections.baremetal.byol.plugins.module_utils import _configdrive as cd
from ansible_collections.baremetal.byol.plugins.module_utils import _configdrive_writer as w
from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError, ValidationError

ED = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIODy3cSFfXXEP8Z1Ennlec4kWIz7BWbB2uw0DH6zdchL admin@example.net'
EC = ('ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBIMgMo9Fv90RKDZwegQ43peZ7pfpwZ1QW9P8X+80'
      'No5vp3QpgBeKguTtXSwRMq/woOq4k8T9VmOgrOy5RZQ/lt4= ops@example.net')
MIB_S = 2048  # sectors of 512 bytes per MiB


# --- hostname

@pytest.mark.parametrize('name', ['web01', 'web-01.example.net', 'a', '1host', 'x' * 63 + '.example.com'])
def test_hostname_valid(name):
    assert cd.validate_hostname(name) == name


@pytest.mark.parametrize('name', ['', 'bad_host', '-web', 'web-', 'web..example', 'web.example.', 'x' * 64,
                                  'a;reboot', 'web 01', 'web\n01', '.'.join(['abcdefghi'] * 26)])
def test_hostname_invalid(name):
    with pytest.raises(ValidationError) as exc:
        cd.validate_hostname(name)
    assert 'hostname' in exc.value.msg


# --- ssh keys

def test_ssh_keys_valid_normalised_and_deduplicated():
    keys = cd.validate_ssh_keys(['  ' + ED + '  ', EC, ED.replace('admin@example.net', 'other')])
    assert keys == [ED, EC]


def test_ssh_key_single_string_accepted():
    assert cd.validate_ssh_keys(ED) == [ED]


@pytest.mark.parametrize('key, needle', [
    (ED + '\n' + EC, 'exactly one line'),
    ('ssh-ed25519', 'not an OpenSSH public key'),
    ('command="/bin/sh" ' + ED, 'unknown key type'),
    ('ssh-foo AAAA', 'unknown key type'),
    ('ssh-ed25519 AAAA!!!!', 'not valid base64'),
    ('ssh-rsa ' + ED.split()[1], 'does not hold a ssh-rsa key'),
    (ED + ' $(reboot)', 'shell characters'),
    (ED + ' a`id`', 'shell characters'),
    (ED + '\x00', 'one line'),
])
def test_ssh_key_invalid(key, needle):
    with pytest.raises(ValidationError) as exc:
        cd.validate_ssh_keys([key])
    assert needle in exc.value.msg
    assert 'ssh_keys[0]' in exc.value.msg


def test_ssh_key_not_a_string():
    with pytest.raises(ValidationError):
        cd.validate_ssh_keys([{'key': ED}])


# --- meta

def test_meta_converted_to_strings():
    assert cd.validate_meta({'a': 1, 'b': True, 'c': 'x', 'd e:f.g-h_i': ''}) == {
        'a': '1', 'b': 'true', 'c': 'x', 'd e:f.g-h_i': ''}


@pytest.mark.parametrize('meta, needle', [
    ({'k/ey': 'v'}, 'meta_data key'),
    ({'': 'v'}, 'meta_data key'),
    ({'k' * 256: 'v'}, 'meta_data key'),
    ({'k': 'v' * 256}, 'at most 255'),
    ({'k': 'a\nb'}, 'control, format or line-separator characters (U+000A)'),
    ({'k': ['list']}, 'must be a string'),
    ({'k': None}, 'must be a string'),
    (dict(('k%d' % i, 'v') for i in range(129)), 'at most 128'),
    (['k'], 'must be a mapping'),
])
def test_meta_invalid(meta, needle):
    with pytest.raises(ValidationError) as exc:
        cd.validate_meta(meta)
    assert needle in exc.value.msg


def test_meta_limits_exactly_ok():
    meta = dict(('k%03d' % i, 'v' * 255) for i in range(128))
    assert len(cd.validate_meta(meta)) == 128


# --- user data

CLOUD_CONFIG = '#cloud-config\nusers:\n  - name: patient0\nfinal_message: "up after $UPTIME s"\n'


def test_user_data_plain_kept_byte_for_byte():
    text = CLOUD_CONFIG + 'caf\u00e9 \t trailing  \n\n'
    data, how = cd.decode_user_data(text)
    assert how == 'plain' and data == text.encode('utf-8')


def test_user_data_script_plain():
    script = '#!/bin/bash\necho "Hi, sounds like BYOLinux as ostemplate is a success!" >/etc/motd'
    assert cd.decode_user_data(script) == (script.encode(), 'plain')


def test_user_data_base64_decoded_including_ovh_example():
    ovh = ('I2Nsb3VkLWNvbmZpZwpzc2hfYXV0aG9yaXplZF9rZXlzOgogIC0gc3NoLXJzYSBBQUFBQjhkallpdz09IG15c2VsZkBteWRvbWFpbi5uZXQK'
           'CnVzZXJzOgogIC0gbmFtZTogcGF0aWVudDAKICAgIHN1ZG86IEFMTD0oQUxMKSBOT1BBU1NXRDpBTEwKICAgIGdyb3VwczogdXNlcnMsIHN1ZG8K'
           'ICAgIHNoZWxsOiAvYmluL2Jhc2gKICAgIGxvY2tfcGFzc3dkOiBmYWxzZQogICAgc3NoX2F1dGhvcml6ZWRfa2V5czoKICAgICAgLSBzc2gtcnNh'
           'IEFBQUFCOGRqWWl3PT0gbXlzZWxmQG15ZG9tYWluLm5ldApkaXNhYmxlX3Jvb3Q6IGZhbHNlCnBhY2thZ2VzOgogIC0gdmltCiAgLSB0cmVlCmZp'
           'bmFsX21lc3NhZ2U6IFRoZSBzeXN0ZW0gaXMgZmluYWxseSB1cCwgYWZ0ZXIgJFVQVElNRSBzZWNvbmRzCg==')
    data, how = cd.decode_user_data(ovh)
    assert how == 'base64'
    assert data.startswith(b'#cloud-config\nssh_authorized_keys:\n') and b'patient0' in data


def test_user_data_base64_wrapped_lines():
    enc = base64.encodebytes(CLOUD_CONFIG.encode() * 10).decode()   # 76-column lines
    assert '\n' in enc.strip()
    assert cd.decode_user_data(enc) == (CLOUD_CONFIG.encode() * 10, 'base64')


def test_user_data_base64_gzip_kept_binary():
    gz = gzip.compress(CLOUD_CONFIG.encode())
    assert cd.decode_user_data(base64.b64encode(gz).decode()) == (gz, 'base64')


@pytest.mark.parametrize('text', ['abcd', 'true', 'AAAA', 'hello world', 'YWJj=', 'Zm9v\nYmFy!'])
def test_user_data_base64_lookalikes_stay_plain(text):
    # "abcd" is valid base64 but decodes to non-text bytes: it is kept as the plain word
    assert cd.decode_user_data(text) == (text.encode(), 'plain')


def test_user_data_forced_modes():
    assert cd.decode_user_data('abcd', 'base64') == (base64.b64decode('abcd'), 'base64')
    enc = base64.b64encode(CLOUD_CONFIG.encode()).decode()
    assert cd.decode_user_data(enc, 'plain') == (enc.encode(), 'plain')
    with pytest.raises(ValidationError) as exc:
        cd.decode_user_data('#cloud-config', 'base64')
    assert 'not valid base64' in exc.value.msg


def test_user_data_size_limit():
    assert len(cd.decode_user_data('x' * cd.USER_DATA_MAX)[0]) == cd.USER_DATA_MAX
    with pytest.raises(ValidationError) as exc:
        cd.decode_user_data('x' * (cd.USER_DATA_MAX + 1))
    assert '1048577 bytes (as plain text); at most 1048576' in exc.value.msg
    big = base64.b64encode(b'#' * (cd.USER_DATA_MAX + 3)).decode()
    with pytest.raises(ValidationError) as exc:
        cd.decode_user_data(big)
    assert 'after base64 decoding' in exc.value.msg


def test_user_data_none_and_empty():
    assert cd.decode_user_data(None) == (None, None)
    with pytest.raises(ValidationError):
        cd.decode_user_data('')


# --- instance id

def test_instance_id_validation():
    assert cd.validate_instance_id('i-0123.abc:x_y') == 'i-0123.abc:x_y'
    for bad in ('', '../etc', 'a/b', '.', 'x' * 256, 'a b'):
        with pytest.raises(ValidationError):
            cd.validate_instance_id(bad)


def test_derived_instance_id_is_stable_uuid():
    a = cd.derive_instance_id(['4c4c4544-0042', 'S3Z1NB0K', 'web01'])
    assert a == cd.derive_instance_id(['4c4c4544-0042', 'S3Z1NB0K', 'web01'])
    assert uuid.UUID(a).version == 5
    assert a != cd.derive_instance_id(['4c4c4544-0042', 'S3Z1NB0K', 'web02'])
    assert a != cd.derive_instance_id(['other-server', 'S3Z1NB0K', 'web01'])
    # pinned: changing the namespace or the join would give every server a new instance on re-run
    assert cd.derive_instance_id(['', '/dev/sda', 'web01']) == str(
        uuid.uuid5(uuid.uuid5(uuid.NAMESPACE_DNS, 'configdrive.baremetal.byol'), '\n/dev/sda\nweb01'))


def test_instance_id_from_meta():
    assert cd.instance_id_from_meta(b'{"uuid": "abc-1"}') == 'abc-1'
    assert cd.instance_id_from_meta(b'{"uuid": "../x"}') is None
    assert cd.instance_id_from_meta(b'not json') is None
    assert cd.instance_id_from_meta(b'') is None
    assert cd.instance_id_from_meta(b'[]') is None


# --- files

def test_build_files_content():
    files = cd.build_files('id-1', 'web01.example.net', [ED, EC], {'role': 'web'}, b'#cloud-config\n', None, None)
    assert sorted(files) == [cd.META_DATA, cd.USER_DATA, cd.VENDOR_DATA]
    md = json.loads(files[cd.META_DATA])
    assert md == {'uuid': 'id-1', 'hostname': 'web01.example.net', 'name': 'web01', 'meta': {'role': 'web'},
                  'public_keys': {'key-1': ED, 'key-2': EC},
                  'keys': [{'name': 'key-1', 'type': 'ssh', 'data': ED}, {'name': 'key-2', 'type': 'ssh', 'data': EC}]}
    assert files[cd.USER_DATA] == b'#cloud-config\n'
    assert json.loads(files[cd.VENDOR_DATA]) == {}
    # deterministic bytes (idempotence depends on it)
    again = cd.build_files('id-1', 'web01.example.net', [ED, EC], {'role': 'web'}, b'#cloud-config\n', None, None)
    assert again == files
    assert files[cd.META_DATA].endswith(b'}\n')


def test_build_files_minimal_and_network():
    nd = {'links': [], 'networks': [], 'services': []}
    files = cd.build_files('id-1', network_data=nd)
    assert json.loads(files[cd.META_DATA]) == {'uuid': 'id-1', 'meta': {}}
    assert json.loads(files[cd.NETWORK_DATA]) == nd
    assert cd.USER_DATA not in files


def test_compare_and_diff_redacts_user_data():
    desired = {cd.META_DATA: b'{"new": 1}\n', cd.USER_DATA: b'secret-new', cd.VENDOR_DATA: b'{}\n'}
    existing = {cd.META_DATA: b'{"old": 1}\n', cd.USER_DATA: b'secret-old', cd.VENDOR_DATA: b'{}\n',
                cd.NETWORK_DATA: b'{}\n'}
    status = cd.compare_files(desired, existing)
    assert status == {cd.META_DATA: 'updated', cd.USER_DATA: 'updated', cd.VENDOR_DATA: 'unchanged',
                      cd.NETWORK_DATA: 'removed'}
    diff = cd.build_diff(desired, existing, status)
    assert [d['before_header'].split()[0] for d in diff] == [cd.META_DATA, cd.USER_DATA, cd.NETWORK_DATA]
    text = json.dumps(diff)
    assert 'secret' not in text and '10 bytes, hidden' in text
    assert diff[0]['before'] == '{"old": 1}\n' and diff[0]['after'] == '{"new": 1}\n'
    assert diff[2]['after'] == '' and 'absent' in diff[2]['after_header']
    shown = json.dumps(cd.build_diff(desired, existing, status, show_user_data=True))
    assert 'secret-new' in shown and 'secret-old' in shown


def test_compare_fresh_drive():
    desired = cd.build_files('id')
    assert set(cd.compare_files(desired, {}).values()) == {'created'}
    assert cd.compare_files(desired, dict(desired)) == dict((k, 'unchanged') for k in desired)


def test_binary_user_data_diff_opt_in():
    diff = cd.build_diff({cd.USER_DATA: b'\x1f\x8b\x00\xff'}, {}, {cd.USER_DATA: 'created'}, show_user_data=True)
    assert diff[0]['after'] == '<binary: 4 bytes>\n'


def test_network_data_validation():
    ok = {'links': [{'id': 'eth0', 'type': 'phy'}], 'networks': [{'id': 'n', 'type': 'ipv4_dhcp', 'link': 'eth0'}]}
    assert cd.validate_network_data(ok) is ok
    for bad, needle in [
        ('auto2', 'dictionary'),
        ({'link': []}, 'unknown top-level keys link'),
        ({'links': {}}, 'must be a list'),
        ({'links': [{'id': 'eth0'}]}, 'needs at least'),
        ({'links': [], 'networks': [{'type': 'ipv4_dhcp', 'link': 'eth9'}]}, 'not in network_data.links'),
    ]:
        with pytest.raises(ValidationError) as exc:
            cd.validate_network_data(bad)
        assert needle in exc.value.msg


# --- network_data from the rescue system (real `ip -j` shapes)

ADDRS = [
    {'ifindex': 1, 'ifname': 'lo', 'flags': ['LOOPBACK', 'UP', 'LOWER_UP'], 'mtu': 65536, 'link_type': 'loopback',
     'address': '00:00:00:00:00:00', 'addr_info': [{'family': 'inet', 'local': '127.0.0.1', 'prefixlen': 8, 'scope': 'host'}]},
    {'ifindex': 2, 'ifname': 'eno1', 'flags': ['BROADCAST', 'MULTICAST', 'UP', 'LOWER_UP'], 'mtu': 1500,
     'operstate': 'UP', 'link_type': 'ether', 'address': '0C:42:A1:00:00:01',
     'addr_info': [{'family': 'inet', 'local': '203.0.113.10', 'prefixlen': 24, 'scope': 'global'},
                   {'family': 'inet6', 'local': '2001:db8:1::10', 'prefixlen': 64, 'scope': 'global'},
                   {'family': 'inet6', 'local': 'fe80::e42:a1ff:fe00:1', 'prefixlen': 64, 'scope': 'link'}]},
    {'ifindex': 3, 'ifname': 'eno2', 'flags': ['BROADCAST', 'MULTICAST', 'UP', 'LOWER_UP'], 'mtu': 9000,
     'link_type': 'ether', 'address': '0c:42:a1:00:00:02',
     'addr_info': [{'family': 'inet', 'local': '10.1.2.3', 'prefixlen': 16, 'scope': 'global', 'dynamic': True,
                    'valid_life_time': 3600}]},
    {'ifindex': 4, 'ifname': 'eno3', 'flags': ['BROADCAST', 'MULTICAST'], 'mtu': 1500, 'link_type': 'ether',
     'address': '0c:42:a1:00:00:03', 'addr_info': []},
    {'ifindex': 5, 'ifname': 'docker0', 'flags': ['UP'], 'mtu': 1500, 'link_type': 'ether', 'address': '02:42:00:00:00:01',
     'addr_info': [{'family': 'inet', 'local': '172.17.0.1', 'prefixlen': 16, 'scope': 'global'}]},
]
ROUTES = [{'dst': 'default', 'gateway': '203.0.113.1', 'dev': 'eno1', 'flags': []},
          {'dst': '203.0.113.0/24', 'dev': 'eno1', 'protocol': 'kernel', 'scope': 'link', 'prefsrc': '203.0.113.10'}]
ROUTES6 = [{'dst': 'default', 'gateway': 'fe80::1', 'dev': 'eno1', 'flags': []}]


def test_derive_network_static_and_dhcp_by_mac():
    nd = cd.derive_network_data(ADDRS, ROUTES, ROUTES6, ['203.0.113.53'])
    assert nd['links'] == [
        {'id': 'eno1', 'type': 'phy', 'ethernet_mac_address': '0c:42:a1:00:00:01', 'mtu': 1500},
        {'id': 'eno2', 'type': 'phy', 'ethernet_mac_address': '0c:42:a1:00:00:02', 'mtu': 9000},
    ]
    assert nd['networks'] == [
        {'id': 'eno1-net0', 'type': 'ipv4', 'link': 'eno1', 'ip_address': '203.0.113.10', 'netmask': '255.255.255.0',
         'routes': [{'network': '0.0.0.0', 'netmask': '0.0.0.0', 'gateway': '203.0.113.1'}]},
        {'id': 'eno1-net1', 'type': 'ipv6', 'link': 'eno1', 'ip_address': '2001:db8:1::10',
         'netmask': 'ffff:ffff:ffff:ffff:0000:0000:0000:0000',
         'routes': [{'network': '::', 'netmask': '::', 'gateway': 'fe80::1'}]},
        {'id': 'eno2-net0', 'type': 'ipv4_dhcp', 'link': 'eno2'},
    ]
    assert nd['services'] == [{'type': 'dns', 'address': '203.0.113.53'}]
    cd.validate_network_data(nd)


def test_derive_network_dhcp_mode():
    nd = cd.derive_network_data(ADDRS, ROUTES, mode='dhcp')
    assert [n['type'] for n in nd['networks']] == ['ipv4_dhcp', 'ipv4_dhcp']
    assert nd['services'] == []


def test_derive_network_nothing_usable():
    with pytest.raises(ByolError) as exc:
        cd.derive_network_data(ADDRS[:1] + ADDRS[3:4], [])
    assert 'give network_data explicitly' in exc.value.msg


def test_resolv_conf():
    text = '# x\nnameserver 127.0.0.53\nnameserver 213.186.33.99\nnameserver 2001:41d0:3:163::1\nsearch ovh.net\nnameserver 213.186.33.99\n'
    assert cd.parse_resolv_conf(text) == ['213.186.33.99', '2001:41d0:3:163::1']


# --- placement

def gpt(parts, lastlba, total):
    return {'label': 'gpt', 'firstlba': 34, 'lastlba': lastlba, 'sectorsize': 512,
            'partitions': [{'node': '/dev/sda%d' % n, 'start': s, 'size': z, 'name': ''} for n, s, z in parts]}


def dos(parts):
    return {'label': 'dos', 'sectorsize': 512,
            'partitions': [{'node': '/dev/nvme0n1p%d' % n, 'start': s, 'size': z, 'type': '83'} for n, s, z in parts]}


def test_gpt_after_image_relocates_backup_and_uses_the_end():
    total = 1024 * MIB_S              # 1 GiB disk
    img_last = 100 * MIB_S - 34       # the image was made for a 100 MiB disk
    plan = cd.plan_partition(gpt([(1, 2048, 32768), (2, 34816, img_last - 34816 + 1)], img_last, total), total, 512, 64)
    assert plan['action'] == 'create' and plan['relocate_gpt'] is True
    assert plan['number'] == 3
    assert plan['size'] == 64 * MIB_S
    assert plan['start'] % MIB_S == 0
    assert plan['end'] <= total - 34 and total - 34 - plan['end'] < MIB_S
    assert plan['free_mib'] == 924


def test_gpt_first_free_number_is_used():
    total = 1024 * MIB_S
    plan = cd.plan_partition(gpt([(1, 2048, 2048), (3, 4096, 2048)], total - 34, total), total, 512, 64)
    assert plan['number'] == 2 and plan['relocate_gpt'] is False


def test_gpt_exact_reservation_of_byol_partition():
    # byol_partition: 1 MiB for the backup GPT + 64 MiB free; everything MiB aligned
    total = 1024 * MIB_S
    root_end = total - 65 * MIB_S - 1
    plan = cd.plan_partition(gpt([(1, 2048, root_end - 2047)], total - 34, total), total, 512, 64)
    assert plan['start'] == root_end + 1 and plan['size'] == 64 * MIB_S


def test_gpt_exact_unaligned_space_is_used_unaligned():
    total = 1024 * MIB_S
    root_end = total - 34 - 64 * MIB_S    # exactly 64 MiB left, not MiB aligned
    plan = cd.plan_partition(gpt([(1, 2048, root_end - 2047)], total - 34, total), total, 512, 64)
    assert plan['start'] == root_end + 1 and plan['end'] == total - 34


def test_gpt_no_room():
    total = 1024 * MIB_S
    with pytest.raises(ByolError) as exc:
        cd.plan_partition(gpt([(1, 2048, total - 40 * MIB_S)], total - 34, total), total, 512, 64)
    assert 'no room for the 64 MiB config drive: only 38 MiB are free' in exc.value.msg
    assert exc.value.extra['free_mib'] == 38


def test_gpt_4k_sectors():
    total = 1024 * 256                 # 1 GiB of 4096-byte sectors
    plan = cd.plan_partition(gpt([(1, 256, 100 * 256)], 100 * 256 + 300, total), total, 4096, 64)
    assert plan['size'] == 64 * 256 and plan['end'] <= cd.gpt_last_usable(total, 4096)
    assert cd.gpt_last_usable(total, 4096) == total - 6


def test_gpt_entries_from_sgdisk():
    assert w.parse_sgdisk_entries('Partition table holds up to 128 entries\n') == 128
    assert w.parse_sgdisk_entries('Partition table holds up to 248 entries\n') == 248
    assert w.parse_sgdisk_entries('') == 128
    assert cd.gpt_last_usable(1000000, 512, entries=248) == 1000000 - 2 - 62


def test_mbr_after_image():
    total = 512 * MIB_S
    plan = cd.plan_partition(dos([(1, 2048, 32 * MIB_S)]), total, 512, 64)
    assert plan['action'] == 'create' and plan['label'] == 'dos' and plan['number'] is None
    assert plan['end'] == total - 1 and plan['relocate_gpt'] is False


def test_mbr_no_free_primary_slot():
    parts = [(1, 2048, 2048), (2, 4096, 2048), (3, 6144, 2048), (4, 8192, 2048)]
    with pytest.raises(ByolError) as exc:
        cd.plan_partition(dos(parts), 512 * MIB_S, 512, 64)
    assert 'no free primary slot (partitions 1, 2, 3, 4' in exc.value.msg


def test_mbr_logical_partitions_leave_a_primary_slot():
    # extended partition 2 holds logical 5 and 6: the config drive goes after the extended one
    parts = [(1, 2048, 2048), (2, 4096, 100 * MIB_S), (5, 6144, 2048), (6, 10240, 2048)]
    plan = cd.plan_partition(dos(parts), 512 * MIB_S, 512, 64)
    assert plan['start'] > 4096 + 100 * MIB_S


def test_mbr_ends_before_2tib_on_big_disk():
    total = 4 * 1024 * 1024 * MIB_S     # 4 TiB
    plan = cd.plan_partition(dos([(1, 2048, 100 * MIB_S)]), total, 512, 64)
    assert (plan['end'] + 1) * 512 <= 2 ** 41
    assert 2 ** 41 - (plan['end'] + 1) * 512 < 1024 * 1024


def test_mbr_2tib_no_room():
    total = 4 * 1024 * 1024 * MIB_S
    with pytest.raises(ByolError) as exc:
        cd.plan_partition(dos([(1, 2048, 2 ** 32 - 2048 - 10 * MIB_S)]), total, 512, 64)
    assert '2 TiB' in exc.value.msg


def test_reuse_existing_partition():
    total = 512 * MIB_S
    plan = cd.plan_partition(dos([(1, 2048, 2048), (2, 400 * MIB_S, 8 * MIB_S)]), total, 512, 64, existing=2)
    assert plan == {'action': 'reuse', 'label': 'dos', 'number': 2, 'start': 400 * MIB_S, 'size': 8 * MIB_S,
                    'end': 408 * MIB_S - 1, 'relocate_gpt': False}


def test_no_table():
    with pytest.raises(ByolError) as exc:
        cd.plan_partition(None, 1000, 512, 64)
    assert 'no partition table' in exc.value.msg


def test_part_number():
    assert cd._part_number({'node': '/dev/nvme0n1p12'}) == 12
    assert cd._part_number({'node': '/dev/sdb3'}) == 3
    assert cd._part_number({'node': '/dev/loop7p1'}) == 1


# --- tool output parsers (real outputs)

def test_parse_mdir_listing():
    out = ('::/openstack/\n::/openstack/latest/\n::/openstack/2015-10-15/\n::/openstack/latest/meta_data.json\n'
           '::/openstack/2015-10-15/user_data\n')
    dirs, files = w.parse_mdir_listing(out)
    assert dirs == {'openstack', 'openstack/latest', 'openstack/2015-10-15'}
    assert files == {'openstack/latest/meta_data.json', 'openstack/2015-10-15/user_data'}


def test_parse_blkid_export():
    out = 'DEVNAME=/dev/loop4p3\nSEC_TYPE=msdos\nLABEL_FATBOOT=config-2\nLABEL=config-2\nTYPE=vfat\nPART_ENTRY_NAME=config-2\n'
    info = bd.parse_export(out)
    assert info['LABEL'] == 'config-2' and info['TYPE'] == 'vfat'

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One rule whichever way a value arrives: each hostile value is fed to the controller's payload
validation (the byol_request / ovh_payload filters) and to the module's own validation
(byol_configdrive, byol_image_burn, byol_partition's planner); both must refuse it with the same
message (each side naming the field its own way). Only the entry points are used, not _rules.py.
"""

from __future__ import annotations

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils import _configdrive as cd
from ansible_collections.baremetal.byol.plugins.module_utils._image import request as rq
from ansible_collections.baremetal.byol.plugins.module_utils import _layout as L
from ansible_collections.baremetal.byol.plugins.module_utils import _payload as P
from ansible_collections.baremetal.byol.plugins.module_utils._errors import ValidationError

ED = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHr0n2BQ1cpoc0d8mr6/T5HTrYLbYovE/fhPIqmhEAbp'


def payload_problems(**args):
    """The controller side: the byol_request filter's validation (every problem)."""
    base = {'byol_image_url': 'https://images.example.com/x.qcow2'}
    base.update(args)
    try:
        P.validate_request(base, 'byol')
    except ValidationError as exc:
        return exc.extra['errors']
    return []


def module_problem(call, *args, **kw):
    """The module side: the first problem, or None."""
    try:
        call(*args, **kw)
    except ValidationError as exc:
        return exc.msg
    return None


def image_request(**kw):
    params = dict(url='https://images.example.com/x.raw', image_type='raw', mode='disk', device='/dev/sda',
                  dest='/tmp/a', checksum=None, checksum_type=None, http_headers={}, timeout=60, progress_interval=10,
                  scratch_dir=None)
    params.update(kw)
    return rq.validate_request(params)


def disks():
    return [{'path': '/dev/vda', 'size': 20 * 1024 ** 3, 'sector_size': 512}]


def same(controller, module, controller_field, module_field):
    """The two messages are one rule's message, with each side's name for the field."""
    assert module is not None, 'the module accepted what the filter refuses: %r' % controller
    assert controller, 'the filter accepted what the module refuses: %r' % module
    assert controller[0].replace(controller_field, '<f>', 1) == module.replace(module_field, '<f>', 1)


@pytest.mark.parametrize('hostname', ['host\n', 'ho\u202est', 'a.b.', 'host\u00a0', 'x' * 64, 'h\x00'])
def test_hostname_same_on_both_sides(hostname):
    same(payload_problems(byol_hostname=hostname), module_problem(cd.validate_hostname, hostname), 'hostname', 'hostname')


@pytest.mark.parametrize('key', [ED + ' $(reboot)', ED + ' a\u202eb', ED + '\n', 'ssh-ed448 AAAA', ED + ' a\tb'])
def test_ssh_key_same_on_both_sides(key):
    same(payload_problems(byol_ssh_keys=[key]), module_problem(cd.validate_ssh_keys, [key]), 'sshKey[0]', 'ssh_keys[0]')


@pytest.mark.parametrize('url', ['https://user:pw@h/x.raw', 'https://h/x\n', 'https://h/x\u202e', 'ftp://h/x',
                                 'https:///x', 'file://h/x'])
def test_url_same_on_both_sides(url):
    same(payload_problems(byol_image_url=url), module_problem(image_request, url=url), 'imageURL', 'url')


@pytest.mark.parametrize('headers', [{'Host': 'evil'}, {'X-A': '1', 'x-a': '2'}, {'X-A': 'v\u202e'}, {'X-A': True},
                                     {'X-A': ' v'}, {'Bad Name': 'v'}, {'Range': 'bytes=0-1'}])
def test_headers_same_on_both_sides(headers):
    same(payload_problems(byol_http_headers=headers), module_problem(image_request, http_headers=headers),
         'httpHeaders', 'http_headers')


@pytest.mark.parametrize('meta', [{'k': 'a\nb'}, {'k': None}, {'k\n': 'v'}, {'k': 'v' * 256}, {'k': 'a\u2028b'},
                                  {'': 'v'}, dict(('k%d' % i, 'v') for i in range(129))])
def test_meta_data_same_on_both_sides(meta):
    same(payload_problems(byol_meta_data=meta), module_problem(cd.validate_meta, meta), 'configDriveMetadata',
         'meta_data')


@pytest.mark.parametrize('item', [
    {'mount_point': '/srv\n'}, {'mount_point': '/srv\x00x'}, {'mount_point': '/' + 'a' * 256},
    {'mount_point': '/srv\u202e'}, {'mount_point': '/var/'}, {'lv_name': 'root_mlog'}, {'lv_name': 'snapshot'},
    {'lv_name': 'root\n'}, {'lv_name': '.'}, {'size': -1}, {'size': 1.5},
])
def test_layout_names_same_on_both_sides(item):
    bad = dict({'mount_point': '/srv', 'fs_type': 'ext4', 'size': 100}, **item)
    layout = [{'mount_point': '/', 'fs_type': 'ext4', 'size': 0, 'lv_name': 'root'}, bad]
    same(payload_problems(byol_layout=layout), module_problem(L.plan_layout, layout, disks()), 'layout[1]', 'layout[1]')


@pytest.mark.parametrize('pool', ['mirror', 'tank\n', 'c0', '1tank'])
def test_zpool_names_same_on_both_sides(pool):
    layout = [{'mount_point': '/', 'fs_type': 'ext4', 'size': 0}, {'mount_point': '/t', 'fs_type': 'zfs', 'size': 100,
                                                                   'zpool_name': pool}]
    same(payload_problems(byol_layout=layout), module_problem(L.plan_layout, layout, disks()), 'layout[1]', 'layout[1]')


@pytest.mark.parametrize('checksum, ctype', [('a' * 64, 'sha512'), ('zz', 'md5'), ('a' * 32, 'crc32'), ('a' * 32, None)])
def test_checksum_same_on_both_sides(checksum, ctype):
    controller = payload_problems(byol_image_checksum=checksum, byol_image_checksum_type=ctype)
    module = module_problem(image_request, checksum=checksum, checksum_type=ctype)
    assert controller and module
    assert controller[0].replace('imageCheckSumType', '<t>').replace('imageCheckSum', '<f>') == \
        module.replace('checksum_type', '<t>').replace('checksum', '<f>', 1)


# ---------------------------------------------------------------------------------------- module-side hardening

@pytest.mark.parametrize('instance_id', ['abc\n', 'abc\x00', '', '-abc', 'a/b', 'ab\u202e'])
def test_instance_id_with_a_trailing_newline_refused(instance_id):
    assert 'is invalid' in module_problem(cd.validate_instance_id, instance_id)


@pytest.mark.parametrize('size', [0, -64, 1025, 10 ** 9, True, 2.5])
def test_config_drive_size_nonsense_refused(size):
    # size 0 used to become 64 MiB silently
    assert 'must be a whole number of MiB from 1 to 1024' in module_problem(cd.validate_size, size)


@pytest.mark.parametrize('size, expected', [(None, 64), (64, 64), (1, 1), ('128', 128)])
def test_config_drive_size_accepted(size, expected):
    assert cd.validate_size(size) == expected


@pytest.mark.parametrize('dest', ['/', '/.', '//', '/tmp/..', '/tmp/a/../..', '/etc', '/usr/', '/tmp', '/proc/1/root'])
def test_image_burn_dest_of_the_rescue_system_refused(dest):
    problem = module_problem(image_request, mode='files', device=None, dest=dest)
    assert problem and 'a directory of the rescue system' in problem


@pytest.mark.parametrize('configdrive_size', [-1, 1025])
def test_partition_configdrive_size_nonsense_refused(configdrive_size):
    layout = [{'mount_point': '/', 'fs_type': 'ext4', 'size': 0}]
    problem = module_problem(L.plan_layout, layout, disks(), configdrive_size=configdrive_size)
    assert 'configdrive_size' in problem and 'from 0 to 1024' in problem


def test_planner_counts_the_mount_root_in_path_lengths():
    deep = '/' + '/'.join(['d' * 200] * 19)
    layout = [{'mount_point': '/', 'fs_type': 'ext4', 'size': 0}, {'mount_point': deep, 'fs_type': 'ext4', 'size': 10}]
    assert L.plan_layout(layout, disks(), mount_root='/tmp/a')
    problem = module_problem(L.plan_layout, layout, disks(), mount_root='/tmp/' + 'r' * 300)
    assert problem.startswith('layout[1].mount_point is 4124 bytes long under /tmp/rrr')

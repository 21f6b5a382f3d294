# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Hostile names, sizes and trees are refused before any write: the real modules on loop devices.

Each test runs a module through ``ansible`` with one hostile argument and requires (1) the rule's
own message (so a missing tool or another failure cannot pass as the refusal), and (2) a disk
whose content hash and write counter (``/sys/block/loopN/stat``, sectors written) are unchanged.
On the code before the request rules moved into ``_rules.py`` these layouts wiped the disk and then
failed (``lvcreate``, ``ENAMETOOLONG``), or were written as given.
"""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest

NO_WRITE = 'before any write'


def write_sectors(dev):
    with open('/sys/block/%s/stat' % os.path.basename(dev)) as f:
        return int(f.read().split()[6])


def backing_file(dev):
    with open('/sys/block/%s/loop/backing_file' % os.path.basename(dev)) as f:
        return f.read().strip()


def disk_hash(dev):
    digest = hashlib.sha256()
    with open(backing_file(dev), 'rb') as f:
        for block in iter(lambda: f.read(4 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


class Untouched(object):
    """Content hash and write counter of a loop device, compared after the refused run."""

    def __init__(self, dev):
        subprocess.run(['udevadm', 'settle', '--timeout=30'], check=False)
        subprocess.run(['sync'], check=True)
        self.dev = dev
        self.writes = write_sectors(dev)
        self.digest = disk_hash(dev)

    def check(self):
        subprocess.run(['sync'], check=True)
        assert write_sectors(self.dev) == self.writes, 'the refused run wrote to %s' % self.dev
        assert disk_hash(self.dev) == self.digest, 'the content of %s changed' % self.dev


def gpt_disk(loopdev, size_mib=256):
    """A disk as an image left it: a GPT with one partition, free space at the end."""
    dev = loopdev(size_mib=size_mib)
    subprocess.run(['sgdisk', '-o', '-n', '1:2048:+64M', '-t', '1:8300', dev], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(['partx', '-u', dev], check=False)
    return dev


# ---------------------------------------------------------------------------------------- byol_partition

def partition_args(dev, tmp_path, layout):
    return {'disks': [dev], 'boot_mode': 'legacy', 'table_type': 'gpt', 'mount_root': str(tmp_path / 'a'),
            'configdrive_size': 16, 'layout': layout}


PARTITION_CASES = [
    pytest.param([{'mount_point': '/', 'fs_type': 'ext4', 'size': 0, 'lv_name': 'root_mlog'}],
                 "layout[0].lv_name 'root_mlog' is reserved by LVM", id='lv-reserved-suffix'),
    pytest.param([{'mount_point': '/', 'fs_type': 'ext4', 'size': 0, 'lv_name': 'snapshot'}],
                 "layout[0].lv_name 'snapshot' is reserved by LVM", id='lv-snapshot'),
    pytest.param([{'mount_point': '/', 'fs_type': 'ext4', 'size': 0, 'lv_name': 'root\n'}],
                 "layout[0].lv_name 'root\\n' must not contain whitespace, control or format characters (U+000A)",
                 id='lv-trailing-newline'),
    pytest.param([{'mount_point': '/', 'fs_type': 'ext4', 'size': 0},
                  {'mount_point': '/' + 'd' * 256, 'fs_type': 'ext4', 'size': 16}],
                 'has a component of 256 bytes; at most 255 are allowed (NAME_MAX)', id='mount-point-component-256'),
    pytest.param([{'mount_point': '/', 'fs_type': 'ext4', 'size': 0},
                  {'mount_point': '/srv\x01x', 'fs_type': 'ext4', 'size': 16}],
                 "layout[1].mount_point '/srv\\x01x' must not contain whitespace, control or format characters (U+0001)",
                 id='mount-point-control-character'),
    pytest.param([{'mount_point': '/', 'fs_type': 'ext4', 'size': 0},
                  {'mount_point': '/srv\u202e', 'fs_type': 'ext4', 'size': 16}],
                 '(U+202E)', id='mount-point-bidi-override'),
    pytest.param([{'mount_point': '/', 'fs_type': 'ext4', 'size': 0},
                  {'mount_point': '/srv\u00a0', 'fs_type': 'ext4', 'size': 16}],
                 '(U+00A0)', id='mount-point-nbsp'),
]


@pytest.mark.parametrize('check', [True, False], ids=['check-mode', 'apply'])
@pytest.mark.parametrize('layout, message', PARTITION_CASES)
def test_partition_refuses_names_while_planning(loopdev, ansible_module, tmp_path, layout, message, check):
    dev = loopdev(size_mib=512)
    untouched = Untouched(dev)
    r = ansible_module('byol_partition', partition_args(dev, tmp_path, layout), check=check)
    assert r.failed and message in r.result['msg'], r.result.get('msg') or r.output
    assert not r.result.get('repartitioned') and not r.changed
    untouched.check()


def test_partition_refuses_a_path_longer_than_path_max_under_mount_root(loopdev, ansible_module, tmp_path):
    dev = loopdev(size_mib=512)
    untouched = Untouched(dev)
    deep = '/' + '/'.join(['d' * 200] * 20)       # 4020 bytes: fits alone, not under the mount root
    layout = [{'mount_point': '/', 'fs_type': 'ext4', 'size': 0}, {'mount_point': deep, 'fs_type': 'ext4', 'size': 16}]
    args = partition_args(dev, tmp_path, layout)
    args['mount_root'] = str(tmp_path / ('r' * 100))
    r = ansible_module('byol_partition', args)
    assert r.failed and 'layout[1].mount_point is' in r.result['msg'], r.result.get('msg') or r.output
    assert 'a path may have at most 4095 (PATH_MAX)' in r.result['msg']
    untouched.check()


@pytest.mark.parametrize('size', [-1, 4096])
def test_partition_refuses_a_nonsense_config_drive_size(loopdev, ansible_module, tmp_path, size):
    dev = loopdev(size_mib=512)
    untouched = Untouched(dev)
    args = partition_args(dev, tmp_path, [{'mount_point': '/', 'fs_type': 'ext4', 'size': 0}])
    args['configdrive_size'] = size
    r = ansible_module('byol_partition', args)
    assert r.failed and 'configdrive_size %d must be a whole number of MiB from 0 to 1024' % size in r.result['msg']
    untouched.check()


def tree_links(tmp_path):
    """Symbolic links in a scratch directory to directories of the rescue system."""
    links = {}
    for name, target in (('to-root', '/'), ('to-etc', '/etc'), ('to-usr', '/usr'), ('to-srv', '/srv')):
        path = tmp_path / name
        path.symlink_to(target)
        links[name] = str(path)
    return links


TREES = ['/', '/.', '//', '/tmp/..', '/etc/', '/usr', '/tmp', 'link:to-root', 'link:to-etc', 'link:to-usr/.']


def tree_arg(tmp_path, tree):
    if tree.startswith('link:'):
        name, rest = (tree[5:].split('/', 1) + [''])[:2]
        return tree_links(tmp_path)[name] + ('/' + rest if rest else '')
    return tree


@pytest.mark.parametrize('tree', TREES)
def test_partition_refuses_a_mount_root_of_the_rescue_system(loopdev, ansible_module, tmp_path, tree):
    # check mode only: on code without the rule, applying this would mount the new filesystems over the rescue system
    dev = loopdev(size_mib=512)
    untouched = Untouched(dev)
    args = partition_args(dev, tmp_path, [{'mount_point': '/', 'fs_type': 'ext4', 'size': 0}])
    args['mount_root'] = tree_arg(tmp_path, tree)
    r = ansible_module('byol_partition', args, check=True)
    assert r.failed and 'a directory of the rescue system' in r.result['msg'], r.result.get('msg') or r.output
    assert r.result['msg'].startswith('mount_root ')
    untouched.check()


def test_partition_refuses_a_mount_root_linked_to_srv_when_applying(loopdev, ansible_module, tmp_path):
    dev = loopdev(size_mib=512)
    untouched = Untouched(dev)
    args = partition_args(dev, tmp_path, [{'mount_point': '/', 'fs_type': 'ext4', 'size': 0}])
    args['mount_root'] = tree_links(tmp_path)['to-srv']
    r = ansible_module('byol_partition', args)
    assert r.failed and 'resolves to /srv, a directory of the rescue system' in r.result['msg'], r.result.get('msg')
    untouched.check()


# ---------------------------------------------------------------------------------------- byol_image_burn, byol_bootable_hook

@pytest.mark.parametrize('tree', TREES)
def test_image_burn_refuses_a_dest_of_the_rescue_system(ansible_module, tmp_path, tree):
    image = tmp_path / 'x.qcow2'
    image.write_bytes(b'QFI\xfb' + b'\0' * 4092)
    args = {'url': 'file://%s' % image, 'image_type': 'qcow2', 'mode': 'files', 'dest': tree_arg(tmp_path, tree),
            'state_dir': str(tmp_path / 'state'), 'progress_file': ''}
    r = ansible_module('byol_image_burn', args, check=True)
    assert r.failed and r.result['msg'].startswith('dest ') and 'a directory of the rescue system' in r.result['msg'], \
        r.result.get('msg') or r.output


@pytest.mark.parametrize('tree', ['/usr', '/etc/', 'link:to-etc', 'link:to-usr/.', 'link:to-root', '/tmp/..'])
def test_bootable_hook_refuses_a_root_of_the_rescue_system(ansible_module, tmp_path, tree):
    r = ansible_module('byol_bootable_hook', {'root': tree_arg(tmp_path, tree), 'timeout': 30})
    assert r.failed and r.result['msg'].startswith('root ') and 'a directory of the rescue system' in r.result['msg'], \
        r.result.get('msg') or r.output
    assert not r.result.get('ran')


# ---------------------------------------------------------------------------------------- byol_configdrive

CONFIGDRIVE_CASES = [
    pytest.param({'size': 0}, 'size 0 must be a whole number of MiB from 1 to 1024', id='size-0'),
    pytest.param({'size': -64}, 'size -64 must be a whole number of MiB from 1 to 1024', id='size-negative'),
    pytest.param({'size': 100000}, 'size 100000 must be a whole number of MiB from 1 to 1024', id='size-absurd'),
    pytest.param({'meta_data': {'role\n': 'web'}}, "meta_data key 'role\\n' is invalid", id='meta-key-newline'),
    pytest.param({'meta_data': {'role': 'web\u202e'}}, "meta_data['role'] contains control, format or line-separator "
                 'characters (U+202E)', id='meta-value-bidi'),
    pytest.param({'meta_data': {'role': 'a\tb'}}, '(U+0009)', id='meta-value-tab'),
    pytest.param({'meta_data': {'role': None}}, "meta_data['role'] must be a string", id='meta-value-null'),
    pytest.param({'instance_id': 'i-123\n'}, "instance_id 'i-123\\n' is invalid", id='instance-id-newline'),
    pytest.param({'hostname': 'web1\n'}, "hostname 'web1\\n' contains whitespace, control or format characters",
                 id='hostname-newline'),
    pytest.param({'hostname': 'web1\u200b'}, '(U+200B)', id='hostname-zero-width'),
]


@pytest.mark.parametrize('args, message', CONFIGDRIVE_CASES)
def test_configdrive_refuses_before_any_write(loopdev, ansible_module, args, message):
    dev = gpt_disk(loopdev)
    untouched = Untouched(dev)
    r = ansible_module('byol_configdrive', dict({'device': dev, 'hostname': 'web1'}, **args))
    assert r.failed and message in r.result['msg'], r.result.get('msg') or r.output
    assert not r.changed
    untouched.check()


def test_configdrive_valid_request_writes(loopdev, ansible_module):
    # the same disk and arguments without the hostile value: the module does write (the refusals are real)
    dev = gpt_disk(loopdev)
    before = write_sectors(dev)
    r = ansible_module('byol_configdrive', {'device': dev, 'hostname': 'web1', 'size': 16,
                                            'meta_data': {'role': 'web'}, 'instance_id': 'i-123'})
    assert not r.failed and r.changed, r.result.get('msg') or r.output
    subprocess.run(['sync'], check=True)
    assert write_sectors(dev) > before


# ---------------------------------------------------------------------------------------- byol_preflight

@pytest.mark.parametrize('tree', ['/', '/.', '/tmp/..', 'link:to-root'])
def test_preflight_refuses_a_mount_root_that_would_allow_every_mount(target_fs, ansible_module, tmp_path, tree):
    # mounts under mount_root are the installer's own: with / every mounted disk would pass as free
    dev, mnt = target_fs
    r = ansible_module('byol_preflight', {'target_disks': [dev], 'mount_root': tree_arg(tmp_path, tree)})
    assert r.failed and r.result['msg'].startswith('mount_root ') and \
        'a directory of the rescue system' in r.result['msg'], r.result.get('msg') or r.output
    # the disk is still refused as in use with a mount_root of the installer's own
    r = ansible_module('byol_preflight', {'target_disks': [dev], 'mount_root': str(tmp_path / 'other')})
    assert r.failed and 'is mounted on %s' % mnt in r.result['msg']


@pytest.mark.parametrize('tree', ['/', '/.', '/tmp/..', 'link:to-root', 'link:to-etc'])
def test_wipe_disks_refuses_a_mount_root_of_the_rescue_system(target_fs, ansible_module, tmp_path, tree):
    # check mode only: applying it on code without the rule would unmount every filesystem under /
    dev, mnt = target_fs
    untouched = Untouched(dev)
    r = ansible_module('byol_wipe_disks', {'disks': [dev], 'include_loop': True, 'mount_root': tree_arg(tmp_path, tree)},
                       check=True)
    assert r.failed and r.result['msg'].startswith('mount_root ') and \
        'a directory of the rescue system' in r.result['msg'], r.result.get('msg') or r.output
    assert os.path.ismount(str(mnt))
    untouched.check()

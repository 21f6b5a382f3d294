# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""byol_configdrive on loop devices, read back by cloud-init's own ConfigDrive reader.

Each disk first gets a small "image" (a partition table that ends well before the end of the
disk, with a filesystem in it, as byol_image_burn leaves it), then the real module runs
through ``ansible``. The drive is copied out with mtools and parsed by Debian's cloud-init
(``/usr/bin/python3``, ``cloudinit.sources.DataSourceConfigDrive.read_config_drive``).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils import _blockdev

SYSTEM_PYTHON = '/usr/bin/python3'
KEY1 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIODy3cSFfXXEP8Z1Ennlec4kWIz7BWbB2uw0DH6zdchL admin@example.net'
KEY2 = ('ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBIMgMo9Fv90RKDZwegQ43peZ7pfpwZ1QW9P8X+80'
        'No5vp3QpgBeKguTtXSwRMq/woOq4k8T9VmOgrOy5RZQ/lt4= ops@example.net')
SECRET = 'S3cr3t-Passw0rd-do-not-leak'
USER_DATA = '#cloud-config\nchpasswd:\n  list: |\n    root:%s\n  expire: false\nruncmd:\n  - [touch, /root/ok]\n' % SECRET


def run(*args, **kw):
    return subprocess.run(list(args), check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, **kw)


def settle():
    subprocess.run(['udevadm', 'settle', '--timeout=30'], check=False)


def make_gpt_image(dev, image_mib=100):
    """A GPT 'image' as a qemu-img convert of a small disk leaves it: table for a disk of image_mib."""
    img_sectors = image_mib * 2048
    # write the table as if the disk were image_mib large: build it on a file, then copy the bytes
    with open(dev, 'r+b') as f:
        f.write(b'\0' * 1024 * 1024)
    tmp = dev.replace('/dev/', '') + '-img'
    path = os.path.join(os.environ.get('TMPDIR', '/tmp'), 'byol-cd-%d-%s' % (os.getpid(), tmp))
    with open(path, 'wb') as f:
        f.truncate(image_mib * 1024 * 1024)
    try:
        run('sgdisk', '-n', '1:2048:+16M', '-t', '1:ef00', '-c', '1:EFI', '-n', '2:0:0', '-t', '2:8300', '-c', '2:root', path)
        run('mkfs.ext4', '-q', '-F', '-E', 'offset=%d' % (18 * 1024 * 1024), path, '%dk' % ((image_mib - 19) * 1024))
        run('dd', 'if=%s' % path, 'of=%s' % dev, 'bs=1M', 'conv=notrunc,fsync', 'status=none')
    finally:
        os.unlink(path)
    subprocess.run(['partx', '--update', dev], check=False)
    settle()
    return img_sectors


def make_mbr_image(dev, nparts=1):
    script = 'label: dos\nstart=2048, size=32M, type=83, bootable\n'
    for i in range(1, nparts):
        script += 'size=8M, type=83\n'
    run('sfdisk', '-q', '--no-reread', dev, input=script)
    subprocess.run(['partx', '--update', dev], check=False)
    settle()


def node(part):
    """The partition node (udev may drop and re-add loop partitions after a table write)."""
    dev = re.sub(r'p\d+$', '', part)
    for dummy in range(50):
        settle()
        if os.path.exists(part):
            return part
        subprocess.run(['partx', '--update', dev], check=False)
        time.sleep(0.1)
    raise AssertionError('%s did not appear' % part)


def copy_out(part, dest):
    os.makedirs(dest)
    node(part)
    env = dict(os.environ, MTOOLS_SKIP_CHECK='1')
    subprocess.run(['mcopy', '-s', '-n', '-i', part, '::/openstack', dest + '/'], check=True, env=env)
    return dest


def cloud_init_read(source_dir):
    """Parse the drive with cloud-init itself (system python, Debian's cloud-init)."""
    code = r'''
import copy, json, sys
from cloudinit.sources import DataSourceConfigDrive as ds
from cloudinit.sources.helpers import openstack
r = ds.read_config_drive(sys.argv[1])
nd = copy.deepcopy(r.get("networkdata"))
md = r["metadata"]
ud = r.get("userdata")
out = {"instance-id": md.get("instance-id"), "local-hostname": md.get("local-hostname"),
       "public_keys": md.get("public_keys"), "meta": md.get("meta"),
       "userdata": ud.decode("utf-8") if isinstance(ud, bytes) else ud, "version": r["version"],
       "networkdata": nd}
if r.get("networkdata"):
    macs = dict((l["ethernet_mac_address"], "eth%d" % i) for i, l in enumerate(r["networkdata"]["links"]))
    out["netconf"] = openstack.convert_net_json(r["networkdata"], known_macs=macs)
print(json.dumps(out))
'''
    if not os.path.exists(SYSTEM_PYTHON):
        pytest.skip('no system python with cloud-init')
    proc = subprocess.run([SYSTEM_PYTHON, '-c', code, source_dir], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, check=False)
    if proc.returncode != 0 and 'No module named' in proc.stderr:
        pytest.skip('cloud-init is not installed for %s' % SYSTEM_PYTHON)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def blkid(part):
    out = run('blkid', '-p', '-o', 'export', part).stdout
    return dict(line.split('=', 1) for line in out.splitlines() if '=' in line)


def args_for(dev, **kw):
    a = {'device': dev, 'hostname': 'web01.example.net', 'ssh_keys': [KEY1, KEY2],
         'user_data': base64.b64encode(USER_DATA.encode()).decode(), 'meta_data': {'role': 'web', 'rack': 12}}
    a.update(kw)
    return a


@pytest.mark.parametrize('table', ['gpt', 'dos'])
def test_after_image_twice_check_diff_and_cloud_init(loopdev, ansible_module, tmp_path, table):
    dev = loopdev(size_mib=512)
    if table == 'gpt':
        make_gpt_image(dev, image_mib=100)
    else:
        make_mbr_image(dev)
    before = run('sfdisk', '--json', dev).stdout

    # check mode: plan only, nothing written
    w0 = _blockdev.write_sectors(dev)
    r = ansible_module('byol_configdrive', args_for(dev), check=True, diff=True)
    assert r.rc == 0, r.output
    assert r.changed
    assert r.result['partition']['action'] == 'create'
    assert r.result['partition']['relocated_gpt_backup'] == (table == 'gpt')
    assert set(r.result['files'].values()) == {'created'}
    time.sleep(0.2)
    assert _blockdev.write_sectors(dev) == w0
    assert run('sfdisk', '--json', dev).stdout == before
    diff_text = r.output
    assert 'meta_data.json' in diff_text and 'web01.example.net' in diff_text
    assert SECRET not in diff_text and '<user data:' in diff_text

    # real run
    r = ansible_module('byol_configdrive', args_for(dev), diff=True)
    assert r.rc == 0, r.output
    assert r.changed
    part = node(r.result['partition']['device'])
    # the partition ends at the end of the disk (GPT: before the backup table)
    sectors = int(run('blockdev', '--getsz', dev).stdout)
    end = r.result['partition']['start'] + r.result['partition']['size']
    assert sectors - end <= 2048  # 1 MiB alignment
    assert r.result['partition']['size_mib'] == 64
    info = blkid(part)
    assert info['TYPE'] == 'vfat' and info['LABEL'] == 'config-2'
    if table == 'gpt':
        pt = json.loads(run('sfdisk', '--json', dev).stdout)['partitiontable']
        assert pt['lastlba'] == sectors - 34
        assert [p for p in pt['partitions'] if p.get('name') == 'config-2']
    first_id = r.result['instance_id']
    assert r.result['instance_id_source'] == 'derived'
    assert r.result['user_data_source'] == 'base64'

    # second run: nothing changes, nothing written
    settle()
    w1 = _blockdev.write_sectors(dev)
    r2 = ansible_module('byol_configdrive', args_for(dev))
    assert r2.rc == 0, r2.output
    assert not r2.changed
    assert set(r2.result['files'].values()) == {'unchanged'}
    assert r2.result['partition']['action'] == 'reuse'
    assert r2.result['instance_id'] == first_id
    assert r2.result['instance_id_source'] == 'drive'
    time.sleep(0.2)
    assert _blockdev.write_sectors(dev) == w1

    # cloud-init reads it
    got = cloud_init_read(copy_out(part, str(tmp_path / 'drive')))
    assert got['version'] == 2
    assert got['instance-id'] == first_id
    assert got['local-hostname'] == 'web01.example.net'
    assert sorted(got['public_keys'].values()) == sorted([KEY1, KEY2])
    assert got['meta'] == {'role': 'web', 'rack': '12'}
    assert got['userdata'] == USER_DATA

    # a changed hostname rewrites meta_data.json only, keeps partition and uuid
    r3 = ansible_module('byol_configdrive', args_for(dev, hostname='web02'), check=True, diff=True)
    assert r3.changed and r3.result['files'][
        'openstack/latest/meta_data.json'] == 'updated'
    assert r3.result['partition']['action'] == 'reuse'
    assert 'web02' in r3.output and SECRET not in r3.output
    r3 = ansible_module('byol_configdrive', args_for(dev, hostname='web02'))
    assert r3.changed
    assert r3.result['files']['openstack/latest/user_data'] == 'unchanged'
    assert r3.result['instance_id'] == first_id
    assert r3.result['partition']['start'] == r.result['partition']['start']
    got = cloud_init_read(copy_out(part, str(tmp_path / 'drive2')))
    assert got['local-hostname'] == 'web02'
    assert got['instance-id'] == first_id
    assert got['userdata'] == USER_DATA


def test_network_auto_and_explicit_instance_id(loopdev, ansible_module, tmp_path):
    dev = loopdev(size_mib=256)
    make_gpt_image(dev, image_mib=64)
    r = ansible_module('byol_configdrive', {'device': dev, 'hostname': 'net01', 'network_data': 'auto',
                                            'instance_id': 'b0a1f2c4-0000-4000-8000-000000000001', 'size': 16})
    if r.failed and 'no Ethernet interface' in r.result.get('msg', ''):
        pytest.skip('this machine has no up Ethernet interface with a global address')
    assert r.rc == 0, r.output
    assert r.result['partition']['size_mib'] == 16
    assert r.result['network_data']['links']
    got = cloud_init_read(copy_out(r.result['partition']['device'], str(tmp_path / 'drive')))
    assert got['instance-id'] == 'b0a1f2c4-0000-4000-8000-000000000001'
    assert got['networkdata'] == r.result['network_data']
    # cloud-init turns it into its own network config: one physical interface per link, by MAC
    macs = [ln['ethernet_mac_address'] for ln in r.result['network_data']['links']]
    assert [c['mac_address'] for c in got['netconf']['config'] if c['type'] == 'physical'] == macs
    assert 'user_data' not in ' '.join(r.result['files'])
    # removing the network config removes the file
    r2 = ansible_module('byol_configdrive', {'device': dev, 'hostname': 'net01', 'size': 16,
                                             'instance_id': 'b0a1f2c4-0000-4000-8000-000000000001'})
    assert r2.changed and r2.result['files']['openstack/latest/network_data.json'] == 'removed'
    r3 = ansible_module('byol_configdrive', {'device': dev, 'hostname': 'net01', 'size': 16,
                                             'instance_id': 'b0a1f2c4-0000-4000-8000-000000000001'})
    assert not r3.changed


def test_user_data_never_in_output_at_verbosity_4(loopdev, ansible_module):
    dev = loopdev(size_mib=256)
    make_gpt_image(dev, image_mib=64)
    for check in (True, False, False):
        r = ansible_module('byol_configdrive', args_for(dev, user_data=USER_DATA, size=8), check=check, diff=True,
                           verbosity=4)
        assert r.rc == 0, r.output[-3000:]
        assert SECRET not in r.output
        assert base64.b64encode(USER_DATA.encode()).decode() not in r.output
    # base64 input: the decoded secret must not appear either (no_log only masks the literal value)
    r = ansible_module('byol_configdrive', args_for(dev, size=8), check=True, diff=True, verbosity=4)
    assert r.rc == 0
    assert SECRET not in r.output
    assert r.result['files']['openstack/latest/user_data'] == 'unchanged'


def test_opt_in_user_data_in_diff(loopdev, ansible_module):
    dev = loopdev(size_mib=256)
    make_mbr_image(dev)
    r = ansible_module('byol_configdrive', args_for(dev, size=8, show_user_data_in_diff=True), check=True, diff=True)
    assert r.rc == 0
    assert 'runcmd' in r.output


def test_no_room_gpt_refused_untouched(loopdev, ansible_module):
    dev = loopdev(size_mib=128)
    make_gpt_image(dev, image_mib=100)
    before = run('sfdisk', '--json', dev).stdout
    w0 = _blockdev.write_sectors(dev)
    r = ansible_module('byol_configdrive', args_for(dev, size=64))
    assert r.failed
    assert 'no room for the 64 MiB config drive' in r.result['msg']
    assert r.result['free_mib'] < 64
    assert run('sfdisk', '--json', dev).stdout == before
    time.sleep(0.2)
    assert _blockdev.write_sectors(dev) == w0


def test_mbr_without_free_primary_slot_refused(loopdev, ansible_module):
    dev = loopdev(size_mib=256)
    make_mbr_image(dev, nparts=4)
    r = ansible_module('byol_configdrive', args_for(dev, size=8))
    assert r.failed
    assert 'no free primary slot' in r.result['msg']


def test_after_partition_module_reserved_space(loopdev, ansible_module, tmp_path):
    """byol_partition leaves configdrive_size MiB free at the end; the config drive takes exactly that."""
    dev = loopdev(size_mib=512)
    # what byol_partition leaves: partitions up to 64 MiB before the end, backup GPT already at the end
    total = int(run('blockdev', '--getsz', dev).stdout)
    last = total - (1 + 64) * 2048 - 1   # byol_partition: 1 MiB for the backup GPT + configdrive_size MiB
    run('sgdisk', '-n', '1:2048:+64M', '-t', '1:ef00', '-n', '2:0:%d' % last, '-t', '2:8300', dev)
    subprocess.run(['partx', '--update', dev], check=False)
    settle()
    r = ansible_module('byol_configdrive', args_for(dev, size=64))
    assert r.rc == 0, r.output
    assert r.result['partition']['relocated_gpt_backup'] is False
    assert r.result['partition']['number'] == 3
    assert r.result['partition']['start'] == last + 1
    assert not ansible_module('byol_configdrive', args_for(dev, size=64)).changed
    got = cloud_init_read(copy_out(r.result['partition']['device'], str(tmp_path / 'drive')))
    assert got['local-hostname'] == 'web01.example.net'


def test_validation_errors_before_touching_disk(loopdev, ansible_module):
    dev = loopdev(size_mib=256)
    make_mbr_image(dev)
    before = run('sfdisk', '--json', dev).stdout
    cases = [
        ({'hostname': 'bad_host'}, 'RFC 1123'),
        ({'ssh_keys': ['ssh-rsa AAAA\nssh-rsa BBBB']}, 'one line'),
        ({'ssh_keys': ['command="rm -rf /" ' + KEY1]}, 'unknown key type'),
        ({'meta_data': {'k/ey': 'v'}}, 'meta_data key'),
        ({'device': dev + 'p1'}, 'give the whole disk'),
    ]
    for extra, needle in cases:
        r = ansible_module('byol_configdrive', args_for(dev, **extra))
        assert r.failed, extra
        assert needle in r.result['msg'], (needle, r.result['msg'])
    assert run('sfdisk', '--json', dev).stdout == before


@pytest.mark.parametrize('table', ['gpt', 'dos'])
def test_disk_with_mounted_filesystems(loopdev, ansible_module, tmp_path, table):
    """BYOL: byol_partition mounted the new filesystems of the first disk; the drive is added anyway."""
    dev = loopdev(size_mib=256)
    if table == 'gpt':
        make_gpt_image(dev, image_mib=100)
        root = node(dev + 'p2')
    else:
        make_mbr_image(dev)
        root = node(dev + 'p1')
    run('mkfs.ext4', '-q', '-F', root)
    mnt = tmp_path / 'a'
    mnt.mkdir()
    run('mount', root, str(mnt))
    try:
        r = ansible_module('byol_configdrive', args_for(dev, size=16))
        assert r.rc == 0, r.output
        assert r.changed
        assert os.path.ismount(str(mnt))
        assert not ansible_module('byol_configdrive', args_for(dev, size=16)).changed
        got = cloud_init_read(copy_out(r.result['partition']['device'], str(tmp_path / 'drive')))
        assert got['local-hostname'] == 'web01.example.net'
    finally:
        subprocess.run(['umount', str(mnt)], check=False)


def test_foreign_drive_reused_uuid_kept_stale_version_removed(loopdev, ansible_module, tmp_path):
    """A config-2 drive written by another installer (dated version directory): reused, its uuid kept,
    the dated directory (which cloud-init would prefer over latest) removed."""
    dev = loopdev(size_mib=256)
    make_gpt_image(dev, image_mib=64)
    run('sgdisk', '-e', '-n', '3:-20M:0', '-t', '3:0700', dev)
    part = node(dev + 'p3')
    run('mkfs.vfat', '-n', 'CONFIG-2', part)
    env = dict(os.environ, MTOOLS_SKIP_CHECK='1')
    old = tmp_path / 'meta_data.json'
    old.write_text(json.dumps({'uuid': 'a3c1e0f2-1111-4222-8333-944455556666', 'hostname': 'old'}))
    subprocess.run(['mmd', '-i', part, '::/openstack', '::/openstack/2015-10-15'], check=True, env=env)
    subprocess.run(['mcopy', '-i', part, str(old), '::/openstack/2015-10-15/meta_data.json'], check=True, env=env)
    r = ansible_module('byol_configdrive', args_for(dev), check=True)
    assert r.rc == 0, r.output
    assert r.result['partition']['action'] == 'reuse' and r.result['partition']['number'] == 3
    assert r.result['removed_stale'] == ['openstack/2015-10-15']
    assert r.result['instance_id'] == 'a3c1e0f2-1111-4222-8333-944455556666'
    r = ansible_module('byol_configdrive', args_for(dev))
    assert r.rc == 0, r.output
    assert r.changed
    assert r.result['partition']['size_mib'] == 20   # reused as it is
    got = cloud_init_read(copy_out(part, str(tmp_path / 'drive')))
    assert got['instance-id'] == 'a3c1e0f2-1111-4222-8333-944455556666'
    assert got['local-hostname'] == 'web01.example.net'
    assert not os.path.exists(str(tmp_path / 'drive' / 'openstack' / '2015-10-15'))
    r = ansible_module('byol_configdrive', args_for(dev))
    assert not r.changed and r.result['removed_stale'] == []

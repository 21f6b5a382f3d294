# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils import _blockdev
from ansible_collections.baremetal.byol.plugins.module_utils import _chroot as c
from ansible_collections.baremetal.byol.plugins.module_utils import _hookjail as j
from ansible_collections.baremetal.byol.plugins.module_utils._image import record
from ansible_collections.baremetal.byol.plugins.module_utils._errors import ValidationError


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / 'a'
    (root / 'root/.ovh').mkdir(parents=True)
    (root / 'usr/lib/hook').mkdir(parents=True)
    (root / 'usr/lib/hook/run.sh').write_text('#!/bin/sh\n')
    return str(root)


def test_resolve_plain(tree):
    assert c.resolve_in_root(tree, '/root/.ovh/x.sh') == os.path.join(tree, 'root/.ovh/x.sh')
    assert c.resolve_in_root(tree, '/') == tree
    assert c.resolve_in_root(tree, '/usr/./lib//hook/run.sh') == os.path.join(tree, 'usr/lib/hook/run.sh')


def test_resolve_absolute_link_stays_inside(tree):
    os.symlink('/usr/lib/hook/run.sh', os.path.join(tree, 'root/.ovh/x.sh'))
    assert c.resolve_in_root(tree, '/root/.ovh/x.sh') == os.path.join(tree, 'usr/lib/hook/run.sh')


def test_resolve_relative_link_and_dir_link(tree):
    os.symlink('usr/lib', os.path.join(tree, 'lib'))
    os.symlink('../../usr/lib/hook/run.sh', os.path.join(tree, 'root/.ovh/x.sh'))
    assert c.resolve_in_root(tree, '/root/.ovh/x.sh') == os.path.join(tree, 'usr/lib/hook/run.sh')
    assert c.resolve_in_root(tree, '/lib/hook/run.sh') == os.path.join(tree, 'usr/lib/hook/run.sh')


def test_resolve_refuses_escape(tree):
    os.symlink('../../../../etc/passwd', os.path.join(tree, 'root/.ovh/x.sh'))
    with pytest.raises(c.OutsideTree):
        c.resolve_in_root(tree, '/root/.ovh/x.sh')
    with pytest.raises(c.OutsideTree):
        c.resolve_in_root(tree, '/../etc/passwd')


def test_resolve_loop(tree):
    os.symlink('b', os.path.join(tree, 'a'))
    os.symlink('a', os.path.join(tree, 'b'))
    with pytest.raises(c.OutsideTree):
        c.resolve_in_root(tree, '/a')


def test_resolve_missing_kept(tree):
    assert c.resolve_in_root(tree, '/nope/x/../y') == os.path.join(tree, 'nope/x/../y')


def test_check_script_messages(tree):
    with pytest.raises(ValidationError) as e:
        c.check_script(tree, '/root/.ovh/make_image_bootable.sh')
    assert 'does not exist' in e.value.msg and 'A BYOL image must contain an executable' in e.value.msg
    path = os.path.join(tree, 'root/.ovh/make_image_bootable.sh')
    with open(path, 'w') as f:
        f.write('#!/bin/sh\n')
    os.chmod(path, 0o644)
    with pytest.raises(ValidationError) as e:
        c.check_script(tree, '/root/.ovh/make_image_bootable.sh')
    assert 'not executable (mode 0644)' in e.value.msg
    os.chmod(path, 0o700)
    assert c.check_script(tree, '/root/.ovh/make_image_bootable.sh') == path
    with pytest.raises(ValidationError):
        c.check_script(tree, 'root/.ovh/make_image_bootable.sh')


MOUNTINFO = """\
22 1 0:21 / / rw,relatime shared:1 - overlay overlay rw,lowerdir=/x
25 22 0:5 / /dev rw,nosuid shared:2 - devtmpfs udev rw,size=1000k
26 25 0:23 / /dev/pts rw,nosuid,noexec shared:3 - devpts devpts rw,gid=5,mode=620
300 22 7:3 / /tmp/my\\040tree rw,relatime shared:200 - ext4 /dev/loop3 rw
301 300 0:5 / /tmp/my\\040tree/dev rw,nosuid master:2 - devtmpfs udev rw,size=1000k
302 301 0:23 / /tmp/my\\040tree/dev/pts rw master:3 - devpts devpts rw
303 22 7:4 / /tmp/my\\040tree2 rw - ext4 /dev/loop4 rw
"""


def test_parse_mountinfo():
    mounts = _blockdev.parse_mountinfo(MOUNTINFO)
    assert len(mounts) == 7
    assert mounts[3]['mountpoint'] == '/tmp/my tree'
    assert mounts[3]['fstype'] == 'ext4' and mounts[3]['source'] == '/dev/loop3'
    assert mounts[4]['optional'] == ['master:2']
    under = c.mounts_under(mounts, '/tmp/my tree')
    assert [m['id'] for m in under] == [300, 301, 302]  # not /tmp/my tree2


def test_environment_is_controlled():
    env = c.hook_environment({'FOO': 'bar', 'X_1': 2})
    assert env['PATH'] == c.SAFE_PATH and env['HOME'] == '/root' and env['LANG'] == 'C.UTF-8'
    assert env['DEBIAN_FRONTEND'] == 'noninteractive' and env['TERM'] == 'dumb'
    assert env['FOO'] == 'bar' and env['X_1'] == '2' and env['BYOL_NETWORK'] == '0'
    assert not set(env) & {'ANSIBLE_MODULE_ARGS', 'SSH_AUTH_SOCK', 'PYTHONPATH'}
    for bad in ('1X', 'A=B', 'A B', ''):
        with pytest.raises(ValidationError):
            c.hook_environment({bad: 'x'})


def test_command_is_an_argument_list():
    spec = {'root': '/tmp/a b', 'script': '/root/.ovh/x; rm -rf /'}
    argv = c.hook_command('/usr/bin/unshare', '/usr/bin/python3', spec)
    assert argv[0] == '/usr/bin/unshare' and '--' in argv
    assert argv[argv.index('--') + 1:argv.index('-c')] == ['/usr/bin/python3', '-I', '-S']
    assert argv[argv.index('-c') + 1] == c.stage2_source() and 'def build(jail, spec):' in argv[argv.index('-c') + 1]
    assert json.loads(argv[-1]) == spec  # the spec is one argument, never a shell string
    assert '--net' in argv and '--pid' in argv and '--kill-child' in argv and '--mount' in argv
    assert '--net' not in c.hook_command('u', 'p', spec, network=True)
    assert c.display_command(argv)[-2:] == ['<_hookjail.py>', '<spec>']


def test_marker_roundtrip_and_trust(tmp_path):
    """The hook's marker goes through the image records' reader and writer (_image/record.py), with the bytes
    it always had: one sorted JSON object and a newline."""
    root = tmp_path / 'tree'
    root.mkdir()
    assert record.write_hook_record(str(root), 'sha256:abc', '/root/.ovh/make_image_bootable.sh', 0, 1.23456,
                                    1700000000, 'fs-1') == c.MARKER_PATH == '/var/lib/byol/make_image_bootable.done'
    marker = root / 'var/lib/byol/make_image_bootable.done'
    assert marker.read_text() == json.dumps({
        'digest': 'sha256:abc', 'script': '/root/.ovh/make_image_bootable.sh', 'rc': 0, 'duration': 1.235,
        'finished': 1700000000, 'filesystem': 'fs-1', 'writer': 'baremetal.byol'}, sort_keys=True) + '\n'
    assert oct(marker.stat().st_mode & 0o777) == '0o644'
    assert record.read_hook_record(str(root), 'fs-1')['digest'] == 'sha256:abc'
    # made elsewhere (the image's own files), on another filesystem, or where the tree has no identity: not trusted
    assert record.read_hook_record(str(root), 'fs-2') is None
    assert record.read_hook_record(str(root), None) is None
    for text in ('garbage', '[1]', json.dumps({'digest': 'sha256:abc', 'rc': 0})):
        marker.write_text(text)
        assert record.read_hook_record(str(root), 'fs-1') is None
    marker.unlink()
    assert record.read_hook_record(str(root), 'fs-1') is None
    rec = record.hook_record('sha256:abc', '/root/.ovh/make_image_bootable.sh', 0, 1.0, 1700000000, 'fs-1')
    rec = record.trusted_hook_record(rec, 'fs-1')
    assert record.hook_done(rec, 'sha256:abc', '/s', None) and not record.hook_done(rec, 'sha256:x', '/s', None)
    # the script is gone: the record of this image's digest, or of this script, is enough
    assert record.hook_done(rec, None, '/s', 'sha256:abc') and not record.hook_done(rec, None, '/s', 'sha256:other')
    assert record.hook_done(rec, None, '/root/.ovh/make_image_bootable.sh', None)
    assert not record.hook_done(rec, None, '/x', None)
    assert not record.hook_done(None, 'sha256:abc', '/s', None)


def _fake_block(sysfs, name, dev, slaves=(), parent=None):
    base = os.path.join(sysfs, 'devices', parent or '', name) if parent else os.path.join(sysfs, 'devices', name)
    os.makedirs(os.path.join(base, 'holders'))
    os.makedirs(os.path.join(base, 'slaves'))
    with open(os.path.join(base, 'dev'), 'w') as f:
        f.write(dev + '\n')
    if parent:
        open(os.path.join(base, 'partition'), 'w').close()
    os.makedirs(os.path.join(sysfs, 'class', 'block'), exist_ok=True)
    os.symlink(base, os.path.join(sysfs, 'class', 'block', name))
    for slave in slaves:
        os.symlink(os.path.join(sysfs, 'class', 'block', slave), os.path.join(base, 'slaves', slave))
        os.symlink(base, os.path.join(sysfs, 'class', 'block', slave, 'holders', name))


def test_allowed_block_devices_walks_holders(tmp_path):
    sysfs = str(tmp_path)
    for disk, major in (('sda', 8), ('sdb', 8), ('sdc', 8)):
        _fake_block(sysfs, disk, '%d:%d' % (major, ord(disk[-1]) - 97))
        _fake_block(sysfs, disk + '1', '%d:%d' % (major, ord(disk[-1]) - 96), parent=disk)
        _fake_block(sysfs, disk + '2', '%d:%d' % (major, ord(disk[-1]) - 95), parent=disk)
    _fake_block(sysfs, 'md0', '9:0', slaves=('sda2', 'sdb2'))       # on the targets only
    _fake_block(sysfs, 'dm-0', '253:0', slaves=('md0',))             # LVM on it
    _fake_block(sysfs, 'md1', '9:1', slaves=('sda1', 'sdc1'))       # half on a disk that is not a target
    allowed = c.allowed_block_devices({'sda', 'sdb'}, sysfs)
    assert allowed == {'sda', 'sda1', 'sda2', 'sdb', 'sdb1', 'sdb2', 'md0', 'dm-0'}
    assert c.whole_disks_under('dm-0', sysfs) == {'sda', 'sdb'}
    assert c.whole_disks_under('sdc1', sysfs) == {'sdc'}


def test_jail_mount_flags():
    assert j.mount_flags('rw,nosuid,nodev,relatime') == j.MS_NOSUID | j.MS_NODEV
    assert j.mount_flags('ro,noexec') == j.MS_RDONLY | j.MS_NOEXEC
    kept = set(number for name, number, why in c.HOOK_CAPABILITIES)
    assert not kept & {16, 17, 21, 22, 25, 27}  # SYS_MODULE, SYS_RAWIO, SYS_ADMIN, SYS_BOOT, SYS_TIME, MKNOD


def test_log_and_tail():
    log = c.format_log('/s', ['a', 'b'], 1, 2.5, 'out', 'err', True, [12])
    assert '# rc: 1 (timed out, killed)' in log and 'out\n# --- stderr ---\nerr\n' in log and '12' in log
    assert c.tail('\n'.join(str(i) for i in range(100)), 3) == '97\n98\n99'


def test_check_script_refuses_rescue_root():
    with pytest.raises(ValidationError) as e:
        c.check_script('/', '/root/.ovh/make_image_bootable.sh')
    assert 'not the rescue system' in e.value.msg


def test_processes_in_tree_ignores_cwd(tmp_path):
    """Only chrooted processes count; a shell whose cwd is in the tree is not killed."""
    import subprocess
    child = subprocess.Popen(['sleep', '30'], cwd=str(tmp_path))
    try:
        assert child.pid not in c.processes_in_tree(str(tmp_path))
        # and the same process is found when the tree is "/" (its root)
        assert child.pid in c.processes_in_tree('/')
    finally:
        child.kill()
        child.wait()


def test_prepared_files_paths(tmp_path):
    root = str(tmp_path)
    os.makedirs(os.path.join(root, 'etc'))
    assert c.prepared_files(root) == []
    assert c.prepared_files(root, fstab='', mdadm_conf='') == []
    # no /etc/mdadm/ in the tree (RHEL family): /etc/mdadm.conf
    assert c.prepared_files(root, 'F\n', 'M\n') == [('/etc/fstab', 'F\n'), ('/etc/mdadm.conf', 'M\n')]
    os.mkdir(os.path.join(root, 'etc', 'mdadm'))
    assert c.prepared_files(root, None, 'M\n') == [('/etc/mdadm/mdadm.conf', 'M\n')]
    # /etc/mdadm as a link out of the tree is resolved inside it: not a directory there
    os.rmdir(os.path.join(root, 'etc', 'mdadm'))
    os.symlink('../../../../../../../etc', os.path.join(root, 'etc', 'mdadm'))
    assert c.mdadm_conf_path(root) == '/etc/mdadm.conf'


class _Runner(object):
    def __init__(self, rc):
        self.rc = rc
        self.calls = []

    def which(self, tool, required=True):
        return '/usr/bin/' + tool

    def run(self, args, check=True):
        self.calls.append(args)

        class R(object):
            rc = self.rc
            stdout = ''
            stderr = 'Failed to start transient scope unit'
        return R()


def test_device_cgroup_only_with_systemd(tmp_path):
    runner = _Runner(0)
    prefix, note = c.device_cgroup(runner, {'sda', 'sda1'}, running=str(tmp_path / 'absent'))
    assert prefix == [] and 'not PID 1' in note and runner.calls == []
    prefix, note = c.device_cgroup(runner, {'sda', 'sda1', 'md127'}, running=str(tmp_path))
    assert prefix[:6] == ['/usr/bin/systemd-run', '--scope', '--quiet', '--collect', '-p', 'DevicePolicy=closed']
    assert prefix[-1] == '--'
    allows = [prefix[i + 1] for i, a in enumerate(prefix) if a == '-p' and prefix[i + 1].startswith('DeviceAllow=/dev/s')]
    assert allows == ['DeviceAllow=/dev/sda rwm', 'DeviceAllow=/dev/sda1 rwm']
    assert 'DeviceAllow=/dev/md127 rwm' in prefix
    assert runner.calls == [prefix + ['/usr/bin/true']]  # tried first
    # the scope cannot be made: the private /dev is the wall, and the note says why
    prefix, note = c.device_cgroup(_Runner(1), {'sda'}, running=str(tmp_path))
    assert prefix == [] and 'Failed to start transient scope unit' in note

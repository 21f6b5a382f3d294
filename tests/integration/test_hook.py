# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""byol_bootable_hook on a real tree: ext4 on a loop device, a busybox-static chroot, real ansible runs."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils._blockdev import read_mountinfo
from ansible_collections.baremetal.byol.plugins.module_utils._chroot import mounts_under

BUSYBOX = shutil.which('busybox')
APPLETS = ['sh', 'sleep', 'ip', 'nc', 'cat', 'echo', 'ls', 'setsid', 'ps', 'env', 'id', 'grep', 'touch', 'wc', 'mount']
SCRIPT = '/root/.ovh/make_image_bootable.sh'

pytestmark = pytest.mark.skipif(BUSYBOX is None, reason='busybox-static is not installed')


@pytest.fixture
def tree(loopdev, tmp_path):
    """A mounted ext4 filesystem holding a minimal busybox system; yields its path."""
    dev = loopdev(size_mib=64)
    subprocess.run(['mkfs.ext4', '-q', '-F', dev], check=True)
    root = str(tmp_path / 'a')
    os.mkdir(root)
    subprocess.run(['mount', dev, root], check=True)
    for d in ('bin', 'root/.ovh', 'dev', 'proc', 'sys', 'run', 'tmp', 'etc', 'var'):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    shutil.copy2(BUSYBOX, os.path.join(root, 'bin', 'busybox'))
    for applet in APPLETS:
        os.symlink('busybox', os.path.join(root, 'bin', applet))
    with open(os.path.join(root, 'etc', 'resolv.conf'), 'w') as f:
        f.write('# tree resolv.conf\n')
    try:
        yield root
    finally:
        # nothing of the module's may be left: the loopdev fixture would hide it with umount -l
        subprocess.run(['umount', root], check=False)


def write_script(root, body, mode=0o755, path=SCRIPT):
    host = os.path.join(root, path.lstrip('/'))
    with open(host, 'w') as f:
        f.write('#!/bin/sh\n' + body + '\n')
    os.chmod(host, mode)
    return host


def tree_mounts(root):
    return [(m['id'], m['mountpoint'], m['fstype']) for m in mounts_under(read_mountinfo(), os.path.realpath(root))]


def procs_in(root):
    root = os.path.realpath(root)
    found = []
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        try:
            target = os.readlink('/proc/%s/root' % pid)
        except OSError:
            continue
        if target == root or target.startswith(root + '/'):
            found.append(pid)
    return found


def assert_clean(root, before):
    assert tree_mounts(root) == before, 'mounts below the tree changed'
    assert len(before) == 1 and before[0][2] == 'ext4', 'the tree itself must still be mounted'
    assert procs_in(root) == []


def test_success_idempotent_and_check_mode(tree, ansible_module):
    before = tree_mounts(tree)
    write_script(tree, 'echo "pid=$$"\n'
                       'echo "hello from the hook"\n'
                       'echo "stderr line" >&2\n'
                       'env > /root/hook-env\n'
                       'echo run >> /root/hook-count\n'
                       'ls /dev/null /dev/pts >/dev/null && echo devs-ok\n'
                       'cat /proc/1/cmdline | grep -q make_image_bootable && echo proc-is-own\n'
                       'exit 0')
    # check mode: runs nothing, mounts nothing
    r = ansible_module('byol_bootable_hook', {'root': tree}, check=True)
    assert r.rc == 0, r.output
    assert r.changed and r.result['ran']
    assert not os.path.exists(os.path.join(tree, 'root/hook-count'))
    assert_clean(tree, before)

    r = ansible_module('byol_bootable_hook', {'root': tree, 'timeout': 60, 'environment': {'HOOK_TOKEN': 'tok-93847'}},
                       env={'BYOL_HOST_ONLY_SECRET': 'must-not-leak'}, verbosity=4)
    assert r.rc == 0, r.output
    assert r.changed
    res = r.result
    assert res['rc'] == 0
    assert 'pid=1' in res['stdout']  # the script is the init of its own PID namespace
    assert 'hello from the hook' in res['stdout'] and 'devs-ok' in res['stdout'] and 'proc-is-own' in res['stdout']
    assert 'stderr line' in res['stderr']
    assert res['mounts'] == ['/dev', '/dev/pts', '/dev/shm', '/proc', '/sys', '/run', '/run/udev', '/tmp']
    assert 'tok-93847' not in r.output  # no_log value never printed, even at -vvvv
    with open(os.path.join(tree, 'root/hook-env')) as f:
        env = dict(line.split('=', 1) for line in f.read().splitlines() if '=' in line)
    assert env['HOOK_TOKEN'] == 'tok-93847'
    assert env['HOME'] == '/root' and env['LANG'] == 'C.UTF-8' and env['DEBIAN_FRONTEND'] == 'noninteractive'
    assert 'BYOL_HOST_ONLY_SECRET' not in env and not any(k.startswith('ANSIBLE') for k in env)
    with open(os.path.join(tree, 'var/log/byol/make_image_bootable.log')) as f:
        log = f.read()
    assert 'hello from the hook' in log and 'stderr line' in log and 'tok-93847' not in log
    assert os.path.isfile(os.path.join(tree, 'var/lib/byol/make_image_bootable.done'))
    assert_clean(tree, before)

    # second run: changed false, the script does not run again
    r = ansible_module('byol_bootable_hook', {'root': tree})
    assert r.rc == 0, r.output
    assert not r.changed and not r.result['ran']
    with open(os.path.join(tree, 'root/hook-count')) as f:
        assert f.read().count('run') == 1
    # a new image digest or force runs it again
    r = ansible_module('byol_bootable_hook', {'root': tree, 'image_digest': 'sha256:other'})
    assert r.rc == 0 and r.changed, r.output
    r = ansible_module('byol_bootable_hook', {'root': tree, 'image_digest': 'sha256:other'})
    assert r.rc == 0 and not r.changed, r.output
    r = ansible_module('byol_bootable_hook', {'root': tree, 'image_digest': 'sha256:other', 'force': True})
    assert r.rc == 0 and r.changed, r.output
    with open(os.path.join(tree, 'root/hook-count')) as f:
        assert f.read().count('run') == 3
    assert_clean(tree, before)


@pytest.mark.parametrize('debian', [True, False], ids=['etc-mdadm-dir', 'etc-mdadm.conf'])
def test_fstab_and_mdadm_conf_written_before_the_hook_only_when_it_runs(tree, ansible_module, debian):
    if debian:
        os.makedirs(os.path.join(tree, 'etc/mdadm'))
    conf = 'etc/mdadm/mdadm.conf' if debian else 'etc/mdadm.conf'
    # the hook sees the files (it copies them where a later check can read them)
    write_script(tree, 'cat /etc/fstab > /root/seen-fstab\ncat /%s > /root/seen-mdadm\nexit 0' % conf)
    args = {'root': tree, 'fstab': 'UUID=1 / ext4 defaults 0 1\n', 'mdadm_conf': 'ARRAY /dev/md/boot UUID=a:b:c:d\n'}
    r = ansible_module('byol_bootable_hook', args, check=True)
    assert r.rc == 0 and r.changed, r.output
    assert r.result['files'] == ['/etc/fstab', '/' + conf]
    assert 'Would write /etc/fstab, /%s, then run' % conf in r.result['msg']
    assert not os.path.exists(os.path.join(tree, 'etc/fstab')) and not os.path.exists(os.path.join(tree, conf))

    r = ansible_module('byol_bootable_hook', args)
    assert r.rc == 0 and r.changed, r.output
    with open(os.path.join(tree, 'root/seen-fstab')) as f:
        assert f.read() == args['fstab']
    with open(os.path.join(tree, 'root/seen-mdadm')) as f:
        assert f.read() == args['mdadm_conf']
    assert oct(os.stat(os.path.join(tree, conf)).st_mode & 0o777) == '0o644'

    # the hook ran for this image: the files are the installed system's now, a second run leaves them alone
    with open(os.path.join(tree, conf), 'w') as f:
        f.write('# rewritten by the hook (mdadm --detail --scan)\n')
    r = ansible_module('byol_bootable_hook', dict(args, fstab='UUID=2 / ext4 defaults 0 1\n'))
    assert r.rc == 0 and not r.changed and r.result['files'] == [], r.output
    with open(os.path.join(tree, conf)) as f:
        assert f.read().startswith('# rewritten by the hook')
    with open(os.path.join(tree, 'etc/fstab')) as f:
        assert f.read() == args['fstab']


def test_unwritable_etc_is_a_clear_error_and_nothing_runs(tree, ansible_module):
    write_script(tree, 'echo run > /root/hook-count\nexit 0')
    os.makedirs(os.path.join(tree, 'etc', 'fstab'))  # a directory where the file goes: the write fails
    r = ansible_module('byol_bootable_hook', {'root': tree, 'fstab': 'UUID=1 / ext4 defaults 0 1\n'})
    assert r.rc != 0
    assert 'Could not write /etc/fstab into the installed system at %s (nothing was run)' % tree in r.result['msg']
    assert 'Traceback' not in r.output
    assert not os.path.exists(os.path.join(tree, 'root/hook-count'))
    assert not os.path.exists(os.path.join(tree, 'var/lib/byol/make_image_bootable.done'))
    assert os.listdir(os.path.join(tree, 'etc', 'fstab')) == []
    assert [n for n in os.listdir(os.path.join(tree, 'etc')) if '.tmp.' in n] == []  # no temporary file left


def test_failure_shows_output(tree, ansible_module):
    before = tree_mounts(tree)
    write_script(tree, 'echo "building initramfs"\necho "E: no kernel found in /boot" >&2\nexit 3')
    r = ansible_module('byol_bootable_hook', {'root': tree})
    assert r.failed, r.output
    assert r.result['rc'] == 3
    assert 'exit code 3' in r.result['msg'] and 'E: no kernel found in /boot' in r.result['msg']
    assert 'building initramfs' in r.result['stdout']
    assert not os.path.exists(os.path.join(tree, 'var/lib/byol/make_image_bootable.done'))
    assert os.path.isfile(os.path.join(tree, 'var/log/byol/make_image_bootable.log'))
    assert_clean(tree, before)
    # a failed run is retried next time (no marker)
    r = ansible_module('byol_bootable_hook', {'root': tree})
    assert r.failed and r.result['rc'] == 3


def test_timeout_kills_everything(tree, ansible_module):
    before = tree_mounts(tree)
    write_script(tree, 'echo start\nsleep 4243 &\nsetsid sleep 4244 &\nsleep 4245\necho never')
    r = ansible_module('byol_bootable_hook', {'root': tree, 'timeout': 3})
    assert r.failed, r.output
    assert r.result['timed_out'] is True
    assert 'did not finish within 3 s' in r.result['msg']
    assert r.result['duration'] < 30
    assert 'never' not in r.result['stdout']
    out = subprocess.run(['ps', '-eo', 'args'], stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
    assert 'sleep 424' not in out
    assert_clean(tree, before)


def test_background_process_does_not_survive(tree, ansible_module):
    before = tree_mounts(tree)
    write_script(tree, 'sleep 4246 &\nsetsid sleep 4247 &\n(sleep 4248 &)\necho started\nexit 0')
    r = ansible_module('byol_bootable_hook', {'root': tree})
    assert r.rc == 0, r.output
    assert 'started' in r.result['stdout']
    out = subprocess.run(['ps', '-eo', 'args'], stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
    assert 'sleep 424' not in out
    assert_clean(tree, before)


class Listener(object):
    """A TCP listener on the host's 127.0.0.1 that records whether anything connected."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(5)
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = False
        self.thread = threading.Thread(target=self._run)
        self.thread.daemon = True
        self.thread.start()

    def _run(self):
        while not self.stop:
            try:
                conn, dummy = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            conn.sendall(b'host-listener\n')
            conn.close()

    def close(self):
        self.stop = True
        self.thread.join(5)
        self.sock.close()


@pytest.mark.parametrize('network', [False, True])
def test_network(tree, ansible_module, network):
    before = tree_mounts(tree)
    listener = Listener()
    try:
        write_script(tree, 'echo "links:"\nip -o link\n'
                           'if echo ping | nc -w 2 127.0.0.1 %d; then echo CONNECTED; else echo NOCONNECT; fi\n'
                           'cat /etc/resolv.conf\nexit 0' % listener.port)
        r = ansible_module('byol_bootable_hook', {'root': tree, 'network': network, 'force': True})
    finally:
        listener.close()
    assert r.rc == 0, r.output
    out = r.result['stdout']
    links = [line.split(':')[1].strip() for line in out.splitlines() if line[:1].isdigit() and ':' in line]
    if network:
        assert listener.connections == 1 and 'CONNECTED' in out
        assert '# tree resolv.conf' not in out  # the rescue system's resolv.conf was bound over it
        assert '/etc/resolv.conf' in r.result['mounts']
    else:
        assert links == ['lo'], out
        assert listener.connections == 0 and 'NOCONNECT' in out
        assert '# tree resolv.conf' in out
    assert_clean(tree, before)


@pytest.mark.parametrize('case', ['not_executable', 'missing', 'symlink_out', 'directory'])
def test_refused(tree, ansible_module, case):
    before = tree_mounts(tree)
    host = os.path.join(tree, SCRIPT.lstrip('/'))
    if case == 'not_executable':
        write_script(tree, 'exit 0', mode=0o644)
        expect = 'not executable'
    elif case == 'missing':
        expect = 'does not exist'
    elif case == 'symlink_out':
        outside = os.path.join(os.path.dirname(tree), 'outside.sh')
        with open(outside, 'w') as f:
            f.write('#!/bin/sh\nexit 0\n')
        os.chmod(outside, 0o755)
        os.symlink('../../../outside.sh', host)
        expect = 'symbolic link out of the installed tree'
    else:
        os.mkdir(host)
        expect = 'not a regular file'
    r = ansible_module('byol_bootable_hook', {'root': tree})
    assert r.failed, r.output
    msg = r.result['msg']
    assert expect in msg
    assert 'A BYOL image must contain an executable /root/.ovh/make_image_bootable.sh' in msg
    assert r.result.get('rc') is None
    assert not os.path.exists(os.path.join(tree, 'var/log/byol'))
    assert_clean(tree, before)


def test_absolute_symlink_resolves_inside_tree(tree, ansible_module):
    """An absolute link is followed inside the tree (as the chroot sees it), never on the rescue system."""
    before = tree_mounts(tree)
    os.makedirs(os.path.join(tree, 'usr/lib/hook'))
    write_script(tree, 'echo real-hook', path='/usr/lib/hook/run.sh')
    os.symlink('/usr/lib/hook/run.sh', os.path.join(tree, SCRIPT.lstrip('/')))
    r = ansible_module('byol_bootable_hook', {'root': tree})
    assert r.rc == 0, r.output
    assert 'real-hook' in r.result['stdout']
    assert_clean(tree, before)


def _marker(tree):
    return os.path.join(tree, 'var/lib/byol/make_image_bootable.done')


@pytest.mark.parametrize('forged', ['plain', 'with_filesystem'])
def test_marker_shipped_in_the_image_never_skips_the_hook(tree, ansible_module, forged):
    """A "successful run" record that came with the image's files is not the installer's: the hook runs."""
    import hashlib
    import json
    host = write_script(tree, 'echo run >> /root/hook-count\nexit 0')
    with open(host, 'rb') as f:
        digest = 'sha256:' + hashlib.sha256(f.read()).hexdigest()
    shipped = {'digest': digest, 'script': SCRIPT, 'rc': 0, 'duration': 1.0, 'finished': 1}
    if forged == 'with_filesystem':
        shipped.update(filesystem='0b1e5b01-0000-4000-8000-00000000b0a1', writer='baremetal.byol')
    os.makedirs(os.path.dirname(_marker(tree)))
    for args in ({'root': tree}, {'root': tree, 'image_digest': 'sha256:img'}):
        with open(_marker(tree), 'w') as f:
            json.dump(dict(shipped, digest=args.get('image_digest', digest)), f)
        r = ansible_module('byol_bootable_hook', args)
        assert r.rc == 0 and r.changed and r.result['ran'], r.output
    with open(os.path.join(tree, 'root/hook-count')) as f:
        assert f.read().count('run') == 2
    # the installer's own record (on this filesystem) does count
    r = ansible_module('byol_bootable_hook', {'root': tree, 'image_digest': 'sha256:img'})
    assert r.rc == 0 and not r.changed, r.output


@pytest.mark.parametrize('digest', [True, False], ids=['image_digest', 'script_digest'])
def test_hook_that_removes_itself_reruns_unchanged(tree, ansible_module, digest):
    """OVH's example hooks end with rm -rf /root/.ovh: the installer's record of this image is enough."""
    write_script(tree, 'echo run >> /root/hook-count\nrm -rf /root/.ovh\nexit 0')
    args = {'root': tree, 'fstab': 'UUID=1 / ext4 defaults 0 1\n'}
    if digest:
        args['image_digest'] = 'sha256:img1'
    r = ansible_module('byol_bootable_hook', args)
    assert r.rc == 0 and r.changed, r.output
    assert not os.path.exists(os.path.join(tree, 'root/.ovh'))
    watched = [_marker(tree), os.path.join(tree, 'var/log/byol/make_image_bootable.log'), os.path.join(tree, 'etc/fstab')]
    before = [(os.stat(p).st_mtime_ns, os.stat(p).st_ino) for p in watched]
    r = ansible_module('byol_bootable_hook', dict(args, fstab='UUID=2 / ext4 defaults 0 1\n'))
    assert r.rc == 0 and not r.changed and not r.result['ran'], r.output
    assert r.result['files'] == []
    assert [(os.stat(p).st_mtime_ns, os.stat(p).st_ino) for p in watched] == before  # nothing written
    with open(os.path.join(tree, 'root/hook-count')) as f:
        assert f.read().count('run') == 1
    if digest:
        # another image: the hook is needed and gone, the BYOL message says so
        r = ansible_module('byol_bootable_hook', dict(args, image_digest='sha256:img2'))
        assert r.failed and 'does not exist' in r.result['msg'], r.output


def _esp_files(dev):
    out = subprocess.run(['mdir', '-/', '-b', '-i', dev, '::/'], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, env=dict(os.environ, MTOOLS_SKIP_CHECK='1'), check=False).stdout
    files = {}
    for line in out.splitlines():
        if line.startswith('::/') and not line.endswith('/'):
            files[line[3:]] = subprocess.run(['mcopy', '-n', '-i', dev, line, '-'], stdout=subprocess.PIPE,
                                             env=dict(os.environ, MTOOLS_SKIP_CHECK='1'), check=True).stdout
    return files


def test_esp_copied_to_the_other_esps_and_kept_in_sync(tree, ansible_module, loopdev):
    """The hook writes /boot/efi only (as OVH's examples do); every other ESP becomes a copy, so each disk boots alone."""
    esps = []
    for n in range(2):
        dev = loopdev(size_mib=40)
        subprocess.run(['mkfs.vfat', dev], stdout=subprocess.DEVNULL, check=True)
        esps.append(dev)
    # a stale loader on the second one
    stale = os.path.join(os.path.dirname(tree), 'stale.efi')
    with open(stale, 'w') as f:
        f.write('old loader\n')
    env = dict(os.environ, MTOOLS_SKIP_CHECK='1')
    subprocess.run(['mmd', '-i', esps[1], '::/EFI'], env=env, check=True)
    subprocess.run(['mcopy', '-i', esps[1], stale, '::/EFI/old.efi'], env=env, check=True)
    secret = os.path.join(os.path.dirname(tree), 'rescue-secret')
    with open(secret, 'w') as f:
        f.write('rescue system only\n')
    write_script(tree, 'mkdir -p /boot/efi/EFI/debian /boot/efi/EFI/BOOT\n'
                       'echo "grub $(cat /root/version)" > /boot/efi/EFI/debian/grubx64.efi\n'
                       'cp /boot/efi/EFI/debian/grubx64.efi /boot/efi/EFI/BOOT/BOOTX64.EFI\n'
                       'echo run >> /root/hook-count\nexit 0')
    with open(os.path.join(tree, 'root/version'), 'w') as f:
        f.write('1\n')
    os.makedirs(os.path.join(tree, 'boot/efi/EFI'))
    os.symlink(secret, os.path.join(tree, 'boot/efi/EFI/leak'))  # never followed out of the tree
    args = {'root': tree, 'esp_devices': esps, 'image_digest': 'sha256:esp'}
    r = ansible_module('byol_bootable_hook', args)
    assert r.rc == 0 and r.changed, r.output
    assert r.result['esp_synced'] == esps
    want = {'EFI/debian/grubx64.efi': b'grub 1\n', 'EFI/BOOT/BOOTX64.EFI': b'grub 1\n'}
    assert _esp_files(esps[0]) == want and _esp_files(esps[1]) == want
    # second run: nothing to copy, nothing written
    counters = [write_counters_of(dev) for dev in esps]
    r = ansible_module('byol_bootable_hook', args)
    assert r.rc == 0 and not r.changed and r.result['esp_synced'] == [], r.output
    assert [write_counters_of(dev) for dev in esps] == counters
    # an ESP that drifted is copied again, even when the hook does not need to run
    subprocess.run(['mdel', '-i', esps[0], '::/EFI/BOOT/BOOTX64.EFI'], env=env, check=True)
    r = ansible_module('byol_bootable_hook', args, check=True)
    assert r.rc == 0 and r.changed and r.result['esp_synced'] == [esps[0]], r.output
    assert 'EFI/BOOT/BOOTX64.EFI' not in _esp_files(esps[0])
    r = ansible_module('byol_bootable_hook', args)
    assert r.rc == 0 and r.changed and r.result['esp_synced'] == [esps[0]] and not r.result['ran'], r.output
    assert _esp_files(esps[0]) == want
    with open(os.path.join(tree, 'root/hook-count')) as f:
        assert f.read().count('run') == 1


def write_counters_of(dev):
    subprocess.run(['sync'], check=True)
    with open('/sys/block/%s/stat' % os.path.basename(dev)) as f:
        fields = f.read().split()
    return int(fields[4]), int(fields[6])

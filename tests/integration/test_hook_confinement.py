# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""byol_bootable_hook against hostile hooks: escapes from the tree, the rescue system's /run and sockets, writes to a
disk that is not a target (through /dev, mknod, a fresh devtmpfs, a node shipped in the image, a mount), /sys,
/proc/sys, modules.

Each attack is a hook that first writes a marker inside the tree (it ran), then tries; the test checks the
rescue system's side: the file that must not appear, the socket that must not be reached, and the non-target disk's
SHA-256 and /sys/block/<loop>/stat write counters, unchanged. The attacks use busybox and a small static program
(``attack.c`` below, built with gcc) for what a shell cannot do (the double chroot, connect(2), finit_module(2)).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import stat
import subprocess
import threading
import uuid

import pytest

BUSYBOX = shutil.which('busybox')
GCC = shutil.which('gcc')
APPLETS = ['sh', 'cat', 'echo', 'ls', 'dd', 'mknod', 'mount', 'umount', 'mkdir', 'grep', 'stat', 'head', 'touch',
           'readlink', 'find', 'sed']
SCRIPT = '/root/.ovh/make_image_bootable.sh'

pytestmark = pytest.mark.skipif(BUSYBOX is None or GCC is None, reason='needs busybox-static and gcc')

ATTACK_C = r'''
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc < 2) return 2;
    if (!strcmp(argv[1], "chroot-escape") && argc == 3) {
        /* the classic: chroot into a subdirectory, keep the working directory outside it, climb, chroot(".") */
        mkdir("/.esc", 0700);
        if (chroot("/.esc") != 0) { printf("CHROOT-FAILED %s\n", strerror(errno)); return 1; }
        for (int i = 0; i < 64; i++) if (chdir("..") != 0) break;
        if (chroot(".") != 0) { printf("CHROOT2-FAILED %s\n", strerror(errno)); return 1; }
        int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) { printf("ESCAPE-WRITE-FAILED %s\n", strerror(errno)); return 1; }
        if (write(fd, "escaped\n", 8) != 8) return 1;
        close(fd);
        printf("ESCAPE-WRITE-OK\n");
        return 0;
    }
    if (!strcmp(argv[1], "connect") && argc == 3) {
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un a;
        memset(&a, 0, sizeof a);
        a.sun_family = AF_UNIX;
        strncpy(a.sun_path, argv[2], sizeof a.sun_path - 1);
        if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) { printf("CONNECT-FAILED %s\n", strerror(errno)); return 1; }
        if (write(s, "from-the-hook\n", 14) != 14) return 1;
        close(s);
        printf("CONNECT-OK\n");
        return 0;
    }
    if (!strcmp(argv[1], "module") && argc == 3) {
        int fd = open(argv[2], O_RDONLY);
        long r = syscall(SYS_finit_module, fd, "", 0);
        if (r == 0) { printf("MODULE-LOADED\n"); return 0; }
        printf("MODULE-FAILED %s\n", errno == EPERM ? "EPERM" : errno == ENOSYS ? "ENOSYS" : strerror(errno));
        return 1;
    }
    return 2;
}
'''

CAP_SYS_MODULE, CAP_SYS_RAWIO, CAP_SYS_ADMIN, CAP_SYS_BOOT, CAP_SYS_TIME, CAP_MKNOD = 16, 17, 21, 22, 25, 27


@pytest.fixture(scope='module')
def attack_bin(tmp_path_factory):
    d = tmp_path_factory.mktemp('attack')
    src = d / 'attack.c'
    src.write_text(ATTACK_C)
    subprocess.run([GCC, '-static', '-O2', '-o', str(d / 'attack'), str(src)], check=True)
    return str(d / 'attack')


def settle():
    subprocess.run(['udevadm', 'settle', '--timeout=30'], check=False)


def write_counters(dev):
    """(writes completed, sectors written) of /sys/block/<dev>/stat."""
    with open('/sys/block/%s/stat' % os.path.basename(dev)) as f:
        fields = f.read().split()
    return int(fields[4]), int(fields[6])


def sha256_of(dev):
    h = hashlib.sha256()
    with open(dev, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


class Box(object):
    """A busybox tree on its own loop device (the target) and a disk that is not a target."""

    def __init__(self, root, target, other):
        self.root = root
        self.target = target
        self.other = other
        self.other_name = os.path.basename(other)
        st = os.stat(other)
        self.other_major, self.other_minor = os.major(st.st_rdev), os.minor(st.st_rdev)
        self.token = uuid.uuid4().hex[:12]

    def host_state(self):
        settle()
        subprocess.run(['sync'], check=True)
        return sha256_of(self.other), write_counters(self.other)

    def hook(self, name, body):
        host = os.path.join(self.root, SCRIPT.lstrip('/'))
        with open(host, 'w') as f:
            # (a) the marker inside the tree first: the attack ran
            f.write('#!/bin/sh\necho started > /root/started-%s\n%s\nexit 0\n' % (name, body))
        os.chmod(host, 0o755)

    def started(self, name):
        return os.path.isfile(os.path.join(self.root, 'root', 'started-%s' % name))


@pytest.fixture
def box(loopdev, tmp_path, attack_bin):
    target = loopdev(size_mib=64)
    subprocess.run(['mkfs.ext4', '-q', '-F', target], check=True)
    other = loopdev(size_mib=32)
    # the disk that is not a target: an ext4 filesystem with a file, never mounted on the rescue system
    subprocess.run(['mkfs.ext4', '-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0', other], check=True)
    root = str(tmp_path / 'a')
    os.mkdir(root)
    subprocess.run(['mount', target, root], check=True)
    for d in ('bin', 'root/.ovh', 'dev', 'proc', 'sys', 'run', 'tmp', 'etc', 'mnt'):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    shutil.copy2(BUSYBOX, os.path.join(root, 'bin', 'busybox'))
    shutil.copy2(attack_bin, os.path.join(root, 'bin', 'attack'))
    for applet in APPLETS:
        os.symlink('busybox', os.path.join(root, 'bin', applet))
    try:
        yield Box(root, target, other)
    finally:
        subprocess.run(['umount', root], check=False)


def run_attack(ansible_module, box, name, body, **args):
    box.hook(name, body)
    before = box.host_state()
    params = {'root': box.root, 'force': True, 'timeout': 120}
    params.update(args)
    r = ansible_module('byol_bootable_hook', params)
    after = box.host_state()
    assert box.started(name), 'the attack did not run: %s' % r.output
    return r, before, after


def assert_other_disk_untouched(box, before, after, r):
    assert after[0] == before[0], 'the non-target disk %s was written: %s' % (box.other, r.result.get('stdout'))
    assert after[1] == before[1], 'write counters of %s moved: %s -> %s' % (box.other, before[1], after[1])


def test_double_chroot_escape_fails(box, ansible_module, tmp_path):
    escaped = str(tmp_path / ('escaped-%s' % box.token))  # a directory of the rescue system, outside the tree
    r, dummy, dummy2 = run_attack(ansible_module, box, 'chroot', '/bin/attack chroot-escape %s' % escaped)
    assert r.rc == 0, r.output
    assert 'ESCAPE-WRITE-OK' not in r.result['stdout'], r.result['stdout']
    assert 'ESCAPE-WRITE-FAILED' in r.result['stdout'], r.result['stdout']  # it climbed and chrooted, and stayed in
    assert not os.path.exists(escaped)


def test_proc_root_escape_fails(box, ansible_module, tmp_path):
    escaped = str(tmp_path / ('proc-escaped-%s' % box.token))
    body = ('for p in /proc/[0-9]*; do\n'
            '  echo "via $p" > "$p/root%s" 2>/dev/null && echo "PROC-ROOT-OK $p"\n'
            '  echo "via $p cwd" > "$p/cwd/../../../../../../..%s" 2>/dev/null && echo "PROC-CWD-OK $p"\n'
            'done\n'
            'echo "proc entries: $(ls -d /proc/[0-9]* | wc -l)"\n'
            'readlink /proc/1/root; ls /proc/1/root/ | grep -c . ' % (escaped, escaped))
    r, dummy, dummy2 = run_attack(ansible_module, box, 'procroot', body)
    assert r.rc == 0, r.output
    assert 'PROC-ROOT-OK' not in r.result['stdout'] and 'PROC-CWD-OK' not in r.result['stdout'], r.result['stdout']
    assert not os.path.exists(escaped)


def test_host_unix_socket_and_run_are_out_of_reach(box, ansible_module):
    path = '/run/byol-test-%s.sock' % box.token
    written = '/run/byol-test-%s.written' % box.token
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(5)
    srv.settimeout(0.5)
    got = []
    stop = []

    def accept():
        while not stop:
            try:
                conn, dummy = srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            got.append(conn.recv(100))
            conn.close()

    thread = threading.Thread(target=accept)
    thread.daemon = True
    thread.start()
    try:
        r, dummy, dummy2 = run_attack(ansible_module, box, 'run', '/bin/attack connect %s\n'
                                      'echo hook > %s && echo RUN-WRITE-OK\n'
                                      'ls /run /run/udev' % (path, written))
    finally:
        stop.append(1)
        thread.join(5)
        srv.close()
        os.unlink(path)
    host_written = os.path.exists(written)
    if host_written:
        os.unlink(written)
    assert r.rc == 0, r.output
    assert 'CONNECT-FAILED' in r.result['stdout'], r.result['stdout']
    assert got == []
    assert not host_written, 'the hook wrote the rescue system\'s /run'
    # its own /run is private and writable: the write itself worked, where the rescue system cannot see it
    assert 'RUN-WRITE-OK' in r.result['stdout']
    assert 'control' not in r.result['stdout']  # no udev control socket of the rescue system


@pytest.mark.parametrize('attack', ['dev', 'mknod', 'devtmpfs', 'shipped_node', 'mount'])
def test_non_target_disk_is_out_of_reach(box, ansible_module, attack):
    other, major, minor = box.other, box.other_major, box.other_minor
    # only a write to a block device counts (dd to a missing node would create a plain file in the private /dev)
    dd = 'test -b {0} && dd if=/dev/urandom of={0} bs=4096 count=4 conv=notrunc,fsync 2>&1 && echo WROTE-OTHER-DISK'
    if attack == 'dev':
        body = 'ls -l %s; ' % other + dd.format(other)
    elif attack == 'mknod':
        body = ('for d in /dev /root /tmp /run; do mknod $d/evil b %d %d && echo MKNOD-OK $d && %s; done'
                % (major, minor, dd.format('$d/evil')))
    elif attack == 'devtmpfs':
        body = 'mount -t devtmpfs devtmpfs /mnt && echo DEVTMPFS-OK && ' + dd.format('/mnt/%s' % box.other_name)
    elif attack == 'shipped_node':
        # a block device node that came with the image's files (made here on the rescue system side)
        os.mknod(os.path.join(box.root, 'root', 'shipped-node'), stat.S_IFBLK | 0o600, os.makedev(major, minor))
        body = 'ls -l /root/shipped-node; ' + dd.format('/root/shipped-node') + ' || dd if=/root/shipped-node of=/dev/null count=1 2>&1'
    else:
        body = ('mount -t ext4 %s /mnt 2>&1 && echo MOUNTED-OTHER && echo x > /mnt/from-hook && umount /mnt;'
                'mknod /root/m b %d %d; mount -t ext4 /root/m /mnt 2>&1 && echo MOUNTED-OTHER && umount /mnt'
                % (other, major, minor))
    r, before, after = run_attack(ansible_module, box, attack, body)
    assert r.rc == 0, r.output
    out = r.result['stdout']
    for word in ('WROTE-OTHER-DISK', 'MOUNTED-OTHER', 'MKNOD-OK', 'DEVTMPFS-OK'):
        assert word not in out, out
    assert_other_disk_untouched(box, before, after, r)
    assert '/dev/' + box.other_name not in r.result['devices']


def test_sys_and_proc_sys_are_read_only(box, ansible_module):
    knob = '/sys/block/%s/queue/read_ahead_kb' % box.other_name
    with open(knob) as f:
        value = f.read().strip()
    new = '4' if value != '4' else '8'
    body = ('echo %s > %s && echo SYS-WRITE-OK\n'
            'echo 1 > /proc/sys/vm/drop_caches && echo PROC-SYS-WRITE-OK\n'
            'echo h > /proc/sysrq-trigger && echo SYSRQ-WRITE-OK\n'
            'grep -q " /sys sysfs ro," /proc/mounts && echo SYS-IS-RO' % (new, knob))
    try:
        r, before, after = run_attack(ansible_module, box, 'sys', body)
        with open(knob) as f:
            now = f.read().strip()
    finally:
        with open(knob, 'w') as f:
            f.write(value)
    assert r.rc == 0, r.output
    out = r.result['stdout']
    assert now == value, 'the hook changed %s' % knob
    assert 'SYS-WRITE-OK' not in out and 'PROC-SYS-WRITE-OK' not in out and 'SYSRQ-WRITE-OK' not in out, out
    assert 'SYS-IS-RO' in out, out
    assert_other_disk_untouched(box, before, after, r)


def test_capabilities_bounded_and_no_module_loading(box, ansible_module):
    body = ('grep -E "^(CapEff|CapBnd|CapInh|CapAmb|NoNewPrivs)" /proc/self/status\n'
            '/bin/attack module /bin/busybox')
    r, dummy, dummy2 = run_attack(ansible_module, box, 'caps', body)
    assert r.rc == 0, r.output
    out = r.result['stdout']
    status = dict(line.split(':', 1) for line in out.splitlines() if line.startswith(('Cap', 'NoNewPrivs')))
    eff, bnd = int(status['CapEff'], 16), int(status['CapBnd'], 16)
    for cap in (CAP_SYS_MODULE, CAP_SYS_RAWIO, CAP_SYS_ADMIN, CAP_SYS_BOOT, CAP_SYS_TIME, CAP_MKNOD):
        assert not eff & (1 << cap) and not bnd & (1 << cap), 'capability %d kept: %s' % (cap, out)
    assert int(status['CapInh'], 16) == 0 and int(status['CapAmb'], 16) == 0
    assert status['NoNewPrivs'].strip() == '1'
    # the kernel refuses before it reads the file: no CAP_SYS_MODULE (or, on a kernel without modules, no syscall)
    kernel_has_modules = os.path.exists('/proc/modules')
    assert ('MODULE-FAILED EPERM' in out) or (not kernel_has_modules and 'MODULE-FAILED ENOSYS' in out), out


def test_the_hooks_view_of_dev_sys_proc(box, ansible_module, loopdev):
    """What OVH's example hooks read is there; of the disks, only the targets."""
    extra = loopdev(size_mib=16)  # a second target disk, given as one
    settle()
    target_uuid = subprocess.run(['blkid', '-p', '-o', 'value', '-s', 'UUID', box.target], stdout=subprocess.PIPE,
                                 universal_newlines=True, check=True).stdout.strip()
    other_uuid = subprocess.run(['blkid', '-p', '-o', 'value', '-s', 'UUID', box.other], stdout=subprocess.PIPE,
                                universal_newlines=True, check=True).stdout.strip()
    body = ('echo "cmdline: $(cat /proc/cmdline)"\n'
            'find /dev -xdev | sed "s/^/dev: /"\n'
            'ls /dev/disk/by-uuid | sed "s/^/uuid: /"\n'
            'ls /run/udev/data | sed "s/^/udev: /"\n'
            'test -d /sys/firmware && echo SYS-FIRMWARE\n'
            'test -d /sys/block/%s && echo SYSFS-SEES-BLOCK\n'
            'echo x > /dev/null && head -c 4 /dev/urandom >/dev/null && echo CHARDEVS-OK\n'
            'mount -t tmpfs t /mnt 2>/dev/null && echo MOUNT-OK' % box.other_name)
    r, dummy, dummy2 = run_attack(ansible_module, box, 'view', body, disks=[extra])
    assert r.rc == 0, r.output
    out = r.result['stdout']
    lines = out.splitlines()
    devs = set(line[5:] for line in lines if line.startswith('dev: '))
    with open('/proc/cmdline') as f:
        assert 'cmdline: ' + f.read().strip() in out
    assert '/dev/' + os.path.basename(box.target) in devs and '/dev/' + os.path.basename(extra) in devs
    assert '/dev/' + box.other_name not in devs
    assert not [d for d in devs if re.match(r'/dev/loop\d', d) and re.sub(r'(?<=\d)p\d+$', '', d) not in (
        '/dev/' + os.path.basename(box.target), '/dev/' + os.path.basename(extra))], devs
    assert {'/dev/null', '/dev/zero', '/dev/full', '/dev/random', '/dev/urandom', '/dev/tty', '/dev/ptmx',
            '/dev/pts'} <= devs
    assert 'CHARDEVS-OK' in out and 'SYS-FIRMWARE' in out and 'SYSFS-SEES-BLOCK' in out
    assert 'MOUNT-OK' not in out
    uuids = [line[6:] for line in lines if line.startswith('uuid: ')]
    if os.path.exists('/dev/disk/by-uuid/' + target_uuid):  # udev made the link on the rescue system
        assert target_uuid in uuids
    assert other_uuid not in uuids
    st = os.stat(box.target)
    udev = [line[6:] for line in lines if line.startswith('udev: ')]
    if os.path.exists('/run/udev/data/b%d:%d' % (os.major(st.st_rdev), os.minor(st.st_rdev))):
        assert 'b%d:%d' % (os.major(st.st_rdev), os.minor(st.st_rdev)) in udev
    assert 'b%d:%d' % (box.other_major, box.other_minor) not in udev

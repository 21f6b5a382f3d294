# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Stage 2 of the hook's confinement: the program that becomes PID 1 of the hook's namespaces.

Do not use this from other collections or standalone plugins/modules!

``_chroot.run_hook`` runs ``unshare --mount --propagation private --uts --ipc --pid --fork --kill-child [--net]
-- <python> -I -S -c <the source of this file> <spec as JSON>``. Standard library only (``ctypes`` for
``mount(2)``, ``umount2(2)``, ``prctl(2)`` and ``capset(2)``), nothing imported from the collection: the
source runs as it is, by the rescue system's Python. The spec is built by the module from the rescue system's
own ``/dev`` and ``/sys``, never from the tree. In the private mount namespace, before anything of the tree runs:

1. the tree is bind-mounted onto itself with its submounts, and every mount of it is made ``nodev`` (a device
   node shipped in the image cannot be opened);
2. ``/dev`` is a new tmpfs holding only the nodes of the spec (the target disks, their partitions, the md/dm
   devices built on them only, the usual character devices) and the ``/dev`` symbolic links that lead to them,
   a new ``devpts`` instance and a ``/dev/shm`` tmpfs;
3. a new ``proc`` (this PID namespace's), with ``/proc/sys``, ``/proc/sysrq-trigger``, ``/proc/bus``, ``/proc/fs``,
   ``/proc/irq`` read-only and ``/proc/kcore``, ``/proc/keys``, ``/proc/timer_list`` hidden;
   a new read-only ``sysfs`` (and ``efivarfs``, read-only, when the rescue system has it);
4. ``/run`` and ``/tmp`` new tmpfs; ``/run/udev`` a read-only tmpfs with a copy of the udev database entries of
   the spec's devices only (no socket of the rescue system is reachable); with the network, a copy of the rescue
   system's ``resolv.conf`` bound read-only over the tree's;
5. ``pivot_root`` (util-linux, an argument list) into the tree, the old root detached (``umount2(MNT_DETACH)``);
   where the rescue system's root cannot be pivoted (an initramfs ``rootfs``) or util-linux has no
   ``pivot_root``, the tree is moved onto ``/`` and chrooted into, as ``switch_root`` does;
6. the capability bounding set reduced to the spec's list, the inheritable and ambient sets cleared,
   ``no_new_privs`` set (what ``setpriv --bounding-set ... --inh-caps -all --no-new-privs`` does), then
   ``execve`` of the hook: it is PID 1, and when it exits the kernel kills everything it left.
"""

import ctypes
import json
import os
import re
import subprocess
import sys

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_MOVE = 8192
MS_BIND = 4096
MS_REC = 16384
MNT_DETACH = 2
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
LINUX_CAPABILITY_VERSION_3 = 0x20080522

PER_MOUNT_FLAGS = {'ro': MS_RDONLY, 'nosuid': MS_NOSUID, 'nodev': MS_NODEV, 'noexec': MS_NOEXEC}

PROC_READ_ONLY = ('sys', 'sysrq-trigger', 'bus', 'fs', 'irq')
PROC_HIDDEN = ('kcore', 'keys', 'timer_list', 'sched_debug')


class Jail(object):
    """The system calls, with errors that say which step failed."""

    def __init__(self):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                                    ctypes.c_char_p]
        self.libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        self.libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

    @staticmethod
    def _b(text):
        return text.encode('utf-8', 'surrogateescape') if text is not None else None

    def _check(self, rc, what):
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, '%s: %s' % (what, os.strerror(err)))

    def mount(self, source, target, fstype, flags, data=None):
        self._check(self.libc.mount(self._b(source), self._b(target), self._b(fstype), flags, self._b(data)),
                    'mount %s on %s' % (fstype or source, target))

    def umount(self, target, flags=0):
        self._check(self.libc.umount2(self._b(target), flags), 'umount %s' % target)

    def prctl(self, option, arg2=0, arg3=0):
        self._check(self.libc.prctl(option, arg2, arg3, 0, 0), 'prctl %d' % option)

    def clear_inheritable(self):
        """capset(): effective and permitted as they are, inheritable empty."""
        header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
        data = (ctypes.c_uint32 * 6)()
        self._check(self.libc.capget(header, data), 'capget')
        data[2] = 0
        data[5] = 0
        self._check(self.libc.capset(header, data), 'capset')


def mount_flags(options):
    """The per-mount flags (ro, nosuid, nodev, noexec) of a mountinfo options field."""
    flags = 0
    for opt in options.split(','):
        flags |= PER_MOUNT_FLAGS.get(opt, 0)
    return flags


def mounts_below(root):
    """[(mount point, per-mount options)] at or below ``root`` (mountinfo order)."""
    out = []
    prefix = root.rstrip('/') + '/'
    with open('/proc/self/mountinfo', 'rb') as f:
        for line in f:
            fields = line.split()
            mnt = re.sub(br'\\([0-7]{3})', lambda m: bytes([int(m.group(1), 8)]), fields[4])
            mnt = mnt.decode('utf-8', 'surrogateescape')
            if mnt == root or mnt.startswith(prefix):
                out.append((mnt, fields[5].decode('ascii', 'replace')))
    return out


def no_link(path):
    """Refuse a mount target whose path is not what the module resolved (a symbolic link appeared)."""
    if os.path.realpath(path) != path:
        raise OSError(40, 'refusing to mount on %s: it leads to %s' % (path, os.path.realpath(path)))
    return path


def build(jail, spec):
    root = spec['root']

    # 1. the tree, with its submounts; no device node of it can be opened
    jail.mount(root, no_link(root), None, MS_BIND | MS_REC)
    for mnt, opts in mounts_below(root):
        jail.mount(None, mnt, None, MS_REMOUNT | MS_BIND | MS_NODEV | mount_flags(opts))

    # 2. /dev
    targets = spec['targets']
    dev = no_link(targets['dev'])
    jail.mount('byol-dev', dev, 'tmpfs', MS_NOSUID | MS_NOEXEC, 'mode=0755,size=1m,nr_inodes=65536')
    for d in spec['dev_dirs']:
        os.makedirs(os.path.join(dev, d), 0o755, exist_ok=True)
    for node in spec['dev_nodes']:
        path = os.path.join(dev, node['name'])
        kind = 0o060000 if node['type'] == 'b' else 0o020000
        os.mknod(path, kind | node['mode'], os.makedev(node['major'], node['minor']))
        os.chown(path, node['uid'], node['gid'])
        os.chmod(path, node['mode'])
    for name, target in spec['dev_links']:
        os.symlink(target, os.path.join(dev, name))
    os.mkdir(os.path.join(dev, 'pts'), 0o755)
    jail.mount('devpts', os.path.join(dev, 'pts'), 'devpts', MS_NOSUID | MS_NOEXEC, 'newinstance,ptmxmode=0666,mode=0620')
    os.symlink('pts/ptmx', os.path.join(dev, 'ptmx'))
    os.mkdir(os.path.join(dev, 'shm'), 0o1777)
    jail.mount('byol-shm', os.path.join(dev, 'shm'), 'tmpfs', MS_NOSUID | MS_NODEV, 'mode=1777')

    # 3. /proc, /sys
    proc = no_link(targets['proc'])
    jail.mount('proc', proc, 'proc', MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for name in PROC_READ_ONLY:
        path = os.path.join(proc, name)
        if os.path.exists(path):
            jail.mount(path, path, None, MS_BIND | MS_REC)
            jail.mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for name in PROC_HIDDEN:
        path = os.path.join(proc, name)
        if os.path.exists(path):
            jail.mount(os.path.join(dev, 'null'), path, None, MS_BIND)
    sys_dir = no_link(targets['sys'])
    jail.mount('sysfs', sys_dir, 'sysfs', MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    if spec.get('efivars') and os.path.isdir(os.path.join(sys_dir, 'firmware/efi/efivars')):
        jail.mount('efivarfs', os.path.join(sys_dir, 'firmware/efi/efivars'), 'efivarfs',
                   MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)

    # 4. /run, /tmp
    run = no_link(targets['run'])
    jail.mount('byol-run', run, 'tmpfs', MS_NOSUID | MS_NODEV, 'mode=0755')
    os.mkdir(os.path.join(run, 'lock'), 0o1777)
    os.chmod(os.path.join(run, 'lock'), 0o1777)
    os.mkdir(os.path.join(run, 'udev'), 0o755)
    jail.mount('byol-udev', os.path.join(run, 'udev'), 'tmpfs', MS_NOSUID | MS_NODEV | MS_NOEXEC, 'mode=0755')
    os.mkdir(os.path.join(run, 'udev/data'), 0o755)
    for name in spec['udev_data']:
        try:
            with open(os.path.join('/run/udev/data', name), 'rb') as src:
                content = src.read()
        except OSError:
            continue
        with open(os.path.join(run, 'udev/data', name), 'wb') as dst:
            dst.write(content)
    jail.mount(None, os.path.join(run, 'udev'), None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    tmp = no_link(targets['tmp'])
    jail.mount('byol-tmp', tmp, 'tmpfs', MS_NOSUID | MS_NODEV, 'mode=1777')
    if spec.get('resolv_conf') is not None and spec.get('resolv_target'):
        os.mkdir(os.path.join(run, 'byol'), 0o755)
        with open(os.path.join(run, 'byol/resolv.conf'), 'w') as f:
            f.write(spec['resolv_conf'])
        target = no_link(spec['resolv_target'])
        jail.mount(os.path.join(run, 'byol/resolv.conf'), target, None, MS_BIND)
        jail.mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)

    # 5. into the tree; the rescue system's root is detached
    os.chdir(root)
    if spec.get('pivot_root'):
        try:
            # util-linux's pivot_root: pivot_root(2) has no libc wrapper; it moves this process's root too
            subprocess.run([spec['pivot_root'], '.', '.'], check=True, stdin=subprocess.DEVNULL)  # pylint: disable=ansible-bad-function
        except subprocess.CalledProcessError:
            move_root(jail)  # the rescue system runs from its initramfs (rootfs cannot be pivoted)
        else:
            jail.umount('.', MNT_DETACH)
    else:
        move_root(jail)
    os.chdir('/')


def move_root(jail):
    """switch_root's way, where pivot_root cannot be used: the tree is moved onto ``/`` and becomes the root.
    ``..`` from its top stays there (the mount it covers is entered at its own root), and the rescue system's
    root beneath can only be reached by unmounting the tree, which needs CAP_SYS_ADMIN (dropped below)."""
    jail.mount('.', '/', None, MS_MOVE)
    os.chroot('.')


def drop_privileges(jail, keep):
    with open('/proc/sys/kernel/cap_last_cap') as f:
        last = int(f.read())
    for cap in range(last + 1):
        if cap not in keep:
            jail.prctl(PR_CAPBSET_DROP, cap)
    jail.clear_inheritable()
    try:
        jail.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        pass  # kernels before 4.3 have no ambient set
    jail.prctl(PR_SET_NO_NEW_PRIVS, 1)


def main(argv):
    spec = json.loads(argv[1])
    jail = Jail()
    try:
        with open('/proc/sys/kernel/cap_last_cap') as f:
            f.read()
        build(jail, spec)
        drop_privileges(jail, set(spec['keep_caps']))
    except (OSError, subprocess.CalledProcessError, ValueError) as e:
        sys.stderr.write('byol-hook-jail: could not confine the hook: %s\n' % e)
        sys.stderr.flush()
        os._exit(125)
    sys.stdout.flush()
    os.execve(spec['script'], [spec['script']], spec['env'])


if __name__ == '__main__':
    main(sys.argv)

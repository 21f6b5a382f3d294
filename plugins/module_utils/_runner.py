# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The one command runner every module uses.

Do not use this from other collections or standalone plugins/modules!

Commands are argument lists (never shell strings) and run with ``LANG=C``/``LC_ALL=C`` so
their output can be parsed. A failure raises :class:`CommandError` carrying rc, stdout and
stderr, which :func:`fail_from_error` puts into ``fail_json``. Each module creates one
``CommandRunner`` and hands it to the logic code, so tests can substitute it.
"""

from __future__ import annotations

import os

from ansible_collections.baremetal.byol.plugins.module_utils._errors import CommandError, ByolError
from ansible_collections.baremetal.byol.plugins.module_utils import _fstable

C_ENV = {'LANG': 'C', 'LC_ALL': 'C', 'LANGUAGE': 'C'}

# Debian package that provides each tool, for "missing tool" messages (the filesystems' mkfs and grow commands:
# from _fstable).
TOOL_PACKAGES = {
    'sgdisk': 'gdisk',
    'sfdisk': 'fdisk',
    'partx': 'util-linux',
    'wipefs': 'util-linux',
    'lsblk': 'util-linux',
    'blkid': 'util-linux',
    'blockdev': 'util-linux',
    'losetup': 'mount',
    'mount': 'mount',
    'umount': 'mount',
    'unshare': 'util-linux',
    'pivot_root': 'util-linux',
    'systemd-run': 'systemd',
    'true': 'coreutils',
    'chroot': 'coreutils',
    'parted': 'parted',
    'partprobe': 'parted',
    'mdadm': 'mdadm',
    'findmnt': 'util-linux',
    'pvcreate': 'lvm2',
    'vgcreate': 'lvm2',
    'lvcreate': 'lvm2',
    'lvs': 'lvm2',
    'pvs': 'lvm2',
    'vgchange': 'lvm2',
    'vgremove': 'lvm2',
    'mcopy': 'mtools',
    'mdir': 'mtools',
    'mtype': 'mtools',
    'mmd': 'mtools',
    'mdel': 'mtools',
    'mdeltree': 'mtools',
    'ip': 'iproute2',
    'qemu-img': 'qemu-utils',
    'qemu-nbd': 'qemu-utils',
    'rsync': 'rsync',
    'efibootmgr': 'efibootmgr',
    'udevadm': 'udev',
    'modprobe': 'kmod',
    'modinfo': 'kmod',
    'zstd': 'zstd',
    'zpool': 'zfsutils-linux',
    'zfs': 'zfsutils-linux',
}
TOOL_PACKAGES.update(_fstable.tool_packages())


class CommandResult(object):
    __slots__ = ('cmd', 'rc', 'stdout', 'stderr')

    def __init__(self, cmd, rc, stdout, stderr):
        self.cmd = cmd
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr


class CommandRunner(object):
    """Run external commands for one module invocation.

    ``module`` is an ``AnsibleModule``; only ``run_command`` and ``get_bin_path`` are used,
    so a test can pass any object that has them.
    """

    def __init__(self, module):
        self.module = module
        self._paths = {}

    def which(self, tool, required=True):
        """Absolute path of ``tool``; raises a ByolError naming its package if missing."""
        if tool not in self._paths:
            self._paths[tool] = self.module.get_bin_path(tool, required=False, opt_dirs=['/usr/sbin', '/sbin'])
        path = self._paths[tool]
        if not path and required:
            package = TOOL_PACKAGES.get(tool)
            hint = ' (install the package %s on the rescue system)' % package if package else ''
            raise ByolError('Required command %s was not found%s.' % (tool, hint))
        return path

    def run(self, args, check=True, data=None, binary_data=False, env=None, cwd=None, msg=None):
        """Run ``args`` (a list). Returns a CommandResult; raises CommandError if ``check``.

        ``args[0]`` is resolved with :meth:`which` unless it is already absolute.
        """
        if not isinstance(args, (list, tuple)) or not args:
            raise TypeError('CommandRunner.run takes a non-empty argument list')
        args = [str(a) for a in args]
        if not os.path.isabs(args[0]):
            args[0] = self.which(args[0])
        environ = dict(C_ENV)
        if env:
            environ.update(env)
        kwargs = dict(check_rc=False, environ_update=environ, data=data, binary_data=binary_data)
        if cwd is not None:
            kwargs['cwd'] = cwd
        rc, stdout, stderr = self.module.run_command(args, **kwargs)
        result = CommandResult(args, rc, stdout, stderr)
        if check and rc != 0:
            raise CommandError(
                msg or 'Command %s failed with exit code %d: %s' % (
                    ' '.join(args), rc, (stderr or stdout or '').strip()),
                cmd=args, rc=rc, stdout=stdout, stderr=stderr)
        return result

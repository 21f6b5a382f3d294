# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Small synthetic images for byol_image_burn's tests, built in seconds from real tools.

No Debian inside: a few files with the properties a copy must keep (owners, modes, hard
links, a sparse file, a device node, xattrs, an ACL, a symlink) and the BYOL hook. Built with
``mkfs.ext4 -d`` (no mount), ``mkfs.xfs`` + a loop mount (XFS has no ``-d``), ``sgdisk``,
``sfdisk``, ``qemu-img``, ``xz``/``gzip``/``zstd``.

``build_all(dest_dir)`` -> ``{name: path}``; a warm call (same :data:`RECIPE_VERSION`) rebuilds
nothing. Names:

- ``byoi_raw`` / ``byoi_qcow2``: GPT disk, partition 1 "esp" (vfat), partition 2 ext4 root.
- ``byoi_mbr_raw``: the same on an MBR (dos) table.
- ``byol_qcow2`` (and ``byol_raw``): GPT, one ext4 partition with the executable hook.
- ``byol_xfs_qcow2``: the same with XFS.
- bad: ``noptable_raw`` (a bare ext4 filesystem), ``backing_qcow2`` (backing file),
  ``datafile_qcow2`` (external data file), ``byol_two_parts_qcow2``, ``byol_nohook_qcow2``,
  ``byol_hook_noexec_qcow2``, ``byol_btrfs_qcow2`` (wrong filesystem).
  "qcow2 declared raw" is ``byoi_qcow2`` given with ``image_type: raw``.
- compressed: ``byoi_raw_xz``, ``byoi_raw_gz``, ``byoi_raw_zst``, ``byoi_qcow2_gz``, ``byol_qcow2_zst``, and
  ``byoi_compressed_qcow2`` (compressed clusters inside the qcow2).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

RECIPE_VERSION = '4'
MIB = 1024 * 1024
ROOT_FS_MIB = 48
DISK_MIB = 64
ROOT_UUID = '6a0f2d1c-0000-4b1e-9d3a-5ad0c0ffee01'
SPARSE_SIZE = 16 * MIB
OWNED_UID, OWNED_GID = 1234, 5678


def _run(args, check=True, **kw):
    kw.setdefault('stdout', subprocess.PIPE)
    kw.setdefault('stderr', subprocess.PIPE)
    return subprocess.run([str(a) for a in args], check=check, **kw)


def make_tree(root, hook=True, hook_mode=0o755):
    """The root filesystem's contents (needs root for chown/mknod)."""
    os.makedirs(os.path.join(root, 'etc'), exist_ok=True)
    with open(os.path.join(root, 'etc', 'hostname'), 'w') as f:
        f.write('synthetic\n')
    with open(os.path.join(root, 'etc', 'os-release'), 'w') as f:
        f.write('ID=synthetic\nNAME="byol synthetic image"\n')
    data = os.path.join(root, 'data')
    os.makedirs(data, exist_ok=True)
    # random-ish content to verify the bytes written
    with open(os.path.join(data, 'random.bin'), 'wb') as f:
        f.write(os.urandom(2 * MIB))
    # hard links
    with open(os.path.join(data, 'linked-a'), 'w') as f:
        f.write('same inode\n')
    os.link(os.path.join(data, 'linked-a'), os.path.join(data, 'linked-b'))
    # sparse file: data at both ends, a hole between
    with open(os.path.join(data, 'sparse.img'), 'wb') as f:
        f.write(b'start')
        f.seek(SPARSE_SIZE - 3)
        f.write(b'end')
    # owner and mode
    owned = os.path.join(data, 'owned')
    with open(owned, 'w') as f:
        f.write('owned by 1234:5678\n')
    os.chown(owned, OWNED_UID, OWNED_GID)
    os.chmod(owned, 0o640)
    # xattrs and ACL
    _run(['setfattr', '-n', 'user.byol', '-v', 'kept', owned])
    _run(['setfacl', '-m', 'u:4321:rw', owned])
    # symlink and device node
    os.symlink('../etc/hostname', os.path.join(data, 'hostname-link'))
    os.makedirs(os.path.join(root, 'dev'), exist_ok=True)
    os.mknod(os.path.join(root, 'dev', 'null'), 0o666 | 0o020000, os.makedev(1, 3))
    os.chmod(os.path.join(root, 'dev', 'null'), 0o666)
    if hook:
        ovh = os.path.join(root, 'root', '.ovh')
        os.makedirs(ovh, exist_ok=True)
        path = os.path.join(ovh, 'make_image_bootable.sh')
        with open(path, 'w') as f:
            f.write('#!/bin/sh\necho "synthetic image made bootable"\n')
        os.chmod(path, hook_mode)
    os.chmod(os.path.join(root, 'root'), 0o700) if os.path.isdir(os.path.join(root, 'root')) else None
    return root


def mkfs_ext4(tree, path, size_mib=ROOT_FS_MIB, label='byolroot'):
    with open(path, 'wb') as f:
        f.truncate(size_mib * MIB)
    _run(['mkfs.ext4', '-q', '-F', '-d', tree, '-L', label, '-U', ROOT_UUID, '-E', 'root_owner=0:0', path])
    return path


def mkfs_xfs(tree, path, size_mib=320, label='byolroot'):
    """XFS has no ``-d``: format a file, loop-mount it, copy the tree with its metadata."""
    with open(path, 'wb') as f:
        f.truncate(size_mib * MIB)
    _run(['mkfs.xfs', '-q', '-f', '-L', label, path])
    mnt = tempfile.mkdtemp(prefix='synthetic-xfs-')
    try:
        _run(['mount', '-o', 'loop', path, mnt])
        try:
            _run(['rsync', '-aHAXx', '--numeric-ids', '--sparse', tree + '/', mnt + '/'])
        finally:
            _run(['umount', mnt])
    finally:
        os.rmdir(mnt)
    return path


def mkfs_btrfs(tree, path, size_mib=128):
    with open(path, 'wb') as f:
        f.truncate(size_mib * MIB)
    _run(['mkfs.btrfs', '-q', '-f', '--rootdir', tree, path])
    return path


def place(fs_image, disk, offset):
    _run(['dd', 'if=%s' % fs_image, 'of=%s' % disk, 'bs=1M', 'seek=%d' % (offset // MIB), 'conv=notrunc,sparse',
          'status=none'])


def gpt_disk(path, size_mib, partitions):
    """``partitions``: list of (fs_image_or_None, size_mib, typecode, name). Starts at 1 MiB."""
    with open(path, 'wb') as f:
        f.truncate(size_mib * MIB)
    args = ['sgdisk', '--clear', '--disk-guid=8B5C3A2E-1111-4E3F-9A00-00000000B1E5']
    start = MIB
    for i, (_fs, psize, code, name) in enumerate(partitions, 1):
        args += ['--new=%d:%d:+%dM' % (i, start // 512, psize), '--typecode=%d:%s' % (i, code),
                 '--change-name=%d:%s' % (i, name)]
        start += psize * MIB
    _run(args + [path])
    start = MIB
    for fs, psize, _code, _name in partitions:
        if fs:
            place(fs, path, start)
        start += psize * MIB
    return path


def mbr_disk(path, size_mib, partitions):
    with open(path, 'wb') as f:
        f.truncate(size_mib * MIB)
    script = 'label: dos\nlabel-id: 0x0b1e5000\n'
    start = MIB
    for fs, psize, ptype, _name in partitions:
        script += 'start=%d, size=%d, type=%s\n' % (start // 512, psize * MIB // 512, ptype)
        start += psize * MIB
    _run(['sfdisk', '--quiet', path], input=script.encode())
    start = MIB
    for fs, psize, _t, _n in partitions:
        if fs:
            place(fs, path, start)
        start += psize * MIB
    return path


def qcow2(src, dest):
    _run(['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2', src, dest])
    return dest


def _vfat(path, size_mib=8):
    with open(path, 'wb') as f:
        f.truncate(size_mib * MIB)
    _run(['mkfs.vfat', '-n', 'ESP', path])
    return path


def _compress(src, dest, tool):
    with open(dest, 'wb') as out:
        cmd = {'xz': ['xz', '-T0', '-1', '-c', src], 'gz': ['gzip', '-1', '-c', src],
               'zst': ['zstd', '-q', '-c', src]}[tool]
        _run(cmd, stdout=out)
    return dest


def build_all(dest_dir, force=False):
    """Build every synthetic image into ``dest_dir``; returns ``{name: path}``. Needs root."""
    os.makedirs(dest_dir, exist_ok=True)
    index = os.path.join(dest_dir, 'index.json')
    if not force and os.path.exists(index):
        with open(index) as f:
            data = json.load(f)
        if data.get('version') == RECIPE_VERSION and all(os.path.exists(p) for p in data['images'].values()):
            return data['images']
    work = tempfile.mkdtemp(prefix='synthetic-', dir=dest_dir)
    out = {}

    def p(name):
        return os.path.join(dest_dir, name)

    try:
        tree = make_tree(os.path.join(work, 'tree'))
        nohook = make_tree(os.path.join(work, 'tree-nohook'), hook=False)
        noexec = make_tree(os.path.join(work, 'tree-noexec'), hook_mode=0o644)
        root_fs = mkfs_ext4(tree, os.path.join(work, 'root.ext4'))
        esp = _vfat(os.path.join(work, 'esp.vfat'))

        # BYOI: ESP + root
        parts = [(esp, 8, 'EF00', 'esp'), (root_fs, ROOT_FS_MIB, '8300', 'root')]
        out['byoi_raw'] = gpt_disk(p('byoi.raw'), DISK_MIB, parts)
        out['byoi_qcow2'] = qcow2(out['byoi_raw'], p('byoi.qcow2'))
        out['byoi_mbr_raw'] = mbr_disk(p('byoi-mbr.raw'), DISK_MIB, [(esp, 8, 'ef', 'esp'), (root_fs, ROOT_FS_MIB, '83', 'root')])
        out['byoi_raw_xz'] = _compress(out['byoi_raw'], p('byoi.raw.xz'), 'xz')
        out['byoi_raw_gz'] = _compress(out['byoi_raw'], p('byoi.raw.gz'), 'gz')
        out['byoi_raw_zst'] = _compress(out['byoi_raw'], p('byoi.raw.zst'), 'zst')
        out['byoi_qcow2_gz'] = _compress(out['byoi_qcow2'], p('byoi.qcow2.gz'), 'gz')
        out['byoi_compressed_qcow2'] = p('byoi-compressed.qcow2')  # qcow2-internal (zlib) compressed clusters
        _run(['qemu-img', 'convert', '-c', '-f', 'raw', '-O', 'qcow2', out['byoi_raw'], out['byoi_compressed_qcow2']])

        # BYOL: one ext4 partition with the hook
        out['byol_raw'] = gpt_disk(p('byol.raw'), DISK_MIB, [(root_fs, ROOT_FS_MIB, '8300', 'root')])
        out['byol_qcow2'] = qcow2(out['byol_raw'], p('byol.qcow2'))
        out['byol_qcow2_zst'] = _compress(out['byol_qcow2'], p('byol.qcow2.zst'), 'zst')
        xfs = mkfs_xfs(tree, os.path.join(work, 'root.xfs'))
        xfs_raw = gpt_disk(os.path.join(work, 'byol-xfs.raw'), 336, [(xfs, 320, '8300', 'root')])
        out['byol_xfs_qcow2'] = qcow2(xfs_raw, p('byol-xfs.qcow2'))

        # bad images
        out['noptable_raw'] = shutil.copy(root_fs, p('noptable.raw'))
        out['backing_qcow2'] = p('backing.qcow2')
        _run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', out['byoi_raw'], '-F', 'raw', out['backing_qcow2']])
        out['datafile_qcow2'] = p('datafile.qcow2')
        _run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-o',
              'data_file=%s,data_file_raw=on' % p('datafile.data'), out['datafile_qcow2'], '%dM' % DISK_MIB])
        second = mkfs_ext4(nohook, os.path.join(work, 'second.ext4'), size_mib=8, label='second')
        two = gpt_disk(os.path.join(work, 'two.raw'), DISK_MIB + 10,
                       [(root_fs, ROOT_FS_MIB, '8300', 'root'), (second, 8, '8300', 'second')])
        out['byol_two_parts_qcow2'] = qcow2(two, p('byol-two-parts.qcow2'))
        nohook_raw = gpt_disk(os.path.join(work, 'nohook.raw'), DISK_MIB,
                              [(mkfs_ext4(nohook, os.path.join(work, 'nohook.ext4')), ROOT_FS_MIB, '8300', 'root')])
        out['byol_nohook_qcow2'] = qcow2(nohook_raw, p('byol-nohook.qcow2'))
        noexec_raw = gpt_disk(os.path.join(work, 'noexec.raw'), DISK_MIB,
                              [(mkfs_ext4(noexec, os.path.join(work, 'noexec.ext4')), ROOT_FS_MIB, '8300', 'root')])
        out['byol_hook_noexec_qcow2'] = qcow2(noexec_raw, p('byol-hook-noexec.qcow2'))
        if shutil.which('mkfs.btrfs'):
            btrfs_raw = gpt_disk(os.path.join(work, 'btrfs.raw'), 136,
                                 [(mkfs_btrfs(tree, os.path.join(work, 'root.btrfs')), 128, '8300', 'root')])
            out['byol_btrfs_qcow2'] = qcow2(btrfs_raw, p('byol-btrfs.qcow2'))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    with open(index, 'w') as f:
        json.dump(dict(version=RECIPE_VERSION, images=out), f, indent=1)
    return out


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(description='Build the synthetic test images for byol_image_burn')
    parser.add_argument('dest_dir')
    parser.add_argument('--force', action='store_true')
    args = parser.parse_args(argv)
    for name, path in sorted(build_all(args.dest_dir, force=args.force).items()):
        print('%-24s %s' % (name, path))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())

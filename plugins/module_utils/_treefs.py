# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Reads and writes inside a target tree that never leave it.

Do not use this from other collections or standalone plugins/modules!

A target tree (the installed system under ``/tmp/a``) holds what the image brought: its
symbolic links, FIFOs and device nodes are untrusted. Every file the collection reads or
writes inside such a tree goes through :class:`Tree`: paths are walked one component at a
time from a directory descriptor of the tree's top (``openat``-style, ``dir_fd``), each
component opened with ``O_NOFOLLOW``, so no symbolic link is followed, not even one that
points inside the tree; ``..`` is refused; what is not a directory where a directory must
be, or not a regular file where a file must be, is refused with a :class:`TreeError` that
names the path and what was found there. Writes go to a new temporary file in the same
directory (``O_EXCL``), are synced, then renamed over the final name, and the directory is
synced: a reader sees the old file or the new one, and a power cut never leaves a record
whose data did not reach the disk.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import stat

from ansible_collections.baremetal.byol.plugins.module_utils._blockdev import MOUNTINFO, read_mountinfo
from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError

_CLOEXEC = getattr(os, 'O_CLOEXEC', 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
MAX_READ = 16 * 1024 * 1024


class TreeError(ByolError):
    """A path in a target tree leaves it, or is not what it must be."""


def kind(mode):
    """What ``mode`` (an ``st_mode``) is, in words for an error message."""
    if stat.S_ISLNK(mode):
        return 'a symbolic link'
    if stat.S_ISDIR(mode):
        return 'a directory'
    if stat.S_ISFIFO(mode):
        return 'a FIFO'
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return 'a device node'
    if stat.S_ISSOCK(mode):
        return 'a socket'
    if stat.S_ISREG(mode):
        return 'a regular file'
    return 'not a regular file'


def split_path(path):
    """``/var/lib/x`` or ``var/lib/x`` -> ``['var', 'lib', 'x']`` (pure).

    Empty and ``.`` components are dropped; ``..`` and NUL bytes raise :class:`TreeError`.
    """
    if not isinstance(path, str) or '\0' in path:
        raise TreeError('Invalid path %r inside the target tree.' % (path,))
    parts = [p for p in path.split('/') if p not in ('', '.')]
    if '..' in parts:
        raise TreeError('Refusing the path %s inside the target tree: it contains "..".' % path)
    return parts


class Tree(object):
    """A target tree opened by its top directory; use as a context manager or call :meth:`close`."""

    def __init__(self, root):
        self.root = os.path.realpath(root)
        try:
            self.fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
        except OSError as exc:
            raise TreeError('Cannot open the target tree %s: %s' % (root, exc.strerror))

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- helpers --------------------------------------------------------------------------
    def host_path(self, path):
        """The path on the host (for messages and results only; never opened by name)."""
        return os.path.join(self.root, *split_path(path)) if split_path(path) else self.root

    def _error(self, path, what):
        return TreeError('Refusing %s in the target tree %s: %s. An image or hook must not redirect the installer\'s '
                         'own files; remove it from the image (or the tree) and run again.'
                         % ('/' + '/'.join(split_path(path)), self.root, what), path=self.host_path(path))

    def _lstat_at(self, dirfd, name):
        try:
            return os.stat(name, dir_fd=dirfd, follow_symlinks=False)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            raise

    def _open_dir(self, path, create=False, mode=0o755, full=None):
        """A descriptor of directory ``path`` (a list of components), walked without following links; ``full``:
        the path asked for, named in errors."""
        cur = os.dup(self.fd)
        done = []
        try:
            for name in path:
                done.append(name)
                try:
                    nxt = os.open(name, _DIR_FLAGS, dir_fd=cur)
                except OSError as exc:
                    if exc.errno == errno.ENOENT and create:
                        try:
                            os.mkdir(name, mode, dir_fd=cur)
                        except OSError as mexc:
                            if mexc.errno != errno.EEXIST:
                                raise
                        nxt = os.open(name, _DIR_FLAGS, dir_fd=cur)
                    elif exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        st = self._lstat_at(cur, name)
                        raise self._error(full or '/'.join(done), '%s is %s, not a directory'
                                          % ('/' + '/'.join(done), kind(st.st_mode) if st else 'missing'))
                    elif exc.errno == errno.ENOENT:
                        raise
                    else:
                        raise TreeError('Cannot open %s: %s' % (self.host_path('/'.join(done)), exc.strerror))
                os.close(cur)
                cur = nxt
            return cur
        except BaseException:
            os.close(cur)
            raise

    # -- reading --------------------------------------------------------------------------
    def lstat(self, path):
        """``os.lstat`` of ``path`` in the tree, or None when it (or a parent) is missing; a parent that is a
        symbolic link or not a directory raises :class:`TreeError`."""
        parts = split_path(path)
        if not parts:
            return os.fstat(self.fd)
        try:
            dirfd = self._open_dir(parts[:-1], full=path)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise
        try:
            return self._lstat_at(dirfd, parts[-1])
        finally:
            os.close(dirfd)

    def isdir(self, path):
        """True when ``path`` is a real directory (no link on the way); False otherwise, never raises for links."""
        try:
            st = self.lstat(path)
        except TreeError:
            return False
        return st is not None and stat.S_ISDIR(st.st_mode)

    def read_bytes(self, path, missing_ok=True, max_size=MAX_READ):
        """Content of regular file ``path``; None when it is missing and ``missing_ok``.

        A symbolic link (at any component), a FIFO, a device or a directory raises :class:`TreeError`.
        """
        parts = split_path(path)
        if not parts:
            raise self._error(path, 'it is the top of the tree, not a file')
        try:
            dirfd = self._open_dir(parts[:-1], full=path)
        except OSError as exc:
            if exc.errno == errno.ENOENT and missing_ok:
                return None
            raise TreeError('Cannot read %s: %s' % (self.host_path(path), exc.strerror))
        try:
            try:
                # O_NONBLOCK: opening a FIFO must not hang; fstat then refuses it
                fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | _CLOEXEC,
                             dir_fd=dirfd)
            except OSError as exc:
                if exc.errno == errno.ENOENT and missing_ok:
                    return None
                if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
                    st = self._lstat_at(dirfd, parts[-1])
                    raise self._error(path, 'it is %s, not a regular file' % (kind(st.st_mode) if st else 'missing'))
                raise TreeError('Cannot read %s: %s' % (self.host_path(path), exc.strerror))
        finally:
            os.close(dirfd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise self._error(path, 'it is %s, not a regular file' % kind(st.st_mode))
            if max_size is not None and st.st_size > max_size:
                raise self._error(path, 'it has %d bytes, more than the %d expected' % (st.st_size, max_size))
            chunks = []
            while True:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
            return b''.join(chunks)
        finally:
            os.close(fd)

    def read_text(self, path, missing_ok=True):
        data = self.read_bytes(path, missing_ok=missing_ok)
        return None if data is None else data.decode('utf-8', 'replace')

    def read_json(self, path):
        """The JSON document in ``path``, or None when it is missing or not JSON (a record that cannot be
        read is no record); a link or special file raises :class:`TreeError`."""
        data = self.read_bytes(path)
        if data is None:
            return None
        try:
            return json.loads(data.decode('utf-8'))
        except ValueError:
            return None

    # -- writing --------------------------------------------------------------------------
    def makedirs(self, path, mode=0o755):
        """Create directory ``path`` and its missing parents (never through a link)."""
        try:
            os.close(self._open_dir(split_path(path), create=True, mode=mode))
        except OSError as exc:
            raise TreeError('Cannot create %s: %s' % (self.host_path(path), exc.strerror))

    def write_bytes(self, path, data, mode=0o644, dir_mode=0o755):
        """Replace ``path`` atomically with ``data`` (synced, then renamed, then the directory synced).

        Missing parents are created. An existing symbolic link, directory, FIFO or device at ``path``, or a
        link anywhere above it, raises :class:`TreeError` and nothing is written. Returns the host path.
        """
        parts = split_path(path)
        if not parts:
            raise self._error(path, 'it is the top of the tree, not a file')
        try:
            dirfd = self._open_dir(parts[:-1], create=True, mode=dir_mode, full=path)
        except OSError as exc:
            raise TreeError('Cannot create the directory of %s: %s' % (self.host_path(path), exc.strerror))
        name = parts[-1]
        tmp = '.%s.byol-tmp.%d' % (name, os.getpid())
        try:
            st = self._lstat_at(dirfd, name)
            if st is not None and not stat.S_ISREG(st.st_mode):
                raise self._error(path, 'it is %s, not a regular file' % kind(st.st_mode))
            try:
                os.unlink(tmp, dir_fd=dirfd)  # left by an earlier run that was killed
            except OSError:
                pass
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC, mode, dir_fd=dirfd)
            except OSError as exc:
                raise TreeError('Cannot write %s: %s' % (self.host_path(path), exc.strerror))
            try:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                os.fchmod(fd, mode)
                os.fsync(fd)
            except OSError as exc:
                os.close(fd)
                os.unlink(tmp, dir_fd=dirfd)
                raise TreeError('Cannot write %s: %s' % (self.host_path(path), exc.strerror))
            os.close(fd)
            try:
                # rename replaces the name itself: it never follows a link put there since the check above
                os.rename(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
            except OSError as exc:
                os.unlink(tmp, dir_fd=dirfd)
                raise TreeError('Cannot write %s: %s' % (self.host_path(path), exc.strerror))
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
        return self.host_path(path)

    def write_text(self, path, text, mode=0o644):
        return self.write_bytes(path, text.encode('utf-8'), mode=mode)

    def write_json(self, path, data, mode=0o644):
        return self.write_bytes(path, (json.dumps(data, sort_keys=True) + '\n').encode('utf-8'), mode=mode)

    def sync(self):
        """Flush the tree's filesystems to their disks: the top's and every filesystem mounted below it (the
        installed system's ``/boot``, ``/boot/efi``, ``/var`` ...), each with ``syncfs`` (else ``sync``). Call it
        before a record that says the data is there: a power cut after the record must not lose what it
        describes."""
        syncfs(self.fd)
        for mount_point in mount_points_below(self.root):
            try:
                # not only directories: a file can be a mount point too (a bind mount); O_NONBLOCK: a FIFO never waits
                fd = os.open(mount_point, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC)
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    continue  # unmounted and removed since mountinfo was read
                raise TreeError('Cannot open %s to flush it to its disk: %s' % (mount_point, exc.strerror))
            try:
                syncfs(fd)
            finally:
                os.close(fd)


def mount_points_below(root, mountinfo=MOUNTINFO):
    """The mount points strictly below ``root`` (a real path), in mount order, from ``mountinfo``."""
    prefix = root.rstrip('/') + '/'
    try:
        mounts = read_mountinfo(mountinfo)
    except OSError:
        return []
    found = []
    for mount in mounts:
        if mount['mountpoint'].startswith(prefix) and mount['mountpoint'] not in found:
            found.append(mount['mountpoint'])
    return found


def syncfs(fd):
    """``syncfs(2)`` of the filesystem holding ``fd``; ``sync(2)`` where libc has no syncfs."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols, libc's included
        func = libc.syncfs
    except (OSError, AttributeError):
        os.sync()
        return
    if func(fd) != 0:
        err = ctypes.get_errno()
        raise TreeError('syncfs failed: %s' % os.strerror(err))


def check_dirs(root, path, create=False, mode=0o755):
    """Walk directory ``path`` below ``root`` without following links (creating what is missing when
    ``create``); returns its host path. For callers that must hand a path to a tool (``mount``)."""
    with Tree(root) as tree:
        try:
            os.close(tree._open_dir(split_path(path), create=create, mode=mode))  # pylint: disable=protected-access
        except OSError as exc:
            raise TreeError('Cannot open %s: %s' % (tree.host_path(path), exc.strerror))
        return tree.host_path(path)

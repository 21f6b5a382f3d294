# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Run a BYOL image's ``make_image_bootable.sh`` inside the installed tree.

Do not use this from other collections or standalone plugins/modules!

The pure part (path resolution inside a tree, mountinfo parsing, the device allow-list, the
environment and the command line) is unit-tested; :func:`run_hook` does the I/O:

1. validate the script (inside the tree, regular file, executable) before anything is mounted;
2. work out what the hook may reach: the target disks (``disks``, and the disks under the tree's own
   filesystems), their partitions and the md/dm devices built only on them (``/sys/class/block/*/holders``),
   the ``/dev`` links that lead to them, their udev database entries;
3. run ``unshare --mount --propagation private --uts --ipc --pid --fork --kill-child [--net] -- <python> -I -S -c
   <_hookjail's source> <spec>``: stage 2 (:mod:`._hookjail`) builds the hook's view in the private mount
   namespace (the tree ``nodev``, a private ``/dev`` with only the allowed nodes, new ``proc`` and read-only
   ``sysfs``, private ``/run``, ``/run/udev`` and ``/tmp``), does ``pivot_root`` into the tree, detaches the old
   root, bounds the capabilities (:data:`HOOK_CAPABILITIES`), sets ``no_new_privs`` and executes the hook as PID 1
   of its namespace: when it exits (or is killed on timeout) the kernel kills every process it left behind, and
   every mount of the namespace goes with it;
4. always: kill what is left under the tree and check ``/proc/self/mountinfo`` that the tree is mounted
   exactly as it was found (nothing was mounted outside the namespace).
"""

from __future__ import annotations

import errno
import hashlib
import inspect
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time

from ansible_collections.baremetal.byol.plugins.module_utils import _blockdev
from ansible_collections.baremetal.byol.plugins.module_utils import _hook_output
from ansible_collections.baremetal.byol.plugins.module_utils import _hookjail
from ansible_collections.baremetal.byol.plugins.module_utils import _lock
from ansible_collections.baremetal.byol.plugins.module_utils import _rules
from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError, ValidationError
from ansible_collections.baremetal.byol.plugins.module_utils._image import record
from ansible_collections.baremetal.byol.plugins.module_utils._treefs import Tree, TreeError

DEFAULT_SCRIPT = '/root/.ovh/make_image_bootable.sh'
LOG_PATH = '/var/log/byol/make_image_bootable.log'
MARKER_PATH = record.HOOK_MARKER  # the hook's marker: written and read by _image/record.py, beside the image's records

SAFE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

# What stage 2 mounts in the hook's namespace (reported as ``mounts``); none of it is visible outside.
JAIL_MOUNTS = ('/dev', '/dev/pts', '/dev/shm', '/proc', '/sys', '/run', '/run/udev', '/tmp')
# Directories of the tree the namespace mounts on (created in the tree when it lacks them).
JAIL_DIRS = ('dev', 'proc', 'sys', 'run', 'tmp')
EFIVARS = _blockdev.EFIVARS

# The capability bounding set of the hook (numbers from linux/capability.h) and why each one stays. Every other
# capability is dropped: CAP_SYS_ADMIN (mount, a fresh devtmpfs, namespaces' setup, device-mapper ioctls),
# CAP_MKNOD (device nodes), CAP_SYS_MODULE, CAP_SYS_RAWIO, CAP_SYS_BOOT, CAP_SYS_TIME, CAP_WAKE_ALARM,
# CAP_DAC_READ_SEARCH (open_by_handle_at), CAP_SYS_PTRACE, CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_RESOURCE,
# CAP_SYS_NICE, CAP_LINUX_IMMUTABLE, CAP_SYSLOG, CAP_BPF, CAP_PERFMON, CAP_AUDIT_CONTROL, CAP_MAC_*, ...
HOOK_CAPABILITIES = (
    ('CAP_CHOWN', 0, 'dpkg and tar set the owners of the files they install'),
    ('CAP_DAC_OVERRIDE', 1, 'root reads and writes files whatever their mode (maintainer scripts expect it)'),
    ('CAP_FOWNER', 3, 'chmod, utime and setxattr on files of other owners (dpkg, cp -a)'),
    ('CAP_FSETID', 4, 'keep set-user/group-ID bits on the files packages install'),
    ('CAP_KILL', 5, 'signal the hook\'s own processes (it only sees its PID namespace)'),
    ('CAP_SETGID', 6, 'apt drops to its _apt user, maintainer scripts run commands as a service user'),
    ('CAP_SETUID', 7, 'the same, for user IDs'),
    ('CAP_SETPCAP', 8, 'a tool may drop capabilities further (it cannot add any: the bounding set is fixed)'),
    ('CAP_NET_BIND_SERVICE', 10, 'harmless without a network; with it, a test of a service on a low port'),
    ('CAP_IPC_LOCK', 14, 'gpg (apt\'s signature checks) locks its memory'),
    ('CAP_SYS_CHROOT', 18, 'maintainer scripts and dracut chroot; after pivot_root every chroot stays in the tree'),
    ('CAP_AUDIT_WRITE', 29, 'login tools (su, runuser) write audit records'),
    ('CAP_SETFCAP', 31, 'packages give binaries file capabilities (ping); they take effect in the installed system'),
)

MAX_SYMLINKS = 40


def byol_hook_message(script, problem):
    """The BYOL requirement message for a missing or unusable hook."""
    return ('The image has no usable %s (%s). A BYOL image must contain an executable '
            '/root/.ovh/make_image_bootable.sh script inside its partition (see the BYOL requirements); '
            'fix the image and run again.' % (script, problem))


class OutsideTree(Exception):
    """A path (or a symlink on it) leads out of the tree."""


def resolve_in_root(root, path, lstat=os.lstat, readlink=os.readlink, follow_last=True):
    """Resolve ``path`` the way a process chrooted into ``root`` would see it.

    Absolute symlink targets are taken relative to ``root``. A ``..`` (in ``path`` or in a
    symlink target) that climbs above the tree's top raises :class:`OutsideTree`: an image
    whose hook points out of itself is refused instead of silently clamped. Missing
    components are kept as they are (the caller checks existence). Returns the host path.
    """
    root = os.path.abspath(root)
    if not path.startswith('/'):
        raise OutsideTree('%s is not an absolute path' % path)
    todo = [c for c in path.split('/') if c not in ('', '.')]
    todo.reverse()
    done = []
    links = 0
    while todo:
        comp = todo.pop()
        if comp == '..':
            if not done:
                raise OutsideTree('%s leads above the top of the tree' % path)
            done.pop()
            continue
        candidate = os.path.join(root, *(done + [comp]))
        is_last = not todo
        try:
            st = lstat(candidate)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                done.append(comp)
                done.extend(reversed(todo))
                todo = []
                continue
            raise
        if stat.S_ISLNK(st.st_mode) and (follow_last or not is_last):
            links += 1
            if links > MAX_SYMLINKS:
                raise OutsideTree('too many levels of symbolic links in %s' % path)
            target = readlink(candidate)
            parts = [c for c in target.split('/') if c not in ('', '.')]
            if target.startswith('/'):
                done = []
            todo.extend(reversed(parts))
            continue
        done.append(comp)
    return os.path.join(root, *done) if done else root


def mounts_under(mounts, root):
    """Mounts whose mount point is ``root`` or below it."""
    root = root.rstrip('/') or '/'
    prefix = root + '/' if root != '/' else '/'
    return [m for m in mounts if m['mountpoint'] == root or m['mountpoint'].startswith(prefix)]


def hook_environment(extra=None, network=False):
    """The hook's whole environment: nothing is inherited from the rescue system or Ansible."""
    env = {
        'PATH': SAFE_PATH,
        'HOME': '/root',
        'USER': 'root',
        'LOGNAME': 'root',
        'SHELL': '/bin/sh',
        'LANG': 'C.UTF-8',
        'TERM': 'dumb',
        'DEBIAN_FRONTEND': 'noninteractive',
        'BYOL_NETWORK': '1' if network else '0',
    }
    for key, value in (extra or {}).items():
        key = str(key)
        if not key or '=' in key or '\0' in key or not (key[0].isalpha() or key[0] == '_') \
                or not all(c.isalnum() or c == '_' for c in key):
            raise ValidationError('Invalid environment variable name %r for the hook.' % key)
        value = '' if value is None else str(value)
        if '\0' in value:
            raise ValidationError('The value of environment variable %s contains a NUL byte.' % key)
        env[key] = value
    return env


def hook_command(unshare, python, spec, network=False):
    """The argument list that runs stage 2 (then the hook) in new namespaces; ``spec`` is a dict (JSON in argv)."""
    args = [unshare, '--mount', '--propagation', 'private', '--uts', '--ipc', '--pid', '--fork', '--kill-child']
    if not network:
        args.append('--net')
    args.extend(['--', python, '-I', '-S', '-c', stage2_source(), json.dumps(spec, sort_keys=True)])
    return args


def stage2_source():
    """The source of :mod:`._hookjail`, run by the rescue system's Python as ``-c``."""
    return inspect.getsource(_hookjail)


def display_command(argv):
    """``argv`` for the log: stage 2's source and spec are named, not printed."""
    if '-c' in argv:
        i = argv.index('-c')
        return argv[:i + 1] + ['<_hookjail.py>', '<spec>']
    return list(argv)


# --------------------------------------------------------------------------- the device allow-list


def _listdir(path):
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def block_name(path, sysfs='/sys'):
    """The kernel name (``sda``, ``loop5p1``, ``md127``, ``dm-0``) of block device ``path``."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise ValidationError('The target disk %s cannot be used for the hook: %s.' % (path, e.strerror))
    if not stat.S_ISBLK(st.st_mode):
        raise ValidationError('The target disk %s is not a block device.' % path)
    link = os.path.join(sysfs, 'dev', 'block', '%d:%d' % (os.major(st.st_rdev), os.minor(st.st_rdev)))
    return os.path.basename(os.path.realpath(link))


def _block_dir(name, sysfs):
    return os.path.join(sysfs, 'class', 'block', name)


def partitions_of(name, sysfs='/sys'):
    base = _block_dir(name, sysfs)
    return [n for n in _listdir(base) if os.path.isfile(os.path.join(base, n, 'partition'))]


def whole_disks_under(name, sysfs='/sys', depth=0):
    """The whole disks at the bottom of ``name``'s stack (slaves, recursively; a partition's parent disk)."""
    if depth > 16:
        return set()
    slaves = _listdir(os.path.join(_block_dir(name, sysfs), 'slaves'))
    if slaves:
        found = set()
        for slave in slaves:
            found |= whole_disks_under(slave, sysfs, depth + 1)
        return found
    if os.path.isfile(os.path.join(_block_dir(name, sysfs), 'partition')):
        return {os.path.basename(os.path.dirname(os.path.realpath(_block_dir(name, sysfs))))}
    return {name}


def allowed_block_devices(disk_names, sysfs='/sys'):
    """The kernel names the hook may open: the disks, their partitions, and every device built on them
    (``holders``: md arrays, dm/LVM volumes, their partitions) whose every slave is itself allowed. A device
    built partly on another disk is left out: writing it would write that disk."""
    allowed = set()
    for disk in disk_names:
        allowed.add(disk)
        allowed.update(partitions_of(disk, sysfs))
    changed = True
    while changed:
        changed = False
        for name in sorted(allowed):
            for holder in _listdir(os.path.join(_block_dir(name, sysfs), 'holders')):
                if holder in allowed:
                    continue
                slaves = _listdir(os.path.join(_block_dir(holder, sysfs), 'slaves'))
                if slaves and all(sl in allowed for sl in slaves):
                    allowed.add(holder)
                    allowed.update(partitions_of(holder, sysfs))
                    changed = True
    return allowed


# The character devices every hook gets (name, major, minor, mode), as a container runtime gives them.
CHAR_DEVICES = (('null', 1, 3), ('zero', 1, 5), ('full', 1, 7), ('random', 1, 8), ('urandom', 1, 9), ('tty', 5, 0))
DEV_SKIP = ('pts', 'shm', 'mqueue', 'hugepages', 'fd')


def dev_view(allowed, sysfs='/sys', dev='/dev'):
    """(nodes, links, dirs, udev data names) of the hook's private /dev for the ``allowed`` kernel names."""
    nodes = []
    by_node = {}
    for name in sorted(allowed):
        number = _read(os.path.join(_block_dir(name, sysfs), 'dev'))
        if not number or ':' not in number:
            continue
        major, minor = (int(x) for x in number.split(':', 1))
        node = {'name': name.replace('!', '/'), 'type': 'b', 'major': major, 'minor': minor,
                'mode': 0o660, 'uid': 0, 'gid': 0}
        try:
            st = os.stat(os.path.join(dev, node['name']))
            if stat.S_ISBLK(st.st_mode) and st.st_rdev == os.makedev(major, minor):
                node.update(mode=stat.S_IMODE(st.st_mode) & 0o777, uid=st.st_uid, gid=st.st_gid)
        except OSError:
            pass
        nodes.append(node)
        by_node[os.path.join(dev, node['name'])] = node
    for name, major, minor in CHAR_DEVICES:
        nodes.append({'name': name, 'type': 'c', 'major': major, 'minor': minor, 'mode': 0o666, 'uid': 0, 'gid': 0})
    links = [('fd', '/proc/self/fd'), ('stdin', '/proc/self/fd/0'), ('stdout', '/proc/self/fd/1'),
             ('stderr', '/proc/self/fd/2')]
    # every link of the rescue system's /dev (by-id, by-uuid, by-partuuid, by-label, by-path, mapper, md, <vg>)
    # that leads to an allowed node; nothing of the other disks
    for top, dirs, files in os.walk(dev):
        if top == dev:
            dirs[:] = [d for d in dirs if d not in DEV_SKIP]
        for entry in files + dirs:
            path = os.path.join(top, entry)
            if os.path.islink(path) and os.path.realpath(path) in by_node:
                links.append((os.path.relpath(path, dev), os.readlink(path)))
    dirs = set()
    for name in [n['name'] for n in nodes] + [name for name, target in links]:
        parent = os.path.dirname(name)
        while parent:
            dirs.add(parent)
            parent = os.path.dirname(parent)
    udev = ['b%d:%d' % (n['major'], n['minor']) for n in nodes if n['type'] == 'b']
    return nodes, sorted(links), sorted(dirs, key=lambda d: (d.count('/'), d)), udev


def format_log(script, argv, rc, duration, stdout, stderr, timed_out, killed):
    lines = ['# byol_bootable_hook: %s' % script,
             '# command: %s' % ' '.join(argv),
             '# rc: %s%s' % (rc, ' (timed out, killed)' if timed_out else ''),
             '# duration: %.3f s' % duration]
    if killed:
        lines.append('# processes killed after the run: %s' % ', '.join(str(p) for p in killed))
    lines.append('# --- stdout ---')
    text = '\n'.join(lines) + '\n' + (stdout or '')
    if text and not text.endswith('\n'):
        text += '\n'
    text += '# --- stderr ---\n' + (stderr or '')
    if not text.endswith('\n'):
        text += '\n'
    return text


def tail(text, lines=40):
    parts = (text or '').rstrip('\n').splitlines()
    return '\n'.join(parts[-lines:])


# --------------------------------------------------------------------------- I/O below


def check_script(root, script):
    """Validate the hook; returns its host path. Raises ValidationError with the BYOL message."""
    if not os.path.isdir(root):
        raise ValidationError('The installed tree %s does not exist or is not a directory.' % root)
    if os.path.realpath(root) == '/':
        raise ValidationError('root must be the installed tree (for example /tmp/a), not the rescue system\'s /.')
    if not script.startswith('/'):
        raise ValidationError('script must be an absolute path inside the installed tree, got %s.' % script)
    try:
        host = resolve_in_root(root, script)
    except OutsideTree as e:
        raise ValidationError(byol_hook_message(script, 'it is a symbolic link out of the installed tree: %s' % e))
    try:
        st = os.lstat(host)
    except OSError:
        raise ValidationError(byol_hook_message(script, 'it does not exist in %s' % root))
    if not stat.S_ISREG(st.st_mode):
        raise ValidationError(byol_hook_message(script, 'it is not a regular file'))
    if not st.st_mode & 0o111:
        raise ValidationError(byol_hook_message(script, 'it is not executable (mode %04o)' % stat.S_IMODE(st.st_mode)))
    return host


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def _safe_dir(root, path, create):
    """Host path of directory ``path`` in the tree (resolved inside it), created if asked."""
    host = resolve_in_root(root, path)
    if create and not os.path.isdir(host):
        rel = os.path.relpath(host, root)
        cur = root
        for comp in rel.split(os.sep):
            cur = os.path.join(cur, comp)
            if os.path.islink(cur):
                raise ByolError('%s in the installed tree is a symbolic link; refusing to create %s.' % (cur, path))
            if not os.path.isdir(cur):
                os.mkdir(cur, 0o755)
    return host


def read_tree_file(root, path):
    """Content of regular file ``path`` in the tree, or None when it is missing, unreadable or not a regular file
    (no symbolic link is followed, at any component: see :mod:`._treefs`)."""
    try:
        with Tree(root) as tree:
            return tree.read_text(path)
    except TreeError:
        return None


def write_tree_file(root, path, content, mode=0o644):
    """Write ``content`` to ``path`` inside the tree, synced and replaced atomically; no symbolic link is followed
    at any component (a link, FIFO or device there raises :class:`._treefs.TreeError`, a ByolError)."""
    with Tree(root) as tree:
        return tree.write_text(path, content, mode=mode)


def mdadm_conf_path(root):
    """Where the installed system reads mdadm.conf: ``/etc/mdadm/mdadm.conf`` (Debian family, when the tree
    has ``/etc/mdadm/``), else ``/etc/mdadm.conf`` (RHEL family and the rest)."""
    with Tree(root) as tree:
        debian = tree.isdir('/etc/mdadm')
    return '/etc/mdadm/mdadm.conf' if debian else '/etc/mdadm.conf'


def prepared_files(root, fstab=None, mdadm_conf=None):
    """[(path in the tree, content)] the installer writes before the hook: the hook reads them
    (update-initramfs copies mdadm.conf, grub-mkconfig and dracut read fstab). Empty values are skipped."""
    files = []
    if fstab:
        files.append(('/etc/fstab', fstab))
    if mdadm_conf:
        files.append((mdadm_conf_path(root), mdadm_conf))
    return files


def processes_in_tree(root, proc='/proc'):
    """PIDs of processes chrooted into ``root`` (their root directory is inside it).

    A process that merely has its working directory in the tree (an operator's shell) is left alone.
    """
    root = os.path.realpath(root)
    pids = []
    for name in os.listdir(proc):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            target = os.readlink(os.path.join(proc, name, 'root'))
        except OSError:
            continue
        if target == root or target.startswith(root.rstrip('/') + '/'):
            pids.append(int(name))
    return pids


def kill_leftovers(root, wait=5.0):
    """SIGKILL every process still running inside the tree; returns their PIDs."""
    killed = []
    deadline = time.monotonic() + wait
    while True:
        pids = processes_in_tree(root)
        if not pids:
            return killed
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                if pid not in killed:
                    killed.append(pid)
            except OSError:
                pass
        if time.monotonic() > deadline:
            return killed
        time.sleep(0.1)


class TreeMounts(object):
    """The tree's mounts as found (the namespace mounts nothing outside itself; checked afterwards)."""

    def __init__(self, runner, root):
        self.runner = runner
        self.root = os.path.realpath(root)
        self.before = [(m['id'], m['mountpoint']) for m in mounts_under(_blockdev.read_mountinfo(), self.root)]
        self.created_dirs = []

    def _target(self, path):
        """Host path of directory ``path`` of the tree (resolved inside it), created when missing."""
        host = resolve_in_root(self.root, path)
        if not os.path.isdir(host):
            host = _safe_dir(self.root, path, create=True)
            self.created_dirs.append(path)
        return host

    def targets(self):
        """{name: host path} of the directories stage 2 mounts on."""
        return dict((d, self._target('/' + d)) for d in JAIL_DIRS)

    def resolv_target(self):
        """Host path of the tree's /etc/resolv.conf if it is a regular file there (the network copy goes over it)."""
        try:
            target = resolve_in_root(self.root, '/etc/resolv.conf')
        except OutsideTree:
            return None
        if os.path.isfile(target) and not os.path.islink(target):
            return target
        return None

    def cleanup(self):
        """Unmount everything below the tree that was not there before; verify. Returns errors."""
        errors = []
        before_ids = set(i for i, mp in self.before)
        for attempt in range(3):
            extra = [m for m in mounts_under(_blockdev.read_mountinfo(), self.root) if m['id'] not in before_ids]
            if not extra:
                break
            if attempt:
                kill_leftovers(self.root, wait=1.0)  # something still busy: kill, then retry
            for m in sorted(extra, key=lambda x: (x['mountpoint'].count('/'), x['id']), reverse=True):
                args = ['umount', m['mountpoint']] if attempt < 2 else ['umount', '--lazy', m['mountpoint']]
                res = self.runner.run(args, check=False)
                if attempt == 2:
                    # a lazy unmount detaches a mount something still holds busy: say so
                    errors.append('umount %s needed --lazy: %s' % (m['mountpoint'], (res.stderr or 'busy').strip()))
        after = [(m['id'], m['mountpoint']) for m in mounts_under(_blockdev.read_mountinfo(), self.root)]
        if sorted(after) != sorted(self.before):
            errors.append('mounts below %s differ from before the run: before %s, after %s'
                          % (self.root, [mp for i, mp in self.before], [mp for i, mp in after]))
        return errors


def run_namespaced(argv, env, timeout):
    """Run ``argv``; kill its process group on timeout. Returns (rc, stdout, stderr, timed_out)."""
    # run_command has no timeout and cannot kill a process group: the hook needs both.
    try:
        proc = subprocess.Popen(  # pylint: disable=ansible-bad-function
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, cwd='/', start_new_session=True, close_fds=True)
    except OSError as e:
        raise ByolError('Could not start %s: %s' % (argv[0], e), cmd=argv)
    # as communicate(), killing the process group on timeout, and publishing the latest output line while it runs
    out, err, timed_out = _hook_output.communicate(proc, timeout)
    text_out = out.decode('utf-8', 'replace') if out else ''
    text_err = err.decode('utf-8', 'replace') if err else ''
    return proc.returncode, text_out, text_err, timed_out


def tree_filesystem(runner, root):
    """The UUID of the filesystem mounted at ``root`` (``blkid -p``), or None when it is not a mount point."""
    root = os.path.realpath(root)
    mounts = [m for m in _blockdev.read_mountinfo() if m['mountpoint'] == root]
    if not mounts or not mounts[-1]['source'].startswith('/dev/'):
        return None
    if not runner.which('blkid', required=False):
        return None
    return _blockdev.probe(runner, mounts[-1]['source']).get('UUID') or None


def hook_state(root, script, image_digest=None, runner=None):
    """(host path of the script or None, digest, done, filesystem). Validates the script, unless the installer's
    record says the hook already ran for this image and the script is gone (a hook may remove itself)."""
    if not os.path.isdir(root):
        raise ValidationError('The installed tree %s does not exist or is not a directory.' % root)
    filesystem = tree_filesystem(runner, root) if runner is not None else None
    done = record.read_hook_record(root, filesystem)
    try:
        host = check_script(root, script)
    except ValidationError:
        if done and os.path.realpath(root) != '/' and script.startswith('/') and \
                record.hook_done(done, None, script, image_digest):
            return None, done.get('digest'), True, filesystem
        raise
    digest = image_digest or 'sha256:%s' % file_sha256(host)
    return host, digest, record.hook_done(done, digest, script, image_digest), filesystem


def jail_spec(root, script, env, disks=(), network=False, pivot_root='pivot_root', mounts=None, sysfs='/sys',
              dev='/dev'):
    """What stage 2 builds (see :mod:`._hookjail`); ``disks`` are the target disks (paths)."""
    root = os.path.realpath(root)
    names = set()
    for disk in disks or ():
        names |= whole_disks_under(block_name(disk, sysfs), sysfs)
    # the disks under the tree's own filesystems are targets too (the hook installs the loader on them)
    for m in mounts_under(_blockdev.read_mountinfo(), root):
        major, dummy, minor = m['devno'].partition(':')
        if major.isdigit() and minor.isdigit() and int(major) != 0:
            link = os.path.join(sysfs, 'dev', 'block', m['devno'])
            if os.path.exists(link):
                names |= whole_disks_under(os.path.basename(os.path.realpath(link)), sysfs)
    allowed = allowed_block_devices(names, sysfs)
    nodes, links, dirs, udev = dev_view(allowed, sysfs, dev)
    tree = mounts or TreeMounts(None, root)
    spec = {'root': root, 'script': script, 'env': env, 'targets': tree.targets(), 'dev_nodes': nodes,
            'dev_links': links, 'dev_dirs': dirs, 'udev_data': udev, 'pivot_root': pivot_root,
            'keep_caps': [number for dummy, number, dummy2 in HOOK_CAPABILITIES],
            'efivars': any(m['mountpoint'] == EFIVARS for m in _blockdev.read_mountinfo())}
    if network:
        host_resolv = os.path.realpath('/etc/resolv.conf')
        target = tree.resolv_target()
        if target and os.path.isfile(host_resolv):
            with open(host_resolv) as f:
                spec['resolv_conf'] = f.read()
            spec['resolv_target'] = target
    return spec, sorted(allowed)


def jail_mounts(spec):
    """The paths inside the tree that stage 2 mounts (for the result)."""
    mounts = list(JAIL_MOUNTS)
    if spec.get('efivars'):
        mounts.insert(mounts.index('/sys') + 1, EFIVARS)
    if spec.get('resolv_target'):
        mounts.append('/etc/resolv.conf')
    return mounts


JAIL_FAILED = 'byol-hook-jail: '
SYSTEMD_RUNNING = '/run/systemd/system'


def device_cgroup_command(systemd_run, allowed):
    """``systemd-run --scope`` with the device cgroup closed but for the allowed block devices (the standard
    pseudo devices, /dev/tty, /dev/ptmx and the pts are allowed by DevicePolicy=closed and listed anyway)."""
    args = [systemd_run, '--scope', '--quiet', '--collect', '-p', 'DevicePolicy=closed',
            '-p', 'DeviceAllow=/dev/tty rwm', '-p', 'DeviceAllow=/dev/ptmx rwm', '-p', 'DeviceAllow=char-pts rw']
    for name in sorted(allowed):
        args.extend(['-p', 'DeviceAllow=/dev/%s rwm' % name.replace('!', '/')])
    args.append('--')
    return args


def device_cgroup(runner, allowed, running=SYSTEMD_RUNNING):
    """(argument prefix, note): the kernel's device allow-list as a second wall when systemd is PID 1 (its
    BPF_PROG_TYPE_CGROUP_DEVICE program, as systemd-nspawn's DeviceAllow= uses). Tried with ``true`` first;
    without systemd, or when the scope cannot be made, the private /dev without CAP_MKNOD and CAP_SYS_ADMIN is
    the wall (docs/byol.md says why it holds) and the note says so."""
    if not os.path.isdir(running):
        return [], 'systemd is not PID 1 of the rescue system: no device cgroup'
    systemd_run = runner.which('systemd-run', required=False)
    true = runner.which('true', required=False)
    if not systemd_run or not true:
        return [], 'systemd-run was not found: no device cgroup'
    prefix = device_cgroup_command(systemd_run, allowed)
    probe = runner.run(prefix + [true], check=False)
    if probe.rc != 0:
        return [], 'systemd-run could not make a scope with a device policy: %s' % (
            (probe.stderr or probe.stdout or '').strip()[-300:])
    return prefix, 'systemd-run --scope -p DevicePolicy=closed with the allowed devices'


def run_hook(runner, root, script, timeout, network=False, environment=None, digest=None, files=(), disks=(),
             filesystem=None):
    """Write ``files`` ([(path in the tree, content)]) into the tree, then run the hook confined (see the module
    docstring). Returns a result dict; raises ByolError."""
    root = os.path.realpath(root)
    env = hook_environment(environment, network)
    unshare = runner.which('unshare')
    pivot_root = runner.which('pivot_root', required=False)
    mounts = TreeMounts(runner, root)
    spec, allowed = jail_spec(root, script, env, disks, network, pivot_root, mounts)
    argv = hook_command(unshare, sys.executable or 'python3', spec, network)
    prefix, cgroup_note = device_cgroup(runner, allowed)
    argv = prefix + argv
    # after the checks above (a missing tool or a bad variable fails with the tree untouched)
    for path, content in files:
        try:
            write_tree_file(root, path, content)
        except (OSError, TreeError) as e:
            raise ByolError('Could not write %s into the installed system at %s (nothing was run): %s' % (path, root, e))
    result = {'cmd': display_command(argv), 'rc': None, 'stdout': '', 'stderr': '', 'timed_out': False, 'killed': [],
              'devices': ['/dev/' + n.replace('!', '/') for n in allowed], 'device_cgroup': bool(prefix),
              'device_cgroup_note': cgroup_note}
    start = time.monotonic()
    cleanup_errors = []
    try:
        result['mounts'] = jail_mounts(spec)
        rc, out, err, timed_out = run_namespaced(argv, {'PATH': SAFE_PATH, 'LANG': 'C.UTF-8'}, timeout)
        result.update(rc=rc, stdout=out, stderr=err, timed_out=timed_out)
    finally:
        result['duration'] = round(time.monotonic() - start, 3)
        result['killed'] = kill_leftovers(root)
        cleanup_errors = mounts.cleanup()
    result['created_dirs'] = mounts.created_dirs
    result['log'] = LOG_PATH
    try:
        write_tree_file(root, LOG_PATH, format_log(script, result['cmd'], result['rc'], result['duration'],
                                                   result['stdout'], result['stderr'], result['timed_out'],
                                                   result['killed']))
    except (OSError, ByolError) as e:
        result['log'] = None
        result['log_error'] = str(e)
    if cleanup_errors:
        raise ByolError('Could not restore the mounts of %s after running the hook: %s' % (root, '; '.join(cleanup_errors)),
                        **result)
    if result['rc'] == 125 and (result['stderr'] or '').startswith(JAIL_FAILED):
        raise ByolError('Could not confine the hook (nothing of it ran): %s'
                        % result['stderr'][len(JAIL_FAILED):].strip(), **result)
    if result['timed_out']:
        raise ByolError('%s did not finish within %s s and was killed (with every process it started). Last output:\n%s'
                        % (script, timeout, tail(result['stderr'] or result['stdout'])), **result)
    if result['rc'] != 0:
        raise ByolError('%s failed with exit code %s. Its output (also in %s of the installed system):\n%s'
                        % (script, result['rc'], LOG_PATH, tail((result['stdout'] or '') + (result['stderr'] or ''))),
                        **result)
    result['marker'] = record.write_hook_record(root, digest, script, result['rc'], result['duration'], time.time(),
                                                filesystem)
    return result


# --------------------------------------------------------------------------- the other ESPs


ESP_MOUNT = '/boot/efi'
MTOOLS_ENV = {'MTOOLS_SKIP_CHECK': '1'}


def esp_tree_manifest(top):
    """{relative path: sha256 or None for a directory} of the files under ``top`` (never following a link:
    a symbolic link or a special file in the tree is not copied, FAT cannot hold one)."""
    manifest = {}
    for current, dirs, files in os.walk(top):
        rel = os.path.relpath(current, top)
        dirs[:] = sorted(d for d in dirs if not os.path.islink(os.path.join(current, d)))
        for d in dirs:
            manifest[os.path.normpath(os.path.join(rel, d))] = None
        for name in sorted(files):
            path = os.path.join(current, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            manifest[os.path.normpath(os.path.join(rel, name))] = file_sha256(path)
    return manifest


def esp_device_manifest(runner, device, scratch):
    """The same manifest for the FAT filesystem on ``device``, read with mtools (no mount)."""
    res = runner.run(['mdir', '-/', '-b', '-i', device, '::/'], check=False, env=MTOOLS_ENV)
    if res.rc != 0:
        if 'not found' in (res.stderr or ''):
            return {}  # an empty filesystem
        raise ByolError('Could not read the ESP %s: %s' % (device, (res.stderr or res.stdout).strip()), cmd=res.cmd)
    manifest = {}
    for line in (res.stdout or '').splitlines():
        if not line.startswith('::/'):
            continue
        rel = line[3:]
        if rel.endswith('/'):
            manifest[rel.rstrip('/')] = None
        else:
            runner.run(['mcopy', '-n', '-o', '-i', device, '::/' + rel, scratch], env=MTOOLS_ENV)
            manifest[rel] = file_sha256(scratch)
    return manifest


def sync_esps(runner, root, esp_devices, check_mode=False):
    """Make every ESP of ``esp_devices`` but the one mounted at /boot/efi a copy of the tree's /boot/efi (the
    hook installed the loader there only). Returns the devices that were (or would be) rewritten."""
    if not esp_devices:
        return []
    root = os.path.realpath(root)
    try:
        top = resolve_in_root(root, ESP_MOUNT)
    except OutsideTree:
        raise ByolError('/boot/efi of the installed system leads out of it; the ESPs were not synchronised.')
    if not os.path.isdir(top) or os.path.islink(top):
        return []
    mounted = [m for m in _blockdev.read_mountinfo() if m['mountpoint'] == top]
    source = os.path.realpath(mounted[-1]['source']) if mounted else None
    wanted = esp_tree_manifest(top)
    changed = []
    fd, scratch = tempfile.mkstemp(prefix='byol-esp.')
    os.close(fd)
    try:
        for device in esp_devices:
            if os.path.realpath(device) == source:
                continue
            if esp_device_manifest(runner, device, scratch) == wanted:
                continue
            changed.append(device)
            if check_mode:
                continue
            present = esp_device_manifest(runner, device, scratch)
            for rel in sorted(present, key=lambda p: p.count('/'), reverse=True):
                runner.run(['mdeltree' if present[rel] is None else 'mdel', '-i', device, '::/' + rel], env=MTOOLS_ENV)
            for rel in sorted((p for p in wanted if wanted[p] is None), key=lambda p: p.count('/')):
                runner.run(['mmd', '-i', device, '::/' + rel], env=MTOOLS_ENV)
            for rel in sorted(p for p in wanted if wanted[p] is not None):
                path = os.path.join(top, rel)
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                runner.run(['mcopy', '-o', '-m', '-Q', '-i', device, path, '::/' + rel], env=MTOOLS_ENV)
            if esp_device_manifest(runner, device, scratch) != wanted:
                raise ByolError('The ESP %s does not match /boot/efi of the installed system after the copy.' % device)
    finally:
        os.unlink(scratch)
    return changed


def run_module(module, runner, result):
    """byol_bootable_hook (see ``_module.run_step``): the hook once per image, then the ESPs in step."""
    p = module.params
    result.update(ran=False, rc=None, stdout='', stderr='', marker=MARKER_PATH, files=[])
    if p['timeout'] < 0:
        raise ValidationError('timeout must be 0 (no limit) or a number of seconds, got %d.' % p['timeout'])
    _rules.enforce(_rules.check_tree(p['root'], 'root')[1])
    _lock.take_server_lock(module, 'byol_bootable_hook', p['lock_timeout'])  # held until the module's process ends
    dummy, digest, done, filesystem = hook_state(p['root'], p['script'], p['image_digest'], runner)
    result['digest'] = digest
    if done and not p['force']:
        result['esp_synced'] = sync_esps(runner, p['root'], p['esp_devices'], module.check_mode)
        result['changed'] = bool(result['esp_synced'])
        result['msg'] = '%s already ran for this image (the installer\'s record %s); use force to run it again.%s' % (
            p['script'], MARKER_PATH, (' %s %s from /boot/efi.' % (
                'Would copy' if module.check_mode else 'Copied', ', '.join(result['esp_synced'])))
            if result['esp_synced'] else '')
        return result
    result['changed'] = True
    result['ran'] = True
    files = prepared_files(p['root'], p['fstab'], p['mdadm_conf'])
    result['files'] = [path for path, dummy in files]
    if module.check_mode:
        result['msg'] = 'Would %srun %s in %s%s.' % (
            'write %s, then ' % ', '.join(result['files']) if files else '', p['script'], p['root'],
            ', then copy /boot/efi to %s' % ', '.join(p['esp_devices']) if p['esp_devices'] else '')
        return result
    _hook_output.PROGRESS.configure(p['progress_file'], module.no_log_values)
    res = run_hook(runner, p['root'], p['script'], p['timeout'], network=p['network'],
                   environment=p['environment'], digest=digest, files=files, disks=p['disks'],
                   filesystem=filesystem)
    res.pop('cmd', None)
    result.update(res)
    result['esp_synced'] = sync_esps(runner, p['root'], p['esp_devices'])
    result['msg'] = '%s finished with exit code 0 in %.1f s.' % (p['script'], result['duration'])
    return result

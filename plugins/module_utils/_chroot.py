# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Run a BYOL image's ``make_image_bootable.sh`` inside the installed tree.

Do not use this from other collections or standalone plugins/modules!

The pure part (path resolution inside a tree, mountinfo parsing, marker content, the
environment and the command line) is unit-tested; :func:`run_hook` does the I/O:

1. validate the script (inside the tree, regular file, executable) before anything is mounted;
2. bind-mount ``/dev``, ``/dev/pts``, ``/sys`` (+ ``efivarfs`` on UEFI), ``/run`` and, only when
   the network is allowed, the rescue system's ``resolv.conf`` into the tree;
3. run ``unshare --mount --pid --fork --kill-child --mount-proc=<root>/proc --uts --ipc [--net]
   chroot <root> <script>``: a fresh ``/proc`` for the new PID namespace, no network
   interface but ``lo``, and the namespace's init is the script, so when it exits (or is
   killed on timeout) the kernel kills every process it left behind;
4. always: kill what is left under the tree, unmount what step 2 mounted in reverse order and
   check ``/proc/self/mountinfo`` that the tree is mounted exactly as it was found.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import stat
import subprocess
import time

from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError, ValidationError
from ansible_collections.baremetal.byol.plugins.module_utils._treefs import Tree, TreeError

DEFAULT_SCRIPT = '/root/.ovh/make_image_bootable.sh'
LOG_PATH = '/var/log/byol/make_image_bootable.log'
MARKER_PATH = '/var/lib/byol/make_image_bootable.done'

SAFE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

# Bind mounts into the tree, in mount order (unmounted in reverse). ``/proc`` is not here:
# unshare mounts a fresh proc for the new PID namespace (--mount-proc) in the private mount
# namespace, where it vanishes with the namespace.
BIND_MOUNTS = ('/dev', '/dev/pts', '/sys', '/run')
EFIVARS = '/sys/firmware/efi/efivars'

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


def unescape_mountinfo(field):
    """Undo the octal escapes (``\\040`` etc.) of /proc/self/mountinfo fields."""
    out = []
    i = 0
    while i < len(field):
        if field[i] == '\\' and i + 4 <= len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return ''.join(out)


def parse_mountinfo(text):
    """Parse /proc/self/mountinfo into a list of dicts (in kernel order)."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 10 or '-' not in fields:
            continue
        sep = fields.index('-')
        mounts.append({
            'id': int(fields[0]),
            'parent': int(fields[1]),
            'devno': fields[2],
            'root': unescape_mountinfo(fields[3]),
            'mountpoint': unescape_mountinfo(fields[4]),
            'options': fields[5],
            'optional': fields[6:sep],
            'fstype': fields[sep + 1],
            'source': unescape_mountinfo(fields[sep + 2]),
        })
    return mounts


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


def hook_command(unshare, chroot, root, script, network=False):
    """The argument list that runs ``script`` (a path inside the tree) in new namespaces."""
    args = [unshare, '--mount', '--propagation', 'private', '--uts', '--ipc', '--pid', '--fork', '--kill-child',
            '--mount-proc=%s' % os.path.join(root, 'proc')]
    if not network:
        args.append('--net')
    args.extend(['--', chroot, root, script])
    return args


def marker_content(digest, script, rc, duration, now):
    """Content of the marker that records a successful run for ``digest``."""
    return json.dumps({'digest': digest, 'script': script, 'rc': rc, 'duration': round(duration, 3),
                       'finished': now}, sort_keys=True) + '\n'


def marker_digest(text):
    """The digest recorded in a marker, or None if the marker is unreadable."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if isinstance(data, dict):
        return data.get('digest')
    return None


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


def read_mountinfo():
    with open('/proc/self/mountinfo') as f:
        return parse_mountinfo(f.read())


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
    """Bind mounts into the tree that this object made, and their removal."""

    def __init__(self, runner, root):
        self.runner = runner
        self.root = os.path.realpath(root)
        self.before = [(m['id'], m['mountpoint']) for m in mounts_under(read_mountinfo(), self.root)]
        self.mounted = []
        self.created_dirs = []

    def _target(self, path, is_dir=True):
        host = resolve_in_root(self.root, path)
        if is_dir:
            if not os.path.isdir(host):
                _safe_dir(self.root, path, create=True)
                self.created_dirs.append(path)
        return host

    def bind(self, source, path, is_dir=True):
        target = self._target(path, is_dir)
        self.runner.run(['mount', '--bind', source, target])
        self.mounted.append({'source': source, 'target': target, 'path': path})
        # never let the hook's mount changes propagate back to the rescue system
        self.runner.run(['mount', '--make-rslave', target], check=False)

    def setup(self, network=False):
        for path in BIND_MOUNTS:
            if not os.path.isdir(path):
                continue
            self.bind(path, path)
            if path == '/sys' and os.path.isdir(EFIVARS) and any(
                    m['mountpoint'] == EFIVARS for m in read_mountinfo()):
                self.bind(EFIVARS, EFIVARS)
        self._target('/proc')  # unshare mounts the namespace's own proc there
        if network:
            host_resolv = os.path.realpath('/etc/resolv.conf')
            try:
                target = resolve_in_root(self.root, '/etc/resolv.conf')
            except OutsideTree:
                target = None
            if target and os.path.isfile(host_resolv) and os.path.isfile(target) and not os.path.islink(target):
                self.bind(host_resolv, '/etc/resolv.conf', is_dir=False)

    def cleanup(self):
        """Unmount everything below the tree that was not there before; verify. Returns errors."""
        errors = []
        before_ids = set(i for i, mp in self.before)
        for attempt in range(3):
            extra = [m for m in mounts_under(read_mountinfo(), self.root) if m['id'] not in before_ids]
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
        after = [(m['id'], m['mountpoint']) for m in mounts_under(read_mountinfo(), self.root)]
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
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout if timeout and timeout > 0 else None)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    text_out = out.decode('utf-8', 'replace') if out else ''
    text_err = err.decode('utf-8', 'replace') if err else ''
    return proc.returncode, text_out, text_err, timed_out


def hook_state(root, script, image_digest=None):
    """(host path of the script, digest, recorded digest or None). Validates the script."""
    host = check_script(root, script)
    digest = image_digest or 'sha256:%s' % file_sha256(host)
    marker = read_tree_file(root, MARKER_PATH)
    return host, digest, (marker_digest(marker) if marker is not None else None)


def run_hook(runner, root, script, timeout, network=False, environment=None, digest=None, files=()):
    """Write ``files`` ([(path in the tree, content)]) into the tree, then run the hook (see the module
    docstring). Returns a result dict; raises ByolError."""
    root = os.path.realpath(root)
    env = hook_environment(environment, network)
    argv = hook_command(runner.which('unshare'), runner.which('chroot'), root, script, network)
    runner.which('mount')
    runner.which('umount')
    # after the checks above (a missing tool or a bad variable fails with the tree untouched)
    for path, content in files:
        try:
            write_tree_file(root, path, content)
        except (OSError, TreeError) as e:
            raise ByolError('Could not write %s into the installed system at %s (nothing was run): %s' % (path, root, e))
    mounts = TreeMounts(runner, root)
    result = {'cmd': argv, 'rc': None, 'stdout': '', 'stderr': '', 'timed_out': False, 'killed': []}
    start = time.monotonic()
    cleanup_errors = []
    try:
        mounts.setup(network)
        result['mounts'] = [m['path'] for m in mounts.mounted]
        rc, out, err, timed_out = run_namespaced(argv, env, timeout)
        result.update(rc=rc, stdout=out, stderr=err, timed_out=timed_out)
    finally:
        result['duration'] = round(time.monotonic() - start, 3)
        result['killed'] = kill_leftovers(root)
        cleanup_errors = mounts.cleanup()
    result['created_dirs'] = mounts.created_dirs
    result['log'] = LOG_PATH
    try:
        write_tree_file(root, LOG_PATH, format_log(script, argv, result['rc'], result['duration'], result['stdout'],
                                                   result['stderr'], result['timed_out'], result['killed']))
    except (OSError, ByolError) as e:
        result['log'] = None
        result['log_error'] = str(e)
    if cleanup_errors:
        raise ByolError('Could not restore the mounts of %s after running the hook: %s' % (root, '; '.join(cleanup_errors)),
                        **result)
    if result['timed_out']:
        raise ByolError('%s did not finish within %s s and was killed (with every process it started). Last output:\n%s'
                        % (script, timeout, tail(result['stderr'] or result['stdout'])), **result)
    if result['rc'] != 0:
        raise ByolError('%s failed with exit code %s. Its output (also in %s of the installed system):\n%s'
                        % (script, result['rc'], LOG_PATH, tail((result['stdout'] or '') + (result['stderr'] or ''))),
                        **result)
    write_tree_file(root, MARKER_PATH, marker_content(digest, script, result['rc'], result['duration'], time.time()))
    result['marker'] = MARKER_PATH
    return result

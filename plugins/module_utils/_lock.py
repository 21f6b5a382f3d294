# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The per-server lock, and directories that several runs share, created without races.

Do not use this from other collections or standalone plugins/modules!

Every module that changes the server takes :class:`ServerLock` before it reads or writes a disk: an exclusive
``flock`` on ``/run/baremetal-byol/server.lock``. The kernel drops it when the module's process ends (also when it
is killed), so a holder that died never blocks the next run. The lock file also carries a JSON note of who holds
it (pid, module, start time, the controller's address from ``SSH_CONNECTION``), so the run that waits, or gives up
after ``lock_timeout`` seconds, can say who holds the server since when and from where.

:func:`ensure_dir` creates a shared directory (state, progress, scratch, mount points) so that two runs that
create it at the same time both succeed, and refuses what is not a directory of this user: a symbolic link, a
file, or a directory that belongs to another user.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import stat
import time

from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError

RUN_DIR = '/run/baremetal-byol'
LOCK_NAME = 'server.lock'
DEFAULT_TIMEOUT = 600
NOTE_MAX = 4096


def run_dir():
    """The directory of the lock and of the progress files (``BYOL_RUN_DIR`` overrides it, for tests)."""
    return os.environ.get('BYOL_RUN_DIR') or RUN_DIR


def check_dir(path, what='directory', check_owner=True):
    """Raise ByolError unless ``path`` is a real directory (not a link) owned by this process's user (the owner is
    not checked without ``check_owner``)."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise ByolError('The %s %s cannot be read: %s' % (what, path, exc.strerror))
    if stat.S_ISLNK(st.st_mode):
        raise ByolError('The %s %s is a symbolic link, not a directory: remove the link, or choose another path'
                        % (what, path))
    if not stat.S_ISDIR(st.st_mode):
        raise ByolError('The %s %s exists and is not a directory: remove it, or choose another path' % (what, path))
    if check_owner and st.st_uid != os.geteuid():
        raise ByolError('The %s %s belongs to uid %d, not to uid %d that runs the module: remove it, or choose another '
                        'path' % (what, path, st.st_uid, os.geteuid()))
    return st


def ensure_dir(path, mode=0o700, what='directory', check_owner=True):
    """Create ``path`` and its parents if missing (safe when another run creates it at the same time), then
    check it with :func:`check_dir`. Returns True when this call created ``path``."""
    existed = os.path.lexists(path)
    try:
        os.makedirs(path, mode, exist_ok=True)
    except FileExistsError:
        pass  # a file or a dangling link where the directory belongs: check_dir names it
    except OSError as exc:
        raise ByolError('The %s %s cannot be created: %s' % (what, path, exc.strerror))
    check_dir(path, what, check_owner)
    return not existed


def origin(environ=None):
    """Where this run comes from: ``SSH_CONNECTION``'s client address, or ``local``."""
    environ = os.environ if environ is None else environ
    fields = (environ.get('SSH_CONNECTION') or '').split()
    if len(fields) >= 2:
        return '%s port %s (ssh)' % (fields[0], fields[1])
    return 'local'


def pid_alive(pid):
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError) as exc:
        return getattr(exc, 'errno', None) == 1  # EPERM: it exists, it is another user's
    return True


def describe_holder(note, alive=pid_alive):
    """``pid N (module) since T from X`` for a lock note (a dict, possibly empty)."""
    if not note or not note.get('pid'):
        return 'a process that left no note (it is starting, or it is not one of this collection\'s modules)'
    text = 'pid %s (%s) since %s from %s' % (note.get('pid'), note.get('module') or 'unknown module',
                                             note.get('since') or 'an unknown time', note.get('origin') or 'unknown')
    if not alive(note.get('pid')):
        text += ' - that process has ended, yet a process it started still holds the lock file open'
    return text


def parse_note(data):
    """The JSON note at the start of ``data`` (bytes), or {} (a note being rewritten may carry a tail)."""
    try:
        note, dummy = json.JSONDecoder().raw_decode(data.decode('utf-8', 'replace').strip('\0 \n'))
    except ValueError:
        return {}
    return note if isinstance(note, dict) else {}


class ServerLock(object):
    """Exclusive per-server lock of one module run (see the module docstring).

    ``timeout``: seconds to wait for another holder (0: fail at once). The lock is held until :meth:`release` or
    until the process ends.
    """

    def __init__(self, module_name, timeout=DEFAULT_TIMEOUT, path=None, environ=None, clock=time.monotonic,
                 sleep=time.sleep):
        self.module_name = module_name
        self.timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        self.path = path or os.path.join(run_dir(), LOCK_NAME)
        self.environ = os.environ if environ is None else environ
        self.clock = clock
        self.sleep = sleep
        self.fd = None
        self.waited = 0.0
        self.note = None

    def _open(self):
        ensure_dir(os.path.dirname(self.path), 0o755, 'state directory')
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ByolError('The lock file %s cannot be opened: %s (a symbolic link there is refused)'
                            % (self.path, exc.strerror))
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            os.close(fd)
            raise ByolError('The lock file %s is not a regular file of uid %d: remove it' % (self.path, os.geteuid()))
        return fd

    def read_note(self, fd=None):
        try:
            return parse_note(os.pread(self.fd if fd is None else fd, NOTE_MAX, 0))
        except OSError:
            return {}

    def acquire(self):
        if self.timeout < 0:
            raise ByolError('lock_timeout must be 0 (fail at once) or a number of seconds, got %d' % self.timeout)
        fd = self._open()
        start = self.clock()
        delay = 0.05
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except (BlockingIOError, InterruptedError):
                waited = self.clock() - start
                if waited >= self.timeout:
                    holder = self.read_note(fd)
                    os.close(fd)
                    raise ByolError(
                        'Another run is changing this server: the lock %s is held by %s. %s Let that run finish '
                        '(or stop it), or raise lock_timeout.' % (
                            self.path, describe_holder(holder),
                            'Gave up at once (lock_timeout is 0).' if not self.timeout
                            else 'Waited %d s (lock_timeout).' % self.timeout),
                        lock_holder=holder)
                self.sleep(min(delay, max(self.timeout - waited, 0.01)))
                delay = min(delay * 2, 1.0)
        self.fd = fd
        self.waited = round(self.clock() - start, 3)
        self.note = {'pid': os.getpid(), 'module': self.module_name, 'origin': origin(self.environ),
                     'since': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')}
        data = json.dumps(self.note, sort_keys=True).encode('utf-8') + b'\n'
        # write, then cut: a reader never sees an empty note, at worst the new note with the old one's tail
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        return self

    def release(self):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


# The option every module that changes the server has (its documentation: doc_fragments/server_lock.py).
LOCK_ARGUMENT_SPEC = dict(lock_timeout=dict(type='int', default=600))


def take_server_lock(module, name, timeout=None):
    """Take the server lock for ``module`` (an AnsibleModule; ``name`` its short name) unless in check mode (which
    changes nothing).

    Returns the held :class:`ServerLock` (or None in check mode). The lock stays held until the module's process
    ends (the descriptor is not closed when the object is dropped)."""
    if getattr(module, 'check_mode', False):
        return None
    return ServerLock(name, timeout=timeout).acquire()

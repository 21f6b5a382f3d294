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

A reinstall is many module runs. The *reinstall lease* (``reinstall.lease`` beside the lock, a JSON file) keeps
them together: the roles take it first (module ``byol_lease``) with a run id, every module of that run passes the
same id as ``lock_owner`` and renews it, the role releases it at the end. While a lease is live, a module of another
run (or one without ``lock_owner``) waits up to ``lock_timeout`` seconds, then refuses naming the holder: its run
id, controller, ansible-playbook pid, user, address, start time and last step. A lease is stale when nothing
renewed it for its ``ttl`` seconds, or when the controller that holds it says its ansible-playbook has ended (the
action plugin of ``byol_lease`` checks that on the controller and asks for a ``takeover``). Every take, takeover,
release and refusal is appended to ``reinstall.lease.log`` (JSON lines), the lease's history.

:func:`ensure_dir` creates a shared directory (state, progress, scratch, mount points) so that two runs that
create it at the same time both succeed, and refuses what is not a directory of this user: a symbolic link, a
file, or a directory that belongs to another user.
"""

from __future__ import annotations

import atexit
import datetime
import fcntl
import json
import os
import stat
import time

from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError

RUN_DIR = '/run/baremetal-byol'
LOCK_NAME = 'server.lock'
LEASE_NAME = 'reinstall.lease'
LEASE_LOG_NAME = 'reinstall.lease.log'
LEASE_LOG_MAX = 256 * 1024
DEFAULT_LEASE_TTL = 900
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


def utc(when=None):
    return datetime.datetime.fromtimestamp(time.time() if when is None else when, datetime.timezone.utc).strftime(
        '%Y-%m-%dT%H:%M:%SZ')


def lease_path(directory=None):
    return os.path.join(directory or run_dir(), LEASE_NAME)


def read_lease(path=None):
    """The current lease (a dict) or None: no lease, or a file that is not one (it is then ignored)."""
    path = path or lease_path()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            return None
        lease = parse_note(os.read(fd, NOTE_MAX))
    finally:
        os.close(fd)
    return lease if lease.get('owner') else None


def write_lease(lease, path=None):
    """Write ``lease`` in place atomically (a new file renamed over the old one). The caller holds the lock."""
    path = path or lease_path()
    tmp = '%s.%d.tmp' % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(lease, sort_keys=True).encode('utf-8') + b'\n')
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def remove_lease(path=None):
    try:
        os.unlink(path or lease_path())
    except FileNotFoundError:
        pass


def log_lease(event, lease, directory=None, **extra):
    """Append one line to the lease's history (``reinstall.lease.log``); the oldest half goes when it grows big."""
    path = os.path.join(directory or run_dir(), LEASE_LOG_NAME)
    entry = dict(extra, event=event, time=utc(), pid=os.getpid(), owner=(lease or {}).get('owner'),
                 step=(lease or {}).get('step'))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        return
    try:
        if os.fstat(fd).st_size > LEASE_LOG_MAX:
            with open(path, 'rb') as f:
                old = f.read()
            os.ftruncate(fd, 0)
            os.write(fd, old[len(old) // 2:].split(b'\n', 1)[-1])
        os.write(fd, json.dumps(entry, sort_keys=True).encode('utf-8') + b'\n')
    finally:
        os.close(fd)


def lease_expired(lease, now=None):
    """True when nothing renewed ``lease`` for longer than its ttl."""
    now = time.time() if now is None else now
    try:
        return now - float(lease.get('renewed_epoch', 0)) > float(lease.get('ttl', DEFAULT_LEASE_TTL))
    except (TypeError, ValueError):
        return True


def describe_lease(lease):
    """Who holds the server for a reinstall: run id, controller, pid, user, address, since when, last step."""
    ctl = lease.get('controller') or {}
    return ('run %s (controller %s, ansible-playbook pid %s, user %s, connected from %s) since %s; its last step: %s '
            'at %s; the lease is stale after %s s without a step' % (
                lease.get('owner'), ctl.get('host') or 'unknown', ctl.get('pid') or 'unknown',
                ctl.get('user') or 'unknown', lease.get('origin') or 'unknown', lease.get('since') or 'an unknown time',
                lease.get('step') or 'none', lease.get('renewed') or 'an unknown time',
                lease.get('ttl', DEFAULT_LEASE_TTL)))


def lease_refusal(lease, path, timeout):
    return ByolError(
        'Another run is reinstalling this server: the lease %s is held by %s. %s Let that run finish (or stop it: '
        'its lease ends when its controller says its ansible-playbook has ended, or after its ttl), or raise '
        'lock_timeout.' % (path, describe_lease(lease), 'Gave up at once (lock_timeout is 0).' if not timeout
                           else 'Waited %d s (lock_timeout).' % timeout),
        lease_holder=lease)


def renew_lease(owner, step, environ=None, directory=None, lease=None):
    """Make (or keep) ``owner`` the lease's holder with ``step`` as its last step. The caller holds the lock."""
    lease = lease if lease is not None else read_lease(lease_path(directory))
    now = time.time()
    if not lease or lease.get('owner') != owner:
        event = 'take'
        lease = {'owner': owner, 'since': utc(now), 'controller': {}, 'ttl': DEFAULT_LEASE_TTL,
                 'origin': origin(environ)}
    else:
        event = 'renew'
    lease.update(step=step, renewed=utc(now), renewed_epoch=now)
    write_lease(lease, lease_path(directory))
    log_lease(event, lease, directory)
    return lease


class ServerLock(object):
    """Exclusive per-server lock of one module run (see the module docstring).

    ``timeout``: seconds to wait for another holder (0: fail at once). The lock is held until :meth:`release` or
    until the process ends. ``owner``: the run id of the reinstall this module belongs to (``lock_owner``): a live
    lease of another run makes it wait (then refuse); its own lease (or none) is renewed with this step.
    ``lease=False`` ignores the lease (the lease module handles it itself).
    """

    def __init__(self, module_name, timeout=DEFAULT_TIMEOUT, path=None, environ=None, clock=time.monotonic,
                 sleep=time.sleep, owner=None, lease=True, takeover=None, renew=True):
        self.module_name = module_name
        self.timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        self.path = path or os.path.join(run_dir(), LOCK_NAME)
        self.environ = os.environ if environ is None else environ
        self.clock = clock
        self.sleep = sleep
        self.fd = None
        self.waited = 0.0
        self.note = None
        self.owner = owner or None
        self.check_lease = lease
        self.takeover = takeover or None
        self.renew = renew
        self.lease = None
        self.previous = None

    @property
    def directory(self):
        return os.path.dirname(self.path)

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

    def _flock(self, fd, start):
        """Wait for the flock on ``fd`` until ``timeout`` seconds after ``start``; raise naming the holder."""
        delay = 0.05
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
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

    def lease_blocks(self, lease):
        """True when ``lease`` belongs to another run and is live."""
        return (bool(lease) and lease.get('owner') != self.owner and not lease_expired(lease)
                and not (self.takeover and lease.get('owner') == self.takeover))

    def _wait_for_lease(self, lease, start, delay):
        """A live lease of another run blocks: sleep (returns the next delay) or, past the timeout, refuse."""
        waited = self.clock() - start
        if waited >= self.timeout:
            log_lease('refuse', lease, self.directory, refused=self.owner, module=self.module_name)
            raise lease_refusal(lease, lease_path(self.directory), self.timeout)
        self.sleep(min(delay, max(self.timeout - waited, 0.01)))
        return min(delay * 2, 2.0)

    def acquire(self):
        if self.timeout < 0:
            raise ByolError('lock_timeout must be 0 (fail at once) or a number of seconds, got %d' % self.timeout)
        start = self.clock()
        delay = 0.2
        while True:
            # another reinstall holds the server (maybe between its steps, maybe in one): wait for its end
            lease = read_lease(lease_path(self.directory)) if self.check_lease else None
            if self.lease_blocks(lease):
                delay = self._wait_for_lease(lease, start, delay)
                continue
            fd = self._open()
            self._flock(fd, start)
            lease = read_lease(lease_path(self.directory)) if self.check_lease else None
            if not self.lease_blocks(lease):
                break
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            delay = self._wait_for_lease(lease, start, delay)
        self.fd = fd
        self.waited = round(self.clock() - start, 3)
        self.note = {'pid': os.getpid(), 'module': self.module_name, 'origin': origin(self.environ),
                     'since': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')}
        if self.owner:
            self.note['owner'] = self.owner
        data = json.dumps(self.note, sort_keys=True).encode('utf-8') + b'\n'
        # write, then cut: a reader never sees an empty note, at worst the new note with the old one's tail
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        self.previous = lease
        if self.owner and self.check_lease and self.renew:
            self.lease = renew_lease(self.owner, self.module_name, self.environ, self.directory, lease)
        return self

    def renew_at_exit(self):
        """Renew the lease once more when the module's process ends (a long step does not leave it looking stale)."""
        if self.fd is None or not self.owner:
            return
        try:
            lease = read_lease(lease_path(self.directory))
            if lease and lease.get('owner') == self.owner:
                now = time.time()
                lease.update(renewed=utc(now), renewed_epoch=now)
                write_lease(lease, lease_path(self.directory))
        except OSError:
            pass

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


def take_lease(owner, controller=None, ttl=DEFAULT_LEASE_TTL, timeout=DEFAULT_TIMEOUT, takeover=None, environ=None,
               path=None):
    """Take (or renew) the reinstall lease for the run ``owner``: waits up to ``timeout`` seconds while a live lease
    of another run (not ``takeover``) or a module holds the server. Returns ``(changed, lease, previous)``."""
    if ttl is None or ttl < 1:
        raise ByolError('ttl must be a number of seconds (1 or more), got %s' % ttl)
    lock = ServerLock('byol_lease', timeout=timeout, path=path, environ=environ, owner=owner, takeover=takeover,
                      renew=False).acquire()
    try:
        previous = lock.previous
        now = time.time()
        if previous and previous.get('owner') == owner:
            lease, event, reason = dict(previous), 'renew', None
        else:
            lease = {'owner': owner, 'since': utc(now), 'origin': origin(lock.environ)}
            event, reason = 'take', None
            if previous:
                event = 'takeover'
                reason = ('its controller says its ansible-playbook has ended' if previous.get('owner') == takeover
                          else 'no step for %s s (its ttl)' % previous.get('ttl', DEFAULT_LEASE_TTL))
        lease.update(controller=dict(controller or {}), ttl=ttl, step='byol_lease', renewed=utc(now), renewed_epoch=now)
        write_lease(lease, lease_path(lock.directory))
        extra = {'previous': previous.get('owner'), 'reason': reason} if event == 'takeover' else {}
        log_lease(event, lease, lock.directory, **extra)
        return event != 'renew', lease, previous
    finally:
        lock.release()


def release_lease(owner, timeout=DEFAULT_TIMEOUT, environ=None, path=None):
    """End the reinstall lease of the run ``owner`` (a lease of another run is left alone).
    Returns ``(changed, lease)``: the lease that was there."""
    lock = ServerLock('byol_lease', timeout=timeout, path=path, environ=environ, lease=False).acquire()
    try:
        lease = read_lease(lease_path(lock.directory))
        if not lease or lease.get('owner') != owner:
            return False, lease
        remove_lease(lease_path(lock.directory))
        log_lease('release', lease, lock.directory)
        return True, lease
    finally:
        lock.release()


# The option every module that changes the server has (its documentation: doc_fragments/server_lock.py).
LOCK_ARGUMENT_SPEC = dict(lock_timeout=dict(type='int', default=600), lock_owner=dict(type='str'))


def take_server_lock(module, name, timeout=None):
    """Take the server lock for ``module`` (an AnsibleModule; ``name`` its short name) unless in check mode (which
    changes nothing). Its ``lock_owner`` parameter (the run id of a reinstall) is checked against the reinstall
    lease and renews it.

    Returns the held :class:`ServerLock` (or None in check mode). The lock stays held until the module's process
    ends (the descriptor is not closed when the object is dropped)."""
    if getattr(module, 'check_mode', False):
        return None
    params = getattr(module, 'params', None) or {}
    lock = ServerLock(name, timeout=timeout, owner=params.get('lock_owner')).acquire()
    if lock.owner:
        atexit.register(lock.renew_at_exit)
    return lock

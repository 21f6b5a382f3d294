# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The hook's output while it runs: collected, and its latest line published for the play.

Do not use this from other collections or standalone plugins/modules!

:func:`communicate` replaces ``Popen.communicate`` for the hook: it reads stdout and stderr as they come,
kills the process group when the timeout is over, and every few seconds replaces a small JSON file
(the progress file, as ``_progress.py`` writes for the image step) with the running time and the latest
non-empty output line. The action plugin ``baremetal.byol.byol_bootable_hook`` reads that file between
polls of the async job and prints it. Values marked ``no_log`` (the hook's environment) are masked in it.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import time

INTERVAL = 1.0
MAX_LINE = 1024


class OutputProgress(object):
    """Where (and what not) to publish; ``configure`` it from the module before the hook runs."""

    def __init__(self):
        self.path = None
        self.secrets = ()
        self.interval = INTERVAL

    def configure(self, path, secrets=(), interval=INTERVAL):
        self.path = path or None
        self.secrets = tuple(sorted((s for s in secrets if s), key=len, reverse=True))
        self.interval = interval

    def mask(self, text):
        for secret in self.secrets:
            text = text.replace(secret, '********')
        return text

    def write(self, elapsed, line, final=False):
        if not self.path:
            return
        data = dict(phase='hook', elapsed_seconds=round(elapsed, 1), output=self.mask(line)[-MAX_LINE:],
                    final=final, time=time.time())
        try:
            write_status(self.path, data)
        except (IOError, OSError):
            pass


def write_status(path, data):
    """Replace ``path`` with ``data`` as JSON, atomically. While the hook runs, the rescue system's /run may be
    bound into its tree: a link it plants at the temporary name, or in place of the directory, is never
    followed (the directory is opened without following a link, the file created exclusively in it)."""
    parent, name = os.path.split(os.path.abspath(path))
    if not os.path.isdir(parent):
        os.makedirs(parent, 0o755)
    cloexec = getattr(os, 'O_CLOEXEC', 0)
    dfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | cloexec)
    try:
        tmp = '.%s.tmp%d' % (name, os.getpid())
        try:
            os.unlink(tmp, dir_fd=dfd)  # left by a run that was killed, or planted
        except OSError:
            pass
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | cloexec, 0o644, dir_fd=dfd)
        with os.fdopen(fd, 'w') as f:
            json.dump(data, f)
            f.write('\n')
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    finally:
        os.close(dfd)


PROGRESS = OutputProgress()


def last_line(chunks):
    """The last non-empty line of the output read so far (``chunks``: list of bytes), as text."""
    tail = b''
    for chunk in reversed(chunks):
        tail = chunk + tail
        lines = [x for x in tail.replace(b'\r', b'\n').split(b'\n') if x.strip()]
        if len(lines) > 1 or (lines and len(tail) > 4 * MAX_LINE):
            break
    lines = [x for x in tail.replace(b'\r', b'\n').split(b'\n') if x.strip()]
    # whole (at most what the buffer of recent chunks holds): cut only after the secrets are masked
    return lines[-1].decode('utf-8', 'replace').strip() if lines else ''


def communicate(proc, timeout, progress=None, clock=time.monotonic):
    """Read ``proc``'s stdout and stderr to their end; kill its process group after ``timeout`` seconds
    (None or 0: no limit). Returns (stdout bytes, stderr bytes, timed_out)."""
    progress = progress or PROGRESS
    start = clock()
    deadline = start + timeout if timeout and timeout > 0 else None
    out, err, both = [], [], []
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, out)
    sel.register(proc.stderr, selectors.EVENT_READ, err)
    timed_out = False
    last_report = start
    progress.write(0.0, '')
    try:
        while sel.get_map():
            now = clock()
            wait = progress.interval
            if deadline is not None and not timed_out:
                if now >= deadline:
                    timed_out = True
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except OSError:
                        pass
                    # what is left in the pipes, for at most 30 s
                    deadline = now + 30
                    continue
                wait = min(wait, deadline - now)
            elif deadline is not None and now >= deadline:
                break
            for key, dummy in sel.select(max(wait, 0.05)):
                data = os.read(key.fileobj.fileno(), 65536)
                if not data:
                    sel.unregister(key.fileobj)
                    continue
                key.data.append(data)
                both.append(data)
                del both[:-64]
            now = clock()
            if now - last_report >= progress.interval:
                last_report = now
                progress.write(now - start, last_line(both))
    finally:
        sel.close()
    try:
        proc.wait(timeout=30)
    except Exception:  # pylint: disable=broad-except
        proc.kill()
        proc.wait()
    progress.write(clock() - start, last_line(both), final=True)
    return b''.join(out), b''.join(err), timed_out

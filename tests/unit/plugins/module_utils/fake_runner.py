# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The unit tests' command runner: records every command and replays canned results.

:class:`FakeRunner` is a :class:`CommandRunner` whose "module" is itself: the real ``run()`` and
``which()`` do their work (argument lists only, ``args[0]`` resolved, ``check`` raising
:class:`CommandError` with rc/stdout/stderr) and only the process is replaced. Each command is
recorded with its tool's name instead of the resolved path (``['mdadm', '--stop', '/dev/md0']``), so
a test can assert the exact ordered sequence, as ironic-python-agent's ``test_disk_utils.py`` does.

Answers are matched by argument prefix, the longest prefix first (of equal ones, the latest given)::

    runner = FakeRunner()
    runner.on('sfdisk', '--json', stdout='{"partitiontable": {...}}')
    runner.on('mdadm', '--stop', rc=1, stderr='busy')          # every mdadm --stop fails
    runner.on('partx', results=[(1, '', 'busy'), (0, '', '')])  # one after the other, the last repeats
    runner.on('lsblk', call=lambda args: (0, text, ''))         # computed from the arguments

A command without an answer succeeds with empty output; ``strict=True`` fails the test instead.
Tools named in ``missing`` are not found (``which`` returns None, ``run`` raises the "install the
package" error).
"""

from __future__ import annotations

import os

from ansible_collections.baremetal.byol.plugins.module_utils._runner import CommandRunner


class FakeRunner(CommandRunner):

    def __init__(self, missing=(), strict=False, bin_dir='/usr/sbin'):
        super(FakeRunner, self).__init__(self)
        self.calls = []
        self.inputs = []
        self.envs = []
        self.missing = set(missing)
        self.strict = strict
        self.bin_dir = bin_dir
        self._answers = []

    # -- canned answers ------------------------------------------------------------------------

    def on(self, *prefix, **kw):
        """Answer commands starting with ``prefix``: ``rc``/``stdout``/``stderr``, ``results`` (a list of
        (rc, stdout, stderr) given in turn, the last one repeating) or ``call`` (args -> (rc, stdout, stderr))."""
        if 'results' in kw:
            answer = [tuple(r) for r in kw['results']]
        elif 'call' in kw:
            answer = kw['call']
        else:
            answer = [(kw.get('rc', 0), kw.get('stdout', ''), kw.get('stderr', ''))]
        self._answers.append((list(prefix), answer))
        return self

    def _answer(self, cmd):
        best = None
        for prefix, answer in self._answers:
            if cmd[:len(prefix)] == prefix and (best is None or len(prefix) >= len(best[0])):
                best = (prefix, answer)
        if best is None:
            if self.strict:
                raise AssertionError('unexpected command %r' % (cmd,))
            return 0, '', ''
        answer = best[1]
        if callable(answer):
            return answer(cmd)
        return answer.pop(0) if len(answer) > 1 else answer[0]

    # -- what CommandRunner asks of its module -------------------------------------------------

    def get_bin_path(self, tool, required=False, opt_dirs=None):
        if tool in self.missing:
            return None
        return os.path.join(self.bin_dir, tool)

    def run_command(self, args, check_rc=False, environ_update=None, data=None, binary_data=False, cwd=None):
        cmd = [os.path.basename(args[0])] + list(args[1:])
        self.calls.append(cmd)
        self.inputs.append(data)
        self.envs.append(environ_update)
        return self._answer(cmd)

    # -- reading the record --------------------------------------------------------------------

    @property
    def commands(self):
        """Every command so far as one string each."""
        return [' '.join(c) for c in self.calls]

    def tools(self):
        """The tool of every command so far, in order."""
        return [c[0] for c in self.calls]

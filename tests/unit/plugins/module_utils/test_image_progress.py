# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""run_with_progress: qemu-img's and rsync's progress is read while they run, and a command that
writes a lot to stderr does not block (stderr is not a pipe that nobody reads)."""

from __future__ import annotations

import signal
import sys

from ansible_collections.baremetal.byol.plugins.module_utils._image import write as iw

# 1 MiB on stderr (far more than a pipe holds) between progress lines on stdout
CHATTY = ('import sys\n'
          'for i in range(1, 5):\n'
          '    sys.stderr.write("rsync: cannot copy file %d\\n" % i * 1 + "x" * 262144 + "\\n"); sys.stderr.flush()\n'
          '    sys.stdout.write("  %d,000 %d%%\\r" % (i, i * 25)); sys.stdout.flush()\n'
          'sys.exit(23)\n')


def _alarm(seconds):
    def fail(*_):
        raise AssertionError('run_with_progress blocked')
    signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)


def test_stderr_flood_does_not_block_and_progress_is_seen():
    seen = []
    _alarm(30)
    try:
        rc, stderr = iw.run_with_progress([sys.executable, '-c', CHATTY], seen.append, window=64)
    finally:
        signal.alarm(0)
    assert rc == 23
    assert len(stderr) > 4 * 262144 and 'cannot copy file 4' in stderr
    assert any('4,000 100%' in text for text in seen)


def test_copy_tree_reports_rsync_progress_and_its_error(tmp_path, monkeypatch):
    updates = []

    class Progress(object):
        def update(self, value):
            updates.append(value)

    class Runner(object):
        def which(self, name, required=True):
            return sys.executable

    # "rsync" here is a script printing rsync-like progress and failing as rsync does (exit 23)
    monkeypatch.setattr(iw, 'run_with_progress', lambda args, show, window: (show('   1,048,576  50%\r  2,097,152 100%'),
                                                                             (23, 'some files could not be transferred'))[1])
    try:
        iw.copy_tree(Runner(), str(tmp_path / 'src'), str(tmp_path / 'dst'), progress=Progress())
    except iw.CommandError as exc:
        assert 'rsync exit code 23' in exc.msg and 'could not be transferred' in exc.msg
    else:
        raise AssertionError('no error for rsync exit code 23')
    assert updates == [2097152]

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""plugins/module_utils/_hook_output.py: the hook's output read as it comes, its latest line published."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils._hook_output import (
    OutputProgress, communicate, last_line, write_status,
)


def test_last_line():
    assert last_line([]) == ''
    assert last_line([b'a\nb', b'c\n\n  \n']) == 'bc'
    assert last_line([b'progress 10%\rprogress 20%\r']) == 'progress 20%'
    assert last_line([b'x' * 3000, b'y' * 3000]) == 'x' * 3000 + 'y' * 3000


def test_a_secret_across_the_cut_is_masked_whole(tmp_path):
    """The line is cut to its last 1024 characters only after masking: no tail of a secret is left."""
    progress = OutputProgress()
    progress.configure(str(tmp_path / 'p.json'), secrets=['SECRET-VALUE-123456'])
    progress.write(1.0, last_line([b'a' * 1010 + b'SECRET-VALUE-123456' + b'b' * 10]))
    with open(str(tmp_path / 'p.json')) as f:
        out = json.load(f)['output']
    assert len(out) == 1024 and out.endswith('********' + 'b' * 10) and '123456' not in out


def test_links_planted_by_the_hook_are_not_followed(tmp_path):
    """The hook may see the rescue system's /run: a link at the temporary name or in place of the directory."""
    victim = tmp_path / 'victim'
    victim.write_text('keep')
    run = tmp_path / 'run'
    run.mkdir()
    os.symlink(str(victim), str(run / ('.hook.progress.tmp%d' % os.getpid())))
    write_status(str(run / 'hook.progress'), {'phase': 'hook'})
    assert victim.read_text() == 'keep'
    assert json.loads((run / 'hook.progress').read_text()) == {'phase': 'hook'}
    # a link at the final name is replaced, its target untouched
    os.symlink(str(victim), str(run / 'other.progress'))
    write_status(str(run / 'other.progress'), {'phase': 'hook'})
    assert victim.read_text() == 'keep' and not os.path.islink(str(run / 'other.progress'))
    # the directory replaced by a link: nothing is written through it
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    os.symlink(str(elsewhere), str(tmp_path / 'runlink'))
    with pytest.raises(OSError):
        write_status(str(tmp_path / 'runlink' / 'hook.progress'), {'phase': 'hook'})
    assert os.listdir(str(elsewhere)) == []


def test_communicate_collects_everything_and_publishes(tmp_path):
    path = str(tmp_path / 'p.json')
    progress = OutputProgress()
    progress.configure(path, secrets=['sekrit-77'])
    code = ('import sys, time\n'
            'for i in range(3):\n'
            '    print("line %d sekrit-77" % i, flush=True); print("err %d" % i, file=sys.stderr, flush=True)\n'
            '    time.sleep(0.4)\n'
            'sys.stdout.write("x" * 200000)\n')
    proc = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    out, err, timed_out = communicate(proc, 60, progress)
    assert not timed_out and proc.returncode == 0
    assert out.count(b'sekrit-77') == 3 and out.endswith(b'x' * 200000) and err == b'err 0\nerr 1\nerr 2\n'
    with open(path) as f:
        last = json.load(f)
    assert last['final'] and last['phase'] == 'hook' and last['output'] == 'x' * 1024


def test_communicate_timeout_kills_the_group(tmp_path):
    progress = OutputProgress()
    progress.configure(str(tmp_path / 'p.json'), secrets=['sekrit-77'])
    proc = subprocess.Popen(['sh', '-c', 'echo started sekrit-77; sleep 300 & sleep 301; echo never'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    out, err, timed_out = communicate(proc, 1, progress)
    assert timed_out and proc.returncode == -9
    assert out == b'started sekrit-77\n' and err == b''
    with open(str(tmp_path / 'p.json')) as f:
        last = json.load(f)
    assert last['output'] == 'started ********'

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_blockdev is the one place that reads the machine's block-device state: partition tables (sfdisk --json),
signatures (blkid -p), the boot mode (/sys/firmware/efi), memory (/proc/meminfo) and free space (statvfs).
Its parsers and readers, and a guard that fails when one of those reads appears anywhere else in plugins/."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils import _blockdev as bd
from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError
from ansible_collections.baremetal.byol.plugins.module_utils._runner import CommandResult

PLUGINS = os.path.dirname(os.path.dirname(os.path.abspath(bd.__file__)))
HOME = os.path.join('module_utils', '_blockdev.py')

# What only the home may do. Each pattern is checked against the old code it replaced (below), so the guard
# cannot pass because a pattern never matches.
FORBIDDEN = (
    ('sfdisk --json', re.compile(r"""['"]sfdisk['"]\s*,\s*['"]--json['"]""")),
    ('blkid -p', re.compile(r"""blkid['"]?\s*,\s*['"](?:-p|--probe)['"]""")),
    ('/proc/meminfo', re.compile(r"""['"]/proc/meminfo""")),
    ('/sys/firmware/efi', re.compile(r"""['"]/sys/firmware/efi""")),
    ('statvfs', re.compile(r"""\bstatvfs\s*\(""")),
)

# lines of main's code before the home took them over, one per pattern at least
OLD_CODE = """
    res = runner.run(['sfdisk', '--json', disk], check=False)
            self.table = parse_sfdisk_json(self.runner.run(['sfdisk', '--json', self.nbd], check=False).stdout
    res = runner.run(['blkid', '-p', '-o', 'export', device], check=False)
    res = runner.run([blkid, '-p', '-o', 'value', '-s', 'UUID', mounts[-1]['source']], check=False)
        info = _blockdev.parse_export(self.runner.run(['blkid', '-p', '-o', 'export', self.partition], check=False).stdout)
        with open('/proc/meminfo') as f:
def efi_available(sys_root='/sys/firmware/efi'):
            boot_mode = 'uefi' if os.path.isdir('/sys/firmware/efi') else 'legacy'
EFIVARS = '/sys/firmware/efi/efivars'
        st = os.statvfs(path or '/')
"""


def violations(text):
    """(what, line) of every forbidden read in ``text``."""
    out = []
    for line in text.splitlines():
        for what, pattern in FORBIDDEN:
            if pattern.search(line):
                out.append((what, line.strip()))
    return out


def test_the_guard_finds_the_old_reads():
    found = violations(OLD_CODE)
    assert sorted(set(w for w, _line in found)) == sorted(w for w, _p in FORBIDDEN)
    assert len(found) == len([line for line in OLD_CODE.splitlines() if line.strip()])
    # documentation and messages that name the paths are not reads
    assert violations("  - Reports the boot mode (from C(/sys/firmware/efi)), the memory\n"
                      "raise ByolError('... (/sys/firmware/efi is missing) ...')\n"
                      "    \"\"\"``/proc/meminfo`` -> dict name -> bytes.\"\"\"\n") == []


def test_nothing_outside_the_home_reads_block_device_state():
    found = []
    for base, _dirs, files in os.walk(PLUGINS):
        for name in sorted(files):
            path = os.path.join(base, name)
            rel = os.path.relpath(path, PLUGINS)
            if not name.endswith('.py') or rel == HOME:
                continue
            with open(path) as f:
                found += ['%s: %s (%s)' % (rel, line, what) for what, line in violations(f.read())]
    assert found == []
    with open(os.path.join(PLUGINS, HOME)) as f:
        home = [what for what, _line in violations(f.read())]
    assert sorted(set(home)) == sorted(w for w, _p in FORBIDDEN)  # the home really is where they are


# -- partition tables ----------------------------------------------------------------------------------------

GPT = {'partitiontable': {'label': 'gpt', 'id': 'A1B2C3D4-0000-4000-8000-000000000000', 'device': '/dev/sda',
                          'unit': 'sectors', 'sectorsize': 4096, 'partitions': [
                              {'node': '/dev/sda1', 'start': 256, 'size': 1024, 'type': 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B',
                               'uuid': 'AAAAAAAA-0000-4000-8000-000000000001'}]}}


class FakeRunner(object):
    def __init__(self, rc=0, stdout='', stderr=''):
        self.calls = []
        self.rc, self.stdout, self.stderr = rc, stdout, stderr

    def run(self, args, check=True, **kwargs):
        self.calls.append(list(args))
        return CommandResult(list(args), self.rc, self.stdout, self.stderr)


@pytest.mark.parametrize('text, expected', [
    ('', None),
    ('  \n', None),
    (json.dumps(GPT), GPT['partitiontable']),
    (json.dumps({}), None),
])
def test_parse_sfdisk(text, expected):
    assert bd.parse_sfdisk(text) == expected


@pytest.mark.parametrize('table, expected', [
    (None, {'label': None, 'sectorsize': 512, 'partitions': []}),
    (GPT['partitiontable'], {'label': 'gpt', 'sectorsize': 4096, 'partitions': [
        {'node': '/dev/sda1', 'start': 256, 'size': 1024, 'type': 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B'}]}),
])
def test_table_summary(table, expected):
    assert bd.table_summary(table) == expected


@pytest.mark.parametrize('rc, stdout, stderr, strict, expected', [
    (0, json.dumps(GPT), '', False, GPT['partitiontable']),
    (0, json.dumps(GPT), '', True, GPT['partitiontable']),
    (1, '', 'sfdisk: /dev/sda: does not contain a recognized partition table', False, None),
    (1, '', 'sfdisk: /dev/sda: does not contain a recognized partition table', True, None),
    (1, '', 'sfdisk: cannot open /dev/sda: Permission denied', False, None),
])
def test_read_table(rc, stdout, stderr, strict, expected):
    runner = FakeRunner(rc, stdout, stderr)
    assert bd.read_table(runner, '/dev/sda', strict=strict) == expected
    assert runner.calls == [['sfdisk', '--json', '/dev/sda']]


def test_read_table_strict_names_the_failure():
    with pytest.raises(ByolError) as exc:
        bd.read_table(FakeRunner(1, '', 'sfdisk: cannot open /dev/sda: Permission denied\n'), '/dev/sda', strict=True)
    assert exc.value.msg == 'Cannot read the partition table of /dev/sda: sfdisk: cannot open /dev/sda: Permission denied'


# -- signatures ----------------------------------------------------------------------------------------------

def test_probe(tmp_path):
    dev = tmp_path / 'dev'
    dev.write_bytes(b'')
    runner = FakeRunner(0, 'DEVNAME=%s\nUUID=1234-ABCD\nLABEL=config-2\nTYPE=vfat\n' % dev)
    assert bd.probe(runner, str(dev)) == {'DEVNAME': str(dev), 'UUID': '1234-ABCD', 'LABEL': 'config-2', 'TYPE': 'vfat'}
    assert runner.calls == [['blkid', '-p', '-o', 'export', str(dev)]]
    # blkid -p exits 2 when it finds no signature
    assert bd.probe(FakeRunner(2, 'junk=1\n'), str(dev)) == {}
    missing = FakeRunner(0, 'TYPE=ext4\n')
    assert bd.probe(missing, str(tmp_path / 'gone')) == {}
    assert missing.calls == []


# -- boot mode -----------------------------------------------------------------------------------------------

def test_boot_mode(tmp_path):
    assert bd.booted_uefi(str(tmp_path)) is True
    assert bd.detect_boot_mode(str(tmp_path)) == 'uefi'
    assert bd.booted_uefi(str(tmp_path / 'efi')) is False
    assert bd.detect_boot_mode(str(tmp_path / 'efi')) == 'legacy'
    (tmp_path / 'file').write_text('')
    assert bd.detect_boot_mode(str(tmp_path / 'file')) == 'legacy'
    assert bd.detect_boot_mode() == ('uefi' if os.path.isdir('/sys/firmware/efi') else 'legacy')


# -- memory --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('text, expected, summary', [
    ('MemTotal:  2048 kB\nMemFree: 512 kB\nMemAvailable:  1024 kB\n',
     {'MemTotal': 2048 * 1024, 'MemFree': 512 * 1024, 'MemAvailable': 1024 * 1024},
     {'total': 2048 * 1024, 'available': 1024 * 1024}),
    ('MemTotal: 2048 kB\nMemFree: 512 kB\n', {'MemTotal': 2048 * 1024, 'MemFree': 512 * 1024},
     {'total': 2048 * 1024, 'available': 512 * 1024}),
    ('MemTotal:       24683520 kB\nMemAvailable:   24000000 kB\nHugePages_Total:       4\nActive(anon):  8 kB\n',
     {'MemTotal': 24683520 * 1024, 'MemAvailable': 24000000 * 1024, 'HugePages_Total': 4, 'Active(anon)': 8 * 1024},
     {'total': 24683520 * 1024, 'available': 24000000 * 1024}),
    ('', {}, {'total': 0, 'available': 0}),
])
def test_meminfo(tmp_path, text, expected, summary):
    assert bd.parse_meminfo(text) == expected
    assert bd.memory_summary(expected) == summary
    path = tmp_path / 'meminfo'
    path.write_text(text)
    assert bd.meminfo(str(path)) == expected


def test_meminfo_of_this_machine():
    mem = bd.memory_summary(bd.meminfo())
    assert 0 < mem['available'] <= mem['total']
    with pytest.raises(OSError):
        bd.meminfo('/nonexistent/meminfo')


# -- free space ----------------------------------------------------------------------------------------------

def test_free_space(tmp_path):
    st = os.statvfs(str(tmp_path))
    free = bd.free_bytes(str(tmp_path))
    assert isinstance(free, int) and 0 <= free <= st.f_blocks * st.f_frsize
    assert bd.free_bytes(str(tmp_path / 'gone')) is None
    near = bd.free_bytes_near(str(tmp_path / 'gone' / 'deeper'))  # the nearest existing parent: tmp_path
    assert isinstance(near, int) and abs(near - free) < 64 * 1024 * 1024
    assert bd.free_bytes_near('relative/and/missing') is not None  # up to '' -> '/'
    used = bd.used_bytes(str(tmp_path))
    assert isinstance(used, int) and 0 <= used <= st.f_blocks * st.f_frsize


def test_free_bytes_raises_what_is_not_a_missing_path(tmp_path):
    (tmp_path / 'file').write_text('')
    with pytest.raises(OSError) as exc:
        bd.free_bytes(str(tmp_path / 'file' / 'below-a-file'))  # ENOTDIR, not ENOENT
    assert exc.value.errno == errno.ENOTDIR
    assert bd.free_bytes_near(str(tmp_path / 'file' / 'below-a-file')) is not None  # the file's filesystem


# -- the real sfdisk on an image file ------------------------------------------------------------------------

class RealRunner(object):
    def run(self, args, check=True, **kwargs):
        proc = subprocess.run(list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                              check=False, env=dict(os.environ, LANG='C', LC_ALL='C'))
        return CommandResult(list(args), proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.skipif(not (shutil.which('sfdisk') and shutil.which('sgdisk')), reason='needs sfdisk and sgdisk')
def test_read_table_of_a_real_image(tmp_path):
    disk = str(tmp_path / 'disk.raw')
    with open(disk, 'wb') as f:
        f.truncate(32 * 1024 * 1024)
    runner = RealRunner()
    assert bd.read_table(runner, disk, strict=True) is None  # no table yet: "does not contain a recognized..."
    subprocess.run(['sgdisk', '-n', '1:2048:+8M', '-t', '1:ef00', disk], check=True, stdout=subprocess.DEVNULL)
    table = bd.read_table(runner, disk, strict=True)
    assert table['label'] == 'gpt'
    assert bd.table_summary(table)['partitions'] == [
        {'node': disk + '1', 'start': 2048, 'size': 16384, 'type': 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B'}]
    with pytest.raises(ByolError, match='Cannot read the partition table of %s' % re.escape(str(tmp_path))):
        bd.read_table(runner, str(tmp_path), strict=True)  # a directory: sfdisk fails for another reason

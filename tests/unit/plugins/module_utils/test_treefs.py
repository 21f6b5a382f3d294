# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json
import os
import stat

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils import _treefs as t


@pytest.fixture
def outside(tmp_path):
    """A directory outside the tree with a file whose content must never change."""
    d = tmp_path / 'outside'
    d.mkdir()
    (d / 'victim').write_text('precious\n')
    return d


@pytest.fixture
def root(tmp_path):
    r = tmp_path / 'tree'
    (r / 'var/lib').mkdir(parents=True)
    (r / 'etc').mkdir()
    return r


def _unchanged(outside):
    assert (outside / 'victim').read_text() == 'precious\n'
    assert sorted(os.listdir(str(outside))) == ['victim']


def test_split_path():
    assert t.split_path('/var//lib/./x') == ['var', 'lib', 'x']
    assert t.split_path('var/lib/x') == ['var', 'lib', 'x']
    assert t.split_path('/') == []
    with pytest.raises(t.TreeError, match='".."'):
        t.split_path('/var/../../etc/passwd')
    with pytest.raises(t.TreeError, match='Invalid path'):
        t.split_path('/etc/a\0b')


def test_write_read_roundtrip(root):
    with t.Tree(str(root)) as tree:
        host = tree.write_json('/var/lib/byol/rec.json', {'a': 1})
        assert host == str(root / 'var/lib/byol/rec.json')
        assert tree.read_json('var/lib/byol/rec.json') == {'a': 1}
        assert tree.read_bytes('/var/lib/byol/missing') is None
        assert tree.read_json('/no/such/dir/x') is None
        tree.write_text('/etc/fstab', 'one\n')
        tree.write_text('/etc/fstab', 'two\n', mode=0o600)
        assert tree.read_text('/etc/fstab') == 'two\n'
        assert stat.S_IMODE(os.stat(str(root / 'etc/fstab')).st_mode) == 0o600
        assert tree.isdir('/var/lib/byol') and not tree.isdir('/etc/fstab') and not tree.isdir('/nope')
        tree.makedirs('/a/b/c')
        assert (root / 'a/b/c').is_dir()
        tree.sync()
    # no temporary file is left behind
    assert sorted(os.listdir(str(root / 'etc'))) == ['fstab']


def test_unreadable_json_is_no_record(root):
    (root / 'var/lib/x.json').write_text('{not json')
    with t.Tree(str(root)) as tree:
        assert tree.read_json('/var/lib/x.json') is None


@pytest.mark.parametrize('target', ['/', '/etc', 'OUTSIDE_DIR'])
def test_link_in_a_parent_directory(root, outside, target):
    """A link at a parent component (to /, to /etc, to a directory outside) is never followed."""
    target = str(outside) if target == 'OUTSIDE_DIR' else target
    (root / 'var/lib/byol').symlink_to(target)
    with t.Tree(str(root)) as tree:
        with pytest.raises(t.TreeError, match='symbolic link'):
            tree.write_json('/var/lib/byol/victim', {'x': 1})
        with pytest.raises(t.TreeError, match='symbolic link'):
            tree.read_bytes('/var/lib/byol/victim')
        with pytest.raises(t.TreeError, match='symbolic link'):
            tree.makedirs('/var/lib/byol/sub')
        with pytest.raises(t.TreeError, match='symbolic link'):
            tree.lstat('/var/lib/byol/victim')
        assert not tree.isdir('/var/lib/byol')
    _unchanged(outside)
    assert os.path.islink(str(root / 'var/lib/byol'))


def test_link_at_the_top_level_component(root, outside):
    (root / 'var').rename(root / 'var.real')
    (root / 'var').symlink_to(str(outside))
    with t.Tree(str(root)) as tree:
        with pytest.raises(t.TreeError, match='/var is a symbolic link'):
            tree.write_text('/var/victim', 'evil')
    _unchanged(outside)


def test_link_in_tree_is_not_followed_either(root):
    """Even a link that stays inside the tree is refused: one rule, no resolution to get wrong."""
    (root / 'var/lib/real').mkdir()
    (root / 'var/lib/byol').symlink_to('real')
    with t.Tree(str(root)) as tree:
        with pytest.raises(t.TreeError, match='symbolic link'):
            tree.write_text('/var/lib/byol/x', 'y')
    assert not (root / 'var/lib/real/x').exists()


@pytest.mark.parametrize('kind', ['outside_file', 'etc_passwd', 'dangling', 'in_tree'])
def test_link_at_the_final_component(root, outside, kind, tmp_path):
    target = {'outside_file': str(outside / 'victim'), 'etc_passwd': '/etc/passwd',
              'dangling': str(outside / 'created-by-attack'), 'in_tree': 'fstab.real'}[kind]
    (root / 'etc/fstab').symlink_to(target)
    before = open('/etc/passwd', 'rb').read()
    with t.Tree(str(root)) as tree:
        with pytest.raises(t.TreeError, match='is a symbolic link, not a regular file'):
            tree.write_text('/etc/fstab', 'evil\n')
        with pytest.raises(t.TreeError, match='symbolic link'):
            tree.read_bytes('/etc/fstab')
        with pytest.raises(t.TreeError, match='symbolic link'):
            tree.read_json('/etc/fstab')
    _unchanged(outside)
    assert open('/etc/passwd', 'rb').read() == before
    assert os.readlink(str(root / 'etc/fstab')) == target
    assert not (root / 'etc/fstab.real').exists()
    assert sorted(os.listdir(str(root / 'etc'))) == ['fstab']


def test_fifo_where_a_file_belongs(root):
    os.mkfifo(str(root / 'var/lib/rec.json'))
    with t.Tree(str(root)) as tree:
        # reading must neither hang on the FIFO nor take it for a file
        with pytest.raises(t.TreeError, match='FIFO'):
            tree.read_json('/var/lib/rec.json')
        with pytest.raises(t.TreeError, match='FIFO'):
            tree.write_json('/var/lib/rec.json', {})
    assert stat.S_ISFIFO(os.lstat(str(root / 'var/lib/rec.json')).st_mode)


@pytest.mark.skipif(os.geteuid() != 0, reason='mknod needs root')
def test_device_where_a_file_belongs(root):
    os.mknod(str(root / 'etc/fstab'), 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null
    with t.Tree(str(root)) as tree:
        with pytest.raises(t.TreeError, match='device node'):
            tree.read_bytes('/etc/fstab')
        with pytest.raises(t.TreeError, match='device node'):
            tree.write_text('/etc/fstab', 'x')
    assert stat.S_ISCHR(os.lstat(str(root / 'etc/fstab')).st_mode)


def test_directory_where_a_file_belongs(root):
    (root / 'etc/fstab').mkdir()
    with t.Tree(str(root)) as tree:
        with pytest.raises(t.TreeError, match='directory'):
            tree.read_bytes('/etc/fstab')
        with pytest.raises(t.TreeError, match='directory'):
            tree.write_text('/etc/fstab', 'x')


def test_file_where_a_directory_belongs(root):
    (root / 'var/lib/byol').write_text('')
    with t.Tree(str(root)) as tree:
        with pytest.raises(t.TreeError, match='not a directory'):
            tree.write_text('/var/lib/byol/x', 'y')


def test_dotdot_refused(root, outside):
    with t.Tree(str(root)) as tree:
        with pytest.raises(t.TreeError, match='".."'):
            tree.write_text('/../outside/victim', 'evil')
    _unchanged(outside)


def test_stale_tmp_file_link_is_not_followed(root, outside):
    """A link planted at the temporary name is removed, never written through."""
    (root / 'etc' / ('.fstab.byol-tmp.%d' % os.getpid())).symlink_to(str(outside / 'victim'))
    with t.Tree(str(root)) as tree:
        tree.write_text('/etc/fstab', 'ok\n')
    _unchanged(outside)
    assert (root / 'etc/fstab').read_text() == 'ok\n'


def test_check_dirs(root, outside):
    assert t.check_dirs(str(root), '/boot/efi', create=True) == str(root / 'boot/efi')
    assert (root / 'boot/efi').is_dir()
    (root / 'mnt').symlink_to(str(outside))
    with pytest.raises(t.TreeError, match='symbolic link'):
        t.check_dirs(str(root), '/mnt/data', create=True)
    with pytest.raises(t.TreeError, match='No such file'):
        t.check_dirs(str(root), '/srv/x')
    _unchanged(outside)


def test_missing_tree():
    with pytest.raises(t.TreeError, match='Cannot open the target tree'):
        t.Tree('/nonexistent/tree/for/byol')


def test_json_is_sorted(root):
    with t.Tree(str(root)) as tree:
        tree.write_json('/r.json', {'b': 1, 'a': 2})
    assert json.loads((root / 'r.json').read_text()) == {'a': 2, 'b': 1}


# -- the callers ------------------------------------------------------------------------------------

from ansible_collections.baremetal.byol.plugins.module_utils import _chroot  # noqa: E402
from ansible_collections.baremetal.byol.plugins.module_utils import _progress  # noqa: E402
from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError  # noqa: E402


@pytest.mark.parametrize('link', ['../../..', '/', '../../../outside'])
def test_chroot_log_dir_link_is_a_clean_error(root, outside, link):
    """A hook that replaces /var/log/byol with a link (relative ones climbing out included): the log write is
    a ByolError (the module reports it), never an uncaught exception, and nothing outside is written. On main
    a relative link out of the tree raised OutsideTree, which is not a ByolError."""
    (root / 'var/log').mkdir(parents=True)
    (root / 'var/log/byol').symlink_to(link)
    with pytest.raises(ByolError, match='/var/log/byol is a symbolic link'):
        _chroot.write_tree_file(str(root), _chroot.LOG_PATH, 'log\n')
    _unchanged(outside)


def test_chroot_fstab_link_refused_and_read_as_missing(root, outside):
    (root / 'etc/fstab').symlink_to(str(outside / 'victim'))
    with pytest.raises(ByolError, match='symbolic link, not a regular file'):
        _chroot.write_tree_file(str(root), '/etc/fstab', 'UUID=x / ext4 defaults 0 1\n')
    assert _chroot.read_tree_file(str(root), '/etc/fstab') is None
    _unchanged(outside)


def test_chroot_marker_read_never_follows(root, outside):
    (root / 'var/lib').mkdir(exist_ok=True)
    (root / 'var/lib/byol').symlink_to(str(outside))
    (outside / 'make_image_bootable.done').write_text('{"digest": "sha256:x"}')
    assert _chroot.read_tree_file(str(root), _chroot.MARKER_PATH) is None
    (outside / 'make_image_bootable.done').unlink()


def test_chroot_mdadm_conf_path_ignores_a_link(root, tmp_path):
    (tmp_path / 'elsewhere').mkdir()
    (root / 'etc/mdadm').symlink_to(str(tmp_path / 'elsewhere'))
    assert _chroot.mdadm_conf_path(str(root)) == '/etc/mdadm.conf'
    (root / 'etc/mdadm').unlink()
    (root / 'etc/mdadm').mkdir()
    assert _chroot.mdadm_conf_path(str(root)) == '/etc/mdadm/mdadm.conf'


def test_chroot_write_is_atomic_and_synced(root):
    _chroot.write_tree_file(str(root), '/etc/fstab', 'a\n')
    _chroot.write_tree_file(str(root), '/etc/mdadm/mdadm.conf', 'b\n')
    assert (root / 'etc/fstab').read_text() == 'a\n' and (root / 'etc/mdadm/mdadm.conf').read_text() == 'b\n'
    assert sorted(os.listdir(str(root / 'etc'))) == ['fstab', 'mdadm']


def test_progress_file_tmp_link_not_followed(tmp_path, outside):
    path = tmp_path / 'progress.json'
    (tmp_path / ('progress.json.tmp%d' % os.getpid())).symlink_to(str(outside / 'victim'))
    p = _progress.Progress(path=str(path), interval=1)
    p.start('download', total=10)
    p.end(10)
    _unchanged(outside)
    assert json.loads(path.read_text())['phase'] == 'download'

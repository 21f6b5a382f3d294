# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The lab's foreign-style BYOL image (``byol-foreign.qcow2``, lab/byollab/foreign.py), read without a VM.

What the scenario byol_foreign_raid1_lvm relies on, read from the image itself (``qemu-img convert``,
``sfdisk``, ``debugfs``; nothing mounted): one partition; the hook at ``/root/.ovh``; a ``grub.cfg`` naming the
image's own root; GRUB's EFI package not installed but its ``.deb`` in the apt cache with the apt lists beside
it; no console in the image's GRUB settings (the hook takes it from ``/proc/cmdline``). The boots are the
scenario's. The image is built (about a minute, needs the Debian mirror) or taken from the lab cache.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

pytestmark = [pytest.mark.slow]


def _run(args):
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True).stdout.decode()


@pytest.fixture(scope='module')
def image(lab_host, tmp_path_factory):
    """The image's root filesystem as a file (its only partition), and its GPT."""
    from byollab import images
    art = images.Builder().byol_foreign()
    work = tmp_path_factory.mktemp('foreign')
    raw = str(work / 'disk.raw')
    _run(['qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', art['qcow2'], raw])
    table = json.loads(_run(['sfdisk', '--json', raw]))['partitiontable']
    part = table['partitions'][0]
    fs = str(work / 'root.ext4')
    with open(raw, 'rb') as src, open(fs, 'wb') as dest:
        src.seek(part['start'] * 512)
        left = part['size'] * 512
        while left:
            block = src.read(min(left, 4 * 1024 * 1024))
            dest.write(block)
            left -= len(block)
    os.unlink(raw)
    return fs, table


def _cat(fs, path):
    return _run(['debugfs', '-R', 'cat %s' % path, fs])


def _ls(fs, path):
    return _run(['debugfs', '-R', 'ls -p %s' % path, fs])


def _names(fs, path):
    return [line.split('/')[5] for line in _ls(fs, path).splitlines() if line.count('/') >= 6]


def test_one_partition_with_the_hook(image):
    from byollab import foreign
    fs, table = image
    assert len(table['partitions']) == 1
    assert _cat(fs, '/root/.ovh/make_image_bootable.sh') == foreign.FOREIGN_HOOK
    mode = [line for line in _ls(fs, '/root/.ovh').splitlines() if '/make_image_bootable.sh/' in line][0].split('/')[2]
    assert mode == '100755'
    # the hook is the lab's file, and it does what the scenario checks for
    for step in ('mkconf force-generate', 'rm -f /etc/mdadm.conf', 'apt-get install -y --no-install-recommends grub-efi-amd64',
                 '--efi-directory=/boot/efi --no-nvram', 'rm -rf /root/.ovh', '/proc/cmdline'):
        assert step in foreign.FOREIGN_HOOK


def test_grub_cfg_names_the_images_own_root(image):
    from byollab import foreign
    fs, _table = image
    assert 'root=UUID=%s' % foreign.FOREIGN_ROOT_UUID in _cat(fs, '/boot/grub/grub.cfg')
    # the root filesystem is that one: after an install the hook must regenerate grub.cfg, or nothing boots
    assert re.search(r'Filesystem UUID:\s+%s' % foreign.FOREIGN_ROOT_UUID, _run(['dumpe2fs', '-h', fs]))


def test_grub_efi_package_only_in_the_apt_cache(image):
    fs, _table = image
    status = _cat(fs, '/var/lib/dpkg/status')
    installed = set(re.findall(r'^Package: (\S+)\n(?:[^\n]+\n)*?Status: install ok installed$', status, re.M))
    assert 'grub-efi-amd64' not in installed
    assert {'grub-efi-amd64-bin', 'grub-pc-bin', 'grub2-common', 'mdadm', 'lvm2', 'initramfs-tools'} <= installed
    assert [n for n in _names(fs, '/var/cache/apt/archives') if re.match(r'grub-efi-amd64_.*_amd64\.deb$', n)]
    assert [n for n in _names(fs, '/var/lib/apt/lists') if n.endswith('_Packages')]


def test_no_console_in_the_images_grub_settings(image):
    from byollab import foreign
    fs, _table = image
    names = _names(fs, '/etc/default/grub.d')
    assert '10-lab-image.cfg' in names and '99-byol-lab.cfg' not in names
    for name in names:
        if name.endswith('.cfg'):
            assert 'console=' not in _cat(fs, '/etc/default/grub.d/' + name)
    assert _cat(fs, '/etc/default/grub.d/10-lab-image.cfg') == foreign.FOREIGN_GRUB_DEFAULT

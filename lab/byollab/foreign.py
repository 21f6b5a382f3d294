# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The foreign-style BYOL image ``byol-foreign.qcow2`` (issue 17): built like an image from elsewhere.

The lab's own ``byol.qcow2`` carries the project's documented hook, written for this collection. This image
behaves like OVHcloud's published Debian 12 example image instead (written here in this project's words, no
file of theirs is copied): a cloud-image-like root that already has ``/boot/grub/grub.cfg`` (naming the
image's own root, so a boot works only if the hook regenerated it), GRUB's EFI package *not* installed but
waiting as a ``.deb`` in ``/var/cache/apt/archives`` with the apt lists beside it, and the hook
``lab/foreign/make_image_bootable.sh`` that installs it with apt (offline), runs ``grub-install`` on the first
ESP only, regenerates ``mdadm.conf`` with ``mkconf``, takes the console from ``/proc/cmdline`` and deletes
``/root/.ovh`` at its end. ``extensions/molecule/byol_foreign_raid1_lvm`` installs it on RAID 1 + LVM and
boots each disk alone.

The tree is a private copy of ``debroot`` (dpkg and apt write files in place: no hard links to the shared
tree). Building it needs the network (``apt-get update`` and ``--download-only`` in the chroot).
"""

from __future__ import annotations

import os
import shutil
import tempfile

from byollab import images

FOREIGN_ROOT_UUID = '0b1e5b01-0000-4000-8000-00000000f0e1'
FOREIGN_HOOK_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                 'foreign', 'make_image_bootable.sh')
with open(FOREIGN_HOOK_PATH) as _hook:
    FOREIGN_HOOK = _hook.read()

# What the hook installs from the image's apt cache.
CACHED_PACKAGES = ['grub-efi-amd64']
# The image's own GRUB settings, as a cloud image has them; the console comes from the hook (/proc/cmdline).
FOREIGN_GRUB_DEFAULT = """\
GRUB_TIMEOUT=1
GRUB_CMDLINE_LINUX="net.ifnames=0 no_timer_check"
GRUB_DISABLE_OS_PROBER=true
"""
# The image's preseeded answer (as OVHcloud's image build sets it): the package never writes boot entries.
DEBCONF = 'grub-efi-amd64 grub2/update_nvram boolean false\n'


def inputs(debroot_key):
    return {'debroot': debroot_key, 'uuid': FOREIGN_ROOT_UUID, 'hook': FOREIGN_HOOK, 'cached': CACHED_PACKAGES,
            'grub': FOREIGN_GRUB_DEFAULT, 'debconf': DEBCONF,
            'helpers': images._src(images._write, images._grub_cfg, images.gpt_disk, images._place, images._qcow2,
                                   images._kernel_files)}


def build(builder, out, debroot):
    work = tempfile.mkdtemp(prefix='work-', dir=out)
    root = os.path.join(work, 'root')
    images.run(['cp', '-a', debroot, root])  # a private copy: dpkg writes in place
    chroot = ['chroot', root]
    # GRUB's EFI package leaves (its binaries stay, as in a cloud image whose grub-cloud package was removed)
    images.run(chroot + ['dpkg', '--purge', 'grub-efi-amd64'])
    images.run(chroot + ['debconf-set-selections'], input=DEBCONF.encode())
    # the apt lists and the .deb files the hook installs offline (the host's resolver for the downloads)
    resolv = os.path.join(root, 'etc', 'resolv.conf')
    saved = resolv + '.lab-saved'
    os.rename(resolv, saved)
    try:
        shutil.copy('/etc/resolv.conf', resolv)
        images.run(chroot + ['apt-get', 'update'])
        images.run(chroot + ['apt-get', 'install', '--download-only', '--no-install-recommends', '-y']
                   + CACHED_PACKAGES)
    finally:
        os.replace(saved, resolv)
    debs = [n for n in os.listdir(os.path.join(root, 'var', 'cache', 'apt', 'archives')) if n.endswith('.deb')]
    for name in CACHED_PACKAGES:
        if not any(d.startswith(name + '_') for d in debs):
            raise RuntimeError('byol-foreign: %s.deb is not in the image apt cache (%s)' % (name, debs))
    # GRUB settings: the image's own, without the console; a grub.cfg naming the image's root, as a cloud image has
    os.unlink(os.path.join(root, 'etc', 'default', 'grub.d', '99-byol-lab.cfg'))
    images._write(os.path.join(root, 'etc', 'default', 'grub.d', '10-lab-image.cfg'), FOREIGN_GRUB_DEFAULT)
    version, _k, _i = images._kernel_files(root)
    images._write(os.path.join(root, 'boot', 'grub', 'grub.cfg'), images._grub_cfg(version, FOREIGN_ROOT_UUID))
    images._write(os.path.join(root, 'etc', 'fstab'), '# /etc/fstab: written by the installer\n')
    os.makedirs(os.path.join(root, 'root', '.ovh'), mode=0o700, exist_ok=True)
    images._write(os.path.join(root, 'root', '.ovh', 'make_image_bootable.sh'), FOREIGN_HOOK, 0o755)
    root_mib = images._du_mib(root) + 256
    fs = os.path.join(work, 'root.ext4')
    images._sparse_file(fs, root_mib)
    images.run(['mkfs.ext4', '-q', '-F', '-L', 'root', '-U', FOREIGN_ROOT_UUID, '-d', root, '-E', 'root_owner=0:0', fs])
    raw = images.gpt_disk(os.path.join(work, 'byol-foreign.raw'), root_mib + 2, [(fs, root_mib, '8300', 'root')])
    images._qcow2(raw, os.path.join(out, 'byol-foreign.qcow2'))
    shutil.rmtree(work)
    builder.log('lab: byol-foreign carries %s in its apt cache' % ', '.join(sorted(debs)))
    return {'qcow2': 'byol-foreign.qcow2'}

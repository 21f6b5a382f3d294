# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Cached builds of the lab's images, from Debian packages, without mounting anything (but XFS).

Every artifact lives in ``<cache>/lab/<name>-<key>/`` where ``key`` hashes the recipe (the source
of its build function, its package list, the constants it uses and the keys of what it derives
from). A build happens in a temporary directory that is renamed into place when complete, so an
interrupted build leaves nothing that looks finished; ``<cache>/lab/<name>`` is a symlink to the
build made last, for people only: two checkouts with different recipes share the cache, so a consumer uses the
keyed path of its own recipe (``Artifact.path``; the image server's directory is ``www-<key>``, see
:meth:`Builder.keyed_dir`). A build of another recipe is pruned only when no checkout used it for
``KEEP_UNUSED`` seconds (the mtime of its ``.used`` stamp). A warm run only checks that the directories exist.

Artifacts:

- ``sshkey``: the lab's SSH key pair (``id_ed25519``), authorised for root in the rescue system;
- ``rescue``: ``vmlinuz``, ``initrd.img``, ``rescue.img`` (sparse ext4 labelled ``rescue``);
- ``rescue_zfs`` (only when asked): the same rescue system plus ZFS from ``contrib`` (``zfs-dkms``,
  ``zfsutils-linux``), the module built by DKMS for the rescue kernel at build time, natively; its own
  recipe and key, so ``rescue`` and its key do not change;
- ``debroot``: one Debian root directory (cloud kernel, cloud-init, GRUB, mdadm, lvm2) that the
  customer images below are derived from, so it is built once;
- ``byoi``: ``byoi.raw`` / ``byoi.qcow2`` (UEFI, GPT: ESP + ext4 root) and ``byoi-mbr.raw`` /
  ``byoi-mbr.qcow2`` (legacy BIOS, MBR, GRUB in the MBR gap);
- ``byol``: ``byol.qcow2`` (GPT, one ext4 partition, executable ``/root/.ovh/make_image_bootable.sh``)
  and ``byol-xfs.qcow2``;
- ``synthetic``: the small synthetic and bad images of :mod:`byollab.synthetic`.
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

MIB = 1024 * 1024
KEEP_UNUSED = 7 * 24 * 3600  # a build or www directory no checkout used for this long is pruned
USED_STAMP = '.used'
SUITE = 'bookworm'
OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd'
OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd'

# Fixed identities, so tests can name them.
BYOI_ROOT_UUID = '0b1e5b01-0000-4000-8000-00000000b001'
BYOI_ESP_ID = 'B0E5B001'
BYOL_ROOT_UUID = '0b1e5b01-0000-4000-8000-00000000b0a1'

RESCUE_PACKAGES = [
    'linux-image-amd64', 'systemd', 'systemd-sysv', 'udev', 'dbus', 'openssh-server', 'python3', 'initramfs-tools',
    'zstd', 'xz-utils', 'gzip', 'file', 'iproute2', 'procps', 'ca-certificates',
    'gdisk', 'parted', 'fdisk', 'mdadm', 'lvm2', 'xfsprogs', 'e2fsprogs', 'btrfs-progs', 'dosfstools', 'mtools',
    'qemu-utils', 'rsync', 'efibootmgr', 'curl', 'kmod', 'grub-efi-amd64-bin', 'grub-pc-bin',
]

# rescue_zfs: DKMS builds zfs.ko for the chroot's own kernel (the headers of that kernel, natively, no VM)
ZFS_COMPONENTS = ['main', 'contrib']
RESCUE_ZFS_PACKAGES = RESCUE_PACKAGES + ['linux-headers-amd64', 'dkms', 'zfs-dkms', 'zfsutils-linux']
ZFS_MODULES = ['zfs.ko', 'spl.ko']

GUEST_PACKAGES = [
    'linux-image-cloud-amd64', 'systemd', 'systemd-sysv', 'udev', 'dbus', 'openssh-server', 'cloud-init',
    'grub-efi-amd64', 'grub-pc-bin', 'efibootmgr', 'mdadm', 'lvm2', 'initramfs-tools', 'zstd',
    'e2fsprogs', 'xfsprogs', 'dosfstools', 'ifupdown', 'isc-dhcp-client', 'iproute2', 'procps', 'python3',
]

DPKG_EXCLUDES = ['/usr/share/man/*', '/usr/share/doc/*', '/usr/share/info/*', '/usr/share/locale/*',
                 '/usr/share/lintian/*']

# initramfs-tools compresses with zstd -19 by default: minutes under TCG. Level 1 is enough here.
INITRAMFS_CONF = 'COMPRESS=zstd\nCOMPRESSLEVEL=1\n'

# no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer check can fail and panic at boot
KERNEL_CMDLINE = 'console=tty0 console=ttyS0,115200n8 net.ifnames=0 no_timer_check'

CLOUD_CFG = """\
# baremetal.byol lab image
datasource_list: [ ConfigDrive, NoCloud, None ]
disable_root: false
# minbase has no locales: the locale module would fail
locale: false
"""

GRUB_DEFAULT = """\
GRUB_TIMEOUT=1
GRUB_CMDLINE_LINUX="%s"
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_DISABLE_OS_PROBER=true
""" % KERNEL_CMDLINE

# The BYOL hook: run by the installer in a chroot of the installed tree (/dev, /proc, /sys, /run
# and efivarfs bound), with /etc/fstab written and the target filesystems mounted.
# It is the documented Debian example hook (docs/examples/hooks/debian), so the hook the docs
# recommend is the one the lab's boots prove.
BYOL_HOOK_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                              'docs', 'examples', 'hooks', 'debian', 'make_image_bootable.sh')
with open(BYOL_HOOK_PATH) as _hook:
    BYOL_HOOK = _hook.read()

RESCUE_NETWORK = """\
[Match]
Name=e*

[Network]
DHCP=yes
"""

MASKED_UNITS = ['apt-daily.timer', 'apt-daily-upgrade.timer', 'e2scrub_all.timer', 'e2scrub_reap.service',
                'systemd-networkd-wait-online.service', 'fstrim.timer']

GRUB_MODULES_COMMON = ['part_gpt', 'part_msdos', 'ext2', 'fat', 'search', 'search_fs_uuid', 'normal', 'configfile',
                       'linux', 'echo', 'test', 'gzio', 'serial', 'terminal', 'ls', 'cat', 'minicmd', 'reboot', 'halt']


def cache_root():
    base = os.environ.get('BYOL_CACHE') or os.path.join(os.path.expanduser('~'), '.cache', 'baremetal-byol')
    return os.path.join(base, 'lab')


def run(args, **kw):
    check = kw.pop('check', True)
    if kw.pop('quiet', True):
        kw.setdefault('stdout', subprocess.PIPE)
        kw.setdefault('stderr', subprocess.STDOUT)
    try:
        return subprocess.run([str(a) for a in args], check=check, **kw)
    except subprocess.CalledProcessError as e:
        out = e.stdout.decode(errors='replace')[-4000:] if isinstance(e.stdout, bytes) else (e.stdout or '')
        raise RuntimeError('command failed (rc %s): %s\n%s' % (e.returncode, ' '.join(map(str, args)), out))


def mounts_under(path):
    """Mount points at or below ``path`` (deepest first)."""
    prefix = os.path.realpath(path).rstrip('/') + '/'
    out = []
    with open('/proc/self/mounts') as f:
        for line in f:
            mnt = line.split()[1].replace('\\040', ' ')
            if (mnt + '/').startswith(prefix):
                out.append(mnt)
    return sorted(out, key=len, reverse=True)


def remove_tree(path):
    """rm -rf that first unmounts what an interrupted build left mounted inside (a chroot's /proc, /sys ...)."""
    for mnt in mounts_under(path):
        subprocess.run(['umount', '-l', mnt], stderr=subprocess.DEVNULL, check=False)
    if mounts_under(path):
        raise RuntimeError('cannot remove %s: still mounted inside' % path)
    shutil.rmtree(path, ignore_errors=True)


def _write(path, text, mode=0o644):
    if os.path.lexists(path):
        os.unlink(path)  # never write through a hard link into the shared tree
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)
    os.chmod(path, mode)


def _du_mib(path):
    out = run(['du', '-sxm', path]).stdout.decode().split()[0]
    return int(out)


def _sparse_file(path, size_mib):
    with open(path, 'wb') as f:
        f.truncate(size_mib * MIB)


def _kernel_files(root):
    boot = os.path.join(root, 'boot')
    names = os.listdir(boot)
    vmlinuz = sorted(x for x in names if x.startswith('vmlinuz-'))[-1]
    version = vmlinuz[len('vmlinuz-'):]
    return version, os.path.join(boot, vmlinuz), os.path.join(boot, 'initrd.img-' + version)


class Artifact(object):
    def __init__(self, name, path, key, files, cached, seconds):
        self.name, self.path, self.key, self.files, self.cached, self.seconds = name, path, key, files, cached, seconds

    def __getitem__(self, item):
        return os.path.join(self.path, self.files[item])

    def sizes(self):
        out = {}
        for k, rel in self.files.items():
            p = os.path.join(self.path, rel)
            if os.path.isfile(p):
                st = os.stat(p)
                out[k] = (st.st_size, st.st_blocks * 512)
        return out


class Builder(object):
    """Builds artifacts once per recipe key; ``self.report`` lists what was done."""

    def __init__(self, root=None, log=None, force=()):
        self.root = root or cache_root()
        os.makedirs(self.root, exist_ok=True)
        self.report = []
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.force = set(force)
        self._done = {}

    def key(self, fn, inputs):
        h = hashlib.sha256()
        h.update(inspect.getsource(fn).encode())
        h.update(json.dumps(inputs, sort_keys=True).encode())
        return h.hexdigest()[:16]

    def artifact(self, name, fn, inputs, *args):
        if name in self._done:
            return self._done[name]
        key = self.key(fn, inputs)
        final = os.path.join(self.root, '%s-%s' % (name, key))
        manifest = os.path.join(final, 'manifest.json')
        t0 = time.monotonic()
        if name in self.force and os.path.isdir(final):
            shutil.rmtree(final)
        lock = None
        if not os.path.exists(manifest):
            # one builder per artifact at a time (parallel test runs wait instead of building twice)
            lock = open(os.path.join(self.root, '.lock-%s' % name), 'w')
            fcntl.flock(lock, fcntl.LOCK_EX)
            for entry in os.listdir(self.root):
                if entry.startswith('.build-%s-' % name):  # left by an interrupted build
                    remove_tree(os.path.join(self.root, entry))
        try:
            art = self._build_locked(name, fn, inputs, args, key, final, manifest, t0)
            mark_used(final)
        finally:
            if lock is not None:
                lock.close()
        link = os.path.join(self.root, name)
        if os.path.realpath(link) != final:
            tmp_link = link + '.tmp-link-%d' % os.getpid()
            if os.path.lexists(tmp_link):
                os.unlink(tmp_link)
            os.symlink(os.path.basename(final), tmp_link)
            os.replace(tmp_link, link)
        self._done[name] = art
        self.report.append(art)
        return art

    def _build_locked(self, name, fn, inputs, args, key, final, manifest, t0):
        if os.path.exists(manifest):
            with open(manifest) as f:
                files = json.load(f)['files']
            art = Artifact(name, final, key, files, True, time.monotonic() - t0)
        else:
            self.log('lab: building %s (%s)' % (name, key))
            tmp = tempfile.mkdtemp(prefix='.build-%s-' % name, dir=self.root)
            try:
                files = fn(self, tmp, *args)
                with open(os.path.join(tmp, 'manifest.json'), 'w') as f:
                    json.dump({'name': name, 'key': key, 'inputs': inputs, 'files': files,
                               'built': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, f, indent=1)
                os.rename(tmp, final)
            except BaseException:
                remove_tree(tmp)
                raise
            art = Artifact(name, final, key, files, False, time.monotonic() - t0)
            self._prune(name, final)
        return art

    def _prune(self, name, keep):
        """Remove the other builds of ``name`` that no checkout used for KEEP_UNUSED seconds (another checkout with
        another recipe may be using its build right now)."""
        for entry in os.listdir(self.root):
            path = os.path.join(self.root, entry)
            if (entry.startswith(name + '-') and len(entry) == len(name) + 17 and path != keep and os.path.isdir(path)
                    and unused_for(path) > KEEP_UNUSED):
                shutil.rmtree(path, ignore_errors=True)

    def keyed_dir(self, prefix, sources):
        """``<cache>/lab/<prefix>-<key>``, the key a hash of ``sources`` - (file, subdirectory) pairs whose files lie
        in keyed builds - so that each set of recipes has its own directory (created, marked used; the directories
        of this prefix no checkout used for KEEP_UNUSED seconds are pruned)."""
        root = os.path.realpath(self.root)
        names = sorted([os.path.relpath(os.path.realpath(src), root), sub] for src, sub in sources)
        path = os.path.join(self.root, '%s-%s' % (prefix, hashlib.sha256(json.dumps(names).encode()).hexdigest()[:16]))
        os.makedirs(path, exist_ok=True)
        mark_used(path)
        self._prune(prefix, path)
        return path

    # ---------------------------------------------------------------- recipes

    def sshkey(self):
        return self.artifact('sshkey', _build_sshkey, {'type': 'ed25519'})

    def rescue(self):
        key = self.sshkey()
        with open(key['public']) as f:
            pub = f.read()
        inputs = {'suite': SUITE, 'packages': RESCUE_PACKAGES, 'excludes': DPKG_EXCLUDES, 'pubkey': pub,
                  'initramfs': INITRAMFS_CONF, 'network': RESCUE_NETWORK, 'masked': MASKED_UNITS,
                  'helpers': _src(_mmdebstrap, _finish_rescue, _mask, _write, _kernel_files)}
        return self.artifact('rescue', _build_rescue, inputs, pub)

    def rescue_zfs(self):
        """The rescue system with ZFS (built only when asked: the DKMS build takes minutes)."""
        key = self.sshkey()
        with open(key['public']) as f:
            pub = f.read()
        inputs = {'suite': SUITE, 'packages': RESCUE_ZFS_PACKAGES, 'components': ZFS_COMPONENTS,
                  'modules': ZFS_MODULES, 'excludes': DPKG_EXCLUDES, 'pubkey': pub,
                  'initramfs': INITRAMFS_CONF, 'network': RESCUE_NETWORK, 'masked': MASKED_UNITS,
                  'helpers': _src(_mmdebstrap_components, _mask, _write, _kernel_files, _dkms_modules,
                                  _finish_rescue)}
        return self.artifact('rescue_zfs', _build_rescue_zfs, inputs, pub)

    def debroot(self):
        inputs = {'suite': SUITE, 'packages': GUEST_PACKAGES, 'excludes': DPKG_EXCLUDES, 'cloud': CLOUD_CFG,
                  'grub': GRUB_DEFAULT, 'initramfs': INITRAMFS_CONF, 'masked': MASKED_UNITS,
                  'helpers': _src(_mmdebstrap, _mask, _write)}
        return self.artifact('debroot', _build_debroot, inputs)

    def byoi(self):
        root = self.debroot()
        inputs = {'debroot': root.key, 'uuid': BYOI_ROOT_UUID, 'esp': BYOI_ESP_ID, 'cmdline': KERNEL_CMDLINE,
                  'modules': GRUB_MODULES_COMMON,
                  'helpers': _src(_stage, _write, _grub_cfg, _grub_early_cfg, gpt_disk, _place, _qcow2, _kernel_files)}
        return self.artifact('byoi', _build_byoi, inputs, root['root'])

    def byol(self):
        root = self.debroot()
        inputs = {'debroot': root.key, 'uuid': BYOL_ROOT_UUID, 'hook': BYOL_HOOK,
                  'helpers': _src(_stage, _write, gpt_disk, _place, _qcow2)}
        return self.artifact('byol', _build_byol, inputs, root['root'])

    def byol_foreign(self):
        from byollab import foreign
        root = self.debroot()
        return self.artifact('byol_foreign', foreign.build, foreign.inputs(root.key), root['root'])

    def synthetic(self):
        from byollab import synthetic
        inputs = {'version': getattr(synthetic, 'RECIPE_VERSION', '?'),
                  'source': hashlib.sha256(inspect.getsource(synthetic).encode()).hexdigest()}
        return self.artifact('synthetic', _build_synthetic, inputs)

    def all(self, only=None):
        steps = [('sshkey', self.sshkey), ('rescue', self.rescue), ('debroot', self.debroot), ('byoi', self.byoi),
                 ('byol', self.byol), ('byol_foreign', self.byol_foreign), ('synthetic', self.synthetic)]
        for name, step in steps:
            if only and name not in only:
                continue
            step()
        return self.report


def mark_used(path):
    """Stamp ``path`` (a build or a www directory) as used now."""
    stamp = os.path.join(path, USED_STAMP)
    with open(stamp, 'a'):
        pass
    os.utime(stamp)


def unused_for(path):
    """Seconds since a checkout last used ``path`` (its stamp; a build made before stamps: its own mtime)."""
    stamp = os.path.join(path, USED_STAMP)
    try:
        return time.time() - os.stat(stamp if os.path.exists(stamp) else path).st_mtime
    except OSError:
        return 0.0


def _src(*fns):
    """Hash of the helpers a recipe calls (part of its key)."""
    h = hashlib.sha256()
    for fn in fns:
        h.update(inspect.getsource(fn).encode())
    return h.hexdigest()[:16]


def _build_sshkey(_builder, out):
    run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'byol-lab', '-f', os.path.join(out, 'id_ed25519')])
    return {'private': 'id_ed25519', 'public': 'id_ed25519.pub'}


def _mmdebstrap(root, packages):
    args = ['mmdebstrap', '--variant=minbase', '--mode=root', '--include=' + ','.join(packages),
            '--essential-hook=mkdir -p "$1/etc/initramfs-tools/conf.d" && printf "%s" > "$1/etc/initramfs-tools/conf.d/byol-lab.conf"'
            % INITRAMFS_CONF.replace('\n', '\\n')]
    for pattern in DPKG_EXCLUDES:
        args.append('--dpkgopt=path-exclude=' + pattern)
    args += [SUITE, root]
    run(args)


def _mask(root, units):
    for unit in units:
        link = os.path.join(root, 'etc', 'systemd', 'system', unit)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink('/dev/null', link)


def _build_rescue(_builder, out, pubkey):
    root = os.path.join(out, 'root')
    _mmdebstrap(root, RESCUE_PACKAGES)
    return _finish_rescue(out, root, pubkey)


def _mmdebstrap_components(root, packages, components):
    """``_mmdebstrap`` with other archive components (``_mmdebstrap`` itself is unchanged: its source is part of
    the key of every artifact built with it)."""
    args = ['mmdebstrap', '--variant=minbase', '--mode=root', '--components=' + ','.join(components),
            '--include=' + ','.join(packages),
            '--essential-hook=mkdir -p "$1/etc/initramfs-tools/conf.d" && printf "%s" > "$1/etc/initramfs-tools/conf.d/byol-lab.conf"'
            % INITRAMFS_CONF.replace('\n', '\\n')]
    for pattern in DPKG_EXCLUDES:
        args.append('--dpkgopt=path-exclude=' + pattern)
    args += [SUITE, root]
    run(args)


def _dkms_modules(root, version, names):
    """The paths of the DKMS-built modules ``names`` for kernel ``version`` in ``root``; fails when one is missing
    (a DKMS build that failed leaves the packages installed but no module)."""
    found = {}
    base = os.path.join(root, 'lib', 'modules', version)
    for dirpath, _dirs, files in os.walk(base):
        for name in files:
            for want in names:
                if name in (want, want + '.xz', want + '.zst'):
                    found[want] = os.path.join(dirpath, name)
    missing = [n for n in names if n not in found]
    if missing:
        raise RuntimeError('DKMS built no %s for kernel %s in %s' % (', '.join(missing), version, root))
    return found


def _finish_rescue(out, root, pubkey):
    """The rescue system's configuration, kernel and sparse ext4 image (after its packages; ``rescue`` and
    ``rescue_zfs`` alike)."""
    _write(os.path.join(root, 'etc', 'hostname'), 'rescue\n')
    _write(os.path.join(root, 'etc', 'hosts'), '127.0.0.1 localhost\n127.0.1.1 rescue\n')
    _write(os.path.join(root, 'etc', 'fstab'), 'LABEL=rescue / ext4 rw,errors=remount-ro 0 1\n')
    _write(os.path.join(root, 'etc', 'modules-load.d', 'byol-lab.conf'), 'nbd\n')
    _write(os.path.join(root, 'etc', 'systemd', 'network', '80-lab.network'), RESCUE_NETWORK)
    os.makedirs(os.path.join(root, 'root', '.ssh'), mode=0o700, exist_ok=True)
    _write(os.path.join(root, 'root', '.ssh', 'authorized_keys'), pubkey, 0o600)
    shutil.copy(os.path.join(root, 'usr', 'share', 'systemd', 'tmp.mount'),
                os.path.join(root, 'etc', 'systemd', 'system', 'tmp.mount'))
    run(['chroot', root, 'systemctl', 'enable', 'systemd-networkd', 'tmp.mount', 'ssh'])
    _mask(root, MASKED_UNITS)
    run(['chroot', root, 'passwd', '-d', 'root'])  # console login for debugging; sshd refuses empty passwords
    _version, vmlinuz, initrd = _kernel_files(root)
    shutil.copy(vmlinuz, os.path.join(out, 'vmlinuz'))
    shutil.copy(initrd, os.path.join(out, 'initrd.img'))
    size = max(3072, _du_mib(root) + 1024)
    img = os.path.join(out, 'rescue.img')
    run(['mkfs.ext4', '-q', '-F', '-L', 'rescue', '-d', root, '-E', 'root_owner=0:0', img, '%dM' % size])
    shutil.rmtree(root)
    return {'kernel': 'vmlinuz', 'initrd': 'initrd.img', 'root': 'rescue.img'}


def _build_rescue_zfs(_builder, out, pubkey):
    root = os.path.join(out, 'root')
    _mmdebstrap_components(root, RESCUE_ZFS_PACKAGES, ZFS_COMPONENTS)
    version, _vmlinuz, _initrd = _kernel_files(root)
    _dkms_modules(root, version, ZFS_MODULES)
    # the rescue kernel loads zfs at boot (zfs-load-module.service does too; this makes it explicit)
    _write(os.path.join(root, 'etc', 'modules-load.d', 'byol-lab-zfs.conf'), 'zfs\n')
    return _finish_rescue(out, root, pubkey)


def _build_debroot(_builder, out):
    root = os.path.join(out, 'root')
    _mmdebstrap(root, GUEST_PACKAGES)
    _write(os.path.join(root, 'etc', 'cloud', 'cloud.cfg.d', '99_byol_lab.cfg'), CLOUD_CFG)
    _write(os.path.join(root, 'etc', 'default', 'grub.d', '99-byol-lab.cfg'), GRUB_DEFAULT)
    for name in os.listdir(os.path.join(root, 'etc', 'ssh')):
        if name.startswith('ssh_host_'):
            os.unlink(os.path.join(root, 'etc', 'ssh', name))
    for name in ('hostname',):
        path = os.path.join(root, 'etc', name)
        if os.path.lexists(path):
            os.unlink(path)
    _write(os.path.join(root, 'etc', 'machine-id'), '')
    _mask(root, MASKED_UNITS)
    return {'root': 'root'}


def _stage(src, dest):
    """A hard-linked copy of the shared tree (files are replaced, never written through)."""
    run(['cp', '-al', src, dest])
    return dest


def _grub_early_cfg(path, uuid):
    _write(path, 'search --no-floppy --fs-uuid --set=root %s\nset prefix=($root)/boot/grub\n' % uuid)


def _grub_cfg(version, uuid):
    return """\
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=1
set default=0
menuentry 'Debian GNU/Linux (baremetal.byol lab)' {
    search --no-floppy --fs-uuid --set=root %(uuid)s
    linux /boot/vmlinuz-%(v)s root=UUID=%(uuid)s ro %(cmdline)s
    initrd /boot/initrd.img-%(v)s
}
""" % {'uuid': uuid, 'v': version, 'cmdline': KERNEL_CMDLINE}


def gpt_disk(path, size_mib, partitions):
    """``partitions``: list of (fs_image_or_None, size_mib, typecode, name), from 1 MiB on."""
    _sparse_file(path, size_mib)
    args = ['sgdisk', '--clear']
    start = 1
    for i, (_fs, psize, code, name) in enumerate(partitions, 1):
        args += ['--new=%d:%d:+%dM' % (i, start * 2048, psize), '--typecode=%d:%s' % (i, code),
                 '--change-name=%d:%s' % (i, name)]
        start += psize
    run(args + [path])
    _place(path, partitions)
    return path


def _place(path, partitions):
    start = 1
    for fs, psize, _code, _name in partitions:
        if fs:
            run(['dd', 'if=%s' % fs, 'of=%s' % path, 'bs=1M', 'seek=%d' % start, 'conv=notrunc,sparse', 'status=none'])
        start += psize


def _qcow2(src, dest):
    run(['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2', src, dest])
    return dest


def _build_byoi(builder, out, debroot):
    work = tempfile.mkdtemp(prefix='work-', dir=out)
    root = _stage(debroot, os.path.join(work, 'root'))
    version, _k, _i = _kernel_files(root)
    _write(os.path.join(root, 'etc', 'fstab'),
           'UUID=%s / ext4 errors=remount-ro 0 1\nUUID=%s-%s /boot/efi vfat umask=0077,nofail 0 2\n'
           % (BYOI_ROOT_UUID, BYOI_ESP_ID[:4], BYOI_ESP_ID[4:]))
    os.makedirs(os.path.join(root, 'boot', 'efi'), exist_ok=True)
    _write(os.path.join(root, 'boot', 'grub', 'grub.cfg'), _grub_cfg(version, BYOI_ROOT_UUID))
    for platform in ('x86_64-efi', 'i386-pc'):
        dest = os.path.join(root, 'boot', 'grub', platform)
        if not os.path.exists(dest):
            shutil.copytree(os.path.join('/usr/lib/grub', platform), dest)
    root_mib = _du_mib(root) + 400
    root_fs = os.path.join(work, 'root.ext4')
    _sparse_file(root_fs, root_mib)
    run(['mkfs.ext4', '-q', '-F', '-L', 'root', '-U', BYOI_ROOT_UUID, '-d', root, '-E', 'root_owner=0:0', root_fs])
    early = os.path.join(work, 'early.cfg')
    _grub_early_cfg(early, BYOI_ROOT_UUID)
    # UEFI: GRUB EFI binary on a FAT32 ESP, written with mtools
    efi = os.path.join(work, 'grubx64.efi')
    run(['grub-mkimage', '-O', 'x86_64-efi', '-o', efi, '-c', early, '-p', '/boot/grub']
        + GRUB_MODULES_COMMON + ['efi_gop', 'all_video'])
    esp = os.path.join(work, 'esp.vfat')
    _sparse_file(esp, 64)
    run(['mkfs.vfat', '-F', '32', '-n', 'ESP', '-i', BYOI_ESP_ID, esp])
    env = dict(os.environ, MTOOLS_SKIP_CHECK='1')
    run(['mmd', '-i', esp, '::/EFI', '::/EFI/BOOT', '::/EFI/debian'], env=env)
    run(['mcopy', '-i', esp, efi, '::/EFI/BOOT/BOOTX64.EFI'], env=env)
    run(['mcopy', '-i', esp, efi, '::/EFI/debian/grubx64.efi'], env=env)
    disk_mib = 1 + 64 + root_mib + 1
    raw = gpt_disk(os.path.join(out, 'byoi.raw'), disk_mib, [(esp, 64, 'EF00', 'EFI System'), (root_fs, root_mib, '8300', 'root')])
    _qcow2(raw, os.path.join(out, 'byoi.qcow2'))
    # legacy BIOS: MBR, one bootable ext4 partition, boot.img in the MBR, core.img in the gap
    core = os.path.join(work, 'core.img')
    run(['grub-mkimage', '-O', 'i386-pc', '-o', core, '-c', early, '-p', '(hd0,msdos1)/boot/grub']
        + GRUB_MODULES_COMMON + ['biosdisk'])
    if os.path.getsize(core) > 1000 * 1024:
        raise RuntimeError('GRUB core.img does not fit in the MBR gap')
    mbr = os.path.join(out, 'byoi-mbr.raw')
    _sparse_file(mbr, 1 + root_mib)
    run(['sfdisk', '--quiet', mbr], input=('label: dos\nlabel-id: 0x0b1e5b01\nstart=2048, size=%d, type=83, bootable\n'
                                           % (root_mib * 2048)).encode())
    # same root without the ESP line in /etc/fstab (debugfs edits the filesystem image, no mount)
    mbr_fs = os.path.join(work, 'root-mbr.ext4')
    run(['cp', '--sparse=always', root_fs, mbr_fs])
    fstab = os.path.join(work, 'fstab-mbr')
    _write(fstab, 'UUID=%s / ext4 errors=remount-ro 0 1\n' % BYOI_ROOT_UUID)
    run(['debugfs', '-w', '-R', 'rm /etc/fstab', mbr_fs])
    run(['debugfs', '-w', '-R', 'write %s /etc/fstab' % fstab, mbr_fs])
    _place(mbr, [(mbr_fs, root_mib, '', '')])
    run(['dd', 'if=/usr/lib/grub/i386-pc/boot.img', 'of=%s' % mbr, 'bs=440', 'count=1', 'conv=notrunc', 'status=none'])
    run(['dd', 'if=%s' % core, 'of=%s' % mbr, 'bs=512', 'seek=1', 'conv=notrunc', 'status=none'])
    _qcow2(mbr, os.path.join(out, 'byoi-mbr.qcow2'))
    shutil.rmtree(work)
    return {'raw': 'byoi.raw', 'qcow2': 'byoi.qcow2', 'mbr_raw': 'byoi-mbr.raw', 'mbr_qcow2': 'byoi-mbr.qcow2'}


def _build_byol(builder, out, debroot):
    work = tempfile.mkdtemp(prefix='work-', dir=out)
    root = _stage(debroot, os.path.join(work, 'root'))
    _write(os.path.join(root, 'etc', 'fstab'), '# /etc/fstab: written by the installer\n')
    os.makedirs(os.path.join(root, 'root', '.ovh'), mode=0o700, exist_ok=True)
    _write(os.path.join(root, 'root', '.ovh', 'make_image_bootable.sh'), BYOL_HOOK, 0o755)
    root_mib = _du_mib(root) + 256
    # ext4
    fs = os.path.join(work, 'root.ext4')
    _sparse_file(fs, root_mib)
    run(['mkfs.ext4', '-q', '-F', '-L', 'root', '-U', BYOL_ROOT_UUID, '-d', root, '-E', 'root_owner=0:0', fs])
    raw = gpt_disk(os.path.join(work, 'byol.raw'), root_mib + 2, [(fs, root_mib, '8300', 'root')])
    _qcow2(raw, os.path.join(out, 'byol.qcow2'))
    os.unlink(raw)
    os.unlink(fs)
    # XFS: no -d option, so format, loop-mount and copy
    xfs_mib = max(root_mib, 400)
    fs = os.path.join(work, 'root.xfs')
    _sparse_file(fs, xfs_mib)
    run(['mkfs.xfs', '-q', '-f', '-L', 'root', '-m', 'uuid=' + BYOL_ROOT_UUID, fs])
    mnt = os.path.join(work, 'mnt')
    os.mkdir(mnt)
    run(['mount', '-o', 'loop', fs, mnt])
    try:
        run(['sh', '-c', 'tar -C "$1" --xattrs --acls -cf - . | tar -C "$2" --xattrs --acls -xpf -', 'sh', root, mnt])
    finally:
        run(['umount', mnt])
    raw = gpt_disk(os.path.join(work, 'byol-xfs.raw'), xfs_mib + 2, [(fs, xfs_mib, '8300', 'root')])
    _qcow2(raw, os.path.join(out, 'byol-xfs.qcow2'))
    shutil.rmtree(work)
    return {'qcow2': 'byol.qcow2', 'xfs_qcow2': 'byol-xfs.qcow2'}


def _build_synthetic(_builder, out):
    from byollab import synthetic
    images = synthetic.build_all(os.path.join(out, 'images'))
    return {k: os.path.relpath(v, out) for k, v in images.items()}

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""byol_bootorder against REAL UEFI NVRAM: the module runs inside an OVMF VM, then the VM boots the disk.

This machine has no UEFI firmware, so the module cannot change NVRAM here. Instead:

1. the real ``ansible`` builds the module's self-contained AnsiballZ payloads (one per call, with
   ``ANSIBLE_KEEP_REMOTE_FILES``), on the host;
2. a minimal VM (OVMF, q35, TCG, two virtio disks with a vfat ESP holding a GRUB EFI binary, a
   virtio NIC so the firmware has PXE/HTTP entries) boots a Debian kernel with a busybox
   initramfs that carries python3, efibootmgr, sfdisk and mtools, and runs the payloads one after
   the other against the firmware's real NVRAM (efivarfs);
3. the VM boots again without a kernel, from its NVRAM only: the firmware log must show it
   starting the entry the module made, and GRUB (embedded config) prints a marker and halts.

It needs qemu-system-x86, ovmf, busybox-static, grub-efi-amd64-bin, a Debian ``linux-image-*amd64``
package (``BYOL_TEST_KERNEL_DEB``, one in /var/cache/apt/archives, or fetched once with ``apt-get download``
into ~/.cache/baremetal-byol/test-kernel) and about 3.5 minutes.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import run_module  # pylint: disable=import-error

OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd'
OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd'
HOST_PYTHON = '/usr/bin/python3'
MODULES = ['virtio', 'virtio_ring', 'virtio_pci_modern_dev', 'virtio_pci_legacy_dev', 'virtio_pci', 'virtio_blk',
           'efivarfs']
TOOLS = ['efibootmgr', 'sfdisk', 'mtools']
STDLIB_SKIP = {'test', 'idlelib', 'tkinter', 'turtledemo', 'ensurepip', 'lib2to3', 'pydoc_data', 'dist-packages',
               'site-packages', '__pycache__', 'unittest', 'distutils', 'venv', 'config-3.11-x86_64-linux-gnu'}

# (name, module args, check mode, diff); run in this order inside one VM boot
LOADER = '\\efi\\DEBIAN\\grubx64.EFI'
CALLS = [
    ('check', {'disks': ['/dev/vda', '/dev/vdb'], 'loader': LOADER, 'boot_mode': 'uefi'}, True, True),
    ('first', {'disks': ['/dev/vda', '/dev/vdb'], 'loader': LOADER, 'boot_mode': 'uefi'}, False, True),
    ('first-again', {'disks': ['/dev/vda', '/dev/vdb'], 'loader': '/EFI/debian/grubx64.efi', 'boot_mode': 'uefi'},
     False, False),
    ('after-network', {'disks': ['/dev/vda', '/dev/vdb'], 'loader': LOADER, 'boot_mode': 'uefi',
                       'boot_order_policy': 'after_network'}, False, True),
    ('after-network-again', {'disks': ['/dev/vda', '/dev/vdb'], 'loader': LOADER, 'boot_mode': 'uefi',
                             'boot_order_policy': 'after_network'}, False, False),
    ('one-disk', {'disks': ['/dev/vda'], 'loader': LOADER, 'boot_mode': 'uefi'}, False, False),
    ('none', {'disks': ['/dev/vda'], 'loader': LOADER, 'boot_mode': 'uefi', 'boot_order_policy': 'none'}, False, False),
]


# byol_bootable_hook inside the same VM: a UEFI "rescue system" with efivarfs mounted
HOOK_ROOT = '/mnt/byol-ovmf-test-tree'  # must not exist on the host (the payload is built by a real run there)
HOOK_CALLS = [('hook', {'root': HOOK_ROOT, 'timeout': 120}), ('hook-again', {'root': HOOK_ROOT})]
HOOK_SCRIPT = '''#!/bin/sh
echo "pid=$$"
ls /sys/firmware/efi/efivars | grep -q '^BootOrder-' && echo EFIVARS-VISIBLE
echo "links: $(ip -o link | wc -l)"
ip -o link
'''
HOST_TOOLS = ['unshare', 'pivot_root', 'blkid', 'mount', 'umount']


KERNEL_CACHE = os.path.expanduser('~/.cache/baremetal-byol/test-kernel')


def _kernel_deb(download=False):
    """A Debian kernel package: BYOL_TEST_KERNEL_DEB, the apt cache, or (``download``) apt-get download."""
    deb = os.environ.get('BYOL_TEST_KERNEL_DEB')
    if deb:
        return deb
    debs = sorted(d for d in glob.glob('/var/cache/apt/archives/linux-image-*amd64*.deb') + glob.glob(KERNEL_CACHE + '/*.deb')
                  if re.search(r'linux-image-\d', os.path.basename(d)))
    if debs or not download or not shutil.which('apt-get'):
        return debs[-1] if debs else None
    # the meta package names the current kernel package; fetch that one (about 70 MB)
    deps = subprocess.run(['apt-cache', 'depends', 'linux-image-cloud-amd64'], stdout=subprocess.PIPE,
                          universal_newlines=True, check=False).stdout
    m = re.search(r'Depends: (linux-image-\S+)', deps)
    if not m:
        return None
    os.makedirs(KERNEL_CACHE, exist_ok=True)
    subprocess.run(['apt-get', 'download', m.group(1)], cwd=KERNEL_CACHE, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    debs = glob.glob(KERNEL_CACHE + '/%s_*.deb' % m.group(1))
    return debs[0] if debs else None


def _missing():
    need = [shutil.which('qemu-system-x86_64'), os.path.exists(OVMF_CODE), shutil.which('busybox'),
            shutil.which('grub-mkimage'), os.path.exists(HOST_PYTHON), _kernel_deb() or shutil.which('apt-get')]
    need += [shutil.which(t) for t in TOOLS + ['cpio', 'mkfs.vfat', 'sgdisk']]
    return not all(need) or os.geteuid() != 0


pytestmark = [pytest.mark.vm, pytest.mark.slow,
              pytest.mark.skipif(_missing(), reason='needs root, qemu, OVMF, busybox, grub, python3 and a kernel .deb')]


def sh(*args, **kw):
    return subprocess.run(list(args), check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def copy_with_libs(binary, root):
    """Copy ``binary`` and the shared libraries ldd names into ``root`` (same paths)."""
    real = os.path.realpath(binary)
    dest = root + binary
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if not os.path.exists(dest):
        shutil.copy2(real, dest)
    out = subprocess.run(['ldd', real], stdout=subprocess.PIPE, universal_newlines=True, check=False).stdout
    for lib in re.findall(r'(/\S+\.so[^\s]*)', out):
        d = root + lib
        if not os.path.exists(d):
            os.makedirs(os.path.dirname(d), exist_ok=True)
            shutil.copy2(os.path.realpath(lib), d)


def build_payloads(workdir):
    """AnsiballZ payloads of the modules, built by the real ansible on this host.

    ansible runs them here first (where they fail: no /dev/vda, no tree) and keeps the files.
    """
    assert not os.path.exists(HOOK_ROOT), 'refusing to run: %s exists on this host' % HOOK_ROOT
    calls = [('byol_bootorder', n, a, c, d) for n, a, c, d in CALLS]
    calls += [('byol_bootable_hook', n, a, False, False) for n, a in HOOK_CALLS]
    payloads = {}
    for module, name, args, check, diff in calls:
        remote = os.path.join(workdir, 'remote-%s' % name)
        os.makedirs(remote)
        run_module(module, args, check=check, diff=diff,
                   env={'ANSIBLE_KEEP_REMOTE_FILES': '1', 'ANSIBLE_REMOTE_TMP': remote,
                        'ANSIBLE_STDOUT_CALLBACK': 'ansible.builtin.minimal'})
        found = glob.glob(os.path.join(remote, '*', 'AnsiballZ_%s.py' % module))
        assert len(found) == 1, 'ansible did not leave the AnsiballZ payload for %s' % name
        payloads[name] = found[0]
    return payloads


def build_initramfs(workdir, kernel_root, payloads):
    root = os.path.join(workdir, 'initramfs')
    for d in ('bin', 'proc', 'sys', 'dev', 'tmp', 'mods', 'payloads', 'etc'):
        os.makedirs(os.path.join(root, d))
    shutil.copy2(shutil.which('busybox'), os.path.join(root, 'bin', 'busybox'))
    for applet in ('sh', 'mount', 'insmod', 'echo', 'poweroff', 'cat', 'sleep', 'ls', 'mkdir'):
        os.symlink('busybox', os.path.join(root, 'bin', applet))
    for tool in TOOLS + HOST_TOOLS:
        copy_with_libs(shutil.which(tool), root)
    # mtools converts FAT names with iconv (codepage 850): glibc's gconv modules
    gconv = glob.glob('/usr/lib/x86_64-linux-gnu/gconv')
    for d in gconv:
        os.makedirs(root + d)
        for name in os.listdir(d):
            if name.startswith('gconv-modules') or name in ('IBM850.so', 'IBM437.so'):
                src = os.path.join(d, name)
                if os.path.isdir(src):
                    shutil.copytree(src, root + src)
                else:
                    shutil.copy2(src, root + src)
    for link in ('mdir', 'mcopy'):
        os.symlink(os.path.realpath(shutil.which('mtools')), root + os.path.dirname(shutil.which('mtools')) + '/' + link)
    # python3 with its standard library (no tests, no GUI)
    copy_with_libs(os.path.realpath(HOST_PYTHON), root)
    os.symlink(os.path.realpath(HOST_PYTHON), os.path.join(root, 'bin', 'python3'))
    stdlib = subprocess.run([HOST_PYTHON, '-c', 'import sysconfig; print(sysconfig.get_paths()["stdlib"])'],
                            stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout.strip()
    shutil.copytree(stdlib, root + stdlib, symlinks=True,
                    ignore=lambda d, names: [n for n in names if n in STDLIB_SKIP])
    for so in glob.glob(os.path.join(stdlib, 'lib-dynload', '*.so')):
        copy_with_libs(so, root)
    kver = os.listdir(os.path.join(kernel_root, 'lib', 'modules'))[0]
    with open(os.path.join(root, 'mods', 'order'), 'w') as order:
        for mod in MODULES:
            found = glob.glob(os.path.join(kernel_root, 'lib', 'modules', kver, '**', mod + '.ko*'), recursive=True)
            if not found:
                continue
            dest = os.path.join(root, 'mods', mod + '.ko')
            if found[0].endswith('.xz'):
                with open(dest, 'wb') as f:
                    subprocess.run(['xz', '-dc', found[0]], stdout=f, check=True)
            elif found[0].endswith('.zst'):
                with open(dest, 'wb') as f:
                    subprocess.run(['zstd', '-qdc', found[0]], stdout=f, check=True)
            else:
                shutil.copy2(found[0], dest)
            order.write(mod + '\n')
    lines = ['#!/bin/sh', 'export PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C HOME=/tmp TMPDIR=/tmp',
             'mount -t proc proc /proc', 'mount -t sysfs sys /sys', 'mount -t devtmpfs dev /dev',
             'for m in $(cat /mods/order); do insmod /mods/$m.ko; done',
             'mount -t efivarfs efivarfs /sys/firmware/efi/efivars', 'sleep 1']
    for name, dummy, dummy2, dummy3 in CALLS:
        shutil.copy2(payloads[name], os.path.join(root, 'payloads', name + '.py'))
        lines += ['echo "=== BEGIN %s"' % name, 'python3 /payloads/%s.py' % name, 'echo "=== END %s rc=$?"' % name]
    lines += ['echo "=== BEGIN efibootmgr"', 'efibootmgr -v', 'echo "=== END efibootmgr"']
    lines += ['mkdir -p %s' % HOOK_ROOT, 'mount /dev/vdb2 %s' % HOOK_ROOT,
              'echo "=== BEGIN mounts-before"', 'cat /proc/self/mountinfo', 'echo "=== END mounts-before"']
    for name, dummy in HOOK_CALLS:
        shutil.copy2(payloads[name], os.path.join(root, 'payloads', name + '.py'))
        lines += ['echo "=== BEGIN %s"' % name, 'python3 /payloads/%s.py' % name, 'echo "=== END %s rc=$?"' % name]
    lines += ['echo "=== BEGIN mounts-after"', 'cat /proc/self/mountinfo', 'echo "=== END mounts-after"',
              'umount %s' % HOOK_ROOT, 'poweroff -f']
    with open(os.path.join(root, 'init'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    os.chmod(os.path.join(root, 'init'), 0o755)
    out = os.path.join(workdir, 'initrd.gz')
    files = subprocess.run(['find', '.'], cwd=root, stdout=subprocess.PIPE, check=True).stdout
    with open(out, 'wb') as f:
        cpio = subprocess.Popen(['cpio', '-o', '-H', 'newc', '--quiet'], cwd=root, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE)
        gz = subprocess.Popen(['gzip', '-1'], stdin=cpio.stdout, stdout=f)
        cpio.stdout.close()
        cpio.communicate(files)
        gz.wait()
    return out


def build_disk(workdir, name, grub_efi):
    img = os.path.join(workdir, name + '.img')
    esp = os.path.join(workdir, name + '-esp.img')
    with open(img, 'wb') as f:
        f.truncate(96 * 1024 * 1024)
    sh('sgdisk', '-n', '1:2048:+40M', '-t', '1:ef00', '-n', '2:0:0', '-t', '2:8300', img)
    with open(esp, 'wb') as f:
        f.truncate(40 * 1024 * 1024)
    sh('mkfs.vfat', '-F', '32', '-n', 'ESP', esp)
    env = dict(os.environ, MTOOLS_SKIP_CHECK='1')
    sh('mmd', '-i', esp, '::/EFI', '::/EFI/debian', env=env)  # deliberately no \EFI\BOOT\BOOTX64.EFI
    sh('mcopy', '-i', esp, grub_efi, '::/EFI/debian/grubx64.efi', env=env)
    sh('dd', 'if=' + esp, 'of=' + img, 'bs=512', 'seek=2048', 'conv=notrunc,sparse', 'status=none')
    guid = sh('sgdisk', '-i', '1', img).stdout.decode()
    return img, re.search(r'Partition unique GUID: (\S+)', guid).group(1).lower()


def build_hook_tree(workdir, img):
    """An ext4 filesystem holding a busybox tree and the hook, written into partition 2 of ``img``."""
    tree = os.path.join(workdir, 'tree')
    for d in ('bin', 'root/.ovh', 'dev', 'proc', 'sys', 'tmp'):
        os.makedirs(os.path.join(tree, d))
    shutil.copy2(shutil.which('busybox'), os.path.join(tree, 'bin', 'busybox'))
    for applet in ('sh', 'ls', 'grep', 'ip', 'wc', 'echo'):
        os.symlink('busybox', os.path.join(tree, 'bin', applet))
    hook = os.path.join(tree, 'root/.ovh/make_image_bootable.sh')
    with open(hook, 'w') as f:
        f.write(HOOK_SCRIPT)
    os.chmod(hook, 0o755)
    fs = os.path.join(workdir, 'tree.ext4')
    sh('mkfs.ext4', '-q', '-F', '-d', tree, fs, '32M')
    start = int(re.search(r'First sector: (\d+)', sh('sgdisk', '-i', '2', img).stdout.decode()).group(1))
    sh('dd', 'if=' + fs, 'of=' + img, 'bs=512', 'seek=%d' % start, 'conv=notrunc,sparse', 'status=none')


def qemu(workdir, serial, timeout, kernel=None, initrd=None):
    args = ['qemu-system-x86_64', '-machine', 'q35', '-accel', 'tcg', '-m', '1024', '-smp', '1', '-nodefaults',
            '-display', 'none', '-monitor', 'none', '-no-reboot', '-serial', 'file:' + serial,
            '-drive', 'if=pflash,format=raw,readonly=on,file=' + OVMF_CODE,
            '-drive', 'if=pflash,format=raw,file=' + os.path.join(workdir, 'vars.fd'),
            '-drive', 'if=none,id=d0,format=raw,file=' + os.path.join(workdir, 'vda.img'),
            '-device', 'virtio-blk-pci,drive=d0,serial=target0',
            '-drive', 'if=none,id=d1,format=raw,file=' + os.path.join(workdir, 'vdb.img'),
            '-device', 'virtio-blk-pci,drive=d1,serial=target1',
            '-netdev', 'user,id=n0,restrict=on', '-device', 'virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56']
    if kernel:
        args += ['-kernel', kernel, '-initrd', initrd, '-append', 'console=ttyS0,115200n8 quiet rdinit=/init']
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    with open(serial, 'rb') as f:
        return f.read().decode('utf-8', 'replace').replace('\r', '')


def sections(log):
    out = {}
    for m in re.finditer(r'=== BEGIN (\S+)\n(.*?)^=== END \1', log, re.M | re.S):
        out[m.group(1)] = m.group(2)
    return out


def result_of(text):
    start = text.find('{')
    assert start >= 0, text
    return json.JSONDecoder().raw_decode(text[start:])[0]


@pytest.fixture(scope='module')
def vm_run(tmp_path_factory):
    work = str(tmp_path_factory.mktemp('ovmf'))
    kernel_root = os.path.join(work, 'kernel')
    os.makedirs(kernel_root)
    deb = _kernel_deb(download=True)
    if not deb:
        pytest.skip('no Debian kernel package (set BYOL_TEST_KERNEL_DEB or make apt reachable)')
    sh('dpkg-deb', '-x', deb, kernel_root)
    kernel = glob.glob(os.path.join(kernel_root, 'boot', 'vmlinuz-*'))[0]
    grub_cfg = os.path.join(work, 'early.cfg')
    with open(grub_cfg, 'w') as f:
        f.write('serial --unit=0 --speed=115200\nterminal_output serial console\necho BYOL-GRUB-STARTED\nhalt\n')
    grub_efi = os.path.join(work, 'grubx64.efi')
    sh('grub-mkimage', '-O', 'x86_64-efi', '-o', grub_efi, '-c', grub_cfg, '-p', '/EFI/debian',
       'serial', 'terminal', 'echo', 'halt', 'normal')
    guids = {}
    for name in ('vda', 'vdb'):
        img, guids[name] = build_disk(work, name, grub_efi)
    build_hook_tree(work, img)
    shutil.copy2(OVMF_VARS, os.path.join(work, 'vars.fd'))
    payloads = build_payloads(work)
    initrd = build_initramfs(work, kernel_root, payloads)
    # 1. the firmware registers its own boot options (disks, PXE, HTTP, shell) on a first boot
    first = qemu(work, os.path.join(work, 'first.log'), 45)
    # 2. the module, against the firmware's real NVRAM
    run = qemu(work, os.path.join(work, 'run.log'), 900, kernel=kernel, initrd=initrd)
    # 3. boot from NVRAM only: no kernel, no removable-media loader on the disks
    boot = qemu(work, os.path.join(work, 'boot.log'), 120)
    return {'first': first, 'run': run, 'boot': boot, 'guids': guids, 'sections': sections(run), 'work': work}


def test_module_runs_against_real_nvram(vm_run):
    sec = vm_run['sections']
    assert set(sec) >= set(n for n, a, c, d in CALLS) | {'efibootmgr'}, vm_run['run'][-3000:]
    res = dict((n, result_of(sec[n])) for n, a, c, d in CALLS)
    for name, r in res.items():
        assert not r.get('failed'), (name, r)
    # check mode: a plan, nothing written
    check = res['check']
    assert check['changed'] and check['created'] == ['new:/dev/vda', 'new:/dev/vdb']
    assert check['boot_order_after'][:2] == ['new:/dev/vda', 'new:/dev/vdb']
    assert 'new:/dev/vda byol (vda)' in check['diff']['after']
    # first: two entries created, first in BootOrder, loader found case-insensitively
    first = res['first']
    assert first['changed'] and len(first['created']) == 2
    assert [e['partuuid'] for e in first['entries']] == [vm_run['guids']['vda'], vm_run['guids']['vdb']]
    assert first['boot_order_after'][:2] == [e['num'] for e in first['entries']]
    assert first['boot_order_before'] == check['boot_order_before']  # check mode wrote nothing
    assert all(c['exists'] and c['pe'] for c in first['loaders'])
    # again (other spelling of the loader): nothing to do, no efibootmgr write
    again = res['first-again']
    assert not again['changed'] and again['created'] == [] and again['deleted'] == []
    assert again['boot_order_after'] == first['boot_order_after']
    # after_network: the firmware's PXE/HTTP entries first, then ours
    net = res['after-network']
    assert net['changed'] and net['created'] == []
    ours = [e['num'] for e in first['entries']]
    order = net['boot_order_after']
    pos = [order.index(n) for n in ours]
    assert pos == [pos[0], pos[0] + 1] and pos[0] >= 4  # OVMF made >= 4 network entries before them
    assert not res['after-network-again']['changed']
    # one disk: vdb's entry is stale now and removed; vda's entry (relabelled case) is kept first
    one = res['one-disk']
    assert one['changed'] and one['deleted'] == [ours[1]] and one['boot_order_after'][0] == ours[0]
    # none: NVRAM untouched
    assert not res['none']['changed'] and 'NVRAM left untouched' in res['none']['msg']
    final = sec['efibootmgr']
    assert final.count('byol') == 1 and 'Boot%s* byol (vda)' % ours[0] in final


def test_hook_under_uefi_rescue(vm_run):
    """byol_bootable_hook in a UEFI rescue system that runs from its initramfs (rootfs cannot be pivoted: the tree
    is moved onto /): efivarfs is mounted read-only in the hook's namespace, nothing is left after."""
    sec = vm_run['sections']
    assert 'hook' in sec and 'hook-again' in sec, vm_run['run'][-3000:]
    res = result_of(sec['hook'])
    assert not res.get('failed') and res['rc'] == 0, res
    assert res['mounts'] == ['/dev', '/dev/pts', '/dev/shm', '/proc', '/sys', '/sys/firmware/efi/efivars', '/run',
                             '/run/udev', '/tmp']
    assert 'pid=1' in res['stdout'] and 'EFIVARS-VISIBLE' in res['stdout']
    assert 'links: 1' in res['stdout'] and ': lo:' in res['stdout']
    again = result_of(sec['hook-again'])
    assert not again['changed'] and not again['ran']

    def tree_mounts(text):
        return [line.split()[4] for line in text.splitlines() if len(line.split()) > 4 and line.split()[4].startswith(HOOK_ROOT)]
    assert tree_mounts(sec['mounts-before']) == [HOOK_ROOT]
    assert tree_mounts(sec['mounts-after']) == [HOOK_ROOT]


def test_firmware_boots_the_entry(vm_run):
    boot = vm_run['boot']
    assert re.search(r'BdsDxe: starting Boot[0-9A-F]{4} "byol \(vda\)" from HD\(1,GPT,%s' % vm_run['guids']['vda'],
                     boot, re.I), boot[-3000:]
    assert 'BYOL-GRUB-STARTED' in boot


if __name__ == '__main__':
    sys.exit(pytest.main([__file__, '-q']))

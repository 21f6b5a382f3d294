# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The lab's build cache (no VM, no root): keys, atomic builds, warm runs, pruning; CLI parsing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time

import pytest

from byollab import cli, images, vm as vmlib

CALLS = []


def _recipe(_builder, out, text):
    CALLS.append(text)
    with open(os.path.join(out, 'file.txt'), 'w') as f:
        f.write(text)
    return {'file': 'file.txt'}


def _failing(_builder, out):
    with open(os.path.join(out, 'partial'), 'w') as f:
        f.write('half')
    raise RuntimeError('boom')


def _writes(name, text):
    """A recipe that writes ``text`` into the file ``name`` (a stand-in for an image build)."""
    def build(_builder, out):
        with open(os.path.join(out, name), 'w') as f:
            f.write(text)
        return {'qcow2': name}
    return build


def _serving(builder, **arts):
    """Point the builder's image methods (those ``cli._www`` serves) at ``arts``; the others at a placeholder."""
    placeholder = next(iter(arts.values()))
    for name in ('byoi', 'byol', 'byol_foreign', 'synthetic'):
        art = arts.get(name) or images.Artifact(name, placeholder.path, 'k', {}, True, 0)
        setattr(builder, name, lambda art=art: art)
    return builder


def test_warm_run_rebuilds_nothing_and_changed_recipe_rebuilds(tmp_path):
    del CALLS[:]
    b = images.Builder(root=str(tmp_path), log=lambda m: None)
    a = b.artifact('thing', _recipe, {'v': 1}, 'one')
    assert not a.cached and CALLS == ['one']
    assert open(a['file']).read() == 'one'
    assert os.path.realpath(str(tmp_path / 'thing')) == a.path

    warm = images.Builder(root=str(tmp_path), log=lambda m: None).artifact('thing', _recipe, {'v': 1}, 'one')
    assert warm.cached and warm.path == a.path and CALLS == ['one']

    changed = images.Builder(root=str(tmp_path), log=lambda m: None).artifact('thing', _recipe, {'v': 2}, 'two')
    assert not changed.cached and changed.key != a.key and CALLS == ['one', 'two']
    # the old build is kept while a checkout (another branch) may still use it, pruned once unused for long
    assert os.path.exists(a.path)
    assert os.path.realpath(str(tmp_path / 'thing')) == changed.path
    old = time.time() - images.KEEP_UNUSED - 60
    os.utime(os.path.join(a.path, images.USED_STAMP), (old, old))
    images.Builder(root=str(tmp_path), log=lambda m: None).artifact('thing', _recipe, {'v': 3}, 'three')
    assert not os.path.exists(a.path)
    assert os.path.exists(changed.path)

    other = images.Builder(root=str(tmp_path), log=lambda m: None).artifact('other', _recipe, {'v': 1}, 'x')
    assert os.path.exists(changed.path) and other.path != changed.path  # another artifact keeps its build


def test_failed_build_leaves_nothing_that_looks_finished(tmp_path):
    b = images.Builder(root=str(tmp_path), log=lambda m: None)
    with pytest.raises(RuntimeError, match='boom'):
        b.artifact('bad', _failing, {})
    assert [e for e in os.listdir(str(tmp_path)) if 'bad' in e and not e.startswith('.lock-')] == []


def test_recipe_keys_follow_inputs_and_source():
    b = images.Builder.__new__(images.Builder)
    assert b.key(_recipe, {'a': 1}) == b.key(_recipe, {'a': 1})
    assert b.key(_recipe, {'a': 1}) != b.key(_recipe, {'a': 2})
    assert b.key(_recipe, {'a': 1}) != b.key(_failing, {'a': 1})


def test_hook_is_posix_shell_and_md_lvm_aware():
    hook = images.BYOL_HOOK
    assert hook.startswith('#!/bin/sh\n')
    for needle in ('mdadm --detail --scan', 'update-initramfs', 'grub-install --target=x86_64-efi',
                   'grub-install --target=i386-pc', 'update-grub', 'lsblk -n -s'):
        assert needle in hook


def test_cli_parses_the_lab_commands():
    p = cli.parser()
    a = p.parse_args(['rescue', 'x', '--disks', '3', '--disk-size', '8G', '--firmware', 'bios'])
    assert (a.name, a.disks, a.disk_size, a.firmware) == ('x', 3, '8G', 'bios')
    assert p.parse_args(['build', '--only', 'rescue,byoi']).only == 'rescue,byoi'
    command = p.parse_args(['ssh', 'x', '--', 'lsblk', '-J']).command  # argparse keeps '--' before 3.12
    assert command[-2:] == ['lsblk', '-J'] and command[:-2] in ([], ['--'])


def test_vm_limits_and_pidfile_safety(tmp_path):
    with pytest.raises(vmlib.LabError):
        vmlib.RescueVM('x', disks=9, run_dir=str(tmp_path))
    with pytest.raises(vmlib.LabError):
        vmlib.RescueVM('x', firmware='coreboot', run_dir=str(tmp_path))
    pidfile = tmp_path / 'qemu.pid'
    pidfile.write_text('%d\n' % os.getpid())  # a live process that is not QEMU is never killed
    assert vmlib.stop_pidfile(str(pidfile)) is False
    assert vmlib.free_port() > 0


def test_vcpus_from_argument_environment_or_the_rescue_run(tmp_path, monkeypatch):
    monkeypatch.delenv('BYOL_LAB_SMP', raising=False)
    assert vmlib.RescueVM('a', run_dir=str(tmp_path)).smp == 2
    monkeypatch.setenv('BYOL_LAB_SMP', '1')
    assert vmlib.RescueVM('a', run_dir=str(tmp_path)).smp == 1
    assert vmlib.RescueVM('a', smp=3, run_dir=str(tmp_path)).smp == 3
    # the boot of the installed disks keeps the vCPUs the rescue run had
    (tmp_path / 'b').mkdir()
    (tmp_path / 'b' / 'vm.json').write_text(json.dumps({'name': 'b', 'smp': 2, 'disks': []}))
    assert vmlib.RescueVM('b', run_dir=str(tmp_path)).smp == 2
    for bad in ('0', 'two', '17'):
        monkeypatch.setenv('BYOL_LAB_SMP', bad)
        with pytest.raises(vmlib.LabError, match='BYOL_LAB_SMP must be a number of vCPUs between 1 and 16'):
            vmlib.RescueVM('a', run_dir=str(tmp_path))


def _attached(args):
    """(drive id, device) pairs of QEMU -drive/-device arguments (controllers, which have no drive, left out)."""
    drives = [args[i + 1] for i, a in enumerate(args) if a == '-drive']
    devices = [args[i + 1] for i, a in enumerate(args) if a == '-device' and ',drive=' in ',' + args[i + 1]]
    return list(zip(drives, devices))


def test_disk_args_keep_each_disk_in_its_slot_when_others_are_left_out():
    disks = ['/r/target0.img', '/r/target1.img', '/r/target2.img']
    every = _attached(vmlib.disk_args(disks, 'uefi', 'installed'))
    assert [pair[0].split(',')[0] for pair in every] == ['file=' + d for d in disks]
    assert [pair[1].split(',')[4] for pair in every] == ['addr=0x10', 'addr=0x11', 'addr=0x12']
    assert not any('bootindex' in pair[1] for pair in every)

    second = _attached(vmlib.disk_args(disks, 'uefi', 'installed', only=[1]))
    assert second == [every[1]]  # same file, serial and PCI slot as with every disk attached

    bios = _attached(vmlib.disk_args(disks, 'bios', 'installed', only=[2, 0]))
    assert [(d.split(',')[0], dev.split(',')[2], dev.split(',')[-1]) for d, dev in bios] == [
        ('file=/r/target0.img', 'serial=target0', 'bootindex=0'),
        ('file=/r/target2.img', 'serial=target2', 'bootindex=1')]
    assert not any('bootindex' in pair[1] for pair in _attached(vmlib.disk_args(disks, 'bios', 'rescue')))


def test_disk_indexes_are_checked():
    assert vmlib.check_disk_indexes(None, 2) is None
    assert vmlib.check_disk_indexes([1, 1, 0], 2) == [0, 1]
    with pytest.raises(vmlib.LabError, match='no disk 2'):
        vmlib.check_disk_indexes([2], 2)
    with pytest.raises(vmlib.LabError, match='at least one'):
        vmlib.check_disk_indexes([], 2)
    assert cli.parser().parse_args(['boot', 'x', '--disk', '1']).disk == [1]
    assert cli.parser().parse_args(['boot', 'x']).disk is None


def test_www_keeps_real_and_synthetic_images_apart(tmp_path):
    """The synthetic images share file names with the real ones (byoi.qcow2 ...): they are served from synthetic/."""
    b = images.Builder(root=str(tmp_path / 'cache'), log=lambda m: None)
    _serving(b, byoi=b.artifact('byoi', _writes('byoi.qcow2', 'real'), {}),
             synthetic=b.artifact('synthetic', _writes('byoi.qcow2', 'synthetic'), {}))
    for _attempt in range(2):  # a second call finds everything in place
        www = cli._www(b)
        for path, text in ((os.path.join(www, 'byoi.qcow2'), 'real'),
                           (os.path.join(www, 'synthetic', 'byoi.qcow2'), 'synthetic')):
            assert open(path).read() == text
            with open(path + '.sha512') as f:
                assert f.read() == '%s  byoi.qcow2\n' % hashlib.sha512(text.encode()).hexdigest()
    assert not [n for n in os.listdir(www) + os.listdir(os.path.join(www, 'synthetic')) if n.endswith('.tmp')]


def test_two_checkouts_with_other_recipes_serve_their_own_images(tmp_path):
    """Two checkouts (branches) whose byol recipes differ share one cache and prepare their image directories
    one after the other, as two scenarios started side by side do: each serves the image of its own recipe, and
    neither's build is pruned by the other. On main's code the second replaced www/byol.qcow2 of the first and
    pruned its build."""
    cache = str(tmp_path / 'cache')

    def checkout(text):
        b = images.Builder(root=cache, log=lambda m: None)
        art = b.artifact('byol', _writes('byol.qcow2', text), {'recipe': text})
        _serving(b, byol=art, synthetic=b.artifact('synthetic', _writes('byol.qcow2', 'synthetic'), {}))
        return b, art

    first, first_art = checkout('recipe of branch one')
    first_www = cli._www(first)
    second, second_art = checkout('recipe of branch two')
    second_www = cli._www(second)
    assert first_www != second_www
    assert os.path.isdir(first_art.path) and os.path.isdir(second_art.path)
    assert open(os.path.join(first_www, 'byol.qcow2')).read() == 'recipe of branch one'
    assert open(os.path.join(second_www, 'byol.qcow2')).read() == 'recipe of branch two'
    with open(os.path.join(first_www, 'byol.qcow2.sha512')) as f:
        assert f.read() == '%s  byol.qcow2\n' % hashlib.sha512(b'recipe of branch one').hexdigest()
    # the first checkout again (its server restarted): still its own directory and image
    again, dummy = checkout('recipe of branch one')
    assert cli._www(again) == first_www
    assert open(os.path.join(first_www, 'byol.qcow2')).read() == 'recipe of branch one'


@pytest.mark.skipif(not shutil.which('qemu-img'), reason='needs qemu-img')
def test_rescue_overlay_is_fresh_bigger_than_targets_and_leaves_the_image_alone(tmp_path):
    root = tmp_path / 'rescue.img'
    root.write_bytes(b'R' * 65536)
    overlay = str(tmp_path / 'run' / 'rescue-overlay.qcow2')
    os.makedirs(os.path.dirname(overlay))
    with open(overlay, 'w') as f:
        f.write('stale overlay of an earlier boot')
    assert vmlib.rescue_overlay(str(root), overlay) == overlay
    info = json.loads(subprocess.run(['qemu-img', 'info', '--output=json', overlay], stdout=subprocess.PIPE,
                                     check=True).stdout)
    assert info['format'] == 'qcow2' and info['virtual-size'] == 1024 ** 4
    assert info['backing-filename'] == str(root) and info.get('backing-filename-format') == 'raw'
    # far bigger than the target disks the tests and scenarios use, so the disk groups number them first
    assert info['virtual-size'] > 64 * 1024 ** 3
    assert root.read_bytes() == b'R' * 65536


def test_rescue_zfs_is_its_own_artifact_and_built_only_when_asked(tmp_path, monkeypatch):
    # the rescue recipe's key is what it was before rescue_zfs existed (other scenarios stay warm): the ZFS recipe
    # adds functions, it does not touch the ones the rescue key hashes
    rescue_inputs_src = inspect_source(images.Builder.rescue)
    assert 'ZFS' not in rescue_inputs_src and '_mmdebstrap_components' not in inspect_source(images._build_rescue)
    assert images.RESCUE_ZFS_PACKAGES[:len(images.RESCUE_PACKAGES)] == images.RESCUE_PACKAGES
    assert {'zfs-dkms', 'zfsutils-linux', 'linux-headers-amd64'} <= set(images.RESCUE_ZFS_PACKAGES)
    assert 'rescue_zfs' not in cli.STEPS and 'rescue_zfs' in cli.EXTRA_STEPS
    built = []
    monkeypatch.setattr(images.Builder, 'rescue_zfs', lambda self: built.append('rescue_zfs'))
    for name in cli.STEPS:
        monkeypatch.setattr(images.Builder, name, lambda self, n=name: built.append(n))
    monkeypatch.setattr(cli, 'cmd_build', cli.cmd_build)
    args = cli.parser().parse_args(['build', '--json'])
    try:
        cli.cmd_build(args)
    except (AttributeError, TypeError):
        pass  # the fake artifacts have no sizes: only the order of the calls matters here
    assert 'rescue_zfs' not in built and built[:1] == ['sshkey']
    del built[:]
    try:
        cli.cmd_build(cli.parser().parse_args(['build', '--only', 'rescue_zfs', '--json']))
    except (AttributeError, TypeError):
        pass
    assert built == ['rescue_zfs']
    assert cli.cmd_build(cli.parser().parse_args(['build', '--only', 'nothing'])) == 2


def test_rescue_vm_boots_the_rescue_variant_asked_for(tmp_path):
    v = vmlib.RescueVM('zfs-variant', run_dir=str(tmp_path), rescue='rescue_zfs')
    assert v.rescue_variant == 'rescue_zfs'
    with pytest.raises(vmlib.LabError, match='rescue must be one of rescue, rescue_zfs'):
        vmlib.RescueVM('zfs-bad', run_dir=str(tmp_path), rescue='rescue-zfs')
    args = cli.parser().parse_args(['rescue', 'x', '--rescue', 'rescue_zfs'])
    assert args.rescue == 'rescue_zfs'


def inspect_source(fn):
    import inspect
    return inspect.getsource(fn)


# ---------------------------------------------------------------- disks of other kinds (issue 16)
MESSY = ['nvme:size=4G,serial=NVA,logical_block_size=4096,physical_block_size=4096', 'nvme:size=4G,serial=NVB',
         'scsi:size=2G,serial=S0,wwn=0x5000c500a1b2c300', 'usb:size=64M,serial=U0', 'cdrom', 'virtio:size=512M,serial=old']


def test_disk_specs_are_parsed_and_checked():
    assert vmlib.parse_disk_spec('virtio') == {'kind': 'virtio', 'size': '4G'}
    assert vmlib.parse_disk_spec('nvme:serial=NVA,logical_block_size=4096,physical_block_size=4096', '2G') == {
        'kind': 'nvme', 'size': '2G', 'serial': 'NVA', 'logical_block_size': 4096, 'physical_block_size': 4096}
    assert vmlib.parse_disk_spec('cdrom') == {'kind': 'cdrom', 'size': vmlib.CD_SIZE}
    assert vmlib.parse_disk_spec('scsi:wwn=0x5000C500A1B2C300')['wwn'] == '0x5000C500A1B2C300'
    for bad, message in [
            ('sata', 'the kind must be one of'),
            ('nvme:serial', 'is not key=value'),
            ('nvme:colour=red', 'is not key=value'),
            # a value must not smuggle QEMU options in (its -device argument is comma-separated)
            ('nvme:serial=a,drive=rescue', 'is not key=value'),
            ('nvme:serial=a b', 'may hold only'),
            ('nvme:serial=a=b', 'may hold only'),
            ('scsi:wwn=5000c500a1b2c300', 'wwn is for scsi disks'),
            ('scsi:wwn=0x5000c500a1b2c3', 'wwn is for scsi disks'),
            ('nvme:wwn=0x5000c500a1b2c300', 'wwn is for scsi disks'),
            ('nvme:logical_block_size=1024', '512 or 4096'),
            ('usb:logical_block_size=4096', '512 or 4096'),
            ('nvme:logical_block_size=4096,physical_block_size=512', 'larger than the physical'),
            ('cdrom:serial=x', 'no serial')]:
        with pytest.raises(vmlib.LabError, match=message):
            vmlib.parse_disk_spec(bad)


def test_disk_args_of_other_kinds_keep_their_controllers_and_slots():
    specs = [vmlib.parse_disk_spec(s) for s in MESSY]
    disks = ['/r/target%d.img' % i for i in range(len(specs))]
    args = vmlib.disk_args(disks, 'uefi', 'rescue', specs=specs)
    devices = [args[i + 1] for i, a in enumerate(args) if a == '-device']
    # one controller per shared bus, at fixed slots, before the disks
    assert devices[:2] == ['virtio-scsi-pci,id=scsi0,bus=pcie.0,addr=0xa', 'qemu-xhci,id=xhci0,bus=pcie.0,addr=0xb']
    pairs = _attached(args)
    assert [p[1] for p in pairs] == [
        'nvme,drive=t0,serial=NVA,bus=pcie.0,addr=0x10,logical_block_size=4096,physical_block_size=4096',
        'nvme,drive=t1,serial=NVB,bus=pcie.0,addr=0x11',
        'scsi-hd,drive=t2,bus=scsi0.0,channel=0,scsi-id=2,lun=0,serial=S0,wwn=0x5000c500a1b2c300',
        'usb-storage,drive=t3,bus=xhci0.0,port=1,removable=on,serial=U0',
        'ide-cd,drive=t4,bus=ide.0',
        'virtio-blk-pci,drive=t5,serial=old,bus=pcie.0,addr=0x15']
    # the CD's medium is read-only; the other disks are the usual raw files
    assert pairs[4][0] == 'file=/r/target4.img,format=raw,if=none,id=t4,media=cdrom,readonly=on'
    assert pairs[0][0] == 'file=/r/target0.img,format=raw,if=none,id=t0,cache=unsafe'

    # a disk left out: the others keep their devices, the controllers stay
    only = vmlib.disk_args(disks, 'uefi', 'installed', only=[0, 2, 5], specs=specs)
    assert list(_attached(only)) == [pairs[0], pairs[2], pairs[5]]
    assert 'qemu-xhci,id=xhci0,bus=pcie.0,addr=0xb' in only

    # legacy BIOS: boot indexes for the disks a BIOS boots from, not the USB stick nor the CD
    bios = [p[1] for p in _attached(vmlib.disk_args(disks, 'bios', 'installed', specs=specs))]
    boot_indexes = [d.rsplit(',', 1)[-1] for d in bios if 'bootindex' in d]
    assert boot_indexes == ['bootindex=0', 'bootindex=1', 'bootindex=2', 'bootindex=3']
    assert not any('bootindex' in d for d in bios if d.startswith(('usb-storage', 'ide-cd')))

    # without specs: exactly the arguments the default virtio disks always had
    assert vmlib.disk_args(disks[:2], 'uefi', 'rescue', specs=[{'kind': 'virtio'}] * 2) == \
        vmlib.disk_args(disks[:2], 'uefi', 'rescue')
    with pytest.raises(vmlib.LabError, match='6 disk specs for 2 disks'):
        vmlib.disk_args(disks[:2], 'uefi', 'rescue', specs=specs)


def test_cd_pattern_and_sizes():
    cd = vmlib.cd_pattern(4 * 2048)
    assert len(cd) == 8192 and cd.count(b'\0') == 0
    assert cd[2048:2048 + 64].startswith(b'BYOL-LAB virtual CD, sector 00000001')
    assert vmlib.size_bytes('4M') == 4 << 20 and vmlib.size_bytes('2G') == 2 << 30 and vmlib.size_bytes('512') == 512
    with pytest.raises(vmlib.LabError, match='a number of bytes'):
        vmlib.size_bytes('4X')


class _FakeBuilder(object):
    def rescue(self):
        return {'kernel': '/k', 'initrd': '/i', 'root': '/r'}

    def sshkey(self):
        return {'private': '/key'}


def test_a_vm_with_disk_specs_makes_each_disk_and_keeps_the_specs(tmp_path):
    v = vmlib.RescueVM('m', disk_specs=MESSY, run_dir=str(tmp_path), builder=_FakeBuilder(), firmware='bios')
    v.prepare()
    assert v.ndisks == 6
    sizes = [os.path.getsize(d) for d in v.disks]
    assert sizes == [4 << 30, 4 << 30, 2 << 30, 64 << 20, 4 << 20, 512 << 20]
    with open(v.disks[4], 'rb') as f:
        assert f.read() == vmlib.cd_pattern(4 << 20)
    # the boot of the installed disks (a new RescueVM of the same name) attaches the same kinds
    again = vmlib.RescueVM('m', run_dir=str(tmp_path))
    assert again.disk_specs == v.disk_specs and again.ndisks == 6
    again.state['only_disks'] = None
    args = again._args('installed', str(tmp_path / 'serial.log'))
    assert 'ide-cd,drive=t4,bus=ide.0' in args and 'virtio-scsi-pci,id=scsi0,bus=pcie.0,addr=0xa' in args
    # the default VM: no specs in its state, its disks as before
    plain = vmlib.RescueVM('p', disks=1, disk_size='1M', run_dir=str(tmp_path), builder=_FakeBuilder())
    plain.prepare()
    assert 'disk_specs' not in plain.state and [os.path.getsize(d) for d in plain.disks] == [1 << 20]


def test_rescue_takes_disk_specs_and_a_second_boot_on_the_same_disks():
    args = cli.parser().parse_args(['rescue', 'x', '--disk-spec', 'nvme:serial=A', '--disk-spec', 'cdrom'])
    assert args.disk_spec == ['nvme:serial=A', 'cdrom'] and not args.keep_disks
    assert cli.parser().parse_args(['rescue', 'x']).disk_spec is None
    assert cli.parser().parse_args(['rescue', 'x', '--keep-disks']).keep_disks


def test_keep_disks_boots_the_rescue_system_on_the_same_disks(tmp_path, monkeypatch):
    """``byol-lab rescue NAME --keep-disks``: no new disks (no prepare), the rescue system on the VM's disks."""
    v = vmlib.RescueVM('k', disk_specs=MESSY[:2], run_dir=str(tmp_path), builder=_FakeBuilder())
    v.prepare()
    monkeypatch.setenv('BYOL_LAB_RUN', str(tmp_path))
    calls = []
    monkeypatch.setattr(vmlib.RescueVM, 'prepare', lambda self: calls.append('prepare'))
    monkeypatch.setattr(vmlib.RescueVM, '_launch', lambda self, mode: calls.append((mode, self.disks)) or self)
    monkeypatch.setattr(vmlib.RescueVM, 'wait_ssh', lambda self, timeout=600: 0)
    assert cli.main(['rescue', 'k', '--keep-disks', '--short']) == 0
    assert calls == [('rescue', v.disks)]

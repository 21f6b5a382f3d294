# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""QEMU VMs of the lab: a rescue VM with blank disks, then a boot of the installed disks.

A VM lives in a run directory (``<cache>/lab/run/<name>/`` or ``$BYOL_LAB_RUN/<name>/``) holding
its disks (``target0.img`` ...), its UEFI variables (``vars.fd``, kept from the rescue run to the
boot of the installed disks), its serial logs, ``qemu.pid`` and ``vm.json``. Everything started is
found again by its pid file: :func:`cleanup` stops every VM of the run directory.

Usage in tests::

    with RescueVM('t1', disks=2, disk_size='4G') as vm:
        vm.start(); vm.wait_ssh()
        vm.ssh('lsblk')
        vm.poweroff()
        vm.boot_installed(); vm.wait_ssh(); vm.wait_cloud_init()
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from byollab import images

QEMU = 'qemu-system-x86_64'
SSH_OPTS = ['-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR',
            '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=10', '-o', 'ServerAliveInterval=15']
# the rescue root disk's size as the rescue system sees it (see rescue_overlay)
RESCUE_DISK_SIZE = '1T'
# no_timer_check: see images.KERNEL_CMDLINE (a loaded CI host panicked a rescue VM: "IO-APIC + timer doesn't work")
RESCUE_CMDLINE = 'root=LABEL=rescue rw console=ttyS0,115200n8 net.ifnames=0 no_timer_check'


def run_root():
    return os.environ.get('BYOL_LAB_RUN') or os.path.join(images.cache_root(), 'run')


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]
    finally:
        s.close()


def _boot_id():
    try:
        with open('/proc/sys/kernel/random/boot_id') as f:
            return f.read().strip()
    except OSError:
        return ''


def default_smp():
    """vCPUs of a lab VM: $BYOL_LAB_SMP, else 2 (hack/test's VM lanes set 1: two VMs beside pytest on 2 cores)."""
    value = os.environ.get('BYOL_LAB_SMP') or '2'
    if not value.isdigit() or not 1 <= int(value) <= 16:
        raise LabError('BYOL_LAB_SMP must be a number of vCPUs between 1 and 16, got %r' % value)
    return int(value)


def accel():
    """'kvm' when a KVM guest really runs OVMF here, else 'tcg' (probe cached per host boot)."""
    forced = os.environ.get('BYOL_LAB_ACCEL')
    if forced:
        return forced
    if not os.access('/dev/kvm', os.R_OK | os.W_OK):
        return 'tcg'
    cache = os.path.join(images.cache_root(), 'accel.json')
    try:
        with open(cache) as f:
            data = json.load(f)
        if data.get('boot_id') == _boot_id():
            return data['accel']
    except (OSError, ValueError, KeyError):
        pass
    result = _probe_kvm()
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    with open(cache, 'w') as f:
        json.dump({'boot_id': _boot_id(), 'accel': result}, f)
    return result


def _probe_kvm(seconds=6):
    """Run OVMF under KVM for a few seconds: it must stay alive, print no error and reach its console."""
    work = tempfile.mkdtemp(prefix='byol-kvm-probe-')
    try:
        vars_fd = os.path.join(work, 'vars.fd')
        shutil.copy(images.OVMF_VARS, vars_fd)
        log = os.path.join(work, 'serial.log')
        args = [QEMU, '-machine', 'q35', '-accel', 'kvm', '-cpu', 'host', '-m', '256', '-nodefaults', '-display', 'none',
                '-monitor', 'none', '-serial', 'file:' + log,
                '-drive', 'if=pflash,format=raw,readonly=on,file=' + images.OVMF_CODE,
                '-drive', 'if=pflash,format=raw,file=' + vars_fd]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            out = proc.communicate(timeout=seconds)[0]
            return 'tcg'  # exited early: KVM does not work
        except subprocess.TimeoutExpired:
            proc.kill()
            out = proc.communicate()[0]
        if b'error' in out.lower():
            return 'tcg'
        return 'kvm' if os.path.exists(log) and os.path.getsize(log) > 0 else 'tcg'
    finally:
        shutil.rmtree(work, ignore_errors=True)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().split(')')[-1].split()[0] != 'Z'
    except OSError:
        return False


def _qemu_pid(pidfile):
    """The pid in ``pidfile`` if it is a running QEMU, else None (a recycled pid is not ours)."""
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            cmd = f.read().split(b'\0')
    except OSError:
        return None
    if not cmd or not os.path.basename(cmd[0].decode(errors='replace')).startswith('qemu-system'):
        return None
    return pid if pid_alive(pid) else None


def stop_pidfile(pidfile, timeout=15):
    pid = _qemu_pid(pidfile)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + timeout
    while time.monotonic() < end and pid_alive(pid):
        time.sleep(0.2)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
        while pid_alive(pid):
            time.sleep(0.1)
    return True


def kill_pidfile(pidfile):
    """SIGKILL the QEMU of ``pidfile`` at once (a power cut: the guest flushes nothing); False if none ran."""
    pid = _qemu_pid(pidfile)
    if pid is None:
        return False
    os.kill(pid, signal.SIGKILL)
    while pid_alive(pid):
        time.sleep(0.05)
    return True


# the rescue systems a VM can boot: the lab's artifact of that name (rescue_zfs: with ZFS, built when first asked for)
RESCUE_VARIANTS = ('rescue', 'rescue_zfs')


class LabError(Exception):
    pass


def rescue_overlay(root, path, size=RESCUE_DISK_SIZE):
    """A fresh qcow2 overlay of the rescue root image (which stays pristine), ``size`` big.

    A real rescue system runs from the network or from RAM: it holds none of the server's disks. The
    lab's rescue root is a disk, so it is made bigger than any target disk: the disk groups of
    pre-flight (smaller disks first) then number the target disks from 1, as on a real server."""
    if os.path.exists(path):
        os.unlink(path)
    images.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', os.path.abspath(root), '-F', 'raw', path, size])
    return path


def check_disk_indexes(only, count):
    """``only`` (indexes of the target disks) checked against ``count`` disks: None means all."""
    if only is None:
        return None
    only = sorted(set(int(i) for i in only))
    if not only:
        raise LabError('at least one disk must stay attached')
    bad = [i for i in only if not 0 <= i < count]
    if bad:
        raise LabError('no disk %s: the VM has disks 0 to %d' % (', '.join(str(i) for i in bad), count - 1))
    return only


# Disks of other kinds than the default virtio disks (``disk_specs`` of RescueVM, ``--disk-spec`` of ``byol-lab
# rescue``): what real servers carry beside their system disks. Each kind sits on a fixed controller, so that the
# boot of the installed disks (same NVRAM) finds every disk where the rescue run had it.
DISK_KINDS = ('virtio', 'nvme', 'scsi', 'usb', 'cdrom')
SPEC_KEYS = ('size', 'serial', 'wwn', 'logical_block_size', 'physical_block_size')
SCSI_SLOT = 0x0a   # virtio-scsi-pci, id scsi0: the scsi disks (scsi-hd), scsi-id = the disk's index
USB_SLOT = 0x0b    # qemu-xhci, id xhci0: the USB sticks (usb-storage, removable), port = 1 + their ordinal
CD_SIZE = '4M'     # a virtual CD's medium: a read-only image of a fixed pattern (lab.cd_pattern)
_SAFE = frozenset('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-')


def parse_disk_spec(text, default_size='4G'):
    """``KIND[:key=value,...]`` -> dict (kind, size, serial, wwn, logical_block_size, physical_block_size).

    Kinds: virtio (the default disks), nvme (a controller per disk, its own PCI slot), scsi (virtio-scsi, scsi-hd:
    ``wwn=0x`` and 16 hex digits), usb (usb-storage on xHCI, removable), cdrom (ide-cd on the q35 AHCI, a read-only
    medium of a fixed pattern). ``logical_block_size``/``physical_block_size``: 512 or 4096 (nvme, scsi, virtio).
    Values are letters, digits, ``.``, ``_`` and ``-`` only: they end up in QEMU's comma-separated options."""
    kind, _sep, rest = str(text).partition(':')
    if kind not in DISK_KINDS:
        raise LabError('disk spec %r: the kind must be one of %s' % (text, ', '.join(DISK_KINDS)))
    spec = {'kind': kind, 'size': CD_SIZE if kind == 'cdrom' else default_size}
    for item in [i for i in rest.split(',') if i] if rest else []:
        key, sep, value = item.partition('=')
        if not sep or key not in SPEC_KEYS:
            raise LabError('disk spec %r: %r is not key=value with a key among %s' % (text, item, ', '.join(SPEC_KEYS)))
        if not value or not set(value) <= _SAFE:
            raise LabError('disk spec %r: the value of %s may hold only letters, digits, ".", "_" and "-"' % (text, key))
        spec[key] = value
    if 'wwn' in spec:
        digits = spec['wwn'][2:] if spec['wwn'].lower().startswith('0x') else ''
        if kind != 'scsi' or len(digits) != 16 or not all(c in '0123456789abcdefABCDEF' for c in digits):
            raise LabError('disk spec %r: wwn is for scsi disks, 0x and 16 hex digits' % text)
    for key in ('logical_block_size', 'physical_block_size'):
        if key in spec:
            if kind in ('usb', 'cdrom') or spec[key] not in ('512', '4096'):
                raise LabError('disk spec %r: %s is 512 or 4096, on nvme, scsi and virtio disks' % (text, key))
            spec[key] = int(spec[key])
    if spec.get('logical_block_size', 512) > spec.get('physical_block_size', 4096):
        raise LabError('disk spec %r: the logical block size is larger than the physical one' % text)
    if kind == 'cdrom' and 'serial' in spec:
        raise LabError('disk spec %r: a cdrom has no serial here' % text)
    return spec


def _ordinal(specs, i):
    """How many disks of disk i's kind come before it (its port or bus on the shared controller)."""
    return sum(1 for s in specs[:i] if s['kind'] == specs[i]['kind'])


def disk_args(disks, firmware, mode, only=None, specs=None):
    """QEMU arguments of the target disks: disk i has serial ``target<i>`` at PCI slot 0x10+i whatever
    else is attached (UEFI boot entries name that slot); ``only`` leaves out the other disks. Booting
    the installed disks under SeaBIOS, the attached disks get boot indexes in order (not USB sticks nor CDs).

    ``specs`` (from :func:`parse_disk_spec`, one per disk; None: every disk virtio) gives disks of other kinds: an
    NVMe disk has its own controller in slot 0x10+i; SCSI disks share a virtio-scsi controller (slot 0x0a), USB
    sticks an xHCI controller (slot 0x0b), each controller present whether or not its disks are left out; CDs
    sit on the q35 AHCI's buses ide.0 to ide.5."""
    args = []
    order = 0
    if specs is not None:
        if len(specs) != len(disks):
            raise LabError('%d disk specs for %d disks' % (len(specs), len(disks)))
        kinds = set(s['kind'] for s in specs)
        if 'scsi' in kinds:
            args += ['-device', 'virtio-scsi-pci,id=scsi0,bus=pcie.0,addr=0x%x' % SCSI_SLOT]
        if 'usb' in kinds:
            args += ['-device', 'qemu-xhci,id=xhci0,bus=pcie.0,addr=0x%x' % USB_SLOT]
    for i, disk in enumerate(disks):
        if only is not None and i not in only:
            continue
        spec = specs[i] if specs is not None else {'kind': 'virtio'}
        kind = spec['kind']
        serial = spec.get('serial') or 'target%d' % i
        drive = 'file=%s,format=raw,if=none,id=t%d,cache=unsafe' % (disk, i)
        if kind == 'virtio':
            dev = 'virtio-blk-pci,drive=t%d,serial=%s,bus=pcie.0,addr=0x%x' % (i, serial, 0x10 + i)
        elif kind == 'nvme':
            dev = 'nvme,drive=t%d,serial=%s,bus=pcie.0,addr=0x%x' % (i, serial, 0x10 + i)
        elif kind == 'scsi':
            dev = 'scsi-hd,drive=t%d,bus=scsi0.0,channel=0,scsi-id=%d,lun=0,serial=%s' % (i, i, serial)
            if spec.get('wwn'):
                dev += ',wwn=%s' % spec['wwn']
        elif kind == 'usb':
            dev = 'usb-storage,drive=t%d,bus=xhci0.0,port=%d,removable=on,serial=%s' % (
                i, 1 + _ordinal(specs, i), serial)
        else:  # cdrom
            drive = 'file=%s,format=raw,if=none,id=t%d,media=cdrom,readonly=on' % (disk, i)
            dev = 'ide-cd,drive=t%d,bus=ide.%d' % (i, _ordinal(specs, i))
        for key in ('logical_block_size', 'physical_block_size'):
            if spec.get(key):
                dev += ',%s=%d' % (key, spec[key])
        if mode == 'installed' and firmware == 'bios' and kind in ('virtio', 'nvme', 'scsi'):
            dev += ',bootindex=%d' % order
            order += 1
        args += ['-drive', drive, '-device', dev]
    return args


def cd_pattern(size):
    """The bytes of a virtual CD's medium: 2048-byte sectors, each naming its number (hashable, not zeros)."""
    sectors = size // 2048
    return b''.join((b'BYOL-LAB virtual CD, sector %08d\n' % n).ljust(2048, b'.') for n in range(sectors))


def size_bytes(text):
    """``4G``, ``512M``, ``64K`` or a number of bytes -> bytes."""
    units = {'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30, 'T': 1 << 40}
    text = str(text).strip()
    if text[-1:].upper() in units and text[:-1].isdigit():
        return int(text[:-1]) * units[text[-1].upper()]
    if text.isdigit():
        return int(text)
    raise LabError('size %r: a number of bytes or a number with K, M, G or T' % text)


class RescueVM(object):
    """One lab VM: rescue boot with blank disks, then the boot of those disks."""

    def __init__(self, name, disks=2, disk_size='4G', firmware='uefi', memory=2048, smp=None, builder=None,
                 run_dir=None, keep=False, rescue='rescue', disk_specs=None):
        if firmware not in ('uefi', 'bios'):
            raise LabError('firmware must be uefi or bios')
        if rescue not in RESCUE_VARIANTS:
            raise LabError('rescue must be one of %s' % ', '.join(RESCUE_VARIANTS))
        self.rescue_variant = rescue
        # disk_specs (texts for parse_disk_spec or dicts): disks of other kinds, in place of ``disks`` virtio disks
        self.disk_specs = None
        if disk_specs:
            self.disk_specs = [d if isinstance(d, dict) else parse_disk_spec(d, disk_size) for d in disk_specs]
            disks = len(self.disk_specs)
        if not 0 <= disks <= 8:
            raise LabError('between 0 and 8 target disks')
        self.name = name
        self.dir = os.path.join(run_dir or run_root(), name)
        self.ndisks, self.disk_size, self.firmware, self.memory = disks, disk_size, firmware, memory
        self.keep = keep
        self._builder = builder
        self.state = {}
        if os.path.exists(self.statefile):
            with open(self.statefile) as f:
                self.state = json.load(f)
            self.ndisks = len(self.state.get('disks', [])) or self.ndisks
            self.disk_specs = self.state.get('disk_specs', self.disk_specs)
            self.firmware = self.state.get('firmware', self.firmware)
        # not given: as many vCPUs as the rescue run had (the installed system boots on the same machine)
        self.smp = smp or self.state.get('smp') or default_smp()

    # ------------------------------------------------------------ files
    @property
    def statefile(self):
        return os.path.join(self.dir, 'vm.json')

    @property
    def pidfile(self):
        return os.path.join(self.dir, 'qemu.pid')

    @property
    def vars_fd(self):
        return os.path.join(self.dir, 'vars.fd')

    @property
    def port(self):
        return self.state.get('port')

    @property
    def disks(self):
        return self.state.get('disks', [])

    def _save(self):
        tmp = self.statefile + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(self.state, f, indent=1)
        os.replace(tmp, self.statefile)

    @property
    def builder(self):
        if self._builder is None:
            self._builder = images.Builder()
        return self._builder

    @property
    def key(self):
        return self.state.get('key') or self.builder.sshkey()['private']

    # ------------------------------------------------------------ lifecycle
    def prepare(self):
        """Run directory, blank disks and a fresh copy of the UEFI variables."""
        if _qemu_pid(self.pidfile):
            raise LabError('VM %s is already running (pid file %s)' % (self.name, self.pidfile))
        os.makedirs(self.dir, exist_ok=True)
        disks = []
        for i in range(self.ndisks):
            path = os.path.join(self.dir, 'target%d.img' % i)
            spec = self.disk_specs[i] if self.disk_specs else {'kind': 'virtio', 'size': self.disk_size}
            if spec['kind'] == 'cdrom':
                with open(path, 'wb') as f:
                    f.write(cd_pattern(size_bytes(spec['size'])))
            else:
                images.run(['qemu-img', 'create', '-q', '-f', 'raw', path, spec['size']])
            disks.append(path)
        if self.firmware == 'uefi':
            shutil.copy(images.OVMF_VARS, self.vars_fd)
        rescue = getattr(self.builder, self.rescue_variant)()
        self.state = {'name': self.name, 'rescue_variant': self.rescue_variant, 'disks': disks,
                      'firmware': self.firmware, 'memory': self.memory,
                      'smp': self.smp, 'key': self.builder.sshkey()['private'],
                      'rescue': {'kernel': rescue['kernel'], 'initrd': rescue['initrd'], 'root': rescue['root']}}
        if self.disk_specs:
            self.state['disk_specs'] = self.disk_specs
        self._save()

    def _args(self, mode, serial):
        port = free_port()
        self.state['port'] = port
        args = [QEMU, '-name', 'byol-lab-%s' % self.name, '-machine', 'q35', '-accel', accel(),
                '-smp', str(self.smp), '-m', str(self.memory), '-nodefaults', '-display', 'none', '-monitor', 'none',
                '-serial', 'file:' + serial, '-daemonize', '-pidfile', self.pidfile,
                '-netdev', 'user,id=n0,hostfwd=tcp:127.0.0.1:%d-:22' % port,
                '-device', 'virtio-net-pci,netdev=n0,bus=pcie.0,addr=0x3']
        if self.firmware == 'uefi':
            args += ['-drive', 'if=pflash,format=raw,readonly=on,file=' + images.OVMF_CODE,
                     '-drive', 'if=pflash,format=raw,file=' + self.vars_fd]
        only = self.state.get('only_disks') if mode == 'installed' else None
        args += disk_args(self.disks, self.firmware, mode, only=only, specs=self.state.get('disk_specs'))
        if mode == 'rescue':
            r = self.state['rescue']
            overlay = rescue_overlay(r['root'], os.path.join(self.dir, 'rescue-overlay.qcow2'))
            args += ['-kernel', r['kernel'], '-initrd', r['initrd'], '-append', RESCUE_CMDLINE,
                     '-drive', 'file=%s,format=qcow2,if=none,id=rescue,cache=unsafe' % overlay,
                     '-device', 'virtio-blk-pci,drive=rescue,serial=rescue,bus=pcie.0,addr=0x1c']
        return args

    def _launch(self, mode):
        if _qemu_pid(self.pidfile):
            raise LabError('VM %s is already running' % self.name)
        serial = os.path.join(self.dir, 'serial-%s.log' % mode)
        if os.path.exists(serial):
            os.unlink(serial)
        for _attempt in range(3):
            args = self._args(mode, serial)
            proc = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
            if proc.returncode == 0:
                break
            if b'hostfwd' not in proc.stdout and b'Could not set up host forwarding' not in proc.stdout:
                raise LabError('QEMU failed (rc %d): %s\n%s'
                               % (proc.returncode, ' '.join(args), proc.stdout.decode(errors='replace')))
        else:
            raise LabError('QEMU could not forward a port: %s' % proc.stdout.decode(errors='replace'))
        self.state.update(mode=mode, serial=serial, started=time.time(), accel=accel(),
                          pid=_qemu_pid(self.pidfile), cmdline=args)
        self._save()
        self.write_inventory()
        return self

    def start(self):
        """Boot the rescue system (direct kernel boot) with blank target disks first."""
        if not self.state.get('disks'):
            self.prepare()
        return self._launch('rescue')

    def power_cut(self):
        """The server loses power at once: QEMU is killed (SIGKILL), what the guest had not written is lost.

        The target disks and the UEFI variables stay as they are (see :meth:`restart_rescue`)."""
        done = kill_pidfile(self.pidfile)
        self.state['power_cuts'] = self.state.get('power_cuts', 0) + 1
        self._save()
        return done

    def restart_rescue(self):
        """Start the rescue system again on the SAME target disks and NVRAM (a BMC power cycle into rescue).

        Only the rescue root's overlay is new (a rescue system runs from RAM or the network: nothing of the
        last boot survives); :meth:`prepare` is not called, the disks and ``vars.fd`` are kept."""
        if not self.disks:
            raise LabError('VM %s has no disks: start a rescue VM first' % self.name)
        if self.running:
            self.power_cut()
        return self._launch('rescue')

    def boot_installed(self, only=None):
        """Boot the target disks alone (no -kernel), with the NVRAM of the rescue run.

        ``only``: indexes of the disks to attach (the others are left out, as if pulled from the
        server); each disk keeps its PCI slot, so the NVRAM's device paths stay valid."""
        if not self.disks:
            raise LabError('VM %s has no disks: start a rescue VM first' % self.name)
        self.state['only_disks'] = check_disk_indexes(only, len(self.disks))
        return self._launch('installed')

    @property
    def running(self):
        return _qemu_pid(self.pidfile) is not None

    def wait_ssh(self, timeout=600, user='root'):
        t0 = time.monotonic()
        last = ''
        while time.monotonic() - t0 < timeout:
            if not self.running:
                raise LabError('VM %s stopped before SSH answered; serial log:\n%s' % (self.name, self.serial_tail()))
            p = self.ssh_run(['true'], user=user, timeout=30)
            if p.returncode == 0:
                self.state['ssh_seconds'] = round(time.monotonic() - t0, 1)
                self._save()
                return time.monotonic() - t0
            last = p.stderr
            time.sleep(3)
        raise LabError('no SSH on port %s after %d s (%s); serial log:\n%s'
                       % (self.port, timeout, last.strip(), self.serial_tail()))

    def ssh_argv(self, user='root'):
        return ['ssh', '-i', self.key, '-p', str(self.port)] + SSH_OPTS + ['%s@127.0.0.1' % user]

    def ssh_run(self, argv, user='root', timeout=600, check=False, data=None):
        """Run a command (argument list, quoted for the remote shell) over SSH."""
        import shlex
        cmd = self.ssh_argv(user) + ['--', ' '.join(shlex.quote(a) for a in argv)]
        try:
            p = subprocess.run(cmd, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                               universal_newlines=True, check=False)
        except subprocess.TimeoutExpired as e:
            p = subprocess.CompletedProcess(cmd, 255, e.stdout or '', 'timeout after %s s' % timeout)
        if check and p.returncode != 0:
            raise LabError('ssh %s: rc %d\n%s\n%s' % (' '.join(argv), p.returncode, p.stdout, p.stderr))
        return p

    def ssh(self, *argv, **kw):
        kw.setdefault('check', True)
        return self.ssh_run(list(argv), **kw).stdout

    def wait_cloud_init(self, timeout=900):
        p = self.ssh_run(['cloud-init', 'status', '--wait', '--long'], timeout=timeout)
        # rc 2 = done with recoverable errors (deprecations ...): report it, the caller decides
        if p.returncode not in (0, 2):
            raise LabError('cloud-init status: rc %d\n%s%s' % (p.returncode, p.stdout, p.stderr))
        return p.stdout

    def wait_stopped(self, timeout=300):
        pid = _qemu_pid(self.pidfile)
        end = time.monotonic() + timeout
        while pid and pid_alive(pid):
            if time.monotonic() > end:
                return False
            time.sleep(0.5)
        return True

    def poweroff(self, timeout=300):
        """Clean poweroff from inside; killed if it does not stop in time."""
        if not self.running:
            return
        p = self.ssh_run(['systemctl', 'poweroff'], timeout=30)
        if p.returncode != 0 and 'Permission denied' in p.stderr:
            # an installed system that does not take the lab's key (its own came from the config drive):
            # power is cut without waiting, unless it is already shutting down by itself
            if not self.wait_stopped(10):
                self.stop()
            return
        if not self.wait_stopped(timeout):
            self.stop()

    def stop(self):
        return stop_pidfile(self.pidfile)

    def destroy(self):
        self.stop()
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def serial_tail(self, n=60):
        path = self.state.get('serial')
        if not path or not os.path.exists(path):
            return '(no serial log)'
        with open(path, errors='replace') as f:
            return '\n'.join(f.read().splitlines()[-n:])

    def serial_log(self):
        path = self.state.get('serial')
        if not path or not os.path.exists(path):
            return ''
        with open(path, errors='replace') as f:
            return f.read()

    # ------------------------------------------------------------ ansible
    def inventory(self):
        return {'ansible_host': '127.0.0.1', 'ansible_port': self.port, 'ansible_user': 'root',
                'ansible_ssh_private_key_file': self.key, 'ansible_python_interpreter': '/usr/bin/python3',
                'ansible_ssh_common_args': ' '.join(SSH_OPTS[:6])}

    def write_inventory(self):
        lines = ['all:', '  hosts:', '    %s:' % self.name]
        for k, v in self.inventory().items():
            lines.append('      %s: %s' % (k, json.dumps(v)))
        with open(os.path.join(self.dir, 'inventory.yml'), 'w') as f:
            f.write('\n'.join(lines) + '\n')

    def info(self):
        return dict(self.state, dir=self.dir, inventory=os.path.join(self.dir, 'inventory.yml'),
                    running=self.running, host_vars=self.inventory())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.destroy()
        return False


def list_vms(root=None):
    root = root or run_root()
    if not os.path.isdir(root):
        return []
    return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))


def lab_loop_devices():
    """Loop devices whose backing file lies in the lab's cache."""
    p = subprocess.run(['losetup', '--json', '--list'], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                       universal_newlines=True, check=False)
    if p.returncode != 0 or not p.stdout.strip():
        return []
    prefix = os.path.realpath(images.cache_root()) + os.sep
    out = []
    for dev in json.loads(p.stdout).get('loopdevices', []):
        back = dev.get('back-file') or ''
        if os.path.realpath(back.replace(' (deleted)', '')).startswith(prefix):
            out.append(dev['name'])
    return out


def cleanup(root=None, remove=False):
    """Stop every VM of the run directory (by pid file) and detach the lab's loop devices."""
    done = []
    root = root or run_root()
    for name in list_vms(root):
        pidfile = os.path.join(root, name, 'qemu.pid')
        if stop_pidfile(pidfile):
            done.append('stopped VM %s' % name)
        if remove:
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    for dev in lab_loop_devices():
        subprocess.run(['umount', '-l', dev], stderr=subprocess.DEVNULL, check=False)
        subprocess.run(['losetup', '-d', dev], check=False)
        done.append('detached %s' % dev)
    return done

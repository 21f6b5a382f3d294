# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``lab/byol-lab``: build the lab's images, serve them, boot rescue VMs and installed disks, clean up."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import time

from byollab import images, lanes as laneslib, vm as vmlib

STEPS = ('sshkey', 'rescue', 'debroot', 'byoi', 'byol', 'byol_foreign', 'synthetic')
# built only when named in --only (minutes of DKMS build; no default run needs them)
EXTRA_STEPS = ('rescue_zfs',)


def _human(n):
    for unit in ('B', 'KiB', 'MiB', 'GiB'):
        if n < 1024 or unit == 'GiB':
            return '%.0f %s' % (n, unit) if unit == 'B' else '%.1f %s' % (n, unit)
        n /= 1024.0
    return str(n)


def cmd_build(args):
    only = set(args.only.split(',')) if args.only else None
    force = set(args.force.split(',')) if args.force else set()
    b = images.Builder(force=force)
    t0 = time.monotonic()
    report = []
    unknown = sorted((only or set()) - set(STEPS + EXTRA_STEPS))
    if unknown:
        print('byol-lab build: no artifact %s (known: %s)' % (', '.join(unknown), ','.join(STEPS + EXTRA_STEPS)),
              file=sys.stderr)
        return 2
    for name in STEPS + EXTRA_STEPS:
        if (only and name not in only) or (name in EXTRA_STEPS and not only):
            continue
        t = time.monotonic()
        art = getattr(b, name)()
        report.append((art, time.monotonic() - t))
    total = time.monotonic() - t0
    if args.json:
        print(json.dumps({'seconds': round(total, 1), 'artifacts': [
            {'name': a.name, 'cached': a.cached, 'seconds': round(s, 1), 'path': a.path,
             'files': {k: {'path': a[k], 'size': sz[0], 'allocated': sz[1]} for k, sz in a.sizes().items()}}
            for a, s in report]}, indent=1))
        return 0
    print('%-10s %-7s %8s  %s' % ('artifact', 'state', 'time', 'files (apparent size / allocated)'))
    for art, secs in report:
        sizes = art.sizes()
        files = ', '.join('%s %s/%s' % (os.path.basename(art[k]), _human(s[0]), _human(s[1]))
                          for k, s in sorted(sizes.items()) if k not in ('private', 'public') or art.name == 'sshkey')
        if art.name == 'synthetic':
            files = '%d images in %s' % (len(sizes), os.path.join(art.path, 'images'))
        if art.name == 'debroot':
            files = 'root tree %s' % art['root']
        print('%-10s %-7s %7.1fs  %s' % (art.name, 'cached' if art.cached else 'built', secs, files))
    print('total %.1f s (cache %s)' % (total, b.root))
    return 0


def _www(b):
    """A directory of hard links to every built image, with checksum files beside each.

    The BYOI and BYOL images at the top, the synthetic images in ``synthetic/`` (several have the same
    file names as the real images: ``byoi.qcow2``, ``byoi.raw``, ``byol.qcow2`` ...). Checksum files are
    written atomically (a reader never sees a partial one). Scenarios that run side by side each start a
    server: one at a time links and sums (a lock file beside the directory). The directory is
    ``<cache>/lab/www-<key>``, the key from the builds it links: a checkout whose recipes differ (another
    branch) gets its own and never replaces the images this one serves."""
    os.makedirs(b.root, exist_ok=True)
    with open(os.path.join(b.root, 'www.lock'), 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _www_locked(b)


def _www_locked(b):
    from byollab import httpserve
    www = os.path.join(b.root, 'www')
    syn_www = os.path.join(www, 'synthetic')
    sources = []
    for art in (b.byoi(), b.byol(), b.byol_foreign()):
        sources += [(art[k], www) for k in art.files]
    syn = b.synthetic()
    sources += [(syn[k], syn_www) for k in syn.files]
    # this checkout's own directory, named after its builds: another checkout with other recipes has another one
    keyed = b.keyed_dir('www', [(src, os.path.relpath(directory, www)) for src, directory in sources])
    sources = [(src, os.path.normpath(os.path.join(keyed, os.path.relpath(directory, www)))) for src, directory in sources]
    www, syn_www = keyed, os.path.join(keyed, 'synthetic')
    os.makedirs(syn_www, exist_ok=True)
    for src, directory in sources:
        dest = os.path.join(directory, os.path.basename(src))
        if os.path.exists(dest) and os.path.samefile(src, dest):
            continue
        if os.path.lexists(dest):
            os.unlink(dest)
        try:
            os.link(src, dest)
        except OSError:
            os.symlink(src, dest)
        for t in httpserve.CHECKSUM_TYPES:
            if os.path.exists('%s.%s' % (dest, t)):
                os.unlink('%s.%s' % (dest, t))
    for directory in (www, syn_www):
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if not name.endswith(httpserve.IMAGE_SUFFIXES) or not os.path.isfile(path):
                continue
            for t in httpserve.CHECKSUM_TYPES:
                if not os.path.exists('%s.%s' % (path, t)):
                    tmp = '%s.%s.%d.tmp' % (path, t, os.getpid())
                    with open(tmp, 'w') as f:
                        f.write('%s  %s\n' % (httpserve.file_digest(path, t), name))
                    os.replace(tmp, '%s.%s' % (path, t))
    return www


def cmd_serve(args):
    from byollab import httpserve
    directory = args.directory or _www(images.Builder())
    argv = [directory, '--port', str(args.port)]
    if args.directory:
        argv.append('--checksums')
    if args.auth:
        argv += ['--auth', args.auth]
    if args.tls:
        argv += ['--tls', args.tls]
    return httpserve.main(argv)


def _print_vm(v, as_json=True):
    info = v.info()
    if as_json:
        print(json.dumps(info, indent=1))
    else:
        print('%s: %s, ssh -p %s root@127.0.0.1 (key %s), inventory %s'
              % (v.name, 'running' if info['running'] else 'stopped', v.port, v.key, info['inventory']))


def cmd_rescue(args):
    t0 = time.monotonic()
    if args.keep_disks:
        # the same VM's disks as they are (an installed system is powered off first): a second reinstall
        v = vmlib.RescueVM(args.name)
        if v.running:
            v.poweroff(timeout=args.timeout)
        v.restart_rescue()
    else:
        v = vmlib.RescueVM(args.name, disks=args.disks, disk_size=args.disk_size, firmware=args.firmware,
                           memory=args.memory, smp=args.smp, rescue=args.rescue, disk_specs=args.disk_spec)
        v.prepare()
        v.start()
    if not args.no_wait:
        try:
            v.wait_ssh(timeout=args.timeout)
        except vmlib.LabError:
            v.stop()
            raise
    v.state['boot_seconds'] = round(time.monotonic() - t0, 1)
    v._save()
    if args.inventory:
        with open(os.path.join(v.dir, 'inventory.yml')) as src, open(args.inventory, 'w') as dst:
            dst.write(src.read())
    _print_vm(v, not args.short)
    return 0


def cmd_boot(args):
    v = vmlib.RescueVM(args.name)
    if v.running:
        v.poweroff(timeout=args.timeout)
    t0 = time.monotonic()
    v.boot_installed(only=args.disk)
    if not args.no_wait:
        v.wait_ssh(timeout=args.timeout)
        if not args.no_cloud_init:
            print(v.wait_cloud_init(timeout=args.timeout), file=sys.stderr)
    v.state['boot_seconds'] = round(time.monotonic() - t0, 1)
    v._save()
    _print_vm(v, not args.short)
    return 0


def cmd_ssh(args):
    v = vmlib.RescueVM(args.name)
    argv = v.ssh_argv(args.user) + args.command
    os.execvp(argv[0], argv)


def cmd_poweroff(args):
    vmlib.RescueVM(args.name).poweroff(timeout=args.timeout)
    return 0


def cmd_power_cut(args):
    """A server fault: the VM's power is cut at once (SIGKILL of QEMU); --rescue starts it again into rescue
    with the same disks and NVRAM and waits for SSH."""
    v = vmlib.RescueVM(args.name)
    print('power cut: %s' % ('QEMU killed' if v.power_cut() else 'the VM was not running'), file=sys.stderr)
    if args.rescue:
        v.restart_rescue()
        v.wait_ssh(timeout=args.timeout)
        _print_vm(v, not args.short)
    return 0


def cmd_destroy(args):
    v = vmlib.RescueVM(args.name)
    v.keep = args.keep
    v.destroy()
    return 0


def cmd_cleanup(args):
    for line in vmlib.cleanup(remove=args.remove):
        print(line)
    return 0


def cmd_list(_args):
    for name in vmlib.list_vms():
        _print_vm(vmlib.RescueVM(name), as_json=False)
    return 0


def cmd_info(args):
    _print_vm(vmlib.RescueVM(args.name))
    return 0


def cmd_accel(_args):
    print(vmlib.accel())
    return 0


def cmd_paths(_args):
    b = images.Builder()
    out = {}
    for name in STEPS:
        art = getattr(b, name)()
        out[name] = {k: art[k] for k in art.files}
    print(json.dumps(out, indent=1))
    return 0


def cmd_lanes(args):
    molecule_dir = args.molecule_dir or os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), 'extensions', 'molecule')
    env = dict(os.environ)
    for key, value in (('BYOL_VM_TESTS', args.vm_tests), ('BYOL_VM_LANES', args.lanes),
                       ('BYOL_SCENARIOS', args.scenarios), ('BYOL_LAB_SMP', args.smp)):
        if value is not None:
            env[key] = value
    try:
        plan = laneslib.Plan.from_env(molecule_dir, env)
    except laneslib.PlanError as e:
        print('byol-lab lanes: %s' % e, file=sys.stderr)
        return 2
    print('\n'.join(plan.table() if args.dry_run else plan.shell_lines()))
    return 0


def parser():
    p = argparse.ArgumentParser(prog='byol-lab', description='The VM lab of baremetal.byol (test tooling).')
    sub = p.add_subparsers(dest='cmd', required=True)

    s = sub.add_parser('build', help='build (or find cached) every image; prints sizes and times')
    s.add_argument('--only', help='comma-separated artifacts: %s (and, only when named: %s)'
                   % (','.join(STEPS), ','.join(EXTRA_STEPS)))
    s.add_argument('--force', help='comma-separated artifacts to rebuild')
    s.add_argument('--json', action='store_true')
    s.set_defaults(func=cmd_build)

    s = sub.add_parser('paths', help='JSON of the built files (builds what is missing)')
    s.set_defaults(func=cmd_paths)

    s = sub.add_parser('serve', help='serve the images over HTTP on 127.0.0.1 with checksum files')
    s.add_argument('directory', nargs='?', help='default: every lab image (hard links in <cache>/lab/www-<key>, the synthetic ones in its synthetic/)')
    s.add_argument('--port', type=int, default=8080)
    s.add_argument('--auth', help='exact Authorization header value required')
    s.add_argument('--tls', metavar='CERTDIR')
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser('rescue', help='boot a rescue VM with blank disks, wait for SSH, print its inventory entry')
    s.add_argument('name')
    s.add_argument('--disks', type=int, default=2)
    s.add_argument('--disk-size', default='4G')
    s.add_argument('--firmware', choices=('uefi', 'bios'), default='uefi')
    s.add_argument('--memory', type=int, default=2048)
    s.add_argument('--smp', type=int, default=None, help='vCPUs (default: $BYOL_LAB_SMP, else 2)')
    s.add_argument('--timeout', type=int, default=600)
    s.add_argument('--no-wait', action='store_true')
    s.add_argument('--rescue', choices=vmlib.RESCUE_VARIANTS, default='rescue',
                   help='the rescue system: rescue_zfs has ZFS (built on first use, minutes of DKMS build)')
    s.add_argument('--disk-spec', action='append', metavar='KIND[:key=value,...]',
                   help='a disk of another kind, repeatable, in place of --disks (kinds virtio, nvme, scsi, usb, cdrom; '
                        'keys size, serial, wwn, logical_block_size, physical_block_size; see lab/README.md)')
    s.add_argument('--keep-disks', action='store_true',
                   help='boot the rescue system again on the VM\'s disks as they are (its other options are ignored)')
    s.add_argument('--inventory', help='also write the inventory (YAML) to this file')
    s.add_argument('--short', action='store_true', help='one line instead of JSON')
    s.set_defaults(func=cmd_rescue)

    s = sub.add_parser('boot', help='power the rescue VM off and boot its disks (same NVRAM), wait for cloud-init')
    s.add_argument('name')
    s.add_argument('--timeout', type=int, default=900)
    s.add_argument('--no-wait', action='store_true')
    s.add_argument('--no-cloud-init', action='store_true')
    s.add_argument('--disk', type=int, action='append', metavar='INDEX',
                   help='attach only this disk (0 = target0; repeatable): the others are left out, as if removed')
    s.add_argument('--short', action='store_true')
    s.set_defaults(func=cmd_boot)

    s = sub.add_parser('ssh', help='SSH into a VM: byol-lab ssh NAME [-- command]')
    s.add_argument('name')
    s.add_argument('--user', default='root')
    s.add_argument('command', nargs=argparse.REMAINDER)
    s.set_defaults(func=cmd_ssh)

    s = sub.add_parser('poweroff', help='clean poweroff (killed after the timeout)')
    s.add_argument('name')
    s.add_argument('--timeout', type=int, default=300)
    s.set_defaults(func=cmd_poweroff)

    s = sub.add_parser('power-cut', help='cut the power of a VM at once (SIGKILL of QEMU, a server fault); '
                                         '--rescue: start it into rescue again with the same disks and NVRAM')
    s.add_argument('name')
    s.add_argument('--rescue', action='store_true', help='then boot the rescue system again and wait for SSH')
    s.add_argument('--timeout', type=int, default=900)
    s.add_argument('--short', action='store_true')
    s.set_defaults(func=cmd_power_cut)

    s = sub.add_parser('destroy', help='stop a VM (by pid file) and remove its run directory')
    s.add_argument('name')
    s.add_argument('--keep', action='store_true', help='keep the run directory (logs, disks)')
    s.set_defaults(func=cmd_destroy)

    s = sub.add_parser('cleanup', help='stop every lab VM and detach the lab loop devices')
    s.add_argument('--remove', action='store_true', help='also remove the run directories')
    s.set_defaults(func=cmd_cleanup)

    sub.add_parser('list', help='list the VMs').set_defaults(func=cmd_list)
    s = sub.add_parser('info', help='JSON state of a VM')
    s.add_argument('name')
    s.set_defaults(func=cmd_info)
    sub.add_parser('accel', help='print kvm or tcg (probe)').set_defaults(func=cmd_accel)
    s = sub.add_parser('lanes', help="hack/test's VM tier plan: its jobs in lanes, longest first (from $BYOL_VM_TESTS, "
                                     '$BYOL_VM_LANES, $BYOL_SCENARIOS, $BYOL_LAB_SMP unless given)')
    s.add_argument('--dry-run', action='store_true', help='print the plan as a table with the weights (runs nothing)')
    s.add_argument('--vm-tests', help='0, smoke, ci or all (default: $BYOL_VM_TESTS, else ci)')
    s.add_argument('--lanes', help='lanes side by side (default: $BYOL_VM_LANES, else 2)')
    s.add_argument('--scenarios', help='the scenarios of smoke (default: $BYOL_SCENARIOS, else "lab_smoke byoi_uefi")')
    s.add_argument('--smp', help='vCPUs per VM (default: $BYOL_LAB_SMP, else 1 with two lanes or more)')
    s.add_argument('--molecule-dir', help='the Molecule scenarios (default: extensions/molecule of this checkout)')
    s.set_defaults(func=cmd_lanes)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    if getattr(args, 'command', None) and args.command[:1] == ['--']:
        args.command = args.command[1:]
    try:
        return args.func(args) or 0
    except (vmlib.LabError, RuntimeError) as e:
        print('byol-lab: %s' % e, file=sys.stderr)
        return 1

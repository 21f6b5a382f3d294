# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""byol_partition with md RAID 0/1/5/6/10, LVM and a mounted ESP, in the lab's rescue VM (the host kernel has no
md/dm/vfat).

One rescue VM of the lab (``byollab.vm.RescueVM``, SeaBIOS: the module gets ``boot_mode`` explicitly, and SeaBIOS
boots faster than OVMF under TCG) with four blank 3 GiB disks. The collection's plugins and ansible-core's
``module_utils`` (from the controller's ansible) are copied to ``/opt/coll`` over SSH, and GUEST (below) runs
there: the module runs directly (``python3 byol_partition.py args.json``), as Ansible's AnsiballZ wrapper would
run it on the rescue system. Three scenarios in sequence, each starting from the previous one's disks (so the
teardown of mounted arrays and VGs is exercised): two disks RAID 1 + LVM (plus the restart case: arrays stopped
and VGs inactive, then assembled and mounted without a wipe; plus the config drive that byol_configdrive adds in
the reserved tail, which must not cause a repartition); four disks RAID 1/10/6/5 + RAID 0 striped LVs; three
disks with RAID 10 reduced to 5 (first refused, nothing written, while the four-disk arrays and VGs also live on
the fourth disk; then the VGs removed, the arrays stopped and that disk wiped, as the refusal asks). Each is
checked with lsblk, mdadm --detail, lvs and findmnt, and run twice (second: changed false, no sector written after
the resync settles) and in check mode.

Measured on the 2-core TCG machine (2026-12-01, idle): 27 s to SSH, 242 s for the three scenarios (41 checks), 274 s in all;
2026-12-08 beside a CI run (one vCPU): 60 s to SSH, 580 s for the scenarios, 645 s in all.
"""

from __future__ import annotations

import base64
import io
import os
import tarfile
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason='needs root')]


def _payload():
    """tar.gz (base64) of /opt/coll: ansible/module_utils (with an empty ansible/__init__.py, as in AnsiballZ)
    and ansible_collections/baremetal/byol/plugins."""
    import ansible.module_utils  # pylint: disable=import-outside-toplevel
    module_utils = os.path.dirname(os.path.abspath(ansible.module_utils.__file__))

    def skip(info):
        return None if '__pycache__' in info.name.split('/') else info

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w:gz') as tar:
        empty = tarfile.TarInfo('ansible/__init__.py')
        tar.addfile(empty, io.BytesIO(b''))
        tar.add(module_utils, 'ansible/module_utils', filter=skip)
        tar.add(os.path.join(REPO, 'plugins'), 'ansible_collections/baremetal/byol/plugins', filter=skip)
    return base64.b64encode(buf.getvalue()).decode()


def run_guest_checks(vm, guest, name, t0, min_ok):
    """Copy the collection's plugins (:func:`_payload`) and the script ``guest`` into the booted rescue ``vm``, run it
    (its output also kept in ``/opt/<name>.log``: after a timeout it shows how far it got), print its lines and the
    times, and require ``RESULT PASS`` with at least ``min_ok`` passed checks (``t0``: when the VM was started)."""
    t_ssh = time.monotonic() - t0
    vm.ssh('sh', '-c', 'mkdir -p /opt/coll && base64 -d | tar -xzf - -C /opt/coll', data=_payload())
    vm.ssh('sh', '-c', 'cat > /opt/%s.py' % name, data=guest)
    t1 = time.monotonic()
    p = vm.ssh_run(['sh', '-c', 'python3 /opt/%s.py 2>&1 | tee /opt/%s.log' % (name, name)], timeout=3600)
    t_guest = time.monotonic() - t1
    out = p.stdout if isinstance(p.stdout, str) else p.stdout.decode(errors='replace')  # bytes after a timeout
    if 'RESULT' not in out:
        out = vm.ssh_run(['cat', '/opt/%s.log' % name], timeout=120).stdout + '\n' + p.stderr
    lines = [x for x in out.splitlines() if x.startswith(('RUN', 'OK', 'FAIL', 'RESULT', '====', 'WARNING'))]
    print('\n'.join(lines))
    print('VM to SSH %.0f s, scenarios %.0f s, in all %.0f s' % (t_ssh, t_guest, time.monotonic() - t0))
    result = [x for x in lines if x.startswith('RESULT')]
    assert result == ['RESULT PASS'], '\n'.join(lines) or out[-8000:]
    assert len([x for x in lines if x.startswith('OK')]) >= min_ok


def test_partition_raid_lvm_in_vm():
    vm_module = pytest.importorskip('byollab.vm')
    t0 = time.monotonic()
    with vm_module.RescueVM('partition-vm-%d' % os.getpid(), disks=4, disk_size='3G', firmware='bios') as vm:
        vm.start()
        vm.wait_ssh(timeout=900)
        run_guest_checks(vm, GUEST, 'pttest', t0, 35)


# The guest scripts' common part: run a module on argument files as AnsiballZ would, read the disks' write
# counters, wait until they are quiet, record checks. A guest script is a docstring, this, and its scenarios.
GUEST_COMMON = r'''import glob, json, os, subprocess, sys, time

MODULES = '/opt/coll/ansible_collections/baremetal/byol/plugins/modules/'
ENV = dict(os.environ, PYTHONPATH='/opt/coll', LANG='C')
FAILS = []


def sh(*a):
    return subprocess.run(list(a), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True).stdout


def run(args, check=False, module='byol_partition'):
    margs = dict(args)
    margs['_ansible_check_mode'] = check
    with open('/tmp/args.json', 'w') as f:
        json.dump({'ANSIBLE_MODULE_ARGS': margs}, f)
    t0 = time.time()
    out = subprocess.run(['python3', MODULES + module + '.py', '/tmp/args.json'], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, env=ENV)
    dt = time.time() - t0
    try:
        res = json.loads(out.stdout[out.stdout.index('{'):])
    except Exception:
        res = {'failed': True, 'msg': 'unparsable: ' + out.stdout[-2000:] + out.stderr[-2000:]}
    print('RUN %s check=%s %.1fs changed=%s failed=%s repartitioned=%s msg=%s differences=%s' % (
        module, check, dt, res.get('changed'), res.get('failed'), res.get('repartitioned'), res.get('msg'),
        (res.get('differences') or [])[:5]), flush=True)
    return res


def writes(disks):
    return sum(int(open('/sys/block/%s/stat' % os.path.basename(d)).read().split()[6]) for d in disks)


def lazyinit():
    """Whether an ext4lazyinit kernel thread runs (no pgrep in the lab's rescue system)."""
    for pid in os.listdir('/proc'):
        try:
            with open('/proc/%s/comm' % pid) as f:
                if f.read().strip() == 'ext4lazyinit':
                    return True
        except (IOError, OSError):
            continue
    return False


def quiet(disks):
    # RAID 5/6 compute their parity in the background: wait for the resync too
    sh('mdadm', '--wait', *['/dev/md/' + n for n in os.listdir('/dev/md')] if os.path.isdir('/dev/md') else ['--help'])
    while lazyinit():
        time.sleep(0.5)
    sh('sync')
    if os.path.isdir('/sys/module/zfs'):
        sh('zpool', 'sync')
    last, since = writes(disks), time.time()
    deadline = time.time() + 900
    while time.time() - since < 7 and time.time() < deadline:
        time.sleep(0.5)
        cur = writes(disks)
        if cur != last:
            last, since = cur, time.time()
    return last


def expect(cond, what):
    print(('OK   ' if cond else 'FAIL ') + what, flush=True)
    if not cond:
        FAILS.append(what)


'''

GUEST = r'''"""In-VM check of byol_partition with md RAID and LVM (run by pttest.service, output on ttyS0)."""
''' + GUEST_COMMON + r'''def scenario(name, args, checks):  # returns the first run's result
    print('==== scenario %s' % name, flush=True)
    disks = args['disks']
    r = run(args, check=True)
    expect(not r.get('failed') and r.get('changed'), '%s: check mode reports a change' % name)
    r = run(args)
    expect(not r.get('failed') and r.get('changed'), '%s: first run changed' % name)
    if r.get('failed'):
        print(json.dumps(r, indent=1)[:6000])
        return None
    for w in r.get('warnings', []):
        print('WARNING', w)
    print(sh('lsblk', '-o', 'NAME,TYPE,FSTYPE,LABEL,SIZE,MOUNTPOINTS', *disks))
    for md in r['plan']['md_arrays']:
        print(sh('mdadm', '--detail', md['device']))
    print(sh('lvs', '-o', 'vg_name,lv_name,lv_size,stripes,devices'))
    print(sh('findmnt', '-R', '/tmp/a'))
    print(r['fstab'])
    print(r['mdadm_conf'])
    checks(r)
    q = quiet(disks)
    r2 = run(args)
    expect(not r2.get('failed') and not r2.get('changed'), '%s: second run changed false' % name)
    expect(writes(disks) == q, '%s: second run wrote no sector (%d -> %d)' % (name, q, writes(disks)))
    r3 = run(args, check=True)
    expect(not r3.get('failed') and not r3.get('changed'), '%s: check mode after: changed false' % name)
    return r


def stop_all(r):
    """What a reboot into the rescue system leaves: nothing mounted, VGs inactive, arrays stopped."""
    for m in reversed(r['mounts']):
        if m['mounted']:
            sh('umount', m['target'])
    for vg in r['plan']['volume_groups']:
        sh('vgchange', '-an', vg['name'])
    for md in r['plan']['md_arrays']:
        sh('mdadm', '--stop', md['device'])
    sh('udevadm', 'settle')


def main():
    os.makedirs('/tmp/a', exist_ok=True)
    two = {'disks': ['/dev/vda', '/dev/vdb'], 'boot_mode': 'uefi', 'table_type': 'gpt', 'mount_root': '/tmp/a',
           'configdrive_size': 64, 'layout': [
               {'mount_point': '/boot', 'fs_type': 'ext4', 'size': 512, 'raid_level': 1},
               {'mount_point': 'swap', 'fs_type': 'swap', 'size': 128},
               {'mount_point': '/', 'fs_type': 'ext4', 'size': 0, 'lv_name': 'root'},
               {'mount_point': '/var', 'fs_type': 'xfs', 'size': 400, 'lv_name': 'var'}]}

    def c2(r):
        d = sh('mdadm', '--detail', '/dev/md/md-boot')
        expect('Raid Level : raid1' in d and 'Raid Devices : 2' in d, 'two: md-boot is raid1 on 2 devices')
        d = sh('mdadm', '--detail', '/dev/md/md-vg_r1')
        expect('Raid Level : raid1' in d, 'two: md-vg_r1 is raid1')
        lvs = sh('lvs', '--noheadings', '-o', 'vg_name,lv_name')
        expect('vg_r1 root' in ' '.join(lvs.split()) and 'vg_r1 var' in ' '.join(lvs.split()), 'two: LVs root and var in vg_r1')
        fm = sh('findmnt', '-n', '-o', 'SOURCE', '/tmp/a/boot/efi').strip()
        expect(fm == '/dev/vda1', 'two: ESP mounted on /tmp/a/boot/efi (%s)' % fm)
        expect(sh('findmnt', '-n', '-o', 'FSTYPE', '/tmp/a/var').strip() == 'xfs', 'two: /var is xfs')
        expect('ARRAY /dev/md/md-boot' in r['mdadm_conf'], 'two: mdadm.conf names md-boot')
    r = scenario('two-disks-raid1-lvm', two, c2)
    if r:
        uuids = dict((k, v['uuid']) for k, v in r['devices'].items())
        stop_all(r)
        expect(not os.path.exists('/dev/md/md-boot') and not os.path.exists('/dev/vg_r1/root'), 'two: arrays and VGs stopped')
        r4 = run(two, check=True)
        expect(not r4.get('failed') and r4.get('changed') and not r4.get('repartitioned'),
               'two: after a restart, check mode plans mounting only (%s)' % (r4.get('differences'),))
        r5 = run(two)
        expect(not r5.get('failed') and r5.get('changed') and not r5.get('repartitioned'),
               'two: after a restart, arrays assembled, VGs activated, mounted, nothing wiped')
        expect(dict((k, v['uuid']) for k, v in r5.get('devices', {}).items()) == uuids, 'two: same filesystem UUIDs')
        expect(sh('findmnt', '-n', '-o', 'SOURCE', '/tmp/a/var').strip() == '/dev/mapper/vg_r1-var', 'two: /var mounted again')
        # byol_configdrive adds config-2 in the space kept at the end of the first disk: no difference for the plan
        cd = run({'device': '/dev/vda', 'hostname': 'pt-vm'}, module='byol_configdrive')
        part = (cd.get('partition') or {}).get('device')
        expect(not cd.get('failed') and cd.get('changed') and part == '/dev/vda5',
               'two: config drive %s written in the reserved tail (%s)' % (part, cd.get('msg')))
        q = quiet(two['disks'])
        r6 = run(two)
        expect(not r6.get('failed') and not r6.get('changed') and not r6.get('repartitioned'),
               'two: the config drive is no difference (%s)' % (r6.get('differences'),))
        expect(writes(two['disks']) == q, 'two: the config drive: no sector written (%d -> %d)' % (q, writes(two['disks'])))
        r7 = run(two, check=True)
        expect(not r7.get('failed') and not r7.get('changed'), 'two: the config drive: check mode changed false')

    four = {'disks': ['/dev/vda', '/dev/vdb', '/dev/vdc', '/dev/vdd'], 'boot_mode': 'uefi', 'table_type': 'gpt',
            'mount_root': '/tmp/a', 'configdrive_size': 64, 'layout': [
                {'mount_point': '/boot', 'fs_type': 'ext4', 'size': 512},
                {'mount_point': '/', 'fs_type': 'ext4', 'size': 600, 'raid_level': 10},
                {'mount_point': 'swap', 'fs_type': 'swap', 'size': 64},
                {'mount_point': '/srv', 'fs_type': 'btrfs', 'size': 300, 'raid_level': 6},
                {'mount_point': '/scratch', 'fs_type': 'ext4', 'size': 200, 'raid_level': 0, 'lv_name': 'scratch'},
                {'mount_point': '/data', 'fs_type': 'ext4', 'size': 0, 'raid_level': 5, 'lv_name': 'data'}]}

    def c4(r):
        for name, level, n in (('md-boot', 'raid1', 4), ('md-root', 'raid10', 4), ('md-srv', 'raid6', 4), ('md-vg_r5', 'raid5', 4)):
            d = sh('mdadm', '--detail', '/dev/md/' + name)
            expect('Raid Level : %s' % level in d and 'Raid Devices : %d' % n in d, 'four: %s is %s on %d devices' % (name, level, n))
        lvs = ' '.join(sh('lvs', '--noheadings', '-o', 'vg_name,lv_name,stripes').split())
        expect('vg_r0 scratch 4' in lvs, 'four: vg_r0/scratch striped over 4 PVs (%s)' % lvs)
        expect('vg_r5 data 1' in lvs, 'four: vg_r5/data on md-vg_r5')
        expect(len([x for x in sh('swapon', '--show').splitlines()]) == 0, 'four: swap not activated')
        expect(sh('findmnt', '-n', '-o', 'SOURCE', '/tmp/a/boot/efi').strip() == '/dev/vda1', 'four: ESP mounted')
    # this also proves the teardown of the two-disk layout (mounted arrays and VGs) before repartitioning
    r4 = scenario('four-disks-raid1-10-6-5-0-lvm', four, c4)

    three = dict(four, disks=['/dev/vda', '/dev/vdb', '/dev/vdc'])

    def c3(r):
        expect(any('RAID 10 needs at least 4 disks, there are 3: reduced to RAID 5' in w for w in r['plan']['warnings']),
               'three: raid10 reduced to 5 with a warning')
        d = sh('mdadm', '--detail', '/dev/md/md-root')
        expect('Raid Level : raid5' in d, 'three: md-root raid5')
        expect(not os.path.exists('/dev/md/md-vg_r5') or 'vdd' not in sh('mdadm', '--detail', '/dev/md/md-vg_r5'),
               'three: vdd not used')
    # the four-disk layout's arrays and VGs also live on vdd, which the three-disk layout leaves out: refused, and
    # nothing written (tearing them down would break what vdd holds)
    q = quiet(four['disks'])
    r = run(three)
    expect(r.get('failed') and 'it also lives on /dev/vdd, which is not a target disk' in (r.get('msg') or ''),
           'three: refused while arrays and VGs span vdd, which is not a target (%s)' % (r.get('msg') or '')[:120])
    expect(writes(four['disks']) == q, 'three: the refusal wrote no sector')
    # what the refusal asks of the operator: the VGs removed, the arrays stopped, vdd wiped; then the three disks are
    # reused (a VG left with vdd's PV missing is still refused: it also lives on a disk that is not a target)
    if r4:
        for m in reversed(r4['mounts']):
            if m['mounted']:
                sh('umount', m['target'])
        for vg in r4['plan']['volume_groups']:
            sh('vgremove', '--force', '--force', vg['name'])
        for md in r4['plan']['md_arrays']:
            sh('mdadm', '--stop', md['device'])
    for part in sorted(glob.glob('/dev/vdd?*')):
        sh('wipefs', '--all', '--force', part)
    sh('wipefs', '--all', '--force', '/dev/vdd')
    sh('udevadm', 'settle')
    scenario('three-disks-reduction', three, c3)
    print('RESULT %s' % ('PASS' if not FAILS else 'FAIL: ' + '; '.join(FAILS)), flush=True)


if __name__ == '__main__':
    try:
        main()
    except Exception as e:
        import traceback
        traceback.print_exc()
        print('RESULT FAIL: exception %s' % e, flush=True)
'''

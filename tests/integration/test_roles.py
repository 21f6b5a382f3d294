# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The byoi and byol roles and the reinstall playbook, run with the real ansible-playbook against
localhost, with loop devices as the server's disks and the lab's synthetic images served over HTTP
(with an Authorization header that must never appear in the output).

Boot entries are skipped (tag ``bootorder``): this host has no EFI variables, and the synthetic
images carry no legacy boot code. The reboot is off (``byol_reboot: false``).
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.baremetal.byol.plugins.module_utils._blockdev import write_sectors
from conftest import wait_ext4_lazyinit  # pylint: disable=import-error

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AUTH = 'Basic ' + base64.b64encode(b'roles-test:S3CRETPASSWORD').decode()
USER_DATA = '#cloud-config\nruncmd:\n  - [echo, USERDATASECRET]\n'
IMAGES = os.environ.get('BYOL_TEST_IMAGES', '/root/.cache/baremetal-byol/roles-test/images')


def _module_present(name):
    root = os.path.join(os.environ.get('BYOL_COLLECTIONS_PATH', ''), 'ansible_collections', 'baremetal', 'byol')
    return os.path.exists(os.path.join(root, 'plugins', 'modules', name + '.py'))


@pytest.fixture
def modules_present():
    """The roles name every module: Ansible cannot load a role whose modules are missing (even with tags)."""
    missing = [m for m in ('byol_preflight', 'byol_image_burn', 'byol_configdrive', 'byol_partition',
                           'byol_bootable_hook', 'byol_bootorder') if not _module_present(m)]
    if missing:
        pytest.skip('module(s) not in the collection yet: %s' % ', '.join(missing))


@pytest.fixture(scope='module')
def images():
    if os.geteuid() != 0:
        pytest.skip('needs root')
    synthetic = pytest.importorskip('byollab.synthetic')
    return synthetic.build_all(IMAGES)


@pytest.fixture
def server(images):
    httpserve = pytest.importorskip('byollab.httpserve')
    with httpserve.ImageServer(os.path.dirname(images['byoi_raw']), auth=AUTH) as srv:
        yield srv


@pytest.fixture(scope='module')
def byol_hook_image(images, tmp_path_factory):
    """A BYOL image whose hook really runs: busybox as /bin/sh; the hook leaves a trace in the tree."""
    synthetic = pytest.importorskip('byollab.synthetic')
    busybox = '/bin/busybox'
    if not os.path.exists(busybox):
        pytest.skip('busybox-static is not installed')
    work = tmp_path_factory.mktemp('byol-image')
    tree = synthetic.make_tree(str(work / 'tree'), hook=False)
    os.makedirs(os.path.join(tree, 'bin'))
    subprocess.run(['cp', busybox, os.path.join(tree, 'bin', 'busybox')], check=True)
    os.symlink('busybox', os.path.join(tree, 'bin', 'sh'))
    os.makedirs(os.path.join(tree, 'root', '.ovh'))
    hook = os.path.join(tree, 'root', '.ovh', 'make_image_bootable.sh')
    with open(hook, 'w') as f:
        f.write('#!/bin/sh\n/bin/busybox mkdir -p /var/log\n'
                'echo "hook ran; fstab has $(/bin/busybox wc -l < /etc/fstab) line(s)" > /var/log/hook-ran\n')
    os.chmod(hook, 0o755)
    root_fs = synthetic.mkfs_ext4(tree, str(work / 'root.ext4'))
    raw = synthetic.gpt_disk(str(work / 'byol-hook.raw'), synthetic.DISK_MIB,
                             [(root_fs, synthetic.ROOT_FS_MIB, '8300', 'root')])
    serve = work / 'serve'
    serve.mkdir()
    return synthetic.qcow2(raw, str(serve / 'byol-hook.qcow2'))


class Play(object):
    def __init__(self, rc, output):
        self.rc = rc
        self.output = output
        recap = re.search(r'localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)', output)
        self.ok, self.changed, self.unreachable, self.failed = (int(x) for x in recap.groups()) if recap else (0, -1, 0, -1)


def play(tmp_path, body, extra_vars=None, check=False, skip_tags=('bootorder',), verbosity=0, playbook=None):
    """Write a playbook (unless ``playbook`` names one) and run it against localhost."""
    if playbook is None:
        playbook = str(tmp_path / 'play.yml')
        with open(playbook, 'w') as f:
            f.write(body)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.environ['BYOL_COLLECTIONS_PATH'], ANSIBLE_NOCOLOR='1',
               ANSIBLE_LOCALHOST_WARNING='False', ANSIBLE_INVENTORY_UNPARSED_WARNING='False',
               ANSIBLE_DEPRECATION_WARNINGS='False')
    cmd = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', 'localhost,', '-c', 'local',
           '-e', 'ansible_python_interpreter=%s' % sys.executable, playbook]
    if extra_vars:
        path = str(tmp_path / ('extra-%d.json' % len(os.listdir(str(tmp_path)))))
        with open(path, 'w') as f:
            json.dump(extra_vars, f)
        cmd += ['-e', '@' + path]
    if check:
        cmd.append('--check')
    if skip_tags:
        cmd += ['--skip-tags', ','.join(skip_tags)]
    if verbosity:
        cmd.append('-' + 'v' * verbosity)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, env=env,
                          cwd=str(tmp_path), check=False)
    return Play(proc.returncode, proc.stdout)


ROLE_PLAY = '''
- name: Reinstall localhost's loop disk
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Install
      ansible.builtin.include_role:
        name: baremetal.byol.%s
      tags: [always]
'''


def assert_no_secrets(output):
    assert 'S3CRETPASSWORD' not in output
    assert AUTH.split()[1] not in output
    assert 'USERDATASECRET' not in output
    assert base64.b64encode(USER_DATA.encode()).decode()[:24] not in output


def byoi_vars(server, dev):
    return {
        'byol_target_disks': [dev],
        'byol_image_url': server.url('byoi.raw'),
        'byol_image_type': 'raw',
        'byol_http_headers': {'Authorization': AUTH},
        'byol_hostname': 'roles-byoi',
        'byol_ssh_keys': ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHr0n2BQ1cpoc0d8mr6/T5HTrYLbYovE/fhPIqmhEAbp test'],
        'byol_user_data': USER_DATA,
        'byol_reboot': False,
    }


@pytest.mark.usefixtures('modules_present')
def test_byoi_role_twice_and_check_mode(tmp_path, loopdev, server):
    dev = loopdev(size_mib=160)
    extra = byoi_vars(server, dev)
    body = ROLE_PLAY % 'byoi'

    # check mode first: pre-flight and plan, nothing written
    before = write_sectors(dev)
    r = play(tmp_path, body, extra, check=True)
    assert r.rc == 0, r.output
    assert 'target disks: %s (' % dev in r.output
    assert write_sectors(dev) == before

    r = play(tmp_path, body, extra, verbosity=4)
    assert r.rc == 0, r.output
    assert r.changed >= 2, r.output           # image + config drive
    assert_no_secrets(r.output)
    parts = subprocess.run(['lsblk', '-n', '-o', 'LABEL', dev], stdout=subprocess.PIPE, universal_newlines=True, check=False).stdout
    assert 'config-2' in parts

    written = write_sectors(dev)
    r = play(tmp_path, body, extra)
    assert r.rc == 0, r.output
    assert r.changed == 0, r.output
    assert write_sectors(dev) == written

    r = play(tmp_path, body, extra, check=True)
    assert r.rc == 0 and r.changed == 0, r.output
    assert write_sectors(dev) == written


@pytest.mark.usefixtures('modules_present')
def test_byoi_image_written_through_reinstall_playbook_with_payload_file(tmp_path, loopdev, server):
    """``baremetal.byol.reinstall`` with ``-e @payload.json`` (top-level keys), config drive skipped if absent."""
    dev = loopdev(size_mib=160)
    payload = {
        'operatingSystem': 'byoi_64',
        'customizations': {
            'hostname': 'mon-tux',
            'imageURL': server.url('byoi.qcow2'),
            'imageType': 'qcow2',
            'httpHeaders': {'Authorization': AUTH},
            'configDriveUserData': base64.b64encode(USER_DATA.encode()).decode(),
            'efiBootloaderPath': '\\efi\\debian\\grubx64.efi',
        },
    }
    payload.update({'byol_target_disks': [dev], 'byol_reboot': False})
    skip = ('bootorder',)
    before = write_sectors(dev)
    r = play(tmp_path, None, payload, playbook='baremetal.byol.reinstall', skip_tags=skip, check=True)
    assert r.rc == 0, r.output
    assert 'installer: byoi' in r.output
    assert write_sectors(dev) == before
    r = play(tmp_path, None, payload, playbook='baremetal.byol.reinstall', skip_tags=skip, verbosity=3)
    assert r.rc == 0, r.output
    assert r.changed >= 1
    assert_no_secrets(r.output)
    table = subprocess.run(['sfdisk', '--json', dev], stdout=subprocess.PIPE, universal_newlines=True, check=False).stdout
    assert json.loads(table)['partitiontable']['label'] == 'gpt'
    r = play(tmp_path, None, payload, playbook='baremetal.byol.reinstall', skip_tags=skip)
    assert r.rc == 0 and r.changed == 0, r.output


@pytest.mark.usefixtures('modules_present')
def test_invalid_payload_fails_before_anything(tmp_path, loopdev, server):
    dev = loopdev(size_mib=64)
    before = write_sectors(dev)
    payload = {'operatingSystem': 'byoi_64',
               'customizations': {'imageURL': server.url('byoi.raw'), 'imageType': 'raw', 'imageCheckSum': 'ab' * 32,
                                  'httpHeaders': {'Authorization': AUTH}, 'imageUrl': 'typo'},
               'byol_target_disks': [dev], 'byol_reboot': False}
    r = play(tmp_path, None, payload, playbook='baremetal.byol.reinstall')
    assert r.rc != 0
    assert 'Unknown field customizations.imageUrl (did you mean imageURL?)' in r.output
    assert 'Please provide checkSum AND checkSumType or none of them' in r.output
    assert_no_secrets(r.output)
    assert write_sectors(dev) == before


@pytest.mark.usefixtures('modules_present')
def test_byoi_refuses_the_disk_of_the_running_system(tmp_path, server):
    src = subprocess.run(['findmnt', '-n', '-o', 'SOURCE', '/'], stdout=subprocess.PIPE, universal_newlines=True, check=False).stdout.strip()
    disks = [line.split()[0] for line in subprocess.run(['lsblk', '-n', '-s', '-o', 'PATH,TYPE', src], stdout=subprocess.PIPE,
                                                        universal_newlines=True, check=False).stdout.splitlines()
             if line.split() and line.split()[-1] == 'disk'] if src.startswith('/dev/') else []
    if not disks:
        pytest.skip('root is not on a disk here')
    extra = {'byol_target_disks': [disks[0]], 'byol_image_url': server.url('byoi.raw'), 'byol_image_type': 'raw',
             'byol_reboot': False}
    r = play(tmp_path, ROLE_PLAY % 'byoi', extra)
    assert r.rc != 0
    assert 'This is not a rescue system for %s' % disks[0] in r.output
    # pre-flight stopped the host: the image task never started (the disk's own write counter moves with the
    # running system's activity, so it proves nothing here)
    assert 'Download, verify and write the image onto the disk' not in r.output


@pytest.mark.usefixtures('modules_present')
def test_byol_role_single_disk(tmp_path, loopdev, byol_hook_image):
    """BYOL: single-disk layout, image files, fstab, hook; twice (second run changes nothing)."""
    httpserve = pytest.importorskip('byollab.httpserve')
    server = httpserve.ImageServer(os.path.dirname(byol_hook_image), auth=AUTH).start()
    try:
        _byol_single_disk(tmp_path, loopdev, server)
    finally:
        server.stop()


def finish_ext4_lazy_init(part, mnt, timeout=120):
    """Mount ``part`` until the kernel has zeroed its inode tables (``init_itable=0``: no pause between groups).

    The ``ext4lazyinit`` thread exists only while it has work; it is started by the mount."""
    os.makedirs(mnt, exist_ok=True)
    subprocess.run(['mount', '-o', 'init_itable=0', part, mnt], check=True)
    try:
        wait_ext4_lazyinit(time.monotonic() + timeout)
    finally:
        subprocess.run(['umount', mnt], check=True)


def _byol_single_disk(tmp_path, loopdev, server):
    dev = loopdev(size_mib=256)
    mount_root = str(tmp_path / 'target')
    skip = ['bootorder']
    extra = {
        'byol_target_disks': [dev],
        'byol_image_url': server.url('byol-hook.qcow2'),
        'byol_http_headers': {'Authorization': AUTH},
        'byol_hostname': 'roles-byol',
        'byol_user_data': USER_DATA,
        'byol_layout': [{'mount_point': '/', 'fs_type': 'ext4', 'size': 0}],
        'byol_boot_mode': 'legacy',
        'byol_mount_root': mount_root,
        'byol_reboot': False,
    }
    body = ROLE_PLAY % 'byol'
    before = write_sectors(dev)
    r = play(tmp_path, body, extra, check=True, skip_tags=skip)
    assert r.rc == 0, r.output
    assert write_sectors(dev) == before

    r = play(tmp_path, body, extra, skip_tags=skip, verbosity=4)
    assert r.rc == 0, r.output
    assert_no_secrets(r.output)
    # everything unmounted and synced at the end (byol_reboot: false)
    assert subprocess.run(['findmnt', '--mountpoint', mount_root], stdout=subprocess.DEVNULL, check=False).returncode != 0
    # the installed tree: mount the root read-only and look
    subprocess.run(['udevadm', 'settle'], check=False)
    listing = subprocess.run(['lsblk', '-n', '-p', '-r', '-o', 'PATH,FSTYPE', dev], stdout=subprocess.PIPE,
                             universal_newlines=True, check=True).stdout.split('\n')
    rootpart = [line.split()[0] for line in listing if line.split()[1:] == ['ext4']]
    assert rootpart, 'no ext4 partition on %s: %s' % (dev, listing)
    # read the installed tree without mounting it (debugfs): another process's private mount namespace may
    # still hold a copy of the mount, which would make a second mount fail

    def cat(path):
        return subprocess.run(['debugfs', '-R', 'cat %s' % path, rootpart[0]], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, universal_newlines=True, check=True).stdout

    def uid(path):
        out = subprocess.run(['debugfs', '-R', 'stat %s' % path, rootpart[0]], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, universal_newlines=True, check=True).stdout
        return int(re.search(r'User:\s+(\d+)', out).group(1))

    assert cat('/etc/os-release').startswith('ID=synthetic')
    fstab = cat('/etc/fstab')
    uuid = subprocess.run(['blkid', '-p', '-s', 'UUID', '-o', 'value', rootpart[0]], stdout=subprocess.PIPE,
                          universal_newlines=True, check=True).stdout.strip()
    assert re.search(r'^UUID=%s\s+/\s+ext4' % uuid, fstab, re.M), fstab
    assert uid('/data/owned') == 1234
    # the hook ran inside the installed tree, after fstab was written
    hook_trace = cat('/var/log/hook-ran')
    assert hook_trace.startswith('hook ran; fstab has '), hook_trace
    assert not hook_trace.startswith('hook ran; fstab has 0 '), hook_trace

    # the kernel zeroes a new ext4's inode tables in the background while it is mounted (ext4lazyinit): on a busy
    # machine the first run's mount ends before it is done, and the next mounts go on with it (megabytes that are
    # the kernel's, not the role's). Let it finish now, so that the count below holds only what the runs write.
    finish_ext4_lazy_init(rootpart[0], str(tmp_path / 'lazyinit'))
    written = write_sectors(dev)
    r = play(tmp_path, body, extra, skip_tags=skip)
    assert r.rc == 0, r.output
    assert r.changed == 0, r.output
    r = play(tmp_path, body, extra, skip_tags=skip, check=True)
    assert r.rc == 0 and r.changed == 0, r.output
    # mounting ext4 updates its superblock (mount count/time): allow that, but nothing like a rewrite
    assert write_sectors(dev) - written < 2048, (written, write_sectors(dev))


class FakeSSH(threading.Thread):
    """A TCP port that answers like sshd, goes away when ``marker`` appears (the "reboot"), and comes back."""

    def __init__(self, marker):
        super(FakeSSH, self).__init__(daemon=True)
        self.marker = marker
        self.sock = self._listen(0)
        self.port = self.sock.getsockname()[1]
        self.rebooted = False
        self.stopping = False

    @staticmethod
    def _listen(port):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(('127.0.0.1', port))
        sock.listen(8)
        sock.settimeout(0.2)
        return sock

    def run(self):
        while not self.stopping:
            try:
                conn, _addr = self.sock.accept()
                conn.sendall(b'SSH-2.0-OpenSSH_9.2p1 fake\r\n')
                conn.close()
            except socket.timeout:
                pass
            if not self.rebooted and os.path.exists(self.marker):
                self.sock.close()
                time.sleep(3)
                self.sock = self._listen(self.port)
                self.rebooted = True
        self.sock.close()


def test_reboot_entry_point_waits_for_the_installed_system(tmp_path):
    """``byol_reboot`` runs the reboot command in the background, then the controller waits for the port to go
    down and for an SSH banner, and reports (here: that the fake server's host keys cannot be read)."""
    marker = str(tmp_path / 'rebooted')
    fake = FakeSSH(marker)
    fake.start()
    try:
        body = '''
- name: Reboot
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Reboot into the installed system
      ansible.builtin.include_role:
        name: baremetal.byol.byol
        tasks_from: reboot
      tags: [always]
'''
        extra = {'byol_reboot': True, 'byol_reboot_command': ['touch', marker], 'byol_reboot_wait': True,
                 'byol_reboot_wait_host': '127.0.0.1', 'byol_reboot_wait_port': fake.port, 'byol_reboot_timeout': 60,
                 'byol_mount_root': str(tmp_path / 'not-mounted')}
        r = play(tmp_path, body, extra, check=True)
        assert r.rc == 0, r.output
        assert not os.path.exists(marker)
        r = play(tmp_path, body, extra)
        assert r.rc == 0, r.output
        assert fake.rebooted and os.path.exists(marker)
        assert 'The installed system answers on 127.0.0.1:%d but its host keys could not be read' % fake.port in r.output
        extra['byol_reboot'] = False
        os.unlink(marker)
        r = play(tmp_path, body, extra)
        assert r.rc == 0, r.output
        assert not os.path.exists(marker)
    finally:
        fake.stopping = True
        fake.join(5)


@pytest.mark.usefixtures('modules_present')
def test_fleet_one_bad_host_does_not_stop_the_others(tmp_path, loopdev, server):
    """Two hosts (both this machine, each with its own loop disk), payloads in host vars, one batch, forks 2:
    the host with an invalid payload fails alone; the other is installed. (With serial 1 Ansible itself ends
    the play when a whole batch fails.)"""
    good, bad = loopdev(size_mib=160), loopdev(size_mib=160)
    bad_before = write_sectors(bad)
    good_payload = {'operatingSystem': 'byoi_64',
                    'customizations': {'imageURL': server.url('byoi.raw'), 'imageType': 'raw',
                                       'httpHeaders': {'Authorization': AUTH}, 'hostname': 'good'}}
    bad_payload = {'operatingSystem': 'byoi_64',
                   'customizations': {'imageURL': server.url('byoi.raw'), 'imageType': 'raw', 'hostname': 'bad_name'}}
    inventory = tmp_path / 'inventory.yml'
    inventory.write_text(json.dumps({'all': {'hosts': {
        'bad': {'byol_payload': bad_payload, 'byol_target_disks': [bad]},
        'good': {'byol_payload': good_payload, 'byol_target_disks': [good]},
    }, 'vars': {'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable, 'byol_reboot': False}}}))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.environ['BYOL_COLLECTIONS_PATH'], ANSIBLE_NOCOLOR='1',
               ANSIBLE_DEPRECATION_WARNINGS='False')
    cmd = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', str(inventory),
           'baremetal.byol.reinstall', '-f', '2', '--skip-tags', 'bootorder']
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, env=env,
                          cwd=str(tmp_path), check=False)
    out = proc.stdout
    assert proc.returncode == 2, out
    assert re.search(r'^bad\s*:.*failed=1', out, re.M), out
    assert re.search(r'^good\s*:.*changed=[1-9].*failed=0', out, re.M), out
    assert "hostname 'bad_name' is not a valid RFC 1123 host name" in out
    assert_no_secrets(out)
    assert write_sectors(bad) == bad_before
    table = subprocess.run(['sfdisk', '--json', good], stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
    assert json.loads(table)['partitiontable']['label'] == 'gpt'


@pytest.mark.usefixtures('modules_present')
def test_byol_refused_download_stops_before_the_wipe(tmp_path, loopdev, byol_hook_image):
    """Wrong credentials: the run stops at the download check, before the disk is partitioned."""
    httpserve = pytest.importorskip('byollab.httpserve')
    server = httpserve.ImageServer(os.path.dirname(byol_hook_image), auth=AUTH).start()
    try:
        dev = loopdev(size_mib=256)
        subprocess.run(['sgdisk', '--clear', '--new=1:2048:+16M', dev], check=True, stdout=subprocess.DEVNULL)
        before_table = subprocess.run(['sfdisk', '--json', dev], stdout=subprocess.PIPE, universal_newlines=True,
                                      check=True).stdout
        before = write_sectors(dev)
        extra = {'byol_target_disks': [dev], 'byol_image_url': server.url('byol-hook.qcow2'),
                 'byol_http_headers': {'Authorization': 'Basic d3Jvbmc6V1JPTkdQQVNTV09SRA=='},
                 'byol_layout': [{'mount_point': '/', 'fs_type': 'ext4', 'size': 0}], 'byol_boot_mode': 'legacy',
                 'byol_mount_root': str(tmp_path / 'target'), 'byol_reboot': False}
        r = play(tmp_path, ROLE_PLAY % 'byol', extra)
        assert r.rc != 0, r.output
        assert 'Check that the image can be downloaded before any disk is wiped' in r.output
        assert '401' in r.output, r.output
        assert 'V1JPTkdQQVNTV09SRA' not in r.output
        assert write_sectors(dev) == before
        assert subprocess.run(['sfdisk', '--json', dev], stdout=subprocess.PIPE, universal_newlines=True,
                              check=True).stdout == before_table
    finally:
        server.stop()


STAGE_TASK = 'Check that the image can be downloaded before any disk is wiped, download it and check its contents'
PARTITION_TASK = 'Partition the disks, create RAID, LVM and filesystems, mount them'


def _stages():
    """Staged images in memory (byol_image_burn stage_only)."""
    return set(name for name in os.listdir('/dev/shm') if name.startswith('byol-image-burn-stage-'))


def _byol_extra(dev, url, tmp_path):
    return {'byol_target_disks': [dev], 'byol_image_url': url, 'byol_http_headers': {'Authorization': AUTH},
            'byol_layout': [{'mount_point': '/', 'fs_type': 'ext4', 'size': 0}], 'byol_boot_mode': 'legacy',
            'byol_mount_root': str(tmp_path / 'target'), 'byol_reboot': False}


@pytest.mark.usefixtures('modules_present')
def test_byol_bad_image_fails_before_the_partition_step(tmp_path, loopdev, server):
    """byol_image_precheck (default): a BYOL image with two partitions is downloaded and refused before the wipe."""
    dev = loopdev(size_mib=256)
    subprocess.run(['sgdisk', '--clear', '--new=1:2048:+16M', dev], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(['sync'], check=True)
    before_table = subprocess.run(['sfdisk', '--json', dev], stdout=subprocess.PIPE, universal_newlines=True,
                                  check=True).stdout
    before = write_sectors(dev)
    stages = _stages()
    r = play(tmp_path, ROLE_PLAY % 'byol', _byol_extra(dev, server.url('byol-two-parts.qcow2'), tmp_path))
    assert r.rc != 0, r.output
    assert STAGE_TASK in r.output
    assert 'a BYOL image must contain exactly one partition, this one has 2' in r.output
    assert PARTITION_TASK not in r.output
    assert_no_secrets(r.output)
    assert write_sectors(dev) == before
    assert subprocess.run(['sfdisk', '--json', dev], stdout=subprocess.PIPE, universal_newlines=True,
                          check=True).stdout == before_table
    assert _stages() == stages


@pytest.mark.usefixtures('modules_present')
def test_byol_image_checked_before_the_wipe_and_downloaded_once(tmp_path, loopdev, byol_hook_image):
    """The image is staged and checked before the partition step, copied from the staged copy (one download in
    all), the staged copy is removed; a second run changes nothing and downloads nothing."""
    httpserve = pytest.importorskip('byollab.httpserve')
    server = httpserve.ImageServer(os.path.dirname(byol_hook_image), auth=AUTH).start()
    try:
        dev = loopdev(size_mib=256)
        extra = _byol_extra(dev, server.url('byol-hook.qcow2'), tmp_path)
        stages = _stages()
        r = play(tmp_path, ROLE_PLAY % 'byol', extra, skip_tags=['bootorder'])
        assert r.rc == 0, r.output
        assert r.output.index(STAGE_TASK) < r.output.index(PARTITION_TASK)
        assert server.requests.count(('GET', '/byol-hook.qcow2')) == 1, server.requests
        assert _stages() == stages
        assert_no_secrets(r.output)
        del server.requests[:]
        r = play(tmp_path, ROLE_PLAY % 'byol', extra, skip_tags=['bootorder'])
        assert r.rc == 0, r.output
        assert r.changed == 0, r.output
        assert ('GET', '/byol-hook.qcow2') not in server.requests
    finally:
        server.stop()


@pytest.mark.usefixtures('modules_present')
def test_byol_image_too_big_for_memory_is_checked_on_the_new_filesystems(tmp_path, loopdev, byol_hook_image):
    """The whole play runs in its own mount namespace where /dev/shm is a 1 MiB tmpfs: the stage step says the
    image does not fit (after checking its first MiB), the copy step downloads it under the new filesystems,
    checks it there, copies it and removes the download."""
    httpserve = pytest.importorskip('byollab.httpserve')
    server = httpserve.ImageServer(os.path.dirname(byol_hook_image), auth=AUTH).start()
    try:
        dev = loopdev(size_mib=256)
        extra = _byol_extra(dev, server.url('byol-hook.qcow2'), tmp_path)
        playbook = tmp_path / 'play.yml'
        playbook.write_text(ROLE_PLAY % 'byol')
        (tmp_path / 'extra.json').write_text(json.dumps(extra))
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.environ['BYOL_COLLECTIONS_PATH'], ANSIBLE_NOCOLOR='1',
                   ANSIBLE_LOCALHOST_WARNING='False', ANSIBLE_INVENTORY_UNPARSED_WARNING='False',
                   ANSIBLE_DEPRECATION_WARNINGS='False')
        cmd = ['unshare', '--mount', '--propagation', 'private', '/bin/sh', '-c',
               'mount -t tmpfs -o size=1m byol-small-shm /dev/shm && exec "$@"', 'sh',
               os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', 'localhost,', '-c', 'local',
               '-e', 'ansible_python_interpreter=%s' % sys.executable, '-e', '@' + str(tmp_path / 'extra.json'),
               '--skip-tags', 'bootorder', '-v', str(playbook)]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, env=env,
                              cwd=str(tmp_path), check=False)
        out = proc.stdout
        assert proc.returncode == 0, out
        assert 'It is not staged: it will be downloaded onto the new filesystems under %s' % extra['byol_mount_root'] in out
        # the stage step read the first MiB and stopped; the copy step downloaded it once
        assert server.requests.count(('GET', '/byol-hook.qcow2')) == 2, server.requests
        assert_no_secrets(out)
        subprocess.run(['udevadm', 'settle'], check=False)
        listing = subprocess.run(['lsblk', '-n', '-p', '-r', '-o', 'PATH,FSTYPE', dev], stdout=subprocess.PIPE,
                                 universal_newlines=True, check=True).stdout.split('\n')
        rootpart = [line.split()[0] for line in listing if line.split()[1:] == ['ext4']][0]
        root = subprocess.run(['debugfs', '-R', 'ls -l /', rootpart], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              universal_newlines=True, check=True).stdout
        assert ' data' in root and '.byol-scratch' not in root, root
    finally:
        server.stop()


IMAGE_GROUP_PLAY = '''
- name: The image arguments given once for the play, with the action group baremetal.byol.image
  hosts: localhost
  gather_facts: false
  module_defaults:
    group/baremetal.byol.image:
      url: "{{ image_url }}"
      image_type: raw
      http_headers: {Authorization: "{{ image_auth }}"}
      retries: 0
  tasks:
    - name: Write the image with the play's image arguments
      baremetal.byol.byol_image_burn:
        mode: disk
        device: "{{ disk }}"
      register: burn

    - name: The same image with a wrong checksum (the download runs, the check refuses it)
      baremetal.byol.byol_image_burn:
        mode: disk
        device: "{{ other_disk }}"
        checksum: "{{ '0' * 64 }}"
        checksum_type: sha256
      register: refused
      ignore_errors: true

    - name: Show what the two tasks returned (their arguments included)
      ansible.builtin.debug:
        msg: "{{ {'burn': burn, 'refused': refused} }}"
'''


@pytest.mark.usefixtures('modules_present')
def test_image_group_module_defaults_carry_the_headers_and_never_show_them(tmp_path, loopdev, server):
    """module_defaults for group/baremetal.byol.image (meta/runtime.yml), the path the roles now take too: the
    Authorization header reaches the image server (the image is written; the server answers 401 without it), and
    neither the results (printed whole) nor -vvvv output nor the failure show it."""
    disk, other = loopdev(size_mib=160), loopdev(size_mib=160)
    extra = {'image_url': server.url('byoi.raw'), 'image_auth': AUTH, 'disk': disk, 'other_disk': other}
    r = play(tmp_path, IMAGE_GROUP_PLAY, extra, verbosity=4)
    assert r.rc == 0, r.output
    assert r.changed >= 1, r.output
    # the request reached the server and was authorised: the image is on the disk
    assert [req for req in server.requests if req[0] == 'GET']
    table = subprocess.run(['sfdisk', '--json', disk], stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
    assert json.loads(table)['partitiontable']['label'] == 'gpt'
    # the second task downloaded the image with the header and was refused by the checksum (a raw image's is known
    # at its end: docs/image_burn.md)
    assert 'Bad checkSumType for downloaded file' in r.output and '...ignoring' in r.output, r.output
    # the results were printed whole
    assert '"burn": {' in r.output and '"refused": {' in r.output, r.output
    assert_no_secrets(r.output)


@pytest.mark.usefixtures('modules_present')
def test_request_validated_by_one_task_with_every_problem_before_the_server_is_read(tmp_path, loopdev):
    """The byol role's request given as byol_* arguments with six problems: the task "Validate the install request"
    fails with all of them, and no task after it (the pre-flight module that reads the server, nothing that writes)
    starts."""
    dev = loopdev(size_mib=64)
    before = write_sectors(dev)
    extra = {'byol_target_disks': [dev], 'byol_reboot': False,
             'byol_image_url': 'https://user:S3CRETPASSWORD@images.example.net/x.qcow2',
             'byol_image_checksum': 'ab' * 32, 'byol_hostname': 'bad_name', 'byol_ssh_keys': ['not-a-key'],
             'byol_http_headers': {'Host': 'images.example.net', 'Authorization': AUTH},
             'byol_layout': [{'mount_point': 'boot', 'fs_type': 'ext4', 'size': 0}]}
    r = play(tmp_path, ROLE_PLAY % 'byol', extra)
    assert r.rc != 0
    assert r.failed == 1, r.output
    failed = re.findall(r'^TASK \[([^\]]*)\]', r.output.split('fatal:')[0], re.M)[-1]
    assert failed == 'baremetal.byol.byol : Validate the install request', r.output
    for message in ('imageURL must not contain credentials', 'Please provide checkSum AND checkSumType or none of them',
                    "hostname 'bad_name' is not a valid RFC 1123 host name", 'sshKey[0] is not an OpenSSH public key',
                    'HTTP header Host is set by the module and may not be given',
                    "layout[0].mount_point 'boot' must be an absolute path"):
        assert message in r.output, message
    assert 'Inspect the server' not in r.output
    assert_no_secrets(r.output)
    assert write_sectors(dev) == before

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The ovh_payload and byol_request filters, called directly and through Ansible's templating."""

from __future__ import annotations

import json
import os

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.baremetal.byol.plugins.filter.ovh_payload import FilterModule as PayloadFilters
from ansible_collections.baremetal.byol.plugins.filter.byol_request import FilterModule as RequestFilters

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
ovh_payload = PayloadFilters().filters()['ovh_payload']
byol_request = RequestFilters().filters()['byol_request']


def example(name):
    with open(os.path.join(REPO, 'docs', 'examples', name)) as f:
        return json.load(f)


def test_examples_through_filter():
    byoi = ovh_payload(example('byoi.json'), 'byoi', boot_mode='uefi')
    assert byoi['byol_installer'] == 'byoi' and byoi['byol_image_type'] == 'raw'
    assert byoi['byol_meta_data'] == {'role': 'web', 'rack': 'b12'}
    byol = ovh_payload(example('byol.json'), 'byol')
    assert byol['byol_disk_count'] == 2 and len(byol['byol_layout']) == 3


def test_json_string_accepted():
    with open(os.path.join(REPO, 'docs', 'examples', 'byol.json')) as f:
        assert ovh_payload(f.read())['byol_installer'] == 'byol'


def test_errors_are_filter_errors():
    payload = example('byoi.json')
    del payload['customizations']['imageCheckSumType']
    with pytest.raises(AnsibleFilterError) as exc:
        ovh_payload(payload)
    assert str(exc.value).endswith('Invalid install request: Please provide checkSum AND checkSumType or none of them')
    with pytest.raises(AnsibleFilterError, match='not JSON'):
        ovh_payload('{nope')
    with pytest.raises(AnsibleFilterError, match='boot_mode must be auto, uefi or legacy'):
        ovh_payload(example('byoi.json'), boot_mode='bios')


def test_translate_only_then_request():
    payload = {'operatingSystem': 'byoi_64', 'customizations': {'imageURL': 'https://e/x.qcow2'}}
    only = ovh_payload(payload, 'byoi', validate=False)
    assert only == {'byol_installer': 'byoi', 'byol_image_url': 'https://e/x.qcow2'}
    native = {'byol_image_type': 'qcow2', 'byol_image_url': 'https://old/x.raw', 'byol_reboot': False}
    native.update(only)
    req = byol_request(native, 'byoi', boot_mode='legacy')
    assert req['byol_image_url'] == 'https://e/x.qcow2' and req['byol_reboot'] is False
    with pytest.raises(AnsibleFilterError, match='efiBootloaderPath .byol_efi_bootloader_path. is required'):
        byol_request(native, 'byoi', boot_mode='uefi')
    with pytest.raises(AnsibleFilterError, match='expects a mapping'):
        byol_request('x', 'byoi')


def test_through_ansible_templating(tmp_path):
    """The filters work inside a real playbook (lazy/tagged template data) and the error reaches the user."""
    import subprocess
    import sys
    bindir = os.path.dirname(sys.executable)
    playbook = tmp_path / 'pb.yml'
    playbook.write_text('''
- hosts: localhost
  gather_facts: false
  vars:
    payload: "{{ lookup('ansible.builtin.file', '%s') | ansible.builtin.from_json }}"
  tasks:
    - name: Translate
      ansible.builtin.set_fact:
        req: "{{ payload | baremetal.byol.ovh_payload('byol') }}"
    - name: Show
      ansible.builtin.debug:
        msg: "RESULT {{ req.byol_layout | map(attribute='mount_point') | join(',') }} {{ req.byol_disk_count }}"
    - name: Broken payload
      ansible.builtin.debug:
        msg: "{{ payload | ansible.builtin.combine({'customizations': {'imageURL': 'x', 'bogus': 1}}, recursive=true)
                 | baremetal.byol.ovh_payload }}"
''' % os.path.join(REPO, 'docs', 'examples', 'byol.json'))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.environ['BYOL_COLLECTIONS_PATH'], ANSIBLE_NOCOLOR='1',
               ANSIBLE_LOCALHOST_WARNING='False', ANSIBLE_INVENTORY_UNPARSED_WARNING='False')
    proc = subprocess.run([os.path.join(bindir, 'ansible-playbook'), '-i', 'localhost,', '-c', 'local', str(playbook)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, env=env, check=False)
    assert 'RESULT /boot,swap,/ 2' in proc.stdout, proc.stdout
    assert proc.returncode == 2, proc.stdout
    assert 'Unknown field customizations.bogus' in proc.stdout
    assert "imageURL 'x' must start with http://, https:// or file://" in proc.stdout
    assert 'dGhlb3dsc2FyZW5vdD' not in proc.stdout and 'BYOLinux as ostemplate' not in proc.stdout


def test_defaults_under_the_payload_and_all_errors_together():
    payload = {'operatingSystem': 'byoi_64', 'customizations': {'imageURL': 'https://e/x.qcow2', 'imageUrl': 'x',
                                                                'imageCheckSum': 'ab' * 32}}
    with pytest.raises(AnsibleFilterError) as exc:
        ovh_payload(payload, 'byoi', defaults={'byol_image_type': 'qcow2'})
    assert 'Unknown field customizations.imageUrl (did you mean imageURL?)' in str(exc.value)
    assert 'Please provide checkSum AND checkSumType or none of them' in str(exc.value)
    del payload['customizations']['imageUrl']
    del payload['customizations']['imageCheckSum']
    args = ovh_payload(payload, 'byoi', defaults={'byol_image_type': 'qcow2', 'byol_image_url': 'https://old/y.raw',
                                                  'byol_reboot': False})
    assert args['byol_image_url'] == 'https://e/x.qcow2' and args['byol_image_type'] == 'qcow2'
    assert args['byol_reboot'] is False

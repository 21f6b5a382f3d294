#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: byol_configdrive
short_description: Write a cloud-init config drive (OpenStack config-drive v2) at the end of a disk
version_added: 0.1.0
author: baremetal.byol developers (@baremetal-byol)
description:
  - Creates a small vfat partition labelled C(config-2) in the free space at the end of O(device) and writes an
    OpenStack config-drive v2 into it, so that cloud-init's ConfigDrive datasource configures the installed system
    on its first boot. Nothing is mounted; the files are written with mtools.
  - "Files: C(openstack/latest/meta_data.json) (C(uuid), C(hostname), C(name), C(public_keys), C(keys), C(meta)),
    C(openstack/latest/vendor_data.json), C(openstack/latest/user_data) when O(user_data) is given and
    C(openstack/latest/network_data.json) when O(network_data) is given. Other version directories under
    C(openstack/) (which cloud-init would prefer over C(latest)) are removed."
  - On GPT the backup header is first moved to the end of the disk (C(sgdisk -e)), as it sits at the end of a
    smaller image just written to the disk; then the partition is added at the very end (aligned to 1 MiB). On MBR a
    free primary slot is used and the partition ends before 2 TiB. Without enough free space after the last
    partition, the module fails and touches nothing.
  - A partition that already holds a vfat filesystem labelled C(config-2) (or a GPT partition named C(config-2)
    without a filesystem, left by an interrupted run) is reused as it is; O(size) only applies to a new partition.
  - Idempotent. Files are compared byte for byte with what is on the drive; only differing files are rewritten,
    and a second run with the same arguments reads the drive and writes nothing.
extends_documentation_fragment:
  - baremetal.byol.attributes
  - baremetal.byol.attributes.RESCUE
  - baremetal.byol.server_lock
attributes:
  check_mode:
    support: full
    details: Reads the partition table and an existing drive; reports the partition and file changes; writes nothing.
  diff_mode:
    support: full
    details: Shows each file that would change, before and after. User data is redacted unless O(show_user_data_in_diff=true).
  idempotent:
    support: full
    details: Same content gives C(changed=false) and no write to the disk.
options:
  device:
    description:
      - The disk (not a partition) that gets the config drive, usually the first disk of the server.
    type: path
    required: true
  hostname:
    description:
      - Host name of the installed system (RFC 1123; a fully qualified name is allowed). Written as C(hostname) and,
        its first label, as C(name).
    type: str
  ssh_keys:
    description:
      - OpenSSH public keys, one per item (C(<type> <base64> [comment]); known key types only, no options, no
        newlines). cloud-init installs them for the image's default user.
    type: list
    elements: str
    default: []
  user_data:
    description:
      - cloud-init user data (C(#cloud-config), a script, any format cloud-init reads), as plain text or base64
        (C(configDriveUserData)). Decoded base64 and plain text are written byte for byte. At most 1 MiB.
      - Never shown in the output; see O(show_user_data_in_diff).
    type: str
  user_data_encoding:
    description:
      - V(auto) decodes O(user_data) when it is strictly base64 (alphabet, padding and length; line breaks allowed)
        and decodes to UTF-8 text or gzip data; otherwise it is plain text. V(base64) and V(plain) force it.
    type: str
    choices: [auto, base64, plain]
    default: auto
  meta_data:
    description:
      - Key/value metadata (C(configDriveMetadata)), written as C(meta) in C(meta_data.json). OpenStack's limits
        apply, at most 128 items, keys of 1-255 characters of letters, digits, space, C(-_:.), string values of up
        to 255 characters without control, format or line-separator characters. Numbers and booleans are converted
        to strings. The same rules as the P(baremetal.byol.ovh_payload#filter) filter's C(configDriveMetadata).
    type: dict
    default: {}
  network_data:
    description:
      - Network configuration of the installed system. A dictionary is written as C(network_data.json) (OpenStack
        format, C(links), C(networks), C(services)).
      - V(auto) derives it from the rescue system's own interfaces (C(ip -j addr), C(ip -j route),
        C(/etc/resolv.conf)), matched by MAC, each physical Ethernet interface that is up with a global address
        gets DHCP when the rescue system got its address by DHCP, else the same static address, prefix and default
        gateway. V(dhcp) configures IPv4 DHCP on each of those interfaces.
      - Omitted, no C(network_data.json) is written and cloud-init uses its fallback (DHCP on the first interface).
    type: raw
  vendor_data:
    description:
      - Content of C(vendor_data.json).
    type: dict
    default: {}
  instance_id:
    description:
      - The instance uuid (C(uuid) in C(meta_data.json)). cloud-init treats a new value as a new instance (it runs
        the per-instance modules again and regenerates the SSH host keys).
      - When omitted, the uuid already on the drive is kept; a new drive gets a uuid derived from the server's
        SMBIOS UUID, the disk's serial number and the hostname, so re-running the install for the same server gives
        the same uuid. Give a new value to make cloud-init treat the system as a new instance.
    type: str
  size:
    description:
      - Size of a new config drive partition in MiB, from 1 to 1024 (V(0), a negative or a larger size is refused).
    type: int
    default: 64
  show_user_data_in_diff:
    description:
      - Show the user data in C(--diff) output. By default the diff shows only its size.
    type: bool
    default: false
requirements:
  - fdisk (C(sfdisk)), gdisk (C(sgdisk), GPT), util-linux (C(blkid), C(lsblk), C(partx))
  - dosfstools (C(mkfs.vfat)), mtools
  - iproute2 (O(network_data=auto))
notes:
  - cloud-init finds the drive by its filesystem label C(config-2). Images need cloud-init with the ConfigDrive
    datasource enabled (the default in cloud images).
  - On a GPT disk written by a smaller image, the root partition can still be grown by cloud-init's growpart into the
    space between the image and the config drive.
seealso:
  - module: baremetal.byol.byol_partition
  - module: baremetal.byol.byol_image_burn
  - name: OpenStack config drive
    description: Format of the config drive and its files.
    link: https://docs.openstack.org/nova/latest/user/metadata.html
"""

EXAMPLES = r"""
- name: Config drive after writing an image to the first disk
  baremetal.byol.byol_configdrive:
    device: /dev/sda
    hostname: web01.example.net
    ssh_keys:
      - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl admin@example.net
    user_data: "{{ lookup('ansible.builtin.file', 'cloud-config.yml') }}"
    meta_data:
      role: web
    network_data: auto

- name: Static network given explicitly, fixed instance uuid
  baremetal.byol.byol_configdrive:
    device: /dev/nvme0n1
    hostname: db01
    instance_id: 5d6f4a86-3c2e-4f5b-9a8c-0e4b5a0f1c22
    network_data:
      links:
        - {id: eth0, type: phy, ethernet_mac_address: "0c:42:a1:00:00:01"}
      networks:
        - id: net0
          type: ipv4
          link: eth0
          ip_address: 203.0.113.10
          netmask: 255.255.255.0
          routes:
            - {network: 0.0.0.0, netmask: 0.0.0.0, gateway: 203.0.113.1}
      services:
        - {type: dns, address: 203.0.113.53}
"""

RETURN = r"""
device:
  description: The disk (symlinks resolved).
  returned: success
  type: str
  sample: /dev/sda
instance_id:
  description: The instance uuid written to C(meta_data.json).
  returned: success
  type: str
  sample: 2f1b3f0e-7d5c-5c8e-9f3a-1a2b3c4d5e6f
instance_id_source:
  description: Where the uuid came from, C(parameter), C(drive) (kept from the existing drive) or C(derived).
  returned: success
  type: str
  sample: drive
partition:
  description: The config drive partition.
  returned: success
  type: dict
  contains:
    action:
      description: C(create) (new partition), C(reuse) (existing drive) or C(format) (partition without filesystem).
      type: str
    table:
      description: C(gpt) or C(dos).
      type: str
    number:
      description: Partition number (for a new MBR partition, known only after sfdisk ran; null in check mode).
      type: int
    device:
      description: Partition device path.
      type: str
    start:
      description: First sector.
      type: int
    size:
      description: Size in sectors.
      type: int
    size_mib:
      description: Size in MiB.
      type: int
    relocated_gpt_backup:
      description: Whether the backup GPT is (or would be) moved to the end of the disk first.
      type: bool
  sample: {action: create, table: gpt, number: 5, device: /dev/sda5, start: 976642048, size: 131072, size_mib: 64,
           relocated_gpt_backup: true}
files:
  description: Status of each managed file, C(created), C(updated), C(removed) or C(unchanged).
  returned: success
  type: dict
  sample: {openstack/latest/meta_data.json: updated, openstack/latest/user_data: unchanged}
removed_stale:
  description: Directories under C(openstack/) other than C(latest) that were (or would be) removed.
  returned: success
  type: list
  elements: str
  sample: [openstack/2015-10-15]
user_data_source:
  description: How O(user_data) was read, C(base64) or C(plain); null without user data.
  returned: success
  type: str
  sample: base64
meta_data:
  description: The content of C(meta_data.json).
  returned: success
  type: dict
network_data:
  description: The content of C(network_data.json), null when none is written.
  returned: success
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.baremetal.byol.plugins.module_utils._configdrive_writer import run_module
from ansible_collections.baremetal.byol.plugins.module_utils._lock import LOCK_ARGUMENT_SPEC
from ansible_collections.baremetal.byol.plugins.module_utils._module import run_step


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **LOCK_ARGUMENT_SPEC,
            device=dict(type='path', required=True),
            hostname=dict(type='str'),
            ssh_keys=dict(type='list', elements='str', default=[], no_log=False),
            user_data=dict(type='str', no_log=True),
            user_data_encoding=dict(type='str', default='auto', choices=['auto', 'base64', 'plain']),
            meta_data=dict(type='dict', default={}),
            network_data=dict(type='raw'),
            vendor_data=dict(type='dict', default={}),
            instance_id=dict(type='str'),
            size=dict(type='int', default=64),
            show_user_data_in_diff=dict(type='bool', default=False),
        ),
        supports_check_mode=True,
    )
    module.exit_json(**run_step(module, run_module))


if __name__ == '__main__':
    main()

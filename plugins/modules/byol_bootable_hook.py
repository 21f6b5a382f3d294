#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: byol_bootable_hook
short_description: Run a BYOL image's make_image_bootable.sh once inside the installed system
version_added: 0.1.0
author: baremetal.byol developers (@baremetal-byol)
description:
  - Runs the image's own C(/root/.ovh/make_image_bootable.sh) once, inside the installed tree (by default
    C(/tmp/a)), the way the OVHcloud Bring Your Own Linux installer does, and makes its failures visible.
  - Before running, the script is validated; it must exist inside the tree (a symbolic link that leads out
    of the tree is refused), be a regular file and be executable. Otherwise the module fails with the BYOL
    requirement message, before anything is mounted.
  - V(/dev), V(/dev/pts), V(/sys) (and C(efivarfs) when the rescue system runs on UEFI) and V(/run) are
    bind-mounted into the tree; the rescue system's C(resolv.conf) only when O(network=true). The ESP and
    every other target filesystem must already be mounted under O(root).
  - The script runs under C(chroot) in new mount, PID, UTS, IPC and (unless O(network=true)) network
    namespaces created by C(unshare). The namespace gets its own V(/proc). It has no network interface but
    C(lo); when it exits or is killed on timeout, every process it started dies with it.
  - The environment is controlled; nothing from the rescue system or from Ansible is inherited (only
    C(PATH), C(HOME=/root), C(LANG=C.UTF-8), C(TERM=dumb), C(DEBIAN_FRONTEND=noninteractive), C(USER),
    C(LOGNAME), C(SHELL), C(BYOL_NETWORK) and O(environment)).
  - Afterwards, always (success, failure, timeout), what is left is killed, everything the module mounted is
    unmounted in reverse order and C(/proc/self/mountinfo) is checked to show the tree mounted exactly as
    it was found.
  - Just before the script runs (and only when it runs), O(fstab) and O(mdadm_conf) are written into the tree,
    the way the BYOL installer prepares them for the hook (C(update-initramfs) and C(dracut) copy mdadm.conf,
    C(grub-mkconfig) reads fstab). Once the hook ran for an image, they belong to the installed system (a hook
    may rewrite mdadm.conf with C(mdadm --detail --scan)), and a later run that skips the hook leaves them alone.
  - The output is returned and saved in the installed system as C(/var/log/byol/make_image_bootable.log).
    A successful run writes the marker C(/var/lib/byol/make_image_bootable.done) holding O(image_digest)
    (or the script's SHA-256); while the marker matches, the module does not run the script again.
extends_documentation_fragment:
  - baremetal.byol.attributes
  - baremetal.byol.attributes.RESCUE
attributes:
  check_mode:
    support: full
    details: Validates the script and reports whether it would run; runs and mounts nothing.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: The marker makes a second run report C(changed=false) without running the script, unless O(force=true).
options:
  root:
    description:
      - The installed system's tree, with all of its filesystems mounted.
      - Resolved first (C(..), symbolic links); C(/) or a directory of the rescue system (C(/etc), C(/usr), C(/tmp)...) is
        refused.
    type: path
    default: /tmp/a
  script:
    description: Path of the hook inside the installed system (not on the rescue system).
    type: str
    default: /root/.ovh/make_image_bootable.sh
  timeout:
    description:
      - Seconds the script may run. When they are over, the script and every process it started are
        killed and the task fails. V(0) means no limit.
      - The default leaves room for C(update-initramfs) and C(grub-install) on slow machines.
    type: int
    default: 1800
  network:
    description:
      - Give the script the rescue system's network (and C(resolv.conf)).
      - The BYOL README says the hook runs without internet access; keep the default unless the image needs it.
    type: bool
    default: false
  force:
    description: Run the script even if the marker says it already ran for this image.
    type: bool
    default: false
  image_digest:
    description:
      - Digest of the installed image (for example the checksum the image step verified). Recorded in the marker;
        a run with a different digest runs the script again.
      - When omitted, the SHA-256 of the script itself is used.
    type: str
  fstab:
    description:
      - Content for C(/etc/fstab) of the installed system, written before the script runs (for example the
        RV(baremetal.byol.byol_partition#module:fstab) of the partitioning step). Not written when empty or
        when the script does not run.
    type: str
  mdadm_conf:
    description:
      - Content for the installed system's mdadm.conf, written before the script runs, as C(/etc/mdadm/mdadm.conf)
        when the tree has C(/etc/mdadm/) (Debian family), else C(/etc/mdadm.conf). Not written when empty or
        when the script does not run.
    type: str
  environment:
    description:
      - Extra environment variables for the script. Values are treated as secrets (C(no_log)) and are never
        returned.
    type: dict
    default: {}
requirements:
  - util-linux (C(unshare) with C(--kill-child), C(mount), C(umount))
  - coreutils (C(chroot))
notes:
  - Root on the rescue system is required. The kernel must support PID and network namespaces.
seealso:
  - name: BYOL README
    description: OVHcloud's Bring Your Own Linux documentation (the C(make_image_bootable.sh) contract).
    link: https://github.com/ovh/BringYourOwnLinux
"""

EXAMPLES = r"""
- name: Run the image's hook in the installed tree (no network, 30 minutes at most)
  baremetal.byol.byol_bootable_hook:
    root: /tmp/a
    image_digest: "sha256:{{ image_checksum }}"

- name: Write fstab and mdadm.conf of the new layout, then run the hook
  baremetal.byol.byol_bootable_hook:
    root: /tmp/a
    fstab: "{{ partitioning.fstab }}"
    mdadm_conf: "{{ partitioning.mdadm_conf }}"

- name: Run it again after changing the image, with a shorter timeout
  baremetal.byol.byol_bootable_hook:
    root: /tmp/a
    timeout: 600
    force: true
"""

RETURN = r"""
ran:
  description: Whether the script ran in this invocation (or would run, in check mode).
  returned: always
  type: bool
rc:
  description: Exit code of the script. V(null) when it did not run.
  returned: always
  type: int
stdout:
  description: Standard output of the script.
  returned: always
  type: str
stderr:
  description: Standard error of the script.
  returned: always
  type: str
duration:
  description: Seconds the script ran (including mounting and cleanup).
  returned: when the script ran
  type: float
timed_out:
  description: Whether the script was killed because O(timeout) expired.
  returned: when the script ran
  type: bool
killed:
  description: PIDs of processes that were still running inside the tree after the script and were killed.
  returned: when the script ran
  type: list
  elements: int
files:
  description: Paths inside the tree written before the script ran (or that would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: [/etc/fstab, /etc/mdadm/mdadm.conf]
mounts:
  description: Paths inside the tree that were bind-mounted for the run (all unmounted again).
  returned: when the script ran
  type: list
  elements: str
  sample: [/dev, /dev/pts, /sys, /run]
log:
  description: Path of the log inside the installed system.
  returned: when the script ran
  type: str
  sample: /var/log/byol/make_image_bootable.log
digest:
  description: The digest recorded in the marker (O(image_digest) or the script's SHA-256).
  returned: always
  type: str
marker:
  description: Path of the marker inside the installed system.
  returned: always
  type: str
  sample: /var/lib/byol/make_image_bootable.done
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.baremetal.byol.plugins.module_utils._chroot import (
    MARKER_PATH, hook_state, prepared_files, run_hook,
)
from ansible_collections.baremetal.byol.plugins.module_utils import _rules
from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError, fail_from_error
from ansible_collections.baremetal.byol.plugins.module_utils._runner import CommandRunner


def main():
    module = AnsibleModule(
        argument_spec=dict(
            root=dict(type='path', default='/tmp/a'),
            script=dict(type='str', default='/root/.ovh/make_image_bootable.sh'),
            timeout=dict(type='int', default=1800),
            network=dict(type='bool', default=False),
            force=dict(type='bool', default=False),
            image_digest=dict(type='str'),
            fstab=dict(type='str'),
            mdadm_conf=dict(type='str'),
            environment=dict(type='dict', default={}, no_log=True),
            disks=dict(type='list', elements='path', default=[]),
        ),
        supports_check_mode=True,
    )
    p = module.params
    runner = CommandRunner(module)
    result = dict(changed=False, ran=False, rc=None, stdout='', stderr='', marker=MARKER_PATH, files=[])
    if p['timeout'] < 0:
        module.fail_json(msg='timeout must be 0 (no limit) or a number of seconds, got %d.' % p['timeout'], **result)
    try:
        _rules.enforce(_rules.check_tree(p['root'], 'root')[1])
        dummy, digest, done, filesystem = hook_state(p['root'], p['script'], p['image_digest'], runner)
        result['digest'] = digest
        if done and not p['force']:
            result['msg'] = '%s already ran for this image (the installer\'s record %s); use force to run it again.' % (
                p['script'], MARKER_PATH)
            module.exit_json(**result)
        result['changed'] = True
        result['ran'] = True
        files = prepared_files(p['root'], p['fstab'], p['mdadm_conf'])
        result['files'] = [path for path, dummy in files]
        if module.check_mode:
            result['msg'] = 'Would %srun %s in %s.' % (
                'write %s, then ' % ', '.join(result['files']) if files else '', p['script'], p['root'])
            module.exit_json(**result)
        res = run_hook(runner, p['root'], p['script'], p['timeout'], network=p['network'],
                       environment=p['environment'], digest=digest, files=files, disks=p['disks'],
                       filesystem=filesystem)
    except ByolError as e:
        fail_from_error(module, e, **result)
    res.pop('cmd', None)
    result.update(res)
    result['msg'] = '%s finished with exit code 0 in %.1f s.' % (p['script'], result['duration'])
    module.exit_json(**result)


if __name__ == '__main__':
    main()

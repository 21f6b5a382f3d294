#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: byol_lease
short_description: Take or release the server's reinstall lease (one reinstall of a server at a time)
version_added: 0.1.0
author: baremetal.byol developers (@baremetal-byol)
description:
  - A reinstall is many module runs. The per-server lock covers one module run; the reinstall lease keeps a whole
    run together, so that two reinstalls of one server never take turns step by step. The roles take it first and
    release it at the end; every module of the run renews it (O(lock_owner)).
  - The lease is the file C(/run/baremetal-byol/reinstall.lease) (JSON) on the server. It names the run id, the
    controller's host name, the pid and start time of its C(ansible-playbook), the user, the address the run came
    from, since when it holds the server and its last step. Its history is C(/run/baremetal-byol/reinstall.lease.log).
  - While another run's lease is live, O(state=present) waits up to O(lock_timeout) seconds, then fails naming it.
  - A lease is stale (and taken over) when no step renewed it for its O(ttl) seconds, or when it was taken from this
    controller host by an C(ansible-playbook) that has ended (killed, failed). The action plugin checks that on the
    controller before it asks for the lease, so re-running a killed or failed reinstall needs nothing else.
  - Sets the host fact C(byol_lock_owner) (the run id; empty after O(state=absent)), which the collection's action
    plugins pass to every module as O(lock_owner).
extends_documentation_fragment:
  - baremetal.byol.attributes
  - baremetal.byol.attributes.RESCUE
  - baremetal.byol.server_lock
attributes:
  check_mode:
    support: full
    details: Reports the lease and whether it would be taken; writes nothing and does not wait.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: Taking the lease a run already holds only renews it (C(changed=false)); releasing a lease that is not there changes nothing.
options:
  state:
    description:
      - V(present) takes (or renews) the lease of run O(lock_owner); V(absent) releases it (a lease of another run is
        left alone); V(query) only returns the lease.
    type: str
    choices: [present, absent, query]
    default: present
  ttl:
    description:
      - Seconds without a step after which the lease is stale and another run takes it over. Long steps do not
        count, since a module renews the lease when it starts and when it ends, and holds the per-server lock between.
    type: int
    default: 900
  takeover:
    description:
      - The run id of a lease that may be taken over although it is live (set by the action plugin when the holder's
        C(ansible-playbook) has ended on this controller). A lease of any other run is still waited for.
    type: str
  controller:
    description:
      - Who runs this reinstall, written into the lease (C(host), C(pid), C(pid_start), C(user)). Set by the action
        plugin.
    type: dict
    default: {}
requirements:
  - Linux (flock)
seealso:
  - module: baremetal.byol.byol_preflight
"""

EXAMPLES = r"""
- name: Take the server for this reinstall (wait up to 10 minutes for another one)
  baremetal.byol.byol_lease:
    lock_timeout: 600

- name: Release it
  baremetal.byol.byol_lease:
    state: absent
"""

RETURN = r"""
lease:
  description: The lease after the task (O(state=absent) - the lease that was released, or the one of another run that was left).
  returned: always
  type: dict
  sample: {owner: 'ctl1:4242:87654', controller: {host: ctl1, pid: 4242, user: ops}, since: '2026-12-07T21:00:00Z',
           step: byol_partition, renewed: '2026-12-07T21:01:10Z', ttl: 900}
previous:
  description: The lease that was taken over (O(state=present)), if any.
  returned: when a lease was taken over
  type: dict
owner:
  description: The run id (O(lock_owner)).
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.baremetal.byol.plugins.module_utils import _lock
from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError, fail_from_error


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **_lock.LOCK_ARGUMENT_SPEC,
            state=dict(type='str', choices=['present', 'absent', 'query'], default='present'),
            ttl=dict(type='int', default=_lock.DEFAULT_LEASE_TTL),
            takeover=dict(type='str'),
            controller=dict(type='dict', default={}),
        ),
        required_if=[('state', 'present', ('lock_owner',)), ('state', 'absent', ('lock_owner',))],
        supports_check_mode=True,
    )
    p = module.params
    owner = p['lock_owner']
    result = dict(changed=False, owner=owner)
    try:
        current = _lock.read_lease()
        if p['state'] == 'query' or module.check_mode:
            result['lease'] = current
            if p['state'] == 'present':
                result['changed'] = not current or current.get('owner') != owner
            elif p['state'] == 'absent':
                result['changed'] = bool(current) and current.get('owner') == owner
            module.exit_json(**result)
        if p['state'] == 'present':
            changed, lease, previous = _lock.take_lease(owner, p['controller'], p['ttl'], p['lock_timeout'],
                                                        takeover=p['takeover'])
            result.update(changed=changed, lease=lease)
            if previous and previous.get('owner') != owner:
                result['previous'] = previous
                module.warn('Took over the reinstall lease of %s' % _lock.describe_lease(previous))
        else:
            changed, lease = _lock.release_lease(owner, p['lock_timeout'])
            result.update(changed=changed, lease=lease)
    except ByolError as exc:
        fail_from_error(module, exc, **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()

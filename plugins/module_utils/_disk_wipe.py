# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Wipe what an old installation left on disks that are not install targets (``wipe_other_disks``).

Do not use this from other collections or standalone plugins/modules!

Only disks that could be install targets are wiped: every disk is classified again here
(:func:`_disk_select.classify`), so removable media, BMC virtual media, read-only devices, the
rescue system's own disks and the like are refused whatever the caller passes. A disk in use
(mounted, active swap) is refused. Wiping stops the md arrays, volume groups and ZFS pools that
live on the disk (:func:`_partition.teardown`), erases every signature of its partitions and of the
disk (``wipefs``), and zeroes the boot code of its first sector so that a legacy BIOS cannot start
an old boot loader from it. A disk that carries nothing is left alone (second runs change nothing).
"""

from __future__ import annotations

import os

from ansible_collections.baremetal.byol.plugins.module_utils._errors import ValidationError
from ansible_collections.baremetal.byol.plugins.module_utils import _blockdev
from ansible_collections.baremetal.byol.plugins.module_utils import _disk_select
from ansible_collections.baremetal.byol.plugins.module_utils import _lock
from ansible_collections.baremetal.byol.plugins.module_utils import _partition
from ansible_collections.baremetal.byol.plugins.module_utils import _preflight
from ansible_collections.baremetal.byol.plugins.module_utils import _rules

BOOT_CODE_BYTES = 440


def plan(runner, disks, include_loop=False):
    """``[{'path', 'signatures': [text]}]`` for the disks among ``disks`` that carry something (refuses the others)."""
    devices = _blockdev.parse_lsblk(runner.run(_preflight.PREFLIGHT_LSBLK).stdout)
    root_src = _blockdev.root_source(runner)
    root_on = _blockdev.root_disks(devices, root_src) if root_src else set()
    records = _disk_select.classify(devices, system_disks=root_on, include_loop=include_loop)
    by_path = dict((r['path'], r) for r in records)
    by_path.update((os.path.realpath(r['path']), r) for r in records)
    chosen = []
    for disk in disks:
        rec = by_path.get(os.path.realpath(disk)) or by_path.get(disk)
        if rec is None:
            raise ValidationError('disk %s (to wipe) is not a whole disk of this server; whole disks: %s'
                                  % (disk, ', '.join(r['path'] for r in records if r['candidate']) or 'none'))
        if not rec['candidate']:
            raise ValidationError('disk %s is never wiped: %s' % (disk, ', '.join(rec['reasons'])))
        if rec not in chosen:
            chosen.append(rec)
    boot_code = _preflight.read_boot_code(chosen)
    pv_vgs = _preflight.read_pv_vgs(runner)
    out = []
    for rec in chosen:
        sigs = _disk_select.signatures(devices, rec['name'], pv_vgs=pv_vgs, boot_code=boot_code)
        if sigs:
            out.append({'path': rec['path'], 'signatures': [s['text'] for s in sigs]})
    return out


def zero_boot_code(path):
    with open(path, 'r+b') as f:
        f.write(b'\0' * BOOT_CODE_BYTES)
        f.flush()
        os.fsync(f.fileno())


def wipe(runner, entries, mount_root=None):
    """Wipe the disks of :func:`plan` (refuses disks in use)."""
    paths = [e['path'] for e in entries]
    if not paths:
        return
    _blockdev.check_disks_free(runner, paths, allowed_mount_prefix=mount_root)
    _partition.teardown(runner, paths, mount_root)
    for path in paths:
        zero_boot_code(path)
    _blockdev.settle(runner)


def run_module(module, runner, result):
    """byol_wipe_disks (see ``_module.run_step``)."""
    p = module.params
    _rules.enforce(_rules.check_tree(p['mount_root'], 'mount_root')[1])
    entries = plan(runner, p['disks'], include_loop=p['include_loop'])
    if entries and not module.check_mode:
        _lock.take_server_lock(module, 'byol_wipe_disks', p['lock_timeout'])  # held until the process ends
        wipe(runner, entries, mount_root=p['mount_root'])
    result.update(changed=bool(entries), wiped=entries)
    return result

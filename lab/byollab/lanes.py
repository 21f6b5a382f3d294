# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The VM tier's plan: which jobs ``hack/test`` runs in VMs, and in which lane each runs.

A job is a Molecule scenario of ``extensions/molecule/`` or ``pytest-vm`` (the lab's pytest self-test;
with ``BYOL_VM_TESTS=all`` every ``vm`` test). The scenarios of ``EXTENDED`` run only with
``BYOL_VM_TESTS=all`` (or when named in ``BYOL_SCENARIOS`` with ``smoke``): CI's default run has no room for
them. ``hack/test`` runs the lanes side by side, each lane its jobs one after the other: a TCG VM keeps about
one core busy, a lane waits on SSH and ansible much of the time. Jobs go to the lanes longest first, each to
the least loaded lane (the first one on a tie); the weights are the seconds each job took in CI (two lanes
beside pytest on 2 cores, TCG, 2026-12-02). With two lanes or more each VM gets one vCPU (``BYOL_LAB_SMP=1``,
unless set): two VMs of two vCPUs beside pytest ask 2 cores for 5 and more busy threads.

``lab/byol-lab lanes`` prints the plan: ``--dry-run`` as a table for people, otherwise as lines for
``hack/test`` (``smp N``, then ``lane JOB...`` per lane).
"""

from __future__ import annotations

import os

EXTENTS = ('0', 'smoke', 'ci', 'all')
DEFAULT_LANES = 2
DEFAULT_SCENARIOS = 'lab_smoke byoi_uefi'
PYTEST_VM = 'pytest-vm'

# Seconds each job took in CI (2026-12-02); a scenario not listed here weighs DEFAULT_WEIGHT.
WEIGHTS = {
    'byol_raid1_lvm': 1740,
    'byol_foreign_raid1_lvm': 1800,  # estimate: byol_raid1_lvm's figure and the hook's apt install (extended tier)
    'byol_xfs_single': 1190,
    'byoi_uefi': 425,
    'byoi_legacy_mbr': 415,
    'errors': 300,
    PYTEST_VM: 265,
    'lab_smoke': 120,
    # issue 16 (docs/scenarios.md). byoi_messy_server took 2589 s alone on 2 cores under a load of 8 to 12 (2026-12-08,
    # one vCPU), its first reinstall 254 s where byoi_uefi's takes 82 s in CI: about 3 times CI's pace, so 900 s in CI
    'byoi_messy_server': 900,
    # byoi_disk_group2: 699 s alone under a load of 5 to 7 (2026-12-08), its reinstall 102.5 s (byoi_uefi's: 82 s in CI)
    'byoi_disk_group2': 560,
    'byol_raid_levels': 2000,  # estimate: byol_raid1_lvm's figure, four disks and a second boot (extended tier)
    'byol_legacy_mbr': 1190,  # estimate: byol_xfs_single's figure, the same hook on one disk (extended tier)
}
# The extended tier: scenarios that only BYOL_VM_TESTS=all runs (and smoke when named). byol_foreign_raid1_lvm
# (issue 17: a foreign-style image on RAID 1 + LVM, each disk booted alone) takes as long as byol_raid1_lvm:
# in the default run's plan its 1800 s would take the VM tier's longest lane from 2295 s to 3195 s, past pytest
# (2447 s), and a CI run from 51 minutes warm (about 56 cold) past 65 of its 75 (docs/scenarios.md).
# Issue 16's scenarios: byoi_messy_server (900 s) would fit the default run (its longest lane from 2295 s to
# 2730 s), but its one run (2026-12-08) had one check of its own wrong (the SCSI write counters, fixed since and
# checked by hand on the same VM) and it has not passed whole since: it stays in the extended tier until it has.
# byoi_disk_group2 (560 s) on top would make 3045 s, past ten more minutes; byol_raid_levels (RAID 1/10/5/6 on four
# 4Kn NVMe disks, booted whole and degraded) and byol_legacy_mbr (BYOL on MBR under legacy BIOS) are BYOL installs
# with the hook, 1190 s and more each (docs/scenarios.md).
EXTENDED = frozenset(['byol_foreign_raid1_lvm', 'byoi_messy_server', 'byoi_disk_group2', 'byol_raid_levels',
                      'byol_legacy_mbr'])
# BYOL_VM_TESTS=all: every vm test of tests/lab and tests/integration (the figure of 2026-12-02). Not counted in it
# (2026-12-08): test_partition_zfs_vm (436 s, plus the rescue_zfs artifact's DKMS build on a cold cache, 2829 s under
# load) and test_faults_vm's 18 combinations (2706 s for the one measured under load; docs/faults.md): select those
# by hand (-k) rather than run them all in one go.
PYTEST_VM_ALL_WEIGHT = 1800
DEFAULT_WEIGHT = 400


class PlanError(ValueError):
    """A setting the plan cannot use (the message says which and what it accepts)."""


def extent(value):
    """``BYOL_VM_TESTS`` normalised: ``1`` is ``all``; anything else outside 0, smoke, ci, all is refused."""
    value = 'ci' if value is None or value == '' else value
    if value == '1':
        return 'all'
    if value not in EXTENTS:
        raise PlanError('BYOL_VM_TESTS must be 0, smoke, ci or all, got %r' % value)
    return value


def lane_count(value):
    """``BYOL_VM_LANES``: a whole number of lanes, 1 or more (default 2)."""
    if value is None or value == '':
        return DEFAULT_LANES
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1 or str(value).strip() != str(n):
        raise PlanError('BYOL_VM_LANES must be a whole number of lanes (1 or more), got %r' % value)
    return n


def weight(job, vm_tests='ci'):
    """Seconds a job is expected to take (its CI figure)."""
    if job == PYTEST_VM and vm_tests == 'all':
        return PYTEST_VM_ALL_WEIGHT
    return WEIGHTS.get(job, DEFAULT_WEIGHT)


def scenarios(molecule_dir):
    """The Molecule scenarios: the directories of ``molecule_dir`` that hold a ``molecule.yml``, by name."""
    try:
        names = os.listdir(molecule_dir)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if os.path.isfile(os.path.join(molecule_dir, n, 'molecule.yml')))


def jobs(vm_tests, molecule_dir, smoke_scenarios=DEFAULT_SCENARIOS):
    """The VM tier's jobs for an extent: none for 0; the given scenarios for smoke; every scenario but the
    extended ones and pytest-vm for ci; every scenario and pytest-vm for all."""
    if vm_tests == '0':
        return []
    if vm_tests == 'smoke':
        return smoke_scenarios.split()
    found = scenarios(molecule_dir)
    if vm_tests == 'ci':
        found = [s for s in found if s not in EXTENDED]
    return found + [PYTEST_VM]


def assign(job_list, lanes, vm_tests='ci'):
    """Lanes (lists of jobs in the order they run): longest first, each to the least loaded lane.

    On equal weights the job whose name sorts last goes first (what ``sort -rn`` of "weight name" lines did);
    on equal loads the lowest lane wins."""
    order = sorted(job_list, key=lambda j: (weight(j, vm_tests), j), reverse=True)
    loads = [0] * lanes
    plan = [[] for dummy in range(lanes)]
    for job in order:
        best = min(range(lanes), key=lambda i: (loads[i], i))
        loads[best] += weight(job, vm_tests)
        plan[best].append(job)
    return plan


def smp(lanes, env_smp=None):
    """vCPUs per lab VM: ``BYOL_LAB_SMP`` if set; else 1 with two lanes or more; else None (the lab's default, 2)."""
    if env_smp:
        return env_smp
    return '1' if lanes >= 2 else None


class Plan:
    """The VM tier's plan for one ``hack/test`` run."""

    def __init__(self, vm_tests, lanes, molecule_dir, smoke_scenarios=DEFAULT_SCENARIOS, env_smp=None):
        self.vm_tests = extent(vm_tests)
        self.lanes = lane_count(lanes)
        self.jobs = jobs(self.vm_tests, molecule_dir, smoke_scenarios or DEFAULT_SCENARIOS)
        self.assignment = assign(self.jobs, self.lanes, self.vm_tests)
        self.smp = smp(self.lanes, env_smp)

    @classmethod
    def from_env(cls, molecule_dir, environ=None):
        env = os.environ if environ is None else environ
        return cls(env.get('BYOL_VM_TESTS'), env.get('BYOL_VM_LANES'), molecule_dir,
                   env.get('BYOL_SCENARIOS'), env.get('BYOL_LAB_SMP'))

    def load(self, lane):
        return sum(weight(j, self.vm_tests) for j in self.assignment[lane])

    def shell_lines(self):
        """For ``hack/test``: ``smp N`` (``smp -`` for the lab's default), then ``lane JOB...`` per lane (empty lanes too)."""
        lines = ['smp %s' % (self.smp or '-')]
        lines += [' '.join(['lane'] + lane) for lane in self.assignment]
        return lines

    def table(self):
        """The plan for people (``lab/byol-lab lanes --dry-run``)."""
        lines = ['VM tier plan: BYOL_VM_TESTS=%s, %d lanes, BYOL_LAB_SMP=%s, %d jobs'
                 % (self.vm_tests, self.lanes, self.smp or '2', len(self.jobs))]
        if not self.jobs:
            lines.append('no VM jobs')
            return lines
        for i, lane in enumerate(self.assignment):
            if not lane:
                lines.append('lane %d: (empty)' % (i + 1))
                continue
            lines.append('lane %d: %s  (about %d s)' % (
                i + 1, ' '.join('%s (%d s)' % (j, weight(j, self.vm_tests)) for j in lane), self.load(i)))
        return lines

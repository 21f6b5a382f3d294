# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""hack/test's VM tier plan (lab/byollab/lanes.py, ``lab/byol-lab lanes``): jobs, weights, lanes, vCPUs.

No VM, no root: the plan is pure, and hack/test's own use of it runs with ``BYOL_VM_DRY_RUN=1``."""

from __future__ import annotations

import os
import subprocess

import pytest

from byollab import cli, lanes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MOLECULE = os.path.join(REPO, 'extensions', 'molecule')
SCENARIOS = ['byoi_legacy_mbr', 'byoi_uefi', 'byol_raid1_lvm', 'byol_xfs_single', 'errors', 'lab_smoke']


def _molecule_dir(tmp_path, names, without=()):
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / 'molecule.yml').write_text('---\n')
    for name in without:  # a directory that is not a scenario (shared files) and a plain file
        (tmp_path / name).mkdir()
    (tmp_path / 'config.yml').write_text('---\n')
    return str(tmp_path)


@pytest.mark.parametrize('job, vm_tests, seconds', [
    ('byol_raid1_lvm', 'ci', 1740), ('byol_xfs_single', 'ci', 1190), ('byoi_uefi', 'ci', 425),
    ('byoi_legacy_mbr', 'ci', 415), ('errors', 'ci', 300), ('pytest-vm', 'ci', 265), ('lab_smoke', 'ci', 120),
    ('pytest-vm', 'all', 1800), ('byol_raid1_lvm', 'all', 1740), ('a_new_scenario', 'ci', 400),
])
def test_weights_are_the_ci_figures(job, vm_tests, seconds):
    assert lanes.weight(job, vm_tests) == seconds


def test_jobs_per_extent(tmp_path):
    d = _molecule_dir(tmp_path, ['lab_smoke', 'errors'], without=['shared'])
    assert lanes.jobs('ci', d) == ['errors', 'lab_smoke', 'pytest-vm']
    assert lanes.jobs('all', d) == ['errors', 'lab_smoke', 'pytest-vm']
    assert lanes.jobs('smoke', d) == ['lab_smoke', 'byoi_uefi']
    assert lanes.jobs('smoke', d, 'errors  byol_xfs_single') == ['errors', 'byol_xfs_single']
    assert lanes.jobs('0', d) == []
    assert lanes.jobs('ci', str(tmp_path / 'missing')) == ['pytest-vm']


def test_the_repositorys_scenarios_are_the_jobs():
    """Every scenario of extensions/molecule runs once in CI's plan, with pytest-vm, but the extended ones, which
    BYOL_VM_TESTS=all runs."""
    found = lanes.scenarios(MOLECULE)
    assert set(SCENARIOS) <= set(found)
    assert lanes.EXTENDED <= set(found)  # no stale name
    plan = lanes.Plan('ci', '2', MOLECULE)
    assert sorted(j for lane in plan.assignment for j in lane) == sorted(
        [s for s in found if s not in lanes.EXTENDED] + ['pytest-vm'])
    plan = lanes.Plan('all', '2', MOLECULE)
    assert sorted(j for lane in plan.assignment for j in lane) == sorted(found + ['pytest-vm'])


def test_extended_tier(tmp_path):
    """byol_foreign_raid1_lvm (issue 17) runs with BYOL_VM_TESTS=all, or smoke when named, not in CI's default run."""
    assert 'byol_foreign_raid1_lvm' in lanes.EXTENDED
    d = _molecule_dir(tmp_path, ['byol_foreign_raid1_lvm', 'byol_raid1_lvm', 'lab_smoke'], without=['shared'])
    assert lanes.jobs('ci', d) == ['byol_raid1_lvm', 'lab_smoke', 'pytest-vm']
    assert lanes.jobs('all', d) == ['byol_foreign_raid1_lvm', 'byol_raid1_lvm', 'lab_smoke', 'pytest-vm']
    assert lanes.jobs('smoke', d, 'byol_foreign_raid1_lvm') == ['byol_foreign_raid1_lvm']
    assert lanes.weight('byol_foreign_raid1_lvm', 'all') == lanes.WEIGHTS['byol_foreign_raid1_lvm']


def test_issue16_scenarios_tiers():
    """issue 16's scenarios are in the extended tier (byoi_messy_server until it has passed whole once, BYOL on four
    disks, BYOL on MBR, and diskGroupId 2, which would take the default plan past its budget): CI's default plan of
    the repository's scenarios keeps its longest lane within about ten minutes of the plan before them (2295 s,
    test_ci_plan_two_lanes)."""
    new = {'byoi_messy_server', 'byoi_disk_group2', 'byol_raid_levels', 'byol_legacy_mbr'}
    assert new <= lanes.EXTENDED
    for name in sorted(new):
        assert name in lanes.WEIGHTS
        assert name in lanes.scenarios(MOLECULE)
    plan = lanes.Plan('ci', '2', MOLECULE)
    assert max(plan.load(0), plan.load(1)) <= 2295 + 600
    assert not lanes.EXTENDED & set(j for lane in plan.assignment for j in lane)
    smoke = lanes.Plan('smoke', '1', MOLECULE, smoke_scenarios='byoi_messy_server')
    assert [j for lane in smoke.assignment for j in lane] == ['byoi_messy_server']


@pytest.fixture(name='molecule')
def _six_scenarios(tmp_path):
    """The six scenarios of 2026-12 (the plans below must not change when a scenario is added)."""
    return _molecule_dir(tmp_path, SCENARIOS, without=['shared'])


def test_ci_plan_two_lanes(molecule):
    """The plan of every CI run (README: two lanes side by side, one vCPU per VM)."""
    plan = lanes.Plan('ci', '2', molecule)
    assert plan.assignment == [['byol_raid1_lvm', 'errors', 'lab_smoke'],
                               ['byol_xfs_single', 'byoi_uefi', 'byoi_legacy_mbr', 'pytest-vm']]
    assert (plan.load(0), plan.load(1)) == (2160, 2295)
    assert plan.smp == '1'
    assert plan.shell_lines() == ['smp 1', 'lane byol_raid1_lvm errors lab_smoke',
                                  'lane byol_xfs_single byoi_uefi byoi_legacy_mbr pytest-vm']


@pytest.mark.parametrize('vm_tests, n, expected', [
    ('ci', 1, [['byol_raid1_lvm', 'byol_xfs_single', 'byoi_uefi', 'byoi_legacy_mbr', 'errors', 'pytest-vm', 'lab_smoke']]),
    ('ci', 3, [['byol_raid1_lvm'], ['byol_xfs_single', 'lab_smoke'], ['byoi_uefi', 'byoi_legacy_mbr', 'errors', 'pytest-vm']]),
    ('all', 2, [['pytest-vm', 'byoi_uefi', 'byoi_legacy_mbr', 'errors'], ['byol_raid1_lvm', 'byol_xfs_single', 'lab_smoke']]),
    ('smoke', 3, [['byoi_uefi'], ['lab_smoke'], []]),
    ('0', 2, [[], []]),
])
def test_plans(molecule, vm_tests, n, expected):
    assert lanes.Plan(vm_tests, str(n), molecule).assignment == expected


def test_every_job_runs_once_longest_first_in_each_lane(molecule):
    for n in range(1, 9):
        plan = lanes.Plan('all', n, molecule)
        assert sorted(j for lane in plan.assignment for j in lane) == sorted(SCENARIOS + ['pytest-vm'])
        for lane in plan.assignment:
            weights = [lanes.weight(j, 'all') for j in lane]
            assert weights == sorted(weights, reverse=True)


def test_ties():
    """Equal weights: the name that sorts last first (as `sort -rn` of "weight name" did); equal loads: the first lane."""
    assert lanes.assign(['aa', 'zz', 'mm', 'bb'], 2) == [['zz', 'bb'], ['mm', 'aa']]
    assert lanes.assign(['x', 'y'], 1) == [['y', 'x']]
    assert lanes.assign(['lab_smoke'], 3) == [['lab_smoke'], [], []]


def test_smp(molecule):
    assert lanes.smp(1) is None and lanes.smp(2) == '1' and lanes.smp(4) == '1'
    assert lanes.smp(1, '3') == '3' and lanes.smp(2, '2') == '2'
    assert lanes.Plan('ci', '1', molecule).shell_lines()[0] == 'smp -'


@pytest.mark.parametrize('value, normalised', [(None, 'ci'), ('', 'ci'), ('1', 'all'), ('all', 'all'), ('0', '0'), ('smoke', 'smoke')])
def test_extent(value, normalised):
    assert lanes.extent(value) == normalised


@pytest.mark.parametrize('bad', ['yes', '2', 'CI'])
def test_bad_extent(bad):
    with pytest.raises(lanes.PlanError, match='BYOL_VM_TESTS must be 0, smoke, ci or all'):
        lanes.extent(bad)


@pytest.mark.parametrize('bad', ['0', '-1', 'x', '1.5', '2x'])
def test_bad_lane_count(bad):
    with pytest.raises(lanes.PlanError, match='BYOL_VM_LANES must be a whole number of lanes'):
        lanes.lane_count(bad)


def test_from_env(tmp_path):
    d = _molecule_dir(tmp_path, ['lab_smoke'])
    plan = lanes.Plan.from_env(d, {'BYOL_VM_TESTS': 'smoke', 'BYOL_VM_LANES': '1', 'BYOL_SCENARIOS': 'errors lab_smoke',
                                   'BYOL_LAB_SMP': '4'})
    assert plan.assignment == [['errors', 'lab_smoke']] and plan.smp == '4'
    assert lanes.Plan.from_env(d, {}).assignment == [['pytest-vm'], ['lab_smoke']]


def test_cli_dry_run_table(capsys, monkeypatch, molecule):
    for key in ('BYOL_VM_TESTS', 'BYOL_VM_LANES', 'BYOL_SCENARIOS', 'BYOL_LAB_SMP'):
        monkeypatch.delenv(key, raising=False)
    assert cli.main(['lanes', '--dry-run', '--molecule-dir', molecule]) == 0
    assert capsys.readouterr().out.splitlines() == [
        'VM tier plan: BYOL_VM_TESTS=ci, 2 lanes, BYOL_LAB_SMP=1, 7 jobs',
        'lane 1: byol_raid1_lvm (1740 s) errors (300 s) lab_smoke (120 s)  (about 2160 s)',
        'lane 2: byol_xfs_single (1190 s) byoi_uefi (425 s) byoi_legacy_mbr (415 s) pytest-vm (265 s)  (about 2295 s)',
    ]
    assert cli.main(['lanes', '--dry-run', '--vm-tests', '0']) == 0
    assert capsys.readouterr().out.splitlines()[1:] == ['no VM jobs']


def test_cli_refuses_bad_settings(capsys, monkeypatch):
    monkeypatch.setenv('BYOL_VM_LANES', 'two')
    assert cli.main(['lanes']) == 2
    assert "BYOL_VM_LANES must be a whole number of lanes (1 or more), got 'two'" in capsys.readouterr().err


def test_byol_lab_lanes_command():
    env = dict(os.environ, BYOL_VM_TESTS='smoke', BYOL_VM_LANES='2', BYOL_SCENARIOS='lab_smoke byoi_uefi')
    env.pop('BYOL_LAB_SMP', None)
    out = subprocess.run([os.path.join(REPO, 'lab', 'byol-lab'), 'lanes'], env=env, check=True,
                         stdout=subprocess.PIPE, universal_newlines=True).stdout
    assert out.splitlines() == ['smp 1', 'lane byoi_uefi', 'lane lab_smoke']


def _hack_test_dry_run(**settings):
    env = dict(os.environ, BYOL_SETUP='0', BYOL_STAGES='vm', BYOL_VM_DRY_RUN='1', **settings)
    env.pop('BYOL_LAB_SMP', None)
    p = subprocess.run([os.path.join(REPO, 'hack', 'test')], env=env, cwd=REPO, stdout=subprocess.PIPE, check=False,
                       stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)
    return p.returncode, p.stdout


def test_hack_test_runs_the_plan():
    """hack/test's VM tier runs the lab's plan: each job once, in its lane, in the tier's table (no VM: a dry run)."""
    rc, out = _hack_test_dry_run(BYOL_VM_TESTS='ci', BYOL_VM_LANES='2')
    assert rc == 0, out
    plan = lanes.Plan('ci', '2', MOLECULE).assignment
    assert len(plan) == 2 and all(plan)
    assert 'dry run: molecule_scenario byol_raid1_lvm' in out and 'dry run: pytest_vm' in out  # the jobs ran (dry)
    for i, lane in enumerate(plan):
        assert 'lane %d: %s (output below when it ends)' % (i + 1, ' '.join(lane)) in out
    assert '===== VM tier (BYOL_VM_TESTS=ci, 2 lanes, BYOL_LAB_SMP=1) stage times' in out
    table = out.split('===== stage times', 1)[1].splitlines()
    rows = [(line.split()[1], line.split()[-1]) for line in table if line.startswith('  vm: ') and 'lane' in line]
    assert rows == [('pytest-vm' if j == 'pytest-vm' else 'molecule:' + j, '%d)' % (i + 1))
                    for i, lane in enumerate(plan) for j in lane]
    assert any(line.startswith('  vm: lab-build') for line in table)


def test_hack_test_refuses_a_bad_lane_count_before_building():
    rc, out = _hack_test_dry_run(BYOL_VM_TESTS='ci', BYOL_VM_LANES='x')
    assert rc == 1
    assert "BYOL_VM_LANES must be a whole number of lanes (1 or more), got 'x'" in out
    assert 'stage lab-build' not in out and 'FAILED stages: vm' in out

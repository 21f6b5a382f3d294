# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Each module test takes the server lock in a directory of its own (the lock is held until the process ends)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def run_dir(tmp_path, monkeypatch):
    path = tmp_path / 'run'
    path.mkdir(mode=0o700)
    monkeypatch.setenv('BYOL_RUN_DIR', str(path))
    return path

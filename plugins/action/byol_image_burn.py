# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Runs baremetal.byol.byol_image_burn and prints its progress (download, write, copy) while it runs."""

from __future__ import annotations

from ansible_collections.baremetal.byol.plugins.plugin_utils._progress_action import ProgressAction


class ActionModule(ProgressAction):
    MODULE = 'baremetal.byol.byol_image_burn'
    STEP = 'image'
    DEFAULT_PROGRESS_FILE = '/run/baremetal-byol/image_burn.progress'

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The VM lab of baremetal.byol (test tooling, never shipped in the collection).

- :mod:`byollab.images`: cached image builds (rescue system, Debian BYOI/BYOL images);
- :mod:`byollab.vm`: QEMU rescue VMs and boots of installed disks, SSH, cleanup;
- :mod:`byollab.synthetic` / :mod:`byollab.httpserve`: small synthetic images and the HTTP server;
- :mod:`byollab.cli`: the ``lab/byol-lab`` command.
"""

from __future__ import annotations

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""byol_image_burn's dispatcher: one run of the image step, handed to the file of its mode.

Do not use this from other collections or standalone plugins/modules!

The image package, one file per concern (``plugins/module_utils/_image/``):

- :mod:`.request`: the module's arguments (pure);
- :mod:`.source`: http(s)/``file://`` download with retries, hashing and decompression in one pass (:class:`Fetch`);
- :mod:`.format`: what the bytes are (qcow2 header, MBR/GPT, compression), ``qemu-img info``/``check``;
- :mod:`.qcow2stream`: qcow2 clusters onto the disk while the image downloads;
- :mod:`.write`: the writers (the disk with ``O_DIRECT``, ``qemu-img convert``, ``rsync``);
- :mod:`.disk`: ``mode: disk`` (BYOI); :mod:`.files`: ``mode: files`` (BYOL) and its staging;
- :mod:`.attach`: a downloaded BYOL image attached read-only (qemu-nbd or loop) and mounted, and its checks;
- :mod:`.scratch`: where a download waits while it is checked (memory or ``scratch_dir``), staged copies;
- :mod:`.record`: what was written (disk, files, stage), and the hook's marker, in one format.
"""

from __future__ import annotations

import os
import resource
import time

from ansible_collections.baremetal.byol.plugins.module_utils import _blockdev as blockdev
from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError
from ansible_collections.baremetal.byol.plugins.module_utils._lock import take_server_lock
from ansible_collections.baremetal.byol.plugins.module_utils._progress import Progress
from ansible_collections.baremetal.byol.plugins.module_utils._image import disk, files
from ansible_collections.baremetal.byol.plugins.module_utils._image.request import redact_url, validate_request
from ansible_collections.baremetal.byol.plugins.module_utils._image.scratch import Scratch
from ansible_collections.baremetal.byol.plugins.module_utils._image.source import Fetch


def peak_rss():
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return dict(module_bytes=own, largest_child_bytes=children)


class ImageBurn(object):
    """One run: the validated request ``req``, the module's result, its downloads (``fetch``) and its scratch
    space (``scratch``, always cleaned up)."""

    def __init__(self, module, runner, req, progress, check_mode=False):
        self.module = module
        self.runner = runner
        self.req = req
        self.progress = progress
        self.check_mode = check_mode
        self.result = dict(changed=False, mode=req['mode'], url=redact_url(req['url']), image_type=req['image_type'])
        self.fetch = Fetch(req, runner, progress, self.result, check_mode)
        self.scratch = Scratch(req, self.result, runner, check_mode)
        self.t0 = time.monotonic()

    def run(self):
        try:
            self.fetch.resolve_checksum()
            if self.req['mode'] == 'disk':
                return disk.run(self)
            if self.req.get('stage_only'):
                return files.run_stage(self)
            return files.run(self)
        finally:
            self.scratch.cleanup()

    def finish(self):
        """The result, with what every run reports: phases, retries, duration, memory."""
        self.result['phases'] = self.progress.summary()
        self.result['download_resumes'] = self.fetch.retry.resumes
        self.result['download_restarts'] = self.fetch.retry.restarts
        self.result['seconds'] = round(time.monotonic() - self.t0, 3)
        self.result['peak_rss'] = peak_rss()
        self.result['progress_reports'] = self.progress.reports
        return self.result


def run_module(module, runner, result):
    """byol_image_burn (see ``_module.run_step``); a failure keeps what the run found out (format, digest...)."""
    req = validate_request(module.params)
    if req['mode'] == 'disk' and os.path.exists(req['device']):
        # a partition taken for a disk would get a partition table inside it
        blockdev.require_whole_disk(runner, req['device'], 'the image is written onto it, partition table included')
    take_server_lock(module, 'byol_image_burn', module.params['lock_timeout'])  # held until the module's process ends
    # check mode touches nothing, not even the progress file
    progress = Progress(module=module, path=None if module.check_mode else (req.get('progress_file') or None),
                        interval=req.get('progress_interval') or 10)
    burn = ImageBurn(module, runner, req, progress, check_mode=module.check_mode)
    try:
        return burn.run()
    except ByolError:
        result.update((k, v) for k, v in burn.result.items() if k not in ('msg', 'failed'))
        raise

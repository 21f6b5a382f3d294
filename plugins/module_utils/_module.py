# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The one way a module runs its step: one runner, one result, one error path.

Do not use this from other collections or standalone plugins/modules!

Every module's ``main()`` is its argument spec and::

    module.exit_json(**run_step(module, _concern.run_module))

``run_module(module, runner, result)`` lives with the logic it drives (``_partition.py``,
``_bootorder.py``...). It fills ``result`` (a dict holding ``changed: False``) as it goes and may
return a new dict as the final result. A :class:`ByolError` it raises fails the module with its
message and extras on top of what ``result`` holds at that moment (a plan made before the failure,
the loader checks...). Tests run the same function with a fake runner.
"""

from __future__ import annotations

from ansible_collections.baremetal.byol.plugins.module_utils._errors import ByolError, fail_from_error
from ansible_collections.baremetal.byol.plugins.module_utils._runner import CommandRunner


def run_step(module, step):
    """Run ``step(module, runner, result)``; returns the result for ``exit_json`` or fails the module."""
    runner = CommandRunner(module)
    result = {'changed': False}
    final = None
    try:
        final = step(module, runner, result)
    except ByolError as err:
        fail_from_error(module, err, **result)
    return result if final is None else final

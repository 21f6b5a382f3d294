# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Errors raised by the collection's module_utils.

Do not use this from other collections or standalone plugins/modules!

Logic code raises :class:`ByolError` (or a subclass); the module's ``main()`` turns it into
``fail_json`` with :func:`fail_from_error`, carrying a failing command's rc/stdout/stderr.
"""

from __future__ import annotations


class ByolError(Exception):
    """An error that tells the user what went wrong and what to fix.

    ``extra`` keys end up in the module result next to ``msg`` (for example ``rc``,
    ``stdout``, ``stderr`` and ``cmd`` of a failed command, or ``plan``).
    """

    def __init__(self, msg, **extra):
        super(ByolError, self).__init__(msg)
        self.msg = msg
        self.extra = extra

    def result(self):
        """Keyword arguments for ``module.fail_json``."""
        res = dict(self.extra)
        res['msg'] = self.msg
        return res


class CommandError(ByolError):
    """A command exited non-zero (or could not be started)."""

    def __init__(self, msg, cmd=None, rc=None, stdout=None, stderr=None, **extra):
        super(CommandError, self).__init__(msg, cmd=cmd, rc=rc, stdout=stdout, stderr=stderr, **extra)
        self.cmd = cmd
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr


class ValidationError(ByolError):
    """The request is invalid; raised before anything is touched."""


def fail_from_error(module, error, **result):
    """Fail the module with ``error``, keeping partial ``result`` (``changed`` etc.)."""
    res = dict(result)
    res.update(error.result())
    module.fail_json(**res)

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Offline replacement for pip's get-pip.py bootstrap script, used by ansible-test.

ansible-test creates each sanity-test virtual environment with ``python -m venv --without-pip``
and then bootstraps pip by running ``get-pip-<version>.py``, which it downloads from
https://ci-files.testing.ansible.com/ unless ``~/.ansible/test/cache/get_pip_<version>.py``
already exists (ansible_test/_util/target/setup/requirements.py, ``bootstrap()``). That host is
not reachable here, so ``hack/setup`` copies this file to that cache path for every pip version
the installed ansible-test versions ask for.

It is run (through ansible-test's quiet_pip.py, with ``sys.executable`` = the new venv's python) as::

    get_pip_<version>.py --disable-pip-version-check pip==<version> [--no-setuptools] [--no-wheel]

What it does: ``python -m ensurepip`` (pip wheel bundled with the interpreter, no network), then
``python -m pip install`` of the requested packages from the package index. If that upgrade
cannot reach the index, the bundled pip is kept (a warning says so): ansible-test only needs a
working pip in the venv, and its later ``pip install -r`` of the sanity requirements reports its
own errors.

This is CI tooling for this repository; it is not part of the collection.
"""

from __future__ import annotations

import subprocess
import sys

# get-pip.py options that are not pip options.
GET_PIP_ONLY = {'--no-setuptools', '--no-wheel'}


def main(argv=None):
    """Bootstrap pip into the running interpreter's environment."""
    args = list(sys.argv[1:] if argv is None else argv)
    pip_args = [a for a in args if a not in GET_PIP_ONLY]
    packages = [a for a in pip_args if not a.startswith('-')]

    subprocess.run([sys.executable, '-m', 'ensurepip', '--default-pip'], check=True,
                   stdout=subprocess.DEVNULL)
    if not packages:
        return 0

    cmd = [sys.executable, '-m', 'pip', 'install', '--quiet'] + pip_args
    result = subprocess.run(cmd, check=False)
    if result.returncode != 0:
        bundled = subprocess.run([sys.executable, '-m', 'pip', '--version'], check=False,
                                 stdout=subprocess.PIPE, universal_newlines=True).stdout.strip()
        if all(p.split('==')[0].lower() == 'pip' for p in packages) and bundled:
            sys.stderr.write('WARNING: could not install %s (rc=%d); keeping the interpreter\'s bundled %s\n'
                             % (' '.join(packages), result.returncode, bundled))
            return 0
        return result.returncode
    return 0


if __name__ == '__main__':
    sys.exit(main())

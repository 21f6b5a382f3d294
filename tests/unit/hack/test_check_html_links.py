# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""hack/check_html_links.py, the offline link check of the HTML docs (hack/test's stage docs-html)."""

from __future__ import annotations

import importlib.util
import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(HERE))), 'hack', 'check_html_links.py')


@pytest.fixture(scope='module')
def links():
    spec = importlib.util.spec_from_file_location('check_html_links', SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _site(tmp_path, pages):
    for name, body in pages.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('<html><body>%s</body></html>' % body)
    return str(tmp_path)


GOOD = {
    'index.html': '<a href="collections/mod.html#parameter-x">x</a> <a href="#top">top</a> <div id="top"></div>'
                  '<a href="https://example.org/x">out</a> <img src="_static/logo.png"> <a href="sub/">sub</a>',
    'collections/mod.html': '<span id="parameter-x"></span><a href="../index.html">up</a><a name="old-anchor"></a>'
                            '<a href="mod.html#old-anchor">self</a><a href="mailto:a@example.org">m</a>',
    'sub/index.html': '<a href="../collections/mod.html">mod</a>',
    '_static/logo.png': '',
}


def test_a_good_site(links, tmp_path):
    broken, pages, external = links.check_site(_site(tmp_path, GOOD))
    assert (broken, pages, external) == ([], 3, 2)


@pytest.mark.parametrize('link, why', [
    ('collections/missing.html', 'no such file'),
    ('collections/mod.html#parameter-y', 'no such anchor'),
    ('#nowhere', 'no such anchor'),
    ('../../etc/passwd', 'outside the site'),
    ('/', 'outside the site'),
    ('ftp://example.org/x', 'unknown scheme'),
])
def test_broken_links(links, tmp_path, link, why):
    pages = dict(GOOD)
    pages['index.html'] += '<a href="%s">bad</a>' % link
    broken, _pages, _external = links.check_site(_site(tmp_path, pages))
    assert broken == ['index.html: %s (%s)' % (link, why)]


def test_sphinx_warnings(links, tmp_path):
    w = tmp_path / 'warnings.txt'
    w.write_text(
        "a.rst:1: WARNING: undefined label: 'common_return_values' [ref.ref]\n"
        "a.rst:2: WARNING: undefined label: 'ansible_collections.ansible.builtin.copy_module' [ref.ref]\n"
        "a.rst:3: WARNING: undefined label: 'ansible_collections.baremetal.byol.missing_module' [ref.ref]\n"
        "a.rst:4: WARNING: Title underline too short.\n"
        "  continued\n")
    bad, external = links.check_warnings(str(w))
    assert external == 2
    assert bad == ["a.rst:3: WARNING: undefined label: 'ansible_collections.baremetal.byol.missing_module' [ref.ref]",
                   'a.rst:4: WARNING: Title underline too short.\n  continued']


def test_main(links, tmp_path, capsys):
    site = _site(tmp_path / 'html', GOOD)
    empty = tmp_path / 'warnings.txt'
    empty.write_text('')
    assert links.main(['--sphinx-warnings', str(empty), site]) == 0
    assert 'links: 3 pages, 0 broken relative links or anchors, 2 links to other sites' in capsys.readouterr().out
    (tmp_path / 'html' / 'sub' / 'index.html').write_text('<a href="nope.html">x</a>')
    assert links.main([site]) == 1
    assert 'ERROR: broken link: sub/index.html: nope.html (no such file)' in capsys.readouterr().out
    assert links.main([str(tmp_path / 'nothing')]) == 1

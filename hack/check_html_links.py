# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Offline link check of a built HTML site (hack/docs-html): every relative link and anchor resolves.

Usage: python3 hack/check_html_links.py [--sphinx-warnings FILE] HTMLDIR

- each ``href``/``src`` without a scheme must name a file of the site, and its ``#fragment`` an ``id``
  (or ``name``) in that file; links to other sites are counted, not fetched (no network in CI);
- with ``--sphinx-warnings``: every warning Sphinx wrote there fails, except an ``undefined label`` of
  the Ansible docsite (a label outside ``ansible_collections.baremetal.byol.``: intersphinx is offline).
Exit status 1 on any broken link or warning, with one line each.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from html.parser import HTMLParser
from urllib.parse import unquote, urlsplit

OWN_LABEL = 'ansible_collections.baremetal.byol.'
UNDEFINED_LABEL = re.compile(r"WARNING: undefined label: '([^']*)'")


class _Page(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.links = []
        self.ids = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ('id', 'name'):
            if a.get(key) and (key == 'id' or tag == 'a'):
                self.ids.add(a[key])
        for key in ('href', 'src'):
            if a.get(key) is not None and not (tag == 'link' and a.get('rel') in ('preconnect', 'dns-prefetch')):
                self.links.append(a[key])


def parse(path):
    page = _Page()
    with open(path, encoding='utf-8') as f:
        page.feed(f.read())
    return page


def check_site(root):
    """(broken links as 'page: link (why)', number of pages, number of external links)."""
    pages, broken, external = {}, [], 0
    for d, _dirs, files in os.walk(root):
        for name in files:
            if name.endswith('.html'):
                pages[os.path.normpath(os.path.join(d, name))] = None
    for path in sorted(pages):
        pages[path] = parse(path)
    for path in sorted(pages):
        for link in pages[path].links:
            parts = urlsplit(link)
            if parts.scheme in ('http', 'https', 'mailto', 'data', 'javascript') or link.startswith('//'):
                external += 1
                continue
            if parts.scheme:
                broken.append('%s: %s (unknown scheme)' % (os.path.relpath(path, root), link))
                continue
            target = path if not parts.path else os.path.normpath(os.path.join(os.path.dirname(path), unquote(parts.path)))
            if os.path.isdir(target):
                target = os.path.join(target, 'index.html')
            if not os.path.commonpath([os.path.abspath(target), os.path.abspath(root)]) == os.path.abspath(root):
                broken.append('%s: %s (outside the site)' % (os.path.relpath(path, root), link))
            elif not os.path.isfile(target):
                broken.append('%s: %s (no such file)' % (os.path.relpath(path, root), link))
            elif parts.fragment and target in pages and unquote(parts.fragment) not in pages[target].ids:
                broken.append('%s: %s (no such anchor)' % (os.path.relpath(path, root), link))
    return broken, len(pages), external


def check_warnings(path):
    """(warnings that fail, number of references to the Ansible docsite's labels)."""
    bad, external = [], 0
    with open(path, encoding='utf-8') as f:
        for line in f:
            line = line.rstrip('\n')
            if not line.strip():
                continue
            m = UNDEFINED_LABEL.search(line)
            if m and not m.group(1).startswith(OWN_LABEL):
                external += 1
            elif 'WARNING' in line or 'ERROR' in line or not bad:
                bad.append(line)
            else:
                bad[-1] += '\n' + line  # a warning's continuation line
    return bad, external


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    p.add_argument('--sphinx-warnings', metavar='FILE')
    p.add_argument('root')
    args = p.parse_args(argv)
    rc = 0
    if args.sphinx_warnings:
        bad, ext_labels = check_warnings(args.sphinx_warnings)
        for line in bad:
            print('ERROR: sphinx: %s' % line)
        print('sphinx: %d warnings; %d references to the Ansible docsite (not resolved offline)' % (len(bad), ext_labels))
        rc = 1 if bad else rc
    broken, n_pages, external = check_site(args.root)
    for line in broken:
        print('ERROR: broken link: %s' % line)
    print('links: %d pages, %d broken relative links or anchors, %d links to other sites (not fetched)'
          % (n_pages, len(broken), external))
    if not n_pages:
        print('ERROR: no HTML page in %s' % args.root)
        rc = 1
    return 1 if broken else rc


if __name__ == '__main__':
    sys.exit(main())

# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The error messages documented in docs/byoi.md and docs/byol.md still exist in the code.

Every error table in those pages has the header ``| message | from | meaning and fix |``. The
first cell holds the message in a code span, with ``<...>`` where the code fills in a value; the
second names the file(s) that produce it (a plugin's basename such as ``_payload.py``, or a
repository path such as ``roles/byol/tasks/main.yml``). The test splits the documented message at
its placeholders and requires every piece to appear in the string literals of those files (Python:
every string constant, with ``%s``-style fields taken as placeholders; YAML: every string value,
with Jinja expressions taken as placeholders). Rewording a message in the code without updating
the docs, or documenting a message the code does not have, fails here.

The other way round, every message the plugins raise (``ByolError`` and its subclasses, ``_fail``,
``fail_json``, ``AnsibleFilterError``, warnings, and the ``errors``/``problems`` lists the validators
collect) must be found in one of the pages: a new error without documentation fails here too.
"""

from __future__ import annotations

import ast
import os
import re

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
PAGES = ('docs/byoi.md', 'docs/byol.md')
PLUGIN_DIRS = ('plugins/module_utils', 'plugins/modules', 'plugins/filter')
HOLE = '\x00'
PRINTF_RE = re.compile(r'%(\([^)]*\))?[-#0 +]*(\*|\d+)?(\.\d+)?[sdrifxXoeEgGc]')
JINJA_RE = re.compile(r'\{\{.*?\}\}|\{%.*?%\}', re.S)
PLACEHOLDER_RE = re.compile(r'<[^<>]*>')
JINJA_STRING_RE = re.compile(r"(['\"])((?:(?!\1).)*)\1")
CODE_SPAN_RE = re.compile(r'(`+)(.+?)\1')
MIN_ROWS = {'docs/byoi.md': 60, 'docs/byol.md': 40}
RAISERS = ('ByolError', 'ValidationError', 'CommandError', 'FormatError', 'DownloadError', 'NoSpaceError', 'TreeError', '_fail',
           'fail_json', 'AnsibleFilterError', 'warn')
COLLECTORS = ('errors', 'problems', 'reasons', 'warnings')


def _squash(text):
    return re.sub(r'\s+', ' ', text)


def _python_literals(text):
    out = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.append(node.value)
    return [_squash(PRINTF_RE.sub(HOLE, s.replace('%%', '\x02')).replace('\x02', '%')) for s in out]


def _yaml_literals(text):
    out = []

    def walk(value):
        if isinstance(value, str):
            out.append(_squash(JINJA_RE.sub(HOLE, value)))
            # text a Jinja expression adds ('got ' ~ value ~ '.') is a literal of its own
            for expr in JINJA_RE.findall(value):
                out.extend(_squash(m.group(2)) for m in JINJA_STRING_RE.finditer(expr))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
    for doc in yaml.safe_load_all(text):
        walk(doc)
    return out


def resolve(name):
    """A ``from`` cell entry -> the file's path in the repository."""
    if '/' in name and not name.startswith('_'):
        path = os.path.join(REPO, name)
        assert os.path.isfile(path), 'documented source %s does not exist' % name
        return path
    # a plugin's basename, or its path inside a plugin directory (``_image/record.py``)
    hits = [os.path.join(REPO, d, name) for d in PLUGIN_DIRS if os.path.isfile(os.path.join(REPO, d, name))]
    assert len(hits) == 1, 'documented source %s: expected one file in %s, found %s' % (name, PLUGIN_DIRS, hits)
    return hits[0]


_CACHE = {}


def literals(path):
    if path not in _CACHE:
        with open(path) as f:
            text = f.read()
        _CACHE[path] = _python_literals(text) if path.endswith('.py') else _yaml_literals(text)
    return _CACHE[path]


def split_row(line):
    """Cells of a markdown table row (GitHub rules: ``\\|`` is a literal pipe, also inside code spans)."""
    body = line.strip()
    body = body[1:-1] if body.endswith('|') and not body.endswith('\\|') else body[1:]
    return [cell.replace('\x01', '|').strip() for cell in body.replace('\\|', '\x01').split('|')]


def documented_errors(page):
    """(line number, message, [source files]) of every row of the page's error tables."""
    rows = []
    in_table = False
    with open(os.path.join(REPO, page)) as f:
        lines = f.read().splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.startswith('|'):
            in_table = False
            continue
        cells = split_row(line)
        if [c.lower() for c in cells[:3]] == ['message', 'from', 'meaning and fix']:
            in_table = True
            continue
        if not in_table or set(line.replace('|', '').strip()) <= set('-: '):
            continue
        messages = [m.group(2).strip() for m in CODE_SPAN_RE.finditer(cells[0])]
        sources = [s.strip().strip('`') for s in cells[1].split(',') if s.strip()]
        assert messages, '%s:%d: error row without a message in a code span' % (page, number)
        assert sources, '%s:%d: error row without its source file' % (page, number)
        for message in messages:
            rows.append((number, message, sources))
    return rows


def fragments(message):
    return [p.strip() for p in PLACEHOLDER_RE.sub(HOLE, _squash(message)).split(HOLE) if p.strip()]


ROWS = [(page,) + row for page in PAGES for row in documented_errors(page)]


@pytest.mark.parametrize('page', PAGES)
def test_pages_have_error_tables(page):
    # a parser that finds nothing would let every message drift
    assert len(documented_errors(page)) >= MIN_ROWS[page]


@pytest.mark.parametrize('page,line,message,sources', ROWS, ids=['%s:%d' % (r[0], r[1]) for r in ROWS])
def test_documented_error_exists_in_code(page, line, message, sources):
    pieces = fragments(message)
    assert any(len(p) >= 10 for p in pieces), (
        '%s:%d: %r has no literal piece of 10 characters or more to look for' % (page, line, message))
    texts = [t for s in sources for t in literals(resolve(s))]
    missing = [p for p in pieces if not any(p in t for t in texts)]
    assert not missing, '%s:%d: not found in the string literals of %s: %r' % (page, line, ', '.join(sources), missing)


def test_fragments_and_tables_parse():
    # the helpers themselves: placeholders split, code spans keep their pipes
    assert fragments('image provided has a size of <n> bytes which is larger than device of <m> bytes') == [
        'image provided has a size of', 'bytes which is larger than device of', 'bytes']
    assert split_row(r'| ``a\|b`c`` | `x.py` | fix |') == ['``a|b`c``', '`x.py`', 'fix']
    assert _python_literals("x = 'got %s, %d%% of %(n)r'") == ['got \x00, \x00% of \x00']
    assert _yaml_literals("- msg: 'The disks {{ a | join(\", \") }} do not match'") == ['The disks \x00 do not match', ', ']


def plugin_files():
    """(plugin directory, path inside it) of every Python file there, subpackages (``_image/``) included."""
    out = []
    for folder in PLUGIN_DIRS:
        top = os.path.join(REPO, folder)
        for base, dirs, names in os.walk(top):
            dirs[:] = sorted(d for d in dirs if not d.startswith(('.', '__')))
            out.extend((folder, os.path.relpath(os.path.join(base, n), top)) for n in sorted(names) if n.endswith('.py'))
    return out


def code_messages():
    """(file:line, [string literals]) of every error or warning message the plugins produce."""
    out = []
    for folder, name in plugin_files():
        path = os.path.join(REPO, folder, name)
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, 'id', '')
            collected = (called == 'append' and isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                         and func.value.id in COLLECTORS)
            if called not in RAISERS and not collected:
                continue
            args = list(node.args[:1]) + [k.value for k in node.keywords if k.arg == 'msg']
            texts = [n.value for a in args for n in ast.walk(a)
                     if isinstance(n, ast.Constant) and isinstance(n.value, str) and len(n.value) > 12]
            if texts:
                out.append(('%s/%s:%d' % (folder, name, node.lineno),
                            [_squash(PRINTF_RE.sub(HOLE, t.replace('%%', '\x02')).replace('\x02', '%')) for t in texts]))
    return out


def test_every_error_in_the_code_is_documented():
    keys = [max(fragments(message), key=len) for (_page, _line, message, _sources) in ROWS]
    messages = code_messages()
    assert len(messages) > 150  # the scan finds the messages at all
    missing = ['%s: %s' % (where, texts[0][:100].replace(HOLE, '<...>')) for where, texts in messages
               if not any(key in text for key in keys for text in texts)]
    assert not missing, ('error messages with no row in docs/byoi.md or docs/byol.md (add one to the errors table '
                         'of the step that raises it):\n' + '\n'.join(missing))

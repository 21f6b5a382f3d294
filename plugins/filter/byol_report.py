# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

# The post-install report's two filters: byol_report (build it) and byol_report_table (print it). Their documentation
# is in byol_report.yml and byol_report_table.yml (ansible-doc -t filter reads those files).

import re

from ansible.errors import AnsibleFilterError

_URL_CREDENTIALS = re.compile(r'(?i)^([a-z][a-z0-9+.-]*://)[^/@?#]*@')
_CONTROL = re.compile('[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]')


def _result(data, key):
    """A registered result that ran, else {}."""
    value = data.get(key)
    if not isinstance(value, dict) or value.get('skipped') or value.get('failed'):
        return {}
    return value


def _pick(src, *keys):
    return dict((k, src.get(k)) for k in keys if src.get(k) is not None)


def redact_url(url):
    """The URL without user and password (and without its query: tokens often live there)."""
    if not isinstance(url, str):
        return None
    url = _URL_CREDENTIALS.sub(r'\1', url)
    return re.sub(r'[?#].*$', '', url)


def _devices(partition):
    devices = partition.get('devices')
    return devices if isinstance(devices, dict) else {}


def _blkid(devices, dev, key):
    info = devices.get(dev)
    return info.get(key) if isinstance(info, dict) else None


def build_report(data, generated=None):
    """The report (a dict of plain data) from the registered results in ``data`` (see DOCUMENTATION)."""
    if not isinstance(data, dict):
        raise AnsibleFilterError('byol_report expects a mapping of registered results, got %s' % type(data).__name__)
    request = data.get('request') if isinstance(data.get('request'), dict) else {}
    pre = _result(data, 'preflight')
    part = _result(data, 'partition')
    plan = part.get('plan') if isinstance(part.get('plan'), dict) else {}
    devices = _devices(part)
    image = _result(data, 'image')
    stage = _result(data, 'stage')
    cdrive = _result(data, 'configdrive')
    hook = _result(data, 'hook')
    boot = _result(data, 'bootorder')

    report = {'host': data.get('host'), 'installer': data.get('installer'), 'generated': generated,
              'boot_mode': boot.get('boot_mode') or plan.get('boot_mode') or pre.get('boot_mode')}

    # disks, and what is on them
    usage = {}
    for d in plan.get('disks') or []:
        usage[d.get('path')] = ['%s %s (%d MiB)' % (p.get('device'), p.get('role'), p.get('size_mib') or 0)
                                for p in d.get('partitions') or []]
    disks = []
    for d in pre.get('target_disks') or []:
        entry = _pick(d, 'path', 'size', 'type', 'model', 'serial')
        if d.get('path') in usage:
            entry['partitions'] = usage[d.get('path')]
            entry['table'] = plan.get('table_type')
        elif data.get('installer') == 'byoi' and d.get('path') == (pre.get('targets') or [None])[0]:
            entry['use'] = 'whole-disk image'
        disks.append(entry)
    report['disks'] = disks

    report['arrays'] = [_pick(md, 'name', 'device', 'level', 'members', 'capacity_mib', 'requested_level')
                        for md in plan.get('md_arrays') or []]
    report['volume_groups'] = [_pick(vg, 'name', 'pvs', 'raid_level') for vg in plan.get('volume_groups') or []]
    report['logical_volumes'] = [_pick(lv, 'vg', 'name', 'device', 'size_mib', 'mount_point')
                                 for lv in plan.get('logical_volumes') or []]
    filesystems = []
    for f in plan.get('filesystems') or []:
        entry = _pick(f, 'mount_point', 'device', 'fs_type', 'label', 'size_mib')
        for key in ('uuid', 'partuuid'):
            value = _blkid(devices, f.get('device'), key)
            if value:
                entry[key] = value
        filesystems.append(entry)
    report['filesystems'] = filesystems
    report['swap'] = [dict(_pick(s, 'device', 'label', 'size_mib'), **({'uuid': _blkid(devices, s.get('device'), 'uuid')}
                                                                       if _blkid(devices, s.get('device'), 'uuid') else {}))
                      for s in plan.get('swaps') or []]
    if image.get('partitions') and not filesystems:
        report['partitions'] = list(image['partitions'])

    if cdrive:
        cpart = cdrive.get('partition') if isinstance(cdrive.get('partition'), dict) else {}
        report['config_drive'] = dict(_pick(cdrive, 'device', 'instance_id'),
                                      **_pick(cpart, 'device', 'number', 'size_mib', 'action'))
        report['config_drive']['disk'] = cdrive.get('device')
        report['config_drive']['hostname'] = (cdrive.get('meta_data') or {}).get('hostname') \
            if isinstance(cdrive.get('meta_data'), dict) else None
        report['config_drive']['user_data'] = bool(cdrive.get('user_data_source')) or None

    entries = []
    loaders = dict((x.get('disk'), x) for x in boot.get('loaders') or [] if isinstance(x, dict))
    for e in boot.get('entries') or []:
        entry = _pick(e, 'disk', 'num', 'label', 'partuuid', 'created')
        loader = loaders.get(e.get('disk')) or {}
        if loader.get('loader'):
            entry['loader'] = loader['loader']
        entries.append(entry)
    for x in boot.get('legacy') or []:
        entries.append(_pick(x, 'disk', 'loader', 'boot_code', 'bios_boot_partition'))
    report['boot_entries'] = entries
    if boot.get('boot_order_after'):
        report['boot_order'] = list(boot['boot_order_after'])

    img = {'url': redact_url(request.get('byol_image_url')), 'type': request.get('byol_image_type')}
    src = image or stage
    img.update(_pick(src, 'checksum', 'checksum_type', 'downloaded_bytes', 'image_bytes', 'virtual_size', 'compression',
                     'filesystem', 'attach_method', 'partition_table'))
    if not img.get('checksum') and request.get('byol_image_checksum'):
        img['checksum'] = request.get('byol_image_checksum')
        img['checksum_type'] = request.get('byol_image_checksum_type')
    if image:
        img['result'] = image.get('reason')
    report['image'] = dict((k, v) for k, v in img.items() if v is not None)

    if hook:
        report['hook'] = _pick(hook, 'ran', 'rc', 'duration', 'digest', 'log', 'timed_out')
    keys = data.get('fingerprints') or []
    report['host_keys'] = [str(line) for line in keys if isinstance(line, str) and line.strip()]

    # the time of each step, as the modules measured it
    steps = []
    if stage.get('seconds') is not None:
        steps.append({'step': 'stage (download and check)', 'seconds': stage['seconds']})
    if image.get('seconds') is not None:
        steps.append({'step': 'image (%s)' % ('write' if data.get('installer') == 'byoi' else 'copy files'),
                      'seconds': image['seconds']})
    if hook.get('duration') is not None:
        steps.append({'step': 'hook', 'seconds': hook['duration']})
    report['steps'] = steps
    return report


def _fmt_mib(mib):
    if mib is None:
        return '-'
    return '%.1f GiB' % (mib / 1024.0) if mib >= 1024 else '%d MiB' % mib


def report_table(report):
    """A short human text for a :func:`build_report` dict."""
    if not isinstance(report, dict):
        raise AnsibleFilterError('byol_report_table expects the output of byol_report')
    out = ['%s: %s install, boot mode %s, report of %s' % (report.get('host'), report.get('installer'),
                                                           report.get('boot_mode'), report.get('generated') or '-')]
    img = report.get('image') or {}
    out.append('image      %s (%s)%s' % (img.get('url'), img.get('type'),
                                         ', %s %s' % (img.get('checksum_type'), img.get('checksum'))
                                         if img.get('checksum') else ''))
    for d in report.get('disks') or []:
        out.append('disk       %s %s %s serial %s: %s' % (
            d.get('path'), d.get('model') or '-', '%.1f GiB' % (d['size'] / 1024.0 ** 3) if d.get('size') else '-',
            d.get('serial') or '-', '; '.join(d.get('partitions') or []) or d.get('use') or 'not partitioned'))
    for a in report.get('arrays') or []:
        out.append('raid       %s RAID %s of %s, %s' % (
            a.get('device'), a.get('level'), ' '.join(a.get('members') or []), _fmt_mib(a.get('capacity_mib'))))
    for v in report.get('volume_groups') or []:
        out.append('vg         %s on %s' % (v.get('name'), ' '.join(v.get('pvs') or [])))
    for f in report.get('filesystems') or []:
        out.append('fs         %-10s %-5s %-24s UUID=%s' % (
            f.get('mount_point') or '-', f.get('fs_type'), f.get('device'), f.get('uuid') or '?'))
    for s in report.get('swap') or []:
        out.append('swap       %s %s UUID=%s' % (s.get('device'), _fmt_mib(s.get('size_mib')), s.get('uuid') or '?'))
    cd = report.get('config_drive')
    if cd:
        out.append('configdrv  %s (hostname %s, instance %s)' % (cd.get('device'), cd.get('hostname') or '-',
                                                                 cd.get('instance_id') or '-'))
    for e in report.get('boot_entries') or []:
        out.append('boot       %s %s %s %s' % (e.get('disk'), ('Boot%s' % e['num']) if e.get('num') else '',
                                               e.get('label') or '', e.get('loader') or ''))
    hook = report.get('hook')
    if hook:
        out.append('hook       %s, exit code %s, %s s' % (
            'ran' if hook.get('ran') else 'already done for this image', hook.get('rc'), hook.get('duration', '-')))
    for k in report.get('host_keys') or []:
        out.append('host key   %s' % k)
    for s in report.get('steps') or []:
        out.append('time       %-28s %8.1f s' % (s.get('step'), float(s.get('seconds') or 0)))
    # values read on the server (disk models, serials) never drive the terminal of whoever reads the text
    return '\n'.join(_CONTROL.sub('?', line) for line in out)


class FilterModule(object):
    def filters(self):
        # byol_report_table is documented in byol_report_table.yml
        return {'byol_report': build_report, 'byol_report_table': report_table}

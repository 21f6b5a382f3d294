# -*- coding: utf-8 -*-
# Copyright (c) baremetal.byol contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""byol_image_burn's disk record: what it keeps of the table and how a disk is compared with it (pure)."""

from __future__ import annotations

import copy
import json
import os

from ansible_collections.baremetal.byol.plugins.module_utils._image import record as ib
from ansible_collections.baremetal.byol.plugins.module_utils._image import scratch

GPT = {'label': 'gpt', 'id': '8B5C3A2E-1111-4E3F-9A00-00000000B1E5', 'device': '/dev/loop0', 'unit': 'sectors',
       'firstlba': 34, 'lastlba': 131038, 'sectorsize': 512, 'partitions': [
           {'node': '/dev/loop0p2', 'start': 18432, 'size': 98304, 'type': '0FC63DAF-8483-4772-8E79-3D69D8477DE4',
            'uuid': 'a2a0d0c1-0000-4000-8000-000000000002', 'name': 'root'},
           {'node': '/dev/loop0p1', 'start': 2048, 'size': 16384, 'type': 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B',
            'uuid': 'A2A0D0C1-0000-4000-8000-000000000001', 'name': 'esp'}]}


def rec(table):
    return ib.table_record(table)


def test_table_record_keeps_what_the_image_defines():
    r = rec(GPT)
    assert r['label'] == 'gpt' and r['id'] == GPT['id'] and r['first_lba'] == 34
    assert [p['start'] for p in r['partitions']] == [2048, 18432]
    assert r['partitions'][1]['uuid'] == 'A2A0D0C1-0000-4000-8000-000000000002'
    assert 'lastlba' not in r and all('node' not in p for p in r['partitions'])
    assert ib.table_record(None) is None


def test_same_table_on_another_node_and_moved_backup_header_is_no_difference():
    later = copy.deepcopy(GPT)
    later['lastlba'] = 262110  # sgdisk -e on a larger disk
    for p in later['partitions']:
        p['node'] = p['node'].replace('loop0', 'sda')
    assert ib.table_differences(rec(GPT), rec(later)) == []


def test_config_drive_after_the_image_is_no_difference_one_inside_is():
    later = copy.deepcopy(GPT)
    later['partitions'].append({'start': 200000, 'size': 131072, 'type': 'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7',
                                'uuid': 'x', 'name': 'config-2'})
    assert ib.table_differences(rec(GPT), rec(later)) == []
    later['partitions'][-1]['start'] = 100000
    assert ib.table_differences(rec(GPT), rec(later)) == [
        "a partition at sector 100000 (131072 sectors) is not the image's"]


def test_other_guids_type_size_name_missing():
    later = copy.deepcopy(GPT)
    later['id'] = 'FFFFFFFF-1111-4E3F-9A00-00000000B1E5'
    later['partitions'][0].update(uuid='FFFFFFFF-0000-4000-8000-000000000002', size=1000, name='x')
    later['partitions'][1]['type'] = '0FC63DAF-8483-4772-8E79-3D69D8477DE4'
    diffs = ib.table_differences(rec(GPT), rec(later))
    assert any('disk identifier' in d for d in diffs)
    assert any('sector 18432 has unique GUID FFFFFFFF' in d for d in diffs)
    assert any('sector 18432 has size 1000' in d for d in diffs)
    assert any("sector 18432 has name x, the image's has root" in d for d in diffs)
    assert any('sector 2048 has type 0FC63DAF' in d for d in diffs)
    del later['partitions'][1]
    assert 'the partition at sector 2048 (16384 sectors) is missing' in ib.table_differences(rec(GPT), rec(later))


def test_no_or_other_table():
    assert ib.table_differences(rec(GPT), None) == ['the disk has no partition table (the image wrote a gpt table)']
    dos = dict(GPT, label='dos')
    assert ib.table_differences(rec(GPT), rec(dos)) == ['the disk has a dos partition table, the image wrote a gpt table']


def test_boot_area():
    assert ib.boot_area(rec(GPT)) == (34 * 512, (2048 - 34) * 512)
    mbr = dict(GPT, label='dos', firstlba=None)
    assert ib.boot_area(rec(mbr)) == (512, 2047 * 512)
    far = copy.deepcopy(GPT)
    far['partitions'][1]['start'] = 65536
    assert ib.boot_area(rec(far)) == (34 * 512, ib.BOOT_AREA_MAX)
    assert ib.boot_area(None) == (0, 0)


def test_disk_differences():
    marker = dict(table=rec(GPT), boot_code='a', boot_area='b', fingerprint='f')
    same = dict(table=rec(GPT), boot_code='a', boot_area='b', fingerprint='f')
    assert ib.disk_differences(marker, same) == []
    assert ib.disk_differences(marker, dict(same, boot_code=None)) == [
        "the boot code (the first 440 bytes of the disk) is not the image's"]
    assert 'boot loader' in ib.disk_differences(marker, dict(same, boot_area='c'))[0]
    assert ib.disk_differences(marker, dict(same, fingerprint='g')) == [
        'the sampled data blocks differ from the ones written']
    # an image without boot code: whatever is there later is not compared
    assert ib.disk_differences(dict(marker, boot_code=None), dict(same, boot_code='z')) == []


def test_old_records_still_identify_the_image():
    req = dict(image_type='raw', checksum='abc', checksum_type='sha256', url='http://x/i.raw')
    for version in (1, 2):
        marker = dict(version=version, image_type='raw', digests={'sha256': 'abc'})
        assert ib.marker_matches(marker, req)[0] is True
    assert ib.marker_matches(dict(version=3, image_type='raw'), req)[0] is False


class _Source(object):
    content_length = None  # size unknown: the scratch_dir is used


def test_scratch_dir_link_in_dest_is_not_followed(tmp_path):
    """The role's ``<mount_root>/.byol-scratch`` when an earlier copy of the image left a link there: the download
    must not land outside the tree. On main mkdtemp created its directory in the link's target."""
    import pytest
    from ansible_collections.baremetal.byol.plugins.module_utils._treefs import TreeError
    dest = tmp_path / 'a'
    dest.mkdir()
    outside = tmp_path / 'outside'
    outside.mkdir()
    (outside / 'victim').write_text('x')
    (dest / '.byol-scratch').symlink_to(str(outside))
    req = dict(mode='files', url='http://example.invalid/i.qcow2', image_type='qcow2', dest=str(dest),
               scratch_dir=str(dest / '.byol-scratch'))
    space = scratch.Scratch(req, {})
    try:
        with pytest.raises(TreeError, match='/.byol-scratch is a symbolic link'):
            space.for_source(_Source())
    finally:
        space.cleanup()
    assert sorted(os.listdir(str(outside))) == ['victim']


def test_scratch_dir_in_dest_created_and_removed(tmp_path):
    dest = tmp_path / 'a'
    dest.mkdir()
    req = dict(mode='files', url='http://example.invalid/i.qcow2', image_type='qcow2', dest=str(dest),
               scratch_dir=str(dest / '.byol-scratch'))
    space = scratch.Scratch(req, {})
    work = space.for_source(_Source())
    assert os.path.dirname(work) == str(dest / '.byol-scratch')
    space.cleanup()
    assert os.listdir(str(dest)) == []


# -- one record format for disk, files and stage; one reader and writer ------------------------------------------

def test_disk_files_and_stage_records_share_one_format():
    common = {'version', 'mode', 'image_type', 'digests', 'validators', 'compression', 'written_at'}
    disk = ib.new_record('disk', 'raw', {'sha512': 'a'}, {'url': 'u'}, None, device='/dev/sda', device_size=1)
    files = ib.new_record('files', 'qcow2', {'sha512': 'a'}, {'url': 'u'}, 'xz', dest='/tmp/a')
    stage = ib.new_record('stage', 'qcow2', {'sha512': 'a'}, {'url': 'u'}, 'xz', url_id='x', file='image.qcow2')
    for rec_, mode in ((disk, 'disk'), (files, 'files'), (stage, 'stage')):
        assert common <= set(rec_) and rec_['version'] == ib.VERSION and rec_['mode'] == mode
    assert set(disk) - common == {'device', 'device_size'} and set(files) - common == {'dest'}
    assert ib.is_stage_record(stage) and not ib.is_stage_record(files) and not ib.is_stage_record(disk)


def test_record_roundtrip_and_old_records_read(tmp_path):
    rec_ = ib.new_record('files', 'qcow2', {'sha512': 'a'}, {}, None, dest='/tmp/a')
    path = ib.write_record(str(tmp_path), ib.FILES_MARKER, rec_)
    assert path == str(tmp_path / ib.FILES_MARKER) and ib.read_record(str(tmp_path), ib.FILES_MARKER) == rec_
    # a files record written before the one format (no written_at, version 1) still names the image
    old = {'version': 1, 'image_type': 'qcow2', 'mode': 'files', 'digests': {'sha512': 'a'}, 'dest': '/tmp/a'}
    (tmp_path / ib.FILES_MARKER).write_text(json.dumps(old))
    req = dict(image_type='qcow2', checksum='a', checksum_type='sha512', url='http://x/i.qcow2')
    assert ib.marker_matches(ib.read_record(str(tmp_path), ib.FILES_MARKER), req)[0] is True
    for text in ('not json', '[1]'):
        (tmp_path / ib.FILES_MARKER).write_text(text)
        assert ib.read_record(str(tmp_path), ib.FILES_MARKER) is None
    assert ib.read_record(str(tmp_path / 'missing'), 'x.json', strict=False) is None


def test_record_reader_follows_no_link(tmp_path):
    """A link at a record's path: in a target tree it is refused (TreeError), in state_dir it reads as no record
    (the disk is written again, and the link is never read through)."""
    import pytest
    from ansible_collections.baremetal.byol.plugins.module_utils._treefs import TreeError
    outside = tmp_path / 'outside.json'
    outside.write_text(json.dumps(ib.new_record('disk', 'raw', {}, {}, None)))
    (tmp_path / 'image_burn-sda.json').symlink_to(str(outside))
    with pytest.raises(TreeError):
        ib.read_record(str(tmp_path), 'image_burn-sda.json')
    assert ib.read_record(str(tmp_path), ib.disk_record_name('/dev/sda'), strict=False) is None

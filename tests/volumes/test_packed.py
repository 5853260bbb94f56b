# SPDX-License-Identifier: Apache-2.0
"""The packed dataset format (volumes/packed.py): member names, the writer, is_packed and the reader."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

import dataset_tool
from volumes import packed


def test_member_names():
    assert packed.volume_member(0) == '00000/vol00000000.npy'
    assert packed.volume_member(1234) == '00001/vol00001234.npy'
    assert packed.label_map_member('00001/vol00001234.npy') == '00001/seg00001234.npy'
    assert packed.label_map_member('vol00000007.npy') == 'seg00000007.npy'
    assert packed.is_volume_member('00000/vol00000000.npy')
    assert not packed.is_volume_member('00000/seg00000000.npy') and not packed.is_volume_member('dataset.json')


def _write(dest, volumes, label_maps=None, record=None):
    writer = packed.PackedWriter(str(dest))
    names = [writer.add_volume(i, v, None if label_maps is None else label_maps[i]) for i, v in enumerate(volumes)]
    writer.add_record(record or dict(shape=list(volumes[0].shape), volume_info=dict(spacing=[1, 1, 2], dtype='uint8'),
                                     sources=[[n, f'case{i}'] for i, n in enumerate(names)]))
    writer.commit()
    return names


@pytest.mark.parametrize('dest', ['ds.zip', 'ds_folder'])
def test_round_trip_through_zip_and_folder(tmp_path, dest):
    rng = np.random.RandomState(0)
    volumes = [rng.randint(0, 256, [2, 3, 4, 5]).astype(np.uint8) for _ in range(3)]
    maps = [rng.randint(0, 3, [3, 4, 5]).astype(np.uint8) for _ in range(3)]
    record = dict(shape=[2, 3, 4, 5], volume_info=dict(spacing=[1, 1, 2], dtype='uint8', channels=['t2w', 'adc'],
                                                       label_names={'1': 'a', '2': 'b'}),
                  labels=[[packed.volume_member(i), i % 2] for i in range(3)])
    _write(tmp_path / dest, volumes, maps, record)
    assert packed.is_packed(str(tmp_path / dest))
    ds = packed.PackedDataset(str(tmp_path / dest))
    assert len(ds) == 3 and ds.shape == (2, 3, 4, 5) and ds.img_shape == (3, 4, 5) and ds.num_channels == 2
    assert ds.has_label_maps and ds.volume_info.channels == ('t2w', 'adc')
    ds.check_label_maps()
    for i in range(3):
        assert np.array_equal(ds.volume(i), volumes[i]) and np.array_equal(ds.label_map(i), maps[i])
    assert ds.class_labels().tolist() == [0, 1, 0]
    assert ds.case_names == ds.file_names  # No sources recorded: the member names.


def test_record_is_first_and_names_the_format(tmp_path):
    _write(tmp_path / 'ds.zip', [np.zeros([1, 2, 2, 2], np.uint8)])
    with zipfile.ZipFile(tmp_path / 'ds.zip') as z:
        record = json.loads(z.read('dataset.json'))
    assert next(iter(record)) == 'format' and record['format'] == packed.FORMAT


def test_is_packed_answers_no_for_other_things(tmp_path):
    assert not packed.is_packed(str(tmp_path / 'missing.zip'))
    (tmp_path / 'plain.zip').write_bytes(b'not a zip')
    assert not packed.is_packed(str(tmp_path / 'plain.zip'))
    with zipfile.ZipFile(tmp_path / 'nifti.zip', 'w') as z:  # A zip of scans is a source, not a packed dataset.
        z.writestr('case0.nii.gz', b'x')
    assert not packed.is_packed(str(tmp_path / 'nifti.zip'))
    (tmp_path / 'other').mkdir()
    (tmp_path / 'other' / 'dataset.json').write_text(json.dumps(dict(format='something-else')))
    assert not packed.is_packed(str(tmp_path / 'other'))
    (tmp_path / 'list').mkdir()
    (tmp_path / 'list' / 'dataset.json').write_text('[1, 2]')
    assert not packed.is_packed(str(tmp_path / 'list'))


def test_writer_refuses_an_existing_destination_and_leaves_nothing_on_abort(tmp_path):
    _write(tmp_path / 'ds.zip', [np.zeros([1, 2, 2, 2], np.uint8)])
    with pytest.raises(packed.WriteError, match='exists; pass --overwrite'):
        packed.PackedWriter(str(tmp_path / 'ds.zip'))
    writer = packed.PackedWriter(str(tmp_path / 'new.zip'))
    writer.add_volume(0, np.zeros([1, 2, 2, 2], np.uint8))
    writer.abort()
    assert sorted(os.listdir(tmp_path)) == ['ds.zip']


def test_reader_errors_name_the_dataset_and_member(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.zip does not exist'):
        packed.PackedDataset(str(tmp_path / 'missing.zip'))
    _write(tmp_path / 'ds', [np.zeros([1, 2, 2, 2], np.uint8), np.zeros([1, 2, 2, 3], np.uint8)])
    with pytest.raises(ValueError, match=r'vol00000001\.npy has shape \[1, 2, 2, 3\]'):
        packed.PackedDataset(str(tmp_path / 'ds'))
    _write(tmp_path / 'nomaps.zip', [np.zeros([1, 2, 2, 2], np.uint8)])
    with pytest.raises(ValueError, match='holds no label maps; pack it with dataset_tool.py --seg'):
        packed.PackedDataset(str(tmp_path / 'nomaps.zip')).label_map(0)


def test_dataset_tool_writes_what_the_reader_reads(tmp_path):
    dataset_tool.pack_dataset('phantom:3', str(tmp_path / 'ph.zip'), size=(16, 12, 8), seg='phantom')
    ds = packed.PackedDataset(str(tmp_path / 'ph.zip'))
    assert ds.shape == (1, 8, 12, 16) and ds.case_names == ['phantom:0', 'phantom:1', 'phantom:2']
    assert ds.has_label_maps and ds.label_map(1).max() >= 1
    centre, direction = ds.case_geometry(0)
    assert len(centre) == 3 and len(direction) == 9

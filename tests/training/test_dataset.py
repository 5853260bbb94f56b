# SPDX-License-Identifier: Apache-2.0
"""VolumeFolderDataset over packed zips and folders: shapes, labels, subsets, mirroring, worker safety."""

import json
import os
import pickle

import numpy as np
import pytest
import torch

import dataset_tool
from training.dataset import VolumeFolderDataset
from volumes.contract import IntensityMapping


@pytest.fixture(scope='module')
def packed(tmp_path_factory):
    """Eight phantoms at 16x12x6, as a zip and as a folder, with class labels."""
    root = tmp_path_factory.mktemp('packed')
    labels = root / 'labels.json'
    labels.write_text(json.dumps({f'phantom:{s}': s % 3 for s in range(8)}))
    for dest in ('ph.zip', 'ph_dir'):
        dataset_tool.pack_dataset('phantom:8', str(root / dest), size=(16, 12, 6), labels=str(labels))
    return root


def test_properties_from_dataset_json(packed):
    ds = VolumeFolderDataset(str(packed / 'ph.zip'))
    assert len(ds) == 8 and ds.name == 'ph'
    assert ds.image_shape == [1, 6, 12, 16] and ds.img_shape == (6, 12, 16) and ds.num_channels == 1
    info = ds.volume_info
    assert info.spacing == pytest.approx((4.0, 64 / 12, 12.0))  # The phantom field of view over the size.
    assert info.direction == (1, 0, 0, 0, 1, 0, 0, 0, 1) and info.orientation == 'LPS' and info.centre == (0, 0, 0)
    assert info.intensity == IntensityMapping('percentile', 0.5, 99.5, 'uint8') and info.orient == 'source'
    assert ds.dtype == np.uint8 and ds.max_value == 255
    assert ds.channel_names == ['image'] and ds.channels_are_sequences is False
    volume, label = ds[0]
    assert volume.shape == (1, 6, 12, 16) and volume.dtype == np.uint8 and volume.max() == 255
    assert label.shape == (0,) and label.dtype == np.float32 and not ds.has_labels and ds.label_dim == 0


def test_zip_and_folder_hold_the_same_volumes(packed):
    a, b = VolumeFolderDataset(str(packed / 'ph.zip')), VolumeFolderDataset(str(packed / 'ph_dir'))
    assert len(a) == len(b) == 8
    for i in range(len(a)):
        assert np.array_equal(a[i][0], b[i][0])


def test_onehot_labels_for_a_conditional_dataset(packed):
    ds = VolumeFolderDataset(str(packed / 'ph.zip'), use_labels=True)
    assert ds.has_labels and ds.has_onehot_labels and ds.label_shape == [3] and ds.label_dim == 3
    for i in range(8):
        expected = np.eye(3, dtype=np.float32)[i % 3]
        assert np.array_equal(ds[i][1], expected) and np.array_equal(ds.get_label(i), expected)
        assert ds.get_details(i).raw_label == i % 3


def test_vector_labels_are_used_as_is(tmp_path):
    labels = tmp_path / 'labels.csv'
    labels.write_text('name,age,volume\n' + ''.join(f'phantom:{s},{50 + s},{0.5 * s}\n' for s in range(3)))
    dataset_tool.pack_dataset('phantom:3', str(tmp_path / 'v.zip'), size=(8, 8, 4), labels=str(labels))
    ds = VolumeFolderDataset(str(tmp_path / 'v.zip'), use_labels=True)
    assert ds.label_shape == [2] and not ds.has_onehot_labels
    assert np.allclose(ds[2][1], [52.0, 1.0]) and ds[2][1].dtype == np.float32


def test_xflip_doubles_and_mirrors_w(packed):
    plain = VolumeFolderDataset(str(packed / 'ph.zip'))
    flipped = VolumeFolderDataset(str(packed / 'ph.zip'), xflip=True)
    assert len(flipped) == 16
    assert np.array_equal(flipped[3][0], plain[3][0])
    assert np.array_equal(flipped[8 + 3][0], plain[3][0][..., ::-1])
    assert flipped.get_details(11).xflip and flipped.get_details(11).raw_idx == 3
    assert not np.array_equal(flipped[11][0], plain[3][0])  # Phantoms are not mirror-symmetric.


def test_max_size_is_a_seeded_sorted_subset(packed):
    a = VolumeFolderDataset(str(packed / 'ph.zip'), max_size=3, random_seed=1)
    b = VolumeFolderDataset(str(packed / 'ph.zip'), max_size=3, random_seed=1)
    c = VolumeFolderDataset(str(packed / 'ph.zip'), max_size=3, random_seed=2, xflip=True)
    idx = [a.get_details(i).raw_idx for i in range(len(a))]
    assert len(a) == 3 and idx == sorted(idx) and idx == [b.get_details(i).raw_idx for i in range(3)]
    expected = np.arange(8)
    np.random.RandomState(1).shuffle(expected)
    assert idx == sorted(expected[:3])
    assert len(c) == 6 and [c.get_details(i).raw_idx for i in range(3)] == [c.get_details(i).raw_idx for i in (3, 4, 5)]
    assert len(VolumeFolderDataset(str(packed / 'ph.zip'), max_size=100)) == 8


def test_dataloader_workers_match_direct_reads(packed):
    ds = VolumeFolderDataset(str(packed / 'ph.zip'), use_labels=True, xflip=True)
    ds[0]  # Open the zip in this process first: the workers must not share the handle.
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    volumes, labels = zip(*[(v, c) for v, c in loader])
    volumes, labels = torch.cat(volumes).numpy(), torch.cat(labels).numpy()
    assert volumes.shape == (16, 1, 6, 12, 16)
    for i in range(len(ds)):
        assert np.array_equal(volumes[i], ds[i][0]) and np.array_equal(labels[i], ds[i][1])


def test_a_new_process_opens_its_own_zip_handle(packed, monkeypatch):
    ds = VolumeFolderDataset(str(packed / 'ph.zip'))
    assert ds.packed._zipfile is None  # Closed after the constructor's reads, so forked workers inherit none.
    expected = ds[2][0]
    handle = ds.packed._zipfile
    assert ds.packed._zip() is handle
    monkeypatch.setattr(os, 'getpid', lambda: -1)  # As in a forked worker.
    assert ds.packed._zip() is not handle and np.array_equal(ds[2][0], expected)
    assert handle.fp is not None  # The parent's handle is left alone.


def test_pickle_drops_the_zip_handle(packed):
    ds = VolumeFolderDataset(str(packed / 'ph.zip'))
    ds[0]
    assert ds.packed.__getstate__()['_zipfile'] is None
    copy = pickle.loads(pickle.dumps(ds))
    assert np.array_equal(copy[5][0], ds[5][0])


def test_uint16_dataset_max_value(tmp_path):
    dataset_tool.pack_dataset('phantom:2', str(tmp_path / 'u16.zip'), size=(8, 8, 4), dtype='uint16')
    ds = VolumeFolderDataset(str(tmp_path / 'u16.zip'))
    assert ds.dtype == np.uint16 and ds.max_value == 65535 and ds[0][0].max() == 65535


def test_img_shape_mismatch_names_dataset_and_shapes(packed):
    VolumeFolderDataset(str(packed / 'ph.zip'), img_shape=[6, 12, 16])  # A list, as train.py passes it.
    with pytest.raises(ValueError, match=r'ph\.zip.*\(6, 12, 16\).*\(8, 12, 16\)'):
        VolumeFolderDataset(str(packed / 'ph.zip'), img_shape=(8, 12, 16))


def test_not_a_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.zip'):
        VolumeFolderDataset(str(tmp_path / 'nope.zip'))
    os.makedirs(tmp_path / 'plain')
    np.save(tmp_path / 'plain' / 'a.npy', np.zeros((1, 2, 2, 2), np.uint8))
    with pytest.raises(ValueError, match='no dataset.json'):
        VolumeFolderDataset(str(tmp_path / 'plain'))
    (tmp_path / 'plain' / 'dataset.json').write_text(json.dumps({'format': 'other/9'}))
    with pytest.raises(ValueError, match='format "other/9"'):
        VolumeFolderDataset(str(tmp_path / 'plain'))


def test_a_volume_of_another_shape_or_dtype_is_a_clear_error(tmp_path):
    os.makedirs(tmp_path / 'ds' / '00000')
    (tmp_path / 'ds' / 'dataset.json').write_text(json.dumps({'format': 'stylegan2-ada-3d/1', 'dtype': 'uint8'}))
    np.save(tmp_path / 'ds' / '00000' / 'vol00000000.npy', np.ones((1, 2, 3, 4), np.uint8))
    np.save(tmp_path / 'ds' / '00000' / 'vol00000001.npy', np.ones((1, 2, 3, 5), np.uint8))
    np.save(tmp_path / 'ds' / '00000' / 'vol00000002.npy', np.ones((1, 2, 3, 4), np.uint16))
    # Found from the headers when the dataset opens, not when training reaches the volume.
    with pytest.raises(ValueError, match=r'vol00000001\.npy has shape \[1, 2, 3, 5\], 00000/vol00000000\.npy '
                       r'\[1, 2, 3, 4\]; every volume must have one shape'):
        VolumeFolderDataset(str(tmp_path / 'ds'))
    os.remove(tmp_path / 'ds' / '00000' / 'vol00000001.npy')
    with pytest.raises(ValueError, match=r'vol00000002\.npy holds uint16 voxels, dataset.json says uint8'):
        VolumeFolderDataset(str(tmp_path / 'ds'))

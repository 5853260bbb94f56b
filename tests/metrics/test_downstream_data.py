# SPDX-License-Identifier: Apache-2.0
"""metrics.downstream.data: splits by case, labelled datasets, folders of generated volumes and networks generating
them, checked against the real grid, labels and intensity scale."""

import os

import numpy as np
import pytest
import torch

import dataset_tool
from metrics.downstream import data
from training import generation
from training.networks import Generator
from volumes import volume_io
from volumes.contract import LPS_DIRECTION, VolumeInfo

SIZE = (16, 16, 8)  # x, y, z


@pytest.fixture(scope='module')
def packed(tmp_path_factory):
    """Labelled phantoms packed two ways: percentile-clipped (stored units only) and with a fixed window."""
    root = tmp_path_factory.mktemp('packed')
    dataset_tool.pack_dataset('phantom:4', str(root / 'pct.zip'), size=SIZE, seg='phantom')
    dataset_tool.pack_dataset('phantom:4', str(root / 'win.zip'), size=SIZE, seg='phantom', window=(0, 1.2))
    dataset_tool.pack_dataset('phantom:3', str(root / 'plain.zip'), size=SIZE)
    (root / 'names.json').write_text('{"1": "gland", "2": "outer zone"}')
    dataset_tool.pack_dataset('phantom:2', str(root / 'named.zip'), size=SIZE, seg='phantom',
                              seg_names=str(root / 'names.json'))
    return root


def case(name: str, value: int, label: int = 1) -> data.Case:
    image = np.full((1, 2, 4, 4), value, np.uint8)
    labels = np.zeros((2, 4, 4), np.uint8)
    labels[0, :2, :2] = label
    return data.Case(name, image, labels)


def tiny_generator(info: VolumeInfo, c_dim: int = 0) -> Generator:
    torch.manual_seed(0)
    return Generator(z_dim=8, c_dim=c_dim, w_dim=8, img_shape=SIZE[::-1], img_channels=info.num_channels,
                     mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=128, channel_max=16),
                     volume_info=info.to_dict()).eval()

#----------------------------------------------------------------------------
# Splits.


def test_the_split_is_by_case_seeded_and_keeps_copies_together():
    cases = [case(f'case{i:02d}.nii.gz', i) for i in range(20)]
    cases.append(case('case03_again.nii.gz', 3))  # Identical voxels to case03: a copy under another name.
    cases.append(case('case05.nii.gz', 99))       # Another volume of case05.
    train, test = data.split_by_case(cases, 0.3, seed=0)
    assert sorted(train + test) == list(range(22)) and not set(train) & set(test)
    assert len(data.case_groups(cases)) == 20 and len(test) in (6, 7, 8)
    for a, b in ((3, 20), (5, 21)):
        assert (a in test) == (b in test)
    assert data.split_by_case(cases, 0.3, seed=0) == (train, test)
    assert data.split_by_case(cases, 0.3, seed=1) != (train, test)
    with pytest.raises(ValueError, match='1 distinct case'):
        data.split_by_case([case('a', 1), case('a', 2)], 0.3, seed=0)
    assert len(data.split_by_case(cases[:2], 0.01, seed=0)[1]) == 1  # At least one on each side.


def test_a_case_is_its_source_path_without_the_extension():
    cases = [case('a/t2.nii.gz', 1), case('b/t2.nii.gz', 2), case('c/x.nii.gz', 3), case('c/x.nrrd', 4)]
    assert data.case_groups(cases) == [[0], [1], [2, 3]]


def test_a_test_set_holding_a_training_volume_is_refused(packed):
    real = data.load_packed(str(packed / 'pct.zip'), '--real')
    other = real.subset([1, 2])
    with pytest.raises(ValueError, match='phantom:1 is a copy of phantom:1 in --real'):
        data.check_disjoint(real.subset([0, 1]), other)
    data.check_disjoint(real.subset([0]), other)

#----------------------------------------------------------------------------
# Packed datasets.


def test_a_packed_dataset_gives_stored_images_and_class_indices(packed):
    real = data.load_packed(str(packed / 'pct.zip'), '--real')
    assert real.shape == (1, 8, 16, 16) and real.class_names == ['inner zone', 'outer zone']
    assert [c.name for c in real.cases] == [f'phantom:{i}' for i in range(4)]
    assert real.cases[0].image.dtype == np.uint8 and set(np.unique(real.cases[0].labels)) == {0, 1, 2}
    with pytest.raises(ValueError, match='--real .*plain.zip holds no label maps; .*--seg'):
        data.load_packed(str(packed / 'plain.zip'), '--real')
    with pytest.raises(ValueError, match='--synthetic .*named.zip has labels 1 gland, 2 outer zone; --real has 1 '
                                         'inner zone, 2 outer zone'):
        data.check_compatible(data.load_packed(str(packed / 'named.zip'), '--synthetic'), real, '--synthetic')
    with pytest.raises(ValueError, match='--test .*win.zip was packed with .*window'):
        data.check_compatible(data.load_packed(str(packed / 'win.zip'), '--test'), real, '--test')


def test_label_values_outside_the_record_are_refused():
    values = (0, 1, 7)
    labels = np.array([[[0, 1], [7, 7]]], np.uint8)
    assert data.class_indices(labels, values, 'x', '--real').tolist() == [[[0, 1], [2, 2]]]
    with pytest.raises(ValueError, match='x holds label values 3 that --real does not have \\(it has 1, 7\\)'):
        data.class_indices(np.array([[[3]]], np.uint8), values, 'x', '--real')

#----------------------------------------------------------------------------
# Generated volumes: a folder written by generate.py and the same network generating on the fly agree exactly.


@pytest.mark.parametrize('dataset, dtype', [('pct.zip', np.uint8), ('win.zip', np.float32)])
def test_a_generated_folder_and_the_network_give_the_same_cases(packed, tmp_path, dataset, dtype):
    real = data.load_packed(str(packed / dataset), '--real')
    G = tiny_generator(real.info)
    seeds = [0, 1, 2]
    on_the_fly = data.generate(G, seeds, real, 'G.pt', batch=2, device=torch.device('cpu'), progress=False)
    writer = generation.OutputWriter(str(tmp_path), 'nii.gz', real.info)
    for seed, volume in generation.generate_from_seeds(G, seeds, torch.zeros([1, 0]), 1, 'const', 2,
                                                       torch.device('cpu'), progress=False):
        writer.write(volume, f'seed{seed:04d}')
    assert volume_io.read_image(str(tmp_path / 'seed0000.nii.gz')).GetPixelIDTypeAsString().startswith(
        '8-bit unsigned' if dtype == np.uint8 else '32-bit float')  # Stored units, or the window's source units.
    from_files = data.load_folder(str(tmp_path), real, '--synthetic')
    assert [c.name for c in from_files.cases] == [c.name for c in on_the_fly.cases] == ['seed0000', 'seed0001',
                                                                                      'seed0002']
    for a, b in zip(from_files.cases, on_the_fly.cases):
        assert a.image.dtype == b.image.dtype == np.uint8 and a.image.shape == (1, 8, 16, 16)
        assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
        assert set(np.unique(a.labels)) <= {0, 1, 2}


def write_pair(folder, name: str, image: np.ndarray, labels: np.ndarray | None, spacing=(4.0, 4.0, 9.0)) -> None:
    os.makedirs(folder, exist_ok=True)
    volume_io.write_volume(os.path.join(folder, f'{name}.nii.gz'), image, spacing, LPS_DIRECTION)
    if labels is not None:
        volume_io.write_volume(os.path.join(folder, f'{name}_seg.nii.gz'), labels, spacing,
                               LPS_DIRECTION)


def test_bad_generated_folders_are_refused_with_the_file_named(packed, tmp_path):
    real = data.load_packed(str(packed / 'pct.zip'), '--real')
    image, labels = real.cases[0].image[0], real.cases[0].labels

    def refused(folder, pattern):
        with pytest.raises(ValueError, match=pattern):
            data.load_folder(str(folder), real, '--synthetic')
    write_pair(tmp_path / 'ok', 'a', image, labels)
    assert np.array_equal(data.load_folder(str(tmp_path / 'ok'), real, '--synthetic').cases[0].image[0], image)
    refused(tmp_path / 'empty', 'is neither a folder')
    os.makedirs(tmp_path / 'none')
    refused(tmp_path / 'none', 'holds no volumes with label maps')
    write_pair(tmp_path / 'noseg', 'a', image, None)
    refused(tmp_path / 'noseg', 'a.nii.gz has no label map a_seg.nii.gz beside it')
    write_pair(tmp_path / 'size', 'a', image[:4], labels[:4])
    refused(tmp_path / 'size', 'a.nii.gz is on a 16x16x4 grid of 4x4x9 mm voxels; --real is 16x16x8 of 4x4x9 mm')
    write_pair(tmp_path / 'spacing', 'a', image, labels, spacing=(4.0, 4.0, 3.0))
    refused(tmp_path / 'spacing', 'a.nii.gz is on a 16x16x8 grid of 4x4x3 mm voxels')
    write_pair(tmp_path / 'values', 'a', image, np.where(labels == 2, 5, labels).astype(np.uint8))
    refused(tmp_path / 'values', 'a_seg.nii.gz holds label values 5 that --real does not have')
    write_pair(tmp_path / 'float', 'a', image.astype(np.float32), labels)
    refused(tmp_path / 'float', 'holds float32 voxels; the real dataset was clipped to per-volume percentiles')


def test_networks_that_do_not_fit_the_real_set_are_refused(packed):
    real = data.load_packed(str(packed / 'pct.zip'), '--real')
    data.check_network(tiny_generator(real.info), real, 'G.pt', '--synthetic')
    cases = [(VolumeInfo(spacing=real.info.spacing), 'makes no label maps'),
             (VolumeInfo(spacing=real.info.spacing, label_names={1: 'gland', 2: 'outer zone'}),
              'makes labels 1 gland, 2 outer zone; --real has 1 inner zone, 2 outer zone'),
             (VolumeInfo(spacing=(1, 1, 1), label_names=real.label_names), 'grid of 1x1x1 mm voxels')]
    for info, message in cases:
        with pytest.raises(ValueError, match=message):
            data.check_network(tiny_generator(info), real, 'G.pt', '--synthetic')
    with pytest.raises(ValueError, match='is conditional'):
        data.check_network(tiny_generator(real.info, c_dim=2), real, 'G.pt', '--synthetic')

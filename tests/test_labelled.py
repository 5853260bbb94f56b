# SPDX-License-Identifier: Apache-2.0
"""Labelled synthetic data: label maps packed beside the volumes, windows in source units, joint image + label
generation, and the nnU-Net export."""

import json
import os

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

import dataset_tool
import generate
import train
from tests.helpers.training import TINY_CFG
from tests.helpers.volumes import read_zip
from training.dataset import VolumeFolderDataset
from volumes.contract import IntensityMapping

NAMES = {'1': 'CZ+TZ', '2': 'PZ'}


def pack(*args):
    return CliRunner().invoke(dataset_tool.main, [str(a) for a in args])


def write_case(folder, name: str, shape=(20, 24, 10), spacing=(1.5, 1.25, 3.0), ct: bool = False, seed: int = 0):
    """An image (x, y, z) = shape with a box-shaped 'organ' of two zones, and its label map, as NIfTI."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint8)
    labels[6:14, 8:16, 3:7] = 2
    labels[8:12, 10:14, 4:6] = 1
    image = rng.normal(0, 0.05, shape).astype(np.float32) + np.choose(labels, [0.2, 1.0, 0.6]).astype(np.float32)
    if ct:  # Hounsfield-like: air -1000 around soft tissue and a bright structure above the window.
        image = np.choose(labels, [-1000, 60, 1800]).astype(np.float32) + rng.normal(0, 5, shape).astype(np.float32)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [10, -5, 20]
    os.makedirs(folder, exist_ok=True)
    nib.save(nib.Nifti1Image(image, affine), os.path.join(folder, f'{name}.nii.gz'))
    nib.save(nib.Nifti1Image(labels, affine), os.path.join(folder, f'{name}_seg.nii.gz'))
    return labels


@pytest.fixture(scope='module')
def labelled_source(tmp_path_factory):
    root = tmp_path_factory.mktemp('labelled')
    for i in range(3):
        write_case(root / 'src', f'case{i}', seed=i)
    (root / 'names.json').write_text(json.dumps(NAMES))
    return root


def test_label_maps_are_packed_beside_their_volumes(labelled_source, tmp_path):
    result = pack('--source', labelled_source / 'src', '--dest', tmp_path / 'd.zip', '--seg', '*_seg.nii.gz',
                  '--seg-names', labelled_source / 'names.json', '--size', '10x12x5', '--spacing', '3,2.5,6')
    assert result.exit_code == 0, result.output
    info, arrays = read_zip(tmp_path / 'd.zip')
    assert sorted(arrays) == sorted(f'00000/{kind}0000000{i}.npy' for i in range(3) for kind in ('seg', 'vol'))
    assert [name for _, name in info['sources']] == ['case0.nii.gz', 'case1.nii.gz', 'case2.nii.gz']  # No masks.
    assert info['volume_info']['label_names'] == NAMES
    seg = arrays['00000/seg00000000.npy']
    assert seg.dtype == np.uint8 and seg.shape == (5, 12, 10) and set(np.unique(seg)) <= {0, 1, 2}
    assert set(np.unique(seg)) == {0, 1, 2}  # Nearest neighbour keeps every label, mixes none.
    dataset = VolumeFolderDataset(str(tmp_path / 'd.zip'), load_seg=True)
    assert dataset.volume_info.label_values == (0, 1, 2) and dataset.volume_info.num_channels == 1 + 3
    volume, _ = dataset[0]
    assert volume.shape == (2, 5, 12, 10) and np.array_equal(volume[1], seg)
    # The organ is where the label map says: brightest in zone 1, then zone 2, darkest outside.
    image = volume[0].astype(float)
    assert image[seg == 1].mean() > image[seg == 2].mean() > image[seg == 0].mean()


def test_crop_to_the_mask_centres_the_box_on_it(labelled_source, tmp_path):
    result = pack('--source', labelled_source / 'src', '--dest', tmp_path / 'd.zip', '--seg', '*_seg.nii.gz',
                  '--crop', 'mask', '--fov', '15,15,15', '--size', '10x10x5')
    assert result.exit_code == 0, result.output
    info, arrays = read_zip(tmp_path / 'd.zip')
    seg = arrays['00000/seg00000000.npy']
    zz, yy, xx = np.nonzero(seg)
    centre = [(a.min() + a.max()) / 2 for a in (xx, yy, zz)]
    assert np.allclose(centre, [4.5, 4.5, 2], atol=0.6)  # The organ sits in the middle of the box.
    organ_world = np.array([10, -5, 20]) + np.array([9.5 * 1.5, 11.5 * 1.25, 4.5 * 3.0])  # Its bounding box centre.
    ras_to_lps = np.array([-1, -1, 1])
    assert np.allclose(info['grids'][0][1], organ_world * ras_to_lps, atol=1e-3)


@pytest.mark.parametrize('problem, fragments', [
    ('other grid', ['case0_seg.nii.gz lies on another grid than', 'case0.nii.gz']),
    ('not integer', ['case0_seg.nii.gz holds values that are not integers (e.g. 0.5)']),
    ('missing', ['no label map for case0.nii.gz', 'case0_seg.nii.gz does not exist']),
    ('unnamed', ['case0_seg.nii.gz holds label value(s) [3] that --seg-names does not name']),
])
def test_bad_label_maps_are_one_line_errors_and_leave_no_archive(tmp_path, problem, fragments):
    write_case(tmp_path / 'src', 'case0')
    seg_path = tmp_path / 'src' / 'case0_seg.nii.gz'
    labels = np.asanyarray(nib.load(seg_path).dataobj)
    if problem == 'other grid':
        nib.save(nib.Nifti1Image(labels[:, :, :8], nib.load(seg_path).affine), seg_path)
    elif problem == 'not integer':
        nib.save(nib.Nifti1Image(labels.astype(np.float32) / 2, nib.load(seg_path).affine), seg_path)
    elif problem == 'missing':
        os.remove(seg_path)
    else:
        labels = labels.copy()
        labels[0, 0, 0] = 3
        nib.save(nib.Nifti1Image(labels, nib.load(seg_path).affine), seg_path)
    (tmp_path / 'names.json').write_text(json.dumps(NAMES))
    result = pack('--source', tmp_path / 'src', '--dest', tmp_path / 'd.zip', '--seg', '*_seg.nii.gz',
                  '--seg-names', tmp_path / 'names.json', '--on-error', 'stop')
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    error = [line for line in result.output.splitlines() if line.startswith('Error:')]
    assert len(error) == 1 and all(f in error[0] for f in fragments), result.output
    assert not os.path.exists(tmp_path / 'd.zip')


@pytest.mark.parametrize('args, message', [
    (['--window', '1000,-1000'], 'expected LO,HI in source units with LO < HI'),
    (['--window', '-1000,1000', '--clip', '1,99'], 'give --clip (per-volume percentiles) or --window'),
    (['--crop', 'mask'], '--crop=mask centres the box on each label map: give --seg'),
])
def test_bad_intensity_and_crop_options(tmp_path, args, message):
    write_case(tmp_path / 'src', 'case0')
    result = pack('--source', tmp_path / 'src', '--dest', tmp_path / 'd.zip', *args)
    assert result.exit_code in (1, 2) and message in result.output, result.output
    assert not os.path.exists(tmp_path / 'd.zip')


def test_a_ct_window_is_recorded_and_written_back_in_hounsfield_units(tmp_path):
    write_case(tmp_path / 'src', 'ct0', ct=True)
    result = pack('--source', tmp_path / 'src', '--dest', tmp_path / 'ct.zip', '--window=-1000,1000',
                  '--dtype', 'uint16')
    assert result.exit_code == 0, result.output
    info = VolumeFolderDataset(str(tmp_path / 'ct.zip')).volume_info
    assert info.intensity == IntensityMapping('window', -1000, 1000, 'uint16')
    stored = VolumeFolderDataset(str(tmp_path / 'ct.zip'))[0][0][0]  # [D, H, W]
    hu = info.intensity.to_source(stored)
    source = np.asanyarray(nib.load(tmp_path / 'src' / 'ct0.nii.gz').dataobj).transpose(2, 1, 0)[:, ::-1, ::-1]
    assert np.abs(hu - np.clip(source, -1000, 1000)).max() < 2000 / 65535 + 1e-3  # One stored step: exact HU back.


@pytest.mark.slow
def test_joint_training_generates_label_maps_and_an_nnunet_dataset(tmp_path):
    assert pack('--source', 'phantom:8', '--dest', tmp_path / 'p.zip', '--size', '16x16x8',
                '--seg', 'phantom').exit_code == 0
    result = CliRunner().invoke(train.main, [f'--outdir={tmp_path / "runs"}', f'--data={tmp_path / "p.zip"}',
                                             f'--cfg={TINY_CFG}', '--batch=4', '--workers=0', '--metrics=none',
                                             '--kimg=0.008'])
    assert result.exit_code == 0, result.output
    run = next((tmp_path / 'runs').iterdir())
    assert run.name == '00000-p-seg-tiny-kimg0.008-batch4'
    snapshot = sorted(run.glob('network-snapshot-*.pkl'))[-1]
    out = CliRunner().invoke(generate.main, ['--network', str(snapshot), '--seeds', '0-1', '--outdir',
                                             str(tmp_path / 'synth'), '--preview'])
    assert out.exit_code == 0, out.output
    assert sorted(os.listdir(tmp_path / 'synth')) == ['seed0000.nii.gz', 'seed0000.png', 'seed0000_seg.nii.gz',
                                                      'seed0001.nii.gz', 'seed0001.png', 'seed0001_seg.nii.gz']
    image, seg = (nib.load(tmp_path / 'synth' / f'seed0000{s}.nii.gz') for s in ('', '_seg'))
    assert image.shape == seg.shape == (16, 16, 8) and np.allclose(image.affine, seg.affine)
    assert seg.get_data_dtype() == np.uint8 and set(np.unique(np.asanyarray(seg.dataobj))) <= {0, 1, 2}
    assert 'stored units of the training data (uint8' in out.output  # Percentile-clipped: says so.
    # The metrics measure the image channels only, against the images of the labelled dataset.
    import calc_metrics
    results = calc_metrics.calc_metrics(str(snapshot), ['mmd_full', 'msssim_gen4'])
    assert set(results[0].results) == {'mmd_full'} and set(results[1].results) == {'msssim_gen4', 'msssim_gen4_real'}

    nn = tmp_path / 'nnunet'
    out = CliRunner().invoke(generate.main, ['--network', str(snapshot), '--count', '3', '--outdir', str(nn),
                                             '--layout', 'nnunet'])
    assert out.exit_code == 0, out.output
    description = json.loads((nn / 'dataset.json').read_text())
    assert description['channel_names'] == {'0': 'image'} and description['numTraining'] == 3
    assert description['labels'] == {'background': 0, 'inner zone': 1, 'outer zone': 2}
    assert sorted(os.listdir(nn)) == ['dataset.json', 'imagesTr', 'label_mapping.json', 'labelsTr']
    assert json.loads((nn / 'label_mapping.json').read_text())['2'] == {'packed_value': 2, 'name': 'outer zone'}
    assert description['file_ending'] == '.nii.gz'
    assert sorted(os.listdir(nn / 'imagesTr')) == [f'seed{i:04d}_0000.nii.gz' for i in range(3)]
    assert sorted(os.listdir(nn / 'labelsTr')) == [f'seed{i:04d}.nii.gz' for i in range(3)]
    for i in range(3):
        a, b = (nib.load(nn / d / f'seed{i:04d}{s}.nii.gz') for d, s in (('imagesTr', '_0000'), ('labelsTr', '')))
        assert a.shape == b.shape and np.allclose(a.affine, b.affine)


def test_an_unlabelled_network_refuses_the_nnunet_layout(tmp_path):
    assert pack('--source', 'phantom:4', '--dest', tmp_path / 'p.zip', '--size', '16x16x8').exit_code == 0
    assert CliRunner().invoke(train.main, [f'--outdir={tmp_path / "runs"}', f'--data={tmp_path / "p.zip"}',
                                           f'--cfg={TINY_CFG}', '--batch=4', '--workers=0', '--metrics=none',
                                           '--kimg=0.004']).exit_code == 0
    snapshot = next((tmp_path / 'runs').glob('*/network-snapshot-*.pkl'))
    out = CliRunner().invoke(generate.main, ['--network', str(snapshot), '--count', '1', '--outdir',
                                             str(tmp_path / 'nn'), '--layout', 'nnunet'])
    assert out.exit_code == 2 and 'makes no label maps, which an nnU-Net dataset needs' in out.output
    assert not os.path.exists(tmp_path / 'nn')
    out = CliRunner().invoke(train.main, [f'--outdir={tmp_path / "r2"}', f'--data={tmp_path / "p.zip"}',
                                          '--seg=1', '--dry-run'])
    assert out.exit_code == 2 and 'holds no label maps; pack it with dataset_tool.py --seg' in out.output


def test_repacking_a_packed_dataset_keeps_its_record_labels_and_maps(labelled_source, tmp_path):
    (tmp_path / 'classes.csv').write_text('case0.nii.gz,1\ncase1.nii.gz,0\ncase2.nii.gz,1\n')
    first = pack('--source', labelled_source / 'src', '--dest', tmp_path / 'a.zip', '--seg', '*_seg.nii.gz',
                 '--seg-names', labelled_source / 'names.json', '--labels', tmp_path / 'classes.csv',
                 '--window=0,1.2', '--size', '20x24x10')
    assert first.exit_code == 0, first.output
    again = pack('--source', tmp_path / 'a.zip', '--dest', tmp_path / 'b.zip', '--size', '10x12x5')
    assert again.exit_code == 0, again.output
    (info_a, arrays_a), (info_b, arrays_b) = read_zip(tmp_path / 'a.zip'), read_zip(tmp_path / 'b.zip')
    record_a, record_b = info_a['volume_info'], info_b['volume_info']
    for key in ('direction', 'centre', 'intensity', 'channels', 'label_names'):
        assert record_a[key] == pytest.approx(record_b[key]) if key == 'centre' else record_a[key] == record_b[key]
    assert record_b['spacing'] == pytest.approx([2 * s for s in record_a['spacing']])
    assert info_b['labels'] == [[f'00000/vol0000000{i}.npy', c] for i, c in enumerate([1, 0, 1])]
    assert info_b['sources'] == info_a['sources'] and info_b['grids'][1][1] == pytest.approx(info_a['grids'][1][1])
    assert set(np.unique(arrays_b['00000/seg00000001.npy'])) == {0, 1, 2}
    # Stored values pass through: the halved volume's mean stays the original's (no second clip and rescale).
    a, b = arrays_a['00000/vol00000001.npy'].astype(float), arrays_b['00000/vol00000001.npy'].astype(float)
    assert abs(a.mean() - b.mean()) < 0.02 * 255
    refused = pack('--source', tmp_path / 'a.zip', '--dest', tmp_path / 'c.zip', '--seg', '*_seg.nii.gz')
    assert refused.exit_code == 1 and 'is a packed dataset' in refused.output and 'leave --seg out' in refused.output
    refused = pack('--source', tmp_path / 'a.zip', '--dest', tmp_path / 'c.zip', '--clip', '1,99')
    assert refused.exit_code == 1 and 'keeps its intensity mapping' in refused.output


def test_crop_to_the_body_centres_the_box_on_it(tmp_path):
    import SimpleITK as sitk
    os.makedirs(tmp_path / 'src')
    array = np.zeros((20, 40, 40), np.float32)  # [D, H, W]: a bright body off the centre of a dark field.
    array[5:15, 22:36, 4:16] = 1.0
    image = sitk.GetImageFromArray(array + np.random.default_rng(0).normal(0, 0.01, array.shape).astype(np.float32))
    sitk.WriteImage(image, str(tmp_path / 'src' / 'body.nii.gz'))
    result = pack('--source', tmp_path / 'src', '--dest', tmp_path / 'd.zip', '--crop', 'body', '--fov', '16,16,12',
                  '--clip', '0,100')
    assert result.exit_code == 0, result.output
    info, arrays = read_zip(tmp_path / 'd.zip')
    assert np.allclose(info['grids'][0][1], [9.5, 28.5, 9.5], atol=0.6)  # The body's box centre (x, y, z) in mm.
    inside = arrays['00000/vol00000000.npy'][0] > 128
    assert inside.sum() == 10 * 14 * 12 and inside[6, 8, 8]  # The whole body, in the middle of the box.


@pytest.mark.slow
def test_dry_run_says_the_generator_also_makes_the_label_channels(labelled_source, tmp_path):
    from tests.helpers.cli import run_cli
    data = tmp_path / 'd.zip'
    packed = run_cli(['dataset_tool.py', f'--source={labelled_source / "src"}', f'--dest={data}', '--size=16x16x8',
                      '--seg=*_seg.nii.gz', f'--seg-names={labelled_source / "names.json"}'])
    assert packed.returncode == 0, packed.stderr
    args = ['train.py', f'--outdir={tmp_path / "runs"}', f'--data={data}', f'--cfg={TINY_CFG}', '--dry-run',
            '--workers=0']
    result = run_cli(args)
    assert result.returncode == 0 and result.stderr == '', result.stderr
    assert ('Generated channels: 4 = 1 image channel (image) + 3 one-hot label channels (background, CZ+TZ, PZ); '
            'generate.py writes the label map beside each volume\n') in result.stdout
    left_out = CliRunner().invoke(train.main, [*args[1:], '--seg=0'])  # In-process: torch is loaded once.
    assert left_out.exit_code == 0, left_out.output
    assert ("Generated channels: 1 image channel (image) (the dataset's label maps are left out: --seg=0)\n"
            in left_out.output)
    assert not os.path.exists(tmp_path / 'runs')

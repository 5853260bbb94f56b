# SPDX-License-Identifier: Apache-2.0
"""Truncated, corrupted and wrong inputs: one line on stderr naming the file or option and what was expected, a
non-zero exit, no traceback and no output left behind."""

import io
import json
import os
import zipfile

import nibabel as nib
import numpy as np
import pytest

from tests.helpers.cli import assert_clean_failure, flip_member_byte, run_cli, snapshot_of_files, truncate
from tests.helpers.training import TRAIN

pytestmark = pytest.mark.slow  # fault injection: the CLIs as subprocesses


MEMBER = '00000/vol00000002.npy'


@pytest.fixture(scope='module')
def damaged(tmp_path_factory, phantoms):
    """Copies of the phantom dataset: cut in half, one volume's byte flipped (bad CRC-32), one volume resized."""
    root = tmp_path_factory.mktemp('damaged')
    truncate(phantoms, root / 'truncated.zip')
    flip_member_byte(phantoms, root / 'badcrc.zip', MEMBER)
    with zipfile.ZipFile(phantoms) as src, zipfile.ZipFile(root / 'mixed.zip', 'w') as dst:
        for name in src.namelist():
            data = src.read(name)
            if name == MEMBER:
                buffer = io.BytesIO()
                np.save(buffer, np.zeros((1, 8, 16, 12), np.uint8))
                data = buffer.getvalue()
            dst.writestr(name, data)
    return {name: str(root / f'{name}.zip') for name in ('truncated', 'badcrc', 'mixed')}


@pytest.mark.parametrize('kind, fragments', [
    ('truncated', ['--data', 'truncated.zip', 'not a readable zip archive']),
    ('badcrc', ['--data', 'badcrc.zip', MEMBER, 'CRC-32']),
    ('mixed', ['--data', 'mixed.zip', MEMBER, 'has shape [1, 8, 16, 12]', 'every volume must have one shape']),
])
def test_train_on_a_damaged_dataset(damaged, tmp_path, kind, fragments):
    result = run_cli(['train.py', f'--outdir={tmp_path / "runs"}', f'--data={damaged[kind]}', *TRAIN, '--kimg=0.004'])
    assert_clean_failure(result, *fragments)
    assert not os.path.exists(tmp_path / 'runs')


def test_metrics_on_a_dataset_with_a_bad_crc(network, damaged):
    result = run_cli(['calc_metrics.py', f'--network={network}', '--metrics=mmd4_full', f'--data={damaged["badcrc"]}'])
    assert_clean_failure(result, 'badcrc.zip', MEMBER, 'damaged')


def test_qc_filter_with_a_truncated_dataset(network, damaged, outdir):
    result = run_cli(['generate.py', f'--network={network}', '--count=2', f'--qc-data={damaged["truncated"]}',
                      '--qc-ssim=0.1', f'--outdir={outdir}'])
    assert_clean_failure(result, '--qc-data', 'truncated.zip', 'not a readable zip archive')
    assert os.listdir(outdir) == []


def test_augment_preview_of_a_dataset_with_a_bad_crc(damaged, outdir):
    result = run_cli(['-m', 'training.augment', '--data', damaged['badcrc'], '--dest', outdir / 'grid.png'])
    assert_clean_failure(result, 'badcrc.zip', MEMBER, 'damaged')
    assert os.listdir(outdir) == []


def test_generate_from_a_truncated_snapshot(network, tmp_path, outdir):
    truncate(network, tmp_path / 'cut.pkl')
    result = run_cli(['generate.py', f'--network={tmp_path / "cut.pkl"}', '--count=2', f'--outdir={outdir}'])
    assert_clean_failure(result, '--network', 'cut.pkl')
    assert os.listdir(outdir) == []


def test_metrics_with_a_detector_that_is_no_detector(network, tmp_path):
    (tmp_path / 'inception.pt').write_bytes(b'not a TorchScript file')
    result = run_cli(['calc_metrics.py', f'--network={network}', '--metrics=fid4_mid',
                      f'--inception={tmp_path / "inception.pt"}'], env=dict(DNNLIB_CACHE_DIR=str(tmp_path / 'c')))
    assert_clean_failure(result, '--inception', 'inception.pt', 'not a TorchScript file')


def test_generate_refuses_a_nan_truncation(network, outdir):
    result = run_cli(['generate.py', f'--network={network}', '--count=2', '--trunc=nan', f'--outdir={outdir}'])
    assert_clean_failure(result, '--trunc', '"nan" is not a finite number')
    assert result.returncode == 2 and os.listdir(outdir) == []


@pytest.mark.parametrize('kind, fragments', [
    ('nan', ['--target', 'target.nii.gz', '1 NaN or infinite voxel(s)']),
    ('constant', ['--target', 'target.nii.gz', 'constant intensity']),
])
def test_projector_refuses_targets_it_cannot_fit(network, tmp_path, outdir, kind, fragments):
    volume = np.full((16, 16, 8), 7.0, np.float32)
    if kind == 'nan':
        volume = np.random.default_rng(0).random((16, 16, 8)).astype(np.float32)
        volume[3, 4, 5] = np.nan  # The NIfTI reader of ITK would turn this into 0 unnoticed.
    nib.save(nib.Nifti1Image(volume, np.diag([1.0, 1.0, 2.0, 1.0])), tmp_path / 'target.nii.gz')
    result = run_cli(['projector.py', f'--network={network}', f'--target={tmp_path / "target.nii.gz"}',
                      '--num-steps=2', f'--outdir={outdir}'])
    assert_clean_failure(result, *fragments)
    assert os.listdir(outdir) == []


def test_augment_preview_refuses_a_probability_above_one(phantoms, outdir):
    result = run_cli(['-m', 'training.augment', '--data', phantoms, '--p', '2', '--dest', outdir / 'grid.png'])
    assert_clean_failure(result, '--p', '2.0 is not in the range 0<=x<=1')
    assert os.listdir(outdir) == []

#----------------------------------------------------------------------------
# Packing.


def write_cases(folder, count: int = 3) -> None:
    os.makedirs(folder, exist_ok=True)
    for i in range(count):
        volume = np.random.default_rng(i).random((16, 16, 8)).astype(np.float32)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), folder / f'case{i}.nii.gz')


def test_pack_with_a_truncated_volume_names_it_and_writes_nothing(tmp_path, outdir):
    write_cases(tmp_path / 'src')
    truncate(tmp_path / 'src' / 'case1.nii.gz', tmp_path / 'src' / 'case1.nii.gz.cut')
    os.replace(tmp_path / 'src' / 'case1.nii.gz.cut', tmp_path / 'src' / 'case1.nii.gz')
    result = run_cli(['dataset_tool.py', f'--source={tmp_path / "src"}', f'--dest={outdir / "d.zip"}'])
    assert_clean_failure(result, '1 of 3 inputs could not be packed', '--on-error=skip')
    assert 'failed case1.nii.gz:' in result.stdout and 'is truncated' in result.stdout
    assert os.listdir(outdir) == []


def test_pack_with_nan_voxels_names_the_file(tmp_path, outdir):
    write_cases(tmp_path / 'src', count=1)
    volume = np.ones((16, 16, 8), np.float32)
    volume[0, 0, 0] = np.inf
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / 'src' / 'bad.nii.gz')
    result = run_cli(['dataset_tool.py', f'--source={tmp_path / "src"}', f'--dest={outdir / "d.zip"}'])
    assert_clean_failure(result, '1 of 2 inputs could not be packed')
    assert 'failed bad.nii.gz:' in result.stdout and '1 NaN or infinite voxel(s)' in result.stdout
    assert os.listdir(outdir) == []


def test_pack_refuses_to_overwrite(phantoms, tmp_path):
    before = snapshot_of_files(os.path.dirname(phantoms))
    result = run_cli(['dataset_tool.py', '--source=phantom:2', f'--dest={phantoms}', '--size=16x16x8'])
    assert_clean_failure(result, '--dest', 'phantoms.zip', 'exists; pass --overwrite')
    assert snapshot_of_files(os.path.dirname(phantoms)) == before

#----------------------------------------------------------------------------
# Resuming.


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory, phantoms):
    outdir = tmp_path_factory.mktemp('runs')
    result = run_cli(['train.py', f'--outdir={outdir}', f'--data={phantoms}', *TRAIN, '--kimg=0.008'])
    assert result.returncode == 0, result.stderr
    return outdir, outdir / os.listdir(outdir)[0]


def test_resume_latest_on_another_shape_touches_nothing(finished_run, tmp_path):
    outdir, run_dir = finished_run
    other = tmp_path / 'other.zip'
    assert run_cli(['dataset_tool.py', '--source=phantom:4', f'--dest={other}', '--size=32x16x8']).returncode == 0
    before = snapshot_of_files(run_dir)
    result = run_cli(['train.py', f'--outdir={outdir}', f'--data={other}', *TRAIN, '--kimg=0.016', '--resume=latest'])
    assert_clean_failure(result, 'Cannot resume from', 'network-snapshot-000000_008.pkl',
                         'the snapshot is for 16x16x8 volumes', 'these options give 32x16x8 volumes')
    assert snapshot_of_files(run_dir) == before and os.listdir(outdir) == [run_dir.name]


def test_resume_latest_with_a_truncated_training_state(finished_run, tmp_path):
    import shutil
    outdir = tmp_path / 'runs'
    shutil.copytree(finished_run[0], outdir)
    run_dir = outdir / finished_run[1].name
    truncate(run_dir / 'training-state-000000_008.pt', run_dir / 'cut')
    os.replace(run_dir / 'cut', run_dir / 'training-state-000000_008.pt')
    before = snapshot_of_files(run_dir)
    result = run_cli(['train.py', f'--outdir={outdir}', f'--data={json.load(open(run_dir / "training_options.json"))["training_set_kwargs"]["path"]}',
                      *TRAIN, '--kimg=0.016', '--resume=latest'])
    assert_clean_failure(result, 'Cannot resume', 'training-state-000000_008.pt is damaged',
                         'move it and its network snapshot away')
    assert snapshot_of_files(run_dir) == before


def test_pack_a_metaimage_whose_data_file_is_missing(tmp_path, outdir):
    import SimpleITK as sitk
    os.makedirs(tmp_path / 'src')
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((8, 16, 16), np.float32)), str(tmp_path / 'src' / 'a.mhd'))
    os.remove(tmp_path / 'src' / 'a.raw')  # ITK itself would print an extra line that Python cannot catch.
    result = run_cli(['dataset_tool.py', f'--source={tmp_path / "src"}', f'--dest={outdir / "d.zip"}',
                      '--on-error=stop'])
    assert_clean_failure(result, 'a.mhd', 'its data file', 'a.raw does not exist')
    assert os.listdir(outdir) == []


def test_train_into_an_outdir_below_a_file(phantoms, tmp_path):
    (tmp_path / 'file').write_text('')
    result = run_cli(['train.py', f'--outdir={tmp_path / "file" / "runs"}', f'--data={phantoms}', *TRAIN,
                      '--kimg=0.004'])
    assert_clean_failure(result, 'cannot write', str(tmp_path / 'file' / 'runs'), 'Not a directory')

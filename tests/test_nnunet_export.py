# SPDX-License-Identifier: Apache-2.0
"""generate.py --layout=nnunet, run as a user runs it: label maps packed with the values 1, 7, 8, 9 come out as an
nnU-Net v2 raw dataset with the labels 0..4 (nnU-Net needs them consecutive), a mapping back to the packed values,
counts that match the files, and nnU-Net's own integrity check passing where nnunetv2 is installed."""

import importlib.util
import json
import os
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import generate
from tests.helpers.cli import assert_clean_failure, run_cli
from tests.helpers.networks import tiny_network, write_snapshot
from tests.helpers.volumes import PACKED_NAMES
from volumes.contract import VolumeInfo


@pytest.fixture(scope='module')
def export(labelled, tmp_path_factory):
    """The nnU-Net export of seeds 0-2 and, for comparison, the same seeds in the files layout."""
    root = tmp_path_factory.mktemp('export')
    for layout in ('nnunet', 'files'):
        result = run_cli(['generate.py', f'--network={labelled["pkl"]}', '--count=3', f'--layout={layout}',
                          f'--outdir={root / layout}'])
        assert result.returncode == 0, result.stderr[-2000:]
    return root


def read(path) -> np.ndarray:
    return np.asanyarray(nib.load(path).dataobj)


@pytest.mark.slow
def test_labels_are_numbered_consecutively_and_mapped_back(export):
    nn = export / 'nnunet'
    assert sorted(os.listdir(nn)) == ['dataset.json', 'imagesTr', 'label_mapping.json', 'labelsTr']
    description = json.loads((nn / 'dataset.json').read_text())
    assert description['labels'] == {'background': 0, 'gland': 1, 'lesion': 2, 'vessel': 3, 'bone': 4}
    assert description['numTraining'] == 3 == len(os.listdir(nn / 'imagesTr')) == len(os.listdir(nn / 'labelsTr'))
    mapping = json.loads((nn / 'label_mapping.json').read_text())
    assert mapping == {'0': {'packed_value': 0, 'name': 'background'}, '1': {'packed_value': 1, 'name': 'gland'},
                       '2': {'packed_value': 7, 'name': 'lesion'}, '3': {'packed_value': 8, 'name': 'vessel'},
                       '4': {'packed_value': 9, 'name': 'bone'}}
    packed_of = np.array([mapping[str(i)]['packed_value'] for i in range(5)])
    seen = set()
    for i in range(3):
        nnunet_labels = read(nn / 'labelsTr' / f'seed{i:04d}.nii.gz')
        packed = read(export / 'files' / f'seed{i:04d}_seg.nii.gz')  # The files layout keeps the packed values.
        assert set(np.unique(nnunet_labels)) <= {0, 1, 2, 3, 4} and set(np.unique(packed)) <= {0, 1, 7, 8, 9}
        assert np.array_equal(packed_of[nnunet_labels], packed)  # Voxel for voxel the same labels, renumbered.
        seen |= set(np.unique(nnunet_labels).tolist())
        image = nib.load(nn / 'imagesTr' / f'seed{i:04d}_0000.nii.gz')
        assert np.array_equal(np.asanyarray(image.dataobj), read(export / 'files' / f'seed{i:04d}.nii.gz'))
        assert np.allclose(image.affine, nib.load(nn / 'labelsTr' / f'seed{i:04d}.nii.gz').affine)
    assert seen == {0, 1, 2, 3, 4}  # The untrained network draws every label, so each renumbering is exercised.


def nnunet_check(folder, tmp_path):
    """nnU-Net v2's own verify_dataset_integrity on `folder`, in a fresh process as nnU-Net runs it."""
    code = ('import sys\n'
            'from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity\n'
            'verify_dataset_integrity(sys.argv[1], num_processes=1)\n')
    env = {name: str(tmp_path / name) for name in ('nnUNet_raw', 'nnUNet_preprocessed', 'nnUNet_results')}
    return run_cli(['-c', code, folder], env=env)


@pytest.mark.skipif(importlib.util.find_spec('nnunetv2') is None,
                    reason='nnunetv2 is not installed (pip install --no-deps nnunetv2==2.8.1 pandas batchgenerators '
                           'acvl_utils: its own requirements would replace torch)')
def test_nnunet_v2_integrity_check_passes(export, tmp_path):
    result = nnunet_check(export / 'nnunet', tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert 'verify_dataset_integrity Done' in result.stdout
    assert 'Error' not in result.stdout and 'Warning' not in result.stdout, result.stdout[-3000:]  # Also no warning.
    # The export before the fix, with the packed values 1, 7, 8, 9 as labels, is refused by the same check (which
    # tests the labels before it starts its worker processes, so it can run here).
    old = tmp_path / 'old'
    shutil.copytree(export / 'nnunet', old)
    description = json.loads((old / 'dataset.json').read_text())
    description['labels'] = {'background': 0, **{name: value for value, name in PACKED_NAMES.items()}}
    (old / 'dataset.json').write_text(json.dumps(description))
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    with pytest.raises(AssertionError, match='consecutive order'):
        verify_dataset_integrity(str(old), num_processes=1)


@pytest.mark.slow
def test_counts_follow_the_files_after_an_overwrite(labelled, export, tmp_path):
    nn = tmp_path / 'nn'
    shutil.copytree(export / 'nnunet', nn)
    refused = run_cli(['generate.py', f'--network={labelled["pkl"]}', '--count=2', '--layout=nnunet',
                       f'--outdir={nn}'])
    assert_clean_failure(refused, '--outdir', 'already holds 4 entries', '--overwrite')
    assert json.loads((nn / 'dataset.json').read_text())['numTraining'] == 3
    result = run_cli(['generate.py', f'--network={labelled["pkl"]}', '--count=2', '--layout=nnunet',
                      f'--outdir={nn}', '--overwrite'])
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((nn / 'dataset.json').read_text())['numTraining'] == 2
    assert sorted(os.listdir(nn / 'imagesTr')) == ['seed0000_0000.nii.gz', 'seed0001_0000.nii.gz']
    assert sorted(os.listdir(nn / 'labelsTr')) == ['seed0000.nii.gz', 'seed0001.nii.gz']


def test_the_qc_filter_keeps_the_counts_right(labelled, tmp_path):
    # The real data for the QC filter is seed 1's own image, so a threshold of 0.99 keeps seed 1 alone.
    G = tiny_network(labelled['info'])
    with torch.no_grad():
        volume = G(torch.from_numpy(np.random.RandomState(1).randn(1, G.z_dim)).float(), torch.zeros([1, 0]),
                   noise_mode='const')[0, 0].numpy()
    real = tmp_path / 'real'
    real.mkdir()
    (real / 'dataset.json').write_text(json.dumps(dict(format='stylegan2-ada-3d/1', dtype='uint8')))
    np.save(real / 'vol0.npy', np.rint((volume + 1) * 127.5).clip(0, 255).astype(np.uint8)[None])  # [C, D, H, W]
    result = CliRunner().invoke(generate.main, ['--network', labelled['pkl'], '--seeds', '0-3', '--layout', 'nnunet',
                                                '--qc-data', str(real), '--qc-ssim', '0.99', '--outdir',
                                                str(tmp_path / 'nn')])
    assert result.exit_code == 0 and 'dropped 3' in result.output, result.output
    assert json.loads((tmp_path / 'nn' / 'dataset.json').read_text())['numTraining'] == 1
    assert os.listdir(tmp_path / 'nn' / 'imagesTr') == ['seed0001_0000.nii.gz']
    assert os.listdir(tmp_path / 'nn' / 'labelsTr') == ['seed0001.nii.gz']


@pytest.mark.parametrize('names, fragment', [
    ({1: 'zone', 7: 'zone'}, 'the label name "zone" names the packed values 1 and 7'),
    ({1: 'background'}, 'the label name "background" names the packed values 0 and 1'),
    ({1: 'ignore'}, 'the label name "ignore" means unannotated voxels'),
])
def test_label_names_nnunet_cannot_tell_apart_are_refused(labelled, tmp_path, names, fragment):
    info = VolumeInfo(spacing=(1.0, 1.0, 2.0), label_names=names)
    pkl = write_snapshot(tmp_path / 'G.pkl', tiny_network(info))
    result = CliRunner().invoke(generate.main, ['--network', pkl, '--count', '1', '--layout', 'nnunet', '--outdir',
                                                str(tmp_path / 'nn')])
    assert result.exit_code == 2 and fragment in result.output and '--layout' in result.output, result.output
    assert not os.path.exists(tmp_path / 'nn')


def test_a_case_written_by_someone_else_stops_the_export(labelled, tmp_path):
    # dataset.json must count what is there: a case another process put into imagesTr and labelsTr is not
    # counted silently.
    import click

    from training import generation
    writer = generation.OutputWriter(str(tmp_path), 'nii.gz', labelled['info'], layout='nnunet')
    G = tiny_network(labelled['info'])
    with torch.no_grad():
        volume = G(torch.zeros([1, G.z_dim]), torch.zeros([1, 0]), noise_mode='const')[0].numpy()
    writer.write(volume, 'seed0000')
    ours = {'imagesTr': 'seed0000_0000.nii.gz', 'labelsTr': 'seed0000.nii.gz'}
    theirs = {'imagesTr': 'other_0000.nii.gz', 'labelsTr': 'other.nii.gz'}
    for folder in ours:
        shutil.copy(tmp_path / folder / ours[folder], tmp_path / folder / theirs[folder])
    with pytest.raises(click.ClickException, match='holds 2 cases in imagesTr and 2 in labelsTr, but this run '
                                                   'wrote 1'):
        writer.close()
    assert not os.path.exists(tmp_path / 'dataset.json')
    for folder in theirs:
        os.remove(tmp_path / folder / theirs[folder])
    writer.close()
    assert json.loads((tmp_path / 'dataset.json').read_text())['numTraining'] == 1

# SPDX-License-Identifier: Apache-2.0
"""One run per output folder, run as a user runs the tools: generate.py, style_mixing.py and projector.py refuse a
used --outdir with one line and leave it as it was; --overwrite first removes that tool's own earlier outputs (and
nothing else), so the folder then holds the new run's files and the user's own files only."""

import json
import os

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

import generate
import projector
import style_mixing
from tests.helpers.cli import assert_clean_failure, run_cli
from tests.helpers.networks import SHAPE, SPACING, tiny_generator, write_snapshot


def files_in(folder) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime_ns)} of every file under folder, to show that a refused run touched nothing."""
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            found[os.path.relpath(path, folder)] = (os.stat(path).st_size, os.stat(path).st_mtime_ns)
    return found


@pytest.fixture(scope='module')
def unlabelled(tmp_path_factory) -> str:
    """A network without label maps, with another spacing (0.5x0.75x3 mm) than the labelled one."""
    root = tmp_path_factory.mktemp('unlabelled')
    return write_snapshot(root / 'G.pkl', tiny_generator(), root / 'gone.zip')


@pytest.mark.slow
def test_generate_refuses_a_used_folder_and_overwrite_leaves_only_the_new_run(labelled, unlabelled, tmp_path):
    out = tmp_path / 'synth'
    first = CliRunner().invoke(generate.main, ['--network', labelled['pkl'], '--seeds', '0-1', '--preview',
                                               '--outdir', str(out)])
    assert first.exit_code == 0, first.output
    assert sorted(os.listdir(out)) == ['seed0000.nii.gz', 'seed0000.png', 'seed0000_seg.nii.gz',
                                       'seed0001.nii.gz', 'seed0001.png', 'seed0001_seg.nii.gz']
    (out / 'notes.txt').write_text('the user\'s own file\n')
    before = files_in(out)

    refused = run_cli(['generate.py', f'--network={unlabelled}', '--seeds=0', f'--outdir={out}'])
    assert_clean_failure(refused, '--outdir', str(out), 'already holds 7 entries', 'pass --overwrite')
    assert 'Wrote' not in refused.stdout and files_in(out) == before

    again = run_cli(['generate.py', f'--network={unlabelled}', '--seeds=0', f'--outdir={out}', '--overwrite'])
    assert again.returncode == 0 and 'Wrote 1 volumes' in again.stdout, again.stderr[-2000:]
    # The labelled model's seed0000_seg.nii.gz (another spacing) is gone: radiomics.py would pair it by name.
    assert sorted(os.listdir(out)) == ['notes.txt', 'seed0000.nii.gz']
    assert np.allclose(nib.affines.voxel_sizes(nib.load(out / 'seed0000.nii.gz').affine), SPACING)
    assert (out / 'notes.txt').read_text() == 'the user\'s own file\n'


@pytest.mark.slow
def test_style_mixing_refuses_a_used_folder_and_overwrite_removes_its_own_outputs(unlabelled, tmp_path):
    out = tmp_path / 'mix'
    out.mkdir()
    for name in ('0-5.nii.gz', '0-5_seg.nii.gz', 'grid.png', 'seed0000.nii.gz', 'notes.txt'):
        (out / name).write_bytes(b'an earlier run\'s ' + name.encode())  # seed0000 is generate.py's, not its own.
    before = files_in(out)
    args = ['style_mixing.py', f'--network={unlabelled}', '--rows=1', '--cols=6', '--styles=0-2', f'--outdir={out}']
    assert_clean_failure(run_cli(args), '--outdir', 'already holds 5 entries', 'pass --overwrite')
    assert files_in(out) == before

    result = run_cli([*args, '--overwrite'])
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(os.listdir(out)) == ['1-6.nii.gz', 'grid.png', 'notes.txt', 'seed0000.nii.gz']
    assert (out / 'grid.png').read_bytes().startswith(b'\x89PNG')  # The new grid, not the earlier file.
    assert (out / 'seed0000.nii.gz').read_bytes() == b'an earlier run\'s seed0000.nii.gz'


@pytest.mark.slow
def test_projector_refuses_a_used_folder_and_overwrite_removes_its_own_outputs(unlabelled, tmp_path):
    out = tmp_path / 'proj'
    out.mkdir()
    for name in ('projected_w.npz', 'proj.nii.gz', 'proj_seg.nii.gz', 'proj.png', 'proj00.nii.gz', 'notes.txt'):
        (out / name).write_bytes(b'an earlier run\'s ' + name.encode())  # proj00 is generate.py's rendering.
    before = files_in(out)
    target = tmp_path / 'target.npy'
    np.save(target, np.random.default_rng(0).random(SHAPE).astype(np.float32))
    args = ['projector.py', f'--network={unlabelled}', f'--target={target}', '--num-steps=1', f'--outdir={out}']
    assert_clean_failure(run_cli(args), '--outdir', 'already holds 6 entries', 'pass --overwrite')
    assert files_in(out) == before

    result = run_cli([*args, '--overwrite'])
    assert result.returncode == 0, result.stderr[-2000:]
    # The stale label map of a labelled model's projection is gone; generate.py's proj00 and the user's file stay.
    assert sorted(os.listdir(out)) == ['notes.txt', 'proj.nii.gz', 'proj.png', 'proj00.nii.gz', 'projected_w.npz']
    assert nib.load(out / 'proj.nii.gz').shape == SHAPE[::-1]
    assert (out / 'proj00.nii.gz').read_bytes() == b'an earlier run\'s proj00.nii.gz'


def test_overwrite_replaces_an_nnunet_export_with_files(labelled, tmp_path):
    out = str(tmp_path / 'out')
    assert CliRunner().invoke(generate.main, ['--network', labelled['pkl'], '--count', '2', '--layout', 'nnunet',
                                              '--outdir', out]).exit_code == 0
    result = CliRunner().invoke(generate.main, ['--network', labelled['pkl'], '--seeds', '5', '--outdir', out,
                                                '--overwrite'])
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(out)) == ['seed0005.nii.gz', 'seed0005_seg.nii.gz']


def test_overwrite_spares_a_dataset_json_generate_did_not_write(unlabelled, tmp_path):
    out = tmp_path / 'Dataset001_Real'  # A real nnU-Net dataset given as --outdir by mistake.
    (out / 'imagesTr').mkdir(parents=True)
    (out / 'imagesTr' / 'case_0000.nii.gz').write_bytes(b'a real image')
    (out / 'dataset.json').write_text(json.dumps(dict(labels={'background': 0, 'tumour': 1}, numTraining=1)))
    before = files_in(out)
    result = CliRunner().invoke(generate.main, ['--network', unlabelled, '--seeds', '0', '--outdir', str(out),
                                                '--overwrite'])
    assert result.exit_code == 2 and 'dataset.json that generate.py did not write' in result.output, result.output
    assert files_in(out) == before


def test_tilde_in_outdir_means_the_home_folder(unlabelled, tmp_path, monkeypatch):
    home, cwd = tmp_path / 'home', tmp_path / 'cwd'
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv('HOME', str(home))
    monkeypatch.chdir(cwd)
    np.save(tmp_path / 'target.npy', np.random.default_rng(0).random(SHAPE).astype(np.float32))
    for name, command, args in (('synth', generate.main, ['--seeds', '0']),
                                ('mix', style_mixing.main, ['--rows', '0', '--cols', '1']),
                                ('proj', projector.main, ['--target', str(tmp_path / 'target.npy'),
                                                          '--num-steps', '1'])):
        result = CliRunner().invoke(command, ['--network', unlabelled, '--outdir', f'~/{name}', *args])
        assert result.exit_code == 0, result.output
    assert os.listdir(home / 'synth') == ['seed0000.nii.gz']
    assert sorted(os.listdir(home / 'mix')) == ['0-1.nii.gz', 'grid.png']
    assert sorted(os.listdir(home / 'proj')) == ['proj.nii.gz', 'proj.png', 'projected_w.npz']
    assert os.listdir(cwd) == []  # No folder named '~'.

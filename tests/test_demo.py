# SPDX-License-Identifier: Apache-2.0
"""demo.py's check (organ contrast and label-map Dice of generated volumes against the real phantoms) on volumes
whose answer is known, and its step timing, which benchmarks/demo_time.py reads back."""

import os
import sys

import click
import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

import dataset_tool
import demo
from tests.helpers.cli import run_cli
from training.dataset import VolumeFolderDataset

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'benchmarks'))
import demo_time  # noqa: E402 (benchmarks/ is not a package on the path)


@pytest.fixture(scope='module')
def phantoms(tmp_path_factory):
    """A labelled phantom zip at 16x16x8 (the demo's data, smaller) and its volumes and label maps [D, H, W]."""
    path = str(tmp_path_factory.mktemp('demo') / 'phantoms.zip')
    result = CliRunner().invoke(dataset_tool.main, ['--source=phantom:6', f'--dest={path}', '--size=16x16x8',
                                                    '--seg=phantom'])
    assert result.exit_code == 0, result.output
    dataset = VolumeFolderDataset(path, load_seg=True)
    pairs = [(volume[0], volume[1]) for volume, _ in (dataset[i] for i in range(len(dataset)))]
    return path, pairs


def write_generated(folder, pairs) -> str:
    """Volumes and label maps [D, H, W] as generate.py names them (seedNNNN.nii.gz, seedNNNN_seg.nii.gz)."""
    os.makedirs(folder, exist_ok=True)
    for i, (volume, labels) in enumerate(pairs):
        for suffix, array in (('', volume.astype(np.float32)), ('_seg', labels.astype(np.uint8))):
            path = os.path.join(folder, f'seed{i:04d}{suffix}.nii.gz')
            nib.save(nib.Nifti1Image(array.transpose(2, 1, 0), np.eye(4)), path)  # NIfTI x, y, z
    return str(folder)


def test_check_passes_for_volumes_like_the_real_phantoms(phantoms, tmp_path, capsys):
    data, pairs = phantoms
    demo.check(write_generated(tmp_path / 'gen', pairs), data)
    out = capsys.readouterr().out
    assert 'PASS:' in out
    contrast = float(out.split('organ contrast: generated ')[1].split(',')[0])
    dice = float(out.split('label map Dice: generated ')[1].split(',')[0])
    assert 0.3 < contrast < 0.9 and 0.6 < dice <= 1  # The real phantoms' own values.


def test_check_fails_without_an_organ(phantoms, tmp_path):
    data, pairs = phantoms
    rng = np.random.default_rng(0)
    noise = [(rng.normal(0, 1, volume.shape), labels) for volume, labels in pairs]
    with pytest.raises(click.ClickException, match='do not show the phantom organ brighter than background'):
        demo.check(write_generated(tmp_path / 'gen', noise), data)


def test_check_fails_when_the_label_maps_miss_the_organ(phantoms, tmp_path):
    data, pairs = phantoms
    shifted = [(volume, np.roll(labels, labels.shape[2] // 2, axis=2)) for volume, labels in pairs]  # Off to a side.
    with pytest.raises(click.ClickException, match='the generated label maps do not cover the organ'):
        demo.check(write_generated(tmp_path / 'gen', shifted), data)


def test_steps_are_timed_and_the_benchmark_reads_them(capsys):
    timings = {}
    demo.run(timings, 'Count', ['-c', 'sum(range(3_000_000))'])
    out = capsys.readouterr().out
    (step, wall, cpu), = demo_time.parse_steps(out)
    assert step == 'Count' and wall == round(timings['Count'][0]) and cpu == round(timings['Count'][1])
    assert 0 < timings['Count'][1] < 30 and timings['Count'][0] > 0  # The child's own CPU time was counted.
    timings['Other'] = (2.0, 1.0)
    demo.print_timings(timings)
    last = capsys.readouterr().out.strip().splitlines()[-1].split()
    assert last[:2] == ['all', 'steps'] and float(last[2]) == round(timings['Count'][0] + 2)


def test_a_failing_step_stops_the_demo():
    with pytest.raises(click.ClickException, match='step "Fail" failed \\(exit code 3\\)'):
        demo.run({}, 'Fail', ['-c', 'raise SystemExit(3)'])


def test_steps_run_on_one_thread_unless_the_caller_chose(monkeypatch, capfd):
    show = ['-c', 'import torch; print("threads", torch.get_num_threads())']
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    demo.run({}, 'Threads', show)
    assert 'threads 1\n' in capfd.readouterr().out
    monkeypatch.setenv('OMP_NUM_THREADS', '2')
    demo.run({}, 'Threads', show)
    assert 'threads 2\n' in capfd.readouterr().out


def test_demo_help_says_what_how_long_and_where():
    result = run_cli(['demo.py', '--help'], timeout=60)
    assert result.returncode == 0 and result.stderr == '', result.stderr
    text = ' '.join(result.stdout.split())
    assert 'Run the whole project on built-in phantom data' in text
    for step in ('pack --volumes phantoms with their organ masks', 'train a small model', 'export the generator',
                 'generate 16 volumes with their label maps', 'export an nnU-Net dataset', 'exit code 1 if not'):
        assert step in text, step
    assert 'It takes about 3 minutes with the defaults on an idle 2-core CPU, up to 8 on a slow or busy one' in text
    assert 'Everything is written under --outdir' in text
    for path in ('phantoms.zip', 'runs/NNNNN-phantoms-.../', 'G.pt', 'generated/', 'mixing/',
                 'nnunet/Dataset501_PhantomSynth/'):
        assert f'\n    {path} ' in result.stdout, path  # One row per output, indented as a table.

# SPDX-License-Identifier: Apache-2.0
"""downstream.py run as a user runs it, on labelled phantoms (16x16x8, a small U-Net, 80 steps on the CPU).

A segmenter trained on real phantoms segments the real test phantoms clearly; a synthetic set that is in fact unseen
real phantoms scores about as well; a synthetic set whose label maps are moved off their organs scores far below,
and label consistency shows why. Bad input stops with one line. The nnU-Net backend runs its three commands (fakes
on PATH that record their arguments and copy the label maps as predictions) and says how to install nnU-Net when it
is missing."""

import csv
import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

import dataset_tool
import legacy
from tests.helpers.cli import REPO, assert_clean_failure, run_cli, snapshot_of_files
from tests.helpers.volumes import write_phantoms_as_generated
from training.networks import Generator
from volumes.contract import VolumeInfo
from volumes.packed import PackedDataset

pytestmark = pytest.mark.slow  # each test trains segmenters through the CLI


SIZE = (16, 16, 8)  # x, y, z: 4 x 4 x 9 mm voxels over the phantom's field of view.
TRAIN = ['--iters=80', '--width=4', '--lr=1e-2', '--batch=4', '--seeds=1', '--no-progress']
NAMES = ['inner zone', 'outer zone']




@pytest.fixture(scope='module')
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp('downstream')
    real = str(root / 'real.zip')
    dataset_tool.pack_dataset('phantom:24', real, size=SIZE, seg='phantom')
    return dict(real=real, root=root, unseen=write_phantoms_as_generated('phantom:20:1000', root / 'unseen', SIZE),
                moved=write_phantoms_as_generated('phantom:20:1000', root / 'moved', SIZE, shift=4))


def read_results(outdir) -> tuple[list[dict], dict]:
    with open(os.path.join(outdir, 'results.csv'), newline='') as f:
        rows = list(csv.DictReader(f))
    with open(os.path.join(outdir, 'summary.json')) as f:
        summary = json.load(f)
    with open(os.path.join(outdir, 'dice.png'), 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    return rows, summary


def run_ok(*args: str) -> tuple[str, list[dict], dict, str]:
    """(outdir, results.csv rows, summary.json, stdout) of a successful run."""
    outdir = next(a.split('=', 1)[1] for a in args if a.startswith('--outdir='))
    result = run_cli(['downstream.py', *args])
    assert result.returncode == 0, result.stderr
    return (outdir, *read_results(outdir), result.stdout)


@pytest.fixture(scope='module')
def unseen(inputs):
    """real, and synthetic made of unseen real phantoms."""
    return run_ok(f'--real={inputs["real"]}', f'--synthetic={inputs["unseen"]}', '--regimes=real,synthetic',
                  f'--outdir={inputs["root"] / "unseen-out"}', *TRAIN)

#----------------------------------------------------------------------------
# The experiment.


def test_real_data_is_useful_and_unseen_real_phantoms_as_synthetic_score_about_the_same(unseen):
    outdir, rows, summary, stdout = unseen
    regimes = summary['regimes']
    assert list(regimes) == ['real', 'synthetic']
    real, synthetic = regimes['real'], regimes['synthetic']
    assert real['dice'] > 0.6, real  # 0.714 measured; predicting nothing scores 0.
    assert abs(synthetic['dice'] - real['dice']) < 0.12, (synthetic['dice'], real['dice'])  # 0.706 measured.
    for entry in regimes.values():
        assert entry['dice_ci95'][0] <= entry['dice'] <= entry['dice_ci95'][1]
        assert set(entry['per_label']) == set(NAMES) and entry['hd95'] > 0 and entry['hd95_missing'] == 0
    assert (real['train_real'], real['train_synthetic'], synthetic['train_real'], synthetic['train_synthetic']) == \
        (17, 0, 0, 20)
    # Label consistency: the real-trained segmenter on the generated volumes (real phantoms with their own label
    # maps) is about as good as on the real test cases.
    consistency = summary['label_consistency']
    assert consistency['segmenter'] == 'real' and consistency['real']['dice'] == real['dice']
    assert consistency['generated']['dice'] > 0.6 and consistency['generated']['cases'] == 20
    # results.csv: one row per regime, test case and label; the same test cases for every run, split by case.
    assert list(rows[0]) == ['regime', 'real_fraction', 'seed', 'case', 'label', 'dice', 'hd95']
    assert len(rows) == 2 * 7 * 2 and {r['real_fraction'] for r in rows} == {'1.0', '0.0'}
    split = summary['protocol']['split']
    assert {r['case'] for r in rows} == set(split['test'])
    assert sorted(split['train'] + split['test']) == sorted(f'phantom:{i}' for i in range(24))
    assert not set(split['train']) & set(split['test'])
    assert summary['protocol']['versions']['monai'] == '1.6.1'
    with open(os.path.join(outdir, 'label_consistency.csv'), newline='') as f:
        assert len(list(csv.DictReader(f))) == 20 * 2
    assert 'label consistency (real segmenter)' in stdout


def test_label_maps_moved_off_their_organs_score_clearly_below_real(inputs, unseen):
    _, _, summary, _ = run_ok(f'--real={inputs["real"]}', f'--synthetic={inputs["moved"]}', '--regimes=real,synthetic',
                              f'--outdir={inputs["root"] / "moved-out"}', *TRAIN)
    regimes = summary['regimes']
    assert regimes['synthetic']['dice'] < regimes['real']['dice'] - 0.3  # 0.000 against 0.714 measured.
    consistency = summary['label_consistency']
    assert consistency['generated']['dice'] < consistency['real']['dice'] - 0.3  # The labels are off the organs.
    # The same seeds in another process: the same split and the same numbers for the real regime.
    assert summary['protocol']['split'] == unseen[2]['protocol']['split']
    assert regimes['real'] == unseen[2]['regimes']['real']


def test_the_real_fraction_sweep_draws_nested_cases_for_real_and_mixed(inputs):
    _, rows, summary, stdout = run_ok(f'--real={inputs["real"]}', f'--synthetic={inputs["unseen"]}',
                                      '--regimes=real,mixed', '--real-fraction=0.25,1', '--iters=40',
                                      f'--outdir={inputs["root"] / "sweep-out"}', *TRAIN[1:])
    regimes = summary['regimes']
    assert list(regimes) == ['real@0.25', 'real@1', 'mixed@0.25', 'mixed@1']
    assert [(e['real_fraction'], e['train_real'], e['train_synthetic']) for e in regimes.values()] == \
        [(0.25, 4, 0), (1.0, 17, 0), (0.25, 4, 4), (1.0, 17, 17)]
    assert all(0 <= e['dice'] <= 1 for e in regimes.values())
    runs = {r['name']: r for r in summary['protocol']['runs']}
    assert set(runs['real@0.25']['real']) < set(runs['real@1']['real']) == set(summary['protocol']['split']['train'])
    assert runs['mixed@0.25']['real'] == runs['real@0.25']['real']  # The same real cases, plus synthetic ones.
    assert len(set(runs['mixed@1']['synthetic'])) == 17
    assert sorted({r['real_fraction'] for r in rows}) == ['0.25', '1.0'] and len(rows) == 4 * 7 * 2
    assert summary['label_consistency']['segmenter'] == 'real@1'
    assert 'mixed@0.25' in stdout

#----------------------------------------------------------------------------
# Bad input: one line, no output.


def tiny_export(path, info: VolumeInfo) -> str:
    torch.manual_seed(0)
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_shape=SIZE[::-1], img_channels=info.num_channels,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=128, channel_max=16),
                  volume_info=info.to_dict()).eval()
    legacy.export_network(G, {}, str(path))
    return str(path)


def test_bad_inputs_stop_with_one_line(inputs, tmp_path):
    real = inputs['real']
    plain = str(tmp_path / 'plain.zip')
    dataset_tool.pack_dataset('phantom:4', plain, size=SIZE)
    info = PackedDataset(real).volume_info
    other_names = tiny_export(tmp_path / 'G.pt', VolumeInfo(spacing=info.spacing,
                                                           label_names={1: 'gland', 2: 'outer zone'}))
    off_grid = write_phantoms_as_generated('phantom:2:50', tmp_path / 'off-grid', (16, 16, 4))
    out = tmp_path / 'out'
    cases = [
        ([f'--real={plain}'], ['--real', 'plain.zip holds no label maps', 'dataset_tool.py --seg']),
        ([f'--real={real}', f'--synthetic={other_names}'],
         ['--synthetic', 'G.pt makes labels 1 gland, 2 outer zone; --real has 1 inner zone, 2 outer zone']),
        ([f'--real={real}', f'--synthetic={off_grid}'],
         ['--synthetic', 'seed0000.nii.gz is on a 16x16x4 grid of 4x4x18 mm voxels; --real is 16x16x8 of 4x4x9 mm']),
        ([f'--real={real}', '--regimes=mixed'], ['--regimes', 'need --synthetic']),
        ([f'--real={real}', '--real-fraction=0,1'], ['--real-fraction', 'shares in (0, 1]']),
        ([f'--real={real}', f'--synthetic={inputs["unseen"]}', '--regimes=mixed', '--synthetic-ratio=3'],
         ['--synthetic-ratio 3 asks for 51 synthetic volumes', '--synthetic holds 20']),
    ]
    for args, fragments in cases:
        result = run_cli(['downstream.py', *args, f'--outdir={out}', *TRAIN])
        assert_clean_failure(result, *fragments)
        assert not os.path.exists(out)
    used = tmp_path / 'used'  # A used output folder: refused, untouched.
    used.mkdir()
    (used / 'results.csv').write_text('regime\n')
    (used / 'notes.txt').write_text('mine\n')
    before = snapshot_of_files(used)
    result = run_cli(['downstream.py', f'--real={real}', f'--outdir={used}', *TRAIN])
    assert_clean_failure(result, '--outdir', 'already holds 2 entries', '--overwrite')
    assert snapshot_of_files(used) == before


def test_help_imports_no_torch():
    code = ('import runpy, sys\nsys.argv = ["downstream.py", "--help"]\ntry:\n    runpy.run_path(sys.argv[0], '
            'run_name="__main__")\nexcept SystemExit:\n    pass\nassert "torch" not in sys.modules\n')
    result = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0 and '--synthetic-ratio' in result.stdout, result.stderr

#----------------------------------------------------------------------------
# The nnU-Net backend.

FAKE_NNUNET = '''#!{python}
"""A stand-in for nnU-Net v2's commands: records its arguments; nnUNetv2_predict copies the label maps."""
import json, os, shutil, sys
name, args = os.path.basename(sys.argv[0]), sys.argv[1:]
env = {{key: os.environ.get(key) for key in ('nnUNet_raw', 'nnUNet_preprocessed', 'nnUNet_results')}}
with open(os.environ['FAKE_NNUNET_LOG'], 'a') as f:
    f.write(json.dumps(dict(command=name, args=args, env=env)) + '\\n')
if name == 'nnUNetv2_train' and os.environ.get('FAKE_NNUNET_FAIL'):
    print('RuntimeError: CUDA out of memory')
    sys.exit(1)
if name == 'nnUNetv2_predict':
    images, out = args[args.index('-i') + 1], args[args.index('-o') + 1]
    labels = os.path.join(os.path.dirname(images), 'labelsTs')
    os.makedirs(out, exist_ok=True)
    for fname in os.listdir(labels):
        shutil.copy(os.path.join(labels, fname), os.path.join(out, fname))
'''


@pytest.fixture
def fake_nnunet(tmp_path):
    """A folder with fake nnUNetv2_* commands, and the environment that puts them first on PATH."""
    folder = tmp_path / 'bin'
    folder.mkdir()
    script = folder / 'fake_nnunet.py'
    script.write_text(FAKE_NNUNET.format(python=sys.executable))
    script.chmod(0o755)
    for command in ('nnUNetv2_plan_and_preprocess', 'nnUNetv2_train', 'nnUNetv2_predict'):
        os.symlink(script, folder / command)
    log = tmp_path / 'calls.jsonl'
    return log, dict(PATH=f'{folder}{os.pathsep}/usr/bin{os.pathsep}/bin', FAKE_NNUNET_LOG=str(log))


def test_the_nnunet_backend_runs_plan_train_and_predict_per_run(inputs, fake_nnunet, tmp_path):
    log, env = fake_nnunet
    outdir = tmp_path / 'nnunet-out'
    result = run_cli(['downstream.py', f'--real={inputs["real"]}', f'--synthetic={inputs["unseen"]}',
                      '--regimes=real,mixed', '--backend=nnunet', f'--outdir={outdir}', '--seeds=1'], env=env)
    assert result.returncode == 0, result.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    root = str(outdir / 'nnunet')
    assert all(c['env'] == {'nnUNet_raw': f'{root}/raw', 'nnUNet_preprocessed': f'{root}/preprocessed',
                            'nnUNet_results': f'{root}/results'} for c in calls)
    tail = ['-c', '3d_fullres', '-f', 'all', '-tr', 'nnUNetTrainer', '-device', 'cpu']

    def predict(number: int, dataset: str, tag: str) -> tuple:
        return ('nnUNetv2_predict', ['-i', f'{root}/inputs/{tag}/imagesTs', '-o', f'{root}/predictions/{dataset}/{tag}',
                                     '-d', str(number), *tail])

    def fit(number: int) -> list[tuple]:
        return [('nnUNetv2_plan_and_preprocess', ['-d', str(number), '-c', '3d_fullres', '--verify_dataset_integrity']),
                ('nnUNetv2_train', [str(number), '3d_fullres', 'all', '-tr', 'nnUNetTrainer', '-device', 'cpu'])]
    assert [(c['command'], c['args']) for c in calls] == [
        *fit(1), predict(1, 'Dataset001_real-s0', 'test'), predict(1, 'Dataset001_real-s0', 'generated'),
        *fit(2), predict(2, 'Dataset002_mixed-s0', 'test')]
    for dataset, count in (('Dataset001_real-s0', 17), ('Dataset002_mixed-s0', 34)):
        folder = outdir / 'nnunet' / 'raw' / dataset
        description = json.loads((folder / 'dataset.json').read_text())
        assert description['labels'] == {'background': 0, 'inner zone': 1, 'outer zone': 2}
        assert description['numTraining'] == count and description['file_ending'] == '.nii.gz'
        assert len(os.listdir(folder / 'imagesTr')) == len(os.listdir(folder / 'labelsTr')) == count
    image = nib.load(outdir / 'nnunet' / 'raw' / 'Dataset002_mixed-s0' / 'imagesTr' / 'synth0020_0000.nii.gz')
    assert image.shape == SIZE and np.allclose(image.header.get_zooms(), (4, 4, 9))
    # The fake predicts the truth: every score is perfect, through the same MONAI metrics.
    rows, summary = read_results(outdir)
    assert len(rows) == 2 * 7 * 2 and all(float(r['dice']) == 1.0 and float(r['hd95']) == 0.0 for r in rows)
    assert summary['label_consistency']['generated']['dice'] == 1.0
    assert summary['protocol']['segmenter'] == {'trainer': 'nnUNetTrainer', 'configuration': '3d_fullres',
                                                'fold': 'all'}


def test_the_nnunet_backend_names_a_failed_command_and_its_log(inputs, fake_nnunet, tmp_path):
    log, env = fake_nnunet
    outdir = tmp_path / 'nnunet-out'
    result = run_cli(['downstream.py', f'--real={inputs["real"]}', '--backend=nnunet', f'--outdir={outdir}',
                      '--seeds=1'], env=dict(env, FAKE_NNUNET_FAIL='1'))
    line = assert_clean_failure(result, 'nnUNetv2_train failed (exit code 1) for Dataset001_real-s0',
                                'logs/Dataset001_real-s0-train.log', folders=[outdir])
    assert 'CUDA out of memory' in open(line.rsplit(' ', 1)[-1]).read()
    assert not (outdir / 'summary.json').exists()


def test_without_nnunet_the_backend_says_how_to_install_it(inputs, tmp_path):
    result = run_cli(['downstream.py', f'--real={inputs["real"]}', '--backend=nnunet', f'--outdir={tmp_path / "o"}'],
                     env=dict(PATH=f'/usr/bin{os.pathsep}/bin'))
    assert_clean_failure(result, '--backend nnunet needs nnU-Net v2', 'pip install nnunetv2==2.8.1')
    assert not os.path.exists(tmp_path / 'o')

# SPDX-License-Identifier: Apache-2.0
"""train.py as a user runs it, on tiny phantom volumes (CPU): option parsing and one-line errors, dry runs, runs
that write their outputs and resume exactly, two processes, preemption, metrics at snapshots and conditional runs."""

import glob
import json
import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

import legacy
import train
from tests.helpers.cli import REPO
from tests.helpers.training import FAST
from volumes.contract import LPS_DIRECTION


def run_train(args):
    result = CliRunner().invoke(train.main, args, catch_exceptions=False)
    return result


def test_dry_run_prints_options_and_writes_nothing(phantom_zip, tmp_path):
    result = run_train([f'--outdir={tmp_path}', f'--data={phantom_zip}', '--dry-run', *FAST, '--kimg=0.008'])
    assert result.exit_code == 0, result.output
    assert 'Dry run' in result.output and '"batch_size": 4' in result.output
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('text, message', [
    ('gama = 5', 'unknown key "gama"; did you mean "r1_gamma"?'),
    ('batchsize = 8', 'unknown key "batchsize"; did you mean "batch"?'),
    ('mb = 8', '"mb" is the official short name; write "batch"'),
    ('batch = 8.5', '"batch" must be an integer, got 8.5'),
    ('conditional = 1', '"conditional" must be true or false, got 1'),
    ('extends = "stylegan2"\nkimg = "long"', '"kimg" must be an integer or a number'),
    ('colour = "blue"', 'unknown key "colour"; valid keys: description, extends'),
])
def test_a_misspelt_or_mistyped_preset_key_is_a_one_line_error(phantom_zip, tmp_path, text, message):
    (tmp_path / 'mine.toml').write_text(text + '\n')
    result = CliRunner().invoke(train.main, [f'--outdir={tmp_path / "runs"}', f'--data={phantom_zip}', '--dry-run',
                                             f'--cfg={tmp_path / "mine.toml"}'])
    assert result.exit_code == 2 and result.output.count('\n') == 1, result.output
    assert result.output.startswith('Error: Invalid value for --cfg: ') and message in result.output
    assert str(tmp_path / 'mine.toml') in result.output


def test_dry_run_shows_sizes_as_xyz_and_the_block_schedule(phantom_zip, tmp_path):
    result = run_train([f'--outdir={tmp_path}', f'--data={phantom_zip}', '--dry-run', *FAST])
    assert result.exit_code == 0, result.output
    assert 'Volume size:        16x16x8 (x, y, z)' in result.output
    table = result.output[result.output.index('block  size XxYxZ'):]
    assert '1      8x8x8       2,2,2     32        x y z' in table and '2      16x16x8     2,2,1     32        x y' in table
    assert 'z (8) doubles in block 1 (depth schedule "early"): full size from block 1, at 8x8 in-plane.' in table


@pytest.mark.parametrize('args, message', [
    (['--cfg=nonexistent'], 'no preset'),
    (['--aug=fixed'], '--aug=fixed needs --p'),
    (['--p=0.3'], '--p can only be given with --aug=fixed'),
    (['--cond=1'], 'needs labels'),
    (['--batch=3', '--gpus=2'], 'divisible'),
    (['--cfg=prostate-high'], 'is for 256x256x24 volumes'),
    (['--base=3x3'], 'expected XxYxZ'),
    (['--base=5x5x5'], 'must be the base times a power of two per axis'),
    (['--resume=/nonexistent/network.pkl'], 'no such file: /nonexistent/network.pkl'),
])
def test_bad_options_give_one_line_errors(phantom_zip, tmp_path, args, message):
    base = [f'--outdir={tmp_path}', f'--data={phantom_zip}', '--dry-run', '--workers=0']
    result = CliRunner().invoke(train.main, base + args)
    assert result.exit_code == 2 and message in result.output, result.output


def test_missing_dataset_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(train.main, [f'--outdir={tmp_path}', f'--data={tmp_path}/nope.zip', '--dry-run'])
    assert result.exit_code == 2 and 'nope.zip' in result.output


@pytest.mark.slow
def test_training_run_writes_outputs_and_resumes_exactly(phantom_zip, tmp_path, monkeypatch):
    # Run A stops after 12 volumes; B resumes A and runs to 20; C runs to 20 straight. B must equal C.
    # ADA with a target below any sign mean and a fast ada_kimg, so p moves at every update (every 4 minibatches,
    # across the resume point) and its continuity is tested too.
    resolve = train.setup_training_loop_kwargs

    def fast_ada(opts, gpus):
        desc, c = resolve(opts, gpus)
        c.update(ada_target=-2.0, ada_kimg=0.1, ada_interval=4)
        return desc, c
    monkeypatch.setattr(train, 'setup_training_loop_kwargs', fast_ada)
    common = [f'--data={phantom_zip}', *FAST, '--kimg-per-tick=0.008', '--aug=ada', '--seed=3']
    out_a, out_c = tmp_path / 'a', tmp_path / 'c'
    assert run_train([f'--outdir={out_a}', '--kimg=0.012', *common]).exit_code == 0
    run_a = out_a / os.listdir(out_a)[0]
    assert run_a.name == '00000-phantoms-demo-kimg0.012-batch4-ada'
    files = set(os.listdir(run_a))
    # Ticks end after 4 and 12 volumes; snapshots of runs shorter than 1 kimg are named by the images shown.
    for name in ['training_options.json', 'log.txt', 'stats.jsonl', 'reals.png', 'fakes_init.png',
                 'fakes000000_004.png', 'network-snapshot-000000_004.pkl', 'training-state-000000_004.pt',
                 'fakes000000_012.png', 'network-snapshot-000000_012.pkl', 'training-state-000000_012.pt']:
        assert name in files, name
    assert not [n for n in files if '.tmp' in n]
    stats = [json.loads(line) for line in open(run_a / 'stats.jsonl')]
    assert len(stats) == 2 and 'Loss/G/loss' in stats[-1] and stats[-1]['Progress/kimg']['mean'] == pytest.approx(0.012)
    log = open(run_a / 'log.txt').read()
    assert 'sec/kimg' in log and 'kimg 0.004 ' in log and 'kimg 0.012 ' in log  # Progress under 1 kimg shows.
    assert tensorboard_steps(run_a, 'Loss/G/loss') == [4, 12]  # Steps are images shown, never all 0.
    assert (run_a / 'training_options.json').stat().st_mode & 0o077 == 0o044  # Readable by others, as usual.
    snapshot = legacy.load_network(str(run_a / 'network-snapshot-000000_012.pkl'))
    assert set(snapshot) >= {'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs'}

    # Resume with --resume=latest continues run A in place.
    assert run_train([f'--outdir={out_a}', '--kimg=0.02', '--resume=latest', *common]).exit_code == 0
    assert os.listdir(out_a) == [run_a.name]
    resumed = legacy.load_network(str(run_a / 'network-snapshot-000000_020.pkl'))
    assert run_train([f'--outdir={out_c}', '--kimg=0.02', *common]).exit_code == 0
    straight = legacy.load_network(str(out_c / os.listdir(out_c)[0] / 'network-snapshot-000000_020.pkl'))
    for name in ['G', 'D', 'G_ema']:
        for (key, a), (_, b) in zip(resumed[name].state_dict().items(), straight[name].state_dict().items()):
            assert torch.equal(a, b), f'{name}.{key} differs after resume'
    state = torch.load(run_a / 'training-state-000000_020.pt', weights_only=False)
    straight_state = torch.load(out_c / os.listdir(out_c)[0] / 'training-state-000000_020.pt', weights_only=False)
    assert state['progress'] == straight_state['progress'] and state['progress']['cur_nimg'] == 20
    assert state['augment_p'] == pytest.approx(4 * 4 / 100) and state['augment_p'] == straight_state['augment_p']
    assert torch.equal(state['pl_mean'], straight_state['pl_mean'])
    for name in ('G', 'D'):  # Adam moments and step counts.
        for key, value in state['optimizers'][name]['state'].items():
            for field, tensor in value.items():
                assert torch.equal(tensor, straight_state['optimizers'][name]['state'][key][field]), (name, field)


def tensorboard_steps(run_dir, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [event.step for event in events.Scalars(tag)]


@pytest.mark.slow
def test_resume_from_a_snapshot_of_other_networks_is_refused_before_anything_is_written(phantom_zip, tmp_path):
    assert run_train([f'--outdir={tmp_path / "a"}', f'--data={phantom_zip}', *FAST, '--kimg=0.004']).exit_code == 0
    snapshot = glob.glob(str(tmp_path / 'a' / '*' / 'network-snapshot-*.pkl'))[0]
    result = CliRunner().invoke(train.main, [f'--outdir={tmp_path / "b"}', f'--data={phantom_zip}', *FAST,
                                             '--kimg=0.008', f'--resume={snapshot}', '--base=2x2x2'])
    assert result.exit_code == 1 and not os.path.exists(tmp_path / 'b')
    assert 'Cannot resume from' in result.output and 'is [' in result.output and '--base' in result.output


@pytest.mark.slow
def test_two_processes_under_torchrun_stay_identical(phantom_zip, tmp_path):
    # check_ddp_consistency at every snapshot raises if the ranks' networks differ.
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'train.py',
           f'--outdir={tmp_path}', f'--data={phantom_zip}', *FAST, '--kimg=0.016', '--kimg-per-tick=0.008']
    env = dict(os.environ, OMP_NUM_THREADS='1')
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run_dir = tmp_path / os.listdir(tmp_path)[0]
    files = set(os.listdir(run_dir))
    assert {'training-state-000000_016.pt', 'training-state-000000_016-rank1.pt',
            'network-snapshot-000000_016.pkl'} <= files
    rank0 = torch.load(run_dir / 'training-state-000000_016.pt', weights_only=False)
    rank1 = torch.load(run_dir / 'training-state-000000_016-rank1.pt', weights_only=False)
    assert rank0['progress'] == rank1['progress'] and rank0['progress']['cur_nimg'] == 16
    assert not torch.equal(rank0['rng']['torch'], rank1['rng']['torch'])  # Per-rank seeding.


@pytest.mark.slow
def test_resume_latest_without_a_run_starts_fresh(phantom_zip, tmp_path):
    result = run_train([f'--outdir={tmp_path}', f'--data={phantom_zip}', *FAST, '--kimg=0.004', '--resume=latest'])
    assert result.exit_code == 0, result.output
    assert 'starting a new run' in result.output
    runs = os.listdir(tmp_path)
    assert len(runs) == 1 and os.path.isfile(tmp_path / runs[0] / 'training-state-000000_004.pt')


@pytest.mark.slow
def test_metrics_at_snapshots_are_written_and_logged(phantom_zip, tmp_path):
    args = [f'--outdir={tmp_path}', f'--data={phantom_zip}', *FAST, '--kimg=0.004', '--metrics=mmd_full']
    result = run_train([a for a in args if a != '--metrics=none'])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / os.listdir(tmp_path)[0]
    records = [json.loads(line) for line in open(run_dir / 'metric-mmd_full.jsonl')]
    assert len(records) == 1 and records[0]['snapshot_pkl'] == 'network-snapshot-000000_004.pkl'
    assert records[0]['results']['mmd_full'] >= 0


@pytest.mark.slow
def test_sigterm_to_a_spawned_two_process_run_snapshots_and_exits_cleanly(phantom_zip, tmp_path):
    # --gpus=2 spawns two gloo processes; SIGTERM to the parent reaches both, which stop at the same minibatch.
    import signal
    import time
    cmd = [sys.executable, 'train.py', f'--outdir={tmp_path}', f'--data={phantom_zip}', *FAST, '--gpus=2',
           '--kimg=10', '--kimg-per-tick=0.008', '--snap=1000']
    proc = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS='1'), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:  # Wait for the second tick's stats line.
            runs = os.listdir(tmp_path)
            stats = tmp_path / runs[0] / 'stats.jsonl' if runs else None
            if stats is not None and stats.exists() and len(stats.read_text().splitlines()) >= 2:
                break
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, output[-3000:]
    assert 'Received SIGTERM' in output
    run_dir = tmp_path / os.listdir(tmp_path)[0]
    # The preemption snapshot, beside tick 0's, for each rank.
    states = sorted(glob.glob(str(run_dir / 'training-state-000000_*-rank1.pt')))
    assert len(states) == 2 and states[0].endswith('000000_004-rank1.pt')
    rank0 = torch.load(states[-1].replace('-rank1', ''), weights_only=False)
    rank1 = torch.load(states[-1], weights_only=False)
    assert rank0['progress'] == rank1['progress'] and 12 <= rank0['progress']['cur_nimg'] < 1000


def test_unreadable_resume_file_is_a_one_line_error(phantom_zip, tmp_path):
    result = run_train([f'--outdir={tmp_path}', f'--data={phantom_zip}', *FAST, '--kimg=0.004',
                        f'--resume={phantom_zip}'])
    assert result.exit_code == 1 and os.listdir(tmp_path) == []  # Found before a run directory was made.
    assert f'Cannot resume: {phantom_zip} is not a readable safe export' in result.output
    assert 'Traceback' not in result.output


@pytest.mark.slow
def test_conditional_run_on_labelled_volumes(tmp_path):
    import numpy as np

    from volumes import phantom, volume_io
    src = tmp_path / 'src'
    src.mkdir()
    with open(tmp_path / 'labels.csv', 'w') as f:
        for i in range(6):
            volume, spacing = phantom.make_phantom(i, (16, 16, 8))
            volume_io.write_volume(str(src / f'case{i}.nii.gz'), volume, spacing, LPS_DIRECTION)
            f.write(f'case{i}.nii.gz,{i % 3}\n')
    data = tmp_path / 'labelled.zip'
    subprocess.run([sys.executable, 'dataset_tool.py', f'--source={src}', f'--dest={data}', '--size=16x16x8',
                    f'--labels={tmp_path / "labels.csv"}'], cwd=REPO, check=True, capture_output=True)
    result = run_train([f'--outdir={tmp_path / "runs"}', f'--data={data}', *FAST, '--kimg=0.008', '--cond=1'])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / 'runs' / os.listdir(tmp_path / 'runs')[0]
    assert run_dir.name.startswith('00000-labelled-cond-')
    snapshot = legacy.load_network(str(run_dir / 'network-snapshot-000000_008.pkl'))
    G = snapshot['G_ema']
    assert G.c_dim == 3 and snapshot['D'].c_dim == 3
    c = torch.eye(3)
    volumes = G(torch.randn([1, G.z_dim]).repeat(3, 1), c, noise_mode='const')  # One z, three labels.
    assert volumes.shape == (3, 1, 8, 16, 16) and bool(torch.isfinite(volumes).all())
    assert not np.allclose(volumes[0].numpy(), volumes[1].numpy())  # The label changes the volume.

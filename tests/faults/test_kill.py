# SPDX-License-Identifier: Apache-2.0
"""kill -9 at random points of training, then --resume=latest: the result equals an uninterrupted run tensor for
tensor, every tick is logged once, and nothing half-written is left. Also: what killed commands leave behind is
removed at the next start."""

import glob
import json
import os
import random
import subprocess
import sys
import time

import torch

import legacy
import pytest
from dnnlib import util
from tests.helpers.cli import REPO, partial_files, run_cli
from tests.helpers.training import TRAIN

pytestmark = pytest.mark.slow  # fault injection: the CLIs as subprocesses


KIMG = '--kimg=0.024'  # Six minibatches of 4, a tick and a snapshot after each.


def train_args(outdir, phantoms, *extra):
    return ['train.py', f'--outdir={outdir}', f'--data={phantoms}', *TRAIN, KIMG, '--seed=5', *extra]


def final_state(outdir):
    run_dir = glob.glob(str(outdir / '0*'))[0]
    snapshot = legacy.load_network(os.path.join(run_dir, 'network-snapshot-000000_024.pkl'))
    state = torch.load(os.path.join(run_dir, 'training-state-000000_024.pt'), weights_only=False)
    ticks = [round(json.loads(line)['Progress/kimg']['mean'] * 1000) for line in open(os.path.join(run_dir,
                                                                                                   'stats.jsonl'))]
    return snapshot, state, ticks


def kill_at(outdir, phantoms, delay: float) -> None:
    """Start a run, wait for its first snapshot, then kill -9 it `delay` seconds later."""
    process = subprocess.Popen([sys.executable, *train_args(outdir, phantoms)], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=dict(os.environ, OMP_NUM_THREADS='1'))
    deadline = time.monotonic() + 120
    while not glob.glob(str(outdir / '0*' / 'training-state-*.pt')) and process.poll() is None:
        assert time.monotonic() < deadline, 'no snapshot appeared'
        time.sleep(0.02)
    time.sleep(delay)
    process.kill()
    process.wait()


def test_kill_9_at_random_points_then_resume_equals_the_uninterrupted_run(phantoms, tmp_path):
    # One test, so that one worker trains the reference once; three kills at seeded random times.
    assert run_cli(train_args(tmp_path / 'straight', phantoms)).returncode == 0
    straight_snapshot, straight_state, straight_ticks = final_state(tmp_path / 'straight')
    for trial in range(3):
        outdir = tmp_path / f'trial{trial}'
        delay = random.Random(1000 + trial).uniform(0.0, 3.0)  # After the first snapshot, anywhere in the run.
        kill_at(outdir, phantoms, delay)
        result = run_cli(train_args(outdir, phantoms, '--resume=latest'))
        assert result.returncode == 0, result.stderr[-3000:]
        snapshot, state, ticks = final_state(outdir)
        for name in ('G', 'D', 'G_ema'):
            for (key, a), (_, b) in zip(snapshot[name].state_dict().items(),
                                        straight_snapshot[name].state_dict().items()):
                assert torch.equal(a, b), f'{name}.{key} differs after kill -9 at {delay:.2f} s and resume'
        assert state['progress'] == straight_state['progress']
        for name in ('G', 'D'):
            for key, value in state['optimizers'][name]['state'].items():
                for field, tensor in value.items():
                    assert torch.equal(tensor, straight_state['optimizers'][name]['state'][key][field]), (name, field)
        assert ticks == straight_ticks == [4, 8, 12, 16, 20, 24]  # Every tick once, in order.
        assert partial_files(outdir) == [] and len(os.listdir(outdir)) == 1


def test_temporaries_of_killed_commands_are_removed_at_the_next_start(network, phantoms, tmp_path):
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    stale = f'.{util._host_tag()}-{dead.pid}-a1b2c3.tmp.'
    out, data = tmp_path / 'out', tmp_path / 'data'
    os.makedirs(out)
    os.makedirs(data)
    (out / f'{stale}seed0000.nii.gz').write_bytes(b'half a volume')
    (data / f'{stale}d.zip').write_bytes(b'half an archive')
    assert run_cli(['generate.py', f'--network={network}', '--count=1', f'--outdir={out}']).returncode == 0
    assert run_cli(['dataset_tool.py', '--source=phantom:1', f'--dest={data / "d.zip"}',
                    '--size=16x16x8']).returncode == 0
    assert sorted(os.listdir(out)) == ['seed0000.nii.gz'] and sorted(os.listdir(data)) == ['d.zip']

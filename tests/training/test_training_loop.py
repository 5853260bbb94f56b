# SPDX-License-Identifier: Apache-2.0
"""The training loop on tiny phantom volumes (CPU), with the options train.py resolves: ADA's step, SIGTERM, and
non-finite gradients; and the run folder's snapshot tags and stats. train.py itself: tests/test_train.py."""

import glob
import json
import os
import pickle

import pytest
import torch

import legacy
import train
from tests.helpers.training import FAST


def test_snapshot_tags_name_images_under_a_whole_kimg_and_sort_in_order():
    from training import runs
    tags = [runs.snapshot_tag(n) for n in (4, 512, 1000, 1004, 400_000)]
    assert tags == ['000000_004', '000000_512', '000001', '000001_004', '000400']
    assert sorted(tags) == tags and [runs.parse_snapshot_tag(t) for t in tags] == [4, 512, 1000, 1004, 400_000]
    with pytest.raises(ValueError, match='not a snapshot tag'):
        runs.parse_snapshot_tag('4k')


def test_trim_stats_drops_the_ticks_after_the_resumed_snapshot(tmp_path):
    from training import runs
    path = tmp_path / 'stats.jsonl'
    path.write_text(''.join(json.dumps({'Progress/kimg': {'mean': n / 1000}}) + '\n' for n in (4, 8, 12, 16)))
    runs.trim_stats(str(path), 8)
    assert [round(json.loads(line)['Progress/kimg']['mean'] * 1000) for line in open(path)] == [4, 8]


def loop_kwargs(args, run_dir):
    """training_loop kwargs exactly as train.py resolves them from `args`."""
    params = train.main.make_context('train.py', list(args)).params
    opts = train.dnnlib.EasyDict(params, aug_given=params['aug'] is not None, aug=params['aug'] or 'ada')
    _, c = train.setup_training_loop_kwargs(opts, gpus=1)
    os.makedirs(run_dir)
    return dict(c, run_dir=str(run_dir))


@pytest.mark.slow
def test_ada_moves_p_by_the_official_step(phantom_zip, tmp_path):
    from training import training_loop
    c = loop_kwargs([f'--outdir={tmp_path}', f'--data={phantom_zip}', *FAST, '--kimg=0.032',
                     '--kimg-per-tick=0.016'], tmp_path / 'run')
    # An unreachable target below any sign mean: every update raises p by batch * interval / (ada_kimg * 1000).
    c.update(ada_target=-2.0, ada_kimg=0.1, ada_interval=4)
    training_loop.training_loop(**c)
    state = torch.load(tmp_path / 'run' / 'training-state-000000_032.pt', weights_only=False)
    assert state['augment_p'] == pytest.approx(2 * 4 * 4 / 100)
    pipe = pickle.load(open(tmp_path / 'run' / 'network-snapshot-000000_032.pkl', 'rb'))['augment_pipe']
    assert float(pipe.p) == pytest.approx(state['augment_p'])


@pytest.mark.slow
def test_sigterm_writes_a_snapshot_and_exits_cleanly(phantom_zip, tmp_path):
    import signal

    from training import training_loop
    c = loop_kwargs([f'--outdir={tmp_path}', f'--data={phantom_zip}', *FAST, '--kimg=1', '--kimg-per-tick=0.004',
                     '--snap=1000'], tmp_path / 'run')
    ticks = []

    def preempt(cur_kimg, total_kimg):  # Called at the start and after every tick: preempt after the second.
        ticks.append(cur_kimg)
        if len(ticks) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
    training_loop.training_loop(**c, progress_fn=preempt)
    # The signal arrived after kimg 0.008; the next minibatch (4 volumes) ends the run with a snapshot.
    assert ticks[-1] == pytest.approx(0.012)
    state = torch.load(tmp_path / 'run' / 'training-state-000000_012.pt', weights_only=False)
    assert state['progress']['cur_nimg'] == 12
    assert os.path.isfile(tmp_path / 'run' / 'network-snapshot-000000_012.pkl')
    assert signal.getsignal(signal.SIGTERM) is not None and len(ticks) == 4


@pytest.mark.slow
def test_nonfinite_gradients_stop_the_run_with_a_clear_message(phantom_zip, tmp_path, monkeypatch, capsys):
    from training import loss as loss_module
    from training import training_loop
    original = loss_module.StyleGAN2Loss.accumulate_gradients

    def poisoned(self, phase, **kwargs):  # From the third D step on, D's gradients are NaN.
        original(self, phase, **kwargs)
        if phase == 'Dmain':
            poisoned.steps += 1
            if poisoned.steps >= 3:
                next(p for p in self.D.parameters() if p.grad is not None).grad.fill_(float('nan'))
    poisoned.steps = 0
    monkeypatch.setattr(loss_module.StyleGAN2Loss, 'accumulate_gradients', poisoned)
    c = loop_kwargs([f'--outdir={tmp_path}', f'--data={phantom_zip}', *FAST, '--kimg=1', '--kimg-per-tick=0.004',
                     '--max-nonfinite=4'], tmp_path / 'run')
    with pytest.raises(training_loop.TrainingDiverged, match=r'4 minibatches in a row had non-finite gradients '
                       r'\(at kimg 0\.0\d\d\); the last good snapshot is .*network-snapshot-000000_\d{3}\.pkl') as info:
        training_loop.training_loop(**c)
    assert capsys.readouterr().out.count('Warning: non-finite gradients at kimg 0.0') == 1  # Once per run of them.
    # The snapshot it names is the newest one, and intact and finite (the steps used 0 for the NaNs).
    last = sorted(glob.glob(str(tmp_path / 'run' / 'network-snapshot-*.pkl')))[-1]
    assert last in str(info.value)
    snapshot = legacy.load_network(last)
    assert all(torch.isfinite(p).all() for p in snapshot['D'].parameters())
    stats = [json.loads(line) for line in open(tmp_path / 'run' / 'stats.jsonl')]
    assert stats[-1]['Loss/nonfinite_steps']['mean'] > 0

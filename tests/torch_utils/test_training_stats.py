# SPDX-License-Identifier: Apache-2.0
"""training_stats and distributed: statistics aggregated over two gloo processes started by torchrun."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from torch_utils import distributed, training_stats

HERE = os.path.dirname(os.path.abspath(__file__))


def test_single_process_collector_moments():
    collector = training_stats.Collector(regex='Single/.*', keep_previous=False)
    values = np.array([0.5, 1.5, 4.0, -2.0])
    training_stats.report('Single/v', torch.tensor(values))
    training_stats.report('Single/v', 3.0)
    training_stats.report('Unmatched/v', 1.0)
    collector.update()
    allv = np.append(values, 3.0)
    assert collector.num('Single/v') == 5
    assert collector.mean('Single/v') == pytest.approx(allv.mean())
    assert collector.std('Single/v') == pytest.approx(allv.std())
    assert 'Unmatched/v' not in collector.as_dict()
    collector.update()  # Nothing new was reported: without keep_previous the name disappears.
    assert collector.num('Single/v') == 0 and math.isnan(collector['Single/v'])


@pytest.mark.slow
def test_two_process_gloo_aggregation(tmp_path):
    # The torchrun-style variables (RANK, WORLD_SIZE, MASTER_ADDR, ...) that train.py --gpus also sets.
    port = distributed.free_port()
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, 'stats_worker.py'), str(tmp_path)],
                              env=dict(os.environ, OMP_NUM_THREADS='1', **distributed.local_env(rank, 2, port)))
             for rank in range(2)]
    try:
        assert [p.wait(timeout=120) for p in procs] == [0, 0]
    finally:
        for p in procs:
            p.kill()
    results = [json.loads((tmp_path / f'rank{r}.json').read_text()) for r in range(2)]
    assert [r['rank'] for r in results] == [0, 1] and all(r['world'] == 2 for r in results)
    for r in results:
        stats = r['stats']
        union = np.array([1.0, 2.0, 3.0, 10.0])
        assert stats['Loss/a']['num'] == 4
        assert stats['Loss/a']['mean'] == pytest.approx(union.mean())
        assert stats['Loss/a']['std'] == pytest.approx(union.std())
        assert stats['Loss/only0'] == {'num': 1, 'mean': 7.0, 'std': 0.0}
        assert stats['Loss/only1']['num'] == 2 and stats['Loss/only1']['mean'] == pytest.approx(5.0)
        assert 'Other/x' not in stats


def test_pending_moments_carry_over_to_a_new_collector():
    # A run saves what its ADA collector has seen since the last update; the resumed run's collector adds it, so
    # its first update covers the same interval as an uninterrupted run's would.
    name = 'Test/pending_' + str(os.getpid())
    uninterrupted = training_stats.Collector(regex=name)
    saving = training_stats.Collector(regex=name)
    training_stats.report(name, torch.tensor([1.0, -1.0, 1.0]))
    saved = saving.pending()
    assert saved[name] == [3.0, 1.0, 3.0]  # count, sum, sum of squares
    assert saving.pending() == saved  # Not consumed.
    resumed = training_stats.Collector(regex=name)
    resumed.add_pending(saved)
    training_stats.report(name, torch.tensor([1.0, 1.0]))
    uninterrupted.update()
    resumed.update()
    assert resumed.num(name) == uninterrupted.num(name) == 5
    assert resumed.mean(name) == pytest.approx(uninterrupted.mean(name)) == pytest.approx(0.6)
    assert resumed.std(name) == pytest.approx(uninterrupted.std(name))

# SPDX-License-Identifier: Apache-2.0
"""Metrics over two gloo processes: reals are dealt and gathered back in dataset order, generated volumes are the
ones a single process makes, and every metric gives the single-process value on both ranks."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from metrics import metric_utils, mmd
from tests.helpers import detectors
from tests.metrics import dist_worker
from torch_utils import distributed

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.slow
def test_two_processes_give_the_single_process_results(tmp_path):
    G = detectors.FakeGenerator((8, 16, 16))
    volumes = detectors.sample_real_volumes(G, 5)  # Odd: rank 1 wraps around to volume 0, which must be dropped.
    data = detectors.write_dataset(str(tmp_path / 'reals'), volumes)
    detector = detectors.write_detector(tmp_path / 'tinydet.pt')
    port = distributed.free_port()
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, 'dist_worker.py'), data, detector, str(tmp_path)],
                              env=dict(os.environ, OMP_NUM_THREADS='1', **distributed.local_env(rank, 2, port)))
             for rank in range(2)]
    try:
        assert [p.wait(timeout=180) for p in procs] == [0, 0]
    finally:
        for p in procs:
            p.kill()
    out = [json.loads((tmp_path / f'rank{r}.json').read_text()) for r in range(2)]

    # What one process computes: the same generated volumes (4 + 1 per round here, 3 + 3 per rank there).
    opts = metric_utils.MetricOptions(G=G, dataset_kwargs=detectors.dataset_kwargs(data), device='cpu', cache=False,
                                      seed=5)
    single_gen = metric_utils.compute_feature_stats_for_generator(opts, mmd.VoxelFeaturizer(), num_gen=5,
                                                                  capture_all=True)[('volume', 0)].get_all()
    single = dist_worker.evaluate(data, detector)
    want_real = volumes[:, 0].reshape(5, -1).astype(np.float32) / 127.5 - 1  # Every volume once, in dataset order.
    for r in out:
        assert r['world'] == 2
        np.testing.assert_allclose(np.array(r['real']), want_real, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(np.array(r['gen']), single_gen, rtol=0, atol=1e-6)
        assert r['distinct_gen'] == 5  # The ranks made different volumes.
        assert set(r['results']) == set(single)
        for key, value in single.items():
            assert r['results'][key] == pytest.approx(value, rel=1e-5, abs=1e-9), key  # float32 batch rounding.
    assert out[0]['results'] == out[1]['results']
    assert set(single) >= {'fid5_tri_coronal', 'pr53_all_recall', 'msssim_gen3_real'}


@pytest.mark.slow
def test_generated_items_do_not_depend_on_the_batches(tmp_path):
    G = detectors.FakeGenerator((8, 16, 16), c_dim=3)
    labels = [0, 1, 2] * 2
    data = detectors.write_dataset(str(tmp_path / 'reals'),
                                   detectors.sample_real_volumes(G, 6, labels=np.eye(3)[labels]), labels=labels)
    opts = metric_utils.MetricOptions(G=G, dataset_kwargs=detectors.dataset_kwargs(data, use_labels=True), device='cpu',
                                      seed=7)
    dataset = metric_utils.open_dataset(opts)
    sample = metric_utils.volume_sampler(opts, G, dataset)
    whole = sample(range(6))
    parts = torch.cat([sample([4, 0]), sample([5, 2, 1]), sample([3])])[[1, 4, 3, 5, 0, 2]]  # Items 0..5 again.
    torch.testing.assert_close(parts, whole, rtol=0, atol=1)  # atol 1: a float32 rounding can cross a uint8 step.
    assert (parts == whole).float().mean() > 0.999
    assert len({tuple(v.flatten().tolist()) for v in whole}) == 6
    other_stream = metric_utils.volume_sampler(opts, G, dataset, stream=1)(range(6))
    assert not torch.equal(other_stream, whole)

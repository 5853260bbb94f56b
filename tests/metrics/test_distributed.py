# SPDX-License-Identifier: Apache-2.0
"""Metrics over two gloo processes: reals are dealt and gathered back in dataset order, generated counts are exact,
and both ranks report the same values."""

import json
import os
import subprocess
import sys

import numpy as np

from tests.metrics import fakes
from torch_utils import distributed

HERE = os.path.dirname(os.path.abspath(__file__))


def test_two_process_statistics_and_results(tmp_path):
    G = fakes.FakeGenerator((8, 16, 16))
    volumes = fakes.sample_real_volumes(G, 5)  # Odd: rank 1 wraps around to volume 0, which must be dropped.
    data = fakes.write_dataset(str(tmp_path / 'reals'), volumes)
    port = distributed.free_port()
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, 'dist_worker.py'), data, str(tmp_path)],
                              env=dict(os.environ, OMP_NUM_THREADS='1', **distributed.local_env(rank, 2, port)))
             for rank in range(2)]
    try:
        assert [p.wait(timeout=180) for p in procs] == [0, 0]
    finally:
        for p in procs:
            p.kill()
    out = [json.loads((tmp_path / f'rank{r}.json').read_text()) for r in range(2)]
    want = volumes[:, 0].reshape(5, -1).astype(np.float32) / 127.5 - 1  # Every volume once, in dataset order.
    for r in out:
        assert r['world'] == 2
        np.testing.assert_allclose(np.array(r['real']), want, rtol=1e-6, atol=1e-6)
        assert r['num_gen'] == 5 and r['distinct_gen'] == 5  # The ranks drew different latents.
    assert out[0]['results'] == out[1]['results']
    assert set(out[0]['results']) == {'mmd_full', 'msssim_gen3', 'msssim_gen3_real'}

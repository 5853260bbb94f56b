# SPDX-License-Identifier: Apache-2.0
"""Worker for the two-process metric test: started with torchrun-style variables, gloo on the CPU."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402

from metrics import metric_main, metric_utils, mmd  # noqa: E402
from tests.helpers import detectors  # noqa: E402
from torch_utils import distributed  # noqa: E402

# Every kind of metric: slice-wise mean/cov (FID, one value per plane), all features (KID, PR with rows dealt to the
# ranks), running voxel moments (MMD) and summed pairs (MS-SSIM).
METRICS = ('fid5_tri', 'kid5_mid', 'pr53_all', 'mmd_full', 'msssim_gen3')


def evaluate(data: str, detector: str, num_gpus: int = 1, rank: int = 0) -> dict[str, float]:
    """The METRICS for FakeGenerator at seed 5, without the real-statistics cache."""
    G = detectors.FakeGenerator((8, 16, 16))
    results = {}
    for name in METRICS:
        results.update(metric_main.calc_metric(name, G=G, dataset_kwargs=detectors.dataset_kwargs(data),
                                               num_gpus=num_gpus, rank=rank, device='cpu', cache=False, seed=5,
                                               inception_url=detector, vgg16_url=detector).results)
    return results


def main(data: str, detector: str, out_dir: str) -> None:
    distributed.init()
    rank, world = distributed.get_rank(), distributed.get_world_size()
    G = detectors.FakeGenerator((8, 16, 16))
    opts = metric_utils.MetricOptions(G=G, dataset_kwargs=detectors.dataset_kwargs(data), num_gpus=world, rank=rank,
                                      device='cpu', cache=False, seed=5)
    featurizer = mmd.VoxelFeaturizer()
    real = metric_utils.compute_feature_stats_for_dataset(opts, featurizer, batch_size=2, capture_all=True)
    gen = metric_utils.compute_feature_stats_for_generator(opts, featurizer, num_gen=5, batch_gen=2,
                                                           capture_all=True)
    gen_rows = gen[('volume', 0)].get_all_torch()
    out = dict(rank=rank, world=world, real=real[('volume', 0)].get_all().tolist(), gen=gen_rows.tolist(),
               distinct_gen=int(torch.unique(gen_rows, dim=0).shape[0]), results=evaluate(data, detector, world, rank))
    with open(os.path.join(out_dir, f'rank{rank}.json'), 'w') as f:
        json.dump(out, f)
    distributed.shutdown()


if __name__ == '__main__':
    main(*sys.argv[1:4])

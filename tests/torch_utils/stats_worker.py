# SPDX-License-Identifier: Apache-2.0
"""Worker for the multi-process tests: run by torchrun with 2 processes on gloo."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from torch_utils import distributed, training_stats  # noqa: E402


def main(out_dir: str) -> None:
    distributed.init()
    rank, world = distributed.get_rank(), distributed.get_world_size()
    collector = training_stats.Collector(regex='Loss/.*')
    # Rank 0 reports [1, 2, 3], rank 1 reports [10]: the union is [1, 2, 3, 10].
    training_stats.report('Loss/a', [1.0, 2.0, 3.0] if rank == 0 else [10.0])
    training_stats.report0('Loss/only0', 7.0)
    if rank == 1:
        training_stats.report('Loss/only1', [4.0, 6.0])
    training_stats.report('Other/x', 1.0)
    collector.update()
    result = dict(rank=rank, world=world, stats=collector.as_dict())
    with open(os.path.join(out_dir, f'rank{rank}.json'), 'w') as f:
        json.dump(result, f)
    distributed.shutdown()


if __name__ == '__main__':
    main(sys.argv[1])

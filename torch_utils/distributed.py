# SPDX-License-Identifier: Apache-2.0
"""Process-group set-up for torchrun (one or many nodes, SLURM included) and for local `--gpus N` spawns.

torchrun (and `train.py --gpus N`, which spawns N local workers) provide RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT. Without them the run is a single process and no group is created.
NCCL is used when the process has a GPU, gloo otherwise (CPU tests).
"""

from __future__ import annotations

import datetime
import os
import socket
from typing import Any

import torch

from . import training_stats


def init(timeout_minutes: float = 30) -> None:
    """Join the process group described by the environment (no-op for a single process)."""
    if 'RANK' not in os.environ or int(os.environ.get('WORLD_SIZE', '1')) <= 1:
        return
    if torch.distributed.is_initialized():
        return
    backend = 'nccl' if torch.cuda.is_available() else 'gloo'
    if backend == 'nccl':
        torch.cuda.set_device(get_local_rank())
    torch.distributed.init_process_group(backend=backend, init_method='env://',
                                         timeout=datetime.timedelta(minutes=timeout_minutes))
    sync_device = torch.device('cuda', get_local_rank()) if backend == 'nccl' else None
    training_stats.init_multiprocessing(rank=get_rank(), sync_device=sync_device)


def shutdown() -> None:
    """Leave the process group cleanly (all ranks together), so no rank exits while others still talk to it."""
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def get_rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def get_world_size() -> int:
    return torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1


def get_local_rank() -> int:
    return int(os.environ.get('LOCAL_RANK', '0'))


def barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank (picklable objects; identity for a single process)."""
    if not torch.distributed.is_initialized():
        return obj
    holder = [obj]
    torch.distributed.broadcast_object_list(holder, src=src)
    return holder[0]


def print0(*args: Any, **kwargs: Any) -> None:
    """print() on rank 0 only."""
    if get_rank() == 0:
        print(*args, **kwargs)


def free_port() -> int:
    """A TCP port that is free on this machine right now (for local spawns)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def local_env(rank: int, world_size: int, port: int) -> dict[str, str]:
    """The torchrun-style variables for worker `rank` of a single-node spawn."""
    return dict(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_WORLD_SIZE=str(world_size),
                MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))

# SPDX-License-Identifier: Apache-2.0
"""GAN-agnostic PyTorch helpers: cached constants, shape checks, profiling labels, samplers, DDP utilities."""

from __future__ import annotations

import contextlib
import re
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

#----------------------------------------------------------------------------
# Cached constant tensors: avoids re-uploading small tensors (filters, gains) to the GPU on every call.

_constant_cache: dict[tuple, torch.Tensor] = {}


def constant(value: Any, shape: Sequence[int] | None = None, dtype: torch.dtype | None = None,
             device: torch.device | str | None = None,
             memory_format: torch.memory_format | None = None) -> torch.Tensor:
    """Return a cached tensor holding `value`, broadcast to `shape`, on `device` with `dtype`."""
    value = np.asarray(value)
    shape = tuple(shape) if shape is not None else None
    dtype = dtype or torch.get_default_dtype()
    device = torch.device(device or 'cpu')
    memory_format = memory_format or torch.contiguous_format
    key = (value.shape, value.dtype, value.tobytes(), shape, dtype, device, memory_format)
    tensor = _constant_cache.get(key)
    if tensor is None:
        tensor = torch.as_tensor(value.copy(), dtype=dtype, device=device)
        if shape is not None:
            tensor, _ = torch.broadcast_tensors(tensor, torch.empty(shape))
        tensor = tensor.contiguous(memory_format=memory_format)
        _constant_cache[key] = tensor
    return tensor

#----------------------------------------------------------------------------
# Shape contracts.


def assert_shape(tensor: torch.Tensor, ref_shape: Sequence[int | None]) -> None:
    """Raise AssertionError unless `tensor` has `ref_shape`; None entries match any size."""
    if tensor.ndim != len(ref_shape):
        raise AssertionError(f'Wrong number of dimensions: got {tensor.ndim}, expected {len(ref_shape)}')
    for idx, (size, ref_size) in enumerate(zip(tensor.shape, ref_shape)):
        if ref_size is None:
            continue
        if isinstance(ref_size, torch.Tensor):
            torch._assert(torch.as_tensor(size) == ref_size, f'Wrong size for dimension {idx}')
        elif isinstance(size, torch.Tensor):
            torch._assert(size == torch.as_tensor(ref_size), f'Wrong size for dimension {idx}: expected {ref_size}')
        elif size != ref_size:
            raise AssertionError(f'Wrong size for dimension {idx}: got {size}, expected {ref_size}')

#----------------------------------------------------------------------------
# Profiler labels.


def profiled_function(fn: Callable) -> Callable:
    """Decorator that labels every call of `fn` in the PyTorch profiler."""
    def decorator(*args, **kwargs):
        with torch.autograd.profiler.record_function(fn.__name__):
            return fn(*args, **kwargs)
    decorator.__name__ = fn.__name__
    decorator.__doc__ = fn.__doc__
    decorator.__wrapped__ = fn
    return decorator

#----------------------------------------------------------------------------
# Sampler that loops over the dataset forever.


class InfiniteSampler(torch.utils.data.Sampler):
    """Endless index stream, shuffled within a sliding window, every `num_replicas`-th item for this rank.

    The window keeps reshuffling indices so that consecutive epochs do not repeat the same order. `skip` drops
    this rank's first items, so a resumed run continues the exact stream it stopped in.
    """

    def __init__(self, dataset: Any, rank: int = 0, num_replicas: int = 1, shuffle: bool = True, seed: int = 0,
                 window_size: float = 0.5, skip: int = 0):
        if len(dataset) <= 0:
            raise ValueError('InfiniteSampler needs a non-empty dataset')
        if not 0 <= rank < num_replicas:
            raise ValueError(f'rank {rank} must be in [0, {num_replicas})')
        if not 0 <= window_size <= 1:
            raise ValueError(f'window_size {window_size} must be in [0, 1]')
        super().__init__()
        self.dataset = dataset
        self.rank = rank
        self.num_replicas = num_replicas
        self.shuffle = shuffle
        self.seed = seed
        self.window_size = window_size
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        order = np.arange(len(self.dataset))
        rnd = None
        window = 0
        if self.shuffle:
            rnd = np.random.RandomState(self.seed)
            rnd.shuffle(order)
            window = int(np.rint(order.size * self.window_size))
        idx = 0
        skip = self.skip
        while True:
            i = idx % order.size
            if idx % self.num_replicas == self.rank:
                if skip > 0:
                    skip -= 1
                else:
                    yield int(order[i])
            if window >= 2:
                j = (i - rnd.randint(window)) % order.size
                order[i], order[j] = order[j], order[i]
            idx += 1

#----------------------------------------------------------------------------
# Parameters, buffers and DDP.


def params_and_buffers(module: torch.nn.Module) -> list[torch.Tensor]:
    return list(module.parameters()) + list(module.buffers())


def named_params_and_buffers(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    return list(module.named_parameters()) + list(module.named_buffers())


@torch.no_grad()
def copy_params_and_buffers(src_module: torch.nn.Module, dst_module: torch.nn.Module,
                            require_all: bool = False) -> None:
    """Copy tensors by name; tensors missing from `src_module` or of another shape are skipped."""
    src_tensors = dict(named_params_and_buffers(src_module))
    for name, tensor in named_params_and_buffers(dst_module):
        if name not in src_tensors:
            if require_all:
                raise KeyError(f'copy_params_and_buffers: "{name}" is missing from the source module')
            continue
        if src_tensors[name].shape != tensor.shape:
            if require_all:
                raise ValueError(f'copy_params_and_buffers: "{name}" has shape {tuple(src_tensors[name].shape)}, '
                                 f'expected {tuple(tensor.shape)}')
            continue
        tensor.copy_(src_tensors[name].detach()).requires_grad_(tensor.requires_grad)


@contextlib.contextmanager
def ddp_sync(module: torch.nn.Module, sync: bool):
    """Skip DDP's gradient all-reduce unless `sync` (gradient accumulation over several rounds)."""
    if sync or not isinstance(module, torch.nn.parallel.DistributedDataParallel):
        yield
    else:
        with module.no_sync():
            yield


def check_ddp_consistency(module: torch.nn.Module, ignore_regex: str | None = None) -> None:
    """Assert that every parameter and buffer is identical on all ranks (e.g. before a snapshot).

    Every rank walks all tensors before any raises, so a mismatch is an error on all ranks, not a hang.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    mismatches = []
    for name, tensor in named_params_and_buffers(module):
        fullname = type(module).__name__ + '.' + name
        if ignore_regex is not None and re.fullmatch(ignore_regex, fullname):
            continue
        tensor = tensor.detach()
        if tensor.is_floating_point():
            tensor = torch.nan_to_num(tensor)
        other = tensor.clone()
        torch.distributed.broadcast(tensor=other, src=0)
        if not (tensor == other).all():
            mismatches.append(fullname)
    nccl = torch.distributed.get_backend() == 'nccl'
    count = torch.tensor([len(mismatches)], dtype=torch.float32,
                         device=torch.device('cuda', torch.cuda.current_device()) if nccl else 'cpu')
    torch.distributed.all_reduce(count)
    if count.item() > 0:
        where = ', '.join(mismatches[:5]) if mismatches else 'on another rank'
        raise AssertionError(f'DDP consistency check failed: {int(count.item())} tensors differ from rank 0 ({where})')


#----------------------------------------------------------------------------
# Module summary table.


def print_module_summary(module: torch.nn.Module, inputs: Sequence[Any], max_nesting: int = 3,
                         skip_redundant: bool = True) -> Any:
    """Run `module(*inputs)` once and print a table of submodules, parameter counts and output shapes."""
    if not isinstance(module, torch.nn.Module) or module.training:
        raise ValueError('print_module_summary expects a torch.nn.Module in eval mode')
    entries: list[dict] = []
    nesting = [0]

    def pre_hook(_mod, _inputs):
        nesting[0] += 1

    def post_hook(mod, _inputs, outputs):
        nesting[0] -= 1
        if nesting[0] <= max_nesting:
            outs = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
            entries.append(dict(mod=mod, outputs=[t for t in outs if isinstance(t, torch.Tensor)]))

    hooks = [m.register_forward_pre_hook(pre_hook) for m in module.modules()]
    hooks += [m.register_forward_hook(post_hook) for m in module.modules()]
    try:
        outputs = module(*inputs)
    finally:
        for hook in hooks:
            hook.remove()

    # Attribute each tensor to the outermost module that owns it, so nothing is counted twice.
    seen: set[int] = set()
    for entry in entries:
        entry['params'] = [t for t in entry['mod'].parameters() if id(t) not in seen]
        entry['buffers'] = [t for t in entry['mod'].buffers() if id(t) not in seen]
        seen.update(id(t) for t in entry['params'] + entry['buffers'])
    if skip_redundant:
        entries = [e for e in entries if e['params'] or e['buffers'] or e['outputs']]

    names = {mod: name for name, mod in module.named_modules()}
    rows = [['Module', 'Parameters', 'Buffers', 'Output shape', 'Datatype'], ['---'] * 5]
    total_params = total_buffers = 0
    for entry in entries:
        name = '<top-level>' if entry['mod'] is module else names.get(entry['mod'], '?')
        num_params = sum(t.numel() for t in entry['params'])
        num_buffers = sum(t.numel() for t in entry['buffers'])
        shapes = [str(list(t.shape)) for t in entry['outputs']] or ['-']
        dtypes = [str(t.dtype).split('.')[-1] for t in entry['outputs']] or ['-']
        rows.append([name + (':0' if len(shapes) > 1 else ''), str(num_params) if num_params else '-',
                     str(num_buffers) if num_buffers else '-', shapes[0], dtypes[0]])
        for idx in range(1, len(shapes)):
            rows.append([name + f':{idx}', '-', '-', shapes[idx], dtypes[idx]])
        total_params += num_params
        total_buffers += num_buffers
    rows += [['---'] * 5, ['Total', str(total_params), str(total_buffers), '-', '-']]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    print()
    for row in rows:
        print('  '.join(cell + ' ' * (width - len(cell)) for cell, width in zip(row, widths)))
    print()
    return outputs

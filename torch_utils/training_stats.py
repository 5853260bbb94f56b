# SPDX-License-Identifier: Apache-2.0
"""Cheap statistics from anywhere in the code, aggregated across devices and processes.

`report(name, value)` adds the count, sum and sum of squares of `value`'s elements to float64 counters on the
value's own device (no host sync). A `Collector` periodically sums those counters over all processes and exposes
`{name: {num, mean, std}}` for the interval since its last `update()`.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch

_COUNTER_DTYPE = torch.float64
_NUM_MOMENTS = 3  # count, sum, sum of squares

_rank = 0
_sync_device: torch.device | None = None
_counters: dict[str, dict[torch.device, torch.Tensor]] = {}  # name -> device -> moments since the last sync
_cumulative: dict[str, torch.Tensor] = {}                    # name -> moments summed over processes, on CPU


def init_multiprocessing(rank: int, sync_device: torch.device | str | None) -> None:
    """Call once per process before the first Collector.update() in a multi-process run.

    `sync_device` is where the all-reduce happens: the process's GPU for NCCL, None (CPU) for gloo.
    """
    global _rank, _sync_device
    _rank = rank
    _sync_device = torch.device(sync_device) if sync_device is not None else None


def _moments(value: Any) -> torch.Tensor:
    elems = torch.as_tensor(value).detach().flatten().to(_COUNTER_DTYPE)
    return torch.stack([torch.ones_like(elems).sum(), elems.sum(), elems.square().sum()])


def report(name: str, value: Any) -> Any:
    """Record the elements of `value` (scalar, array or tensor) under `name`; returns `value` unchanged."""
    counters = _counters.setdefault(name, {})
    if torch.as_tensor(value).numel() == 0:
        return value
    moments = _moments(value)
    if moments.device not in counters:
        counters[moments.device] = torch.zeros_like(moments)
    counters[moments.device].add_(moments)
    return value


def report0(name: str, value: Any) -> Any:
    """As report(), but only rank 0 contributes; other ranks register the name with no data."""
    report(name, value if _rank == 0 else [])
    return value


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() and \
        torch.distributed.get_world_size() > 1


def _agreed_names(names: list[str]) -> list[str]:
    """All processes must all-reduce the same names in the same order."""
    if not _distributed():
        return names
    gathered: list[list[str] | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, names)
    return sorted(set().union(*gathered))


def _sync(names: list[str]) -> list[tuple[str, torch.Tensor]]:
    """Move every counter in `names` into the cumulative totals, summed over processes."""
    names = _agreed_names(names)
    if not names:
        return []
    device = _sync_device or torch.device('cpu')
    deltas = torch.zeros([len(names), _NUM_MOMENTS], dtype=_COUNTER_DTYPE, device=device)
    for row, name in enumerate(names):
        for counter in _counters.get(name, {}).values():
            deltas[row].add_(counter.to(device))
            counter.zero_()
    if _distributed():
        torch.distributed.all_reduce(deltas)
    deltas = deltas.cpu()
    result = []
    for row, name in enumerate(names):
        total = _cumulative.setdefault(name, torch.zeros([_NUM_MOMENTS], dtype=_COUNTER_DTYPE))
        total.add_(deltas[row])
        result.append((name, total))
    return result


class Collector:
    """Statistics of every reported name matching `regex`, over the interval ending at the last update().

    With `keep_previous`, a name with no new data keeps its previous values rather than disappearing.
    In a multi-process run every process must call update() at the same time (it all-reduces).
    """

    def __init__(self, regex: str = '.*', keep_previous: bool = True):
        self._regex = re.compile(regex)
        self._keep_previous = keep_previous
        self._seen: dict[str, torch.Tensor] = {}
        self._moments: dict[str, torch.Tensor] = {}
        self.update()
        self._moments.clear()

    def names(self) -> list[str]:
        return [name for name in _counters if self._regex.fullmatch(name)]

    def update(self) -> None:
        if not self._keep_previous:
            self._moments.clear()
        for name, total in _sync(self.names()):
            if not self._regex.fullmatch(name):
                continue
            previous = self._seen.setdefault(name, torch.zeros_like(total))
            delta = total - previous
            previous.copy_(total)
            if delta[0] != 0:
                self._moments[name] = delta

    def pending(self) -> dict[str, list[float]]:
        """Moments reported since the last update(), summed over processes, without consuming them.

        Saved with a training state so that a resumed run's next update() sees the same interval (see
        add_pending). Every process must call it at the same time.
        """
        return {name: (total - self._seen.get(name, torch.zeros_like(total))).tolist()
                for name, total in _sync(self.names()) if self._regex.fullmatch(name)}

    def add_pending(self, pending: dict[str, list[float]]) -> None:
        """Count moments saved by pending() in the next update(), as if they had been reported here."""
        for name, moments in pending.items():
            seen = self._seen.setdefault(name, torch.zeros([_NUM_MOMENTS], dtype=_COUNTER_DTYPE))
            seen.sub_(torch.tensor(moments, dtype=_COUNTER_DTYPE))

    def num(self, name: str) -> int:
        delta = self._moments.get(name)
        return 0 if delta is None else int(delta[0])

    def mean(self, name: str) -> float:
        delta = self._moments.get(name)
        if delta is None or delta[0] == 0:
            return float('nan')
        return float(delta[1] / delta[0])

    def std(self, name: str) -> float:
        delta = self._moments.get(name)
        if delta is None or delta[0] == 0:
            return float('nan')
        if delta[0] == 1:
            return 0.0
        mean = float(delta[1] / delta[0])
        raw_var = float(delta[2] / delta[0])
        return float(np.sqrt(max(raw_var - mean ** 2, 0)))

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {name: dict(num=self.num(name), mean=self.mean(name), std=self.std(name))
                for name in sorted(self._moments)}

    def __getitem__(self, name: str) -> float:
        return self.mean(name)

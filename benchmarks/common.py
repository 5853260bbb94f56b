# SPDX-License-Identifier: Apache-2.0
"""Timing helpers shared by the benchmarks: synchronised wall-clock timing and a table printer."""

from __future__ import annotations

import os
import sys
import time
from typing import Callable

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], object], device: torch.device, warmup: int = 2, iters: int = 5) -> float:
    """Median seconds per call of `fn` after `warmup` calls."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def print_table(rows: list[dict], columns: list[str]) -> str:
    """Markdown table of `rows` (dicts) restricted to `columns`; returns the text it printed."""
    def fmt(value):
        return f'{value:.4g}' if isinstance(value, float) else str(value)
    cells = [[fmt(row.get(col, '')) for col in columns] for row in rows]
    widths = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
    lines = ['| ' + ' | '.join(col.ljust(w) for col, w in zip(columns, widths)) + ' |',
             '|' + '|'.join('-' * (w + 2) for w in widths) + '|']
    lines += ['| ' + ' | '.join(c.ljust(w) for c, w in zip(r, widths)) + ' |' for r in cells]
    text = '\n'.join(lines)
    print(text)
    return text


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (Linux), to print beside CPU timings on a shared machine."""
    try:
        with open('/proc/loadavg', encoding='ascii') as f:
            return ' '.join(f.read().split()[:3])
    except OSError:
        return 'unknown'

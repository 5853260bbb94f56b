# SPDX-License-Identifier: Apache-2.0
"""Nearest training neighbours: Pearson correlation of voxels over small shifts and the x-mirror, and cosine
similarity of feature vectors; batched matrix products with torch on whatever device is given.

Voxel space. Volumes are compared in the stored units of the packed data (uint8 or uint16), all image channels as
one vector. The correlation of a query with a training case, maximised over shifts s in [-k, k]^3 voxels, is taken
on one fixed region: the training case's interior (k voxels left out at every border), against the query's window
moved by s. Every shift then compares the same number of voxels with no wrap-around, and with k = 0 the region is
the whole packed grid. Centring and scaling each window to unit norm turns the correlations of a batch into one
matrix product per shift (and per mirror: the query flipped along x, the W axis).

Exact by default: every query against every training case, in float32 (no TF32), with the standardised training
rows kept in memory when they fit. For large sets, `prefilter=K` first ranks the training cases by the correlation
of volumes average-pooled to at most 32 voxels per axis (over shifts of one pooled voxel and the mirror), then
computes the exact correlation, over every shift, for the K best candidates only; benchmarks/audit_search.py
measures how often that finds the exact nearest case (its recall).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from volumes.contract import dhw_to_xyz

POOLED_SIZE = 32  # The prefilter's largest pooled axis.

#----------------------------------------------------------------------------
# Results.


@dataclasses.dataclass
class Neighbours:
    """The nearest and second-nearest training cases of M queries.

    Attributes:
        index: [M] int64, the nearest training case.
        similarity: [M] float64, its similarity.
        second_index: [M] int64, the second-nearest (another) training case; -1 when there is none.
        second: [M] float64, its similarity (NaN when there is none).
        shift: [M, 3] int64, how far (x, y, z voxels) the query is moved against the nearest case at the best match.
        mirrored: [M] bool, whether the best match was the query's x-mirror.
    """
    index: np.ndarray
    similarity: np.ndarray
    second_index: np.ndarray
    second: np.ndarray
    shift: np.ndarray
    mirrored: np.ndarray

    @property
    def ratio(self) -> np.ndarray:
        """Nearest over second-nearest similarity; NaN where the second is not positive (no meaningful ratio)."""
        with np.errstate(divide='ignore', invalid='ignore'):
            return np.where(self.second > 0, self.similarity / self.second, np.nan)

    @staticmethod
    def concatenate(parts: list[Neighbours]) -> Neighbours:
        fields = [f.name for f in dataclasses.fields(Neighbours)]
        return Neighbours(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in fields})

#----------------------------------------------------------------------------
# Helpers.


def shift_offsets(k: int) -> list[tuple[int, int, int]]:
    """Every shift (dz, dy, dx) in [-k, k]^3, (0, 0, 0) first (it wins ties)."""
    offsets = [s for s in itertools.product(range(-k, k + 1), repeat=3) if s != (0, 0, 0)]
    return [(0, 0, 0), *offsets]


def standardize(x: torch.Tensor) -> torch.Tensor:
    """Rows [N, V] centred and scaled to unit norm, so the dot product of two rows is their Pearson correlation; a
    constant row (no variance, no defined correlation) becomes zeros and correlates 0 with everything."""
    x = x.float()
    x = x - x.mean(dim=1, keepdim=True)
    norm = x.norm(dim=1, keepdim=True)
    return torch.where(norm > 0, x / norm.clamp_min(1e-30), torch.zeros_like(x))


def interior(volumes: torch.Tensor, k: int, offset: tuple[int, int, int] = (0, 0, 0)) -> torch.Tensor:
    """The region [k, size - k) of every axis of [N, C, D, H, W], moved by offset (dz, dy, dx): [N, C, D', H', W']."""
    D, H, W = volumes.shape[-3:]
    dz, dy, dx = offset
    return volumes[..., k + dz:D - k + dz, k + dy:H - k + dy, k + dx:W - k + dx]


def check_shift(k: int, img_shape: tuple[int, int, int]) -> None:
    """A shift of k voxels leaves an interior of at least 2 voxels on every axis; ValueError otherwise."""
    if k < 0 or min(img_shape) - 2 * k < 2:
        raise ValueError(f'a shift of {k} voxels leaves no interior to compare in volumes of {min(img_shape)} voxels '
                         f'along their shortest axis; use at most {max((min(img_shape) - 2) // 2, 0)}')


def _top2(similarity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two largest values of each row [B, n] and their columns; a row of one column gets (-inf, -1) second."""
    B, n = similarity.shape
    if n < 2:
        similarity = torch.cat([similarity, similarity.new_full([B, 2 - n], -float('inf'))], dim=1)
    values, columns = similarity.topk(2, dim=1)
    return values, torch.where(torch.isinf(values), torch.full_like(columns, -1), columns)


def _pick(table: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """table[b, columns[b, j]] for columns [B, J]; -1 where the column is -1."""
    picked = torch.gather(table, 1, columns.clamp_min(0))
    return torch.where(columns >= 0, picked, torch.full_like(picked, -1))

#----------------------------------------------------------------------------
# Voxel space.

Variant = tuple[bool, tuple[int, int, int]]  # (x-mirrored, offset (dz, dy, dx))
CPU_CACHE_BYTES = 4 << 30  # Standardised training rows are kept when they fit this (on a GPU: half its free memory).


def variants_of(k: int, mirror: bool) -> list[Variant]:
    """Every (mirrored, offset) a query is matched in; the plain volume at offset 0 first."""
    return [(m, o) for m in ((False, True) if mirror else (False,)) for o in shift_offsets(k)]


def query_windows(queries: torch.Tensor, k: int, variants: list[Variant]) -> torch.Tensor:
    """[S, B, V]: the window of every query [B, C, D, H, W] in every variant, standardised."""
    x = queries.float()
    windows = [interior(x.flip(-1) if m else x, k, o).flatten(1) for m, o in variants]
    return standardize(torch.cat(windows)).reshape(len(windows), len(x), -1)  # [S*B, V] -> [S, B, V]


def training_rows(volumes: torch.Tensor, k: int) -> torch.Tensor:
    """[n, V]: the interiors of training volumes [n, C, D, H, W], standardised."""
    return standardize(interior(volumes.float(), k).flatten(1))


def best_variant(windows: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Correlations of every query with every training row at the best variant: values and variants [B, n]."""
    S, B, V = windows.shape
    similarity = (windows.reshape(S * B, V) @ rows.T).reshape(S, B, -1)  # [S, B, n]
    return similarity.max(dim=0)


@contextlib.contextmanager
def full_fp32() -> Iterator[None]:
    """Matrix products in full float32 (no TF32, whose 10-bit mantissa would blur correlations near 1)."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def cache_budget(device: torch.device) -> int:
    if device.type == 'cuda':
        return torch.cuda.mem_get_info(device)[0] // 2
    return CPU_CACHE_BYTES


class VoxelIndex:
    """The training set, ready for nearest-neighbour searches by voxel correlation.

    Args:
        train: Training volumes [N, C, D, H, W], stored integers (uint8, or uint16 held as int32) on their device.
        shift: k, the largest shift in voxels per axis.
        mirror: Also match the queries' x-mirror.
        prefilter: 0 for the exact search over every training case; K > 0: the exact correlation for the K
            candidates ranked first by the pooled volumes' correlation (over shifts of one pooled voxel and the mirror).
        train_chunk: Training cases per matrix product when their rows are not kept (bounds the memory).
        cache_bytes: Keep the standardised training rows (float32) when they fit this; None: half the GPU's free
            memory, or CPU_CACHE_BYTES on the CPU.
    """

    def __init__(self, train: torch.Tensor, shift: int = 1, mirror: bool = False, prefilter: int = 0,
                 train_chunk: int = 256, cache_bytes: int | None = None) -> None:
        check_shift(shift, tuple(train.shape[-3:]))
        self.train, self.shift, self.mirror = train, shift, mirror
        self.prefilter, self.train_chunk = prefilter, train_chunk
        self.variants = variants_of(shift, mirror)
        row_bytes = 4 * train.shape[1] * int(np.prod([s - 2 * shift for s in train.shape[-3:]]))  # float32 [V']
        budget = cache_budget(train.device) if cache_bytes is None else cache_bytes
        self._rows = None
        if len(train) * row_bytes <= budget:
            self._rows = torch.cat([training_rows(train[i:i + train_chunk], shift)
                                    for i in range(0, len(train), train_chunk)])  # [N, V']
        if prefilter > 0:
            self.pool = tuple(max(1, s // POOLED_SIZE) for s in train.shape[-3:])  # (D, H, W) factors
            pooled_shape = [s // f for s, f in zip(train.shape[-3:], self.pool)]
            self.coarse_shift = 1 if shift > 0 and min(pooled_shape) >= 4 else 0
            self.coarse_variants = variants_of(self.coarse_shift, mirror)
            self._coarse_rows = torch.cat([training_rows(self._pooled(train[i:i + train_chunk]), self.coarse_shift)
                                           for i in range(0, len(train), train_chunk)])  # [N, Vp]

    def __len__(self) -> int:
        return len(self.train)

    def _pooled(self, volumes: torch.Tensor) -> torch.Tensor:
        return F.avg_pool3d(volumes.float(), kernel_size=self.pool, stride=self.pool)  # [n, C, D/f, H/f, W/f]

    def _training_rows(self, index: slice | torch.Tensor) -> torch.Tensor:
        """Standardised rows of the training cases `index` (a slice or indices): kept, or made now."""
        return self._rows[index] if self._rows is not None else training_rows(self.train[index], self.shift)

    @torch.no_grad()
    def search(self, queries: torch.Tensor) -> Neighbours:
        """The nearest and second-nearest training cases of queries [B, C, D, H, W] (stored units, any device)."""
        queries = queries.to(self.train.device)
        with full_fp32():
            windows = query_windows(queries, self.shift, self.variants)  # [S, B, V']
            if self.prefilter > 0:
                values, index, variant = self._search_candidates(queries, windows)
            else:
                values, index, variant = self._search_all(windows)
        values = values.clamp(-1, 1)  # Rounding can pass 1 by an ulp.
        shift = np.array([dhw_to_xyz(self.variants[v][1]) for v in variant.tolist()], dtype=np.int64).reshape(-1, 3)
        second = index[:, 1].cpu().numpy()
        return Neighbours(index=index[:, 0].cpu().numpy().astype(np.int64),
                          similarity=values[:, 0].double().cpu().numpy(), second_index=second.astype(np.int64),
                          second=np.where(second >= 0, values[:, 1].double().cpu().numpy(), np.nan), shift=shift,
                          mirrored=np.array([self.variants[v][0] for v in variant.tolist()], dtype=bool))

    def _search_all(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B = windows.shape[1]
        best_values = windows.new_full([B, 2], -float('inf'))
        best_index = torch.full([B, 2], -1, dtype=torch.int64, device=windows.device)
        best_variants = torch.zeros([B, 2], dtype=torch.int64, device=windows.device)
        chunk = len(self.train) if self._rows is not None else self.train_chunk
        for start in range(0, len(self.train), chunk):
            rows = self._training_rows(slice(start, start + chunk))  # [n, V']
            per_case, variant = best_variant(windows, rows)  # [B, n]: each training case at its best variant
            index = torch.arange(start, start + len(rows), device=windows.device).expand(B, -1)
            best_values, columns = _top2(torch.cat([best_values, per_case], dim=1))  # Running top 2 over chunks.
            best_index = _pick(torch.cat([best_index, index], dim=1), columns)
            best_variants = _pick(torch.cat([best_variants, variant], dim=1), columns)
        return best_values, best_index, best_variants[:, 0]

    def _search_candidates(self, queries: torch.Tensor,
                           windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        coarse_windows = query_windows(self._pooled(queries), self.coarse_shift, self.coarse_variants)
        coarse, _ = best_variant(coarse_windows, self._coarse_rows)  # [B, N]
        K = min(self.prefilter, len(self.train))
        candidates = coarse.topk(K, dim=1).indices  # [B, K]
        B = len(queries)
        rows = self._training_rows(candidates.flatten()).reshape(B, K, -1)  # [B*K, V'] -> [B, K, V']
        similarity = torch.einsum('sbv,bkv->sbk', windows, rows)  # [S, B, K]
        per_case, variant = similarity.max(dim=0)  # [B, K]
        values, columns = _top2(per_case)
        return values, _pick(candidates, columns), _pick(variant, columns)[:, 0]

#----------------------------------------------------------------------------
# Feature space.


@torch.no_grad()
def nearest_by_cosine(train: torch.Tensor, queries: torch.Tensor,
                      mirrored_queries: torch.Tensor | None = None) -> Neighbours:
    """Nearest and second-nearest training rows by cosine similarity of features [N, F] and [M, F]; with
    mirrored_queries [M, F] (the features of the x-mirrored queries) the better of the two counts."""
    t = F.normalize(train.double(), dim=1)
    similarity = F.normalize(queries.double(), dim=1) @ t.T  # [M, N]
    mirrored = torch.zeros(len(queries), dtype=torch.bool)
    if mirrored_queries is not None:
        flipped = F.normalize(mirrored_queries.double(), dim=1) @ t.T
        mirrored = (flipped.max(dim=1).values > similarity.max(dim=1).values).cpu()
        similarity = torch.maximum(similarity, flipped)
    values, index = _top2(similarity)
    index, values = index.cpu().numpy().astype(np.int64), values.cpu().numpy()
    return Neighbours(index=index[:, 0], similarity=values[:, 0], second_index=index[:, 1],
                      second=np.where(index[:, 1] >= 0, values[:, 1], np.nan),
                      shift=np.zeros([len(queries), 3], dtype=np.int64), mirrored=mirrored.numpy())

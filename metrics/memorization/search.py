# SPDX-License-Identifier: Apache-2.0
"""Nearest training neighbours: Pearson correlation of voxels over small shifts and the x-mirror, and cosine
similarity of feature vectors; batched matrix products with torch on whatever device is given.

Voxel space. Volumes are compared in the stored units of the packed data (uint8 or uint16), all image channels as
one vector. The correlation of a query with a training case, maximised over shifts s in [-k, k]^3 voxels, is taken
on one fixed region: the training case's interior (k voxels left out at every border), against the query's window
moved by s. Every shift then compares the same number of voxels with no wrap-around, and with k = 0 the region is
the whole packed grid. Centring and scaling each window to unit norm turns the correlations of a batch into one
matrix product per shift (and per mirror: the query flipped along x, the W axis).

Exact by default: every query against every training case. For large sets, `prefilter=K` first ranks the training
cases by the correlation of volumes average-pooled to at most 32 voxels per axis (no shifts, with the mirror), then
computes the exact correlation, over every shift, for the K best candidates only; benchmarks/audit_search.py
measures how often that finds the exact nearest case (its recall).
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import torch
import torch.nn.functional as F

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


class VoxelIndex:
    """The training set, ready for nearest-neighbour searches by voxel correlation.

    Args:
        train: Training volumes [N, C, D, H, W], stored integers (uint8, or uint16 held as int32) on `device`.
        shift: k, the largest shift in voxels per axis.
        mirror: Also match the queries' x-mirror.
        prefilter: 0 for the exact search over every training case; K > 0: the exact correlation for the K
            candidates the pooled volumes rank first.
        train_chunk: Training cases per matrix product (bounds the memory of the exact search).
    """

    def __init__(self, train: torch.Tensor, shift: int = 1, mirror: bool = False, prefilter: int = 0,
                 train_chunk: int = 256) -> None:
        check_shift(shift, tuple(train.shape[-3:]))
        self.train, self.shift, self.mirror = train, shift, mirror
        self.prefilter, self.train_chunk = prefilter, train_chunk
        self.offsets = shift_offsets(shift)
        self.pool = tuple(max(1, s // POOLED_SIZE) for s in train.shape[-3:])  # (D, H, W) factors
        self._pooled = None
        if prefilter > 0:
            pooled = [self._pooled_rows(train[i:i + train_chunk]) for i in range(0, len(train), train_chunk)]
            self._pooled = torch.cat(pooled)  # [N, V_pooled]

    def __len__(self) -> int:
        return len(self.train)

    @property
    def variants(self) -> list[tuple[bool, tuple[int, int, int]]]:
        """Every (mirrored, offset) a query is matched in."""
        return [(m, o) for m in ((False, True) if self.mirror else (False,)) for o in self.offsets]

    def _pooled_rows(self, volumes: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool3d(volumes.float(), kernel_size=self.pool, stride=self.pool)  # [n, C, D/f, H/f, W/f]
        return standardize(x.flatten(1))

    def _query_windows(self, queries: torch.Tensor) -> torch.Tensor:
        """[S, B, V']: every variant's window of every query, standardised."""
        x = queries.float()
        windows = [interior(x.flip(-1) if m else x, self.shift, o).flatten(1) for m, o in self.variants]
        return standardize(torch.cat(windows)).reshape(len(windows), len(x), -1)  # [S*B, V'] -> [S, B, V']

    def _train_rows(self, volumes: torch.Tensor) -> torch.Tensor:
        """[n, V']: the training cases' interiors, standardised."""
        return standardize(interior(volumes.float(), self.shift).flatten(1))

    @torch.no_grad()
    def search(self, queries: torch.Tensor) -> Neighbours:
        """The nearest and second-nearest training cases of queries [B, C, D, H, W] (stored units, any device)."""
        queries = queries.to(self.train.device)
        windows = self._query_windows(queries)  # [S, B, V']
        if self.prefilter > 0:
            values, index, variant = self._search_candidates(queries, windows)
        else:
            values, index, variant = self._search_all(windows)
        values = values.clamp(-1, 1)  # Rounding can pass 1 by an ulp.
        variants = self.variants
        shift = np.array([variants[v][1][::-1] for v in variant.tolist()], dtype=np.int64).reshape(-1, 3)  # (x, y, z)
        return Neighbours(index=index[:, 0].cpu().numpy().astype(np.int64),
                          similarity=values[:, 0].double().cpu().numpy(),
                          second_index=index[:, 1].cpu().numpy().astype(np.int64),
                          second=np.where(index[:, 1].cpu().numpy() >= 0, values[:, 1].double().cpu().numpy(), np.nan),
                          shift=shift, mirrored=np.array([variants[v][0] for v in variant.tolist()], dtype=bool))

    def _search_all(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        S, B, V = windows.shape
        best_values = windows.new_full([B, 2], -float('inf'))
        best_index = torch.full([B, 2], -1, dtype=torch.int64, device=windows.device)
        best_variant = torch.zeros([B, 2], dtype=torch.int64, device=windows.device)
        for start in range(0, len(self.train), self.train_chunk):
            rows = self._train_rows(self.train[start:start + self.train_chunk])  # [n, V']
            similarity = (windows.reshape(S * B, V) @ rows.T).reshape(S, B, -1)  # [S, B, n]
            per_case, variant = similarity.max(dim=0)  # [B, n]: each training case at its best variant
            index = torch.arange(start, start + len(rows), device=windows.device).expand(B, -1)
            best_values, columns = _top2(torch.cat([best_values, per_case], dim=1))  # Running top 2 over chunks.
            best_index = _pick(torch.cat([best_index, index], dim=1), columns)
            best_variant = _pick(torch.cat([best_variant, variant], dim=1), columns)
        return best_values, best_index, best_variant[:, 0]

    def _search_candidates(self, queries: torch.Tensor,
                           windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pooled = self._pooled_rows(queries)  # [B, Vp]
        coarse = pooled @ self._pooled.T  # [B, N]
        if self.mirror:
            coarse = torch.maximum(coarse, self._pooled_rows(queries.flip(-1)) @ self._pooled.T)
        K = min(self.prefilter, len(self.train))
        candidates = coarse.topk(K, dim=1).indices  # [B, K]
        B = len(queries)
        rows = self._train_rows(self.train[candidates.flatten()]).reshape(B, K, -1)  # [B*K, V'] -> [B, K, V']
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

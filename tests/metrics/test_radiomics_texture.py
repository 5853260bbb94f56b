# SPDX-License-Identifier: Apache-2.0
"""The vectorised texture matrices equal voxel-by-voxel loops written from PyRadiomics' definitions.

The baseline test covers distance 1 and PyRadiomics' two cases; these random ROIs add distance 2, gldm_a > 0,
diagonal runs in every direction, zones that touch only at a corner, and a ROI seen edge-on.
"""

import itertools
from collections import Counter

import numpy as np
import pytest

from metrics.radiomics import texture


def random_levels(seed: int, shape=(5, 6, 7), levels: int = 4, fill: float = 0.7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = rng.integers(1, levels + 1, size=shape).astype(np.int32)
    out[rng.random(shape) > fill] = 0
    return out


def inside(shape, p) -> bool:
    return all(0 <= c < n for c, n in zip(p, shape))


def voxels(levels):
    return [p for p in itertools.product(*map(range, levels.shape)) if levels[p] > 0]


def add(p, o, k=1):
    return tuple(a + k * b for a, b in zip(p, o))

#----------------------------------------------------------------------------


def test_angles_count_and_collapse():
    assert len(texture.angles((5, 5, 5), (1,))) == 13
    assert len(texture.angles((5, 5, 5), (1,), bidirectional=True)) == 26
    assert len(texture.angles((5, 5, 5), (2,), bidirectional=True)) == 5 ** 3 - 3 ** 3
    assert len(texture.angles((5, 5, 5), (1, 2))) == (5 ** 3 - 1) // 2
    flat = texture.angles((1, 5, 5), (1,))  # A one-slice ROI has no through-plane angles.
    assert len(flat) == 4 and not flat[:, 0].any()
    for offset in texture.angles((5, 5, 5), (1, 2)):  # One of each +- pair.
        assert tuple(-offset) not in {tuple(o) for o in texture.angles((5, 5, 5), (1, 2))}


@pytest.mark.parametrize('distances', [(1,), (1, 2)])
def test_glcm_counts(distances):
    levels = random_levels(0)
    counts, offsets = texture.glcm_matrix(levels, distances)
    want = np.zeros_like(counts)
    for p in voxels(levels):
        for a, o in enumerate(offsets):
            q = add(p, o)
            if inside(levels.shape, q) and levels[q] > 0:
                want[a, levels[p] - 1, levels[q] - 1] += 1
    np.testing.assert_array_equal(counts, want)


def brute_runs(levels, direction) -> Counter:
    """(level, length) of every run, walking each line from its first voxel."""
    runs = Counter()
    for p in itertools.product(*map(range, levels.shape)):
        if inside(levels.shape, add(p, direction, -1)):
            continue  # Not the start of a line.
        line, q = [], p
        while inside(levels.shape, q):
            line.append(levels[q])
            q = add(q, direction)
        for level, group in itertools.groupby(line):
            if level > 0:
                runs[(level, len(list(group)))] += 1
    return runs


@pytest.mark.parametrize('seed', [1, 2])
def test_glrlm_runs_in_all_13_directions(seed):
    levels = random_levels(seed)
    counts, offsets = texture.glrlm_matrix(levels)
    assert len(offsets) == 13 and (offsets < 0).any()
    for a, direction in enumerate(offsets):
        got = Counter({(g + 1, r + 1): int(n) for (g, r), n in np.ndenumerate(counts[a]) if n})
        assert got == brute_runs(levels, direction), f'direction {direction}'


def test_glrlm_leaves_a_direction_empty_when_no_line_crosses_the_roi_twice():
    levels = np.zeros((2, 1, 4), dtype=np.int32)
    levels[0, 0, :2] = 1
    levels[1, 0, 2:] = 2
    counts, offsets = texture.glrlm_matrix(levels)
    through = [a for a, o in enumerate(offsets) if tuple(o) == (1, 0, 0)][0]
    assert counts[through].sum() == 0
    assert counts.sum() > 0


def brute_zones(levels) -> Counter:
    """(level, size) of every 26-connected zone, by flood fill."""
    seen, zones = set(), Counter()
    steps = [o for o in itertools.product((-1, 0, 1), repeat=3) if any(o)]
    for p in voxels(levels):
        if p in seen:
            continue
        stack, size = [p], 0
        seen.add(p)
        while stack:
            q = stack.pop()
            size += 1
            for o in steps:
                r = add(q, o)
                if inside(levels.shape, r) and r not in seen and levels[r] == levels[p]:
                    seen.add(r)
                    stack.append(r)
        zones[(int(levels[p]), size)] += 1
    return zones


@pytest.mark.parametrize('seed', [3, 4])
def test_glszm_zones_are_26_connected(seed):
    levels = random_levels(seed, levels=2, fill=0.5)
    level, size = texture.glszm_zones(levels)
    assert Counter(zip(level.tolist(), size.tolist())) == brute_zones(levels)
    corner = np.zeros((2, 2, 2), dtype=np.int32)
    corner[0, 0, 0] = corner[1, 1, 1] = 1  # Touching at a corner only: one zone of 2.
    assert texture.glszm_zones(corner)[1].tolist() == [2]


@pytest.mark.parametrize('distances,alpha', [((1,), 0), ((1, 2), 1)])
def test_gldm_and_ngtdm_neighbourhoods(distances, alpha):
    levels = random_levels(5)
    offsets = texture.angles(levels.shape, distances, bidirectional=True)
    dependence = texture.gldm_dependence(levels, distances, alpha)
    present, n, s = texture.ngtdm_matrix(levels, distances)
    want_n, want_s = Counter(), Counter()
    for p in voxels(levels):
        neighbours = [levels[add(p, o)] for o in offsets if inside(levels.shape, add(p, o)) and levels[add(p, o)] > 0]
        assert dependence[p] == sum(abs(int(levels[p]) - int(v)) <= alpha for v in neighbours)
        want_n[levels[p]] += 1
        want_s[levels[p]] += abs(levels[p] - np.mean(neighbours)) if neighbours else 0.0
    np.testing.assert_array_equal(n, [want_n[g] for g in present])
    np.testing.assert_allclose(s, [want_s[g] for g in present], rtol=1e-12)


def test_flat_roi_values_follow_pyradiomics_conventions():
    levels = np.ones((3, 3, 3), dtype=np.int32)
    glcm = texture.glcm_features(levels)
    assert glcm['MCC'] == 1 and glcm['Correlation'] == 1 and glcm['Imc1'] == 0 and glcm['Imc2'] == 0
    ngtdm = texture.ngtdm_features(levels)
    assert ngtdm['Coarseness'] == 1e6 and ngtdm['Contrast'] == 0 and ngtdm['Busyness'] == 0

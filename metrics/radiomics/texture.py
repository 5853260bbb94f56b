# SPDX-License-Identifier: Apache-2.0
"""PyRadiomics' texture classes: GLCM, GLRLM, GLSZM, GLDM and NGTDM, vectorised with NumPy.

Each class reads the gray levels of one ROI ([D, H, W] int, 1..Ng inside the ROI, 0 outside; see
roi.discretize), builds its matrix with whole-array operations (shifted slices, np.bincount, a sparse graph for the
zones) and returns its features under PyRadiomics' names. Matrix rows are the gray levels that occur in the ROI;
gray-level values (not their ranks) enter the formulas, as in PyRadiomics.

Neighbours are offsets (z, y, x) whose largest component is one of the distances and which fit inside the ROI's
bounding box. GLCM and GLRLM use one direction per angle (13 at distance 1), GLSZM, GLDM and NGTDM both (26).
Features of the angle-wise matrices (GLCM, GLRLM) are computed per angle and averaged over the angles that hold
any count, as PyRadiomics does.
"""

from __future__ import annotations

import itertools

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph

from volumes.contract import xyz_to_dhw

EPS = np.spacing(1)  # PyRadiomics' guard inside the logarithms.

#----------------------------------------------------------------------------
# Neighbourhoods.


def angles(shape: tuple[int, ...], distances=(1,), bidirectional: bool = False) -> np.ndarray:
    """Offsets [Na, 3] (z, y, x) at the given infinity-norm distances that fit inside shape.

    One-directional sets keep the offset of each +-pair whose first nonzero component is positive.
    """
    reach = max(distances)
    offsets = []
    for offset in itertools.product(range(reach, -reach - 1, -1), repeat=len(shape)):
        norm = max(abs(o) for o in offset)
        if norm not in distances or any(abs(o) >= n for o, n in zip(offset, shape)):
            continue
        first = next(o for o in offset if o != 0)
        if bidirectional or first > 0:
            offsets.append(offset)
    return np.array(offsets, dtype=np.int64).reshape(-1, len(shape))


def pair_slices(shape: tuple[int, ...], offset) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Slices (src, dst) such that array[dst] holds, for each voxel of array[src], its neighbour at +offset."""
    src = tuple(slice(max(0, -o), n - max(0, o)) for o, n in zip(offset, shape))
    dst = tuple(slice(max(0, o), n - max(0, -o)) for o, n in zip(offset, shape))
    return src, dst


def _gray_levels(levels: np.ndarray) -> tuple[np.ndarray, int]:
    """The gray levels present in the ROI (sorted) and Ng, the largest."""
    present = np.unique(levels[levels > 0])
    return present, int(present[-1])


def _nanmean(values: np.ndarray) -> float:
    """Mean over angles, ignoring NaN (an angle without counts); NaN when no angle has counts."""
    values = np.asarray(values, dtype=np.float64)
    finite = ~np.isnan(values)
    return float(values[finite].mean()) if finite.any() else float('nan')


def _angle_weights(offsets: np.ndarray, spacing_xyz, norm: str, glcm: bool) -> np.ndarray:
    """PyRadiomics' distance weights of the angles: GLCM exp(-d^2), GLRLM d, with d the angle's length in mm."""
    steps = np.abs(offsets) * np.asarray(xyz_to_dhw(spacing_xyz), dtype=np.float64)  # [Na, 3] mm along (z, y, x).
    if norm == 'no_weighting':
        return np.ones(len(offsets))
    if norm == 'infinity':
        d = steps.max(1)
    elif norm == 'euclidean':
        d = np.sqrt((steps ** 2).sum(1))
    else:  # manhattan
        d = steps.sum(1)
    return np.exp(-d ** 2) if glcm else d


def _entropy(p: np.ndarray, axis) -> np.ndarray:
    return -np.sum(p * np.log2(p + EPS), axis=axis)

#----------------------------------------------------------------------------
# GLCM.


def glcm_matrix(levels: np.ndarray, distances=(1,)) -> tuple[np.ndarray, np.ndarray]:
    """Co-occurrence counts [Na, Ng, Ng] (one direction per angle, gray levels 1..Ng) and the offsets [Na, 3]."""
    _, ng = _gray_levels(levels)
    offsets = angles(levels.shape, distances, bidirectional=False)
    counts = np.zeros((len(offsets), ng, ng))
    for a, offset in enumerate(offsets):
        src, dst = pair_slices(levels.shape, offset)
        x, y = levels[src], levels[dst]
        both = (x > 0) & (y > 0)
        counts[a] = np.bincount((x[both] - 1) * ng + y[both] - 1, minlength=ng * ng).reshape(ng, ng)
    return counts, offsets


def glcm_features(levels: np.ndarray, distances=(1,), symmetrical: bool = True, weighting: str | None = None,
                  spacing_xyz=(1.0, 1.0, 1.0), mcc: bool = True) -> dict[str, float]:
    """PyRadiomics' 24 GLCM features of an ROI's gray levels [D, H, W] (MCC NaN unless mcc: its eigenvalues take
    most of the time, and some feature sets, such as FRD's, leave it out)."""
    present, ng = _gray_levels(levels)
    counts, offsets = glcm_matrix(levels, distances)
    P = counts[:, present - 1][:, :, present - 1]  # [Na, n, n]: only gray levels that occur.
    if symmetrical:
        P = P + P.transpose(0, 2, 1)
    if weighting is not None:
        P = np.tensordot(_angle_weights(offsets, spacing_xyz, weighting, glcm=True), P, axes=1)[None]
    totals = P.sum((1, 2))
    P = P[totals > 0] / totals[totals > 0, None, None]  # Empty angles carry no information: dropped.
    if len(P) == 0:
        return {name: float('nan') for name in GLCM_NAMES}
    return _glcm_from_probabilities(P, present.astype(np.float64), ng, mcc)


def _glcm_sum_diff(P: np.ndarray, g: np.ndarray, ng: int) -> tuple[np.ndarray, np.ndarray]:
    """p_{x+y}(k) for k = 2..2Ng [Na, 2Ng-1] and p_{x-y}(k) for k = 0..Ng-1 [Na, Ng]."""
    sum_index = (g[:, None] + g[None, :] - 2).astype(np.int64).ravel()
    diff_index = np.abs(g[:, None] - g[None, :]).astype(np.int64).ravel()
    flat = P.reshape(len(P), -1)  # [Na, n*n]
    p_sum = np.stack([np.bincount(sum_index, weights=row, minlength=2 * ng - 1) for row in flat])
    p_diff = np.stack([np.bincount(diff_index, weights=row, minlength=ng) for row in flat])
    return p_sum, p_diff


def _glcm_from_probabilities(P: np.ndarray, g: np.ndarray, ng: int, mcc: bool = True) -> dict[str, float]:
    i, j = g[None, :, None], g[None, None, :]        # [1, n, 1], [1, 1, n]
    px, py = P.sum(2), P.sum(1)                       # [Na, n]
    ux = (px * g).sum(1)[:, None, None]               # [Na, 1, 1]
    uy = (py * g).sum(1)[:, None, None]
    p_sum, p_diff = _glcm_sum_diff(P, g, ng)
    k_sum, k_diff = np.arange(2, 2 * ng + 1, dtype=np.float64), np.arange(ng, dtype=np.float64)
    hxy = _entropy(P, (1, 2))
    total = lambda weights: P.__mul__(weights).sum((1, 2))  # noqa: E731  Sum over the matrix, per angle.
    sigx, sigy = np.sqrt(total((i - ux) ** 2)), np.sqrt(total((j - uy) ** 2))
    correlation = total((i - ux) * (j - uy)) / (sigx * sigy + EPS)
    correlation[sigx * sigy == 0] = 1  # A flat angle is perfectly correlated.
    diff_average = (k_diff * p_diff).sum(1)
    f = {
        'Autocorrelation': _nanmean(total(i * j)),
        'JointAverage': float(ux.mean()),
        'ClusterProminence': _nanmean(total((i + j - ux - uy) ** 4)),
        'ClusterShade': _nanmean(total((i + j - ux - uy) ** 3)),
        'ClusterTendency': _nanmean(total((i + j - ux - uy) ** 2)),
        'Contrast': _nanmean(total((i - j) ** 2)),
        'Correlation': _nanmean(correlation),
        'DifferenceAverage': _nanmean(diff_average),
        'DifferenceEntropy': _nanmean(_entropy(p_diff, 1)),
        'DifferenceVariance': _nanmean((p_diff * (k_diff - diff_average[:, None]) ** 2).sum(1)),
        'JointEnergy': _nanmean((P ** 2).sum((1, 2))),
        'JointEntropy': _nanmean(hxy),
        'Idm': _nanmean((p_diff / (1 + k_diff ** 2)).sum(1)),
        'Idmn': _nanmean((p_diff / (1 + k_diff ** 2 / ng ** 2)).sum(1)),
        'Id': _nanmean((p_diff / (1 + k_diff)).sum(1)),
        'Idn': _nanmean((p_diff / (1 + k_diff / ng)).sum(1)),
        'InverseVariance': _nanmean((p_diff[:, 1:] / k_diff[1:] ** 2).sum(1)),
        'MaximumProbability': _nanmean(P.max((1, 2))),
        'SumAverage': _nanmean((k_sum * p_sum).sum(1)),
        'SumEntropy': _nanmean(_entropy(p_sum, 1)),
        'SumSquares': _nanmean(total((i - ux) ** 2)),
        'MCC': _glcm_mcc(P, px, py) if mcc else float('nan'),
    }
    f.update(_glcm_imc(P, px, py, hxy))
    return f


def _glcm_imc(P: np.ndarray, px: np.ndarray, py: np.ndarray, hxy: np.ndarray) -> dict[str, float]:
    """Informational measures of correlation 1 and 2."""
    pxy = px[:, :, None] * py[:, None, :]  # [Na, n, n]: the product of the marginals.
    hx, hy = _entropy(px, 1), _entropy(py, 1)
    hxy1 = -np.sum(P * np.log2(pxy + EPS), (1, 2))
    hxy2 = _entropy(pxy, (1, 2))
    div = np.fmax(hx, hy)
    imc1 = np.where(div != 0, (hxy - hxy1) / np.where(div != 0, div, 1), 0.0)
    with np.errstate(invalid='ignore'):  # HXY > HXY2 only through rounding: a NaN that the mean skips.
        imc2 = np.sqrt(1 - np.exp(-2 * (hxy2 - hxy)))
    imc2[hxy2 == hxy] = 0
    return {'Imc1': _nanmean(imc1), 'Imc2': _nanmean(imc2)}


def _glcm_mcc(P: np.ndarray, px: np.ndarray, py: np.ndarray) -> float:
    """Maximal correlation coefficient: sqrt of the second largest eigenvalue of Q = sum_k P_ik P_jk / (px_i py_k)."""
    if P.shape[1] < 2:
        return 1.0  # A flat ROI.
    Q = np.einsum('aik,ajk->aij', P / (px[:, :, None] * py[:, None, :] + EPS), P)  # [Na, n, n]
    eig = np.sort(np.linalg.eigvals(Q).real, axis=1)
    return _nanmean(np.sqrt(np.clip(eig[:, -2], 0, None)))

#----------------------------------------------------------------------------
# GLRLM.


def _lines(levels: np.ndarray, direction) -> np.ndarray:
    """The lines of the volume along direction (components -1, 0, 1) as rows [L, n], padded with zeros.

    Axes with a negative component are flipped so the direction runs forwards; for a diagonal, the other moving
    axes are sheared by the first one, which turns every line into a line along that axis.
    """
    direction = np.asarray(direction)
    flipped = np.flip(levels, axis=tuple(np.flatnonzero(direction < 0)))
    moving = np.flatnonzero(direction)
    first = moving[0]
    length = levels.shape[first]
    if len(moving) > 1:
        index = list(np.indices(levels.shape, sparse=True))  # Broadcastable [D,1,1], [1,H,1], [1,1,W].
        shape = list(levels.shape)
        for axis in moving[1:]:
            index[axis] = index[axis] + (length - 1 - index[first])  # Constant along the line.
            shape[axis] += length - 1
        sheared = np.zeros(shape, dtype=levels.dtype)
        sheared[tuple(index)] = flipped
        flipped = sheared
    return np.moveaxis(flipped, first, -1).reshape(-1, length)


def _runs(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gray level and length of every run (maximal stretch of one nonzero level) in the rows [L, n]."""
    flat = np.concatenate([rows, np.zeros((len(rows), 1), rows.dtype)], axis=1).ravel()  # A 0 ends every row.
    starts = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1])
    lengths = np.diff(np.append(starts, flat.size))
    values = flat[starts]
    return values[values > 0], lengths[values > 0]


def glrlm_matrix(levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run counts [Na, Ng, Nr] (Nr: the longest side of the box) over the 13 directions, and the offsets [Na, 3].

    A direction along which no line crosses the ROI more than once is left empty (a flat ROI seen edge-on), as
    PyRadiomics does.
    """
    _, ng = _gray_levels(levels)
    nr = max(levels.shape)
    offsets = angles(levels.shape, (1,), bidirectional=False)
    levels = _compact(levels)
    counts = np.zeros((len(offsets), ng, nr))
    for a, offset in enumerate(offsets):
        rows = _lines(levels, offset)
        crossings = np.count_nonzero(rows, axis=1)  # ROI voxels on each line.
        if not np.any(crossings > 1):
            continue
        gl, length = _runs(rows[crossings > 0])  # Lines that miss the ROI hold no run.
        counts[a] = np.bincount((gl.astype(np.int64) - 1) * nr + length - 1, minlength=ng * nr).reshape(ng, nr)
    return counts, offsets


def glrlm_features(levels: np.ndarray, weighting: str | None = None,
                   spacing_xyz=(1.0, 1.0, 1.0)) -> dict[str, float]:
    """PyRadiomics' 16 GLRLM features of an ROI's gray levels [D, H, W]."""
    present, _ = _gray_levels(levels)
    counts, offsets = glrlm_matrix(levels)
    P = counts[:, present - 1]  # [Na, n, Nr]
    if weighting is not None:
        P = np.tensordot(_angle_weights(offsets, spacing_xyz, weighting, glcm=False), P, axes=1)[None]
    n_runs = P.sum((1, 2))
    P, n_runs = P[n_runs > 0], n_runs[n_runs > 0]
    if len(P) == 0:
        return {name: float('nan') for name in GLRLM_NAMES}
    i = present.astype(np.float64)[None, :, None]                        # [1, n, 1]
    j = np.arange(1, P.shape[2] + 1, dtype=np.float64)[None, None, :]   # [1, 1, Nr]
    pr, pg = P.sum(1), P.sum(2)                                          # [Na, Nr], [Na, n]
    per_run = lambda weights: (P * weights).sum((1, 2)) / n_runs  # noqa: E731  Mean of weights over runs.
    pg_norm, pr_norm = pg / n_runs[:, None], pr / n_runs[:, None]
    mean_i = (pg_norm * i[0, :, 0]).sum(1, keepdims=True)
    mean_j = (pr_norm * j[0, 0]).sum(1, keepdims=True)
    return {
        'ShortRunEmphasis': _nanmean(per_run(1 / j ** 2)),
        'LongRunEmphasis': _nanmean(per_run(j ** 2)),
        'GrayLevelNonUniformity': _nanmean((pg ** 2).sum(1) / n_runs),
        'GrayLevelNonUniformityNormalized': _nanmean((pg ** 2).sum(1) / n_runs ** 2),
        'RunLengthNonUniformity': _nanmean((pr ** 2).sum(1) / n_runs),
        'RunLengthNonUniformityNormalized': _nanmean((pr ** 2).sum(1) / n_runs ** 2),
        'RunPercentage': _nanmean(n_runs / (pr * j[0]).sum(1)),
        'GrayLevelVariance': _nanmean((pg_norm * (i[0, :, 0] - mean_i) ** 2).sum(1)),
        'RunVariance': _nanmean((pr_norm * (j[0, 0] - mean_j) ** 2).sum(1)),
        'RunEntropy': _nanmean(_entropy(P / n_runs[:, None, None], (1, 2))),
        'LowGrayLevelRunEmphasis': _nanmean(per_run(1 / i ** 2)),
        'HighGrayLevelRunEmphasis': _nanmean(per_run(i ** 2)),
        'ShortRunLowGrayLevelEmphasis': _nanmean(per_run(1 / (i ** 2 * j ** 2))),
        'ShortRunHighGrayLevelEmphasis': _nanmean(per_run(i ** 2 / j ** 2)),
        'LongRunLowGrayLevelEmphasis': _nanmean(per_run(j ** 2 / i ** 2)),
        'LongRunHighGrayLevelEmphasis': _nanmean(per_run(i ** 2 * j ** 2)),
    }

#----------------------------------------------------------------------------
# GLSZM.


def glszm_zones(levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gray level and size (voxels) of every zone: 26-connected voxels of one gray level.

    One sparse graph holds an edge between each pair of touching ROI voxels of equal level; its connected
    components are the zones of all gray levels at once.
    """
    inside = levels > 0
    index = np.full(levels.shape, -1, dtype=np.int64)
    index[inside] = np.arange(int(inside.sum()))
    rows, cols = [], []
    for offset in angles(levels.shape, (1,), bidirectional=False):  # Edges are undirected: one way suffices.
        src, dst = pair_slices(levels.shape, offset)
        same = (levels[src] > 0) & (levels[src] == levels[dst])
        rows.append(index[src][same])
        cols.append(index[dst][same])
    n = int(inside.sum())
    rows, cols = np.concatenate(rows + [np.zeros(0, np.int64)]), np.concatenate(cols + [np.zeros(0, np.int64)])
    graph = scipy.sparse.coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
    n_zones, zone = scipy.sparse.csgraph.connected_components(graph, directed=False)
    zone_level = np.zeros(n_zones, dtype=np.int64)
    zone_level[zone] = levels[inside]
    return zone_level, np.bincount(zone, minlength=n_zones)


def glszm_features(levels: np.ndarray) -> dict[str, float]:
    """PyRadiomics' 16 GLSZM features of an ROI's gray levels [D, H, W]."""
    present, ng = _gray_levels(levels)
    zone_level, zone_size = glszm_zones(levels)
    ns = int(zone_size.max())
    P = np.bincount((zone_level - 1) * ns + zone_size - 1, minlength=ng * ns).reshape(ng, ns)[present - 1]
    return _size_matrix_features(P.astype(np.float64), present, GLSZM_TERMS)


def _size_matrix_features(P: np.ndarray, present: np.ndarray, terms: dict[str, str]) -> dict[str, float]:
    """Features of a gray level x size matrix [n, Ns] (GLSZM: zone sizes; GLDM: dependence counts + 1).

    Both classes share the formulas; `terms` maps the generic names below to the class's feature names.
    """
    i = present.astype(np.float64)[:, None]                  # [n, 1]
    j = np.arange(1, P.shape[1] + 1, dtype=np.float64)[None]  # [1, Ns]
    nz = P.sum()
    ps, pg = P.sum(0), P.sum(1)                                # [Ns], [n]
    mean = lambda weights: float((P * weights).sum() / nz)  # noqa: E731
    pg_n, ps_n = pg / nz, ps / nz
    generic = {
        'small': mean(1 / j ** 2), 'large': mean(j ** 2),
        'gln': float((pg ** 2).sum() / nz), 'glnn': float((pg ** 2).sum() / nz ** 2),
        'sn': float((ps ** 2).sum() / nz), 'snn': float((ps ** 2).sum() / nz ** 2),
        'percentage': float(nz / (ps * j[0]).sum()),
        'glv': float((pg_n * (i[:, 0] - (pg_n * i[:, 0]).sum()) ** 2).sum()),
        'sv': float((ps_n * (j[0] - (ps_n * j[0]).sum()) ** 2).sum()),
        'entropy': float(_entropy(P / nz, (0, 1))),
        'low': mean(1 / i ** 2), 'high': mean(i ** 2),
        'small_low': mean(1 / (i ** 2 * j ** 2)), 'small_high': mean(i ** 2 / j ** 2),
        'large_low': mean(j ** 2 / i ** 2), 'large_high': mean(i ** 2 * j ** 2),
    }
    return {name: generic[key] for key, name in terms.items()}


GLSZM_TERMS = {
    'small': 'SmallAreaEmphasis', 'large': 'LargeAreaEmphasis', 'gln': 'GrayLevelNonUniformity',
    'glnn': 'GrayLevelNonUniformityNormalized', 'sn': 'SizeZoneNonUniformity',
    'snn': 'SizeZoneNonUniformityNormalized', 'percentage': 'ZonePercentage', 'glv': 'GrayLevelVariance',
    'sv': 'ZoneVariance', 'entropy': 'ZoneEntropy', 'low': 'LowGrayLevelZoneEmphasis',
    'high': 'HighGrayLevelZoneEmphasis', 'small_low': 'SmallAreaLowGrayLevelEmphasis',
    'small_high': 'SmallAreaHighGrayLevelEmphasis', 'large_low': 'LargeAreaLowGrayLevelEmphasis',
    'large_high': 'LargeAreaHighGrayLevelEmphasis',
}

#----------------------------------------------------------------------------
# GLDM.


def gldm_dependence(levels: np.ndarray, distances=(1,), alpha: float = 0) -> np.ndarray:
    """Per voxel [D, H, W]: how many neighbours in the ROI differ from it by at most alpha gray levels (meaningful
    inside the ROI only)."""
    levels = _compact(levels)
    dependent = np.zeros(levels.shape, dtype=np.int32)
    for offset in angles(levels.shape, distances, bidirectional=True):
        src, dst = pair_slices(levels.shape, offset)
        neighbour = levels[dst]
        dependent[src] += (neighbour > 0) & (np.abs(levels[src] - neighbour) <= alpha)
    return dependent


def _compact(levels: np.ndarray) -> np.ndarray:
    """Gray levels in int16 when they fit: the neighbourhood loops then move a quarter of the memory."""
    return levels.astype(np.int16) if levels.max() < 2 ** 15 else levels.astype(np.int64)


def gldm_features(levels: np.ndarray, distances=(1,), alpha: float = 0) -> dict[str, float]:
    """PyRadiomics' 14 GLDM features of an ROI's gray levels [D, H, W]."""
    present, ng = _gray_levels(levels)
    inside = levels > 0
    dependence = gldm_dependence(levels, distances, alpha)[inside]
    nd = int(dependence.max()) + 1
    P = np.bincount((levels[inside] - 1) * nd + dependence, minlength=ng * nd).reshape(ng, nd)[present - 1]
    return _size_matrix_features(P.astype(np.float64), present, GLDM_TERMS)


GLDM_TERMS = {
    'small': 'SmallDependenceEmphasis', 'large': 'LargeDependenceEmphasis', 'gln': 'GrayLevelNonUniformity',
    'sn': 'DependenceNonUniformity', 'snn': 'DependenceNonUniformityNormalized', 'glv': 'GrayLevelVariance',
    'sv': 'DependenceVariance', 'entropy': 'DependenceEntropy', 'low': 'LowGrayLevelEmphasis',
    'high': 'HighGrayLevelEmphasis', 'small_low': 'SmallDependenceLowGrayLevelEmphasis',
    'small_high': 'SmallDependenceHighGrayLevelEmphasis', 'large_low': 'LargeDependenceLowGrayLevelEmphasis',
    'large_high': 'LargeDependenceHighGrayLevelEmphasis',
}

#----------------------------------------------------------------------------
# NGTDM.


def ngtdm_matrix(levels: np.ndarray, distances=(1,)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gray levels present, their voxel counts n_i and their sums s_i of |level - mean of the ROI neighbours|.

    A voxel without neighbours in the ROI counts in n_i and adds 0 to s_i (PyRadiomics; IBSI leaves it out).
    """
    present, _ = _gray_levels(levels)
    levels = _compact(levels)
    count = np.zeros(levels.shape, dtype=np.int32)
    total = np.zeros(levels.shape, dtype=np.int64)
    for offset in angles(levels.shape, distances, bidirectional=True):
        src, dst = pair_slices(levels.shape, offset)
        neighbour = levels[dst]  # 0 outside the ROI, so it adds nothing to the total.
        count[src] += neighbour > 0
        total[src] += neighbour
    roi = levels > 0
    with np.errstate(invalid='ignore', divide='ignore'):
        diff = np.where(count[roi] > 0, np.abs(levels[roi] - total[roi] / count[roi]), 0.0)
    n = np.bincount(levels[roi])[present]
    s = np.bincount(levels[roi], weights=diff)[present]
    return present.astype(np.float64), n.astype(np.float64), s


def ngtdm_features(levels: np.ndarray, distances=(1,)) -> dict[str, float]:
    """PyRadiomics' 5 NGTDM features of an ROI's gray levels [D, H, W]."""
    i, n, s = ngtdm_matrix(levels, distances)
    nvp = n.sum()
    p = n / nvp
    ngp = len(i)
    di = i[:, None] - i[None, :]  # [n, n]
    ps = p * s
    ps_total = ps.sum()
    pair_sum = p[:, None] + p[None, :]
    busy_div = np.abs((i * p)[:, None] - (i * p)[None, :]).sum()
    contrast = (p[:, None] * p[None, :] * di ** 2).sum() * s.sum() / nvp
    return {
        'Coarseness': float(1 / ps_total) if ps_total != 0 else 1e6,
        'Contrast': float(contrast / (ngp * (ngp - 1))) if ngp > 1 else 0.0,
        'Busyness': float(ps_total / busy_div) if busy_div != 0 else 0.0,
        'Complexity': float((np.abs(di) * (ps[:, None] + ps[None, :]) / pair_sum).sum() / nvp),
        'Strength': float((pair_sum * di ** 2).sum() / s.sum()) if s.sum() != 0 else 0.0,
    }

#----------------------------------------------------------------------------
# Names.


GLCM_NAMES = ('Autocorrelation', 'ClusterProminence', 'ClusterShade', 'ClusterTendency', 'Contrast', 'Correlation',
              'DifferenceAverage', 'DifferenceEntropy', 'DifferenceVariance', 'Id', 'Idm', 'Idmn', 'Idn', 'Imc1',
              'Imc2', 'InverseVariance', 'JointAverage', 'JointEnergy', 'JointEntropy', 'MCC', 'MaximumProbability',
              'SumAverage', 'SumEntropy', 'SumSquares')
GLRLM_NAMES = ('GrayLevelNonUniformity', 'GrayLevelNonUniformityNormalized', 'GrayLevelVariance',
               'HighGrayLevelRunEmphasis', 'LongRunEmphasis', 'LongRunHighGrayLevelEmphasis',
               'LongRunLowGrayLevelEmphasis', 'LowGrayLevelRunEmphasis', 'RunEntropy', 'RunLengthNonUniformity',
               'RunLengthNonUniformityNormalized', 'RunPercentage', 'RunVariance', 'ShortRunEmphasis',
               'ShortRunHighGrayLevelEmphasis', 'ShortRunLowGrayLevelEmphasis')
GLSZM_NAMES = tuple(sorted(GLSZM_TERMS.values()))
GLDM_NAMES = tuple(sorted(GLDM_TERMS.values()))
NGTDM_NAMES = ('Busyness', 'Coarseness', 'Complexity', 'Contrast', 'Strength')

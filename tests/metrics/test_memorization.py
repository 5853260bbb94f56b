# SPDX-License-Identifier: Apache-2.0
"""The audit's parts against references: voxel correlations against numpy's corrcoef over shifted and mirrored
windows, cosine neighbours against scipy's cdist, the calibration against its definition and scipy.stats, the AUC
against pairwise counting, and the discriminator's per-case scores."""

import numpy as np
import pytest
import scipy.spatial.distance
import scipy.stats
import torch

import dataset_tool
from metrics.memorization import calibration, inputs, membership
from metrics.memorization.search import VoxelIndex, nearest_by_cosine, shift_offsets
from training.networks import Discriminator

#----------------------------------------------------------------------------
# Voxel correlation.


def reference_similarity(query: np.ndarray, train: np.ndarray, k: int, mirror: bool) -> tuple[float, tuple, bool]:
    """Best np.corrcoef of the query's windows (moved by every shift, and mirrored) with the training case's
    interior: (similarity, shift (x, y, z), mirrored)."""
    D, H, W = train.shape[-3:]
    target = train[:, k:D - k, k:H - k, k:W - k].ravel()
    best = (-2.0, None, None)
    for flip in ((False, True) if mirror else (False,)):
        q = query[..., ::-1] if flip else query
        for dz, dy, dx in shift_offsets(k):
            window = q[:, k + dz:D - k + dz, k + dy:H - k + dy, k + dx:W - k + dx].ravel()
            r = np.corrcoef(window.astype(np.float64), target.astype(np.float64))[0, 1]
            if r > best[0] + 1e-12:
                best = (r, (dx, dy, dz), flip)
    return best


@pytest.fixture(scope='module')
def volumes():
    """Smooth random uint8 volumes [N, 2, D, H, W] (two channels, all axes different) and planted copies."""
    rng = np.random.default_rng(0)
    coarse = rng.normal(size=[10, 2, 4, 5, 6])
    fine = torch.nn.functional.interpolate(torch.from_numpy(coarse), size=(8, 10, 12), mode='trilinear').numpy()
    train = np.clip(fine * 60 + 128 + rng.normal(0, 10, fine.shape), 0, 255).astype(np.uint8)
    copies = np.stack([
        np.roll(train[3], (1, -1), axis=(-1, -3)),      # Shifted 1 voxel in x and -1 in z.
        train[5][..., ::-1],                            # The x-mirror.
        np.clip(train[7] * 0.7 + 30, 0, 255).astype(np.uint8),  # An intensity change.
    ])
    novel = np.clip(rng.normal(128, 40, size=[2, 2, 8, 10, 12]), 0, 255).astype(np.uint8)
    return train, np.concatenate([copies, novel])


def test_correlations_match_numpy_over_shifts_and_the_mirror(volumes):
    train, queries = volumes
    # Rows made per chunk of 3 (nothing kept): the running top 2 merges chunks.
    found = VoxelIndex(torch.from_numpy(train), shift=1, mirror=True, train_chunk=3, cache_bytes=0).search(
        torch.from_numpy(queries))
    kept = VoxelIndex(torch.from_numpy(train), shift=1, mirror=True).search(torch.from_numpy(queries))
    np.testing.assert_array_equal(kept.index, found.index)
    np.testing.assert_allclose(kept.similarity, found.similarity, atol=1e-6)
    for q in range(len(queries)):
        per_case = [reference_similarity(queries[q], t, 1, True) for t in train]
        order = np.argsort([-p[0] for p in per_case])
        assert found.index[q] == order[0] and found.second_index[q] == order[1]
        assert found.similarity[q] == pytest.approx(per_case[order[0]][0], abs=1e-5)
        assert found.second[q] == pytest.approx(per_case[order[1]][0], abs=1e-5)
        assert tuple(found.shift[q]) == per_case[order[0]][1] and found.mirrored[q] == per_case[order[0]][2]
    assert found.index[:3].tolist() == [3, 5, 7]
    assert tuple(found.shift[0]) == (1, 0, -1) and not found.mirrored[0]  # The roll: x by +1, z by -1.
    assert found.mirrored[1] and found.similarity[1] == pytest.approx(1.0, abs=1e-6)
    assert found.similarity[2] > 0.99
    assert found.ratio[0] == pytest.approx(found.similarity[0] / found.second[0])


def test_no_shift_is_the_correlation_on_the_whole_grid(volumes):
    train, queries = volumes
    found = VoxelIndex(torch.from_numpy(train), shift=0, mirror=False).search(torch.from_numpy(queries))
    full = np.corrcoef(queries.reshape(len(queries), -1).astype(np.float64),
                       train.reshape(len(train), -1).astype(np.float64))[:len(queries), len(queries):]
    np.testing.assert_allclose(found.similarity, full.max(axis=1), atol=1e-5)
    np.testing.assert_array_equal(found.index, full.argmax(axis=1))
    assert not found.mirrored.any() and not found.shift.any()


def test_prefilter_with_enough_candidates_is_exact_and_finds_planted_copies(volumes):
    train, queries = volumes
    exact = VoxelIndex(torch.from_numpy(train), shift=1, mirror=True).search(torch.from_numpy(queries))
    everything = VoxelIndex(torch.from_numpy(train), shift=1, mirror=True, prefilter=len(train))
    found = everything.search(torch.from_numpy(queries))
    np.testing.assert_array_equal(found.index, exact.index)
    np.testing.assert_allclose(found.similarity, exact.similarity, atol=1e-6)
    few = VoxelIndex(torch.from_numpy(train), shift=1, mirror=True, prefilter=2).search(torch.from_numpy(queries[:3]))
    assert few.index.tolist() == [3, 5, 7]
    np.testing.assert_allclose(few.similarity, exact.similarity[:3], atol=1e-6)


def test_a_constant_volume_correlates_zero_and_a_large_shift_is_refused(volumes):
    train, _ = volumes
    flat = np.full([1, *train.shape[1:]], 77, dtype=np.uint8)
    found = VoxelIndex(torch.from_numpy(train), shift=1).search(torch.from_numpy(flat))
    assert found.similarity[0] == 0 and np.isfinite(found.similarity).all()
    with pytest.raises(ValueError, match='a shift of 4 voxels leaves no interior'):
        VoxelIndex(torch.from_numpy(train), shift=4)  # D = 8: 8 - 2 * 4 = 0 slices left.


def test_a_single_training_case_has_no_second_neighbour(volumes):
    train, queries = volumes
    found = VoxelIndex(torch.from_numpy(train[:1]), shift=0).search(torch.from_numpy(queries[:2]))
    assert found.second_index.tolist() == [-1, -1] and np.isnan(found.second).all() and np.isnan(found.ratio).all()


def test_cosine_neighbours_match_scipy():
    rng = np.random.default_rng(1)
    train, queries, flipped = rng.normal(size=[7, 5]), rng.normal(size=[4, 5]), rng.normal(size=[4, 5])
    found = nearest_by_cosine(torch.from_numpy(train), torch.from_numpy(queries))
    similarity = 1 - scipy.spatial.distance.cdist(queries, train, metric='cosine')
    np.testing.assert_array_equal(found.index, similarity.argmax(axis=1))
    np.testing.assert_allclose(found.similarity, similarity.max(axis=1), atol=1e-12)
    np.testing.assert_allclose(found.second, np.sort(similarity, axis=1)[:, -2], atol=1e-12)
    both = nearest_by_cosine(torch.from_numpy(train), torch.from_numpy(queries), torch.from_numpy(flipped))
    best = np.maximum(similarity, 1 - scipy.spatial.distance.cdist(flipped, train, metric='cosine'))
    np.testing.assert_allclose(both.similarity, best.max(axis=1), atol=1e-12)
    assert both.mirrored.tolist() == (best.max(axis=1) > similarity.max(axis=1)).tolist()

#----------------------------------------------------------------------------
# Calibration.


def test_p_values_follow_their_definition_and_scipy_percentiles():
    rng = np.random.default_rng(2)
    null = np.round(rng.normal(size=39), 2)  # Rounded: ties with the values below.
    values = np.concatenate([null[:5], rng.normal(size=20), [-10, 10]])
    p = calibration.p_values(null, values)
    expected = [(1 + np.sum(null >= v)) / 40 for v in values]
    np.testing.assert_allclose(p, expected)
    below = np.array([scipy.stats.percentileofscore(null, v, kind='strict') for v in values]) / 100  # P(null < v)
    np.testing.assert_allclose(p, (1 + 39 * (1 - below)) / 40)
    assert p[-1] == pytest.approx(1 / 40) and p[-2] == 1


@pytest.mark.parametrize('n, alpha', [(19, 0.05), (39, 0.05), (100, 0.05), (20, 0.1), (57, 0.01 * 5)])
def test_threshold_flags_exactly_the_volumes_with_p_at_most_alpha(n, alpha):
    rng = np.random.default_rng(n)
    null = rng.normal(size=n)
    t = calibration.threshold(null, alpha)
    values = np.concatenate([null, rng.normal(size=500), [t, np.nextafter(t, np.inf)]])
    np.testing.assert_array_equal(values > t, calibration.p_values(null, values) <= alpha)
    assert np.sum(null > t) == int(np.floor(alpha * (n + 1))) - 1  # The k-th largest: k - 1 null values above it.
    if n >= 100:  # Close to numpy's quantile (within one order statistic).
        s = np.sort(null)
        q = np.quantile(null, 1 - alpha)
        assert s[np.searchsorted(s, q) - 1] <= t <= s[np.searchsorted(s, q) + 1]


def test_novel_volumes_are_flagged_at_rate_alpha():
    """Null and novel similarities from one distribution: the flag rate, averaged over nulls, is k / (n + 1)."""
    rng = np.random.default_rng(3)
    rates = []
    for _ in range(400):
        null, novel = rng.normal(size=39), rng.normal(size=200)
        rates.append(np.mean(novel > calibration.threshold(null, 0.05)))
    assert np.mean(rates) == pytest.approx(0.05, abs=0.005)


def test_too_few_holdout_cases_cannot_calibrate():
    assert calibration.min_holdout(0.05) == 19 and calibration.min_holdout(0.1) == 9
    calibration.threshold(np.arange(19.0), 0.05)
    with pytest.raises(ValueError, match='18 holdout cases cannot calibrate alpha=0.05; it needs at least 19'):
        calibration.threshold(np.arange(18.0), 0.05)


def test_copy_rate_interval_is_clopper_pearson():
    lo, hi = calibration.proportion_ci(3, 60)
    assert lo == pytest.approx(scipy.stats.beta.ppf(0.025, 3, 58)) and hi == pytest.approx(scipy.stats.beta.ppf(0.975,
                                                                                                                4, 57))
    assert calibration.proportion_ci(0, 10)[0] == 0 and calibration.proportion_ci(10, 10)[1] == 1


def test_summary_quantiles_skip_nan():
    s = calibration.summarize(np.array([1.0, 2.0, np.nan, 3.0]))
    assert s['n'] == 3 and s['median'] == 2 and s['max'] == 3 and s['min'] == 1

#----------------------------------------------------------------------------
# Membership inference.


def test_auc_is_the_pairwise_probability_with_ties_as_half():
    rng = np.random.default_rng(4)
    members, others = np.round(rng.normal(0.5, 1, 30), 1), np.round(rng.normal(0, 1, 45), 1)
    pairs = (members[:, None] > others[None]).mean() + 0.5 * (members[:, None] == others[None]).mean()
    assert membership.auc(members, others) == pytest.approx(pairs)
    assert membership.auc(others, members) == pytest.approx(1 - pairs)
    lo, hi = membership.auc_ci(members, others, seed=0)
    assert lo < pairs < hi and (lo, hi) == membership.auc_ci(members, others, seed=0)  # Reproducible.


def test_membership_report_has_the_control_split():
    train, holdout = np.arange(10.0) + 100, np.arange(20.0)  # Every member outscores every non-member.
    report = membership.membership(train, holdout, seed=0)
    assert report['auc'] == 1 and report['auc_ci95'] == [1, 1]
    assert 0 <= report['control_auc'] <= 1 and report['members'] == 10 and report['non_members'] == 20


def test_discriminator_scores_do_not_depend_on_the_batch():
    torch.manual_seed(0)
    D = Discriminator(c_dim=0, img_shape=(8, 8, 8), img_channels=1, channel_base=64, channel_max=8,
                      epilogue_kwargs=dict(mbstd_group_size=4))
    x = torch.rand([8, 1, 8, 8, 8]) * 2 - 1
    c = torch.zeros([8, 0])
    together = membership.discriminator_scores(D, [(x, c)], torch.device('cpu'))
    alone = membership.discriminator_scores(D, [(x[i:i + 1], c[i:i + 1]) for i in range(8)], torch.device('cpu'))
    order = torch.randperm(8)
    shuffled = membership.discriminator_scores(D, [(x[order[:4]], c[:4]), (x[order[4:]], c[4:])], torch.device('cpu'))
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(shuffled, together[order.numpy()], rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        assert not np.allclose(D(x, c).flatten().numpy(), together, atol=1e-4)  # The original D mixes the batch.

#----------------------------------------------------------------------------
# Inputs.


@pytest.fixture(scope='module')
def packed(tmp_path_factory):
    root = tmp_path_factory.mktemp('packed')
    paths = dict(train=root / 'train.zip', holdout=root / 'holdout.zip', other=root / 'other.zip',
                 overlap=root / 'overlap.zip')
    dataset_tool.pack_dataset('phantom:4:0', str(paths['train']), size=(16, 16, 8))
    dataset_tool.pack_dataset('phantom:3:100', str(paths['holdout']), size=(16, 16, 8))
    dataset_tool.pack_dataset('phantom:3:100', str(paths['other']), size=(16, 16, 8), dtype='uint16')
    dataset_tool.pack_dataset('phantom:3:2', str(paths['overlap']), size=(16, 16, 8))
    return {k: inputs.read_packed(str(p), '--data' if k == 'train' else '--holdout') for k, p in paths.items()}


def test_packing_differences_and_shared_cases_are_named(packed):
    inputs.check_holdout(packed['train'], packed['holdout'])
    assert packed['train'].volumes.shape == (4, 1, 8, 16, 16) and packed['train'].names[1] == 'phantom:1'
    with pytest.raises(inputs.InputError, match='intensity mapping uint16 percentiles 0.5..99.5, the training data '
                                                'uint8 percentiles'):
        inputs.check_holdout(packed['train'], packed['other'])
    with pytest.raises(inputs.InputError, match=r'case phantom:2 holds the same voxels as training case phantom:2 '
                                                r'\(2 such cases\)'):
        inputs.check_holdout(packed['train'], packed['overlap'])


def test_source_units_map_back_to_stored_through_the_window():
    from volumes.contract import IntensityMapping, VolumeInfo
    info = VolumeInfo(intensity=IntensityMapping('window', -1000, 1000, 'uint8'))
    stored = np.arange(256, dtype=np.uint8).reshape(1, 4, 8, 8)
    source = np.rint(info.intensity.to_source(stored)).astype(np.int16)  # As generate.py --units source writes CT.
    np.testing.assert_array_equal(inputs.to_stored(source, info, 'x.nii.gz'), stored)
    with pytest.raises(inputs.InputError, match='cannot be mapped back'):
        inputs.to_stored(source.astype(np.float32), VolumeInfo(), 'x.nii.gz')


def test_generated_folders_in_both_layouts_are_read_as_stored_volumes(tmp_path):
    """The files layout (NAME.nii.gz with all channels, NAME_seg skipped) and the nnU-Net layout (imagesTr/NAME_0000,
    NAME_0001; labelsTr skipped) give the same stored volumes [C, D, H, W]."""
    from volumes import volume_io
    from volumes.contract import VolumeInfo
    info = VolumeInfo(spacing=(1.0, 1.5, 3.0), channels=('t2', 'adc'))
    rng = np.random.default_rng(5)
    volumes = {f'seed{s:04d}': rng.integers(0, 256, size=[2, 4, 6, 8], dtype=np.uint8) for s in (3, 1)}
    files, nnunet = tmp_path / 'files', tmp_path / 'nnunet'
    for folder in (files, nnunet / 'imagesTr', nnunet / 'labelsTr'):
        folder.mkdir(parents=True)
    for name, v in volumes.items():
        volume_io.write_volume(str(files / f'{name}.nii.gz'), v, info.spacing, info.direction)
        volume_io.write_volume(str(files / f'{name}_seg.nii.gz'), v[0], info.spacing, info.direction)
        volume_io.write_volume(str(nnunet / 'labelsTr' / f'{name}.nii.gz'), v[0], info.spacing, info.direction)
        for c in range(2):
            volume_io.write_volume(str(nnunet / 'imagesTr' / f'{name}_{c:04d}.nii.gz'), v[c], info.spacing,
                                   info.direction)
    for folder in (files, nnunet):
        cases = inputs.generated_files(str(folder))
        assert [name for name, _ in cases] == ['seed0001', 'seed0003']
        (names, stored), = inputs.file_batches(cases, info, (4, 6, 8), batch=8)
        np.testing.assert_array_equal(stored, np.stack([volumes['seed0001'], volumes['seed0003']]))
    with pytest.raises(inputs.InputError, match='has 2 channels; the training data has 1'):
        list(inputs.file_batches(inputs.generated_files(str(files)), VolumeInfo(spacing=info.spacing), (4, 6, 8), 8))

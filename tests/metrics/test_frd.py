# SPDX-License-Identifier: Apache-2.0
"""FRD v1 and v0 equal frd-score's on two folders of volumes; the distance's definition on small tables; the
calc_metrics metrics frd_v1 / frd_v0 and radiomics.py --frd.

tests/data/radiomics/frd_values.json holds what frd-score 1.0.1 (with PyRadiomics from its git source) gave on
frd_volumes/reals (8 phantoms) and frd_volumes/fakes (6 others, smoothed), in both orders (v1 takes the first set
as its reference); the project agrees to about 1e-9 and is held to frd-score's tolerance for PyRadiomics, 3 %.
The v1 extraction of the 14 volumes takes about 5 s, so that test is marked slow, as is the run of radiomics.py.
"""

import glob
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from metrics import metric_main
from metrics.radiomics import features, frd
from tests.helpers.cli import run_cli
from tests.helpers import detectors

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data', 'radiomics')
FOLDERS = os.path.join(DATA, 'frd_volumes')
TOLERANCE = 0.03


def frd_score_values() -> dict:
    with open(os.path.join(DATA, 'frd_values.json')) as f:
        return json.load(f)


def folder_table(group: str, version: str) -> np.ndarray:
    files = sorted(glob.glob(os.path.join(FOLDERS, group, '*.nii.gz')))
    return np.array([list(frd.volume_features(sitk.ReadImage(f), version, f).values()) for f in files])


@pytest.mark.slow
@pytest.mark.parametrize('version', [pytest.param('v1', marks=pytest.mark.slow), 'v0'])
def test_frd_equals_frd_score(version):
    fixture = frd_score_values()
    reals, fakes_ = folder_table('reals', version), folder_table('fakes', version)
    assert (len(reals), len(fakes_)) == (fixture['counts']['reals'], fixture['counts']['fakes'])
    for key, (first, second) in {'reals_fakes': (reals, fakes_), 'fakes_reals': (fakes_, reals)}.items():
        result = frd.frd(first, second, version)
        want = fixture['values'][key][version]
        print(f'\n{version} {key}: {result.value!r} vs frd-score {want!r} ({abs(1 - result.value / want):.1e})')
        assert result.value == pytest.approx(want, rel=TOLERANCE)
        assert (result.num_first, result.num_second) == (len(first), len(second))
    if version == 'v1':  # The reference set's statistics normalise both: the order matters.
        assert fixture['values']['reals_fakes']['v1'] != pytest.approx(fixture['values']['fakes_reals']['v1'],
                                                                       rel=1e-3)

#----------------------------------------------------------------------------
# The definitions.


def test_feature_sets_are_frd_scores():
    v1, v0 = frd.definition('v1'), frd.definition('v0')
    assert len(v1.options.features) == 77 * 13 and len(v1.names) == 1001 + 13  # 13 images, 13 diagnostics.
    assert {'log-sigma-5-0-mm-3D_glcm_SumSquares', 'wavelet-HHH_ngtdm_Busyness', 'diagnostics_Mask-original_VoxelNum',
            'original_glszm_ZoneEntropy'} <= set(v1.names)
    assert not any('_glcm_MCC' in n or '_glcm_SumAverage' in n or '_gldm_' in n or '_shape_' in n for n in v1.names)
    assert v0.names == features.all_feature_names()  # Every class of the original image, shape included.
    s1, s0 = v1.options.settings, v0.options.settings
    assert (s1.normalize, s1.normalizeScale, s1.resampledPixelSpacing, s1.interpolator, s1.binWidth) == \
        (True, 100, (2, 2, 2), 'sitkBSpline', 5)
    assert (s1.padDistance, s1.preCrop, s1.voxelArrayShift, s1.minimumROIDimensions) == (10, True, 300, 1)
    assert (s0.binWidth, s0.normalize, s0.resampledPixelSpacing, s0.minimumROIDimensions) == (25, False, None, 1)
    with pytest.raises(ValueError, match='expected one of v1, v0'):
        frd.definition('v2')


def test_no_mask_convention():
    image = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.float32))
    image.SetSpacing((0.5, 0.6, 2.0))
    v1 = sitk.GetArrayFromImage(frd.whole_volume_mask(image, exclude_corner=True))
    v0 = sitk.GetArrayFromImage(frd.whole_volume_mask(image, exclude_corner=False))
    assert v1.sum() == 4 * 5 * 6 - 1 and v1[0, 0, 0] == 0 and v0.min() == 1
    assert frd.whole_volume_mask(image, True).GetSpacing() == (0.5, 0.6, 2.0)


def test_v1_values_of_one_volume():
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.normal(100, 20, (10, 12, 12)).astype(np.float32))
    image.SetSpacing((1.5, 1.5, 2.5))
    values = frd.volume_features(image, 'v1')
    assert list(values) == frd.definition('v1').names
    assert values['diagnostics_Mask-original_VoxelNum'] == 10 * 12 * 12 - 1
    assert values['diagnostics_Mask-original_VolumeNum'] == 1
    array = sitk.GetArrayFromImage(image).astype(np.float64)
    assert values['diagnostics_Image-original_Mean'] == pytest.approx(array.mean(), rel=1e-12)
    # Normalised (scale 100) before resampling: the resampled image has about mean 0 and range of a few hundred.
    assert abs(values['diagnostics_Image-interpolated_Mean']) < 5
    assert values['diagnostics_Image-interpolated_Maximum'] > 100
    with pytest.raises(ValueError, match='fewer than 2 voxels'):
        frd.volume_features(sitk.GetImageFromArray(np.zeros((1, 1, 1), np.float32)), 'v0', 'tiny')

#----------------------------------------------------------------------------
# The distance on small tables.


def test_v0_is_the_frechet_distance_of_jointly_min_max_scaled_features():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(20, 3)), rng.normal(1.0, 2.0, size=(15, 3))
    a[:, 2] = b[:, 2] = 4.0  # Constant in both: the middle of the range in both, no contribution.
    assert frd.frd_v0(a, a.copy()).value == pytest.approx(0, abs=1e-9)
    lo, hi = np.concatenate([a, b]).min(0)[:2], np.concatenate([a, b]).max(0)[:2]
    scale = frd.V0_NORM_RANGE[1] / (hi - lo)
    ma, mb = (a[:, :2] - lo) * scale, (b[:, :2] - lo) * scale
    ca, cb = np.cov(ma, rowvar=False), np.cov(mb, rowvar=False)
    # Two dimensions: Tr sqrtm(ca cb) = sqrt(tr(ca cb) + 2 sqrt(det(ca cb))).
    tr_sqrt = np.sqrt(np.trace(ca @ cb) + 2 * np.sqrt(np.linalg.det(ca @ cb)))
    want = np.sum((ma.mean(0) - mb.mean(0)) ** 2) + np.trace(ca) + np.trace(cb) - 2 * tr_sqrt
    result = frd.frd_v0(a, b)
    assert result.value == pytest.approx(want, rel=1e-9) and result.num_features == 3
    b[0, 0] = np.nan  # NaN becomes the middle of the range.
    assert np.isfinite(frd.frd_v0(a, b).value)


def test_v1_z_scores_by_the_first_set_and_takes_the_log():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(30, 4)), rng.normal(0.5, 1.0, size=(25, 4))
    a[:, 3] = 7.0  # Constant in the reference set: dropped (its z-scores are infinite or NaN).
    result = frd.frd_v1(a, b)
    assert result.num_features == 3
    # Invariant to an affine change of units of a feature (both sets alike), unlike v0's min-max per pair of sets.
    scaled = np.array([3.0, 0.01, 50.0, 1.0])
    assert frd.frd_v1(a * scaled + 2, b * scaled + 2).value == pytest.approx(result.value, rel=1e-4)
    z = (a[:, :3] - a[:, :3].mean(0)) / a[:, :3].std(0)
    zb = (b[:, :3] - a[:, :3].mean(0)) / a[:, :3].std(0)
    d2 = metric_frechet(z, zb)
    assert result.value == pytest.approx(np.log(d2), rel=1e-4)  # float32 features, as frd-score's v1.
    b[0, 1] = np.nan  # A volume with a NaN feature is dropped.
    assert frd.frd_v1(a, b).num_second == 24
    with pytest.raises(ValueError, match='at least 2 volumes'):
        frd.frd_v1(a[:1], b)
    with pytest.raises(ValueError, match='same F'):
        frd.frd_v0(a, b[:, :2])


def metric_frechet(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.linalg import sqrtm
    cx, cy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    return float(np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(cx + cy) - 2 * np.trace(sqrtm(cx @ cy).real))


def test_the_value_falls_with_the_sample_count_for_one_distribution():
    # Small-sample bias: two samples of one distribution are not at distance 0, less so with more samples.
    rng = np.random.default_rng(3)
    values = [frd.frd_v0(rng.normal(size=(n, 5)), rng.normal(size=(n, 5))).value for n in (10, 1000)]
    assert values[0] > 5 * values[1] > 0

#----------------------------------------------------------------------------
# calc_metrics and radiomics.py.


@pytest.mark.slow
def test_calc_metric_frd(tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    G = detectors.FakeGenerator((8, 12, 12))
    data = detectors.write_dataset(str(tmp_path / 'reals'), detectors.sample_real_volumes(G, 5))
    assert {'frd_v1', 'frd_v0'} <= set(metric_main.list_valid_metrics())
    assert metric_main.is_valid_metric('frd200_v1') and not metric_main.is_valid_metric('frd_v2')
    result = metric_main.calc_metric('frd_v0', G=G, dataset_kwargs=detectors.dataset_kwargs(data), seed=0)
    details = result.details
    assert (details['num_real_volumes'], details['num_gen_volumes'], details['num_features']) == (5, 5, {'image': 107})
    assert np.isfinite(result.results['frd_v0']) and result.results['frd_v0'] > 0
    assert len(glob.glob(str(tmp_path / 'cache' / 'gan-metrics' / '*frdv0*.npz'))) == 1  # The reals, cached.
    again = metric_main.calc_metric('frd_v0', G=G, dataset_kwargs=detectors.dataset_kwargs(data), seed=0)
    assert again.results == result.results
    v1 = metric_main.calc_metric('frd3_v1', G=G, dataset_kwargs=detectors.dataset_kwargs(data), seed=0)
    assert v1.details['num_gen_volumes'] == 3 and np.isfinite(v1.results['frd3_v1'])
    tiny = detectors.FakeGenerator((4, 8, 8))  # 2 mm resampling leaves 4x4x2 voxels: too small for the LoG filter.
    tiny_data = detectors.write_dataset(str(tmp_path / 'tiny'), detectors.sample_real_volumes(tiny, 3))
    with pytest.raises(ValueError, match='FRD v1 of a 8x8x4 volume of 1x1x1 mm: .* LoG filter needs at least 4'):
        metric_main.calc_metric('frd_v1', G=tiny, dataset_kwargs=detectors.dataset_kwargs(tiny_data))


@pytest.mark.slow
@pytest.mark.slow
def test_radiomics_cli_frd(tmp_path):
    groups = {}
    for group in ('reals', 'fakes'):  # Two volumes of each folder keep the run short.
        os.makedirs(tmp_path / group)
        for path in sorted(glob.glob(os.path.join(FOLDERS, group, '*.nii.gz')))[:2]:
            (tmp_path / group / os.path.basename(path)).write_bytes(open(path, 'rb').read())
        groups[group] = sorted(glob.glob(str(tmp_path / group / '*.nii.gz')))
    out = tmp_path / 'out'
    result = run_cli(['radiomics.py', '--reals', tmp_path / 'reals', '--fakes', tmp_path / 'fakes', '--roi', 'box',
                      '--box', '20', '--features', 'firstorder_Mean', '--frd', '--outdir', out])
    assert result.returncode == 0, result.stderr
    report = json.loads((out / 'report.json').read_text())['frd']
    tables = {g: np.array([list(frd.volume_features(sitk.ReadImage(f), 'v0').values()) for f in files])
              for g, files in groups.items()}
    assert report['v0'] == pytest.approx(frd.frd_v0(tables['reals'], tables['fakes']).value, rel=1e-9)
    assert np.isfinite(report['v1'])
    assert (report['num_real'], report['num_fake'], report['num_features']['v0']) == (2, 2, 107)
    assert 'FRD v1' in result.stdout and '2 fake vs 2 real' in result.stdout

# SPDX-License-Identifier: Apache-2.0
"""radiomics.py end to end on phantom volumes, and its one-line errors on bad input (run as a subprocess)."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import dataset_tool
from metrics.radiomics import compare, features
from volumes import phantom, volume_io
from volumes.contract import LPS_DIRECTION

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = (24, 24, 12)  # x, y, z: 2.67 x 2.67 x 6 mm voxels over the phantom's field of view.


REPORT_KEYS = {'volumes', 'fake_vs_real', 'reference_vs_real', 'constant_features', 'constant_rule', 'skipped_empty',
               'warnings'}


def write_case(folder, name: str, seed: int, size=SIZE, mask: str = 'organ', scale: int = 1) -> None:
    """A phantom in stored units (uint8; scale 16: uint16 0-4080, as 12-bit source data) as NIfTI, with
    NAME_seg.nii.gz holding its bright central organ."""
    volume, spacing = phantom.make_phantom(seed, size)
    stored = np.clip(volume / 1.2 * 255, 0, 255).astype(np.uint8)  # [D, H, W]
    if scale != 1:
        stored = stored.astype(np.uint16) * scale
    os.makedirs(folder, exist_ok=True)
    volume_io.write_volume(os.path.join(folder, f'{name}.nii.gz'), stored, spacing, LPS_DIRECTION)
    if mask == 'none':
        return
    d, h, w = stored.shape
    seg = np.zeros_like(stored)
    seg[:, h // 4:3 * h // 4, w // 4:3 * w // 4] = volume[:, h // 4:3 * h // 4, w // 4:3 * w // 4] > 0.65
    if mask == 'empty':
        seg[:] = 0
    elif mask in ('single', 'pair'):  # One voxel; two diagonal neighbours of intensities 50 and 200.
        seg[:] = 0
        seg[d // 2, h // 2, w // 2] = 1
        if mask == 'pair':
            seg[d // 2, h // 2 + 1, w // 2 + 1] = 1
            stored[d // 2, h // 2, w // 2], stored[d // 2, h // 2 + 1, w // 2 + 1] = 50, 200
            volume_io.write_volume(os.path.join(folder, f'{name}.nii.gz'), stored, spacing,
                                   LPS_DIRECTION)
    seg_spacing = spacing if mask != 'off-grid' else (spacing[0], spacing[1], spacing[2] * 2)
    volume_io.write_volume(os.path.join(folder, f'{name}_seg.nii.gz'), seg, seg_spacing, LPS_DIRECTION)


def write_folder(folder, seeds, **kwargs) -> str:
    for seed in seeds:
        write_case(folder, f'case{seed:03d}', seed, **kwargs)
    return str(folder)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """radiomics.py as a user runs it, with NumPy's and SciPy's RuntimeWarnings made errors: none may reach the
    terminal."""
    return subprocess.run([sys.executable, '-W', 'error::RuntimeWarning', os.path.join(ROOT, 'radiomics.py'),
                           '--no-progress', *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def read_outputs(outdir) -> tuple[list[list[str]], dict]:
    with open(os.path.join(outdir, 'features.csv'), newline='') as f:
        rows = list(csv.reader(f))
    with open(os.path.join(outdir, 'report.json')) as f:
        report = json.load(f)
    for png in ('qq_plots.png', 'wasserstein.png'):
        with open(os.path.join(outdir, png), 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    return rows, report


def check_section(section: dict, names: list[str]) -> None:
    """The report schema of one comparison, exactly."""
    assert set(section) == set(compare.SECTION_KEYS)
    assert list(section['per_feature']) == names
    for values in section['per_feature'].values():
        assert set(values) == set(compare.PER_FEATURE_KEYS)
    assert set(section['joint']) == set(compare.JOINT_KEYS)

#----------------------------------------------------------------------------


@pytest.mark.slow
def test_folders_with_masks_split_roi_reference_and_selection(tmp_path):
    reals = write_folder(tmp_path / 'reals', range(0, 8))
    fakes = write_folder(tmp_path / 'fakes', range(100, 106))
    reference = write_folder(tmp_path / 'reference', range(200, 206))
    out = tmp_path / 'out'
    result = run_cli(f'--reals={reals}', f'--fakes={fakes}', f'--reference={reference}', f'--outdir={out}',
                     '--roi=split', '--box=24,24,30', '--select', '--workers=2')
    assert result.returncode == 0, result.stderr
    rows, report = read_outputs(out)
    assert rows[0] == ['case', 'group', *features.all_feature_names()]
    assert [r[:2] for r in rows[1:]] == ([[f'case{s:03d}', 'real'] for s in range(8)] +
                                         [[f'case{s:03d}', 'fake'] for s in range(100, 106)] +
                                         [[f'case{s:03d}', 'reference'] for s in range(200, 206)])
    assert all(np.isfinite(float(v)) for r in rows[1:] for v in r[2:])
    with open(out / 'selection.json') as f:
        kept = json.load(f)['kept']
    assert set(report) == REPORT_KEYS and 0 < len(kept) < len(features.all_feature_names())
    check_section(report['fake_vs_real'], kept)
    check_section(report['reference_vs_real'], kept)
    assert report['volumes'] == {'real': 8, 'fake': 6, 'reference': 6}
    assert report['skipped_empty'] == {'reals': 0, 'fakes': 0, 'reference': 0, 'names': [], 'reasons': {}}
    assert 'Mahalanobis' in result.stdout and 'Wrote features.csv' in result.stdout
    # 8 + 6 volumes for the kept features: the pooled covariance is singular, and the report says so.
    assert report['warnings'] == [f'{g}-vs-real: Mahalanobis and Hotelling null: fewer volumes than features: 8 real '
                                  f'and 6 {g} volumes give the pooled covariance 12 degrees of freedom for {len(kept)} '
                                  f'features, so it is singular; compare fewer features (--select, --features) or more '
                                  f'volumes' for g in ('fake', 'reference')]
    assert ['Warning: ' + line for line in report['warnings']] == warning_lines(result.stderr)


@pytest.mark.slow
def test_demo_dataset_zip_against_generated_volumes_without_masks(tmp_path):
    data = str(tmp_path / 'phantoms.zip')
    dataset_tool.pack_dataset('phantom:6', data, size=SIZE)
    fakes = write_folder(tmp_path / 'generated', range(50, 55), mask='none')  # As generate.py writes them.
    out = tmp_path / 'out'
    result = run_cli(f'--reals={data}', f'--fakes={fakes}', f'--outdir={out}', '--roi=box', '--box=30,30,40',
                     '--features=firstorder,glcm_Contrast,ngtdm')
    assert result.returncode == 0, result.stderr
    rows, report = read_outputs(out)
    names = features.parse_features('firstorder,glcm_Contrast,ngtdm')
    assert rows[0] == ['case', 'group', *names] and len(rows) == 1 + 6 + 5
    assert rows[1][:2] == ['vol00000000', 'real'] and rows[-1][:2] == ['case054', 'fake']
    assert report['reference_vs_real'] is None
    check_section(report['fake_vs_real'], names)
    assert report['fake_vs_real']['per_feature']['original_firstorder_Mean']['ks_p'] is not None


@pytest.mark.slow
def test_a_labelled_dataset_zip_brings_its_label_maps(tmp_path):
    data = str(tmp_path / 'labelled.zip')
    dataset_tool.pack_dataset('phantom:5', data, size=SIZE, seg='phantom')
    out = tmp_path / 'out'
    # Label 1, the phantom organ's inner zone, is the ROI (PyRadiomics' default label); its shape is measured.
    result = run_cli(f'--reals={data}', f'--fakes={data}', f'--outdir={out}', '--roi=mask',
                     '--features=shape_VoxelVolume,firstorder_Mean')
    assert result.returncode == 0, result.stderr
    rows, _ = read_outputs(out)
    volumes = [float(r[2]) for r in rows[1:]]
    assert len(volumes) == 10 and min(volumes) > 0 and volumes[:5] == volumes[5:]  # The same zip twice.


@pytest.mark.slow
@pytest.mark.parametrize('case', ['off-grid mask', 'empty roi', 'unknown feature', 'sizes differ', 'missing mask',
                                  'bad params', 'zip without masks'])
def test_bad_input_is_a_one_line_error(tmp_path, case):
    reals = write_folder(tmp_path / 'reals', range(0, 3))
    fakes = write_folder(tmp_path / 'fakes', range(10, 12))
    args, expected = [], {
        'off-grid mask': 'case099_seg.nii.gz lies on another grid than',
        'empty roi': 'case099_seg.nii.gz: no voxel with label 1 (it is empty), so the ROI is unusable (1 of 3 fake '
                     'masks); --skip-empty leaves such volumes out',
        'unknown feature': 'unknown feature "glcm_Contrat"',
        'sizes differ': 'fake volumes differ in size',
        'missing mask': 'no mask for',
        'bad params': 'force2D',
        'zip without masks': 'holds no label maps',
    }[case]
    if case == 'off-grid mask':
        write_case(fakes, 'case099', 99, mask='off-grid')
    elif case == 'empty roi':
        write_case(fakes, 'case099', 99, mask='empty')
        args = ['--no-skip-empty']
    elif case == 'unknown feature':
        args = ['--features=firstorder,glcm_Contrat']
    elif case == 'sizes differ':
        write_case(fakes, 'case099', 99, size=(20, 24, 12))
    elif case == 'missing mask':
        write_case(fakes, 'case099', 99, mask='none')
    elif case == 'bad params':
        (tmp_path / 'params.yaml').write_text('setting:\n  binWidth: 5\n  force2D: true\n')
        args = [f'--params={tmp_path / "params.yaml"}']
    else:
        reals = str(tmp_path / 'reals.zip')
        dataset_tool.pack_dataset('phantom:2', reals, size=SIZE)
    out = tmp_path / 'out'
    result = run_cli(f'--reals={reals}', f'--fakes={fakes}', f'--outdir={out}', '--features=firstorder', *args)
    assert result.returncode != 0
    assert 'Traceback' not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('Error: ') and expected in last, result.stderr
    assert not out.exists() or not os.listdir(out)  # Nothing half-written.

#----------------------------------------------------------------------------
# Degenerate data: rounding noise, other units, few volumes, empty masks, one volume.


def write_flat_case(folder, name: str, seed: int, value: float) -> None:
    """A float64 volume holding `value` on the phantom organ (label 1 of NAME_seg.nii.gz) and 0 elsewhere: the
    organ's shape varies with the seed, its intensity features only as much as value does."""
    _, seg, spacing = phantom.make_labelled_phantom(seed, SIZE)
    organ = seg == 1  # [D, H, W]
    os.makedirs(folder, exist_ok=True)
    volume_io.write_volume(os.path.join(folder, f'{name}.nii.gz'), np.where(organ, value, 0.0), spacing,
                           LPS_DIRECTION)
    volume_io.write_volume(os.path.join(folder, f'{name}_seg.nii.gz'), organ.astype(np.uint8), spacing,
                           LPS_DIRECTION)


def numbers_in(obj) -> list[float]:
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in numbers_in(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in numbers_in(v)]
    return [float(obj)] if isinstance(obj, (int, float)) and not isinstance(obj, bool) else []


def warning_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith('Warning: ')]


@pytest.mark.slow
def test_a_feature_constant_up_to_rounding_is_listed_and_left_out(tmp_path):
    # The reals' organ intensity is 100 up to 1e-14 relative noise (as float sums give): before, its standard
    # deviation of ~1e-12 standardised the fakes' 101 to a Wasserstein distance of 1.35e12.
    for i in range(6):
        write_flat_case(tmp_path / 'reals', f'r{i}', i, 100.0 * (1 + (i - 2.5) * 4e-15))
    for i in range(5):
        write_flat_case(tmp_path / 'fakes', f'f{i}', 50 + i, 101.0)
    out = tmp_path / 'out'
    names = features.parse_features('shape_VoxelVolume,shape_SurfaceArea,firstorder_Mean,firstorder_Median,'
                                    'firstorder_Energy')
    result = run_cli(f'--reals={tmp_path / "reals"}', f'--fakes={tmp_path / "fakes"}', f'--outdir={out}',
                     f'--features={",".join(names)}')
    assert result.returncode == 0, result.stderr
    rows, report = read_outputs(out)
    means = np.array([float(r[2 + names.index('original_firstorder_Mean')]) for r in rows[1:7]])
    assert 0 < np.ptp(means) < 1e-9  # The noise is there: the case is exercised.
    constant = ['original_firstorder_Mean', 'original_firstorder_Median']
    assert report['constant_features'] == constant
    section = report['fake_vs_real']
    check_section(section, names)
    assert all(v is None for n in constant for v in section['per_feature'][n].values())
    assert all(v is not None for n in names if n not in constant for v in section['per_feature'][n].values())
    assert section['joint']['features'] == 3 and section['joint']['reason'] is None
    assert max(abs(x) for x in numbers_in(report)) < 1e6  # No 1e12 or 1e15 anywhere.
    assert '2 features constant over the reals' in result.stdout and 'RuntimeWarning' not in result.stderr


@pytest.mark.slow
def test_reals_and_fakes_in_different_units_warn(tmp_path):
    reals = write_folder(tmp_path / 'reals', range(0, 4), scale=16)  # uint16 0-4080: source units of 12-bit data.
    fakes = write_folder(tmp_path / 'fakes', range(10, 14))          # uint8 0-255: the stored units.
    out = tmp_path / 'out'
    result = run_cli(f'--reals={reals}', f'--fakes={fakes}', f'--outdir={out}',
                     '--features=firstorder_Mean,firstorder_Maximum')
    assert result.returncode == 0, result.stderr
    _, report = read_outputs(out)
    (line,) = warning_lines(result.stderr)
    assert 'reals and fakes hold different intensity ranges: reals uint16 0..' in line
    assert 'fakes uint8 0..' in line and 'generate.py --units' in line
    assert report['warnings'] == [line[len('Warning: '):]]


@pytest.mark.slow
def test_fewer_volumes_than_features_makes_the_joint_statistics_null_with_the_reason(tmp_path):
    reals = write_folder(tmp_path / 'reals', range(0, 3))
    fakes = write_folder(tmp_path / 'fakes', range(10, 13))
    out = tmp_path / 'out'
    result = run_cli(f'--reals={reals}', f'--fakes={fakes}', f'--outdir={out}', '--features=firstorder')
    assert result.returncode == 0, result.stderr
    _, report = read_outputs(out)
    joint = report['fake_vs_real']['joint']
    assert joint['mahalanobis'] is None and joint['hotelling_t2'] is None and joint['hotelling_p'] is None
    assert joint['features'] > 4 and 'fewer volumes than features' in joint['reason']
    assert 'singular' in joint['reason'] and joint['corr_frobenius'] is not None
    (line,) = warning_lines(result.stderr)
    assert ('fake-vs-real: Mahalanobis and Hotelling null: fewer volumes than features: 3 real and 3 fake '
            'volumes') in line
    assert 'nan' not in result.stdout and '(fewer volumes than features)' in result.stdout
    assert report['fake_vs_real']['per_feature']['original_firstorder_Mean']['ks_p'] is not None


@pytest.mark.slow
def test_volumes_whose_mask_gives_no_roi_are_skipped_and_counted(tmp_path):
    reals = write_folder(tmp_path / 'reals', range(0, 4))
    write_case(reals, 'case004', 4, mask='empty')
    fakes = write_folder(tmp_path / 'fakes', range(10, 13))
    for seed, mask in ((13, 'empty'), (14, 'empty'), (15, 'single'), (16, 'pair')):  # As a weak generator's.
        write_case(fakes, f'case{seed:03d}', seed, mask=mask)
    out = tmp_path / 'out'
    result = run_cli(f'--reals={reals}', f'--fakes={fakes}', f'--outdir={out}',
                     '--features=firstorder_Mean,firstorder_RobustMeanAbsoluteDeviation')
    assert result.returncode == 0, result.stderr
    rows, report = read_outputs(out)
    assert [r[:2] for r in rows[1:]] == ([[f'case{s:03d}', 'real'] for s in range(4)] +
                                         [[f'case{s:03d}', 'fake'] for s in (10, 11, 12, 16)])
    # Two voxels have no value between their 10th and 90th percentiles: NaN as in PyRadiomics, no RuntimeWarning.
    assert rows[-1][2:] == ['125.0', 'nan']
    assert report['skipped_empty'] == {
        'reals': 1, 'fakes': 3,
        'names': [os.path.join(reals, 'case004_seg.nii.gz'),
                  *(os.path.join(fakes, f'case{s:03d}_seg.nii.gz') for s in (13, 14, 15))],
        'reasons': {'no voxel with label 1': 3, 'the ROI is a single voxel': 1}}
    assert report['volumes'] == {'real': 4, 'fake': 4}
    robust = report['fake_vs_real']['per_feature']['original_firstorder_RobustMeanAbsoluteDeviation']
    assert robust['ks_p'] is not None  # Over the 3 fakes that have it.
    lines = warning_lines(result.stderr)
    assert len(lines) == 2 and lines[1].startswith('Warning: skipped 3 of 7 fakes whose mask gives no ROI (e.g. ')
    assert 'case013_seg.nii.gz: no voxel with label 1, it is empty)' in lines[1]
    assert 'Skipped volumes whose mask gives no ROI: 1 real, 3 fake' in result.stdout
    # Every fake mask empty: nothing to compare, one line.
    for seed in (10, 11, 12, 16):
        write_case(fakes, f'case{seed:03d}', seed, mask='empty')
    result = run_cli(f'--reals={reals}', f'--fakes={fakes}', f'--outdir={tmp_path / "out2"}',
                     '--features=firstorder_Mean')
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith('Error: no mask of the 7 fake volumes gives an ROI')
    assert not (tmp_path / 'out2').exists()


@pytest.mark.slow
def test_a_single_volume_gets_its_features_and_undefined_statistics(tmp_path):
    reals = write_folder(tmp_path / 'reals', [0])
    fakes = write_folder(tmp_path / 'fakes', [10])
    out = tmp_path / 'out'
    result = run_cli(f'--reals={reals}', f'--fakes={fakes}', f'--outdir={out}', '--features=firstorder,glcm')
    assert result.returncode == 0, result.stderr
    with open(out / 'features.csv', newline='') as f:
        rows = list(csv.reader(f))
    assert [r[:2] for r in rows[1:]] == [['case000', 'real'], ['case010', 'fake']]
    assert all(np.isfinite(float(v)) for r in rows[1:] for v in r[2:])
    with open(out / 'report.json') as f:
        report = json.load(f)
    section = report['fake_vs_real']
    assert section['reason'] == 'the comparison needs at least 2 volumes in each group: 1 real, 1 fake'
    assert all(v is None for values in section['per_feature'].values() for v in values.values())
    assert report['constant_features'] == [] and sorted(os.listdir(out)) == ['features.csv', 'report.json']
    assert 'No plots' in result.stdout and 'RuntimeWarning' not in result.stderr
    assert warning_lines(result.stderr) == ['Warning: fake-vs-real: undefined: ' + section['reason']]


@pytest.mark.slow
def test_a_used_outdir_is_refused_unless_overwrite(tmp_path):
    reals = write_folder(tmp_path / 'reals', range(0, 3))
    fakes = write_folder(tmp_path / 'fakes', range(10, 12))
    out = tmp_path / 'out'
    args = [f'--reals={reals}', f'--fakes={fakes}', f'--outdir={out}', '--features=firstorder_Mean,firstorder_Median']
    assert run_cli(*args, '--select').returncode == 0
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}
    assert 'selection.json' in before
    result = run_cli(*args)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert 'already holds 5 entries' in result.stderr and '--overwrite' in result.stderr
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before
    # --overwrite with a failure before writing: the earlier outputs stay.
    result = run_cli(*args[:2], f'--outdir={out}', '--features=firstorder_Mean', '--roi=box', '--overwrite')
    assert result.returncode == 2 and 'roi box needs a box size' in result.stderr
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before
    (out / 'notes.txt').write_text('mine')
    result = run_cli(*args, '--overwrite')
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out)) == ['features.csv', 'notes.txt', 'qq_plots.png', 'report.json', 'wasserstein.png']

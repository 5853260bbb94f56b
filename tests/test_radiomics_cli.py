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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = (24, 24, 12)  # x, y, z: 2.67 x 2.67 x 6 mm voxels over the phantom's field of view.


def write_case(folder, name: str, seed: int, size=SIZE, mask: str = 'organ') -> None:
    """A phantom in stored units (uint8) as NIfTI, with NAME_seg.nii.gz holding its bright central organ."""
    volume, spacing = phantom.make_phantom(seed, size)
    stored = np.clip(volume / 1.2 * 255, 0, 255).astype(np.uint8)  # [D, H, W]
    os.makedirs(folder, exist_ok=True)
    volume_io.write_volume(os.path.join(folder, f'{name}.nii.gz'), stored, spacing, volume_io.CANONICAL_DIRECTION)
    if mask == 'none':
        return
    d, h, w = stored.shape
    seg = np.zeros_like(stored)
    seg[:, h // 4:3 * h // 4, w // 4:3 * w // 4] = volume[:, h // 4:3 * h // 4, w // 4:3 * w // 4] > 0.65
    if mask == 'empty':
        seg[:] = 0
    seg_spacing = spacing if mask != 'off-grid' else (spacing[0], spacing[1], spacing[2] * 2)
    volume_io.write_volume(os.path.join(folder, f'{name}_seg.nii.gz'), seg, seg_spacing, volume_io.CANONICAL_DIRECTION)


def write_folder(folder, seeds, **kwargs) -> str:
    for seed in seeds:
        write_case(folder, f'case{seed:03d}', seed, **kwargs)
    return str(folder)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(ROOT, 'radiomics.py'), '--verbose=0', *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


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
    assert set(section) == {'per_feature', 'joint'}
    assert list(section['per_feature']) == names
    for values in section['per_feature'].values():
        assert set(values) == set(compare.PER_FEATURE_KEYS)
    assert set(section['joint']) == set(compare.JOINT_KEYS)

#----------------------------------------------------------------------------


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
    assert set(report) == {'fake_vs_real', 'reference_vs_real'} and 0 < len(kept) < len(features.all_feature_names())
    check_section(report['fake_vs_real'], kept)
    check_section(report['reference_vs_real'], kept)
    assert 'Mahalanobis' in result.stdout and 'Wrote features.csv' in result.stdout


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


@pytest.mark.parametrize('case', ['off-grid mask', 'empty roi', 'unknown feature', 'sizes differ', 'missing mask',
                                  'bad params', 'zip without masks'])
def test_bad_input_is_a_one_line_error(tmp_path, case):
    reals = write_folder(tmp_path / 'reals', range(0, 3))
    fakes = write_folder(tmp_path / 'fakes', range(10, 12))
    args, expected = [], {
        'off-grid mask': 'case099_seg.nii.gz lies on another grid than',
        'empty roi': 'no voxel with label 1',
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

# SPDX-License-Identifier: Apache-2.0
"""style_mixing.py on tiny untrained generators: the grid and its volumes, and bad input."""

import os

import nibabel as nib
import numpy as np
import PIL.Image
import pytest
import torch

import style_mixing
from tests.helpers.cli import assert_one_line_error, invoke
from tests.helpers.networks import ROTATED, expected_ras_affine, same_volume
from training import generation
from volumes.contract import from_unit


def test_style_mixing_end_to_end(network, tmp_path):
    result = invoke(style_mixing.main, ['--network', network['pkl'], '--rows', '0-1', '--cols', '5-6',
                                        '--styles', '0-2', '--outdir', tmp_path])
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(tmp_path)) == ['0-5.nii.gz', '0-6.nii.gz', '1-5.nii.gz', '1-6.nii.gz', 'grid.png']
    # 1 + cols by 1 + rows tiles of 16 x 18 pixels (0.5 mm), each enlarged 15 times to reach 256 pixels.
    assert PIL.Image.open(tmp_path / 'grid.png').size == (3 * 16 * 15, 3 * 18 * 15)
    image = nib.load(tmp_path / '1-6.nii.gz')
    assert np.allclose(image.affine, expected_ras_affine(ROTATED), atol=1e-5)

    G, cpu = network['G'], torch.device('cpu')
    vols = generation.style_mix(G, [1], [6], [0, 1, 2], torch.zeros(1, 0), 1.0, 'const', cpu)
    assert same_volume(np.asanyarray(image.dataobj),
                          from_unit(vols[(1, 6)], 'uint8')[0].transpose(2, 1, 0))
    assert not np.allclose(vols[(1, 6)], vols[1]) and not np.allclose(vols[(1, 6)], vols[6])
    every_layer = generation.style_mix(G, [0], [5], list(range(G.num_ws)), torch.zeros(1, 0), 1.0, 'const', cpu)
    assert np.allclose(every_layer[(0, 5)], every_layer[5], atol=1e-6)  # All layers from the column seed: it.


@pytest.mark.parametrize('args, fragments', [
    (['--rows', '0', '--cols', '1', '--styles', '0-6'], ['--styles', 'layers 0-5']),
    (['--rows', '0', '--cols', '1', '--styles', 'coarse'], ['--styles', 'not a layer range']),
    (['--rows', '0,x', '--cols', '1'], ['--rows', '"x" is not a seed']),
    (['--rows', '0', '--cols', '1', '--class', '1'], ['--class', 'unconditional']),
])
def test_style_mixing_bad_input(network, tmp_path, args, fragments):
    assert_one_line_error(invoke(style_mixing.main, ['--network', network['pkl'], '--outdir', tmp_path / 'o', *args]),
                          *fragments)
    assert not os.path.exists(tmp_path / 'o')


def test_style_mixing_conditional_needs_a_class(network, tmp_path):
    assert_one_line_error(invoke(style_mixing.main, ['--network', network['cond'], '--rows', '0', '--cols', '1',
                                                     '--outdir', tmp_path / 'o']), '--class', 'conditional')
    assert invoke(style_mixing.main, ['--network', network['cond'], '--rows', '0', '--cols', '1', '--class', 1,
                                      '--outdir', tmp_path / 'o']).exit_code == 0

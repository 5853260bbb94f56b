# SPDX-License-Identifier: Apache-2.0
"""Radiomics settings and parameter files, discretisation, ROI boxes, feature names and extraction errors."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from metrics.radiomics import features, roi, settings


def test_defaults_are_pyradiomics_defaults():
    s = settings.Settings()
    assert (s.binWidth, s.binCount, s.voxelArrayShift, s.distances, s.resampledPixelSpacing, s.label) == \
        (25, None, 0, (1,), None, 1)
    assert (s.interpolator, s.padDistance, s.minimumROIDimensions, s.symmetricalGLCM) == ('sitkBSpline', 5, 2, True)


def test_yaml_and_json_parameter_files(tmp_path):
    yaml_file = tmp_path / 'params.yaml'
    yaml_file.write_text('imageType:\n  Original: {}\nfeatureClass:\n  shape:\n  glcm: [Contrast, Idm]\n'
                         'setting:\n  binWidth: 5\n  resampledPixelSpacing: [1, 1, 0]\n  interpolator: sitkLinear\n'
                         '  label: 2\n  additionalInfo: true\n  sigma: [1, 2]\n')
    s, classes = settings.read_params(str(yaml_file))
    assert (s.binWidth, s.resampledPixelSpacing, s.interpolator, s.label) == (5, (1, 1, 0), 'sitkLinear', 2)
    assert classes == {'shape': None, 'glcm': ['Contrast', 'Idm']}
    json_file = tmp_path / 'params.json'
    json_file.write_text(json.dumps({'setting': {'binCount': 32, 'interpolator': sitk.sitkBSpline,
                                                 'distances': [1, 2], 'voxelArrayShift': 1000}}))
    s, classes = settings.read_params(str(json_file))
    assert (s.binCount, s.interpolator, s.distances, s.voxelArrayShift, classes) == (32, 'sitkBSpline', (1, 2), 1000,
                                                                                     None)


@pytest.mark.parametrize('text,message', [
    ('setting:\n  force2D: true\n', 'force2D'),
    ('setting:\n  binWidht: 5\n', 'unknown setting "binWidht"'),
    ('setting:\n  interpolator: sitkCubic\n', 'interpolator'),
    ('setting:\n  binWidth: -1\n', 'binWidth'),
    ('imageType:\n  Square: {}\n', 'imageType Square is not supported'),
    ('imageType:\n  LoG: {}\n', 'imageType LoG needs sigma'),
    ('imageType:\n  LoG: {sigma: [1.0, 0]}\n', 'imageType LoG needs sigma'),
    ('imageType:\n  LoG: {sigma: [1.0], binWidth: 3}\n', 'per-image-type setting "binWidth"'),
    ('imageType:\n  Wavelet: {wavelet: coif99}\n', 'not a discrete PyWavelets wavelet'),
    ('imageType:\n  Wavelet: {level: 0}\n', 'level must be >= 1'),
    ('setting: [1, 2\n', 'not valid YAML'),
])
def test_bad_parameter_files_name_the_problem(tmp_path, text, message):
    path = tmp_path / 'params.yaml'
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        settings.read_params(str(path))


def test_bin_edges_follow_pyradiomics():
    s = settings.Settings(binWidth=25)
    # Edges run past the maximum by up to two widths (the code PyRadiomics runs; its docstring example stops at 175).
    np.testing.assert_array_equal(roi.bin_edges(np.array([54., 166.]), s), [50, 75, 100, 125, 150, 175, 200])
    np.testing.assert_array_equal(roi.bin_edges(np.array([-30., 20.]), s), [-50, -25, 0, 25, 50])
    assert np.digitize([75.0], roi.bin_edges(np.array([54., 75.]), s)).tolist() == [2]  # Max on an edge: own bin.
    np.testing.assert_array_equal(roi.bin_edges(np.array([50., 50.]), s), [50, 75])  # A flat ROI: one bin.
    edges = roi.bin_edges(np.array([0., 1., 10.]), settings.Settings(binCount=4))
    assert len(edges) == 5 and np.digitize([10.0], edges).tolist() == [4]


def test_box_mask_is_centred_and_stays_inside():
    image = sitk.Image(20, 10, 6, sitk.sitkUInt8)
    image.SetSpacing((0.5, 1.0, 3.0))
    box = sitk.GetArrayFromImage(roi.box_mask(image, (4.0, 4.0, 6.0)))  # 8 x 4 x 2 voxels.
    nz = np.argwhere(box)
    assert box.sum() == 8 * 4 * 2 and nz.min(0).tolist() == [2, 3, 6]
    mask = np.zeros((6, 10, 20), np.uint8)
    mask[0, 0, 0] = mask[1, 1, 1] = 1  # A corner region: the box moves inward rather than shrink.
    ref = sitk.GetImageFromArray(mask)
    ref.CopyInformation(image)
    box = sitk.GetArrayFromImage(roi.box_mask(image, (4.0, 4.0, 6.0), ref))
    assert box.sum() == 64 and np.argwhere(box).min(0).tolist() == [0, 0, 0]


def test_parse_features():
    assert len(features.all_feature_names()) == 107
    assert features.parse_features('glcm_Contrast,firstorder') == \
        features.all_feature_names(['firstorder']) + ['original_glcm_Contrast']
    assert features.parse_features(['original_ngtdm_Busyness']) == ['original_ngtdm_Busyness']
    with pytest.raises(ValueError, match='unknown feature "glcm_Contrat"'):
        features.parse_features('glcm_Contrat')
    with pytest.raises(ValueError, match='unknown feature class'):
        features.parse_features('wavelet')


def _image_and_mask(mask_spacing=(1.0, 1.0, 1.0), label=1):
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.integers(0, 200, (8, 9, 10)).astype(np.int16))
    array = np.zeros((8, 9, 10), np.uint8)
    array[2:6, 3:7, 2:8] = label
    mask = sitk.GetImageFromArray(array)
    mask.SetSpacing(mask_spacing)
    return image, mask


def test_extract_errors():
    options = features.ExtractOptions(features=tuple(features.all_feature_names(['firstorder'])))
    with pytest.raises(ValueError, match='another grid'):
        features.extract(*_image_and_mask(mask_spacing=(1.0, 1.0, 2.0)), options, 'img')
    with pytest.raises(ValueError, match='no voxel with label 1.*labels \\[2\\]'):
        features.extract(*_image_and_mask(label=2), options, 'img')
    with pytest.raises(ValueError, match='needs one'):
        features.extract(_image_and_mask()[0], None, options, 'img')
    with pytest.raises(ValueError, match='shape features of a fixed box'):
        features.ExtractOptions(roi='box', box_mm=(2, 2, 2))
    boxed = features.ExtractOptions(features=options.features, roi='box', box_mm=(4.0, 4.0, 4.0))
    values = features.extract(_image_and_mask()[0], None, boxed, 'img')  # Centred on the volume, no mask needed.
    assert np.isfinite(list(values.values())).all()


def test_extract_matches_the_class_functions_and_resamples():
    image, mask = _image_and_mask()
    values = features.extract(image, mask, features.ExtractOptions(), 'img')
    assert list(values) == features.all_feature_names()
    assert values['original_shape_VoxelVolume'] == 4 * 4 * 6
    resampled = features.extract(image, mask, features.ExtractOptions(
        settings=settings.Settings(resampledPixelSpacing=(2, 2, 2))), 'img')
    assert resampled['original_shape_VoxelVolume'] == pytest.approx(4 * 4 * 6, rel=0.5)
    assert resampled['original_firstorder_Mean'] != values['original_firstorder_Mean']

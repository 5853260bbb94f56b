# SPDX-License-Identifier: Apache-2.0
"""The procedural phantom: deterministic, varied, anatomy-like, and measurable with organ_contrast."""

import numpy as np
import pytest

from volumes.phantom import FIELD_OF_VIEW_MM, make_phantom, organ_contrast


def test_same_seed_same_volume_and_seeds_differ():
    a, spacing_a = make_phantom(3, (48, 40, 12))
    b, spacing_b = make_phantom(3, (48, 40, 12))
    c, _ = make_phantom(4, (48, 40, 12))
    assert a.shape == (12, 40, 48) and a.dtype == np.float32
    assert np.array_equal(a, b) and spacing_a == spacing_b
    assert np.abs(a - c).mean() > 0.01


def test_default_geometry_is_anisotropic_and_covers_the_field_of_view():
    volume, spacing = make_phantom(0)
    assert volume.shape == (24, 128, 128)
    assert spacing == pytest.approx((0.5, 0.5, 3.0))
    _, spacing = make_phantom(0, (64, 32, 8))
    assert np.allclose(np.asarray(spacing) * (64, 32, 8), FIELD_OF_VIEW_MM)
    _, spacing = make_phantom(0, (16, 16, 4), spacing_xyz=(1, 1, 2))
    assert spacing == (1.0, 1.0, 2.0)


def test_anatomy_organ_brighter_than_tissue_and_air_dark():
    volume, _ = make_phantom(5, (64, 64, 16))
    d, h, w = volume.shape
    organ = volume[d // 2, h // 2 - 2:h // 2 + 2, w // 2 - 2:w // 2 + 2].mean()
    air = volume[:, :2, :2].mean()
    assert volume.min() >= 0
    assert air < 0.1 < 0.5 < organ  # Air is at the Rician noise floor, the organ is bright.


def test_organ_contrast_clearly_positive_for_phantoms_and_about_zero_for_noise():
    contrasts = [organ_contrast(make_phantom(seed, (32, 32, 16))[0]) for seed in range(20)]
    assert min(contrasts) > 0.3
    rng = np.random.default_rng(0)
    noise = [organ_contrast(rng.random((16, 32, 32))) for _ in range(10)]
    assert max(abs(x) for x in noise) < 0.05
    assert organ_contrast(np.ones((4, 8, 8))) == 0.0
    # The measure does not depend on the intensity scale or offset.
    v = make_phantom(1, (32, 32, 16))[0]
    assert organ_contrast(v * 200 + 7) == pytest.approx(organ_contrast(v), rel=1e-6)


def test_shape_and_position_vary_and_air_has_a_rician_floor():
    areas, centres, air = [], [], []
    for seed in range(6):
        volume, _ = make_phantom(seed, (64, 64, 16))
        body = volume[8] > 0.2  # The middle slice's body mask [H, W].
        areas.append(int(body.sum()))
        centres.append(np.argwhere(body).mean(0))
        air.append(np.concatenate([volume[:, :4, :4].ravel(), volume[:, -4:, -4:].ravel()]).mean())
    assert (max(areas) - min(areas)) / np.mean(areas) > 0.1  # Random body size and shape.
    assert np.ptp(np.asarray(centres), axis=0).max() > 1.0     # Random position (voxels).
    # Magnitude noise of sigma 0.02-0.04 on empty air averages sigma * sqrt(pi / 2), never 0.
    assert 0.02 < min(air) and max(air) < 0.055


@pytest.mark.parametrize('kwargs, message', [
    (dict(size_xyz=(1, 8, 8)), 'size must be three integers >= 2'),
    (dict(size_xyz=(8, 8, 8), spacing_xyz=(1, 0, 1)), 'spacing must be three positive'),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_phantom(0, **kwargs)
    with pytest.raises(ValueError, match='non-empty'):
        organ_contrast(np.zeros((4, 4)))


def test_the_organ_mask_marks_the_organ_and_its_dice_measures_that():
    import numpy as np

    from volumes import phantom
    volume, labels, spacing = phantom.make_labelled_phantom(4, (32, 32, 16))
    plain, plain_spacing = phantom.make_phantom(4, (32, 32, 16))
    assert np.array_equal(volume, plain) and spacing == plain_spacing  # The mask draws no random numbers.
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1, 2} and phantom.LABEL_NAMES == {
        1: 'inner zone', 2: 'outer zone'}
    assert volume[labels > 0].mean() > 2 * volume[labels == 0].mean()  # The organ is bright.
    dice = [phantom.organ_dice(*phantom.make_labelled_phantom(s, (32, 32, 16))[:2]) for s in range(6)]
    assert min(dice) > 0.75  # Measured 0.77-0.94 over seeds 0-9.
    assert phantom.organ_dice(volume, np.roll(labels, 10, axis=2)) < 0.2  # A mask in the wrong place.
    assert phantom.organ_dice(np.ones_like(volume), labels) == 0.0

# SPDX-License-Identifier: Apache-2.0
"""metrics.downstream.segmenter and experiment: the networks fit anisotropic grids, the scores match hand-computed
values (spacing in mm, undefined scores as NaN), and the same seed gives the same numbers."""

import numpy as np
import pytest
import torch

from metrics.downstream import data, experiment, segmenter

CPU = torch.device('cpu')


def test_the_unet_halves_thin_axes_less_often():
    assert segmenter.unet_strides((24, 256, 256)) == [(2, 2, 2), (2, 2, 2), (1, 2, 2), (1, 2, 2)]
    assert segmenter.unet_strides((8, 16, 16)) == [(2, 2, 2), (1, 2, 2)]
    assert segmenter.unet_strides((5, 16, 16)) == [(1, 2, 2), (1, 2, 2)]
    assert segmenter.unet_strides((3, 3, 3)) == []
    with pytest.raises(ValueError, match='volumes of 7x6x3 are too small for the U-Net'):
        segmenter.build_model(segmenter.TrainOptions(), 1, 2, (3, 6, 7))


@pytest.mark.parametrize('model', segmenter.MODELS)
@pytest.mark.parametrize('shape', [(8, 16, 16), (5, 12, 16)])
def test_both_networks_keep_the_grid(model, shape):
    net = segmenter.build_model(segmenter.TrainOptions(model=model, width=4), 2, 3, shape)
    assert net(torch.zeros(1, 2, *shape)).shape == (1, 3, *shape)


def test_scores_match_hand_computed_values():
    truth = np.zeros((3, 6, 8, 10), np.uint8)
    pred = np.zeros_like(truth)
    # Case 0: label 1 is a 2x2x4 box, predicted half (Dice 2*8/(16+8)); label 2 is one voxel, predicted 3 slices
    # away (HD95 3 x 2.5 mm). Case 1: label 2 absent from the truth (Dice and HD95 undefined) but predicted; label 1
    # present and not predicted (Dice 0, HD95 undefined). Case 2: label 1 one voxel, predicted 4 columns away
    # (HD95 4 x 0.5 mm).
    truth[0, 1:3, 1:3, 1:5] = 1
    pred[0, 1:3, 1:3, 1:3] = 1
    truth[0, 0, 6, 6], pred[0, 3, 6, 6] = 2, 2
    truth[1, 1:3, 1:3, 1:5] = 1
    pred[1, 4, 4, 4] = 2
    truth[2, 2, 2, 2], pred[2, 2, 2, 6] = 1, 1
    dice, hd = segmenter.score(pred, truth, 3, spacing_dhw=(2.5, 1.0, 0.5))
    np.testing.assert_allclose(dice, [[16 / 24, 0.0], [0.0, np.nan], [0.0, np.nan]], atol=1e-6)
    np.testing.assert_allclose(hd[[0, 2], [1, 0]], [7.5, 2.0], atol=1e-6)
    assert np.isnan(hd[1]).all() and np.isnan(hd[2, 1])
    assert 0 < hd[0, 0] < 5  # A surface distance within the box: half of it is missing.


def phantom_like_cases(count: int, seed: int) -> list:
    """Boxes of two labels at random places: images whose labels can be learned."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(count):
        labels = np.zeros((8, 16, 16), np.uint8)
        z, y, x = rng.integers(0, 4), rng.integers(1, 8), rng.integers(1, 8)
        labels[z:z + 5, y:y + 8, x:x + 8] = 2
        labels[z + 1:z + 4, y + 2:y + 6, x + 2:x + 6] = 1
        image = (np.choose(labels, [40, 220, 140]) + rng.normal(0, 10, labels.shape)).clip(0, 255).astype(np.uint8)
        cases.append(data.Case(f'case{i}', image[None], labels))
    return cases


@pytest.mark.slow
def test_the_same_seed_gives_the_same_numbers():
    train, test = phantom_like_cases(6, 0), phantom_like_cases(3, 1)
    options = segmenter.TrainOptions(width=4, iters=4, batch=2)
    backend = segmenter.MonaiBackend(options, num_classes=3, max_value=255, device=CPU)
    train_set = data.LabelledSet('t', None, (1, 8, 16, 16), train)
    test_set = data.LabelledSet('s', None, (1, 8, 16, 16), test)
    runs = experiment.plan(['real'], [0.5, 1], [0, 1], len(train), 0, 1.0)
    score = lambda p, t: segmenter.score(p, t, 3, (3.0, 1.0, 1.0))  # noqa: E731

    def numbers():
        steps = []
        results = experiment.execute(backend, runs, train_set, test_set, None, score, lambda n, s: steps.append(s))
        assert sum(steps) == len(runs) * options.iters
        return np.stack([r.dice for r in results]), np.stack([np.nan_to_num(r.hd95, nan=-1) for r in results])
    first, second = numbers(), numbers()
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    # Seeds 0 and 1 at fraction 1 use every training case: only the weights, minibatches and augmentation differ.
    assert not np.array_equal(first[0][2], first[0][3])


def test_the_augmentation_moves_image_and_labels_together():
    case = phantom_like_cases(1, 2)[0]
    transform = segmenter.augmentation((8, 16, 16), seed=3)
    image = torch.from_numpy(case.labels[None].astype(np.float32))
    with segmenter.untracked_meta():
        moved = [transform({'image': image, 'label': image.clone()}) for _ in range(6)]
    changed = 0
    for out in moved:
        label = out['label']
        assert set(torch.unique(label).tolist()) <= {0.0, 1.0, 2.0}  # Nearest neighbour: no label mixing.
        inside = out['image'][label == 2]  # The image (bilinear) agrees with the labels where they say "2".
        assert inside.numel() == 0 or (inside - 2).abs().mean() < 0.35
        changed += not torch.equal(label, image)
    assert changed >= 3


@pytest.mark.slow
def test_training_learns_the_boxes():
    train, test = phantom_like_cases(8, 4), phantom_like_cases(4, 5)
    model = segmenter.train(train, 3, 255, segmenter.TrainOptions(width=4, iters=60, batch=4, lr=1e-2), 0, CPU)
    dice, _ = segmenter.score(segmenter.predict(model, test, 255, CPU), np.stack([c.labels for c in test]), 3,
                              (3.0, 1.0, 1.0))
    assert np.nanmean(dice) > 0.6, dice  # 0.74 measured; predicting nothing scores 0.

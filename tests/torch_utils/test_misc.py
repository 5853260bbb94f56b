# SPDX-License-Identifier: Apache-2.0
"""misc: constants, shape checks, the infinite sampler, parameter copies and the module summary."""

import itertools

import pytest
import torch

from torch_utils import misc


def test_constant_is_cached_and_broadcast():
    a = misc.constant([1.0, 2.0], shape=[3, 2])
    assert a.shape == (3, 2) and torch.equal(a[2], torch.tensor([1.0, 2.0]))
    assert misc.constant([1.0, 2.0], shape=[3, 2]) is a
    assert misc.constant([1.0, 2.0], shape=[3, 2], dtype=torch.float64) is not a


def test_assert_shape():
    misc.assert_shape(torch.zeros(2, 3, 4), [2, None, 4])
    with pytest.raises(AssertionError, match='dimension 1'):
        misc.assert_shape(torch.zeros(2, 3, 4), [2, 5, 4])
    with pytest.raises(AssertionError, match='number of dimensions'):
        misc.assert_shape(torch.zeros(2, 3), [2, 3, 1])


def test_infinite_sampler_covers_and_splits_ranks():
    data = list(range(10))
    stream0 = list(itertools.islice(iter(misc.InfiniteSampler(data, rank=0, num_replicas=2, seed=1)), 50))
    stream1 = list(itertools.islice(iter(misc.InfiniteSampler(data, rank=1, num_replicas=2, seed=1)), 50))
    single = list(itertools.islice(iter(misc.InfiniteSampler(data, seed=1)), 100))
    assert stream0 == single[0::2] and stream1 == single[1::2]  # Ranks take alternate items of one stream.
    assert set(single) == set(data) and single[:10] != sorted(single[:10])
    assert stream0 == list(itertools.islice(iter(misc.InfiniteSampler(data, rank=0, num_replicas=2, seed=1)), 50))
    resumed = list(itertools.islice(iter(misc.InfiniteSampler(data, rank=0, num_replicas=2, seed=1, skip=7)), 43))
    assert resumed == stream0[7:]
    unshuffled = list(itertools.islice(iter(misc.InfiniteSampler(data, shuffle=False)), 12))
    assert unshuffled == list(range(10)) + [0, 1]
    with pytest.raises(ValueError):
        misc.InfiniteSampler([], rank=0)


def test_copy_params_and_buffers():
    src, dst = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    misc.copy_params_and_buffers(src, dst, require_all=True)
    assert torch.equal(src.weight, dst.weight) and dst.weight.requires_grad
    with pytest.raises(ValueError, match='shape'):
        misc.copy_params_and_buffers(torch.nn.Linear(4, 2), dst, require_all=True)


def test_print_module_summary(capsys):
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
    out = misc.print_module_summary(net, [torch.zeros(5, 4)])
    text = capsys.readouterr().out
    assert out.shape == (5, 2)
    assert 'Total' in text and str(4 * 8 + 8 + 8 * 2 + 2) in text and '[5, 8]' in text

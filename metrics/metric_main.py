# SPDX-License-Identifier: Apache-2.0
"""The metric registry, calc_metric and the JSONL report.

Names follow the official pattern, with the slice strategy where the official names say `full`:
    fid{N}_{mid|tri|all}     slice-wise FID of N generated volumes against every real volume (Inception)
    kid{N}_{mid|tri|all}     slice-wise KID (Inception), 100 subsets of at most 1000 slices
    pr{N}{k}_{mid|tri|all}   slice-wise precision and recall with neighbourhood k (VGG16)
    fid3d{N}_medicalnet{10|18|34|50}   3D FID on MedicalNet features (N defaults to 1k; needs --medicalnet)
    msssim_gen{N}            MS-SSIM of N generated pairs (diversity) and of N real pairs for reference
    mmd{N}_full              linear-kernel MMD^2 per voxel (N defaults to the dataset size)
N is a count such as 500 or 3k (thousands). `mid` is the middle axial slice of each volume, `tri` the middle
axial, coronal and sagittal slices (one value per plane plus their mean), `all` every axial slice. Multi-channel
data (one MR sequence per channel) gets one value per channel plus their mean; with `tri` one per plane and channel,
and the mean of each plane and of each channel. The generated volumes depend only on the seed, not on --gpus.
The registered names (list_valid_metrics) are a documented set; any name of the patterns above is also valid.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import time
from typing import Callable

import dnnlib

from . import (fid3d, frechet_inception_distance, kernel_inception_distance, metric_utils, mmd, ms_ssim,
               precision_recall)

MetricFn = Callable[[metric_utils.MetricOptions], tuple[dict, dict]]

_metric_dict: dict[str, MetricFn] = {}


def register_metric(fn: MetricFn) -> MetricFn:
    """Register `fn(opts) -> ({suffix: value}, details)` under its own name."""
    if not callable(fn):
        raise ValueError('register_metric decorates a function')
    _metric_dict[fn.__name__] = fn
    return fn

#----------------------------------------------------------------------------
# Names of the patterns in the module docstring.

_COUNT = r'(\d+k?)'
_SLICES = r'(mid|tri|all)'


def _count(text: str) -> int:
    return int(text[:-1]) * 1000 if text.endswith('k') else int(text)


def parse_metric(name: str) -> MetricFn | None:
    """The function behind a pattern name such as 'fid500_mid' or 'pr2k3_tri'; None if it fits no pattern."""
    patterns = [
        (rf'fid3d{_COUNT}?_medicalnet(10|18|34|50)',
         lambda n, d: functools.partial(fid3d.compute_fid3d, num_gen=_count(n or '1k'), depth=int(d))),
        (rf'fid{_COUNT}_{_SLICES}',
         lambda n, s: functools.partial(frechet_inception_distance.compute_fid, num_gen=_count(n), slices=s)),
        (rf'kid{_COUNT}_{_SLICES}',
         lambda n, s: functools.partial(kernel_inception_distance.compute_kid, num_gen=_count(n), slices=s)),
        (rf'pr{_COUNT}(\d)_{_SLICES}',
         lambda n, k, s: functools.partial(precision_recall.compute_pr, num_gen=_count(n), slices=s,
                                           nhood_size=int(k))),
        (rf'msssim_gen{_COUNT}', lambda n: functools.partial(ms_ssim.compute_msssim, num_pairs=_count(n))),
        (rf'mmd{_COUNT}?_full', lambda n: functools.partial(mmd.compute_mmd, num_gen=_count(n) if n else None)),
    ]
    for pattern, make in patterns:
        match = re.fullmatch(pattern, name)
        if match is not None:
            numbers = [_count(g) for g in match.groups() if g is not None and re.fullmatch(_COUNT, g)]
            if 0 in numbers:  # No zero counts or neighbourhoods.
                return None
            return make(*match.groups())
    return None

#----------------------------------------------------------------------------
# The documented set.


@register_metric
def fid3k_mid(opts):
    return frechet_inception_distance.compute_fid(opts, num_gen=3000, slices='mid')


@register_metric
def fid3k_tri(opts):
    return frechet_inception_distance.compute_fid(opts, num_gen=3000, slices='tri')


@register_metric
def fid3k_all(opts):
    return frechet_inception_distance.compute_fid(opts, num_gen=3000, slices='all')


@register_metric
def fid50k_mid(opts):
    return frechet_inception_distance.compute_fid(opts, num_gen=50000, slices='mid')


@register_metric
def kid3k_mid(opts):
    return kernel_inception_distance.compute_kid(opts, num_gen=3000, slices='mid')


@register_metric
def kid3k_tri(opts):
    return kernel_inception_distance.compute_kid(opts, num_gen=3000, slices='tri')


@register_metric
def kid3k_all(opts):
    return kernel_inception_distance.compute_kid(opts, num_gen=3000, slices='all')


@register_metric
def pr3k3_mid(opts):
    return precision_recall.compute_pr(opts, num_gen=3000, slices='mid', nhood_size=3)


@register_metric
def pr3k3_tri(opts):
    return precision_recall.compute_pr(opts, num_gen=3000, slices='tri', nhood_size=3)


@register_metric
def pr3k3_all(opts):
    return precision_recall.compute_pr(opts, num_gen=3000, slices='all', nhood_size=3)


@register_metric
def fid3d_medicalnet10(opts):
    return fid3d.compute_fid3d(opts, num_gen=1000, depth=10)


@register_metric
def fid3d_medicalnet50(opts):
    return fid3d.compute_fid3d(opts, num_gen=1000, depth=50)


@register_metric
def msssim_gen100(opts):
    return ms_ssim.compute_msssim(opts, num_pairs=100)


@register_metric
def msssim_gen1k(opts):
    return ms_ssim.compute_msssim(opts, num_pairs=1000)


@register_metric
def mmd_full(opts):
    return mmd.compute_mmd(opts)

#----------------------------------------------------------------------------
# Public interface.


def get_metric(name: str) -> MetricFn:
    """The function of a registered or pattern name; ValueError naming the valid ones otherwise."""
    fn = _metric_dict.get(name) or parse_metric(name)
    if fn is None:
        raise ValueError(f'unknown metric "{name}"; expected one of {", ".join(list_valid_metrics())} or a name of '
                         f'the form fid<N>_<mid|tri|all>, kid<N>_..., pr<N><k>_..., fid3d<N>_medicalnet<10|18|34|50>, '
                         f'msssim_gen<N>, mmd<N>_full (N: e.g. 500 or 3k)')
    return fn


def is_valid_metric(name: str) -> bool:
    return name in _metric_dict or parse_metric(name) is not None


def list_valid_metrics() -> list[str]:
    return list(_metric_dict)


def calc_metric(metric: str, **kwargs) -> dnnlib.EasyDict:
    """Evaluate one metric.

    Args:
        metric: A registered or pattern name.
        **kwargs: MetricOptions arguments (G, G_kwargs, dataset_kwargs, num_gpus, rank, device, cache, progress,
            detector_urls, seed); `<name>_url` arguments (inception_url, vgg16_url, medicalnet_url) are merged into
            detector_urls.

    Returns:
        EasyDict(results={key: value}, metric, total_time, total_time_str, num_gpus, details): keys are the metric
        name for the headline value and name_<suffix> for the others (planes, channels, precision/recall).
    """
    fn = get_metric(metric)
    detector_urls = dict(kwargs.pop('detector_urls', None) or {})
    for key in [k for k in kwargs if k.endswith('_url')]:
        detector_urls[key[:-len('_url')]] = kwargs.pop(key)
    opts = metric_utils.MetricOptions(detector_urls=detector_urls, **kwargs)

    start = time.time()
    values, details = fn(opts)
    metric_utils.record_inputs(opts, metric_utils.dataset_file(opts))
    total_time = time.time() - start
    results = dnnlib.EasyDict({'_'.join(p for p in (metric, key) if p): float(v) for key, v in values.items()})
    return dnnlib.EasyDict(results=results, metric=metric, total_time=total_time,
                           total_time_str=dnnlib.util.format_time(total_time), num_gpus=opts.num_gpus,
                           details=dict(details, seed=opts.seed, inputs=opts.inputs))


def report_metric(result_dict: dict, run_dir: str | None = None, snapshot_pkl: str | None = None) -> None:
    """Print the result as one JSON line and append it to <run_dir>/metric-<name>.jsonl.

    snapshot_pkl is stored relative to run_dir when it lies inside it.
    """
    metric = result_dict['metric']
    if not is_valid_metric(metric):
        raise ValueError(f'unknown metric "{metric}"')
    if snapshot_pkl is not None and run_dir is not None:
        rel = os.path.relpath(os.path.abspath(snapshot_pkl), os.path.abspath(run_dir))
        snapshot_pkl = rel if not rel.startswith('..') else snapshot_pkl
    line = json.dumps(dict(result_dict, snapshot_pkl=snapshot_pkl, timestamp=time.time()))
    sys.stderr.flush()  # The line end of a finished progress bar goes first,
    print(line, flush=True)  # and the result before any later bar, also when stdout is a pipe.
    if run_dir is not None and os.path.isdir(run_dir):
        dnnlib.util.append_text(os.path.join(run_dir, f'metric-{metric}.jsonl'), line + '\n')

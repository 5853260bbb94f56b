# SPDX-License-Identifier: Apache-2.0
"""The metric registry, calc_metric and the JSONL report.

Every metric family is one entry of FAMILIES: its name pattern, the function that computes it, how the name's
parts become that function's arguments, a line of help and its standard names. Names follow the official
pattern, with the slice strategy where the official names say `full`; N is a count such as 500 or 3k (thousands).
`mid` is the middle axial slice of each volume, `tri` the middle axial, coronal and sagittal slices (one value per
plane plus their mean; coronal and sagittal upright, head at the top), `all` every axial slice. Multi-channel data
(one MR sequence per channel) gets one value per channel plus their mean; with `tri` one per plane and channel, and
the mean of each plane and of each channel. The generated volumes depend only on the seed, not on --gpus.

The metric modules (and torch) are imported when a metric is used, so the registry can describe itself to
`calc_metrics.py --help` at once.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import os
import re
import sys
import time
from typing import Any, Callable

import dnnlib

MetricFn = Callable[[Any], tuple[dict, dict]]  # (MetricOptions) -> ({suffix: value}, details)

_COUNT = r'\d+k?'
_SLICES = r'mid|tri|all'


def _count(text: str | None) -> int | None:
    return None if text is None else int(text[:-1]) * 1000 if text.endswith('k') else int(text)


@dataclasses.dataclass(frozen=True)
class MetricFamily:
    """Metrics whose names match `regex`: `target` ('module:function' in metrics/) called with arguments(groups)."""
    shown: str                              # The pattern as users read it, e.g. 'fid<N>_<mid|tri|all>'.
    regex: str                              # Named groups: n (a count), k, slices, depth, version.
    target: str
    arguments: Callable[[dict], dict]
    help: str
    standard: tuple[str, ...] = ()          # Names listed by list_valid_metrics().

    def build(self, name: str) -> MetricFn | None:
        match = re.fullmatch(self.regex, name)
        if match is None:
            return None
        groups = match.groupdict()
        if any(value in ('0', '0k') for key, value in groups.items() if key in ('n', 'k')):
            return None  # No zero counts or neighbourhoods.
        module, function = self.target.split(':')
        fn = getattr(importlib.import_module(f'metrics.{module}'), function)
        return functools.partial(fn, **self.arguments(groups))


FAMILIES = (
    MetricFamily('fid3d<N>_medicalnet<10|18|34|50>', rf'fid3d(?P<n>{_COUNT})?_medicalnet(?P<depth>10|18|34|50)',
                 'fid3d:compute_fid3d', lambda g: dict(num_gen=_count(g['n'] or '1k'), depth=int(g['depth'])),
                 '3D FID on MedicalNet features (N defaults to 1k; needs --medicalnet)',
                 ('fid3d_medicalnet10', 'fid3d_medicalnet50')),
    MetricFamily('fid<N>_<mid|tri|all>', rf'fid(?P<n>{_COUNT})_(?P<slices>{_SLICES})',
                 'frechet_inception_distance:compute_fid', lambda g: dict(num_gen=_count(g['n']), slices=g['slices']),
                 'slice-wise FID of N generated volumes against every real volume (Inception)',
                 ('fid3k_mid', 'fid3k_tri', 'fid3k_all', 'fid50k_mid')),
    MetricFamily('kid<N>_<mid|tri|all>', rf'kid(?P<n>{_COUNT})_(?P<slices>{_SLICES})',
                 'kernel_inception_distance:compute_kid', lambda g: dict(num_gen=_count(g['n']), slices=g['slices']),
                 'slice-wise KID (Inception), 100 subsets of at most 1000 slices',
                 ('kid3k_mid', 'kid3k_tri', 'kid3k_all')),
    MetricFamily('pr<N><k>_<mid|tri|all>', rf'pr(?P<n>{_COUNT})(?P<k>\d)_(?P<slices>{_SLICES})',
                 'precision_recall:compute_pr',
                 lambda g: dict(num_gen=_count(g['n']), slices=g['slices'], nhood_size=int(g['k'])),
                 'slice-wise precision and recall with neighbourhood k (VGG16)',
                 ('pr3k3_mid', 'pr3k3_tri', 'pr3k3_all')),
    MetricFamily('msssim_gen<N>', rf'msssim_gen(?P<n>{_COUNT})', 'ms_ssim:compute_msssim',
                 lambda g: dict(num_pairs=_count(g['n'])),
                 'MS-SSIM of N generated pairs (diversity) and of N real pairs for reference',
                 ('msssim_gen100', 'msssim_gen1k')),
    MetricFamily('mmd<N>_full', rf'mmd(?P<n>{_COUNT})?_full', 'mmd:compute_mmd', lambda g: dict(num_gen=_count(g['n'])),
                 'linear-kernel MMD^2 per voxel (N defaults to the dataset size)', ('mmd_full',)),
    MetricFamily('frd<N>_<v1|v0>', rf'frd(?P<n>{_COUNT})?_(?P<version>v1|v0)', 'frd_metric:compute_frd',
                 lambda g: dict(num_gen=_count(g['n']), version=g['version']),
                 'Frechet Radiomics Distance as frd-score 1.0.1 (N defaults to the dataset size)',
                 ('frd_v1', 'frd_v0')),
    # Published protocols of other 3D generators (metrics/peer_fid.py, docs/metrics.md).
    MetricFamily('fid3d<N>_<hagan|wdm|brainldm>', rf'fid3d(?P<n>{_COUNT})?_(?P<peer>hagan|wdm|brainldm)',
                 'peer_fid:compute_fid3d_peer',
                 lambda g: dict(num_gen=_count(g['n']), peer=g['peer'], metric=f"fid3d{g['n'] or ''}_{g['peer']}"),
                 "3D FID as that paper computed it (docs/metrics.md; N: the paper's; needs --medicalnet)",
                 ('fid3d_hagan', 'fid3d_wdm', 'fid3d_brainldm')),
    MetricFamily('fid25d<N>_maisi[_c<PCT>]', rf'fid25d(?P<n>{_COUNT})?_maisi(?:_c(?P<centre>[1-9]\d?))?',
                 'peer_fid:compute_fid25d_maisi',
                 lambda g: dict(num_gen=_count(g['n']), centre_percent=int(g['centre']) if g['centre'] else None,
                                metric=f"fid25d{g['n'] or ''}_maisi" + (f"_c{g['centre']}" if g['centre'] else '')),
                 "MAISI's 2.5D FID per plane (PCT: central % of slices; N: 100; needs --radimagenet)",
                 ('fid25d_maisi',)),
)

_custom: dict[str, MetricFn] = {}  # Metrics added with register_metric.


def register_metric(fn: MetricFn) -> MetricFn:
    """Add a metric of your own, `fn(opts) -> ({suffix: value}, details)`, under its function name."""
    if not callable(fn):
        raise ValueError('register_metric decorates a function')
    _custom[fn.__name__] = fn
    return fn


def parse_metric(name: str) -> MetricFn | None:
    """The function behind a name such as 'fid500_mid' or 'pr2k3_tri', with its arguments; None if no family has it."""
    return next((fn for family in FAMILIES if (fn := family.build(name)) is not None), None)


def describe_metrics() -> str:
    """The families as lines of help text: pattern, then what it measures."""
    width = max(len(family.shown) for family in FAMILIES)
    return '\n'.join(f'  {family.shown:<{width}}  {family.help}' for family in FAMILIES)

#----------------------------------------------------------------------------
# Public interface.


def get_metric(name: str) -> MetricFn:
    """The function of a metric name; ValueError naming the valid forms otherwise."""
    fn = _custom.get(name) or parse_metric(name)
    if fn is None:
        forms = ', '.join(family.shown for family in FAMILIES)
        raise ValueError(f'unknown metric "{name}"; expected one of {", ".join(list_valid_metrics())} or a name of '
                         f'the form {forms} (N: e.g. 500 or 3k)')
    return fn


def is_valid_metric(name: str) -> bool:
    return name in _custom or parse_metric(name) is not None


def list_valid_metrics() -> list[str]:
    """The standard names of every family, then the registered ones."""
    return [name for family in FAMILIES for name in family.standard] + list(_custom)


def calc_metric(metric: str, **kwargs) -> dnnlib.EasyDict:
    """Evaluate one metric.

    Args:
        metric: A registered or pattern name.
        **kwargs: MetricOptions arguments (G, G_kwargs, dataset_kwargs, num_gpus, rank, device, cache, progress,
            detector_urls, seed); `<name>_url` arguments (inception_url, vgg16_url, medicalnet_url,
            radimagenet_url) are merged into detector_urls.

    Returns:
        EasyDict(results={key: value}, metric, total_time, total_time_str, num_gpus, details): keys are the metric
        name for the headline value and name_<suffix> for the others (planes, channels, precision/recall).
    """
    fn = get_metric(metric)
    detector_urls = dict(kwargs.pop('detector_urls', None) or {})
    for key in [k for k in kwargs if k.endswith('_url')]:
        detector_urls[key[:-len('_url')]] = kwargs.pop(key)
    from metrics import metric_utils
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


def evaluate_snapshot(metrics: list[str], metric_kwargs: dict, G, training_set_kwargs: dict, num_gpus: int,
                      rank: int, device, run_dir: str, snapshot_pkl: str) -> dict:
    """The training loop's metrics at a snapshot (its metric_fn): each metric of G against the training set without
    mirrored copies (as calc_metrics.py measures by default), reported to run_dir; returns {name: value}."""
    results = {}
    for metric in metrics:
        result = calc_metric(metric=metric, G=G, dataset_kwargs=dict(training_set_kwargs, xflip=False),
                             num_gpus=num_gpus, rank=rank, device=device, **metric_kwargs)
        if rank == 0:
            report_metric(result, run_dir=run_dir, snapshot_pkl=snapshot_pkl)
        results.update(result.results)
    return results

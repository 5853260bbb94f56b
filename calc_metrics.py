# SPDX-License-Identifier: Apache-2.0
"""Compute quality metrics of a trained network against a dataset.

Results are printed, and appended to metric-<name>.jsonl when the network is a snapshot inside a run directory.

Examples:

\b
  # Slice-wise FID over every axial slice, against the dataset the snapshot was trained on.
  python calc_metrics.py --network=runs/00000-prostate-prostate-high/network-snapshot-000400.pkl --metrics=fid3k_all

\b
  # Metrics that need no detector download (MMD, MS-SSIM diversity), on a safe export, with 2 GPUs.
  python calc_metrics.py --network=G.pt --data=prostate.zip --metrics=mmd_full,msssim_gen100 --gpus=2

\b
  # 3D FID with local MedicalNet weights, and the Inception detector from a local file (offline machine).
  python calc_metrics.py --network=snapshot.pkl --metrics=fid3d_medicalnet10,fid3k_mid \\
      --medicalnet=~/weights/resnet_10_23dataset.pth --inception=~/weights/inception-2015-12-05.pt

\b
  # HA-GAN's 3D FID and MAISI's 2.5D FID, as those papers computed them (docs/metrics.md).
  python calc_metrics.py --network=snapshot.pkl --metrics=fid3d_hagan,fid25d_maisi \\
      --medicalnet=~/weights/resnet_50.pth --radimagenet=~/weights/RadImageNet-ResNet50_notop.pth

\b
Metric names (N: a count such as 500 or 3k):
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Sequence

import click

import dnnlib
from dnnlib.cli import FINITE_FLOAT

from metrics import metric_main  # Light: the registry imports the metric modules (and torch) when a metric runs.

# Imported at first use, so that --help answers at once.
torch = dnnlib.util.lazy_import('torch')
legacy = dnnlib.util.lazy_import('legacy')
metric_utils = dnnlib.util.lazy_import('metrics.metric_utils')
distributed = dnnlib.util.lazy_import('torch_utils.distributed')

#----------------------------------------------------------------------------
# The importable core.


def resolve_dataset_kwargs(network: dict, data: str | None, mirror: bool | None) -> dnnlib.EasyDict:
    """The real dataset's options: --data, else the network's training_set_kwargs; labels and shape from G.

    The real volumes are taken as they are (no mirrored copies, as the official `_full` metrics), also for a
    network trained with --mirror, so values compare across runs and papers; --mirror=1 adds the copies.
    """
    G = network['G_ema']
    if data is not None:
        kwargs = dnnlib.EasyDict(class_name='training.dataset.VolumeFolderDataset', path=data, xflip=False)
    elif network.get('training_set_kwargs'):
        kwargs = dnnlib.EasyDict(network['training_set_kwargs'])
    else:
        raise ValueError('the network file records no dataset; give one with --data')
    kwargs.use_labels = G.c_dim > 0
    kwargs.img_shape = [int(s) for s in G.img_shape]
    kwargs.xflip = bool(mirror)
    return kwargs


def find_run_dir(network_pkl: str) -> str | None:
    """The snapshot's folder when it is a training run directory (it holds training_options.json)."""
    if not os.path.isfile(network_pkl):
        return None
    folder = os.path.dirname(os.path.abspath(network_pkl))
    return folder if os.path.isfile(os.path.join(folder, 'training_options.json')) else None


def calc_metrics(network_pkl: str, metrics: Sequence[str], data: str | None = None, mirror: bool | None = None,
                 truncation_psi: float = 1, inception: str | None = None, vgg16: str | None = None,
                 medicalnet: str | None = None, radimagenet: str | None = None, seed: int | None = 0,
                 progress: bool | None = False, device: torch.device | str | None = None, cache: bool = True,
                 trust_pickle: bool | None = None) -> list[dnnlib.EasyDict]:
    """Evaluate `metrics` for the G_ema of a snapshot pickle or safe export, in this process (rank and world size
    from torch_utils.distributed), and report them (rank 0) to stdout and the run directory's metric-*.jsonl.

    Raises:
        ValueError: an unknown metric, an unreadable network or dataset, a network that does not fit the data.
        OSError: a missing file or an unreachable detector (one line saying where to put it).
    """
    for metric in metrics:
        metric_main.get_metric(metric)
        if metric.startswith('fid3d') and not medicalnet:  # Say so before other metrics spend time.
            raise ValueError(f'{metric} needs MedicalNet weights: pass their path or URL with --medicalnet')
        if metric.startswith('fid25d') and not radimagenet:
            raise ValueError(f'{metric} needs RadImageNet ResNet-50 weights (RadImageNet-ResNet50_notop.pth): pass '
                             f'their path or URL with --radimagenet')
    rank, num_gpus = distributed.get_rank(), distributed.get_world_size()
    with warnings.catch_warnings():  # torch.load warns before it refuses a TorchScript file; the error says enough.
        warnings.filterwarnings('ignore', message='.*TorchScript archive')
        network = legacy.load_network(network_pkl, trust_pickle=trust_pickle)
    dataset_kwargs = resolve_dataset_kwargs(network, data, mirror)
    G_kwargs = dict(truncation_psi=truncation_psi) if truncation_psi != 1 else {}
    detector_urls = dict(inception=inception, vgg16=vgg16, medicalnet=medicalnet, radimagenet=radimagenet)
    run_dir = find_run_dir(network_pkl)
    results = []
    for metric in metrics:
        result = metric_main.calc_metric(metric=metric, G=network['G_ema'], G_kwargs=G_kwargs,
                                         dataset_kwargs=dataset_kwargs, num_gpus=num_gpus, rank=rank, device=device,
                                         cache=cache, progress=progress, detector_urls=detector_urls, seed=seed)
        if rank == 0:
            metric_main.report_metric(result, run_dir=run_dir, snapshot_pkl=network_pkl)
        results.append(result)
    return results


def format_table(results: Sequence[dict]) -> str:
    """One row per result value: name, value, time of its metric."""
    rows = [(key, f'{value:.6g}', r['total_time_str']) for r in results for key, value in r['results'].items()]
    width = max([len('metric')] + [len(k) for k, _, _ in rows])
    lines = [f'{"metric":<{width}}  {"value":>12}  time', f'{"-" * width}  {"-" * 12}  ----']
    lines += [f'{k:<{width}}  {v:>12}  {t}' for k, v, t in rows]
    return '\n'.join(lines)

#----------------------------------------------------------------------------
# Processes.


def run_process(args: dict, env: dict | None = None) -> None:
    """One metric process: join the group (torchrun or a local spawn), evaluate, print the table on rank 0."""
    if env is not None:
        os.environ.update(env)
    distributed.init()
    device = None
    if torch.cuda.is_available():
        torch.cuda.set_device(distributed.get_local_rank())
        device = torch.device('cuda', distributed.get_local_rank())
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False  # Full fp32: the published values use no TF32.
    torch.backends.cudnn.allow_tf32 = False
    results = calc_metrics(**args, device=device)
    if distributed.get_rank() == 0:
        sys.stderr.flush()
        print('\n' + format_table(results), flush=True)
    # Only on success: after an error a rank may never reach this barrier, and the launcher stops the others.
    distributed.shutdown()


def _spawned(rank: int, args: dict, gpus: int, port: int) -> None:
    try:
        run_process(args, env=distributed.local_env(rank, gpus, port))
    except (OSError, ValueError) as e:
        print(f'Error (rank {rank}): {dnnlib.util.one_line(e)}', file=sys.stderr, flush=True)
        if torch.distributed.is_initialized():  # Leave without a barrier (other ranks may not fail); no abort message.
            torch.distributed.destroy_process_group()
        sys.exit(1)


def parse_metric_list(text: str) -> list[str]:
    names = [m.strip() for m in text.split(',') if m.strip()]
    if not names:
        raise click.BadParameter('give at least one metric name', param_hint='--metrics')
    for name in names:
        try:
            metric_main.get_metric(name)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint='--metrics') from None
    return names

#----------------------------------------------------------------------------
# CLI.


@click.command(cls=dnnlib.cli.Command, renamed={'--verbose': '--progress'},
               help=__doc__ + metric_main.describe_metrics() + '\n\nmid: the middle axial slice; tri: the middle '
               'axial, coronal and sagittal slices (per plane and mean); all: every axial slice.')
@dnnlib.cli.network_option()
@click.option('--metrics', help='Comma-separated metric names', metavar='LIST', default='fid3k_all',
              show_default=True)
@click.option('--data', help='Dataset zip or folder', metavar='PATH', type=dnnlib.cli.PATH,
              show_default='the one recorded in the network file')
@click.option('--mirror/--no-mirror', help='Add W-mirrored copies of the real volumes', default=False,
              show_default=True)
@click.option('--gpus', help='Processes to spawn on this node (ignored under torchrun)', type=click.IntRange(min=1),
              default=1, show_default=True)
@click.option('--trunc', 'truncation_psi', help='Truncation psi', type=FINITE_FLOAT, default=1, show_default=True)
@click.option('--seed', help='Seed of latents, labels and noise (recorded with the result)',
              type=click.IntRange(min=0), default=0, show_default=True)
@click.option('--inception', help='Inception detector (FID, KID): URL or local path', metavar='URL|PATH',
              type=dnnlib.cli.PATH, show_default='the official URL')
@click.option('--vgg16', help='VGG16 detector (precision/recall): URL or local path', metavar='URL|PATH',
              type=dnnlib.cli.PATH, show_default='the official URL')
@click.option('--medicalnet', help='MedicalNet weights for 3D FID: URL or local path', metavar='URL|PATH',
              type=dnnlib.cli.PATH)
@click.option('--radimagenet', help='RadImageNet ResNet-50 weights for fid25d_maisi: URL or local path',
              metavar='URL|PATH', type=dnnlib.cli.PATH)
@dnnlib.cli.progress_option()
def main(network_pkl: str, trust_pickle: bool, metrics: str, data: str | None, mirror: bool | None, gpus: int,
         truncation_psi: float, seed: int, inception: str | None, vgg16: str | None, medicalnet: str | None,
         radimagenet: str | None, progress: bool | None) -> None:
    names = parse_metric_list(metrics)
    if not dnnlib.util.is_url(network_pkl):
        if not os.path.isfile(network_pkl):
            raise click.BadParameter(f'no such file: {network_pkl}', param_hint='--network')
    if data is not None:
        if not os.path.exists(data):
            raise click.BadParameter(f'no such file or folder: {data}', param_hint='--data')
    args = dict(network_pkl=network_pkl, metrics=names, data=data, mirror=mirror, truncation_psi=truncation_psi,
                inception=inception, vgg16=vgg16, medicalnet=medicalnet, radimagenet=radimagenet, seed=seed,
                progress=progress, trust_pickle=trust_pickle)
    under_torchrun = 'RANK' in os.environ and 'WORLD_SIZE' in os.environ
    if under_torchrun or gpus == 1:
        try:
            run_process(args)
        except (OSError, ValueError) as e:
            raise click.ClickException(dnnlib.util.one_line(e)) from None
        return
    if torch.cuda.is_available() and gpus > torch.cuda.device_count():
        raise click.BadParameter(f'{gpus} processes but {torch.cuda.device_count()} GPUs', param_hint='--gpus')
    try:
        torch.multiprocessing.spawn(fn=_spawned, args=(args, gpus, distributed.free_port()), nprocs=gpus)
    except torch.multiprocessing.ProcessExitedException:
        raise click.ClickException('a metric process failed (its error is printed above)') from None


if __name__ == '__main__':
    main()

# SPDX-License-Identifier: Apache-2.0
"""Audit generated volumes for memorization: is any of them a copy of a training case?

Every audited volume is matched to its nearest training case by the Pearson correlation of the stored voxels on the
packed grid, the best over small shifts (--shift) and, for a model trained with mirroring, the x-mirror; with
--medicalnet or --inception also by the cosine similarity of detector features. The holdout (real cases the model
never saw, packed like the training data) calibrates the threshold: each holdout case's nearest-training similarity
is the null, and a volume is flagged as a likely copy when its similarity exceeds the null's (1 - alpha) quantile
(p-value <= alpha). Novel volumes are flagged at a rate of about alpha, so a copy rate whose interval lies above
alpha says the model copies. With a training snapshot (which holds D), the discriminator's scores of training and
holdout cases also give a membership-inference AUC beside a control (two halves of the training set).

Writes to --outdir: audit.csv (one row per volume), report.json, nearest_pairs.png and similarity.png. The audit
shows copies and near copies; it is no formal privacy guarantee (docs/audit.md).

Examples:

\b
  # 1000 volumes generated on the fly, calibrated on 100 held-out cases.
  python audit.py --network=network-snapshot-001000.pkl --count=1000 --data=train.zip --holdout=heldout.zip \\
      --outdir=audit-out

\b
  # Volumes generate.py wrote, with MedicalNet features as a second space.
  python audit.py --generated=synth --data=train.zip --holdout=heldout.zip \\
      --medicalnet=~/weights/resnet_10_23dataset.pth --outdir=audit-out

\b
  # No holdout: a fixed threshold (no calibration, no p-values).
  python audit.py --generated=synth --data=train.zip --threshold=0.95 --outdir=audit-out
"""

from __future__ import annotations

import os

import click

import dnnlib
from dnnlib.cli import FiniteFloatRange

torch = dnnlib.util.lazy_import('torch')  # Imported at first use, so that --help answers at once.
legacy = dnnlib.util.lazy_import('legacy')
calibration = dnnlib.util.lazy_import('metrics.memorization.calibration')
core = dnnlib.util.lazy_import('metrics.memorization.core')
features = dnnlib.util.lazy_import('metrics.memorization.features')
inputs = dnnlib.util.lazy_import('metrics.memorization.inputs')
plots = dnnlib.util.lazy_import('metrics.memorization.plots')
report_lib = dnnlib.util.lazy_import('metrics.memorization.report')
search = dnnlib.util.lazy_import('metrics.memorization.search')

OUTPUTS = ('audit.csv', 'report.json', 'nearest_pairs.png', 'similarity.png')

#----------------------------------------------------------------------------
# Checks and inputs.


def check_outdir(outdir: str, overwrite: bool) -> None:
    """Refuse a used or impossible --outdir before any work (prepare_outdir, which also makes it, runs at the end)."""
    path = os.path.expanduser(outdir)
    if os.path.exists(path) and (not os.path.isdir(path) or (os.listdir(path) and not overwrite)):
        dnnlib.cli.prepare_outdir(outdir, overwrite, OUTPUTS)


def resolve_mirror(mirror: str, network: dict | None) -> bool:
    """--mirror: on, off, or auto: as the network was trained (training_set_kwargs.xflip); on without one."""
    if mirror != 'auto':
        return mirror == 'on'
    kwargs = (network or {}).get('training_set_kwargs')
    return bool(kwargs.get('xflip', False)) if isinstance(kwargs, dict) else True


def feature_spaces(medicalnet: str | None, depth: int, inception: str | None, max_value: int, device) -> list:
    spaces = []
    for option, make in (('--medicalnet', lambda: features.medicalnet_space(medicalnet, depth, max_value, device)),
                         ('--inception', lambda: features.inception_space(inception, max_value, device))):
        if (medicalnet if option == '--medicalnet' else inception) is None:
            continue
        try:
            spaces.append(make())
        except (OSError, ValueError) as e:
            raise click.BadParameter(' '.join(str(e).split()), param_hint=option) from None
    return spaces


def membership_note(network: dict | None, holdout) -> str | None:
    if network is None:
        return None
    if network.get('D') is None:
        return 'Membership inference needs D: the network file holds none (a safe export); audit a training snapshot.'
    if holdout is None:
        return 'Membership inference needs --holdout (the non-members).'
    return None

def read_inputs(data: str, holdout: str | None, network_pkl: str | None, generated: str | None,
                trust_pickle: bool = False) -> tuple:
    """(training set, holdout or None, network or None, generated cases or None), all checked against each other."""
    try:
        train = inputs.read_packed(data, '--data')
        held = inputs.read_packed(holdout, '--holdout') if holdout is not None else None
        if held is not None:
            inputs.check_holdout(train, held)
        network = legacy.load_network_or_exit(network_pkl, trust_pickle=trust_pickle) if network_pkl is not None \
            else None
        if network is not None:
            inputs.check_network(network['G_ema'], train)
            if network.get('D') is not None and held is not None:
                c_dim = int(getattr(network['D'], 'c_dim', 0))
                for group in (train, held):
                    group.check_discriminator_inputs(network['G_ema'].volume_info, c_dim)
        files = inputs.generated_files(generated) if generated is not None else None
    except inputs.InputError as e:
        raise click.BadParameter(e.message, param_hint=e.option) from None
    return train, held, network, files


def describe_inputs(data: str, train, holdout: str | None, held, generated: str | None, network_pkl: str | None,
                    seeds: list[int] | None, options, network: dict | None) -> dict:
    """report.json's "inputs": what was read (the training set's content identity), the seeds and the search."""
    return dict(training=data, training_cases=len(train.names),
                training_identity=dnnlib.util.content_identity(train.path)['sha256'], holdout=holdout,
                holdout_cases=len(held.names) if held is not None else None, generated=generated, network=network_pkl,
                seeds=f'{seeds[0]}..{seeds[-1]} ({len(seeds)})' if seeds else None, shift=options.shift,
                mirror=options.mirror, prefilter=options.prefilter, membership_note=membership_note(network, held))

#----------------------------------------------------------------------------
# Outputs.


def pair_records(result, train, count: int) -> list[dict]:
    """The `count` closest pairs, most similar first, for nearest_pairs.png."""
    voxel = result.voxel
    position = {name: i for i, name in enumerate(result.names)}
    order = sorted(result.kept, key=lambda name: -voxel.generated.similarity[position[name]])[:count]
    pairs = []
    for name in order:
        i = position[name]
        j = int(voxel.generated.index[i])
        pairs.append(dict(generated=name, generated_volume=result.kept[name], nearest=train.names[j],
                          nearest_volume=train.volumes[j], similarity=float(voxel.generated.similarity[i]),
                          p_value=float(voxel.p_values[i]) if voxel.p_values is not None else None,
                          flagged=bool(voxel.flagged[i]) if voxel.flagged is not None else None,
                          mirrored=bool(voxel.generated.mirrored[i]), shift=voxel.generated.shift[i].tolist()))
    return pairs


def render_outputs(result, report: dict, train, pairs: int) -> dict[str, bytes]:
    return {'audit.csv': report_lib.audit_csv(result, train.names), 'report.json': dnnlib.util.json_bytes(report),
            'nearest_pairs.png': plots.png_bytes(plots.nearest_pairs(pair_records(result, train, pairs), train.info,
                                                                     result.voxel.description)),
            'similarity.png': plots.png_bytes(plots.similarity_histograms(result.spaces))}


def write_outputs(outdir: str, overwrite: bool, outputs: dict[str, bytes]) -> None:
    path = dnnlib.cli.prepare_outdir(outdir, overwrite, OUTPUTS)
    for name, data in outputs.items():
        target = os.path.join(path, name)
        try:
            dnnlib.util.atomic_write_bytes(target, data)
        except OSError as e:
            raise click.ClickException(dnnlib.util.write_error_message(target, e)) from None

#----------------------------------------------------------------------------
# CLI.


@click.command(cls=dnnlib.cli.Command, help=__doc__)
# What to audit.
@dnnlib.cli.network_option(required=False)
@dnnlib.cli.generation_options('Seeds to generate, e.g. 0-99,200')
@click.option('--generated', metavar='DIR', type=dnnlib.cli.PATH,
              help='Audit the volumes generate.py wrote here instead (NAME_seg label maps ignored)')
# Real data.
@click.option('--data', metavar='PATH', type=dnnlib.cli.PATH, required=True,
              help='The training set (TRAIN.zip), as packed for train.py')
@click.option('--holdout', metavar='PATH', type=dnnlib.cli.PATH, help='Real cases the model never saw, packed with the same options: '
              'calibrates the threshold')
# The test.
@click.option('--alpha', help='Flag a volume when its similarity beats all but this fraction of the holdout\'s',
              type=FiniteFloatRange(min=0, max=1, min_open=True, max_open=True), default=0.05, show_default=True)
@click.option('--threshold', help='A fixed voxel-correlation threshold (required without --holdout)',
              type=FiniteFloatRange(min=-1, max=1))
@click.option('--shift', help='Largest shift in voxels per axis over which the correlation is maximised',
              type=click.IntRange(min=0, max=8), default=1, show_default=True)
@click.option('--mirror', help='Also match the x-mirror; auto: if the network was trained with --mirror (on '
              'without a network)', type=click.Choice(['auto', 'on', 'off']), default='auto', show_default=True)
@click.option('--medicalnet', metavar='PATH', type=dnnlib.cli.PATH, help='MedicalNet weights: adds a 3D feature space')
@click.option('--medicalnet-depth', help='ResNet depth of the MedicalNet weights', type=click.Choice(['10', '18',
              '34', '50']), default='10', show_default=True)
@click.option('--inception', metavar='PATH', type=dnnlib.cli.PATH, help='Inception detector (TorchScript): adds a slice feature space')
# Speed and output.
@click.option('--prefilter', metavar='K', type=click.IntRange(min=0), default=0, show_default=True,
              help='0: exact search over every training case; K: exact correlation for the K candidates that '
                   'volumes pooled to 32 voxels per axis rank first (large sets)')
@click.option('--batch', help='Volumes per search (and per forward pass)', type=click.IntRange(min=1), default=8,
              show_default=True)
@click.option('--pairs', help='Closest pairs shown in nearest_pairs.png', type=click.IntRange(min=1, max=64),
              default=8, show_default=True)
@click.option('--seed', help='Seed of the bootstrap and the control split', type=click.IntRange(min=0), default=0,
              show_default=True)
@dnnlib.cli.outdir_option('Where to write audit.csv, report.json and the pictures (a new or empty folder)')
@dnnlib.cli.overwrite_option()
@dnnlib.cli.progress_option()
def main(network_pkl: str | None, trust_pickle: bool, seeds: str | None, count: int | None, truncation_psi: float, class_idx: int | None,
         noise_mode: str, generated: str | None, data: str, holdout: str | None, alpha: float,
         threshold: float | None, shift: int, mirror: str, medicalnet: str | None, medicalnet_depth: str,
         inception: str | None, prefilter: int, batch: int, pairs: int, seed: int, outdir: str, overwrite: bool,
         progress: bool | None) -> None:
    # Everything is checked before the output folder is touched, so bad input leaves nothing behind.
    if generated is not None and (seeds is not None or count is not None or class_idx is not None):
        raise click.BadParameter('audits the files there; leave --seeds, --count and --class out',
                                 param_hint='--generated')
    if generated is None and network_pkl is None:
        raise click.BadParameter('give --network with --seeds or --count, or --generated', param_hint='--network')
    if generated is None and (seeds is None) == (count is None):
        raise click.BadParameter('give exactly one of --seeds and --count', param_hint='--seeds')
    if holdout is None and threshold is None:
        raise click.BadParameter('no calibrated threshold exists without a holdout (real cases the model never saw, '
                                 'packed like --data); give --holdout, or a fixed --threshold', param_hint='--holdout')
    check_outdir(outdir, overwrite)
    seed_list = dnnlib.cli.parse_seeds(seeds) if seeds is not None else list(range(count or 0))
    train, held, network, files = read_inputs(data, holdout, network_pkl, generated, trust_pickle)
    if held is not None and threshold is None and len(held.names) < calibration.min_holdout(alpha):
        raise click.BadParameter(f'{len(held.names)} cases cannot calibrate alpha={alpha:g}: it needs at least '
                                 f'{calibration.min_holdout(alpha)} (or a larger --alpha)', param_hint='--holdout')
    try:
        search.check_shift(shift, train.img_shape)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint='--shift') from None
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    spaces = feature_spaces(medicalnet, int(medicalnet_depth), inception, train.info.max_value, device)

    if files is not None:
        batches, total = inputs.file_batches(files, train.info, train.img_shape, batch), len(files)
    else:
        from training import generation
        G = network['G_ema'].to(device).eval()
        c = generation.class_labels(G, class_idx)
        batches = inputs.network_batches(G, seed_list, c, truncation_psi, noise_mode, batch, device)
        total = len(seed_list)
    options = core.AuditOptions(alpha=alpha, threshold=threshold, shift=shift, mirror=resolve_mirror(mirror, network),
                                prefilter=prefilter, batch=batch, pairs=pairs, seed=seed, device=device,
                                progress=progress)
    try:
        result = core.run_audit(train, held, batches, total, options, spaces, network)
    except inputs.InputError as e:  # A generated file found unfit while streaming.
        raise click.BadParameter(e.message, param_hint=e.option) from None
    except ValueError as e:
        raise click.ClickException(' '.join(str(e).split())) from None

    seeds_used = seed_list if files is None else None
    described = describe_inputs(data, train, holdout, held, generated, network_pkl, seeds_used, options, network)
    report = report_lib.build_report(result, train.names, alpha, described)
    write_outputs(outdir, overwrite, render_outputs(result, report, train, pairs))
    print(report_lib.summary(report, outdir, len(held.names) if held is not None else None))


if __name__ == '__main__':
    main()

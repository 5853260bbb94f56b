# SPDX-License-Identifier: Apache-2.0
"""Downstream utility: train a segmenter on real, synthetic or mixed data and test it on a fixed set of real cases.

The real dataset (packed with --seg) is split by case into a training part and a test part (--test-fraction,
seeded; or --test). Each regime trains a MONAI 3D U-Net (Dice + cross-entropy, the same geometric augmentation and
iterations for every regime) and scores it on the real test cases (Dice; HD95 in mm):

\b
  real       the real training part (or the --real-fraction shares of it)
  synthetic  the synthetic volumes only
  mixed      the real part plus --synthetic-ratio synthetic volumes per real one

Every regime runs once per seed (--seeds). Label consistency: the segmenters trained on real data also segment every
generated image, scored against its own generated label map, beside their Dice on the real test cases.

Writes to --outdir: results.csv (regime, real_fraction, seed, case, label, dice, hd95), label_consistency.csv,
summary.json (means, 95 % bootstrap intervals over the test cases, the protocol) and dice.png. See docs/downstream.md.

Examples:

\b
  # Real vs synthetic vs mixed, 3 seeds, with 200 volumes generated on the fly.
  python downstream.py --real=prostate.zip --synthetic=G.pt --synthetic-count=200 --outdir=downstream-out

\b
  # How many real cases is synthetic data worth: sweep the real share, a folder of generated volumes.
  python downstream.py --real=prostate.zip --synthetic=synth --real-fraction=0.25,0.5,1 --synthetic-ratio=2 \\
      --outdir=downstream-sweep

\b
  # The same runs through nnU-Net v2 (installed, on a GPU), with a test set of its own.
  python downstream.py --real=train.zip --test=test.zip --synthetic=synth --backend=nnunet --outdir=nnunet-out
"""

from __future__ import annotations

import os
import platform
import sys

import click

import dnnlib
from dnnlib.cli import FiniteFloatRange

OUTPUTS = ('results.csv', 'label_consistency.csv', 'summary.json', 'dice.png', 'nnunet')
REGIMES = ('real', 'synthetic', 'mixed')
GENERATION_BATCH = 4

#----------------------------------------------------------------------------
# Option parsing.


def parse_regimes(text: str | None, synthetic: str | None) -> list[str]:
    """'real,mixed' -> ['real', 'mixed']; default: all three with --synthetic, else real."""
    if text is None:
        return list(REGIMES) if synthetic else ['real']
    regimes = list(dict.fromkeys(r.strip() for r in text.split(',') if r.strip()))
    for regime in regimes:
        if regime not in REGIMES:
            raise click.BadParameter(f'"{regime}" is not a regime: expected some of {", ".join(REGIMES)}',
                                     param_hint='--regimes')
    if not regimes:
        raise click.BadParameter('name at least one regime', param_hint='--regimes')
    if synthetic is None and set(regimes) & {'synthetic', 'mixed'}:
        raise click.BadParameter('the synthetic and mixed regimes need --synthetic', param_hint='--regimes')
    return regimes


def parse_fractions(text: str) -> list[float]:
    """'0.25,0.5,1' -> [0.25, 0.5, 1.0], each in (0, 1]."""
    try:
        fractions = sorted({float(v) for v in text.split(',')})
    except ValueError:
        fractions = []
    if not fractions or not all(0 < f <= 1 for f in fractions):
        raise click.BadParameter(f'"{text}" is not a list of shares in (0, 1], e.g. 0.25,0.5,1',
                                 param_hint='--real-fraction')
    return fractions


def versions(backend: str) -> dict:
    """The versions of what the numbers depend on."""
    import importlib.metadata
    names = ['torch', 'monai', 'numpy', 'scipy', 'SimpleITK'] + (['nnunetv2'] if backend == 'nnunet' else [])
    found = {'python': platform.python_version()}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found

#----------------------------------------------------------------------------
# Inputs.


def load_real(real: str, test: str | None, test_fraction: float, seed: int):
    """(training part, test part, split record) of the real data."""
    from metrics.downstream import data
    dataset = data.load_packed(real, '--real')
    if test is None:
        train_idx, test_idx = data.split_by_case(dataset.cases, test_fraction, seed)
        train_set, test_set = dataset.subset(train_idx), dataset.subset(test_idx)
        method = (f'by case, seeded ({seed}): {test_fraction:g} of the case groups (same name or identical voxels) '
                  f'tested')
    else:
        train_set, test_set = dataset, data.load_packed(test, '--test')
        data.check_compatible(test_set, dataset, '--test')
        data.check_disjoint(train_set, test_set)
        method = 'the given --test dataset'
    split = dict(method=method, train=[c.name for c in train_set.cases], test=[c.name for c in test_set.cases])
    return train_set, test_set, split


def is_network(path: str) -> bool:
    return os.path.isfile(path) or dnnlib.util.is_url(path)


def resolve_device(choice: str):
    """The torch device of --device (auto: CUDA when available)."""
    import torch
    if choice == 'cuda' and not torch.cuda.is_available():
        raise click.BadParameter('no CUDA device is available', param_hint='--device')
    return torch.device('cuda' if choice == 'cuda' or (choice == 'auto' and torch.cuda.is_available()) else 'cpu')


def load_synthetic(source: str, reference, count: int | None, seeds: list[int] | None, needed: int, device: str,
                   progress: bool | None, trust_pickle: bool):
    """(synthetic set, record): the volumes of a folder, a packed dataset or a network, checked against the real
    set."""
    from metrics.downstream import data
    from volumes.packed import is_packed
    if is_packed(source) or not is_network(source):
        if count is not None or seeds is not None:
            raise click.BadParameter('--synthetic-count and --synthetic-seeds are for a network; --synthetic is a '
                                     'folder or a dataset', param_hint='--synthetic')
        if is_packed(source):
            synthetic = data.load_packed(source, '--synthetic')
            data.check_compatible(synthetic, reference, '--synthetic')
        else:
            synthetic = data.load_folder(source, reference, '--synthetic')
        return synthetic, dict(kind='dataset' if is_packed(source) else 'folder', path=source,
                               count=len(synthetic.cases), names=[c.name for c in synthetic.cases])
    import legacy
    try:
        G = legacy.load_network(source, trust_pickle=trust_pickle)['G_ema']
    except (OSError, ValueError) as e:
        raise ValueError(f'--synthetic {legacy.one_line(e)}') from None
    data.check_network(G, reference, source, '--synthetic')
    seeds = seeds if seeds is not None else list(range(count if count is not None else needed))
    return data.generate(G, seeds, reference, source, GENERATION_BATCH, resolve_device(device), progress), dict(
        kind='network', path=source, count=len(seeds), seeds=seeds, truncation_psi=1.0, noise_mode='const')

#----------------------------------------------------------------------------
# The experiment.


def make_backend(backend: str, options, outdir: str, train_set, device, nnunet_trainer: str, nnunet_config: str):
    if backend == 'nnunet':
        from metrics.downstream import nnunet
        return nnunet.NnunetBackend(os.path.join(outdir, 'nnunet'), train_set.info, nnunet_config, nnunet_trainer,
                                    device.type)
    from metrics.downstream import segmenter
    return segmenter.MonaiBackend(options, len(train_set.class_names) + 1, train_set.info.max_value, device)


def run_experiment(backend, runs, train_set, test_set, synthetic, progress: bool | None) -> list:
    import tqdm

    from metrics.downstream import experiment, segmenter
    num_classes = len(train_set.class_names) + 1
    spacing_dhw = tuple(reversed(train_set.info.spacing))
    score = lambda predicted, truth: segmenter.score(predicted, truth, num_classes, spacing_dhw)  # noqa: E731
    disable = None if progress is None else not progress  # tqdm's None: shown on a terminal only.
    with tqdm.tqdm(total=len(runs) * backend.steps(), desc='Training', unit='it', disable=disable, file=sys.stderr,
                   dynamic_ncols=True) as bar:
        def advance(name: str, steps: int) -> None:
            bar.set_description(name, refresh=False)
            bar.update(steps)
        return experiment.execute(backend, runs, train_set, test_set, synthetic, score, advance)


def write_outputs(outdir: str, scores: list, result: dict, class_names: list[str]) -> list[str]:
    from metrics.downstream import report
    rows = report.score_rows(scores, class_names)
    outputs = {'results.csv': report.csv_bytes([r for r in rows if r['source'] == 'test'], report.ROW_FIELDS),
               'summary.json': dnnlib.util.json_bytes(result), 'dice.png': report.dice_figure(result)}
    if result['label_consistency']:
        outputs['label_consistency.csv'] = report.csv_bytes([r for r in rows if r['source'] == 'generated'],
                                                            report.CONSISTENCY_FIELDS)
    for name, content in outputs.items():
        dnnlib.util.atomic_write_bytes(os.path.join(outdir, name), content)
    return list(outputs)

#----------------------------------------------------------------------------
# CLI.


@click.command(cls=dnnlib.cli.Command, help=__doc__)
# Data.
@click.option('--real', help='Labelled real dataset (dataset_tool.py --seg)', metavar='PATH', type=dnnlib.cli.PATH,
              required=True)
@click.option('--test', help='Real test dataset', metavar='PATH', type=dnnlib.cli.PATH,
              show_default='a --test-fraction of --real, split by case')
@click.option('--test-fraction', help='Share of the real cases held out for testing',
              type=FiniteFloatRange(min=0, max=1, min_open=True, max_open=True), default=0.3, show_default=True)
@click.option('--synthetic', help='Network (snapshot or export), folder of NAME + NAME_seg volumes, or labelled '
              'dataset', metavar='PATH', type=dnnlib.cli.PATH)
@click.option('--synthetic-count', help='Volumes a network generates (seeds 0..N-1)',
              type=click.IntRange(min=1, max=dnnlib.cli.MAX_SEEDS), metavar='N', show_default='as the regimes need')
@click.option('--synthetic-seeds', help='Seeds a network generates, e.g. 0-199', metavar='LIST')
@dnnlib.cli.trust_pickle_option()
@click.option('--synthetic-ratio', help='mixed: synthetic volumes per real one',
              type=FiniteFloatRange(min=0, min_open=True), default=1.0, show_default=True)
# Experiment.
@click.option('--regimes', help='Some of real,synthetic,mixed', metavar='LIST',
              show_default='all with --synthetic, else real')
@click.option('--real-fraction', 'fractions', help='Shares of the real training part for real and mixed',
              metavar='LIST', default='1', show_default=True)
@click.option('--seeds', 'repeats', help='Repeats of every regime (seeds --seed, --seed+1, ...)',
              type=click.IntRange(min=1), default=3, show_default=True)
@click.option('--seed', help='Seed of the first repeat', type=click.IntRange(min=0, max=2**31), default=0,
              show_default=True)
@click.option('--split-seed', help='Seed of the split into training and test cases', type=click.IntRange(min=0),
              default=0, show_default=True)
# Segmenter.
@click.option('--backend', help='MONAI segmenter here, or nnU-Net v2\'s commands',
              type=click.Choice(['monai', 'nnunet']), default='monai', show_default=True)
@click.option('--model', help='MONAI network', type=click.Choice(['unet', 'segresnet']), default='unet',
              show_default=True)
@click.option('--width', help='Channels of the first level', type=click.IntRange(min=1), default=16,
              show_default=True)
@click.option('--iters', help='Training steps per run', type=click.IntRange(min=1), default=2000, show_default=True)
@click.option('--batch', help='Volumes per step', type=click.IntRange(min=1), default=2, show_default=True)
@click.option('--lr', help='Adam learning rate (cosine decay)', type=FiniteFloatRange(min=0, min_open=True),
              default=1e-3, show_default=True)
@click.option('--augment', help='Geometric augmentation of every regime', type=click.Choice(['affine', 'none']),
              default='affine', show_default=True)
@click.option('--nnunet-trainer', help='--backend nnunet: trainer class, e.g. nnUNetTrainer_250epochs',
              default='nnUNetTrainer', show_default=True)
@click.option('--nnunet-config', help='--backend nnunet: configuration', default='3d_fullres', show_default=True)
@click.option('--device', help='Where to train', type=click.Choice(['auto', 'cpu', 'cuda']), default='auto',
              show_default=True)
# Output.
@dnnlib.cli.outdir_option('Where to write results.csv, summary.json and dice.png (a new or empty folder)')
@dnnlib.cli.overwrite_option()
@dnnlib.cli.progress_option()
def main(**kwargs) -> None:
    opts = dnnlib.EasyDict(kwargs)
    opts.regimes = parse_regimes(opts.regimes, opts.synthetic)
    opts.fractions = parse_fractions(opts.fractions)
    opts.synthetic_seeds = (dnnlib.cli.parse_seeds(opts.synthetic_seeds, '--synthetic-seeds')
                            if opts.synthetic_seeds else None)
    if opts.synthetic_count is not None and opts.synthetic_seeds is not None:
        raise click.BadParameter('give --synthetic-count or --synthetic-seeds, not both',
                                 param_hint='--synthetic-seeds')
    if opts.backend == 'nnunet':
        from metrics.downstream import nnunet
        try:
            nnunet.check_installed()
        except ValueError as e:
            raise click.ClickException(str(e)) from None
    try:
        run(opts)
    except ValueError as e:
        raise click.ClickException(' '.join(str(e).split())) from None
    except OSError as e:
        raise click.ClickException(dnnlib.util.describe_os_error(e)) from None


def run(opts: dnnlib.EasyDict) -> None:
    """Everything after option parsing; the inputs are checked before the output folder is touched. Raises
    ValueError or OSError with a one-line message."""
    from metrics.downstream import experiment, report

    # Inputs, all checked before anything is written (and before PyTorch is imported, unless a network needs it).
    train_set, test_set, split = load_real(opts.real, opts.test, opts.test_fraction, opts.split_seed)
    seeds = [opts.seed + k for k in range(opts.repeats)]
    synthetic_set, synthetic_record = None, None
    if opts.synthetic:
        needed = experiment.synthetic_needed(opts.regimes, opts.fractions, len(train_set.cases), opts.synthetic_ratio)
        synthetic_set, synthetic_record = load_synthetic(opts.synthetic, train_set, opts.synthetic_count,
                                                         opts.synthetic_seeds, needed, opts.device, opts.progress,
                                                         opts.trust_pickle)
    runs = experiment.plan(opts.regimes, opts.fractions, seeds, len(train_set.cases),
                           len(synthetic_set.cases) if synthetic_set else 0, opts.synthetic_ratio)
    if opts.backend == 'nnunet':
        from metrics.downstream import nnunet
        nnunet.dataset_labels(train_set.info)  # Label names nnU-Net cannot take: refused before any file is written.
    from metrics.downstream import segmenter
    options = segmenter.TrainOptions(model=opts.model, width=opts.width, iters=opts.iters, batch=opts.batch,
                                     lr=opts.lr, augment=opts.augment)
    device = resolve_device(opts.device)
    if opts.backend == 'monai':  # A grid the network cannot take is refused before any file is written.
        segmenter.build_model(options, train_set.shape[0], len(train_set.class_names) + 1, train_set.shape[1:])

    # The runs.
    outdir = dnnlib.cli.prepare_outdir(opts.outdir, opts.overwrite, OUTPUTS)
    engine = make_backend(opts.backend, options, outdir, train_set, device, opts.nnunet_trainer, opts.nnunet_config)
    scores = run_experiment(engine, runs, train_set, test_set, synthetic_set, opts.progress)

    # The outputs.
    protocol = make_protocol(opts, device, seeds, runs, train_set, synthetic_set, synthetic_record, split)
    result = report.summary(scores, train_set.class_names, protocol)
    written = write_outputs(outdir, scores, result, train_set.class_names)
    print(report.table(result))
    if result['label_consistency'] is None and synthetic_set is not None:
        print('Label consistency needs the real regime: add real to --regimes.')
    print(f'Wrote {", ".join(written)} to {outdir}')


def make_protocol(opts: dnnlib.EasyDict, device, seeds: list[int], runs: list, train_set, synthetic_set,
                  synthetic_record: dict | None, split: dict) -> dict:
    """summary.json's protocol: every setting, the inputs' content identities, the split, each run's training cases,
    the metric conventions and the library versions."""
    def identity(path: str | None) -> dict | None:
        return dnnlib.util.content_identity(path) if path and os.path.exists(path) else None
    if opts.backend == 'monai':
        segmenter = dict(model=opts.model, width=opts.width, iters=opts.iters, batch=opts.batch, lr=opts.lr,
                         augment=opts.augment, loss='MONAI DiceCELoss (softmax, one-hot labels)',
                         optimizer='Adam, learning rate annealed to 0 along a cosine')
    else:
        segmenter = dict(trainer=opts.nnunet_trainer, configuration=opts.nnunet_config, fold='all')
    return dict(
        command=' '.join(['downstream.py', *sys.argv[1:]]), backend=opts.backend, device=str(device),
        segmenter=segmenter, regimes=opts.regimes, real_fractions=opts.fractions, seeds=seeds,
        synthetic_ratio=opts.synthetic_ratio, split_seed=opts.split_seed,
        real=dict(path=opts.real, identity=identity(opts.real)),
        test=dict(path=opts.test, identity=identity(opts.test)) if opts.test else dict(fraction=opts.test_fraction),
        synthetic=dict(synthetic_record, identity=identity(opts.synthetic)) if synthetic_record else None,
        split=split, labels=train_set.label_names, spacing_mm=list(train_set.info.spacing),
        grid=list(train_set.shape),
        runs=[dict(name=r.name, seed=r.seed, real=[train_set.cases[i].name for i in r.real],
                   synthetic=[synthetic_set.cases[i].name for i in r.synthetic]) for r in runs],
        metrics=dict(dice='MONAI DiceMetric over the foreground labels; a label absent from a case\'s label map is '
                          'not scored for that case',
                     hd95='MONAI HausdorffDistanceMetric(percentile=95), mm; null where the prediction or the label '
                          'map lacks the label (hd95_missing counts those where the label map has it)',
                     interval='95 % percentile bootstrap of the mean over test cases (scipy.stats.bootstrap, '
                              '10000 resamples), each case averaged over the seeds first'),
        versions=versions(opts.backend))


if __name__ == '__main__':
    main()

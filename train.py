# SPDX-License-Identifier: Apache-2.0
"""Train a 3D StyleGAN2-ADA on a packed volume dataset.

Examples:

\b
  # The CPU demo configuration on a phantom dataset.
  python train.py --outdir=runs --data=phantoms.zip --cfg=demo --kimg=2

\b
  # Prostate T2W 256x256x24 on one node with 4 GPUs (spawned), ADA with the bgc pipe.
  python train.py --outdir=runs --data=prostate.zip --cfg=prostate-high --gpus=4

\b
  # The same with torchrun, also across nodes (SLURM: one torchrun per node).
  torchrun --nnodes=2 --nproc_per_node=4 --rdzv_backend=c10d --rdzv_endpoint=$HOST:29500 \\
      train.py --outdir=runs --data=prostate.zip --cfg=prostate-high

\b
  # Continue the newest run in --outdir exactly where it stopped.
  python train.py --outdir=runs --data=prostate.zip --cfg=prostate-high --resume=latest
"""

from __future__ import annotations

import copy
import json
import os
import signal
import sys

import click

import dnnlib
from dnnlib.cli import FiniteFloatRange
from training import presets, runs, volume_shape
from volumes import contract

# Imported at first use, so that --help answers at once.
torch = dnnlib.util.lazy_import('torch')
custom_ops = dnnlib.util.lazy_import('torch_utils.custom_ops')
distributed = dnnlib.util.lazy_import('torch_utils.distributed')
training_loop = dnnlib.util.lazy_import('training.training_loop')


#----------------------------------------------------------------------------
# Presets.


def load_preset(name: str) -> dict:
    """training.presets.load_preset with its errors as --cfg errors."""
    try:
        return presets.load_preset(name)
    except presets.PresetError as e:
        raise click.BadParameter(str(e), param_hint='--cfg') from None


#----------------------------------------------------------------------------
# Options -> training_loop kwargs.


def open_dataset(data: str, use_labels: bool, seg: bool | None) -> tuple[dict, object]:
    """The training set's kwargs and the dataset; seg None: learn the label maps when the dataset has them."""
    kwargs = dnnlib.EasyDict(class_name='training.dataset.VolumeFolderDataset', path=data, use_labels=use_labels,
                             max_size=None, xflip=False, load_seg=None if seg is None else seg)
    try:
        dataset = dnnlib.util.construct_class_by_name(**kwargs)
    except (OSError, ValueError, KeyError) as e:
        if seg and 'holds no label maps' in str(e):
            raise click.BadParameter(f'{data} holds no label maps; pack it with dataset_tool.py --seg',
                                     param_hint='--seg') from None
        raise click.BadParameter(str(e) if data in str(e) else f'{data}: {e}', param_hint='--data') from None
    kwargs.load_seg = dataset.load_seg  # Resolved, as training_options.json records it.
    kwargs.img_shape = list(dataset.img_shape)
    kwargs.max_size = len(dataset)
    return kwargs, dataset


def setup_training_loop_kwargs(opts: dnnlib.EasyDict, gpus: int) -> tuple[str, dnnlib.EasyDict]:
    """Turn CLI options and the preset into (description, training_loop kwargs)."""
    preset = load_preset(opts.cfg)
    cond = opts.cond if opts.cond is not None else bool(preset.get('conditional', False))
    data_kwargs, dataset = open_dataset(opts.data, use_labels=cond, seg=opts.seg)
    if cond and not dataset.has_labels:
        raise click.BadParameter(f'--cond needs labels in {opts.data}/dataset.json; the dataset has none',
                                 param_hint='--cond')
    if 'size' in preset and contract.parse_size(preset['size']) != tuple(dataset.img_shape):
        raise click.BadParameter(f'preset "{opts.cfg}" is for {preset["size"]} volumes but {opts.data} holds '
                                 f'{contract.format_size(dataset.img_shape)}', param_hint='--cfg')
    desc = dataset.name + ('-cond' if cond else '') + ('-seg' if data_kwargs.get('load_seg') else '')
    if opts.subset is not None:
        if not 1 <= opts.subset <= len(dataset):
            raise click.BadParameter(f'must be between 1 and the dataset size {len(dataset)}', param_hint='--subset')
        data_kwargs.max_size = opts.subset
        data_kwargs.random_seed = opts.seed
        desc += f'-subset{opts.subset}'
    if opts.mirror:
        data_kwargs.xflip = True
        desc += '-mirror'

    res = max(dataset.img_shape[1], dataset.img_shape[2])
    spec = dnnlib.EasyDict(presets.resolve(preset, gpus, res))
    desc += f'-{os.path.splitext(os.path.basename(opts.cfg))[0]}' + (str(gpus) if preset.get('auto') else '')
    if opts.gamma is not None:
        spec.r1_gamma = opts.gamma
        desc += f'-gamma{opts.gamma:g}'
    if opts.kimg is not None:
        spec.kimg = opts.kimg
        desc += f'-kimg{opts.kimg:g}'
    if opts.batch is not None:
        spec.batch = opts.batch
        desc += f'-batch{opts.batch}'
    if spec.batch % gpus != 0:
        raise click.BadParameter(f'the batch {spec.batch} must be divisible by the number of GPUs {gpus}',
                                 param_hint='--batch')
    batch_gpu = opts.batch_gpu or spec.batch // spec.reference_gpus
    batch_gpu = max(min(batch_gpu, spec.batch // gpus), 1)
    if (spec.batch // gpus) % batch_gpu != 0:
        raise click.BadParameter(f'the per-GPU batch {spec.batch // gpus} must be divisible by {batch_gpu}',
                                 param_hint='--batch-gpu')
    mbstd = min(spec.mbstd_group, batch_gpu)

    c = dnnlib.EasyDict(training_set_kwargs=data_kwargs, random_seed=opts.seed, num_gpus=gpus)
    c.data_loader_kwargs = dnnlib.EasyDict(pin_memory=torch.cuda.is_available(), num_workers=opts.workers,
                                           prefetch_factor=2 if opts.workers > 0 else None,
                                           persistent_workers=opts.workers > 0)
    c.G_kwargs, c.D_kwargs = network_kwargs(opts, spec, mbstd)
    block_schedule(dataset.img_shape, c.G_kwargs.synthesis_kwargs)  # Fails now for a shape that does not factor.
    c.G_opt_kwargs = dnnlib.EasyDict(class_name='torch.optim.Adam', lr=spec.learning_rate, betas=[0, 0.99], eps=1e-8)
    c.D_opt_kwargs = copy.deepcopy(c.G_opt_kwargs)
    c.loss_kwargs = dnnlib.EasyDict(class_name='training.loss.StyleGAN2Loss', r1_gamma=spec.r1_gamma)
    c.total_kimg = spec.kimg
    c.batch_size = spec.batch
    c.batch_gpu = batch_gpu
    c.ema_kimg = spec.ema_kimg
    c.ema_rampup = spec.ema_rampup or None
    c.kimg_per_tick = opts.kimg_per_tick
    c.image_snapshot_ticks = c.network_snapshot_ticks = opts.snap
    c.metrics = parse_metrics(opts.metrics if opts.metrics is not None else ','.join(spec.metrics))
    c.metric_kwargs = dnnlib.EasyDict({f'{k}_url': v for k, v in [('inception', opts.inception),
                                                                  ('vgg16', opts.vgg16),
                                                                  ('medicalnet', opts.medicalnet),
                                                                  ('radimagenet', opts.radimagenet)] if v})
    c.grid_planes = ['axial', 'coronal', 'sagittal'] if opts.grid_planes == 'tri' else ['axial']
    c.max_nonfinite = opts.max_nonfinite
    desc += augment_options(opts, c)
    desc += resume_options(opts, c)
    if opts.freezed:
        c.D_kwargs.block_kwargs.freeze_layers = opts.freezed
        desc += f'-freezed{opts.freezed}'
    c.cudnn_benchmark = not opts.nobench
    c.allow_tf32 = opts.allow_tf32
    return desc, c


def network_kwargs(opts, spec, mbstd: int) -> tuple[dnnlib.EasyDict, dnnlib.EasyDict]:
    channel_base, channel_max = spec.channel_base, spec.channel_max
    fp32 = opts.fp32 or opts.precision == 'fp32'
    num_fp16_res = 0 if fp32 else 4
    conv_clamp = None if fp32 else 256
    base = None
    if opts.base:
        try:
            base = list(contract.parse_size(opts.base))
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint='--base') from None
    shared = dict(channel_base=channel_base, channel_max=channel_max, num_fp16_res=num_fp16_res,
                  conv_clamp=conv_clamp, precision='fp16' if fp32 else opts.precision, base=base,
                  depth_schedule=opts.depth_schedule, channels_last=opts.nhwc)
    G_kwargs = dnnlib.EasyDict(class_name='training.networks.Generator', z_dim=spec.z_dim, w_dim=spec.w_dim,
                               mapping_kwargs=dnnlib.EasyDict(num_layers=spec.mapping_layers),
                               synthesis_kwargs=dnnlib.EasyDict(shared, architecture=spec.generator_architecture))
    D_kwargs = dnnlib.EasyDict(class_name='training.networks.Discriminator', **shared,
                               architecture=spec.discriminator_architecture,
                               block_kwargs=dnnlib.EasyDict(), mapping_kwargs=dnnlib.EasyDict(),
                               epilogue_kwargs=dnnlib.EasyDict(mbstd_group_size=mbstd))
    return G_kwargs, D_kwargs


def block_schedule(img_shape, synthesis_kwargs: dict) -> volume_shape.VolumeSchedule:
    """The schedule the generator will build; a shape that does not factor is an error naming the rule."""
    try:
        return volume_shape.make_schedule(img_shape, base=synthesis_kwargs.get('base'),
                                          depth_schedule=synthesis_kwargs.get('depth_schedule', 'early'),
                                          channel_base=synthesis_kwargs['channel_base'],
                                          channel_max=synthesis_kwargs['channel_max'])
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint='--base' if synthesis_kwargs.get('base') else '--data') from None


def parse_metrics(text: str) -> list[str]:
    names = [m.strip() for m in text.split(',') if m.strip() and m.strip().lower() != 'none']
    if names:
        from metrics import metric_main
        for name in names:
            if not metric_main.is_valid_metric(name):
                raise click.BadParameter(f'unknown metric "{name}"; expected a comma-separated list of '
                                         f'{", ".join(metric_main.list_valid_metrics())}', param_hint='--metrics')
    return names


def augment_options(opts, c) -> str:
    desc = f'-{opts.aug}' if opts.aug_given else ''
    if opts.aug == 'ada':
        c.ada_target = opts.target if opts.target is not None else 0.6
        if opts.target is not None:
            desc += f'-target{opts.target:g}'
    elif opts.target is not None:
        raise click.BadParameter('--target can only be given with --aug=ada', param_hint='--target')
    if opts.aug == 'fixed':
        if opts.p is None:
            raise click.BadParameter('--aug=fixed needs --p', param_hint='--p')
        c.augment_p = opts.p
        desc += f'-p{opts.p:g}'
    elif opts.p is not None:
        raise click.BadParameter('--p can only be given with --aug=fixed', param_hint='--p')
    if opts.aug == 'noaug':
        if opts.augpipe is not None:
            raise click.BadParameter('--augpipe cannot be given with --aug=noaug', param_hint='--augpipe')
        return desc
    augpipe = opts.augpipe or 'bgc'
    c.augment_kwargs = dnnlib.EasyDict(class_name='training.augment.AugmentPipe', **presets.AUGPIPE_SPECS[augpipe])
    return desc + (f'-{augpipe}' if opts.augpipe is not None else '')


def resume_options(opts, c) -> str:
    if opts.resume is None or opts.resume == 'noresume':
        return '-noresume' if opts.resume == 'noresume' else ''
    if opts.resume != 'latest':
        if '://' not in opts.resume and not os.path.isfile(opts.resume):
            raise click.BadParameter(f'no such file: {opts.resume}', param_hint='--resume')
        c.resume_pkl = opts.resume
        state = runs.state_of_snapshot(opts.resume)
        if state is not None:
            c.resume_state = state  # A snapshot of ours: resume exactly.
        else:
            c.ada_kimg = 100  # Fine-tuning from other weights: let ADA react faster, as the official.
            c.ema_rampup = None
        return '-resumecustom'
    return ''


#----------------------------------------------------------------------------
# Launch.


def run_process(rank: int, c: dict, run_dir: str, env: dict | None = None) -> None:
    """Body of every training process: join the group, log to log.txt, run the loop."""
    if env is not None:
        os.environ.update(env)
    distributed.init()
    rank = distributed.get_rank()
    logger = dnnlib.util.Logger(file_name=os.path.join(run_dir, 'log.txt'), file_mode='a') if rank == 0 else None
    if rank != 0:
        custom_ops.verbosity = 'none'
    if torch.cuda.is_available():
        torch.cuda.set_device(distributed.get_local_rank())
    try:
        from metrics import metric_main
        training_loop.training_loop(rank=rank, metric_fn=metric_main.evaluate_snapshot, **c)
    except training_loop.TrainingDiverged as err:
        if rank == 0:
            print(err)
        raise SystemExit(3) from None
    except (runs.TrainingError, dnnlib.util.WriteError) as err:  # Damaged data, a full disk, ...
        print(f'Error: {err}', file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    finally:
        distributed.shutdown()
        if logger is not None:
            logger.close()


def spawn_local(c: dict, run_dir: str, gpus: int) -> None:
    """One process per GPU; SIGTERM to this parent reaches every child, which snapshot and exit."""
    port = distributed.free_port()
    context = torch.multiprocessing.start_processes(_spawned, args=(c, run_dir, gpus, port), nprocs=gpus, join=False,
                                                    start_method='spawn')

    def forward(signum, frame):  # pylint: disable=unused-argument
        for process in context.processes:
            if process.is_alive():
                os.kill(process.pid, signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        while not context.join():
            pass
    except torch.multiprocessing.ProcessExitedException as err:
        if err.exit_code in (1, 3):
            raise SystemExit(err.exit_code) from None  # An error or divergence; the process has printed why.
        raise click.ClickException(f'training process {err.error_index} exited with code {err.exit_code}; '
                                   f'see {os.path.join(run_dir, "log.txt")}') from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _spawned(rank: int, c: dict, run_dir: str, gpus: int, port: int) -> None:
    run_process(rank, c, run_dir, env=distributed.local_env(rank, gpus, port))

#----------------------------------------------------------------------------
# CLI.


@click.command(cls=dnnlib.cli.Command, help=__doc__)
# Required.
@click.option('--outdir', help='Where to make the run directory (runs are numbered folders in it)', metavar='DIR',
              type=dnnlib.cli.PATH, required=True)
@click.option('--data', help='Training data (a zip or folder made by dataset_tool.py)', metavar='PATH',
              type=dnnlib.cli.PATH, required=True)
# General.
@click.option('--cfg', help='Preset name (configs/*.toml) or a .toml file', default='auto', show_default=True)
@click.option('--gpus', help='Processes to spawn on this node (ignored under torchrun)', type=click.IntRange(min=1),
              default=1, show_default=True)
@click.option('--snap', help='Snapshot interval in ticks', type=click.IntRange(min=1), default=50, show_default=True)
@click.option('--metrics', help='Comma-separated metrics, or "none"', metavar='LIST',
              show_default='the preset\'s, else none')
@click.option('--seed', help='Random seed', type=click.IntRange(min=0), default=0, show_default=True)
@click.option('-n', '--dry-run', help='Print the resolved options and exit', is_flag=True)
# Dataset.
@click.option('--cond/--no-cond', help='Train a conditional model on the dataset labels', default=None,
              show_default='the preset\'s')
@click.option('--subset', help='Train on a random subset of N volumes', type=click.IntRange(min=1), metavar='N')
@click.option('--mirror/--no-mirror', help='Add x-flips to the dataset', default=False, show_default=True)
@click.option('--seg/--no-seg', help='Generate the label maps with the images', default=None,
              show_default='when the dataset has them')
# Hyperparameters.
@click.option('--gamma', help='Override the R1 gamma', type=FiniteFloatRange(min=0))
@click.option('--kimg', help='Override the training length (thousands of volumes)', type=FiniteFloatRange(min=0,
              min_open=True))
@click.option('--batch', help='Override the total batch size', type=click.IntRange(min=1))
@click.option('--batch-gpu', help='Volumes per GPU per accumulation round', type=click.IntRange(min=1))
@click.option('--precision', help='Arithmetic of the top 4 blocks', type=click.Choice(['fp16', 'bf16', 'fp32']),
              default='fp16', show_default=True)
@click.option('--base', help='Override the learned constant\'s size, XxYxZ (e.g. 4x4x3)', metavar='XxYxZ')
@click.option('--depth-schedule', help='Where short axes double', type=click.Choice(['early', 'late']),
              default='early', show_default=True)
@click.option('--kimg-per-tick', help='Progress interval in kimg', type=FiniteFloatRange(min=0, min_open=True),
              default=4, show_default=True)
# Augmentation.
@click.option('--aug', help='Augmentation mode', type=click.Choice(['noaug', 'ada', 'fixed']), show_default='ada')
@click.option('--p', help='Augment probability for --aug=fixed', type=FiniteFloatRange(min=0, max=1))
@click.option('--target', help='ADA target value for --aug=ada', type=FiniteFloatRange(min=0, max=1))
@click.option('--augpipe', help='Augmentation pipeline', type=click.Choice(list(presets.AUGPIPE_SPECS)),
              show_default='bgc')
# Transfer learning and resume.
@click.option('--resume', help='A snapshot to start from, or "latest" to continue the newest run', metavar='PATH',
              type=dnnlib.cli.PATH)
@dnnlib.cli.trust_pickle_option()
@click.option('--freezed', help='Freeze-D: freeze the first N discriminator layers', type=click.IntRange(min=0),
              default=0, show_default=True)
# Performance.
@click.option('--fp32/--no-fp32', help='Disable mixed precision', default=False, show_default=True)
@click.option('--nhwc/--no-nhwc', help='channels_last_3d memory format in the mixed-precision blocks', default=False,
              show_default=True)
@click.option('--allow-tf32/--no-allow-tf32', help='Allow TF32 for matmul and convolutions', default=False,
              show_default=True)
@click.option('--nobench/--bench', help='Disable cuDNN benchmarking', default=False, show_default=True)
@click.option('--max-nonfinite', help='Stop after this many minibatches in a row with non-finite gradients',
              type=click.IntRange(min=1), default=50, show_default=True)
@click.option('--workers', help='DataLoader worker processes', type=click.IntRange(min=0), default=3,
              show_default=True)
# Metrics and grids.
@click.option('--inception', help='Inception detector: URL or local path', metavar='URL|PATH', type=dnnlib.cli.PATH,
              show_default='the official URL')
@click.option('--vgg16', help='VGG16 detector: URL or local path', metavar='URL|PATH', type=dnnlib.cli.PATH,
              show_default='the official URL')
@click.option('--medicalnet', help='MedicalNet weights for 3D FID: URL or local path', metavar='URL|PATH',
              type=dnnlib.cli.PATH)
@click.option('--radimagenet', help='RadImageNet ResNet-50 weights for fid25d_maisi: URL or local path',
              metavar='URL|PATH', type=dnnlib.cli.PATH)
@click.option('--grid-planes', help='Planes shown in fakes*.png', type=click.Choice(['axial', 'tri']),
              default='axial', show_default=True)
@click.pass_context
def main(ctx: click.Context, **kwargs) -> None:
    opts = dnnlib.EasyDict(kwargs)
    opts.aug_given = opts.aug is not None
    opts.aug = opts.aug or 'ada'
    if opts.pop('trust_pickle'):  # Read by every load of --resume's files, also in the processes started here.
        os.environ[dnnlib.cli.TRUST_PICKLE_ENV] = '1'
    under_torchrun = 'RANK' in os.environ and 'WORLD_SIZE' in os.environ
    gpus = int(os.environ['WORLD_SIZE']) if under_torchrun else opts.gpus

    desc, c = setup_training_loop_kwargs(opts, gpus)
    if under_torchrun:
        distributed.init()  # Every rank must agree on one run directory, chosen by rank 0.
    rank = distributed.get_rank()
    latest = None
    if opts.resume == 'latest':
        latest = distributed.broadcast_object(runs.find_latest_snapshot(opts.outdir) if rank == 0 else None)
        if latest is None and rank == 0:
            print(f'--resume=latest: no snapshot with a training state in {opts.outdir}; starting a new run')
    if latest is not None:
        run_dir, c.resume_pkl, c.resume_state = latest
    else:
        run_dir = distributed.broadcast_object(runs.next_run_dir(opts.outdir, desc) if rank == 0 else None)
    c.run_dir = run_dir
    # Everything that can fail is checked before any run directory is made or touched; all ranks stop alike.
    error = distributed.broadcast_object(check_before_start(c, integrity=not opts.dry_run) if rank == 0 else None)
    if error is not None:
        raise click.ClickException(error)
    if rank != 0:
        if not opts.dry_run:
            distributed.barrier()  # Wait until rank 0 made the run directory.
            run_process(rank, c, run_dir)
        return
    print_options(c, opts, run_dir, gpus)
    if opts.dry_run:
        print('Dry run; exiting.')
        return

    try:
        os.makedirs(run_dir, exist_ok=latest is not None)
        runs.write_options(c, run_dir, resumed=latest is not None)
    except OSError as e:
        raise click.ClickException(dnnlib.util.write_error_message(run_dir, e)) from None
    distributed.barrier()
    try:
        if under_torchrun or gpus == 1:
            run_process(0, c, run_dir)
        else:
            spawn_local(c, run_dir, gpus)
    except BaseException:
        if latest is None:
            runs.remove_if_nothing_saved(run_dir)
        raise


def check_before_start(c: dnnlib.EasyDict, integrity: bool) -> str | None:
    """Why training cannot start (one line), or None: a damaged dataset, resume files that are damaged or do not
    fit these options."""
    try:
        training_set = dnnlib.util.construct_class_by_name(**c.training_set_kwargs)
        if integrity:
            training_set.check_integrity()
        if c.get('resume_pkl') is not None:
            training_loop.check_resume(c.resume_pkl, c.get('resume_state'), training_set, c.G_kwargs, c.D_kwargs)
    except ValueError as e:
        return f'--data: {e}'
    except runs.ResumeError as e:
        return str(e)
    return None


def print_options(c: dnnlib.EasyDict, opts, run_dir: str, gpus: int) -> None:
    """The resolved options (training_options.json), a summary, and the generator's block schedule."""
    print('\nTraining options:')
    print(json.dumps(c, indent=2))
    print(f'\nOutput directory:   {run_dir}')
    print(f'Training data:      {opts.data}')
    print(f'Training duration:  {c.total_kimg} kimg')
    print(f'Number of GPUs:     {gpus}')
    print(f'Volume size:        {contract.format_size(c.training_set_kwargs.img_shape)} (x, y, z)')
    print(f'Conditional model:  {c.training_set_kwargs.use_labels}')
    training_set = dnnlib.util.construct_class_by_name(**c.training_set_kwargs)
    print(f'Generated channels: {generated_channels(training_set)}\n')
    print('Generator blocks (the discriminator mirrors them):')
    print(block_schedule(c.training_set_kwargs.img_shape, c.G_kwargs.synthesis_kwargs).describe() + '\n')


def generated_channels(training_set) -> str:
    """What the generator makes, in words: its image channels and, with label maps, one one-hot channel per label
    value, background first (volumes.contract.VolumeInfo.num_channels)."""
    def count(n: int, word: str) -> str:
        return f'{n} {word}{"s" * (n != 1)}'

    info = training_set.volume_info
    images = f'{count(len(info.channels), "image channel")} ({", ".join(info.channels)})'
    if not info.label_values:
        left_out = ' (the dataset\'s label maps are left out: --seg=0)' if training_set.has_label_maps else ''
        return images + left_out
    names = ['background', *(info.label_names[v] for v in info.label_values[1:])]
    return (f'{info.num_channels} = {images} + {count(len(names), "one-hot label channel")} ({", ".join(names)}); '
            f'generate.py writes the label map beside each volume')


if __name__ == '__main__':
    main()

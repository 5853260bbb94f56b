# SPDX-License-Identifier: Apache-2.0
"""The StyleGAN2-ADA training loop for volumes.

One call trains on one process (rank) of a possibly distributed run: phases Gmain, Greg, Dmain, Dreg with
gradient accumulation over batch_gpu chunks, G_ema with ramp-up, ADA updates of the augment probability, ticks
with a status line, stats.jsonl and TensorBoard, slice grids, network snapshots with the full training state
for an exact resume, and metrics at snapshots.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import json
import os
import random
import re
import resource
import signal
import threading
import time
from typing import Callable, Sequence

import numpy as np
import torch

import dnnlib
from torch_utils import misc, training_stats
from training import visualize
from training.runs import (ResumeError, TrainingError, check_state_file, load_training_state, save_snapshot,
                           snapshot_tag, trim_stats)
from volumes import contract

#----------------------------------------------------------------------------
# Set-up.


def setup_torch(random_seed: int, num_gpus: int, rank: int, cudnn_benchmark: bool, allow_tf32: bool) -> None:
    np.random.seed(random_seed * num_gpus + rank)
    torch.manual_seed(random_seed * num_gpus + rank)
    random.seed(random_seed * num_gpus + rank)
    torch.backends.cudnn.benchmark = cudnn_benchmark
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32


def make_data_iterator(training_set, rank: int, num_gpus: int, seed: int, batch_size: int, skip: int,
                       data_loader_kwargs: dict):
    sampler = misc.InfiniteSampler(training_set, rank=rank, num_replicas=num_gpus, seed=seed, skip=skip)
    # Its own generator: creating the iterator then draws no number from the global RNG, whose state a resume
    # restores before getting here.
    loader = torch.utils.data.DataLoader(training_set, sampler=sampler, batch_size=batch_size // num_gpus,
                                         generator=torch.Generator().manual_seed(seed * num_gpus + rank),
                                         **data_loader_kwargs)
    return iter(loader)


def build_networks(training_set, G_kwargs: dict, D_kwargs: dict, device: torch.device):
    # With label maps the networks see them as one-hot channels after the image's (volumes.contract.to_network).
    common = dict(c_dim=training_set.label_dim, img_shape=tuple(training_set.img_shape),
                  img_channels=training_set.volume_info.num_channels)
    G = dnnlib.util.construct_class_by_name(**G_kwargs, **common, volume_info=training_set.volume_info.to_dict())
    D = dnnlib.util.construct_class_by_name(**D_kwargs, **common)
    G = G.train().requires_grad_(False).to(device)
    D = D.train().requires_grad_(False).to(device)
    G_ema = copy.deepcopy(G).eval()
    return G, D, G_ema


def build_phases(G, D, G_opt_kwargs: dict, D_opt_kwargs: dict, G_reg_interval: int | None,
                 D_reg_interval: int | None) -> list[dnnlib.EasyDict]:
    """Optimisers and phases; with lazy regularisation, lr and betas follow the official mb_ratio rule."""
    phases = []
    for name, module, opt_kwargs, reg_interval in [('G', G, G_opt_kwargs, G_reg_interval),
                                                   ('D', D, D_opt_kwargs, D_reg_interval)]:
        opt_kwargs = dnnlib.EasyDict(opt_kwargs)
        if reg_interval is None:
            opt = dnnlib.util.construct_class_by_name(params=module.parameters(), **opt_kwargs)
            phases.append(dnnlib.EasyDict(name=name + 'both', module=module, opt=opt, interval=1))
            continue
        mb_ratio = reg_interval / (reg_interval + 1)
        opt_kwargs.lr = opt_kwargs.lr * mb_ratio
        opt_kwargs.betas = [beta ** mb_ratio for beta in opt_kwargs.betas]
        opt = dnnlib.util.construct_class_by_name(params=module.parameters(), **opt_kwargs)
        phases.append(dnnlib.EasyDict(name=name + 'main', module=module, opt=opt, interval=1))
        phases.append(dnnlib.EasyDict(name=name + 'reg', module=module, opt=opt, interval=reg_interval))
    return phases


def grid_size_for(img_shape: tuple[int, int, int]) -> tuple[int, int]:
    """Grid of middle slices. Smaller than the official 7680x4320 rule: each tile costs a whole volume."""
    _, H, W = img_shape
    return int(np.clip(2048 // W, 4, 16)), int(np.clip(1024 // H, 2, 8))


def setup_grid(training_set, random_seed: int) -> tuple[tuple[int, int], np.ndarray, np.ndarray]:
    """Pick grid volumes (grouped by label for conditional data) and return (grid_size, volumes, labels)."""
    gw, gh = grid_size_for(training_set.img_shape)
    rnd = np.random.RandomState(random_seed)
    order = list(range(len(training_set)))
    rnd.shuffle(order)
    if training_set.has_labels:
        by_label: dict[tuple, list[int]] = {}
        for idx in order:
            by_label.setdefault(tuple(training_set.get_details(idx).raw_label.flat[::-1]), []).append(idx)
        rows = sorted(by_label.values(), key=lambda v: -len(v))
        order = [rows[y % len(rows)][x % len(rows[y % len(rows)])] for y in range(gh) for x in range(gw)]
    indices = [order[i % len(order)] for i in range(gw * gh)]
    volumes, labels = zip(*[training_set[i] for i in indices])
    return (gw, gh), np.stack(volumes), np.stack(labels)


@torch.no_grad()
def generate_grid(G_ema, grid_z: list[torch.Tensor], grid_c: list[torch.Tensor]) -> np.ndarray:
    return torch.cat([G_ema(z=z, c=c, noise_mode='const').cpu() for z, c in zip(grid_z, grid_c)]).numpy()

#----------------------------------------------------------------------------
# One training iteration.


def fetch_batch(data_iterator, training_set, phases, batch_size: int, batch_gpu: int, z_dim: int,
                label_rng: np.random.RandomState, device: torch.device):
    """Reals split into batch_gpu chunks, and fresh latents and labels for every phase."""
    try:
        real_img, real_c = next(data_iterator)
    except (ValueError, OSError) as e:  # The dataset's one-line message; a worker's comes last in a traceback.
        lines = [line for line in str(e).splitlines() if line.strip()]
        raise TrainingDataError(re.sub(r'^(ValueError|OSError): ', '', lines[-1] if lines else repr(e))) from None
    real_img = contract.to_network(real_img.to(device), training_set.volume_info).split(batch_gpu)
    real_c = real_c.to(device).split(batch_gpu)
    num_gen = len(phases) * batch_size
    gen_z = torch.randn([num_gen, z_dim], device=device)
    gen_z = [z.split(batch_gpu) for z in gen_z.split(batch_size)]
    gen_c = [training_set.get_label(int(i)) for i in label_rng.randint(len(training_set), size=num_gen)]
    gen_c = torch.from_numpy(np.stack(gen_c)).pin_memory() if device.type == 'cuda' else \
        torch.from_numpy(np.stack(gen_c))
    gen_c = [c.split(batch_gpu) for c in gen_c.to(device).split(batch_size)]
    return real_img, real_c, gen_z, gen_c


def run_phases(phases, loss, ddp_modules, batch_idx: int, real_img, real_c, gen_z, gen_c,
               timing_events) -> torch.Tensor:
    """One minibatch through every due phase; returns a device flag: some gradient was not finite."""
    nonfinite = torch.zeros([], dtype=torch.bool, device=real_img[0].device)
    for phase, phase_gen_z, phase_gen_c in zip(phases, gen_z, gen_c):
        if batch_idx % phase.interval != 0:
            continue
        if timing_events is not None:
            timing_events[phase.name][0].record(torch.cuda.current_stream())
        phase.opt.zero_grad(set_to_none=True)
        phase.module.requires_grad_(True)
        num_rounds = len(real_img)
        for round_idx, chunk in enumerate(zip(real_img, real_c, phase_gen_z, phase_gen_c)):
            with contextlib.ExitStack() as stack:
                for module in ddp_modules:  # All-reduce gradients only on the last accumulation round.
                    stack.enter_context(misc.ddp_sync(module, sync=round_idx == num_rounds - 1))
                loss.accumulate_gradients(phase=phase.name, real_img=chunk[0], real_c=chunk[1], gen_z=chunk[2],
                                          gen_c=chunk[3], gain=phase.interval)
        phase.module.requires_grad_(False)
        with torch.autograd.profiler.record_function(phase.name + '_opt'):
            grads = [param.grad for param in phase.module.parameters() if param.grad is not None]
            if grads:
                # The norm is not finite exactly when some gradient entry is not; DDP has already summed them,
                # so every rank sees the same flag.
                nonfinite |= ~torch.isfinite(torch.nn.utils.get_total_norm(grads))
            for grad in grads:
                torch.nan_to_num(grad, nan=0, posinf=1e5, neginf=-1e5, out=grad)
            phase.opt.step()
        if timing_events is not None:
            timing_events[phase.name][1].record(torch.cuda.current_stream())
    return nonfinite


@torch.no_grad()
def update_ema(G, G_ema, cur_nimg: int, batch_size: int, ema_kimg: float, ema_rampup: float | None) -> None:
    ema_nimg = ema_kimg * 1000
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
    beta = 0.5 ** (batch_size / max(ema_nimg, 1e-8))
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.copy_(p.lerp(p_ema, beta))
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)

#----------------------------------------------------------------------------
# Stopping: preemption and divergence.


class TrainingDiverged(RuntimeError):  # Not a TrainingError: train.py exits with its own code, 3.
    """Too many minibatches in a row had non-finite gradients."""


class TrainingDataError(TrainingError):
    """A training volume cannot be read (a damaged archive)."""


class StopRequest:
    """Turns SIGTERM (a cluster's preemption notice) into a flag that the loop checks once per minibatch."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> 'StopRequest':
        if threading.current_thread() is threading.main_thread():  # Signals can only be caught there.
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def _handle(self, signum, frame) -> None:  # pylint: disable=unused-argument
        self.requested = True


def agree_on_flags(stop: bool, nonfinite: torch.Tensor, num_gpus: int) -> tuple[bool, bool]:
    """(stop, nonfinite) as every rank sees them: one rank's SIGTERM stops them all at the same minibatch."""
    flags = torch.stack([torch.as_tensor(float(stop), device=nonfinite.device), nonfinite.float()])
    if num_gpus > 1:
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
    stop_flag, nonfinite_flag = flags.tolist()
    return stop_flag > 0, nonfinite_flag > 0


def divergence_message(count: int, cur_nimg: int, last_snapshot: str | None) -> str:
    good = f'the last good snapshot is {last_snapshot}' if last_snapshot else 'no snapshot was written yet'
    return (f'Training stopped: {count} minibatches in a row had non-finite gradients (at kimg '
            f'{cur_nimg / 1000:.3f}); {good}. Try a smaller learning rate, a larger --gamma, --precision=bf16 or '
            f'--fp32, and resume from that snapshot.')

#----------------------------------------------------------------------------
# Snapshots and exact resume.


def make_snapshot(training_set_kwargs: dict, G, D, G_ema, augment_pipe, num_gpus: int) -> dict:
    snapshot = dict(training_set_kwargs=dict(training_set_kwargs))
    for name, module in [('G', G), ('D', D), ('G_ema', G_ema), ('augment_pipe', augment_pipe)]:
        if module is not None:
            if num_gpus > 1:
                misc.check_ddp_consistency(module, ignore_regex=r'.*\.[^.]+_(avg|ema)')
            module = copy.deepcopy(module).eval().requires_grad_(False).cpu()
        snapshot[name] = module
    return snapshot


def training_state(phases, progress: dict, augment_pipe, loss, label_rng, ada_stats) -> dict:
    """Everything beyond the networks that an exact resume needs."""
    optimizers = {phase.name[0]: phase.opt.state_dict() for phase in phases}
    return dict(
        progress=dict(progress), optimizers=optimizers,
        augment_p=float(augment_pipe.p) if augment_pipe is not None else 0.0,
        ada_pending=ada_stats.pending() if ada_stats is not None else {},  # Signs since the last p update.
        pl_mean=loss.pl_mean.detach().cpu(),
        rng=dict(torch=torch.get_rng_state(), numpy=np.random.get_state(), python=random.getstate(),
                 label=label_rng.get_state(),
                 cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None))


def restore_training_state(state: dict, phases, augment_pipe, loss, label_rng) -> dict:
    for phase in phases:
        phase.opt.load_state_dict(state['optimizers'][phase.name[0]])
    if augment_pipe is not None:
        augment_pipe.p.copy_(torch.as_tensor(state['augment_p']))
    loss.pl_mean.copy_(state['pl_mean'])
    rng = state['rng']
    if rng is None:
        return dict(state['progress'])
    torch.set_rng_state(rng['torch'])
    np.random.set_state(rng['numpy'])
    random.setstate(rng['python'])
    label_rng.set_state(rng['label'])
    if rng['cuda'] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng['cuda'])
    return dict(state['progress'])


def read_resume_networks(resume_pkl: str) -> dict:
    import legacy
    try:
        return legacy.load_network(resume_pkl)
    except (OSError, ValueError) as e:  # legacy's messages are one line and name the file.
        raise ResumeError(f'Cannot resume: {e}') from None


def resume_mismatch(resume_data: dict, G, D, exact: bool) -> str | None:
    """Why the snapshot's networks cannot continue as G and D (one line), or None when they can.

    Every tensor of an exact resume (with a training state) must be there with its shape; a resume from other
    weights (transfer learning) may lack tensors (new layers, e.g. a label embedding, keep their initial values)
    but a tensor of another shape is never silently left out.
    """
    source = resume_data['G_ema']
    interface = lambda net: (tuple(int(s) for s in net.img_shape), int(net.img_channels), int(net.c_dim))  # noqa
    if interface(source) != interface(G):
        describe = lambda shape, channels, c_dim: (  # noqa: E731
            f'{contract.format_size(shape)} volumes with {channels} channel(s) and {c_dim} label dimension(s)')
        return f'the snapshot is for {describe(*interface(source))}; these options give {describe(*interface(G))}'
    for name, own, theirs in [('G', G, resume_data.get('G')), ('D', D, resume_data.get('D'))]:
        if theirs is None:
            return f'the snapshot holds no {name}' if exact else None
        mine, other = dict(misc.named_params_and_buffers(own)), dict(misc.named_params_and_buffers(theirs))
        for key, tensor in mine.items():
            if key not in other and exact:
                return f'its {name} has no "{key}" (other network options: --cfg, --cond, --base, ...)'
            if key in other and tuple(other[key].shape) != tuple(tensor.shape):
                return (f'{name}.{key} is {list(other[key].shape)} in the snapshot and {list(tensor.shape)} with these '
                        f'options (other network options: --cfg, --base, --depth-schedule, ...)')
    return None


def check_resume(resume_pkl: str, resume_state: str | None, training_set, G_kwargs: dict, D_kwargs: dict) -> None:
    """Raise ResumeError (one line) unless the resume files read back whole and fit networks built from these
    options; train.py calls it before it touches any run directory. The networks are built on the meta device."""
    if resume_state is not None:
        check_state_file(resume_state)
    data = read_resume_networks(resume_pkl)
    with torch.device('meta'):
        G, D, _ = build_networks(training_set, G_kwargs, D_kwargs, torch.device('meta'))
    reason = resume_mismatch(data, G, D, exact=resume_state is not None)
    if reason is not None:
        raise ResumeError(f'Cannot resume from {resume_pkl}: {reason}')


def load_resume_networks(resume_data: dict, G, D, G_ema, augment_pipe) -> None:
    for name, module in [('G', G), ('D', D), ('G_ema', G_ema), ('augment_pipe', augment_pipe)]:
        if module is not None and resume_data.get(name) is not None:
            misc.copy_params_and_buffers(resume_data[name], module, require_all=False)

#----------------------------------------------------------------------------
# Reporting.


def status_line(progress: dict, tick_start_time: float, start_time: float, tick_start_nimg: int,
                maintenance_time: float, augment_pipe, device: torch.device) -> str:
    """The tick's one-line status (each value also reported to the statistics)."""
    now = time.time()
    kimg_done = (progress['cur_nimg'] - tick_start_nimg) / 1000
    cpu_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    report = training_stats.report0
    fields = [
        f"tick {report('Progress/tick', progress['cur_tick']):<5d}",
        f"kimg {report('Progress/kimg', progress['cur_nimg'] / 1e3):<9.3f}",
        f"time {dnnlib.util.format_time(report('Timing/total_sec', now - start_time)):<12s}",
        f"sec/tick {report('Timing/sec_per_tick', now - tick_start_time):<7.1f}",
        f"sec/kimg {report('Timing/sec_per_kimg', (now - tick_start_time) / max(kimg_done, 1e-8)):<7.2f}",
        f"maintenance {report('Timing/maintenance_sec', maintenance_time):<6.1f}",
        f"cpumem {report('Resources/peak_cpu_mem_gb', cpu_gb):<6.2f}",
    ]
    if device.type == 'cuda':
        gpu_gb = torch.cuda.max_memory_allocated(device) / 2**30
        fields.append(f"gpumem {report('Resources/peak_gpu_mem_gb', gpu_gb):<6.2f}")
        torch.cuda.reset_peak_memory_stats(device)
    fields.append(f"augment {report('Progress/augment', float(augment_pipe.p) if augment_pipe is not None else 0):.3f}")
    report('Timing/total_hours', (now - start_time) / 3600)
    report('Timing/total_days', (now - start_time) / 86400)
    return ' '.join(fields)


def write_tfevents(stats_tfevents, stats_dict: dict, stats_metrics: dict, cur_nimg: int, walltime: float) -> None:
    global_step = int(cur_nimg)  # Images shown: distinct for every tick, also for ticks under 1 kimg.
    for name, value in stats_dict.items():
        stats_tfevents.add_scalar(name, value['mean'], global_step=global_step, walltime=walltime)
    for name, value in stats_metrics.items():
        stats_tfevents.add_scalar(f'Metrics/{name}', value, global_step=global_step, walltime=walltime)
    stats_tfevents.flush()


def save_image_snapshot(G_ema, grid: dnnlib.EasyDict, path: str, stats_tfevents=None, cur_nimg: int = 0) -> None:
    """The grid's latents through G_ema as a PNG of slices (and a TensorBoard image)."""
    fakes = visualize.display_volumes(generate_grid(G_ema, grid.z, grid.c), grid.info)
    image = visualize.volume_grid(fakes, grid.size, (-1, 1), grid.planes, grid.spacing)
    dnnlib.util.atomic_write(path, lambda f: image.save(f, format='PNG'))
    if stats_tfevents is not None:
        array = np.asarray(image)
        stats_tfevents.add_image('fakes', array, global_step=cur_nimg, dataformats='HW' if array.ndim == 2 else 'HWC')


def open_logs(run_dir: str):
    stats_jsonl = os.path.join(run_dir, 'stats.jsonl')
    try:
        import torch.utils.tensorboard as tensorboard
        stats_tfevents = tensorboard.SummaryWriter(run_dir)
    except ImportError as err:
        print('Skipping tfevents export:', err)
        stats_tfevents = None
    return stats_jsonl, stats_tfevents

#----------------------------------------------------------------------------
# The loop.


def training_loop(
    run_dir: str = '.',                          # Output directory.
    # Data.
    training_set_kwargs: dict | None = None,     # The training set: class_name, path, ...
    data_loader_kwargs: dict | None = None,      # Options for torch.utils.data.DataLoader.
    # Networks.
    G_kwargs: dict | None = None,                # The generator.
    D_kwargs: dict | None = None,                # The discriminator.
    ema_kimg: float = 10,                        # Half-life of G_ema [kimg].
    ema_rampup: float | None = None,             # G_ema's half-life capped at cur_nimg * ema_rampup; None = off.
    # Optimisation.
    G_opt_kwargs: dict | None = None,            # The generator's optimiser.
    D_opt_kwargs: dict | None = None,            # The discriminator's optimiser.
    loss_kwargs: dict | None = None,             # The loss.
    G_reg_interval: int | None = 4,              # Lazy path-length regularisation [minibatches]; None = every one.
    D_reg_interval: int | None = 16,             # Lazy R1 [minibatches]; None = every one.
    batch_size: int = 4,                         # Total batch over all processes [volumes].
    batch_gpu: int = 4,                          # Chunk per process per accumulation round [volumes].
    total_kimg: float = 25000,                   # Training length [kimg of real volumes shown].
    # Augmentation.
    augment_kwargs: dict | None = None,          # The augment pipe; None = no augmentation.
    augment_p: float = 0,                        # Initial augment probability.
    ada_target: float | None = None,             # ADA's target for sign(D(real)); None = a fixed p.
    ada_interval: int = 4,                       # Between updates of p [minibatches].
    ada_kimg: float = 500,                       # p can move by 1 within this many kimg.
    # Outputs.
    kimg_per_tick: float = 4,                    # Progress interval [kimg].
    image_snapshot_ticks: int | None = 50,       # Between slice grids [ticks]; None = never.
    network_snapshot_ticks: int | None = 50,     # Between network snapshots [ticks]; None = never.
    grid_planes: Sequence[str] = ('axial',),     # Planes shown in the slice grids.
    metrics: Sequence[str] = (),                 # Metrics evaluated at network snapshots (by metric_fn).
    metric_kwargs: dict | None = None,           # Extra options for the metrics (detector locations).
    metric_fn: Callable[..., dict] | None = None,  # metrics.metric_main.evaluate_snapshot; None = no metrics.
    # Resume and stopping.
    resume_pkl: str | None = None,               # Network snapshot to start from.
    resume_state: str | None = None,             # The training state saved with it: an exact resume.
    max_nonfinite: int = 50,                     # Stop after this many minibatches in a row of non-finite gradients.
    abort_fn: Callable[[], bool] | None = None,  # Returns True to stop training early.
    progress_fn: Callable[[float, float], None] | None = None,  # Called as (cur_kimg, total_kimg) at every tick.
    # Processes and performance.
    random_seed: int = 0,                        # Global random seed.
    num_gpus: int = 1,                           # Processes taking part.
    rank: int = 0,                               # This process, in [0, num_gpus).
    cudnn_benchmark: bool = True,                # torch.backends.cudnn.benchmark.
    allow_tf32: bool = False,                    # TF32 for matmuls and convolutions.
) -> None:
    """Train on this process (one rank of a possibly distributed run) until total_kimg, a SIGTERM or abort_fn."""
    opts = dnnlib.EasyDict(locals())
    if metrics and metric_fn is None:
        raise ValueError('metrics need a metric_fn (metrics.metric_main.evaluate_snapshot) to evaluate them')
    with StopRequest() as stop_request:
        run = start_run(opts)
        if run is None:
            return
        while not run.done:
            train_minibatch(run, stop_request.requested)
            if run.tick_due():
                end_tick(run)
        if run.stats_tfevents is not None:
            run.stats_tfevents.close()
        if opts.rank == 0:
            print('\nExiting...')


@dataclasses.dataclass(eq=False)
class Run:
    """What the loop carries from one minibatch to the next; start_run sets it up."""
    opts: dnnlib.EasyDict                   # training_loop's arguments.
    device: torch.device
    training_set: torch.utils.data.Dataset
    G: torch.nn.Module
    D: torch.nn.Module
    G_ema: torch.nn.Module
    augment_pipe: torch.nn.Module | None
    loss: object
    phases: list[dnnlib.EasyDict]
    ddp_modules: list
    label_rng: np.random.RandomState       # Draws the labels of generated volumes.
    progress: dict                          # cur_nimg, cur_tick, batch_idx: what a resume continues from.
    ada_stats: training_stats.Collector | None
    data_iterator: object = None
    grid: dnnlib.EasyDict | None = None     # Rank 0: the latents and labels of the slice grids.
    stats_collector: training_stats.Collector | None = None
    stats_jsonl: str | None = None
    stats_tfevents: object = None
    timing_events: dict | None = None
    stats_metrics: dict = dataclasses.field(default_factory=dict)
    start_time: float = 0.0
    tick_start_time: float = 0.0
    tick_start_nimg: int = 0
    maintenance_time: float = 0.0
    nonfinite_in_a_row: int = 0
    last_snapshot: str | None = None
    stop: bool = False                      # A SIGTERM reached some rank: snapshot and leave.
    done: bool = False

    def tick_due(self) -> bool:
        """The tick ends after this minibatch: the first one, every kimg_per_tick, at the end and on a stop."""
        self.done = self.stop or self.progress['cur_nimg'] >= self.opts.total_kimg * 1000
        return self.done or self.progress['cur_tick'] == 0 or \
            self.progress['cur_nimg'] >= self.tick_start_nimg + self.opts.kimg_per_tick * 1000


def start_run(opts: dnnlib.EasyDict) -> Run | None:
    """Networks, loss, phases (resumed where asked), the data stream, the grids and the logs; None when a resumed
    run has nothing left to train."""
    start_time = time.time()
    if opts.rank == 0:
        dnnlib.util.remove_stale_temporaries(opts.run_dir)  # Left by a process killed while it wrote.
    device = torch.device('cuda', torch.cuda.current_device()) if torch.cuda.is_available() else torch.device('cpu')
    setup_torch(opts.random_seed, opts.num_gpus, opts.rank, opts.cudnn_benchmark, opts.allow_tf32)
    training_set = dnnlib.util.construct_class_by_name(**opts.training_set_kwargs)
    if opts.rank == 0:
        print(f'Training set: {training_set.name}, {len(training_set)} volumes of size '
              f'{contract.format_size(training_set.img_shape)} with {training_set.num_channels} channel(s), '
              f'label_dim {training_set.label_dim}')
    G, D, G_ema = build_networks(training_set, opts.G_kwargs or {}, opts.D_kwargs or {}, device)
    augment_pipe = build_augment_pipe(opts, training_set, device)
    if opts.resume_pkl is not None and opts.rank == 0:
        resume_networks(opts.resume_pkl, opts.resume_state is not None, G, D, G_ema, augment_pipe)
    if opts.num_gpus > 1:
        sync_from_rank0([G, D, G_ema, augment_pipe])
    if opts.rank == 0:
        print_summaries(G, D, G_ema, training_set, opts.batch_gpu, device)
    ddp_modules, loss_modules = wrap_ddp(G, D, augment_pipe, opts.num_gpus, device)
    run = Run(opts=opts, device=device, training_set=training_set, G=G, D=D, G_ema=G_ema, augment_pipe=augment_pipe,
              loss=dnnlib.util.construct_class_by_name(device=device, **loss_modules, **(opts.loss_kwargs or {})),
              phases=build_phases(G, D, opts.G_opt_kwargs or {}, opts.D_opt_kwargs or {}, opts.G_reg_interval,
                                  opts.D_reg_interval),
              ddp_modules=ddp_modules, label_rng=np.random.RandomState(opts.random_seed * opts.num_gpus + opts.rank + 1),
              progress=dict(cur_nimg=0, cur_tick=0, batch_idx=0), start_time=start_time,
              ada_stats=training_stats.Collector(regex='Loss/signs/real') if augment_pipe is not None and
              opts.ada_target is not None else None, last_snapshot=opts.resume_pkl)
    if opts.resume_state is not None and not resume_progress(run):
        return None
    run.data_iterator = make_data_iterator(training_set, opts.rank, opts.num_gpus, opts.random_seed, opts.batch_size,
                                           skip=run.progress['batch_idx'] * (opts.batch_size // opts.num_gpus),
                                           data_loader_kwargs=opts.data_loader_kwargs or {})
    if opts.rank == 0:
        run.grid = setup_grids(run)
        run.stats_jsonl, run.stats_tfevents = open_logs(opts.run_dir)
    run.stats_collector = training_stats.Collector(regex='.*')
    run.timing_events = {phase.name: (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                         for phase in run.phases} if device.type == 'cuda' and opts.rank == 0 else None
    if opts.rank == 0:
        print(f'Training for {opts.total_kimg} kimg...\n')
    run.tick_start_nimg, run.tick_start_time = run.progress['cur_nimg'], time.time()
    run.maintenance_time = run.tick_start_time - start_time
    if opts.progress_fn is not None:
        opts.progress_fn(run.progress['cur_nimg'] / 1000, opts.total_kimg)
    return run


def build_augment_pipe(opts: dnnlib.EasyDict, training_set, device: torch.device) -> torch.nn.Module | None:
    """The augment pipe at its initial p, or None when nothing augments."""
    if opts.augment_kwargs is None or (opts.augment_p <= 0 and opts.ada_target is None):
        return None
    pipe = dnnlib.util.construct_class_by_name(**opts.augment_kwargs,
                                               channels_are_sequences=training_set.channels_are_sequences,
                                               label_channels=len(training_set.volume_info.label_values))
    pipe = pipe.train().requires_grad_(False).to(device)
    pipe.p.copy_(torch.as_tensor(opts.augment_p))
    return pipe


def resume_networks(resume_pkl: str, exact: bool, G, D, G_ema, augment_pipe) -> None:
    """Load a snapshot's weights into the new networks (rank 0; the others receive them by broadcast)."""
    print(f'Resuming from "{resume_pkl}"')
    resume_data = read_resume_networks(resume_pkl)
    reason = resume_mismatch(resume_data, G, D, exact=exact)
    if reason is not None:
        raise ResumeError(f'Cannot resume from {resume_pkl}: {reason}')
    load_resume_networks(resume_data, G, D, G_ema, augment_pipe)


def resume_progress(run: Run) -> bool:
    """Restore the optimisers, progress, augment p and random streams of an exact resume; False when the run has
    already finished (a requeued job)."""
    opts = run.opts
    state = load_training_state(opts.resume_state, opts.rank)
    run.progress = restore_training_state(state, run.phases, run.augment_pipe, run.loss, run.label_rng)
    if run.ada_stats is not None:
        run.ada_stats.add_pending(state.get('ada_pending', {}))
    if opts.rank == 0:
        print(f"Resumed training state at kimg {run.progress['cur_nimg'] / 1000:.3f}, tick {run.progress['cur_tick']}")
        trim_stats(os.path.join(opts.run_dir, 'stats.jsonl'), run.progress['cur_nimg'])
    if run.progress['cur_nimg'] >= opts.total_kimg * 1000:
        if opts.rank == 0:
            print(f"Nothing to train: the run is at kimg {run.progress['cur_nimg'] / 1000:.3f} of {opts.total_kimg}.")
        return False
    return True


def setup_grids(run: Run) -> dnnlib.EasyDict:
    """The slice grids' fixed latents and labels; reals.png and, for a new run, fakes_init.png."""
    opts, info = run.opts, run.training_set.volume_info
    grid_size, grid_reals, grid_labels = setup_grid(run.training_set, opts.random_seed)
    grid_z = torch.randn([len(grid_labels), run.G.z_dim], generator=torch.Generator().manual_seed(opts.random_seed))
    grid = dnnlib.EasyDict(size=grid_size, planes=list(opts.grid_planes), spacing=info.spacing, info=info,
                           z=grid_z.to(run.device).split(opts.batch_gpu),
                           c=torch.from_numpy(grid_labels).to(run.device).split(opts.batch_gpu))
    if opts.resume_state is None or not os.path.isfile(os.path.join(opts.run_dir, 'reals.png')):
        reals = visualize.display_volumes(contract.to_network(grid_reals, info), info)
        visualize.save_volume_grid(reals, os.path.join(opts.run_dir, 'reals.png'), grid.size, drange=(-1, 1),
                                   planes=grid.planes, spacing=grid.spacing)
    if opts.resume_state is None:
        save_image_snapshot(run.G_ema, grid, os.path.join(opts.run_dir, 'fakes_init.png'))
    return grid


def train_minibatch(run: Run, stop_requested: bool) -> None:
    """One minibatch through every due phase, G_ema, and ADA's update of p; stops a diverged run."""
    opts, progress = run.opts, run.progress
    with torch.autograd.profiler.record_function('data_fetch'):
        batch = fetch_batch(run.data_iterator, run.training_set, run.phases, opts.batch_size, opts.batch_gpu,
                            run.G.z_dim, run.label_rng, run.device)
    nonfinite = run_phases(run.phases, run.loss, run.ddp_modules, progress['batch_idx'], *batch, run.timing_events)
    run.stop, nonfinite = agree_on_flags(stop_requested, nonfinite, opts.num_gpus)
    training_stats.report0('Loss/nonfinite_steps', float(nonfinite))
    run.nonfinite_in_a_row = run.nonfinite_in_a_row + 1 if nonfinite else 0
    if run.nonfinite_in_a_row == 1 and opts.rank == 0:
        print(f"Warning: non-finite gradients at kimg {progress['cur_nimg'] / 1000:.3f}; the step used 0 in their "
              f'place. Training stops after {opts.max_nonfinite} such minibatches in a row.')
    if run.nonfinite_in_a_row >= opts.max_nonfinite:
        raise TrainingDiverged(divergence_message(run.nonfinite_in_a_row, progress['cur_nimg'], run.last_snapshot))
    with torch.autograd.profiler.record_function('Gema'):
        update_ema(run.G, run.G_ema, progress['cur_nimg'], opts.batch_size, opts.ema_kimg, opts.ema_rampup)
    progress['cur_nimg'] += opts.batch_size
    progress['batch_idx'] += 1
    if run.ada_stats is not None and progress['batch_idx'] % opts.ada_interval == 0:
        from training.augment import update_ada_p
        run.ada_stats.update()
        new_p = update_ada_p(float(run.augment_pipe.p), run.ada_stats['Loss/signs/real'], target=opts.ada_target,
                             batch_size=opts.batch_size, interval=opts.ada_interval, ada_kimg=opts.ada_kimg)
        run.augment_pipe.p.copy_(torch.as_tensor(new_p))


def end_tick(run: Run) -> None:
    """The tick's status line and statistics, then the slice grid, the snapshot and the metrics when due."""
    opts, progress = run.opts, run.progress
    line = status_line(progress, run.tick_start_time, run.start_time, run.tick_start_nimg, run.maintenance_time,
                       run.augment_pipe, run.device)
    if opts.rank == 0:
        print(line)
        if run.stop:
            print('\nReceived SIGTERM: writing a snapshot to resume from, then exiting.')
    if opts.abort_fn is not None and opts.abort_fn():
        run.done = True
        if opts.rank == 0:
            print('\nAborting...')
    maintenance_start = time.time()
    tag = snapshot_tag(progress['cur_nimg'])
    tick = progress['cur_tick']
    progress['cur_tick'] += 1  # The saved state resumes at the next tick.

    # The tick's stats line goes before its snapshot: a run killed in between logs the tick again when it resumes
    # from the previous snapshot, and trim_stats has removed the first copy.
    stats_dict = collect_tick_stats(run)
    if opts.rank == 0 and not run.stop and opts.image_snapshot_ticks is not None and \
            (run.done or tick % opts.image_snapshot_ticks == 0):
        save_image_snapshot(run.G_ema, run.grid, os.path.join(opts.run_dir, f'fakes{tag}.png'), run.stats_tfevents,
                            progress['cur_nimg'])
    if run.stop or (opts.network_snapshot_ticks is not None and (run.done or tick % opts.network_snapshot_ticks == 0)):
        save_snapshot_and_metrics(run, tag)
    if run.stats_tfevents is not None:
        write_tfevents(run.stats_tfevents, stats_dict, run.stats_metrics, progress['cur_nimg'],
                       time.time() - run.start_time)
    if opts.progress_fn is not None:
        opts.progress_fn(progress['cur_nimg'] / 1000, opts.total_kimg)
    run.tick_start_nimg, run.tick_start_time = progress['cur_nimg'], time.time()
    run.maintenance_time = run.tick_start_time - maintenance_start


def collect_tick_stats(run: Run) -> dict:
    """The tick's statistics from every rank (phase timings on the GPU), appended to stats.jsonl."""
    if run.timing_events is not None:
        torch.cuda.synchronize(run.device)
        for name, (start, end) in run.timing_events.items():
            training_stats.report0('Timing/' + name, start.elapsed_time(end))
    run.stats_collector.update()
    stats_dict = run.stats_collector.as_dict()
    if run.stats_jsonl is not None:
        dnnlib.util.append_text(run.stats_jsonl, json.dumps(dict(stats_dict, timestamp=time.time())) + '\n')
    return stats_dict


def save_snapshot_and_metrics(run: Run, tag: str) -> None:
    """The network snapshot with this rank's training state, then the metrics (not when preempted: a job then has
    seconds left, not the minutes metrics take)."""
    opts = run.opts
    snapshot = make_snapshot(opts.training_set_kwargs, run.G, run.D, run.G_ema, run.augment_pipe, opts.num_gpus)
    state = training_state(run.phases, run.progress, run.augment_pipe, run.loss, run.label_rng, run.ada_stats)
    run.last_snapshot = save_snapshot(snapshot, opts.run_dir, tag, opts.rank, state)
    if opts.metrics and opts.metric_fn is not None and not run.stop:
        if opts.rank == 0:
            print('Evaluating metrics...')
        run.stats_metrics.update(opts.metric_fn(list(opts.metrics), opts.metric_kwargs or {}, snapshot['G_ema'],
                                                opts.training_set_kwargs, opts.num_gpus, opts.rank, run.device,
                                                opts.run_dir, run.last_snapshot))



@torch.no_grad()
def sync_from_rank0(modules: list) -> None:
    """Give every rank rank 0's parameters and buffers: networks are built from per-rank seeds, resumed weights
    load on rank 0 only, and G_ema and the noise buffers are not covered by DDP's own initial broadcast."""
    for module in modules:
        if module is not None:
            for _, tensor in misc.named_params_and_buffers(module):
                torch.distributed.broadcast(tensor, src=0)


def print_summaries(G, D, G_ema, training_set, batch_gpu: int, device: torch.device) -> None:
    z = torch.empty([batch_gpu, G.z_dim], device=device)
    c = torch.empty([batch_gpu, G.c_dim], device=device)
    img = misc.print_module_summary(G_ema, [z, c])
    misc.print_module_summary(D.eval(), [img, c])
    D.train()


# Buffers (w_avg, noise) are not synchronised in each forward, as the official; the argument's name changed in
# recent torch (the old one still works there, with a FutureWarning on every rank).
NO_BUFFER_SYNC_IN_FORWARD = dict(forward_sync_buffers=False) if 'forward_sync_buffers' in \
    inspect.signature(torch.nn.parallel.DistributedDataParallel.__init__).parameters else dict(broadcast_buffers=False)


def wrap_ddp(G, D, augment_pipe, num_gpus: int, device: torch.device):
    """DDP wrappers for the modules the loss calls; returns (modules to no_sync, kwargs for the loss)."""
    modules = dict(G_mapping=G.mapping, G_synthesis=G.synthesis, D=D, augment_pipe=augment_pipe)
    if num_gpus <= 1:
        return [], modules
    ddp_modules = []
    for name, module in modules.items():
        if module is not None and len(list(module.parameters())) > 0:
            module.requires_grad_(True)
            module = torch.nn.parallel.DistributedDataParallel(
                module, device_ids=[device] if device.type == 'cuda' else None, **NO_BUFFER_SYNC_IN_FORWARD)
            module.requires_grad_(False)
            ddp_modules.append(module)
        modules[name] = module
    return ddp_modules, modules

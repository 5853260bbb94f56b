# SPDX-License-Identifier: Apache-2.0
"""Shared machinery of the metrics: options, detectors, feature statistics, slices, real and generated volumes.

Every metric sees volumes as float32 [N, C, D, H, W] in the uint8 range [0, 255]:
- generated volumes (about [-1, 1]) become floor(clamp(x * 127.5 + 128, 0, 255)), the official 8-bit quantisation;
- real volumes become value * 255 / max_value (exact for uint8 data, a rescale for uint16).
A featurizer maps such a batch to features per *view*: a (plane, channel) pair for the slice-wise metrics, a
(`volume`, channel) pair for the 3D ones. Each view has its own statistics, and metrics report one value per view
plus their mean, so multi-channel volumes (one MR sequence per channel) are measured per channel and averaged.
2D detectors get the slices as uint8 [N, 3, H, W], the grey value repeated, as the official metrics feed grayscale.

Generated item i draws its latent and label from (seed, i) alone and the ranks deal the items round-robin, so a
run on several processes generates the volumes of a single-process run (up to the generator's noise).

Real-volume statistics are cached under `dnnlib.make_cache_dir_path('gan-metrics')`, keyed by the md5 of the
dataset options, the featurizer (detector, slice strategy, channels) and the statistics options.
"""

from __future__ import annotations

import abc
import contextlib
import copy
import hashlib
import json
import os
import re
import warnings
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import tqdm

import dnnlib
from torch_utils import distributed
from volumes import contract

DETECTOR_URLS = dnnlib.EasyDict(
    inception='https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt',
    vgg16='https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/vgg16.pt',
    medicalnet=None,  # No public URL serves a single MedicalNet file; give a path or URL with --medicalnet.
)
INCEPTION = 'Inception detector (--inception)'  # How errors name the detectors and the options that set them.
VGG16 = 'VGG16 detector (--vgg16)'
SLICE_STRATEGIES = ('mid', 'tri', 'all')
PLANES = contract.PLANES

View = tuple[str, int]  # (plane or 'volume', channel index)

#----------------------------------------------------------------------------
# Options.


class MetricOptions:
    """Everything a metric needs: the generator, the dataset, the process layout and where the detectors are.

    Args:
        G: Generator; called as G(z, c, **G_kwargs) -> [N, C, D, H, W] in about [-1, 1].
        G_kwargs: Extra generator arguments (truncation_psi, noise_mode).
        dataset_kwargs: Options of the real dataset (with class_name); metrics always use all its volumes.
        num_gpus: Number of processes taking part.
        rank: This process's rank.
        device: Where to run; None: CUDA if available, else CPU.
        cache: Read and write the real-statistics cache.
        progress: Progress bars (rank 0 only): True always, False never, None on a terminal only.
        detector_urls: URLs or paths of the detectors by name (inception, vgg16, medicalnet); None entries keep
            the defaults of DETECTOR_URLS.
        seed: Seed of the latents, labels and noise. Fixed by default, so a metric repeats exactly; the
            official metrics draw a new one per evaluation (None does that here), and their values vary.

    After an evaluation, `inputs` holds the content identity (dnnlib.util.content_identity, with the path) of
    the dataset and of every detector file the metric read; it goes into the metric's JSON line.
    """

    def __init__(self, G: torch.nn.Module | None = None, G_kwargs: dict | None = None,
                 dataset_kwargs: dict | None = None, num_gpus: int = 1, rank: int = 0,
                 device: torch.device | str | None = None, cache: bool = True, progress: bool | None = False,
                 detector_urls: dict | None = None, seed: int | None = 0) -> None:
        if not 0 <= rank < num_gpus:
            raise ValueError(f'rank {rank} is not in [0, num_gpus={num_gpus})')
        self.G = G
        self.G_kwargs = dnnlib.EasyDict(G_kwargs or {})
        self.dataset_kwargs = dnnlib.EasyDict(dataset_kwargs or {})
        self.num_gpus = num_gpus
        self.rank = rank
        self.device = torch.device(device) if device is not None else default_device()
        self.cache = cache
        self.progress = progress
        self.detector_urls = dnnlib.EasyDict(DETECTOR_URLS)
        self.detector_urls.update({k: v for k, v in (detector_urls or {}).items() if v})
        if seed is None:  # Rank 0 draws it, so every rank derives its own stream from the same base.
            seed = int(np.random.SeedSequence().entropy % (1 << 31)) if rank == 0 else 0
            seed = broadcast(seed, num_gpus)
        self.seed = int(seed)
        self.inputs: dict[str, dict] = {}


def default_device() -> torch.device:
    return torch.device('cuda', torch.cuda.current_device()) if torch.cuda.is_available() else torch.device('cpu')

#----------------------------------------------------------------------------
# Collectives that are no-ops for a single process.


def broadcast(obj: Any, num_gpus: int) -> Any:
    """Rank 0's picklable `obj` on every rank."""
    return distributed.broadcast_object(obj) if num_gpus > 1 else obj


def on_rank0(opts: MetricOptions, fn: Callable[[], Any]) -> Any:
    """fn() evaluated by rank 0 only and sent to every rank: for final values whose every input all ranks hold
    (FID's matrix square roots would otherwise load the CPU once per rank for the same number)."""
    return broadcast(fn() if opts.rank == 0 else None, opts.num_gpus)


def all_reduce_sum(x: torch.Tensor, num_gpus: int) -> torch.Tensor:
    """Element-wise sum of `x` over the ranks (a new tensor)."""
    x = x.clone()
    if num_gpus > 1:
        torch.distributed.all_reduce(x)
    return x


def all_gather_interleaved(x: torch.Tensor, num_gpus: int) -> torch.Tensor:
    """[N, ...] from each rank -> [N * num_gpus, ...] ordered item 0 of rank 0, item 0 of rank 1, ... (as the
    items were dealt to the ranks)."""
    if num_gpus == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(num_gpus)]
    torch.distributed.all_gather(parts, x.contiguous())
    return torch.stack(parts, dim=1).flatten(0, 1)  # [N, num_gpus, ...] -> [N * num_gpus, ...]

#----------------------------------------------------------------------------
# Detectors.

_detector_cache: dict[tuple[str, torch.device], torch.jit.ScriptModule] = {}


def fetch_file(url_or_path: str, what: str) -> str:
    """Local path of a URL (downloaded once by rank 0, then read by all) or a plain path.

    Raises:
        OSError: one line naming the URL and where to put the file when this machine is offline.
    """
    error = None
    if distributed.get_rank() == 0:
        try:
            dnnlib.util.open_url(url_or_path, return_filename=True)
        except OSError as e:
            error = f'{what}: {dnnlib.util.one_line(e)}'
    if distributed.get_world_size() > 1:  # Also the barrier that makes the other ranks wait for the download.
        error = distributed.broadcast_object(error)
    if error is not None:
        raise OSError(error)
    return dnnlib.util.open_url(url_or_path, return_filename=True)


def get_detector(url_or_path: str, device: torch.device | str, what: str = 'detector') -> torch.jit.ScriptModule:
    """A TorchScript feature detector, loaded once per (file content, device) and kept in eval mode; `what` names
    it (and the option that sets it) in errors.

    Raises:
        OSError: the file cannot be found or downloaded (one line saying where to put it).
        ValueError: the file is not a TorchScript module.
    """
    device = torch.device(device)
    path = fetch_file(url_or_path, what)
    key = (dnnlib.util.content_identity(path)['sha256'], device)
    if key not in _detector_cache:
        try:
            with warnings.catch_warnings():  # The official detectors are TorchScript; torch calls that deprecated.
                warnings.simplefilter('ignore', DeprecationWarning)
                detector = torch.jit.load(path, map_location=device)
        except RuntimeError as e:
            raise ValueError(f'{what}: {url_or_path} is not a TorchScript file ({dnnlib.util.one_line(e, 160)})') from None
        _detector_cache[key] = detector.eval()
    return _detector_cache[key]


def detector_name(url_or_path: str) -> str:
    """The file name without its extension, e.g. 'inception-2015-12-05'."""
    name = os.path.basename(str(url_or_path).rstrip('/')).split('?')[0]
    return re.sub(r'[^0-9A-Za-z_.-]+', '_', name.split('.')[0]) or 'detector'

#----------------------------------------------------------------------------
# Feature statistics.


class FeatureStats:
    """Running statistics of feature rows [N, F]: all rows, and/or float64 sums for mean and covariance, and/or
    float64 sums for the mean and the mean squared norm (enough for a linear-kernel MMD).

    Args:
        capture_all: Keep every row (float32, on the CPU).
        capture_mean_cov: Keep float64 sums of x and x x^T.
        capture_mean_sqnorm: Keep float64 sums of x and |x|^2.
        max_items: Ignore rows beyond this many; None: no limit.
    """

    def __init__(self, capture_all: bool = False, capture_mean_cov: bool = False,
                 capture_mean_sqnorm: bool = False, max_items: int | None = None) -> None:
        self.capture_all = capture_all
        self.capture_mean_cov = capture_mean_cov
        self.capture_mean_sqnorm = capture_mean_sqnorm
        self.max_items = max_items
        self.num_items = 0
        self.num_features: int | None = None
        self.all_features: list[torch.Tensor] = []
        self.raw_sum: torch.Tensor | None = None
        self.raw_cov: torch.Tensor | None = None
        self.raw_sqnorm: torch.Tensor | None = None

    def is_full(self) -> bool:
        return self.max_items is not None and self.num_items >= self.max_items

    def _set_num_features(self, num_features: int, device: torch.device) -> None:
        if self.num_features is not None:
            if num_features != self.num_features:
                raise ValueError(f'feature rows of width {num_features}; earlier rows had {self.num_features}')
            return
        self.num_features = num_features
        if self.capture_mean_cov or self.capture_mean_sqnorm:
            self.raw_sum = torch.zeros([num_features], dtype=torch.float64, device=device)
            self.raw_sqnorm = torch.zeros([], dtype=torch.float64, device=device)
        if self.capture_mean_cov:
            self.raw_cov = torch.zeros([num_features, num_features], dtype=torch.float64, device=device)

    def append(self, x: torch.Tensor | np.ndarray) -> None:
        """Add rows [N, F] (those beyond max_items are dropped)."""
        x = torch.as_tensor(x)
        if x.ndim != 2:
            raise ValueError(f'features must be [N, F], got shape {tuple(x.shape)}')
        if self.max_items is not None:
            x = x[:max(self.max_items - self.num_items, 0)]
        self._set_num_features(x.shape[1], x.device)
        if x.shape[0] == 0:
            return
        self.num_items += x.shape[0]
        if self.capture_all:
            self.all_features.append(x.detach().float().cpu())
        if self.raw_sum is not None:
            x64 = x.detach().to(self.raw_sum.device, torch.float64)
            self.raw_sum += x64.sum(dim=0)
            self.raw_sqnorm += x64.square().sum()
            if self.raw_cov is not None:
                self.raw_cov += x64.T @ x64

    def append_torch(self, x: torch.Tensor, num_gpus: int = 1, rank: int = 0) -> None:
        """Add [N, ..., F] from every rank: gathered item by item across ranks, then flattened to rows."""
        del rank  # Every rank receives all rows.
        x = all_gather_interleaved(x, num_gpus)
        self.append(x.reshape(-1, x.shape[-1]))

    def _require(self, flag: bool, what: str) -> None:
        if not flag:
            raise ValueError(f'these statistics were not asked to capture {what}')
        if self.num_items == 0:
            raise ValueError('no features were captured (is the dataset or the sample count empty?)')

    def get_all(self) -> np.ndarray:
        """All rows, [num_items, F] float32."""
        return self.get_all_torch().numpy()

    def get_all_torch(self) -> torch.Tensor:
        self._require(self.capture_all, 'all features')
        return torch.cat(self.all_features)

    def get_mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean [F] and the biased covariance E[x x^T] - mu mu^T [F, F], float64."""
        self._require(self.capture_mean_cov, 'the covariance')
        mean = self.raw_sum / self.num_items
        cov = self.raw_cov / self.num_items - torch.outer(mean, mean)
        return mean.cpu().numpy(), cov.cpu().numpy()

    def get_mean_sqnorm(self) -> tuple[np.ndarray, float]:
        """Mean [F] and the mean squared norm E[|x|^2], float64."""
        self._require(self.raw_sum is not None, 'the mean')
        return (self.raw_sum / self.num_items).cpu().numpy(), float(self.raw_sqnorm) / self.num_items

    def state_dict(self) -> dict[str, np.ndarray]:
        """Arrays that rebuild these statistics with load_state_dict (no pickled objects)."""
        state = dict(num_items=np.int64(self.num_items), num_features=np.int64(self.num_features or 0),
                     flags=np.array([self.capture_all, self.capture_mean_cov, self.capture_mean_sqnorm]))
        if self.capture_all:
            state['all'] = self.get_all() if self.num_items else np.zeros([0, self.num_features or 0], np.float32)
        for name in ('raw_sum', 'raw_cov', 'raw_sqnorm'):
            if getattr(self, name) is not None:
                state[name] = getattr(self, name).cpu().numpy()
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, np.ndarray], device: torch.device | str = 'cpu') -> FeatureStats:
        capture_all, capture_mean_cov, capture_mean_sqnorm = (bool(f) for f in state['flags'])
        stats = cls(capture_all=capture_all, capture_mean_cov=capture_mean_cov,
                    capture_mean_sqnorm=capture_mean_sqnorm, max_items=int(state['num_items']))
        stats.num_items = int(state['num_items'])
        stats.num_features = int(state['num_features']) or None
        if capture_all:
            stats.all_features = [torch.from_numpy(np.array(state['all']))]
        for name in ('raw_sum', 'raw_cov', 'raw_sqnorm'):
            if name in state:
                setattr(stats, name, torch.from_numpy(np.array(state[name])).to(device))
        return stats

#----------------------------------------------------------------------------
# Volume conversion and slices.


def fake_to_uint8_range(x: torch.Tensor) -> torch.Tensor:
    """Generator output (about [-1, 1]) -> integer-valued float32 in [0, 255], as the official uint8 cast."""
    return (x.float() * 127.5 + 128).clamp(0, 255).floor()


def real_to_uint8_range(x: torch.Tensor, max_value: int) -> torch.Tensor:
    """Stored volumes (uint8 or uint16 values) -> float32 in [0, 255]."""
    return x.float() * (255 / max_value)


def uint8_range_to_unit(x: torch.Tensor) -> torch.Tensor:
    """[0, 255] -> [-1, 1], the networks' intensity range."""
    return contract.to_unit(x, 255)


def strategy_planes(strategy: str) -> tuple[str, ...]:
    if strategy not in SLICE_STRATEGIES:
        raise ValueError(f'slice strategy "{strategy}" is not one of {", ".join(SLICE_STRATEGIES)}')
    return PLANES if strategy == 'tri' else ('axial',)


def extract_slices(volumes: torch.Tensor, strategy: str, channel: int = 0) -> dict[str, torch.Tensor]:
    """Slices of one channel per plane: {plane: [N, S, h, w]}.

    `mid`: the middle axial slice (index D // 2), S = 1. `all`: every axial slice, S = D.
    `tri`: the middle axial [H, W], coronal [D, W] (index H // 2) and sagittal [D, H] (index W // 2) slices, upright
    as training/visualize.py shows them (volumes.contract.upright_slice).
    """
    planes = strategy_planes(strategy)
    x = volumes[:, channel]  # [N, D, H, W]
    if strategy == 'all':
        return dict(axial=x)
    return {plane: contract.upright_slice(x, plane)[:, None] for plane in planes}  # [N, 1, h, w] each


def slices_per_volume(strategy: str, img_shape: Sequence[int]) -> int:
    return int(img_shape[0]) if strategy == 'all' else 1

#----------------------------------------------------------------------------
# Featurizers: uint8-range volumes [N, C, D, H, W] -> {view: features [N, S, F]}.


class Featurizer(abc.ABC):
    """Base class. Subclasses set `name` (used in cache file names) and implement cache_key and __call__.

    The default views are one per channel, ('volume', c), with one feature row per volume.
    """

    name = 'features'

    def views(self, num_channels: int) -> list[View]:
        return [('volume', c) for c in range(num_channels)]

    def rows_per_volume(self, view: View, img_shape: Sequence[int]) -> int:
        return 1

    @abc.abstractmethod
    def cache_key(self) -> dict:
        """JSON-able description of everything the features depend on (part of the cache key)."""

    def input_files(self) -> dict[str, str]:
        """Local files the features depend on (detector weights), by name; their content keys the cache."""
        return {}

    @abc.abstractmethod
    def __call__(self, volumes: torch.Tensor) -> dict[View, torch.Tensor]:
        """Uint8-range volumes [N, C, D, H, W] -> {view: features [N, rows_per_volume, F]}."""


class SliceFeaturizer(Featurizer):
    """Features of 2D slices from a TorchScript detector (the official Inception or VGG16).

    Slices go to the detector as uint8 NCHW tensors with the grey channel repeated to 3 (what the official metrics
    feed it for grayscale images), in chunks of `batch_slices`.
    """

    def __init__(self, detector_url: str, detector_kwargs: dict, strategy: str, device: torch.device,
                 batch_slices: int = 64, what: str = 'detector') -> None:
        strategy_planes(strategy)
        self.detector_url = detector_url
        self.detector_kwargs = dict(detector_kwargs)
        self.strategy = strategy
        self.device = device
        self.batch_slices = batch_slices
        self.what = what
        self.detector = get_detector(detector_url, device, what)
        self.detector_file = fetch_file(detector_url, what)
        self.name = detector_name(detector_url)

    def views(self, num_channels: int) -> list[View]:
        return [(plane, c) for c in range(num_channels) for plane in strategy_planes(self.strategy)]

    def rows_per_volume(self, view: View, img_shape: Sequence[int]) -> int:
        return slices_per_volume(self.strategy, img_shape)

    def cache_key(self) -> dict:
        return dict(detector_kwargs=self.detector_kwargs, slices=self.strategy, images='uint8, grey repeated to RGB',
                    planes='coronal and sagittal upright (head at the top)')

    def input_files(self) -> dict[str, str]:
        return {self.name: self.detector_file}

    def features_2d(self, images: torch.Tensor) -> torch.Tensor:
        """[M, h, w] uint8-range slices -> [M, F]."""
        # Rounding matters only for uint16 reals (value * 255 / 65535); it is what the 8-bit cast of the generated
        # volumes does to the same [-1, 1] value, so reals and fakes reach the detector quantised alike.
        grey = images.round().clamp(0, 255).to(torch.uint8)
        rgb = grey[:, None].expand(-1, 3, -1, -1)  # [M, h, w] -> [M, 3, h, w]: grey repeated to RGB.
        try:
            chunks = [self.detector(rgb[i:i + self.batch_slices].contiguous(), **self.detector_kwargs)
                      for i in range(0, rgb.shape[0], self.batch_slices)]
        except torch.jit.Error as e:  # A TorchScript file that is no image detector; its last line says why.
            reason = [line for line in str(e).splitlines() if line.strip()][-1:] or ['']
            raise ValueError(f'{self.what}: {self.detector_url} fails on uint8 [N, 3, H, W] images with '
                             f'{self.detector_kwargs} ({dnnlib.util.one_line(reason[0], 200)})') from None
        return torch.cat(chunks).float()

    def __call__(self, volumes: torch.Tensor) -> dict[View, torch.Tensor]:
        features = {}
        for c in range(volumes.shape[1]):
            for plane, s in extract_slices(volumes, self.strategy, c).items():
                N, S = s.shape[:2]
                f = self.features_2d(s.flatten(0, 1))  # [N * S, h, w] -> [N * S, F]
                features[(plane, c)] = f.reshape(N, S, -1)
        return features


def view_keys(views: Sequence[View], channel_names: Sequence[str]) -> dict[View, str]:
    """Result-key suffixes: the plane when there are several planes, the channel name when several channels."""
    planes = {p for p, _ in views}
    channels = {c for _, c in views}
    keys = {}
    for plane, c in views:
        parts = [plane] if len(planes) > 1 else []
        parts += [channel_names[c]] if len(channels) > 1 else []
        keys[(plane, c)] = '_'.join(parts)
    return keys


def combine_views(values: dict[View, float], channel_names: Sequence[str], prefix: str = '') -> dict[str, float]:
    """{view: value} -> {suffix: value}: the mean over views under `prefix` ('' = the metric's own name), each view,
    and with several planes and several channels also the mean of each plane and of each channel (one value per
    sequence, as with a single plane)."""
    def key(*parts: str) -> str:
        return '_'.join(p for p in (prefix, *parts) if p)
    out = {prefix: float(np.mean(list(values.values())))}
    if len(values) > 1:
        for view, suffix in view_keys(list(values), channel_names).items():
            out[key(suffix)] = float(values[view])
    planes = list(dict.fromkeys(p for p, _ in values))
    channels = list(dict.fromkeys(c for _, c in values))
    if len(planes) > 1 and len(channels) > 1:
        for plane in planes:
            out[key(plane)] = float(np.mean([v for (p, _), v in values.items() if p == plane]))
        for c in channels:
            out[key(channel_names[c])] = float(np.mean([v for (_, ch), v in values.items() if ch == c]))
    return out


def channel_names_of(dataset: Any) -> list[str]:
    """Short names of the dataset's channels for result keys ('t2w', 'adc', ... or 'ch0', 'ch1', ...)."""
    names = list(getattr(dataset, 'channel_names', None) or [])
    clean = [re.sub(r'[^0-9A-Za-z]+', '', str(n)).lower() for n in names]
    if len(clean) != dataset.num_channels or len(set(clean)) != len(clean) or not all(clean):
        clean = [f'ch{c}' for c in range(dataset.num_channels)]
    return clean

#----------------------------------------------------------------------------
# Datasets and generators.


def open_dataset(opts: MetricOptions) -> Any:
    """The real dataset, always complete (max_size is dropped: metrics compare against every volume)."""
    kwargs = dnnlib.EasyDict(opts.dataset_kwargs)
    kwargs.pop('load_seg', None)  # Metrics read the images only.
    if 'class_name' not in kwargs:
        raise ValueError('dataset_kwargs needs a class_name (e.g. training.dataset.VolumeFolderDataset) and a path')
    kwargs.max_size = None
    return dnnlib.util.construct_class_by_name(**kwargs)


def _collate(batch: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    # float32 here, in the worker: torch has few uint16 kernels.
    volumes = torch.from_numpy(np.stack([v for v, _ in batch]).astype(np.float32))  # [N, C, D, H, W]
    labels = torch.from_numpy(np.stack([lbl for _, lbl in batch]).astype(np.float32))
    return volumes, labels


def iterate_real_volumes(opts: MetricOptions, dataset: Any, items: Sequence[int], batch_size: int = 8,
                         num_workers: int | None = None) -> Iterator[torch.Tensor]:
    """Batches of real volumes [n, C, D, H, W], uint8 range, on opts.device."""
    if num_workers is None:
        num_workers = 3 if opts.device.type == 'cuda' else 0
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, list(items)), batch_size=batch_size,
                                         num_workers=num_workers, collate_fn=_collate,
                                         pin_memory=opts.device.type == 'cuda')
    for volumes, _labels in loader:
        yield real_to_uint8_range(volumes.to(opts.device, non_blocking=True), dataset.max_value)


def rank_items(num_items: int, num_gpus: int, rank: int) -> list[int]:
    """Items dealt round-robin; every rank gets the same count (the last ranks wrap around to item 0...)."""
    return [(i * num_gpus + rank) % num_items for i in range((num_items - 1) // num_gpus + 1)]


@contextlib.contextmanager
def seeded_rng(opts: MetricOptions, stream: int = 0) -> Iterator[None]:
    """Seed torch's global RNG (this rank's stream) for the block, then restore it: the training loop that
    called the metric keeps its own random state, and the generator's noise follows opts.seed too."""
    devices = [opts.device.index if opts.device.index is not None else torch.cuda.current_device()] \
        if opts.device.type == 'cuda' else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed((opts.seed * 1000 + stream) * opts.num_gpus + opts.rank)
        yield


def item_generator(seed: int, stream: int, item: int) -> torch.Generator:
    """A CPU generator for one generated item: its latent and label depend only on (seed, stream, item), so any
    number of processes, dealing the items among them, draws the same ones as a single process."""
    state = np.random.SeedSequence([seed, stream, item]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def image_channels(G: torch.nn.Module) -> int:
    """The channels of G's volumes that are image (the rest, if any, are a one-hot label map)."""
    info = getattr(G, 'volume_info', None)
    return len(info.channels) if info is not None and info.label_values else int(G.img_channels)


def prepare_generator(opts: MetricOptions, dataset: Any) -> torch.nn.Module:
    """An eval-mode copy of opts.G on opts.device, checked against the dataset's channels and shape."""
    if opts.G is None:
        raise ValueError('this metric needs a generator (MetricOptions.G)')
    G = copy.deepcopy(opts.G).eval().requires_grad_(False).to(opts.device)
    if image_channels(G) != dataset.num_channels:
        raise ValueError(f'G makes {image_channels(G)}-channel volumes; the dataset holds {dataset.num_channels}')
    if tuple(G.img_shape) != tuple(dataset.img_shape):
        raise ValueError(f'G makes volumes of shape (D, H, W) = {tuple(G.img_shape)}; '
                         f'the dataset holds {tuple(dataset.img_shape)}')
    return G


def _label_of(dataset: Any, idx: int, c_dim: int) -> np.ndarray:
    label = dataset.get_label(idx) if hasattr(dataset, 'get_label') else dataset[idx][1]
    label = np.asarray(label, dtype=np.float32).reshape(-1)
    if label.shape[0] != c_dim:
        raise ValueError(f'the dataset\'s labels have {label.shape[0]} entries; G expects c_dim={c_dim} '
                         f'(use_labels in the dataset options?)')
    return label


def volume_sampler(opts: MetricOptions, G: torch.nn.Module, dataset: Any,
                   stream: int = 0) -> Callable[[Sequence[int]], torch.Tensor]:
    """sample(items) -> the generated volumes with these item numbers, [len(items), C, D, H, W] in the uint8 range.

    Item i gets z ~ N(0, I) and the label of a uniformly drawn dataset item, both from item_generator(seed, stream,
    i). The generator's own noise comes from torch's global RNG: call inside seeded_rng.
    """
    def sample(items: Sequence[int]) -> torch.Tensor:
        z, c = [], []
        for item in items:
            gen = item_generator(opts.seed, stream, int(item))
            z.append(torch.randn([G.z_dim], generator=gen))
            if G.c_dim:
                c.append(_label_of(dataset, int(torch.randint(len(dataset), [], generator=gen)), G.c_dim))
        labels = np.stack(c) if G.c_dim else np.zeros([len(items), 0], np.float32)
        with torch.no_grad():
            x = G(torch.stack(z).to(opts.device), torch.from_numpy(labels).to(opts.device), **opts.G_kwargs)
        return fake_to_uint8_range(x[:, :image_channels(G)])  # Metrics measure the image, not a label map.
    return sample


def progress_bar(opts: MetricOptions, total: int, desc: str) -> tqdm.tqdm:
    # leave=True: closing a bar ends its line, so what is printed next (the JSON result) starts on a line of its
    # own, also in a log that holds both stdout and stderr.
    return tqdm.tqdm(total=total, desc=desc, unit='vol', leave=True, dynamic_ncols=True,
                     disable=True if opts.rank != 0 or opts.progress is False else
                     None if opts.progress is None else False)  # tqdm's None: on a terminal only.

#----------------------------------------------------------------------------
# Statistics of real and generated volumes.


def _new_stats(views: list[View], max_rows: dict[View, int], stats_kwargs: dict) -> dict[View, FeatureStats]:
    return {v: FeatureStats(max_items=max_rows[v], **stats_kwargs) for v in views}


def dataset_file(opts: MetricOptions) -> dict[str, str]:
    """{'dataset': path} for a dataset on disk, else {} (e.g. a dataset class that makes its volumes)."""
    path = opts.dataset_kwargs.get('path')
    return {'dataset': path} if isinstance(path, str) and os.path.exists(path) else {}


def record_inputs(opts: MetricOptions, files: dict[str, str]) -> dict[str, str]:
    """Note the content identity of each file in opts.inputs; returns {name: sha256}."""
    for name, file in files.items():
        opts.inputs[name] = dict(dnnlib.util.content_identity(file), path=os.path.abspath(file))
    return {name: opts.inputs[name]['sha256'] for name in files}


def _cache_path(opts: MetricOptions, dataset: Any, featurizer: Featurizer, stats_kwargs: dict) -> str:
    # Keyed by what the files hold, not where they are: a file replaced at the same path gets new statistics, a
    # moved one keeps its own. Options that cannot change the features (metrics read every volume) stay out.
    ignored = ('path', 'max_size', 'random_seed', 'use_labels')
    dataset_kwargs = {k: v for k, v in opts.dataset_kwargs.items() if k not in ignored}
    contents = record_inputs(opts, {**featurizer.input_files(), **dataset_file(opts)})
    key = dict(dataset_kwargs=dataset_kwargs, contents=contents,
               featurizer=featurizer.cache_key(), stats_kwargs=stats_kwargs)
    md5 = hashlib.md5(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    return dnnlib.make_cache_dir_path('gan-metrics', f'{dataset.name}-{featurizer.name}-{md5}.npz')


def save_stats(path: str, stats: dict[View, FeatureStats]) -> None:
    """Write view statistics to an .npz atomically (a reader never sees half a file)."""
    arrays = {'views': np.array([f'{p}:{c}' for p, c in stats])}
    for i, s in enumerate(stats.values()):
        arrays.update({f'{i}.{k}': v for k, v in s.state_dict().items()})
    dnnlib.util.atomic_write(path, lambda f: np.savez(f, **arrays))


def load_stats(path: str, device: torch.device | str = 'cpu') -> dict[View, FeatureStats]:
    with np.load(path, allow_pickle=False) as data:
        stats = {}
        for i, name in enumerate(data['views']):
            plane, c = str(name).rsplit(':', 1)
            state = {k.split('.', 1)[1]: data[k] for k in data.files if k.startswith(f'{i}.')}
            stats[(plane, int(c))] = FeatureStats.from_state_dict(state, device)
    return stats


def compute_feature_stats_for_dataset(opts: MetricOptions, featurizer: Featurizer, max_items: int | None = None,
                                      batch_size: int = 8, num_workers: int | None = None,
                                      **stats_kwargs) -> dict[View, FeatureStats]:
    """Statistics of the real volumes per view (at most max_items rows each), read from the cache if there.

    Volumes are dealt round-robin to the ranks; every rank ends with the statistics of all of them.
    """
    dataset = open_dataset(opts)
    cache_file = _cache_path(opts, dataset, featurizer, dict(stats_kwargs, max_items=max_items))
    if opts.cache and broadcast(opts.rank == 0 and os.path.isfile(cache_file), opts.num_gpus):
        return load_stats(cache_file, opts.device)

    num_items = len(dataset)
    if num_items == 0:
        raise ValueError('the dataset holds no volumes')
    views = featurizer.views(dataset.num_channels)
    max_rows = {v: num_items * featurizer.rows_per_volume(v, dataset.img_shape) for v in views}
    if max_items is not None:
        max_rows = {v: min(n, max_items) for v, n in max_rows.items()}
    stats = _new_stats(views, max_rows, stats_kwargs)
    items = rank_items(num_items, opts.num_gpus, opts.rank)
    with progress_bar(opts, num_items, f'reals ({featurizer.name})') as bar:
        for volumes in iterate_real_volumes(opts, dataset, items, batch_size, num_workers):
            for view, f in featurizer(volumes).items():
                stats[view].append_torch(f, opts.num_gpus, opts.rank)
            bar.update(min(volumes.shape[0] * opts.num_gpus, num_items - bar.n))
            if all(s.is_full() for s in stats.values()):
                break

    if opts.cache and opts.rank == 0:
        save_stats(cache_file, stats)
    if opts.num_gpus > 1:
        distributed.barrier()  # Keep the ranks together while rank 0 writes the cache.
    return stats


def compute_feature_stats_for_generator(opts: MetricOptions, featurizer: Featurizer, num_gen: int,
                                        batch_gen: int = 4, **stats_kwargs) -> dict[View, FeatureStats]:
    """Statistics of num_gen generated volumes per view (each rank generates its share of the items; the result
    does not depend on the number of ranks, up to the generator's noise and rounding)."""
    if num_gen < 1:
        raise ValueError(f'num_gen must be positive, got {num_gen}')
    dataset = open_dataset(opts)
    G = prepare_generator(opts, dataset)
    views = featurizer.views(image_channels(G))
    stats = _new_stats(views, {v: num_gen * featurizer.rows_per_volume(v, G.img_shape) for v in views}, stats_kwargs)
    with seeded_rng(opts), progress_bar(opts, num_gen, f'generated ({featurizer.name})') as bar:
        sample = volume_sampler(opts, G, dataset)
        done = 0
        while done < num_gen:
            n = min(batch_gen, -(-(num_gen - done) // opts.num_gpus))  # The last round makes only what is left.
            # Items done + rank, done + rank + num_gpus, ...: the interleaved gather restores their order, and rows
            # past num_gen (the last round's spill) fall beyond max_items.
            items = [done + i * opts.num_gpus + opts.rank for i in range(n)]
            for view, f in featurizer(sample(items)).items():
                stats[view].append_torch(f, opts.num_gpus, opts.rank)
            done += n * opts.num_gpus
            bar.update(min(n * opts.num_gpus, num_gen - bar.n))
    return stats

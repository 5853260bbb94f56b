# SPDX-License-Identifier: Apache-2.0
"""Pack medical volumes into a training dataset for stylegan2-ada-3d.

Each volume goes through: read -> reorient (permute and flip its axes towards LPS: x to the patient's left, y
posterior, z superior) -> resample to --spacing -> centred crop/pad to --fov -> resize to --size -> clip to the
--clip percentiles -> scale to --dtype. The geometric steps are composed into one resampling with the --interp
interpolator (and Gaussian anti-aliasing when down-sampling), so every voxel is interpolated once. With --spacing
and --size but no --fov, the box is size x spacing.

Oblique scans: by default (--orient=source) a volume keeps its own axes after the permutation, so an oblique scan
stays tilted in the world, and dataset.json records its direction cosines and the world position of its centre;
generated volumes are written with them and overlay the real scans in a viewer. --orient=lps resamples each scan
physically onto the world's L, P, S axes instead (the same box, centre and spacing), so every volume is axis-aligned.

The source is a folder (searched recursively), a .zip of one, or a single file: a volume file packs as a
one-volume dataset, and one DICOM file stands for the series in its folder that it belongs to.

The output is a packed dataset (its format: volumes/packed.py): a zip (or folder) of uncompressed .npy volumes
[C, D, H, W] named 00000/vol00000000.npy, plus dataset.json with the shape, the volume record (spacing, direction,
centre, intensity mapping, channel names),
the class labels, and each volume's source and grid. It is written to a temporary name next to --dest, checked
and renamed at the end, so a failed or interrupted run leaves nothing.

Examples:

\b
  # 200 built-in phantoms at 64x64x16 (x, y, z):
  python dataset_tool.py --source=phantom:200 --dest=~/datasets/phantoms.zip --size=64x64x16
\b
  # NIfTI/NRRD/MHA/DICOM volumes found under a folder, at 0.5 x 0.5 x 3 mm in a 128 x 128 x 72 mm box:
  python dataset_tool.py --source=~/prostate --dest=~/datasets/prostate.zip \\
      --spacing=0.5,0.5,3 --fov=128,128,72 --size=256x256x24 --labels=~/prostate/labels.csv
\b
  # Three MR sequences per case as one 3-channel volume, aligned on the T2W grid:
  python dataset_tool.py --source=~/picai --dest=~/datasets/picai.zip --size=256x256x24 \\
      --channels='*_t2w.mha,*_adc.mha,*_hbv.mha'
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
import threading
from typing import Iterator

import click
import numpy as np
import SimpleITK as sitk
import tqdm

import dnnlib
from volumes.contract import (INTERPOLATIONS, LPS_DIRECTION, ORIENTS, IntensityMapping, VolumeInfo, dhw_to_xyz,
                              format_size, parse_size, parse_xyz, xyz_to_dhw)
from training import volume_shape
from volumes import packed, packing, phantom, volume_io
from volumes.sources import (Case, PackError, attach_label_maps, case_label, channel_names, folder_cases,
                             is_single_file_source, load_label_names, load_labels, parse_phantom_source,
                             phantom_cases, sequence_cases, single_file_cases, source_root, unmatched_labels)

DTYPES = ('uint8', 'uint16')
ON_ERROR = ('fail', 'skip', 'stop')

#----------------------------------------------------------------------------
# One case: read, reorient, resample, clip, scale.


@dataclasses.dataclass(frozen=True)
class PackOptions:
    """Everything that decides how the cases are packed (the command line's options, parsed)."""
    grid: packing.GridOptions = packing.GridOptions()
    intensity: IntensityMapping = IntensityMapping()  # The --clip percentiles (or a window) and --dtype.
    labels: str | None = None                          # A CSV or JSON file of class labels.
    class_labels: dict | None = None                   # Class labels by case key, when no file gives them.
    seg: str | None = None                             # The label maps' pattern (or 'phantom').
    label_names: dict[int, str] | None = None          # Names of the label values (--seg-names).
    recorded_intensity: IntensityMapping | None = None  # What dataset.json says, when not `intensity` (repacking).
    recorded: dict | None = None  # Repacking: channel and label names, channels_are_sequences of the old dataset.
    max_volumes: int | None = None
    on_error: str = 'fail'
    channels: list[str] | None = None                  # One glob per sequence.
    progress: bool = False


def read_item(item: tuple[str, object], grid: packing.GridOptions, labels: bool = False) -> sitk.Image:
    """Read one channel source (or, with labels, a label map) as a checked 3D image in its file orientation."""
    kind, what = item
    if kind == 'file':
        return volume_io.read_image(what)
    if kind == 'dicom':
        return volume_io.read_dicom_series(what)
    if kind == 'packed':
        return packed_image(*what, labels=labels)
    # Phantoms are drawn at the requested size directly, which saves a resampling when only --size is given.
    volume, mask, spacing = phantom.make_labelled_phantom(int(what), grid.size or phantom.DEFAULT_SIZE_XYZ)
    return volume_io.array_to_image(mask if labels else volume, spacing, LPS_DIRECTION)


def packed_image(dataset: packed.PackedDataset, index: int, channel: int, labels: bool = False) -> sitk.Image:
    """One channel (or the label map) of a volume of a packed dataset, placed in the world as it was packed."""
    centre, direction = dataset.case_geometry(index)
    info = dataclasses.replace(dataset.volume_info, centre=centre, direction=direction)
    array = dataset.label_map(index) if labels else dataset.volume(index)[channel].astype(np.float32)  # [D, H, W]
    return volume_io.array_to_image(array, info.spacing, info.direction, info.origin(array.shape))


def packed_cases(source: str, options: PackOptions) -> tuple[list[Case], PackOptions]:
    """The volumes of a dataset packed earlier as cases, and the options that keep its intensity mapping, channel
    names, class labels and label maps (repacking re-sizes or re-crops without the originals)."""
    for option, value in [('--channels', options.channels), ('--labels', options.labels), ('--seg', options.seg),
                          ('--seg-names', options.label_names)]:
        if value is not None:
            raise PackError(f'--source {source} is a packed dataset: it keeps its own channels, class labels and label '
                            f'maps; leave {option} out')
    try:
        dataset = packed.PackedDataset(source)
        if dataset.has_label_maps:
            dataset.check_label_maps()
        class_labels = dataset.class_labels()
    except (OSError, ValueError) as e:
        raise PackError(f'--source: {e}') from None
    has_maps, info = dataset.has_label_maps, dataset.volume_info
    cases = [Case(name, [('packed', (dataset, i, c)) for c in range(dataset.num_channels)], (f'#{i}',),
                  ('packed', (dataset, i, 0)) if has_maps else None) for i, name in enumerate(dataset.case_names)]
    stored = IntensityMapping('window', 0, info.max_value, info.dtype)  # Stored values pass through unchanged.
    options = dataclasses.replace(options, intensity=stored, recorded_intensity=info.intensity,
                                  recorded=dict(channels=list(info.channels), label_names=info.label_names,
                                                sequences=dataset.channels_are_sequences),
                                  seg='packed' if has_maps else None, labels=None)
    if class_labels is not None:
        options = dataclasses.replace(options, class_labels={f'#{i}': label.tolist()
                                                             for i, label in enumerate(class_labels)})
    return cases, options


def process_case(case: Case, options: PackOptions) -> packing.PackedCase:
    """The stored volume [C, D, H, W] of a case, its label map and their grid (volumes/packing.py: every channel on
    the first channel's grid, each mapped to stored integers on its own; the label map label-safely)."""
    images = [read_item(item, options.grid) for item in case.items]
    names = [str(item[1]) if item[0] == 'file' else case.name for item in case.items]
    labels = read_item(case.seg, options.grid, labels=True) if case.seg is not None else None
    labels_name = str(case.seg[1]) if case.seg is not None and case.seg[0] == 'file' else f'{case.name} (label map)'
    return packing.pack_images(images, options.grid, options.intensity, names, labels, labels_name)

#----------------------------------------------------------------------------
# Sizes train.py can train (training/volume_shape.py's automatic block schedule decides; asked, not restated).


def _trainable(shape_dhw: tuple[int, int, int]) -> bool:
    try:
        volume_shape.make_schedule(shape_dhw)
    except ValueError:
        return False
    return True


def _axis_trainable(size: int) -> bool:
    """Whether an axis of this size fits the schedule beside a larger one (a 4x4 plane: 3 is allowed there)."""
    return _trainable((size, 4, 4))


def _nearest_axis_sizes(size: int) -> tuple[int | None, int]:
    """(the nearest trainable axis size <= size or None, the nearest >= size; 3 goes up to 4, which may be largest)."""
    below = next((s for s in range(size, 2, -1) if _axis_trainable(s)), None)
    above = next(s for s in range(size if size != 3 else 4, 2 * size + 8) if _axis_trainable(s))
    return below, above


def nearest_trainable_sizes(size_xyz: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """The trainable sizes (x, y, z) nearest to size_xyz: every axis rounded down, and every axis rounded up."""
    options = [_nearest_axis_sizes(s) for s in size_xyz]
    picks = [tuple(o[0] for o in options), tuple(o[1] for o in options)]
    picks = [(4, *p[1:]) if None not in p and max(p) == 3 else p for p in picks]  # 3 is never the largest axis.
    return [p for p in dict.fromkeys(picks) if None not in p and _trainable(xyz_to_dhw(p))]


def untrainable_size_warning(size_xyz: tuple[int, int, int]) -> str | None:
    """One line saying that train.py will refuse volumes of size_xyz, why, and the nearest sizes it trains; None
    when it trains them."""
    if _trainable(xyz_to_dhw(size_xyz)):
        return None
    bad = [f'{axis}={s}' for axis, s in zip('xyz', size_xyz) if not _axis_trainable(s)]
    listed = ' and '.join([', '.join(bad[:-1]), bad[-1]] if len(bad) > 1 else bad)
    why = f'{listed} {"is" if len(bad) == 1 else "are"} not' if bad else 'the largest axis is 3'
    nearest = ' or '.join(format_size(xyz_to_dhw(p)) for p in nearest_trainable_sizes(size_xyz))
    return (f'train.py will refuse {format_size(xyz_to_dhw(size_xyz))} volumes: each axis must be b x 2^k with b in '
            f'4..7 (or 3, if not the largest; training/volume_shape.py), and {why}. Nearest trainable sizes: '
            f'{nearest} (or give train.py an explicit --base)')

#----------------------------------------------------------------------------
# The whole run.


@dataclasses.dataclass
class PackSummary:
    """What a run did."""
    dest: str
    written: int = 0
    shape: list[int] | None = None                                 # [C, D, H, W]
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (name, reason)
    warnings: list[str] = dataclasses.field(default_factory=list)

    def report(self) -> str:
        """A human-readable summary."""
        size = f'{format_size(self.shape)} with {self.shape[0]} channel(s)' if self.shape else 'no size'
        lines = [f'Wrote {self.written} volume{"s" * (self.written != 1)} of {size} to {self.dest}; skipped '
                 f'{len(self.skipped)}.']
        lines += [f'  skipped {name}: {reason}' for name, reason in self.skipped]
        lines += [f'  warning: {w}' for w in self.warnings]
        return '\n'.join(lines)


class FailedInputs(PackError):
    """Some inputs could not be packed and skipping was not asked for; nothing was written."""

    def __init__(self, summary: PackSummary) -> None:
        self.summary = summary
        failed, total = len(summary.skipped), summary.written + len(summary.skipped)
        names = ', '.join(name for name, _ in summary.skipped[:3]) + (f' and {failed - 3} more' if failed > 3 else '')
        advice = f'Fix them, or pass --on-error=skip to pack the other {summary.written}.' if summary.written else \
            'Fix them.'
        super().__init__(f'{failed} of {total} inputs could not be packed: {names} (reasons listed above); nothing '
                         f'was written. {advice}')

    def details(self) -> str:
        return '\n'.join(f'  failed {name}: {reason}' for name, reason in self.summary.skipped)


def _find_cases(source: str, root: str | None, options: PackOptions) -> tuple[list[Case], list, PackOptions]:
    if packed.is_packed(source):
        cases, options = packed_cases(source, options)
        return cases, [], options
    ph = parse_phantom_source(source)
    if ph is not None:
        if options.channels:
            raise PackError('--channels does not apply to a phantom source')
        cases, problems = phantom_cases(*ph), []
    elif is_single_file_source(source):
        if options.channels:
            raise PackError(f'--channels groups the files of a folder; --source {source} is one file (give its '
                            f'folder)')
        cases, problems = single_file_cases(source), []
    else:
        cases, problems = sequence_cases(root, options.channels) if options.channels else folder_cases(root)
    if options.seg is not None:
        cases, missing = attach_label_maps(cases, root, options.seg)
        problems += missing
    if not cases and not problems:
        kinds = 'files matching --channels' if options.channels else 'volumes (NIfTI, NRRD, MHA/MHD, .npy or DICOM)'
        raise PackError(f'--source {source}: no {kinds} found')
    return cases, problems, options


def pack_dataset(source: str, dest: str, size: tuple[int, int, int] | None = None,
                 spacing: tuple[float, float, float] | None = None, fov: tuple[float, float, float] | None = None,
                 orient: str = 'source', interpolation: str = 'linear', clip: tuple[float, float] | None = None,
                 window: tuple[float, float] | None = None, dtype: str | None = None, labels: str | None = None,
                 seg: str | None = None, seg_names: str | None = None, seg_interpolation: str = 'nearest',
                 crop: str = 'none', max_volumes: int | None = None, on_error: str = 'fail',
                 channels: list[str] | None = None, progress: bool = False, overwrite: bool = False) -> PackSummary:
    """Pack a source into a dataset zip or folder (see the module docstring for the steps).

    Args:
        source: A folder (searched recursively), a .zip of such files, one volume file (a DICOM file stands for
            the series in its folder that it belongs to), or 'phantom:N[:SEED]'.
        dest: A .zip path, or an empty or non-existent folder.
        size: Output size (x, y, z); None: all volumes must already share a size.
        spacing: Resample to this spacing (x, y, z) mm; with size and no fov, the box is size * spacing.
        fov: Centred physical crop/pad (x, y, z) mm.
        orient: 'source' (keep each scan's axes, permuted and flipped towards LPS, and record their direction)
            or 'lps' (resample physically onto the world's axes).
        interpolation: Image interpolator: 'linear', 'bspline' or 'nearest'.
        clip: Lower and upper intensity percentiles, per volume and channel; None: 0.5 and 99.5.
        window: A fixed intensity window (lo, hi) in source units (e.g. Hounsfield units) instead of the
            percentiles: invertible, so generated volumes can be written back in those units.
        dtype: 'uint8' or 'uint16'; None: uint8.
        labels: A CSV or JSON label file, or None.
        seg: A pattern with one '*' (the case id) naming each volume's label map, or 'phantom' (the phantom's
            organ mask).
        seg_names: A JSON file {"1": "name", ...} naming the label values; default: label1, label2, ...
        seg_interpolation: 'nearest' or 'gaussian' (ITK's label-Gaussian) for the label maps.
        crop: Centre the box on 'none' (the volume), 'mask' (the label map's foreground) or 'body'.
        max_volumes: Stop after writing this many volumes.
        on_error: For a volume that cannot be packed: 'fail' (go on checking the others, then raise PackError
            naming every failed input and write nothing), 'skip' (leave it out and keep the archive of the others)
            or 'stop' (raise PackError at once).
        channels: Glob patterns with one '*' each, one per sequence; the '*' part is the case id.
        progress: Show a progress bar.
        overwrite: Replace an existing dest (else an existing .zip or a non-empty folder is an error).

    Returns:
        The summary. Raises PackError when nothing could be written, or as on_error says.
    """
    if packed.is_packed(source) and (clip, window, dtype) != (None, None, None):
        raise PackError(f'--source {source} is a packed dataset: it keeps its intensity mapping and stored type; '
                        f'leave --clip, --window and --dtype out')
    intensity = IntensityMapping('window', *window, dtype or 'uint8') if window is not None else \
        IntensityMapping('percentile', *(clip or (0.5, 99.5)), dtype or 'uint8')
    options = PackOptions(grid=packing.GridOptions(size, spacing, fov, orient, interpolation, crop, seg_interpolation),
                          intensity=intensity, labels=labels, seg=seg,
                          label_names=load_label_names(seg_names) if seg_names else None, max_volumes=max_volumes,
                          on_error=on_error, channels=channels, progress=progress)
    if crop == 'mask' and seg is None:
        raise PackError('--crop=mask centres the box on each label map: give --seg')
    if seg_names is not None and seg is None:
        raise PackError('--seg-names names the values of label maps: give --seg')
    ph = parse_phantom_source(source)
    repack = packed.is_packed(source)
    writer = packed.PackedWriter(dest, overwrite=overwrite)
    try:
        with (contextlib.nullcontext(None) if ph or repack else source_root(source)) as root:
            summary = _pack(source, root, writer, options)
        if summary.skipped and on_error == 'fail':
            raise FailedInputs(summary)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    size_warning = untrainable_size_warning(size or dhw_to_xyz(summary.shape[1:]))
    if size_warning is not None:
        summary.warnings.insert(0, size_warning)
    return summary


def _pack(source: str, root: str | None, writer: packed.PackedWriter, options: PackOptions) -> PackSummary:
    summary = PackSummary(dest=writer.dest)
    cases, problems, options = _find_cases(source, root, options)
    label_map = load_labels(options.labels) if options.labels else options.class_labels

    def fail(name: str, reason: str) -> None:
        if root and root != source and not is_single_file_source(source):  # A zip's temporary extraction.
            reason = reason.replace(root, source.rstrip('/\\'))
        if options.on_error == 'stop':
            raise PackError(reason if name in reason else f'{name}: {reason}')
        summary.skipped.append((name, reason))

    if options.labels is not None:
        _check_label_names(label_map, options.labels, cases, options.on_error, summary)
    for name, reason in problems:
        fail(name, reason)

    done = []  # (file name, case name, class label, grid) of every volume written.
    label_values: set[int] = set()  # Every label value found in the label maps.
    for case in tqdm.tqdm(cases, desc='Packing', unit='vol', disable=None if options.progress else True):
        if options.max_volumes is not None and summary.written >= options.max_volumes:
            break
        label = case_label(case, label_map) if label_map is not None else None
        if label_map is not None and label is None:
            fail(case.name, f'no label for {case.name} in {options.labels}')
            continue
        try:
            result = process_case(case, options)
        except (ValueError, OSError, RuntimeError, MemoryError) as e:
            fail(case.name, volume_io.sitk_error_message(e) if isinstance(e, RuntimeError) else str(e))
            continue
        if summary.shape is not None and list(result.volume.shape) != summary.shape:
            fail(case.name, f'{case.name} has size {format_size(result.volume.shape)}, the first volume '
                 f'{format_size(summary.shape)}; pass --size to resize every volume (or --spacing with --size or '
                 f'--fov for a common box)')
            continue
        if result.labels is not None:
            values = {int(v) for v in np.unique(result.labels)}
            unnamed = sorted(values - {0} - set(options.label_names or values))
            if unnamed:
                fail(case.name, f'{case.seg[1]} holds label value(s) {unnamed} that --seg-names does not name')
                continue
            label_values |= values
        summary.shape = list(result.volume.shape)
        fname = writer.add_volume(summary.written, result.volume, result.labels)
        done.append((fname, case.name, label, result.grid))
        summary.written += 1

    if summary.written == 0 and summary.skipped and options.on_error == 'fail':
        raise FailedInputs(summary)  # Every input failed: name them all, as when only some do.
    if summary.written == 0:
        raise PackError(f'no volumes were written from {source} ({len(summary.skipped)} skipped'
                        + (f', e.g. {summary.skipped[0][0]}: {summary.skipped[0][1]})' if summary.skipped else ')'))
    if options.seg is not None and not label_values - {0}:
        raise PackError('the label maps hold nothing but the background 0; nothing to learn labels from')
    writer.add_record(_dataset_info(summary, done, options, label_values))
    return summary


def _check_label_names(label_map: dict, labels_path: str, cases: list[Case], on_error: str,
                       summary: PackSummary) -> None:
    # A label for a volume that is not there is usually a typo or a wrong --source: stop or warn.
    unmatched = unmatched_labels(label_map, cases)
    if unmatched:
        message = f'--labels {labels_path} names {len(unmatched)} volume(s) not in the source, e.g. "{unmatched[0]}"'
        if on_error == 'stop':
            raise PackError(message)
        summary.warnings.append(message)


def _dataset_info(summary: PackSummary, done: list, options: PackOptions, label_values: set[int]) -> dict:
    """dataset.json: the shape, the volume record (volumes.contract.VolumeInfo) and, per volume, its source, class
    label and grid (centre and direction in world space)."""
    grids = [grid for *_, grid in done]
    spacings = np.asarray([grid.spacing for grid in grids])
    median = np.median(spacings, axis=0)
    spread = np.max(np.abs(spacings / median - 1))
    if spread > 0.01:
        summary.warnings.append(f'voxel spacings differ by up to {spread:.0%} between volumes; dataset.json '
                                f'records the median {np.round(median, 4).tolist()} mm (use --spacing or --fov)')
    direction, centre = packing.representative_geometry(grids)
    names = channel_names(options.channels) if options.channels else ['image']
    label_names = None
    if options.seg is not None:
        label_names = options.label_names or ({v: f'label{v}' for v in sorted(label_values - {0})} if
                                               options.seg != 'phantom' else phantom.LABEL_NAMES)
    sequences = bool(options.channels) and len(options.channels) > 1
    if options.recorded is not None:  # Repacking keeps the names of the dataset it reads.
        names, label_names, sequences = (options.recorded[k] for k in ('channels', 'label_names', 'sequences'))
    info = VolumeInfo(spacing=tuple(round(float(s), 6) for s in median), direction=direction, centre=centre,
                      intensity=options.recorded_intensity or options.intensity, channels=names,
                      label_names=label_names,
                      orient=options.grid.orient, interpolation=options.grid.interpolation)
    labels = [[fname, label] for fname, _, label, _ in done]
    return {
        'shape': summary.shape,
        'volume_info': info.to_dict(),
        'channels_are_sequences': sequences,
        'labels': labels if all(label is not None for _, label in labels) else None,
        'sources': [[fname, name] for fname, name, _, _ in done],
        'grids': [[fname, list(grid.centre), list(grid.direction)] for fname, _, _, grid in done],
    }

#----------------------------------------------------------------------------
# Command line.


def _size_option(value: str | None) -> tuple[int, int, int] | None:
    """--size 'XxYxZ' -> (x, y, z); every axis at least 2 (a size of 1 would make a 2D image)."""
    if value is None:
        return None
    try:
        shape = parse_size(value)
    except ValueError:
        shape = (0, 0, 0)
    if min(shape) < 2:
        raise click.BadParameter(f'"{value}": expected XxYxZ integers >= 2, e.g. 256x256x24', param_hint='--size')
    return dhw_to_xyz(shape)


def _xyz_option(value: str | None, param: str) -> tuple[float, float, float] | None:
    """--spacing or --fov 'a,b,c' (or one number) -> (x, y, z) mm."""
    if value is None:
        return None
    try:
        return parse_xyz(value, param)
    except ValueError as e:
        raise click.BadParameter(str(e).replace(f'{param} ', ''), param_hint=param) from None


def check_geometry_options(size, spacing, fov) -> None:
    """--size, --spacing and --fov together must agree (spacing = fov / size): one of them would be ignored."""
    if size is None or spacing is None or fov is None:
        return
    implied = np.asarray(fov, dtype=np.float64) / np.asarray(size)
    if not np.allclose(implied, spacing, rtol=1e-3, atol=0):
        shown = ','.join(f'{v:g}' for v in np.round(implied, 4))
        raise click.BadParameter(f'{",".join(f"{v:g}" for v in spacing)} disagrees with --fov / --size = {shown} mm; '
                                 f'give two of the three (or a --spacing equal to --fov / --size)',
                                 param_hint='--spacing')


def _pair(value: str) -> tuple[float, float] | None:
    try:
        lo, hi = (float(p) for p in value.split(','))
    except ValueError:
        return None
    return (lo, hi) if np.isfinite(lo) and np.isfinite(hi) else None


def _parse_intensity(clip: str | None, window: str | None) -> dict:
    """--clip (percentiles, the default 0.5,99.5) or --window (fixed, in source units), not both."""
    if clip is not None and window is not None:
        raise click.BadParameter('give --clip (per-volume percentiles) or --window (a fixed window), not both',
                                 param_hint='--window')
    if window is not None:
        pair = _pair(window)
        if pair is None or not pair[0] < pair[1]:
            raise click.BadParameter(f'"{window}": expected LO,HI in source units with LO < HI, e.g. -1000,1000',
                                     param_hint='--window')
        return dict(window=pair)
    if clip is None:
        return dict(clip=None)  # The default percentiles.
    pair = _pair(clip)
    if pair is None or not 0 <= pair[0] < pair[1] <= 100:
        raise click.BadParameter(f'"{clip}": expected two percentiles lo,hi with 0 <= lo < hi <= 100',
                                 param_hint='--clip')
    return dict(clip=pair)


def _parse_channels(value: str | None) -> list[str] | None:
    if value is None:
        return None
    patterns = [p.strip() for p in value.split(',') if p.strip()]
    bad = [p for p in patterns if p.count('*') != 1]
    if not patterns or bad:
        raise click.BadParameter(f'each pattern needs exactly one "*" (the case id), got "{bad[0] if bad else value}"',
                                 param_hint='--channels')
    return patterns


@contextlib.contextmanager
def _exit_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM (a scheduler's kill) into SystemExit, so the temporary output is removed as on Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield  # Signal handlers can only be set from the main thread.
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@click.command(cls=dnnlib.cli.Command, help=__doc__)
@click.option('--source', required=True, metavar='PATH', type=dnnlib.cli.PATH, help='Folder, .zip, one volume file (a DICOM file: its '
              'series), or phantom:N[:SEED]')
@dnnlib.cli.dest_option('Output .zip, or an empty or new folder')
@click.option('--size', metavar='XxYxZ', help='Output size, e.g. 256x256x24 (W x H x D)')
@click.option('--spacing', metavar='MM', help='Resample to this spacing: sx,sy,sz or one number')
@click.option('--fov', metavar='MM', help='Centred physical crop/pad: fx,fy,fz or one number')
@click.option('--orient', type=click.Choice(ORIENTS), default='source', show_default=True,
              help='source: keep each scan\'s axes (permuted and flipped towards LPS) and record an oblique tilt; '
                   'lps: resample physically onto the world\'s L, P, S axes')
@click.option('--interp', 'interpolation', type=click.Choice(INTERPOLATIONS), default='linear', show_default=True,
              help='Image interpolator (SimpleITK): linear, bspline (cubic) or nearest')
@click.option('--clip', metavar='LO,HI', help='Clip each volume to its own intensity percentiles',
              show_default='0.5,99.5')
@click.option('--window', metavar='LO,HI', help='Clip to a fixed window in source units instead (e.g. -1000,1000 '
              'Hounsfield units); generated volumes come back in those units')
@click.option('--dtype', type=click.Choice(DTYPES), help='Stored type', show_default='uint8')
@click.option('--labels', type=dnnlib.cli.EXISTING_PATH, metavar='PATH', help='Labels: CSV (name,label...) or JSON')
@click.option('--max-volumes', type=click.IntRange(min=1), metavar='INT', help='Stop after this many volumes')
@click.option('--on-error', type=click.Choice(ON_ERROR), default='fail', show_default=True,
              help='For inputs that cannot be packed: fail (name them all, write nothing), skip them, or stop '
                   'at the first')
@click.option('--overwrite', is_flag=True, help='Replace an existing --dest')
@click.option('--channels', metavar='GLOBS', help='One pattern per sequence, e.g. "*_t2w.nii.gz,*_adc.nii.gz"')
@click.option('--seg', metavar='GLOB', help='Each volume\'s label map, "*" standing for the case, e.g. "*_seg.nii.gz" '
              '(phantom: the phantoms\' organ mask)')
@click.option('--seg-names', metavar='PATH', type=dnnlib.cli.EXISTING_PATH,
              help='Names of the label values, e.g. {"1": "CZ+TZ", "2": "PZ"}')
@click.option('--seg-interp', 'seg_interpolation', type=click.Choice(['nearest', 'gaussian']), default='nearest',
              show_default=True, help='Label-map interpolator (gaussian: ITK\'s label-Gaussian)')
@click.option('--crop', type=click.Choice(packing.CROPS), default='none', show_default=True,
              help='Centre the box on the volume (none), on the label map\'s foreground (mask) or on the body')
def main(source: str, dest: str, size: str | None, spacing: str | None, fov: str | None, orient: str,
         interpolation: str, clip: str | None, window: str | None, dtype: str | None, labels: str | None,
         max_volumes: int | None, on_error: str, overwrite: bool, channels: str | None, seg: str | None,
         seg_names: str | None, seg_interpolation: str, crop: str) -> None:
    options = dict(size=_size_option(size), spacing=_xyz_option(spacing, '--spacing'), fov=_xyz_option(fov, '--fov'),
                   orient=orient, interpolation=interpolation, **_parse_intensity(clip, window),
                   channels=_parse_channels(channels), seg=seg, seg_names=seg_names,
                   seg_interpolation=seg_interpolation, crop=crop)
    check_geometry_options(options['size'], options['spacing'], options['fov'])
    size_warning = untrainable_size_warning(options['size']) if options['size'] else None
    if size_warning is not None:  # Said before the work; the summary repeats it.
        click.echo(f'Warning: {size_warning}. Packing anyway: a packed set can still serve radiomics or audits.')
    try:
        with _exit_on_sigterm():
            summary = pack_dataset(source=source, dest=dest, dtype=dtype, labels=labels,
                                   max_volumes=max_volumes, on_error=on_error, progress=True, overwrite=overwrite,
                                   **options)
    except FailedInputs as e:
        click.echo(e.details())
        raise click.ClickException(str(e)) from None
    except (PackError, packed.WriteError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(summary.report())


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter

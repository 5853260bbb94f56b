# SPDX-License-Identifier: Apache-2.0
"""Run directories: how a training run's files are named, found, written and read back.

A run lives in OUTDIR/NNNNN-DESC/ (numbered in order) and holds training_options.json (and
training_options-resumed-TAG.json when a resume changed an option), log.txt, stats.jsonl, TensorBoard events,
reals.png, fakes*.png, and per snapshot `network-snapshot-TAG.pkl` (the official layout: G, D, G_ema,
augment_pipe, training_set_kwargs) beside `training-state-TAG.pt` (optimisers, progress, augment p, RNG states:
an exact resume; other ranks add -rankR). TAG is the image count (snapshot_tag).

train.py uses it to start, find and resume runs; the training loop uses it to write snapshots and logs.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import zipfile

import dnnlib

torch = dnnlib.util.lazy_import('torch')  # train.py imports this module; --help answers without loading torch.

SNAPSHOT_TAG = r'(\d{6})(?:_(\d{3}))?'  # What snapshot_tag writes; parse_snapshot_tag reads it back.


class TrainingError(RuntimeError):
    """A failure the user can act on; train.py prints its one-line message without a traceback."""


class ResumeError(TrainingError):
    """The --resume files cannot be read, or do not fit the new options."""

#----------------------------------------------------------------------------
# Names.


def snapshot_tag(cur_nimg: int) -> str:
    """The name part of a snapshot after cur_nimg images: '000400' at 400 kimg as the official layout, and
    '000000_512' (kimg, then the images beyond it) when cur_nimg is not a whole kimg, so snapshots of runs with
    ticks shorter than 1 kimg never share a name. Names sort in training order."""
    kimg, rest = divmod(int(cur_nimg), 1000)
    return f'{kimg:06d}' if rest == 0 else f'{kimg:06d}_{rest:03d}'


def parse_snapshot_tag(tag: str) -> int:
    """The image count of a snapshot tag (the inverse of snapshot_tag)."""
    match = re.fullmatch(SNAPSHOT_TAG, tag)
    if match is None:
        raise ValueError(f'"{tag}" is not a snapshot tag such as 000400 or 000000_512')
    return int(match.group(1)) * 1000 + int(match.group(2) or 0)


def snapshot_file(run_dir: str, tag: str) -> str:
    return os.path.join(run_dir, f'network-snapshot-{tag}.pkl')


def state_file(run_dir: str, tag: str, rank: int = 0) -> str:
    """training-state-{tag}.pt for rank 0, training-state-{tag}-rank{r}.pt for the others (own RNG states)."""
    return os.path.join(run_dir, f'training-state-{tag}' + (f'-rank{rank}' if rank > 0 else '') + '.pt')


def state_of_snapshot(snapshot_path: str) -> str | None:
    """The training state written with a snapshot of ours (an exact resume), or None when there is none."""
    state = re.sub(rf'network-snapshot-({SNAPSHOT_TAG})\.pkl$', r'training-state-\1.pt', snapshot_path)
    return state if state != snapshot_path and os.path.isfile(state) else None


def next_run_dir(outdir: str, desc: str) -> str:
    """OUTDIR/NNNNN-DESC with the next free number."""
    ids = [int(m.group()) for name in (os.listdir(outdir) if os.path.isdir(outdir) else [])
           if os.path.isdir(os.path.join(outdir, name)) and (m := re.match(r'^\d+', name))]
    return os.path.join(outdir, f'{max(ids, default=-1) + 1:05d}-{desc}')


def find_latest_snapshot(outdir: str) -> tuple[str, str, str] | None:
    """(run_dir, snapshot, state) of the newest snapshot with a training state in the newest run of `outdir`."""
    runs = sorted((d for d in glob.glob(os.path.join(outdir, '[0-9]' * 5 + '-*')) if os.path.isdir(d)),
                  key=lambda d: int(os.path.basename(d)[:5]), reverse=True)
    for run_dir in runs:
        tags = [m.group(1) for name in os.listdir(run_dir)
                if (m := re.fullmatch(rf'training-state-({SNAPSHOT_TAG})\.pt', name))]
        for tag in sorted(tags, key=parse_snapshot_tag, reverse=True):
            if os.path.isfile(snapshot_file(run_dir, tag)):
                return run_dir, snapshot_file(run_dir, tag), state_file(run_dir, tag)
    return None

#----------------------------------------------------------------------------
# Writing.


def write_options(c: dict, run_dir: str, resumed: bool) -> None:
    """training_options.json records how the run started; a resume with other options (e.g. a longer --kimg) adds
    training_options-resumed-<snapshot>.json beside it instead of overwriting it."""
    path = os.path.join(run_dir, 'training_options.json')
    if resumed and os.path.isfile(path):
        with open(path) as f:
            first = json.load(f)
        ignored = ('resume_pkl', 'resume_state', 'run_dir')
        if {k: v for k, v in first.items() if k not in ignored} == \
                {k: v for k, v in json.loads(json.dumps(c)).items() if k not in ignored}:
            return
        tag = re.search(r'training-state-(.+)\.pt$', c['resume_state']).group(1)
        path = os.path.join(run_dir, f'training_options-resumed-{tag}.json')
    dnnlib.util.atomic_write_text(path, json.dumps(c, indent=2))


def save_snapshot(snapshot: dict, run_dir: str, tag: str, rank: int, state: dict) -> str:
    """The snapshot pickle (rank 0), then each rank's training state: a state always has its snapshot."""
    import pickle
    path = snapshot_file(run_dir, tag)
    if rank == 0:
        dnnlib.util.atomic_write(path, lambda f: pickle.dump(snapshot, f))
    dnnlib.util.atomic_write(state_file(run_dir, tag, rank), lambda f: torch.save(state, f))
    return path


def trim_stats(path: str, cur_nimg: int) -> None:
    """Drop the stats.jsonl lines of ticks after cur_nimg: a run killed after its last snapshot trains those ticks
    again when it resumes, and each tick must appear once."""
    if not os.path.isfile(path):
        return
    with open(path) as f:
        lines = f.read().splitlines(keepends=True)
    keep = [line for line in lines if _tick_nimg(line) is not None and _tick_nimg(line) <= cur_nimg]
    if keep != lines:
        dnnlib.util.atomic_write_text(path, ''.join(keep))


def _tick_nimg(line: str) -> int | None:
    try:
        return round(json.loads(line)['Progress/kimg']['mean'] * 1000)
    except (ValueError, KeyError, TypeError):
        return None  # Not a whole stats line.


def remove_if_nothing_saved(run_dir: str) -> None:
    """A new run that failed before its first snapshot leaves no directory behind (its error has been shown)."""
    if os.path.isdir(run_dir) and not glob.glob(os.path.join(run_dir, 'network-snapshot-*.pkl')):
        shutil.rmtree(run_dir, ignore_errors=True)
        print(f'Removed {run_dir}: the run stopped before its first snapshot.')

#----------------------------------------------------------------------------
# Reading training states.


def load_training_state(resume_state: str, rank: int) -> dict:
    """This rank's saved state; a run resumed on a different number of processes reuses rank 0's state but keeps
    the fresh per-rank random streams."""
    path = resume_state[:-len('.pt')] + f'-rank{rank}.pt' if rank > 0 else resume_state
    if os.path.isfile(path):
        return _read_state(path)
    print(f'Rank {rank}: no "{path}"; resuming from rank 0\'s state with fresh random streams')
    return dict(_read_state(resume_state), rng=None)


def _read_state(path: str) -> dict:
    try:
        state = _load_state_file(path)
    except ResumeError:
        raise
    except Exception as e:  # A damaged file fails inside torch's unpickler or zip reader in many ways.
        raise ResumeError(f'Cannot resume: {path} is damaged ({type(e).__name__}: {dnnlib.util.one_line(e, 160)}); '
                          f'move it and its network snapshot away to resume from the one before') from None
    if not isinstance(state, dict) or not {'progress', 'optimizers', 'rng'} <= set(state):
        raise ResumeError(f'Cannot resume: {path} is not a training state written by this project')
    return state


def _load_state_file(path: str) -> object:
    # Tensors, numbers and numpy's RNG state only: a state file beside a stranger's snapshot runs no code.
    from torch_utils import safe_unpickle
    try:
        return safe_unpickle.load_weights(path, allowed=safe_unpickle.numpy_rng_classes)
    except safe_unpickle.UntrustedPickleError as e:
        if not safe_unpickle.trusted_by_env():  # train.py --trust-pickle sets it.
            raise ResumeError(f'Cannot resume: {path} {e}: loading it could run code; '
                              f'{safe_unpickle.TRUST_HINT}') from None
        safe_unpickle.warn_trusted(path, str(e))
        return torch.load(path, map_location='cpu', weights_only=False)


def check_state_file(path: str) -> None:
    """Raise ResumeError unless the training-state file reads back whole (its zip records and their CRCs)."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        bad = f'{type(e).__name__}: {e}'
    if bad is not None:
        raise ResumeError(f'Cannot resume: {path} is damaged ({bad}); move it and its network snapshot away to '
                          f'resume from the one before')

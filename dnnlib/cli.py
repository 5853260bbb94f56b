# SPDX-License-Identifier: Apache-2.0
"""The command-line conventions every tool follows, in one place.

- Paths: `PATH` expands `~` (URLs are left alone). A network is `--network PATH` (a snapshot .pkl or a safe export
  .pt); an output folder is `--outdir DIR` with `--overwrite`; a single output file or dataset is `--dest PATH`.
- Booleans are switches, `--mirror` / `--no-mirror`. The official 2D spelling with a value (`--mirror=1`,
  `--verbose=false`) still works for one release, with a one-line note (Command.parse_args).
- Defaults are shown by click (`show_default`); a default that is decided at run time says how in words.
- Progress bars: `--progress/--no-progress`; by default shown on a terminal only, never in a batch job's log.
- Usage errors are one line (Command, Group).
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
import shutil
from typing import Callable, Iterable

import click

MAX_SEED = 2**32 - 1    # numpy's RandomState takes seeds in [0, 2**32).
MAX_SEEDS = 10_000_000  # A guard against a typo such as 0-99999999999 filling the memory.


class FiniteFloat(click.ParamType):
    """A float that must be finite: click's float accepts 'nan' and 'inf', which then fail silently downstream."""

    name = 'float'

    def convert(self, value, param, ctx) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f'"{value}" is not a number', param, ctx)
        if not math.isfinite(number):
            self.fail(f'"{value}" is not a finite number', param, ctx)
        return number


FINITE_FLOAT = FiniteFloat()


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange that also refuses NaN (which passes every range comparison) and infinities."""

    def convert(self, value, param, ctx) -> float:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f'"{value}" is not a finite number', param, ctx)
        return number

class PathType(click.ParamType):
    """A path with `~` expanded (a URL is kept as it is); with `exists`, a missing path is a usage error."""

    name = 'path'

    def __init__(self, exists: bool = False) -> None:
        self.exists = exists

    def convert(self, value, param, ctx) -> str:
        text = str(value)
        if '://' in text:
            return text
        path = os.path.expanduser(text)
        if self.exists and not os.path.exists(path):
            self.fail(f'"{text}" does not exist', param, ctx)
        return path


PATH = PathType()
EXISTING_PATH = PathType(exists=True)


def network_option(required: bool = True) -> Callable:
    """--network (a snapshot pickle or a safe export, passed as `network_pkl`) and --trust-pickle (`trust_pickle`):
    every tool that loads a network takes both."""
    def decorate(function: Callable) -> Callable:
        function = trust_pickle_option()(function)
        return click.option('--network', 'network_pkl', type=PATH, metavar='PATH', required=required,
                            help='Network: a snapshot (.pkl) or a safe export (.pt, see legacy.py export)')(function)
    return decorate


def dest_option(help: str) -> Callable:  # noqa: A002 (click's own word)
    """--dest: the one file or dataset a tool writes."""
    return click.option('--dest', type=PATH, metavar='PATH', required=True, help=help)


def generation_options(seeds_help: str = 'Seeds, e.g. 0-99,200') -> Callable:
    """What to generate: --seeds or --count, --trunc (truncation_psi), --class (class_idx), --noise-mode."""
    options = [
        click.option('--seeds', help=seeds_help),
        click.option('--count', help='Generate seeds 0..N-1', type=click.IntRange(min=1, max=MAX_SEEDS)),
        click.option('--trunc', 'truncation_psi', help='Truncation psi', type=FINITE_FLOAT, default=1,
                     show_default=True),
        click.option('--class', 'class_idx', help='Class index (conditional networks)', type=click.IntRange(min=0)),
        click.option('--noise-mode', help='Noise inputs', type=click.Choice(['const', 'random', 'none']),
                     default='const', show_default=True),
    ]

    def decorate(function: Callable) -> Callable:
        for option in reversed(options):
            function = option(function)
        return function
    return decorate


def outdir_option(help: str, default: str | None = None) -> Callable:  # noqa: A002 (click's own word)
    """--outdir: the folder a tool writes into (one run per folder: see prepare_outdir)."""
    return click.option('--outdir', type=PATH, metavar='DIR', required=default is None, default=default,
                        show_default=default is not None, help=help)


def progress_option() -> Callable:
    """--progress/--no-progress: progress bars; None (the default) shows them on a terminal only."""
    return click.option('--progress/--no-progress', default=None, show_default='on a terminal',
                        help='Progress bars')


def parse_seeds(text: str, param_hint: str = '--seeds') -> list[int]:
    """'0-3,9' -> [0, 1, 2, 3, 9]."""
    seeds: list[int] = []
    for part in text.split(','):
        part = part.strip()
        match = re.fullmatch(r'(\d+)(?:-(\d+))?', part)
        if match is None:
            raise click.BadParameter(f'"{part}" is not a seed or a range like 0-9', param_hint=param_hint)
        lo, hi = int(match.group(1)), int(match.group(2) or match.group(1))
        if hi < lo:
            raise click.BadParameter(f'range "{part}" runs backwards', param_hint=param_hint)
        if hi > MAX_SEED:
            raise click.BadParameter(f'"{part}": seeds go up to {MAX_SEED}', param_hint=param_hint)
        if len(seeds) + hi - lo + 1 > MAX_SEEDS:
            raise click.BadParameter(f'more than {MAX_SEEDS} seeds', param_hint=param_hint)
        seeds.extend(range(lo, hi + 1))
    return seeds

#----------------------------------------------------------------------------
# Output folders: one run per folder.


def prepare_outdir(outdir: str, overwrite: bool, owned: Iterable[str], param_hint: str = '--outdir') -> str:
    """Make `outdir` ready for one run of a tool and return it with `~` expanded.

    A folder that already holds anything is refused (a second run would mix its files with the first's) unless
    `overwrite`: then every entry whose name matches one of the glob patterns `owned` (the files and folders the
    tool itself writes, e.g. 'seed*.nii.gz', 'imagesTr') is removed first; other entries are left alone.
    """
    path = os.path.expanduser(outdir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise click.BadParameter(f'"{outdir}" is a file; expected a folder', param_hint=param_hint)
    from dnnlib.util import remove_stale_temporaries
    remove_stale_temporaries(path)  # Left by a run killed while it wrote.
    entries = sorted(os.listdir(path)) if os.path.isdir(path) else []
    if entries and not overwrite:
        raise click.BadParameter(f'"{outdir}" already holds {len(entries)} entr{"y" if len(entries) == 1 else "ies"} '
                                 f'(e.g. {entries[0]}); choose a new folder, or pass --overwrite to remove this '
                                 f'tool\'s earlier outputs there first', param_hint=param_hint)
    patterns = list(owned)
    try:
        for name in entries:
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
                target = os.path.join(path, name)
                if os.path.isdir(target) and not os.path.islink(target):
                    shutil.rmtree(target)
                else:
                    os.remove(target)
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise click.BadParameter(f'cannot prepare "{outdir}": {e.strerror or e}', param_hint=param_hint) from None
    return path


def overwrite_option(what: str = 'this tool\'s earlier outputs in --outdir') -> Callable:
    """The --overwrite flag of a tool that writes into an output folder."""
    return click.option('--overwrite', is_flag=True, help=f'Remove {what} first (a used folder is refused '
                        f'otherwise)')

#----------------------------------------------------------------------------
# Files from strangers.

TRUST_PICKLE_ENV = 'STYLEGAN3D_TRUST_PICKLE'  # =1: as --trust-pickle, also for processes a tool starts.


def trust_pickle_option() -> Callable:
    """The --trust-pickle flag of a tool that loads network files (legacy.load_network's `trust_pickle`)."""
    return click.option('--trust-pickle', is_flag=True, envvar=TRUST_PICKLE_ENV, show_envvar=True,
                        help='Also load network files that the safe loader refuses; they can run code: only for '
                        'files from people you trust')

#----------------------------------------------------------------------------
# Usage errors on one line.


BOOLEAN_WORDS = {'1': True, 'true': True, 'yes': True, 'on': True, '0': False, 'false': False, 'no': False,
                 'off': False}


class UsageError(click.ClickException):
    """A bad option shown as the one line 'Error: Invalid value for '--x': ...', exit code 2 as click's own."""

    exit_code = 2


class _OneLineUsage:
    """Turns click's usage errors (usage text, a hint and the error: four lines) into one line on stderr, and reads
    the official spelling of switches with a value (`--mirror=1`)."""

    renamed: dict[str, str] = {}  # Old option name -> new name, read for one release with a note.

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, [self._switch_spelling(self._new_name(arg)) for arg in args])

    def _new_name(self, arg: str) -> str:
        """'--out=x' -> '--dest=x' for a renamed option (with a note)."""
        name, sep, value = arg.partition('=')
        if name not in self.renamed:
            return arg
        click.echo(f'Note: {name} is called {self.renamed[name]} now; the old name works until the next release.',
                   err=True)
        return self.renamed[name] + sep + value

    def _switch_spelling(self, arg: str) -> str:
        """'--mirror=1' -> '--mirror', '--verbose=false' -> '--no-verbose' (with a note), for switches only."""
        name, sep, value = arg.partition('=')
        if not sep or not name.startswith('--'):
            return arg
        for param in self.params:
            if isinstance(param, click.Option) and param.is_flag and name in param.opts and param.secondary_opts:
                answer = value.strip().lower()
                if answer not in BOOLEAN_WORDS:
                    return arg  # click says what is wrong.
                new = param.opts[0] if BOOLEAN_WORDS[answer] else param.secondary_opts[0]
                click.echo(f'Note: {arg} is written {new} now; the old spelling works until the next release.',
                           err=True)
                return new
        return arg

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as e:
            raise UsageError(e.format_message()) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as e:
            raise UsageError(e.format_message()) from None


class Command(_OneLineUsage, click.Command):
    """click.Command with one-line usage errors: use as @click.command(cls=Command); `renamed` maps old option names
    to new ones, e.g. @click.command(cls=Command, renamed={'--out': '--dest'})."""

    def __init__(self, *args, renamed: dict[str, str] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.renamed = dict(renamed or {})


class Group(_OneLineUsage, click.Group):
    """click.Group with one-line usage errors: use as @click.group(cls=Group)."""

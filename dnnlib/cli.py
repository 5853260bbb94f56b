# SPDX-License-Identifier: Apache-2.0
"""Click parameter types shared by the command-line tools."""

from __future__ import annotations

import math
import re

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
# Usage errors on one line.


class UsageError(click.ClickException):
    """A bad option shown as the one line 'Error: Invalid value for '--x': ...', exit code 2 as click's own."""

    exit_code = 2


class _OneLineUsage:
    """Turns click's usage errors (usage text, a hint and the error: four lines) into one line on stderr."""

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
    """click.Command with one-line usage errors: use as @click.command(cls=Command)."""


class Group(_OneLineUsage, click.Group):
    """click.Group with one-line usage errors: use as @click.group(cls=Group)."""

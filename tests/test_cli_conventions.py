# SPDX-License-Identifier: Apache-2.0
"""Every command-line tool follows dnnlib/cli.py's conventions: the same names, metavars and types for the same
things, switches without values, defaults shown by click, one-line usage errors, and old spellings read with a note;
and generate.py, style_mixing.py and projector.py reject a file that is no network in one line."""

from __future__ import annotations

import importlib
import importlib.util
import os

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import dnnlib
import generate
import projector
import style_mixing
from dnnlib import cli
from tests.helpers.cli import assert_one_line_error, invoke
from tests.helpers.networks import SHAPE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATH_METAVARS = ('PATH', 'DIR', 'URL|PATH')
UNSET = getattr(click.core, 'UNSET', None)  # click 8.2+ marks an option without a default so.
# --outdir holds numbered run folders (train.py), or a numbered training run and outputs that each demo replaces
# (demo.py, so that `make demo` runs again as it ran first): a second run never mixes with one.
OWN_RUN_FOLDERS = ('python train.py', 'python demo.py')


def _commands() -> list[tuple[str, click.Command]]:
    spec = importlib.util.spec_from_file_location('cli_help', os.path.join(ROOT, 'docs', 'cli_help.py'))
    cli_help = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli_help)
    found = []
    for prog, module, attr, sub in cli_help.COMMANDS:
        command = getattr(importlib.import_module(module), attr)
        found.append((prog, command.commands[sub] if sub else command))
    return found


COMMANDS = _commands()


def _options(command: click.Command) -> dict[str, click.Option]:
    return {name: p for p in command.params if isinstance(p, click.Option) for name in p.opts}


@pytest.mark.parametrize('prog,command', COMMANDS, ids=[prog for prog, _ in COMMANDS])
def test_every_tool_follows_the_conventions(prog, command):
    assert isinstance(command, cli.Command), f'{prog}: use @click.command(cls=dnnlib.cli.Command)'
    assert (command.help or '').strip(), f'{prog} --help has no description'
    options = _options(command)
    for name, option in options.items():
        where = f'{prog} {name}'
        assert '[default' not in (option.help or ''), f'{where}: show defaults with show_default, not in the help'
        assert not (isinstance(option.type, click.types.BoolParamType) and not option.is_flag), \
            f'{where}: a boolean is a switch (--x/--no-x), not an option with a value'
        if not option.is_flag and option.default not in (None, UNSET) and not option.required:
            assert option.show_default, f'{where}: its default is not shown'
        if option.metavar in PATH_METAVARS:
            assert isinstance(option.type, cli.PathType), f'{where}: a path option expands ~ (dnnlib.cli.PATH)'
    assert '--out' not in options and '--verbose' not in options, f'{prog}: old names (--dest, --progress)'
    if '--network' in options:
        assert options['--network'].metavar == 'PATH' and '--trust-pickle' in options, \
            f'{prog}: use dnnlib.cli.network_option()'
    if '--outdir' in options:
        assert options['--outdir'].metavar == 'DIR', f'{prog} --outdir: metavar DIR'
        assert prog in OWN_RUN_FOLDERS or '--overwrite' in options, f'{prog}: --outdir needs --overwrite'
    if '--dest' in options:
        assert options['--dest'].metavar == 'PATH', f'{prog} --dest: metavar PATH'


def _probe() -> click.Command:
    @click.command(cls=cli.Command, renamed={'--out': '--dest'})
    @click.option('--mirror/--no-mirror', default=False)
    @cli.dest_option('where')
    @cli.progress_option()
    def probe(mirror: bool, dest: str, progress: bool | None) -> None:
        click.echo(f'mirror={mirror} dest={dest} progress={progress}')
    return probe


@pytest.mark.parametrize('args,expected,note', [
    (['--mirror', '--dest=~/x.png'], f'mirror=True dest={os.path.expanduser("~/x.png")} progress=None', None),
    (['--mirror=1', '--dest=a'], 'mirror=True dest=a', '--mirror=1 is written --mirror now'),
    (['--mirror=false', '--dest=a', '--no-progress'], 'mirror=False dest=a progress=False',
     '--mirror=false is written --no-mirror now'),
    (['--out', 'a'], 'mirror=False dest=a', '--out is called --dest now'),
    (['--out=a'], 'mirror=False dest=a', '--out is called --dest now'),
])
def test_old_spellings_work_for_one_release_with_a_note(args, expected, note):
    result = CliRunner().invoke(_probe(), args)
    assert result.exit_code == 0 and expected in result.output, result.output
    assert (note in result.output) if note else 'Note:' not in result.output


def test_a_switch_with_a_word_that_is_no_boolean_is_a_one_line_error():
    result = CliRunner().invoke(_probe(), ['--mirror=maybe', '--dest=a'])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output


def test_existing_path_expands_and_checks(tmp_path, monkeypatch):
    monkeypatch.setenv('HOME', str(tmp_path))
    (tmp_path / 'labels.csv').write_text('a,1\n')
    assert cli.EXISTING_PATH.convert('~/labels.csv', None, None) == str(tmp_path / 'labels.csv')
    assert cli.PATH.convert('https://host/~x', None, None) == 'https://host/~x'
    with pytest.raises(click.BadParameter, match='does not exist'):
        cli.EXISTING_PATH.convert('~/missing.csv', None, None)


def test_the_real_tools_read_the_old_spellings(tmp_path):
    import calc_metrics
    from training import augment
    assert isinstance(calc_metrics.main, dnnlib.cli.Command) and calc_metrics.main.renamed == {'--verbose': '--progress'}
    result = CliRunner().invoke(augment.main, ['--data', str(tmp_path / 'missing'), '--out', str(tmp_path / 'a.png')])
    assert '--out is called --dest now' in result.output and 'does not exist' in result.output

#----------------------------------------------------------------------------
# Every tool that reads a network rejects a file that is no network in one line.


def bad_network_files(tmp_path) -> dict:
    """Files that are not networks, each of which every CLI must reject in one line."""
    (tmp_path / 'notes.txt').write_text('not a network\n')
    (tmp_path / 'empty.pkl').write_bytes(b'')
    torch.save(torch.zeros(3), tmp_path / 'tensor.pt')
    torch.save(torch.nn.Linear(2, 2), tmp_path / 'module.pt')  # A pickled module: weights_only refuses it.
    return {name: tmp_path / name for name in ('missing.pkl', 'notes.txt', 'empty.pkl', 'tensor.pt', 'module.pt')}


def test_bad_network_is_a_one_line_error_for_every_cli(network, tmp_path):
    np.save(tmp_path / 'target.npy', np.zeros(SHAPE, np.float32))
    clis = [(generate.main, ['--seeds', '1']), (style_mixing.main, ['--rows', '1', '--cols', '2']),
            (projector.main, ['--target', tmp_path / 'target.npy', '--num-steps', 1])]
    for name, path in bad_network_files(tmp_path).items():
        for command, args in clis:
            result = invoke(command, ['--network', path, '--outdir', tmp_path / 'out', *args])
            assert_one_line_error(result, '--network', name)
    assert not os.path.exists(tmp_path / 'out')

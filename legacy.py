# SPDX-License-Identifier: Apache-2.0
"""Load networks from snapshot pickles or from the safe export, and write the safe export.

A snapshot pickle (`network-snapshot-*.pkl`) holds G, D, G_ema, augment_pipe and training_set_kwargs as
persistent objects: LOADING IT RUNS THE PYTHON CODE STORED INSIDE IT. Only load pickles you trust.

The safe export (`python legacy.py export --network=SNAPSHOT.pkl --dest=G.pt`) holds G_ema's weights and a JSON
config (class name, constructor arguments, dataset options). It loads with `torch.load(weights_only=True)`, runs
no stored code, and rebuilds the generator from this repository's current code.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile

import click
import torch

import dnnlib
from training.training_loop import atomic_write

EXPORT_FORMAT = 'stylegan2-ada-3d-export/1'


def _network_class_name(module: torch.nn.Module) -> str:
    # Classes rebuilt from a pickle live in a module made from stored source; the export always refers to
    # the same class of this repository's training.networks.
    return f'training.networks.{type(module).__name__}'


def export_network(network: torch.nn.Module, training_set_kwargs: dict | None, dest: str) -> None:
    """Write `network` (a persistent module, normally G_ema) as weights plus a JSON config, atomically."""
    config = dict(class_name=_network_class_name(network), init_args=list(network.init_args),
                  init_kwargs=network.init_kwargs, training_set_kwargs=training_set_kwargs)
    payload = dict(format=EXPORT_FORMAT, config=json.dumps(config),
                   state_dict={k: v.detach().cpu() for k, v in network.state_dict().items()})
    atomic_write(dest, lambda f: torch.save(payload, f))


def _load_export(path: str) -> dict:
    payload = torch.load(path, map_location='cpu', weights_only=True)
    if not isinstance(payload, dict) or payload.get('format') != EXPORT_FORMAT:
        raise ValueError(f'{path} is a PyTorch file but not a {EXPORT_FORMAT} export')
    config = json.loads(payload['config'])
    network = dnnlib.util.construct_class_by_name(*config['init_args'], class_name=config['class_name'],
                                                  **config['init_kwargs'])
    network.load_state_dict(payload['state_dict'])
    network = network.eval().requires_grad_(False)
    return dict(G=None, D=None, G_ema=network, augment_pipe=None,
                training_set_kwargs=config.get('training_set_kwargs'))


def load_network(path_or_url: str) -> dict:
    """Read a snapshot pickle or a safe export: dict(G, D, G_ema, augment_pipe, training_set_kwargs).

    Entries a file does not hold are None (an export holds only G_ema). Raises OSError or ValueError with a
    one-line message naming the file.
    """
    local = dnnlib.util.open_url(path_or_url, return_filename=True)
    if zipfile.is_zipfile(local):  # torch.save's format: the safe export.
        return _load_export(local)
    try:
        with open(local, 'rb') as f:
            data = pickle.load(f)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as e:
        raise ValueError(f'{path_or_url} is neither a network snapshot nor a safe export ({e})') from None
    if not isinstance(data, dict) or data.get('G_ema') is None:
        raise ValueError(f'{path_or_url} holds no G_ema; is it a stylegan2-ada-3d network snapshot?')
    for key in ('G', 'D', 'augment_pipe', 'training_set_kwargs'):
        data.setdefault(key, None)
    return data


def load_network_or_exit(path_or_url: str, param_hint: str = '--network') -> dict:
    """load_network for CLIs: failures become one-line click errors."""
    try:
        return load_network(path_or_url)
    except (OSError, ValueError) as e:
        raise click.BadParameter(str(e), param_hint=param_hint) from None


@click.group()
def cli() -> None:
    """Network file utilities."""


@cli.command('export')
@click.option('--network', 'network_pkl', help='Snapshot pickle (trusted: loading it runs code)', required=True)
@click.option('--dest', help='Output file (.pt), loadable with torch.load(weights_only=True)', required=True)
def export_command(network_pkl: str, dest: str) -> None:
    """Write G_ema of a snapshot as weights plus a JSON config (no code inside)."""
    data = load_network_or_exit(network_pkl)
    if os.path.dirname(dest):
        os.makedirs(os.path.dirname(dest), exist_ok=True)
    export_network(data['G_ema'], data['training_set_kwargs'], dest)
    print(f'Wrote {dest}')


if __name__ == '__main__':
    cli()

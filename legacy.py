# SPDX-License-Identifier: Apache-2.0
"""Load networks from snapshot pickles or from the safe export, and write the safe export.

A snapshot pickle (`network-snapshot-*.pkl`) holds G, D, G_ema, augment_pipe and training_set_kwargs as
persistent objects: LOADING IT RUNS THE PYTHON CODE STORED INSIDE IT. Only load pickles you trust.

The safe export (`python legacy.py export --network=SNAPSHOT.pkl --dest=G.pt`) holds G_ema's weights and a JSON
config (constructor arguments, dataset options, and the dataset's spacing, orientation and stored dtype). It loads
with `torch.load(weights_only=True)`, runs no stored code, and rebuilds the generator from this repository's
current code: the only class it can name is training.networks.Generator.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile

import click

import dnnlib

torch = dnnlib.util.lazy_import('torch')  # Imported at first use, so that --help answers at once.

EXPORT_FORMAT = 'stylegan2-ada-3d-export/1'
# The classes an export may rebuild. A name from the file is never resolved freely: that would let an export
# call any importable function, which is what the export exists to rule out.
EXPORTABLE_CLASSES = ('training.networks.Generator',)

#----------------------------------------------------------------------------
# The dataset's geometry, for writing generated volumes.


def one_line(error: BaseException, limit: int = 240) -> str:
    """An exception's message on one line; a long one (torch's run over many lines) cut to its first sentence."""
    text = ' '.join(str(error).split()) or type(error).__name__
    if len(text) > limit:
        end = text.find('. ')
        text = text[:end + 1] if 0 < end < limit else text[:limit - 3] + '...'
    return text


def read_dataset_info(training_set_kwargs: dict | None) -> dict | None:
    """Spacing, direction, orientation, dtype and clip percentiles from the training set's dataset.json.

    None when the dataset (or its dataset.json) is not reachable from here.
    """
    path = (training_set_kwargs or {}).get('path')
    try:
        if path and os.path.isfile(path) and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                info = json.loads(z.read('dataset.json'))
        elif path and os.path.isfile(os.path.join(path, 'dataset.json')):
            with open(os.path.join(path, 'dataset.json')) as f:
                info = json.load(f)
        else:
            return None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None  # An unreadable dataset.json is the same as none: the caller falls back to defaults.
    if not isinstance(info, dict):
        return None
    return {key: info[key] for key in ('spacing', 'direction', 'orientation', 'dtype', 'clip_percentiles')
            if key in info}

#----------------------------------------------------------------------------
# The safe export.


def _network_class_name(module: torch.nn.Module) -> str:
    # Classes rebuilt from a pickle live in a module made from stored source; the export always refers to
    # the same class of this repository's training.networks.
    return f'training.networks.{type(module).__name__}'


def export_network(network: torch.nn.Module, training_set_kwargs: dict | None, dest: str,
                   dataset_info: dict | None = None) -> None:
    """Write `network` (G_ema, a persistent Generator) as weights plus a JSON config, atomically.

    dataset_info (None: read from the training set's dataset.json when reachable) goes into the config, so volumes
    generated from the export elsewhere keep the training data's orientation and stored dtype.
    """
    dataset_info = dataset_info or read_dataset_info(training_set_kwargs)
    class_name = _network_class_name(network)
    if class_name not in EXPORTABLE_CLASSES:
        raise ValueError(f'cannot export a {type(network).__name__}; expected one of {", ".join(EXPORTABLE_CLASSES)}')
    config = dict(class_name=class_name, init_args=list(network.init_args), init_kwargs=network.init_kwargs,
                  training_set_kwargs=training_set_kwargs, dataset_info=dataset_info)
    payload = dict(format=EXPORT_FORMAT, config=json.dumps(config),
                   state_dict={k: v.detach().cpu() for k, v in network.state_dict().items()})
    dnnlib.util.atomic_write(dest, lambda f: torch.save(payload, f))


def _load_export(path: str) -> dict:
    try:
        payload = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError:  # weights_only met something other than tensors and plain containers.
        raise ValueError(f'{path} holds pickled Python objects, not only weights: it is not a safe export '
                         f'(a trusted snapshot is a .pkl)') from None
    except Exception as e:  # A damaged archive: torch raises RuntimeError and others.
        raise ValueError(f'{path} is not a readable safe export ({one_line(e)})') from None
    if not isinstance(payload, dict) or payload.get('format') != EXPORT_FORMAT:
        raise ValueError(f'{path} is a PyTorch file but not a {EXPORT_FORMAT} export')
    try:
        config = json.loads(payload['config'])
        class_name = config['class_name']
        if class_name not in EXPORTABLE_CLASSES:
            raise ValueError(f'names class "{class_name}"; only {", ".join(EXPORTABLE_CLASSES)} is allowed')
        network = dnnlib.util.construct_class_by_name(*config['init_args'], class_name=class_name,
                                                      **config['init_kwargs'])
        network.load_state_dict(payload['state_dict'])
    except Exception as e:  # Missing keys, wrong types, weights that do not fit the config.
        raise ValueError(f'{path} is a damaged safe export ({type(e).__name__}: {one_line(e)})') from None
    network = network.eval().requires_grad_(False)
    return dict(G=None, D=None, G_ema=network, augment_pipe=None,
                training_set_kwargs=config.get('training_set_kwargs'), dataset_info=config.get('dataset_info'))


def load_network(path_or_url: str) -> dict:
    """Read a snapshot pickle or a safe export: dict(G, D, G_ema, augment_pipe, training_set_kwargs, dataset_info).

    Entries a file does not hold are None (an export holds only G_ema; only an export records dataset_info).
    Raises OSError or ValueError with a one-line message naming the file.
    """
    local = dnnlib.util.open_url(path_or_url, return_filename=True)
    if zipfile.is_zipfile(local):  # torch.save's format: the safe export.
        return _load_export(local)
    with open(local, 'rb') as f:
        if f.read(4) == b'PK\x03\x04':  # A zip's first entry, but no readable directory at its end.
            raise ValueError(f'{path_or_url} is a truncated or damaged zip archive (a safe export?)')
    try:
        with open(local, 'rb') as f:
            data = pickle.load(f)
    except OSError:
        raise
    except Exception as e:  # Unpickling arbitrary bytes fails in many ways (UnpicklingError, EOFError, KeyError...).
        raise ValueError(f'{path_or_url} is neither a network snapshot nor a safe export '
                         f'({type(e).__name__}: {one_line(e)})') from None
    if not isinstance(data, dict) or data.get('G_ema') is None:
        raise ValueError(f'{path_or_url} holds no G_ema; is it a stylegan2-ada-3d network snapshot?')
    for key in ('G', 'D', 'augment_pipe', 'training_set_kwargs', 'dataset_info'):
        data.setdefault(key, None)
    return data


def load_network_or_exit(path_or_url: str, param_hint: str = '--network') -> dict:
    """load_network for CLIs: failures become one-line click errors."""
    try:
        return load_network(path_or_url)
    except (OSError, ValueError) as e:
        raise click.BadParameter(one_line(e), param_hint=param_hint) from None

#----------------------------------------------------------------------------
# Command line.


@click.group(cls=dnnlib.cli.Group)
def cli() -> None:
    """Network file utilities."""


@cli.command('export')
@click.option('--network', 'network_pkl', help='Snapshot pickle (trusted: loading it runs code)', required=True)
@click.option('--dest', help='Output file (.pt), loadable with torch.load(weights_only=True)', required=True)
def export_command(network_pkl: str, dest: str) -> None:
    """Write G_ema of a snapshot as weights plus a JSON config (no code inside)."""
    data = load_network_or_exit(network_pkl)
    if os.path.isdir(dest):
        raise click.BadParameter(f'"{dest}" is a folder; expected a file name such as G.pt', param_hint='--dest')
    try:
        if os.path.dirname(dest):
            os.makedirs(os.path.dirname(dest), exist_ok=True)
        dataset_info = data['dataset_info'] or read_dataset_info(data['training_set_kwargs'])
        export_network(data['G_ema'], data['training_set_kwargs'], dest, dataset_info)
    except (OSError, ValueError) as e:
        raise click.ClickException(dnnlib.util.write_error_message(dest, e) if isinstance(e, OSError) else
                                   f'cannot write {dest}: {one_line(e)}') from None
    if dataset_info is None:
        print('Note: the training dataset is not reachable here, so the export records only the voxel spacing; '
              'generated volumes use the LPS orientation and uint8.')
    print(f'Wrote {dest}')


if __name__ == '__main__':
    cli()

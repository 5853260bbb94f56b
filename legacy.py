# SPDX-License-Identifier: Apache-2.0
"""Load networks from snapshot pickles or from the safe export, write the safe export, and migrate older files.

Loading never runs a stranger's code unless the user says they trust the file (--trust-pickle, or
STYLEGAN3D_TRUST_PICKLE=1):
- A safe export (`*.pt`: `python legacy.py export --network=SNAPSHOT.pkl --dest=G.pt`) holds G_ema's weights and
  a JSON config (its constructor arguments, which include the volume record, and the dataset options). It is read
  with `torch.load(weights_only=True)` only and rebuilds the generator from this repository's current code: the
  only class it can name is training.networks.Generator. A file named .pt that is anything else is refused.
- A snapshot pickle (`network-snapshot-*.pkl`) holds G, D, G_ema, augment_pipe and training_set_kwargs as
  persistent objects that carry the source of their module, which is executed to rebuild them. It is read by
  torch_utils/safe_unpickle.py: the stored source runs only when its SHA-256 is that of this tree's module or of
  an earlier version listed in torch_utils/known_sources.py (checked before it runs), and the pickle may name
  nothing but the functions that rebuild tensors, numpy arrays, dicts and the volume record.
- The dataset options of either may name only the project's dataset class (calc_metrics.py builds it by name).
Anything else is refused with one line naming --trust-pickle; with it, the file is loaded by plain pickle after
a one-line warning on stderr. A file that is no network (e.g. a pickled {'G_ema': 42}) is a one-line error.

Every generator that load_network returns has `volume_info` (volumes.contract.VolumeInfo): the spacing, direction,
centre, stored dtype and intensity mapping of its training data, which generated files need. Networks written
before generators carried it (snapshots and exports of earlier versions) get what can be known, and a one-line note
on stderr says what is assumed; `legacy.py export --data` records a dataset's own record in a new export.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import sys
import urllib.parse
import zipfile

import click

import dnnlib
from torch_utils import safe_unpickle
from torch_utils.safe_unpickle import TRUST_HINT, StoredCodeError, UntrustedPickleError
from volumes.contract import VolumeInfo

torch = dnnlib.util.lazy_import('torch')  # Imported at first use, so that --help answers at once.

EXPORT_FORMAT = 'stylegan2-ada-3d-export/2'
OLD_EXPORT_FORMATS = ('stylegan2-ada-3d-export/1',)  # Their config holds `dataset_info` and `voxel_spacing`.
# The classes an export may rebuild. A name from the file is never resolved freely: that would let an export
# call any importable function, which is what the export exists to rule out.
EXPORTABLE_CLASSES = ('training.networks.Generator',)
EXPORT_SUFFIXES = ('.pt', '.pth')  # A file so named is read as a safe export only.
# The dataset classes a network file may name in its training_set_kwargs (calc_metrics.py builds the dataset by
# that name, which could otherwise be any importable function).
DATASET_CLASSES = ('training.dataset.VolumeFolderDataset',)


def _network_class_name(module: torch.nn.Module) -> str:
    # Classes rebuilt from a pickle live in a module made from stored source; the export always refers to
    # the same class of this repository's training.networks.
    return f'training.networks.{type(module).__name__}'


def export_network(network: torch.nn.Module, training_set_kwargs: dict | None, dest: str) -> None:
    """Write `network` (G_ema, a persistent Generator with its volume record) as weights plus a JSON config,
    atomically."""
    class_name = _network_class_name(network)
    if class_name not in EXPORTABLE_CLASSES:
        raise ValueError(f'cannot export a {type(network).__name__}; expected one of {", ".join(EXPORTABLE_CLASSES)}')
    init_kwargs = dict(network.init_kwargs)
    init_kwargs.pop('voxel_spacing', None)  # A generator of an earlier version: its record is volume_info now.
    if getattr(network, 'volume_info', None) is not None:
        init_kwargs['volume_info'] = network.volume_info.to_dict()
    config = dict(class_name=class_name, init_args=list(network.init_args), init_kwargs=init_kwargs,
                  training_set_kwargs=training_set_kwargs)
    payload = dict(format=EXPORT_FORMAT, config=json.dumps(config),
                   state_dict={k: v.detach().cpu() for k, v in network.state_dict().items()})
    dnnlib.util.atomic_write(dest, lambda f: torch.save(payload, f))


def _load_export(path: str, name: str, trusted: bool) -> dict:
    try:  # torch.load reads a record with a flipped byte without a word; the zip's CRC-32s catch it.
        with zipfile.ZipFile(path) as z:
            damaged = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        damaged = f'? ({e})'
    if damaged is not None:
        raise ValueError(f'{name} is a damaged safe export: its record {damaged} does not match its CRC-32')
    try:
        payload = safe_unpickle.load_weights(path)
    except UntrustedPickleError as e:  # weights_only met something other than tensors and plain containers.
        if not trusted:
            raise ValueError(f'{name} {e}: it is not a safe export, and loading it could run code; '
                             f'{TRUST_HINT}') from None
        safe_unpickle.warn_trusted(name, str(e))
        payload = _unpickle(name, lambda: torch.load(path, map_location='cpu', weights_only=False))
        if isinstance(payload, dict) and 'format' not in payload:
            return payload  # A trusted torch.save of a snapshot's dict: checked as a snapshot.
    except Exception as e:  # A damaged archive: torch raises RuntimeError and others.
        raise ValueError(f'{name} is not a readable safe export ({dnnlib.util.one_line(e, 240)})') from None
    fmt = payload.get('format') if isinstance(payload, dict) else None
    if fmt not in (EXPORT_FORMAT, *OLD_EXPORT_FORMATS):
        raise ValueError(f'{name} is a PyTorch file but not a {EXPORT_FORMAT} export')
    try:
        config = json.loads(payload['config'])
        class_name = config['class_name']
        if class_name not in EXPORTABLE_CLASSES:
            raise ValueError(f'names class "{class_name}"; only {", ".join(EXPORTABLE_CLASSES)} is allowed')
        init_kwargs = dict(config['init_kwargs'])
        if fmt in OLD_EXPORT_FORMATS:
            init_kwargs = _migrate_export_v1(init_kwargs, config.get('dataset_info'), name)
        network = dnnlib.util.construct_class_by_name(*config['init_args'], class_name=class_name, **init_kwargs)
        network.load_state_dict(payload['state_dict'])
    except Exception as e:  # Missing keys, wrong types, weights that do not fit the config.
        raise ValueError(f'{name} is a damaged safe export ({type(e).__name__}: {dnnlib.util.one_line(e, 240)})') from None
    network = network.eval().requires_grad_(False)
    return dict(G=None, D=None, G_ema=network, augment_pipe=None, training_set_kwargs=config.get('training_set_kwargs'))

#----------------------------------------------------------------------------
# Files of earlier versions.


def _migrate_export_v1(init_kwargs: dict, dataset_info: dict | None, path: str) -> dict:
    """A version-1 export kept the spacing as `voxel_spacing` and the dataset's direction, dtype and clip in
    `dataset_info`; it did not know where the volumes sat (the centre)."""
    spacing = init_kwargs.pop('voxel_spacing', None)
    record = dict(dataset_info or {}, **({'spacing': spacing} if spacing is not None else {}))
    info = VolumeInfo.from_dataset_json(record)
    channels = init_kwargs.get('img_channels', 1)
    if len(info.channels) != channels:
        info = dataclasses.replace(info, channels=_channel_names(channels))
    _note(path, info, 'an export of an earlier version: the centre is unknown')
    return dict(init_kwargs, volume_info=info.to_dict())


def ensure_volume_info(G: torch.nn.Module, path: str) -> None:
    """Give a generator without a volume record (pickled by an earlier version, or built without one) the record
    that can be known from it, and say on stderr what is assumed."""
    if getattr(G, 'volume_info', None) is not None:
        return
    spacing = getattr(G, 'voxel_spacing', None)
    G.volume_info = VolumeInfo(spacing=spacing or (1.0, 1.0, 1.0), channels=_channel_names(G.img_channels))
    reason = 'written before networks carried their volume record' if spacing is not None else \
        'holds no volume record and no spacing'
    _note(path, G.volume_info, reason)


def _channel_names(count: int) -> tuple[str, ...]:
    return ('image',) if count == 1 else tuple(f'channel{c}' for c in range(count))


def _note(path: str, info: VolumeInfo, reason: str) -> None:
    print(f'Note: {path} was {reason}; assuming {info.describe()} (legacy.py export --data=DATASET records the '
          f'dataset\'s own).', file=sys.stderr)


def load_network(path_or_url: str, trust_pickle: bool | None = None) -> dict:
    """Read a snapshot pickle or a safe export: dict(G, D, G_ema, augment_pipe, training_set_kwargs).

    Entries a file does not hold are None (an export holds only G_ema). G_ema always has `volume_info`.
    trust_pickle: also load what the safe loaders refuse, after a one-line warning on stderr (the file's code
    runs); None: as the environment variable STYLEGAN3D_TRUST_PICKLE says (unset: no).
    Raises OSError or ValueError with a one-line message naming the file.
    """
    trusted = safe_unpickle.trusted_by_env() if trust_pickle is None else bool(trust_pickle)
    local = dnnlib.util.open_url(path_or_url, return_filename=True)
    with open(local, 'rb') as f:
        head = f.read(4)
    if zipfile.is_zipfile(local):  # torch.save's format: the safe export.
        data = _load_export(local, path_or_url, trusted)
    elif head == b'PK\x03\x04':  # A zip's first entry, but no readable directory at its end.
        raise ValueError(f'{path_or_url} is a truncated or damaged zip archive (a safe export?)')
    elif _suffix(path_or_url) in EXPORT_SUFFIXES:
        data = _load_misnamed_export(local, path_or_url, head, trusted)
    else:
        data = _load_pickle(local, path_or_url, trusted)
    data = _check_network_file(data, path_or_url, trusted)
    ensure_volume_info(data['G_ema'], path_or_url)
    return data


def _suffix(path_or_url: str) -> str:
    path = urllib.parse.urlparse(path_or_url).path if dnnlib.util.is_url(path_or_url) else path_or_url
    return os.path.splitext(path)[1].lower()


def _load_misnamed_export(local: str, name: str, head: bytes, trusted: bool) -> dict:
    # A plain pickle under a safe export's name (one a README tells people to trust): never unpickled unasked.
    if not head.startswith(b'\x80'):  # Protocol 2 and later pickles start so; this is no pickle at all.
        raise ValueError(f'{name} is neither a network snapshot nor a safe export (not a zip archive)')
    reason = 'is a plain pickle, not a safe export (a zip archive that torch.load(weights_only=True) reads)'
    if not trusted:
        raise ValueError(f'{name} {reason}; a file named {_suffix(name)} is read only as a safe export, since '
                         f'unpickling could run code; {TRUST_HINT}')
    safe_unpickle.warn_trusted(name, reason)
    return _unpickle(name, lambda: _plain_pickle_load(local))


def _load_pickle(local: str, name: str, trusted: bool) -> dict:
    try:
        with open(local, 'rb') as f:
            return safe_unpickle.restricted_load(f)
    except UntrustedPickleError as e:
        if not trusted:
            raise ValueError(f'{name} is refused: {e}; loading it could run code; {TRUST_HINT}') from None
        safe_unpickle.warn_trusted(name, str(e))
        return _unpickle(name, lambda: _plain_pickle_load(local))
    except StoredCodeError as e:
        raise ValueError(f'{name} cannot be loaded: {dnnlib.util.one_line(e, 240)}') from None
    except OSError:
        raise
    except Exception as e:  # Unpickling arbitrary bytes fails in many ways (UnpicklingError, EOFError, KeyError...).
        raise ValueError(f'{name} is neither a network snapshot nor a safe export '
                         f'({type(e).__name__}: {dnnlib.util.one_line(e, 240)})') from None


def _plain_pickle_load(local: str) -> object:
    with open(local, 'rb') as f:
        return pickle.load(f)  # Only after the user said they trust the file.


def _unpickle(name: str, load) -> object:
    try:
        return load()
    except OSError:
        raise
    except Exception as e:
        raise ValueError(f'{name} is neither a network snapshot nor a safe export '
                         f'({type(e).__name__}: {dnnlib.util.one_line(e, 240)})') from None


def _check_network_file(data: object, name: str, trusted: bool) -> dict:
    """What a loaded file must hold before any tool uses it; missing entries become None."""
    hint = 'is it a stylegan2-ada-3d network snapshot?'
    if not isinstance(data, dict) or data.get('G_ema') is None:
        raise ValueError(f'{name} holds no G_ema; {hint}')
    G = data['G_ema']
    if not _is_generator(G):
        raise ValueError(f'{name} holds a G_ema of type {type(G).__name__}, not a generator; {hint}')
    for key in ('G', 'D', 'augment_pipe'):
        if data.get(key) is not None and not isinstance(data[key], torch.nn.Module):
            raise ValueError(f'{name} holds a {key} of type {type(data[key]).__name__}, not a network; {hint}')
        data.setdefault(key, None)
    dataset_kwargs = data.setdefault('training_set_kwargs', None)
    if dataset_kwargs is not None and not isinstance(dataset_kwargs, dict):
        raise ValueError(f'{name} holds training_set_kwargs of type {type(dataset_kwargs).__name__}, not a dict')
    dataset_class = (dataset_kwargs or {}).get('class_name', DATASET_CLASSES[0])
    if dataset_class not in DATASET_CLASSES:
        reason = f'its training_set_kwargs name "{" ".join(str(dataset_class).split())[:80]}" as the dataset class'
        if not trusted:
            raise ValueError(f'{name} is refused: {reason}, where only {", ".join(DATASET_CLASSES)} is built from '
                             f'a network file; {TRUST_HINT}')
        safe_unpickle.warn_trusted(name, reason)
    info = getattr(G, 'volume_info', None)
    if info is not None:  # Built without its checks by unpickling: checked here, as the constructor would.
        try:
            if not isinstance(info, VolumeInfo):
                raise TypeError(f'of type {type(info).__name__}, not a VolumeInfo')
            G.volume_info = VolumeInfo.from_dict(info.to_dict())
        except Exception as e:
            raise ValueError(f'{name} holds a damaged volume record ({type(e).__name__}: {dnnlib.util.one_line(e, 240)})') from None
    return data


def _is_generator(G: object) -> bool:
    shape = getattr(G, 'img_shape', None)
    return isinstance(G, torch.nn.Module) and \
        all(isinstance(getattr(G, key, None), int) for key in ('z_dim', 'c_dim', 'img_channels')) and \
        isinstance(shape, (tuple, list)) and len(shape) == 3 and all(isinstance(s, int) for s in shape)


def load_network_or_exit(path_or_url: str, param_hint: str = '--network', trust_pickle: bool | None = None) -> dict:
    """load_network for CLIs: failures become one-line click errors."""
    try:
        return load_network(path_or_url, trust_pickle=trust_pickle)
    except (OSError, ValueError) as e:
        raise click.BadParameter(dnnlib.util.one_line(e, 400), param_hint=param_hint) from None

#----------------------------------------------------------------------------
# Command line.


@click.group(cls=dnnlib.cli.Group)
def cli() -> None:
    """Network file utilities."""


@cli.command('export', cls=dnnlib.cli.Command)
@dnnlib.cli.network_option()
@dnnlib.cli.dest_option('Output file (.pt), loadable with torch.load(weights_only=True)')
@click.option('--data', help='Record this dataset\'s volume record (for snapshots of earlier versions)',
              metavar='PATH', type=dnnlib.cli.PATH)
def export_command(network_pkl: str, trust_pickle: bool, dest: str, data: str | None) -> None:
    """Write G_ema of a snapshot as weights plus a JSON config (no code inside)."""
    if os.path.isdir(dest):
        raise click.BadParameter(f'"{dest}" is a folder; expected a file name such as G.pt', param_hint='--dest')
    network = load_network_or_exit(network_pkl, trust_pickle=trust_pickle)
    if data is not None:
        from volumes.packed import PackedDataset
        G = network['G_ema']
        try:
            dataset = PackedDataset(data)
        except (OSError, ValueError) as e:
            raise click.BadParameter(dnnlib.util.one_line(e, 240), param_hint='--data') from None
        if tuple(dataset.img_shape) != tuple(G.img_shape) or dataset.num_channels != G.img_channels:
            raise click.BadParameter(f'{data} holds {dataset.num_channels}-channel volumes of shape (D, H, W) = '
                                     f'{tuple(dataset.img_shape)}; the network makes {G.img_channels}-channel '
                                     f'{tuple(G.img_shape)}', param_hint='--data')
        G.volume_info = dataset.volume_info
    try:
        if os.path.dirname(dest):
            os.makedirs(os.path.dirname(dest), exist_ok=True)
        export_network(network['G_ema'], network['training_set_kwargs'], dest)
    except (OSError, ValueError) as e:
        raise click.ClickException(dnnlib.util.write_error_message(dest, e) if isinstance(e, OSError) else
                                   f'cannot write {dest}: {dnnlib.util.one_line(e, 240)}') from None
    print(f'Wrote {dest}')


if __name__ == '__main__':
    cli()

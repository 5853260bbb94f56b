# SPDX-License-Identifier: Apache-2.0
"""Training presets: configs/*.toml read against a schema of descriptive keys, and resolved into hyperparameters.

A preset may `extend` another; command-line options override what it sets. Every key is checked: an unknown or
misspelt key, or a value of the wrong type, is a one-line error that names the file and suggests the nearest valid
key. The official code's short names (`mb`, `gamma`, `ema`, `map`, ...) are recognised and answered with the key to
write instead. Also the augment pipes of --augpipe (AUGPIPE_SPECS). Light on purpose (no torch): train.py reads presets
before it imports anything heavy.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

#----------------------------------------------------------------------------
# The augment pipes of --augpipe (the official presets; multipliers set to 1).

_BLIT = dict(xflip=1, rotate90=1, xint=1)
_GEOM = dict(scale=1, rotate=1, aniso=1, xfrac=1)
_COLOR = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)

AUGPIPE_SPECS: dict[str, dict[str, float]] = {
    'blit':   dict(_BLIT),
    'geom':   dict(_GEOM),
    'color':  dict(_COLOR),
    'filter': dict(imgfilter=1),
    'noise':  dict(noise=1),
    'cutout': dict(cutout=1),
    'bg':     dict(**_BLIT, **_GEOM),
    'bgc':    dict(**_BLIT, **_GEOM, **_COLOR),
    'bgcf':   dict(**_BLIT, **_GEOM, **_COLOR, imgfilter=1),
    'bgcfn':  dict(**_BLIT, **_GEOM, **_COLOR, imgfilter=1, noise=1),
    'bgcfnc': dict(**_BLIT, **_GEOM, **_COLOR, imgfilter=1, noise=1, cutout=1),
}

#----------------------------------------------------------------------------
# Training presets.

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')
NUMBER = (int, float)


@dataclasses.dataclass(frozen=True)
class Key:
    """One preset key: its type(s), its default and what it means."""
    types: type | tuple
    default: Any
    help: str


SCHEMA = {
    'description': Key(str, '', 'one line that says what the preset is for'),
    'extends': Key(str, None, 'the preset this one starts from: a name, or a .toml path (relative to this file)'),
    'size': Key(str, None, 'the volume size XxYxZ the preset is for (a dataset of another size is refused)'),
    'auto': Key(bool, False, 'the official auto formulas: batch, gamma, EMA, width and learning rate from the '
                             'resolution (the largest in-plane size) and the number of GPUs'),
    'reference_gpus': Key(int, 0, 'GPUs the batch was tuned for (the per-GPU batch is batch / reference_gpus); '
                                  '0: as many as are used'),
    'kimg': Key(NUMBER, 25000, 'training length in thousands of real volumes shown'),
    'batch': Key(int, 32, 'total batch size over all GPUs'),
    'mbstd_group': Key(int, 4, 'minibatch-standard-deviation group size of the discriminator'),
    'channel_base': Key(int, 32768, 'channels of a block = min(channel_base / its in-plane size, channel_max)'),
    'channel_max': Key(int, 512, 'largest number of channels of a block'),
    'learning_rate': Key(NUMBER, 0.002, 'Adam learning rate of G and D'),
    'r1_gamma': Key(NUMBER, 10, 'R1 regularisation weight'),
    'ema_kimg': Key(NUMBER, 10, 'half-life of G_ema in thousands of volumes'),
    'ema_rampup': Key(NUMBER, 0, 'G_ema ramp-up (half-life at most images shown x this); 0: none'),
    'mapping_layers': Key(int, 8, 'layers of the mapping network'),
    'z_dim': Key(int, 512, 'size of the latent z'),
    'w_dim': Key(int, 512, 'size of the intermediate latent w'),
    'generator_architecture': Key(str, 'skip', 'orig, skip or resnet'),
    'discriminator_architecture': Key(str, 'resnet', 'orig, skip or resnet'),
    'conditional': Key(bool, False, 'train on the class labels of the dataset'),
    'metrics': Key(list, [], 'metrics to evaluate at every network snapshot'),
}

# The official code's cfg_specs names (and this project's earlier preset keys) -> the key to write.
OFFICIAL_NAMES = {'ref_gpus': 'reference_gpus', 'mb': 'batch', 'mbstd': 'mbstd_group', 'fmaps': 'channel_base',
                  'lrate': 'learning_rate', 'gamma': 'r1_gamma', 'ema': 'ema_kimg', 'ramp': 'ema_rampup',
                  'map': 'mapping_layers', 'cond': 'conditional', 'g_architecture': 'generator_architecture',
                  'd_architecture': 'discriminator_architecture'}


class PresetError(ValueError):
    """A preset that cannot be used; the message is one line naming the file."""


def list_presets() -> list[str]:
    return sorted(os.path.splitext(name)[0] for name in os.listdir(CONFIG_DIR) if name.endswith('.toml'))


def preset_path(name: str, extended_by: str | None = None) -> str:
    """The file of a preset name (configs/<name>.toml) or .toml path; extended_by: the preset file whose `extends`
    names it, which the error then names. A relative .toml path in `extends` is read from the folder of the file
    that names it, as a user reading that file expects, not from the current folder."""
    if name.endswith('.toml'):
        path = os.path.expanduser(name)
        if extended_by and not os.path.isabs(path):
            path = os.path.join(os.path.dirname(extended_by), path)
        path = os.path.normpath(path)
    else:
        path = os.path.join(CONFIG_DIR, name + '.toml')
    if not os.path.isfile(path):
        nearest = difflib.get_close_matches(name, list_presets(), n=1, cutoff=0.6)
        hint = f' (did you mean "{nearest[0]}"?)' if nearest else ''
        where = f'{extended_by}: extends = "{name}", which is no preset' if extended_by else f'no preset "{name}"'
        raise PresetError(f'{where}{hint}; expected one of {", ".join(list_presets())} or a .toml file')
    return path


def load_preset(name: str, _seen: tuple[str, ...] = ()) -> dict:
    """The keys of configs/<name>.toml (or a .toml path), checked, with the presets it extends under them."""
    path = preset_path(name, extended_by=_seen[-1] if _seen else None)
    if path in _seen:
        raise PresetError(f'{path}: "extends" goes round in a circle')
    with open(path, 'rb') as f:
        try:
            preset = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise PresetError(f'{path} is not valid TOML: {e}') from None
    check_keys(preset, path)
    parent = preset.pop('extends', None)
    return {**load_preset(parent, (*_seen, path)), **preset} if parent else preset


def check_keys(preset: dict, path: str) -> None:
    """Raise PresetError for an unknown key (with the nearest valid one) or a value of the wrong type."""
    for key, value in preset.items():
        if key in OFFICIAL_NAMES:
            raise PresetError(f'{path}: "{key}" is the official short name; write "{OFFICIAL_NAMES[key]}" '
                              f'({SCHEMA[OFFICIAL_NAMES[key]].help})')
        if key not in SCHEMA:
            raise PresetError(f'{path}: unknown key "{key}"{_suggestion(key)}')
        expected = SCHEMA[key].types
        if isinstance(value, bool) and bool not in (expected if isinstance(expected, tuple) else (expected,)) or \
                not isinstance(value, expected):
            raise PresetError(f'{path}: "{key}" must be {_type_name(expected)}, got {value!r}')


def _suggestion(key: str) -> str:
    match = difflib.get_close_matches(key, [*SCHEMA, *OFFICIAL_NAMES], n=1, cutoff=0.6)
    if not match:
        return f'; valid keys: {", ".join(SCHEMA)}'
    return f'; did you mean "{OFFICIAL_NAMES.get(match[0], match[0])}"?'


def _type_name(types: type | tuple) -> str:
    names = {int: 'an integer', float: 'a number', str: 'a string', bool: 'true or false', list: 'a list'}
    return ' or '.join(names[t] for t in (types if isinstance(types, tuple) else (types,)))


def resolve(preset: dict, gpus: int, res: int) -> dict[str, Any]:
    """Every schema key's value for a run on `gpus` GPUs at resolution `res` (the largest in-plane size): the
    preset's, else the default; `auto` applies the official formulas."""
    spec = {key: key_spec.default for key, key_spec in SCHEMA.items()}
    spec.update(preset)
    if spec['auto']:
        spec['reference_gpus'] = gpus
        spec['batch'] = max(min(gpus * min(4096 // res, 32), 64), gpus)
        spec['mbstd_group'] = min(spec['batch'] // gpus, 4)
        spec['channel_base'] = 32768 if res >= 512 else 16384
        spec['learning_rate'] = 0.002 if res >= 1024 else 0.0025
        spec['r1_gamma'] = 0.0002 * (res ** 2) / spec['batch']
        spec['ema_kimg'] = spec['batch'] * 10 / 32
    if spec['reference_gpus'] <= 0:
        spec['reference_gpus'] = gpus
    return spec

# SPDX-License-Identifier: Apache-2.0
"""Reading network pickles without running a stranger's code.

`pickle.load` calls whatever the file names (any importable function, with arguments from the file), so a file
can run a shell command while it loads. RestrictedUnpickler resolves a name only when it is one of a short list
of exact (module, name) pairs that rebuild data: dicts (OrderedDict, dnnlib's EasyDict), the volume record,
tensors, parameters and their storages, torch sizes, dtypes and devices, numpy arrays, dtypes and scalars.
Nothing is admitted by module prefix. (This is the way the pickle documentation gives for restricting globals;
torch's own weights_only loader cannot rebuild persistent networks, so it is written here.)

Five of the names are replaced by checked versions:
- torch.storage._load_from_bytes, how a pickled tensor's storage comes back, calls torch.load on bytes from the
  file: a nested pickle, read here with weights_only=True.
- torch._utils._rebuild_tensor_v2 and _rebuild_parameter take backward hooks (functions) from the file: only an
  empty set is accepted.
- _codecs.encode (how pickle protocol 2 writes bytes) may use the latin1 codec only.
- torch_utils.persistence._reconstruct_persistent_obj executes the module source stored with every network. Here
  it runs only when the source's SHA-256 is that of a module of this tree that defines persistent classes or of
  an earlier version listed in torch_utils/known_sources.py, checked before any of it runs (the import hooks see
  only a known source, and what they return must be known too), and only to rebuild a persistent class that this
  very source defines.

Anything else raises UntrustedPickleError with a one-line reason. The tools load such a file only when the user
says they trust it (--trust-pickle, or STYLEGAN3D_TRUST_PICKLE=1), with plain pickle after a one-line warning.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import io
import os
import pickle
import re
import sys
import tokenize
import types
from typing import IO, Any, Callable

import dnnlib
from dnnlib.cli import TRUST_PICKLE_ENV
from torch_utils import persistence
from torch_utils.known_sources import KNOWN_SOURCES

torch = dnnlib.util.lazy_import('torch')  # Imported at first use, so that --help answers at once.

# This tree's modules that define persistent classes: their current source is known without being listed.
PERSISTENT_MODULES = ('training.networks', 'training.layers', 'training.augment', 'metrics.medicalnet',
                      'metrics.resnet2d')
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TRUST_HINT = f'pass --trust-pickle (or set {TRUST_PICKLE_ENV}=1) only if you trust who made it'

# torch dtypes pickle as attributes of the torch module (torch.float32); these are the names they use.
_TORCH_DTYPES = ('float16', 'float32', 'float64', 'bfloat16', 'complex32', 'complex64', 'complex128', 'uint8',
                 'int8', 'int16', 'int32', 'int64', 'uint16', 'uint32', 'uint64', 'bool', 'half', 'float', 'double',
                 'short', 'int', 'long', 'cfloat', 'cdouble')


class UntrustedPickleError(ValueError):
    """A pickle names code that the restricted loader does not run."""


class StoredCodeError(ValueError):
    """Known stored code failed to run (e.g. it imports a module that this release no longer has)."""


def trusted_by_env() -> bool:
    """True when STYLEGAN3D_TRUST_PICKLE says yes (the values click reads as true for --trust-pickle)."""
    return os.environ.get(TRUST_PICKLE_ENV, '').strip().lower() in ('1', 'true', 't', 'yes', 'y', 'on')


def warn_trusted(path: str, reason: str) -> None:
    """The one line a trusted load prints before it runs what the file names."""
    print(f'Warning: {path}: {reason}; loading it anyway since you trust it (--trust-pickle or {TRUST_PICKLE_ENV}): '
          f'the code it names runs now', file=sys.stderr, flush=True)

def _short(text: Any, limit: int = 80) -> str:
    # Names in messages come from the file: one line, and not a megabyte of it.
    text = ' '.join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + '...'

#----------------------------------------------------------------------------
# Known module sources.


@functools.lru_cache(maxsize=64)
def source_digest(src: str) -> str:
    """SHA-256 of a module's source text (a file's text as inspect.getsource returns it)."""
    return hashlib.sha256(src.encode('utf-8', 'surrogatepass')).hexdigest()


_added_sources: dict[str, str] = {}  # add_known_module's.


def add_known_module(module: types.ModuleType) -> None:
    """Let snapshots of the persistent classes that `module` defines load without --trust-pickle in this process.

    For code that runs here anyway (tests with their own networks, extensions of the project): an imported
    module is trusted already. The module's current source is admitted, under the module's name.
    """
    _added_sources[source_digest(persistence.module_source(module))] = module.__name__


@functools.cache
def _current_sources() -> dict[str, str]:
    found = {}
    for module in PERSISTENT_MODULES:
        path = os.path.join(_ROOT, *module.split('.')) + '.py'
        try:
            with tokenize.open(path) as f:  # Decoded and newline-translated as inspect.getsource reads it.
                found[source_digest(f.read())] = module
        except OSError:
            continue  # Not in this installation: nothing of it is known.
    return found


def known_sources() -> dict[str, str]:
    """{SHA-256 of a source: its module} for every module source whose stored copy may be executed."""
    return {**{digest: module for digest, module, _ in KNOWN_SOURCES}, **_current_sources(), **_added_sources}


def _check_known_source(meta: Any, origin: str) -> None:
    if not isinstance(meta, dict) or 'state' not in meta or \
            not all(isinstance(meta.get(key), str) for key in ('module_src', 'module_name', 'class_name')):
        raise UntrustedPickleError('it holds a persistent object without its module source, module and class names')
    digest = source_digest(meta['module_src'])
    module = known_sources().get(digest)
    if module is None:
        raise UntrustedPickleError(f'its {_short(meta["class_name"])} comes with {origin} for '
                                   f'{_short(meta["module_name"])} that this release does not know (SHA-256 '
                                   f'{digest[:16]}...)')
    if module != meta['module_name']:
        raise UntrustedPickleError(f'its {_short(meta["class_name"])} comes with the code of {module} under the name '
                                   f'{_short(meta["module_name"])}')

#----------------------------------------------------------------------------
# Checked replacements of the functions a snapshot calls.


def _reconstruct_persistent(meta: Any) -> Any:
    _check_known_source(meta, 'stored code')
    meta = persistence.apply_import_hooks(meta)
    _check_known_source(meta, 'code from an import hook')
    persistence.check_format(meta)
    try:
        module = persistence.find_module(meta)
    except Exception as e:  # Known code that no longer runs (e.g. it imports a module that was removed).
        raise StoredCodeError(f'the stored code of {meta["module_name"]} (for its {_short(meta["class_name"])}) '
                              f'does not run with this release ({type(e).__name__}: {_short(e, 200)})') from None
    cls = getattr(module, meta['class_name'], None)
    if not (isinstance(cls, type) and persistence.is_persistent(cls)
            and cls.__dict__['_orig_module_src'] == meta['module_src']):
        raise UntrustedPickleError(f'it asks {meta["module_name"]} for "{_short(meta["class_name"])}", which is '
                                   f'not a persistent class defined there')
    return persistence.instantiate(cls, meta['state'])


def _load_storage_from_bytes(data: Any) -> Any:
    # torch.storage._load_from_bytes does torch.load(weights_only=False) on these bytes: a pickle in the pickle.
    if not isinstance(data, bytes):
        raise UntrustedPickleError('a tensor storage is not stored as bytes')
    try:
        return torch.load(io.BytesIO(data), weights_only=True)
    except pickle.UnpicklingError:
        raise UntrustedPickleError('a tensor storage holds a nested pickle of other objects than weights') from None


def _check_hooks(backward_hooks: Any) -> None:
    if backward_hooks:
        raise UntrustedPickleError('a tensor carries backward hooks (functions that would run in a backward pass)')


def _rebuild_tensor(storage: Any, storage_offset: int, size: Any, stride: Any, requires_grad: bool,
                    backward_hooks: Any, metadata: Any = None) -> Any:
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise UntrustedPickleError(f'a tensor is rebuilt from a {type(storage).__name__}, not from a storage')
    _check_hooks(backward_hooks)
    if metadata is not None and not isinstance(metadata, dict):
        raise UntrustedPickleError('a tensor carries metadata that is not a dict')
    return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
                                           collections.OrderedDict(), metadata)


def _rebuild_parameter(data: Any, requires_grad: bool, backward_hooks: Any) -> Any:
    if not isinstance(data, torch.Tensor):
        raise UntrustedPickleError(f'a parameter is rebuilt from a {type(data).__name__}, not from a tensor')
    _check_hooks(backward_hooks)
    return torch._utils._rebuild_parameter(data, requires_grad, collections.OrderedDict())

def _encode_latin1(text: Any, encoding: str) -> bytes:
    # Pickle protocol 2 writes bytes as _codecs.encode(text, 'latin1'); no other codec is looked up.
    if not isinstance(text, str) or encoding != 'latin1':
        raise UntrustedPickleError(f'it encodes bytes with "{_short(encoding)}", not latin1 as pickle does')
    return text.encode('latin1')

#----------------------------------------------------------------------------
# The unpickler.


@functools.cache
def admitted_globals() -> dict[tuple[str, str], Any]:
    """{(module, name) as a pickle names it: what it rebuilds to}: everything a network snapshot may name."""
    import numpy
    try:
        from numpy._core import multiarray  # numpy 2 pickles as numpy._core, numpy 1 as numpy.core.
    except ImportError:
        from numpy.core import multiarray

    from volumes import contract
    table: dict[tuple[str, str], Any] = {
        ('collections', 'OrderedDict'): collections.OrderedDict,
        ('dnnlib.util', 'EasyDict'): dnnlib.util.EasyDict,
        ('volumes.contract', 'VolumeInfo'): contract.VolumeInfo,
        ('volumes.contract', 'IntensityMapping'): contract.IntensityMapping,
        ('torch_utils.persistence', '_reconstruct_persistent_obj'): _reconstruct_persistent,
        ('torch.storage', '_load_from_bytes'): _load_storage_from_bytes,
        ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
        ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
        ('torch', 'Size'): torch.Size,
        ('torch', 'device'): torch.device,
        ('numpy', 'dtype'): numpy.dtype,
        ('numpy', 'ndarray'): numpy.ndarray,
        ('_codecs', 'encode'): _encode_latin1,
    }
    for module in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        table[(module, 'scalar')] = multiarray.scalar
        table[(module, '_reconstruct')] = multiarray._reconstruct
    for name in _TORCH_DTYPES:
        dtype = getattr(torch, name, None)
        if isinstance(dtype, torch.dtype):
            table[('torch', name)] = dtype
    return table


class RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves only admitted_globals(); any other name raises UntrustedPickleError."""

    def find_class(self, module: str, name: str) -> Any:
        found = admitted_globals().get((module, name))
        if found is None:
            raise UntrustedPickleError(f'it names {_short(f"{module}.{name}")}, which a network snapshot does not '
                                       f'need')
        return found


def restricted_load(file: IO[bytes]) -> Any:
    """Unpickle `file` with RestrictedUnpickler. Raises UntrustedPickleError for what it does not run, and what
    pickle raises for damaged data."""
    return RestrictedUnpickler(file).load()


def load_weights(path: str, allowed: Callable[[], list] | None = None) -> Any:
    """torch.load(weights_only=True) of `path`, also admitting the classes `allowed()` returns (e.g.
    numpy_rng_classes). A file that holds anything else raises UntrustedPickleError."""
    try:
        with torch.serialization.safe_globals(allowed() if allowed is not None else []):
            return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        raise UntrustedPickleError(f'holds pickled Python objects, not only weights ({_weights_only_reason(e)})') \
            from None


def numpy_rng_classes() -> list:
    """What a numpy RandomState's state (a uint32 array) pickles as."""
    import numpy
    try:
        from numpy._core import multiarray
    except ImportError:
        from numpy.core import multiarray
    return [multiarray._reconstruct, numpy.ndarray, numpy.dtype, type(numpy.dtype(numpy.uint32))]


def _weights_only_reason(error: BaseException) -> str:
    # torch's message runs over many lines around the one thing it refused, which it names as "GLOBAL x.y".
    text = ' '.join(str(error).split())
    named = re.search(r'GLOBAL ([\w.]+)', text)
    if named:
        return f'it names {_short(named.group(1))}'
    reason = text.split('WeightsUnpickler error:', 1)[-1].split(' Check the documentation', 1)[0].strip()
    return _short(reason, 160)

# SPDX-License-Identifier: Apache-2.0
"""Pickles that carry their own source code.

`@persistent_class` makes a class pickle as (the full source of the module that defines it, the class name,
the object's state). Unpickling executes that stored source in a fresh module and rebuilds the object from it,
so a network snapshot still loads after the code that made it has changed, moved or been deleted.

SECURITY: a plain `pickle.load` of such a file RUNS THE PYTHON CODE STORED INSIDE IT (as loading any pickle can).
The tools never do that by default: legacy.load_network reads snapshots through torch_utils/safe_unpickle.py,
which executes a stored source only when its SHA-256 is that of a module of this tree or of an earlier version
listed in torch_utils/known_sources.py, checked before any of it runs and again after the import hooks, and
admits no other callable than the few that rebuild tensors, arrays and dicts. Anything else needs the user's
--trust-pickle. The safe export (weights plus a JSON config, `torch.load(weights_only=True)`) runs no code.

When the defining module is already imported and its source is unchanged, the original class is reused, so
`isinstance` keeps working for snapshots made by the current code.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import sys
import types
from typing import Any, Callable

_FORMAT_VERSION = 1

_module_to_src: dict[types.ModuleType, str] = {}  # Source of each module we know, keyed by module object.
_src_to_module: dict[str, types.ModuleType] = {}  # Modules made from stored source, keyed by that source.
_import_hooks: list[Callable[[dict], dict]] = []


def persistent_class(orig_class: type) -> type:
    """Class decorator: instances pickle together with the source code of the class's module.

    The wrapped class also records the arguments it was constructed with (`init_args`, `init_kwargs`), so an
    object can be re-created with the same hyperparameters.
    """
    if not isinstance(orig_class, type):
        raise TypeError('persistent_class expects a class')
    if is_persistent(orig_class):
        return orig_class
    module = sys.modules[orig_class.__module__]
    module_src = module_source(module)

    class Decorator(orig_class):
        _orig_module_src = module_src
        _orig_class_name = orig_class.__name__

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._init_args = copy.deepcopy(args)
            self._init_kwargs = copy.deepcopy(kwargs)

        @property
        def init_args(self) -> tuple:
            return copy.deepcopy(self._init_args)

        @property
        def init_kwargs(self) -> dict:
            return copy.deepcopy(self._init_kwargs)

        def __reduce__(self):
            state = self.__getstate__() if hasattr(self, '__getstate__') else self.__dict__
            meta = dict(type='class', version=_FORMAT_VERSION, module_src=self._orig_module_src,
                        module_name=orig_class.__module__, class_name=self._orig_class_name, state=state)
            return _reconstruct_persistent_obj, (meta,)

    Decorator.__name__ = orig_class.__name__
    Decorator.__qualname__ = orig_class.__qualname__
    Decorator.__module__ = orig_class.__module__
    Decorator.__doc__ = orig_class.__doc__
    return Decorator


def is_persistent(obj: Any) -> bool:
    """True for a persistent class or an instance of one."""
    cls = obj if isinstance(obj, type) else type(obj)
    return '_orig_module_src' in cls.__dict__


def import_hook(hook: Callable[[dict], dict]) -> Callable[[dict], dict]:
    """Register `hook(meta) -> meta`, called on every persistent object before it is rebuilt.

    `meta` holds 'module_src', 'module_name', 'class_name' and 'state'; a hook may patch them, e.g. to load
    snapshots whose stored source needs a fix for a newer PyTorch. The restricted loader runs the hooks only on
    a stored source it knows, and executes what they return only when that is a known source too.
    """
    _import_hooks.append(hook)
    return hook


def module_source(module: types.ModuleType) -> str:
    """The source text of `module` as persistent classes store it."""
    if module not in _module_to_src:
        _module_to_src[module] = inspect.getsource(module)
    return _module_to_src[module]


def _module_from_source(src: str) -> types.ModuleType:
    """Execute stored source once per distinct source text, in a module of its own."""
    module = _src_to_module.get(src)
    if module is None:
        name = '_persistent_module_' + hashlib.md5(src.encode()).hexdigest()
        module = types.ModuleType(name)
        sys.modules[name] = module
        _module_to_src[module] = src
        _src_to_module[src] = module
        try:
            exec(compile(src, f'<stored source of {name}>', 'exec'), module.__dict__)  # noqa: S102
        except BaseException:  # Not kept half-made: the next load would find the module without its classes.
            del sys.modules[name], _module_to_src[module], _src_to_module[src]
            raise
    return module


def find_module(meta: dict) -> types.ModuleType:
    """The module made from meta['module_src']: the live module when it is imported and its source is the same
    (no import is attempted), else one made by executing the stored source."""
    live = sys.modules.get(meta['module_name'])
    if live is not None and live in _module_to_src and _module_to_src[live] == meta['module_src']:
        return live
    return _module_from_source(meta['module_src'])


def find_class(meta: dict) -> Any:
    """The object named meta['class_name'] in find_module(meta)."""
    return getattr(find_module(meta), meta['class_name'])


def apply_import_hooks(meta: dict) -> dict:
    """A copy of `meta` after every registered import hook."""
    meta = dict(meta)
    for hook in _import_hooks:
        meta = hook(meta)
    return meta


def check_format(meta: dict) -> None:
    """Raise ValueError unless `meta` is a persistent object of a format version this code reads."""
    if meta.get('type') != 'class' or not isinstance(meta.get('version', 0), int) or \
            meta.get('version', 0) > _FORMAT_VERSION:
        raise ValueError(f'Unsupported persistent object (format version {meta.get("version")}); '
                         f'this code reads version {_FORMAT_VERSION} or older')


def instantiate(cls: type, state: Any) -> Any:
    """An object of `cls` with `state`, made without calling its constructor (as pickle does)."""
    obj = cls.__new__(cls)
    if hasattr(obj, '__setstate__'):
        obj.__setstate__(state)
    else:
        obj.__dict__.update(state)
    return obj


def _reconstruct_persistent_obj(meta: dict) -> Any:
    # What a persistent object's pickle calls. With plain pickle nothing is checked: the restricted loader
    # (torch_utils/safe_unpickle.py) puts its own checked version in place of this function.
    meta = apply_import_hooks(meta)
    check_format(meta)
    return instantiate(find_class(meta), meta['state'])

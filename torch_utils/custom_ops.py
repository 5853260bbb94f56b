# SPDX-License-Identifier: Apache-2.0
"""Build and load C++/CUDA plugins with torch.utils.cpp_extension.

Each plugin is built into `<cache>/<module_name>/<key>`, where the key hashes the sources and headers, the GPU
name, and the Python, torch and CUDA versions, so a change in any of them triggers a fresh build. The build runs
in a private temporary directory that is renamed into place when it succeeds: several ranks may build at once,
the first rename wins, and no shared lock exists that an interrupted build could leave behind. A cached build is
loaded directly from its shared object without running the compiler or ninja again.

The cache lives in `$TORCH_EXTENSIONS_DIR` if set, else in the dnnlib cache (`$DNNLIB_CACHE_DIR`, default
`~/.cache/dnnlib`) under `torch_extensions/`. A failed build raises `RuntimeError` with the compiler's output.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib.util
import os
import platform
import shutil
import sys
import uuid
from types import ModuleType
from typing import Sequence

import torch
import torch.utils.cpp_extension

import dnnlib

verbosity = 'brief'  # 'none': silent, 'brief': one line per plugin, 'full': the whole compiler output.

_cached_plugins: dict[str, ModuleType] = {}


def _cache_root() -> str:
    return os.environ.get('TORCH_EXTENSIONS_DIR') or dnnlib.make_cache_dir_path('torch_extensions')


def _device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'


def build_key(sources: Sequence[str], headers: Sequence[str] = (), extra: Sequence[str] = ()) -> str:
    """Hash of everything that should force a rebuild when it changes."""
    md5 = hashlib.md5()
    for path in sorted(sources) + sorted(headers):
        md5.update(os.path.basename(path).encode())
        with open(path, 'rb') as f:
            md5.update(f.read())
    for item in [_device_name(), torch.__version__, str(torch.version.cuda), platform.python_version(), *extra]:
        md5.update(item.encode())
    return md5.hexdigest()


def _find_shared_object(build_dir: str, module_name: str) -> str | None:
    matches = glob.glob(os.path.join(build_dir, f'{module_name}*.so')) + \
        glob.glob(os.path.join(build_dir, f'{module_name}*.pyd'))
    return matches[0] if matches else None


def _import_shared_object(module_name: str, path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[module_name] = module
    return module


def _build(module_name: str, sources: list[str], headers: list[str], final_dir: str, build_kwargs: dict) -> None:
    """Compile in a private directory, then rename it to `final_dir` (atomic; losing the race is fine)."""
    tmp_dir = f'{final_dir}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}'
    os.makedirs(tmp_dir)
    try:
        for path in sources + headers:
            shutil.copyfile(path, os.path.join(tmp_dir, os.path.basename(path)))
        tmp_sources = [os.path.join(tmp_dir, os.path.basename(path)) for path in sources]
        torch.utils.cpp_extension.load(name=module_name, sources=tmp_sources, build_directory=tmp_dir,
                                       verbose=(verbosity == 'full'), **build_kwargs)
        # If another process renamed its own build into place first, the rename fails; that build is identical.
        with contextlib.suppress(OSError):
            os.replace(tmp_dir, final_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def get_plugin(module_name: str, sources: Sequence[str], headers: Sequence[str] = (), source_dir: str | None = None,
               **build_kwargs) -> ModuleType:
    """Return the compiled plugin `module_name`, building it on first use.

    Args:
        module_name: Python name of the extension (must match TORCH_EXTENSION_NAME in the binding).
        sources: .cpp/.cu files, relative to `source_dir` if given.
        headers: headers that the sources include; part of the cache key.
        source_dir: directory of the sources and headers.
        **build_kwargs: passed to torch.utils.cpp_extension.load (extra_cflags, extra_cuda_cflags, ...).

    Raises:
        RuntimeError: the build failed; the message holds the compiler's output.
    """
    if module_name in _cached_plugins:
        return _cached_plugins[module_name]
    if source_dir is not None:
        sources = [os.path.join(source_dir, s) for s in sources]
        headers = [os.path.join(source_dir, h) for h in headers]
    sources, headers = list(sources), list(headers)
    if verbosity in ('brief', 'full'):
        print(f'Setting up PyTorch plugin "{module_name}"... ', end='', flush=True)
    try:
        final_dir = os.path.join(_cache_root(), module_name, build_key(sources, headers, [repr(build_kwargs)]))
        so_path = _find_shared_object(final_dir, module_name)
        if so_path is None:
            _build(module_name, sources, headers, final_dir, build_kwargs)
            so_path = _find_shared_object(final_dir, module_name)
            if so_path is None:
                raise RuntimeError(f'the build finished but left no shared object in {final_dir}')
        module = _import_shared_object(module_name, so_path)
    except Exception as e:
        if verbosity in ('brief', 'full'):
            print('Failed!')
        raise RuntimeError(f'Could not build PyTorch plugin "{module_name}": {e}') from e
    if verbosity in ('brief', 'full'):
        print('Done.')
    _cached_plugins[module_name] = module
    return module

# SPDX-License-Identifier: Apache-2.0
"""EasyDict, class construction by name, the download cache, stdout logging and time formatting."""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from typing import IO, Any

#----------------------------------------------------------------------------
# Dictionaries with attribute access.


class EasyDict(dict):
    """A dict whose items are also attributes: `d.lr` is `d['lr']`."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        del self[name]

#----------------------------------------------------------------------------
# Building objects from a `class_name` string, so a run is described entirely by JSON-able kwargs.


def get_obj_by_name(name: str) -> Any:
    """Resolve 'package.module.attr' (attr may be nested) to the object it names."""
    parts = name.split('.')
    for split in range(len(parts) - 1, 0, -1):
        module_name, attr_path = '.'.join(parts[:split]), parts[split:]
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name is not None and module_name.startswith(e.name):
                continue  # This prefix is not a module; try a shorter one.
            raise
        try:
            for attr in attr_path:
                obj = getattr(obj, attr)
            return obj
        except AttributeError:
            continue
    raise ValueError(f'Cannot find "{name}": expected "module.attribute"')


def call_func_by_name(*args, func_name: str, **kwargs) -> Any:
    """Call the function named `func_name` with the given arguments."""
    func = get_obj_by_name(func_name)
    if not callable(func):
        raise ValueError(f'"{func_name}" is not callable')
    return func(*args, **kwargs)


def construct_class_by_name(*args, class_name: str, **kwargs) -> Any:
    """Instantiate the class named `class_name` with the given arguments."""
    return call_func_by_name(*args, func_name=class_name, **kwargs)


def get_module_dir_by_obj_name(obj_name: str) -> str:
    module = sys.modules[get_obj_by_name(obj_name).__module__]
    return os.path.dirname(os.path.abspath(module.__file__))

#----------------------------------------------------------------------------
# Cache directory and downloads.


def make_cache_dir_path(*paths: str) -> str:
    """Path inside the cache: $DNNLIB_CACHE_DIR, else ~/.cache/dnnlib (the directory is created)."""
    root = os.environ.get('DNNLIB_CACHE_DIR') or os.path.join(os.path.expanduser('~'), '.cache', 'dnnlib')
    path = os.path.join(root, *paths)
    os.makedirs(os.path.dirname(path) if paths else path, exist_ok=True)
    return path


def is_url(obj: Any) -> bool:
    return isinstance(obj, str) and re.match(r'^(https?|file)://', obj) is not None


def url_cache_path(url: str) -> str:
    """Where a downloaded URL is kept: <cache>/downloads/<md5 of url>_<basename>."""
    name = os.path.basename(urllib.parse.urlparse(url).path) or 'download'
    return make_cache_dir_path('downloads', hashlib.md5(url.encode()).hexdigest() + '_' + name)


def _download(url: str, dest: str, num_attempts: int, timeout: float) -> None:
    last_error: Exception | None = None
    for _ in range(num_attempts):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest), prefix='.download-')
                try:
                    with os.fdopen(fd, 'wb') as f:
                        while chunk := response.read(1 << 20):
                            f.write(chunk)
                    os.replace(tmp, dest)
                finally:
                    if os.path.exists(tmp):
                        os.remove(tmp)
            return
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            last_error = e
    reason = getattr(last_error, 'reason', last_error)
    raise OSError(f'Cannot download {url} ({reason}); if this machine is offline, download it elsewhere and put it '
                  f'at {dest}, or pass a local path instead of the URL')


def open_url(url: str, cache: bool = True, num_attempts: int = 3, timeout: float = 60,
             return_filename: bool = False) -> IO[bytes] | str:
    """Open a plain path, a file:// URL or an http(s) URL (downloaded once into the cache) for binary reading.

    Returns an open binary file, or its local path if `return_filename`.
    """
    if is_url(url) and url.startswith('file://'):
        path = urllib.request.url2pathname(urllib.parse.urlparse(url).path)
    elif is_url(url):
        path = url_cache_path(url)
        if not (cache and os.path.isfile(path)):
            _download(url, path, num_attempts, timeout)
    else:
        path = os.path.expanduser(str(url))
    if not os.path.isfile(path):
        raise FileNotFoundError(f'No such file: {path}' + (f' (from {url})' if path != url else ''))
    return path if return_filename else open(path, 'rb')

#----------------------------------------------------------------------------
# Logging stdout/stderr to a file.


class Logger:
    """Copy everything written to stdout and stderr into a log file, as a tee does."""

    def __init__(self, file_name: str | None = None, file_mode: str = 'a', should_flush: bool = True):
        self.file = open(file_name, file_mode) if file_name is not None else None
        self.should_flush = should_flush
        self.stdout, self.stderr = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = self

    def __enter__(self) -> Logger:
        return self

    def __exit__(self, *_args) -> None:
        self.close()

    def write(self, text: str | bytes) -> None:
        if isinstance(text, bytes):
            text = text.decode()
        if not text:
            return
        if self.file is not None:
            self.file.write(text)
        self.stdout.write(text)
        if self.should_flush:
            self.flush()

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()
        self.stdout.flush()

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        self.flush()
        if sys.stdout is self:
            sys.stdout = self.stdout
        if sys.stderr is self:
            sys.stderr = self.stderr
        if self.file is not None:
            self.file.close()
            self.file = None

#----------------------------------------------------------------------------
# Human-readable durations.


def format_time(seconds: float) -> str:
    """'42s', '3m 05s', '2h 07m 09s', '1d 03h 04m'."""
    s = int(round(seconds))
    if s < 60:
        return f'{s}s'
    if s < 60 * 60:
        return f'{s // 60}m {s % 60:02d}s'
    if s < 24 * 60 * 60:
        return f'{s // 3600}h {(s // 60) % 60:02d}m {s % 60:02d}s'
    return f'{s // 86400}d {(s // 3600) % 24:02d}h {(s // 60) % 60:02d}m'

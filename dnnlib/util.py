# SPDX-License-Identifier: Apache-2.0
"""EasyDict, class construction by name, the one file writer, the download cache, stdout logging and time formatting."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib
import json
import os
import re
import secrets
import socket
import sys
import types
import urllib.error
import urllib.parse
import urllib.request
from typing import IO, Any, Callable, Iterator

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


class _LazyModule(types.ModuleType):
    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self.__name__), attr)


def lazy_import(name: str) -> types.ModuleType:
    """A stand-in for module `name` that imports it at the first attribute access. Command-line tools use it for
    torch and the modules that import torch, so `--help` answers at once instead of after seconds of imports."""
    return sys.modules.get(name) or _LazyModule(name)


def get_module_dir_by_obj_name(obj_name: str) -> str:
    module = sys.modules[get_obj_by_name(obj_name).__module__]
    return os.path.dirname(os.path.abspath(module.__file__))

#----------------------------------------------------------------------------
# The one writer: every file the project writes goes through atomic_output (or append_text for logs).
#
# A file appears under its name complete and checked, or not at all: it is written to a hidden temporary file in
# the same folder, flushed and fsynced, checked (size; a caller's verify, e.g. a volume read back), renamed into
# place, and the folder is fsynced so the rename survives a power cut. The temporary name carries the host and
# pid, so a later run can remove what a killed process left (remove_stale_temporaries).


class WriteError(OSError):
    """A file could not be written (or failed its check); the message names the file and says why."""

    def __str__(self) -> str:
        return str(self.strerror)


_TMP_RE = re.compile(r'^\.(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[0-9a-f]{6}\.tmp\.')


def _host_tag() -> str:
    return re.sub(r'[^A-Za-z0-9_]', '_', socket.gethostname())[:32] or 'host'


def temporary_path(path: str) -> str:
    """A hidden temporary name beside path that keeps path's extension (some writers choose the format by it)."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f'.{_host_tag()}-{os.getpid()}-{secrets.token_hex(3)}.tmp.{name}')


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: str) -> list[str]:
    """Remove the temporary files that killed processes of this host left in folder; returns their paths.

    Temporaries of live processes, and of other hosts (which this host cannot check), are kept.
    """
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        match = _TMP_RE.match(name)
        if match and match['host'] == _host_tag() and not _pid_alive(int(match['pid'])):
            path = os.path.join(folder, name)
            with contextlib.suppress(OSError):
                os.remove(path)
                removed.append(path)
    return removed


def fsync_folder(folder: str) -> None:
    """Make a rename in folder durable (a no-op where the file system cannot fsync folders)."""
    try:
        fd = os.open(folder or '.', os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_error_message(path: str, error: BaseException) -> str:
    """'cannot write PATH: reason', whether or not the error came from this module's writer."""
    return str(error) if isinstance(error, WriteError) else f'cannot write {path}: {describe_os_error(error)}'


def one_line(error: BaseException | str, limit: int | None = None) -> str:
    """An error's message on one line; with `limit`, a longer one (torch's run over many lines) is cut to its first
    sentence, or to `limit` characters."""
    text = ' '.join(str(error).split()) or type(error).__name__
    if limit is not None and len(text) > limit:
        end = text.find('. ')
        text = text[:end + 1] if 0 < end < limit else text[:limit - 3] + '...'
    return text


def describe_os_error(error: BaseException) -> str:
    """'File too large', 'No space left on device', ... (the reason without the path)."""
    return getattr(error, 'strerror', None) or one_line(error)


@contextlib.contextmanager
def atomic_output(path: str, verify: Callable[[str], None] | None = None) -> Iterator[str]:
    """Yield a temporary path beside `path` to write; on success check it and rename it to `path`.

    Args:
        path: The destination.
        verify: Called with the temporary path after the write; raises (ValueError or OSError) when the file is
            not what was meant to be written, e.g. a volume whose header or voxels read back differently.

    Raises:
        WriteError: the write, the check, the fsync or the rename failed; nothing is left under either name.
    """
    path = str(path)
    tmp = temporary_path(path)
    try:
        yield tmp
        if not os.path.isfile(tmp) or os.path.getsize(tmp) == 0:
            raise OSError(errno.EIO, 'nothing was written')
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
        if verify is not None:
            verify(tmp)
        os.chmod(tmp, _default_mode())  # The usual permissions of a new file, not a temporary file's.
        os.replace(tmp, path)
        fsync_folder(os.path.dirname(os.path.abspath(path)))
    except BaseException as e:
        _remove_quietly(tmp)
        if isinstance(e, WriteError):
            raise
        cause = _os_error_in_chain(e) or (e if isinstance(e, ValueError) else None)
        if cause is None:
            raise
        raise WriteError(getattr(cause, 'errno', None) or errno.EIO,
                         f'cannot write {path}: {describe_os_error(cause)}') from None


def _os_error_in_chain(error: BaseException | None) -> OSError | None:
    # Libraries wrap a failed write in their own errors (torch.save raises RuntimeError after the OSError).
    while error is not None:
        if isinstance(error, OSError):
            return error
        error = error.__cause__ or error.__context__
    return None


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


def atomic_write(path: str, write_fn: Callable[[IO[bytes]], Any], verify: Callable[[str], None] | None = None,
                 ) -> None:
    """Write a file through `write_fn(f)` on an open binary file, atomically and checked (see atomic_output)."""
    with atomic_output(path, verify) as tmp:
        with open(tmp, 'wb') as f:
            write_fn(f)
            f.flush()
            if os.fstat(f.fileno()).st_size != f.tell():
                raise OSError(errno.EIO, f'{f.tell()} bytes written, {os.fstat(f.fileno()).st_size} on disk')


def atomic_write_bytes(path: str, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def json_bytes(obj: Any) -> bytes:
    """A report as indented JSON: NaN and infinities as null (JSON has neither), NumPy scalars as numbers, tuples as
    lists, dict keys as strings."""
    import math
    import numpy as np

    def clean(x):
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, (np.integer, np.bool_)):
            return x.item()
        if isinstance(x, (float, np.floating)):
            return float(x) if math.isfinite(float(x)) else None
        return x
    return (json.dumps(clean(obj), indent=2) + '\n').encode()


def append_text(path: str, text: str) -> None:
    """Append whole lines to a log file (stats.jsonl, metric-*.jsonl): all of `text` or, on failure, none of it.

    Raises:
        WriteError: naming the file; the file is cut back to its length before the call.
    """
    data = text.encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as e:
        raise WriteError(e.errno or errno.EIO, f'cannot write {path}: {describe_os_error(e)}') from None
    try:
        start = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise WriteError(e.errno or errno.EIO, f'cannot write {path}: {describe_os_error(e)}') from None
    finally:
        os.close(fd)

#----------------------------------------------------------------------------
# Content identity: what caches are keyed by, so a file replaced at the same path never reuses stale results.

_identity_memo: dict[tuple, dict] = {}


def content_identity(path: str) -> dict:
    """What a file or folder holds, as {'sha256', 'of', 'size'}: the SHA-256 of a file's bytes; of a zip's member
    list (names, sizes and CRC-32s, so any changed member changes it, without reading the members); or of a
    folder's relative file names and bytes. Files are memoised per (path, size, mtime, ctime, inode) within a process;
    folders (whose own mtime does not change when a file inside is rewritten) are hashed at every call.

    Raises:
        OSError: the path cannot be read.
    """
    path = os.path.abspath(os.path.expanduser(str(path)))
    info = os.stat(path)
    if os.path.isdir(path):
        return dict(sha256=_folder_sha256(path), of='folder', size=sum(
            os.path.getsize(os.path.join(root, n)) for root, _, names in os.walk(path) for n in names))
    memo_key = (path, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)  # ctime: no utime resets it.
    if memo_key not in _identity_memo:
        if _is_zip(path):
            identity = dict(sha256=_zip_listing_sha256(path), of='zip member list with CRC-32s')
        else:
            identity = dict(sha256=_file_sha256(path), of='file')
        _identity_memo[memo_key] = dict(identity, size=int(info.st_size))
    return dict(_identity_memo[memo_key])


def _is_zip(path: str) -> bool:
    import zipfile
    return path.lower().endswith('.zip') and zipfile.is_zipfile(path)


def _file_sha256(path: str, digest=None):
    own = digest is None
    digest = digest or hashlib.sha256()
    with open(path, 'rb') as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest() if own else digest


def _zip_listing_sha256(path: str) -> str:
    import zipfile
    try:
        with zipfile.ZipFile(path) as z:
            listing = [(i.filename, i.file_size, i.CRC) for i in z.infolist()]
    except zipfile.BadZipFile as e:
        raise OSError(errno.EIO, f'{path} is not a readable zip archive ({e})') from None
    return hashlib.sha256(repr(sorted(listing)).encode()).hexdigest()


def _folder_sha256(folder: str) -> str:
    digest = hashlib.sha256()
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(root, name)
            digest.update(os.path.relpath(full, folder).replace(os.sep, '/').encode() + b'\0')
            _file_sha256(full, digest)
    return digest.hexdigest()

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
                atomic_write(dest, lambda f: _copy_stream(response, f))
            return
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            last_error = e
    reason = getattr(last_error, 'reason', last_error)
    raise OSError(f'Cannot download {url} ({reason}); if this machine is offline, download it elsewhere and put it '
                  f'at {dest}, or pass a local path instead of the URL')


def _copy_stream(source: IO[bytes], dest: IO[bytes]) -> None:
    while chunk := source.read(1 << 20):
        dest.write(chunk)


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
    """Copy everything written to stdout and stderr into a log file, as a tee does; each stream keeps going where
    it went (errors stay on stderr)."""

    def __init__(self, file_name: str | None = None, file_mode: str = 'a', should_flush: bool = True):
        self.file = open(file_name, file_mode) if file_name is not None else None
        self.should_flush = should_flush
        self.stdout, self.stderr = sys.stdout, sys.stderr
        sys.stdout = _Tee(self, self.stdout)
        sys.stderr = _Tee(self, self.stderr)

    def __enter__(self) -> Logger:
        return self

    def __exit__(self, *_args) -> None:
        self.close()

    def write(self, text: str | bytes, stream: IO[str] | None = None) -> None:
        """Write text to the log file and to `stream` (default: the original stdout)."""
        if isinstance(text, bytes):
            text = text.decode()
        if not text:
            return
        (stream or self.stdout).write(text)
        if self.file is not None:
            self._to_file(lambda: self.file.write(text))
        if self.should_flush:
            self.flush()

    def flush(self) -> None:
        if self.file is not None:
            self._to_file(self.file.flush)
        self.stdout.flush()
        self.stderr.flush()

    def _to_file(self, action: Callable[[], Any]) -> None:
        # A full disk must not turn every print into a traceback: say so once and keep to the console.
        try:
            action()
        except OSError as e:
            name, self.file = getattr(self.file, 'name', 'the log file'), None
            self.stderr.write(f'Warning: cannot write {name} ({describe_os_error(e)}); logging to the console only\n')

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        self.flush()
        if isinstance(sys.stdout, _Tee) and sys.stdout.logger is self:
            sys.stdout = self.stdout
        if isinstance(sys.stderr, _Tee) and sys.stderr.logger is self:
            sys.stderr = self.stderr
        if self.file is not None:
            self.file.close()
            self.file = None


class _Tee:
    """sys.stdout or sys.stderr while a Logger is open: the text goes to its own stream and to the log file."""

    def __init__(self, logger: Logger, stream: IO[str]) -> None:
        self.logger, self.stream = logger, stream

    def write(self, text: str | bytes) -> None:
        self.logger.write(text, self.stream)

    def flush(self) -> None:
        self.logger.flush()

    def isatty(self) -> bool:
        return False

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

# SPDX-License-Identifier: Apache-2.0
"""Running the command-line tools as a user does (a subprocess, with faults injected) or in-process (click's
CliRunner), and checking how they fail."""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import zipfile

from click.testing import CliRunner

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEMPORARY = re.compile(r'^\..*\.tmp\.')  # dnnlib.util.temporary_path's names.


def run_cli(args: list, file_size_limit: int | None = None, timeout: float = 300,
            **popen_kwargs) -> subprocess.CompletedProcess:
    """Run `python ARGS` in the repository. file_size_limit emulates a full disk: a write past it fails with
    EFBIG ('File too large') because SIGXFSZ is ignored in the child."""
    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))
    env = dict(os.environ, OMP_NUM_THREADS='1', **popen_kwargs.pop('env', {}))
    return subprocess.run([sys.executable, *[str(a) for a in args]], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=limit_file_size if file_size_limit else None,
                          **popen_kwargs)


def assert_clean_failure(result: subprocess.CompletedProcess, *fragments: str, folders: tuple = ()) -> str:
    """A non-zero exit, exactly one line on stderr holding every fragment, no traceback anywhere, and no partial
    output (temporary or empty files) in `folders`. Returns the error line."""
    assert result.returncode != 0, f'exit code 0\nstdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}'
    assert 'Traceback' not in result.stdout + result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f'expected one line on stderr, got {len(lines)}:\n' + result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], f'"{fragment}" is not in: {lines[0]}'
    for folder in folders:
        assert partial_files(folder) == [], partial_files(folder)
    return lines[0]


def partial_files(folder) -> list[str]:
    """Temporary or empty files under folder."""
    found = []
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            if TEMPORARY.match(name) or os.path.getsize(path) == 0:
                found.append(path)
    return found


def member_data_offset(path, member: str) -> int:
    """Where the stored bytes of a zip member start in the file."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    with open(path, 'rb') as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = int.from_bytes(f.read(2), 'little'), int.from_bytes(f.read(2), 'little')
    return info.header_offset + 30 + name_len + extra_len


def flip_member_byte(src, dest, member: str, position: int = 200) -> None:
    """A copy of a zip with one byte of a member's data changed: its CRC-32 no longer matches."""
    data = bytearray(open(src, 'rb').read())
    data[member_data_offset(src, member) + position] ^= 0xFF
    open(dest, 'wb').write(bytes(data))


def truncate(src, dest, keep: float = 0.5) -> None:
    data = open(src, 'rb').read()
    open(dest, 'wb').write(data[:int(len(data) * keep)])


def snapshot_of_files(folder) -> dict[str, tuple[int, int]]:
    """{name: (size, mtime_ns)} of every file in folder, to show that a failed command touched nothing."""
    return {name: (os.stat(os.path.join(folder, name)).st_size, os.stat(os.path.join(folder, name)).st_mtime_ns)
            for name in sorted(os.listdir(folder))}


def invoke(command, args):
    """Run a click command in-process, every argument as a string."""
    return CliRunner().invoke(command, [str(a) for a in args])


def assert_one_line_error(result, *fragments) -> None:
    """A clean CLI failure: no traceback, one 'Error:' line (the last) holding every fragment."""
    assert result.exit_code in (1, 2), result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.output.rstrip().splitlines()
    errors = [line for line in lines if line.startswith('Error:')]
    assert len(errors) == 1 and errors[0] == lines[-1], result.output
    assert all(f in errors[0] for f in fragments), result.output

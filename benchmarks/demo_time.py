# SPDX-License-Identifier: Apache-2.0
"""The README's `make demo` from a fresh clone, timed step by step: the install (`make venv`: the virtual
environment, PyTorch and the project), then each step of demo.py, in wall-clock and CPU seconds.

On a machine that others share, wall time grows with their load while CPU time (user + system of the processes,
the operating system's own accounting) barely moves: the table gives both, and the load averages before and
after, so a reader can tell a slow machine from a busy one.

    python benchmarks/demo_time.py                    # clone this repository's HEAD into a temporary folder
    python benchmarks/demo_time.py --clone-dir /tmp/x --keep

Only committed work is measured (a clone has no uncommitted changes). pip may take PyTorch from its cache.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import click

from common import load_average  # noqa: I001 (puts the repo on sys.path)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What demo.run prints after each step: '--- STEP: 12 s (CPU 10 s)'.
STEP_LINE = re.compile(r'^--- (?P<step>.+): (?P<wall>\d+) s \(CPU (?P<cpu>\d+) s\)$')


def parse_steps(output: str) -> list[tuple[str, float, float]]:
    """(step, wall seconds, CPU seconds) of every step line that demo.py printed, in order."""
    return [(m['step'], float(m['wall']), float(m['cpu'])) for m in map(STEP_LINE.match, output.splitlines()) if m]


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(args: list[str], cwd: str, log_path: str) -> tuple[float, float, str]:
    """Run `args` in `cwd` (its output to the terminal and to `log_path`); (wall s, CPU s, output)."""
    start, cpu_start = time.monotonic(), children_cpu_seconds()
    with subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc, \
            open(log_path, 'a', encoding='utf-8') as log:
        lines = []
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
            lines.append(line)
    if proc.returncode != 0:
        raise click.ClickException(f'{" ".join(args)} failed (exit code {proc.returncode}); see {log_path}')
    return time.monotonic() - start, children_cpu_seconds() - cpu_start, ''.join(lines)


def cpu_model() -> str:
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
        return names[0] if names else platform.processor()
    except OSError:
        return platform.processor() or 'unknown'


@click.command()
@click.option('--repo', default=REPO, show_default=True, help='Repository to clone (its HEAD)')
@click.option('--clone-dir', default=None, help='Where to clone [default: a new temporary folder]')
@click.option('--keep', is_flag=True, help='Keep the clone (with its .venv and demo-out) afterwards')
def main(repo: str, clone_dir: str | None, keep: bool) -> None:
    clone_dir = clone_dir or tempfile.mkdtemp(prefix='demo-time-')
    if os.path.exists(clone_dir) and os.listdir(clone_dir):
        raise click.BadParameter(f'{clone_dir} is not empty; the measurement needs a fresh clone',
                                 param_hint='--clone-dir')
    log_path = os.path.join(tempfile.gettempdir(), f'demo-time-{os.getpid()}.log')
    load_before = load_average()
    started = time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())
    subprocess.run(['git', 'clone', '--quiet', repo, clone_dir], check=True)
    commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=clone_dir, capture_output=True, text=True,
                            check=True).stdout.strip()
    try:
        install_wall, install_cpu, _ = timed(['make', 'venv'], clone_dir, log_path)
        demo_wall, demo_cpu, output = timed(['make', 'demo'], clone_dir, log_path)
    finally:
        if not keep:
            shutil.rmtree(clone_dir, ignore_errors=True)
    steps = parse_steps(output)
    passed = any(line.startswith('PASS:') for line in output.splitlines())

    print(f'\n`make demo` on a fresh clone of {commit}, {started}; {os.cpu_count()} cores ({cpu_model()}), '
          f'Python {platform.python_version()}; load average {load_before} before, {load_average()} after; '
          f'check {"passed" if passed else "FAILED"}; log {log_path}\n')
    print('| step | wall s | CPU s |')
    print('|---|---|---|')
    print(f'| install (`make venv`: venv, torch, the project) | {install_wall:.0f} | {install_cpu:.0f} |')
    for step, wall, cpu in steps:
        print(f'| {step} | {wall:.0f} | {cpu:.0f} |')
    rest_wall = demo_wall - sum(wall for _, wall, _ in steps)
    rest_cpu = demo_cpu - sum(cpu for _, _, cpu in steps)
    print(f'| the rest (make, demo.py itself, the check) | {rest_wall:.0f} | {rest_cpu:.0f} |')
    total_wall, total_cpu = install_wall + demo_wall, install_cpu + demo_cpu
    print(f'| total | {total_wall:.0f} ({total_wall / 60:.1f} min) | {total_cpu:.0f} |')
    if not passed:
        raise SystemExit(1)


if __name__ == '__main__':
    main()

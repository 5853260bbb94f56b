# SPDX-License-Identifier: Apache-2.0
"""benchmarks/peer_compare.py end to end on a tiny shape, with a stand-in for the peer checkout (the real one is
never part of this repository): subprocesses, the measurements, the tables and the summary line. And the
benchmark scripts that need no GPU run on the CPU."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # benchmark runs


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, 'benchmarks', 'peer_compare.py')

# The peer's constructors take img_resolution (cubes only); this stand-in maps them onto this project's networks.
# Its `training` package also searches this repository's, whose networks module it loads under another name.
STAND_IN_INIT = f'''
import os, sys
sys.path.insert(1, {REPO!r})
__path__.append(os.path.join({REPO!r}, 'training'))
'''
STAND_IN = '''
import importlib
import pytest
_ours = importlib.import_module('training._ours')

def Generator(img_resolution, **kwargs):
    return _ours.Generator(img_shape=(img_resolution,) * 3, **kwargs)

def Discriminator(img_resolution, **kwargs):
    return _ours.Discriminator(img_shape=(img_resolution,) * 3, **kwargs)
'''


def _run(args: list[str], **kwargs) -> str:
    env = dict(os.environ, OMP_NUM_THREADS='1')
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=600,
                         **kwargs)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_compare_end_to_end_with_a_stand_in_peer(tmp_path):
    peer = tmp_path / 'peer'
    (peer / 'training').mkdir(parents=True)
    (peer / 'training' / '__init__.py').write_text(STAND_IN_INIT)
    (peer / 'training' / 'networks.py').write_text(STAND_IN)
    with open(os.path.join(REPO, 'training', 'networks.py'), encoding='utf-8') as f:
        (peer / 'training' / '_ours.py').write_text(f.read())  # This project's networks, under another name.
    out = _run([SCRIPT, '--peer', str(peer), '--cubes', '8', '--batches', '1,2', '--rounds', '1', '--iters', '1',
                '--channel-base', '64', '--channel-max', '8', '--z-dim', '8', '--map', '1', '--no-large'])
    rows = [line for line in out.splitlines() if line.startswith('| 8^3 |')]
    assert len(rows) == 4 + 2  # ours and peer at batch 1 and 2, then the two ratio rows
    last = out.strip().splitlines()[-1]
    match = re.fullmatch(r'peer ratio: speed ([0-9.]+)x, memory ([0-9.]+)x '
                         r'\(at 8\^3 batch 2; 32\^3 batch 2 was not run\)', last)
    assert match, last
    # The same networks on both sides: memory within a few percent, speed within a factor of two.
    assert 0.5 < float(match.group(1)) < 2 and 0.9 < float(match.group(2)) < 1.1


def test_profile_prints_the_operator_table():
    out = _run([SCRIPT, '--profile', 'ours', '--cubes', '8', '--batches', '2', '--iters', '1', '--channel-base', '64',
                '--channel-max', '8', '--z-dim', '8', '--map', '1'])
    assert 'Self CPU' in out and 'aten::' in out


def test_generate_speed_on_the_cpu():
    out = _run([os.path.join(REPO, 'benchmarks', 'generate_speed.py'), '--device', 'cpu', '--sizes', '16x16x8',
                '--batches', '1,2', '--iters', '1'])
    rows = [line for line in out.splitlines() if line.startswith('| 16x16x8 |')]
    assert len(rows) == 2 and all(float(row.split('|')[5]) > 0 for row in rows)


def test_saved_activations_counts_on_the_meta_device():
    out = _run([os.path.join(REPO, 'benchmarks', 'saved_activations.py'), '--size', '16x16x16', '--batch', '2'])
    values = {m.group(1): float(m.group(2)) for m in re.finditer(r'\| (Gmain|Gpl|Dr1)\s*\| ([0-9.e+]+)', out)}
    assert set(values) == {'Gmain', 'Gpl', 'Dr1'} and all(v > 0 for v in values.values())

# SPDX-License-Identifier: Apache-2.0
"""Write frd_values.json: frd-score's FRD v1 and v0 of the folders in frd_volumes/ (make_frd_volumes.py).

Runs in the separate environment with frd-score 1.0.1 and PyRadiomics built from its git source (README.md in
this folder has the commands). Only frd-score's public API is called: compute_frd with its defaults (no masks),
one worker.

    python make_frd_fixtures.py OUT.json
"""

import importlib.metadata
import json
import os
import subprocess
import sys

import frd_score
import radiomics

HERE = os.path.dirname(os.path.abspath(__file__))
PAIRS = {'reals_fakes': ('reals', 'fakes'), 'fakes_reals': ('fakes', 'reals')}


def git_commit() -> str:
    path = os.environ.get('PYRADIOMICS_SOURCE', '')
    try:
        return subprocess.check_output(['git', '-C', path, 'rev-parse', 'HEAD'], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return 'unknown'


def main(out: str) -> None:
    values = {}
    for key, (first, second) in PAIRS.items():
        paths = [os.path.join(HERE, 'frd_volumes', first), os.path.join(HERE, 'frd_volumes', second)]
        values[key] = {version: float(frd_score.compute_frd(paths, frd_version=version, num_workers=1))
                       for version in ('v1', 'v0')}
    counts = {g: len(os.listdir(os.path.join(HERE, 'frd_volumes', g))) for g in ('reals', 'fakes')}
    provenance = {'frd_score': frd_score.__version__, 'pyradiomics_version': radiomics.__version__,
                  'pyradiomics_commit': git_commit(),
                  **{name.lower(): importlib.metadata.version(name)
                     for name in ('numpy', 'scipy', 'SimpleITK', 'PyWavelets')},
                  'python': sys.version.split()[0]}
    with open(out, 'w') as f:
        json.dump({'provenance': provenance, 'call': 'frd_score.compute_frd([first, second], frd_version=version, '
                   'num_workers=1)', 'counts': counts, 'values': values}, f, indent=1)
        f.write('\n')


if __name__ == '__main__':
    main(sys.argv[1])

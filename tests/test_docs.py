# SPDX-License-Identifier: Apache-2.0
"""docs/cli.md matches the commands' current --help texts."""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cli_reference_is_current():
    spec = importlib.util.spec_from_file_location('cli_help', os.path.join(ROOT, 'docs', 'cli_help.py'))
    cli_help = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli_help)
    with open(os.path.join(ROOT, 'docs', 'cli.md')) as f:
        assert f.read() == cli_help.render(), 'docs/cli.md is stale: run python docs/cli_help.py'

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


def test_help_imports_no_torch():
    # --help took 4-8 s when every tool imported torch (and what imports it) before parsing its options.
    import subprocess
    import sys
    code = ('import sys, runpy\n'
            'sys.argv = [sys.argv[1], "--help"]\n'
            'try:\n'
            '    runpy.run_path(sys.argv[0], run_name="__main__")\n'
            'except SystemExit:\n'
            '    pass\n'
            'assert "torch" not in sys.modules, sys.argv[0]\n')
    for tool in ('train.py', 'generate.py', 'calc_metrics.py', 'dataset_tool.py', 'style_mixing.py', 'projector.py',
                 'legacy.py'):
        result = subprocess.run([sys.executable, '-c', code, tool], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0 and 'Usage:' in result.stdout, (tool, result.stderr[-2000:])

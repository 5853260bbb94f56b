# SPDX-License-Identifier: Apache-2.0
"""demo.py --help, as a new user reads it: what the demo does, how long it takes and where it writes."""

from tests.faults.helpers import run_cli


def test_demo_help_says_what_how_long_and_where():
    result = run_cli(['demo.py', '--help'], timeout=60)
    assert result.returncode == 0 and result.stderr == '', result.stderr
    text = ' '.join(result.stdout.split())
    assert 'Run the whole project on built-in phantom data' in text
    for step in ('pack --volumes phantoms with their organ masks', 'train a small model', 'export the generator',
                 'generate 16 volumes with their label maps', 'export an nnU-Net dataset', 'exit code 1 if not'):
        assert step in text, step
    assert 'It takes about 5 minutes with the defaults on an idle 2-core CPU' in text
    assert 'Everything is written under --outdir' in text
    for path in ('phantoms.zip', 'runs/NNNNN-phantoms-.../', 'G.pt', 'generated/', 'mixing/',
                 'nnunet/Dataset501_PhantomSynth/'):
        assert f'\n    {path} ' in result.stdout, path  # One row per output, indented as a table.

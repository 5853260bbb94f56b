# SPDX-License-Identifier: Apache-2.0
"""training/presets.py: the shipped presets and the auto formulas, and preset files as a user meets them through
train.py: errors name the file at fault."""

import pytest

from tests.helpers.cli import assert_clean_failure, run_cli
from training import presets


@pytest.fixture(scope='module')
def phantoms(tmp_path_factory):
    path = tmp_path_factory.mktemp('data') / 'phantoms.zip'
    result = run_cli(['dataset_tool.py', '--source=phantom:2', f'--dest={path}', '--size=16x16x8'])
    assert result.returncode == 0, result.stderr
    return path


def dry_run(phantoms, tmp_path, cfg):
    return run_cli(['train.py', f'--outdir={tmp_path / "runs"}', f'--data={phantoms}', f'--cfg={cfg}', '--dry-run',
                    '--workers=0'])


def test_an_unknown_parent_names_the_preset_file_and_the_nearest_preset(phantoms, tmp_path):
    (tmp_path / 'mine.toml').write_text('extends = "dmeo"\nkimg = 1\n')
    result = dry_run(phantoms, tmp_path, tmp_path / 'mine.toml')
    line = assert_clean_failure(result, f'{tmp_path / "mine.toml"}: extends = "dmeo", which is no preset '
                                        f'(did you mean "demo"?); expected one of auto, ')
    assert result.returncode == 2 and line.startswith('Error: Invalid value for --cfg: ')
    assert not (tmp_path / 'runs').exists()


def test_the_file_named_is_the_one_whose_extends_is_wrong(phantoms, tmp_path):
    # mine.toml is fine; base.toml, which it extends, names a parent that does not exist.
    (tmp_path / 'base.toml').write_text('extends = "stylgan2"\nbatch = 8\n')
    (tmp_path / 'mine.toml').write_text(f'extends = "{tmp_path / "base.toml"}"\nkimg = 1\n')
    result = dry_run(phantoms, tmp_path, tmp_path / 'mine.toml')
    line = assert_clean_failure(result, f'{tmp_path / "base.toml"}: extends = "stylgan2", which is no preset '
                                        f'(did you mean "stylegan2"?)')
    assert 'mine.toml' not in line


@pytest.mark.parametrize('cfg, message', [
    ('dmeo', 'no preset "dmeo" (did you mean "demo"?); expected one of auto, '),
    ('zzzz', 'no preset "zzzz"; expected one of auto, '),  # Nothing near: no guess.
])
def test_an_unknown_cfg_suggests_the_nearest_preset(phantoms, tmp_path, cfg, message):
    assert_clean_failure(dry_run(phantoms, tmp_path, cfg), message)


def test_auto_formulas_use_largest_inplane_size():
    spec = presets.resolve(presets.load_preset('auto'), gpus=1, res=256)
    assert (spec['batch'], spec['mbstd_group'], spec['channel_base'], spec['ema_kimg']) == (16, 4, 16384, 5)
    assert spec['r1_gamma'] == pytest.approx(0.8192)
    spec8 = presets.resolve(presets.load_preset('auto'), gpus=8, res=256)
    assert (spec8['batch'], spec8['r1_gamma'], spec8['ema_kimg']) == (64, pytest.approx(0.2048), 20)


def test_presets_resolve():
    high = presets.load_preset('prostate-high')
    assert high['size'] == '256x256x24' and high['batch'] == 8 and high['r1_gamma'] == 10
    assert high['mapping_layers'] == 8 and high['channel_base'] == 32768  # From stylegan2, which it extends.
    assert presets.load_preset('prostate-high-cond')['conditional'] is True
    assert presets.load_preset('brain-3dstylegan')['generator_architecture'] == 'orig'
    for name in presets.list_presets():  # Every shipped preset passes the schema.
        presets.resolve(presets.load_preset(name), gpus=1, res=256)


def test_a_relative_extends_is_read_beside_the_file_that_names_it(tmp_path, monkeypatch):
    (tmp_path / 'presets').mkdir()
    (tmp_path / 'presets' / 'base.toml').write_text('extends = "demo"\nbatch = 6\n')
    (tmp_path / 'presets' / 'mine.toml').write_text('extends = "base.toml"\nkimg = 1\n')
    monkeypatch.chdir(tmp_path)  # Not the presets' folder: base.toml is not here.
    preset = presets.load_preset('presets/mine.toml')
    assert (preset['batch'], preset['kimg']) == (6, 1)
    assert preset['channel_base'] == 512  # From demo, which base.toml extends.
    (tmp_path / 'presets' / 'base.toml').write_text('extends = "./mine.toml"\n')  # A circle spelt another way.
    with pytest.raises(presets.PresetError, match='goes round in a circle'):
        presets.load_preset('presets/mine.toml')

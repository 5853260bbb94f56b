# SPDX-License-Identifier: Apache-2.0
"""audit.py and generate.py --exclude-copies end to end on phantoms (real files, the CLIs run as subprocesses):
planted copies among novel volumes, the flag rate of novel volumes, the membership inference of an over-fitted D,
and the one-line errors of bad inputs."""

import csv
import json
import os
import pickle
import re

import numpy as np
import pytest
import scipy.stats
import torch

import dataset_tool
import legacy
from tests.helpers.cli import assert_clean_failure, run_cli
from training import generation
from training.networks import Discriminator, Generator
from volumes import volume_io
from volumes.contract import IntensityMapping, VolumeInfo, to_unit
from volumes.packed import PackedDataset

SIZE = (16, 16, 8)  # x, y, z
PLANTED = ('noise', 'intensity', 'shift', 'mirror')
NOVEL = 60


def write_generated(folder, stems: list[str], stored: np.ndarray, info: VolumeInfo) -> None:
    """Volumes [N, 1, D, H, W] (stored units) written as generate.py writes them (its OutputWriter)."""
    writer = generation.OutputWriter(str(folder), 'nii.gz', info)
    for stem, volume in zip(stems, stored):
        writer.write(to_unit(volume, info.max_value), stem)


def plant(volume: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A training volume [C, D, H, W] (uint8) changed as a copying generator might change it."""
    v = volume.astype(np.float32)
    if kind == 'noise':
        v = v + rng.normal(0, 10, v.shape)
    elif kind == 'intensity':
        v = v * 0.8 + 25
    elif kind == 'shift':
        v = np.roll(v, 1, axis=-1)  # One voxel along x.
    else:
        v = v[..., ::-1]  # The x-mirror.
    return np.clip(np.rint(v), 0, 255).astype(np.uint8)


def stored_volumes(path) -> np.ndarray:
    dataset = PackedDataset(str(path))
    return np.stack([dataset.volume(i) for i in range(len(dataset))])


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """Training phantoms (12), a holdout (40) packed alike, and a folder of 60 novel phantoms and 12 planted copies
    (3 of each kind) as generate.py writes them, with a label map and a preview that the audit must skip."""
    root = tmp_path_factory.mktemp('audit')
    paths = {name: str(root / f'{name}.zip') for name in ('train', 'holdout', 'novel')}
    dataset_tool.pack_dataset('phantom:12:0', paths['train'], size=SIZE)
    dataset_tool.pack_dataset('phantom:40:1000', paths['holdout'], size=SIZE)
    dataset_tool.pack_dataset(f'phantom:{NOVEL}:2000', paths['novel'], size=SIZE)
    info = PackedDataset(paths['train']).volume_info
    train, rng = stored_volumes(paths['train']), np.random.default_rng(0)
    generated = root / 'generated'
    write_generated(generated, [f'novel{i:03d}' for i in range(NOVEL)], stored_volumes(paths['novel']), info)
    copies = [(f'copy{i:02d}_{PLANTED[i % 4]}', plant(train[i], PLANTED[i % 4], rng)) for i in range(12)]
    write_generated(generated, [c[0] for c in copies], np.stack([c[1] for c in copies]), info)
    volume_io.write_volume(str(generated / 'novel000_seg.nii.gz'), np.zeros([2, 2, 2], np.uint8), info.spacing,
                           info.direction)  # Not on the grid: read, it would fail the run.
    (generated / 'novel000.png').write_bytes(b'not a volume')
    return dict(paths, generated=str(generated), info=info, root=root)


def read_csv(path) -> list[dict]:
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope='module')
def audited(data):
    out = data['root'] / 'out'
    result = run_cli(['audit.py', f'--generated={data["generated"]}', f'--data={data["train"]}',
                      f'--holdout={data["holdout"]}', f'--outdir={out}'])
    assert result.returncode == 0, result.stderr
    with open(out / 'report.json') as f:
        report = json.load(f)
    return dict(rows=read_csv(out / 'audit.csv'), report=report, out=out, stdout=result.stdout)

#----------------------------------------------------------------------------
# What the audit finds.


@pytest.mark.slow
def test_planted_copies_are_flagged_and_novel_volumes_are_not(audited):
    rows = {row['name']: row for row in audited['rows']}
    assert len(rows) == NOVEL + 12  # The label map and the preview were skipped.
    truth = np.array([name.startswith('copy') for name in rows])
    flagged = np.array([row['flagged'] == '1' for row in rows.values()])
    tp = np.sum(truth & flagged)
    f1 = 2 * tp / (2 * tp + np.sum(flagged & ~truth) + np.sum(truth & ~flagged))
    assert f1 >= 0.9, f'F1 {f1:.3f}'
    for i in range(12):
        row = rows[f'copy{i:02d}_{PLANTED[i % 4]}']
        assert row['nearest'] == f'phantom:{i}' and float(row['similarity']) > 0.98
        assert float(row['p_value']) == pytest.approx(1 / 41)  # Beyond every holdout case.
        assert row['shift_xyz'] == ('1x0x0' if PLANTED[i % 4] == 'shift' else '0x0x0')
        assert row['mirrored'] == ('1' if PLANTED[i % 4] == 'mirror' else '0')
        assert float(row['ratio']) > 1


@pytest.mark.slow
def test_novel_volumes_are_flagged_at_about_alpha(audited):
    """Novel phantoms are real cases the model never saw, as the holdout: flagged at a rate whose binomial
    interval holds alpha."""
    novel = [row for row in audited['rows'] if row['name'].startswith('novel')]
    flagged = sum(row['flagged'] == '1' for row in novel)
    ci = scipy.stats.binomtest(flagged, len(novel)).proportion_ci(method='exact')
    assert ci.low <= 0.05 <= ci.high, f'{flagged} of {len(novel)} novel volumes flagged'
    p_values = np.array([float(row['p_value']) for row in novel])
    assert np.all((p_values <= 0.05) == np.array([row['flagged'] == '1' for row in novel]))


def test_report_pictures_and_summary(audited):
    report, out = audited['report'], audited['out']
    assert report['audited'] == NOVEL + 12 and report['alpha'] == 0.05 and report['threshold_source'] == 'holdout'
    assert report['flagged'] == sum(row['flagged'] == '1' for row in audited['rows'])
    assert report['copy_rate'] == pytest.approx(report['flagged'] / report['audited'])
    lo, hi = report['copy_rate_ci95']
    assert lo < report['copy_rate'] < hi and lo > 0.05  # Twelve copies in 72: more than chance.
    assert report['space'].startswith('voxel space: Pearson correlation') and 'x-mirror' in report['space']
    assert report['null']['n'] == 40 and report['null']['max'] < report['generated']['max']
    assert report['null']['q95'] <= report['threshold'] <= report['null']['max']
    assert report['membership'] is None and report['feature_spaces'] == {}
    exposed = dict(map(tuple, report['most_exposed']))
    assert sum(exposed.values()) <= report['audited'] and all(count >= 1 for count in exposed.values())
    for name in ('nearest_pairs.png', 'similarity.png'):
        with open(out / name, 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert 'copy rate' in audited['stdout'] and 'above the 5.0% that novel volumes reach by chance' in audited['stdout']
    assert len(audited['stdout'].splitlines()) <= 8


@pytest.mark.slow
def test_feature_spaces_and_a_fixed_threshold(data, tmp_path):
    """MedicalNet (random weights) and a TorchScript slice detector as feature spaces; no holdout, --threshold."""
    from metrics import medicalnet
    from tests.helpers.detectors import write_detector
    weights = tmp_path / 'resnet10.pth'
    torch.manual_seed(0)
    torch.save({'state_dict': {f'module.{k}': v for k, v in medicalnet.MedicalNetResNet(10).state_dict().items()}},
               weights)
    few = tmp_path / 'few'
    os.makedirs(few)
    for name in ('novel000', 'novel001', 'copy03_mirror', 'copy05_intensity'):
        os.link(os.path.join(data['generated'], f'{name}.nii.gz'), few / f'{name}.nii.gz')
    out = tmp_path / 'out'
    result = run_cli(['audit.py', f'--generated={few}', f'--data={data["train"]}', '--threshold=0.97',
                      f'--medicalnet={weights}', f'--inception={write_detector(tmp_path / "detector.pt")}',
                      f'--outdir={out}'])
    assert result.returncode == 0, result.stderr
    assert 'No calibrated threshold exists without --holdout' in result.stdout
    rows = {row['name']: row for row in read_csv(out / 'audit.csv')}
    assert [row['flagged'] for row in rows.values()] == ['1', '1', '0', '0']  # Sorted: copy03, copy05, novel...
    assert all(row['p_value'] == '' for row in rows.values())
    for space in ('medicalnet10', 'inception'):
        assert rows['copy03_mirror'][f'{space}_nearest'] == 'phantom:3'
        assert float(rows['copy03_mirror'][f'{space}_similarity']) == pytest.approx(1, abs=1e-5)  # Mirror matched.
        assert rows['copy03_mirror'][f'{space}_flagged'] == ''  # No holdout: no feature-space threshold.
    with open(out / 'report.json') as f:
        report = json.load(f)
    assert report['threshold'] == 0.97 and report['threshold_source'] == 'given' and report['null'] is None
    assert set(report['feature_spaces']) == {'medicalnet10', 'inception'}
    assert report['feature_spaces']['medicalnet10']['space'].startswith('medicalnet10 space: cosine similarity of '
                                                                       'MedicalNet ResNet-10')

#----------------------------------------------------------------------------
# Networks: generation on the fly and membership inference.


def tiny_generator(info: VolumeInfo) -> Generator:
    torch.manual_seed(0)
    return Generator(z_dim=8, c_dim=0, w_dim=8, img_shape=SIZE[::-1], img_channels=1,
                     mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(channel_base=64, channel_max=8),
                     volume_info=info.to_dict()).eval()


def overfitted_discriminator(members: np.ndarray, others: np.ndarray, steps: int = 120) -> Discriminator:
    """A tiny D (one epilogue over the whole 16x16x8 volume) trained, as a GAN's D, to score the few members as real
    and other phantoms as fake, until it knows the members by heart. (Training the whole GAN to this point takes
    minutes on a CPU; this is the part of it the attack reads.)"""
    torch.manual_seed(0)
    D = Discriminator(c_dim=0, img_shape=SIZE[::-1], img_channels=1, base=SIZE[::-1], channel_base=64, channel_max=8,
                      epilogue_kwargs=dict(mbstd_group_size=4))
    real, fake = (torch.from_numpy(to_unit(v, 255)) for v in (members, others))
    opt = torch.optim.Adam(D.parameters(), lr=0.003, betas=(0.0, 0.99))
    for _ in range(steps):
        r, f = real[torch.randperm(len(real))[:4]], fake[torch.randperm(len(fake))[:4]]
        loss = torch.nn.functional.softplus(-D(r, None)) .mean() + torch.nn.functional.softplus(D(f, None)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return D.eval().requires_grad_(False)


@pytest.fixture(scope='module')
def snapshots(data, tmp_path_factory):
    root = tmp_path_factory.mktemp('networks')
    members = root / 'members.zip'
    dataset_tool.pack_dataset('phantom:8:0', str(members), size=SIZE)
    others = stored_volumes(data['novel'])[:32]  # Real-looking volumes that are not members: a converged G's fakes.
    G = tiny_generator(data['info'])
    D = overfitted_discriminator(stored_volumes(members), others)
    kwargs = dict(class_name='training.dataset.VolumeFolderDataset', path=str(members), xflip=False)
    snapshot = root / 'network-snapshot-000100.pkl'
    with open(snapshot, 'wb') as f:
        pickle.dump(dict(G=G, D=D, G_ema=G, augment_pipe=None, training_set_kwargs=kwargs), f)
    export = root / 'G.pt'
    legacy.export_network(G, kwargs, str(export))
    return dict(members=str(members), snapshot=str(snapshot), export=str(export))


@pytest.mark.slow
def test_an_overfitted_discriminator_gives_a_membership_auc_above_its_control(data, snapshots, tmp_path):
    out = tmp_path / 'out'
    result = run_cli(['audit.py', f'--network={snapshots["snapshot"]}', '--count=3', f'--data={snapshots["members"]}',
                      f'--holdout={data["holdout"]}', f'--outdir={out}'])
    assert result.returncode == 0, result.stderr
    with open(out / 'report.json') as f:
        report = json.load(f)
    m = report['membership']
    assert m['members'] == 8 and m['non_members'] == 40
    assert m['auc'] > 0.9 and m['auc'] > m['control_auc'] and m['auc_ci95'][0] > 0.5, m
    assert m['auc_ci95'][0] <= m['auc'] <= m['auc_ci95'][1]
    assert report['audited'] == 3 and [row['name'] for row in read_csv(out / 'audit.csv')] == \
        ['seed0000', 'seed0001', 'seed0002']
    assert 'no x-mirror' not in report['space'] and 'x-mirror' not in report['space']  # Trained without --mirror.
    assert 'Membership (D scores, training vs holdout): AUC' in result.stdout and 'membership leak' in result.stdout


@pytest.mark.slow
def test_an_export_has_no_discriminator_to_attack(data, snapshots, tmp_path):
    out = tmp_path / 'out'
    result = run_cli(['audit.py', f'--network={snapshots["export"]}', '--seeds=5,7', f'--data={snapshots["members"]}',
                      f'--holdout={data["holdout"]}', f'--outdir={out}'])
    assert result.returncode == 0, result.stderr
    with open(out / 'report.json') as f:
        report = json.load(f)
    assert report['membership'] is None and report['audited'] == 2
    assert 'Membership inference needs D' in result.stdout

#----------------------------------------------------------------------------
# generate.py --exclude-copies.


@pytest.mark.slow
def test_generate_excludes_copies_and_replaces_them_from_the_next_seeds(tmp_path):
    """The training set holds the network's own volumes of seeds 3 and 5: generating seeds 0-9 drops them (and any
    other volume the audit would flag), fills up from seeds 10 on, and the audit of the result flags nothing."""
    info = VolumeInfo(spacing=(4.0, 4.0, 9.0), intensity=IntensityMapping('percentile', 0.5, 99.5, 'uint8'))
    G = tiny_generator(info)
    with torch.no_grad():  # Some noise makes the volumes of different seeds differ more.
        for module in G.modules():
            if hasattr(module, 'noise_strength'):
                module.noise_strength.fill_(0.3)
    snapshot = tmp_path / 'network-snapshot-000000.pkl'
    with open(snapshot, 'wb') as f:
        pickle.dump(dict(G=G, D=None, G_ema=G, augment_pipe=None, training_set_kwargs=dict(xflip=True)), f)
    for name, seeds in (('train', [3, 5]), ('holdout', list(range(1000, 1020)))):
        volumes = [v for _, v in generation.generate_from_seeds(G, seeds, torch.zeros([1, 0]), 1, 'const', 8,
                                                               torch.device('cpu'), progress=False)]
        writer = generation.OutputWriter(str(tmp_path / name), 'nii.gz', info)
        for seed, volume in zip(seeds, volumes):
            writer.write(volume, f'case{seed}')
        dataset_tool.pack_dataset(str(tmp_path / name), str(tmp_path / f'{name}.zip'))
    out = tmp_path / 'synth'
    result = run_cli(['generate.py', f'--network={snapshot}', '--seeds=0-9', '--exclude-copies',
                      f'--data={tmp_path / "train.zip"}', f'--holdout={tmp_path / "holdout.zip"}', f'--outdir={out}'])
    assert result.returncode == 0, result.stderr
    written = sorted(int(name[4:8]) for name in os.listdir(out) if name.endswith('.nii.gz'))
    kept, replacements = [s for s in written if s < 10], [s for s in written if s >= 10]
    assert len(written) == 10 and 3 not in kept and 5 not in kept and replacements
    match = re.search(r'--exclude-copies dropped (\d+) likely cop(?:y|ies) .* tried seeds (\d+)-(\d+) for '
                      r'replacements', result.stdout)
    dropped, first, last = (int(g) for g in match.groups())
    assert first == 10 and set(replacements) <= set(range(first, last + 1))
    assert dropped == (10 - len(kept)) + (last - first + 1 - len(replacements))  # Replacements are checked too.
    audit = run_cli(['audit.py', f'--generated={out}', f'--data={tmp_path / "train.zip"}',
                     f'--holdout={tmp_path / "holdout.zip"}', '--mirror=on', f'--outdir={tmp_path / "audit"}'])
    assert audit.returncode == 0, audit.stderr
    with open(tmp_path / 'audit' / 'report.json') as f:
        assert json.load(f)['flagged'] == 0

#----------------------------------------------------------------------------
# Bad inputs: one line, a non-zero exit, nothing written.


@pytest.fixture(scope='module')
def bad(data, tmp_path_factory):
    root = tmp_path_factory.mktemp('bad')
    paths = dict(uint16=root / 'uint16.zip', overlap=root / 'overlap.zip', small=root / 'small.zip')
    dataset_tool.pack_dataset('phantom:40:1000', str(paths['uint16']), size=SIZE, dtype='uint16')
    dataset_tool.pack_dataset('phantom:30:10', str(paths['overlap']), size=SIZE)  # Holds phantoms 10 and 11.
    dataset_tool.pack_dataset('phantom:10:1000', str(paths['small']), size=SIZE)
    info = data['info']
    off_grid, floats = root / 'off_grid', root / 'floats'
    os.makedirs(off_grid)
    os.makedirs(floats)
    volume_io.write_volume(str(off_grid / 'seed0000.nii.gz'), np.zeros([8, 16, 12], np.uint8), info.spacing,
                           info.direction)
    volume_io.write_volume(str(floats / 'seed0000.nii.gz'), np.zeros([8, 16, 16], np.float32), info.spacing,
                           info.direction)
    return {k: str(v) for k, v in dict(paths, off_grid=off_grid, floats=floats).items()}


@pytest.mark.parametrize('case, args, fragments', [
    ('packed differently', ['--holdout={uint16}'],
     ['--holdout', 'was packed differently', 'intensity mapping uint16 percentiles 0.5..99.5, the training data '
      'uint8']),
    ('shares cases', ['--holdout={overlap}'],
     ['--holdout', 'case phantom:10 holds the same voxels as training case phantom:10 (2 such cases)']),
    ('too few to calibrate', ['--holdout={small}'], ['--holdout', '10 cases cannot calibrate alpha=0.05', '19']),
    ('no holdout', [], ['--holdout', 'no calibrated threshold exists without a holdout', '--threshold']),
    ('off the grid', ['--holdout={holdout}', '--generated={off_grid}'],
     ['--generated', 'seed0000.nii.gz has size 12x16x8; the training data\'s grid is 16x16x8']),
    ('source units of percentile data', ['--holdout={holdout}', '--generated={floats}'],
     ['--generated', 'holds float32 values', 'cannot be mapped back', '--units stored']),
    ('seeds with files', ['--holdout={holdout}', '--seeds=0-3'],
     ['--generated', 'leave --seeds, --count and --class out']),
    ('shift too large', ['--holdout={holdout}', '--shift=4'], ['--shift', 'a shift of 4 voxels leaves no interior']),
])
@pytest.mark.slow
def test_bad_inputs_fail_in_one_line_and_write_nothing(data, bad, tmp_path, case, args, fragments):
    names = dict(bad, holdout=data['holdout'])
    out = tmp_path / 'out'
    args = [a.format(**names) for a in args]
    if not any(a.startswith('--generated') for a in args):
        args.append(f'--generated={data["generated"]}')
    result = run_cli(['audit.py', f'--data={data["train"]}', *args, f'--outdir={out}'])
    assert_clean_failure(result, *fragments)
    assert not out.exists()


def test_a_used_output_folder_is_refused_before_any_work(data, audited):
    before = sorted(os.listdir(audited['out']))
    result = run_cli(['audit.py', f'--generated={data["generated"]}', f'--data={data["train"]}',
                      f'--holdout={data["holdout"]}', f'--outdir={audited["out"]}'])
    assert_clean_failure(result, '--outdir', 'already holds 4 entries', '--overwrite')
    assert sorted(os.listdir(audited['out'])) == before


def test_help_imports_no_torch():
    code = ('import runpy, sys\nsys.argv = ["audit.py", "--help"]\n'
            'try:\n    runpy.run_path("audit.py", run_name="__main__")\nexcept SystemExit:\n    pass\n'
            'assert "torch" not in sys.modules\n')
    result = run_cli(['-c', code])
    assert result.returncode == 0 and 'Usage: audit.py' in result.stdout, result.stderr[-2000:]


@pytest.mark.parametrize('args, fragment', [
    (['--exclude-copies', '--data=train.zip'], 'needs --data and --holdout'),
    (['--data=train.zip', '--holdout=holdout.zip'], '--data and --holdout are for --exclude-copies'),
])
def test_generate_exclude_copies_options_go_together(tmp_path, args, fragment):
    out = tmp_path / 'out'
    result = run_cli(['generate.py', '--network=G.pt', '--count=2', *args, f'--outdir={out}'])
    assert_clean_failure(result, '--exclude-copies', fragment)
    assert not out.exists()

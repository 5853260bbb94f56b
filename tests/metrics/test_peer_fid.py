# SPDX-License-Identifier: Apache-2.0
"""The peers' FID protocols (metrics/peer_fid.py) against the peers' own code.

tests/data/peers/reference.npz holds the features and FIDs that HA-GAN's, WDM-3D's, BrainLDM's and MAISI's
evaluation code computed on tests/data/peers/volumes.npz with the seeded weights of tests/metrics/peer_inputs.py
(commands and commits in tests/data/peers/README.md). Features must agree to 1e-5 of the largest feature (the same
float32 convolutions in another order: measured 4.7e-7 at most, and identical for MAISI); FIDs to 3e-5 relative
(measured 9.7e-6 at most: the peers' scipy sqrtm of a rank-deficient 2048 x 2048 product is only that accurate).
"""

import hashlib
import json
import os
import pickle

import numpy as np
import pytest
import scipy.linalg
import torch

from metrics import medicalnet, metric_main, metric_utils, peer_fid, resnet2d
from tests.helpers.cli import assert_clean_failure, run_cli
from tests.helpers import detectors
from tests.metrics import peer_inputs

REFERENCE = os.path.join(os.path.dirname(__file__), '..', 'data', 'peers', 'reference.npz')
FEATURE_TOL = 1e-5  # Of the largest feature magnitude.
FID_RTOL = 3e-5


@pytest.fixture(scope='module')
def ref():
    with np.load(REFERENCE) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """The seeded weights as files, the 'real' volumes as a dataset, a snapshot that replays the 'fake' ones."""
    root = tmp_path_factory.mktemp('peers')
    medicalnet_file, radimagenet_file = root / 'resnet_50.pth', root / 'RadImageNet-ResNet50_notop.pth'
    peer_inputs.save_medicalnet(str(medicalnet_file))
    peer_inputs.save_radimagenet(str(radimagenet_file))
    volumes = peer_inputs.load_volumes()
    data = detectors.write_dataset(str(root / 'reals'), volumes['real'])
    G = peer_inputs.ReplayGenerator(volumes['fake'])
    run_dir = root / '00000-run'
    run_dir.mkdir()
    (run_dir / 'training_options.json').write_text('{}')
    snapshot = run_dir / 'network-snapshot-000000.pkl'
    with open(snapshot, 'wb') as f:
        pickle.dump(dict(G_ema=G, training_set_kwargs=detectors.dataset_kwargs(data)), f)
    return dict(medicalnet=str(medicalnet_file), radimagenet=str(radimagenet_file), volumes=volumes, data=data, G=G,
                run_dir=run_dir, snapshot=str(snapshot))


def _assert_features_close(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() <= FEATURE_TOL * np.abs(theirs).max()


def _calc(setup, metric):
    return metric_main.calc_metric(metric, G=setup['G'], dataset_kwargs=detectors.dataset_kwargs(setup['data']),
                                   medicalnet_url=setup['medicalnet'], radimagenet_url=setup['radimagenet'],
                                   device='cpu', cache=False, seed=0)

#----------------------------------------------------------------------------
# Features.


@pytest.mark.slow
@pytest.mark.parametrize('peer', peer_fid.MEDICALNET_PEERS)
def test_medicalnet_protocols_give_the_peers_features(setup, ref, peer):
    featurizer = peer_fid.PeerMedicalNetFeaturizer(peer, setup['medicalnet'], torch.device('cpu'), f'fid3d_{peer}')
    for name in ('real', 'fake'):
        with torch.no_grad():
            ours = featurizer(torch.from_numpy(setup['volumes'][name]).float())[('volume', 0)][:, 0].numpy()
        _assert_features_close(ours, ref[f'{peer}_{name}'])
    others = [p for p in peer_fid.MEDICALNET_PEERS if p != peer]  # The protocols really differ.
    assert all(np.abs(ours - ref[f'{p}_fake']).max() > 1e-2 * np.abs(ours).max() for p in others)


def test_maisi_gives_the_peers_slice_features(setup, ref):
    featurizer = peer_fid.MaisiFeaturizer(setup['radimagenet'], torch.device('cpu'), 'fid25d_maisi')
    for name in ('real', 'fake'):
        first = torch.from_numpy(setup['volumes'][name][:1]).float()  # The fixture keeps the first volume's rows.
        with torch.no_grad():
            features = featurizer(first)
        for plane in peer_fid.MAISI_PLANES:
            _assert_features_close(features[(plane, 0)][0].numpy(), ref[f'maisi_{plane}_{name}'])
            rows = featurizer.rows_per_volume((plane, 0), first.shape[2:]) * len(setup['volumes'][name])
            assert rows == ref[f'maisi_{plane}_{name}_rows']
    # Without MONAI's turn to RAS the axial slices are mirrored, and the features show it.
    unturned = first[0, 0].permute(2, 1, 0)  # [W, H, D], not flipped
    with torch.no_grad():
        mirrored = featurizer.net.features(peer_fid.maisi_normalise(unturned.permute(2, 0, 1))).numpy()
    assert np.abs(mirrored - ref['maisi_xy_fake']).max() > 1e-2 * np.abs(ref['maisi_xy_fake']).max()


def test_centre_slices_follow_maisi(ref):
    shape = peer_inputs.load_volumes()['real'].shape
    for plane in peer_fid.MAISI_PLANES:  # int(0.3 * n) .. int(0.7 * n) along each axis, as MAISI cuts it.
        assert peer_fid.maisi_slice_count(plane, shape, 40) * shape[0] == ref[f'maisi_c40_{plane}_real_rows']
    assert peer_fid.centre_range(8, 40) == range(2, 5) and peer_fid.centre_range(10, None) == range(10)
    assert peer_fid.maisi_slice_count('xy', (8, 16, 40), 1) == 1  # int(3.96) .. int(4.04)
    with pytest.raises(ValueError, match='fid25d_maisi_c10: the central 10 % of 5 slices holds no slice'):
        peer_fid.maisi_slice_count('xy', (5, 16, 40), 10, 'fid25d_maisi_c10')  # int(2.25) .. int(2.75)


def test_ras_turn_and_planes():
    v = torch.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)  # [N, D, H, W]
    ras = peer_fid.to_ras(v)
    assert ras.shape == (2, 5, 4, 3)
    assert ras[1, 0, 0, 2] == v[1, 2, 3, 4] and ras[0, 4, 3, 0] == v[0, 0, 0, 0]  # x = W-1-w, y = H-1-h, z = d
    one = ras[0]
    assert peer_fid.maisi_plane_slices(one, 'xy').shape == (3, 5, 4)  # Along z: [X, Y] slices.
    assert peer_fid.maisi_plane_slices(one, 'yz').shape == (5, 4, 3)  # Along x: [Y, Z].
    assert peer_fid.maisi_plane_slices(one, 'zx').shape == (4, 5, 3)  # Along y: [X, Z].
    assert torch.equal(peer_fid.maisi_plane_slices(one, 'zx')[1], one[:, 1, :])
    x = peer_fid.maisi_normalise(torch.tensor([[[2.0, 4.0]], [[6.0, 10.0]]]))
    assert x.shape == (2, 3, 1, 2)
    torch.testing.assert_close(x[:, 0] + 0.406, torch.tensor([[[0.0, 0.25]], [[0.5, 1.0]]]))
    torch.testing.assert_close(x[:, 2] - x[:, 0], torch.full((2, 1, 2), 0.406 - 0.485))

#----------------------------------------------------------------------------
# The Frechet distance.


def _scipy_fid(x1: np.ndarray, x2: np.ndarray) -> float:
    """The peers' computation: np.cov (N - 1) and scipy's sqrtm of the product."""
    s1, s2 = np.cov(x1, rowvar=False), np.cov(x2, rowvar=False)
    diff = x1.mean(0) - x2.mean(0)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


# More samples than features; and fewer, where scipy's sqrtm of the rank-deficient product is itself approximate.
@pytest.mark.parametrize('n1, n2, rel', [(200, 150, 1e-8), (12, 9, 1e-6)])
def test_exact_frechet_distance_matches_scipy_sqrtm(n1, n2, rel):
    rng = np.random.default_rng(n1)
    mix = rng.standard_normal((40, 40))
    x1 = rng.standard_normal((n1, 40)) @ mix
    x2 = rng.standard_normal((n2, 40)) @ (mix + 0.3 * rng.standard_normal((40, 40))) + 0.5
    values = []
    for capture_all in (True, False):  # Rows (singular values) and covariances (eigendecompositions).
        stats = []
        for x in (x1, x2):
            s = metric_utils.FeatureStats(capture_all=capture_all, capture_mean_cov=True)
            s.append(torch.from_numpy(x))
            stats.append(s)
        values.append(peer_fid.frechet_distance_unbiased(*stats))
    assert values[0] == pytest.approx(_scipy_fid(x1, x2), rel=rel)
    assert values[1] == pytest.approx(values[0], rel=1e-7)
    one = metric_utils.FeatureStats(capture_mean_cov=True)
    one.append(torch.from_numpy(x1[:1]))
    with pytest.raises(ValueError, match='at least 2 feature rows'):
        peer_fid.frechet_distance_unbiased(one, stats[1])

#----------------------------------------------------------------------------
# The named metrics, end to end.


@pytest.mark.slow
@pytest.mark.parametrize('peer', peer_fid.MEDICALNET_PEERS)
def test_fid3d_peer_metric_gives_the_peers_fid(setup, ref, peer):
    result = _calc(setup, f'fid3d4_{peer}')
    assert result.results[f'fid3d4_{peer}'] == pytest.approx(float(ref[f'{peer}_fid']), rel=FID_RTOL)
    d = result.details
    assert d['protocol'] == peer and d['backbone'] == 'medicalnet-resnet50'
    assert d['weights'] == setup['medicalnet'] and d['normalisation'] == peer_fid.PROTOCOLS[peer].normalisation
    with open(setup['medicalnet'], 'rb') as f:
        assert d['weights_sha256'] == hashlib.sha256(f.read()).hexdigest()
    assert (d['num_gen_volumes'], d['num_real_volumes'], d['num_gen_rows'], d['num_real_rows']) == \
        (4, 4, {'volume': 4}, {'volume': 4})
    assert d['peer_weights'] == ('resnet_50.pth' if peer == 'hagan' else 'resnet_50_23dataset.pth')
    assert d['resizing'] == 'none' and 'average' in d['pooling'] and 'N - 1' in d['statistics']


@pytest.mark.slow
@pytest.mark.parametrize('centre', [None, 40])
def test_fid25d_maisi_gives_the_peers_fids(setup, ref, centre):
    name, tag = ('fid25d4_maisi', 'maisi') if centre is None else ('fid25d4_maisi_c40', 'maisi_c40')
    result = _calc(setup, name)
    assert set(result.results) == {name, f'{name}_xy', f'{name}_yz', f'{name}_zx'}
    for plane in peer_fid.MAISI_PLANES:
        assert result.results[f'{name}_{plane}'] == pytest.approx(float(ref[f'{tag}_fid_{plane}']), rel=FID_RTOL)
        assert result.details['num_gen_rows'][plane] == ref[f'{tag}_{plane}_fake_rows']
        assert result.details['num_real_rows'][plane] == ref[f'{tag}_{plane}_real_rows']
    assert result.results[name] == pytest.approx(float(ref[f'{tag}_fid_avg']), rel=FID_RTOL)
    assert result.details['backbone'] == 'radimagenet-resnet50' and 'RAS' in result.details['layout']


def test_each_channel_is_measured_on_its_own(setup, ref, tmp_path):
    real, fake = setup['volumes']['real'], setup['volumes']['fake']
    data = detectors.write_dataset(str(tmp_path / 'reals2'), np.concatenate([real, real[:, :, ::-1]], axis=1),
                                   channels=['t2w', 'adc'])
    G = peer_inputs.ReplayGenerator(np.concatenate([fake, real[:, :, ::-1]], axis=1))  # adc: the reals themselves.
    result = metric_main.calc_metric('fid3d4_hagan', G=G, dataset_kwargs=detectors.dataset_kwargs(data),
                                     medicalnet_url=setup['medicalnet'], device='cpu', cache=False, seed=0)
    r = result.results
    assert set(r) == {'fid3d4_hagan', 'fid3d4_hagan_t2w', 'fid3d4_hagan_adc'}
    assert r.fid3d4_hagan_t2w == pytest.approx(float(ref['hagan_fid']), rel=FID_RTOL)
    assert abs(r.fid3d4_hagan_adc) < 1e-6 * r.fid3d4_hagan_t2w  # The same volumes on both sides.
    assert r.fid3d4_hagan == pytest.approx((r.fid3d4_hagan_t2w + r.fid3d4_hagan_adc) / 2)
    assert result.details['num_real_rows'] == {'volume_t2w': 4, 'volume_adc': 4}


def test_metric_names_and_defaults():
    assert metric_main.parse_metric('fid3d_hagan').keywords == dict(num_gen=None, peer='hagan', metric='fid3d_hagan')
    assert metric_main.parse_metric('fid3d2k_wdm').keywords == dict(num_gen=2000, peer='wdm', metric='fid3d2k_wdm')
    assert metric_main.parse_metric('fid25d_maisi_c40').keywords == dict(num_gen=None, centre_percent=40,
                                                                         metric='fid25d_maisi_c40')
    for name in ('fid3d_hagan', 'fid3d_wdm', 'fid3d_brainldm', 'fid25d_maisi'):
        assert name in metric_main.list_valid_metrics()
    for name in ('fid3d_maisi', 'fid25d_hagan', 'fid25d_maisi_c0', 'fid25d_maisi_c100', 'fid3d0_hagan'):
        assert not metric_main.is_valid_metric(name), name
    assert [peer_fid.PROTOCOLS[p].num_gen for p in ('hagan', 'wdm', 'brainldm', 'maisi')] == [2048, 1000, 1000, 100]

#----------------------------------------------------------------------------
# Weights: by path only, one-line errors.


def test_missing_or_wrong_weights_are_one_line_errors(setup, tmp_path):
    with pytest.raises(OSError, match=r'fid3d4_hagan needs resnet_50.pth \(from Tencent/MedicalNet.*--medicalnet'):
        metric_main.calc_metric('fid3d4_hagan', G=setup['G'], dataset_kwargs=detectors.dataset_kwargs(setup['data']),
                                device='cpu', cache=False)
    with pytest.raises(OSError, match='RadImageNet-ResNet50_notop.pth.*--radimagenet'):
        metric_main.calc_metric('fid25d_maisi', G=setup['G'], dataset_kwargs=detectors.dataset_kwargs(setup['data']),
                                device='cpu', cache=False)
    missing = tmp_path / 'nowhere.pth'
    with pytest.raises(OSError) as info:
        peer_fid.MaisiFeaturizer(str(missing), torch.device('cpu'), 'fid25d_maisi')
    assert f'No such file: {missing}' in str(info.value) and 'Warvito/radimagenet-models' in str(info.value)
    assert '\n' not in str(info.value)
    with pytest.raises(ValueError, match='is not RadImageNet ResNet-50 weights') as info:
        resnet2d.load_radimagenet(setup['medicalnet'])
    assert '\n' not in str(info.value)


def test_radimagenet_layout_loads_the_published_key_names():
    keys = set(resnet2d.RadImageNetResNet50().state_dict())
    assert {'conv1.weight', 'conv1.bias', 'bn1.running_var', 'layer1.0.downsample.0.bias', 'layer4.2.conv3.bias',
            'layer2.0.conv1.weight'} <= keys
    net = resnet2d.RadImageNetResNet50()
    assert net.layer2[0].conv1.stride == (2, 2) and net.layer2[0].conv2.stride == (1, 1)  # Keras: stride on the 1x1.
    assert net.bn1.eps == pytest.approx(1.001e-5)
    assert net.features(torch.zeros(1, 3, 64, 40)).shape == (1, 2048)
    assert len(keys) == len(medicalnet.MedicalNetResNet(50).state_dict()) + 53  # Every conv has a bias here.

#----------------------------------------------------------------------------
# The command line, as a user runs it.


@pytest.mark.slow
def test_calc_metrics_cli_reports_peer_protocols(setup, ref):
    result = run_cli(['calc_metrics.py', f'--network={setup["snapshot"]}', '--metrics=fid3d4_hagan,fid25d4_maisi',
                      f'--medicalnet={setup["medicalnet"]}', f'--radimagenet={setup["radimagenet"]}',
                      '--no-progress', '--trust-pickle'],  # The replaying generator is test code, not ours.
                     env=dict(DNNLIB_CACHE_DIR=str(setup['run_dir'] / 'cache')))
    assert result.returncode == 0, result.stderr[-3000:]
    hagan = json.loads((setup['run_dir'] / 'metric-fid3d4_hagan.jsonl').read_text().splitlines()[-1])
    assert hagan['results']['fid3d4_hagan'] == pytest.approx(float(ref['hagan_fid']), rel=FID_RTOL)
    maisi = json.loads((setup['run_dir'] / 'metric-fid25d4_maisi.jsonl').read_text().splitlines()[-1])
    assert maisi['results']['fid25d4_maisi'] == pytest.approx(float(ref['maisi_fid_avg']), rel=FID_RTOL)
    for record, backbone in ((hagan, 'medicalnet-resnet50'), (maisi, 'radimagenet-resnet50')):
        d = record['details']
        assert d['backbone'] == backbone and len(d['weights_sha256']) == 64 and d['normalisation']
        assert d['num_gen_volumes'] == 4 and d['num_real_volumes'] == 4 and d['resizing'].startswith('none')
    assert maisi['details']['weights_sha256'] == maisi['details']['inputs']['radimagenet50-maisi']['sha256']


@pytest.mark.slow
def test_calc_metrics_cli_needs_radimagenet_weights(setup):
    result = run_cli(['calc_metrics.py', f'--network={setup["snapshot"]}', '--metrics=fid25d_maisi',
                      '--no-progress'])
    assert_clean_failure(result, 'fid25d_maisi needs RadImageNet ResNet-50 weights', '--radimagenet')

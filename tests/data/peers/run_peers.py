# SPDX-License-Identifier: Apache-2.0
"""Reference features and FIDs from the peers' own evaluation code, for tests/metrics/test_peer_fid.py.

Not part of the project and not run by the tests (it needs the peers' source trees and MONAI). It runs in a separate
virtual environment on the volumes and seeded weights that `python -m tests.metrics.peer_inputs WORK` writes, calls
the peers' functions on them, and writes reference.npz. README.md beside it gives the exact commands and commits.

Where a peer script cannot run as it is on a CPU, the smallest change is made around it, never inside the functions
that compute the numbers: Tensor.cuda is the identity (their loops call .cuda()); HA-GAN's fid_score.py has a syntax
error in generate_samples (`Sub_Encoder(args.latent_dim=...)`), so its other functions are taken from its syntax tree
with that one keyword fixed, and `OrderedDict`, which it uses without importing, is supplied; WDM-3D's and HA-GAN's
activation arrays are sized to the number of volumes (their scripts fix 1000 / 2048 rows); WDM-3D's loader lists
files in os.walk order, so its list is sorted to keep the rows in volume order.
"""

from __future__ import annotations

import argparse
import ast
import collections
import importlib.util
import os
import sys
import types

import nibabel
import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

torch.Tensor.cuda = lambda self, *args, **kwargs: self  # The peers' loops move batches to CUDA; stay on the CPU.
LPS_AFFINE = np.diag([-1.0, -1.0, 1.0, 1.0])  # A NIfTI affine for ITK's identity (LPS) direction, spacing 1.


def load_functions(path: str, names: set[str], namespace: dict, fixes: dict[str, str] | None = None) -> dict:
    """The top-level functions and classes `names` of a Python file, executed in `namespace`."""
    with open(path) as f:
        source = f.read()
    for old, new in (fixes or {}).items():
        source = source.replace(old, new)
    tree = ast.parse(source)
    body = [node for node in tree.body if getattr(node, 'name', None) in names]
    exec(compile(ast.Module(body=body, type_ignores=[]), path, 'exec'), namespace)
    return namespace


def import_file(name: str, path: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def to_unit(u8: np.ndarray) -> np.ndarray:
    """Stored uint8 -> [-1, 1] with HA-GAN's preprocessing mapping (np.interp onto [-1, 1])."""
    return np.interp(u8.astype(np.float64), [0, 255], [-1, 1])


def xyz(volume_dhw: np.ndarray) -> np.ndarray:
    """[D, H, W] -> the (x, y, z) array that nibabel reads from the NIfTI file generate.py writes."""
    return np.ascontiguousarray(volume_dhw.transpose(2, 1, 0))


def write_nifti(folder: str, volumes: np.ndarray, transform) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, v in enumerate(volumes[:, 0]):
        path = os.path.join(folder, f'vol{i:03d}.nii.gz')
        nibabel.save(nibabel.Nifti1Image(transform(v), LPS_AFFINE), path)
        paths.append(path)
    return paths


def hagan(src: str, weights: str, sets: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    evaluation = os.path.join(src, 'HA-GAN', 'evaluation')
    sys.path.insert(0, evaluation)
    import resnet3D
    syntax_fix = {'Sub_Encoder(args.latent_dim=args.latent_dim)': 'Sub_Encoder(latent_dim=args.latent_dim)'}
    ns = load_functions(os.path.join(evaluation, 'fid_score.py'),
                        {'Flatten', 'trim_state_dict_name', 'get_activations_from_dataloader',
                         'calculate_frechet_distance', 'post_process'},
                        dict(np=np, linalg=scipy.linalg, torch=torch, nn=torch.nn, OrderedDict=collections.OrderedDict),
                        fixes=syntax_fix)
    # get_feature_extractor, with the checkpoint path as an argument and without DataParallel/.cuda().
    model = resnet3D.resnet50(shortcut_type='B')
    model.conv_seg = torch.nn.Sequential(torch.nn.AdaptiveAvgPool3d((1, 1, 1)), ns['Flatten']())
    model.load_state_dict(ns['trim_state_dict_name'](torch.load(weights)['state_dict']))
    model.eval()
    out = {}
    for name, volumes in sets.items():
        args = argparse.Namespace(num_samples=len(volumes), batch_size=2, dims=2048)
        data = [torch.from_numpy(to_unit(volumes[i:i + 2])) for i in range(0, len(volumes), 2)]  # [2, 1, D, H, W]
        out[f'hagan_{name}'] = ns['get_activations_from_dataloader'](model, data, args)
    m1, s1 = ns['post_process'](out['hagan_real'])
    m2, s2 = ns['post_process'](out['hagan_fake'])
    out['hagan_fid'] = np.float64(ns['calculate_frechet_distance'](m1, s1, m2, s2))
    return out


def wdm(src: str, weights: str, sets: dict[str, np.ndarray], work: str) -> dict[str, np.ndarray]:
    root = os.path.join(src, 'wdm-3d')
    sys.path[:0] = [os.path.join(root, 'eval'), root]
    fid = import_file('wdm_fid', os.path.join(root, 'eval', 'fid.py'))
    from guided_diffusion.bratsloader import BRATSVolumes
    D, H, W = sets['real'].shape[-3:]
    opts = argparse.Namespace(model='resnet', model_depth=50, input_W=W, input_H=H, input_D=D, resnet_shortcut='B',
                              no_cuda=True, n_seg_classes=2, phase='test', pretrain_path=weights,
                              new_layer_names=['conv_seg'], batch_size=1, dims=2048)
    # get_feature_extractor as on a GPU, where generate_model wraps the model in DataParallel (the weights' keys
    # carry `module.`); on a CPU DataParallel calls the module directly.
    model = torch.nn.DataParallel(fid.generate_model(opts)[0])
    model.load_state_dict(torch.load(opts.pretrain_path)['state_dict'])
    model.eval()
    out = {}
    for name, volumes in sets.items():
        # Samples as scripts/generation_sample.py writes them: (x + 1) / 2 of the [-1, 1] output, float32 NIfTI.
        folder = os.path.join(work, 'nifti', f'wdm_{name}')
        write_nifti(folder, volumes, lambda v: xyz(((torch.from_numpy(to_unit(v)).float() + 1) / 2.).numpy()))
        dataset = BRATSVolumes(folder, normalize=None, mode='fake', img_size=W)
        dataset.database.sort(key=lambda d: d['t1n'])
        loader = torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=False)
        opts.num_samples = len(dataset)
        out[f'wdm_{name}'] = fid.get_activations(model, loader, opts)
    mu_real, sigma_real = fid.process_feature_vecs(out['wdm_real'])
    mu_fake, sigma_fake = fid.process_feature_vecs(out['wdm_fake'])
    out['wdm_fid'] = np.float64(fid.calculate_frechet_distance(mu_real, sigma_real, mu_fake, sigma_fake))
    return out


def brainldm(src: str, weights: str, sets: dict[str, np.ndarray], work: str) -> dict[str, np.ndarray]:
    sys.path.insert(0, os.path.join(src, 'MedicalNet-models'))
    from medicalnet_models.models.resnet import medicalnet_resnet50_23datasets
    from monai import transforms
    from monai.metrics import FIDMetric  # generative.metrics.FIDMetric (GenerativeModels >= b1c8f05) is this code.
    # The hub function with the weights already in place (so it downloads nothing).
    model = medicalnet_resnet50_23datasets(model_dir=os.path.dirname(weights), filename=os.path.basename(weights))
    model.eval()
    # compute_fid.py's sample_transforms (its test set adds a crop, a pad and a [0, 1] rescale: data preparation).
    sample_transforms = transforms.Compose([
        transforms.LoadImaged(keys=['image']), transforms.EnsureChannelFirstd(keys=['image']),
        transforms.NormalizeIntensityd(keys=['image']), transforms.ToTensord(keys=['image'])])
    out = {}
    for name, volumes in sets.items():
        paths = write_nifti(os.path.join(work, 'nifti', f'brainldm_{name}'), volumes,
                            lambda v: xyz(v.astype(np.float32)))
        rows = []
        for path in paths:
            img = sample_transforms({'image': path})['image'][None]  # Their DataLoader's batch of one.
            with torch.no_grad():
                outputs = model(img)
                rows.append(F.adaptive_avg_pool3d(outputs, (1, 1, 1)).view(outputs.size(0), -1))
        out[f'brainldm_{name}'] = torch.cat(rows).numpy()
    fid = FIDMetric()(torch.from_numpy(out['brainldm_fake']), torch.from_numpy(out['brainldm_real']))
    out['brainldm_fid'] = np.float64(fid.item())
    return out


def maisi(src: str, weights: str, sets: dict[str, np.ndarray], work: str,
          ratio: float | None, tag: str, keep_features: int) -> dict[str, np.ndarray]:
    sys.path.insert(0, os.path.join(src, 'radimagenet-models'))
    from radimagenet_models.models.resnet import radimagenet_resnet50
    from monai import transforms
    from monai.metrics import FIDMetric
    script = import_file('maisi_fid', os.path.join(src, 'NV-Generate-CTMR', 'scripts', 'compute_fid_2-5d_ct.py'))
    network = radimagenet_resnet50(model_dir=os.path.dirname(weights), file_name=os.path.basename(weights))
    network.eval()
    out, planes = {}, ('xy', 'yz', 'zx')
    for name, volumes in sets.items():
        paths = write_nifti(os.path.join(work, 'nifti', f'maisi_{name}'), volumes, lambda v: xyz(v.astype(np.float32)))
        # main()'s transforms for the volume's own shape (pad and crop are then no-ops), without resampling.
        shape = tuple(nibabel.load(paths[0]).shape)
        loading = transforms.Compose([
            transforms.LoadImaged(keys=['image']), transforms.EnsureChannelFirstd(keys=['image']),
            transforms.Orientationd(keys=['image'], axcodes='RAS'),
            transforms.SpatialPadd(keys=['image'], spatial_size=shape, mode='constant', value=-1000),
            transforms.CenterSpatialCropd(keys=['image'], roi_size=shape),
            transforms.ScaleIntensityRanged(keys=['image'], a_min=-1000, a_max=1000, b_min=-1000, b_max=1000,
                                            clip=True)])
        per_plane = {p: [] for p in planes}
        for path in sorted(paths):
            img = loading({'image': path})['image'][None].as_tensor()  # [1, 1, X, Y, Z], as their DataLoader.
            feats = script.get_features_2p5d(img, network, center_slices=ratio is not None,
                                             center_slices_ratio=ratio if ratio is not None else 1.0, xy_only=False)
            for p, f in zip(planes, feats):
                per_plane[p].append(f)
        for p in planes:
            rows = torch.vstack(per_plane[p])
            out[f'{tag}_{p}_{name}_rows'] = np.int64(rows.shape[0])
            if keep_features:  # The rows of the first volumes only: the fixture stays small.
                count = sum(f.shape[0] for f in per_plane[p][:keep_features])
                out[f'{tag}_{p}_{name}'] = rows[:count].numpy()
            per_plane[p] = rows
        out[f'_{name}'] = per_plane
    fids = [FIDMetric()(out['_fake'][p], out['_real'][p]).item() for p in planes]
    for p, value in zip(planes, fids):
        out[f'{tag}_fid_{p}'] = np.float64(value)
    out[f'{tag}_fid_avg'] = np.float64(sum(fids) / 3.0)
    del out['_real'], out['_fake']
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--src', required=True, help='folder with the peer source trees (see README.md)')
    parser.add_argument('--work', required=True, help='folder written by python -m tests.metrics.peer_inputs')
    parser.add_argument('--out', required=True, help='reference .npz to write')
    args = parser.parse_args()
    torch.set_num_threads(1)
    with np.load(os.path.join(args.work, 'volumes.npz')) as data:
        sets = {k: data[k] for k in ('real', 'fake')}
    medicalnet = os.path.join(args.work, 'medicalnet50.pth')
    radimagenet = os.path.join(args.work, 'radimagenet50.pth')
    out = {}
    out.update(hagan(args.src, medicalnet, sets))
    out.update(wdm(args.src, medicalnet, sets, args.work))
    out.update(brainldm(args.src, medicalnet, sets, args.work))
    out.update(maisi(args.src, radimagenet, sets, args.work, None, 'maisi', keep_features=1))
    out.update(maisi(args.src, radimagenet, sets, args.work, 0.4, 'maisi_c40', keep_features=0))
    out['torch_version'] = np.array(torch.__version__)
    np.savez_compressed(args.out, **{k: (v.astype(np.float32) if isinstance(v, np.ndarray) and v.ndim == 2 else v)
                                     for k, v in out.items()})
    for k, v in sorted(out.items()):
        print(k, v if np.ndim(v) == 0 else np.shape(v))


if __name__ == '__main__':
    main()

# SPDX-License-Identifier: Apache-2.0
"""Test volumes with known geometry (a Gaussian blob at a world position, a sphere of known radius, a DICOM series,
labelled cases) and reading back what dataset_tool.py packed."""

import json
import os
import zipfile

import nibabel as nib
import numpy as np
import SimpleITK as sitk

BLOB_SIGMA_MM = 3.0


def read_zip(path):
    """(dataset.json, {name: array}) of a packed zip."""
    with zipfile.ZipFile(path) as z:
        info = json.loads(z.read('dataset.json'))
        arrays = {n: np.load(z.open(n)) for n in z.namelist() if n.endswith('.npy')}
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
    return info, arrays

#----------------------------------------------------------------------------
# Sources with a smooth blob at a known world position (LPS, mm).


def blob(points_lps, centre_lps):
    """A Gaussian blob (peak 1000) on a gentle ramp, evaluated at world points [..., 3]."""
    r2 = ((points_lps - np.asarray(centre_lps)) ** 2).sum(-1)
    return 1000 * np.exp(-r2 / (2 * BLOB_SIGMA_MM ** 2)) + 20 + points_lps[..., 0]


def sitk_blob_image(size_xyz, spacing, direction, centre_lps, blob_lps):
    """A float32 image on the given grid, centred at centre_lps, holding the blob at blob_lps."""
    m = np.reshape(direction, (3, 3))
    half = (np.asarray(size_xyz) - 1) / 2 * np.asarray(spacing)
    origin = np.asarray(centre_lps) - m @ half
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in size_xyz[::-1]], indexing='ij')  # [D, H, W] each
    index_mm = np.stack([xx, yy, zz], -1) * np.asarray(spacing)                       # [D, H, W, 3]
    points = origin + index_mm @ m.T
    image = sitk.GetImageFromArray(blob(points, blob_lps).astype(np.float32))
    image.SetSpacing(spacing)
    image.SetDirection(tuple(float(d) for d in direction))
    image.SetOrigin(tuple(origin))
    return image


def blob_centroid(volume_dhw):
    """Intensity-weighted centroid (x, y, z) in voxels of the part above half the peak."""
    v = volume_dhw.astype(np.float64)
    weights = np.where(v > v.max() / 2, v, 0)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in v.shape], indexing='ij')
    return np.array([(g * weights).sum() / weights.sum() for g in (xx, yy, zz)])

#----------------------------------------------------------------------------
# A sphere of known radius, and DICOM series.


def sphere_image(spacing, radius_mm, size):
    """A float image with a solid sphere of radius_mm around the centre, partial-volume edges by supersampling."""
    zz, yy, xx = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(size[::-1], spacing[::-1])]
    fine = np.linspace(-0.5, 0.5, 5)[1:-1:]  # Sub-voxel offsets for a smooth edge.
    inside = np.zeros(size[::-1], dtype=np.float32)
    for dz in fine * spacing[2]:
        for dy in fine * spacing[1]:
            for dx in fine * spacing[0]:
                r2 = (zz[:, None, None] + dz) ** 2 + (yy[None, :, None] + dy) ** 2 + (xx[None, None, :] + dx) ** 2
                inside += r2 <= radius_mm ** 2
    image = sitk.GetImageFromArray(inside / len(fine) ** 3)
    image.SetSpacing(spacing)
    image.SetOrigin(tuple(-(n - 1) / 2 * s for n, s in zip(size, spacing)))
    return image


def measured_radius(array, spacing):
    """Radius (mm) from the volume above half height: (3 V / 4 pi)^(1/3)."""
    volume = (array > 0.5).sum() * np.prod(spacing)
    return (3 * volume / (4 * np.pi)) ** (1 / 3)


def write_dicom_series(folder, volume_dhw, spacing, uid='1.2.826.0.1.3680043.2.1125.1', origin=(0, 0, 0),
                       extension='.dcm', description='series'):
    """Write a [D, H, W] int16 volume as one DICOM file per slice with the position/orientation tags."""
    os.makedirs(folder, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetImageIO('GDCMImageIO')  # Needed for file names without an extension.
    for k in range(volume_dhw.shape[0]):
        image = sitk.GetImageFromArray(volume_dhw[k:k + 1])
        image.SetSpacing(spacing)
        position = (origin[0], origin[1], origin[2] + k * spacing[2])
        image.SetOrigin(position)
        tags = {'0008|0060': 'MR', '0020|000e': uid, '0020|000d': uid + '.9', '0008|103e': description,
                '0020|0037': '1\\0\\0\\0\\1\\0', '0020|0032': '\\'.join(f'{p:g}' for p in position),
                '0020|0013': str(k + 1), '0018|0050': f'{spacing[2]:g}',
                '0008|0018': f'{uid}.{k + 1}', '0008|0016': '1.2.840.10008.5.1.4.1.1.4'}
        for key, value in tags.items():
            image.SetMetaData(key, value)
        writer.SetFileName(os.path.join(str(folder), f'slice{k:03d}{extension}'))
        writer.Execute(image)

#----------------------------------------------------------------------------
# Labelled cases: label values with gaps.


PACKED_NAMES = {1: 'gland', 7: 'lesion', 8: 'vessel', 9: 'bone'}  # Packed label values with gaps, as in issue #23.
SHAPE_XYZ = (16, 16, 8)


def write_labelled_case(folder, name: str, seed: int) -> None:
    """An image and its label map (x, y, z) = SHAPE_XYZ with the values 0, 1, 7, 8 and 9, as NIfTI."""
    labels = np.zeros(SHAPE_XYZ, np.uint8)
    labels[2:14, 2:14, 1:7] = 1
    labels[4:8, 4:8, 2:5] = 7
    labels[9:12, 4:8, 2:5] = 8
    labels[4:12, 10:13, 5:7] = 9
    image = np.choose(labels, [0.1, 0.5, *[0] * 5, 0.9, 0.7, 1.0]).astype(np.float32)
    image += np.random.default_rng(seed).normal(0, 0.02, SHAPE_XYZ).astype(np.float32)
    affine = np.diag([1.25, 1.0, 2.5, 1.0])
    os.makedirs(folder, exist_ok=True)
    nib.save(nib.Nifti1Image(image, affine), os.path.join(folder, f'{name}.nii.gz'))
    nib.save(nib.Nifti1Image(labels, affine), os.path.join(folder, f'{name}_seg.nii.gz'))


def write_phantoms_as_generated(source: str, folder, size: tuple[int, int, int], shift: int = 0) -> str:
    """Labelled phantoms (`source`, e.g. 'phantom:20') written as generate.py writes volumes: seedNNNN.nii.gz and
    seedNNNN_seg.nii.gz in stored units with the record's geometry. shift > 0 rolls every label map that many voxels
    along y and x, off its organ. Packs `folder`.zip on the way."""
    import dataset_tool
    from volumes import volume_io
    from volumes.packed import PackedDataset
    packed = str(folder) + '.zip'
    dataset_tool.pack_dataset(source, packed, size=size, seg='phantom')
    dataset = PackedDataset(packed)
    info = dataset.volume_info
    os.makedirs(folder)
    for i in range(len(dataset)):
        labels = np.roll(dataset.label_map(i), (shift, shift), axis=(1, 2))  # [D, H, W]: y and x
        for name, array in ((f'seed{i:04d}.nii.gz', dataset.volume(i)[0]), (f'seed{i:04d}_seg.nii.gz', labels)):
            volume_io.write_volume(os.path.join(folder, name), array, info.spacing, info.direction,
                                   info.origin(array.shape))
    return str(folder)

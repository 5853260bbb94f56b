# SPDX-License-Identifier: Apache-2.0
"""PyRadiomics' filtered image types: Laplacian of Gaussian (SimpleITK) and the 3D stationary wavelet transform
(PyWavelets), with PyRadiomics' image names.

A filter reads the pre-processed image (roi.preprocess: normalised, resampled or pre-cropped, with padDistance
voxels of context around the ROI) and returns images on the same grid; the features of each are then computed on
the ROI's bounding box, as for the original image.

- LoG: SimpleITK's LaplacianRecursiveGaussianImageFilter with sigma in mm and normalisation across scale, one image
  per sigma, named `log-sigma-<sigma>-mm-3D` with the dot of str(sigma) as a dash (2.0 -> `log-sigma-2-0-mm-3D`).
  PyRadiomics skips a sigma (or all of them) with a warning when the image is too small; here that is an error, so
  every volume has the same features.
- Wavelet: pywt.swtn one level at a time over the axes (x, y, z), after padding each odd axis with one wrapped
  voxel (removed again afterwards); `start_level` levels are applied to the approximation first, then `level`
  levels each give the 7 detail sub-bands, and the last approximation gives one image. Sub-band names spell the
  filter per axis in (x, y, z) order, L for low pass and H for high pass: `wavelet-LLH` is high pass along z;
  levels after the first are named `wavelet2-...`, `wavelet3-...`.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import SimpleITK as sitk

from .settings import ImageType

ORIGINAL_PREFIX = 'original'
# pywt's sub-band keys (a: approximation = low pass, d: detail = high pass; one letter per axis x, y, z) of the 7
# detail bands, in the order pywt returns them and PyRadiomics yields them.
DETAILS = tuple(a + b + c for a in 'ad' for b in 'ad' for c in 'ad')[1:]

#----------------------------------------------------------------------------
# Names.


def log_prefix(sigma: float) -> str:
    return f'log-sigma-{str(sigma).replace(".", "-")}-mm-3D'


def _wavelet_name(bands: str, level_index: int) -> str:
    """'aad' (pywt's key, axes x, y, z) at the level_index-th level (1-based) -> 'wavelet-LLH' / 'wavelet2-LLH'."""
    letters = bands.replace('a', 'L').replace('d', 'H')
    return f'wavelet-{letters}' if level_index == 1 else f'wavelet{level_index}-{letters}'


def wavelet_prefixes(image_type: ImageType) -> list[str]:
    """The image names one Wavelet image type gives, in PyRadiomics' order: the details level by level, then the
    approximation."""
    names = [_wavelet_name(d, i) for i in range(1, image_type.level + 1) for d in DETAILS]
    return names + [_wavelet_name('aaa', image_type.level)]


def prefixes(image_type: ImageType) -> list[str]:
    """The names of the images an image type gives (the prefix of its features' names)."""
    if image_type.name == 'Original':
        return [ORIGINAL_PREFIX]
    if image_type.name == 'LoG':
        return [log_prefix(s) for s in image_type.sigma]
    return wavelet_prefixes(image_type)

#----------------------------------------------------------------------------
# Filters.


def _xyz(values) -> str:
    return 'x'.join(f'{v:g}' for v in values)


def log_images(image: sitk.Image, sigmas: tuple[float, ...], name: str = 'volume') -> Iterator[tuple[str, sitk.Image]]:
    """(name, LoG-filtered image) for each sigma (mm).

    Raises:
        ValueError: the image is under 4 voxels along an axis, or not over sigma / spacing + 1 voxels (PyRadiomics'
            conditions, where it skips the image).
    """
    size = np.asarray(image.GetSize())
    spacing = np.asarray(image.GetSpacing())
    if size.min() < 4:
        raise ValueError(f'{name}: the image around the ROI is {_xyz(size)} voxels; the LoG filter needs at least 4 '
                         f'along every axis')
    for sigma in sigmas:
        if not np.all(size >= np.ceil(sigma / spacing) + 1):
            raise ValueError(f'{name}: the image around the ROI is {_xyz(size)} voxels of {_xyz(spacing)} mm, too '
                             f'small for LoG sigma {sigma} mm (it needs ceil(sigma / spacing) + 1 voxels per axis)')
        log = sitk.LaplacianRecursiveGaussianImageFilter()
        log.SetNormalizeAcrossScale(True)
        log.SetSigma(float(sigma))
        yield log_prefix(sigma), log.Execute(image)


def wavelet_images(image: sitk.Image, image_type: ImageType) -> Iterator[tuple[str, sitk.Image]]:
    """(name, sub-band image) of a Wavelet image type, in wavelet_prefixes order."""
    import pywt  # Imported here: only the Wavelet image type needs PyWavelets.
    array = sitk.GetArrayFromImage(image)  # [D, H, W]
    odd = [n % 2 for n in array.shape]
    # swtn halves nothing but needs axes divisible by 2 per level: one wrapped voxel makes odd axes even.
    data = np.pad(array, [(0, o) for o in odd], mode='wrap')
    unpad = tuple(slice(0, n) for n in array.shape)
    axes = (2, 1, 0)  # x, y, z: the order of the letters in the sub-band names.
    wavelet = pywt.Wavelet(image_type.wavelet)

    def to_image(band: np.ndarray) -> sitk.Image:
        out = sitk.GetImageFromArray(np.ascontiguousarray(band[unpad]))
        out.CopyInformation(image)
        return out

    for _ in range(image_type.start_level):
        data = pywt.swtn(data, wavelet, level=1, start_level=0, axes=axes)[0]['aaa']
    for index in range(1, image_type.level + 1):
        bands = pywt.swtn(data, wavelet, level=1, start_level=0, axes=axes)[0]
        data = bands['aaa']
        for key in DETAILS:
            yield _wavelet_name(key, index), to_image(bands[key])
    yield _wavelet_name('aaa', image_type.level), to_image(data)


def filtered_images(image: sitk.Image, image_type: ImageType,
                    name: str = 'volume') -> Iterator[tuple[str, sitk.Image]]:
    """(image name, image) of one image type from the pre-processed image: the image itself for Original."""
    if image_type.name == 'Original':
        yield ORIGINAL_PREFIX, image
    elif image_type.name == 'LoG':
        yield from log_images(image, image_type.sigma, name)
    else:
        yield from wavelet_images(image, image_type)

# SPDX-License-Identifier: Apache-2.0
"""Write the two small folders of volumes the FRD fixtures are computed on (run in the project's environment):

    python tests/data/radiomics/make_frd_volumes.py tests/data/radiomics/frd_volumes

`reals/`: 8 phantoms (volumes/phantom.py, seeds 0-7); `fakes/`: 6 others (seeds 100-105), smoothed and with
another contrast, so the two sets differ. 24x24x12 voxels of 1.5 x 1.5 x 2.5 mm (FRD v1 resamples to 2 mm),
uint8 NIfTI as generate.py writes them.
"""

import os
import sys

import numpy as np
import scipy.ndimage
import SimpleITK as sitk

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
from volumes.phantom import make_phantom  # noqa: E402

SIZE_XYZ = (24, 24, 12)
SPACING_XYZ = (1.5, 1.5, 2.5)


def write(array: np.ndarray, path: str) -> None:
    image = sitk.GetImageFromArray(np.clip(np.rint(array * 200), 0, 255).astype(np.uint8))
    image.SetSpacing(SPACING_XYZ)
    sitk.WriteImage(image, path, useCompression=True)


def main(out: str) -> None:
    for group, seeds in (('reals', range(8)), ('fakes', range(100, 106))):
        os.makedirs(os.path.join(out, group), exist_ok=True)
        for seed in seeds:
            volume, _ = make_phantom(seed, SIZE_XYZ, SPACING_XYZ)  # [D, H, W]
            if group == 'fakes':
                volume = scipy.ndimage.gaussian_filter(volume, (0.5, 1.0, 1.0)) ** 1.3
            write(volume, os.path.join(out, group, f'{group[:-1]}{seed:03d}.nii.gz'))


if __name__ == '__main__':
    main(sys.argv[1])

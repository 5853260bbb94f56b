# SPDX-License-Identifier: Apache-2.0
"""Write filtered_features.json: PyRadiomics' own values of the LoG and wavelet features on the shared cases.

Runs in a separate environment with PyRadiomics built from its git source (never in the project's): see README.md
in this folder for the commands. Only PyRadiomics' public API is called (RadiomicsFeatureExtractor with a
parameter dict, execute on an image and its mask).

    python make_filter_fixtures.py OUT.json
"""

import importlib.metadata
import json
import os
import subprocess
import sys

import numpy
import pywt
import radiomics
import SimpleITK as sitk
from radiomics import featureextractor

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = ('brain1', 'breast1')
ALL_CLASSES = {c: [] for c in ('shape', 'firstorder', 'glcm', 'gldm', 'glrlm', 'glszm', 'ngtdm')}

VARIANTS = {
    # FRD v1's 3D extraction settings (frd-score 1.0.1, configs/extraction_3d.yaml), with every feature class.
    'frd_v1': {
        'setting': {'normalize': True, 'normalizeScale': 100, 'interpolator': 'sitkBSpline',
                    'resampledPixelSpacing': [2, 2, 2], 'padDistance': 10, 'preCrop': True, 'binWidth': 5,
                    'voxelArrayShift': 300, 'correctMask': True, 'minimumROIDimensions': 1, 'label': 1},
        'imageType': {'Original': {}, 'LoG': {'sigma': [2.0, 3.0, 4.0, 5.0]}, 'Wavelet': {}},
        'featureClass': ALL_CLASSES,
    },
    # No resampling, pre-cropped with 5 voxels of context, the image in its own units (int16) and bin width;
    # integer and fractional sigmas; two Haar levels (the second named wavelet2-...).
    'precrop': {
        'setting': {'preCrop': True, 'padDistance': 5, 'binWidth': 25, 'label': 1},
        'imageType': {'LoG': {'sigma': [1, 2.5]}, 'Wavelet': {'wavelet': 'haar', 'level': 2}},
        'featureClass': ALL_CLASSES,
    },
    # PyRadiomics' defaults: the filters see the whole image; the wavelet starts one level down.
    'whole': {
        'setting': {'label': 1, 'binWidth': 25},
        'imageType': {'Original': {}, 'LoG': {'sigma': [3.0]}, 'Wavelet': {'start_level': 1}},
        'featureClass': {'firstorder': [], 'glcm': []},
    },
}


def git_commit() -> str:
    source = os.path.dirname(os.path.dirname(os.path.abspath(radiomics.__file__)))
    for path in (os.environ.get('PYRADIOMICS_SOURCE'), source):
        if path:
            try:
                return subprocess.check_output(['git', '-C', path, 'rev-parse', 'HEAD'], text=True).strip()
            except (OSError, subprocess.CalledProcessError):
                pass
    return 'unknown'


def number(value) -> float | None:
    value = float(value)
    return value if numpy.isfinite(value) else None


def main(out: str) -> None:
    radiomics.setVerbosity(60)
    variants = {}
    for variant, params in VARIANTS.items():
        extractor = featureextractor.RadiomicsFeatureExtractor(params)
        values = {}
        for case in CASES:
            image = os.path.join(HERE, f'{case}_image.nrrd')
            mask = os.path.join(HERE, f'{case}_label.nrrd')
            result = extractor.execute(image, mask)
            values[case] = {k: number(v) for k, v in result.items() if not k.startswith('diagnostics_')}
        variants[variant] = {'params': params, 'values': values}
    provenance = {'pyradiomics_version': radiomics.__version__, 'pyradiomics_commit': git_commit(),
                  'pywavelets': importlib.metadata.version('PyWavelets'),
                  'pywt_version_attribute': pywt.__version__, 'simpleitk': sitk.Version_VersionString(),
                  'numpy': numpy.__version__, 'python': sys.version.split()[0]}
    with open(out, 'w') as f:
        json.dump({'provenance': provenance, 'variants': variants}, f, indent=1)
        f.write('\n')


if __name__ == '__main__':
    main(sys.argv[1])

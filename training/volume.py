# SPDX-License-Identifier: Apache-2.0
"""The volume contract: what makes an array a volume here (axis order, intensity, geometry).

Light on purpose (no torch, no SimpleITK): command-line tools import it for their option lists.
"""

from __future__ import annotations

DATASET_FORMAT = 'stylegan2-ada-3d/1'               # The "format" of a packed dataset's dataset.json.
WRITE_FORMATS = ('nii.gz', 'nii', 'nrrd', 'npy')  # What generated volumes can be written as.
MAX_SEEDS = 10_000_000                             # A guard against a typo such as 0-99999999999 filling the memory.

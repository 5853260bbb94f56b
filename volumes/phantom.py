# SPDX-License-Identifier: Apache-2.0
"""A procedural pelvis-like MRI phantom for demos, tests and benchmarks.

Each phantom is an anisotropic volume (thick slices, like an axial T2W prostate scan) holding a body outline with a
bright subcutaneous rim, soft tissue with a smooth texture, a central organ whose inner zone is brighter or darker
than its rim, a dark tubular structure behind the organ and sometimes a small bright nodule inside it. A smooth
multiplicative bias field and Rician noise finish it. Everything is drawn from one seed, so a seed is a volume.

Arrays are [D, H, W] (z, y, x); the phantom is in the canonical LPS orientation (identity direction), so rows run
towards posterior and columns towards the patient's left.
"""

from __future__ import annotations

import numpy as np

DEFAULT_SIZE_XYZ = (128, 128, 24)      # W x H x D, the size phantoms have when no size is asked for.
LABEL_NAMES = {1: 'inner zone', 2: 'outer zone'}  # The organ mask: its inner zone and the rim around it.
FIELD_OF_VIEW_MM = (64.0, 64.0, 72.0)  # Physical extent x, y, z; 128x128x24 gives 0.5 x 0.5 x 3 mm voxels.

#----------------------------------------------------------------------------
# Geometry helpers on normalised coordinates in [-1, 1] (one unit = half the field of view).


def _grid(size_xyz: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel-centre coordinates as broadcastable arrays: Z [D,1,1], Y [1,H,1], X [1,1,W]."""
    w, h, d = size_xyz
    axis = lambda n: ((np.arange(n, dtype=np.float32) + 0.5) / n * 2 - 1)  # noqa: E731
    return axis(d)[:, None, None], axis(h)[None, :, None], axis(w)[None, None, :]


def _soft_inside(radius: np.ndarray, edge: float) -> np.ndarray:
    """1 inside radius < 1, 0 outside, with a smooth edge (partial-volume like) of width ~edge."""
    return 0.5 * (1 + np.tanh((1 - radius) / edge))


def _ellipsoid_radius(Z, Y, X, centre, axes, angle: float) -> np.ndarray:
    """Normalised ellipsoidal radius (1 on the surface) of an ellipsoid rotated in-plane by angle (radians)."""
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    dx, dy, dz = X - centre[0], Y - centre[1], Z - centre[2]
    u, v = c * dx + s * dy, c * dy - s * dx
    return np.sqrt((u / axes[0]) ** 2 + (v / axes[1]) ** 2 + (dz / axes[2]) ** 2)


def _smooth_field(rng: np.random.Generator, Z, Y, X, waves: int, max_cycles: float) -> np.ndarray:
    """A smooth random field in about [-1, 1]: a sum of a few low-frequency plane waves."""
    field = np.zeros(np.broadcast_shapes(Z.shape, Y.shape, X.shape), dtype=np.float32)
    for _ in range(waves):
        kx, ky, kz = rng.uniform(-max_cycles, max_cycles, size=3).astype(np.float32) * np.float32(np.pi)
        phase = np.float32(rng.uniform(0, 2 * np.pi))
        # Separable by the angle-sum rule would be faster, but one broadcast cos is simple and cheap enough.
        field += np.cos(kx * X + ky * Y + kz * Z + phase)
    return field / np.float32(np.sqrt(waves))

#----------------------------------------------------------------------------
# The phantom.


def make_phantom(seed: int, size_xyz: tuple[int, int, int] = DEFAULT_SIZE_XYZ,
                 spacing_xyz: tuple[float, float, float] | None = None) -> tuple[np.ndarray, tuple[float, ...]]:
    """One phantom volume and its spacing: make_labelled_phantom without the mask."""
    volume, _, spacing = make_labelled_phantom(seed, size_xyz, spacing_xyz)
    return volume, spacing


def make_labelled_phantom(seed: int, size_xyz: tuple[int, int, int] = DEFAULT_SIZE_XYZ,
                          spacing_xyz: tuple[float, float, float] | None = None,
                          ) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Make one phantom volume and the label map of its organ.

    Args:
        seed: Random seed; the same seed always gives the same volume.
        size_xyz: Volume size as (W, H, D) = (x, y, z) voxels, each at least 2.
        spacing_xyz: Voxel spacing in mm; None: FIELD_OF_VIEW_MM / size, so any size covers the same anatomy.

    Returns:
        (volume, labels, spacing_xyz): float32 array [D, H, W] of non-negative intensities (tissue about 0.3-1.1,
        air near the noise floor); uint8 label map [D, H, W] of the organ (LABEL_NAMES: 1 its inner zone, 2 the
        rim around it, where the soft edges pass one half); the spacing (x, y, z) in mm.
    """
    size_xyz = tuple(int(s) for s in size_xyz)
    if len(size_xyz) != 3 or min(size_xyz) < 2:
        raise ValueError(f'phantom size must be three integers >= 2 (x, y, z), got {size_xyz}')
    if spacing_xyz is None:
        spacing_xyz = tuple(f / s for f, s in zip(FIELD_OF_VIEW_MM, size_xyz))
    spacing_xyz = tuple(float(s) for s in spacing_xyz)
    if len(spacing_xyz) != 3 or min(spacing_xyz) <= 0:
        raise ValueError(f'phantom spacing must be three positive numbers (mm), got {spacing_xyz}')

    rng = np.random.default_rng(seed)
    Z, Y, X = _grid(size_xyz)
    edge = 1.5 / max(size_xyz[0], size_xyz[1])  # About one in-plane voxel of partial volume.
    body, rim = _body(rng, Z, Y, X, edge)
    volume = body * np.float32(0.35) * (1 + np.float32(0.12) * _smooth_field(rng, Z, Y, X, 4, 3.0))
    volume += rim * np.float32(rng.uniform(0.45, 0.6))  # Bright subcutaneous fat.
    volume, labels = _add_organs(volume, rng, Z, Y, X, edge)
    volume *= _bias_field(rng, Z, Y, X)
    volume = _rician_noise(volume, rng, sigma=float(rng.uniform(0.02, 0.04)))
    return volume.astype(np.float32, copy=False), labels, spacing_xyz


def _body(rng: np.random.Generator, Z, Y, X, edge: float) -> tuple[np.ndarray, np.ndarray]:
    """Soft masks of the body (an elliptic cylinder narrowing towards the end slices) and of its fat rim."""
    a, b = rng.uniform(0.72, 0.86), rng.uniform(0.56, 0.70)
    angle = rng.uniform(-0.15, 0.15)
    taper = 1 - 0.12 * Z ** 2  # [D,1,1]
    centre = (rng.uniform(-0.04, 0.04), rng.uniform(-0.04, 0.04), 0)
    r = _ellipsoid_radius(Z * 0, Y, X, centre, (a, b, 1), angle) / taper  # [D,H,W]
    body = _soft_inside(r, edge)
    rim = body - _soft_inside(r / rng.uniform(0.88, 0.93), edge)  # A shell a few voxels thick.
    return body.astype(np.float32), rim.astype(np.float32)


def _add_organs(volume: np.ndarray, rng: np.random.Generator, Z, Y, X, edge: float) -> tuple[np.ndarray, np.ndarray]:
    """Paint the central organ (with its inner zone), the dark structure behind it and an optional nodule; return
    the volume and the organ's label map (1 inner zone, 2 rim)."""
    centre = (rng.uniform(-0.07, 0.07), rng.uniform(-0.07, 0.07), rng.uniform(-0.08, 0.08))
    axes = (rng.uniform(0.26, 0.34), rng.uniform(0.21, 0.28), rng.uniform(0.45, 0.6))
    angle = rng.uniform(-0.45, 0.45)
    r_organ = _ellipsoid_radius(Z, Y, X, centre, axes, angle)
    organ = _soft_inside(r_organ, edge / min(axes[:2]))
    inner = _soft_inside(r_organ / rng.uniform(0.5, 0.65), edge / min(axes[:2]))
    rim_value = rng.uniform(0.75, 0.9)
    inner_value = rim_value + rng.choice([-1, 1]) * rng.uniform(0.15, 0.25)  # Brighter or darker than the rim.
    organ_value = rim_value * (1 - inner) + inner_value * inner
    volume = volume * (1 - organ) + organ_value * organ
    labels = np.where(organ > 0.5, np.where(inner > 0.5, 1, 2), 0).astype(np.uint8)

    # A dark tube behind the organ (posterior = +y in LPS), running through all slices.
    tube_axes = (rng.uniform(0.12, 0.17), rng.uniform(0.08, 0.11), 10.0)
    tube_centre = (centre[0] + rng.uniform(-0.05, 0.05), centre[1] + axes[1] + tube_axes[1] + 0.06, 0)
    tube = _soft_inside(_ellipsoid_radius(Z, Y, X, tube_centre, tube_axes, angle), edge / tube_axes[1])
    volume = volume * (1 - tube) + np.float32(rng.uniform(0.08, 0.15)) * tube

    if rng.random() < 0.5:  # A small bright nodule somewhere inside the organ.
        offset = rng.uniform(-0.4, 0.4, size=3) * np.asarray(axes)
        nodule_centre = tuple(np.asarray(centre) + offset)
        size = rng.uniform(0.05, 0.08)
        nodule = _soft_inside(_ellipsoid_radius(Z, Y, X, nodule_centre, (size, size, size * 2.5), 0.0),
                              edge / size)
        volume = volume * (1 - nodule) + np.float32(1.1) * nodule
    return volume.astype(np.float32, copy=False), labels


def _bias_field(rng: np.random.Generator, Z, Y, X) -> np.ndarray:
    """Smooth multiplicative coil-sensitivity field: exp of a random low-order polynomial, about +-25 %."""
    c = rng.uniform(-1, 1, size=6).astype(np.float32) * np.float32(0.12)
    log_field = c[0] * X + c[1] * Y + c[2] * Z + c[3] * X * Y + c[4] * X ** 2 + c[5] * Y ** 2
    return np.exp(log_field).astype(np.float32)


def _rician_noise(volume: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise, as in a magnitude MR image."""
    real = volume + rng.standard_normal(volume.shape, dtype=np.float32) * np.float32(sigma)
    imag = rng.standard_normal(volume.shape, dtype=np.float32) * np.float32(sigma)
    return np.sqrt(real * real + imag * imag)

#----------------------------------------------------------------------------
# A measure that the organ is there.


def organ_contrast(volume_dhw: np.ndarray) -> float:
    """Mean of the central region minus mean of the in-plane border, in units of the volume's robust range.

    The central region is the middle half of the slices and the middle quarter of each in-plane axis (where the
    phantom organ sits); the border is the outer eighth of each in-plane axis on the same slices. The range is the
    1st-to-99th percentile spread, so the value is about 0.3-0.6 for phantoms and about 0 for noise or for a
    volume with no central structure.

    Args:
        volume_dhw: Array [D, H, W] (any real dtype).

    Returns:
        The contrast as a float; 0.0 for a constant volume.
    """
    v = np.asarray(volume_dhw, dtype=np.float64)
    if v.ndim != 3 or min(v.shape) < 1:
        raise ValueError(f'organ_contrast expects a non-empty [D, H, W] array, got shape {v.shape}')
    lo, hi = np.percentile(v, [1, 99])
    if hi <= lo:
        return 0.0
    d, h, w = v.shape
    slices = v[d // 4: max(d - d // 4, d // 4 + 1)]  # [d', H, W]
    central = slices[:, 3 * h // 8: max(5 * h // 8, 3 * h // 8 + 1), 3 * w // 8: max(5 * w // 8, 3 * w // 8 + 1)]
    bh, bw = max(1, h // 8), max(1, w // 8)
    border = np.ones((h, w), dtype=bool)
    border[bh:h - bh, bw:w - bw] = False
    return float((central.mean() - slices[:, border].mean()) / (hi - lo))


def organ_dice(volume_dhw: np.ndarray, labels_dhw: np.ndarray) -> float:
    """How well a label map covers the bright organ of its volume: the Dice overlap, within the central box where
    the phantom organ lies (the middle half of each axis, which leaves out the bright fat rim), between the label
    map's organ (label > 0) and the voxels above Otsu's threshold of the volume there. About 0.8-0.9 for real
    phantoms; near 0 for a mask in the wrong place or a volume without the organ.

    Args:
        volume_dhw: The volume [D, H, W] (any real dtype).
        labels_dhw: Its label map [D, H, W].
    """
    import SimpleITK as sitk  # Here: the phantom itself needs only NumPy.
    v = np.asarray(volume_dhw, dtype=np.float32)
    d, h, w = v.shape
    box = (slice(d // 4, max(d - d // 4, d // 4 + 1)), slice(h // 4, max(h - h // 4, h // 4 + 1)),
           slice(w // 4, max(w - w // 4, w // 4 + 1)))
    central = v[box]
    if np.ptp(central) == 0:
        return 0.0
    bright = sitk.GetArrayFromImage(sitk.OtsuThreshold(sitk.GetImageFromArray(central), 0, 1)) > 0
    organ = np.asarray(labels_dhw)[box] > 0
    total = bright.sum() + organ.sum()
    return float(2 * np.logical_and(bright, organ).sum() / total) if total else 0.0

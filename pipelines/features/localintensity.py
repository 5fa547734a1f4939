"""Local intensity features, IBSI 1 section 3.2 (9ST6; always 3D, DHQ4).

The intensity peak around a voxel is the mean intensity of every image voxel whose centre lies
within ``r = (3 / (4 pi))^(1/3) cm ~ 6.2 mm`` of that voxel's centre (a 1 cm^3 sphere in world
coordinates), ROI or not, the centre included. Voxels outside the image (and non-finite voxels
outside the ROI) are left out of the mean. Local intensity peak (VJGA): the peak around the
ROI voxel(s) of maximum intensity, the highest if there are several; global intensity peak
(0F91): the highest peak around any ROI voxel.

The global peak is a spherical mean filter over the ROI's bounding box (plus the sphere's
radius), evaluated as an FFT convolution of the intensities, plus one of the voxel indicator
where a sphere can miss voxels (image border, non-finite values); the local peak sums the
sphere around the few maximum voxels directly. Intensities are the image's own (not discretised).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import signal

from pipelines.features.discretise import bounding_box

__all__ = ["local_intensity_features", "sphere_offsets", "LOCAL_INTENSITY_FEATURES",
           "PEAK_RADIUS_MM"]

#: IBSI tags of the local intensity features (values: IBSI codes).
LOCAL_INTENSITY_FEATURES: dict[str, str] = {"loc_peak_loc": "VJGA", "loc_peak_glob": "0F91"}

#: Radius in mm of a sphere of 1 cm^3.
PEAK_RADIUS_MM = 10.0 * (3.0 / (4.0 * math.pi)) ** (1.0 / 3.0)


def sphere_offsets(spacing, radius_mm: float = PEAK_RADIUS_MM) -> np.ndarray:
    """Return int64 (n, 3) (dz, dy, dx) voxel offsets whose centres lie within radius_mm.

    ``spacing``: (dz, dy, dx) voxel size in mm in the array's axis order. Includes (0, 0, 0).
    """
    sp = np.asarray(spacing, dtype=np.float64)
    half = np.floor(radius_mm / sp).astype(np.int64)
    axes = [np.arange(-h, h + 1) for h in half]
    g = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    d2 = ((g * sp) ** 2).sum(axis=1)
    return g[d2 <= radius_mm * radius_mm * (1 + 1e-12)]


def local_intensity_features(image, mask, spacing) -> dict[str, float]:
    """Return the IBSI local and global intensity peaks {loc_peak_loc, loc_peak_glob}.

    ``image``: 3D (z, y, x) float or integer intensities, the whole image (the peaks read
    voxels outside the ROI); ``mask``: same shape, non-zero = ROI (centres); ``spacing``:
    (dz, dy, dx) in mm. Values in image intensity units; the global peak is clamped to at
    least the local one (it is one of its candidates; the FFT can round a hair below).
    ValueError for an empty mask or non-finite intensities inside the ROI.
    """
    img = np.asarray(image)
    msk = np.asarray(mask)
    if img.ndim != 3 or img.shape != msk.shape:
        raise ValueError(f"image {img.shape} and mask {msk.shape} must be 3D of the same shape")
    if msk.dtype != np.bool_:
        msk = msk != 0
    box = bounding_box(msk)
    if box is None:
        raise ValueError("the mask is empty")
    offs = sphere_offsets(spacing)
    half = np.abs(offs).max(axis=0)
    # the ROI's bounding box grown by the sphere's reach, clipped to the image
    sl = tuple(slice(max(s.start - h, 0), min(s.stop + h, n))
               for s, h, n in zip(box, half, img.shape, strict=True))
    sub = np.asarray(img[sl], dtype=np.float64)
    roi = msk[sl]
    valid = np.isfinite(sub)
    if not valid[roi].all():
        raise ValueError("the image has non-finite values (NaN or inf) inside the mask")
    vals = np.where(valid, sub, 0.0)
    # local peak: the sphere around each maximum voxel, summed directly
    vmax = vals[roi].max()
    centres = np.argwhere(roi & (vals == vmax))
    pts = centres[:, None, :] + offs[None, :, :]  # (n_max, n_sphere, 3)
    inside = ((pts >= 0) & (pts < np.array(sub.shape))).all(axis=2)
    pz, py, px = (np.where(inside, pts[..., k], 0) for k in range(3))
    w = inside & valid[pz, py, px]
    local = (np.where(w, vals[pz, py, px], 0.0).sum(axis=1) / w.sum(axis=1)).max()
    # global peak: spherical mean filter, evaluated at the ROI voxels only
    kernel = np.zeros(tuple(2 * half + 1))
    kernel[tuple((offs + half).T)] = 1.0
    sums = signal.fftconvolve(vals, kernel, mode="same")[roi]
    clipped = any(s.start - h < 0 or s.stop + h > n
                  for s, h, n in zip(box, half, img.shape, strict=True))
    if clipped or not valid.all():  # some spheres miss voxels: count what each one holds
        counts = np.rint(signal.fftconvolve(valid.astype(np.float64), kernel, mode="same")[roi])
    else:
        counts = float(len(offs))
    glob = float((sums / counts).max())
    return {"loc_peak_loc": float(local), "loc_peak_glob": max(glob, float(local))}

"""A brain-like head phantom with a tumour, its texture fields, and sampling onto scanner grids.

Pure functions on numpy arrays (scipy only for special functions and sparse matrices); no I/O.

Conventions:

- World coordinates are millimetres in LPS (x: right -> left, y: anterior -> posterior,
  z: inferior -> superior), as SimpleITK reports physical points.
- The anatomy is rendered on an axis-aligned *render grid* with isotropic spacing (1 mm), arrays
  indexed ``[z, y, x]``; `RenderGrid` holds its origin (world position of voxel 0) and shape.
- A *scanner grid* is described SimpleITK's way: ``size`` and ``spacing`` per index axis
  (i, j, k), ``origin`` (world position of index 0) and a 3x3 ``direction`` whose column m is
  the world direction of index axis m. Directions here are signed permutations (axial, coronal,
  sagittal, flipped), so sampling is separable. Arrays on a scanner grid are ``[k, j, i]``,
  the order of ``sitk.GetArrayFromImage``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import sparse
from scipy.special import ndtr

# --- labels and contrasts -------------------------------------------------------------------

AIR, SCALP, SKULL, CSF, GM, WM, NECROSIS, RIM, BODY, OEDEMA = range(10)
LABEL_NAMES = (
    "air",
    "scalp",
    "skull",
    "csf",
    "grey matter",
    "white matter",
    "necrotic core",
    "enhancing rim",
    "non-enhancing tumour",
    "oedema",
)
TUMOUR_LABELS = (NECROSIS, RIM, BODY)

#: Relative signal per label (index = label) for each sequence, before texture, bias and noise.
# fmt: off
CONTRAST = {
    #             air scalp skull  csf    gm    wm   necr   rim  body  oed
    "T1":    (0.0, 0.80, 0.12, 0.22, 0.55, 0.75, 0.25, 0.45, 0.42, 0.50),
    "T1CE":  (0.0, 0.85, 0.12, 0.24, 0.57, 0.76, 0.27, 0.50, 0.46, 0.52),
    "T2":    (0.0, 0.45, 0.06, 1.00, 0.62, 0.45, 0.90, 0.65, 0.78, 0.82),
    "FLAIR": (0.0, 0.50, 0.06, 0.10, 0.58, 0.45, 0.35, 0.70, 0.85, 0.90),
    "FA":    (0.0, 0.15, 0.10, 0.05, 0.18, 0.55, 0.06, 0.20, 0.16, 0.25),
    "MD":    (0.0, 0.90, 0.50, 3.00, 0.85, 0.75, 2.20, 1.10, 1.25, 1.55),
    "EPI":   (0.0, 0.35, 0.05, 0.95, 0.60, 0.48, 0.85, 0.60, 0.72, 0.78),
    "rCBV":  (0.0, 0.80, 0.10, 0.30, 2.00, 1.00, 0.30, 3.20, 1.80, 0.90),
}
# fmt: on
#: Extra T1CE signal of the enhancing rim / tumour body at full enhancement (enhancement = 1).
ENHANCEMENT = {RIM: 0.50, BODY: 0.08}

#: Size presets: field of view, render grid [z, y, x] at 1 mm, head semi-axes (x, y, z) in mm,
#: tumour radius range in mm.
SIZE_PRESETS = {
    "small": {
        "fov_mm": 100.0,
        "render_shape": (88, 100, 100),
        "head_semi_axes_mm": (36.0, 44.0, 38.0),
        "tumour_radius_mm": (8.0, 20.0),
        "blob_scale": 1.0,
    },
    "paper": {
        "fov_mm": 240.0,
        "render_shape": (168, 240, 240),
        "head_semi_axes_mm": (72.0, 92.0, 78.0),
        "tumour_radius_mm": (10.0, 35.0),
        "blob_scale": 2.0,
    },
}
RENDER_SPACING_MM = 1.0

# normalised head radius at the outer edge of each layer (1.0 = skin surface)
SKULL_OUTER, CSF_OUTER, BRAIN_OUTER, CORTEX_INNER = 0.92, 0.84, 0.80, 0.68


class RenderGrid(NamedTuple):
    """Axis-aligned isotropic grid: array ``[z, y, x]``, world = origin + index * spacing."""

    origin: tuple  # (x, y, z) mm of voxel [0, 0, 0]
    spacing: float  # mm
    shape: tuple  # (nz, ny, nx)

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return the world coordinates (mm, float32) along z, y and x."""
        nz, ny, nx = self.shape
        ox, oy, oz = self.origin
        h = self.spacing
        return (
            (oz + h * np.arange(nz)).astype(np.float32),
            (oy + h * np.arange(ny)).astype(np.float32),
            (ox + h * np.arange(nx)).astype(np.float32),
        )


def render_grid(size: str, centre_mm) -> RenderGrid:
    """Return the render grid of a size preset centred on ``centre_mm`` (x, y, z)."""
    shape = SIZE_PRESETS[size]["render_shape"]
    h = RENDER_SPACING_MM
    nz, ny, nx = shape
    cx, cy, cz = (float(c) for c in centre_mm)
    origin = (cx - h * (nx - 1) / 2, cy - h * (ny - 1) / 2, cz - h * (nz - 1) / 2)
    return RenderGrid(origin, h, shape)


# --- smooth random fields -------------------------------------------------------------------


def draw_angular(rng: np.random.Generator, n_terms: int, freq: tuple) -> dict:
    """Draw the parameters of a random smooth function on the unit sphere (`angular_field`).

    Returns ``{"w": (K, 3) unit vectors, "f": (K,) frequencies, "phi": (K,) phases}``.
    """
    w = rng.standard_normal((n_terms, 3))
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    f = rng.uniform(freq[0], freq[1], n_terms)
    phi = rng.uniform(0.0, 2 * np.pi, n_terms)
    return {"w": w, "f": f, "phi": phi}


def angular_field(ux, uy, uz, params: dict) -> np.ndarray:
    """Evaluate ``sum_k cos(f_k * (w_k . u) + phi_k)`` scaled to about unit sd.

    ``ux, uy, uz`` are broadcastable arrays of unit-vector components; returns float32.
    """
    out = np.zeros(np.broadcast_shapes(np.shape(ux), np.shape(uy), np.shape(uz)), np.float32)
    for (wx, wy, wz), f, phi in zip(params["w"], params["f"], params["phi"], strict=True):
        out += np.cos(
            np.float32(f) * (np.float32(wx) * ux + np.float32(wy) * uy + np.float32(wz) * uz)
            + np.float32(phi)
        )
    return out * np.float32(np.sqrt(2.0 / len(params["f"])))


SPHERE_TABLE = 256  # angular lookup resolution: SPHERE_TABLE (cos-latitude) x 2 * SPHERE_TABLE


def sphere_index(ux, uy, uz, n: int = SPHERE_TABLE) -> np.ndarray:
    """Flat index into an ``(n, 2n)`` table over the sphere (rows: z = cos(latitude) from -1 to
    1, columns: longitude) of unit vectors ``(ux, uy, uz)``; int32, broadcast shape."""
    it = np.clip(np.rint((uz + 1.0) * np.float32((n - 1) / 2)), 0, n - 1).astype(np.int32)
    lon = np.arctan2(uy, ux) + np.float32(np.pi)
    ip = np.rint(lon * np.float32(n / np.pi)).astype(np.int32) % (2 * n)
    return it * (2 * n) + ip


def angular_lookup(index: np.ndarray, params: dict, n: int = SPHERE_TABLE) -> np.ndarray:
    """`angular_field` at the directions of `sphere_index` ``index``, via an ``(n, 2n)`` table
    (much cheaper than evaluating the cosines at every voxel). Returns float32."""
    z = np.linspace(-1.0, 1.0, n, dtype=np.float32)[:, None]
    lon = np.arange(2 * n, dtype=np.float32)[None, :] * np.float32(np.pi / n) - np.float32(np.pi)
    rxy = np.sqrt(np.maximum(1.0 - z**2, 0.0))
    table = angular_field(rxy * np.cos(lon), rxy * np.sin(lon), z, params)
    return table.ravel()[index]


def smooth_noise(white: np.ndarray, sigma_vox: float) -> np.ndarray:
    """Gaussian-filter white noise (periodic, via FFT) and rescale it to zero mean, unit sd.

    ``white``: 3D array of i.i.d. noise; ``sigma_vox``: Gaussian sd in voxels (the texture's
    correlation length / grain size). Returns float32 of the same shape.
    """
    shape = white.shape
    spec = np.fft.rfftn(white)
    kz = np.fft.fftfreq(shape[0])[:, None, None]
    ky = np.fft.fftfreq(shape[1])[None, :, None]
    kx = np.fft.rfftfreq(shape[2])[None, None, :]
    c = -2.0 * np.pi**2 * sigma_vox**2
    spec *= np.exp(c * kz**2) * np.exp(c * ky**2) * np.exp(c * kx**2)
    out = np.fft.irfftn(spec, s=shape, axes=(0, 1, 2))
    out -= out.mean()
    sd = out.std()
    return (out / sd if sd > 0 else out).astype(np.float32)


# --- anatomy --------------------------------------------------------------------------------


def draw_head(rng: np.random.Generator, size: str) -> dict:
    """Draw a head: semi-axes (mm), outline, gyri and ventricle parameters."""
    semi = np.array(SIZE_PRESETS[size]["head_semi_axes_mm"]) * rng.uniform(0.94, 1.04, 3)
    return {
        "semi_axes_mm": semi,
        "outline": draw_angular(rng, 5, (1.0, 3.0)),
        "gyri": draw_angular(rng, 10, (9.0, 14.0)),
        "cortex": draw_angular(rng, 6, (2.0, 5.0)),
        "ventricle_scale": float(rng.uniform(0.8, 1.3)),
    }


def draw_tumour(
    rng: np.random.Generator, size: str, head: dict, gbm: int, effect_scale: float
) -> dict:
    """Draw tumour geometry: centre offset from the head centre (mm), radius (mm), fractions.

    Grade acts (times ``effect_scale``) on the radius, the necrotic-core fraction, the
    enhancement and the oedema extent: GBMs are larger, necrotic and enhancing. Returns a dict
    of plain floats / arrays.
    """
    r_lo, r_hi = SIZE_PRESETS[size]["tumour_radius_mm"]
    g = effect_scale * (2 * gbm - 1)  # +-1 for GBM / LGG, 0 in a null cohort
    radius = r_lo + (r_hi - r_lo) * float(ndtr(0.8 * g + 0.8 * rng.standard_normal()))
    core = 0.5 * float(ndtr(1.2 * g + 0.7 * rng.standard_normal()))
    rim = float(rng.uniform(0.12, 0.25))
    enhancement = float(ndtr(1.2 * g + 0.7 * rng.standard_normal()))
    oedema = 0.08 + 0.3 * float(ndtr(0.8 * g + 0.8 * rng.standard_normal()))
    # centre: inside the brain, far enough from its surface for most of the tumour
    brain = head["semi_axes_mm"] * BRAIN_OUTER
    room = np.maximum(brain - radius, 0.15 * brain)
    side = 1.0 if rng.random() < 0.5 else -1.0
    while True:
        u = rng.uniform(-1.0, 1.0, 3)
        u[0] = side * abs(u[0])
        if np.sum(u**2) <= 0.8:
            break
    return {
        "offset_mm": u * room,
        "radius_mm": radius,
        "core_fraction": core,
        "rim_width": rim,
        "enhancement": enhancement,
        "oedema_extent": oedema,
        "shape": draw_angular(rng, 6, (1.0, 3.5)),
        "core_shape": draw_angular(rng, 4, (1.0, 3.0)),
        "oedema_shape": draw_angular(rng, 8, (2.0, 6.0)),
    }


def _ellipsoid_r2(dz, dy, dx, semi) -> np.ndarray:
    """Squared normalised radius of an axis-aligned ellipsoid (semi-axes x, y, z)."""
    return (dx / semi[0]) ** 2 + (dy / semi[1]) ** 2 + (dz / semi[2]) ** 2


def head_labels(grid: RenderGrid, centre_mm, head: dict) -> np.ndarray:
    """Label a head without tumour on ``grid``: uint8 ``[z, y, x]`` with `LABEL_NAMES` codes.

    Layers by normalised ellipsoidal radius: scalp, skull, CSF, cortex (with sulci following a
    random gyral pattern) over white matter; plus interhemispheric fissure, lateral ventricles
    and deep grey nuclei.
    """
    zs, ys, xs = grid.axes()
    cx, cy, cz = (np.float32(c) for c in centre_mm)
    dz, dy, dx = (zs - cz)[:, None, None], (ys - cy)[None, :, None], (xs - cx)[None, None, :]
    semi = head["semi_axes_mm"].astype(np.float32)
    rho = np.sqrt(_ellipsoid_r2(dz, dy, dx, semi))
    inv = 1.0 / np.maximum(rho, np.float32(1e-3))
    ux, uy, uz = dx / semi[0] * inv, dy / semi[1] * inv, dz / semi[2] * inv
    idx = sphere_index(ux, uy, uz)
    rho = rho * (1.0 + np.float32(0.03) * angular_lookup(idx, head["outline"]))

    labels = np.zeros(rho.shape, np.uint8)
    labels[rho <= 1.0] = SCALP
    labels[rho <= SKULL_OUTER] = SKULL
    labels[rho <= CSF_OUTER] = CSF
    brain = rho <= BRAIN_OUTER
    gyri = angular_lookup(idx, head["gyri"])
    cortex_inner = CORTEX_INNER + np.float32(0.03) * angular_lookup(idx, head["cortex"])
    agyri = np.abs(gyri)
    grey = brain & ((rho > cortex_inner) | ((agyri < 0.3) & (rho > cortex_inner - 0.08)))
    labels[brain] = WM
    labels[grey] = GM
    sulci = brain & (agyri < 0.1) & (rho > cortex_inner - 0.05)
    fissure = brain & (np.abs(dx) < 0.012 * semi[0]) & (rho > 0.35) & (dz > -0.3 * semi[2])
    labels[sulci | fissure] = CSF

    # deep grey nuclei and lateral ventricles (two ellipsoids each, mirrored in x)
    vs = head["ventricle_scale"]
    for sign in (-1.0, 1.0):
        ddx = dx - np.float32(sign * 0.24 * semi[0])
        nuclei = (
            _ellipsoid_r2(
                dz - 0.02 * semi[2], dy + 0.02 * semi[1], ddx, semi * np.float32([0.13, 0.16, 0.13])
            )
            <= 1.0
        )
        labels[nuclei & brain] = GM
        ddx = dx - np.float32(sign * 0.09 * semi[0])
        vent = (
            _ellipsoid_r2(
                dz - 0.08 * semi[2],
                dy + 0.03 * semi[1],
                ddx,
                semi * np.float32([0.06 * vs, 0.32, 0.10 * vs]),
            )
            <= 1.0
        )
        labels[vent & brain] = CSF
    return labels


def tumour_radius_field(grid: RenderGrid, centre_mm, tumour: dict):
    """Return (r, idx): the tumour's normalised radius (float32, 1 at its boundary) and the
    `sphere_index` of the direction from its centre, arrays ``[z, y, x]`` on ``grid``."""
    zs, ys, xs = grid.axes()
    c = np.asarray(centre_mm, np.float32) + tumour["offset_mm"].astype(np.float32)
    dz, dy, dx = (zs - c[2])[:, None, None], (ys - c[1])[None, :, None], (xs - c[0])[None, None, :]
    d = np.sqrt(dx**2 + dy**2 + dz**2)
    inv = 1.0 / np.maximum(d, np.float32(1e-3))
    idx = sphere_index(dx * inv, dy * inv, dz * inv)
    shape = 1.0 + np.float32(0.15) * np.clip(angular_lookup(idx, tumour["shape"]), -2, 2)
    r = d / (np.float32(tumour["radius_mm"]) * shape)
    return r, idx


def add_tumour(labels: np.ndarray, grid: RenderGrid, centre_mm, tumour: dict) -> np.ndarray:
    """Return a copy of ``labels`` with the tumour: necrotic core, enhancing rim and
    non-enhancing tumour inside normalised radius 1 (clipped to the brain), oedema around it
    in grey and white matter of the tumour's hemisphere only."""
    r, idx = tumour_radius_field(grid, centre_mm, tumour)
    out = labels.copy()
    brain = (labels == GM) | (labels == WM) | (labels == CSF)
    oed = tumour["oedema_extent"] * (
        1.0 + 0.6 * np.clip(angular_lookup(idx, tumour["oedema_shape"]), -1.5, 1.5)
    )
    xs = grid.axes()[2] - np.float32(centre_mm[0])
    same_side = (xs * np.sign(tumour["offset_mm"][0]) > 0)[None, None, :]  # oedema stops at midline
    out[((labels == GM) | (labels == WM)) & (r < 1.0 + oed) & same_side] = OEDEMA
    inside = brain & (r < 1.0)
    core = tumour["core_fraction"] * (
        1.0 + 0.2 * np.clip(angular_lookup(idx, tumour["core_shape"]), -2, 2)
    )
    out[inside] = BODY
    out[inside & (r < core + tumour["rim_width"])] = RIM
    out[inside & (r < core)] = NECROSIS
    return out


def tumour_mask(labels: np.ndarray) -> np.ndarray:
    """Boolean gross-tumour mask (necrotic core + enhancing rim + non-enhancing tumour)."""
    return np.isin(labels, TUMOUR_LABELS)


def bbox(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...]:
    """Bounding box of a non-empty boolean array as slices, widened by ``margin`` voxels."""
    idx = np.nonzero(mask)
    return tuple(
        slice(max(int(i.min()) - margin, 0), min(int(i.max()) + 1 + margin, n))
        for i, n in zip(idx, mask.shape, strict=True)
    )


# --- intensities ----------------------------------------------------------------------------


def contrast_volume(labels: np.ndarray, sequence: str, enhancement: float = 0.0) -> np.ndarray:
    """Map labels to the relative signal of ``sequence`` (float32); T1CE/T1Gd rim and tumour
    body get ``ENHANCEMENT * enhancement`` on top."""
    seq = "T1CE" if sequence == "T1Gd" else sequence
    lut = np.array(CONTRAST[seq], np.float32)
    if seq == "T1CE":
        for lab, extra in ENHANCEMENT.items():
            lut[lab] += np.float32(extra * enhancement)
    return lut[labels]


def bias_field(shape: tuple, coeffs: np.ndarray) -> np.ndarray:
    """Smooth multiplicative bias ``exp(sum_axes a1 t + a2 t^2)``, t in [-1, 1] along each axis.

    ``coeffs``: (3, 2) for axes (z, y, x); returns float32 broadcastable to ``shape``.
    """
    out = np.ones((1, 1, 1), np.float32)
    for ax, (a1, a2) in enumerate(coeffs):
        t = np.linspace(-1.0, 1.0, shape[ax], dtype=np.float32)
        prof = np.exp(np.float32(a1) * t + np.float32(a2) * t**2)
        out = out * prof.reshape([-1 if i == ax else 1 for i in range(3)])
    return out


#: Texture model: the latent factor, the sequences and the property it drives.
TEXTURE_MODEL = {
    "grain": {
        "factor": "tcell",
        "sequences": ("T1CE", "FLAIR"),
        "property": "grain size",
        "sigma_mm": 2.0,  # Gaussian sd of the filtered noise at factor 0
        "log_slope": 0.45,  # d log(sigma) / d factor, times effect_scale
        "nuisance_sd": 0.3,  # patient noise on log(sigma) / log_slope
        "amplitude": 0.12,
        "amplitude_log_sd": 0.2,
    },
    "heterogeneity": {
        "factor": "prolif",
        "sequences": ("T1", "T2"),
        "property": "heterogeneity",
        "amplitude": 0.06,  # sd of the texture in relative signal units at factor 0
        "log_slope": 0.45,  # d log(amplitude) / d factor, times effect_scale
        "nuisance_sd": 0.35,
        "sigma_mm": 1.2,
        "sigma_log_sd": 0.15,
    },
}


def draw_texture(rng: np.random.Generator, factors: dict, effect_scale: float) -> dict:
    """Draw the tumour texture parameters of one patient from its latent factors.

    Returns ``grain_sigma_mm`` and ``grain_amplitude`` (T1CE, FLAIR), ``het_sigma_mm`` and
    ``het_amplitude`` (T1, T2): the grain of the first pair and the amplitude of the second
    follow ``exp(log_slope * (effect_scale * factor + nuisance_sd * N(0, 1)))``.
    """
    g, h = TEXTURE_MODEL["grain"], TEXTURE_MODEL["heterogeneity"]
    nu = rng.standard_normal(4)
    return {
        "grain_sigma_mm": float(
            g["sigma_mm"]
            * np.exp(
                g["log_slope"] * (effect_scale * factors[g["factor"]] + g["nuisance_sd"] * nu[0])
            )
        ),
        "grain_amplitude": float(g["amplitude"] * np.exp(g["amplitude_log_sd"] * nu[1])),
        "het_amplitude": float(
            h["amplitude"]
            * np.exp(
                h["log_slope"] * (effect_scale * factors[h["factor"]] + h["nuisance_sd"] * nu[2])
            )
        ),
        "het_sigma_mm": float(h["sigma_mm"] * np.exp(h["sigma_log_sd"] * nu[3])),
    }


def render_sequences(
    labels: np.ndarray,
    sequences,
    enhancement: float,
    texture: dict,
    rng: np.random.Generator,
    spacing_mm: float = RENDER_SPACING_MM,
) -> dict:
    """Render the relative signal of ``sequences`` with the tumour's texture.

    Inside the gross-tumour mask, the sequences of ``TEXTURE_MODEL["grain"]`` get a Gaussian-
    filtered noise of sd ``grain_sigma_mm`` and amplitude ``grain_amplitude``, those of
    ``TEXTURE_MODEL["heterogeneity"]`` one of sd ``het_sigma_mm`` and amplitude
    ``het_amplitude`` (both from the same white noise: the same tissue). Returns
    ``{sequence: float32 [z, y, x]}`` (>= 0).
    """
    vols = {s: contrast_volume(labels, s, enhancement) for s in sequences}
    mask = tumour_mask(labels)
    if not mask.any():
        return vols
    bb = bbox(mask, margin=2)
    white = rng.standard_normal(tuple(s.stop - s.start for s in bb))
    m = mask[bb]
    fields = {
        "grain": (
            smooth_noise(white, texture["grain_sigma_mm"] / spacing_mm),
            texture["grain_amplitude"],
        ),
        "heterogeneity": (
            smooth_noise(white, texture["het_sigma_mm"] / spacing_mm),
            texture["het_amplitude"],
        ),
    }
    for name, (field, amp) in fields.items():
        for s in TEXTURE_MODEL[name]["sequences"]:
            if s in vols:
                view = vols[s][bb]
                view[m] += np.float32(amp) * field[m]
    for v in vols.values():
        np.maximum(v, 0, out=v)
    return vols


# --- sampling onto scanner grids ------------------------------------------------------------


def grid_axes(direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For a signed-permutation direction, return (world axis, sign) of index axes i, j, k."""
    d = np.asarray(direction, float).reshape(3, 3)
    axis = np.argmax(np.abs(d), axis=0)
    sign = d[axis, np.arange(3)]
    if not np.allclose(np.abs(d).sum(axis=0), 1.0) or sorted(axis.tolist()) != [0, 1, 2]:
        raise ValueError(f"direction must be a signed permutation matrix, got {d.tolist()}")
    return axis, np.sign(sign)


def grid_origin(centre_mm, size, spacing, direction) -> np.ndarray:
    """World origin (mm) of a scanner grid whose centre is ``centre_mm``."""
    d = np.asarray(direction, float).reshape(3, 3)
    half = np.asarray(spacing, float) * (np.asarray(size, float) - 1) / 2
    return np.asarray(centre_mm, float) - d @ half


def axis_weights(src: np.ndarray, dst: np.ndarray, width: float, psf_sd: float) -> sparse.csr_array:
    """Sparse (len(dst), len(src)) matrix sampling a regular 1D source onto ``dst`` positions.

    Each destination sample integrates a box of ``width`` mm (the voxel's extent: partial
    volume, e.g. thick slices) convolved with a Gaussian PSF of sd ``psf_sd`` mm. Rows are
    normalised by the kernel's sum over the infinite source lattice, so samples outside the
    source fade to 0 (air).
    """
    h = float(src[1] - src[0])
    half = width / 2 + 4 * psf_sd
    nb = int(np.ceil(half / h)) + 1
    pos = (dst - src[0]) / h
    centre = np.rint(pos).astype(np.int64)
    cols = centre[:, None] + np.arange(-nb, nb + 1)[None, :]
    x = (src[0] + cols * h) - dst[:, None]  # source position minus destination, mm
    if width > 0:
        w = (ndtr((x + width / 2) / psf_sd) - ndtr((x - width / 2) / psf_sd)) / width
    else:
        w = np.exp(-0.5 * (x / psf_sd) ** 2)
    w /= w.sum(axis=1, keepdims=True)
    valid = (cols >= 0) & (cols < len(src)) & (w > 1e-6)
    rows = np.broadcast_to(np.arange(len(dst))[:, None], cols.shape)
    return sparse.csr_array(
        (w[valid].astype(np.float32), (rows[valid], cols[valid])), shape=(len(dst), len(src))
    )


def _apply_along(mat: sparse.csr_array, vol: np.ndarray, axis: int) -> np.ndarray:
    """Apply a sparse matrix along one axis of ``vol``."""
    moved = np.moveaxis(vol, axis, 0)
    flat = moved.reshape(moved.shape[0], -1)
    out = (mat @ flat).astype(np.float32, copy=False)
    return np.moveaxis(out.reshape((mat.shape[0],) + moved.shape[1:]), 0, axis)


def sample_to_grid(
    volumes: np.ndarray, grid: RenderGrid, size, spacing, origin, direction, psf_sd: float = 0.5
) -> np.ndarray:
    """Sample render-grid volumes onto a scanner grid with partial-volume averaging.

    ``volumes``: (C, nz, ny, nx) on ``grid``; ``size``/``spacing``: per index axis (i, j, k);
    ``origin``: world mm of index 0; ``direction``: signed permutation (3x3, columns = index
    axes). Each output voxel averages its whole extent (box of its spacing, e.g. a 5 mm slice)
    blurred by a Gaussian PSF (``psf_sd`` mm). Returns float32 (C, nk, nj, ni).
    """
    axis, sign = grid_axes(direction)
    src_axes = grid.axes()[::-1]  # x, y, z world coordinates
    out = volumes.astype(np.float32, copy=False)
    order = np.argsort(-np.asarray(spacing))  # thickest axis first: shrinks the data early
    for m in order:
        a = int(axis[m])
        dst = origin[a] + sign[m] * spacing[m] * np.arange(size[m])
        mat = axis_weights(src_axes[a], dst, float(spacing[m]), psf_sd)
        out = _apply_along(mat, out, 3 - a)  # world axis x/y/z lives at array axis 3/2/1
    perm = [0] + [3 - int(axis[m]) for m in (2, 1, 0)]
    return np.ascontiguousarray(out.transpose(perm))


def rician(signal: np.ndarray, sd: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of complex Gaussian noise (sd ``sd``) added to a real ``signal`` (float32)."""
    n = rng.standard_normal((2,) + signal.shape, dtype=np.float32)
    n *= np.float32(sd)
    n[0] += signal
    np.square(n, out=n)
    return np.sqrt(n[0] + n[1])

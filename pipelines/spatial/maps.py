"""Maps of predicted probability over the tumour: slide a patch classifier over every tumour voxel
of chosen slices (or the whole tumour), draw the map over the T1Gd image, compare it with a
ground-truth field.

Pure core: :func:`map_voxels`, :func:`predict_map`, :func:`spearman_in_mask`,
:func:`overlay_png` (bytes). I/O edges: :func:`read_truth` (a NIfTI resampled onto the lake
grid) and :func:`write_map` (an atomic Zarr group, `Lake.spatial_map`).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import stats

from pipelines.exceptions import InputError
from pipelines.lake import Lake, write_array

__all__ = [
    "check_name",
    "map_slices",
    "map_voxels",
    "overlay_png",
    "predict_map",
    "read_truth",
    "spearman_in_mask",
    "write_map",
]

PredictFn = Callable[[np.ndarray], np.ndarray]
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it is safe as a path component (letters, digits, '.', '_', '-',
    starting with a letter or digit, no '..'), else raise InputError."""
    s = str(name)
    if not NAME_RE.fullmatch(s) or ".." in s:
        raise InputError(f"invalid {what} {s!r}: use letters, digits, '.', '_' and '-' only")
    return s



def map_voxels(mask: np.ndarray, slices: Sequence[int] | None = None) -> np.ndarray:
    """Return the (n, 3) int voxels ``(z, y, x)`` of the mask, restricted to the axial slices
    ``slices`` (z indices; None = whole tumour), in C order."""
    m = np.asarray(mask) != 0
    if slices is not None:
        keep = np.zeros(m.shape[0], dtype=bool)
        idx = np.asarray(list(slices), dtype=int)
        if idx.size and (idx.min() < 0 or idx.max() >= m.shape[0]):
            raise InputError(f"slices {sorted(set(idx.tolist()))} outside 0..{m.shape[0] - 1}")
        keep[idx] = True
        m = m & keep[:, None, None]
    return np.argwhere(m)


def map_slices(spec: str | Sequence[int], mask: np.ndarray,
               site_voxels: np.ndarray | None = None) -> list[int] | None:
    """Return the slices a map covers: None for ``"all"`` (whole tumour); for ``"sites"`` the z
    of each biopsy voxel (``site_voxels`` (n, 3) z, y, x) where the tumour is; else the given
    ints (or a comma-separated string of them)."""
    if isinstance(spec, str):
        s = spec.strip().lower()
        if s == "all":
            return None
        if s == "sites":
            if site_voxels is None or len(site_voxels) == 0:
                raise InputError("slices='sites' needs biopsy sites for the patient")
            zs = sorted({int(z) for z in np.asarray(site_voxels)[:, 0]})
            return [z for z in zs if 0 <= z < mask.shape[0] and np.asarray(mask[z]).any()] or zs
        try:
            return sorted({int(v) for v in s.split(",") if v.strip()})
        except ValueError:
            raise InputError(f"slices must be 'all', 'sites' or comma-separated z indices, "
                             f"got {spec!r}") from None
    return sorted({int(v) for v in spec})


def predict_map(stack: np.ndarray, mask: np.ndarray, predict: PredictFn, radius: int = 8,
                adjacent: int = 0, slices: Sequence[int] | None = None,
                batch_size: int = 1024) -> np.ndarray:
    """Return a (z, y, x) float32 map of ``predict`` over the mask's voxels (NaN elsewhere).

    ``stack``: (C, z, y, x) normalised sequences as used for training; ``predict``: a function of
    patches (n, C * (2a + 1), 2r + 1, 2r + 1) -> (n,) probabilities. The map at voxel (z, y, x)
    is the prediction for the patch centred there, cut exactly as
    :func:`pipelines.spatial.patches.extract_patches` cuts it; near the volume's edge the stack
    is padded with each channel's minimum (background).
    """
    st = np.asarray(stack, dtype=np.float32)
    if st.ndim != 4 or st.shape[1:] != np.asarray(mask).shape:
        raise InputError(f"stack (C, z, y, x) {st.shape} and mask {np.shape(mask)} disagree")
    r, a = int(radius), int(adjacent)
    lows = st.reshape(st.shape[0], -1).min(axis=1)
    padded = np.stack([np.pad(ch, ((a, a), (r, r), (r, r)), constant_values=lo)
                       for ch, lo in zip(st, lows, strict=True)])
    win = sliding_window_view(padded, (2 * a + 1, 2 * r + 1, 2 * r + 1), axis=(1, 2, 3))
    vox = map_voxels(mask, slices)
    out = np.full(st.shape[1:], np.nan, dtype=np.float32)
    n_ch = st.shape[0] * (2 * a + 1)
    for start in range(0, len(vox), batch_size):
        v = vox[start:start + batch_size]
        # win[c, z, y, x] is the block whose corner is padded (z, y, x) = original centre
        block = win[:, v[:, 0], v[:, 1], v[:, 2]]  # (C, n, 2a+1, 2r+1, 2r+1)
        patches = np.ascontiguousarray(np.moveaxis(block, 0, 1)).reshape(
            len(v), n_ch, 2 * r + 1, 2 * r + 1)
        p = np.asarray(predict(patches), dtype=np.float32).reshape(-1)
        if p.shape != (len(v),):
            raise InputError(f"predict returned {p.shape} values for {len(v)} patches")
        out[v[:, 0], v[:, 1], v[:, 2]] = p
    return out


def spearman_in_mask(prob_map: np.ndarray, truth: np.ndarray,
                     mask: np.ndarray | None = None) -> tuple[float, float, int]:
    """Return (rho, p, n): Spearman correlation of the map and the truth over the voxels where
    the map is defined (and ``mask`` is non-zero, when given). NaNs when fewer than 3 voxels or
    a constant input."""
    pm = np.asarray(prob_map, dtype=float)
    tr = np.asarray(truth, dtype=float)
    if pm.shape != tr.shape:
        raise InputError(f"map {pm.shape} and truth {tr.shape} are not on one grid")
    sel = np.isfinite(pm) & np.isfinite(tr)
    if mask is not None:
        sel &= np.asarray(mask) != 0
    n = int(sel.sum())
    if n < 3 or np.ptp(pm[sel]) == 0 or np.ptp(tr[sel]) == 0:
        return np.nan, np.nan, n
    res = stats.spearmanr(pm[sel], tr[sel])
    return float(res.statistic), float(res.pvalue), n


def overlay_png(background: np.ndarray, prob_map: np.ndarray, slices: Sequence[int],
                sites_zyx: np.ndarray | None = None, site_labels: Sequence[str] | None = None,
                title: str = "", label: str = "P(above median)", max_panels: int = 6,
                dpi: int = 100) -> bytes:
    """Return PNG bytes: for each slice (at most ``max_panels``, evenly chosen), the background
    (e.g. T1Gd, (z, y, x)) in grey with the map in colour (0..1, transparent where NaN), a
    colour bar, and the biopsy sites of that slice (voxels within half a slice) marked '+'.
    Rows are y (anterior-posterior in LPS grids), columns x, as stored."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    zs = list(slices)
    if not zs:
        raise InputError("no slice to draw")
    if len(zs) > max_panels:
        zs = [zs[i] for i in np.linspace(0, len(zs) - 1, max_panels).round().astype(int)]
    fig = Figure(figsize=(3.0 * len(zs) + 1.2, 3.4), dpi=dpi, layout="constrained")
    axes = fig.subplots(1, len(zs), squeeze=False)[0]
    im = None
    sites = None if sites_zyx is None else np.asarray(sites_zyx, dtype=float).reshape(-1, 3)
    for ax, z in zip(axes, zs, strict=True):
        ax.imshow(background[z], cmap="gray", interpolation="nearest")
        layer = np.ma.masked_invalid(prob_map[z])
        im = ax.imshow(layer, cmap="inferno", vmin=0.0, vmax=1.0, alpha=0.7,
                       interpolation="nearest")
        if sites is not None:
            for i, (sz, sy, sx) in enumerate(sites):
                if abs(sz - z) <= 0.5:
                    ax.plot(sx, sy, "+", color="cyan", markersize=12, markeredgewidth=2)
                    if site_labels is not None:
                        ax.annotate(str(site_labels[i]), (sx, sy), xytext=(4, 4),
                                    textcoords="offset points", color="cyan", fontsize=7)
        ax.set_title(f"z = {z}", fontsize=9)
        ax.set_axis_off()
    bar = fig.colorbar(im, ax=list(axes), shrink=0.9, label=label)
    bar.solids.set_alpha(1.0)
    if title:
        fig.suptitle(title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# --------------------------------------------------------------------------- I/O edges


def read_truth(path, attrs: dict) -> np.ndarray:
    """Return a ground-truth field (NIfTI/NRRD/...) resampled (linear) onto the grid of a lake
    volume with attributes ``attrs`` (origin_xyz, spacing_xyz, direction, shape_zyx): (z, y, x)
    float32, 0 outside the file's extent."""
    import SimpleITK as sitk

    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"{path}: cannot read the truth field ({exc})") from None
    ref = sitk.Image([int(s) for s in attrs["shape_zyx"][::-1]], sitk.sitkFloat32)
    ref.SetSpacing([float(s) for s in attrs["spacing_xyz"]])
    ref.SetOrigin([float(s) for s in attrs["origin_xyz"]])
    ref.SetDirection([float(s) for s in attrs["direction"]])
    out = sitk.Resample(sitk.Cast(img, sitk.sitkFloat32), ref, sitk.Transform(),
                        sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)


def write_map(lake: Lake, model: str, patient_id: str, prob_map: np.ndarray,
              attrs: dict, token: str | None = None) -> str:
    """Write ``spatial_maps/<model>/<patient>.zarr`` atomically (staged, then renamed): array
    ``probability`` (z, y, x) float32, NaN outside the mapped voxels, with the volume's spatial
    attributes and ``attrs``. Returns the group's path relative to the lake root. `token` (the
    run id) names the staged group, so that a killed run's staging is removed by the next run."""
    loc = lake.spatial_map(check_name(model, "model name"), patient_id)
    tmp, group = loc.stage(token)
    try:
        group.attrs.update(dict(attrs))
        write_array(group, "probability", np.asarray(prob_map, dtype=np.float32),
                    attributes={"units": "probability", "outside": "NaN = not mapped"})
    except BaseException:
        loc.discard(tmp)
        raise
    return loc.commit(tmp)

"""ROI crop boxes of the activations stage (pure)."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.activations import mask_extent, roi_crop_box


def _box_from_nonzero(mask, margin, align):
    """The crop box from np.nonzero, the definition the projections must reproduce."""
    idx = np.nonzero(mask)
    box = []
    for axis, n in enumerate(mask.shape):
        lo = max(0, int(idx[axis].min()) - margin)
        lo -= lo % align
        box.append((lo, min(n, int(idx[axis].max()) + 1 + margin)))
    return tuple(box)


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("margin,align", [(0, 1), (3, 4), (6, 2)])
def test_roi_crop_box_matches_the_nonzero_definition(seed, margin, align):
    rng = np.random.default_rng(seed)
    shape = tuple(int(v) for v in rng.integers(1, 15, 3))
    mask = rng.random(shape) < rng.choice([0.002, 0.05, 0.5])
    mask[tuple(int(rng.integers(0, s)) for s in shape)] = True  # never empty
    idx = np.nonzero(mask)
    assert mask_extent(mask) == tuple((int(i.min()), int(i.max())) for i in idx)
    assert roi_crop_box(mask, margin, align) == _box_from_nonzero(mask, margin, align)


def test_mask_extent_of_an_empty_mask_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        mask_extent(np.zeros((3, 4, 5), bool))

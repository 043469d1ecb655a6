"""Measurements on a phantom's label image, as an algorithm would make them.

Everything here reads only the label map (nearest-neighbour resampling), so a test compares
the analytic truth with what the image shows.
"""

from __future__ import annotations

import numpy as np
from nibabel.affines import apply_affine
from scipy import ndimage


def voxel_extent_mm(volume, direction) -> float:
    """Extent of one voxel along a world direction (mm): the sum of |d_i| * spacing_i for an
    axis-aligned grid; a nearest-neighbour boundary is off by at most half of it per end."""
    d = np.asarray(direction, float)
    d = d / np.linalg.norm(d)
    return float(np.abs(d) @ volume.spacing_mm)


def half_voxel_diagonal_mm(volume) -> float:
    return 0.5 * float(np.linalg.norm(volume.spacing_mm))


def sample_labels(labels, points_world_mm) -> np.ndarray:
    """Nearest-neighbour label at world points (..., 3); 0 outside the grid."""
    p = np.asarray(points_world_mm, float)
    idx = np.rint(apply_affine(np.linalg.inv(labels.affine), p.reshape(-1, 3))).astype(int)
    shape = np.array(labels.shape)
    ok = np.all((idx >= 0) & (idx < shape), axis=1)
    out = np.zeros(len(idx), labels.array.dtype)
    out[ok] = labels.array[idx[ok, 0], idx[ok, 1], idx[ok, 2]]
    return out.reshape(p.shape[:-1])


def run_through(labels, label_id, centre, direction, *, max_mm=40.0, step_mm=0.02) -> float:
    """Length (mm) of the run of `label_id` along a line through `centre` that contains it."""
    d = np.asarray(direction, float)
    d = d / np.linalg.norm(d)
    t = np.arange(-max_mm, max_mm + step_mm / 2, step_mm)
    vals = sample_labels(labels, np.asarray(centre) + t[:, None] * d) == label_id
    i0 = int(np.argmin(np.abs(t)))
    assert vals[i0], f"centre {centre} is not labelled {label_id}"
    lo = i0
    while lo > 0 and vals[lo - 1]:
        lo -= 1
    hi = i0
    while hi + 1 < len(t) and vals[hi + 1]:
        hi += 1
    return float(t[hi] - t[lo] + step_mm)


def plane_samples(labels, centre, u, v, *, half_mm=25.0, step_mm=0.1):
    """Labels resampled (nearest neighbour) on the plane through `centre` spanned by unit
    vectors u, v: array (n, n) indexed [u, v], and the offsets (n,)."""
    t = np.arange(-half_mm, half_mm + step_mm / 2, step_mm)
    pts = (np.asarray(centre)[None, None, :] + t[:, None, None] * np.asarray(u)[None, None, :]
           + t[None, :, None] * np.asarray(v)[None, None, :])
    return sample_labels(labels, pts), t


def flood_area_mm2(region: np.ndarray, seed_ij, step_mm: float) -> float:
    """Area of the 4-connected component of True pixels containing `seed_ij`."""
    lab, _ = ndimage.label(region)
    k = lab[seed_ij]
    assert k > 0, "seed not in region"
    return float((lab == k).sum()) * step_mm * step_mm

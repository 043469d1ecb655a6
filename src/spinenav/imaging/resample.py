"""Resampling, cropping and reorienting a :class:`Volume`; every result keeps a correct affine.

One mechanism serves all: :func:`resample_to_grid` pulls values from the source at the world
position of each target voxel centre (``T_source_index_from_target_index = inv(A_source) @
A_target``), so any source affine (oblique, sheared by gantry tilt) and any target grid work.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from spinenav.imaging.volume import AIR_HU, Volume


def _fill_value(volume: Volume) -> float:
    if volume.is_label:
        return 0.0
    return float(AIR_HU) if volume.modality == "CT" else 0.0


def resample_to_grid(volume: Volume, shape: tuple[int, int, int], affine: ArrayLike, *,
                     order: int | None = None, fill_value: float | None = None) -> Volume:
    """Resample `volume` onto the grid (`shape`, `affine` = T_world_from_index, LPS mm).

    Parameters
    ----------
    order : int, optional
        Spline order: 0 nearest (default for labels), 1 trilinear (default for intensities), 3 cubic.
    fill_value : float, optional
        Value outside the source: 0 for labels, -1024 HU (air) for CT, 0 otherwise.

    Returns
    -------
    Volume
        Same dtype as the source (intensities are rounded back for integer dtypes).
    """
    target_affine = np.asarray(affine, dtype=np.float64)
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"resample_to_grid: shape must be 3 positive ints, got {shape}")
    if order is None:
        order = 0 if volume.is_label else 1
    if volume.is_label and order != 0:
        raise ValueError("label maps can only be resampled with order=0 (nearest neighbour)")
    fill = _fill_value(volume) if fill_value is None else fill_value
    T_src_index_from_dst_index = np.linalg.inv(volume.affine) @ target_affine
    src = volume.array
    work_dtype = src.dtype if volume.is_label else np.float32
    M, offset = T_src_index_from_dst_index[:3, :3], T_src_index_from_dst_index[:3, 3]
    # A volume covers its voxels edge to edge: samples up to half a voxel beyond the outermost
    # centres take the edge value ("nearest"); only those further out get the fill value.
    out = ndimage.affine_transform(
        src if volume.is_label else src.astype(np.float32, copy=False), M, offset=offset,
        output_shape=shape, output=work_dtype, order=order, mode="nearest", prefilter=order > 1)
    _fill_outside(out, M, offset, np.array(src.shape), fill)
    if not volume.is_label and np.issubdtype(src.dtype, np.integer):
        info = np.iinfo(src.dtype)
        out = np.clip(np.rint(out), info.min, info.max).astype(src.dtype)
    return Volume(out, target_affine, modality=volume.modality, is_label=volume.is_label,
                  meta=volume.meta)


def _fill_outside(out: np.ndarray, M: NDArray[np.float64], offset: NDArray[np.float64],
                  src_shape: NDArray[np.int64], fill: float) -> None:
    """Set `fill` where the source index (M @ dst_index + offset) lies more than half a voxel
    outside the source grid; slice by slice along k to keep memory small."""
    ni, nj, nk = out.shape
    ii, jj = np.meshgrid(np.arange(ni, dtype=np.float64), np.arange(nj, dtype=np.float64), indexing="ij")
    base = M[:, 0, None, None] * ii + M[:, 1, None, None] * jj + offset[:, None, None]  # (3, ni, nj)
    lo, hi = -0.5 - 1e-6, src_shape - 0.5 + 1e-6
    for k in range(nk):
        src = base + M[:, 2, None, None] * k
        outside = np.any((src < lo) | (src > hi[:, None, None]), axis=0)
        if outside.any():
            out[:, :, k][outside] = fill


def resample_like(volume: Volume, reference: Volume, *, order: int | None = None) -> Volume:
    """Resample `volume` onto `reference`'s grid (its shape and affine)."""
    return resample_to_grid(volume, reference.shape, reference.affine, order=order)


def resample_to_spacing(volume: Volume, spacing_mm: float | ArrayLike, *,
                        order: int | None = None) -> Volume:
    """Resample to a new voxel size keeping the axes' directions and the first voxel centre.

    The new grid covers the same span between first and last voxel centres (it may stop short
    by less than one new voxel).
    """
    new = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (3,)).copy()
    if not np.all(np.isfinite(new)) or np.any(new <= 0):
        raise ValueError(f"spacing_mm must be positive, got {spacing_mm!r}")
    span = (np.array(volume.shape) - 1) * volume.spacing_mm
    shape = tuple(int(math.floor(s / n + 1e-6)) + 1 for s, n in zip(span, new))
    affine = volume.affine.copy()
    affine[:3, :3] = volume.direction * new
    return resample_to_grid(volume, shape, affine, order=order)


def resample_to_orthogonal(volume: Volume, *, order: int | None = None) -> Volume:
    """Resample a sheared grid (gantry tilt) onto an orthogonal one covering the same anatomy.

    The new grid keeps the in-plane axes i and j and their spacing; k becomes the slice normal
    (i x j) with the true slice spacing (the k step projected on the normal). The k range is
    widened to cover every source voxel, padding with the fill value.
    """
    if volume.is_orthogonal:
        return volume
    d = volume.direction
    ei, ej = d[:, 0], d[:, 1]
    ej = ej - (ej @ ei) * ei
    ej /= np.linalg.norm(ej)
    ek = np.cross(ei, ej)
    step_k = volume.affine[:3, 2]
    if step_k @ ek < 0:
        ek = -ek
    sp = volume.spacing_mm
    new_sp = np.array([sp[0], sp[1], abs(step_k @ ek)])
    rot = np.stack([ei, ej, ek], axis=1)
    corners = volume.corners_world_mm()
    local = (corners - volume.origin_world_mm) @ rot  # coordinates in the new axes
    lo, hi = local.min(axis=0), local.max(axis=0)
    shape = tuple(int(math.ceil((h - l) / s - 1e-6)) + 1 for l, h, s in zip(lo, hi, new_sp))
    affine = np.eye(4)
    affine[:3, :3] = rot * new_sp
    affine[:3, 3] = volume.origin_world_mm + rot @ lo
    return resample_to_grid(volume, shape, affine, order=order)


def crop_to_box(volume: Volume, min_world_mm: ArrayLike, max_world_mm: ArrayLike) -> Volume:
    """Crop to the voxels whose centres lie in the axis-aligned LPS box [min, max] (mm).

    The crop is index-aligned: for an oblique grid it keeps the smallest index box that
    contains every voxel centre inside the world box. The affine is shifted accordingly.

    Raises
    ------
    ValueError
        If the box is inverted or holds no voxel centre of the volume.
    """
    lo_w = np.asarray(min_world_mm, dtype=np.float64)
    hi_w = np.asarray(max_world_mm, dtype=np.float64)
    if lo_w.shape != (3,) or hi_w.shape != (3,) or np.any(hi_w < lo_w):
        raise ValueError(f"crop box must be two LPS points with min <= max, got {lo_w} and {hi_w}")
    box = np.array([[x, y, z] for x in (lo_w[0], hi_w[0]) for y in (lo_w[1], hi_w[1])
                    for z in (lo_w[2], hi_w[2])])
    idx = volume.index_from_world(box)
    lo_i = np.maximum(np.ceil(idx.min(axis=0) - 1e-6), 0).astype(int)
    hi_i = np.minimum(np.floor(idx.max(axis=0) + 1e-6), np.array(volume.shape) - 1).astype(int)
    if np.any(hi_i < lo_i):
        raise ValueError(f"crop box {lo_w.round(1).tolist()} to {hi_w.round(1).tolist()} mm "
                         "does not overlap the volume")
    sub = volume.array[lo_i[0]:hi_i[0] + 1, lo_i[1]:hi_i[1] + 1, lo_i[2]:hi_i[2] + 1]
    affine = volume.affine.copy()
    affine[:3, 3] = volume.world_from_index(lo_i)
    return Volume(sub.copy(), affine, modality=volume.modality, is_label=volume.is_label,
                  meta=volume.meta)


def reorient_to_lps(volume: Volume) -> Volume:
    """Flip and permute array axes (no interpolation) so that i, j, k point as close as
    possible to L, P, S. Useful for display; world positions do not change."""
    d = np.abs(volume.direction)
    perm = [int(np.argmax(d[a])) for a in range(3)]  # array axis closest to world axis a
    if sorted(perm) != [0, 1, 2]:
        raise ValueError(f"cannot reorient: axes are ambiguous (direction {volume.direction})")
    arr = np.transpose(volume.array, perm)
    affine = volume.affine.copy()
    affine[:3, :3] = volume.affine[:3, perm]
    for a in range(3):
        if affine[a, a] < 0:
            n = arr.shape[a]
            arr = np.flip(arr, axis=a)
            affine[:3, 3] = affine[:3, 3] + affine[:3, a] * (n - 1)
            affine[:3, a] = -affine[:3, a]
    return Volume(np.ascontiguousarray(arr), affine, modality=volume.modality,
                  is_label=volume.is_label, meta=volume.meta)


def window(values: ArrayLike, *, level: float, width: float) -> NDArray[np.uint8]:
    """Map intensities (HU) to 0-255 for display with a window centre `level` and `width`."""
    if not width > 0:
        raise ValueError(f"window width must be > 0, got {width!r}")
    v = (np.asarray(values, dtype=np.float32) - (level - width / 2.0)) / width
    return (np.clip(v, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


#: Display windows (level, width) in HU; conventional radiology presets.
WINDOWS_HU = {"bone": (400.0, 1800.0), "soft_tissue": (40.0, 400.0), "lung": (-600.0, 1500.0)}

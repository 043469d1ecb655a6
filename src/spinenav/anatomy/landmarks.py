"""Landmarks and a local frame for each vertebra, from a label map and the CT.

Every landmark is found on the vertebra's own mask (one label of the label map); the CT is
used only to place surfaces with sub-voxel precision (the steepest point of the intensity
profile across the bone surface, within 1.5 mm of the mask's boundary, where the CT samples
the profile at least every 1.25 mm), so the results follow the label map's anatomy and the
CT's partial volume. Without a CT (``ct=None``) the
surfaces are the label map's boundaries (+-half a voxel) and the results say so.

Definitions (all positions LPS world mm; see :mod:`spinenav.anatomy.model` for the fields)

Frame
    ``cc`` = mean of the superior endplate's outward normal and the reversed inferior one;
    ``ap`` = from the body centroid towards the canal centroid, made perpendicular to cc;
    ``lr = ap x cc`` (to the patient's left). Origin: midway between the endplate centres.
Body
    The vertebra's voxels anterior to the plane (perpendicular to ap) through the canal's
    anterior wall at the midline. ``body_centroid_world_mm`` is their centroid.
Endplates
    A plane fitted (least squares, outliers rejected) to the body's cranial or caudal surface
    over the central part of its footprint (at least 3 mm, and 15% of its radius, inside the
    rim); centre = footprint centroid within 3 mm of the plane, projected on it.
Canal
    The hole enclosed by the vertebra in the axial plane (perpendicular to cc) through the
    two pedicle isthmus centres; area, widest left-right chord (interpedicular distance) and
    the AP chord through the midpoint of that chord (AP diameter).
Pedicle isthmus
    Planes perpendicular to a trial axis are swept along it; the cross-section of the bone
    around the axis is measured in each; the isthmus is the plane of least area, its centre
    the section's centroid, the axis the line through the centroids of the sections near it
    (iterated until stable). Width and height: outer-cortex chords through the centre
    along the width direction (perpendicular to the axis, in the axial plane) and the height
    direction (axis x width), medians of 9 parallel chords 0.4 mm apart.
Spinous process tip
    The centre of the process's far end: the area-weighted centroid of the surface facing
    away from the canal at the far end of the midline posterior bone.
Transverse process tips
    The most lateral point of the bone on each side (posterior to the body), placed on the
    surface along the left-right axis.
Facet joints
    The joint space between this vertebra's articular process and the neighbour's: voxels
    within 3 mm of both bones, behind the body and beside the canal; per side the largest
    such region; centre = its centroid, normal = its thinnest direction.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from spinenav.anatomy.labels import is_vertebra_id, level_name, level_order, normalize_level
from spinenav.anatomy.model import (Canal, Endplate, Facet, Pedicle, Point, VertebraFrame, VertebraLandmarks,
                                    vec3)
from spinenav.errors import SpinenavError, SpinenavWarning
from spinenav.imaging.volume import AIR_HU, Volume

def apply_affine(T: NDArray, pts: NDArray) -> NDArray[np.float64]:
    """Points (..., 3) through a 4x4 affine (nibabel's ``apply_affine``, written out per
    component: several times faster on millions of points)."""
    p = np.asarray(pts, dtype=np.float64)
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    return np.stack([T[j, 0] * x + T[j, 1] * y + T[j, 2] * z + T[j, 3] for j in range(3)], axis=-1)


#: Grid step of the vertebra-aligned working grid (mm).
LOCAL_STEP_MM = 0.7
#: Padding around a vertebra's bounding box (mm): room for profiles and neighbours.
PAD_MM = 12.0
#: A bone edge needs at least this CT contrast (HU) to be placed from the CT...
MIN_EDGE_CONTRAST_HU = 150.0
#: ... and CT samples at most this far apart along the ray (mm); else the label map places it.
MAX_CT_SAMPLE_MM = 1.25
#: Smallest canal cross-section accepted as the vertebral foramen (mm^2).
MIN_CANAL_AREA_MM2 = 15.0
#: Pedicle sweep: half-length (mm), plane spacing (mm), section radius (mm), pixel (mm).
SWEEP_HALF_MM, SWEEP_STEP_MM, SECTION_RADIUS_MM, SECTION_PIXEL_MM = 8.0, 0.5, 12.0, 1.0 / 3.0
#: Trial transverse angle of the pedicle axis before the sweep refines it (radians).
TRIAL_TPA_RAD = math.radians(18.0)
#: The pedicle's axis: through the centroids of the clean sections within this of the
#: isthmus (mm) and at most this multiple of its area.
AXIS_RUN_MM = 6.0
AXIS_RUN_AREA = 2.0
#: ... refitted without the centroids farther than this from it cranio-caudally (mm).
AXIS_FIT_TOL_MM = 0.5
#: The isthmus centre moves to the narrowest width within this of the least-area section (mm)
ISTHMUS_WIDTH_SEARCH_MM = 2.0
#: ... unless the pedicle's height there exceeds the least-area section's by more than this (mm).
ISTHMUS_HEIGHT_JUMP_MM = 1.0
#: Transverse-process tips: parallel rays within this of the end's voxels (mm); the apex is
#: the mean of the edge points within TIP_APEX_MM of the farthest along the process's axis.
TIP_SEARCH_MM = 2.5
TIP_APEX_MM = 0.25
#: Facet joints: voxels within this distance of both bones, with the two distances adding up
#: to at most FACET_SPAN_MM, form the joint space (mm).
FACET_REACH_MM = 2.5
FACET_SPAN_MM = 4.0
#: ... and the bones face each other within 60 degrees of the axial plane (cos of 30 deg
#: from the cranio-caudal axis).
FACET_MAX_CC_COS = 0.85
#: the joint's plane within its contact zone: separating directions within ~35 degrees of the
#: dominant one, voxels within this distance of the plane (the zone is ~2 x 2 mm thick)
FACET_PLANE_COS = 0.82
FACET_SLAB_MM = 2.0

_SIDES = {"left": 1.0, "right": -1.0}
_SIDE_WORDS = {"L": "left", "R": "right", "A": "anterior", "P": "posterior", "S": "superior", "I": "inferior"}
_OPPOSITE = {"L": "R", "R": "L", "A": "P", "P": "A", "S": "I", "I": "S"}


class LandmarkError(SpinenavError):
    """A vertebra's landmarks cannot be computed at all (no voxels, grids that differ)."""


def _unit(v: NDArray) -> NDArray[np.float64]:
    v = np.asarray(v, dtype=np.float64)
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


# ============================================================================ sampling
class _Sampler:
    """Samples of a (cropped) array at world points: trilinear (order 1) or cubic B-spline
    (order 3, coefficients computed once)."""

    def __init__(self, array: NDArray, T_world_from_index: NDArray, cval: float, order: int = 1):
        self.array = np.ascontiguousarray(array, dtype=np.float32)
        self.T_index_from_world = np.linalg.inv(T_world_from_index)
        self.cval = float(cval)
        self.order = order
        self._coef = None
        if order > 1:
            self._coef = ndimage.spline_filter(self.array, order=order, output=np.float32, mode="nearest")

    def __call__(self, pts_world_mm: NDArray) -> NDArray[np.float32]:
        p = np.asarray(pts_world_mm, dtype=np.float64)
        M = self.T_index_from_world
        x, y, z = p[..., 0].ravel(), p[..., 1].ravel(), p[..., 2].ravel()
        idx = np.stack([M[j, 0] * x + M[j, 1] * y + M[j, 2] * z + M[j, 3] for j in range(3)])
        src = self.array if self._coef is None else self._coef
        out = ndimage.map_coordinates(src, idx, order=self.order, mode="nearest" if self.order > 1 else "constant",
                                      cval=self.cval, prefilter=False, output=np.float32)
        return out.reshape(p.shape[:-1])

    def inside_grid(self, pts_world_mm: NDArray, margin_vox: float = 0.0) -> NDArray[np.bool_]:
        idx = apply_affine(self.T_index_from_world, np.asarray(pts_world_mm, float).reshape(-1, 3))
        hi = np.array(self.array.shape) - 1 - margin_vox
        ok = np.all((idx >= margin_vox) & (idx <= hi), axis=1)
        return ok.reshape(np.asarray(pts_world_mm).shape[:-1])


@dataclass
class _Edges:
    t_mm: NDArray[np.float64]  # (R,) distance from the ray origin to the edge
    found: NDArray[np.bool_]  # (R,) the mask had an edge on the ray
    from_ct: NDArray[np.bool_]  # (R,) the CT placed it


def _ray_edges(mask: _Sampler, ct: _Sampler | None, origins: NDArray, dirs: NDArray, t_max_mm: float, *,
               step_mm: float = 0.05, rising: bool = False, tol_mm: float = 1.5) -> _Edges:
    """First bone edge along each ray (origin + t * dir, 0 <= t <= t_max).

    ``rising=False``: the ray starts in bone and the edge is where it leaves the bone;
    ``rising=True``: it starts outside (a canal) and the edge is where it enters bone. The
    mask places the edge at its 0.5 crossing (trilinear). The CT then moves it to the
    steepest point of its profile (cubic B-spline samples, parabola through the peak of the
    gradient) within `tol_mm` of the mask's edge, when the bone is at least
    MIN_EDGE_CONTRAST_HU brighter than the lowest value 0.5-2.5 mm outside and the CT's
    samples along the ray are at most MAX_CT_SAMPLE_MM apart.
    """
    origins = np.atleast_2d(np.asarray(origins, float))
    dirs = np.atleast_2d(np.asarray(dirs, float))
    dirs = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    t = np.arange(0.0, t_max_mm + step_mm / 2, step_mm)
    P = origins[:, None, :] + t[None, :, None] * dirs[:, None, :]
    m = mask(P)
    bone = m >= 0.5
    if rising:
        start_ok = ~bone[:, 0]
        cross = bone[:, 1:] & ~bone[:, :-1]
    else:
        start_ok = bone[:, 0]
        cross = ~bone[:, 1:] & bone[:, :-1]
    found = cross.any(axis=1) & start_ok
    i0 = np.argmax(cross, axis=1)  # edge between samples i0 and i0 + 1
    rows = np.arange(len(i0))
    m0, m1 = m[rows, i0], m[rows, np.minimum(i0 + 1, len(t) - 1)]
    frac = np.where(np.abs(m1 - m0) > 1e-6, (0.5 - m0) / (m1 - m0 + 1e-12), 0.5)
    t_mask = t[i0] + np.clip(frac, 0.0, 1.0) * step_mm
    t_edge = t_mask.copy()
    from_ct = np.zeros(len(t_mask), bool)
    # how coarse is the CT along each ray? Beyond MAX_CT_SAMPLE_MM the profile's steepest
    # point is aliased (thin cortex between coarse slices) and the label map's boundary,
    # unbiased on average over a tilted surface, is the better estimate. The voxel's extent
    # along the ray, |D^T d| with D the voxel axes times their spacings: the spacing itself
    # on isotropic voxels in any direction (the distance between crossings of one axis's
    # voxel planes, used before, put 1 mm voxels at 1.35-1.7 mm along oblique rays and left
    # the S1 pedicle's width, 42 degrees off the grid, to the label map: +0.5 mm)
    use_ct = np.zeros(len(dirs), bool)
    if ct is not None:
        D = np.linalg.inv(ct.T_index_from_world[:3, :3])  # columns: voxel axes x spacing
        use_ct = np.linalg.norm(dirs @ D, axis=1) <= MAX_CT_SAMPLE_MM
    if ct is not None and (found & use_ct).any():
        f = ct(P)
        g = np.gradient(f, step_mm, axis=1)
        if not rising:
            g = -g  # bone -> outside: the edge is the steepest fall
        n_w = int(round(tol_mm / step_mm))
        n_out0, n_out1 = int(round(0.5 / step_mm)), int(round(2.5 / step_mm))
        n_in = int(round(2.0 / step_mm))
        T = len(t)
        for r in np.nonzero(found & use_ct)[0]:
            e = int(round(t_mask[r] / step_mm))
            lo, hi = max(e - n_w, 1), min(e + n_w, T - 2)
            if hi <= lo:
                continue
            k = lo + int(np.argmax(g[r, lo:hi + 1]))
            if k in (lo, hi):
                continue  # the steepest point is at the window's edge: no clear edge
            # contrast across the edge
            if rising:
                bone_v = f[r, k:min(k + n_in, T - 1) + 1].max()
                out_v = f[r, max(k - n_out1, 0):max(k - n_out0, 0) + 1].min()
            else:
                bone_v = f[r, max(k - n_in, 0):k + 1].max()
                out_v = f[r, min(k + n_out0, T - 1):min(k + n_out1, T - 1) + 1].min()
            if bone_v - out_v < MIN_EDGE_CONTRAST_HU:
                continue
            y0, y1, y2 = g[r, k - 1], g[r, k], g[r, k + 1]
            den = y0 - 2 * y1 + y2
            dk = 0.5 * (y0 - y2) / den if den < 0 else 0.0
            t_edge[r] = t[k] + float(np.clip(dk, -1.0, 1.0)) * step_mm
            from_ct[r] = True
    return _Edges(np.where(found, t_edge, np.nan), found, from_ct & found)


def _chord(mask: _Sampler, ct: _Sampler | None, centre: NDArray, direction: NDArray, *,
           offsets: Sequence[NDArray] = (), rising: bool = False, t_max_mm: float = 40.0
           ) -> tuple[float | None, float, float, bool]:
    """Median chord through `centre` (+ each offset) along +-`direction`.

    Returns (length_mm or None, t_plus_mm, t_minus_mm (for the central chord), from_ct)."""
    d = _unit(direction)
    starts = [np.asarray(centre, float)] + [np.asarray(centre, float) + o for o in offsets]
    origins = np.array(starts + starts)
    dirs = np.array([d] * len(starts) + [-d] * len(starts))
    e = _ray_edges(mask, ct, origins, dirs, t_max_mm, rising=rising)
    n = len(starts)
    ok = e.found[:n] & e.found[n:]
    if not ok[0] and ok.sum() < 3:
        return None, float("nan"), float("nan"), False
    lengths = (e.t_mm[:n] + e.t_mm[n:])[ok]
    from_ct = bool(np.mean(e.from_ct[:n][ok] & e.from_ct[n:][ok]) >= 0.5)
    return float(np.median(lengths)), float(e.t_mm[0]), float(e.t_mm[n]), from_ct


# ============================================================================ geometry helpers
def _fit_plane_z(xy: NDArray, z: NDArray) -> tuple[NDArray, float, NDArray[np.bool_]]:
    """Robust z = a x + b y + c: coefficients (a, b, c), rms of the kept residuals, kept mask.

    Outliers beyond 3 MAD (at least 0.75 mm) are dropped; when the surface is still stepped
    (rms > 1 mm: e.g. the sacral alae beside the S1 endplate) the points well below the plane
    are dropped too, so the plane settles on the uppermost broad surface (z points outwards).
    """
    keep = np.ones(len(z), bool)
    coef = np.zeros(3)

    def fit(k):
        A = np.column_stack([xy[k], np.ones(k.sum())])
        c, *_ = np.linalg.lstsq(A, z[k], rcond=None)
        return c, z - (xy @ c[:2] + c[2])

    for _ in range(3):
        coef, res = fit(keep)
        mad = 1.4826 * np.median(np.abs(res[keep] - np.median(res[keep])))
        new = np.abs(res) <= max(3.0 * mad, 0.75)
        if new.sum() < 6 or np.array_equal(new, keep):
            break
        keep = new
    for _ in range(4):
        coef, res = fit(keep)
        rms = float(np.sqrt(np.mean(res[keep] ** 2)))
        if rms <= 1.0:
            break
        new = keep & (res >= -1.0)
        if new.sum() < max(6, 0.4 * keep.sum()) or np.array_equal(new, keep):
            break
        keep = new
    coef, res = fit(keep)
    return coef, float(np.sqrt(np.mean(res[keep] ** 2))), keep


def _line_fit(points: NDArray) -> tuple[NDArray, NDArray]:
    c = points.mean(axis=0)
    _, _, vt = np.linalg.svd(points - c, full_matrices=False)
    return c, vt[0]


def _robust_line_fit(points: NDArray, tol_mm: float, across: NDArray, rounds: int = 3
                     ) -> tuple[NDArray, NDArray]:
    """Line through `points`, refitted without those whose offset from it along `across`
    exceeds `tol_mm` (at least 4 points kept)."""
    keep = np.ones(len(points), bool)
    c, d = _line_fit(points)
    for _ in range(rounds):
        r = points - c
        off = np.abs((r - np.outer(r @ d, d)) @ across)
        new = off <= tol_mm
        if new.sum() < 4 or (new == keep).all():
            break
        keep = new
        c, d = _line_fit(points[keep])
    return c, d


def _largest_component(mask2d: NDArray[np.bool_]) -> NDArray[np.bool_]:
    lab, n = ndimage.label(mask2d)
    if n == 0:
        return mask2d
    sizes = np.bincount(lab.ravel())[1:]
    return lab == (int(np.argmax(sizes)) + 1)


def _disk(radius_px: float) -> NDArray[np.bool_]:
    r = int(math.ceil(radius_px))
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    return x * x + y * y <= radius_px * radius_px + 1e-9


# ============================================================================ the vertebra crop
@dataclass
class _Crop:
    label_id: int
    mask: NDArray[np.bool_]  # cropped mask
    T_world_from_crop: NDArray[np.float64]
    lo: NDArray[np.int64]  # crop start in the full grid
    spacing: NDArray[np.float64]
    points: NDArray[np.float64]  # (N, 3) world mm of the mask's voxel centres
    mask_s: _Sampler
    ct_s: _Sampler | None
    cut_sides: list[str]
    boundary_index: NDArray[np.bool_]  # crop voxels on the full grid's outer faces


def _make_crop(ct: Volume | None, labels: Volume, label_id: int,
               bbox: tuple[slice, slice, slice] | None = None) -> _Crop:
    arr = labels.array
    if bbox is None:
        m = arr == label_id
        if not m.any():
            raise LandmarkError(f"label {label_id} has no voxels in the label map")
        nz = [np.nonzero(m.any(axis=tuple(j for j in range(3) if j != i)))[0] for i in range(3)]
        bbox = tuple(slice(int(n[0]), int(n[-1]) + 1) for n in nz)  # type: ignore[assignment]
    sp = labels.spacing_mm
    pad = np.ceil(PAD_MM / sp).astype(int)
    shape = np.array(arr.shape)
    lo = np.maximum([b.start - p for b, p in zip(bbox, pad)], 0)
    hi = np.minimum([b.stop + p for b, p in zip(bbox, pad)], shape)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    mask = arr[sl] == label_id
    if not mask.any():
        raise LandmarkError(f"label {label_id} has no voxels in the label map")
    T = labels.affine.copy()
    T[:3, 3] = labels.world_from_index(lo)
    idx = np.argwhere(mask)
    pts = apply_affine(T, idx.astype(np.float64))
    # which faces of the full grid does the vertebra touch?
    cut = []
    codes = labels.axcodes
    for ax in range(3):
        if bbox[ax].start == 0:
            cut.append(_SIDE_WORDS[_OPPOSITE[codes[ax]]])
        if bbox[ax].stop == shape[ax]:
            cut.append(_SIDE_WORDS[codes[ax]])
    bidx = np.zeros(mask.shape, bool)
    for ax in range(3):
        if lo[ax] == 0:
            bidx[(slice(None),) * ax + (0,)] = True
        if hi[ax] == shape[ax]:
            bidx[(slice(None),) * ax + (-1,)] = True
    mask_s = _Sampler(mask.astype(np.float32), T, 0.0)
    ct_s = None
    if ct is not None:
        ct_s = _Sampler(ct.array[sl], T, float(AIR_HU) if ct.modality == "CT" else 0.0, order=3)
    return _Crop(label_id, mask, T, lo, sp, pts, mask_s, ct_s, cut, bidx)


# ============================================================================ frame, canal, body
@dataclass
class _Work:
    """Intermediate results for one vertebra (local coordinates are in the current frame)."""

    R: NDArray[np.float64]  # columns lr, ap, cc
    o: NDArray[np.float64]
    canal_ok: bool = False
    canal_enclosed: bool = True
    canal_closing_mm: float = 0.0
    canal_centroid: NDArray[np.float64] | None = None  # world
    canal_z: tuple[float, float] = (0.0, 0.0)  # local z range of the enclosed canal
    canal_halfwidth: float = 0.0
    canal_half_ap: float = 0.0
    canal_back_y: float = 0.0  # local y of the canal's posterior wall (midline)
    wall_y: float = 0.0  # local y of the canal's anterior wall (midline)
    body_centroid: NDArray[np.float64] | None = None
    sup: dict | None = None
    inf: dict | None = None
    notes: list[str] = field(default_factory=list)

    def local(self, p_world: NDArray) -> NDArray:
        return (np.asarray(p_world, float) - self.o) @ self.R

    def world(self, p_local: NDArray) -> NDArray:
        return np.asarray(p_local, float) @ self.R.T + self.o


def _frame_from(cc: NDArray, ap_hint: NDArray) -> NDArray:
    cc = _unit(cc)
    ap = _unit(ap_hint - (ap_hint @ cc) * cc)
    lr = np.cross(ap, cc)
    return np.column_stack([lr, ap, cc])


def _local_grid(crop: _Crop, w: _Work, step: float) -> tuple[NDArray[np.bool_], NDArray, NDArray]:
    """The vertebra mask on a grid aligned with the current frame: (mask [x, y, z], lo_local,
    T_world_from_localindex)."""
    loc = w.local(crop.points)
    lo = loc.min(axis=0) - 2.0
    hi = loc.max(axis=0) + 2.0
    shape = tuple(int(n) for n in np.ceil((hi - lo) / step).astype(int) + 1)
    T_wl = np.eye(4)
    T_wl[:3, :3] = w.R * step
    T_wl[:3, 3] = w.o + w.R @ lo
    T_cl = np.linalg.inv(crop.T_world_from_crop) @ T_wl
    soft = ndimage.affine_transform(crop.mask_s.array, T_cl[:3, :3], offset=T_cl[:3, 3], output_shape=shape,
                                    order=1, mode="constant", cval=0.0, prefilter=False, output=np.float32)
    return soft >= 0.5, lo, T_wl


def _find_canal(crop: _Crop, w: _Work, step: float) -> None:
    """Canal in the axial slices of the current frame: sets w.canal_* and w.wall_y."""
    grid, lo, _ = _local_grid(crop, w, step)
    nx, ny, nz = grid.shape
    xs = lo[0] + np.arange(nx) * step
    ys = lo[1] + np.arange(ny) * step
    zs = lo[2] + np.arange(nz) * step
    found = []
    for closing_mm in (0.0, 1.5, 3.0):
        st = _disk(closing_mm / step) if closing_mm else None
        for k in range(nz):
            sl = grid[:, :, k]
            if sl.sum() < 20:
                continue
            closed = ndimage.binary_closing(sl, st, border_value=0) | sl if st is not None else sl
            holes = ndimage.binary_fill_holes(closed) & ~closed
            if not holes.any():
                continue
            lab, n = ndimage.label(holes)
            sizes = np.bincount(lab.ravel())[1:]
            j = int(np.argmax(sizes))
            area = sizes[j] * step * step
            if area < MIN_CANAL_AREA_MM2:
                continue
            comp = lab == j + 1
            ii, jj = np.nonzero(comp)
            found.append((k, area, xs[ii].mean(), ys[jj].mean(), comp))
        if len(found) >= 2:
            w.canal_enclosed = closing_mm == 0.0
            w.canal_closing_mm = closing_mm
            break
        found = []
    if not found:
        w.canal_ok = False
        w.notes.append("no enclosed vertebral foramen found in the axial slices")
        return
    # the foramen is the largest hole: small ones (cervical transverse foramina, slices
    # where the canal is only partly enclosed) do not vote on where the canal is
    amax = max(f[1] for f in found)
    found = [f for f in found if f[1] >= 0.4 * amax]
    cx = np.median([f[2] for f in found])
    cy = np.median([f[3] for f in found])
    amed = np.median([f[1] for f in found])
    good = [f for f in found if math.hypot(f[2] - cx, f[3] - cy) < 6.0 and f[1] > 0.3 * amed]
    if not good:
        good = found
    ks = np.array([f[0] for f in good])
    # keep the longest run of consecutive slices (the foramen, not stray holes)
    runs = np.split(np.arange(len(ks)), np.nonzero(np.diff(ks) > 1)[0] + 1)
    best = max(runs, key=len)
    good = [good[i] for i in best]
    walls, backs, halfw = [], [], []
    pts = []
    for k, area, gx, gy, comp in good:
        ii, jj = np.nonzero(comp)
        x, y = xs[ii], ys[jj]
        mid = np.abs(x - gx) < 3.0
        if mid.any():
            walls.append(y[mid].min() - step / 2)
            backs.append(y[mid].max() + step / 2)
        halfw.append((x.max() - x.min() + step) / 2)
        pts.append(np.column_stack([x, y, np.full(len(x), zs[k])]))
    allp = np.concatenate(pts)
    w.canal_centroid = w.world(allp.mean(axis=0))
    w.canal_z = (float(zs[good[0][0]]), float(zs[good[-1][0]]))
    w.canal_halfwidth = float(np.median(halfw))
    w.wall_y = float(np.median(walls)) if walls else float(allp[:, 1].min())
    w.canal_back_y = float(np.median(backs)) if backs else float(allp[:, 1].max())
    w.canal_half_ap = 0.5 * (w.canal_back_y - w.wall_y)
    w.canal_ok = True


def _endplate_rough(loc_body: NDArray, top: bool, half_extent: float, bin_mm: float = 1.5) -> dict | None:
    """Rough plane of the body's top (or bottom) surface from its voxel centres (local)."""
    xy = loc_body[:, :2]
    z = loc_body[:, 2] if top else -loc_body[:, 2]
    b0 = np.floor(xy.min(axis=0) / bin_mm) - 1
    bi = (np.floor(xy / bin_mm) - b0).astype(int)
    shape = bi.max(axis=0) + 2
    flat = bi[:, 0] * shape[1] + bi[:, 1]
    zmax = np.full(shape[0] * shape[1], -np.inf)
    np.maximum.at(zmax, flat, z)
    occ = np.isfinite(zmax).reshape(shape)
    if occ.sum() < 10:
        return None
    depth = ndimage.distance_transform_edt(occ) * bin_mm
    r_eq = math.sqrt(occ.sum() * bin_mm * bin_mm / math.pi)
    inner = depth >= max(3.0, 0.15 * r_eq)
    if inner.sum() < 8:
        inner = depth >= 1.5
    ii, jj = np.nonzero(inner)
    centres = (np.column_stack([ii, jj]) + b0 + 0.5) * bin_mm
    zz = zmax.reshape(shape)[ii, jj] + half_extent
    coef, rms, keep = _fit_plane_z(centres, zz)
    return {"coef": coef, "xy": centres, "rms": rms, "keep": keep, "top": top, "R": None, "o": None,
            "footprint_area_mm2": float(occ.sum() * bin_mm * bin_mm)}


def _update_frame(crop: _Crop, w: _Work, step: float) -> float:
    """One round: canal, body, rough endplates -> new frame. Returns the change of cc (rad)."""
    _find_canal(crop, w, step)
    loc = w.local(crop.points)
    if w.canal_ok:
        body = loc[loc[:, 1] < w.wall_y]
    else:  # no canal: the anterior 55% of the vertebra along the current ap
        y = loc[:, 1]
        body = loc[y < np.quantile(y, 0.45)]
    if len(body) < 50:
        body = loc
    w.body_centroid = w.world(body.mean(axis=0))
    half_cc = 0.5 * float(np.abs(w.R[:, 2] @ crop.T_world_from_crop[:3, :3]).sum())
    sup = _endplate_rough(body, True, half_cc)
    inf = _endplate_rough(body, False, half_cc)
    for r in (sup, inf):
        if r is not None:
            r["R"], r["o"] = w.R.copy(), w.o.copy()
    w.sup, w.inf = sup, inf
    cc_old = w.R[:, 2].copy()
    normals = []
    if sup is not None:
        a, b, _ = sup["coef"]
        normals.append(_unit([-a, -b, 1.0]))
    if inf is not None:
        a, b, _ = inf["coef"]  # fitted on -z: -z = a x + b y + c; its cranial normal is (a, b, 1)
        normals.append(_unit([a, b, 1.0]))
    cc_loc = _unit(np.sum(normals, axis=0)) if normals else np.array([0.0, 0.0, 1.0])
    cc = w.R @ cc_loc
    ap_hint = (w.canal_centroid - w.body_centroid) if w.canal_ok else w.R[:, 1]
    if np.linalg.norm(ap_hint - (ap_hint @ cc) * cc) < 1e-6:
        ap_hint = w.R[:, 1]
    w.R = _frame_from(cc, ap_hint)
    w.o = w.body_centroid.copy()
    return float(np.arccos(np.clip(cc @ cc_old, -1.0, 1.0)))


# ============================================================================ endplates (final)
class _Footprint:
    """A 2D region of the vertebra's axial plane (local x, y) as occupied 1 mm bins."""

    def __init__(self, xy: NDArray, bin_mm: float = 1.0):
        self.bin = bin_mm
        self.lo = np.floor(xy.min(axis=0) / bin_mm) - 2
        ij = (np.floor(xy / bin_mm) - self.lo).astype(int)
        self.occ = np.zeros(ij.max(axis=0) + 3, bool)
        self.occ[ij[:, 0], ij[:, 1]] = True
        self.occ = ndimage.binary_closing(self.occ, np.ones((3, 3)), border_value=0) | self.occ
        self.occ = ndimage.binary_dilation(self.occ)

    def contains(self, xy: NDArray) -> NDArray[np.bool_]:
        ij = (np.floor(xy / self.bin) - self.lo).astype(int)
        ok = np.all((ij >= 0) & (ij < np.array(self.occ.shape)), axis=1)
        out = np.zeros(len(xy), bool)
        out[ok] = self.occ[ij[ok, 0], ij[ok, 1]]
        return out


def _endplate_final(crop: _Crop, w: _Work, top: bool, core: _Footprint | None = None,
                    axis_xy: NDArray | None = None) -> tuple[Endplate | None, NDArray | None, _Footprint | None]:
    """Refined endplate (CT edges where possible): (model, centre, footprint) or Nones.

    `core` restricts the footprint to the body's column (the superior endplate's footprint),
    leaving out bone beside the body at the endplate's level (the sacral alae). `axis_xy`:
    local (x, y) of the body's axis; the centre is where it meets the plane (default: the
    centroid of the body's layer under the plane)."""
    rough = w.sup if top else w.inf
    if rough is None:
        return None, None, None
    a, b, c = rough["coef"]
    xy = rough["xy"][rough["keep"]]
    if top:
        z = xy @ np.array([a, b]) + c
        n_loc = _unit([-a, -b, 1.0])
    else:
        z = -(xy @ np.array([a, b]) + c)
        n_loc = _unit([-a, -b, -1.0])  # -z = a x + b y + c: the caudal (outward) normal
    p_loc = np.column_stack([xy, z])
    p_w = p_loc @ rough["R"].T + rough["o"]  # the rough fit was made in the frame of its round
    n_w = rough["R"] @ n_loc
    # is this surface the edge of the field of view?
    idx = np.rint(apply_affine(np.linalg.inv(crop.T_world_from_crop), p_w - 0.5 * n_w)).astype(int)
    idx = np.clip(idx, 0, np.array(crop.mask.shape) - 1)
    idx2 = np.rint(apply_affine(np.linalg.inv(crop.T_world_from_crop), p_w - 1.5 * n_w)).astype(int)
    idx2 = np.clip(idx2, 0, np.array(crop.mask.shape) - 1)
    on_border = crop.boundary_index[idx[:, 0], idx[:, 1], idx[:, 2]] | \
        crop.boundary_index[idx2[:, 0], idx2[:, 1], idx2[:, 2]]
    if on_border.mean() > 0.2:
        return None, None, None
    origins = p_w - 4.0 * n_w
    e = _ray_edges(crop.mask_s, crop.ct_s, origins, np.repeat(n_w[None], len(origins), 0), 8.0)
    ok = e.found & (np.abs(e.t_mm - 4.0) < 3.0)
    if ok.sum() < 8:
        return None, None, None
    q_w = origins[ok] + e.t_mm[ok, None] * n_w
    q_loc = w.local(q_w)
    sgn = 1.0 if top else -1.0
    coef, rms, keep = _fit_plane_z(q_loc[:, :2], sgn * q_loc[:, 2])
    a2, b2, c2 = coef
    n2_loc = _unit([-a2, -b2, 1.0]) if top else _unit([-a2, -b2, -1.0])
    from_ct = float(np.mean(e.from_ct[ok][keep])) if keep.any() else 0.0
    # footprint near the plane
    loc = w.local(crop.points)
    body = loc[loc[:, 1] < w.wall_y] if w.canal_ok else loc
    if core is not None:
        inside = core.contains(body[:, :2])
        if inside.sum() > 50:
            body = body[inside]
    zpl = sgn * (body[:, :2] @ np.array([a2, b2]) + c2)
    # the layer of the body just under the plane (thin: the pedicles start ~2 mm below it)
    layer = max(1.5, 0.75 * _voxel_extent(crop, w.R[:, 2]))
    near = body[np.abs(body[:, 2] - zpl) < layer]
    if len(near) < 10:
        near = body
    cxy = near[:, :2].mean(axis=0) if axis_xy is None else np.asarray(axis_xy, float)
    cz = sgn * (cxy @ np.array([a2, b2]) + c2)
    centre_loc = np.array([cxy[0], cxy[1], cz])
    # the mid-sagittal line, in a layer at least one voxel thick along the axis so that a
    # plane oblique to thick slices keeps voxels all along it (L4 on 0.8 x 0.8 x 2 mm voxels:
    # the thin layer lost the front and back of the line, 31.5 mm long for the bone's 34.4;
    # now 34.1)
    layer_ap = max(layer, _voxel_extent(crop, w.R[:, 2]))
    near_ap = body[np.abs(body[:, 2] - zpl) < layer_ap]
    mid = near_ap[np.abs(near_ap[:, 0] - cxy[0]) < 2.0]
    ap_len = float(np.ptp((mid if len(mid) > 5 else near)[:, 1]) + _voxel_extent(crop, w.R[:, 1]))
    lr_len = float(np.ptp(near[:, 0]) + _voxel_extent(crop, w.R[:, 0]))
    flags, reasons = [], []
    conf = 1.0
    if from_ct < 0.5:
        flags.append("edges_from_label_map")
        reasons.append("surface placed on the label map's boundary (+-half a voxel), not the CT")
        conf = min(conf, 0.8)
    if rms > 1.5:
        flags.append("irregular_surface")
        reasons.append(f"the surface departs from a plane by {rms:.1f} mm rms")
        conf = min(conf, 0.6)
    if keep.sum() < 20:
        flags.append("few_points")
        reasons.append(f"only {int(keep.sum())} surface points")
        conf = min(conf, 0.6)
    ep = Endplate(centre_world_mm=vec3(w.world(centre_loc)), normal_world=vec3(w.R @ n2_loc),
                  ap_length_mm=ap_len, lr_width_mm=lr_len, fit_rms_mm=rms, n_points=int(keep.sum()),
                  edges="ct" if from_ct >= 0.5 else "mask", confidence=conf, flags=flags,
                  reason="; ".join(reasons) or None)
    return ep, w.world(centre_loc), _Footprint(near[:, :2])


def _voxel_extent(crop: _Crop, direction: NDArray) -> float:
    """Extent of one voxel along a world direction (mm)."""
    return float(np.abs(np.asarray(direction) @ crop.T_world_from_crop[:3, :3]).sum())


# ============================================================================ pedicles
@dataclass
class _Sweep:
    s: NDArray
    area: NDArray
    centroid: NDArray  # (S, 3) world
    valid: NDArray[np.bool_]


def _sweep(mask: _Sampler, P0: NDArray, a: NDArray, cc: NDArray) -> _Sweep:
    e1 = _unit(np.cross(a, cc))
    e2 = _unit(np.cross(a, e1))
    g = np.arange(-SECTION_RADIUS_MM, SECTION_RADIUS_MM + SECTION_PIXEL_MM / 2, SECTION_PIXEL_MM)
    U, V = np.meshgrid(g, g, indexing="ij")
    disk = U * U + V * V <= SECTION_RADIUS_MM ** 2
    rim = disk & (U * U + V * V > (SECTION_RADIUS_MM - 2 * SECTION_PIXEL_MM) ** 2)
    s = np.arange(-SWEEP_HALF_MM, SWEEP_HALF_MM + SWEEP_STEP_MM / 2, SWEEP_STEP_MM)
    pts = (P0[None, None, None, :] + s[:, None, None, None] * a + U[None, :, :, None] * e1
           + V[None, :, :, None] * e2)
    vals = mask(pts) >= 0.5
    c = len(g) // 2
    area = np.full(len(s), np.inf)
    cent = np.full((len(s), 3), np.nan)
    valid = np.zeros(len(s), bool)
    near = (U * U + V * V) <= 9.0
    for i in range(len(s)):
        sec = vals[i] & disk
        if not sec[near].any():
            continue
        lab, n = ndimage.label(sec)
        if lab[c, c] > 0:
            k = lab[c, c]
        else:  # the component nearest the axis within 3 mm
            cand = lab[near & sec]
            d2 = (U * U + V * V)[near & sec]
            k = int(cand[np.argmin(d2)])
        comp = lab == k
        area[i] = comp.sum() * SECTION_PIXEL_MM ** 2
        cent[i] = P0 + s[i] * a + U[comp].mean() * e1 + V[comp].mean() * e2
        valid[i] = not (comp & rim).any()
    return _Sweep(s, area, cent, valid)


def _contiguous(sel: NDArray[np.bool_], i: int) -> NDArray[np.bool_]:
    """The run of True values of `sel` that contains index `i`."""
    run = np.zeros_like(sel)
    j = i
    while j >= 0 and sel[j]:
        run[j] = True
        j -= 1
    j = i + 1
    while j < len(sel) and sel[j]:
        run[j] = True
        j += 1
    return run


def _find_isthmus(crop: _Crop, w: _Work, side: str, *, trial_tpa_rad: float = TRIAL_TPA_RAD
                  ) -> tuple[NDArray, NDArray, float, list[str]] | None:
    """(centre, axis posterior->anterior, area_mm2, notes) of one pedicle's isthmus.

    A sweep of planes perpendicular to a trial axis measures the bone's cross-section around
    the axis; the isthmus is the least-area section (parabola through its neighbours), its
    centre that section's centroid. The axis is the line through the centroids of the
    sections within 6 mm of the isthmus that are clean (not reaching the 12 mm section rim)
    and at most twice its area, refitted without the centroids more than AXIS_FIT_TOL_MM off
    it cranio-caudally (the sections just behind the isthmus take in the arch above or
    below it: their centroids sat 1-3 mm off on the small phantom's T11-T12); the trial axis
    moves 70% of the way to it for 3 rounds, then 35%, 8 rounds at most. Without the refit
    and the damping, the small phantom's T11 axis swung between rounds (sagittal angle 17,
    -1, 18, -3, ... degrees; truth 7) and stopped wherever the 8th round left it: 6-10
    degrees off at T11-T12, 2.2 at most now.
    """
    sgn = _SIDES[side]
    loc = w.local(crop.points)
    z0, z1 = w.canal_z
    if z1 - z0 < 2.0:
        z0, z1 = z0 - 4.0, z1 + 4.0
    lat = sgn * loc[:, 0]
    hw = w.canal_halfwidth
    sel = ((loc[:, 2] >= z0) & (loc[:, 2] <= z1) & (lat >= hw - 1.0) & (lat <= hw + 14.0)
           & (loc[:, 1] >= w.wall_y - 3.0) & (loc[:, 1] <= w.wall_y + w.canal_half_ap))
    if sel.sum() < 10:
        return None
    P = crop.points[sel].mean(axis=0)
    lr, ap, cc = w.R[:, 0], w.R[:, 1], w.R[:, 2]
    a = _unit(-ap * math.cos(trial_tpa_rad) - sgn * lr * math.sin(trial_tpa_rad))
    notes: list[str] = []
    area, clean = float("nan"), False
    for it in range(8):
        sw = _sweep(crop.mask_s, P, a, cc)
        ok = sw.valid & np.isfinite(sw.area)
        clean = ok.sum() >= 3
        if not clean:
            ok = np.isfinite(sw.area)
            if ok.sum() < 3:
                return None
        i_min = int(np.argmin(np.where(ok, sw.area, np.inf)))
        area = float(sw.area[i_min])
        s_star = float(sw.s[i_min])
        near = ok & (np.abs(sw.s - s_star) <= 1.5)
        if near.sum() >= 4:
            A = np.polyfit(sw.s[near], sw.area[near], 2)
            if A[0] > 0:
                s_star = float(np.clip(-A[1] / (2 * A[0]), s_star - SWEEP_STEP_MM, s_star + SWEEP_STEP_MM))
                area = float(np.polyval(A, s_star))
        cs, ss = sw.centroid[ok], sw.s[ok]
        C = np.array([np.interp(s_star, ss, cs[:, j]) for j in range(3)])
        run = _contiguous(ok & (np.abs(sw.s - s_star) <= AXIS_RUN_MM) & (sw.area <= AXIS_RUN_AREA * area), i_min)
        a_new = a
        if run.sum() >= 4:
            _, d = _robust_line_fit(sw.centroid[run], AXIS_FIT_TOL_MM, _unit(cc - (cc @ a) * a))
            if d @ a < 0:
                d = -d
            a_new = _unit(a + (0.7 if it < 3 else 0.35) * (d - a))
        moved = float(np.linalg.norm(C - P))
        turned = float(np.arccos(np.clip(a_new @ a, -1.0, 1.0)))
        P, a = C, a_new
        if it >= 2 and moved < 0.05 and turned < math.radians(0.1):
            break
    if not clean or abs(float(np.dot(P - C, a))) > SWEEP_HALF_MM - 0.6:
        notes.append("no clean narrowest section along the pedicle (it merges with other bone)")
    # the isthmus must stay beside the canal, between the body and the arch: a search that
    # wandered into the lamina or the body found something else
    lp = w.local(P)
    cx = float(w.local(w.canal_centroid)[0])
    if not (sgn * (lp[0] - cx) >= hw - 3.0 and w.wall_y - 8.0 <= lp[1] <= w.wall_y + 2.0 * w.canal_half_ap + 3.0):
        return None
    return P, a, area, notes


def _narrowest_width(crop: _Crop, C: NDArray, a: NDArray, wd: NDArray, offs: list[NDArray]) -> NDArray:
    """Move the isthmus centre along the axis to the narrowest width within
    +-ISTHMUS_WIDTH_SEARCH_MM (parabola through the least width and its neighbours).

    The least-area section is not the narrowest one where the pedicle's height changes
    faster than its width (S1: the area's minimum sat 0.5-1 mm behind the narrowest width,
    which is where the isthmus is defined, and its width read 0.3-0.5 mm wide). Only where
    every chord has CT edges; else the centre stays."""
    s = np.arange(-ISTHMUS_WIDTH_SEARCH_MM, ISTHMUS_WIDTH_SEARCH_MM + 1e-9, 0.5)
    widths = np.full(len(s), np.nan)
    for i, si in enumerate(s):
        wi, _, _, from_ct = _chord(crop.mask_s, crop.ct_s, C + si * a, wd, offsets=offs, t_max_mm=20.0)
        if wi is not None and from_ct:
            widths[i] = wi
    # only on CT edges: the label map's stair steps (+-half a voxel) are larger than the
    # tenths of a mm the width changes by along a pedicle (the chest's 0.7 x 0.7 x 2.5 mm
    # labels moved an L1 isthmus 2 mm, into a section whose height ran into other bone)
    if not np.isfinite(widths).all():
        return C
    i = int(np.nanargmin(widths))
    if i in (0, len(s) - 1):
        return C  # no minimum inside the window: keep the least-area section
    y0, y1, y2 = widths[i - 1], widths[i], widths[i + 1]
    den = y0 - 2.0 * y1 + y2
    ds = 0.5 * (y0 - y2) / den if den > 1e-9 else 0.0
    C_new = C + (float(s[i]) + float(np.clip(ds, -0.5, 0.5)) * 0.5) * a
    # ... and only within the pedicle: a section whose height runs into other bone (a
    # transverse process, the lamina) is no isthmus
    hd = _unit(np.cross(a, wd))
    h_old, *_ = _chord(crop.mask_s, crop.ct_s, C, hd, t_max_mm=25.0)
    h_new, *_ = _chord(crop.mask_s, crop.ct_s, C_new, hd, t_max_mm=25.0)
    if h_old is None or h_new is None or h_new > h_old + ISTHMUS_HEIGHT_JUMP_MM:
        return C
    return C_new


def _pedicle(crop: _Crop, w: _Work, side: str) -> Pedicle | None:
    found = None
    for trial_deg in (18.0, 35.0, 5.0):  # the usual convergence first, then a sacral and a thoracic one
        found = _find_isthmus(crop, w, side, trial_tpa_rad=math.radians(trial_deg))
        if found is not None:
            break
    if found is None:
        return None
    C, a, area, notes = found
    sgn = _SIDES[side]
    lr, ap, cc = w.R[:, 0], w.R[:, 1], w.R[:, 2]
    wd = _unit(np.cross(cc, a))
    if sgn * (wd @ lr) < 0:
        wd = -wd
    hd = _unit(np.cross(a, wd))
    if hd @ cc < 0:
        hd = -hd
    offs_w = [dh * hd + da * a for dh in (-0.4, 0.0, 0.4) for da in (-0.4, 0.0, 0.4) if dh or da]
    offs_h = [dw * wd + da * a for dw in (-0.4, 0.0, 0.4) for da in (-0.4, 0.0, 0.4) if dw or da]
    C = _narrowest_width(crop, C, a, wd, offs_w)
    width, _, _, w_ct = _chord(crop.mask_s, crop.ct_s, C, wd, offsets=offs_w, t_max_mm=20.0)
    height, _, _, h_ct = _chord(crop.mask_s, crop.ct_s, C, hd, offsets=offs_h, t_max_mm=25.0)
    e = _ray_edges(crop.mask_s, crop.ct_s, np.array([C, C]), np.array([a, -a]), 90.0, step_mm=0.1)
    if width is None or height is None:
        return None
    flags, reasons = [], []
    conf = 1.0
    if not (e.found[0] and e.found[1]):
        flags.append("chord_open")
        reasons.append("the axis does not leave the bone within 90 mm")
        conf = min(conf, 0.5)
    t_ant = float(e.t_mm[0]) if e.found[0] else 90.0
    t_post = float(e.t_mm[1]) if e.found[1] else 90.0
    entry = C - t_post * a
    exit_ = C + t_ant * a
    # angles in the vertebra's frame
    al, aa, ac = a @ lr, a @ ap, a @ cc
    tpa = math.degrees(math.atan2(-sgn * al, -aa))
    sag = math.degrees(math.atan2(-ac, math.hypot(al, aa)))
    if not (w_ct and h_ct):
        flags.append("edges_from_label_map")
        reasons.append("pedicle edges placed on the label map (+-half a voxel), not the CT")
        conf = min(conf, 0.8)
    for n in notes:
        flags.append("isthmus_uncertain")
        reasons.append(n)
        conf = min(conf, 0.6)
    # cut by the field of view?
    probe = np.array([C + r * v for r in (0.0, 6.0) for v in (wd, -wd, hd, -hd, a, -a)])
    if crop.cut_sides and not crop.mask_s.inside_grid(probe).all() or _near_border(crop, probe):
        flags.append("cut_by_field_of_view")
        reasons.append("the pedicle reaches the edge of the scanned volume")
        conf = min(conf, 0.3)
    if not (1.5 <= width <= 30.0 and 3.0 <= height <= 35.0):
        flags.append("implausible_size")
        reasons.append(f"width {width:.1f} mm, height {height:.1f} mm are outside anatomical ranges")
        conf = min(conf, 0.3)
    return Pedicle(side=side, isthmus_centre_world_mm=vec3(C), axis_world=vec3(a), width_direction_world=vec3(wd),
                   height_direction_world=vec3(hd), width_mm=width, height_mm=height, isthmus_area_mm2=area,
                   transverse_angle_deg=tpa, sagittal_angle_deg=sag, chord_length_mm=t_ant + t_post,
                   entry_world_mm=vec3(entry), exit_world_mm=vec3(exit_), edges="ct" if (w_ct and h_ct) else "mask",
                   confidence=conf, flags=flags, reason="; ".join(dict.fromkeys(reasons)) or None)


def _near_border(crop: _Crop, pts_world: NDArray, margin_vox: int = 1) -> bool:
    """True when any point lies within `margin_vox` of a face of the full grid that the crop
    reaches (the vertebra may continue outside the scan there)."""
    if not crop.cut_sides:
        return False
    idx = apply_affine(np.linalg.inv(crop.T_world_from_crop), np.asarray(pts_world, float))
    shape = np.array(crop.mask.shape)
    for ax in range(3):
        if crop.boundary_index[(slice(None),) * ax + (0,)].any() and np.any(idx[:, ax] < margin_vox + 0.5):
            return True
        if crop.boundary_index[(slice(None),) * ax + (-1,)].any() and np.any(idx[:, ax] > shape[ax] - 1.5 - margin_vox):
            return True
    return False


# ============================================================================ canal section
def canal_section(mask: _Sampler, ct: _Sampler | None, centre_guess: NDArray, R: NDArray, *,
                  half_mm: float = 30.0, step_mm: float = 0.2) -> dict | None:
    """The foramen in the plane through `centre_guess` perpendicular to R[:, 2].

    Returns a dict: area_mm2, centroid (world), centre (world: midpoint of the widest
    left-right chord), interpedicular_mm, ap_mm, enclosed, closing_mm, from_ct; or None.
    """
    lr, ap = R[:, 0], R[:, 1]
    g = np.arange(-half_mm, half_mm + step_mm / 2, step_mm)
    U, V = np.meshgrid(g, g, indexing="ij")
    pts = centre_guess + U[..., None] * lr + V[..., None] * ap
    bone = mask(pts) >= 0.5
    c = len(g) // 2
    comp = None
    enclosed, closing = True, 0.0
    for closing_mm in (0.0, 1.5, 3.0):
        b = ndimage.binary_closing(bone, _disk(closing_mm / step_mm), border_value=0) | bone if closing_mm else bone
        holes = ndimage.binary_fill_holes(b) & ~b
        lab, n = ndimage.label(holes)
        if n == 0:
            continue
        if lab[c, c] > 0:
            k = lab[c, c]
        else:
            near = holes & ((U * U + V * V) <= 64.0)
            if not near.any():
                continue
            d2 = (U * U + V * V)[near]
            k = int(lab[near][np.argmin(d2)])
        cand = lab == k
        if cand.sum() * step_mm ** 2 >= MIN_CANAL_AREA_MM2:
            comp = cand
            enclosed, closing = closing_mm == 0.0, closing_mm
            break
    if comp is None:
        return None
    area = float(comp.sum() * step_mm ** 2)
    cu, cv = float(U[comp].mean()), float(V[comp].mean())
    # widths per row (rows = constant v)
    rows = np.nonzero(comp.any(axis=0))[0]
    widths = np.array([np.ptp(g[comp[:, j]]) + step_mm for j in rows])
    mids = np.array([0.5 * (g[comp[:, j]].min() + g[comp[:, j]].max()) for j in rows])
    wmax = widths.max()
    band = widths >= 0.97 * wmax
    v_c = float(g[rows[band]].mean())
    u_c = float(mids[band].mean())
    centre = centre_guess + u_c * lr + v_c * ap
    # CT-refined chords: widths of rows near the widest, AP through the centre
    vs = np.arange(-2.0, 2.0 + 1e-9, 0.25)
    starts = np.array([centre + v * ap for v in vs])
    e = _ray_edges(mask, ct, np.concatenate([starts, starts]),
                   np.array([lr] * len(vs) + [-lr] * len(vs)), 30.0, rising=True)
    n = len(vs)
    okw = e.found[:n] & e.found[n:]
    wv = e.t_mm[:n] + e.t_mm[n:]
    if okw.sum() >= 5:
        A = np.polyfit(vs[okw], wv[okw], 2)
        vmax = -A[1] / (2 * A[0]) if A[0] < 0 else None
        ipd = float(np.polyval(A, vmax)) if vmax is not None and abs(vmax) <= 2.0 else float(np.max(wv[okw]))
    else:
        ipd = float(wmax)
    offs = [du * lr for du in (-0.4, 0.4)]
    ap_len, _, _, ap_ct = _chord(mask, ct, centre, ap, offsets=offs, rising=True, t_max_mm=30.0)
    from_ct = bool(np.mean(e.from_ct[:n][okw] & e.from_ct[n:][okw]) >= 0.5) and ap_ct if okw.any() else False
    return {"area_mm2": area, "centroid": centre_guess + cu * lr + cv * ap, "centre": centre,
            "interpedicular_mm": ipd, "ap_mm": ap_len, "enclosed": enclosed, "closing_mm": closing,
            "from_ct": from_ct}


# ============================================================================ tips
def _mesh_faces(mask_crop: NDArray[np.bool_], T_world_from_crop: NDArray, sigma_mm: float,
                sub: tuple[slice, slice, slice] | None = None) -> tuple[NDArray, NDArray, NDArray]:
    """Face centroids (F, 3), unit outward normals (F, 3) and areas (F,) in world mm of the
    (lightly smoothed) mask's 0.5 isosurface."""
    from skimage.measure import marching_cubes

    sub = sub or tuple(slice(0, n) for n in mask_crop.shape)
    m = np.pad(mask_crop[sub].astype(np.float32), 1)
    sp = np.linalg.norm(T_world_from_crop[:3, :3], axis=0)
    if sigma_mm > 0:
        m = ndimage.gaussian_filter(m, sigma_mm / sp, mode="constant")
    if m.max() < 0.5 or m.min() > 0.5:
        return np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0)
    verts, faces, _, _ = marching_cubes(m, 0.5)
    verts = verts - 1 + np.array([s.start for s in sub])
    vw = apply_affine(T_world_from_crop, verts)
    tri = vw[faces]
    n = np.cross(tri[:, 2] - tri[:, 0], tri[:, 1] - tri[:, 0])  # outward for skimage's winding
    if np.linalg.det(T_world_from_crop[:3, :3]) < 0:
        n = -n
    area = 0.5 * np.linalg.norm(n, axis=1)
    ok = area > 0
    n = n[ok] / (2 * area[ok, None])
    return tri[ok].mean(axis=1), n, area[ok]


def _spinous_tip(crop: _Crop, w: _Work) -> Point | None:
    if not w.canal_ok:
        return None
    loc = w.local(crop.points)
    cx = float(w.local(w.canal_centroid)[0])
    sel = (loc[:, 1] > w.canal_back_y + 2.0) & (np.abs(loc[:, 0] - cx) < 8.0)
    if sel.sum() < 10:
        return None
    cand = loc[sel]
    c_loc = w.local(w.canal_centroid)
    d = cand - c_loc
    d[:, 0] = 0.0
    far = cand[int(np.argmax(np.linalg.norm(d, axis=1)))]
    u = _unit(np.array([0.0, far[1] - c_loc[1], far[2] - c_loc[2]]))
    # surface of the posterior midline bone
    idx = np.argwhere(crop.mask)
    li = w.local(apply_affine(crop.T_world_from_crop, idx.astype(float)))
    keep = (li[:, 1] > w.canal_back_y) & (np.abs(li[:, 0] - cx) < 12.0)
    if keep.sum() < 10:
        return None
    sub_idx = idx[keep]
    lo = np.maximum(sub_idx.min(axis=0) - 2, 0)
    hi = np.minimum(sub_idx.max(axis=0) + 3, crop.mask.shape)
    sub = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    m = np.zeros_like(crop.mask)
    m[tuple(sub_idx.T)] = True
    fc, fn, fa = _mesh_faces(m, crop.T_world_from_crop, 0.6 * float(crop.spacing.min()), sub)
    if len(fa) == 0:
        return None
    fc_l = w.local(fc)
    fn_l = fn @ w.R
    tip = None
    for it in range(3):
        proj = (fc_l - c_loc) @ u
        pmax = proj.max()
        window = 8.0 if it == 0 else 3.0
        cos_min = 0.5 if it == 0 else 0.8
        s = (proj >= pmax - window) & (fn_l @ u > cos_min)
        if s.sum() < 3:
            break
        wts = fa[s]
        tip = (fc_l[s] * wts[:, None]).sum(axis=0) / wts.sum()
        u_new = _unit((fn_l[s] * wts[:, None]).sum(axis=0))
        u_new[0] = 0.0
        u = _unit(u_new)
    if tip is None:
        return None
    tip_w = w.world(tip)
    flags, reason, conf = [], None, 1.0
    if _near_border(crop, tip_w[None], 2):
        flags, reason, conf = ["cut_by_field_of_view"], "the process reaches the edge of the scanned volume", 0.3
    return Point(position_world_mm=vec3(tip_w), confidence=conf, flags=flags, reason=reason)


def _transverse_tip(crop: _Crop, w: _Work, side: str) -> Point | None:
    """End of the transverse process's long axis: the axis is the principal direction of its
    distal 10 mm (cut perpendicular to the axis, three rounds, starting from the lr axis);
    the tip is where that axis leaves the bone."""
    sgn = _SIDES[side]
    loc = w.local(crop.points)
    cx = float(w.local(w.canal_centroid)[0]) if w.canal_ok else 0.0
    lat = sgn * (loc[:, 0] - cx)
    sel = (lat > w.canal_halfwidth + 6.0) & (loc[:, 1] > w.wall_y)
    if sel.sum() < 10:
        return None
    cand = loc[sel]
    d = np.array([sgn, 0.0, 0.0])
    reach = float(lat[sel].max() - (w.canal_halfwidth + 6.0))
    window = float(np.clip(0.5 * reach, 4.0, 10.0))
    for _ in range(3):
        proj = cand @ d
        distal = cand[proj >= proj.max() - window]
        if len(distal) < 10:
            break
        centre = distal.mean(axis=0)
        _, sv, vt = np.linalg.svd(distal - centre, full_matrices=False)
        d_new = vt[0] if vt[0][0] * sgn > 0 else -vt[0]
        if abs(d_new[0]) < 0.5 or sv[0] < 1.3 * sv[1]:  # not clearly elongated sideways
            break
        d = d_new
    d_w = w.R @ d
    proj = cand @ d
    cap = cand[proj >= proj.max() - 1.0].mean(axis=0)  # the far end, then onto its surface
    # the surface point farthest along the axis: parallel rays around the end's voxels (the
    # centroid of the last ~1 mm of voxels of a pointed end sits up to 1 mm off its apex);
    # the apex is the mean of the edge points within TIP_APEX_MM of the farthest
    e1 = _unit(np.cross(d_w, w.R[:, 2] if abs(d_w @ w.R[:, 2]) < 0.9 else w.R[:, 1]))
    e2 = np.cross(d_w, e1)
    off = np.arange(-TIP_SEARCH_MM, TIP_SEARCH_MM + 1e-9, 0.5)
    # across thick slices the apex is left where the voxels' centroid puts it (on 2 mm slices
    # the farthest-reaching rays all lie in one slice: up to 1.1 mm off in cc)
    thin_e2 = float(np.linalg.norm(e2 @ crop.T_world_from_crop[:3, :3])) <= MAX_CT_SAMPLE_MM
    uu, vv = np.meshgrid(off, off if thin_e2 else [0.0], indexing="ij")
    starts = w.world(cap) - 3.0 * d_w + uu.reshape(-1, 1) * e1 + vv.reshape(-1, 1) * e2
    e = _ray_edges(crop.mask_s, crop.ct_s, starts, np.repeat(d_w[None], len(starts), 0), 7.0)
    if e.found.any():
        pts = starts[e.found] + e.t_mm[e.found, None] * d_w
        reach = pts @ d_w
        tip_w = pts[reach >= reach.max() - TIP_APEX_MM].mean(axis=0)
    else:
        tip_w = w.world(cap) + 0.5 * _voxel_extent(crop, d_w) * d_w
    flags, reason, conf = [], None, 1.0
    if _near_border(crop, tip_w[None], 2):
        flags, reason, conf = ["cut_by_field_of_view"], "the process reaches the edge of the scanned volume", 0.3
    return Point(position_world_mm=vec3(tip_w), confidence=conf, flags=flags, reason=reason)


# ============================================================================ facets
def _grad_at(g: NDArray, idx: NDArray, shape: tuple[int, ...]) -> NDArray[np.float64]:
    """Scatter per-voxel vectors `g` (N, 3) at indices `idx` into an array of `shape` + (3,)."""
    out = np.zeros((*shape, 3))
    out[tuple(idx.T)] = g
    return out


def _joint_slab(comp: NDArray[np.bool_], T: NDArray, g_full: NDArray, ma: NDArray[np.bool_],
                mb: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """The planar part of a facet joint's contact zone, where the two articular surfaces face
    each other.

    Where two vertebrae also come close beside the joint (a slipped vertebra's arch against
    the articular process below), the zone within reach of both bones runs on around a
    corner, and its centroid leaves the joint; beyond a process's rounded end the other bone
    is still within reach, though not across the joint. So: for each dominant separating
    direction n (the gradient of the two distance maps, mean-shifted within FACET_PLANE_COS),
    the voxels separated along about n, within FACET_SLAB_MM of their median plane, with
    bone a within FACET_REACH_MM behind along -n and bone b in front along +n; the direction
    that keeps the most voxels wins, and its largest connected part is the joint."""
    cidx = np.argwhere(comp)
    if len(cidx) < 8:
        return comp
    pw = apply_affine(T, cidx.astype(float))
    g = g_full[tuple(cidx.T)]
    gn = np.linalg.norm(g, axis=1)
    ok = gn > 1e-6
    if ok.sum() < 8:
        return comp
    u = np.zeros_like(g)
    u[ok] = g[ok] / gn[ok, None]
    # a behind / b in front along a direction: looked up on the voxel grid
    Tinv = np.linalg.inv(T)
    shape = np.array(comp.shape)
    steps = np.arange(0.0, FACET_REACH_MM + 1e-9, 0.5)

    def facing(n: NDArray) -> NDArray[np.bool_]:
        n_idx = Tinv[:3, :3] @ n
        has = []
        for sgn, mask in ((-1.0, ma), (1.0, mb)):
            h = np.zeros(len(cidx), bool)
            for t in steps:
                q = np.rint(cidx + sgn * t * n_idx).astype(int)
                inside = np.all((q >= 0) & (q < shape), axis=1)
                h[inside] |= mask[tuple(q[inside].T)]
            has.append(h)
        return has[0] & has[1]

    best, best_n = None, -1
    seeds = np.flatnonzero(ok)[np.linspace(0, ok.sum() - 1, min(12, int(ok.sum()))).astype(int)]
    tried: list[NDArray] = []
    for i in seeds:
        n = u[i]
        for _ in range(6):  # mean shift of the directions
            near = ok & (u @ n >= FACET_PLANE_COS)
            if near.sum() < 4:
                break
            n = _unit(u[near].sum(axis=0))
        if any(float(n @ m) > 0.99 for m in tried):
            continue
        tried.append(n)
        dirs_ok = ok & (u @ n >= FACET_PLANE_COS)
        if dirs_ok.sum() < 4:
            continue
        off = float(np.median(pw[dirs_ok] @ n))
        keep = dirs_ok & (np.abs(pw @ n - off) <= FACET_SLAB_MM) & facing(n)
        if keep.sum() > best_n:
            best, best_n = keep, int(keep.sum())
    if best is None or best_n < 4:
        return comp
    for _ in range(2):  # refine: the plane through the kept voxels
        cen = pw[best].mean(axis=0)
        n = np.linalg.svd(pw[best] - cen, full_matrices=False)[2][2]
        n = n if float(n @ u[best].sum(axis=0)) > 0 else -n
        keep = ok & (u @ n >= FACET_PLANE_COS) & (np.abs((pw - cen) @ n) <= FACET_SLAB_MM) & facing(n)
        if keep.sum() < 4:
            break
        best = keep
    sub = np.zeros_like(comp)
    sub[tuple(cidx[best].T)] = True
    lab, nl = ndimage.label(sub, structure=np.ones((3, 3, 3)))
    if nl > 1:
        sub = lab == int(np.argmax(np.bincount(lab.ravel())[1:])) + 1
    return sub


def _facet_joints(labels: Volume, a: _Crop, wa: _Work, b: _Crop, wb: _Work) -> tuple[dict[str, Facet], dict[str, Facet]]:
    """Facet joints between vertebrae a and b: (facets of a, facets of b), keyed
    "superior_left" etc. from each vertebra's own point of view."""
    if not (wa.canal_ok and wb.canal_ok):
        return {}, {}
    # common window: the overlap of the two padded crops, in full-grid indices
    lo = np.maximum(a.lo, b.lo)
    hi = np.minimum(a.lo + np.array(a.mask.shape), b.lo + np.array(b.mask.shape))
    if np.any(hi - lo < 3):
        return {}, {}
    sl = tuple(slice(int(x), int(y)) for x, y in zip(lo, hi))
    arr = labels.array[sl]
    ma, mb = arr == a.label_id, arr == b.label_id
    if not ma.any() or not mb.any():
        return {}, {}
    sp = labels.spacing_mm
    da = ndimage.distance_transform_edt(~ma, sampling=sp)
    db = ndimage.distance_transform_edt(~mb, sampling=sp)
    J = (da <= FACET_REACH_MM) & (db <= FACET_REACH_MM) & (da + db <= FACET_SPAN_MM)
    if not J.any():
        return {}, {}
    T = labels.affine.copy()
    T[:3, 3] = labels.world_from_index(lo)
    idx = np.argwhere(J)
    pw = apply_affine(T, idx.astype(float))
    # direction from a's surface towards b's at each voxel: a facet joint separates the two
    # processes sideways or front-to-back, not one bone sitting on top of the other
    g = np.stack([np.gradient(da - db, axis=ax)[J] / sp[ax] for ax in range(3)], axis=1)
    g = g @ labels.direction.T
    gn = np.linalg.norm(g, axis=1)
    vertical = np.abs(g @ wa.R[:, 2]) > FACET_MAX_CC_COS * np.maximum(gn, 1e-9)
    la = wa.local(pw)
    cxa = float(wa.local(wa.canal_centroid)[0])
    behind = la[:, 1] > wa.wall_y + 2.0
    beside = np.abs(la[:, 0] - cxa) > 0.5 * wa.canal_halfwidth
    keep = behind & beside & ~vertical
    out_a: dict[str, Facet] = {}
    out_b: dict[str, Facet] = {}
    a_above = (wb.o - wa.o) @ wa.R[:, 2] < 0  # is a cranial to b?
    vox = float(np.prod(sp))
    for side, sgn in _SIDES.items():
        s_sel = keep & (sgn * (la[:, 0] - cxa) > 0)
        if s_sel.sum() < 3:
            continue
        sub = np.zeros(J.shape, bool)
        sub[tuple(idx[s_sel].T)] = True
        lab, n = ndimage.label(sub, structure=np.ones((3, 3, 3)))
        sizes = np.bincount(lab.ravel())[1:]
        k = int(np.argmax(sizes)) + 1
        comp = lab == k
        comp = _joint_slab(comp, T, _grad_at(g, idx, J.shape), ma, mb)
        cidx = np.argwhere(comp)
        cw = apply_affine(T, cidx.astype(float))
        centre = cw.mean(axis=0)
        if len(cw) >= 4:
            _, _, vt = np.linalg.svd(cw - centre, full_matrices=False)
            normal = vt[2]
        else:
            normal = _unit(wb.o - wa.o)
        in_a = ma[comp]
        in_b = mb[comp]
        if in_a.any() and in_b.any():
            if (cw[in_b].mean(axis=0) - cw[in_a].mean(axis=0)) @ normal < 0:
                normal = -normal
        elif (wb.o - wa.o) @ normal < 0:
            normal = -normal
        gap_vox = comp & ~ma & ~mb
        # distances run to the nearest voxel centre, half a voxel beyond each surface
        gap = max(float(np.median((da + db)[gap_vox])) - float(np.mean(sp)), 0.0) if gap_vox.any() else 0.0
        # contact area: the joint's voxels projected on its plane, counted on cells of the
        # voxels' mean size (approximate: ~1 cell of rim)
        h = float(np.cbrt(vox))
        e1 = _unit(np.cross(normal, [1.0, 0.0, 0.0] if abs(normal[0]) < 0.9 else [0.0, 1.0, 0.0]))
        e2 = np.cross(normal, e1)
        cells = np.unique(np.floor(np.stack([cw @ e1, cw @ e2], axis=1) / h).astype(np.int64), axis=0)
        area = float(len(cells) * h * h)
        conf = 1.0 if comp.sum() * vox >= 20.0 else 0.5
        flags = [] if conf == 1.0 else ["small_contact"]
        reason = None if conf == 1.0 else "the joint space found is small"
        # side of b: in b's own frame
        lb = wb.local(centre)
        cxb = float(wb.local(wb.canal_centroid)[0])
        side_b = "left" if lb[0] - cxb > 0 else "right"
        kind_a = "inferior" if a_above else "superior"
        kind_b = "superior" if a_above else "inferior"
        out_a[f"{kind_a}_{side}"] = Facet(kind=kind_a, side=side, neighbour_label_id=b.label_id,
                                          centre_world_mm=vec3(centre), normal_world=vec3(normal), gap_mm=gap,
                                          contact_area_mm2=area, confidence=conf, flags=flags, reason=reason)
        out_b[f"{kind_b}_{side_b}"] = Facet(kind=kind_b, side=side_b, neighbour_label_id=a.label_id,
                                            centre_world_mm=vec3(centre), normal_world=vec3(-normal), gap_mm=gap,
                                            contact_area_mm2=area, confidence=conf, flags=flags, reason=reason)
    return out_a, out_b


# ============================================================================ one vertebra
@dataclass
class _State:
    crop: _Crop
    work: _Work
    lm: VertebraLandmarks


def _initial_frame(crop: _Crop, cc_hint: NDArray | None) -> _Work:
    cc = _unit(cc_hint) if cc_hint is not None else np.array([0.0, 0.0, 1.0])
    R = _frame_from(cc, np.array([0.0, 1.0, 0.0]) if abs(cc[1]) < 0.9 else np.array([0.0, 0.0, -1.0]))
    return _Work(R=R, o=crop.points.mean(axis=0))


def _analyse(ct: Volume | None, labels: Volume, label_id: int, name: str | None, cc_hint: NDArray | None,
             bbox=None) -> _State:
    crop = _make_crop(ct, labels, label_id, bbox)
    w = _initial_frame(crop, cc_hint)
    for _ in range(4):
        turned = _update_frame(crop, w, LOCAL_STEP_MM)
        if turned < math.radians(0.3):
            break
    _find_canal(crop, w, LOCAL_STEP_MM)
    flags: list[str] = []
    reasons: list[str] = []
    conf = 1.0
    sup, c_sup, core = _endplate_final(crop, w, True)
    inf, c_inf, core_inf = _endplate_final(crop, w, False, core)
    core = core or core_inf
    axis_xy = None
    if core is not None:  # the body's column: its centroid leaves out bone beside the body
        loc = w.local(crop.points)
        body = loc[(loc[:, 1] < w.wall_y) if w.canal_ok else np.ones(len(loc), bool)]
        inside = core.contains(body[:, :2])
        if inside.sum() > 50:
            body = body[inside]
            w.body_centroid = w.world(body.mean(axis=0))
        # the body's axis: centroid of a slab of its lower part, below the pedicles (a wedged
        # body's 3D centroid is not on its axis)
        if c_sup is not None and c_inf is not None:
            zs, zi = w.local(c_sup)[2], w.local(c_inf)[2]
            slab = body[(body[:, 2] > zi + 0.08 * (zs - zi)) & (body[:, 2] < zi + 0.25 * (zs - zi))]
            if len(slab) > 50:
                axis_xy = slab[:, :2].mean(axis=0)
        if axis_xy is not None:
            sup, c_sup, _ = _endplate_final(crop, w, True, None, axis_xy)
            inf, c_inf, _ = _endplate_final(crop, w, False, core, axis_xy)
    # the final frame from the refined endplates
    normals = [np.asarray(e.normal_world) * s for e, s in ((sup, 1.0), (inf, -1.0)) if e is not None]
    if normals:
        cc = _unit(np.sum(normals, axis=0))
        ap_hint = (w.canal_centroid - w.body_centroid) if w.canal_ok else w.R[:, 1]
        w.R = _frame_from(cc, ap_hint)
    origin = 0.5 * (c_sup + c_inf) if (c_sup is not None and c_inf is not None) else w.body_centroid
    w.o = np.asarray(origin, float)
    if w.canal_ok:  # canal geometry in the final frame
        _find_canal(crop, w, LOCAL_STEP_MM)
    if sup is None or inf is None:
        missing = [n for n, e in (("superior", sup), ("inferior", inf)) if e is None]
        flags.append("endplate_missing")
        reasons.append(f"{' and '.join(missing)} endplate not found (cut by the field of view or no clear surface)")
        conf = min(conf, 0.6)
    if not w.canal_ok:
        flags.append("canal_not_found")
        reasons.append("no vertebral foramen found: the ap axis is the patient's and the body cut is a guess")
        conf = min(conf, 0.4)
    pedicles = {}
    if w.canal_ok:
        for side in _SIDES:
            p = _pedicle(crop, w, side)
            if p is not None:
                pedicles[side] = p
        missing = [s for s in _SIDES if s not in pedicles]
        if missing:
            flags.append("pedicle_not_found")
            reasons.append(f"no {' or '.join(missing)} pedicle isthmus found beside the canal")
            conf = min(conf, 0.7)
    canal = None
    if w.canal_ok:
        if len(pedicles) == 2:
            c0 = 0.5 * (np.asarray(pedicles["left"].isthmus_centre_world_mm)
                        + np.asarray(pedicles["right"].isthmus_centre_world_mm))
        else:
            c0 = w.world(np.array([w.local(w.canal_centroid)[0], w.local(w.canal_centroid)[1],
                                   0.5 * (w.canal_z[0] + w.canal_z[1])]))
        lc = w.local(c0)
        lcan = w.local(w.canal_centroid)
        c0 = w.world(np.array([lcan[0], lcan[1], lc[2]]))
        sec = canal_section(crop.mask_s, crop.ct_s, c0, w.R)
        moved_mm = 0.0
        if sec is None or not sec["enclosed"]:
            # real arches often enclose the canal over a few mm only, not always level with
            # the pedicle centres: measure where it is enclosed
            z_mid = 0.5 * (w.canal_z[0] + w.canal_z[1])
            c1 = w.world(np.array([lcan[0], lcan[1], z_mid]))
            sec1 = canal_section(crop.mask_s, crop.ct_s, c1, w.R)
            if sec1 is not None and (sec is None or sec1["enclosed"]):
                sec, moved_mm = sec1, float(abs(z_mid - lc[2]))
        if sec is not None:
            cflags, creasons, cconf = [], [], 1.0
            if not sec["enclosed"]:
                cflags.append("canal_not_enclosed")
                creasons.append(f"bone does not surround the canal; a gap of up to {sec['closing_mm']} mm was closed")
                cconf = 0.6
            if len(pedicles) < 2:
                cflags.append("pedicles_missing")
                creasons.append("measured through the canal's middle slice, not the pedicles")
                cconf = min(cconf, 0.6)
            elif moved_mm > 0.5:
                cflags.append("plane_moved")
                creasons.append(f"measured {moved_mm:.1f} mm from the pedicle centres' plane, where bone encloses "
                                "the canal")
                cconf = min(cconf, 0.9)
            if not sec["from_ct"]:
                cflags.append("edges_from_label_map")
                creasons.append("canal edges placed on the label map (+-half a voxel), not the CT")
                cconf = min(cconf, 0.8)
            if _near_border(crop, np.array([sec["centre"]]), 3):
                cflags.append("cut_by_field_of_view")
                creasons.append("the canal section reaches the edge of the scanned volume")
                cconf = min(cconf, 0.3)
            canal = Canal(centre_world_mm=vec3(sec["centre"]), centroid_world_mm=vec3(sec["centroid"]),
                          plane_normal_world=vec3(w.R[:, 2]), enclosed=sec["enclosed"], closing_mm=sec["closing_mm"],
                          area_mm2=sec["area_mm2"], ap_diameter_mm=sec["ap_mm"],
                          interpedicular_mm=sec["interpedicular_mm"], confidence=cconf, flags=cflags,
                          reason="; ".join(creasons) or None)
    lev = normalize_level(name) if name else None
    spinous = _spinous_tip(crop, w)
    tps = {}
    if lev not in ("S1", "sacrum"):
        for side in _SIDES:
            tp = _transverse_tip(crop, w, side)
            if tp is not None:
                tps[side] = tp
    if crop.cut_sides:
        flags.append("cut_by_field_of_view")
        reasons.append(f"the vertebra touches the {', '.join(crop.cut_sides)} edge of the scan: "
                       "landmarks near that edge are doubtful")
        # a cut through the body (an endplate or the canal lost) leaves the frame itself in doubt
        conf = min(conf, 0.3 if (sup is None or inf is None or not w.canal_ok) else 0.5)
    frame = VertebraFrame(origin_world_mm=vec3(w.o), axis_lr_world=vec3(w.R[:, 0]), axis_ap_world=vec3(w.R[:, 1]),
                          axis_cc_world=vec3(w.R[:, 2]))
    lm = VertebraLandmarks(
        label_id=int(label_id), name=name, voxel_count=int(len(crop.points)),
        volume_mm3=float(len(crop.points) * abs(np.linalg.det(labels.affine[:3, :3]))),
        fully_in_view=not crop.cut_sides, cut_sides=crop.cut_sides, frame=frame,
        body_centroid_world_mm=vec3(w.body_centroid), superior_endplate=sup, inferior_endplate=inf,
        canal=canal, pedicles=pedicles, spinous_tip=spinous, transverse_process_tips=tps,
        confidence=conf, flags=flags, reason="; ".join(reasons) or None)
    return _State(crop, w, lm)


def _check_inputs(ct: Volume | None, labels: Volume) -> None:
    if not np.issubdtype(labels.array.dtype, np.integer):
        raise LandmarkError(f"labels must hold integer ids, got dtype {labels.array.dtype}")
    if ct is not None:
        if ct.shape != labels.shape or not np.allclose(ct.affine, labels.affine, atol=1e-3):
            raise LandmarkError(
                f"the label map ({labels.shape}) and the CT ({ct.shape}) are on different grids; "
                "import the label map with spinenav.anatomy.labelmap.import_label_map(..., ct=ct), which "
                "resamples it onto the CT grid")


def vertebra_landmarks(ct: Volume | None, labels: Volume, label_id: int, *,
                       neighbours: Iterable[int] = (), name: str | None = None) -> VertebraLandmarks:
    """Landmarks and local frame of one vertebra.

    Parameters
    ----------
    ct : Volume or None
        The CT in HU on the label map's grid; it places surfaces with sub-voxel precision.
        None: surfaces are the label map's boundaries (+-half a voxel; flagged).
    labels : Volume
        Integer label map (any ids), same grid as `ct`.
    label_id : int
        The vertebra's id in `labels`.
    neighbours : iterable of int, optional
        Ids of the adjacent vertebrae (above and/or below, any order): their masks give the
        spine's direction for the first frame estimate and the facet joints.
    name : str, optional
        Level name ("L4"); S1 gets no transverse process tips.

    Returns
    -------
    VertebraLandmarks
        World LPS mm; confidence, flags and reason say what is doubtful.

    Raises
    ------
    LandmarkError
        No voxel has `label_id`, or the CT and label map grids differ.
    """
    _check_inputs(ct, labels)
    nb = [int(n) for n in neighbours if int(n) != int(label_id)]
    cents = {}
    for n in nb:
        idx = np.argwhere(labels.array == n)
        if len(idx):
            cents[n] = labels.world_from_index(idx.mean(axis=0))
    me_idx = np.argwhere(labels.array == label_id)
    if len(me_idx) == 0:
        raise LandmarkError(f"label {label_id} has no voxels in the label map")
    me = labels.world_from_index(me_idx.mean(axis=0))
    cc_hint = _cc_hint(me, list(cents.values()))
    st = _analyse(ct, labels, int(label_id), name, cc_hint)
    for n in cents:
        other = _analyse(None, labels, n, None, cc_hint)
        fa, _ = _facet_joints(labels, st.crop, st.work, other.crop, other.work)
        st.lm.facets.update(fa)
    return st.lm


def _cc_hint(me: NDArray, others: Sequence[NDArray]) -> NDArray | None:
    """Cranial direction from neighbour centroids (None: use the patient's head direction)."""
    if not others:
        return None
    dirs = []
    for o in others:
        d = _unit(np.asarray(o) - me)
        dirs.append(d if d[2] >= 0 else -d)
    cc = _unit(np.sum(dirs, axis=0))
    return cc if cc[2] > 0.3 else None


#: Axial rotation between adjacent vertebrae beyond this (degrees) means a frame went wrong
#: (assumed: a few degrees per level even in scoliosis; not in clinical-reference.md).
MAX_NEIGHBOUR_ROTATION_DEG = 25.0


def _check_rotation(states: dict, order: list[int], cents: dict) -> None:
    """Flag a vertebra whose left-right axis turns away from all its neighbours' (about its
    cc axis) by more than MAX_NEIGHBOUR_ROTATION_DEG: its frame cannot be trusted."""
    for k, i in enumerate(order):
        lm = states[i].lm
        cc = np.asarray(lm.frame.axis_cc_world)
        lr = np.asarray(lm.frame.axis_lr_world)
        angles = []
        for j in (order[k - 1] if k else None, order[k + 1] if k + 1 < len(order) else None):
            if j is None or np.linalg.norm(cents[j] - cents[i]) > 80.0:
                continue
            other = states[j].lm
            if other.confidence < 0.5:
                continue
            lo = np.asarray(other.frame.axis_lr_world)
            lo = lo - (lo @ cc) * cc
            if np.linalg.norm(lo) < 1e-6:
                continue
            angles.append(math.degrees(math.acos(float(np.clip(_unit(lo) @ lr, -1.0, 1.0)))))
        if angles and min(angles) > MAX_NEIGHBOUR_ROTATION_DEG:
            lm.flags.append("frame_rotated")
            note = (f"its left-right axis is turned {min(angles):.0f} deg from its neighbours': the frame and the "
                    "landmarks that depend on it are doubtful")
            lm.reason = f"{lm.reason}; {note}" if lm.reason else note
            lm.confidence = min(lm.confidence, 0.3)


def spine_landmarks(ct: Volume | None, labels: Volume, *, names: Mapping[int, str] | None = None,
                    label_ids: Iterable[int] | None = None,
                    progress: Callable[[str, float], None] | None = None) -> dict[int, VertebraLandmarks]:
    """Landmarks of every vertebra in the label map, with facet joints between neighbours.

    Parameters
    ----------
    ct : Volume or None
        CT on the label map's grid (see :func:`vertebra_landmarks`).
    labels : Volume
        Label map; by default its vertebra ids are read as TotalSegmentator v2 ids
        (C1..S1, plus the spinenav extensions T13 and L6).
    names : mapping id -> level name, optional
        Names of the vertebrae to analyse (overrides the TotalSegmentator table; the ids
        need not be TotalSegmentator's).
    label_ids : iterable of int, optional
        Restrict to these ids.
    progress : callable(step, fraction), optional

    Returns
    -------
    dict
        label id -> VertebraLandmarks, cranial first.
    """
    _check_inputs(ct, labels)
    report = progress or (lambda s, f: None)
    arr = labels.array
    if names is None:
        present = [int(i) for i in np.unique(arr) if i and is_vertebra_id(int(i))]
        names = {i: level_name(i) for i in present}  # type: ignore[misc]
    ids = [int(i) for i in (label_ids if label_ids is not None else names.keys())]
    objs = ndimage.find_objects(arr.astype(np.int32, copy=False) if arr.dtype.itemsize > 4 else arr,
                                max_label=max(ids) if ids else 0)
    boxes = {i: objs[i - 1] for i in ids if i - 1 < len(objs) and objs[i - 1] is not None}
    if not boxes:
        raise LandmarkError("the label map holds none of the vertebra ids asked for "
                            f"({sorted(ids)})")
    ids = list(boxes)
    cents = {}
    for i in ids:
        sl = boxes[i]
        idx = np.argwhere(arr[sl] == i) + np.array([s.start for s in sl])
        cents[i] = labels.world_from_index(idx.mean(axis=0))

    def order_key(i: int) -> float:
        n = names.get(i) if names else None
        try:
            return float(level_order(n)) if n else -float(cents[i][2])
        except ValueError:
            return -float(cents[i][2])

    ids.sort(key=order_key)
    shape = labels.shape
    cut = {i: any(b.start == 0 or b.stop == n for b, n in zip(boxes[i], shape)) for i in ids}
    states: dict[int, _State] = {}
    for k, i in enumerate(ids):
        report(f"landmarks {names.get(i) or i}", k / max(len(ids), 1))
        # neighbours' centroids give the spine's direction; a neighbour cut by the field of
        # view has a displaced centroid, so it does not vote
        nb = [cents[j] for j in (ids[k - 1] if k else None, ids[k + 1] if k + 1 < len(ids) else None)
              if j is not None and not cut[j] and np.linalg.norm(cents[j] - cents[i]) < 80.0]
        try:
            states[i] = _analyse(ct, labels, i, names.get(i), _cc_hint(cents[i], nb), boxes[i])
        except LandmarkError as exc:  # pragma: no cover - a vertebra vanished between calls
            warnings.warn(str(exc), SpinenavWarning, stacklevel=2)
    order = [i for i in ids if i in states]
    _check_rotation(states, order, cents)
    for a, b in zip(order[:-1], order[1:]):
        if np.linalg.norm(cents[a] - cents[b]) > 80.0:
            continue
        fa, fb = _facet_joints(labels, states[a].crop, states[a].work, states[b].crop, states[b].work)
        states[a].lm.facets.update(fa)
        states[b].lm.facets.update(fb)
    report("landmarks done", 1.0)
    return {i: states[i].lm for i in order}

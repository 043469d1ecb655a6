"""Distance fields and line sampling that the planners share (see :class:`SignedDistance`)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from spinenav.imaging.volume import Volume


def _boundary_face_points(mask: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Index coordinates of points on every face between a voxel in `mask` and one outside:
    each face's centre, edge midpoints and corners (duplicates removed)."""
    offs = np.array([-0.5, 0.0, 0.5])
    pts = []
    for k in range(3):
        a = np.moveaxis(mask, k, 0)
        diff = a[1:] != a[:-1]
        idx = np.argwhere(diff).astype(np.float64)
        idx[:, 0] += 0.5
        idx = np.moveaxis(idx.reshape(-1, 3), 0, 0)
        order = [k] + [j for j in range(3) if j != k]
        face = np.empty_like(idx)
        face[:, order] = idx  # back to (i, j, k) order
        others = [j for j in range(3) if j != k]
        for o1 in offs:
            for o2 in offs:
                q = face.copy()
                q[:, others[0]] += o1
                q[:, others[1]] += o2
                pts.append(q)
    q = np.round(np.vstack(pts) * 2).astype(np.int64) + 2  # half-voxel units, >= 1
    dims = q.max(axis=0) + 1
    key = np.unique((q[:, 0] * dims[1] + q[:, 1]) * dims[2] + q[:, 2])
    k2 = key % dims[2]
    k1 = (key // dims[2]) % dims[1]
    k0 = key // (dims[1] * dims[2])
    return (np.stack([k0, k1, k2], axis=1) - 2).astype(np.float64) / 2.0


class SignedDistance:
    """Signed distance (mm) to the boundary of ``mask`` (a boolean array on `grid`'s grid).

    The boundary is the label map's own: the faces between a voxel inside and its neighbour
    outside (the surface that nearest-voxel lookups of the label map see). Each face is sampled
    at its centre, edge midpoints and corners (points half a voxel apart) and the distance is
    to the nearest sample (k-d tree); this overestimates the distance to the faces by about
    h^2 / (8 D) with h half a voxel, under 0.02 mm at the depths that matter for a screw
    (D >= 2 mm, voxels <= 1 mm). The sign comes from nearest-voxel membership: positive
    inside, negative outside. For a cylinder of radius r around an axis, ``phi(axis point) -
    r`` is then the distance from its surface to the boundary (phi is 1-Lipschitz): the
    cortical margin used throughout the planner.

    Parameters
    ----------
    grid : Volume
        Any volume on the label map's grid (only its affine and shape are used).
    mask : (I, J, K) bool ndarray
        The structure (e.g. one vertebra's label).
    pad_mm : float
        Distances beyond this are reported as +-pad_mm (12 mm: more than any screw radius plus
        margin, so clearances that matter are exact).
    ct : Volume, optional
        The CT on the same grid: the boundary is refined to the CT's bone edge (sub-voxel).
    other_bone : (I, J, K) bool ndarray, optional
        Voxels of other bones (neighbouring vertebrae), whose CT edges are not this vertebra's.
    """

    def __init__(self, grid: Volume, mask: NDArray[np.bool_], *, pad_mm: float = 12.0,
                 ct: Volume | None = None, other_bone: NDArray[np.bool_] | None = None):
        from scipy.spatial import cKDTree

        if not mask.any():
            raise ValueError("empty mask: nothing to measure a distance to")
        nz = [np.nonzero(mask.any(axis=tuple(j for j in range(3) if j != i)))[0] for i in range(3)]
        self.lo = np.array([int(n[0]) - 1 for n in nz])
        hi = np.array([int(n[-1]) + 2 for n in nz])
        sub = np.zeros(tuple(hi - self.lo), bool)
        src_lo = np.maximum(self.lo, 0)
        src_hi = np.minimum(hi, mask.shape)
        dst = src_lo - self.lo
        sub[dst[0]:dst[0] + src_hi[0] - src_lo[0], dst[1]:dst[1] + src_hi[1] - src_lo[1],
            dst[2]:dst[2] + src_hi[2] - src_lo[2]] = mask[src_lo[0]:src_hi[0], src_lo[1]:src_hi[1],
                                                           src_lo[2]:src_hi[2]]
        verts = _boundary_face_points(sub) + self.lo
        self.ct_refined_fraction = 0.0
        self.ct_threshold_hu: float | None = None
        if ct is not None:
            verts = self._refine_on_ct(ct, mask, sub, verts, other_bone)
        self.T_world_from_index = np.asarray(grid.affine, float)
        self.T_index_from_world = np.linalg.inv(grid.affine)
        self.surface_world_mm = verts @ self.T_world_from_index[:3, :3].T + self.T_world_from_index[:3, 3]
        self.tree = cKDTree(self.surface_world_mm)
        self.mask = sub
        self.spacing = np.asarray(grid.spacing_mm, float)
        self.pad_mm = float(pad_mm)

    def _refine_on_ct(self, ct: Volume, mask: NDArray[np.bool_], sub: NDArray[np.bool_], faces: NDArray,
                      other_bone: NDArray[np.bool_] | None) -> NDArray[np.float64]:
        """Replace the label map's voxel faces by the CT's own bone surface where it lies within
        a voxel of them (sub-voxel: the CT edge is where the intensity crosses halfway between
        the cortex and the soft tissue next to it, the full-width-at-half-maximum edge).
        Faces with no CT surface next to them are kept. Index coordinates in, index out."""
        from scipy.spatial import cKDTree
        from skimage.measure import marching_cubes

        lo = np.maximum(self.lo, 0)
        hi = np.minimum(self.lo + np.array(sub.shape), ct.shape)
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        hu = np.asarray(ct.array[box], np.float32)
        m = mask[box]
        shell = m & ~ndimage.binary_erosion(m)
        ring = ndimage.binary_dilation(m, iterations=2) & ~ndimage.binary_dilation(m)
        if other_bone is not None:
            ring &= ~other_bone[box]
        if shell.sum() < 50 or ring.sum() < 50:
            return faces
        cortex = float(np.percentile(hu[shell], 90))
        soft = float(np.median(hu[ring]))
        if cortex - soft < 150.0:  # no visible cortex: keep the label map
            return faces
        t = 0.5 * (cortex + soft)
        try:
            verts, _, _, _ = marching_cubes(hu, t)
        except (ValueError, RuntimeError):
            return faces
        # the outer (periosteal) surface: intensity rises going into the vertebra; the endosteal
        # surface inside the cortex falls, and is dropped
        inward = np.stack(np.gradient(ndimage.gaussian_filter(m.astype(np.float32), 1.0)))
        rising = np.stack(np.gradient(ndimage.gaussian_filter(hu, 0.7)))
        coords = verts.T
        dot = sum(ndimage.map_coordinates(inward[k], coords, order=1) * ndimage.map_coordinates(rising[k], coords, order=1)
                  for k in range(3))
        verts = verts + lo
        face_tree = cKDTree(faces)
        d, _ = face_tree.query(verts, distance_upper_bound=1.0)
        keep = np.isfinite(d) & (d <= 0.75) & (dot > 0)
        if other_bone is not None and keep.any():
            ijk = np.rint(verts[keep]).astype(int)
            ijk = np.clip(ijk, 0, np.array(ct.shape) - 1)
            keep[np.flatnonzero(keep)[other_bone[ijk[:, 0], ijk[:, 1], ijk[:, 2]]]] = False
        ct_pts = verts[keep]
        if len(ct_pts) == 0:
            return faces
        dd, _ = cKDTree(ct_pts).query(faces, distance_upper_bound=1.5)
        gaps = ~(np.isfinite(dd) & (dd <= 1.0))
        self.ct_refined_fraction = float(1.0 - gaps.mean())
        self.ct_threshold_hu = t
        return np.vstack([ct_pts, faces[gaps]])

    def crop_index(self, points_world_mm: NDArray) -> NDArray[np.float64]:
        p = np.asarray(points_world_mm, float).reshape(-1, 3)
        ijk = p @ self.T_index_from_world[:3, :3].T + self.T_index_from_world[:3, 3]
        return ijk - self.lo

    def __call__(self, points_world_mm: NDArray) -> NDArray[np.float64]:
        """phi at points (..., 3) in LPS mm: + inside, - outside, clipped to +-pad_mm."""
        p = np.asarray(points_world_mm, float)
        shape = p.shape[:-1]
        flat = p.reshape(-1, 3)
        dist, _ = self.tree.query(flat, distance_upper_bound=self.pad_mm, workers=2)
        dist = np.minimum(dist, self.pad_mm)
        inside = self.contains(flat)
        return np.where(inside, dist, -dist).reshape(shape)

    def gradient(self, point_world_mm: NDArray, *, h_mm: float = 0.5) -> NDArray[np.float64]:
        """Unit gradient of phi in world (pointing inwards), central differences."""
        p = np.asarray(point_world_mm, float)
        offs = np.vstack([np.eye(3), -np.eye(3)]) * h_mm
        v = self(p[None, :] + offs)
        g = (v[:3] - v[3:]) / (2 * h_mm)
        n = np.linalg.norm(g)
        return g / n if n > 0 else g

    def nearest_surface(self, point_world_mm: NDArray) -> NDArray[np.float64]:
        _, k = self.tree.query(np.asarray(point_world_mm, float))
        return self.surface_world_mm[k]

    def contains(self, points_world_mm: NDArray) -> NDArray[np.bool_]:
        """Nearest-voxel membership of points in the mask (False outside the crop)."""
        shape = np.asarray(points_world_mm).shape[:-1]
        ijk = np.rint(self.crop_index(points_world_mm)).astype(int)
        ok = np.all((ijk >= 0) & (ijk < np.array(self.mask.shape)), axis=1)
        out = np.zeros(len(ijk), bool)
        out[ok] = self.mask[ijk[ok, 0], ijk[ok, 1], ijk[ok, 2]]
        return out.reshape(shape)


def sample_volume(volume: Volume, points_world_mm: NDArray, *, order: int = 1, cval: float = -1024.0
                  ) -> NDArray[np.float64]:
    """Values of `volume` at points (..., 3) in LPS mm (trilinear by default, `cval` outside)."""
    p = np.asarray(points_world_mm, float)
    shape = p.shape[:-1]
    ijk = volume.index_from_world(p.reshape(-1, 3))
    vals = ndimage.map_coordinates(np.asarray(volume.array), ijk.T, order=order, mode="constant", cval=cval)
    return vals.reshape(shape)


def inside_grid(volume: Volume, points_world_mm: NDArray) -> NDArray[np.bool_]:
    """Points whose trilinear sample is fully defined (between the first and last voxel centres)."""
    ijk = volume.index_from_world(np.asarray(points_world_mm, float).reshape(-1, 3))
    return np.all((ijk >= 0.0) & (ijk <= np.array(volume.shape) - 1.0), axis=1)


def skin_exit(ct: Volume, start_world_mm: NDArray, direction_world: NDArray, *, hu_threshold: float = -500.0,
              max_mm: float = 250.0, step_mm: float = 0.5, air_run_mm: float = 8.0
              ) -> tuple[NDArray[np.float64] | None, str | None]:
    """Where a ray from inside the body leaves the skin: the last point with HU above
    `hu_threshold` before a run of `air_run_mm` below it (so that a small air pocket inside is
    not taken for the skin). Returns (point or None, reason when None)."""
    d = np.asarray(direction_world, float)
    d = d / np.linalg.norm(d)
    s = np.arange(0.0, max_mm + step_mm, step_mm)
    pts = np.asarray(start_world_mm, float) + s[:, None] * d
    inside = inside_grid(ct, pts)
    hu = sample_volume(ct, pts, cval=-1024.0)
    body = (hu > hu_threshold) & inside
    run = max(int(round(air_run_mm / step_mm)), 1)
    for i in range(1, len(s) - run):
        if not inside[i]:
            return None, f"the line leaves the CT's field of view {s[i]:.0f} mm from the bone before reaching the skin"
        if body[i - 1] and not body[i:i + run].any() and inside[i:i + run].all():
            # linear interpolation of the threshold crossing
            h0, h1 = hu[i - 1], hu[i]
            f = (h0 - hu_threshold) / (h0 - h1) if h0 != h1 else 0.0
            return pts[i - 1] + f * step_mm * d, None
    return None, f"no skin surface within {max_mm:.0f} mm of the bone along the line"


def cylinder_mask(grid: Volume, start_world_mm: NDArray, end_world_mm: NDArray, radius_mm: float
                  ) -> tuple[tuple[slice, slice, slice], NDArray[np.bool_]]:
    """Voxels of `grid` whose centres lie in the cylinder (box slices, boolean mask in the box)."""
    a = np.asarray(start_world_mm, float)
    b = np.asarray(end_world_mm, float)
    lo_w = np.minimum(a, b) - radius_mm
    hi_w = np.maximum(a, b) + radius_mm
    box = np.array([[x, y, z] for x in (lo_w[0], hi_w[0]) for y in (lo_w[1], hi_w[1]) for z in (lo_w[2], hi_w[2])])
    ijk = grid.index_from_world(box)
    lo = np.clip(np.floor(ijk.min(axis=0)).astype(int), 0, np.array(grid.shape))
    hi = np.clip(np.ceil(ijk.max(axis=0)).astype(int) + 1, 0, np.array(grid.shape))
    sl = tuple(slice(int(l), int(h)) for l, h in zip(lo, hi))
    if any(h <= l for l, h in zip(lo, hi)):
        return sl, np.zeros((0, 0, 0), bool)
    axis = b - a
    L = float(np.linalg.norm(axis))
    u = axis / L if L > 0 else np.array([0.0, 0.0, 1.0])
    A = np.asarray(grid.affine, float)
    i = np.arange(lo[0], hi[0], dtype=np.float32)[:, None, None]
    j = np.arange(lo[1], hi[1], dtype=np.float32)[None, :, None]
    k = np.arange(lo[2], hi[2], dtype=np.float32)[None, None, :]
    c0 = A[:3, 3] - a
    t = np.float32(c0 @ u) + i * np.float32(A[:3, 0] @ u) + j * np.float32(A[:3, 1] @ u) + k * np.float32(A[:3, 2] @ u)
    r2 = np.zeros(t.shape, np.float32)
    for x in range(3):  # |p - a|^2, one world axis at a time (broadcast, no index grid)
        r2 += (np.float32(c0[x]) + i * np.float32(A[x, 0]) + j * np.float32(A[x, 1]) + k * np.float32(A[x, 2])) ** 2
    m = (t >= 0) & (t <= L) & (r2 - t * t <= np.float32(radius_mm) ** 2)
    return sl, m

"""Solids for the phantom: an exact inside test plus an approximate signed distance.

Every solid answers ``sdf(x, y, z)``: a signed distance in mm, negative inside, for world (LPS)
coordinates given as broadcastable arrays. The *sign* is exact by construction (``sdf <= 0``
is the solid's definition, and the labels, the truth and the corridor all use that test); the
*magnitude* is a first-order estimate (exact on and near the surface of a sphere, within a
few tens of percent a few mm away from other surfaces), used only to shade the cortical shell
and to anti-alias edges.

Composition follows the usual rules: union = min, intersection = max, difference =
max(a, -b). :class:`Avoid` keeps a part at least ``gap_mm`` away (by the neighbour's sdf) from
a neighbouring bone, so facet joints, rib joints and the sacro-iliac joint always keep a
gap of soft tissue and two labels never overlap.

Evaluation is by bounding box: :meth:`Solid.sdf_grid` evaluates a union child only inside that
child's own box, so a vertebra's spinous process is never evaluated over the whole vertebra.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

#: Stand-in for "far outside" / "far inside" where a child is not evaluated (mm).
FAR_MM = 1.0e4
#: Boxes are padded by this much so the sdf is known a little outside every surface (mm).
PAD_MM = 2.5

Bounds = tuple[NDArray[np.float64], NDArray[np.float64]]


# ----------------------------------------------------------------------------- frames
def rot_x(angle_rad: float) -> NDArray[np.float64]:
    """4x4 rotation about x by `angle_rad` (right-handed): z -> (0, -sin, cos)."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return np.array([[1, 0, 0, 0], [0, c, -s, 0], [0, s, c, 0], [0, 0, 0, 1]], dtype=np.float64)


def rot_y(angle_rad: float) -> NDArray[np.float64]:
    """4x4 rotation about y by `angle_rad` (right-handed): z -> (sin, 0, cos)."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return np.array([[c, 0, s, 0], [0, 1, 0, 0], [-s, 0, c, 0], [0, 0, 0, 1]], dtype=np.float64)


def rot_z(angle_rad: float) -> NDArray[np.float64]:
    """4x4 rotation about z by `angle_rad` (right-handed): x -> (cos, sin, 0)."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float64)


def trans(x: float, y: float, z: float) -> NDArray[np.float64]:
    """4x4 translation by (x, y, z) mm."""
    t = np.eye(4)
    t[:3, 3] = (x, y, z)
    return t


def frame_from_axes(origin: ArrayLike, x_axis: ArrayLike, y_axis: ArrayLike) -> NDArray[np.float64]:
    """T_world_from_local with local x along `x_axis`, local y along the part of `y_axis`
    orthogonal to it, z = x cross y; origin in world mm."""
    ex = np.asarray(x_axis, float)
    ex = ex / np.linalg.norm(ex)
    ey = np.asarray(y_axis, float)
    ey = ey - (ey @ ex) * ex
    ey = ey / np.linalg.norm(ey)
    ez = np.cross(ex, ey)
    t = np.eye(4)
    t[:3, 0], t[:3, 1], t[:3, 2], t[:3, 3] = ex, ey, ez, np.asarray(origin, float)
    return t


def apply_point(T: NDArray[np.float64], p: ArrayLike) -> NDArray[np.float64]:
    """Apply a 4x4 transform to points (..., 3)."""
    p = np.asarray(p, dtype=np.float64)
    return p @ T[:3, :3].T + T[:3, 3]


def apply_dir(T: NDArray[np.float64], v: ArrayLike) -> NDArray[np.float64]:
    """Rotate directions (..., 3) by a 4x4 transform (no translation)."""
    return np.asarray(v, dtype=np.float64) @ T[:3, :3].T


def _box_corners(lo: ArrayLike, hi: ArrayLike) -> NDArray[np.float64]:
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    return np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])


def _world_bounds(T: NDArray[np.float64], lo: ArrayLike, hi: ArrayLike) -> Bounds:
    corners = apply_point(T, _box_corners(lo, hi))
    return corners.min(axis=0), corners.max(axis=0)


def _merge(bounds: Sequence[Bounds | None]) -> Bounds | None:
    bs = [b for b in bounds if b is not None]
    if not bs:
        return None
    return np.min([b[0] for b in bs], axis=0), np.max([b[1] for b in bs], axis=0)


def _intersect(bounds: Sequence[Bounds | None]) -> Bounds | None:
    bs = [b for b in bounds if b is not None]
    if not bs:
        return None
    return np.max([b[0] for b in bs], axis=0), np.min([b[1] for b in bs], axis=0)


# ----------------------------------------------------------------------------- 2D helpers
def ellipse_sdf(u, v, a, b):
    """Approximate signed distance to the ellipse (u/a)^2 + (v/b)^2 = 1 (mm; exact sign)."""
    k0 = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    k1 = np.sqrt((u / (a * a)) ** 2 + (v / (b * b)) ** 2)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-9)


# ----------------------------------------------------------------------------- grid
@dataclass(frozen=True)
class Grid:
    """An axis-aligned voxel grid: centre of voxel (i, j, k) is origin + (i, j, k) * spacing."""

    shape: tuple[int, int, int]
    origin_world_mm: tuple[float, float, float]
    spacing_mm: tuple[float, float, float]

    @property
    def affine(self) -> NDArray[np.float64]:
        """T_world_from_index (LPS mm), diagonal."""
        a = np.diag([*self.spacing_mm, 1.0])
        a[:3, 3] = self.origin_world_mm
        return a

    def axis_mm(self, axis: int, lo: int = 0, hi: int | None = None) -> NDArray[np.float32]:
        hi = self.shape[axis] if hi is None else hi
        return (self.origin_world_mm[axis] + np.arange(lo, hi) * self.spacing_mm[axis]).astype(np.float32)

    def index_box(self, bounds: Bounds | None, pad_mm: float = PAD_MM) -> tuple[slice, slice, slice] | None:
        """Index slices of the voxels whose centres lie in `bounds` padded by `pad_mm`
        (None when empty). Unbounded -> the whole grid."""
        if bounds is None:
            return tuple(slice(0, n) for n in self.shape)  # type: ignore[return-value]
        lo, hi = bounds
        out = []
        for ax in range(3):
            o, s, n = self.origin_world_mm[ax], self.spacing_mm[ax], self.shape[ax]
            i0 = max(0, int(math.ceil((lo[ax] - pad_mm - o) / s)))
            i1 = min(n, int(math.floor((hi[ax] + pad_mm - o) / s)) + 1)
            if i1 <= i0:
                return None
            out.append(slice(i0, i1))
        return tuple(out)  # type: ignore[return-value]

    def coords(self, box: tuple[slice, slice, slice]):
        """Broadcastable world coordinates (x (n,1,1), y (1,m,1), z (1,1,k)) of a box, float32."""
        x = self.axis_mm(0, box[0].start, box[0].stop)[:, None, None]
        y = self.axis_mm(1, box[1].start, box[1].stop)[None, :, None]
        z = self.axis_mm(2, box[2].start, box[2].stop)[None, None, :]
        return x, y, z


def _box_shape(box) -> tuple[int, int, int]:
    return tuple(s.stop - s.start for s in box)  # type: ignore[return-value]


def _sub(box, sub):
    """`sub` (absolute slices) relative to `box`."""
    return tuple(slice(s.start - b.start, s.stop - b.start) for s, b in zip(sub, box))


def _box_and(a, b):
    out = []
    for s, t in zip(a, b):
        lo, hi = max(s.start, t.start), min(s.stop, t.stop)
        if hi <= lo:
            return None
        out.append(slice(lo, hi))
    return tuple(out)


# ----------------------------------------------------------------------------- base
class Solid:
    """A region of space with an exact inside test (``sdf <= 0``) and an approximate sdf."""

    def bounds(self) -> Bounds | None:
        """World AABB (lo, hi) in mm, or None when unbounded (a half-space); cached (solids
        are immutable once built)."""
        try:
            return self._bounds_cache  # type: ignore[has-type]
        except AttributeError:
            self._bounds_cache = self._compute_bounds()
            return self._bounds_cache

    def _compute_bounds(self) -> Bounds | None:
        raise NotImplementedError

    def sdf(self, x, y, z):
        """Signed distance (mm) at broadcastable world coordinates; negative inside."""
        raise NotImplementedError

    # Evaluation helpers ----------------------------------------------------------------
    def sdf_points(self, points_world_mm: ArrayLike) -> NDArray[np.float64]:
        """sdf at points (N, 3) in world mm, float64."""
        p = np.asarray(points_world_mm, dtype=np.float64).reshape(-1, 3)
        return self._sdf_pts(p)

    def contains(self, points_world_mm: ArrayLike) -> NDArray[np.bool_]:
        """Exact inside test at points (N, 3) in world mm."""
        return self.sdf_points(points_world_mm) <= 0.0

    def _sdf_pts(self, p: NDArray[np.float64]) -> NDArray[np.float64]:
        out = np.full(len(p), FAR_MM)
        m = _in_bounds(p, self.bounds())
        if np.any(m):
            q = p[m]
            out[m] = np.broadcast_to(self.sdf(q[:, 0], q[:, 1], q[:, 2]), (len(q),))
        return out

    def sdf_grid(self, grid: Grid, box) -> NDArray[np.float32]:
        """sdf on the voxel centres of `box` (absolute index slices), float32 (FAR outside
        this solid's padded bounds)."""
        shape = _box_shape(box)
        own = grid.index_box(self.bounds())
        sub = None if own is None else _box_and(own, box)
        if sub is None:
            return np.full(shape, FAR_MM, dtype=np.float32)
        x, y, z = grid.coords(sub)
        d = self.sdf(x, y, z)
        if sub == box:  # the common case: no copy into a padded block
            d = np.asarray(d, dtype=np.float32)
            return d if d.shape == shape else np.ascontiguousarray(np.broadcast_to(d, shape))
        out = np.full(shape, FAR_MM, dtype=np.float32)
        out[_sub(box, sub)] = np.broadcast_to(d, _box_shape(sub))
        return out


def _in_bounds(p: NDArray[np.float64], b: Bounds | None, pad: float = PAD_MM) -> NDArray[np.bool_]:
    if b is None:
        return np.ones(len(p), bool)
    lo, hi = b
    m = (p[:, 0] >= lo[0] - pad) & (p[:, 0] <= hi[0] + pad)
    m &= (p[:, 1] >= lo[1] - pad) & (p[:, 1] <= hi[1] + pad)
    m &= (p[:, 2] >= lo[2] - pad) & (p[:, 2] <= hi[2] + pad)
    return m


class Framed(Solid):
    """A primitive defined in a local frame: ``T_world_from_local`` (4x4, rigid)."""

    def __init__(self, T_world_from_local: ArrayLike):
        self.T_world_from_local = np.asarray(T_world_from_local, dtype=np.float64)
        # Python floats: they keep float32 grids in float32 (NumPy 2 promotes with np.float64)
        self._R = self.T_world_from_local[:3, :3].tolist()
        self._t = self.T_world_from_local[:3, 3].tolist()

    def local(self, x, y, z):
        """World -> local coordinates (broadcast)."""
        R, t = self._R, self._t
        dx, dy, dz = x - t[0], y - t[1], z - t[2]
        lx = R[0][0] * dx + R[1][0] * dy + R[2][0] * dz
        ly = R[0][1] * dx + R[1][1] * dy + R[2][1] * dz
        lz = R[0][2] * dx + R[1][2] * dy + R[2][2] * dz
        return lx, ly, lz

    def local_bounds(self) -> tuple[ArrayLike, ArrayLike]:
        raise NotImplementedError

    def _compute_bounds(self) -> Bounds:
        lo, hi = self.local_bounds()
        return _world_bounds(self.T_world_from_local, lo, hi)

    def sdf(self, x, y, z):
        return self.local_sdf(*self.local(x, y, z))

    def local_sdf(self, x, y, z):
        raise NotImplementedError


# ----------------------------------------------------------------------------- primitives
class Ellipsoid(Framed):
    """Ellipsoid centred on the local origin with semi-axes `radii_mm` along local x, y, z."""

    def __init__(self, T_world_from_local: ArrayLike, radii_mm: ArrayLike):
        super().__init__(T_world_from_local)
        self.radii_mm = np.asarray(radii_mm, dtype=np.float64)

    def local_bounds(self):
        return -self.radii_mm, self.radii_mm

    def local_sdf(self, x, y, z):
        a, b, c = (float(r) for r in self.radii_mm)
        k0 = np.sqrt((x / a) ** 2 + (y / b) ** 2 + (z / c) ** 2)
        k1 = np.sqrt((x / (a * a)) ** 2 + (y / (b * b)) ** 2 + (z / (c * c)) ** 2)
        return k0 * (k0 - 1.0) / np.maximum(k1, 1e-9)

    def extreme_point_world(self, direction_local: ArrayLike) -> NDArray[np.float64]:
        """World position of the surface point at the end of a local axis direction, e.g.
        (0, 0, 1) -> the tip of the z semi-axis."""
        d = np.asarray(direction_local, float)
        return apply_point(self.T_world_from_local, d * self.radii_mm)


class Box(Framed):
    """Box centred on the local origin with half extents `half_mm`."""

    def __init__(self, T_world_from_local: ArrayLike, half_mm: ArrayLike):
        super().__init__(T_world_from_local)
        self.half_mm = np.asarray(half_mm, dtype=np.float64)

    def local_bounds(self):
        return -self.half_mm, self.half_mm

    def local_sdf(self, x, y, z):
        hx, hy, hz = (float(h) for h in self.half_mm)
        return np.maximum(np.maximum(np.abs(x) - hx, np.abs(y) - hy), np.abs(z) - hz)


class RoundedBox(Framed):
    """Box centred on the local origin with half extents `half_mm` and edges rounded by
    `radius_mm` (exact Euclidean distance)."""

    def __init__(self, T_world_from_local: ArrayLike, half_mm: ArrayLike, radius_mm: float):
        super().__init__(T_world_from_local)
        self.half_mm = np.asarray(half_mm, dtype=np.float64)
        self.r = float(min(radius_mm, 0.999 * self.half_mm.min()))

    def local_bounds(self):
        return -self.half_mm, self.half_mm

    def local_sdf(self, x, y, z):
        hx, hy, hz = (float(h) - self.r for h in self.half_mm)
        qx = np.abs(x) - hx
        qy = np.abs(y) - hy
        qz = np.abs(z) - hz
        outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2 + np.maximum(qz, 0) ** 2)
        inside = np.minimum(np.maximum(qx, np.maximum(qy, qz)), 0.0)
        return outside + inside - self.r


class EllipticCylinder(Framed):
    """Elliptic cylinder along local z: ((x-cx)/a)^2 + ((y-cy)/b)^2 <= 1, z0 <= z <= z1."""

    def __init__(self, T_world_from_local, a_mm: float, b_mm: float, z0_mm: float, z1_mm: float,
                 centre_xy_mm: tuple[float, float] = (0.0, 0.0)):
        super().__init__(T_world_from_local)
        self.a, self.b, self.z0, self.z1 = float(a_mm), float(b_mm), float(z0_mm), float(z1_mm)
        self.cx, self.cy = (float(c) for c in centre_xy_mm)

    def local_bounds(self):
        return ((self.cx - self.a, self.cy - self.b, self.z0), (self.cx + self.a, self.cy + self.b, self.z1))

    def local_sdf(self, x, y, z):
        d = ellipse_sdf(x - self.cx, y - self.cy, self.a, self.b)
        return np.maximum(d, np.maximum(self.z0 - z, z - self.z1))


class VertebralBody(Framed):
    """Waisted elliptic cylinder between two endplate planes (local frame = vertebra frame).

    Cross-section at height z: semi-axes ``a * f(z)``, ``b * f(z)`` with
    ``f = 1 - waist * (1 - (z / (h/2))^2)`` (full size at the endplates). The superior
    endplate is the plane through (0, 0, h/2) with outward normal (0, sin(w/2), cos(w/2)),
    the inferior one through (0, 0, -h/2) with outward normal (0, sin(w/2), -cos(w/2)), where
    w = `wedge_rad` (anterior taller than posterior when positive).
    """

    def __init__(self, T_world_from_local, a_mm: float, b_mm: float, height_mm: float, *,
                 waist: float = 0.07, wedge_rad: float = 0.0):
        super().__init__(T_world_from_local)
        self.a, self.b, self.h = float(a_mm), float(b_mm), float(height_mm)
        self.waist, self.wedge = float(waist), float(wedge_rad)
        self._s, self._c = math.sin(self.wedge / 2), math.cos(self.wedge / 2)

    def local_bounds(self):
        zmax = self.h / 2 + self.b * abs(math.tan(self.wedge / 2))
        return (-self.a, -self.b, -zmax), (self.a, self.b, zmax)

    def local_sdf(self, x, y, z):
        hz = self.h / 2
        zz = np.clip(z / hz, -1.0, 1.0)
        f = 1.0 - self.waist * (1.0 - zz * zz)
        d = ellipse_sdf(x, y, self.a * f, self.b * f)
        sup = self._s * y + self._c * (z - hz)
        inf = self._s * y - self._c * (z + hz)
        return np.maximum(d, np.maximum(sup, inf))


class Tube(Framed):
    """Straight tube along local z (s) with an elliptic cross-section that flares quadratically
    away from its waist at s = 0 (an hourglass), flat caps at s0 and s1.

    Half-width along local x: ``w(s) = w0 + k * s^2`` with k = `flare_ant` for s > 0 and
    `flare_post` for s < 0, capped at ``w0 + max_flare``; same law for the half-height along
    local y with h0. The cross-section perpendicular to the axis at s = 0 is exactly the
    ellipse (w0, h0).
    """

    def __init__(self, T_world_from_local, s0_mm: float, s1_mm: float, w0_mm: float, h0_mm: float, *,
                 flare_ant: float, flare_post: float, max_flare_w_mm: float, max_flare_h_mm: float):
        super().__init__(T_world_from_local)
        self.s0, self.s1, self.w0, self.h0 = float(s0_mm), float(s1_mm), float(w0_mm), float(h0_mm)
        self.ka, self.kp = float(flare_ant), float(flare_post)
        self.mw, self.mh = float(max_flare_w_mm), float(max_flare_h_mm)

    def half_sizes(self, s):
        k = np.where(s > 0, np.float32(self.ka), np.float32(self.kp)) if np.asarray(s).dtype == np.float32 \
            else np.where(s > 0, self.ka, self.kp)
        g = k * s * s
        return self.w0 + np.minimum(g, self.mw), self.h0 + np.minimum(g, self.mh)

    def local_bounds(self):
        w = self.w0 + self.mw
        h = self.h0 + self.mh
        return (-w, -h, self.s0), (w, h, self.s1)

    def local_sdf(self, x, y, z):
        w, h = self.half_sizes(z)
        d = ellipse_sdf(x, y, w, h)
        return np.maximum(d, np.maximum(self.s0 - z, z - self.s1))


class Segment(Solid):
    """Cone-capsule between points p0 and p1 (world mm) with radii r0 and r1: points whose
    distance to the segment, minus the radius interpolated at the closest parameter, is <= 0."""

    def __init__(self, p0: ArrayLike, p1: ArrayLike, r0_mm: float, r1_mm: float):
        self.p0, self.p1 = np.asarray(p0, float), np.asarray(p1, float)
        self.r0, self.r1 = float(r0_mm), float(r1_mm)
        self._d = self.p1 - self.p0
        self._l2 = float(self._d @ self._d)

    def _compute_bounds(self):
        r = max(self.r0, self.r1)
        return np.minimum(self.p0, self.p1) - r, np.maximum(self.p0, self.p1) + r

    def sdf(self, x, y, z):
        p0, dd = self.p0.tolist(), self._d.tolist()
        dx, dy, dz = x - p0[0], y - p0[1], z - p0[2]
        t = np.clip((dx * dd[0] + dy * dd[1] + dz * dd[2]) / self._l2, 0.0, 1.0)
        ex, ey, ez = dx - t * dd[0], dy - t * dd[1], dz - t * dd[2]
        return np.sqrt(ex * ex + ey * ey + ez * ez) - (self.r0 + t * (self.r1 - self.r0))


class HalfSpace(Solid):
    """Points p with (p - point) . normal <= 0: the side *opposite* to `normal` is inside."""

    def __init__(self, point_world_mm: ArrayLike, normal_world: ArrayLike):
        n = np.asarray(normal_world, float)
        self.n = n / np.linalg.norm(n)
        self.p = np.asarray(point_world_mm, float)

    def _compute_bounds(self):
        return None

    def sdf(self, x, y, z):
        p, n = self.p.tolist(), self.n.tolist()
        return (x - p[0]) * n[0] + (y - p[1]) * n[1] + (z - p[2]) * n[2]


class SweptEllipse(Solid):
    """Solid between two planes whose cross-section blends from one ellipse to another.

    Plane A is local z = 0 of `T_world_from_a` (inside: z_a >= 0), plane B local z = 0 of
    `T_world_from_b` (inside: z_b <= 0). With t = z_a / (z_a - z_b) in [0, 1], the point's
    blended in-plane coordinates ``(1 - t) * (x_a, y_a) + t * (x_b, y_b)`` must lie in the
    ellipse blended the same way (centres and semi-axes), scaled by ``1 + bulge * 4t(1-t)``.
    At t = 0 and t = 1 the cross-sections are exactly the end ellipses, so a disc fills the
    space between two endplates, sheared if one vertebra slipped over the other.
    """

    def __init__(self, T_world_from_a, T_world_from_b, ellipse_a: tuple[float, float, float, float],
                 ellipse_b: tuple[float, float, float, float], *, bulge: float = 0.0):
        self.Ta, self.Tb = Framed(T_world_from_a), Framed(T_world_from_b)
        self.ea = np.asarray(ellipse_a, float)  # (cx, cy, a, b)
        self.eb = np.asarray(ellipse_b, float)
        self.bulge = float(bulge)

    def _compute_bounds(self):
        r = 1.0 + max(self.bulge, 0.0)
        ba = _world_bounds(self.Ta.T_world_from_local, (self.ea[0] - r * self.ea[2], self.ea[1] - r * self.ea[3], 0),
                           (self.ea[0] + r * self.ea[2], self.ea[1] + r * self.ea[3], 0))
        bb = _world_bounds(self.Tb.T_world_from_local, (self.eb[0] - r * self.eb[2], self.eb[1] - r * self.eb[3], 0),
                           (self.eb[0] + r * self.eb[2], self.eb[1] + r * self.eb[3], 0))
        return _merge([ba, bb])

    def sdf(self, x, y, z):
        xa, ya, za = self.Ta.local(x, y, z)
        xb, yb, zb = self.Tb.local(x, y, z)
        den = za - zb
        t = np.clip(za / np.where(np.abs(den) < 1e-6, 1e-6, den), 0.0, 1.0)
        u = (1 - t) * xa + t * xb
        v = (1 - t) * ya + t * yb
        ea, eb = self.ea.tolist(), self.eb.tolist()
        g = 1.0 + self.bulge * 4.0 * t * (1.0 - t)
        cx = ea[0] + t * (eb[0] - ea[0])
        cy = ea[1] + t * (eb[1] - ea[1])
        a = (ea[2] + t * (eb[2] - ea[2])) * g
        b = (ea[3] + t * (eb[3] - ea[3])) * g
        d = ellipse_sdf(u - cx, v - cy, a, b)
        return np.maximum(d, np.maximum(-za, zb))


# ----------------------------------------------------------------------------- composition
class Union(Solid):
    def __init__(self, children: Sequence[Solid]):
        self.children = list(children)

    def _compute_bounds(self):
        if any(c.bounds() is None for c in self.children):
            return None
        return _merge([c.bounds() for c in self.children])

    def sdf(self, x, y, z):
        out = None
        for c in self.children:
            d = c.sdf(x, y, z)
            out = d if out is None else np.minimum(out, d)
        return out

    def _sdf_pts(self, p):
        out = np.full(len(p), FAR_MM)
        for c in self.children:
            m = _in_bounds(p, c.bounds())
            if np.any(m):
                out[m] = np.minimum(out[m], c._sdf_pts(p[m]))
        return out

    def sdf_grid(self, grid, box):
        out = np.full(_box_shape(box), FAR_MM, dtype=np.float32)
        for c in self.children:
            own = grid.index_box(c.bounds())
            sub = None if own is None else _box_and(own, box)
            if sub is None:
                continue
            r = _sub(box, sub)
            np.minimum(out[r], c.sdf_grid(grid, sub), out=out[r])
        return out


class Intersection(Solid):
    """Intersection; children may be unbounded (half-spaces, :class:`Avoid`)."""

    def __init__(self, children: Sequence[Solid]):
        self.children = list(children)

    def _compute_bounds(self):
        return _intersect([c.bounds() for c in self.children])

    def sdf(self, x, y, z):
        out = None
        for c in self.children:
            d = c.sdf(x, y, z)
            out = d if out is None else np.maximum(out, d)
        return out

    def _sdf_pts(self, p):
        out = np.full(len(p), FAR_MM)
        m = _in_bounds(p, self.bounds())
        if not np.any(m):
            return out
        q = p[m]
        acc = np.full(len(q), -FAR_MM)
        for c in self.children:
            acc = np.maximum(acc, c._sdf_pts(q))
        out[m] = acc
        return out

    def sdf_grid(self, grid, box):
        shape = _box_shape(box)
        own = grid.index_box(self.bounds())
        sub = None if own is None else _box_and(own, box)
        if sub is None:
            return np.full(shape, FAR_MM, dtype=np.float32)
        acc = None
        for c in self.children:
            d = c.sdf_grid(grid, sub)
            acc = d if acc is None else np.maximum(acc, d, out=acc)
        if sub == box:
            return acc
        out = np.full(shape, FAR_MM, dtype=np.float32)
        out[_sub(box, sub)] = acc
        return out


class Difference(Solid):
    """`a` minus `b`."""

    def __init__(self, a: Solid, b: Solid):
        self.a, self.b = a, b

    def _compute_bounds(self):
        return self.a.bounds()

    def sdf(self, x, y, z):
        return np.maximum(self.a.sdf(x, y, z), -self.b.sdf(x, y, z))

    def _sdf_pts(self, p):
        out = self.a._sdf_pts(p)
        m = _in_bounds(p, self.b.bounds()) & (out < FAR_MM)
        if np.any(m):
            out[m] = np.maximum(out[m], -self.b._sdf_pts(p[m]))
        return out

    def sdf_grid(self, grid, box):
        out = self.a.sdf_grid(grid, box)
        own = grid.index_box(self.b.bounds())
        sub = None if own is None else _box_and(own, box)
        if sub is not None:
            r = _sub(box, sub)
            np.maximum(out[r], -self.b.sdf_grid(grid, sub), out=out[r])
        return out


class Avoid(Solid):
    """Everything at least `gap_mm` (by the neighbour's sdf) outside `neighbour`: use inside an
    :class:`Intersection` to keep a part clear of another bone. Unbounded; it is evaluated only
    in the neighbour's box (padded by the gap), elsewhere it is "far inside"."""

    def __init__(self, neighbour: Solid, gap_mm: float):
        self.neighbour, self.gap = neighbour, float(gap_mm)

    def _compute_bounds(self):
        return None

    def _influence(self):
        return self.neighbour.bounds()

    def sdf(self, x, y, z):
        return self.gap - self.neighbour.sdf(x, y, z)

    def _sdf_pts(self, p):
        out = np.full(len(p), -FAR_MM)
        m = _in_bounds(p, self._influence(), pad=self.gap + PAD_MM)
        if np.any(m):
            out[m] = self.gap - self.neighbour._sdf_pts(p[m])
        return out

    def sdf_grid(self, grid, box):
        own = grid.index_box(self._influence(), pad_mm=self.gap + PAD_MM)
        sub = None if own is None else _box_and(own, box)
        if sub == box:
            d = self.neighbour.sdf_grid(grid, sub)
            np.subtract(self.gap, d, out=d)
            return d
        out = np.full(_box_shape(box), -FAR_MM, dtype=np.float32)
        if sub is not None:
            out[_sub(box, sub)] = self.gap - self.neighbour.sdf_grid(grid, sub)
        return out


class Custom(Solid):
    """A solid from a function ``sdf(x, y, z)`` and fixed bounds (torso, iliac wing)."""

    def __init__(self, fn: Callable, bounds: Bounds | None):
        self._fn, self._bounds = fn, bounds

    def _compute_bounds(self):
        return self._bounds

    def sdf(self, x, y, z):
        return self._fn(x, y, z)


def keep_side(point_world_mm: ArrayLike, normal_world: ArrayLike, *, offset_mm: float = 0.0) -> HalfSpace:
    """Half-space of points with (p - point) . normal >= offset_mm (the side `normal` points to)."""
    n = np.asarray(normal_world, float)
    n = n / np.linalg.norm(n)
    return HalfSpace(np.asarray(point_world_mm, float) + offset_mm * n, -n)

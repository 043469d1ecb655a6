"""Point-based rigid registration: paired points (fiducials, landmarks) and surface ICP.

Paired points
    Least-squares rigid fit (Arun, Huang & Blostein 1987; Umeyama 1991) by SVD of the
    cross-covariance, with the reflection case handled (the sign of the last singular vector
    is flipped when det < 0, so the result is always a proper rotation). Reported beside the
    transform: the fiducial registration error (FRE, RMS residual), the fiducial localisation
    error it implies (``<FRE^2> = (1 - 2/N) FLE^2``, Fitzpatrick, West & Maurer 1998) and the
    predicted target registration error at any target (same paper, eq. 46):
    ``TRE^2(r) ~= FLE^2 / N * (1 + 1/3 * sum_k d_k^2 / f_k^2)``, d_k = distance of the target
    from principal axis k of the fiducial configuration, f_k = RMS distance of the fiducials
    from that axis. The TRE, not the FRE, is what to show a surgeon: the two are uncorrelated
    (clinical-reference.md section 4.1, [SHAMIR11], [TRE-RMS]).
Surface ICP
    Digitised bone points (e.g. a tracked pointer on the exposed lamina) to a dense point
    cloud of the vertebra's surface (Besl & McKay 1992, point-to-point, nearest neighbours
    by ``scipy.spatial.cKDTree``), each iteration rejecting outliers by a robust MAD test on
    the distances (Masuda & Yokoya style), then a paired-point fit on the inliers.

>>> import numpy as np
>>> pts = np.array([[0.0, 0, 0], [50, 0, 0], [0, 40, 0], [0, 0, 30]])
>>> T = np.eye(4); T[:3, 3] = (5.0, -2.0, 1.0)
>>> r = register_paired_points(pts, pts + T[:3, 3])
>>> bool(r.ok), np.round(r.T_fixed_from_moving[:3, 3], 6).tolist(), round(r.fre_mm, 9)
(True, [5.0, -2.0, 1.0], 0.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial import cKDTree

from spinenav.errors import SpinenavError


class PointRegistrationError(SpinenavError, ValueError):
    """Bad input to a point-based registration (shapes, too few or degenerate points)."""


def _points(a: ArrayLike, name: str, min_n: int = 1) -> NDArray[np.float64]:
    p = np.asarray(a, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise PointRegistrationError(f"{name} must have shape (N, 3) (points in mm), got {p.shape}")
    if p.shape[0] < min_n:
        raise PointRegistrationError(f"{name} needs at least {min_n} points, got {p.shape[0]}")
    if not np.all(np.isfinite(p)):
        raise PointRegistrationError(f"{name} contains NaN or infinite coordinates")
    return p


def apply_transform(T: ArrayLike, points_mm: ArrayLike) -> NDArray[np.float64]:
    """Points (..., 3) mapped by a 4x4 rigid transform."""
    T = np.asarray(T, dtype=np.float64)
    p = np.asarray(points_mm, dtype=np.float64)
    return p @ T[:3, :3].T + T[:3, 3]


def rigid_fit(moving_mm: NDArray[np.float64], fixed_mm: NDArray[np.float64],
              weights: NDArray[np.float64] | None = None) -> NDArray[np.float64]:
    """4x4 proper rigid T minimising sum w |T moving - fixed|^2 (SVD; reflections excluded)."""
    w = np.ones(len(moving_mm)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    cm = w @ moving_mm
    cf = w @ fixed_mm
    H = (moving_mm - cm).T @ ((fixed_mm - cf) * w[:, None])
    U, _, Vt = np.linalg.svd(H)
    D = np.eye(3)
    D[2, 2] = 1.0 if np.linalg.det(Vt.T @ U.T) > 0 else -1.0  # reflection -> flip the weakest axis
    R = Vt.T @ D @ U.T
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = cf - R @ cm
    return T


def predicted_tre_mm(fiducials_mm: ArrayLike, targets_mm: ArrayLike, fle_mm: float) -> NDArray[np.float64]:
    """Expected RMS target registration error at each target (Fitzpatrick, West & Maurer 1998).

    ``TRE^2(r) = FLE^2 / N * (1 + 1/3 * sum_k d_k^2 / f_k^2)`` with the principal axes of the
    fiducial configuration (fiducials and targets in the same frame, mm).

    Parameters
    ----------
    fiducials_mm : (N, 3) array_like
    targets_mm : (M, 3) or (3,) array_like
    fle_mm : float
        RMS fiducial localisation error (3D), mm.

    Returns
    -------
    ndarray, (M,) or scalar shape
        Predicted RMS TRE, mm.
    """
    f = _points(fiducials_mm, "fiducials_mm", 3)
    t = np.asarray(targets_mm, dtype=np.float64)
    single = t.ndim == 1
    t = _points(t.reshape(-1, 3), "targets_mm")
    if not fle_mm >= 0:
        raise PointRegistrationError(f"fle_mm must be >= 0, got {fle_mm}")
    c = f.mean(axis=0)
    _, _, Vt = np.linalg.svd(f - c)
    fc = (f - c) @ Vt.T  # fiducials in principal-axis coordinates
    tc = (t - c) @ Vt.T
    ratio = np.zeros(len(t))
    for k in range(3):
        others = [a for a in range(3) if a != k]
        f2 = np.mean(np.sum(fc[:, others] ** 2, axis=1))  # mean squared distance from axis k
        d2 = np.sum(tc[:, others] ** 2, axis=1)
        if f2 <= 1e-12:
            raise PointRegistrationError("fiducials are collinear: the TRE is unbounded")
        ratio += d2 / f2
    tre = np.sqrt(fle_mm ** 2 / len(f) * (1.0 + ratio / 3.0))
    return tre[0] if single else tre


@dataclass(frozen=True)
class PairedPointResult:
    """Result of :func:`register_paired_points`.

    Attributes
    ----------
    T_fixed_from_moving : (4, 4) ndarray
    fre_mm : float
        RMS fiducial registration error, mm.
    residuals_mm : (N,) ndarray
        Per-fiducial distances after the fit, mm.
    fle_estimate_mm : float
        FLE implied by the FRE, ``FRE / sqrt(1 - 2/N)`` (NaN-free: inf when N <= 2).
    ok : bool
    reason : str
        Empty when ok; otherwise why the fit should not be trusted.
    """

    T_fixed_from_moving: NDArray[np.float64]
    fre_mm: float
    residuals_mm: NDArray[np.float64]
    fle_estimate_mm: float
    moving_mm: NDArray[np.float64]
    ok: bool
    reason: str = ""

    def predicted_tre_mm(self, targets_moving_mm: ArrayLike, fle_mm: float | None = None) -> NDArray[np.float64]:
        """Predicted RMS TRE at targets given in the moving frame (FLE default: the estimate)."""
        return predicted_tre_mm(self.moving_mm, targets_moving_mm,
                                self.fle_estimate_mm if fle_mm is None else fle_mm)


def register_paired_points(moving_mm: ArrayLike, fixed_mm: ArrayLike, *, weights: ArrayLike | None = None,
                           max_fre_mm: float = 2.0) -> PairedPointResult:
    """Rigid transform mapping ``moving_mm`` onto the paired ``fixed_mm`` (least squares, SVD).

    Parameters
    ----------
    moving_mm, fixed_mm : (N, 3) array_like
        Corresponding points, N >= 3, mm (e.g. CT fiducials and their tracked positions).
    weights : (N,) array_like, optional
        Non-negative weights.
    max_fre_mm : float
        Above this FRE the result is flagged not ok (a mismatched pair is the usual cause).

    Raises
    ------
    PointRegistrationError
        Shapes differ, fewer than 3 points, or the moving points are collinear.
    """
    m = _points(moving_mm, "moving_mm", 3)
    f = _points(fixed_mm, "fixed_mm", 3)
    if m.shape != f.shape:
        raise PointRegistrationError(f"moving_mm {m.shape} and fixed_mm {f.shape} must be paired (same shape)")
    sv = np.linalg.svd(m - m.mean(axis=0), compute_uv=False)
    if sv[1] <= 1e-6 * max(sv[0], 1e-12):
        raise PointRegistrationError("moving points are collinear (or coincident): the rotation is undefined")
    w = None
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if w.shape != (len(m),) or np.any(w < 0) or not w.sum() > 0:
            raise PointRegistrationError(f"weights must be {len(m)} non-negative numbers, not all zero")
    T = rigid_fit(m, f, w)
    res = np.linalg.norm(apply_transform(T, m) - f, axis=1)
    fre = float(np.sqrt(np.mean(res ** 2)))
    n = len(m)
    fle = fre / math.sqrt(1.0 - 2.0 / n) if n > 2 else math.inf
    reasons = []
    if fre > max_fre_mm:
        reasons.append(f"FRE {fre:.2f} mm > {max_fre_mm:.2f} mm: a point is probably mismatched or moved")
    if n == 3:
        reasons.append("only 3 points: no redundancy to check the fit")
    return PairedPointResult(T, fre, res, fle, m, ok=not reasons, reason="; ".join(reasons))


@dataclass(frozen=True)
class IcpResult:
    """Result of :func:`icp_register`.

    Attributes
    ----------
    T_fixed_from_moving : (4, 4) ndarray
        Maps the digitised points (moving frame, e.g. tracker) onto the surface (fixed, e.g. CT).
    rms_mm : float
        RMS distance of the inliers to the surface after the fit, mm.
    inlier_fraction : float
    inliers : (N,) bool ndarray
    n_iterations : int
    ok : bool
    reason : str
    """

    T_fixed_from_moving: NDArray[np.float64]
    rms_mm: float
    inlier_fraction: float
    inliers: NDArray[np.bool_]
    n_iterations: int
    ok: bool
    reason: str = ""


def _point_to_plane_step(p: NDArray[np.float64], q: NDArray[np.float64], n: NDArray[np.float64]) -> NDArray[np.float64]:
    """Linearised point-to-plane rigid step (Chen & Medioni 1992): minimise sum ((R p + t - q).n)^2."""
    from scipy.spatial.transform import Rotation

    A = np.c_[np.cross(p, n), n]
    b = -np.einsum("ij,ij->i", p - q, n)
    x, *_ = np.linalg.lstsq(A, b, rcond=None)
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(x[:3]).as_matrix()
    T[:3, 3] = x[3:]
    return T


def icp_register(moving_mm: ArrayLike, surface_fixed_mm: ArrayLike, *, surface_normals: ArrayLike | None = None,
                 T_init: ArrayLike | None = None,
                 max_iterations: int = 100, tolerance_mm: float = 1e-4, mad_k: float = 3.0,
                 min_inlier_distance_mm: float = 1.0, max_rms_mm: float = 1.0,
                 min_inlier_fraction: float = 0.7) -> IcpResult:
    """Surface ICP of digitised points onto a dense surface point cloud, with outlier rejection.

    Each iteration: nearest surface point of every moving point; inliers are the points whose
    distance is <= max(median + mad_k * 1.4826 * MAD, ``min_inlier_distance_mm``); rigid fit on
    the inliers; stop when the transform changes by less than ``tolerance_mm`` at the points.

    Parameters
    ----------
    moving_mm : (N, 3) array_like
        Digitised points, N >= 6.
    surface_fixed_mm : (M, 3) array_like
        The surface, sampled densely (spacing well below the wanted accuracy; e.g. the
        marching-cubes vertices of a vertebra mask), fixed frame, mm.
    surface_normals : (M, 3) array_like, optional
        Unit normals at those points: point-to-plane steps (Chen & Medioni 1992), which slide
        along the surface and converge far better than point-to-point (Besl & McKay), used
        otherwise.
    T_init : (4, 4), optional
        Initial T_fixed_from_moving (e.g. from a paired-point fit on 3-4 landmarks). ICP is
        local: on the phantom's L4 (posterior points), point-to-point from a raw 10 mm / 6 deg offset stalled at
        1.2 mm mean error, a 4-landmark start (1.1 mm) converged to 0.23 mm.
    max_rms_mm, min_inlier_fraction : float
        The result is flagged not ok above / below these.
    """
    m = _points(moving_mm, "moving_mm", 6)
    s = _points(surface_fixed_mm, "surface_fixed_mm", 10)
    T = np.eye(4) if T_init is None else np.asarray(T_init, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise PointRegistrationError(f"T_init must be a finite 4x4 matrix, got shape {T.shape}")
    normals = None
    if surface_normals is not None:
        normals = _points(surface_normals, "surface_normals", len(s))
        if normals.shape != s.shape:
            raise PointRegistrationError(f"surface_normals {normals.shape} must match surface_fixed_mm {s.shape}")
    tree = cKDTree(s)
    inl = np.ones(len(m), bool)
    it = 0
    converged = False
    for it in range(1, max_iterations + 1):
        moved = apply_transform(T, m)
        d, idx = tree.query(moved)
        med = np.median(d)
        mad = np.median(np.abs(d - med))
        thr = max(med + mad_k * 1.4826 * mad, min_inlier_distance_mm)
        inl = d <= thr
        if inl.sum() < 6:
            break
        if normals is None:
            T_step = rigid_fit(moved[inl], s[idx[inl]])
        else:
            T_step = _point_to_plane_step(moved[inl], s[idx[inl]], normals[idx[inl]])
        T = T_step @ T
        change = np.max(np.linalg.norm(apply_transform(T_step, moved) - moved, axis=1))
        if change < tolerance_mm:
            converged = True
            break
    d, _ = tree.query(apply_transform(T, m))
    med = np.median(d)
    mad = np.median(np.abs(d - med))
    inl = d <= max(med + mad_k * 1.4826 * mad, min_inlier_distance_mm)
    rms = float(np.sqrt(np.mean(d[inl] ** 2))) if inl.any() else math.inf
    frac = float(inl.mean())
    reasons = []
    if not converged:
        reasons.append(f"did not converge in {max_iterations} iterations")
    if rms > max_rms_mm:
        reasons.append(f"RMS {rms:.2f} mm > {max_rms_mm:.2f} mm: points do not lie on this surface")
    if frac < min_inlier_fraction:
        reasons.append(f"only {frac:.0%} inliers (< {min_inlier_fraction:.0%}): wrong surface or start too far")
    return IcpResult(T, rms, frac, inl, it, ok=not reasons, reason="; ".join(reasons))


def surface_points_from_mask(mask: NDArray[np.bool_], affine: ArrayLike, *,
                             step: int = 1) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Marching-cubes vertices and unit outward normals (world mm) of a binary mask on a grid
    with ``affine`` (T_world_from_index)."""
    from skimage.measure import marching_cubes

    m = np.asarray(mask, dtype=np.float32)
    if m.ndim != 3 or not m.any():
        raise PointRegistrationError("mask must be a non-empty 3D array")
    verts, _, normals, _ = marching_cubes(np.pad(m, 1), 0.5, step_size=step)
    A = np.asarray(affine, dtype=np.float64)
    pts = apply_transform(A, verts - 1.0)
    n = normals @ np.linalg.inv(A[:3, :3])  # covectors: (A^-T n)
    n = -n / np.linalg.norm(n, axis=1, keepdims=True)  # skimage's gradient points inwards (to higher values)
    return pts, n

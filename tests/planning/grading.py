"""Independent screw grading for the planning tests: is every point of the screw (from its seat
to its tip) at least `margin_mm` inside the vertebra of a reference label map?

Written apart from the planner (no distance field, no k-d tree): the screw surface is sampled
every 0.5 mm along and every 15 degrees around, and each sample is tested by nearest-voxel
lookups of the reference label map at `margin_mm` in 66 directions (a Fibonacci sphere plus the
6 axes) and at half that distance: every lookup must hit the vertebra's label.
"""

from __future__ import annotations

import numpy as np


def _directions(n: int = 60) -> np.ndarray:
    k = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * k / n)
    theta = np.pi * (1 + 5 ** 0.5) * k
    d = np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], axis=1)
    return np.vstack([d, np.eye(3), -np.eye(3)])


def screw_surface_points(entry, tip, axis, diameter_mm, seat_mm, *, step_mm=0.5, n_around=24):
    entry, tip, a = (np.asarray(x, float) for x in (entry, tip, axis))
    a = a / np.linalg.norm(a)
    ref = np.array([0.0, 0.0, 1.0]) if abs(a[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = np.cross(a, ref)
    u /= np.linalg.norm(u)
    v = np.cross(a, u)
    L = float(np.linalg.norm(tip - entry))
    s = np.arange(seat_mm, L + 1e-6, step_mm)
    ang = np.linspace(0, 2 * np.pi, n_around, endpoint=False)
    ring = np.cos(ang)[:, None] * u + np.sin(ang)[:, None] * v
    r = diameter_mm / 2
    side = (entry + s[:, None] * a)[:, None, :] + r * ring[None, :, :]
    cap_r = np.linspace(0, r, 4)
    cap = tip + (cap_r[:, None, None] * ring[None, :, :]).reshape(-1, 3)
    return np.vstack([side.reshape(-1, 3), cap])


def fraction_outside_margin(labels, label_id, points, margin_mm) -> float:
    """Share of `points` that have non-`label_id` voxels within `margin_mm` (nearest voxel)."""
    dirs = _directions()
    probes = np.vstack([(points[:, None, :] + f * margin_mm * dirs[None]).reshape(-1, 3) for f in (1.0, 0.5)]
                       + [points])
    ijk = np.rint(labels.index_from_world(probes)).astype(int)
    arr = np.asarray(labels.array)
    ok = np.all((ijk >= 0) & (ijk < np.array(arr.shape)), axis=1)
    hit = np.zeros(len(ijk), bool)
    hit[ok] = arr[ijk[ok, 0], ijk[ok, 1], ijk[ok, 2]] == label_id
    n, nd = len(points), len(dirs)
    blocks = np.concatenate([hit[:nd * n].reshape(n, nd), hit[nd * n:2 * nd * n].reshape(n, nd),
                             hit[2 * nd * n:, None]], axis=1)
    return float(1.0 - blocks.all(axis=1).mean())

"""Skin incisions: every skin entry (screw or tube), merged where entries are close enough to
share one incision.

Entries whose skin points lie within ``merge_distance_mm`` of each other (single linkage,
default 20 mm: assumed, no source in the reference) share one incision. An incision runs
cranio-caudally along the skin (the spine's cranial axis with its component along the skin
normal removed); its length spans the extreme entries plus one entry's own width (a screw's
``screw_incision_mm``, default 15 mm, assumed; a tube's diameter).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from spinenav.anatomy.model import vec3
from spinenav.planning.plan import Incision


@dataclass
class SkinEntry:
    item: str  # screw or corridor id
    point_world_mm: NDArray[np.float64]
    side: str
    width_mm: float


def _clusters(points: NDArray, threshold: float) -> list[list[int]]:
    n = len(points)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            if np.linalg.norm(points[i] - points[j]) <= threshold:
                parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return sorted(groups.values(), key=lambda g: min(g))


def plan_incisions(entries: list[SkinEntry], *, cranial_world: NDArray, posterior_world: NDArray,
                   left_world: NDArray, midline_world_mm: NDArray, merge_distance_mm: float
                   ) -> tuple[list[Incision], float]:
    """Incisions for `entries` and their total length (mm).

    Parameters
    ----------
    cranial_world, posterior_world, left_world : (3,) array
        The spine's axes (e.g. the mean vertebra frame): the incision runs along cranial
        (projected on the skin), the skin normal is posterior, lr tells the sides.
    midline_world_mm : (3,) array
        A point on the midsagittal plane (the paramedian offset is measured from it).
    """
    if not entries:
        return [], 0.0
    n = np.asarray(posterior_world, float)
    n /= np.linalg.norm(n)
    d = np.asarray(cranial_world, float) - (np.asarray(cranial_world, float) @ n) * n
    d /= np.linalg.norm(d)
    lr = np.asarray(left_world, float)
    pts = np.array([e.point_world_mm for e in entries])
    out: list[Incision] = []
    for k, group in enumerate(_clusters(pts, merge_distance_mm), start=1):
        gp = pts[group]
        t = (gp - gp.mean(axis=0)) @ d
        width = max(entries[i].width_mm for i in group)
        length = float(t.max() - t.min() + width)
        centre = gp.mean(axis=0) + d * 0.5 * (t.max() + t.min())
        offs = (gp - midline_world_mm) @ lr
        sides = {entries[i].side for i in group}
        side = sides.pop() if len(sides) == 1 else "midline"
        out.append(Incision(id=f"incision-{k}", side=side, centre_world_mm=vec3(centre),  # type: ignore[arg-type]
                            direction_world=vec3(d), start_world_mm=vec3(centre - d * length / 2),
                            end_world_mm=vec3(centre + d * length / 2), length_mm=length,
                            entries=[entries[i].item for i in group],
                            paramedian_offset_mm=float(np.abs(offs).mean())))
    return out, float(sum(i.length_mm for i in out))

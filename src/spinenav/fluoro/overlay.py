"""The plan on the image: points, segments and cylinders (screws, trajectories, tubes, incisions)
projected onto a shot with its C-arm geometry, drawn into an overlay PNG.

Geometry in, pixels out: :func:`project_items` takes plain geometry (:class:`OverlayItem`),
so it works without a plan; :func:`plan_items` / :func:`overlay_plan` read a
:class:`~spinenav.planning.plan.SurgicalPlan` (screws, tubular corridors, incisions).
Pixels follow :mod:`spinenav.fluoro.carm` ((u, v) = (column, row), origin at the centre of the
top-left pixel).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from spinenav.atomic import atomic_output
from spinenav.errors import SpinenavError
from spinenav.fluoro.carm import CarmGeometry, CarmPose, T_camera_from_world, project_points, projection_matrix

ItemKind = Literal["point", "segment", "cylinder"]
COLOURS = {"screw": "#ffcc00", "trajectory": "#00e5ff", "tube": "#66ff66", "incision": "#ff4d4d", "point": "#ff66ff"}


class OverlayError(SpinenavError):
    """Overlay input that cannot be drawn (no geometry, bad item)."""


@dataclass(frozen=True)
class OverlayItem:
    """One thing to draw: a point (``a``), a segment (``a`` -> ``b``) or a cylinder (``a`` -> ``b``
    with ``diameter_mm``), in world LPS mm. ``role`` picks the colour (screw, trajectory, tube,
    incision, point)."""

    kind: ItemKind
    a_world_mm: tuple[float, float, float]
    b_world_mm: tuple[float, float, float] | None = None
    diameter_mm: float | None = None
    label: str = ""
    role: str = "point"

    def __post_init__(self) -> None:
        if self.kind not in ("point", "segment", "cylinder"):
            raise OverlayError(f"item kind must be point, segment or cylinder, got {self.kind!r}")
        if self.kind != "point" and self.b_world_mm is None:
            raise OverlayError(f"a {self.kind} needs two points ({self.label or 'unnamed'})")
        if self.kind == "cylinder" and not (self.diameter_mm or 0) > 0:
            raise OverlayError(f"a cylinder needs diameter_mm > 0 ({self.label or 'unnamed'})")


@dataclass(frozen=True)
class ProjectedItem:
    """An item on the detector: pixel ends, apparent width (cylinders), visibility."""

    item: OverlayItem
    a_px: NDArray[np.float64]
    b_px: NDArray[np.float64] | None
    width_px: float
    in_view: bool


def project_items(geometry: CarmGeometry, pose: CarmPose, items: list[OverlayItem]) -> list[ProjectedItem]:
    """Project items onto the detector. A cylinder's apparent width is its diameter magnified at
    the depth of its nearer end (SID / depth / pixel pitch)."""
    P = projection_matrix(geometry, pose)
    T = T_camera_from_world(geometry, pose)
    pitch = float(np.mean(geometry.pixel_spacing_mm))
    out = []
    for it in items:
        pts = [it.a_world_mm] + ([it.b_world_mm] if it.b_world_mm is not None else [])
        px = project_points(P, np.asarray(pts, dtype=np.float64))
        width = 0.0
        if it.kind == "cylinder":
            depth = min(float((T[:3, :3] @ np.asarray(p, float) + T[:3, 3])[2]) for p in pts)
            width = float(it.diameter_mm) * geometry.sdd_mm / max(depth, 1e-6) / pitch  # type: ignore[arg-type]
        finite = np.all(np.isfinite(px))
        inside = finite and bool(np.any((px[:, 0] >= -0.5) & (px[:, 0] <= geometry.cols - 0.5)
                                        & (px[:, 1] >= -0.5) & (px[:, 1] <= geometry.rows - 0.5)))
        out.append(ProjectedItem(it, px[0], px[1] if len(px) > 1 else None, width, inside))
    return out


def screw_tip_px(geometry: CarmGeometry, pose: CarmPose, tip_world_mm: ArrayLike) -> NDArray[np.float64]:
    """Pixel (u, v) of a screw tip (any world point) for a pose."""
    return project_points(projection_matrix(geometry, pose), np.asarray(tip_world_mm, dtype=np.float64))


def write_overlay_png(path: str | os.PathLike[str], image_u8: ArrayLike, geometry: CarmGeometry, pose: CarmPose,
                      items: list[OverlayItem], *, title: str = "", labels: bool = True) -> Path:
    """Draw the projected items over an 8-bit image and write a PNG (atomic), 1 image pixel per
    output pixel (at least 512 px wide)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = np.asarray(image_u8)
    if img.shape[:2] != (geometry.rows, geometry.cols):
        raise OverlayError(f"image is {img.shape[:2]} but the geometry is {geometry.rows}x{geometry.cols}")
    scale = max(1.0, 512.0 / geometry.cols)
    dpi = 100.0
    fig = plt.figure(figsize=(geometry.cols * scale / dpi, geometry.rows * scale / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    px_to_pt = 72.0 / dpi * scale
    for pr in project_items(geometry, pose, items):
        if not np.all(np.isfinite(pr.a_px)):
            continue
        colour = COLOURS.get(pr.item.role, COLOURS["point"])
        if pr.item.kind == "point":
            ax.plot(*pr.a_px, marker="+", color=colour, markersize=12, mew=2)
        else:
            lw = max(1.0, pr.width_px * px_to_pt) if pr.item.kind == "cylinder" else 1.5
            alpha = 0.55 if pr.item.kind == "cylinder" else 1.0
            ax.plot([pr.a_px[0], pr.b_px[0]], [pr.a_px[1], pr.b_px[1]], color=colour, lw=lw, alpha=alpha,
                    solid_capstyle="butt")
            ax.plot(*pr.b_px, marker="o", color=colour, markersize=3)
        if labels and pr.item.label:
            ax.text(pr.a_px[0] + 4, pr.a_px[1] - 4, pr.item.label, color=colour, fontsize=7)
    if title:
        ax.text(4, 12, title, color="white", fontsize=8)
    ax.set_xlim(-0.5, geometry.cols - 0.5)
    ax.set_ylim(geometry.rows - 0.5, -0.5)
    ax.axis("off")
    p = Path(path)
    with atomic_output(p) as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    return p


# ----------------------------------------------------------------------------- the plan
def plan_items(plan: Any) -> list[OverlayItem]:
    """Overlay items of a :class:`~spinenav.planning.plan.SurgicalPlan`: each screw as a cylinder
    (bone entry -> tip, its diameter) plus its skin-to-bone trajectory, each tubular corridor as a
    cylinder (skin/docking -> target, tube diameter), each incision as a segment."""
    items: list[OverlayItem] = []
    for s in plan.screws:
        items.append(OverlayItem("cylinder", tuple(s.entry_bone_world_mm), tuple(s.tip_world_mm), s.diameter_mm,
                                 label=s.id, role="screw"))
        if s.entry_skin_world_mm is not None:
            items.append(OverlayItem("segment", tuple(s.entry_skin_world_mm), tuple(s.entry_bone_world_mm),
                                     role="trajectory"))
    for c in plan.corridors:
        start = c.skin_entry_world_mm if c.skin_entry_world_mm is not None else c.docking_world_mm
        items.append(OverlayItem("cylinder", tuple(start), tuple(c.target_world_mm), c.tube_diameter_mm,
                                 label=c.id, role="tube"))
    for inc in plan.incisions:
        items.append(OverlayItem("segment", tuple(inc.start_world_mm), tuple(inc.end_world_mm), label=inc.id,
                                 role="incision"))
    return items


def overlay_plan(shot: Any, plan: Any, path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Write ``path``: the plan's screws, tubes and incisions drawn on a :class:`~spinenav.fluoro.shots.Shot`."""
    if not getattr(shot, "has_geometry", False):
        raise OverlayError(f"{getattr(shot, 'source', 'shot')}: no C-arm geometry, the plan cannot be projected")
    img = np.asarray(shot.image, dtype=np.float64)
    lo, hi = np.percentile(img, (0.5, 99.5))
    u8 = (np.clip((img - lo) / max(hi - lo, 1e-9), 0, 1) * 255 + 0.5).astype(np.uint8)
    return write_overlay_png(path, u8, shot.geometry, shot.pose, plan_items(plan), title=title)

"""Figures of a surgical plan, from plain geometry and Volumes, rendered to PNG bytes.

Nothing here knows the plan schema: every function takes positions in world LPS mm, sizes
in mm and the CT / label Volumes, so the same pictures serve the report, the CLI and tests.

Display conventions (the same as :mod:`spinenav.app.figures`, radiological):

* axial views are seen from the feet: the patient's right on the image's left, anterior up;
* sagittal views are seen from the patient's left: anterior on the image's left, head up;
* the posterior skin view is seen from behind the (prone) patient: the patient's left on the
  image's left, head up.

Oblique reformats label every image edge with the LPS letter its direction points to most
(:func:`edge_letter`), computed from the plane itself, so a flipped axis shows at a glance.
Every function returns PNG bytes (dpi about 100, well under 300 KB) for embedding as a data URI.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Polygon  # noqa: E402
from numpy.typing import ArrayLike, NDArray  # noqa: E402
from scipy import ndimage  # noqa: E402

from spinenav.imaging.resample import WINDOWS_HU, reorient_to_lps, resample_to_grid, window  # noqa: E402
from spinenav.imaging.volume import AIR_HU, Volume  # noqa: E402

#: Dots per inch of every report figure: light files, sharp enough on screen.
DPI = 100
#: HU above which a voxel counts as bone in projections (cortical and dense cancellous bone).
BONE_HU = 250.0
#: Window (level, width) HU of the access views: fat dark, muscle mid-grey, bone bright, so
#: both the muscle a tube passes and the lamina it docks on show.
ACCESS_WINDOW_HU = (150.0, 900.0)
#: HU above which a voxel counts as body (skin, fat, muscle) rather than air.
BODY_HU = -400.0

_LETTERS = (("R", "L"), ("A", "P"), ("I", "S"))  # (negative, positive) end of x, y, z in LPS
_SCREW_OK = "#35d435"
_SCREW_DOUBT = "#ffb000"
_SCREW_BAD = "#ff3b3b"


def _unit(v: ArrayLike, name: str) -> NDArray[np.float64]:
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    if a.shape != (3,) or not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be 3 finite numbers, got {v!r}")
    n = float(np.linalg.norm(a))
    if n < 1e-9:
        raise ValueError(f"{name} must not be the zero vector")
    return a / n


def _point(p: ArrayLike, name: str) -> NDArray[np.float64]:
    a = np.asarray(p, dtype=np.float64).reshape(-1)
    if a.shape != (3,) or not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be 3 finite numbers (LPS mm), got {p!r}")
    return a


def edge_letter(direction_world: ArrayLike) -> str:
    """The LPS letter a world direction points to most: ``edge_letter([0, -1, 0.2]) == 'A'``."""
    d = _unit(direction_world, "direction_world")
    axis = int(np.argmax(np.abs(d)))
    return _LETTERS[axis][int(d[axis] > 0)]


def png_bytes(fig, *, dpi: int = DPI, facecolor: str | None = None) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor=facecolor or fig.get_facecolor(),
                pil_kwargs={"optimize": True})
    plt.close(fig)
    return buf.getvalue()


# ----------------------------------------------------------------------------- reformat plane
@dataclass(frozen=True)
class ReformatPlane:
    """A rectangle in the patient: image columns run along `u_world`, rows along `v_world`.

    Parameters
    ----------
    origin_world_mm : (3,) array
        Centre of the image, LPS mm.
    u_world, v_world : (3,) array
        Orthonormal in-plane directions: +u points to the image's right, +v up.
    half_width_mm, half_height_mm : float
        Half extents along u and v, mm.
    pixel_mm : float
        Sample spacing, mm.
    """

    origin_world_mm: NDArray[np.float64]
    u_world: NDArray[np.float64]
    v_world: NDArray[np.float64]
    half_width_mm: float
    half_height_mm: float
    pixel_mm: float = 0.4

    @classmethod
    def through(cls, origin_world_mm: ArrayLike, u_world: ArrayLike, v_hint_world: ArrayLike, *,
                half_width_mm: float, half_height_mm: float, pixel_mm: float = 0.4) -> ReformatPlane:
        """The plane through `origin` spanned by `u` and `v_hint`; v is `v_hint` made
        orthogonal to u (Gram-Schmidt), so the plane contains both directions exactly."""
        o = _point(origin_world_mm, "origin_world_mm")
        u = _unit(u_world, "u_world")
        v = np.asarray(v_hint_world, dtype=np.float64) - (np.asarray(v_hint_world, float) @ u) * u
        if np.linalg.norm(v) < 1e-6:
            raise ValueError("reformat plane: the two in-plane directions are parallel")
        if not (half_width_mm > 0 and half_height_mm > 0 and pixel_mm > 0):
            raise ValueError("reformat plane: half sizes and pixel_mm must be > 0")
        return cls(o, u, v / np.linalg.norm(v), float(half_width_mm), float(half_height_mm),
                   float(pixel_mm))

    @property
    def normal_world(self) -> NDArray[np.float64]:
        return np.cross(self.u_world, self.v_world)

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """matplotlib ``imshow`` extent (left, right, bottom, top) in plane mm, origin 'lower'."""
        return (-self.half_width_mm, self.half_width_mm, -self.half_height_mm, self.half_height_mm)

    def grid_world_mm(self) -> NDArray[np.float64]:
        """Sample positions, shape (rows, cols, 3); row 0 is the bottom (-v) edge."""
        us = np.arange(-self.half_width_mm, self.half_width_mm + 1e-9, self.pixel_mm)
        vs = np.arange(-self.half_height_mm, self.half_height_mm + 1e-9, self.pixel_mm)
        return (self.origin_world_mm + vs[:, None, None] * self.v_world
                + us[None, :, None] * self.u_world)

    def sample(self, volume: Volume, *, order: int | None = None) -> NDArray[np.float32]:
        """Values of `volume` on the plane, shape (rows, cols): trilinear for intensities,
        nearest for labels; outside the grid air (CT) or 0."""
        pts = self.grid_world_mm()
        idx = volume.index_from_world(pts.reshape(-1, 3)).T
        o = (0 if volume.is_label else 1) if order is None else order
        fill = 0.0 if volume.is_label or volume.modality != "CT" else float(AIR_HU)
        vals = ndimage.map_coordinates(volume.array, idx, order=o, mode="constant", cval=fill,
                                       prefilter=False)
        return vals.reshape(pts.shape[:2]).astype(np.float32)

    def to_plane_mm(self, points_world_mm: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64],
                                                                  NDArray[np.float64]]:
        """(u, v, out-of-plane distance) in mm of world points (..., 3)."""
        d = np.asarray(points_world_mm, dtype=np.float64) - self.origin_world_mm
        return d @ self.u_world, d @ self.v_world, d @ self.normal_world

    def edge_letters(self) -> tuple[str, str, str, str]:
        """(left, right, top, bottom) edge letters of the image."""
        return (edge_letter(-self.u_world), edge_letter(self.u_world), edge_letter(self.v_world),
                edge_letter(-self.v_world))


def _label_edges(ax, plane_or_letters, *, colour: str = "yellow") -> None:
    left, right, top, bottom = (plane_or_letters.edge_letters()
                                if isinstance(plane_or_letters, ReformatPlane) else plane_or_letters)
    for text, xy, ha, va in ((left, (0.01, 0.5), "left", "center"), (right, (0.99, 0.5), "right", "center"),
                             (top, (0.5, 0.99), "center", "top"), (bottom, (0.5, 0.01), "center", "bottom")):
        ax.text(*xy, text, color=colour, fontsize=13, fontweight="bold", transform=ax.transAxes,
                ha=ha, va=va)


def _show_ct(ax, plane: ReformatPlane, ct: Volume, *, window_hu: tuple[float, float] = WINDOWS_HU["bone"]) -> None:
    level, width = window_hu
    ax.imshow(window(plane.sample(ct), level=level, width=width), cmap="gray", origin="lower",
              extent=plane.extent, interpolation="bilinear", vmin=0, vmax=255)


def _contour_label(ax, plane: ReformatPlane, labels: Volume | None, label_id: int | None, *,
                   colour: str = "#40c0ff") -> None:
    if labels is None or label_id is None:
        return
    mask = (plane.sample(labels, order=0) == label_id).astype(np.float32)
    if mask.any() and not mask.all():
        ax.contour(mask, levels=[0.5], colors=[colour], linewidths=0.8, origin="lower",
                   extent=plane.extent)


def _finish_image_axes(ax, plane: ReformatPlane, title: str) -> None:
    ax.set_xlim(-plane.half_width_mm, plane.half_width_mm)
    ax.set_ylim(-plane.half_height_mm, plane.half_height_mm)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, color="white", fontsize=10)
    _label_edges(ax, plane)
    # 10 mm scale bar, bottom right
    x1 = plane.half_width_mm * 0.92
    y0 = -plane.half_height_mm * 0.90
    ax.plot([x1 - 10.0, x1], [y0, y0], color="white", lw=2)
    ax.text(x1 - 5.0, y0 + plane.half_height_mm * 0.03, "10 mm", color="white", fontsize=7,
            ha="center", va="bottom")


def _rod_outline(plane: ReformatPlane, start_world_mm, end_world_mm, radius_mm: float) -> NDArray[np.float64]:
    """Outline (4, 2) in plane mm of a cylinder whose axis lies in (or near) the plane: the
    rectangle where the plane cuts it."""
    us, vs, _ = plane.to_plane_mm(np.stack([start_world_mm, end_world_mm]))
    a = np.array([us[1] - us[0], vs[1] - vs[0]])
    n = np.linalg.norm(a)
    a = a / n if n > 1e-9 else np.array([0.0, 1.0])
    perp = np.array([-a[1], a[0]]) * radius_mm
    p0, p1 = np.array([us[0], vs[0]]), np.array([us[1], vs[1]])
    return np.array([p0 + perp, p1 + perp, p1 - perp, p0 - perp])


# ----------------------------------------------------------------------------- (a) screw
def screw_planes(entry_world_mm: ArrayLike, tip_world_mm: ArrayLike, *, lr_world: ArrayLike,
                 cc_world: ArrayLike, half_size_mm: float = 36.0,
                 pixel_mm: float = 0.35) -> tuple[ReformatPlane, ReformatPlane]:
    """The two oblique planes through a screw: "axial" (the screw axis and the vertebra's
    left-right direction) and "sagittal" (the axis and the cranio-caudal direction), both
    centred on the screw's middle.

    Axial: +u = the patient's left (image right), +v = the axis made orthogonal to lr, oriented
    anterior (up). Sagittal: +u = the axis oriented posterior (image right, so anterior is on
    the left), +v = cc made orthogonal to the axis (cranial up). Each plane contains the axis.
    """
    e = _point(entry_world_mm, "entry_world_mm")
    t = _point(tip_world_mm, "tip_world_mm")
    axis = _unit(t - e, "screw axis (tip - entry)")
    lr = _unit(lr_world, "lr_world")
    cc = _unit(cc_world, "cc_world")
    mid = 0.5 * (e + t)
    ant = axis if axis[1] < 0 else -axis  # the axis direction that points anterior (-y)
    axial = ReformatPlane.through(mid, lr, ant, half_width_mm=half_size_mm, half_height_mm=half_size_mm,
                                  pixel_mm=pixel_mm)
    # sagittal: contains the axis and cc. u along the axis, pointing posterior; v = cc orthogonal to it
    post = -ant
    sagittal = ReformatPlane.through(mid, post, cc, half_width_mm=half_size_mm, half_height_mm=half_size_mm,
                                     pixel_mm=pixel_mm)
    return axial, sagittal


def screw_reformat_png(ct: Volume, entry_world_mm: ArrayLike, tip_world_mm: ArrayLike, diameter_mm: float, *,
                       lr_world: ArrayLike, cc_world: ArrayLike, labels: Volume | None = None,
                       vertebra_label: int | None = None, min_margin_mm: float | None = None,
                       min_margin_world_mm: ArrayLike | None = None, min_margin_where: str = "",
                       status: str = "ok", title: str = "") -> bytes:
    """Two oblique reformats along one screw (axial and sagittal through the pedicle) with the
    screw's outline, its axis, the point of smallest cortical margin and the vertebra contour.

    Parameters
    ----------
    ct : Volume
        CT in HU, bone window.
    entry_world_mm, tip_world_mm : (3,) array_like
        Screw entry (on bone) and tip, LPS mm.
    diameter_mm : float
        Outer thread diameter, mm: the outline is drawn this wide.
    lr_world, cc_world : (3,) array_like
        The vertebra's left-right (towards the patient's left) and cranio-caudal (cranial)
        directions, world unit vectors.
    labels, vertebra_label : Volume, int, optional
        Label map and the vertebra's id: its contour is drawn.
    min_margin_mm, min_margin_world_mm : float, (3,) array_like, optional
        The smallest distance from the screw to the cortex and where it is (LPS mm); marked
        and written on both panels (with its distance from each plane when off-plane).
    min_margin_where : str, optional
        Which wall the smallest margin faces ("medial", ...), added to the note.
    status : {"ok", "doubtful", "unsafe"}
        Colour of the screw outline: green, amber, red.
    """
    if not diameter_mm > 0:
        raise ValueError(f"diameter_mm must be > 0, got {diameter_mm!r}")
    e = _point(entry_world_mm, "entry_world_mm")
    t = _point(tip_world_mm, "tip_world_mm")
    length = float(np.linalg.norm(t - e))
    half = max(30.0, 0.5 * length + 14.0)
    planes = screw_planes(e, t, lr_world=lr_world, cc_world=cc_world, half_size_mm=half,
                          pixel_mm=max(0.3, half / 110.0))
    colour = {"ok": _SCREW_OK, "doubtful": _SCREW_DOUBT}.get(status, _SCREW_BAD)
    fig, axes = plt.subplots(1, 2, figsize=(8.0, 4.4), facecolor="black")
    for ax, plane, name in zip(axes, planes, ("axial (oblique, along the screw)",
                                               "sagittal (oblique, along the screw)")):
        ax.set_facecolor("black")
        _show_ct(ax, plane, ct)
        _contour_label(ax, plane, labels, vertebra_label)
        ax.add_patch(Polygon(_rod_outline(plane, e, t, diameter_mm / 2.0), closed=True, fill=False,
                             edgecolor=colour, lw=1.6))
        us, vs, _ = plane.to_plane_mm(np.stack([e, t]))
        ax.plot(us, vs, ls="--", color=colour, lw=0.7)
        ax.plot(us[0], vs[0], "o", ms=4, color=colour)
        if min_margin_world_mm is not None:
            mu, mv, mw = plane.to_plane_mm(_point(min_margin_world_mm, "min_margin_world_mm"))
            ax.plot(mu, mv, marker="x", ms=9, mew=2.2, color="#ff40ff")
            text = "min margin" + (f" {min_margin_mm:.1f} mm" if min_margin_mm is not None else "")
            if min_margin_where:
                text += f" ({min_margin_where})"
            if abs(mw) > 1.0:
                text += f"\n({abs(mw):.0f} mm off this plane)"
            # the note sits in the panel's top-left corner (free of edge letters and the scale
            # bar), a thin line points to the place
            ax.annotate(text, (mu, mv), xytext=(0.03, 0.90), textcoords="axes fraction", color="#ff80ff",
                        fontsize=8, va="top", arrowprops={"arrowstyle": "-", "color": "#ff80ff", "lw": 0.7})
        _finish_image_axes(ax, plane, name)
    if title:
        fig.suptitle(title, color="white", fontsize=11)
    fig.tight_layout()
    return png_bytes(fig)


# ----------------------------------------------------------------------------- (b) 3D
@dataclass(frozen=True)
class ScrewDrawing:
    """A screw for the overview figures: entry and tip in LPS mm, diameter mm."""

    entry_world_mm: tuple[float, float, float]
    tip_world_mm: tuple[float, float, float]
    diameter_mm: float
    name: str = ""
    status: str = "ok"  # "ok", "doubtful", "unsafe"


@dataclass(frozen=True)
class TubeDrawing:
    """A tubular retractor: from the skin entry to the docking point, LPS mm; diameter mm."""

    skin_world_mm: tuple[float, float, float]
    dock_world_mm: tuple[float, float, float]
    diameter_mm: float
    target_world_mm: tuple[float, float, float] | None = None
    name: str = ""


@dataclass(frozen=True)
class IncisionDrawing:
    """A skin incision: a straight segment on the skin, LPS mm."""

    start_world_mm: tuple[float, float, float]
    end_world_mm: tuple[float, float, float]
    name: str = ""
    length_mm: float | None = None  # defaults to |end - start|


@dataclass(frozen=True)
class LevelMark:
    """A vertebra name at a world position (its body centre), for orientation."""

    name: str
    centre_world_mm: tuple[float, float, float]
    extra: dict = field(default_factory=dict)


def _label_meshes(labels: Volume, label_ids: Sequence[int], *, step_mm: float = 2.5,
                  max_faces: int = 30000) -> list[tuple[int, NDArray[np.float64], NDArray[np.int64]]]:
    """Marching-cubes surfaces (vertices in LPS mm, faces) of each label id, on a grid
    downsampled to about `step_mm`; faces are thinned when there are more than `max_faces`."""
    from skimage.measure import marching_cubes

    stride = np.maximum(1, np.rint(step_mm / labels.spacing_mm)).astype(int)
    out = []
    for lid in label_ids:
        full = labels.array == lid
        if not full.any():
            continue
        nz = np.nonzero(full)
        lo = np.maximum(np.array([a.min() for a in nz]) - 2 * stride, 0)
        hi = np.minimum(np.array([a.max() for a in nz]) + 2 * stride + 1, labels.shape)
        sub = full[lo[0]:hi[0]:stride[0], lo[1]:hi[1]:stride[1], lo[2]:hi[2]:stride[2]]
        sub = ndimage.binary_closing(sub, iterations=1)
        padded = np.pad(sub.astype(np.float32), 1)
        if padded.max() < 0.5:
            continue
        padded = ndimage.gaussian_filter(padded, 0.6)
        verts, faces, _, _ = marching_cubes(padded, level=0.5 * padded.max() if padded.max() < 0.5 else 0.5)
        idx = (verts - 1.0) * stride + lo
        out.append((int(lid), labels.world_from_index(idx), faces.astype(np.int64)))
    total = sum(len(f) for _, _, f in out)
    if total > max_faces:
        keep = max_faces / total
        rng = np.random.default_rng(0)  # seeded: the same figure every time
        out = [(lid, v, f[rng.random(len(f)) < keep]) for lid, v, f in out]
    return out


def _cylinder_polys(a: NDArray, b: NDArray, radius: float, n: int = 16) -> list[NDArray]:
    axis = _unit(b - a, "cylinder axis")
    ref = np.array([0.0, 0.0, 1.0]) if abs(axis[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    w = np.cross(axis, ref)
    w /= np.linalg.norm(w)
    h = np.cross(axis, w)
    ang = np.linspace(0, 2 * np.pi, n + 1)
    ring = radius * (np.cos(ang)[:, None] * w + np.sin(ang)[:, None] * h)
    return [np.array([a + ring[i], a + ring[i + 1], b + ring[i + 1], b + ring[i]]) for i in range(n)]


def _draw_3d(ax, meshes, screws, tubes, levels, *, elev: float, azim: float, label_axis: int,
             label_side: float, title: str) -> None:
    """One 3D panel; level names are written at their height, pushed to ``label_side`` (-1 or
    +1) of the box along world axis ``label_axis``, clear of the bone."""
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    ax.computed_zorder = False  # implants drawn over the (translucent) bone, like an x-ray
    light = _unit([0.3, 1.0, 0.6], "light")  # from behind, above, a little from the left
    pts_all = []
    for n, (_, verts, faces) in enumerate(meshes):
        tri = verts[faces]
        nrm = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        nrm /= np.linalg.norm(nrm, axis=1, keepdims=True) + 1e-12
        shade = 0.35 + 0.65 * np.abs(nrm @ light)
        base = np.array([0.93, 0.89, 0.80]) if n % 2 == 0 else np.array([0.85, 0.84, 0.90])
        colours = np.clip(shade[:, None] * base, 0, 1)
        ax.add_collection3d(Poly3DCollection(tri, facecolors=np.c_[colours, np.full(len(tri), 0.55)],
                                             edgecolors="none", linewidths=0, zorder=1))
        pts_all.append(verts)
    for s in screws:
        e, t = np.asarray(s.entry_world_mm, float), np.asarray(s.tip_world_mm, float)
        colour = {"ok": "#118811", "doubtful": "#d08000"}.get(s.status, "#d01010")
        ax.add_collection3d(Poly3DCollection(_cylinder_polys(e, t, s.diameter_mm / 2, 10),
                                             facecolors=colour, edgecolors="none", zorder=5))
        ax.plot(*np.stack([e, t]).T, color=colour, lw=2.5, zorder=6)
        pts_all.append(np.stack([e, t]))
    for tb in tubes:
        a, b = np.asarray(tb.skin_world_mm, float), np.asarray(tb.dock_world_mm, float)
        ax.add_collection3d(Poly3DCollection(_cylinder_polys(a, b, tb.diameter_mm / 2, 20),
                                             facecolors=(0.1, 0.4, 0.95, 0.30), edgecolors=(0.1, 0.3, 0.8, 0.5),
                                             linewidths=0.3, zorder=4))
        if tb.target_world_mm is not None:
            tg = np.asarray(tb.target_world_mm, float)
            ax.plot(*np.stack([b, tg]).T, color="#c000c0", lw=1.5, ls="--", zorder=6)
            ax.scatter(*tg, color="#c000c0", s=24, zorder=7)
        pts_all.append(np.stack([a, b]))
    pts = np.concatenate(pts_all)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    c, r = 0.5 * (lo + hi), 0.5 * float((hi - lo).max()) + 5.0
    for lv in levels:
        p = np.asarray(lv.centre_world_mm, float)
        q = p.copy()
        q[label_axis] = c[label_axis] + label_side * r * 0.95
        ax.text(*q, lv.name, color="#202060", fontsize=9, fontweight="bold")
    ax.set_xlim(c[0] - r, c[0] + r)
    ax.set_ylim(c[1] - r, c[1] + r)
    ax.set_zlim(c[2] - r, c[2] + r)
    ax.set_box_aspect((1, 1, 1), zoom=1.3)
    ax.view_init(elev=elev, azim=azim)
    ax.set_axis_off()  # the direction words below say more than tick labels
    below = c[2] - 0.85 * r
    words = ((("L", (c[0] + r, c[1], below)), ("R", (c[0] - r, c[1], below))) if label_axis == 0 else
             (("anterior", (c[0], c[1] - r, below)), ("posterior", (c[0], c[1] + r, below))))
    for text, p in words + (("cranial", (c[0], c[1], c[2] + r)),):
        ax.text(*p, text, color="#c00000", fontsize=10, fontweight="bold", ha="center")
    ax.set_title(title, fontsize=10)


def overview_3d_png(labels: Volume, label_ids: Sequence[int], *, screws: Sequence[ScrewDrawing] = (),
                    tubes: Sequence[TubeDrawing] = (), levels: Sequence[LevelMark] = (),
                    title: str = "") -> bytes:
    """Two 3D views of the vertebra surfaces of `label_ids` (translucent), the screws
    (cylinders, drawn over the bone like on an x-ray) and the tubes: from behind and above (the
    surgeon's view of a prone patient: the patient's left on the image's left) and from the
    patient's left (anterior on the left, head up)."""
    meshes = _label_meshes(labels, label_ids)
    if not meshes and not screws and not tubes:
        raise ValueError("overview_3d_png: nothing to draw (no label of label_ids in the map, no screw, no tube)")
    fig = plt.figure(figsize=(9.0, 4.8), facecolor="white")
    # (elevation, azimuth, where the level names go, title): the first camera sits at +y
    # (posterior) and above, names on the patient's right (image right); the second at +x (the
    # patient's left), names behind the spine (image right)
    views = ((35.0, 90.0, 0, -1.0, "from behind and above"), (5.0, 0.0, 1, 1.0, "from the patient's left"))
    for n, (elev, azim, axis, side, name) in enumerate(views):
        ax = fig.add_subplot(1, 2, n + 1, projection="3d")
        _draw_3d(ax, meshes, screws, tubes, levels, elev=elev, azim=azim, label_axis=axis, label_side=side,
                 title=name)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(left=0, right=1, bottom=0.0, top=0.92, wspace=0.0)
    return png_bytes(fig, facecolor="white")


# ----------------------------------------------------------------------------- (c) skin view
def _lps_grid(volume: Volume, step_mm: float) -> Volume:
    """The volume on an axis-aligned LPS grid (i->L, j->P, k->S) of about `step_mm` (never
    coarser): flips and strides only when the grid is already aligned, resampling otherwise."""
    if not volume.is_oblique and volume.is_orthogonal:
        g = reorient_to_lps(volume)
        stride = np.maximum(1, np.floor(step_mm / g.spacing_mm + 1e-6)).astype(int)
        arr = g.array[::stride[0], ::stride[1], ::stride[2]]
        aff = g.affine.copy()
        aff[:3, :3] = g.affine[:3, :3] * stride
        return Volume(arr, aff, modality=volume.modality, is_label=volume.is_label)
    corners = volume.corners_world_mm()
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    shape = tuple(int(np.ceil((h - lo_) / step_mm)) + 1 for lo_, h in zip(lo, hi))
    affine = np.diag([step_mm, step_mm, step_mm, 1.0])
    affine[:3, 3] = lo
    return resample_to_grid(volume, shape, affine)


def _body_mask(hu: NDArray) -> NDArray[np.bool_]:
    """The patient's body: the largest connected component of tissue denser than air, after an
    opening that cuts thin bridges (table pads, blankets). The CT table is left out."""
    m = ndimage.binary_opening(hu > BODY_HU, iterations=2)
    lab, n = ndimage.label(m)
    if n == 0:
        return m
    sizes = ndimage.sum_labels(m, lab, index=np.arange(1, n + 1))
    return lab == (1 + int(np.argmax(sizes)))


def posterior_skin_png(ct: Volume, *, incisions: Sequence[IncisionDrawing] = (),
                       levels: Sequence[LevelMark] = (), entries_world_mm: ArrayLike | None = None,
                       margin_mm: float = 60.0, title: str = "") -> bytes:
    """The patient's back seen from behind (prone: posterior is +y): the skin surface shaded
    from its depth, the spine's bone shown through it, incisions as segments with their
    lengths, skin entry points, and the level names at the height of each vertebra.

    The picture covers the incisions and levels plus `margin_mm` around them (all of the CT
    when there are none). The patient's left is on the image's left; cranial is up.
    """
    g = _lps_grid(ct, 1.5)
    # crop x/z to the region of interest first: the body mask is the costly part
    pts = [np.asarray(i.start_world_mm, float) for i in incisions] + [np.asarray(i.end_world_mm, float)
                                                                        for i in incisions]
    pts += [np.asarray(lv.centre_world_mm, float) for lv in levels]
    if entries_world_mm is not None and len(np.atleast_2d(entries_world_mm)):
        pts += list(np.atleast_2d(np.asarray(entries_world_mm, float)))
    i_lo, k_lo, i_hi, k_hi = 0, 0, g.shape[0], g.shape[2]
    if pts:
        idx = g.index_from_world(np.stack(pts))
        pad = margin_mm / g.spacing_mm
        i_lo = int(np.clip(np.floor(idx[:, 0].min() - pad[0]), 0, g.shape[0] - 1))
        i_hi = int(np.clip(np.ceil(idx[:, 0].max() + pad[0]) + 1, i_lo + 1, g.shape[0]))
        k_lo = int(np.clip(np.floor(idx[:, 2].min() - pad[2]), 0, g.shape[2] - 1))
        k_hi = int(np.clip(np.ceil(idx[:, 2].max() + pad[2]) + 1, k_lo + 1, g.shape[2]))
    hu = g.array[i_lo:i_hi, :, k_lo:k_hi].astype(np.float32)
    body = _body_mask(hu)
    sp = g.spacing_mm
    # skin depth: the most posterior body voxel along each (i, k) column (j increases posterior)
    nj = hu.shape[1]
    has = body.any(axis=1)
    j_skin = np.where(has, nj - 1 - np.argmax(body[:, ::-1, :], axis=1), 0).astype(np.float32)
    y_skin = g.affine[1, 3] + j_skin * sp[1]
    if has.any():  # smooth the voxel staircase before shading
        y_skin = ndimage.gaussian_filter(np.where(has, y_skin, float(y_skin[has].min())), 2.0 / sp[0])
    # hillshade of the skin height field, light from the head and the patient's left
    gy_i, gy_k = np.gradient(y_skin, sp[0], sp[2])
    nrm = np.stack([-gy_i, np.ones_like(gy_i), -gy_k], axis=-1)
    nrm /= np.linalg.norm(nrm, axis=-1, keepdims=True)
    shade = np.clip(nrm @ _unit([0.35, 1.0, 0.45], "light"), 0, 1)
    skin_rgb = np.where(has[..., None], (0.25 + 0.75 * shade[..., None]) * np.array([0.96, 0.80, 0.70]), 0.0)
    # bone seen through the skin: posterior-anterior maximum intensity of bone, inside the body
    bone = np.where(body, np.clip((hu - BONE_HU) / 900.0, 0, 1), 0).max(axis=1)
    rgb = skin_rgb * (1 - 0.75 * bone[..., None]) + 0.75 * bone[..., None] * np.array([0.25, 0.30, 0.45])
    # image rows = k (cranial up with origin lower), cols = i (patient's left on the image left)
    img = np.transpose(rgb, (1, 0, 2))  # (k, i, 3)
    x0 = g.affine[0, 3] + i_lo * sp[0]
    x1 = g.affine[0, 3] + (i_hi - 1) * sp[0]
    z0 = g.affine[2, 3] + k_lo * sp[2]
    z1 = g.affine[2, 3] + (k_hi - 1) * sp[2]
    w_in = 6.0
    h_in = float(np.clip(w_in * (z1 - z0) / max(x1 - x0, 1.0), 3.0, 9.0))
    fig, ax = plt.subplots(figsize=(w_in, h_in), facecolor="black")
    ax.set_facecolor("black")
    # extent with x reversed: larger x (patient's left) on the image's left
    ax.imshow(img, origin="lower", extent=(x1, x0, z0, z1), interpolation="bilinear")
    ax.set_xlim(x1, x0)
    ax.set_ylim(z0, z1)
    for lv in levels:
        p = np.asarray(lv.centre_world_mm, float)
        ax.plot([p[0] + 8, p[0] - 8], [p[2], p[2]], color="white", lw=0.6, alpha=0.7)
        ax.text(p[0] - 10, p[2], lv.name, color="white", fontsize=9, fontweight="bold", va="center",
                ha="left", bbox={"boxstyle": "round,pad=0.15", "fc": "black", "alpha": 0.5, "ec": "none"})
    if entries_world_mm is not None:
        E = np.atleast_2d(np.asarray(entries_world_mm, float))
        if E.size:
            ax.plot(E[:, 0], E[:, 2], "o", ms=4, mfc="none", mec="#00e0ff", mew=1.2)
    midline_x = (float(np.mean([lv.centre_world_mm[0] for lv in levels])) if levels
                 else 0.5 * (x0 + x1))
    placed: dict[bool, list[float]] = {True: [], False: []}  # label heights (z mm) per side
    min_gap_mm = 0.045 * (z1 - z0)
    for inc in incisions:
        a, b = np.asarray(inc.start_world_mm, float), np.asarray(inc.end_world_mm, float)
        length = inc.length_mm if inc.length_mm is not None else float(np.linalg.norm(b - a))
        ax.plot([a[0], b[0]], [a[2], b[2]], color="#ff2020", lw=3.0, solid_capstyle="round")
        m = 0.5 * (a + b)
        # write the label away from the midline (larger x, the patient's left, is on the image
        # left), below any label already written on that side at that height
        on_left = m[0] > midline_x
        z_text = float(m[2])
        while any(abs(z_text - z) < min_gap_mm for z in placed[on_left]):
            z_text -= min_gap_mm
        placed[on_left].append(z_text)
        x_text = max(a[0], b[0]) + 6.0 if on_left else min(a[0], b[0]) - 6.0
        ax.annotate(f"{inc.name}: {length / 10:.1f} cm" if inc.name else f"{length / 10:.1f} cm",
                    (m[0], m[2]), xytext=(x_text, z_text), textcoords="data",
                    ha="right" if on_left else "left", va="center", color="#ffe040", fontsize=8,
                    fontweight="bold", arrowprops={"arrowstyle": "-", "color": "#ffe040", "lw": 0.6},
                    bbox={"boxstyle": "round,pad=0.2", "fc": "black", "alpha": 0.6, "ec": "none"})
    _label_edges(ax, ("L", "R", "S", "I"))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or "Back of the patient, seen from behind (prone)", color="white", fontsize=10)
    fig.tight_layout()
    return png_bytes(fig)


# ----------------------------------------------------------------------------- (d) tissue
def tissue_comparison_png(open_values: dict[str, float], mis_values: dict[str, float], *,
                          title: str = "") -> bytes:
    """Bars of open versus MIS, one panel per quantity.

    Parameters
    ----------
    open_values, mis_values : dict
        Same keys, the panel titles with their unit (e.g. "incision length (cm)"); values
        >= 0. A quantity missing from one side (None) is drawn as "n/a".
    """
    keys = list(open_values)
    if not keys or set(keys) != set(mis_values):
        raise ValueError(f"tissue_comparison_png: open and MIS must list the same quantities, got "
                         f"{sorted(open_values)} and {sorted(mis_values)}")
    fig, axes = plt.subplots(1, len(keys), figsize=(2.6 * len(keys) + 0.6, 3.2), facecolor="white")
    axes = np.atleast_1d(axes)
    for ax, key in zip(axes, keys):
        vals = [open_values[key], mis_values[key]]
        heights = [v if v is not None else 0.0 for v in vals]
        bars = ax.bar(["open", "MIS"], heights, color=["#b0b0b0", "#2a7fd4"], width=0.6)
        top = max(heights) if max(heights) > 0 else 1.0
        for bar, v in zip(bars, vals):
            txt = "n/a" if v is None else (f"{v:.1f}" if v < 100 else f"{v:.0f}")
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.02 * top, txt, ha="center",
                    va="bottom", fontsize=9)
        o, m = vals
        if o is not None and m is not None and o > 0:
            change = 100.0 * (m / o - 1.0)
            ax.set_xlabel(f"MIS: {-change:.0f}% less than open" if change <= 0
                          else f"MIS: {change:.0f}% more than open", fontsize=8)
        ax.set_ylim(0, top * 1.18)
        ax.set_title(key, fontsize=9)
        ax.tick_params(labelsize=8)
        for s in ("top", "right"):
            ax.spines[s].set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return png_bytes(fig, facecolor="white")


# ----------------------------------------------------------------------------- (e) access
def access_planes(skin_world_mm: ArrayLike, dock_world_mm: ArrayLike, *, lr_world: ArrayLike,
                  cc_world: ArrayLike, target_world_mm: ArrayLike | None = None,
                  pixel_mm: float = 0.4) -> tuple[ReformatPlane, ReformatPlane]:
    """Oblique axial (tube axis and left-right) and sagittal (tube axis and cranio-caudal)
    planes through a tube, centred between the skin and the deepest point (target or dock)."""
    s = _point(skin_world_mm, "skin_world_mm")
    d = _point(dock_world_mm, "dock_world_mm")
    deep = _point(target_world_mm, "target_world_mm") if target_world_mm is not None else d
    axis = _unit(d - s, "tube axis (dock - skin)")
    ant = axis if axis[1] < 0 else -axis
    pts = np.stack([s, d, deep])
    mid = 0.5 * (pts.min(axis=0) + pts.max(axis=0))
    half = max(35.0, 0.5 * float(np.linalg.norm(pts.max(axis=0) - pts.min(axis=0))) + 18.0)
    px = max(pixel_mm, half / 140.0)
    lr = _unit(lr_world, "lr_world")
    axial = ReformatPlane.through(mid, lr, ant, half_width_mm=half, half_height_mm=half, pixel_mm=px)
    sagittal = ReformatPlane.through(mid, -ant, cc_world, half_width_mm=half, half_height_mm=half,
                                     pixel_mm=px)
    return axial, sagittal


def access_corridor_png(ct: Volume, skin_world_mm: ArrayLike, dock_world_mm: ArrayLike, diameter_mm: float, *,
                        lr_world: ArrayLike, cc_world: ArrayLike, target_world_mm: ArrayLike | None = None,
                        labels: Volume | None = None, vertebra_label: int | None = None,
                        title: str = "") -> bytes:
    """A tubular access corridor on two oblique reformats through the tube (axial: the tube
    axis and left-right; sagittal: the tube axis and cranio-caudal), in a window
    (:data:`ACCESS_WINDOW_HU`) where both the muscle it passes and the bone it docks on show:
    the tube's outline from the skin to the docking point, the docking point, the working line
    to the target and the target."""
    if not diameter_mm > 0:
        raise ValueError(f"diameter_mm must be > 0, got {diameter_mm!r}")
    s = _point(skin_world_mm, "skin_world_mm")
    d = _point(dock_world_mm, "dock_world_mm")
    tg = _point(target_world_mm, "target_world_mm") if target_world_mm is not None else None
    planes = access_planes(s, d, lr_world=lr_world, cc_world=cc_world, target_world_mm=tg)
    fig, axes = plt.subplots(1, 2, figsize=(8.0, 4.4), facecolor="black")
    for ax, plane, name in zip(axes, planes, ("axial (oblique, along the tube)",
                                               "sagittal (oblique, along the tube)")):
        ax.set_facecolor("black")
        _show_ct(ax, plane, ct, window_hu=ACCESS_WINDOW_HU)
        _contour_label(ax, plane, labels, vertebra_label)
        ax.add_patch(Polygon(_rod_outline(plane, s, d, diameter_mm / 2.0), closed=True,
                             facecolor=(0.2, 0.5, 1.0, 0.18), edgecolor="#40a0ff", lw=1.6))
        us, vs, _ = plane.to_plane_mm(np.stack([s, d]))
        ax.plot(us[0], vs[0], marker="v", ms=7, color="#ffe040", ls="none")
        ax.annotate("skin", (us[0], vs[0]), xytext=(8, 4), textcoords="offset points", color="#ffe040",
                    fontsize=8)
        ax.plot(us[1], vs[1], marker="s", ms=6, color="#40ffa0", ls="none")
        ax.annotate("dock", (us[1], vs[1]), xytext=(8, -10), textcoords="offset points", color="#40ffa0",
                    fontsize=8)
        if tg is not None:
            tu, tv, _ = plane.to_plane_mm(tg)
            ax.plot([us[1], tu], [vs[1], tv], ls="--", color="#ff60ff", lw=1.0)
            ax.plot(tu, tv, marker="*", ms=11, color="#ff40ff", ls="none")
            ax.annotate("target", (tu, tv), xytext=(8, -4), textcoords="offset points", color="#ff80ff",
                        fontsize=8)
        _finish_image_axes(ax, plane, name)
    if title:
        fig.suptitle(title, color="white", fontsize=11)
    fig.tight_layout()
    return png_bytes(fig)

"""Pictures people look at: orthogonal views of a CT with optional label overlay.

Display conventions (radiological): axial views are seen from the feet, so the patient's right
is on the image's left and anterior is up; coronal views from the front (patient's right on
the left, head up); sagittal views from the patient's left (anterior on the left, head up).
Every panel is labelled with its edge letters so a flipped axis shows at a glance.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from spinenav.imaging.resample import (  # noqa: E402
    WINDOWS_HU,
    reorient_to_lps,
    resample_to_grid,
    window,
)
from spinenav.imaging.volume import Volume  # noqa: E402
from spinenav.plotting import label_edges, save_figure  # noqa: E402


def _to_lps_grid(volume: Volume) -> Volume:
    """Axis-aligned LPS array (i->L, j->P, k->S) for slicing; oblique grids are resampled."""
    if not volume.is_oblique and volume.is_orthogonal:
        return reorient_to_lps(volume)
    corners = volume.corners_world_mm()
    spacing = float(volume.spacing_mm.min())
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    shape = tuple(int(np.ceil((h - l) / spacing)) + 1 for l, h in zip(lo, hi))
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = lo
    return resample_to_grid(volume, shape, affine)


def _label_cmap(max_label: int) -> ListedColormap:
    rng = np.random.default_rng(12)  # fixed colours: the same id looks the same in every figure
    colours = rng.uniform(0.25, 1.0, size=(max_label + 1, 4))
    colours[:, 3] = 1.0
    colours[0] = (0, 0, 0, 0)
    return ListedColormap(colours)


def orthogonal_views_png(ct: Volume, path: str | os.PathLike[str], *, labels: Volume | None = None,
                         centre_world_mm: np.ndarray | None = None, title: str = "",
                         window_name: str = "bone") -> Path:
    """Write a PNG with axial, coronal and sagittal views through `centre_world_mm` (default:
    the grid centre), the `labels` map overlaid when given. Atomic.
    """
    g = _to_lps_grid(ct)
    lab = _to_lps_grid(labels) if labels is not None else None
    centre = g.center_world_mm if centre_world_mm is None else np.asarray(centre_world_mm, float)
    i, j, k = np.clip(np.rint(g.index_from_world(centre)).astype(int), 0, np.array(g.shape) - 1)
    si, sj, sk = g.spacing_mm
    level, width = WINDOWS_HU[window_name]
    views = [  # (title, 2D slice [rows, cols], aspect, edge letters: left, right, top, bottom)
        ("axial", lambda a: a[:, :, k].T, sj / si, "R", "L", "A", "P", "upper"),
        ("coronal", lambda a: a[:, j, :].T, sk / si, "R", "L", "S", "I", "lower"),
        ("sagittal", lambda a: a[i, :, :].T, sk / sj, "A", "P", "S", "I", "lower"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(15, 6.5), facecolor="black")
    for ax, (name, take, aspect, left, right, top, bottom, origin) in zip(axes, views):
        ax.imshow(window(take(g.array), level=level, width=width), cmap="gray", aspect=aspect,
                  origin=origin, interpolation="nearest")
        if lab is not None:
            lab_slice = take(lab.array)
            shown = np.ma.masked_equal(lab_slice, 0)
            ax.imshow(shown, cmap=_label_cmap(int(lab.array.max())), vmin=0, vmax=int(lab.array.max()),
                      alpha=0.35, aspect=aspect, origin=origin, interpolation="nearest")
        ax.set_title(name, color="white")
        ax.set_axis_off()
        label_edges(ax, left, right, top, bottom)
    if title:
        fig.suptitle(title, color="white")
    return save_figure(fig, path, dpi=90)


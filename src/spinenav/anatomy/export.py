"""Write the anatomy results: label map, spine.json, meshes, Slicer markups, overview PNG, tables.

:func:`write_anatomy` writes everything into one folder, atomically as a whole: the files go
into a temporary folder beside the target, which is renamed into place only when every file
is written (a failure leaves the previous folder, or none, never a half-written one). Each
writer below is also atomic on its own.

Conventions: meshes and markups are in LPS mm (Slicer markups declare
``"coordinateSystem": "LPS"``); the label map keeps the CT's grid (NIfTI stores RAS, converted
in :mod:`spinenav.imaging.io`); the PNG follows :mod:`spinenav.app.figures` (coronal seen from
the front, sagittal from the patient's left, head up, edge letters on every panel).
"""

from __future__ import annotations

import csv
import io
import json
import os
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from numpy.typing import NDArray  # noqa: E402
from scipy import ndimage  # noqa: E402

from spinenav.anatomy.labels import to_verse  # noqa: E402
from spinenav.anatomy.model import SpineModel  # noqa: E402
from spinenav.atomic import atomic_folder, atomic_output, write_json_atomic, write_text_atomic  # noqa: E402
from spinenav.imaging.io import write_nifti  # noqa: E402
from spinenav.imaging.resample import WINDOWS_HU, window  # noqa: E402
from spinenav.imaging.volume import Volume  # noqa: E402
from spinenav.plotting import label_edges, save_figure  # noqa: E402

SLICER_MARKUPS_SCHEMA = ("https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/"
                         "Resources/Schema/markups-schema-v1.0.0.json#")


# ----------------------------------------------------------------------------- label map, json
def write_label_map(labels: Volume, path: str | os.PathLike[str], *,
                    ids: Literal["totalsegmentator", "verse"] = "totalsegmentator") -> Path:
    """Write the label map as NIfTI with TotalSegmentator v2 ids (default) or VerSe ids
    (vertebrae only; S1 and the sacrum become VerSe's 26). Atomic."""
    if ids not in ("totalsegmentator", "verse"):
        raise ValueError(f"ids must be 'totalsegmentator' or 'verse', got {ids!r}")
    arr = np.asarray(labels.array)
    if ids == "verse":
        arr = to_verse(arr)
    out = Volume(arr, labels.affine, modality="SEG", is_label=True, meta={"units": "label"})
    return write_nifti(out, path)


def write_spine_json(model: SpineModel, path: str | os.PathLike[str]) -> Path:
    """``spine.json`` (schema ``spinenav.spine/1``), atomic."""
    return write_json_atomic(path, model.to_json_dict())


# ----------------------------------------------------------------------------- meshes
def vertebra_mesh(labels: Volume, label_id: int, *, smooth_mm: float = 0.0
                  ) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Surface of one label: vertices (V, 3) in LPS mm and triangles (F, 3), wound so that
    the right-hand normals point outwards (also for grids whose axes flip handedness).

    ``smooth_mm`` > 0 blurs the mask (Gaussian sigma in mm) before the 0.5 isosurface.
    """
    from skimage.measure import marching_cubes

    arr = np.asarray(labels.array)
    m = arr == label_id
    if not m.any():
        raise ValueError(f"label {label_id} has no voxels")
    nz = [np.nonzero(m.any(axis=tuple(j for j in range(3) if j != i)))[0] for i in range(3)]
    lo = np.array([max(int(n[0]) - 1, 0) for n in nz])
    hi = np.array([min(int(n[-1]) + 2, s) for n, s in zip(nz, arr.shape)])
    sub = np.pad(m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].astype(np.float32), 1)
    if smooth_mm > 0:
        sub = ndimage.gaussian_filter(sub, smooth_mm / labels.spacing_mm, mode="constant")
    verts, faces, _, _ = marching_cubes(sub, 0.5, allow_degenerate=False)
    verts = verts - 1 + lo
    world = labels.world_from_index(verts)
    faces = faces[:, ::-1].astype(np.int64)  # skimage winds inwards for a mask that is 1 inside
    if np.linalg.det(labels.affine[:3, :3]) < 0:
        faces = faces[:, ::-1]  # an index->world map that flips handedness flips the winding
    return world, faces


def write_stl(vertices: NDArray, faces: NDArray, path: str | os.PathLike[str], *, name: str = "spinenav") -> Path:
    """Binary STL (little-endian, facet normals from the winding). Atomic."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    tri = v[f]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.divide(n, norm, out=np.zeros_like(n), where=norm > 0)
    rec = np.zeros(len(f), dtype=np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("attr", "<u2")]))
    rec["n"] = n
    rec["v"] = tri
    header = f"{name} LPS mm".encode("ascii", "replace")[:80].ljust(80, b" ")
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(header)
            fh.write(struct.pack("<I", len(f)))
            fh.write(rec.tobytes())
    return Path(path)


def read_stl(path: str | os.PathLike[str]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """(normals (F, 3), triangles (F, 3, 3)) of a binary STL (for checks)."""
    data = Path(path).read_bytes()
    (count,) = struct.unpack("<I", data[80:84])
    rec = np.frombuffer(data[84:84 + 50 * count],
                        dtype=np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("attr", "<u2")]))
    return rec["n"].copy(), rec["v"].copy()


# ----------------------------------------------------------------------------- markups
def landmark_points(model: SpineModel) -> list[tuple[str, tuple[float, float, float], str]]:
    """Every landmark point as (label, LPS mm position, description)."""
    pts = []
    for v in model.vertebrae:
        lm = v.landmarks
        if lm is None:
            continue
        n = v.name
        pts.append((f"{n} body centroid", lm.body_centroid_world_mm, "centroid of the vertebral body"))
        for key, ep in (("superior", lm.superior_endplate), ("inferior", lm.inferior_endplate)):
            if ep is not None:
                pts.append((f"{n} {key} endplate", ep.centre_world_mm, f"centre of the {key} endplate plane"))
        if lm.canal is not None:
            pts.append((f"{n} canal", lm.canal.centre_world_mm, "canal centre (midpoint of the interpedicular line)"))
        for side, p in lm.pedicles.items():
            pts.append((f"{n} {side} pedicle isthmus", p.isthmus_centre_world_mm,
                        f"width {p.width_mm:.1f} mm, height {p.height_mm:.1f} mm"))
            pts.append((f"{n} {side} pedicle entry", p.entry_world_mm, "pedicle axis at the posterior cortex"))
        if lm.spinous_tip is not None:
            pts.append((f"{n} spinous tip", lm.spinous_tip.position_world_mm, "spinous process tip"))
        for side, t in lm.transverse_process_tips.items():
            pts.append((f"{n} {side} transverse tip", t.position_world_mm, "transverse process tip"))
        for key, f in lm.facets.items():
            pts.append((f"{n} {key.replace('_', ' ')} facet", f.centre_world_mm, "facet joint centre"))
    return pts


def markups_document(points: Iterable[tuple[str, tuple[float, float, float], str]], *,
                     name: str = "spine landmarks") -> dict:
    """A 3D Slicer markups point list (``.mrk.json``) in LPS."""
    cps = []
    for k, (label, pos, desc) in enumerate(points, start=1):
        cps.append({"id": str(k), "label": label, "description": desc, "associatedNodeID": "",
                    "position": [float(x) for x in pos], "orientation": [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0],
                    "selected": True, "locked": True, "visibility": True, "positionStatus": "defined"})
    return {"@schema": SLICER_MARKUPS_SCHEMA,
            "markups": [{"type": "Fiducial", "coordinateSystem": "LPS", "coordinateUnits": "mm", "locked": True,
                         "labelFormat": "%N-%d", "name": name, "controlPoints": cps,
                         "measurements": [], "display": {"visibility": True, "textScale": 2.0, "glyphScale": 1.5}}]}


def write_markups(model: SpineModel, path: str | os.PathLike[str]) -> Path:
    """Every landmark as one 3D Slicer point list (``.mrk.json``, LPS). Atomic."""
    return write_json_atomic(path, markups_document(landmark_points(model)))


# ----------------------------------------------------------------------------- tables
_COLUMNS = [
    ("level", "level"), ("kind", "kind"), ("canal_ap_mm", "canal AP (mm)"), ("canal_area_mm2", "canal area (mm2)"),
    ("interpedicular_mm", "interpedicular (mm)"), ("dural_sac_mm2", "dural sac (mm2)"),
    ("pedicle_width_left_mm", "pedicle W L (mm)"), ("pedicle_width_right_mm", "pedicle W R (mm)"),
    ("pedicle_height_left_mm", "pedicle H L (mm)"), ("pedicle_height_right_mm", "pedicle H R (mm)"),
    ("pedicle_tpa_left_deg", "TPA L (deg)"), ("pedicle_tpa_right_deg", "TPA R (deg)"),
    ("lateral_recess_left_mm", "lat. recess L (mm)"), ("lateral_recess_right_mm", "lat. recess R (mm)"),
    ("body_height_mm", "body height (mm)"),
    ("disc_anterior_mm", "disc ant (mm)"), ("disc_middle_mm", "disc mid (mm)"), ("disc_posterior_mm", "disc post (mm)"),
    ("dhi", "DHI"), ("slip_mm", "slip (mm)"), ("slip_percent", "slip (%)"), ("meyerding", "Meyerding"),
    ("segmental_lordosis_deg", "segmental lordosis (deg)"), ("foraminal_height_left_mm", "foramen H L (mm)"),
    ("foraminal_height_right_mm", "foramen H R (mm)"), ("confidence", "confidence"), ("flags", "flags"),
]


#: Below this confidence a measurement is not shown in the human-readable table.
DOUBTFUL_CONFIDENCE = 0.5


def measurement_rows(model: SpineModel) -> list[dict[str, object]]:
    """One row per vertebra, then its disc below, cranial first."""
    rows: list[dict[str, object]] = []
    discs = {d.upper: d for d in model.discs}
    for v in model.vertebrae:
        m = v.measurements
        lm = v.landmarks
        ped = lm.pedicles if lm else {}
        rows.append({
            "level": v.name, "kind": "vertebra", "canal_ap_mm": m.canal_ap_diameter_mm,
            "canal_area_mm2": m.canal_area_mm2, "interpedicular_mm": m.interpedicular_distance_mm,
            "dural_sac_mm2": m.dural_sac_area_mm2,
            "pedicle_width_left_mm": m.pedicle_width_mm.get("left"), "pedicle_width_right_mm": m.pedicle_width_mm.get("right"),
            "pedicle_height_left_mm": m.pedicle_height_mm.get("left"),
            "pedicle_height_right_mm": m.pedicle_height_mm.get("right"),
            "pedicle_tpa_left_deg": ped["left"].transverse_angle_deg if "left" in ped else None,
            "pedicle_tpa_right_deg": ped["right"].transverse_angle_deg if "right" in ped else None,
            "lateral_recess_left_mm": m.lateral_recess_depth_mm.get("left"),
            "lateral_recess_right_mm": m.lateral_recess_depth_mm.get("right"),
            "body_height_mm": m.body_height_middle_mm,
            "confidence": min(v.label.confidence, lm.confidence) if lm else v.label.confidence,
            "flags": "; ".join(f.code for f in v.flags)})
        d = discs.get(v.name)
        if d is not None:
            rows.append({
                "level": d.name, "kind": "disc", "disc_anterior_mm": d.anterior_height_mm,
                "disc_middle_mm": d.middle_height_mm, "disc_posterior_mm": d.posterior_height_mm,
                "dhi": d.disc_height_index, "slip_mm": d.slip_mm, "slip_percent": d.slip_percent,
                "meyerding": d.meyerding_grade, "segmental_lordosis_deg": d.segmental_lordosis_deg,
                "foraminal_height_left_mm": d.foraminal_height_mm.get("left"),
                "foraminal_height_right_mm": d.foraminal_height_mm.get("right"),
                "confidence": d.confidence, "flags": "; ".join(f.code for f in d.findings)})
    return rows


def _fmt(x: object) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        return f"{x:.2f}"
    return str(x)


def measurements_csv(model: SpineModel) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([k for k, _ in _COLUMNS])
    for r in measurement_rows(model):
        w.writerow([_fmt(r.get(k)) for k, _ in _COLUMNS])
    return buf.getvalue()


def measurements_markdown(model: SpineModel) -> str:
    rows = measurement_rows(model)
    used = [(k, t) for k, t in _COLUMNS if any(r.get(k) not in (None, "") for r in rows)]
    lines = ["| " + " | ".join(t for _, t in used) + " |", "|" + "|".join("---" for _ in used) + "|"]
    for r in rows:
        doubtful = isinstance(r.get("confidence"), float) and r["confidence"] < DOUBTFUL_CONFIDENCE
        cells = []
        for k, _ in used:
            if doubtful and k not in ("level", "kind", "confidence", "flags") and r.get(k) not in (None, ""):
                cells.append("—")  # a number this unsure is not shown to a reader
            elif doubtful and k == "flags":
                cells.append("; ".join(x for x in (str(r.get(k) or ""), "doubtful: values not shown") if x))
            else:
                cells.append(_fmt(r.get(k)))
        lines.append("| " + " | ".join(cells) + " |")
    out = "\n".join(lines) + "\n"
    if any(isinstance(r.get("confidence"), float) and r["confidence"] < DOUBTFUL_CONFIDENCE for r in rows):
        out += (f"\n— : confidence below {DOUBTFUL_CONFIDENCE}; the values are in measurements.csv and "
                "spine.json with their confidence, but should not be read without checking the images.\n")
    if model.flags:
        out += "\n**Findings** (radiological, with their sources in docs/clinical-reference.md)\n\n"
        out += "\n".join(f"- {f.message} [{f.source}]" if f.source else f"- {f.message}" for f in model.flags) + "\n"
    if model.spine.lumbar_lordosis_deg is not None or model.spine.cobb_angle_deg is not None:
        out += "\n"
        if model.spine.lumbar_lordosis_deg is not None:
            out += f"Lumbar lordosis (L1-S1): {model.spine.lumbar_lordosis_deg:.1f} deg\n"
        if model.spine.cobb_angle_deg is not None:
            out += (f"Coronal Cobb angle: {model.spine.cobb_angle_deg:.1f} deg ({model.spine.cobb_upper} to "
                    f"{model.spine.cobb_lower})\n")
    return out


# ----------------------------------------------------------------------------- overview PNG
def _label_colours(n: int) -> ListedColormap:
    rng = np.random.default_rng(12)  # the same colours as spinenav.app.figures
    c = rng.uniform(0.25, 1.0, size=(n + 1, 4))
    c[:, 3] = 1.0
    c[0] = (0, 0, 0, 0)
    return ListedColormap(c)


def overview_png(ct: Volume, labels: Volume, model: SpineModel, path: str | os.PathLike[str], *,
                 step_mm: float = 0.8, title: str = "") -> Path:
    """Sagittal and coronal curved reformats along the spine with the labels and level names.

    Both panels follow the spine: for each height z the sagittal panel is sampled at the
    left-right position of the vertebral bodies' centre line, the coronal panel at its
    antero-posterior position (interpolated between body centroids). Sagittal: anterior on
    the left, head up; coronal: the patient's right on the left, head up. Atomic.
    """
    cents = []
    for v in model.vertebrae:
        if v.landmarks is not None:
            cents.append((v.name, np.asarray(v.landmarks.body_centroid_world_mm), v.label_id))
    if not cents:
        raise ValueError("the model has no vertebra with landmarks to show")
    cents.sort(key=lambda c: c[1][2])
    zc = np.array([c[1][2] for c in cents])
    xc = np.array([c[1][0] for c in cents])
    yc = np.array([c[1][1] for c in cents])
    corners = labels.corners_world_mm()
    idx = np.argwhere(np.isin(labels.array, [c[2] for c in cents]))
    span = labels.world_from_index(np.array([idx.min(axis=0), idx.max(axis=0)]))
    z_lo, z_hi = max(span[:, 2].min() - 15, corners[:, 2].min()), min(span[:, 2].max() + 15, corners[:, 2].max())
    zs = np.arange(z_hi, z_lo, -step_mm)  # rows: head at the top

    def along(z):
        if len(zc) == 1:
            return np.full_like(z, xc[0]), np.full_like(z, yc[0])
        return np.interp(z, zc, xc), np.interp(z, zc, yc)

    cx, cy = along(zs)
    half_ap = max(70.0, float(np.ptp(yc)) / 2 + 60.0)
    ys = np.arange(float(yc.mean()) - half_ap, float(yc.mean()) + half_ap, step_mm)
    xs = np.arange(float(xc.mean()) - 90.0, float(xc.mean()) + 90.0, step_mm)
    Tinv = np.linalg.inv(ct.affine)

    def sample(vol: Volume, P: NDArray, order: int) -> NDArray:
        ijk = (P.reshape(-1, 3) @ Tinv[:3, :3].T + Tinv[:3, 3]).T
        src = vol.array if order == 0 else vol.array.astype(np.float32, copy=False)
        out = ndimage.map_coordinates(src, ijk, order=order, mode="constant",
                                      cval=0 if order == 0 else -1024.0, prefilter=False)
        return out.reshape(P.shape[:-1])

    sag = np.stack(np.broadcast_arrays(cx[:, None], ys[None, :], zs[:, None]), axis=-1)
    # the coronal panel through the posterior third of the bodies shows bodies and pedicles
    cor = np.stack(np.broadcast_arrays(xs[None, :], cy[:, None] + 8.0, zs[:, None]), axis=-1)
    level, width = WINDOWS_HU["bone"]
    n_max = int(labels.array.max())
    cmap = _label_colours(n_max)
    fig, axes = plt.subplots(1, 2, figsize=(13, 9), facecolor="black")
    panels = [("sagittal (along the spine)", sag, ys, "A", "P", lambda c: c[1]),
              ("coronal (along the spine)", cor, xs, "R", "L", lambda c: c[0])]
    for ax, (name, P, cols, left, right, pick) in zip(axes, panels):
        img = window(sample(ct, P, 1), level=level, width=width)
        lab = sample(labels, P, 0)
        extent = (cols[0], cols[-1], zs[-1], zs[0])
        ax.imshow(img, cmap="gray", extent=extent, aspect="equal", interpolation="bilinear")
        shown = np.ma.masked_equal(lab, 0)
        ax.imshow(shown, cmap=cmap, vmin=0, vmax=n_max, alpha=0.35, extent=extent, aspect="equal",
                  interpolation="nearest")
        for nm, c, _ in cents:
            ax.text(pick(c), c[2], nm, color="yellow", fontsize=10, fontweight="bold", ha="center", va="center")
        ax.set_title(name, color="white")
        ax.set_axis_off()
        label_edges(ax, left, right, "S", "I", colour="cyan", fontsize=14)
    fig.suptitle(title or "spinenav anatomy: levels", color="white")
    return save_figure(fig, path, dpi=80)


# ----------------------------------------------------------------------------- everything
def write_anatomy(out_dir: str | os.PathLike[str], ct: Volume, labels: Volume, model: SpineModel, *,
                  label_ids: Literal["totalsegmentator", "verse"] = "totalsegmentator",
                  meshes: bool = True, png: bool = True, mesh_smooth_mm: float = 0.0) -> dict[str, Path]:
    """Write every output into `out_dir`, all or nothing.

    Files: ``labels.nii.gz``, ``spine.json``, ``landmarks.mrk.json``, ``measurements.csv``,
    ``measurements.md``, ``overview.png`` and ``meshes/<level>.stl`` (one per vertebra, LPS mm).

    Returns
    -------
    dict
        Key -> final path ("labels", "spine", "markups", "csv", "markdown", "png", "mesh:L4", ...).
    """
    out = Path(out_dir)
    paths: dict[str, Path] = {}
    with atomic_folder(out) as tmp:
        paths["labels"] = write_label_map(labels, tmp / "labels.nii.gz", ids=label_ids)
        paths["spine"] = write_spine_json(model, tmp / "spine.json")
        paths["markups"] = write_markups(model, tmp / "landmarks.mrk.json")
        paths["csv"] = write_text_atomic(tmp / "measurements.csv", measurements_csv(model))
        paths["markdown"] = write_text_atomic(tmp / "measurements.md", measurements_markdown(model))
        if png:
            paths["png"] = overview_png(ct, labels, model, tmp / "overview.png")
        if meshes:
            for v in model.vertebrae:
                verts, faces = vertebra_mesh(labels, v.label_id, smooth_mm=mesh_smooth_mm)
                paths[f"mesh:{v.name}"] = write_stl(verts, faces, tmp / "meshes" / f"{v.name}.stl", name=v.name)
    return {k: out / p.relative_to(tmp) for k, p in paths.items()}


def read_markups_points(path: str | os.PathLike[str]) -> Mapping[str, tuple[float, float, float]]:
    """label -> LPS position of a point list written by :func:`write_markups` (for checks)."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    mk = doc["markups"][0]
    if mk.get("coordinateSystem") != "LPS":
        raise ValueError(f"{path}: expected LPS markups, got {mk.get('coordinateSystem')!r}")
    return {cp["label"]: tuple(cp["position"]) for cp in mk["controlPoints"]}

"""Plan outputs: ``plan.json``, 3D Slicer markups, STL models, a label map of the corridors.

:func:`write_plan` writes one folder, all or nothing (:func:`spinenav.atomic.atomic_folder`):

* ``plan.json`` - the :class:`SurgicalPlan` (schema ``spinenav.plan/1``);
* ``markups/<id>.mrk.json`` - one Slicer line per trajectory (screw: bone entry -> tip; tube:
  skin entry -> target), ``markups/entries.mrk.json`` the skin and bone entry points,
  ``markups/incisions.mrk.json`` the incisions' ends and centres; all ``coordinateSystem``
  "LPS" (clinical-reference 9.2);
* ``models/<id>.stl`` - screws (cylinder with a conical tip), tubes (skin to docking point) and
  cages (boxes) in CT (LPS mm) coordinates;
* ``corridors.nii.gz`` - a label map on the CT grid: every screw and tube as a cylinder
  (ids in ``corridors.json``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from spinenav.anatomy.export import SLICER_MARKUPS_SCHEMA, markups_document, write_stl
from spinenav.atomic import atomic_folder, write_json_atomic
from spinenav.imaging.io import write_nifti
from spinenav.imaging.volume import Volume
from spinenav.planning.fields import cylinder_mask
from spinenav.planning.plan import SurgicalPlan


def line_markup(name: str, start_world_mm, end_world_mm, *, description: str = "") -> dict:
    """A 3D Slicer markups line (``.mrk.json``) in LPS."""
    cps = []
    for k, (label, pos) in enumerate((("start", start_world_mm), ("end", end_world_mm)), start=1):
        cps.append({"id": str(k), "label": f"{name} {label}", "description": description, "associatedNodeID": "",
                    "position": [float(x) for x in pos],
                    "orientation": [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0],
                    "selected": True, "locked": True, "visibility": True, "positionStatus": "defined"})
    return {"@schema": SLICER_MARKUPS_SCHEMA,
            "markups": [{"type": "Line", "coordinateSystem": "LPS", "coordinateUnits": "mm", "locked": True,
                         "labelFormat": "%N-%d", "name": name, "controlPoints": cps, "measurements": [],
                         "display": {"visibility": True, "textScale": 2.0, "glyphScale": 1.5}}]}


def _frame(axis: NDArray) -> tuple[NDArray, NDArray]:
    a = axis / np.linalg.norm(axis)
    ref = np.array([0.0, 0.0, 1.0]) if abs(a[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = np.cross(a, ref)
    u /= np.linalg.norm(u)
    return u, np.cross(a, u)


def cylinder_mesh(start_world_mm, end_world_mm, radius_mm: float, *, n: int = 32, tip_mm: float = 0.0
                  ) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Closed cylinder from start to end (outward winding), optionally ending in a cone of
    length `tip_mm` inside the end (a screw tip). Vertices (V, 3) LPS mm, faces (F, 3)."""
    a = np.asarray(start_world_mm, float)
    b = np.asarray(end_world_mm, float)
    ax = b - a
    L = float(np.linalg.norm(ax))
    d = ax / L
    u, v = _frame(d)
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    ring = np.cos(t)[:, None] * u + np.sin(t)[:, None] * v
    body_end = b - d * min(tip_mm, L)
    verts = [a + radius_mm * ring, body_end + radius_mm * ring, a[None], b[None]]
    V = np.vstack(verts)
    i0, i1, ca, cb = 0, n, 2 * n, 2 * n + 1
    faces = []
    for k in range(n):
        k1 = (k + 1) % n
        faces += [(i0 + k, i0 + k1, i1 + k1), (i0 + k, i1 + k1, i1 + k)]  # side
        faces.append((ca, i0 + k1, i0 + k))  # start cap
        faces.append((cb, i1 + k, i1 + k1))  # end cap or cone
    F = np.array(faces, dtype=np.int64)
    # orient outward: check the first side face's normal against the radial direction
    tri = V[F[0]]
    nrm = np.cross(tri[1] - tri[0], tri[2] - tri[0])
    if nrm @ (tri.mean(axis=0) - (a + d * ((tri.mean(axis=0) - a) @ d))) < 0:
        F = F[:, ::-1]
    return V, F


def box_mesh(centre_world_mm, axes_world: NDArray, half_sizes_mm) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """A box (outward winding): `axes_world` rows are its three unit axes."""
    c = np.asarray(centre_world_mm, float)
    A = np.asarray(axes_world, float)
    h = np.asarray(half_sizes_mm, float)
    signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
    V = c + (signs * h) @ A
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    F = []
    for q in quads:
        F += [(q[0], q[1], q[2]), (q[0], q[2], q[3])]
    F = np.array(F, np.int64)
    centroid = V.mean(axis=0)
    out = []
    for f in F:
        tri = V[f]
        nrm = np.cross(tri[1] - tri[0], tri[2] - tri[0])
        out.append(f if nrm @ (tri.mean(axis=0) - centroid) > 0 else f[::-1])
    return V, np.array(out)


def corridor_label_map(plan: SurgicalPlan, grid: Volume) -> tuple[Volume, dict[int, str]]:
    """Every screw (its cylinder) and tube (skin entry to target, tube diameter) as a label."""
    arr = np.zeros(grid.shape, np.uint16)
    legend: dict[int, str] = {}
    k = 0
    for s in plan.screws:
        k += 1
        legend[k] = f"screw {s.id}" + ("" if s.accepted else " (not accepted)")
        sl, m = cylinder_mask(grid, np.asarray(s.entry_bone_world_mm), np.asarray(s.tip_world_mm), s.diameter_mm / 2)
        if m.size:
            arr[sl][m & (arr[sl] == 0)] = k
    for c in plan.corridors:
        k += 1
        legend[k] = f"tube {c.id}"
        start = c.skin_entry_world_mm if c.skin_entry_world_mm is not None else c.docking_world_mm
        sl, m = cylinder_mask(grid, np.asarray(start), np.asarray(c.target_world_mm), c.tube_diameter_mm / 2)
        if m.size:
            arr[sl][m & (arr[sl] == 0)] = k
    return Volume(arr, grid.affine, modality="SEG", is_label=True, meta={"units": "label"}), legend


def write_plan(plan: SurgicalPlan, out_dir: str | os.PathLike[str], ct: Volume, labels: Volume | None = None
               ) -> dict[str, Path]:
    """Write the plan folder (see the module docstring), all or nothing. Returns name -> path
    (paths inside the final folder). `labels` is accepted for symmetry with the anatomy
    writer and not needed (the corridors are drawn on the CT's grid)."""
    del labels
    out = Path(out_dir)
    names: dict[str, Path] = {}
    with atomic_folder(out) as tmp:
        write_json_atomic(tmp / "plan.json", plan.to_json_dict())
        names["plan"] = Path("plan.json")
        mk = tmp / "markups"
        models = tmp / "models"
        points = []
        for s in plan.screws:
            write_json_atomic(mk / f"screw_{s.id}.mrk.json", line_markup(
                f"screw {s.id}", s.entry_bone_world_mm, s.tip_world_mm,
                description=f"{s.catalogue_item}, margin {s.min_cortical_margin_mm:.1f} mm, grade {s.predicted_grade}"
                            + ("" if s.accepted else ", NOT ACCEPTED")))
            names[f"markup:screw_{s.id}"] = Path("markups") / f"screw_{s.id}.mrk.json"
            points.append((f"{s.id} bone entry", s.entry_bone_world_mm, "screw entry on bone"))
            if s.entry_skin_world_mm is not None:
                points.append((f"{s.id} skin entry", s.entry_skin_world_mm, "screw entry on skin"))
            V, F = cylinder_mesh(s.entry_bone_world_mm, s.tip_world_mm, s.diameter_mm / 2, tip_mm=s.diameter_mm / 2)
            write_stl(V, F, models / f"screw_{s.id}.stl", name=f"screw {s.id}")
            names[f"model:screw_{s.id}"] = Path("models") / f"screw_{s.id}.stl"
        for c in plan.corridors:
            start = c.skin_entry_world_mm if c.skin_entry_world_mm is not None else c.docking_world_mm
            write_json_atomic(mk / f"tube_{c.id}.mrk.json", line_markup(
                f"tube {c.id}", start, c.target_world_mm, description=f"{c.tube_catalogue_item} to {c.target_kind}"))
            names[f"markup:tube_{c.id}"] = Path("markups") / f"tube_{c.id}.mrk.json"
            points.append((f"{c.id} docking", c.docking_world_mm, "tube docking point (lamina-facet junction)"))
            points.append((f"{c.id} target", c.target_world_mm, c.target_kind.replace("_", " ")))
            if c.skin_entry_world_mm is not None:
                points.append((f"{c.id} skin entry", c.skin_entry_world_mm, "tube entry on skin"))
                V, F = cylinder_mesh(c.skin_entry_world_mm, c.docking_world_mm, c.tube_diameter_mm / 2)
                write_stl(V, F, models / f"tube_{c.id}.stl", name=f"tube {c.id}")
                names[f"model:tube_{c.id}"] = Path("models") / f"tube_{c.id}.stl"
        for g in plan.cages:
            ax = np.asarray(g.axis_world)
            hz = np.asarray(g.height_axis_world)
            wd = np.cross(hz, ax)
            wd /= np.linalg.norm(wd)
            V, F = box_mesh(g.centre_world_mm, np.vstack([ax, wd, hz]),
                            [g.length_mm / 2, g.width_mm / 2, g.height_mm / 2])
            write_stl(V, F, models / f"cage_{g.id}.stl", name=f"cage {g.id}")
            names[f"model:cage_{g.id}"] = Path("models") / f"cage_{g.id}.stl"
        write_json_atomic(mk / "entries.mrk.json", markups_document(points, name="plan entries"))
        names["markup:entries"] = Path("markups") / "entries.mrk.json"
        inc_pts = []
        for i in plan.incisions:
            desc = f"{i.length_mm:.0f} mm incision for {', '.join(i.entries)}"
            inc_pts += [(f"{i.id} centre", i.centre_world_mm, desc), (f"{i.id} start", i.start_world_mm, desc),
                        (f"{i.id} end", i.end_world_mm, desc)]
        write_json_atomic(mk / "incisions.mrk.json", markups_document(inc_pts, name="plan incisions"))
        names["markup:incisions"] = Path("markups") / "incisions.mrk.json"
        vol, legend = corridor_label_map(plan, ct)
        write_nifti(vol, tmp / "corridors.nii.gz")
        write_json_atomic(tmp / "corridors.json", {"schema": "spinenav.corridor-labels/1",
                                                  "labels": {str(k): v for k, v in legend.items()}})
        names["corridors"] = Path("corridors.nii.gz")
        names["corridors_legend"] = Path("corridors.json")
    return {k: out / v for k, v in names.items()}

"""plan.json, Slicer markups (LPS), STL models in CT coordinates, corridor label map; atomic."""

from __future__ import annotations

import json

import numpy as np
import pytest
from plan_cases import phantom, planned

from spinenav.anatomy.export import read_stl
from spinenav.imaging import read_volume
from spinenav.planning import load_plan, write_plan
from spinenav.planning.export import box_mesh, cylinder_mesh


def _volume_mm3(tris: np.ndarray) -> float:
    """Signed volume of a closed triangle mesh (positive when wound outwards)."""
    return float(np.einsum("ij,ij->i", tris[:, 0], np.cross(tris[:, 1], tris[:, 2])).sum() / 6.0)


def test_write_plan_writes_every_output(tmp_path):
    ph = phantom("aniso")
    plan = planned("aniso", "tlif", "L4-L5", "left")
    paths = write_plan(plan, tmp_path / "plan", ph.ct, ph.labels)
    assert all(p.is_file() for p in paths.values()), [k for k, p in paths.items() if not p.is_file()]
    assert load_plan(paths["plan"]) == plan
    # one Slicer line per trajectory, LPS, ends where the plan says
    s = plan.screws[0]
    mk = json.loads(paths[f"markup:screw_{s.id}"].read_text())["markups"][0]
    assert mk["type"] == "Line" and mk["coordinateSystem"] == "LPS"
    np.testing.assert_allclose([c["position"] for c in mk["controlPoints"]], [s.entry_bone_world_mm, s.tip_world_mm])
    pts = json.loads(paths["markup:entries"].read_text())["markups"][0]
    assert pts["coordinateSystem"] == "LPS" and len(pts["controlPoints"]) >= 2 * len(plan.screws)
    inc = json.loads(paths["markup:incisions"].read_text())["markups"][0]
    assert len(inc["controlPoints"]) == 3 * len(plan.incisions)
    # STL screw: in CT (LPS) coordinates, the right size, closed and wound outwards
    _, tris = read_stl(paths[f"model:screw_{s.id}"])
    v = tris.reshape(-1, 3)
    a = np.asarray(s.axis_world)
    t = (v - np.asarray(s.entry_bone_world_mm)) @ a
    assert t.min() == pytest.approx(0, abs=1e-3) and t.max() == pytest.approx(s.length_mm, abs=1e-3)
    r = s.diameter_mm / 2
    expected = np.pi * r ** 2 * (s.length_mm - r) + np.pi * r ** 2 * r / 3  # cylinder + cone tip
    assert _volume_mm3(tris.astype(float)) == pytest.approx(expected, rel=0.02)
    # cage: a box of the catalogue size
    g = plan.cages[0]
    _, ctris = read_stl(paths[f"model:cage_{g.id}"])
    assert _volume_mm3(ctris.astype(float)) == pytest.approx(g.length_mm * g.width_mm * g.height_mm, rel=1e-3)
    # corridor label map on the CT grid; the screw's voxels lie along its axis
    cor = read_volume(paths["corridors"])
    legend = json.loads(paths["corridors_legend"].read_text())["labels"]
    assert cor.shape == ph.ct.shape and np.allclose(cor.affine, ph.ct.affine, atol=1e-3)
    k = int(next(i for i, name in legend.items() if name == f"screw {s.id}"))
    idx = np.argwhere(np.asarray(cor.array) == k)
    w = cor.world_from_index(idx) - np.asarray(s.entry_bone_world_mm)
    radial = np.linalg.norm(w - (w @ a)[:, None] * a, axis=1)
    assert len(idx) > 0 and radial.max() <= r + 1e-6


def test_write_plan_is_all_or_nothing(tmp_path, monkeypatch):
    ph = phantom("aniso")
    plan = planned("aniso", "tlif", "L4-L5", "left")
    target = tmp_path / "plan"
    target.mkdir()
    (target / "old.txt").write_text("previous run")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("spinenav.planning.export.write_nifti", boom)
    with pytest.raises(OSError, match="disk full"):
        write_plan(plan, target, ph.ct, ph.labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan"]  # no partial folder left
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]  # the previous output untouched


def test_meshes_are_closed_and_wound_outwards():
    V, F = cylinder_mesh([0, 0, 0], [0, 0, 10], 2.0, n=64)
    assert _volume_mm3(V[F]) == pytest.approx(np.pi * 4 * 10, rel=0.01)
    V, F = cylinder_mesh([5, 5, 5], [-5, 5, 5], 1.0, n=64, tip_mm=1.0)
    assert _volume_mm3(V[F]) == pytest.approx(np.pi * 9 + np.pi / 3, rel=0.01)
    V, F = box_mesh([1, 2, 3], np.eye(3)[[1, 0, 2]], [1, 2, 3])  # a left-handed axis order
    assert _volume_mm3(V[F]) == pytest.approx(48.0)

"""Outputs: label map (TotalSegmentator or VerSe ids), spine.json, STL meshes (LPS, outward
normals), Slicer markups (LPS), overview PNG, CSV and Markdown tables; all or nothing."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from spinenav.anatomy import export as E
from spinenav.anatomy.model import SCHEMA, SpineModelSchemaError, load_spine_model
from spinenav.imaging import read_volume

from anat_cases import phantom, phantom_model

CASE = "noisy"  # L1-L3 at 1 mm


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    ph, sm = phantom(CASE), phantom_model(CASE)
    out = tmp_path_factory.mktemp("anatomy") / "out"
    paths = E.write_anatomy(out, ph.ct, ph.labels, sm)
    return ph, sm, out, paths


def test_every_file_is_written(written):
    ph, sm, out, paths = written
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == sorted(["labels.nii.gz", "spine.json", "landmarks.mrk.json", "measurements.csv",
                            "measurements.md", "overview.png", "meshes/L1.stl", "meshes/L2.stl", "meshes/L3.stl"])
    assert not list(out.parent.glob(".*partial*"))
    assert paths["png"].stat().st_size > 20_000


def test_spine_json_round_trips_and_checks_its_schema(written, tmp_path):
    _, sm, _, paths = written
    data = json.loads(paths["spine"].read_text())
    assert data["schema"] == SCHEMA == "spinenav.spine/1"
    back = load_spine_model(paths["spine"])
    assert back == sm
    data["schema"] = "spinenav.spine/0"
    bad = tmp_path / "old.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(SpineModelSchemaError, match="expected 'spinenav.spine/1'"):
        load_spine_model(bad)


def test_label_map_keeps_totalsegmentator_ids_or_writes_verse(written, tmp_path):
    ph, _, _, paths = written
    back = read_volume(paths["labels"])
    np.testing.assert_array_equal(back.array, ph.labels.array)
    np.testing.assert_allclose(back.affine, ph.labels.affine, atol=1e-4)
    verse = read_volume(E.write_label_map(ph.labels, tmp_path / "verse.nii.gz", ids="verse"))
    assert set(np.unique(verse.array)) == {0, 20, 21, 22}  # L1-L3; discs, cord, muscles dropped
    assert np.count_nonzero(verse.array == 20) == np.count_nonzero(ph.labels.array == 31)


def test_meshes_are_closed_outward_and_in_lps_mm(written):
    ph, _, _, paths = written
    for lvl, lid in (("L1", 31), ("L2", 30)):
        normals, tri = E.read_stl(paths[f"mesh:{lvl}"])
        # signed volume from the winding: positive only if the normals point outwards
        vol = float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0)
        voxels = np.count_nonzero(ph.labels.array == lid) * ph.labels.voxel_volume_mm3
        assert vol == pytest.approx(voxels, rel=0.05), lvl
        # facet normals agree with the winding
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        assert np.mean(np.einsum("ij,ij->i", n, normals) > 0) > 0.99
        # the mesh lies on the vertebra in world LPS mm
        idx = np.argwhere(ph.labels.array == lid)
        lo, hi = ph.labels.world_from_index(idx.min(axis=0)), ph.labels.world_from_index(idx.max(axis=0))
        pts = tri.reshape(-1, 3)
        assert np.all(pts.min(axis=0) >= lo - 1.0) and np.all(pts.max(axis=0) <= hi + 1.0)


def test_mesh_winding_survives_a_grid_that_flips_handedness():
    ph = phantom(CASE)
    # the same labels on a grid whose i axis runs to the patient's right (det < 0)
    lab = ph.labels
    flipped = lab.__class__(lab.array[::-1].copy(), lab.affine @ np.array(
        [[-1, 0, 0, lab.shape[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], float), modality="SEG", is_label=True)
    assert np.linalg.det(flipped.affine[:3, :3]) < 0
    v, f = E.vertebra_mesh(flipped, 31)
    tri = v[f]
    vol = float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0)
    assert vol > 0


def test_markups_are_an_lps_point_list_of_every_landmark(written):
    _, sm, _, paths = written
    doc = json.loads(paths["markups"].read_text())
    mk = doc["markups"][0]
    assert mk["type"] == "Fiducial" and mk["coordinateSystem"] == "LPS"
    pts = E.read_markups_points(paths["markups"])
    l2 = sm.vertebra("L2").landmarks
    np.testing.assert_allclose(pts["L2 body centroid"], l2.body_centroid_world_mm)
    np.testing.assert_allclose(pts["L2 left pedicle isthmus"], l2.pedicles["left"].isthmus_centre_world_mm)
    assert "L2 spinous tip" in pts and "L2 superior left facet" in pts
    assert all("position" in cp and len(cp["position"]) == 3 for cp in mk["controlPoints"])


def test_tables_list_every_level_and_disc(written):
    _, sm, _, paths = written
    rows = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    assert [r["level"] for r in rows] == ["L1", "L1-L2", "L2", "L2-L3", "L3"]
    assert float(rows[0]["canal_ap_mm"]) == pytest.approx(sm.vertebra("L1").measurements.canal_ap_diameter_mm, abs=0.01)
    assert float(rows[1]["disc_middle_mm"]) == pytest.approx(sm.disc("L1-L2").middle_height_mm, abs=0.01)
    md = paths["markdown"].read_text()
    assert md.startswith("| level | kind |") and "| L2-L3 | disc |" in md
    assert "disc height index" in md  # the findings list


def test_a_failure_leaves_no_half_written_folder(tmp_path, monkeypatch):
    ph, sm = phantom(CASE), phantom_model(CASE)
    out = tmp_path / "out"

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(E, "write_stl", boom)
    with pytest.raises(OSError, match="disk full"):
        E.write_anatomy(out, ph.ct, ph.labels, sm, png=False)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a temporary one
    # an existing folder is replaced as a whole, and survives a failed rewrite
    monkeypatch.undo()
    E.write_anatomy(out, ph.ct, ph.labels, sm, png=False, meshes=False)
    before = sorted(p.name for p in out.iterdir())
    monkeypatch.setattr(E, "write_markups", boom)
    with pytest.raises(OSError):
        E.write_anatomy(out, ph.ct, ph.labels, sm, png=False, meshes=False)
    assert sorted(p.name for p in out.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]

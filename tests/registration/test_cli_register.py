"""``spinenav register`` and ``spinenav levelcheck`` end to end on phantom shots written as PNG +
sidecar (spinenav DRR display PNGs: 8-bit, windowed, bone bright)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from spinenav.anatomy.labels import ts_id
from spinenav.app.cli import app
from spinenav.fluoro.carm import CarmGeometry, project_points, projection_matrix
from spinenav.fluoro.drr import to_display
from spinenav.fluoro.shots import write_shot_png
from spinenav.phantom import write_phantom
from spinenav.registration.evaluate import error_components_mm, rigid_about

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory, phantom_l3l5, scene, l4, ap_lateral):
    d = tmp_path_factory.mktemp("reg_cli")
    paths = write_phantom(phantom_l3l5, d / "phantom")
    g, ap, lat = ap_lateral
    T_true = rigid_about(l4.centroid_ct_mm, np.radians([2.0, 2.0, -3.0]), [3.0, -3.0, 4.0])
    shots = []
    for name, pose in (("ap", ap), ("lat", lat)):
        img = scene.render(ts_id("L4"), T_true, g, pose, seed=3)
        shots.append(write_shot_png(d / f"{name}.png", to_display(img), g, pose)[0])
    return paths, shots, T_true


def test_register_writes_pose_and_overlay(files, l4, ap_lateral, tmp_path):
    """Monoplane through the CLI (biplane accuracy is tested in test_intensity.py): in-plane error."""
    paths, shots, T_true = files
    out_dir = tmp_path / "reg"
    res = runner.invoke(app, ["register", str(paths["ct"]), str(shots[0]), "--level", "L4",
                              "--labels", str(paths["labels"]), "--out", str(out_dir)])
    assert res.exit_code == 0, res.output
    doc = json.loads((out_dir / "registration.json").read_text())
    assert doc["schema"] == "spinenav.registration/1" and doc["mode"] == "monoplane"
    assert doc["ok"], doc["reason"]
    in_plane, _ = error_components_mm(l4.points_ct_mm, np.array(doc["T_world_from_ct"]), T_true,
                                      ap_lateral[1].detector_direction_world)
    assert in_plane < 1.5, in_plane
    assert (out_dir / "overlay_1.png").stat().st_size > 1000


def test_levelcheck_cli(files, phantom_l3l5, scene, ap_lateral, tmp_path):
    paths, _, T_true = files
    _, ap, _ = ap_lateral
    g = CarmGeometry.square(128, detector_mm=150.0)  # within the CT's extent (see test_levelcheck.py)
    shot = write_shot_png(tmp_path / "ap.png", to_display(scene.render(ts_id("L4"), T_true, g, ap, seed=4)), g,
                          ap)[0]
    c5 = phantom_l3l5.truth.vertebra("L5").centre_world_mm  # L5 did not move
    u, v = project_points(projection_matrix(g, ap), c5)
    res = runner.invoke(app, ["levelcheck", str(paths["ct"]), str(shot), "--marker-px", f"{u:.1f},{v:.1f}",
                              "--labels", str(paths["labels"])])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.strip().splitlines()[-1])["level"] == "L5"


def test_cli_bad_marker(files):
    paths, shots, _ = files
    res = runner.invoke(app, ["levelcheck", str(paths["ct"]), str(shots[0]), "--marker-px", "12",
                              "--labels", str(paths["labels"])])
    assert res.exit_code == 2 and "marker-px" in res.output

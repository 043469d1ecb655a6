"""`spinenav fluoro`: a shot and its sidecar written, standard views aimed, bad input refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spinenav.app.cli import EXIT_BAD_INPUT, app
from spinenav.fluoro.shots import read_shot
from spinenav.imaging import write_nifti

runner = CliRunner()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, phantom_l3s1, spine_l3s1) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("fluoro_cli")
    ct = write_nifti(phantom_l3s1.ct, d / "ct.nii.gz")
    spine = d / "spine.json"
    spine.write_text(json.dumps(spine_l3s1.to_json_dict()))
    return ct, spine


def _run(*args: str):
    return runner.invoke(app, ["fluoro", *args])


def test_lateral_view_written_with_sidecar(inputs, tmp_path):
    ct, spine = inputs
    out = tmp_path / "lat.png"
    r = _run(str(ct), "--view", "lateral", "--level", "L4", "--spine", str(spine), "--pixels", "64", "--out", str(out))
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert abs(info["primary_deg"] - 90.0) < 3.0 and info["dap_gy_cm2_estimate"] > 0
    shot = read_shot(out)
    assert shot.has_geometry and shot.image.shape == (64, 64) and shot.modality == "DRR"


def test_manual_pose_needs_no_anatomy(inputs, tmp_path):
    ct, _ = inputs
    out = tmp_path / "m.png"
    r = _run(str(ct), "--lao-deg", "-20", "--cranial-deg", "15", "--pixels", "32", "--out", str(out))
    assert r.exit_code == 0, r.output
    shot = read_shot(out)
    assert round(shot.pose.to_dict()["primary_deg"], 6) == -20.0


@pytest.mark.parametrize("args, message", [
    (["--view", "ap", "--level", "C3"], "C3"),
    (["--view", "sideways", "--level", "L4"], "--view must be one of"),
    (["--view", "ap"], "needs --level"),
    (["--lao-deg", "10"], "both --lao-deg and --cranial-deg"),
    (["--view", "ap", "--level", "L4", "--method", "magic"], "method must be one of"),
])
def test_bad_input_one_line_exit_2(inputs, tmp_path, args, message):
    ct, spine = inputs
    r = _run(str(ct), *args, "--spine", str(spine), "--pixels", "32", "--out", str(tmp_path / "x.png"))
    assert r.exit_code == EXIT_BAD_INPUT, r.output
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()

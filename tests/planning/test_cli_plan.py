"""`spinenav plan`: the plan folder written; bad input refused in one line, exit 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from plan_cases import phantom
from typer.testing import CliRunner

from spinenav.anatomy.export import write_label_map
from spinenav.app.cli import EXIT_BAD_INPUT, app
from spinenav.imaging import write_nifti

runner = CliRunner()


def _write(name: str, folder: Path) -> tuple[Path, Path]:
    ph = phantom(name)
    return write_nifti(ph.ct, folder / "ct.nii.gz"), write_label_map(ph.labels, folder / "labels.nii.gz")


@pytest.fixture(scope="module")
def aniso_files(tmp_path_factory) -> tuple[Path, Path]:
    return _write("aniso", tmp_path_factory.mktemp("aniso"))


def test_plan_tlif_writes_the_plan_folder(aniso_files, tmp_path):
    ct, labels = aniso_files
    out = tmp_path / "plan"
    result = runner.invoke(app, ["plan", str(ct), "--levels", "L4-L5", "--procedure", "tlif", "--side", "left",
                                 "--out", str(out), "--backend", "labelmap", "--labelmap", str(labels)])
    assert result.exit_code == 0, result.output
    plan = json.loads((out / "plan.json").read_text())
    assert plan["schema"] == "spinenav.plan/1"
    assert len(plan["screws"]) == 4 and len(plan["cages"]) == 1 and len(plan["corridors"]) == 1
    assert plan["spine"]["backend"]["name"] == "labelmap"
    assert (out / "corridors.nii.gz").is_file() and list((out / "models").glob("*.stl"))
    assert "L4-left" in result.stdout and "cage-tlif" in result.stdout


@pytest.mark.parametrize("args,message", [
    (["--levels", "L4-L5", "--procedure", "fusion"], "unknown procedure"),
    (["--levels", "L4-L5", "--procedure", "tlif", "--side", "both"], "conflicting options"),
    (["--levels", "L4-L5", "--procedure", "screws", "--over-the-top"], "conflicting options"),
    (["--levels", "L4-L5", "--side", "up"], "--side"),
    (["--levels", "L4-Q7"], "not a vertebral level"),
    (["--levels", "T4-T5", "--backend", "labelmap"], "not in view"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(aniso_files, tmp_path, args, message):
    ct, labels = aniso_files
    out = tmp_path / "plan"
    extra = ["--labelmap", str(labels)] if "--backend" in args else []
    result = runner.invoke(app, ["plan", str(ct), "--out", str(out), *args, *extra])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert message in result.output
    assert len([line for line in result.stderr.splitlines() if line.startswith("error")]) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_level_whose_pedicles_take_no_screw_is_refused_unless_allowed(tmp_path):
    ct, labels = _write("small", tmp_path)
    out = tmp_path / "plan"
    base = ["plan", str(ct), "--levels", "T10", "--out", str(out), "--backend", "labelmap", "--labelmap", str(labels)]
    result = runner.invoke(app, base)
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert "T10: no pedicle takes a screw" in result.output and "--allow-unfit" in result.output
    assert not out.exists()
    result = runner.invoke(app, [*base, "--allow-unfit"])
    assert result.exit_code == 0, result.output
    plan = json.loads((out / "plan.json").read_text())
    assert not any(s["accepted"] for s in plan["screws"])
    assert any(f["code"] == "no_safe_screw" for f in plan["flags"])

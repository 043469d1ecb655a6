"""`spinenav segment` and `spinenav measure`: outputs written, levels named, bad input refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spinenav.app.cli import EXIT_BAD_INPUT, app
from spinenav.imaging import write_nifti
from spinenav.phantom import PhantomParams, generate_phantom

runner = CliRunner()


@pytest.fixture(scope="module")
def phantom_ct(tmp_path_factory) -> Path:
    ph = generate_phantom(PhantomParams(levels=("L2", "S1"), spacing_mm=1.0, seed=5))
    return write_nifti(ph.ct, tmp_path_factory.mktemp("ct") / "ct.nii.gz")


@pytest.fixture(scope="module")
def segmented(phantom_ct: Path, tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("seg") / "anatomy"
    result = runner.invoke(app, ["segment", str(phantom_ct), "--out", str(out)])
    return out, result


def test_segment_writes_every_output_and_names_levels(segmented):
    out, result = segmented
    assert result.exit_code == 0, result.output
    for name in ("labels.nii.gz", "spine.json", "landmarks.mrk.json", "measurements.csv",
                 "measurements.md", "overview.png"):
        assert (out / name).is_file(), name
    assert {p.stem for p in (out / "meshes").glob("*.stl")} >= {"L3", "L4", "L5", "S1"}
    spine = json.loads((out / "spine.json").read_text())
    assert spine["schema"].startswith("spinenav.spine/")
    names = [v["name"] for v in spine["vertebrae"]]
    assert {"L3", "L4", "L5"} <= set(names)
    assert any("builtin segmentation" in w for w in spine["warnings"])  # findings unconfirmed
    partial = [v["name"] for v in spine["vertebrae"] if "partly outside" in " ".join(v["label"]["evidence"])]
    assert partial  # the phantom's top and bottom are cut by its field of view
    assert not any(f["level"] in partial for f in spine["flags"])  # a half canal is no stenosis
    markups = json.loads((out / "landmarks.mrk.json").read_text())
    assert markups["markups"][0]["coordinateSystem"] == "LPS"
    assert "L4" in result.stdout and "sacrum" in result.stdout


def test_measure_reads_a_segment_folder(segmented):
    out, _ = segmented
    result = runner.invoke(app, ["measure", str(out)])
    assert result.exit_code == 0, result.output
    assert "| L4 |" in result.stdout and "canal AP" in result.stdout
    # the sacrum is cut by the field of view (confidence < 0.5): its numbers are not shown
    sacrum_rows = [line for line in result.stdout.splitlines() if line.startswith("| sacrum |")]
    assert sacrum_rows and "doubtful: values not shown" in sacrum_rows[0]


@pytest.mark.parametrize("args, expected", [
    (["measure", "missing.nii.gz"], "no such file"),
    (["segment", "{ct}", "--out", "{out}", "--level-at", "L4"], "Z_MM,LEVEL"),
    (["segment", "{ct}", "--out", "{out}", "--backend", "magic"], "unknown backend"),
    (["segment", "{ct}", "--out", "{out}", "--lowest-level", "L5", "--level-at", "10,L4"], "not both"),
])
def test_bad_input_exits_2_and_writes_nothing(phantom_ct: Path, tmp_path: Path, args, expected):
    out = tmp_path / "never"
    argv = [a.format(ct=phantom_ct, out=out) for a in args]
    result = runner.invoke(app, argv)
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert expected in result.stderr
    assert not out.exists()


def test_labelmap_backend_keeps_input_paths_out_of_the_outputs(phantom_ct: Path, tmp_path: Path):
    from spinenav.imaging import read_volume

    patient_dir = tmp_path / "Doe_Jane_1970"  # a folder named after a patient
    patient_dir.mkdir()
    ct = read_volume(phantom_ct)
    ph_labels = generate_phantom(PhantomParams(levels=("L2", "S1"), spacing_mm=1.0, seed=5)).labels
    labelmap = write_nifti(ph_labels, patient_dir / "seg.nii.gz")
    out = tmp_path / "anatomy"
    result = runner.invoke(app, ["segment", str(phantom_ct), "--out", str(out), "--backend",
                                 "labelmap", "--labelmap", str(labelmap), "--no-meshes"])
    assert result.exit_code == 0, result.output
    for f in out.iterdir():
        if f.suffix in (".json", ".csv", ".md"):
            assert "Doe_Jane" not in f.read_text(), f.name
    assert ct.shape == ph_labels.shape

"""`spinenav info`: the right geometry on real data, a clear message and exit 2 on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from numpy.testing import assert_allclose
from typer.testing import CliRunner

from spinenav.app.cli import EXIT_BAD_INPUT, app

runner = CliRunner()


def _info_json(path: Path) -> dict:
    result = runner.invoke(app, ["info", str(path), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _sitk_affine(img: sitk.Image) -> np.ndarray:
    return np.array(img.GetDirection()).reshape(3, 3)


@pytest.mark.realdata
def test_info_on_chest_ct_matches_readme_and_simpleitk(chest_ct_path: Path):
    info = _info_json(chest_ct_path)
    assert info["shape"] == [512, 512, 133]
    assert_allclose(info["spacing_mm"], [0.703, 0.703, 2.5], atol=1e-3)  # data README
    assert info["orientation"] == "LAS"  # data README
    img = sitk.ReadImage(str(chest_ct_path))
    assert_allclose(info["origin_world_mm"], img.GetOrigin(), atol=1e-3)
    assert_allclose(info["direction"], _sitk_affine(img), atol=1e-6)
    assert info["value_range"][0] <= -1000 and info["value_range"][1] >= 1000  # air and bone
    assert any("padding" in n for n in info["notes"])  # -2048 outside the scan circle


@pytest.mark.realdata
def test_info_on_dicom_series_matches_readme_and_simpleitk(abdomen_series_dir: Path):
    info = _info_json(abdomen_series_dir)
    assert info["shape"] == [512, 512, 20]
    assert_allclose(info["spacing_mm"], [0.977, 0.977, 2.0], atol=1e-3)  # data README
    assert info["modality"] == "CT" and info["modality_source"] == "dicom"
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(abdomen_series_dir)))
    img = reader.Execute()
    assert_allclose(info["spacing_mm"], img.GetSpacing(), atol=1e-4)
    assert_allclose(info["direction"], _sitk_affine(img), atol=1e-6)
    assert_allclose(info["origin_world_mm"], img.GetOrigin(), atol=1e-3)
    arr = sitk.GetArrayFromImage(img)
    assert info["value_range"] == [float(arr.min()), float(arr.max())]


@pytest.mark.parametrize("make, expected", [
    (lambda d: d / "absent.nii.gz", "no such file"),
    (lambda d: (d / "x.txt").write_text("not an image") and d / "x.txt", "unknown image format"),
])
def test_info_bad_input_exits_2_with_one_line(tmp_path: Path, make, expected):
    path = make(tmp_path)
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == EXIT_BAD_INPUT
    assert expected in result.stderr and path.name in result.stderr
    assert result.stdout == ""


def test_phantom_bad_options_exit_2(tmp_path: Path):
    result = runner.invoke(app, ["phantom", "--out", str(tmp_path / "p"), "--slip-mm", "L4"])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "--slip-mm" in result.stderr and "NAME=NUMBER" in result.stderr
    result = runner.invoke(app, ["phantom", "--out", str(tmp_path / "p"), "--levels", "T10"])
    assert result.exit_code == EXIT_BAD_INPUT and "--levels" in result.stderr
    assert not (tmp_path / "p").exists()

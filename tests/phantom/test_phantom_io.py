"""Writing a phantom: files, schema-versioned truth, round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spinenav.errors import SpinenavError
from spinenav.imaging.io import read_volume
from spinenav.phantom import SCHEMA, PhantomParams, TruthSchemaError, generate_phantom, load_truth, write_phantom


@pytest.fixture(scope="module")
def small():
    return generate_phantom(PhantomParams(levels=("L4", "L5"), spacing_mm=2.0, organs=False, seed=42,
                                          slip_mm={"L4": 3.0}))


def test_write_and_read_back(small, tmp_path):
    paths = write_phantom(small, tmp_path / "ph")
    assert set(paths) == {"ct", "labels", "truth"}
    assert all(p.is_file() for p in paths.values())
    assert sorted(p.name for p in (tmp_path / "ph").iterdir()) == ["ct.nii.gz", "labels.nii.gz", "truth.json"]
    raw = json.loads(paths["truth"].read_text())
    assert raw["schema"] == SCHEMA == "spinenav.phantom-truth/1"
    assert raw["seed"] == 42 and raw["params"]["seed"] == 42
    assert raw["params"]["slip_mm"] == {"L4": 3.0}
    truth = load_truth(paths["truth"])
    assert truth == small.truth
    ct = read_volume(paths["ct"])
    assert np.allclose(ct.affine, small.ct.affine, atol=1e-5)
    assert np.array_equal(ct.array, small.ct.array)
    labels = read_volume(paths["labels"])
    assert np.allclose(labels.affine, small.labels.affine, atol=1e-5)
    assert np.array_equal(labels.array, small.labels.array)
    assert np.allclose(truth.grid.T_world_from_index, ct.affine, atol=1e-5)


def test_load_truth_checks_the_schema(small, tmp_path):
    paths = write_phantom(small, tmp_path)
    data = json.loads(paths["truth"].read_text())
    data["schema"] = "spinenav.phantom-truth/0"
    bad = tmp_path / "old.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(TruthSchemaError, match=r"schema is 'spinenav.phantom-truth/0', expected"):
        load_truth(bad)
    with pytest.raises(SpinenavError, match="no such file"):
        load_truth(tmp_path / "missing.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(TruthSchemaError, match="cannot read as JSON"):
        load_truth(tmp_path / "junk.json")
    del data["vertebrae"]
    data["schema"] = SCHEMA
    (tmp_path / "partial.json").write_text(json.dumps(data))
    with pytest.raises(TruthSchemaError, match="does not match"):
        load_truth(tmp_path / "partial.json")


def test_no_partial_files_are_left(small, tmp_path):
    write_phantom(small, tmp_path)
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_progress_is_reported_and_nothing_is_printed(capsys):
    calls = []
    generate_phantom(PhantomParams(levels=("L4", "L4"), spacing_mm=3.0, organs=False),
                     progress=lambda step, frac: calls.append((step, frac)))
    fracs = [f for _, f in calls]
    assert fracs[0] == 0.0 and calls[-1] == ("done", 1.0)
    assert all(0.0 <= a <= b <= 1.0 for a, b in zip(fracs, fracs[1:]))
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_oversized_grid_is_refused_before_allocating():
    from spinenav.phantom import PhantomParameterError

    with pytest.raises(PhantomParameterError, match=r"voxels .* use a coarser spacing_mm or a smaller fov"):
        generate_phantom(PhantomParams(spacing_mm=0.2))

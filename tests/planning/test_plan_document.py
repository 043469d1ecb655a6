"""The SurgicalPlan document: published schema up to date, version checked on load, round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from plan_cases import phantom, planned

from spinenav.imaging.volume import Volume
from spinenav.planning import PlanSchemaError, SurgicalPlan, ct_fingerprint, load_plan
from spinenav.planning.plan import SCHEMA, schema_text

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schemas" / "plan.schema.json"


def test_published_schema_is_up_to_date():
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text(), (
        "schemas/plan.schema.json is stale: run 'python -m spinenav.planning.plan schemas/plan.schema.json'")
    schema = json.loads(SCHEMA_FILE.read_text())
    for field in ("source_ct", "spine", "screws", "rods", "corridors", "cages", "incisions", "tissue", "flags",
                  "parameters"):
        assert field in schema["properties"], field


def test_plan_round_trips_through_json(tmp_path):
    plan = planned("aniso", "tlif", "L4-L5", "left")
    p = tmp_path / "plan.json"
    p.write_text(json.dumps(plan.to_json_dict()))
    back = load_plan(p)
    assert back == plan
    assert json.loads(p.read_text())["schema"] == SCHEMA


def test_load_plan_refuses_another_schema_version(tmp_path):
    plan = planned("aniso", "tlif", "L4-L5", "left")
    d = plan.to_json_dict()
    d["schema"] = "spinenav.plan/0"
    p = tmp_path / "old.json"
    p.write_text(json.dumps(d))
    with pytest.raises(PlanSchemaError, match="expected 'spinenav.plan/1'"):
        load_plan(p)
    with pytest.raises(PlanSchemaError, match="no such file"):
        load_plan(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(PlanSchemaError, match="cannot read"):
        load_plan(tmp_path / "bad.json")
    d["schema"] = SCHEMA
    d["screws"] = [{"id": "x"}]
    (tmp_path / "wrong.json").write_text(json.dumps(d))
    with pytest.raises(PlanSchemaError, match="does not match"):
        load_plan(tmp_path / "wrong.json")


def test_fingerprint_hashes_voxels_and_grid_without_identifiers():
    ct = phantom("aniso").ct
    fp = ct_fingerprint(ct)
    assert fp.shape == ct.shape and np.allclose(fp.spacing_mm, ct.spacing_mm)
    assert fp == ct_fingerprint(Volume(ct.array.copy(), ct.affine))  # meta does not enter
    changed = ct.array.copy()
    changed[0, 0, 0] += 1
    assert ct_fingerprint(Volume(changed, ct.affine)).sha256 != fp.sha256
    assert set(SurgicalPlan.model_fields["source_ct"].annotation.model_fields) == {
        "sha256", "dtype", "shape", "spacing_mm", "T_world_from_index", "axcodes"}

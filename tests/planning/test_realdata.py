"""Real chest CT, T10-L3: every screw is grade A against the reference labels, or flagged."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from grading import fraction_outside_margin, screw_surface_points

sys.path.insert(0, str(Path(__file__).parents[1] / "anatomy"))
from anat_cases import chest  # noqa: E402  (the anatomy tests' cached chest case)

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def chest_plan(chest_ct_path, chest_labels_path):
    from spinenav.planning import plan_procedure

    ct, imp, spine = chest(str(chest_ct_path), str(chest_labels_path))
    return imp, spine, plan_procedure(ct, spine, imp.labels, levels="T10-L3", procedure="screws", side="both")


def test_every_chest_screw_is_grade_a_against_the_reference_labels_or_flagged(chest_plan):
    imp, spine, plan = chest_plan
    assert [s.level for s in plan.screws[::2]] == ["T10", "T11", "T12", "L1", "L2", "L3"]
    accepted = [s for s in plan.screws if s.accepted]
    assert len(accepted) >= len(plan.screws) // 2  # most thoraco-lumbar pedicles take a screw
    for s in plan.screws:
        label_id = spine.vertebra(s.level).label_id
        pts = screw_surface_points(s.entry_bone_world_mm, s.tip_world_mm, s.axis_world, s.diameter_mm, s.seat_mm)
        breach = fraction_outside_margin(imp.labels, label_id, pts, 0.0)  # the reference label map
        if s.accepted:
            assert breach == 0.0, f"{s.id}: accepted but breaches the reference labels"
            assert s.predicted_grade == "A"
        else:
            assert "no_safe_screw" in s.flags and s.reason
            assert any(f.item == s.id and f.severity == "critical" for f in plan.flags)
    # a screw the field of view cuts off from the skin says so instead of inventing a skin entry
    for s in plan.screws:
        assert s.entry_skin_world_mm is not None or "skin_entry_unknown" in s.flags

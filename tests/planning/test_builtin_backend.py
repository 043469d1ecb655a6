"""One plan through the builtin segmentation (CT only): accepted screws still hold the true bone."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import phantom, phantom_solids
from grading import _directions, fraction_outside_margin, screw_surface_points


@pytest.fixture(scope="module")
def builtin_plan():
    from spinenav.anatomy.segment import measure_segmentation, segment_spine
    from spinenav.planning import plan_procedure

    ph = phantom("noisy")  # L1-L3, 60 HU noise
    seg = segment_spine(ph.ct, backend="builtin", lowest_level="L3")  # no sacrum in view to count from
    spine = measure_segmentation(ph.ct, seg)
    # L3 sits at the bottom edge of this phantom's field of view: the builtin route finds neither
    # of its pedicles (plan_procedure refuses such a level with the reason), so plan L1-L2
    return plan_procedure(ph.ct, spine, seg.labels, levels="L1-L2", procedure="screws", side="both")


def test_builtin_segmentation_plan_keeps_accepted_screws_in_the_true_bone(builtin_plan):
    ph = phantom("noisy")
    solids = phantom_solids("noisy")
    dirs = _directions()
    assert builtin_plan.spine.backend.name == "builtin"
    accepted = [s for s in builtin_plan.screws if s.accepted]
    assert len(accepted) >= 4, [(s.id, s.reason) for s in builtin_plan.screws]
    for s in accepted:
        pts = screw_surface_points(s.entry_bone_world_mm, s.tip_world_mm, s.axis_world, s.diameter_mm, s.seat_mm)
        assert fraction_outside_margin(ph.labels, ph.truth.vertebra(s.level).label_id, pts, 0.0) == 0.0, s.id
        probes = (pts[:, None, :] + 1.0 * dirs[None]).reshape(-1, 3)
        inside = solids[s.level].solid.contains(probes).reshape(len(pts), -1).all(axis=1)
        assert inside.all(), f"{s.id}: {np.mean(~inside):.1%} of the surface within 1 mm of the true cortex"
    for s in builtin_plan.screws:
        assert s.accepted or "no_safe_screw" in s.flags

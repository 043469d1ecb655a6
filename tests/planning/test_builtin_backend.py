"""One plan through the builtin segmentation (CT only): accepted screws still hold the true bone."""

from __future__ import annotations

import numpy as np
import pytest
from plan_cases import phantom, phantom_solids
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


def test_margins_on_the_builtin_segmentation_are_flagged_unless_they_cover_its_boundary_error(builtin_plan,
                                                                                             normal_screws):
    from spinenav.planning.screws import boundary_uncertainty_mm

    u = boundary_uncertainty_mm("builtin", phantom("noisy").ct.spacing_mm)
    assert u >= 1.0  # at least a voxel
    flags = {(f.item, f.code): f for f in builtin_plan.flags}
    accepted = [s for s in builtin_plan.screws if s.accepted]
    assert accepted
    for s in accepted:
        doubtful = s.min_cortical_margin_mm < s.required_margin_mm + u
        assert ("margin_unverified" in s.flags) == doubtful, (s.id, s.min_cortical_margin_mm)
        if doubtful:
            assert s.confidence <= 0.5 and "builtin segmentation" in s.reason
            f = flags[(s.id, "margin_unverified")]
            assert f.severity == "warning" and f.threshold == pytest.approx(s.required_margin_mm + u)
    # a label map the user supplies is the reference the margins are measured on: no such doubt
    assert normal_screws.spine.backend.name == "labelmap"
    assert not any("margin_unverified" in s.flags for s in normal_screws.screws)
    assert not any(f.code == "margin_unverified" for f in normal_screws.flags)

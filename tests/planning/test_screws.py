"""Pedicle screws on phantoms: inside the true safe corridor, >= 1 mm of bone, sized to it."""

from __future__ import annotations

import numpy as np
import pytest
from plan_cases import phantom, phantom_solids, planned
from grading import _directions, fraction_outside_margin, screw_surface_points

from spinenav.planning.catalogue import default_catalogue, largest_at_most
from spinenav.planning.screws import gr_grade

CAT = default_catalogue()
STEP_MM = CAT.screw_step_mm()
#: Tolerances, with their reasons:
#: the screw axis may leave the truth corridor's axis by the slack between the corridor's
#: largest screw and ours, plus 0.5 mm (the corridor's diameter is rounded down and found with
#: 32 rays, ours is measured on a 1 mm CT).
AXIS_TOL_MM = 0.5
#: the tip may pass the truth corridor's tip by up to 1 mm: that tip is the end of the stretch
#: where the corridor's *largest* screw keeps its margin; a thinner screw may go deeper, and the
#: analytic margin check below still holds it >= 1 mm from the anterior cortex.
TIP_TOL_MM = 1.0

CASES = [("noisy", "L1-L3"), ("pathology", "L2-S1"), ("scoliosis", "T11-L3"), ("aniso", "L3-L5")]


def _check_against_truth(name: str, levels: str) -> list[str]:
    plan = planned(name, "screws", levels)
    ph = phantom(name)
    solids = phantom_solids(name)
    dirs = _directions()
    problems = []
    accepted = [s for s in plan.screws if s.accepted]
    for s in accepted:
        pts = screw_surface_points(s.entry_bone_world_mm, s.tip_world_mm, s.axis_world, s.diameter_mm, s.seat_mm)
        # 1. >= 1 mm of bone all round, against the exact (analytic) vertebra
        probes = (pts[:, None, :] + 1.0 * dirs[None]).reshape(-1, 3)
        inside = solids[s.level].solid.contains(probes).reshape(len(pts), -1).all(axis=1)
        if not inside.all():
            problems.append(f"{s.id}: {np.mean(~inside):.1%} of the surface within 1 mm of the true cortex")
        # 2. grade A against the TRUE label map: no surface point outside the vertebra's label
        label_id = ph.truth.vertebra(s.level).label_id
        if fraction_outside_margin(ph.labels, label_id, pts, 0.0) > 0:
            problems.append(f"{s.id}: breaches the true label map")
        # 3. inside the truth corridor
        v = ph.truth.vertebra(s.level).pedicles[s.side]
        cor = v.corridor
        a_t = np.asarray(cor.axis_world)
        bott = np.asarray(cor.bottleneck_world_mm)
        a = np.asarray(s.axis_world)
        e = np.asarray(s.entry_bone_world_mm)
        t = float((bott - e) @ a_t) / float(a @ a_t)  # our axis meets the bottleneck's plane
        off = e + t * a - bott
        # the corridor's cross-section is the pedicle's: narrow along the width, taller along the
        # height; the screw may sit off the axis by the slack in each direction
        slack = (cor.max_diameter_mm - s.diameter_mm) / 2 + AXIS_TOL_MM
        off_w = abs(float(off @ np.asarray(v.width_direction_world)))
        off_h = abs(float(off @ np.asarray(v.height_direction_world)))
        if off_w > slack or off_h > slack + max(v.height_mm - v.width_mm, 0.0) / 2:
            problems.append(f"{s.id}: axis {off_w:.2f} mm (width) / {off_h:.2f} mm (height) from the corridor "
                            f"axis at the isthmus (slack {slack:.2f} mm)")
        tip_depth = float((np.asarray(s.tip_world_mm) - np.asarray(cor.entry_world_mm)) @ a_t)
        if tip_depth > cor.max_length_mm + TIP_TOL_MM:
            problems.append(f"{s.id}: tip {tip_depth:.1f} mm along the corridor, beyond its {cor.max_length_mm:.1f}")
        # 4. diameter within one catalogue step of the largest safe size (80% rule included)
        safe = largest_at_most(CAT.screw_diameters_mm, min(cor.max_diameter_mm, 0.8 * v.width_mm))
        if safe is not None and s.diameter_mm < safe - STEP_MM - 1e-6:
            problems.append(f"{s.id}: {s.diameter_mm} mm, largest safe {safe} mm")
        if safe is not None and s.diameter_mm > safe + 1e-6:
            problems.append(f"{s.id}: {s.diameter_mm} mm exceeds the largest safe {safe} mm")
        if s.predicted_grade != "A" or s.min_cortical_margin_mm < 1.0:
            problems.append(f"{s.id}: planner reports grade {s.predicted_grade}, margin {s.min_cortical_margin_mm:.2f}")
    return problems


@pytest.mark.parametrize("name,levels", CASES)
def test_accepted_screws_lie_in_the_true_corridor_with_1mm_of_bone(name, levels):
    plan = planned(name, "screws", levels)
    assert plan.screws
    # every screw is accepted on these phantoms (lumbar pedicles >= 6 mm wide)
    assert all(s.accepted for s in plan.screws), [(s.id, s.reason) for s in plan.screws if not s.accepted]
    problems = _check_against_truth(name, levels)
    assert not problems, "\n".join(problems)


def test_screw_angles_follow_the_measured_pedicle(normal_screws):
    ph = phantom("noisy")
    for s in normal_screws.screws:
        truth = ph.truth.vertebra(s.level).pedicles[s.side]
        # convergence within 8 degrees of the pedicle's transverse angle (the search box)
        assert abs(s.convergence_deg - truth.transverse_angle_deg) <= 8.5, (s.id, s.convergence_deg)
        assert s.entry_skin_world_mm is not None and s.skin_to_bone_mm > 20.0
        # the skin entry is behind the bone entry
        assert (np.asarray(s.entry_skin_world_mm) - np.asarray(s.entry_bone_world_mm))[1] > 0


def test_no_screw_fits_a_4mm_pedicle_and_alternatives_are_offered():
    plan = planned("small", "screws", "T10")
    ph = phantom("small")
    for s in plan.screws:
        truth = ph.truth.vertebra("T10").pedicles[s.side]
        assert truth.corridor.max_diameter_mm < min(CAT.screw_diameters_mm)  # the truth agrees
        assert not s.accepted and "no_safe_screw" in s.flags
        assert "no catalogue screw" in s.reason
        kinds = [a.kind for a in s.alternatives]
        assert "skip_level" in kinds and "cortical_bone_trajectory" in kinds
    assert any(f.code == "no_safe_screw" and f.severity == "critical" for f in plan.flags)


def test_rods_join_adjacent_screws(normal_screws):
    rods = {r.side: r for r in normal_screws.rods}
    assert set(rods) == {"left", "right"}
    for side, r in rods.items():
        heads = [normal_screws.screw(i).entry_bone_world_mm for i in r.screw_ids]
        span = sum(np.linalg.norm(np.subtract(b, a)) for a, b in zip(heads, heads[1:]))
        assert r.span_mm == pytest.approx(span)
        assert r.length_mm >= span + 2 * r.overhang_mm and r.length_mm in CAT.rod_lengths_mm
        assert r.ok and r.ml_step_mm < 10.0


@pytest.mark.parametrize("breach,grade", [(-1.0, "A"), (0.0, "A"), (0.5, "B"), (1.99, "B"), (2.0, "C"),
                                          (3.9, "C"), (4.0, "D"), (5.99, "D"), (6.0, "E"), (12.0, "E")])
def test_gertzbein_robbins_thresholds(breach, grade):
    assert gr_grade(breach) == grade

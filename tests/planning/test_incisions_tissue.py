"""Incisions (entries merged when close) and the open-versus-MIS tissue comparison."""

from __future__ import annotations

import numpy as np
import pytest
from plan_cases import planned

from spinenav.planning.incisions import SkinEntry, plan_incisions

AXES = dict(cranial_world=np.array([0.0, 0.0, 1.0]), posterior_world=np.array([0.0, 1.0, 0.0]),
            left_world=np.array([1.0, 0.0, 0.0]), midline_world_mm=np.zeros(3))


def test_close_entries_share_one_incision_and_far_ones_do_not():
    entries = [SkinEntry("a", np.array([30.0, 80.0, 0.0]), "left", 15.0),
               SkinEntry("b", np.array([30.0, 80.0, 12.0]), "left", 15.0),
               SkinEntry("c", np.array([30.0, 80.0, 50.0]), "left", 15.0),
               SkinEntry("d", np.array([-30.0, 80.0, 0.0]), "right", 20.0)]
    inc, total = plan_incisions(entries, merge_distance_mm=20.0, **AXES)
    assert [i.entries for i in inc] == [["a", "b"], ["c"], ["d"]]
    assert inc[0].length_mm == pytest.approx(12.0 + 15.0)
    np.testing.assert_allclose(inc[0].centre_world_mm, [30.0, 80.0, 6.0])
    np.testing.assert_allclose(inc[0].direction_world, [0.0, 0.0, 1.0])
    assert inc[1].length_mm == 15.0 and inc[2].length_mm == 20.0
    assert inc[2].side == "right" and inc[2].paramedian_offset_mm == pytest.approx(30.0)
    assert total == pytest.approx(27.0 + 15.0 + 20.0)
    inc, _ = plan_incisions(entries, merge_distance_mm=45.0, **AXES)
    assert [len(i.entries) for i in inc] == [3, 1]  # single linkage: a-b-c chain


def test_plan_incisions_cover_every_skin_entry():
    plan = planned("pathology", "tlif", "L4-L5", "left")
    covered = [e for i in plan.incisions for e in i.entries]
    expected = [s.id for s in plan.screws if s.accepted] + [c.id for c in plan.corridors]
    assert sorted(covered) == sorted(expected)
    assert plan.total_incision_length_mm == pytest.approx(sum(i.length_mm for i in plan.incisions))


@pytest.mark.parametrize("procedure,levels,side", [("tlif", "L4-L5", "left"), ("microdiscectomy", "L4-L5", "right"),
                                                   ("screws", "L2-S1", "both")])
def test_mis_disrupts_less_muscle_than_the_open_equivalent(procedure, levels, side):
    plan = planned("pathology", procedure, levels, side)
    t = plan.tissue
    assert t.muscle_source == "autochthon labels"  # the phantom's label map has them
    assert 0 < t.mis_muscle_disrupted_cm3 < t.open_muscle_disrupted_cm3 <= t.paraspinal_muscle_total_cm3
    assert t.muscle_spared_cm3 == pytest.approx(t.open_muscle_disrupted_cm3 - t.mis_muscle_disrupted_cm3)
    assert t.mis_bone_removed_mm3 == pytest.approx(sum(c.laminotomy_volume_mm3 for c in plan.corridors))
    if procedure == "screws":
        assert t.open_bone_removed_mm3 == 0 and t.mis_bone_removed_mm3 == 0
    else:
        assert t.open_bone_removed_mm3 >= t.mis_bone_removed_mm3 > 0
    assert t.definitions and all(isinstance(d, str) for d in t.definitions)


def test_hu_muscle_mask_is_used_without_autochthon_labels():
    from plan_cases import phantom, phantom_spine

    from spinenav.planning.tissue import muscle_mask

    ph = phantom("aniso")
    labels = ph.labels.with_array(np.where(np.isin(ph.labels.array, (86, 87)), 0, ph.labels.array))
    m_hu, src = muscle_mask(ph.ct, labels, phantom_spine("aniso"), ["L3", "L4", "L5"])
    m_lab, src2 = muscle_mask(ph.ct, ph.labels, phantom_spine("aniso"), ["L3", "L4", "L5"])
    assert (src, src2) == ("HU mask", "autochthon labels")
    # the HU mask finds most of the labelled paraspinal muscle
    assert (m_hu & m_lab).sum() / m_lab.sum() > 0.7

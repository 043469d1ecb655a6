"""Level naming from anatomical anchors: right when the anatomy is clear, ambiguous when not."""

from __future__ import annotations

import pytest

from spinenav.anatomy.levels import (
    CONFIDENCE_BOTH_ANCHORS,
    CONFIDENCE_ONE_ANCHOR,
    LevelEvidence,
    name_levels,
)
from spinenav.errors import SpinenavError


def _spine(n_lumbar: int = 5, n_thoracic_ribbed: int = 3, sacrum: bool = True,
           ribs: str = "both") -> list[LevelEvidence]:
    """Caudal to cranial: [sacrum, S1], n_lumbar rib-free, then rib-bearing vertebrae."""
    ev = [LevelEvidence(kind="sacrum"), LevelEvidence(kind="S1")] if sacrum else []
    ev += [LevelEvidence() for _ in range(n_lumbar)]
    for i in range(n_thoracic_ribbed):
        lowest = i == 0
        ev.append(LevelEvidence(rib_left=True, rib_right=not (lowest and ribs == "one")))
    return ev


def test_sacrum_and_ribs_agreeing_name_every_level():
    naming = name_levels(_spine())
    assert naming.names == ["sacrum", "S1", "L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10"]
    assert naming.confidence == CONFIDENCE_BOTH_ANCHORS and not naming.ambiguous and naming.ok
    assert any("five lumbar" in e for e in naming.evidence)


@pytest.mark.parametrize("n_lumbar, reading", [(6, "L6"), (4, "sacralised L5")])
def test_transitional_anatomy_is_ambiguous_with_both_readings(n_lumbar, reading):
    naming = name_levels(_spine(n_lumbar=n_lumbar))
    assert naming.ambiguous and not naming.ok
    assert naming.confidence < CONFIDENCE_ONE_ANCHOR
    assert naming.alternatives and naming.alternatives[0] != naming.names
    assert any(reading in e for e in naming.evidence)
    assert naming.names[2] == "L5"  # counted from the sacrum, the way lumbar levels are counted


def test_only_ribs_in_view_names_from_t12_with_lower_confidence():
    naming = name_levels(_spine(sacrum=False, n_lumbar=2, n_thoracic_ribbed=4))
    assert naming.names == ["L2", "L1", "T12", "T11", "T10", "T9"]
    assert naming.confidence == CONFIDENCE_ONE_ANCHOR and not naming.ambiguous


def test_only_sacrum_in_view_names_from_l5():
    naming = name_levels(_spine(n_lumbar=3, n_thoracic_ribbed=0))
    assert naming.names == ["sacrum", "S1", "L5", "L4", "L3"]
    assert naming.confidence == CONFIDENCE_ONE_ANCHOR


def test_no_anchor_refuses_to_name():
    naming = name_levels([LevelEvidence() for _ in range(3)])
    assert naming.names == [None, None, None] and naming.ambiguous and naming.confidence == 0.0
    assert any("--lowest-level" in e for e in naming.evidence)


def test_rib_bearing_lowest_vertebra_without_rib_free_below_is_doubtful():
    naming = name_levels([LevelEvidence(rib_left=True, rib_right=True) for _ in range(3)])
    assert naming.names[0] == "T12" and naming.ambiguous
    assert any("cut field of view" in e for e in naming.evidence)


def test_one_sided_lowest_rib_is_reported():
    naming = name_levels(_spine(ribs="one"))
    assert any("one side only" in e for e in naming.evidence)


def test_overrides_win_and_are_recorded():
    naming = name_levels([LevelEvidence() for _ in range(3)], lowest_level="l4")
    assert naming.names == ["L4", "L3", "L2"] and naming.confidence == 1.0 and not naming.ambiguous
    ev = [LevelEvidence(centre_z_mm=z) for z in (0.0, 30.0, 60.0)]
    naming = name_levels(ev, level_at=(31.0, "T12"))
    assert naming.names == ["L1", "T12", "T11"] and "z=31.0" in naming.evidence[0]


@pytest.mark.parametrize("kwargs, match", [
    (dict(lowest_level="L9"), "unknown vertebral level"),
    (dict(lowest_level="L5", level_at=(0.0, "L4")), "not both"),
])
def test_bad_overrides_are_refused(kwargs, match):
    with pytest.raises(SpinenavError, match=match):
        name_levels([LevelEvidence(centre_z_mm=0.0)], **kwargs)

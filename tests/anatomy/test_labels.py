"""Label id tables: TotalSegmentator v2 and VerSe ids, level names, disc ids, conversions."""

from __future__ import annotations

import numpy as np
import pytest

from spinenav.anatomy import labels as L


def test_totalsegmentator_ids_match_the_shared_structures_table():
    # shared/data/chest_ct/structures.csv and the data README
    expected = {"sacrum": 25, "vertebrae_S1": 26, "vertebrae_L5": 27, "vertebrae_L1": 31, "vertebrae_T12": 32,
                "vertebrae_T1": 43, "vertebrae_C7": 44, "vertebrae_C1": 50, "spinal_cord": 79, "hip_left": 77,
                "hip_right": 78, "autochthon_left": 86, "autochthon_right": 87, "iliopsoas_left": 88,
                "iliopsoas_right": 89, "rib_left_1": 92, "rib_left_12": 103, "rib_right_1": 104, "rib_right_12": 115}
    for name, i in expected.items():
        assert L.TS_V2_IDS[name] == i, name
        assert L.structure_name(i) == name


def test_every_level_round_trips_through_both_tables():
    for name in L.ALL_LEVELS:
        i = L.ts_id(name)
        assert L.level_name(i) == name
        if name != "S1":
            assert L.level_name(L.ts_from_verse(L.verse_id(name))) == name
    assert [L.verse_id(n) for n in ("C1", "C7", "T1", "T12", "L1", "L5", "L6", "T13")] == [1, 7, 8, 19, 20, 24, 25, 28]
    assert L.verse_id("S1") == L.verse_id("sacrum") == 26
    assert L.ts_from_verse(27) is None  # coccyx: no spinenav id
    assert L.ts_id("T13") == L.T13_ID and L.ts_id("L6") == L.L6_ID


def test_level_names_are_normalised_and_ordered():
    assert L.normalize_level("vertebrae_L4") == "L4"
    assert L.normalize_level("l4") == "L4"
    assert L.normalize_level("Sacrum") == "sacrum"
    assert L.normalize_level("L7") is None and L.normalize_level("liver") is None
    assert L.level_order("T12") < L.level_order("T13") < L.level_order("L1") < L.level_order("L6") < L.level_order("S1")
    assert L.level_region("C3") == "cervical" and L.level_region("S1") == "sacral"
    with pytest.raises(ValueError, match="not a vertebral level"):
        L.level_order("liver")


def test_disc_ids_are_200_plus_the_vertebra_above():
    assert L.disc_id("L4-L5") == 228
    assert L.disc_id("intervertebral_disc_L5-S1") == 227
    assert L.disc_name_from_id(228) == "L4-L5"
    assert L.disc_name_from_id(232) == "T12-L1"
    assert L.disc_name_from_id(226) is None  # no disc below S1
    assert L.parse_disc("L5-L4") is None and L.parse_disc("L1-L4") is None
    with pytest.raises(ValueError, match="not a disc"):
        L.disc_id("L4")


def test_relabel_and_verse_conversion():
    a = np.array([[0, 31, 32], [25, 26, 228]], np.uint8)
    v = L.to_verse(a)
    assert v.tolist() == [[0, 20, 19], [26, 26, 0]]
    r = L.relabel(a, {31: 5, 32: None})
    assert r.tolist() == [[0, 5, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match="negative"):
        L.relabel(np.array([-1, 2]), {2: 3})
    with pytest.raises(ValueError, match="not a VerSe"):
        L.ts_from_verse(40)


def test_unknown_names_are_refused():
    with pytest.raises(ValueError):
        L.ts_id("liver")
    with pytest.raises(ValueError, match="no VerSe id"):
        L.verse_id("coccygeal")
    assert L.describe_ids([31, 999]) == "31 (vertebrae_L1), 999 (unknown)"

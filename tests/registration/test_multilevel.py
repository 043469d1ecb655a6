"""Multi-level registration on the phantom: L3 and L4 moved differently in the target shots
(whole CT rendered with other physics: trilinear, 110 kVp, blur, noise), both poses recovered,
the relative motion reported, and a level started on its neighbour brought back by the bound."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spinenav.anatomy.labels import ts_id
from spinenav.fluoro.carm import CarmGeometry, CarmPose
from spinenav.registration.evaluate import mtre_mm, rigid_about
from spinenav.registration.intensity import RegistrationError, ShotView, prepare_vertebra
from spinenav.registration.multilevel import register_levels, relative_motion

FAST = dict(compute_uncertainty=False)


@pytest.fixture(scope="module")
def l3(phantom_l3l5):
    return prepare_vertebra(phantom_l3l5.ct, phantom_l3l5.labels, "L3")


@pytest.fixture(scope="module")
def two_moved(phantom_l3l5, scene, l3, l4):
    """Biplane shots (128 px) with L3 and L4 each moved its own way, the rest of the CT in place."""
    c3, c4 = l3.centroid_ct_mm, l4.centroid_ct_mm
    T = {"L3": rigid_about(c3, np.radians([1.5, -2.0, 2.0]), [2.0, -1.5, 1.0]),
         "L4": rigid_about(c4, np.radians([-2.0, 2.5, -1.5]), [-1.5, 2.0, -1.0])}
    g = CarmGeometry.square(128)
    iso = tuple(float(x) for x in 0.5 * (c3 + c4))
    shots = [ShotView(scene.render_moved({ts_id(n): T[n] for n in ("L3", "L4")}, g, pose, seed=10 + i), g, pose)
             for i, pose in enumerate((CarmPose(math.pi, 0.0, iso), CarmPose(math.pi / 2, 0.0, iso)))]
    return T, shots


def test_two_levels_moved_differently_are_both_recovered(l3, l4, two_moved):
    T, shots = two_moved
    starts = {"L3": rigid_about(T["L3"][:3, :3] @ l3.centroid_ct_mm + T["L3"][:3, 3], np.radians([4.0, -3.0, 3.0]),
                                [4.0, 3.0, -4.0]) @ T["L3"],
              "L4": rigid_about(T["L4"][:3, :3] @ l4.centroid_ct_mm + T["L4"][:3, 3], np.radians([-3.0, 4.0, 2.0]),
                                [-3.0, -4.0, 4.0]) @ T["L4"]}
    r = register_levels([l4, l3], shots, T_init_world_from_ct=starts, seed=1, **FAST)
    assert r.levels == ("L3", "L4")
    assert r.ok, r.reason
    for n, v in (("L3", l3), ("L4", l4)):
        assert mtre_mm(v.points_ct_mm, r.results[n].T_world_from_ct, T[n]) < 1.0, n
    (m,) = r.relative_motion
    ang, disp, _, _ = relative_motion(l3, l4, T["L3"], T["L4"])
    assert disp > 3.0 and ang > 3.0  # the two really moved differently
    # each pose within ~1 mm / ~1 deg at 1.2 mm pixels: the difference of two such errors
    assert abs(m.translation_mm - disp) < 1.5 and abs(m.rotation_deg - ang) < 2.0, (m, disp, ang)
    assert m.within_bounds
    assert not r.notes  # nothing to correct


def test_level_registered_onto_its_neighbour_is_brought_back(l3, l4, two_moved):
    """L4 started one level cranial (on L3) lands on L3 on its own; the bound on its motion
    relative to L3 makes the multi-level registration register it again, from L3's pose."""
    T, shots = two_moved
    up = l3.centroid_ct_mm - l4.centroid_ct_mm
    starts = {"L3": T["L3"], "L4": rigid_about(l4.centroid_ct_mm, [0, 0, 0], up) @ T["L4"]}
    r = register_levels([l3, l4], shots, T_init_world_from_ct=starts, seed=2, **FAST)
    assert mtre_mm(l4.points_ct_mm, r.results["L4"].T_world_from_ct, T["L4"]) < 1.0
    assert r.ok, r.reason
    assert any(n.startswith("L4:") for n in r.notes), r.notes


def test_bad_input(l3, two_moved):
    _, shots = two_moved
    with pytest.raises(RegistrationError, match="at least two"):
        register_levels([l3], shots)
    with pytest.raises(RegistrationError, match="twice"):
        register_levels([l3, l3], shots)
    with pytest.raises(RegistrationError, match="must be > 0"):
        register_levels([l3, l3], shots, max_relative_mm=0.0)

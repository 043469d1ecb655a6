"""Standard views on the phantom, checked against its ground truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spinenav.fluoro.carm import CarmGeometry, beam_direction, project_points, projection_matrix
from spinenav.fluoro.views import ViewError, standard_view

ANGLE_TOL_DEG = 1.0  # the bar for true AP / lateral against the truth endplates
BULLSEYE_TOL_PX = 1.0
LEVELS = ("L3", "L4", "L5", "S1")


def _deg_from_plane(b, normal) -> float:
    """Angle between a direction and a plane given by its normal, degrees."""
    return math.degrees(math.asin(min(1.0, abs(float(np.dot(b, normal))))))


@pytest.mark.parametrize("level", LEVELS)
def test_true_ap_and_lateral_against_truth(level, spine_l3s1, phantom_l3s1):
    tv = phantom_l3s1.truth.vertebra(level)
    n_sup = np.asarray(tv.superior_endplate.normal_world)
    for kind, across in (("ap", tv.axis_lr_world), ("lateral", tv.axis_ap_world)):
        v = standard_view(spine_l3s1, kind, level)
        b = beam_direction(v.pose.primary_rad, v.pose.secondary_rad)
        assert np.allclose(b, v.beam_world)
        # beam in the superior endplate's plane: the endplate shows as one line
        assert _deg_from_plane(b, n_sup) < ANGLE_TOL_DEG, f"{level} {kind}: {_deg_from_plane(b, n_sup):.2f} deg"
        # no rotation: AP beam perpendicular to the left-right axis, lateral to the AP axis
        assert _deg_from_plane(b, across) < ANGLE_TOL_DEG, f"{level} {kind} rotated"
    ap = standard_view(spine_l3s1, "ap", level)
    assert ap.beam_world @ np.asarray(tv.axis_ap_world) > 0.99  # anterior -> posterior (prone, tube under)
    lat = standard_view(spine_l3s1, "lateral", level, side="right")
    assert lat.beam_world @ np.asarray(tv.axis_lr_world) < -0.99  # detector at the patient's right


@pytest.mark.parametrize("level", ("L4", "L5"))
def test_true_ap_centres_the_spinous_process_between_the_pedicles(level, spine_l3s1, phantom_l3s1):
    tv = phantom_l3s1.truth.vertebra(level)
    g = CarmGeometry.square(512)
    P = projection_matrix(g, standard_view(spine_l3s1, "ap", level).pose)
    left, right, spinous = project_points(P, [tv.pedicles["left"].isthmus_centre_world_mm,
                                              tv.pedicles["right"].isthmus_centre_world_mm,
                                              tv.spinous_tip_world_mm])
    assert left[0] > spinous[0] > right[0]  # patient's left on the image's right
    assert abs(spinous[0] - (left[0] + right[0]) / 2) < 2.0  # px at 0.45 mm pitch


@pytest.mark.parametrize("level, side", [("L4", "left"), ("L5", "right"), ("L3", "left")])
def test_bullseye_puts_entry_and_tip_on_one_pixel(level, side, spine_l3s1, phantom_l3s1):
    corridor = phantom_l3s1.truth.vertebra(level).pedicles[side].corridor
    g = CarmGeometry.square(1024, detector_mm=300.0)
    v = standard_view(spine_l3s1, "bullseye", level, screw_entry_world_mm=corridor.entry_world_mm,
                      screw_tip_world_mm=corridor.tip_world_mm)
    entry, tip = project_points(projection_matrix(g, v.pose), [corridor.entry_world_mm, corridor.tip_world_mm])
    assert np.linalg.norm(entry - tip) < BULLSEYE_TOL_PX
    # and not by accident: a 5 deg different beam separates them by many pixels
    from dataclasses import replace
    tilted = replace(v.pose, secondary_rad=v.pose.secondary_rad + math.radians(5.0))
    e2, t2 = project_points(projection_matrix(g, tilted), [corridor.entry_world_mm, corridor.tip_world_mm])
    assert np.linalg.norm(e2 - t2) > 10.0


def test_oblique_and_sacral_views(spine_l3s1):
    ap = standard_view(spine_l3s1, "ap", "L4")
    for side, sign in (("left", 1.0), ("right", -1.0)):
        ob = standard_view(spine_l3s1, "oblique", "L4", side=side)
        lr = np.asarray(spine_l3s1.vertebra("L4").landmarks.frame.axis_lr_world)
        assert sign * np.dot(ob.beam_world, lr) == pytest.approx(math.sin(math.radians(35.0)), abs=1e-6)
        assert math.degrees(math.acos(np.dot(ob.beam_world, ap.beam_world))) == pytest.approx(35.0, abs=1e-6)
    inlet = standard_view(spine_l3s1, "inlet", "S1")
    outlet = standard_view(spine_l3s1, "outlet", "S1")
    assert inlet.secondary_deg == pytest.approx(-25.0, abs=0.5)
    assert outlet.secondary_deg == pytest.approx(40.0, abs=0.5)


def test_view_renders_an_image(spine_l3s1, attenuation_l3s1):
    g = CarmGeometry.square(64)
    v = standard_view(spine_l3s1, "lateral", "L4", attenuation=attenuation_l3s1, geometry=g)
    assert v.image.shape == (64, 64) and v.image.max() > 1.0
    d = v.to_dict()
    assert d["kind"] == "lateral" and "primary_deg" in d


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="ap", level="C2"), "level C2 is not in view"),
    (dict(kind="sideways", level="L4"), "view must be one of"),
    (dict(kind="bullseye", level="L4"), "needs a screw"),
    (dict(kind="ap", level="L4", endplate="middle"), "endplate must be"),
])
def test_bad_view_requests(kwargs, match, spine_l3s1):
    with pytest.raises(ViewError, match=match):
        standard_view(spine_l3s1, **kwargs)

"""Level check on the phantom: the level under a marker, with a runner-up; refusal off the spine."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from spinenav.fluoro.carm import CarmGeometry, CarmPose, project_points, projection_matrix
from spinenav.fluoro.drr import Spectrum, prepare_attenuation, render_line_integrals, transmission
from spinenav.registration.evaluate import rigid_about
from spinenav.registration.intensity import RegistrationError, ShotView
from spinenav.registration.levelcheck import check_level, prepare_spine


@pytest.fixture(scope="module")
def spine(phantom_l3l5):
    return prepare_spine(phantom_l3l5.ct, phantom_l3l5.labels)


@pytest.fixture(scope="module")
def shot_and_truth(phantom_l3l5, spine):
    """An AP shot (trilinear, 110 kVp, noise) of the whole CT moved 7 mm / 4 deg from its nominal pose."""
    att = prepare_attenuation(phantom_l3l5.ct, spectrum=Spectrum(kvp=110.0))
    c = spine.level_centroids_ct_mm["L4"]
    T_true = rigid_about(c, np.radians([2.0, -2.5, 2.0]), [4.0, 3.0, -5.0])
    # 150 mm detector (100 mm at the isocentre): the image stays within the phantom CT's 138 mm
    # cranio-caudal extent, as a real shot stays within the patient (a CT's cut ends are edges
    # no real shot has)
    g = CarmGeometry.square(128, detector_mm=150.0)
    pose = CarmPose(math.pi, 0.0, tuple(c + np.array([3.0, 0.0, -6.0])))
    L = render_line_integrals(replace(att, affine=T_true @ att.affine), g, pose, method="trilinear")
    img = -np.log(transmission(L, photons_per_pixel=1e6, blur_sigma_px=0.5, seed=1))
    return ShotView(img.astype(np.float32), g, pose), T_true


def _marker(shot, T, point_ct):
    return project_points(projection_matrix(shot.geometry, shot.pose), T[:3, :3] @ point_ct + T[:3, 3])


def test_level_under_marker(spine, shot_and_truth):
    level = "L3"
    shot, T_true = shot_and_truth
    r = check_level(spine, shot, _marker(shot, T_true, spine.level_centroids_ct_mm[level]), seed=1)
    assert r.ok, r.reason
    assert r.level == level
    assert r.runner_up in {"L3", "L4", "L5", None} and r.runner_up != level
    assert r.confidence >= 0.03


def test_marker_off_the_spine_is_refused(spine, shot_and_truth):
    shot, _ = shot_and_truth
    r = check_level(spine, shot, (5.0, 5.0), shifts=(0,), seed=2)  # image corner: soft tissue only
    assert not r.ok and r.ambiguous and r.level is None and "no vertebra" in r.reason


def test_marker_outside_the_image_is_an_error(spine, shot_and_truth):
    shot, _ = shot_and_truth
    with pytest.raises(RegistrationError, match="outside"):
        check_level(spine, shot, (500.0, 5.0))

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


@pytest.mark.parametrize("level", ["L3", "L5"])
def test_level_under_marker_scored_with_the_whole_patient(phantom_l3l5, spine, shot_and_truth, level):
    """The whole-CT variant (the CLI's default: all the CT's bone) names the level too, each
    vertebra at the patient's pose in the image plane (one AP shot: the depth is loose, up to
    ~4 mm here)."""
    from spinenav.registration.incontext import prepare_patient

    shot, T_true = shot_and_truth
    r = check_level(spine, shot, _marker(shot, T_true, spine.level_centroids_ct_mm[level]), seed=1,
                    patient=prepare_patient(phantom_l3l5.ct))
    assert r.ok, r.reason
    assert r.level == level and r.confidence >= 0.03
    from spinenav.registration.evaluate import error_components_mm

    for T in r.level_poses.values():  # every vertebra at the patient's pose, which is the truth here
        in_plane, depth = error_components_mm(spine.level_points_ct_mm[level], T, T_true,
                                              shot.pose.detector_direction_world)
        assert in_plane < 1.5 and depth < 6.0, (in_plane, depth)


def test_marker_off_the_spine_is_refused(spine, shot_and_truth):
    shot, _ = shot_and_truth
    r = check_level(spine, shot, (5.0, 5.0), shifts=(0,), seed=2)  # image corner: soft tissue only
    assert not r.ok and r.ambiguous and r.level is None and "no vertebra" in r.reason


def test_marker_outside_the_image_is_an_error(spine, shot_and_truth):
    shot, _ = shot_and_truth
    with pytest.raises(RegistrationError, match="outside"):
        check_level(spine, shot, (500.0, 5.0))


@pytest.fixture(scope="module")
def l4_biplane(spine, scene):
    """Biplane shots (128 px) of the CT with L4 moved 4 mm / 4 deg (its neighbours in place)."""
    from spinenav.anatomy.labels import ts_id

    c = spine.vertebrae["L4"].centroid_ct_mm
    g = CarmGeometry.square(128)
    T_true = rigid_about(c, np.radians([2.0, -3.0, 1.5]), [3.0, -2.0, 1.5])
    c_true = T_true[:3, :3] @ c + T_true[:3, 3]
    T_start = rigid_about(c_true, np.radians([5.0, 4.0, -4.5]), [-4.0, 5.0, 4.5]) @ T_true
    poses = (CarmPose(math.pi, 0.0, tuple(c)), CarmPose(math.pi / 2, 0.0, tuple(c)))
    shots = [ShotView(scene.render(ts_id("L4"), T_true, g, p, seed=i), g, p) for i, p in enumerate(poses)]
    return T_true, T_start, shots


def test_confirm_level_flags_a_vertebra_registered_onto_its_neighbour(spine, l4_biplane):
    """Started one level cranial, L4 registers onto L3 and scores as well as the right answer
    (reported ok by the registration alone); the neighbour context says the level is wrong."""
    from spinenav.registration.evaluate import mtre_mm
    from spinenav.registration.intensity import register_vertebra
    from spinenav.registration.levelcheck import confirm_level

    T_true, T_start, shots = l4_biplane
    l4 = spine.vertebrae["L4"]
    right = register_vertebra(l4, shots, T_init_world_from_ct=T_start, seed=1, compute_uncertainty=False)
    assert mtre_mm(l4.points_ct_mm, right.T_world_from_ct, T_true) < 1.0 and right.ok, right.reason
    confirmed = confirm_level(right, spine, shots)
    assert confirmed.ok, confirmed.reason
    assert "level confirmed" in confirmed.notes[-1]

    up = spine.vertebrae["L3"].centroid_ct_mm - l4.centroid_ct_mm
    wrong = register_vertebra(l4, shots, T_init_world_from_ct=rigid_about(l4.centroid_ct_mm, [0, 0, 0], up) @ T_start,
                              seed=1, compute_uncertainty=False)
    assert mtre_mm(l4.points_ct_mm, wrong.T_world_from_ct, T_true) > 20.0 and wrong.ok  # on L3, and "ok"
    checked = confirm_level(wrong, spine, shots)
    assert not checked.ok and "wrong level suspected" in checked.reason and "L3" in checked.reason

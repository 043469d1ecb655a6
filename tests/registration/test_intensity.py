"""2D/3D registration of one vertebra on the phantom, target shots rendered with other physics
(whole CT with the neighbours, trilinear kernel vs Joseph, 110 vs 100 kVp, blur, Poisson noise)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spinenav.anatomy.labels import ts_id
from spinenav.fluoro.carm import CarmPose
from spinenav.fluoro.drr import render_line_integrals
from spinenav.registration.evaluate import (TargetPhysics, error_components_mm, mtre_mm,
                                            rigid_about)
from spinenav.registration.intensity import (RegistrationError, ShotView, moved_attenuation, register_vertebra)

from reg_cases import l4_biplane_case


def test_moved_affine_equals_inverse_camera_motion(l4, ap_lateral):
    """Rendering the vertebra moved by T (rotation about the body's long axis about c, plus a
    translation t) equals rendering it unmoved from the camera moved by T^-1 (primary angle
    - theta, isocentre c - R^T t): the renderer carries rays through att.affine."""
    g, ap, _ = ap_lateral
    c = np.asarray(ap.isocentre_world_mm)
    theta, t = math.radians(25.0), np.array([4.0, -3.0, 6.0])
    T = rigid_about(c, [0.0, 0.0, theta], t)
    moved = render_line_integrals(moved_attenuation(l4.attenuation, T), g, ap)
    cam = render_line_integrals(l4.attenuation, g, CarmPose(ap.primary_rad - theta, 0.0,
                                                              tuple(c - T[:3, :3].T @ t)))
    assert moved.max() > 1.0  # the vertebra is in view
    np.testing.assert_allclose(moved, cam, atol=1e-3 * float(moved.max()))


@pytest.fixture(scope="module")
def case(l4, scene, ap_lateral):
    """A true pose 4 mm / 4 deg from the CT and a start 8 mm / 8 deg from the truth."""
    return l4_biplane_case(l4, scene, ap_lateral, [5.0, 4.0, -4.5], [-4.0, 5.0, 4.5], seed=0)


BIPLANE_TOL_MM = 1.0  # 1.2 mm isocentre pixels (128 px detector); the benchmark's 256 px reach ~0.5 mm


def test_biplane_recovers_pose(l4, case):
    T_true, T_start, shots = case
    assert mtre_mm(l4.points_ct_mm, T_start, T_true) > 5.0
    r = register_vertebra(l4, shots, T_init_world_from_ct=T_start, seed=1)  # the defaults, as the CLI runs
    err = mtre_mm(l4.points_ct_mm, r.T_world_from_ct, T_true)
    assert r.ok, r.reason
    assert err < BIPLANE_TOL_MM, err
    assert max(r.uncertainty["trans_mm"]) < 3.0 and max(r.uncertainty["rot_deg"]) < 3.0
    # T_carm_from_ct is consistent with the shot's camera
    from spinenav.fluoro.carm import T_camera_from_world
    np.testing.assert_allclose(r.T_carm_from_ct, T_camera_from_world(shots[0].geometry, shots[0].pose)
                               @ r.T_world_from_ct, atol=1e-9)


def test_monoplane_in_plane_accurate_depth_uncertain(l4, case):
    T_true, T_start, shots = case
    r = register_vertebra(l4, shots[:1], T_init_world_from_ct=T_start, seed=2)
    in_plane, depth = error_components_mm(l4.points_ct_mm, r.T_world_from_ct, T_true,
                                          shots[0].pose.detector_direction_world)
    assert in_plane < 1.5, (in_plane, depth)
    unc = r.uncertainty["trans_mm"]
    assert unc[2] > 2 * max(unc[:2]), unc  # the beam (depth) direction is the weak one, and says so


def test_start_far_outside_the_capture_range_fails_and_says_why(l4, case):
    T_true, _, shots = case
    c = l4.centroid_ct_mm
    T_far = rigid_about(c, [0, 0, 0], [0.0, 0.0, 70.0]) @ T_true  # two levels away
    r = register_vertebra(l4, shots, T_init_world_from_ct=T_far, seed=3, restarts=0, coarse_evaluations=200,
                          fine_evaluations=60, compute_uncertainty=False)
    assert mtre_mm(l4.points_ct_mm, r.T_world_from_ct, T_true) > 2.0
    assert not r.ok and r.reason


def test_vertebra_cut_off_by_collimation_is_not_ok(l4, scene, case, ap_lateral):
    T_true, T_start, _ = case
    g, ap, _ = ap_lateral
    # collimator blades leave only the left third of the image: most of L4 is blanked
    img = scene.render(ts_id("L4"), T_true, g, ap, physics=TargetPhysics(collimation=(0, 0, 48, 128)), seed=5)
    r = register_vertebra(l4, [ShotView(img, g, ap)], T_init_world_from_ct=T_start, seed=4, restarts=0,
                          coarse_evaluations=200, fine_evaluations=60, compute_uncertainty=False)
    assert not r.ok and "cut off" in r.reason


def test_bad_input(l4, case):
    _, _, shots = case
    with pytest.raises(RegistrationError, match="one or two"):
        register_vertebra(l4, shots * 2)
    with pytest.raises(RegistrationError, match="does not match its geometry"):
        ShotView(np.zeros((5, 5), np.float32), shots[0].geometry, shots[0].pose)


def test_non_finite_shot_is_refused(case):
    """-ln(0) where no photon arrived: refused with the count, not scored as a zero correlation."""
    _, _, shots = case
    img = shots[0].image.copy()
    img[3, 4], img[5, 6] = np.inf, np.nan
    with pytest.raises(RegistrationError, match="2 non-finite pixels"):
        ShotView(img, shots[0].geometry, shots[0].pose)


def test_vertebra_cut_by_the_ct_is_not_trusted(phantom_l3l5, l4, ap_lateral):
    """A CT whose field of view ends half way through L4: prepared with the reason, and a
    registration of it is not reported ok even at its true pose; whole levels are not flagged."""
    from spinenav.imaging import crop_to_box
    from spinenav.registration.intensity import prepare_vertebra

    ct, lab = phantom_l3l5.ct, phantom_l3l5.labels
    assert l4.partial == ""
    c = l4.centroid_ct_mm
    corners = np.array([ct.affine[:3, :3] @ np.array(ijk) + ct.affine[:3, 3]
                        for ijk in [(0, 0, 0), np.array(ct.shape) - 1]])
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    hi[2] = c[2]  # keep everything caudal of L4's centre
    ct_cut, lab_cut = crop_to_box(ct, lo, hi), crop_to_box(lab, lo, hi)
    v = prepare_vertebra(ct_cut, lab_cut, "L4")
    assert "reaches the CT's" in v.partial and "held whole" in v.partial
    assert prepare_vertebra(ct_cut, lab_cut, "L5").partial == ""
    g, ap, _ = ap_lateral
    shot = ShotView(render_line_integrals(v.attenuation, g, ap), g, ap)
    r = register_vertebra(v, [shot], search_mm=3.0, search_rad=math.radians(3.0), coarse_evaluations=40,
                          fine_evaluations=20, powell_evaluations=0, restarts=0, compute_uncertainty=False)
    assert not r.ok and "holds only part of L4" in r.reason
